/* SPDX-License-Identifier: MIT */
/* Many threads on one handle: each owns interleaved half-cluster chunks (so
 * neighbours race to allocate the same new cluster), writes, zeroes and
 * reads back its own bytes, flushes; meanwhile another thread compacts and
 * checks.  Every read must match the thread's own model.  One run, not
 * named sub-tests: the threads race in one process on one handle, which is
 * the point; it is built alone with -fsanitize=thread (make tsan-build),
 * and the workers report through one atomic flag, not tassert.h, whose
 * failure count is not meant for several threads. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libimg.h"

#define NT 4
#define CS (64u << 10)
#define CHUNK (CS / 2)
#define NCHUNK 256                    /* chunks per thread */
#define VSIZE ((uint64_t)NT * NCHUNK * CHUNK)

static struct img *img;
static _Atomic int failed, stop_bg;

struct worker { int id; uint64_t seed; uint8_t *model; };

static uint64_t rnd(uint64_t *s)
{
	uint64_t x = *s += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

static uint64_t chunk_off(int id, uint64_t k) { return (k * NT + (uint64_t)id) * CHUNK; }

static void *work(void *arg)
{
	struct worker *w = arg;
	uint8_t buf[CHUNK];

	for (int i = 0; i < 3000 && !failed; i++) {
		uint64_t k = rnd(&w->seed) % NCHUNK, a = rnd(&w->seed) % CHUNK, b = rnd(&w->seed) % CHUNK;
		uint64_t lo = a < b ? a : b, len = (a < b ? b - a : a - b) + 1, off = chunk_off(w->id, k);
		unsigned op = (unsigned)(rnd(&w->seed) % 10);
		uint8_t *m = w->model + k * CHUNK;

		if (op < 5) {
			memset(buf, (int)(rnd(&w->seed) | 1), len);
			if (img_pwrite(img, buf, len, off + lo) != (ssize_t)len) {
				fprintf(stderr, "t%d pwrite: %s\n", w->id, img_last_error());
				failed = 1;
			}
			memcpy(m + lo, buf, len);
		} else if (op < 6) {
			if (img_write_zeroes(img, off + lo, len)) {
				fprintf(stderr, "t%d write_zeroes: %s\n", w->id, img_last_error());
				failed = 1;
			}
			memset(m + lo, 0, len);
		} else if (op < 7) {
			if (img_flush(img)) {
				fprintf(stderr, "t%d flush: %s\n", w->id, img_last_error());
				failed = 1;
			}
		} else {
			if (img_pread(img, buf, CHUNK, off) != CHUNK || memcmp(buf, m, CHUNK)) {
				fprintf(stderr, "t%d: chunk %llu differs\n", w->id, (unsigned long long)k);
				failed = 1;
			}
		}
	}
	return NULL;
}

static void *background(void *arg)
{
	(void)arg;
	while (!stop_bg && !failed) {
		struct img_compact_stats st;
		int r = img_compact(img, NULL, &st);
		if (r) {
			fprintf(stderr, "compact: %s\n", img_last_error());
			failed = 1;
		}
	}
	return NULL;
}

int main(void)
{
	struct img_io *io;
	struct img_create_opts o = { .virtual_size = VSIZE, .cluster_size = CS };
	struct worker w[NT];
	pthread_t t[NT], bg;
	struct img_check_result cr;

	img_io_mem_new(NULL, 0, &io);
	if (img_create_io(io, &o) || img_open_io(io, IMG_OPEN_RDWR, &img)) {
		fprintf(stderr, "setup: %s\n", img_last_error());
		return 1;
	}
	pthread_create(&bg, NULL, background, NULL);
	for (int i = 0; i < NT; i++) {
		w[i].id = i;
		w[i].seed = 1000 + (uint64_t)i;
		w[i].model = calloc(NCHUNK, CHUNK);
		pthread_create(&t[i], NULL, work, &w[i]);
	}
	for (int i = 0; i < NT; i++)
		pthread_join(t[i], NULL);
	stop_bg = 1;
	pthread_join(bg, NULL);
	/* Final: every chunk matches, check clean. */
	for (int i = 0; i < NT && !failed; i++)
		for (uint64_t k = 0; k < NCHUNK; k++) {
			uint8_t buf[CHUNK];
			if (img_pread(img, buf, CHUNK, chunk_off(i, k)) != CHUNK || memcmp(buf, w[i].model + k * CHUNK, CHUNK)) {
				fprintf(stderr, "final: t%d chunk %llu differs\n", i, (unsigned long long)k);
				failed = 1;
				break;
			}
		}
	if (img_check(img, NULL, &cr) || cr.corruptions || cr.leaks) {
		fprintf(stderr, "check: %llu corruptions %llu leaks\n", (unsigned long long)cr.corruptions,
			(unsigned long long)cr.leaks);
		failed = 1;
	}
	img_close(img);
	for (int i = 0; i < NT; i++)
		free(w[i].model);
	return failed ? 1 : 0;
}
