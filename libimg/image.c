/* SPDX-License-Identifier: MIT */
/*
 * Image core: create, open (header A/B choice, BAT load through bat.c, log
 * replay through journal.c, validation, allocator rebuild, leak reclaim),
 * close, info, probe; the backing chain's references (resolved in the
 * delta's directory, opened beneath it, the backing-path policy); replacing
 * a file (img_target_claim, _publish, _release: what create and the tools'
 * outputs go through) and the file-mode protection of bases.
 *
 * Invariants kept here (FORMAT.md §3, §6; a header is never written over
 * the copy in force: imgi_header_commit() in journal.c):
 *  - DIRTY is set durably before the first change and cleared on a clean
 *    close after the last commit and checkpoint;
 *  - opening a dirty image for writing punches every free cluster below
 *    the end of the file before anything is allocated (rule 4);
 *  - every field and entry is validated before use; allocations are sized
 *    by validated fields only;
 *  - the header copy in force is the newest well-formed one; one from a
 *    newer writer refuses the image, never falls back (read_headers);
 *  - seq never wraps: no write open at seq >= 2^63 (IMG_SEQ_WRITE_LIMIT).
 * The handle utilities (imgi_fail, imgi_check_writable, imgi_sync, ...) are
 * in util.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "testio.h"

/* ---- create ------------------------------------------------------- */

static int create_header(const struct img_create_opts *o, struct imgi_header *h)
{
	uint64_t cs, vc, want, blocks, bat_bytes;
	unsigned bits = IMG_DEFAULT_CLUSTER_BITS;

	for (unsigned i = 0; i < sizeof(o->reserved) / sizeof(o->reserved[0]); i++)
		if (o->reserved[i])
			return -EINVAL;
	if (o->flags & ~(IMG_CREATE_OVERWRITE | IMG_CREATE_ALLOW_BACKING_PATH))
		return -EINVAL;
	if (o->cluster_size) {
		if (o->cluster_size & (o->cluster_size - 1) || o->cluster_size < IMG_MIN_CLUSTER_SIZE ||
		    o->cluster_size > IMG_MAX_CLUSTER_SIZE) {
			imgi_set_error("cluster size %u is not a power of two from 64 KiB to 64 MiB",
				      o->cluster_size);
			return -EINVAL;
		}
		bits = (unsigned)__builtin_ctz(o->cluster_size);
	}
	cs = 1ull << bits;
	if (o->virtual_size < 512 || o->virtual_size % 512 || o->virtual_size > IMG_MAX_VIRTUAL_SIZE) {
		imgi_set_error("virtual size %llu is not a positive multiple of 512 (at most 2^57)",
			      (unsigned long long)o->virtual_size);
		return -EINVAL;
	}
	vc = (o->virtual_size + cs - 1) / cs;
	want = o->bat_reserve > o->virtual_size ? (o->bat_reserve + cs - 1) / cs : vc;
	if (vc > IMG_MAX_ENTRIES || want > IMG_MAX_ENTRIES) {
		uint64_t size = o->virtual_size > o->bat_reserve ? o->virtual_size : o->bat_reserve;
		uint64_t need = cs;

		/* Suggest a larger cluster only where one would do. */
		while (need < IMG_MAX_CLUSTER_SIZE && (size + need - 1) / need > IMG_MAX_ENTRIES)
			need <<= 1;
		if ((size + need - 1) / need > IMG_MAX_ENTRIES)
			imgi_set_error("virtual size %llu needs more than 2^27 clusters even of the "
				      "largest cluster size (64 MiB): at most %llu bytes",
				      (unsigned long long)size,
				      (unsigned long long)(IMG_MAX_ENTRIES * IMG_MAX_CLUSTER_SIZE));
		else
			imgi_set_error("virtual size %llu needs more than 2^27 clusters of %llu bytes: "
				      "use a cluster size of at least %llu", (unsigned long long)size,
				      (unsigned long long)cs, (unsigned long long)need);
		return -EINVAL;
	}
	blocks = (want + IMG_ENTRIES_PER_BLOCK - 1) / IMG_ENTRIES_PER_BLOCK;
	bat_bytes = blocks * IMG_BLOCK_SIZE;
	memset(h, 0, sizeof(*h));
	h->version = IMG_FORMAT_VERSION;
	h->header_size = IMG_HEADER_SIZE_V1;
	h->cluster_bits = bits;
	h->virtual_size = o->virtual_size;
	h->log_offset = cs;
	h->log_size = cs >= IMG_DEFAULT_LOG_SIZE ? cs : IMG_DEFAULT_LOG_SIZE;
	h->log_seq = 1;
	h->seq = 1;
	h->bat_offset = h->log_offset + h->log_size;
	h->bat_clusters = (bat_bytes + cs - 1) / cs;
	if (getrandom(h->uuid, sizeof(h->uuid), 0) != sizeof(h->uuid)) {
		for (unsigned i = 0; i < sizeof(h->uuid); i++)
			h->uuid[i] = (uint8_t)(rand() ^ (getpid() >> (i % 16)));
	}
	return 0;
}

/* backing: the opened backing image of a new delta, or NULL. */
static int create_on_io(struct img_io *io, const struct img_create_opts *opts,
			struct img *backing, uint64_t compat)
{
	struct imgi_header h;
	struct imgi_geom g;
	uint8_t *slots;
	char why[160];
	int r;

	if ((r = create_header(opts, &h)))
		return r;
	if (backing)
		imgi_header_set_backing(&h, backing->hdr.uuid, opts->backing_file,
				       strlen(opts->backing_file));
	h.compat |= compat;
	if ((r = imgi_header_validate(&h, &g, why, sizeof(why)))) {
		imgi_set_error("%s: %s", io->name, why);
		return r;
	}
	slots = calloc(1, 2 * IMG_HEADER_SLOT);
	if (!slots)
		return -ENOMEM;
	/* Both copies valid: A in force (seq 2), B one older (seq 1). */
	h.seq = 2;
	imgi_header_encode(&h, slots);
	h.seq = 1;
	imgi_header_encode(&h, slots + IMG_HEADER_SLOT);
	/* The file is data_offset bytes long, durably, before a header can
	 * name it (FORMAT.md 2 and 6: a shorter file is truncated). */
	r = io->ops->truncate(io, g.data_offset);
	if (!r)
		r = io->ops->flush(io);
	if (!r)
		r = io->ops->pwrite(io, slots, 2 * IMG_HEADER_SLOT, 0);
	if (!r)
		r = io->ops->flush(io);
	free(slots);
	if (r)
		imgi_set_error("%s: writing the new image: %s", io->name, img_strerror(r));
	return r;
}

static int open_io(struct img_io *io, unsigned flags, struct img **out);

int imgi_create_io_over(struct img_io *io, const struct img_create_opts *opts, struct img *backing)
{
	imgi_clear_error();
	if (!opts->backing_file)
		return -EINVAL;
	return create_on_io(io, opts, backing, 0);
}

int imgi_open_io_over(struct img_io *io, unsigned flags, struct img *backing, struct img **out)
{
	int r = open_io(io, flags | IMG_OPEN_NO_BACKING, out);

	if (r) {
		img_close(backing);
		return r;
	}
	(*out)->flags = flags;
	(*out)->backing = backing;
	(*out)->depth = backing->depth + 1;
	return 0;
}

IMG_API int img_create_io(struct img_io *io, const struct img_create_opts *opts)
{
	imgi_clear_error();
	if (opts->backing_file) {
		imgi_set_error("%s: a backing file needs a path to resolve against: use img_create",
			      io->name);
		return -EINVAL;
	}
	return create_on_io(io, opts, NULL, 0);
}

static int fsync_dir_of(const char *path)
{
	char *copy = strdup(path);
	int r;

	if (!copy)
		return -ENOMEM;
	r = imgi_vfs->sync_dir(dirname(copy));
	free(copy);
	return r;
}

static char *dir_of(const char *path)
{
	char *copy = strdup(path), *d;

	if (!copy)
		return NULL;
	d = strdup(dirname(copy));
	free(copy);
	return d;
}

/* Resolve ref against dir (ref may be absolute when allowed). */
static char *resolve_ref(const char *dir, const char *ref)
{
	char *full;

	if (ref[0] == '/')
		return strdup(ref);
	if (asprintf(&full, "%s/%s", dir, ref) < 0)
		return NULL;
	return full;
}

/* Does ref leave the directory it is resolved in (absolute, or a ".."
 * component)? */
static int ref_leaves_dir(const char *ref)
{
	if (ref[0] == '/')
		return 1;
	for (const char *p = ref; *p; ) {
		size_t k = strcspn(p, "/");
		if (k == 2 && p[0] == '.' && p[1] == '.')
			return 1;
		p += k;
		while (*p == '/')
			p++;
	}
	return 0;
}

int imgi_check_backing_ref(const char *owner, const char *ref, int allow)
{
	size_t n = strlen(ref);

	if (n == 0) {
		imgi_set_error("%s: the backing file reference is empty", owner);
		return -EINVAL;
	}
	if (n > IMG_MAX_BACKING_LEN) {
		imgi_set_error("%s: the backing file reference is %zu bytes long (at most %u)",
			      owner, n, IMG_MAX_BACKING_LEN);
		return -ENAMETOOLONG;
	}
	if (allow || !ref_leaves_dir(ref))
		return 0;
	if (ref[0] == '/')
		imgi_set_error("%s: backing file '%s' is an absolute path: refused (allow its "
			      "directory in LIBIMG_BACKING_DIRS or /etc/libimg/backing-dirs, or any "
			      "path with --allow-backing-path, IMG_OPEN_ALLOW_BACKING_PATH)", owner, ref);
	else
		imgi_set_error("%s: backing file '%s' climbs out of the image's directory "
			      "(a '..' component): refused (allow its directory in "
			      "LIBIMG_BACKING_DIRS or /etc/libimg/backing-dirs, or any path with "
			      "--allow-backing-path, IMG_OPEN_ALLOW_BACKING_PATH)", owner, ref);
	return -EPERM;
}

/* ---- the backing-path policy (FORMAT.md 3.1) ------------------------- */

static pthread_mutex_t policy_lock = PTHREAD_MUTEX_INITIALIZER;
static char **policy_dirs;       /* absolute, as given */
static size_t policy_ndirs;
static unsigned policy_flags;    /* IMG_BACKING_POLICY_* */

IMG_API int img_set_backing_policy(const char *const *dirs, size_t ndirs, unsigned flags)
{
	char **copy = NULL, **old;
	size_t i, oldn;

	imgi_clear_error();
	if (flags & ~IMG_BACKING_POLICY_ANY || (ndirs && !dirs))
		return -EINVAL;
	for (i = 0; i < ndirs; i++)
		if (!dirs[i] || dirs[i][0] != '/') {
			imgi_set_error("%s: an allowed backing directory must be an absolute path",
				      dirs[i] ? dirs[i] : "(null)");
			return -EINVAL;
		}
	if (ndirs && !(copy = calloc(ndirs, sizeof(*copy))))
		return -ENOMEM;
	for (i = 0; i < ndirs; i++)
		if (!(copy[i] = strdup(dirs[i]))) {
			while (i--)
				free(copy[i]);
			free(copy);
			return -ENOMEM;
		}
	pthread_mutex_lock(&policy_lock);
	old = policy_dirs;
	oldn = policy_ndirs;
	policy_dirs = copy;
	policy_ndirs = ndirs;
	policy_flags = flags;
	pthread_mutex_unlock(&policy_lock);
	for (i = 0; i < oldn; i++)
		free(old[i]);
	free(old);
	return 0;
}

/* Is the canonical path real beneath (or) the canonical directory root? */
static const char *beneath(const char *real, const char *root)
{
	size_t n = strlen(root);

	if (n == 1)                         /* "/" */
		return real[1] ? real + 1 : ".";
	if (strncmp(real, root, n) || (real[n] && real[n] != '/'))
		return NULL;
	return real[n] ? real + n + 1 : ".";
}

/* The directory (canonical, malloc'd) beneath which the backing file full
 * (ref as resolved) lies: dir (the referencing image's directory) unless
 * NULL, else an allowed directory.  *real: full without symbolic links.
 * -EPERM with a message when there is none. */
static int backing_root(const char *owner, const char *ref, const char *full, const char *dir,
			char **real, char **root)
{
	int r = -EPERM;

	*root = NULL;
	if (!(*real = realpath(full, NULL))) {
		r = -errno;
		imgi_set_error("%s: %s", full, strerror(-r));
		return r;
	}
	if (dir && (*root = realpath(dir, NULL)) && beneath(*real, *root))
		return 0;
	free(*root);
	*root = NULL;
	pthread_mutex_lock(&policy_lock);
	for (size_t i = 0; i < policy_ndirs && !*root; i++) {
		char *c = realpath(policy_dirs[i], NULL);
		if (c && beneath(*real, c))
			*root = c;
		else
			free(c);
	}
	pthread_mutex_unlock(&policy_lock);
	if (*root)
		return 0;
	imgi_set_error("%s: backing file '%s' is %s, outside %s%s: refused (allow its "
		      "directory in LIBIMG_BACKING_DIRS or /etc/libimg/backing-dirs, or any path "
		      "with --allow-backing-path, IMG_OPEN_ALLOW_BACKING_PATH)", owner, ref, *real,
		      dir ? "the image's directory" : "",
		      dir ? " and the allowed backing directories" : "the allowed backing directories");
	free(*real);
	*real = NULL;
	return r;
}

/* The images of a chain being opened, for the loop check. */
struct chain {
	unsigned n;
	dev_t dev[IMG_MAX_BACKING_DEPTH + 2];
	ino_t ino[IMG_MAX_BACKING_DEPTH + 2];
};

static int open_path(const char *path, unsigned flags, const char *root, const char *rel,
		     struct chain *ch, struct img **out);

/* Opens the backing image that ref names for the image owner, whose
 * directory is dir (FORMAT.md 3.1, "Resolving a reference"): without
 * IMG_OPEN_ALLOW_BACKING_PATH or IMG_BACKING_POLICY_ANY, the file must be
 * a regular file beneath dir (a reference that stays in it) or beneath an
 * allowed directory (img_set_backing_policy), and is opened without
 * leaving that directory through any symbolic link. */
static int open_backing(const char *owner, const char *dir, const char *ref, unsigned flags,
			struct chain *ch, struct img **out)
{
	char *full = NULL, *real = NULL, *root = NULL;
	unsigned any;
	size_t ndirs;
	int r;

	*out = NULL;
	pthread_mutex_lock(&policy_lock);
	any = (policy_flags & IMG_BACKING_POLICY_ANY) || (flags & IMG_OPEN_ALLOW_BACKING_PATH);
	ndirs = policy_ndirs;
	pthread_mutex_unlock(&policy_lock);
	if ((r = imgi_check_backing_ref(owner, ref, any || ndirs)))
		return r;
	if (!(full = resolve_ref(dir, ref)))
		return -ENOMEM;
	if (any || !imgi_vfs->open_beneath)
		r = open_path(full, flags, NULL, NULL, ch, out);
	else if (!(r = backing_root(owner, ref, full, ref_leaves_dir(ref) ? NULL : dir,
				    &real, &root)))
		r = open_path(full, flags, root, beneath(real, root), ch, out);
	free(full);
	free(real);
	free(root);
	return r;
}

/* ---- replacing a file (img_target_*, libimg.h) ------------------------
 * Every path that puts a new file under a name (img_create, the create
 * under a snapshot, and tools that rename a temporary file of their own
 * into place) claims the name first: an existing file there must be a
 * regular file (never followed if a symlink, never waited for if a FIFO)
 * and is locked exclusively, like a writer locks an image, from before
 * anything is written until after the rename.  A served image (exclusive
 * lock) and the base of an open delta (shared lock) are refused: -EBUSY,
 * naming the holder, nothing changed. */

struct img_target {
	char *path;
	int fd;          /* the file there, locked (posix vfs); -1 */
	int existed;     /* a file was there when claimed */
	dev_t dev;       /* ... this one */
	ino_t ino;
};

static void describe_holder(pid_t pid, char *buf, size_t len);

/* A file no tool replaces (FORMAT.md 3.2): one whose mode has no write bit
 * (a snapshot, a base made read-only) or an image marked as a template.
 * Returns -EROFS with the message set, or 0. */
static int target_protected(const char *path, const struct stat *st)
{
	struct imgi_header h;

	if (imgi_mode_protected(st->st_mode)) {
		imgi_set_error("%s: read-only (mode %04o): a protected image is not replaced (make "
			      "it writable first if you mean to replace it)", path,
			      (unsigned)(st->st_mode & 07777));
		return -EROFS;
	}
	/* the header in force is enough: no lock, no BAT, no chain */
	if (imgi_read_header(path, &h)) {
		imgi_clear_error();   /* not an image we can read: nothing to protect */
		return 0;
	}
	if (!(h.ro_compat & IMG_RO_COMPAT_TEMPLATE))
		return 0;
	imgi_set_error("%s: a template (a shared base of clones): not replaced (imgsnap template "
		      "--clear %s first if you mean to replace it)", path, path);
	return -EROFS;
}

IMG_API int img_target_claim(const char *path, unsigned flags, struct img_target **out)
{
	struct img_target *t = NULL;
	struct stat st;
	pid_t holder = 0;
	int fd = -1, r;

	imgi_clear_error();
	*out = NULL;
	if (flags & ~IMG_CREATE_OVERWRITE) {
		imgi_set_error("%s: unknown flags 0x%x", path, flags & ~IMG_CREATE_OVERWRITE);
		return -EINVAL;
	}
	r = imgi_vfs->claim ? imgi_vfs->claim(path, &st, &fd, &holder) : imgi_vfs->stat(path, &st);
	if (r == -EBUSY) {
		char who[128];
		describe_holder(holder, who, sizeof(who));
		imgi_set_error("%s: in use: locked by %s: not replaced", path, who);
		return r;
	}
	if (r && r != -ENOENT) {
		imgi_set_error("%s: %s", path, strerror(-r));
		return r;
	}
	if (!r && !(flags & IMG_CREATE_OVERWRITE)) {
		imgi_set_error("%s: already exists", path);
		r = -EEXIST;
	} else if (!r && !S_ISREG(st.st_mode)) {
		imgi_set_error("%s: exists and is %s, not a regular file: refused", path,
			      imgi_file_kind(st.st_mode));
		r = -EINVAL;
	} else if (!r && (r = target_protected(path, &st))) {
		;
	} else if (!(t = calloc(1, sizeof(*t))) || !(t->path = strdup(path))) {
		r = -ENOMEM;
	} else {
		t->existed = !r;
		t->fd = fd;
		t->dev = t->existed ? st.st_dev : 0;
		t->ino = t->existed ? st.st_ino : 0;
		fd = -1;
		*out = t;
		t = NULL;
		r = 0;
	}
	if (fd >= 0)
		close(fd);
	if (t)
		free(t->path);
	free(t);
	return r;
}

IMG_API int img_target_publish(struct img_target *t, const char *tmp)
{
	struct stat st;
	int r;

	imgi_clear_error();
	/* the name still holds the file we locked (a rename by another
	 * process in between would put an unlocked one there) */
	if (t->fd >= 0 && (lstat(t->path, &st) < 0 || st.st_dev != t->dev || st.st_ino != t->ino)) {
		imgi_set_error("%s: replaced or removed by another process since it was locked: "
			      "not replaced", t->path);
		return -EBUSY;
	}
	/* nothing was there: nothing may be replaced */
	r = imgi_vfs->rename(tmp, t->path, !t->existed);
	if (r) {
		imgi_set_error("%s: %s", t->path, r == -EEXIST ?
			      "already exists (made by another process meanwhile)" : strerror(-r));
		return r;
	}
	if ((r = fsync_dir_of(t->path)))
		imgi_set_error("%s: syncing its directory: %s", t->path, strerror(-r));
	return r;
}

IMG_API void img_target_release(struct img_target *t)
{
	if (!t)
		return;
	if (t->fd >= 0)
		close(t->fd);
	free(t->path);
	free(t);
}

/* 1 when a and b name the same directory entry (the same directory once
 * resolved, the same last component). */
static int same_entry(const char *a, const char *b)
{
	char *da, *db, *ra = NULL, *rb = NULL, *ca = strdup(a), *cb = strdup(b);
	int same = !strcmp(a, b);

	da = dir_of(a);
	db = dir_of(b);
	if (!same && da && db && ca && cb && (ra = realpath(da, NULL)) && (rb = realpath(db, NULL)))
		same = !strcmp(ra, rb) && !strcmp(basename(ca), basename(cb));
	free(da);
	free(db);
	free(ra);
	free(rb);
	free(ca);
	free(cb);
	return same;
}

static int create_claimed(const struct img_create_opts *opts, struct img *backing, mode_t mode,
			  uint64_t compat, struct img_target *t);

IMG_API int img_create(const char *path, const struct img_create_opts *opts)
{
	struct img *backing = NULL;
	struct img_target *t = NULL;
	struct img_create_opts o = *opts;
	char *full = NULL;
	int r;

	imgi_clear_error();
	if ((r = img_target_claim(path, opts->flags & IMG_CREATE_OVERWRITE, &t)))
		return r;
	if (opts->backing_file) {
		char *dir = dir_of(path);
		struct chain ch = { 0 };
		struct stat bst;
		if (!dir || !(full = resolve_ref(dir, opts->backing_file))) {
			free(dir);
			r = -ENOMEM;
			goto out;
		}
		/* a delta over itself: the file would be gone once replaced */
		if (same_entry(full, path) ||
		    (t->existed && imgi_vfs->stat(full, &bst) == 0 && bst.st_dev == t->dev &&
		     bst.st_ino == t->ino)) {
			imgi_set_error("%s: the backing file '%s' is this file itself: refused", path,
				      opts->backing_file);
			free(dir);
			r = -EINVAL;
			goto out;
		}
		/* The new image will be one more level above the chain, and
		 * the file it replaces may not be anywhere in it. */
		if (t->existed) {
			ch.dev[0] = t->dev;
			ch.ino[0] = t->ino;
		}
		ch.n = 1;
		r = open_backing(path, dir, opts->backing_file,
				 opts->flags & IMG_CREATE_ALLOW_BACKING_PATH ?
				 IMG_OPEN_ALLOW_BACKING_PATH : 0, &ch, &backing);
		free(dir);
		if (r) {
			char m[512];
			snprintf(m, sizeof(m), "%s", img_last_error());
			if (strncmp(m, path, strlen(path)))
				imgi_set_error("%s: backing file %s: %s", path, opts->backing_file, m);
			goto out;
		}
	}
	r = create_claimed(&o, backing, 0, 0, t);
out:
	if (backing)
		img_close(backing);
	img_target_release(t);
	free(full);
	return r;
}

int imgi_create_over(const char *path, const struct img_create_opts *opts, struct img *backing)
{
	return imgi_create_over_mode(path, opts, backing, 0);
}

int imgi_create_over_mode(const char *path, const struct img_create_opts *opts,
			 struct img *backing, mode_t mode)
{
	return imgi_create_over_ext(path, opts, backing, mode, 0);
}

int imgi_create_over_ext(const char *path, const struct img_create_opts *opts,
			struct img *backing, mode_t mode, uint64_t compat)
{
	struct img_target *t;
	int r = img_target_claim(path, opts->flags & IMG_CREATE_OVERWRITE, &t);

	if (r)
		return r;
	r = create_claimed(opts, backing, mode, compat, t);
	img_target_release(t);
	return r;
}

/* Writes the new image beside t's path and renames it into place. */
static int create_claimed(const struct img_create_opts *opts, struct img *backing, mode_t mode,
			  uint64_t compat, struct img_target *t)
{
	const char *path = t->path;
	char *tmp = NULL, *copy = NULL;
	struct img_io *io = NULL, *fio;
	struct img_create_opts o = *opts;
	int r;

	if (backing && !o.virtual_size)
		o.virtual_size = backing->vsize;
	opts = &o;
	copy = strdup(path);
	if (!copy || asprintf(&tmp, "%s/.%s.XXXXXX", dirname(copy), basename((char *)path)) < 0) {
		free(copy);
		return -ENOMEM;
	}
	if (!mode) {
		/* a new image gets 0666 & ~umask like any file created with
		 * open(2) */
		mode_t um = umask(0);
		umask(um);
		mode = 0666 & ~um;
	}
	if ((r = imgi_vfs->mktemp(tmp, mode))) {
		imgi_set_error("%s: cannot create a file in its directory: %s", path, strerror(-r));
		goto out;
	}
	if ((r = imgi_vfs->open(tmp, 0, &io)))
		goto out_unlink;
	/* a test's wrapper, if one is set (testio.h imgi_io_wrap_set) */
	if ((r = imgi_io_wrap(io, &fio))) {
		io->ops->close(io);
		goto out_unlink;
	}
	io = fio;
	r = create_on_io(io, opts, backing, compat);
	io->ops->close(io);
	if (r) {
		/* name the real target, not the temporary file */
		const char *m = img_last_error();
		size_t tl = strlen(tmp);
		char buf[400];
		if (!strncmp(m, tmp, tl) && m[tl] == ':' && m[tl + 1] == ' ')
			m += tl + 2;
		snprintf(buf, sizeof(buf), "%s", m);
		imgi_set_error("%s: %s", path, buf);
		goto out_unlink;
	}
	/* (after a rename whose directory sync failed, tmp is gone) */
	if ((r = img_target_publish(t, tmp)))
		goto out_unlink;
	goto out;
out_unlink:
	imgi_vfs->unlink(tmp);
out:
	free(tmp);
	free(copy);
	return r;
}

/* ---- open --------------------------------------------------------- */

char *imgi_resolve_ref(struct img *img, const char *ref)
{
	return img->dir ? resolve_ref(img->dir, ref) : NULL;
}

IMG_API int img_probe(const char *path)
{
	uint8_t a[8], b[8];
	/* O_NONBLOCK: a FIFO must not block the open */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY), r = 0;
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0) {
		r = -errno;
		imgi_set_error("%s: %s", path, strerror(-r));
		if (fd >= 0)
			close(fd);
		return r;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		/* a block device is read (a raw source for imgconvert);
		 * img_open refuses it */
		imgi_set_error("%s: not a regular file: %s", path, imgi_file_kind(st.st_mode));
		close(fd);
		return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	}
	if (pread(fd, a, 8, 0) == 8 && !memcmp(a, imgi_header_magic, 8))
		r = 1;
	else if (pread(fd, b, 8, IMG_HEADER_SLOT) == 8 && !memcmp(b, imgi_header_magic, 8))
		r = 1;
	close(fd);
	return r;
}

static void describe_holder(pid_t pid, char *buf, size_t len)
{
	char path[64], comm[64] = "";
	FILE *f;

	imgi_set_holder(pid);   /* every -EBUSY naming a holder passes here */
	if (!pid) {
		snprintf(buf, len, "another process");
		return;
	}
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	if ((f = fopen(path, "re"))) {
		if (fgets(comm, sizeof(comm), f))
			comm[strcspn(comm, "\n")] = 0;
		fclose(f);
	}
	if (comm[0])
		snprintf(buf, len, "process %d (%s)", (int)pid, comm);
	else
		snprintf(buf, len, "process %d", (int)pid);
}

/* FORMAT.md 3, "Choosing a copy", over the two slots decoded into h[]
 * (r[]: what imgi_header_decode returned): the well-formed copy (magic,
 * size, crc) with the highest seq is in force, also when it comes from a
 * newer writer (r == -EOPNOTSUPP): then the image is refused, never read
 * (or overwritten) through the older copy.  0 and *use, or -EMEDIUMTYPE
 * (no magic), -EUCLEAN (no copy well-formed and valid, or two different
 * ones with one seq), -EOPNOTSUPP (the newest is from a newer writer). */
static int choose_header(const uint8_t *slots, const struct imgi_header h[2], const int r[2],
			 int *use)
{
	int ok0 = !r[0] || r[0] == -EOPNOTSUPP, ok1 = !r[1] || r[1] == -EOPNOTSUPP;

	if (!ok0 && !ok1)
		return memcmp(slots, imgi_header_magic, 8) &&
		       memcmp(slots + IMG_HEADER_SLOT, imgi_header_magic, 8) ? -EMEDIUMTYPE : -EUCLEAN;
	if (ok0 && ok1 && h[0].seq == h[1].seq) {
		if (memcmp(slots, slots + IMG_HEADER_SLOT, IMG_HEADER_SLOT))
			return -EUCLEAN;
		*use = 0;
	} else {
		*use = !ok0 || (ok1 && h[1].seq > h[0].seq);
	}
	return r[*use] ? -EOPNOTSUPP : 0;
}

static int read_headers(struct img *img)
{
	uint8_t *slots = malloc(2 * IMG_HEADER_SLOT);
	struct imgi_header h[2];
	char why[2][160];
	int r[2], use = 0, ret = 0;

	if (!slots)
		return -ENOMEM;
	ret = img->io->ops->pread(img->io, slots, 2 * IMG_HEADER_SLOT, 0);
	if (ret) {
		free(slots);
		return imgi_fail(img, ret, "reading the header");
	}
	for (int i = 0; i < 2; i++)
		r[i] = imgi_header_decode(slots + i * IMG_HEADER_SLOT, &h[i], why[i], sizeof(why[i]));
	ret = choose_header(slots, h, r, &use);
	free(slots);
	/* FORMAT.md 3: both copies carry the image's uuid, which no writer
	 * changes; an older copy with another one came from another image
	 * (a damaged copy: ignored, reported, rewritten by the next write). */
	if (!ret && !r[1 - use] && memcmp(h[0].uuid, h[1].uuid, 16)) {
		r[1 - use] = -EUCLEAN;
		snprintf(why[1 - use], sizeof(why[1 - use]), "its uuid differs from header %c's",
			 use ? 'B' : 'A');
	}
	if (ret == -EMEDIUMTYPE)
		return imgi_fail(img, ret, "not a libimg image");
	if (ret == -EUCLEAN && (r[0] && r[0] != -EOPNOTSUPP) && (r[1] && r[1] != -EOPNOTSUPP))
		return imgi_fail(img, ret, "no valid header (A: %s; B: %s)", why[0], why[1]);
	if (ret == -EUCLEAN)
		return imgi_fail(img, ret, "headers A and B differ with the same sequence number");
	if (ret)
		return imgi_fail(img, ret, "header %c (sequence number %llu, the newest): %s",
				use ? 'B' : 'A', (unsigned long long)h[use].seq, why[use]);
	if (r[1 - use])
		imgi_problem_add(img, P_HEADER_COPY, (uint64_t)(1 - use), 0,
				"header %c is invalid (%s); header %c is in use",
				use ? 'A' : 'B', why[1 - use], use ? 'B' : 'A');
	img->hdr = h[use];
	img->hdr_slot = use;
	imgi_geom_compute(&img->hdr, &img->g);
	return 0;
}

int imgi_read_header(const char *path, struct imgi_header *out)
{
	uint8_t *slots = malloc(2 * IMG_HEADER_SLOT);
	struct imgi_header h[2];
	struct img_io *io = NULL;
	char why[2][160];
	int r[2], use = 0, ret;

	if (!slots)
		return -ENOMEM;
	if ((ret = imgi_vfs->open(path, IMG_IO_RDONLY, &io))) {
		imgi_set_error("%s: %s", path, img_strerror(ret));
		goto out;
	}
	ret = io->ops->pread(io, slots, 2 * IMG_HEADER_SLOT, 0);
	io->ops->close(io);
	if (ret) {
		imgi_set_error("%s: reading the header: %s", path, img_strerror(ret));
		goto out;
	}
	for (int i = 0; i < 2; i++)
		r[i] = imgi_header_decode(slots + i * IMG_HEADER_SLOT, &h[i], why[i], sizeof(why[i]));
	if ((ret = choose_header(slots, h, r, &use)))
		imgi_set_error("%s: %s", path, ret == -EMEDIUMTYPE ? "not a libimg image" :
			      ret == -EOPNOTSUPP ? why[use] : "no valid header");
	else
		*out = h[use];
out:
	free(slots);
	return ret;
}

int imgi_mode_protected(mode_t mode)
{
	return !(mode & 0222);
}

IMG_API int img_file_readonly(const char *path)
{
	struct stat st;
	int r = imgi_vfs->stat(path, &st);

	return r ? r : imgi_mode_protected(st.st_mode);
}

/* Compressed entry of virtual cluster a sorts before b's: by first
 * sector, then by virtual cluster. */
static int centry_less(const struct img *img, uint32_t a, uint32_t b)
{
	uint64_t sa = IMG_C_SECTOR(img->bat[a]), sb = IMG_C_SECTOR(img->bat[b]);
	return sa < sb || (sa == sb && a < b);
}

/* Heapsort of n virtual cluster numbers by centry_less: in place, no
 * memory (qsort may allocate a copy of the array). */
static void centry_sort(const struct img *img, uint32_t *x, uint64_t n)
{
	for (uint64_t i = n / 2; i-- > 0; ) {              /* build the heap */
		for (uint64_t r = i, c; (c = 2 * r + 1) < n; r = c) {
			if (c + 1 < n && centry_less(img, x[c], x[c + 1]))
				c++;
			if (!centry_less(img, x[r], x[c]))
				break;
			uint32_t t = x[r]; x[r] = x[c]; x[c] = t;
		}
	}
	for (uint64_t end = n; end > 1; ) {              /* pop the largest */
		uint32_t t = x[0]; x[0] = x[--end]; x[end] = t;
		for (uint64_t r = 0, c; (c = 2 * r + 1) < end; r = c) {
			if (c + 1 < end && centry_less(img, x[c], x[c + 1]))
				c++;
			if (!centry_less(img, x[r], x[c]))
				break;
			t = x[r]; x[r] = x[c]; x[c] = t;
		}
	}
}

#define CENTRY_DUP 0x80000000u    /* in idx: a duplicate, not counted */

/* Compressed entries (FORMAT.md 4.2), after the allocated ones are known:
 * bounds, no host cluster shared with an allocated entry, no shared
 * sectors.  Counts them into cref.
 *
 * Memory (FORMAT.md 2): the counts (cref_init) follow the host clusters
 * that hold payloads; while this runs, 4 bytes per compressed entry more
 * (idx), and either 4 per host cluster between the first and the last
 * holding a payload when they are no more than the entries (a counting
 * sort), or 4 per entry (a radix sort by host cluster, 16 bits a pass, and
 * 256 KiB).  Either way the entries end
 * up grouped by host cluster in host order (a payload never crosses a host
 * cluster, so only payloads of one cluster can share a sector), each group
 * sorted by sector. */
static int validate_compressed(struct img *img, uint64_t file_size, uint64_t count)
{
	const struct imgi_geom *g = &img->g;
	int check = img->flags & IMG_OPEN_CHECK, r = 0;
	uint64_t k = 0, min_h = UINT64_MAX, max_h = 0, pos = 0, span, hosts = 0, lo = 0, hi = 0;
	uint32_t *idx = NULL, *bk;
	char buf[200];

	if (!count)
		return 0;
	/* 1. bounds; the last host cluster that holds a payload */
	for (uint64_t v = 0; v < g->vclusters && k < count; v++) {
		uint64_t e = img->bat[v], sct, n, h, hl;
		enum imgi_problem_kind kind = P_BAD_ENTRY;
		const char *bad = NULL;
		if (IMG_E_STATE(e) != IMG_E_COMP)
			continue;
		k++;
		sct = IMG_C_SECTOR(e);
		n = IMG_C_COUNT(e);
		h = (sct * 512) >> g->cluster_bits;
		hl = ((sct + n) * 512 - 1) >> g->cluster_bits;
		if (!(img->hdr.incompat & IMG_INCOMPAT_COMPRESSED))
			bad = "is compressed but the image lacks the compressed feature";
		else if (n * 512 >= g->cluster_size)
			bad = "is a compressed payload no smaller than a cluster";
		else if (h != hl)
			bad = "is a compressed payload crossing a host cluster boundary";
		else if (h < g->data_cluster0)
			bad = "is a compressed payload inside the metadata";
		else if (h >= IMG_MAX_HOST_CLUSTER)
			bad = "is a compressed payload past the 2^32 cluster cap";
		else if ((sct + n) * 512 > file_size) {   /* writers write all n sectors */
			bad = "is a compressed payload past the end of the file";
			kind = P_PAST_EOF;
		}
		if (bad) {
			snprintf(buf, sizeof(buf), "BAT entry %llu (0x%016llx) %s", (unsigned long long)v,
				 (unsigned long long)e, bad);
			if (!check)
				return imgi_fail(img, -EUCLEAN, "%s", buf);
			imgi_problem_add(img, kind, v, h, "%s", buf);
			img->bat[v] = 0;
			img->ncomp--;
			continue;
		}
		if (h > max_h)
			max_h = h;
		if (h < min_h)
			min_h = h;
	}
	if (!img->ncomp)
		return 0;
	count = img->ncomp;
	/* 2. group by host cluster */
	if (!(idx = malloc(count * sizeof(*idx))))
		return -ENOMEM;
	span = max_h - min_h + 1;
	if (span <= count) {
		/* counting sort: counts, then bucket ends, then fill backwards */
		if (!(bk = calloc(span, sizeof(*bk)))) {
			r = -ENOMEM;
			goto out;
		}
		for (uint64_t v = 0, n = 0; v < g->vclusters && n < count; v++)
			if (IMG_E_STATE(img->bat[v]) == IMG_E_COMP) {
				bk[COMP_HOST(img, img->bat[v]) - min_h]++;
				n++;
			}
		for (uint64_t h = 0; h < span; h++) {
			pos += bk[h];
			bk[h] = (uint32_t)pos;
		}
		for (uint64_t v = g->vclusters, n = 0; v-- > 0 && n < count; )
			if (IMG_E_STATE(img->bat[v]) == IMG_E_COMP) {
				idx[--bk[COMP_HOST(img, img->bat[v]) - min_h]] = (uint32_t)v;
				n++;
			}
		free(bk);
	} else {
		/* radix sort by host cluster, 16 bits a pass (stable) */
		uint32_t *b, *t;
		if (!(b = malloc(count * sizeof(*b))) || !(bk = malloc((1u << 16) * sizeof(*bk)))) {
			free(b);
			r = -ENOMEM;
			goto out;
		}
		for (uint64_t v = 0, n = 0; v < g->vclusters && n < count; v++)
			if (IMG_E_STATE(img->bat[v]) == IMG_E_COMP)
				idx[n++] = (uint32_t)v;
		for (unsigned sh = 0; sh < 32 && (span - 1) >> sh; sh += 16) {
			memset(bk, 0, (1u << 16) * sizeof(*bk));
			for (uint64_t i = 0; i < count; i++)
				bk[((COMP_HOST(img, img->bat[idx[i]]) - min_h) >> sh) & 0xffff]++;
			pos = 0;
			for (unsigned d = 0; d < (1u << 16); d++) {
				uint64_t c = bk[d];
				bk[d] = (uint32_t)pos;   /* start of digit d */
				pos += c;
			}
			for (uint64_t i = 0; i < count; i++)
				b[bk[((COMP_HOST(img, img->bat[idx[i]]) - min_h) >> sh) & 0xffff]++] = idx[i];
			t = idx; idx = b; b = t;
		}
		free(b);
		free(bk);
	}
	/* 3. per host cluster: sorted by sector, overlaps and clusters an
	 *    allocated entry maps are duplicates */
	for (uint64_t b0 = 0, b1; b0 < count; b0 = b1) {
		uint64_t h = COMP_HOST(img, img->bat[idx[b0]]), end = 0;
		int in_alloc = alloc_test(img, h), kept = 0;
		for (b1 = b0 + 1; b1 < count && COMP_HOST(img, img->bat[idx[b1]]) == h; b1++)
			;
		centry_sort(img, idx + b0, b1 - b0);
		for (uint64_t i = b0; i < b1; i++) {
			uint64_t v = idx[i], e = img->bat[v], sct = IMG_C_SECTOR(e);
			if (!in_alloc && sct >= end) {
				end = sct + IMG_C_COUNT(e);
				kept = 1;
				continue;
			}
			snprintf(buf, sizeof(buf), "BAT entry %llu: compressed payload at sector %llu %s",
				 (unsigned long long)v, (unsigned long long)sct,
				 in_alloc ? "lies in a host cluster an allocated entry maps"
					  : "overlaps another compressed payload");
			if (!check) {
				r = imgi_fail(img, -EUCLEAN, "%s", buf);
				goto out;
			}
			imgi_problem_add(img, P_DUPLICATE, v, h, "%s", buf);
			idx[i] |= CENTRY_DUP;
		}
		if (kept) {
			if (!hosts++)
				lo = h;
			hi = h;
		}
	}
	/* 4. the counts of the entries kept; their clusters are used */
	r = cref_init(img, lo, hi, hosts);
	for (uint64_t i = 0; i < count && !r; i++)
		if (!(idx[i] & CENTRY_DUP))
			r = comp_ref(img, img->bat[idx[i]]);
out:
	free(idx);
	return r;
}

/* Validate every entry, build the allocator.  In check mode bad entries are
 * cleared in memory and recorded; otherwise the first one fails the open. */
static int validate_bat(struct img *img, uint64_t file_size)
{
	const struct imgi_geom *g = &img->g;
	uint64_t file_clusters = (file_size + g->cluster_size - 1) >> g->cluster_bits;
	int check = img->flags & IMG_OPEN_CHECK, r;
	uint64_t fast_lo, fast_hi;

	/* Sized by the entries, not the file (alloc.c): a mapping past it
	 * grows it. */
	if ((r = alloc_init(img, alloc_initial_bits(img, file_clusters))))
		return r;
	for (uint64_t h = 0; h < g->data_cluster0; h++)
		if ((r = alloc_mark(img, h)))
			return r;
	/* The common entry, allocated and mapping a host cluster inside the
	 * file and outside the metadata, is checked in a tight loop: it is
	 * most of the open time of a large full image.  Every other entry
	 * (and a duplicate) goes through the full checks below. */
	fast_lo = g->data_cluster0;
	fast_hi = file_clusters;     /* HOST_OFF(h) < file_size */
	if (fast_hi > IMG_MAX_HOST_CLUSTER)
		fast_hi = IMG_MAX_HOST_CLUSTER;
	for (uint64_t v = 0; v < img->bat_alloc; v++) {
		uint64_t e, h, blk = v / IMG_ENTRIES_PER_BLOCK;
		unsigned s;
		enum imgi_problem_kind kind = P_BAD_ENTRY;
		const char *bad = NULL;
		char buf[160];

		/* Blocks nothing was loaded into are zeros nobody touched:
		 * reading them would cost memory (a sparse 64 TiB BAT). */
		if (img->blk_seen && !(img->blk_seen[blk / 64] >> (blk % 64) & 1)) {
			v = (blk + 1) * IMG_ENTRIES_PER_BLOCK - 1;
			continue;
		}
		if (v < g->vclusters) {
			/* to the end of this block or of the live entries */
			uint64_t end = (blk + 1) * IMG_ENTRIES_PER_BLOCK, n;
			if (end > g->vclusters)
				end = g->vclusters;
			v += alloc_mark_entries(img, img->bat + v, end - v, fast_lo, fast_hi, &n);
			img->nalloc += n;
			if (v == end) {
				v--;
				continue;
			}
		}
		e = img->bat[v];
		h = IMG_E_PAYLOAD(e);
		s = IMG_E_STATE(e);
		if (!e)
			continue;
		if (v >= g->vclusters) {
			snprintf(buf, sizeof(buf), "BAT entry %llu past the virtual size is not empty",
				 (unsigned long long)v);
			if (!check)
				return imgi_fail(img, -EUCLEAN, "%s", buf);
			imgi_problem_add(img, P_PAST_VSIZE, v, 0, "%s", buf);
			img->bat[v] = 0;
			continue;
		}
		if (s == IMG_E_ZERO && !h) {
			img->nzero++;
			continue;
		}
		if (s == IMG_E_COMP) {   /* checked below, once the rest is known */
			img->ncomp++;
			continue;
		}
		if (s == IMG_E_ALLOC) {
			if (h < g->data_cluster0)
				bad = "maps a cluster inside the metadata";
			else if (h >= IMG_MAX_HOST_CLUSTER)
				bad = "maps a host cluster past the 2^32 cap";
			else if (HOST_OFF(img, h) >= file_size) {
				bad = "maps a cluster past the end of the file";
				kind = P_PAST_EOF;
			}
			else if (alloc_test(img, h)) {
				snprintf(buf, sizeof(buf), "BAT entry %llu maps host cluster %llu, which another entry maps",
					 (unsigned long long)v, (unsigned long long)h);
				if (!check)
					return imgi_fail(img, -EUCLEAN, "%s", buf);
				imgi_problem_add(img, P_DUPLICATE, v, h, "%s", buf);
				img->nalloc++;
				continue;
			} else {
				if ((r = alloc_mark(img, h)))
					return r;
				img->nalloc++;
				continue;
			}
		} else {
			bad = s == IMG_E_ZERO || s == IMG_E_UNALLOC ? "has a non-zero payload"
								 : "has an unknown state";
		}
		snprintf(buf, sizeof(buf), "BAT entry %llu (0x%016llx) %s", (unsigned long long)v,
			 (unsigned long long)e, bad);
		if (!check)
			return imgi_fail(img, -EUCLEAN, "%s", buf);
		imgi_problem_add(img, kind, v, h, "%s", buf);
		img->bat[v] = 0;
	}
	return validate_compressed(img, file_size, img->ncomp);
}

/* One punch per run of free clusters (the run past the last mapped
 * cluster, however long, is one): the cost follows the mappings, not the
 * file's length. */
int imgi_reclaim_free(struct img *img)
{
	uint64_t end = (imgi_file_size(img) + img->g.cluster_size - 1) >> img->g.cluster_bits;
	int r = 0;

	for (uint64_t h = alloc_next_free(img, img->g.data_cluster0, end); h < end && !r; ) {
		uint64_t k = alloc_next_used(img, h, end);
		uint64_t len = (k - h) * img->g.cluster_size;
		if (k < end) {
			r = imgi_zero_host(img, HOST_OFF(img, h), len);
		} else {
			/* The tail: on a host that cannot punch, writing zeros
			 * would cost its length (a sparse terabyte); nothing maps
			 * it, so it is cut instead. */
			r = __atomic_load_n(&img->can_punch, __ATOMIC_RELAXED) ?
				img->io->ops->punch(img->io, HOST_OFF(img, h), len) : -EOPNOTSUPP;
			if (r == -EOPNOTSUPP) {
				__atomic_store_n(&img->can_punch, 0, __ATOMIC_RELAXED);
				r = img->io->ops->truncate(img->io, HOST_OFF(img, h));
			}
		}
		h = alloc_next_free(img, k, end);
	}
	if (r)
		imgi_fail(img, r, "reclaiming free clusters");
	return r;
}

static uint64_t count_free_below_eof(struct img *img, uint64_t file_size)
{
	uint64_t end = (file_size + img->g.cluster_size - 1) >> img->g.cluster_bits;
	return alloc_count_free(img, img->g.data_cluster0, end);
}

static void imgi_free(struct img *img)
{
	if (!img)
		return;
	if (img->io)
		img->io->ops->close(img->io);
	if (img->backing)
		img_close(img->backing);
	free(img->dir);
	cref_free(img);
	pthread_rwlock_destroy(&img->map_lock);
	pthread_mutex_destroy(&img->meta_lock);
	pthread_mutex_destroy(&img->commit_lock);
	bat_free_array(img);
	free(img->dirty);
	free(img->used);
	free(img->pending);
	free(img->logbuf);
	free(img->bad_map);
	free(img->blk_seen);
	free(img->spare_logged);
	free(img->problems);
	free(img->name);
	free(img);
}

#define OPEN_FLAGS (IMG_OPEN_RDWR | IMG_OPEN_NOLOCK | IMG_OPEN_CHECK | \
		    IMG_OPEN_ALLOW_BACKING_PATH | IMG_OPEN_NO_BACKING | IMG_OPEN_SCRATCH | \
		    IMG_OPEN_TEMPLATE_)
/* open_path to open_io: a delta opened read-write with its chain is made
 * writable (open_writable) only once its chain is open, so that a refused
 * chain leaves the file unchanged. */
#define OPEN_DEFER_WRITABLE 0x80000000u

static int open_writable(struct img *img, unsigned flags);

static int open_io(struct img_io *io, unsigned flags, struct img **out)
{
	struct img *img;
	pthread_rwlockattr_t ra;
	uint64_t file_size, nblocks;
	int r, rw = flags & IMG_OPEN_RDWR;

	imgi_clear_error();
	*out = NULL;
	if (flags & ~(OPEN_FLAGS | OPEN_DEFER_WRITABLE)) {
		io->ops->close(io);
		return -EINVAL;
	}
	img = calloc(1, sizeof(*img));
	if (!img) {
		io->ops->close(io);
		return -ENOMEM;
	}
	img->io = io;
	img->flags = flags;
	img->rdonly = !rw;
	img->can_punch = 1;
	img->name = strdup(io->name ? io->name : "(image)");
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&img->map_lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	pthread_mutex_init(&img->meta_lock, NULL);
	pthread_mutex_init(&img->commit_lock, NULL);
	if (!img->name) {
		r = -ENOMEM;
		goto fail;
	}
	if ((flags & IMG_OPEN_SCRATCH) && !rw) {
		r = imgi_fail(img, -EINVAL, "a scratch open must be read-write");
		goto fail;
	}
	if ((flags & IMG_OPEN_NOLOCK) && rw) {
		r = imgi_fail(img, -EINVAL, "opening without a lock is allowed read-only only");
		goto fail;
	}
	if (io->ops->lock && !(flags & IMG_OPEN_NOLOCK)) {
		pid_t holder = 0;
		r = io->ops->lock(io, rw, &holder);
		if (r == -EBUSY) {
			char who[128];
			describe_holder(holder, who, sizeof(who));
			imgi_set_error("%s: in use: locked %s by %s", img->name,
				      rw ? "against writers" : "for writing", who);
			goto fail;
		}
		if (r) {
			imgi_fail(img, r, "locking");
			goto fail;
		}
	}
	if ((r = io->ops->size(io, &file_size))) {
		imgi_fail(img, r, "reading the file size");
		goto fail;
	}
	if (file_size > IMG_MAX_FILE_SIZE) {
		r = imgi_fail(img, -EUCLEAN, "file size %llu exceeds 2^62", (unsigned long long)file_size);
		goto fail;
	}
	if ((r = read_headers(img)))
		goto fail;
	/* FORMAT.md 2: every writer sizes the file to data_offset before the
	 * header that names it can be read, so a shorter file lost its tail
	 * (truncated or copied short): its BAT or log read as zeros would
	 * show an empty disk. */
	if (file_size < img->g.data_offset) {
		r = imgi_fail(img, -EUCLEAN, "truncated: the file is %llu bytes, shorter than its "
			     "metadata area (header, log and BAT: %llu bytes)",
			     (unsigned long long)file_size, (unsigned long long)img->g.data_offset);
		goto fail;
	}
	if (rw && (img->hdr.ro_compat & ~IMG_RO_COMPAT_KNOWN)) {
		r = imgi_fail(img, -EROFS, "read-only compatible features 0x%llx unknown: opening for writing refused",
			     (unsigned long long)img->hdr.ro_compat);
		goto fail;
	}
	if (rw && img->hdr.seq >= IMG_SEQ_WRITE_LIMIT) {
		r = imgi_fail(img, -EROFS, "header sequence number %llu is at the end of its range "
			     "(2^63 or more): opening for writing refused; the image can be read "
			     "(copy it to a new image with imgconvert)",
			     (unsigned long long)img->hdr.seq);
		goto fail;
	}
	/* A template (FORMAT.md 3.2) is never opened for writing, but by
	 * img_set_template to set or clear the flag itself. */
	if (rw && (img->hdr.ro_compat & IMG_RO_COMPAT_TEMPLATE) && !(flags & IMG_OPEN_TEMPLATE_)) {
		r = imgi_fail(img, -EROFS, "is a template (a shared base of clones): opening for "
			     "writing refused (imgsnap template --clear undoes the mark)");
		goto fail;
	}
	img->was_dirty = !!(img->hdr.flags & IMG_FLAG_DIRTY);
	img->vsize = img->hdr.virtual_size;
	img->delta = !!(img->hdr.incompat & IMG_INCOMPAT_BACKING);

	/* The BAT: load the live blocks, then let the log override them. */
	nblocks = img->g.used_blocks;
	if ((r = bat_resize_array(img, nblocks * IMG_ENTRIES_PER_BLOCK)))
		goto fail;
	img->bad_map = calloc((img->bat_alloc / IMG_ENTRIES_PER_BLOCK + 63) / 64, 8);
	img->blk_seen = calloc((img->bat_alloc / IMG_ENTRIES_PER_BLOCK + 63) / 64, 8);
	if (!img->bad_map || !img->blk_seen) {
		r = -ENOMEM;
		goto fail;
	}
	if ((r = bat_load_blocks(img, 0, nblocks, img->bad_map)))
		goto fail;
	if ((r = journal_replay(img)))
		goto fail;
	for (uint64_t b = 0; b < nblocks; b++) {
		uint64_t tmp[IMG_ENTRIES_PER_BLOCK], seq;
		uint8_t blk[IMG_BLOCK_SIZE];
		char why[160];

		if (!(img->bad_map[b / 64] >> (b % 64) & 1))
			continue;
		/* The cause, as the decoder names it (magic, crc, index,
		 * reserved field): issue 22 #2. */
		snprintf(why, sizeof(why), "BAT block %llu: unreadable", (unsigned long long)b);
		if (!io->ops->pread(io, blk, sizeof(blk), img->hdr.bat_offset + b * IMG_BLOCK_SIZE))
			imgi_bat_block_decode(blk, b, tmp, &seq, why, sizeof(why));
		if (!(flags & IMG_OPEN_CHECK)) {
			r = imgi_fail(img, -EUCLEAN, "%s", why);
			goto fail;
		}
		img->bad_blocks++;
		imgi_problem_add(img, P_BAD_BLOCK, b, 0, "%s: its %u entries are unknown", why,
				IMG_ENTRIES_PER_BLOCK);
	}
	if ((r = validate_bat(img, file_size)))
		goto fail;
	free(img->blk_seen);
	img->blk_seen = NULL;
	for (size_t i = 0; i < img->nproblems; i++)
		if (img->problems[i].kind != P_HEADER_COPY)
			img->corrupt = 1;
	if (img->was_dirty)
		img->leaked_at_open = count_free_below_eof(img, file_size);
	/* A read-only handle never allocates and only a check looks at the
	 * allocator afterwards: give its bitmap back, so the handle holds the
	 * BAT (8 bytes per cluster) and a constant. */
	if (!rw && !(flags & IMG_OPEN_CHECK)) {
		free(img->used);
		img->used = NULL;
		img->used_bits = 0;
		free(img->bad_map);
		img->bad_map = NULL;
	}

	if (rw && !(img->delta && (flags & OPEN_DEFER_WRITABLE) && !(flags & IMG_OPEN_NO_BACKING)) &&
	    (r = open_writable(img, flags)))
		goto fail;
	*out = img;
	return 0;
fail:
	imgi_free(img);
	return r;
}

/* The dirty flag set durably before anything else is written. */
static int open_writable(struct img *img, unsigned flags)
{
	struct imgi_header nh = img->hdr;
	int r;

	nh.flags |= IMG_FLAG_DIRTY;
	nh.compat &= IMG_COMPAT_KNOWN;   /* §3: a writer clears what it does not know */
	pthread_mutex_lock(&img->commit_lock);
	r = imgi_header_commit(img, &nh);
	if (!r)
		r = journal_checkpoint(img);
	pthread_mutex_unlock(&img->commit_lock);
	if (r)
		return r;
	/* Rule 4: leaks of a crash become zero before any allocation.
	 * Not in check mode: the check reports leaks and repair
	 * reclaims them, and never while BAT blocks are unreadable. */
	if (!(flags & IMG_OPEN_CHECK) && (r = imgi_reclaim_free(img)))
		return r;
	return 0;
}

/* Does the caller (flag) or the environment (LIBIMG_IO) ask for io_uring? */
static int want_uring(unsigned flags)
{
	const char *e = getenv("LIBIMG_IO");

	if (e && !strcmp(e, "posix"))
		return 0;
	return (flags & IMG_OPEN_IO_URING) || (e && !strcmp(e, "uring"));
}

IMG_API int img_open_io(struct img_io *io, unsigned flags, struct img **out)
{
	int r;

	if (flags & IMG_OPEN_TEMPLATE_) {   /* internal only */
		*out = NULL;
		io->ops->close(io);
		return -EINVAL;
	}
	r = open_io(io, flags, out);

	if (!r && (*out)->delta && !(flags & IMG_OPEN_NO_BACKING)) {
		r = imgi_fail(*out, -EOPNOTSUPP, "is a delta over '%s': opening its backing file "
			     "needs img_open (or IMG_OPEN_NO_BACKING)", (*out)->hdr.backing_path);
		img_close(*out);
		*out = NULL;
	}
	return r;
}

/* Open the image ref names (relative to img's directory) read-only. */
static int open_ref(struct img *img, const char *ref, unsigned flags, struct chain *ch,
		    struct img **out)
{
	int r;

	if (!img->dir) {
		if ((r = imgi_check_backing_ref(img->name, ref, 1)))
			return r;
		return imgi_fail(img, -EINVAL, "opened without a path: cannot resolve '%s'", ref);
	}
	return open_backing(img->name, img->dir, ref,
			    flags & (IMG_OPEN_NOLOCK | IMG_OPEN_ALLOW_BACKING_PATH), ch, out);
}

/* Open the backing chain of img (a delta whose dir is set) below it. */
static int attach_backing(struct img *img, unsigned flags, struct chain *ch)
{
	struct img *b = NULL;
	int r = open_ref(img, img->hdr.backing_path, flags, ch, &b);

	if (r)
		return r;
	if (!imgi_header_backing_matches(&img->hdr, &b->hdr)) {
		img_close(b);
		return imgi_fail(img, -EUCLEAN, "backing file '%s' is not the image this delta "
				"was made over (its uuid differs): refused", img->hdr.backing_path);
	}
	img->backing = b;
	img->depth = b->depth + 1;
	return 0;
}

int imgi_open_ref(struct img *img, const char *ref, unsigned flags, struct img **out)
{
	struct chain ch = { 0 };
	struct stat st;

	if (imgi_vfs->stat(img->name, &st) == 0) {
		ch.dev[0] = st.st_dev;
		ch.ino[0] = st.st_ino;
	}
	ch.n = 1;
	return open_ref(img, ref, flags, &ch, out);
}

/* root NULL: path as given; else the file rel beneath the directory root
 * (open_backing), path naming it in messages. */
static int open_path(const char *path, unsigned flags, const char *root, const char *rel,
		     struct chain *ch, struct img **out)
{
	struct img_io *io = NULL, *fio;
	unsigned ioflags = (flags & IMG_OPEN_RDWR) ? 0 : IMG_IO_RDONLY, engine = IMG_IO_ENGINE_POSIX;
	struct img *img = NULL;
	struct stat st;
	unsigned level = ch->n;
	int r, uring_err = 0, deferred;

	*out = NULL;
	if (ch->n > IMG_MAX_BACKING_DEPTH) {
		imgi_set_error("%s: the backing chain is deeper than %u images: refused",
			      path, IMG_MAX_BACKING_DEPTH);
		return -ELOOP;
	}
	if (imgi_vfs->stat(path, &st) == 0) {
		for (unsigned i = 0; i < ch->n; i++)
			if (ch->dev[i] == st.st_dev && ch->ino[i] == st.st_ino) {
				imgi_set_error("%s: the backing chain loops back to this image: refused",
					      path);
				return -ELOOP;
			}
		ch->dev[ch->n] = st.st_dev;
		ch->ino[ch->n] = st.st_ino;
	}
	ch->n++;
	if ((flags & IMG_OPEN_NO_WRITE_BEHIND) && (flags & IMG_OPEN_RDWR))
		ioflags |= IMG_IO_NO_WRITE_BEHIND;
	if (imgi_vfs->open_uring && want_uring(flags)) {
		r = imgi_vfs->open_uring(root, rel, path, ioflags, &io);
		if (!r)
			engine = IMG_IO_ENGINE_URING;
		else if (r == -ENOSYS || r == -EPERM || r == -ENOMEM || r == -EACCES ||
			 r == -EOPNOTSUPP || r == -EINVAL)
			uring_err = r;      /* the kernel refused the ring: posix */
		else
			return r;           /* the file itself: same error as posix */
		imgi_clear_error();
	}
	if (!io && (r = root ? imgi_vfs->open_beneath(root, rel, path, ioflags, &io) :
			 imgi_vfs->open(path, ioflags, &io)))
		return r;
	/* a test's wrapper, if one is set (testio.h imgi_io_wrap_set) */
	if ((r = imgi_io_wrap(io, &fio))) {
		io->ops->close(io);
		return r;
	}
	if ((r = open_io(fio, (flags & ~(IMG_OPEN_IO_URING | IMG_OPEN_NO_WRITE_BEHIND)) |
			 OPEN_DEFER_WRITABLE, &img)))
		return r;
	img->io_engine = engine;
	img->io_open_flags = flags & IMG_OPEN_NO_WRITE_BEHIND;
	img->io_uring_error = uring_err;
	/* a delta opened read-write with its chain: nothing written yet */
	deferred = img->delta && (flags & IMG_OPEN_RDWR) && !(flags & IMG_OPEN_NO_BACKING);
	if (!(img->dir = dir_of(path))) {
		r = -ENOMEM;
		goto fail;
	}
	if (img->delta && !(flags & IMG_OPEN_NO_BACKING) && (r = attach_backing(img, flags, ch))) {
		if (level == 0)
			imgi_set_chain_error(r);   /* the image itself opened */
		if (level == 0 && strncmp(img_last_error(), img->name, strlen(img->name))) {
			/* The failure is further down: say whose chain it is. */
			char m[512];
			snprintf(m, sizeof(m), "%s", img_last_error());
			imgi_set_error("%s: backing chain: %s", img->name, m);
		}
		goto fail;
	}
	if (deferred && (r = open_writable(img, flags)))
		goto fail;
	*out = img;
	return 0;
fail:
	/* A delta whose chain was refused is left as it was; any other
	 * image had only its dirty flag set, which img_close clears. */
	if (deferred)
		imgi_free(img);
	else
		img_close(img);
	return r;
}

IMG_API int img_open(const char *path, unsigned flags, struct img **out)
{
	struct chain ch = { 0 };

	imgi_clear_error();
	imgi_set_chain_error(0);
	*out = NULL;
	if ((flags & ~(OPEN_FLAGS | IMG_OPEN_IO_URING | IMG_OPEN_NO_WRITE_BEHIND)) ||
	    (flags & IMG_OPEN_TEMPLATE_))
		return -EINVAL;
	return open_path(path, flags, NULL, NULL, &ch, out);
}

int imgi_open_internal(const char *path, unsigned flags, struct img **out)
{
	struct chain ch = { 0 };

	imgi_clear_error();
	*out = NULL;
	if (flags & ~(OPEN_FLAGS | IMG_OPEN_IO_URING | IMG_OPEN_NO_WRITE_BEHIND))
		return -EINVAL;
	return open_path(path, flags, NULL, NULL, &ch, out);
}

IMG_API struct img *img_backing(struct img *img)
{
	return img->backing;
}

IMG_API ssize_t img_backing_ref(struct img *img, char *buf, size_t len)
{
	size_t n;

	pthread_mutex_lock(&img->commit_lock);
	n = img->hdr.incompat & IMG_INCOMPAT_BACKING ? img->hdr.backing_len : 0;
	if (n + 1 > len) {
		pthread_mutex_unlock(&img->commit_lock);
		return -ERANGE;
	}
	memcpy(buf, img->hdr.backing_path, n);
	buf[n] = 0;
	pthread_mutex_unlock(&img->commit_lock);
	return (ssize_t)n;
}

IMG_API const char *img_name(struct img *img)
{
	return img->name;
}

IMG_API int img_close(struct img *img)
{
	int r = 0, r2;

	if (!img)
		return 0;
	/* A failed handle (imgi_sync) writes nothing more: the image stays
	 * dirty and the next open recovers it. */
	if (!img->rdonly && (r = imgi_check_failed(img))) {
		imgi_free(img);
		return r;
	}
	if (!img->rdonly) {
		r = journal_commit(img);
		pthread_mutex_lock(&img->commit_lock);
		if (!r)
			r = journal_checkpoint(img);
		if (!r && !img->corrupt) {
			/* Drop free clusters at the end of the file. */
			uint64_t last = imgi_used_end(img);
			if (last < imgi_file_size(img))
				r = img->io->ops->truncate(img->io, last);
			if (r)
				imgi_fail(img, r, "truncating");
		}
		if (!r && !img->corrupt && !img->bad_blocks) {
			struct imgi_header nh = img->hdr;
			nh.flags &= ~IMG_FLAG_DIRTY;
			/* Every entry is durable: no compressed one left, no
			 * feature needed (older readers can open it again). */
			if (!img->ncomp)
				nh.incompat &= ~IMG_INCOMPAT_COMPRESSED;
			r = imgi_header_commit(img, &nh);
		}
		pthread_mutex_unlock(&img->commit_lock);
	}
	r2 = r;
	imgi_free(img);
	return r2;
}

IMG_API int img_info(struct img *img, struct img_info *out)
{
	struct imgi_header h;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&img->commit_lock);
	h = img->hdr;
	pthread_mutex_unlock(&img->commit_lock);
	pthread_rwlock_rdlock(&img->map_lock);
	pthread_mutex_lock(&img->meta_lock);
	out->virtual_size = img->vsize;
	out->bat_capacity = img->g.bat_capacity * img->g.cluster_size;
	out->allocated_clusters = img->nalloc;
	out->zero_clusters = img->nzero;
	out->metadata_size = img->g.data_offset;
	out->incompat_features = h.incompat;
	out->ro_compat_features = h.ro_compat;
	out->compat_features = h.compat;
	out->header_seq = h.seq;
	out->cluster_size = (uint32_t)img->g.cluster_size;
	out->format_version = h.version;
	out->dirty = (uint32_t)img->was_dirty;
	out->read_only = (uint32_t)img->rdonly;
	out->corrupt = (uint32_t)img->corrupt;
	out->backing_depth = img->depth;
	out->compressed_clusters = img->ncomp;
	out->log_replayed = img->log_replayed;
	out->leaked_clusters = img->leaked_at_open;
	out->io_engine = img->io_engine;
	out->io_uring_error = img->io_uring_error;
	pthread_mutex_unlock(&img->meta_lock);
	pthread_rwlock_unlock(&img->map_lock);
	img->io->ops->size(img->io, &out->file_size);
	if (img->io->ops->usage)
		img->io->ops->usage(img->io, &out->disk_usage);
	else
		out->disk_usage = out->file_size;
	return 0;
}
