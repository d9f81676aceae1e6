/* SPDX-License-Identifier: MIT */
/* Assertions and named sub-tests for the C test programs (tests/unit,
 * tests/crash).  Exit status: 0 pass, 1 fail, 77 skip (tests/run.sh).
 *
 * Assertions print "FILE:LINE: what" on stderr, with img_last_error() in
 * parentheses when libimg.h was included before this header:
 *   T_CHECK(cond)       a failure is counted and the test goes on;
 *   T_ERROR(fmt, ...)   the same with a message of its own;
 *   T_ASSERT(cond), T_EQ(expr, want), T_OK(expr), T_FAIL(fmt, ...)
 *                       a failure ends the sub-test (outside one: exit 1);
 *   T_SKIP(fmt, ...)    ends the sub-test as skipped (outside one: exit 77).
 *
 * Sub-tests: a program lists its cases and hands them to t_main,
 *   static const struct t_case cases[] = { T_CASE(grow_beyond_bat), ... };
 *   int main(int argc, char **argv) { return T_MAIN(argc, argv, cases); }
 * which runs them in order and prints, TAP-like, "1..N", then "ok N - name",
 * "not ok N - name" or "ok N - name # SKIP why" for each, and closes with
 * "SUMMARY: N sub-tests, P passed, F failed, S skipped" (echoed by
 * tests/run.sh).  Exit 1 if one failed, 77 if all were skipped, else 0.
 * Options: -l lists the names; -t PATTERN (repeatable; a shell pattern,
 * fnmatch) runs only the sub-tests it matches; the environment variable
 * T_ONLY=PATTERN does the same.  A sub-test sets up what it needs (its own
 * temporary files): each one can run alone.  A failed T_ASSERT in a
 * forked child exits the child with 1. */
#ifndef TESTS_TASSERT_H
#define TESTS_TASSERT_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef T_DETAIL
#ifdef LIBIMG_H
#define T_DETAIL img_last_error()
#else
#define T_DETAIL NULL
#endif
#endif

struct t_case {
	const char *name;
	void (*fn)(void);
};

#define T_CASE(fn) { #fn, fn }

int t_main(int argc, char **argv, const struct t_case *cases, size_t n);
#define T_MAIN(argc, argv, cases) t_main(argc, argv, cases, sizeof(cases) / sizeof((cases)[0]))

/* Failures counted by T_CHECK and T_ERROR since the program started. */
unsigned long t_failures(void);

void t_fail_at(const char *file, int line, const char *detail, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 4, 5)));
void t_error_at(const char *file, int line, const char *detail, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void t_skip(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

#define T_FAIL(...) t_fail_at(__FILE__, __LINE__, NULL, __VA_ARGS__)
#define T_ERROR(...) t_error_at(__FILE__, __LINE__, NULL, __VA_ARGS__)
#define T_SKIP(...) t_skip(__VA_ARGS__)

#define T_CHECK(cond) do { \
	if (!(cond)) \
		t_error_at(__FILE__, __LINE__, T_DETAIL, "%s", #cond); \
} while (0)

#define T_ASSERT(cond) do { \
	if (!(cond)) \
		t_fail_at(__FILE__, __LINE__, T_DETAIL, "assertion failed: %s", #cond); \
} while (0)

/* expr must evaluate to want (an int such as 0 or -EIO). */
#define T_EQ(expr, want) do { \
	long long t_got_ = (long long)(expr), t_want_ = (long long)(want); \
	if (t_got_ != t_want_) \
		t_fail_at(__FILE__, __LINE__, T_DETAIL, "%s = %lld, expected %lld", #expr, \
			  t_got_, t_want_); \
} while (0)

#define T_OK(expr) T_EQ(expr, 0)

/* Exit status of a skipped test. */
#define T_SKIP_STATUS 77

#endif
