/* SPDX-License-Identifier: MIT */
/* The posix I/O backend: pread/pwrite/fdatasync/fallocate on a host file,
 * OFD locks for multi-process exclusion, lseek(SEEK_DATA) for seek_data,
 * posix_fadvise for advise.
 *
 * Direct reads (read_direct): the file is opened a second time with
 * O_DIRECT at the first one, through /proc/self/fd (the same file, even
 * renamed or unlinked since), and the requests are read from that
 * descriptor one after another; where the file system refuses O_DIRECT
 * (tmpfs: EINVAL), or /proc is missing, they are read through the page
 * cache.  A short direct read (the end of the file) finishes through the
 * cache, whose reads need no alignment.  The kernel writes dirty cached
 * pages of the range out before a direct read of it, so direct reads see
 * what buffered writes wrote.
 *
 * Write-behind: after every WRITEBACK_BYTES written, the backend asks the
 * kernel to start writing the file's dirty pages (sync_file_range with
 * SYNC_FILE_RANGE_WRITE: no waiting, no durability promise), so a large
 * copy reaches the disk while it runs instead of all at the next flush.
 * Like RocksDB's bytes_per_sync.  Durability still comes from flush.
 * Only writes of WRITE_BEHIND_MIN bytes or more count: bulk copies write
 * whole clusters, and starting the write-out of small random writes
 * only costs.  Measured (bench/libimg_bench.c, 4 KiB random writes into
 * 256 MiB then one sync, raw file and image in turn, 2 x 5 rounds): with
 * every write counted, overwrites ran at 0.72-0.79x the raw file and
 * allocating writes at 0.83-0.89x; without write-behind 1.03-1.04x and
 * 0.91-0.98x.
 * IMG_IO_NO_WRITE_BEHIND turns it off, for servers: measured through
 * imgserve (bench/fio-online.sh, medians of 3 rounds, same run), 1 MiB
 * sequential writes went from 2060 to 3770 MiB/s and 4 KiB random writes
 * at queue depth 16 from 25.3k to 46.3k IOPS without it: the request
 * threads were doing the write-out, of blocks written again and again.
 *
 * Writes go to the kernel at most WRITE_MAX bytes per call.  Measured on
 * the development machine (a paravirtual guest, kernel 6.18, ext4): 1 GiB
 * written into the page cache of a new file in 4 MiB calls took 1.8-4.6 s,
 * in 2 MiB calls 0.5-1.0 s, in 1 MiB calls 0.25-0.37 s (same run,
 * alternating; the writes of 2 MiB and more get 2 MiB page-cache folios,
 * whose allocation and first touch cost far more there).  imgconvert's
 * 4 MiB runs went from 5.0-6.6 s to 3.5-3.9 s with this. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/openat2.h>

#include "internal.h"

#define WRITEBACK_BYTES (32ull << 20)
#define WRITE_BEHIND_MIN (64u << 10)
#define WRITE_MAX       ((size_t)1 << 20)

struct posix_io {
	struct img_io io;
	int fd;
	char *path;
	uint64_t unkicked;      /* bytes written since the last write-behind */
	int write_behind;       /* not IMG_IO_NO_WRITE_BEHIND */
	int dfd;                /* O_DIRECT descriptor: DFD_UNTRIED, -1 (refused),
	                         * fd itself (opened with IMG_IO_DIRECT) or its
	                         * own; atomic */
};

#define DFD_UNTRIED (-2)

/* Shared with io_uring.c (internal.h). */
void imgi_io_write_behind(int fd, uint64_t *counter, uint64_t len)
{
	if (len < WRITE_BEHIND_MIN ||
	    __atomic_add_fetch(counter, len, __ATOMIC_RELAXED) < WRITEBACK_BYTES)
		return;
	__atomic_store_n(counter, 0, __ATOMIC_RELAXED);
	/* A hint: errors (EINVAL on a pipe, ESPIPE...) are of no interest. */
	(void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

static const struct img_io_ops posix_ops;

static int px_pread(struct img_io *io, void *buf, size_t len, uint64_t off)
{
	struct posix_io *p = (struct posix_io *)io;
	uint8_t *b = buf;

	while (len) {
		ssize_t n = pread(p->fd, b, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) {          /* past EOF: zeros */
			memset(b, 0, len);
			return 0;
		}
		b += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int px_pwrite(struct img_io *io, const void *buf, size_t len, uint64_t off)
{
	struct posix_io *p = (struct posix_io *)io;
	const uint8_t *b = buf;
	size_t total = len;

	while (len) {
		ssize_t n = pwrite(p->fd, b, len < WRITE_MAX ? len : WRITE_MAX, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		b += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	if (p->write_behind)
		imgi_io_write_behind(p->fd, &p->unkicked, total);
	return 0;
}

static int px_flush(struct img_io *io)
{
	struct posix_io *p = (struct posix_io *)io;
	return fdatasync(p->fd) < 0 ? -errno : 0;
}

static int px_punch(struct img_io *io, uint64_t off, uint64_t len)
{
	struct posix_io *p = (struct posix_io *)io;
	if (fallocate(p->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0)
		return errno == ENOSYS ? -EOPNOTSUPP : -errno;
	return 0;
}

static int px_truncate(struct img_io *io, uint64_t size)
{
	struct posix_io *p = (struct posix_io *)io;
	return ftruncate(p->fd, (off_t)size) < 0 ? -errno : 0;
}

static int px_size(struct img_io *io, uint64_t *size)
{
	struct posix_io *p = (struct posix_io *)io;
	struct stat st;
	if (fstat(p->fd, &st) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	return 0;
}

static int px_usage(struct img_io *io, uint64_t *bytes)
{
	struct posix_io *p = (struct posix_io *)io;
	struct stat st;
	if (fstat(p->fd, &st) < 0)
		return -errno;
	*bytes = (uint64_t)st.st_blocks * 512;
	return 0;
}

static int px_lock(struct img_io *io, int exclusive, pid_t *holder)
{
	struct posix_io *p = (struct posix_io *)io;
	struct flock fl = { .l_type = (short)(exclusive ? F_WRLCK : F_RDLCK),
			    .l_whence = SEEK_SET };

	*holder = 0;
	if (fcntl(p->fd, F_OFD_SETLK, &fl) == 0) {
		/* The name must still hold the file just locked: another
		 * process may have renamed a new file over it (mkimg -f, a
		 * merge) between our open and this lock, and what we wrote
		 * would go to an unlinked file.  Then unlock: -EBUSY, retry. */
		struct stat a, b;
		if (fstat(p->fd, &a) == 0 && (stat(p->path, &b) < 0 || a.st_dev != b.st_dev ||
					      a.st_ino != b.st_ino)) {
			fl.l_type = F_UNLCK;
			(void)fcntl(p->fd, F_OFD_SETLK, &fl);
			return -EBUSY;
		}
		return 0;
	}
	if (errno != EAGAIN && errno != EACCES)
		return -errno;
	fl.l_type = (short)(exclusive ? F_WRLCK : F_RDLCK);
	fl.l_pid = 0;
	/* Classic locks of the conflicting holder report their pid; OFD locks
	 * report -1.  /proc/locks names OFD holders too. */
	if (fcntl(p->fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK && fl.l_pid > 0)
		*holder = fl.l_pid;
	if (!*holder)
		*holder = imgi_lock_holder_from_proc(p->fd);
	return -EBUSY;
}

static void px_close(struct img_io *io)
{
	struct posix_io *p = (struct posix_io *)io;
	if (p->dfd >= 0 && p->dfd != p->fd)
		close(p->dfd);
	close(p->fd);
	free(p->path);
	free(p);
}

static int px_seek_data(struct img_io *io, uint64_t off, uint64_t *data)
{
	off_t d = lseek(((struct posix_io *)io)->fd, (off_t)off, SEEK_DATA);

	if (d < 0)
		return errno == ENXIO ? (*data = UINT64_MAX, 0) : -errno;
	*data = (uint64_t)d;
	return 0;
}

static int px_advise(struct img_io *io, uint64_t off, uint64_t len, unsigned advice)
{
	int a = advice == IMG_ADVISE_WILLNEED ? POSIX_FADV_WILLNEED : POSIX_FADV_DONTNEED;

	/* posix_fadvise returns the error number itself */
	return -posix_fadvise(((struct posix_io *)io)->fd, (off_t)off, (off_t)len, a);
}

int imgi_io_posix_direct_fd(struct img_io *io)
{
	struct posix_io *p = (struct posix_io *)io;
	int d = __atomic_load_n(&p->dfd, __ATOMIC_ACQUIRE), fd, expected = DFD_UNTRIED;
	char link[64];

	if (d != DFD_UNTRIED)
		return d;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", p->fd);
	fd = open(link, O_RDONLY | O_DIRECT | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		fd = -1;
	if (!__atomic_compare_exchange_n(&p->dfd, &expected, fd, 0, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE)) {
		if (fd >= 0)   /* another thread was first */
			close(fd);
		return expected;
	}
	return fd;
}

/* One request read from the O_DIRECT descriptor dfd: 0 or -errno; what
 * direct I/O cannot read (refused, or the unaligned rest after a short
 * read at the end of the file) is read through the cache. */
static int px_direct_one(struct posix_io *p, int dfd, uint8_t *b, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pread(dfd, b, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EINVAL)
			return -errno;
		if (n < 0)
			break;               /* refused: through the cache */
		if (n == 0) {                /* past EOF: zeros */
			memset(b, 0, len);
			return 0;
		}
		b += n;
		off += (uint64_t)n;
		len -= (size_t)n;
		if (((uintptr_t)b | off | len) % IMG_IO_DIRECT_ALIGN)
			break;
	}
	return len ? px_pread(&p->io, b, len, off) : 0;
}

static int px_read_direct(struct img_io *io, struct img_io_req *reqs, size_t n)
{
	struct posix_io *p = (struct posix_io *)io;
	int dfd = imgi_io_posix_direct_fd(io), first = 0;

	for (size_t i = 0; i < n; i++) {
		struct img_io_req *q = &reqs[i];
		q->result = dfd >= 0 ? px_direct_one(p, dfd, q->buf, q->len, q->off) :
				       px_pread(io, q->buf, q->len, q->off);
		if (q->result && !first)
			first = q->result;
	}
	return first;
}

static const struct img_io_ops posix_ops = {
	.pread = px_pread, .pwrite = px_pwrite, .flush = px_flush, .punch = px_punch,
	.truncate = px_truncate, .size = px_size, .usage = px_usage, .lock = px_lock,
	.close = px_close, .seek_data = px_seek_data, .advise = px_advise,
	.read_direct = px_read_direct,
};

int imgi_io_posix_fd(struct img_io *io)
{
	return ((struct posix_io *)io)->fd;
}

const char *imgi_file_kind(mode_t m)
{
	if (S_ISDIR(m))
		return "a directory";
	if (S_ISBLK(m))
		return "a block device";
	if (S_ISCHR(m))
		return "a character device";
	if (S_ISFIFO(m))
		return "a FIFO";
	if (S_ISSOCK(m))
		return "a socket";
	if (S_ISLNK(m))
		return "a symbolic link";
	return "not a file";
}

/* Every open of a host file by the library ends here (img_open of a top
 * image and of each backing image, img_create, the io_uring backend): fd
 * was opened with O_NONBLOCK, so that a FIFO or a device cannot block the
 * open; only a regular file is kept (an image's size is its st_size: on a
 * block device it would read as empty), and O_NONBLOCK is cleared. */
static int px_adopt(int fd, const char *name, unsigned flags, struct img_io **out)
{
	struct posix_io *p;
	struct stat st;
	int fl, r;

	if (fstat(fd, &st) < 0 || (fl = fcntl(fd, F_GETFL)) < 0) {
		r = -errno;
		imgi_set_error("%s: %s", name, strerror(-r));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		r = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		imgi_set_error("%s: not a regular file: %s (an image must be a regular file)",
			      name, imgi_file_kind(st.st_mode));
		goto fail;
	}
	if (fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		r = -errno;
		imgi_set_error("%s: %s", name, strerror(-r));
		goto fail;
	}
	p = calloc(1, sizeof(*p));
	if (!p || !(p->path = strdup(name))) {
		free(p);
		r = -ENOMEM;
		goto fail;
	}
	p->fd = fd;
	p->dfd = (flags & IMG_IO_DIRECT) ? fd : DFD_UNTRIED;
	p->write_behind = !(flags & IMG_IO_NO_WRITE_BEHIND);
	p->io.ops = &posix_ops;
	p->io.name = p->path;
	*out = &p->io;
	return 0;
fail:
	close(fd);
	return r;
}

static int open_flags(unsigned flags)
{
	int oflags = O_CLOEXEC | O_NONBLOCK | O_NOCTTY;

	oflags |= (flags & IMG_IO_RDONLY) ? O_RDONLY : O_RDWR;
	if (flags & IMG_IO_CREATE)
		oflags |= O_CREAT | O_EXCL;
	if (flags & IMG_IO_DIRECT)
		oflags |= O_DIRECT;
	return oflags;
}

#define IO_FLAGS (IMG_IO_RDONLY | IMG_IO_CREATE | IMG_IO_DIRECT | IMG_IO_NO_WRITE_BEHIND)

IMG_API int img_io_posix_open(const char *path, unsigned flags, struct img_io **out)
{
	int fd;

	if (flags & ~IO_FLAGS)
		return -EINVAL;
	fd = open(path, open_flags(flags), 0644);
	if (fd < 0) {
		int e = -errno;
		imgi_set_error("%s: %s", path, strerror(-e));
		return e;
	}
	return px_adopt(fd, path, flags, out);
}

/* Is the file open on fd beneath the directory root (a canonical path)?
 * Asked of /proc; 1 when /proc cannot say (the path was resolved without
 * symbolic links just before). */
static int fd_beneath(int fd, const char *root)
{
	char link[64], *real;
	size_t n = strlen(root);
	int in;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	if (!(real = realpath(link, NULL)))
		return 1;
	in = n == 1 || (!strncmp(real, root, n) && real[n] == '/');
	free(real);
	return in;
}

int imgi_io_posix_open_beneath(const char *root, const char *rel, const char *name,
			      unsigned flags, struct img_io **out)
{
	struct open_how how = { .flags = (uint64_t)open_flags(flags),
				.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
	int dfd, fd, r;

	if (flags & ~(IO_FLAGS & ~IMG_IO_CREATE))
		return -EINVAL;
	dfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		r = -errno;
		imgi_set_error("%s: %s", root, strerror(-r));
		return r;
	}
	/* LIBIMG_NO_OPENAT2 (tests): take the path of kernels without
	 * openat2, which checks as much. */
	if (getenv("LIBIMG_NO_OPENAT2")) {
		fd = -1;
		errno = ENOSYS;
	} else {
		fd = (int)syscall(SYS_openat2, dfd, rel, &how, sizeof(how));
	}
	if (fd < 0 && (errno == ENOSYS || errno == EPERM)) {
		/* No openat2 (before Linux 5.6, or refused by seccomp): no
		 * symbolic link as the last component, and the file found
		 * must be beneath root. */
		fd = openat(dfd, rel, (int)how.flags | O_NOFOLLOW);
		if (fd < 0 && errno == ELOOP)
			errno = EXDEV;    /* rel has no link: it changed */
		if (fd >= 0 && !fd_beneath(fd, root)) {
			close(fd);
			fd = -1;
			errno = EXDEV;
		}
	}
	r = fd < 0 ? -errno : 0;
	close(dfd);
	if (r == -EXDEV) {
		imgi_set_error("%s: leads out of %s (a symbolic link changed while it was "
			      "opened?): refused", name, root);
		return -EPERM;
	}
	if (r) {
		imgi_set_error("%s: %s", name, strerror(-r));
		return r;
	}
	return px_adopt(fd, name, flags, out);
}
