#!/usr/bin/env bats
# The lock discipline of the online tools (issue 14): one image is served
# by one daemon; a failed start is never reported as success; imgmount and
# imgattach never adopt an export they did not start; an image in use is
# never replaced.

load helpers

setup() { online_setup; }
teardown() { online_teardown; }

# mounted_count DIR...: lines of /proc/self/mountinfo whose mount point is
# one of the DIRs.
mounted_count() {
  local n=0 d
  for d in "$@"; do
    n=$((n + $(awk -v d="$d" '$5 == d' /proc/self/mountinfo | wc -l)))
  done
  echo "$n"
}

@test "issue 14 #1: two concurrent imgmount of one image: exactly one wins each round (50 rounds), the other exits 75 naming the holder" {
  mkimg -q --fs ext4 a.img 64M
  mkdir m1 m2
  local round s1 s2 win lose wmp pid loops
  for round in $(seq 50); do
    "$BIN/imgmount" -q a.img m1 2>e1 & p1=$!
    "$BIN/imgmount" -q a.img m2 2>e2 & p2=$!
    s1=0; wait $p1 || s1=$?
    s2=0; wait $p2 || s2=$?
    if [ "$s1" -eq 0 ]; then win=1 lose=2 wmp=$T/m1; s=$s2
    else win=2 lose=1 wmp=$T/m2; s=$s1; fi
    # exactly one succeeded, the other said "in use" (75)
    [ $((s1 == 0)) -ne $((s2 == 0)) ] || { echo "round $round: both exited $s1"; cat e1 e2; false; }
    [ "$s" -eq 75 ] || { echo "round $round: loser exited $s"; cat e$lose; false; }
    # the loser named the file and the process holding it
    pid=$(daemon_pid)
    grep -q "a.img" e$lose || { echo "round $round:"; cat e$lose; false; }
    grep -q "$pid" e$lose || { echo "round $round: holder $pid not in:"; cat e$lose; false; }
    [ ! -s e$win ] || { echo "round $round: winner said:"; cat e$win; false; }
    # the filesystem is mounted once, over one loop device, one export
    [ "$(mounted_count "$T/m1" "$T/m2")" -eq 1 ] || { cat /proc/self/mountinfo; false; }
    [ "$(mounted_count "$wmp")" -eq 1 ]
    loops=$(losetup -a | grep -c "$BATS_TEST_TMPDIR" || true)
    [ "$loops" -eq 1 ] || { echo "round $round: $loops loop devices"; losetup -a; false; }
    [ "$(grep -c "$LIBIMG_RUNDIR" /proc/self/mountinfo)" -eq 1 ]
    [ "$(ls -d "$LIBIMG_RUNDIR"/*/ | wc -l)" -eq 1 ]
    run_split imgumount a.img
    [ "$status" -eq 0 ] || { echo "round $round: imgumount: $err"; false; }
    assert_nothing_left
  done
  "$BIN/imgcheck" a.img
}

@test "issue 14 #1: imgattach of an image another imgattach serves exits 75 naming the daemon, and leaves the other's export alone" {
  mkimg -q --fs ext4 a.img 64M
  run_split imgattach a.img
  [ "$status" -eq 0 ]
  dev=$out
  pid=$(daemon_pid)
  run_split imgattach a.img
  [ "$status" -eq 75 ]
  [[ "$err" == *"a.img"*"$pid"* ]] || { echo "$err"; false; }
  [ "$(losetup -a | grep -c "$BATS_TEST_TMPDIR")" -eq 1 ]
  [ "$(daemon_pid)" = "$pid" ]
  [ -b "$dev" ] && blkid "$dev" | grep -q ext4
  run_split imgdetach a.img
  [ "$status" -eq 0 ]
  assert_nothing_left
}

@test "issue 14 #1: imgserve -d on an image another daemon holds exits 75 every time (never 0)" {
  mkimg -q --fs ext4 a.img 64M
  : > e1
  imgserve -d -q a.img e1
  pid=$(daemon_pid)
  local i s
  for i in $(seq 30); do
    : > "x$i"
    s=0; "$BIN/imgserve" -d -q a.img "x$i" 2>err || s=$?
    [ "$s" -eq 75 ] || { echo "try $i: exit $s"; cat err; false; }
    grep -q "a.img: .*locked .*by process $pid (imgserve)" err || { cat err; false; }
  done
  [ "$(daemon_pid)" = "$pid" ]
  kill -TERM "$pid"
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  assert_nothing_left
}

@test "issue 14 #2: mkimg -f and imgconvert -f refuse a mounted image and the base of a mounted clone (exit 75), the container keeps its data" {
  mkimg -q --fs ext4 base.img 64M
  mkimg -q --backing base.img ct.img
  mkimg -q --fs ext4 b.img 64M
  head -c 1M /dev/urandom > src.raw
  mkdir m1 m2
  imgmount -q ct.img m1
  imgmount -q b.img m2
  echo hello > m1/f
  echo world > m2/f
  sync
  sum() { sha256sum base.img b.img ct.img; ls -A | sort; }
  before=$(sum)
  for t in b.img base.img; do
    run_split mkimg -f "$t" 64M
    [ "$status" -eq 75 ] || { echo "mkimg $t: $status $err"; false; }
    [[ "$err" == *"$t"*"in use"*"imgserve"* ]] || { echo "$err"; false; }
    run_split imgconvert -f src.raw "$t"
    [ "$status" -eq 75 ] || { echo "imgconvert $t: $status $err"; false; }
    run_split imgconvert -f -O raw src.raw "$t"
    [ "$status" -eq 75 ] || { echo "imgconvert -O raw $t: $status $err"; false; }
  done
  imgumount -q m1
  imgumount -q m2
  assert_nothing_left
  [ "$(sha256sum base.img)" = "$(echo "$before" | grep ' base.img$')" ]
  "$BIN/imgcheck" ct.img
  imgmount -q ct.img m1
  [ "$(cat m1/f)" = hello ]
  imgmount -q b.img m2
  [ "$(cat m2/f)" = world ]
  imgumount -q m1
  imgumount -q m2
  assert_nothing_left
}
