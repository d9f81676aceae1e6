#!/usr/bin/env bats
# imgcheck: exit statuses 0 clean, 1 could not check, 2 corrupt, 3 leaks,
# 63 unsupported; --repair; --json.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

image_with_data() {
  make_raw a.raw
  "$BIN/imgconvert" -q --cluster-size 64K a.raw a.img
}

# Appends host clusters that no BAT entry maps: a leak.
add_leak() {
  local cs
  cs=$(info "$1" cluster_size)
  head -c $((2 * cs)) /dev/urandom >> "$1"
}

@test "imgcheck: a clean image exits 0" {
  image_with_data
  run_split imgcheck a.img
  [ "$status" -eq 0 ]
  [[ "$out" == *"No errors were found on the image."* ]]
  run_split imgcheck --json a.img
  [ "$status" -eq 0 ]
  [ "$(jget .status)" = clean ]
  [ "$(jget .corruptions)" = 0 ]
  [ "$(jget .leaks)" = 0 ]
  [ "$(jget .check_errors)" = 0 ]
  [ "$(jget .allocated_clusters)" = 27 ]
  [ "$(jget '.problems | type')" = array ]
  [ "$(jget .filename)" = a.img ]
  "$BIN/mkimg" -q e.img 1G
  run_tool imgcheck e.img
  [ "$status" -eq 0 ]
}

@test "imgcheck: a broken BAT block is corruption (exit 2)" {
  image_with_data
  poke a.img corrupt-bat
  run_split imgcheck a.img
  [ "$status" -eq 2 ]
  [[ "$out" == *"corrupt: "* ]]
  [[ "$out" == *"errors were found on the image"* ]]
  run_split imgcheck --json a.img
  [ "$status" -eq 2 ]
  [ "$(jget .status)" = corrupt ]
  [ "$(jget '.corruptions >= 1')" = true ]
  [ "$(jget '[.problems[] | select(.severity == "corrupt")] | length >= 1')" = true ]
  [ "$(jget '[.problems[] | .message | type == "string" and length > 0] | all')" = true ]
  # other tools refuse it (corrupt: 3, libimg(7))
  run_split imginfo a.img
  [ "$status" -eq 3 ]
  [[ "$err" == "imginfo: a.img: image is corrupt"* ]]
}

@test "imgcheck: a truncated image is corrupt (exit 2)" {
  image_with_data
  truncate -s $(( $(info a.img metadata_size) + 65536 )) a.img
  run_split imgcheck --json a.img
  [ "$status" -eq 2 ]
  [ "$(jget .status)" = corrupt ]
  [ "$(jget '.corruptions >= 1')" = true ]
}

@test "imgcheck: an image cut inside its headers is corrupt (exit 2)" {
  "$BIN/mkimg" -q a.img 1G
  truncate -s 64 a.img
  run_split imgcheck a.img
  [ "$status" -eq 2 ]
  [[ "$err" == "imgcheck: a.img: image is corrupt"* ]] || { echo "$err"; false; }
}

@test "issue 22 #0: an image cut short of its metadata area is corrupt, not an empty disk" {
  head -c $((4 * M)) /dev/urandom > a.raw
  "$BIN/imgconvert" -q a.raw a.img
  meta=$(info a.img metadata_size)
  for size in 1000 8192 $((meta - 1)); do
    cp a.img b.img
    truncate -s "$size" b.img
    run_split imgcheck b.img
    [ "$status" -eq 2 ] || { echo "size $size: $status $out $err"; false; }
    [[ "$err" == *"b.img: image is corrupt (truncated: the file is $size bytes, shorter than its metadata area (header, log and BAT: $meta bytes))"* ]] || { echo "$err"; false; }
    run_split imgconvert -O raw b.img b.raw
    [ "$status" -eq 3 ]
    [ ! -e b.raw ]
    run_split imginfo b.img
    [ "$status" -eq 3 ]
  done
  run_split imgcheck --json b.img
  [ "$status" -eq 2 ]
  [[ "$err" == *"truncated"* ]] || [[ "$out" == *"truncated"* ]]
}

@test "issue 22: imgcheck -r of an image cut past its metadata area repairs nothing, never an empty disk that checks clean" {
  head -c $((4 * M)) /dev/urandom > a.raw
  "$BIN/imgconvert" -q a.raw a.img
  meta=$(info a.img metadata_size)
  cs=$(info a.img cluster_size)
  for size in "$meta" $((meta + cs + 4096)); do
    cp a.img b.img
    truncate -s "$size" b.img
    cp b.img c.img
    run_split imgcheck -r b.img
    [ "$status" -eq 2 ] || { echo "size $size: $status $out $err"; false; }
    [[ "$out" == *"entries map clusters past the end of the file ($size bytes: cut or copied short?): nothing repaired"* ]] || { echo "$out"; false; }
    [[ "$out" == *"maps a cluster past the end of the file"* ]] || { echo "$out"; false; }
    # only the header (cluster 0) may change: the entries stay
    cmp -i "$cs" b.img c.img
    [ "$(stat -c %s b.img)" -eq "$size" ]
    run_split imgcheck b.img
    [ "$status" -eq 2 ]
    run_split imgconvert -O raw b.img b.raw
    [ "$status" -eq 3 ]
    [ ! -e b.raw ]
  done
}

@test "issue 22: a file an older growimg left shorter than its metadata area is refused unchanged, and made whole as FORMAT.md 8 says" {
  # libimg 0.1 before the rule grew an empty image past its table's
  # capacity without extending the file: it ended at the old metadata area
  "$BIN/mkimg" -q --cluster-size 64K a.img 512
  old=$(stat -c %s a.img)
  "$BIN/growimg" -q --no-fs a.img 100G
  meta=$(info a.img metadata_size)
  [ "$meta" -gt "$old" ]
  truncate -s "$old" a.img
  cp a.img b.img
  run_split imgcheck -r a.img
  [ "$status" -eq 2 ]
  [[ "$err" == *"a.img: image is corrupt (truncated: the file is $old bytes, shorter than its metadata area (header, log and BAT: $meta bytes))"* ]] || { echo "$err"; false; }
  cmp a.img b.img
  truncate -s "$meta" a.img
  run_split imgcheck a.img
  [ "$status" -eq 0 ]
  [ "$(info a.img virtual_size)" -eq $((100 << 30)) ]
}

@test "issue 22 #2: a BAT block with its reserved field set is corrupt, and imgcheck names the cause" {
  image_with_data
  poke a.img bat-reserved
  run_split imgcheck a.img
  [ "$status" -eq 2 ]
  [[ "$out" == *"BAT block 0: reserved field not zero"* ]] || { echo "$out"; false; }
  [[ "$out" != *"bad magic, crc or location"* ]]
  run_split imginfo a.img
  [ "$status" -eq 3 ]
  [[ "$err" == *"a.img: image is corrupt (BAT block 0: reserved field not zero)"* ]] || { echo "$err"; false; }
}

@test "imgcheck: leaked clusters only exit 3; --repair fixes them" {
  image_with_data
  add_leak a.img
  run_split imgcheck a.img
  [ "$status" -eq 3 ]
  [[ "$out" == *"leaked clusters were found on the image"* ]]
  run_split imgcheck --json a.img
  [ "$status" -eq 3 ]
  [ "$(jget .status)" = leaks ]
  [ "$(jget '.leaks >= 1')" = true ]
  [ "$(jget .corruptions)" = 0 ]
  [ "$(jget .leaks_fixed)" = 0 ]
  run_split imgcheck --repair --json a.img
  [ "$status" -eq 0 ]
  [ "$(jget .status)" = clean ]
  [ "$(jget .repair)" = true ]
  [ "$(jget '.leaks_fixed == .leaks and .leaks >= 1')" = true ]
  run_split imgcheck a.img
  [ "$status" -eq 0 ]
  to_raw a.img back.raw
  cmp a.raw back.raw
}

@test "imgcheck: an unsupported feature exits 63" {
  "$BIN/mkimg" -q a.img 1G
  poke a.img set-incompat
  run_split imgcheck a.img
  [ "$status" -eq 63 ]
  [[ "$err" == "imgcheck: a.img: image uses an unsupported feature"* ]] || { echo "$err"; false; }
}

@test "imgcheck: could not check exits 1; locked 75" {
  run_split imgcheck nope.img
  [ "$status" -eq 1 ]
  head -c 100K /dev/zero > zero.raw
  run_split imgcheck zero.raw
  [ "$status" -eq 1 ]
  [ "$err" = "imgcheck: zero.raw: not a libimg image" ]
  "$BIN/mkimg" -q a.img 1G
  hold_lock a.img
  run_split imgcheck a.img
  [ "$status" -eq 75 ]
  [[ "$err" == *"locked"*"$HOLDER_PID"* ]] || { echo "$err"; false; }
}

@test "imgcheck --repair on a read-only file cannot run (exit 1)" {
  public_dir
  "$BIN/mkimg" -q "$PUBDIR/ro.img" 1G
  chmod 444 "$PUBDIR/ro.img"
  run_unprivileged imgcheck --repair "$PUBDIR/ro.img"
  [ "$status" -eq 1 ]
  [[ "$output" == "imgcheck: $PUBDIR/ro.img: read-only (mode 0444)"* ]] || { echo "$output"; false; }
  run_tool imgcheck --repair "$PUBDIR/ro.img"
  [ "$status" -eq 1 ]
  run_unprivileged imgcheck "$PUBDIR/ro.img"
  [ "$status" -eq 0 ]
}

@test "issue 15 #6: imgcheck -r with more problems than it records exits 5 and repairs nothing" {
  "$BIN/mkimg" -q --cluster-size 64K a.img 7G
  head -c 65536 /dev/urandom > x.raw
  write_at a.img x.raw 0
  poke a.img bad-entries 100000
  run_split imgcheck --json a.img
  [ "$status" -eq 5 ] || { echo "$out $err" | head -c 2000; false; }
  [ "$(jget .status)" = incomplete ]
  [ "$(jget .incomplete)" = 1 ]
  run_split imgcheck --repair a.img
  [ "$status" -eq 5 ]
  [[ "$out" == *"The check is incomplete"*"Nothing was repaired."* ]] || { echo "$out"; false; }
  [[ "$out" != *"No errors"* ]]
  run_split imgcheck --repair a.img
  [ "$status" -eq 5 ]
}

@test "issue 15 #13: imgcheck and imginfo on an image with a 1 TiB sparse tail take no time" {
  image_with_data
  truncate -s 1T a.img
  status=0; output=$(timeout 20 "$BIN/imgcheck" --json a.img) || status=$?
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [ "$(jget .status)" = clean ]
  [ "$(jget '.tail_bytes > 1000000000000')" = true ]
  poke a.img set-dirty
  timeout 20 "$BIN/imginfo" a.img
  timeout 20 "$BIN/imgcheck" --repair a.img
  [ "$(stat -c %s a.img)" -lt 100000000 ]
  to_raw a.img back.raw
  cmp a.raw back.raw
}
