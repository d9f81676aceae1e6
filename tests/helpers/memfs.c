/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"
#include "memfs.h"

enum { D_NEW, D_LINK, D_RENAME, D_UNLINK };

struct mname {
	char *path;
	size_t ino;
};

struct names {
	struct mname *v;
	size_t n, cap;
};

struct dirop {
	int type;
	char *a, *b;       /* D_NEW: a = path; D_LINK, D_RENAME: a -> b */
	size_t ino;        /* D_NEW */
};

struct memfs {
	struct imgi_crash_clock own, *clk;
	struct img_io **files;       /* by inode number - 1 */
	mode_t *modes;
	size_t nfiles, capfiles;
	struct names cur, durable;
	struct dirop *ops;
	size_t nops, capops;
	unsigned tmpseq;
	const char **list;
};

static struct memfs *cur_fs;

static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
	size_t ncap;

	if (need <= *cap)
		return p;
	ncap = *cap ? *cap * 2 : 16;
	while (ncap < need)
		ncap *= 2;
	p = realloc(p, ncap * elem);
	if (!p)
		abort();
	*cap = ncap;
	return p;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);
	if (!p)
		abort();
	return p;
}

static ssize_t find(const struct names *ns, const char *path)
{
	for (size_t i = 0; i < ns->n; i++)
		if (!strcmp(ns->v[i].path, path))
			return (ssize_t)i;
	return -1;
}

static void name_set(struct names *ns, const char *path, size_t ino)
{
	ssize_t i = find(ns, path);

	if (i >= 0) {
		ns->v[i].ino = ino;
		return;
	}
	ns->v = grow(ns->v, &ns->cap, ns->n + 1, sizeof(*ns->v));
	ns->v[ns->n++] = (struct mname){ xstrdup(path), ino };
}

static void name_del(struct names *ns, const char *path)
{
	ssize_t i = find(ns, path);

	if (i < 0)
		return;
	free(ns->v[i].path);
	ns->v[i] = ns->v[--ns->n];
}

static void names_free(struct names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i].path);
	free(ns->v);
	memset(ns, 0, sizeof(*ns));
}

/* Applies a name operation (it was checked against cur already). */
static void apply(struct names *ns, const struct dirop *d)
{
	ssize_t i;

	switch (d->type) {
	case D_NEW:
		name_set(ns, d->a, d->ino);
		break;
	case D_LINK:
		if ((i = find(ns, d->a)) >= 0)
			name_set(ns, d->b, ns->v[i].ino);
		break;
	case D_RENAME:
		if ((i = find(ns, d->a)) >= 0) {
			size_t ino = ns->v[i].ino;
			name_del(ns, d->a);
			name_set(ns, d->b, ino);
		}
		break;
	default:
		name_del(ns, d->a);
	}
}

/* A name operation: counted on the clock, applied to cur, queued. */
static int dirop(struct memfs *fs, int type, const char *a, const char *b, size_t ino)
{
	struct dirop d = { type, xstrdup(a), b ? xstrdup(b) : NULL, ino };
	int r = imgi_crash_clock_tick(fs->clk);

	if (r == -EIO) {
		free(d.a);
		free(d.b);
		return r;
	}
	if (!r)
		apply(&fs->cur, &d);
	/* at the power loss it may have reached the disk */
	fs->ops = grow(fs->ops, &fs->capops, fs->nops + 1, sizeof(*fs->ops));
	fs->ops[fs->nops++] = d;
	return r ? -EIO : 0;
}

static void ops_clear(struct memfs *fs)
{
	for (size_t i = 0; i < fs->nops; i++) {
		free(fs->ops[i].a);
		free(fs->ops[i].b);
	}
	fs->nops = 0;
}

static size_t new_file(struct memfs *fs, struct img_io *io, mode_t mode)
{
	fs->files = grow(fs->files, &fs->capfiles, fs->nfiles + 1, sizeof(*fs->files));
	fs->modes = realloc(fs->modes, fs->capfiles * sizeof(*fs->modes));
	if (!fs->modes)
		abort();
	fs->files[fs->nfiles] = io;
	fs->modes[fs->nfiles] = mode;
	return ++fs->nfiles;
}

struct memfs *memfs_new(struct imgi_crash_clock *clk)
{
	struct memfs *fs = calloc(1, sizeof(*fs));

	if (!fs)
		abort();
	fs->clk = clk ? clk : &fs->own;
	return fs;
}

void memfs_free(struct memfs *fs)
{
	if (!fs)
		return;
	if (cur_fs == fs)
		memfs_install(NULL);
	for (size_t i = 0; i < fs->nfiles; i++)
		fs->files[i]->ops->close(fs->files[i]);
	free(fs->files);
	free(fs->modes);
	names_free(&fs->cur);
	names_free(&fs->durable);
	ops_clear(fs);
	free(fs->ops);
	free(fs->list);
	free(fs);
}

int memfs_add(struct memfs *fs, const char *path, const void *bytes, size_t len)
{
	struct img_io *io;
	size_t ino;
	int r = imgi_io_crash_new_clocked(bytes, len, fs->clk, &io);

	if (r)
		return r;
	ino = new_file(fs, io, 0644);
	name_set(&fs->cur, path, ino);
	name_set(&fs->durable, path, ino);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

const char *const *memfs_names(struct memfs *fs, size_t *n)
{
	free(fs->list);
	fs->list = calloc(fs->cur.n + 1, sizeof(*fs->list));
	if (!fs->list)
		abort();
	for (size_t i = 0; i < fs->cur.n; i++)
		fs->list[i] = fs->cur.v[i].path;
	qsort(fs->list, fs->cur.n, sizeof(*fs->list), cmp_str);
	*n = fs->cur.n;
	return fs->list;
}

uint8_t *memfs_read(struct memfs *fs, const char *path, size_t *len)
{
	ssize_t i = find(&fs->cur, path);
	struct img_io *io;
	uint64_t size;
	uint8_t *b;

	if (i < 0)
		return NULL;
	io = fs->files[fs->cur.v[i].ino - 1];
	if (io->ops->size(io, &size))
		return NULL;
	b = malloc(size ? size : 1);
	if (!b)
		abort();
	if (size && io->ops->pread(io, b, size, 0)) {
		free(b);
		return NULL;
	}
	*len = size;
	return b;
}

struct memfs *memfs_materialize(struct memfs *fs, enum imgi_crash_mode mode, uint64_t seed)
{
	struct memfs *m = memfs_new(NULL);
	uint64_t rs = seed * 0x9e3779b97f4a7c15ull + 1;
	size_t keep = mode == IMG_CRASH_KEEP_ALL ? fs->nops : 0;
	struct names ns = { 0 };

	if (mode == IMG_CRASH_RANDOM) {
		rs ^= rs >> 29;
		rs *= 0xbf58476d1ce4e5b9ull;
		keep = (size_t)((rs >> 17) % (fs->nops + 1));
	}
	for (size_t i = 0; i < fs->durable.n; i++)
		name_set(&ns, fs->durable.v[i].path, fs->durable.v[i].ino);
	for (size_t i = 0; i < keep; i++)
		apply(&ns, &fs->ops[i]);
	/* every file, so inode numbers stay the same */
	for (size_t i = 0; i < fs->nfiles; i++) {
		struct img_io *mem, *io;
		const void *d;
		size_t len;
		if (imgi_io_crash_materialize(fs->files[i], mode, seed + i, NULL, &mem))
			abort();
		d = img_io_mem_data(mem, &len);
		if (imgi_io_crash_new_clocked(d, len, m->clk, &io))
			abort();
		mem->ops->close(mem);
		new_file(m, io, fs->modes[i]);
	}
	for (size_t i = 0; i < ns.n; i++) {
		name_set(&m->cur, ns.v[i].path, ns.v[i].ino);
		name_set(&m->durable, ns.v[i].path, ns.v[i].ino);
	}
	names_free(&ns);
	return m;
}

/* ---- the imgi_vfs -------------------------------------------------------- */

static int lookup(const char *path, size_t *ino)
{
	ssize_t i = find(&cur_fs->cur, path);

	if (cur_fs->clk->crashed)
		return -EIO;
	if (i < 0)
		return -ENOENT;
	*ino = cur_fs->cur.v[i].ino;
	return 0;
}

static int m_stat(const char *path, struct stat *st)
{
	size_t ino;
	uint64_t size = 0;
	int r = lookup(path, &ino);

	if (r)
		return r;
	memset(st, 0, sizeof(*st));
	cur_fs->files[ino - 1]->ops->size(cur_fs->files[ino - 1], &size);
	st->st_dev = 1;
	st->st_ino = ino;
	st->st_mode = S_IFREG | cur_fs->modes[ino - 1];
	st->st_nlink = 1;
	st->st_size = (off_t)size;
	return 0;
}

/* A view of a file under its path (closing it keeps the file). */
struct view {
	struct img_io io;
	struct img_io_ops ops;
	struct img_io *inner;
	char path[256];
};

#define INNER(io) (((struct view *)(io))->inner)

static int v_pread(struct img_io *io, void *buf, size_t len, uint64_t off)
{
	return INNER(io)->ops->pread(INNER(io), buf, len, off);
}

static int v_pwrite(struct img_io *io, const void *buf, size_t len, uint64_t off)
{
	return INNER(io)->ops->pwrite(INNER(io), buf, len, off);
}

static int v_flush(struct img_io *io)
{
	return INNER(io)->ops->flush(INNER(io));
}

static int v_punch(struct img_io *io, uint64_t off, uint64_t len)
{
	return INNER(io)->ops->punch(INNER(io), off, len);
}

static int v_truncate(struct img_io *io, uint64_t size)
{
	return INNER(io)->ops->truncate(INNER(io), size);
}

static int v_size(struct img_io *io, uint64_t *size)
{
	return INNER(io)->ops->size(INNER(io), size);
}

static void v_close(struct img_io *io)
{
	free(io);
}

static int m_open(const char *path, unsigned ioflags, struct img_io **out)
{
	struct view *v;
	size_t ino;
	int r = lookup(path, &ino);

	if (r)
		return r;
	if (!(v = calloc(1, sizeof(*v))))
		return -ENOMEM;
	v->inner = cur_fs->files[ino - 1];
	v->ops = (struct img_io_ops){
		.pread = v_pread, .pwrite = v_pwrite, .flush = v_flush, .punch = v_punch,
		.truncate = v_truncate, .size = v_size, .close = v_close,
	};
	v->io.ops = &v->ops;
	snprintf(v->path, sizeof(v->path), "%s", path);
	v->io.name = v->path;
	*out = &v->io;
	return 0;
}

static int m_mktemp(char *tmpl, mode_t mode)
{
	size_t n = strlen(tmpl), ino;
	struct img_io *io;
	int r;

	if (n < 6 || strcmp(tmpl + n - 6, "XXXXXX"))
		return -EINVAL;
	/* the next free name, as mkstemp tries others */
	do
		snprintf(tmpl + n - 6, 7, "%06u", ++cur_fs->tmpseq % 1000000);
	while (find(&cur_fs->cur, tmpl) >= 0);
	if ((r = imgi_io_crash_new_clocked(NULL, 0, cur_fs->clk, &io)))
		return r;
	ino = new_file(cur_fs, io, mode);
	return dirop(cur_fs, D_NEW, tmpl, NULL, ino);
}

static int m_link(const char *from, const char *to)
{
	size_t ino;
	int r = lookup(from, &ino);

	if (r)
		return r;
	if (find(&cur_fs->cur, to) >= 0)
		return -EEXIST;
	return dirop(cur_fs, D_LINK, from, to, 0);
}

static int m_rename(const char *from, const char *to, int noreplace)
{
	size_t ino;
	int r = lookup(from, &ino);

	if (r)
		return r;
	if (noreplace && find(&cur_fs->cur, to) >= 0)
		return -EEXIST;
	return dirop(cur_fs, D_RENAME, from, to, 0);
}

static int m_unlink(const char *path)
{
	size_t ino;
	int r = lookup(path, &ino);

	return r ? r : dirop(cur_fs, D_UNLINK, path, NULL, 0);
}

static int m_chmod(const char *path, mode_t mode)
{
	size_t ino;
	int r = lookup(path, &ino);

	if (r)
		return r;
	/* metadata of the file: counted, applied at once */
	if ((r = imgi_crash_clock_tick(cur_fs->clk)))
		return -EIO;
	cur_fs->modes[ino - 1] = mode & 07777;
	return 0;
}

static int m_sync_dir(const char *dir)
{
	int r = imgi_crash_clock_tick(cur_fs->clk);

	(void)dir;
	if (r)
		return -EIO;
	for (size_t i = 0; i < cur_fs->nops; i++)
		apply(&cur_fs->durable, &cur_fs->ops[i]);
	ops_clear(cur_fs);
	return 0;
}

static const struct imgi_vfs memfs_vfs = {
	.stat = m_stat, .open = m_open, .mktemp = m_mktemp, .link = m_link,
	.rename = m_rename, .unlink = m_unlink, .chmod = m_chmod, .sync_dir = m_sync_dir,
};

void memfs_install(struct memfs *fs)
{
	cur_fs = fs;
	imgi_vfs_set(fs ? &memfs_vfs : NULL);
}
