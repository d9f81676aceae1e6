#!/usr/bin/env bats
# imgmap: runs of data, zero and unallocated space.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

@test "imgmap of an empty image: one unallocated run" {
  "$BIN/mkimg" -q e.img 10G
  run_split imgmap --json e.img
  [ "$status" -eq 0 ]
  [ "$(jget length)" = 1 ]
  [ "$(jget '.[0].start')" = 0 ]
  [ "$(jget '.[0].length')" = $((10 * G)) ]
  [ "$(jget '.[0].type')" = unallocated ]
  [ "$(jget '.[0].data')" = false ]
  [ "$(jget '.[0].zero')" = true ]
  [ "$(jget '.[0] | has("offset")')" = false ]
}

@test "imgmap --json: runs tile the disk, data where it was written" {
  make_raw a.raw
  "$BIN/imgconvert" -q a.raw a.img
  meta=$(info a.img metadata_size)
  fsize=$(file_size a.img)
  run_split imgmap --json a.img
  [ "$status" -eq 0 ]
  # contiguous, in order, covering [0, 16M)
  [ "$(jget '[.[] | .length] | add')" = $((16 * M)) ]
  [ "$(jget '[range(1; length) as $i | .[$i].start == .[$i-1].start + .[$i-1].length] | all')" = true ]
  [ "$(jget '.[0].start')" = 0 ]
  [ "$(jget '[.[] | select(.length <= 0)] | length')" = 0 ]
  # the data runs cover exactly virtual clusters 0, 5, 9 and 10
  [ "$(jget '[.[] | select(.type == "data") | range(.start / 1048576; (.start + .length) / 1048576) | tostring] | join(",")')" = "0,5,9,10" ]
  [ "$(jget '[.[] | select(.type != "data") | .type] | unique | join(",")')" = unallocated ]
  # host offsets of data lie past the metadata and inside the file
  [ "$(jget "[.[] | select(.data) | .offset >= $meta and .offset + .length <= $fsize] | all")" = true ]
  [ "$(jget '[.[] | select(.data) | .zero == false] | all')" = true ]
}

@test "imgmap: the host offsets point at the data" {
  make_raw a.raw
  "$BIN/imgconvert" -q a.raw a.img
  run_split imgmap --json a.img
  [ "$status" -eq 0 ]
  printf '%s' "$output" | jq -r '.[] | select(.data) | "\(.start) \(.length) \(.offset)"' |
  while read -r start len off; do
    cmp <(tail -c +$((off + 1)) a.img | head -c "$len") <(tail -c +$((start + 1)) a.raw | head -c "$len")
  done
}

@test "imgmap: human output" {
  make_raw a.raw
  "$BIN/imgconvert" -q a.raw a.img
  run_tool imgmap a.img
  [ "$status" -eq 0 ]
  [[ "${lines[0]}" == Offset*Length*Type*"Host offset" ]]
  [[ "${lines[1]}" =~ ^0x0\ +0x100000\ +data\ +0x[0-9a-f]+$ ]] || { echo "${lines[1]}"; false; }
  [[ "${lines[2]}" =~ ^0x100000\ +0x400000\ +unallocated$ ]] || { echo "${lines[2]}"; false; }
}

@test "imgmap: a truncated image fails (exit 3)" {
  make_raw a.raw
  "$BIN/imgconvert" -q a.raw a.img
  truncate -s $(( $(info a.img metadata_size) + 1000 )) a.img
  run_split imgmap a.img
  [ "$status" -eq 3 ]
  [[ "$err" == "imgmap: a.img: image is corrupt"* ]]
}
