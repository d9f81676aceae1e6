#!/usr/bin/env bats
# Issue 15: what the tools show and do with images and sources they cannot
# trust: a raw source that looks like an image (imgconvert's source
# format), strings read from an image printed to a terminal, and messages
# that send the user the right way.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

@test "issue 15 #15: mkimg suggests a larger cluster size only where one exists" {
  # 1 PiB at the default 1 MiB cluster: a larger cluster does it (8 MiB)
  run_split mkimg x.img 1P
  [ "$status" -eq 1 ]
  [[ $err == *"cluster size of at least 8388608"* ]]
  [ ! -e x.img ]
  # 16 PiB even at the 64 MiB maximum: no cluster size does it, so no hint
  # to use a larger one; the message says the limit instead
  run_split mkimg --cluster-size 64M x.img 16P
  [ "$status" -eq 1 ]
  [[ $err != *"larger cluster"* ]]
  [[ $err != *"at least"* ]]
  [[ $err == *"largest cluster size"* ]]
  [[ $err == *"at most 9007199254740992 bytes"* ]]
  [[ $err == *"x.img"* ]]
  [ ! -e x.img ]
  # the limit itself still works
  run_split mkimg --cluster-size 64M x.img 8P
  [ "$status" -eq 0 ]
}

# A backing file whose name holds an escape sequence, a newline, a byte
# that is not UTF-8 and a C1 control (CSI, U+009B).
EVIL=$'b\e[31mx\ny\xff\xc2\x9b.img'
EVIL_SHOWN='b\x1b[31mx\x0ay\xff\xc2\x9b.img'

# no_raw_bytes TEXT: TEXT holds no ESC, BEL, CSI (U+009B) nor byte 0xff.
no_raw_bytes() {
  if printf '%s' "$1" | LC_ALL=C grep -q -e $'\e' -e $'\xff' -e $'\xc2\x9b' -e $'\a'; then
    echo "raw control bytes in: $1" >&2
    return 1
  fi
}

@test "issue 15 #4: a backing reference with control bytes is escaped by imginfo, imgsnap list and error messages" {
  "$BIN/mkimg" -q base.img 16M
  cp base.img "$EVIL"
  "$BIN/mkimg" -q --backing "$EVIL" top.img

  run_split imginfo top.img
  [ "$status" -eq 0 ]
  no_raw_bytes "$out"
  [[ $out == *"backing file: $EVIL_SHOWN (chain depth 1)"* ]]

  run_split imginfo --backing-chain top.img
  [ "$status" -eq 0 ]
  no_raw_bytes "$out"
  [[ $out == *"image: ./$EVIL_SHOWN"* ]]

  run_split imgsnap list top.img
  [ "$status" -eq 0 ]
  no_raw_bytes "$out"
  [ "$(printf '%s\n' "$out" | wc -l)" -eq 2 ]   # no line broken by the newline
  [[ $out == *"over $EVIL_SHOWN"* ]]

  # JSON: escaped too, and the reference comes back byte for byte
  run_split imginfo --json top.img
  [ "$status" -eq 0 ]
  no_raw_bytes "$out"
  [[ $out == *'"backing": "b\u001b[31mx\ny\u00ff\u009b.img"'* ]]

  # the library's messages quote the reference: escaped on stderr
  mv "$EVIL" gone.img
  run_split imginfo top.img
  no_raw_bytes "$err"
  [[ $err == *"$EVIL_SHOWN"* ]]
  run_split imgmap top.img
  no_raw_bytes "$err"
  [[ $err == *"$EVIL_SHOWN"* ]]
  # a replaced base: imgcheck's message names it, escaped
  "$BIN/mkimg" -q "$EVIL" 16M
  run_split imgcheck top.img
  no_raw_bytes "$out$err"
  [[ "$out$err" == *"$EVIL_SHOWN"* ]]
}

@test "issue 15 #4: a filesystem label with control bytes is escaped by imginfo" {
  command -v mke2fs >/dev/null || skip "mke2fs is needed"
  "$BIN/mkimg" -q --fs ext4 --label $'a\e]0;x\ab' fs.img 64M
  run_split imginfo fs.img
  [ "$status" -eq 0 ]
  no_raw_bytes "$out"
  [[ $out == *'label "a\x1b]0;x\x07b"'* ]]
}

@test "issue 15 #2: a raw disk that starts with a libimg delta header is not converted as a delta without -F" {
  # a neighbouring image, and a guest's raw disk whose sector 0 holds the
  # header of a delta over it (a guest can write any bytes there)
  "$BIN/mkimg" -q neighbour.img 16M
  head -c $((8 * M)) /dev/urandom > secret
  write_at neighbour.img secret 0
  "$BIN/mkimg" -q --backing neighbour.img hdr.img
  head -c $((32 * M)) /dev/urandom > guest.raw
  dd if=hdr.img of=guest.raw bs=1M count=3 conv=notrunc status=none
  sum=$(sha256sum guest.raw | cut -d' ' -f1)

  # probed: refused, with both ways out, and nothing written
  run_split imgconvert -O raw guest.raw out.raw
  [ "$status" -eq 1 ]
  [[ $err == *"guest.raw"*"delta over 'neighbour.img'"* ]]
  [[ $err == *"-F libimg"* && $err == *"-F raw"* ]]
  [ ! -e out.raw ]
  run_split imgconvert guest.raw out.img
  [ "$status" -eq 1 ]
  [ ! -e out.img ]

  # -F raw: the guest's disk, byte for byte
  run_split imgconvert -q -F raw -O raw guest.raw out.raw
  [ "$status" -eq 0 ]
  cmp guest.raw out.raw
  run_split imgconvert -q --source-format raw guest.raw out.img
  [ "$status" -eq 0 ]
  to_raw out.img back.raw
  cmp guest.raw back.raw

  # -F libimg: the user says it is a delta; it reads through the neighbour
  run_split imgconvert -q -F libimg -O raw guest.raw delta.raw
  [ "$status" -eq 0 ]
  cmp -n $((8 * M)) secret delta.raw
  [ "$(sha256sum guest.raw | cut -d' ' -f1)" = "$sum" ]
}

@test "issue 15 #2: a probed standalone image is converted with a warning naming -F raw; -F libimg refuses a raw file" {
  make_raw a.raw
  "$BIN/imgconvert" -q a.raw a.img
  run_split imgconvert -O raw a.img b.raw
  [ "$status" -eq 0 ]
  [[ $err == *"warning: a.img: read as a libimg image"*"-F raw"* ]]
  cmp a.raw b.raw
  run_split imgconvert -F libimg -O raw a.img c.raw
  [ "$status" -eq 0 ]
  [ -z "$err" ]
  cmp a.raw c.raw
  run_split imgconvert -F raw -O raw a.img d.raw
  [ "$status" -eq 0 ]
  cmp a.img d.raw
  run_split imgconvert -F libimg a.raw x.img
  [ "$status" -eq 3 ]
  [[ $err == *"a.raw: not a libimg image"* ]]
  [ ! -e x.img ]
  run_split imgconvert -F qcow2 a.raw x.img
  [ "$status" -eq 2 ]
  [[ $err == *"unknown source format 'qcow2'"* ]]
}
