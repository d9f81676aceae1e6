/* SPDX-License-Identifier: MIT */
/*
 * compact of an image whose live data is scattered, against the limit:
 * reading and writing the moved data once with large direct I/O
 * (copy_limit over the same number of bytes of the image file).
 *
 *   compact_bench [-d DIR] [-m DATA_MIB]
 * An image gets DATA_MIB MiB of data in 1 MiB clusters, then a random half
 * of the clusters is discarded, so about a quarter of the data sits in the
 * upper half of the file and must move into holes below.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "libimg.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void drop_caches(void)
{
	int fd;
	sync();
	fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
	if (fd >= 0) {
		if (write(fd, "3", 1) != 1) { /* not root */ }
		close(fd);
	}
}

static void die(const char *what)
{
	fprintf(stderr, "compact_bench: %s: %s\n", what, img_last_error());
	exit(1);
}

/* The state: mib MiB of data in 1 MiB clusters, then a random half of the
 * clusters discarded (the same half every time). */
static void build_state(const char *path, uint64_t mib, uint8_t *buf)
{
	struct img_create_opts o = { .flags = IMG_CREATE_OVERWRITE, .virtual_size = mib << 20 };
	uint64_t seed = 12345;
	struct img *img;

	if (img_create(path, &o) || img_open(path, IMG_OPEN_RDWR, &img))
		die("create");
	for (uint64_t v = 0; v < mib; v++) {
		buf[0] = (uint8_t)v;
		if (img_pwrite(img, buf, 1 << 20, v << 20) != 1 << 20)
			die("write");
	}
	for (uint64_t v = 0; v < mib; v++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		if ((seed >> 33) & 1)
			img_discard(img, v << 20, 1 << 20);
	}
	if (img_close(img))
		die("close");
	drop_caches();
}

/* Seconds for img_compact (and the close and sync after it). */
static double run_compact(const char *path, unsigned open_flags, struct img_compact_stats *st,
			  unsigned *engine)
{
	struct img_compact_opts co = { .flags = getenv("NOZD") ? IMG_COMPACT_NO_ZERO_DETECT : 0 };
	struct img_info in;
	struct img *img;
	double t0;

	if (img_open(path, IMG_OPEN_RDWR | open_flags, &img))
		die("open");
	img_info(img, &in);
	*engine = in.io_engine;
	t0 = now();
	if (img_compact(img, &co, st))
		die("compact");
	if (img_close(img))
		die("close");
	sync();
	return now() - t0;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	const char *dir = "/var/tmp", *limit = getenv("COPY_LIMIT");
	uint64_t mib = 512;
	char path[4096], cmd[8400], out[4096];
	struct img_compact_stats st;
	uint8_t *buf;
	double tp[16], tu[16], tl[16], t0;
	unsigned eng = 0;
	int c, reps = 3;

	while ((c = getopt(argc, argv, "d:m:r:")) != -1) {
		if (c == 'd') dir = optarg;
		else if (c == 'm') mib = strtoull(optarg, NULL, 0);
		else if (c == 'r') reps = atoi(optarg);
		else {
			fprintf(stderr, "usage: compact_bench [-d DIR] [-m DATA_MIB] [-r REPS]\n");
			return 2;
		}
	}
	if (reps < 1 || reps > 15)
		reps = 3;
	if (!limit)
		limit = "build/bench/copy_limit";
	snprintf(path, sizeof(path), "%s/compact-bench.img", dir);
	snprintf(out, sizeof(out), "%s/compact-bench.limit", dir);
	buf = malloc(1 << 20);
	for (unsigned i = 0; i < 1 << 20; i++)
		buf[i] = (uint8_t)(i * 13 + 1);

	/* Each round: compact on the posix backend, on io_uring (alternating
	 * which goes first), and the limit: the bytes moved read and written
	 * once with large direct I/O. */
	for (int k = 0; k < reps; k++) {
		for (int w = 0; w < 2; w++) {
			int uring = (k + w) % 2;
			build_state(path, mib, buf);
			if (uring)
				tu[k] = run_compact(path, IMG_OPEN_IO_URING, &st, &eng);
			else
				tp[k] = run_compact(path, 0, &st, &eng);
		}
		drop_caches();
		snprintf(cmd, sizeof(cmd), "%s %s %s 0 %" PRIu64 " >/dev/null", limit, path, out,
			 st.clusters_moved << 20);
		t0 = now();
		if (system(cmd) != 0)
			return 1;
		tl[k] = now() - t0;
		unlink(out);
	}
	unlink(path);
	qsort(tp, (size_t)reps, sizeof(double), cmp_d);
	qsort(tu, (size_t)reps, sizeof(double), cmp_d);
	qsort(tl, (size_t)reps, sizeof(double), cmp_d);
	printf("compact: %" PRIu64 " MiB data, %" PRIu64 " clusters moved, file %" PRIu64 " -> %" PRIu64
	       " MiB; medians of %d%s\n", mib, st.clusters_moved, st.file_size_before >> 20,
	       st.file_size_after >> 20, reps, getenv("NOZD") ? " (--no-zero-detect)" : "");
	printf("%-44s %8.2f s\n", "limit: moved bytes copied once (direct)", tl[reps / 2]);
	printf("%-44s %8.2f s  %6.2fx of limit (target <= 1.5x)\n", "compact, posix backend",
	       tp[reps / 2], tp[reps / 2] / tl[reps / 2]);
	if (eng == IMG_IO_ENGINE_URING)
		printf("%-44s %8.2f s  %6.2fx of limit, %.2fx of posix's time\n", "compact, io_uring backend",
		       tu[reps / 2], tu[reps / 2] / tl[reps / 2], tu[reps / 2] / tp[reps / 2]);
	else
		printf("compact, io_uring backend: refused by the kernel here (posix used)\n");
	if (getenv("BENCH_SUMMARY")) {
		const char *v = getenv("NOZD") ? ", --no-zero-detect" : "";
		printf("RATIO|compact|compact %" PRIu64 " MiB%s, posix (time / limit)|%.2f s|%.2f s|%.2fx|<= 1.5x%s\n",
		       mib, v, tp[reps / 2], tl[reps / 2], tp[reps / 2] / tl[reps / 2],
		       tp[reps / 2] / tl[reps / 2] <= 1.5 ? "" : " ABOVE");
		if (eng == IMG_IO_ENGINE_URING) {
			printf("RATIO|compact|compact %" PRIu64 " MiB%s, io_uring (time / limit)|%.2f s|%.2f s|%.2fx|<= 1.5x%s\n",
			       mib, v, tu[reps / 2], tl[reps / 2], tu[reps / 2] / tl[reps / 2],
			       tu[reps / 2] / tl[reps / 2] <= 1.5 ? "" : " ABOVE");
			printf("RATIO|io_uring vs posix|compact%s (io_uring time / posix time)|%.2f s|%.2f s|%.2fx|< 1x keeps it\n",
			       v, tu[reps / 2], tp[reps / 2], tu[reps / 2] / tp[reps / 2]);
		}
	}
	free(buf);
	return 0;
}
