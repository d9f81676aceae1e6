/* SPDX-License-Identifier: MIT */
/*
 * What the online tools share: the run directory that records a served
 * image, the client side of imgserve's control socket, loop devices, and
 * the attach / teardown sequences that imgattach, imgmount, imgdetach and
 * imgumount (and growimg, shrinkimg, compact, imginfo) build on.
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
 *
 * Control protocol: one line per connection, "status", "grow SIZE",
 * "shrink SIZE [discard-data]", "compact [no-zero-detect]", "snapshot
 * [NAME]", "merge [BASE]" or "stop" (online_commands below: imgserve
 * takes from it which commands a read-only daemon refuses, clients such
 * as imgctl what to check); one line back, "ok" followed by a space and a
 * JSON object (online_reply_parse), or "error ERRNO message".
 */
#ifndef TOOLS_COMMON_ONLINE_H
#define TOOLS_COMMON_ONLINE_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include "common.h"

#define ONLINE_RUNDIR_DEFAULT "/run/libimg"

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

/* Sends one command to the daemon and reads its answer.  0 with the JSON
 * object of "ok" in reply, or -errno with the daemon's message in reply
 * (or a message about the socket).  Nothing is printed. */
int online_request(const struct online_state *st, const char *cmd, char *reply, size_t len);

/* Extracts an unsigned number "key": N from a JSON text.  0 or -ENOENT. */
int online_json_u64(const char *json, const char *key, uint64_t *out);

/* online_request, waiting at most timeout_ms for the answer (-1: no
 * limit): -ETIMEDOUT (message in reply) when none came, as when the
 * daemon runs another command (one at a time: a compact or merge takes
 * its time). */
int online_request_timeout(const struct online_state *st, const char *cmd, char *reply,
			   size_t len, int timeout_ms);

/* The commands of the control protocol (above), for clients (imgctl);
 * the list ends with a NULL name. */
#define ONLINE_CMD_WRITES 0x1u   /* changes the image: refused read-only */
#define ONLINE_CMD_RESIZE 0x2u   /* changes the size: online_refresh_size */
#define ONLINE_CMD_STOP   0x4u   /* stops the daemon */
struct online_command {
	const char *name;
	const char *args;      /* synopsis of the arguments, "" when none */
	unsigned min_args, max_args;
	unsigned flags;
};
extern const struct online_command online_commands[];
/* The entry of name, or NULL. */
const struct online_command *online_command_find(const char *name);

/* The JSON object of an "ok" reply: one flat object whose values are
 * strings, unsigned numbers, true, false or null (what the daemon
 * sends).  Keys and strings are unescaped (UTF-8). */
enum online_value { ONLINE_STR, ONLINE_NUM, ONLINE_BOOL, ONLINE_NULL };
struct online_kv {
	char *key;
	enum online_value type;
	char *str;             /* ONLINE_STR */
	uint64_t num;          /* ONLINE_NUM; ONLINE_BOOL: 0 or 1 */
};
struct online_reply {
	struct online_kv *kv;
	size_t n;
};
/* 0, -EPROTO when json is not such an object, -ENOMEM. */
int online_reply_parse(const char *text, struct online_reply *r);
void online_reply_free(struct online_reply *r);
/* The value of key, or NULL. */
const struct online_kv *online_reply_get(const struct online_reply *r, const char *key);

/* Every run directory under online_rundir_base() that records something
 * (a pid, an export, a loop device or a mount point), sorted by image
 * path; st->image is "" when the run directory no longer names it.
 * *out is malloc'd (free it).  0, -ENOMEM, or -EACCES when a run
 * directory cannot be read (they are root's); a missing base is no
 * image. */
int online_state_list(struct online_state **out, size_t *n);

/* ---- loop devices ------------------------------------------------------ */

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

/* ---- sequences ----------------------------------------------------------- */

/* Refuses when st records anything: -EBUSY (message naming the holder)
 * when its daemon runs; -ESTALE, with "run imgumount FILE" advice, for a
 * dead daemon's leftovers. */
int online_refuse_if_used(const char *file, const struct online_state *st);

/* Starts imgserve --daemon on a new export file rundir/disk.XXXXXX and
 * attaches a loop device over it; on failure undoes what it did.  st is
 * loaded again on success.  Only the daemon this call started, the one
 * that recorded this export file, is used: whatever else the run
 * directory records is never adopted.  -EBUSY (message naming the image
 * and the holder) when the image is served or locked by another process.
 * ONLINE_READ_ONLY: imgserve --read-only and a read-only loop device. */
#define ONLINE_READ_ONLY 0x1u
int online_attach(const char *file, unsigned flags, struct online_state *st);

/* Undoes whatever st records, in order: unmounts the filesystem, detaches
 * the loop device, stops the daemon (or, when it is dead, lazily unmounts
 * its export) and removes the run directory.  Copes with a dead daemon.
 * 0 or -errno (message printed; what could not be undone stays recorded). */
int online_teardown(struct online_state *st);

/* online_teardown, then what imgumount and imgdetach print: with --json
 * {filename, mountpoint, device, pid} of what was torn down, else
 * "IMAGE: done" unless --quiet.  EXIT_OK or EXIT_ERROR. */
int online_teardown_report(struct online_state *st, const char *done);

/* After the daemon changed the image's size: refresh the export's size in
 * the kernel (stat) and the loop device's capacity.  0 or -errno. */
int online_refresh_size(const struct online_state *st);

/* The daemon's idea of the virtual size ("status").  0 or -errno
 * (message printed). */
int online_virtual_size(const char *file, const struct online_state *st, uint64_t *size);

/* Asks the daemon to grow or shrink the image to size (shrink with
 * discard_data drops what lies past the end), then online_refresh_size.
 * 0 or -errno (message printed). */
int online_set_size(const char *file, const struct online_state *st, uint64_t size,
		    int discard_data);

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

/* ---- the filesystem of an image nobody serves ------------------------------
 * growimg and shrinkimg resize the filesystem in an image offline with the
 * filesystem's own tools: the image is attached (imgserve + loop device, as
 * imgattach does), the tool runs on the device (e2fsck, resize2fs) or on a
 * private mount in a fresh 0700 directory under /tmp (xfs_growfs, btrfs
 * filesystem resize), and everything is undone before returning, on
 * success or failure.  The image must not be served or open elsewhere. */

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
