#!/usr/bin/env bats
# -p on a served image (issue 16): the daemon reports no progress, so the
# tools name their steps and print the final "    (100.00/100%)" line on
# success, on standard error; standard output keeps its JSON.

load helpers

setup() { online_setup; }
teardown() { online_teardown; }

# last_is_100 ERRFILE: percent lines only go up and the last is 100.
last_is_100() {
  awk '/^    \([0-9.]+\/100%\)$/ { v = substr($0, 6) + 0; if (n++ && v < last) bad = 1; last = v }
       END { exit bad || !n || last != 100 }' "$1" || { cat "$1"; return 1; }
}

@test "issue 16 #progress online: growimg, compact, imgsnap merge -p end with 100% on stderr, JSON on stdout" {
  mkimg -q --fs ext4 a.img 256M
  mkdir mnt
  imgmount -q a.img mnt
  if growimg -p -j a.img +256M > out 2> err; then
    last_is_100 err
    jq -e .new_size out >/dev/null
  else
    # without CAP_SYS_RESOURCE the filesystem step fails: no 100%
    grep -q 'CAP_SYS_RESOURCE' err
    ! grep -q '(100.00/100%)' err
  fi
  grep -q '^    growing the image (imgserve)\.\.\.$' err
  grep -q '^    growing the mounted filesystem\.\.\.$' err
  compact -p -j a.img > out 2> err
  last_is_100 err
  jq -e '.online == true' out >/dev/null
  imgsnap -q create a.img
  imgsnap -p merge a.img > out 2> err
  last_is_100 err
  ! grep -q '100%' out
  imgumount -q mnt
  "$BIN/imgcheck" -q a.img
  assert_nothing_left
}
