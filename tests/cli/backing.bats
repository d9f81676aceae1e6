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
    "$BIN/imgconvert" -q -O raw "c$i.img" "c$i.raw"
    cmp "c$i.raw" tmpl.raw
    dd if="own$i" of="c$i.raw" bs=4096 seek=$off conv=notrunc status=none
    # write through the library: imgconvert raw -> image would flatten, so
    # use a tiny helper: write_at (below)
    write_at "c$i.img" "own$i" $((off * 4096))
  done
  for i in $(seq 1 50); do
    "$BIN/imgconvert" -q -O raw "c$i.img" "out$i.raw"
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
  "$BIN/imgconvert" -q -O raw top.img top.raw
  [ "$(file_size top.raw)" = $((16 * M)) ]
  head -c $((8 * M)) top.raw | cmp - tmpl.raw
  tail -c $((8 * M)) top.raw | cmp - <(head -c $((8 * M)) /dev/zero)
}

@test "imgconvert flattens a chain into one standalone image" {
  make_template
  "$BIN/mkimg" -q --backing tmpl.img top.img
  printf 'top data' > d
  write_at top.img d 12345
  "$BIN/imgconvert" -q top.img flat.img
  run_split imginfo --json flat.img
  [ "$(jget .backing)" = null ]
  "$BIN/imgconvert" -q -O raw flat.img flat.raw
  "$BIN/imgconvert" -q -O raw top.img top.raw
  cmp flat.raw top.raw
}

@test "hostile references are refused with a message naming them" {
  make_template
  mkdir sub
  run_tool mkimg --backing "$PWD/tmpl.img" abs.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"absolute path: refused"* ]]
  [ ! -e abs.img ]
  run_tool mkimg --backing ../tmpl.img sub/up.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"'..'"* ]]
  "$BIN/mkimg" -q --allow-backing-path --backing ../tmpl.img sub/up.img
  run_tool imginfo sub/up.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"sub/up.img"*"climbs out"* ]]
  run_tool imginfo --allow-backing-path sub/up.img
  [ "$status" -eq 0 ]
  # a missing backing file
  "$BIN/mkimg" -q --backing tmpl.img lost.img
  mv tmpl.img moved.img
  run_tool imginfo lost.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"tmpl.img"* ]]
}

@test "mkimg --backing: bad base and bad combinations" {
  run_tool mkimg --backing nothere.img x.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"nothere.img"* ]]
  [ ! -e x.img ]
  head -c 1M /dev/zero > raw.bin
  run_tool mkimg --backing raw.bin x.img
  [ "$status" -eq 1 ]
  [ ! -e x.img ]
  run_tool mkimg --backing raw.bin --fs ext4 x.img
  [ "$status" -eq 1 ]
}
