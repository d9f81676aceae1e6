/* SPDX-License-Identifier: MIT */
/* Loop devices over the export of a served image. */
#ifndef TOOLS_ONLINE_LOOP_H
#define TOOLS_ONLINE_LOOP_H

#include <stddef.h>

#include "rundir.h"

/* Attaches file to a free loop device (discard follows the file's
 * fallocate; LOOP_ATTACH_DIRECT_IO asks for LO_FLAGS_DIRECT_IO and falls
 * back to buffered when the kernel refuses).  dev receives "/dev/loopN".
 * 0 or -errno (message printed). */
#define LOOP_ATTACH_DIRECT_IO 0x1u
#define LOOP_ATTACH_READ_ONLY 0x2u
int loop_attach(const char *file, unsigned flags, char *dev, size_t len);
/* Detaches dev if its backing file is file (file NULL: any).  0, or
 * -ENXIO when dev is not attached (any more), or -errno (message printed). */
int loop_detach(const char *dev, const char *file);
/* Re-reads the backing file's size (LOOP_SET_CAPACITY).  0 or -errno. */
int loop_set_capacity(const char *dev);

/* After the daemon changed the image's size: refresh the export's size in
 * the kernel (stat) and the loop device's capacity.  0 or -errno. */
int online_refresh_size(const struct online_state *st);

#endif
