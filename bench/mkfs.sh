#!/usr/bin/env bash
# mkimg --fs ext4 against qemu-img create plus mkfs.ext4: time (including
# the sync that makes the result durable) and host space used, for an
# empty filesystem on a SIZE virtual disk.  qemu side: a raw file (mkfs on
# the file itself) and a qcow2 image (mkfs through qemu-storage-daemon's
# FUSE export; needs root, /dev/fuse and qemu-storage-daemon, else
# skipped).
# Settings: BENCH_DIR (/var/tmp), MKFS_SIZE (64G), RUNS (3).
# BENCH_SUMMARY=1: RATIO lines for bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
BIN=$BUILD/bin
SIZE=${MKFS_SIZE:-64G}
runs=${RUNS:-3}
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/libimg-mkfs.XXXXXX")
QSD_PID=
cleanup() {
  set +e
  [ -n "$QSD_PID" ] && kill "$QSD_PID" && wait "$QSD_PID" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
cd "$W"
now() { date +%s.%N; }
usage() { echo $(( $(stat -c %b "$1") * 512 )); }
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for c in qemu-img mkfs.ext4; do command -v $c >/dev/null || { echo "mkfs: $c missing: skipped"; exit 0; }; done
qsd=0
[ "$(id -u)" -eq 0 ] && [ -c /dev/fuse ] && command -v qemu-storage-daemon >/dev/null && qsd=1

declare -A T U
for r in $(seq "$runs"); do
  rm -f a.img r.raw q.qcow2
  sync
  t0=$(now); "$BIN/mkimg" -q --fs ext4 a.img "$SIZE"; sync; t1=$(now)
  T[libimg]+="$(echo "$t1 - $t0" | bc) "; U[libimg]=$(usage a.img)
  t0=$(now); qemu-img create -q -f raw r.raw "$SIZE"; mkfs.ext4 -q -F -b 4096 r.raw; sync; t1=$(now)
  T[raw]+="$(echo "$t1 - $t0" | bc) "; U[raw]=$(usage r.raw)
  if [ $qsd = 1 ]; then
    t0=$(now)
    qemu-img create -q -f qcow2 q.qcow2 "$SIZE"
    touch q.export
    qemu-storage-daemon \
      --blockdev driver=file,node-name=f,filename=q.qcow2,discard=unmap \
      --blockdev driver=qcow2,node-name=q,file=f,discard=unmap \
      --export type=fuse,id=e,node-name=q,mountpoint="$W/q.export",writable=on >qsd.log 2>&1 &
    QSD_PID=$!
    for _ in $(seq 200); do [ "$(stat -c %s q.export)" -gt 0 ] && break; sleep 0.05; done
    mkfs.ext4 -q -F -b 4096 q.export
    kill "$QSD_PID"; wait "$QSD_PID" 2>/dev/null || true; QSD_PID=
    sync; t1=$(now)
    T[qcow2]+="$(echo "$t1 - $t0" | bc) "; U[qcow2]=$(usage q.qcow2)
    rm -f q.export
  fi
done
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
lib=$(median <<<"${T[libimg]}"); raw=$(median <<<"${T[raw]}")
printf '%-44s %8s %14s\n' "empty ext4 on a $SIZE disk; median of $runs" "s" "host usage"
printf '%-44s %8.2f %14s\n' "mkimg --fs ext4" "$lib" "$(mib "${U[libimg]}")"
printf '%-44s %8.2f %14s\n' "qemu-img create -f raw + mkfs.ext4" "$raw" "$(mib "${U[raw]}")"
if [ $qsd = 1 ]; then
  q=$(median <<<"${T[qcow2]}")
  printf '%-44s %8.2f %14s\n' "qemu-img create -f qcow2 + mkfs.ext4 (qsd)" "$q" "$(mib "${U[qcow2]}")"
else
  echo "qcow2 + mkfs through qemu-storage-daemon: skipped (needs root, /dev/fuse, qemu-storage-daemon)"
fi
if [ -n "${BENCH_SUMMARY:-}" ]; then
  r2() { echo "$1" | bc -l | awk '{printf "%.2f", $1}'; }
  printf 'RATIO|mkimg --fs|mkimg --fs ext4 %s vs qemu-img create -f raw + mkfs.ext4 (speed)|%s s, %s|%s s, %s|%sx|-\n' \
    "$SIZE" "$(r2 "$lib")" "$(mib "${U[libimg]}")" "$(r2 "$raw")" "$(mib "${U[raw]}")" "$(r2 "$raw / $lib")"
  [ $qsd = 1 ] && printf 'RATIO|mkimg --fs|mkimg --fs ext4 %s vs qcow2 + mkfs.ext4 via qsd (speed)|%s s, %s|%s s, %s|%sx|-\n' \
    "$SIZE" "$(r2 "$lib")" "$(mib "${U[libimg]}")" "$(r2 "$q")" "$(mib "${U[qcow2]}")" "$(r2 "$q / $lib")"
fi
exit 0
