/* SPDX-License-Identifier: MIT */
/*
 * The crash-point test of snapshot and merge (FORMAT.md §3.1, §6): the
 * operations that span several files and renames, run on a directory in
 * memory (tests/helpers/memfs.c) whose files are crash backends on one
 * clock and whose names survive a power loss only once synced (or as a
 * prefix of the unsynced name operations, in order, as a journaling
 * filesystem commits them).
 *
 * Workloads (fixed seeds), on /mem/disk.img opened read-write with its
 * chain, writes between the steps:
 *   snapshot  img_snapshot_live twice (a generated name, then a given one):
 *             link, new top in a temporary file, the owner recorded in
 *             the snapshot's header (A/B), close, rename, reopen;
 *   merge     img_snapshot_live's reverse: img_merge_live_into of a clone
 *             (its base named; data, zero, discarded and compressed
 *             clusters, larger than its base) into its base: copy down,
 *             flush, close, rename.
 *   snapmerge a snapshot, writes into the new top, then img_merge_live of
 *             the top into its own snapshot (not named): copy down, flush,
 *             close, rename, then the merged image's owner field cleared
 *             (header A/B, FORMAT.md 3.1).  The points of that last step
 *             (the tail of the merge) are always run, also when the
 *             others are sampled.
 * A dry run counts the mutating calls E (writes, flushes, punches,
 * truncates, links, renames, unlinks, new files, chmods, directory syncs).
 * For each crash point N in 1..E (all, or a sample under ASan) the disk is
 * materialized several ways (every unsynced thing dropped, every one kept,
 * random choices).  Each result must:
 *   - open /mem/disk.img read-write with its chain and read every byte
 *     flushed before the crash exactly, every other one as an old or new
 *     value (the operations themselves change no byte: pre- and
 *     post-operation contents are the same);
 *   - let the operation run again to completion (snapshot: another one;
 *     merge: when disk.img is still the delta) with the same contents;
 *   - snapshot: then merge the whole chain down with img_merge_live, no
 *     base named (each snapshot must record its top as owner), the same
 *     contents;
 *   - leave every image in the directory clean for img_check (opened
 *     read-write without its chain: a log replays first).
 * CRASH_FULL=1: three variants of each workload, eight materializations per
 * point.  CRASH_ONLY=W#V:N:MODE:SEED one point, verbose.  CRASH_WORKLOAD=W.
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libimg.h"
#include "testio.h"
#include "../helpers/bytemodel.h"
#include "../helpers/crashrun.h"
#include "../helpers/memfs.h"
#include "../helpers/prng.h"
#include "../helpers/tassert.h"

#define CLUSTER (64u * 1024)
#define MIB     (1024u * 1024)
#define VSIZE   (1 * MIB)
#define DISK    "/mem/disk.img"
#define BASE    "/mem/base.img"

/* Under ASan a point costs ~1 s (file-sized copies at every step): 12 per
 * workload there, all of them elsewhere. */
#if defined(__SANITIZE_ADDRESS__)
#define FAST_BUDGET 12
#else
#define FAST_BUDGET 1000
#endif
/* The mutating calls at the end of an own merge that are always crash
 * points (snapmerge): the owner field's clear after the rename (an open
 * for writing, the header write, the clean close: 7 calls) and the
 * reopen after it. */
#define MERGE_TAIL 16

struct run {
	struct imgi_crash_clock clk;
	struct memfs *fs;
	struct img *img;
	struct bytemodel m;
	struct prng r;
	uint8_t *buf;
	int dry;
	int in_op;              /* the crash came during the snapshot or merge */
	const char *op_name;    /* the snapshot name it was given */
	int in_merge;           /* the crash came during the merge */
	uint64_t merge_end;     /* dry run: the clock after the merge */
};

typedef int (*wl_fn)(struct run *x);

struct workload {
	const char *name;
	wl_fn prep, body;
	int merge;            /* the operation a rerun completes: 1 a merge into
				 * BASE (named), 2 a merge into the own snapshot */
	uint64_t seed;
};

/* The directory a workload starts from. */
struct base {
	size_t n;
	char **names;
	uint8_t **bytes;
	size_t *lens;
	struct bytemodel m;
};

static int verbose, scale = 1;
/* snapmerge: results that showed the merged image with its stale owner
 * field (a crash between the rename and the field's clear) */
static uint64_t stale_seen;

#define TRY(expr) do { int r_ = (expr); if (r_) return r_; } while (0)

static int dry_check(struct run *x, const char *what, int r)
{
	if (r && x->dry)
		T_FAIL("dry run: %s: %s (%s)", what, img_strerror(r), img_last_error());
	return r;
}

static int op_write(struct run *x, uint64_t off, uint64_t len)
{
	ssize_t n;

	prng_fill(&x->r, x->buf, len);
	T_OK(bm_write(&x->m, off, x->buf, len));
	n = img_pwrite(x->img, x->buf, len, off);
	return dry_check(x, "pwrite", n == (ssize_t)len ? 0 : n < 0 ? (int)n : -EIO);
}

static int rnd_write(struct run *x)
{
	uint64_t size = x->m.size, len = prng_range(&x->r, 1, 2 * CLUSTER);
	return op_write(x, prng_below(&x->r, size - len + 1), len);
}

static int op_flush(struct run *x)
{
	int r = img_flush(x->img);

	if (!r)
		bm_flush(&x->m);
	return dry_check(x, "flush", r);
}

static unsigned depth(struct img *img)
{
	struct img_info in;
	T_OK(img_info(img, &in));
	return in.backing_depth;
}

static int op_verify(struct run *x)
{
	uint64_t bad;
	uint8_t *b;

	if (!x->dry)
		return 0;
	b = malloc(x->m.size);
	T_ASSERT(b);
	if (img_pread(x->img, b, x->m.size, 0) != (ssize_t)x->m.size)
		T_FAIL("dry run: pread: %s", img_last_error());
	if (bm_check_exact(&x->m, 0, b, x->m.size, &bad)) {
		char d[512];
		bm_describe(&x->m, bad, d, sizeof(d));
		T_FAIL("dry run: byte %#" PRIx64 " reads %#x; %s", bad, b[bad], d);
	}
	free(b);
	return 0;
}

static int op_snapshot(struct run *x, const char *name)
{
	unsigned d0 = x->dry ? depth(x->img) : 0;
	int r;

	x->in_op = 1;
	x->op_name = name;
	r = img_snapshot_live(&x->img, name, 0, NULL, 0);
	if (!r) {
		bm_flush(&x->m);    /* it flushed */
		x->in_op = 0;
	}
	TRY(dry_check(x, "snapshot", r));
	if (x->dry && depth(x->img) != d0 + 1)
		T_FAIL("dry run: the chain is %u deep after a snapshot (was %u)", depth(x->img), d0);
	return op_verify(x);
}

/* named: into BASE; else into the top's own snapshot. */
static int op_merge(struct run *x, int named)
{
	unsigned d0 = x->dry ? depth(x->img) : 0;
	struct img_info in;
	int r;

	x->in_op = x->in_merge = 1;
	r = img_merge_live_into(&x->img, named ? BASE : NULL, 0, NULL, NULL);
	if (!r) {
		bm_flush(&x->m);
		x->in_op = x->in_merge = 0;
	}
	TRY(dry_check(x, "merge", r));
	if (x->dry && depth(x->img) + 1 != d0)
		T_FAIL("dry run: the chain is %u deep after a merge (was %u)", depth(x->img), d0);
	/* the merged image is nobody's snapshot: no owner field left */
	if (x->dry && (img_info(x->img, &in) || (in.incompat_features & IMG_FEATURE_INCOMPAT_OWNER)))
		T_FAIL("dry run: the merged image still records an owner");
	if (x->dry)
		x->merge_end = x->clk.events;
	return op_verify(x);
}

/* ---- workloads ------------------------------------------------------------ */

static void fill(struct run *x, struct img *img, uint64_t end, struct bytemodel *m)
{
	for (uint64_t c = 0; c < end / CLUSTER; c++) {
		if (c % 5 == 4)
			continue;             /* never written */
		prng_fill(&x->r, x->buf, CLUSTER);
		if (c % 7 == 3)
			memset(x->buf, 0, CLUSTER);
		T_EQ(img_pwrite(img, x->buf, CLUSTER, c * CLUSTER), CLUSTER);
		T_OK(bm_write(m, c * CLUSTER, x->buf, CLUSTER));
	}
}

static int prep_snap(struct run *x)
{
	struct img_create_opts o = { .virtual_size = VSIZE, .cluster_size = CLUSTER };
	struct img *img;

	T_OK(img_create(DISK, &o));
	T_OK(img_open(DISK, IMG_OPEN_RDWR, &img));
	T_OK(bm_init(&x->m, VSIZE, VSIZE));
	fill(x, img, VSIZE, &x->m);
	T_OK(img_close(img));
	return 0;
}

/* Snapshot, writes into the new top (copy-up from the snapshot), another
 * snapshot under a given name. */
static int wl_snap(struct run *x)
{
	for (int i = 0; i < 4 * scale; i++)
		TRY(rnd_write(x));
	TRY(op_snapshot(x, NULL));
	for (int i = 0; i < 4 * scale; i++)
		TRY(rnd_write(x));
	TRY(op_flush(x));
	TRY(rnd_write(x));
	TRY(op_snapshot(x, "disk-named.img"));
	for (int i = 0; i < 3 * scale; i++)
		TRY(rnd_write(x));
	return op_verify(x);
}

/* A base with data, a delta over it one MiB larger with data, zero,
 * discarded, partly written and compressed clusters. */
static int prep_merge(struct run *x)
{
	struct img_create_opts o = { .virtual_size = VSIZE, .cluster_size = CLUSTER };
	struct img *img;

	T_OK(img_create(BASE, &o));
	T_OK(img_open(BASE, IMG_OPEN_RDWR, &img));
	T_OK(bm_init(&x->m, VSIZE + MIB, VSIZE + MIB));
	fill(x, img, VSIZE, &x->m);
	T_OK(img_close(img));
	o.virtual_size = VSIZE + MIB;
	o.backing_file = "base.img";
	T_OK(img_create(DISK, &o));
	T_OK(img_open(DISK, IMG_OPEN_RDWR, &img));
	for (int i = 0; i < 24; i++) {
		uint64_t c = prng_below(&x->r, (VSIZE + MIB) / CLUSTER - 1), len;
		switch (i % 4) {
		case 0:
			T_OK(img_discard(img, c * CLUSTER, CLUSTER));
			T_OK(bm_zero(&x->m, c * CLUSTER, CLUSTER));
			break;
		case 1:
			T_OK(img_write_zeroes(img, c * CLUSTER + 512, CLUSTER));
			T_OK(bm_zero(&x->m, c * CLUSTER + 512, CLUSTER));
			break;
		case 2:
			len = 512 * (1 + prng_below(&x->r, 40));
			prng_fill(&x->r, x->buf, len);
			memset(x->buf + len, 0, CLUSTER - len);
			T_ASSERT(img_write_compressed(img, x->buf, CLUSTER, c * CLUSTER) >= 0);
			T_OK(bm_write(&x->m, c * CLUSTER, x->buf, CLUSTER));
			break;
		default:
			len = prng_range(&x->r, 1, 2 * CLUSTER);
			prng_fill(&x->r, x->buf, len);
			T_EQ(img_pwrite(img, x->buf, len, c * CLUSTER + 100), (ssize_t)len);
			T_OK(bm_write(&x->m, c * CLUSTER + 100, x->buf, len));
		}
	}
	T_OK(img_close(img));
	return 0;
}

static int wl_merge(struct run *x)
{
	for (int i = 0; i < 4 * scale; i++)
		TRY(rnd_write(x));
	TRY(op_merge(x, 1));
	for (int i = 0; i < 4 * scale; i++)
		TRY(rnd_write(x));
	TRY(op_flush(x));
	TRY(rnd_write(x));
	return op_verify(x);
}

/* Snapshot, writes into the new top, the top merged into its own
 * snapshot (the owner field it recorded cleared after the rename). */
static int wl_snapmerge(struct run *x)
{
	for (int i = 0; i < 2 * scale; i++)
		TRY(rnd_write(x));
	TRY(op_snapshot(x, NULL));
	for (int i = 0; i < 4 * scale; i++)
		TRY(rnd_write(x));
	TRY(op_flush(x));
	TRY(rnd_write(x));
	TRY(op_merge(x, 0));
	for (int i = 0; i < 2 * scale; i++)
		TRY(rnd_write(x));
	return op_verify(x);
}

static const struct workload workloads[] = {
	{ "snapshot",  prep_snap,  wl_snap,      0, 201 },
	{ "merge",     prep_merge, wl_merge,     1, 202 },
	{ "snapmerge", prep_snap,  wl_snapmerge, 2, 203 },
};

/* ---- driver --------------------------------------------------------------- */

static void make_base(const struct workload *w, struct run *x, struct base *b)
{
	struct memfs *fs = memfs_new(NULL);
	const char *const *names;

	memfs_install(fs);
	prng_seed(&x->r, w->seed ^ 0x5eed);
	w->prep(x);
	bm_flush(&x->m);
	names = memfs_names(fs, &b->n);
	b->names = calloc(b->n, sizeof(char *));
	b->bytes = calloc(b->n, sizeof(uint8_t *));
	b->lens = calloc(b->n, sizeof(size_t));
	T_ASSERT(b->names && b->bytes && b->lens);
	for (size_t i = 0; i < b->n; i++) {
		b->names[i] = strdup(names[i]);
		b->bytes[i] = memfs_read(fs, names[i], &b->lens[i]);
		T_ASSERT(b->names[i] && b->bytes[i]);
	}
	b->m = x->m;
	memset(&x->m, 0, sizeof(x->m));
	memfs_free(fs);
}

static void base_free(struct base *b)
{
	for (size_t i = 0; i < b->n; i++) {
		free(b->names[i]);
		free(b->bytes[i]);
	}
	free(b->names);
	free(b->bytes);
	free(b->lens);
	bm_free(&b->m);
}

/* Runs open, fn, close with power lost at mutating call arm (0: never). */
static void run_on(struct run *x, const struct base *b, wl_fn fn, uint64_t seed, uint64_t arm)
{
	int r;

	memset(&x->clk, 0, sizeof(x->clk));
	x->clk.arm_at = arm;
	x->fs = memfs_new(&x->clk);
	for (size_t i = 0; i < b->n; i++)
		T_OK(memfs_add(x->fs, b->names[i], b->bytes[i], b->lens[i]));
	memfs_install(x->fs);
	x->dry = !arm;
	x->in_op = x->in_merge = 0;
	x->op_name = NULL;
	prng_seed(&x->r, seed);
	T_OK(bm_copy(&x->m, &b->m));
	r = img_open(DISK, IMG_OPEN_RDWR, &x->img);
	if (r)
		x->img = NULL;
	dry_check(x, "open", r);
	if (!r)
		r = fn(x);
	if (x->img) {
		int r2 = img_close(x->img);
		if (!r2 && !x->clk.crashed)
			bm_flush(&x->m);
		if (!r)
			r = r2;
		x->img = NULL;
	}
	if (x->dry && r)
		T_FAIL("dry run failed: %s", img_strerror(r));
	if (arm && !x->clk.crashed)
		T_FAIL("crash point %" PRIu64 " not reached (%" PRIu64 " calls): the workload is "
		       "not deterministic", arm, x->clk.events);
	if (arm && !r)
		T_FAIL("crash point %" PRIu64 ": the workload reported success after power loss", arm);
}

static void report_problem(void *arg, enum img_check_severity sev, int fixed, const char *msg)
{
	(void)fixed;
	fprintf(stderr, "      %s: %s: %s\n", (const char *)arg,
		sev == IMG_CHECK_CORRUPT ? "CORRUPT" : sev == IMG_CHECK_LEAK ? "leak" : "info", msg);
}

/* Every image in the directory (temporary files aside) opens read-write
 * without its chain and checks clean. */
static int check_all(struct memfs *fs, const char *where)
{
	const char *const *names;
	char **copy;
	size_t n;
	int bad = 0;

	names = memfs_names(fs, &n);
	copy = calloc(n + 1, sizeof(*copy));
	T_ASSERT(copy);
	for (size_t i = 0; i < n; i++)
		T_ASSERT((copy[i] = strdup(names[i])));
	for (size_t i = 0; i < n && !bad; i++) {
		struct img_check_opts co = { .report = report_problem, .report_arg = copy[i] };
		struct img_check_result res;
		struct img *img;
		int r;
		if (strstr(copy[i], "/."))
			continue;
		r = img_open(copy[i], IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING, &img);
		if (r) {
			fprintf(stderr, "FAIL %s: %s: open: %s (%s)\n", where, copy[i], img_strerror(r),
				img_last_error());
			bad = 1;
			break;
		}
		r = img_check(img, &co, &res);
		if (r || res.corruptions || res.leaks) {
			fprintf(stderr, "FAIL %s: %s: check: %s, %" PRIu64 " corruptions, %" PRIu64
				" leaks\n", where, copy[i], img_strerror(r), res.corruptions, res.leaks);
			bad = 1;
		}
		if ((r = img_close(img)) && !bad) {
			fprintf(stderr, "FAIL %s: %s: close: %s\n", where, copy[i], img_strerror(r));
			bad = 1;
		}
	}
	for (size_t i = 0; i < n; i++)
		free(copy[i]);
	free(copy);
	return bad;
}

static int verify_point(const struct workload *w, struct run *x, uint64_t n,
			enum imgi_crash_mode mode, uint64_t seed)
{
	struct memfs *fs = memfs_materialize(x->fs, mode, seed);
	struct img *img = NULL;
	struct img_info in;
	uint64_t len = 0, bad;
	uint8_t *b = NULL, *b2 = NULL;
	char where[160];
	int r, ok = 0;

	snprintf(where, sizeof(where), "%s:%" PRIu64 ":%s:%" PRIu64, w->name, n,
		 crash_mode_name(mode), seed);
	memfs_install(fs);
	if ((r = img_open(DISK, IMG_OPEN_RDWR, &img))) {
		fprintf(stderr, "FAIL %s: reopen: %s (%s)\n", where, img_strerror(r), img_last_error());
		img = NULL;
		goto out;
	}
	T_OK(img_info(img, &in));
	if (!bm_size_ok(&x->m, in.virtual_size)) {
		fprintf(stderr, "FAIL %s: virtual size %" PRIu64 "\n", where, in.virtual_size);
		goto out;
	}
	if (w->merge == 2 && x->in_merge && !in.backing_depth &&
	    (in.incompat_features & IMG_FEATURE_INCOMPAT_OWNER))
		stale_seen++;
	len = in.virtual_size;
	b = malloc(len);
	b2 = malloc(len);
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
	/* The operation again, to completion (with the name it had, when
	 * the crash came in the middle of it: a leftover link is taken
	 * over). */
	if (!w->merge) {
		unsigned d0 = in.backing_depth;
		char ref[256] = "";
		const char *name = x->in_op ? x->op_name : NULL;
		/* done already when the top is over it */
		if (name && img_backing_ref(img, ref, sizeof(ref)) > 0 && !strcmp(ref, name))
			name = NULL;
		r = img_snapshot_live(&img, name, 0, NULL, 0);
		if (r || !img || depth(img) != d0 + 1) {
			fprintf(stderr, "FAIL %s: snapshot again: %s (%s)\n", where, img_strerror(r),
				img_last_error());
			goto out;
		}
	} else if (in.backing_depth) {
		r = img_merge_live_into(&img, w->merge == 1 ? BASE : NULL, 0, NULL, NULL);
		if (r || !img || depth(img) != 0) {
			fprintf(stderr, "FAIL %s: merge again: %s (%s)\n", where, img_strerror(r),
				img_last_error());
			goto out;
		}
	}
	if (img_pread(img, b2, len, 0) != (ssize_t)len || memcmp(b, b2, len)) {
		fprintf(stderr, "FAIL %s: contents changed by the rerun\n", where);
		goto out;
	}
	/* Every snapshot of the chain records its top as owner (the header
	 * write before the switch, FORMAT.md 3.1): merged down without being
	 * named, to the image alone, the disk unchanged. */
	while (!w->merge && img && depth(img)) {
		unsigned d = depth(img);
		r = img_merge_live(&img, 0, NULL, NULL);
		if (r || !img || depth(img) + 1 != d) {
			fprintf(stderr, "FAIL %s: merge into its own snapshot (depth %u): %s (%s)\n",
				where, d, img_strerror(r), img_last_error());
			goto out;
		}
		if (img_pread(img, b2, len, 0) != (ssize_t)len || memcmp(b, b2, len)) {
			fprintf(stderr, "FAIL %s: contents changed by a merge\n", where);
			goto out;
		}
	}
	/* snapmerge: whatever the crash left (an owner field naming the
	 * temporary top of an interrupted snapshot, or the replaced top of a
	 * merge interrupted before it cleared the field: stale, FORMAT.md
	 * 3.1), the next snapshot and merge of the image work and leave no
	 * owner. */
	if (w->merge == 2) {
		struct img_info i2;
		r = img_snapshot_live(&img, NULL, 0, NULL, 0);
		if (!r && img)
			r = img_merge_live(&img, 0, NULL, NULL);
		if (r || !img || img_info(img, &i2) || i2.backing_depth ||
		    (i2.incompat_features & IMG_FEATURE_INCOMPAT_OWNER)) {
			fprintf(stderr, "FAIL %s: snapshot and merge after the crash: %s (%s)\n",
				where, img_strerror(r), img_last_error());
			goto out;
		}
		if (img_pread(img, b2, len, 0) != (ssize_t)len || memcmp(b, b2, len)) {
			fprintf(stderr, "FAIL %s: contents changed by a snapshot and merge\n", where);
			goto out;
		}
	}
	r = img_close(img);
	img = NULL;
	if (r) {
		fprintf(stderr, "FAIL %s: close: %s (%s)\n", where, img_strerror(r), img_last_error());
		goto out;
	}
	if (w->merge == 1) {
		struct img *gone;
		if (img_open(BASE, 0, &gone) == 0) {
			img_close(gone);
			fprintf(stderr, "FAIL %s: %s still there after the merge\n", where, BASE);
			goto out;
		}
	}
	if (check_all(fs, where))
		goto out;
	/* And once more, read-only: the same disk. */
	if ((r = img_open(DISK, 0, &img)) || img_pread(img, b2, len, 0) != (ssize_t)len ||
	    memcmp(b, b2, len)) {
		fprintf(stderr, "FAIL %s: read-only reopen: %s\n", where, r ? img_strerror(r) :
			"contents changed");
		goto out;
	}
	ok = 1;
out:
	if (img)
		img_close(img);
	free(b);
	free(b2);
	memfs_free(fs);
	return !ok;
}

/* The driver's view of one workload (tests/helpers/crashrun.c). */
struct job {
	const struct workload *w;
	struct run x;
	struct base b;
};

static uint64_t job_dry(void *arg)
{
	struct job *j = arg;
	uint64_t events;

	j->x.merge_end = 0;
	run_on(&j->x, &j->b, j->w->body, j->w->seed, 0);
	events = j->x.clk.events;
	bm_free(&j->x.m);
	memfs_free(j->x.fs);
	return events;
}

static void job_crash(void *arg, uint64_t n)
{
	struct job *j = arg;

	run_on(&j->x, &j->b, j->w->body, j->w->seed, n);
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
	memfs_free(j->x.fs);
}

/* The tail of the own merge (the owner field cleared after the rename,
 * then the reopen) is always run: added to a sample. */
static void job_also(void *arg, uint64_t events, uint8_t *on)
{
	struct job *j = arg;

	(void)events;
	if (j->w->merge != 2 || !j->x.merge_end)
		return;
	for (uint64_t n = j->x.merge_end > MERGE_TAIL ? j->x.merge_end - MERGE_TAIL + 1 : 1;
	     n <= j->x.merge_end; n++)
		on[n] = 1;
}

static void run_workload(const struct crash_settings *cs, const struct workload *w0,
			 unsigned variant, struct crash_totals *tot)
{
	struct workload wv = *w0, *w = &wv;
	struct job j = { .w = &wv };
	char name[64];
	struct crash_workload cw = {
		.name = name, .dry = job_dry, .crash = job_crash, .verify = job_verify,
		.release = job_release, .also = job_also, .arg = &j, .fast_budget = FAST_BUDGET,
	};

	wv.seed += 1000 * variant;
	snprintf(name, sizeof(name), "%s#%u", w0->name, variant);
	wv.name = name;
	j.x.buf = malloc(2 * CLUSTER);
	T_ASSERT(j.x.buf);
	make_base(w, &j.x, &j.b);
	crash_run_workload(cs, &cw, tot);
	if (w->merge == 2 && !cs->only) {
		printf("%-12s %6" PRIu64 " results with a stale owner field (crash before its clear)\n",
		       w->name, stale_seen);
		if (!stale_seen)
			T_FAIL("%s: no crash point between the merge's rename and the owner's clear",
			       w->name);
		stale_seen = 0;
	}
	base_free(&j.b);
	free(j.x.buf);
}

int main(void)
{
	struct crash_settings cs;
	struct crash_totals tot = { 0 };
	unsigned nvariants;
	time_t t0 = time(NULL);

	/* file-sized buffers come and go at every point: reuse heap */
	mallopt(M_MMAP_THRESHOLD, 256 << 20);
	mallopt(M_TRIM_THRESHOLD, 512 << 20);
	crash_settings_read(&cs);
	verbose = cs.verbose;
	if (cs.full)
		scale = 3;
	nvariants = cs.full ? 3 : 1;
	printf("chain crash points: %s run (CRASH_FULL=1 for the full one)\n",
	       cs.full ? "full" : "fast");
	for (unsigned v = 0; v < nvariants; v++)
		for (size_t i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++)
			if (crash_selected(&cs, workloads[i].name, v))
				run_workload(&cs, &workloads[i], v, &tot);
	return crash_summary("chain crash points", &tot, (long)(time(NULL) - t0));
}
