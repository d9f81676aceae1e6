/* SPDX-License-Identifier: MIT */
/*
 * Grow and shrink the virtual size.
 *
 * Invariants (FORMAT.md §6 rules 5-7):
 *  - growth within the BAT's capacity only writes a header: the entries it
 *    brings into the disk are zero on disk and in memory; before any
 *    growth the old last cluster's bytes past the old size are made zero
 *    (durably), so growing never shows what the file held there;
 *  - growth beyond the capacity relocates the data clusters in the way of
 *    the larger BAT (copy, commit, free), zeroes the new BAT clusters,
 *    syncs, and only then writes the header with the new BAT size;
 *  - shrink clears the entries past the new end and zeroes the tail of the
 *    new last cluster, commits, and only then writes the smaller size; the
 *    host file's tail is then compacted and truncated (compact.c).
 * map_lock is held exclusive throughout, so I/O waits while it runs.
 * Progress (img_resize_progress): a growth's relocation and a shrink's
 * packing report; a cancel during the relocation commits what moved (each
 * move is complete on its own) and leaves the size as it was.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int set_size_header(struct img *img, uint64_t new_size, uint64_t bat_clusters)
{
	struct imgi_header nh = img->hdr;
	int r;

	nh.virtual_size = new_size;
	nh.bat_clusters = bat_clusters;
	pthread_mutex_lock(&img->commit_lock);
	r = imgi_header_commit(img, &nh);
	pthread_mutex_unlock(&img->commit_lock);
	if (!r) {
		imgi_geom_compute(&img->hdr, &img->g);
		img->vsize = new_size;
	}
	return r;
}

/* Entries [from, to) come into use: the blocks not yet in memory are read
 * and must hold only zero entries. */
static int load_new_entries(struct img *img, uint64_t to)
{
	uint64_t have = img->bat_alloc / IMG_ENTRIES_PER_BLOCK, old_alloc = img->bat_alloc;
	uint64_t need = (to + IMG_ENTRIES_PER_BLOCK - 1) / IMG_ENTRIES_PER_BLOCK;
	int r;

	if (need <= have)
		return 0;
	if ((r = bat_resize_array(img, to)))
		return r;
	if ((r = bat_load_blocks(img, have, need - have, NULL)))
		return r;
	for (uint64_t v = old_alloc; v < img->bat_alloc; v++)
		if (img->bat[v]) {
			memset(img->bat + old_alloc, 0, (img->bat_alloc - old_alloc) * sizeof(uint64_t));
			return imgi_fail(img, -EUCLEAN, "BAT entry %llu past the virtual size is not empty",
					(unsigned long long)v);
		}
	return 0;
}

/* 0 if host cluster h holds only zeros from byte `from` on, 1 if not, or
 * -errno. */
static int tail_is_zero(struct img *img, uint64_t h, uint64_t from)
{
	uint64_t cs = img->g.cluster_size;
	uint8_t *buf = malloc(cs - from);
	int r;

	if (!buf)
		return -ENOMEM;
	r = img->io->ops->pread(img->io, buf, cs - from, HOST_OFF(img, h) + from);
	if (r)
		imgi_fail(img, r, "reading cluster %llu", (unsigned long long)h);
	else
		r = !imgi_is_zero(buf, cs - from);
	free(buf);
	return r;
}

/* 0 if compressed cluster v holds only zeros from byte `from` on, 1 if
 * not, or -errno. */
static int comp_tail_is_zero(struct img *img, uint64_t v, uint64_t from)
{
	uint8_t *buf = malloc(img->g.cluster_size);
	int r;

	if (!buf)
		return -ENOMEM;
	r = comp_read(img, v, img->bat[v], buf);
	if (!r)
		r = !imgi_is_zero(buf + from, img->g.cluster_size - from);
	free(buf);
	return r;
}

/* Growing from old_size brings the bytes of the old last cluster past
 * old_size into the disk, where they must read as zeros (FORMAT.md 4.1)
 * whatever the file holds there (a crafted or damaged file may hold
 * anything).  A compressed cluster whose tail does not decompress to zeros
 * is stored allocated first (committed); an allocated one gets its host
 * bytes past old_size zeroed.  Durable before the header that grows the
 * size.  map_lock held exclusive. */
static int zero_old_tail(struct img *img, uint64_t old_size)
{
	uint64_t cs = img->g.cluster_size, in = old_size % cs, v = old_size / cs, e;
	int r;

	if (!in)
		return 0;
	e = img->bat[v];
	if (IMG_E_STATE(e) == IMG_E_COMP) {
		if ((r = comp_tail_is_zero(img, v, in)) <= 0)
			return r;
		if ((r = imgi_copy_up(img, v)) || (r = journal_commit(img)))
			return r;
		e = img->bat[v];
	}
	if (IMG_E_STATE(e) != IMG_E_ALLOC)
		return 0;
	if ((r = imgi_zero_host(img, HOST_OFF(img, IMG_E_PAYLOAD(e)) + in, cs - in)))
		return imgi_fail(img, r, "zeroing past the old end");
	if ((r = img->io->ops->flush(img->io)))
		return imgi_fail(img, r, "syncing");
	return 0;
}

static int grow_bat(struct img *img, uint64_t new_size, uint64_t new_vc,
		    img_progress_fn progress, void *arg)
{
	uint64_t cs = img->g.cluster_size, per_cluster = cs / IMG_BLOCK_SIZE * IMG_ENTRIES_PER_BLOCK;
	uint64_t new_bc = (new_vc + per_cluster - 1) / per_cluster;
	uint64_t old_end = img->g.data_cluster0, new_end = (img->hdr.bat_offset >> img->g.cluster_bits) + new_bc;
	void *buf;
	int r = 0, cancelled = 0;

	if (new_bc * cs > IMG_MAX_BAT_BYTES)
		return imgi_fail(img, -EINVAL, "new size needs a BAT larger than 2 GiB");
	if (!(buf = malloc(cs)))
		return -ENOMEM;
	/* 1. Move the data clusters in the way (copy; the commit syncs the
	 *    copies before the new mappings and frees the old clusters). */
	for (uint64_t v = 0; v < img->g.vclusters && !r; v++) {
		uint64_t e = img->bat[v], h = IMG_E_PAYLOAD(e);
		if (progress && v % 256 == 0 && progress(arg, v, img->g.vclusters)) {
			cancelled = 1;   /* what moved is committed below */
			break;
		}
		if (IMG_E_STATE(e) == IMG_E_ALLOC && h >= old_end && h < new_end)
			r = imgi_relocate(img, v, new_end, 0, buf);
		else if (IMG_E_STATE(e) == IMG_E_COMP && COMP_HOST(img, e) >= old_end &&
			 COMP_HOST(img, e) < new_end)
			r = comp_move(img, v, new_end, 0);
	}
	free(buf);
	if (!r)
		r = journal_commit(img);
	if (!r && cancelled)
		r = imgi_fail(img, -ECANCELED, "growth cancelled (the size is unchanged)");
	if (r)
		return r;
	/* 2. The new BAT clusters: reserved, zeroed, durable.  Nothing may map
	 *    them or wait to be freed in them now.  A cluster still marked was
	 *    reserved by an earlier attempt that failed later on: taking it
	 *    again is right (its header may yet become durable, so it must not
	 *    go back to the allocator). */
	pthread_mutex_lock(&img->meta_lock);
	for (size_t i = 0; i < img->npending && !r; i++)
		if (img->pending[i] >= old_end && img->pending[i] < new_end)
			r = imgi_fail(img, -EIO, "cluster %llu in the new BAT is still waiting to be freed",
				     (unsigned long long)img->pending[i]);
	for (uint64_t v = 0; v < img->g.vclusters && !r; v++) {
		uint64_t e = img->bat[v];
		if (IMG_E_STATE(e) == IMG_E_ALLOC && IMG_E_PAYLOAD(e) >= old_end && IMG_E_PAYLOAD(e) < new_end)
			r = imgi_fail(img, -EIO, "cluster %llu still in use after relocation",
				     (unsigned long long)IMG_E_PAYLOAD(e));
		if (IMG_E_STATE(e) == IMG_E_COMP && COMP_HOST(img, e) >= old_end && COMP_HOST(img, e) < new_end)
			r = imgi_fail(img, -EIO, "cluster %llu still in use after relocation",
				     (unsigned long long)COMP_HOST(img, e));
	}
	/* the packing cluster must not be one of the new BAT's */
	if (img->pack_valid && img->pack_h >= old_end && img->pack_h < new_end)
		img->pack_valid = 0;
	for (uint64_t h = old_end; h < new_end && !r; h++)
		r = alloc_mark(img, h);
	pthread_mutex_unlock(&img->meta_lock);
	/* The file reaches the new data_offset before the header names it
	 * (FORMAT.md 2: a shorter file is truncated, corrupt); a punch keeps
	 * the size, so a file that ended in the new BAT is extended (nothing
	 * else writes: map_lock is held). */
	if (!r && imgi_file_size(img) < HOST_OFF(img, new_end) &&
	    (r = img->io->ops->truncate(img->io, HOST_OFF(img, new_end))))
		imgi_fail(img, r, "extending the file over the new BAT clusters");
	if (!r && (r = imgi_zero_host(img, HOST_OFF(img, old_end), (new_end - old_end) * cs)))
		imgi_fail(img, r, "zeroing the new BAT clusters");
	if (!r)
		r = imgi_sync(img, "syncing the new BAT clusters");
	if (r)
		return r;
	/* 3. The header. */
	if ((r = set_size_header(img, new_size, new_bc)))
		return r;
	return bat_resize_array(img, new_vc);
}

/* A delta grown from old to new: what it did not show before must read as
 * zeros, not as the backing image's bytes.  The old last cluster's tail is
 * copied up with zeros (it is inside the old size, so before the header),
 * the clusters wholly past the old size become "zero" right after the
 * header (entries past the virtual size must be empty until then; a crash
 * in between may show the backing's bytes there, never another image's). */
static int hide_backing(struct img *img, uint64_t old_size, uint64_t new_size)
{
	uint64_t cs = img->g.cluster_size, bsize = img->backing->vsize;
	uint64_t first = (old_size + cs - 1) / cs, last = (new_size + cs - 1) / cs;
	int r = 0;

	pthread_mutex_lock(&img->meta_lock);
	for (uint64_t v = first; v < last && v * cs < bsize; v++)
		if (!img->bat[v])
			bat_set(img, v, IMG_E_MAKE(IMG_E_ZERO, 0));
	pthread_mutex_unlock(&img->meta_lock);
	return r ? r : journal_commit(img);
}

IMG_API int img_resize(struct img *img, uint64_t new_size, unsigned flags)
{
	return img_resize_progress(img, new_size, flags, NULL, NULL);
}

IMG_API int img_resize_progress(struct img *img, uint64_t new_size, unsigned flags,
				img_progress_fn progress, void *progress_arg)
{
	uint64_t old_size, cs, new_vc, old_vc;
	int r, shrunk = 0;

	imgi_clear_error();
	if ((r = imgi_check_writable(img, IMG_CHANGE_CONTENT, "resizing")))
		return r;
	if (flags & ~IMG_RESIZE_DISCARD_DATA)
		return -EINVAL;
	if (new_size < 512 || new_size % 512 || new_size > IMG_MAX_VIRTUAL_SIZE)
		return imgi_fail(img, -EINVAL, "new size %llu is not a positive multiple of 512",
				(unsigned long long)new_size);
	cs = img->g.cluster_size;
	new_vc = (new_size + cs - 1) / cs;
	if (new_vc > IMG_MAX_ENTRIES)
		return imgi_fail(img, -EINVAL, "new size needs more than 2^27 clusters of %llu bytes",
				(unsigned long long)cs);

	pthread_rwlock_wrlock(&img->map_lock);
	old_size = img->vsize;
	old_vc = img->g.vclusters;
	if (new_size > old_size && img->backing && old_size % cs && old_size < img->backing->vsize &&
	    !img->bat[old_vc - 1]) {
		/* The old last cluster's tail past the old size would show the
		 * backing image: copy the cluster up (its tail zero). */
		if ((r = imgi_copy_up(img, old_vc - 1)))
			goto out;
	}
	if (new_size > old_size && (r = zero_old_tail(img, old_size)))
		goto out;
	if (new_size > old_size) {
		if (new_vc > img->g.bat_capacity) {
			/* The whole old BAT comes into use: its blocks past the old
			 * size must be empty. */
			r = load_new_entries(img, img->g.bat_capacity);
			if (!r)
				r = grow_bat(img, new_size, new_vc, progress, progress_arg);
		}
		else if (!(r = load_new_entries(img, new_vc)))
			r = set_size_header(img, new_size, img->hdr.bat_clusters);
		if (!r && img->backing)
			r = hide_backing(img, old_size, new_size);
	} else if (new_size < old_size) {
		uint64_t data = 0;
		for (uint64_t v = new_vc; v < old_vc; v++)
			data += IMG_E_STATE(img->bat[v]) == IMG_E_ALLOC || IMG_E_STATE(img->bat[v]) == IMG_E_COMP;
		if (data && !(flags & IMG_RESIZE_DISCARD_DATA)) {
			r = imgi_fail(img, -ENOTEMPTY,
				     "%llu clusters past the new end (%llu bytes) hold data",
				     (unsigned long long)data, (unsigned long long)new_size);
			goto out;
		}
		/* The part of the new last cluster past the new end is dropped
		 * too: refuse if it holds data. */
		if (new_size % cs && !(flags & IMG_RESIZE_DISCARD_DATA) &&
		    IMG_E_STATE(img->bat[new_vc - 1]) == IMG_E_ALLOC &&
		    (r = tail_is_zero(img, IMG_E_PAYLOAD(img->bat[new_vc - 1]), new_size % cs)) != 0) {
			if (r > 0)
				r = imgi_fail(img, -ENOTEMPTY, "bytes past the new end (%llu bytes) hold data",
					     (unsigned long long)new_size);
			goto out;
		}
		r = 0;
		/* A compressed new last cluster cannot be zeroed in place:
		 * store it uncompressed first (its tail is zeroed below). */
		if (new_size % cs && IMG_E_STATE(img->bat[new_vc - 1]) == IMG_E_COMP) {
			if (!(flags & IMG_RESIZE_DISCARD_DATA) &&
			    (r = comp_tail_is_zero(img, new_vc - 1, new_size % cs)) != 0) {
				if (r > 0)
					r = imgi_fail(img, -ENOTEMPTY, "bytes past the new end (%llu bytes) hold data",
						     (unsigned long long)new_size);
				goto out;
			}
			if ((r = imgi_copy_up(img, new_vc - 1)))
				goto out;
		}
		pthread_mutex_lock(&img->meta_lock);
		for (uint64_t v = new_vc; v < old_vc && !r; v++) {
			uint64_t e = img->bat[v];
			r = imgi_release_entry(img, e);
			if (!r)
				bat_set(img, v, 0);
		}
		pthread_mutex_unlock(&img->meta_lock);
		/* Bytes of the new last cluster past the new size read as zero. */
		if (!r && new_size % cs && IMG_E_STATE(img->bat[new_vc - 1]) == IMG_E_ALLOC) {
			uint64_t h = IMG_E_PAYLOAD(img->bat[new_vc - 1]), in = new_size % cs;
			if ((r = imgi_zero_host(img, HOST_OFF(img, h) + in, cs - in)))
				imgi_fail(img, r, "zeroing past the new end");
		}
		if (!r)
			r = journal_commit(img);
		if (!r)
			r = set_size_header(img, new_size, img->hdr.bat_clusters);
		shrunk = !r;
	} else {
		r = 0;
	}
out:
	pthread_rwlock_unlock(&img->map_lock);
	/* Give the host file's tail back. */
	if (shrunk)
		r = imgi_compact_relocate(img, progress, progress_arg, NULL);
	return r;
}
