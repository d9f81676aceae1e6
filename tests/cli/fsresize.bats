#!/usr/bin/env bats
# growimg and shrinkimg resize the filesystem in an image offline: ext2/3/4
# with e2fsck and resize2fs on a private attach of the image, xfs and btrfs
# on a private mount; shrinkimg --min.  Judged on the raw disk read back with
# imgconvert: e2fsck -fn, xfs_repair -n, btrfs check; data compared by
# sha256 (debugfs rdump, btrfs restore; no mount needed to read).  The
# resizing needs root, /dev/fuse and loop devices: those tests skip without.

load helpers

setup() {
  common_setup
  command -v resize2fs >/dev/null && command -v debugfs >/dev/null || skip "e2fsprogs missing"
  # attaches of this test are recorded here, not in /run/libimg
  export LIBIMG_RUNDIR=$BATS_TEST_TMPDIR/run
}

teardown() {
  local d
  # whatever a failing test left attached
  for d in "$LIBIMG_RUNDIR"/*/; do
    [ -f "$d/image" ] && "$BIN/imgumount" -q "$(cat "$d/image")" 2>/dev/null || true
  done
  common_teardown
}

need_attach() {
  [ "$(id -u)" -eq 0 ] || skip "resizing a filesystem offline needs root"
  [ -c /dev/fuse ] || skip "needs /dev/fuse"
  [ -c /dev/loop-control ] || skip "needs loop devices"
}

# Nothing attached, mounted or recorded is left by the tools.
nothing_left() {
  [ -z "$(ls -A "$LIBIMG_RUNDIR" 2>/dev/null)" ] || { ls -lR "$LIBIMG_RUNDIR"; return 1; }
  ! grep -q "$BATS_TEST_TMPDIR" /proc/mounts || { grep "$BATS_TEST_TMPDIR" /proc/mounts; return 1; }
  ! grep -q " /tmp/libimg-fs-" /proc/mounts
  ! losetup -a | grep -q "$BATS_TEST_TMPDIR"
}

# make_src DIR: a few files, one of 40 MiB, their sums in DIR.sums
make_src() {
  mkdir -p "$1/sub"
  head -c $((40 * M)) /dev/urandom >"$1/big"
  head -c 123457 /dev/urandom >"$1/sub/odd"
  echo hello >"$1/sub/small"
  (cd "$1" && sha256sum big sub/odd sub/small) >"$1.sums"
}

# ext_ok IMG SRC: e2fsck -fn finds nothing, and the files of SRC are intact.
ext_ok() {
  rm -rf chk.raw out
  to_raw "$1" chk.raw
  e2fsck -fn chk.raw
  mkdir out
  debugfs -R "rdump / $PWD/out" chk.raw 2>/dev/null
  (cd out && sha256sum -c --quiet "../$2.sums")
}

# btrfs_ok IMG SRC: btrfs check finds nothing, and the files are intact.
btrfs_ok() {
  rm -rf chk.raw out
  to_raw "$1" chk.raw
  btrfs check chk.raw
  mkdir out
  btrfs restore -S chk.raw out >/dev/null
  (cd out && sha256sum -c --quiet "../$2.sums")
}

@test "growimg grows ext4 offline with the image; --no-fs grows only the image and a rerun completes" {
  need_attach
  make_src src
  "$BIN/mkimg" -q --fs ext4 --from src e.img 256M
  run_split growimg e.img 1G
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [[ "$out" == *"virtual size 256 MiB -> 1 GiB"* ]]
  [[ "$out" == *"the ext4 filesystem grew to 1 GiB"* ]]
  [ "$(info e.img filesystem.size)" = $G ]
  ext_ok e.img src
  "$BIN/imgcheck" e.img
  nothing_left
  # --no-fs: the old behaviour, the filesystem keeps its size
  run_split growimg --no-fs --json e.img 1536M
  [ "$status" -eq 0 ]
  [ "$(jget .filesystem_size)" = $G ]
  [ "$(jget .filesystem_grown)" = false ]
  # the state a failed filesystem step leaves: a rerun grows the filesystem
  run_split growimg e.img 1536M
  [ "$status" -eq 0 ]
  [[ "$out" == *"the ext4 filesystem grew to 1.5 GiB"* ]]
  [[ "$out" != *"virtual size"* ]]
  [ "$(info e.img filesystem.size)" = $((1536 * M)) ]
  ext_ok e.img src
  nothing_left
}

@test "growimg refuses an ext4 that needs checking, changing nothing; --no-fs still grows" {
  need_attach
  "$BIN/mkimg" -q --fs ext4 e.img 64M
  to_raw e.img e.raw
  debugfs -w -R "feature needs_recovery" e.raw >/dev/null 2>&1
  "$BIN/imgconvert" -q e.raw r.img
  sum=$(sha256sum <r.img)
  run_split growimg r.img 128M
  [ "$status" -eq 1 ]
  [[ "$err" == *"r.img: the filesystem in the image needs checking"*"needs journal recovery"* ]] || { echo "$err"; false; }
  [[ "$err" == *"nothing was changed"*"--no-fs"* ]]
  [ "$(sha256sum <r.img)" = "$sum" ]
  "$BIN/growimg" -q --no-fs r.img 128M
  [ "$(info r.img virtual_size)" = $((128 * M)) ]
  nothing_left
}

@test "growimg grows xfs offline through a private mount; xfs_repair -n clean" {
  need_attach
  command -v mkfs.xfs >/dev/null || skip "xfsprogs missing"
  make_src src
  "$BIN/mkimg" -q --fs xfs --from src x.img 320M
  run_split growimg --json x.img 1G
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [ "$(jget .filesystem)" = xfs ]
  [ "$(jget .filesystem_size)" = $G ]
  [ "$(jget .filesystem_grown)" = true ]
  to_raw x.img x.raw
  xfs_repair -n x.raw
  # the data, read through a read-only loop mount of the raw copy
  mkdir mnt
  mount -o ro,loop,norecovery x.raw mnt
  (cd mnt && sha256sum -c --quiet ../src.sums) || { umount mnt; false; }
  umount mnt
  nothing_left
}

@test "btrfs offline: growimg, shrinkimg SIZE and --min; btrfs check clean, data intact" {
  need_attach
  command -v mkfs.btrfs >/dev/null || skip "btrfs-progs missing"
  make_src src
  "$BIN/mkimg" -q --fs btrfs --from src b.img 512M
  run_split growimg b.img 1G
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [[ "$out" == *"the btrfs filesystem grew to 1 GiB"* ]]
  [ "$(info b.img filesystem.size)" = $G ]
  btrfs_ok b.img src
  run_split shrinkimg b.img 700M
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [[ "$out" == *"the btrfs filesystem shrank from 1 GiB to 700 MiB"* ]]
  [ "$(info b.img virtual_size)" = $((700 * M)) ]
  [ "$(info b.img filesystem.size)" = $((700 * M)) ]
  btrfs_ok b.img src
  "$BIN/imgcheck" b.img
  run_split shrinkimg --json b.img --min
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  min=$(jget .filesystem_min_size)
  size=$(jget .new_size)
  margin=$(( min / 20 > 16 * M ? min / 20 : 16 * M ))
  echo "# btrfs --min: minimum $min, new size $size, file $(file_size b.img)" >&3
  [ "$size" -ge "$min" ] && [ "$size" -le $((min + margin + M)) ]
  [ "$(info b.img filesystem.size)" = "$size" ]
  btrfs_ok b.img src
  "$BIN/imgcheck" b.img
  # below the minimum: refused, nothing changed
  sum=$(sha256sum <b.img)
  run_split shrinkimg b.img 64M
  [ "$status" -eq 1 ]
  [[ "$err" == *"b.img: 64 MiB"*"is below the smallest the btrfs filesystem can shrink to"*"nothing was changed"* ]] || { echo "$err"; false; }
  [ "$(sha256sum <b.img)" = "$sum" ]
  nothing_left
}

@test "shrinkimg shrinks ext4 offline to a SIZE: e2fsck clean, data intact, host file truncated" {
  need_attach
  make_src src
  "$BIN/mkimg" -q --fs ext4 --from src e.img 1G
  run_split shrinkimg e.img 300M
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [[ "$out" == *"the ext4 filesystem shrank from 1 GiB to 300 MiB"* ]]
  [[ "$out" == *"virtual size 1 GiB -> 300 MiB"* ]]
  [ "$(info e.img virtual_size)" = $((300 * M)) ]
  [ "$(info e.img filesystem.size)" = $((300 * M)) ]
  [ "$(file_size e.img)" -le $((300 * M)) ]
  ext_ok e.img src
  "$BIN/imgcheck" e.img
  nothing_left
}

@test "shrinkimg --min: ext4 to its minimum plus the margin; the file holds little more than the used blocks" {
  need_attach
  make_src src
  # 200 MiB of files that are deleted later, without any discard reaching
  # the image (debugfs on a raw copy)
  for i in 1 2 3 4 5; do head -c $((40 * M)) /dev/urandom >src/gone$i; done
  "$BIN/mkimg" -q --fs ext4 --from src e.img 2G
  to_raw e.img e.raw
  for i in 1 2 3 4 5; do debugfs -w -R "rm /gone$i" e.raw 2>/dev/null; rm src/gone$i; done
  rm e.img && "$BIN/imgconvert" -q e.raw e.img && rm e.raw
  [ "$(info e.img allocated_bytes)" -gt $((200 * M)) ]
  run_split shrinkimg --json e.img --min
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [ "$(jget .filesystem)" = ext4 ]
  min=$(jget .filesystem_min_size)
  size=$(jget .new_size)
  margin=$(( min / 20 > 16 * M ? min / 20 : 16 * M ))
  [ "$size" -ge "$min" ] && [ "$size" -le $((min + margin + M)) ]
  [ "$(info e.img virtual_size)" = "$size" ]
  used=$(info e.img filesystem.used)
  meta=$(info e.img metadata_size)
  fsz=$(file_size e.img)
  echo "# ext4 --min: minimum $min, new size $size, fs used $used, file $fsz, disk $(host_usage e.img)" >&3
  # the file: the filesystem's used blocks (data + its metadata and
  # journal), the image's metadata, at most one partly used cluster per
  # file and block group; never more than the new virtual size plus metadata
  [ "$fsz" -le $((used + meta + 8 * M)) ]
  [ "$fsz" -le $((size + meta)) ]
  [ "$(jget .fs_trim_bytes)" -gt 0 ]
  ext_ok e.img src
  "$BIN/imgcheck" e.img
  # a second --min changes (almost) nothing and stays clean
  "$BIN/shrinkimg" -q e.img --min
  [ "$(info e.img virtual_size)" -le "$size" ]
  ext_ok e.img src
  nothing_left
}

@test "shrinkimg refuses, changing nothing: below the used space, an fs that needs fsck, unknown fs, xfs, --no-fs" {
  need_attach
  make_src src
  "$BIN/mkimg" -q --fs ext4 --from src e.img 512M
  sum=$(sha256sum <e.img)
  # below what the filesystem can shrink to
  run_split shrinkimg e.img 20M
  [ "$status" -eq 1 ]
  [[ "$err" == *"e.img: 20 MiB"*"is below the smallest the ext4 filesystem can shrink to"*"used); nothing was changed"* ]] || { echo "$err"; false; }
  [ "$(sha256sum <e.img)" = "$sum" ]
  # --no-fs: the image alone would cut the filesystem off
  run_split shrinkimg --no-fs e.img 256M
  [ "$status" -eq 1 ]
  [[ "$err" == *"the ext4 filesystem in the image spans 512 MiB"*"would cut it off"* ]]
  [[ "$err" == *"nothing was changed; without --no-fs shrinkimg shrinks the filesystem first"* ]]
  [ "$(sha256sum <e.img)" = "$sum" ]
  # marked as needing journal recovery
  to_raw e.img e.raw
  debugfs -w -R "feature needs_recovery" e.raw >/dev/null 2>&1
  "$BIN/imgconvert" -q e.raw r.img
  sum=$(sha256sum <r.img)
  run_split shrinkimg r.img --min
  [ "$status" -eq 1 ]
  [[ "$err" == *"r.img: the filesystem in the image needs checking"*"needs journal recovery"* ]] || { echo "$err"; false; }
  [[ "$err" == *"nothing was changed"* ]]
  [ "$(sha256sum <r.img)" = "$sum" ]
  # clean by its superblock, damaged in fact (a used block marked free):
  # e2fsck -f -n on the read-only attach finds it
  to_raw e.img d.raw
  blk=$(debugfs -R "bmap /big 0" d.raw 2>/dev/null)
  debugfs -w -R "freeb $blk 16" d.raw >/dev/null 2>&1
  "$BIN/imgconvert" -q d.raw d.img
  sum=$(sha256sum <d.img)
  run_split shrinkimg d.img 256M
  [ "$status" -eq 1 ]
  [[ "$err" == *"d.img: e2fsck -f -n finds the ext4 filesystem in the image damaged"* ]] || { echo "$err"; false; }
  [[ "$err" == *"d.img: nothing was changed"* ]]
  [ "$(sha256sum <d.img)" = "$sum" ]
  # no filesystem at all
  "$BIN/mkimg" -q n.img 64M
  sum=$(sha256sum <n.img)
  run_split shrinkimg n.img --min
  [ "$status" -eq 1 ]
  [[ "$err" == *"n.img: --min needs a filesystem"*"none is recognised in the image; nothing was changed"* ]]
  [ "$(sha256sum <n.img)" = "$sum" ]
  # a filesystem shrinkimg does not know how to shrink (swap: libblkid
  # knows its type and size)
  if command -v mkswap >/dev/null; then
    truncate -s 64M s.raw && mkswap s.raw >/dev/null
    "$BIN/imgconvert" -q s.raw s.img
    sum=$(sha256sum <s.img)
    run_split shrinkimg s.img --min
    [ "$status" -eq 1 ]
    [[ "$err" == *"s.img: "*"swap"*"nothing was changed"* ]] || { echo "$err"; false; }
    [ "$(sha256sum <s.img)" = "$sum" ]
  fi
  # xfs never shrinks
  if command -v mkfs.xfs >/dev/null; then
    "$BIN/mkimg" -q --fs xfs x.img 400M
    sum=$(sha256sum <x.img)
    for arg in --min 350M; do
      run_split shrinkimg x.img $arg
      [ "$status" -eq 1 ]
      [[ "$err" == *"x.img: the xfs filesystem in the image spans 400 MiB"*"xfs filesystems cannot shrink; nothing was changed"* ]] || { echo "$err"; false; }
      [ "$(sha256sum <x.img)" = "$sum" ]
    done
  fi
  # bad usage
  run_split shrinkimg e.img 256M --min
  [ "$status" -eq 2 ]; [[ "$err" == *"give SIZE or --min, not both"* ]]
  run_split shrinkimg --no-fs e.img --min
  [ "$status" -eq 2 ]; [[ "$err" == *"--min shrinks the filesystem"* ]]
  nothing_left
}

@test "without root, growimg and shrinkimg refuse to touch a filesystem, changing nothing; --no-fs works" {
  [ "$(id -u)" -eq 0 ] || skip "runs as root and drops to nobody"
  command -v setpriv >/dev/null || skip "setpriv missing"
  public_dir
  cd "$PUBDIR"
  "$BIN/mkimg" -q --fs ext4 e.img 64M
  chmod 666 e.img
  sum=$(sha256sum <e.img)
  run_unprivileged growimg e.img 128M
  [ "$status" -eq 1 ]
  [[ "$output" == *"e.img: growing the ext4 filesystem in the image needs root"*"nothing was changed; --no-fs grows only the image"* ]] || { echo "$output"; false; }
  run_unprivileged shrinkimg e.img 32M
  [ "$status" -eq 1 ]
  [[ "$output" == *"e.img: shrinking the ext4 filesystem in the image needs root"*"nothing was changed"* ]] || { echo "$output"; false; }
  [ "$(sha256sum <e.img)" = "$sum" ]
  run_unprivileged growimg --no-fs e.img 128M
  [ "$status" -eq 0 ]
  [ "$(info e.img virtual_size)" = $((128 * M)) ]
  [ "$(info e.img filesystem.size)" = $((64 * M)) ]
}
