/* SPDX-License-Identifier: MIT */
/* Shared by the online tools; see common_online.h. */
#include <blkid.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common_fs.h"
#include "common_online.h"

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

static int pid_ended(pid_t pid);

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

	if (pid <= 0 || pid_ended(pid))
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

	read_key(rundir, "pid", buf, sizeof(buf));
	return (pid_t)strtol(buf, NULL, 10);
}

void online_state_reload(struct online_state *st)
{
	char buf[32];

	read_key(st->rundir, "pid", buf, sizeof(buf));
	st->pid = (pid_t)strtol(buf, NULL, 10);
	st->alive = pid_is_imgserve(st->pid);
	read_key(st->rundir, "export", st->export_path, sizeof(st->export_path));
	read_key(st->rundir, "loop", st->loop, sizeof(st->loop));
	read_key(st->rundir, "mountpoint", st->mountpoint, sizeof(st->mountpoint));
}

static int recorded(const struct online_state *st)
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
	return recorded(st);
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
		read_key(st->rundir, "image", st->image, sizeof(st->image));
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

int online_json_u64(const char *j, const char *key, uint64_t *out)
{
	char pat[80];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(j, pat);
	if (!p)
		return -ENOENT;
	p += strlen(pat);
	while (*p == ' ')
		p++;
	if (*p < '0' || *p > '9')
		return -ENOENT;
	*out = strtoull(p, NULL, 10);
	return 0;
}

int online_request(const struct online_state *st, const char *cmd, char *reply, size_t len)
{
	return online_request_timeout(st, cmd, reply, len, -1);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int online_request_timeout(const struct online_state *st, const char *cmd, char *reply,
			   size_t len, int timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t off = 0, cl = strlen(cmd);
	int64_t deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : 0;
	char path[PATH_MAX];
	int fd = -1, r = 0;
	ssize_t n;

	reply[0] = 0;
	if (online_path(st->rundir, "ctl", path, sizeof(path)) < 0 ||
	    strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(reply, len, "control socket path too long: %s/ctl", st->rundir);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		snprintf(reply, len, "cannot reach the daemon at %s: %s", path, strerror(-r));
		goto out;
	}
	if (write(fd, cmd, cl) != (ssize_t)cl || write(fd, "\n", 1) != 1) {
		r = -errno;
		snprintf(reply, len, "cannot talk to the daemon at %s: %s", path, strerror(-r));
		goto out;
	}
	/* The answer is one line; long operations (compact) take their time. */
	for (;;) {
		if (off + 1 >= len)
			break;
		if (timeout_ms >= 0) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			int64_t left = deadline - now_ms();
			int pr = left > 0 ? poll(&p, 1, (int)left) : 0;
			if (pr < 0 && errno == EINTR)
				continue;
			if (pr == 0) {
				r = -ETIMEDOUT;
				snprintf(reply, len, "no answer from the daemon (pid %ld) within %d ms: "
					 "busy with another command?", (long)st->pid, timeout_ms);
				goto out;
			}
		}
		if ((n = read(fd, reply + off, len - 1 - off)) == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			snprintf(reply, len, "no answer from the daemon: %s", strerror(-r));
			goto out;
		}
		off += (size_t)n;
		if (memchr(reply + off - (size_t)n, '\n', (size_t)n))
			break;
	}
	reply[off] = 0;
	if (off && reply[off - 1] == '\n')
		reply[--off] = 0;
	if (!strncmp(reply, "ok", 2) && (reply[2] == 0 || reply[2] == ' ')) {
		memmove(reply, reply + (reply[2] ? 3 : 2), strlen(reply + (reply[2] ? 3 : 2)) + 1);
	} else if (!strncmp(reply, "error ", 6)) {
		char *end;
		long e = strtol(reply + 6, &end, 10);
		r = e > 0 && e < 4096 ? (int)-e : -EIO;
		if (*end == ' ')
			end++;
		memmove(reply, end, strlen(end) + 1);
		/* the daemon's message may quote a backing reference: escaped
		 * for the terminal (text_escape) */
		char *m = strdup(reply);
		if (m) {
			text_escape(m, reply, len);
			free(m);
		}
	} else {
		r = -EPROTO;
		snprintf(reply, len, "the daemon gave no answer to '%s'", cmd);
	}
out:
	if (fd >= 0)
		close(fd);
	return r;
}

const struct online_command online_commands[] = {
	{ "status",   "",                     0, 0, 0 },
	{ "grow",     "SIZE",                 1, 1, ONLINE_CMD_WRITES | ONLINE_CMD_RESIZE },
	{ "shrink",   "SIZE [discard-data]",  1, 2, ONLINE_CMD_WRITES | ONLINE_CMD_RESIZE },
	{ "compact",  "[no-zero-detect]",     0, 1, ONLINE_CMD_WRITES },
	{ "snapshot", "[NAME]",               0, 1, ONLINE_CMD_WRITES },
	{ "merge",    "[BASE]",               0, 1, ONLINE_CMD_WRITES },
	{ "stop",     "",                     0, 0, ONLINE_CMD_STOP },
	{ NULL, NULL, 0, 0, 0 }
};

const struct online_command *online_command_find(const char *name)
{
	const struct online_command *c;

	for (c = online_commands; c->name; c++)
		if (!strcmp(c->name, name))
			return c;
	return NULL;
}

/* ---- replies: one flat JSON object --------------------------------------- */

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

static int hex4(const char *p, unsigned *out)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

/* A JSON string at *pp (at its opening quote): malloc'd, unescaped. */
static int parse_string(const char **pp, char **out)
{
	const char *p = *pp + 1;
	size_t cap = strlen(p) + 1, n = 0;
	char *s = malloc(cap);

	if (!s)
		return -ENOMEM;
	while (*p && *p != '"') {
		unsigned cp;
		if ((unsigned char)*p < 0x20)
			goto bad;
		if (*p != '\\') {
			s[n++] = *p++;
			continue;
		}
		p++;
		switch (*p) {
		case '"': case '\\': case '/': s[n++] = *p; break;
		case 'b': s[n++] = '\b'; break;
		case 'f': s[n++] = '\f'; break;
		case 'n': s[n++] = '\n'; break;
		case 'r': s[n++] = '\r'; break;
		case 't': s[n++] = '\t'; break;
		case 'u':
			if (hex4(p + 1, &cp))
				goto bad;
			p += 4;
			if (cp >= 0xd800 && cp <= 0xdbff && p[1] == '\\' && p[2] == 'u') {
				unsigned lo;
				if (hex4(p + 3, &lo) || lo < 0xdc00 || lo > 0xdfff)
					goto bad;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				p += 6;
			}
			/* \uXXXX is at most 6 bytes of input, at most 4 of UTF-8 */
			if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff))
				goto bad;
			if (cp < 0x80) {
				s[n++] = (char)cp;
			} else if (cp < 0x800) {
				s[n++] = (char)(0xc0 | (cp >> 6));
				s[n++] = (char)(0x80 | (cp & 0x3f));
			} else if (cp < 0x10000) {
				s[n++] = (char)(0xe0 | (cp >> 12));
				s[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
				s[n++] = (char)(0x80 | (cp & 0x3f));
			} else {
				s[n++] = (char)(0xf0 | (cp >> 18));
				s[n++] = (char)(0x80 | ((cp >> 12) & 0x3f));
				s[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
				s[n++] = (char)(0x80 | (cp & 0x3f));
			}
			break;
		default:
			goto bad;
		}
		p++;
	}
	if (*p != '"')
		goto bad;
	s[n] = 0;
	*pp = p + 1;
	*out = s;
	return 0;
bad:
	free(s);
	return -EPROTO;
}

int online_reply_parse(const char *text, struct online_reply *r)
{
	const char *p = skip_ws(text);
	int ret = -EPROTO;

	memset(r, 0, sizeof(*r));
	if (*p++ != '{')
		return -EPROTO;
	p = skip_ws(p);
	if (*p == '}')
		return *skip_ws(p + 1) ? -EPROTO : 0;
	for (;;) {
		struct online_kv kv = { 0 }, *nkv = NULL;
		p = skip_ws(p);
		if (*p != '"' || (ret = parse_string(&p, &kv.key)) < 0)
			goto fail;
		p = skip_ws(p);
		if (*p++ != ':') {
			free(kv.key);
			goto fail;
		}
		p = skip_ws(p);
		if (*p == '"') {
			kv.type = ONLINE_STR;
			ret = parse_string(&p, &kv.str);
		} else if (*p >= '0' && *p <= '9') {
			char *end;
			errno = 0;
			kv.type = ONLINE_NUM;
			kv.num = strtoull(p, &end, 10);
			ret = errno || *end == '.' || *end == 'e' || *end == 'E' ? -EPROTO : 0;
			p = end;
		} else if (!strncmp(p, "true", 4) || !strncmp(p, "false", 5)) {
			kv.type = ONLINE_BOOL;
			kv.num = *p == 't';
			p += kv.num ? 4 : 5;
			ret = 0;
		} else if (!strncmp(p, "null", 4)) {
			kv.type = ONLINE_NULL;
			p += 4;
			ret = 0;
		} else {
			ret = -EPROTO;
		}
		if (ret == 0 && !(nkv = realloc(r->kv, (r->n + 1) * sizeof(*nkv))))
			ret = -ENOMEM;
		if (ret < 0) {
			free(kv.key);
			free(kv.str);
			goto fail;
		}
		r->kv = nkv;
		r->kv[r->n++] = kv;
		p = skip_ws(p);
		if (*p == ',') {
			p++;
			continue;
		}
		ret = -EPROTO;
		if (*p != '}' || *skip_ws(p + 1))
			goto fail;
		return 0;
	}
fail:
	online_reply_free(r);
	return ret < 0 ? ret : -EPROTO;
}

void online_reply_free(struct online_reply *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->kv[i].key);
		free(r->kv[i].str);
	}
	free(r->kv);
	r->kv = NULL;
	r->n = 0;
}

const struct online_kv *online_reply_get(const struct online_reply *r, const char *key)
{
	for (size_t i = 0; i < r->n; i++)
		if (!strcmp(r->kv[i].key, key))
			return &r->kv[i];
	return NULL;
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
		read_key(st.rundir, "image", st.image, sizeof(st.image));
		online_state_reload(&st);
		if (!recorded(&st))
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

/* ---- loop devices ------------------------------------------------------ */

int loop_attach(const char *file, unsigned flags, char *dev, size_t len)
{
	struct loop_config cfg;
	int ctl = -1, bfd = -1, lfd = -1, r = 0, tries, ro = (flags & LOOP_ATTACH_READ_ONLY) != 0;
	int direct_io = (flags & LOOP_ATTACH_DIRECT_IO) != 0;

	bfd = open(file, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (bfd < 0) {
		r = -errno;
		errmsg_err(file, r, "%s: %s", file, strerror(-r));
		goto out;
	}
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		r = -errno;
		errmsg("/dev/loop-control: %s", strerror(-r));
		goto out;
	}
	for (tries = 0; tries < 16; tries++) {
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0) {
			r = -errno;
			errmsg("no free loop device: %s", strerror(-r));
			goto out;
		}
		snprintf(dev, len, "/dev/loop%d", n);
		lfd = open(dev, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
		if (lfd < 0) {
			r = -errno;
			errmsg_err(dev, r, "%s: %s", dev, strerror(-r));
			goto out;
		}
		memset(&cfg, 0, sizeof(cfg));
		cfg.fd = (unsigned)bfd;
		cfg.info.lo_flags = (direct_io ? LO_FLAGS_DIRECT_IO : 0) |
				    (ro ? LO_FLAGS_READ_ONLY : 0);
		snprintf((char *)cfg.info.lo_file_name, sizeof(cfg.info.lo_file_name), "%s", file);
		r = ioctl(lfd, LOOP_CONFIGURE, &cfg) < 0 ? -errno : 0;
		if (r == -EINVAL && direct_io) {
			cfg.info.lo_flags &= ~(unsigned)LO_FLAGS_DIRECT_IO;
			r = ioctl(lfd, LOOP_CONFIGURE, &cfg) < 0 ? -errno : 0;
		}
		close(lfd);
		lfd = -1;
		if (r != -EBUSY)    /* EBUSY: someone took it first; next one */
			break;
	}
	if (r < 0)
		errmsg_err(dev, r, "%s: cannot attach %s: %s", dev, file, strerror(-r));
out:
	if (lfd >= 0)
		close(lfd);
	if (ctl >= 0)
		close(ctl);
	if (bfd >= 0)
		close(bfd);
	return r;
}

/* /sys/block/loopN/loop/backing_file of dev into buf ("" if none). */
static void loop_backing(const char *dev, char *buf, size_t len)
{
	const char *name = strrchr(dev, '/');
	char path[128];
	ssize_t n;
	int fd;

	buf[0] = 0;
	snprintf(path, sizeof(path), "/sys/block/%s/loop/backing_file", name ? name + 1 : dev);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		n = 0;
	buf[n] = 0;
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = 0;
}

int loop_detach(const char *dev, const char *file)
{
	char backing[PATH_MAX];
	int fd, r = 0, tries;

	loop_backing(dev, backing, sizeof(backing));
	if (!backing[0])
		return -ENXIO;
	if (file && strcmp(backing, file)) {
		errmsg("%s: backed by %s, not by %s: not detaching it", dev, backing, file);
		return -EBUSY;
	}
	fd = open(dev, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		errmsg_err(dev, r, "%s: %s", dev, strerror(-r));
		return r;
	}
	/* Right after an unmount the device may still be held for a moment. */
	for (tries = 0; tries < 50; tries++) {
		r = ioctl(fd, LOOP_CLR_FD, 0) < 0 ? -errno : 0;
		if (r != -EBUSY)
			break;
		usleep(100 * 1000);
	}
	close(fd);
	if (r == -ENXIO)
		return r;
	if (r < 0) {
		errmsg_err(dev, r, "%s: cannot detach: %s", dev, strerror(-r));
		return r;
	}
	/* LOOP_CLR_FD on a device someone still has open only arms autoclear:
	 * wait until the backing file is really gone. */
	for (tries = 0; tries < 100; tries++) {
		loop_backing(dev, backing, sizeof(backing));
		if (!backing[0])
			return 0;
		usleep(50 * 1000);
	}
	errmsg("%s: still in use; it is detached when its last user closes it", dev);
	return -EBUSY;
}

int loop_set_capacity(const char *dev)
{
	int fd = open(dev, O_RDONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (ioctl(fd, LOOP_SET_CAPACITY, 0) < 0)
		r = -errno;
	close(fd);
	return r;
}

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

/* ---- sequences ----------------------------------------------------------- */

int online_refuse_if_used(const char *file, const struct online_state *st)
{
	char d[PATH_MAX * 2 + 128];

	if (!recorded(st))
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

/* The imgserve beside this program, else the one in PATH. */
static void imgserve_path(char *buf, size_t len)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n > 0) {
		char *slash;
		self[n] = 0;
		slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			if ((size_t)snprintf(buf, len, "%s/imgserve", self) < len &&
			    access(buf, X_OK) == 0)
				return;
		}
	}
	snprintf(buf, len, "imgserve");
}

static int wait_child(pid_t pid)
{
	int st = 0;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int is_mounted(const char *path);

/* Removes what st records in its run directory, the export file (the
 * "disk.XXXXXX" its imgattach made, or "disk" of older versions) and the
 * directory itself (which stays while another attach's file is there). */
static void remove_rundir(const struct online_state *st)
{
	/* Under the run directory's lock (common_online.h), and only when
	 * the records are still ours: an attach of the same image that
	 * waited for this teardown (--wait) may have started its daemon, which
	 * records itself under the same keys (a rerun of imgmount --wait
	 * racing imgumount left that daemon running with no record, its
	 * export mounted, 1 run in 6).  pid last: what says "recorded". */
	static const char *const keys[] = { "ctl", "disk", "log", "image", "loop",
					    "mountpoint", "export", "pid" };
	char dir[PATH_MAX];
	const char *slash = strrchr(st->export_path, '/');
	int lk = online_state_lock(st->rundir);
	pid_t now;
	size_t i;

	if (lk == -ENOENT)
		return;   /* gone already */
	/* our export, when it is a file of this run directory (its name is
	 * unique to our attach: ours to remove whoever else recorded since) */
	if (slash && !strncmp(slash + 1, "disk.", 5) && realpath(st->rundir, dir) &&
	    (size_t)(slash - st->export_path) == strlen(dir) &&
	    !strncmp(st->export_path, dir, strlen(dir)) && !is_mounted(st->export_path))
		unlink(st->export_path);
	/* Another daemon recorded itself once ours was gone (an attach that
	 * waited for this teardown): its records are not ours to remove. */
	now = online_state_pid(st->rundir);
	if (now > 0 && now != st->pid) {
		online_state_unlock(lk);
		return;
	}
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		online_state_set(st->rundir, keys[i], NULL);
	rmdir(st->rundir);
	online_state_unlock(lk);
}

/* Makes st->rundir (and its base) and a new empty export file in it,
 * "disk.XXXXXX", unique to this attach: two attaches racing for one image
 * never share (nor remove) each other's export.  A loser of the race that
 * takes back its export may remove the run directory between our mkdir
 * and our file: then make both again.  disk receives the file's canonical
 * path (as imgserve records it).  0 or -errno (message printed). */
static int make_export_file(struct online_state *st, char *disk, size_t len)
{
	char dir[PATH_MAX];
	int r = 0, fd = -1, tries;

	for (tries = 0; tries < 100 && fd < 0; tries++) {
		if (mkdir(online_rundir_base(), 0755) < 0 && errno != EEXIST) {
			r = -errno;
			errmsg_err(NULL, r, "%s: %s", online_rundir_base(), strerror(-r));
			return r;
		}
		if (mkdir(st->rundir, 0700) < 0 && errno != EEXIST) {
			r = -errno;
			errmsg_err(st->rundir, r, "%s: %s", st->rundir, strerror(-r));
			return r;
		}
		if (!realpath(st->rundir, dir)) {
			if (errno == ENOENT)
				continue;
			r = -errno;
			errmsg_err(st->rundir, r, "%s: %s", st->rundir, strerror(-r));
			return r;
		}
		if (online_path(dir, "disk.XXXXXX", disk, len) < 0) {
			errmsg("%s: run directory path too long", dir);
			return -ENAMETOOLONG;
		}
		fd = mkostemp(disk, O_CLOEXEC);
		if (fd < 0 && errno != ENOENT) {
			r = -errno;
			errmsg_err(disk, r, "%s: %s", disk, strerror(-r));
			return r;
		}
	}
	if (fd < 0) {
		errmsg("%s: the run directory keeps disappearing", st->rundir);
		return -EAGAIN;
	}
	close(fd);
	return 0;
}

/* Copies what the daemon wrote on its standard error before it was ready
 * (held in the memory file efd) to ours, and leaves its last line in why
 * ("" when it said nothing), without its leading "imgserve: ". */
static void relay_daemon_stderr(int efd, char *why, size_t len)
{
	char buf[8192], *p, *e;
	ssize_t n;
	size_t have = 0;

	why[0] = 0;
	if (efd < 0 || lseek(efd, 0, SEEK_SET) < 0)
		return;
	while ((n = read(efd, buf + have, sizeof(buf) - 1 - have)) > 0) {
		if (write(STDERR_FILENO, buf + have, (size_t)n) < 0) {
			/* our stderr is gone: the line is still kept */
		}
		have += (size_t)n;
		if (have == sizeof(buf) - 1) {   /* keep the tail only */
			memmove(buf, buf + have / 2, have - have / 2);
			have -= have / 2;
		}
	}
	buf[have] = 0;
	while (have && buf[have - 1] == '\n')
		buf[--have] = 0;
	p = (e = strrchr(buf, '\n')) ? e + 1 : buf;
	if (!strncmp(p, "imgserve: ", 10))
		p += 10;
	have = strlen(p);
	if (have >= len)
		have = len - 1;
	memcpy(why, p, have);
	why[have] = 0;
}

int online_attach(const char *file, unsigned flags, struct online_state *st)
{
	char serve[PATH_MAX], disk[PATH_MAX], why[1024];
	pid_t pid;
	int r, efd;

	/* --wait: for another daemon serving it to stop, too; and for a
	 * daemon gone whose state is still recorded, 2 s at most: an
	 * imgumount between stopping it and removing its run directory (a
	 * state left longer is stale, refused below) */
	for (int64_t start = 0, waited, gone_naps = 0;;) {
		if ((r = online_state_load(file, st)) < 0)
			return r;
		if (!recorded(st) || (!st->alive && ++gone_naps > 40) ||
		    !lock_wait_again(&start, &waited))
			break;
	}
	if ((r = online_refuse_if_used(file, st)) < 0)
		return r;
	r = img_probe(st->image);
	if (r <= 0) {
		r = r == 0 ? -EMEDIUMTYPE : r;
		errmsg_err(file, r, "%s: %s", file, r == -EMEDIUMTYPE ? "not a libimg image" :
			   strerror(-r));
		return r;
	}
	if ((r = make_export_file(st, disk, sizeof(disk))) < 0)
		return r;
	imgserve_path(serve, sizeof(serve));
	/* the daemon's messages until it is ready (then it writes to
	 * RUNDIR/log): relayed to our stderr, the last one into our error */
	efd = memfd_create("imgserve-stderr", MFD_CLOEXEC);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		r = -errno;
		errmsg("fork: %s", strerror(-r));
		unlink(disk);
		rmdir(st->rundir);
		if (efd >= 0)
			close(efd);
		return r;
	}
	if (pid == 0) {
		if (efd >= 0)
			dup2(efd, STDERR_FILENO);
		/* The daemon loads the allowed backing directories itself (same
		 * environment); --allow-backing-path is passed on. */
		const char *av[10];
		char w[64];
		int n = 0;

		av[n++] = "imgserve";
		av[n++] = "--daemon";
		av[n++] = "--quiet";
		if (flags & ONLINE_READ_ONLY)
			av[n++] = "--read-only";
		if (backing_any)
			av[n++] = "--allow-backing-path";
		if (wait_ms >= 0) {   /* the daemon waits for the image's lock */
			if (wait_ms == WAIT_FOREVER)
				snprintf(w, sizeof(w), "--wait");
			else
				snprintf(w, sizeof(w), "--wait=%lld.%03lld",
					 (long long)(wait_ms / 1000), (long long)(wait_ms % 1000));
			av[n++] = w;
		}
		av[n++] = st->image;
		av[n++] = disk;
		av[n] = NULL;
		execvp(serve, (char *const *)av);
		errmsg_err(NULL, -errno, "cannot run %s: %s", serve, strerror(errno));
		_exit(127);
	}
	/* imgserve --daemon returns 0 only once its daemon said it is ready
	 * (else it has failed and said why on our stderr; EXIT_BUSY: the
	 * image is locked by another process). */
	r = wait_child(pid);
	relay_daemon_stderr(efd, why, sizeof(why));
	if (efd >= 0)
		close(efd);
	if (r != 0) {
		/* No daemon of ours runs: take back only our export file (the
		 * rest of the directory may be a racing imgattach's). */
		unlink(disk);
		rmdir(st->rundir);
		/* the daemon said why; its status is ours (libimg(7)), its
		 * message our error's (the cause's errno is not known here:
		 * none is recorded for a broken chain or another failure) */
		if (r == EXIT_CHAIN)
			note_chain_error();
		r = r == 127 || r == EXIT_NOTFOUND ? -ENOENT : r == EXIT_BUSY ? -EBUSY :
		    r == EXIT_CORRUPT ? -EUCLEAN : r == EXIT_NOSPACE ? -ENOSPC : -EIO;
		errmsg_err(file, r == -EIO ? 0 : r, "%s: not served: %s", file,
			   why[0] ? why : "the daemon (imgserve) failed");
		return r;
	}
	/* Ours is the daemon that recorded our export file, whatever else the
	 * run directory holds: never adopt another daemon's export. */
	online_state_reload(st);
	if (!st->alive || strcmp(st->export_path, disk)) {
		errmsg("%s: the daemon started on %s did not record itself in %s (%s recorded): "
		       "not adopting it", file, disk, st->rundir,
		       st->export_path[0] ? st->export_path : "no export");
		/* leave whatever is recorded alone: it is not ours */
		if (!is_mounted(disk))
			unlink(disk);
		return -EIO;
	}
	r = loop_attach(st->export_path, LOOP_ATTACH_DIRECT_IO |
			((flags & ONLINE_READ_ONLY) ? LOOP_ATTACH_READ_ONLY : 0), st->loop,
			sizeof(st->loop));
	if (r < 0) {
		st->loop[0] = 0;
		goto fail;
	}
	r = online_state_set(st->rundir, "loop", st->loop);
	if (r < 0) {
		errmsg_err(st->rundir, r, "%s: cannot record the loop device: %s",
			   st->rundir, strerror(-r));
		goto fail;
	}
	return 0;
fail:
	online_state_reload(st);
	online_teardown(st);
	return r;
}

/* 1 if path is a mount point in this namespace (per /proc/self/mountinfo). */
static int is_mounted(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096], mp[PATH_MAX];
	int found = 0;

	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		/* id parent maj:min root mountpoint ... (octal escapes for spaces) */
		char raw[PATH_MAX], *o = mp;
		const char *p;
		if (sscanf(line, "%*s %*s %*s %*s %4095s", raw) != 1)
			continue;
		for (p = raw; *p && o < mp + sizeof(mp) - 1; p++) {
			if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] && p[3]) {
				*o++ = (char)(((p[1] - '0') << 6) | ((p[2] - '0') << 3) | (p[3] - '0'));
				p += 3;
			} else {
				*o++ = *p;
			}
		}
		*o = 0;
		found = !strcmp(mp, path);
	}
	fclose(f);
	return found;
}

/* 1 when pid has ended: gone, or a zombie its new parent has not reaped. */
static int pid_ended(pid_t pid)
{
	char buf[256], *p;

	if (kill(pid, 0) < 0 && errno == ESRCH)
		return 1;
	if (read_proc(pid, "stat", buf, sizeof(buf)) <= 0)
		return 1;
	p = strrchr(buf, ')');   /* "pid (comm) S ..." */
	return p && (p[2] == 'Z' || p[2] == 'X');
}

/* Waits up to ms milliseconds for pid to end. */
static int wait_gone(pid_t pid, int ms)
{
	for (; ms > 0; ms -= 10) {
		if (pid_ended(pid))
			return 1;
		usleep(10 * 1000);
	}
	return 0;
}

int online_teardown(struct online_state *st)
{
	char reply[1024];
	int r;

	if (st->mountpoint[0]) {
		/* A daemon that died in the middle of a snapshot may have left
		 * the filesystem frozen: thaw it first (EINVAL: it was not). */
		if (is_mounted(st->mountpoint)) {
			int fd = open(st->mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (fd >= 0) {
				(void)ioctl(fd, FITHAW, 0);
				close(fd);
			}
		}
		if (is_mounted(st->mountpoint) && umount(st->mountpoint) < 0) {
			r = -errno;
			errmsg_err(st->mountpoint, r, "%s: cannot unmount: %s",
				   st->mountpoint, strerror(-r));
			return r;
		}
		online_state_set(st->rundir, "mountpoint", NULL);
		st->mountpoint[0] = 0;
	}
	if (st->loop[0]) {
		r = loop_detach(st->loop, st->export_path[0] ? st->export_path : NULL);
		if (r < 0 && r != -ENXIO)
			return r;
		online_state_set(st->rundir, "loop", NULL);
		st->loop[0] = 0;
	}
	if (st->alive) {
		r = online_request(st, "stop", reply, sizeof(reply));
		if (r < 0 && r != -ECONNREFUSED && r != -ENOENT) {
			errmsg("%s: %s", st->image, reply);
			return r;
		}
		/* it flushes and closes the image, then exits */
		if (!wait_gone(st->pid, 60000)) {
			errmsg("%s: imgserve (pid %ld) did not stop; leaving it", st->image,
			       (long)st->pid);
			return -ETIMEDOUT;
		}
		st->alive = 0;
	}
	/* A daemon that died (SIGKILL) leaves its FUSE mount behind. */
	if (st->export_path[0] && is_mounted(st->export_path) &&
	    umount2(st->export_path, MNT_DETACH) < 0) {
		r = -errno;
		errmsg_err(st->export_path, r, "%s: cannot unmount: %s",
			   st->export_path, strerror(-r));
		return r;
	}
	remove_rundir(st);
	st->pid = 0;
	st->export_path[0] = 0;
	return 0;
}

int online_teardown_report(struct online_state *st, const char *done)
{
	char mnt[sizeof(st->mountpoint)], dev[sizeof(st->loop)];
	pid_t pid;

	/* what is torn down, for -j (online_teardown may clear st) */
	snprintf(mnt, sizeof(mnt), "%s", st->mountpoint);
	snprintf(dev, sizeof(dev), "%s", st->loop);
	pid = st->pid;
	if (online_teardown(st) < 0)
		return EXIT_ERROR;
	if (json) {
		struct json_out j;
		json_start(&j, stdout);
		json_doc_begin(&j);
		json_string(&j, "filename", st->image);
		json_string(&j, "mountpoint", mnt[0] ? mnt : NULL);
		json_string(&j, "device", dev[0] ? dev : NULL);
		if (pid)
			json_u64(&j, "pid", (uint64_t)pid);
		else
			json_null(&j, "pid");
		json_object_end(&j);
		json_finish(&j);
	} else if (!quiet) {
		printf("%s: %s\n", st->image, done);
	}
	return EXIT_OK;
}

int online_refresh_size(const struct online_state *st)
{
	struct stat sb;
	int r;

	/* The daemon invalidated the export's attributes: a stat fetches the
	 * new size into the kernel's inode, which is what the loop driver
	 * reads. */
	if (st->export_path[0] && stat(st->export_path, &sb) < 0) {
		r = -errno;
		errmsg_err(st->export_path, r, "%s: %s", st->export_path, strerror(-r));
		return r;
	}
	if (st->loop[0]) {
		r = loop_set_capacity(st->loop);
		if (r < 0) {
			errmsg_err(st->loop, r, "%s: cannot update the capacity: %s",
				   st->loop, strerror(-r));
			return r;
		}
	}
	return 0;
}

int online_virtual_size(const char *file, const struct online_state *st, uint64_t *size)
{
	char reply[4096];
	int r = online_request(st, "status", reply, sizeof(reply));

	if (r == 0 && online_json_u64(reply, "virtual_size", size) < 0) {
		snprintf(reply, sizeof(reply), "the daemon's status has no virtual_size");
		r = -EPROTO;
	}
	if (r < 0)
		errmsg("%s: %s", file, reply);
	return r;
}

int online_set_size(const char *file, const struct online_state *st, uint64_t size,
		    int discard_data)
{
	char cmd[96], reply[4096];
	uint64_t cur;
	int r = online_virtual_size(file, st, &cur);

	if (r < 0)
		return r;
	snprintf(cmd, sizeof(cmd), "%s %llu%s", size >= cur ? "grow" : "shrink",
		 (unsigned long long)size, discard_data ? " discard-data" : "");
	r = online_request(st, cmd, reply, sizeof(reply));
	if (r < 0) {
		errmsg("%s: %s", file, reply);
		return r;
	}
	return online_refresh_size(st);
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

/* ---- the filesystem of an image nobody serves ---------------------------- */

struct fs_offline {
	struct online_state os;
	char dir[64];               /* the private mount point, "" when none */
};

int fs_offline_possible(const char **why)
{
	*why = NULL;
	if (geteuid() != 0)
		*why = "root";
	else if (access("/dev/fuse", R_OK | W_OK) < 0)
		*why = "/dev/fuse";
	else if (access("/dev/loop-control", R_OK | W_OK) < 0)
		*why = "loop devices (/dev/loop-control)";
	return *why == NULL;
}

uint64_t fs_min_with_margin(uint64_t min, uint64_t fs_size)
{
	const uint64_t mib = 1ull << 20;
	uint64_t margin = min / 20 > 16 * mib ? min / 20 : 16 * mib, t;

	if (__builtin_add_overflow(min, margin + mib - 1, &t))
		return fs_size;
	t -= t % mib;
	return t < fs_size ? t : fs_size;
}

static int fs_attach(const char *file, unsigned flags, struct fs_offline *s)
{
	memset(s, 0, sizeof(*s));
	return online_attach(file, flags, &s->os) < 0 ? -EIO : 0;
}

/* Mounts the attached filesystem on a fresh private directory. */
static int fs_mount(const char *file, struct fs_offline *s, const char *type,
		    unsigned long mflags, const char *data)
{
	int r;

	snprintf(s->dir, sizeof(s->dir), "/tmp/libimg-fs-XXXXXX");
	if (!mkdtemp(s->dir)) {
		r = -errno;
		errmsg_err(file, r, "%s: cannot create a mount point: %s", file, strerror(-r));
		s->dir[0] = 0;
		return r;
	}
	if (mount(s->os.loop, s->dir, type, mflags, data) < 0) {
		r = -errno;
		errmsg_err(file, r, "%s: cannot mount the %s filesystem (%s on %s): %s", file, type,
			   s->os.loop, s->dir, strerror(-r));
		rmdir(s->dir);
		s->dir[0] = 0;
		return r;
	}
	return 0;
}

static int fs_umount(struct fs_offline *s)
{
	int r = 0, i;

	if (!s->dir[0])
		return 0;
	/* a program that just exited may still pin it for a moment */
	for (i = 0; umount(s->dir) < 0; i++) {
		if (errno != EBUSY || i == 50) {
			r = -errno;
			errmsg_err(s->dir, r, "%s: cannot unmount: %s", s->dir, strerror(-r));
			return r;
		}
		usleep(100 * 1000);
	}
	rmdir(s->dir);
	s->dir[0] = 0;
	return r;
}

/* Unmounts, detaches, stops the daemon.  0 or -errno (message printed). */
static int fs_end(struct fs_offline *s)
{
	int r = fs_umount(s);

	if (online_teardown(&s->os) < 0 && !r)
		r = -EIO;
	return r;
}

/* "Estimated minimum size of the filesystem: N" (blocks) of resize2fs -P. */
static int ext_min_size(const char *file, const char *dev, uint64_t block, uint64_t *min)
{
	char out[4096], *p;
	char *av[] = { "resize2fs", "-P", (char *)dev, NULL };
	unsigned long long n;

	if (run_capture(av, out, sizeof(out)) != 0)
		return -EIO;
	p = strstr(out, "minimum size of the filesystem:");
	if (!p || sscanf(p + strlen("minimum size of the filesystem:"), "%llu", &n) != 1 ||
	    __builtin_mul_overflow((uint64_t)n, block, min)) {
		errmsg("%s: cannot read the minimum size from resize2fs -P: %s", file, out);
		return -EPROTO;
	}
	return 0;
}

/* "N bytes (...)" of btrfs inspect-internal min-dev-size. */
static int btrfs_min_size(const char *file, const char *dir, uint64_t *min)
{
	char out[4096];
	char *av[] = { "btrfs", "inspect-internal", "min-dev-size", (char *)dir, NULL };
	unsigned long long n;

	if (run_capture(av, out, sizeof(out)) != 0)
		return -EIO;
	if (sscanf(out, "%llu bytes", &n) != 1) {
		errmsg("%s: cannot read the minimum size from btrfs inspect-internal "
		       "min-dev-size: %s", file, out);
		return -EPROTO;
	}
	/* the kernel refuses to resize a btrfs device below 256 MiB */
	*min = n > (256ull << 20) ? n : 256ull << 20;
	return 0;
}

int fs_offline_grow(const char *file, const char *type)
{
	struct fs_offline s;
	int r;

	if (fs_attach(file, 0, &s) < 0)
		return -EIO;
	if (fs_is_ext(type)) {
		/* resize2fs wants a check since the last mount */
		char *fsck[] = { "e2fsck", "-f", "-p", s.os.loop, NULL };
		char *av[] = { "resize2fs", s.os.loop, NULL };
		r = run_quiet(fsck);
		if (r != 0 && r != 1) {     /* 1: errors corrected */
			errmsg("%s: e2fsck -f -p could not check the %s filesystem", file, type);
			r = -EUCLEAN;
		} else {
			r = run_quiet(av) ? -EIO : 0;
		}
	} else if (!strcmp(type, "xfs") || !strcmp(type, "btrfs")) {
		r = fs_mount(file, &s, type, 0, NULL);
		if (r == 0 && !strcmp(type, "xfs")) {
			char *av[] = { "xfs_growfs", s.dir, NULL };
			r = run_quiet(av) ? -EIO : 0;
		} else if (r == 0) {
			char *av[] = { "btrfs", "filesystem", "resize", "max", s.dir, NULL };
			r = run_quiet(av) ? -EIO : 0;
		}
	} else {
		r = -EOPNOTSUPP;
	}
	if (fs_end(&s) < 0 && !r)
		r = -EIO;
	return r;
}

int fs_offline_inspect(const char *file, const struct img_fs_info *fi,
		       struct fs_offline_facts *facts)
{
	struct fs_offline s;
	char path[PATH_MAX];
	struct stat sb;
	int r;

	memset(facts, 0, sizeof(*facts));
	if (fs_attach(file, ONLINE_READ_ONLY, &s) < 0)
		return -EIO;
	if (fs_is_ext(fi->type)) {
		char *fsck[] = { "e2fsck", "-f", "-n", s.os.loop, NULL };
		r = run_quiet(fsck);
		if (r != 0) {
			errmsg("%s: e2fsck -f -n finds the %s filesystem in the image damaged "
			       "(exit status %d): it needs checking", file, fi->type, r);
			r = -EUCLEAN;
			goto out;
		}
		r = ext_min_size(file, s.os.loop, fi->block_size, &facts->min_size);
		if (r < 0)
			goto out;
		/* read-only and without journal replay: nothing is written */
		r = fs_mount(file, &s, fi->type, MS_RDONLY, "noload");
		if (r < 0)
			goto out;
		online_path(s.dir, ONLINE_BALLOON, path, sizeof(path));
		if (lstat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
			facts->has_balloon = 1;
			facts->balloon = (uint64_t)sb.st_blocks * 512;
		}
	} else if (!strcmp(fi->type, "btrfs")) {
		r = fs_mount(file, &s, fi->type, MS_RDONLY, NULL);
		if (r < 0)
			goto out;
		r = btrfs_min_size(file, s.dir, &facts->min_size);
	} else {
		r = -EOPNOTSUPP;
	}
out:
	if (fs_end(&s) < 0 && !r)
		r = -EIO;
	return r;
}

int fs_offline_shrink(const char *file, const struct img_fs_info *fi, unsigned flags,
		      uint64_t *size)
{
	struct fs_offline s;
	char arg[32], path[PATH_MAX];
	uint64_t min;
	int r;

	if (fs_attach(file, 0, &s) < 0)
		return -EIO;
	if (fs_is_ext(fi->type)) {
		char *fsck[] = { "e2fsck", "-f", "-p", s.os.loop, NULL };
		char *rs[] = { "resize2fs", s.os.loop, arg, NULL };
		struct stat sb;

		if (flags & FS_SHRINK_BALLOON) {
			r = fs_mount(file, &s, fi->type, 0, NULL);
			if (r < 0)
				goto out;
			online_path(s.dir, ONLINE_BALLOON, path, sizeof(path));
			if (lstat(path, &sb) == 0 && S_ISREG(sb.st_mode) && unlink(path) < 0) {
				r = -errno;
				errmsg_err(file, r, "%s: cannot remove the balloon: %s",
					   file, strerror(-r));
				goto out;
			}
			r = fs_umount(&s);
			if (r < 0)
				goto out;
		}
		r = run_quiet(fsck);
		if (r != 0 && r != 1) {     /* 1: errors corrected */
			errmsg("%s: e2fsck -f -p could not check the %s filesystem; it was not "
			       "shrunk", file, fi->type);
			r = -EUCLEAN;
			goto out;
		}
		if (flags & FS_SHRINK_TO_MIN) {
			r = ext_min_size(file, s.os.loop, fi->block_size, &min);
			if (r < 0)
				goto out;
			*size = fs_min_with_margin(min, fi->size);
		}
		snprintf(arg, sizeof(arg), "%lluK", (unsigned long long)(*size / 1024));
		if (run_quiet(rs) != 0) {
			errmsg("%s: resize2fs could not shrink the %s filesystem to %s", file,
			       fi->type, arg);
			r = -EIO;
			goto out;
		}
		r = 0;
	} else if (!strcmp(fi->type, "btrfs")) {
		char *rs[] = { "btrfs", "filesystem", "resize", arg, s.dir, NULL };
		char *trim[] = { "fstrim", s.dir, NULL };

		r = fs_mount(file, &s, fi->type, 0, NULL);
		if (r < 0)
			goto out;
		if (flags & FS_SHRINK_TO_MIN) {
			r = btrfs_min_size(file, s.dir, &min);
			if (r < 0)
				goto out;
			*size = fs_min_with_margin(min, fi->size);
		}
		snprintf(arg, sizeof(arg), "%llu", (unsigned long long)*size);
		if (run_quiet(rs) != 0) {
			errmsg("%s: the btrfs filesystem did not shrink to %s bytes", file, arg);
			r = -EIO;
			goto out;
		}
		/* its free space goes back to the host: the image packs tighter */
		run_silent(trim);
		r = 0;
	} else {
		r = -EOPNOTSUPP;
	}
out:
	if (fs_end(&s) < 0 && !r)
		r = -EIO;
	return r;
}

/* The "log_root" of btrfs inspect-internal dump-super: 0 when the
 * filesystem has no log tree to replay. */
static int btrfs_log_root(const char *file, const char *dev, uint64_t *root)
{
	char out[16384], *p;
	char *av[] = { "btrfs", "inspect-internal", "dump-super", (char *)dev, NULL };
	unsigned long long n;

	if (run_capture(av, out, sizeof(out)) != 0)
		return -EIO;
	for (p = out; (p = strstr(p, "log_root")); p++)
		if ((p == out || p[-1] == '\n') && (p[8] == ' ' || p[8] == '\t'))
			break;
	if (!p || sscanf(p + 8, "%llu", &n) != 1) {
		errmsg("%s: no log_root in btrfs inspect-internal dump-super", file);
		return -EPROTO;
	}
	*root = n;
	return 0;
}

int fs_offline_set_identity(const char *file, const char *type, const char *uuid,
			    const char *label)
{
	struct fs_offline s;
	int r = 0;

	if (strcmp(type, "xfs") && strcmp(type, "btrfs"))
		return -EOPNOTSUPP;
	if (fs_attach(file, 0, &s) < 0)
		return -EIO;
	if (!strcmp(type, "xfs")) {
		char *av[12], ucmd[64], lcmd[300], out[4096];
		int n = 0;

		/* xfs_db, not xfs_admin: xfs_admin passes the label through
		 * eval (a shell), xfs_db splits its commands at white space
		 * (fs_label_valid refuses it) */
		if (label && (!fs_label_valid(type, label) ||
			      snprintf(lcmd, sizeof(lcmd), "label %s", label[0] ? label : "--") >=
			      (int)sizeof(lcmd))) {
			errmsg("%s: invalid xfs label", file);
			r = -EINVAL;
			goto out;
		}
		if (uuid)
			snprintf(ucmd, sizeof(ucmd), "uuid %s", uuid);
		av[n++] = "xfs_db";
		av[n++] = "-x";
		av[n++] = "-p";
		av[n++] = "xfs_admin";
		if (uuid) {
			av[n++] = "-c";
			av[n++] = ucmd;
		}
		if (label) {
			av[n++] = "-c";
			av[n++] = lcmd;
		}
		av[n++] = s.os.loop;
		av[n] = NULL;
		/* it exits 0 on a refusal too: the caller reads the result back.
		 * It refuses a dirty log (a snapshot of a mounted filesystem):
		 * then, and only then, a mount replays it, in the clone
		 * (nouuid: the base's UUID may be mounted elsewhere), and
		 * xfs_db runs again.  The base is untrusted input: its
		 * filesystem is not given to the kernel when xfs_db can do
		 * without. */
		r = run_capture(av, out, sizeof(out));
		if (r == 0 && strstr(out, "to replay the log")) {
			r = fs_mount(file, &s, type, MS_NOSUID | MS_NODEV | MS_NOEXEC, "nouuid");
			if (r == 0)
				r = fs_umount(&s);
			if (r < 0)
				goto out;
			r = run_quiet(av);
		}
		if (r != 0) {
			errmsg("%s: xfs_db could not set the xfs filesystem's %s", file,
			       uuid && label ? "UUID and label" : uuid ? "UUID" : "label");
			r = -EIO;
		}
	} else {
		char *tune[] = { "btrfstune", "-f", "-M", (char *)uuid, s.os.loop, NULL };
		char *lab[] = { "btrfs", "filesystem", "label", "--", s.os.loop, (char *)label, NULL };
		uint64_t log = 0;

		/* btrfstune on a filesystem with a log tree (a copy of a mounted
		 * one after fsync) leaves it unmountable: a mount replays it
		 * first, in the clone */
		if ((r = btrfs_log_root(file, s.os.loop, &log)) < 0)
			goto out;
		if (log) {
			r = fs_mount(file, &s, type, MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
			if (r == 0)
				r = fs_umount(&s);
			if (r == 0)
				r = btrfs_log_root(file, s.os.loop, &log);
			if (r < 0)
				goto out;
			if (log) {
				errmsg("%s: mounting the btrfs filesystem did not replay its log tree "
				       "(is one with the same fsid mounted?)", file);
				r = -EBUSY;
				goto out;
			}
		}
		if (uuid && run_quiet(tune) != 0) {
			errmsg("%s: btrfstune -M could not set the btrfs filesystem's UUID", file);
			r = -EIO;
		}
		if (!r && label && run_quiet(lab) != 0) {
			errmsg("%s: btrfs filesystem label could not set the label", file);
			r = -EIO;
		}
	}
out:
	if (fs_end(&s) < 0 && !r)
		r = -EIO;
	return r;
}

int fs_offline_replay_journal(const char *file, const char *type)
{
	struct fs_offline s;
	char *av[] = { "e2fsck", "-E", "journal_only", "-p", NULL, NULL };
	int r;

	if (!fs_is_ext(type))
		return -EOPNOTSUPP;
	if (fs_attach(file, 0, &s) < 0)
		return -EIO;
	av[4] = s.os.loop;
	r = run_quiet(av);
	if (r != 0 && r != 1) {     /* 1: the journal was replayed */
		errmsg("%s: e2fsck -E journal_only could not replay the %s journal", file, type);
		r = -EUCLEAN;
	} else {
		r = 0;
	}
	if (fs_end(&s) < 0 && !r)
		r = -EIO;
	return r;
}
