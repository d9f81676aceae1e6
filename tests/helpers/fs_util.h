/* SPDX-License-Identifier: MIT */
/* Helpers for the filesystem unit tests (tests/unit/fs_*.c): run programs,
 * move a raw disk into an image and back. */
#ifndef TESTS_FS_UTIL_H
#define TESTS_FS_UTIL_H

#include <stdint.h>

#include "libimg.h"

/* Runs a shell command (printf format); returns its exit status, or -1. */
int fsu_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* 1 if every named program is on PATH (NULL-terminated list). */
int fsu_have(const char *prog, ...);
/* Creates image path (cluster_size, virtual size = max(raw size, vsize))
 * holding the raw file's contents; all-zero chunks of 4 KiB are left
 * unwritten.  0 or -errno. */
int fsu_raw_to_img(const char *raw, const char *path, uint32_t cluster_size, uint64_t vsize);
/* Writes the first len bytes of the virtual disk of img into a new sparse
 * raw file.  0 or -errno. */
int fsu_img_to_raw(struct img *img, uint64_t len, const char *raw);
/* A directory under /tmp made for the test (removed by fsu_cleanup). */
const char *fsu_tmpdir(void);
void fsu_cleanup(void);

#endif
