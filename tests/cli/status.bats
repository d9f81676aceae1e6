#!/usr/bin/env bats
# Issue 16: one exit status table for every tool (libimg(7), tools/common.h):
# the same condition gives the same status in each tool; with -j a failure
# prints exactly one JSON error object on stdout; --wait[=SECONDS] waits for
# a lock another process holds.

load helpers

setup() {
  common_setup
  export LIBIMG_RUNDIR=$BATS_TEST_TMPDIR/run
}
teardown() {
  [ -n "${MNT:-}" ] && umount -l "$MNT" 2>/dev/null
  common_teardown
}

# status_is WANT TOOL ARGS...: the tool exits WANT (else says what it did).
status_is() {
  local want=$1; shift
  run_split "$@"
  [ "$status" -eq "$want" ] || { echo "$*: exit $status, expected $want; $err"; false; }
}

# A clone whose base is gone: the image is intact, its chain is not.
make_orphan() {
  "$BIN/mkimg" -q base.img 16M
  "$BIN/mkimg" -q --backing base.img "$1"
  rm base.img
}

@test "issue 16: bad usage exits 2 in every tool but imgcheck (1, qemu-img's 2 is corrupt)" {
  for t in mkimg growimg shrinkimg compact imginfo imgmap imgconvert imgsnap imgserve \
           imgattach imgdetach imgmount imgumount; do
    status_is 2 "$t" --no-such-option x y
    status_is 2 "$t"
  done
  status_is 2 growimg a.img 1Q
  status_is 2 shrinkimg a.img -1Q
  status_is 2 mkimg a.img 12x
  status_is 2 mkimg --cluster-size 3K a.img 1G
  status_is 2 imgconvert --cluster-size 3K a.raw a.img
  status_is 2 mkimg --fs vfat a.img 1G
  status_is 2 imgsnap frobnicate a.img
  status_is 2 imginfo --wait=soon a.img
  [ ! -e a.img ]
  status_is 1 imgcheck --no-such-option x
  status_is 1 imgcheck
}

@test "issue 16: a missing file exits 5 in every tool (imgcheck: 1)" {
  for t in imginfo imgmap compact imgserve; do
    status_is 5 "$t" nope.img $( [ $t = imgserve ] && echo exp )
  done
  status_is 5 growimg nope.img 1G
  status_is 5 shrinkimg nope.img 1M
  status_is 5 imgsnap list nope.img
  status_is 5 imgsnap create nope.img
  status_is 5 imgsnap merge nope.img
  status_is 5 imgconvert nope.raw out.img
  [ ! -e out.img ]
  status_is 5 mkimg no/such/dir/a.img 1G
  status_is 5 mkimg --fs ext4 --from no/such/dir a.img 64M
  [ ! -e a.img ]
  status_is 5 imgumount no/such/mountpoint
  status_is 5 imgdetach nope.img
  status_is 1 imgcheck nope.img
  [ "$err" = "imgcheck: nope.img: No such file or directory" ]
}

@test "issue 16: not a libimg image, or corrupt, exits 3 (imgcheck: 1 and 2)" {
  head -c 1M /dev/urandom > not.img
  cp not.img orig
  for t in imginfo imgmap compact; do
    status_is 3 "$t" not.img
    [ "$err" = "$t: not.img: not a libimg image" ]
  done
  status_is 3 growimg not.img 2M
  status_is 3 shrinkimg not.img 512K
  status_is 3 imgsnap create not.img
  status_is 3 imgconvert -F libimg not.img out.img
  [ ! -e out.img ]
  status_is 3 mkimg --backing not.img clone.img
  [ ! -e clone.img ]
  status_is 1 imgcheck not.img
  cmp not.img orig
  # a truncated image: corrupt (imgcheck: 2)
  make_raw a.raw
  "$BIN/imgconvert" -q a.raw b.img
  truncate -s $(( $(info b.img metadata_size) + 4096 )) b.img
  status_is 3 imginfo b.img
  [[ "$err" == "imginfo: b.img: image is corrupt"* ]]
  status_is 3 imgmap b.img
  status_is 3 compact b.img
  status_is 3 imgconvert b.img out.img
  status_is 2 imgcheck b.img
}

@test "issue 16: a broken backing chain exits 4 in every tool" {
  make_orphan c.img
  status_is 4 imginfo c.img
  status_is 4 imgmap c.img
  status_is 4 compact c.img
  status_is 4 growimg c.img 32M
  status_is 4 imgconvert -F libimg c.img out.img
  [ ! -e out.img ]
  status_is 4 imgsnap list c.img
  status_is 4 imgcheck c.img
}

@test "issue 16: not mounted or attached exits 6 in imgumount and imgdetach" {
  "$BIN/mkimg" -q a.img 16M
  mkdir mnt
  status_is 6 imgumount mnt
  [[ "$err" == *"not mounted by imgmount"* ]]
  status_is 6 imgumount a.img
  status_is 6 imgdetach a.img
  [[ "$err" == *"not mounted or attached"* ]]
  # a directory that does not exist is not found (5), not "not mounted"
  status_is 5 imgumount gone
  # with -j: the error object, status 6, no errno
  if command -v jq >/dev/null; then
    run_split imgumount -j mnt
    [ "$status" -eq 6 ]
    [ "$(jget .error.status)" -eq 6 ]
    [ "$(jget .error.errno)" = null ]
    [ "$(jget .error.file)" = mnt ]
  fi
}

@test "issue 16: locked by another process exits 75 in every tool that takes the lock" {
  "$BIN/mkimg" -q a.img 16M
  "$BIN/mkimg" -q b.img 16M
  cp a.img orig
  hold_lock a.img
  for t in imginfo imgmap compact imgcheck; do
    status_is 75 "$t" a.img
    [[ "$err" == *"process $HOLDER_PID"* ]]
  done
  status_is 75 growimg a.img 32M
  status_is 75 shrinkimg a.img 8M
  status_is 75 imgsnap create a.img
  status_is 75 imgsnap list a.img
  status_is 75 imgconvert a.img out.img
  status_is 75 imgconvert -f b.img a.img
  status_is 75 mkimg -f a.img 1G
  status_is 75 mkimg --backing a.img clone.img
  [ ! -e clone.img ] && [ ! -e out.img ]
  cmp a.img orig
}

@test "issue 16: with -j a failure prints exactly one JSON error object (status = exit status)" {
  command -v jq >/dev/null || skip "jq is needed"
  "$BIN/mkimg" -q a.img 16M
  head -c 1M /dev/urandom > not.img
  check_error() { # WANT_STATUS WANT_ERRNO_NAME WANT_FILE TOOL ARGS...
    local ws=$1 wn=$2 wf=$3; shift 3
    run_split "$@"
    [ "$status" -eq "$ws" ] || { echo "$*: exit $status"; false; }
    [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] || { echo "$*: stdout: $out"; false; }
    printf '%s\n' "$out" | jq -e . >/dev/null
    [ "$(jget 'keys_unsorted | join(",")')" = "schema,error" ]
    [ "$(jget '.schema')" = 1 ]
    [ "$(jget '.error | keys_unsorted | join(",")')" = \
      "status,errno,errno_name,message,file,holder_pid" ]
    [ "$(jget '.error.status')" -eq "$status" ]
    [ "$(jget '.error.errno_name')" = "$wn" ] || { echo "$*: $(jget .error.errno_name)"; false; }
    [ "$(jget '.error.file')" = "$wf" ]
    # the message is stderr's, without "TOOL: "
    [[ "$err" == *"$(jget '.error.message')"* ]] || { echo "$*: $err / $out"; false; }
  }
  check_error 5 ENOENT nope.img imginfo -j nope.img
  [ "$(jget '.error.errno')" -eq 2 ]
  [ "$(jget '.error.holder_pid')" = null ]
  check_error 5 ENOENT nope.img growimg --json nope.img 1G
  check_error 5 ENOENT nope.img compact -j nope.img
  check_error 3 EMEDIUMTYPE not.img imginfo -j not.img
  check_error 3 EMEDIUMTYPE not.img shrinkimg -j not.img 512K
  check_error 2 null null imginfo -j --no-such-option
  check_error 2 null null compact --no-such-option --json
  [ "$(jget '.error.errno')" = null ]
  check_error 2 null null growimg -j a.img 1Q
  [[ "$(jget .error.message)" == "invalid size '1Q'"* ]]
  # -q silences human text, not JSON
  check_error 5 ENOENT nope.img imginfo -j -q nope.img
  # locked: the holder's pid
  hold_lock a.img
  check_error 75 EBUSY a.img imginfo -j a.img
  [ "$(jget '.error.holder_pid')" -eq "$HOLDER_PID" ]
  check_error 75 EBUSY a.img compact -j a.img
  [ "$(jget '.error.holder_pid')" -eq "$HOLDER_PID" ]
  check_error 75 EBUSY a.img growimg -j a.img 32M
  # no -j: nothing on stdout
  run_split imginfo nope.img
  [ -z "$out" ]
}

@test "issue 16: LIBIMG_TEST_JSON_LOG gets each error object as one line 'TOOL<tab>JSON'" {
  command -v jq >/dev/null || skip "jq is needed"
  export LIBIMG_TEST_JSON_LOG=$BATS_TEST_TMPDIR/json.log
  status_is 5 imginfo -j nope.img
  status_is 2 compact -j
  status_is 5 imginfo nope.img          # no -j: nothing logged
  [ "$(wc -l < "$LIBIMG_TEST_JSON_LOG")" -eq 2 ]
  [ "$(cut -f1 "$LIBIMG_TEST_JSON_LOG" | tr '\n' ' ')" = "imginfo compact " ]
  cut -f2- "$LIBIMG_TEST_JSON_LOG" | jq -e '.schema == 1 and (.error.status | type) == "number"'
}

@test "issue 16: --wait waits for the holder to go, then succeeds" {
  "$BIN/mkimg" -q a.img 16M
  hold_lock a.img
  (sleep 1; kill "$HOLDER_PID") &
  start=$(date +%s%N)
  status_is 0 imginfo --wait a.img
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  [ "$ms" -ge 700 ] || { echo "returned after $ms ms"; false; }
  [[ "$out" == *"virtual size"* ]]
  hold_lock a.img
  (sleep 1; kill "$HOLDER_PID") &
  status_is 0 growimg --wait=30 a.img 32M
  [ "$(info a.img virtual_size)" -eq $((32 * M)) ]
  # the target of mkimg -f
  hold_lock a.img
  (sleep 1; kill "$HOLDER_PID") &
  status_is 0 mkimg -q -f --wait=30 a.img 8M
  [ "$(info a.img virtual_size)" -eq $((8 * M)) ]
}

@test "issue 16: --wait=SECONDS gives up after SECONDS with 75 and says how long it waited" {
  command -v jq >/dev/null || skip "jq is needed"
  "$BIN/mkimg" -q a.img 16M
  "$BIN/mkimg" -q b.img 16M
  hold_lock a.img
  start=$(date +%s%N)
  status_is 75 compact --wait=1 a.img
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  [ "$ms" -ge 900 ] && [ "$ms" -lt 5000 ] || { echo "gave up after $ms ms"; false; }
  [[ "$err" == *"still locked after waiting 1."*" s"* ]] || { echo "$err"; false; }
  status_is 75 imgconvert --wait=0.3 -f b.img a.img
  [[ "$err" == *"after waiting 0."* ]]
  run_split imginfo -j --wait=0.2 a.img
  [ "$status" -eq 75 ]
  [ "$(jget .error.holder_pid)" -eq "$HOLDER_PID" ]
  [[ "$(jget .error.message)" == *"after waiting"* ]]
  # without --wait: at once
  start=$(date +%s%N)
  status_is 75 imginfo a.img
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  [ "$ms" -lt 900 ]
  [[ "$err" != *"waiting"* ]]
}

@test "issue 16: --wait never turns another error into a wait" {
  head -c 1M /dev/urandom > not.img
  start=$(date +%s%N)
  status_is 5 imginfo --wait nope.img
  status_is 3 compact --wait not.img
  status_is 5 growimg --wait nope.img 1G
  make_orphan c.img
  status_is 4 imginfo --wait c.img
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  [ "$ms" -lt 3000 ] || { echo "took $ms ms"; false; }
}

@test "issue 16: the host out of space exits 8 (a small tmpfs)" {
  [ "$(id -u)" -eq 0 ] || skip "needs root to mount a tmpfs"
  MNT=$T/mnt
  mkdir -p "$MNT"
  mount -t tmpfs -o size=4M libimg-status "$MNT" 2>/dev/null || { MNT=; skip "cannot mount a tmpfs"; }
  head -c 8M /dev/urandom > big.raw
  status_is 8 imgconvert big.raw "$MNT/a.img"
  [[ "$err" == *"No space left on device"* ]]
  [ -z "$(ls -A "$MNT")" ]
  # an image on it that cannot grow its data
  "$BIN/mkimg" -q "$MNT/b.img" 64M
  fallocate -l $(( $(df -B1 --output=avail "$MNT" | tail -n1) )) "$MNT/filler" 2>/dev/null ||
    head -c 8M /dev/zero > "$MNT/filler" 2>/dev/null || true
  status_is 8 imgconvert -f -O libimg big.raw "$MNT/b.img"
  umount "$MNT"
  MNT=
}

@test "red2: imgconvert -f --wait A B and B A at once do not deadlock (no source lock is held while waiting for the target)" {
  head -c 32M /dev/urandom > r.raw
  "$BIN/imgconvert" -q -F raw -O libimg r.raw a.img
  cp a.img b.img
  for i in 1 2 3; do
    "$BIN/imgconvert" -q -f --wait=6 -O libimg a.img b.img 2>"$T/e1" & p1=$!
    "$BIN/imgconvert" -q -f --wait=6 -O libimg b.img a.img 2>"$T/e2" & p2=$!
    wait $p1 && s1=0 || s1=$?
    wait $p2 && s2=0 || s2=$?
    [ "$s1" -eq 0 ] && [ "$s2" -eq 0 ] || { echo "round $i: $s1 $s2"; cat "$T/e1" "$T/e2"; false; }
  done
  "$BIN/imgconvert" -q -O raw a.img a.raw
  cmp a.raw r.raw
}

@test "red2: --wait also waits in imgsnap create, imgsnap template and mkimg --backing (a base locked for writing)" {
  "$BIN/mkimg" -q a.img 16M
  hold_lock a.img
  (sleep 1; kill "$HOLDER_PID") &
  status_is 0 imgsnap --wait=30 create a.img
  wait
  [ -f a.img.snap1 ]
  hold_lock a.img
  (sleep 1; kill "$HOLDER_PID") &
  status_is 0 imgsnap --wait=30 template a.img
  wait
  hold_lock a.img
  (sleep 1; kill "$HOLDER_PID") &
  status_is 0 mkimg -q --wait=30 --backing a.img c.img
  wait
  [ -f c.img ]
  ls -A | grep -q '^\.' && { ls -A; false; } || true
  "$BIN/mkimg" -q d.img 16M
  "$BIN/imgsnap" -q create d.img
  hold_lock d.img
  (sleep 1; kill "$HOLDER_PID") &
  status_is 0 imgsnap --wait=30 merge d.img
  wait
  [ ! -e d.img.snap1 ]
}
