#!/usr/bin/env bats
# Issue 18, pool view: imgctl pool [DIR...] sums the images of a directory
# (found by their magic, opened read-only without lock nor backing chain;
# nothing else counted, symlinks and FIFOs never followed nor opened),
# shows the host's free space and the overcommit ratio, and warns when the
# host could not absorb the images' growth (--strict: exit 8).

load helpers

setup() { common_setup; }
teardown() {
  local d
  for d in "${LIBIMG_RUNDIR:-/nonexistent}"/*/; do
    [ -f "$d/image" ] && "$BIN/imgdetach" -q "$(cat "$d/image")" 2>/dev/null || true
  done
  common_teardown
}

# pj EXPR: the python expression over the pool document p (the first pool)
pj() { "$PY" -c "import json,sys; d=json.load(sys.stdin); p=d['pools'][0]; print($1)"; }

@test "issue 18 pool: counts the images of a directory by their magic, skips the rest (FIFO, symlinks, other files, a broken image) and sums them" {
  mkdir pool other
  "$BIN/mkimg" -q pool/a.img 1G
  "$BIN/mkimg" -q pool/b.img 3G
  "$BIN/mkimg" -q other/outside.img 7G
  printf 'hello' > pool/notes.txt
  : > pool/empty
  mkfifo pool/fifo
  ln -s ../other/outside.img pool/link-out.img
  ln -s a.img pool/link-in.img
  head -c 8192 pool/b.img > pool/broken.img
  dd if=/dev/urandom of=pool/data bs=4k count=8 oflag=append conv=notrunc status=none
  dd if=/dev/urandom of=x bs=1M count=3 status=none
  "$BIN/imgconvert" -q x pool/c.img
  run timeout 20 "$BIN/imgctl" -j pool pool
  [ "$status" -eq 0 ]
  echo "$output"
  [ "$(echo "$output" | pj 'p["image_count"], p["unreadable"], sorted(i["name"] for i in p["images"])')" = "3 1 ['a.img', 'b.img', 'c.img']" ]
  [ "$(echo "$output" | pj 'p["virtual_size"]')" -eq $((4 * G + 3 * M)) ]
  [ "$(echo "$output" | pj 'p["data"] >= 3 * 1024 * 1024 and p["disk_usage"] >= 3 * 1024 * 1024')" = True ]
  [ "$(echo "$output" | pj 'p["growth"] == sum(i["virtual_size"] - i["data"] for i in p["images"])')" = True ]
  [ "$(echo "$output" | pj 'p["overcommit_percent"] == round(p["virtual_size"] * 100 / (p["disk_usage"] + p["host_free"]))')" = True ]
  [ "$(echo "$output" | pj 'p["absorbs_growth"], p["directory"] == "'"$T"'/pool"')" = "True True" ]
  # the text form
  run timeout 20 "$BIN/imgctl" pool pool
  [ "$status" -eq 0 ]
  [[ "$output" == *"images:               3"* ]]
  [[ "$output" == *"unreadable:           1"* ]]
  [[ "$output" == *"virtual size:         4 GiB"* ]]
  [[ "$output" =~ overcommit:\ +[0-9]+\.[0-9][0-9] ]]
  [[ "$output" != *warning* ]]
}

@test "issue 18 pool: warns when the host could not absorb the images' growth; --strict exits 8 (JSON still printed)" {
  mkdir pool
  free=$(df -B1 --output=avail . | tail -n1 | tr -d ' ')
  "$BIN/mkimg" -q pool/big.img $(( (free / M + 1024) * M ))
  run "$BIN/imgctl" pool pool
  [ "$status" -eq 0 ]
  [[ "$output" == *"warning: $T/pool: the host cannot absorb the images' growth"* ]]
  run "$BIN/imgctl" --strict -j pool pool
  [ "$status" -eq 8 ]
  [ "$(echo "$output" | grep -v warning | pj 'p["absorbs_growth"], p["growth"] > p["host_free"]')" = "False True" ]
  "$BIN/mkimg" -q small.img 1M
  run "$BIN/imgctl" --strict pool .
  [ "$status" -eq 0 ]
  [[ "$output" != *warning* ]]
}

@test "issue 18 pool: several directories, a missing one (exit 5), --strict elsewhere is a usage error" {
  mkdir p1 p2
  "$BIN/mkimg" -q p1/a.img 1G
  "$BIN/mkimg" -q --backing p1/a.img p2/clone.img 2>/dev/null ||
    "$BIN/mkimg" -q --allow-backing-path --backing "$T/p1/a.img" p2/clone.img
  run "$BIN/imgctl" -j pool p1 p2
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | "$PY" -c 'import json,sys; print([(p["image_count"], [i["delta"] for i in p["images"]]) for p in json.load(sys.stdin)["pools"]])')" = "[(1, [False]), (1, [True])]" ]
  run "$BIN/imgctl" pool p1 nothere
  [ "$status" -eq 5 ]
  [[ "$output" == *"nothere: No such file or directory"* ]]
  run "$BIN/imgctl" pool p1/a.img
  [ "$status" -eq 1 ]
  run "$BIN/imgctl" --strict list
  [ "$status" -eq 2 ]
}

@test "issue 18 pool: without DIR, the directories of the served images (a served image is read without its lock)" {
  [ "$(id -u)" -eq 0 ] && [ -c /dev/fuse ] && [ -c /dev/loop-control ] ||
    skip "needs root, /dev/fuse and loop devices"
  export LIBIMG_RUNDIR=$BATS_TEST_TMPDIR/run
  run "$BIN/imgctl" -j pool
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["pools"])')" = "[]" ]
  mkdir pool
  "$BIN/mkimg" -q pool/a.img 64M
  "$BIN/mkimg" -q pool/b.img 64M
  dev=$("$BIN/imgattach" pool/a.img)
  dd if=/dev/urandom of="$dev" bs=1M count=4 oflag=direct status=none
  run "$BIN/imgctl" -j pool
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | pj 'p["directory"] == "'"$T"'/pool", p["image_count"], [i["data"] >= 4 << 20 for i in p["images"] if i["name"] == "a.img"]')" = "True 2 [True]" ]
  "$BIN/imgdetach" -q pool/a.img
}
