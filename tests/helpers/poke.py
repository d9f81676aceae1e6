#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""poke.py FILE ACTION [ARG]: change a libimg image behind the library's
back, as FORMAT.md lays it out (tests may know the format; the tools may
not).  Every header or BAT block it writes gets its crc32c fixed, so the
library sees a well-formed image that says something else.

Header actions (both copies unless said otherwise):
  set-incompat     an unknown incompatible feature bit (bit 62)
  set-dirty        the DIRTY flag, as a writer that crashed leaves it
  own-snapshot     compat bit 0 OWN_SNAPSHOT ("my backing is my own
                   snapshot", FORMAT.md 3.1), forged
  drop-owner       the owner field removed (incompat bit 2 OWNER): a
                   snapshot as libimg made it before it recorded owners
  newer-incompat   the slot not in force gets the copy in force with
                   seq + 1 and an unknown incompatible bit (bit 40)
  newer-version    the same with version 2
  seq N            the copy in force gets seq N, the other N - 1
File actions:
  pad              the file made (sparse) as long as the data_offset its
                   well-formed header copies name, the larger: images kept
                   short (fuzz seeds) are whole again (FORMAT.md 2: a file
                   shorter than its metadata area is truncated, corrupt)
BAT actions:
  corrupt-bat      a byte of BAT block 0's entries flipped (crc not fixed)
  bat-reserved     BAT block 0's reserved field (bytes 24..31) set to 1
                   (crc32c fixed: intact, but no writer writes it)
  bad-entries N    entries 1..N an unknown state, entry N+1 a duplicate of
                   entry 0's mapping (crc32c fixed)
"""
import struct
import sys

HDR = 4096
MAGIC = b"\x89LIBIMG\n"
INCOMPAT_BACKING, INCOMPAT_OWNER = 1, 4

_T = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 if _c & 1 else 0)
    _T.append(_c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def u64(h, off):
    return struct.unpack_from("<Q", h, off)[0]


def seal(h):
    """The header's crc32c over its header_size bytes, fixed."""
    hsize = struct.unpack_from("<I", h, 12)[0]
    struct.pack_into("<I", h, 16, 0)
    struct.pack_into("<I", h, 16, crc32c(bytes(h[:hsize])))
    return h


def each_header(f, edit):
    """edit(h) on both header copies that carry the magic; sealed."""
    for slot in (0, HDR):
        f.seek(slot)
        h = bytearray(f.read(HDR))
        if h[:8] != MAGIC:
            continue
        edit(h)
        f.seek(slot)
        f.write(seal(h))


def drop_owner(h):
    incompat = u64(h, 32)
    assert incompat & INCOMPAT_OWNER, "no owner field"
    blen = struct.unpack_from("<I", h, 144)[0] if incompat & INCOMPAT_BACKING else 0
    o = (152 + blen + 7) // 8 * 8 if incompat & INCOMPAT_BACKING else 128
    h[o:o + 16] = bytes(16)
    struct.pack_into("<Q", h, 32, incompat & ~INCOMPAT_OWNER)
    struct.pack_into("<I", h, 12, o)


def set_bit(off, bit):
    return lambda h: struct.pack_into("<Q", h, off, u64(h, off) | bit)


def in_force(f):
    f.seek(0)
    slots = [bytearray(f.read(HDR)), bytearray(f.read(HDR))]
    seqs = [u64(s, 24) for s in slots]
    cur = 1 if seqs[1] > seqs[0] else 0
    return cur, seqs[cur], bytearray(slots[cur])


def bad_entries(f, n):
    f.seek(0)
    bat = u64(f.read(HDR), 96)
    f.seek(bat)
    e0 = u64(f.read(40), 32)
    for b in range((n + 2 + 507) // 508):
        f.seek(bat + HDR * b)
        blk = bytearray(f.read(HDR)).ljust(HDR, b"\0")
        if not any(blk):
            blk[0:4] = b"BAT1"
            struct.pack_into("<QQ", blk, 8, b, 1)
        for k in range(508):
            v = 508 * b + k
            if 1 <= v <= n:
                struct.pack_into("<Q", blk, 32 + 8 * k, 7 << 60)
            elif v == n + 1:
                struct.pack_into("<Q", blk, 32 + 8 * k, e0)
        struct.pack_into("<I", blk, 4, 0)
        struct.pack_into("<I", blk, 4, crc32c(bytes(blk)))
        f.seek(bat + HDR * b)
        f.write(blk)


def pad(f):
    f.seek(0, 2)
    size = f.tell()
    want = 0
    for slot in (0, HDR):
        f.seek(slot)
        h = f.read(HDR).ljust(HDR, b"\0")
        hsize = struct.unpack_from("<I", h, 12)[0]
        if h[:8] != MAGIC or hsize < 128 or hsize > HDR or hsize % 8:
            continue
        z = bytearray(h[:hsize])
        struct.pack_into("<I", z, 16, 0)
        if crc32c(bytes(z)) != struct.unpack_from("<I", h, 16)[0]:
            continue
        bits = struct.unpack_from("<I", h, 20)[0]
        if not 16 <= bits <= 26 or u64(h, 104) > (2 << 30) >> bits or u64(h, 96) > (1 << 32):
            continue
        want = max(want, u64(h, 96) + (u64(h, 104) << bits))
    if size < want:
        f.truncate(want)


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    path, action, args = argv[1], argv[2], argv[3:]
    header_edits = {
        "set-incompat": set_bit(32, 1 << 62),
        "set-dirty": set_bit(56, 1),
        "own-snapshot": set_bit(48, 1),
        "drop-owner": drop_owner,
    }
    with open(path, "r+b") as f:
        if action in header_edits:
            each_header(f, header_edits[action])
        elif action in ("newer-incompat", "newer-version"):
            cur, seq, h = in_force(f)
            struct.pack_into("<Q", h, 24, seq + 1)
            if action == "newer-incompat":
                struct.pack_into("<Q", h, 32, u64(h, 32) | (1 << 40))
            else:
                struct.pack_into("<I", h, 8, 2)
            f.seek(HDR * (1 - cur))
            f.write(seal(h))
        elif action == "seq":
            n = int(args[0])
            cur, _, h = in_force(f)
            struct.pack_into("<Q", h, 24, n)
            f.seek(HDR * cur)
            f.write(seal(bytearray(h)))
            struct.pack_into("<Q", h, 24, n - 1)
            f.seek(HDR * (1 - cur))
            f.write(seal(bytearray(h)))
        elif action == "corrupt-bat":
            f.seek(0)
            bat = u64(f.read(HDR), 96)
            f.seek(bat + 100)
            b = f.read(1) or b"\0"
            f.seek(bat + 100)
            f.write(bytes([b[0] ^ 0x5A]))
        elif action == "pad":
            pad(f)
        elif action == "bat-reserved":
            f.seek(0)
            bat = u64(f.read(HDR), 96)
            f.seek(bat)
            blk = bytearray(f.read(HDR))
            assert blk[:4] == b"BAT1", "BAT block 0 is empty"
            struct.pack_into("<Q", blk, 24, 1)
            struct.pack_into("<I", blk, 4, 0)
            struct.pack_into("<I", blk, 4, crc32c(bytes(blk)))
            f.seek(bat)
            f.write(blk)
        elif action == "bad-entries":
            bad_entries(f, int(args[0]))
        else:
            sys.exit("poke.py: unknown action " + action)


if __name__ == "__main__":
    main(sys.argv)
