/* SPDX-License-Identifier: MIT */
/*
 * Backing chains, offline: change the backing reference of a delta (safe
 * and unsafe rebase), snapshot (the image becomes the read-only base of a
 * new empty top under the same name) and merge (the top committed into its
 * base, which then takes the top's name).
 *
 * Invariant (snapshot): the name the user keeps using always names a
 * complete image.  The image gets a second name (link), the new top is
 * created in a temporary file and synced, then renamed over the name: before
 * the rename the name is the old image, after it the new top over the old
 * image; a crash leaves at most the extra link and a temporary file.
 *
 * Invariant (merge): the top's view never changes.  Only clusters the top
 * holds (data or zero) are written in the base, so the top over the base
 * reads the same at every moment; the base is synced, then renamed over the
 * top's name.  A crash before the rename leaves the top over a partly
 * merged base (reads unchanged: the merge can be run again); after it, the
 * merged image.
 *
 * Invariant (safe rebase): the visible disk never changes.  Every
 * unallocated cluster that would read differently through the new chain is
 * first given its own copy of what the old chain shows (or becomes "zero"),
 * committed; only then is the header with the new reference written (A/B,
 * FORMAT.md 3).  A crash before the header leaves the old reference with
 * extra clusters that read the same as before; after it, the new one.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* ---- snapshots: ploop-style stacking, offline ---------------------------- */

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* dir/name as a new string. */
static char *join(const char *dir, const char *name)
{
	char *p;
	return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

IMG_API int img_snapshot(const char *path, const char *name, unsigned flags,
			 char *out, size_t outlen)
{
	struct img *img = NULL;
	struct img_create_opts o;
	struct img_info in;
	struct stat st;
	char *dir = NULL, *snap = NULL, *tmp = NULL, gen[4096];
	const char *base;
	int r, fd, linked = 0;

	img_clear_error();
	if (flags & ~IMG_BACKING_ALLOW_PATH)
		return -EINVAL;
	/* The image is opened for writing (exclusive lock) and stays open
	 * until the new top is in place: nobody writes to it meanwhile. */
	if ((r = img_open(path, IMG_OPEN_RDWR | (flags & IMG_BACKING_ALLOW_PATH ?
						 IMG_OPEN_ALLOW_BACKING_PATH : 0), &img)))
		return r;
	if (img->corrupt) {
		r = img_fail(img, -EUCLEAN, "image is corrupt: repair it first");
		goto out;
	}
	if ((r = img_flush(img)))
		goto out;
	img_info(img, &in);
	if (stat(path, &st) < 0) {
		r = img_fail(img, -errno, "stat");
		goto out;
	}
	if (!(dir = strdup(img->dir))) {
		r = -ENOMEM;
		goto out;
	}
	base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	if (name && (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))) {
		r = img_fail(img, -EINVAL, "snapshot name '%s' must be a file name in the image's directory", name);
		goto out;
	}
	/* 1. A second name for the current image: it becomes the snapshot. */
	for (unsigned n = 1; !linked; n++) {
		if (!name)
			snprintf(gen, sizeof(gen), "%s.snap%u", base, n);
		free(snap);
		if (!(snap = join(dir, name ? name : gen))) {
			r = -ENOMEM;
			goto out;
		}
		if (link(path, snap) == 0)
			linked = 1;
		else if (errno != EEXIST || name || n > 100000) {
			r = img_fail(img, -errno, "linking %s", snap);
			goto out;
		}
	}
	if ((r = fsync_dir(dir))) {
		img_fail(img, r, "syncing the directory");
		goto out;
	}
	/* 2. The new, empty top over it, in a temporary file. */
	if (asprintf(&tmp, "%s/.%s.snapnew.XXXXXX", dir, base) < 0) {
		tmp = NULL;
		r = -ENOMEM;
		goto out;
	}
	if ((fd = mkstemp(tmp)) < 0) {
		r = img_fail(img, -errno, "creating a temporary file");
		free(tmp);
		tmp = NULL;
		goto out;
	}
	close(fd);
	memset(&o, 0, sizeof(o));
	o.virtual_size = in.virtual_size;
	o.cluster_size = in.cluster_size;
	o.flags = IMG_CREATE_OVERWRITE;
	o.backing_file = strrchr(snap, '/') + 1;
	if ((r = img_create_over(tmp, &o, img)) || chmod(tmp, st.st_mode & 07777) < 0) {
		if (!r)
			r = img_fail(img, -errno, "setting the mode");
		goto out;
	}
	/* 3. The switch: one rename makes path the new top. */
	if (rename(tmp, path) < 0) {
		r = img_fail(img, -errno, "renaming the new top into place");
		goto out;
	}
	free(tmp);
	tmp = NULL;
	if ((r = fsync_dir(dir))) {
		img_fail(img, r, "syncing the directory");
		linked = 0;
		goto out;
	}
	linked = 0;   /* the snapshot is in use now: keep it */
	r = img_close(img);
	img = NULL;
	/* 4. The snapshot is never written again. */
	if (!r && chmod(snap, st.st_mode & 07555) < 0)
		r = -errno;
	if (!r && out && snprintf(out, outlen, "%s", strrchr(snap, '/') + 1) >= (int)outlen)
		r = -ERANGE;
out:
	if (tmp)
		unlink(tmp);
	if (linked)
		unlink(snap);
	if (img)
		img_close(img);
	free(tmp);
	free(snap);
	free(dir);
	return r;
}

IMG_API int img_merge(const char *path, unsigned flags, img_progress_fn progress, void *arg)
{
	struct img *top = NULL, *base = NULL;
	char *bpath = NULL, *dir = NULL;
	uint8_t *buf = NULL;
	struct stat st;
	uint64_t tsize, bsize, off = 0;
	unsigned oflags = flags & IMG_BACKING_ALLOW_PATH ? IMG_OPEN_ALLOW_BACKING_PATH : 0;
	int r;

	img_clear_error();
	if (flags & ~IMG_BACKING_ALLOW_PATH)
		return -EINVAL;
	/* The top: locked against everyone, its backing not opened (the base
	 * is opened for writing below). */
	if ((r = img_open(path, IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING | oflags, &top)))
		return r;
	if (!top->delta) {
		r = img_fail(top, -EINVAL, "has no backing image to merge into");
		goto out;
	}
	if (top->corrupt) {
		r = img_fail(top, -EUCLEAN, "image is corrupt: repair it first");
		goto out;
	}
	if ((r = img_check_backing_ref(top->name, top->hdr.backing_path, !!oflags)))
		goto out;
	if (!(bpath = img_resolve_ref(top, top->hdr.backing_path)) || !(dir = strdup(top->dir))) {
		r = -ENOMEM;
		goto out;
	}
	if (stat(path, &st) < 0) {
		r = img_fail(top, -errno, "stat");
		goto out;
	}
	/* The base becomes the image under path's name: its mode too (a
	 * snapshot was made read-only). */
	if (chmod(bpath, st.st_mode & 07777) < 0) {
		r = img_fail(top, -errno, "making %s writable", bpath);
		goto out;
	}
	if ((r = img_open(bpath, IMG_OPEN_RDWR | oflags, &base)))
		goto out;
	if (!img_is_zero(top->hdr.backing_uuid, 16) && memcmp(top->hdr.backing_uuid, base->hdr.uuid, 16)) {
		r = img_fail(top, -EUCLEAN, "backing file '%s' is not the image this delta was made over "
			     "(its uuid differs): refused", top->hdr.backing_path);
		goto out;
	}
	if (base->corrupt) {
		r = img_fail(base, -EUCLEAN, "image is corrupt: repair it first");
		goto out;
	}
	tsize = top->vsize;
	bsize = base->vsize;
	if (!(buf = malloc(top->g.cluster_size))) {
		r = -ENOMEM;
		goto out;
	}
	/* 1. A larger top: the base grows, and what the top read as zeros past
	 *    the base's old end stays zeros. */
	if (tsize > bsize && ((r = img_resize(base, tsize, 0)) ||
			      (r = img_write_zeroes(base, bsize, tsize - bsize))))
		goto out;
	/* 2. Every cluster the top holds goes to the base: data, and zeros
	 *    (the base's own data there becomes zero). */
	while (off < tsize && !r) {
		struct img_extent e;
		if ((r = img_map(top, off, &e)) || !e.length)
			break;
		if (e.type == IMG_EXTENT_ZERO) {
			r = img_write_zeroes(base, off, e.length);
		} else if (e.type == IMG_EXTENT_DATA || e.type == IMG_EXTENT_COMPRESSED) {
			for (uint64_t p = off; p < off + e.length && !r; ) {
				uint64_t n = off + e.length - p < top->g.cluster_size ? off + e.length - p
										       : top->g.cluster_size;
				ssize_t k = img_pread(top, buf, n, p);
				if (k >= 0)
					k = img_pwrite(base, buf, n, p);
				r = k < 0 ? (int)k : 0;
				p += n;
			}
		}
		off += e.length;
		if (!r && progress && progress(arg, off, tsize))
			r = img_fail(top, -ECANCELED, "merge cancelled");
	}
	/* 3. A smaller top: the base shrinks to it. */
	if (!r && tsize < bsize)
		r = img_resize(base, tsize, IMG_RESIZE_DISCARD_DATA);
	if (!r)
		r = img_flush(base);
	if (!r) {
		r = img_close(base);
		base = NULL;
	}
	if (r)
		goto out;
	/* 4. The base, now holding the top's view, takes the top's name: one
	 *    rename drops the top. */
	if (rename(bpath, path) < 0) {
		r = img_fail(top, -errno, "renaming %s over %s", bpath, path);
		goto out;
	}
	if ((r = fsync_dir(dir)))
		img_fail(top, r, "syncing the directory");
out:
	if (base)
		img_close(base);
	if (top)
		img_close(top);   /* after the rename: an unlinked file */
	free(buf);
	free(bpath);
	free(dir);
	return r;
}
