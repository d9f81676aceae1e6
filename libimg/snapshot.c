/* SPDX-License-Identifier: MIT */
/*
 * Backing chains: change the backing reference of a delta (safe and unsafe
 * rebase, img_set_backing), snapshot (the image becomes the read-only base
 * of a new empty top under the same name) and merge (the top committed into
 * its base, which then takes the top's name), the last two offline (by
 * path) and on an open handle (img_snapshot_live, img_merge_live: the
 * export daemon); the template mark of a base (img_set_template).
 * Files and names go through imgi_vfs (vfs.c), so the crash test runs these
 * on a directory in memory that loses unsynced names and writes.
 *
 * Invariant (snapshot): the name the user keeps using always names a
 * complete, clean image, and every image a header references exists.  The
 * image is flushed, gets a second name (link, directory synced), the new
 * top is created over it under a temporary name (synced, directory
 * synced), the image records the new top's uuid as its owner (a header
 * written A/B and synced: a crash leaves the old header or the new one,
 * and an owner naming a temporary file that the next snapshot replaces
 * names no image), the image is closed clean, then one rename puts the new top
 * under the name (directory synced).  Before the rename the name is the
 * old image; after it the new top over the old image, whose contents are
 * the same.  A crash leaves at most the extra link (a rerun with that name
 * takes it over, as it links the same file) and the temporary file (a
 * rerun overwrites it).
 *
 * Invariant (merge): the top's view never changes.  Only clusters the top
 * holds (data or zero) are written in the base, so the top over the base
 * reads the same at every moment; the base is flushed and closed clean, the
 * top closed clean, then the base is renamed over the top's name
 * (directory synced), then the merged image's owner field (the top's
 * uuid) cleared.  A crash before the rename leaves the top over a
 * partly merged base (reads unchanged: run the merge again; the base may
 * be dirty, its log replays); after it, the merged image (with a stale
 * owner field until the clear).
 *
 * Invariant (bases are protected, FORMAT.md 3.1, 3.2): an operation on a
 * delta never writes its backing image unless that image is the delta's
 * own snapshot or the caller named the base explicitly (img_merge_into).
 * Own snapshot: the delta has IMG_COMPAT_OWN_SNAPSHOT (set only by the
 * snapshot path on its new top and cleared by every other change of the
 * reference) AND the backing image's header records the delta's uuid as
 * its owner (IMG_INCOMPAT_OWNER, owner_uuid): the delta is untrusted
 * input, its bit alone proves nothing.  The owner field is written only by
 * the snapshot path (the new top's uuid, A/B header write before the
 * switch) and is always either that uuid, cleared, or stale (it names no
 * file: it matches no delta): a rebase or flatten of the snapshot keeps it
 * (what lies above does not change); a merge of the owner keeps it until
 * its rename (a rerun after a crash is again an own merge) and then clears
 * it in the merged image (A/B, after the directory sync: stale after a
 * crash in between); a snapshot that puts the image back after writing it
 * clears it again; a rebase or flatten of the owner clears the owner's
 * OWN_SNAPSHOT (the old snapshot's field goes stale); a named merge into
 * another delta's snapshot and a template mark clear it; a new image
 * (create, convert) has none.  A top that records an owner is someone's
 * snapshot and is never merged (-EPERM, whatever its mode): its name would
 * get its base, and the image over it would lose its backing file; as a
 * merge clears the field of the image it leaves, only a stale field (a
 * crash) makes a merge refuse an image nobody lies over.  A base without the field (a
 * snapshot from before it existed) is not an own snapshot: named only.
 * A base that is a template (IMG_RO_COMPAT_TEMPLATE) is never written;
 * one whose file mode has no write bit only when it is the delta's own
 * snapshot (the snapshot path made it read-only itself).  A delta whose
 * file mode has no write bit (a snapshot, with a top over it that recorded
 * its uuid) is not merged: its name would get the base.  Merge and
 * snapshot check all of this, and that the chain they leave can be
 * opened again (every file present, right uuid, lockable), before they
 * change anything: a refusal changes no byte, name or mode.  Merge gives
 * the base the top's mode only once every check passed, and gives it its
 * own mode back when a later step fails before the rename.
 *
 * Invariant (live switch): a failure before the switch leaves the handle
 * the caller had (merge: its backing chain attached again); a failure to
 * open the new top after the switch's rename renames the old image back
 * under the name (the new top was never opened, nothing was written to
 * it) and opens it again.
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
		if ((r = imgi_read_through(oldb, a, len, off)) || (r = imgi_read_through(newb, b, len, off)))
			break;
		if (!memcmp(a, b, len))
			continue;
		if (imgi_is_zero(a, len)) {
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
			r = imgi_fail(img, -ECANCELED, "rebase cancelled");
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
	struct imgi_header nh;
	int r;

	imgi_clear_error();
	if (flags & ~(IMG_BACKING_UNSAFE | IMG_BACKING_ALLOW_PATH | IMG_BACKING_CHECK_ONLY))
		return -EINVAL;
	/* A safe rebase reads the old chain and copies what differs; an
	 * unsafe one changes the header only, so it is allowed on a delta
	 * opened without its chain (imgsnap rebase -u). */
	if (!(flags & IMG_BACKING_CHECK_ONLY) &&
	    (r = imgi_check_writable(img, flags & IMG_BACKING_UNSAFE ? IMG_CHANGE_HEADER :
				    IMG_CHANGE_CONTENT, flags & IMG_BACKING_UNSAFE ? "rebasing" :
				    "a safe rebase (open the image with its chain, or rebase unsafely)")))
		return r;
	if (ref && (r = imgi_open_ref(img, ref, flags & IMG_BACKING_ALLOW_PATH ?
				     IMG_OPEN_ALLOW_BACKING_PATH : 0, &newb))) {
		if (strncmp(img_last_error(), img->name, strlen(img->name))) {
			char m[512];
			snprintf(m, sizeof(m), "%s", img_last_error());
			imgi_set_error("%s: new backing file %s: %s", img->name, ref, m);
		}
		return r;
	}
	if (flags & IMG_BACKING_CHECK_ONLY) {
		if (newb)
			img_close(newb);
		return 0;
	}
	if (!(flags & IMG_BACKING_UNSAFE) &&
	    (r = copy_differing(img, img->backing, newb, progress, progress_arg)))
		goto fail;
	pthread_mutex_lock(&img->commit_lock);
	nh = img->hdr;
	imgi_header_set_backing(&nh, newb ? newb->hdr.uuid : NULL, ref, ref ? strlen(ref) : 0);
	r = imgi_header_commit(img, &nh);
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

/* ---- snapshots and merges: ploop-style stacking ------------------------- */

/* dir/name as a new string. */
static char *join(const char *dir, const char *name)
{
	char *p;
	return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

/* The flags a handle is opened again with after a switch. */
static unsigned reopen_flags(struct img *img)
{
	return (img->flags & (IMG_OPEN_RDWR | IMG_OPEN_ALLOW_BACKING_PATH)) | img->io_open_flags |
	       (img->io_engine == IMG_IO_ENGINE_URING ? IMG_OPEN_IO_URING : 0);
}

/* After a failure that closed the handle: the image at path again. */
static void reopen(const char *path, unsigned flags, struct img **imgp)
{
	char m[1024];

	snprintf(m, sizeof(m), "%s", img_last_error());
	if (img_open(path, flags, imgp))
		*imgp = NULL;
	imgi_set_error("%s", m);
}

/* Checks shared by the live operations (rw 0: the check an offline
 * operation runs on a read-only handle before it opens for writing, so
 * that a refusal does not even touch the header). */
static int usable(struct img *img, int rw)
{
	int r;

	if ((r = rw ? imgi_check_writable(img, IMG_CHANGE_CONTENT, "a snapshot or merge")
		    : imgi_check_changeable(img, IMG_CHANGE_CONTENT, "a snapshot or merge")))
		return r;
	if (!img->dir)
		return imgi_fail(img, -EINVAL, "opened without a path");
	if (img->flags & IMG_OPEN_NO_BACKING)
		return imgi_fail(img, -EINVAL, "opened without its backing chain");
	return 0;
}

/* The directory can take a new name (a vfs without permissions, such as
 * the crash test's memfs, has no dir_writable: always). */
static int dir_writable(struct img *img, const char *dir)
{
	int r;

	if (imgi_vfs->dir_writable && (r = imgi_vfs->dir_writable(dir)))
		return imgi_fail(img, r, "cannot create files in %s", dir);
	return 0;
}

/* The chain below img (its backing reference) opens again by path, with
 * the uuid recorded: what a reopen after a switch needs. */
static int chain_reopens(struct img *img, unsigned of)
{
	struct img *b = NULL;
	int r;

	if (!img->delta)
		return 0;
	r = imgi_open_ref(img, img->hdr.backing_path, of & IMG_OPEN_ALLOW_BACKING_PATH, &b);
	if (r) {
		char m[512];
		snprintf(m, sizeof(m), "%s", img_last_error());
		imgi_set_error("%s: its backing chain cannot be opened again (%s): refused before "
			      "changing anything", img->name, m);
		return r;
	}
	if (!imgi_header_backing_matches(&img->hdr, &b->hdr)) {
		r = imgi_fail(img, -EUCLEAN, "backing file '%s' is no longer the image this delta was "
			     "made over (its uuid differs): refused before changing anything",
			     img->hdr.backing_path);
		imgi_set_chain_error(r);   /* the chain, not the image */
	}
	img_close(b);
	return r;
}

/* Links path to a snapshot name in dir (name, or base.snapN): 0 and the
 * full name in *out.  A name that already links to path's file is a
 * leftover of an interrupted snapshot of this image: taken over. */
static int link_snapshot(struct img *img, const char *path, const char *dir,
			 const char *name, const struct stat *pst, char **out)
{
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	char gen[4096], *snap = NULL;
	struct stat st;
	int r = -EEXIST;

	for (unsigned n = 1; r == -EEXIST && n <= 100000; n++) {
		if (!name)
			snprintf(gen, sizeof(gen), "%s.snap%u", base, n);
		free(snap);
		if (!(snap = join(dir, name ? name : gen)))
			return -ENOMEM;
		r = imgi_vfs->link(path, snap);
		if (r == -EEXIST && imgi_vfs->stat(snap, &st) == 0 && st.st_dev == pst->st_dev &&
		    st.st_ino == pst->st_ino)
			r = 0;
		if (r == -EEXIST && name)
			break;
	}
	if (r) {
		imgi_fail(img, r, "linking %s", snap);
		free(snap);
		return r;
	}
	*out = snap;
	return 0;
}

/* Space the new top needs at least: its metadata written (headers) and
 * a cluster's worth for the first writes after the switch. */
static int space_for_top(struct img *img, const char *dir)
{
	uint64_t need = 2 * img->g.cluster_size, have;

	if (!imgi_vfs->space_free || imgi_vfs->space_free(dir, &have) < 0)
		return 0;
	if (have < need)
		return imgi_fail(img, -ENOSPC, "%s has %llu bytes free, a new top needs %llu: refused",
				dir, (unsigned long long)have, (unsigned long long)need);
	return 0;
}

/* The image about to become a snapshot records the new top at path as its
 * owner (FORMAT.md 3.1): a header written A/B like any other.  A backing
 * path too long to leave room for the field: not recorded (a merge then
 * wants the snapshot named, the safe side). */
static int record_owner(struct img *img, const char *path)
{
	struct imgi_header th, nh;
	int r;

	if ((r = imgi_read_header(path, &th)))
		return r;
	pthread_mutex_lock(&img->commit_lock);
	nh = img->hdr;
	r = imgi_header_set_owner(&nh, th.uuid);
	if (r == -ENOSPC)
		r = 0;
	else if (!r)
		r = imgi_header_commit(img, &nh);
	pthread_mutex_unlock(&img->commit_lock);
	return r;
}

/* The image at path is nobody's snapshot any more (FORMAT.md 3.1): its
 * owner field and OWNER bit cleared by a header written A/B, on a handle
 * opened without its chain (only the header changes).  Nothing to do
 * when it records no owner. */
static int drop_owner(const char *path, unsigned of)
{
	struct img *img = NULL;
	struct imgi_header nh;
	int r, r2;

	if ((r = imgi_open_internal(path, IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING |
				   (of & IMG_OPEN_ALLOW_BACKING_PATH), &img)))
		return r;
	pthread_mutex_lock(&img->commit_lock);
	nh = img->hdr;
	imgi_header_set_owner(&nh, NULL);
	r = nh.incompat == img->hdr.incompat ? 0 : imgi_header_commit(img, &nh);
	pthread_mutex_unlock(&img->commit_lock);
	r2 = img_close(img);
	return r ? r : r2;
}

static int snapshot_check(struct img *img, const char *name, unsigned flags, int rw)
{
	const char *path, *base;
	struct stat st, nst;
	unsigned of;
	char *snap;
	int r;

	if (flags & ~IMG_BACKING_ALLOW_PATH)
		return -EINVAL;
	if ((r = usable(img, rw)))
		return r;
	of = reopen_flags(img) | (flags & IMG_BACKING_ALLOW_PATH ? IMG_OPEN_ALLOW_BACKING_PATH : 0);
	path = img->name;
	base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	if (name && (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..") ||
		     !strcmp(name, base)))
		return imgi_fail(img, -EINVAL, "snapshot name '%s' must be another file name in the "
				"image's directory", name);
	if ((r = imgi_vfs->stat(path, &st)))
		return imgi_fail(img, r, "stat");
	if (!S_ISREG(st.st_mode))
		return imgi_fail(img, -EINVAL, "not a regular file");
	if (imgi_mode_protected(st.st_mode))
		return imgi_fail(img, -EROFS, "is read-only (mode %04o): a snapshot would put a new "
				"image under its name: refused", (unsigned)(st.st_mode & 07777));
	if (name) {
		if (!(snap = join(img->dir, name)))
			return -ENOMEM;
		r = imgi_vfs->stat(snap, &nst);
		free(snap);
		/* a link to this very file: a leftover of an interrupted
		 * snapshot, taken over */
		if (r == 0 && (nst.st_dev != st.st_dev || nst.st_ino != st.st_ino))
			return imgi_fail(img, -EEXIST, "snapshot name '%s' is taken", name);
	}
	if ((r = dir_writable(img, img->dir)) || (r = space_for_top(img, img->dir)))
		return r;
	return chain_reopens(img, of);
}

IMG_API int img_snapshot_check(struct img *img, const char *name, unsigned flags)
{
	imgi_clear_error();
	return snapshot_check(img, name, flags, 1);
}

/*
 * Snapshot of an open image (see the invariants at the top):
 *   0. snapshot_check: nothing changes unless everything can be done.
 *   1. flush; a second name (link) for the image: the snapshot; dir synced.
 *   2. the new empty top over it in DIR/.NAME.snapnew (imgi_create_over_ext:
 *      OWN_SNAPSHOT set; synced, renamed into that name, dir synced).
 *   2b. the image records the new top's uuid as its owner (record_owner:
 *      header A/B, synced; FORMAT.md 3.1).
 *   3. the image is closed (clean): the snapshot is never dirty.
 *   4. rename .NAME.snapnew over path; dir synced: the switch.
 *   5. path opened again: the new top (if it does not open, the snapshot
 *      name is renamed back over path and the old image opened again);
 *      the snapshot made read-only.
 * A failure after 2b that leaves the old image under path clears its
 * owner again (drop_owner).
 * A crash before 4 leaves path the old image (and perhaps the extra link,
 * taken over by the next snapshot with that name, and the temporary
 * file, overwritten by it); after 4 the new top over the snapshot.
 */
IMG_API int img_snapshot_live(struct img **imgp, const char *name, unsigned flags,
			      char *out, size_t outlen)
{
	struct img *img = *imgp;
	struct img_create_opts o;
	struct stat st;
	char *path = NULL, *dir = NULL, *snap = NULL, *tmp = NULL;
	const char *base;
	unsigned of;
	int r, linked = 0, switched = 0, owned = 0, back = 0;

	imgi_clear_error();
	if ((r = img_snapshot_check(img, name, flags)))
		return r;
	of = reopen_flags(img) | (flags & IMG_BACKING_ALLOW_PATH ? IMG_OPEN_ALLOW_BACKING_PATH : 0);
	if (!(path = strdup(img->name)) || !(dir = strdup(img->dir))) {
		r = -ENOMEM;
		goto out;
	}
	base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	if ((r = img_flush(img)))
		goto out;
	if ((r = imgi_vfs->stat(path, &st))) {
		imgi_fail(img, r, "stat");
		goto out;
	}
	/* 1. */
	if ((r = link_snapshot(img, path, dir, name, &st, &snap)))
		goto out;
	linked = 1;
	if ((r = imgi_vfs->sync_dir(dir))) {
		imgi_fail(img, r, "syncing the directory");
		goto out;
	}
	/* 2. */
	if (asprintf(&tmp, "%s/.%s.snapnew", dir, base) < 0) {
		tmp = NULL;
		r = -ENOMEM;
		goto out;
	}
	memset(&o, 0, sizeof(o));
	o.virtual_size = img->vsize;
	o.cluster_size = img->g.cluster_size;
	o.flags = IMG_CREATE_OVERWRITE;
	o.backing_file = strrchr(snap, '/') + 1;
	/* The new top's backing is its own snapshot: merge may consume it. */
	if ((r = imgi_create_over_ext(tmp, &o, img, st.st_mode & 07777, IMG_COMPAT_OWN_SNAPSHOT)))
		goto out;
	/* 2b. */
	if ((r = record_owner(img, tmp)))
		goto out;
	owned = 1;
	/* 3. */
	r = img_close(img);
	*imgp = img = NULL;
	if (r) {
		imgi_set_error("%s: closing: %s", path, img_strerror(r));
		goto out;
	}
	/* 4. */
	if ((r = imgi_vfs->rename(tmp, path, 0))) {
		imgi_set_error("%s: renaming the new top into place: %s", path, img_strerror(r));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	owned = 0;    /* it is the new top's snapshot now */
	linked = 0;   /* the snapshot is in use from here on: kept */
	switched = 1;
	if ((r = imgi_vfs->sync_dir(dir))) {
		imgi_set_error("%s: syncing the directory: %s", dir, img_strerror(r));
		goto out;
	}
	/* 5. */
	if ((r = img_open(path, of, imgp)))
		goto out;
	switched = 0;
	if ((r = imgi_vfs->chmod(snap, st.st_mode & 07555))) {
		imgi_set_error("%s: making it read-only: %s", snap, img_strerror(r));
		goto out;
	}
	if (out && snprintf(out, outlen, "%s", strrchr(snap, '/') + 1) >= (int)outlen)
		r = -ERANGE;
out:
	if (tmp)
		imgi_vfs->unlink(tmp);
	if (linked)
		imgi_vfs->unlink(snap);
	if (switched && !*imgp) {
		/* The new top could not be opened (nothing wrote to it): the
		 * old image goes back under the name, the snapshot name goes. */
		char m[1024];
		snprintf(m, sizeof(m), "%s", img_last_error());
		back = imgi_vfs->rename(snap, path, 0) == 0;
		if (back)
			imgi_vfs->sync_dir(dir);
		imgi_set_error("%s%s", m, back ? " (the image was put back as it was)" : "");
	}
	if ((owned || back) && !*imgp) {
		/* The image is under its name again and nobody's snapshot:
		 * the owner it recorded (a top that never came into use) is
		 * cleared, or stays stale if that fails too (FORMAT.md 3.1). */
		char m[1024];
		snprintf(m, sizeof(m), "%s", img_last_error());
		drop_owner(path, of);
		imgi_set_error("%s", m);
	}
	if (!*imgp && path)
		reopen(path, of, imgp);
	free(tmp);
	free(snap);
	free(path);
	free(dir);
	return r;
}

IMG_API int img_snapshot(const char *path, const char *name, unsigned flags,
			 char *out, size_t outlen)
{
	struct img *img = NULL;
	int r, r2;

	imgi_clear_error();
	if (flags & ~IMG_BACKING_ALLOW_PATH)
		return -EINVAL;
	/* Checked on a read-only handle first: a refusal leaves even the
	 * header untouched. */
	if ((r = img_open(path, flags & IMG_BACKING_ALLOW_PATH ? IMG_OPEN_ALLOW_BACKING_PATH : 0,
			  &img)))
		return r;
	r = snapshot_check(img, name, flags, 0);
	img_close(img);
	img = NULL;
	if (r)
		return r;
	/* Opened for writing (exclusive lock) until the new top is in
	 * place: nobody writes to it meanwhile. */
	if ((r = img_open(path, IMG_OPEN_RDWR | (flags & IMG_BACKING_ALLOW_PATH ?
						 IMG_OPEN_ALLOW_BACKING_PATH : 0), &img)))
		return r;
	r = img_snapshot_live(&img, name, flags, out, outlen);
	r2 = img_close(img);
	return r ? r : r2;
}

/* Copies what top holds (data, zero clusters) into base, growing or
 * shrinking base to top's size; top reads only its own clusters. */
static int copy_down(struct img *top, struct img *base, img_progress_fn progress, void *arg)
{
	uint64_t tsize = top->vsize, bsize = base->vsize, off = 0;
	uint8_t *buf = malloc(top->g.cluster_size);
	int r = 0;

	if (!buf)
		return -ENOMEM;
	/* A larger top: the base grows, and what the top read as zeros past
	 * the base's old end stays zeros. */
	if (tsize > bsize && ((r = img_resize(base, tsize, 0)) ||
			      (r = img_write_zeroes(base, bsize, tsize - bsize))))
		goto out;
	/* Every cluster the top holds goes to the base: data, and zeros
	 * (the base's own data there becomes zero). */
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
			r = imgi_fail(top, -ECANCELED, "merge cancelled");
	}
	/* A smaller top: the base shrinks to it. */
	if (!r && tsize < bsize)
		r = img_resize(base, tsize, IMG_RESIZE_DISCARD_DATA);
	if (!r)
		r = img_flush(base);
out:
	free(buf);
	return r;
}

/* The backing chain of top attached again after a refusal or a failure
 * before the rename: the handle the caller had.  0, or -errno (the caller
 * then closes top and opens path again). */
static int reattach(struct img *top, unsigned of)
{
	struct img *b = NULL;
	int r = imgi_open_ref(top, top->hdr.backing_path, of & IMG_OPEN_ALLOW_BACKING_PATH, &b);

	if (r)
		return r;
	if (!imgi_header_backing_matches(&top->hdr, &b->hdr)) {
		img_close(b);
		return -EUCLEAN;
	}
	pthread_rwlock_wrlock(&top->map_lock);
	top->backing = b;
	top->depth = b->depth + 1;
	pthread_rwlock_unlock(&top->map_lock);
	return 0;
}

/* Everything a merge of top into the file bpath needs, checked before
 * anything changes (the invariant at the top): the base is top's own
 * snapshot or the one the caller named, no template, not read-only unless
 * top's own snapshot, the same uuid as recorded, not corrupt, its own
 * chain opens again, top's directory takes the rename. */
static int merge_check(struct img *top, const char *named, const char *bpath, unsigned of,
		       struct stat *bst)
{
	struct img *b = NULL;
	struct imgi_header bh;
	struct stat nst;
	int r, own;

	/* the top's name gets the base: a protected top (a snapshot, with
	 * an image over it that recorded its uuid) is not replaced */
	if (imgi_vfs->stat(top->name, &nst) == 0 && imgi_mode_protected(nst.st_mode))
		return imgi_fail(top, -EROFS, "is read-only (mode %04o): a merge would put its base "
				"under its name, and an image over it (a snapshot's top) would lose "
				"it: refused (merge the image at the top of the chain)",
				(unsigned)(nst.st_mode & 07777));
	/* the same when its mode was made writable again: a top that records
	 * an owner is the snapshot of the delta a snapshot made over it
	 * (FORMAT.md 3.1), and a merge clears the field of the image it
	 * leaves, so a field on a top that is nobody's snapshot only remains
	 * after a crash (or a failed clear) */
	if (top->hdr.incompat & IMG_INCOMPAT_OWNER)
		return imgi_fail(top, -EPERM, "is the snapshot of another image (it records an owner, "
				"the image a snapshot put over it): a merge would put its base under "
				"its name and that image would lose its backing file: refused (merge "
				"the image at the top of the chain; if none lies over it any more, "
				"'imgsnap template' then 'template --clear' forgets the owner)");
	if ((r = imgi_vfs->stat(bpath, bst)))
		return imgi_fail(top, r, "backing file %s", bpath);
	if (!S_ISREG(bst->st_mode))
		return imgi_fail(top, -EINVAL, "backing file %s is not a regular file", bpath);
	/* the base's name is renamed over the top's: a link would be
	 * renamed, and the image it points to changed under another name */
	if (imgi_vfs->lstat && !imgi_vfs->lstat(bpath, &nst) && S_ISLNK(nst.st_mode))
		return imgi_fail(top, -EINVAL, "backing file %s is a symbolic link: a merge would "
				"put the link, not the image, under the image's name (refused; "
				"point the image at the file itself with imgsnap rebase -u)", bpath);
	/* Its own snapshot: the top says so (OWN_SNAPSHOT) and the base
	 * records the top as its owner (FORMAT.md 3.1); the top alone is
	 * untrusted, a bit anyone can set. */
	if ((r = imgi_read_header(bpath, &bh))) {
		char m[512];
		snprintf(m, sizeof(m), "%s", img_last_error());
		imgi_set_error("%s: backing file: %s: refused before changing anything", top->name, m);
		return r;
	}
	own = (top->hdr.compat & IMG_COMPAT_OWN_SNAPSHOT) && imgi_header_owned_by(&bh, top->hdr.uuid);
	if (named) {
		if ((r = imgi_vfs->stat(named, &nst)))
			return imgi_fail(top, r, "the base named, %s", named);
		if (nst.st_dev != bst->st_dev || nst.st_ino != bst->st_ino)
			return imgi_fail(top, -EINVAL, "the base named, %s, is not its backing file "
					"(%s): refused", named, bpath);
	} else if (!own && !(top->hdr.compat & IMG_COMPAT_OWN_SNAPSHOT)) {
		return imgi_fail(top, -EPERM, "its backing file %s is a base it was made over, not "
				"its own snapshot: merging would change it under every other image "
				"made over it (refused; flatten the image instead, or name the base "
				"to merge into it)", bpath);
	} else if (!own && !(bh.incompat & IMG_INCOMPAT_OWNER)) {
		return imgi_fail(top, -EPERM, "its backing file %s records no owner, so it is not "
				"known to be this image's own snapshot (a snapshot taken before "
				"libimg recorded owners, or a base the image was made over with its "
				"mark set by hand): not its own snapshot, refused.  If it is this "
				"image's own snapshot and no other image uses it, name it to merge "
				"into it%s", bpath, imgi_mode_protected(bst->st_mode) ?
				" (make it writable first: it is read-only)" : "");
	} else if (!own) {
		return imgi_fail(top, -EPERM, "its backing file %s is the own snapshot of another "
				"image (the owner it records is not this image): not its own "
				"snapshot, refused (flatten the image instead, or name the base to "
				"merge into it)", bpath);
	}
	if (!own && imgi_mode_protected(bst->st_mode))
		return imgi_fail(top, -EROFS, "backing file %s is read-only (mode %04o): not written "
				"(make it writable first if you mean to change it)", bpath,
				(unsigned)(bst->st_mode & 07777));
	/* The base with its own chain, as path will open after the rename;
	 * a shared lock, as top holds one. */
	if ((r = imgi_open_internal(bpath, of & IMG_OPEN_ALLOW_BACKING_PATH, &b))) {
		char m[512];
		snprintf(m, sizeof(m), "%s", img_last_error());
		imgi_set_error("%s: backing file: %s: refused before changing anything", top->name, m);
		return r;
	}
	if (!imgi_header_backing_matches(&top->hdr, &b->hdr)) {
		r = imgi_fail(top, -EUCLEAN, "backing file '%s' is not the image this delta was made "
			     "over (its uuid differs): refused", top->hdr.backing_path);
		imgi_set_chain_error(r);   /* the chain, not the image */
	} else if (own && !imgi_header_owned_by(&b->hdr, top->hdr.uuid))
		r = imgi_fail(top, -EUCLEAN, "backing file %s changed while it was checked: refused",
			     bpath);
	else if (b->hdr.ro_compat & IMG_RO_COMPAT_TEMPLATE)
		r = imgi_fail(top, -EROFS, "backing file %s is a template (a shared base): never "
			     "written (refused)", bpath);
	else
		r = imgi_check_changeable(b, IMG_CHANGE_CONTENT, "a merge into it");
	img_close(b);
	if (!r)
		r = dir_writable(top, top->dir);
	return r;
}

/*
 * Merge of an open delta into its backing image (see the invariants at the
 * top):
 *   0. merge_check: nothing changes unless everything can be done.
 *   1. flush the top; close its backing chain; the base opened for
 *      writing (same uuid as recorded; given the top's mode first only
 *      when its own mode keeps us out).
 *   2. the top's clusters copied down; the base flushed and closed (clean).
 *   3. the top closed (clean); the base given the top's mode and renamed
 *      over path; dir synced.
 *   3b. the merged image's owner field (the top's uuid, kept until the
 *      rename for a rerun) cleared: header A/B (drop_owner).
 *   4. path opened again: the merged base.
 * A failure before 3's rename gives the base its mode back and the top its
 * chain (the handle the caller had).  A crash before 3's rename leaves the
 * top over a partly merged base that reads the same (run the merge again);
 * after it, the merged base (before 3b with the stale owner field).
 */
static int merge_run(struct img **imgp, const char *named, unsigned flags,
		     img_progress_fn progress, void *arg, int rw)
{
	struct img *top = *imgp, *base = NULL, *b;
	char *path = NULL, *dir = NULL, *bpath = NULL;
	struct stat st, bst;
	unsigned of, bof;
	int r, moded = 0, own, owned = 0;

	if (flags & ~IMG_BACKING_ALLOW_PATH)
		return -EINVAL;
	if ((r = usable(top, rw)))
		return r;
	if (!top->delta || !top->backing)
		return imgi_fail(top, -EINVAL, "has no backing image to merge into");
	of = reopen_flags(top) | (flags & IMG_BACKING_ALLOW_PATH ? IMG_OPEN_ALLOW_BACKING_PATH : 0);
	bof = IMG_OPEN_RDWR | (of & IMG_OPEN_ALLOW_BACKING_PATH);
	if (!(path = strdup(top->name)) || !(dir = strdup(top->dir)) ||
	    !(bpath = imgi_resolve_ref(top, top->hdr.backing_path))) {
		r = -ENOMEM;
		goto out;
	}
	/* 0. */
	if ((r = merge_check(top, named, bpath, of, &bst)))
		goto out;
	if ((r = img_flush(top)))
		goto out;
	if ((r = imgi_vfs->stat(path, &st))) {
		imgi_fail(top, r, "stat");
		goto out;
	}
	/* 1.  The caller keeps every other user of the handle out: reads of
	 * the top would not see the backing meanwhile. */
	pthread_rwlock_wrlock(&top->map_lock);
	b = top->backing;
	top->backing = NULL;
	pthread_rwlock_unlock(&top->map_lock);
	img_close(b);
	/* The base (the image's own snapshot: merge_check) may be read-only
	 * to its owner: then it gets the image's mode first, as it will
	 * under path's name, and its own back on a failure below. */
	r = img_open(bpath, bof, &base);
	if (r == -EACCES && (bst.st_mode & 07777) != (st.st_mode & 07777)) {
		if ((r = imgi_vfs->chmod(bpath, st.st_mode & 07777))) {
			imgi_fail(top, r, "giving %s the mode of the image", bpath);
			goto fail_top;
		}
		moded = 1;
		r = img_open(bpath, bof, &base);
	}
	if (r)
		goto fail_top;
	if (!imgi_header_backing_matches(&top->hdr, &base->hdr)) {
		r = imgi_fail(top, -EUCLEAN, "backing file '%s' is not the image this delta was made over "
			     "(its uuid differs): refused", top->hdr.backing_path);
		imgi_set_chain_error(r);   /* the chain, not the image */
		goto fail_top;
	}
	own = (top->hdr.compat & IMG_COMPAT_OWN_SNAPSHOT) &&
	      imgi_header_owned_by(&base->hdr, top->hdr.uuid);
	if (!named && !own) {
		r = imgi_fail(top, -EUCLEAN, "backing file %s changed while it was checked: refused",
			     bpath);
		goto fail_top;
	}
	if ((r = imgi_check_writable(base, IMG_CHANGE_CONTENT, "a merge into it")))
		goto fail_top;
	/* A named base that is another delta's own snapshot stops being
	 * one (FORMAT.md 3.1: the owner field true or cleared). */
	if (!own && (base->hdr.incompat & IMG_INCOMPAT_OWNER)) {
		struct imgi_header nh;
		pthread_mutex_lock(&base->commit_lock);
		nh = base->hdr;
		imgi_header_set_owner(&nh, NULL);
		r = imgi_header_commit(base, &nh);
		pthread_mutex_unlock(&base->commit_lock);
		if (r)
			goto fail_top;
	}
	/* The owner it keeps (the top's uuid) until the rename: a rerun after
	 * a crash before it is again a merge into its own snapshot. */
	owned = (base->hdr.incompat & IMG_INCOMPAT_OWNER) != 0;
	/* 2. */
	if ((r = copy_down(top, base, progress, arg)))
		goto fail_top;
	r = img_close(base);
	base = NULL;
	if (r)
		goto fail_top;
	/* 3. */
	r = img_close(top);
	*imgp = top = NULL;
	if (r) {
		imgi_set_error("%s: closing: %s", path, img_strerror(r));
		goto fail_mode;
	}
	/* The base becomes the image under path's name: its mode too. */
	if (!moded && (bst.st_mode & 07777) != (st.st_mode & 07777)) {
		if ((r = imgi_vfs->chmod(bpath, st.st_mode & 07777))) {
			imgi_set_error("%s: giving %s the mode of the image: %s", path, bpath,
				      img_strerror(r));
			goto out;
		}
		moded = 1;
	}
	if ((r = imgi_vfs->rename(bpath, path, 0))) {
		imgi_set_error("%s: renaming %s over it: %s", path, bpath, img_strerror(r));
		goto fail_mode;
	}
	moded = 0;
	if ((r = imgi_vfs->sync_dir(dir))) {
		imgi_set_error("%s: syncing the directory: %s", dir, img_strerror(r));
		goto out;
	}
	/* 3b. The merged image is nobody's snapshot any more: the owner it
	 * kept names the top the rename just replaced (FORMAT.md 3.1). */
	if (owned && (r = drop_owner(path, of))) {
		char m[512];
		snprintf(m, sizeof(m), "%s", img_last_error());
		imgi_set_error("%s: merged, but clearing the owner field the merged image kept from "
			      "the snapshot failed: %s (the merged image is complete; the stale "
			      "field names no image, the next snapshot of it replaces it)", path, m);
		goto out;
	}
	/* 4. */
	r = img_open(path, of, imgp);
	goto out;
fail_top:
	{
		char m[1024];
		snprintf(m, sizeof(m), "%s", img_last_error());
		if (base)
			img_close(base);
		base = NULL;
		if (moded && !imgi_vfs->chmod(bpath, bst.st_mode & 07777))
			moded = 0;
		/* The handle the caller had, with its chain again. */
		if (reattach(top, of)) {
			img_close(top);
			*imgp = NULL;
		}
		imgi_set_error("%s", m);
	}
fail_mode:
	if (moded)
		imgi_vfs->chmod(bpath, bst.st_mode & 07777);
out:
	if (!*imgp && path)
		reopen(path, of, imgp);
	free(path);
	free(dir);
	free(bpath);
	return r;
}

IMG_API int img_merge_live_into(struct img **imgp, const char *named, unsigned flags,
				img_progress_fn progress, void *arg)
{
	imgi_clear_error();
	return merge_run(imgp, named, flags, progress, arg, 1);
}

IMG_API int img_merge_live(struct img **imgp, unsigned flags, img_progress_fn progress, void *arg)
{
	return img_merge_live_into(imgp, NULL, flags, progress, arg);
}

IMG_API int img_merge_into(const char *path, const char *base, unsigned flags,
			   img_progress_fn progress, void *arg)
{
	struct img *top = NULL;
	int r, r2;

	imgi_clear_error();
	if (flags & ~IMG_BACKING_ALLOW_PATH)
		return -EINVAL;
	/* The top is only read, then replaced by the rename: opened
	 * read-only, its shared lock keeps writers out, and a refusal or a
	 * failure leaves even its header untouched. */
	if ((r = img_open(path, flags & IMG_BACKING_ALLOW_PATH ? IMG_OPEN_ALLOW_BACKING_PATH : 0,
			  &top)))
		return r;
	r = merge_run(&top, base, flags, progress, arg, 0);
	r2 = img_close(top);
	return r ? r : r2;
}

IMG_API int img_merge(const char *path, unsigned flags, img_progress_fn progress, void *arg)
{
	return img_merge_into(path, NULL, flags, progress, arg);
}

/* ---- templates (FORMAT.md 3.2) ----------------------------------------- */

IMG_API int img_set_template(const char *path, int on)
{
	struct img *img = NULL;
	struct imgi_header nh;
	struct stat st;
	int r, r2;

	imgi_clear_error();
	/* A file whose mode has no write bit is written by no tool, root
	 * included (the same answer a user without root gets). */
	if ((r = imgi_vfs->stat(path, &st))) {
		imgi_set_error("%s: %s", path, img_strerror(r));
		return r;
	}
	if (imgi_mode_protected(st.st_mode)) {
		imgi_set_error("%s: is read-only (mode %04o): not written (make it writable to "
			      "change the mark, then read-only again if you like)", path,
			      (unsigned)(st.st_mode & 07777));
		return -EROFS;
	}
	/* Only the header changes: the chain is not needed.  The exclusive
	 * lock refuses while any delta over it (or anyone else) has it open. */
	if ((r = imgi_open_internal(path, IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING | IMG_OPEN_TEMPLATE_,
				   &img)))
		return r;
	if ((r = imgi_check_writable(img, IMG_CHANGE_HEADER, "changing the template mark")))
		goto out;
	pthread_mutex_lock(&img->commit_lock);
	nh = img->hdr;
	if (on)
		nh.ro_compat |= IMG_RO_COMPAT_TEMPLATE;
	else
		nh.ro_compat &= ~IMG_RO_COMPAT_TEMPLATE;
	/* A template is shared by its clones: nobody's own snapshot any
	 * more (FORMAT.md 3.1), also after the mark is cleared. */
	if (on)
		imgi_header_set_owner(&nh, NULL);
	r = nh.ro_compat == img->hdr.ro_compat && nh.incompat == img->hdr.incompat ? 0 :
	    imgi_header_commit(img, &nh);
	pthread_mutex_unlock(&img->commit_lock);
out:
	r2 = img_close(img);
	return r ? r : r2;
}
