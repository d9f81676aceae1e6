#!/usr/bin/env bash
# compact of a 4 GiB ext4 image whose 1 GiB of live data is scattered among
# the blocks of deleted files (deleted without any discard reaching the
# image), against the best qemu offers for the same state: fstrim through
# qemu-storage-daemon's export with discard=unmap, then qemu-img convert to
# a new file.  The qemu side needs root, a loop device, FUSE and
# qemu-storage-daemon (package qemu-system-common); it is skipped otherwise.
# Settings: BENCH_DIR (default /var/tmp), FSBENCH_GIB (image size, 4),
# FSBENCH_LIVE_MIB (live data, 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
BIN=$BUILD/bin
GIB=${FSBENCH_GIB:-4}
LIVE=${FSBENCH_LIVE_MIB:-1024}
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/libimg-fsbench.XXXXXX")
QSD_PID= LOOP= MNT=
cleanup() {
  set +e
  [ -n "$MNT" ] && mountpoint -q "$MNT" && umount "$MNT"
  [ -n "$LOOP" ] && losetup -d "$LOOP"
  [ -n "$QSD_PID" ] && kill "$QSD_PID" && wait "$QSD_PID" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
cd "$W"
usage() { echo $(( $(stat -c %b "$1") * 512 )); }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f s", b - a }'; }

# The state: files of 64 KiB .. 2 MiB filling 2 x LIVE MiB, every other one
# deleted afterwards (debugfs on the raw disk), so live and free space
# alternate all over the written part of the filesystem.
echo "building the state: ${GIB} GiB ext4, $((2 * LIVE)) MiB written, half deleted..."
mkdir src
total=0 n=0
while [ $total -lt $((2 * LIVE * 1048576)) ]; do
  sz=$(( (RANDOM % 32 + 1) * 65536 ))
  head -c $sz /dev/urandom >src/f$n
  total=$((total + sz)) n=$((n + 1))
done
"$BIN/mkimg" -q --fs ext4 --from src base.img "${GIB}G"
"$BIN/imgconvert" -q -O raw base.img state.raw
rm -f base.img
for ((i = 0; i < n; i += 2)); do echo "rm /f$i"; done >rm.cmds
debugfs -w -f rm.cmds state.raw >/dev/null 2>&1
e2fsck -fn state.raw >/dev/null 2>&1
live=$(for ((i = 1; i < n; i += 2)); do stat -c %s src/f$i; done | awk '{ s += $1 } END { print s }')
rm -rf src
echo "files: $n written, $((n / 2)) deleted; live data $(mib "$live")"

# libimg: the image as it would be after the deletions (everything the
# files ever held is allocated), then compact; once as it comes, once
# without zero detection (which reads every allocated cluster).
printf '%-44s %12s %12s %12s %10s\n' "" "before" "after" "reclaimed" "time"
for variant in "" --no-zero-detect; do
  "$BIN/imgconvert" -q state.raw a.img
  before=$(usage a.img)
  t0=$(now)
  "$BIN/compact" --json $variant a.img >compact.json
  t1=$(now)
  after=$(usage a.img)
  trim=$(jq -r .fs_trim_bytes compact.json)
  e2fsck_ok=no
  "$BIN/imgconvert" -q -O raw a.img check.raw && e2fsck -fn check.raw >/dev/null 2>&1 && e2fsck_ok=yes
  rm -f check.raw
  printf '%-44s %12s %12s %12s %10s\n' "libimg compact $variant" \
    "$(mib "$before")" "$(mib "$after")" "$(mib $((before - after)))" "$(secs "$t0" "$t1")"
  printf '%-44s %12s\n' "  of which from the filesystem's free blocks" "$(mib "$trim")"
  printf '%-44s %12s\n' "  e2fsck -fn afterwards clean" "$e2fsck_ok"
  printf '%-44s %12s\n' "  file size after" "$(mib "$(stat -c %s a.img)")"
  if [ -z "$variant" ]; then lib_t=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'); lib_after=$after; fi
  rm -f a.img
done

# qemu: the same state as qcow2; fstrim through the export; convert.
if [ "$(id -u)" -ne 0 ] || ! command -v qemu-storage-daemon >/dev/null || [ ! -e /dev/fuse ] ||
   ! command -v qemu-img >/dev/null; then
  echo "qemu: skipped (needs root, /dev/fuse, qemu-img and qemu-storage-daemon)"
  [ -n "${BENCH_SUMMARY:-}" ] &&
    echo "RATIO|compact with a filesystem|compact of ${GIB} GiB ext4, $(mib "$live") live|$lib_t s, $(mib "$lib_after") left|qemu skipped|-|-"
  exit 0
fi
qemu-img convert -O qcow2 state.raw q.qcow2
rm -f state.raw
qbefore=$(usage q.qcow2)
touch q.export
mkdir mnt
MNT=$W/mnt
t0=$(now)
qemu-storage-daemon \
  --blockdev driver=file,node-name=f,filename=q.qcow2,discard=unmap \
  --blockdev driver=qcow2,node-name=q,file=f,discard=unmap \
  --export type=fuse,id=e,node-name=q,mountpoint="$W/q.export",writable=on >qsd.log 2>&1 &
QSD_PID=$!
for _ in $(seq 100); do [ "$(stat -c %s q.export)" -gt 0 ] && break; sleep 0.05; done
LOOP=$(losetup -f --show q.export)
mount "$LOOP" "$MNT"
fstrim "$MNT"
umount "$MNT"
losetup -d "$LOOP"; LOOP=
kill "$QSD_PID"; wait "$QSD_PID" 2>/dev/null || true; QSD_PID=
t1=$(now)
qtrim=$(usage q.qcow2)
qemu-img convert -O qcow2 q.qcow2 q2.qcow2
t2=$(now)
qafter=$(usage q2.qcow2)
printf '%-44s %12s %12s %12s %10s\n' "qemu: fstrim via qemu-storage-daemon" \
  "$(mib "$qbefore")" "$(mib "$qtrim")" "$(mib $((qbefore - qtrim)))" "$(secs "$t0" "$t1")"
printf '%-44s %12s %12s %12s %10s\n' "qemu: + qemu-img convert to a new file" \
  "$(mib "$qbefore")" "$(mib "$qafter")" "$(mib $((qbefore - qafter)))" "$(secs "$t0" "$t2")"
if [ -n "${BENCH_SUMMARY:-}" ]; then
  q_t=$(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.2f", b - a }')
  echo "RATIO|compact with a filesystem|compact of ${GIB} GiB ext4 ($(mib "$live") live) vs fstrim via qsd + qemu-img convert (speed)|$lib_t s|$q_t s|$(awk -v a="$lib_t" -v b="$q_t" 'BEGIN { printf "%.2fx", b / a }')|-"
  echo "RATIO|compact with a filesystem|host usage after (libimg / qemu)|$(mib "$lib_after")|$(mib "$qafter")|$(awk -v a="$lib_after" -v b="$qafter" 'BEGIN { printf "%.2fx", a / b }')|-"
fi
