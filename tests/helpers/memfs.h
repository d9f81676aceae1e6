/* SPDX-License-Identifier: MIT */
/*
 * A directory in memory for the path-based library calls (imgi_vfs_set):
 * files are crash backends (libimg/io_crash.c) on one shared clock, and
 * names follow the same rules: link, rename, unlink and new files take
 * effect at once for later calls but become durable only at the next
 * sync_dir.  At a power loss a prefix of the unsynced name operations
 * survives (journaling filesystems commit metadata in order), and each
 * file keeps, drops or tears its unflushed writes.  One directory: paths
 * are compared as strings, sync_dir syncs every name.  Single-threaded.
 */
#ifndef TESTS_MEMFS_H
#define TESTS_MEMFS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "testio.h"

struct memfs;

/* An empty directory; its operations count on clk (NULL: its own). */
struct memfs *memfs_new(struct imgi_crash_clock *clk);
void memfs_free(struct memfs *fs);
/* Routes the library's path calls to fs (NULL: back to POSIX). */
void memfs_install(struct memfs *fs);
/* A durable file path holding bytes. */
int memfs_add(struct memfs *fs, const char *path, const void *bytes, size_t len);
/* The directory after a power loss now: a new memfs (own clock, disarmed)
 * with mode as imgi_io_crash_materialize's and seed for the random
 * choices. */
struct memfs *memfs_materialize(struct memfs *fs, enum imgi_crash_mode mode, uint64_t seed);
/* The current names (sorted); *n of them.  Valid until the next change. */
const char *const *memfs_names(struct memfs *fs, size_t *n);
/* A copy of the current contents of path (malloc'd), or NULL. */
uint8_t *memfs_read(struct memfs *fs, const char *path, size_t *len);

#endif
