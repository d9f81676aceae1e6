/* SPDX-License-Identifier: MIT */
/*
 * growimg and shrinkimg resize the filesystem in an image offline, and
 * mkimg gives a clone's filesystem its own identity (or replays its
 * journal), with the filesystem's own tools: the image is attached
 * (imgserve + loop device, as imgattach does), the tool runs on the device
 * (e2fsck, resize2fs) or on a private mount in a fresh 0700 directory
 * under /tmp (xfs_growfs, btrfs filesystem resize, xfs_db, btrfstune), and
 * everything is undone before returning, on success or failure.  The
 * image must not be served or open elsewhere. */
#ifndef TOOLS_ONLINE_FS_OFFLINE_H
#define TOOLS_ONLINE_FS_OFFLINE_H

#include <stdint.h>

#include "../common.h"

/* 1 when this process can attach images (root, /dev/fuse, loop devices);
 * else 0 and *why names what is missing. */
int fs_offline_possible(const char **why);

/* The margin shrinkimg --min adds to the filesystem's minimum size min
 * (resize2fs -P, btrfs inspect-internal min-dev-size): max(min / 20,
 * 16 MiB), the sum rounded up to 1 MiB and capped at fs_size. */
uint64_t fs_min_with_margin(uint64_t min, uint64_t fs_size);

/* Grows the filesystem (type: ext2/3/4, xfs, btrfs) to fill the virtual
 * disk: e2fsck -f -p (resize2fs wants a check since the last mount) and
 * resize2fs DEVICE; xfs_growfs or btrfs filesystem resize max on a private
 * mount.  0 or -errno (message printed). */
int fs_offline_grow(const char *file, const char *type);

struct fs_offline_facts {
	uint64_t min_size;     /* the smallest the filesystem can shrink to */
	uint64_t balloon;      /* bytes an online shrink's balloon holds */
	int has_balloon;       /* ext2/3/4: the balloon is there */
};

/* Read-only (imgserve --read-only, read-only loop device; the image file
 * is not written): checks the filesystem (ext2/3/4: e2fsck -f -n must
 * find nothing, else -EUCLEAN), finds its minimum size (resize2fs -P;
 * btrfs: inspect-internal min-dev-size on a read-only private mount) and
 * the balloon.  fi: img_fs_probe()'s answer.  0 or -errno (message
 * printed). */
int fs_offline_inspect(const char *file, const struct img_fs_info *fi,
		       struct fs_offline_facts *facts);

/* Shrinks the filesystem to at most *size bytes.  ext2/3/4: with
 * FS_SHRINK_BALLOON the balloon is removed (private mount); e2fsck -f -p,
 * resize2fs DEVICE SIZE.  btrfs: btrfs filesystem resize SIZE on a
 * private mount, then fstrim there.  FS_SHRINK_TO_MIN: *size is
 * fs_min_with_margin() of the minimum measured once the balloon is gone.
 * *size receives the size the filesystem now spans.  0 or -errno (message
 * printed). */
#define FS_SHRINK_TO_MIN  0x1u
#define FS_SHRINK_BALLOON 0x2u
int fs_offline_shrink(const char *file, const struct img_fs_info *fi, unsigned flags,
		      uint64_t *size);

/* xfs and btrfs: gives the filesystem the UUID uuid (NULL: kept) and the
 * label label (NULL: kept) with xfs_db's uuid and label commands, as
 * xfs_admin -U/-L (v5: the meta_uuid
 * feature keeps metadata checksums; a private nouuid mount first replays
 * a dirty log) or btrfstune -M (the metadata_uuid feature: only the
 * superblocks are written; a private mount first replays a log tree) and
 * btrfs filesystem label,
 * on the attached image.  Only blocks of the image are written (of a
 * clone: the clone, never its base).  0 or -errno (message printed);
 * -EOPNOTSUPP for another type. */
int fs_offline_set_identity(const char *file, const char *type, const char *uuid,
			    const char *label);

/* ext2/3/4: replays the journal of the attached image (e2fsck -E
 * journal_only -p), nothing else.  0 or -errno (message printed). */
int fs_offline_replay_journal(const char *file, const char *type);

#endif
