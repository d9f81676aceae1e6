/* SPDX-License-Identifier: MIT */
/*
 * What every command-line tool shares: size parsing, messages and exit
 * statuses, option scanning, human sizes, the backing-path policy, opening
 * and closing images (with their messages and lock waits), hand-written
 * JSON and the progress bar.
 *
 * Nothing here knows the image format; the tools talk to images only
 * through libimg.h.  The parse_* functions never print and never exit
 * (the fuzz harness calls them directly).
 */
#ifndef TOOLS_COMMON_H
#define TOOLS_COMMON_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include "libimg.h"

/* Exit statuses shared by every tool: the table of libimg(7), the same
 * code for the same condition everywhere.  imgcheck keeps qemu-img's
 * codes (0, 1, 2 corrupt, 3 leaks, 63, and its 5 incomplete) and adds
 * only EXIT_CHAIN and EXIT_BUSY.  Documented in every man page's EXIT
 * STATUS and --help. */
#define EXIT_OK         0
#define EXIT_ERROR      1   /* any other failure */
#define EXIT_USAGE      2   /* bad command line */
#define EXIT_CORRUPT    3   /* corrupt, not a libimg image, malformed input */
#define EXIT_CHAIN      4   /* the image itself is intact, but its backing
                             * chain is missing or not the one it was made
                             * over */
#define EXIT_NOTFOUND   5   /* a named file, image, device or mount does not
                             * exist (ENOENT) */
#define EXIT_NOTMOUNTED 6   /* imgumount, imgdetach, imgctl: not mounted/attached/served */
#define EXIT_PARTIAL    7   /* some steps done, the rest not; the message
                             * gives the command that completes it */
#define EXIT_NOSPACE    8   /* the host is out of space (ENOSPC, EDQUOT) */
#define EXIT_BUSY       75  /* in use: locked by another process (sysexits'
                             * EX_TEMPFAIL: retrying later, or --wait, may
                             * succeed) */

/* The exit status for a libimg error (-errno): EXIT_BUSY for -EBUSY;
 * EXIT_CHAIN when the last open_image failed only because the image's
 * backing chain did not open (a base missing, replaced, refused:
 * img_last_chain_error; open_image says so in its message); EXIT_NOTFOUND
 * for -ENOENT; EXIT_NOSPACE for -ENOSPC and -EDQUOT; EXIT_CORRUPT for
 * -EUCLEAN (corrupt) and -EMEDIUMTYPE (not a libimg image); else
 * EXIT_ERROR.  The one place errors map to statuses. */
int exit_status(int err);

/* Every tool's main ends with "return tool_exit(status)": a plain
 * EXIT_ERROR becomes exit_status() of the first error printed by errmsg_err,
 * lib_errmsg, open_image... (so that one condition has one status in every
 * tool); with --json and a failure for which no JSON document was printed
 * (json_finish), stdout gets the JSON error object (libimg(7)), also
 * appended to $LIBIMG_TEST_JSON_LOG.  Returns the status to exit with. */
int tool_exit(int status);

/* The next exit_status() is EXIT_CHAIN: for a tool whose child process
 * (imgserve started by imgmount, imgattach) exited with it. */
void note_chain_error(void);

/* The status usage_error returns: EXIT_USAGE; imgcheck sets EXIT_ERROR
 * (qemu-img's 2 means corrupt there).  tool_exit refines EXIT_ERROR only
 * when tool_exit_refine is set (imgcheck clears it: its statuses are its
 * own). */
extern int exit_usage;
extern int tool_exit_refine;

/* ---- waiting for a lock (--wait[=SECONDS]) ----------------------------- */

/* Every tool that takes a lock lists WAIT_OPTION in its long options;
 * tool_getopt() takes it itself and never returns it (a bad value: a
 * message and '?').  Then open_image, open_image_degraded, target_claim
 * and the daemon start of imgmount/imgattach wait, polling, while the
 * file is locked by another process (-EBUSY only), up to the deadline.
 * wait_ms: -1 no --wait (refuse at once), WAIT_FOREVER without SECONDS. */
#define OPT_WAIT 0x5741
#define WAIT_OPTION { "wait", optional_argument, NULL, OPT_WAIT }
#define WAIT_HELP \
	"      --wait[=SECS]  wait for a lock another process holds (SECS at most)\n"
#define WAIT_FOREVER INT64_MAX
extern int64_t wait_ms;
/* Parses SECONDS (digits, optionally a decimal fraction) into *ms.  0 or
 * -EINVAL.  Never prints. */
int parse_wait(const char *s, int64_t *ms);
/* One round of a wait for a lock: returns 1 after sleeping a short poll
 * interval when --wait allows waiting longer since *start_ms (0: now is
 * the start; set by the first call), else 0 (and, when --wait was given,
 * *waited_ms says how long it waited). */
int lock_wait_again(int64_t *start_ms, int64_t *waited_ms);
/* " (waited N s for it)" when waited_ms >= 0 and --wait was given, else
 * "" into buf (at least 64 bytes). */
const char *waited_text(int64_t waited_ms, char *buf, size_t len);
/* How long the last wait for a lock waited before it gave up (ms), or -1
 * when it did not give up (or there was no --wait). */
int64_t lock_gave_up_after(void);
/* The error just printed (-EBUSY) names pid as the holder of the lock
 * (holder_pid of the JSON error object), e.g. the daemon serving it. */
void note_holder(pid_t pid);
/* img_target_claim() that waits as --wait says; prints nothing. */
int target_claim(const char *path, unsigned flags, struct img_target **out);

/* The only globals: set by tool_init() and the option loops. */
extern const char *progname;
extern int quiet;
extern int json;
extern int verbose;    /* -v, --verbose: say how the work is done */

/* ---- sizes ------------------------------------------------------------ */

/* Parses a byte count: plain digits, or digits with a binary suffix
 * K M G T P E (any case, optionally followed by "i" or "iB"; "B" alone
 * means bytes), and decimal fractions that resolve to whole bytes
 * ("1.5G", "0.5K").  Rejects signs, spaces, garbage and overflow.
 * Returns 0 and sets *out, or -EINVAL (*out untouched). */
int parse_size(const char *s, uint64_t *out);

/* A new size for a resize: absolute ("20G"), or relative to current
 * ("+5G", "-512M").  Overflow past 2^64-1 or underflow below 0 is
 * -EINVAL.  Returns 0 and sets *out, or -EINVAL. */
int parse_new_size(const char *s, uint64_t current, uint64_t *out);

/* "10 GiB", "1.5 MiB", "512 bytes" into buf (at least 32 bytes). */
const char *human_size(uint64_t bytes, char *buf, size_t len);
/* "10 GiB (10737418240 bytes)" into buf (at least 64 bytes). */
const char *human_size_exact(uint64_t bytes, char *buf, size_t len);

/* ---- messages --------------------------------------------------------- */

/* Sets progname from argv[0] (basename) and points argv[0] at it, so that
 * getopt's own messages use the short name too. */
void tool_init(int argc, char **argv);

/* A string read from an image (a backing reference, the name of a backing
 * file, a filesystem label, a library message that quotes them) made safe
 * for a terminal: control bytes (C0, DEL and the C1 range U+0080..U+009F)
 * and bytes that are not valid UTF-8 become \xNN, a backslash becomes \\;
 * other valid UTF-8 is kept.  Into buf (len >= 8 bytes; TEXT_ESCAPE_LEN(n)
 * holds any string of n bytes); what does not fit is cut at a whole
 * character and marked "...".  Returns buf.  JSON output is escaped by
 * json_escape instead. */
#define TEXT_ESCAPE_LEN(n) (4 * (size_t)(n) + 1)
const char *text_escape(const char *s, char *buf, size_t len);

/* "PROG: message\n" on stderr. */
void errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "PROG: FILE: <img_strerror(err)>[: detail]\n": the detail is
 * img_last_error() without a leading "FILE: " and only when it adds
 * something.  FILE and the detail go through text_escape (the library's
 * messages quote backing references read from images). */
void lib_errmsg(const char *file, int err);
/* "PROG: message\n" on stderr, only with --verbose. */
void verbose_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* errmsg that also records err (-errno, 0 none) and file (may be NULL) as
 * the error tool_exit maps to a status and puts in the JSON error object
 * (errmsg records 0 and the file of the last open_image/lib_errmsg). */
void errmsg_err(const char *file, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Forgets the error recorded so far: the next one printed is the one
 * tool_exit reports (a summary that says more than its cause). */
void error_forget(void);
/* Prints "PROG: message" then the usage hint; returns exit_usage
 * (EXIT_USAGE). */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A bad value on the command line (size syntax): "PROG: message" without
 * the usage hint; returns exit_usage (EXIT_USAGE). */
int value_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "PROG (libimg) VERSION". */
void print_version(void);

/* img_probe() with the message: 0 when path is a libimg image, else
 * -EMEDIUMTYPE ("not a libimg image") or -errno, printed and recorded. */
int probe_image(const char *path);
/* Opens an image, printing the error.  A file that is not a libimg image
 * at all gets "not a libimg image" (and -EINVAL).  With --verbose it says
 * which I/O engine the library uses (and why not io_uring when it was
 * asked for and refused).  Returns 0 or -errno. */
int open_image(const char *path, unsigned flags, struct img **out);
/* open_image for the tools that describe an image without its chain
 * (imginfo, imgcheck, imgsnap list): when only the backing chain fails
 * (not with -EBUSY), the image is opened alone (IMG_OPEN_NO_BACKING), 0 is
 * returned, *chain_err gets the chain's -errno and msg (len bytes, may be
 * NULL) the library's message without the leading "FILE: "; nothing is
 * printed about the chain.  Otherwise as open_image, *chain_err 0. */
int open_image_degraded(const char *path, unsigned flags, struct img **out, int *chain_err,
			char *msg, size_t len);
/* Closes, printing an error if the close failed.  0 or -errno. */
int close_image(const char *path, struct img *img);

/* ---- option scanning -------------------------------------------------- */

/* getopt_long() that hands back operands in order (returns 1 with optarg
 * set) and takes an argument that looks like a negative number ("-5G") as
 * an operand, so that "shrinkimg disk.img -5G" works.  Everything after
 * "--" is an operand.  g starts zeroed.  Returns -1 at the end. */
struct tool_getopt {
	int operands_only;   /* "--" seen */
};

int tool_getopt(struct tool_getopt *g, int argc, char **argv, const char *optstring,
		const struct option *longopts);

/* The whole command line of a tool that takes exactly one operand (what
 * names it in the usage error).  optstring and longopts as for tool_getopt
 * (NULL longopts: --quiet, --help, --version only).  -q, -j (--json), -v
 * (--verbose), -h and -V are handled here; any other option goes to
 * option(c, ctx), which returns 0 when it took it.  Returns the operand, or
 * NULL with *status set: EXIT_OK after --help or --version, the usage
 * error's status otherwise. */
const char *tool_one_operand(int argc, char **argv, const char *optstring,
			     const struct option *longopts, int (*option)(int c, void *ctx),
			     void *ctx, void (*usage)(void), const char *what, int *status);

/* ---- backing-path policy (libimg.h img_set_backing_policy) ------------- */

/* Every tool that opens images lists BACKING_PATH_OPTION in its long
 * options; tool_getopt() takes it itself ("any backing path", the policy
 * flag IMG_BACKING_POLICY_ANY) and never returns it.  tool_init() loads
 * the allowed directories: the file BACKING_DIRS_FILE (or the one
 * LIBIMG_BACKING_DIRS_FILE names) and LIBIMG_BACKING_DIRS. */
#define OPT_BACKING_ANY 0x4241
#define BACKING_PATH_OPTION { "allow-backing-path", no_argument, NULL, OPT_BACKING_ANY }
#define BACKING_PATH_HELP \
	"      --allow-backing-path  follow backing files anywhere (unsafe)\n"
#define BACKING_DIRS_FILE "/etc/libimg/backing-dirs"

/* --allow-backing-path was given. */
extern int backing_any;

struct backing_dirs {
	char **dir;
	size_t n;
};

/* Appends the directories listed in text to d.  sep ':' (the value of
 * LIBIMG_BACKING_DIRS: empty fields ignored) or '\n' (the file: one per
 * line, blanks around it, empty lines and lines starting with '#'
 * ignored).  Entries that are not absolute paths are skipped; the number
 * of the first one (field or line, from 1) goes to *first_bad (0: none).
 * Returns the number skipped, or -ENOMEM.  Never prints. */
int backing_dirs_parse(struct backing_dirs *d, const char *text, char sep, unsigned *first_bad);
void backing_dirs_free(struct backing_dirs *d);

/* ---- JSON, printed by hand -------------------------------------------- */

/* The version of the JSON documents the tools print on stdout: the value
 * of the "schema" key every top-level object starts with (bumped when a
 * key changes meaning or disappears; tools/schema/TOOL.json describe it). */
#define JSON_SCHEMA_VERSION 1

struct json_out {
	FILE *f;             /* where the items go: a memory buffer, or out */
	FILE *out;           /* where json_finish prints the document */
	char *buf;           /* the memory buffer (open_memstream) */
	size_t len;
	int depth;
	unsigned char has_items[16];   /* per nesting level */
};

/* The document is built in memory and printed whole by json_finish: a tool
 * that fails half way prints no half document (json_discard drops it). */
void json_start(struct json_out *j, FILE *f);
/* key is NULL inside arrays and for the top level value. */
void json_object_begin(struct json_out *j, const char *key);
/* A top-level object (or one in a top-level array): opens it and writes
 * its first key, "schema": JSON_SCHEMA_VERSION. */
void json_doc_begin(struct json_out *j);
void json_object_end(struct json_out *j);
void json_array_begin(struct json_out *j, const char *key);
void json_array_end(struct json_out *j);
void json_string(struct json_out *j, const char *key, const char *val); /* NULL: null */
void json_u64(struct json_out *j, const char *key, uint64_t v);
void json_bool(struct json_out *j, const char *key, int v);
void json_null(struct json_out *j, const char *key);
/* Ends the document with a newline and prints it.  When it goes to stdout
 * and the environment variable LIBIMG_TEST_JSON_LOG names a file, the
 * document is also appended to that file as one line, "PROG\tDOCUMENT"
 * (the tests validate every such line against tools/schema/PROG.json). */
void json_finish(struct json_out *j);
/* Drops a document json_finish will not print. */
void json_discard(struct json_out *j);
/* Appends "PROG\t" and the JSON text doc (its line breaks and indentation
 * removed) to the file LIBIMG_TEST_JSON_LOG names, if any. */
void json_test_log(const char *doc, size_t len);
/* Writes s as a JSON string literal (quotes included). */
void json_escape(FILE *f, const char *s);

/* ---- progress --------------------------------------------------------- */

/*
 * -p/--progress, always on standard error (standard output stays clean for
 * JSON).  On a terminal one line is redrawn (a bar).  Elsewhere (a pipe, a
 * file) lines as qemu-img -p prints them, "    (12.00/100%)": the first at
 * 0, then at most one per whole percent, never a smaller value than the
 * last, and "    (100.00/100%)" when the operation succeeded.  An operation
 * of several steps gives each a share of the whole (progress_phase); a
 * step whose work is not measured (an external program) prints its name,
 * "    resizing the ext4 filesystem (resize2fs)...", and reaches its share's
 * end when the next phase starts.
 */
struct progress {
	int enabled;         /* -p given (and not -q) */
	int tty;             /* stderr is a terminal: a redrawn bar */
	int shown;           /* tty: a bar is drawn on the current line */
	unsigned last;       /* last value shown, in hundredths of a percent;
	                      * PROGRESS_NONE before the first */
	unsigned lo, hi;     /* the current phase's share, hundredths */
};
#define PROGRESS_NONE (~0u)

/* enabled when want (-p without -q); the phase is the whole, 0-100%. */
void progress_init(struct progress *p, int want);
/* done of total in the current phase. */
void progress_update(struct progress *p, uint64_t done, uint64_t total);
/* Ends the current phase at its share's end, then starts one from lo_pct
 * to hi_pct (whole percents); step (may be NULL) is printed as its name. */
void progress_phase(struct progress *p, unsigned lo_pct, unsigned hi_pct, const char *step);
/* ok: shows 100% (once) and ends the line; else ends the line only. */
void progress_finish(struct progress *p, int ok);
/* An img_progress_fn for library operations; arg is a struct progress. */
int progress_cb(void *arg, uint64_t done, uint64_t total);
/* The value (hundredths of a percent) done of total means in a phase from
 * lo to hi (hundredths); total 0 or done >= total: hi. */
unsigned progress_value(unsigned lo, unsigned hi, uint64_t done, uint64_t total);
/* Whether a line for value is printed on a pipe after last
 * (PROGRESS_NONE: none yet): the first, a new whole percent, or 100%. */
int progress_pipe_due(unsigned last, unsigned value);
/* The pipe line for value, "    (12.34/100%)\n"; its length. */
int progress_line(char *buf, size_t len, unsigned value);

/* ---- misc ------------------------------------------------------------- */

/* 1 if len bytes at buf are all zero.  The tools' one zero test, for what
 * they write outside an image (imgconvert -O raw skips zero granules);
 * data written into an image goes through img_pwrite_sparse, which skips
 * zero clusters with the library's own test. */
int buffer_is_zero(const void *buf, size_t len);

#endif /* TOOLS_COMMON_H */
