/* SPDX-License-Identifier: MIT */
/* imgserve's watch over the host and the filesystem inside; see watch.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "../common.h"
#include "events.h"
#include "rundir.h"
#include "watch.h"

#ifndef FAN_FS_ERROR
#define FAN_FS_ERROR 0x00008000
#endif
#ifndef FAN_EVENT_INFO_TYPE_ERROR
#define FAN_EVENT_INFO_TYPE_ERROR 5
#endif
#ifndef FAN_MARK_FILESYSTEM
#define FAN_MARK_FILESYSTEM 0x00000100
#endif
#ifndef FAN_REPORT_FID
#define FAN_REPORT_FID 0x00000200
#endif

/* FAN_EVENT_INFO_TYPE_ERROR's record (linux/fanotify.h, 5.16) */
struct fan_error_info {
	struct fanotify_event_info_header hdr;
	int32_t error;
	uint32_t error_count;
};

static struct {
	struct watch_conf c;
	char image[PATH_MAX], rundir[PATH_MAX], host_dir[PATH_MAX];
	pthread_t thread;
	int started;
	int wake[2];
	pthread_mutex_t lock;       /* the status fields below */
	int below;                  /* host space below the mark (reported) */
	uint64_t host_free, low_water;
	/* the watched filesystem */
	char mountpoint[PATH_MAX], dev[64];
	uint64_t mnt_id;            /* the mount watched (a remount is another) */
	const char *how;            /* "fanotify", "errors_count", NULL */
	int fan_fd;
	uint64_t errors_seen;       /* errors_count when last read */
	uint64_t fs_errors;         /* reported by fs_error events */
} W = { .wake = { -1, -1 }, .fan_fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER };

int watch_parse_low_water(const char *arg, struct watch_conf *c)
{
	size_t n = strlen(arg);
	uint64_t v;

	if (n && arg[n - 1] == '%') {
		char *end;
		unsigned long p;
		errno = 0;
		p = strtoul(arg, &end, 10);
		if (errno || end != arg + n - 1 || end == arg || p > 100)
			return -EINVAL;
		c->low_water_pct = (unsigned)p;
		c->low_water = 0;
		return 0;
	}
	if (parse_size(arg, &v))
		return -EINVAL;
	c->low_water = v;
	c->low_water_pct = 0;
	return 0;
}

int watch_parse_fs_mode(const char *arg, struct watch_conf *c)
{
	if (!strcmp(arg, "auto"))
		c->fs_mode = WATCH_FS_AUTO;
	else if (!strcmp(arg, "poll"))
		c->fs_mode = WATCH_FS_POLL;
	else if (!strcmp(arg, "off"))
		c->fs_mode = WATCH_FS_OFF;
	else
		return -EINVAL;
	return 0;
}

/* ---- the host ------------------------------------------------------------ */

void watch_set_low_water(const struct watch_conf *c)
{
	pthread_mutex_lock(&W.lock);
	W.c.low_water = c->low_water;
	W.c.low_water_pct = c->low_water_pct;
	W.low_water = c->low_water;
	if (!c->low_water && !c->low_water_pct)
		W.below = 0;   /* no mark: nothing to be below */
	pthread_mutex_unlock(&W.lock);
}

static void check_host(void)
{
	struct statvfs sv;
	uint64_t avail, total, mark, bytes;
	unsigned pct;
	int below;

	pthread_mutex_lock(&W.lock);
	bytes = W.c.low_water;
	pct = W.c.low_water_pct;
	pthread_mutex_unlock(&W.lock);
	if ((!bytes && !pct) || statvfs(W.host_dir, &sv) < 0)
		return;
	avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	total = (uint64_t)sv.f_blocks * sv.f_frsize;
	mark = pct ? total / 100 * pct : bytes;
	below = avail < mark;
	pthread_mutex_lock(&W.lock);
	W.host_free = avail;
	W.low_water = mark;
	if (below == W.below) {
		pthread_mutex_unlock(&W.lock);
		return;
	}
	W.below = below;
	pthread_mutex_unlock(&W.lock);
	event_emit(below ? EV_LOW_SPACE : EV_SPACE_OK, EV_STR("host_directory", W.host_dir),
		   EV_U64("host_free", avail), EV_U64("host_size", total), EV_U64("low_water", mark),
		   EV_END);
}

/* ---- the filesystem inside ----------------------------------------------- */

/* The ext4 error counter of the watched filesystem: 0 and *count, or -1
 * (not ext4, no such file). */
static int read_errors_count(uint64_t *count)
{
	char path[128], buf[32];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/sys/fs/ext4/%s/errors_count", W.dev);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	*count = strtoull(buf, NULL, 10);
	return 0;
}

static void fs_error_event(const char *source, const char *error, uint64_t count, uint64_t total)
{
	pthread_mutex_lock(&W.lock);
	W.fs_errors += count;
	pthread_mutex_unlock(&W.lock);
	event_emit(EV_FS_ERROR, EV_STR("filesystem", "ext4"), EV_STR("device", W.dev),
		   EV_STR("mountpoint", W.mountpoint), EV_STR("source", source),
		   EV_STR("error", error), EV_U64("count", count), EV_U64("errors_count", total),
		   EV_END);
}

static void unwatch_fs(void)
{
	if (W.fan_fd >= 0)
		close(W.fan_fd);
	pthread_mutex_lock(&W.lock);
	W.fan_fd = -1;
	W.how = NULL;
	W.mountpoint[0] = W.dev[0] = 0;
	pthread_mutex_unlock(&W.lock);
}

/* The mount id of what is mounted on mp (statx), 0 when unknown. */
static uint64_t mount_id(const char *mp)
{
	struct statx sx;

	if (statx(AT_FDCWD, mp, 0, STATX_MNT_ID, &sx) < 0 || !(sx.stx_mask & STATX_MNT_ID))
		return 0;
	return sx.stx_mnt_id;
}

/* Starts watching the filesystem mounted on mp: the block device under it
 * must be our loop device. */
static void watch_fs(const char *mp, const char *loop)
{
	struct stat ms, ls;
	char link[64], target[PATH_MAX], *base;
	uint64_t count = 0;
	ssize_t n;
	int fd = -1;

	if (stat(mp, &ms) < 0 || stat(loop, &ls) < 0 || !S_ISBLK(ls.st_mode) ||
	    ms.st_dev != ls.st_rdev)
		return;   /* not mounted (yet): the next tick looks again */
	snprintf(link, sizeof(link), "/sys/dev/block/%u:%u", major(ms.st_dev), minor(ms.st_dev));
	if ((n = readlink(link, target, sizeof(target) - 1)) <= 0)
		return;
	target[n] = 0;
	base = strrchr(target, '/');
	pthread_mutex_lock(&W.lock);
	snprintf(W.dev, sizeof(W.dev), "%.63s", base ? base + 1 : target);
	snprintf(W.mountpoint, sizeof(W.mountpoint), "%s", mp);
	W.mnt_id = mount_id(mp);
	pthread_mutex_unlock(&W.lock);
	if (read_errors_count(&count) < 0) {
		/* not ext4: nothing to watch, but remembered as watched */
		return;
	}
	if (W.c.fs_mode == WATCH_FS_AUTO) {
		fd = fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_FID | FAN_CLOEXEC | FAN_NONBLOCK,
				   O_RDONLY | O_CLOEXEC);
		if (fd >= 0 && fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_FS_ERROR,
					     AT_FDCWD, mp) < 0) {
			close(fd);
			fd = -1;
		}
	}
	pthread_mutex_lock(&W.lock);
	W.fan_fd = fd;
	W.how = fd >= 0 ? "fanotify" : "errors_count";
	W.errors_seen = count;
	pthread_mutex_unlock(&W.lock);
	if (count)
		fs_error_event("recorded", NULL, count, count);
}

/* Follows the mount point the run directory records. */
static void check_mount(void)
{
	struct online_state st;

	memset(&st, 0, sizeof(st));
	snprintf(st.rundir, sizeof(st.rundir), "%s", W.rundir);
	snprintf(st.image, sizeof(st.image), "%s", W.image);
	online_state_reload(&st);
	/* unmounted, or mounted again (imgctl fsck): the watch starts over */
	if (W.mountpoint[0] && (strcmp(W.mountpoint, st.mountpoint) ||
				mount_id(W.mountpoint) != W.mnt_id))
		unwatch_fs();
	if (!W.mountpoint[0] && st.mountpoint[0] && st.loop[0])
		watch_fs(st.mountpoint, st.loop);
}

/* The errors_count fallback. */
static void poll_errors(void)
{
	uint64_t count;

	if (!W.how || strcmp(W.how, "errors_count") || read_errors_count(&count) < 0 ||
	    count <= W.errors_seen)
		return;
	fs_error_event("errors_count", NULL, count - W.errors_seen, count);
	W.errors_seen = count;
}

/* Reads what fanotify reports. */
static void read_fanotify(void)
{
	char buf[4096] __attribute__((aligned(8)));
	ssize_t n;

	while ((n = read(W.fan_fd, buf, sizeof(buf))) > 0) {
		struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
		for (; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
			const char *p = (const char *)(m + 1), *end = (const char *)m + m->event_len;
			int32_t err = 0;
			uint32_t cnt = 1;
			uint64_t total = 0;
			if (!(m->mask & FAN_FS_ERROR))
				continue;
			while (p + sizeof(struct fanotify_event_info_header) <= end) {
				const struct fanotify_event_info_header *h = (const void *)p;
				if (h->len < sizeof(*h) || p + h->len > end)
					break;
				if (h->info_type == FAN_EVENT_INFO_TYPE_ERROR &&
				    h->len >= sizeof(struct fan_error_info)) {
					const struct fan_error_info *e = (const void *)p;
					err = e->error;
					cnt = e->error_count;
				}
				p += h->len;
			}
			if (read_errors_count(&total) == 0)
				W.errors_seen = total;
			fs_error_event("fanotify", err > 0 ? strerrorname_np(err) : NULL, cnt, total);
		}
	}
}

static void *watch_main(void *arg)
{
	int64_t next = 0;

	(void)arg;
	for (;;) {
		struct pollfd p[2] = { { .fd = W.wake[0], .events = POLLIN },
				       { .fd = W.fan_fd, .events = POLLIN } };
		struct timespec ts;
		int64_t now;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
		if (now >= next) {
			check_host();
			if (W.c.fs_mode != WATCH_FS_OFF) {
				check_mount();
				poll_errors();
			}
			next = now + WATCH_TICK_MS;
		}
		p[1].fd = W.fan_fd;
		if (poll(p, W.fan_fd >= 0 ? 2 : 1, (int)(next - now)) < 0)
			continue;
		if (p[0].revents)
			break;
		if (W.fan_fd >= 0 && (p[1].revents & POLLIN))
			read_fanotify();
	}
	unwatch_fs();
	return NULL;
}

int watch_start(const struct watch_conf *c)
{
	char *slash;
	int r;

	W.c = *c;
	snprintf(W.image, sizeof(W.image), "%s", c->image);
	snprintf(W.rundir, sizeof(W.rundir), "%s", c->rundir);
	snprintf(W.host_dir, sizeof(W.host_dir), "%s", c->image);
	slash = strrchr(W.host_dir, '/');
	if (slash)
		*(slash == W.host_dir ? slash + 1 : slash) = 0;
	W.c.image = W.image;
	W.c.rundir = W.rundir;
	if (pipe2(W.wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		r = -errno;
		errmsg("cannot start the watch: %s", strerror(-r));
		return r;
	}
	if ((r = pthread_create(&W.thread, NULL, watch_main, NULL))) {
		errmsg("cannot start the watch thread: %s", strerror(r));
		return -r;
	}
	W.started = 1;
	return 0;
}

void watch_stop(void)
{
	char c = 1;

	if (!W.started)
		return;
	if (write(W.wake[1], &c, 1) < 0) {
		/* cannot happen: the pipe is empty */
	}
	pthread_join(W.thread, NULL);
	close(W.wake[0]);
	close(W.wake[1]);
	W.wake[0] = W.wake[1] = -1;
	W.started = 0;
}

void watch_status_fields(struct json_out *j)
{
	pthread_mutex_lock(&W.lock);
	if (W.c.low_water || W.c.low_water_pct) {
		json_u64(j, "low_water", W.low_water);
		json_u64(j, "host_free", W.host_free);
	} else {
		json_null(j, "low_water");
		json_null(j, "host_free");
	}
	json_string(j, "fs_watch", W.how);
	json_u64(j, "fs_errors", W.fs_errors);
	pthread_mutex_unlock(&W.lock);
}
