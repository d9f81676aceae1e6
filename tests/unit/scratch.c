/* SPDX-License-Identifier: MIT */
/* IMG_OPEN_SCRATCH (FORMAT.md 6, "Unpublished files"): commits write BAT
 * blocks in place without the log.  Checked here:
 *  - the image reads back the same after close and reopen, and img_check
 *    finds nothing;
 *  - the whole build syncs far fewer times than a normal open, and its
 *    close syncs at most twice;
 *  - transactions left in the log by an earlier writer that died are
 *    replayed, and never replayed again over the scratch writer's blocks
 *    (every entry changes after them);
 *  - a read-only scratch open is refused. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libimg.h"
#include "../helpers/tassert.h"

#define CS (64u << 10)
#define VS (64u << 20)

/* A pass-through backend over a memory one that counts syncs and does
 * not free the memory backend on close, so the test can look after. */
struct counting {
	struct img_io io;
	struct img_io *in;
	unsigned flushes;
};

static struct img_io *IN(struct img_io *io) { return ((struct counting *)io)->in; }
static int c_pread(struct img_io *io, void *b, size_t n, uint64_t o) { return IN(io)->ops->pread(IN(io), b, n, o); }
static int c_pwrite(struct img_io *io, const void *b, size_t n, uint64_t o) { return IN(io)->ops->pwrite(IN(io), b, n, o); }
static int c_punch(struct img_io *io, uint64_t o, uint64_t n) { return IN(io)->ops->punch(IN(io), o, n); }
static int c_truncate(struct img_io *io, uint64_t s) { return IN(io)->ops->truncate(IN(io), s); }
static int c_size(struct img_io *io, uint64_t *s) { return IN(io)->ops->size(IN(io), s); }
static void c_close(struct img_io *io) { (void)io; }
static int c_flush(struct img_io *io)
{
	((struct counting *)io)->flushes++;
	return IN(io)->ops->flush(IN(io));
}

static const struct img_io_ops counting_ops = {
	.pread = c_pread, .pwrite = c_pwrite, .flush = c_flush, .punch = c_punch,
	.truncate = c_truncate, .size = c_size, .close = c_close,
};

static void counting_init(struct counting *c, struct img_io *in)
{
	memset(c, 0, sizeof(*c));
	c->io.ops = &counting_ops;
	c->io.name = "scratch.img";
	c->in = in;
}

static uint8_t buf[4 * CS];

static void fill(unsigned seed)
{
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 11));
}

/* Writes 4-cluster runs with seed s all over the disk, every 3rd run
 * followed by a discard of its second cluster. */
static void build(struct img *img, unsigned s)
{
	for (uint64_t off = 0, k = 0; off < VS; off += 2 * sizeof(buf), k++) {
		fill(s + (unsigned)k);
		T_EQ(img_pwrite(img, buf, sizeof(buf), off), sizeof(buf));
		if (k % 3 == 0)
			T_OK(img_discard(img, off + CS, CS));
	}
}

static void verify(struct img *img, unsigned s)
{
	static uint8_t got[sizeof(buf)];
	struct img_check_result res;

	for (uint64_t off = 0, k = 0; off < VS; off += 2 * sizeof(buf), k++) {
		fill(s + (unsigned)k);
		if (k % 3 == 0)
			memset(buf + CS, 0, CS);
		T_EQ(img_pread(img, got, sizeof(got), off), sizeof(got));
		T_ASSERT(memcmp(got, buf, sizeof(got)) == 0);
	}
	T_OK(img_check(img, NULL, &res));
	T_EQ(res.corruptions, 0);
	T_EQ(res.leaks, 0);
}

/* Builds an image with the given open flags; returns the syncs of the
 * whole build and of the close alone, leaves the bytes in *mem. */
static void build_counted(unsigned flags, struct img_io **mem, unsigned *total, unsigned *at_close)
{
	struct img_create_opts o = { .virtual_size = VS, .cluster_size = CS };
	struct counting c;
	struct img *img;
	unsigned before;

	T_OK(img_io_mem_new(NULL, 0, mem));
	T_OK(img_create_io(*mem, &o));
	counting_init(&c, *mem);
	T_OK(img_open_io(&c.io, IMG_OPEN_RDWR | flags, &img));
	build(img, 1);
	T_OK(img_flush(img));
	build(img, 2);
	before = c.flushes;
	T_OK(img_close(img));
	*total = c.flushes;
	*at_close = c.flushes - before;
}

int main(void)
{
	struct img_io *mem, *mem2;
	struct img *img, *dead;
	struct counting c2;
	unsigned n_total, n_close, s_total, s_close;
	size_t len;
	void *copy;

	/* read-only scratch: refused */
	T_OK(img_io_mem_new(NULL, 0, &mem));
	{
		struct img_create_opts o = { .virtual_size = VS, .cluster_size = CS };
		T_OK(img_create_io(mem, &o));
	}
	T_EQ(img_open_io(mem, IMG_OPEN_SCRATCH, &img), -EINVAL);

	/* the same build, normal and scratch */
	build_counted(0, &mem, &n_total, &n_close);
	T_OK(img_open_io(mem, 0, &img));
	verify(img, 2);
	T_OK(img_close(img));
	build_counted(IMG_OPEN_SCRATCH, &mem, &s_total, &s_close);
	T_OK(img_open_io(mem, IMG_OPEN_RDWR, &img));
	verify(img, 2);
	T_OK(img_close(img));
	printf("syncs: normal %u (close %u), scratch %u (close %u)\n", n_total, n_close, s_total,
	       s_close);
	T_ASSERT(s_close <= 2);
	T_ASSERT(s_close < n_close);
	T_ASSERT(s_total < n_total);

	/* a writer dies with transactions in the log; a scratch writer then
	 * changes every entry: the old transactions must not come back */
	T_OK(img_io_mem_new(NULL, 0, &mem));
	{
		struct img_create_opts o = { .virtual_size = VS, .cluster_size = CS };
		T_OK(img_create_io(mem, &o));
	}
	T_OK(img_open_io(mem, IMG_OPEN_RDWR, &dead));
	build(dead, 3);
	T_OK(img_flush(dead));          /* committed to the log, not in place */
	{
		const void *d = img_io_mem_data(mem, &len);
		copy = malloc(len);
		T_ASSERT(copy);
		memcpy(copy, d, len);
	}
	T_OK(img_io_mem_adopt(copy, len, &mem2));
	img_close(dead);
	counting_init(&c2, mem2);
	T_OK(img_open_io(&c2.io, IMG_OPEN_RDWR | IMG_OPEN_SCRATCH, &img));
	verify(img, 3);                 /* replayed */
	/* every entry changes: the first half becomes unallocated, the
	 * second half is written anew */
	T_OK(img_discard(img, 0, VS));
	fill(9);
	for (uint64_t off = VS / 2; off < VS; off += sizeof(buf))
		T_EQ(img_pwrite(img, buf, sizeof(buf), off), sizeof(buf));
	T_OK(img_close(img));
	T_OK(img_open_io(mem2, 0, &img));
	{
		static uint8_t got[sizeof(buf)], zero[sizeof(buf)];
		struct img_check_result res;
		for (uint64_t off = 0; off < VS; off += sizeof(buf)) {
			T_EQ(img_pread(img, got, sizeof(got), off), sizeof(got));
			T_ASSERT(memcmp(got, off < VS / 2 ? zero : buf, sizeof(got)) == 0);
		}
		T_OK(img_check(img, NULL, &res));
		T_EQ(res.corruptions, 0);
		T_EQ(res.leaks, 0);
	}
	T_OK(img_close(img));
	printf("scratch: ok\n");
	return 0;
}
