#!/usr/bin/env bats
# Thin clones: mkimg --backing, imginfo's backing keys and --backing-chain,
# reads through the chain, refusals of hostile references, imgconvert
# flattening a chain.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

# A 8 MiB template with a known pattern.
make_template() {
  head -c $((8 * M)) /dev/urandom > tmpl.raw
  "$BIN/imgconvert" -q tmpl.raw tmpl.img
}

@test "50 clones of a template: each reads its own data over the template's; the template never changes" {
  make_template
  sum0=$(sha256sum tmpl.img | cut -d' ' -f1)
  for i in $(seq 1 50); do
    "$BIN/mkimg" -q --backing tmpl.img "c$i.img"
  done
  for i in $(seq 1 50); do
    # 4 KiB of the clone's own bytes at a clone-specific offset (inside a
    # cluster: copy-on-write of the rest)
    printf 'clone %04d %*s' "$i" 4085 x | head -c 4096 > "own$i"
    off=$(( (i * 37) % 2000 ))
    "$BIN/imgconvert" -q -F libimg -O raw "c$i.img" "c$i.raw"
    cmp "c$i.raw" tmpl.raw
    dd if="own$i" of="c$i.raw" bs=4096 seek=$off conv=notrunc status=none
    # write through the library: imgconvert raw -> image would flatten, so
    # use a tiny helper: write_at (below)
    write_at "c$i.img" "own$i" $((off * 4096))
  done
  for i in $(seq 1 50); do
    "$BIN/imgconvert" -q -F libimg -O raw "c$i.img" "out$i.raw"
    cmp "out$i.raw" "c$i.raw"
    run_tool imgcheck -q "c$i.img"
    [ "$status" -eq 0 ]
  done
  [ "$(sha256sum tmpl.img | cut -d' ' -f1)" = "$sum0" ]
  # a clone costs its metadata, not the template's data
  used=$(du -k c1.img | cut -f1)
  [ "$used" -lt 2048 ]
}

@test "imginfo: backing key, depth and --backing-chain" {
  make_template
  "$BIN/mkimg" -q --backing tmpl.img mid.img
  "$BIN/mkimg" -q --backing mid.img top.img 16M
  run_split imginfo --json top.img
  [ "$status" -eq 0 ]
  [ "$(jget .backing)" = mid.img ]
  [ "$(jget .backing_depth)" = 2 ]
  [ "$(jget .virtual_size)" = $((16 * M)) ]
  run_split imginfo --json --backing-chain top.img
  [ "$status" -eq 0 ]
  [ "$(printf '%s' "$out" | jq length)" = 3 ]
  [ "$(printf '%s' "$out" | jq -r '.[2].backing')" = null ]
  [ "$(printf '%s' "$out" | jq -r '.[1].backing')" = tmpl.img ]
  run_tool imginfo top.img
  [[ "$output" == *"backing file: mid.img (chain depth 2)"* ]]
  # past the template's size the clone reads zeros
  "$BIN/imgconvert" -q -F libimg -O raw top.img top.raw
  [ "$(file_size top.raw)" = $((16 * M)) ]
  head -c $((8 * M)) top.raw | cmp - tmpl.raw
  tail -c $((8 * M)) top.raw | cmp - <(head -c $((8 * M)) /dev/zero)
}

@test "imgconvert flattens a chain into one standalone image" {
  make_template
  "$BIN/mkimg" -q --backing tmpl.img top.img
  printf 'top data' > d
  write_at top.img d 12345
  "$BIN/imgconvert" -q -F libimg top.img flat.img
  run_split imginfo --json flat.img
  [ "$(jget .backing)" = null ]
  "$BIN/imgconvert" -q -O raw flat.img flat.raw
  "$BIN/imgconvert" -q -F libimg -O raw top.img top.raw
  cmp flat.raw top.raw
}

@test "hostile references are refused with a message naming them" {
  make_template
  mkdir sub
  # absolute, to another directory (one in FILE's own directory is stored
  # as its name: mkimg(1))
  run_tool mkimg --backing "$PWD/tmpl.img" sub/abs.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"absolute path: refused"* ]]
  [ ! -e sub/abs.img ]
  run_tool mkimg --backing ../tmpl.img sub/up.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"'..'"* ]]
  "$BIN/mkimg" -q --allow-backing-path --backing ../tmpl.img sub/up.img
  run_tool imginfo sub/up.img
  [ "$status" -eq 4 ]   # described alone; its chain refused (issue 14 #7)
  [[ "$output" == *"sub/up.img"*"climbs out"* ]]
  run_tool imginfo --allow-backing-path sub/up.img
  [ "$status" -eq 0 ]
  # a missing backing file
  "$BIN/mkimg" -q --backing tmpl.img lost.img
  mv tmpl.img moved.img
  run_tool imginfo lost.img
  [ "$status" -eq 4 ]
  [[ "$output" == *"tmpl.img"* ]]
}

@test "mkimg --backing: bad base and bad combinations" {
  run_tool mkimg --backing nothere.img x.img
  [ "$status" -eq 5 ]
  [[ "$output" == *"nothere.img"* ]]
  [ ! -e x.img ]
  head -c 1M /dev/zero > raw.bin
  run_tool mkimg --backing raw.bin x.img
  [ "$status" -eq 3 ]
  [ ! -e x.img ]
  run_tool mkimg --backing raw.bin --fs ext4 x.img
  [ "$status" -eq 2 ]
}

@test "imgsnap create/list/merge round trip: the name stays, the data stays, imgcheck clean" {
  head -c 4M /dev/urandom > a.raw
  "$BIN/imgconvert" -q --cluster-size 64K a.raw d.img
  run_split imgsnap create --json d.img
  [ "$status" -eq 0 ]
  [ "$(jget .snapshot)" = d.img.snap1 ]
  [ ! -w d.img.snap1 ] || [ "$(id -u)" -eq 0 ]
  [ "$(stat -c %a d.img.snap1)" = 444 ]
  snapsum=$(sha256sum d.img.snap1 | cut -d' ' -f1)
  printf 'after snap1' > x1; write_at d.img x1 70000
  dd if=x1 of=a.raw bs=1 seek=70000 conv=notrunc status=none
  "$BIN/imgsnap" -q create --name second.img d.img
  printf 'after snap2' > x2; write_at d.img x2 3000000
  dd if=x2 of=a.raw bs=1 seek=3000000 conv=notrunc status=none
  run_split imgsnap list --json d.img
  [ "$(printf '%s' "$out" | jq length)" = 3 ]
  [ "$(printf '%s' "$out" | jq -r '.[0].backing')" = second.img ]
  [ "$(printf '%s' "$out" | jq -r '.[1].backing')" = d.img.snap1 ]
  [ "$(printf '%s' "$out" | jq -r '.[2].backing')" = null ]
  run_tool imgsnap list d.img
  [[ "$output" == *"d.img.snap1"*"(base)"* ]]
  to_raw d.img b.raw
  cmp a.raw b.raw
  # the first snapshot still reads the original state and never changed
  [ "$(sha256sum d.img.snap1 | cut -d' ' -f1)" = "$snapsum" ]
  # merge twice: back to one image named d.img
  "$BIN/imgsnap" -q merge d.img
  [ ! -e second.img ]
  "$BIN/imgsnap" -q merge d.img
  [ ! -e d.img.snap1 ]
  run_split imginfo --json d.img
  [ "$(jget .backing)" = null ]
  to_raw d.img c.raw
  cmp a.raw c.raw
  run_tool imgcheck d.img
  [ "$status" -eq 0 ]
  run_tool imgsnap merge d.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"no backing image"* ]]
}

@test "imgsnap merge: zero clusters of the top make the base's data zero; a bigger top grows the base" {
  head -c 2M /dev/urandom > a.raw
  "$BIN/imgconvert" -q --cluster-size 64K a.raw d.img
  "$BIN/imgsnap" -q create d.img
  "$BIN/growimg" -q d.img 3M
  # a whole zero cluster (discard on a delta hides the base)
  run "$PY" - "$BUILD/lib/libimg.so" d.img <<'PYEOF'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
h = ctypes.c_void_p()
assert lib.img_open(sys.argv[2].encode(), 1, ctypes.byref(h)) == 0
assert lib.img_discard(h, ctypes.c_uint64(65536), ctypes.c_uint64(65536)) == 0
assert lib.img_close(h) == 0
PYEOF
  [ "$status" -eq 0 ]
  dd if=/dev/zero of=a.raw bs=64K seek=1 count=1 conv=notrunc status=none
  truncate -s 3M a.raw
  to_raw d.img b.raw
  cmp a.raw b.raw
  "$BIN/imgsnap" -q merge d.img
  to_raw d.img c.raw
  cmp a.raw c.raw
  run_split imginfo --json d.img
  [ "$(jget .virtual_size)" = $((3 * M)) ]
  [ "$(jget .backing)" = null ]
  "$BIN/imgcheck" -q d.img
}

@test "imgsnap rebase: safe keeps the contents, unsafe only the reference" {
  head -c 2M /dev/urandom > a.raw
  head -c 2M /dev/urandom > o.raw
  "$BIN/imgconvert" -q --cluster-size 64K a.raw base.img
  "$BIN/imgconvert" -q --cluster-size 64K o.raw other.img
  "$BIN/mkimg" -q --backing base.img top.img
  printf 'top' > x; write_at top.img x 12345
  dd if=x of=a.raw bs=1 seek=12345 conv=notrunc status=none
  "$BIN/imgsnap" -q rebase top.img other.img
  [ "$(info top.img backing)" = other.img ]
  to_raw top.img b.raw
  cmp a.raw b.raw
  "$BIN/imgsnap" -q rebase top.img ""
  [ "$(info top.img backing)" = null ]
  to_raw top.img c.raw
  cmp a.raw c.raw
  # unsafe: the reference only (a moved base)
  "$BIN/mkimg" -q --backing base.img t2.img
  cp base.img moved.img
  run_tool imgsnap rebase -u t2.img moved.img
  [ "$status" -eq 0 ]
  to_raw t2.img d.raw
  to_raw base.img e.raw
  cmp d.raw e.raw
  [ "$(info t2.img backing)" = moved.img ]
  run_tool imgcheck t2.img
  [ "$status" -eq 0 ]
  # a missing new base is refused, nothing changed
  run_tool imgsnap rebase t2.img nothere.img
  [ "$status" -eq 5 ]
  [[ "$output" == *"nothere.img"* ]]
  [ "$(info t2.img backing)" = moved.img ]
}

@test "imgsnap refuses an image in use, and bad usage" {
  "$BIN/mkimg" -q d.img 1M
  hold_lock d.img
  run_tool imgsnap create d.img
  [ "$status" -eq 75 ]
  [[ "$output" == *"in use"* ]]
  [ ! -e d.img.snap1 ]
  run_tool imgsnap
  [ "$status" -eq 2 ]
  run_tool imgsnap frobnicate d.img
  [ "$status" -eq 2 ]
  kill "$HOLDER_PID"; wait "$HOLDER_PID" 2>/dev/null || true; HOLDER_PID=
  run_tool imgsnap create --name a/b d.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"must be another file name"* ]]
}
