/* SPDX-License-Identifier: MIT */
/*
 * Detection of what an image holds, for the filesystems whose mkfs works
 * on a plain file without root: xfs and btrfs (type, label, uuid, size,
 * used, block size from their superblocks), ext2 (type, size from
 * libext2fs), swap and vfat (reported, no sizes), an MD RAID member whose
 * superblock sits near the end of the disk (past the probe view's head),
 * and what is refused: a partition table, an empty disk; the errors an
 * ext4 superblock records (img_fs_errors).  The part of a
 * program that is missing is skipped.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libimg.h"
#include "../helpers/fs_util.h"
#include "../helpers/tassert.h"

static char raw[256], imgp[256];

/* mkfs (a shell command with %s for the raw file) on a raw file of size
 * bytes, then into an image of vsize bytes (0: the raw size), then probe. */
static int make_and_probe(const char *mkfs_fmt, uint64_t size, uint64_t vsize, struct img_fs_info *fi)
{
	char cmd[512];
	struct img *img;
	int r;

	snprintf(cmd, sizeof(cmd), mkfs_fmt, raw);
	if (fsu_run("rm -f %s && truncate -s %llu %s && %s >/dev/null 2>&1", raw,
		    (unsigned long long)size, raw, cmd) != 0) {
		T_ERROR("failed: %s", cmd);
		return -1;
	}
	T_CHECK(fsu_raw_to_img(raw, imgp, 0, vsize) == 0);
	T_CHECK(img_open(imgp, 0, &img) == 0);
	r = img_fs_probe(img, fi);
	T_CHECK(img_close(img) == 0);
	return r;
}

static void xfs(void)
{
	struct img_fs_info fi;

	if (!fsu_have("mkfs.xfs", NULL))
		T_SKIP("mkfs.xfs missing: xfs not tested");
	T_CHECK(make_and_probe("mkfs.xfs -q -f -L xlabel -m uuid=3d0a6b1e-5b0e-4b8e-9d55-0123456789ab %s",
			     300u << 20, 0, &fi) == 0);
	T_CHECK(!strcmp(fi.type, "xfs"));
	T_CHECK(!strcmp(fi.label, "xlabel") && !strcmp(fi.uuid, "3d0a6b1e-5b0e-4b8e-9d55-0123456789ab"));
	T_CHECK(fi.size == 300u << 20 && fi.block_size == 4096);
	T_CHECK((fi.flags & IMG_FS_HAVE_USED) && fi.used > 0 && fi.used < fi.size / 2);
	T_CHECK(!(fi.flags & IMG_FS_HAVE_STATE));
}

static void btrfs(void)
{
	struct img_fs_info fi;

	if (!fsu_have("mkfs.btrfs", NULL))
		T_SKIP("mkfs.btrfs missing: btrfs not tested");
	T_CHECK(make_and_probe("mkfs.btrfs -q -f -L blabel -U 8c4f8a62-93a1-4d6b-8f0e-aabbccddeeff %s",
			     256u << 20, 0, &fi) == 0);
	T_CHECK(!strcmp(fi.type, "btrfs"));
	T_CHECK(!strcmp(fi.label, "blabel") && !strcmp(fi.uuid, "8c4f8a62-93a1-4d6b-8f0e-aabbccddeeff"));
	T_CHECK(fi.size == 256u << 20 && fi.block_size == 4096);
	T_CHECK((fi.flags & IMG_FS_HAVE_USED) && fi.used > 0 && fi.used < fi.size / 4);
}

/* ext2 on a 4 GiB virtual disk: size is the filesystem's. */
static void ext2(void)
{
	struct img_fs_info fi;

	if (!fsu_have("mke2fs", NULL))
		T_SKIP("mke2fs missing: ext2 not tested");
	T_CHECK(make_and_probe("mke2fs -t ext2 -q -F %s", 32u << 20, 4ull << 30, &fi) == 0);
	T_CHECK(!strcmp(fi.type, "ext2") && fi.size == 32u << 20);
	T_CHECK((fi.flags & IMG_FS_HAVE_LABEL) && fi.label[0] == 0);
	T_CHECK((fi.flags & IMG_FS_HAVE_STATE) && fi.state == 0);
	T_CHECK(fi.used > 0 && fi.used < fi.size);
}

/* img_fs_errors: none on a new ext4; what debugfs set in the superblock
 * (as the kernel saves an error); -ENOMEDIUM without ext2/3/4. */
static void ext4_errors(void)
{
	struct img_fs_errors fe;
	struct img_fs_info fi;
	struct img *img;

	if (!fsu_have("mke2fs", NULL) || !fsu_have("debugfs", NULL))
		T_SKIP("mke2fs or debugfs missing: ext4 errors not tested");
	T_ASSERT(make_and_probe("mke2fs -t ext4 -q -F %s", 32u << 20, 0, &fi) == 0);
	T_ASSERT(img_open(imgp, 0, &img) == 0);
	T_CHECK(img_fs_errors(img, &fe) == 0);
	T_CHECK(fe.count == 0 && fe.flags == 0 && fe.first.time == 0 && fe.last.func[0] == 0);
	T_CHECK(img_close(img) == 0);
	T_ASSERT(fsu_run("for c in 'ssv error_count 3' 'ssv first_error_time 1700000000' "
			 "'ssv first_error_func ext4_readdir' 'ssv first_error_line 213' "
			 "'ssv first_error_ino 12' 'ssv last_error_time 20250101' "
			 "'ssv last_error_func ext4_function_name_of_31_bytes_' "
			 "'ssv last_error_block 4242' 'ssv state 3'; do "
			 "debugfs -w -R \"$c\" %s >/dev/null 2>&1 || exit 1; done", raw) == 0);
	T_ASSERT(fsu_raw_to_img(raw, imgp, 0, 0) == 0);
	T_ASSERT(img_open(imgp, 0, &img) == 0);
	T_CHECK(img_fs_errors(img, &fe) == 0);
	T_CHECK(fe.count == 3);
	T_CHECK(fe.flags == IMG_FS_STATE_ERRORS);
	T_CHECK(fe.first.time == 1700000000u && fe.first.line == 213 && fe.first.ino == 12);
	T_CHECK(!strcmp(fe.first.func, "ext4_readdir"));
	T_CHECK(fe.last.block == 4242);
	T_CHECK(!strcmp(fe.last.func, "ext4_function_name_of_31_bytes_"));
	T_CHECK(fe.last.time == 1735689600u);   /* 2025-01-01 */
	T_CHECK(img_close(img) == 0);
	T_ASSERT(make_and_probe("mkswap %s", 16u << 20, 0, &fi) == 0);
	T_ASSERT(img_open(imgp, 0, &img) == 0);
	T_CHECK(img_fs_errors(img, &fe) == -ENOMEDIUM);
	T_CHECK(img_close(img) == 0);
}

static void swap(void)
{
	struct img_fs_info fi;

	if (!fsu_have("mkswap", NULL))
		T_SKIP("mkswap missing: swap not tested");
	T_CHECK(make_and_probe("mkswap -L sw %s", 16u << 20, 0, &fi) == 0);
	T_CHECK(!strcmp(fi.type, "swap") && !strcmp(fi.label, "sw"));
	T_CHECK(!(fi.flags & IMG_FS_HAVE_SIZE));
}

static void vfat(void)
{
	struct img_fs_info fi;

	if (!fsu_have("mkfs.vfat", NULL))
		T_SKIP("mkfs.vfat missing: vfat not tested");
	T_CHECK(make_and_probe("mkfs.vfat -n VLABEL %s", 64u << 20, 0, &fi) == 0);
	T_CHECK(!strcmp(fi.type, "vfat") && !strcmp(fi.label, "VLABEL"));
}

/* Nothing at all; an MD superblock past the probe view's head; a DOS
 * partition table. */
static void nothing_md_dos(void)
{
	struct img_fs_info fi;
	struct img_create_opts o = { .virtual_size = 1ull << 30, .flags = IMG_CREATE_OVERWRITE };
	struct img *img = NULL;

	T_CHECK(img_create(imgp, &o) == 0 && img_open(imgp, IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_fs_probe(img, &fi) == -ENOMEDIUM);
	T_CHECK(strstr(img_last_error(), "no filesystem") != NULL);
	T_CHECK(fi.type[0] == 0 && fi.flags == 0);
	{
		/* An MD 0.90 superblock: 64 KiB below the end of the disk
		 * rounded down to 64 KiB, past the probe view's head. */
		uint32_t sb[14] = { 0xa92b4efc, 0, 90, 0, 0, 0x11223344, 0, 1, 1000, 2, 2, 0, 0, 0x55667788 };
		T_CHECK(img_pwrite(img, sb, sizeof(sb), (1ull << 30) - 65536) == sizeof(sb));
		T_CHECK(img_fs_probe(img, &fi) == 0);
		T_CHECK(!strcmp(fi.type, "linux_raid_member"));
		T_CHECK(!strcmp(fi.uuid, "11223344-5566-7788-0000-000000000000"));
		T_CHECK(!(fi.flags & (IMG_FS_HAVE_SIZE | IMG_FS_HAVE_USED)));
	}
	{
		/* A DOS partition table at sector 0: refused, and said so. */
		uint8_t mbr[512] = { 0 };
		mbr[446 + 4] = 0x83;                       /* Linux */
		mbr[446 + 9] = 0x08;                       /* start 2048 */
		mbr[446 + 14] = 0x01;                      /* 65536 sectors */
		mbr[510] = 0x55;
		mbr[511] = 0xaa;
		T_CHECK(img_discard(img, 0, 1ull << 30) == 0);
		T_CHECK(img_pwrite(img, mbr, sizeof(mbr), 0) == sizeof(mbr));
		T_CHECK(img_fs_probe(img, &fi) == -ENOMEDIUM);
		T_CHECK(strstr(img_last_error(), "dos partition table") != NULL);
	}
	T_CHECK(img_close(img) == 0);

}

static const struct t_case cases[] = {
	T_CASE(xfs), T_CASE(btrfs), T_CASE(ext2), T_CASE(ext4_errors), T_CASE(swap), T_CASE(vfat), T_CASE(nothing_md_dos),
};

int main(int argc, char **argv)
{
	int r;

	snprintf(raw, sizeof(raw), "%s/p.raw", fsu_tmpdir());
	snprintf(imgp, sizeof(imgp), "%s/p.img", fsu_tmpdir());
	r = T_MAIN(argc, argv, cases);
	fsu_cleanup();
	return r;
}
