#!/usr/bin/env bats
# compact: zero detection, relocation, truncation, and what it reports.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

# a.img (64K clusters, 27 data clusters) from a.raw; then the host copy of
# virtual cluster 1 is overwritten with zeros behind libimg's back, using
# the host offset that imgmap reports.  expect.raw is what the disk holds.
fragment() {
  rm -f a.raw a.img expect.raw
  make_raw a.raw
  "$BIN/imgconvert" -q --cluster-size 64K a.raw a.img
  host=$("$BIN/imgmap" --json a.img |
         jq -r '.[] | select(.data and .start <= 65536 and .start + .length >= 131072) |
                .offset + 65536 - .start')
  [ -n "$host" ]
  dd if=/dev/zero of=a.img bs=64K count=1 seek=$((host / 65536)) conv=notrunc status=none
  cp a.raw expect.raw
  dd if=/dev/zero of=expect.raw bs=64K count=1 seek=1 conv=notrunc status=none
}

@test "compact frees all-zero clusters and fills the hole from the tail" {
  fragment
  size_before=$(file_size a.img)
  run_split compact --json a.img
  [ "$status" -eq 0 ]
  [ "$(jget .zero_clusters_freed)" = 1 ]
  [ "$(jget .file_size_before)" = "$size_before" ]
  [ "$(jget .file_size_after)" = "$(file_size a.img)" ]
  [ "$(jget .file_size_after)" -eq $((size_before - 65536)) ]
  [ "$(jget .disk_usage_after)" = "$(host_usage a.img)" ]
  [ "$(jget '.reclaimed_bytes == .disk_usage_before - .disk_usage_after')" = true ]
  # (not all 64K: the log and BAT blocks the compaction wrote take blocks)
  [ "$(jget '.reclaimed_bytes > 0')" = true ]
  [ "$(jget '.clusters_moved >= 1')" = true ]
  [ "$(info a.img allocated_clusters)" = 26 ]
  # the file holds metadata and live data, nothing else
  [ "$(info a.img file_size)" = $(( $(info a.img metadata_size) + $(info a.img allocated_bytes) )) ]
  "$BIN/imgcheck" -q a.img
  to_raw a.img back.raw
  cmp back.raw expect.raw
}

@test "compact --no-zero-detect keeps zero-filled clusters" {
  fragment
  size_before=$(file_size a.img)
  run_split compact --no-zero-detect --json a.img
  [ "$status" -eq 0 ]
  [ "$(jget .zero_clusters_freed)" = 0 ]
  [ "$(info a.img allocated_clusters)" = 27 ]
  [ "$(file_size a.img)" = "$size_before" ]
  to_raw a.img back.raw
  cmp back.raw expect.raw
}

@test "compact: human report of the bytes given back" {
  fragment
  run_split compact a.img
  [ "$status" -eq 0 ]
  [[ "${out%%$'\n'*}" =~ ^a\.img:\ gave\ back\ [0-9.]+\ [KM]iB\ \([0-9]+\ bytes\)\ to\ the\ host$ ]] || { echo "$out"; false; }
  [[ "$out" == *"1 all-zero clusters freed"* ]]
  # a second run has nothing left to do
  run_split compact --json a.img
  [ "$status" -eq 0 ]
  [ "$(jget .reclaimed_bytes)" = 0 ]
  [ "$(jget .zero_clusters_freed)" = 0 ]
  [ "$(jget .file_size_after)" = "$(jget .file_size_before)" ]
}

@test "compact of an empty image" {
  "$BIN/mkimg" -q e.img 1T
  run_split compact --json e.img
  [ "$status" -eq 0 ]
  [ "$(info e.img allocated_clusters)" = 0 ]
  [ "$(info e.img file_size)" = "$(info e.img metadata_size)" ]
}

@test "compact trims leaked clusters at the tail after repair" {
  make_raw a.raw
  "$BIN/imgconvert" -q --cluster-size 64K a.raw a.img
  head -c 1M /dev/urandom >> a.img
  run_tool imgcheck a.img
  [ "$status" -eq 3 ]
  "$BIN/imgcheck" -q --repair a.img
  "$BIN/compact" -q a.img
  [ "$(info a.img file_size)" = $(( $(info a.img metadata_size) + $(info a.img allocated_bytes) )) ]
  to_raw a.img back.raw
  cmp back.raw a.raw
}

@test "compact -p draws a progress bar on a terminal, prints lines elsewhere (issue 16)" {
  command -v script >/dev/null || skip "script(1) is needed for a terminal"
  fragment
  script -qec "'$BIN/compact' -p a.img" /dev/null > tty.out
  grep -q '100.0%' tty.out
  grep -q '\[#' tty.out
  fragment
  "$BIN/compact" -p a.img > out 2> err
  [ "$(tail -n 1 err)" = "    (100.00/100%)" ]
  ! grep -q $'\r' err
  grep -q "gave back" out
  ! grep -q "100%" out
}
