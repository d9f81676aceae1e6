#!/usr/bin/env bats
# imgmount/imgumount: a filesystem in an image, mounted through the export
# and a loop device; discard; refusals; nothing left behind.

load helpers

setup() { online_setup; }
teardown() {
  online_teardown
  # the public mount point of the issue 15 #3 test (empty once unmounted)
  if [ -n "${PUB:-}" ]; then rmdir "$PUB/mnt" "$PUB" 2>/dev/null || true; fi
}

# write_files DIR N SIZE_MiB: N files of random data, checksums in sums.
write_files() {
  local i
  for i in $(seq "$2"); do
    head -c $(($3 * M)) /dev/urandom > "$1/f$i"
  done
  (cd "$1" && sha256sum f*) > sums
}

@test "imgmount ext4: files survive; delete + sync + fstrim gives host space back; umount leaves a clean image; remount: checksums match" {
  mkimg --fs ext4 a.img 1G >/dev/null
  mkdir mnt
  run_split imgmount -o nodiscard a.img mnt
  [ "$status" -eq 0 ]
  [[ "$out" == *"a.img: ext4 mounted on $T/mnt (/dev/loop"* ]]
  grep -q " $T/mnt ext4 " /proc/mounts
  write_files mnt 8 10
  sync
  before=$(host_usage a.img)
  [ "$before" -ge $((80 * M)) ]
  rm mnt/f1 mnt/f2 mnt/f3 mnt/f4
  grep -v ' f[1234]$' sums > sums.kept
  sync   # ext4 hands freed blocks to fstrim once its journal commits
  fstrim mnt
  after=$(host_usage a.img)
  # 4 files of 10 MiB: at least 40 MiB less one cluster (1 MiB) per file
  [ $((before - after)) -ge $((36 * M)) ]
  (cd mnt && sha256sum -c --quiet ../sums.kept)
  run_split imgumount mnt
  [ "$status" -eq 0 ]
  assert_nothing_left
  "$BIN/imgcheck" a.img
  [ "$("$BIN/imginfo" --json a.img | jq -r .dirty)" = false ]
  imgmount -q a.img mnt
  (cd mnt && sha256sum -c --quiet ../sums.kept)
  imgumount -q a.img
  assert_nothing_left
}

@test "imgmount: discard is on by default, deleting files gives host space back without fstrim" {
  mkimg --fs ext4 a.img 512M >/dev/null
  mkdir mnt
  imgmount -q a.img mnt
  grep " $T/mnt " /proc/mounts | grep -q discard
  write_files mnt 4 10
  sync
  before=$(host_usage a.img)
  rm mnt/f1 mnt/f2
  sync
  for i in $(seq 50); do
    [ $((before - $(host_usage a.img))) -ge $((18 * M)) ] && break
    sleep 0.1
  done
  [ $((before - $(host_usage a.img))) -ge $((18 * M)) ]
  imgumount -q mnt
  assert_nothing_left
}

@test "imgmount xfs and btrfs" {
  for fs in xfs btrfs; do
    mkimg --fs $fs $fs.img 1G >/dev/null
    mkdir -p m$fs
    run_split imgmount $fs.img m$fs
    [ "$status" -eq 0 ]
    grep -q " $T/m$fs $fs " /proc/mounts
    write_files m$fs 2 5
    imgumount -q m$fs
    "$BIN/imgcheck" $fs.img
    imgmount -q $fs.img m$fs
    (cd m$fs && sha256sum -c --quiet ../sums)
    imgumount -q $fs.img
  done
  assert_nothing_left
}

@test "imgmount: a second mount of the same image is refused, naming the holder; imginfo reports it in use" {
  mkimg --fs ext4 a.img 256M >/dev/null
  mkdir mnt mnt2
  imgmount -q a.img mnt
  pid=$(daemon_pid)
  dev=$(cat "$(rundir)/loop")
  run_split imgmount a.img mnt2
  [ "$status" -eq 75 ]
  [[ "$err" == *"a.img: in use by imgserve (pid $pid), loop device $dev, mounted on $T/mnt"* ]]
  ! grep -q " $T/mnt2 " /proc/mounts
  run_split imgattach a.img
  [ "$status" -eq 75 ]
  [[ "$err" == *"in use by imgserve (pid $pid)"* ]]
  run_split imginfo --json a.img
  [ "$status" -eq 0 ]
  [ "$(jq -r .in_use.mountpoint <<<"$out")" = "$T/mnt" ]
  [ "$(jq -r .in_use.running <<<"$out")" = true ]
  [ "$(jq -r .filesystem.type <<<"$out")" = ext4 ]
  run_split imgcheck a.img
  [ "$status" -ne 0 ]
  [[ "$err" == *"locked"*"$pid"* ]]
  run_split imgdetach a.img
  [ "$status" -eq 1 ]
  [[ "$err" == *"mounted on $T/mnt; use imgumount"* ]]
  imgumount -q mnt
  assert_nothing_left
}

@test "imgmount: bad input gets a clear error and leaves nothing behind" {
  mkimg --fs ext4 a.img 256M >/dev/null
  mkimg b.img 64M >/dev/null           # no filesystem
  head -c 4M /dev/urandom > notimg
  mkdir mnt
  run_split imgmount notimg mnt
  [ "$status" -eq 3 ]; [[ "$err" == *"notimg: not a libimg image"* ]]
  assert_nothing_left
  run_split imgmount a.img missing
  [ "$status" -eq 5 ]; [[ "$err" == *"missing: No such file or directory"* ]]
  run_split imgmount a.img notimg
  [ "$status" -eq 1 ]; [[ "$err" == *"notimg: not a directory"* ]]
  run_split imgmount nothere.img mnt
  [ "$status" -eq 5 ]; [[ "$err" == *"nothere.img: No such file or directory"* ]]
  run_split imgmount b.img mnt
  [ "$status" -eq 1 ]; [[ "$err" == *"b.img: no filesystem recognised"* ]]
  assert_nothing_left
  "$BIN/imgcheck" b.img
  [ "$("$BIN/imginfo" --json b.img | jq -r .dirty)" = false ]
  # a mount point already in use by another image
  imgmount -q a.img mnt
  cp b.img c.img
  run_split imgmount c.img mnt
  [ "$status" -eq 1 ]; [[ "$err" == *"mnt: already the mount point of $T/a.img"* ]]
  run_split imgumount c.img
  [ "$status" -eq 6 ]; [[ "$err" == *"c.img: not mounted or attached"* ]]
  run_split imgumount "$T"
  [ "$status" -eq 6 ]; [[ "$err" == *"not mounted by imgmount"* ]]
  imgumount -q mnt
  assert_nothing_left
}

# mount_opts MOUNTPOINT: the per-mount options of MOUNTPOINT (mountinfo's
# sixth field, "rw,nosuid,nodev,relatime").
mount_opts() { awk -v mp="$1" '$5 == mp { print $6 }' /proc/self/mountinfo; }

@test "issue 15 #3: imgmount mounts nosuid,nodev; --allow-suid-dev does not; -o suid/dev needs it" {
  command -v setpriv >/dev/null || skip "setpriv is needed to run as nobody"
  mkimg --fs ext4 a.img 64M >/dev/null
  # a mount point an unprivileged user can reach (the test directory is private)
  PUB=$(mktemp -d /tmp/libimg-mount.XXXXXX)
  pub=$PUB
  chmod 755 "$pub"
  mkdir "$pub/mnt"
  imgmount -q a.img "$pub/mnt"
  opts=$(mount_opts "$pub/mnt")
  [[ ",$opts," == *,nosuid,* && ",$opts," == *,nodev,* ]]
  # a setuid-root program and a device node put in the image by its author
  cp "$(command -v id)" "$pub/mnt/id"
  chmod 4755 "$pub/mnt/id"
  mknod "$pub/mnt/null" c 1 3
  [ "$(setpriv --reuid=65534 --regid=65534 --clear-groups -- "$pub/mnt/id" -u)" = 65534 ]
  ! (echo x > "$pub/mnt/null") 2>/dev/null
  imgumount -q "$pub/mnt"

  # asked for by name: both work (the image is trusted)
  imgmount -q --allow-suid-dev a.img "$pub/mnt"
  opts=$(mount_opts "$pub/mnt")
  [ -n "$opts" ]
  [[ ",$opts," != *,nosuid,* && ",$opts," != *,nodev,* ]]
  [ "$(setpriv --reuid=65534 --regid=65534 --clear-groups -- "$pub/mnt/id" -u)" = 0 ]
  echo x > "$pub/mnt/null"
  imgumount -q "$pub/mnt"

  # -o suid or -o dev alone is refused before anything starts
  run_split imgmount -o suid a.img "$pub/mnt"
  [ "$status" -eq 2 ]
  [[ $err == *"--allow-suid-dev"* ]]
  run_split imgmount -o discard,dev a.img "$pub/mnt"
  [ "$status" -eq 2 ]
  assert_nothing_left
}
