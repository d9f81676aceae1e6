/* SPDX-License-Identifier: MIT */
/*
 * Fault-injecting I/O backend (tests only; testio.h): wraps another backend
 * and fails the nth matching call with a chosen errno, once or from then on.
 * Nothing in the library creates one: the tests do (imgi_io_fault_new), and
 * the tools built for tests/cli/faults.bats get one around every file the
 * library opens by path through the test hook imgi_io_wrap_set, armed from
 * LIBIMG_FAULT (tests/helpers/fault_env.c).  A failed call does not reach the
 * inner backend, except that a partial write (IMG_FAULT_PARTIAL) writes its
 * first half first, as a file system that runs out of space midway does.
 *
 * IMG_FAULT_DROP models what Linux does when writeback fails: the pages that
 * could not be written are dropped (or marked clean) and the error is
 * reported once by fsync.  While the flag is set, the backend keeps the old
 * bytes under every write, punch and truncate since the last successful
 * flush; a flush that the fault fails puts them back (newest first) and
 * truncates the file to its size at that flush, so the inner file holds
 * exactly what the last successful flush made durable.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "testio.h"

struct fault_io {
	struct img_io io;
	struct img_io_ops ops;       /* per instance: usage, lock, seek_data,
	                              * advise and read_direct where inner
	                              * has them */
	struct img_io *inner;
	pthread_mutex_t lock;
	unsigned mask;
	unsigned flags;
	int err;
	uint64_t nth;
	uint64_t calls;              /* matching calls since arming */
	uint64_t fired;
	unsigned fired_ops;          /* classes of the calls failed since arming */
	/* IMG_FAULT_DROP: the old bytes under each change since the last
	 * successful flush (dlock; held across each change and flush) */
	pthread_mutex_t dlock;
	struct undo { uint64_t off, len; uint8_t *old; } *undo;
	size_t nundo, undo_cap;
	uint64_t base_size;          /* file size at the last successful flush */
	int have_base;
	uint64_t nchanged;           /* changes since then */
	uint64_t dropped;            /* changes dropped by failed flushes */
};

static int dropping(struct fault_io *f)
{
	int d;

	pthread_mutex_lock(&f->lock);
	d = !!(f->flags & IMG_FAULT_DROP);
	pthread_mutex_unlock(&f->lock);
	return d;
}

static void undo_clear(struct fault_io *f)
{
	for (size_t i = 0; i < f->nundo; i++)
		free(f->undo[i].old);
	f->nundo = 0;
	f->have_base = 0;
	f->nchanged = 0;
}

/* Keep the bytes of [off, off+len) as they are now (dlock held). */
static int undo_record(struct fault_io *f, uint64_t off, uint64_t len)
{
	struct img_io *in = f->inner;
	uint64_t size = 0, n;
	uint8_t *old;
	int r;

	if ((r = in->ops->size(in, &size)))
		return r;
	if (!f->have_base) {
		f->base_size = size;
		f->have_base = 1;
	}
	f->nchanged++;
	if (!len || off >= size)
		return 0;       /* past the end: the truncate back removes it */
	n = size - off < len ? size - off : len;
	if (f->nundo == f->undo_cap) {
		size_t cap = f->undo_cap ? 2 * f->undo_cap : 64;
		struct undo *u = realloc(f->undo, cap * sizeof(*u));
		if (!u)
			return -ENOMEM;
		f->undo = u;
		f->undo_cap = cap;
	}
	if (!(old = malloc(n)))
		return -ENOMEM;
	if ((r = in->ops->pread(in, old, n, off))) {
		free(old);
		return r;
	}
	f->undo[f->nundo++] = (struct undo){ off, n, old };
	return 0;
}

/* A failed flush: the changes since the last successful one are lost
 * (dlock held). */
static void undo_apply(struct fault_io *f)
{
	struct img_io *in = f->inner;

	for (size_t i = f->nundo; i-- > 0; )
		(void)in->ops->pwrite(in, f->undo[i].old, f->undo[i].len, f->undo[i].off);
	if (f->have_base)
		(void)in->ops->truncate(in, f->base_size);
	pthread_mutex_lock(&f->lock);
	f->dropped += f->nchanged;
	pthread_mutex_unlock(&f->lock);
	undo_clear(f);
}

/* 0 to pass the call through, or the -errno to fail it with. */
static int fault_hit(struct fault_io *f, unsigned op)
{
	int r = 0;

	pthread_mutex_lock(&f->lock);
	if (!f->mask || (f->mask & op)) {
		f->calls++;
		if (f->mask && f->nth &&
		    (f->calls == f->nth || (f->calls > f->nth && (f->flags & IMG_FAULT_STICKY)))) {
			f->fired++;
			f->fired_ops |= op;
			r = -f->err;
		}
	}
	pthread_mutex_unlock(&f->lock);
	return r;
}

static int fault_pread(struct img_io *io, void *buf, size_t len, uint64_t off)
{
	struct fault_io *f = (struct fault_io *)io;
	int r = fault_hit(f, IMG_FAULT_READ);
	return r ? r : f->inner->ops->pread(f->inner, buf, len, off);
}

static int fault_pwrite(struct img_io *io, const void *buf, size_t len, uint64_t off)
{
	struct fault_io *f = (struct fault_io *)io;
	int d = dropping(f), r = fault_hit(f, IMG_FAULT_WRITE);

	if (d)
		pthread_mutex_lock(&f->dlock);
	if (d && (!r || (f->flags & IMG_FAULT_PARTIAL))) {
		int u = undo_record(f, off, len);
		if (u) {
			pthread_mutex_unlock(&f->dlock);
			return u;
		}
	}
	if (!r) {
		r = f->inner->ops->pwrite(f->inner, buf, len, off);
	} else if (f->flags & IMG_FAULT_PARTIAL) {
		size_t half = (len / 2) & ~(size_t)(IMG_SECTOR_SIZE - 1);
		if (half)
			(void)f->inner->ops->pwrite(f->inner, buf, half, off);
	}
	if (d)
		pthread_mutex_unlock(&f->dlock);
	return r;
}

static int fault_flush(struct img_io *io)
{
	struct fault_io *f = (struct fault_io *)io;
	int d = dropping(f), r = fault_hit(f, IMG_FAULT_FLUSH);

	if (d)
		pthread_mutex_lock(&f->dlock);
	if (!r) {
		r = f->inner->ops->flush(f->inner);
		if (!r && d)
			undo_clear(f);
	} else if (d) {
		undo_apply(f);
	}
	if (d)
		pthread_mutex_unlock(&f->dlock);
	return r;
}

static int fault_punch(struct img_io *io, uint64_t off, uint64_t len)
{
	struct fault_io *f = (struct fault_io *)io;
	int d = dropping(f), r = fault_hit(f, IMG_FAULT_PUNCH);

	if (r)
		return r;
	if (d) {
		pthread_mutex_lock(&f->dlock);
		r = undo_record(f, off, len);
	}
	if (!r)
		r = f->inner->ops->punch(f->inner, off, len);
	if (d)
		pthread_mutex_unlock(&f->dlock);
	return r;
}

static int fault_truncate(struct img_io *io, uint64_t size)
{
	struct fault_io *f = (struct fault_io *)io;
	int d = dropping(f), r = fault_hit(f, IMG_FAULT_TRUNCATE);
	uint64_t cur = 0;

	if (r)
		return r;
	if (d) {
		pthread_mutex_lock(&f->dlock);
		r = f->inner->ops->size(f->inner, &cur);
		if (!r)
			r = undo_record(f, size, cur > size ? cur - size : 0);
	}
	if (!r)
		r = f->inner->ops->truncate(f->inner, size);
	if (d)
		pthread_mutex_unlock(&f->dlock);
	return r;
}

static int fault_size(struct img_io *io, uint64_t *size)
{
	struct fault_io *f = (struct fault_io *)io;
	return f->inner->ops->size(f->inner, size);
}

static int fault_usage(struct img_io *io, uint64_t *bytes)
{
	struct fault_io *f = (struct fault_io *)io;
	return f->inner->ops->usage(f->inner, bytes);
}

static int fault_lock(struct img_io *io, int exclusive, pid_t *holder)
{
	struct fault_io *f = (struct fault_io *)io;
	return f->inner->ops->lock(f->inner, exclusive, holder);
}

static int fault_seek_data(struct img_io *io, uint64_t off, uint64_t *data)
{
	struct fault_io *f = (struct fault_io *)io;
	return f->inner->ops->seek_data(f->inner, off, data);
}

static int fault_advise(struct img_io *io, uint64_t off, uint64_t len, unsigned advice)
{
	struct fault_io *f = (struct fault_io *)io;
	return f->inner->ops->advise(f->inner, off, len, advice);
}

/* Each request is a read call (IMG_FAULT_READ): the ones the fault fails
 * do not reach inner; the others go to inner's read_direct. */
static int fault_read_direct(struct img_io *io, struct img_io_req *reqs, size_t n)
{
	struct fault_io *f = (struct fault_io *)io;
	int first = 0, hit = 0;

	for (size_t i = 0; i < n; i++) {
		reqs[i].result = fault_hit(f, IMG_FAULT_READ);
		hit |= reqs[i].result != 0;
	}
	if (!hit)
		return f->inner->ops->read_direct(f->inner, reqs, n);
	for (size_t i = 0; i < n; i++) {
		if (!reqs[i].result)
			(void)f->inner->ops->read_direct(f->inner, &reqs[i], 1);
		if (reqs[i].result && !first)
			first = reqs[i].result;
	}
	return first;
}

static void fault_close(struct img_io *io)
{
	struct fault_io *f = (struct fault_io *)io;
	f->inner->ops->close(f->inner);
	undo_clear(f);
	free(f->undo);
	pthread_mutex_destroy(&f->lock);
	pthread_mutex_destroy(&f->dlock);
	free(f);
}

int imgi_io_fault_new(struct img_io *inner, struct img_io **out)
{
	struct fault_io *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	pthread_mutex_init(&f->lock, NULL);
	pthread_mutex_init(&f->dlock, NULL);
	f->inner = inner;
	f->ops = (struct img_io_ops){
		.pread = fault_pread, .pwrite = fault_pwrite, .flush = fault_flush,
		.punch = fault_punch, .truncate = fault_truncate, .size = fault_size,
		.usage = inner->ops->usage ? fault_usage : NULL,
		.lock = inner->ops->lock ? fault_lock : NULL,
		.close = fault_close,
		.seek_data = inner->ops->seek_data ? fault_seek_data : NULL,
		.advise = inner->ops->advise ? fault_advise : NULL,
		.read_direct = inner->ops->read_direct ? fault_read_direct : NULL,
	};
	f->io.ops = &f->ops;
	f->io.name = inner->name;
	*out = &f->io;
	return 0;
}

void imgi_io_fault_arm(struct img_io *io, unsigned op_mask, uint64_t nth, int err,
		      unsigned flags)
{
	struct fault_io *f = (struct fault_io *)io;

	pthread_mutex_lock(&f->dlock);
	pthread_mutex_lock(&f->lock);
	f->mask = op_mask & IMG_FAULT_ANY;
	f->nth = nth;
	f->err = err < 0 ? -err : err;
	f->flags = flags;
	f->calls = 0;
	f->fired = 0;
	f->fired_ops = 0;
	f->dropped = 0;
	pthread_mutex_unlock(&f->lock);
	/* Without DROP nothing is kept; with it, what was kept since the last
	 * successful flush stays (it is still unflushed). */
	if (!(flags & IMG_FAULT_DROP))
		undo_clear(f);
	pthread_mutex_unlock(&f->dlock);
}

uint64_t imgi_io_fault_calls(struct img_io *io)
{
	struct fault_io *f = (struct fault_io *)io;
	uint64_t n;

	pthread_mutex_lock(&f->lock);
	n = f->calls;
	pthread_mutex_unlock(&f->lock);
	return n;
}

unsigned imgi_io_fault_fired_ops(struct img_io *io)
{
	struct fault_io *f = (struct fault_io *)io;
	unsigned m;

	pthread_mutex_lock(&f->lock);
	m = f->fired_ops;
	pthread_mutex_unlock(&f->lock);
	return m;
}

uint64_t imgi_io_fault_dropped(struct img_io *io)
{
	struct fault_io *f = (struct fault_io *)io;
	uint64_t n;

	pthread_mutex_lock(&f->lock);
	n = f->dropped;
	pthread_mutex_unlock(&f->lock);
	return n;
}

uint64_t imgi_io_fault_fired(struct img_io *io)
{
	struct fault_io *f = (struct fault_io *)io;
	uint64_t n;

	pthread_mutex_lock(&f->lock);
	n = f->fired;
	pthread_mutex_unlock(&f->lock);
	return n;
}
