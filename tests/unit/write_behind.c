/* SPDX-License-Identifier: MIT */
/* Write-behind of the posix backend (io_posix.c): after 32 MiB written in
 * writes of 64 KiB or more, the write-out of the file's dirty pages has
 * started (they are no longer dirty); small writes never start it (the
 * pages stay dirty until img_flush).  Observed with cachestat(2) on an
 * image in /var/tmp (a disk-backed file system: tmpfs has no write-out).
 * Skipped where cachestat is missing (Linux < 6.5) or /var/tmp is tmpfs.
 * Named sub-tests (tassert.h): small writes, large writes, each on an
 * image of its own. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "libimg.h"
#include "../helpers/tassert.h"

#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif
#define TMPFS_MAGIC_ 0x01021994

struct cstat_range { uint64_t off, len; };
struct cstat { uint64_t cache, dirty, writeback, evicted, recently_evicted; };

#define MIB (1u << 20)
#define WRITTEN (33u * MIB)

static char path[sizeof("/var/tmp/libimg-wb-XXXXXX")];

/* Dirty pages of the image file (its whole length). */
static uint64_t dirty_pages(int fd)
{
	struct cstat_range rg = { 0, 0 };
	struct cstat cs;

	T_OK(syscall(__NR_cachestat, fd, &rg, &cs, 0));
	return cs.dirty;
}

/* A new file in /var/tmp (path) where cachestat works and write-out
 * happens; else the sub-test is skipped. */
static void cachestat_or_skip(void)
{
	struct cstat_range rg = { 0, 0 };
	struct cstat cs;
	struct statfs sf;
	int fd;

	strcpy(path, "/var/tmp/libimg-wb-XXXXXX");
	fd = mkstemp(path);
	T_ASSERT(fd >= 0);
	if (syscall(__NR_cachestat, fd, &rg, &cs, 0) != 0 || fstatfs(fd, &sf) != 0 ||
	    sf.f_type == TMPFS_MAGIC_) {
		close(fd);
		unlink(path);
		T_SKIP("no cachestat, or /var/tmp is tmpfs");
	}
	close(fd);
}

/* Writes WRITTEN bytes in pieces of len at distinct offsets of a new
 * image; returns the file's dirty pages just after, in KiB. */
static uint64_t dirty_after(size_t len)
{
	struct img_create_opts o = { .virtual_size = 256ull * MIB, .flags = IMG_CREATE_OVERWRITE };
	static uint8_t buf[MIB];
	struct img *img;
	uint64_t d;
	int fd;

	memset(buf, 0x5a, sizeof(buf));
	cachestat_or_skip();
	T_OK(img_create(path, &o));
	T_OK(img_open(path, IMG_OPEN_RDWR, &img));
	/* small writes: every 4th page, so that no two share a cluster run
	 * that the kernel could merge into one large write */
	for (uint64_t done = 0, off = 0; done < WRITTEN; done += len, off += len < 65536 ? 4 * len : len)
		T_EQ(img_pwrite(img, buf, len, off), len);
	fd = open(path, O_RDONLY);
	T_ASSERT(fd >= 0);
	d = dirty_pages(fd) * (uint64_t)sysconf(_SC_PAGESIZE) / 1024;
	close(fd);
	T_OK(img_close(img));
	unlink(path);
	return d;
}

/* small writes: all still dirty (the kernel's own write-out waits 30 s
 * or for far more dirty memory than this) */
static void small_writes_stay_dirty(void)
{
	uint64_t small = dirty_after(4096);

	printf("dirty after 33 MiB in 4 KiB writes: %llu KiB\n", (unsigned long long)small);
	T_ASSERT(small >= WRITTEN / 1024 * 9 / 10);
}

/* large writes: the first 32 MiB are under write-out or written */
static void large_writes_start_writeout(void)
{
	uint64_t large = dirty_after(MIB);

	printf("dirty after 33 MiB in 1 MiB writes: %llu KiB\n", (unsigned long long)large);
	T_ASSERT(large <= WRITTEN / 1024 / 4);
}

static const struct t_case cases[] = {
	T_CASE(small_writes_stay_dirty), T_CASE(large_writes_start_writeout),
};

int main(int argc, char **argv)
{
	return T_MAIN(argc, argv, cases);
}
