/* SPDX-License-Identifier: MIT */
/* The control protocol of imgserve's socket; see control.h. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control.h"

int online_ctl_path(const char *rundir, char *buf, size_t len)
{
	struct sockaddr_un sa;
	int n = snprintf(buf, len, "%s/%s", rundir, CTL_SOCKET);

	return n < 0 || (size_t)n >= len || (size_t)n >= sizeof(sa.sun_path) ? -ENAMETOOLONG : 0;
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

/* The reply line in reply (len bytes), the answer to cmd: "ok" leaves its
 * JSON object there and returns 0, "error ERRNO message" its message
 * (escaped for the terminal) and -ERRNO; anything else is -EPROTO. */
static int reply_line(char *reply, size_t len, const char *cmd)
{
	size_t off = strlen(reply), ok_len = strlen(CTL_OK), err_len = strlen(CTL_ERROR);
	int r = 0;

	if (off && reply[off - 1] == '\n')
		reply[--off] = 0;
	if (!strncmp(reply, CTL_OK, ok_len) && (reply[ok_len] == 0 || reply[ok_len] == ' ')) {
		size_t skip = ok_len + (reply[ok_len] ? 1 : 0);
		memmove(reply, reply + skip, strlen(reply + skip) + 1);
	} else if (!strncmp(reply, CTL_ERROR, err_len) && reply[err_len] == ' ') {
		char *end;
		long e = strtol(reply + err_len + 1, &end, 10);
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
	return r;
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
	if (online_ctl_path(st->rundir, path, sizeof(path)) < 0) {
		snprintf(reply, len, "control socket path too long: %s/%s", st->rundir, CTL_SOCKET);
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
	r = reply_line(reply, len, cmd);
out:
	if (fd >= 0)
		close(fd);
	return r;
}

int online_subscribe(const struct online_state *st, char *err, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char path[PATH_MAX], line[256];
	size_t off = 0;
	int fd, r;

	if (online_ctl_path(st->rundir, path, sizeof(path)) < 0) {
		snprintf(err, len, "control socket path too long: %s/%s", st->rundir, CTL_SOCKET);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    write(fd, CTL_EVENTS "\n", strlen(CTL_EVENTS) + 1) != (ssize_t)strlen(CTL_EVENTS) + 1) {
		r = -errno;
		snprintf(err, len, "cannot reach the daemon at %s: %s", path, strerror(-r));
		goto fail;
	}
	/* the "ok" line, read a byte at a time: the events follow it */
	while (off + 1 < sizeof(line)) {
		ssize_t n = read(fd, line + off, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (line[off++] == '\n')
			break;
	}
	line[off] = 0;
	if ((r = reply_line(line, sizeof(line), CTL_EVENTS)) < 0) {
		snprintf(err, len, "%s", line);
		goto fail;
	}
	return fd;
fail:
	if (fd >= 0)
		close(fd);
	return r;
}

const struct online_command online_commands[] = {
	{ CTL_STATUS,   "",                           0, 0, 0 },
	{ CTL_GROW,     "SIZE",                       1, 1, ONLINE_CMD_WRITES | ONLINE_CMD_RESIZE },
	{ CTL_SHRINK,   "SIZE [" CTL_DISCARD_DATA "]", 1, 2, ONLINE_CMD_WRITES | ONLINE_CMD_RESIZE },
	{ CTL_COMPACT,  "[" CTL_NO_ZERO_DETECT "]",    0, 1, ONLINE_CMD_WRITES },
	{ CTL_SNAPSHOT, "[NAME]",                     0, 1, ONLINE_CMD_WRITES },
	{ CTL_MERGE,    "[BASE]",                     0, 1, ONLINE_CMD_WRITES },
	{ CTL_QOS,      "[SETTINGS]",                 0, 1, 0 },
	{ CTL_EVENTS,   "",                           0, 0, ONLINE_CMD_STREAM },
	{ CTL_LOW_WATER, "BYTES|PCT%",                1, 1, 0 },
	{ CTL_RESUME,   "",                           0, 0, 0 },
	{ CTL_ON_NOSPACE, "pause|error|pause:SECONDS", 1, 1, 0 },
	{ CTL_STOP,     "",                           0, 0, ONLINE_CMD_STOP },
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

/* ---- the server side ------------------------------------------------------ */

int online_ctl_listen(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		errmsg("%s: control socket path too long (set LIBIMG_RUNDIR to a shorter "
		       "directory)", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	unlink(path);    /* a dead daemon's; we hold the image's lock */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(path, 0600) < 0 || listen(fd, 8) < 0) {
		r = -errno;
		errmsg_err(path, r, "%s: cannot listen: %s", path, strerror(-r));
		if (fd >= 0)
			close(fd);
		return r;
	}
	return fd;
}

void online_ctl_read(int c, char *line, size_t len)
{
	struct timeval tv = { .tv_sec = CTL_READ_TIMEOUT_S };
	size_t off = 0;
	ssize_t n;
	char *nl;

	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (off < len - 1 && (n = read(c, line + off, len - 1 - off)) > 0) {
		off += (size_t)n;
		if (memchr(line, '\n', off))
			break;
	}
	line[off] = 0;
	if ((nl = strchr(line, '\n')))
		*nl = 0;
	if ((nl = strchr(line, '\r')))
		*nl = 0;
}

void online_ctl_write(int c, const char *reply)
{
	size_t rl = strlen(reply);

	if (rl && reply[rl - 1] != '\n') {
		if (write(c, reply, rl) < 0 || write(c, "\n", 1) < 0) {
			/* the client went away */
		}
	} else if (write(c, reply, rl) < 0) {
		/* the client went away */
	}
}

int online_ok_begin(struct online_ok *r)
{
	memset(r, 0, sizeof(*r));
	r->f = open_memstream(&r->text, &r->len);
	if (!r->f)
		return -ENOMEM;
	fputs(CTL_OK " ", r->f);
	json_start(&r->j, r->f);
	json_object_begin(&r->j, NULL);
	return 0;
}

/* The protocol is one line: the pretty-printed object loses its line
 * breaks and indentation (strings hold no raw newlines: they are escaped). */
char *online_ok_end(struct online_ok *r)
{
	char *in, *out;

	json_object_end(&r->j);
	json_finish(&r->j);
	fclose(r->f);
	for (in = out = r->text; *in; in++) {
		if (*in == '\n') {
			while (in[1] == ' ')
				in++;
			continue;
		}
		*out++ = *in;
	}
	*out++ = '\n';
	*out = 0;
	return r->text;
}

char *online_ok_empty(void)
{
	return strdup(CTL_OK " {}\n");
}

char *online_error_reply(int err, const char *fmt, ...)
{
	char *msg = NULL, *line = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	if (asprintf(&line, "%s %d %s", CTL_ERROR, err, msg) < 0)
		line = NULL;
	free(msg);
	return line;
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
