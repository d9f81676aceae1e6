/* SPDX-License-Identifier: MIT */
/*
 * The crash-point test (FORMAT.md §6), the way SQLite tests its pager.
 *
 * Each workload is a fixed sequence of library calls (fixed seed) on a small
 * image held by the crash backend (libimg/io_crash.c).  A dry run counts the
 * mutating host calls E it makes, open and close included.  Then for each
 * crash point N in 1..E (all of them, or a sample) the workload runs again
 * with power lost at call N, and the disk left behind is materialized
 * several ways: every pending write dropped, every one kept, and random
 * keep/drop/tear choices.  Each result must:
 *   - open read-write (the log replays, leaks are reclaimed);
 *   - pass img_check with no corruption and no leak;
 *   - read back every byte flushed before the crash exactly, and every byte
 *     written since as its old or one of its new values (tests/helpers/
 *     bytemodel.c), with a virtual size that was durable or set since;
 *   - close cleanly and reopen clean.
 *
 * A crash point is one (workload, N, materialization).  Environment:
 *   CRASH_FULL=1          longer workloads, three variants of each (other
 *                         random choices), eight materializations per N
 *   CRASH_ONLY=W#V:N:MODE:SEED   one point, as printed by a failure (MODE
 *                         drop|keep|random), verbose
 *   CRASH_WORKLOAD=W      only workload W
 *   CRASH_VERBOSE=1       say more
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libimg.h"
#include "format.h"
#include "testio.h"
#include "../helpers/bytemodel.h"
#include "../helpers/crashrun.h"
#include "../helpers/ioborrow.h"
#include "../helpers/prng.h"
#include "../helpers/tassert.h"

#define CLUSTER   (64u * 1024)
#define MIB       (1024u * 1024)
#define VSIZE     (4 * MIB)
#define MODEL_CAP (8 * MIB)  /* bytes modelled by grow (past: zeros) */
#define MAXIO     (320u * 1024)

/* Crash points per workload in the fast run: all of them, except in
 * sanitizer builds (8x slower), which sample 24 per workload. */
#if defined(__SANITIZE_ADDRESS__)
#define FAST_BUDGET 24
#else
#define FAST_BUDGET 1000
#endif

struct run {
	struct img_io *cio;         /* the crash backend; owned by the driver */
	struct img *img;            /* open handle, or NULL */
	unsigned open_flags;
	struct bytemodel m;
	struct prng r;
	uint8_t *buf;               /* MAXIO bytes */
	int dry;                    /* no crash armed: verify as we go */
};

typedef int (*wl_fn)(struct run *x);

struct workload {
	const char *name;
	uint64_t vsize;
	wl_fn prep;                 /* builds the starting image; not crash-tested */
	int prep_kind;              /* PREP_*: how the starting image is left */
	unsigned open_flags;        /* of the crash-tested run */
	wl_fn body;                 /* crash-tested, between open and close */
	uint64_t seed;
	int backing;                /* a delta over an image with data (COW) */
};

enum { PREP_CLEAN, PREP_CRASHED, PREP_CORRUPT };

static int verbose;
/* Workload length: 1 for the fast run, more for CRASH_FULL. */
static int scale = 1;

static struct img_io *borrow(struct img_io *io)
{
	struct img_io *b = io_borrow(io);
	T_ASSERT(b);
	return b;
}

#define TRY(expr) do { int r_ = (expr); if (r_) return r_; } while (0)

/* The backing image of the current workload's deltas (NULL: none): an
 * image in memory, opened read-only under each open of the delta. */
static uint8_t *bk_bytes;
static size_t bk_len;

static int open_chain(struct img_io *io, unsigned flags, struct img **out)
{
	struct img_io *bio;
	struct img *b;
	int r;

	if (!bk_bytes)
		return img_open_io(io, flags, out);
	T_OK(img_io_mem_new(bk_bytes, bk_len, &bio));
	if ((r = img_open_io(bio, 0, &b))) {
		io->ops->close(io);
		return r;
	}
	return imgi_open_io_over(io, flags, b, out);
}

/* ---- operations: the model first (the call may reach the disk even if it
 * fails at a crash), then the library call -------------------------------- */

static int op_open(struct run *x)
{
	int r = open_chain(borrow(x->cio), x->open_flags, &x->img);

	if (r)
		x->img = NULL;
	if (r && x->dry)
		T_FAIL("dry run: open: %s (%s)", img_strerror(r), img_last_error());
	return r;
}

static int op_close(struct run *x)
{
	int r = img_close(x->img);

	x->img = NULL;
	if (!r && !imgi_io_crash_crashed(x->cio))
		bm_flush(&x->m);
	if (r && x->dry)
		T_FAIL("dry run: close: %s (%s)", img_strerror(r), img_last_error());
	return r;
}

static int dry_check(struct run *x, const char *what, int r)
{
	if (r && x->dry)
		T_FAIL("dry run: %s: %s (%s)", what, img_strerror(r), img_last_error());
	return r;
}

static int op_write(struct run *x, uint64_t off, uint64_t len)
{
	ssize_t n;

	T_ASSERT(len <= MAXIO);
	prng_fill(&x->r, x->buf, len);
	/* Now and then a buffer of zeros (compact's zero detection). */
	if (prng_below(&x->r, 8) == 0)
		memset(x->buf, 0, len);
	T_OK(bm_write(&x->m, off, x->buf, len));
	n = img_pwrite(x->img, x->buf, len, off);
	return dry_check(x, "pwrite", n == (ssize_t)len ? 0 : n < 0 ? (int)n : -EIO);
}

static int op_discard(struct run *x, uint64_t off, uint64_t len)
{
	T_OK(bm_zero(&x->m, off, len));
	return dry_check(x, "discard", img_discard(x->img, off, len));
}

static int op_zeroes(struct run *x, uint64_t off, uint64_t len)
{
	T_OK(bm_zero(&x->m, off, len));
	return dry_check(x, "write_zeroes", img_write_zeroes(x->img, off, len));
}

static int op_flush(struct run *x)
{
	int r = img_flush(x->img);

	if (!r)
		bm_flush(&x->m);
	return dry_check(x, "flush", r);
}

static int op_resize(struct run *x, uint64_t size, unsigned flags)
{
	T_OK(bm_resize(&x->m, size));
	return dry_check(x, "resize", img_resize(x->img, size, flags));
}

/* want_work: in the dry run, fail unless it moved clusters and truncated
 * (1), and also freed zero clusters (2). */
static int op_compact(struct run *x, int want_work)
{
	struct img_compact_opts o = { 0 };
	struct img_compact_stats st;
	int r = img_compact(x->img, &o, &st);

	dry_check(x, "compact", r);
	if (x->dry && verbose)
		printf("    compact: moved %" PRIu64 ", zero clusters freed %" PRIu64
		       ", file %" PRIu64 " -> %" PRIu64 "\n", st.clusters_moved,
		       st.zero_clusters_freed, st.file_size_before, st.file_size_after);
	if (x->dry && want_work && (!st.clusters_moved || st.file_size_after >= st.file_size_before))
		T_FAIL("dry run: compact moved %" PRIu64 " clusters, file %" PRIu64 " -> %" PRIu64
		       ": the workload does not exercise relocation and truncation",
		       st.clusters_moved, st.file_size_before, st.file_size_after);
	if (x->dry && want_work > 1 && !st.zero_clusters_freed)
		T_FAIL("dry run: compact found no zero cluster to free");
	return r;
}

/* Reads the whole modelled disk back; outside a crash it must be exact. */
static int op_verify(struct run *x)
{
	uint64_t n = x->m.size < x->m.cap ? x->m.size : x->m.cap, bad;
	uint8_t *b;
	ssize_t got;

	if (!x->dry)
		return 0;
	b = malloc(n ? n : 1);
	T_ASSERT(b);
	got = img_pread(x->img, b, n, 0);
	if (got != (ssize_t)n)
		T_FAIL("dry run: pread: %zd (%s)", got, img_last_error());
	if (bm_check_exact(&x->m, 0, b, n, &bad)) {
		char d[512];
		bm_describe(&x->m, bad, d, sizeof(d));
		T_FAIL("dry run: byte %#" PRIx64 " reads %#x; %s", bad, b[bad], d);
	}
	free(b);
	return 0;
}

/* After an open that may have recovered a crash: what it chose to keep is
 * now one more possible content of each byte (it must be allowed). */
static int op_observe(struct run *x)
{
	uint64_t n = x->m.size < x->m.cap ? x->m.size : x->m.cap, bad;
	uint8_t *b = malloc(n ? n : 1);
	ssize_t got;

	T_ASSERT(b);
	got = img_pread(x->img, b, n, 0);
	if (got != (ssize_t)n) {
		free(b);
		return got < 0 ? (int)got : -EIO;
	}
	if (bm_check(&x->m, 0, b, n, &bad)) {
		char d[512];
		bm_describe(&x->m, bad, d, sizeof(d));
		T_FAIL("after recovery: byte %#" PRIx64 " reads %#x; %s", bad, b[bad], d);
	}
	T_OK(bm_write(&x->m, 0, b, n));
	free(b);
	return 0;
}

/* Host offset of virtual offset off (0 when not stored). */
static uint64_t host_of(struct run *x, uint64_t off)
{
	struct img_extent e;
	T_OK(img_map(x->img, off, &e));
	return e.type == IMG_EXTENT_DATA ? e.host_offset : 0;
}

static uint64_t file_size(struct run *x)
{
	struct img_info info;
	T_OK(img_info(x->img, &info));
	return info.file_size;
}

/* ---- random shapes -------------------------------------------------------- */

static uint64_t rnd_len(struct run *x)
{
	switch (prng_below(&x->r, 10)) {
	case 0: case 1: case 2: case 3:
		return prng_range(&x->r, 1, 4096);
	case 4: case 5: case 6:
		return prng_range(&x->r, 4096, CLUSTER + 8192);
	case 7: case 8:
		return CLUSTER * prng_range(&x->r, 1, 3);
	default:
		return prng_range(&x->r, CLUSTER, 4 * CLUSTER);
	}
}

/* A range inside [lo, hi): cluster-aligned when len is whole clusters. */
static uint64_t rnd_off(struct run *x, uint64_t lo, uint64_t hi, uint64_t len)
{
	uint64_t span = hi - lo - len;

	if (len % CLUSTER == 0 && prng_below(&x->r, 3))
		return lo + prng_below(&x->r, span / CLUSTER + 1) * CLUSTER;
	return lo + prng_below(&x->r, span + 1);
}

static int rnd_write(struct run *x, uint64_t lo, uint64_t hi)
{
	uint64_t len = rnd_len(x);
	if (len > hi - lo)
		len = hi - lo;
	return op_write(x, rnd_off(x, lo, hi, len), len);
}

static int maybe_flush(struct run *x, unsigned one_in)
{
	return prng_below(&x->r, one_in) ? 0 : op_flush(x);
}

/* ---- workloads ------------------------------------------------------------ */

/* Fills [0, end) with data. */
static int fill(struct run *x, uint64_t end)
{
	for (uint64_t off = 0; off < end; off += 2 * CLUSTER)
		TRY(op_write(x, off, end - off < 2 * CLUSTER ? end - off : 2 * CLUSTER));
	return 0;
}

static int prep_fill(struct run *x)
{
	TRY(fill(x, VSIZE));
	return op_verify(x);
}

/* Allocating writes into a fresh image. */
static int wl_alloc(struct run *x)
{
	for (int i = 0; i < 40 * scale; i++) {
		TRY(rnd_write(x, 0, VSIZE));
		TRY(maybe_flush(x, 4));
	}
	TRY(op_verify(x));
	return op_flush(x);
}

/* Overwrites of allocated clusters, partial and whole. */
static int wl_overwrite(struct run *x)
{
	for (int i = 0; i < 40 * scale; i++) {
		TRY(rnd_write(x, 0, VSIZE));
		TRY(maybe_flush(x, 4));
	}
	return op_verify(x);
}

/* Discards (whole and partial clusters) with writes that reuse the freed
 * clusters: a freed cluster must never show up in another place. */
static int wl_discard(struct run *x)
{
	for (int i = 0; i < 30 * scale; i++) {
		uint64_t len = rnd_len(x);
		TRY(op_discard(x, rnd_off(x, 0, VSIZE, len), len));
		TRY(rnd_write(x, 0, VSIZE));
		TRY(maybe_flush(x, 4));
	}
	return op_verify(x);
}

static int wl_zeroes(struct run *x)
{
	for (int i = 0; i < 30 * scale; i++) {
		uint64_t len = rnd_len(x);
		TRY(op_zeroes(x, rnd_off(x, 0, VSIZE, len), len));
		TRY(rnd_write(x, 0, VSIZE));
		TRY(maybe_flush(x, 4));
	}
	return op_verify(x);
}

/* Grows past what one BAT cluster maps (508 MiB at 64 KiB clusters), so the
 * data clusters right after the BAT are relocated; twice. */
static int prep_grow(struct run *x)
{
	TRY(fill(x, 2 * MIB));
	return op_verify(x);
}

static int wl_grow(struct run *x)
{
	uint64_t h0 = x->dry ? host_of(x, 0) : 0;

	TRY(rnd_write(x, 0, VSIZE));
	TRY(op_resize(x, 600ull * MIB, 0));
	if (x->dry && host_of(x, 0) == h0)
		T_FAIL("dry run: growing did not relocate the first data cluster");
	TRY(rnd_write(x, 0, MODEL_CAP));
	TRY(op_write(x, 5 * MIB, CLUSTER));
	TRY(op_flush(x));
	TRY(rnd_write(x, 0, MODEL_CAP));
	TRY(op_resize(x, 1100ull * MIB + 512, 0));
	TRY(rnd_write(x, 0, MODEL_CAP));
	return op_verify(x);
}

/* Shrinks that drop data, with live clusters in the file's tail to move,
 * a new end inside a cluster, then growth again. */
static int prep_shrink(struct run *x)
{
	TRY(fill(x, VSIZE));
	/* Holes low in the file for the tail's clusters to move into. */
	for (uint64_t off = 0; off < 2 * MIB; off += 3 * CLUSTER)
		TRY(op_discard(x, off, CLUSTER));
	return op_verify(x);
}

static int wl_shrink(struct run *x)
{
	uint64_t fs0 = x->dry ? file_size(x) : 0;

	TRY(op_resize(x, 3 * MIB + 5 * 512, IMG_RESIZE_DISCARD_DATA));
	if (x->dry && file_size(x) >= fs0)
		T_FAIL("dry run: shrinking did not truncate the host file");
	TRY(rnd_write(x, 0, 3 * MIB));
	TRY(op_flush(x));
	TRY(op_discard(x, 1 * MIB, 2 * MIB + 5 * 512));
	TRY(op_resize(x, 1 * MIB, 0));
	TRY(rnd_write(x, 0, 1 * MIB));
	TRY(op_resize(x, VSIZE, 0));
	TRY(rnd_write(x, 0, VSIZE));
	return op_verify(x);
}

/* Compaction: zero detection, relocation from the tail, truncation. */
static int prep_compact(struct run *x)
{
	TRY(fill(x, VSIZE));
	for (int i = 0; i < 24; i++) {
		uint64_t c = prng_below(&x->r, VSIZE / CLUSTER);
		if (i % 3 == 0) {
			memset(x->buf, 0, CLUSTER);
			T_OK(bm_write(&x->m, c * CLUSTER, x->buf, CLUSTER));
			if (img_pwrite(x->img, x->buf, CLUSTER, c * CLUSTER) != CLUSTER)
				T_FAIL("prep: pwrite");
		} else {
			TRY(op_discard(x, c * CLUSTER, CLUSTER));
		}
	}
	return op_verify(x);
}

static int wl_compact(struct run *x)
{
	TRY(op_compact(x, 2));
	TRY(op_verify(x));
	TRY(rnd_write(x, 0, VSIZE));
	TRY(op_discard(x, 0, 8 * CLUSTER));
	TRY(op_compact(x, 1));
	return op_verify(x);
}

/* A delta over an image with data: partial writes copy clusters up from
 * the backing image (data before map covers the copy), discards and zeroes
 * hide it, whole writes and flushes in between. */
static int wl_cow(struct run *x)
{
	for (int i = 0; i < 30 * scale; i++) {
		uint64_t k = prng_below(&x->r, 8), off = rnd_off(x, 0, VSIZE, 4096);
		if (k == 0)
			TRY(op_discard(x, off, 1 + prng_below(&x->r, 2 * CLUSTER) % (VSIZE - off)));
		else if (k == 1)
			TRY(op_zeroes(x, off, 1 + prng_below(&x->r, 2 * CLUSTER) % (VSIZE - off)));
		else
			TRY(rnd_write(x, 0, VSIZE));
		TRY(maybe_flush(x, 4));
	}
	TRY(op_verify(x));
	return op_flush(x);
}

/* Whole clusters stored compressed: random bytes over part of the cluster,
 * zeros after (so it compresses, several payloads per host cluster). */
static int op_write_comp(struct run *x, uint64_t c)
{
	uint64_t n = 512 * (1 + prng_below(&x->r, 40));
	int r;

	prng_fill(&x->r, x->buf, n);
	memset(x->buf + n, 0, CLUSTER - n);
	T_OK(bm_write(&x->m, c * CLUSTER, x->buf, CLUSTER));
	r = img_write_compressed(x->img, x->buf, CLUSTER, c * CLUSTER);
	return dry_check(x, "write_compressed", r < 0 ? r : 0);
}

static int prep_comp(struct run *x)
{
	for (uint64_t c = 0; c < VSIZE / CLUSTER; c++)
		TRY(op_write_comp(x, c));
	return op_verify(x);
}

/* Writes into compressed clusters (rewritten uncompressed, the payload's
 * sectors freed after the commit), discards, new compressed clusters, and
 * compaction repacking the payloads. */
static int wl_comp(struct run *x)
{
	for (int i = 0; i < 30 * scale; i++) {
		uint64_t k = prng_below(&x->r, 6);
		if (k == 0)
			TRY(op_write_comp(x, prng_below(&x->r, VSIZE / CLUSTER)));
		else if (k == 1)
			TRY(op_discard(x, prng_below(&x->r, VSIZE / CLUSTER) * CLUSTER, CLUSTER));
		else
			TRY(rnd_write(x, 0, VSIZE));
		TRY(maybe_flush(x, 4));
		if (i == 15 * scale)
			TRY(op_compact(x, 0));
	}
	TRY(op_compact(x, 0));
	return op_verify(x);
}

/* The starting image of recover and repair: writes, discards and rewrites
 * left in the middle by a crash (make_base picks a crash that leaves a log
 * to replay and leaked clusters). */
static int prep_crashed(struct run *x)
{
	TRY(fill(x, 2 * MIB));
	TRY(op_flush(x));
	for (int i = 0; i < 12; i++) {
		uint64_t c = prng_below(&x->r, 2 * MIB / CLUSTER);
		TRY(op_discard(x, c * CLUSTER, CLUSTER));
		TRY(op_write(x, 2 * MIB + (uint64_t)i * CLUSTER, CLUSTER));
		TRY(op_write(x, c * CLUSTER, CLUSTER / 2));
		if (i % 4 == 3)
			TRY(op_flush(x));
	}
	return 0;
}

/* Opening after a crash (replay, checkpoint, reclaim) crashes too. */
static int wl_recover(struct run *x)
{
	TRY(op_observe(x));
	TRY(rnd_write(x, 0, VSIZE));
	TRY(op_flush(x));
	TRY(rnd_write(x, 0, VSIZE));
	return op_verify(x);
}

static void count_problem(void *arg, enum img_check_severity sev, int fixed, const char *msg)
{
	(void)sev; (void)fixed; (void)msg;
	(*(unsigned *)arg)++;
}

/* imgcheck --repair on a crashed image: it reclaims the leaks. */
static int wl_repair(struct run *x)
{
	struct img_check_opts o = { .flags = IMG_CHECK_REPAIR };
	struct img_check_result res;
	unsigned problems = 0;
	int r;

	o.report = count_problem;
	o.report_arg = &problems;
	TRY(op_observe(x));
	r = img_check(x->img, &o, &res);
	TRY(dry_check(x, "check --repair", r));
	if (x->dry) {
		if (res.corruptions || !res.leaks || res.leaks_fixed != res.leaks || !problems)
			T_FAIL("dry run: repair: %" PRIu64 " corruptions, %" PRIu64 " leaks, %"
			       PRIu64 " fixed, %u reported", res.corruptions, res.leaks,
			       res.leaks_fixed, problems);
	}
	TRY(op_flush(x));
	TRY(rnd_write(x, 0, VSIZE));
	return op_verify(x);
}

/* Everything at once, with a reopen in the middle. */
static int wl_mixed(struct run *x)
{
	for (int i = 0; i < 24 * scale; i++) {
		uint64_t len = rnd_len(x);
		switch (prng_below(&x->r, 6)) {
		case 0:
			TRY(op_discard(x, rnd_off(x, 0, VSIZE, len), len));
			break;
		case 1:
			TRY(op_zeroes(x, rnd_off(x, 0, VSIZE, len), len));
			break;
		default:
			TRY(rnd_write(x, 0, VSIZE));
		}
		if (i % 24 == 12) {
			TRY(op_close(x));
			TRY(op_open(x));
		}
		if (i % 24 == 16)
			TRY(op_compact(x, 0));
		TRY(maybe_flush(x, 5));
	}
	return op_verify(x);
}

/* check --repair of real corruption (FORMAT.md section 4.1): a duplicate
 * mapping (the later entry gets its own copy), an entry with an unknown
 * state and one past the virtual size (both cleared).  Until the repair
 * is durable a crash leaves the image as corrupt as it was: verify_point
 * repairs it first (PREP_CORRUPT). */
static int wl_repair_corrupt(struct run *x)
{
	struct img_check_opts o = { .flags = IMG_CHECK_REPAIR };
	struct img_check_result res;
	int r;

	TRY(op_observe(x));
	r = img_check(x->img, &o, &res);
	TRY(dry_check(x, "check --repair", r));
	if (x->dry && (res.corruptions != 3 || res.corruptions_fixed != 3))
		T_FAIL("dry run: repair: %" PRIu64 " corruptions, %" PRIu64 " fixed (expected 3, 3)",
		       res.corruptions, res.corruptions_fixed);
	TRY(op_flush(x));
	/* The two clusters that shared one are independent now. */
	TRY(op_write(x, 2 * CLUSTER + 100, 1000));
	TRY(op_write(x, 5 * CLUSTER + 100, 1000));
	return op_verify(x);
}

static const struct workload workloads[] = {
	{ "alloc",     VSIZE, NULL,         0, IMG_OPEN_RDWR, wl_alloc,     101, 0 },
	{ "overwrite", VSIZE, prep_fill,    0, IMG_OPEN_RDWR, wl_overwrite, 102, 0 },
	{ "discard",   VSIZE, prep_fill,    0, IMG_OPEN_RDWR, wl_discard,   103, 0 },
	{ "zeroes",    VSIZE, prep_fill,    0, IMG_OPEN_RDWR, wl_zeroes,    104, 0 },
	{ "grow",      VSIZE, prep_grow,    0, IMG_OPEN_RDWR, wl_grow,      105, 0 },
	{ "shrink",    VSIZE, prep_shrink,  0, IMG_OPEN_RDWR, wl_shrink,    106, 0 },
	{ "compact",   VSIZE, prep_compact, 0, IMG_OPEN_RDWR, wl_compact,   107, 0 },
	{ "recover",   VSIZE, prep_crashed, PREP_CRASHED, IMG_OPEN_RDWR, wl_recover, 108, 0 },
	{ "repair",    VSIZE, prep_crashed, PREP_CRASHED, IMG_OPEN_RDWR | IMG_OPEN_CHECK, wl_repair, 109, 0 },
	{ "mixed",     VSIZE, prep_fill,    0, IMG_OPEN_RDWR, wl_mixed,     110, 0 },
	{ "cow",       VSIZE, NULL,         0, IMG_OPEN_RDWR, wl_cow,       112, 1 },
	{ "compressed", VSIZE, prep_comp,   0, IMG_OPEN_RDWR, wl_comp,      113, 0 },
	{ "repair-corrupt", VSIZE, prep_fill, PREP_CORRUPT, IMG_OPEN_RDWR | IMG_OPEN_CHECK,
	  wl_repair_corrupt, 111, 0 },
};

/* ---- driver --------------------------------------------------------------- */

struct base {
	uint8_t *bytes;
	size_t len;
	struct bytemodel m;     /* what the starting image holds */
};

/* Runs open, fn, close on cio with power lost at call arm (0: never).
 * Leaves the model in x->m. */
static void run_on(struct run *x, struct img_io *cio, const struct bytemodel *m0,
		   unsigned flags, wl_fn fn, uint64_t seed, uint64_t arm)
{
	int r;

	x->cio = cio;
	x->img = NULL;
	x->open_flags = flags;
	x->dry = !arm;
	prng_seed(&x->r, seed);
	T_OK(bm_copy(&x->m, m0));
	imgi_io_crash_arm(cio, arm);
	r = op_open(x);
	if (!r)
		r = fn(x);
	if (x->img) {
		int r2 = op_close(x);
		if (!r)
			r = r2;
	}
	if (x->dry && r)
		T_FAIL("dry run failed: %s", img_strerror(r));
	if (arm && !imgi_io_crash_crashed(cio))
		T_FAIL("crash point %" PRIu64 " not reached (%" PRIu64 " calls): the workload "
		       "is not deterministic", arm, imgi_io_crash_events(cio));
	if (arm && !r)
		T_FAIL("crash point %" PRIu64 ": the workload reported success after power loss", arm);
}

static void take_bytes(struct img_io *cio, struct imgi_crash_stats *st, enum imgi_crash_mode mode,
		       uint64_t seed, struct base *b)
{
	struct img_io *m;
	const void *d;

	T_OK(imgi_io_crash_materialize(cio, mode, seed, st, &m));
	d = img_io_mem_data(m, &b->len);
	b->bytes = malloc(b->len ? b->len : 1);
	T_ASSERT(b->bytes);
	memcpy(b->bytes, d, b->len);
	m->ops->close(m);
}

/* Breaks BAT block 0 of a clean image in place (valid crc, bad entries):
 * entry 5 maps entry 2's cluster, entry 7 has state 5, entry 70 (past the
 * 64 clusters of the disk) is a zero entry.  The model follows: cluster 5
 * reads cluster 2's bytes, cluster 7 reads zeros. */
static void corrupt_base(struct base *b)
{
	struct imgi_header ha, hb, *h;
	uint64_t entries[IMG_ENTRIES_PER_BLOCK], seq;
	char why[160];
	uint8_t *blk;
	int ra, rb;

	ra = imgi_header_decode(b->bytes, &ha, why, sizeof(why));
	rb = imgi_header_decode(b->bytes + IMG_HEADER_SLOT, &hb, why, sizeof(why));
	T_ASSERT(!ra || !rb);
	h = ra ? &hb : rb ? &ha : ha.seq > hb.seq ? &ha : &hb;
	T_ASSERT(!(h->flags & IMG_FLAG_DIRTY) && h->bat_offset + IMG_BLOCK_SIZE <= b->len);
	blk = b->bytes + h->bat_offset;
	T_EQ(imgi_bat_block_decode(blk, 0, entries, &seq, why, sizeof(why)), 0);
	T_ASSERT(IMG_E_STATE(entries[2]) == IMG_E_ALLOC && IMG_E_STATE(entries[5]) == IMG_E_ALLOC);
	T_ASSERT(VSIZE / CLUSTER < 70);
	entries[5] = entries[2];
	entries[7] = IMG_E_MAKE(5, 0);
	entries[70] = IMG_E_MAKE(IMG_E_ZERO, 0);
	imgi_bat_block_encode(0, seq, entries, blk);
	T_OK(bm_write(&b->m, 5 * CLUSTER, b->m.cur + 2 * CLUSTER, CLUSTER));
	T_OK(bm_zero(&b->m, 7 * CLUSTER, CLUSTER));
	bm_flush(&b->m);
}

/* The image a workload starts from. */
static void make_base(const struct workload *w, struct run *x, struct base *b)
{
	struct img_create_opts o = { .virtual_size = w->vsize, .cluster_size = CLUSTER };
	struct bytemodel empty;
	struct img_io *cio;
	uint64_t events;

	T_OK(imgi_io_crash_new(NULL, 0, &cio));
	/* Only grow writes past the starting size: smaller models elsewhere. */
	T_OK(bm_init(&empty, w->vsize, w->body == wl_grow ? MODEL_CAP : w->vsize));
	free(bk_bytes);
	bk_bytes = NULL;
	if (w->backing) {
		/* The backing image: data in most clusters, some zero, some
		 * never written; the delta starts out reading all of it. */
		struct img_io *bio;
		struct img *bi;
		const void *d;
		struct prng pr;
		T_OK(img_io_mem_new(NULL, 0, &bio));
		T_OK(img_create_io(bio, &o));
		T_OK(img_open_io(borrow(bio), IMG_OPEN_RDWR, &bi));
		prng_seed(&pr, w->seed ^ 0xbacc);
		for (uint64_t c = 0; c < w->vsize / CLUSTER; c++) {
			if (c % 5 == 4)
				continue;
			prng_fill(&pr, x->buf, CLUSTER);
			if (c % 7 == 3)
				memset(x->buf, 0, CLUSTER);
			T_EQ(img_pwrite(bi, x->buf, CLUSTER, c * CLUSTER), CLUSTER);
			T_OK(bm_write(&empty, c * CLUSTER, x->buf, CLUSTER));
		}
		bm_flush(&empty);
		T_OK(img_close(bi));
		d = img_io_mem_data(bio, &bk_len);
		bk_bytes = malloc(bk_len);
		T_ASSERT(bk_bytes);
		memcpy(bk_bytes, d, bk_len);
		bio->ops->close(bio);
		T_OK(img_io_mem_new(bk_bytes, bk_len, &bio));
		T_OK(img_open_io(bio, 0, &bi));
		o.backing_file = "base.img";
		T_OK(imgi_create_io_over(cio, &o, bi));
		img_close(bi);
	} else {
		T_OK(img_create_io(cio, &o));
	}
	if (!w->prep) {
		take_bytes(cio, NULL, IMG_CRASH_KEEP_ALL, 0, b);
		b->m = empty;
		cio->ops->close(cio);
		return;
	}
	run_on(x, cio, &empty, IMG_OPEN_RDWR, w->prep, w->seed ^ 0x5eed, 0);
	if (w->prep_kind != PREP_CRASHED) {
		take_bytes(cio, NULL, IMG_CRASH_KEEP_ALL, 0, b);
		b->m = x->m;
		if (w->prep_kind == PREP_CORRUPT)
			corrupt_base(b);
		bm_free(&empty);
		cio->ops->close(cio);
		return;
	}
	/* A crash in the second half of prep that leaves both a log to replay
	 * and leaked clusters: the first found, deterministically. */
	events = imgi_io_crash_events(cio);
	cio->ops->close(cio);
	bm_free(&x->m);
	for (uint64_t n = events / 2; n < events; n++) {
		for (uint64_t seed = 1; seed <= 4; seed++) {
			struct img *img;
			struct img_info info;
			struct img_io *m;
			const void *d;
			size_t len;

			T_OK(imgi_io_crash_new(NULL, 0, &cio));
			T_OK(img_create_io(cio, &o));
			run_on(x, cio, &empty, IMG_OPEN_RDWR, w->prep, w->seed ^ 0x5eed, n);
			T_OK(imgi_io_crash_materialize(cio, IMG_CRASH_RANDOM, seed, NULL, &m));
			d = img_io_mem_data(m, &len);
			b->bytes = malloc(len);
			T_ASSERT(b->bytes);
			memcpy(b->bytes, d, len);
			b->len = len;
			if (open_chain(m, IMG_OPEN_NOLOCK, &img) == 0) {
				img_info(img, &info);
				img_close(img);
				if (info.log_replayed && info.leaked_clusters) {
					if (verbose)
						printf("    %s: starts from prep crashed at %" PRIu64 "/%"
						       PRIu64 " (seed %" PRIu64 "): %" PRIu64 " transactions "
						       "to replay, %" PRIu64 " leaked clusters\n", w->name, n,
						       events, seed, info.log_replayed, info.leaked_clusters);
					b->m = x->m;
					bm_free(&empty);
					cio->ops->close(cio);
					return;
				}
			}
			free(b->bytes);
			b->bytes = NULL;
			bm_free(&x->m);
			cio->ops->close(cio);
		}
	}
	T_FAIL("%s: no crash of prep leaves both a log to replay and leaks", w->name);
}

static void report_problem(void *arg, enum img_check_severity sev, int fixed, const char *msg)
{
	(void)fixed;
	if (arg)
		fprintf(stderr, "      check: %s: %s\n",
			sev == IMG_CHECK_CORRUPT ? "CORRUPT" : sev == IMG_CHECK_LEAK ? "leak" : "info",
			msg);
}

/* Checks an open image: 0 clean, else prints why. */
static int check_clean(struct img *img, const char *where, const char *when)
{
	struct img_check_opts co = { .report = report_problem };
	struct img_check_result res;
	int r;

	co.report_arg = verbose ? (void *)where : NULL;
	r = img_check(img, &co, &res);
	if (!r && !res.corruptions && !res.leaks)
		return 0;
	fprintf(stderr, "FAIL %s: check %s: %s, %" PRIu64 " corruptions, %" PRIu64 " leaks (%s)\n",
		where, when, img_strerror(r), res.corruptions, res.leaks, img_last_error());
	if (!verbose) {
		co.report_arg = (void *)where;
		img_check(img, &co, &res);
	}
	return 1;
}

/* An image that was corrupt before the workload may still be (the crash
 * came before the repair was durable): check --repair must fix all of it. */
static int repair_first(struct img_io *m, const char *where)
{
	struct img_check_opts o = { .flags = IMG_CHECK_REPAIR, .report = report_problem };
	struct img_check_result res;
	struct img *img;
	int r;

	o.report_arg = verbose ? (void *)where : NULL;
	r = open_chain(borrow(m), IMG_OPEN_RDWR | IMG_OPEN_CHECK, &img);
	if (r) {
		fprintf(stderr, "FAIL %s: open for repair: %s (%s)\n", where, img_strerror(r),
			img_last_error());
		return 1;
	}
	r = img_check(img, &o, &res);
	if (r || res.corruptions != res.corruptions_fixed || res.leaks != res.leaks_fixed) {
		fprintf(stderr, "FAIL %s: repair: %s, %" PRIu64 "/%" PRIu64 " corruptions and %"
			PRIu64 "/%" PRIu64 " leaks fixed (%s)\n", where, img_strerror(r),
			res.corruptions_fixed, res.corruptions, res.leaks_fixed, res.leaks,
			img_last_error());
		img_close(img);
		return 1;
	}
	r = img_close(img);
	if (r)
		fprintf(stderr, "FAIL %s: close after repair: %s (%s)\n", where, img_strerror(r),
			img_last_error());
	return r != 0;
}

/* One materialization of a crash: 0 when it passes, else prints why.
 * Reopens read-write (recovery), checks, compares with the model, closes;
 * then reopens read-only: clean, nothing to replay, the same contents. */
static int verify_point(const struct workload *w, struct run *x, uint64_t n,
			enum imgi_crash_mode mode, uint64_t seed)
{
	struct imgi_crash_stats cst;
	struct img_info info, info2;
	struct img_io *m;
	struct img *img = NULL;
	uint64_t len = 0, bad;
	char where[160];
	uint8_t *b = NULL, *b2 = NULL;
	int r, ok = 0;

	snprintf(where, sizeof(where), "%s:%" PRIu64 ":%s:%" PRIu64, w->name, n,
		 crash_mode_name(mode), seed);
	T_OK(imgi_io_crash_materialize(x->cio, mode, seed, &cst, &m));
	if (verbose)
		printf("  %s: pending kept %" PRIu64 " dropped %" PRIu64 " torn %" PRIu64 "\n",
		       where, cst.kept, cst.dropped, cst.torn);
	if (w->prep_kind == PREP_CORRUPT && repair_first(m, where))
		goto out;
	r = open_chain(borrow(m), IMG_OPEN_RDWR, &img);
	if (r) {
		fprintf(stderr, "FAIL %s: reopen: %s (%s)\n", where, img_strerror(r), img_last_error());
		img = NULL;
		goto out;
	}
	img_info(img, &info);
	if (!bm_size_ok(&x->m, info.virtual_size)) {
		fprintf(stderr, "FAIL %s: virtual size %" PRIu64 " (flushed %" PRIu64 ", latest %"
			PRIu64 ")\n", where, info.virtual_size, x->m.flushed_size, x->m.size);
		goto out;
	}
	if (check_clean(img, where, "after recovery"))
		goto out;
	len = info.virtual_size < x->m.cap ? info.virtual_size : x->m.cap;
	b = malloc(len ? len : 1);
	b2 = malloc(len ? len : 1);
	T_ASSERT(b && b2);
	if (img_pread(img, b, len, 0) != (ssize_t)len) {
		fprintf(stderr, "FAIL %s: pread: %s\n", where, img_last_error());
		goto out;
	}
	if (bm_check(&x->m, 0, b, len, &bad)) {
		char d[512];
		bm_describe(&x->m, bad, d, sizeof(d));
		fprintf(stderr, "FAIL %s: byte %#" PRIx64 " reads %#x; %s\n", where, bad, b[bad], d);
		goto out;
	}
	/* Past the modelled bytes (grown images) nothing holds data. */
	for (uint64_t off = len; off < info.virtual_size; ) {
		struct img_extent e;
		T_OK(img_map(img, off, &e));
		if (!e.length)
			break;
		if (e.type == IMG_EXTENT_DATA) {
			fprintf(stderr, "FAIL %s: data at %#" PRIx64 " past everything written\n",
				where, off);
			goto out;
		}
		off = e.offset + e.length;
	}
	r = img_close(img);
	img = NULL;
	if (r) {
		fprintf(stderr, "FAIL %s: close after recovery: %s (%s)\n", where, img_strerror(r),
			img_last_error());
		goto out;
	}
	r = open_chain(borrow(m), 0, &img);
	if (r) {
		fprintf(stderr, "FAIL %s: second open: %s (%s)\n", where, img_strerror(r),
			img_last_error());
		img = NULL;
		goto out;
	}
	img_info(img, &info2);
	if (info2.dirty || info2.log_replayed || info2.virtual_size != info.virtual_size) {
		fprintf(stderr, "FAIL %s: after a clean close: dirty %u, %" PRIu64 " transactions "
			"to replay, size %" PRIu64 " (was %" PRIu64 ")\n", where, info2.dirty,
			info2.log_replayed, info2.virtual_size, info.virtual_size);
		goto out;
	}
	if (check_clean(img, where, "after a clean close"))
		goto out;
	if (img_pread(img, b2, len, 0) != (ssize_t)len || memcmp(b, b2, len)) {
		fprintf(stderr, "FAIL %s: contents changed across a clean close\n", where);
		goto out;
	}
	ok = 1;
out:
	free(b);
	free(b2);
	if (img)
		img_close(img);
	m->ops->close(m);
	return !ok;
}

/* The driver's view of one workload (tests/helpers/crashrun.c). */
struct job {
	const struct workload *w;
	struct run x;
	struct base b;
	struct img_io *cio;
};

static uint64_t job_dry(void *arg)
{
	struct job *j = arg;
	uint64_t events;

	/* Dry run: count the calls, verify without a crash. */
	T_OK(imgi_io_crash_new(j->b.bytes, j->b.len, &j->cio));
	run_on(&j->x, j->cio, &j->b.m, j->w->open_flags, j->w->body, j->w->seed, 0);
	events = imgi_io_crash_events(j->cio);
	bm_free(&j->x.m);
	j->cio->ops->close(j->cio);
	return events;
}

static void job_crash(void *arg, uint64_t n)
{
	struct job *j = arg;

	T_OK(imgi_io_crash_new(j->b.bytes, j->b.len, &j->cio));
	run_on(&j->x, j->cio, &j->b.m, j->w->open_flags, j->w->body, j->w->seed, n);
}

static int job_verify(void *arg, uint64_t n, enum imgi_crash_mode mode, uint64_t seed)
{
	struct job *j = arg;

	return verify_point(j->w, &j->x, n, mode, seed);
}

static void job_release(void *arg)
{
	struct job *j = arg;

	bm_free(&j->x.m);
	j->cio->ops->close(j->cio);
}

static void run_workload(const struct crash_settings *cs, const struct workload *w0,
			 unsigned variant, struct crash_totals *tot)
{
	struct workload wv = *w0, *w = &wv;
	struct job j = { .w = &wv };
	char name[64];
	struct crash_workload cw = {
		.name = name, .dry = job_dry, .crash = job_crash, .verify = job_verify,
		.release = job_release, .arg = &j, .fast_budget = FAST_BUDGET,
	};

	/* Variant k runs the same shape with other random choices. */
	wv.seed += 1000 * variant;
	snprintf(name, sizeof(name), "%s#%u", w0->name, variant);
	wv.name = name;
	j.x.buf = malloc(MAXIO);
	T_ASSERT(j.x.buf);
	make_base(w, &j.x, &j.b);
	crash_run_workload(cs, &cw, tot);
	free(j.b.bytes);
	bm_free(&j.b.m);
	free(j.x.buf);
}

int main(void)
{
	struct crash_settings cs;
	unsigned nvariants;
	struct crash_totals tot = { 0 };
	time_t t0 = time(NULL);

	/* Megabyte buffers come and go at every crash point: keep them in the
	 * heap (reused) rather than fresh mmaps (a page fault per 4 KiB). */
	mallopt(M_MMAP_THRESHOLD, 256 << 20);
	mallopt(M_TRIM_THRESHOLD, 512 << 20);
	crash_settings_read(&cs);
	verbose = cs.verbose;
	if (cs.full)
		scale = 3;
	nvariants = cs.full ? 3 : 1;
	printf("crash points: %s run (CRASH_FULL=1 for the full one)\n", cs.full ? "full" : "fast");
	for (unsigned v = 0; v < nvariants; v++)
		for (size_t i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++)
			if (crash_selected(&cs, workloads[i].name, v))
				run_workload(&cs, &workloads[i], v, &tot);
	return crash_summary("crash points", &tot, (long)(time(NULL) - t0));
}
