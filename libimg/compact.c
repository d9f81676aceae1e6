/* SPDX-License-Identifier: MIT */
/*
 * Compaction: all-zero clusters become unallocated, live clusters move from
 * the end of the host file into the lowest free clusters, the file is
 * truncated.  Afterwards the file holds the metadata and exactly one host
 * cluster per allocated entry.
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
	for (int64_t i = 0; i < n && !r; i++) {
		uint64_t h = list[2 * i], v = list[2 * i + 1];
		pthread_rwlock_wrlock(&img->map_lock);
		/* Still mapped as listed?  (I/O may run between clusters.) */
		if (v < img->g.vclusters && img->bat[v] == IMG_E_MAKE(IMG_E_ALLOC, h)) {
			r = img->io->ops->pread(img->io, buf, cs, HOST_OFF(img, h));
			if (r)
				img_fail(img, r, "reading cluster %llu", (unsigned long long)h);
			else if (img_is_zero(buf, cs)) {
				pthread_mutex_lock(&img->meta_lock);
				r = alloc_defer_free(img, h);
				if (!r) {
					/* A delta's zero cluster must keep hiding
					 * the backing image (FORMAT.md 3.1). */
					bat_set(img, v, img->delta ? IMG_E_MAKE(IMG_E_ZERO, 0) : 0);
					(*freed)++;
				}
				pthread_mutex_unlock(&img->meta_lock);
			}
		}
		pthread_rwlock_unlock(&img->map_lock);
		(*done)++;
		if (progress && progress(arg, *done, total))
			r = img_fail(img, -ECANCELED, "compaction cancelled");
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
	for (uint64_t h = 0; h < img->cref_len; h++)
		n += img->cref[h] != 0;
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
				img_fail(img, r, "reading cluster %llu", (unsigned long long)h);
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
			r = img_fail(img, -ECANCELED, "compaction cancelled");
	}
	free(list);
	free(buf);
	return r;
}

int img_compact_relocate(struct img *img, img_progress_fn progress, void *arg,
			 struct img_compact_stats *stats)
{
	uint64_t *list = NULL, n = 0, target, cs = img->g.cluster_size, moved = 0, last, size;
	void *buf = malloc(cs);
	int r = 0;

	if (!buf)
		return -ENOMEM;
	/* Which clusters lie past where the data will end? */
	target = img->g.data_cluster0 + IMG_NALLOC(img) + comp_hosts(img);
	pthread_mutex_lock(&img->meta_lock);
	img->pack_valid = 0;   /* pack what moves into the lowest free clusters */
	pthread_mutex_unlock(&img->meta_lock);
	{
		int64_t k = live_clusters(img, target, 1, &list);
		if (k < 0) {
			free(buf);
			return (int)k;
		}
		n = (uint64_t)k;
	}

	for (uint64_t i = 0; i < n && !r; ) {
		pthread_rwlock_wrlock(&img->map_lock);
		for (uint64_t k = 0; k < BATCH && i < n && !r; k++, i++) {
			uint64_t h = list[2 * i], v = list[2 * i + 1];
			uint64_t e = v < img->g.vclusters ? img->bat[v] : 0;
			/* Still mapped as we saw it? (I/O may have run between batches.) */
			if (IMG_E_STATE(e) == IMG_E_COMP && COMP_HOST(img, e) == h)
				r = comp_move(img, v, img->g.data_cluster0, h);
			else if (e != IMG_E_MAKE(IMG_E_ALLOC, h))
				continue;
			else
				r = img_relocate(img, v, img->g.data_cluster0, h, buf);
			if (r == 1) {   /* nothing free below it any more */
				r = 0;
				continue;
			}
			moved += !r;
		}
		pthread_rwlock_unlock(&img->map_lock);
		if (!r)
			r = journal_commit(img);
		if (!r && progress && progress(arg, i, n))
			r = img_fail(img, -ECANCELED, "compaction cancelled");
	}
	free(list);
	free(buf);
	if (stats)
		stats->clusters_moved += moved;
	if (r)
		return r;

	/* Truncate after the commit that freed the tail.  Clusters still
	 * pending or reserved are marked used, so they are kept. */
	pthread_rwlock_wrlock(&img->map_lock);
	pthread_mutex_lock(&img->meta_lock);
	last = img_used_end(img);
	pthread_mutex_unlock(&img->meta_lock);
	size = img_file_size(img);
	if (last < size) {
		if ((r = img->io->ops->truncate(img->io, last)))
			img_fail(img, r, "truncating");
		else if ((r = img->io->ops->flush(img->io)))
			img_fail(img, r, "syncing");
	}
	pthread_rwlock_unlock(&img->map_lock);
	return r;
}

IMG_API int img_compact(struct img *img, const struct img_compact_opts *opts,
			struct img_compact_stats *stats)
{
	struct img_compact_stats st;
	img_progress_fn progress = opts ? opts->progress : NULL;
	void *arg = opts ? opts->progress_arg : NULL;
	uint64_t done = 0, total;
	int r = 0;

	img_clear_error();
	memset(&st, 0, sizeof(st));
	if (img->rdonly)
		return img_fail(img, -EROFS, "opened read-only");
	if (img->corrupt)
		return img_fail(img, -EUCLEAN, "image is corrupt: repair it before compacting");
	if (img->delta && !img->backing)
		return img_fail(img, -EROFS, "a delta opened without its backing chain cannot be compacted");
	if (opts && (opts->flags & ~(IMG_COMPACT_NO_ZERO_DETECT | IMG_COMPACT_COMPRESS)))
		return -EINVAL;
	st.file_size_before = img_file_size(img);
	if (img->io->ops->usage)
		img->io->ops->usage(img->io, &st.disk_usage_before);
	else
		st.disk_usage_before = st.file_size_before;
	total = IMG_NALLOC(img);
	if (!(opts && (opts->flags & IMG_COMPACT_NO_ZERO_DETECT)))
		r = zero_detect(img, progress, arg, total, &done, &st.zero_clusters_freed);
	if (!r)
		r = journal_commit(img);
	if (!r && opts && (opts->flags & IMG_COMPACT_COMPRESS))
		r = compress_all(img, progress, arg, &st);
	if (!r)
		r = repack(img, &st);
	if (!r)
		r = img_compact_relocate(img, progress, arg, &st);
	st.file_size_after = img_file_size(img);
	if (img->io->ops->usage)
		img->io->ops->usage(img->io, &st.disk_usage_after);
	else
		st.disk_usage_after = st.file_size_after;
	if (stats)
		*stats = st;
	return r;
}
