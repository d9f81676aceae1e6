/* SPDX-License-Identifier: MIT */
/* The crash-simulating backend: pending operations, flush, power loss at
 * the nth mutating call, and materialization (keep, drop, tear). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "testio.h"
#include "../helpers/tassert.h"

#define S 512u

static int wr(struct img_io *io, uint8_t v, size_t len, uint64_t off)
{
	uint8_t *buf = malloc(len);
	int r;

	T_ASSERT(buf);
	memset(buf, v, len);
	r = io->ops->pwrite(io, buf, len, off);
	free(buf);
	return r;
}

static uint64_t io_size(struct img_io *io)
{
	uint64_t sz;
	T_OK(io->ops->size(io, &sz));
	return sz;
}

static uint8_t byte_at(struct img_io *io, uint64_t off)
{
	uint8_t b;
	T_OK(io->ops->pread(io, &b, 1, off));
	return b;
}

static struct img_io *mat(struct img_io *c, enum imgi_crash_mode mode, uint64_t seed,
			  struct imgi_crash_stats *st)
{
	struct img_io *m;
	T_OK(imgi_io_crash_materialize(c, mode, seed, st, &m));
	return m;
}

/* Reads see every operation at once; only flushed ones are durable. */
static void test_pending_and_flush(void)
{
	uint8_t init[2 * S];
	struct img_io *c, *m;
	struct imgi_crash_stats st;

	memset(init, 0x11, sizeof(init));
	T_OK(imgi_io_crash_new(init, sizeof(init), &c));
	T_ASSERT(c->ops->lock == NULL && c->ops->usage == NULL);
	T_EQ(io_size(c), 2 * S);
	T_OK(wr(c, 0x22, S, S));
	T_OK(wr(c, 0x33, S, 4 * S));
	T_EQ(byte_at(c, S), 0x22);
	T_EQ(io_size(c), 5 * S);
	T_EQ(imgi_io_crash_pending(c), 2);
	T_EQ(imgi_io_crash_events(c), 2);

	m = mat(c, IMG_CRASH_DROP_ALL, 0, &st);
	T_EQ(io_size(m), 2 * S);
	T_EQ(byte_at(m, S), 0x11);
	T_EQ(st.dropped, 2);
	T_EQ(st.kept + st.torn, 0);
	m->ops->close(m);

	m = mat(c, IMG_CRASH_KEEP_ALL, 0, &st);
	T_EQ(io_size(m), 5 * S);
	T_EQ(byte_at(m, S), 0x22);
	T_EQ(byte_at(m, 3 * S), 0);
	T_EQ(byte_at(m, 4 * S), 0x33);
	T_EQ(st.kept, 2);
	m->ops->close(m);

	T_OK(c->ops->flush(c));
	T_EQ(imgi_io_crash_pending(c), 0);
	T_EQ(imgi_io_crash_events(c), 3);
	T_OK(wr(c, 0x44, S, 0));
	m = mat(c, IMG_CRASH_DROP_ALL, 0, NULL);
	T_EQ(io_size(m), 5 * S);
	T_EQ(byte_at(m, 0), 0x11);
	T_EQ(byte_at(m, S), 0x22);
	T_EQ(byte_at(m, 4 * S), 0x33);
	m->ops->close(m);
	c->ops->close(c);
}

/* Punches and truncates are pending like writes, and order is kept. */
static void test_punch_truncate_order(void)
{
	struct img_io *c, *m;

	T_OK(imgi_io_crash_new(NULL, 0, &c));
	T_OK(wr(c, 0x55, 16 * S, 0));
	T_OK(c->ops->flush(c));
	T_OK(c->ops->punch(c, 2 * S, 2 * S));
	T_OK(c->ops->truncate(c, 8 * S));
	T_OK(wr(c, 0x66, S, 10 * S));
	T_EQ(byte_at(c, 2 * S), 0);
	T_EQ(byte_at(c, 9 * S), 0);       /* cut by the truncate, then a hole */
	T_EQ(io_size(c), 11 * S);

	m = mat(c, IMG_CRASH_KEEP_ALL, 0, NULL);
	T_EQ(io_size(m), 11 * S);
	T_EQ(byte_at(m, 2 * S), 0);
	T_EQ(byte_at(m, 4 * S), 0x55);
	T_EQ(byte_at(m, 9 * S), 0);
	T_EQ(byte_at(m, 10 * S), 0x66);
	m->ops->close(m);

	m = mat(c, IMG_CRASH_DROP_ALL, 0, NULL);
	T_EQ(io_size(m), 16 * S);
	T_EQ(byte_at(m, 2 * S), 0x55);
	T_EQ(byte_at(m, 9 * S), 0x55);
	m->ops->close(m);
	c->ops->close(c);
}

/* Random materialization: every sector of a pending write is old or new,
 * two writes to one sector give old, first or second; across seeds every
 * choice shows up, including a torn write with both old and new sectors;
 * the same seed gives the same disk. */
static void test_random(void)
{
	enum { N = 8 };
	struct img_io *c, *m, *m2;
	uint64_t seen_kept = 0, seen_dropped = 0, seen_torn = 0, mixed = 0;
	int seen_val[4] = { 0 };

	T_OK(imgi_io_crash_new(NULL, 0, &c));
	T_OK(wr(c, 0x10, N * S, 0));
	T_OK(c->ops->flush(c));
	T_OK(wr(c, 0x20, N * S, 0));          /* op 1 */
	T_OK(wr(c, 0x30, 1, 0));              /* op 2: first byte only */
	for (uint64_t seed = 1; seed <= 300; seed++) {
		struct imgi_crash_stats st;
		uint8_t a[N * S], b[N * S];
		int old = 0, new = 0;

		m = mat(c, IMG_CRASH_RANDOM, seed, &st);
		T_EQ(st.kept + st.dropped + st.torn, 2);
		seen_kept += st.kept;
		seen_dropped += st.dropped;
		seen_torn += st.torn;
		T_OK(m->ops->pread(m, a, sizeof(a), 0));
		T_EQ(io_size(m), N * S);
		switch (a[0]) {
		case 0x10: seen_val[0] = 1; break;
		case 0x20: seen_val[1] = 1; break;
		case 0x30: seen_val[2] = 1; break;
		default: T_FAIL("seed %llu: byte 0 is %#x", (unsigned long long)seed, a[0]);
		}
		for (unsigned s = 0; s < N; s++) {
			for (unsigned i = s ? 0 : 1; i < S; i++)
				if (a[s * S + i] != a[s * S + (s ? 0 : 1)])
					T_FAIL("seed %llu: sector %u torn inside", (unsigned long long)seed, s);
			if (s) {
				T_ASSERT(a[s * S] == 0x10 || a[s * S] == 0x20);
				old += a[s * S] == 0x10;
				new += a[s * S] == 0x20;
			}
		}
		if (old && new)
			mixed++;
		m2 = mat(c, IMG_CRASH_RANDOM, seed, NULL);
		T_OK(m2->ops->pread(m2, b, sizeof(b), 0));
		T_ASSERT(memcmp(a, b, sizeof(a)) == 0);
		m->ops->close(m);
		m2->ops->close(m2);
	}
	T_ASSERT(seen_kept && seen_dropped && seen_torn && mixed);
	T_ASSERT(seen_val[0] && seen_val[1] && seen_val[2]);
	/* The crash backend itself is unchanged by materializing. */
	T_EQ(byte_at(c, 0), 0x30);
	T_EQ(byte_at(c, S), 0x20);
	T_EQ(imgi_io_crash_pending(c), 2);
	c->ops->close(c);
}

/* A torn punch zeroes some sectors; a truncate is kept or dropped whole. */
static void test_random_punch_truncate(void)
{
	struct img_io *c, *m;
	int punch_mixed = 0, sizes[2] = { 0 };

	T_OK(imgi_io_crash_new(NULL, 0, &c));
	T_OK(wr(c, 0x77, 8 * S, 0));
	T_OK(c->ops->flush(c));
	T_OK(c->ops->punch(c, 0, 4 * S));
	T_OK(c->ops->truncate(c, 6 * S));
	for (uint64_t seed = 1; seed <= 200; seed++) {
		int z = 0;
		uint64_t sz;

		m = mat(c, IMG_CRASH_RANDOM, seed, NULL);
		sz = io_size(m);
		T_ASSERT(sz == 6 * S || sz == 8 * S);
		sizes[sz == 6 * S] = 1;
		for (unsigned s = 0; s < 4; s++) {
			uint8_t v = byte_at(m, s * S);
			T_ASSERT(v == 0 || v == 0x77);
			z += v == 0;
		}
		T_EQ(byte_at(m, 5 * S), 0x77);
		if (z && z < 4)
			punch_mixed = 1;
		m->ops->close(m);
	}
	T_ASSERT(punch_mixed && sizes[0] && sizes[1]);
	c->ops->close(c);
}

/* Power loss at the nth mutating call. */
static void test_arm(void)
{
	struct img_io *c, *m;
	uint8_t b;

	T_OK(imgi_io_crash_new(NULL, 0, &c));
	imgi_io_crash_arm(c, 4);
	T_OK(wr(c, 1, S, 0));                 /* 1 */
	T_OK(c->ops->flush(c));               /* 2 */
	T_OK(c->ops->pread(c, &b, 1, 0));     /* reads are not events */
	T_OK(wr(c, 2, S, S));                 /* 3 */
	T_ASSERT(!imgi_io_crash_crashed(c));
	T_EQ(wr(c, 3, S, 2 * S), -EIO);       /* 4: power lost */
	T_ASSERT(imgi_io_crash_crashed(c));
	T_EQ(c->ops->pread(c, &b, 1, 0), -EIO);
	T_EQ(c->ops->flush(c), -EIO);
	T_EQ(wr(c, 4, S, 3 * S), -EIO);
	T_EQ(c->ops->punch(c, 0, S), -EIO);
	T_EQ(imgi_io_crash_events(c), 4);
	T_EQ(imgi_io_crash_pending(c), 2);     /* write 3 and the interrupted one */

	m = mat(c, IMG_CRASH_KEEP_ALL, 0, NULL);
	T_EQ(io_size(m), 3 * S);
	T_EQ(byte_at(m, 0), 1);
	T_EQ(byte_at(m, S), 2);
	T_EQ(byte_at(m, 2 * S), 3);
	m->ops->close(m);
	m = mat(c, IMG_CRASH_DROP_ALL, 0, NULL);
	T_EQ(io_size(m), S);
	m->ops->close(m);
	c->ops->close(c);

	/* Power lost at a flush: nothing it would have made durable is. */
	T_OK(imgi_io_crash_new(NULL, 0, &c));
	imgi_io_crash_arm(c, 2);
	T_OK(wr(c, 9, S, 0));
	T_EQ(c->ops->flush(c), -EIO);
	T_EQ(imgi_io_crash_pending(c), 1);
	m = mat(c, IMG_CRASH_DROP_ALL, 0, NULL);
	T_EQ(io_size(m), 0);
	m->ops->close(m);
	c->ops->close(c);

	/* Disarmed: runs through; arming again later counts from creation. */
	T_OK(imgi_io_crash_new(NULL, 0, &c));
	imgi_io_crash_arm(c, 1);
	imgi_io_crash_arm(c, 0);
	T_OK(wr(c, 1, S, 0));
	T_OK(c->ops->punch(c, 0, S));
	imgi_io_crash_arm(c, 3);
	T_EQ(c->ops->truncate(c, 0), -EIO);
	T_EQ(imgi_io_crash_pending(c), 3);
	c->ops->close(c);
}

static const struct t_case cases[] = {
	T_CASE(test_pending_and_flush), T_CASE(test_punch_truncate_order), T_CASE(test_random),
	T_CASE(test_random_punch_truncate), T_CASE(test_arm),
};

int main(int argc, char **argv)
{
	return T_MAIN(argc, argv, cases);
}
