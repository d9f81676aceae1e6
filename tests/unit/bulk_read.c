/* SPDX-License-Identifier: MIT */
/*
 * Issue 17: what the tools did by hand, in the library (libimg/bulk.c),
 * and the I/O table's advise and read_direct operations (io.c):
 *   - img_next_run covers the disk with runs that alternate in type, and
 *     says DATA exactly where a byte may be non-zero (through the chain;
 *     with IMG_RUN_TOP, BACKING where a delta leaves the bytes to it);
 *   - img_read_bulk reads what img_pread reads, with and without
 *     IMG_READ_DIRECT, on both engines, at aligned and unaligned offsets,
 *     on a chain with data written out of order (host runs cut), zero
 *     clusters, compressed clusters and holes, a backing image smaller
 *     than the delta, a data cluster cut by the end of the file (an
 *     unaligned short direct read), a cluster mapped past the end of the
 *     file (refused at open, zeros under IMG_OPEN_CHECK), and a damaged
 *     compressed payload (the same error as img_pread);
 *   - img_cache_advise drops the host pages of exactly the data of a
 *     virtual range (mincore), refuses an unknown advice;
 *   - the table: posix and io_uring have advise and read_direct, which
 *     read what pread reads, past the end of the file too; the memory
 *     backend has neither; the fault wrapper forwards them and fails the
 *     request it is armed for.
 * Named sub-tests (tassert.h), each in a temporary directory of its own
 * under TMPDIR (default /var/tmp: tmpfs refuses direct I/O and keeps its
 * pages; both are then only told).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "libimg.h"
#include "testio.h"
#include "../helpers/tassert.h"

#define CS (64u << 10)
#define M (1u << 20)

static char dir[4096];

static const char *at(const char *name)
{
	static char p[4][4200];
	static int k;
	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

static void fill(uint8_t *b, size_t n, unsigned seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13; x ^= x >> 7; x ^= x << 17;
		b[i] = (uint8_t)x;
	}
}

static void put(struct img *img, uint64_t off, size_t n, unsigned seed)
{
	uint8_t *b = malloc(n);
	T_ASSERT(b);
	fill(b, n, seed);
	T_EQ(img_pwrite(img, b, n, off), n);
	free(b);
}

/* A cluster that compresses: a pattern. */
static void put_compressed(struct img *img, uint64_t v)
{
	uint8_t b[CS];
	for (unsigned i = 0; i < CS; i++)
		b[i] = (uint8_t)(v + i / 512);
	T_EQ(img_write_compressed(img, b, CS, v * CS), 1);
}

/*
 * base.img, 12 MiB: data clusters written last to first (their host
 * order reversed), a run of 8 whole clusters, zero clusters, 4 compressed
 * clusters, holes.  top.img, a 16 MiB delta over it: own writes (one
 * partial cluster, copied up), zero clusters over base data, the rest
 * read through (base's data, and zeros past base's 12 MiB).
 */
static void make_chain(void)
{
	struct img_create_opts o = { .virtual_size = 12ull * M, .cluster_size = CS };
	struct img *img;

	T_OK(img_create(at("base.img"), &o));
	T_OK(img_open(at("base.img"), IMG_OPEN_RDWR, &img));
	for (int v = 40; v >= 20; v -= 2)
		put(img, (uint64_t)v * CS, CS, (unsigned)v);
	put(img, 64ull * CS, 8 * CS, 64);
	put(img, 100ull * CS + 1000, 3000, 100);      /* partial: the rest zeros */
	T_OK(img_write_zeroes(img, 21ull * CS, 2 * CS));
	for (uint64_t v = 120; v < 124; v++)
		put_compressed(img, v);
	put(img, 12ull * M - CS, CS, 191);            /* the last cluster */
	T_OK(img_close(img));

	o = (struct img_create_opts){ .virtual_size = 16ull * M, .cluster_size = CS,
				      .backing_file = "base.img" };
	T_OK(img_create(at("top.img"), &o));
	T_OK(img_open(at("top.img"), IMG_OPEN_RDWR, &img));
	put(img, 30ull * CS + 4096, 8192, 300);       /* over base data: copy-up */
	put(img, 130ull * CS, 4 * CS, 130);           /* over a hole of base */
	T_OK(img_write_zeroes(img, 64ull * CS, 2 * CS));
	put(img, 14ull * M, M, 14);                   /* past base's size */
	T_OK(img_close(img));
}

/* img_read_bulk (both flag values) reads what img_pread reads. */
static void same_as_pread(struct img *img, uint64_t off, size_t len, size_t bufoff)
{
	uint8_t *want = malloc(len + 1), *mem, *got;
	unsigned flags[] = { 0, IMG_READ_DIRECT };

	T_ASSERT(want && !posix_memalign((void **)&mem, 4096, len + 8192));
	T_EQ(img_pread(img, want, len, off), len);
	got = mem + bufoff;
	for (unsigned f = 0; f < 2; f++) {
		memset(got, 0xa5, len);
		T_EQ(img_read_bulk(img, got, len, off, flags[f]), len);
		if (memcmp(got, want, len))
			T_FAIL("img_read_bulk(%llu, %zu, buf+%zu, flags %u) differs from img_pread",
			       (unsigned long long)off, len, bufoff, flags[f]);
	}
	free(want);
	free(mem);
}

static void check_runs(struct img *img, unsigned flags)
{
	struct img_info in;
	uint64_t off = 0;
	unsigned last = 99;
	uint8_t *b = malloc(16 * M);

	T_ASSERT(b);
	T_OK(img_info(img, &in));
	for (;;) {
		struct img_run r;
		T_OK(img_next_run(img, off, flags, &r));
		T_EQ(r.offset, off);
		if (!r.length)
			break;
		T_ASSERT(r.length <= in.virtual_size - off);
		T_ASSERT(r.type != last);          /* runs alternate */
		T_ASSERT(flags & IMG_RUN_TOP || r.type != IMG_RUN_BACKING);
		/* a ZERO run reads zeros; with IMG_RUN_TOP the map agrees */
		if (r.type == IMG_RUN_ZERO) {
			T_EQ(img_pread(img, b, r.length, off), r.length);
			for (uint64_t i = 0; i < r.length; i++)
				if (b[i])
					T_FAIL("ZERO run at %llu has data at +%llu",
					       (unsigned long long)off, (unsigned long long)i);
		}
		for (uint64_t p = off; p < off + r.length; ) {
			struct img_extent e;
			T_OK(img_map(img, p, &e));
			T_ASSERT(e.length);
			if (r.type == IMG_RUN_DATA)
				T_ASSERT(e.type == IMG_EXTENT_DATA || e.type == IMG_EXTENT_COMPRESSED);
			if (r.type == IMG_RUN_BACKING)
				T_ASSERT(e.depth > 0 || e.type == IMG_EXTENT_UNALLOCATED);
			if ((flags & IMG_RUN_TOP) && r.type != IMG_RUN_BACKING)
				T_EQ(e.depth, 0);
			p += e.length < off + r.length - p ? e.length : off + r.length - p;
		}
		last = r.type;
		off += r.length;
	}
	T_EQ(off, in.virtual_size);
	{
		struct img_run r;
		T_EQ(img_next_run(img, in.virtual_size + 512, 0, &r), -EINVAL);
		T_EQ(img_next_run(img, 0, 0x80, &r), -EINVAL);
	}
	free(b);
}

static void t_chain(unsigned oflags)
{
	struct img *img;
	struct img_info in;
	struct img_run r;

	T_OK(img_open(at("top.img"), oflags, &img));
	T_OK(img_info(img, &in));
	printf("  engine %s\n", in.io_engine == IMG_IO_ENGINE_URING ? "io_uring" : "posix");
	same_as_pread(img, 0, 16 * M, 0);
	same_as_pread(img, 0, 16 * M, 512);           /* buffer not aligned */
	same_as_pread(img, 20 * CS + 512, 7 * CS + 1000, 0);
	same_as_pread(img, 119 * CS, 6 * CS, 4096);  /* compressed */
	same_as_pread(img, 12ull * M - 4096, 8192, 0); /* across base's end */
	same_as_pread(img, 16ull * M - 512, 512, 0);
	same_as_pread(img, 5 * CS, 0, 0);
	{
		uint8_t b[8];
		T_EQ(img_read_bulk(img, b, 8, 16ull * M - 4, 0), -EINVAL);
		T_EQ(img_read_bulk(img, b, 8, 0, 0x80), -EINVAL);
	}
	check_runs(img, 0);
	check_runs(img, IMG_RUN_TOP);
	/* the runs say what was written: base data at 20 clusters, the
	 * delta's own zeros at 64 over base data */
	T_OK(img_next_run(img, 20 * CS, 0, &r));
	T_EQ(r.type, IMG_RUN_DATA);
	T_OK(img_next_run(img, 64 * CS, 0, &r));
	T_EQ(r.type, IMG_RUN_ZERO);
	T_OK(img_next_run(img, 20 * CS, IMG_RUN_TOP, &r));
	T_EQ(r.type, IMG_RUN_BACKING);
	T_OK(img_next_run(img, 130 * CS, IMG_RUN_TOP, &r));
	T_EQ(r.type, IMG_RUN_DATA);
	T_EQ(r.length, 4 * CS);
	/* a run of data spans clusters whose host order is reversed, the
	 * compressed ones and the backing's */
	T_OK(img_next_run(img, 120 * CS, 0, &r));
	T_EQ(r.type, IMG_RUN_DATA);
	T_EQ(r.offset + r.length, 124 * CS);
	T_OK(img_close(img));

	/* the backing image alone, and the delta without its chain */
	T_OK(img_open(at("base.img"), oflags, &img));
	same_as_pread(img, 0, 12 * M, 0);
	check_runs(img, 0);
	check_runs(img, IMG_RUN_TOP);   /* standalone: no BACKING run */
	T_OK(img_close(img));
	T_OK(img_open(at("top.img"), oflags | IMG_OPEN_NO_BACKING, &img));
	same_as_pread(img, 0, 16 * M, 0);
	check_runs(img, 0);
	T_OK(img_next_run(img, 20 * CS, IMG_RUN_TOP, &r));
	T_EQ(r.type, IMG_RUN_BACKING);   /* still the chain's, unread */
	T_OK(img_close(img));
}

static void copy_file(const char *from, const char *to)
{
	char cmd[9000];
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
	T_OK(system(cmd));
}

/* Host offset of virtual offset v (a data or compressed cluster). */
static uint64_t host_of(struct img *img, uint64_t v)
{
	struct img_extent e;
	T_OK(img_map(img, v, &e));
	T_ASSERT(e.type == IMG_EXTENT_DATA || e.type == IMG_EXTENT_COMPRESSED);
	return e.host_offset;
}

static void t_hostile(void)
{
	struct img *img;
	uint64_t h;
	int fd;

	/* the file ends 1000 bytes into a data cluster (it still starts in
	 * the file, FORMAT.md 4.1): the direct read is short at an unaligned
	 * end, the rest reads as zeros */
	struct img_create_opts o = { .virtual_size = 4 * M, .cluster_size = CS };
	T_OK(img_create(at("cut.img"), &o));
	T_OK(img_open(at("cut.img"), IMG_OPEN_RDWR, &img));
	put(img, 2 * CS, 2 * CS, 7);
	put(img, 10 * CS, CS, 8);
	h = host_of(img, 10 * CS);
	T_OK(img_close(img));
	T_OK(truncate(at("cut.img"), (off_t)(h + 1000)));
	for (int u = 0; u < 2; u++) {
		T_OK(img_open(at("cut.img"), u ? IMG_OPEN_IO_URING : 0, &img));
		same_as_pread(img, 0, 4 * M, 0);
		same_as_pread(img, 10 * CS, CS, 0);
		T_OK(img_close(img));
	}

	/* a data cluster mapped past the end of the file: refused at open;
	 * under IMG_OPEN_CHECK the entry is cleared and reads as zeros */
	T_OK(truncate(at("cut.img"), (off_t)h - CS));
	T_EQ(img_open(at("cut.img"), 0, &img), -EUCLEAN);
	T_OK(img_open(at("cut.img"), IMG_OPEN_CHECK, &img));
	same_as_pread(img, 0, 4 * M, 0);
	T_OK(img_close(img));

	/* a damaged compressed payload: the error img_pread gives */
	copy_file(at("base.img"), at("badcomp.img"));
	T_OK(img_open(at("badcomp.img"), 0, &img));
	h = host_of(img, 121 * CS);
	T_OK(img_close(img));
	fd = open(at("badcomp.img"), O_WRONLY);
	T_ASSERT(fd >= 0);
	{
		uint8_t junk[512];
		fill(junk, sizeof(junk), 99);
		T_EQ(pwrite(fd, junk, sizeof(junk), (off_t)h), sizeof(junk));
	}
	close(fd);
	T_OK(img_open(at("badcomp.img"), 0, &img));
	{
		uint8_t *b = malloc(4 * CS);
		ssize_t want = img_pread(img, b, 4 * CS, 120 * CS);
		T_ASSERT(want < 0);
		T_EQ(img_read_bulk(img, b, 4 * CS, 120 * CS, IMG_READ_DIRECT), want);
		T_ASSERT(strstr(img_last_error(), "badcomp.img"));
		/* the clusters around it still read */
		same_as_pread(img, 0, 120 * CS, 0);
		free(b);
	}
	T_OK(img_close(img));
}

/* Pages of fd's file [off, off + len) resident in the page cache. */
static size_t resident(int fd, uint64_t off, uint64_t len)
{
	long ps = sysconf(_SC_PAGESIZE);
	size_t n = (size_t)(len / (uint64_t)ps), k = 0;
	unsigned char *v = malloc(n);
	void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, (off_t)off);

	T_ASSERT(v && m != MAP_FAILED);
	T_OK(mincore(m, len, v));
	for (size_t i = 0; i < n; i++)
		k += v[i] & 1;
	munmap(m, len);
	free(v);
	return k;
}

static void t_cache_advise(void)
{
	struct img_create_opts o = { .virtual_size = 64 * M, .cluster_size = CS };
	struct img *img;
	uint8_t *b;
	uint64_t h1, h2, pages = 4 * M / (uint64_t)sysconf(_SC_PAGESIZE);
	int fd;

	T_ASSERT(!posix_memalign((void **)&b, 4096, 8 * M));
	T_OK(img_create(at("cache.img"), &o));
	T_OK(img_open(at("cache.img"), IMG_OPEN_RDWR, &img));
	put(img, 8 * M, 4 * M, 1);     /* A: [8, 12) MiB of the disk */
	put(img, 20 * M, 4 * M, 3);    /* between them on the host */
	put(img, 40 * M, 4 * M, 2);    /* B: [40, 44) MiB */
	T_OK(img_flush(img));
	h1 = host_of(img, 8 * M);
	h2 = host_of(img, 40 * M);
	T_OK(img_close(img));
	T_ASSERT(h2 >= h1 + 8 * M);    /* 4 MiB apart: B widened misses A */

	T_OK(img_open(at("cache.img"), 0, &img));
	fd = open(at("cache.img"), O_RDONLY);
	T_ASSERT(fd >= 0);
	T_EQ(img_pread(img, b, 4 * M, 8 * M), 4 * M);
	T_EQ(img_pread(img, b, 4 * M, 40 * M), 4 * M);
	T_OK(img_cache_advise(img, 40 * M, 4 * M, IMG_ADVISE_DONTNEED));   /* B only */
	if (resident(fd, h1, 4 * M) < pages || resident(fd, h2, 4 * M) == pages) {
		printf("  the file system does not cache here, or keeps its pages (tmpfs): "
		       "cache advice and direct reads not checked\n");
	} else {
		T_EQ(resident(fd, h2, 4 * M), 0);
		T_EQ(resident(fd, h1, 4 * M), pages);
		/* a range with no data: nothing */
		T_OK(img_cache_advise(img, 28 * M, 8 * M, IMG_ADVISE_DONTNEED));
		T_EQ(resident(fd, h1, 4 * M), pages);
		/* one sector in the middle of A: its 2 MiB folio boundaries
		 * (inside A: A starts on a cluster boundary) */
		T_OK(img_cache_advise(img, 10 * M + 512, 512, IMG_ADVISE_DONTNEED));
		T_EQ(resident(fd, h1, 4 * M), pages / 2);
		T_EQ(resident(fd, h1 + 2 * M, 4096), 0);
		/* clipped to the disk */
		T_OK(img_cache_advise(img, 0, UINT64_MAX, IMG_ADVISE_DONTNEED));
		T_EQ(resident(fd, h1, 4 * M), 0);
		/* direct reads leave the cache alone, on both engines; bulk
		 * reads without IMG_READ_DIRECT fill it */
		for (int u = 0; u < 2; u++) {
			struct img *i2;
			T_OK(img_open(at("cache.img"), u ? IMG_OPEN_IO_URING : 0, &i2));
			T_OK(img_cache_advise(i2, 0, UINT64_MAX, IMG_ADVISE_DONTNEED));
			T_EQ(resident(fd, h1, 4 * M), 0);
			T_EQ(img_read_bulk(i2, b, 4 * M, 8 * M, IMG_READ_DIRECT), 4 * M);
			T_EQ(resident(fd, h1, 4 * M), 0);
			T_EQ(img_read_bulk(i2, b, 4 * M, 8 * M, 0), 4 * M);
			T_EQ(resident(fd, h1, 4 * M), pages);
			T_OK(img_close(i2));
		}
		T_OK(img_cache_advise(img, 8 * M, 4 * M, IMG_ADVISE_WILLNEED));
	}
	T_EQ(img_cache_advise(img, 0, M, 0), -EINVAL);
	T_EQ(img_cache_advise(img, 0, M, 77), -EINVAL);
	T_OK(img_cache_advise(img, 128 * M, M, IMG_ADVISE_DONTNEED));  /* past the disk */
	close(fd);
	T_OK(img_close(img));
	free(b);
}

/* The table: read_direct reads what pread reads. */
static void table_reads(struct img_io *io, int expect_ops)
{
	uint64_t size;
	uint8_t *mem, *want;
	struct img_io_req q[4];

	if (!expect_ops) {
		T_ASSERT(!io->ops->advise && !io->ops->read_direct && !io->ops->seek_data);
		return;
	}
	T_ASSERT(io->ops->advise && io->ops->read_direct && io->ops->seek_data);
	T_OK(io->ops->size(io, &size));
	T_ASSERT(size > 3 * M && size % 4096);
	T_ASSERT(!posix_memalign((void **)&mem, 4096, 4 * M));
	want = malloc(4 * M);
	/* 1 MiB in the file, one across its end, one past it */
	q[0] = (struct img_io_req){ .buf = mem, .len = M, .off = 2 * M, .op = IMG_IO_OP_READ };
	q[1] = (struct img_io_req){ .buf = mem + M, .len = M, .off = (size & ~4095ull) - 4096,
				    .op = IMG_IO_OP_READ };
	q[2] = (struct img_io_req){ .buf = mem + 2 * M, .len = 8192, .off = size + 8192 * 4,
				    .op = IMG_IO_OP_READ };
	memset(mem, 0xa5, 4 * M);
	T_OK(io->ops->read_direct(io, q, 3));
	for (int i = 0; i < 3; i++) {
		T_OK(q[i].result);
		T_OK(io->ops->pread(io, want, q[i].len, q[i].off));
		if (memcmp(want, q[i].buf, q[i].len))
			T_FAIL("%s: read_direct request %d differs from pread", io->name, i);
	}
	T_OK(io->ops->advise(io, 0, size, IMG_ADVISE_DONTNEED));
	T_OK(io->ops->advise(io, 0, M, IMG_ADVISE_WILLNEED));
	free(want);
	free(mem);
}

static void t_table(void)
{
	struct img_io *io, *f;
	struct img_io_req q[3];
	uint8_t *mem;
	int r;

	/* a file whose size is not a multiple of 4096 */
	{
		uint8_t *b = malloc(3 * M + 1000);
		int fd = open(at("odd.bin"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
		T_ASSERT(b && fd >= 0);
		fill(b, 3 * M + 1000, 5);
		T_EQ(write(fd, b, 3 * M + 1000), 3 * M + 1000);
		close(fd);
		free(b);
	}
	T_OK(img_io_posix_open(at("odd.bin"), IMG_IO_RDONLY, &io));
	table_reads(io, 1);
	io->ops->close(io);
	T_OK(img_io_posix_open(at("odd.bin"), IMG_IO_RDONLY, &io));
	T_OK(imgi_io_fault_new(io, &f));
	table_reads(f, 1);
	f->ops->close(f);
	r = img_io_uring_open(at("odd.bin"), IMG_IO_RDONLY, &io);
	if (r == 0) {
		table_reads(io, 1);
		io->ops->close(io);
	} else {
		printf("  io_uring unavailable (%s): its table not checked\n", img_strerror(r));
	}
	T_OK(img_io_mem_new("abc", 3, &io));
	table_reads(io, 0);
	io->ops->close(io);
	T_OK(imgi_io_crash_new("abc", 3, &io));
	table_reads(io, 0);
	io->ops->close(io);

	/* the fault wrapper fails the request it is armed for (each
	 * request a read), and only that one */
	T_OK(img_io_posix_open(at("odd.bin"), IMG_IO_RDONLY, &io));
	T_OK(imgi_io_fault_new(io, &f));
	T_ASSERT(!posix_memalign((void **)&mem, 4096, 3 * 4096));
	for (int i = 0; i < 3; i++)
		q[i] = (struct img_io_req){ .buf = mem + i * 4096, .len = 4096,
					    .off = (uint64_t)i * 4096, .op = IMG_IO_OP_READ };
	imgi_io_fault_arm(f, IMG_FAULT_READ, 2, EIO, 0);
	T_EQ(f->ops->read_direct(f, q, 3), -EIO);
	T_OK(q[0].result);
	T_EQ(q[1].result, -EIO);
	T_OK(q[2].result);
	T_EQ(imgi_io_fault_fired(f), 1);
	T_EQ(imgi_io_fault_calls(f), 3);
	free(mem);
	f->ops->close(f);
}

/* The temporary directory goes at the end of its sub-test and on every
 * exit (T_FAIL included). */
static void cleanup(void)
{
	char cmd[4200];

	if (!dir[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd))
		fprintf(stderr, "%s: not removed\n", dir);
	dir[0] = 0;
}

static void new_dir(void)
{
	const char *tmp = getenv("TMPDIR");

	cleanup();
	snprintf(dir, sizeof(dir), "%s/libimg-bulk.XXXXXX", tmp && *tmp ? tmp : "/var/tmp");
	if (!mkdtemp(dir)) {
		dir[0] = 0;
		T_FAIL("mkdtemp %s", dir);
	}
}

static void chain_posix(void)
{
	new_dir();
	make_chain();
	t_chain(0);
	cleanup();
}

static void chain_io_uring(void)
{
	new_dir();
	make_chain();
	t_chain(IMG_OPEN_IO_URING);
	cleanup();
}

static void hostile(void)
{
	new_dir();
	make_chain();   /* base.img, whose compressed payload is damaged */
	t_hostile();
	cleanup();
}

static void cache_advice(void)
{
	new_dir();
	t_cache_advise();
	cleanup();
}

static void io_table(void)
{
	new_dir();
	t_table();
	cleanup();
}

static const struct t_case cases[] = {
	T_CASE(chain_posix), T_CASE(chain_io_uring), T_CASE(hostile), T_CASE(cache_advice),
	T_CASE(io_table),
};

int main(int argc, char **argv)
{
	atexit(cleanup);
	return T_MAIN(argc, argv, cases);
}
