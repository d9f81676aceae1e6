#!/usr/bin/env bats
# growimg and shrinkimg.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

image_with_data() { # cluster size
  make_raw a.raw
  "$BIN/imgconvert" -q --cluster-size "${1:-1M}" a.raw a.img
}

# contents_are IMG RAW: the image reads as RAW (cut to the virtual size, or
# followed by zeros).  Large zero tails are not read byte by byte: cmp
# covers RAW plus up to 64 MiB, and imgmap must show no data past that.
contents_are() {
  local img=$1 raw=$2 vs n span
  local got=$BATS_TEST_TMPDIR/contents.raw want=$BATS_TEST_TMPDIR/expect.raw
  vs=$(info "$img" virtual_size)
  n=$(file_size "$raw")
  span=$(( vs - n < 64 * M ? vs : n + 64 * M ))
  rm -f "$got" "$want"
  to_raw "$img" "$got"
  [ "$(file_size "$got")" = "$vs" ]
  cp "$raw" "$want"
  truncate -s "$span" "$want"
  cmp -n "$span" "$got" "$want"
  [ "$("$BIN/imgmap" --json "$img" | jq "[.[] | select(.data and .start + .length > $span)] | length")" = 0 ]
  rm -f "$got" "$want"
}

@test "growimg: absolute and relative sizes, data kept" {
  image_with_data
  run_split growimg a.img 1G
  [ "$status" -eq 0 ]
  [ "$out" = "a.img: virtual size 16 MiB -> 1 GiB (1073741824 bytes)" ]
  [ "$(info a.img virtual_size)" = $G ]
  run_split growimg --json a.img +1.5G
  [ "$status" -eq 0 ]
  [ "$(jget .old_size)" = $G ]
  [ "$(jget .new_size)" = $((G + G + G / 2)) ]
  [ "$(jget .filename)" = a.img ]
  [ "$(info a.img virtual_size)" = $((G + G + G / 2)) ]
  contents_are a.img a.raw
  "$BIN/imgcheck" -q a.img
}

@test "growimg: the same size is a no-op, success" {
  "$BIN/mkimg" -q a.img 1G
  run_split growimg a.img 1G
  [ "$status" -eq 0 ]
  [[ "$out" == *"already 1 GiB"*"nothing to do"* ]]
  run_split growimg a.img +0
  [ "$status" -eq 0 ]
}

@test "growimg past the BAT's capacity relocates and keeps the data" {
  image_with_data 64K
  cap=$(info a.img bat_capacity)
  new=$(( (cap * 4 + 512) / 512 * 512 ))
  "$BIN/growimg" -q a.img "$new"
  [ "$(info a.img virtual_size)" = "$new" ]
  [ "$(info a.img bat_capacity)" -ge "$new" ]
  [ "$(info a.img allocated_clusters)" = 27 ]
  "$BIN/imgcheck" -q a.img
  contents_are a.img a.raw
}

@test "issue 22 #0: growing an empty image past the BAT's capacity extends the file to the new metadata area" {
  "$BIN/mkimg" -q a.img 4G
  "$BIN/growimg" -q a.img 100T
  [ "$(stat -c %s a.img)" -ge "$(info a.img metadata_size)" ]
  run_tool imgcheck a.img
  [ "$status" -eq 0 ]
}

@test "growimg refuses to shrink, and bad sizes" {
  "$BIN/mkimg" -q a.img 10G
  run_split growimg a.img 5G
  [ "$status" -eq 1 ]
  [ "$err" = "growimg: a.img: 5 GiB (5368709120 bytes) is smaller than the current size 10 GiB (10737418240 bytes) (use shrinkimg to shrink)" ]
  run_split growimg a.img -1G
  [ "$status" -eq 1 ]
  [[ "$err" == *"use shrinkimg"* ]]
  for bad in 5X +abc ++1G "" +-1G 1.3K; do
    run_split growimg a.img "$bad"
    [ "$status" -eq 2 ] || { echo "'$bad'"; false; }
    [[ "$err" == "growimg: invalid size '$bad'"* ]] || { echo "'$bad': $err"; false; }
  done
  run_split growimg a.img +16E
  [ "$status" -eq 2 ]
  [ "$err" = "growimg: invalid size '+16E' (expected SIZE or +DELTA with an optional K, M, G, T, P or E suffix)" ]
  run_split growimg a.img +15E
  [ "$status" -eq 1 ]
  [[ "$err" == "growimg: a.img: "* ]]
  run_split growimg a.img +1000
  [ "$status" -eq 1 ]
  [[ "$err" == *"not a multiple of 512"* ]]
  [ "$(info a.img virtual_size)" = $((10 * G)) ]
  "$BIN/imgcheck" -q a.img
}

@test "shrinkimg: relative and absolute, negative delta as an operand" {
  "$BIN/mkimg" -q a.img 10G
  run_split shrinkimg a.img -5G
  [ "$status" -eq 0 ]
  [ "$out" = "a.img: virtual size 10 GiB -> 5 GiB (5368709120 bytes)" ]
  [ "$(info a.img virtual_size)" = $((5 * G)) ]
  run_split shrinkimg --json a.img 1G
  [ "$status" -eq 0 ]
  [ "$(jget .old_size)" = $((5 * G)) ]
  [ "$(jget .new_size)" = $G ]
  "$BIN/shrinkimg" -q a.img -512M
  [ "$(info a.img virtual_size)" = $((512 * M)) ]
}

@test "shrinkimg refuses to drop data without --discard-data" {
  image_with_data
  cp a.img a.copy
  run_split shrinkimg a.img 8M
  [ "$status" -eq 1 ]
  [ "$err" = "shrinkimg: a.img: data past 8 MiB (8388608 bytes) would be lost; not shrinking (use --discard-data to drop that data)" ]
  [ "$(info a.img virtual_size)" = $((16 * M)) ]
  contents_are a.img a.raw
  # shrinking only over unallocated clusters is fine
  "$BIN/shrinkimg" -q a.img 11M
  [ "$(info a.img virtual_size)" = $((11 * M)) ]
  head -c 11M a.raw > a11.raw
  contents_are a.img a11.raw
  # dropping data needs the flag
  run_split shrinkimg a.img 6M
  [ "$status" -eq 1 ]
  run_split shrinkimg --discard-data a.img 6M
  [ "$status" -eq 0 ]
  [ "$(info a.img virtual_size)" = $((6 * M)) ]
  [ "$(info a.img allocated_clusters)" = 2 ]
  head -c 6M a.raw > a6.raw
  contents_are a.img a6.raw
  "$BIN/imgcheck" -q a.img
  # the host file gave the dropped clusters back
  [ "$(info a.img file_size)" -le $(( $(info a.img metadata_size) + 2 * M )) ]
}

@test "shrinkimg refuses to drop data inside the new last cluster" {
  image_with_data
  # 10.25M is inside cluster 10, whose data runs to 10.5M
  run_split shrinkimg a.img $((10 * M + M / 4))
  [ "$status" -eq 1 ]
  [ "$err" = "shrinkimg: a.img: data past 10.25 MiB (10747904 bytes) would be lost; not shrinking (use --discard-data to drop that data)" ]
  [ "$(info a.img virtual_size)" = $((16 * M)) ]
  # past the data, inside the same cluster: nothing is lost
  "$BIN/shrinkimg" -q a.img $((10 * M + 3 * M / 4))
  head -c $((10 * M + 3 * M / 4)) a.raw > expect.raw
  contents_are a.img expect.raw
  "$BIN/shrinkimg" -q --discard-data a.img $((10 * M + M / 4))
  head -c $((10 * M + M / 4)) a.raw > expect.raw
  contents_are a.img expect.raw
}

@test "shrinkimg: a new size inside a cluster zeroes the rest of it" {
  image_with_data
  "$BIN/shrinkimg" -q --discard-data a.img 50K
  "$BIN/growimg" -q a.img 16M
  head -c 50K a.raw > expect.raw
  contents_are a.img expect.raw
}

@test "shrinkimg refuses to grow, and bad sizes" {
  "$BIN/mkimg" -q a.img 10G
  run_split shrinkimg a.img 20G
  [ "$status" -eq 1 ]
  [[ "$err" == *"is larger than the current size"*"use growimg"* ]]
  run_split shrinkimg a.img -20G
  [ "$status" -eq 1 ]
  [ "$err" = "shrinkimg: a.img: invalid size '-20G' (out of range for a 10 GiB image)" ]
  run_split shrinkimg a.img -10G
  [ "$status" -eq 1 ]
  [[ "$err" == *"at least 512"* ]]
  run_split shrinkimg a.img 1000
  [ "$status" -eq 1 ]
  run_split shrinkimg a.img -5Q
  [ "$status" -eq 2 ]
  [[ "$err" == "shrinkimg: invalid size '-5Q'"* ]]
  [ "$(info a.img virtual_size)" = $((10 * G)) ]
}

@test "grow, shrink, then compact keeps the data" {
  image_with_data 64K
  "$BIN/growimg" -q a.img +100G
  "$BIN/imgcheck" -q a.img
  contents_are a.img a.raw
  "$BIN/shrinkimg" -q a.img 16M
  contents_are a.img a.raw
  run_split compact --json a.img
  [ "$status" -eq 0 ]
  contents_are a.img a.raw
  "$BIN/imgcheck" -q a.img
  [ "$(info a.img file_size)" = $(( $(info a.img metadata_size) + $(info a.img allocated_bytes) )) ]
}

@test "growimg/shrinkimg: a locked image names the holder" {
  "$BIN/mkimg" -q a.img 1G
  hold_lock a.img
  run_split growimg a.img 2G
  [ "$status" -eq 75 ]
  [[ "$err" == "growimg: a.img: image is locked by another process"* ]] || { echo "$err"; false; }
  [[ "$err" == *"$HOLDER_PID"* ]] || { echo "$err"; false; }
  run_split shrinkimg a.img 512M
  [ "$status" -eq 75 ]
  [[ "$err" == *"$HOLDER_PID"* ]]
  run_split compact a.img
  [ "$status" -eq 75 ]
  [[ "$err" == "compact: a.img: image is locked by another process"*"$HOLDER_PID"* ]]
  [ "$("$BIN/imginfo" -U --json a.img | jq .virtual_size)" = $G ]
}

@test "growimg/shrinkimg: a read-only file is refused" {
  public_dir
  "$BIN/mkimg" -q "$PUBDIR/ro.img" 1G
  chmod 444 "$PUBDIR/ro.img"
  cp "$PUBDIR/ro.img" copy.img
  for cmd in "growimg $PUBDIR/ro.img 2G" "shrinkimg $PUBDIR/ro.img 512M" "compact $PUBDIR/ro.img"; do
    run_unprivileged $cmd
    [ "$status" -eq 1 ]
    [[ "$output" == "${cmd%% *}: $PUBDIR/ro.img: read-only (mode 0444)"* ]] || { echo "$output"; false; }
    # root too: the mode, not open(2)'s permission check, protects it
    run_tool $cmd
    [ "$status" -eq 1 ]
    [[ "$output" == "${cmd%% *}: $PUBDIR/ro.img: read-only (mode 0444)"* ]] || { echo "$output"; false; }
  done
  cmp "$PUBDIR/ro.img" copy.img
}

# tail_garbage IMG: the bytes of the image's last cluster past its virtual
# size (host bytes of its allocated entry) become 0xEE, behind libimg's back.
tail_garbage() {
  [ -n "$PY" ] || skip "python3 is needed to edit an image"
  "$PY" - "$1" <<'PYEOF'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    h = f.read(4096)
    cs = 1 << struct.unpack_from("<I", h, 20)[0]
    vs = struct.unpack_from("<Q", h, 64)[0]
    bat = struct.unpack_from("<Q", h, 96)[0]
    v = vs // cs
    assert vs % cs
    f.seek(bat + 4096 * (v // 508) + 32 + 8 * (v % 508))
    e = struct.unpack("<Q", f.read(8))[0]
    assert e >> 60 == 2, hex(e)
    host = e & ((1 << 60) - 1)
    f.seek(host * cs + vs % cs)
    f.write(b"\xee" * (cs - vs % cs))
PYEOF
}

@test "issue 15 #9: growimg never shows the bytes a file holds past the virtual size" {
  "$BIN/mkimg" -q --cluster-size 64K a.img 1016K
  head -c 1040384 /dev/urandom > d.raw
  write_at a.img d.raw 0
  tail_garbage a.img
  cp a.img b.img
  run_split imgcheck a.img
  [ "$status" -eq 2 ]
  [[ "$out" == *"past the virtual size are not zero"* ]] || { echo "$out"; false; }
  run_tool growimg a.img 2M
  [ "$status" -eq 0 ]
  to_raw a.img a.raw
  cmp -n 1040384 a.raw d.raw
  [ "$(tail -c +1040385 a.raw | tr -d '\0' | wc -c)" -eq 0 ]
  run_split imgcheck a.img
  [ "$status" -eq 0 ]
  # repair zeroes them; growing afterwards shows zeros too
  run_split imgcheck --repair b.img
  [ "$status" -eq 0 ]
  run_split imgcheck b.img
  [ "$status" -eq 0 ]
  run_tool growimg b.img 2M
  to_raw b.img b.raw
  cmp a.raw b.raw
}
