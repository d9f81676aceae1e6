/* SPDX-License-Identifier: MIT */
/* Unit test of the export's bounded host cache (tools/common_cache.c):
 * a model of the pages the kernel holds, fed by the drop callback, checks
 * that what is cached stays within the limit, that chunks used again
 * survive a one-pass stream (the second chance), that dirty chunks given
 * back are given back again later, that a limit of 0 keeps nothing, and
 * that resizing keeps what is inside the new size.  Exit 0 pass, 1 fail. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tools/common_cache.c"
#include "../helpers/tassert.h"

#define MIB (1ull << 20)
#define NCH 4096u                    /* chunks of the model disk */

/* The model page cache: which 2 MiB chunks hold pages, and how often each
 * was given back. */
static unsigned char held[NCH];
static unsigned drops[NCH];

static void drop(void *ctx, uint64_t off, uint64_t len)
{
	(void)ctx;
	if (len != 2 * MIB || off % (2 * MIB))
		T_FAIL("drop of %llu+%llu is not one chunk", (unsigned long long)off,
		       (unsigned long long)len);
	held[off / (2 * MIB)] = 0;
	drops[off / (2 * MIB)]++;
}

static void use(struct hcache *c, uint64_t chunk)
{
	held[chunk] = 1;            /* read first, as imgserve does */
	hcache_touch(c, chunk * 2 * MIB + 4096, 4096);
}

static unsigned nheld(void)
{
	unsigned n = 0;
	for (unsigned i = 0; i < NCH; i++)
		n += held[i];
	return n;
}

static void reset_model(void)
{
	memset(held, 0, sizeof(held));
	memset(drops, 0, sizeof(drops));
}

/* the limit holds whatever the pattern: 32 MiB = 16 chunks */
static void limit_holds(void)
{
	struct hcache c;

	reset_model();
	T_ASSERT(hcache_init(&c, 32 * MIB, NCH * 2 * MIB, 65536, drop, NULL) == 0);
	T_ASSERT(hcache_chunk_size(&c) == 2 * MIB);
	srand(7);
	for (int i = 0; i < 20000; i++) {
		use(&c, (uint64_t)rand() % NCH);
		if (nheld() > 16)
			T_FAIL("%u chunks held after %d uses (limit 16)", nheld(), i);
	}
	T_ASSERT(hcache_bytes(&c) <= 32 * MIB);
	hcache_free(&c);
}

/* a hot set used again and again survives a one-pass stream */
static void hot_set_survives_stream(void)
{
	struct hcache c;

	reset_model();
	T_ASSERT(hcache_init(&c, 32 * MIB, NCH * 2 * MIB, 65536, drop, NULL) == 0);
	for (int round = 0; round < 3; round++)
		for (uint64_t k = 0; k < 8; k++)
			use(&c, k);
	for (uint64_t k = 100; k < 1100; k++) {
		use(&c, k);
		if (k % 4 == 0)          /* the hot set stays in use */
			for (uint64_t h = 0; h < 8; h++)
				use(&c, h);
	}
	for (uint64_t h = 0; h < 8; h++)
		T_ASSERT(held[h] && drops[h] == 0);
	T_ASSERT(nheld() <= 16);
	hcache_free(&c);
}

/* a chunk given back is given back once more HC_LATE evictions
 * later (its dirty pages were written out meanwhile)... */
static void given_back_late_and_resize(void)
{
	struct hcache c;

	reset_model();
	T_ASSERT(hcache_init(&c, 32 * MIB, NCH * 2 * MIB, 65536, drop, NULL) == 0);
	for (uint64_t k = 0; k < 16 + 1 + HC_LATE; k++)
		use(&c, 2000 + k);
	T_ASSERT(drops[2000] == 2);
	T_ASSERT(drops[2001] == 1);
	/* ...unless it came back into use */
	hcache_reset(&c);
	reset_model();
	for (uint64_t k = 0; k < 17; k++)
		use(&c, 3000 + k);           /* 3000 given back once */
	T_ASSERT(drops[3000] == 1);
	use(&c, 3000);                       /* in use again */
	for (uint64_t k = 17; k < 17 + HC_LATE + 4; k++)
		use(&c, 3000 + k);
	T_ASSERT(drops[3000] == 1 || !held[3000]);
	T_ASSERT(nheld() <= 16);

	/* resizing: a smaller disk forgets chunks past its end, a larger
	 * one starts them uncached; the limit still holds */
	T_ASSERT(hcache_resize(&c, 1000 * 2 * MIB) == 0);
	T_ASSERT(c.nchunks == 1000);
	for (uint64_t k = 0; k < 200; k++)
		use(&c, k);
	T_ASSERT(nheld() <= 16 + 20);           /* chunks past the end were not counted */
	T_ASSERT(hcache_resize(&c, NCH * 2 * MIB) == 0);
	for (uint64_t k = 0; k < 500; k++)
		use(&c, (k * 37) % NCH);
	T_ASSERT(hcache_bytes(&c) <= 32 * MIB);
	hcache_free(&c);
}

/* a range across chunks counts every chunk it touches */
static void range_across_chunks(void)
{
	struct hcache c;

	reset_model();
	T_ASSERT(hcache_init(&c, 64 * MIB, NCH * 2 * MIB, 65536, drop, NULL) == 0);
	hcache_touch(&c, 2 * MIB - 512, 1024);
	T_ASSERT(hcache_bytes(&c) == 4 * MIB);
	hcache_touch(&c, (uint64_t)NCH * 2 * MIB - 4096, 1 << 20);   /* clamped at the end */
	T_ASSERT(hcache_bytes(&c) == 6 * MIB);
	hcache_free(&c);
}

/* limit 0: nothing is kept, each use is given back at once */
static void limit_zero(void)
{
	struct hcache c;

	reset_model();
	T_ASSERT(hcache_init(&c, 0, NCH * 2 * MIB, 65536, drop, NULL) == 0);
	for (uint64_t k = 0; k < 50; k++)
		use(&c, k);
	T_ASSERT(nheld() == 0);
	T_ASSERT(hcache_bytes(&c) == 0);
	hcache_free(&c);
}

/* clusters larger than 2 MiB: chunks of a cluster */
static void big_clusters(void)
{
	struct hcache c;

	T_ASSERT(hcache_init(&c, 64 * MIB, 1ull << 40, 8u << 20, drop, NULL) == 0);
	T_ASSERT(hcache_chunk_size(&c) == 8 * MIB);
	T_ASSERT(c.cap == 8);
	hcache_free(&c);
}

static const struct t_case cases[] = {
	T_CASE(limit_holds), T_CASE(hot_set_survives_stream), T_CASE(given_back_late_and_resize),
	T_CASE(range_across_chunks), T_CASE(limit_zero), T_CASE(big_clusters),
};

int main(int argc, char **argv)
{
	return T_MAIN(argc, argv, cases);
}
