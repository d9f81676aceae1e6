/* SPDX-License-Identifier: MIT */
/* The attach / teardown sequences that imgattach, imgmount, imgdetach and
 * imgumount build on (and fs_offline.c's private attach, for growimg,
 * shrinkimg and mkimg), and the resizing requests to a running daemon
 * (growimg, shrinkimg). */
#ifndef TOOLS_ONLINE_DAEMON_H
#define TOOLS_ONLINE_DAEMON_H

#include <stdint.h>

#include "rundir.h"

/* Starts imgserve --daemon on a new export file rundir/disk.XXXXXX and
 * attaches a loop device over it; on failure undoes what it did.  st is
 * loaded again on success.  Only the daemon this call started, the one
 * that recorded this export file, is used: whatever else the run
 * directory records is never adopted.  -EBUSY (message naming the image
 * and the holder) when the image is served or locked by another process.
 * ONLINE_READ_ONLY: imgserve --read-only and a read-only loop device. */
#define ONLINE_READ_ONLY 0x1u
int online_attach(const char *file, unsigned flags, struct online_state *st);

/* The QoS settings word (online/qos.h) online_attach passes to the
 * daemon it starts (imgserve --qos); "" (the default): none. */
extern char online_attach_qos[256];

/* Undoes whatever st records, in order: unmounts the filesystem, detaches
 * the loop device, stops the daemon (or, when it is dead, lazily unmounts
 * its export) and removes the run directory.  Copes with a dead daemon.
 * 0 or -errno (message printed; what could not be undone stays recorded). */
int online_teardown(struct online_state *st);

/* online_teardown, then what imgumount and imgdetach print: with --json
 * {filename, mountpoint, device, pid} of what was torn down, else
 * "IMAGE: done" unless --quiet.  EXIT_OK or EXIT_ERROR. */
int online_teardown_report(struct online_state *st, const char *done);

/* The daemon's idea of the virtual size ("status").  0 or -errno
 * (message printed). */
int online_virtual_size(const char *file, const struct online_state *st, uint64_t *size);

/* Asks the daemon to grow or shrink the image to size (shrink with
 * discard_data drops what lies past the end), then online_refresh_size.
 * 0 or -errno (message printed). */
int online_set_size(const char *file, const struct online_state *st, uint64_t size,
		    int discard_data);

#endif
