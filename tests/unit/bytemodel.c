/* SPDX-License-Identifier: MIT */
/* The crash model of tests/helpers/bytemodel.c: what it allows and, more to
 * the point, what it refuses.  Named sub-tests (tassert.h), each starting
 * from the same model (setup). */
#include <string.h>

#include "../helpers/bytemodel.h"
#include "../helpers/tassert.h"

static int ok_at(const struct bytemodel *m, uint64_t off, uint8_t v)
{
	uint64_t bad;
	return bm_check(m, off, &v, 1, &bad) == 0;
}

/* 8192 bytes modelled in a 4096-byte image: a (0xa1) at 10..109 written
 * and flushed, then b (0xb2) at 50..149 written and not flushed. */
static uint8_t a[100], b[100];

static void setup(struct bytemodel *m)
{
	memset(a, 0xa1, sizeof(a));
	memset(b, 0xb2, sizeof(b));
	T_OK(bm_init(m, 4096, 8192));
	T_OK(bm_write(m, 10, a, sizeof(a)));
	bm_flush(m);
	T_OK(bm_write(m, 50, b, sizeof(b)));
}

/* Flushed and unflushed values are allowed, others are not. */
static void allowed_values(void)
{
	struct bytemodel m;

	setup(&m);
	T_ASSERT(ok_at(&m, 10, 0xa1) && !ok_at(&m, 10, 0xb2) && !ok_at(&m, 10, 0));
	T_ASSERT(ok_at(&m, 60, 0xa1) && ok_at(&m, 60, 0xb2) && !ok_at(&m, 60, 0));
	T_ASSERT(ok_at(&m, 140, 0) && ok_at(&m, 140, 0xb2) && !ok_at(&m, 140, 0xa1));
	T_ASSERT(ok_at(&m, 200, 0) && !ok_at(&m, 200, 1));
	T_ASSERT(!ok_at(&m, 9000, 1) && ok_at(&m, 9000, 0));
	bm_free(&m);
}

/* Whole-buffer checks report the first bad byte. */
static void first_bad_byte(void)
{
	struct bytemodel m;
	uint8_t buf[8192];
	uint64_t bad;

	setup(&m);
	memset(buf, 0, sizeof(buf));
	memcpy(buf + 10, a, sizeof(a));
	T_OK(bm_check(&m, 0, buf, 4096, &bad));
	T_EQ(bm_check_exact(&m, 0, buf, 4096, &bad), 1);
	T_EQ(bad, 50);
	memcpy(buf + 50, b, sizeof(b));
	T_OK(bm_check_exact(&m, 0, buf, 4096, &bad));
	buf[3000] = 7;
	T_EQ(bm_check(&m, 0, buf, 4096, &bad), 1);
	T_EQ(bad, 3000);
	bm_free(&m);
}

/* Zeroes and shrinks allow zeros; sizes since the flush are allowed; a
 * copy keeps the state it was made of. */
static void zeroes_sizes_copy(void)
{
	struct bytemodel m, c;

	setup(&m);
	T_OK(bm_zero(&m, 12, 2));
	T_ASSERT(ok_at(&m, 12, 0) && ok_at(&m, 12, 0xa1) && !ok_at(&m, 14, 0));
	T_OK(bm_resize(&m, 2048));
	T_OK(bm_resize(&m, 6144));
	T_ASSERT(bm_size_ok(&m, 4096) && bm_size_ok(&m, 2048) && bm_size_ok(&m, 6144));
	T_ASSERT(!bm_size_ok(&m, 8192));
	T_EQ(m.cur[2048], 0);
	T_OK(bm_copy(&c, &m));
	bm_flush(&m);
	T_ASSERT(!bm_size_ok(&m, 4096) && bm_size_ok(&m, 6144));
	T_ASSERT(ok_at(&m, 60, 0xb2) && !ok_at(&m, 60, 0xa1));
	/* The copy kept the state before the flush, and no more. */
	T_ASSERT(bm_size_ok(&c, 4096) && ok_at(&c, 60, 0xa1) && !ok_at(&c, 14, 0));
	T_ASSERT(!ok_at(&c, 10, 0));
	bm_free(&c);
	bm_free(&m);
}

/* Sizes past the modelled bytes: those bytes are zeros, writes refused. */
static void past_the_model(void)
{
	struct bytemodel m;

	setup(&m);
	T_OK(bm_resize(&m, 1 << 20));
	T_OK(bm_resize(&m, 8000));
	T_ASSERT(bm_size_ok(&m, 1 << 20) && ok_at(&m, 7999, 0) && !ok_at(&m, 9000, 1));
	T_ASSERT(bm_write(&m, 8190, a, 4) != 0);
	bm_free(&m);
}

static const struct t_case cases[] = {
	T_CASE(allowed_values), T_CASE(first_bad_byte), T_CASE(zeroes_sizes_copy),
	T_CASE(past_the_model),
};

int main(int argc, char **argv)
{
	return T_MAIN(argc, argv, cases);
}
