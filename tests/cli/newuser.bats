#!/usr/bin/env bats
# Issue 16, as a new user's provisioning script meets the tools: decisions
# taken on exit statuses and JSON only (libimg(7)).

load helpers

setup() {
  common_setup
  export LIBIMG_RUNDIR=$BATS_TEST_TMPDIR/run
}
teardown() {
  common_teardown
}

@test "issue 16 newuser: an existing file is EEXIST in the JSON error object (mkimg, imgconvert)" {
  "$BIN/mkimg" -q a.img 16M
  "$BIN/mkimg" -q b.img 16M
  run_split mkimg -j a.img 16M
  [ "$status" -eq 1 ]
  [ "$(jq -r .error.errno_name <<<"$output")" = EEXIST ]
  [ "$(jq -r .error.file <<<"$output")" = a.img ]
  run_split mkimg -j --backing b.img a.img
  [ "$status" -eq 1 ]
  [ "$(jq -r .error.errno_name <<<"$output")" = EEXIST ]
  [ "$(jq -r .error.file <<<"$output")" = a.img ]
  run_split imgconvert -j b.img a.img
  [ "$status" -eq 1 ]
  [ "$(jq -r .error.errno_name <<<"$output")" = EEXIST ]
  [ "$(jq -r .error.file <<<"$output")" = a.img ]
}
