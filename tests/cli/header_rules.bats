#!/usr/bin/env bats
# The header rules of FORMAT.md 3 as the tools see them: a newer header copy
# from a newer writer refuses the image (issue 14 #9), and the header
# sequence number never wraps (issue 15 #10).  Every refusal leaves the file
# byte-for-byte unchanged.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

# hdr FILE ACTION [ARG]: edit the header copies (crc32c fixed).
#   newer-incompat  the slot not in force gets the copy in force with seq + 1
#                   and an unknown incompatible bit (bit 40)
#   newer-version   the same with version 2
#   seq N           the copy in force gets seq N, the other N - 1
hdr() {
  [ -n "$PY" ] || skip "python3 is needed to edit an image"
  "$PY" - "$@" <<'PYEOF'
import struct, sys

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

def seal(h):
    hsize = struct.unpack_from("<I", h, 12)[0]
    struct.pack_into("<I", h, 16, 0)
    struct.pack_into("<I", h, 16, crc32c(bytes(h[:hsize])))
    return h

path, action = sys.argv[1], sys.argv[2]
with open(path, "r+b") as f:
    slots = [bytearray(f.read(4096)), bytearray(f.read(4096))]
    seqs = [struct.unpack_from("<Q", s, 24)[0] for s in slots]
    cur = 1 if seqs[1] > seqs[0] else 0
    h = bytearray(slots[cur])
    if action in ("newer-incompat", "newer-version"):
        struct.pack_into("<Q", h, 24, seqs[cur] + 1)
        if action == "newer-incompat":
            struct.pack_into("<Q", h, 32, struct.unpack_from("<Q", h, 32)[0] | (1 << 40))
        else:
            struct.pack_into("<I", h, 8, 2)
        f.seek(4096 * (1 - cur))
        f.write(seal(h))
    elif action == "seq":
        n = int(sys.argv[3])
        struct.pack_into("<Q", h, 24, n)
        f.seek(4096 * cur)
        f.write(seal(bytearray(h)))
        struct.pack_into("<Q", h, 24, n - 1)
        f.seek(4096 * (1 - cur))
        f.write(seal(bytearray(h)))
    else:
        sys.exit("unknown action " + action)
PYEOF
}

newer_copy_refused() {
  "$BIN/mkimg" -q a.img 64M
  hdr a.img "$1"
  cp a.img before.img
  run_split imgcheck a.img
  [ "$status" -eq 63 ]
  [[ "$err" == *"a.img"*"newer libimg"* ]] || { echo "$err"; false; }
  run_split imgcheck -r a.img
  [ "$status" -eq 63 ]
  run_split imginfo a.img
  [ "$status" -ne 0 ]
  [[ "$err" == *"newer libimg"* ]] || { echo "$err"; false; }
  run_split growimg a.img 128M
  [ "$status" -ne 0 ]
  run_split compact a.img
  [ "$status" -ne 0 ]
  cmp a.img before.img
}

@test "issue 14 #9: a newer header copy with an unknown incompatible bit refuses the image (imgcheck 63), file unchanged" {
  newer_copy_refused newer-incompat
}

@test "issue 14 #9: a newer header copy of version 2 refuses the image (imgcheck 63), file unchanged" {
  newer_copy_refused newer-version
}

@test "issue 15 #10: at header sequence number 2^64-1 the image is read-only: writers refuse, nothing wraps" {
  "$BIN/mkimg" -q a.img 64M
  hdr a.img seq 18446744073709551615
  cp a.img before.img
  run_split imgcheck a.img
  [ "$status" -eq 0 ]
  run_split growimg a.img 128M
  [ "$status" -eq 1 ]
  [[ "$err" == *"a.img"*"sequence number"* ]] || { echo "$err"; false; }
  run_split imgcheck -r a.img
  [ "$status" -eq 1 ]
  cmp a.img before.img
  # its data can be copied out to a new image
  run_split imgconvert a.img b.img
  [ "$status" -eq 0 ]
  run_split imgcheck b.img
  [ "$status" -eq 0 ]
}
