/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "procstat.h"

long proc_status_kib(const char *key)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	size_t k = strlen(key);
	long v = -1;

	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, k))
			v = strtol(line + k, NULL, 10);
	if (f)
		fclose(f);
	return v;
}
