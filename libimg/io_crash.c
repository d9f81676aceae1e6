/* SPDX-License-Identifier: MIT */
/*
 * Crash-simulating I/O backend (tests).  Two memory files: "cur", what reads
 * see (durable contents with every pending operation applied in order), and
 * "durable", what survives a power loss for sure.  Each write, punch and
 * truncate is applied to cur and queued; a flush applies the queue to durable
 * and empties it.  At the armed mutating call power is lost: the call is
 * queued (it may have reached the disk) and it and every later call fail with
 * -EIO.  Materializing builds a fresh memory file from durable plus each
 * queued operation kept, dropped or torn, so one crash point gives many
 * possible disks.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "testio.h"

enum { OP_WRITE, OP_PUNCH, OP_TRUNCATE };

struct pending {
	int type;
	uint64_t off;            /* write, punch: offset; truncate: new size */
	uint64_t len;
	uint8_t *data;           /* write only */
};

struct crash_io {
	struct img_io io;
	pthread_mutex_t lock;
	struct img_io *cur, *durable;
	struct pending *q;
	size_t nq, capq;
	struct imgi_crash_clock own, *clk;   /* clk: &own, or shared */
};

static int crash_queue(struct crash_io *c, int type, const void *buf, uint64_t off, uint64_t len)
{
	struct pending *p;

	if (c->nq == c->capq) {
		size_t ncap = c->capq ? c->capq * 2 : 64;
		p = realloc(c->q, ncap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		c->q = p;
		c->capq = ncap;
	}
	p = &c->q[c->nq];
	*p = (struct pending){ .type = type, .off = off, .len = len };
	if (type == OP_WRITE) {
		p->data = malloc(len ? len : 1);
		if (!p->data)
			return -ENOMEM;
		memcpy(p->data, buf, len);
	}
	c->nq++;
	return 0;
}

/* Counts a mutating call; -EIO when power is (or was already) lost. */
int imgi_crash_clock_tick(struct imgi_crash_clock *k)
{
	if (k->crashed)
		return -EIO;
	k->events++;
	if (k->arm_at && k->events == k->arm_at) {
		k->crashed = 1;
		return -ECANCELED;
	}
	return 0;
}

static int crash_event(struct crash_io *c, int type, const void *buf, uint64_t off, uint64_t len)
{
	int r = imgi_crash_clock_tick(c->clk);

	if (r == -ECANCELED) {
		if (type >= 0)
			(void)crash_queue(c, type, buf, off, len);
		r = -EIO;
	}
	return r;
}

static int apply(struct img_io *m, const struct pending *p)
{
	switch (p->type) {
	case OP_WRITE:
		return m->ops->pwrite(m, p->data, p->len, p->off);
	case OP_PUNCH:
		return m->ops->punch(m, p->off, p->len);
	default:
		return m->ops->truncate(m, p->off);
	}
}

static void queue_clear(struct crash_io *c)
{
	for (size_t i = 0; i < c->nq; i++)
		free(c->q[i].data);
	c->nq = 0;
}

static int crash_pread(struct img_io *io, void *buf, size_t len, uint64_t off)
{
	struct crash_io *c = (struct crash_io *)io;
	int r;

	pthread_mutex_lock(&c->lock);
	r = c->clk->crashed ? -EIO : c->cur->ops->pread(c->cur, buf, len, off);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* A mutating call: count it, apply it to cur, queue it. */
static int crash_mutate(struct crash_io *c, int type, const void *buf, uint64_t off, uint64_t len)
{
	struct pending p = { .type = type, .off = off, .len = len, .data = (uint8_t *)buf };
	int r;

	pthread_mutex_lock(&c->lock);
	r = crash_event(c, type, buf, off, len);
	if (!r)
		r = apply(c->cur, &p);
	if (!r)
		r = crash_queue(c, type, buf, off, len);
	pthread_mutex_unlock(&c->lock);
	return r;
}

static int crash_pwrite(struct img_io *io, const void *buf, size_t len, uint64_t off)
{
	return crash_mutate((struct crash_io *)io, OP_WRITE, buf, off, len);
}

static int crash_punch(struct img_io *io, uint64_t off, uint64_t len)
{
	return crash_mutate((struct crash_io *)io, OP_PUNCH, NULL, off, len);
}

static int crash_truncate(struct img_io *io, uint64_t size)
{
	return crash_mutate((struct crash_io *)io, OP_TRUNCATE, NULL, size, 0);
}

static int crash_flush(struct img_io *io)
{
	struct crash_io *c = (struct crash_io *)io;
	int r;

	pthread_mutex_lock(&c->lock);
	r = crash_event(c, -1, NULL, 0, 0);
	for (size_t i = 0; !r && i < c->nq; i++)
		r = apply(c->durable, &c->q[i]);
	if (!r)
		queue_clear(c);
	pthread_mutex_unlock(&c->lock);
	return r;
}

static int crash_size(struct img_io *io, uint64_t *size)
{
	struct crash_io *c = (struct crash_io *)io;
	int r;

	pthread_mutex_lock(&c->lock);
	r = c->clk->crashed ? -EIO : c->cur->ops->size(c->cur, size);
	pthread_mutex_unlock(&c->lock);
	return r;
}

static void crash_close(struct img_io *io)
{
	struct crash_io *c = (struct crash_io *)io;

	queue_clear(c);
	free(c->q);
	c->cur->ops->close(c->cur);
	c->durable->ops->close(c->durable);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static const struct img_io_ops crash_ops = {
	.pread = crash_pread, .pwrite = crash_pwrite, .flush = crash_flush,
	.punch = crash_punch, .truncate = crash_truncate, .size = crash_size,
	.close = crash_close,
};

int imgi_io_crash_new(const void *init, size_t len, struct img_io **out)
{
	return imgi_io_crash_new_clocked(init, len, NULL, out);
}

int imgi_io_crash_new_clocked(const void *init, size_t len, struct imgi_crash_clock *clk,
			     struct img_io **out)
{
	struct crash_io *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return -ENOMEM;
	c->clk = clk ? clk : &c->own;
	r = img_io_mem_new(init, len, &c->cur);
	if (r)
		goto fail;
	r = img_io_mem_new(init, len, &c->durable);
	if (r)
		goto fail;
	pthread_mutex_init(&c->lock, NULL);
	c->io.ops = &crash_ops;
	c->io.name = "(crash)";
	*out = &c->io;
	return 0;
fail:
	if (c->cur)
		c->cur->ops->close(c->cur);
	free(c);
	return r;
}

void imgi_io_crash_arm(struct img_io *io, uint64_t n)
{
	struct crash_io *c = (struct crash_io *)io;

	pthread_mutex_lock(&c->lock);
	c->clk->arm_at = n;
	pthread_mutex_unlock(&c->lock);
}

uint64_t imgi_io_crash_events(struct img_io *io)
{
	struct crash_io *c = (struct crash_io *)io;
	uint64_t n;

	pthread_mutex_lock(&c->lock);
	n = c->clk->events;
	pthread_mutex_unlock(&c->lock);
	return n;
}

int imgi_io_crash_crashed(struct img_io *io)
{
	struct crash_io *c = (struct crash_io *)io;
	int n;

	pthread_mutex_lock(&c->lock);
	n = c->clk->crashed;
	pthread_mutex_unlock(&c->lock);
	return n;
}

size_t imgi_io_crash_pending(struct img_io *io)
{
	struct crash_io *c = (struct crash_io *)io;
	size_t n;

	pthread_mutex_lock(&c->lock);
	n = c->nq;
	pthread_mutex_unlock(&c->lock);
	return n;
}

/* splitmix64: a small, good generator; the state is the seed. */
static uint64_t next_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Applies the 512-byte sectors of p (aligned to absolute offsets) that the
 * generator keeps. */
static int apply_torn(struct img_io *m, const struct pending *p, uint64_t *rs)
{
	uint64_t pos = p->off, end = p->off + p->len;
	int r = 0;

	while (!r && pos < end) {
		uint64_t next = (pos / IMG_SECTOR_SIZE + 1) * IMG_SECTOR_SIZE;
		if (next > end)
			next = end;
		if (next_rand(rs) & 1) {
			if (p->type == OP_WRITE)
				r = m->ops->pwrite(m, p->data + (pos - p->off), next - pos, pos);
			else
				r = m->ops->punch(m, pos, next - pos);
		}
		pos = next;
	}
	return r;
}

int imgi_io_crash_materialize(struct img_io *io, enum imgi_crash_mode mode, uint64_t seed,
			     struct imgi_crash_stats *stats, struct img_io **out)
{
	struct crash_io *c = (struct crash_io *)io;
	struct imgi_crash_stats st = { 0 };
	struct img_io *m = NULL;
	uint64_t rs = seed;
	const void *data;
	size_t len;
	int r;

	pthread_mutex_lock(&c->lock);
	data = img_io_mem_data(c->durable, &len);
	r = img_io_mem_new(data, len, &m);
	for (size_t i = 0; !r && i < c->nq; i++) {
		const struct pending *p = &c->q[i];
		unsigned choice = mode == IMG_CRASH_KEEP_ALL ? 0
				: mode == IMG_CRASH_DROP_ALL ? 1
				: (unsigned)(next_rand(&rs) % 3);

		if (choice == 2 && p->type == OP_TRUNCATE)
			choice = next_rand(&rs) & 1;
		switch (choice) {
		case 0:
			r = apply(m, p);
			st.kept++;
			break;
		case 1:
			st.dropped++;
			break;
		default:
			r = apply_torn(m, p, &rs);
			st.torn++;
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	if (r) {
		if (m)
			m->ops->close(m);
		return r;
	}
	if (stats)
		*stats = st;
	*out = m;
	return 0;
}
