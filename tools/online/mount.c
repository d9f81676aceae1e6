/* SPDX-License-Identifier: MIT */
/* The filesystem of a mounted image; see mount.h. */
#include <blkid.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common_fs.h"
#include "mount.h"

int online_blkid_type(const char *dev, char *type, size_t len)
{
	blkid_probe pr;
	const char *val = NULL;
	int r;

	type[0] = 0;
	pr = blkid_new_probe_from_filename(dev);
	if (!pr)
		return -errno ? -errno : -EIO;
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE);
	r = blkid_do_safeprobe(pr);
	if (r == 0 && blkid_probe_lookup_value(pr, "TYPE", &val, NULL) == 0 && val)
		snprintf(type, len, "%s", val);
	blkid_free_probe(pr);
	return r < 0 ? -EIO : 0;
}


/* 1 if this process has capability bit cap in its effective set. */
static int have_cap(int cap)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	unsigned long long eff = 0;
	int found = 0;

	if (!f)
		return 1;
	while (!found && fgets(line, sizeof(line), f))
		found = sscanf(line, "CapEff: %llx", &eff) == 1;
	fclose(f);
	return !found || ((eff >> cap) & 1);
}

/* The mounted ext2/3/4 on dev already spans all of dev ("Block count" times
 * "Block size" of dumpe2fs -h, which reads a mounted filesystem): 1 yes,
 * 0 no or unknown. */
static int ext_fills_device(const char *dev)
{
	char out[16384], *p, *q;
	char *av[] = { "dumpe2fs", "-h", (char *)dev, NULL };
	unsigned long long count, block;
	uint64_t devsize, span;
	int fd, ok;

	if ((fd = open(dev, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	ok = ioctl(fd, BLKGETSIZE64, &devsize) == 0;
	close(fd);
	if (!ok || run_capture(av, out, sizeof(out)) != 0)
		return 0;
	p = strstr(out, "\nBlock count:");
	q = strstr(out, "\nBlock size:");
	if (!p || !q || sscanf(p + strlen("\nBlock count:"), "%llu", &count) != 1 ||
	    sscanf(q + strlen("\nBlock size:"), "%llu", &block) != 1 ||
	    __builtin_mul_overflow((uint64_t)count, (uint64_t)block, &span))
		return 0;
	/* resize2fs fills the device to a whole block */
	return span + block > devsize;
}

int online_fs_grow(const char *file, const struct online_state *st, char *type, size_t len)
{
	int r;

	type[0] = 0;
	if (!st->loop[0])
		return -ENODEV;
	r = online_blkid_type(st->loop, type, len);
	if (r < 0 || !type[0])
		return -ENOMEDIUM;
	if (!st->mountpoint[0])
		return -ENOTCONN;
	/* nothing to grow (a rerun: the image has its size, the filesystem
	 * fills it): done, whether or not this process may resize */
	if (fs_is_ext(type) && ext_fills_device(st->loop))
		return 1;
	if (fs_is_ext(type) && !have_cap(24 /* CAP_SYS_RESOURCE */)) {
		/* the kernel refuses online ext4 resizing without it (EPERM) */
		errmsg("%s: the image and %s grew, but the mounted %s filesystem cannot: online "
		       "resizing needs CAP_SYS_RESOURCE, which this process lacks; run "
		       "'resize2fs %s' where it has it, or 'growimg' again after imgumount "
		       "(offline it grows the filesystem)", file, st->loop, type, st->loop);
		return -EPERM;
	}
	if (fs_is_ext(type)) {
		char *av[] = { "resize2fs", (char *)st->loop, NULL };
		r = run_quiet(av);
	} else if (!strcmp(type, "xfs")) {
		char *av[] = { "xfs_growfs", (char *)st->mountpoint, NULL };
		r = run_quiet(av);
	} else if (!strcmp(type, "btrfs")) {
		char *av[] = { "btrfs", "filesystem", "resize", "max", (char *)st->mountpoint, NULL };
		r = run_quiet(av);
	} else {
		return -EOPNOTSUPP;
	}
	if (r != 0) {
		errmsg("%s: the %s filesystem on %s did not grow", file, type, st->mountpoint);
		return -EIO;
	}
	return 0;
}

/* Discards, on the loop device, every extent FIEMAP reports for fd. */
static int discard_extents(int fd, const char *dev, uint64_t *discarded)
{
	enum { N = 256 };
	struct fiemap *fm = calloc(1, sizeof(*fm) + N * sizeof(struct fiemap_extent));
	uint64_t start = 0;
	int dfd = -1, r = 0, last = 0;
	unsigned i;

	if (!fm)
		return -ENOMEM;
	dfd = open(dev, O_WRONLY | O_CLOEXEC);
	if (dfd < 0) {
		r = -errno;
		goto out;
	}
	while (!last) {
		memset(fm, 0, sizeof(*fm));
		fm->fm_start = start;
		fm->fm_length = FIEMAP_MAX_OFFSET - start;
		fm->fm_flags = FIEMAP_FLAG_SYNC;
		fm->fm_extent_count = N;
		if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0) {
			r = -errno;
			goto out;
		}
		if (fm->fm_mapped_extents == 0)
			break;
		for (i = 0; i < fm->fm_mapped_extents; i++) {
			struct fiemap_extent *e = &fm->fm_extents[i];
			uint64_t range[2] = { e->fe_physical, e->fe_length };
			if (e->fe_flags & FIEMAP_EXTENT_LAST)
				last = 1;
			start = e->fe_logical + e->fe_length;
			if (e->fe_flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_ENCODED |
					   FIEMAP_EXTENT_DATA_INLINE))
				continue;
			if (ioctl(dfd, BLKDISCARD, range) < 0) {
				r = -errno;
				goto out;
			}
			*discarded += e->fe_length;
		}
	}
out:
	if (dfd >= 0)
		close(dfd);
	free(fm);
	return r;
}

int online_balloon_inflate(const char *file, const struct online_state *st, uint64_t bytes,
			   uint64_t *discarded)
{
	char path[PATH_MAX];
	struct stat sb;
	off_t old = -1;
	int fd, r;

	*discarded = 0;
	if (online_path(st->mountpoint, ONLINE_BALLOON, path, sizeof(path)) < 0)
		return -ENAMETOOLONG;
	if (stat(path, &sb) == 0)
		old = sb.st_size;
	fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		errmsg_err(path, r, "%s: %s", path, strerror(-r));
		return r;
	}
	/* Blocks reserved, unwritten: they read as zeros and nothing is
	 * written to the disk but the extent tree. */
	if ((off_t)bytes < old && ftruncate(fd, (off_t)bytes) < 0) {
		r = -errno;
		errmsg_err(path, r, "%s: %s", path, strerror(-r));
		goto out;
	}
	if (bytes && fallocate(fd, 0, 0, (off_t)bytes) < 0) {
		r = -errno;
		if (r != -ENOSPC)
			errmsg_err(path, r, "%s: cannot reserve %llu bytes: %s",
				   path, (unsigned long long)bytes, strerror(-r));
		if (old < 0)
			unlink(path);
		else if (ftruncate(fd, old) < 0)
			r = -errno;
		goto out;
	}
	r = discard_extents(fd, st->loop, discarded);
	if (r < 0)
		errmsg_err(path, r, "%s: cannot discard the balloon's blocks on %s: %s",
			   path, st->loop, strerror(-r));
out:
	close(fd);
	return r;
}
