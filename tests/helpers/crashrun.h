/* SPDX-License-Identifier: MIT */
/* What the crash-point programs (tests/crash/) share: the settings from the
 * environment and the choice of the points to crash at. */
#ifndef LIBIMG_TEST_CRASHRUN_H
#define LIBIMG_TEST_CRASHRUN_H

#include <stdint.h>

#include "testio.h"

struct crash_settings {
	int full;             /* CRASH_FULL set (and not "0") */
	int verbose;          /* CRASH_VERBOSE, or CRASH_ONLY given */
	const char *workload; /* CRASH_WORKLOAD, or CRASH_ONLY's: NULL = all */
	/* CRASH_ONLY=W#V:N:MODE[:SEED]: one point (only is 0 without it) */
	int only;
	unsigned variant;
	uint64_t n, seed;
	int mode;             /* enum img_crash_mode */
	char name[64];
};

/* Reads CRASH_FULL, CRASH_WORKLOAD, CRASH_ONLY and CRASH_VERBOSE into s;
 * a malformed CRASH_ONLY fails the program. */
void crash_settings_read(struct crash_settings *s);

/* The N (1-based event indices) to crash at: all of 1..events when they fit
 * in budget, else an even spread from the first to the last.  pts holds at
 * least budget entries; returns how many were chosen. */
uint64_t crash_pick_points(uint64_t events, uint64_t budget, uint64_t *pts);

/* "drop", "keep" or "random", as CRASH_ONLY spells the mode. */
const char *crash_mode_name(enum img_crash_mode m);

#endif
