#!/usr/bin/env bash
# How cost grows with the image: time and peak memory (RSS) of open
# (imginfo), check (imgcheck) and compact, on sparse images of 1 GiB,
# 64 GiB and 1 TiB virtual size holding the same DATA_MIB of data, and on a
# 64 GiB image holding 8x that data.  The data is DATA_MIB chunks of 1 MiB
# of random bytes spread evenly over the disk (so the BAT is touched from
# end to end), converted from a sparse raw file with imgconvert (so compact
# reads every cluster for zero detection, and has nothing to move: the
# scan is what grows).  The last column divides each time by
# (allocated data + BAT) in MiB, the BAT being 8 bytes per virtual cluster:
# flat or falling means growth no worse than linear in allocated data plus
# BAT size.
#
# Environment: DATA_MIB (default 64), DIR (work directory, default a new
# one under BENCH_DIR or /var/tmp), BUILD.  Needs GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=$(cd "$BUILD/bin" && pwd)
DATA_MIB=${DATA_MIB:-64}
[ -x /usr/bin/time ] || { echo "scale: /usr/bin/time is missing (scripts/deps.sh)" >&2; echo "scale: skipped"; exit 0; }
W=${DIR:-$(mktemp -d "${BENCH_DIR:-/var/tmp}/scale.XXXXXX")}
mkdir -p "$W"
trap 'rm -rf "$W"' EXIT

# measure NAME CMD...: "seconds max_rss_kib" of one run (stdout dropped)
measure() {
  /usr/bin/time -f '%e %M' -o "$W/time" "$@" >/dev/null 2>"$W/err" || {
    echo "scale: $* failed: $(head -c 300 "$W/err")" >&2; exit 1; }
  cat "$W/time"
}

printf '%-8s %8s %10s %9s | %9s %8s | %9s %8s | %9s %8s | %s\n' size data_mib clusters bat_mib \
  open_ms rss_mib check_ms rss_mib compact_ms rss_mib "ms per MiB of data+BAT (open/check/compact)"
row() { # SIZE BYTES DATA_MIB
  local size=$1 bytes=$2 data=$3 stride i raw=$W/src.raw img=$W/a.img
  stride=$(( bytes / data / 1048576 ))            # MiB between chunks
  rm -f "$raw" "$img"
  truncate -s "$size" "$raw"
  for ((i = 0; i < data; i++)); do
    dd if=/dev/urandom of="$raw" bs=1M count=1 seek=$(( i * stride )) conv=notrunc status=none
  done
  "$BIN/imgconvert" -q "$raw" "$img"
  rm -f "$raw"
  local info bat bat_mib open check compact
  info=$("$BIN/imginfo" --json "$img")
  bat=$(echo "$info" | jq '(.virtual_size + .cluster_size - 1) / .cluster_size | floor')
  bat_mib=$(echo "scale=2; $bat * 8 / 1048576" | bc)
  open=$(measure "$BIN/imginfo" --json "$img")
  check=$(measure "$BIN/imgcheck" "$img")
  compact=$(measure "$BIN/compact" "$img")
  set -- $open $check $compact
  local unit; unit=$(echo "scale=4; $data + $bat_mib" | bc)
  printf '%-8s %8s %10s %9s | %9.0f %8.1f | %9.0f %8.1f | %9.0f %8.1f | %.2f / %.2f / %.2f\n' \
    "$size" "$data" "$bat" "$bat_mib" \
    "$(echo "$1 * 1000" | bc)" "$(echo "scale=1; $2 / 1024" | bc)" \
    "$(echo "$3 * 1000" | bc)" "$(echo "scale=1; $4 / 1024" | bc)" \
    "$(echo "$5 * 1000" | bc)" "$(echo "scale=1; $6 / 1024" | bc)" \
    "$(echo "scale=4; $1 * 1000 / $unit" | bc)" "$(echo "scale=4; $3 * 1000 / $unit" | bc)" \
    "$(echo "scale=4; $5 * 1000 / $unit" | bc)"
  echo "RATIO|scale|open / check / compact, $size, $data MiB data|$(echo "$1*1000" | bc | cut -d. -f1) / $(echo "$3*1000" | bc | cut -d. -f1) / $(echo "$5*1000" | bc | cut -d. -f1) ms|-|-|linear in data + BAT"
  rm -f "$img"
}
row 1G $((1 << 30)) "$DATA_MIB"
row 64G $((64 << 30)) "$DATA_MIB"
row 1T $((1 << 40)) "$DATA_MIB"
row 64G $((64 << 30)) $((DATA_MIB * 8))
