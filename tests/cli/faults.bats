#!/usr/bin/env bats
# The tools under I/O faults: LIBIMG_FAULT=op:N:ERRNO[,sticky][,drop]
# (tests/helpers/fault_env.h) at every call N of mkimg, growimg, shrinkimg, compact,
# imgconvert and imgcheck --repair, and a real full disk (a small tmpfs, as
# root).  Every failure must be clean (exit 1, 8 when out of space: libimg(7);
# one message naming the error, no crash) and leave the image intact: it
# checks without corruption, reads what it held, and the same command
# succeeds once the fault is gone.
# Self-contained (no helpers.bash) so that it skips cleanly without tools.
# The tools are those of $BUILD/faultbin (make tests): the same programs
# linked with the test hook that reads LIBIMG_FAULT; the ones make install
# installs ($BUILD/bin) ignore it, as the library does.

ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
BIN=$BUILD/faultbin
K=1024; M=$((1024 * K))
# Each spec is tried at N = 1, 2, ... until the command passes without
# hitting it.  EIO on any call (reads too), ENOSPC on writes and
# truncates, failures that stay (sticky) and ones that go away.
# flush:...,drop: a failed flush also loses what was written since the last
# successful one (as Linux drops pages whose writeback failed).
SPECS="write:%d:ENOSPC write:%d:ENOSPC,partial write:%d:EIO,sticky flush:%d:EIO
flush:%d:EIO,drop flush:%d:ENOSPC,sticky punch:%d:EIO truncate:%d:ENOSPC any:%d:EIO"
MAX_N=400

setup() {
  local t
  for t in mkimg growimg shrinkimg compact imgconvert imgcheck imginfo imgmap; do
    [ -x "$BIN/$t" ] || skip "tools not built ($BIN/$t missing)"
  done
  command -v jq >/dev/null || skip "jq is needed"
  T=$BATS_TEST_TMPDIR/w
  mkdir -p "$T"
  cd "$T"
  MNT=
}

teardown() {
  cd /
  if [ -n "${MNT:-}" ] && mountpoint -q "$MNT"; then umount "$MNT"; fi
}

# The tools read LIBIMG_FAULT (the test hook is linked in)?
need_fault_injection() {
  if LIBIMG_FAULT=bogus "$BIN/mkimg" -q "$BATS_TEST_TMPDIR/probe.img" 1M 2>/dev/null; then
    die "$BIN/mkimg ignores LIBIMG_FAULT: built without tests/faultbin/fault_on.c?"
  fi
}

# Runs a command; $status, $out, $err (stdout and stderr apart).
run_split() {
  "$@" >"$BATS_TEST_TMPDIR/.out" 2>"$BATS_TEST_TMPDIR/.err" && status=0 || status=$?
  out=$(cat "$BATS_TEST_TMPDIR/.out")
  err=$(cat "$BATS_TEST_TMPDIR/.err")
}

die() { echo "$*" >&2; return 1; }

info() { "$BIN/imginfo" --json "$1" | jq -r ".$2"; }

# A failure is clean: exit 1, a short message that names the error.
clean_failure() { # what
  # libimg(7): an I/O error exits 1, the host out of space 8 (and imgcheck,
  # with qemu-img's statuses, 1 for both)
  case $err in
    *"No space left on device"*) want=8 ;;
    *"Input/output error"*) want=1 ;;
    *) die "$1: the message does not name the error: $err" ;;
  esac
  [[ "$1" == *imgcheck* ]] && want=1
  [ "$status" -eq "$want" ] || die "$1: exit $status, expected $want; stderr: $err"
  case $err in
    *Segmentation*|*Assertion*|*Sanitizer*|*"core dumped"*) die "$1: crashed: $err" ;;
  esac
  [ "$(printf '%s\n' "$err" | wc -l)" -le 3 ] || die "$1: a long message: $err"
}

# intact IMG RAW [SIZES...]: no corruption (imgcheck 0 or 3: leaks only),
# a virtual size among SIZES (default: RAW's size), the contents of RAW
# over the smallest allowed size, and no data past RAW's end.
intact() {
  local img=$1 raw=$2 vs n rc rawsize
  shift 2
  rawsize=$(stat -c %s "$raw")
  "$BIN/imgcheck" -q "$img" >/dev/null 2>&1 && rc=0 || rc=$?
  [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || die "$img: imgcheck exit $rc"
  vs=$(info "$img" virtual_size)
  [ $# -gt 0 ] || set -- "$rawsize"
  case " $* " in *" $vs "*) ;; *) die "$img: virtual size $vs, expected one of $*" ;; esac
  n=$(printf '%s\n' "$@" "$rawsize" | sort -n | head -n1)
  rm -f "$BATS_TEST_TMPDIR/got.raw"
  "$BIN/imgconvert" -q -U -O raw "$img" "$BATS_TEST_TMPDIR/got.raw"
  cmp -n "$n" "$BATS_TEST_TMPDIR/got.raw" "$raw" || die "$img: contents differ"
  rm -f "$BATS_TEST_TMPDIR/got.raw"
  [ "$("$BIN/imgmap" --json "$img" |
       jq "[.[] | select(.data and .start + .length > $rawsize)] | length")" = 0 ] ||
    die "$img: data past $rawsize"
}

# Clean as well: imgcheck exit 0.
clean() { "$BIN/imgcheck" -q "$1" || die "$1: imgcheck exit $?"; }

# fault_loop PREP ONFAIL ONOK CMD...: for each spec and N = 1, 2, ...
# until CMD passes: PREP, CMD under LIBIMG_FAULT, then ONFAIL (after a
# clean failure) or ONOK (and the next spec).
fault_loop() {
  local prep=$1 onfail=$2 onok=$3 spec f n points=0
  shift 3
  for spec in $SPECS; do
    for ((n = 1; n <= MAX_N; n++)); do
      f=$(printf "$spec" "$n")
      "$prep"
      LIBIMG_FAULT=$f run_split "$@"
      if [ "$status" -eq 0 ]; then
        "$onok" || die "LIBIMG_FAULT=$f: passed, but: see above"
        break
      fi
      clean_failure "LIBIMG_FAULT=$f $*"
      "$onfail" || die "LIBIMG_FAULT=$f: after the failure: see above"
      points=$((points + 1))
    done
    [ "$n" -le "$MAX_N" ] || die "$spec: still failing at N=$MAX_N"
  done
  [ "$points" -gt 0 ] || die "no fault point hit"
  echo "# $* : $points fault points" >&3
}

# 3 MiB of data in a 4 MiB disk, 64 KiB clusters.
make_template() {
  dd if=/dev/urandom of=t.raw bs=64K count=48 status=none
  truncate -s 4M t.raw
  "$BIN/imgconvert" -q --cluster-size 64K t.raw t.img
}

# Some data clusters hold only zeros (written on the host), so compact has
# zero clusters to free and tail clusters to move into the holes.
make_compact_template() {
  local off v
  make_template
  off=$("$BIN/imgmap" --json t.img | jq -r '.[0].offset')
  for v in 1 5 9 13 17 21 25 29; do
    dd if=/dev/zero of=t.img bs=64K seek=$((off / (64 * K) + v)) count=1 conv=notrunc status=none
    dd if=/dev/zero of=t.raw bs=64K seek="$v" count=1 conv=notrunc status=none
  done
  intact t.img t.raw
}

@test "LIBIMG_FAULT: a malformed value is refused with a message" {
  need_fault_injection
  LIBIMG_FAULT=write:x:EIO run_split "$BIN/mkimg" a.img 4M
  [ "$status" -eq 1 ]
  [[ $err == *LIBIMG_FAULT* ]]
  [ ! -e a.img ]
}

@test "issue 17: the tools make install installs ignore LIBIMG_FAULT (only \$BUILD/faultbin reads it)" {
  local ibin=$BUILD/bin
  [ -x "$ibin/mkimg" ] || skip "tools not built ($ibin/mkimg missing)"
  LIBIMG_FAULT=write:1:EIO,sticky run_split "$ibin/mkimg" -q a.img 4M
  [ "$status" -eq 0 ] || die "$ibin/mkimg under LIBIMG_FAULT: exit $status: $err"
  LIBIMG_FAULT=bogus run_split "$ibin/growimg" -q a.img 8M
  [ "$status" -eq 0 ] || die "$ibin/growimg under LIBIMG_FAULT=bogus: exit $status: $err"
  [ "$(info a.img virtual_size)" = $((8 * M)) ]
  # and the same programs of faultbin do fail
  LIBIMG_FAULT=write:1:EIO,sticky run_split "$BIN/mkimg" -q b.img 4M
  [ "$status" -eq 1 ] && [ ! -e b.img ]
}

p_mkimg() { rm -f a.img; }
f_mkimg() { [ ! -e a.img ] && [ -z "$(ls -A | grep -v '^t\.')" ] || die "mkimg left $(ls -A)"; }
o_mkimg() { clean a.img && [ "$(info a.img virtual_size)" = $((4 * M)) ]; }

@test "mkimg under faults: nothing left behind" {
  need_fault_injection
  fault_loop p_mkimg f_mkimg o_mkimg "$BIN/mkimg" -q --cluster-size 64K a.img 4M
}

p_copy() { cp t.img a.img; }
f_grow() { intact a.img t.raw $((4 * M)) $((600 * M)); }
o_grow() { clean a.img && intact a.img t.raw $((600 * M)); }

@test "growimg under faults (BAT growth relocates data)" {
  need_fault_injection
  make_template
  fault_loop p_copy f_grow o_grow "$BIN/growimg" -q a.img 600M
}

f_shrink() { intact a.img t.raw $((4 * M)) $((2 * M + 512)); }
o_shrink() { clean a.img && intact a.img t.raw $((2 * M + 512)); }

@test "shrinkimg under faults (data dropped, the tail moved)" {
  need_fault_injection
  make_template
  fault_loop p_copy f_shrink o_shrink "$BIN/shrinkimg" -q --discard-data a.img $((2 * M + 512))
}

f_compact() { intact a.img t.raw; }
o_compact() {
  clean a.img && intact a.img t.raw &&
    [ "$(stat -c %s a.img)" -lt "$(stat -c %s t.img)" ] || die "compact did not shrink the file"
}

@test "compact under faults" {
  need_fault_injection
  make_compact_template
  fault_loop p_copy f_compact o_compact "$BIN/compact" -q a.img
}

p_convert() { rm -f a.img; }
f_convert() { [ -z "$(ls -A | grep -v '^t\.')" ] || die "imgconvert left $(ls -A)"; }
o_convert() { clean a.img && intact a.img t.raw; }

@test "imgconvert under faults: nothing left behind" {
  need_fault_injection
  make_template
  fault_loop p_convert f_convert o_convert "$BIN/imgconvert" -q --cluster-size 64K t.raw a.img
}

p_repair() { cp leaky.img a.img; }
f_repair() { intact a.img t.raw; }
o_repair() { clean a.img && intact a.img t.raw; }

@test "imgcheck --repair under faults" {
  local n rc
  need_fault_injection
  make_compact_template
  # A leaky image: compact stopped by a lasting EIO (left dirty, with
  # copies no entry maps yet).
  for ((n = 1; n <= MAX_N; n++)); do
    cp t.img leaky.img
    LIBIMG_FAULT=write:$n:EIO,sticky "$BIN/compact" -q leaky.img 2>/dev/null && break
    "$BIN/imgcheck" -q leaky.img >/dev/null 2>&1 && rc=0 || rc=$?
    [ "$rc" -eq 3 ] && break
  done
  [ "$rc" -eq 3 ] || skip "no leaky image found"
  intact leaky.img t.raw
  fault_loop p_repair f_repair o_repair "$BIN/imgcheck" -q --repair a.img
}

# ---- a real full disk ---------------------------------------------------

# A tmpfs of SIZE at $T/mnt (root only).
small_fs() {
  [ "$(id -u)" -eq 0 ] || skip "needs root to mount a tmpfs"
  MNT=$T/mnt
  mkdir -p "$MNT"
  mount -t tmpfs -o "size=$1" libimg-full "$MNT" 2>/dev/null || { MNT=; skip "cannot mount a tmpfs"; }
}

# Leaves about FREE bytes free on the tmpfs.
fill_fs() {
  local avail
  rm -f "$MNT/filler"
  avail=$(df -B1 --output=avail "$MNT" | tail -n1)
  if [ "$avail" -gt "$1" ]; then fallocate -l $((avail - $1)) "$MNT/filler"; fi
}

@test "full disk: imgconvert into a full file system fails cleanly, then fits" {
  local free failures=0
  small_fs 16M
  dd if=/dev/urandom of=big.raw bs=1M count=10 status=none
  truncate -s 12M big.raw
  for ((free = 0; free <= 16 * M; free += 1 * M)); do
    fill_fs "$free"
    run_split "$BIN/imgconvert" -q --cluster-size 64K big.raw "$MNT/a.img"
    [ "$status" -eq 0 ] && break
    clean_failure "imgconvert with $free bytes free"
    [[ $err == *"No space left on device"* ]]
    [ -z "$(ls -A "$MNT" | grep -v '^filler$')" ] || die "left behind: $(ls -A "$MNT")"
    failures=$((failures + 1))
  done
  [ "$status" -eq 0 ]
  [ "$failures" -gt 0 ]
  rm -f "$MNT/filler"
  clean "$MNT/a.img"
  intact "$MNT/a.img" big.raw
  echo "# imgconvert: $failures clean ENOSPC failures before it fit" >&3
}

@test "full disk: growimg and compact on a full file system lose nothing" {
  local free failures=0
  small_fs 16M
  make_compact_template
  for op in grow compact; do
    for ((free = 0; free <= 4 * M; free += 64 * K)); do
      rm -f "$MNT/filler" "$MNT/a.img"
      cp t.img "$MNT/a.img"
      fill_fs "$free"
      if [ "$op" = grow ]; then
        run_split "$BIN/growimg" -q "$MNT/a.img" 600M
      else
        run_split "$BIN/compact" -q "$MNT/a.img"
      fi
      if [ "$status" -ne 0 ]; then
        clean_failure "$op with $free bytes free"
        failures=$((failures + 1))
      fi
      rm -f "$MNT/filler"
      if [ "$op" = grow ]; then
        intact "$MNT/a.img" t.raw $((4 * M)) $((600 * M))
      else
        intact "$MNT/a.img" t.raw
      fi
      if [ "$status" -eq 0 ]; then
        clean "$MNT/a.img"
        # Success means the work was done, not given up on quietly.
        if [ "$op" = compact ]; then
          [ "$(stat -c %s "$MNT/a.img")" -lt "$(stat -c %s t.img)" ] ||
            die "compact succeeded with $free bytes free but did not shrink the file"
        fi
        break
      fi
      # Space back: the same command succeeds.
      if [ "$op" = grow ]; then "$BIN/growimg" -q "$MNT/a.img" 600M; else "$BIN/compact" -q "$MNT/a.img"; fi
      clean "$MNT/a.img"
      intact "$MNT/a.img" t.raw $([ "$op" = grow ] && echo $((600 * M)) || stat -c %s t.raw)
    done
    [ "$status" -eq 0 ]
  done
  [ "$failures" -gt 0 ]
  echo "# growimg, compact: $failures clean ENOSPC failures on a full disk" >&3
}
