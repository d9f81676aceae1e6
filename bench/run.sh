#!/usr/bin/env bash
# Runs every benchmark of the project and prints their tables.
# Settings: BENCH_DIR (default /var/tmp), BENCH_MIB, BENCH_OPS.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
echo "machine: $(nproc) cpus, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(df -h "${BENCH_DIR:-/var/tmp}" | awk 'NR==2{print $1}')"
"$BUILD/bench/libimg_bench" -d "${BENCH_DIR:-/var/tmp}" -s "${BENCH_MIB:-256}" -n "${BENCH_OPS:-20000}"
for b in bench/*.sh; do
  [ "$b" = bench/run.sh ] && continue
  echo; echo "== $b"; BUILD=$BUILD bash "$b"
done
