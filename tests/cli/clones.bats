#!/usr/bin/env bats
# Clone identity (issue 16) without root: mkimg --backing gives an ext2/3/4
# clone a new UUID through the library; xfs and btrfs need root (their own
# tools on the attached clone), so an unprivileged clone of an xfs base is
# refused unless --keep-fs-uuid, and leaves nothing.  Usage errors.
# (With root: tests/online/clones.bats.)

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

fs_uuid() { "$BIN/imginfo" -j "$1" | jq -r '.filesystem.uuid'; }

@test "issue 16 clone identity: an unprivileged user's ext4 clone gets a new UUID; the base is unchanged" {
  public_dir
  cd "$PUBDIR"
  "$BIN/mkimg" -q --fs ext4 base.img 64M
  chmod a-w base.img
  sum=$(sha256sum < base.img)
  chown -R 65534:65534 "$PUBDIR"
  run_unprivileged mkimg --backing base.img c.img
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [ "$(fs_uuid c.img)" != "$(fs_uuid base.img)" ]
  [[ "$output" == *"UUID $(fs_uuid c.img)"* ]]
  run_unprivileged mkimg --backing base.img --label tiny c2.img
  [ "$status" -eq 0 ]
  [ "$("$BIN/imginfo" -j c2.img | jq -r .filesystem.label)" = tiny ]
  [ "$(sha256sum < base.img)" = "$sum" ]
}

@test "issue 16 clone identity: an unprivileged clone of an xfs base is refused unless --keep-fs-uuid; nothing is left" {
  command -v mkfs.xfs >/dev/null || skip "mkfs.xfs is not installed"
  [ "$(id -u)" -eq 0 ] || skip "needs root to drop it"
  public_dir
  cd "$PUBDIR"
  "$BIN/mkimg" -q --fs xfs base.img 320M
  chown -R 65534:65534 "$PUBDIR"
  run_unprivileged mkimg --backing base.img c.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"giving the clone's xfs filesystem a new UUID needs root"* ]]
  [[ "$output" == *"no clone was made"* ]]
  [ ! -e c.img ]
  [ -z "$(ls -A | grep '^\.')" ]
  run_unprivileged mkimg --backing base.img --keep-fs-uuid c.img
  [ "$status" -eq 0 ]
  [[ "$output" == *"(the base's UUID)"* ]]
  [ "$(fs_uuid c.img)" = "$(fs_uuid base.img)" ]
}

@test "issue 16 clone identity: usage errors of --fs-uuid, --keep-fs-uuid and --label" {
  "$BIN/mkimg" -q --fs ext4 base.img 64M
  run "$BIN/mkimg" --fs-uuid 0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9 x.img 64M
  [ "$status" -ne 0 ]
  [[ "$output" == *"need --backing"* ]]
  run "$BIN/mkimg" --keep-fs-uuid x.img 64M
  [ "$status" -ne 0 ]
  run "$BIN/mkimg" --backing base.img --keep-fs-uuid --fs-uuid 0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9 x.img
  [ "$status" -ne 0 ]
  [[ "$output" == *"cannot be combined"* ]]
  run "$BIN/mkimg" --backing base.img --fs-uuid 0f1e2d3c-4b5a-4978-8695 x.img
  [ "$status" -ne 0 ]
  [[ "$output" == *"invalid --fs-uuid"* ]]
  run "$BIN/mkimg" --backing base.img --label seventeen-bytes!! x.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"at most 16 bytes"* ]]
  [ ! -e x.img ]
  [ -z "$(ls -A | grep '^\.')" ]
}

# forge_ext_groups RAW GROUPS: an ext4 superblock (no metadata_csum, which
# libblkid and libext2fs would check) that claims GROUPS groups of 8 blocks
# of 4 KiB, consistent enough for libext2fs to read GROUPS group
# descriptors (32 bytes each) from the disk.
forge_ext_groups() {
  "$PY" - "$1" "$2" <<'PYEOF'
import struct, sys
groups = int(sys.argv[2])
with open(sys.argv[1], "r+b") as f:
    f.seek(1024)
    sb = bytearray(f.read(1024))
    struct.pack_into("<I", sb, 0, groups * 16)   # s_inodes_count
    struct.pack_into("<I", sb, 4, groups * 8)    # s_blocks_count_lo
    struct.pack_into("<I", sb, 32, 8)            # s_blocks_per_group
    struct.pack_into("<I", sb, 36, 8)            # s_clusters_per_group
    struct.pack_into("<I", sb, 40, 16)           # s_inodes_per_group
    f.seek(1024)
    f.write(sb)
PYEOF
}

# peak_rss_kb TOOL ARGS...: runs the tool, sets $status, prints its peak
# resident size in KiB (to fd 3).
peak_rss_kb() {
  "$PY" - "$BIN/$1" "${@:2}" <<'PYEOF'
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=open("rss.err", "w"))
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode)
PYEOF
}

@test "red: mkimg --backing and imginfo do not read the group descriptors of a forged ext4 superblock bigger than the disk" {
  [ -n "$PY" ] || skip "python3 is needed to forge a superblock"
  truncate -s 64M raw
  mkfs.ext4 -q -b 4096 -O ^metadata_csum,^64bit,^resize_inode -L evil raw
  truncate -s 300M raw
  # 4 Mi groups: 128 MiB of descriptors (and gigabytes with a bigger
  # thin disk), within the 300 MiB disk; the filesystem claims 128 GiB
  forge_ext_groups raw $((1 << 22))
  "$BIN/imgconvert" -q -F raw -O libimg raw base.img
  sum=$(sha256sum < base.img)
  read -r rss st < <(peak_rss_kb mkimg --backing base.img c.img)
  cat rss.err
  [ "$st" -eq 1 ]
  [ "$rss" -lt 65536 ] || { echo "mkimg peaked at $rss KiB"; false; }
  grep -q "c.img: opening the ext2/3/4 filesystem: its superblock claims a filesystem bigger than the virtual disk" rss.err
  [ ! -e c.img ]
  [ -z "$(ls -A | grep -v '^\(raw\|base.img\|rss.err\)$')" ]
  read -r rss st < <(peak_rss_kb imginfo base.img)
  [ "$st" -eq 0 ]
  [ "$rss" -lt 65536 ] || { echo "imginfo peaked at $rss KiB"; false; }
  [ "$(sha256sum < base.img)" = "$sum" ]
}

@test "red: mkimg -f --backing of a base whose ext4 filesystem is bigger than its disk is refused, naming the cause; the old file stays" {
  truncate -s 64M raw
  mkfs.ext4 -q -L big raw
  truncate -s 16M raw
  "$BIN/imgconvert" -q -F raw -O libimg raw base.img
  "$BIN/mkimg" -q c.img 1M
  old=$(sha256sum < c.img)
  sum=$(sha256sum < base.img)
  run_tool mkimg -f --backing base.img c.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"c.img: opening the ext2/3/4 filesystem: its superblock claims a filesystem bigger than the virtual disk"* ]]
  [ "$(sha256sum < c.img)" = "$old" ]
  [ "$(sha256sum < base.img)" = "$sum" ]
  [ -z "$(ls -A | grep -v '^\(raw\|base.img\|c.img\)$')" ]
  # --keep-fs-uuid makes the clone as it is (nothing of it is written)
  run_tool mkimg -f --keep-fs-uuid --backing base.img c.img
  [ "$status" -eq 0 ]
}
