/* SPDX-License-Identifier: MIT */
/* The run directory of a served image; see rundir.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rundir.h"

const char *online_rundir_base(void)
{
	const char *e = getenv("LIBIMG_RUNDIR");

	return e && *e ? e : ONLINE_RUNDIR_DEFAULT;
}

__attribute__((noinline)) int online_path(const char *rundir, const char *name, char *buf,
					  size_t len)
{
	int n = snprintf(buf, len, "%s/%s", rundir, name);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static uint64_t fnv1a64(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ull;
	}
	return h;
}

/* Reads rundir/key into buf (trailing newline dropped); "" when absent.
 * Only a regular file of root's or the caller's, not through a symbolic
 * link, is a state key (online_state_set writes nothing else): a FIFO
 * planted there would hang every tool listing the states, a link to
 * another file would show its content (and name a mount point imgumount
 * then acts on); anything else reads as absent. */
static void read_key(const char *rundir, const char *key, char *buf, size_t len)
{
	char path[PATH_MAX];
	struct stat sb;
	ssize_t n;
	int fd;

	buf[0] = 0;
	if (online_path(rundir, key, path, sizeof(path)) < 0)
		return;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return;
	if (fstat(fd, &sb) || !S_ISREG(sb.st_mode) || (sb.st_uid != 0 && sb.st_uid != geteuid())) {
		close(fd);
		return;
	}
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		n = 0;
	buf[n] = 0;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = 0;
}

int online_state_set(const char *rundir, const char *key, const char *val)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	size_t len;
	int fd, r = 0;

	if (online_path(rundir, key, path, sizeof(path)) < 0)
		return -ENAMETOOLONG;
	if (!val)
		return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	len = strlen(val);
	if (write(fd, val, len) != (ssize_t)len || write(fd, "\n", 1) != 1)
		r = errno ? -errno : -EIO;
	if (close(fd) < 0 && !r)
		r = -errno;
	if (!r && rename(tmp, path) < 0)
		r = -errno;
	if (r)
		unlink(tmp);
	return r;
}


/* A live imgserve: the process exists and its name says so (a recycled
 * pid running something else is not the daemon). */
/* The start of /proc/PID/NAME as a string: its length, or <= 0. */
static ssize_t read_proc(pid_t pid, const char *name, char *buf, size_t len)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%ld/%s", (long)pid, name);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	return n;
}

static int pid_is_imgserve(pid_t pid)
{
	char comm[64];

	if (pid <= 0 || online_pid_ended(pid))
		return 0;
	return read_proc(pid, "comm", comm, sizeof(comm)) > 0 && !strncmp(comm, "imgserve", 8);
}

int online_state_of(const char *arg, struct online_state *st)
{
	struct stat sb;
	int r;

	if (stat(arg, &sb) < 0) {
		r = -errno;
		errmsg_err(arg, r, "%s: %s", arg, strerror(-r));
		return r;
	}
	if (S_ISBLK(sb.st_mode) || S_ISDIR(sb.st_mode)) {
		int dev = S_ISBLK(sb.st_mode);
		if (online_state_find(dev ? arg : NULL, dev ? NULL : arg, st))
			return 0;
		errmsg("%s: %s (no state under %s)", arg,
		       dev ? "not the loop device of an attached libimg image" : "not mounted by imgmount",
		       online_rundir_base());
		return -ENOTCONN;
	}
	r = online_state_load(arg, st);
	if (r == 0)
		errmsg("%s: not mounted or attached (no state in %s)", arg, st->rundir);
	return r > 0 ? 0 : r == 0 ? -ENOTCONN : r;
}

int online_state_lock(const char *rundir)
{
	int fd = open(rundir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			int r = -errno;
			close(fd);
			return r;
		}
	}
	return fd;
}

void online_state_unlock(int fd)
{
	if (fd >= 0)
		close(fd);   /* drops the flock */
}

pid_t online_state_pid(const char *rundir)
{
	char buf[32];

	read_key(rundir, RUNDIR_PID, buf, sizeof(buf));
	return (pid_t)strtol(buf, NULL, 10);
}

void online_state_reload(struct online_state *st)
{
	char buf[32];

	read_key(st->rundir, RUNDIR_PID, buf, sizeof(buf));
	st->pid = (pid_t)strtol(buf, NULL, 10);
	st->alive = pid_is_imgserve(st->pid);
	read_key(st->rundir, RUNDIR_EXPORT, st->export_path, sizeof(st->export_path));
	read_key(st->rundir, RUNDIR_LOOP, st->loop, sizeof(st->loop));
	read_key(st->rundir, RUNDIR_MOUNTPOINT, st->mountpoint, sizeof(st->mountpoint));
}

int online_state_recorded(const struct online_state *st)
{
	return st->pid > 0 || st->loop[0] || st->mountpoint[0] || st->export_path[0];
}

int online_state_load(const char *image, struct online_state *st)
{
	int n;

	memset(st, 0, sizeof(*st));
	if (!realpath(image, st->image)) {
		int r = -errno;
		errmsg_err(image, r, "%s: %s", image, strerror(-r));
		return r;
	}
	n = snprintf(st->rundir, sizeof(st->rundir), "%s/%016llx", online_rundir_base(),
		     (unsigned long long)fnv1a64(st->image));
	if (n < 0 || (size_t)n >= sizeof(st->rundir) - 16) {
		errmsg("%s: run directory path too long", online_rundir_base());
		return -ENAMETOOLONG;
	}
	online_state_reload(st);
	return online_state_recorded(st);
}

int online_state_find(const char *dev, const char *dir, struct online_state *st)
{
	char want_dir[PATH_MAX] = "";
	const char *base = online_rundir_base();
	struct dirent *de;
	DIR *d;
	int found = 0;

	if (dir && !realpath(dir, want_dir))
		snprintf(want_dir, sizeof(want_dir), "%s", dir);
	d = opendir(base);
	if (!d)
		return 0;
	while (!found && (de = readdir(d))) {
		if (de->d_name[0] == '.' || strlen(de->d_name) != 16)
			continue;
		memset(st, 0, sizeof(*st));
		snprintf(st->rundir, sizeof(st->rundir), "%s/%s", base, de->d_name);
		read_key(st->rundir, RUNDIR_IMAGE, st->image, sizeof(st->image));
		online_state_reload(st);
		if (dev && st->loop[0] && !strcmp(st->loop, dev))
			found = 1;
		if (dir && st->mountpoint[0] && !strcmp(st->mountpoint, want_dir))
			found = 1;
	}
	closedir(d);
	return found;
}

const char *online_describe(const struct online_state *st, char *buf, size_t len)
{
	size_t n = 0;

	buf[0] = 0;
	if (st->pid > 0)
		n += (size_t)snprintf(buf + n, len - n, "imgserve (pid %ld%s)", (long)st->pid,
				      st->alive ? "" : ", not running");
	if (n < len && st->loop[0])
		n += (size_t)snprintf(buf + n, len - n, "%sloop device %s", n ? ", " : "",
				      st->loop);
	if (n < len && st->mountpoint[0])
		snprintf(buf + n, len - n, "%smounted on %s", n ? ", " : "", st->mountpoint);
	return buf;
}

static int state_cmp(const void *a, const void *b)
{
	const struct online_state *x = a, *y = b;
	int c = strcmp(x->image, y->image);

	return c ? c : strcmp(x->rundir, y->rundir);
}

int online_state_list(struct online_state **out, size_t *n)
{
	const char *base = online_rundir_base();
	struct online_state *v = NULL, *nv;
	struct dirent *de;
	size_t cnt = 0;
	DIR *d;

	*out = NULL;
	*n = 0;
	d = opendir(base);
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		struct online_state st;
		if (de->d_name[0] == '.' || strlen(de->d_name) != 16 ||
		    strspn(de->d_name, "0123456789abcdef") != 16)
			continue;
		memset(&st, 0, sizeof(st));
		if (online_path(base, de->d_name, st.rundir, sizeof(st.rundir)) < 0)
			continue;
		if (access(st.rundir, R_OK | X_OK) < 0 && errno == EACCES) {
			closedir(d);
			free(v);
			return -EACCES;   /* mode 0700: root's */
		}
		read_key(st.rundir, RUNDIR_IMAGE, st.image, sizeof(st.image));
		online_state_reload(&st);
		if (!online_state_recorded(&st))
			continue;
		if (!(nv = realloc(v, (cnt + 1) * sizeof(*v)))) {
			closedir(d);
			free(v);
			return -ENOMEM;
		}
		v = nv;
		v[cnt++] = st;
	}
	closedir(d);
	if (cnt)
		qsort(v, cnt, sizeof(*v), state_cmp);
	*out = v;
	*n = cnt;
	return 0;
}

/* ---- sequences ----------------------------------------------------------- */

int online_refuse_if_used(const char *file, const struct online_state *st)
{
	char d[PATH_MAX * 2 + 128];

	if (!online_state_recorded(st))
		return 0;
	online_describe(st, d, sizeof(d));
	if (st->alive) {
		char w[96];
		errmsg_err(file, -EBUSY, "%s: in use by %s%s", file, d,
			   waited_text(lock_gave_up_after(), w, sizeof(w)));
		note_holder(st->pid);
		return -EBUSY;
	}
	errmsg("%s: left over from a daemon that is gone: %s; run 'imgumount %s' to "
	       "clean up", file, d[0] ? d : st->rundir, file);
	return -ESTALE;
}

/* 1 when pid has ended: gone, or a zombie its new parent has not reaped. */
int online_pid_ended(pid_t pid)
{
	char buf[256], *p;

	if (kill(pid, 0) < 0 && errno == ESRCH)
		return 1;
	if (read_proc(pid, "stat", buf, sizeof(buf)) <= 0)
		return 1;
	p = strrchr(buf, ')');   /* "pid (comm) S ..." */
	return p && (p[2] == 'Z' || p[2] == 'X');
}

