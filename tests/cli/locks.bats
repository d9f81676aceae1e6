#!/usr/bin/env bats
# Replacing a file (mkimg -f, imgconvert -f): the target's lock is taken
# first, only regular files are replaced, a clone is never made over the
# file it replaces; every refusal changes nothing (issue 14 #2, issue 15 #8).

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

# snapshot_dir: the names, types and checksums of what is in the directory
snapshot_dir() {
  local f
  for f in $(ls -A | sort); do
    if [ -f "$f" ] && [ ! -L "$f" ]; then
      echo "$f $(stat -c '%F %a %s' "$f") $(sha256sum < "$f")"
    else
      echo "$f $(stat -c '%F %a' "$f")"
    fi
  done
}

@test "issue 14 #2: mkimg -f refuses an image that is served (locked), exit 75 naming the holder, nothing changed" {
  "$BIN/mkimg" -q a.img 16M
  hold_lock a.img
  before=$(snapshot_dir)
  run_split mkimg -f a.img 32M
  [ "$status" -eq 75 ] || { echo "$status: $err"; false; }
  [[ "$err" == *"a.img"*"in use"*"process $HOLDER_PID"* ]] || { echo "$err"; false; }
  [ "$(snapshot_dir)" = "$before" ]
  # the filesystem variant claims the name before running mkfs
  if command -v mke2fs >/dev/null; then
    run_split mkimg -f --fs ext4 a.img 32M
    [ "$status" -eq 75 ] || { echo "$status: $err"; false; }
    [[ "$err" == *"a.img"*"process $HOLDER_PID"* ]]
    [ "$(snapshot_dir)" = "$before" ]
  fi
  kill "$HOLDER_PID"; wait 2>/dev/null || true
  HOLDER_PID=
  for i in $(seq 50); do kill -0 "$(cat "$BATS_TEST_TMPDIR/.locked")" 2>/dev/null || break; sleep 0.05; done
  # once nobody holds it, --force replaces it
  run_split mkimg -f a.img 32M
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [ "$(info a.img virtual_size)" -eq $((32 * M)) ]
}

@test "issue 14 #2: imgconvert -f refuses a target that is served (locked), exit 75, nothing changed" {
  make_raw src.raw
  "$BIN/mkimg" -q a.img 16M
  hold_lock a.img
  before=$(snapshot_dir)
  run_split imgconvert -f src.raw a.img
  [ "$status" -eq 75 ] || { echo "$status: $err"; false; }
  [[ "$err" == *"a.img"*"in use"*"process $HOLDER_PID"* ]] || { echo "$err"; false; }
  [ "$(snapshot_dir)" = "$before" ]
  run_split imgconvert -f -O raw src.raw a.img
  [ "$status" -eq 75 ]
  [ "$(snapshot_dir)" = "$before" ]
}

@test "issue 14 #2: mkimg -f and imgconvert -f refuse the base of an open clone (its shared lock), nothing changed" {
  make_raw src.raw
  "$BIN/mkimg" -q base.img 16M
  "$BIN/mkimg" -q --backing base.img ct.img
  hold_lock base.img shared
  before=$(snapshot_dir)
  run_split mkimg -f base.img 16M
  [ "$status" -eq 75 ] || { echo "$status: $err"; false; }
  [[ "$err" == *"base.img"*"in use"*"process $HOLDER_PID"* ]] || { echo "$err"; false; }
  run_split imgconvert -f src.raw base.img
  [ "$status" -eq 75 ] || { echo "$status: $err"; false; }
  [[ "$err" == *"base.img"*"process $HOLDER_PID"* ]]
  [ "$(snapshot_dir)" = "$before" ]
  kill "$HOLDER_PID"; HOLDER_PID=
  "$BIN/imgcheck" ct.img
}

@test "issue 15 #8: mkimg -f --backing X X is refused, X unchanged" {
  "$BIN/mkimg" -q x.img 16M
  ln x.img hard.img
  ln -s x.img sym.img
  before=$(snapshot_dir)
  run_split mkimg -f --backing x.img x.img
  [ "$status" -eq 1 ]
  [[ "$err" == *"x.img"*"backing file 'x.img' is this file itself"* ]] || { echo "$err"; false; }
  [ "$(snapshot_dir)" = "$before" ]
  # the same file under another name, or the same name spelled otherwise
  run_split mkimg -f --backing hard.img x.img
  [ "$status" -eq 1 ]; [[ "$err" == *"is this file itself"* ]]
  run_split mkimg -f --backing sym.img x.img
  [ "$status" -eq 1 ]; [[ "$err" == *"is this file itself"* ]]
  run_split mkimg -f --backing ./x.img x.img
  [ "$status" -eq 1 ]; [[ "$err" == *"is this file itself"* ]]
  [ "$(snapshot_dir)" = "$before" ]
  # or further down the chain
  "$BIN/mkimg" -q --backing x.img c.img
  before=$(snapshot_dir)
  run_split mkimg -f --backing c.img x.img
  [ "$status" -eq 1 ]; [[ "$err" == *"x.img"*"loops back"* ]]
  [ "$(snapshot_dir)" = "$before" ]
  "$BIN/imgcheck" x.img
  "$BIN/imgcheck" c.img
}

@test "issue 15 #8: mkimg -f and imgconvert -f replace only regular files (FIFO, device, symlink, directory refused without blocking)" {
  make_raw src.raw
  "$BIN/mkimg" -q a.img 16M
  mkfifo fifo
  ln -s a.img link.img
  mkdir dir
  if [ "$(id -u)" -eq 0 ]; then mknod null c 1 3; fi
  before=$(snapshot_dir)
  for t in fifo link.img dir $([ -e null ] && echo null); do
    run timeout 10 "$BIN/mkimg" -f "$t" 1M
    [ "$status" -eq 1 ] || { echo "mkimg $t: $status $output"; false; }
    [[ "$output" == *"$t: "*"not a regular file"* ]] || { echo "$output"; false; }
    run timeout 10 "$BIN/imgconvert" -f src.raw "$t"
    [ "$status" -eq 1 ] || { echo "imgconvert $t: $status $output"; false; }
    [[ "$output" == *"$t: "*"not a regular file"* ]] || { echo "$output"; false; }
    if command -v mke2fs >/dev/null; then
      run timeout 10 "$BIN/mkimg" -f --fs ext4 "$t" 16M
      [ "$status" -eq 1 ] || { echo "mkimg --fs $t: $status $output"; false; }
    fi
  done
  [ "$(snapshot_dir)" = "$before" ]
  [ -p fifo ] && [ -L link.img ] && [ -d dir ]
}

@test "issue 15 #8: imgconvert -f (even with -U) never replaces an image of the source's own backing chain" {
  "$BIN/mkimg" -q base.img 8M
  "$BIN/mkimg" -q --backing base.img ct1.img
  "$BIN/mkimg" -q --backing base.img ct2.img
  b0=$(sha256sum < base.img)
  for u in "" -U; do
    run "$BIN/imgconvert" $u -F libimg -f ct1.img base.img
    echo "$u: $status: $output"
    [ "$status" -eq 1 ]
    [[ "$output" == *"base.img"*"backing chain of the source ct1.img"* ]]
    [ "$(sha256sum < base.img)" = "$b0" ]
  done
  "$BIN/imgcheck" -q ct2.img
}
