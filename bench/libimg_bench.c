/* SPDX-License-Identifier: MIT */
/*
 * Library against a raw sparse file on the same disk, same patterns, same
 * run.  Prints each figure and the ratio libimg/raw (higher is better for
 * throughput).  Also: open time and memory of a 1 TiB image whose BAT is
 * full.
 *
 *   libimg_bench [-d DIR] [-s SIZE_MIB] [-n RANDOM_OPS]
 * Caches are dropped before read tests when running as root.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "libimg.h"
#include "format.h"

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
		if (write(fd, "3", 1) != 1) { /* not root: cached figures */ }
		close(fd);
	}
}

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

/* One target: raw file or image. */
struct target {
	const char *name;
	int fd;
	struct img *img;
};

static int t_write(struct target *t, const void *b, size_t n, uint64_t off)
{
	if (t->img)
		return img_pwrite(t->img, b, n, off) == (ssize_t)n ? 0 : -1;
	return pwrite(t->fd, b, n, (off_t)off) == (ssize_t)n ? 0 : -1;
}

static int t_read(struct target *t, void *b, size_t n, uint64_t off)
{
	if (t->img)
		return img_pread(t->img, b, n, off) == (ssize_t)n ? 0 : -1;
	return pread(t->fd, b, n, (off_t)off) == (ssize_t)n ? 0 : -1;
}

static int t_flush(struct target *t)
{
	return t->img ? img_flush(t->img) : fdatasync(t->fd);
}

static void die(const char *what)
{
	fprintf(stderr, "libimg_bench: %s: %s %s\n", what, strerror(errno), img_last_error());
	exit(1);
}

static void open_targets(const char *dir, uint64_t vsize, struct target *raw, struct target *im)
{
	char p[4096];
	struct img_create_opts o = { .virtual_size = vsize, .flags = IMG_CREATE_OVERWRITE };

	snprintf(p, sizeof(p), "%s/bench-raw", dir);
	unlink(p);
	raw->name = "raw";
	raw->img = NULL;
	raw->fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (raw->fd < 0 || ftruncate(raw->fd, (off_t)vsize))
		die("raw file");
	snprintf(p, sizeof(p), "%s/bench.img", dir);
	if (img_create(p, &o) || img_open(p, IMG_OPEN_RDWR, &im->img))
		die("image");
	im->name = "libimg";
	im->fd = -1;
}

static void close_targets(const char *dir, struct target *raw, struct target *im)
{
	char p[4096];
	close(raw->fd);
	img_close(im->img);
	snprintf(p, sizeof(p), "%s/bench-raw", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/bench.img", dir);
	unlink(p);
}

static void row(const char *job, double raw, double img, const char *unit, double target)
{
	double ratio = img / raw;
	printf("%-34s %10.1f %10.1f %-6s %6.2fx  (target >= %.2fx)%s\n", job, raw, img, unit, ratio,
	       target, ratio + 1e-9 >= target ? "" : "  BELOW");
}

static double seq_write(struct target *t, uint8_t *buf, uint64_t size)
{
	double t0 = now();
	for (uint64_t off = 0; off < size; off += 1 << 20)
		if (t_write(t, buf, 1 << 20, off))
			die("seq write");
	if (t_flush(t))
		die("flush");
	return (double)size / (1 << 20) / (now() - t0);
}

static double seq_read(struct target *t, uint8_t *buf, uint64_t size)
{
	double t0 = now();
	for (uint64_t off = 0; off < size; off += 1 << 20)
		if (t_read(t, buf, 1 << 20, off))
			die("seq read");
	return (double)size / (1 << 20) / (now() - t0);
}

static double rand_io(struct target *t, uint8_t *buf, uint64_t span, unsigned n, int write)
{
	double t0;
	rng = 88172645463325252ull;
	t0 = now();
	for (unsigned i = 0; i < n; i++) {
		uint64_t off = (rnd() % (span / 4096)) * 4096;
		if (write ? t_write(t, buf, 4096, off) : t_read(t, buf, 4096, off))
			die("random io");
	}
	if (write && t_flush(t))
		die("flush");
	return n / (now() - t0);
}

static double median3(const double *v)
{
	double a = v[0], b = v[1], c = v[2];
	if (a > b) { double t = a; a = b; b = t; }
	if (b > c) b = c;
	return a > b ? a : b;
}

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = 0;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmRSS:", 6))
			v = strtol(line + 6, NULL, 10);
	if (f)
		fclose(f);
	return v;
}

/* A 1 TiB image (1 MiB clusters) whose every entry is allocated: the BAT
 * is written directly (the data file is sparse), then opened. */
static void open_full_bat(const char *dir)
{
	char p[4096];
	struct img_create_opts o = { .virtual_size = 1ull << 40, .flags = IMG_CREATE_OVERWRITE };
	struct img_header h;
	struct img_geom g;
	uint8_t slot[IMG_HEADER_SLOT], *blk;
	uint64_t ents[IMG_ENTRIES_PER_BLOCK];
	struct img *img;
	double best = 1e9;
	long before, after = 0;
	int fd;

	snprintf(p, sizeof(p), "%s/bench-1t.img", dir);
	if (img_create(p, &o))
		die("create 1 TiB");
	fd = open(p, O_RDWR);
	if (fd < 0 || pread(fd, slot, sizeof(slot), 0) != (ssize_t)sizeof(slot) ||
	    img_header_decode(slot, &h, NULL, 0) || img_header_validate(&h, &g, NULL, 0))
		die("read header");
	blk = malloc(g.used_blocks * IMG_BLOCK_SIZE);
	for (uint64_t b = 0; b < g.used_blocks; b++) {
		for (unsigned i = 0; i < IMG_ENTRIES_PER_BLOCK; i++) {
			uint64_t v = b * IMG_ENTRIES_PER_BLOCK + i;
			ents[i] = v < g.vclusters ? IMG_E_MAKE(IMG_E_ALLOC, g.data_cluster0 + v) : 0;
		}
		img_bat_block_encode(b, 0, ents, blk + b * IMG_BLOCK_SIZE);
	}
	if (pwrite(fd, blk, g.used_blocks * IMG_BLOCK_SIZE, (off_t)h.bat_offset) < 0 ||
	    ftruncate(fd, (off_t)(g.data_offset + g.vclusters * g.cluster_size)) || fsync(fd))
		die("write BAT");
	close(fd);
	free(blk);
	for (int i = 0; i < 5; i++) {
		double t0;
		long b0 = rss_kib();
		t0 = now();
		if (img_open(p, 0, &img))
			die("open 1 TiB");
		t0 = now() - t0;
		if (t0 < best)
			best = t0;
		if (i == 0) {   /* later opens reuse memory the allocator kept */
			before = b0;
			after = rss_kib();
		}
		img_close(img);
	}
	printf("%-34s %10.1f ms (target <= 50 ms)%s\n", "open 1 TiB, full BAT (1M entries)", best * 1e3,
	       best * 1e3 <= 50 ? "" : "  ABOVE");
	printf("%-34s %10.1f MiB for %" PRIu64 " clusters = %.2f bytes/cluster (target <= 8 + small)\n",
	       "memory of that open", (after - before) / 1024.0, g.vclusters,
	       (after - before) * 1024.0 / (double)g.vclusters);
	unlink(p);
}

int main(int argc, char **argv)
{
	const char *dir = "/var/tmp";
	uint64_t size = 256ull << 20;
	unsigned nrand = 20000;
	struct target raw, im;
	uint8_t *buf;
	int c;

	while ((c = getopt(argc, argv, "d:s:n:")) != -1) {
		if (c == 'd') dir = optarg;
		else if (c == 's') size = strtoull(optarg, NULL, 0) << 20;
		else if (c == 'n') nrand = (unsigned)strtoul(optarg, NULL, 0);
		else { fprintf(stderr, "usage: libimg_bench [-d DIR] [-s MiB] [-n OPS]\n"); return 2; }
	}
	if (posix_memalign((void **)&buf, 4096, 1 << 20))
		return 1;
	for (unsigned i = 0; i < 1 << 20; i++)
		buf[i] = (uint8_t)(i * 31 + 7);

	printf("libimg %s bench: %s, %" PRIu64 " MiB sequential, %u random 4 KiB ops, %ld cpus\n",
	       LIBIMG_VERSION_STRING, dir, size >> 20, nrand, sysconf(_SC_NPROCESSORS_ONLN));
	printf("%-34s %10s %10s %-6s %7s\n", "job", "raw", "libimg", "unit", "ratio");

	/* Each job three times, raw and libimg alternating; medians. */
	double r[6][3], m[6][3];
	for (int k = 0; k < 3; k++) {
		open_targets(dir, 4 * size, &raw, &im);
		/* alternate which goes first; start each from a quiet cache */
		drop_caches();
		if (k % 2) {
			m[0][k] = seq_write(&im, buf, size);
			drop_caches();
			r[0][k] = seq_write(&raw, buf, size);
		} else {
			r[0][k] = seq_write(&raw, buf, size);
			drop_caches();
			m[0][k] = seq_write(&im, buf, size);
		}
		drop_caches();
		r[1][k] = seq_read(&raw, buf, size);
		drop_caches();
		m[1][k] = seq_read(&im, buf, size);
		drop_caches();
		r[2][k] = rand_io(&raw, buf, size, nrand, 0);
		drop_caches();
		m[2][k] = rand_io(&im, buf, size, nrand, 0);
		seq_read(&raw, buf, size);
		seq_read(&im, buf, size);
		r[3][k] = rand_io(&raw, buf, size, nrand, 0);
		m[3][k] = rand_io(&im, buf, size, nrand, 0);
		drop_caches();
		r[4][k] = rand_io(&raw, buf, size, nrand, 1);
		drop_caches();
		m[4][k] = rand_io(&im, buf, size, nrand, 1);
		close_targets(dir, &raw, &im);
		open_targets(dir, 4 * size, &raw, &im);
		drop_caches();
		r[5][k] = rand_io(&raw, buf, 4 * size, nrand, 1);
		drop_caches();
		m[5][k] = rand_io(&im, buf, 4 * size, nrand, 1);
		close_targets(dir, &raw, &im);
	}
	static const char *jobs[6] = { "1 MiB sequential write + sync", "1 MiB sequential read (cold)",
		"4 KiB random read (cold)", "4 KiB random read (cached)", "4 KiB random overwrite + sync",
		"4 KiB random allocating write+sync" };
	static const char *units[6] = { "MiB/s", "MiB/s", "IOPS", "IOPS", "IOPS", "IOPS" };
	static const double targets[6] = { 0.95, 0.95, 0.9, 0.9, 0.8, 0.8 };
	for (int j = 0; j < 6; j++)
		row(jobs[j], median3(r[j]), median3(m[j]), units[j], targets[j]);

	open_full_bat(dir);
	free(buf);
	return 0;
}
