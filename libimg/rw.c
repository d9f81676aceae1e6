/* SPDX-License-Identifier: MIT */
/*
 * The data path: read, write, discard, write-zeroes, flush, map, and the
 * cluster relocation that resize and compact build on.
 *
 * Invariants kept here (FORMAT.md §6):
 *  - data before map: a new cluster is reserved in the allocator, written,
 *    and only then published in the BAT, so a commit's snapshot never holds
 *    an entry whose data write has not completed;
 *  - a new cluster is always a free one, and free clusters read as zeros,
 *    so a partial write into it writes only its own bytes;
 *  - a host cluster leaves a mapping only under map_lock held exclusive
 *    (no reader or writer can be using it) and goes to the pending list
 *    (reused or punched only after the commit).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CS(img)   ((img)->g.cluster_size)
#define MASK(img) ((img)->g.cluster_size - 1)

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static int check_range(struct img *img, uint64_t off, uint64_t len, const char *what)
{
	uint64_t end;

	if (__builtin_add_overflow(off, len, &end) || end > img->vsize)
		return img_fail(img, -EINVAL, "%s of %llu bytes at offset %llu goes past the virtual size %llu",
				what, (unsigned long long)len, (unsigned long long)off,
				(unsigned long long)img->vsize);
	return 0;
}

static int check_writable(struct img *img)
{
	if (img->rdonly)
		return img_fail(img, -EROFS, "opened read-only");
	if (img->corrupt)
		return img_fail(img, -EUCLEAN, "image is corrupt: repair it before writing");
	return 0;
}

/* Bytes of the run of clusters starting at pos that are mapped to
 * consecutive host clusters (alloc != 0) or are all unmapped (alloc == 0). */
static uint64_t run_length(struct img *img, uint64_t pos, uint64_t end, int alloc, uint64_t h)
{
	uint64_t v = pos >> img->g.cluster_bits;
	uint64_t run = min_u64(end, (v + 1) << img->g.cluster_bits) - pos;

	for (uint64_t nv = v + 1; pos + run < end; nv++) {
		uint64_t e = bat_get(img, nv);
		if (alloc ? (IMG_E_STATE(e) != IMG_E_ALLOC || IMG_E_PAYLOAD(e) != h + (nv - v))
			  : IMG_E_STATE(e) == IMG_E_ALLOC)
			break;
		run += min_u64(end - (pos + run), CS(img));
	}
	return run;
}

IMG_API ssize_t img_pread(struct img *img, void *buf, size_t len, uint64_t off)
{
	uint8_t *b = buf;
	uint64_t pos = off, end;
	int r;

	if (len > SSIZE_MAX)
		return -EINVAL;
	pthread_rwlock_rdlock(&img->map_lock);
	if ((r = check_range(img, off, len, "read")))
		goto out;
	end = off + len;
	while (pos < end) {
		uint64_t e = bat_get(img, pos >> img->g.cluster_bits), run = 0;
		if (IMG_E_STATE(e) == IMG_E_ALLOC) {
			uint64_t h = IMG_E_PAYLOAD(e);
			run = run_length(img, pos, end, 1, h);
			r = img->io->ops->pread(img->io, b + (pos - off), run, HOST_OFF(img, h) + (pos & MASK(img)));
			if (r) {
				img_fail(img, r, "reading");
				goto out;
			}
		} else {
			run = run_length(img, pos, end, 0, 0);
			memset(b + (pos - off), 0, run);
		}
		pos += run;
	}
out:
	pthread_rwlock_unlock(&img->map_lock);
	return r ? r : (ssize_t)len;
}

/* Write [pos, end) starting in unmapped virtual cluster v: reserve a run
 * of consecutive free host clusters, write, then publish.  *runp gets the
 * bytes handled. */
static int write_new(struct img *img, uint64_t pos, uint64_t end, const uint8_t *src, uint64_t *runp)
{
	unsigned bits = img->g.cluster_bits;
	uint64_t v = pos >> bits, run = min_u64(end, (v + 1) << bits) - pos, n = 1, h0;
	int r;

	pthread_mutex_lock(&img->meta_lock);
	r = alloc_get(img, img->g.data_cluster0, &h0);
	while (!r && pos + run < end) {
		if (IMG_E_STATE(bat_get(img, v + n)) == IMG_E_ALLOC || alloc_test(img, h0 + n) ||
		    h0 + n >= IMG_MAX_HOST_CLUSTER || alloc_mark(img, h0 + n))
			break;
		run += min_u64(end - (pos + run), CS(img));
		n++;
	}
	pthread_mutex_unlock(&img->meta_lock);
	if (r)
		return img_fail(img, r, "allocating a cluster");

	r = img->io->ops->pwrite(img->io, src, run, HOST_OFF(img, h0) + (pos & MASK(img)));
	if (r) {
		for (uint64_t k = 0; k < n; k++)
			alloc_release_unmapped(img, h0 + k);
		return img_fail(img, r, "writing");
	}

	pthread_mutex_lock(&img->meta_lock);
	for (uint64_t k = 0; k < n; k++)
		if (IMG_E_STATE(img->bat[v + k]) != IMG_E_ALLOC)
			bat_set(img, v + k, IMG_E_MAKE(IMG_E_ALLOC, h0 + k));
	pthread_mutex_unlock(&img->meta_lock);
	/* Rare: another writer mapped one of these clusters first.  Mappings
	 * cannot change while we hold map_lock shared, so a payload other than
	 * ours means we lost: put our bytes in the winner's cluster and give
	 * ours back. */
	for (uint64_t k = 0; k < n; k++) {
		uint64_t e = bat_get(img, v + k), s, t;
		if (IMG_E_PAYLOAD(e) == h0 + k)
			continue;
		s = k ? (v + k) << bits : pos;
		t = min_u64(end, (v + k + 1) << bits);
		r = img->io->ops->pwrite(img->io, src + (s - pos), t - s,
					 HOST_OFF(img, IMG_E_PAYLOAD(e)) + (s & MASK(img)));
		alloc_release_unmapped(img, h0 + k);
		if (r)
			return img_fail(img, r, "writing");
	}
	*runp = run;
	return 0;
}

IMG_API ssize_t img_pwrite(struct img *img, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *b = buf;
	uint64_t pos = off, end;
	int r;

	if (len > SSIZE_MAX)
		return -EINVAL;
	if ((r = check_writable(img)))
		return r;
	pthread_rwlock_rdlock(&img->map_lock);
	if ((r = check_range(img, off, len, "write")))
		goto out;
	end = off + len;
	while (pos < end) {
		uint64_t e = bat_get(img, pos >> img->g.cluster_bits), run = 0;
		if (IMG_E_STATE(e) == IMG_E_ALLOC) {
			uint64_t h = IMG_E_PAYLOAD(e);
			run = run_length(img, pos, end, 1, h);
			r = img->io->ops->pwrite(img->io, b + (pos - off), run,
						 HOST_OFF(img, h) + (pos & MASK(img)));
			if (r) {
				img_fail(img, r, "writing");
				goto out;
			}
		} else if ((r = write_new(img, pos, end, b + (pos - off), &run))) {
			goto out;
		}
		pos += run;
	}
out:
	pthread_rwlock_unlock(&img->map_lock);
	return r ? r : (ssize_t)len;
}

/* Discard (whole clusters become unallocated) or write-zeroes (whole
 * allocated clusters become "zero").  Partial clusters are zeroed on the
 * host.  Unallocated clusters already read as zeros and stay as they are
 * (there is no backing image in format version 1). */
static int zero_range(struct img *img, uint64_t off, uint64_t len, int discard)
{
	uint64_t pos = off, end, vsize, freed = 0;
	size_t npending;
	int r;

	if ((r = check_writable(img)))
		return r;
	pthread_rwlock_wrlock(&img->map_lock);
	if ((r = check_range(img, off, len, discard ? "discard" : "write-zeroes")))
		goto out;
	end = off + len;
	vsize = img->vsize;
	while (pos < end && !r) {
		uint64_t v = pos >> img->g.cluster_bits, cstart = v << img->g.cluster_bits;
		uint64_t cend = cstart + CS(img), stop = min_u64(end, cend);
		uint64_t e = img->bat[v];
		int whole = pos == cstart && (stop == cend || stop == vsize);

		if (whole) {
			uint64_t ne = discard ? 0 : IMG_E_MAKE(IMG_E_ZERO, 0);
			if (e != ne && (discard || IMG_E_STATE(e) == IMG_E_ALLOC)) {
				pthread_mutex_lock(&img->meta_lock);
				if (IMG_E_STATE(e) == IMG_E_ALLOC) {
					r = alloc_defer_free(img, IMG_E_PAYLOAD(e));
					freed++;
				}
				if (!r)
					bat_set(img, v, ne);
				pthread_mutex_unlock(&img->meta_lock);
			}
		} else if (IMG_E_STATE(e) == IMG_E_ALLOC) {
			r = img_zero_host(img, HOST_OFF(img, IMG_E_PAYLOAD(e)) + (pos - cstart), stop - pos);
			if (r)
				img_fail(img, r, "zeroing part of a cluster");
		}
		pos = stop;
	}
out:
	npending = IMG_NPENDING(img);
	pthread_rwlock_unlock(&img->map_lock);
	/* A discard gives host space back at once: commit, then the commit
	 * punches the freed clusters.  Write-zeroes lets the next flush do it
	 * unless a lot is pending. */
	if (!r && ((discard && freed) || npending > 4096))
		r = journal_commit(img);
	return r;
}

IMG_API int img_discard(struct img *img, uint64_t off, uint64_t len)
{
	return zero_range(img, off, len, 1);
}

IMG_API int img_write_zeroes(struct img *img, uint64_t off, uint64_t len)
{
	return zero_range(img, off, len, 0);
}

IMG_API int img_flush(struct img *img)
{
	return journal_commit(img);
}

IMG_API int img_map(struct img *img, uint64_t off, struct img_extent *out)
{
	uint64_t vsize, e, h, nv, pos;
	unsigned type, bits = img->g.cluster_bits;

	memset(out, 0, sizeof(*out));
	out->offset = off;
	pthread_rwlock_rdlock(&img->map_lock);
	vsize = img->vsize;
	if (off >= vsize) {
		pthread_rwlock_unlock(&img->map_lock);
		return off == vsize ? 0 : img_fail(img, -EINVAL, "map offset past the virtual size");
	}
	nv = off >> bits;
	e = bat_get(img, nv);
	type = IMG_E_STATE(e) == IMG_E_ALLOC ? IMG_EXTENT_DATA :
	       IMG_E_STATE(e) == IMG_E_ZERO ? IMG_EXTENT_ZERO : IMG_EXTENT_UNALLOCATED;
	h = IMG_E_PAYLOAD(e);
	pos = min_u64(vsize, (nv + 1) << bits);
	for (uint64_t k = 1; pos < vsize; k++) {
		uint64_t e2 = bat_get(img, nv + k);
		unsigned t2 = IMG_E_STATE(e2) == IMG_E_ALLOC ? IMG_EXTENT_DATA :
			      IMG_E_STATE(e2) == IMG_E_ZERO ? IMG_EXTENT_ZERO : IMG_EXTENT_UNALLOCATED;
		if (t2 != type || (type == IMG_EXTENT_DATA && IMG_E_PAYLOAD(e2) != h + k))
			break;
		pos = min_u64(vsize, pos + CS(img));
	}
	out->length = pos - off;
	out->type = type;
	if (type == IMG_EXTENT_DATA)
		out->host_offset = HOST_OFF(img, h) + (off & MASK(img));
	pthread_rwlock_unlock(&img->map_lock);
	return 0;
}

/* ---- relocation ----------------------------------------------------- */

int img_copy_cluster(struct img *img, uint64_t from, uint64_t to, void *buf)
{
	const uint64_t cs = CS(img), bs = 4096;
	uint8_t *b = buf;
	int r = img->io->ops->pread(img->io, b, cs, HOST_OFF(img, from));

	/* The target is free, so it reads as zeros: write only non-zero
	 * blocks, which keeps holes holes. */
	for (uint64_t o = 0; !r && o < cs; ) {
		uint64_t s = o;
		while (s < cs && img_is_zero(b + s, bs))
			s += bs;
		uint64_t t = s;
		while (t < cs && !img_is_zero(b + t, bs))
			t += bs;
		if (t > s)
			r = img->io->ops->pwrite(img->io, b + s, t - s, HOST_OFF(img, to) + s);
		o = t;
	}
	return r;
}

int img_relocate(struct img *img, uint64_t v, uint64_t min, uint64_t max, void *buf)
{
	uint64_t e = img->bat[v], h = IMG_E_PAYLOAD(e), q;
	int r;

	pthread_mutex_lock(&img->meta_lock);
	r = alloc_get(img, min, &q);
	if (!r && max && q >= max) {
		alloc_unmark(img, q);
		r = 1;
	}
	pthread_mutex_unlock(&img->meta_lock);
	if (r)
		return r;
	if ((r = img_copy_cluster(img, h, q, buf))) {
		alloc_release_unmapped(img, q);
		return img_fail(img, r, "copying cluster %llu", (unsigned long long)h);
	}
	pthread_mutex_lock(&img->meta_lock);
	bat_set(img, v, IMG_E_MAKE(IMG_E_ALLOC, q));
	/* On ENOMEM the old cluster stays marked used: a leak, not a loss. */
	alloc_defer_free(img, h);
	pthread_mutex_unlock(&img->meta_lock);
	return 0;
}
