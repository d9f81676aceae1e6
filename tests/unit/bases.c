/* SPDX-License-Identifier: MIT */
/* Bases are protected (FORMAT.md 3.1, 3.2; issue 14 #3 #3b #4, issue 15 #11):
 * a merge consumes only the delta's own snapshot (OWN_SNAPSHOT, set by the
 * snapshot, cleared by a rebase, and confirmed by the snapshot's owner
 * field: a forged bit is refused) unless the base is named; a template is
 * never opened for writing; a refusal changes no byte, name or mode; the
 * live operations refuse a chain that does not open again and leave the
 * caller's handle as it was. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"   /* struct imgi_vfs: a wrapper that fails one open */
#include "libimg.h"
#include "testio.h"
#include "../helpers/tassert.h"

#define CS (64u << 10)
#define VS (2u << 20)
static char dir[] = "/tmp/libimg-bases-XXXXXX";

static char *P(const char *name)
{
	static char buf[8][512];
	static int i;
	i = (i + 1) % 8;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
	return buf[i];
}

static int mk(const char *name, const char *backing)
{
	struct img_create_opts o = { .virtual_size = VS, .cluster_size = CS,
				     .flags = IMG_CREATE_OVERWRITE };
	o.backing_file = backing;
	return img_create(P(name), &o);
}

static void put(const char *name, uint64_t off, char c)
{
	struct img *img = NULL;
	char buf[4096];

	memset(buf, c, sizeof(buf));
	T_CHECK(img_open(P(name), IMG_OPEN_RDWR, &img) == 0);
	if (img) {
		T_CHECK(img_pwrite(img, buf, sizeof(buf), off) == (ssize_t)sizeof(buf));
		T_CHECK(img_close(img) == 0);
	}
}

/* The whole file, malloc'd, into *len. */
static uint8_t *slurp(const char *name, size_t *len)
{
	int fd = open(P(name), O_RDONLY);
	struct stat st;
	uint8_t *b = NULL;

	*len = 0;
	if (fd < 0 || fstat(fd, &st) || !(b = malloc((size_t)st.st_size + 1)) ||
	    pread(fd, b, (size_t)st.st_size, 0) != st.st_size) {
		T_CHECK(!"slurp");
	} else {
		*len = (size_t)st.st_size;
	}
	if (fd >= 0)
		close(fd);
	return b;
}

static int same(const char *name, const uint8_t *b, size_t len)
{
	size_t n;
	uint8_t *c = slurp(name, &n);
	int r = c && n == len && !memcmp(b, c, len);
	free(c);
	return r;
}

static unsigned mode_of(const char *name)
{
	struct stat st;
	return stat(P(name), &st) ? 0 : (unsigned)(st.st_mode & 07777);
}

static uint64_t compat_of(const char *name, int ro)
{
	struct img *img = NULL;
	struct img_info in;
	uint64_t v = ~0ull;

	if (img_open(P(name), IMG_OPEN_NO_BACKING, &img) == 0 && img_info(img, &in) == 0)
		v = ro ? in.ro_compat_features : in.compat_features;
	img_close(img);
	return v;
}

/* The POSIX directory operations, except that once the snapshot's switch
 * renamed the new top into place, the next open of fail_name fails: the
 * new top cannot be opened after the switch. */
static int armed;
static const char *fail_name;
static int w_rename(const char *from, const char *to, int noreplace)
{
	int r = imgi_vfs_posix.rename(from, to, noreplace);
	if (!r && strstr(from, ".snapnew"))
		armed = 1;
	return r;
}
static int w_open(const char *path, unsigned ioflags, struct img_io **out)
{
	if (armed && strstr(path, fail_name)) {
		armed = 0;
		return -EIO;
	}
	return imgi_vfs_posix.open(path, ioflags, out);
}
/* (backing files are opened beneath their directory) */
static int w_open_beneath(const char *root, const char *rel, const char *name,
			  unsigned ioflags, struct img_io **out)
{
	if (armed && strstr(rel, fail_name)) {
		armed = 0;
		return -EIO;
	}
	return imgi_vfs_posix.open_beneath(root, rel, name, ioflags, out);
}

static char byte_at(struct img *img, uint64_t off)
{
	char c = 0;
	T_CHECK(img_pread(img, &c, 1, off) == 1);
	return c;
}

/* Edits both header copies of an image behind libimg's back (decoded,
 * changed, encoded with the crc fixed): compat bits set (a forged
 * OWN_SNAPSHOT), the owner field dropped (drop_owner: a snapshot made
 * before libimg recorded owners). */
static void forge(const char *name, uint64_t compat_set, int drop_owner)
{
	uint8_t slot[IMG_HEADER_SLOT];
	struct imgi_header h;
	int fd = open(P(name), O_RDWR);

	T_CHECK(fd >= 0);
	for (int i = 0; fd >= 0 && i < 2; i++) {
		T_CHECK(pread(fd, slot, sizeof(slot), i * IMG_HEADER_SLOT) == (ssize_t)sizeof(slot));
		T_CHECK(imgi_header_decode(slot, &h, NULL, 0) == 0);
		h.compat |= compat_set;
		if (drop_owner) {
			h.incompat &= ~IMG_FEATURE_INCOMPAT_OWNER;
			memset(h.owner_uuid, 0, 16);
			h.header_size = (h.incompat & IMG_INCOMPAT_BACKING) ?
					(uint32_t)((IMG_BACKING_OFF + h.backing_len + 7) & ~7u) :
					IMG_HEADER_SIZE_V1;
		}
		imgi_header_encode(&h, slot);
		T_CHECK(pwrite(fd, slot, sizeof(slot), i * IMG_HEADER_SLOT) == (ssize_t)sizeof(slot));
	}
	if (fd >= 0)
		close(fd);
}

static uint64_t incompat_of(const char *name)
{
	struct img *img = NULL;
	struct img_info in;
	uint64_t v = ~0ull;

	if (img_open(P(name), IMG_OPEN_NO_BACKING, &img) == 0 && img_info(img, &in) == 0)
		v = in.incompat_features;
	img_close(img);
	return v;
}

/* Issue 14 #3b: the own snapshot is confirmed by the snapshot's header
 * (FORMAT.md 3.1, OWNER), not by the delta's bit alone. */
static void owner_cases(void)
{
	uint8_t *b0, *c0, *s0;
	size_t bl, cl, sl;
	char snap[256];

	/* a clone over a read-only shared base, its OWN_SNAPSHOT bit forged */
	T_CHECK(mk("sh.img", NULL) == 0);
	put("sh.img", 0, 's');
	T_CHECK(mk("f1.img", "sh.img") == 0);
	T_CHECK(mk("f2.img", "sh.img") == 0);
	put("f1.img", 65536, 'f');
	forge("f1.img", IMG_FEATURE_COMPAT_OWN_SNAPSHOT, 0);
	T_CHECK(compat_of("f1.img", 0) == IMG_FEATURE_COMPAT_OWN_SNAPSHOT);
	T_CHECK(chmod(P("sh.img"), 0444) == 0);
	b0 = slurp("sh.img", &bl);
	c0 = slurp("f1.img", &cl);
	T_CHECK(img_merge(P("f1.img"), 0, NULL, NULL) == -EPERM);
	T_CHECK(strstr(img_last_error(), "records no owner") != NULL);
	T_CHECK(img_merge_into(P("f1.img"), P("sh.img"), 0, NULL, NULL) == -EROFS);
	T_CHECK(same("sh.img", b0, bl) && same("f1.img", c0, cl));
	T_CHECK(mode_of("sh.img") == 0444 && access(P("f2.img"), F_OK) == 0);
	free(b0);
	free(c0);

	/* a snapshot records its top; the top's merge consumes it */
	T_CHECK(mk("d.img", NULL) == 0);
	put("d.img", 0, 'd');
	T_CHECK(img_snapshot(P("d.img"), NULL, 0, snap, sizeof(snap)) == 0);
	T_CHECK(!strcmp(snap, "d.img.snap1"));
	T_CHECK(incompat_of("d.img.snap1") == IMG_FEATURE_INCOMPAT_OWNER);
	T_CHECK(incompat_of("d.img") == IMG_INCOMPAT_BACKING);
	{
		struct imgi_header th, sh;
		T_CHECK(imgi_read_header(P("d.img"), &th) == 0 && imgi_read_header(P("d.img.snap1"), &sh) == 0);
		T_CHECK(imgi_header_owned_by(&sh, th.uuid));
	}
	/* a clone made over the snapshot file, its bit forged: refused */
	T_CHECK(mk("x.img", "d.img.snap1") == 0);
	put("x.img", 65536, 'x');
	forge("x.img", IMG_FEATURE_COMPAT_OWN_SNAPSHOT, 0);
	s0 = slurp("d.img.snap1", &sl);
	c0 = slurp("x.img", &cl);
	T_CHECK(img_merge(P("x.img"), 0, NULL, NULL) == -EPERM);
	T_CHECK(strstr(img_last_error(), "own snapshot of another image") != NULL);
	T_CHECK(same("d.img.snap1", s0, sl) && same("x.img", c0, cl));
	{
		struct img *img = NULL;
		T_CHECK(img_open(P("x.img"), IMG_OPEN_RDWR, &img) == 0);
		T_CHECK(img && img_merge_live(&img, 0, NULL, NULL) == -EPERM && img);
		img_close(img);
	}
	T_CHECK(same("d.img.snap1", s0, sl));
	T_CHECK(mode_of("d.img.snap1") == 0444);
	free(c0);
	T_CHECK(unlink(P("x.img")) == 0);
	/* its owner merges it, offline and live */
	put("d.img", 131072, 'D');
	T_CHECK(img_merge(P("d.img"), 0, NULL, NULL) == 0);
	T_CHECK(access(P("d.img.snap1"), F_OK) != 0);
	{
		struct img *img = NULL;
		T_CHECK(img_open(P("d.img"), IMG_OPEN_RDWR, &img) == 0);
		T_CHECK(img && img_snapshot_live(&img, NULL, 0, NULL, 0) == 0 && img);
		T_CHECK(img && img_merge_live(&img, 0, NULL, NULL) == 0 && img);
		if (img)
			T_CHECK(img_backing(img) == NULL && byte_at(img, 0) == 'd' &&
			      byte_at(img, 131072) == 'D');
		img_close(img);
	}

	/* a snapshot from before libimg recorded owners: refused unless
	 * named (and made writable) */
	T_CHECK(img_snapshot(P("d.img"), NULL, 0, NULL, 0) == 0);
	forge("d.img.snap1", 0, 1);
	T_CHECK(incompat_of("d.img.snap1") == 0);
	s0 = (free(s0), slurp("d.img.snap1", &sl));
	T_CHECK(img_merge(P("d.img"), 0, NULL, NULL) == -EPERM);
	T_CHECK(strstr(img_last_error(), "records no owner") != NULL);
	T_CHECK(img_merge_into(P("d.img"), P("d.img.snap1"), 0, NULL, NULL) == -EROFS);
	T_CHECK(same("d.img.snap1", s0, sl) && mode_of("d.img.snap1") == 0444);
	T_CHECK(chmod(P("d.img.snap1"), 0644) == 0);
	T_CHECK(img_merge_into(P("d.img"), P("d.img.snap1"), 0, NULL, NULL) == 0);
	free(s0);

	/* the owner field is kept true or cleared: a template mark clears
	 * it, and so does a named merge of another delta into the snapshot */
	T_CHECK(img_snapshot(P("d.img"), NULL, 0, NULL, 0) == 0);
	T_CHECK(chmod(P("d.img.snap1"), 0644) == 0);
	T_CHECK(img_set_template(P("d.img.snap1"), 1) == 0);
	T_CHECK(incompat_of("d.img.snap1") == 0);
	T_CHECK(img_set_template(P("d.img.snap1"), 0) == 0);
	T_CHECK(img_merge(P("d.img"), 0, NULL, NULL) == -EPERM);
	T_CHECK(img_merge_into(P("d.img"), P("d.img.snap1"), 0, NULL, NULL) == 0);
	T_CHECK(img_snapshot(P("d.img"), NULL, 0, NULL, 0) == 0);
	T_CHECK(chmod(P("d.img.snap1"), 0644) == 0);
	T_CHECK(mk("y.img", "d.img.snap1") == 0);
	T_CHECK(img_merge_into(P("y.img"), P("d.img.snap1"), 0, NULL, NULL) == 0);
	T_CHECK(incompat_of("y.img") == 0);

	/* a snapshot with a top over it (read-only) is not merged: the top's
	 * chain would lose it */
	T_CHECK(img_snapshot(P("y.img"), NULL, 0, NULL, 0) == 0);
	T_CHECK(img_snapshot(P("y.img"), NULL, 0, NULL, 0) == 0);
	s0 = slurp("y.img.snap2", &sl);
	T_CHECK(img_merge(P("y.img.snap2"), 0, NULL, NULL) == -EROFS);
	T_CHECK(same("y.img.snap2", s0, sl) && access(P("y.img.snap1"), F_OK) == 0);
	free(s0);
	{
		struct img *img = NULL;
		T_CHECK(img_open(P("y.img"), 0, &img) == 0);
		img_close(img);
	}

	/* the rule of the mode, one predicate */
	T_CHECK(img_file_readonly(P("sh.img")) == 1 && img_file_readonly(P("y.img")) == 0);
	T_CHECK(img_file_readonly(P("nothing.img")) == -ENOENT);
}

/* Issue 14 #3c: a merge clears the owner field the merged image kept
 * (it is nobody's snapshot: an older libimg opens it again), offline and
 * live; a top that records an owner (a snapshot with a top over it, its
 * mode made writable) is never merged; repeated snapshots and merges
 * under one name keep working. */
static void owner_cleared_cases(void)
{
	uint8_t *s1, *s2, *d0;
	size_t l1, l2, ld;
	struct img *img = NULL;
	struct img_info in;

	/* create + merge: the merged image records no owner */
	T_CHECK(mk("m.img", NULL) == 0);
	put("m.img", 0, 'm');
	T_CHECK(img_snapshot(P("m.img"), NULL, 0, NULL, 0) == 0);
	put("m.img", 65536, 'n');
	T_CHECK(img_merge(P("m.img"), 0, NULL, NULL) == 0);
	T_CHECK(incompat_of("m.img") == 0);
	/* deeper: the merged image keeps its own backing, and no owner */
	T_CHECK(img_snapshot(P("m.img"), NULL, 0, NULL, 0) == 0);
	T_CHECK(img_snapshot(P("m.img"), NULL, 0, NULL, 0) == 0);
	T_CHECK(img_merge(P("m.img"), 0, NULL, NULL) == 0);
	T_CHECK(incompat_of("m.img") == IMG_INCOMPAT_BACKING);
	/* and the second merge of the same name works (create, create,
	 * merge, merge) */
	T_CHECK(img_merge(P("m.img"), 0, NULL, NULL) == 0);
	T_CHECK(incompat_of("m.img") == 0);
	T_CHECK(access(P("m.img.snap1"), F_OK) != 0 && access(P("m.img.snap2"), F_OK) != 0);
	/* create, merge, create, merge */
	T_CHECK(img_snapshot(P("m.img"), NULL, 0, NULL, 0) == 0);
	T_CHECK(img_merge(P("m.img"), 0, NULL, NULL) == 0);
	T_CHECK(img_snapshot(P("m.img"), NULL, 0, NULL, 0) == 0);
	T_CHECK(img_merge(P("m.img"), 0, NULL, NULL) == 0);
	T_CHECK(incompat_of("m.img") == 0);
	/* live: the handle after the merge is the merged image, no owner */
	T_CHECK(img_open(P("m.img"), IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img && img_snapshot_live(&img, NULL, 0, NULL, 0) == 0 && img);
	T_CHECK(img && img_snapshot_live(&img, NULL, 0, NULL, 0) == 0 && img);
	T_CHECK(img && img_merge_live(&img, 0, NULL, NULL) == 0 && img);
	if (img) {
		T_CHECK(img_info(img, &in) == 0 && in.incompat_features == IMG_INCOMPAT_BACKING);
		T_CHECK(img_merge_live(&img, 0, NULL, NULL) == 0 && img);
	}
	if (img) {
		T_CHECK(img_info(img, &in) == 0 && in.incompat_features == 0);
		T_CHECK(byte_at(img, 0) == 'm' && byte_at(img, 65536) == 'n');
	}
	T_CHECK(img_close(img) == 0);
	img = NULL;
	T_CHECK(incompat_of("m.img") == 0);

	/* create, create, the second snapshot made writable: its merge is
	 * refused (its name would get d.img.snap1, and m.img's backing, which
	 * recorded its uuid, would be gone), offline, named and live */
	T_CHECK(img_snapshot(P("m.img"), NULL, 0, NULL, 0) == 0);
	T_CHECK(img_snapshot(P("m.img"), NULL, 0, NULL, 0) == 0);
	T_CHECK(chmod(P("m.img.snap2"), 0644) == 0);
	s1 = slurp("m.img.snap1", &l1);
	s2 = slurp("m.img.snap2", &l2);
	d0 = slurp("m.img", &ld);
	T_CHECK(img_merge(P("m.img.snap2"), 0, NULL, NULL) == -EPERM);
	T_CHECK(strstr(img_last_error(), "m.img.snap2") &&
	      strstr(img_last_error(), "snapshot of another image") &&
	      strstr(img_last_error(), "merge the image at the top"));
	T_CHECK(chmod(P("m.img.snap1"), 0644) == 0);
	T_CHECK(img_merge_into(P("m.img.snap2"), P("m.img.snap1"), 0, NULL, NULL) == -EPERM);
	T_CHECK(same("m.img.snap2", s2, l2));
	/* (the open for writing changes the header of snap2, not snap1) */
	T_CHECK(img_open(P("m.img.snap2"), IMG_OPEN_RDWR, &img) == 0);
	if (img) {
		struct img *keep = img;
		T_CHECK(img_merge_live(&img, 0, NULL, NULL) == -EPERM && img == keep);
		T_CHECK(img && img_backing(img) != NULL);
	}
	T_CHECK(img_close(img) == 0);
	img = NULL;
	T_CHECK(chmod(P("m.img.snap1"), 0444) == 0);
	T_CHECK(same("m.img.snap1", s1, l1) && same("m.img", d0, ld));
	T_CHECK(mode_of("m.img.snap2") == 0644);
	/* the chain opens, and the top's merges still work */
	T_CHECK(img_open(P("m.img"), 0, &img) == 0);
	if (img)
		T_CHECK(byte_at(img, 0) == 'm' && byte_at(img, 65536) == 'n');
	img_close(img);
	img = NULL;
	T_CHECK(img_merge(P("m.img"), 0, NULL, NULL) == 0);
	T_CHECK(img_merge(P("m.img"), 0, NULL, NULL) == 0);
	T_CHECK(incompat_of("m.img") == 0);
	free(s1);
	free(s2);
	free(d0);
}

/* The owner field in the header format (FORMAT.md 3.1): after the
 * backing path, kept by a rebase, no room past a 3928-byte path. */
static void owner_format(void)
{
	uint8_t slot[IMG_HEADER_SLOT], u[16];
	struct imgi_header h, d;
	char path[IMG_MAX_BACKING_LEN + 1];

	memset(u, 0xab, sizeof(u));
	T_CHECK(mk("fmt.img", NULL) == 0);
	T_CHECK(imgi_read_header(P("fmt.img"), &h) == 0);
	T_CHECK(imgi_header_set_owner(&h, u) == 0 && h.header_size == 144);
	imgi_header_encode(&h, slot);
	T_CHECK(imgi_header_decode(slot, &d, NULL, 0) == 0 && imgi_header_owned_by(&d, u));
	imgi_header_set_backing(&h, u, "b.img", 5);
	T_CHECK(h.header_size == 176 && imgi_header_owned_by(&h, u));
	imgi_header_encode(&h, slot);
	T_CHECK(imgi_header_decode(slot, &d, NULL, 0) == 0 && imgi_header_owned_by(&d, u) &&
	      !strcmp(d.backing_path, "b.img"));
	T_CHECK(slot[157] == 0 && slot[160] == 0xab);
	slot[158] = 1;          /* padding before the field: reserved */
	T_CHECK(imgi_header_decode(slot, &d, NULL, 0) == -EUCLEAN);
	imgi_header_encode(&h, slot);
	memset(slot + 160, 0, 16);     /* an all-zero owner: invalid */
	put_le32(slot + 16, 0);
	put_le32(slot + 16, imgi_crc32c(0, slot, h.header_size));
	T_CHECK(imgi_header_decode(slot, &d, NULL, 0) == -EUCLEAN);
	memset(path, 'p', sizeof(path));
	imgi_header_set_backing(&h, u, path, 3928);
	T_CHECK(imgi_header_owned_by(&h, u) && h.header_size == IMG_HEADER_SLOT);
	imgi_header_set_backing(&h, u, path, 3929);
	T_CHECK(!(h.incompat & IMG_INCOMPAT_OWNER) && imgi_header_set_owner(&h, u) == -ENOSPC);
}

/* A clone's base, a template, own snapshots, and the refusals on the
 * way: one story on one set of files (each step starts where the last
 * ended). */
static void clones_templates_snapshots(void)
{
	struct img *img = NULL, *keep, *other = NULL;
	uint8_t *b0, *c0;
	size_t bl, cl;
	char snap[256];

	/* A clone's base: refused unless named; bytes and modes unchanged. */
	T_CHECK(mk("base.img", NULL) == 0);
	put("base.img", 0, 'b');
	T_CHECK(mk("ct1.img", "base.img") == 0);
	T_CHECK(mk("ct2.img", "base.img") == 0);
	put("ct1.img", 65536, '1');
	T_CHECK(compat_of("ct1.img", 0) == 0);
	T_CHECK(chmod(P("base.img"), 0444) == 0);
	b0 = slurp("base.img", &bl);
	c0 = slurp("ct1.img", &cl);
	T_CHECK(img_merge(P("ct1.img"), 0, NULL, NULL) == -EPERM);
	T_CHECK(strstr(img_last_error(), "not its own snapshot") != NULL);
	T_CHECK(img_merge_into(P("ct1.img"), P("base.img"), 0, NULL, NULL) == -EROFS);
	T_CHECK(img_merge_into(P("ct1.img"), P("ct2.img"), 0, NULL, NULL) == -EINVAL);
	T_CHECK(same("base.img", b0, bl) && same("ct1.img", c0, cl));
	T_CHECK(mode_of("base.img") == 0444);
	T_CHECK(chmod(P("base.img"), 0644) == 0);

	/* A template: never opened for writing (the internal flag is not
	 * public), clones still read and write over it. */
	T_CHECK(img_set_template(P("base.img"), 1) == 0);
	T_CHECK(compat_of("base.img", 1) == IMG_FEATURE_RO_COMPAT_TEMPLATE);
	free(b0);
	b0 = slurp("base.img", &bl);
	T_CHECK(img_open(P("base.img"), IMG_OPEN_RDWR, &img) == -EROFS && !img);
	T_CHECK(img_open(P("base.img"), IMG_OPEN_RDWR | 0x40000000u, &img) == -EINVAL && !img);
	T_CHECK(img_snapshot(P("base.img"), NULL, 0, NULL, 0) == -EROFS);
	T_CHECK(img_merge_into(P("ct1.img"), P("base.img"), 0, NULL, NULL) == -EROFS);
	put("ct2.img", 0, '2');
	T_CHECK(img_open(P("base.img"), 0, &img) == 0);
	if (img)
		T_CHECK(byte_at(img, 0) == 'b');
	img_close(img);
	img = NULL;
	/* in use by a clone: the mark cannot change */
	T_CHECK(img_open(P("ct2.img"), 0, &other) == 0);
	T_CHECK(img_set_template(P("base.img"), 0) == -EBUSY);
	img_close(other);
	other = NULL;
	T_CHECK(same("base.img", b0, bl));
	T_CHECK(img_set_template(P("base.img"), 0) == 0);
	T_CHECK(compat_of("base.img", 1) == 0);

	/* Named, a writable base is merged into and takes the clone's name. */
	T_CHECK(img_merge_into(P("ct1.img"), P("base.img"), 0, NULL, NULL) == 0);
	T_CHECK(access(P("base.img"), F_OK) != 0);
	T_CHECK(img_open(P("ct1.img"), 0, &img) == 0);
	if (img) {
		T_CHECK(img_backing(img) == NULL);
		T_CHECK(byte_at(img, 0) == 'b' && byte_at(img, 65536) == '1');
	}
	img_close(img);
	img = NULL;

	/* Own snapshot: marked, merged without naming it; a rebase clears
	 * the mark. */
	T_CHECK(img_snapshot(P("ct1.img"), NULL, 0, snap, sizeof(snap)) == 0);
	T_CHECK(!strcmp(snap, "ct1.img.snap1"));
	T_CHECK(compat_of("ct1.img", 0) == IMG_FEATURE_COMPAT_OWN_SNAPSHOT);
	T_CHECK(mode_of("ct1.img.snap1") == 0444);
	put("ct1.img", 131072, 'x');
	T_CHECK(img_open(P("ct1.img"), IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING, &img) == 0);
	if (img)
		T_CHECK(img_set_backing(img, "ct1.img.snap1", IMG_BACKING_UNSAFE, NULL, NULL) == 0);
	T_CHECK(img_close(img) == 0);
	img = NULL;
	T_CHECK(compat_of("ct1.img", 0) == 0);
	T_CHECK(img_merge(P("ct1.img"), 0, NULL, NULL) == -EPERM);
	T_CHECK(mode_of("ct1.img.snap1") == 0444);
	/* named, a read-only base is still refused; writable, merged */
	T_CHECK(img_merge_into(P("ct1.img"), P("ct1.img.snap1"), 0, NULL, NULL) == -EROFS);
	T_CHECK(chmod(P("ct1.img.snap1"), 0644) == 0);
	T_CHECK(img_merge_into(P("ct1.img"), P("ct1.img.snap1"), 0, NULL, NULL) == 0);
	T_CHECK(img_snapshot(P("ct1.img"), NULL, 0, NULL, 0) == 0);

	/* Issue 15 #11: a merge refused late (the snapshot in use by another
	 * image over it) keeps the snapshot's mode and every file's bytes. */
	T_CHECK(mk("other.img", "ct1.img.snap1") == 0);
	free(b0);
	free(c0);
	b0 = slurp("ct1.img.snap1", &bl);
	c0 = slurp("ct1.img", &cl);
	T_CHECK(img_open(P("other.img"), 0, &other) == 0);
	T_CHECK(img_merge(P("ct1.img"), 0, NULL, NULL) == -EBUSY);
	T_CHECK(mode_of("ct1.img.snap1") == 0444);
	T_CHECK(same("ct1.img.snap1", b0, bl) && same("ct1.img", c0, cl));
	/* live: the caller's handle stays, its chain attached again */
	T_CHECK(img_open(P("ct1.img"), IMG_OPEN_RDWR, &img) == 0);
	keep = img;
	T_CHECK(img_merge_live(&img, 0, NULL, NULL) == -EBUSY);
	T_CHECK(img == keep && img_backing(img) != NULL);
	T_CHECK(mode_of("ct1.img.snap1") == 0444);
	if (img)
		T_CHECK(byte_at(img, 0) == 'b' && byte_at(img, 131072) == 'x');
	img_close(other);
	other = NULL;

	/* Issue 14 #4: the chain no longer opens by path (a base renamed
	 * away): live snapshot and merge refuse, the handle is the same and
	 * works, nothing new in the directory. */
	T_CHECK(rename(P("ct1.img.snap1"), P("away.img")) == 0);
	T_CHECK(img_snapshot_check(img, NULL, 0) == -ENOENT);
	T_CHECK(img_snapshot_live(&img, NULL, 0, NULL, 0) == -ENOENT);
	T_CHECK(img == keep);
	T_CHECK(access(P("ct1.img.snap1"), F_OK) != 0 && access(P("ct1.img.snap2"), F_OK) != 0);
	T_CHECK(img_merge_live(&img, 0, NULL, NULL) == -ENOENT);
	T_CHECK(img == keep);
	if (img) {
		char buf[4096];
		memset(buf, 'y', sizeof(buf));
		T_CHECK(img_pwrite(img, buf, sizeof(buf), 8192) == (ssize_t)sizeof(buf));
		T_CHECK(byte_at(img, 0) == 'b' && byte_at(img, 8192) == 'y');
		T_CHECK(img_flush(img) == 0);
	}
	T_CHECK(rename(P("away.img"), P("ct1.img.snap1")) == 0);
	/* a taken name is refused before anything changes */
	T_CHECK(mk("taken.img", NULL) == 0);
	T_CHECK(img_snapshot_live(&img, "taken.img", 0, NULL, 0) == -EEXIST);
	T_CHECK(img == keep);
	T_CHECK(img_snapshot_live(&img, NULL, 0, snap, sizeof(snap)) == 0);
	T_CHECK(!strcmp(snap, "ct1.img.snap2") && img != NULL);
	if (img)
		T_CHECK(byte_at(img, 8192) == 'y' && byte_at(img, 131072) == 'x');

	/* A late failure: the new top does not open after the switch.  The
	 * old image is renamed back and opened again; the snapshot name is
	 * gone, nothing is left in the directory. */
	{
		static struct imgi_vfs w;
		char ref[256] = "";
		unsigned m0 = mode_of("ct1.img");
		w = imgi_vfs_posix;
		w.open = w_open;
		w.open_beneath = w_open_beneath;
		w.rename = w_rename;
		w.open_uring = NULL;   /* every open goes through w_open */
		fail_name = "ct1.img.snap3";
		imgi_vfs_set(&w);
		T_CHECK(img_snapshot_live(&img, NULL, 0, NULL, 0) == -EIO);
		imgi_vfs_set(NULL);
		T_CHECK(img != NULL);
		T_CHECK(strstr(img_last_error(), "put back") != NULL);
		T_CHECK(access(P("ct1.img.snap3"), F_OK) != 0);
		T_CHECK(access(P(".ct1.img.snapnew"), F_OK) != 0);
		T_CHECK(mode_of("ct1.img") == m0 && mode_of("ct1.img.snap2") == 0444);
		/* the owner it recorded for the top that never came into use
		 * is cleared again (issue 14 #3c) */
		if (img) {
			struct img_info in;
			T_CHECK(img_info(img, &in) == 0 &&
			      in.incompat_features == IMG_INCOMPAT_BACKING);
			T_CHECK(img_backing_ref(img, ref, sizeof(ref)) > 0 && !strcmp(ref, "ct1.img.snap2"));
			T_CHECK(byte_at(img, 8192) == 'y' && byte_at(img, 131072) == 'x');
			T_CHECK(img_pwrite(img, "z", 1, 9000) == 1);
		}
	}
	T_CHECK(img_close(img) == 0);

	free(b0);
	free(c0);
}

static const struct t_case cases[] = {
	T_CASE(clones_templates_snapshots), T_CASE(owner_cases), T_CASE(owner_cleared_cases),
	T_CASE(owner_format),
};

int main(int argc, char **argv)
{
	int r;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	r = T_MAIN(argc, argv, cases);
	{
		char cmd[600];
		snprintf(cmd, sizeof(cmd), "chmod -R u+w '%s'; rm -rf '%s'", dir, dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cleanup of %s failed\n", dir);
	}
	return r;
}
