/* SPDX-License-Identifier: MIT */
/* imgcheck: verify (and with --repair, fix) an image's metadata. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* Exit statuses, as qemu-img check. */
#define EXIT_CLEAN       0
#define EXIT_CHECK_FAIL  1
#define EXIT_CHECK_CORRUPT 2
#define EXIT_LEAKS       3
#define EXIT_INCOMPLETE  5   /* more problems than the check records: the
			      * result is partial and nothing was repaired
			      * (not a qemu-img status) */
#define EXIT_UNSUPPORTED 63
/* and EXIT_CHAIN (4, common.h): the image checked alone, its backing chain
 * cannot be opened; corruption of the image itself (2) wins over it, and it
 * wins over leaks (3) */

static const struct option longopts[] = {
	{ "repair",  no_argument, NULL, 'r' },
	{ "progress", no_argument, NULL, 'p' },
	{ "json",    no_argument, NULL, 'j' },
	{ "quiet",   no_argument, NULL, 'q' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help",    no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	BACKING_PATH_OPTION,
	WAIT_OPTION,
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE\n"
	       "Check a libimg image: both header copies, the checksum of every\n"
	       "metadata block, the log, BAT bounds, duplicate mappings, entries inside\n"
	       "metadata or past the end of the file, bytes past the virtual size,\n"
	       "leaked clusters, the file's tail.\n"
	       "\n"
	       "  -r, --repair   fix leaks and whatever else can be fixed without\n"
	       "                 guessing; report what could not be fixed\n"
	       "  -j, --json     print the result as a JSON object\n"
	       "  -p, --progress show progress on standard error\n"
	       BACKING_PATH_HELP
	       WAIT_HELP
	       "  -q, --quiet    print only errors\n"
	       "  -v, --verbose  say which I/O engine is used\n"
	       "  -h, --help     show this help\n"
	       "  -V, --version  show the version\n"
	       "\n"
	       "Exit status (after --repair: of what is left), as qemu-img check:\n"
	       "  0 clean, 1 the check could not run (also: usage, not found, not an\n"
	       "  image), 2 corrupt, 3 leaked clusters only, 4 checked alone: its backing\n"
	       "  chain cannot be opened, 5 incomplete (too many problems to record;\n"
	       "  nothing repaired), 63 unsupported feature, 75 in use.\n"
	       "See imgcheck(1), libimg(7).\n", progname);
}

struct problem {
	enum img_check_severity sev;
	int fixed;
	char *msg;
};

struct problems {
	struct problem *v;
	size_t n, cap;
	int oom;
};

static const char *sev_name(enum img_check_severity s)
{
	switch (s) {
	case IMG_CHECK_CORRUPT: return "corrupt";
	case IMG_CHECK_LEAK: return "leak";
	default: return "info";
	}
}

static void report(void *arg, enum img_check_severity sev, int fixed, const char *msg)
{
	struct problems *ps = arg;

	if (!json) {
		char e[TEXT_ESCAPE_LEN(1024)];
		/* the library's messages may quote the backing reference */
		if (!quiet || sev == IMG_CHECK_CORRUPT)
			printf("%s: %s%s\n", sev_name(sev), text_escape(msg, e, sizeof(e)),
			       fixed ? " (repaired)" : "");
		return;
	}
	if (ps->n == ps->cap) {
		size_t cap = ps->cap ? ps->cap * 2 : 16;
		struct problem *v = realloc(ps->v, cap * sizeof(*v));
		if (!v) {
			ps->oom = 1;
			return;
		}
		ps->v = v;
		ps->cap = cap;
	}
	ps->v[ps->n].sev = sev;
	ps->v[ps->n].fixed = fixed;
	ps->v[ps->n].msg = strdup(msg ? msg : "");
	if (!ps->v[ps->n].msg) {
		ps->oom = 1;
		return;
	}
	ps->n++;
}

static void print_json(const char *file, const struct img_check_result *res, int repair,
		       const char *status, const struct problems *ps, const char *chain_error)
{
	struct json_out j;

	json_start(&j, stdout);
	json_doc_begin(&j);
	json_string(&j, "filename", file);
	json_string(&j, "format", "libimg");
	json_string(&j, "status", status);
	json_u64(&j, "check_errors", 0);
	json_u64(&j, "corruptions", res->corruptions);
	json_u64(&j, "corruptions_fixed", res->corruptions_fixed);
	json_u64(&j, "leaks", res->leaks);
	json_u64(&j, "leaks_fixed", res->leaks_fixed);
	json_u64(&j, "allocated_clusters", res->allocated_clusters);
	json_u64(&j, "tail_bytes", res->tail_bytes);
	json_u64(&j, "incomplete", res->incomplete);
	json_bool(&j, "repair", repair);
	json_string(&j, "backing_chain_error", chain_error);
	json_array_begin(&j, "problems");
	for (size_t i = 0; i < ps->n; i++) {
		json_object_begin(&j, NULL);
		json_string(&j, "severity", sev_name(ps->v[i].sev));
		json_bool(&j, "fixed", ps->v[i].fixed);
		json_string(&j, "message", ps->v[i].msg);
		json_object_end(&j);
	}
	if (chain_error) {
		json_object_begin(&j, NULL);
		json_string(&j, "severity", "backing-chain");
		json_bool(&j, "fixed", 0);
		json_string(&j, "message", chain_error);
		json_object_end(&j);
	}
	json_array_end(&j);
	json_object_end(&j);
	json_finish(&j);
}

static void print_human(const struct img_check_result *res, int repair, const char *chain_error)
{
	uint64_t corrupt = res->corruptions - res->corruptions_fixed;
	uint64_t leaks = res->leaks - res->leaks_fixed;
	char b[64];

	if (repair && (res->corruptions_fixed || res->leaks_fixed))
		printf("The following inconsistencies were found and repaired:\n"
		       "    %llu leaked clusters\n    %llu corruptions\n\n",
		       (unsigned long long)res->leaks_fixed,
		       (unsigned long long)res->corruptions_fixed);
	if (corrupt)
		printf("%llu errors were found on the image.\n"
		       "Data may be corrupted, or further writes to the image may corrupt it.\n",
		       (unsigned long long)corrupt);
	if (leaks)
		printf("%llu leaked clusters were found on the image.\n"
		       "This means waste of disk space, but no harm to data.\n",
		       (unsigned long long)leaks);
	if (res->incomplete)
		printf("The check is incomplete: %llu more problems were found than it records.\n"
		       "%s", (unsigned long long)res->incomplete,
		       repair ? "Nothing was repaired.\n" : "");
	else if (!corrupt && !leaks)
		printf("No errors were found on the image.\n");
	if (chain_error) {
		char e[TEXT_ESCAPE_LEN(512)];
		printf("Its backing chain cannot be opened: %s\n"
		       "The image itself was checked without it; what it reads from the\n"
		       "chain was not.\n", text_escape(chain_error, e, sizeof(e)));
	}
	printf("%llu allocated clusters\n", (unsigned long long)res->allocated_clusters);
	/* (the tail is measured before a repair, which may have trimmed it) */
	if (res->tail_bytes && !repair)
		printf("%s past the last used cluster (compact trims them)\n",
		       human_size_exact(res->tail_bytes, b, sizeof(b)));
}

struct check_cmdline {
	int repair, progress;
};

static int check_option(int c, void *arg)
{
	struct check_cmdline *cl = arg;

	if (c == 'r')
		cl->repair = 1;
	else if (c == 'p')
		cl->progress = 1;
	else
		return -1;
	return 0;
}

static int run(int argc, char **argv)
{
	struct img_check_opts opts = { 0 };
	struct img_check_result res;
	struct problems ps = { 0 };
	const char *file = NULL, *status;
	struct img *img;
	unsigned flags = IMG_OPEN_CHECK;
	char chain_msg[512];
	int r, repair, ret, chain_err;
	struct check_cmdline cl = { 0, 0 };
	struct progress pr;

	tool_init(argc, argv);
	exit_usage = EXIT_CHECK_FAIL;   /* qemu-img's 2 means corrupt here */
	tool_exit_refine = 0;           /* its statuses are its own */
	if (!(file = tool_one_operand(argc, argv, "rpjqhVv", longopts, check_option, &cl, usage,
				      "FILE", &ret)))
		return ret;
	repair = cl.repair;
	if (repair)
		flags |= IMG_OPEN_RDWR;

	/* -p: the open reads and verifies all the metadata (not measured: a
	 * step), then the check's own walk is measured */
	progress_init(&pr, cl.progress && !quiet);
	progress_phase(&pr, 0, 50, "reading and verifying the metadata");
	/* A base missing or replaced is not corruption: the image is checked
	 * alone and the chain reported (exit 4). */
	r = open_image_degraded(file, flags | IMG_OPEN_IO_URING, &img, &chain_err, chain_msg,
				sizeof(chain_msg));
	if (r < 0)
		progress_finish(&pr, 0);
	if (r == -EOPNOTSUPP)
		return EXIT_UNSUPPORTED;
	if (r == -EUCLEAN)
		return EXIT_CHECK_CORRUPT;   /* too damaged to open even for checking */
	if (r == -EBUSY)
		return EXIT_BUSY;
	if (r < 0)
		return EXIT_CHECK_FAIL;

	opts.flags = repair ? IMG_CHECK_REPAIR : 0;
	opts.report = report;
	opts.report_arg = &ps;
	progress_phase(&pr, 50, 100, "checking the block table, leaks and the file's tail");
	if (pr.enabled) {
		opts.progress = progress_cb;
		opts.progress_arg = &pr;
	}
	memset(&res, 0, sizeof(res));
	r = img_check(img, &opts, &res);
	progress_finish(&pr, r >= 0);
	if (r < 0) {
		lib_errmsg(file, r);
		img_close(img);
		ret = r == -EOPNOTSUPP ? EXIT_UNSUPPORTED : EXIT_CHECK_FAIL;
		goto out;
	}
	if (close_image(file, img) < 0) {
		ret = EXIT_CHECK_FAIL;
		goto out;
	}
	if (ps.oom) {
		errmsg("out of memory");
		ret = EXIT_CHECK_FAIL;
		goto out;
	}
	if (res.corruptions_fixed > res.corruptions)
		res.corruptions_fixed = res.corruptions;
	if (res.leaks_fixed > res.leaks)
		res.leaks_fixed = res.leaks;
	if (res.incomplete) {
		ret = EXIT_INCOMPLETE;
		status = "incomplete";
	} else if (res.corruptions > res.corruptions_fixed) {
		ret = EXIT_CHECK_CORRUPT;
		status = "corrupt";
	} else if (chain_err) {
		ret = EXIT_CHAIN;
		status = "backing-chain";
	} else if (res.leaks > res.leaks_fixed) {
		ret = EXIT_LEAKS;
		status = "leaks";
	} else {
		ret = EXIT_CLEAN;
		status = "clean";
	}
	if (json)
		print_json(file, &res, repair, status, &ps, chain_err ? chain_msg : NULL);
	else if (!quiet)
		print_human(&res, repair, chain_err ? chain_msg : NULL);
	if (chain_err) {   /* an error: on standard error too, even with -q */
		char e[TEXT_ESCAPE_LEN(512)];
		errmsg("%s: its backing chain cannot be opened: %s", file,
		       text_escape(chain_msg, e, sizeof(e)));
	}
out:
	for (size_t i = 0; i < ps.n; i++)
		free(ps.v[i].msg);
	free(ps.v);
	return ret;
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
