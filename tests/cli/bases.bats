#!/usr/bin/env bats
# Shared bases are protected (issue 14 #3 #3b, issue 15 #11): a merge consumes
# only the image's own snapshot (its bit confirmed by the snapshot's recorded
# owner) unless the base is named, templates and
# read-only bases are never written, flatten leaves the base alone, and a
# refusal changes no byte, name or mode.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

# base.img (8 MiB of random data) and two clones, ct1 with its own bytes.
make_clones() {
  head -c $((8 * M)) /dev/urandom > base.raw
  "$BIN/imgconvert" -q base.raw base.img
  "$BIN/mkimg" -q --backing base.img ct1.img
  "$BIN/mkimg" -q --backing base.img ct2.img
  printf 'clone one' > own1
  write_at ct1.img own1 70000
}

# d.img (4 MiB) with 'before' at 0, snapshot d.img.snap1 of it, then
# 'after' at 100000 in the new top.
make_snapshot() {
  "$BIN/mkimg" -q d.img 4M
  printf 'before' > x0; write_at d.img x0 0
  "$BIN/imgsnap" -q create d.img
  printf 'after' > x1; write_at d.img x1 100000
}

# d.img.snap1 made writable and merged into by name, then a fresh snapshot
# merged without naming it: d.img reads d.raw all along.
merge_named_then_own() {
  chmod 0644 d.img.snap1
  "$BIN/imgsnap" -q merge --into d.img.snap1 d.img
  [ ! -e d.img.snap1 ]
  to_raw d.img out.raw
  cmp out.raw d.raw
  "$BIN/imgsnap" -q create d.img
  "$BIN/imgsnap" -q merge d.img
  [ ! -e d.img.snap1 ]
  to_raw d.img out2.raw
  cmp out2.raw d.raw
}

sum() { sha256sum "$1" | cut -d' ' -f1; }
mode() { stat -c %a "$1"; }

@test "issue 14 #3: imgsnap merge of a clone refuses to consume its shared read-only base" {
  make_clones
  chmod 0444 base.img
  b0=$(sum base.img); c0=$(sum ct1.img)
  ls -a > ../before
  run_tool imgsnap merge ct1.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"ct1.img"*"base.img"*"not its own snapshot"* ]]
  # nothing changed: bytes, modes, names
  [ "$(sum base.img)" = "$b0" ]
  [ "$(sum ct1.img)" = "$c0" ]
  [ "$(mode base.img)" = 444 ]
  ls -a > ../after; diff ../before ../after
  # the other clone still reads the base
  to_raw ct2.img ct2.raw
  cmp ct2.raw base.raw
  # naming the base does not write a read-only one either
  run_tool imgsnap merge --into base.img ct1.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"read-only (mode 0444)"* ]]
  [ "$(sum base.img)" = "$b0" ]
  [ "$(mode base.img)" = 444 ]
  # a name that is not the clone's base is refused
  "$BIN/mkimg" -q other.img 8M
  run_tool imgsnap merge --into other.img ct1.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"is not its backing file"* ]]
  [ "$(sum ct1.img)" = "$c0" ]
  run_tool imgsnap merge --into base.img ct1.img --name x
  [ "$status" -eq 2 ]
}

@test "issue 14 #3: merge --into BASE merges a clone into the base it names" {
  make_clones
  to_raw ct1.img ct1.raw
  "$BIN/imgsnap" -q merge --into ./base.img ct1.img
  [ ! -e base.img ]
  [ "$(info ct1.img backing)" = null ]
  to_raw ct1.img out.raw
  cmp out.raw ct1.raw
  run_tool imgcheck -q ct1.img
  [ "$status" -eq 0 ]
}

@test "issue 14 #3: imgsnap flatten makes a clone standalone and leaves its base alone" {
  make_clones
  chmod 0444 base.img
  b0=$(sum base.img)
  to_raw ct1.img ct1.raw
  run_tool imgsnap flatten ct1.img
  [ "$status" -eq 0 ]
  [ "$(info ct1.img backing)" = null ]
  to_raw ct1.img out.raw
  cmp out.raw ct1.raw
  [ "$(sum base.img)" = "$b0" ]
  [ "$(mode base.img)" = 444 ]
  # it reads the same without its base
  mv base.img gone.img
  to_raw ct1.img out2.raw
  cmp out2.raw ct1.raw
  mv gone.img base.img
  run_tool imgsnap flatten ct1.img
  [ "$status" -eq 0 ]
  [[ "$output" == *"already standalone"* ]]
}

@test "issue 14 #3: a template is never written by any tool; template --clear undoes the mark" {
  make_clones
  # a read-only file is not written, not even to mark it
  chmod 0444 base.img
  b0=$(sum base.img)
  run_tool imgsnap template base.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"read-only (mode 0444)"* ]]
  [ "$(sum base.img)" = "$b0" ]
  chmod 0644 base.img
  "$BIN/imgsnap" -q template base.img
  run_split imgsnap list --json ct1.img
  [ "$(jget '.[1].template')" = true ]
  b0=$(sum base.img)
  # clones still read and write over it
  to_raw ct2.img ct2.raw
  cmp ct2.raw base.raw
  write_at ct2.img own1 4096
  # every writer refuses it, even when named
  run_tool imgsnap merge --into base.img ct1.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"template"* ]]
  run_tool growimg base.img 16M
  [ "$status" -ne 0 ]
  [[ "$output" == *"template"* ]]
  run_tool compact base.img
  [ "$status" -ne 0 ]
  run_tool imgsnap create base.img
  [ "$status" -ne 0 ]
  [ ! -e base.img.snap1 ]
  run_tool imgsnap rebase base.img ""
  [ "$status" -ne 0 ]
  run_tool imgcheck -r all base.img
  [ "$status" -ne 0 ]
  [ "$(sum base.img)" = "$b0" ]
  # the mark is in the header: a refused clear (in use) changes nothing
  hold_lock base.img
  run_tool imgsnap template --clear base.img
  [ "$status" -eq 75 ]
  kill "$HOLDER_PID"; wait "$HOLDER_PID" 2>/dev/null || true; HOLDER_PID=
  [ "$(sum base.img)" = "$b0" ]
  "$BIN/imgsnap" -q template --clear base.img
  run_split imgsnap list --json ct1.img
  [ "$(jget '.[1].template')" = false ]
  "$BIN/growimg" -q base.img 16M
  [ "$(info base.img virtual_size)" = $((16 * M)) ]
}

@test "issue 14 #3: merge still consumes the image's own snapshot; a rebase makes it a base like any other" {
  make_snapshot
  to_raw d.img d.raw
  # after an unsafe rebase onto the same file the mark is gone: refused
  "$BIN/imgsnap" -q rebase -u d.img d.img.snap1
  run_tool imgsnap merge d.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"not its own snapshot"* ]]
  [ "$(mode d.img.snap1)" = 444 ]
  # named, it is merged (its own snapshot's read-only mode is expected);
  # a fresh snapshot is merged without naming it
  merge_named_then_own
}

@test "issue 15 #11: a refused merge leaves the read-only snapshot's mode and bytes unchanged" {
  make_snapshot
  [ "$(mode d.img.snap1)" = 444 ]
  s0=$(sum d.img.snap1); d0=$(sum d.img)
  # refused: another image over the snapshot is open (a shared lock: the
  # top still opens, the snapshot cannot be opened for writing)
  hold_lock d.img.snap1 shared
  run_tool imgsnap merge d.img
  [ "$status" -ne 0 ]
  [[ "$output" == *"in use"* ]]
  kill "$HOLDER_PID"; wait "$HOLDER_PID" 2>/dev/null || true; HOLDER_PID=
  [ "$(mode d.img.snap1)" = 444 ]
  [ "$(sum d.img.snap1)" = "$s0" ]
  [ "$(sum d.img)" = "$d0" ]
  [ "$status" -eq 75 ]
  # refused: the snapshot was replaced by another image (uuid differs)
  mv d.img.snap1 keep.img
  "$BIN/mkimg" -q d.img.snap1 4M
  chmod 0444 d.img.snap1
  r0=$(sum d.img.snap1)
  run_tool imgsnap merge d.img
  [ "$status" -eq 4 ]   # the chain is not the one it was made over (libimg(7))
  [[ "$output" == *"uuid differs"* ]]
  [ "$(mode d.img.snap1)" = 444 ]
  [ "$(sum d.img.snap1)" = "$r0" ]
  [ "$(sum d.img)" = "$d0" ]
}

@test "issue 15 #11: an unprivileged owner merges into the read-only snapshot; refused, it stays read-only" {
  public_dir
  cd "$PUBDIR"
  make_snapshot
  to_raw d.img d.raw
  m0=$(mode d.img)
  chown -R 65534:65534 "$PUBDIR"
  hold_lock d.img.snap1 shared
  run_unprivileged imgsnap merge d.img
  [ "$status" -ne 0 ]
  [ "$(mode d.img.snap1)" = 444 ]
  [ "$status" -eq 75 ]
  kill "$HOLDER_PID"; wait "$HOLDER_PID" 2>/dev/null || true; HOLDER_PID=
  run_unprivileged imgsnap merge d.img
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [ ! -e d.img.snap1 ]
  [ "$(mode d.img)" = "$m0" ]
  to_raw d.img out.raw
  cmp out.raw d.raw
}

@test "issue 14 #3: mkimg -f and imgconvert -f never replace a template or a read-only base" {
  make_clones
  head -c $M /dev/urandom > other.raw
  "$BIN/imgsnap" -q template base.img
  b0=$(sum base.img)
  ls -a > ../before
  run_tool mkimg -f base.img 16M
  [ "$status" -eq 1 ]
  [[ "$output" == *"base.img"*"template"*"not replaced"* ]] || { echo "$output"; false; }
  run_tool imgconvert -f other.raw base.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"base.img"*"template"* ]] || { echo "$output"; false; }
  [ "$(sum base.img)" = "$b0" ]
  ls -a > ../after
  diff ../before ../after
  # a base made read-only by its mode, image or not
  "$BIN/imgsnap" -q template --clear base.img
  chmod 0444 base.img
  b0=$(sum base.img)
  run_tool mkimg -f base.img 16M
  [ "$status" -eq 1 ]
  [[ "$output" == *"base.img"*"read-only (mode 0444)"* ]] || { echo "$output"; false; }
  run_tool imgconvert -f other.raw base.img
  [ "$status" -eq 1 ]
  [ "$(sum base.img)" = "$b0" ]
  [ "$(mode base.img)" = 444 ]
  "$BIN/imgcheck" -q ct2.img
  # writable again: replacing it is the user's explicit choice
  chmod 0644 base.img
  "$BIN/mkimg" -q -f base.img 16M
}

@test "issue 15 #1: imgsnap merge refuses a base whose name is a symbolic link in the same directory" {
  "$BIN/mkimg" -q real.img 8M
  ln -s real.img base.img
  "$BIN/mkimg" -q --backing base.img ct.img
  r0=$(sum real.img); c0=$(sum ct.img); m0=$(mode real.img)
  ls -la > ../before
  run_tool imgsnap merge --into base.img ct.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"base.img"*"symbolic link"* ]] || { echo "$output"; false; }
  [ "$(sum real.img)" = "$r0" ]
  [ "$(sum ct.img)" = "$c0" ]
  [ "$(mode real.img)" = "$m0" ]
  [ -L base.img ]
  ls -la > ../after
  diff ../before ../after
}

@test "issue 14 #3: as root, no tool writes a snapshot or base whose mode has no write bit" {
  head -c $((8 * M)) /dev/urandom > d.raw
  "$BIN/imgconvert" -q d.raw d.img
  "$BIN/imgsnap" -q create d.img
  "$BIN/mkimg" -q other.img 8M
  [ "$(mode d.img.snap1)" = 444 ]
  s0=$(sum d.img.snap1)
  for cmd in "shrinkimg --discard-data d.img.snap1 4M" "growimg d.img.snap1 16M" \
             "compact d.img.snap1" "imgcheck -r d.img.snap1" \
             "imgsnap rebase -u d.img.snap1 other.img" "imgsnap rebase d.img.snap1 other.img" \
             "imgsnap template d.img.snap1"; do
    run_tool $cmd
    echo "$cmd: $status: $output"
    [ "$status" -eq 1 ]
    [[ "$output" == *"d.img.snap1"*"read-only"* ]]
    [ "$(sum d.img.snap1)" = "$s0" ]
  done
  "$BIN/imgconvert" -q -F libimg -O raw d.img back.raw
  cmp d.raw back.raw
  # a read-only clone is not flattened either
  "$BIN/mkimg" -q --backing other.img ro-clone.img
  chmod 0444 ro-clone.img
  r0=$(sum ro-clone.img)
  run_tool imgsnap flatten ro-clone.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"ro-clone.img"*"read-only (mode 0444)"* ]]
  [ "$(sum ro-clone.img)" = "$r0" ]
  # the image's own merge still consumes it (and gives it the image's mode)
  "$BIN/imgsnap" -q merge d.img
  "$BIN/imgconvert" -q -f -O raw d.img back.raw
  cmp d.raw back.raw
}

@test "issue 14: a refused imgsnap rebase leaves the image byte for byte as it was (loop, refused reference, missing file)" {
  "$BIN/mkimg" -q base.img 8M
  "$BIN/mkimg" -q --backing base.img ct1.img
  "$BIN/mkimg" -q --backing ct1.img ct2.img
  c0=$(sum ct1.img)
  for args in "-u ct1.img /etc/passwd" "ct1.img ../x.img" "-u ct1.img ct2.img" "ct1.img ct2.img" \
              "ct1.img missing.img" "-u ct1.img ct1.img"; do
    run_tool imgsnap rebase $args
    echo "$args: $status: $output"
    want=1; [[ "$args" == *missing* ]] && want=5   # not found (libimg(7))
    [ "$status" -eq $want ]
    [ "$(sum ct1.img)" = "$c0" ]
  done
  # an accepted one still works
  "$BIN/imgsnap" -q rebase ct1.img ""
  "$BIN/imgcheck" -q ct2.img
}

@test "issue 14, issue 16 newuser: imgsnap flatten of a standalone image is a no-op (0) that does not touch it" {
  "$BIN/mkimg" -q s.img 8M
  s0=$(sum s.img)
  run_tool imgsnap flatten s.img
  [ "$status" -eq 0 ]
  [[ "$output" == *"s.img"*"already standalone"* ]]
  [ "$(sum s.img)" = "$s0" ]
  run_split imgsnap flatten -j s.img
  [ "$status" -eq 0 ]
  [ "$(jget .command)" = flatten ] && [ "$(jget .backing)" = null ]
  [ "$(sum s.img)" = "$s0" ]
}

@test "issue 14 #3b: a forged OWN_SNAPSHOT bit on a clone over a read-only shared base: merge refused, nothing changed" {
  make_clones
  poke ct1.img own-snapshot
  chmod 0444 base.img
  b0=$(sum base.img); c0=$(sum ct1.img); c2=$(sum ct2.img)
  ls -la --time-style=+ > ../before
  run_tool imgsnap merge ct1.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"ct1.img"*"base.img"*"records no owner"* ]]
  # named, the read-only base is not written either
  run_tool imgsnap merge --into base.img ct1.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"read-only (mode 0444)"* ]]
  [ "$(sum base.img)" = "$b0" ]
  [ "$(sum ct1.img)" = "$c0" ]
  [ "$(sum ct2.img)" = "$c2" ]
  [ "$(mode base.img)" = 444 ]
  ls -la --time-style=+ > ../after; diff ../before ../after
  to_raw ct2.img ct2.raw
  cmp ct2.raw base.raw
}

@test "issue 14 #3b: a clone made with mkimg --backing X.snap1, its bit forged: merge refused; X's own merge still works" {
  make_snapshot
  to_raw d.img d.raw
  "$BIN/mkimg" -q --backing d.img.snap1 x.img
  printf 'clone' > x2; write_at x.img x2 200000
  poke x.img own-snapshot
  s0=$(sum d.img.snap1); x0s=$(sum x.img)
  run_tool imgsnap merge x.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"x.img"*"d.img.snap1"*"own snapshot of another image"* ]]
  [ "$(sum d.img.snap1)" = "$s0" ]
  [ "$(sum x.img)" = "$x0s" ]
  [ "$(mode d.img.snap1)" = 444 ]
  [ -e d.img.snap1 ] && [ -e x.img ]
  # the snapshot's own top still merges it, without naming it
  rm x.img
  "$BIN/imgsnap" -q merge d.img
  [ ! -e d.img.snap1 ]
  [ "$(info d.img backing)" = null ]
  to_raw d.img out.raw
  cmp out.raw d.raw
}

@test "issue 14 #3b: a snapshot from before owners were recorded: merge refused until named (and made writable)" {
  make_snapshot
  to_raw d.img d.raw
  chmod u+w d.img.snap1; poke d.img.snap1 drop-owner; chmod 0444 d.img.snap1
  run_tool imgcheck -q d.img.snap1
  [ "$status" -eq 0 ]
  s0=$(sum d.img.snap1); d0=$(sum d.img)
  run_tool imgsnap merge d.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"d.img.snap1 records no owner"*"name it"* ]]
  run_tool imgsnap merge --into d.img.snap1 d.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"read-only (mode 0444)"* ]]
  [ "$(sum d.img.snap1)" = "$s0" ]
  [ "$(sum d.img)" = "$d0" ]
  [ "$(mode d.img.snap1)" = 444 ]
  # named (and writable), merged; a new snapshot records its owner again
  merge_named_then_own
}

@test "issue 14 #3b: imgsnap merge of a snapshot that has a top over it is refused; the chain keeps opening" {
  make_snapshot
  "$BIN/imgsnap" -q create d.img
  to_raw d.img d.raw
  s1=$(sum d.img.snap1); s2=$(sum d.img.snap2); d0=$(sum d.img)
  # d.img.snap2 records its top as owner and has the mark itself: only
  # its read-only mode says that d.img lies over it
  run_tool imgsnap merge d.img.snap2
  [ "$status" -eq 1 ]
  [[ "$output" == *"d.img.snap2"*"read-only (mode 0444)"*"refused"* ]]
  [ "$(sum d.img.snap1)" = "$s1" ] && [ "$(sum d.img.snap2)" = "$s2" ] && [ "$(sum d.img)" = "$d0" ]
  [ "$(mode d.img.snap1)" = 444 ] && [ "$(mode d.img.snap2)" = 444 ]
  to_raw d.img out.raw
  cmp out.raw d.raw
  run_tool imgcheck -q d.img
  [ "$status" -eq 0 ]
}

@test "issue 14 #3c: imgsnap merge leaves the merged image without an owner field (an older libimg opens it again)" {
  make_snapshot
  to_raw d.img d.raw
  [ "$(info d.img.snap1 incompat_features)" = 4 ]
  "$BIN/imgsnap" -q merge d.img
  [ ! -e d.img.snap1 ]
  [ "$(info d.img incompat_features)" = 0 ]
  # a deeper chain: the merged image keeps its backing, not the owner
  "$BIN/imgsnap" -q create d.img
  "$BIN/imgsnap" -q create d.img
  "$BIN/imgsnap" -q merge d.img
  [ "$(info d.img incompat_features)" = 1 ]
  [ "$(info d.img backing)" = d.img.snap1 ]
  # create, create, merge, merge: the second merge works
  "$BIN/imgsnap" -q merge d.img
  [ "$(info d.img incompat_features)" = 0 ]
  [ ! -e d.img.snap1 ] && [ ! -e d.img.snap2 ]
  # create, merge, create, merge
  "$BIN/imgsnap" -q create d.img
  "$BIN/imgsnap" -q merge d.img
  "$BIN/imgsnap" -q create d.img
  "$BIN/imgsnap" -q merge d.img
  [ "$(info d.img incompat_features)" = 0 ]
  to_raw d.img out.raw
  cmp out.raw d.raw
  run_tool imgcheck -q d.img
  [ "$status" -eq 0 ]
}

@test "issue 14 #3c: imgsnap merge of a snapshot made writable (a top over it) is refused; the chain keeps opening" {
  make_snapshot
  "$BIN/imgsnap" -q create d.img
  to_raw d.img d.raw
  chmod u+w d.img.snap2
  s1=$(sum d.img.snap1); s2=$(sum d.img.snap2); d0=$(sum d.img)
  run_tool imgsnap merge d.img.snap2
  [ "$status" -eq 1 ]
  [[ "$output" == *"d.img.snap2"*"snapshot of another image"*"merge the image at the top"* ]]
  chmod u+w d.img.snap1
  run_tool imgsnap merge --into d.img.snap1 d.img.snap2
  [ "$status" -eq 1 ]
  [[ "$output" == *"snapshot of another image"* ]]
  chmod 0444 d.img.snap1
  [ "$(sum d.img.snap1)" = "$s1" ] && [ "$(sum d.img.snap2)" = "$s2" ] && [ "$(sum d.img)" = "$d0" ]
  [ "$(mode d.img.snap1)" = 444 ] && [ "$(mode d.img.snap2)" = 644 ]
  to_raw d.img out.raw
  cmp out.raw d.raw
  # the top's merges still consume both snapshots
  "$BIN/imgsnap" -q merge d.img
  "$BIN/imgsnap" -q merge d.img
  [ ! -e d.img.snap1 ] && [ ! -e d.img.snap2 ]
  [ "$(info d.img incompat_features)" = 0 ]
  to_raw d.img out2.raw
  cmp out2.raw d.raw
}
