# Shared by tests/online/*.bats: the tools, a temporary directory and run
# directory per test, the skip rule (root, /dev/fuse, loop devices), and a
# teardown that leaves no mount, loop device or daemon behind whatever
# happened in the test.

ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
BIN=$BUILD/bin
K=1024; M=$((1024 * K)); G=$((1024 * M))

online_setup() {
  [ "$(id -u)" -eq 0 ] || skip "online tests need root"
  [ -c /dev/fuse ] || skip "online tests need /dev/fuse"
  [ -c /dev/loop-control ] || skip "online tests need loop devices (/dev/loop-control)"
  local t
  for t in imgserve imgattach imgdetach imgmount imgumount mkimg imgcheck imginfo; do
    [ -x "$BIN/$t" ] || { echo "missing $BIN/$t: run make first" >&2; return 1; }
  done
  T=$BATS_TEST_TMPDIR/w
  mkdir -p "$T"
  cd "$T"
  export LIBIMG_RUNDIR=$BATS_TEST_TMPDIR/run
  PATH=$BIN:$PATH
  BG_PIDS=()
}

# Undo everything under this test's run directory, gently first.
online_teardown() {
  local d p
  for p in "${BG_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -d "${LIBIMG_RUNDIR:-/nonexistent}" ]; then
    for d in "$LIBIMG_RUNDIR"/*/; do
      [ -d "$d" ] || continue
      [ -f "$d/image" ] && "$BIN/imgumount" -q "$(cat "$d/image")" 2>/dev/null || true
      [ -f "$d/mountpoint" ] && umount -l "$(cat "$d/mountpoint")" 2>/dev/null || true
      [ -f "$d/loop" ] && losetup -d "$(cat "$d/loop")" 2>/dev/null || true
      [ -f "$d/pid" ] && kill -9 "$(cat "$d/pid")" 2>/dev/null || true
      [ -f "$d/export" ] && umount -l "$(cat "$d/export")" 2>/dev/null || true
      for p in "$d"/disk "$d"/disk.*; do umount -l "$p" 2>/dev/null || true; done
    done
  fi
  # mounts of this test that the run directory does not know about
  grep -o " ${BATS_TEST_TMPDIR}[^ ]*" /proc/mounts 2>/dev/null | while read -r p; do
    umount -l "$p" 2>/dev/null || true
  done
  cd /
}

# Nothing of this test is mounted, attached or running any more.
assert_nothing_left() {
  ! grep -q "$BATS_TEST_TMPDIR" /proc/mounts || { grep "$BATS_TEST_TMPDIR" /proc/mounts; return 1; }
  ! losetup -a | grep -q "$BATS_TEST_TMPDIR" || { losetup -a; return 1; }
  ! pgrep -f "imgserve.*$BATS_TEST_TMPDIR" >/dev/null || { pgrep -af imgserve; return 1; }
  [ -z "$(ls -A "$LIBIMG_RUNDIR" 2>/dev/null)" ] || { ls -lR "$LIBIMG_RUNDIR"; return 1; }
}

host_usage() { echo $(( $(stat -c %b "$1") * 512 )); }
file_size() { stat -c %s "$1"; }

# The run directory of the (only) served image.
rundir() { ls -d "$LIBIMG_RUNDIR"/*/ | head -n1 | sed 's,/$,,'; }
daemon_pid() { cat "$(rundir)/pid"; }

# ctl CMD: one line to the daemon's control socket, the answer on stdout.
ctl() {
  python3 - "$(rundir)/ctl" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall((sys.argv[2] + "\n").encode())
data = b""
while not data.endswith(b"\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
PY
}

# Keeps stdout and stderr apart: sets $status, $out, $err.
run_split() {
  local t=$1; shift
  "$BIN/$t" "$@" >"$BATS_TEST_TMPDIR/.out" 2>"$BATS_TEST_TMPDIR/.err" && status=0 || status=$?
  out=$(cat "$BATS_TEST_TMPDIR/.out")
  err=$(cat "$BATS_TEST_TMPDIR/.err")
  output=$out
}
