/* SPDX-License-Identifier: MIT */
/*
 * The data path: read, write, compressed write, the sparse write (zeros
 * not written where the disk reads zeros: img_pwrite_sparse, for the tools
 * that copy a disk into an image), discard, write-zeroes, flush, map, and
 * the cluster copies the operations build on: imgi_relocate and
 * imgi_copy_up (resize), imgi_copy_cluster (check's repair).  Whatever
 * writes into a free host cluster does it with imgi_write_sparse (util.c).
 * Reading through the backing chain is imgi_read_through, for every caller
 * (a delta's unallocated clusters, copy-up, a rebase comparing chains).
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
		return imgi_fail(img, -EINVAL, "%s of %llu bytes at offset %llu goes past the virtual size %llu",
				what, (unsigned long long)len, (unsigned long long)off,
				(unsigned long long)img->vsize);
	return 0;
}

/* What an entry reads as. */
enum { K_DATA, K_ZERO, K_BACKING, K_COMP };

static int kind(const struct img *img, uint64_t e)
{
	unsigned s = IMG_E_STATE(e);
	return s == IMG_E_ALLOC ? K_DATA : s == IMG_E_COMP ? K_COMP :
	       s == IMG_E_UNALLOC && IMG_SHOWS_BACKING(img) ? K_BACKING : K_ZERO;
}

/* Bytes of the run of clusters starting at pos that are mapped to
 * consecutive host clusters (k == K_DATA) or all read as k. */
static uint64_t run_length(struct img *img, uint64_t pos, uint64_t end, int k, uint64_t h)
{
	uint64_t v = pos >> img->g.cluster_bits;
	uint64_t run = min_u64(end, (v + 1) << img->g.cluster_bits) - pos;

	for (uint64_t nv = v + 1; pos + run < end; nv++) {
		uint64_t e = bat_get(img, nv);
		if (kind(img, e) != k || (k == K_DATA && IMG_E_PAYLOAD(e) != h + (nv - v)))
			break;
		run += min_u64(end - (pos + run), CS(img));
	}
	return run;
}

int imgi_read_through(struct img *b, uint8_t *buf, uint64_t len, uint64_t off)
{
	uint64_t n = b && off < b->vsize ? min_u64(len, b->vsize - off) : 0;
	ssize_t got = n ? img_pread(b, buf, n, off) : 0;

	if (got < 0)
		return (int)got;
	memset(buf + n, 0, len - n);
	return 0;
}

/* Copy-on-write: [pos, pos+len) inside cluster v, unallocated in a delta
 * (FORMAT.md 3.1) or compressed (4.2), gets src (NULL: zeros); the rest of
 * the cluster comes from the backing image or the decompressed payload.
 * The whole new cluster is written before its entry is published (data
 * before map); a compressed payload is released after.  map_lock held
 * (exclusive for a compressed cluster: its host cluster may be freed). */
static int cow_write(struct img *img, uint64_t v, uint64_t pos, uint64_t len, const uint8_t *src)
{
	unsigned bits = img->g.cluster_bits;
	uint64_t cstart = v << bits, clen = min_u64(CS(img), img->vsize - cstart), h, e;
	uint64_t e0 = bat_get(img, v);
	uint8_t *buf = malloc(CS(img));
	int r, lost = 0;

	if (!buf)
		return -ENOMEM;
	r = IMG_E_STATE(e0) == IMG_E_COMP ? comp_read(img, v, e0, buf)
					   : imgi_read_through(img->backing, buf, clen, cstart);
	if (r) {
		free(buf);
		return r;
	}
	if (src)
		memcpy(buf + (pos - cstart), src, len);
	else
		memset(buf + (pos - cstart), 0, len);
	pthread_mutex_lock(&img->meta_lock);
	r = alloc_get(img, img->g.data_cluster0, &h);
	pthread_mutex_unlock(&img->meta_lock);
	if (r) {
		free(buf);
		return imgi_fail(img, r, "allocating a cluster");
	}
	if ((r = imgi_write_sparse(img, buf, clen, HOST_OFF(img, h)))) {
		free(buf);
		alloc_release_unmapped(img, h);
		return imgi_fail(img, r, "writing");
	}
	pthread_mutex_lock(&img->meta_lock);
	e = img->bat[v];
	if (e == e0) {
		/* ENOMEM: the old cluster stays marked used (a leak, not a loss) */
		(void)imgi_release_entry(img, e0);
		bat_set(img, v, IMG_E_MAKE(IMG_E_ALLOC, h));
	} else {
		lost = 1;
	}
	pthread_mutex_unlock(&img->meta_lock);
	if (lost) {
		/* Another writer copied the cluster up first (it can only have
		 * allocated it: zeroing takes map_lock exclusive).  Put only
		 * our bytes into its cluster. */
		r = img->io->ops->pwrite(img->io, buf + (pos - cstart), len,
					 HOST_OFF(img, IMG_E_PAYLOAD(e)) + (pos - cstart));
		alloc_release_unmapped(img, h);
		if (r)
			imgi_fail(img, r, "writing");
	}
	free(buf);
	return r;
}

int imgi_copy_up(struct img *img, uint64_t v)
{
	return cow_write(img, v, v << img->g.cluster_bits, 0, NULL);
}

IMG_API ssize_t img_pread(struct img *img, void *buf, size_t len, uint64_t off)
{
	struct comp_scratch cs = { 0 };
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
			run = run_length(img, pos, end, K_DATA, h);
			r = img->io->ops->pread(img->io, b + (pos - off), run, HOST_OFF(img, h) + (pos & MASK(img)));
			if (r) {
				imgi_fail(img, r, "reading");
				goto out;
			}
		} else if (kind(img, e) == K_BACKING) {
			run = run_length(img, pos, end, K_BACKING, 0);
			if ((r = imgi_read_through(img->backing, b + (pos - off), run, pos)))
				goto out;
		} else if (kind(img, e) == K_COMP) {
			if ((r = comp_read_run(img, pos, end, b + (pos - off), &run, &cs)))
				goto out;
		} else {
			run = run_length(img, pos, end, K_ZERO, 0);
			memset(b + (pos - off), 0, run);
		}
		pos += run;
	}
out:
	pthread_rwlock_unlock(&img->map_lock);
	comp_scratch_free(&cs);
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
		uint64_t ne = bat_get(img, v + n);
		/* A partial cluster of a delta that shows its backing needs a
		 * copy-on-write of its own. */
		if (kind(img, ne) == K_BACKING && end - (pos + run) < CS(img) &&
		    end < img->vsize)
			break;
		if (IMG_E_STATE(ne) == IMG_E_ALLOC || IMG_E_STATE(ne) == IMG_E_COMP ||
		    alloc_test(img, h0 + n) ||
		    h0 + n >= IMG_MAX_HOST_CLUSTER || alloc_mark(img, h0 + n))
			break;
		run += min_u64(end - (pos + run), CS(img));
		n++;
	}
	pthread_mutex_unlock(&img->meta_lock);
	if (r)
		return imgi_fail(img, r, "allocating a cluster");

	r = img->io->ops->pwrite(img->io, src, run, HOST_OFF(img, h0) + (pos & MASK(img)));
	if (r) {
		for (uint64_t k = 0; k < n; k++)
			alloc_release_unmapped(img, h0 + k);
		return imgi_fail(img, r, "writing");
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
			return imgi_fail(img, r, "writing");
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
	if ((r = imgi_check_writable(img, IMG_CHANGE_CONTENT, "writing")))
		return r;
	pthread_rwlock_rdlock(&img->map_lock);
	if ((r = check_range(img, off, len, "write")))
		goto out;
	end = off + len;
	if (__atomic_load_n(&img->ncomp, __ATOMIC_RELAXED)) {
		/* Rewriting a compressed cluster may free its host cluster: that
		 * needs map_lock exclusive (no reader may be using it). */
		int any = 0;
		for (uint64_t v = off >> img->g.cluster_bits; v <= (end - 1) >> img->g.cluster_bits && len; v++)
			any |= IMG_E_STATE(bat_get(img, v)) == IMG_E_COMP;
		if (any) {
			pthread_rwlock_unlock(&img->map_lock);
			pthread_rwlock_wrlock(&img->map_lock);
			if ((r = check_range(img, off, len, "write")))
				goto out;
		}
	}
	while (pos < end) {
		uint64_t e = bat_get(img, pos >> img->g.cluster_bits), run = 0;
		if (IMG_E_STATE(e) == IMG_E_ALLOC) {
			uint64_t h = IMG_E_PAYLOAD(e);
			run = run_length(img, pos, end, K_DATA, h);
			r = img->io->ops->pwrite(img->io, b + (pos - off), run,
						 HOST_OFF(img, h) + (pos & MASK(img)));
			if (r) {
				imgi_fail(img, r, "writing");
				goto out;
			}
		} else if (kind(img, e) == K_COMP ||
			   (kind(img, e) == K_BACKING &&
			    ((pos & MASK(img)) || (end - pos < CS(img) && end < img->vsize)))) {
			uint64_t v = pos >> img->g.cluster_bits;
			run = min_u64(end, (v + 1) << img->g.cluster_bits) - pos;
			if ((r = cow_write(img, v, pos, run, b + (pos - off))))
				goto out;
		} else if ((r = write_new(img, pos, end, b + (pos - off), &run))) {
			goto out;
		}
		pos += run;
	}
out:
	pthread_rwlock_unlock(&img->map_lock);
	return r ? r : (ssize_t)len;
}

/* The bytes of the block at pos (blocks of g bytes, aligned), at most left. */
static uint64_t block_len(uint64_t g, uint64_t pos, uint64_t left)
{
	return min_u64(g - pos % g, left);
}

/* [pos, pos + len) of a sparse write: img_pwrite, or with
 * IMG_SPARSE_COMPRESS each whole cluster (the disk's last one counts as
 * whole when it ends at vsize) img_write_compressed and each partial one
 * img_pwrite. */
static int write_run(struct img *img, const uint8_t *b, uint64_t len, uint64_t pos,
		     unsigned flags, uint64_t vsize)
{
	int comp = (flags & IMG_SPARSE_COMPRESS) != 0;

	while (len) {
		uint64_t k = comp ? block_len(CS(img), pos, len) : len;
		ssize_t w = comp && !(pos & MASK(img)) && (k == CS(img) || pos + k == vsize) ?
			    img_write_compressed(img, b, k, pos) : img_pwrite(img, b, k, pos);
		if (w < 0)
			return (int)w;
		b += k;
		pos += k;
		len -= k;
	}
	return 0;
}

IMG_API ssize_t img_pwrite_sparse(struct img *img, const void *buf, size_t len, uint64_t off,
				  unsigned flags)
{
	const uint8_t *b = buf;
	uint64_t g, vsize, v0, nv = 0, done = 0, written = 0;
	uint8_t *zero = NULL;     /* per cluster of the range: reads zeros */
	int r;

	imgi_clear_error();
	if (len > SSIZE_MAX || (flags & ~(IMG_SPARSE_CLUSTERS | IMG_SPARSE_COMPRESS)))
		return imgi_fail(img, -EINVAL, "a sparse write with unknown flags or too long");
	if ((r = imgi_check_writable(img, IMG_CHANGE_CONTENT, "writing")) || !len)
		return r;
	/* What reads zeros is decided as the call starts: the blocks of the
	 * call do not overlap, and writing one leaves the rest of its cluster
	 * as it read (a new cluster is a free one, FORMAT.md 6). */
	v0 = off >> img->g.cluster_bits;
	pthread_rwlock_rdlock(&img->map_lock);
	if (!(r = check_range(img, off, len, "write"))) {
		nv = ((off + len - 1) >> img->g.cluster_bits) - v0 + 1;
		if (!(zero = malloc(nv)))
			r = -ENOMEM;
		for (uint64_t i = 0; zero && i < nv; i++)
			zero[i] = kind(img, bat_get(img, v0 + i)) == K_ZERO;
	}
	vsize = img->vsize;
	pthread_rwlock_unlock(&img->map_lock);
	g = flags ? CS(img) : 4096;
#define SKIP(p, n) (zero[((off + (p)) >> img->g.cluster_bits) - v0] && imgi_is_zero(b + (p), (n)))
	while (done < len && !r) {
		uint64_t k = block_len(g, off + done, len - done), run = 0;
		if (SKIP(done, k)) {
			done += k;
			continue;
		}
		/* A run of blocks to write, up to the next one to skip. */
		do {
			run += k;
			k = block_len(g, off + done + run, len - done - run);
		} while (done + run < len && !SKIP(done + run, k));
		r = write_run(img, b + done, run, off + done, flags, vsize);
		written += run;
		done += run;
	}
#undef SKIP
	free(zero);
	return r ? r : (ssize_t)written;
}

/* Discard (whole clusters become unallocated) or write-zeroes (whole
 * allocated clusters become "zero").  Partial clusters are zeroed on the
 * host.  Unallocated clusters already read as zeros and stay as they are,
 * except in a delta: there whole clusters become "zero" and partial ones
 * are copied up with zeros in the range. */
static int zero_range(struct img *img, uint64_t off, uint64_t len, int discard)
{
	uint64_t pos = off, end, vsize, freed = 0;
	size_t npending;
	int r;

	if ((r = imgi_check_writable(img, IMG_CHANGE_CONTENT, discard ? "discard" : "write-zeroes")))
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
			/* In a delta, "zero" hides the backing image; unallocated
			 * would let it show through again (FORMAT.md 3.1). */
			uint64_t ne = discard ? bat_dropped(img) : IMG_E_MAKE(IMG_E_ZERO, 0);
			if (e != ne && (discard || img->delta || IMG_E_STATE(e) == IMG_E_ALLOC ||
					IMG_E_STATE(e) == IMG_E_COMP)) {
				pthread_mutex_lock(&img->meta_lock);
				if (IMG_E_STATE(e) == IMG_E_ALLOC || IMG_E_STATE(e) == IMG_E_COMP) {
					r = imgi_release_entry(img, e);
					freed++;
				}
				if (!r)
					bat_set(img, v, ne);
				pthread_mutex_unlock(&img->meta_lock);
			}
		} else if (IMG_E_STATE(e) == IMG_E_ALLOC) {
			r = imgi_zero_host(img, HOST_OFF(img, IMG_E_PAYLOAD(e)) + (pos - cstart), stop - pos);
			if (r)
				imgi_fail(img, r, "zeroing part of a cluster");
		} else if (kind(img, e) == K_BACKING || kind(img, e) == K_COMP) {
			r = cow_write(img, v, pos, stop - pos, NULL);
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

static unsigned ext_type(const struct img *img, uint64_t e)
{
	return IMG_E_STATE(e) == IMG_E_ALLOC ? IMG_EXTENT_DATA :
	       IMG_E_STATE(e) == IMG_E_COMP ? IMG_EXTENT_COMPRESSED :
	       IMG_E_STATE(e) == IMG_E_ZERO ? IMG_EXTENT_ZERO : IMG_EXTENT_UNALLOCATED;
}

IMG_API int img_map(struct img *img, uint64_t off, struct img_extent *out)
{
	uint64_t vsize, e, h, nv, pos;
	unsigned type, bits = img->g.cluster_bits;
	int k, r = 0;

	memset(out, 0, sizeof(*out));
	out->offset = off;
	pthread_rwlock_rdlock(&img->map_lock);
	vsize = img->vsize;
	if (off >= vsize) {
		pthread_rwlock_unlock(&img->map_lock);
		return off == vsize ? 0 : imgi_fail(img, -EINVAL, "map offset past the virtual size");
	}
	nv = off >> bits;
	e = bat_get(img, nv);
	type = ext_type(img, e);
	k = kind(img, e);
	h = IMG_E_PAYLOAD(e);
	pos = min_u64(vsize, (nv + 1) << bits);
	for (uint64_t k2 = 1; pos < vsize; k2++) {
		uint64_t e2 = bat_get(img, nv + k2);
		if (ext_type(img, e2) != type || kind(img, e2) != k || type == IMG_EXTENT_COMPRESSED ||
		    (type == IMG_EXTENT_DATA && IMG_E_PAYLOAD(e2) != h + k2))
			break;
		pos = min_u64(vsize, pos + CS(img));
	}
	out->length = pos - off;
	out->type = type;
	if (type == IMG_EXTENT_DATA)
		out->host_offset = HOST_OFF(img, h) + (off & MASK(img));
	if (type == IMG_EXTENT_COMPRESSED)
		out->host_offset = IMG_C_SECTOR(e) * 512;
	if (k == K_BACKING) {
		/* Where the bytes come from: the backing image's map. */
		struct img_extent be;
		out->depth = 1;
		if (off < img->backing->vsize && !(r = img_map(img->backing, off, &be))) {
			if (be.length < out->length)
				out->length = be.length;
			out->type = be.type;
			out->host_offset = be.host_offset;
			out->depth = be.depth + 1;
		} else if (off < img->backing->vsize) {
			out->length = 0;
		} else {
			out->length = pos - off;
		}
	}
	pthread_rwlock_unlock(&img->map_lock);
	return r;
}

/* ---- relocation ----------------------------------------------------- */

int imgi_copy_cluster(struct img *img, uint64_t from, uint64_t to, void *buf)
{
	int r = img->io->ops->pread(img->io, buf, CS(img), HOST_OFF(img, from));

	/* The target is free, so it reads as zeros: write only non-zero
	 * blocks, which keeps holes holes. */
	return r ? r : imgi_write_sparse(img, buf, CS(img), HOST_OFF(img, to));
}

int imgi_relocate(struct img *img, uint64_t v, uint64_t min, uint64_t max, void *buf)
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
	if ((r = imgi_copy_cluster(img, h, q, buf))) {
		alloc_release_unmapped(img, q);
		return imgi_fail(img, r, "copying cluster %llu", (unsigned long long)h);
	}
	pthread_mutex_lock(&img->meta_lock);
	bat_set(img, v, IMG_E_MAKE(IMG_E_ALLOC, q));
	/* On ENOMEM the old cluster stays marked used: a leak, not a loss. */
	alloc_defer_free(img, h);
	pthread_mutex_unlock(&img->meta_lock);
	return 0;
}

/* A whole cluster stored compressed (compress.c, comp_store), or written
 * plainly when it does not compress. */
IMG_API int img_write_compressed(struct img *img, const void *buf, size_t len, uint64_t off)
{
	uint64_t cs = img->g.cluster_size, v = off >> img->g.cluster_bits;
	uint8_t *tmp = NULL;
	const uint8_t *data = buf;
	int r;

	imgi_clear_error();
	if ((r = imgi_check_writable(img, IMG_CHANGE_CONTENT, "writing")))
		return r;
	pthread_rwlock_wrlock(&img->map_lock);
	if (off % cs || off >= img->vsize || len != (img->vsize - off < cs ? img->vsize - off : cs)) {
		r = imgi_fail(img, -EINVAL, "a compressed write covers one whole cluster");
		goto out;
	}
	if (len < cs) {   /* the last cluster: past the disk is zeros */
		if (!(tmp = calloc(1, cs))) {
			r = -ENOMEM;
			goto out;
		}
		memcpy(tmp, buf, len);
		data = tmp;
	}
	r = comp_store(img, v, data);
out:
	pthread_rwlock_unlock(&img->map_lock);
	free(tmp);
	if (r == 0) {
		ssize_t w = img_pwrite(img, buf, len, off);
		r = w < 0 ? (int)w : 0;
	}
	return r;
}
