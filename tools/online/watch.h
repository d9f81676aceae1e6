/* SPDX-License-Identifier: MIT */
/*
 * imgserve's watch over what a served image lives on and holds, reported
 * as events (events.h), one thread:
 *
 * - the host: the free space of the filesystem holding the image file
 *   (statvfs, f_bavail), every WATCH_TICK_MS; below the low-water mark
 *   (--low-water=BYTES or PCT%) a low_space event, back above it a
 *   space_ok event (one each time the line is crossed);
 * - the filesystem mounted from the image (the mount point the run
 *   directory records, on the block device that is our loop device):
 *   fanotify FAN_FS_ERROR on the whole filesystem (Linux 5.16+, ext4),
 *   an fs_error event for each the kernel reports; where fanotify cannot
 *   (an older kernel, --fs-watch=poll), the ext4 error counter
 *   /sys/fs/ext4/DEV/errors_count polled every WATCH_TICK_MS, an fs_error
 *   event each time it grows.  When the watch starts, a filesystem that
 *   already records errors gets one fs_error event (source "recorded").
 */
#ifndef TOOLS_ONLINE_WATCH_H
#define TOOLS_ONLINE_WATCH_H

#include <stdint.h>

struct json_out;

#define WATCH_TICK_MS 1000

enum watch_fs_mode { WATCH_FS_AUTO, WATCH_FS_POLL, WATCH_FS_OFF };

struct watch_conf {
	const char *image;          /* canonical path */
	const char *rundir;
	uint64_t low_water;         /* bytes; 0: none (unless low_water_pct) */
	unsigned low_water_pct;     /* percent of the host filesystem; 0: none */
	enum watch_fs_mode fs_mode;
};

/* "BYTES" (a size, parse_size) or "PCT%" (0 to 100) into c.  0 or -EINVAL. */
int watch_parse_low_water(const char *arg, struct watch_conf *c);
/* "auto", "poll" or "off".  0 or -EINVAL. */
int watch_parse_fs_mode(const char *arg, struct watch_conf *c);

/* Changes the low-water mark of the running watch to c's (0: none); the
 * next check (within WATCH_TICK_MS) compares against it. */
void watch_set_low_water(const struct watch_conf *c);

/* Starts the watch thread (c is copied).  0 or -errno (printed). */
int watch_start(const struct watch_conf *c);
/* Stops it (before events_stop). */
void watch_stop(void);

/* Status keys: low_water, host_free, fs_watch, fs_errors. */
void watch_status_fields(struct json_out *j);

#endif
