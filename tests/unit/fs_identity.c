/* SPDX-License-Identifier: MIT */
/*
 * img_fs_set_identity (issue 16, clone identity): an ext2/3/4 filesystem
 * in a clone gets a new UUID and label written in the clone only.  For
 * ext4 with metadata_csum (the seed feature is added), ext4 with uninit_bg
 * (crc16 group descriptor checksums recomputed) and ext3 (no checksums):
 * the clone's filesystem reads back with the new identity, e2fsck -fn
 * finds it clean, the base's bytes are unchanged, and doing it again (a
 * clone of a clone) works.  Then the refusals, each changing nothing: a
 * read-only handle, bad arguments, a label too long, a journal needing
 * recovery, recorded errors, no filesystem.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libimg.h"
#include "fs_ext2.h"
#include "../helpers/fs_util.h"
#include "../helpers/tassert.h"

#define CS (64u << 10)
#define FS_SIZE (64u << 20)

static char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *b = NULL;
	long len;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (b = malloc((size_t)len + 1)) && fread(b, 1, (size_t)len, f) == (size_t)len) {
		*n = (size_t)len;
	} else {
		free(b);
		b = NULL;
	}
	fclose(f);
	return b;
}

/* Same bytes as before (base). */
static int same_file(const char *path, const char *before, size_t n)
{
	size_t m = 0;
	char *now = slurp(path, &m);
	int same = now && m == n && !memcmp(now, before, n);

	free(now);
	return same;
}

/* The first FS_SIZE bytes of img's virtual disk (a handle open for
 * writing rewrites the header, so the file's bytes are not compared). */
static char *disk_bytes(struct img *img, size_t *n)
{
	char raw[512], *b;

	snprintf(raw, sizeof(raw), "%s/disk.raw", fsu_tmpdir());
	if (fsu_img_to_raw(img, FS_SIZE, raw) != 0)
		return NULL;
	b = slurp(raw, n);
	unlink(raw);
	return b;
}

static int same_disk(struct img *img, const char *before, size_t n)
{
	size_t m = 0;
	char *now = disk_bytes(img, &m);
	int same = before && now && m == n && !memcmp(before, now, n);

	free(now);
	return same;
}

static void make_clone(const char *dir, const char *clone, const char *base)
{
	char path[512];
	struct img_create_opts o = { .backing_file = base, .flags = IMG_CREATE_OVERWRITE };

	snprintf(path, sizeof(path), "%s/%s", dir, clone);
	T_CHECK(img_create(path, &o) == 0);
}

static int fsck_clean(struct img *img, const char *what)
{
	char raw[512];
	int r;

	snprintf(raw, sizeof(raw), "%s/check.raw", fsu_tmpdir());
	T_CHECK(fsu_img_to_raw(img, FS_SIZE, raw) == 0);
	r = fsu_run("e2fsck -fn %s >%s/fsck.log 2>&1", raw, fsu_tmpdir());
	if (r != 0) {
		fprintf(stderr, "%s: e2fsck -fn exit %d:\n", what, r);
		fsu_run("cat %s/fsck.log >&2", fsu_tmpdir());
	}
	unlink(raw);
	return r == 0;
}

static int has_feature(struct img *img, const char *feature)
{
	char raw[512];
	int r;

	snprintf(raw, sizeof(raw), "%s/feat.raw", fsu_tmpdir());
	T_CHECK(fsu_img_to_raw(img, FS_SIZE, raw) == 0);
	r = fsu_run("dumpe2fs -h %s 2>/dev/null | grep '^Filesystem features:' | grep -qw %s",
		    raw, feature);
	unlink(raw);
	return r == 0;
}

/* The first backup superblock holds uuid too. */
static int backup_has_uuid(struct img *img, const char *uuid)
{
	char raw[512];
	int r;

	snprintf(raw, sizeof(raw), "%s/backup.raw", fsu_tmpdir());
	T_CHECK(fsu_img_to_raw(img, FS_SIZE, raw) == 0);
	r = fsu_run("r=%s; b=$(dumpe2fs $r 2>/dev/null | sed -n 's/.*Backup superblock at \\([0-9]*\\).*/\\1/p' | head -n1); "
		    "bs=$(dumpe2fs -h $r 2>/dev/null | awk '/^Block size:/ { print $3 }'); "
		    "[ -n \"$b\" ] && dumpe2fs -o superblock=$b -o blocksize=$bs -h $r 2>/dev/null | "
		    "grep -q '^Filesystem UUID: *%s$'", raw, uuid);
	unlink(raw);
	return r == 0;
}

static void set_state(struct img *img, int recover, uint16_t state_or, uint16_t state_and)
{
	ext2_filsys fs;

	T_CHECK(imgi_ext2fs_open(img, EXT2_FLAG_RW, &fs) == 0);
	if (recover)
		ext2fs_set_feature_journal_needs_recovery(fs->super);
	else
		ext2fs_clear_feature_journal_needs_recovery(fs->super);
	fs->super->s_state = (uint16_t)((fs->super->s_state & state_and) | state_or);
	ext2fs_mark_super_dirty(fs);
	T_CHECK(ext2fs_close_free(&fs) == 0);
}

static void one_kind(const char *kind, const char *mkfs_opts, const char *seed_feature)
{
	char raw[512], base[512], clone[512], clone2[512], *before;
	const char *u1 = "11111111-2222-4333-8444-555555555555";
	const char *u2 = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
	struct img *img;
	struct img_fs_info fi;
	size_t n = 0;

	snprintf(raw, sizeof(raw), "%s/%s.raw", fsu_tmpdir(), kind);
	snprintf(base, sizeof(base), "%s/%s-base.img", fsu_tmpdir(), kind);
	snprintf(clone, sizeof(clone), "%s/%s-c1.img", fsu_tmpdir(), kind);
	snprintf(clone2, sizeof(clone2), "%s/%s-c2.img", fsu_tmpdir(), kind);
	T_CHECK(fsu_run("mke2fs -F -q %s -L base -U 0f6ee1d6-0e39-4a6e-9c1c-4f6b7d0f0a11 %s 64M "
		      ">/dev/null", mkfs_opts, raw) == 0);
	T_CHECK(fsu_raw_to_img(raw, base, CS, FS_SIZE) == 0);
	unlink(raw);
	before = slurp(base, &n);
	T_CHECK(before != NULL);

	snprintf(raw, sizeof(raw), "%s-base.img", kind);
	make_clone(fsu_tmpdir(), strrchr(clone, '/') + 1, raw);
	T_CHECK(img_open(clone, IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_fs_set_identity(img, u1, "clone-one", 0) == 0);
	T_CHECK(img_fs_probe(img, &fi) == 0);
	T_CHECK(!strcmp(fi.uuid, u1));
	T_CHECK(!strcmp(fi.label, "clone-one"));
	T_CHECK(fsck_clean(img, kind));
	T_CHECK(backup_has_uuid(img, u1));
	if (seed_feature)
		T_CHECK(has_feature(img, seed_feature));
	/* only the UUID, then only the label */
	T_CHECK(img_fs_set_identity(img, u2, NULL, 0) == 0);
	T_CHECK(img_fs_probe(img, &fi) == 0 && !strcmp(fi.uuid, u2) && !strcmp(fi.label, "clone-one"));
	T_CHECK(img_fs_set_identity(img, NULL, "", 0) == 0);
	T_CHECK(img_fs_probe(img, &fi) == 0 && !strcmp(fi.uuid, u2) && !strcmp(fi.label, ""));
	T_CHECK(fsck_clean(img, kind));
	T_CHECK(img_close(img) == 0);

	/* a clone of the clone: the seed feature is there already */
	snprintf(raw, sizeof(raw), "%s-c1.img", kind);
	make_clone(fsu_tmpdir(), strrchr(clone2, '/') + 1, raw);
	T_CHECK(img_open(clone2, IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_fs_set_identity(img, u1, NULL, 0) == 0);
	T_CHECK(img_fs_probe(img, &fi) == 0 && !strcmp(fi.uuid, u1));
	T_CHECK(fsck_clean(img, kind));
	T_CHECK(img_close(img) == 0);

	/* the base was never written */
	T_CHECK(img_open(base, 0, &img) == 0);
	T_CHECK(img_fs_probe(img, &fi) == 0);
	T_CHECK(!strcmp(fi.uuid, "0f6ee1d6-0e39-4a6e-9c1c-4f6b7d0f0a11") && !strcmp(fi.label, "base"));
	T_CHECK(img_close(img) == 0);
	T_CHECK(same_file(base, before, n));
	free(before);
}

static void refusals(void)
{
	char raw[512], path[512], *before;
	const char *u = "11111111-2222-4333-8444-555555555555";
	struct img *img;
	size_t n = 0;

	snprintf(raw, sizeof(raw), "%s/r.raw", fsu_tmpdir());
	snprintf(path, sizeof(path), "%s/r.img", fsu_tmpdir());
	T_CHECK(fsu_run("mke2fs -F -q -t ext4 %s 64M >/dev/null", raw) == 0);
	T_CHECK(fsu_raw_to_img(raw, path, CS, FS_SIZE) == 0);
	T_CHECK(img_open(path, 0, &img) == 0);
	T_CHECK(img_fs_set_identity(img, u, NULL, 0) == -EROFS);
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	before = disk_bytes(img, &n);
	T_CHECK(img_fs_set_identity(img, "not-a-uuid", NULL, 0) == -EINVAL);
	T_CHECK(img_fs_set_identity(img, "11111111-2222-4333-8444-55555555555g", NULL, 0) == -EINVAL);
	T_CHECK(img_fs_set_identity(img, u, NULL, 0x1) == -EINVAL);
	T_CHECK(img_fs_set_identity(img, NULL, NULL, 0) == -EINVAL);
	T_CHECK(img_fs_set_identity(img, NULL, "seventeen-bytes!!", 0) == -EINVAL);
	T_CHECK(same_disk(img, before, n));
	/* needing recovery, errors recorded: refused, the disk as it was */
	set_state(img, 1, 0, 0xffff);
	free(before);
	before = disk_bytes(img, &n);
	T_CHECK(img_fs_set_identity(img, u, NULL, 0) == -ENOTRECOVERABLE);
	T_CHECK(strstr(img_last_error(), "journal recovery") != NULL);
	T_CHECK(same_disk(img, before, n));
	free(before);
	set_state(img, 0, EXT2_ERROR_FS, 0xffff);
	T_CHECK(img_fs_set_identity(img, u, NULL, 0) == -ENOTRECOVERABLE);
	T_CHECK(strstr(img_last_error(), "errors") != NULL);
	T_CHECK(img_close(img) == 0);

	/* no filesystem */
	{
		struct img_create_opts o = { .virtual_size = 8u << 20, .flags = IMG_CREATE_OVERWRITE };
		snprintf(path, sizeof(path), "%s/empty.img", fsu_tmpdir());
		T_CHECK(img_create(path, &o) == 0);
		T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
		T_CHECK(img_fs_set_identity(img, u, NULL, 0) == -ENOMEDIUM);
		T_CHECK(img_close(img) == 0);
	}
	unlink(raw);
}

static void ext4_csum(void)
{
	one_kind("csum", "-t ext4 -O metadata_csum,^metadata_csum_seed", "metadata_csum_seed");
}

static void ext4_gdt(void)
{
	one_kind("gdt", "-t ext4 -O ^metadata_csum,uninit_bg", NULL);
}

static void ext3(void)
{
	one_kind("ext3", "-t ext3", NULL);
}

static const struct t_case cases[] = {
	T_CASE(ext4_csum), T_CASE(ext4_gdt), T_CASE(ext3), T_CASE(refusals),
};

int main(int argc, char **argv)
{
	int r;

	if (!fsu_have("mke2fs", "e2fsck", "dumpe2fs", NULL)) {
		printf("mke2fs, e2fsck or dumpe2fs missing\n");
		return 77;
	}
	r = T_MAIN(argc, argv, cases);
	fsu_cleanup();
	return r;
}
