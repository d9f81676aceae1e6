/* SPDX-License-Identifier: MIT */
/*
 * Handle utilities every layer above the I/O backends uses: the error of a
 * handle (imgi_fail), "may this handle change the image"
 * (imgi_check_writable; imgi_check_changeable asks it of a read-only handle
 * an operation opens again for writing: the one rule, no other copy), the
 * failed-sync rule (imgi_sync: a failed sync is final for the handle; later
 * changes, flushes and the close return -EIO, imgi_check_failed), zeroing
 * host bytes (imgi_zero_host: punch, or write zeros where the host cannot),
 * the host file's size (imgi_file_size), the problems open and replay find
 * for img_check (imgi_problem_add), and the sparse cluster write
 * (imgi_sparse_reqs, imgi_write_sparse: the one rule for writing into free
 * host clusters, for copy-up, relocation, compaction and repair).  They
 * call only error.c, format.c and the handle's I/O table.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int imgi_fail(struct img *img, int err, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (err == -EUCLEAN || err == -EOPNOTSUPP || err == -EMEDIUMTYPE)
		imgi_set_error("%s: %s", img->name, msg);
	else
		imgi_set_error("%s: %s: %s", img->name, msg, img_strerror(err));
	return err;
}

int imgi_check_failed(struct img *img)
{
	int f = __atomic_load_n(&img->failed, __ATOMIC_ACQUIRE);

	if (!f)
		return 0;
	imgi_set_error("%s: an earlier sync failed (%s): data written since the last successful "
		      "flush may be lost; the handle refuses writes and flushes until the image "
		      "is closed and reopened: %s", img->name, img_strerror(f), img_strerror(-EIO));
	return -EIO;
}

int imgi_check_changeable(struct img *img, enum imgi_change what, const char *doing)
{
	int r;

	if ((r = imgi_check_failed(img)))
		return r;
	if (what == IMG_CHANGE_REPAIR)
		return 0;
	if (img->corrupt)
		return imgi_fail(img, -EUCLEAN, "image is corrupt: repair it before %s", doing);
	if (what == IMG_CHANGE_CONTENT && img->delta && !img->backing)
		return imgi_fail(img, -EROFS, "a delta opened without its backing chain: %s refused "
				"(what the disk shows depends on its backing image)", doing);
	return 0;
}

int imgi_check_writable(struct img *img, enum imgi_change what, const char *doing)
{
	if (img->rdonly)
		return imgi_fail(img, -EROFS, "opened read-only: %s refused", doing);
	return imgi_check_changeable(img, what, doing);
}

int imgi_sync(struct img *img, const char *what)
{
	int r = imgi_check_failed(img);

	if (r)
		return r;
	if ((r = img->io->ops->flush(img->io))) {
		int zero = 0;
		__atomic_compare_exchange_n(&img->failed, &zero, r, 0, __ATOMIC_ACQ_REL,
					    __ATOMIC_ACQUIRE);
		return imgi_fail(img, r, "%s", what);
	}
	return 0;
}

int imgi_zero_host(struct img *img, uint64_t off, uint64_t len)
{
	static const uint8_t zero[65536];
	int r = __atomic_load_n(&img->can_punch, __ATOMIC_RELAXED) ? img->io->ops->punch(img->io, off, len) : -EOPNOTSUPP;

	if (r != -EOPNOTSUPP)
		return r;
	__atomic_store_n(&img->can_punch, 0, __ATOMIC_RELAXED);
	for (r = 0; !r && len; ) {
		size_t n = len < sizeof(zero) ? (size_t)len : sizeof(zero);
		r = img->io->ops->pwrite(img->io, zero, n, off);
		off += n;
		len -= n;
	}
	return r;
}

size_t imgi_sparse_reqs(struct img *img, const uint8_t *buf, uint64_t len, uint64_t host_off,
		       struct img_io_req *rq)
{
	static uint8_t zero;
	const uint64_t bs = 4096;
	size_t n = 0;

	for (uint64_t o = 0; o < len; ) {
		uint64_t s = o, t;
		while (s < len && imgi_is_zero(buf + s, len - s < bs ? len - s : bs))
			s += len - s < bs ? len - s : bs;
		t = s;
		while (t < len && !imgi_is_zero(buf + t, len - t < bs ? len - t : bs))
			t += len - t < bs ? len - t : bs;
		if (t > s)
			rq[n++] = (struct img_io_req){ .buf = (uint8_t *)buf + s, .len = t - s,
						       .off = host_off + s, .op = IMG_IO_OP_WRITE };
		o = t;
	}
	/* Nothing to write, but a mapped cluster must start inside the file
	 * (FORMAT.md 4.1).  The area is free, so it reads as zero already. */
	if (!n && host_off >= imgi_file_size(img))
		rq[n++] = (struct img_io_req){ .buf = &zero, .len = 1, .off = host_off,
					       .op = IMG_IO_OP_WRITE };
	return n;
}

int imgi_write_sparse(struct img *img, const uint8_t *buf, uint64_t len, uint64_t host_off)
{
	struct img_io_req few[8], *rq = few;
	size_t n, cap = IMG_SPARSE_MAX_REQS(len);
	int r = 0;

	if (cap > sizeof(few) / sizeof(few[0]) && !(rq = malloc(cap * sizeof(*rq))))
		return -ENOMEM;
	n = imgi_sparse_reqs(img, buf, len, host_off, rq);
	for (size_t i = 0; i < n && !r; i++)
		r = img->io->ops->pwrite(img->io, rq[i].buf, rq[i].len, rq[i].off);
	if (rq != few)
		free(rq);
	return r;
}

uint64_t imgi_file_size(struct img *img)
{
	uint64_t s = 0;
	img->io->ops->size(img->io, &s);
	return s;
}

void imgi_problem_add(struct img *img, enum imgi_problem_kind kind, uint64_t v,
		     uint64_t h, const char *fmt, ...)
{
	struct imgi_problem *p;
	va_list ap;

	if (!(img->flags & IMG_OPEN_CHECK))
		return;
	if (img->nproblems >= MAX_PROBLEMS) {
		img->problems_dropped++;      /* never silently: img_check says so */
		return;
	}
	if (!(img->nproblems & (img->nproblems + 1))) {   /* grow at 0,1,3,7,... */
		size_t cap = (img->nproblems + 1) * 2;
		p = realloc(img->problems, cap * sizeof(*p));
		if (!p) {
			img->problems_dropped++;
			return;
		}
		img->problems = p;
	}
	p = &img->problems[img->nproblems++];
	p->kind = kind;
	p->v = v;
	p->h = h;
	va_start(ap, fmt);
	vsnprintf(p->msg, sizeof(p->msg), fmt, ap);
	va_end(ap);
}
