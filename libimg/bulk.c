/* SPDX-License-Identifier: MIT */
/*
 * Whole-disk access for programs that copy or serve an image, by virtual
 * offset only (the tools hold no format knowledge, and see no host
 * offset):
 *   - img_next_run: the runs of the disk a copy must read (data, of this
 *     image or its backing chain, compressed or not) and those it need
 *     not (zeros), as qemu-img convert's block status gives them;
 *   - img_read_bulk: img_pread for reading large ranges once: the data
 *     clusters' host ranges go to the backend as requests of up to
 *     BULK_REQ bytes submitted together (in flight at once on io_uring),
 *     with IMG_READ_DIRECT past the host page cache (imgi_io_read_direct);
 *   - img_cache_advise: cache advice for the host ranges holding the data
 *     of a virtual range (a server keeping its host cache bounded).
 *
 * Reads hold map_lock shared, as img_pread does: no cluster they read is
 * remapped under them.  Only reads: nothing here writes.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "internal.h"

#define BULK_REQ  (1u << 20)   /* bytes per request */
#define BULK_NREQ 32u          /* requests submitted together (io_uring's depth) */
/* The kernel gives back only the page-cache folios wholly inside an
 * advised range, and caches files in folios of up to 2 MiB (naturally
 * aligned): DONTNEED is widened to these boundaries, or the pages of data
 * 1 MiB off them would never go (measured through imgserve: 94 of 128 MiB
 * stayed cached). */
#define DROP_ALIGN (2ull << 20)

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* ---- runs ------------------------------------------------------------- */

static unsigned run_type(const struct img *img, const struct img_extent *e, unsigned flags)
{
	if ((flags & IMG_RUN_TOP) &&
	    (e->depth > 0 || (e->type == IMG_EXTENT_UNALLOCATED && img->delta)))
		return IMG_RUN_BACKING;
	return e->type == IMG_EXTENT_DATA || e->type == IMG_EXTENT_COMPRESSED ? IMG_RUN_DATA :
	       IMG_RUN_ZERO;
}

IMG_API int img_next_run(struct img *img, uint64_t off, unsigned flags, struct img_run *out)
{
	uint64_t pos = off;
	int type = -1, r = 0;

	memset(out, 0, sizeof(*out));
	out->offset = off;
	imgi_clear_error();
	if (flags & ~IMG_RUN_TOP)
		return imgi_fail(img, -EINVAL, "unknown run flags %#x", flags);
	for (;;) {
		struct img_extent e;
		unsigned t;

		if ((r = img_map(img, pos, &e)))
			return r;
		if (!e.length)
			break;          /* the end of the disk */
		t = run_type(img, &e, flags);
		if (type >= 0 && t != (unsigned)type)
			break;
		type = (int)t;
		pos += e.length;
	}
	out->length = pos - off;
	out->type = type < 0 ? IMG_RUN_ZERO : (unsigned)type;
	return 0;
}

/* ---- bulk reads ------------------------------------------------------- */

struct bulk {
	struct img *img;
	unsigned flags;
	struct img_io_req q[BULK_NREQ];
	size_t n;
};

static int bulk_submit(struct bulk *b)
{
	struct img *img = b->img;
	int r;

	if (!b->n)
		return 0;
	r = (b->flags & IMG_READ_DIRECT) ? imgi_io_read_direct(img->io, b->q, b->n) :
					   img_io_batch(img->io, b->q, b->n);
	b->n = 0;
	return r ? imgi_fail(img, r, "reading") : 0;
}

/* Queue the read of len bytes at host offset host into buf. */
static int bulk_add(struct bulk *b, uint8_t *buf, uint64_t len, uint64_t host)
{
	int r;

	while (len) {
		size_t k = (size_t)min_u64(len, BULK_REQ);
		if (b->n == BULK_NREQ && (r = bulk_submit(b)))
			return r;
		b->q[b->n++] = (struct img_io_req){ .buf = buf, .len = k, .off = host,
						     .op = IMG_IO_OP_READ };
		buf += k;
		host += k;
		len -= k;
	}
	return 0;
}

static ssize_t read_bulk(struct img *img, uint8_t *buf, uint64_t len, uint64_t off,
			 unsigned flags);

/* [pos, pos + len) of a delta's unallocated clusters, from the backing
 * image: past its virtual size, zeros. */
static int bulk_backing(struct img *img, uint8_t *buf, uint64_t len, uint64_t pos,
			unsigned flags)
{
	uint64_t bsize = img->backing->vsize, n = pos < bsize ? min_u64(len, bsize - pos) : 0;
	ssize_t got = n ? read_bulk(img->backing, buf, n, pos, flags) : 0;

	if (got < 0)
		return (int)got;
	memset(buf + n, 0, len - n);
	return 0;
}

/* Bytes from pos (in cluster v, entry e) to end whose clusters read alike:
 * mapped to consecutive host clusters (allocated), or all zero, or all
 * from the backing image. */
static uint64_t bulk_run(struct img *img, uint64_t pos, uint64_t end, uint64_t e)
{
	unsigned bits = img->g.cluster_bits, s = IMG_E_STATE(e);
	uint64_t v = pos >> bits, run = min_u64(end, (v + 1) << bits) - pos;
	int backing = s == IMG_E_UNALLOC && IMG_SHOWS_BACKING(img);

	for (uint64_t nv = v + 1; pos + run < end; nv++) {
		uint64_t e2 = bat_get(img, nv);
		unsigned s2 = IMG_E_STATE(e2);
		if (s == IMG_E_ALLOC ? s2 != IMG_E_ALLOC || IMG_E_PAYLOAD(e2) != IMG_E_PAYLOAD(e) + (nv - v) :
		    backing ? s2 != IMG_E_UNALLOC :
		    (s2 != IMG_E_ZERO && s2 != IMG_E_UNALLOC) || (s2 == IMG_E_UNALLOC && IMG_SHOWS_BACKING(img)))
			break;
		run += min_u64(end - (pos + run), img->g.cluster_size);
	}
	return run;
}

static ssize_t read_bulk(struct img *img, uint8_t *buf, uint64_t len, uint64_t off,
			 unsigned flags)
{
	struct bulk b = { .img = img, .flags = flags };
	struct comp_scratch cs = { 0 };
	uint64_t pos = off, end;
	int r;

	pthread_rwlock_rdlock(&img->map_lock);
	if (__builtin_add_overflow(off, len, &end) || end > img->vsize) {
		r = imgi_fail(img, -EINVAL, "read of %llu bytes at offset %llu goes past the "
			     "virtual size %llu", (unsigned long long)len, (unsigned long long)off,
			     (unsigned long long)img->vsize);
		goto out;
	}
	for (r = 0; !r && pos < end; ) {
		uint64_t e = bat_get(img, pos >> img->g.cluster_bits), run = 0;
		unsigned s = IMG_E_STATE(e);
		uint8_t *p = buf + (pos - off);

		if (s == IMG_E_COMP) {
			r = comp_read_run(img, pos, end, p, &run, &cs);
		} else {
			run = bulk_run(img, pos, end, e);
			if (s == IMG_E_ALLOC)
				r = bulk_add(&b, p, run, HOST_OFF(img, IMG_E_PAYLOAD(e)) +
					     (pos & (img->g.cluster_size - 1)));
			else if (s == IMG_E_UNALLOC && IMG_SHOWS_BACKING(img))
				r = bulk_backing(img, p, run, pos, flags);
			else
				memset(p, 0, run);
		}
		pos += run;
	}
	if (!r)
		r = bulk_submit(&b);
out:
	pthread_rwlock_unlock(&img->map_lock);
	comp_scratch_free(&cs);
	return r ? r : (ssize_t)len;
}

IMG_API ssize_t img_read_bulk(struct img *img, void *buf, size_t len, uint64_t off,
			      unsigned flags)
{
	imgi_clear_error();
	if (len > SSIZE_MAX)
		return -EINVAL;
	if (flags & ~IMG_READ_DIRECT)
		return imgi_fail(img, -EINVAL, "unknown read flags %#x", flags);
	return read_bulk(img, buf, len, off, flags);
}

/* ---- cache advice ----------------------------------------------------- */

IMG_API int img_cache_advise(struct img *img, uint64_t off, uint64_t len, unsigned advice)
{
	uint64_t end, pa = 0, pz = 0;   /* [pa, pz): host bytes not advised yet */
	int r = 0;

	imgi_clear_error();
	if (advice != IMG_ADVISE_DONTNEED && advice != IMG_ADVISE_WILLNEED)
		return imgi_fail(img, -EINVAL, "unknown cache advice %u", advice);
	if (__builtin_add_overflow(off, len, &end))
		end = UINT64_MAX;
	pthread_rwlock_rdlock(&img->map_lock);
	end = min_u64(end, img->vsize);
	pthread_rwlock_unlock(&img->map_lock);
	while (!r && off < end) {
		struct img_extent e;
		uint64_t n, a, z;

		if ((r = img_map(img, off, &e)) || !e.length)
			break;
		n = min_u64(e.length, end - off);
		if (e.type == IMG_EXTENT_DATA && e.depth == 0) {
			a = e.host_offset;
			z = e.host_offset + n;
			if (advice == IMG_ADVISE_DONTNEED) {
				a &= ~(DROP_ALIGN - 1);
				z = (z + DROP_ALIGN - 1) & ~(DROP_ALIGN - 1);
			}
			/* one call for host ranges that touch (clusters laid
			 * out in order, or widened into the same 2 MiB): a
			 * whole disk is advised in a few calls, not one a
			 * cluster */
			if (pz > pa && a <= pz && z >= pa) {
				pa = a < pa ? a : pa;
				pz = z > pz ? z : pz;
			} else {
				if (pz > pa && (r = imgi_io_advise(img->io, pa, pz - pa, advice)))
					return imgi_fail(img, r, "cache advice");
				pa = a;
				pz = z;
			}
		}
		off += n;
	}
	if (!r && pz > pa && (r = imgi_io_advise(img->io, pa, pz - pa, advice)))
		r = imgi_fail(img, r, "cache advice");
	return r;
}
