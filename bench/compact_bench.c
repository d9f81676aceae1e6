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

int main(int argc, char **argv)
{
	const char *dir = "/var/tmp", *limit = getenv("COPY_LIMIT");
	uint64_t mib = 1024, seed = 12345;
	char path[4096], cmd[8400], out[4096];
	struct img_create_opts o = { .flags = IMG_CREATE_OVERWRITE };
	struct img_compact_stats st;
	struct img *img;
	uint8_t *buf;
	double t0, tc, tl;
	int c;

	while ((c = getopt(argc, argv, "d:m:")) != -1) {
		if (c == 'd') dir = optarg;
		else if (c == 'm') mib = strtoull(optarg, NULL, 0);
		else return 2;
	}
	if (!limit)
		limit = "build/bench/copy_limit";
	snprintf(path, sizeof(path), "%s/compact-bench.img", dir);
	snprintf(out, sizeof(out), "%s/compact-bench.limit", dir);
	o.virtual_size = mib << 20;
	buf = malloc(1 << 20);
	for (unsigned i = 0; i < 1 << 20; i++)
		buf[i] = (uint8_t)(i * 13 + 1);
	if (img_create(path, &o) || img_open(path, IMG_OPEN_RDWR, &img)) {
		fprintf(stderr, "compact_bench: %s\n", img_last_error());
		return 1;
	}
	for (uint64_t v = 0; v < mib; v++) {
		buf[0] = (uint8_t)v;
		if (img_pwrite(img, buf, 1 << 20, v << 20) != 1 << 20)
			return 1;
	}
	for (uint64_t v = 0; v < mib; v++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		if ((seed >> 33) & 1)
			img_discard(img, v << 20, 1 << 20);
	}
	img_close(img);
	drop_caches();

	if (img_open(path, IMG_OPEN_RDWR, &img))
		return 1;
	t0 = now();
	struct img_compact_opts co = { .flags = getenv("NOZD") ? IMG_COMPACT_NO_ZERO_DETECT : 0 };
	if (img_compact(img, &co, &st)) {
		fprintf(stderr, "compact_bench: %s\n", img_last_error());
		return 1;
	}
	img_close(img);
	sync();
	tc = now() - t0;

	/* The limit: the same number of bytes read and written once. */
	drop_caches();
	snprintf(cmd, sizeof(cmd), "%s %s %s 0 %" PRIu64 " >/dev/null", limit, path, out,
		 st.clusters_moved << 20);
	t0 = now();
	if (system(cmd) != 0)
		return 1;
	tl = now() - t0;
	unlink(out);
	unlink(path);
	printf("compact: %" PRIu64 " MiB data, %" PRIu64 " clusters moved, file %" PRIu64 " -> %" PRIu64
	       " MiB\n", mib, st.clusters_moved, st.file_size_before >> 20, st.file_size_after >> 20);
	printf("%-40s %8.2f s\n", "compact", tc);
	printf("%-40s %8.2f s\n", "limit: moved bytes copied once (direct)", tl);
	printf("%-40s %8.2fx (target <= 1.5x)\n", "compact time / limit", tc / tl);
	free(buf);
	return 0;
}
