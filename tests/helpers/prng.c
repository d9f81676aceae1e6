/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "prng.h"

void prng_seed(struct prng *p, uint64_t seed)
{
	p->s = seed;
}

uint64_t prng_next(struct prng *p)
{
	uint64_t z = (p->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t prng_below(struct prng *p, uint64_t n)
{
	/* Rejection keeps it exactly uniform. */
	uint64_t lim = UINT64_MAX - UINT64_MAX % n, v;
	do
		v = prng_next(p);
	while (v >= lim);
	return v % n;
}

uint64_t prng_range(struct prng *p, uint64_t lo, uint64_t hi)
{
	if (hi - lo == UINT64_MAX)
		return prng_next(p);
	return lo + prng_below(p, hi - lo + 1);
}

void prng_fill(struct prng *p, void *buf, size_t len)
{
	unsigned char *b = buf;
	while (len) {
		uint64_t v = prng_next(p);
		size_t n = len < 8 ? len : 8;
		memcpy(b, &v, n);
		b += n;
		len -= n;
	}
}
