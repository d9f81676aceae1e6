#!/usr/bin/env bats
# Issue 16, online: the exit statuses of libimg(7) for served images (partial
# grow 7, not mounted 6, not found 5, not an image 3, in use 75), the JSON
# error object, and --wait passed on to the daemon imgmount/imgattach start.

load helpers

setup() { online_setup; }
teardown() { online_teardown; }

# hold IMG: another process holds the image's lock (an exclusive OFD lock,
# as a writer); HOLDER is its pid.
hold() {
  local ready=$BATS_TEST_TMPDIR/.held
  rm -f "$ready"
  python3 - "$1" "$ready" >/dev/null 2>&1 3>&- <<'PY' &
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.fcntl(fd, 37, struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))  # F_OFD_SETLK
open(sys.argv[2] + ".tmp", "w").write(str(os.getpid()))
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
time.sleep(600)
PY
  BG_PIDS+=($!)
  for i in $(seq 200); do [ -s "$ready" ] && break; sleep 0.05; done
  HOLDER=$(cat "$ready")
}

has_sys_resource() {
  (( (0x$(awk '/^CapEff/ {print $2}' /proc/self/status) >> 24) & 1 ))
}

@test "issue 16: a partial online grow (image and loop grew, ext4 did not) exits 7 and the command it gives completes it" {
  mkimg --fs ext4 a.img 1G >/dev/null
  mkdir mnt
  imgmount -q a.img mnt
  dev=$(cat "$(rundir)/loop")
  before=$(df -B1 --output=size mnt | tail -n1 | tr -d ' ')
  # without CAP_SYS_RESOURCE the kernel refuses online ext4 resizing
  if has_sys_resource; then
    run_split setpriv --bounding-set=-sys_resource --inh-caps=-sys_resource \
      "$BIN/growimg" a.img 2G
  else
    run_split growimg a.img 2G
  fi
  [ "$status" -eq 7 ] || { echo "exit $status: $err"; false; }
  [ "$(blockdev --getsize64 "$dev")" -eq $((2 * G)) ]
  [[ "$err" == *"partial"* ]]
  [[ "$err" == *"'resize2fs $dev'"* ]]
  [[ "$err" == *"'imgumount $T/mnt' then 'growimg a.img $((2 * G))'"* ]] || { echo "$err"; false; }
  # the same with -j: one error object, status 7
  if has_sys_resource; then
    run_split setpriv --bounding-set=-sys_resource --inh-caps=-sys_resource \
      "$BIN/growimg" -j a.img 2G
  else
    run_split growimg -j a.img 2G
  fi
  [ "$status" -eq 7 ]
  [ "$(printf '%s\n' "$out" | jq -r .error.status)" -eq 7 ]
  [[ "$(printf '%s\n' "$out" | jq -r .error.message)" == *"growimg a.img $((2 * G))"* ]]
  # the command it gave completes it
  imgumount -q mnt
  run_split growimg a.img $((2 * G))
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  imgmount -q a.img mnt
  after=$(df -B1 --output=size mnt | tail -n1 | tr -d ' ')
  [ "$after" -gt $((before + G / 2)) ]
  imgumount -q mnt
  "$BIN/imgcheck" a.img
  assert_nothing_left
}

@test "issue 16: an online grow that changes nothing is a plain failure (1)" {
  mkimg --fs ext4 a.img 1G >/dev/null
  mkdir mnt
  imgmount -q a.img mnt
  run_split growimg a.img 512M
  [ "$status" -eq 1 ]
  [[ "$err" == *"smaller than the current size"* ]]
  imgumount -q mnt
  assert_nothing_left
}

@test "issue 16: imgumount and imgdetach exit 6 when nothing is mounted or attached (a second cleanup is harmless)" {
  mkimg --fs ext4 a.img 64M >/dev/null
  mkdir mnt
  imgmount -q a.img mnt
  imgumount -q mnt
  run_split imgumount mnt
  [ "$status" -eq 6 ]
  run_split imgumount a.img
  [ "$status" -eq 6 ]
  imgattach -q a.img
  imgdetach -q a.img
  run_split imgdetach a.img
  [ "$status" -eq 6 ]
  [[ "$err" == *"not mounted or attached"* ]]
  run_split imgumount gone
  [ "$status" -eq 5 ]
  # mounted, imgdetach is refused: an error, not "not attached"
  imgmount -q a.img mnt
  run_split imgdetach a.img
  [ "$status" -eq 1 ]
  [[ "$err" == *"use imgumount"* ]]
  imgumount -q mnt
  assert_nothing_left
}

@test "issue 16: imgmount, imgattach, imgserve: missing 5, not an image 3, locked 75, usage 2; nothing left behind" {
  mkimg --fs ext4 a.img 64M >/dev/null
  head -c 4M /dev/urandom > notimg
  mkdir mnt
  touch exp
  run_split imgmount nothere.img mnt;   [ "$status" -eq 5 ]
  run_split imgattach nothere.img;      [ "$status" -eq 5 ]
  run_split imgserve nothere.img exp;   [ "$status" -eq 5 ]
  run_split imgmount a.img nomnt;       [ "$status" -eq 5 ]
  run_split imgmount notimg mnt;        [ "$status" -eq 3 ]
  run_split imgattach notimg;           [ "$status" -eq 3 ]
  run_split imgserve notimg exp;        [ "$status" -eq 3 ]
  run_split imgmount -o suid a.img mnt; [ "$status" -eq 2 ]
  hold a.img
  run_split imgmount a.img mnt;         [ "$status" -eq 75 ]
  [[ "$err" == *"$HOLDER"* ]]
  run_split imgattach a.img;            [ "$status" -eq 75 ]
  run_split imgserve a.img exp;         [ "$status" -eq 75 ]
  run_split imgmount -j a.img mnt
  [ "$status" -eq 75 ]
  [ "$(printf '%s\n' "$out" | jq -r .error.status)" -eq 75 ]
  [ "$(printf '%s\n' "$out" | jq -r .error.errno_name)" = EBUSY ]
  assert_nothing_left
}

@test "issue 16: imgmount --wait waits for the lock (the daemon it starts waits), --wait=1 gives up with 75" {
  mkimg --fs ext4 a.img 64M >/dev/null
  mkdir mnt
  hold a.img
  start=$(date +%s%N)
  run_split imgmount --wait=1 a.img mnt
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  [ "$status" -eq 75 ]
  [ "$ms" -ge 900 ] || { echo "gave up after $ms ms"; false; }
  [[ "$err" == *"after waiting 1."* ]] || { echo "$err"; false; }
  assert_nothing_left
  (sleep 1; kill "$HOLDER") &
  start=$(date +%s%N)
  run_split imgmount --wait a.img mnt
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [ "$ms" -ge 700 ]
  grep -q " $T/mnt " /proc/mounts
  imgumount -q mnt
  hold a.img
  (sleep 1; kill "$HOLDER") &
  run_split imgattach --wait=20 a.img
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  imgdetach -q a.img
  assert_nothing_left
}
