/* SPDX-License-Identifier: MIT */
/* Assertions for C test programs: print where and what, exit 1 (fail). */
#ifndef TESTS_TASSERT_H
#define TESTS_TASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define T_FAIL(...) do { \
	fprintf(stderr, "%s:%d: ", __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); \
	fputc('\n', stderr); \
	exit(1); \
} while (0)

#define T_ASSERT(cond) do { \
	if (!(cond)) \
		T_FAIL("assertion failed: %s", #cond); \
} while (0)

/* expr must evaluate to want (an int such as 0 or -EIO). */
#define T_EQ(expr, want) do { \
	long long t_got_ = (long long)(expr), t_want_ = (long long)(want); \
	if (t_got_ != t_want_) \
		T_FAIL("%s = %lld, expected %lld", #expr, t_got_, t_want_); \
} while (0)

#define T_OK(expr) T_EQ(expr, 0)

/* Exit status of a skipped test. */
#define T_SKIP_STATUS 77

#endif
