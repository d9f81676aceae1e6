#!/usr/bin/env bash
# imgconvert raw -> libimg against qemu-img convert -O qcow2, against cp
# (--sparse=always, raw to raw) and against the disk's limit (the source's
# data extents read and written once with large direct I/O: copy_limit),
# same source, same run, page cache dropped before each run, each time
# including the sync that makes the output durable.  imgconvert runs twice:
# with its default engine (io_uring for the source's direct reads) and with
# LIBIMG_IO=posix.
# Source: 2 GiB, half data (random), half holes and zero runs (1 GiB of
# non-zero data, 512 MiB of zero runs, 512 MiB of holes).
# Settings: BENCH_DIR (/var/tmp), RUNS (3).  BENCH_SUMMARY=1: RATIO lines.
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
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
have_qemu=0; command -v qemu-img >/dev/null && have_qemu=1

declare -A T
tools=(limit libimg posix cp)
[ $have_qemu = 1 ] && tools+=(qcow2)
for r in $(seq "$runs"); do
  # rotate the order every run
  n=${#tools[@]}
  for k in $(seq 0 $((n - 1))); do
    tool=${tools[$(( (k + r) % n ))]}
    rm -f "$dir"/out.*
    drop
    case $tool in
      limit)  T[$tool]+="$(timeit "$LIMIT" "$src" "$dir/out.raw") " ;;
      libimg) T[$tool]+="$(timeit "$BIN/imgconvert" -q "$src" "$dir/out.img") " ;;
      posix)  T[$tool]+="$(timeit env LIBIMG_IO=posix "$BIN/imgconvert" -q "$src" "$dir/out.img") " ;;
      cp)     T[$tool]+="$(timeit cp --sparse=always "$src" "$dir/out.raw") " ;;
      qcow2)  T[$tool]+="$(timeit qemu-img convert -O qcow2 "$src" "$dir/out.qcow2") " ;;
    esac
  done
done
rm -f "$dir"/out.*
data_mib=1024
med() { median <<<"${T[$1]}"; }
lim=$(med limit); lib=$(med libimg); pos=$(med posix); cpt=$(med cp)
printf '%-44s %8s %12s  %s\n' "2 GiB raw, 1 GiB data; median of $runs" "s" "MiB/s data" "imgconvert's speed relative"
printf '%-44s %8.2f %12.0f\n' "disk limit (copy_limit, direct I/O)" "$lim" "$(echo "$data_mib / $lim" | bc -l)"
printf '%-44s %8.2f %12.0f  %5.2fx of the limit\n' "imgconvert (io_uring source reads)" "$lib" "$(echo "$data_mib / $lib" | bc -l)" "$(echo "$lim / $lib" | bc -l)"
printf '%-44s %8.2f %12.0f  %5.2fx (io_uring vs posix)\n' "imgconvert, LIBIMG_IO=posix" "$pos" "$(echo "$data_mib / $pos" | bc -l)" "$(echo "$pos / $lib" | bc -l)"
printf '%-44s %8.2f %12.0f  %5.2fx\n' "cp --sparse=always (raw to raw)" "$cpt" "$(echo "$data_mib / $cpt" | bc -l)" "$(echo "$cpt / $lib" | bc -l)"
if [ $have_qemu = 1 ]; then
  q=$(med qcow2)
  printf '%-44s %8.2f %12.0f  %5.2fx\n' "qemu-img convert -O qcow2" "$q" "$(echo "$data_mib / $q" | bc -l)" "$(echo "$q / $lib" | bc -l)"
else
  echo "qemu-img not installed: no qcow2 reference"
fi
if [ -n "${BENCH_SUMMARY:-}" ]; then
  s() { echo "$1" | bc -l | awk '{printf "%.2f", $1}'; }
  flag() { awk -v r="$1" -v t="$2" 'BEGIN { if (r + 1e-9 < t) printf " BELOW" }'; }
  printf 'RATIO|imgconvert|imgconvert vs the disk limit (speed)|%s s|%s s|%sx|>= 0.8x%s\n' "$(s "$lib")" "$(s "$lim")" "$(s "$lim / $lib")" "$(flag "$(s "$lim / $lib")" 0.8)"
  [ $have_qemu = 1 ] && printf 'RATIO|imgconvert|imgconvert vs qemu-img convert -O qcow2 (speed)|%s s|%s s|%sx|>= 1.2x%s\n' "$(s "$lib")" "$(s "$q")" "$(s "$q / $lib")" "$(flag "$(s "$q / $lib")" 1.2)"
  printf 'RATIO|imgconvert|imgconvert vs cp --sparse=always (speed)|%s s|%s s|%sx|-\n' "$(s "$lib")" "$(s "$cpt")" "$(s "$cpt / $lib")"
  printf 'RATIO|io_uring vs posix|imgconvert (io_uring time / posix time)|%s s|%s s|%sx|< 1x keeps it\n' "$(s "$lib")" "$(s "$pos")" "$(s "$lib / $pos")"
fi
