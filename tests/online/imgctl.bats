#!/usr/bin/env bats
# imgctl: the list of served, attached and mounted images, status and
# counters, commands sent to the daemon without an external client, stop,
# and the exit statuses of issue 16 (6 not served, 5 missing, 2 usage,
# 75 busy or in use).

load helpers

setup() {
  online_setup
  [ -x "$BIN/imgctl" ] || { echo "missing $BIN/imgctl: run make first" >&2; return 1; }
}
teardown() {
  # a daemon a test stopped (SIGSTOP) must go on, or nothing can stop it
  for p in ${STOPPED:-}; do kill -CONT "$p" 2>/dev/null || true; done
  online_teardown
  if [ -n "${SMALL:-}" ]; then umount -l "$SMALL" 2>/dev/null || true; fi
}

# A mounted ext4 image (a.img on mnt), an attached one (b.img) and one
# only served (c.img on the export file exp).
three_images() {
  mkimg -q --fs ext4 a.img 64M
  mkimg -q b.img 64M
  mkimg -q c.img 32M
  mkdir mnt
  imgmount -q a.img mnt
  imgattach -q b.img
  touch exp
  imgserve -q --daemon c.img exp
}

# valid: $output is a document of tools/schema/imgctl.json (tests/run.sh
# checks every logged document too; this names the failing one here).
valid() {
  printf '%s\n' "$output" | python3 -c '
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator(schema).validate(json.load(sys.stdin))' "$ROOT/tools/schema/imgctl.json"
}

# jget FILTER: jq on $output (stdout, after run_split).
jget() { printf '%s\n' "$output" | jq -r "$1"; }

# jimg IMAGE FILTER: FILTER on the list entry of IMAGE in $output.
jimg() { printf '%s\n' "$output" | jq -r --arg i "$T/$1" ".images[] | select(.filename == \$i) | $2"; }

@test "issue 16 #5: imgctl list -j shows every served, attached and mounted image with its pid, loop device, mount point, state and counters" {
  three_images
  run_split imgctl list -j
  [ "$status" -eq 0 ]
  valid
  [ -z "$err" ]
  [ "$(jget .schema)" = 1 ]
  [ "$(printf '%s\n' "$output" | jq -r 'keys_unsorted[0]')" = schema ]
  [ "$(jget '.images | length')" = 3 ]
  for i in a b c; do
    pid=$(jimg $i.img .pid)
    [ "$pid" -gt 1 ]
    [ "$(cat /proc/$pid/comm)" = imgserve ]
    [ "$(jimg $i.img .running)" = true ]
    [ "$(jimg $i.img .state)" = serving ]
    [ "$(jimg $i.img .status.pid)" = "$pid" ]
    [ "$(jimg $i.img .status.image)" = "$T/$i.img" ]
    [ "$(jimg $i.img '.status.writes | type')" = number ]
    [ "$(jimg $i.img '.status.reads | type')" = number ]
  done
  [ "$(jimg a.img .mountpoint)" = "$T/mnt" ]
  loop=$(jimg a.img .device)
  [[ "$loop" == /dev/loop* ]]
  grep -q "^$loop $T/mnt ext4 " /proc/mounts
  loop=$(jimg b.img .device)
  [[ "$loop" == /dev/loop* ]]
  [ "$(losetup -n -O BACK-FILE "$loop")" = "$(jimg b.img .export)" ]
  [ "$(jimg b.img .mountpoint)" = null ]
  [ "$(jimg c.img .device)" = null ]
  [ "$(jimg c.img .export)" = "$T/exp" ]
  [ "$(jimg c.img .status.virtual_size)" = $((32 * M)) ]
  cpid=$(jimg c.img .pid)
  # the text table: a header and one aligned line per image, sorted by path
  run_split imgctl list
  [ "$status" -eq 0 ]
  [ "$(printf '%s\n' "$out" | wc -l)" = 4 ]
  [[ "$(printf '%s\n' "$out" | head -n1)" == "IMAGE "*" PID "*" STATE "*" LOOP "*" MOUNTPOINT "*" EXPORT "*" READS "*" WRITES "*" ERRORS" ]]
  [ "$(printf '%s\n' "$out" | sed -n 2p | awk '{ print $1, $3 }')" = "$T/a.img serving" ]
  [ "$(printf '%s\n' "$out" | sed -n 4p | awk '{ print $1, $2, $4, $5 }')" = "$T/c.img $cpid - -" ]
  # the columns line up: STATE starts at the same place on every line
  [ "$(printf '%s\n' "$out" | awk '{ print index($0, NR == 1 ? " STATE" : " serving") }' | sort -u | wc -l)" = 1 ]
  imgumount -q mnt
  imgdetach -q b.img
  "$BIN/imgctl" -q stop c.img
  assert_nothing_left
}

@test "issue 16 #5: imgctl status IMAGE|MOUNTPOINT|DEVICE: the counters grow with writes" {
  three_images
  run_split imgctl status -j a.img
  [ "$status" -eq 0 ]
  valid
  [ "$(jget .schema)" = 1 ]
  [ "$(jget .state)" = serving ]
  w0=$(jget .status.writes)
  b0=$(jget .status.bytes_written)
  loop=$(jget .device)
  head -c $((4 * M)) /dev/urandom > mnt/f
  sync
  run_split imgctl status -j mnt
  [ "$status" -eq 0 ]
  valid
  [ "$(jget .filename)" = "$T/a.img" ]
  [ "$(jget .status.writes)" -gt "$w0" ]
  [ "$(jget .status.bytes_written)" -ge $((b0 + 4 * M)) ]
  run_split imgctl status -j "$loop"
  [ "$status" -eq 0 ]
  valid
  [ "$(jget .filename)" = "$T/a.img" ]
  run_split imgctl status b.img
  [ "$status" -eq 0 ]
  [[ "$out" == *"state:"*"serving"* ]]
  [[ "$out" == *"writes:"* ]]
  imgumount -q mnt
  imgdetach -q b.img
  "$BIN/imgctl" -q stop c.img
  assert_nothing_left
}

@test "issue 16 #5: imgctl send passes a command to the daemon and prints its answer; named commands too" {
  three_images
  pid=$(cat "$LIBIMG_RUNDIR"/*/pid | head -n1)
  run_split imgctl send -j a.img status
  [ "$status" -eq 0 ]
  valid
  [ "$(jget .command)" = status ]
  [ "$(jget .reply.image)" = "$T/a.img" ]
  [ "$(jget .reply.open)" = true ]
  run_split imgctl compact -j mnt
  [ "$status" -eq 0 ]
  valid
  [ "$(jget .command)" = compact ]
  [ "$(jget '.reply.file_size_after | type')" = number ]
  run_split imgctl send b.img compact no-zero-detect
  [ "$status" -eq 0 ]
  [[ "$out" == *"clusters_moved:"* ]]
  # grow: the loop device follows
  loop=$("$BIN/imgctl" status -j b.img | jq -r .device)
  run_split imgctl grow -j b.img 96M
  [ "$status" -eq 0 ]
  valid
  [ "$(jget .reply.old_size)" = $((64 * M)) ]
  [ "$(jget .reply.new_size)" = $((96 * M)) ]
  [ "$(blockdev --getsize64 "$loop")" = $((96 * M)) ]
  # shrink of an attached image is refused: nothing is sent
  run_split imgctl shrink b.img 32M
  [ "$status" -eq 1 ]
  [[ "$err" == *"shrinkimg"* ]]
  [ "$(blockdev --getsize64 "$loop")" = $((96 * M)) ]
  [ "$("$BIN/imgctl" status -j b.img | jq -r .status.virtual_size)" = $((96 * M)) ]
  # served only: the export's size follows; a size smaller than now is the
  # daemon's refusal (1), nothing changes
  run_split imgctl -q grow c.img 48M
  [ "$status" -eq 0 ] && [ -z "$out" ]
  [ "$(stat -c %s exp)" = $((48 * M)) ]
  run_split imgctl grow c.img 40M
  [ "$status" -eq 1 ]
  [[ "$err" == *"smaller than the current size"* ]]
  [ "$(stat -c %s exp)" = $((48 * M)) ]
  # the daemon refuses an unknown command: its message, status 1
  run_split imgctl send c.img no-such-command
  [ "$status" -eq 1 ]
  [[ "$err" == *"unknown command"* ]]
  run_split imgctl send -j c.img no-such-command
  [ "$status" -eq 1 ]
  [ "$(jget .error.status)" = 1 ]
  [ "$(jget .error.errno_name)" = EINVAL ]
  imgumount -q mnt
  imgdetach -q b.img
  "$BIN/imgctl" -q stop c.img
  assert_nothing_left
}

@test "issue 16 #5: imgctl stop stops a served image (clean, gone from the list); refused (75) while a loop device or mount uses it" {
  three_images
  run_split imgctl list -j
  pid=$(jimg c.img .pid)
  run_split imgctl stop c.img
  [ "$status" -eq 0 ]
  [ "$out" = "$T/c.img: stopped (imgserve pid $pid)" ]
  ! kill -0 "$pid" 2>/dev/null
  ! grep -q " $T/exp " /proc/mounts
  [ "$("$BIN/imginfo" --json c.img | jq -r .dirty)" = false ]
  run_split imgctl list -j
  [ "$(jget '.images | length')" = 2 ]
  [ -z "$(jimg c.img .pid)" ]
  # not served any more: 6, harmless in a cleanup
  run_split imgctl stop c.img
  [ "$status" -eq 6 ]
  run_split imgctl status -j c.img
  [ "$status" -eq 6 ]
  [ "$(jget .error.status)" = 6 ]
  [ "$(jget .error.file)" = c.img ]
  # in use: refused, nothing sent, the daemon still serves
  for i in a b; do
    run_split imgctl list -j
    pid=$(jimg $i.img .pid)
    run_split imgctl stop -j $i.img
    [ "$status" -eq 75 ]
    [ "$(jget .error.status)" = 75 ]
    [[ "$(jget .error.message)" == *"imgumount"* ]]
    [ "$("$BIN/imgctl" status -j $i.img | jq -r .state)" = serving ]
    [ "$(cat /proc/$pid/comm)" = imgserve ]
  done
  run_split imgctl send a.img stop
  [ "$status" -eq 75 ]
  [ "$(stat -c %i mnt)" != "$(stat -c %i .)" ] && mountpoint -q mnt
  imgumount -q mnt
  imgdetach -q b.img
  run_split imgctl list -j
  [ "$status" -eq 0 ]
  valid
  [ "$(jget '.images | length')" = 0 ]
  run_split imgctl list
  [ "$status" -eq 0 ]
  [ -z "$out" ]
  assert_nothing_left
}

@test "issue 16 #5: imgctl: a daemon that does not answer is busy (75, state busy), a dead one stale (send: 6)" {
  mkimg -q a.img 64M
  mkimg -q b.img 64M
  imgattach -q a.img
  imgattach -q b.img
  run_split imgctl list -j
  pa=$(jimg a.img .pid)
  pb=$(jimg b.img .pid)
  STOPPED=$pa
  kill -STOP "$pa"
  run_split imgctl status --wait=0.3 a.img
  [ "$status" -eq 75 ]
  [[ "$err" == *"--wait"* ]]
  run_split imgctl list -j -w0.3
  [ "$status" -eq 0 ]
  valid
  [ "$(jimg a.img .state)" = busy ]
  [ "$(jimg a.img .status)" = null ]
  [ "$(jimg b.img .state)" = serving ]
  kill -CONT "$pa"
  STOPPED=
  run_split imgctl status -j a.img
  [ "$status" -eq 0 ]
  valid
  [ "$(jget .state)" = serving ]
  # a daemon killed: its leftovers are listed as stale, commands get 6
  kill -9 "$pb"
  while kill -0 "$pb" 2>/dev/null; do sleep 0.05; done
  run_split imgctl list -j
  [ "$status" -eq 0 ]
  valid
  [ "$(jimg b.img .state)" = stale ]
  [ "$(jimg b.img .running)" = false ]
  [ "$(jimg b.img .pid)" = "$pb" ]
  [[ "$(jimg b.img .device)" == /dev/loop* ]]
  run_split imgctl send b.img status
  [ "$status" -eq 6 ]
  [[ "$err" == *"imgumount"* ]]
  run_split imgctl status -j b.img
  [ "$status" -eq 0 ]
  valid
  [ "$(jget .state)" = stale ]
  imgumount -q b.img
  imgdetach -q a.img
  assert_nothing_left
}

@test "issue 16 #5: imgctl on a read-only daemon: status answers, every command that changes the image is refused (1), the file unchanged" {
  mkimg -q r.img 64M
  touch exp
  imgserve -q --daemon --read-only r.img exp
  sum=$(sha256sum < r.img)
  run_split imgctl status -j r.img
  [ "$status" -eq 0 ]
  valid
  [ "$(jget .status.read_only)" = true ]
  for cmd in "grow 128M" "shrink 32M" compact snapshot "merge"; do
    run_split imgctl send r.img $cmd
    [ "$status" -eq 1 ] || { echo "$cmd: $status"; false; }
    [[ "$err" == *"served read-only"* ]] || { echo "$cmd: $err"; false; }
  done
  [ "$(sha256sum < r.img)" = "$sum" ]
  [ ! -e r.img.snap1 ]
  run_split imgctl stop r.img
  [ "$status" -eq 0 ]
  assert_nothing_left
}

@test "issue 16: a full host shows in imgctl: the daemon counts the requests that failed (io_errors, nospace_errors, last_io_error)" {
  SMALL=$T/small
  mkdir "$SMALL"
  mount -t tmpfs -o size=24M tmpfs "$SMALL"
  mkimg -q "$SMALL/a.img" 64M
  imgattach -q "$SMALL/a.img"
  # the old behaviour (issue 18: the default holds the writes instead)
  "$BIN/imgctl" on-nospace "$SMALL/a.img" error >/dev/null
  run_split imgctl status -j "$SMALL/a.img"
  [ "$status" -eq 0 ]
  valid
  [ "$(jget .status.io_errors)" = 0 ] && [ "$(jget .status.nospace_errors)" = 0 ]
  [ "$(jget .status.last_io_error)" = null ]
  dev=$(jget .device)
  # 48 MiB of data into an image on a 24 MiB host filesystem
  ! dd if=/dev/urandom of="$dev" bs=1M count=48 oflag=direct status=none 2>/dev/null
  run_split imgctl status -j "$SMALL/a.img"
  [ "$status" -eq 0 ]
  valid
  [ "$(jget .status.nospace_errors)" -gt 0 ]
  [ "$(jget .status.io_errors)" -ge "$(jget .status.nospace_errors)" ]
  [ "$(jget .status.last_io_error)" = ENOSPC ]
  run_split imgctl list
  [ "$status" -eq 0 ]
  line=$(printf '%s\n' "$out" | grep -F "$SMALL/a.img")
  [ "$(awk '{print $NF}' <<<"$line")" -gt 0 ]
  imgdetach -q "$SMALL/a.img"
  umount "$SMALL"
  SMALL=
}
