/* SPDX-License-Identifier: MIT */
/* Shared by the command-line tools; see common.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

const char *progname = "libimg";
int quiet;
int json;
int verbose;
int backing_any;
int exit_usage = EXIT_USAGE;
int tool_exit_refine = 1;
int64_t wait_ms = -1;

/* The first error printed (tool_exit, the JSON error object). */
static struct {
	int set;
	int err;              /* -errno, 0 when the message names none */
	int has_file;
	pid_t holder;
	char file[1024];
	char msg[2048];
} last_err;
/* The file the tool works on: the last one opened or named in an error. */
static char cur_file[1024];
static int have_cur_file;
/* How long the last wait for a lock (--wait) waited before it gave up,
 * -1: none (lib_errmsg says it for -EBUSY). */
static int64_t busy_waited = -1;
/* -j or --json is among the arguments (tool_init). */
static int json_asked;
/* A JSON document was printed (json_finish): no error object then. */
static int json_doc_printed;
/* errno of a failed write of the JSON document to stdout (full, closed,
 * a broken pipe with SIGPIPE ignored), or 0: tool_exit turns a success
 * into EXIT_ERROR then, a script must not read "0" with no document. */
static int json_write_err;

/* ---- sizes ------------------------------------------------------------ */

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* The multiplier named by a suffix, or 0 for an unknown one. */
static uint64_t suffix_mult(const char *s)
{
	static const char units[] = "KMGTPE";
	const char *u;
	char c = *s;

	if (c == 0)
		return 1;
	if ((c == 'B' || c == 'b') && s[1] == 0)
		return 1;
	if (c >= 'a' && c <= 'z')
		c = (char)(c - 'a' + 'A');
	u = strchr(units, c);
	if (!u || c == 0)
		return 0;
	s++;
	/* "", "i", "iB" (any case) */
	if (*s == 'i' || *s == 'I') {
		s++;
		if (*s == 'B' || *s == 'b')
			s++;
	}
	if (*s)
		return 0;
	return (uint64_t)1 << (10 * (u - units + 1));
}

int parse_size(const char *s, uint64_t *out)
{
	unsigned __int128 ipart = 0, frac = 0, pow10 = 1, v;
	uint64_t mult;
	const char *p = s;
	int fdigits = 0;

	if (!s || !is_digit(*p))
		return -EINVAL;
	for (; is_digit(*p); p++) {
		ipart = ipart * 10 + (unsigned)(*p - '0');
		if (ipart > UINT64_MAX)
			return -EINVAL;
	}
	if (*p == '.') {
		const char *f = ++p, *end;
		if (!is_digit(*p))
			return -EINVAL;
		while (is_digit(*p))
			p++;
		end = p;
		while (end > f && end[-1] == '0')   /* trailing zeros add nothing */
			end--;
		for (; f < end; f++) {
			if (++fdigits > 19)             /* finer than any whole byte */
				return -EINVAL;
			frac = frac * 10 + (unsigned)(*f - '0');
			pow10 *= 10;
		}
	}
	mult = suffix_mult(p);
	if (!mult)
		return -EINVAL;
	/* ipart < 2^64, mult <= 2^60: the product fits in 128 bits. */
	v = ipart * mult;
	if (frac) {
		unsigned __int128 fb = frac * mult;  /* < 10^19 * 2^60 < 2^124 */
		if (fb % pow10)
			return -EINVAL;             /* not a whole number of bytes */
		v += fb / pow10;
	}
	if (v > UINT64_MAX)
		return -EINVAL;
	*out = (uint64_t)v;
	return 0;
}

int parse_new_size(const char *s, uint64_t current, uint64_t *out)
{
	uint64_t d;

	if (!s)
		return -EINVAL;
	if (*s == '+' || *s == '-') {
		if (parse_size(s + 1, &d))
			return -EINVAL;
		if (*s == '+') {
			if (__builtin_add_overflow(current, d, &d))
				return -EINVAL;
		} else {
			if (d > current)
				return -EINVAL;
			d = current - d;
		}
		*out = d;
		return 0;
	}
	return parse_size(s, out);
}

const char *human_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	int u = -1;
	uint64_t div = 1;

	while (u < 5 && bytes / div >= 1024) {
		div <<= 10;
		u++;
	}
	if (u < 0) {
		snprintf(buf, len, "%llu %s", (unsigned long long)bytes,
			 bytes == 1 ? "byte" : "bytes");
	} else if (bytes % div == 0) {
		snprintf(buf, len, "%llu %s", (unsigned long long)(bytes / div), units[u]);
	} else {
		double v = (double)bytes / (double)div;
		char *e;
		snprintf(buf, len, v >= 100 ? "%.1f" : "%.2f", v);
		/* "1.50" -> "1.5"; "2.00" -> "2" is impossible here but harmless */
		e = buf + strlen(buf);
		while (e > buf && e[-1] == '0')
			*--e = 0;
		if (e > buf && e[-1] == '.')
			*--e = 0;
		snprintf(e, len - (size_t)(e - buf), " %s", units[u]);
	}
	return buf;
}

const char *human_size_exact(uint64_t bytes, char *buf, size_t len)
{
	char h[32];

	human_size(bytes, h, sizeof(h));
	if (bytes < 1024)
		snprintf(buf, len, "%s", h);
	else
		snprintf(buf, len, "%s (%llu bytes)", h, (unsigned long long)bytes);
	return buf;
}

/* ---- backing-path policy ---------------------------------------------- */

static struct backing_dirs policy_dirs;

int backing_dirs_parse(struct backing_dirs *d, const char *text, char sep, unsigned *first_bad)
{
	unsigned no = 0;
	int bad = 0;

	*first_bad = 0;
	while (*text) {
		const char *end = strchr(text, sep), *a = text, *b;
		char **nd;

		if (!end)
			end = text + strlen(text);
		b = end;
		text = *end ? end + 1 : end;
		no++;
		if (sep == '\n') {
			while (a < b && (*a == ' ' || *a == '\t'))
				a++;
			while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
				b--;
			if (a < b && *a == '#')
				continue;
		}
		if (a == b)
			continue;
		if (*a != '/') {
			if (!bad++)
				*first_bad = no;
			continue;
		}
		nd = realloc(d->dir, (d->n + 1) * sizeof(*nd));
		if (!nd)
			return -ENOMEM;
		d->dir = nd;
		if (!(d->dir[d->n] = strndup(a, (size_t)(b - a))))
			return -ENOMEM;
		d->n++;
	}
	return bad;
}

void backing_dirs_free(struct backing_dirs *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->dir[i]);
	free(d->dir);
	d->dir = NULL;
	d->n = 0;
}

static void backing_policy_set(void)
{
	int r = img_set_backing_policy((const char *const *)policy_dirs.dir, policy_dirs.n,
				       backing_any ? IMG_BACKING_POLICY_ANY : 0);

	if (r)
		errmsg("backing-path policy: %s", img_strerror(r));
}

/* The allowed backing directories: BACKING_DIRS_FILE (or
 * $LIBIMG_BACKING_DIRS_FILE), then $LIBIMG_BACKING_DIRS.  A bad entry is
 * reported and skipped; a missing file allows nothing. */
static void backing_policy_load(void)
{
	const char *file = getenv("LIBIMG_BACKING_DIRS_FILE");
	const char *env = getenv("LIBIMG_BACKING_DIRS");
	unsigned first;
	FILE *f;
	int r;

	if (!file || !*file)
		file = BACKING_DIRS_FILE;
	if ((f = fopen(file, "re"))) {
		char *text = NULL;
		size_t cap = 0;
		ssize_t n = getdelim(&text, &cap, '\0', f);
		if (n < 0 && ferror(f))
			errmsg("%s: %s", file, strerror(errno));
		else if (n > 0 && (r = backing_dirs_parse(&policy_dirs, text, '\n', &first)) > 0)
			errmsg("%s:%u: not an absolute directory: ignored%s", file, first,
			       r > 1 ? " (and more lines)" : "");
		free(text);
		fclose(f);
	} else if (errno != ENOENT) {
		errmsg("%s: %s", file, strerror(errno));
	}
	if (env && (r = backing_dirs_parse(&policy_dirs, env, ':', &first)) > 0)
		errmsg("LIBIMG_BACKING_DIRS: entry %u is not an absolute directory: ignored", first);
	if (policy_dirs.n)
		backing_policy_set();
}

/* ---- messages --------------------------------------------------------- */

/* The length (1..4) of the valid UTF-8 sequence at p that is not a C0 or C1
 * control or DEL, with its code point in *cp; 0 for a byte that starts no
 * such sequence.  Shared by text_escape and json_escape. */
static int utf8_char(const unsigned char *p, uint32_t *cp)
{
	unsigned char c = p[0];
	int n, i;
	uint32_t v;

	if (c < 0x20 || c == 0x7f)
		return 0;
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf)
		n = 1, v = c & 0x1fu;
	else if (c >= 0xe0 && c <= 0xef)
		n = 2, v = c & 0x0fu;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 3, v = c & 0x07u;
	else
		return 0;
	for (i = 1; i <= n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		v = v << 6 | (p[i] & 0x3fu);
	}
	/* overlong forms, surrogates, past U+10FFFF, C1 controls */
	if ((n == 2 && v < 0x800) || (n == 3 && v < 0x10000) || v > 0x10ffff ||
	    (v >= 0xd800 && v <= 0xdfff) || v < 0xa0)
		return 0;
	*cp = v;
	return n + 1;
}

/* The escaped form of the character at p into e (8 bytes): its length,
 * and in *n the bytes of p it stands for. */
static size_t escape_char(const unsigned char *p, char *e, int *n)
{
	uint32_t cp;

	*n = utf8_char(p, &cp);
	if (*n == 1 && *p == '\\') {
		memcpy(e, "\\\\", 2);
		return 2;
	}
	if (*n) {
		memcpy(e, p, (size_t)*n);
		return (size_t)*n;
	}
	*n = 1;
	snprintf(e, 8, "\\x%02x", *p);
	return 4;
}

const char *text_escape(const char *s, char *buf, size_t len)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	size_t o = 0, need = 1;
	char e[8];
	int n;

	for (const unsigned char *q = p; *q; q += n)
		need += escape_char(q, e, &n);
	/* all of it, or what fits before "..." */
	while (*p) {
		size_t el = escape_char(p, e, &n);
		if (o + el + (need <= len ? 1 : 4) > len)
			break;
		memcpy(buf + o, e, el);
		o += el;
		p += n;
	}
	if (*p) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = 0;
	return buf;
}

void tool_init(int argc, char **argv)
{
	/* Past a file size limit, fail the write with EFBIG (and clean up)
	 * instead of being killed. */
	signal(SIGXFSZ, SIG_IGN);
	if (argc > 0 && argv[0] && argv[0][0]) {
		const char *b = strrchr(argv[0], '/');
		progname = b ? b + 1 : argv[0];
		argv[0] = (char *)progname;
	}
	/* A usage error may come before -j is parsed: it still gets the
	 * JSON error object when -j or --json is on the command line. */
	for (int i = 1; i < argc && argv[i] && strcmp(argv[i], "--"); i++)
		if (!strcmp(argv[i], "-j") || !strcmp(argv[i], "--json"))
			json_asked = 1;
	backing_policy_load();
}

static void set_cur_file(const char *file)
{
	if (file && file != cur_file) {
		snprintf(cur_file, sizeof(cur_file), "%s", file);
		have_cur_file = 1;
	}
}

/* Records the error just printed: msg (without "PROG: "), err, file.  The
 * first error is the cause, what follows its consequence (a close that
 * fails after a write ran out of space): the first one is kept. */
static void record_error(const char *file, int has_file, int err, const char *msg)
{
	if (!strncmp(msg, "warning: ", 9) || last_err.set)
		return;
	last_err.set = 1;
	last_err.err = err;
	last_err.holder = err == -EBUSY ? img_last_holder() : 0;
	last_err.has_file = has_file && file;
	snprintf(last_err.file, sizeof(last_err.file), "%s", last_err.has_file ? file : "");
	snprintf(last_err.msg, sizeof(last_err.msg), "%s", msg);
}

void error_forget(void)
{
	last_err.set = 0;
}

static void print_error_line(const char *msg)
{
	fflush(stdout);
	fprintf(stderr, "%s: %s\n", progname, msg);
}

void errmsg(const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	print_error_line(msg);
	record_error(cur_file, have_cur_file, 0, msg);
}

void errmsg_err(const char *file, int err, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	print_error_line(msg);
	set_cur_file(file);
	record_error(file, 1, err, msg);
}

void verbose_msg(const char *fmt, ...)
{
	va_list ap;

	if (!verbose)
		return;
	fflush(stdout);
	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void lib_errmsg(const char *file, int err)
{
	const char *what = img_strerror(err);
	const char *detail = img_last_error();
	size_t fl = file ? strlen(file) : 0;
	int dlen = INT_MAX, chain = 0;

	if (detail && file && !strncmp(detail, file, fl) && detail[fl] == ':' &&
	    detail[fl + 1] == ' ')
		detail += fl + 2;
	if (!detail || !*detail || !strcmp(detail, what) || strstr(what, detail))
		detail = NULL;
	/* The chain failed inside an operation (merge, rebase, snapshot open
	 * it themselves): the image is intact, so say it as open_image does,
	 * not "FILE: image is corrupt" for another file's corruption. */
	if (file && detail && img_last_chain_error() && !strncmp(detail, "backing chain: ", 15)) {
		what = "its backing chain cannot be opened";
		detail += 15;
		chain = 1;
	}
	/* "...: Invalid argument" repeats what we print first */
	if (detail) {
		size_t dl = strlen(detail), wl = strlen(strerror(-err));
		if (dl > wl + 2 && !strcmp(detail + dl - wl, strerror(-err)) &&
		    !strncmp(detail + dl - wl - 2, ": ", 2))
			dlen = (int)(dl - wl - 2);
	}
	{
		char msg[2048], ef[TEXT_ESCAPE_LEN(1024)];
		size_t n = 0;
		if (file)
			n = (size_t)snprintf(msg, sizeof(msg), "%s: %s",
					     text_escape(file, ef, sizeof(ef)), what);
		else
			n = (size_t)snprintf(msg, sizeof(msg), "%s", what);
		if (detail && n < sizeof(msg)) {
			char d[1024], ed[TEXT_ESCAPE_LEN(sizeof(d))];
			snprintf(d, sizeof(d), "%.*s", dlen, detail);
			n += (size_t)snprintf(msg + n, sizeof(msg) - n, chain ? ": %s" : " (%s)",
					      text_escape(d, ed, sizeof(ed)));
		}
		if (err == -EBUSY && busy_waited >= 0 && n < sizeof(msg)) {
			char w[96];
			snprintf(msg + n, sizeof(msg) - n, "%s", waited_text(busy_waited, w, sizeof(w)));
		}
		print_error_line(msg);
		set_cur_file(file);
		record_error(file, 1, err, msg);
	}
}

int usage_error(const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	print_error_line(msg);
	fprintf(stderr, "Try '%s --help' for more information.\n", progname);
	record_error(NULL, 0, 0, msg);   /* no errno (error.json) */
	return exit_usage;
}

int value_error(const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	print_error_line(msg);
	record_error(NULL, 0, 0, msg);
	return exit_usage;
}

void print_version(void)
{
	printf("%s (libimg) %s\n", progname, LIBIMG_VERSION_STRING);
}


/* The chain error of the last open_image (see exit_status). */
static int open_chain_err;

/* img_last_error() without a leading "FILE: " nor "backing chain: ". */
static const char *chain_detail(const char *file)
{
	const char *d = img_last_error();
	size_t fl = strlen(file);

	if (!strncmp(d, file, fl) && d[fl] == ':' && d[fl + 1] == ' ')
		d += fl + 2;
	if (!strncmp(d, "backing chain: ", 15))
		d += 15;
	return d;
}

int exit_status(int err)
{
	if (err == -EBUSY)
		return EXIT_BUSY;
	/* the last open (ours, or one inside an operation: merge, rebase,
	 * snapshot) failed in the image's chain, the image being intact */
	if (open_chain_err || (err && img_last_chain_error()))
		return EXIT_CHAIN;
	switch (-err) {
	case ENOENT:      return EXIT_NOTFOUND;
	case ENOSPC:
	case EDQUOT:      return EXIT_NOSPACE;
	case EUCLEAN:
	case EMEDIUMTYPE: return EXIT_CORRUPT;
	default:          return EXIT_ERROR;
	}
}

/* The errno's symbolic name ("EBUSY"), or NULL. */
static const char *errno_name(int e)
{
	return e > 0 ? strerrorname_np(e) : NULL;
}

/* Flushes f (the JSON document's stream) and records a failed write. */
static void note_json_write(FILE *f)
{
	errno = 0;
	if ((fflush(f) || ferror(f)) && !json_write_err)
		json_write_err = errno ? errno : EIO;
}

/* The JSON error object of libimg(7) for status: on stdout, and appended
 * to $LIBIMG_TEST_JSON_LOG as one line "TOOL<tab>JSON". */
static void print_error_object(int status)
{
	int e = last_err.set ? -last_err.err : 0;
	char *doc = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&doc, &len);

	if (!f)
		return;
	fprintf(f, "{\"schema\":1,\"error\":{\"status\":%d,\"errno\":", status);
	if (e > 0)
		fprintf(f, "%d,\"errno_name\":", e);
	else
		fputs("null,\"errno_name\":", f);
	if (errno_name(e))
		json_escape(f, errno_name(e));
	else
		fputs("null", f);
	fputs(",\"message\":", f);
	json_escape(f, last_err.set ? last_err.msg : "failed");
	fputs(",\"file\":", f);
	if (last_err.set && last_err.has_file)
		json_escape(f, last_err.file);
	else
		fputs("null", f);
	if (last_err.set && last_err.holder > 0)
		fprintf(f, ",\"holder_pid\":%d}}", (int)last_err.holder);
	else
		fputs(",\"holder_pid\":null}}", f);
	if (fclose(f) || !doc) {
		free(doc);
		return;
	}
	printf("%s\n", doc);
	note_json_write(stdout);
	json_test_log(doc, len);
	free(doc);
}

int tool_exit(int status)
{
	if (status == EXIT_ERROR && tool_exit_refine && last_err.set)
		status = exit_status(last_err.err);
	if (json_write_err && status == EXIT_OK) {
		errmsg("write error on standard output: %s (the JSON document was not "
		       "printed)", strerror(json_write_err));
		status = EXIT_ERROR;
	}
	if ((json || (json_asked && status == exit_usage)) && status != EXIT_OK &&
	    !json_doc_printed)
		print_error_object(status);
	return status;
}

/* ---- waiting for a lock ----------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int parse_wait(const char *s, int64_t *ms)
{
	uint64_t whole = 0, frac = 0, scale = 1;
	const char *p = s;

	if (!s || !is_digit(*p))
		return -EINVAL;
	for (; is_digit(*p); p++) {
		whole = whole * 10 + (uint64_t)(*p - '0');
		if (whole > 1000000000ull)          /* some 31 years: plenty */
			return -EINVAL;
	}
	if (*p == '.') {
		if (!is_digit(*++p))
			return -EINVAL;
		for (; is_digit(*p); p++)
			if (scale < 1000) {
				frac = frac * 10 + (uint64_t)(*p - '0');
				scale *= 10;
			}
	}
	if (*p)
		return -EINVAL;
	*ms = (int64_t)(whole * 1000 + frac * 1000 / scale);
	return 0;
}

int lock_wait_again(int64_t *start_ms, int64_t *waited_ms)
{
	int64_t now, left, nap = 50;
	struct timespec ts;

	busy_waited = -1;
	if (wait_ms < 0)
		return 0;
	now = now_ms();
	if (!*start_ms)
		*start_ms = now ? now : 1;
	*waited_ms = now - *start_ms;
	if (wait_ms != WAIT_FOREVER) {
		left = wait_ms - *waited_ms;
		if (left <= 0) {
			busy_waited = *waited_ms;   /* lib_errmsg says it */
			return 0;
		}
		if (left < nap)
			nap = left;
	}
	ts.tv_sec = 0;
	ts.tv_nsec = (long)nap * 1000000;
	nanosleep(&ts, NULL);
	return 1;
}

const char *waited_text(int64_t waited_ms, char *buf, size_t len)
{
	if (wait_ms < 0 || waited_ms < 0)
		snprintf(buf, len, "%s", "");
	else
		snprintf(buf, len, " (still locked after waiting %lld.%01lld s, --wait)",
			 (long long)(waited_ms / 1000), (long long)(waited_ms % 1000 / 100));
	return buf;
}

int64_t lock_gave_up_after(void)
{
	return busy_waited;
}

void note_holder(pid_t pid)
{
	if (last_err.set && last_err.err == -EBUSY && !last_err.holder)
		last_err.holder = pid;
}

int target_claim(const char *path, unsigned flags, struct img_target **out)
{
	int64_t start = 0, waited = -1;
	int r;

	while ((r = img_target_claim(path, flags, out)) == -EBUSY &&
	       lock_wait_again(&start, &waited))
		;
	return r;
}

void note_chain_error(void)
{
	open_chain_err = -ENOENT;
}

/* A file whose mode has no write bit is a protected image (a snapshot, a
 * base made read-only: FORMAT.md 3.2): no tool opens it for writing, root
 * included (whose open(2) would ignore the mode).  -EROFS with the message
 * printed, or 0. */
static int refuse_protected(const char *path, unsigned flags)
{
	struct stat st;
	char e[TEXT_ESCAPE_LEN(1024)];

	/* the library's rule (img_file_readonly); the mode for the message */
	if (!(flags & IMG_OPEN_RDWR) || img_file_readonly(path) != 1 || stat(path, &st))
		return 0;
	errmsg("%s: read-only (mode %04o): a protected image is not opened for writing (make "
	       "it writable first if you mean to change it)", text_escape(path, e, sizeof(e)),
	       (unsigned)(st.st_mode & 07777));
	return -EROFS;
}

int probe_image(const char *path)
{
	char ef[TEXT_ESCAPE_LEN(1024)];
	int r = img_probe(path);

	if (r > 0)
		return 0;
	if (r < 0) {
		lib_errmsg(path, r);
		return r;
	}
	errmsg_err(path, -EMEDIUMTYPE, "%s: not a libimg image", text_escape(path, ef, sizeof(ef)));
	return -EMEDIUMTYPE;
}

/* open_image and open_image_degraded: img_open with the messages.  degraded:
 * a chain failure opens the image alone, *chain_err and msg say why. */
static int open_with_messages(const char *path, unsigned flags, struct img **out, int degraded,
			      int *chain_err, char *msg, size_t len)
{
	int64_t start = 0, waited = -1;
	int r;

	open_chain_err = 0;
	set_cur_file(path);
	if (chain_err)
		*chain_err = 0;
	if ((r = probe_image(path)) < 0)
		return r;
	if ((r = refuse_protected(path, flags)))
		return r;
	while ((r = img_open(path, flags, out)) == -EBUSY && lock_wait_again(&start, &waited))
		;
	if (r < 0 && r != -EBUSY && img_last_chain_error() && degraded) {
		/* Describe the image alone; the caller reports the chain. */
		*chain_err = img_last_chain_error();
		if (msg)
			snprintf(msg, len, "%s", chain_detail(path));
		r = open_with_messages(path, flags | IMG_OPEN_NO_BACKING, out, 0, NULL, NULL, 0);
		if (r < 0)
			*chain_err = 0;
		return r;
	}
	if (r < 0 && r != -EBUSY && (open_chain_err = img_last_chain_error())) {
		/* The image is intact; what is under it is not usable. */
		char ef[TEXT_ESCAPE_LEN(1024)], ed[TEXT_ESCAPE_LEN(512)];
		errmsg_err(path, open_chain_err, "%s: its backing chain cannot be opened: %s",
			   text_escape(path, ef, sizeof(ef)),
			   text_escape(chain_detail(path), ed, sizeof(ed)));
	} else if (r < 0) {
		lib_errmsg(path, r);
		if (r == -EUCLEAN && !(flags & IMG_OPEN_CHECK))
			fprintf(stderr, "%s: %s: run 'imgcheck %s' for details\n",
				progname, path, path);
	} else if (verbose) {
		struct img_info in;
		if (img_info(*out, &in) == 0) {
			if (in.io_engine == IMG_IO_ENGINE_URING)
				verbose_msg("%s: I/O engine io_uring", path);
			else if (in.io_uring_error)
				verbose_msg("%s: I/O engine posix (io_uring refused by the kernel: %s)",
					    path, img_strerror(in.io_uring_error));
			else
				verbose_msg("%s: I/O engine posix", path);
		}
	}
	return r;
}

int open_image(const char *path, unsigned flags, struct img **out)
{
	return open_with_messages(path, flags, out, 0, NULL, NULL, 0);
}

int open_image_degraded(const char *path, unsigned flags, struct img **out, int *chain_err,
			char *msg, size_t len)
{
	return open_with_messages(path, flags, out, 1, chain_err, msg, len);
}

int close_image(const char *path, struct img *img)
{
	int r = img_close(img);

	if (r < 0)
		lib_errmsg(path, r);
	return r;
}

/* ---- option scanning -------------------------------------------------- */

/* What getopt would have said about the option it just refused. */
static void bad_option(int argc, char **argv, const char *optstring)
{
	const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "";
	char m[512];

	if (!strncmp(arg, "--", 2)) {
		if (!optopt)
			snprintf(m, sizeof(m), "unrecognized option '%s'", arg);
		else if (strchr(arg, '='))
			snprintf(m, sizeof(m), "option '%.*s' doesn't allow an argument",
				 (int)(strchr(arg, '=') - arg), arg);
		else
			snprintf(m, sizeof(m), "option '%s' requires an argument", arg);
	} else if (optopt > 0 && optopt < 256 && optopt != ':' && strchr(optstring, optopt)) {
		snprintf(m, sizeof(m), "option requires an argument -- '%c'", optopt);
	} else if (optopt > 0 && optopt < 256) {
		snprintf(m, sizeof(m), "invalid option -- '%c'", optopt);
	} else {
		snprintf(m, sizeof(m), "unrecognized option '%s'", arg);
	}
	print_error_line(m);
	record_error(NULL, 0, 0, m);
}

int tool_getopt(struct tool_getopt *g, int argc, char **argv, const char *optstring,
		const struct option *longopts)
{
	/* Our own copy of optstring with a leading '-': getopt returns
	 * operands in order (as 1) instead of permuting argv. */
	char os[64];
	int r;

	if (optind == 0)
		optind = 1;
	if (!g->operands_only && optind < argc && !strcmp(argv[optind], "--")) {
		g->operands_only = 1;
		optind++;
	}
	if (optind >= argc)
		return -1;
	if (g->operands_only ||
	    (argv[optind][0] == '-' && (is_digit(argv[optind][1]) || argv[optind][1] == '.'))) {
		optarg = argv[optind++];
		return 1;
	}
	snprintf(os, sizeof(os), "-%s", optstring);
	opterr = 0;   /* said below, and recorded for the JSON error object */
	r = getopt_long(argc, argv, os, longopts, NULL);
	if (r == '?' || r == ':')
		bad_option(argc, argv, optstring);
	if (r == OPT_WAIT) {
		if (!optarg)
			wait_ms = WAIT_FOREVER;
		else if (parse_wait(optarg, &wait_ms)) {
			errmsg_err(NULL, 0, "invalid --wait value '%s' (seconds, e.g. "
				   "--wait=10 or --wait=0.5)", optarg);
			return '?';
		}
		return tool_getopt(g, argc, argv, optstring, longopts);
	}
	if (r == OPT_BACKING_ANY) {
		backing_any = 1;
		backing_policy_set();
		return tool_getopt(g, argc, argv, optstring, longopts);
	}
	return r;
}

const char *tool_one_operand(int argc, char **argv, const char *optstring,
			     const struct option *longopts, int (*option)(int c, void *ctx),
			     void *ctx, void (*usage)(void), const char *what, int *status)
{
	static const struct option basic[] = {
		{ "quiet",   no_argument, NULL, 'q' },
		{ "help",    no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	struct tool_getopt g = { 0 };
	const char *arg = NULL;
	int c;

	while ((c = tool_getopt(&g, argc, argv, optstring, longopts ? longopts : basic)) != -1) {
		switch (c) {
		case 1:
			if (arg) {
				*status = usage_error("too many arguments");
				return NULL;
			}
			arg = optarg;
			set_cur_file(arg);
			break;
		case 'q': quiet = 1; break;
		case 'j': json = 1; break;
		case 'v': verbose = 1; break;
		case 'h': usage(); *status = EXIT_OK; return NULL;
		case 'V': print_version(); *status = EXIT_OK; return NULL;
		default:
			if (c == '?' || c == ':' || !option || option(c, ctx)) {
				*status = usage_error("bad usage");
				return NULL;
			}
		}
	}
	if (!arg)
		*status = usage_error("expected %s", what);
	return arg;
}

/* ---- JSON ------------------------------------------------------------- */

void json_escape(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	fputc('"', f);
	while (*p) {
		unsigned char c = *p;
		uint32_t cp;
		int n;

		switch (c) {
		case '"':  fputs("\\\"", f); p++; continue;
		case '\\': fputs("\\\\", f); p++; continue;
		case '\b': fputs("\\b", f); p++; continue;
		case '\f': fputs("\\f", f); p++; continue;
		case '\n': fputs("\\n", f); p++; continue;
		case '\r': fputs("\\r", f); p++; continue;
		case '\t': fputs("\\t", f); p++; continue;
		default: break;
		}
		if (c < 0x20 || c == 0x7f) {
			fprintf(f, "\\u%04x", c);
			p++;
			continue;
		}
		if (c == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
			/* a C1 control, valid UTF-8: escaped like C0 */
			fprintf(f, "\\u%04x", p[1]);
			p += 2;
			continue;
		}
		/* Pass valid UTF-8 through; show other bytes as U+0080..U+00FF
		 * so that the output is always valid JSON. */
		if ((n = utf8_char(p, &cp)) > 0) {
			fwrite(p, 1, (size_t)n, f);
			p += n;
		} else {
			fprintf(f, "\\u%04x", c);
			p++;
		}
	}
	fputc('"', f);
}

static void json_item(struct json_out *j, const char *key)
{
	int i;

	if (j->depth > 0) {
		fputs(j->has_items[j->depth] ? ",\n" : "\n", j->f);
		j->has_items[j->depth] = 1;
		for (i = 0; i < j->depth; i++)
			fputs("  ", j->f);
	}
	if (key) {
		json_escape(j->f, key);
		fputs(": ", j->f);
	}
}

void json_start(struct json_out *j, FILE *f)
{
	memset(j, 0, sizeof(*j));
	j->out = f;
	j->f = open_memstream(&j->buf, &j->len);
	if (!j->f)      /* no memory: straight out, as it is built */
		j->f = f;
}

static void json_open(struct json_out *j, const char *key, char c)
{
	json_item(j, key);
	fputc(c, j->f);
	if (j->depth < (int)sizeof(j->has_items) - 1)
		j->depth++;
	j->has_items[j->depth] = 0;
}

static void json_close(struct json_out *j, char c)
{
	int i, had = j->has_items[j->depth];

	if (j->depth > 0)
		j->depth--;
	if (had) {
		fputc('\n', j->f);
		for (i = 0; i < j->depth; i++)
			fputs("  ", j->f);
	}
	fputc(c, j->f);
}

void json_object_begin(struct json_out *j, const char *key)
{
	json_open(j, key, '{');
}

void json_doc_begin(struct json_out *j)
{
	json_object_begin(j, NULL);
	json_u64(j, "schema", JSON_SCHEMA_VERSION);
}

void json_object_end(struct json_out *j)
{
	json_close(j, '}');
}

void json_array_begin(struct json_out *j, const char *key)
{
	json_open(j, key, '[');
}

void json_array_end(struct json_out *j)
{
	json_close(j, ']');
}

void json_string(struct json_out *j, const char *key, const char *val)
{
	json_item(j, key);
	if (val)
		json_escape(j->f, val);
	else
		fputs("null", j->f);
}

void json_u64(struct json_out *j, const char *key, uint64_t v)
{
	json_item(j, key);
	fprintf(j->f, "%llu", (unsigned long long)v);
}

void json_bool(struct json_out *j, const char *key, int v)
{
	json_item(j, key);
	fputs(v ? "true" : "false", j->f);
}

void json_null(struct json_out *j, const char *key)
{
	json_item(j, key);
	fputs("null", j->f);
}

void json_test_log(const char *doc, size_t len)
{
	const char *path = getenv("LIBIMG_TEST_JSON_LOG");
	struct stat st;
	size_t pl, n = 0;
	char *line;
	int fd;

	if (!path || !*path)
		return;
	pl = strlen(progname);
	if (!(line = malloc(pl + len + 2)))
		return;
	memcpy(line, progname, pl);
	n = pl;
	line[n++] = '\t';
	/* strings hold no raw line breaks (json_escape): only the layout has */
	for (size_t i = 0; i < len; i++) {
		if (doc[i] == '\n') {
			while (i + 1 < len && doc[i + 1] == ' ')
				i++;
			continue;
		}
		line[n++] = doc[i];
	}
	line[n++] = '\n';
	/* one write of the whole line: tools running at once do not mix.
	 * Installed tools read this variable too (root's scripts): only a
	 * regular file of the caller's own, never through a symbolic link
	 * (a planted link to /etc/...), never waiting on a FIFO. */
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK |
		  O_NOCTTY, 0644);
	if (fd >= 0 && (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_uid != geteuid())) {
		close(fd);
		fd = -1;
	}
	if (fd >= 0) {
		if (write(fd, line, n) < 0) {
			/* a test tap: nothing to do about it here */
		}
		close(fd);
	}
	free(line);
}

void json_finish(struct json_out *j)
{
	json_doc_printed = 1;
	fputc('\n', j->f);
	if (j->f == j->out) {
		note_json_write(j->f);
		return;
	}
	fclose(j->f);
	j->f = NULL;
	fwrite(j->buf, 1, j->len, j->out);
	note_json_write(j->out);
	if (j->out == stdout)
		json_test_log(j->buf, j->len);
	free(j->buf);
	j->buf = NULL;
}

void json_discard(struct json_out *j)
{
	if (j->f && j->f != j->out)
		fclose(j->f);
	j->f = NULL;
	free(j->buf);
	j->buf = NULL;
}

/* ---- progress --------------------------------------------------------- */

void progress_init(struct progress *p, int want)
{
	memset(p, 0, sizeof(*p));
	p->enabled = want != 0;
	p->tty = p->enabled && isatty(STDERR_FILENO);
	p->last = PROGRESS_NONE;
	p->lo = 0;
	p->hi = 10000;
}

unsigned progress_value(unsigned lo, unsigned hi, uint64_t done, uint64_t total)
{
	if (hi < lo)
		hi = lo;
	if (total == 0 || done >= total)
		return hi;
	return lo + (unsigned)((unsigned __int128)done * (hi - lo) / total);
}

int progress_pipe_due(unsigned last, unsigned value)
{
	if (last == PROGRESS_NONE)
		return 1;
	if (value <= last)
		return 0;
	return value / 100 > last / 100;
}

int progress_line(char *buf, size_t len, unsigned value)
{
	return snprintf(buf, len, "    (%u.%02u/100%%)\n", value / 100, value % 100);
}

/* Shows value (hundredths): monotone, see common.h. */
static void progress_show(struct progress *p, unsigned value)
{
	enum { WIDTH = 40 };
	char line[64];

	if (value > 10000)
		value = 10000;
	if (p->last != PROGRESS_NONE && value < p->last)
		value = p->last;
	if (!p->tty) {
		if (!progress_pipe_due(p->last, value))
			return;
		p->last = value;
		progress_line(line, sizeof(line), value);
		fputs(line, stderr);
		fflush(stderr);
		return;
	}
	/* a terminal: redrawn when the tenth of a percent changes */
	if (p->shown && p->last != PROGRESS_NONE && value / 10 == p->last / 10)
		return;
	p->last = value;
	{
		char bar[WIDTH + 1];
		int fill = (int)(value * WIDTH / 10000);
		memset(bar, '#', (size_t)fill);
		memset(bar + fill, ' ', (size_t)(WIDTH - fill));
		bar[WIDTH] = 0;
		fprintf(stderr, "\r    [%s] %5.1f%%", bar, value / 100.0);
	}
	fflush(stderr);
	p->shown = 1;
}

void progress_update(struct progress *p, uint64_t done, uint64_t total)
{
	if (!p->enabled)
		return;
	progress_show(p, progress_value(p->lo, p->hi, done, total));
}

void progress_phase(struct progress *p, unsigned lo_pct, unsigned hi_pct, const char *step)
{
	if (!p->enabled)
		return;
	if (p->last != PROGRESS_NONE)
		progress_show(p, p->hi);   /* the phase before is done */
	p->lo = lo_pct > 100 ? 10000 : lo_pct * 100;
	p->hi = hi_pct > 100 ? 10000 : hi_pct * 100;
	if (p->hi < p->lo)
		p->hi = p->lo;
	if (step) {
		if (p->shown)
			fputc('\n', stderr);
		p->shown = 0;
		fprintf(stderr, "    %s...\n", step);
		fflush(stderr);
	}
	progress_show(p, p->lo);
}

void progress_finish(struct progress *p, int ok)
{
	if (!p->enabled)
		return;
	if (ok && p->last != 10000) {
		if (p->tty)
			p->shown = 1;   /* draw 100% even on a fresh line */
		progress_show(p, 10000);
	}
	if (p->shown)
		fputc('\n', stderr);
	fflush(stderr);
	p->shown = 0;
}

int progress_cb(void *arg, uint64_t done, uint64_t total)
{
	progress_update(arg, done, total);
	return 0;
}

/* ---- misc ------------------------------------------------------------- */

int buffer_is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t head;

	if (len == 0)
		return 1;
	/* Check a few bytes first (cheap early out for data), then let
	 * memcmp compare the buffer with itself shifted by 16 bytes. */
	head = len < 16 ? len : 16;
	for (size_t i = 0; i < head; i++)
		if (p[i])
			return 0;
	return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}
