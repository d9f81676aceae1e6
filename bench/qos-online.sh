#!/usr/bin/env bash
# QoS per export (imgserve(1), QOS): fio on the loop devices of two
# exports of the same host, direct I/O.
#   iops     export A limited to LIMIT_IOPS write requests a second
#            (imgattach --iops-write): 4K randwrite QD16; measured / limit
#   bw       A's limit changed at runtime (imgctl qos) to LIMIT_BPS bytes
#            a second of writes: 1M sequential write QD4; measured / limit
#   neighbour  export B, unlimited: 4K randwrite QD16 alone, then the same
#            while A saturates its limit (4K randwrite QD16 at LIMIT_IOPS);
#            B's IOPS beside A / B's IOPS alone (target >= 0.5)
# Each job runs RUNTIME seconds after RAMP seconds not counted (the burst
# of the bucket goes in the ramp), REPEAT rounds; the medians are printed,
# and RATIO lines for bench/run.sh's table.  The first SIZE of each disk
# is written before the jobs (the jobs overwrite it).
# Needs root, /dev/fuse, loop devices, fio and jq.
# Environment: RUNTIME (12), RAMP (2), REPEAT (3), SIZE (256M),
# LIMIT_IOPS (500), LIMIT_BPS (20M), DIR (a new directory under /var/tmp),
# BUILD.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=$(cd "$BUILD/bin" && pwd)
RUNTIME=${RUNTIME:-12}
RAMP=${RAMP:-2}
REPEAT=${REPEAT:-3}
SIZE=${SIZE:-256M}
LIMIT_IOPS=${LIMIT_IOPS:-500}
LIMIT_BPS=${LIMIT_BPS:-20M}

for c in fio jq losetup; do
  command -v $c >/dev/null || { echo "qos-online: $c is missing" >&2; echo "qos-online: skipped" >&2; exit 0; }
done
[ "$(id -u)" -eq 0 ] && [ -c /dev/fuse ] || { echo "qos-online: needs root and /dev/fuse" >&2; echo "qos-online: skipped" >&2; exit 0; }

W=${DIR:-$(mktemp -d /var/tmp/qos-online.XXXXXX)}
mkdir -p "$W"
export LIBIMG_RUNDIR=$W/run
cleanup() {
  set +e
  "$BIN/imgdetach" -q "$W/a.img" 2>/dev/null
  "$BIN/imgdetach" -q "$W/b.img" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT

bps_limit=$(numfmt --from=iec "${LIMIT_BPS%B}")
"$BIN/mkimg" -q "$W/a.img" 4G
"$BIN/mkimg" -q "$W/b.img" 4G
dev_b=$("$BIN/imgattach" "$W/b.img")
dev_a=$("$BIN/imgattach" "$W/a.img")
for d in "$dev_a" "$dev_b"; do
  fio --name=fill --filename="$d" --rw=write --bs=1M --iodepth=8 --ioengine=libaio \
      --direct=1 --size="$SIZE" --output-format=terse >/dev/null
done
"$BIN/imgctl" -q qos "$W/a.img" --iops-write="$LIMIT_IOPS"

# fio_job DEV RW BS QD: prints "IOPS BYTES_PER_SECOND" of the writes
fio_job() {
  fio --name=j --filename="$1" --rw="$2" --bs="$3" --iodepth="$4" --ioengine=libaio \
      --direct=1 --size="$SIZE" --time_based --runtime="$RUNTIME" --ramp_time="$RAMP" \
      --randrepeat=0 --output-format=json |
    jq -r '.jobs[0].write | "\(.iops) \(.bw_bytes)"'
}
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

iops=() bw=() solo=() beside=() a_beside=()
for r in $(seq "$REPEAT"); do
  "$BIN/imgctl" -q qos "$W/a.img" --iops-write="$LIMIT_IOPS" --bps-write=0
  read -r i _ < <(fio_job "$dev_a" randwrite 4k 16); iops+=("$i")
  "$BIN/imgctl" -q qos "$W/a.img" --iops-write=0 --bps-write="$bps_limit"
  read -r _ b < <(fio_job "$dev_a" write 1M 4); bw+=("$b")
  "$BIN/imgctl" -q qos "$W/a.img" --iops-write="$LIMIT_IOPS" --bps-write=0
  read -r s _ < <(fio_job "$dev_b" randwrite 4k 16); solo+=("$s")
  fio_job "$dev_a" randwrite 4k 16 >"$W/a.out" &
  read -r s _ < <(fio_job "$dev_b" randwrite 4k 16); beside+=("$s")
  wait
  read -r i _ <"$W/a.out"; a_beside+=("$i")
  printf 'round %d: A iops %.0f (limit %d), A bw %.1f MiB/s (limit %.1f), B alone %.0f IOPS, B beside A %.0f IOPS (A %.0f)\n' \
    "$r" "${iops[-1]}" "$LIMIT_IOPS" "$(echo "${bw[-1]} / 1048576" | bc -l)" \
    "$(echo "$bps_limit / 1048576" | bc -l)" "${solo[-1]}" "${beside[-1]}" "${a_beside[-1]}"
done
m_iops=$(printf '%s\n' "${iops[@]}" | median)
m_bw=$(printf '%s\n' "${bw[@]}" | median)
m_solo=$(printf '%s\n' "${solo[@]}" | median)
m_beside=$(printf '%s\n' "${beside[@]}" | median)
m_a=$(printf '%s\n' "${a_beside[@]}" | median)
r_iops=$(echo "$m_iops / $LIMIT_IOPS" | bc -l)
r_bw=$(echo "$m_bw / $bps_limit" | bc -l)
r_nb=$(echo "$m_beside / $m_solo" | bc -l)
echo
printf 'median of %d rounds (%s s each after %s s ramp):\n' "$REPEAT" "$RUNTIME" "$RAMP"
printf '  IOPS limit %d: %.0f IOPS, ratio %.3f (target 0.90..1.10)\n' "$LIMIT_IOPS" "$m_iops" "$r_iops"
printf '  bandwidth limit %.1f MiB/s: %.2f MiB/s, ratio %.3f (target 0.90..1.10)\n' \
  "$(echo "$bps_limit / 1048576" | bc -l)" "$(echo "$m_bw / 1048576" | bc -l)" "$r_bw"
printf '  unlimited neighbour: %.0f IOPS alone, %.0f beside the limited export at its limit (%.0f IOPS), ratio %.3f (target >= 0.5)\n' \
  "$m_solo" "$m_beside" "$m_a" "$r_nb"
printf 'RATIO|online QoS (fio, loop device, direct)|4K randwrite QD16 under --iops-write=%d|%.0f IOPS|%d IOPS|%.3fx|0.90..1.10x\n' \
  "$LIMIT_IOPS" "$m_iops" "$LIMIT_IOPS" "$r_iops"
printf 'RATIO|online QoS (fio, loop device, direct)|1M write QD4 under --bps-write=%s|%.2f MiB/s|%.2f MiB/s|%.3fx|0.90..1.10x\n' \
  "$LIMIT_BPS" "$(echo "$m_bw / 1048576" | bc -l)" "$(echo "$bps_limit / 1048576" | bc -l)" "$r_bw"
printf 'RATIO|online QoS (fio, loop device, direct)|unlimited export beside a saturated limited one|%.0f IOPS|%.0f IOPS alone|%.3fx|>= 0.5x\n' \
  "$m_beside" "$m_solo" "$r_nb"
