/* SPDX-License-Identifier: MIT */
/* Unit test of the tools' shared helpers: parse_size, parse_new_size,
 * human_size, json_escape, the JSON document and its test log, buffer_is_zero,
 * the progress printer.  Exit 0 pass, 1 fail. */
#include "../../tools/common.c"
#include "../helpers/tassert.h"

static void size_ok(const char *s, uint64_t want)
{
	uint64_t v = 12345;
	int r = parse_size(s, &v);
	if (r != 0 || v != want) {
		T_ERROR("parse_size(\"%s\") = %d, %llu; want %llu", s, r,
			(unsigned long long)v, (unsigned long long)want);
	}
}

static void size_bad(const char *s)
{
	uint64_t v = 12345;
	int r = parse_size(s, &v);
	if (r != -EINVAL || v != 12345) {
		T_ERROR("parse_size(\"%s\") = %d, %llu; want -EINVAL", s, r,
			(unsigned long long)v);
	}
}

static void new_ok(const char *s, uint64_t cur, uint64_t want)
{
	uint64_t v = 0;
	int r = parse_new_size(s, cur, &v);
	if (r != 0 || v != want) {
		T_ERROR("parse_new_size(\"%s\", %llu) = %d, %llu; want %llu", s,
			(unsigned long long)cur, r, (unsigned long long)v,
			(unsigned long long)want);
	}
}

static void new_bad(const char *s, uint64_t cur)
{
	uint64_t v = 0;
	if (parse_new_size(s, cur, &v) != -EINVAL) {
		T_ERROR("parse_new_size(\"%s\", %llu) accepted", s,
			(unsigned long long)cur);
	}
}

static void human_is(uint64_t b, const char *want)
{
	char buf[64];
	human_size(b, buf, sizeof(buf));
	if (strcmp(buf, want)) {
		T_ERROR("human_size(%llu) = \"%s\"; want \"%s\"",
			(unsigned long long)b, buf, want);
	}
}

static void escape_is(const char *s, const char *want)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	json_escape(f, s);
	fclose(f);
	if (strcmp(out, want)) {
		T_ERROR("json_escape -> %s; want %s", out, want);
	}
	free(out);
}

static void text_is(const char *s, size_t len, const char *want)
{
	char buf[256];
	text_escape(s, buf, len);
	if (strcmp(buf, want)) {
		T_ERROR("text_escape(len %zu) -> %s; want %s", len, buf, want);
	}
}

/* Runs the progress printer with stderr sent to a file (not a terminal)
 * and returns what it printed (static buffer). */
static const char *progress_capture(void (*run)(struct progress *))
{
	static char out[1 << 16];
	struct progress pr;
	FILE *f = tmpfile();
	int saved = dup(STDERR_FILENO);
	size_t n;

	if (!f || saved < 0)
		return "";
	fflush(stderr);
	dup2(fileno(f), STDERR_FILENO);
	progress_init(&pr, 1);
	run(&pr);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	rewind(f);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = 0;
	fclose(f);
	return out;
}

static void run_fine(struct progress *pr)
{
	/* 10,000 small steps: one line per whole percent */
	for (uint64_t i = 0; i <= 10000; i++)
		progress_update(pr, i, 10000);
	progress_finish(pr, 1);
}

static void run_back(struct progress *pr)
{
	/* a value smaller than the last is not shown; no 100 before finish */
	progress_update(pr, 50, 100);
	progress_update(pr, 10, 100);
	progress_update(pr, 60, 100);
	progress_finish(pr, 1);
}

static void run_failed(struct progress *pr)
{
	progress_update(pr, 0, 100);
	progress_update(pr, 30, 100);
	progress_finish(pr, 0);
}

static void run_phases(struct progress *pr)
{
	progress_phase(pr, 0, 40, "copying");
	progress_update(pr, 1, 2);
	progress_phase(pr, 40, 100, "resizing");
	progress_update(pr, 1, 2);
	progress_update(pr, 2, 2);
	progress_finish(pr, 1);
}

static void run_off(struct progress *pr)
{
	pr->enabled = 0;
	progress_update(pr, 1, 2);
	progress_phase(pr, 0, 50, "copying");
	progress_finish(pr, 1);
}

static void test_progress(void)
{
	const char *o;
	char line[64];
	int lines = 0;

	T_CHECK(progress_value(0, 10000, 0, 100) == 0);
	T_CHECK(progress_value(0, 10000, 1, 3) == 3333);
	T_CHECK(progress_value(2000, 4000, 1, 2) == 3000);
	T_CHECK(progress_value(2000, 4000, 5, 0) == 4000);
	T_CHECK(progress_value(0, 10000, UINT64_MAX - 1, UINT64_MAX) == 9999);
	T_CHECK(progress_pipe_due(PROGRESS_NONE, 0));
	T_CHECK(!progress_pipe_due(0, 99));
	T_CHECK(progress_pipe_due(99, 100));
	T_CHECK(!progress_pipe_due(500, 400));
	T_CHECK(progress_pipe_due(9999, 10000));
	progress_line(line, sizeof(line), 1234);
	T_CHECK(!strcmp(line, "    (12.34/100%)\n"));
	progress_line(line, sizeof(line), 10000);
	T_CHECK(!strcmp(line, "    (100.00/100%)\n"));

	o = progress_capture(run_fine);
	for (const char *q = o; (q = strchr(q, '\n')); q++)
		lines++;
	T_CHECK(lines == 101);
	T_CHECK(!strncmp(o, "    (0.00/100%)\n    (1.00/100%)\n", 32));
	T_CHECK(strstr(o, "    (99.00/100%)\n    (100.00/100%)\n") != NULL);
	T_CHECK(!strchr(o, '\r'));

	o = progress_capture(run_back);
	T_CHECK(!strcmp(o, "    (50.00/100%)\n    (60.00/100%)\n    (100.00/100%)\n"));
	o = progress_capture(run_failed);
	T_CHECK(!strcmp(o, "    (0.00/100%)\n    (30.00/100%)\n"));
	o = progress_capture(run_phases);
	T_CHECK(!strcmp(o, "    copying...\n    (0.00/100%)\n    (20.00/100%)\n"
		      "    (40.00/100%)\n    resizing...\n    (70.00/100%)\n"
		      "    (100.00/100%)\n"));
	o = progress_capture(run_off);
	T_CHECK(!strcmp(o, ""));
}

static void parse_size_cases(void)
{
	const uint64_t K = 1024, M = K * K, G = M * K, T = G * K, P = T * K, E = P * K;

	size_ok("0", 0);
	size_ok("512", 512);
	size_ok("007", 7);
	size_ok("64K", 64 * K);
	size_ok("64k", 64 * K);
	size_ok("64KiB", 64 * K);
	size_ok("64kib", 64 * K);
	size_ok("64Ki", 64 * K);
	size_ok("10G", 10 * G);
	size_ok("10GiB", 10 * G);
	size_ok("2T", 2 * T);
	size_ok("3P", 3 * P);
	size_ok("15E", 15 * E);
	size_ok("1M", M);
	size_ok("100B", 100);
	size_ok("1.5G", G + G / 2);
	size_ok("0.5K", 512);
	size_ok("1.25M", M + M / 4);
	size_ok("2.0", 2);
	size_ok("2.000000000000000000000000000000K", 2 * K);
	size_ok("18446744073709551615", UINT64_MAX);
	size_ok("15.5E", 15 * E + E / 2);

	size_bad("");
	size_bad("-1");
	size_bad("+1");
	size_bad(" 1");
	size_bad("1 ");
	size_bad("1 G");
	size_bad("G");
	size_bad("1X");
	size_bad("1GB");
	size_bad("1KB");
	size_bad("1iB");
	size_bad("1GiBs");
	size_bad("0x10");
	size_bad("1.");
	size_bad(".5K");
	size_bad("1.3K");        /* 1331.2 bytes */
	size_bad("1.5");         /* 1.5 bytes */
	size_bad("1..5G");
	size_bad("1e3");
	size_bad("16E");         /* 2^64 */
	size_bad("18446744073709551616");
	size_bad("99999999999999999999999999999");
	size_bad("17179869184G");
	size_bad("1.00000000000000000001K");
	size_bad(NULL);
}

static void parse_new_size_cases(void)
{
	const uint64_t K = 1024, M = K * K, G = M * K;

	new_ok("20G", 10 * G, 20 * G);
	new_ok("5G", 10 * G, 5 * G);
	new_ok("+5G", 10 * G, 15 * G);
	new_ok("-5G", 10 * G, 5 * G);
	new_ok("-10G", 10 * G, 0);
	new_ok("+0", 10 * G, 10 * G);
	new_ok("+1.5K", 512, 2048);
	new_bad("-11G", 10 * G);
	new_bad("+1", UINT64_MAX);
	new_bad("+16E", 0);
	new_bad("--5G", 10 * G);
	new_bad("+-5G", 10 * G);
	new_bad("++5G", 10 * G);
	new_bad("+", 10 * G);
	new_bad("-", 10 * G);
	new_bad("", 10 * G);
	new_bad("-5X", 10 * G);
	new_bad(NULL, 0);
}

static void human_size_cases(void)
{
	const uint64_t K = 1024, M = K * K, G = M * K;

	human_is(0, "0 bytes");
	human_is(1, "1 byte");
	human_is(1023, "1023 bytes");
	human_is(1024, "1 KiB");
	human_is(1536, "1.5 KiB");
	human_is(10 * G, "10 GiB");
	human_is(G + G / 4, "1.25 GiB");
	human_is(UINT64_MAX, "16 EiB");
}

static void escapes(void)
{
	escape_is("plain", "\"plain\"");
	/* issue 15 #4: strings from images on a terminal */
	text_is("plain.img", 64, "plain.img");
	text_is("a\x1b[31mb\nc", 64, "a\\x1b[31mb\\x0ac");
	text_is("bad\xff\xc3", 64, "bad\\xff\\xc3");
	text_is("c1 \xc2\x9b ok \xc3\xa9", 64, "c1 \\xc2\\x9b ok \xc3\xa9");
	text_is("back\\slash\x7f", 64, "back\\\\slash\\x7f");
	text_is("overlong \xc0\xaf \xe0\x80\xaf", 64, "overlong \\xc0\\xaf \\xe0\\x80\\xaf");
	text_is("0123456789", 11, "0123456789");
	text_is("0123456789", 10, "012345...");
	text_is("\x01\x02\x03", 12, "\\x01\\x02...");
	text_is("\xc3\xa9\xc3\xa9\xc3\xa9", 6, "\xc3\xa9...");
	escape_is("c1 \xc2\x9b", "\"c1 \\u009b\"");
	escape_is("a\"b\\c", "\"a\\\"b\\\\c\"");
	escape_is("tab\tnl\n\x01", "\"tab\\tnl\\n\\u0001\"");
	escape_is("caf\xc3\xa9", "\"caf\xc3\xa9\"");        /* valid UTF-8 kept */
	escape_is("bad\xff\xc3", "\"bad\\u00ff\\u00c3\"");   /* invalid bytes escaped */
	escape_is("\xed\xa0\x80", "\"\\u00ed\\u00a0\\u0080\"");  /* surrogate */
}

static void buffer_zero(void)
{
	static char zeros[8192];

	T_CHECK(buffer_is_zero(zeros, 0));
	T_CHECK(buffer_is_zero(zeros, 1));
	T_CHECK(buffer_is_zero(zeros, 17));
	T_CHECK(buffer_is_zero(zeros, sizeof(zeros)));
	zeros[8191] = 1;
	T_CHECK(!buffer_is_zero(zeros, sizeof(zeros)));
	T_CHECK(buffer_is_zero(zeros, 8191));
	zeros[8191] = 0;
	zeros[3] = 1;
	T_CHECK(!buffer_is_zero(zeros, sizeof(zeros)));
	T_CHECK(!buffer_is_zero(zeros, 4));
	zeros[3] = 0;
	zeros[20] = 1;
	T_CHECK(!buffer_is_zero(zeros, 21));
	T_CHECK(buffer_is_zero(zeros, 20));
}

static void backing_dirs(void)
{
	/* The allowed backing directories (libimg-backing(7)). */
	{
		struct backing_dirs d = { 0 };
		unsigned bad;

		T_CHECK(backing_dirs_parse(&d, "/a::/b c:rel:/d/:", ':', &bad) == 1 && bad == 4);
		T_CHECK(d.n == 3 && !strcmp(d.dir[0], "/a") && !strcmp(d.dir[1], "/b c") &&
		      !strcmp(d.dir[2], "/d/"));
		backing_dirs_free(&d);
		T_CHECK(d.n == 0 && !d.dir);
		T_CHECK(backing_dirs_parse(&d, "# comment\n  /t/x  \r\n\n\t#/no\nrel\nrel2\n/y", '\n',
					 &bad) == 2 && bad == 5);
		T_CHECK(d.n == 2 && !strcmp(d.dir[0], "/t/x") && !strcmp(d.dir[1], "/y"));
		backing_dirs_free(&d);
		T_CHECK(backing_dirs_parse(&d, "", ':', &bad) == 0 && bad == 0 && d.n == 0);
		backing_dirs_free(&d);
	}
}

static void json_document(void)
{
	/* A JSON document: built in memory, printed whole by json_finish
	 * ("schema" first), nothing at all after json_discard; the test log
	 * gets one line "PROG\tDOC" without the layout (issue 16). */
	{
		char text[512], logname[] = "/tmp/tools_common_XXXXXX";
		struct json_out j;
		FILE *f = tmpfile();
		size_t n;
		int fd;

		T_CHECK(f != NULL);
		json_start(&j, f);
		json_doc_begin(&j);
		json_string(&j, "name", "a \"b\"\n c");
		json_array_begin(&j, "list");
		json_u64(&j, NULL, 7);
		json_array_end(&j);
		json_object_end(&j);
		T_CHECK(ftell(f) == 0);           /* nothing out before json_finish */
		json_finish(&j);
		json_start(&j, f);              /* dropped: nothing of it printed */
		json_doc_begin(&j);
		json_string(&j, "half", "x");
		json_discard(&j);
		rewind(f);
		n = fread(text, 1, sizeof(text) - 1, f);
		text[n] = 0;
		T_CHECK(!strcmp(text, "{\n  \"schema\": 1,\n  \"name\": \"a \\\"b\\\"\\n c\",\n"
				    "  \"list\": [\n    7\n  ]\n}\n"));
		fclose(f);

		fd = mkstemp(logname);
		T_CHECK(fd >= 0);
		close(fd);
		progname = "tooltest";
		setenv("LIBIMG_TEST_JSON_LOG", logname, 1);
		json_test_log(text, strlen(text));
		json_test_log("[\n  1\n]\n", 8);
		unsetenv("LIBIMG_TEST_JSON_LOG");
		json_test_log("{}\n", 3);      /* not set: not logged */
		f = fopen(logname, "r");
		T_CHECK(f != NULL);
		n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
		text[n] = 0;
		T_CHECK(!strcmp(text, "tooltest\t{\"schema\": 1,\"name\": \"a \\\"b\\\"\\n c\","
				    "\"list\": [7]}\ntooltest\t[1]\n"));
		if (f)
			fclose(f);
		unlink(logname);
	}
}

static void exit_status_cases(void)
{
	/* issue 16: the exit status table (libimg(7)), one mapping */
	T_CHECK(exit_status(-EBUSY) == EXIT_BUSY);
	T_CHECK(exit_status(-ENOENT) == EXIT_NOTFOUND);
	T_CHECK(exit_status(-ENOSPC) == EXIT_NOSPACE);
	T_CHECK(exit_status(-EDQUOT) == EXIT_NOSPACE);
	T_CHECK(exit_status(-EUCLEAN) == EXIT_CORRUPT);
	T_CHECK(exit_status(-EMEDIUMTYPE) == EXIT_CORRUPT);
	T_CHECK(exit_status(-EIO) == EXIT_ERROR);
	T_CHECK(exit_status(-EPERM) == EXIT_ERROR);
	T_CHECK(EXIT_USAGE == 2 && EXIT_CHAIN == 4 && EXIT_NOTMOUNTED == 6 && EXIT_PARTIAL == 7);
}

static void parse_wait_cases(void)
{
	/* --wait=SECONDS */
	{
		int64_t ms = -5;
		T_CHECK(parse_wait("0", &ms) == 0 && ms == 0);
		T_CHECK(parse_wait("10", &ms) == 0 && ms == 10000);
		T_CHECK(parse_wait("0.5", &ms) == 0 && ms == 500);
		T_CHECK(parse_wait("1.25", &ms) == 0 && ms == 1250);
		T_CHECK(parse_wait("2.0009", &ms) == 0 && ms == 2000);
		ms = 7;
		T_CHECK(parse_wait("", &ms) == -EINVAL && ms == 7);
		T_CHECK(parse_wait("-1", &ms) == -EINVAL);
		T_CHECK(parse_wait("1.", &ms) == -EINVAL);
		T_CHECK(parse_wait(".5", &ms) == -EINVAL);
		T_CHECK(parse_wait("5s", &ms) == -EINVAL);
		T_CHECK(parse_wait("99999999999", &ms) == -EINVAL);
		T_CHECK(parse_wait(NULL, &ms) == -EINVAL && ms == 7);
	}
}

static const struct t_case cases[] = {
	T_CASE(parse_size_cases), T_CASE(parse_new_size_cases), T_CASE(human_size_cases),
	T_CASE(escapes), T_CASE(buffer_zero), T_CASE(backing_dirs), T_CASE(test_progress), T_CASE(json_document),
	T_CASE(exit_status_cases), T_CASE(parse_wait_cases),
};

int main(int argc, char **argv)
{
	return T_MAIN(argc, argv, cases);
}
