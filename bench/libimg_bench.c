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
#include <malloc.h>
#include <sys/resource.h>
#include <sys/wait.h>
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

/* -S: also print summary lines for bench/run.sh's table:
 * RATIO|section|what|libimg|reference|ratio|target */
static int summary;

static void row(const char *job, double raw, double img, const char *unit, double target)
{
	double ratio = img / raw;
	if (summary)
		printf("RATIO|library vs raw file|%s|%.0f %s|%.0f %s|%.2fx|>= %.2fx%s\n", job, img, unit,
		       raw, unit, ratio, target, ratio + 1e-9 >= target ? "" : " BELOW");
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

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
	double t[32];
	memcpy(t, v, (size_t)n * sizeof(double));
	qsort(t, (size_t)n, sizeof(double), cmp_d);
	return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

static long status_kib(const char *key)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	size_t k = strlen(key);
	long v = 0;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, k))
			v = strtol(line + k, NULL, 10);
	if (f)
		fclose(f);
	return v;
}

static long rss_kib(void)
{
	return status_kib("VmRSS:");
}

/* Private memory the process holds, touched or not: what malloc holds
 * (heap and its own mappings) plus mappings made directly (the library
 * maps large BAT arrays itself, aligned for huge pages).  VmData counts
 * both; malloc's own count alone would miss the second. */
static uint64_t heap_bytes(void)
{
	return (uint64_t)status_kib("VmData:") * 1024;
}

struct open_cost {
	double ms;
	uint64_t heap;     /* private memory (VmData) the open handle holds */
	long rss_kib;      /* RSS growth of a fresh process */
};

/* Opens p (read-only, or read-write) in a fresh child process, so that
 * neither the allocator's cache nor earlier work blurs the figures. */
static struct open_cost open_in_child(const char *p, unsigned flags)
{
	struct open_cost c = { -1, 0, 0 };
	int fds[2];
	pid_t pid;

	if (pipe(fds))
		die("pipe");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		struct img *img;
		long r0 = rss_kib();
		uint64_t h0 = heap_bytes();
		double t0 = now();
		if (img_open(p, flags, &img))
			_exit(1);
		c.ms = (now() - t0) * 1e3;
		c.heap = heap_bytes() - h0;
		c.rss_kib = rss_kib() - r0;
		if (write(fds[1], &c, sizeof(c)) != (ssize_t)sizeof(c))
			_exit(1);
		img_close(img);
		_exit(0);
	}
	close(fds[1]);
	if (read(fds[0], &c, sizeof(c)) != (ssize_t)sizeof(c))
		c.ms = -1;
	close(fds[0]);
	waitpid(pid, NULL, 0);
	return c;
}

/* An image of vsize (1 MiB clusters) where every stride-th cluster is
 * allocated (stride 0: none): the BAT is written directly (the data file
 * is sparse), then the image is opened in fresh processes. */
static void open_cost_row(const char *dir, uint64_t vsize, uint64_t stride, int reps)
{
	char p[4096], label[64];
	struct img_create_opts o = { .virtual_size = vsize, .flags = IMG_CREATE_OVERWRITE };
	struct imgi_header h;
	struct imgi_geom g;
	uint8_t slot[IMG_HEADER_SLOT], *blk;
	uint64_t ents[IMG_ENTRIES_PER_BLOCK], nalloc = 0;
	struct open_cost c[2] = { { 0, 0, 0 }, { 0, 0, 0 } };
	double ms[2][16];
	int fd;

	snprintf(p, sizeof(p), "%s/bench-open.img", dir);
	if (img_create(p, &o))
		die("create");
	fd = open(p, O_RDWR);
	if (fd < 0 || pread(fd, slot, sizeof(slot), 0) != (ssize_t)sizeof(slot) ||
	    imgi_header_decode(slot, &h, NULL, 0) || imgi_header_validate(&h, &g, NULL, 0))
		die("read header");
	if (stride) {
		enum { CH = 256 };
		blk = malloc((size_t)CH * IMG_BLOCK_SIZE);
		for (uint64_t b0 = 0; b0 < g.used_blocks; b0 += CH) {
			uint64_t nb = g.used_blocks - b0 < CH ? g.used_blocks - b0 : CH;
			for (uint64_t b = b0; b < b0 + nb; b++) {
				for (unsigned i = 0; i < IMG_ENTRIES_PER_BLOCK; i++) {
					uint64_t v = b * IMG_ENTRIES_PER_BLOCK + i;
					ents[i] = v < g.vclusters && v % stride == 0 ?
						IMG_E_MAKE(IMG_E_ALLOC, g.data_cluster0 + v / stride) : 0;
				}
				imgi_bat_block_encode(b, 0, ents, blk + (b - b0) * IMG_BLOCK_SIZE);
			}
			if (pwrite(fd, blk, nb * IMG_BLOCK_SIZE,
				   (off_t)(h.bat_offset + b0 * IMG_BLOCK_SIZE)) != (ssize_t)(nb * IMG_BLOCK_SIZE))
				die("write BAT");
		}
		free(blk);
		nalloc = (g.vclusters + stride - 1) / stride;
		if (ftruncate(fd, (off_t)(g.data_offset + nalloc * g.cluster_size)))
			die("extend");
	}
	if (fsync(fd))
		die("fsync");
	close(fd);
	if (reps > 16)
		reps = 16;
	for (int i = 0; i < reps; i++)
		for (int rw = 0; rw < 2; rw++) {
			c[rw] = open_in_child(p, rw ? IMG_OPEN_RDWR : 0);
			if (c[rw].ms < 0)
				die("open");
			ms[rw][i] = c[rw].ms;
		}
	qsort(ms[0], (size_t)reps, sizeof(double), cmp_d);
	qsort(ms[1], (size_t)reps, sizeof(double), cmp_d);
	if (vsize >= 1ull << 40)
		snprintf(label, sizeof(label), "%llu TiB", (unsigned long long)(vsize >> 40));
	else
		snprintf(label, sizeof(label), "%llu GiB", (unsigned long long)(vsize >> 30));
	if (summary) {
		char what[128];
		double lim = vsize >= 64ull << 40 ? 1000 : vsize >= 1ull << 40 ? 50 : 0;
		snprintf(what, sizeof(what), "open %s, %" PRIu64 " of %" PRIu64 " clusters allocated (ro / rw)",
			 label, nalloc, g.vclusters);
		printf("RATIO|open and memory|%s|%.1f / %.1f ms|-|-|%s\n", what, ms[0][reps / 2], ms[1][reps / 2],
		       lim ? (lim <= ms[0][reps / 2] || lim <= ms[1][reps / 2] ? (vsize >= 64ull << 40 ? "< 1 s ABOVE" : "<= 50 ms ABOVE") :
			      (vsize >= 64ull << 40 ? "< 1 s" : "<= 50 ms")) : "-");
		snprintf(what, sizeof(what), "memory of that open: heap ro / rw, RSS rw");
		printf("RATIO|open and memory|%s|%.1f / %.1f MiB, RSS %.1f MiB|BAT %.1f MiB|%.3f B/cluster|<= 8 B/cluster + const\n",
		       what, c[0].heap / 1048576.0, c[1].heap / 1048576.0, c[1].rss_kib / 1024.0,
		       g.vclusters * 8 / 1048576.0, (double)c[0].heap / (double)g.vclusters);
	}
	printf("%-8s %10" PRIu64 " %10" PRIu64 " %8.1f %8.1f %9.1f %9.1f %7.3f %9.1f\n", label,
	       g.vclusters, nalloc, ms[0][reps / 2], ms[1][reps / 2],
	       c[0].heap / 1048576.0, c[1].heap / 1048576.0,
	       (double)c[0].heap / (double)g.vclusters, c[1].rss_kib / 1024.0);
	unlink(p);
}

static void open_costs(const char *dir, int reps)
{
	printf("\nopen (fresh process, warm cache, median of %d) and memory held by the handle\n", reps);
	printf("%-8s %10s %10s %8s %8s %9s %9s %7s %9s\n", "virtual", "clusters", "allocated",
	       "ro ms", "rw ms", "ro MiB", "rw MiB", "ro B/cl", "rw RSS MiB");
	open_cost_row(dir, 1ull << 30, 1, reps);
	open_cost_row(dir, 1ull << 40, 1, reps);
	open_cost_row(dir, 64ull << 40, 0, reps);
	open_cost_row(dir, 64ull << 40, 64, reps);
	printf("targets: open of 1 TiB <= 50 ms, of 64 TiB < 1 s; memory <= 8 B per cluster + a small constant\n");
}

/* One pair of runs of job j: raw and libimg, in the order given. */
static void pair(int j, int libimg_first, struct target *raw, struct target *im, uint8_t *buf,
		 uint64_t size, unsigned nrand, double *rv, double *mv)
{
	for (int w = 0; w < 2; w++) {
		int lib = libimg_first ? w == 0 : w == 1;
		struct target *t = lib ? im : raw;
		double v = 0;
		switch (j) {
		case 0: drop_caches(); v = seq_write(t, buf, size); break;
		case 1: drop_caches(); v = seq_read(t, buf, size); break;
		case 2: drop_caches(); v = rand_io(t, buf, size, nrand, 0); break;
		case 3: seq_read(t, buf, size); v = rand_io(t, buf, size, nrand, 0); break;
		case 4: drop_caches(); v = rand_io(t, buf, size, nrand, 1); break;
		case 5: drop_caches(); v = rand_io(t, buf, 4 * size, nrand, 1); break;
		}
		*(lib ? mv : rv) = v;
	}
}

int main(int argc, char **argv)
{
	const char *dir = "/var/tmp";
	uint64_t size = 256ull << 20;
	unsigned nrand = 20000;
	int reps = 5, verbose = 0, do_io = 1, do_open = 1;
	struct target raw, im;
	uint8_t *buf;
	int c;

	while ((c = getopt(argc, argv, "d:s:n:r:vIOS")) != -1) {
		if (c == 'd') dir = optarg;
		else if (c == 's') size = strtoull(optarg, NULL, 0) << 20;
		else if (c == 'n') nrand = (unsigned)strtoul(optarg, NULL, 0);
		else if (c == 'r') reps = atoi(optarg);
		else if (c == 'v') verbose = 1;
		else if (c == 'I') do_open = 0;
		else if (c == 'O') do_io = 0;
		else if (c == 'S') summary = 1;
		else {
			fprintf(stderr, "usage: libimg_bench [-d DIR] [-s MiB] [-n OPS] [-r REPS] [-v] [-S] [-I|-O]\n"
				"  -I: only the I/O jobs, -O: only the open costs; -v: every sample;\n"
				"  -S: summary lines for bench/run.sh\n");
			return 2;
		}
	}
	if (reps < 1 || reps > 31)
		reps = 5;
	if (posix_memalign((void **)&buf, 4096, 1 << 20))
		return 1;
	for (unsigned i = 0; i < 1 << 20; i++)
		buf[i] = (uint8_t)(i * 31 + 7);

	printf("libimg %s bench: %s, %" PRIu64 " MiB sequential, %u random 4 KiB ops, %d runs each "
	       "(raw and libimg alternating who goes first), %ld cpus\n",
	       LIBIMG_VERSION_STRING, dir, size >> 20, nrand, reps, sysconf(_SC_NPROCESSORS_ONLN));
	if (do_io) {
		static const char *jobs[6] = { "1 MiB sequential write + sync", "1 MiB sequential read (cold)",
			"4 KiB random read (cold)", "4 KiB random read (cached)", "4 KiB random overwrite + sync",
			"4 KiB random allocating write+sync" };
		static const char *units[6] = { "MiB/s", "MiB/s", "IOPS", "IOPS", "IOPS", "IOPS" };
		static const double targets[6] = { 0.95, 0.95, 0.9, 0.9, 0.8, 0.8 };
		double r[6][32], m[6][32];

		for (int k = 0; k < reps; k++) {
			/* jobs 0-4 on one pair of files (written by job 0), job 5 on fresh ones */
			open_targets(dir, 4 * size, &raw, &im);
			for (int j = 0; j < 5; j++)
				pair(j, (k + j) % 2, &raw, &im, buf, size, nrand, &r[j][k], &m[j][k]);
			close_targets(dir, &raw, &im);
			open_targets(dir, 4 * size, &raw, &im);
			pair(5, k % 2, &raw, &im, buf, size, nrand, &r[5][k], &m[5][k]);
			close_targets(dir, &raw, &im);
		}
		printf("%-34s %10s %10s %-6s %7s\n", "job (medians)", "raw", "libimg", "unit", "ratio");
		for (int j = 0; j < 6; j++) {
			row(jobs[j], median(r[j], reps), median(m[j], reps), units[j], targets[j]);
			if (verbose) {
				printf("    samples raw/libimg:");
				for (int k = 0; k < reps; k++)
					printf(" %.0f/%.0f", r[j][k], m[j][k]);
				printf("\n");
			}
		}
	}
	if (do_open)
		open_costs(dir, reps);
	free(buf);
	return 0;
}
