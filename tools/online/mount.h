/* SPDX-License-Identifier: MIT */
/* The filesystem mounted from the loop device of a served image. */
#ifndef TOOLS_ONLINE_MOUNT_H
#define TOOLS_ONLINE_MOUNT_H

#include <stddef.h>
#include <stdint.h>

#include "rundir.h"

/* Grows the filesystem mounted at st->mountpoint to fill its device:
 * resize2fs DEV (ext), xfs_growfs MOUNTPOINT, btrfs filesystem resize max
 * MOUNTPOINT.  type receives the filesystem type.  0, 1 when an ext2/3/4
 * filesystem already fills its device (nothing run), or -errno (message
 * printed); -EOPNOTSUPP for another type. */
int online_fs_grow(const char *file, const struct online_state *st, char *type, size_t len);

/* ext2/3/4 cannot shrink while mounted.  The balloon, a hidden file at the
 * root of the mounted filesystem (ONLINE_BALLOON), is fallocated (never
 * written) to bytes so that the filesystem cannot use that much space, and
 * its blocks are discarded on the loop device so that their host space
 * goes back.  An existing balloon is resized to bytes.  *discarded: bytes
 * discarded.  0, -ENOSPC when the filesystem has not that much free space
 * (the balloon is left as it was), or -errno (message printed). */
#define ONLINE_BALLOON ".libimg-balloon"
int online_balloon_inflate(const char *file, const struct online_state *st, uint64_t bytes,
			   uint64_t *discarded);

/* The filesystem type on a block device (libblkid), "" when none. */
int online_blkid_type(const char *dev, char *type, size_t len);

#endif
