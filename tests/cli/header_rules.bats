#!/usr/bin/env bats
# The header rules of FORMAT.md 3 as the tools see them: a newer header copy
# from a newer writer refuses the image (issue 14 #9), and the header
# sequence number never wraps (issue 15 #10).  Every refusal leaves the file
# byte-for-byte unchanged.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

newer_copy_refused() {
  "$BIN/mkimg" -q a.img 64M
  poke a.img "$1"
  cp a.img before.img
  run_split imgcheck a.img
  [ "$status" -eq 63 ]
  [[ "$err" == *"a.img"*"newer libimg"* ]] || { echo "$err"; false; }
  run_split imgcheck -r a.img
  [ "$status" -eq 63 ]
  run_split imginfo a.img
  [ "$status" -ne 0 ]
  [[ "$err" == *"newer libimg"* ]] || { echo "$err"; false; }
  run_split growimg a.img 128M
  [ "$status" -ne 0 ]
  run_split compact a.img
  [ "$status" -ne 0 ]
  cmp a.img before.img
}

@test "issue 14 #9: a newer header copy with an unknown incompatible bit refuses the image (imgcheck 63), file unchanged" {
  newer_copy_refused newer-incompat
}

@test "issue 14 #9: a newer header copy of version 2 refuses the image (imgcheck 63), file unchanged" {
  newer_copy_refused newer-version
}

@test "issue 15 #10: at header sequence number 2^64-1 the image is read-only: writers refuse, nothing wraps" {
  "$BIN/mkimg" -q a.img 64M
  poke a.img seq 18446744073709551615
  cp a.img before.img
  run_split imgcheck a.img
  [ "$status" -eq 0 ]
  run_split growimg a.img 128M
  [ "$status" -eq 1 ]
  [[ "$err" == *"a.img"*"sequence number"* ]] || { echo "$err"; false; }
  run_split imgcheck -r a.img
  [ "$status" -eq 1 ]
  cmp a.img before.img
  # its data can be copied out to a new image
  run_split imgconvert a.img b.img
  [ "$status" -eq 0 ]
  run_split imgcheck b.img
  [ "$status" -eq 0 ]
}
