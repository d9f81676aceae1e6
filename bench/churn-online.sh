#!/usr/bin/env bash
# Does the image's host usage follow the filesystem's used space?  A churn
# workload on an ext4 image mounted with imgmount: ROUNDS rounds of writing
# FILES files (64 KiB .. 4 MiB, random data) into random directories, then
# deleting a random half; sync.  At the end: host usage (st_blocks of the
# image) over df's used space, for imgmount's default (-o discard), for
# -o nodiscard, and for -o nodiscard followed by one fstrim.
# Needs root, /dev/fuse and loop devices.  Environment: ROUNDS (default 10),
# FILES (default 40), SEED (default 1), BUILD.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=$(cd "$BUILD/bin" && pwd)
ROUNDS=${ROUNDS:-10}; FILES=${FILES:-40}; SEED=${SEED:-1}
[ "$(id -u)" -eq 0 ] && [ -c /dev/fuse ] || { echo "churn-online: needs root and /dev/fuse" >&2; exit 0; }
W=$(mktemp -d /var/tmp/churn-online.XXXXXX)
export LIBIMG_RUNDIR=$W/run
trap '"$BIN/imgumount" -q "$W/mnt" 2>/dev/null; rm -rf "$W"' EXIT
mkdir "$W/mnt"

churn() { # mountpoint
  python3 - "$1" "$ROUNDS" "$FILES" "$SEED" <<'PY'
import os, random, sys
mnt, rounds, files, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(seed)
live = []
for r in range(rounds):
    for i in range(files):
        d = os.path.join(mnt, "d%d" % rnd.randrange(8), "e%d" % rnd.randrange(4))
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, "f%d_%d" % (r, i))
        with open(p, "wb") as f:
            f.write(os.urandom(rnd.randrange(64 << 10, 4 << 20)))
        live.append(p)
    rnd.shuffle(live)
    for p in live[: len(live) // 2]:
        os.unlink(p)
    live = live[len(live) // 2:]
    os.sync()
PY
}

printf '%-24s %12s %12s %8s\n' mode "df used" "host usage" ratio
for mode in default nodiscard nodiscard+fstrim; do
  rm -f "$W/a.img"
  "$BIN/mkimg" -q --fs ext4 "$W/a.img" 2G 2>/dev/null || "$BIN/mkimg" --fs ext4 "$W/a.img" 2G >/dev/null
  case $mode in
    default) "$BIN/imgmount" -q "$W/a.img" "$W/mnt" ;;
    *)       "$BIN/imgmount" -q -o nodiscard "$W/a.img" "$W/mnt" ;;
  esac
  churn "$W/mnt"
  sync; sleep 6; sync      # ext4 issues discards when its journal commits
  [ "$mode" = nodiscard+fstrim ] && fstrim "$W/mnt"
  used=$(df -B1 --output=used "$W/mnt" | tail -n1 | tr -d ' ')
  host=$(( $(stat -c %b "$W/a.img") * 512 ))
  printf '%-24s %12d %12d %8s\n' "$mode" "$used" "$host" "$(echo "scale=3; $host / $used" | bc)"
  "$BIN/imgumount" -q "$W/mnt"
done
