# Shared by tests/cli/*.bats: paths to the tools, a temporary directory per
# test, test data, and helpers that need a little knowledge of the format
# (tests may know FORMAT.md; the tools may not).

ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
BIN=$BUILD/bin
TOOLS="mkimg imginfo imgmap imgcheck growimg shrinkimg compact imgconvert imgsnap
       imgserve imgattach imgdetach imgmount imgumount imgctl"
PY=$(command -v python3 || true)
K=1024; M=$((1024 * K)); G=$((1024 * M))

common_setup() {
  local t
  for t in $TOOLS; do
    [ -x "$BIN/$t" ] || { echo "missing $BIN/$t: run make first" >&2; return 1; }
  done
  # BATS_TEST_TMPDIR is per test and removed by bats afterwards.
  T=$BATS_TEST_TMPDIR/w
  mkdir -p "$T"
  cd "$T"
  HOLDER_PID=
  PUBDIR=
}

common_teardown() {
  if [ -n "${PUBDIR:-}" ]; then rm -rf "$PUBDIR"; fi
  if [ -n "${HOLDER_PID:-}" ]; then
    kill "$HOLDER_PID" 2>/dev/null || true
  fi
  cd /
}

# run_tool TOOL ARGS...: bats' run on a built tool ($status, $output).
run_tool() {
  local t=$1; shift
  run "$BIN/$t" "$@"
}

# Keeps stdout and stderr apart: sets $status, $out, $err.
run_split() {
  local t=$1; shift
  "$BIN/$t" "$@" >"$BATS_TEST_TMPDIR/.out" 2>"$BATS_TEST_TMPDIR/.err" && status=0 || status=$?
  out=$(cat "$BATS_TEST_TMPDIR/.out")
  err=$(cat "$BATS_TEST_TMPDIR/.err")
  output=$out
}

# jget FILTER: jq on the JSON in $output (stdout only, after run_split).
jget() { printf '%s\n' "$output" | jq -r "$1"; }

# info FILE KEY: one key of imginfo --json.
info() { "$BIN/imginfo" --json "$1" | jq -r ".$2"; }

# A raw file of 16 MiB with data, explicit zeros (allocated on the host) and
# holes, at boundaries that are not cluster aligned:
#   [0, 100K)            random data
#   [100K, 3100K)        zeros, allocated on the host
#   [3100K, 5M+13)       hole
#   [5M+13, 5M+790)      random data (777 bytes)
#   [5M+790, 9M)         hole
#   [9M, 10.5M)          random data
#   [10.5M, 16M)         hole
make_raw() {
  local f=$1
  rm -f "$f"
  dd if=/dev/urandom of="$f" bs=1K count=100 status=none
  dd if=/dev/zero of="$f" bs=1K count=3000 seek=100 conv=notrunc status=none
  dd if=/dev/urandom of="$f" bs=1 count=777 seek=$((5 * M + 13)) conv=notrunc status=none
  dd if=/dev/urandom of="$f" bs=512K count=3 seek=18 conv=notrunc status=none
  truncate -s 16M "$f"
}

host_usage() { echo $(( $(stat -c %b "$1") * 512 )); }
file_size() { stat -c %s "$1"; }

# hold_lock FILE [shared]: another process takes an exclusive OFD lock on
# the whole file, as a libimg writer does (FORMAT.md section 7), or with
# "shared" a shared one, as every delta opened over a base holds on it, and
# keeps it until the test ends.  Sets HOLDER_PID to that process.
hold_lock() {
  local f=$1 ready=$BATS_TEST_TMPDIR/.locked i
  [ -n "$PY" ] || skip "python3 is needed to hold an OFD lock"
  rm -f "$ready"
  "$PY" - "$f" "$ready" "${2:-exclusive}" >/dev/null 2>&1 3>&- <<'PYEOF' &
import fcntl, os, struct, sys, time
shared = sys.argv[3] == "shared"
fd = os.open(sys.argv[1], os.O_RDONLY if shared else os.O_RDWR)
# struct flock on Linux x86_64/aarch64: l_type, l_whence (short), l_start,
# l_len (off_t), l_pid (pid_t, must be 0 for OFD locks), padding.
fl = struct.pack("hhqqi4x", fcntl.F_RDLCK if shared else fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
fcntl.fcntl(fd, 37, fl)   # F_OFD_SETLK
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
time.sleep(600)
PYEOF
  HOLDER_PID=$!
  for i in $(seq 200); do
    [ -s "$ready" ] && break
    sleep 0.05
  done
  [ -s "$ready" ] || { echo "lock holder did not start" >&2; return 1; }
  HOLDER_PID=$(cat "$ready")
}

# poke FILE ACTION [ARG]: change an image behind libimg's back (FORMAT.md
# layout, crc32c fixed): tests/helpers/poke.py lists the actions
# (set-incompat, set-dirty, own-snapshot, drop-owner, newer-incompat,
# newer-version, seq N, corrupt-bat, bad-entries N).
poke() {
  [ -n "$PY" ] || skip "python3 is needed to edit an image"
  "$PY" "$ROOT/tests/helpers/poke.py" "$@"
}

# A directory that an unprivileged user can reach (the per-test directory
# of bats is private).  Removed by common_teardown.
public_dir() {
  PUBDIR=$(mktemp -d /tmp/libimg-cli.XXXXXX)
  chmod 755 "$PUBDIR"
}

# run_unprivileged TOOL ARGS...: runs the tool as "nobody" when we are root
# (root ignores file modes), as ourselves otherwise.  Sets $status/$output.
run_unprivileged() {
  local t=$1; shift
  if [ "$(id -u)" -eq 0 ]; then
    command -v setpriv >/dev/null || skip "setpriv is needed to drop root"
    run setpriv --reuid=65534 --regid=65534 --clear-groups -- "$BIN/$t" "$@"
  else
    run "$BIN/$t" "$@"
  fi
}

# to_raw IMG RAW: the image's contents as a raw file (through imgconvert).
to_raw() { "$BIN/imgconvert" -q -F libimg -O raw "$1" "$2"; }

# write_at IMG DATAFILE OFFSET: write a file's bytes into an image at a
# virtual offset through libimg (ctypes on the built shared library); no
# tool writes at an offset (the online export does).
write_at() {
  [ -n "$PY" ] || skip "python3 is needed to write through libimg"
  "$PY" - "$BUILD/lib/libimg.so" "$@" <<'PYEOF'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.img_last_error.restype = ctypes.c_char_p
lib.img_pwrite.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
lib.img_pwrite.restype = ctypes.c_ssize_t
lib.img_close.argtypes = [ctypes.c_void_p]
h = ctypes.c_void_p()
if lib.img_open(sys.argv[2].encode(), 1, ctypes.byref(h)):
    sys.exit("open: " + lib.img_last_error().decode())
data = open(sys.argv[3], "rb").read()
if lib.img_pwrite(h, data, len(data), int(sys.argv[4])) != len(data):
    sys.exit("write: " + lib.img_last_error().decode())
if lib.img_close(h):
    sys.exit("close: " + lib.img_last_error().decode())
PYEOF
}
