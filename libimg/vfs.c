/* SPDX-License-Identifier: MIT */
/*
 * The file and directory operations of the path-based calls (img_open,
 * img_create, img_snapshot, img_merge and their chains).  POSIX here; the
 * crash test installs an in-memory directory (testio.h imgi_vfs_set) whose
 * names and files lose what was not synced at a simulated power loss, so
 * operations spanning several files and renames are crash-tested like the
 * rest.  Every function returns 0 or -errno.
 *
 * The test hook imgi_io_wrap_set (testio.h) lives here too: a function that
 * wraps the backend of every image file img_create and img_open open by
 * path.  The library never sets it (the tools built for tests/cli/faults.bats
 * do, to arm LIBIMG_FAULT); without it imgi_io_wrap passes the backend on.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "internal.h"
#include "testio.h"

static int p_stat(const char *path, struct stat *st)
{
	return stat(path, st) < 0 ? -errno : 0;
}

static int p_lstat(const char *path, struct stat *st)
{
	return lstat(path, st) < 0 ? -errno : 0;
}

static int p_open(const char *path, unsigned ioflags, struct img_io **out)
{
	return img_io_posix_open(path, ioflags, out);
}

static int p_open_beneath(const char *root, const char *rel, const char *name, unsigned ioflags,
			  struct img_io **out)
{
	return imgi_io_posix_open_beneath(root, rel, name, ioflags, out);
}

static int p_mktemp(char *tmpl, mode_t mode)
{
	int fd = mkostemp(tmpl, O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	/* mkostemp makes 0600 */
	if (fchmod(fd, mode) < 0) {
		r = -errno;
		unlink(tmpl);
	}
	close(fd);
	return r;
}

static int p_link(const char *from, const char *to)
{
	return link(from, to) < 0 ? -errno : 0;
}

static int p_rename(const char *from, const char *to, int noreplace)
{
	int r;

	if (!noreplace)
		return rename(from, to) < 0 ? -errno : 0;
	if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return 0;
	r = -errno;
	if (r == -EINVAL || r == -ENOSYS) {   /* no RENAME_NOREPLACE here */
		r = link(from, to) < 0 ? -errno : 0;
		if (!r)
			unlink(from);
	}
	return r;
}

static int p_unlink(const char *path)
{
	return unlink(path) < 0 ? -errno : 0;
}

static int p_chmod(const char *path, mode_t mode)
{
	return chmod(path, mode) < 0 ? -errno : 0;
}

static int p_sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

static int p_claim(const char *path, struct stat *st, int *fd, pid_t *holder)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	const int how = O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
	int f, r = 0;

	*fd = -1;
	*holder = 0;
	if (lstat(path, st) < 0)
		return -errno;
	if (!S_ISREG(st->st_mode))
		return 0;
	/* O_NOFOLLOW and O_NONBLOCK: a symlink or FIFO put there since the
	 * lstat is not followed nor waited for (fstat below tells) */
	f = open(path, O_RDWR | how);
	if (f < 0 && (errno == EACCES || errno == EPERM || errno == EROFS)) {
		/* a file we may not write (mode 0444): a shared lock keeps
		 * writers out; F_OFD_GETLK below tells whether readers hold it */
		f = open(path, O_RDONLY | how);
		fl.l_type = F_RDLCK;
	}
	if (f < 0)
		return errno == ELOOP ? (lstat(path, st) < 0 ? -errno : 0) : -errno;
	if (fstat(f, st) < 0)
		r = -errno;
	if (r || !S_ISREG(st->st_mode)) {
		close(f);
		return r;
	}
	if (fcntl(f, F_OFD_SETLK, &fl) < 0) {
		r = errno == EAGAIN || errno == EACCES ? -EBUSY : -errno;
	} else if (fl.l_type == F_RDLCK) {
		struct flock w = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
		if (fcntl(f, F_OFD_GETLK, &w) < 0)
			r = -errno;
		else if (w.l_type != F_UNLCK)
			r = -EBUSY;
	}
	if (r == -EBUSY)
		*holder = imgi_lock_holder_from_proc(f);
	if (r)
		close(f);
	else
		*fd = f;
	return r;
}

static int p_open_uring(const char *root, const char *rel, const char *path, unsigned ioflags,
			struct img_io **out)
{
	return root ? imgi_io_uring_open_beneath(root, rel, path, ioflags, out) :
		      img_io_uring_open(path, ioflags, out);
}

static int p_dir_writable(const char *dir)
{
	return access(dir, W_OK) < 0 ? -errno : 0;
}

static int p_space_free(const char *dir, uint64_t *bytes)
{
	struct statvfs sv;

	if (statvfs(dir, &sv) < 0)
		return -errno;
	*bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
	return 0;
}

const struct imgi_vfs imgi_vfs_posix = {
	.stat = p_stat, .lstat = p_lstat, .open = p_open, .open_beneath = p_open_beneath, .mktemp = p_mktemp, .link = p_link,
	.rename = p_rename, .unlink = p_unlink, .chmod = p_chmod, .sync_dir = p_sync_dir,
	.claim = p_claim, .open_uring = p_open_uring, .dir_writable = p_dir_writable,
	.space_free = p_space_free,
};

const struct imgi_vfs *imgi_vfs = &imgi_vfs_posix;

void imgi_vfs_set(const struct imgi_vfs *vfs)
{
	imgi_vfs = vfs ? vfs : &imgi_vfs_posix;
}

static int (*io_wrap)(struct img_io *inner, struct img_io **out);

void imgi_io_wrap_set(int (*wrap)(struct img_io *inner, struct img_io **out))
{
	io_wrap = wrap;
}

int imgi_io_wrap(struct img_io *inner, struct img_io **out)
{
	if (!io_wrap) {
		*out = inner;
		return 0;
	}
	return io_wrap(inner, out);
}
