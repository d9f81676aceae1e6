/* SPDX-License-Identifier: MIT */
/*
 * Memory of opening an image whose clusters are all compressed (issue 15
 * #14; FORMAT.md 2 states the bound): an image of N compressed entries,
 * 64 KiB clusters, payloads of S sectors packed into host clusters, its BAT
 * written directly (the payloads are never read by an open, so the data
 * file is sparse).  Opened read-only and read-write in fresh processes; the
 * peak is the process's high-water mark (reset first), the held memory
 * its RSS after the open.
 *
 *   comp_mem [-d DIR] [-n ENTRIES] [-s SECTORS] [-f]
 * -f: the last entry's payload moved to the host cluster that ends 2^42
 * bytes into the (sparse) file: the counts per host cluster must follow
 * the host clusters holding payloads, not the file's length.
 * Prints a table and RATIO lines for bench/run.sh.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "libimg.h"
#include "format.h"

#define CS (64u << 10)

static void die(const char *what)
{
	fprintf(stderr, "comp_mem: %s: %s\n", what, img_last_error());
	exit(1);
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

struct cost { double ms; long peak_kib, held_kib; };

static struct cost open_in_child(const char *p, unsigned flags)
{
	struct cost c = { -1, 0, 0 };
	int fds[2];
	pid_t pid;

	if (pipe(fds) || (pid = fork()) < 0)
		die("fork");
	if (pid == 0) {
		struct img *img;
		struct timespec t0, t1;
		int fd = open("/proc/self/clear_refs", O_WRONLY);
		long r0;
		if (fd >= 0) {       /* reset the high-water mark */
			if (write(fd, "5", 1) != 1) { /* older kernel: peak since start */ }
			close(fd);
		}
		r0 = status_kib("VmRSS:");
		clock_gettime(CLOCK_MONOTONIC, &t0);
		if (img_open(p, flags, &img))
			_exit(1);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		c.ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
		c.peak_kib = status_kib("VmHWM:") - r0;
		c.held_kib = status_kib("VmRSS:") - r0;
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

int main(int argc, char **argv)
{
	const char *dir = "/var/tmp";
	uint64_t n = 1ull << 24, spp = 16, per;
	struct img_create_opts o = { .cluster_size = CS, .flags = IMG_CREATE_OVERWRITE };
	struct imgi_header h;
	struct imgi_geom g;
	uint8_t slot[IMG_HEADER_SLOT], *blk;
	uint64_t ents[IMG_ENTRIES_PER_BLOCK];
	char p[4096];
	int c, fd, far = 0;

	while ((c = getopt(argc, argv, "d:n:s:f")) != -1) {
		if (c == 'd') dir = optarg;
		else if (c == 'f') far = 1;
		else if (c == 'n') n = strtoull(optarg, NULL, 0);
		else if (c == 's') spp = strtoull(optarg, NULL, 0);
		else {
			fprintf(stderr, "usage: comp_mem [-d DIR] [-n ENTRIES] [-s SECTORS] [-f]\n");
			return 2;
		}
	}
	if (!spp || spp >= CS / 512 || !n || n > IMG_MAX_ENTRIES) {
		fprintf(stderr, "comp_mem: -s 1..127, -n 1..2^27\n");
		return 2;
	}
	per = CS / 512 / spp;            /* payloads per host cluster */
	o.virtual_size = n * CS;
	snprintf(p, sizeof(p), "%s/bench-comp-mem.img", dir);
	if (img_create(p, &o))
		die("create");
	fd = open(p, O_RDWR);
	if (fd < 0 || pread(fd, slot, sizeof(slot), 0) != (ssize_t)sizeof(slot) ||
	    imgi_header_decode(slot, &h, NULL, 0) || imgi_header_validate(&h, &g, NULL, 0))
		die("read header");
	h.incompat |= IMG_INCOMPAT_COMPRESSED;
	for (int s = 0; s < 2; s++) {
		h.seq = 2 - (uint64_t)s;
		imgi_header_encode(&h, slot);
		if (pwrite(fd, slot, sizeof(slot), s * IMG_HEADER_SLOT) != (ssize_t)sizeof(slot))
			die("write header");
	}
	{
		enum { CH = 256 };
		blk = malloc((size_t)CH * IMG_BLOCK_SIZE);
		for (uint64_t b0 = 0; b0 < g.used_blocks; b0 += CH) {
			uint64_t nb = g.used_blocks - b0 < CH ? g.used_blocks - b0 : CH;
			for (uint64_t b = b0; b < b0 + nb; b++) {
				for (unsigned i = 0; i < IMG_ENTRIES_PER_BLOCK; i++) {
					uint64_t v = b * IMG_ENTRIES_PER_BLOCK + i;
					uint64_t hc = g.data_cluster0 + v / per, s = (v % per) * spp;
					if (far && v == n - 1)
						hc = (1ull << 42) / CS - 1, s = 0;
					ents[i] = v < n ? IMG_C_MAKE(hc * (CS / 512) + s, spp) : 0;
				}
				imgi_bat_block_encode(b, 0, ents, blk + (b - b0) * IMG_BLOCK_SIZE);
			}
			if (pwrite(fd, blk, nb * IMG_BLOCK_SIZE, (off_t)(h.bat_offset + b0 * IMG_BLOCK_SIZE)) !=
			    (ssize_t)(nb * IMG_BLOCK_SIZE))
				die("write BAT");
		}
		free(blk);
	}
	if (ftruncate(fd, far ? (off_t)(1ull << 42) : (off_t)((g.data_cluster0 + (n + per - 1) / per) * CS)) ||
	    fsync(fd))
		die("extend");
	close(fd);

	printf("\nopen of %" PRIu64 " compressed entries (64 KiB clusters, %" PRIu64 " sectors each, %" PRIu64
	       " per host cluster%s): fresh process\n", n, spp, per, far ? ", the last 2^42 bytes in" : "");
	printf("%-4s %9s %12s %12s %12s %12s\n", "mode", "ms", "peak MiB", "held MiB", "peak B/ent", "held B/ent");
	for (int rw = 0; rw < 2; rw++) {
		struct cost k = open_in_child(p, rw ? IMG_OPEN_RDWR : 0);
		if (k.ms < 0)
			die("open");
		printf("%-4s %9.1f %12.1f %12.1f %12.2f %12.2f\n", rw ? "rw" : "ro", k.ms,
		       k.peak_kib / 1024.0, k.held_kib / 1024.0,
		       k.peak_kib * 1024.0 / (double)n, k.held_kib * 1024.0 / (double)n);
		if (getenv("BENCH_SUMMARY"))
			printf("RATIO|open and memory|open of %" PRIu64 " compressed entries (%s%s): peak / held|"
			       "%.2f / %.2f B/entry|-|-|%s\n",
			       n, rw ? "rw" : "ro", far ? ", one 2^42 bytes in" : "", k.peak_kib * 1024.0 / (double)n,
			       k.held_kib * 1024.0 / (double)n,
			       far ? "<= 8 B/entry + 1 bit/host cluster to the last + 21.4 B/host cluster held, + 8 B/entry peak"
				   : "<= 8 B/entry + 4 B/host cluster held, + 4 B/entry peak");
	}
	printf("bound (FORMAT.md 2): 8 B per entry + 4 B per host cluster holding payloads while they lie\n"
	       "densely (%.2f B/entry here; else up to 21.4 B per such cluster, and 1 bit per host cluster up\n"
	       "to the last), plus 4 B per compressed entry while the open runs (8 when they do not lie densely)\n",
	       4.0 / (double)per);
	unlink(p);
	return 0;
}
