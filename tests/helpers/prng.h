/* SPDX-License-Identifier: MIT */
/* A small deterministic random generator (splitmix64) for tests: the same
 * seed gives the same run on every machine. */
#ifndef TESTS_PRNG_H
#define TESTS_PRNG_H

#include <stddef.h>
#include <stdint.h>

struct prng {
	uint64_t s;
};

void prng_seed(struct prng *p, uint64_t seed);
uint64_t prng_next(struct prng *p);
/* Uniform in [0, n); n > 0. */
uint64_t prng_below(struct prng *p, uint64_t n);
/* Uniform in [lo, hi]. */
uint64_t prng_range(struct prng *p, uint64_t lo, uint64_t hi);
/* Fills buf with bytes from the generator. */
void prng_fill(struct prng *p, void *buf, size_t len);

#endif
