/* SPDX-License-Identifier: MIT */
/*
 * Shared by the fuzz harnesses (fuzz/<target>_fuzzer.c, habit 10 of
 * GUIDE.md).  Each harness is one file linked with either libFuzzer
 * (fuzz/build.sh) or fuzz/replay_main.c (make check), so the helpers here are
 * static inline rather than a separate object.
 *
 * A harness reports a bug with FUZZ_BUG() (abort), never with a return value.
 */
#ifndef LIBIMG_FUZZ_H
#define LIBIMG_FUZZ_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libimg.h"
#include "format.h"   /* crc32c and layout constants, for fuzz_fix_crcs() */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_BUG(...) do {                                            \
		fprintf(stderr, "FUZZ BUG %s:%d: ", __FILE__, __LINE__);      \
		fprintf(stderr, __VA_ARGS__);                                 \
		fprintf(stderr, " (last error: %s)\n", img_last_error());     \
		abort();                                                      \
	} while (0)

/* ops_fuzzer opcodes (an input byte modulo OP_NUM); gen_corpus writes them. */
enum fuzz_op {
	OP_WRITE, OP_WRITE2, OP_READ, OP_DISCARD, OP_ZEROES, OP_FLUSH, OP_REOPEN,
	OP_CRASH, OP_GROW, OP_SHRINK, OP_COMPACT, OP_CHECK, OP_NUM
};

/* ---- an input reader: bytes run out into zeros ------------------------ */

struct fuzz_in {
	const uint8_t *p;
	size_t n;
};

static inline uint8_t fuzz_u8(struct fuzz_in *in)
{
	uint8_t v = 0;
	if (in->n) {
		v = *in->p++;
		in->n--;
	}
	return v;
}

static inline uint16_t fuzz_u16(struct fuzz_in *in)
{
	uint16_t v = fuzz_u8(in);
	return (uint16_t)(v | fuzz_u8(in) << 8);
}

static inline uint32_t fuzz_u32(struct fuzz_in *in)
{
	uint32_t v = fuzz_u16(in);
	return v | (uint32_t)fuzz_u16(in) << 16;
}

/* A small deterministic generator (splitmix64) for offsets and patterns. */
static inline uint64_t fuzz_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* ---- a capped, snapshotting wrapper around the memory backend ---------- */
/*
 * The memory backend grows a flat buffer up to 2 GiB.  A hostile header can
 * make a writer touch offsets far past the input (a BAT block at 2 GiB), so
 * the harnesses cap the file: writes or truncates past `cap` fail with
 * -EFBIG like a full disk.  On close the contents can be saved, so that a
 * harness can reopen what img_close() left behind.
 */
struct fuzz_io {
	struct img_io io;
	struct img_io *mem;
	uint64_t cap;
	uint64_t tail;           /* a hole past mem's end: the file's size is at least this */
	uint8_t *saved;          /* contents at close when save_on_close */
	size_t saved_len;
	int save_on_close;
	int closed;
};

static inline int fio_pread(struct img_io *io, void *buf, size_t len, uint64_t off)
{
	struct fuzz_io *f = (struct fuzz_io *)io;
	return f->mem->ops->pread(f->mem, buf, len, off);
}

static inline int fio_pwrite(struct img_io *io, const void *buf, size_t len, uint64_t off)
{
	struct fuzz_io *f = (struct fuzz_io *)io;
	if (off > f->cap || len > f->cap - off)
		return -EFBIG;
	return f->mem->ops->pwrite(f->mem, buf, len, off);
}

static inline int fio_flush(struct img_io *io)
{
	struct fuzz_io *f = (struct fuzz_io *)io;
	return f->mem->ops->flush(f->mem);
}

static inline int fio_punch(struct img_io *io, uint64_t off, uint64_t len)
{
	struct fuzz_io *f = (struct fuzz_io *)io;
	return f->mem->ops->punch(f->mem, off, len);
}

static inline int fio_truncate(struct img_io *io, uint64_t size)
{
	struct fuzz_io *f = (struct fuzz_io *)io;
	int r;
	if (size > f->cap)
		return -EFBIG;
	r = f->mem->ops->truncate(f->mem, size);
	if (!r && f->tail > size)
		f->tail = size;
	return r;
}

static inline int fio_size(struct img_io *io, uint64_t *size)
{
	struct fuzz_io *f = (struct fuzz_io *)io;
	int r = f->mem->ops->size(f->mem, size);
	if (!r && *size < f->tail)
		*size = f->tail;
	return r;
}

static inline void fio_close(struct img_io *io)
{
	struct fuzz_io *f = (struct fuzz_io *)io;
	if (f->save_on_close) {   /* the contents move out: no copy */
		free(f->saved);
		f->saved = img_io_mem_take(f->mem, &f->saved_len);
		if (!f->saved && !(f->saved = malloc(1)))
			FUZZ_BUG("out of memory");
	}
	f->mem->ops->close(f->mem);
	f->mem = NULL;
	f->closed = 1;
}

static const struct img_io_ops fuzz_io_ops = {
	.pread = fio_pread, .pwrite = fio_pwrite, .flush = fio_flush,
	.punch = fio_punch, .truncate = fio_truncate, .size = fio_size,
	.close = fio_close,
};

/*
 * Inputs are kept small: the log and the BAT of a seed are not in it.  A
 * file shorter than its metadata area is truncated, corrupt (FORMAT.md 2),
 * so the wrapper makes the file as long as the data_offset that a decodable
 * header copy names (the larger of the two), a hole that costs no memory
 * (reads past mem's end are zeros); what a harness saves at close is mem's
 * bytes, padded the same way when it opens them again.  (The refusal of a
 * short file is one comparison, tested in tests/unit/corrupt.c.)
 */
/* Header copy slot (0 or 1) of the input, the part past its end read as
 * zeros, decoded with its geometry: 0, or non-zero (absent, not valid). */
static inline int fuzz_slot_header(const uint8_t *data, size_t size, size_t slot,
				   struct imgi_header *h, struct imgi_geom *g)
{
	uint8_t buf[IMG_HEADER_SLOT];
	size_t have;

	if (size <= slot * IMG_HEADER_SLOT)
		return -1;
	have = size - slot * IMG_HEADER_SLOT;
	if (have > IMG_HEADER_SLOT)
		have = IMG_HEADER_SLOT;
	memset(buf, 0, sizeof(buf));
	memcpy(buf, data + slot * IMG_HEADER_SLOT, have);
	return imgi_header_decode(buf, h, NULL, 0) || imgi_geom_compute(h, g);
}

static inline uint64_t fuzz_hole_to(const uint8_t *data, size_t size)
{
	uint64_t to = 0;

	for (size_t slot = 0; slot < 2; slot++) {
		struct imgi_header h;
		struct imgi_geom g;
		if (!fuzz_slot_header(data, size, slot, &h, &g) && g.data_offset > to)
			to = g.data_offset;
	}
	return to;
}

/* Sets up *f over a copy of data.  The wrapper struct itself belongs to the
 * caller (it outlives img_close() so that f->saved can be read). */
static inline void fuzz_io_init(struct fuzz_io *f, const void *data, size_t len,
				uint64_t cap)
{
	memset(f, 0, sizeof(*f));
	if (img_io_mem_new(data, len, &f->mem))
		FUZZ_BUG("img_io_mem_new(%zu) failed", len);
	f->io.ops = &fuzz_io_ops;
	f->io.name = "fuzz.img";
	f->cap = cap;
	f->tail = data ? fuzz_hole_to(data, len) : 0;
}

/* As fuzz_io_init, taking data (from malloc) instead of copying it. */
static inline void fuzz_io_adopt(struct fuzz_io *f, uint8_t *data, size_t len, uint64_t cap)
{
	memset(f, 0, sizeof(*f));
	f->tail = data ? fuzz_hole_to(data, len) : 0;
	if (img_io_mem_adopt(data, len, &f->mem))
		FUZZ_BUG("img_io_mem_adopt(%zu) failed", len);
	f->io.ops = &fuzz_io_ops;
	f->io.name = "fuzz.img";
	f->cap = cap;
}

/* Contents now (the handle still open): valid until the next write. */
static inline const uint8_t *fuzz_io_data(struct fuzz_io *f, size_t *len)
{
	return img_io_mem_data(f->mem, len);
}

static inline void fuzz_io_release(struct fuzz_io *f)
{
	if (!f->closed && f->mem)
		f->mem->ops->close(f->mem);
	free(f->saved);
	f->saved = NULL;
}

/* ---- checksum fix-up --------------------------------------------------- */
/*
 * A mutated byte almost always breaks a crc32c, and the fuzzer cannot guess
 * checksums, so harnesses also try a copy of the input whose checksums are
 * recomputed: both header slots, every compressed payload the BAT blocks
 * in the file point to, and every 4 KiB block that starts with the BAT1 or
 * LOG1 magic.  Returns 1 if the copy differs from the input.
 */
static inline uint32_t fuzz_crc_zeroed(const uint8_t *p, size_t len)
{
	static const uint8_t zero4[4];
	uint32_t c = imgi_crc32c(0, p, 4);
	c = imgi_crc32c(c, zero4, 4);
	return imgi_crc32c(c, p + 8, len - 8);
}

/* The crc32c of every compressed payload (FORMAT.md 4.2) whose entry sits
 * in a BAT block of the file and whose clen fits its sectors, so that a
 * mutated lz4 block reaches the decompressor instead of failing its crc.
 * Uses the header copy with the higher valid seq.  Returns 1 if anything
 * changed. */
static inline int fuzz_fix_payload_crcs(uint8_t *p, size_t len)
{
	struct imgi_header h, best;
	struct imgi_geom g;
	int have = 0, changed = 0;

	for (size_t slot = 0; slot < 2; slot++)
		if (len >= (slot + 1) * IMG_HEADER_SLOT &&
		    !imgi_header_decode(p + slot * IMG_HEADER_SLOT, &h, NULL, 0) &&
		    (!have || h.seq > best.seq)) {
			best = h;
			have = 1;
		}
	if (!have || imgi_geom_compute(&best, &g))
		return 0;
	for (uint64_t b = 0; b < g.bat_blocks; b++) {
		uint64_t off = best.bat_offset + b * IMG_BLOCK_SIZE;
		if (off + IMG_BLOCK_SIZE > len)
			break;
		if (get_le32(p + off) != IMG_BAT_MAGIC)
			continue;
		for (unsigned i = 0; i < IMG_ENTRIES_PER_BLOCK; i++) {
			uint64_t e = get_le64(p + off + 32 + 8 * i), at, n, clen;
			uint32_t crc;
			if (IMG_E_STATE(e) != IMG_E_COMP)
				continue;
			at = IMG_C_SECTOR(e) * 512;
			n = IMG_C_COUNT(e) * 512;
			if (n >= g.cluster_size || at < g.data_offset || at > len || n > len - at)
				continue;
			clen = get_le32(p + at);
			if (!clen || clen > n - IMG_C_HDR)
				continue;
			crc = imgi_crc32c(0, p + at + IMG_C_HDR, (size_t)clen);
			if (get_le32(p + at + 4) != crc) {
				put_le32(p + at + 4, crc);
				changed = 1;
			}
		}
	}
	return changed;
}

static inline int fuzz_fix_crcs(uint8_t *p, size_t len)
{
	int changed = 0;

	for (size_t slot = 0; slot < 2; slot++) {
		uint8_t *h = p + slot * IMG_HEADER_SLOT;
		uint32_t hs, crc;
		if (len < (slot + 1) * IMG_HEADER_SLOT ||
		    memcmp(h, imgi_header_magic, 8))
			continue;
		hs = get_le32(h + 12);
		if (hs < 24 || hs > IMG_HEADER_SLOT)
			continue;
		/* The header crc sits at offset 16. */
		{
			uint8_t tmp[IMG_HEADER_SLOT];
			memcpy(tmp, h, hs);
			put_le32(tmp + 16, 0);
			crc = imgi_crc32c(0, tmp, hs);
		}
		if (get_le32(h + 16) != crc) {
			put_le32(h + 16, crc);
			changed = 1;
		}
	}
	changed |= fuzz_fix_payload_crcs(p, len);
	for (size_t off = 2 * IMG_HEADER_SLOT; off + IMG_BLOCK_SIZE <= len; off += IMG_BLOCK_SIZE) {
		uint8_t *b = p + off;
		uint32_t m = get_le32(b), crc;
		if (m != IMG_BAT_MAGIC && m != IMG_LOG_MAGIC)
			continue;
		crc = fuzz_crc_zeroed(b, IMG_BLOCK_SIZE);
		if (get_le32(b + 4) != crc) {
			put_le32(b + 4, crc);
			changed = 1;
		}
	}
	return changed;
}

/* ---- the size guard ------------------------------------------------------ */
/*
 * FORMAT.md bounds what a reader needs by the header's caps, not by the
 * file: 8 bytes of BAT per virtual cluster (up to 1 GiB for 2^27 clusters),
 * the whole log (up to 64 MiB) and, for a full check, every BAT block (up to
 * 2 GiB of reads).  An 8 KiB file may claim all of that, legitimately, and
 * would only find the fuzzer's -rss_limit_mb=256 / -timeout=2.  Harnesses
 * therefore skip inputs whose valid header copy asks for more than these
 * limits (FUZZ_NO_SIZE_GUARD=1 turns the guard off).  The big seeds still
 * meet the tools in tests/cli/corpus.bats.
 */
#define FUZZ_MAX_VCLUSTERS  (1ull << 22)          /* 32 MiB of BAT in memory */
#define FUZZ_MAX_LOG        (16ull << 20)
#define FUZZ_MAX_BAT_BLOCKS (1ull << 16)          /* 256 MiB of BAT region */

static inline int fuzz_too_big(const uint8_t *data, size_t size)
{
	static int off = -1;

	if (off < 0)
		off = getenv("FUZZ_NO_SIZE_GUARD") != NULL;
	if (off)
		return 0;
	for (size_t slot = 0; slot < 2; slot++) {
		struct imgi_header h;
		struct imgi_geom g;
		if (fuzz_slot_header(data, size, slot, &h, &g))
			continue;
		if (g.vclusters > FUZZ_MAX_VCLUSTERS || h.log_size > FUZZ_MAX_LOG ||
		    g.bat_blocks > FUZZ_MAX_BAT_BLOCKS)
			return 1;
	}
	return 0;
}

/* ---- a hand-made empty image ------------------------------------------- */
/*
 * The two header slots of an empty image (8 KiB; the log and the BAT are
 * holes past the end of the file), with a log of log_size bytes where the
 * library's img_create_io() always uses 1 MiB.  A is in force (seq 2), B one
 * older.  Returns the length written into out.
 */
static inline size_t fuzz_empty_image(uint8_t out[2 * IMG_HEADER_SLOT], unsigned cbits,
				      uint64_t vsize, uint64_t log_size, uint64_t bat_clusters,
				      const uint8_t uuid[16])
{
	uint64_t cs = 1ull << cbits;

	memset(out, 0, 2 * IMG_HEADER_SLOT);
	for (unsigned s = 0; s < 2; s++) {
		uint8_t *h = out + s * IMG_HEADER_SLOT;
		memcpy(h, imgi_header_magic, 8);
		put_le32(h + 8, IMG_FORMAT_VERSION);
		put_le32(h + 12, IMG_HEADER_SIZE_V1);
		put_le32(h + 20, cbits);
		put_le64(h + 24, 2 - s);            /* seq */
		put_le64(h + 64, vsize);
		put_le64(h + 72, cs);               /* log offset */
		put_le64(h + 80, log_size);
		put_le64(h + 88, 1);                /* log seq */
		put_le64(h + 96, cs + log_size);    /* BAT offset */
		put_le64(h + 104, bat_clusters);
		memcpy(h + 112, uuid, 16);
	}
	fuzz_fix_crcs(out, 2 * IMG_HEADER_SLOT);
	return 2 * IMG_HEADER_SLOT;
}

#endif
