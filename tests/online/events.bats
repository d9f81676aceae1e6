#!/usr/bin/env bats
# Issue 18: imgserve's events (imgctl events, the control command
# "events"), the host's low-water mark, and errors of the filesystem
# inside an image (fanotify FAN_FS_ERROR, else ext4's error counter),
# reported as events and shown by imginfo.

load helpers

setup() { online_setup; }
teardown() { online_teardown; }

SCHEMA=$ROOT/tools/schema/imgctl.json

# validate FILE: every line of FILE is one event of imgctl.json.
validate() {
  python3 - "$SCHEMA" "$1" <<'PY'
import json, sys
try:
    import jsonschema
except ImportError:
    sys.exit(0)
schema = json.load(open(sys.argv[1]))
event = dict(schema["$defs"]["event"])
event["$defs"] = schema["$defs"]
v = jsonschema.Draft202012Validator(event)
lines = open(sys.argv[2]).read().splitlines()
assert lines, "no events"
for l in lines:
    errs = list(v.iter_errors(json.loads(l)))
    if errs:
        print("%s: %s" % (l, errs[0].message))
        sys.exit(1)
PY
}

# wait_for SECONDS COMMAND...: until COMMAND succeeds.
wait_for() {
  local n=$(($1 * 10)); shift
  while ! "$@"; do
    n=$((n - 1))
    [ "$n" -gt 0 ] || return 1
    sleep 0.1
  done
}

status_key() { imgctl -j status "$1" | jq -r ".status.$2"; }
subscribers_are() { [ "$(status_key "$1" event_subscribers)" = "$2" ]; }
has_event() { grep -q "\"event\":\"$2\"" "$1"; }

# An image whose ext4 has a damaged directory /d (its first block
# overwritten while nothing mounts it).
corrupt_image() {
  mkimg --fs ext4 a.img 64M >/dev/null
  mkdir -p mnt
  imgmount -q a.img mnt
  mkdir mnt/d
  for i in 1 2 3 4 5 6 7 8; do echo "$i" > "mnt/d/file$i"; done
  imgumount -q mnt
  local dev
  dev=$(imgattach a.img)
  debugfs -w -R "zap_block -f /d -p 0x41 0" "$dev" 2>/dev/null
  imgdetach -q a.img
}

@test "issue 18 events: two subscribers get snapshot, compacted and stopping in order, valid per the schema, also in the log" {
  mkimg a.img 64M >/dev/null
  : > export
  imgserve -d -q a.img export
  imgctl -j events a.img > ev1 2>ev1.err &
  BG_PIDS+=("$!"); p1=$!
  imgctl events a.img > ev2.txt 2>ev2.err &
  BG_PIDS+=("$!"); p2=$!
  wait_for 5 subscribers_are a.img 2
  cp "$(rundir)/log" log.copy 2>/dev/null || true
  imgctl -q snapshot a.img
  imgctl -q compact a.img
  wait_for 5 has_event ev1 compacted
  grep -q '"event":"snapshot"' "$(rundir)/log"
  grep -q '"event":"compacted"' "$(rundir)/log"
  imgctl -q stop a.img
  # the daemon's end ends imgctl events IMAGE
  timeout 10 sh -c "while kill -0 $p1 2>/dev/null || kill -0 $p2 2>/dev/null; do sleep 0.1; done"
  cat ev1
  [ "$(jq -r .event ev1 | tr '\n' ' ')" = "snapshot compacted stopping " ]
  [ "$(jq -r .seq ev1 | tr '\n' ' ')" = "1 2 3 " ]
  [ "$(jq -r .snapshot ev1 | head -n1)" = a.img.snap1 ]
  [ "$(jq -r .image ev1 | sort -u)" = "$T/a.img" ]
  [ "$(jq -r 'select(.event == "stopping") | .reason' ev1)" = stop ]
  validate ev1
  # text: TIME IMAGE EVENT key=value...
  cat ev2.txt
  [ "$(awk '{print $3}' ev2.txt | tr '\n' ' ')" = "snapshot compacted stopping " ]
  grep -q " snapshot snapshot=a.img.snap1" ev2.txt
  assert_nothing_left
}

@test "issue 18 events: a subscriber that reads nothing blocks neither I/O nor the other subscribers" {
  mkimg a.img 64M >/dev/null
  : > export
  imgserve -d -q a.img export
  # a subscriber that never reads: its socket fills, its events are dropped
  python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"events\n")
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
time.sleep(60)' "$(rundir)/ctl" &
  BG_PIDS+=("$!")
  imgctl -j events a.img > ev &
  BG_PIDS+=("$!")
  wait_for 5 subscribers_are a.img 2
  # 1000 events, more than the queue and the socket buffer hold
  python3 -c '
import socket, sys
for i in range(1, 1001):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
    s.sendall(b"grow %d\n" % ((64 << 20) + i * 4096))
    assert s.makefile().readline().startswith("ok"), i
    s.close()' "$(rundir)/ctl"
  timeout 10 dd if=/dev/zero of=export bs=64k count=16 conv=notrunc oflag=direct 2>/dev/null
  wait_for 10 sh -c '[ "$(grep -c "\"event\":\"resized\"" ev)" -eq 1000 ]'
  [ "$(jq -r 'select(.event == "resized") | .seq' ev | tail -n1)" -eq 1000 ]
  [ "$(status_key a.img events_lost)" -gt 0 ]
  validate ev
  imgctl -q stop a.img
}

@test "issue 18 events: --low-water reports low_space (and space_ok) in the status and the log" {
  mkimg a.img 64M >/dev/null
  : > export
  run imgserve -q --low-water=12x a.img export
  [ "$status" -eq 2 ]
  imgserve -d -q --low-water=100% a.img export
  wait_for 5 grep -q '"event":"low_space"' "$(rundir)/log"
  grep '"event":"low_space"' "$(rundir)/log" | sed 's/^imgserve: event: //' > ev
  validate ev
  [ "$(status_key a.img low_water)" -gt 0 ]
  [ "$(status_key a.img host_free)" -lt "$(status_key a.img low_water)" ]
  imgctl -q stop a.img
  : > export
  imgserve -d -q --low-water=1 a.img export
  sleep 1.5
  ! grep -q '"event":"low_space"' "$(rundir)/log"
  [ "$(status_key a.img low_water)" = 1 ]
  # changed at run time (a daemon imgmount started has no option)
  run_split imgctl -j low-water a.img 100%
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [ "$(jq -r .reply.low_water_percent <<<"$out")" = 100 ]
  wait_for 5 grep -q '"event":"low_space"' "$(rundir)/log"
  imgctl -q low-water a.img 1
  wait_for 5 grep -q '"event":"space_ok"' "$(rundir)/log"
  grep '"event":"space_ok"' "$(rundir)/log" | sed 's/^imgserve: event: //' > ev
  validate ev
  [ "$(jq -r .low_water ev)" = 1 ]
  imgctl -q low-water a.img 0
  [ "$(status_key a.img low_water)" = null ]
  run imgctl low-water a.img 101%
  [ "$status" -eq 1 ]
  imgctl -q stop a.img
  assert_nothing_left
}

@test "issue 18 fs errors: a damaged directory read through imgmount gives an fs_error event at once (fanotify), and imginfo shows the error" {
  corrupt_image
  imgmount -q a.img mnt
  # the watch follows the mount within a second
  wait_for 5 sh -c '[ "$(imgctl -j status a.img | jq -r .status.fs_watch)" != null ]'
  kernel=$(uname -r | awk -F. '{print $1 * 1000 + $2}')
  if [ "$kernel" -ge 5016 ]; then
    [ "$(status_key a.img fs_watch)" = fanotify ]
  fi
  imgctl -j events a.img > ev &
  BG_PIDS+=("$!")
  wait_for 5 subscribers_are a.img 1
  ! ls mnt/d
  wait_for 3 has_event ev fs_error
  cat ev
  validate ev
  [ "$(jq -r .filesystem ev)" = ext4 ]
  [ "$(jq -r .mountpoint ev)" = "$T/mnt" ]
  [ "$(jq -r .device ev)" = "$(basename "$(cat "$(rundir)/loop")")" ]
  [ "$(jq -r .errors_count ev)" -ge 1 ]
  [ "$(status_key a.img fs_errors)" -ge 1 ]
  imgumount -q mnt
  run_split imginfo -j a.img
  [ "$status" -eq 0 ]
  [ "$(jq -r .filesystem.errors <<<"$out")" = true ]
  [ "$(jq -r .filesystem_errors.count <<<"$out")" -ge 1 ]
  [ "$(jq -r .filesystem_errors.last.function <<<"$out")" != "" ]
  run_split imginfo a.img
  [[ $out == *"filesystem errors: "[1-9]*" recorded"* ]] || { echo "$out"; false; }
  assert_nothing_left
}

@test "issue 18 fs errors: --fs-watch=poll finds the error through ext4's errors_count, and a mount of a damaged filesystem says it records errors" {
  corrupt_image
  mkdir -p m2
  : > export
  imgserve -d -q --fs-watch=poll a.img export
  rd=$(rundir)
  dev=$(losetup -f --show export)
  echo "$dev" > "$rd/loop"
  mount "$dev" m2
  echo "$T/m2" > "$rd/mountpoint"
  wait_for 5 sh -c '[ "$(imgctl -j status a.img | jq -r .status.fs_watch)" = errors_count ]'
  imgctl -j events a.img > ev &
  BG_PIDS+=("$!")
  wait_for 5 subscribers_are a.img 1
  ! ls m2/d
  wait_for 4 has_event ev fs_error
  validate ev
  [ "$(jq -r .source ev)" = errors_count ]
  [ "$(jq -r .error ev)" = null ]
  umount m2
  rm "$rd/mountpoint"
  wait_for 5 sh -c '[ "$(imgctl -j status a.img | jq -r .status.fs_watch)" = null ]'
  # the filesystem now records the error: mounted again, the watch says so
  mount "$dev" m2
  echo "$T/m2" > "$rd/mountpoint"
  wait_for 5 sh -c "grep -c '\"source\":\"recorded\"' ev | grep -q 1"
  validate ev
  umount m2
  rm "$rd/mountpoint"
  losetup -d "$dev"
  rm "$rd/loop"
  imgctl -q stop a.img
  assert_nothing_left
}

@test "issue 18 events: failed requests give one io_error event a burst" {
  [ -x "$BUILD/faultbin/imgserve" ] || skip "no $BUILD/faultbin/imgserve (make tests)"
  mkimg a.img 64M >/dev/null
  : > export
  # the first write or two are the open's (the dirty flag): every later one fails
  for n in 1 2 3 4 5; do
    LIBIMG_FAULT=write:$n:EIO,sticky "$BUILD/faultbin/imgserve" -d -q a.img export 2>/dev/null && break
  done
  [ -S "$(rundir)/ctl" ]
  imgctl -j events a.img > ev &
  BG_PIDS+=("$!")
  wait_for 5 subscribers_are a.img 1
  for i in 1 2 3; do
    ! dd if=/dev/zero of=export bs=64k count=1 seek=$i conv=notrunc oflag=direct 2>/dev/null
  done
  wait_for 3 has_event ev io_error
  sleep 1.2
  ! dd if=/dev/zero of=export bs=64k count=1 seek=9 conv=notrunc oflag=direct 2>/dev/null
  wait_for 3 sh -c '[ "$(grep -c io_error ev)" -eq 2 ]'
  cat ev
  validate ev
  [ "$(jq -r .error ev | sort -u)" = EIO ]
  [ "$(jq -r .io_errors ev | head -n1)" -eq 1 ]
  [ "$(jq -r .io_errors ev | tail -n1)" -eq "$(status_key a.img io_errors)" ]
  [ "$(status_key a.img io_errors)" -ge 4 ]
  imgctl -q stop a.img 2>/dev/null || true
}

@test "issue 18 fs errors: imgctl fsck repairs one image's filesystem (unmount, e2fsck, mount again) and leaves the others alone" {
  corrupt_image
  mkimg --fs ext4 b.img 64M >/dev/null
  mkdir -p mb
  imgmount -q b.img mb
  echo other > mb/f
  bpid=$(imgctl -j status b.img | jq -r .pid)
  imgmount -q a.img mnt
  ! ls mnt/d
  # busy: refused, nothing changed
  (cd mnt && sleep 3) &
  BG_PIDS+=("$!")
  sleep 0.3
  run_split imgctl fsck a.img
  [ "$status" -eq 75 ] || { echo "$err"; false; }
  grep -q " $T/mnt ext4 " /proc/mounts
  wait
  # preen mode does not repair a damaged directory: exit 3, mounted again
  run_split imgctl fsck a.img
  [ "$status" -eq 3 ] || { echo "$status $err"; false; }
  [[ $err == *"e2fsck left errors"* ]]
  grep -q " $T/mnt ext4 " /proc/mounts
  run_split imgctl -j fsck a.img yes
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [ "$(jq -r .repaired <<<"$out")" = true ]
  [ "$(jq -r .mountpoint <<<"$out")" = "$T/mnt" ]
  [ "$(jq -r .e2fsck_status <<<"$out")" -eq 1 ]
  ls mnt/d
  grep -q " $T/mnt ext4 rw,nosuid,nodev" /proc/mounts
  run_split imgctl fsck a.img
  [ "$status" -eq 0 ]
  [[ $out == *": clean; mounted again on $T/mnt" ]] || { echo "$out"; false; }
  # the other image: untouched
  [ "$(cat mb/f)" = other ]
  [ "$(imgctl -j status b.img | jq -r .pid)" = "$bpid" ]
  imgumount -q mnt
  imgumount -q mb
  [ "$(imginfo -j a.img | jq -r .filesystem_errors.count)" -eq 0 ]
  assert_nothing_left
}
