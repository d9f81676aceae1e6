/* SPDX-License-Identifier: MIT */
/*
 * tools_fuzzer: what the tools parse and print from user input
 * (tools/common.c).  The first byte picks the target:
 *
 *  0  parse_size / parse_new_size.  Then 8 bytes of `current`
 *     (little-endian), then the string (up to the first NUL), copied into a
 *     buffer of its exact length + 1.  Oracles: results are 0 or -EINVAL and
 *     deterministic; a size never parses from a string with a '-' in it;
 *     "<digits>[KMGT]" gives exactly n * 2^(10k) or fails (no wrap-around); a
 *     parsed size prints back in decimal (and in K when it can) to the same
 *     value; parse_new_size agrees with parse_size for absolute sizes, and
 *     "+N"/"-N" give current + N / current - N without wrapping.
 *  1  json_escape (file names in --json output): the output is one valid
 *     JSON string literal in valid UTF-8 without C1 controls.  text_escape
 *     (strings from images on a terminal): no control byte (C0, DEL, C1),
 *     valid UTF-8, within the buffer, and undone it gives the input back.
 *  2  tool_getopt over an argv made of the NUL-separated rest: terminates,
 *     operands come back as pointers into argv.
 *  3  human_size / human_size_exact of 8 bytes: terminated, in the buffer,
 *     and the exact form names the exact byte count.
 *  4  online_reply_parse (imgserve's control-socket answers, which imgctl
 *     prints again) of the rest up to the first NUL: 0 or -EPROTO
 *     (-ENOMEM); refused input leaves nothing; an accepted object written
 *     again (json_escape, numbers, true/false/null) parses to the same keys
 *     and values when its strings are valid UTF-8.
 */
#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "../tools/common.h"
#include "../tools/online/control.h"

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

static void sizes(const uint8_t *data, size_t size)
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
		return;
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
}

/* Length of the UTF-8 sequence at p (strict: no overlong forms, no
 * surrogates, at most U+10FFFF), or 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	unsigned c = p[0], need, min, cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		need = 1, min = 0x80, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		need = 2, min = 0x800, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		need = 3, min = 0x10000, cp = c & 0x07;
	else
		return 0;
	if (n < need + 1)
		return 0;
	for (unsigned i = 1; i <= need; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return need + 1;
}

static int xdigit(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* text_escape of s (slen bytes) into buffers of several sizes. */
static void text_check(const char *s, size_t slen)
{
	static const size_t lens[] = { 8, 9, 10, 13, 64 };
	size_t full = TEXT_ESCAPE_LEN(slen);
	char *buf = malloc(full), *u = malloc(full + 4), *whole = NULL;

	if (!buf || !u)
		goto out;
	for (size_t k = 0; k <= sizeof(lens) / sizeof(lens[0]); k++) {
		size_t len = k < sizeof(lens) / sizeof(lens[0]) ? lens[k] : full, ol, ul = 0;
		const unsigned char *p, *end;

		if (len > full)
			continue;
		memset(buf, 0x55, len);
		if (text_escape(s, buf, len) != buf)
			FUZZ_BUG("text_escape: does not return buf");
		ol = strnlen(buf, len);
		if (ol >= len)
			FUZZ_BUG("text_escape: not terminated within %zu bytes", len);
		p = (const unsigned char *)buf;
		end = p + ol;
		while (p < end) {
			size_t n;
			if (*p < 0x20 || *p == 0x7f)
				FUZZ_BUG("text_escape: raw control byte 0x%02x", *p);
			if (*p == '\\') {
				if (p + 1 < end && p[1] == '\\') {
					u[ul++] = '\\';
					p += 2;
					continue;
				}
				if (p + 4 > end || p[1] != 'x' || !xdigit(p[2]) || !xdigit(p[3]))
					FUZZ_BUG("text_escape: bad escape at %td", p - (const unsigned char *)buf);
				u[ul++] = (char)strtoul((const char[]){ (char)p[2], (char)p[3], 0 }, NULL, 16);
				p += 4;
				continue;
			}
			n = utf8_len(p, (size_t)(end - p));
			if (!n || (n == 2 && p[0] == 0xc2 && p[1] < 0xa0))
				FUZZ_BUG("text_escape: invalid UTF-8 or C1 at %td", p - (const unsigned char *)buf);
			memcpy(u + ul, p, n);
			ul += n;
			p += n;
		}
		u[ul] = 0;
		if (len == full && (ul != slen || memcmp(u, s, slen)))
			FUZZ_BUG("text_escape: does not give the input back");
		if (len == full) {
			free(whole);
			whole = strdup(buf);
		}
	}
	/* a smaller buffer holds all of it, or a prefix of it and "..." */
	for (size_t k = 0; whole && k < sizeof(lens) / sizeof(lens[0]) && lens[k] <= full; k++) {
		size_t ol;
		text_escape(s, buf, lens[k]);
		ol = strlen(buf);
		if (strcmp(buf, whole) && (ol < 3 || strcmp(buf + ol - 3, "...") ||
					   strncmp(buf, whole, ol - 3)))
			FUZZ_BUG("text_escape: a cut output is not a prefix of the whole and \"...\"");
	}
out:
	free(whole);
	free(buf);
	free(u);
}

static void escape(const uint8_t *data, size_t size)
{
	size_t slen = strnlen((const char *)data, size), olen = 0;
	char *s = malloc(slen + 1), *o = NULL;
	FILE *f;
	const unsigned char *p, *end;

	if (!s)
		return;
	memcpy(s, data, slen);
	s[slen] = 0;
	f = open_memstream(&o, &olen);
	if (!f) {
		free(s);
		return;
	}
	json_escape(f, s);
	fclose(f);
	p = (const unsigned char *)o;
	end = p + olen;
	if (olen < 2 || p[0] != '"' || end[-1] != '"')
		FUZZ_BUG("json_escape: not a quoted string");
	for (p++, end--; p < end; ) {
		size_t n;
		if (*p == '"')
			FUZZ_BUG("json_escape: raw quote at %td", p - (const unsigned char *)o);
		if (*p < 0x20)
			FUZZ_BUG("json_escape: raw control byte 0x%02x", *p);
		if (*p == '\\') {
			if (p + 1 >= end)
				FUZZ_BUG("json_escape: backslash at the end");
			if (strchr("\"\\/bfnrt", p[1]) && p[1]) {
				p += 2;
				continue;
			}
			if (p[1] != 'u' || p + 6 > end || !xdigit(p[2]) || !xdigit(p[3]) ||
			    !xdigit(p[4]) || !xdigit(p[5]))
				FUZZ_BUG("json_escape: bad escape");
			p += 6;
			continue;
		}
		n = utf8_len(p, (size_t)(end - p));
		if (!n)
			FUZZ_BUG("json_escape: invalid UTF-8 at %td", p - (const unsigned char *)o);
		if (n == 2 && p[0] == 0xc2 && p[1] < 0xa0)
			FUZZ_BUG("json_escape: raw C1 control at %td", p - (const unsigned char *)o);
		p += n;
	}
	free(o);
	text_check(s, slen);
	free(s);
}

static void getopts(const uint8_t *data, size_t size)
{
	static const struct option longopts[] = {
		{ "size",         required_argument, NULL, 's' },
		{ "cluster-size", required_argument, NULL, 'c' },
		{ "json",         no_argument,       NULL, 'j' },
		{ "progress",     no_argument,       NULL, 'p' },
		{ "repair",       no_argument,       NULL, 'r' },
		{ "help",         no_argument,       NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	char *buf = malloc(size + 1), *argv[34];
	struct tool_getopt g;
	int argc = 1, c;
	unsigned steps = 0;

	if (!buf)
		return;
	memcpy(buf, data, size);
	buf[size] = 0;
	argv[0] = (char *)"tool";
	for (size_t i = 0; i < size && argc < 33; ) {
		argv[argc++] = buf + i;
		i += strlen(buf + i) + 1;
	}
	argv[argc] = NULL;
	memset(&g, 0, sizeof(g));
	/* glibc keeps scanning state (a pointer into the last argv) between
	 * calls and resets it only when getopt itself sees optind == 0;
	 * tool_getopt turns 0 into 1 first, so reset it here.  (A tool parses
	 * one argv per process, where this does not matter.) */
	{
		static char *none[] = { (char *)"tool", NULL };
		optind = 0;
		getopt_long(1, none, "", longopts, NULL);
	}
	optind = 0;
	opterr = 0;
	while ((c = tool_getopt(&g, argc, argv, "s:c:jprh", longopts)) != -1) {
		if (++steps > size + 34)     /* one per option letter or argument */
			FUZZ_BUG("tool_getopt does not end");
		if (c == 1 || c == 's' || c == 'c') {
			if (!optarg || optarg < buf || optarg > buf + size)
				FUZZ_BUG("tool_getopt: argument outside argv");
		}
		if (optind > argc)
			FUZZ_BUG("tool_getopt: optind %d past argc %d", optind, argc);
	}
	optind = 0;
	free(buf);
}

static void human(const uint8_t *data, size_t size)
{
	uint64_t v = 0;
	char buf[64], want[32];

	for (unsigned i = 0; i < 8 && i < size; i++)
		v |= (uint64_t)data[i] << (8 * i);
	memset(buf, 'x', sizeof(buf));
	human_size(v, buf, 32);
	if (!memchr(buf, 0, 32))
		FUZZ_BUG("human_size(%" PRIu64 ") not terminated in 32 bytes", v);
	memset(buf, 'x', sizeof(buf));
	human_size_exact(v, buf, sizeof(buf));
	if (!memchr(buf, 0, sizeof(buf)))
		FUZZ_BUG("human_size_exact(%" PRIu64 ") not terminated", v);
	snprintf(want, sizeof(want), "(%" PRIu64 " bytes)", v);
	if (v >= 1024 && !strstr(buf, want))
		FUZZ_BUG("human_size_exact(%" PRIu64 ") = \"%s\"", v, buf);
}

/* 1 when s is valid UTF-8 throughout. */
static int utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s), k;

	while (n) {
		if (!(k = utf8_len(p, n)))
			return 0;
		p += k;
		n -= k;
	}
	return 1;
}

static void write_reply(FILE *f, const struct online_reply *r)
{
	fputc('{', f);
	for (size_t i = 0; i < r->n; i++) {
		const struct online_kv *kv = &r->kv[i];
		if (i)
			fputs(", ", f);
		json_escape(f, kv->key);
		fputs(": ", f);
		switch (kv->type) {
		case ONLINE_STR:  json_escape(f, kv->str); break;
		case ONLINE_NUM:  fprintf(f, "%" PRIu64, kv->num); break;
		case ONLINE_BOOL: fputs(kv->num ? "true" : "false", f); break;
		case ONLINE_NULL: fputs("null", f); break;
		}
	}
	fputc('}', f);
}

static void reply(const uint8_t *data, size_t size)
{
	size_t slen = strnlen((const char *)data, size), olen = 0;
	char *s = malloc(slen + 1), *o = NULL;
	struct online_reply r, r2;
	int e, valid = 1;
	FILE *f;

	if (!s)
		return;
	memcpy(s, data, slen);
	s[slen] = 0;
	e = online_reply_parse(s, &r);
	if (e != 0 && e != -EPROTO && e != -ENOMEM)
		FUZZ_BUG("online_reply_parse = %d", e);
	if (e) {
		if (r.n || r.kv)
			FUZZ_BUG("online_reply_parse refused, but kept %zu keys", r.n);
		free(s);
		return;
	}
	for (size_t i = 0; i < r.n; i++) {
		const struct online_kv *kv = &r.kv[i];
		if (!kv->key || (kv->type == ONLINE_STR) != (kv->str != NULL))
			FUZZ_BUG("online_reply_parse: key %zu malformed", i);
		if (kv->type == ONLINE_BOOL && kv->num > 1)
			FUZZ_BUG("online_reply_parse: boolean %" PRIu64, kv->num);
		if (!utf8_valid(kv->key) || (kv->str && !utf8_valid(kv->str)))
			valid = 0;
	}
	if (valid && (f = open_memstream(&o, &olen))) {
		write_reply(f, &r);
		fclose(f);
		if (online_reply_parse(o, &r2) != 0)
			FUZZ_BUG("online_reply_parse refuses its own output %s", o);
		if (r2.n != r.n)
			FUZZ_BUG("online_reply_parse: %zu keys, then %zu", r.n, r2.n);
		for (size_t i = 0; i < r.n; i++)
			if (strcmp(r.kv[i].key, r2.kv[i].key) || r.kv[i].type != r2.kv[i].type ||
			    r.kv[i].num != r2.kv[i].num ||
			    (r.kv[i].str && strcmp(r.kv[i].str, r2.kv[i].str)))
				FUZZ_BUG("online_reply_parse: key %zu differs written again", i);
		online_reply_free(&r2);
		free(o);
	}
	online_reply_free(&r);
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0;
	switch (data[0] % 5) {
	case 0: sizes(data + 1, size - 1); break;
	case 1: escape(data + 1, size - 1); break;
	case 2: getopts(data + 1, size - 1); break;
	case 3: human(data + 1, size - 1); break;
	case 4: reply(data + 1, size - 1); break;
	}
	return 0;
}
