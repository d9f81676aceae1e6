/* SPDX-License-Identifier: MIT */
#include <stdlib.h>

#include "ioborrow.h"

struct borrow_io {
	struct img_io io;
	struct img_io_ops ops;
	struct img_io *inner;
};

#define INNER(io) (((struct borrow_io *)(io))->inner)

static int b_pread(struct img_io *io, void *buf, size_t len, uint64_t off)
{
	return INNER(io)->ops->pread(INNER(io), buf, len, off);
}

static int b_pwrite(struct img_io *io, const void *buf, size_t len, uint64_t off)
{
	return INNER(io)->ops->pwrite(INNER(io), buf, len, off);
}

static int b_flush(struct img_io *io)
{
	return INNER(io)->ops->flush(INNER(io));
}

static int b_punch(struct img_io *io, uint64_t off, uint64_t len)
{
	return INNER(io)->ops->punch(INNER(io), off, len);
}

static int b_truncate(struct img_io *io, uint64_t size)
{
	return INNER(io)->ops->truncate(INNER(io), size);
}

static int b_size(struct img_io *io, uint64_t *size)
{
	return INNER(io)->ops->size(INNER(io), size);
}

static int b_usage(struct img_io *io, uint64_t *bytes)
{
	return INNER(io)->ops->usage(INNER(io), bytes);
}

static int b_lock(struct img_io *io, int exclusive, pid_t *holder)
{
	return INNER(io)->ops->lock(INNER(io), exclusive, holder);
}

static void b_close(struct img_io *io)
{
	free(io);
}

struct img_io *io_borrow(struct img_io *inner)
{
	struct borrow_io *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->inner = inner;
	b->ops = (struct img_io_ops){
		.pread = b_pread, .pwrite = b_pwrite, .flush = b_flush, .punch = b_punch,
		.truncate = b_truncate, .size = b_size,
		.usage = inner->ops->usage ? b_usage : NULL,
		.lock = inner->ops->lock ? b_lock : NULL,
		.close = b_close,
	};
	b->io.ops = &b->ops;
	b->io.name = inner->name;
	return &b->io;
}
