#!/usr/bin/env bash
# make bench: every benchmark of the project in one go, then one table of
# the ratios measured in this run, with the machine noted.
#
# Each part prints its own detailed table (kept in $BENCH_LOG_DIR) and
# lines "RATIO|section|what|libimg|reference|ratio|target" that make up the
# closing table.  Parts run in the order of BENCH_PARTS:
#   lib      bench/libimg_bench.c -I   library vs a raw file (same disk)
#   open     bench/libimg_bench.c -O   open time and memory, 1 GiB..64 TiB
#   compmem  bench/comp_mem.c          memory of opening 2^24 compressed entries
#   scale    bench/scale.sh            open, check, compact at 1 GiB..1 TiB
#   convert  bench/convert.sh          imgconvert vs qemu-img, cp, the limit
#   compact  bench/compact_bench.c     compact vs the data copy (posix, io_uring)
#   fs       bench/fs_compact.sh       compact of ext4 after deletions vs qemu
#   mkfs     bench/mkfs.sh             mkimg --fs ext4 vs qemu-img create + mkfs
#   online   the scripts in BENCH_ONLINE (default: bench/fio-online.sh and
#            bench/qos-online.sh, those that exist): the hook for the export's benchmarks.  Any script can
#            join the table by printing RATIO lines (it gets BENCH_SUMMARY=1).
# Settings (all explicit, printed at the start):
#   BENCH_DIR (/var/tmp)  BENCH_PARTS (all of the above)  BENCH_REPS (3)
#   BENCH_MIB (128)  BENCH_OPS (5000)  BENCH_COMPACT_MIB (512)
#   RUNS (3, convert and mkfs)  FSBENCH_GIB (2)  FSBENCH_LIVE_MIB (256)
#   BENCH_ONLINE  BENCH_LOG_DIR ($BUILD/bench-logs)
# The whole suite takes about 6-9 minutes on a 2-core machine with a virtual
# disk (more when the file system discards on unlink, as this one does).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD
export BENCH_DIR=${BENCH_DIR:-/var/tmp}
PARTS=${BENCH_PARTS:-lib open compmem scale convert compact fs mkfs online}
REPS=${BENCH_REPS:-3}
export BENCH_MIB=${BENCH_MIB:-128} BENCH_OPS=${BENCH_OPS:-5000}
export RUNS=${RUNS:-3}
export FSBENCH_GIB=${FSBENCH_GIB:-2} FSBENCH_LIVE_MIB=${FSBENCH_LIVE_MIB:-256}
if [ -z "${BENCH_ONLINE+x}" ]; then
  BENCH_ONLINE=
  for s in bench/fio-online.sh bench/qos-online.sh; do
    [ -f "$s" ] && BENCH_ONLINE="${BENCH_ONLINE:+$BENCH_ONLINE }$s"
  done
fi
LOGS=${BENCH_LOG_DIR:-$BUILD/bench-logs}
mkdir -p "$LOGS"
SUM=$LOGS/summary.txt
: >"$SUM"
export BENCH_SUMMARY=1

fs_type=$(df -T "$BENCH_DIR" | awk 'NR==2 {print $2}')
fs_dev=$(df -T "$BENCH_DIR" | awk 'NR==2 {print $1}')
fs_opts=$(findmnt -no OPTIONS --target "$BENCH_DIR" 2>/dev/null | cut -c1-60)
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
machine="$cpu, $(nproc) cpus, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), $BENCH_DIR on $fs_type ($fs_dev, $fs_opts)"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$(date +%s)
echo "machine: $machine"
echo "load average at start: $load0 (the machine may be shared: ratios are measured in the same run, alternating)"
echo "settings: parts=[$PARTS] reps=$REPS BENCH_MIB=$BENCH_MIB BENCH_OPS=$BENCH_OPS compact=${BENCH_COMPACT_MIB:-512} MiB RUNS=$RUNS fs=${FSBENCH_GIB}G/${FSBENCH_LIVE_MIB}M online=[${BENCH_ONLINE}]"

# part NAME COMMAND...: runs it, shows its output, keeps its RATIO lines
part() {
  local name=$1 t0 rc; shift
  echo; echo "== $name: $*"
  t0=$(date +%s)
  "$@" 2>&1 | tee "$LOGS/$name.log" | grep -v '^RATIO|'
  rc=${PIPESTATUS[0]}
  grep '^RATIO|' "$LOGS/$name.log" >>"$SUM"
  echo "-- $name: $(( $(date +%s) - t0 )) s${rc:+, exit $rc}" | sed 's/, exit 0$//'
}

for p in $PARTS; do
  case $p in
    lib)     part lib "$BUILD/bench/libimg_bench" -I -S -d "$BENCH_DIR" -r "$REPS" \
               -s "$BENCH_MIB" -n "$BENCH_OPS" ;;
    open)    part open "$BUILD/bench/libimg_bench" -O -S -d "$BENCH_DIR" -r "$REPS" ;;
    compmem) part compmem "$BUILD/bench/comp_mem" -d "$BENCH_DIR"
             part compmem-far "$BUILD/bench/comp_mem" -d "$BENCH_DIR" -f ;;
    scale)   part scale bash bench/scale.sh ;;
    convert) part convert bash bench/convert.sh ;;
    compact) part compact env COPY_LIMIT="$BUILD/bench/copy_limit" "$BUILD/bench/compact_bench" \
               -d "$BENCH_DIR" -m "${BENCH_COMPACT_MIB:-512}" -r "$RUNS"
             part compact-nozd env NOZD=1 COPY_LIMIT="$BUILD/bench/copy_limit" \
               "$BUILD/bench/compact_bench" -d "$BENCH_DIR" -m "${BENCH_COMPACT_MIB:-512}" -r "$RUNS" ;;
    fs)      part fs bash bench/fs_compact.sh ;;
    mkfs)    part mkfs bash bench/mkfs.sh ;;
    online)  for s in $BENCH_ONLINE; do part "online-$(basename "$s" .sh)" bash "$s"; done ;;
    *)       echo "bench/run.sh: unknown part '$p'" >&2 ;;
  esac
done

load1=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "==== summary: ratios measured in this run ($(( $(date +%s) - t_start )) s)"
echo "machine: $machine"
echo "load average: $load0 at start, $load1 at the end"
# one block per section, in the order sections first appear
awk -F'|' '
  BEGIN { fmt = "%-66s %-28s %-22s %-8s %s\n" }
  { if (!($2 in n)) { order[++ns] = $2; n[$2] = 0 }
    line[$2, ++n[$2]] = sprintf(fmt, $3, $4, $5, $6, $7) }
  END { for (i = 1; i <= ns; i++) { s = order[i]; printf "\n-- %s\n", s
          printf fmt, "measure", "libimg", "reference", "ratio", "target"
          for (k = 1; k <= n[s]; k++) printf "%s", line[s, k] } }' "$SUM"
echo
echo "(ratio: libimg's throughput over the reference's, or time over time where"
echo " the target says <=; details of every part in $LOGS/)"
