#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""gen.py OUTDIR: write the libimg conformance vectors (format-spec/vectors/).

Every image is written byte by byte from format-spec/FORMAT.md, not with
the library: the header slots (section 3), the log (5), BAT blocks and
entries (4, 4.1) and lz4 payloads (4.2) are encoded here, with this file's
own CRC-32C and lz4 block encoder.  A vector therefore shows what the
specification says, and the library passing it (tests/cli/conformance.bats)
shows that the library follows the specification, not merely itself.
Damaged, torn and dirty images are written as such directly: there is no
"make a good image, then break it" step that would need a writer.

The output is deterministic: uuids are derived from the vector's name,
data comes from splitmix64 seeded from the name, and there are no
timestamps, so a rerun reproduces the checked-in files byte for byte
(checked by tests/cli/conformance.bats).  Besides the images it writes
vectors.json (the manifest: name, files, FORMAT.md section, verdict,
sha256 of the raw virtual disk) and SHA256SUMS (of every file).

Usage: format-spec/vectors/gen.py format-spec/vectors   (python3, stdlib)
"""
import hashlib
import json
import os
import struct
import sys

K = 1024
M = K * K
B = 4096                        # metadata block size
MAGIC = b"\x89LIBIMG\n"
BAT_MAGIC = b"BAT1"
LOG_MAGIC = b"LOG1"
EPB = 508                       # entries per BAT block
INC_BACKING, INC_COMPRESSED, INC_OWNER = 1, 2, 4
RO_TEMPLATE = 1
COMPAT_OWN_SNAPSHOT = 1
FLAG_DIRTY = 1
S_UNALLOC, S_ZERO, S_ALLOC, S_COMP = 0, 1, 2, 3

# ---- CRC-32C (Castagnoli, reflected 0x82F63B78) -------------------------

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


def with_crc(blk, off):
    """blk with the CRC-32C of itself (field at off taken as zero) at off."""
    blk = bytearray(blk)
    blk[off:off + 4] = b"\0\0\0\0"
    blk[off:off + 4] = struct.pack("<I", crc32c(blk))
    return bytes(blk)


# ---- deterministic data ---------------------------------------------------

class Rng:
    """splitmix64: the same seed gives the same bytes everywhere."""

    def __init__(self, seed):
        self.s = seed & (2**64 - 1)

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & (2**64 - 1)
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
        return z ^ (z >> 31)

    def bytes(self, n):
        out = bytearray()
        while len(out) < n:
            out += struct.pack("<Q", self.next())
        return bytes(out[:n])


def uuid_of(name):
    return hashlib.sha256(b"libimg vector uuid " + name.encode()).digest()[:16]


def seed_of(name):
    return crc32c(name.encode())


# ---- lz4 block format (not the frame format) ------------------------------

def _lz4_len(out, n):
    while n >= 255:
        out.append(255)
        n -= 255
    out.append(n)


def lz4_compress(src):
    """A greedy lz4 block encoder: 4-byte matches found by a dict, the last
    5 bytes always literals and no match starting in the last 12 (the
    block format's end rules)."""
    n = len(src)
    out = bytearray()
    table = {}
    anchor = i = 0

    def seq(lit, off, mlen):
        tok_l = min(len(lit), 15)
        tok_m = 0 if mlen is None else min(mlen - 4, 15)
        out.append(tok_l << 4 | tok_m)
        if len(lit) >= 15:
            _lz4_len(out, len(lit) - 15)
        out.extend(lit)
        if mlen is not None:
            out.extend(struct.pack("<H", off))
            if mlen - 4 >= 15:
                _lz4_len(out, mlen - 4 - 15)

    while i + 12 < n:
        key = src[i:i + 4]
        cand = table.get(key)
        table[key] = i
        if cand is not None and i - cand <= 65535:
            m = 4
            while i + m < n - 5 and src[cand + m] == src[i + m]:
                m += 1
            seq(src[anchor:i], i - cand, m)
            i += m
            anchor = i
        else:
            i += 1
    seq(src[anchor:], 0, None)
    return bytes(out)


def lz4_decompress(src, size):
    """The decoder, to check the encoder (and as a reference for readers)."""
    out = bytearray()
    i = 0
    while True:
        tok = src[i]
        i += 1
        ll = tok >> 4
        if ll == 15:
            while True:
                b = src[i]
                i += 1
                ll += b
                if b != 255:
                    break
        out += src[i:i + ll]
        i += ll
        if i == len(src):
            break
        off = src[i] | src[i + 1] << 8
        i += 2
        ml = (tok & 15) + 4
        if tok & 15 == 15:
            while True:
                b = src[i]
                i += 1
                ml += b
                if b != 255:
                    break
        for _ in range(ml):
            out.append(out[-off])
    assert len(out) == size
    return bytes(out)


# ---- an image, written from FORMAT.md ------------------------------------

class Image:
    """One host file.  h holds the header's fields (section 3); entries maps
    a virtual cluster to its 64-bit BAT entry (written in place, section 4);
    host maps a host byte offset to what is stored there (clusters,
    payloads); log holds the log's blocks (section 5); extra, bytes written
    over everything last (damage).  build() lays it all out."""

    def __init__(self, name, vsize, cluster_bits=16, log_clusters=1, bat_clusters=1):
        self.name = name
        self.cb = cluster_bits
        self.cs = 1 << cluster_bits
        self.h = dict(version=1, header_size=128, cluster_bits=cluster_bits, seq=1,
                      incompat=0, ro_compat=0, compat=0, flags=0, virtual_size=vsize,
                      log_offset=self.cs, log_size=log_clusters * self.cs, log_seq=1,
                      bat_offset=self.cs + log_clusters * self.cs,
                      bat_clusters=bat_clusters, uuid=uuid_of(name))
        self.backing = None         # (backing_uuid, path bytes)
        self.owner = None           # owner_uuid
        self.entries = {}
        self.bat_seq = 0            # seq field of the BAT blocks written in place
        self.host = {}              # host byte offset -> bytes (data, payloads)
        self.log = []               # log blocks (4096 bytes each) from block 0
        self.next_host = self.data_offset() // self.cs
        self.rng = Rng(seed_of(name))
        self.extra = []             # (offset, bytes) written last, over everything
        self.slot_a = self.slot_b = None   # header overrides (dicts or raw bytes)
        self.size = None            # host file size (default: end of the data)

    def data_offset(self):
        return self.h["bat_offset"] + self.h["bat_clusters"] * self.cs

    # -- data
    def data(self, pieces=2):
        """A cluster of test data: random runs at a few places, zeros between
        (random, so that no two clusters are alike; sparse, so that the
        checked-in files compress well in git)."""
        c = bytearray(self.cs)
        for k in range(pieces):
            at = (k * self.cs // pieces + self.rng.next() % 4096) & ~7
            c[at:at + 512] = self.rng.bytes(512)
        return bytes(c)

    def compressible(self):
        """A cluster lz4 shrinks to well under a cluster: a random 512-byte
        pattern repeated with a few changes, then zeros."""
        pat = self.rng.bytes(512)
        c = bytearray(pat * (self.cs // 1024)) + bytearray(self.cs // 2)
        for _ in range(8):
            at = self.rng.next() % (self.cs // 2)
            c[at] ^= 0x5A
        return bytes(c)

    def alloc(self, v, data=None, h=None):
        """Virtual cluster v stored in host cluster h (default: the next)."""
        if h is None:
            h = self.next_host
            self.next_host += 1
        if data is None:
            data = self.data()
        self.host[h * self.cs] = data
        self.entries[v] = S_ALLOC << 60 | h
        return data

    def zero(self, v):
        self.entries[v] = S_ZERO << 60

    def comp(self, v, data=None, sector=None, n=None, payload=None):
        """Virtual cluster v lz4-compressed; the payload at 512-byte sector
        `sector` (default: packed after the previous one, section 4.2)."""
        self.h["incompat"] |= INC_COMPRESSED
        if data is None:
            data = self.compressible()
        if payload is None:
            z = lz4_compress(data)
            assert lz4_decompress(z, len(data)) == data
            payload = struct.pack("<II", len(z), crc32c(z)) + z
        if n is None:
            n = (len(payload) + 511) // 512
        payload = payload + bytes(n * 512 - len(payload))
        if sector is None:
            sector = self._pack(n)
        self.host[sector * 512] = payload
        self.entries[v] = S_COMP << 60 | (n - 1) << 43 | sector
        return data

    _fill = None

    def _pack(self, n):
        spc = self.cs // 512
        if self._fill is None or self._fill[1] + n > spc:
            self._fill = [self.next_host, 0]
            self.next_host += 1
        s = self._fill[0] * spc + self._fill[1]
        self._fill[1] += n
        return s

    def back(self, base, path=None, buuid=None):
        """A delta over `base` (an Image), by its file name."""
        self.h["incompat"] |= INC_BACKING
        self.backing = (base.h["uuid"] if buuid is None else buuid,
                        (path if path is not None else base.name + ".img").encode())

    # -- BAT blocks and log transactions
    def bat_block(self, i, seq, entries=None, reserved=0):
        """BAT block i (section 4) holding entries (default: the image's)."""
        if entries is None:
            entries = self.entries
        e = [entries.get(i * EPB + k, 0) for k in range(EPB)]
        blk = BAT_MAGIC + struct.pack("<IQQQ", 0, i, seq, reserved) + struct.pack("<508Q", *e)
        return with_crc(blk, 4)

    def log_tx(self, seq, blocks, targets=None):
        """Appends a transaction: a descriptor and one payload per (index,
        entries) in blocks (section 5)."""
        if targets is None:
            targets = [i for i, _ in blocks]
        desc = LOG_MAGIC + struct.pack("<IQI", 0, seq, len(targets)) + bytes(12)
        desc += struct.pack("<%dQ" % len(targets), *targets)
        desc = with_crc(desc + bytes(B - len(desc)), 4)
        self.log.append(desc)
        for i, ents in blocks:
            self.log.append(self.bat_block(i, seq, ents))

    # -- header
    def header(self, over=None):
        """One 4096-byte header slot; over: fields to change, and 'tail'
        (bytes at 128.. replacing the feature fields), 'junk' (offset,
        bytes) written after the crc, 'crc' (a value to store)."""
        h = dict(self.h)
        over = dict(over or {})
        explicit_size = "header_size" in over
        for k in list(over):
            if k in h:
                h[k] = over.pop(k)
        tail = b""
        if h["incompat"] & INC_BACKING and self.backing:
            bu, path = self.backing
            tail = bu + struct.pack("<II", len(path), 0) + path
        if h["incompat"] & INC_OWNER and self.owner is not None:
            tail += bytes(-len(tail) % 8) + self.owner if tail else self.owner
        tail = over.pop("tail", tail)
        if not explicit_size:
            h["header_size"] = 128 + ((len(tail) + 7) & ~7)
        s = bytearray(B)
        s[0:8] = MAGIC
        struct.pack_into("<IIIIQQQQQQQQQQQ", s, 8, h["version"], h["header_size"], 0,
                         h["cluster_bits"], h["seq"], h["incompat"], h["ro_compat"],
                         h["compat"], h["flags"], h["virtual_size"], h["log_offset"],
                         h["log_size"], h["log_seq"], h["bat_offset"], h["bat_clusters"])
        s[112:128] = h["uuid"]
        s[128:128 + len(tail)] = tail
        hs = min(max(h["header_size"], 0), B)
        crc = crc32c(bytes(s[:16]) + b"\0\0\0\0" + bytes(s[20:hs]))
        struct.pack_into("<I", s, 16, over.pop("crc", crc))
        if "junk" in over:
            at, b = over.pop("junk")
            s[at:at + len(b)] = b
        assert not over, over
        return bytes(s)

    def build(self):
        f = bytearray(self.data_offset())
        a = self.slot_a if self.slot_a is not None else {}
        b = self.slot_b if self.slot_b is not None else {}
        f[0:B] = a if isinstance(a, bytes) else self.header(a)
        f[B:2 * B] = b if isinstance(b, bytes) else self.header(b)
        assert len(self.log) * B <= self.h["log_size"], self.name
        for k, blk in enumerate(self.log):
            o = self.h["log_offset"] + k * B
            f[o:o + B] = blk
        vcl = -(-self.h["virtual_size"] // self.cs)
        nblk = max(1, -(-vcl // EPB))
        for i in range(nblk):
            if any(i * EPB <= v < (i + 1) * EPB for v in self.entries):
                o = self.h["bat_offset"] + i * B
                f[o:o + B] = self.bat_block(i, self.bat_seq)
        for off, d in sorted(self.host.items()):
            if len(f) < off + len(d):
                f += bytes(off + len(d) - len(f))
            f[off:off + len(d)] = d
        for off, d in self.extra:
            if len(f) < off + len(d):
                f += bytes(off + len(d) - len(f))
            f[off:off + len(d)] = d
        if self.size is not None:
            f = f[:self.size] + bytes(max(0, self.size - len(f)))
        return bytes(f)


# ---- the vectors ----------------------------------------------------------

VECTORS = []


def vector(category, section, verdict, check=None, read_only=False):
    """Registers a vector: a function that returns (description, [Image...],
    Disk or None).  The first image is the one to open, the others are the
    files it needs (its backing chain); the Disk is what a reader must show
    (verdict "opens") and None otherwise.  check: with "opens", what a full
    check finds ("clean", "leaks", "damaged"); with "corrupt", when the
    damage is detected ("open", the default, or "read").  The vector's name
    is the function's, with "-" for "_"."""
    def reg(fn):
        VECTORS.append(dict(fn=fn, name=fn.__name__.replace("_", "-"), category=category,
                            section=section, verdict=verdict, check=check,
                            read_only=read_only))
        return fn
    return reg


class Disk:
    """The expected virtual disk: what a reader must show (kept in 64 KiB
    chunks, absent ones zero, so that a large virtual size costs nothing)."""
    CH = 64 * K

    def __init__(self, size):
        self.size = size
        self.ch = {}

    def put(self, off, data):
        data = data[:max(0, self.size - off)]
        while data:
            i, o = divmod(off, self.CH)
            c = self.ch.setdefault(i, bytearray(self.CH))
            n = min(len(data), self.CH - o)
            c[o:o + n] = data[:n]
            data = data[n:]
            off += n

    def sha256(self):
        h = hashlib.sha256()
        z = bytes(self.CH)
        for i in range(-(-self.size // self.CH)):
            n = min(self.CH, self.size - i * self.CH)
            h.update(bytes(self.ch.get(i, z)[:n]))
        return h.hexdigest()


def simple(name, vsize=4 * 64 * K, nclusters=2):
    """A clean image with data in virtual clusters 0 and 2 (host order
    reversed), and its disk."""
    im = Image(name, vsize)
    d = Disk(vsize)
    for v in reversed(range(0, 2 * nclusters, 2)):
        if v * im.cs < vsize:
            d.put(v * im.cs, im.alloc(v))
    return im, d


# clean images (sections 3, 4, 4.1)

@vector("clean", "3, 4", "opens", "clean")
def empty():
    im = Image("empty", 256 * K)
    return "a new image: no BAT block written (the region reads as zeros), every cluster unallocated", [im], Disk(256 * K)


@vector("clean", "4.1", "opens", "clean")
def data():
    im, d = simple("data", 6 * 64 * K, 3)
    im.alloc(5, bytes(im.cs))               # an allocated cluster of zeros
    return "allocated clusters stored in reverse order, an allocated all-zero cluster, unallocated holes", [im], d


@vector("clean", "4.1", "opens", "clean")
def zero_clusters():
    im, d = simple("zero-clusters")
    im.zero(1)
    im.zero(3)
    return "state 1 (zero) entries next to allocated ones", [im], d


@vector("clean", "2, 4.1", "opens", "clean")
def partial_last_cluster():
    vs = 2 * 64 * K + 5 * 512
    im = Image("partial-last-cluster", vs)
    d = Disk(vs)
    c = bytearray(im.data())
    c[5 * 512:] = bytes(im.cs - 5 * 512)     # bytes past virtual_size are zero
    im.alloc(2, bytes(c))
    d.put(2 * im.cs, c)
    d.put(0, im.alloc(0))
    return "virtual_size not a multiple of the cluster size; data in the partial last cluster", [im], d


@vector("clean", "4.1", "opens", "clean")
def alloc_past_eof():
    im, d = simple("alloc-past-eof")
    # host cluster of virtual cluster 0 is the last one: cut the file 4 KiB in
    last = max(e & (2**60 - 1) for e in im.entries.values())
    im.size = last * im.cs + 4096
    v0 = [v for v, e in im.entries.items() if e & (2**60 - 1) == last][0]
    d.put(v0 * im.cs, im.host[last * im.cs][:4096] + bytes(im.cs - 4096))
    return "the file ends inside the last allocated cluster: its bytes past the end of the file read as zeros", [im], d


@vector("clean", "4", "opens", "clean")
def two_bat_blocks():
    vs = 600 * 64 * K
    im = Image("two-bat-blocks", vs)
    d = Disk(vs)
    d.put(599 * im.cs, im.alloc(599))
    d.put(507 * im.cs, im.alloc(507))
    d.put(508 * im.cs, im.alloc(508))
    return "a BAT of two blocks: block 0 holds entries 0..507, block 1 from 508; data on both sides of the boundary", [im], d


@vector("clean", "3", "opens", "clean")
def header_size_large():
    im, d = simple("header-size-large")
    im.slot_a = {"header_size": 4096, "seq": 2}
    im.slot_b = {"header_size": 256}
    return "header_size 4096 (A) and 256 (B): a reader accepts 128..4096 with zero bytes past 128", [im], d


@vector("clean", "2", "opens", "clean")
def cluster_128k():
    im = Image("cluster-128k", 3 * 128 * K + 512, cluster_bits=17)
    d = Disk(3 * 128 * K + 512)
    d.put(128 * K, im.alloc(1))
    return "cluster_bits 17 (128 KiB clusters), log of one cluster, virtual size one sector into the last cluster", [im], d


@vector("clean", "2, 5", "opens", "clean")
def bigger_log_and_bat():
    im = Image("bigger-log-and-bat", 256 * K, log_clusters=2, bat_clusters=2)
    d = Disk(256 * K)
    d.put(64 * K, im.alloc(1))
    return "a log of two clusters and a BAT region of two clusters (room to grow): data_offset moves", [im], d


# header copies (section 3, "Choosing a copy")

def two_sizes(name, newer):
    """Slots with different virtual sizes; the copy in force is `newer`."""
    im, d = simple(name, 4 * 64 * K)
    old = {"seq": 5, "virtual_size": 2 * 64 * K}
    new = {"seq": 6}
    if newer == "A":
        im.slot_a, im.slot_b = new, old
    else:
        im.slot_a, im.slot_b = old, new
    return im, d


@vector("header", "3", "opens", "clean")
def hdr_a_newer():
    im, d = two_sizes("hdr-a-newer", "A")
    return "header A has the higher seq (and the larger virtual size): A is in force", [im], d


@vector("header", "3", "opens", "clean")
def hdr_b_newer():
    im, d = two_sizes("hdr-b-newer", "B")
    return "header B has the higher seq (and the larger virtual size): B is in force", [im], d


@vector("header", "3", "opens", "clean")
def hdr_equal_seq():
    im, d = simple("hdr-equal-seq")
    im.slot_a = im.slot_b = {"seq": 7}
    return "both copies identical with equal seq", [im], d


@vector("header", "3", "corrupt")
def hdr_equal_seq_differ():
    im, d = simple("hdr-equal-seq-differ")
    im.slot_a = {"seq": 7}
    im.slot_b = {"seq": 7, "virtual_size": 2 * 64 * K}
    return "both copies well-formed with equal seq and different contents: corrupt", [im], None


@vector("header", "3", "opens", "clean")
def hdr_a_torn():
    im, d = two_sizes("hdr-a-torn", "A")
    im.slot_a = {"seq": 6, "crc": 0x12345678}
    im.slot_b = {"seq": 5}
    return "header A (the higher seq) fails its crc: torn, ignored; B is in force", [im], d


@vector("header", "3", "opens", "clean")
def hdr_b_bad_magic():
    im, d = simple("hdr-b-bad-magic")
    im.slot_a = {"seq": 3}
    im.slot_b = b"\x88LIBIMG\n" + im.header({"seq": 4})[8:]
    return "header B (the higher seq) has a wrong magic: not a header; A is in force", [im], d


@vector("header", "3", "corrupt")
def hdr_both_torn():
    im, d = simple("hdr-both-torn")
    im.slot_a = {"crc": 1}
    im.slot_b = {"crc": 2}
    return "both copies fail their crc", [im], None


@vector("header", "3", "corrupt")
def hdr_header_size_odd():
    im, d = simple("hdr-header-size-odd")
    im.slot_a = im.slot_b = {"header_size": 132}
    return "header_size 132 (not a multiple of 8) in both copies: not well-formed", [im], None


@vector("header", "3", "unsupported")
def hdr_newer_unknown_incompat():
    im, d = simple("hdr-newer-unknown-incompat")
    im.slot_a = {"seq": 3}
    im.slot_b = {"seq": 4, "incompat": 1 << 40}
    return "the newest copy (B) has an unknown incompatible bit: refused, no fallback to A", [im], None


@vector("header", "3, 8", "unsupported")
def hdr_newer_version2():
    im, d = simple("hdr-newer-version2")
    im.slot_a = {"seq": 4, "version": 2}
    im.slot_b = {"seq": 3}
    return "the newest copy (A) has version 2: refused, no fallback to B", [im], None


@vector("header", "3", "opens", "clean")
def hdr_older_unknown_incompat():
    im, d = simple("hdr-older-unknown-incompat")
    im.slot_a = {"seq": 4}
    im.slot_b = {"seq": 3, "incompat": 1 << 40, "version": 2}
    return "the older copy (B) has version 2 and an unknown incompatible bit: superseded, ignored", [im], d


@vector("header", "3", "opens", "clean")
def hdr_newer_invalid():
    im, d = simple("hdr-newer-invalid")
    im.slot_a = {"seq": 3}
    im.slot_b = {"seq": 4, "log_offset": 2 * 64 * K}
    return "the newest copy (B) is well-formed but invalid (log_offset not the cluster size): ignored, A is in force", [im], d


@vector("header", "3", "opens", "clean", read_only=True)
def hdr_seq_high():
    im, d = simple("hdr-seq-high")
    im.slot_a = {"seq": 2**64 - 1}
    im.slot_b = {"seq": 2**64 - 2}
    return "seq 2^64-1 and 2^64-2: readable, never opened for writing (seq at or above 2^63)", [im], d


def bad_field(name, desc, **over):
    @vector("header", "2, 3", "corrupt")
    def f():
        im, d = simple(name, nclusters=0)   # refused at the header: no data needed
        im.slot_a = im.slot_b = dict(over)
        return desc + " (both copies)", [im], None
    f.__name__ = name
    VECTORS[-1]["name"] = name
    VECTORS[-1]["fn"] = f


bad_field("hdr-seq-zero", "seq 0", seq=0)
bad_field("hdr-cluster-bits-15", "cluster_bits 15, below 16", cluster_bits=15)
bad_field("hdr-cluster-bits-27", "cluster_bits 27, above 26", cluster_bits=27)
bad_field("hdr-unknown-flag", "flags bit 1, undefined", flags=2)
bad_field("hdr-vsize-zero", "virtual_size 0", virtual_size=0)
bad_field("hdr-vsize-unaligned", "virtual_size not a multiple of 512", virtual_size=256 * K - 100)
bad_field("hdr-vsize-over-bat", "virtual_size needs more entries than the BAT holds",
          virtual_size=509 * 16 * 64 * K)
bad_field("hdr-log-offset", "log_offset not equal to cluster_size", log_offset=4096)
bad_field("hdr-log-size", "log_size not a multiple of cluster_size", log_size=64 * K + 4096)
bad_field("hdr-bat-offset", "bat_offset not log_offset + log_size", bat_offset=3 * 64 * K)
bad_field("hdr-bat-clusters-zero", "bat_clusters 0", bat_clusters=0)
bad_field("hdr-bat-region-big", "a BAT region over 2 GiB (32769 clusters)", bat_clusters=32769)
bad_field("hdr-log-size-big", "log_size over 64 MiB (1025 clusters; bat_offset follows it)",
          log_size=1025 * 64 * K, bat_offset=1026 * 64 * K)
bad_field("hdr-vsize-over-2-57", "virtual_size over 2^57", virtual_size=2**57 + 512)
bad_field("hdr-header-size-small", "header_size 120, below 128 (not well-formed)", header_size=120)
bad_field("hdr-header-size-big", "header_size 4104, past the slot (not well-formed)", header_size=4104)
bad_field("hdr-slot-not-zero", "a non-zero byte in the slot past header_size",
          junk=(1000, b"\x01"))
bad_field("hdr-reserved-tail", "a non-zero byte at 128..header_size without a feature defining it",
          tail=b"\0" * 8 + b"\x01" + b"\0" * 7)


# feature bits (section 3, 3.1, 3.2)

@vector("features", "3", "unsupported")
def feat_unknown_incompat():
    im, d = simple("feat-unknown-incompat")
    im.h["incompat"] |= 1 << 62
    return "an unknown incompatible feature bit (62) in both copies", [im], None


@vector("features", "3", "opens", "clean", read_only=True)
def feat_unknown_ro_compat():
    im, d = simple("feat-unknown-ro-compat")
    im.h["ro_compat"] |= 1 << 5
    return "an unknown read-only compatible bit (5): opens read-only", [im], d


@vector("features", "3", "opens", "clean")
def feat_unknown_compat():
    im, d = simple("feat-unknown-compat")
    im.h["compat"] |= 1 << 9
    return "an unknown compatible bit (9): ignored", [im], d


@vector("features", "3.2", "opens", "clean", read_only=True)
def feat_template():
    im, d = simple("feat-template")
    im.h["ro_compat"] |= RO_TEMPLATE
    return "TEMPLATE (ro_compat bit 0): readable, never opened for writing", [im], d


@vector("features", "3.1", "opens", "clean")
def feat_owner():
    im, d = simple("feat-owner")
    im.h["incompat"] |= INC_OWNER
    im.owner = uuid_of("feat-owner top")
    return "OWNER (incompat bit 2): owner_uuid at offset 128, header_size 144", [im], d


@vector("features", "3.1", "corrupt")
def feat_owner_zero():
    im, d = simple("feat-owner-zero")
    im.h["incompat"] |= INC_OWNER
    im.owner = bytes(16)
    return "OWNER with an all-zero owner_uuid", [im], None


# the log (section 5)

def dirty(name, vsize=4 * 64 * K):
    im = Image(name, vsize)
    im.h["flags"] |= FLAG_DIRTY
    im.h["log_seq"] = 10
    im.bat_seq = 9
    return im, Disk(vsize)


@vector("log", "5", "opens", "clean")
def log_empty_dirty():
    im, d = dirty("log-empty-dirty")
    d.put(0, im.alloc(0))
    return "DIRTY set, nothing in the log: the in-place BAT is the BAT", [im], d


@vector("log", "5", "opens", "clean")
def log_one_tx():
    im, d = dirty("log-one-tx")
    d.put(0, im.alloc(0))                     # in place
    new = dict(im.entries)
    x = im.data()
    h = im.next_host
    im.host[h * im.cs] = x
    im.next_host += 1
    new[1] = S_ALLOC << 60 | h
    d.put(64 * K, x)
    im.log_tx(10, [(0, new)])
    return "DIRTY, one committed transaction (one payload) mapping cluster 1: replayed", [im], d


def log_image(name, vsize=600 * 64 * K):
    """A dirty image over two BAT blocks; the in-place BAT maps cluster 0."""
    im, d = dirty(name, vsize)
    d.put(0, im.alloc(0))
    return im, d


def extra_cluster(im):
    x = im.data()
    h = im.next_host
    im.next_host += 1
    im.host[h * im.cs] = x
    return h, x


@vector("log", "5", "opens", "clean")
def log_multi_payload():
    im, d = log_image("log-multi-payload")
    e = dict(im.entries)
    h1, x1 = extra_cluster(im)
    h2, x2 = extra_cluster(im)
    e[3] = S_ALLOC << 60 | h1
    e[510] = S_ALLOC << 60 | h2
    d.put(3 * im.cs, x1)
    d.put(510 * im.cs, x2)
    im.log_tx(10, [(1, e), (0, e)])
    return "one transaction with two payloads (BAT blocks 1 and 0, in that order)", [im], d


@vector("log", "5", "opens", "leaks")
def log_several():
    im, d = log_image("log-several")
    e = dict(im.entries)
    h1, x1 = extra_cluster(im)
    e[1] = S_ALLOC << 60 | h1
    im.log_tx(10, [(0, dict(e))])
    h2, x2 = extra_cluster(im)
    e[1] = S_ALLOC << 60 | h2                 # overwritten by the next
    e[2] = S_ZERO << 60
    im.log_tx(11, [(0, dict(e))])
    h3, x3 = extra_cluster(im)
    e[520] = S_ALLOC << 60 | h3
    im.log_tx(12, [(1, dict(e))])
    d.put(im.cs, x2)
    d.put(520 * im.cs, x3)
    # the leaked h1 holds data: a dirty image may leak (section 1)
    return "three transactions (seq 10, 11, 12); a later one remaps a cluster an earlier one mapped (its old host cluster is a leak)", [im], d


def torn_after_two(name):
    im, d = log_image(name)
    e = dict(im.entries)
    h1, x1 = extra_cluster(im)
    e[1] = S_ALLOC << 60 | h1
    im.log_tx(10, [(0, dict(e))])
    h2, x2 = extra_cluster(im)
    e[2] = S_ALLOC << 60 | h2
    im.log_tx(11, [(0, dict(e))])
    d.put(im.cs, x1)
    d.put(2 * im.cs, x2)
    h3, x3 = extra_cluster(im)
    e[3] = S_ALLOC << 60 | h3
    e[509] = S_ZERO << 60
    im.log_tx(12, [(0, dict(e)), (1, dict(e))])
    return im, d


@vector("log", "5, 6", "opens", "leaks")
def log_torn_tail():
    im, d = torn_after_two("log-torn-tail")
    blk = bytearray(im.log[-1])
    blk[100] ^= 1                              # the last payload's crc fails
    im.log[-1] = bytes(blk)
    return "two committed transactions, then a torn one (its second payload fails its crc): the torn one is ignored", [im], d


@vector("log", "5", "opens", "leaks")
def log_wrong_seq_tail():
    im, d = torn_after_two("log-wrong-seq-tail")
    desc = bytearray(im.log[-3])
    struct.pack_into("<Q", desc, 8, 14)
    im.log[-3] = with_crc(bytes(desc), 4)
    return "after two transactions, one whose seq skips a number (14 where 12 is expected): replay stops there", [im], d


@vector("edge", "5", "opens", "leaks")
def edge_log_payload_index():
    im, d = torn_after_two("edge-log-payload-index")
    im.log[-1] = im.bat_block(0, 12, {})       # payload for target 1 claims index 0
    return ("after two transactions, a third whose descriptor is intact but whose second payload (crc and seq right) "
            "has the wrong index: the end of replay (an older attempt's payload), not corruption"), [im], d


@vector("log", "5", "opens", "leaks")
def log_payload_seq():
    im, d = torn_after_two("log-payload-seq")
    im.log[-1] = im.bat_block(1, 11, {509: S_ZERO << 60})
    return "after two transactions, one whose payload's seq is not the descriptor's: replay stops there", [im], d


@vector("edge", "5", "corrupt")
def edge_log_target_range():
    im, d = log_image("edge-log-target-range")
    h1, x1 = extra_cluster(im)
    e = dict(im.entries)
    e[1] = S_ALLOC << 60 | h1
    im.log_tx(10, [(0, dict(e))])
    d.put(im.cs, x1)
    im.log_tx(11, [(16, {})])                 # the BAT has 16 blocks: 0..15
    return "after one transaction, an intact one whose target (16) is past the BAT's blocks: corrupt, not the end of replay", [im], None


@vector("log", "5", "opens", "clean")
def log_fills_log():
    im, d = log_image("log-fills-log")
    e = dict(im.entries)
    for k in range(8):                         # 8 x 2 blocks: the whole 16-block log
        if k == 7:
            h, x = extra_cluster(im)
            e[1] = S_ALLOC << 60 | h
            d.put(im.cs, x)
        else:
            e[1] = S_ZERO << 60 if k % 2 else 0
        im.log_tx(10 + k, [(0, dict(e))])
    assert len(im.log) * B == im.h["log_size"]
    return "eight transactions that fill the log to its last block; the last one maps cluster 1", [im], d


@vector("edge", "5", "opens", "clean")
def edge_log_long():
    im = Image("edge-log-long", 4 * 64 * K, log_clusters=40)
    d = Disk(4 * 64 * K)
    im.h["flags"] |= FLAG_DIRTY
    im.h["log_seq"] = 10
    im.bat_seq = 9
    d.put(0, im.alloc(0))
    e = dict(im.entries)
    for k in range(300):                       # 600 blocks: past a writer's 256-block budget
        if k == 299:
            h, x = extra_cluster(im)
            e[1] = S_ALLOC << 60 | h
            d.put(im.cs, x)
        else:
            e[1] = S_ZERO << 60 if k % 2 else 0
        im.log_tx(10 + k, [(0, dict(e))])
    assert len(im.log) * B <= im.h["log_size"]
    return ("a log of 40 clusters (2.5 MiB) holding 300 transactions (600 blocks, past libimg's own "
            "writing budget of 256): a reader replays the whole region; the last one maps cluster 1"), [im], d


@vector("log", "5", "opens", "leaks")
def log_stale():
    im, d = log_image("log-stale")
    h1, x1 = extra_cluster(im)
    e = dict(im.entries)
    e[1] = S_ALLOC << 60 | h1
    im.log_tx(8, [(0, dict(e))])
    im.log_tx(9, [(0, dict(e))])
    return "a clean checkpointed log: old transactions (seq 8, 9) below log_seq 10 are not replayed", [im], d


@vector("log", "5", "opens", "clean")
def log_clean_flag():
    im, d = log_image("log-clean-flag")
    im.h["flags"] = 0
    h1, x1 = extra_cluster(im)
    e = dict(im.entries)
    e[1] = S_ALLOC << 60 | h1
    d.put(im.cs, x1)
    im.log_tx(10, [(0, e)])
    return "DIRTY clear but a transaction at log_seq in the log: replayed all the same (a reader always replays)", [im], d


@vector("edge", "5", "opens", "clean")
def log_replaces_torn_block():
    im, d = log_image("log-replaces-torn-block")
    h1, x1 = extra_cluster(im)
    e = dict(im.entries)
    e[1] = S_ALLOC << 60 | h1
    d.put(im.cs, x1)
    im.log_tx(10, [(0, e)])
    # block 0 in place torn (a checkpoint cut short): its crc fails
    o = im.h["bat_offset"] + 40
    im.extra.append((o, b"\xff"))
    return "the in-place BAT block 0 is torn (bad crc) but a committed transaction replaces it: opens", [im], d


# compressed clusters (section 4.2)

@vector("compressed", "4.2", "opens", "clean")
def comp_basic():
    im = Image("comp-basic", 4 * 64 * K)
    d = Disk(4 * 64 * K)
    d.put(0, im.comp(0))
    d.put(2 * im.cs, im.comp(2))              # packed after cluster 0's payload
    d.put(3 * im.cs, im.alloc(3))
    im.zero(1)
    return "two compressed clusters packed in one host cluster, an allocated one, a zero one", [im], d


@vector("compressed", "4.2", "opens", "clean")
def comp_partial_last():
    vs = 2 * 64 * K + 1024
    im = Image("comp-partial-last", vs)
    d = Disk(vs)
    c = bytearray(im.compressible())
    c[1024:] = bytes(im.cs - 1024)
    d.put(2 * im.cs, im.comp(2, bytes(c)))
    return "a compressed partial last cluster (decompresses to zeros past virtual_size)", [im], d


@vector("compressed", "4.1, 4.2", "opens", "damaged")
def comp_tail_past_vsize():
    vs = 64 * K + 1024
    im = Image("comp-tail-past-vsize", vs)
    d = Disk(vs)
    d.put(64 * K, im.comp(1))                  # not zero past virtual_size
    return "a compressed last cluster that decompresses to non-zero bytes past virtual_size: never shown (a check reports them)", [im], d


@vector("compressed", "4.2", "opens", "clean")
def comp_payload_offsets():
    im = Image("comp-payload-offsets", 4 * 64 * K)
    d = Disk(4 * 64 * K)
    h = im.next_host
    im.next_host += 1
    spc = im.cs // 512
    d.put(0, im.comp(0, sector=h * spc + spc - 40))     # ends at the cluster's end
    d.put(im.cs, im.comp(1, sector=h * spc + 3))        # gaps before, between
    return "payloads not packed from the start of their host cluster: one ends at the cluster's last sector", [im], d


def comp_bad(name, desc, verdict="corrupt", detected=None, **kw):
    @vector("compressed", "4.2", verdict, detected)
    def f():
        im = Image(name, 4 * 64 * K)
        im.alloc(3)
        kw2 = dict(kw)
        fix = kw2.pop("fix", None)
        im.comp(0, **kw2)
        if fix:
            fix(im)
        return desc, [im], None
    VECTORS[-1]["name"] = name
    VECTORS[-1]["fn"] = f


def _no_feature(im):
    im.h["incompat"] &= ~INC_COMPRESSED


def _cross(im):
    e = im.entries[0]
    s = e & (2**43 - 1)
    n = (e >> 43 & (2**17 - 1)) + 1
    spc = im.cs // 512
    h = s // spc
    ns = h * spc + spc - 1                    # the last sector of its cluster
    im.host[ns * 512] = im.host.pop(s * 512)
    im.entries[0] = S_COMP << 60 | (n - 1) << 43 | ns


def _overlap(im):
    e = im.entries[0]
    im.entries[1] = e                         # same sectors


def _in_alloc(im):
    e = im.entries[0]
    h3 = im.entries[3] & (2**60 - 1)
    im.entries[0] = e & ~(2**43 - 1) | h3 * (im.cs // 512)


def _in_meta(im):
    e = im.entries[0]
    im.entries[0] = e & ~(2**43 - 1) | (2 * im.cs // 512)   # in the BAT


def _past_eof(im):
    e = im.entries[0]
    im.entries[0] = e & ~(2**43 - 1) | (20 * im.cs // 512)


def _bad_crc(im):
    s = im.entries[0] & (2**43 - 1)
    p = bytearray(im.host[s * 512])
    p[4] ^= 1
    im.host[s * 512] = bytes(p)


def _clen_big(im):
    s = im.entries[0] & (2**43 - 1)
    n = (im.entries[0] >> 43 & (2**17 - 1)) + 1
    p = bytearray(im.host[s * 512])
    struct.pack_into("<I", p, 0, n * 512 - 7)
    im.host[s * 512] = bytes(p)


comp_bad("comp-no-feature", "a state 3 entry without incompat bit COMPRESSED", fix=_no_feature)
comp_bad("comp-too-long", "a payload of n sectors with n*512 >= cluster_size", n=128)
comp_bad("comp-cross-cluster", "a payload that crosses a host cluster boundary", fix=_cross)
comp_bad("comp-overlap", "two compressed entries on the same sectors", fix=_overlap)
comp_bad("comp-in-alloc-cluster", "a payload in a host cluster an allocated entry maps", fix=_in_alloc)
comp_bad("comp-in-metadata", "a payload starting in the BAT region", fix=_in_meta)
comp_bad("comp-past-eof", "a payload starting past the end of the file", fix=_past_eof)
comp_bad("comp-bad-crc", "a payload whose crc does not match its lz4 data (found when read)", fix=_bad_crc,
         detected="read")
comp_bad("comp-clen-too-big", "a payload whose 8 + clen exceeds its n*512 bytes (found when read)",
         fix=_clen_big, detected="read")
comp_bad("comp-short", "lz4 data that decompresses to less than cluster_size (found when read)",
         payload=(lambda z: struct.pack("<II", len(z), crc32c(z)) + z)(
             lz4_compress(bytes(range(256)) * 64)), detected="read")


# chains (section 3.1)

def pair(name, vs=2 * 64 * K):
    """A delta `name` over `name`-base (by its file name), both of vs bytes."""
    base = Image(name + "-base", vs)
    top = Image(name, vs)
    top.back(base)
    return top, base


@vector("chain", "3.1", "opens", "clean")
def chain_top():
    vs = 6 * 64 * K
    base = Image("chain-base", 5 * 64 * K)
    top = Image("chain-top", vs)
    top.back(base)
    d = Disk(vs)
    for v in range(5):
        d.put(v * base.cs, base.alloc(v))
    d.put(1 * top.cs, top.alloc(1))          # hides the base's cluster 1
    top.zero(2)                               # zeros, not the base's
    d.put(2 * top.cs, bytes(top.cs))
    c = bytearray(top.cs)
    c[100:4100] = top.rng.bytes(4000)         # copy-up of a partial write
    c2 = bytearray(base.host[base.entries[3] % 2**60 * base.cs])
    c2[100:4100] = c[100:4100]
    d.put(3 * top.cs, top.alloc(3, bytes(c2)))
    # 0 and 4 show the base; 5 is past the base's virtual size: zeros
    return "a delta over a base: unallocated clusters show the base, a zero cluster hides it, allocated ones override it, the delta is larger than its base", [top, base], d


@vector("chain", "3.1", "opens", "clean")
def chain3_top():
    vs = 4 * 64 * K
    base = Image("chain3-base", vs)
    mid = Image("chain3-mid", vs)
    top = Image("chain3-top", vs)
    mid.back(base)
    top.back(mid)
    d = Disk(vs)
    for v in range(4):
        d.put(v * vs // 4, base.alloc(v))
    d.put(1 * base.cs, mid.alloc(1))
    mid.zero(2)
    d.put(2 * base.cs, bytes(base.cs))
    d.put(2 * base.cs, top.alloc(2))          # top over mid's zero
    top.h["compat"] |= COMPAT_OWN_SNAPSHOT
    mid.h["incompat"] |= INC_OWNER
    mid.owner = top.h["uuid"]
    return "a chain of three (top over mid over base), top marked OWN_SNAPSHOT and mid recording top as its owner", [top, mid, base], d


@vector("chain", "3.1", "opens", "clean")
def chain_compressed_top():
    vs = 4 * 64 * K
    base = Image("chain-compressed-base", vs)
    top = Image("chain-compressed-top", vs)
    top.back(base)
    d = Disk(vs)
    d.put(0, base.alloc(0))
    d.put(base.cs, base.comp(1))
    d.put(base.cs, top.comp(1))
    d.put(2 * base.cs, top.comp(2))
    return "a compressed delta over a compressed base", [top, base], d


@vector("chain", "3.1", "opens", "clean")
def chain_uuid_zero():
    top, base = pair("chain-uuid-zero")
    top.back(base, buuid=bytes(16))
    d = Disk(2 * 64 * K)
    d.put(0, base.alloc(0))
    return "a backing_uuid of zeros: the base's uuid is not checked", [top, base], d


@vector("chain", "3.1", "chain-error")
def chain_missing():
    top, base = pair("chain-missing")
    top.back(base, path="no-such-file.img")
    top.alloc(0)
    return "the backing file does not exist", [top], None


@vector("chain", "3.1", "chain-error")
def chain_uuid_mismatch():
    top, base = pair("chain-uuid-mismatch")
    top.back(base, buuid=uuid_of("someone else"))
    return "the backing file's uuid is not backing_uuid", [top, base], None


@vector("chain", "3.1", "chain-error")
def chain_absolute():
    top, base = pair("chain-absolute")
    top.back(base, path="/nonexistent/libimg-vectors/chain-absolute-base.img")
    return "an absolute backing path (refused unless the user allows it)", [top], None


@vector("chain", "3.1", "chain-error")
def chain_dotdot():
    top = Image("sub/chain-dotdot", 2 * 64 * K)
    base = Image("chain-dotdot-base", 2 * 64 * K)
    top.back(base, path="../chain-dotdot-base.img")
    top.alloc(0)
    return ("a delta in sub/ whose backing path '../chain-dotdot-base.img' has a '..' component "
            "(the file exists: refused unless the user allows the directory)"), [top, base], None


@vector("chain", "3.1", "chain-error")
def chain_loop():
    top = Image("chain-loop", 2 * 64 * K)
    top.back(top)
    return "a delta whose backing file is itself", [top], None


@vector("chain", "3.1", "corrupt")
def chain_nul_path():
    top, base = pair("chain-nul-path")
    top.back(base, path="chain-nul-path-base.img\0x")
    return "a backing path containing a NUL byte", [top], None


@vector("chain", "3.1", "corrupt")
def chain_len_zero():
    top, base = pair("chain-len-zero")
    top.back(base, path="")
    return "BACKING with backing_len 0", [top], None


def _tail(im):
    bu, path = im.backing
    return bu + struct.pack("<II", len(path), 0) + path


@vector("chain", "3.1", "corrupt")
def chain_backing_reserved():
    top, base = pair("chain-backing-reserved")
    t = bytearray(_tail(top))
    t[20] = 1                                  # header bytes 148..151
    top.slot_a = top.slot_b = {"tail": bytes(t)}
    return "a delta whose reserved bytes 148..151 are not zero", [top, base], None


@vector("chain", "3.1", "corrupt")
def chain_path_past_header_size():
    top, base = pair("chain-path-past-header-size")
    top.slot_a = top.slot_b = {"header_size": 160}
    return "a backing path that runs past header_size (152 + backing_len > 160)", [top, base], None


@vector("chain", "3.1", "corrupt")
def chain_owner_padding():
    top, base = pair("chain-owner-padding")
    top.back(base)                             # path of 28 bytes: 4 bytes of padding
    top.h["incompat"] |= INC_OWNER
    top.owner = uuid_of("chain-owner-padding owner")
    t = bytearray(_tail(top))
    t += b"\x01\0\0\0" + top.owner             # a non-zero padding byte
    top.slot_a = top.slot_b = {"tail": bytes(t)}
    return "OWNER after a backing path, with a non-zero byte in the padding between them", [top, base], None


def depth_chain():
    """d00 (a base with data) under d01..d65, each a delta over the one below."""
    ims = [Image("edge-depth-d00", 2 * 64 * K)]
    data = ims[0].alloc(0)
    for k in range(1, 66):
        im = Image("edge-depth-d%02d" % k, 2 * 64 * K)
        im.back(ims[-1])
        ims.append(im)
    return ims, data


@vector("edge", "3.1", "opens", "clean")
def edge_depth_64():
    ims, data = depth_chain()
    d = Disk(2 * 64 * K)
    d.put(0, data)
    return "a delta with 64 backing images below it (the depth cap): opens", list(reversed(ims[:65])), d


@vector("edge", "3.1", "chain-error")
def edge_depth_65():
    ims, data = depth_chain()
    return "a delta with 65 backing images below it: one past the depth cap, refused", list(reversed(ims)), None


# corruption of the BAT (sections 4, 4.1)

def bat_bad(name, desc, verdict="corrupt", check=None, section="4.1", fix=None, vsize=4 * 64 * K):
    @vector("bat", section, verdict, check)
    def f():
        im, d = simple(name, vsize)
        r = fix(im, d)
        return desc, [im], (d if verdict == "opens" else None) if r is None else r
    VECTORS[-1]["name"] = name
    VECTORS[-1]["fn"] = f


def _extra_blk(im, mutate, recrc=True):
    blk = bytearray(im.bat_block(0, 0))
    mutate(blk)
    blk = with_crc(bytes(blk), 4) if recrc else bytes(blk)
    im.entries = {}                           # written from extra instead
    im.extra.append((im.h["bat_offset"], blk))


def _flip_entry(blk):
    blk[40] ^= 0x10


bat_bad("bat-bad-crc", "BAT block 0 fails its crc", section="4",
        fix=lambda im, d: _extra_blk(im, _flip_entry, recrc=False))
bat_bad("bat-bad-magic", "BAT block 0 has a wrong magic (crc right)", section="4",
        fix=lambda im, d: _extra_blk(im, lambda b: b.__setitem__(slice(0, 4), b"BAT2")))
bat_bad("bat-wrong-index", "BAT block 0 says it is block 1 (crc right)", section="4",
        fix=lambda im, d: _extra_blk(im, lambda b: struct.pack_into("<Q", b, 8, 1)))


def _entry(v, e):
    def f(im, d):
        im.entries[v] = e
    return f


bat_bad("bat-unknown-state", "an entry in state 4 (reserved)", fix=_entry(1, 4 << 60))
bat_bad("bat-unalloc-payload", "a state 0 entry with a non-zero payload", fix=_entry(1, 1))
bat_bad("bat-zero-payload", "a state 1 entry with a non-zero payload", fix=_entry(1, S_ZERO << 60 | 7))
bat_bad("bat-in-metadata", "an allocated entry mapping host cluster 2 (the BAT)",
        fix=_entry(1, S_ALLOC << 60 | 2))
bat_bad("bat-past-eof", "an allocated entry mapping a host cluster past the end of the file",
        fix=_entry(1, S_ALLOC << 60 | 40))
bat_bad("bat-host-2-32", "an allocated entry mapping host cluster 2^32",
        fix=_entry(1, S_ALLOC << 60 | 2**32))
bat_bad("bat-duplicate", "two allocated entries mapping the same host cluster",
        fix=lambda im, d: im.entries.__setitem__(1, im.entries[0]))
bat_bad("bat-past-vsize", "a non-zero entry past the last virtual cluster, in BAT block 0",
        fix=_entry(5, S_ZERO << 60))


@vector("bat", "4.1", "opens", "damaged")
def tail_past_vsize():
    vs = 64 * K + 1024
    im = Image("tail-past-vsize", vs)
    d = Disk(vs)
    c = im.data()                              # random bytes past 1024 too
    im.alloc(1, c)
    d.put(64 * K, c)
    return "bytes of the last cluster past virtual_size are not zero: never shown (a check reports them)", [im], d


@vector("bat", "1, 6", "opens", "leaks")
def leak_dirty():
    im, d = dirty("leak-dirty")
    d.put(0, im.alloc(0))
    extra_cluster(im)                          # written, never mapped
    return "DIRTY, a host cluster holding data that no entry maps (a leak a crash left)", [im], d


@vector("bat", "1, 6", "opens", "leaks")
def leak_clean():
    im, d = simple("leak-clean")
    extra_cluster(im)                          # unmapped, between mapped clusters
    im.alloc(3, bytes(im.cs))                  # an all-zero mapped cluster after it
    return "DIRTY clear, yet a host cluster no entry maps holds data (rule 4 broken by a writer): readable, a check reports a leak", [im], d


# the edges issue 22 decided (FORMAT.md sentences added for them)

@vector("edge", "3", "opens", "clean")
def edge_cluster0_junk():
    im, d = simple("edge-cluster0-junk")
    im.extra.append((8192, b"junk past the two header slots"))
    im.extra.append((64 * K - 8, b"\xff" * 8))
    return "non-zero bytes in cluster 0 past the two header slots: ignored by a reader", [im], d


@vector("edge", "3", "opens", "clean")
def edge_uuid_differ():
    im, d = simple("edge-uuid-differ")
    im.slot_a = {"seq": 3}
    im.slot_b = {"seq": 2, "uuid": uuid_of("edge-uuid-differ other")}
    return "both copies valid, A newer; B (older) has another uuid: A is in force", [im], d


@vector("edge", "3", "corrupt")
def edge_uuid_differ_equal_seq():
    im, d = simple("edge-uuid-differ-equal-seq")
    im.slot_a = {"seq": 3}
    im.slot_b = {"seq": 3, "uuid": uuid_of("edge-uuid-differ other")}
    return "both copies valid with equal seq and different uuids: corrupt", [im], None


@vector("edge", "3", "opens", "clean")
def edge_equal_seq_one_invalid():
    im, d = simple("edge-equal-seq-one-invalid")
    im.slot_a = {"seq": 3, "bat_clusters": 0}
    im.slot_b = {"seq": 3}
    return "equal seq, A well-formed but invalid (bat_clusters 0): ignored first, B is in force", [im], d


@vector("edge", "3", "corrupt")
def edge_equal_seq_header_size():
    im, d = simple("edge-equal-seq-header-size")
    im.slot_a = {"seq": 3}
    im.slot_b = {"seq": 3, "header_size": 136}
    return "equal seq, both valid, the slots differ only in header_size (128 and 136): different contents, corrupt", [im], None


@vector("edge", "2", "opens", "clean")
def edge_bat_capacity():
    vs = 16 * EPB * 64 * K                     # 1 BAT cluster = 16 blocks
    im = Image("edge-bat-capacity", vs)
    d = Disk(vs)
    d.put(vs - im.cs, im.alloc(16 * EPB - 1))
    return "virtual_size exactly the BAT's capacity (bat_clusters*cluster_size/4096*508 entries), data in the last entry", [im], d


@vector("edge", "2", "corrupt")
def edge_bat_capacity_plus():
    im, d = simple("edge-bat-capacity-plus")
    im.h["virtual_size"] = 16 * EPB * 64 * K + 512
    return "virtual_size one sector more than the BAT's capacity: needs 8129 entries where the BAT holds 8128", [im], None


@vector("edge", "2", "corrupt")
def edge_truncated_in_log():
    im, d = simple("edge-truncated-in-log", nclusters=0)
    im.size = 8192
    return "the file ends after the two header slots (shorter than data_offset: the log and BAT are cut off)", [im], None


@vector("edge", "2", "corrupt")
def edge_truncated_in_bat():
    im, d = simple("edge-truncated-in-bat", nclusters=0)
    im.zero(1)                                 # BAT block 0 is written
    im.size = im.h["bat_offset"] + B
    return "the file ends after BAT block 0, inside the BAT region (shorter than data_offset)", [im], None


@vector("edge", "4.2", "corrupt")
def edge_comp_ends_past_eof():
    im = Image("edge-comp-ends-past-eof", 4 * 64 * K)
    im.comp(0)
    s = im.entries[0] & (2**43 - 1)
    im.size = s * 512 + 512                    # the payload's first sector only
    return "a compressed payload that starts inside the file and ends past its end", [im], None


@vector("edge", "4.2", "opens", "clean")
def edge_comp_padding():
    im = Image("edge-comp-padding", 4 * 64 * K)
    d = Disk(4 * 64 * K)
    x = im.compressible()
    z = lz4_compress(x)
    p = struct.pack("<II", len(z), crc32c(z)) + z
    n = (len(p) + 511) // 512 + 1
    p += b"\xa5" * (n * 512 - len(p))          # non-zero padding
    d.put(0, im.comp(0, x, payload=p))
    return "a compressed payload whose padding (8 + clen .. n*512) is not zero: ignored", [im], d


def log_edge(name, desc, mutate, verdict="corrupt"):
    @vector("edge", "5", verdict, "leaks" if verdict == "opens" else None)
    def f():
        im, d = torn_after_two(name)
        mutate(im)
        return desc, [im], d if verdict == "opens" else None
    VECTORS[-1]["name"] = name
    VECTORS[-1]["fn"] = f


def _desc(fn):
    """Applies fn to the last transaction's descriptor (bytearray), crc fixed."""
    def m(im):
        b = bytearray(im.log[-3])
        fn(b)
        im.log[-3] = with_crc(bytes(b), 4)
    return m


log_edge("edge-log-desc-reserved", "after two transactions, an intact descriptor with the expected seq and a non-zero reserved byte (20..31): corrupt",
         _desc(lambda b: b.__setitem__(24, 1)))
log_edge("edge-log-desc-tail", "after two transactions, an intact descriptor with a non-zero byte past its targets: corrupt",
         _desc(lambda b: b.__setitem__(4000, 1)))
log_edge("edge-log-count-zero", "after two transactions, an intact descriptor with count 0: corrupt",
         _desc(lambda b: (struct.pack_into("<I", b, 16, 0), b.__setitem__(slice(32, 48), bytes(16)))))
log_edge("edge-log-count-big", "after two transactions, an intact descriptor with count 509 (above 508): corrupt",
         _desc(lambda b: struct.pack_into("<I", b, 16, 509)))
log_edge("edge-log-dup-targets", "after two transactions, an intact descriptor naming BAT block 0 twice: corrupt",
         _desc(lambda b: struct.pack_into("<Q", b, 40, 0)))
log_edge("edge-log-overflow", "after two transactions, an intact descriptor whose count (16) runs past the end of the log: corrupt",
         _desc(lambda b: (struct.pack_into("<I", b, 16, 16), struct.pack_into("<16Q", b, 32, *range(16)))))


def _payload_reserved(im):
    b = bytearray(im.log[-1])
    struct.pack_into("<Q", b, 24, 1)
    im.log[-1] = with_crc(bytes(b), 4)


log_edge("edge-log-payload-reserved", "after two transactions, a third whose second payload (crc and seq right) has a non-zero reserved field: the end of replay, not corruption",
         _payload_reserved, verdict="opens")
log_edge("edge-log-payload-zero", "after two transactions, a descriptor whose last payload is 4096 zero bytes (never written): the end of replay",
         lambda im: im.log.__setitem__(-1, bytes(B)), verdict="opens")
log_edge("edge-log-bad-desc-crc", "after two transactions, a descriptor that fails its crc (torn): the end of replay",
         lambda im: im.log.__setitem__(-3, im.log[-3][:200] + b"\x01" + im.log[-3][201:]), verdict="opens")


@vector("edge", "4", "corrupt")
def edge_bat_reserved():
    im, d = simple("edge-bat-reserved")
    blk = bytearray(im.bat_block(0, 0))
    struct.pack_into("<Q", blk, 24, 1)
    im.entries = {}
    im.extra.append((im.h["bat_offset"], with_crc(bytes(blk), 4)))
    return "BAT block 0 (crc right) with a non-zero reserved field (24..31)", [im], None


@vector("edge", "2, 4", "opens", "damaged")
def edge_spare_block_garbage():
    im, d = simple("edge-spare-block-garbage")
    im.extra.append((im.h["bat_offset"] + 3 * B + 100, b"garbage"))
    return "a BAT block past the blocks covering virtual_size is garbage: an open ignores it, a check reports it", [im], d


@vector("edge", "2, 4.1", "opens", "damaged")
def edge_spare_block_entries():
    im, d = simple("edge-spare-block-entries")
    e = {EPB * 2 + 1: S_ZERO << 60}
    im.extra.append((im.h["bat_offset"] + 2 * B, im.bat_block(2, 0, e)))
    return "a valid BAT block past the blocks covering virtual_size holds a non-zero entry: an open ignores it, a check reports it", [im], d


@vector("edge", "3.1", "opens", "clean")
def edge_chain_cluster_size():
    vs = 5 * 64 * K
    base = Image("edge-chain-cluster-size-base", vs, cluster_bits=17)
    top = Image("edge-chain-cluster-size", vs)
    top.back(base)
    d = Disk(vs)
    d.put(0, base.alloc(0))                    # 128 KiB: virtual 0..128K
    d.put(2 * 64 * K, base.alloc(1))           # 128K..256K
    d.put(64 * K, top.alloc(1))                # hides the second half of base cluster 0
    top.zero(2)                                # hides the first half of base cluster 1
    d.put(2 * 64 * K, bytes(64 * K))
    return "a delta of 64 KiB clusters over a base of 128 KiB clusters: reads go by byte range", [top, base], d


@vector("edge", "3.1", "opens", "clean")
def edge_chain_symlink():
    vs = 2 * 64 * K
    base = Image("edge-chain-symlink-base", vs)
    top = Image("edge-chain-symlink", vs)
    top.back(base, path="edge-chain-symlink-link.img")
    top.links = {"edge-chain-symlink-link.img": "edge-chain-symlink-base.img"}
    d = Disk(vs)
    d.put(0, base.alloc(0))
    return "the backing path names a symbolic link in the delta's directory to the base beside it: followed", [top, base], d


@vector("edge", "3.1", "chain-error")
def edge_chain_symlink_out():
    vs = 2 * 64 * K
    base = Image("edge-chain-symlink-out-base", vs)
    top = Image("sub/edge-chain-symlink-out", vs)
    top.back(base, path="edge-chain-symlink-out-link.img")
    top.links = {"sub/edge-chain-symlink-out-link.img": "../edge-chain-symlink-out-base.img"}
    base.alloc(0)
    return ("a delta in sub/ whose backing path names a symbolic link beside it that leads out of "
            "its directory (to ../edge-chain-symlink-out-base.img, which exists): refused"), [top, base], None


# ---- output ---------------------------------------------------------------

def main():
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    files = {}
    manifest = []
    for v in VECTORS:
        desc, images, disk = v["fn"]()
        top = images[0]
        for im in images:
            blob = im.build()
            fn = im.name + ".img"
            assert files.get(fn, blob) == blob, fn
            files[fn] = blob
        links = getattr(top, "links", {})
        for ln, target in links.items():
            assert files.get(ln, target) == target
            files[ln] = target
        ent = dict(name=v["name"], file=top.name + ".img",
                   files=[im.name + ".img" for im in images] + sorted(links),
                   category=v["category"], section=v["section"], description=desc,
                   verdict=v["verdict"])
        if v["verdict"] == "opens":
            assert disk is not None and disk.size == top.h["virtual_size"], v["name"]
            ent["check"] = v["check"]
            ent["read_only"] = v["read_only"]
            ent["virtual_size"] = disk.size
            ent["sha256"] = disk.sha256()
        elif v["verdict"] == "corrupt":
            ent["detected"] = v["check"] or "open"
        manifest.append(ent)
    names = [m["name"] for m in manifest]
    assert len(set(names)) == len(names)
    for fn, blob in sorted(files.items()):
        path = os.path.join(out, fn)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(blob, str):              # a symbolic link
            if os.path.lexists(path):
                os.unlink(path)
            os.symlink(blob, path)
            continue
        with open(path, "wb") as f:
            f.write(blob)
    doc = {"description": "libimg format version 1 conformance vectors (format-spec/vectors/README.md)",
           "generator": "format-spec/vectors/gen.py",
           "vectors": manifest}
    with open(os.path.join(out, "vectors.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    with open(os.path.join(out, "SHA256SUMS"), "w") as f:
        for fn, blob in sorted(files.items()):
            if not isinstance(blob, str):
                f.write("%s  %s\n" % (hashlib.sha256(blob).hexdigest(), fn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
