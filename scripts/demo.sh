#!/usr/bin/env bash
# The main job, end to end, on small images.  Part 1, the image: thin
# provisioning, discard, grow, shrink, compaction, check, and a round trip
# to raw.  Part 2, a filesystem in an image: mkimg --fs ext4 --from a
# directory, mount, write, delete and fstrim, grow online, compact, unmount,
# shrinkimg --min, imgcheck and e2fsck.  Prints the host sizes (and the
# filesystem's) at every step.  As root with /dev/fuse and loop devices it
# runs everything; otherwise the offline steps, and says what it skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
dir=$(mktemp -d /var/tmp/libimg-demo.XXXXXX)
export LIBIMG_RUNDIR=$dir/run
cleanup() {
  [ -d "$dir/mnt" ] && mountpoint -q "$dir/mnt" && "$BIN/imgumount" -q "$dir/mnt"
  rm -rf "$dir"
}
trap cleanup EXIT
img=$dir/disk.img

sizes() { # label
  local j; j=$("$BIN/imginfo" --json "$img")
  printf '  %-44s virtual %5d MiB | allocated %4d MiB | file %4d MiB | on disk %4d MiB\n' "$1" \
    $(( $(jq .virtual_size <<<"$j") >> 20 )) $(( $(jq .allocated_bytes <<<"$j") >> 20 )) \
    $(( $(jq .file_size <<<"$j") >> 20 )) $(( $(jq .disk_usage <<<"$j") >> 20 ))
}
step() { printf '\n== %s\n' "$*"; }

step "A raw disk with 64 MiB of data, holes and a zero run (256 MiB)"
truncate -s 256M "$dir/source.raw"
dd if=/dev/urandom of="$dir/source.raw" bs=1M count=32 conv=notrunc status=none
dd if=/dev/urandom of="$dir/source.raw" bs=1M count=32 seek=200 conv=notrunc status=none
dd if=/dev/zero of="$dir/source.raw" bs=1M count=16 seek=100 conv=notrunc status=none
echo "  source.raw: $(du -m --apparent-size "$dir/source.raw" | cut -f1) MiB apparent, $(du -m "$dir/source.raw" | cut -f1) MiB on disk"

step "imgconvert: raw -> libimg (holes and zero runs are skipped)"
"$BIN/imgconvert" "$dir/source.raw" "$img"
sizes "after convert"
"$BIN/imgmap" "$img"

step "An empty 1 TiB image costs almost nothing"
"$BIN/mkimg" "$dir/big.img" 1T
echo "  big.img: $(du -k "$dir/big.img" | cut -f1) KiB on disk for 1 TiB virtual"

step "growimg: +768 MiB (the BAT has room: only the header changes)"
"$BIN/growimg" "$img" +768M
sizes "after grow"

step "New data at the end, the first 32 MiB zeroed (edited through a raw copy)"
dd if=/dev/urandom of="$dir/chunk" bs=1M count=32 status=none
"$BIN/imgconvert" -F libimg -O raw "$img" "$dir/tmp.raw"
dd if="$dir/chunk" of="$dir/tmp.raw" bs=1M seek=$((1024 - 32)) conv=notrunc status=none
dd if=/dev/zero of="$dir/tmp.raw" bs=1M count=32 conv=notrunc status=none
rm -f "$img"
"$BIN/imgconvert" "$dir/tmp.raw" "$img"
sizes "rewritten with new data at the end"

step "shrinkimg refuses to drop data ..."
if "$BIN/shrinkimg" "$img" 512M; then echo "  (unexpected)"; exit 1; fi
step "... and drops it when asked (--discard-data)"
"$BIN/shrinkimg" --discard-data "$img" 512M
sizes "after shrink to 512 MiB"

step "compact: zero clusters freed, live clusters packed, file truncated"
"$BIN/compact" "$img"
sizes "after compact"

step "imgcheck"
"$BIN/imgcheck" "$img"

step "Round trip: libimg -> raw equals the source's first 512 MiB"
"$BIN/imgconvert" -F libimg -O raw "$img" "$dir/back.raw"
head -c 512M "$dir/tmp.raw" > "$dir/expect.raw"
cmp "$dir/back.raw" "$dir/expect.raw" && echo "  identical"

printf '\n######## Part 2: a filesystem in an image\n'
fimg=$dir/fs.img
mnt=$dir/mnt
mib() { echo $(( $1 >> 20 )); }
# fs_sizes LABEL [MOUNTPOINT]: host sizes (imginfo --json file_size,
# disk_usage) and the filesystem's size and used space (df when mounted,
# else imginfo's filesystem object, read from the image by libext2fs)
fs_sizes() {
  local j size used
  j=$("$BIN/imginfo" --json "$fimg")
  if [ -n "${2:-}" ]; then
    read -r size used < <(df -B1 --output=size,used "$2" | tail -n1)
  else
    size=$(jq .filesystem.size <<<"$j"); used=$(jq .filesystem.used <<<"$j")
  fi
  printf '  %-40s host: file %4d MiB, on disk %4d MiB | ext4: %5d MiB, %4d MiB used\n' "$1" \
    "$(mib "$(jq .file_size <<<"$j")")" "$(mib "$(jq .disk_usage <<<"$j")")" \
    "$(mib "$size")" "$(mib "$used")"
}
echo "(host: the image file's size and its blocks on disk; ext4: size and used"
echo " space, from df while mounted, else from the superblock, journal included)"
online=1 why=
if [ "$(id -u)" -ne 0 ]; then online=0 why="not root"
elif [ ! -c /dev/fuse ]; then online=0 why="no /dev/fuse"
elif [ ! -c /dev/loop-control ]; then online=0 why="no loop devices"
fi

step "mkimg --fs ext4 --from a directory (12 MiB of files): a 1 GiB disk"
mkdir -p "$dir/src/etc" "$dir/src/data"
for i in 1 2 3; do head -c 4M /dev/urandom >"$dir/src/data/blob$i"; done
echo "hello from libimg" >"$dir/src/etc/motd"
(cd "$dir/src" && sha256sum data/* etc/motd) >"$dir/sums"
"$BIN/mkimg" "--fs" ext4 --label demo --from "$dir/src" "$fimg" 1G | sed 's/^/  /'
fs_sizes "after mkimg"

if [ $online -eq 1 ]; then
  step "imgmount (imgserve + loop device + mount; -o nodiscard to show fstrim)"
  mkdir "$mnt"
  "$BIN/imgmount" -q -o nodiscard "$fimg" "$mnt"
  fs_sizes "mounted" "$mnt"
  step "write 200 MiB"
  head -c 200M /dev/urandom >"$mnt/big"; sync
  fs_sizes "after writing" "$mnt"
  step "delete it: the filesystem frees it, the host does not know yet ..."
  rm "$mnt/big"; sync
  fs_sizes "after rm" "$mnt"
  step "... fstrim: the discards reach the image, host space comes back"
  fstrim -v "$mnt" | sed 's/^/  /'
  fs_sizes "after fstrim" "$mnt"
  step "growimg +1G online: image, loop device, then resize2fs"
  grown=1
  "$BIN/growimg" "$fimg" +1G 2>&1 | sed 's/^/  /' || grown=0
  [ "${PIPESTATUS[0]}" -eq 0 ] || grown=0
  [ $grown -eq 1 ] || echo "  (the filesystem grows offline below: a rerun of growimg completes it)"
  fs_sizes "after growimg" "$mnt"
  step "compact online: fstrim, then the daemon packs clusters and truncates the file"
  "$BIN/compact" "$fimg" | sed 's/^/  /'
  fs_sizes "after compact" "$mnt"
  step "imgumount"
  "$BIN/imgumount" "$mnt" | sed 's/^/  /'
  fs_sizes "unmounted"
  if [ $grown -eq 0 ]; then
    step "growimg offline completes the grow (e2fsck -f -p, resize2fs on a private attach)"
    "$BIN/growimg" "$fimg" 2G | sed 's/^/  /'
    fs_sizes "after growimg offline"
  fi
  step "shrinkimg --min: e2fsck -f, resize2fs to its minimum + max(5%, 16 MiB), image follows"
  "$BIN/shrinkimg" "$fimg" --min | sed 's/^/  /'
  fs_sizes "after shrinkimg --min"
else
  echo
  echo "  ($why: skipped imgmount, writing and fstrim through the mount, growimg"
  echo "   online, online compact, and growimg/shrinkimg --min of the filesystem,"
  echo "   which attach the image; offline steps only)"
  step "growimg --no-fs +1G (the image only; the filesystem needs root to grow)"
  "$BIN/growimg" --no-fs "$fimg" +1G | sed 's/^/  /'
  step "compact offline: the block bitmap's free clusters go back, no mount needed"
  "$BIN/compact" "$fimg" | sed 's/^/  /'
  fs_sizes "after compact"
fi

step "imgcheck, and e2fsck -fn on the disk read back with imgconvert"
"$BIN/imgcheck" "$fimg" | sed 's/^/  /'
"$BIN/imgconvert" -q -F libimg -O raw "$fimg" "$dir/fs.raw"
e2fsck -fn "$dir/fs.raw" 2>&1 | tail -n1 | sed 's/^/  /'
mkdir "$dir/back"
debugfs -R "rdump / $dir/back" "$dir/fs.raw" 2>/dev/null
(cd "$dir/back" && sha256sum -c --quiet "$dir/sums") && echo "  the files from the directory are intact"
echo
echo "demo: done${why:+ (offline part only: $why)}"
