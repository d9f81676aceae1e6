/* SPDX-License-Identifier: MIT */
/* Memory figures of the calling process, for the tests that bound what an
 * open costs (tests/unit/repair.c, comp_sparse.c). */
#ifndef TESTS_PROCSTAT_H
#define TESTS_PROCSTAT_H

/* The value in KiB of a line of /proc/self/status ("VmRSS:", "VmHWM:"),
 * or -1 when it cannot be read. */
long proc_status_kib(const char *key);

#endif
