/* SPDX-License-Identifier: MIT */
/*
 * tools_fuzzer: the size parsing the tools share (tools/common.c):
 *   int parse_size(const char *s, uint64_t *out);
 *   int parse_new_size(const char *s, uint64_t current, uint64_t *out);
 *
 * Input: 8 bytes of `current` (little-endian), then the string (up to the
 * first NUL), copied into a buffer of its exact length + 1.
 *
 * Oracles: results are 0 or -EINVAL and deterministic; a size never parses
 * from a string with a '-' in it; "<digits>[KMGT]" gives exactly n * 2^(10k)
 * or fails (no wrap-around); a parsed size prints back in decimal (and in K
 * when it can) to the same value; parse_new_size agrees with parse_size for
 * absolute sizes, and "+N"/"-N" give current + N / current - N without
 * wrapping.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "../tools/common.h"

static int size_of(const char *s, uint64_t *v)
{
	int r = parse_size(s, v);
	if (r != 0 && r != -EINVAL)
		FUZZ_BUG("parse_size(\"%s\") = %d", s, r);
	return r;
}

/* "<digits><one of KMGT or none>", lower case accepted: the value, or -1 if
 * it does not fit 64 bits; 0 when the string is not of this form. */
static int simple_size(const char *s, uint64_t *v, int *overflow)
{
	uint64_t n = 0;
	unsigned shift = 0;
	const char *p = s;

	*overflow = 0;
	if (!isdigit((unsigned char)*p))
		return 0;
	for (; isdigit((unsigned char)*p); p++)
		if (__builtin_mul_overflow(n, 10, &n) || __builtin_add_overflow(n, (uint64_t)(*p - '0'), &n))
			*overflow = 1;
	switch (*p) {
	case 0:                  break;
	case 'K': case 'k': shift = 10; p++; break;
	case 'M': case 'm': shift = 20; p++; break;
	case 'G': case 'g': shift = 30; p++; break;
	case 'T': case 't': shift = 40; p++; break;
	default: return 0;
	}
	if (*p)
		return 0;
	if (shift && n > (UINT64_MAX >> shift))
		*overflow = 1;
	*v = n << shift;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t cur = 0, v = 0, v2 = 0, w = 0, ref = 0;
	size_t slen;
	char *s, buf[64];
	int r, r2, overflow;

	for (unsigned i = 0; i < 8 && i < size; i++)
		cur |= (uint64_t)data[i] << (8 * i);
	data = size > 8 ? data + 8 : data + size;
	size = size > 8 ? size - 8 : 0;
	slen = strnlen((const char *)data, size);
	s = malloc(slen + 1);
	if (!s)
		return 0;
	memcpy(s, data, slen);
	s[slen] = 0;

	r = size_of(s, &v);
	if (size_of(s, &v2) != r || (r == 0 && v2 != v))
		FUZZ_BUG("parse_size(\"%s\") is not deterministic", s);
	if (r == 0) {
		if (strchr(s, '-'))
			FUZZ_BUG("parse_size(\"%s\") accepts a negative size: %" PRIu64, s, v);
		snprintf(buf, sizeof(buf), "%" PRIu64, v);
		if (size_of(buf, &v2) || v2 != v)
			FUZZ_BUG("parse_size(\"%s\") = %" PRIu64 " but \"%s\" does not parse back", s, v, buf);
		if (v % 1024 == 0) {
			snprintf(buf, sizeof(buf), "%" PRIu64 "K", v / 1024);
			if (size_of(buf, &v2) || v2 != v)
				FUZZ_BUG("parse_size(\"%s\") = %" PRIu64 " but \"%s\" does not parse back", s, v, buf);
		}
	}
	if (simple_size(s, &ref, &overflow) && r == 0) {
		if (overflow)
			FUZZ_BUG("parse_size(\"%s\") wraps around to %" PRIu64, s, v);
		if (v != ref)
			FUZZ_BUG("parse_size(\"%s\") = %" PRIu64 ", expected %" PRIu64, s, v, ref);
	}

	r2 = parse_new_size(s, cur, &w);
	if (r2 != 0 && r2 != -EINVAL)
		FUZZ_BUG("parse_new_size(\"%s\", %" PRIu64 ") = %d", s, cur, r2);
	if (r2 == 0) {
		uint64_t d;
		if (s[0] == '+') {
			if (size_of(s + 1, &d))
				FUZZ_BUG("parse_new_size(\"%s\") accepts what parse_size refuses", s);
			if (cur + d < cur || w != cur + d)
				FUZZ_BUG("parse_new_size(\"%s\", %" PRIu64 ") = %" PRIu64, s, cur, w);
		} else if (s[0] == '-') {
			if (size_of(s + 1, &d))
				FUZZ_BUG("parse_new_size(\"%s\") accepts what parse_size refuses", s);
			if (d > cur || w != cur - d)
				FUZZ_BUG("parse_new_size(\"%s\", %" PRIu64 ") = %" PRIu64, s, cur, w);
		} else if (isdigit((unsigned char)s[0])) {
			if (r || w != v)
				FUZZ_BUG("parse_new_size(\"%s\") = %" PRIu64 " but parse_size gives %d/%" PRIu64,
					 s, w, r, v);
		}
	}
	free(s);
	return 0;
}
