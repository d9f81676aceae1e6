/* SPDX-License-Identifier: MIT */
/*
 * The disk's limit for a copy: read SRC's data extents (SEEK_DATA/SEEK_HOLE)
 * and write them once to DST at the same offsets, with large direct I/O,
 * then sync.  Prints the bytes copied.  Used by the benchmarks as the
 * reference a converter or compactor is compared with.
 *
 *   copy_limit SRC DST [OFFSET LENGTH]   (a range: copy only that)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (4u << 20)

int main(int argc, char **argv)
{
	int in, out;
	off_t pos = 0, end, data, hole;
	uint64_t copied = 0;
	void *buf;

	if (argc != 3 && argc != 5) {
		fprintf(stderr, "usage: copy_limit SRC DST [OFFSET LENGTH]\n");
		return 2;
	}
	in = open(argv[1], O_RDONLY | O_DIRECT);
	out = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0644);
	if (in < 0 || out < 0 || posix_memalign(&buf, 4096, CHUNK)) {
		perror("copy_limit");
		return 1;
	}
	end = lseek(in, 0, SEEK_END);
	if (argc == 5) {
		pos = (off_t)strtoull(argv[3], NULL, 0);
		end = pos + (off_t)strtoull(argv[4], NULL, 0);
	}
	while (pos < end) {
		data = lseek(in, pos, SEEK_DATA);
		if (data < 0 || data >= end)
			break;
		hole = lseek(in, data, SEEK_HOLE);
		if (hole > end)
			hole = end;
		data &= ~(off_t)4095;
		for (off_t o = data; o < hole; ) {
			size_t n = (size_t)(hole - o) < CHUNK ? (size_t)(hole - o) : CHUNK;
			n = (n + 4095) & ~(size_t)4095;
			ssize_t r = pread(in, buf, n, o);
			if (r <= 0)
				break;
			r = (r + 4095) & ~(ssize_t)4095;
			if (pwrite(out, buf, (size_t)r, o) != r) {
				perror("copy_limit: write");
				return 1;
			}
			copied += (uint64_t)r;
			o += r;
		}
		pos = hole;
	}
	if (fdatasync(out)) {
		perror("copy_limit: sync");
		return 1;
	}
	printf("%llu\n", (unsigned long long)copied);
	return 0;
}
