/* SPDX-License-Identifier: MIT */
/*
 * Compaction, in this order: all-zero clusters become unallocated (unless
 * IMG_COMPACT_NO_ZERO_DETECT); with IMG_COMPACT_COMPRESS every allocated
 * cluster is stored compressed where that saves a sector; compressed
 * payloads are repacked into fewer host clusters when they would fit; live
 * clusters and payloads move from the end of the host file into the lowest
 * free clusters (imgi_compact_relocate, which shrink uses too); the file is
 * truncated.  Afterwards the file holds the metadata, one host cluster per
 * allocated entry and the host clusters holding compressed payloads.
 *
 * Crash safety (FORMAT.md §6 rules 2 and 5): every move copies into a free
 * cluster, publishes the new mapping, and frees the old cluster only through
 * a commit; truncation happens after the commit that freed the tail.  Work
 * is done in batches with map_lock exclusive, so I/O from other threads
 * goes on between batches.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define BATCH 64   /* clusters moved per exclusive-lock hold and per commit */
#define IO_BYTES (16u << 20)   /* bytes of clusters read (or written) in one
                                * I/O batch (img_io_batch: at once on the
                                * io_uring backend, in turn on posix) */

/* Clusters per I/O batch: at least one, at most BATCH. */
static uint64_t group_of(struct img *img)
{
	uint64_t n = IO_BYTES >> img->g.cluster_bits;
	return n < 1 ? 1 : n > BATCH ? BATCH : n;
}

/* Moves the clusters list[2i] (host) of virtual list[2i+1], i < n, each to
 * the lowest free cluster below it, with one batch of reads and one of
 * writes.  A cluster with nothing free below it stays.  map_lock held
 * exclusive; the mappings were checked by the caller.  buf holds n
 * clusters.  *moved counts. */
static int relocate_group(struct img *img, const uint64_t *list, uint64_t n, uint8_t *buf,
			  uint64_t *moved)
{
	const uint64_t cs = img->g.cluster_size;
	uint64_t to[BATCH];
	struct img_io_req *rq;
	size_t nr = 0, cap = n * IMG_SPARSE_MAX_REQS(cs);
	int r = 0;

	rq = malloc(cap * sizeof(*rq));
	if (!rq)
		return -ENOMEM;
	pthread_mutex_lock(&img->meta_lock);
	for (uint64_t k = 0; k < n && !r; k++) {
		r = alloc_get(img, img->g.data_cluster0, &to[k]);
		if (!r && to[k] >= list[2 * k]) {     /* nothing free below it */
			alloc_unmark(img, to[k]);
			to[k] = UINT64_MAX;
		}
		if (r)
			n = k;   /* release only what was taken */
	}
	pthread_mutex_unlock(&img->meta_lock);
	if (r) {
		imgi_fail(img, r, "allocating clusters");
		goto release;
	}
	for (uint64_t k = 0; k < n; k++)
		if (to[k] != UINT64_MAX)
			rq[nr++] = (struct img_io_req){ .buf = buf + k * cs, .len = cs,
							.off = HOST_OFF(img, list[2 * k]),
							.op = IMG_IO_OP_READ };
	if ((r = img_io_batch(img->io, rq, nr))) {
		imgi_fail(img, r, "reading clusters to move");
		goto release;
	}
	/* The targets are free: the sparse cluster write (imgi_sparse_reqs). */
	nr = 0;
	for (uint64_t k = 0; k < n; k++)
		if (to[k] != UINT64_MAX)
			nr += imgi_sparse_reqs(img, buf + k * cs, cs, HOST_OFF(img, to[k]), rq + nr);
	if ((r = img_io_batch(img->io, rq, nr))) {
		imgi_fail(img, r, "writing moved clusters");
		goto release;
	}
	pthread_mutex_lock(&img->meta_lock);
	for (uint64_t k = 0; k < n; k++) {
		if (to[k] == UINT64_MAX)
			continue;
		bat_set(img, list[2 * k + 1], IMG_E_MAKE(IMG_E_ALLOC, to[k]));
		/* On ENOMEM the old cluster stays marked used: a leak, not a loss. */
		alloc_defer_free(img, list[2 * k]);
		(*moved)++;
	}
	pthread_mutex_unlock(&img->meta_lock);
	free(rq);
	return 0;
release:
	for (uint64_t k = 0; k < n; k++)
		if (to[k] != UINT64_MAX)
			alloc_release_unmapped(img, to[k]);
	free(rq);
	return r;
}

static int cmp_asc(const void *a, const void *b)
{
	/* pairs (h, v): lowest host cluster first, so the tail is read
	 * sequentially (readahead) while the holes below fill in order */
	const uint64_t *x = a, *y = b;
	return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0;
}

/* Live clusters as (host cluster, virtual cluster) pairs with h >= min_h,
 * in host order.  *out is malloc'd; returns the count or -ENOMEM. */
static int64_t live_clusters(struct img *img, uint64_t min_h, int with_comp, uint64_t **out)
{
	uint64_t n = 0, *list;

	pthread_rwlock_rdlock(&img->map_lock);
	pthread_mutex_lock(&img->meta_lock);
	for (uint64_t v = 0; v < img->g.vclusters; v++)
		n += (IMG_E_STATE(img->bat[v]) == IMG_E_ALLOC && IMG_E_PAYLOAD(img->bat[v]) >= min_h) ||
		     (with_comp && IMG_E_STATE(img->bat[v]) == IMG_E_COMP && COMP_HOST(img, img->bat[v]) >= min_h);
	list = malloc((n ? n : 1) * 2 * sizeof(*list));
	n = 0;
	for (uint64_t v = 0; list && v < img->g.vclusters; v++) {
		uint64_t e = img->bat[v];
		if (IMG_E_STATE(e) == IMG_E_ALLOC && IMG_E_PAYLOAD(e) >= min_h) {
			list[2 * n] = IMG_E_PAYLOAD(e);
			list[2 * n + 1] = v;
			n++;
		} else if (with_comp && IMG_E_STATE(e) == IMG_E_COMP && COMP_HOST(img, e) >= min_h) {
			list[2 * n] = COMP_HOST(img, e);
			list[2 * n + 1] = v;
			n++;
		}
	}
	pthread_mutex_unlock(&img->meta_lock);
	pthread_rwlock_unlock(&img->map_lock);
	if (!list)
		return -ENOMEM;
	qsort(list, n, 2 * sizeof(*list), cmp_asc);
	*out = list;
	return (int64_t)n;
}

/* Read every live cluster in host order (sequential reads) and unmap the
 * ones that hold only zeros. */
static int zero_detect(struct img *img, img_progress_fn progress, void *arg,
		       uint64_t total, uint64_t *done, uint64_t *freed)
{
	uint64_t cs = img->g.cluster_size, *list = NULL, grp = group_of(img);
	uint8_t *buf;
	struct img_io_req rq[BATCH];
	uint64_t at[BATCH];
	int64_t n;
	int r = 0;

	if ((n = live_clusters(img, 0, 0, &list)) < 0)
		return (int)n;
	if ((uint64_t)n < grp)
		grp = n ? (uint64_t)n : 1;   /* small images: small buffers */
	if (!(buf = malloc(grp * cs))) {
		free(list);
		return -ENOMEM;
	}
	for (int64_t i = 0; i < n && !r; ) {
		uint64_t nr = 0;
		pthread_rwlock_wrlock(&img->map_lock);
		/* A group of clusters still mapped as listed (I/O may run
		 * between groups), read in one batch. */
		for (; nr < grp && i < n; i++) {
			uint64_t h = list[2 * i], v = list[2 * i + 1];
			(*done)++;
			if (v >= img->g.vclusters || img->bat[v] != IMG_E_MAKE(IMG_E_ALLOC, h))
				continue;
			rq[nr] = (struct img_io_req){ .buf = buf + nr * cs, .len = cs,
						      .off = HOST_OFF(img, h), .op = IMG_IO_OP_READ };
			at[nr++] = (uint64_t)i;
		}
		r = img_io_batch(img->io, rq, nr);
		if (r)
			imgi_fail(img, r, "reading clusters");
		for (uint64_t k = 0; k < nr && !r; k++) {
			uint64_t h = list[2 * at[k]], v = list[2 * at[k] + 1];
			if (!imgi_is_zero(buf + k * cs, cs))
				continue;
			pthread_mutex_lock(&img->meta_lock);
			r = alloc_defer_free(img, h);
			if (!r) {
				/* A delta's zero cluster must keep hiding
				 * the backing image (FORMAT.md 3.1). */
				bat_set(img, v, bat_dropped(img));
				(*freed)++;
			}
			pthread_mutex_unlock(&img->meta_lock);
		}
		pthread_rwlock_unlock(&img->map_lock);
		if (!r && progress && progress(arg, *done, total))
			r = imgi_fail(img, -ECANCELED, "compaction cancelled");
		if (!r && IMG_NPENDING(img) >= 4096)
			r = journal_commit(img);
	}
	free(list);
	free(buf);
	return r ? r : journal_commit(img);
}

/* Host clusters holding compressed payloads. */
static uint64_t comp_hosts(struct img *img)
{
	uint64_t n = 0;

	pthread_mutex_lock(&img->meta_lock);
	n = cref_hosts(img);
	pthread_mutex_unlock(&img->meta_lock);
	return n;
}

/* Compressed payloads left in host clusters with freed sectors: when the
 * payloads would fit in fewer clusters, copy them all, in host order, into
 * newly packed clusters (copy, commit, then the old clusters are freed). */
static int repack(struct img *img, struct img_compact_stats *stats)
{
	uint64_t live = 0, hosts = comp_hosts(img), spc = img->g.cluster_size / 512, *list = NULL;
	int64_t n;
	int r = 0;

	pthread_mutex_lock(&img->meta_lock);
	for (uint64_t v = 0; v < img->g.vclusters; v++)
		if (IMG_E_STATE(img->bat[v]) == IMG_E_COMP)
			live += IMG_C_COUNT(img->bat[v]);
	img->pack_valid = 0;
	pthread_mutex_unlock(&img->meta_lock);
	if (hosts <= (live + spc - 1) / spc + 1)
		return 0;
	if ((n = live_clusters(img, 0, 1, &list)) < 0)
		return (int)n;
	for (int64_t i = 0; i < n && !r; ) {
		pthread_rwlock_wrlock(&img->map_lock);
		for (int k = 0; k < BATCH && i < n && !r; k++, i++) {
			uint64_t v = list[2 * i + 1], e = img->bat[v];
			if (IMG_E_STATE(e) != IMG_E_COMP || COMP_HOST(img, e) != list[2 * i])
				continue;
			if (!(r = comp_move(img, v, img->g.data_cluster0, 0)) && stats)
				stats->payloads_repacked++;
		}
		pthread_rwlock_unlock(&img->map_lock);
		if (!r)
			r = journal_commit(img);
	}
	free(list);
	return r;
}

/* IMG_COMPACT_COMPRESS: every allocated cluster stored compressed where
 * that saves a sector (read, compress, write, remap; the old cluster is
 * freed after the commit). */
static int compress_all(struct img *img, img_progress_fn progress, void *arg,
			struct img_compact_stats *stats)
{
	uint64_t cs = img->g.cluster_size, *list = NULL;
	uint8_t *buf = malloc(cs);
	int64_t n;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	if ((n = live_clusters(img, 0, 0, &list)) < 0) {
		free(buf);
		return (int)n;
	}
	for (int64_t i = 0; i < n && !r; ) {
		pthread_rwlock_wrlock(&img->map_lock);
		for (int k = 0; k < BATCH && i < n && !r; k++, i++) {
			uint64_t h = list[2 * i], v = list[2 * i + 1];
			if (v >= img->g.vclusters || img->bat[v] != IMG_E_MAKE(IMG_E_ALLOC, h))
				continue;
			if ((r = img->io->ops->pread(img->io, buf, cs, HOST_OFF(img, h)))) {
				imgi_fail(img, r, "reading cluster %llu", (unsigned long long)h);
				break;
			}
			r = comp_store(img, v, buf);
			if (r == 1 && stats)
				stats->clusters_compressed++;
			r = r < 0 ? r : 0;
		}
		pthread_rwlock_unlock(&img->map_lock);
		if (!r)
			r = journal_commit(img);
		if (!r && progress && progress(arg, (uint64_t)i, (uint64_t)n))
			r = imgi_fail(img, -ECANCELED, "compaction cancelled");
	}
	free(list);
	free(buf);
	return r;
}

int imgi_compact_relocate(struct img *img, img_progress_fn progress, void *arg,
			 struct img_compact_stats *stats)
{
	uint64_t *list = NULL, n = 0, target, cs = img->g.cluster_size, moved = 0, last, size;
	uint64_t grp = group_of(img), pick[2 * BATCH];
	void *buf;
	int r = 0;

	/* Which clusters lie past where the data will end? */
	target = img->g.data_cluster0 + IMG_NALLOC(img) + comp_hosts(img);
	pthread_mutex_lock(&img->meta_lock);
	img->pack_valid = 0;   /* pack what moves into the lowest free clusters */
	pthread_mutex_unlock(&img->meta_lock);
	{
		int64_t k = live_clusters(img, target, 1, &list);
		if (k < 0)
			return (int)k;
		n = (uint64_t)k;
	}
	if (n < grp)
		grp = n ? n : 1;
	if (!(buf = malloc(grp * cs))) {
		free(list);
		return -ENOMEM;
	}

	for (uint64_t i = 0; i < n && !r; ) {
		pthread_rwlock_wrlock(&img->map_lock);
		for (uint64_t k = 0; k < BATCH && i < n && !r; ) {
			uint64_t np = 0;
			/* the next group of clusters still mapped as we saw them
			 * (I/O may have run between batches) */
			for (; np < grp && k < BATCH && i < n; k++, i++) {
				uint64_t h = list[2 * i], v = list[2 * i + 1];
				uint64_t e = v < img->g.vclusters ? img->bat[v] : 0;
				if (IMG_E_STATE(e) == IMG_E_COMP && COMP_HOST(img, e) == h) {
					/* a compressed payload moves on its own */
					r = comp_move(img, v, img->g.data_cluster0, h);
					if (r == 1)     /* nothing free below it any more */
						r = 0;
					else if (!r)
						moved++;
					if (r)
						break;
					continue;
				}
				if (e != IMG_E_MAKE(IMG_E_ALLOC, h))
					continue;
				pick[2 * np] = h;
				pick[2 * np + 1] = v;
				np++;
			}
			if (np && !r)
				r = relocate_group(img, pick, np, buf, &moved);
		}
		pthread_rwlock_unlock(&img->map_lock);
		if (!r)
			r = journal_commit(img);
		if (!r && progress && progress(arg, i, n))
			r = imgi_fail(img, -ECANCELED, "compaction cancelled");
	}
	free(list);
	free(buf);
	if (stats)
		stats->clusters_moved += moved;
	if (!r && !n && progress)
		(void)progress(arg, 0, 0);   /* nothing to move: done */
	if (r)
		return r;

	/* Truncate after the commit that freed the tail.  Clusters still
	 * pending or reserved are marked used, so they are kept. */
	pthread_rwlock_wrlock(&img->map_lock);
	pthread_mutex_lock(&img->meta_lock);
	last = imgi_used_end(img);
	pthread_mutex_unlock(&img->meta_lock);
	size = imgi_file_size(img);
	if (last < size) {
		if ((r = img->io->ops->truncate(img->io, last)))
			imgi_fail(img, r, "truncating");
		else
			r = imgi_sync(img, "syncing the truncated file");
	}
	pthread_rwlock_unlock(&img->map_lock);
	return r;
}

/* The steps of one compaction reported to the caller as one progress
 * that only goes forward: each step's done of total maps into its share
 * [lo, lo + span) of the whole. */
struct span {
	img_progress_fn fn;
	void *arg;
	uint64_t lo, span, whole;
};

static int span_cb(void *a, uint64_t done, uint64_t total)
{
	struct span *s = a;
	uint64_t at = total && done < total ?
		      (uint64_t)((unsigned __int128)done * s->span / total) : s->span;

	return s->fn(s->arg, s->lo + at, s->whole);
}

IMG_API int img_compact(struct img *img, const struct img_compact_opts *opts,
			struct img_compact_stats *stats)
{
	struct img_compact_stats st;
	img_progress_fn progress = opts ? opts->progress : NULL;
	void *arg = opts ? opts->progress_arg : NULL;
	uint64_t done = 0, total, share;
	struct span sp = { progress, arg, 0, 0, 0 };
	int r = 0, zd, comp;

	imgi_clear_error();
	memset(&st, 0, sizeof(st));
	if ((r = imgi_check_writable(img, IMG_CHANGE_CONTENT, "compacting")))
		return r;
	if (opts && (opts->flags & ~(IMG_COMPACT_NO_ZERO_DETECT | IMG_COMPACT_COMPRESS)))
		return -EINVAL;
	st.file_size_before = imgi_file_size(img);
	if (img->io->ops->usage)
		img->io->ops->usage(img->io, &st.disk_usage_before);
	else
		st.disk_usage_before = st.file_size_before;
	total = IMG_NALLOC(img);
	/* shares of the progress: zero detection and compression read every
	 * allocated cluster, the relocation moves at most as many */
	zd = !(opts && (opts->flags & IMG_COMPACT_NO_ZERO_DETECT));
	comp = opts && (opts->flags & IMG_COMPACT_COMPRESS);
	share = total ? total : 1;
	sp.whole = share * (1 + (uint64_t)zd + (uint64_t)comp);
	if (zd) {
		sp.span = share;
		r = zero_detect(img, progress ? span_cb : NULL, &sp, total, &done,
				&st.zero_clusters_freed);
		sp.lo += share;
	}
	if (!r)
		r = journal_commit(img);
	if (!r && comp) {
		sp.span = share;
		r = compress_all(img, progress ? span_cb : NULL, &sp, &st);
		sp.lo += share;
	}
	if (!r)
		r = repack(img, &st);
	if (!r) {
		sp.span = share;
		r = imgi_compact_relocate(img, progress ? span_cb : NULL, &sp, &st);
	}
	if (!r && progress)
		(void)progress(arg, sp.whole, sp.whole);   /* done: nothing to cancel */
	st.file_size_after = imgi_file_size(img);
	if (img->io->ops->usage)
		img->io->ops->usage(img->io, &st.disk_usage_after);
	else
		st.disk_usage_after = st.file_size_after;
	if (stats)
		*stats = st;
	return r;
}
