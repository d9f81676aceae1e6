/* SPDX-License-Identifier: MIT */
/*
 * I/O errors at every call of every operation (the way SQLite's
 * do_faultsim_test loops the failure point N = 1, 2, ... until a run passes
 * through without hitting it).
 *
 * For each operation, each error (EIO on any call, reads included; ENOSPC on
 * any mutating call) and each style of fault, call N fails:
 *   once      only call N fails; the operation must fail with that error,
 *             the handle must still read old-or-new contents and check
 *             without corruption, and the same operation, retried on the
 *             same handle, must succeed; then close, reopen: clean, exact.
 *   short     (ENOSPC) as once, but the failing write first writes half its
 *             bytes, like a file system running out of space midway.
 *   sticky    call N and every later one fails (a full disk stays full):
 *             the operation fails with that error, closing fails or
 *             succeeds without crashing; once the fault is lifted the
 *             image opens read-write, checks clean (no corruption, no leak)
 *             and reads old-or-new contents, flushed data exact.
 *   crash     as once, then the handle goes on (a write, a flush) and power
 *             is lost (crash backend under the fault backend): the disk
 *             must reopen clean with exactly what the handle showed.
 * A fault point is one (operation, error, style, N) whose fault fired.
 *
 * Every fault backend drops unflushed changes on a failed flush
 * (IMG_FAULT_DROP), as Linux drops pages whose writeback failed.  A failed
 * sync ends the handle's writing (FORMAT.md 6, rule 10): when the fault
 * hit a flush of an open handle, once/short/crash do not retry on the
 * handle but check that every later write and flush and the close fail
 * with EIO; then the image reopens clean with old-or-new contents (after
 * power loss too, for crash), and the operation succeeds on the new
 * handle.
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libimg.h"
#include "testio.h"
#include "../helpers/bytemodel.h"
#include "../helpers/crashrun.h"
#include "../helpers/ioborrow.h"
#include "../helpers/prng.h"
#include "../helpers/tassert.h"

#define CLUSTER   (64u * 1024)
#define MIB       (1024u * 1024)
#define VSIZE     (4 * MIB)
#define MODEL_CAP VSIZE

/* A starting image and what it holds. */
struct base {
	uint8_t *bytes;
	size_t len;
	uint8_t *content;       /* VSIZE bytes */
};

struct fctx {
	struct img_io *f;       /* fault backend over a memory file */
	struct img *img;
	struct bytemodel m;
	struct prng r;
	uint8_t *buf;
};

enum fkind { K_NORMAL, K_OPEN, K_CLOSE, K_CREATE };

struct fop {
	const char *name;
	enum fkind kind;
	const struct base *base;     /* NULL for create */
	unsigned open_flags;
	int (*pre)(struct fctx *c);  /* before arming; may be NULL */
	int (*op)(struct fctx *c);   /* under the fault, and the retry */
};

static struct base base_data, base_crashed;
static int verbose;
static uint64_t sync_points, drop_points;   /* failed syncs; ones that dropped writes */

static struct img_io *borrow(struct img_io *io)
{
	struct img_io *b = io_borrow(io);
	T_ASSERT(b);
	return b;
}

/* ---- the operations ------------------------------------------------------- */

static int do_write(struct fctx *c, uint64_t off, uint64_t len)
{
	ssize_t n;

	T_ASSERT(len <= 4 * CLUSTER);
	prng_fill(&c->r, c->buf, len);
	T_OK(bm_write(&c->m, off, c->buf, len));
	n = img_pwrite(c->img, c->buf, len, off);
	return n == (ssize_t)len ? 0 : n < 0 ? (int)n : -EIO;
}

/* Same bytes every time (retries write the same thing). */
static int op_write_alloc(struct fctx *c)
{
	prng_seed(&c->r, 1);
	return do_write(c, 2 * MIB + 5 * CLUSTER + 1000, 3 * CLUSTER + 777);
}

static int op_overwrite(struct fctx *c)
{
	prng_seed(&c->r, 2);
	return do_write(c, CLUSTER / 2, 2 * CLUSTER);
}

static int op_discard(struct fctx *c)
{
	T_OK(bm_zero(&c->m, 3 * CLUSTER + 4096, 5 * CLUSTER));
	return img_discard(c->img, 3 * CLUSTER + 4096, 5 * CLUSTER);
}

static int op_zeroes(struct fctx *c)
{
	T_OK(bm_zero(&c->m, 10 * CLUSTER - 512, 4 * CLUSTER + 1024));
	return img_write_zeroes(c->img, 10 * CLUSTER - 512, 4 * CLUSTER + 1024);
}

/* Unflushed changes of every kind for flush and close to commit. */
static int pre_dirty(struct fctx *c)
{
	T_OK(op_write_alloc(c));
	T_OK(op_overwrite(c));
	T_OK(img_write_zeroes(c->img, 20 * CLUSTER, 2 * CLUSTER));
	T_OK(bm_zero(&c->m, 20 * CLUSTER, 2 * CLUSTER));
	return 0;
}

static int op_flush(struct fctx *c)
{
	return img_flush(c->img);
}

static int op_grow(struct fctx *c)
{
	T_OK(bm_resize(&c->m, 600ull * MIB));
	return img_resize(c->img, 600ull * MIB, 0);
}

static int op_shrink(struct fctx *c)
{
	T_OK(bm_resize(&c->m, MIB + 3 * 512));
	return img_resize(c->img, MIB + 3 * 512, IMG_RESIZE_DISCARD_DATA);
}

static int op_compact(struct fctx *c)
{
	struct img_compact_opts o = { 0 };
	return img_compact(c->img, &o, NULL);
}

static int op_repair(struct fctx *c)
{
	struct img_check_opts o = { .flags = IMG_CHECK_REPAIR };
	struct img_check_result res;
	int r = img_check(c->img, &o, &res);

	if (!r && (res.corruptions != res.corruptions_fixed || res.leaks != res.leaks_fixed))
		T_FAIL("repair left %" PRIu64 "/%" PRIu64 " corruptions, %" PRIu64 "/%" PRIu64
		       " leaks unfixed", res.corruptions - res.corruptions_fixed, res.corruptions,
		       res.leaks - res.leaks_fixed, res.leaks);
	return r;
}

static int op_open(struct fctx *c)
{
	int r = img_open_io(borrow(c->f), IMG_OPEN_RDWR, &c->img);
	if (r)
		c->img = NULL;
	return r;
}

static int op_close(struct fctx *c)
{
	int r = img_close(c->img);
	c->img = NULL;
	return r;
}

static int op_create(struct fctx *c)
{
	struct img_create_opts o = { .virtual_size = VSIZE, .cluster_size = CLUSTER };
	return img_create_io(c->f, &o);
}

static const struct fop fops[] = {
	{ "write-alloc",  K_NORMAL, &base_data,    IMG_OPEN_RDWR, NULL,      op_write_alloc },
	{ "overwrite",    K_NORMAL, &base_data,    IMG_OPEN_RDWR, NULL,      op_overwrite },
	{ "discard",      K_NORMAL, &base_data,    IMG_OPEN_RDWR, NULL,      op_discard },
	{ "write-zeroes", K_NORMAL, &base_data,    IMG_OPEN_RDWR, NULL,      op_zeroes },
	{ "flush",        K_NORMAL, &base_data,    IMG_OPEN_RDWR, pre_dirty, op_flush },
	{ "grow",         K_NORMAL, &base_data,    IMG_OPEN_RDWR, NULL,      op_grow },
	{ "shrink",       K_NORMAL, &base_data,    IMG_OPEN_RDWR, NULL,      op_shrink },
	{ "compact",      K_NORMAL, &base_data,    IMG_OPEN_RDWR, NULL,      op_compact },
	{ "repair",       K_NORMAL, &base_crashed, IMG_OPEN_RDWR | IMG_OPEN_CHECK, NULL, op_repair },
	{ "open",         K_OPEN,   &base_crashed, IMG_OPEN_RDWR, NULL,      op_open },
	{ "close",        K_CLOSE,  &base_data,    IMG_OPEN_RDWR, pre_dirty, op_close },
	{ "create",       K_CREATE, NULL,          0,             NULL,      op_create },
};

/* ---- starting images ------------------------------------------------------ */

static void read_all(struct img *img, uint8_t *b, uint64_t len)
{
	ssize_t n = img_pread(img, b, len, 0);
	if (n != (ssize_t)len)
		T_FAIL("pread: %zd (%s)", n, img_last_error());
}

static void take(struct img_io *io, struct base *b)
{
	size_t len;
	const void *d = img_io_mem_data(io, &len);

	b->bytes = malloc(len);
	T_ASSERT(b->bytes);
	memcpy(b->bytes, d, len);
	b->len = len;
}

static void fill(struct img *img, struct prng *r, uint8_t *buf, uint64_t end)
{
	for (uint64_t off = 0; off < end; off += 2 * CLUSTER) {
		prng_fill(r, buf, 2 * CLUSTER);
		T_EQ(img_pwrite(img, buf, 2 * CLUSTER, off), 2 * CLUSTER);
	}
}

/* 3 MiB of data with holes low in the file and all-zero clusters: every
 * operation has work (relocation for grow, compact and shrink). */
static void make_base_data(struct base *b, uint8_t *buf)
{
	struct img_create_opts o = { .virtual_size = VSIZE, .cluster_size = CLUSTER };
	struct img_io *mem;
	struct img *img;
	struct prng r;

	prng_seed(&r, 42);
	T_OK(img_io_mem_new(NULL, 0, &mem));
	T_OK(img_create_io(mem, &o));
	T_OK(img_open_io(borrow(mem), IMG_OPEN_RDWR, &img));
	fill(img, &r, buf, 3 * MIB);
	for (uint64_t v = 1; v < 40; v += 4)
		T_OK(img_discard(img, v * CLUSTER, CLUSTER));
	memset(buf, 0, CLUSTER);
	for (uint64_t v = 2; v < 40; v += 8)
		T_EQ(img_pwrite(img, buf, CLUSTER, v * CLUSTER), CLUSTER);
	T_OK(img_close(img));
	take(mem, b);
	b->content = malloc(VSIZE);
	T_ASSERT(b->content);
	T_OK(img_open_io(mem, 0, &img));
	read_all(img, b->content, VSIZE);
	T_OK(img_close(img));
}

/* An image left by a power cut: log to replay, leaked clusters. */
static void make_base_crashed(struct base *b, uint8_t *buf)
{
	struct img_create_opts o = { .virtual_size = VSIZE, .cluster_size = CLUSTER };
	struct img_io *cio, *mem;
	struct img_info info;
	struct img *img;
	struct prng r;

	prng_seed(&r, 43);
	T_OK(imgi_io_crash_new(NULL, 0, &cio));
	T_OK(img_create_io(cio, &o));
	T_OK(img_open_io(borrow(cio), IMG_OPEN_RDWR, &img));
	fill(img, &r, buf, 2 * MIB);
	T_OK(img_flush(img));
	for (uint64_t v = 3; v < 30; v += 5)
		T_OK(img_discard(img, v * CLUSTER, CLUSTER));
	prng_fill(&r, buf, 3 * CLUSTER);
	T_EQ(img_pwrite(img, buf, 3 * CLUSTER, 3 * MIB), 3 * CLUSTER);
	/* Power lost now, every write kept: the last one is in the file but
	 * not in the BAT. */
	T_OK(imgi_io_crash_materialize(cio, IMG_CRASH_KEEP_ALL, 0, NULL, &mem));
	imgi_io_crash_arm(cio, imgi_io_crash_events(cio) + 1);
	T_ASSERT(img_close(img) != 0);
	cio->ops->close(cio);
	take(mem, b);
	T_OK(img_open_io(borrow(mem), IMG_OPEN_NOLOCK, &img));
	T_OK(img_info(img, &info));
	T_OK(img_close(img));
	if (!info.dirty || !info.log_replayed || !info.leaked_clusters)
		T_FAIL("crashed base: dirty %u, %" PRIu64 " transactions, %" PRIu64 " leaks",
		       info.dirty, info.log_replayed, info.leaked_clusters);
	/* What recovery gives (reading needs no write: read-only open). */
	b->content = malloc(VSIZE);
	T_ASSERT(b->content);
	T_OK(img_open_io(mem, IMG_OPEN_NOLOCK, &img));
	read_all(img, b->content, VSIZE);
	T_OK(img_close(img));
}

/* ---- checks --------------------------------------------------------------- */

static char where[200];

static void report_problem(void *arg, enum img_check_severity sev, int fixed, const char *msg)
{
	(void)arg;
	(void)fixed;
	fprintf(stderr, "    check: %s: %s\n",
		sev == IMG_CHECK_CORRUPT ? "CORRUPT" : sev == IMG_CHECK_LEAK ? "leak" : "info", msg);
}

/* img_check without repair: no corruption, and no leak unless allowed. */
static int check_img(struct img *img, int allow_leaks, const char *when)
{
	struct img_check_opts o = { 0 };
	struct img_check_result res;
	int r = img_check(img, &o, &res);

	if (!r && !res.corruptions && (allow_leaks || !res.leaks))
		return 0;
	fprintf(stderr, "FAIL %s: check %s: %s, %" PRIu64 " corruptions, %" PRIu64 " leaks (%s)\n",
		where, when, img_strerror(r), res.corruptions, res.leaks, img_last_error());
	o.report = report_problem;
	img_check(img, &o, &res);
	return 1;
}

/* Contents: exact (the latest model) or allowed (old or new). */
static int check_data(struct fctx *c, struct img *img, int exact, const char *when)
{
	struct img_info info;
	uint64_t len, bad;
	uint8_t *b;
	int r;

	T_OK(img_info(img, &info));
	if (exact ? info.virtual_size != c->m.size : !bm_size_ok(&c->m, info.virtual_size)) {
		fprintf(stderr, "FAIL %s: %s: virtual size %" PRIu64 ", expected %" PRIu64 "\n",
			where, when, info.virtual_size, c->m.size);
		return 1;
	}
	len = info.virtual_size < MODEL_CAP ? info.virtual_size : MODEL_CAP;
	b = malloc(len);
	T_ASSERT(b);
	if (img_pread(img, b, len, 0) != (ssize_t)len) {
		fprintf(stderr, "FAIL %s: %s: pread: %s\n", where, when, img_last_error());
		free(b);
		return 1;
	}
	r = exact ? bm_check_exact(&c->m, 0, b, len, &bad) : bm_check(&c->m, 0, b, len, &bad);
	if (r) {
		char d[400];
		bm_describe(&c->m, bad, d, sizeof(d));
		fprintf(stderr, "FAIL %s: %s: byte %#" PRIx64 " reads %#x; %s\n", where, when, bad,
			b[bad], d);
	}
	free(b);
	return r;
}

/* The model becomes what the image reads now (after a recovery that may
 * have kept or dropped unflushed changes). */
static void adopt(struct fctx *c, struct img *img)
{
	struct img_info info;
	uint64_t len;
	uint8_t *b;

	T_OK(img_info(img, &info));
	if (info.virtual_size != c->m.size)
		T_OK(bm_resize(&c->m, info.virtual_size));
	len = info.virtual_size < MODEL_CAP ? info.virtual_size : MODEL_CAP;
	b = malloc(len);
	T_ASSERT(b);
	read_all(img, b, len);
	T_OK(bm_write(&c->m, 0, b, len));
	bm_flush(&c->m);
	free(b);
}

static int reopen(struct fctx *c, unsigned flags, const char *when)
{
	int r = img_open_io(borrow(c->f), flags, &c->img);

	if (r) {
		c->img = NULL;
		fprintf(stderr, "FAIL %s: %s: open: %s (%s)\n", where, when, img_strerror(r),
			img_last_error());
	}
	return r;
}

/* Ends a point whose operation succeeded: exact contents on the handle,
 * close, then a reopen that is clean and exact. */
static int finish_exact(struct fctx *c)
{
	struct img_info info;
	int r;

	if (!c->img && reopen(c, IMG_OPEN_RDWR, "after success"))
		return 1;
	if (check_data(c, c->img, 1, "after success") || check_img(c->img, 1, "after success"))
		return 1;
	r = img_close(c->img);
	c->img = NULL;
	if (r) {
		fprintf(stderr, "FAIL %s: close: %s (%s)\n", where, img_strerror(r), img_last_error());
		return 1;
	}
	bm_flush(&c->m);
	if (reopen(c, IMG_OPEN_RDWR, "after close"))
		return 1;
	T_OK(img_info(c->img, &info));
	if (info.dirty) {
		fprintf(stderr, "FAIL %s: dirty after a clean close\n", where);
		return 1;
	}
	if (check_img(c->img, 0, "after reopen") || check_data(c, c->img, 1, "after reopen"))
		return 1;
	r = img_close(c->img);
	c->img = NULL;
	return r != 0;
}

/* ---- driver --------------------------------------------------------------- */

enum style { ONCE, SHORT, STICKY, CRASH };
static const char *style_name[] = { "once", "short", "sticky", "crash" };

/* After a failed operation the handle goes on: one more write and a flush,
 * then power is lost.  Whatever the failed operation left half done (a
 * header written but not synced, say) must not come back to haunt the
 * flush: the disk must reopen with exactly what the handle showed. */
static int crash_after(struct fctx *c, struct img_io *cio)
{
	struct img_info info;
	uint64_t off;
	int r;

	adopt(c, c->img);
	T_OK(img_info(c->img, &info));
	off = (info.virtual_size < MODEL_CAP ? info.virtual_size : MODEL_CAP) - CLUSTER;
	prng_seed(&c->r, 3);
	if ((r = do_write(c, off, CLUSTER)) || (r = img_flush(c->img))) {
		fprintf(stderr, "FAIL %s: write and flush after the failure: %s (%s)\n", where,
			img_strerror(r), img_last_error());
		return 1;
	}
	bm_flush(&c->m);
	for (uint64_t seed = 0; seed < 4; seed++) {
		struct img_io *m;
		struct img *img;
		int bad;

		T_OK(imgi_io_crash_materialize(cio, seed ? IMG_CRASH_RANDOM : IMG_CRASH_DROP_ALL,
					      seed, NULL, &m));
		r = img_open_io(m, IMG_OPEN_RDWR, &img);
		if (r) {
			fprintf(stderr, "FAIL %s: open after power loss (seed %" PRIu64 "): %s (%s)\n",
				where, seed, img_strerror(r), img_last_error());
			return 1;
		}
		bad = check_img(img, 0, "after power loss") ||
		      check_data(c, img, 1, "after power loss");
		img_close(img);
		if (bad)
			return 1;
	}
	return 0;
}

/* After a failed sync: every later write, flush and the close fail with
 * EIO (the handle is closed here); reads still work. */
static int handle_failed(struct fctx *c)
{
	uint8_t b[512];
	ssize_t n, w;
	int r1, r2, r3;

	n = img_pread(c->img, b, sizeof(b), 0);
	memset(b, 0x5a, sizeof(b));
	w = img_pwrite(c->img, b, sizeof(b), 0);
	r1 = w < 0 ? (int)w : 0;
	r2 = img_flush(c->img);
	r3 = img_close(c->img);
	c->img = NULL;
	if (n != (ssize_t)sizeof(b) || r1 != -EIO || r2 != -EIO || r3 != -EIO) {
		fprintf(stderr, "FAIL %s: after the failed sync: read %zd, write %s, flush %s, "
			"close %s (expected a read, then EIO each)\n", where, n,
			r1 ? img_strerror(r1) : "success", r2 ? img_strerror(r2) : "success",
			r3 ? img_strerror(r3) : "success");
		return 1;
	}
	return 0;
}

/* After a failed sync and the failed handle's close, power is lost: each
 * disk it may leave opens clean, with old-or-new contents. */
static int recover_after_power_loss(struct fctx *c, struct img_io *cio)
{
	for (uint64_t seed = 0; seed < 4; seed++) {
		struct img_io *m;
		struct img *img;
		int bad, r;

		T_OK(imgi_io_crash_materialize(cio, seed ? IMG_CRASH_RANDOM : IMG_CRASH_DROP_ALL,
					      seed, NULL, &m));
		r = img_open_io(m, IMG_OPEN_RDWR, &img);
		if (r) {
			fprintf(stderr, "FAIL %s: open after the failed sync and power loss (seed %"
				PRIu64 "): %s (%s)\n", where, seed, img_strerror(r), img_last_error());
			return 1;
		}
		bad = check_img(img, 0, "after the failed sync and power loss") ||
		      check_data(c, img, 0, "after the failed sync and power loss");
		img_close(img);
		if (bad)
			return 1;
	}
	return 0;
}

/* One point.  Returns 0 pass, 1 fail; *fired whether the fault hit. */
static int run_point(const struct fop *o, int err, unsigned mask, enum style st, uint64_t nth,
		     int *fired)
{
	struct fctx c = { 0 };
	struct img_io *mem, *cio = NULL;
	unsigned flags = st == STICKY ? IMG_FAULT_STICKY : st == SHORT ? IMG_FAULT_PARTIAL : 0;
	int r, fail = 1, sync_failed;

	snprintf(where, sizeof(where), "%s %s %s N=%" PRIu64, o->name, err == EIO ? "EIO" : "ENOSPC",
		 style_name[st], nth);
	c.buf = malloc(4 * CLUSTER);
	T_ASSERT(c.buf);
	if (st == CRASH)
		T_OK(imgi_io_crash_new(o->base->bytes, o->base->len, &cio));
	else
		T_OK(img_io_mem_new(o->base ? o->base->bytes : NULL, o->base ? o->base->len : 0, &mem));
	if (cio)
		mem = cio;
	T_OK(imgi_io_fault_new(mem, &c.f));
	imgi_io_fault_arm(c.f, 0, 0, 0, IMG_FAULT_DROP);   /* keep what a failed flush drops */
	T_OK(bm_init(&c.m, VSIZE, MODEL_CAP));
	if (o->base) {
		T_OK(bm_write(&c.m, 0, o->base->content, VSIZE));
		bm_flush(&c.m);
	}
	if (o->kind == K_NORMAL || o->kind == K_CLOSE) {
		T_OK(img_open_io(borrow(c.f), o->open_flags, &c.img));
		if (o->pre)
			T_OK(o->pre(&c));
	}

	imgi_io_fault_arm(c.f, mask, nth, err, flags | IMG_FAULT_DROP);
	r = o->op(&c);
	*fired = imgi_io_fault_fired(c.f) != 0;
	sync_failed = c.img && (imgi_io_fault_fired_ops(c.f) & IMG_FAULT_FLUSH);
	if (sync_failed) {
		sync_points++;
		drop_points += imgi_io_fault_dropped(c.f) != 0;
	}
	if (!*fired) {
		imgi_io_fault_arm(c.f, 0, 0, 0, 0);
		if (r) {
			fprintf(stderr, "FAIL %s: failed without a fault: %s (%s)\n", where,
				img_strerror(r), img_last_error());
			goto out;
		}
		if (o->kind == K_CLOSE)
			bm_flush(&c.m);
		fail = finish_exact(&c);
		goto out;
	}
	if (r != -err) {
		fprintf(stderr, "FAIL %s: the operation returned %s (%s), expected %s\n", where,
			r ? img_strerror(r) : "success", img_last_error(), img_strerror(-err));
		/* A swallowed fault: see what it leaves behind. */
		if (!r) {
			imgi_io_fault_arm(c.f, 0, 0, 0, 0);
			finish_exact(&c);
		}
		goto out;
	}
	if (verbose)
		printf("  %s: %s\n", where, img_last_error());

	if (sync_failed && st != STICKY) {
		/* The sync failed: the handle is done writing (rule 10). */
		imgi_io_fault_arm(c.f, 0, 0, 0, 0);
		if (handle_failed(&c))
			goto out;
		if (st == CRASH) {
			fail = recover_after_power_loss(&c, cio);
			goto out;
		}
	}
	if (st == STICKY || sync_failed) {
		/* The disk stays full (or broken) while the image is closed. */
		if (c.img) {
			img_close(c.img);
			c.img = NULL;
		}
		imgi_io_fault_arm(c.f, 0, 0, 0, 0);
		if (o->kind == K_CREATE) {
			if ((r = op_create(&c))) {
				fprintf(stderr, "FAIL %s: create after the fault: %s\n", where,
					img_strerror(r));
				goto out;
			}
			fail = finish_exact(&c);
			goto out;
		}
		if (reopen(&c, IMG_OPEN_RDWR, "after the fault"))
			goto out;
		if (check_img(c.img, 0, "after the fault") || check_data(&c, c.img, 0, "after the fault"))
			goto out;
		/* The same operation succeeds now. */
		adopt(&c, c.img);
		if (o->kind == K_NORMAL) {
			if (o->pre)
				T_OK(o->pre(&c));
			if ((r = o->op(&c))) {
				fprintf(stderr, "FAIL %s: retry after reopening: %s (%s)\n", where,
					img_strerror(r), img_last_error());
				goto out;
			}
		}
		fail = finish_exact(&c);
		goto out;
	}

	/* Once: lifted at once; the handle stays usable. */
	imgi_io_fault_arm(c.f, 0, 0, 0, 0);
	if (st == CRASH) {
		fail = check_data(&c, c.img, 0, "after the failure") || crash_after(&c, cio);
		goto out;
	}
	switch (o->kind) {
	case K_NORMAL:
		if (check_data(&c, c.img, 0, "after the failure") ||
		    check_img(c.img, 1, "after the failure"))
			goto out;
		r = o->op(&c);
		break;
	case K_OPEN:
		r = op_open(&c);
		break;
	case K_CREATE:
		r = op_create(&c);
		break;
	case K_CLOSE:
		/* Nothing to retry: the handle is gone.  What was not flushed
		 * may be lost; the image must be consistent. */
		if (reopen(&c, IMG_OPEN_RDWR, "after the failed close"))
			goto out;
		if (check_img(c.img, 0, "after the failed close") ||
		    check_data(&c, c.img, 0, "after the failed close"))
			goto out;
		adopt(&c, c.img);
		r = 0;
		break;
	}
	if (r) {
		fprintf(stderr, "FAIL %s: retry: %s (%s)\n", where, img_strerror(r), img_last_error());
		goto out;
	}
	fail = finish_exact(&c);
out:
	if (c.img)
		img_close(c.img);
	c.f->ops->close(c.f);
	bm_free(&c.m);
	free(c.buf);
	return fail;
}

/* One operation under one kind of fault, for crash_run_until_done. */
struct kind_run {
	const struct fop *o;
	int err;
	unsigned mask;
	enum style st;
};

static int kind_point(void *arg, uint64_t n, int *fired)
{
	const struct kind_run *k = arg;

	return run_point(k->o, k->err, k->mask, k->st, n, fired);
}

int main(int argc, char **argv)
{
	static const struct {
		int err;
		unsigned mask;
		enum style st;
	} kinds[] = {
		{ EIO, IMG_FAULT_ANY, ONCE }, { EIO, IMG_FAULT_ANY, STICKY },
		{ ENOSPC, IMG_FAULT_MUTATING, ONCE }, { ENOSPC, IMG_FAULT_MUTATING, SHORT },
		{ ENOSPC, IMG_FAULT_MUTATING, STICKY },
		{ EIO, IMG_FAULT_ANY, CRASH }, { ENOSPC, IMG_FAULT_MUTATING, CRASH },
	};
	const char *only = argc > 1 ? argv[1] : getenv("FAULT_OP");
	uint64_t run = 0, passed = 0;
	uint8_t *buf = malloc(4 * CLUSTER);

	T_ASSERT(buf);
	verbose = getenv("FAULT_VERBOSE") != NULL;
	/* Keep megabyte buffers in the heap between points (see crash_points). */
	mallopt(M_MMAP_THRESHOLD, 256 << 20);
	mallopt(M_TRIM_THRESHOLD, 512 << 20);
	make_base_data(&base_data, buf);
	make_base_crashed(&base_crashed, buf);
	for (size_t i = 0; i < sizeof(fops) / sizeof(fops[0]); i++) {
		const struct fop *o = &fops[i];
		if (only && strcmp(only, o->name))
			continue;
		for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
			struct kind_run kr = { o, kinds[k].err, kinds[k].mask, kinds[k].st };
			uint64_t calls, ok;

			if (kinds[k].st == CRASH && o->kind != K_NORMAL)
				continue;
			calls = crash_run_until_done(o->name, kind_point, &kr, 10000, &ok);
			run += calls;
			passed += ok;
			printf("%-13s %-6s %-6s %4" PRIu64 " calls, %4" PRIu64 " fault points, %4"
			       PRIu64 " passed\n", o->name, kinds[k].err == EIO ? "EIO" : "ENOSPC",
			       style_name[kinds[k].st], calls, calls, ok);
		}
	}
	printf("failed syncs on an open handle: %" PRIu64 " points, %" PRIu64
	       " of them dropped unflushed writes\n", sync_points, drop_points);
	printf("SUMMARY: fault points run %" PRIu64 ", passed %" PRIu64 "\n", run, passed);
	if (!only && !drop_points)
		T_FAIL("no failed sync dropped a write: the DROP mode is not exercised");
	free(buf);
	free(base_data.bytes);
	free(base_data.content);
	free(base_crashed.bytes);
	free(base_crashed.content);
	if (!run)
		T_FAIL("no fault point run");
	return passed == run ? 0 : 1;
}
