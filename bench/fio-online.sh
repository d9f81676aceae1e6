#!/usr/bin/env bash
# fio on a loop device over three FUSE exports, in the same run:
#   libimg    imgattach (imgserve) of a libimg image
#   qcow2     qemu-storage-daemon's FUSE export of a qcow2 image
#   raw       qemu-storage-daemon's FUSE export of a raw file
# Jobs (direct=1, libaio): 4K randread QD16, 4K randwrite QD16, 4K randwrite
# QD1, 4K randwrite QD16 into never-written space (allocating writes), 1M
# sequential read and write (QD4).  The first SIZE of each disk is
# written once before the jobs so that reads read data.  Prints IOPS or MiB/s
# per job and target, the ratios libimg/qcow2 and libimg/raw, and each
# daemon's peak RSS.  Needs root, /dev/fuse, loop devices, fio, qemu-img and
# qemu-storage-daemon.
#
# Environment: RUNTIME (seconds per job, default 4), REPEAT (rounds per job,
# the median is printed; default 3, at most DISK / SIZE - 1 for the fresh
# job), SIZE (default 1G), DISK (virtual size, default 8G), DIR (work directory, default a new one
# under /var/tmp), LOOP_DIO (on|off, default on), IMGSERVE_OPTS (options for
# imgserve, e.g. "-t 4" or "--host-cache"; default: imgattach's), ONLY (a
# regular expression: run only the jobs whose name matches), BUILD.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=$(cd "$BUILD/bin" && pwd)
RUNTIME=${RUNTIME:-4}
SIZE=${SIZE:-1G}
DISK=${DISK:-8G}
REPEAT=${REPEAT:-3}
LOOP_DIO=${LOOP_DIO:-on}

for c in fio qemu-img qemu-storage-daemon losetup jq; do
  command -v $c >/dev/null || { echo "fio-online: $c is missing (scripts/deps.sh)" >&2; echo "fio-online: skipped" >&2; exit 0; }
done
[ "$(id -u)" -eq 0 ] && [ -c /dev/fuse ] || { echo "fio-online: needs root and /dev/fuse" >&2; echo "fio-online: skipped" >&2; exit 0; }

W=${DIR:-$(mktemp -d /var/tmp/fio-online.XXXXXX)}
mkdir -p "$W"
export LIBIMG_RUNDIR=$W/run
QSD_PIDS=(); LOOPS=()
cleanup() {
  set +e
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
  "$BIN/imgdetach" -q "$W/a.img" 2>/dev/null
  for p in "${QSD_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for m in "$W/q.exp" "$W/r.exp"; do umount -l "$m" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT

# --- libimg ---
"$BIN/mkimg" "$W/a.img" "$DISK" >/dev/null
if [ -n "${IMGSERVE_OPTS:-}" ]; then
  # imgattach runs imgserve with its defaults; for other options, serve by hand
  touch "$W/a.exp"
  # shellcheck disable=SC2086
  "$BIN/imgserve" --daemon -q $IMGSERVE_OPTS "$W/a.img" "$W/a.exp"
  dev_a=$(losetup --find --show --direct-io=$LOOP_DIO "$W/a.exp"); LOOPS+=("$dev_a")
  pid_a=$(cat "$LIBIMG_RUNDIR"/*/pid)
else
  dev_a=$("$BIN/imgattach" "$W/a.img")
  pid_a=$(cat "$LIBIMG_RUNDIR"/*/pid)
  [ "$LOOP_DIO" = on ] || losetup --direct-io=off "$dev_a"
fi

# --- qemu-storage-daemon: qcow2 and raw ---
qsd() { # name format file
  touch "$W/$1.exp"
  qemu-storage-daemon \
    --blockdev driver=file,node-name=file0,filename="$3" \
    --blockdev driver="$2",node-name=fmt0,file=file0 \
    --export type=fuse,id=exp0,node-name=fmt0,mountpoint="$W/$1.exp",writable=on \
    >"$W/$1.log" 2>&1 &
  QSD_PIDS+=("$!")
  for i in $(seq 100); do grep -q " $W/$1.exp fuse" /proc/mounts && break; sleep 0.1; done
  grep -q " $W/$1.exp fuse" /proc/mounts || { cat "$W/$1.log" >&2; exit 1; }
}
qemu-img create -q -f qcow2 "$W/q.qcow2" "$DISK"
qsd q qcow2 "$W/q.qcow2"; pid_q=${QSD_PIDS[-1]}
truncate -s "$DISK" "$W/r.raw"
qsd r raw "$W/r.raw"; pid_r=${QSD_PIDS[-1]}
dev_q=$(losetup --find --show --direct-io=$LOOP_DIO "$W/q.exp"); LOOPS+=("$dev_q")
dev_r=$(losetup --find --show --direct-io=$LOOP_DIO "$W/r.exp"); LOOPS+=("$dev_r")

run_fio() { # dev name rw bs iodepth [fio options] -> prints "IOPS MiB/s"
  local dev=$1 name=$2 rw=$3 bs=$4 qd=$5
  shift 5
  fio --name="$name" --filename="$dev" --rw="$rw" --bs="$bs" --iodepth="$qd" --size="$SIZE" \
      --direct=1 --ioengine=libaio --runtime="$RUNTIME" --time_based --randrepeat=0 \
      --output-format=json "$@" 2>/dev/null |
    jq -r '.jobs[0] | [(.read.iops + .write.iops), ((.read.bw + .write.bw) / 1024)] | @tsv'
}
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "fio-online: disks of $DISK, jobs over the first $SIZE, ${RUNTIME}s each, loop direct-io=$LOOP_DIO,"
echo "  medians of $REPEAT rounds, the three exports in turn (the order rotates every round)"
for d in "$dev_a" "$dev_q" "$dev_r"; do      # reads must read data
  fio --name=fill --filename="$d" --rw=write --bs=1M --size="$SIZE" --direct=1 \
      --ioengine=libaio --iodepth=4 --output-format=json >/dev/null 2>&1
done

printf '%-22s %12s %12s %12s %8s %8s\n' job libimg qcow2 raw "/qcow2" "/raw"
# name rw bs iodepth unit; "fresh": each round writes a region never
# written before (past the filled SIZE): allocating writes into a fresh
# image, where qcow2 allocates a cluster for every new 64 KiB
JOBS=("randread-4k-qd16 randread 4k 16 iops"
      "randwrite-4k-qd16 randwrite 4k 16 iops"
      "randwrite-4k-qd1 randwrite 4k 1 iops"
      "randwrite-4k-qd16-fresh randwrite 4k 16 iops fresh"
      "read-1m-qd4 read 1M 4 MiB/s"
      "write-1m-qd4 write 1M 4 MiB/s")
size_bytes=$(numfmt --from=iec "$SIZE")
fresh_round=0
devs=("$dev_a" "$dev_q" "$dev_r")
for j in "${JOBS[@]}"; do
  set -- $j
  [[ "$1" =~ ${ONLY:-.} ]] || continue
  declare -A got=()
  for r in $(seq "$REPEAT"); do
    extra=()
    if [ "${6:-}" = fresh ]; then
      fresh_round=$((fresh_round + 1))
      extra=(--offset=$((size_bytes * fresh_round)))
    fi
    for k in 0 1 2; do
      i=$(((k + r) % 3))
      read -r iops bw < <(run_fio "${devs[$i]}" "$1" "$2" "$3" "$4" "${extra[@]}")
      if [ "$5" = iops ]; then v=$(printf '%.0f' "$iops"); else v=$(printf '%.0f' "$bw"); fi
      got[$i]+="$v "
    done
  done
  vals=()
  for i in 0 1 2; do vals+=("$(echo "${got[$i]}" | median)"); done
  [ -z "${VERBOSE:-}" ] || echo "  rounds: libimg ${got[0]}| qcow2 ${got[1]}| raw ${got[2]}"
  unset got
  printf '%-22s %12s %12s %12s %8s %8s   (%s)\n' "$1" "${vals[0]}" "${vals[1]}" "${vals[2]}" \
    "$(echo "scale=2; ${vals[0]} / ${vals[1]}" | bc)" "$(echo "scale=2; ${vals[0]} / ${vals[2]}" | bc)" "$5"
  if [ -n "${BENCH_SUMMARY:-}" ]; then
    # the targets: >= 1.2x qcow2 (2x for allocating writes), >= 0.9x raw
    tq=1.2; [ "${6:-}" = fresh ] && tq=2
    for ref in 1 2; do
      name=$([ $ref = 1 ] && echo qcow2 || echo raw); t=$([ $ref = 1 ] && echo "$tq" || echo 0.9)
      ratio=$(echo "${vals[0]} ${vals[$ref]}" | awk '{printf "%.2f", $1 / $2}')
      below=$(awk -v r="$ratio" -v t="$t" 'BEGIN { if (r + 1e-9 < t) printf " BELOW" }')
      printf 'RATIO|online (fio on the loop device)|%s vs %s over qemu-storage-daemon|%s %s|%s %s|%sx|>= %sx%s\n' \
        "$1" "$name" "${vals[0]}" "$5" "${vals[$ref]}" "$5" "$ratio" "$t" "$below"
    done
  fi
done
rss() { awk '/^VmHWM/ {printf "%.1f MiB", $2 / 1024}' "/proc/$1/status"; }
echo "peak RSS: imgserve $(rss "$pid_a"), qemu-storage-daemon qcow2 $(rss "$pid_q"), raw $(rss "$pid_r")"
cached() { fincore -b -n -o RES "$1" 2>/dev/null | awk '{printf "%.0f MiB", $1 / 1048576}'; }
echo "host page cache of the image files: libimg $(cached "$W/a.img"), qcow2 $(cached "$W/q.qcow2"), raw $(cached "$W/r.raw")"
"$BIN/imginfo" -U --json "$W/a.img" | jq -r '"libimg image: BAT capacity \(.bat_capacity), metadata \(.metadata_size) bytes"'
