#!/usr/bin/env bats
# Filesystems inside images: mkimg --fs [--from], imginfo's "filesystem",
# compact giving back the free blocks of ext4.  Judged without mounting:
# e2fsck -fn, debugfs (rdump, stat, ea_get), xfs_repair -n, btrfs check and
# btrfs restore on the raw disk read back with imgconvert.

load helpers

setup() {
  common_setup
  command -v mke2fs >/dev/null && command -v debugfs >/dev/null || skip "e2fsprogs missing"
}
teardown() { common_teardown; }

# make_tree DIR: ~2000 files in 40 directories with hard links, symlinks,
# user xattrs, a sparse file, odd modes and (as root) other owners.
make_tree() {
  [ -n "$PY" ] || skip "python3 is needed to build the test tree"
  "$PY" - "$1" "$(id -u)" <<'PYEOF'
import os, random, sys
root, uid = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
os.makedirs(root)
files = []
for d in range(40):
    dp = os.path.join(root, "d%02d" % d)
    os.mkdir(dp)
    for f in range(50):
        p = os.path.join(dp, "f%d" % f)
        with open(p, "wb") as fh:
            fh.write(rnd.randbytes(rnd.randrange(0, 20000)))
        files.append(p)
for i in range(50):                      # hard links across directories
    os.link(files[i * 37], os.path.join(root, "d%02d" % (i % 40), "hl%d" % i))
for i in range(50):                      # symlinks, one dangling
    os.symlink("../d%02d/f%d" % (i % 40, i) if i else "nowhere",
               os.path.join(root, "d%02d" % ((i + 1) % 40), "sl%d" % i))
for i in range(30):                      # user xattrs
    os.setxattr(files[i * 11], "user.k%d" % i, b"value-%d" % i)
with open(os.path.join(root, "sparse"), "wb") as fh:
    fh.truncate(64 << 20)
    fh.seek(10 << 20); fh.write(rnd.randbytes(1 << 20))
    fh.seek((64 << 20) - 5); fh.write(b"tail!")
os.chmod(files[1], 0o600)
os.chmod(files[2], 0o4755)
os.chmod(os.path.join(root, "d03"), 0o2775)
os.chmod(os.path.join(root, "d04"), 0o1777)
if uid == 0:
    os.chown(files[3], 1234, 5678)
    os.lchown(os.path.join(root, "d05"), 4321, 8765)
PYEOF
}

# listing DIR: one line per entry: path type mode uid gid size sha256/target
# (hard links listed like separate files: debugfs rdump writes them so).
listing() {
  "$PY" - "$1" <<'PYEOF'
import hashlib, os, stat, sys
root = sys.argv[1]
for dp, dns, fns in os.walk(root):
    dns[:] = [d for d in dns if not (dp == root and d == "lost+found")]
    for n in sorted(dns + fns):
        p = os.path.join(dp, n)
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            extra = "-> " + os.readlink(p)
        elif stat.S_ISREG(st.st_mode):
            extra = hashlib.sha256(open(p, "rb").read()).hexdigest()
        else:
            extra = ""
        size = st.st_size if stat.S_ISREG(st.st_mode) else 0
        # (debugfs rdump drops the suid, sgid and sticky bits: those are
        # checked with debugfs stat)
        print(os.path.relpath(p, root), "%o" % (st.st_mode & ~0o7000), st.st_uid, st.st_gid, size, extra)
PYEOF
}

# ext_tree_matches IMG SRC: the image's filesystem is clean and holds SRC.
ext_tree_matches() {
  local img=$1 src=$2
  rm -rf chk.raw out
  to_raw "$img" chk.raw
  e2fsck -fn chk.raw
  mkdir out
  debugfs -R "rdump / $PWD/out" chk.raw 2>/dev/null
  listing "$src" | sort >want.lst
  listing out | sort >got.lst
  diff want.lst got.lst
}

@test "mkimg --fs ext4 --from: the tree, hard links, xattrs and sparse files arrive; e2fsck clean" {
  make_tree src
  run_split mkimg --fs ext4 --label tree --from src t.img 256M
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [[ "$out" == *"filesystem: ext4, label \"tree\""* ]]
  # no temporary file is left beside the image
  [ "$(ls -A)" = "$(printf 'src\nt.img')" ]
  ext_tree_matches t.img src
  debugfs -R "stat /d00/f2" chk.raw 2>/dev/null | grep -q "Mode:  04755"
  debugfs -R "stat /d03" chk.raw 2>/dev/null | grep -q "Mode:  02775"
  debugfs -R "stat /d04" chk.raw 2>/dev/null | grep -q "Mode:  01777"
  # hard links: one inode, two names
  i1=$(debugfs -R "stat /d00/f0" chk.raw 2>/dev/null | sed -n 's/^Inode: \([0-9]*\).*/\1/p')
  i2=$(debugfs -R "stat /d00/hl0" chk.raw 2>/dev/null | sed -n 's/^Inode: \([0-9]*\).*/\1/p')
  [ -n "$i1" ] && [ "$i1" = "$i2" ]
  debugfs -R "stat /d00/f0" chk.raw 2>/dev/null | grep -q "Links: 2"
  # xattrs
  [ "$(debugfs -R "ea_get /d00/f11 user.k1" chk.raw 2>/dev/null)" = "value-1" ] ||
    debugfs -R "ea_get /d00/f11 user.k1" chk.raw 2>/dev/null | grep -q 'value-1'
  # the sparse file stays sparse: about 1 MiB of blocks for 64 MiB
  blocks=$(debugfs -R "stat /sparse" chk.raw 2>/dev/null | sed -n 's/.*Blockcount: \([0-9]*\).*/\1/p')
  [ -n "$blocks" ] && [ "$blocks" -lt $((4 * 2048)) ]
  # and the image is thin: about the data, not the 256 MiB
  [ "$(info t.img disk_usage)" -lt $((64 * M)) ]
}

@test "imginfo: the filesystem's type, label, uuid, size and used space" {
  "$BIN/mkimg" -q --fs ext4 --label data e.img 128M
  to_raw e.img e.raw
  uuid=$(blkid -p -o value -s UUID e.raw)
  [ -n "$uuid" ]
  run_split imginfo --json e.img
  [ "$status" -eq 0 ]
  [ "$(jget .filesystem.type)" = ext4 ]
  [ "$(jget .filesystem.label)" = data ]
  [ "$(jget .filesystem.uuid)" = "$uuid" ]
  [ "$(jget .filesystem.size)" = $((128 * M)) ]
  [ "$(jget .filesystem.clean)" = true ]
  # used agrees with the superblock's free block count (e2fsprogs' view)
  bs=$(dumpe2fs -h e.raw 2>/dev/null | sed -n 's/^Block size: *//p')
  free=$(dumpe2fs -h e.raw 2>/dev/null | sed -n 's/^Free blocks: *//p')
  [ "$(jget .filesystem.used)" = $((128 * M - free * bs)) ]
  run_split imginfo e.img
  [[ "$out" == *"filesystem: ext4, label \"data\", UUID $uuid, 128 MiB, "*" used ("*"%)"* ]]
  # an image with no filesystem
  "$BIN/mkimg" -q n.img 1G
  run_split imginfo n.img
  [[ "$out" == *"filesystem: none recognised"* ]]
  [ "$(info n.img filesystem)" = null ]
}

# del.img: ext4 with 24 files of 2 MiB; 12 of them deleted with debugfs on
# the raw disk and the raw disk brought back into an image, so the deleted
# files' data is still allocated in the image (no discard ever reached it).
make_deleted() {
  rm -rf src e.img e.raw del.img
  mkdir src
  for i in $(seq 24); do head -c $((2 * M)) /dev/urandom >src/f$i; done
  echo small >src/small
  "$BIN/mkimg" -q --fs ext4 --from src e.img 256M
  to_raw e.img e.raw
  for i in $(seq 1 2 24); do debugfs -w -R "rm /f$i" e.raw 2>/dev/null; rm src/f$i; done
  e2fsck -fn e.raw
  "$BIN/imgconvert" -q e.raw del.img
}

@test "compact gives back what deleted files held, without any discard; data intact" {
  make_deleted
  before=$(info del.img disk_usage)
  [ "$before" -gt $((48 * M)) ]
  run_split compact --json del.img
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [ "$(jget .filesystem)" = ext4 ]
  [ "$(jget .fs_trim)" = true ]
  # the 12 deleted files: 24 MiB, nearly all of it from the filesystem step
  [ "$(jget .fs_trim_bytes)" -ge $((22 * M)) ]
  [ "$(jget .fs_trim_clusters)" -ge 10 ]
  [ "$(jget '.reclaimed_bytes >= .fs_trim_bytes')" = true ]
  after=$(host_usage del.img)
  # live data (12 x 2 MiB) + at most one cluster per file + image metadata
  # + what mke2fs wrote (superblocks, bitmaps, inode table blocks, dirs)
  meta=$(info del.img metadata_size)
  [ "$after" -le $((24 * M + 13 * M + meta + 2 * M)) ] || { echo "after $after meta $meta"; false; }
  ext_tree_matches del.img src
  # the human report names the step
  make_deleted
  run_split compact del.img
  [[ "$out" == *"from the filesystem's free blocks (ext4: "*" clusters unmapped"* ]]
}

@test "compact refuses an ext4 that needs recovery, changes nothing; --no-fs-trim still compacts" {
  mkdir src && head -c $((3 * M)) /dev/urandom >src/f
  "$BIN/mkimg" -q --fs ext4 --from src e.img 64M
  to_raw e.img e.raw
  debugfs -w -R "feature needs_recovery" e.raw >/dev/null 2>&1
  "$BIN/imgconvert" -q e.raw r.img
  sum=$(sha256sum <r.img)
  run_split compact r.img
  [ "$status" -eq 1 ]
  [[ "$err" == *"needs checking"*"needs journal recovery"* ]] || { echo "$err"; false; }
  [[ "$err" == *"nothing was changed"*"--no-fs-trim"* ]]
  [ "$(sha256sum <r.img)" = "$sum" ]
  [ "$(info r.img filesystem.needs_recovery)" = true ]
  run_split compact --json --no-fs-trim r.img
  [ "$status" -eq 0 ]
  [ "$(jget .fs_trim)" = false ]
}

@test "compact on an image without a filesystem, and on xfs: says what it did not do" {
  "$BIN/mkimg" -q n.img 64M
  run_split compact --json n.img
  [ "$status" -eq 0 ]
  [ "$(jget .filesystem)" = null ]
  [ "$(jget .fs_trim)" = false ]
  command -v mkfs.xfs >/dev/null || skip "mkfs.xfs missing"
  "$BIN/mkimg" -q --fs xfs x.img 320M
  run_split compact x.img
  [ "$status" -eq 0 ]
  [[ "$out" == *"xfs: free space inside the filesystem was not given back"*"fstrim"* ]]
}

@test "mkimg --fs btrfs --from and --fs xfs --from: checked by btrfs check, btrfs restore, xfs_repair" {
  command -v mkfs.btrfs >/dev/null && command -v mkfs.xfs >/dev/null || skip "btrfs-progs or xfsprogs missing"
  mkdir -p src/a/b
  head -c 300000 /dev/urandom >src/a/one
  echo two >src/a/b/two
  ln -s ../one src/a/b/link
  run_split mkimg --fs btrfs --label bt --from src b.img 256M
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [ "$(info b.img filesystem.type)" = btrfs ]
  [ "$(info b.img filesystem.label)" = bt ]
  to_raw b.img b.raw
  btrfs check b.raw
  mkdir rest && btrfs restore -S b.raw rest >/dev/null
  diff -r src rest
  run_split mkimg --fs xfs --label xf --from src x.img 320M
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [ "$(info x.img filesystem.type)" = xfs ]
  [ "$(info x.img filesystem.size)" = $((320 * M)) ]
  to_raw x.img x.raw
  xfs_repair -n x.raw
  # what an xfs protofile cannot carry is said, not silently dropped
  ln src/a/one src/hard
  run_split mkimg --fs xfs --from src x2.img 320M
  [ "$status" -eq 0 ]
  [[ "$err" == *"2 names of hard-linked files become separate files"* ]]
  touch "src/with space"
  run_split mkimg --fs xfs --from src x3.img 320M
  [ "$status" -eq 1 ]
  [[ "$err" == *"cannot hold names with spaces"* ]]
  [ ! -e x3.img ]
}

@test "mkimg --fs: bad input is refused and leaves nothing behind" {
  run_split mkimg --fs ext5 a.img 64M
  [ "$status" -eq 2 ]
  [[ "$err" == *"unknown filesystem type 'ext5'"* ]]
  run_split mkimg --label x a.img 64M
  [ "$status" -eq 2 ]
  [[ "$err" == *"--label needs --fs or --backing"* ]]
  run_split mkimg --fs ext4 --from nosuchdir a.img 64M
  [ "$status" -eq 5 ]
  [[ "$err" == *"nosuchdir: No such file or directory"* ]]
  touch notadir
  run_split mkimg --fs ext4 --from notadir a.img 64M
  [ "$status" -eq 1 ]
  [[ "$err" == *"not a directory"* ]]
  # mkfs fails (xfs needs 300 MiB): its words are shown, nothing is left
  if command -v mkfs.xfs >/dev/null; then
    run_split mkimg --fs xfs a.img 64M
    [ "$status" -eq 1 ]
    [[ "$err" == *"mkfs.xfs failed"*"300"* ]]
  fi
  # a tree that does not fit
  mkdir big && head -c $((20 * M)) /dev/urandom >big/f
  run_split mkimg --fs ext4 --from big a.img 8M
  [ "$status" -eq 1 ]
  [[ "$err" == *"mke2fs failed"* ]]
  [ "$(ls -A)" = "$(printf 'big\nnotadir')" ]
  # an existing file is not replaced without --force, and is with it
  "$BIN/mkimg" -q keep.img 1M
  run_split mkimg --fs ext4 keep.img 64M
  [ "$status" -eq 1 ]
  [[ "$err" == *"already exists"* ]]
  [ "$(info keep.img virtual_size)" = $M ]
  "$BIN/mkimg" -q -f --fs ext4 keep.img 64M
  [ "$(info keep.img filesystem.type)" = ext4 ]
}

@test "an empty 1 TiB ext4 image stays small on the host" {
  run_split mkimg --fs ext4 big.img 1T
  [ "$status" -eq 0 ]
  usage=$(info big.img disk_usage)
  echo "# empty 1 TiB ext4: disk usage $usage bytes" >&3
  [ "$usage" -lt $((32 * M)) ]
  [ "$(info big.img filesystem.size)" = $((1024 * G)) ]
}

@test "--no-fs: growimg leaves the filesystem alone, shrinkimg refuses to cut it off (nothing changed)" {
  # (growimg and shrinkimg resizing the filesystem: tests/cli/fsresize.bats)
  "$BIN/mkimg" -q --fs ext4 e.img 64M
  run_split growimg --no-fs e.img 128M
  [ "$status" -eq 0 ]
  [[ "$out" == *"the ext4 filesystem still spans 64 MiB (--no-fs)"* ]]
  run_split growimg --no-fs --json e.img 256M
  [ "$(jget .filesystem)" = ext4 ]
  [ "$(jget .filesystem_size)" = $((64 * M)) ]
  sum=$(sha256sum <e.img)
  run_split shrinkimg --no-fs e.img 32M
  [ "$status" -eq 1 ]
  [[ "$err" == *"the ext4 filesystem in the image spans 64 MiB"*"would cut it off"* ]]
  [[ "$err" == *"nothing was changed"* ]]
  [ "$(sha256sum <e.img)" = "$sum" ]
  # down to the filesystem's own size is fine, and it stays clean
  "$BIN/shrinkimg" -q --no-fs e.img 64M
  [ "$(info e.img virtual_size)" = $((64 * M)) ]
  to_raw e.img e.raw
  e2fsck -fn e.raw
  # --discard-data is the explicit way to cut it anyway
  "$BIN/shrinkimg" -q --discard-data e.img 32M
  [ "$(info e.img virtual_size)" = $((32 * M)) ]
  command -v mkfs.xfs >/dev/null || skip "mkfs.xfs missing"
  "$BIN/mkimg" -q --fs xfs x.img 320M
  "$BIN/growimg" -q --no-fs x.img 400M
  run_split shrinkimg x.img 310M
  [ "$status" -eq 1 ]
  [[ "$err" == *"xfs filesystems cannot shrink"* ]]
  [ "$(info x.img virtual_size)" = $((400 * M)) ]
}
