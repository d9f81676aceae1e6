/* SPDX-License-Identifier: MIT */
/* Unit test of the client side of imgserve's control protocol
 * (tools/online/control.c): online_reply_parse, the reader of the daemon's
 * "ok" objects that imgctl prints again, and the command table.
 * Linked with tools/common.o and tools/online/control.o (Makefile).  Exit 0 pass, 1 fail.
 * Named sub-tests (tassert.h): -l lists them, -t NAME runs one. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tools/common.h"
#include "../../tools/online/control.h"
#include "../helpers/tassert.h"

static void bad(const char *text)
{
	struct online_reply r;
	int e = online_reply_parse(text, &r);

	if (e != -EPROTO || r.n != 0 || r.kv != NULL)
		T_FAIL("online_reply_parse(%s) = %d, %zu keys; want -EPROTO", text, e, r.n);
}

/* s through json_escape (what the daemon sends) and back. */
static void round_trip(const char *s)
{
	struct online_reply r;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	const struct online_kv *kv;

	fputs("{\"k\": ", f);
	json_escape(f, s);
	fputs(", \"n\": 7}", f);
	fclose(f);
	T_ASSERT(online_reply_parse(buf, &r) == 0);
	kv = online_reply_get(&r, "k");
	if (!kv || kv->type != ONLINE_STR || strcmp(kv->str, s))
		T_FAIL("round trip of \"%s\" through %s", s, buf);
	kv = online_reply_get(&r, "n");
	T_ASSERT(kv && kv->type == ONLINE_NUM && kv->num == 7);
	online_reply_free(&r);
	free(buf);
}

/* what the daemon answers */
static void daemon_answers(void)
{
	struct online_reply r;
	const struct online_kv *kv;

	T_ASSERT(online_reply_parse("{}", &r) == 0 && r.n == 0);
	online_reply_free(&r);
	T_ASSERT(online_reply_parse(" { } ", &r) == 0 && r.n == 0);
	online_reply_free(&r);
	T_ASSERT(online_reply_parse("{\"pid\": 4242,\"image\": \"/srv/a b.img\",\"open\": true,"
				 "\"read_only\": false,\"x\": null,\"writes\": 18446744073709551615}",
				 &r) == 0);
	T_ASSERT(r.n == 6);
	T_ASSERT(!strcmp(r.kv[0].key, "pid") && r.kv[0].type == ONLINE_NUM && r.kv[0].num == 4242);
	T_ASSERT((kv = online_reply_get(&r, "image")) && kv->type == ONLINE_STR &&
	      !strcmp(kv->str, "/srv/a b.img"));
	T_ASSERT((kv = online_reply_get(&r, "open")) && kv->type == ONLINE_BOOL && kv->num == 1);
	T_ASSERT((kv = online_reply_get(&r, "read_only")) && kv->type == ONLINE_BOOL && kv->num == 0);
	T_ASSERT((kv = online_reply_get(&r, "x")) && kv->type == ONLINE_NULL);
	T_ASSERT((kv = online_reply_get(&r, "writes")) && kv->num == UINT64_MAX);
	T_ASSERT(online_reply_get(&r, "nope") == NULL);
	online_reply_free(&r);
	T_ASSERT(r.n == 0 && r.kv == NULL);
}

/* escapes, \u with surrogate pairs */
static void escapes(void)
{
	struct online_reply r;

	T_ASSERT(online_reply_parse("{\"a\\\"b\": \"q\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\\u001f\"}",
				 &r) == 0);
	T_ASSERT(r.n == 1 && !strcmp(r.kv[0].key, "a\"b"));
	T_ASSERT(r.n == 1 && !strcmp(r.kv[0].str, "q\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80\x1f"));
	online_reply_free(&r);
}

static void json_escape_round_trips(void)
{
	round_trip("");
	round_trip("/srv/images/ct1.img");
	round_trip("tab\there \"quoted\" back\\slash");
	round_trip("\x01\x1f\x7f new\nline");
	round_trip("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
	round_trip("c1 \xc2\x85 control");
}

/* not a flat object: refused, nothing kept */
static void malformed_refused(void)
{
	bad("");
	bad("ok {}");
	bad("{");
	bad("}");
	bad("[]");
	bad("{\"a\"}");
	bad("{\"a\":}");
	bad("{\"a\": 1,}");
	bad("{\"a\": 1 \"b\": 2}");
	bad("{\"a\": 1} x");
	bad("{\"a\": 1}}");
	bad("{a: 1}");
	bad("{\"a\": -1}");
	bad("{\"a\": 1.5}");
	bad("{\"a\": 1e3}");
	bad("{\"a\": 18446744073709551616}");
	bad("{\"a\": {}}");
	bad("{\"a\": []}");
	bad("{\"a\": tru}");
	bad("{\"a\": \"unterminated}");
	bad("{\"a\": \"raw\ncontrol\"}");
	bad("{\"a\": \"\\x\"}");
	bad("{\"a\": \"\\u00\"}");
	bad("{\"a\": \"\\u0000\"}");
	bad("{\"a\": \"\\ud800\"}");
	bad("{\"a\": \"\\udc00\"}");
	bad("{\"a\": \"\\ud800\\u0041\"}");
	bad("{\"a\": 1, \"b\": \"\\q\"}");
}

static void command_table(void)
{
	T_ASSERT(online_command_find("status") && online_command_find("status")->flags == 0);
	T_ASSERT(online_command_find("grow")->flags & ONLINE_CMD_RESIZE);
	T_ASSERT(online_command_find("shrink")->max_args == 2);
	T_ASSERT(online_command_find("stop")->flags & ONLINE_CMD_STOP);
	T_ASSERT(online_command_find("merge")->flags & ONLINE_CMD_WRITES);
	T_ASSERT(online_command_find("nope") == NULL);
	T_ASSERT(online_command_find("") == NULL);
}

static const struct t_case cases[] = {
	T_CASE(daemon_answers), T_CASE(escapes), T_CASE(json_escape_round_trips),
	T_CASE(malformed_refused), T_CASE(command_table),
};

int main(int argc, char **argv)
{
	return T_MAIN(argc, argv, cases);
}
