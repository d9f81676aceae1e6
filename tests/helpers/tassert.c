/* SPDX-License-Identifier: MIT */
/* The sub-test runner and the failure reports of tassert.h. */
#include <fnmatch.h>
#include <setjmp.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "tassert.h"

enum { T_PASS, T_FAILED, T_SKIPPED };

static unsigned long failures;  /* T_CHECK and T_ERROR, whole program */
static jmp_buf *case_jmp;       /* set while a sub-test runs */
static pid_t case_pid;          /* the process running it (not a forked child) */
static char skip_why[200];

unsigned long t_failures(void)
{
	return failures;
}

static void report(const char *file, int line, const char *detail, const char *fmt, va_list ap)
{
	fflush(stdout);
	fprintf(stderr, "%s:%d: ", file, line);
	vfprintf(stderr, fmt, ap);
	if (detail && *detail)
		fprintf(stderr, " (%s)", detail);
	fputc('\n', stderr);
}

static int in_case(void)
{
	return case_jmp && getpid() == case_pid;
}

void t_error_at(const char *file, int line, const char *detail, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	report(file, line, detail, fmt, ap);
	va_end(ap);
	failures++;
}

void t_fail_at(const char *file, int line, const char *detail, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	report(file, line, detail, fmt, ap);
	va_end(ap);
	if (in_case())
		longjmp(*case_jmp, 1 + T_FAILED);
	exit(1);
}

void t_skip(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(skip_why, sizeof(skip_why), fmt, ap);
	va_end(ap);
	if (in_case())
		longjmp(*case_jmp, 1 + T_SKIPPED);
	printf("%s\n", skip_why);
	exit(T_SKIP_STATUS);
}

static int usage(const char *prog)
{
	fprintf(stderr, "usage: %s [-l] [-t PATTERN]...\n"
		"  -l          list the sub-tests\n"
		"  -t PATTERN  run only the sub-tests whose name matches (fnmatch; also T_ONLY)\n",
		prog);
	return 2;
}

static int selected(const char *name, char **pat, int npat)
{
	if (!npat)
		return 1;
	for (int i = 0; i < npat; i++)
		if (!fnmatch(pat[i], name, 0))
			return 1;
	return 0;
}

/* Runs one case; its result.  No local changes between setjmp and a
 * longjmp, so none needs to be volatile. */
static int run_case(const struct t_case *c)
{
	jmp_buf jb;
	unsigned long before = failures;
	int r;

	skip_why[0] = 0;
	case_pid = getpid();
	case_jmp = &jb;
	switch (setjmp(jb)) {
	case 0:
		c->fn();
		r = failures != before ? T_FAILED : T_PASS;
		break;
	case 1 + T_SKIPPED:
		r = T_SKIPPED;
		break;
	default:
		r = T_FAILED;
		break;
	}
	case_jmp = NULL;
	fflush(stderr);
	return r;
}

int t_main(int argc, char **argv, const struct t_case *cases, size_t n)
{
	char *pat[64];
	const char *env = getenv("T_ONLY");
	int npat = 0, list = 0, opt;
	unsigned long nsel = 0, k = 0, passed = 0, failed = 0, skipped = 0;

	while ((opt = getopt(argc, argv, "lt:")) != -1) {
		if (opt == 'l')
			list = 1;
		else if (opt == 't' && npat < 64)
			pat[npat++] = optarg;
		else
			return usage(argv[0]);
	}
	if (optind < argc)
		return usage(argv[0]);
	if (env && *env && npat < 64)
		pat[npat++] = (char *)env;
	for (size_t i = 0; i < n; i++) {
		if (list)
			printf("%s\n", cases[i].name);
		nsel += selected(cases[i].name, pat, npat);
	}
	if (list)
		return 0;
	if (!nsel) {
		fprintf(stderr, "%s: no sub-test matches (-l lists them)\n", argv[0]);
		return 2;
	}
	/* One line at a time, in order with stderr in a shared log. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("1..%lu\n", nsel);
	for (size_t i = 0; i < n; i++) {
		int r;

		if (!selected(cases[i].name, pat, npat))
			continue;
		r = run_case(&cases[i]);
		k++;
		if (r == T_PASS) {
			passed++;
			printf("ok %lu - %s\n", k, cases[i].name);
		} else if (r == T_SKIPPED) {
			skipped++;
			printf("ok %lu - %s # SKIP %s\n", k, cases[i].name, skip_why);
		} else {
			failed++;
			printf("not ok %lu - %s\n", k, cases[i].name);
		}
	}
	printf("SUMMARY: %lu sub-tests, %lu passed, %lu failed, %lu skipped\n", nsel, passed,
	       failed, skipped);
	if (failed)
		return 1;
	if (passed)
		return 0;
	printf("%s\n", skip_why);   /* the reason tests/run.sh shows */
	return T_SKIP_STATUS;
}
