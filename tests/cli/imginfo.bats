#!/usr/bin/env bats
# imginfo: human and JSON output, and its error paths.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

@test "imginfo --json: every key, with the right types and values" {
  make_raw a.raw
  "$BIN/imgconvert" -q a.raw a.img
  run_split imginfo --json a.img
  [ "$status" -eq 0 ]
  [ -z "$err" ]
  # numbers are integers, not strings
  for k in format_version virtual_size cluster_size allocated_clusters allocated_bytes \
           metadata_size file_size disk_usage zero_clusters bat_capacity; do
    [ "$(jget ".$k | type")" = number ] || { echo "$k"; false; }
    [ "$(jget ".$k | floor == .")" = true ]
  done
  [ "$(jget .format)" = libimg ]
  [ "$(jget .filename)" = a.img ]
  [ "$(jget '.dirty | type')" = boolean ]
  [ "$(jget .dirty)" = false ]
  printf '%s' "$output" | jq -e 'has("backing") and .backing == null and has("filesystem") and .filesystem == null'
  [ "$(jget .virtual_size)" = $((16 * M)) ]
  # data in virtual clusters 0, 5, 9 and 10 (see make_raw)
  [ "$(jget .allocated_clusters)" = 4 ]
  [ "$(jget .allocated_bytes)" = $((4 * M)) ]
  [ "$(jget .file_size)" = "$(file_size a.img)" ]
  [ "$(jget .disk_usage)" = "$(host_usage a.img)" ]
  [ "$(jget .metadata_size)" -gt 0 ]
  [ "$(jget '.metadata_size + .allocated_bytes <= .file_size')" = true ]
}

@test "imginfo: human output like qemu-img" {
  "$BIN/mkimg" -q d.img 10G
  run_split imginfo d.img
  [ "$status" -eq 0 ]
  [[ "$out" == *"image: d.img"* ]]
  [[ "$out" == *"file format: libimg"* ]]
  [[ "$out" == *"virtual size: 10 GiB (10737418240 bytes)"* ]]
  [[ "$out" == *"cluster size: 1 MiB (1048576 bytes)"* ]]
  [[ "$out" == *"allocated: 0 clusters, 0 bytes"* ]]
  [[ "$out" == *"dirty: no"* ]]
}

@test "imginfo --json escapes odd file names" {
  name=$'we"ird\\na\tme\x01.img'
  "$BIN/mkimg" -q -- "$name" 1M
  run_split imginfo --json -- "$name"
  [ "$status" -eq 0 ]
  [ "$(printf '%s' "$output" | jq -j .filename)" = "$name" ]
}

@test "imginfo: a truncated image is reported as corrupt (exit 3)" {
  make_raw a.raw
  "$BIN/imgconvert" -q a.raw a.img
  meta=$(info a.img metadata_size)
  # data clusters now lie past the end of the file
  truncate -s $((meta + 4096)) a.img
  run_split imginfo a.img
  [ "$status" -eq 3 ]
  [[ "$err" == "imginfo: a.img: image is corrupt"* ]] || { echo "$err"; false; }
  [[ "$err" == *"run 'imgcheck a.img'"* ]]
  # and one cut inside its headers
  "$BIN/mkimg" -q b.img 1G
  truncate -s 100 b.img
  run_split imginfo b.img
  [ "$status" -eq 3 ]
  [[ "$err" == "imginfo: b.img: image is corrupt"* ]] || { echo "$err"; false; }
  [ -z "$out" ]
}

@test "imginfo: an unsupported feature is named (exit 1)" {
  "$BIN/mkimg" -q a.img 1G
  poke a.img set-incompat
  run_split imginfo a.img
  [ "$status" -eq 1 ]
  [[ "$err" == "imginfo: a.img: image uses an unsupported feature"* ]] || { echo "$err"; false; }
}

@test "imginfo: a locked image names the holder; -U reads it anyway" {
  "$BIN/mkimg" -q a.img 1G
  hold_lock a.img
  run_split imginfo a.img
  [ "$status" -eq 75 ]
  [[ "$err" == "imginfo: a.img: image is locked by another process"* ]] || { echo "$err"; false; }
  [[ "$err" == *"$HOLDER_PID"* ]] || { echo "holder $HOLDER_PID not in: $err"; false; }
  run_split imginfo -U --json a.img
  [ "$status" -eq 0 ]
  [ "$(jget .virtual_size)" = $G ]
}

@test "imginfo reads a read-only file" {
  public_dir
  "$BIN/mkimg" -q "$PUBDIR/ro.img" 1G
  chmod 444 "$PUBDIR/ro.img"
  run_unprivileged imginfo --json "$PUBDIR/ro.img"
  [ "$status" -eq 0 ]
  [ "$(printf '%s' "$output" | jq .virtual_size)" = $G ]
}

@test "imginfo: a dirty image (a writer crashed) is reported; a writer reclaims its leaks" {
  make_raw a.raw
  "$BIN/imgconvert" -q a.raw a.img
  head -c 3M /dev/urandom >> a.img
  poke a.img set-dirty
  run_split imginfo --json a.img
  [ "$status" -eq 0 ]
  [ "$(jget .dirty)" = true ]
  [ "$(jget .leaked_clusters)" = 3 ]
  run_split imginfo a.img
  [[ "$out" == *"dirty: yes"* ]]
  run_tool imgcheck a.img
  [ "$status" -eq 3 ]
  # a read-only open changes nothing
  [ "$(info a.img dirty)" = true ]
  # opening for writing replays, reclaims and closes cleanly
  "$BIN/growimg" -q a.img 32M
  run_split imginfo --json a.img
  [ "$(jget .dirty)" = false ]
  [ "$(jget .leaked_clusters)" = 0 ]
  [ "$(jget .file_size)" = "$(jget '.metadata_size + .allocated_bytes')" ]
  "$BIN/imgcheck" -q a.img
  "$BIN/shrinkimg" -q a.img 16M
  to_raw a.img back.raw
  cmp a.raw back.raw
}
