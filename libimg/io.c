/* SPDX-License-Identifier: MIT */
/*
 * The generic I/O entry points over any backend's table (struct
 * img_io_ops): img_io_batch runs a batch through the backend's batch
 * operation, or one call after another (img_io_batch_loop) where it has
 * none; img_io_seek_data asks the backend's seek_data operation
 * (-EOPNOTSUPP without one).  No code here or above tests which backend a
 * handle has.
 */
#include <errno.h>

#include "internal.h"

/* ---- the generic batch entry point ------------------------------------ */

/* Backends without batches: one call after another. */
int img_io_batch_loop(struct img_io *io, struct img_io_req *reqs, size_t n)
{
	int first = 0;

	for (size_t i = 0; i < n; i++) {
		struct img_io_req *q = &reqs[i];
		if (q->op == IMG_IO_OP_READ)
			q->result = io->ops->pread(io, q->buf, q->len, q->off);
		else if (q->op == IMG_IO_OP_WRITE)
			q->result = io->ops->pwrite(io, q->buf, q->len, q->off);
		else
			q->result = -EINVAL;
		if (q->result && !first)
			first = q->result;
	}
	return first;
}

IMG_API int img_io_batch(struct img_io *io, struct img_io_req *reqs, size_t n)
{
	if (io->ops->batch)
		return io->ops->batch(io, reqs, n);
	return img_io_batch_loop(io, reqs, n);
}

int img_io_seek_data(struct img_io *io, uint64_t off, uint64_t *data)
{
	if (!io->ops->seek_data)
		return -EOPNOTSUPP;
	return io->ops->seek_data(io, off, data);
}
