/* SPDX-License-Identifier: MIT */
/* What the crash-point programs (tests/crash/) share: the settings from the
 * environment, the choice of the points to crash at, and the driver that
 * runs a workload once without a crash, then with power lost at each chosen
 * point, and verifies every outcome. */
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
	int mode;             /* enum imgi_crash_mode */
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
const char *crash_mode_name(enum imgi_crash_mode m);

/* One workload as the driver sees it; arg is the program's own state. */
struct crash_workload {
	const char *name;   /* "W#variant", as printed */
	/* Runs the workload without a crash (it verifies as it goes and fails
	 * the program on a mismatch); returns the number of calls that can
	 * crash (events). */
	uint64_t (*dry)(void *arg);
	/* Runs the workload with power lost at event n (1-based); what the
	 * crash left stays in arg for verify, until release. */
	void (*crash)(void *arg, uint64_t n);
	/* Reopens what the crash at n left, taken with mode and seed, and
	 * checks it against the model: 0 if it passes. */
	int (*verify)(void *arg, uint64_t n, enum imgi_crash_mode mode, uint64_t seed);
	void (*release)(void *arg);
	/* Optional: after the sample is chosen (never with CRASH_ONLY), sets
	 * on[n] for the events that must be run too (on[1..events]). */
	void (*also)(void *arg, uint64_t events, uint8_t *on);
	void *arg;
	uint64_t fast_budget;  /* events crashed at in the fast run, at most */
};

struct crash_totals {
	uint64_t run, passed;
};

/* Events the full run crashes at per workload at most (all of them when
 * there are no more); the fast run's budget is the program's. */
#define CRASH_FULL_BUDGET 3000

/* The loop every crash program runs for one workload: a dry run counts
 * the events; then, at each chosen event n (CRASH_ONLY's alone, else
 * crash_pick_points within the budget, plus what also adds), a crash at
 * n verified three ways -- every pending write dropped, every one kept,
 * and random picks (1 seed in the fast run, 6 in the full one), or
 * CRASH_ONLY's mode and seed.  Prints the line "W#v  E calls, crashed at
 * K of them, R crash points, P passed (Ts)" and adds to tot. */
void crash_run_workload(const struct crash_settings *s, const struct crash_workload *w,
			struct crash_totals *tot);

/* The other shape of the loop, for faults that are not counted in a dry
 * run: point(arg, n, &fired) runs the operation with the fault at call n
 * (1-based) and returns non-zero if what it left fails verification; n
 * goes up until a run in which no fault fired (the operation got past its
 * last call).  That run must pass, and there must be at most limit calls;
 * else the program fails, naming name.  Returns the calls (the points
 * run); *passed gets the ones that passed. */
uint64_t crash_run_until_done(const char *name, int (*point)(void *arg, uint64_t n, int *fired),
			      void *arg, uint64_t limit, uint64_t *passed);

/* Whether the settings select workload name in variant v. */
int crash_selected(const struct crash_settings *s, const char *name, unsigned v);

/* The closing "SUMMARY: TITLE run R, passed P (Ts)" since t0; the exit
 * status (a run of no point at all fails). */
int crash_summary(const char *title, const struct crash_totals *tot, long seconds);

#endif
