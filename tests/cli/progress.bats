#!/usr/bin/env bats
# -p/--progress (issue 16): every long operation shows progress on standard
# error, also when that is a pipe or a file: lines as qemu-img -p prints
# them, "    (12.00/100%)", at most one per whole percent, never decreasing,
# the last "    (100.00/100%)" on success; named steps "    NAME..." between
# them.  Standard output is what it is without -p (with -j: one JSON
# document).  Without -p, or with -q, no progress at all.

load helpers

setup() {
  common_setup
  export LIBIMG_RUNDIR=$BATS_TEST_TMPDIR/run
}

teardown() {
  local d
  for d in "$LIBIMG_RUNDIR"/*/; do
    [ -f "$d/image" ] && "$BIN/imgumount" -q "$(cat "$d/image")" 2>/dev/null || true
  done
  common_teardown
}

need_attach() {
  [ "$(id -u)" -eq 0 ] || skip "resizing a filesystem offline needs root"
  [ -c /dev/fuse ] || skip "needs /dev/fuse"
  [ -c /dev/loop-control ] || skip "needs loop devices"
  command -v resize2fs >/dev/null || skip "e2fsprogs missing"
}

# progress_ok ERRFILE: the file holds progress lines and step lines only
# (and lines starting with "TOOL: " if ALLOW_MESSAGES is set), at least one
# percent line, percents never decreasing, the last one 100.00, no
# carriage return (not drawn for a terminal).
progress_ok() {
  local f=$1
  ! grep -q $'\r' "$f" || { echo "carriage return in $f"; cat -A "$f"; return 1; }
  awk -v allow="${ALLOW_MESSAGES:-}" '
    /^    \([0-9]+\.[0-9][0-9]\/100%\)$/ {
      v = substr($0, 6); sub(/\/100%\)$/, "", v); v += 0
      if (n && v < last) { print "decreasing: " last " then " v; bad = 1 }
      if (n && int(v) == int(last) && v != 100) { print "two lines in one percent: " last ", " v; bad = 1 }
      last = v; n++; next
    }
    /^    [a-z].*\.\.\.$/ { next }
    allow != "" && /^[a-z]+: / { next }
    { print "unexpected line: " $0; bad = 1 }
    END {
      if (!n) { print "no progress line"; bad = 1 }
      else if (last != 100) { print "last progress " last ", not 100"; bad = 1 }
      exit bad
    }' "$f" || { echo "--- $f:"; cat "$f"; return 1; }
}

# no_progress ERRFILE: not a single progress or step line.
no_progress() {
  ! grep -Eq '/100%\)|^    [a-z].*\.\.\.$|\[#' "$1" || { echo "--- $1:"; cat "$1"; return 1; }
}

# split_run OUT ERR TOOL ARGS...: status in $status, stdout and stderr in files.
split_run() {
  local o=$1 e=$2 t=$3
  shift 3
  "$BIN/$t" "$@" >"$o" 2>"$e" && status=0 || status=$?
}

json_ok() { jq -e 'type == "object"' "$1" >/dev/null || { echo "--- $1:"; cat "$1"; return 1; }; }

# d.img: 64K clusters, 32 MiB, data in every other cluster of the first 24
# MiB (192 clusters), a few all-zero clusters written through imgconvert -c
# off (explicit zeros are skipped, so the zeros come from a second pass).
make_data() {
  "$PY" - d.raw <<'PYEOF'
import os, sys
with open(sys.argv[1], "wb") as f:
    f.truncate(32 << 20)
    for i in range(0, 384, 2):
        f.seek(i << 16)
        f.write(os.urandom(65536))
PYEOF
  "$BIN/imgconvert" -q --cluster-size 64K d.raw d.img
}

@test "issue 16 #progress: imgconvert -p prints progress lines to a pipe, ending at 100%" {
  make_data
  split_run out err imgconvert -p d.raw c.img
  [ "$status" -eq 0 ]
  progress_ok err
  ! grep -q '100%' out
  split_run out2 err2 imgconvert -p -F libimg -O raw d.img c.raw
  [ "$status" -eq 0 ]
  progress_ok err2
  cmp d.raw c.raw
  # stdout is what it is without -p
  split_run out3 err3 imgconvert -f d.raw c.img
  [ "$status" -eq 0 ]
  no_progress err3
  [ ! -s err3 ]
  diff out out3
}

@test "issue 16 #progress: compact -p -j: progress on stderr, JSON alone on stdout" {
  make_data
  # a hole at the front for the relocation to fill: clusters 0-63 unmapped
  dd if=/dev/zero of=d.raw bs=64K count=64 conv=notrunc status=none
  "$BIN/imgconvert" -q -f --cluster-size 64K d.raw d.img
  split_run out err compact -p -j --no-fs-trim d.img
  [ "$status" -eq 0 ]
  progress_ok err
  json_ok out
  [ "$(jq -r .filename out)" = d.img ]
  [ "$(grep -c '/100%' err)" -ge 2 ]
  split_run out err compact -j d.img
  [ "$status" -eq 0 ]
  no_progress err
  json_ok out
}

@test "issue 16 #progress: imgcheck -p -j: progress of the check, JSON on stdout" {
  make_data
  split_run out err imgcheck -p -j d.img
  [ "$status" -eq 0 ]
  progress_ok err
  json_ok out
  [ "$(jq -r .status out)" = clean ]
  # the open (metadata read and verified) is a step, then the check's walk
  grep -q '^    reading and verifying the metadata\.\.\.$' err
  [ "$(grep -c '/100%' err)" -ge 3 ]
  split_run out err imgcheck -j d.img
  [ "$status" -eq 0 ]
  no_progress err
  [ ! -s err ]
  # --repair too
  split_run out err imgcheck -p -r d.img
  [ "$status" -eq 0 ]
  progress_ok err
}

@test "issue 16 #progress: growimg -p -j: relocation for a larger BAT measured, JSON on stdout" {
  make_data
  # 64K clusters: 1 TiB needs a BAT far past the first data clusters
  split_run out err growimg -p -j d.img 1T
  [ "$status" -eq 0 ]
  progress_ok err
  json_ok out
  [ "$(jq -r .new_size out)" = $((1024 * G)) ]
  "$BIN/imgconvert" -q -O raw d.img back.raw
  cmp -n $((32 * M)) d.raw back.raw
  split_run out err growimg -j d.img +1G
  [ "$status" -eq 0 ]
  no_progress err
}

@test "issue 16 #progress: shrinkimg -p -j: the packing of the host file measured, JSON on stdout" {
  make_data
  split_run out err shrinkimg -p -j --discard-data d.img 8M
  [ "$status" -eq 0 ]
  progress_ok err
  json_ok out
  [ "$(jq -r .new_size out)" = $((8 * M)) ]
  split_run out err shrinkimg -j --discard-data d.img 4M
  [ "$status" -eq 0 ]
  no_progress err
}

@test "issue 16 #progress: mkimg -p --fs ext4 --from DIR: a step, then the copy measured" {
  command -v mke2fs >/dev/null || skip "e2fsprogs missing"
  mkdir src
  head -c $((3 * M)) /dev/urandom > src/a
  head -c $((2 * M)) /dev/urandom > src/b
  split_run out err mkimg -p --fs ext4 --from src e.img 64M
  [ "$status" -eq 0 ]
  progress_ok err
  grep -q '^    making the ext4 filesystem (mke2fs' err
  grep -q '^Created e.img' out
  ! grep -q '100%' out
  split_run out err mkimg -p plain.img 1G
  [ "$status" -eq 0 ]
  progress_ok err
  split_run out err mkimg --fs ext4 --from src e2.img 64M
  [ "$status" -eq 0 ]
  no_progress err
}

@test "issue 16 #progress: imgsnap merge -p, rebase -p, flatten -p" {
  make_data
  # d.img becomes a delta over its snapshot, merged back
  "$BIN/imgsnap" -q create d.img
  split_run out err imgsnap -p merge d.img
  [ "$status" -eq 0 ]
  progress_ok err
  ! grep -q '100%' out
  # rebase onto a copy and flatten
  "$BIN/imgconvert" -q --cluster-size 64K d.raw base.img
  "$BIN/mkimg" -q --backing base.img over.img
  cp base.img base2.img
  split_run out err imgsnap -p rebase over.img base2.img
  [ "$status" -eq 0 ]
  progress_ok err
  split_run out err imgsnap -p flatten over.img
  [ "$status" -eq 0 ]
  progress_ok err
  "$BIN/imgconvert" -q -O raw over.img over.raw
  cmp d.raw over.raw
  # without -p: nothing
  "$BIN/mkimg" -q --backing base.img over2.img
  split_run out err imgsnap flatten over2.img
  [ "$status" -eq 0 ]
  no_progress err
}

@test "issue 16 #progress: -p with -q shows no progress" {
  make_data
  split_run out err imgconvert -p -q d.raw q.img
  [ "$status" -eq 0 ]
  [ ! -s err ] && [ ! -s out ]
  split_run out err compact -p -q d.img
  [ "$status" -eq 0 ]
  [ ! -s err ] && [ ! -s out ]
  split_run out err imgcheck -p -q d.img
  [ "$status" -eq 0 ]
  no_progress err
  split_run out err growimg -p -q d.img 1T
  [ "$status" -eq 0 ]
  [ ! -s err ] && [ ! -s out ]
  split_run out err shrinkimg -p -q --discard-data d.img 16M
  [ "$status" -eq 0 ]
  [ ! -s err ] && [ ! -s out ]
  split_run out err mkimg -p -q m.img 1G
  [ "$status" -eq 0 ]
  [ ! -s err ] && [ ! -s out ]
}

@test "issue 16 #progress: a failed operation does not print 100%" {
  make_data
  hold_lock d.img
  split_run out err compact -p d.img
  [ "$status" -eq 75 ]
  ! grep -q '(100.00/100%)' err
  split_run out err growimg -p d.img 1T
  [ "$status" -eq 75 ]
  ! grep -q '(100.00/100%)' err
}

@test "issue 16 #progress: growimg and shrinkimg -p name each filesystem step (ext4)" {
  need_attach
  "$BIN/mkimg" -q --fs ext4 f.img 256M
  split_run out err shrinkimg -p -j f.img 128M
  [ "$status" -eq 0 ]
  progress_ok err
  json_ok out
  grep -q '^    checking the ext4 filesystem (e2fsck' err
  grep -q '^    shrinking the ext4 filesystem (e2fsck -f, resize2fs)\.\.\.$' err
  grep -q '^    shrinking the image\.\.\.$' err
  split_run out err growimg -p -j f.img 300M
  [ "$status" -eq 0 ]
  progress_ok err
  json_ok out
  grep -q '^    growing the ext4 filesystem (resize2fs)\.\.\.$' err
  [ "$(jq -r .filesystem_grown out)" = true ]
  [ -z "$(ls -A "$LIBIMG_RUNDIR" 2>/dev/null)" ]
}
