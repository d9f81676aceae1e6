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
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "online/control.h"
#include "online/loop.h"

#define DEFAULT_WAIT_MS 5000       /* status: a busy daemon */
#define STOP_WAIT_MS    60000      /* stop: the daemon flushes and exits */
#define REPLY_MAX       (4 * PATH_MAX + 4096)
#define LINE_MAX_LEN    (PATH_MAX + 64)   /* the daemon's line buffer */

static const struct option longopts[] = {
	{ "json",    no_argument,       NULL, 'j' },
	{ "wait",    optional_argument, NULL, 'w' },
	{ "quiet",   no_argument,       NULL, 'q' },
	{ "help",    no_argument,       NULL, 'h' },
	{ "version", no_argument,       NULL, 'V' },
	{ NULL, 0, NULL, 0 }
};

static int answer_ms = DEFAULT_WAIT_MS;    /* -1: no limit */
static int wait_given;                    /* --wait was given */

static void usage(void)
{
	printf("Usage: %s [OPTIONS] list\n"
	       "       %s [OPTIONS] status IMAGE\n"
	       "       %s [OPTIONS] send IMAGE COMMAND [ARGS...]\n"
	       "       %s [OPTIONS] grow|shrink IMAGE SIZE [discard-data]\n"
	       "       %s [OPTIONS] compact|snapshot|merge|resume|on-nospace|stop IMAGE [ARG]\n"
	       "List the libimg images served (imgserve), attached (imgattach) or mounted\n"
	       "(imgmount) here, with daemon pid, state, export, loop device, mount point\n"
	       "and counters; send commands to their daemons.  IMAGE: the image file, its\n"
	       "loop device or mount point.  COMMAND: status, grow SIZE, shrink SIZE\n"
	       "[discard-data], compact [no-zero-detect], snapshot [NAME], merge [BASE],\n"
	       "resume, on-nospace pause|error|pause:SECONDS (the host out of space), stop.\n"
	       "\n"
	       "  -j, --json            print JSON (see imgctl(1))\n"
	       "  -w, --wait[=SECONDS]  list, status: wait for a busy daemon (default 5 s;\n"
	       "                        no SECONDS: no limit)\n"
	       "  -q, --quiet           print nothing on success (JSON is still printed)\n"
	       "  -h, --help            show this help\n"
	       "  -V, --version         show the version\n"
	       "\n"
	       "stop is refused while a loop device or mount uses the image (imgumount),\n"
	       "shrink while it is attached (shrinkimg); grow, shrink resize no filesystem.\n"
	       "Exit status: 0 success, 1 error, 2 usage, 5 IMAGE does not exist, 6 not\n"
	       "served, 7 resized but the loop device did not follow, 75 busy or in use.\n"
	       "See imgctl(1).\n",
	       progname, progname, progname, progname, progname);
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
		switch (c) {
		case 1: ops[nops++] = optarg; break;
		case 'j': json = 1; break;
		case 'q': quiet = 1; break;
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
				 "snapshot, merge, resume, on-nospace or stop");
	}
	if (!strcmp(ops[0], "list")) {
		c = nops == 1 ? cmd_list() : usage_error("list takes no operand");
	} else if (!strcmp(ops[0], "status")) {
		c = nops == 2 ? cmd_status(ops[1]) : usage_error("usage: status IMAGE");
	} else if (!strcmp(ops[0], "send")) {
		c = nops >= 3 ? cmd_send(ops[1], ops[2], ops + 3, nops - 3) :
		    usage_error("usage: send IMAGE COMMAND [ARGS...]");
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
