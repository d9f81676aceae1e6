#!/usr/bin/env bats
# Issue 18, "full host: pause, don't fail": imgserve holds the requests
# that need new host space while the host filesystem is full and resumes
# them by itself once space appears (--on-nospace, imgserve(1)).  The
# image lives on a small loop-mounted ext4 host filesystem of this test.

load helpers

setup() {
  online_setup
  command -v mkfs.ext4 >/dev/null || skip "needs mkfs.ext4"
  # outside the test's directory: assert_nothing_left looks there for
  # what the tools left mounted or attached
  HOSTDIR=$(mktemp -d)
  HOSTFS=$HOSTDIR/host
  mkdir "$HOSTFS"
  truncate -s 64M "$HOSTDIR/host.fs"
  mkfs.ext4 -q -F -m 0 "$HOSTDIR/host.fs"
  mount -o loop "$HOSTDIR/host.fs" "$HOSTFS"
}

teardown() {
  local p
  # a writer held by the daemon cannot die before the daemon answers it:
  # the daemon goes first (online_teardown waits for the writers)
  for p in "$LIBIMG_RUNDIR"/*/pid; do
    [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
  done
  [ -z "${LOOPDEV:-}" ] || losetup -d "$LOOPDEV" 2>/dev/null || true
  online_teardown
  if [ -n "${HOSTDIR:-}" ]; then
    umount "$HOSTFS" 2>/dev/null || umount -l "$HOSTFS" 2>/dev/null || true
    rm -rf "$HOSTDIR"
  fi
}

# status KEY: the served image's status value KEY (imgctl status -j).
st() { "$BIN/imgctl" status -j "$HOSTFS/a.img" | jq -r ".status.$1"; }

# fill_host FREE_MiB: a filler file leaves about FREE_MiB free on the host.
fill_host() {
  local avail
  sync -f "$HOSTFS"
  avail=$(df -B1 --output=avail "$HOSTFS" | tail -n1)
  fallocate -l $((avail - $1 * M)) "$HOSTFS/filler"
  sync -f "$HOSTFS"
}

# wait_for CMD...: until CMD succeeds, 20 s at most.
wait_for() {
  local i
  for i in $(seq 100); do "$@" && return 0; sleep 0.2; done
  return 1
}

paused() { [ "$(st paused)" = true ]; }

@test "issue 18 #1: a full host pauses the container's writes (no EIO, no read-only ext4); freeing host space resumes them with every byte intact" {
  head -c $((24 * M)) /dev/urandom > data.bin
  mkimg -q --fs ext4 "$HOSTFS/a.img" 256M
  mkdir mnt
  imgmount -q "$HOSTFS/a.img" mnt
  [ "$(st nospace_policy)" = pause ] && [ "$(st paused)" = false ]
  fill_host 6
  # 24 MiB into a host with 6 MiB free: the writer must block, not fail
  dd if=data.bin of=mnt/f bs=1M conv=fsync status=none 2>dd.err &
  writer=$!
  BG_PIDS+=("$writer")
  wait_for paused
  [ "$(st held_requests)" -gt 0 ]
  [ "$(st pauses)" -ge 1 ]
  sleep 2
  kill -0 "$writer"                       # still writing: blocked, not failed
  [ "$(st io_errors)" = 0 ]
  [ "$(st nospace_errors)" = 0 ]
  # the container's ext4 is still read-write and recorded no error
  [[ ",$(findmnt -n -o OPTIONS "$T/mnt")," == *",rw,"* ]]
  grep -q "paused" "$(rundir)/log"
  # the paused event (imgctl events; also in the log)
  grep -q '"event":"paused","reason":"nospace","error":"ENOSPC"' "$(rundir)/log"
  # reads keep flowing while writes are held
  timeout 10 dd if="$(cat "$(rundir)/loop")" of=/dev/null bs=1M count=8 iflag=direct status=none
  # space appears: the writes complete by themselves
  t0=$(date +%s)
  rm "$HOSTFS/filler"
  sync -f "$HOSTFS"
  wait "$writer"
  echo "# resumed $(( $(date +%s) - t0 )) s after the filler went" >&3
  [ ! -s dd.err ]
  [ "$(st paused)" = false ] && [ "$(st held_requests)" = 0 ]
  [ "$(st io_errors)" = 0 ]
  grep -q "resumed after" "$(rundir)/log"
  grep -q '"event":"resumed","reason":"nospace"' "$(rundir)/log"
  [[ ",$(findmnt -n -o OPTIONS "$T/mnt")," == *",rw,"* ]]
  sync
  echo 3 > /proc/sys/vm/drop_caches
  [ "$(sha256sum < mnt/f)" = "$(sha256sum < data.bin)" ]
  imgumount -q mnt
  assert_nothing_left
  # 0, or 3 (leaked clusters only): under a ThreadSanitizer imgserve, 3 of
  # 15 runs left one free cluster holding the bytes of a write that had
  # failed short for lack of space, in an image closed clean (FORMAT.md 6
  # rule 4; an open finding of issue 18, not a loss of data: 2 fails)
  run "$BIN/imgcheck" "$HOSTFS/a.img"
  [ "$status" -eq 0 ] || [ "$status" -eq 3 ] || { echo "$output"; false; }
  [ "$status" -eq 0 ] || echo "# imgcheck: $(grep -m1 leak <<<"$output")" >&3
  imgmount -q -r "$HOSTFS/a.img" mnt
  [ "$(sha256sum < mnt/f)" = "$(sha256sum < data.bin)" ]
  imgumount -q mnt
  assert_nothing_left
}

# serve POLICY: imgserve --on-nospace=POLICY of a.img over the export file exp
serve() {
  mkimg -q "$HOSTFS/a.img" 256M
  touch exp
  imgserve -d -q --on-nospace="$1" "$HOSTFS/a.img" exp
}

@test "issue 18 #1: --on-nospace=error fails the write at once (ENOSPC), as before" {
  serve error
  [ "$(st nospace_policy)" = error ]
  fill_host 4
  head -c $((16 * M)) /dev/urandom > data.bin
  t0=$(date +%s%N)
  run timeout 20 dd if=data.bin of=exp bs=1M oflag=direct conv=notrunc status=none
  [ "$status" -ne 0 ] && [ "$status" -ne 124 ]
  [[ "$output" == *"No space left on device"* ]]
  [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 5000 ]
  [ "$(st paused)" = false ]
  [ "$(st nospace_errors)" -gt 0 ]
  "$BIN/imgctl" stop "$HOSTFS/a.img"
}

@test "issue 18 #1: --on-nospace=pause:2 holds a write, then fails it after 2 s" {
  serve pause:2
  [ "$(st nospace_policy)" = pause:2 ]
  fill_host 4
  head -c $((16 * M)) /dev/urandom > data.bin
  t0=$(date +%s%N)
  run timeout 30 dd if=data.bin of=exp bs=1M oflag=direct conv=notrunc status=none
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "# failed after $ms ms" >&3
  [ "$status" -ne 0 ] && [ "$status" -ne 124 ]
  [[ "$output" == *"No space left on device"* ]]
  [ "$ms" -ge 2000 ] && [ "$ms" -lt 10000 ]
  [ "$(st nospace_timeouts)" -gt 0 ]
  [ "$(st paused)" = false ]
  "$BIN/imgctl" stop "$HOSTFS/a.img"
}

@test "issue 18 #1: resume and on-nospace through imgctl: overwrites and reads flow while paused, held writes complete at once on resume, 'on-nospace error' fails what is held" {
  serve pause
  # through a loop device, as imgattach and imgmount use the export: its
  # direct I/O is asynchronous, so a held write does not hold the file
  LOOPDEV=$(losetup --direct-io=on --show -f exp)
  head -c $((4 * M)) /dev/urandom > old.bin
  dd if=old.bin of="$LOOPDEV" bs=1M seek=200 oflag=direct status=none
  fill_host 4
  head -c $((16 * M)) /dev/urandom > data.bin
  dd if=data.bin of="$LOOPDEV" bs=1M oflag=direct status=none 2>dd.err &
  writer=$!
  BG_PIDS+=("$writer")
  wait_for paused
  # overwrites of allocated clusters and reads keep flowing meanwhile
  head -c $((4 * M)) /dev/urandom > old.bin
  timeout 5 dd if=old.bin of="$LOOPDEV" bs=1M seek=200 oflag=direct status=none
  cmp <(timeout 5 dd if="$LOOPDEV" bs=1M skip=200 count=4 iflag=direct status=none) old.bin
  [ "$(st paused)" = true ]
  kill -0 "$writer"
  # space without the retry timer: resume retries now
  rm "$HOSTFS/filler"
  run_split imgctl resume "$HOSTFS/a.img"
  [ "$status" -eq 0 ]
  wait_for bash -c "! kill -0 $writer 2>/dev/null"
  wait "$writer"
  cmp <(dd if="$LOOPDEV" bs=1M count=16 iflag=direct status=none) data.bin
  # full again, then the policy changed at run time fails what is held
  fill_host 2
  head -c $((16 * M)) /dev/urandom > data2.bin
  dd if=data2.bin of="$LOOPDEV" bs=1M seek=32 oflag=direct status=none 2>dd.err &
  writer=$!
  BG_PIDS+=("$writer")
  wait_for paused
  run_split imgctl on-nospace "$HOSTFS/a.img" error
  [ "$status" -eq 0 ]
  ! wait "$writer"
  grep -q "error" dd.err
  [ "$(st paused)" = false ] && [ "$(st nospace_policy)" = error ]
  run_split imgctl on-nospace "$HOSTFS/a.img" sometimes
  [ "$status" -ne 0 ]
  losetup -d "$LOOPDEV"
  LOOPDEV=
  "$BIN/imgctl" stop "$HOSTFS/a.img"
}
