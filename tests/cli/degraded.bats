#!/usr/bin/env bats
# Issue 14 #7: a delta whose base is missing or replaced.  imginfo and
# imgcheck describe the image itself (header, BAT) and the chain's problem,
# text and JSON, and exit 4 (EXIT_CHAIN): a missing or replaced base is not
# corruption.  imgmap, imgconvert and imgsnap list say in one line which
# base cannot be opened and exit 4.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

# base.img (16 MiB) and top.img over it, with 2 MiB of the top's own data.
make_pair() {
  "$BIN/mkimg" -q base.img 16M
  "$BIN/mkimg" -q --backing base.img top.img
  head -c $((2 * M)) /dev/urandom > own
  write_at top.img own $((4 * M))
  sum_top=$(sha256sum top.img | cut -d' ' -f1)
}

# The tools that cannot work without the chain: one line naming the base,
# exit 4, and top.img unchanged.
check_blind_tools() {
  local want=$1
  run_split imgmap top.img
  [ "$status" -eq 4 ]
  [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ]
  [[ $err == "imgmap: top.img: its backing chain cannot be opened: "*"$want"* ]]
  run_split imgconvert -F libimg -O raw top.img out.raw
  [ "$status" -eq 4 ]
  [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ]
  [[ $err == *"top.img: its backing chain cannot be opened: "*"$want"* ]]
  [ ! -e out.raw ]
  # imgsnap list lists what opens (the top) and says why it stops
  run_split imgsnap list top.img
  [ "$status" -eq 4 ]
  [[ $out == "top.img: 16 MiB virtual"*", over base.img" ]]
  [[ $err == *"top.img: its backing chain cannot be opened: "*"$want"* ]]
  run_split imgsnap list --json top.img
  [ "$status" -eq 4 ]
  [ "$(jget '.[0].filename')" = top.img ]
  [[ $(jget '.[0].backing_chain_error') == *"$want"* ]]
  [ "$(sha256sum top.img | cut -d' ' -f1)" = "$sum_top" ]
}

# imginfo and imgcheck describe the delta itself and exit 4.
check_described() {
  local want=$1
  run_split imginfo top.img
  [ "$status" -eq 4 ]
  [[ $out == *"virtual size: 16 MiB"* ]]
  [[ $out == *"allocated: 2 clusters"* ]]
  [[ $out == *"backing file: base.img (cannot be opened)"* ]]
  [[ $out == *"backing chain error: "*"$want"* ]]
  [[ $err == *"top.img: its backing chain cannot be opened"* ]]
  run_split imginfo --json top.img
  [ "$status" -eq 4 ]
  [ "$(jget .virtual_size)" -eq $((16 * M)) ]
  [ "$(jget .allocated_clusters)" -eq 2 ]
  [ "$(jget .backing)" = base.img ]
  [[ $(jget .backing_chain_error) == *"$want"* ]]
  run_split imginfo --backing-chain top.img
  [ "$status" -eq 4 ]
  [[ $out == "image: top.img"* ]]

  run_split imgcheck top.img
  [ "$status" -eq 4 ]
  [[ $out == *"No errors were found on the image."* ]]
  [[ $out == *"backing chain cannot be opened: "*"$want"* ]]
  [[ $out != *"corrupt"* ]]
  run_split imgcheck --json top.img
  [ "$status" -eq 4 ]
  [ "$(jget .status)" = backing-chain ]
  [ "$(jget .corruptions)" -eq 0 ]
  [[ $(jget .backing_chain_error) == *"$want"* ]]
  [ "$(jget '.problems[-1].severity')" = backing-chain ]
  [ "$(sha256sum top.img | cut -d' ' -f1)" = "$sum_top" ]
}

@test "issue 14 #7: base deleted: imginfo and imgcheck describe the delta and exit 4; the other tools say which base is missing" {
  make_pair
  rm base.img
  check_described "./base.img: No such file or directory"
  check_blind_tools "./base.img: No such file or directory"
  # a healthy chain still exits 0
  "$BIN/mkimg" -q base.img 16M
  "$BIN/mkimg" -q --backing base.img ok.img
  run_split imginfo --json ok.img
  [ "$status" -eq 0 ]
  [ "$(jget .backing_chain_error)" = null ]
  run_split imgcheck ok.img
  [ "$status" -eq 0 ]
}

@test "issue 14 #7: base replaced by another image (another uuid): not corrupt, exit 4" {
  make_pair
  "$BIN/mkimg" -q -f base.img 16M
  check_described "not the image this delta was made over"
  check_blind_tools "not the image this delta was made over"
}

@test "issue 14 #7: a delta damaged itself with its base missing: corruption wins (imgcheck exits 2)" {
  make_pair
  rm base.img
  poke top.img corrupt-bat
  run_split imgcheck --json top.img
  [ "$status" -eq 2 ]
  [ "$(jget .status)" = corrupt ]
  [ "$(jget .corruptions)" -ge 1 ]
  [[ $(jget .backing_chain_error) == *"base.img"* ]]
}

@test "issue 22: a base cut short of its metadata area: imgsnap merge says the chain cannot be opened, naming the base and the cause, not that the delta is corrupt" {
  "$BIN/mkimg" -q base.img 10M
  "$BIN/mkimg" -q --backing base.img top.img
  truncate -s 100000 base.img
  cp top.img top.copy
  for op in "merge top.img" "flatten top.img" "create top.img"; do
    run_split imgsnap $op
    [ "$status" -eq 4 ] || { echo "$op: $status $err"; false; }
    [[ "$err" == "imgsnap: top.img: its backing chain cannot be opened: ./base.img: truncated: the file is 100000 bytes, shorter than its metadata area"* ]] || { echo "$op: $err"; false; }
    [[ "$err" != *"image is corrupt"* ]] || { echo "$op: $err"; false; }
  done
  cmp top.img top.copy
  [ "$(stat -c %s base.img)" -eq 100000 ]
}
