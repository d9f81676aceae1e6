#!/usr/bin/env bats
# Online operations on a mounted image: grow, compact while fio verifies,
# shrink (btrfs online, ext4 balloon), and a daemon killed mid-write.

load helpers

setup() { online_setup; }
teardown() { online_teardown; }

fs_bytes() { df -B1 --output=size "$1" | tail -n1 | tr -d ' '; }

@test "growimg online: xfs and btrfs grow while mounted, df shows it without a remount" {
  for fs in xfs btrfs; do
    mkimg --fs $fs $fs.img 1G >/dev/null
    mkdir -p m$fs
    imgmount -q $fs.img m$fs
    echo data > m$fs/file
    dev=$(cat "$(rundir)/loop")
    before=$(fs_bytes m$fs)
    run_split growimg $fs.img 3G
    [ "$status" -eq 0 ]
    [[ "$out" == *"virtual size 1 GiB -> 3 GiB"*"(online)"* ]]
    [[ "$out" == *"the $fs filesystem on $T/m$fs grew"* ]]
    [ "$(blockdev --getsize64 "$dev")" -eq $((3 * G)) ]
    [ "$(stat -c %s "$(cat "$(rundir)/export")")" -eq $((3 * G)) ]
    after=$(fs_bytes m$fs)
    [ "$after" -gt $((before + G + G / 2)) ]
    [ "$(cat m$fs/file)" = data ]
    # relative sizes, and a smaller size refused
    run_split growimg $fs.img 2G
    [ "$status" -eq 1 ]; [[ "$err" == *"smaller than the current size"* ]]
    imgumount -q m$fs
    "$BIN/imgcheck" $fs.img
    [ "$("$BIN/imginfo" --json $fs.img | jq -r .virtual_size)" -eq $((3 * G)) ]
  done
  assert_nothing_left
}

@test "growimg online: ext4 grows when the process may resize (CAP_SYS_RESOURCE), else says why (partial: 7)" {
  mkimg --fs ext4 a.img 1G >/dev/null
  mkdir mnt
  imgmount -q a.img mnt
  dev=$(cat "$(rundir)/loop")
  before=$(fs_bytes mnt)
  run_split growimg a.img +1G
  [ "$(blockdev --getsize64 "$dev")" -eq $((2 * G)) ]
  if capsh --has-p=cap_sys_resource 2>/dev/null ||
     (( (0x$(awk '/^CapEff/ {print $2}' /proc/self/status) >> 24) & 1 )); then
    [ "$status" -eq 0 ]
    [ "$(fs_bytes mnt)" -gt $((before + G / 2)) ]
  else
    [ "$status" -eq 7 ]
    [[ "$err" == *"online resizing needs CAP_SYS_RESOURCE"* ]]
  fi
  imgumount -q mnt
  "$BIN/imgcheck" a.img
  assert_nothing_left
}

@test "compact online while fio --verify writes and reads: no verify error, the host file shrinks" {
  command -v fio >/dev/null || skip "fio is not installed"
  mkimg --fs ext4 a.img 1G >/dev/null
  mkdir mnt
  imgmount -q a.img mnt
  head -c $((200 * M)) /dev/urandom > mnt/big
  head -c $((40 * M)) /dev/urandom > mnt/tail
  (cd mnt && sha256sum tail) > sums
  sync
  rm mnt/big
  sync
  fstrim mnt
  size_before=$(file_size a.img)
  fio --name=verify --filename=mnt/fio.dat --size=96M --rw=randwrite --bs=4k \
      --ioengine=libaio --iodepth=8 --direct=1 --verify=crc32c --verify_fatal=1 \
      --do_verify=1 --output=fio.out >/dev/null 2>&1 &
  fio_pid=$!
  BG_PIDS+=("$fio_pid")
  sleep 1
  n=0
  while kill -0 "$fio_pid" 2>/dev/null && [ $n -lt 20 ]; do
    run_split compact a.img
    [ "$status" -eq 0 ] || { echo "$err"; false; }
    n=$((n + 1))
  done
  [ $n -ge 1 ]
  wait "$fio_pid"
  ! grep -qi "verify.*bad\|crc32c.*mismatch" fio.out
  grep -q "err= 0" fio.out
  run_split compact --json a.img
  [ "$status" -eq 0 ]
  [ "$(jq -r .online <<<"$out")" = true ]
  size_after=$(file_size a.img)
  echo "host file: $size_before -> $size_after" >&3
  [ "$size_after" -lt $((size_before - 64 * M)) ]
  (cd mnt && sha256sum -c --quiet ../sums)
  imgumount -q mnt
  "$BIN/imgcheck" a.img
  imgmount -q a.img mnt
  (cd mnt && sha256sum -c --quiet ../sums)
  imgumount -q mnt
  assert_nothing_left
}

@test "shrinkimg online: btrfs shrinks the filesystem, then the image" {
  mkimg --fs btrfs b.img 1G >/dev/null
  mkdir mnt
  imgmount -q b.img mnt
  head -c $((30 * M)) /dev/urandom > mnt/data
  (cd mnt && sha256sum data) > sums
  dev=$(cat "$(rundir)/loop")
  run_split shrinkimg b.img 600M
  [ "$status" -eq 0 ]
  [[ "$out" == *"virtual size 1 GiB -> 600 MiB"*"(online)"* ]]
  [ "$(blockdev --getsize64 "$dev")" -eq $((600 * M)) ]
  [ "$(fs_bytes mnt)" -le $((600 * M)) ]
  (cd mnt && sha256sum -c --quiet ../sums)
  imgumount -q mnt
  "$BIN/imgcheck" b.img
  [ "$("$BIN/imginfo" --json b.img | jq -r .virtual_size)" -eq $((600 * M)) ]
  imgmount -q b.img mnt
  (cd mnt && sha256sum -c --quiet ../sums)
  imgumount -q mnt
  assert_nothing_left
}

@test "shrinkimg online: ext4 inflates a balloon that gives host space back; the next offline shrinkimg completes" {
  mkimg --fs ext4 a.img 1G >/dev/null
  mkdir mnt
  imgmount -q -o nodiscard a.img mnt
  head -c $((300 * M)) /dev/urandom > mnt/old
  head -c $((20 * M)) /dev/urandom > mnt/keep
  (cd mnt && sha256sum keep) > sums
  sync
  rm mnt/old
  sync
  before=$(host_usage a.img)
  run_split shrinkimg a.img 512M
  [ "$status" -eq 0 ]
  [[ "$out" == *"ext4 cannot shrink while mounted: $T/mnt/.libimg-balloon now reserves"* ]]
  [[ "$out" == *"run 'imgumount $T/mnt', then 'shrinkimg a.img 536870912'"* ]]
  [ -f mnt/.libimg-balloon ]
  [ "$(stat -c %s mnt/.libimg-balloon)" -eq $((512 * M)) ]
  # the balloon's blocks were discarded: no more host space than before
  # (the freed 300 MiB not trimmed yet lie partly under it)
  after=$(host_usage a.img)
  echo "host usage: $before -> $after" >&3
  [ "$after" -le "$before" ]
  # the filesystem cannot use the reserved space
  [ "$(df -B1 --output=avail mnt | tail -n1)" -lt $((512 * M)) ]
  [ "$("$BIN/imginfo" --json a.img | jq -r .virtual_size)" -eq $G ]
  imgumount -q mnt
  run_split shrinkimg a.img 512M
  [ "$status" -eq 0 ]
  [[ "$out" == *"removed the balloon an online shrink left"* ]]
  [[ "$out" == *"the ext4 filesystem shrank from 1 GiB to 512 MiB"* ]]
  [ "$("$BIN/imginfo" --json a.img | jq -r .virtual_size)" -eq $((512 * M)) ]
  "$BIN/imgcheck" a.img
  imgmount -q a.img mnt
  [ ! -e mnt/.libimg-balloon ]
  (cd mnt && sha256sum -c --quiet ../sums)
  imgumount -q mnt
  "$BIN/imgconvert" -q -O raw a.img a.raw
  e2fsck -fn a.raw
  assert_nothing_left
}

@test "online use, then offline: grown online, shrinkimg --min offline; e2fsck clean, data intact" {
  mkimg --fs ext4 a.img 512M >/dev/null
  mkdir mnt
  imgmount -q a.img mnt
  head -c $((60 * M)) /dev/urandom > mnt/keep
  head -c $((100 * M)) /dev/urandom > mnt/gone
  (cd mnt && sha256sum keep) > sums
  sync
  rm mnt/gone
  # online: the image grows with its device (the filesystem too when the
  # process may resize a mounted ext4)
  run_split growimg a.img 1G
  [ "$(blockdev --getsize64 "$(cat "$(rundir)/loop")")" -eq $G ]
  imgumount -q mnt
  # offline: e2fsck -f, resize2fs to the minimum plus the margin, the
  # image follows; a filesystem the online grow could not grow grows now
  "$BIN/growimg" -q a.img 1G
  [ "$("$BIN/imginfo" --json a.img | jq -r .filesystem.size)" -eq $G ]
  run_split shrinkimg --json a.img --min
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  size=$(jq -r .new_size <<<"$out")
  [ "$size" -lt $((200 * M)) ]
  [ "$("$BIN/imginfo" --json a.img | jq -r .virtual_size)" -eq "$size" ]
  "$BIN/imgcheck" a.img
  "$BIN/imgconvert" -q -O raw a.img a.raw
  e2fsck -fn a.raw
  rm a.raw
  imgmount -q a.img mnt
  (cd mnt && sha256sum -c --quiet ../sums)
  imgumount -q mnt
  assert_nothing_left
}

@test "shrinkimg online: xfs is refused with nothing changed" {
  mkimg --fs xfs x.img 1G >/dev/null
  mkdir mnt
  imgmount -q x.img mnt
  run_split shrinkimg x.img 600M
  [ "$status" -eq 1 ]
  [[ "$err" == *"cannot shrink (xfs never shrinks); nothing was changed"* ]]
  [ "$(blockdev --getsize64 "$(cat "$(rundir)/loop")")" -eq $G ]
  imgumount -q mnt
  assert_nothing_left
}

@test "SIGKILL of the daemon during writes: imgumount cleans up, imgcheck --repair leaves a clean image, fsynced data intact" {
  mkimg --fs ext4 a.img 512M >/dev/null
  mkdir mnt
  imgmount -q a.img mnt
  head -c $((20 * M)) /dev/urandom > mnt/keep
  sync mnt/keep
  sync
  (cd mnt && sha256sum keep) > sums
  ( while :; do head -c $((4 * M)) /dev/urandom > mnt/junk.$RANDOM 2>/dev/null || break; done ) &
  BG_PIDS+=("$!")
  sleep 1
  kill -9 "$(daemon_pid)"
  sleep 0.5
  kill -9 "${BG_PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  run_split imginfo a.img
  [[ "$out" == *"no longer running (run imgumount)"* ]]
  # a new mount is refused until the leftovers are cleaned up
  mkdir mnt2
  run_split imgmount a.img mnt2
  [ "$status" -eq 1 ]; [[ "$err" == *"left over from a daemon that is gone"*"run 'imgumount a.img'"* ]]
  # the killed writer's last write may still hold the filesystem a moment:
  # "busy" changes nothing and a script retries it
  for i in 1 2 3 4 5; do
    run_split imgumount mnt
    [ "$status" -eq 0 ] && break
    [[ "$err" == *"busy"* ]] || break
    sleep 1
  done
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  assert_nothing_left
  run "$BIN/imgcheck" --repair a.img
  [ "$status" -eq 0 ] || [ "$status" -eq 3 ] || { echo "$output"; false; }
  "$BIN/imgcheck" a.img
  imgmount -q a.img mnt
  (cd mnt && sha256sum -c --quiet ../sums)
  imgumount -q mnt
  assert_nothing_left
}
