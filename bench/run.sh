#!/usr/bin/env bash
# Runs every benchmark of the project and prints their tables.
# Settings: BENCH_DIR (default /var/tmp), BENCH_MIB, BENCH_OPS.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
echo "machine: $(nproc) cpus, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(df -h "${BENCH_DIR:-/var/tmp}" | awk 'NR==2{print $1}')"
"$BUILD/bench/libimg_bench" -d "${BENCH_DIR:-/var/tmp}" -s "${BENCH_MIB:-256}" -n "${BENCH_OPS:-20000}"
echo; echo "== compact (bench/compact_bench.c)"
COPY_LIMIT="$BUILD/bench/copy_limit" "$BUILD/bench/compact_bench" -d "${BENCH_DIR:-/var/tmp}" -m "${BENCH_COMPACT_MIB:-1024}"
echo "-- the same with --no-zero-detect"
NOZD=1 COPY_LIMIT="$BUILD/bench/copy_limit" "$BUILD/bench/compact_bench" -d "${BENCH_DIR:-/var/tmp}" -m "${BENCH_COMPACT_MIB:-1024}" | tail -1
for b in bench/*.sh; do
  [ "$b" = bench/run.sh ] && continue
  echo; echo "== $b"; BUILD=$BUILD bash "$b"
done
