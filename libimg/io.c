/* SPDX-License-Identifier: MIT */
/*
 * The generic I/O entry points over any backend's table (struct
 * img_io_ops): img_io_batch runs a batch through the backend's batch
 * operation, or one call after another (imgi_io_batch_loop) where it has
 * none; imgi_io_seek_data asks the backend's seek_data operation
 * (-EOPNOTSUPP without one); imgi_io_advise passes cache advice to the
 * backend's advise operation (nothing to do without one: 0);
 * imgi_io_read_direct runs reads past the page cache through the backend's
 * read_direct operation, and through img_io_batch where the backend has
 * none or a request is not aligned for direct I/O.  No code here or above
 * tests which backend a handle has.
 *
 * Which backend has what: posix and io_uring have all three (io_uring's
 * direct reads are in flight together in its ring); the fault backend
 * has each one its inner backend has (and fails reads there as it fails
 * pread); the memory and crash backends have none (no host file).
 */
#include <errno.h>
#include <stdint.h>

#include "internal.h"

/* ---- the generic batch entry point ------------------------------------ */

/* Backends without batches: one call after another. */
int imgi_io_batch_loop(struct img_io *io, struct img_io_req *reqs, size_t n)
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
	return imgi_io_batch_loop(io, reqs, n);
}

int imgi_io_seek_data(struct img_io *io, uint64_t off, uint64_t *data)
{
	if (!io->ops->seek_data)
		return -EOPNOTSUPP;
	return io->ops->seek_data(io, off, data);
}

int imgi_io_advise(struct img_io *io, uint64_t off, uint64_t len, unsigned advice)
{
	if (advice != IMG_ADVISE_DONTNEED && advice != IMG_ADVISE_WILLNEED)
		return -EINVAL;
	if (!io->ops->advise || !len)
		return 0;
	return io->ops->advise(io, off, len, advice);
}

/* Can this request go to the disk past the cache (O_DIRECT)? */
static int direct_ok(const struct img_io_req *q)
{
	return ((uintptr_t)q->buf | q->len | q->off) % IMG_IO_DIRECT_ALIGN == 0;
}

int imgi_io_read_direct(struct img_io *io, struct img_io_req *reqs, size_t n)
{
	int first = 0, r;
	size_t i = 0;

	for (size_t k = 0; k < n; k++)
		if (reqs[k].op != IMG_IO_OP_READ)
			return -EINVAL;
	if (!io->ops->read_direct)
		return img_io_batch(io, reqs, n);
	/* each maximal slice of aligned requests direct, the others through
	 * the cache */
	while (i < n) {
		size_t j = i;
		int direct = direct_ok(&reqs[i]);
		while (j < n && direct_ok(&reqs[j]) == direct)
			j++;
		r = direct ? io->ops->read_direct(io, reqs + i, j - i) :
			     img_io_batch(io, reqs + i, j - i);
		if (r && !first)
			first = r;
		i = j;
	}
	return first;
}
