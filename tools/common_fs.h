/* SPDX-License-Identifier: MIT */
/*
 * What the tools that deal with a filesystem inside an image share:
 * printing img_fs_probe()'s answer, checking filesystem UUIDs and labels,
 * running mkfs-like programs quietly, and copying a sparse raw file into
 * an image.
 */
#ifndef TOOLS_COMMON_FS_H
#define TOOLS_COMMON_FS_H

#include <stdint.h>

#include "common.h"

/* 1 for ext2, ext3, ext4. */
int fs_is_ext(const char *type);

/* Probes img.  0 with *fi filled, 1 when no filesystem is recognised,
 * -errno on an error (printed as a warning naming file). */
int fs_probe(const char *file, struct img *img, struct img_fs_info *fi);

/* The "filesystem" value of --json output: an object with the known
 * fields, or null when fi is NULL. */
void fs_json(struct json_out *j, const char *key, const struct img_fs_info *fi);

/* One line for humans: 'ext4, label "data", UUID 1234..., 10 GiB, 1.2 GiB
 * used (12%)'. */
const char *fs_describe(const struct img_fs_info *fi, char *buf, size_t len);

/* A new random (version 4) UUID in text form into out.  0 or -errno. */
int fs_uuid_new(char out[37]);
/* 1 when s is a UUID in text form (8-4-4-4-12 hex digits). */
int fs_uuid_valid(const char *s);
/* The longest label (bytes) the filesystem type holds (ext2/3/4 16, xfs
 * 12, btrfs 255); 0 for a type whose label cannot be set. */
size_t fs_label_max(const char *type);
/* 1 when label fits the type (fs_label_max) and, for xfs, holds no white
 * space or control character (xfs_db splits its commands at white space)
 * and is not "--" (which xfs_db reads as "no label"). */
int fs_label_valid(const char *type, const char *label);

/* Runs argv (argv[0] looked up in PATH) with stdin from /dev/null and its
 * output kept aside; when it fails, prints what it said.  Returns its exit
 * status, 127 when it could not be started, or -errno. */
int run_quiet(char *const argv[]);
/* run_quiet that also copies up to len - 1 bytes of what it printed
 * (stdout and stderr) into out, NUL-terminated. */
int run_capture(char *const argv[], char *out, size_t len);
/* run_quiet that prints nothing, even on failure. */
int run_silent(char *const argv[]);
/* run_capture that prints nothing, even on failure (the caller decides
 * what of out to show: e2fsck's exit status 1 is a success). */
int run_capture_silent(char *const argv[], char *out, size_t len);

/* Copies the data of the raw file fd (size bytes) into img at the same
 * offsets: only what SEEK_DATA finds, and within it only the 4 KiB blocks
 * that are not all zero (img_pwrite_sparse), so the image stays as thin
 * as the raw file.
 * *copied: bytes written.  pr (may be NULL): progress by offset.  0 or
 * -errno (message printed). */
int copy_raw_into_image(const char *file, int fd, uint64_t size, struct img *img,
			uint64_t *copied, struct progress *pr);

#endif
