#!/usr/bin/env bash
# The main job, end to end, on a small image: thin provisioning, discard,
# grow, shrink, compaction, check, and a round trip to raw.  Prints the host
# sizes at every step.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
dir=$(mktemp -d /var/tmp/libimg-demo.XXXXXX)
trap 'rm -rf "$dir"' EXIT
img=$dir/disk.img

sizes() { # label
  local j; j=$("$BIN/imginfo" --json "$img")
  printf '  %-44s virtual %5d MiB | allocated %4d MiB | file %4d MiB | on disk %4d MiB\n' "$1" \
    $(( $(jq .virtual_size <<<"$j") >> 20 )) $(( $(jq .allocated_bytes <<<"$j") >> 20 )) \
    $(( $(jq .file_size <<<"$j") >> 20 )) $(( $(jq .disk_usage <<<"$j") >> 20 ))
}
step() { printf '\n== %s\n' "$*"; }

step "A raw disk with 64 MiB of data, holes and a zero run (256 MiB)"
truncate -s 256M "$dir/source.raw"
dd if=/dev/urandom of="$dir/source.raw" bs=1M count=32 conv=notrunc status=none
dd if=/dev/urandom of="$dir/source.raw" bs=1M count=32 seek=200 conv=notrunc status=none
dd if=/dev/zero of="$dir/source.raw" bs=1M count=16 seek=100 conv=notrunc status=none
echo "  source.raw: $(du -m --apparent-size "$dir/source.raw" | cut -f1) MiB apparent, $(du -m "$dir/source.raw" | cut -f1) MiB on disk"

step "imgconvert: raw -> libimg (holes and zero runs are skipped)"
"$BIN/imgconvert" "$dir/source.raw" "$img"
sizes "after convert"
"$BIN/imgmap" "$img"

step "An empty 1 TiB image costs almost nothing"
"$BIN/mkimg" "$dir/big.img" 1T
echo "  big.img: $(du -k "$dir/big.img" | cut -f1) KiB on disk for 1 TiB virtual"

step "growimg: +768 MiB (the BAT has room: only the header changes)"
"$BIN/growimg" "$img" +768M
sizes "after grow"

step "New data at the end, the first 32 MiB zeroed (edited through a raw copy)"
dd if=/dev/urandom of="$dir/chunk" bs=1M count=32 status=none
"$BIN/imgconvert" -O raw "$img" "$dir/tmp.raw"
dd if="$dir/chunk" of="$dir/tmp.raw" bs=1M seek=$((1024 - 32)) conv=notrunc status=none
dd if=/dev/zero of="$dir/tmp.raw" bs=1M count=32 conv=notrunc status=none
rm -f "$img"
"$BIN/imgconvert" "$dir/tmp.raw" "$img"
sizes "rewritten with new data at the end"

step "shrinkimg refuses to drop data ..."
if "$BIN/shrinkimg" "$img" 512M; then echo "  (unexpected)"; exit 1; fi
step "... and drops it when asked (--discard-data)"
"$BIN/shrinkimg" --discard-data "$img" 512M
sizes "after shrink to 512 MiB"

step "compact: zero clusters freed, live clusters packed, file truncated"
"$BIN/compact" "$img"
sizes "after compact"

step "imgcheck"
"$BIN/imgcheck" "$img"

step "Round trip: libimg -> raw equals the source's first 512 MiB"
"$BIN/imgconvert" -O raw "$img" "$dir/back.raw"
head -c 512M "$dir/tmp.raw" > "$dir/expect.raw"
cmp "$dir/back.raw" "$dir/expect.raw" && echo "  identical"
echo
echo "demo: done"
