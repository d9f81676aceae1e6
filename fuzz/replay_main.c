/* SPDX-License-Identifier: MIT */
/*
 * Standalone main for the fuzz harnesses: replays files without libFuzzer,
 * so that `make check` runs the seed corpus and every regression input.
 *
 *   build/fuzz/open_fuzzer FILE|DIR...
 *
 * Directories are walked recursively, in name order.  Arguments starting with
 * '-' are ignored (libFuzzer flags).  Each file is read into a buffer of its
 * exact size (so sanitizers see overreads) and passed to
 * LLVMFuzzerTestOneInput().  A harness signals a bug by aborting; the name of
 * the input being run is printed first.  Exit 0 when every input ran, 1 when
 * an argument could not be read.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

/* Present in sanitizer builds: called before the process dies. */
extern void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));

static const char *current;
static unsigned long ran;
static int errors;

static void say_current(void)
{
	if (current) {
		static const char pre[] = "\nreplay: input that failed: ";
		ssize_t r;
		r = write(2, pre, sizeof(pre) - 1);
		r = write(2, current, strlen(current));
		r = write(2, "\n", 1);
		(void)r;
	}
}

static void on_signal(int sig)
{
	say_current();
	signal(sig, SIG_DFL);
	raise(sig);
}

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long len;
	int r = -1;

	if (!f) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fseek(f, 0, SEEK_END) || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		fprintf(stderr, "replay: %s: cannot size: %s\n", path, strerror(errno));
		goto out;
	}
	/* malloc(0) may return NULL: keep one byte, pass the real size. */
	buf = malloc(len ? (size_t)len : 1);
	if (!buf) {
		fprintf(stderr, "replay: %s: out of memory\n", path);
		goto out;
	}
	if (len && fread(buf, 1, (size_t)len, f) != (size_t)len) {
		fprintf(stderr, "replay: %s: short read\n", path);
		goto out;
	}
	current = path;
	if (getenv("REPLAY_VERBOSE"))
		fprintf(stderr, "replay: %s (%ld bytes)\n", path, len);
	LLVMFuzzerTestOneInput(buf, (size_t)len);
	current = NULL;
	ran++;
	r = 0;
out:
	free(buf);
	fclose(f);
	return r;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_path(const char *path, int depth)
{
	struct stat st;
	DIR *d;
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;

	if (stat(path, &st)) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		errors++;
		return;
	}
	if (!S_ISDIR(st.st_mode)) {
		if (run_file(path))
			errors++;
		return;
	}
	if (depth > 16) {
		fprintf(stderr, "replay: %s: too deep\n", path);
		errors++;
		return;
	}
	d = opendir(path);
	if (!d) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		errors++;
		return;
	}
	while ((de = readdir(d))) {
		char *full;
		if (de->d_name[0] == '.')   /* ., .., .gitkeep and friends */
			continue;
		if (n == cap) {
			char **nn;
			cap = cap ? 2 * cap : 64;
			nn = realloc(names, cap * sizeof(*names));
			if (!nn)
				abort();
			names = nn;
		}
		if (asprintf(&full, "%s/%s", path, de->d_name) < 0)
			abort();
		names[n++] = full;
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; i < n; i++) {
		run_path(names[i], depth + 1);
		free(names[i]);
	}
	free(names);
}

int main(int argc, char **argv)
{
	int paths = 0;

	/* Under a sanitizer its own handlers report faults: only add the name. */
	signal(SIGABRT, on_signal);
	if (__sanitizer_set_death_callback) {
		__sanitizer_set_death_callback(say_current);
	} else {
		signal(SIGSEGV, on_signal);
		signal(SIGBUS, on_signal);
		signal(SIGILL, on_signal);
		signal(SIGFPE, on_signal);
	}

	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '-')
			continue;
		paths++;
		run_path(argv[i], 0);
	}
	if (!paths) {
		fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
		return 2;
	}
	printf("%s: ran %lu inputs%s\n", argv[0], ran, errors ? " (some could not be read)" : "");
	return errors ? 1 : 0;
}
