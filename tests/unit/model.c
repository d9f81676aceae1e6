/* SPDX-License-Identifier: MIT */
/*
 * Model-based random test: random pwrite/pread/discard/write_zeroes/flush/
 * reopen/grow/shrink/compact/check sequences at random offsets and lengths,
 * compared byte for byte with a flat in-memory model after every step.
 *
 *   model [SEED [OPS]]    one run with that seed (replay a failure)
 *   model                 the fixed seeds of `make check`
 * Env MODEL_SEEDS=N adds N random seeds (each printed before it runs).
 * Not made of named sub-tests (tassert.h): each seed is one random story
 * whose steps depend on all before them, and the unit that can be run
 * alone is the seed (model SEED OPS), which its FAIL line names with the
 * operation, going on with the next seed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "libimg.h"

static uint64_t rng_state;
static uint64_t rnd(void)
{
	uint64_t x = rng_state += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}
static uint64_t rnd_below(uint64_t n) { return n ? rnd() % n : 0; }

/* A memory backend whose close keeps the bytes, so the test can reopen. */
struct keep_io {
	struct img_io io;
	struct img_io *inner;
};
static struct img_io *g_file;    /* the persistent in-memory file */

static int k_pread(struct img_io *io, void *b, size_t l, uint64_t o) { (void)io; return g_file->ops->pread(g_file, b, l, o); }
static int k_pwrite(struct img_io *io, const void *b, size_t l, uint64_t o) { (void)io; return g_file->ops->pwrite(g_file, b, l, o); }
static int k_flush(struct img_io *io) { (void)io; return g_file->ops->flush(g_file); }
static int k_punch(struct img_io *io, uint64_t o, uint64_t l) { (void)io; return g_file->ops->punch(g_file, o, l); }
static int k_truncate(struct img_io *io, uint64_t s) { (void)io; return g_file->ops->truncate(g_file, s); }
static int k_size(struct img_io *io, uint64_t *s) { (void)io; return g_file->ops->size(g_file, s); }
static void k_close(struct img_io *io) { free(io); }
static const struct img_io_ops keep_ops = {
	.pread = k_pread, .pwrite = k_pwrite, .flush = k_flush, .punch = k_punch,
	.truncate = k_truncate, .size = k_size, .close = k_close,
};

static const char *g_path;   /* posix mode: a real file */

static struct img *open_img(void)
{
	struct img *img;
	int r;

	if (g_path) {
		r = img_open(g_path, IMG_OPEN_RDWR, &img);
	} else {
		struct keep_io *k = calloc(1, sizeof(*k));
		k->io.ops = &keep_ops;
		k->io.name = "model";
		r = img_open_io(&k->io, IMG_OPEN_RDWR, &img);
	}
	if (r) {
		fprintf(stderr, "open: %s (%s)\n", img_strerror(r), img_last_error());
		exit(1);
	}
	return img;
}

#define FAIL(...) do { fprintf(stderr, "seed %" PRIu64 " op %" PRIu64 ": ", seed, op); \
	fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); return 1; } while (0)

static int run(uint64_t seed, uint64_t nops, uint32_t cs, const char *path)
{
	uint64_t op = 0, vsize, max_vsize;
	uint8_t *model, *buf, *pool, *zeros;
	struct img *img;
	struct img_create_opts co = { 0 };
	struct img_info info;
	int r;

	rng_state = seed;
	max_vsize = (uint64_t)cs * (cs >= 4u << 20 ? 12 : cs >= 1u << 20 ? 32 : 192);
	vsize = (rnd_below(max_vsize / 2 / 512) + 1) * 512;
	model = calloc(1, max_vsize * 2);
	buf = malloc(max_vsize * 2);
	pool = malloc(max_vsize * 2);
	zeros = calloc(1, max_vsize * 2);
	for (uint64_t i = 0; i < max_vsize * 2 / 8; i++) {
		uint64_t x = rnd();
		memcpy(pool + 8 * i, &x, 8);
	}
	co.virtual_size = vsize;
	co.cluster_size = cs;
	g_path = path;
	if (path) {
		unlink(path);
		r = img_create(path, &co);
	} else {
		if (g_file)
			g_file->ops->close(g_file);
		img_io_mem_new(NULL, 0, &g_file);
		r = img_create_io(g_file, &co);
	}
	if (r)
		FAIL("create: %s", img_strerror(r));
	img = open_img();

	for (op = 0; op < nops; op++) {
		unsigned k = (unsigned)rnd_below(100);
		uint64_t off, len;

		/* Mostly small and cluster-straddling I/O, sometimes large. */
		len = rnd_below(10) ? rnd_below(3 * (uint64_t)cs / 2) + 1 : rnd_below(vsize) + 1;
		if (len > vsize)
			len = vsize;
		off = rnd_below(vsize - len + 1);
		if (rnd_below(4) == 0)
			off &= ~(uint64_t)(cs - 1);

		if (k < 40) {                                   /* write */
			/* data: a random window of the pool, sometimes zeros
			 * (for zero detection) */
			const uint8_t *src = rnd_below(8) ? pool + rnd_below(max_vsize * 2 - len + 1) : zeros;
			ssize_t n = img_pwrite(img, src, len, off);
			if (n != (ssize_t)len)
				FAIL("pwrite %" PRIu64 "+%" PRIu64 ": %zd %s", off, len, n, img_last_error());
			memcpy(model + off, src, len);
		} else if (k < 60) {                            /* read */
			ssize_t n = img_pread(img, buf, len, off);
			if (n != (ssize_t)len)
				FAIL("pread: %zd %s", n, img_last_error());
			if (memcmp(buf, model + off, len))
				FAIL("pread %" PRIu64 "+%" PRIu64 " differs from the model", off, len);
		} else if (k < 68) {                            /* discard */
			if ((r = img_discard(img, off, len)))
				FAIL("discard: %s %s", img_strerror(r), img_last_error());
			memset(model + off, 0, len);
		} else if (k < 75) {                            /* write zeroes */
			if ((r = img_write_zeroes(img, off, len)))
				FAIL("write_zeroes: %s", img_strerror(r));
			memset(model + off, 0, len);
		} else if (k < 82) {                            /* flush */
			if ((r = img_flush(img)))
				FAIL("flush: %s", img_strerror(r));
		} else if (k < 87) {                            /* close and reopen */
			if ((r = img_close(img)))
				FAIL("close: %s %s", img_strerror(r), img_last_error());
			img = open_img();
			img_info(img, &info);
			if (info.dirty)
				FAIL("dirty after a clean close");
		} else if (k < 91) {                            /* grow */
			uint64_t ns = vsize + (rnd_below((max_vsize * 2 - vsize) / 512) + 1) * 512;
			if (ns > max_vsize * 2)
				ns = max_vsize * 2;
			if ((r = img_resize(img, ns, 0)))
				FAIL("grow to %" PRIu64 ": %s %s", ns, img_strerror(r), img_last_error());
			memset(model + vsize, 0, ns - vsize);
			vsize = ns;
		} else if (k < 95) {                            /* shrink */
			uint64_t ns = (rnd_below(vsize / 512) + 1) * 512;
			if (ns < vsize) {
				r = img_resize(img, ns, 0);
				int has_data = 0;
				for (uint64_t o = ((ns + cs - 1) / cs) * (uint64_t)cs; o < vsize && !has_data; o += cs) {
					struct img_extent ex;
					img_map(img, o, &ex);
					has_data = ex.type == IMG_EXTENT_DATA;
				}
				if (r == -ENOTEMPTY) {
					r = img_resize(img, ns, IMG_RESIZE_DISCARD_DATA);
				}
				if (r)
					FAIL("shrink to %" PRIu64 ": %s %s", ns, img_strerror(r), img_last_error());
				(void)has_data;
				memset(model + ns, 0, vsize - ns);
				vsize = ns;
			}
		} else if (k < 98) {                            /* compact */
			struct img_compact_stats st;
			if ((r = img_compact(img, NULL, &st)))
				FAIL("compact: %s %s", img_strerror(r), img_last_error());
			img_info(img, &info);
			if (info.file_size > info.metadata_size + info.allocated_clusters * cs)
				FAIL("after compact file %" PRIu64 " > metadata %" PRIu64 " + %" PRIu64 " clusters",
				     info.file_size, info.metadata_size, info.allocated_clusters);
		} else {                                        /* check */
			struct img_check_result cr;
			if ((r = img_check(img, NULL, &cr)))
				FAIL("check: %s", img_strerror(r));
			if (cr.corruptions || cr.leaks)
				FAIL("check: %" PRIu64 " corruptions, %" PRIu64 " leaks", cr.corruptions, cr.leaks);
		}
		/* Whole-disk comparison now and then, and the size. */
		if (op % 128 == 0 || k >= 82) {
			img_info(img, &info);
			if (info.virtual_size != vsize)
				FAIL("virtual size %" PRIu64 " != %" PRIu64, info.virtual_size, vsize);
			if (img_pread(img, buf, vsize, 0) != (ssize_t)vsize)
				FAIL("full read: %s", img_last_error());
			if (memcmp(buf, model, vsize))
				for (uint64_t i = 0; i < vsize; i++)
					if (buf[i] != model[i])
						FAIL("byte %" PRIu64 " is %u, model %u", i, buf[i], model[i]);
		}
	}
	if ((r = img_close(img)))
		FAIL("final close: %s", img_strerror(r));
	img = open_img();
	{
		struct img_check_result cr;
		if ((r = img_check(img, NULL, &cr)) || cr.corruptions || cr.leaks)
			FAIL("final check: r=%d corruptions %" PRIu64 " leaks %" PRIu64, r, cr.corruptions, cr.leaks);
		if (img_pread(img, buf, vsize, 0) != (ssize_t)vsize || memcmp(buf, model, vsize))
			FAIL("final contents differ");
	}
	img_close(img);
	free(model);
	free(buf);
	free(pool);
	free(zeros);
	return 0;
}

int main(int argc, char **argv)
{
	static const uint32_t sizes[] = { 64u << 10, 1u << 20, 4u << 20 };
	char path[] = "/tmp/libimg-model-XXXXXX";
	int fd, fails = 0, runs = 0;

	if (argc > 1) {
		uint64_t seed = strtoull(argv[1], NULL, 0);
		uint64_t ops = argc > 2 ? strtoull(argv[2], NULL, 0) : 2000;
		return run(seed, ops, sizes[seed % 3], NULL);
	}
	for (uint64_t seed = 1; seed <= 12; seed++) {
		fails += run(seed, seed <= 9 ? 1500 : 400, sizes[seed % 3], NULL);
		runs++;
	}
	/* One run per cluster size on a real file (punch, truncate, locks). */
	fd = mkstemp(path);
	if (fd >= 0) {
		close(fd);
		for (uint64_t seed = 100; seed < 103; seed++, runs++)
			fails += run(seed, 600, sizes[seed % 3], path);
		unlink(path);
	}
	if (getenv("MODEL_SEEDS")) {
		unsigned n = (unsigned)atoi(getenv("MODEL_SEEDS"));
		srand((unsigned)time(NULL) ^ (unsigned)getpid());
		for (unsigned i = 0; i < n; i++, runs++) {
			uint64_t seed = ((uint64_t)rand() << 31) ^ (uint64_t)rand();
			printf("seed %" PRIu64 "\n", seed);
			fflush(stdout);
			fails += run(seed, 1500, sizes[seed % 3], NULL);
		}
	}
	printf("SUMMARY: model runs %d, failed %d\n", runs, fails);
	if (g_file)
		g_file->ops->close(g_file);
	return fails ? 1 : 0;
}
