/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

const char *crash_mode_name(enum img_crash_mode m)
{
	return m == IMG_CRASH_DROP_ALL ? "drop" : m == IMG_CRASH_KEEP_ALL ? "keep" : "random";
}
