/* SPDX-License-Identifier: MIT */
/*
 * Backing chains, offline: change the backing reference of a delta (safe
 * and unsafe rebase).
 *
 * Invariant (safe rebase): the visible disk never changes.  Every
 * unallocated cluster that would read differently through the new chain is
 * first given its own copy of what the old chain shows (or becomes "zero"),
 * committed; only then is the header with the new reference written (A/B,
 * FORMAT.md 3).  A crash before the header leaves the old reference with
 * extra clusters that read the same as before; after it, the new one.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Read [off, off+len) of what img shows through b (b NULL: zeros). */
static int read_through(struct img *b, uint8_t *buf, uint64_t len, uint64_t off)
{
	uint64_t n = 0;
	ssize_t got = 0;

	if (b) {
		n = off < b->vsize ? (b->vsize - off < len ? b->vsize - off : len) : 0;
		got = n ? img_pread(b, buf, n, off) : 0;
	}
	if (got < 0)
		return (int)got;
	memset(buf + n, 0, len - n);
	return 0;
}

static int copy_differing(struct img *img, struct img *oldb, struct img *newb,
			  img_progress_fn progress, void *arg)
{
	uint64_t cs = img->g.cluster_size, n = img->g.vclusters;
	uint8_t *a = malloc(cs), *b = malloc(cs);
	int r = 0;

	if (!a || !b) {
		r = -ENOMEM;
		goto out;
	}
	for (uint64_t v = 0; v < n && !r; v++) {
		uint64_t off = v * cs, len = img->vsize - off < cs ? img->vsize - off : cs;
		if (bat_get(img, v) != 0)
			continue;       /* the image's own data or zero: unchanged */
		if ((r = read_through(oldb, a, len, off)) || (r = read_through(newb, b, len, off)))
			break;
		if (!memcmp(a, b, len))
			continue;
		if (img_is_zero(a, len)) {
			pthread_mutex_lock(&img->meta_lock);
			bat_set(img, v, IMG_E_MAKE(IMG_E_ZERO, 0));
			pthread_mutex_unlock(&img->meta_lock);
		} else {
			/* A whole unallocated cluster: written without reading
			 * any backing image. */
			ssize_t w = img_pwrite(img, a, len, off);
			if (w < 0)
				r = (int)w;
		}
		if (!r && progress && progress(arg, v + 1, n))
			r = img_fail(img, -ECANCELED, "rebase cancelled");
	}
	if (!r)
		r = journal_commit(img);
out:
	free(a);
	free(b);
	return r;
}

IMG_API int img_set_backing(struct img *img, const char *ref, unsigned flags,
			    img_progress_fn progress, void *progress_arg)
{
	struct img *newb = NULL;
	struct img_header nh;
	int r;

	img_clear_error();
	if (flags & ~(IMG_BACKING_UNSAFE | IMG_BACKING_ALLOW_PATH))
		return -EINVAL;
	if (img->rdonly)
		return img_fail(img, -EROFS, "opened read-only");
	if (img->corrupt)
		return img_fail(img, -EUCLEAN, "image is corrupt: repair it first");
	if (!(flags & IMG_BACKING_UNSAFE) && img->delta && !img->backing)
		return img_fail(img, -EINVAL, "a safe rebase reads the old backing chain: open the "
				"image with it (or rebase unsafely)");
	if (ref && (r = img_open_ref(img, ref, flags & IMG_BACKING_ALLOW_PATH ?
				     IMG_OPEN_ALLOW_BACKING_PATH : 0, &newb))) {
		if (strncmp(img_last_error(), img->name, strlen(img->name))) {
			char m[512];
			snprintf(m, sizeof(m), "%s", img_last_error());
			img_set_error("%s: new backing file %s: %s", img->name, ref, m);
		}
		return r;
	}
	if (!(flags & IMG_BACKING_UNSAFE) &&
	    (r = copy_differing(img, img->backing, newb, progress, progress_arg)))
		goto fail;
	pthread_mutex_lock(&img->commit_lock);
	nh = img->hdr;
	img_header_set_backing(&nh, newb ? newb->hdr.uuid : NULL, ref, ref ? strlen(ref) : 0);
	r = img_header_commit(img, &nh);
	pthread_mutex_unlock(&img->commit_lock);
	if (r)
		goto fail;
	pthread_rwlock_wrlock(&img->map_lock);
	if (img->backing)
		img_close(img->backing);
	img->backing = newb;
	img->delta = ref != NULL;
	img->depth = newb ? newb->depth + 1 : 0;
	pthread_rwlock_unlock(&img->map_lock);
	return 0;
fail:
	if (newb)
		img_close(newb);
	return r;
}
