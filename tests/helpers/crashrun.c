/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crashrun.h"
#include "tassert.h"

void crash_settings_read(struct crash_settings *s)
{
	const char *full = getenv("CRASH_FULL"), *only = getenv("CRASH_ONLY");
	char mode[16] = "";

	memset(s, 0, sizeof(*s));
	s->full = full && *full && strcmp(full, "0");
	s->workload = getenv("CRASH_WORKLOAD");
	s->verbose = getenv("CRASH_VERBOSE") != NULL;
	s->mode = -1;
	if (only) {
		unsigned long long n, seed = 0;
		char *hash;
		if (sscanf(only, "%63[^:]:%llu:%15[^:]:%llu", s->name, &n, mode, &seed) < 3)
			T_FAIL("CRASH_ONLY=workload#variant:N:drop|keep|random[:seed]");
		if ((hash = strchr(s->name, '#'))) {
			*hash = 0;
			s->variant = (unsigned)atoi(hash + 1);
		}
		s->only = 1;
		s->n = n;
		s->seed = seed;
		s->mode = !strcmp(mode, "drop") ? IMG_CRASH_DROP_ALL
			: !strcmp(mode, "keep") ? IMG_CRASH_KEEP_ALL : IMG_CRASH_RANDOM;
		s->workload = s->name;
		s->verbose = 1;
	}
}

uint64_t crash_pick_points(uint64_t events, uint64_t budget, uint64_t *pts)
{
	uint64_t k = 0;

	if (events <= budget) {
		for (uint64_t n = 1; n <= events; n++)
			pts[k++] = n;
		return k;
	}
	for (uint64_t i = 0; i < budget; i++) {
		uint64_t n = 1 + i * (events - 1) / (budget - 1);
		if (!k || pts[k - 1] != n)
			pts[k++] = n;
	}
	return k;
}

const char *crash_mode_name(enum imgi_crash_mode m)
{
	return m == IMG_CRASH_DROP_ALL ? "drop" : m == IMG_CRASH_KEEP_ALL ? "keep" : "random";
}

void crash_run_workload(const struct crash_settings *s, const struct crash_workload *w,
			struct crash_totals *tot)
{
	uint64_t events, npts, *pts, run = 0, passed = 0;
	uint64_t budget = s->full ? CRASH_FULL_BUDGET : w->fast_budget;
	unsigned nrandom = s->full ? 6 : 1;
	time_t t0 = time(NULL);

	events = w->dry(w->arg);
	pts = calloc(events + 1, sizeof(*pts));
	T_ASSERT(pts);
	if (s->only) {
		pts[0] = s->n;
		npts = 1;
	} else {
		npts = crash_pick_points(events, budget, pts);
	}
	if (!s->only && w->also) {
		uint8_t *on = calloc(events + 1, 1);
		T_ASSERT(on);
		for (uint64_t i = 0; i < npts; i++)
			on[pts[i]] = 1;
		w->also(w->arg, events, on);
		npts = 0;
		for (uint64_t n = 1; n <= events; n++)
			if (on[n])
				pts[npts++] = n;
		free(on);
	}
	for (uint64_t i = 0; i < npts; i++) {
		w->crash(w->arg, pts[i]);
		for (unsigned c = 0; c < (s->only ? 1 : 2 + nrandom); c++) {
			enum imgi_crash_mode mode = c == 0 ? IMG_CRASH_DROP_ALL
						 : c == 1 ? IMG_CRASH_KEEP_ALL : IMG_CRASH_RANDOM;
			uint64_t seed = c < 2 ? 0 : pts[i] * 1000 + c;
			if (s->only) {
				mode = (enum imgi_crash_mode)s->mode;
				seed = s->seed;
			}
			run++;
			passed += !w->verify(w->arg, pts[i], mode, seed);
		}
		w->release(w->arg);
	}
	printf("%-12s %5" PRIu64 " calls, crashed at %4" PRIu64 " of them, %6" PRIu64
	       " crash points, %6" PRIu64 " passed (%lds)\n", w->name, events, npts, run, passed,
	       (long)(time(NULL) - t0));
	fflush(stdout);
	tot->run += run;
	tot->passed += passed;
	free(pts);
}

uint64_t crash_run_until_done(const char *name, int (*point)(void *arg, uint64_t n, int *fired),
			      void *arg, uint64_t limit, uint64_t *passed)
{
	uint64_t n, ok = 0;
	int fired = 1;

	for (n = 1; fired; n++) {
		int f = point(arg, n, &fired);
		if (!fired && f)
			T_FAIL("%s: the operation fails without a fault", name);
		if (fired)
			ok += !f;
		if (n > limit)
			T_FAIL("%s: more than %" PRIu64 " calls", name, limit);
	}
	*passed = ok;
	return n - 2;
}

int crash_selected(const struct crash_settings *s, const char *name, unsigned v)
{
	return !(s->workload && strcmp(s->workload, name)) && !(s->only && v != s->variant);
}

int crash_summary(const char *title, const struct crash_totals *tot, long seconds)
{
	printf("SUMMARY: %s run %" PRIu64 ", passed %" PRIu64 " (%lds)\n", title, tot->run,
	       tot->passed, seconds);
	if (!tot->run)
		T_FAIL("no crash point run");
	return tot->passed == tot->run ? 0 : 1;
}
