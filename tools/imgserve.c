/* SPDX-License-Identifier: MIT */
/*
 * imgserve: export a libimg image as one regular file through FUSE.
 *
 * The FUSE filesystem is mounted over EXPORT, an empty regular file, so its
 * root inode is the disk: a regular file of the image's virtual size.  Only
 * the public API of libimg is used:
 *
 *   read / write                 img_pread / img_pwrite
 *   fsync, flush (close)         img_flush
 *   fallocate PUNCH_HOLE         img_discard (partial clusters read back
 *                                as zeros; whole clusters go back to the host)
 *   fallocate ZERO_RANGE         img_write_zeroes
 *   statfs                       f_bsize 4096 (--block-size): the loop
 *                                driver takes its discard granularity
 *                                from it (imgserve(1))
 *
 * The image stays open read-write (its lock held) for the daemon's life;
 * with --read-only, read-only (a shared lock) and writes are refused.
 * A control socket in the run directory (online/control.h) takes status,
 * grow, shrink, compact, snapshot, merge, qos, resume, on-nospace and
 * stop, one connection at a time ("events" keeps its connection:
 * online/events.h streams the events to it; online/watch.h watches the
 * host's free space and the filesystem inside for errors); grow and shrink
 * invalidate the export's attributes so that the kernel fetches the new
 * size.  The host out of space pauses the requests that need new space
 * instead of failing them (--on-nospace; "the host out of space" below).
 *
 * Quiescing: every FUSE request that uses the image handle holds io_lock
 * for reading; snapshot and merge take it for writing (writer-preferring,
 * so a steady stream of requests cannot starve them): no request is in
 * flight while the handle is switched to the new top (snapshot) or to the
 * merged base (merge), and requests arriving meanwhile wait.  A snapshot
 * first freezes the filesystem mounted from the loop device (FIFREEZE,
 * before taking the lock: the freeze's own writes come through here) and
 * thaws it (FITHAW) on every path out.  A merge holds the lock for the
 * whole copy.  SIGTERM, SIGINT, SIGHUP and "stop" end the session loop,
 * then the export is unmounted and the image flushed and closed (dirty
 * flag cleared).
 *
 * QoS (online/qos.h): reads, writes, discards and write-zeroes wait for
 * the export's token buckets before they take io_lock.
 */
#define FUSE_USE_VERSION 312
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "common_cache.h"
#include "online/control.h"
#include "online/qos.h"
#include "online/events.h"
#include "online/watch.h"

#ifndef FALLOC_FL_KEEP_SIZE
#define FALLOC_FL_KEEP_SIZE 0x01
#endif
#ifndef FALLOC_FL_PUNCH_HOLE
#define FALLOC_FL_PUNCH_HOLE 0x02
#endif
#ifndef FALLOC_FL_ZERO_RANGE
#define FALLOC_FL_ZERO_RANGE 0x10
#endif

/* The statfs block size: the loop device's discard granularity.  4 KiB is
 * the host filesystem's block, the unit a punch inside a cluster gives
 * back; larger values make filesystems skip free runs shorter than that
 * (see imgserve(1) for the measurement). */
#define EXPORT_BLOCK_SIZE 4096u
static uint32_t block_size = EXPORT_BLOCK_SIZE;

/* The host page cache the export keeps of the image file: at most this
 * much, least recently used given back first (common_cache.h).  Enough
 * for a hot working set of random reads to be served from memory, as
 * qemu-storage-daemon serves them (it keeps everything), without letting
 * one export fill the host with a second copy of what the filesystem
 * above the loop device caches anyway.  --cache-size changes it,
 * --host-cache lifts it (the kernel alone decides). */
#define CACHE_LIMIT_DEFAULT (1ull << 30)

#define OPT_LOW_WATER 0x4c57
#define OPT_FS_WATCH  0x4657

static const struct option longopts[] = {
	{ "daemon",    no_argument,       NULL, 'd' },
	{ "threads",   required_argument, NULL, 't' },
	{ "direct-io", no_argument,       NULL, 'D' },
	{ "read-only", no_argument,       NULL, 'r' },
	{ "block-size", required_argument, NULL, 'b' },
	{ "host-cache", no_argument,       NULL, 'c' },
	{ "cache-size", required_argument, NULL, 'C' },
	{ "on-nospace", required_argument, NULL, 'N' },
	{ "json",      no_argument,       NULL, 'j' },
	{ "quiet",     no_argument,       NULL, 'q' },
	{ "low-water", required_argument, NULL, OPT_LOW_WATER },
	{ "fs-watch",  required_argument, NULL, OPT_FS_WATCH },
	{ "help",      no_argument,       NULL, 'h' },
	{ "version",   no_argument,       NULL, 'V' },
	BACKING_PATH_OPTION,
	WAIT_OPTION,
	QOS_OPTIONS,
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE EXPORT\n"
	       "Export the libimg image FILE as the regular file EXPORT (an existing, empty\n"
	       "regular file that becomes a FUSE mount point) until SIGTERM or 'stop'.\n"
	       "  -d, --daemon       run in the background once the export is up\n"
	       "  -t, --threads N    FUSE worker threads (default 16)\n"
	       "  -D, --direct-io    open the export uncached (FOPEN_DIRECT_IO)\n"
	       "  -C, --cache-size SIZE  host page cache kept of FILE (default 1G; 0: none)\n"
	       "  -c, --host-cache   no cache limit: the kernel alone decides\n"
	       "  -b, --block-size N statfs block size, the discard granularity (default 4096)\n"
	       "  -r, --read-only    open FILE read-only (shared lock); writes are refused\n"
	       "  -N, --on-nospace POLICY  host out of space: pause (default), error, pause:SECS\n"
	       QOS_HELP
	       BACKING_PATH_HELP
	       "  -j, --json         once the export is up, print it as a JSON object\n"
	       "      --low-water=BYTES|PCT%%  a low_space event below this host free space\n"
	       "      --fs-watch=auto|poll|off  watch the mounted filesystem for errors\n"
	       WAIT_HELP
	       "  -q, --quiet        print nothing on success\n"
	       "  -h, --help / -V, --version  show this help / the version\n"
	       "Control socket: $LIBIMG_RUNDIR (default /run/libimg)/HASH/ctl, see imgserve(1).\n"
	       "Exit status: 0 stopped cleanly (-d: the export is up), 1 error, 2 usage,\n"
	       "  3 corrupt, 4 broken chain, 5 not found, 75 in use.  See libimg(7).\n", progname);
}

static struct server {
	struct img *img;            /* NULL after a failed switch: I/O fails */
	pthread_rwlock_t io_lock;   /* requests: read; switching img: write */
	char image[PATH_MAX];        /* canonical */
	char export_path[PATH_MAX];  /* canonical */
	char rundir[PATH_MAX];
	struct fuse_session *se;
	atomic_uint_fast64_t vsize;
	uint32_t cluster_size;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	int direct_io;
	int read_only;
	int host_cache;             /* --host-cache: no limit asked for */
	uint64_t cache_limit;
	int cache_limited;          /* a limit in force (io_lock): chunks are
	                             * given back (img_cache_advise) */
	struct hcache cache;
	int ctl_fd;
	pthread_t main_thread;
	atomic_int stopping;
	atomic_uint_fast64_t n_read, n_write, n_discard, n_zero, n_flush;
	/* requests the image failed (the guest saw the error), and of those
	 * the host out of space (ENOSPC, EDQUOT); the last one's errno */
	atomic_uint_fast64_t n_io_err, n_nospace;
	atomic_int last_io_err;
	atomic_uint_fast64_t bytes_read, bytes_written;
} S = { .ctl_fd = -1, .cache_limit = CACHE_LIMIT_DEFAULT };

/* ---- QoS (online/qos.h) ------------------------------------------------ */

/* The export's limits: set by the options, changed by "qos". */
static struct qos qos_q;
static struct qos_limits qos_start = { .burst_ms = QOS_BURST_MS_DEFAULT };

/* A request of bytes bytes in direction dir (QOS_READ, QOS_WRITE) waits
 * for its tokens before it touches the image (and before io_lock: a
 * waiting request holds no snapshot or merge back).  Discard and
 * write-zeroes count as one write request of no bytes. */
static void qos_wait(int dir, uint64_t bytes)
{
	qos_charge(&qos_q, dir, bytes);
}

/* A request waiting for a limit holds its FUSE worker: with a limit set at
 * start, the session may start this many workers beyond --threads (the
 * kernel's background requests, op_init's max_background), so that
 * requests waiting for a write limit cannot take every worker and hold
 * the reads back.  Without one, --threads alone (the extra workers would
 * change an unlimited export's behaviour). */
#define QOS_SPARE_THREADS 64u

static unsigned qos_threads(unsigned threads)
{
	return qos_any(&qos_start) ? threads + QOS_SPARE_THREADS : threads;
}

/* hcache's drop callback (S.img held): gives back the host pages of the
 * data the virtual range [off, off + len) maps to in the image file (the
 * library maps the range; img_cache_advise).  Data of a backing image is
 * in another file and stays (see imgserve(1)). */
static void drop_range(void *ctx, uint64_t off, uint64_t len)
{
	(void)ctx;
	(void)img_cache_advise(S.img, off, len, IMG_ADVISE_DONTNEED);
}

/* A request moved [off, off + n) (S.img held). */
static void cache_touch(uint64_t off, uint64_t n)
{
	if (S.cache_limited && S.img)
		hcache_touch(&S.cache, off, n);
}

/* ---- per-thread I/O buffer ------------------------------------------- */

static pthread_key_t buf_key;

struct tbuf {
	void *p;
	size_t cap;
};

static void tbuf_free(void *arg)
{
	struct tbuf *b = arg;

	free(b->p);
	free(b);
}

static void *tbuf_get(size_t len)
{
	struct tbuf *b = pthread_getspecific(buf_key);

	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b || pthread_setspecific(buf_key, b)) {
			free(b);
			return NULL;
		}
	}
	if (b->cap < len) {
		void *p = NULL;
		size_t cap = len < 65536 ? 65536 : len;
		if (posix_memalign(&p, 4096, cap))
			return NULL;
		free(b->p);
		b->p = p;
		b->cap = cap;
	}
	return b->p;
}

/* ---- FUSE operations --------------------------------------------------- */

/* Every use of S.img from a request: between these two. */
static struct img *served_get(void)
{
	pthread_rwlock_rdlock(&S.io_lock);
	return S.img;
}

static void served_put(void)
{
	pthread_rwlock_unlock(&S.io_lock);
}

static void fill_attr(struct stat *st)
{
	struct img_info in;
	uint64_t size = atomic_load(&S.vsize);

	memset(st, 0, sizeof(*st));
	st->st_ino = FUSE_ROOT_ID;
	st->st_mode = S_IFREG | (S.mode & 07777);
	st->st_nlink = 1;
	st->st_uid = S.uid;
	st->st_gid = S.gid;
	st->st_size = (off_t)size;
	st->st_blksize = block_size;
	if (served_get() && img_info(S.img, &in) == 0)
		st->st_blocks = (blkcnt_t)(in.allocated_clusters * in.cluster_size / 512);
	served_put();
}

/* How long the kernel may trust the attributes it got.  The size changes
 * only through this daemon, which tells the kernel at once (size_changed:
 * fuse_lowlevel_notify_inval_inode), so they are trusted for long.  With
 * 0, every read was preceded by a GETATTR round trip (the kernel checks
 * the size before a read): 4 KiB random reads at depth 16 served from the
 * host cache went from 18-21k to 50k requests a second (bench/fio-online.sh).
 * Without auto_inval_data the GETATTR is not asked for either. */
#define ATTR_TIMEOUT 3600.0

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Asynchronous direct I/O from the loop driver arrives as many
	 * background requests: let enough of them be in flight. */
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	/* The data changes only through this daemon: no revalidation of the
	 * page cache by mtime (with it, every read first asked GETATTR). */
	conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill_attr(&st);
	fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct stat st;

	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	/* The size changes only through the control socket (grow, shrink). */
	if ((to_set & FUSE_SET_ATTR_SIZE) && (uint64_t)attr->st_size != atomic_load(&S.vsize)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (to_set & FUSE_SET_ATTR_MODE)
		S.mode = attr->st_mode & 07777;
	if (to_set & FUSE_SET_ATTR_UID)
		S.uid = attr->st_uid;
	if (to_set & FUSE_SET_ATTR_GID)
		S.gid = attr->st_gid;
	fill_attr(&st);
	fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, ENOTDIR);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (S.read_only && (fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if ((fi->flags & O_TRUNC) && atomic_load(&S.vsize) != 0) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fi->direct_io = S.direct_io ? 1 : 0;
	fi->keep_cache = 0;
	fuse_reply_open(req, fi);
}

/* A request the image failed with err (-errno): counted for status. */
static void io_failed(long err)
{
	if (err >= 0)
		return;
	atomic_fetch_add(&S.n_io_err, 1);
	if (err == -ENOSPC || err == -EDQUOT)
		atomic_fetch_add(&S.n_nospace, 1);
	atomic_store(&S.last_io_err, (int)-err);
	event_io_error((int)-err, atomic_load(&S.n_io_err), atomic_load(&S.n_nospace));
}

/* ---- the host out of space: pause, don't fail (--on-nospace) -------------
 * A request the image fails with ENOSPC or EDQUOT (a write that needs a
 * new host cluster, a write-zeroes or discard that copies up, a flush whose
 * commit could not write the log or a BAT block) is held, not failed: it
 * goes on a FIFO list without a reply, and the FUSE worker goes back to
 * the kernel, so reads and writes that need no new space keep flowing.
 * A new write, write-zeroes or discard that overlaps a held one is held
 * behind it untried, so the held data never lands over newer data.  The
 * retry thread (nospace_main) tries the list again, oldest first, every
 * NOSPACE_RETRY_MS and at once on "resume"; the first that still finds no
 * space ends the pass.  What succeeds is answered as if it had succeeded
 * at once.  With pause:SECONDS a request held that long is failed with
 * its error; with "error" (the old behaviour) nothing is held.  Retrying
 * is safe: a failed write into a new cluster gives the cluster back and
 * maps nothing, a commit that could not write the log or a BAT block
 * changes nothing and is retried at the same log position (journal.c);
 * only a failed sync is final (FORMAT.md 6 rule 10), and it fails with
 * EIO, never held.  The state (paused, held requests, since when) is in
 * status and every change of it in the daemon's log (stderr: RUNDIR/log
 * with -d). */

#define NOSPACE_RETRY_MS 1000

enum nospace_policy { NOSPACE_PAUSE, NOSPACE_ERROR };
enum held_op { HELD_WRITE, HELD_FLUSH, HELD_ZERO, HELD_DISCARD };

struct held {
	struct held *next;
	fuse_req_t req;
	enum held_op op;
	uint64_t off, len;
	int err;                    /* the errno it failed with (> 0) */
	struct timespec since;      /* CLOCK_MONOTONIC */
	char data[];                /* HELD_WRITE: the bytes */
};

static struct nospace {
	pthread_mutex_t lock;
	pthread_cond_t wake;        /* the retry thread: kick, stop, new held */
	pthread_cond_t passed;      /* a retry pass ended */
	enum nospace_policy policy;
	unsigned timeout_s;         /* pause:SECONDS; 0: no limit */
	struct held *head, **tail;
	uint64_t n_held, held_bytes;
	struct timespec since;      /* paused since (monotonic) */
	uint64_t n_pauses, n_timeouts, passes;
	int kick, stop, started;
	pthread_t thread;
} NS = { .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
	 .passed = PTHREAD_COND_INITIALIZER, .tail = &NS.head };

static int is_nospace(long err)
{
	return err == -ENOSPC || err == -EDQUOT;
}

static double since_s(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* A line in the daemon's log (stderr), with the time. */
static void __attribute__((format(printf, 1, 2))) ns_log(const char *fmt, ...)
{
	char msg[1024], when[32];
	struct tm tm;
	time_t t = time(NULL);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
	fprintf(stderr, "%s %s: %s: %s\n", when, progname, S.image, msg);
	fflush(stderr);
}

/* "pause", "error" or "pause:SECONDS" into *pol and *timeout.  0 or -1. */
static int nospace_parse(const char *s, enum nospace_policy *pol, unsigned *timeout)
{
	uint64_t v;
	char *end;

	*timeout = 0;
	if (!strcmp(s, "pause")) {
		*pol = NOSPACE_PAUSE;
	} else if (!strcmp(s, "error")) {
		*pol = NOSPACE_ERROR;
	} else if (!strncmp(s, "pause:", 6) && s[6] >= '0' && s[6] <= '9') {
		errno = 0;
		v = strtoull(s + 6, &end, 10);
		if (errno || *end || v < 1 || v > 86400 * 365)
			return -1;
		*pol = NOSPACE_PAUSE;
		*timeout = (unsigned)v;
	} else {
		return -1;
	}
	return 0;
}

/* The policy as the option spells it, into buf. */
static const char *nospace_policy_name(char *buf, size_t len)
{
	if (NS.policy == NOSPACE_ERROR)
		return "error";
	if (!NS.timeout_s)
		return "pause";
	snprintf(buf, len, "pause:%u", NS.timeout_s);
	return buf;
}

/* Runs a held request once against the image: 0 or -errno. */
static long held_run(struct held *h)
{
	long r;

	if (!served_get()) {
		served_put();
		return -EIO;
	}
	switch (h->op) {
	case HELD_WRITE:
		r = img_pwrite(S.img, h->data, h->len, h->off);
		if (r > 0)
			cache_touch(h->off, (uint64_t)r);
		break;
	case HELD_FLUSH:
		r = img_flush(S.img);
		break;
	case HELD_ZERO:
		r = img_write_zeroes(S.img, h->off, h->len);
		break;
	default:
		r = img_discard(S.img, h->off, h->len);
		break;
	}
	served_put();
	return r < 0 ? r : 0;
}

/* The answer of a held request that ended with r (0 or -errno). */
static void held_reply(struct held *h, long r)
{
	if (r < 0) {
		io_failed(r);
		fuse_reply_err(h->req, (int)-r);
	} else if (h->op == HELD_WRITE) {
		atomic_fetch_add(&S.n_write, 1);
		atomic_fetch_add(&S.bytes_written, h->len);
		fuse_reply_write(h->req, (size_t)h->len);
	} else {
		if (h->op == HELD_FLUSH)
			atomic_fetch_add(&S.n_flush, 1);
		fuse_reply_err(h->req, 0);
	}
}

/* A held request that [off, off + len) must wait behind (NS.lock held). */
static int held_overlaps(uint64_t off, uint64_t len)
{
	for (struct held *h = NS.head; h; h = h->next)
		if (h->op != HELD_FLUSH && off < h->off + h->len && h->off < off + len)
			return 1;
	return 0;
}

/* Called by a request before it runs: 1 when it must wait behind a held
 * request (then held with nospace_hold(..., 0)). */
static int nospace_must_wait(enum held_op op, uint64_t off, uint64_t len)
{
	int r;

	if (op == HELD_FLUSH)
		return 0;
	pthread_mutex_lock(&NS.lock);
	r = NS.head && held_overlaps(off, len);
	pthread_mutex_unlock(&NS.lock);
	return r;
}

/* A request that got r (-errno; 0: not tried, it waits behind another):
 * 1 when it is now held (no reply yet: the retry thread answers it), 0
 * when the caller answers it as usual. */
static int nospace_hold(fuse_req_t req, enum held_op op, const void *buf, uint64_t off,
			uint64_t len, long r)
{
	struct held *h;

	if (r < 0 && !is_nospace(r))
		return 0;
	pthread_mutex_lock(&NS.lock);
	if (NS.policy == NOSPACE_ERROR || !NS.started || NS.stop) {
		pthread_mutex_unlock(&NS.lock);
		return 0;
	}
	pthread_mutex_unlock(&NS.lock);
	h = malloc(sizeof(*h) + (op == HELD_WRITE ? len : 0));
	if (!h)
		return 0;
	memset(h, 0, sizeof(*h));
	h->req = req;
	h->op = op;
	h->off = off;
	h->len = len;
	h->err = r < 0 ? (int)-r : ENOSPC;
	if (op == HELD_WRITE)
		memcpy(h->data, buf, len);
	clock_gettime(CLOCK_MONOTONIC, &h->since);
	pthread_mutex_lock(&NS.lock);
	if (!NS.head) {
		NS.since = h->since;
		NS.n_pauses++;
		char pb[32];
		ns_log("host out of space (%s): paused: requests that need new space are held "
		       "until space appears (--on-nospace=%s; 'resume' retries at once)",
		       strerrorname_np(h->err), nospace_policy_name(pb, sizeof(pb)));
		event_emit(EV_PAUSED, EV_STR("reason", "nospace"),
			   EV_STR("error", strerrorname_np(h->err)), EV_END);
	}
	*NS.tail = h;
	NS.tail = &h->next;
	NS.n_held++;
	NS.held_bytes += h->len;
	pthread_cond_broadcast(&NS.wake);
	pthread_mutex_unlock(&NS.lock);
	return 1;
}

/* Removes the head (NS.lock held). */
static struct held *held_pop(void)
{
	struct held *h = NS.head;

	NS.head = h->next;
	if (!NS.head)
		NS.tail = &NS.head;
	NS.n_held--;
	NS.held_bytes -= h->len;
	return h;
}

/* One pass over the held requests, oldest first (NS.lock held; dropped
 * while a request runs).  final: the daemon stops, everything left fails. */
static void nospace_pass(int final)
{
	uint64_t done = 0, failed = 0;
	int was_paused = NS.head != NULL;
	double paused_for = was_paused ? since_s(&NS.since) : 0;

	while (NS.head) {
		struct held *h = NS.head;
		int give_up = final || NS.policy == NOSPACE_ERROR ||
			      (NS.timeout_s && since_s(&h->since) >= NS.timeout_s);
		long r;

		pthread_mutex_unlock(&NS.lock);
		r = held_run(h);
		pthread_mutex_lock(&NS.lock);
		if (is_nospace(r) && !give_up)
			break;   /* still full: the rest waits too */
		held_pop();
		if (r < 0 && is_nospace(r))
			NS.n_timeouts++;
		if (r < 0)
			failed++;
		else
			done++;
		pthread_mutex_unlock(&NS.lock);
		held_reply(h, r);
		free(h);
		pthread_mutex_lock(&NS.lock);
	}
	if (was_paused && !NS.head) {
		ns_log("resumed after %.1f s: %llu held requests completed, %llu failed", paused_for,
		       (unsigned long long)done, (unsigned long long)failed);
		event_emit(EV_RESUMED, EV_STR("reason", "nospace"), EV_END);
	}
	else if (done || failed)
		ns_log("still out of space: %llu held requests completed, %llu failed, %llu held",
		       (unsigned long long)done, (unsigned long long)failed,
		       (unsigned long long)NS.n_held);
	NS.passes++;
	pthread_cond_broadcast(&NS.passed);
}

static void *nospace_main(void *arg)
{
	pthread_mutex_lock(&NS.lock);
	while (!NS.stop) {
		struct timespec dl;

		if (!NS.head && !NS.kick) {
			pthread_cond_wait(&NS.wake, &NS.lock);
			continue;
		}
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += NOSPACE_RETRY_MS / 1000;
		dl.tv_nsec += (NOSPACE_RETRY_MS % 1000) * 1000000L;
		if (dl.tv_nsec >= 1000000000L) {
			dl.tv_sec++;
			dl.tv_nsec -= 1000000000L;
		}
		while (!NS.kick && !NS.stop &&
		       pthread_cond_timedwait(&NS.wake, &NS.lock, &dl) != ETIMEDOUT)
			;
		NS.kick = 0;
		nospace_pass(0);
	}
	nospace_pass(1);
	pthread_mutex_unlock(&NS.lock);
	return NULL;
}

/* The retry thread.  0 or -1 (printed). */
static int nospace_start(void)
{
	sigset_t block, old;
	int r;

	if (S.read_only)
		return 0;
	sigfillset(&block);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	r = pthread_create(&NS.thread, NULL, nospace_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		errmsg("cannot start the retry thread: %s", strerror(r));
		return -1;
	}
	NS.started = 1;
	return 0;
}

/* Stops the retry thread; what is still held fails with its error (the
 * kernel must get an answer before the export goes). */
static void nospace_stop(void)
{
	if (!NS.started)
		return;
	pthread_mutex_lock(&NS.lock);
	NS.stop = 1;
	pthread_cond_broadcast(&NS.wake);
	pthread_mutex_unlock(&NS.lock);
	pthread_join(NS.thread, NULL);
	NS.started = 0;
}

/* The keys of status. */
static void nospace_status(struct json_out *j)
{
	char buf[32];

	pthread_mutex_lock(&NS.lock);
	json_string(j, CTL_KEY_NOSPACE_POLICY, nospace_policy_name(buf, sizeof(buf)));
	json_bool(j, CTL_KEY_PAUSED, NS.head != NULL);
	json_u64(j, "paused_seconds", NS.head ? (uint64_t)since_s(&NS.since) : 0);
	json_u64(j, CTL_KEY_HELD_REQUESTS, NS.n_held);
	json_u64(j, "held_bytes", NS.held_bytes);
	json_u64(j, "pauses", NS.n_pauses);
	json_u64(j, "nospace_timeouts", NS.n_timeouts);
	pthread_mutex_unlock(&NS.lock);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	uint64_t vs = atomic_load(&S.vsize);
	ssize_t n;
	void *buf;

	if (off < 0 || (uint64_t)off >= vs || size == 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > vs - (uint64_t)off)
		size = (size_t)(vs - (uint64_t)off);
	buf = tbuf_get(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	qos_wait(QOS_READ, size);
	n = served_get() ? img_pread(S.img, buf, size, (uint64_t)off) : -EIO;
	if (n > 0)
		cache_touch((uint64_t)off, (uint64_t)n);
	served_put();
	if (n < 0) {
		io_failed(n);
		fuse_reply_err(req, (int)-n);
		return;
	}
	atomic_fetch_add(&S.n_read, 1);
	atomic_fetch_add(&S.bytes_read, (uint64_t)n);
	fuse_reply_buf(req, buf, (size_t)n);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	uint64_t vs = atomic_load(&S.vsize);
	ssize_t n;

	if (S.read_only) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (off < 0 || (uint64_t)off > vs || size > vs - (uint64_t)off) {
		fuse_reply_err(req, (uint64_t)off >= vs ? ENOSPC : EFBIG);
		return;
	}
	qos_wait(QOS_WRITE, size);
	if (nospace_must_wait(HELD_WRITE, (uint64_t)off, size) &&
	    nospace_hold(req, HELD_WRITE, buf, (uint64_t)off, size, 0))
		return;
	n = served_get() ? img_pwrite(S.img, buf, size, (uint64_t)off) : -EIO;
	if (n > 0)
		cache_touch((uint64_t)off, (uint64_t)n);
	served_put();
	if (n < 0 && nospace_hold(req, HELD_WRITE, buf, (uint64_t)off, size, n))
		return;
	if (n < 0) {
		io_failed(n);
		fuse_reply_err(req, (int)-n);
		return;
	}
	atomic_fetch_add(&S.n_write, 1);
	atomic_fetch_add(&S.bytes_written, (uint64_t)n);
	fuse_reply_write(req, (size_t)n);
}

/* Flushes for req; answers it, or holds it (the host out of space). */
static void do_flush(fuse_req_t req)
{
	int r = S.read_only ? 0 : served_get() ? img_flush(S.img) : -EIO;

	if (!S.read_only)
		served_put();
	if (r < 0 && nospace_hold(req, HELD_FLUSH, NULL, 0, 0, r))
		return;
	atomic_fetch_add(&S.n_flush, 1);
	io_failed(r);
	fuse_reply_err(req, -r);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	do_flush(req);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	do_flush(req);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	uint64_t vs = atomic_load(&S.vsize), end;
	int r;

	if (S.read_only) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (off < 0 || len <= 0 || __builtin_add_overflow((uint64_t)off, (uint64_t)len, &end)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
		/* past the end: nothing there to punch */
		if ((uint64_t)off >= vs) {
			fuse_reply_err(req, 0);
			return;
		}
		if (end > vs)
			end = vs;
		qos_wait(QOS_WRITE, 0);
		atomic_fetch_add(&S.n_discard, 1);
		if (nospace_must_wait(HELD_DISCARD, (uint64_t)off, end - (uint64_t)off) &&
		    nospace_hold(req, HELD_DISCARD, NULL, (uint64_t)off, end - (uint64_t)off, 0))
			return;
		r = served_get() ? img_discard(S.img, (uint64_t)off, end - (uint64_t)off) : -EIO;
		served_put();
		if (r < 0 && nospace_hold(req, HELD_DISCARD, NULL, (uint64_t)off,
					  end - (uint64_t)off, r))
			return;
	} else if (mode == FALLOC_FL_ZERO_RANGE ||
		   mode == (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)) {
		if (end > vs) {
			/* the disk cannot grow through the file */
			fuse_reply_err(req, (mode & FALLOC_FL_KEEP_SIZE) ? EINVAL : EFBIG);
			return;
		}
		qos_wait(QOS_WRITE, 0);
		atomic_fetch_add(&S.n_zero, 1);
		if (nospace_must_wait(HELD_ZERO, (uint64_t)off, (uint64_t)len) &&
		    nospace_hold(req, HELD_ZERO, NULL, (uint64_t)off, (uint64_t)len, 0))
			return;
		r = served_get() ? img_write_zeroes(S.img, (uint64_t)off, (uint64_t)len) : -EIO;
		served_put();
		if (r < 0 && nospace_hold(req, HELD_ZERO, NULL, (uint64_t)off, (uint64_t)len, r))
			return;
	} else {
		r = -EOPNOTSUPP;
	}
	if (r != -EOPNOTSUPP)
		io_failed(r);
	fuse_reply_err(req, -r);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;
	struct img_info in;
	uint64_t vs = atomic_load(&S.vsize), used = 0;

	if (served_get() && img_info(S.img, &in) == 0)
		used = in.allocated_clusters * in.cluster_size;
	served_put();
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = block_size;
	sv.f_frsize = block_size;
	sv.f_blocks = vs / block_size;
	sv.f_bfree = used < vs ? (vs - used) / block_size : 0;
	sv.f_bavail = sv.f_bfree;
	sv.f_files = 1;
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.statfs = op_statfs,
	.fallocate = op_fallocate,
};

/* ---- control socket ---------------------------------------------------- */

static int progress_stop(void *arg, uint64_t done, uint64_t total)
{
	return atomic_load(&S.stopping);
}

/* Tells the kernel the export's size changed: it fetches attributes again
 * (and forgets cached pages past a new, smaller end). */
static void size_changed(uint64_t old, uint64_t now)
{
	if (S.cache_limited) {
		pthread_rwlock_wrlock(&S.io_lock);
		if (hcache_resize(&S.cache, now))
			S.cache_limited = 0;  /* no memory for the bigger table: no limit from now on */
		pthread_rwlock_unlock(&S.io_lock);
	}
	atomic_store(&S.vsize, now);
	fuse_lowlevel_notify_inval_inode(S.se, FUSE_ROOT_ID, now < old ? (off_t)now : -1, 0);
}

static void status_fields(struct json_out *j)
{
	struct img_info in;

	memset(&in, 0, sizeof(in));
	if (S.img)
		img_info(S.img, &in);
	json_u64(j, CTL_KEY_PID, (uint64_t)getpid());
	json_string(j, CTL_KEY_IMAGE, S.image);
	json_string(j, CTL_KEY_EXPORT, S.export_path);
	json_bool(j, CTL_KEY_OPEN, S.img != NULL);
	json_u64(j, CTL_KEY_VIRTUAL_SIZE, in.virtual_size);
	json_u64(j, "cluster_size", in.cluster_size);
	json_u64(j, "backing_depth", in.backing_depth);
	json_u64(j, "allocated_clusters", in.allocated_clusters);
	json_u64(j, "file_size", in.file_size);
	json_u64(j, CTL_KEY_DISK_USAGE, in.disk_usage);
	json_u64(j, "statfs_block_size", block_size);
	json_bool(j, "read_only", S.read_only);
	json_bool(j, "host_cache", !S.cache_limited);   /* no limit in force */
	if (S.cache_limited) {
		json_u64(j, "cache_limit", S.cache_limit);
		json_u64(j, "cache_bytes", hcache_bytes(&S.cache));
	}
	json_u64(j, CTL_KEY_READS, atomic_load(&S.n_read));
	json_u64(j, CTL_KEY_WRITES, atomic_load(&S.n_write));
	json_u64(j, "bytes_read", atomic_load(&S.bytes_read));
	json_u64(j, "bytes_written", atomic_load(&S.bytes_written));
	json_u64(j, "discards", atomic_load(&S.n_discard));
	json_u64(j, "write_zeroes", atomic_load(&S.n_zero));
	json_u64(j, "flushes", atomic_load(&S.n_flush));
	json_u64(j, CTL_KEY_IO_ERRORS, atomic_load(&S.n_io_err));
	json_u64(j, "nospace_errors", atomic_load(&S.n_nospace));
	{
		int e = atomic_load(&S.last_io_err);
		json_string(j, "last_io_error", e ? strerrorname_np(e) : NULL);
	}
	qos_status_json(&qos_q, j);
	events_status_fields(j);
	watch_status_fields(j);
	nospace_status(j);
}

/* Before the handle is switched (io_lock held for writing): the data
 * pages of the file the image's name names now go, as the count forgets
 * them after the switch (switched). */
static void switching(void)
{
	if (S.cache_limited && S.img)
		(void)img_cache_advise(S.img, 0, UINT64_MAX, IMG_ADVISE_DONTNEED);
}

/* After the handle was switched: the count starts again on the file the
 * image's name now names, uncached. */
static void switched(void)
{
	if (S.cache_limited)
		hcache_reset(&S.cache);
}

/* The filesystem mounted from our loop device, frozen (FIFREEZE): its
 * descriptor in *fd (-1 when nothing is mounted).  0 or -errno with a
 * message in err. */
static int fs_freeze(int *fd, char *err, size_t len)
{
	struct online_state os;
	int r;

	*fd = -1;
	memset(&os, 0, sizeof(os));
	snprintf(os.rundir, sizeof(os.rundir), "%s", S.rundir);
	snprintf(os.image, sizeof(os.image), "%s", S.image);
	online_state_reload(&os);
	if (!os.mountpoint[0])
		return 0;
	*fd = open(os.mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*fd < 0) {
		r = -errno;
		snprintf(err, len, "%.900s: %s", os.mountpoint, strerror(-r));
		return r;
	}
	if (ioctl(*fd, FIFREEZE, 0) < 0) {
		r = -errno;
		snprintf(err, len, "%.900s: cannot freeze the filesystem (FIFREEZE): %s",
			 os.mountpoint, strerror(-r));
		close(*fd);
		*fd = -1;
		return r;
	}
	return 0;
}

static int fs_thaw(int fd)
{
	int r = 0;

	if (fd < 0)
		return 0;
	if (ioctl(fd, FITHAW, 0) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* snapshot [NAME]: check, freeze, quiesce, flush, new top, switch, thaw.
 * 0 and the snapshot's file name in snap, or -errno with err filled.
 * Everything that can be checked is checked before the freeze
 * (img_snapshot_check): a refusal leaves the container untouched. */
static int do_snapshot(const char *name, char *snap, size_t snaplen, char *err, size_t errlen)
{
	int fd, r, r2;

	pthread_rwlock_rdlock(&S.io_lock);
	r = img_snapshot_check(S.img, name, 0);
	if (r)
		snprintf(err, errlen, "%s (nothing was changed)", img_last_error());
	pthread_rwlock_unlock(&S.io_lock);
	if (r)
		return r;
	if ((r = fs_freeze(&fd, err, errlen)))
		return r;
	pthread_rwlock_wrlock(&S.io_lock);
	switching();
	r = img_snapshot_live(&S.img, name, 0, snap, snaplen);
	if (r)
		snprintf(err, errlen, "%s%s", img_last_error(),
			 S.img ? "" : " (the image could not be opened again: I/O fails until stop)");
	switched();
	pthread_rwlock_unlock(&S.io_lock);
	r2 = fs_thaw(fd);
	if (!r && r2) {
		r = r2;
		snprintf(err, errlen, "snapshot %.900s taken, but the filesystem could not be thawed "
			 "(FITHAW): %s", snap, strerror(-r2));
	}
	return r;
}

/* merge [BASE]: quiesce for the whole copy, switch to the merged base.
 * BASE: the base named explicitly (a full path), for a clone's base.  A
 * refusal leaves the handle as it was (img_merge_live_into). */
static int do_merge(const char *named, char *ref, size_t reflen, char *err, size_t errlen)
{
	int r;

	pthread_rwlock_wrlock(&S.io_lock);
	if (img_backing_ref(S.img, ref, reflen) <= 0) {
		pthread_rwlock_unlock(&S.io_lock);
		snprintf(err, errlen, "%.900s: has no backing image to merge into", S.image);
		return -EINVAL;
	}
	switching();
	r = img_merge_live_into(&S.img, named, 0, progress_stop, NULL);
	if (r)
		snprintf(err, errlen, "%s%s", img_last_error(),
			 S.img ? "" : " (the image could not be opened again: I/O fails until stop)");
	switched();
	pthread_rwlock_unlock(&S.io_lock);
	return r;
}

/* ---- control commands: a table of handlers -------------------------------
 * The protocol (commands, their arguments, which change the image, the
 * reply format) is control.h's; this table adds what serves each command.
 * run_command applies the rules every command shares, in this order: a
 * read-only daemon refuses the commands that change the image
 * (ONLINE_CMD_WRITES), a closed handle (a failed switch) leaves only the
 * commands marked SERVE_WITHOUT_IMAGE, an unknown command is refused with
 * the list of commands; then the handler checks its own arguments. */

/* A request: the words of the line. */
struct request {
	const struct online_command *oc;   /* the protocol's entry */
	const char *arg, *arg2;            /* NULL when absent */
	int stop;                          /* the handler asks the daemon to stop */
	int conn;                          /* the connection; -1: a handler kept it */
};

/* The "error" reply of a failed library call (r: -errno). */
static char *fail_reply(int r)
{
	const char *d = img_last_error();

	return online_error_reply(-r, "%s%s%s\n", img_strerror(r), d && *d ? ": " : "",
				  d ? d : "");
}

static char *cmd_status(struct request *rq)
{
	struct online_ok ok;
	int r;

	if ((r = online_ok_begin(&ok)) < 0)
		return fail_reply(r);
	status_fields(&ok.j);
	return online_ok_end(&ok);
}

/* grow SIZE, shrink SIZE [discard-data] */
static char *cmd_resize(struct request *rq)
{
	int grow = !strcmp(rq->oc->name, CTL_GROW);
	uint64_t size = 0, old = atomic_load(&S.vsize);
	unsigned flags = 0;
	struct online_ok ok;
	int r;

	if (!rq->arg || parse_size(rq->arg, &size))
		return online_error_reply(EINVAL, "%s needs a size in bytes", rq->oc->name);
	if (grow ? size < old : size > old)
		return online_error_reply(EINVAL, "%llu is %s than the current size %llu (use %s)",
					  (unsigned long long)size, grow ? "smaller" : "larger",
					  (unsigned long long)old, grow ? CTL_SHRINK : CTL_GROW);
	if (!grow && rq->arg2 && !strcmp(rq->arg2, CTL_DISCARD_DATA))
		flags |= IMG_RESIZE_DISCARD_DATA;
	if (size != old) {
		r = img_resize(S.img, size, flags);
		if (r < 0)
			return fail_reply(r);
		size_changed(old, size);
		event_emit(EV_RESIZED, EV_U64(CTL_KEY_OLD_SIZE, old), EV_U64(CTL_KEY_NEW_SIZE, size),
			   EV_END);
	}
	if ((r = online_ok_begin(&ok)) < 0)
		return fail_reply(r);
	json_u64(&ok.j, CTL_KEY_OLD_SIZE, old);
	json_u64(&ok.j, CTL_KEY_NEW_SIZE, size);
	return online_ok_end(&ok);
}

/* compact [no-zero-detect] */
static char *cmd_compact(struct request *rq)
{
	struct img_compact_opts o = { .progress = progress_stop };
	struct img_compact_stats cs;
	struct online_ok ok;
	int r;

	if (rq->arg && !strcmp(rq->arg, CTL_NO_ZERO_DETECT))
		o.flags |= IMG_COMPACT_NO_ZERO_DETECT;
	memset(&cs, 0, sizeof(cs));
	r = img_compact(S.img, &o, &cs);
	if (r < 0)
		return fail_reply(r);
	if ((r = online_ok_begin(&ok)) < 0)
		return fail_reply(r);
	json_u64(&ok.j, CTL_KEY_FILE_SIZE_BEFORE, cs.file_size_before);
	json_u64(&ok.j, CTL_KEY_FILE_SIZE_AFTER, cs.file_size_after);
	json_u64(&ok.j, CTL_KEY_DISK_USAGE_BEFORE, cs.disk_usage_before);
	json_u64(&ok.j, CTL_KEY_DISK_USAGE_AFTER, cs.disk_usage_after);
	json_u64(&ok.j, CTL_KEY_ZERO_CLUSTERS_FREED, cs.zero_clusters_freed);
	json_u64(&ok.j, CTL_KEY_CLUSTERS_MOVED, cs.clusters_moved);
	event_emit(EV_COMPACTED, EV_U64(CTL_KEY_FILE_SIZE_BEFORE, cs.file_size_before),
		   EV_U64(CTL_KEY_FILE_SIZE_AFTER, cs.file_size_after),
		   EV_U64(CTL_KEY_DISK_USAGE_BEFORE, cs.disk_usage_before),
		   EV_U64(CTL_KEY_DISK_USAGE_AFTER, cs.disk_usage_after),
		   EV_U64(CTL_KEY_ZERO_CLUSTERS_FREED, cs.zero_clusters_freed),
		   EV_U64(CTL_KEY_CLUSTERS_MOVED, cs.clusters_moved), EV_END);
	return online_ok_end(&ok);
}

/* snapshot [NAME], merge [BASE]: the handle switches to another file; the
 * reply is the status with the new file under key. */
static char *cmd_switch(struct request *rq,
			int (*op)(const char *, char *, size_t, char *, size_t), const char *key)
{
	char name[PATH_MAX] = "", msg[1024] = "";
	struct online_ok ok;
	int r;

	if (rq->arg2 != NULL)
		return online_error_reply(EINVAL, "usage: %s %s", rq->oc->name, rq->oc->args);
	r = op(rq->arg, name, sizeof(name), msg, sizeof(msg));
	if (r < 0)
		return online_error_reply(-r, "%s: %s\n", img_strerror(r), msg);
	event_emit(!strcmp(key, CTL_KEY_SNAPSHOT) ? EV_SNAPSHOT : EV_MERGED, EV_STR(key, name),
		   EV_END);
	if ((r = online_ok_begin(&ok)) < 0)
		return fail_reply(r);
	json_string(&ok.j, key, name);
	status_fields(&ok.j);
	return online_ok_end(&ok);
}

static char *cmd_snapshot(struct request *rq)
{
	return cmd_switch(rq, do_snapshot, CTL_KEY_SNAPSHOT);
}

static char *cmd_merge(struct request *rq)
{
	return cmd_switch(rq, do_merge, CTL_KEY_MERGED_INTO);
}

/* qos [SETTINGS] */
static char *cmd_qos(struct request *rq)
{
	if (rq->arg2)
		return online_error_reply(EINVAL, "usage: %s %s", rq->oc->name, rq->oc->args);
	return qos_command(&qos_q, rq->arg);
}

/* events: the connection goes to the events' writer (events.h), after
 * the "ok" line */
static char *cmd_events(struct request *rq)
{
	char *ok;
	int r;

	if (rq->arg)
		return online_error_reply(EINVAL, "usage: %s", rq->oc->name);
	if (!(ok = online_ok_empty()))
		return NULL;
	online_ctl_write(rq->conn, ok);
	free(ok);
	r = events_subscribe(rq->conn);
	rq->conn = -1;   /* the events' now, closed there even on failure */
	(void)r;
	return NULL;
}

/* low-water BYTES|PCT%: the host's low-water mark from now on (0: none) */
static char *cmd_low_water(struct request *rq)
{
	struct watch_conf c = { 0 };
	struct online_ok ok;
	int r;

	if (!rq->arg || rq->arg2 || watch_parse_low_water(rq->arg, &c))
		return online_error_reply(EINVAL, "usage: %s %s (a size, or a percentage of the "
					  "host filesystem)", rq->oc->name, rq->oc->args);
	watch_set_low_water(&c);
	if ((r = online_ok_begin(&ok)) < 0)
		return fail_reply(r);
	if (c.low_water_pct)
		json_u64(&ok.j, "low_water_percent", c.low_water_pct);
	else
		json_u64(&ok.j, "low_water", c.low_water);
	return online_ok_end(&ok);
}

static char *cmd_stop(struct request *rq)
{
	rq->stop = 1;
	return online_ok_empty();
}

/* resume: the held requests are tried again now; the reply (the status)
 * comes after that pass (at most NOSPACE_RESUME_WAIT_S seconds later). */
#define NOSPACE_RESUME_WAIT_S 10
static char *cmd_resume(struct request *rq)
{
	struct timespec dl;
	uint64_t pass;

	pthread_mutex_lock(&NS.lock);
	pass = NS.passes;
	NS.kick = 1;
	pthread_cond_broadcast(&NS.wake);
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += NOSPACE_RESUME_WAIT_S;
	while (NS.started && NS.passes == pass &&
	       pthread_cond_timedwait(&NS.passed, &NS.lock, &dl) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&NS.lock);
	return cmd_status(rq);
}

/* on-nospace pause|error|pause:SECONDS: the policy from now on; "error"
 * fails what is held (at once: a pass runs). */
static char *cmd_on_nospace(struct request *rq)
{
	enum nospace_policy pol;
	unsigned t;

	if (!rq->arg || rq->arg2 || nospace_parse(rq->arg, &pol, &t))
		return online_error_reply(EINVAL, "usage: %s %s", rq->oc->name, rq->oc->args);
	pthread_mutex_lock(&NS.lock);
	NS.policy = pol;
	NS.timeout_s = t;
	NS.kick = 1;
	pthread_cond_broadcast(&NS.wake);
	pthread_mutex_unlock(&NS.lock);
	ns_log("policy on a full host: --on-nospace=%s", rq->arg);
	return cmd_resume(rq);
}

#define SERVE_WITHOUT_IMAGE 0x1u   /* works while the handle is closed */

static const struct handler {
	const char *name;              /* the protocol's command (control.h) */
	char *(*run)(struct request *rq);
	unsigned flags;                /* SERVE_* */
} handlers[] = {
	{ CTL_STATUS,   cmd_status,   SERVE_WITHOUT_IMAGE },
	{ CTL_GROW,     cmd_resize,   0 },
	{ CTL_SHRINK,   cmd_resize,   0 },
	{ CTL_COMPACT,  cmd_compact,  0 },
	{ CTL_SNAPSHOT, cmd_snapshot, 0 },
	{ CTL_MERGE,    cmd_merge,    0 },
	{ CTL_QOS,      cmd_qos,      SERVE_WITHOUT_IMAGE },
	{ CTL_EVENTS,   cmd_events,   SERVE_WITHOUT_IMAGE },
	{ CTL_LOW_WATER, cmd_low_water, SERVE_WITHOUT_IMAGE },
	{ CTL_RESUME,   cmd_resume,   0 },
	{ CTL_ON_NOSPACE, cmd_on_nospace, 0 },
	{ CTL_STOP,     cmd_stop,     SERVE_WITHOUT_IMAGE },
};

static const struct handler *handler_find(const char *name)
{
	for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
		if (!strcmp(handlers[i].name, name))
			return &handlers[i];
	return NULL;
}

/* "unknown command" with the commands of the protocol's table. */
static char *unknown_reply(const char *cmd)
{
	const struct online_command *oc;
	char names[256];
	size_t off = 0;

	names[0] = 0;
	for (oc = online_commands; oc->name && off < sizeof(names); oc++)
		off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s%s%s",
					off ? ", " : "", oc->name, oc->args[0] ? " " : "", oc->args);
	return online_error_reply(EINVAL, "unknown command '%.64s' (%s)\n", cmd, names);
}

/* Runs one command line that came on the connection *conn; returns the
 * reply line (malloc'd; NULL: none) and sets *stop, and *conn to -1 when
 * a handler kept the connection. */
static char *run_command(char *line, int *conn, int *stop)
{
	char *cmd = strtok(line, " \t"), *arg = strtok(NULL, " \t"), *arg2 = strtok(NULL, " \t");
	struct request rq = { .arg = arg, .arg2 = arg2, .conn = *conn };
	const struct handler *h;
	char *reply;

	if (!cmd)
		cmd = "";
	rq.oc = online_command_find(cmd);
	h = rq.oc ? handler_find(cmd) : NULL;
	if (S.read_only && rq.oc && (rq.oc->flags & ONLINE_CMD_WRITES))
		return online_error_reply(EROFS, "the image is served read-only");
	if (!S.img && !(h && (h->flags & SERVE_WITHOUT_IMAGE)))
		return online_error_reply(EIO, "the image could not be opened again after a "
					  "failed switch: only %s and %s work", CTL_STATUS, CTL_STOP);
	if (!h)
		return unknown_reply(cmd);
	reply = h->run(&rq);
	*stop = rq.stop;
	*conn = rq.conn;
	return reply;
}

static void request_stop(void)
{
	atomic_store(&S.stopping, 1);
	fuse_session_exit(S.se);
	/* wakes the session loop, which waits in the main thread */
	pthread_kill(S.main_thread, SIGTERM);
}

static void *ctl_main(void *arg)
{
	while (!atomic_load(&S.stopping)) {
		char line[CTL_LINE_MAX], *reply;
		int c, stop = 0;

		c = accept4(S.ctl_fd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			break;   /* shut down */
		}
		online_ctl_read(c, line, sizeof(line));
		reply = run_command(line, &c, &stop);
		if (reply && c >= 0)
			online_ctl_write(c, reply);
		free(reply);
		if (c >= 0)
			close(c);
		if (stop)
			request_stop();
	}
	return NULL;
}

/* ---- main -------------------------------------------------------------- */

/* fsname=libimg:PATH with libfuse's option escapes (\, and \\). */
static char *mount_options(void)
{
	char *o = NULL, *p;
	size_t n = strlen(S.image) * 2 + 128;

	o = malloc(n);
	if (!o)
		return NULL;
	p = o + sprintf(o, "fsname=libimg:");
	for (const char *s = S.image; *s; s++) {
		if (*s == ',' || *s == '\\')
			*p++ = '\\';
		*p++ = *s;
	}
	strcpy(p, S.read_only ? ",subtype=libimg,allow_other,default_permissions,ro" :
	       ",subtype=libimg,allow_other,default_permissions");
	return o;
}

/* The daemon's readiness message on the pipe daemonize() made: one byte,
 * written once the export is mounted and the state recorded.  Anything
 * else, end of file included, is not readiness: the parent then waits for
 * the child and exits with its status.  (End of file and a WNOHANG wait
 * cannot tell "ready" from "failed but not reaped yet".) */
#define READY_MSG 'R'

/* Forks; the parent exits 0 once the child says it is ready (READY_MSG),
 * or with the child's exit status when it ends without saying so.
 * Returns the write end of the pipe in the child. */
static int daemonize(void)
{
	int p[2], st = 0;
	pid_t pid;
	ssize_t n;
	char c = 0;

	if (pipe2(p, O_CLOEXEC) < 0) {
		errmsg("pipe: %s", strerror(errno));
		exit(EXIT_ERROR);
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		errmsg("fork: %s", strerror(errno));
		exit(EXIT_ERROR);
	}
	if (pid > 0) {
		close(p[1]);
		while ((n = read(p[0], &c, 1)) < 0 && errno == EINTR)
			;
		if (n == 1 && c == READY_MSG)
			_exit(EXIT_OK);   /* ready and running */
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		/* a child that ended with 0 without saying it was ready
		 * serves nothing */
		_exit(WIFEXITED(st) && WEXITSTATUS(st) ? WEXITSTATUS(st) : EXIT_ERROR);
	}
	close(p[0]);
	setsid();
	return p[1];
}

static void detach_stdio(const char *rundir)
{
	char log[PATH_MAX];
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		close(fd);
	}
	/* later messages (a failed flush at shutdown) go to RUNDIR/log */
	if (online_path(rundir, RUNDIR_LOG, log, sizeof(log)) == 0 &&
	    (fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) >= 0) {
		dup2(fd, 2);
		close(fd);
	}
}

/* What the command line asks for (policy); the export's settings go to S
 * (read_only, direct_io, the cache) and to block_size. */
struct options {
	const char *file, *export_arg;
	int go_daemon;
	unsigned threads;
	struct watch_conf watch;    /* --low-water, --fs-watch */
};

/* -1: go on; else the exit status (--help, --version, bad usage). */
static int parse_options(int argc, char **argv, struct options *o)
{
	struct tool_getopt g = { 0 };
	uint64_t tmp;
	int c, q, qos_set_by_options = 0;

	while ((c = tool_getopt(&g, argc, argv, "dt:Drb:cC:N:jqhV", longopts)) != -1) {
		if ((q = qos_option(c, optarg, &qos_start, &qos_set_by_options)) != 0) {
			if (q < 0)
				return EXIT_USAGE;
			continue;
		}
		switch (c) {
		case 1:
			if (!o->file)
				o->file = optarg;
			else if (!o->export_arg)
				o->export_arg = optarg;
			else
				return usage_error("too many arguments");
			break;
		case 'd': o->go_daemon = 1; break;
		case 't':
			if (parse_size(optarg, &tmp) || tmp < 1 || tmp > 256)
				return usage_error("invalid thread count '%s' (1..256)", optarg);
			o->threads = (unsigned)tmp;
			break;
		case 'D': S.direct_io = 1; break;
		case 'r': S.read_only = 1; break;
		case 'c': S.host_cache = 1; break;
		case 'C':
			if (parse_size(optarg, &S.cache_limit))
				return usage_error("invalid cache size '%s'", optarg);
			break;
		case 'N':
			if (nospace_parse(optarg, &NS.policy, &NS.timeout_s))
				return usage_error("invalid --on-nospace '%s' (pause, error or "
						   "pause:SECONDS)", optarg);
			break;
		case 'b':
			if (parse_size(optarg, &tmp) || tmp < 512 || tmp > (64u << 20) ||
			    (tmp & (tmp - 1)))
				return usage_error("invalid block size '%s' (a power of two, 512 "
						   "to 64M)", optarg);
			block_size = (uint32_t)tmp;
			break;
		case 'j': json = 1; break;
		case 'q': quiet = 1; break;
		case OPT_LOW_WATER:
			if (watch_parse_low_water(optarg, &o->watch))
				return usage_error("invalid --low-water '%s' (BYTES or PCT%%)", optarg);
			break;
		case OPT_FS_WATCH:
			if (watch_parse_fs_mode(optarg, &o->watch))
				return usage_error("invalid --fs-watch '%s' (auto, poll or off)", optarg);
			break;
		case 'h': usage(); return EXIT_OK;
		case 'V': print_version(); return EXIT_OK;
		default:
			return usage_error("bad usage");
		}
	}
	if (!o->file || !o->export_arg)
		return usage_error("expected FILE and EXPORT");
	return -1;
}

/* The export file (an empty regular file: its mode and owner are the
 * disk's) and the image's run directory into S.  0 or -1 (printed). */
static int check_export(const struct options *o)
{
	struct online_state st;
	struct stat sb;

	if (stat(o->export_arg, &sb) < 0) {
		errmsg_err(o->export_arg, -errno, "%s: %s", o->export_arg, strerror(errno));
		return -1;
	}
	if (!S_ISREG(sb.st_mode) || sb.st_size != 0) {
		errmsg("%s: the export must be an empty regular file", o->export_arg);
		return -1;
	}
	if (!realpath(o->export_arg, S.export_path)) {
		errmsg_err(o->export_arg, -errno, "%s: %s", o->export_arg, strerror(errno));
		return -1;
	}
	S.mode = sb.st_mode & 07777;
	S.uid = sb.st_uid;
	S.gid = sb.st_gid;
	if (online_state_load(o->file, &st) < 0)
		return -1;
	snprintf(S.image, sizeof(S.image), "%s", st.image);
	snprintf(S.rundir, sizeof(S.rundir), "%s", st.rundir);
	return 0;
}

/* What serve() set up, for serve_end to undo. */
struct session {
	struct fuse_args fargs;
	char ctl_path[PATH_MAX];
	char *mopts;
	pthread_t ctl_thread;
	int ready_fd;               /* -d: the pipe to the waiting parent */
	int mounted, handlers, ctl_started, state_written, cache_inited;
	int events_started, watch_started;
};

/* Opens the image (its lock decides who serves it) and sets up the host
 * cache limit.  EXIT_OK or the exit status. */
static int open_served_image(const char *file, struct session *ss)
{
	struct img_info in;
	int r;

	r = open_image(file, S.read_only ? 0 : IMG_OPEN_RDWR | IMG_OPEN_NO_WRITE_BEHIND, &S.img);
	if (r < 0)
		return exit_status(r);   /* EXIT_BUSY: another process holds it */
	memset(&in, 0, sizeof(in));
	r = img_info(S.img, &in);
	if (r < 0) {
		lib_errmsg(file, r);
		return EXIT_ERROR;
	}
	atomic_store(&S.vsize, in.virtual_size);
	S.cluster_size = in.cluster_size;
	if (!S.host_cache) {
		if (hcache_init(&S.cache, S.cache_limit, in.virtual_size, in.cluster_size,
				drop_range, NULL)) {
			errmsg("out of memory");
			return EXIT_ERROR;
		}
		ss->cache_inited = 1;
		S.cache_limited = 1;
	}
	return EXIT_OK;
}

/* The run directory (ours now that we hold the image's lock) and the
 * control socket in it.  EXIT_OK or the exit status. */
static int start_control(const char *file, struct session *ss)
{
	struct online_state st;

	memset(&st, 0, sizeof(st));
	snprintf(st.rundir, sizeof(st.rundir), "%s", S.rundir);
	snprintf(st.image, sizeof(st.image), "%s", S.image);
	online_state_reload(&st);
	if (st.loop[0] || st.mountpoint[0])
		return exit_status(online_refuse_if_used(file, &st));
	if ((mkdir(online_rundir_base(), 0755) < 0 && errno != EEXIST) ||
	    (mkdir(S.rundir, 0700) < 0 && errno != EEXIST)) {
		errmsg_err(S.rundir, -errno, "%s: %s", S.rundir, strerror(errno));
		return EXIT_ERROR;
	}
	online_ctl_path(S.rundir, ss->ctl_path, sizeof(ss->ctl_path));
	S.ctl_fd = online_ctl_listen(ss->ctl_path);
	return S.ctl_fd < 0 ? EXIT_ERROR : EXIT_OK;
}

/* The FUSE session, mounted over the export.  EXIT_OK or EXIT_ERROR. */
static int mount_export(struct session *ss)
{
	ss->mopts = mount_options();
	if (!ss->mopts || fuse_opt_add_arg(&ss->fargs, "imgserve") ||
	    fuse_opt_add_arg(&ss->fargs, "-o") || fuse_opt_add_arg(&ss->fargs, ss->mopts)) {
		errmsg("out of memory");
		return EXIT_ERROR;
	}
	S.se = fuse_session_new(&ss->fargs, &ops, sizeof(ops), NULL);
	if (!S.se) {
		errmsg("%s: cannot start a FUSE session", S.export_path);
		return EXIT_ERROR;
	}
	if (fuse_set_signal_handlers(S.se) != 0) {
		errmsg("cannot set signal handlers");
		return EXIT_ERROR;
	}
	ss->handlers = 1;
	if (fuse_session_mount(S.se, S.export_path) != 0) {
		errmsg("%s: cannot mount the FUSE export (is /dev/fuse there, are we root?)",
		       S.export_path);
		return EXIT_ERROR;
	}
	ss->mounted = 1;
	return EXIT_OK;
}

/* Records image, export and pid in the run directory, under its lock
 * (rundir.h).  EXIT_OK or EXIT_ERROR. */
static int record_state(struct session *ss)
{
	char pidbuf[32];
	int lk, r;

	snprintf(pidbuf, sizeof(pidbuf), "%ld", (long)getpid());
	ss->state_written = 1;
	lk = online_state_lock(S.rundir);
	if (lk < 0)
		r = lk;
	else if ((r = online_state_set(S.rundir, RUNDIR_IMAGE, S.image)) >= 0 &&
		 (r = online_state_set(S.rundir, RUNDIR_EXPORT, S.export_path)) >= 0)
		r = online_state_set(S.rundir, RUNDIR_PID, pidbuf);
	online_state_unlock(lk);
	if (r < 0) {
		errmsg_err(S.rundir, r, "%s: cannot record the state: %s", S.rundir, strerror(-r));
		return EXIT_ERROR;
	}
	return EXIT_OK;
}

/* The control thread, which takes no signals: they go to the session
 * loop.  EXIT_OK or EXIT_ERROR. */
static int start_ctl_thread(struct session *ss)
{
	sigset_t block, old;
	int r;

	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	r = pthread_create(&ss->ctl_thread, NULL, ctl_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		errmsg("cannot start the control thread: %s", strerror(r));
		return EXIT_ERROR;
	}
	ss->ctl_started = 1;
	signal(SIGPIPE, SIG_IGN);
	return EXIT_OK;
}

/* The events (online/events.h), logged to RUNDIR/log and standard error.
 * EXIT_OK or EXIT_ERROR. */
static int start_events(const struct options *o, struct session *ss)
{
	char log[PATH_MAX];

	(void)o;
	if (online_path(S.rundir, RUNDIR_LOG, log, sizeof(log)) < 0 ||
	    events_start(S.image, log) < 0)
		return EXIT_ERROR;
	ss->events_started = 1;
	return EXIT_OK;
}

/* The watch over the host's space and the filesystem inside
 * (online/watch.h).  EXIT_OK or EXIT_ERROR. */
static int start_watch(const struct options *o, struct session *ss)
{
	struct watch_conf c = o->watch;

	c.image = S.image;
	c.rundir = S.rundir;
	if (watch_start(&c) < 0)
		return EXIT_ERROR;
	ss->watch_started = 1;
	return EXIT_OK;
}

/* Everything up to the session loop, in order.  EXIT_OK or the exit
 * status. */
static int serve_start(const struct options *o, struct session *ss)
{
	int ret;

	if ((ret = open_served_image(o->file, ss)) != EXIT_OK ||
	    (ret = start_control(o->file, ss)) != EXIT_OK ||
	    (ret = start_events(o, ss)) != EXIT_OK ||
	    (ret = mount_export(ss)) != EXIT_OK ||
	    (ret = record_state(ss)) != EXIT_OK ||
	    (ret = start_watch(o, ss)) != EXIT_OK)
		return ret;
	if (nospace_start() < 0)
		return EXIT_ERROR;
	return start_ctl_thread(ss);
}

/* Says the export is up (--json: once, daemon or not) and, with -d,
 * tells the waiting parent, which then exits 0. */
static void announce(const struct options *o, struct session *ss)
{
	if (json) {
		struct json_out j;
		json_start(&j, stdout);
		json_doc_begin(&j);
		json_string(&j, "filename", o->file);
		json_string(&j, "export", S.export_path);
		json_u64(&j, "pid", (uint64_t)getpid());
		json_string(&j, "control_socket", ss->ctl_path);
		json_string(&j, "rundir", S.rundir);
		json_bool(&j, "read_only", S.read_only);
		json_bool(&j, "daemon", o->go_daemon);
		json_object_end(&j);
		json_finish(&j);
	} else if (!quiet && !o->go_daemon)
		printf("%s: exported at %s (pid %ld, control socket %s)\n", o->file, S.export_path,
		       (long)getpid(), ss->ctl_path);
	if (ss->ready_fd >= 0) {
		if (!quiet && !json)
			printf("%s: exported at %s (pid %ld)\n", o->file, S.export_path,
			       (long)getpid());
		fflush(stdout);
		detach_stdio(S.rundir);
		static const char ready = READY_MSG;
		if (write(ss->ready_fd, &ready, 1) != 1) {
			/* the parent is gone: carry on */
		}
		close(ss->ready_fd);
		ss->ready_fd = -1;
	}
	fflush(stdout);
}

/* The FUSE session loop with threads workers, until SIGTERM, SIGINT,
 * SIGHUP or "stop".  EXIT_OK or EXIT_ERROR. */
static int session_loop(unsigned threads)
{
	struct fuse_loop_config *lcfg = fuse_loop_cfg_create();
	int r, ret;

	if (!lcfg) {
		errmsg("out of memory");
		return EXIT_ERROR;
	}
	fuse_loop_cfg_set_max_threads(lcfg, threads);
	fuse_loop_cfg_set_idle_threads(lcfg, threads);
	fuse_loop_cfg_set_clone_fd(lcfg, 1);
	r = fuse_session_loop_mt(S.se, lcfg);
	ret = r == 0 || atomic_load(&S.stopping) || r == SIGTERM || r == SIGINT || r == SIGHUP ?
	      EXIT_OK : EXIT_ERROR;
	if (ret != EXIT_OK)
		errmsg("%s: FUSE session ended: %s", S.export_path, strerror(r < 0 ? -r : EIO));
	fuse_loop_cfg_destroy(lcfg);
	return ret;
}

/* Undoes what serve_start did, in reverse: the control thread and socket,
 * the export, the image (flushed and closed: EXIT_ERROR when that fails),
 * the records that are still ours (rundir.h).  Returns ret or EXIT_ERROR. */
static int serve_end(const char *file, struct session *ss, int ret)
{
	int r;

	event_emit(EV_STOPPING, EV_STR("reason", ret == EXIT_OK ? "stop" : "error"), EV_END);
	if (ss->watch_started)
		watch_stop();
	atomic_store(&S.stopping, 1);
	if (ss->ctl_started) {
		shutdown(S.ctl_fd, SHUT_RDWR);
		pthread_join(ss->ctl_thread, NULL);
	}
	if (S.ctl_fd >= 0) {
		close(S.ctl_fd);
		online_ctl_path(S.rundir, ss->ctl_path, sizeof(ss->ctl_path));
		unlink(ss->ctl_path);
	}
	nospace_stop();
	if (ss->mounted)
		fuse_session_unmount(S.se);
	if (ss->handlers)
		fuse_remove_signal_handlers(S.se);
	if (S.se)
		fuse_session_destroy(S.se);
	fuse_opt_free_args(&ss->fargs);
	free(ss->mopts);
	if (S.img && S.read_only) {
		img_close(S.img);
	} else if (S.img) {
		r = img_flush(S.img);
		if (r < 0) {
			lib_errmsg(file, r);
			ret = EXIT_ERROR;
		}
		if (close_image(file, S.img) < 0)
			ret = EXIT_ERROR;
	}
	if (ss->cache_inited)
		hcache_free(&S.cache);
	if (ss->events_started)
		events_stop();   /* before RUNDIR/log goes */
	if (ss->state_written) {
		/* only records that are still ours (rundir.h) */
		int lk = online_state_lock(S.rundir);
		if (lk >= 0 && online_state_pid(S.rundir) == getpid()) {
			online_state_set(S.rundir, RUNDIR_EXPORT, NULL);
			online_state_set(S.rundir, RUNDIR_IMAGE, NULL);
			if (ret == EXIT_OK)
				online_state_set(S.rundir, RUNDIR_LOG, NULL);
			online_state_set(S.rundir, RUNDIR_PID, NULL);
			rmdir(S.rundir);   /* fails while imgattach's files are there */
		}
		online_state_unlock(lk);
	}
	return ret;
}

/* The mechanism: daemonize (-d), set up, serve until stopped, undo. */
static int serve(const struct options *o)
{
	struct session ss = { .fargs = FUSE_ARGS_INIT(0, NULL), .ready_fd = -1 };
	int ret;

	if (o->go_daemon)
		ss.ready_fd = daemonize();
	S.main_thread = pthread_self();
	{
		pthread_rwlockattr_t ra;
		pthread_rwlockattr_init(&ra);
		pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		pthread_rwlock_init(&S.io_lock, &ra);
		pthread_rwlockattr_destroy(&ra);
	}
	if (pthread_key_create(&buf_key, tbuf_free) || qos_init(&qos_q, &qos_start) < 0) {
		errmsg("out of memory");
		return EXIT_ERROR;
	}
	ret = serve_start(o, &ss);
	if (ret == EXIT_OK) {
		announce(o, &ss);
		ret = session_loop(qos_threads(o->threads));
	}
	return serve_end(o->file, &ss, ret);
}

static int run(int argc, char **argv)
{
	struct options o = { .threads = 16 };
	int r;

	tool_init(argc, argv);
	if ((r = parse_options(argc, argv, &o)) >= 0)
		return r;
	if (check_export(&o) < 0)
		return EXIT_ERROR;
	return serve(&o);
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
