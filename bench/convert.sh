#!/usr/bin/env bash
# imgconvert raw -> libimg against qemu-img convert -O qcow2 and against the
# disk's limit (the source's data read and written once with large direct
# I/O), same source, same run, page cache dropped before each run.
# Source: 2 GiB, half data (random), half holes and zero runs.
# Settings: BENCH_DIR (/var/tmp), RUNS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
LIMIT=${BUILD:-build}/bench/copy_limit
dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/libimg-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
runs=${RUNS:-3}
src=$dir/src.raw
truncate -s 2G "$src"
# 1 GiB of data in 8 MiB pieces; between them alternately a hole and a zero run
for i in $(seq 0 127); do
  dd if=/dev/urandom of="$src" bs=1M count=8 seek=$((i * 16)) conv=notrunc status=none
  if [ $((i % 2)) -eq 0 ]; then
    dd if=/dev/zero of="$src" bs=1M count=8 seek=$((i * 16 + 8)) conv=notrunc status=none
  fi
done
sync
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
timeit() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; sync; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A T
for r in $(seq "$runs"); do
  for tool in limit libimg qcow2; do
    rm -f "$dir"/out.*
    drop
    case $tool in
      limit)  T[$tool]+="$(timeit "$LIMIT" "$src" "$dir/out.raw") " ;;
      libimg) T[$tool]+="$(timeit "$BIN/imgconvert" -q "$src" "$dir/out.img") " ;;
      qcow2)  if command -v qemu-img >/dev/null; then
                T[$tool]+="$(timeit qemu-img convert -O qcow2 "$src" "$dir/out.qcow2") "
              fi ;;
    esac
  done
done
data_mib=1024
printf '%-32s %8s %10s %8s\n' "imgconvert raw->libimg (2 GiB, 1 GiB data)" "s" "MiB/s data" "ratio"
lim=$(tr ' ' '\n' <<<"${T[limit]}" | grep . | median)
lib=$(tr ' ' '\n' <<<"${T[libimg]}" | grep . | median)
printf '%-32s %8.2f %10.0f\n' "disk limit (copy_limit)" "$lim" "$(echo "$data_mib / $lim" | bc -l)"
printf '%-32s %8.2f %10.0f %7.2fx of limit\n' "imgconvert" "$lib" "$(echo "$data_mib / $lib" | bc -l)" "$(echo "$lim / $lib" | bc -l)"
if [ -n "${T[qcow2]:-}" ]; then
  q=$(tr ' ' '\n' <<<"${T[qcow2]}" | grep . | median)
  printf '%-32s %8.2f %10.0f %7.2fx (imgconvert speed / qemu-img speed)\n' "qemu-img convert -O qcow2" "$q" "$(echo "$data_mib / $q" | bc -l)" "$(echo "$q / $lib" | bc -l)"
else
  echo "qemu-img not installed: no qcow2 reference"
fi
