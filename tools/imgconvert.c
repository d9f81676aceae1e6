/* SPDX-License-Identifier: MIT */
/*
 * imgconvert: copy a disk between raw files and libimg images.
 *
 * The input format is given (-F raw|libimg) or detected by content
 * (img_probe).  A probed libimg delta is refused: a raw disk whose guest
 * wrote a libimg header at sector 0 must not become a delta over a file the
 * header names (issue 15 #2); a probed standalone image gets a warning.
 * Only data is
 * copied: holes of a raw input (SEEK_DATA/SEEK_HOLE) and the zero runs of
 * an image (img_next_run) are skipped without reading, and what is read is
 * scanned for all-zero granules (a cluster of the output image, or 4 KiB
 * of a raw output) which are not written.  The output starts as a fresh
 * sparse file or empty image, so whatever is not written reads as zeros.
 *
 * The output is built under a temporary name in the target directory and
 * renamed into place at the end; on failure or on SIGINT/SIGTERM/SIGHUP
 * the temporary file is removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define CHUNK (16u << 20)           /* bytes read at a time (a piece) */
#define RAW_GRANULE 4096u           /* zero-detection unit for a raw output */

enum fmt { FMT_RAW, FMT_LIBIMG };
enum { OPT_CLUSTER_SIZE = 256, OPT_COMPRESS };
#define FMT_PROBE (-1)              /* no -F: detected by content */

static const struct option longopts[] = {
	{ "output-format", required_argument, NULL, 'O' },
	{ "source-format", required_argument, NULL, 'F' },
	{ "cluster-size",  required_argument, NULL, OPT_CLUSTER_SIZE },
	{ "compress",      no_argument,       NULL, OPT_COMPRESS },
	{ "progress",      no_argument,       NULL, 'p' },
	{ "force",         no_argument,       NULL, 'f' },
	{ "force-share",   no_argument,       NULL, 'U' },
	{ "json",          no_argument,       NULL, 'j' },
	{ "quiet",         no_argument,       NULL, 'q' },
	{ "verbose",       no_argument,       NULL, 'v' },
	{ "help",          no_argument,       NULL, 'h' },
	{ "version",       no_argument,       NULL, 'V' },
	BACKING_PATH_OPTION,
	WAIT_OPTION,
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] SRC DST\n"
	       "Copy a virtual disk between a raw file and a libimg image (either way,\n"
	       "or image to image).  Holes and all-zero runs are not written, so the\n"
	       "output is thin or sparse.\n"
	       "\n"
	       "  -F, --source-format FMT  SRC is raw or libimg (default: detected; a\n"
	       "                           delta then needs -F libimg)\n"
	       "  -O, --output-format FMT  raw or libimg (default libimg)\n"
	       "  --cluster-size SIZE      cluster size of a libimg output (64K..64M)\n"
	       "  -p, --progress           progress on stderr (a bar, or lines on a pipe)\n"
	       "  -f, --force              replace DST if it exists\n"
	       "  -U, --force-share        do not lock a libimg SRC\n"
	       "  -c, --compress           store clusters lz4-compressed (libimg output)\n"
	       BACKING_PATH_HELP
	       "  -j, --json               print the result as a JSON object (also with -q)\n"
	       WAIT_HELP
	       "  -q, --quiet              print nothing on success\n"
	       "  -v, --verbose            say how the source is read\n"
	       "  -h, --help / -V, --version  show this help / the version\n"
	       "\n"
	       "DST is written under a temporary name and renamed at the end: a failure\n"
	       "leaves no DST.  A raw SRC is padded with zeros to a multiple of 512 bytes.\n"
	       "Exit status: 0 success, 1 error, 2 usage, 3 SRC corrupt, 4 SRC's chain\n"
	       "  broken, 5 not found, 8 no space, 75 SRC or DST in use.  See libimg(7).\n", progname);
}

/* ---- cleanup of the temporary output ---------------------------------- */

static char tmp_path[PATH_MAX];
static volatile sig_atomic_t tmp_live;

static void on_signal(int sig)
{
	if (tmp_live)
		unlink(tmp_path);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void catch_signals(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGPIPE };
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
}

/* ---- source and destination ------------------------------------------- */

struct end {
	const char *name;
	enum fmt fmt;
	int fd;               /* raw */
	struct img *img;      /* libimg */
	uint64_t size;        /* virtual size */
	uint32_t granule;     /* zero-detection unit (destination) */
	int seek_data;        /* raw source: SEEK_DATA works */
	struct img_io *dio;   /* raw source file: direct I/O backend, or NULL */
	const char *engine;   /* its engine, for --verbose */
	int compress;         /* libimg destination: -c */
	int probed;           /* libimg source detected by content (no -F) */
};

static int raw_read(struct end *s, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(s->fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) {             /* past the end: the padding reads as zeros */
			memset(p, 0, len);
			return 0;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/* At most 1 MiB per call, as the library's posix backend writes (see
 * libimg/io_posix.c: larger writes into the page cache cost far more on
 * some hosts). */
#define RAW_WRITE_MAX ((size_t)1 << 20)

static int raw_write(struct end *d, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(d->fd, p, len < RAW_WRITE_MAX ? len : RAW_WRITE_MAX, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/* Aligned pieces of a raw source are read with direct I/O into the
 * (aligned) buffer, as a batch of SUBREAD requests: one copy less than
 * through the page cache, the cache is not filled with a source read once,
 * and on the io_uring backend the requests are in flight together (the
 * disk sees a queue depth, as qemu-img's parallel requests give it).  Falls
 * back to buffered reads when the file system refuses direct I/O.
 * 16 requests (16 MiB pieces) against 4: 3.1-3.3 s against 3.9 s for the
 * 2 GiB benchmark source (bench/convert.sh), same rotation. */
#define SUBREAD (1u << 20)

static int direct_read(struct end *s, void *buf, size_t len, uint64_t off)
{
	struct img_io_req q[CHUNK / SUBREAD];
	size_t n = 0;
	int r;

	for (size_t o = 0; o < len; o += SUBREAD)
		q[n++] = (struct img_io_req){ .buf = (char *)buf + o,
					      .len = len - o < SUBREAD ? len - o : SUBREAD,
					      .off = off + o, .op = IMG_IO_OP_READ };
	r = img_io_batch(s->dio, q, n);
	if (r == -EINVAL) {
		s->dio->ops->close(s->dio);
		s->dio = NULL;
		s->engine = "buffered";
	}
	return r;
}

/* A libimg source is read the same way by the library (img_read_bulk:
 * its data clusters, of the image and of its backing images, as requests
 * of 1 MiB in flight together, past the page cache).  Image -> image, 1
 * GiB of data (the benchmark's source converted once), 6 rounds in turn
 * with the same tool reading through img_pread (the page cache, one piece
 * at a time) and qemu-img qcow2 -> qcow2: medians 1.29 s, 2.2 s and
 * 1.46 s. */
static int src_read(struct end *s, void *buf, size_t len, uint64_t off)
{
	int aligned = off % 4096 == 0 && len % 4096 == 0 && len <= CHUNK;
	ssize_t n;
	int r;

	if (s->fmt == FMT_LIBIMG) {
		n = img_read_bulk(s->img, buf, len, off, IMG_READ_DIRECT);
		if (n < 0)
			return (int)n;
		return (size_t)n == len ? 0 : -EIO;
	}
	if (s->dio && aligned) {
		r = direct_read(s, buf, len, off);
		if (r != -EINVAL)
			return r;       /* -EINVAL: direct I/O refused, dio closed */
	}
	return raw_read(s, buf, len, off);
}

/* The next run of data at or after off: [*start, *start + *len).  *len is
 * 0 when there is no more.  0 or -errno (printed). */
static int next_data(struct end *s, uint64_t off, uint64_t *start, uint64_t *len)
{
	*len = 0;
	if (off >= s->size)
		return 0;
	if (s->fmt == FMT_RAW) {
		off_t d, h;
		if (!s->seek_data) {
			*start = off;
			*len = s->size - off;
			return 0;
		}
		d = lseek(s->fd, (off_t)off, SEEK_DATA);
		if (d < 0) {
			if (errno == ENXIO)
				return 0;          /* only a hole is left */
			if (errno == EINVAL || errno == EOPNOTSUPP) {
				s->seek_data = 0;  /* cannot tell: all of it is data */
				*start = off;
				*len = s->size - off;
				return 0;
			}
			errmsg_err(s->name, -errno, "%s: %s", s->name, strerror(errno));
			return -errno;
		}
		if ((uint64_t)d >= s->size)
			return 0;
		h = lseek(s->fd, d, SEEK_HOLE);
		if (h < 0 || (uint64_t)h > s->size || h <= d)
			h = (off_t)s->size;
		*start = (uint64_t)d;
		*len = (uint64_t)h - (uint64_t)d;
		return 0;
	}
	while (off < s->size) {
		struct img_run run;
		int r = img_next_run(s->img, off, 0, &run);

		if (r < 0) {
			lib_errmsg(s->name, r);
			return r;
		}
		if (run.length == 0 || run.offset != off || run.length > s->size - off) {
			errmsg("%s: bad map at offset %llu", s->name, (unsigned long long)off);
			return -EIO;
		}
		if (run.type == IMG_RUN_DATA) {
			*start = off;
			*len = run.length;
			return 0;
		}
		off += run.length;
	}
	return 0;
}

/* ---- the copy: a reader thread and a writer ------------------------- */

/*
 * The reader walks the source's data runs (widened to whole granules) and
 * reads them in CHUNK pieces into a ring of NBUF buffers; the writer (the
 * main thread) scans each piece for all-zero granules and writes the rest.
 * So reading the source, scanning and writing the output overlap, and the
 * output's write-behind (the library starts the write-out every 32 MiB)
 * keeps the disk busy writing while the next pieces are read.
 */
#define NBUF 4

struct piece {
	char *buf;
	uint64_t off;
	size_t len;
	int err;            /* reader failed (message printed) */
	int last;           /* no more pieces */
};

struct ring {
	pthread_mutex_t m;
	pthread_cond_t cv;
	struct piece p[NBUF];
	uint64_t head, tail;  /* pieces filled, pieces consumed */
	int stop;             /* the writer gives up: the reader stops */
	struct end *s;
	uint64_t granule;
};

/* Reader: waits for a free slot; 0, or 1 when told to stop. */
static int ring_slot(struct ring *rg, struct piece **out)
{
	pthread_mutex_lock(&rg->m);
	while (rg->head - rg->tail == NBUF && !rg->stop)
		pthread_cond_wait(&rg->cv, &rg->m);
	*out = &rg->p[rg->head % NBUF];
	pthread_mutex_unlock(&rg->m);
	return rg->stop;
}

static void ring_push(struct ring *rg)
{
	pthread_mutex_lock(&rg->m);
	rg->head++;
	pthread_cond_broadcast(&rg->cv);
	pthread_mutex_unlock(&rg->m);
}

static void *reader(void *arg)
{
	struct ring *rg = arg;
	struct end *s = rg->s;
	uint64_t off = 0, start, len, end, g = rg->granule;
	struct piece *pc;
	int r = 0;

	for (;;) {
		r = next_data(s, off, &start, &len);
		if (r < 0 || len == 0)
			break;
		/* widen to whole granules, without going back over what was done */
		end = start + len;
		start -= start % g;
		if (start < off)
			start = off;
		end = end % g ? end + (g - end % g) : end;
		if (end > s->size)
			end = s->size;
		while (start < end) {
			size_t n = (size_t)(end - start < CHUNK ? end - start : CHUNK);
			if (ring_slot(rg, &pc))
				return NULL;
			r = src_read(s, pc->buf, n, start);
			if (r < 0) {
				lib_errmsg(s->name, r);
				goto out;
			}
			pc->off = start;
			pc->len = n;
			pc->err = 0;
			pc->last = 0;
			ring_push(rg);
			start += n;
		}
		off = end;
	}
out:
	if (ring_slot(rg, &pc))
		return NULL;
	pc->err = r < 0 ? r : 0;
	pc->last = 1;
	ring_push(rg);
	return NULL;
}

/* Writes the granules of one piece that are not all zeros (consecutive
 * ones in one write): a libimg output through the library's sparse write
 * (whole clusters, compressed with -c).  *copied counts the bytes
 * written. */
static int write_piece(struct end *d, const char *buf, uint64_t start, size_t n,
		       uint64_t *copied)
{
	const uint64_t g = d->granule;
	size_t i = 0;

	if (d->fmt == FMT_LIBIMG) {
		ssize_t w = img_pwrite_sparse(d->img, buf, n, start,
					      d->compress ? IMG_SPARSE_COMPRESS : IMG_SPARSE_CLUSTERS);
		if (w < 0) {
			lib_errmsg(d->name, (int)w);
			return (int)w;
		}
		*copied += (uint64_t)w;
		return 0;
	}

	while (i < n) {
		size_t run, j;
		/* skip zero granules (granule boundaries are absolute) */
		size_t step = (size_t)(g - (start + i) % g);
		int r;
		if (step > n - i)
			step = n - i;
		if (buffer_is_zero(buf + i, step)) {
			i += step;
			continue;
		}
		run = step;
		for (j = i + step; j < n; j += step) {
			step = n - j < g ? n - j : (size_t)g;
			if (buffer_is_zero(buf + j, step))
				break;
			run += step;
		}
		r = raw_write(d, buf + i, run, start + i);
		if (r < 0) {
			lib_errmsg(d->name, r);
			return r;
		}
		*copied += run;
		i += run;
	}
	return 0;
}

static int copy_all(struct end *s, struct end *d, struct progress *pr, uint64_t *copied)
{
	struct ring rg;
	pthread_t th;
	int r = 0, started = 0;

	memset(&rg, 0, sizeof(rg));
	rg.s = s;
	rg.granule = d->granule;
	pthread_mutex_init(&rg.m, NULL);
	pthread_cond_init(&rg.cv, NULL);
	for (int i = 0; i < NBUF; i++)
		if (posix_memalign((void **)&rg.p[i].buf, 4096, CHUNK)) {
			errmsg("out of memory");
			r = -ENOMEM;
			goto out;
		}
	if (s->fmt == FMT_RAW)
		(void)posix_fadvise(s->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	if ((r = -pthread_create(&th, NULL, reader, &rg))) {
		errmsg("cannot start the reader thread: %s", strerror(-r));
		goto out;
	}
	started = 1;
	for (;;) {
		struct piece *pc;
		pthread_mutex_lock(&rg.m);
		while (rg.head == rg.tail)
			pthread_cond_wait(&rg.cv, &rg.m);
		pc = &rg.p[rg.tail % NBUF];
		pthread_mutex_unlock(&rg.m);
		if (pc->last) {
			r = pc->err;
			break;
		}
		r = write_piece(d, pc->buf, pc->off, pc->len, copied);
		if (r < 0)
			break;
		progress_update(pr, pc->off + pc->len, s->size);
		pthread_mutex_lock(&rg.m);
		rg.tail++;
		pthread_cond_broadcast(&rg.cv);
		pthread_mutex_unlock(&rg.m);
	}
out:
	pthread_mutex_lock(&rg.m);
	rg.stop = 1;
	pthread_cond_broadcast(&rg.cv);
	pthread_mutex_unlock(&rg.m);
	if (started)
		pthread_join(th, NULL);
	for (int i = 0; i < NBUF; i++)
		free(rg.p[i].buf);
	pthread_mutex_destroy(&rg.m);
	pthread_cond_destroy(&rg.cv);
	return r;
}

/* ---- main ------------------------------------------------------------- */

/* The direct-I/O reader of a raw source: io_uring unless LIBIMG_IO=posix
 * or the kernel refuses it, else posix; none if direct I/O is refused.  (A
 * libimg source: the library's, img_read_bulk.) */
static void open_direct(struct end *s)
{
	const char *e = getenv("LIBIMG_IO");
	int r = -ENOSYS;

	if (!e || strcmp(e, "posix")) {
		r = img_io_uring_open(s->name, IMG_IO_RDONLY | IMG_IO_DIRECT, &s->dio);
		if (!r)
			s->engine = "io_uring, direct I/O";
		else
			verbose_msg("%s: io_uring unavailable (%s): posix reads", s->name,
				    img_strerror(r));
	}
	if (r) {
		r = img_io_posix_open(s->name, IMG_IO_RDONLY | IMG_IO_DIRECT, &s->dio);
		s->engine = r ? "buffered" : "posix, direct I/O";
		if (r)
			s->dio = NULL;
	}
}

/* A probed source that is a delta: refused, without opening what it names.
 * A probed standalone image: read as an image, with a warning (printed by
 * main once DST is known to be fine: s->probed).  0 or -errno (the
 * message printed). */
static int probed_image(struct end *s)
{
	char ref[4096], e1[TEXT_ESCAPE_LEN(1024)], e2[TEXT_ESCAPE_LEN(sizeof(ref))];
	ssize_t n = img_backing_ref(s->img, ref, sizeof(ref));

	text_escape(s->name, e1, sizeof(e1));
	if (n != 0) {
		errmsg("%s: starts with the header of a libimg delta over '%s': refused without "
		       "-F (give -F libimg to convert the delta with its backing chain, or "
		       "-F raw to copy the file's bytes as they are)", e1,
		       n > 0 ? text_escape(ref, e2, sizeof(e2)) : "?");
		return -EINVAL;
	}
	s->probed = 1;
	return 0;
}

/* Lets the source go (its lock with it), ready for open_source again. */
static void close_source(struct end *s)
{
	if (s->img)
		img_close(s->img);
	if (s->fd >= 0)
		close(s->fd);
	if (s->dio)
		s->dio->ops->close(s->dio);
	*s = (struct end){ .name = s->name, .fd = -1 };
}

/* 0 to 50 ms: two tools waiting on each other's files (imgconvert A B and
 * imgconvert B A) do not keep retrying in step. */
static void jitter_nap(void)
{
	static int seeded;
	struct timespec ts;

	if (!seeded++)
		srandom((unsigned)getpid());
	ts.tv_sec = 0;
	ts.tv_nsec = (long)(random() % 50) * 1000000;
	nanosleep(&ts, NULL);
}

static int open_source(struct end *s, int nolock, int srcfmt)
{
	struct img_info in;
	struct stat st;
	int r = img_probe(s->name);

	if (r < 0 && srcfmt != FMT_RAW) {
		errmsg_err(s->name, r, "%s: %s", s->name, strerror(-r));
		return r;
	}
	if (srcfmt == FMT_LIBIMG && r == 0) {
		errmsg_err(s->name, -EMEDIUMTYPE, "%s: not a libimg image (-F libimg)", s->name);
		return -EMEDIUMTYPE;
	}
	if (srcfmt == FMT_RAW && r == 1)
		verbose_msg("%s: starts like a libimg image; read as raw (-F raw)", s->name);
	if (r == 1 && srcfmt != FMT_RAW) {
		s->fmt = FMT_LIBIMG;
		/* probed: look at the image alone before following anything */
		/* io_uring (unless LIBIMG_IO=posix or the kernel refuses
		 * it): img_read_bulk's requests in flight together */
		r = open_image(s->name, IMG_OPEN_IO_URING | (nolock ? IMG_OPEN_NOLOCK : 0) |
			       (srcfmt == FMT_PROBE ? IMG_OPEN_NO_BACKING : 0), &s->img);
		if (r < 0)
			return r;
		if (srcfmt == FMT_PROBE && (r = probed_image(s)) < 0)
			return r;
		memset(&in, 0, sizeof(in));
		r = img_info(s->img, &in);
		if (r < 0) {
			lib_errmsg(s->name, r);
			return r;
		}
		s->size = in.virtual_size;
		s->engine = in.io_engine == IMG_IO_ENGINE_URING ? "io_uring, direct I/O" :
			    "posix, direct I/O";
		return 0;
	}
	s->fmt = FMT_RAW;
	s->fd = open(s->name, O_RDONLY | O_CLOEXEC);
	if (s->fd < 0 || fstat(s->fd, &st) < 0) {
		r = -errno;
		errmsg_err(s->name, -errno, "%s: %s", s->name, strerror(errno));
		return r;
	}
	if (S_ISREG(st.st_mode)) {
		s->size = (uint64_t)st.st_size;
		s->seek_data = 1;
		open_direct(s);
	} else if (S_ISBLK(st.st_mode)) {
		off_t e = lseek(s->fd, 0, SEEK_END);
		if (e < 0) {
			r = -errno;
			errmsg_err(s->name, -errno, "%s: %s", s->name, strerror(errno));
			return r;
		}
		s->size = (uint64_t)e;
	} else {
		errmsg("%s: not a regular file or block device", s->name);
		return -EINVAL;
	}
	return 0;
}

/* Checks DST before any work: refuses an existing one unless force. */
/* Claims dst (img_target_claim) until the rename: a file there is
 * replaced only with --force, only when it is a regular file and not the
 * source, and only when nobody holds a lock on it.  0 or -errno (message
 * printed). */
static int check_target(const char *dst, int force, const struct end *s,
			struct img_target **target, int64_t *start, int64_t *waited, int *again)
{
	struct stat st, ss;
	struct img *p;
	int r;

	/* first, as the source's own lock would make the claim say "in use":
	 * the source, or any image of its backing chain (replacing a base
	 * would change what the source and every other clone of it read);
	 * with or without --force (without it the claim would say "in use",
	 * the source's own lock) */
	if (stat(dst, &st) == 0) {
		if (stat(s->name, &ss) == 0 && ss.st_dev == st.st_dev && ss.st_ino == st.st_ino) {
			errmsg_err(dst, -EINVAL, "%s: is the same file as the source %s", dst,
				   s->name);
			return -EINVAL;
		}
		for (p = s->img ? img_backing(s->img) : NULL; p; p = img_backing(p))
			if (stat(img_name(p), &ss) == 0 && ss.st_dev == st.st_dev &&
			    ss.st_ino == st.st_ino) {
				char e[TEXT_ESCAPE_LEN(1024)];
				errmsg_err(dst, -EINVAL, "%s: is %s, in the backing chain of the "
					   "source %s: refused", dst,
					   text_escape(img_name(p), e, sizeof(e)), s->name);
				return -EINVAL;
			}
	}
	/* --wait: not here, holding the source's lock (another imgconvert
	 * DST SRC would wait for it while we wait for it: a deadlock); the
	 * caller lets the source go and tries again */
	r = img_target_claim(dst, force ? IMG_CREATE_OVERWRITE : 0, target);
	if (r == -EBUSY && lock_wait_again(start, waited)) {
		*again = 1;
		return r;
	}
	if (r == -EEXIST)
		errmsg_err(dst, -EEXIST, "%s: already exists (use --force to overwrite)", dst);
	else if (r < 0)
		lib_errmsg(dst, r);
	return r;
}

/* Reserves a temporary name beside dst; returns its fd or -errno. */
static int make_temp(const char *dst)
{
	char d[PATH_MAX], b[PATH_MAX];
	mode_t um;
	int fd;

	if (strlen(dst) >= sizeof(d)) {
		errmsg("%s: file name too long", dst);
		return -ENAMETOOLONG;
	}
	strcpy(d, dst);
	strcpy(b, dst);
	if (snprintf(tmp_path, sizeof(tmp_path), "%s/.%s.XXXXXX", dirname(d), basename(b)) >=
	    (int)sizeof(tmp_path)) {
		errmsg("%s: file name too long", dst);
		return -ENAMETOOLONG;
	}
	fd = mkstemp(tmp_path);
	if (fd < 0) {
		int e = errno;
		errmsg_err(dst, -e, "%s: cannot create a temporary file beside it: %s",
			   dst, strerror(e));
		return -e;
	}
	tmp_live = 1;
	um = umask(0);
	umask(um);
	if (fchmod(fd, 0666 & ~um) < 0) {
		int e = errno;
		errmsg_err(tmp_path, -e, "%s: %s", tmp_path, strerror(e));
		close(fd);
		return -e;
	}
	return fd;
}

/* Moves the finished temporary file to dst (claimed by target). */
static int publish(const char *dst, struct img_target *target)
{
	int r = img_target_publish(target, tmp_path);

	if (r == -EEXIST)
		errmsg_err(dst, -EEXIST, "%s: already exists (use --force to overwrite)", dst);
	else if (r < 0)
		lib_errmsg(dst, r);
	if (r < 0 && !access(tmp_path, F_OK))
		return r;
	tmp_live = 0;   /* renamed (a failed directory sync after) */
	return r;
}

static const char *fmt_name(enum fmt f)
{
	return f == FMT_RAW ? "raw" : "libimg";
}

static int run(int argc, char **argv)
{
	struct end s = { .fd = -1 }, d = { .fd = -1 };
	int64_t wait_start = 0, waited = -1;
	struct img_create_opts co = { 0 };
	const char *src = NULL, *dst = NULL;
	struct progress pr;
	uint64_t v, copied = 0;
	int c, r, npos = 0, force = 0, nolock = 0, want_progress = 0, ret = EXIT_ERROR, compress = 0;
	int tmp_fd = -1, srcfmt = FMT_PROBE;
	struct img_target *target = NULL;
	char b1[64], b2[64];
	struct tool_getopt g = { 0 };

	tool_init(argc, argv);
	d.fmt = FMT_LIBIMG;
	while ((c = tool_getopt(&g, argc, argv, "O:F:cpfUjqhVv", longopts)) != -1) {
		switch (c) {
		case 1:
			if (npos == 0)
				src = optarg;
			else if (npos == 1)
				dst = optarg;
			else
				return usage_error("too many arguments");
			npos++;
			break;
		case 'O':
			if (!strcmp(optarg, "raw"))
				d.fmt = FMT_RAW;
			else if (!strcmp(optarg, "libimg"))
				d.fmt = FMT_LIBIMG;
			else
				return usage_error("unknown output format '%s' (raw or libimg)",
						   optarg);
			break;
		case 'F':
			if (!strcmp(optarg, "raw"))
				srcfmt = FMT_RAW;
			else if (!strcmp(optarg, "libimg"))
				srcfmt = FMT_LIBIMG;
			else
				return usage_error("unknown source format '%s' (raw or libimg)",
						   optarg);
			break;
		case OPT_CLUSTER_SIZE:
			if (parse_size(optarg, &v) || v < IMG_MIN_CLUSTER_SIZE ||
			    v > IMG_MAX_CLUSTER_SIZE || (v & (v - 1))) {
				return value_error("invalid cluster size '%s' (a power of two from "
						   "64K to 64M)", optarg);
			}
			co.cluster_size = (uint32_t)v;
			break;
		case 'c':
		case OPT_COMPRESS:
			compress = 1;
			break;
		case 'p': want_progress = 1; break;
		case 'f': force = 1; break;
		case 'U': nolock = 1; break;
		case 'j': json = 1; break;
		case 'q': quiet = 1; break;
		case 'v': verbose = 1; break;
		case 'h': usage(); return EXIT_OK;
		case 'V': print_version(); return EXIT_OK;
		default:
			return usage_error("bad usage");
		}
	}
	if (!src || !dst)
		return usage_error("expected SRC and DST");
	if (co.cluster_size && d.fmt != FMT_LIBIMG)
		return usage_error("--cluster-size applies only to -O libimg");
	if (compress && d.fmt != FMT_LIBIMG)
		return usage_error("-c applies only to -O libimg");
	s.name = src;
	d.name = dst;

	for (;;) {
		int again = 0;

		if ((r = open_source(&s, nolock, srcfmt)) < 0) {
			if (s.fmt == FMT_LIBIMG && !s.img)
				ret = exit_status(r);   /* 4: its chain cannot be opened */
			goto out;
		}
		r = check_target(dst, force, &s, &target, &wait_start, &waited, &again);
		if (!again)
			break;
		/* dst is busy and --wait: wait holding nothing, then again */
		close_source(&s);
		jitter_nap();
	}
	if (r < 0) {
		ret = exit_status(r);   /* EXIT_BUSY: dst is in use */
		goto out;
	}
	verbose_msg("%s: %s read with %s, %u MiB pieces in %u requests", src,
		    s.fmt == FMT_RAW ? "data" : "data clusters (of the image and its backing images)",
		    s.engine ? s.engine : "buffered reads",
		    CHUNK >> 20, CHUNK / SUBREAD);
	if (s.probed && !quiet) {
		char e[TEXT_ESCAPE_LEN(1024)];
		errmsg("warning: %s: read as a libimg image (detected from its contents); "
		       "give -F raw to copy the file's bytes as they are, -F libimg to "
		       "silence this", text_escape(src, e, sizeof(e)));
	}

	d.size = s.size;
	if (d.fmt == FMT_LIBIMG && d.size % IMG_SECTOR_SIZE)
		d.size += IMG_SECTOR_SIZE - d.size % IMG_SECTOR_SIZE;
	if (d.fmt == FMT_LIBIMG && d.size == 0) {
		errmsg("%s: empty: a libimg image needs at least 512 bytes", src);
		goto out;
	}

	catch_signals();
	tmp_fd = make_temp(dst);
	if (tmp_fd < 0)
		goto out;
	if (d.fmt == FMT_RAW) {
		d.fd = tmp_fd;
		tmp_fd = -1;
		d.granule = RAW_GRANULE;
	} else {
		struct img_info in;
		close(tmp_fd);
		tmp_fd = -1;
		co.virtual_size = d.size;
		co.flags = IMG_CREATE_OVERWRITE;   /* replaces our placeholder */
		r = img_create(tmp_path, &co);
		if (r < 0) {
			lib_errmsg(dst, r);
			goto out;
		}
		r = img_open(tmp_path, IMG_OPEN_RDWR | IMG_OPEN_SCRATCH, &d.img);
		if (r < 0) {
			lib_errmsg(dst, r);
			goto out;
		}
		memset(&in, 0, sizeof(in));
		r = img_info(d.img, &in);
		if (r < 0) {
			lib_errmsg(dst, r);
			goto out;
		}
		d.granule = in.cluster_size ? in.cluster_size : IMG_DEFAULT_CLUSTER_SIZE;
		d.compress = compress;
	}

	progress_init(&pr, want_progress && !quiet);
	progress_update(&pr, 0, s.size);
	r = copy_all(&s, &d, &pr, &copied);
	progress_finish(&pr, r >= 0);
	if (r < 0)
		goto out;

	/* finish the output */
	if (d.fmt == FMT_RAW) {
		if (ftruncate(d.fd, (off_t)d.size) < 0 || fsync(d.fd) < 0) {
			errmsg_err(dst, -errno, "%s: %s", dst, strerror(errno));
			goto out;
		}
		r = close(d.fd);
		d.fd = -1;
		if (r < 0) {
			errmsg_err(dst, -errno, "%s: %s", dst, strerror(errno));
			goto out;
		}
	} else {
		r = img_flush(d.img);
		if (r < 0) {
			lib_errmsg(dst, r);
			goto out;
		}
		r = img_close(d.img);
		d.img = NULL;
		if (r < 0) {
			lib_errmsg(dst, r);
			goto out;
		}
	}
	if ((r = publish(dst, target)) < 0) {
		ret = exit_status(r);
		goto out;
	}
	ret = EXIT_OK;
	if (json) {
		struct json_out j;
		json_start(&j, stdout);
		json_doc_begin(&j);
		json_string(&j, "source", src);
		json_string(&j, "source_format", fmt_name(s.fmt));
		json_string(&j, "destination", dst);
		json_string(&j, "destination_format", fmt_name(d.fmt));
		json_u64(&j, "virtual_size", d.size);
		json_u64(&j, "copied_bytes", copied);
		if (d.fmt == FMT_LIBIMG)
			json_u64(&j, "cluster_size", d.granule);
		else
			json_null(&j, "cluster_size");
		json_bool(&j, "compressed", d.compress);
		json_object_end(&j);
		json_finish(&j);
	} else if (!quiet)
		printf("%s (%s) -> %s (%s): %s virtual, %s of data written\n", src,
		       fmt_name(s.fmt), dst, fmt_name(d.fmt),
		       human_size(d.size, b1, sizeof(b1)), human_size(copied, b2, sizeof(b2)));
out:
	if (d.img)
		img_close(d.img);
	if (d.fd >= 0)
		close(d.fd);
	if (tmp_fd >= 0)
		close(tmp_fd);
	if (tmp_live) {
		unlink(tmp_path);
		tmp_live = 0;
	}
	img_target_release(target);
	if (s.img)
		img_close(s.img);
	if (s.fd >= 0)
		close(s.fd);
	if (s.dio)
		s.dio->ops->close(s.dio);
	return ret;
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
