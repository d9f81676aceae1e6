/* SPDX-License-Identifier: MIT */
/*
 * The run directory of a served image, its records, and who holds an
 * image.
 *
 * The run directory of an image is $LIBIMG_RUNDIR (default /run/libimg)
 * followed by "/" and 16 hex digits: the 64-bit FNV-1a hash of the image's
 * canonical path (realpath).  It holds one small text file per fact:
 *
 *   image       the canonical image path
 *   pid         the imgserve process serving it
 *   export      the path of the exported file (the FUSE mount point)
 *   ctl         imgserve's control socket (a Unix stream socket)
 *   disk.XXXXXX the export file an attach creates (empty when not
 *               served): one per attach, so that two racing attaches never
 *               share one; the daemon that wins the image's lock records
 *               its own as "export"
 *   loop        the loop device over the export (imgattach)
 *   mountpoint  where the filesystem is mounted (imgmount)
 *   log         imgserve --daemon's messages once it is ready (its
 *               standard error; kept when it exits with an error)
 *   disk        an older version's export file (only removed)
 */
#ifndef TOOLS_ONLINE_RUNDIR_H
#define TOOLS_ONLINE_RUNDIR_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include "../common.h"

#define ONLINE_RUNDIR_DEFAULT "/run/libimg"

/* The records (above); the control socket's name is control.h's. */
#define RUNDIR_IMAGE      "image"
#define RUNDIR_PID        "pid"
#define RUNDIR_EXPORT     "export"
#define RUNDIR_DISK       "disk"        /* an older version's export file */
#define RUNDIR_DISK_NEW   "disk.XXXXXX" /* an attach's export file (mkostemp) */
#define RUNDIR_LOOP       "loop"
#define RUNDIR_MOUNTPOINT "mountpoint"
#define RUNDIR_LOG        "log"         /* the daemon's messages once it is ready */

struct online_state {
	char rundir[PATH_MAX];
	char image[PATH_MAX];       /* canonical image path */
	pid_t pid;                  /* 0 when no pid is recorded */
	int alive;                  /* pid is a live imgserve */
	char export_path[PATH_MAX]; /* "" when unknown */
	char loop[64];              /* "" when none */
	char mountpoint[PATH_MAX];  /* "" when none */
};

/* Base directory: $LIBIMG_RUNDIR or /run/libimg. */
const char *online_rundir_base(void);

/* Fills st->rundir and st->image for image (which must exist) and reads
 * what the run directory records.  Returns 1 when something is recorded
 * (a pid, a loop device or a mount point), 0 when nothing is, -errno
 * (message printed) when the path cannot be resolved. */
int online_state_load(const char *image, struct online_state *st);

/* Finds the state whose loop device is dev (a /dev/loopN path) or whose
 * mount point is the directory dir (either may be NULL).  1 found, 0 not. */
int online_state_find(const char *dev, const char *dir, struct online_state *st);

/* The state of what arg names: a loop device, a mount point (directory) or
 * an image file.  0 found; -1 (message naming arg printed) when arg does
 * not exist or nothing is attached or mounted there. */
int online_state_of(const char *arg, struct online_state *st);

/* Reads the run directory st->rundir again (image path kept). */
void online_state_reload(struct online_state *st);

/* Writes rundir/key (val NULL: removes it).  0 or -errno. */
int online_state_set(const char *rundir, const char *key, const char *val);

/* A run directory's records change under an exclusive flock of the
 * directory: a daemon records itself (image, export, pid) and takes its
 * records back, and a teardown removes them, each as one step; the
 * teardown and the exiting daemon remove only records that are still
 * their own (the pid key names their daemon, or none), so a daemon that
 * recorded itself meanwhile (an attach that waited for the teardown)
 * keeps its records.  online_state_lock returns the fd holding the lock,
 * or -errno (-ENOENT: no run directory); online_state_unlock drops it.
 * online_state_pid: the pid the pid key records, 0 for none. */
int online_state_lock(const char *rundir);
void online_state_unlock(int fd);
pid_t online_state_pid(const char *rundir);

/* Path of rundir/name into buf.  -ENAMETOOLONG if it does not fit. */
int online_path(const char *rundir, const char *name, char *buf, size_t len);

/* One-line description of who holds the image ("imgserve (pid 123), loop
 * device /dev/loop0, mounted on /mnt") into buf. */
const char *online_describe(const struct online_state *st, char *buf, size_t len);

/* Every run directory under online_rundir_base() that records something
 * (a pid, an export, a loop device or a mount point), sorted by image
 * path; st->image is "" when the run directory no longer names it.
 * *out is malloc'd (free it).  0, -ENOMEM, or -EACCES when a run
 * directory cannot be read (they are root's); a missing base is no
 * image. */
int online_state_list(struct online_state **out, size_t *n);

/* Refuses when st records anything: -EBUSY (message naming the holder)
 * when its daemon runs; -ESTALE, with "run imgumount FILE" advice, for a
 * dead daemon's leftovers. */
int online_refuse_if_used(const char *file, const struct online_state *st);

/* 1 when st records something: a pid, a loop device, a mount point or
 * an export. */
int online_state_recorded(const struct online_state *st);

/* 1 when pid has ended: gone, or a zombie its new parent has not reaped. */
int online_pid_ended(pid_t pid);

#endif
