/* SPDX-License-Identifier: MIT */
/*
 * imgctl: list the images served, attached or mounted on this host and
 * talk to their imgserve daemons, without an external client.
 *
 * The list comes from the run directories (online/rundir.h); each live
 * daemon is asked "status" over its control socket.  A run directory
 * whose daemon is gone but which still records something (a loop device,
 * a mount point, an export) is listed with the state "stale": imgumount
 * FILE cleans it up.  One whose daemon does not answer in time (the
 * control socket runs one command at a time: a compact or merge takes
 * its time) is "busy".
 *
 * Commands are the control protocol's (online_commands): "send" passes
 * any line through, the named subcommands check their arguments first.
 * Whatever form: stop is refused while a loop device or mount uses the
 * export (imgumount or imgdetach stop the daemon after them), shrink
 * while a loop device is attached (shrinkimg shrinks the filesystem
 * first), and after grow or shrink the loop device follows the new size.
 *
 * pool [DIR...] reads the images of directories (the library, read-only,
 * without lock nor backing chain; a served image's sizes from its daemon)
 * and the host's free space: no daemon is needed for it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common.h"
#include "common_fs.h"
#include "online/control.h"
#include "online/loop.h"
#include "online/qos.h"
#include "online/mount.h"

#define DEFAULT_WAIT_MS 5000       /* status: a busy daemon */
#define STOP_WAIT_MS    60000      /* stop: the daemon flushes and exits */
#define REPLY_MAX       (4 * PATH_MAX + 4096)
#define LINE_MAX_LEN    (PATH_MAX + 64)   /* the daemon's line buffer */

static const struct option longopts[] = {
	{ "json",    no_argument,       NULL, 'j' },
	{ "wait",    optional_argument, NULL, 'w' },
	{ "quiet",   no_argument,       NULL, 'q' },
	{ "all",     no_argument,       NULL, 'a' },
	{ "help",    no_argument,       NULL, 'h' },
	{ "version", no_argument,       NULL, 'V' },
	{ "strict",  no_argument,       NULL, 'S' },
	QOS_OPTIONS,
	{ NULL, 0, NULL, 0 }
};

/* qos: the settings the options named, comma-separated ("" none) */
static char qos_settings[CTL_LINE_MAX / 2];

static int strict;                        /* pool --strict */
static int answer_ms = DEFAULT_WAIT_MS;    /* -1: no limit */
static int wait_given;                    /* --wait was given */
static int all_images;                    /* events --all */

static void usage(void)
{
	printf("Usage: %s [OPTIONS] list\n"
	       "       %s [OPTIONS] status IMAGE\n"
	       "       %s [OPTIONS] send IMAGE COMMAND [ARGS...]\n"
	       "       %s [OPTIONS] grow|shrink IMAGE SIZE [discard-data]\n"
	       "       %s [OPTIONS] compact|snapshot|merge|stop IMAGE [ARG]\n"
	       "       %s [OPTIONS] resume|on-nospace IMAGE [POLICY]\n"
	       "       %s [OPTIONS] qos IMAGE [--bps-write=B ...|KEY=VALUE,...]\n"
	       "       %s [OPTIONS] low-water IMAGE BYTES|PCT%%\n"
	       "       %s [OPTIONS] events [IMAGE|--all]\n"
	       "       %s [OPTIONS] fsck IMAGE [yes]\n"
	       "       %s [OPTIONS] pool [DIR...]\n"
	       "List the images served, attached or mounted here and send commands to their\n"
	       "daemons (IMAGE: the image file, its loop device or mount point; COMMAND: one\n"
	       "of imgserve(1), e.g. compact no-zero-detect); pool: the host space of DIRs.\n"
	       "  -j, --json            print JSON (see imgctl(1))\n"
	       "  -w, --wait[=SECONDS]  list, status: wait for a busy daemon (default 5 s)\n"
	       "  -a, --all  events: of every daemon;  --strict  pool: exit 8 without room\n"
	       QOS_HELP
	       "  -q, --quiet           print nothing on success (-h, --help; -V, --version)\n"
	       "Exit status: 0 success, 1 error, 2 usage, 3 fsck left errors, 5 IMAGE does\n"
	       "not exist, 6 not served, 7 the loop device did not follow (fsck: not mounted\n"
	       "again), 8 pool --strict: no room for the growth, 75 busy.  See imgctl(1).\n",
	       progname, progname, progname, progname, progname, progname, progname, progname,
	       progname, progname, progname);
}

/* ---- failures --------------------------------------------------------- */

/* The message on stderr, recorded (with err, an errno, 0 none, and the
 * pid holding the image when it is busy) for the JSON error object that
 * tool_exit prints with --json (libimg(7)).  Returns status. */
__attribute__((format(printf, 5, 6)))
static int fail(int status, int err, const char *file, pid_t holder, const char *fmt, ...)
{
	char msg[2 * PATH_MAX + 1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	errmsg_err(file, -err, "%s", msg);
	if (holder > 0)
		note_holder(holder);
	return status;
}

/* ---- what the run directories record ------------------------------------ */

struct entry {
	struct online_state st;
	const char *state;          /* serving failed busy unreachable stale */
	int err;                    /* the status request's -errno, 0 */
	char msg[4096];             /* why there is no status, "" */
	int have_status;
	struct online_reply status;
};

/* Asks a live daemon "status" and sets e->state. */
static void probe(struct entry *e)
{
	char reply[REPLY_MAX];
	const struct online_kv *open_kv;
	int r;

	e->state = "stale";
	e->err = 0;
	e->msg[0] = 0;
	if (!e->st.alive) {
		if (e->st.pid > 0)
			snprintf(e->msg, sizeof(e->msg), "imgserve (pid %ld) is not running: "
				 "imgumount cleans up", (long)e->st.pid);
		else
			snprintf(e->msg, sizeof(e->msg), "no imgserve runs: imgumount cleans up");
		return;
	}
	r = online_request_timeout(&e->st, CTL_STATUS, reply, sizeof(reply), answer_ms);
	if (r == 0 && (r = online_reply_parse(reply, &e->status)) < 0)
		snprintf(reply, sizeof(reply), "the daemon's answer to status is not a JSON "
			 "object");
	if (r < 0) {
		e->err = r;
		e->state = r == -ETIMEDOUT ? "busy" : "unreachable";
		snprintf(e->msg, sizeof(e->msg), "%.4000s", reply);
		return;
	}
	e->have_status = 1;
	open_kv = online_reply_get(&e->status, CTL_KEY_OPEN);
	e->state = open_kv && open_kv->type == ONLINE_BOOL && !open_kv->num ? "failed" : "serving";
}

static void entry_free(struct entry *e)
{
	online_reply_free(&e->status);
}

/* What IMAGE names: a loop device, a mount point or an image file.
 * 0, or the exit status (message printed). */
static int resolve(const char *arg, struct entry *e)
{
	struct stat sb;
	int r;

	memset(e, 0, sizeof(*e));
	if (stat(arg, &sb) < 0) {
		r = errno;
		return fail(r == ENOENT || r == ENOTDIR ? EXIT_NOTFOUND : EXIT_ERROR, r, arg, 0,
			    "%s: %s", arg, strerror(r));
	}
	if (S_ISBLK(sb.st_mode) || S_ISDIR(sb.st_mode)) {
		int dev = S_ISBLK(sb.st_mode);
		if (!online_state_find(dev ? arg : NULL, dev ? NULL : arg, &e->st))
			return fail(EXIT_NOTMOUNTED, ENXIO, arg, 0, "%s: %s (nothing recorded under %s)",
				    arg, dev ? "not the loop device of a served libimg image" :
				    "not a mount point of a served libimg image", online_rundir_base());
		return 0;
	}
	r = online_state_load(arg, &e->st);
	if (r < 0)
		return fail(EXIT_ERROR, -r, arg, 0, "%s: %s", arg, strerror(-r));
	if (r == 0 && access(e->st.rundir, R_OK | X_OK) < 0 && errno == EACCES)
		return fail(EXIT_ERROR, EACCES, e->st.rundir, 0, "%s: %s (the run directories are "
			    "root's)", e->st.rundir, strerror(EACCES));
	if (r == 0)
		return fail(EXIT_NOTMOUNTED, ENXIO, arg, 0, "%s: not served, attached or mounted "
			    "(nothing recorded in %s)", arg, e->st.rundir);
	return 0;
}

/* ---- output ------------------------------------------------------------- */

static const char *or_null(const char *s)
{
	return s && *s ? s : NULL;
}

static void json_reply(struct json_out *j, const char *key, const struct online_reply *r)
{
	json_object_begin(j, key);
	for (size_t i = 0; i < r->n; i++) {
		const struct online_kv *kv = &r->kv[i];
		switch (kv->type) {
		case ONLINE_STR:  json_string(j, kv->key, kv->str); break;
		case ONLINE_NUM:  json_u64(j, kv->key, kv->num); break;
		case ONLINE_BOOL: json_bool(j, kv->key, (int)kv->num); break;
		case ONLINE_NULL: json_null(j, kv->key); break;
		}
	}
	json_object_end(j);
}

/* The keys of one image (inside an open object). */
static void json_entry(struct json_out *j, const struct entry *e)
{
	char ctl[PATH_MAX];

	json_string(j, "filename", or_null(e->st.image));
	if (e->st.pid > 0)
		json_u64(j, "pid", (uint64_t)e->st.pid);
	else
		json_null(j, "pid");
	json_bool(j, "running", e->st.alive);
	json_string(j, "state", e->state);
	json_string(j, "export", or_null(e->st.export_path));
	json_string(j, "device", or_null(e->st.loop));
	json_string(j, "mountpoint", or_null(e->st.mountpoint));
	json_string(j, "rundir", e->st.rundir);
	json_string(j, "control_socket", e->st.alive &&
		    online_ctl_path(e->st.rundir, ctl, sizeof(ctl)) == 0 ? ctl : NULL);
	json_string(j, "message", or_null(e->msg));
	if (e->have_status)
		json_reply(j, "status", &e->status);
	else
		json_null(j, "status");
}

/* s escaped for the terminal, "-" when empty. */
static const char *show(const char *s, char *buf, size_t len)
{
	return s && *s ? text_escape(s, buf, len) : "-";
}

static void print_value(const struct online_kv *kv)
{
	char buf[TEXT_ESCAPE_LEN(PATH_MAX)];

	switch (kv->type) {
	case ONLINE_STR:  printf("%s\n", text_escape(kv->str, buf, sizeof(buf))); break;
	case ONLINE_NUM:  printf("%llu\n", (unsigned long long)kv->num); break;
	case ONLINE_BOOL: printf("%s\n", kv->num ? "true" : "false"); break;
	case ONLINE_NULL: printf("null\n"); break;
	}
}

static void print_kv(const char *key, const char *val)
{
	char buf[TEXT_ESCAPE_LEN(PATH_MAX)];

	printf("%-21s %s\n", key, show(val, buf, sizeof(buf)));
}

static void print_reply(const struct online_reply *r, int skip_known)
{
	char key[80];

	for (size_t i = 0; i < r->n; i++) {
		const struct online_kv *kv = &r->kv[i];
		/* status repeats what the run directory says */
		if (skip_known && (!strcmp(kv->key, CTL_KEY_PID) || !strcmp(kv->key, CTL_KEY_IMAGE) ||
				   !strcmp(kv->key, CTL_KEY_EXPORT)))
			continue;
		snprintf(key, sizeof(key), "%.70s:", kv->key);
		printf("%-21s ", key);
		print_value(kv);
	}
}

/* ---- list, status --------------------------------------------------------- */

static const char *counter(const struct entry *e, const char *key, char *buf, size_t len)
{
	const struct online_kv *kv = e->have_status ? online_reply_get(&e->status, key) : NULL;

	if (!kv || kv->type != ONLINE_NUM)
		return "-";
	snprintf(buf, len, "%llu", (unsigned long long)kv->num);
	return buf;
}

#define NCOLS 9

static int cmd_list(void)
{
	static const char *head[NCOLS] = { "IMAGE", "PID", "STATE", "LOOP", "MOUNTPOINT",
					   "EXPORT", "READS", "WRITES", "ERRORS" };
	struct online_state *sts = NULL;
	struct entry *es = NULL;
	size_t n = 0, i;
	int r, c;

	r = online_state_list(&sts, &n);
	if (r < 0)
		return fail(EXIT_ERROR, -r, online_rundir_base(), 0, "%s: %s%s", online_rundir_base(),
			    strerror(-r), r == -EACCES ? " (the run directories are root's)" : "");
	if (n && !(es = calloc(n, sizeof(*es)))) {
		free(sts);
		return fail(EXIT_ERROR, ENOMEM, NULL, 0, "out of memory");
	}
	for (i = 0; i < n; i++) {
		es[i].st = sts[i];
		probe(&es[i]);
	}
	free(sts);
	if (json) {
		struct json_out j;
		json_start(&j, stdout);
		json_object_begin(&j, NULL);
		json_u64(&j, "schema", 1);
		json_array_begin(&j, "images");
		for (i = 0; i < n; i++) {
			json_object_begin(&j, NULL);
			json_entry(&j, &es[i]);
			json_object_end(&j);
		}
		json_array_end(&j);
		json_object_end(&j);
		json_finish(&j);
	} else if (!quiet && n) {
		/* cells escaped once, then aligned */
		char *cell[NCOLS], buf[TEXT_ESCAPE_LEN(PATH_MAX)], num[32];
		char **cells = calloc(n * NCOLS, sizeof(char *));
		int w[NCOLS];
		if (!cells)
			goto oom;
		for (c = 0; c < NCOLS; c++)
			w[c] = (int)strlen(head[c]);
		for (i = 0; i < n; i++) {
			const struct entry *e = &es[i];
			snprintf(num, sizeof(num), "%ld", (long)e->st.pid);
			cell[0] = strdup(show(e->st.image, buf, sizeof(buf)));
			cell[1] = strdup(e->st.pid > 0 ? num : "-");
			cell[2] = strdup(e->state);
			cell[3] = strdup(show(e->st.loop, buf, sizeof(buf)));
			cell[4] = strdup(show(e->st.mountpoint, buf, sizeof(buf)));
			cell[5] = strdup(show(e->st.export_path, buf, sizeof(buf)));
			cell[6] = strdup(counter(e, CTL_KEY_READS, num, sizeof(num)));
			cell[7] = strdup(counter(e, CTL_KEY_WRITES, num, sizeof(num)));
			cell[8] = strdup(counter(e, CTL_KEY_IO_ERRORS, num, sizeof(num)));
			for (c = 0; c < NCOLS; c++) {
				cells[i * NCOLS + (size_t)c] = cell[c];
				if (!cell[c]) {
					for (size_t k = 0; k < n * NCOLS; k++)
						free(cells[k]);
					free(cells);
					goto oom;
				}
				if ((int)strlen(cell[c]) > w[c])
					w[c] = (int)strlen(cell[c]);
			}
		}
		for (c = 0; c < NCOLS; c++)
			printf(c < NCOLS - 1 ? "%-*s  " : "%-*s\n", c < NCOLS - 1 ? w[c] : 0, head[c]);
		for (i = 0; i < n; i++)
			for (c = 0; c < NCOLS; c++)
				printf(c < NCOLS - 1 ? "%-*s  " : "%-*s\n", c < NCOLS - 1 ? w[c] : 0,
				       cells[i * NCOLS + (size_t)c]);
		for (i = 0; i < n * NCOLS; i++)
			free(cells[i]);
		free(cells);
	}
	for (i = 0; i < n; i++)
		entry_free(&es[i]);
	free(es);
	return EXIT_OK;
oom:
	for (i = 0; i < n; i++)
		entry_free(&es[i]);
	free(es);
	return fail(EXIT_ERROR, ENOMEM, NULL, 0, "out of memory");
}

static int cmd_status(const char *arg)
{
	struct entry e;
	int r;

	if ((r = resolve(arg, &e)))
		return r;
	probe(&e);
	if (e.err) {
		r = e.err == -ETIMEDOUT ? EXIT_BUSY : EXIT_ERROR;
		r = fail(r, -e.err, e.st.image, e.st.pid, "%s: %s%s", e.st.image, e.msg,
			 r == EXIT_BUSY ? " (retry, or --wait)" : "");
		entry_free(&e);
		return r;
	}
	if (json) {
		struct json_out j;
		json_start(&j, stdout);
		json_object_begin(&j, NULL);
		json_u64(&j, "schema", 1);
		json_entry(&j, &e);
		json_object_end(&j);
		json_finish(&j);
	} else if (!quiet) {
		char pid[32];
		snprintf(pid, sizeof(pid), "%ld", (long)e.st.pid);
		print_kv("image:", e.st.image);
		print_kv("state:", e.state);
		print_kv("pid:", e.st.pid > 0 ? pid : NULL);
		print_kv("export:", e.st.export_path);
		print_kv("loop:", e.st.loop);
		print_kv("mountpoint:", e.st.mountpoint);
		if (e.msg[0])
			print_kv("message:", e.msg);
		if (e.have_status)
			print_reply(&e.status, 1);
	}
	entry_free(&e);
	return EXIT_OK;
}

/* ---- commands ------------------------------------------------------------- */

/* The exit status for the daemon's -errno (or the socket's). */
static int reply_status(int r)
{
	if (r == -ETIMEDOUT)
		return EXIT_BUSY;
	return exit_status(r);
}

/* Waits for the stopped daemon to exit (its run directory files go). */
static int wait_stopped(struct online_state *st)
{
	int ms = wait_given ? answer_ms : STOP_WAIT_MS;

	for (;;) {
		online_state_reload(st);
		if (!st->alive)
			return 0;
		if (ms >= 0 && (ms -= 20) < 0)
			return -ETIMEDOUT;
		usleep(20 * 1000);
	}
}

/* Sends cmd with its n arguments to the daemon of IMAGE. */
static int cmd_send(const char *arg, const char *cmd, char **args, int n)
{
	const struct online_command *oc = online_command_find(cmd);
	char line[LINE_MAX_LEN], reply[REPLY_MAX];
	struct online_reply rep = { 0 };
	struct entry e;
	size_t off;
	pid_t pid;
	int r, i, status = EXIT_OK;

	/* what cannot be sent */
	off = (size_t)snprintf(line, sizeof(line), "%s", cmd);
	for (i = 0; i < n && off < sizeof(line); i++)
		off += (size_t)snprintf(line + off, sizeof(line) - off, " %s", args[i]);
	if (off >= sizeof(line))
		return usage_error("command too long for the control socket (%zu bytes at most)",
				 sizeof(line) - 1);
	for (const char *p = line; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return usage_error("the command and its arguments cannot hold control "
					 "characters");
	if (!cmd[0] || strchr(cmd, ' '))
		return usage_error("invalid COMMAND '%s'", cmd);
	for (i = 0; i < n; i++)
		if (!args[i][0] || strchr(args[i], ' '))
			return usage_error("an argument cannot be empty nor hold spaces: '%s'", args[i]);

	if ((r = resolve(arg, &e)))
		return r;
	if (!e.st.alive) {
		status = fail(EXIT_NOTMOUNTED, ESRCH, e.st.image, 0,
			      "%s: not served: %s%s%s", e.st.image,
			      e.st.pid > 0 ? "its daemon is not running" : "no daemon runs",
			      e.st.loop[0] || e.st.mountpoint[0] ? " (imgumount " : "",
			      e.st.loop[0] || e.st.mountpoint[0] ? "cleans up what it left)" : "");
		goto out;
	}
	pid = e.st.pid;   /* stop: the run directory forgets it */
	if (oc && (oc->flags & ONLINE_CMD_STOP) && (e.st.loop[0] || e.st.mountpoint[0])) {
		char who[2 * PATH_MAX + 128];
		struct online_state only = e.st;
		only.pid = 0;
		status = fail(EXIT_BUSY, EBUSY, e.st.image, 0,
			      "%s: in use: %s; imgumount (or imgdetach) %s stops the daemon after "
			      "them (nothing was sent)", e.st.image,
			      online_describe(&only, who, sizeof(who)), e.st.image);
		goto out;
	}
	if (oc && (oc->flags & ONLINE_CMD_RESIZE) && !strcmp(cmd, CTL_SHRINK) && e.st.loop[0]) {
		status = fail(EXIT_ERROR, EPERM, e.st.image, 0,
			      "%s: attached on %s: a filesystem on it would be cut; shrinkimg "
			      "shrinks the filesystem first (nothing was sent)", e.st.image, e.st.loop);
		goto out;
	}
	r = online_request_timeout(&e.st, line, reply, sizeof(reply),
				   !strcmp(cmd, CTL_STATUS) ? answer_ms : -1);
	if (r < 0) {
		status = fail(reply_status(r), -r, e.st.image, e.st.pid, "%s: %s: %s%s", e.st.image,
			      cmd, reply, r == -ETIMEDOUT ? " (retry, or --wait)" : "");
		goto out;
	}
	if ((r = online_reply_parse(reply, &rep)) < 0) {
		status = fail(EXIT_ERROR, EPROTO, e.st.image, e.st.pid,
			      "%s: %s: the daemon's answer is not a JSON object", e.st.image, cmd);
		goto out;
	}
	if (oc && (oc->flags & ONLINE_CMD_RESIZE) && (r = online_refresh_size(&e.st)) < 0) {
		status = fail(EXIT_PARTIAL, -r, e.st.image, e.st.pid,
			      "%s: %s done, but %s did not follow; 'losetup -c %s' completes it",
			      e.st.image, cmd, e.st.loop[0] ? e.st.loop : e.st.export_path,
			      e.st.loop[0] ? e.st.loop : e.st.export_path);
		goto out;
	}
	if (oc && (oc->flags & ONLINE_CMD_STOP) && wait_stopped(&e.st) < 0) {
		status = fail(EXIT_ERROR, ETIMEDOUT, e.st.image, e.st.pid,
			      "%s: stop sent, but imgserve (pid %ld) is still running", e.st.image,
			      (long)pid);
		goto out;
	}
	if (json) {
		struct json_out j;
		json_start(&j, stdout);
		json_object_begin(&j, NULL);
		json_u64(&j, "schema", 1);
		json_string(&j, "filename", e.st.image);
		json_u64(&j, "pid", (uint64_t)pid);
		json_string(&j, "command", cmd);
		json_array_begin(&j, "arguments");
		for (i = 0; i < n; i++)
			json_string(&j, NULL, args[i]);
		json_array_end(&j);
		json_reply(&j, "reply", &rep);
		json_object_end(&j);
		json_finish(&j);
	} else if (!quiet) {
		char buf[TEXT_ESCAPE_LEN(PATH_MAX)];
		if (oc && (oc->flags & ONLINE_CMD_STOP))
			printf("%s: stopped (imgserve pid %ld)\n",
			       text_escape(e.st.image, buf, sizeof(buf)), (long)pid);
		else
			print_reply(&rep, 0);
	}
out:
	online_reply_free(&rep);
	entry_free(&e);
	return status;
}

/* ---- events --------------------------------------------------------------- */

#define EVENT_LINE_MAX 65536

struct stream {
	int fd;
	char rundir[PATH_MAX];
	char *buf;
	size_t len;
};

/* One event line: as it is (--json, also to the test log), or "TIME IMAGE
 * EVENT key=value...". */
static void print_event(char *line)
{
	struct online_reply r;
	char buf[TEXT_ESCAPE_LEN(PATH_MAX)];

	if (json) {
		printf("%s\n", line);
		json_test_log(line, strlen(line));
	} else if (online_reply_parse(line, &r) == 0) {
		const struct online_kv *t = online_reply_get(&r, "time"),
			*im = online_reply_get(&r, "image"), *ev = online_reply_get(&r, "event");
		printf("%s %s %s", t && t->str ? t->str : "-",
		       text_escape(im && im->str ? im->str : "-", buf, sizeof(buf)),
		       ev && ev->str ? ev->str : "-");
		for (size_t i = 0; i < r.n; i++) {
			const struct online_kv *kv = &r.kv[i];
			if (kv == t || kv == im || kv == ev || !strcmp(kv->key, "schema") ||
			    !strcmp(kv->key, "seq") || kv->type == ONLINE_NULL)
				continue;
			if (kv->type == ONLINE_STR)
				printf(" %s=%s", kv->key, text_escape(kv->str, buf, sizeof(buf)));
			else if (kv->type == ONLINE_NUM)
				printf(" %s=%llu", kv->key, (unsigned long long)kv->num);
			else
				printf(" %s=%s", kv->key, kv->num ? "true" : "false");
		}
		printf("\n");
		online_reply_free(&r);
	}
	fflush(stdout);
}

/* Subscribes to every live daemon not followed yet. */
static void subscribe_all(struct stream **ss, size_t *n)
{
	struct online_state *sts = NULL;
	size_t k = 0;
	char err[512];

	if (online_state_list(&sts, &k) < 0)
		return;
	for (size_t i = 0; i < k; i++) {
		size_t j;
		struct stream *nss;
		int fd;
		if (!sts[i].alive)
			continue;
		for (j = 0; j < *n && strcmp((*ss)[j].rundir, sts[i].rundir); j++)
			;
		if (j < *n || (fd = online_subscribe(&sts[i], err, sizeof(err))) < 0)
			continue;
		if (!(nss = realloc(*ss, (*n + 1) * sizeof(**ss)))) {
			close(fd);
			break;
		}
		*ss = nss;
		memset(&nss[*n], 0, sizeof(nss[*n]));
		nss[*n].fd = fd;
		snprintf(nss[*n].rundir, sizeof(nss[*n].rundir), "%s", sts[i].rundir);
		(*n)++;
	}
	free(sts);
}

/* Reads what came on s; prints its complete lines.  0, or -1 at its end. */
static int stream_read(struct stream *s)
{
	char *nl;
	ssize_t r;

	if (!s->buf && !(s->buf = malloc(EVENT_LINE_MAX)))
		return -1;
	r = read(s->fd, s->buf + s->len, EVENT_LINE_MAX - 1 - s->len);
	if (r < 0 && errno == EINTR)
		return 0;
	if (r <= 0)
		return -1;
	s->len += (size_t)r;
	s->buf[s->len] = 0;
	while ((nl = memchr(s->buf, '\n', s->len))) {
		*nl = 0;
		print_event(s->buf);
		s->len -= (size_t)(nl + 1 - s->buf);
		memmove(s->buf, nl + 1, s->len);
	}
	if (s->len == EVENT_LINE_MAX - 1)
		s->len = 0;   /* no line is that long: dropped */
	return 0;
}

/* events [IMAGE]: follows one daemon until it stops, or (no IMAGE,
 * --all) every daemon, looking for new ones every second, until
 * interrupted. */
static int cmd_events(const char *arg)
{
	struct stream *ss = NULL;
	size_t n = 0;
	int status = EXIT_OK;

	if (arg) {
		struct entry e;
		char err[1024];
		int r, fd;
		if ((r = resolve(arg, &e)))
			return r;
		if (!e.st.alive) {
			entry_free(&e);
			return fail(EXIT_NOTMOUNTED, ESRCH, e.st.image, 0, "%s: not served: no "
				    "daemon runs", e.st.image);
		}
		fd = online_subscribe(&e.st, err, sizeof(err));
		if (fd < 0) {
			status = fail(exit_status(fd), -fd, e.st.image, e.st.pid, "%s: events: %s",
				      e.st.image, err);
			entry_free(&e);
			return status;
		}
		entry_free(&e);
		if (!(ss = calloc(1, sizeof(*ss)))) {
			close(fd);
			return fail(EXIT_ERROR, ENOMEM, NULL, 0, "out of memory");
		}
		ss[0].fd = fd;
		n = 1;
	} else {
		subscribe_all(&ss, &n);
	}
	while (n || !arg) {
		struct pollfd *p = calloc(n + 1, sizeof(*p));
		int pr;
		if (!p)
			break;
		for (size_t i = 0; i < n; i++)
			p[i] = (struct pollfd){ .fd = ss[i].fd, .events = POLLIN };
		pr = poll(p, n, arg ? -1 : 1000);
		for (size_t i = 0; pr > 0 && i < n;) {
			if (p[i].revents && stream_read(&ss[i]) < 0) {
				close(ss[i].fd);
				free(ss[i].buf);
				ss[i] = ss[--n];
				p[i] = p[n];
				continue;
			}
			i++;
		}
		free(p);
		if (!arg)
			subscribe_all(&ss, &n);
	}
	for (size_t i = 0; i < n; i++) {
		close(ss[i].fd);
		free(ss[i].buf);
	}
	free(ss);
	return status;
}

/* ---- fsck ----------------------------------------------------------------- */

/* The options and type of the filesystem mounted on mp from dev
 * (/proc/self/mounts).  0, or -ENOENT when dev is not mounted there. */
static int mount_options_of(const char *mp, const char *dev, char *type, size_t tlen,
			    char *opts, size_t olen)
{
	char line[2 * PATH_MAX + 512], d[PATH_MAX], m[PATH_MAX], t[64], o[1024];
	FILE *f = fopen("/proc/self/mounts", "re");
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%4095s %4095s %63s %1023s", d, m, t, o) == 4 && !strcmp(d, dev) &&
		    !strcmp(m, mp)) {
			snprintf(type, tlen, "%s", t);
			snprintf(opts, olen, "%s", o);
			r = 0;   /* the last one: the one on top */
		}
	fclose(f);
	return r;
}

/* fsck IMAGE [yes]: the repair path of one image.  Its filesystem is
 * unmounted (refused while busy: nothing changed), e2fsck -f -p (-y)
 * runs on its loop device, served by its daemon as before, and it is
 * mounted again with the options it had.  The mount point stays recorded
 * throughout (a failure leaves imgumount what to clean up). */
static int cmd_fsck(const char *arg, const char *mode)
{
	char type[64] = "", opts[1024] = "", out[4096], buf[TEXT_ESCAPE_LEN(PATH_MAX)];
	struct entry e;
	int r, ec, status = EXIT_OK, mounted;

	if (mode && strcmp(mode, "yes"))
		return usage_error("expected 'yes', not '%s'", mode);
	if ((r = resolve(arg, &e)))
		return r;
	if (!e.st.alive || !e.st.loop[0]) {
		status = fail(EXIT_NOTMOUNTED, ENXIO, e.st.image, 0, "%s: not attached: fsck "
			      "works on an image imgmount or imgattach serves (offline: imgattach, "
			      "e2fsck, imgdetach)", e.st.image);
		goto out;
	}
	mounted = e.st.mountpoint[0] != 0;
	if (mounted && (r = mount_options_of(e.st.mountpoint, e.st.loop, type, sizeof(type), opts,
					     sizeof(opts))) < 0) {
		status = fail(EXIT_ERROR, -r, e.st.image, 0, "%s: %s is not mounted on %s (imgumount "
			      "cleans up)", e.st.image, e.st.loop, e.st.mountpoint);
		goto out;
	}
	if (!mounted && (online_blkid_type(e.st.loop, type, sizeof(type)) < 0 || !type[0]))
		type[0] = 0;
	if (!fs_is_ext(type)) {
		status = fail(EXIT_ERROR, EOPNOTSUPP, e.st.image, 0, "%s: fsck repairs ext2/3/4, "
			      "not %s", e.st.image, type[0] ? type : "an unknown filesystem");
		goto out;
	}
	if (mounted && umount(e.st.mountpoint) < 0) {
		r = errno;
		status = fail(r == EBUSY ? EXIT_BUSY : EXIT_ERROR, r, e.st.image, 0,
			      "%s: cannot unmount %s: %s (nothing was changed)", e.st.image,
			      e.st.mountpoint, strerror(r));
		goto out;
	}
	{
		char *av[] = { "e2fsck", "-f", mode ? "-y" : "-p", e.st.loop, NULL };
		ec = run_capture_silent(av, out, sizeof(out));
	}
	if (mounted) {
		char *av[] = { "mount", "-t", type, "-o", opts, e.st.loop, e.st.mountpoint, NULL };
		if (run_quiet(av) != 0) {
			status = fail(EXIT_PARTIAL, EIO, e.st.image, 0, "%s: e2fsck done (exit status "
				      "%d), but %s could not be mounted on %s again", e.st.image, ec,
				      e.st.loop, e.st.mountpoint);
			goto out;
		}
	}
	/* e2fsck: 0 clean, 1 errors corrected, 2 corrected (reboot), 4 and
	 * more errors left or it failed */
	if (ec < 0 || ec >= 4)
		status = fail(EXIT_CORRUPT, EUCLEAN, e.st.image, 0, "%s: e2fsck left errors on %s "
			      "(exit status %d)%s%s", e.st.image, e.st.loop, ec,
			      mode ? "" : "; 'imgctl fsck IMAGE yes' answers yes to every repair",
			      mounted ? "; mounted again as it was" : "");
	if (json) {
		struct json_out j;
		json_start(&j, stdout);
		json_doc_begin(&j);
		json_string(&j, "filename", e.st.image);
		json_string(&j, "device", e.st.loop);
		json_string(&j, "mountpoint", mounted ? e.st.mountpoint : NULL);
		json_string(&j, "filesystem", type);
		json_u64(&j, "e2fsck_status", (uint64_t)(ec < 0 ? 8 : ec));
		json_bool(&j, "repaired", ec == 1 || ec == 2);
		json_bool(&j, "clean", ec >= 0 && ec < 4);
		json_object_end(&j);
		if (status == EXIT_OK)
			json_finish(&j);
		else
			json_discard(&j);
	} else if (!quiet && status == EXIT_OK) {
		printf("%s: e2fsck -f %s %s: %s%s%s\n", text_escape(e.st.image, buf, sizeof(buf)),
		       mode ? "-y" : "-p", e.st.loop,
		       ec == 0 ? "clean" : "errors corrected", mounted ? "; mounted again on " : "",
		       mounted ? e.st.mountpoint : "");
	}
	if (status != EXIT_OK && out[0])
		fprintf(stderr, "%s", out);
out:
	entry_free(&e);
	return status;
}

/* A named subcommand: its arguments checked, then cmd_send. */
static int cmd_named(const struct online_command *oc, char **ops, int nops)
{
	char size[32], base[PATH_MAX];
	char *args[4];
	int n = nops - 2, i;
	uint64_t v;

	if (nops < 2)
		return usage_error("%s: expected IMAGE", oc->name);
	if (n < (int)oc->min_args || n > (int)oc->max_args)
		return usage_error("usage: %s IMAGE%s%s", oc->name, oc->args[0] ? " " : "", oc->args);
	for (i = 0; i < n; i++)
		args[i] = ops[2 + i];
	if (oc->flags & ONLINE_CMD_RESIZE) {
		if (parse_size(args[0], &v))
			return usage_error("invalid size '%s'", args[0]);
		snprintf(size, sizeof(size), "%llu", (unsigned long long)v);
		args[0] = size;
		if (n == 2 && strcmp(args[1], CTL_DISCARD_DATA))
			return usage_error("expected '" CTL_DISCARD_DATA "', not '%s'", args[1]);
	}
	if (!strcmp(oc->name, CTL_QOS) && qos_settings[0]) {
		if (n)
			return usage_error("qos: give the settings as options or as one "
					   "KEY=VALUE,... word, not both");
		args[0] = qos_settings;
		n = 1;
	}
	if (!strcmp(oc->name, CTL_COMPACT) && n == 1 && strcmp(args[0], CTL_NO_ZERO_DETECT))
		return usage_error("expected '" CTL_NO_ZERO_DETECT "', not '%s'", args[0]);
	/* the daemon runs in /: a base named relative to here */
	if (!strcmp(oc->name, CTL_MERGE) && n == 1 && args[0][0] != '/') {
		if (!realpath(args[0], base))
			return fail(errno == ENOENT ? EXIT_NOTFOUND : EXIT_ERROR, errno, args[0], 0,
				    "%s: %s", args[0], strerror(errno));
		args[0] = base;
	}
	return cmd_send(ops[1], oc->name, args, n);
}


/* ---- pool ------------------------------------------------------------------ */

/* One image of a pool directory. */
struct pool_image {
	char name[NAME_MAX + 1];
	uint64_t virtual_size, data, disk_usage, growth;
	int backing;               /* a delta (its backing chain is not opened) */
	int served;                /* sizes from its daemon's status */
};

/* The images of one directory and the host filesystem under them. */
struct pool {
	char dir[PATH_MAX];
	struct pool_image *img;
	size_t n, cap;
	uint64_t virtual_size, data, disk_usage, growth;
	uint64_t host_free, host_size;
	uint64_t unreadable;       /* files with the magic that did not open */
};

/* The file name in the open directory dfd, if it is an image: opened
 * without following a symlink nor blocking (a FIFO, a device: skipped),
 * then read through the library from the descriptor (read-only, no lock:
 * a served image is read as the daemon left it; no backing chain: a
 * reference is never followed).  1 image, 0 not one, -1 with the magic
 * but unreadable. */
static int pool_probe(int dfd, const char *name, struct pool_image *pi)
{
	char path[64], ref[PATH_MAX];
	struct img_info in;
	struct img *img;
	struct stat sb;
	int fd, r;

	if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(sb.st_mode))
		return 0;
	fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	r = img_probe(path);
	if (r == 1) {
		r = img_open(path, IMG_OPEN_NOLOCK | IMG_OPEN_NO_BACKING, &img);
		if (r == 0) {
			memset(&in, 0, sizeof(in));
			r = img_info(img, &in);
			memset(pi, 0, sizeof(*pi));
			snprintf(pi->name, sizeof(pi->name), "%s", name);
			pi->virtual_size = in.virtual_size;
			pi->data = in.allocated_clusters * in.cluster_size;
			pi->disk_usage = (uint64_t)sb.st_blocks * 512;
			pi->growth = pi->virtual_size > pi->data ? pi->virtual_size - pi->data : 0;
			pi->backing = img_backing_ref(img, ref, sizeof(ref)) > 0;
			img_close(img);
		}
		r = r == 0 ? 1 : -1;
	} else {
		r = 0;
	}
	close(fd);
	return r;
}

static int pool_cmp(const void *a, const void *b)
{
	return strcmp(((const struct pool_image *)a)->name, ((const struct pool_image *)b)->name);
}

/* A served image's sizes from its daemon (status), which knows what its
 * log holds and the file does not say yet. */
static void pool_served(const char *dir, struct pool_image *pi)
{
	char path[PATH_MAX], reply[REPLY_MAX];
	struct online_state st;
	struct online_reply rep = { 0 };
	const struct online_kv *vs, *ac, *cs;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, pi->name) >= sizeof(path) ||
	    online_state_load(path, &st) <= 0 || !st.alive ||
	    online_request_timeout(&st, CTL_STATUS, reply, sizeof(reply), answer_ms) < 0 ||
	    online_reply_parse(reply, &rep) < 0)
		goto out;
	vs = online_reply_get(&rep, CTL_KEY_VIRTUAL_SIZE);
	ac = online_reply_get(&rep, "allocated_clusters");
	cs = online_reply_get(&rep, "cluster_size");
	if (vs && ac && cs && vs->type == ONLINE_NUM && ac->type == ONLINE_NUM &&
	    cs->type == ONLINE_NUM && ac->num <= UINT64_MAX / (cs->num ? cs->num : 1)) {
		pi->served = 1;
		pi->virtual_size = vs->num;
		pi->data = ac->num * cs->num;
		pi->growth = pi->virtual_size > pi->data ? pi->virtual_size - pi->data : 0;
	}
out:
	online_reply_free(&rep);
}

/* Scans dir into p.  0, or the exit status (message printed). */
static int pool_scan(const char *dir, struct pool *p)
{
	struct statvfs sv;
	struct dirent *de;
	DIR *d;
	int dfd, r;

	memset(p, 0, sizeof(*p));
	if (!realpath(dir, p->dir)) {
		r = errno;
		return fail(r == ENOENT || r == ENOTDIR ? EXIT_NOTFOUND : EXIT_ERROR, r, dir, 0,
			    "%s: %s", dir, strerror(r));
	}
	dfd = open(p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fstatvfs(dfd, &sv) < 0 || !(d = fdopendir(dfd))) {
		r = errno;
		if (dfd >= 0)
			close(dfd);
		return fail(r == ENOENT ? EXIT_NOTFOUND : EXIT_ERROR, r, dir, 0, "%s: %s", dir,
			    strerror(r));
	}
	p->host_free = (uint64_t)sv.f_bavail * sv.f_frsize;
	p->host_size = (uint64_t)sv.f_blocks * sv.f_frsize;
	while ((de = readdir(d))) {
		struct pool_image pi;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		r = pool_probe(dirfd(d), de->d_name, &pi);
		if (r < 0)
			p->unreadable++;
		if (r <= 0)
			continue;
		pool_served(p->dir, &pi);
		if (p->n == p->cap) {
			size_t cap = p->cap ? 2 * p->cap : 16;
			struct pool_image *ni = realloc(p->img, cap * sizeof(*ni));
			if (!ni) {
				closedir(d);
				return fail(EXIT_ERROR, ENOMEM, NULL, 0, "out of memory");
			}
			p->img = ni;
			p->cap = cap;
		}
		p->img[p->n++] = pi;
		p->virtual_size += pi.virtual_size;
		p->data += pi.data;
		p->disk_usage += pi.disk_usage;
		p->growth += pi.growth;
	}
	closedir(d);
	if (p->n)
		qsort(p->img, p->n, sizeof(*p->img), pool_cmp);
	return 0;
}

/* virtual / (allocated + free), in hundredths. */
static uint64_t pool_overcommit(const struct pool *p)
{
	uint64_t room = p->disk_usage + p->host_free;

	return room ? (uint64_t)((long double)p->virtual_size * 100 / room + 0.5L) : 0;
}

static int pool_absorbs(const struct pool *p)
{
	return p->host_free >= p->growth;
}

static void pool_json(struct json_out *j, const struct pool *p)
{
	json_object_begin(j, NULL);
	json_string(j, "directory", p->dir);
	json_u64(j, "image_count", p->n);
	json_u64(j, "virtual_size", p->virtual_size);
	json_u64(j, "data", p->data);
	json_u64(j, "disk_usage", p->disk_usage);
	json_u64(j, "growth", p->growth);
	json_u64(j, "host_free", p->host_free);
	json_u64(j, "host_size", p->host_size);
	json_u64(j, "overcommit_percent", pool_overcommit(p));
	json_bool(j, "absorbs_growth", pool_absorbs(p));
	json_u64(j, "unreadable", p->unreadable);
	json_array_begin(j, "images");
	for (size_t i = 0; i < p->n; i++) {
		json_object_begin(j, NULL);
		json_string(j, "name", p->img[i].name);
		json_u64(j, "virtual_size", p->img[i].virtual_size);
		json_u64(j, "data", p->img[i].data);
		json_u64(j, "disk_usage", p->img[i].disk_usage);
		json_u64(j, "growth", p->img[i].growth);
		json_bool(j, "delta", p->img[i].backing);
		json_bool(j, "served", p->img[i].served);
		json_object_end(j);
	}
	json_array_end(j);
	json_object_end(j);
}

static void pool_text(const struct pool *p)
{
	char a[64], b[64];
	uint64_t oc = pool_overcommit(p);

	print_kv("directory:", p->dir);
	printf("%-21s %zu\n", "images:", p->n);
	if (p->unreadable)
		printf("%-21s %llu\n", "unreadable:", (unsigned long long)p->unreadable);
	printf("%-21s %s\n", "virtual size:", human_size(p->virtual_size, a, sizeof(a)));
	printf("%-21s %s\n", "allocated:", human_size(p->disk_usage, a, sizeof(a)));
	printf("%-21s %s\n", "growth:", human_size(p->growth, a, sizeof(a)));
	printf("%-21s %s of %s\n", "host free:", human_size(p->host_free, a, sizeof(a)),
	       human_size(p->host_size, b, sizeof(b)));
	printf("%-21s %llu.%02llu\n", "overcommit:", (unsigned long long)(oc / 100),
	       (unsigned long long)(oc % 100));
}

/* pool [DIR...]: the directories given, else those of the served images. */
static int cmd_pool(char **dirs, int ndirs)
{
	struct online_state *sts = NULL;
	char **own = NULL;
	size_t n = 0, i, k;
	int status = EXIT_OK, short_of_space = 0, r;
	struct json_out j;

	if (ndirs == 0) {
		r = online_state_list(&sts, &n);
		if (r < 0)
			return fail(EXIT_ERROR, -r, online_rundir_base(), 0, "%s: %s%s",
				    online_rundir_base(), strerror(-r),
				    r == -EACCES ? " (the run directories are root's)" : "");
		own = calloc(n + 1, sizeof(char *));
		if (!own) {
			free(sts);
			return fail(EXIT_ERROR, ENOMEM, NULL, 0, "out of memory");
		}
		for (i = 0; i < n; i++) {
			char *slash, *d;
			if (!sts[i].image[0] || !(d = strdup(sts[i].image)))
				continue;
			slash = strrchr(d, '/');
			if (slash)
				*(slash == d ? slash + 1 : slash) = 0;
			for (k = 0; k < (size_t)ndirs && strcmp(own[k], d); k++)
				;
			if (k < (size_t)ndirs)
				free(d);
			else
				own[ndirs++] = d;
		}
		free(sts);
		dirs = own;
	}
	if (json) {
		json_start(&j, stdout);
		json_object_begin(&j, NULL);
		json_u64(&j, "schema", 1);
		json_array_begin(&j, "pools");
	}
	for (i = 0; i < (size_t)ndirs; i++) {
		struct pool p;
		char a[64], b[64], buf[TEXT_ESCAPE_LEN(PATH_MAX)];
		r = pool_scan(dirs[i], &p);
		if (r) {
			status = r;
			free(p.img);
			continue;
		}
		if (!pool_absorbs(&p)) {
			short_of_space = 1;
			errmsg("warning: %s: the host cannot absorb the images' growth: %s free, %s more "
				"can be written", text_escape(p.dir, buf, sizeof(buf)),
				human_size(p.host_free, a, sizeof(a)), human_size(p.growth, b, sizeof(b)));
		}
		if (json)
			pool_json(&j, &p);
		else if (!quiet) {
			if (i)
				printf("\n");
			pool_text(&p);
		}
		free(p.img);
	}
	if (json) {
		json_array_end(&j);
		json_object_end(&j);
		if (status == EXIT_OK)
			json_finish(&j);
		else
			json_discard(&j);
	}
	if (own) {
		for (i = 0; i < (size_t)ndirs; i++)
			free(own[i]);
		free(own);
	}
	if (status == EXIT_OK && strict && short_of_space)
		status = EXIT_NOSPACE;
	return status;
}

static int run(int argc, char **argv)
{
	struct tool_getopt g = { 0 };
	const struct online_command *oc;
	char **ops;
	int c, nops = 0;

	tool_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);   /* a daemon that goes away mid-request */
	ops = calloc((size_t)argc + 1, sizeof(char *));
	if (!ops)
		return fail(EXIT_ERROR, ENOMEM, NULL, 0, "out of memory");
	while ((c = tool_getopt(&g, argc, argv, "jw::qhV", longopts)) != -1) {
		char word[256];
		int q = qos_option_word(c, optarg, word, sizeof(word));
		if (q) {
			size_t used = strlen(qos_settings);
			if (q < 0 || (size_t)snprintf(qos_settings + used, sizeof(qos_settings) - used,
						      "%s%s", used ? "," : "", word) >=
			    sizeof(qos_settings) - used) {
				free(ops);
				return q < 0 ? EXIT_USAGE : usage_error("QoS settings too long");
			}
			continue;
		}
		switch (c) {
		case 1: ops[nops++] = optarg; break;
		case 'j': json = 1; break;
		case 'q': quiet = 1; break;
		case 'S': strict = 1; break;
		case 'a': all_images = 1; break;
		case 'w':
			wait_given = 1;
			if (!optarg) {
				answer_ms = -1;
			} else {
				int64_t ms;
				if (parse_wait(optarg, &ms) || ms > INT_MAX) {
					free(ops);
					return usage_error("invalid --wait '%s' (seconds)", optarg);
				}
				answer_ms = (int)ms;
			}
			break;
		case 'h': usage(); free(ops); return EXIT_OK;
		case 'V': print_version(); free(ops); return EXIT_OK;
		default:
			free(ops);
			return usage_error("bad usage");
		}
	}
	if (nops == 0) {
		free(ops);
		return usage_error("expected a command: list, status, send, grow, shrink, compact, "
				 "snapshot, merge, events, fsck, resume, on-nospace or stop");
	}
	if (strict && strcmp(ops[0], "pool")) {
		c = usage_error("--strict goes with the pool command");
	} else if (!strcmp(ops[0], "list")) {
		c = nops == 1 ? cmd_list() : usage_error("list takes no operand");
	} else if (!strcmp(ops[0], "status")) {
		c = nops == 2 ? cmd_status(ops[1]) : usage_error("usage: status IMAGE");
	} else if (!strcmp(ops[0], CTL_EVENTS)) {
		c = nops == 2 && !all_images ? cmd_events(ops[1]) :
		    nops == 1 ? cmd_events(NULL) : usage_error("usage: events [IMAGE|--all]");
	} else if (!strcmp(ops[0], "fsck")) {
		c = nops == 2 || nops == 3 ? cmd_fsck(ops[1], nops == 3 ? ops[2] : NULL) :
		    usage_error("usage: fsck IMAGE [yes]");
	} else if (!strcmp(ops[0], "send")) {
		c = nops >= 3 ? cmd_send(ops[1], ops[2], ops + 3, nops - 3) :
		    usage_error("usage: send IMAGE COMMAND [ARGS...]");
	} else if (!strcmp(ops[0], "pool")) {
		c = cmd_pool(ops + 1, nops - 1);
	} else if (qos_settings[0] && strcmp(ops[0], CTL_QOS)) {
		c = usage_error("the QoS options go with the qos command");
	} else if ((oc = online_command_find(ops[0]))) {
		c = cmd_named(oc, ops, nops);
	} else {
		c = usage_error("unknown command '%s'", ops[0]);
	}
	free(ops);
	return c;
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
