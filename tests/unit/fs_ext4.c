/* SPDX-License-Identifier: MIT */
/*
 * ext4 inside an image: mke2fs -d makes a raw filesystem from a directory,
 * the test moves it into an image, probes it (libblkid + libext2fs), deletes
 * files through libext2fs over the image's io_manager (no mount), gives the
 * free blocks back with img_fs_trim_free, and after each step reads the
 * virtual disk back into a raw file that e2fsck -fn must find clean and
 * whose surviving files must be byte-for-byte the originals.  Then the
 * refusals: a filesystem needing recovery, one with errors, one bigger
 * than the disk, a read-only handle, and an image with no filesystem.
 * A 1 KiB-block filesystem checks that the boot block is never touched.
 * Named sub-tests (tassert.h): the first is one story (probe, delete,
 * trim, reopen), the others each start from a filesystem of their own
 * made from the same tree (setup).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <et/com_err.h>

#include "libimg.h"
#include "fs_ext2.h"
#include "../helpers/fs_util.h"
#include "../helpers/tassert.h"

#define CS (64u << 10)
#define NBIG 24          /* files of 640 KiB: 10 clusters each */
#define NSMALL 300       /* files of 6 KiB: share clusters */

static char dir[256], raw[256], imgp[256], back[256];

static void fill(uint8_t *b, size_t n, unsigned seed)
{
	uint32_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13; x ^= x >> 17; x ^= x << 5;
		b[i] = (uint8_t)x;
	}
}

static int write_file(const char *path, size_t n, unsigned seed)
{
	uint8_t *b = malloc(n);
	FILE *f = fopen(path, "w");
	int ok = b && f;

	if (ok) {
		fill(b, n, seed);
		ok = fwrite(b, 1, n, f) == n;
	}
	if (f && fclose(f))
		ok = 0;
	free(b);
	return ok ? 0 : -1;
}

static void make_tree(void)
{
	char p[512];

	snprintf(dir, sizeof(dir), "%s/tree", fsu_tmpdir());
	T_CHECK(fsu_run("mkdir -p %s/big %s/small %s/keep", dir, dir, dir) == 0);
	for (int i = 0; i < NBIG; i++) {
		snprintf(p, sizeof(p), "%s/big/f%d", dir, i);
		T_CHECK(write_file(p, 640u << 10, (unsigned)i) == 0);
	}
	for (int i = 0; i < NSMALL; i++) {
		snprintf(p, sizeof(p), "%s/small/s%d", dir, i);
		T_CHECK(write_file(p, 6u << 10, 1000u + (unsigned)i) == 0);
	}
	snprintf(p, sizeof(p), "%s/keep/k", dir);
	T_CHECK(write_file(p, 3u << 20, 77) == 0);
}

/* Delete /path through libext2fs (what debugfs "rm" does): unlink, free
 * the blocks and the inode. */
static errcode_t ext_rm(ext2_filsys fs, const char *parent, const char *name)
{
	ext2_ino_t dino, ino;
	struct ext2_inode inode;
	char path[256];
	errcode_t e;

	snprintf(path, sizeof(path), "%s/%s", strcmp(parent, "/") ? parent : "", name);
	if ((e = ext2fs_namei(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, parent, &dino)) ||
	    (e = ext2fs_namei(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, path, &ino)) ||
	    (e = ext2fs_unlink(fs, dino, name, ino, 0)) ||
	    (e = ext2fs_read_inode(fs, ino, &inode)))
		return e;
	inode.i_links_count = 0;
	inode.i_dtime = (uint32_t)time(NULL);
	if ((e = ext2fs_punch(fs, ino, &inode, NULL, 0, ~0ULL)) ||
	    (e = ext2fs_read_inode(fs, ino, &inode)))
		return e;
	inode.i_links_count = 0;
	inode.i_dtime = (uint32_t)time(NULL);
	if ((e = ext2fs_write_inode(fs, ino, &inode)))
		return e;
	ext2fs_inode_alloc_stats2(fs, ino, -1, 0);
	return 0;
}

static int rm_ok(ext2_filsys fs, const char *parent, const char *name)
{
	errcode_t e = ext_rm(fs, parent, name);

	if (e)
		fprintf(stderr, "rm %s/%s: %s\n", parent, name, error_message(e));
	return e == 0;
}

/* The image's virtual disk, read back, is a clean filesystem whose kept
 * files are the originals and whose deleted files are gone. */
static void verify(struct img *img, uint64_t fs_size, int deleted, const char *when)
{
	T_CHECK(fsu_img_to_raw(img, fs_size, back) == 0);
	if (fsu_run("e2fsck -fn %s >%s/fsck.log 2>&1", back, fsu_tmpdir()) != 0) {
		T_ERROR("e2fsck not clean %s:", when);
		fsu_run("cat %s/fsck.log >&2", fsu_tmpdir());
	}
	/* debugfs rdump of the kept parts, compared with the tree. */
	T_CHECK(fsu_run("rm -rf %s/out && mkdir %s/out && debugfs -R 'rdump / %s/out' %s >/dev/null 2>&1",
		      fsu_tmpdir(), fsu_tmpdir(), fsu_tmpdir(), back) == 0);
	T_CHECK(fsu_run("cmp -s %s/keep/k %s/out/keep/k", dir, fsu_tmpdir()) == 0);
	for (int i = 0; i < NBIG; i++) {
		int gone = deleted && i % 2 == 0;
		int rc = fsu_run("cmp -s %s/big/f%d %s/out/big/f%d", dir, i, fsu_tmpdir(), i);
		if (gone ? fsu_run("test -e %s/out/big/f%d", fsu_tmpdir(), i) == 0 : rc != 0)
			T_ERROR("%s: big/f%d %s", when, i, gone ? "still there" : "differs");
	}
	for (int i = 0; i < NSMALL; i++) {
		int gone = deleted && i % 2 == 1;
		int rc = fsu_run("cmp -s %s/small/s%d %s/out/small/s%d", dir, i, fsu_tmpdir(), i);
		if (gone ? fsu_run("test -e %s/out/small/s%d", fsu_tmpdir(), i) == 0 : rc != 0)
			T_ERROR("%s: small/s%d %s", when, i, gone ? "still there" : "differs");
	}
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

static void refusals(struct img *img)
{
	struct img_info a, b;
	struct img_fs_trim_stats ts;

	img_info(img, &a);
	set_state(img, 1, 0, 0xffff);
	T_CHECK(img_fs_trim_free(img, 0, &ts) == -ENOTRECOVERABLE);
	T_CHECK(strstr(img_last_error(), "journal recovery") != NULL);
	set_state(img, 0, EXT2_ERROR_FS, 0xffff);
	T_CHECK(img_fs_trim_free(img, 0, &ts) == -ENOTRECOVERABLE);
	T_CHECK(strstr(img_last_error(), "errors") != NULL);
	set_state(img, 0, 0, (uint16_t)~EXT2_VALID_FS & (uint16_t)~EXT2_ERROR_FS);
	T_CHECK(img_fs_trim_free(img, 0, &ts) == -ENOTRECOVERABLE);
	T_CHECK(strstr(img_last_error(), "cleanly") != NULL);
	{
		struct img_fs_info fi;
		T_CHECK(img_fs_probe(img, &fi) == 0 && (fi.flags & IMG_FS_HAVE_STATE) &&
		      fi.state == IMG_FS_STATE_NOT_CLEAN);
	}
	set_state(img, 0, EXT2_VALID_FS, (uint16_t)~EXT2_ERROR_FS);
	img_info(img, &b);
	T_CHECK(b.allocated_clusters == a.allocated_clusters);
	T_CHECK(img_fs_trim_free(img, 0x80, &ts) == -EINVAL);
	T_CHECK(img_fs_trim_free(img, 0, &ts) == 0);   /* clean again: accepted */
}

/* A 1 KiB-block filesystem: block 0 (the boot block) is outside the
 * bitmap; whatever is written there survives a trim. */
static void setup(void);

static void small_blocks(void)
{
	struct img *img;
	struct img_fs_info fi;
	struct img_fs_trim_stats ts;
	uint8_t boot[1024], got[1024];
	ext2_filsys fs;

	setup();
	T_CHECK(fsu_run("rm -f %s && mke2fs -t ext4 -b 1024 -F -q -d %s/small %s 16M >/dev/null", raw, dir, raw) == 0);
	T_CHECK(fsu_raw_to_img(raw, imgp, CS, 0) == 0);
	T_CHECK(img_open(imgp, IMG_OPEN_RDWR, &img) == 0);
	fill(boot, sizeof(boot), 5);
	T_CHECK(img_pwrite(img, boot, sizeof(boot), 0) == sizeof(boot));
	T_CHECK(img_fs_probe(img, &fi) == 0);
	T_CHECK(fi.block_size == 1024 && fi.size == 16u << 20);
	T_CHECK(imgi_ext2fs_open(img, EXT2_FLAG_RW, &fs) == 0);
	T_CHECK(ext2fs_read_bitmaps(fs) == 0);
	{
		/* The channel's block writes, zeroout and discard land in the
		 * image (on 64 free blocks, given back to zeros after). */
		blk64_t b;
		uint8_t pat[64 * 1024], z[64 * 1024] = { 0 };
		blk64_t start = 4096, u;
		for (;;) {   /* a run of 64 free blocks */
			if (ext2fs_find_first_zero_block_bitmap2(fs->block_map, start, 16383, &b)) {
				b = 0;
				break;
			}
			if (ext2fs_find_first_set_block_bitmap2(fs->block_map, b, 16383, &u))
				u = 16384;
			if (u - b >= 64)
				break;
			start = u;
		}
		T_CHECK(b != 0 && ext2fs_test_block_bitmap_range2(fs->block_map, b, 64));
		fill(pat, sizeof(pat), 9);
		T_CHECK(io_channel_write_blk64(fs->io, b, 64, pat) == 0);
		T_CHECK(img_pread(img, got, sizeof(got), b * 1024) == sizeof(got) && !memcmp(got, pat, sizeof(got)));
		T_CHECK(io_channel_zeroout(fs->io, b, 64) == 0);
		T_CHECK(img_pread(img, pat, sizeof(pat), b * 1024) == sizeof(pat) && !memcmp(pat, z, sizeof(z)));
		fill(pat, sizeof(pat), 10);
		T_CHECK(io_channel_write_blk64(fs->io, b, 64, pat) == 0);
		T_CHECK(io_channel_discard(fs->io, b, 64) == 0);
		T_CHECK(img_pread(img, pat, sizeof(pat), b * 1024) == sizeof(pat) && !memcmp(pat, z, sizeof(z)));
		/* reads and writes past the virtual disk fail cleanly */
		T_CHECK(io_channel_read_blk64(fs->io, (16u << 20) / 1024, 1, pat) == EXT2_ET_SHORT_READ);
	}
	for (int i = 0; i < NSMALL; i++) {
		char n[32];
		snprintf(n, sizeof(n), "s%d", i);
		if (!rm_ok(fs, "/", n)) {
			T_ERROR("rm small/%s", n);
			break;
		}
	}
	T_CHECK(ext2fs_close_free(&fs) == 0);
	T_CHECK(img_fs_trim_free(img, 0, &ts) == 0);
	T_CHECK(ts.clusters_discarded > 0);
	T_CHECK(img_pread(img, got, sizeof(got), 0) == sizeof(got) && !memcmp(got, boot, sizeof(got)));
	T_CHECK(fsu_img_to_raw(img, 16u << 20, back) == 0);
	T_CHECK(fsu_run("e2fsck -fn %s >/dev/null 2>&1", back) == 0);
	T_CHECK(img_close(img) == 0);
}

/* The tools are there (else the sub-test is skipped), the tree made
 * (once: it is only read), and imgp a new image holding a new 128 MiB
 * ext4 of the tree, on a 256 MiB disk: the disk is bigger than the
 * filesystem, the probe reports the filesystem's size, and the trim never
 * looks past it. */
static void setup(void)
{
	static int tree_made;

	if (!fsu_have("mke2fs", "e2fsck", "debugfs", "cmp", NULL))
		T_SKIP("mke2fs, e2fsck or debugfs missing");
	snprintf(raw, sizeof(raw), "%s/fs.raw", fsu_tmpdir());
	snprintf(imgp, sizeof(imgp), "%s/fs.img", fsu_tmpdir());
	snprintf(back, sizeof(back), "%s/back.raw", fsu_tmpdir());
	if (!tree_made) {
		make_tree();
		tree_made = 1;
	}
	T_CHECK(fsu_run("mke2fs -t ext4 -b 4096 -F -q -L fs-test -U 0f6ee1d6-0e39-4a6e-9c1c-4f6b7d0f0a11 "
		      "-E lazy_itable_init=1,nodiscard -d %s %s 128M >/dev/null", dir, raw) == 0);
	T_CHECK(fsu_raw_to_img(raw, imgp, CS, 256u << 20) == 0);
}

static void probe_delete_trim(void)
{
	struct img *img;
	struct img_fs_info fi;
	struct img_info before, after;
	struct img_fs_trim_stats ts, ts2;
	ext2_filsys fs;
	const uint64_t fs_size = 128u << 20;
	uint64_t used0, deleted = 0;

	setup();
	T_CHECK(img_open(imgp, IMG_OPEN_RDWR, &img) == 0);

	/* Probe. */
	T_CHECK(img_fs_probe(img, &fi) == 0);
	T_CHECK(!strcmp(fi.type, "ext4"));
	T_CHECK(!strcmp(fi.label, "fs-test") && (fi.flags & IMG_FS_HAVE_LABEL));
	T_CHECK(!strcmp(fi.uuid, "0f6ee1d6-0e39-4a6e-9c1c-4f6b7d0f0a11") && (fi.flags & IMG_FS_HAVE_UUID));
	T_CHECK(fi.size == fs_size && (fi.flags & IMG_FS_HAVE_SIZE));
	T_CHECK(fi.block_size == 4096);
	T_CHECK((fi.flags & IMG_FS_HAVE_STATE) && fi.state == 0);
	/* used covers the data written (15 MiB + 1.76 MiB + 3 MiB) and is far
	 * below the size. */
	used0 = fi.used;
	T_CHECK((fi.flags & IMG_FS_HAVE_USED) && used0 >= (NBIG * 640ull << 10) + (3u << 20) + NSMALL * 6ull * 1024);
	T_CHECK(used0 < fs_size / 2);
	verify(img, fs_size, 0, "converted");

	/* Nothing free is mapped yet except what mke2fs zeroed: a trim now
	 * must leave every file intact. */
	T_CHECK(img_fs_trim_free(img, 0, &ts) == 0);
	verify(img, fs_size, 0, "first trim");

	/* Delete half the files through libext2fs over the image. */
	T_CHECK(imgi_ext2fs_open(img, EXT2_FLAG_RW, &fs) == 0);
	T_CHECK(ext2fs_read_bitmaps(fs) == 0);
	for (int i = 0; i < NBIG; i += 2) {
		char n[32];
		snprintf(n, sizeof(n), "f%d", i);
		T_CHECK(rm_ok(fs, "/big", n));
		deleted += 640u << 10;
	}
	for (int i = 1; i < NSMALL; i += 2) {
		char n[32];
		snprintf(n, sizeof(n), "s%d", i);
		T_CHECK(rm_ok(fs, "/small", n));
		deleted += 8u << 10;   /* two 4 KiB blocks */
	}
	T_CHECK(ext2fs_close_free(&fs) == 0);
	T_CHECK(img_fs_probe(img, &fi) == 0);
	T_CHECK(fi.used <= used0 - deleted + (64u << 10) && fi.used >= used0 - deleted - (64u << 10));
	verify(img, fs_size, 1, "after rm");

	/* Give the free blocks back. */
	img_info(img, &before);
	/* Whole clusters only, first: nothing is punched. */
	T_CHECK(img_fs_trim_free(img, IMG_FS_TRIM_WHOLE_CLUSTERS, &ts2) == 0);
	img_info(img, &after);
	T_CHECK(ts2.clusters_discarded >= (NBIG / 2) * 9);   /* each deleted big file: >= 9 whole clusters */
	T_CHECK(ts2.bytes_punched == 0);
	T_CHECK(before.allocated_clusters - after.allocated_clusters == ts2.clusters_discarded);
	T_CHECK(ts2.disk_usage_before == before.disk_usage && ts2.disk_usage_after == after.disk_usage);
	verify(img, fs_size, 1, "after whole-cluster trim");
	/* Then the free parts of partly used clusters. */
	T_CHECK(img_fs_trim_free(img, 0, &ts) == 0);
	img_info(img, &after);
	T_CHECK(ts.clusters_discarded == 0);
	T_CHECK(ts.bytes_punched >= (NSMALL / 2) * 4096ull);   /* deleted small files sit between kept ones */
	T_CHECK(ts.disk_usage_after == after.disk_usage && ts.disk_usage_after < ts2.disk_usage_after);
	ts.clusters_discarded = ts2.clusters_discarded;
	T_CHECK(before.disk_usage - after.disk_usage >= deleted * 9 / 10);
	T_CHECK(ts.fs_free_bytes == fs_size - fi.used);
	/* Host space is now close to what the filesystem uses. */
	T_CHECK(after.disk_usage <= after.metadata_size + fi.used + (2u << 20));
	fprintf(stderr, "SUMMARY: trim: %llu clusters unmapped, %llu bytes punched, disk usage %llu -> %llu (fs used %llu)\n",
		(unsigned long long)ts.clusters_discarded, (unsigned long long)ts.bytes_punched,
		(unsigned long long)before.disk_usage, (unsigned long long)after.disk_usage,
		(unsigned long long)fi.used);
	verify(img, fs_size, 1, "after trim");

	/* Again: nothing more to give back. */
	T_CHECK(img_fs_trim_free(img, 0, &ts2) == 0);
	T_CHECK(ts2.clusters_discarded == 0 && ts2.disk_usage_after == ts.disk_usage_after);
	/* Reopen: the unmapping was committed. */
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open(imgp, IMG_OPEN_RDWR, &img) == 0);
	img_info(img, &before);
	T_CHECK(before.allocated_clusters == after.allocated_clusters);
	verify(img, fs_size, 1, "reopened");

	T_CHECK(img_close(img) == 0);
}

/* Needing recovery, with errors, not clean: refused, nothing changed. */
static void refused_states(void)
{
	struct img *img;

	setup();
	T_CHECK(img_open(imgp, IMG_OPEN_RDWR, &img) == 0);
	refusals(img);
	T_CHECK(img_close(img) == 0);
}

static void read_only_and_too_big(void)
{
	struct img *img;
	struct img_fs_info fi;
	struct img_info before, after;

	setup();
	/* Read-only handle; filesystem bigger than the disk. */
	T_CHECK(img_open(imgp, 0, &img) == 0);
	T_CHECK(img_fs_trim_free(img, 0, NULL) == -EROFS);
	T_CHECK(img_fs_probe(img, &fi) == 0 && !strcmp(fi.type, "ext4"));
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open(imgp, IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_resize(img, 100u << 20, IMG_RESIZE_DISCARD_DATA) == 0);
	img_info(img, &before);
	T_CHECK(img_fs_trim_free(img, 0, NULL) == -ENOTRECOVERABLE);
	T_CHECK(strstr(img_last_error(), "bigger than the virtual disk") != NULL);
	img_info(img, &after);
	T_CHECK(before.allocated_clusters == after.allocated_clusters);
	T_CHECK(img_close(img) == 0);

}

static void no_filesystem(void)
{
	struct img *img;
	struct img_fs_info fi;
	struct img_create_opts o = { .virtual_size = 64u << 20, .cluster_size = CS, .flags = IMG_CREATE_OVERWRITE };

	setup();
	/* No filesystem at all. */
	T_CHECK(img_create(imgp, &o) == 0 && img_open(imgp, IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_fs_probe(img, &fi) == -ENOMEDIUM);
	T_CHECK(strstr(img_last_error(), "no filesystem") != NULL);
	T_CHECK(img_fs_trim_free(img, 0, NULL) == -ENOMEDIUM);
	T_CHECK(!strcmp(img_strerror(-ENOMEDIUM), "no filesystem recognised in the image"));
	T_CHECK(img_close(img) == 0);

}

static const struct t_case cases[] = {
	T_CASE(probe_delete_trim), T_CASE(refused_states), T_CASE(read_only_and_too_big),
	T_CASE(no_filesystem), T_CASE(small_blocks),
};

int main(int argc, char **argv)
{
	atexit(fsu_cleanup);
	return T_MAIN(argc, argv, cases);
}
