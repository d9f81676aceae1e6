#!/usr/bin/env bats
# Clone identity (issue 16): mkimg --backing gives the clone's filesystem
# its own UUID (and label), written in the clone only, so that clones of
# one base mount side by side (xfs without -o nouuid) and by UUID.

load helpers

setup() { online_setup; }
teardown() { online_teardown; }

fs_uuid() { imginfo -j "$1" | jq -r '.filesystem.uuid'; }
fs_label() { imginfo -j "$1" | jq -r '.filesystem.label'; }
# the loop device imgattach recorded for image $1
loop_of() {
  local d
  for d in "$LIBIMG_RUNDIR"/*/; do
    [ "$(cat "$d/image")" = "$T/$1" ] && { cat "$d/loop"; return; }
  done
  return 1
}

need() {
  local t
  for t in "$@"; do command -v "$t" >/dev/null || skip "$t is not installed"; done
}

# by_uuid UUID DEV: libblkid names DEV for UUID.  blkid -U may look at
# udev's /dev/disk/by-uuid first, which follows a just-attached loop device
# a moment later: asked again for up to 5 s.
by_uuid() {
  local i got
  for i in $(seq 50); do
    got=$(blkid -c /dev/null -U "$1" || true)
    [ "$got" = "$2" ] && return 0
    sleep 0.1
  done
  echo "blkid -U $1: '$got', want $2" >&2
  return 1
}

fsck_clean() {   # TYPE DEV
  case $1 in
    ext*) e2fsck -f -n "$2" ;;
    xfs) xfs_repair -n "$2" ;;
    btrfs) btrfs check "$2" ;;
  esac
}

# TYPE SIZE: a base with a label, two clones with the default: their UUIDs
# differ from each other and from the base's, both check clean and mount
# side by side with no option; --label, --keep-fs-uuid (with and without
# --label) do what they say; the base's bytes are unchanged.
clone_case() {
  local type=$1 size=$2 sum b u1 u2 l1 l2
  mkimg -q --fs "$type" --label base base.img "$size"
  chmod a-w base.img   # a protected base, as bases are
  sum=$(sha256sum < base.img)
  b=$(fs_uuid base.img)
  [ -n "$b" ] && [ "$b" != null ]
  mkimg -q --backing base.img c1.img
  mkimg -q --backing base.img c2.img
  u1=$(fs_uuid c1.img)
  u2=$(fs_uuid c2.img)
  echo "base $b c1 $u1 c2 $u2"
  [ "$u1" != "$b" ] && [ "$u2" != "$b" ] && [ "$u1" != "$u2" ]
  [ "$(fs_label c1.img)" = base ]
  # the new identity is in what mkimg prints
  run mkimg --backing base.img --label web3 c3.img
  [ "$status" -eq 0 ]
  [[ "$output" == *"label \"web3\", UUID $(fs_uuid c3.img)"* ]]
  [ "$(fs_label c3.img)" = web3 ]
  [ "$(fs_uuid c3.img)" != "$b" ]
  mkimg -q --backing base.img --keep-fs-uuid c4.img
  [ "$(fs_uuid c4.img)" = "$b" ]
  [ "$(fs_label c4.img)" = base ]
  mkimg -q --backing base.img --keep-fs-uuid --label web5 c5.img
  [ "$(fs_uuid c5.img)" = "$b" ]
  [ "$(fs_label c5.img)" = web5 ]
  [ "$(fs_label base.img)" = base ]
  # what the kernel side sees: blkid on the attached clones
  imgattach -q c1.img
  imgattach -q c2.img
  l1=$(loop_of c1.img)
  l2=$(loop_of c2.img)
  [ "$(blkid -p -s UUID -o value "$l1")" = "$u1" ]
  [ "$(blkid -p -s UUID -o value "$l2")" = "$u2" ]
  fsck_clean "$type" "$l1"
  fsck_clean "$type" "$l2"
  mkdir m1 m2
  # by UUID (libblkid finds the one device that has it)
  by_uuid "$u1" "$l1"
  by_uuid "$u2" "$l2"
  mount UUID="$u1" m1
  mount UUID="$u2" m2
  [ "$(findmnt -n -o SOURCE m1)" = "$l1" ]
  [ "$(findmnt -n -o SOURCE m2)" = "$l2" ]
  echo one > m1/f
  echo two > m2/f
  umount m1
  umount m2
  fsck_clean "$type" "$l1"
  imgdetach -q c1.img
  imgdetach -q c2.img
  [ "$(sha256sum < base.img)" = "$sum" ]
  assert_nothing_left
}

@test "issue 16 clone identity: ext4 clones of one base get their own UUIDs and labels; base unchanged" {
  clone_case ext4 256M
}

@test "issue 16 clone identity: xfs clones of one base mount side by side without nouuid" {
  need mkfs.xfs xfs_admin xfs_repair
  clone_case xfs 320M
}

@test "issue 16 clone identity: btrfs clones of one base get their own fsid (btrfstune -M)" {
  need mkfs.btrfs btrfstune
  clone_case btrfs 256M
}

@test "issue 16 clone identity: ext4 without metadata_csum (uninit_bg) and --fs-uuid" {
  truncate -s 128M raw
  mke2fs -q -t ext4 -O ^metadata_csum,uninit_bg raw
  imgconvert -q raw base.img
  sum=$(sha256sum < base.img)
  mkimg -q --backing base.img --fs-uuid 0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9 c.img
  [ "$(fs_uuid c.img)" = 0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9 ]
  imgattach -q c.img
  # group descriptor checksums (crc16 over the UUID) were recomputed
  e2fsck -f -n "$(loop_of c.img)"
  imgdetach -q c.img
  [ "$(sha256sum < base.img)" = "$sum" ]
  run mkimg --backing base.img --fs-uuid not-a-uuid d.img
  [ "$status" -ne 0 ]
  [ ! -e d.img ]
}

@test "issue 16 clone identity: a base without a filesystem: the clone is made, the step skipped with a note" {
  mkimg -q base.img 64M
  run mkimg --backing base.img c.img
  [ "$status" -eq 0 ]
  [[ "$output" == *"filesystem: none found"* ]]
  [ -f c.img ]
  # asked for explicitly: refused, nothing made
  run mkimg --backing base.img --label x d.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"need an ext2/3/4, xfs or btrfs filesystem"* ]]
  [ ! -e d.img ]
  [ -z "$(ls -A | grep '^\.')" ]
}

@test "issue 16 clone identity: a failed UUID step leaves no clone, nothing attached, the replaced file and base as they were" {
  need mkfs.xfs
  mkimg -q --fs xfs base.img 320M
  sum=$(sha256sum < base.img)
  mkdir fakebin
  printf '#!/bin/sh\necho "xfs_db: simulated failure" >&2\nexit 1\n' > fakebin/xfs_db
  chmod +x fakebin/xfs_db
  run env PATH="$T/fakebin:$PATH" mkimg --backing base.img c.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"giving the clone's xfs filesystem a new UUID failed; no clone was made"* ]]
  [[ "$output" == *"simulated failure"* ]]
  [ ! -e c.img ]
  [ -z "$(ls -A | grep '^\.')" ]
  # --force over an existing file: that file stays as it was
  echo keep > c.img
  run env PATH="$T/fakebin:$PATH" mkimg -f --backing base.img c.img
  [ "$status" -eq 1 ]
  [ "$(cat c.img)" = keep ]
  [ -z "$(ls -A | grep '^\.')" ]
  # a label too long for xfs (12 bytes), or with white space (xfs_db
  # splits its commands there), is refused before anything is done
  run mkimg --backing base.img --label thirteen-char d.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"at most 12 bytes"* ]]
  run mkimg --backing base.img --label "a b" d.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"no white space"* ]]
  [ ! -e d.img ]
  # quotes and shell characters are only bytes of the label (xfs_admin
  # would pass them through eval)
  run mkimg --backing base.img --label "a'\$(touch" e.img
  [ "$status" -eq 0 ]
  [ "$(fs_label e.img)" = "a'\$(touch" ]
  [ "$(sha256sum < base.img)" = "$sum" ]
  assert_nothing_left
}

@test "issue 16 clone identity: SIGTERM during the xfs step: everything attached is undone, then no clone is left" {
  need mkfs.xfs
  mkimg -q --fs xfs base.img 320M
  mkdir slowbin
  printf '#!/bin/sh\nsleep 2\nexit 0\n' > slowbin/xfs_db
  chmod +x slowbin/xfs_db
  PATH="$T/slowbin:$PATH" mkimg --backing base.img c.img &
  pid=$!
  BG_PIDS+=("$pid")
  for i in $(seq 100); do
    ls "$LIBIMG_RUNDIR"/*/loop >/dev/null 2>&1 && break
    sleep 0.1
  done
  ls "$LIBIMG_RUNDIR"/*/loop
  kill -TERM "$pid"
  st=0
  wait "$pid" || st=$?
  [ "$st" -eq 143 ]
  [ ! -e c.img ]
  [ -z "$(ls -A | grep '^\.')" ]
  assert_nothing_left
}

@test "issue 16 clone identity: a base taken from a mounted filesystem (ext4 journal to replay, xfs dirty log): replayed in the clone" {
  need mkfs.xfs
  # ext4: a copy of the raw disk while mounted, after sync: crash-consistent
  truncate -s 128M e.raw
  mke2fs -q -t ext4 e.raw
  mkdir m
  mount -o loop e.raw m
  echo data > m/f
  sync
  cp --sparse=always e.raw esnap.raw
  umount m
  imgconvert -q esnap.raw ebase.img
  [ "$(imginfo -j ebase.img | jq .filesystem.needs_recovery)" = true ]
  sum=$(sha256sum < ebase.img)
  mkimg -q --backing ebase.img ec.img
  [ "$(fs_uuid ec.img)" != "$(fs_uuid ebase.img)" ]
  [ "$(imginfo -j ec.img | jq .filesystem.needs_recovery)" = false ]
  imgattach -q ec.img
  e2fsck -f -n "$(loop_of ec.img)"
  mount "$(loop_of ec.img)" m
  [ "$(cat m/f)" = data ]
  umount m
  imgdetach -q ec.img
  [ "$(sha256sum < ebase.img)" = "$sum" ]
  # xfs: a snapshot of the mounted image (frozen: the log stays dirty)
  mkimg -q --fs xfs x.img 320M
  imgmount -q x.img m
  echo data > m/f
  imgsnap create --name xsnap.img x.img >/dev/null
  imgumount -q x.img
  sum=$(sha256sum < xsnap.img)
  mkimg -q --backing xsnap.img xc.img
  [ "$(fs_uuid xc.img)" != "$(fs_uuid xsnap.img)" ]
  imgattach -q xc.img
  xfs_repair -n "$(loop_of xc.img)"
  mount "$(loop_of xc.img)" m
  [ "$(cat m/f)" = data ]
  umount m
  imgdetach -q xc.img
  [ "$(sha256sum < xsnap.img)" = "$sum" ]
  assert_nothing_left
}

@test "issue 16 clone identity: a btrfs base copied from a mounted filesystem after fsync (a log tree): replayed in the clone" {
  need mkfs.btrfs btrfstune
  truncate -s 256M b.raw
  mkfs.btrfs -q b.raw >/dev/null
  mkdir m
  mount -o loop b.raw m
  head -c 40960 /dev/urandom > data
  dd if=data of=m/f bs=4k conv=fsync status=none
  cp --sparse=always b.raw snap.raw
  umount m
  [ "$(btrfs inspect-internal dump-super snap.raw | awk '$1 == "log_root" { print $2 }')" != 0 ]
  imgconvert -q snap.raw base.img
  sum=$(sha256sum < base.img)
  mkimg -q --backing base.img c.img
  [ "$(fs_uuid c.img)" != "$(fs_uuid base.img)" ]
  imgattach -q c.img
  btrfs check "$(loop_of c.img)"
  mount "$(loop_of c.img)" m
  cmp m/f data
  umount m
  imgdetach -q c.img
  [ "$(sha256sum < base.img)" = "$sum" ]
  assert_nothing_left
}

@test "red: an xfs clone of a cleanly unmounted base gets its UUID without the kernel mounting the base's filesystem" {
  need mkfs.xfs xfs_db
  mkimg -q --fs xfs base.img 320M
  imgconvert -q -F libimg -O raw base.img base.raw
  sum=$(sha256sum < base.img)
  # xfs_db sees the attached clone: byte for byte the base's disk unless
  # something (a mount and unmount: the log's unmount record, the
  # superblock's counters) wrote it first
  mkdir wrapbin
  printf '#!/bin/sh\nfor a; do dev=$a; done\nif cmp -s "$dev" "%s/base.raw"; then echo same; else echo changed; fi >> "%s/seen"\nexec %s "$@"\n' \
    "$T" "$T" "$(command -v xfs_db)" > wrapbin/xfs_db
  chmod +x wrapbin/xfs_db
  run env PATH="$T/wrapbin:$PATH" mkimg --backing base.img c.img
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  cat seen
  [ "$(head -n 1 seen)" = same ]
  [ "$(wc -l < seen)" -eq 1 ]
  [ "$(fs_uuid c.img)" != "$(fs_uuid base.img)" ]
  [ "$(sha256sum < base.img)" = "$sum" ]
  assert_nothing_left
}
