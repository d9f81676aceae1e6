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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libimg.h"
#include "testio.h"
#include "../helpers/ioborrow.h"
#include "../helpers/tassert.h"

#define CS (64u << 10)
#define VS (64u << 20)

/* Syncs are counted by a fault backend that never fires, armed for
 * flushes only; the image gets a borrowed view of it (tests/helpers/
 * ioborrow.h), so it and the memory backend under it outlive img_close. */
static struct img_io *flush_counter(struct img_io *mem)
{
	struct img_io *f;

	T_OK(imgi_io_fault_new(io_borrow(mem), &f));
	imgi_io_fault_arm(f, IMG_FAULT_FLUSH, UINT64_MAX, EIO, 0);
	return f;
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
	struct img_io *f;
	struct img *img;
	uint64_t before;

	T_OK(img_io_mem_new(NULL, 0, mem));
	T_OK(img_create_io(*mem, &o));
	f = flush_counter(*mem);
	T_OK(img_open_io(io_borrow(f), IMG_OPEN_RDWR | flags, &img));
	build(img, 1);
	T_OK(img_flush(img));
	build(img, 2);
	before = imgi_io_fault_calls(f);
	T_OK(img_close(img));
	*total = (unsigned)imgi_io_fault_calls(f);
	*at_close = (unsigned)(imgi_io_fault_calls(f) - before);
	T_EQ(imgi_io_fault_fired(f), 0);
	f->ops->close(f);       /* the view of mem: mem stays */
}

/* read-only scratch: refused */
static void read_only_refused(void)
{
	struct img_io *mem;
	struct img *img;

	T_OK(img_io_mem_new(NULL, 0, &mem));
	{
		struct img_create_opts o = { .virtual_size = VS, .cluster_size = CS };
		T_OK(img_create_io(mem, &o));
	}
	T_EQ(img_open_io(mem, IMG_OPEN_SCRATCH, &img), -EINVAL);
}

/* the same build, normal and scratch */
static void scratch_fewer_syncs(void)
{
	struct img_io *mem;
	struct img *img;
	unsigned n_total, n_close, s_total, s_close;

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
}

/* a writer dies with transactions in the log; a scratch writer then
 * changes every entry: the old transactions must not come back */
static void dead_writer_log_not_replayed(void)
{
	struct img_io *mem, *mem2;
	struct img *img, *dead;
	size_t len;
	void *copy;

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
	T_OK(img_open_io(io_borrow(mem2), IMG_OPEN_RDWR | IMG_OPEN_SCRATCH, &img));
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
}

static const struct t_case cases[] = {
	T_CASE(read_only_refused), T_CASE(scratch_fewer_syncs),
	T_CASE(dead_writer_log_not_replayed),
};

int main(int argc, char **argv)
{
	return T_MAIN(argc, argv, cases);
}
