/* SPDX-License-Identifier: MIT */
/*
 * The io_uring I/O backend (liburing).
 *
 * It wraps a posix backend on the same file: flush, punch, truncate, size,
 * usage, lock, seek_data and advise go to it unchanged (one system call
 * each: a ring adds nothing there).  What the ring is for:
 *   - batches (img_io_batch): many independent reads and writes submitted
 *     at once, up to the queue depth in flight, completions reaped as they
 *     come; short transfers are resubmitted for the rest, a read that
 *     reaches the end of the file fills the rest with zeros;
 *   - direct reads (read_direct): the same, on the posix backend's
 *     O_DIRECT descriptor (imgi_io_posix_direct_fd), so the disk sees the
 *     requests queued together, as qemu-img's parallel requests give it;
 *     through the cache in the ring where direct I/O is refused, and a
 *     request direct I/O cannot finish (a short read at the end of the
 *     file) is read again through the cache;
 *   - single reads and writes are plain pread/pwrite (measured: through
 *     the ring they were slower, see ur_pread).  One ring per handle,
 *     guarded by a mutex, serves the batches.
 *
 * img_io_uring_open() fails with the ring's error (-ENOSYS: no io_uring in
 * this kernel; -EPERM: refused, e.g. by a container's seccomp policy;
 * -ENOMEM: locked-memory limit) and the caller falls back to the posix
 * backend: img_open() does so and records why (img_info()).
 */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define DEPTH 32u

struct uring_io {
	struct img_io io;
	struct img_io *px;          /* posix backend on the same file */
	int fd;
	pthread_mutex_t lock;       /* the ring */
	int broken;                 /* the ring failed: plain calls from now on */
	int direct;                 /* opened with IMG_IO_DIRECT */
	struct io_uring ring;
	uint64_t unkicked;          /* write-behind counter (io_posix.c) */
	int write_behind;           /* not IMG_IO_NO_WRITE_BEHIND */
};

static struct uring_io *U(struct img_io *io) { return (struct uring_io *)io; }

/* One request's progress inside a batch. */
struct slot {
	size_t done;
};

static void prep(struct uring_io *u, int fd, const struct img_io_req *q, size_t done,
		 uint64_t idx)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	/* never NULL: at most DEPTH requests are in flight */
	if (q->op == IMG_IO_OP_READ)
		io_uring_prep_read(sqe, fd, (char *)q->buf + done, (unsigned)(q->len - done),
				   q->off + done);
	else
		io_uring_prep_write(sqe, fd, (const char *)q->buf + done,
				    (unsigned)(q->len - done), q->off + done);
	io_uring_sqe_set_data64(sqe, idx);
}

/* ring lock held.  Runs reqs[0..n) on fd to completion. */
static int ring_run(struct uring_io *u, int fd, struct img_io_req *reqs, size_t n)
{
	struct slot *st;
	size_t next = 0, inflight = 0;
	int first_err = 0;

	for (size_t i = 0; i < n; i++) {
		reqs[i].result = 0;
		/* one SQE moves at most 2 GiB; bigger requests are rare
		 * enough to be resubmitted in pieces (see below) */
	}
	st = calloc(n ? n : 1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	while (next < n || inflight) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		int r;

		while (next < n && inflight < DEPTH) {
			if (reqs[next].len == 0) {
				next++;
				continue;
			}
			prep(u, fd, &reqs[next], 0, next);
			next++;
			inflight++;
		}
		if (!inflight)
			break;
		r = io_uring_submit_and_wait(&u->ring, 1);
		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
			/* the ring itself failed: completions still due could
			 * land in a later batch, so this ring is not used again
			 * (plain calls from now on) */
			u->broken = 1;
			first_err = first_err ? first_err : r;
			break;
		}
		io_uring_for_each_cqe(&u->ring, head, cqe) {
			uint64_t i = io_uring_cqe_get_data64(cqe);
			struct img_io_req *q = &reqs[i];
			int res = cqe->res;
			seen++;
			inflight--;
			if (res == -EINTR || res == -EAGAIN) {
				prep(u, fd, q, st[i].done, i);
				inflight++;
				continue;
			}
			if (res < 0) {
				q->result = res;
				if (!first_err)
					first_err = res;
				continue;
			}
			if (res == 0) {
				if (q->op == IMG_IO_OP_READ) {   /* end of file: zeros */
					memset((char *)q->buf + st[i].done, 0, q->len - st[i].done);
					st[i].done = q->len;
				} else {
					q->result = -EIO;
					if (!first_err)
						first_err = -EIO;
				}
				continue;
			}
			st[i].done += (size_t)res;
			if (st[i].done < q->len) {     /* short: the rest again */
				prep(u, fd, q, st[i].done, i);
				inflight++;
			}
		}
		io_uring_cq_advance(&u->ring, seen);
	}
	free(st);
	return first_err;
}

/*
 * Reads go through the ring; buffered writes do not.  Measured with
 * bench/compact_bench (relocation only, --no-zero-detect, same run): a
 * batch of buffered writes through the ring took 1.5x the time of the same
 * writes one after another, since they are copies into the page cache that
 * serialise on the file's lock in the kernel anyway and the ring hands them
 * to worker threads.  Reads that miss the cache do overlap on the disk.
 * Writes on a direct-I/O backend (IMG_IO_DIRECT) go through the ring too.
 */
static int ur_batch(struct img_io *io, struct img_io_req *reqs, size_t n)
{
	struct uring_io *u = U(io);
	struct img_io_req *ring_reqs = reqs;
	size_t nring = n;
	int r, rw = 0;

	for (size_t i = 0; i < n; i++) {
		if (reqs[i].op != IMG_IO_OP_READ && reqs[i].op != IMG_IO_OP_WRITE)
			return -EINVAL;
		if (reqs[i].len > (1u << 30))
			return -EINVAL;   /* see img_io_batch(): at most 1 GiB each */
		rw |= reqs[i].op == IMG_IO_OP_WRITE;
	}
	if (rw && !u->direct) {
		/* writes in turn, reads (if any) in the ring afterwards */
		int first = 0;
		ring_reqs = malloc(n * sizeof(*ring_reqs));
		if (!ring_reqs)
			return -ENOMEM;
		nring = 0;
		for (size_t i = 0; i < n; i++) {
			if (reqs[i].op == IMG_IO_OP_READ) {
				ring_reqs[nring++] = reqs[i];
				continue;
			}
			reqs[i].result = u->px->ops->pwrite(u->px, reqs[i].buf, reqs[i].len, reqs[i].off);
			if (reqs[i].result && !first)
				first = reqs[i].result;
		}
		r = nring ? ur_batch(io, ring_reqs, nring) : 0;
		for (size_t i = 0, k = 0; i < n && nring; i++)
			if (reqs[i].op == IMG_IO_OP_READ)
				reqs[i].result = ring_reqs[k++].result;
		free(ring_reqs);
		return first ? first : r;
	}
	pthread_mutex_lock(&u->lock);
	if (u->broken) {
		pthread_mutex_unlock(&u->lock);
		return imgi_io_batch_loop(io, reqs, n);
	}
	r = ring_run(u, u->fd, ring_reqs, nring);
	pthread_mutex_unlock(&u->lock);
	if (rw && u->write_behind)
		for (size_t i = 0; i < n; i++)
			if (reqs[i].op == IMG_IO_OP_WRITE)
				imgi_io_write_behind(u->fd, &u->unkicked, reqs[i].len);
	return r;
}

/* Single transfers through the ring were measured (bench/libimg_bench.c
 * with LIBIMG_IO=uring, same run): cached 4 KiB random reads 0.65x and
 * cold 1 MiB sequential reads 0.45x of plain pread, since a submit-and-
 * wait of one request only adds work (and buffered reads that miss the
 * cache go to io-wq workers).  So single calls are plain system calls; the
 * ring serves batches, where requests overlap. */
static int ur_pread(struct img_io *io, void *buf, size_t len, uint64_t off)
{
	return U(io)->px->ops->pread(U(io)->px, buf, len, off);
}

static int ur_pwrite(struct img_io *io, const void *buf, size_t len, uint64_t off)
{
	return U(io)->px->ops->pwrite(U(io)->px, buf, len, off);
}

static int ur_flush(struct img_io *io) { return U(io)->px->ops->flush(U(io)->px); }
static int ur_punch(struct img_io *io, uint64_t off, uint64_t len)
{
	return U(io)->px->ops->punch(U(io)->px, off, len);
}
static int ur_truncate(struct img_io *io, uint64_t size)
{
	return U(io)->px->ops->truncate(U(io)->px, size);
}
static int ur_size(struct img_io *io, uint64_t *size) { return U(io)->px->ops->size(U(io)->px, size); }
static int ur_usage(struct img_io *io, uint64_t *bytes)
{
	return U(io)->px->ops->usage(U(io)->px, bytes);
}
static int ur_lock(struct img_io *io, int exclusive, pid_t *holder)
{
	return U(io)->px->ops->lock(U(io)->px, exclusive, holder);
}

static void ur_close(struct img_io *io)
{
	struct uring_io *u = U(io);
	io_uring_queue_exit(&u->ring);
	pthread_mutex_destroy(&u->lock);
	u->px->ops->close(u->px);
	free(u);
}

static int ur_seek_data(struct img_io *io, uint64_t off, uint64_t *data)
{
	struct uring_io *u = U(io);
	return u->px->ops->seek_data(u->px, off, data);
}

static int ur_advise(struct img_io *io, uint64_t off, uint64_t len, unsigned advice)
{
	struct uring_io *u = U(io);
	return u->px->ops->advise(u->px, off, len, advice);
}

static int ur_read_direct(struct img_io *io, struct img_io_req *reqs, size_t n)
{
	struct uring_io *u = U(io);
	int dfd = imgi_io_posix_direct_fd(u->px), r, broken;

	for (size_t i = 0; i < n; i++)
		if (reqs[i].op != IMG_IO_OP_READ || reqs[i].len > (1u << 30))
			return -EINVAL;
	if (dfd < 0)
		return ur_batch(io, reqs, n);   /* refused: through the cache */
	pthread_mutex_lock(&u->lock);
	if (u->broken) {
		pthread_mutex_unlock(&u->lock);
		return u->px->ops->read_direct(u->px, reqs, n);
	}
	r = ring_run(u, dfd, reqs, n);
	broken = u->broken;   /* the ring failed: r is its error, not a request's */
	pthread_mutex_unlock(&u->lock);
	if (r && !broken) {
		/* what direct I/O refused (EINVAL: the unaligned rest of a
		 * short read, a file system that refuses it at read time)
		 * again through the cache */
		r = 0;
		for (size_t i = 0; i < n; i++) {
			struct img_io_req *q = &reqs[i];
			if (q->result == -EINVAL)
				q->result = u->px->ops->pread(u->px, q->buf, q->len, q->off);
			if (q->result && !r)
				r = q->result;
		}
	}
	return r;
}

static const struct img_io_ops uring_ops = {
	.pread = ur_pread, .pwrite = ur_pwrite, .flush = ur_flush, .punch = ur_punch,
	.truncate = ur_truncate, .size = ur_size, .usage = ur_usage, .lock = ur_lock,
	.close = ur_close, .batch = ur_batch, .seek_data = ur_seek_data,
	.advise = ur_advise, .read_direct = ur_read_direct,
};

/* root NULL: path as given; else path beneath root (io_posix.c). */
static int uring_open(const char *root, const char *path, const char *name, unsigned flags,
		      struct img_io **out)
{
	struct uring_io *u;
	int r;

	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	/* The ring first: when the kernel refuses it, no file is touched
	 * (IMG_IO_CREATE must not leave a file behind for the fallback). */
	r = io_uring_queue_init(DEPTH, &u->ring, 0);
	if (r < 0) {
		free(u);
		imgi_set_error("%s: io_uring unavailable: %s", name, img_strerror(r));
		return r;
	}
	r = root ? imgi_io_posix_open_beneath(root, path, name, flags, &u->px) :
		   img_io_posix_open(path, flags, &u->px);
	if (r) {
		io_uring_queue_exit(&u->ring);
		free(u);
		return r;
	}
	u->fd = imgi_io_posix_fd(u->px);
	u->direct = !!(flags & IMG_IO_DIRECT);
	u->write_behind = !(flags & IMG_IO_NO_WRITE_BEHIND);
	pthread_mutex_init(&u->lock, NULL);
	u->io.ops = &uring_ops;
	u->io.name = u->px->name;
	*out = &u->io;
	return 0;
}

IMG_API int img_io_uring_open(const char *path, unsigned flags, struct img_io **out)
{
	return uring_open(NULL, path, path, flags, out);
}

int imgi_io_uring_open_beneath(const char *root, const char *rel, const char *name,
			      unsigned flags, struct img_io **out)
{
	return uring_open(root, rel, name, flags, out);
}
