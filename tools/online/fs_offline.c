/* SPDX-License-Identifier: MIT */
/* The filesystem of an image nobody serves; see fs_offline.h. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common_fs.h"
#include "daemon.h"
#include "fs_offline.h"
#include "mount.h"

/* ---- the filesystem of an image nobody serves ---------------------------- */

struct fs_offline {
	struct online_state os;
	char dir[64];               /* the private mount point, "" when none */
};

int fs_offline_possible(const char **why)
{
	*why = NULL;
	if (geteuid() != 0)
		*why = "root";
	else if (access("/dev/fuse", R_OK | W_OK) < 0)
		*why = "/dev/fuse";
	else if (access("/dev/loop-control", R_OK | W_OK) < 0)
		*why = "loop devices (/dev/loop-control)";
	return *why == NULL;
}

uint64_t fs_min_with_margin(uint64_t min, uint64_t fs_size)
{
	const uint64_t mib = 1ull << 20;
	uint64_t margin = min / 20 > 16 * mib ? min / 20 : 16 * mib, t;

	if (__builtin_add_overflow(min, margin + mib - 1, &t))
		return fs_size;
	t -= t % mib;
	return t < fs_size ? t : fs_size;
}

static int fs_attach(const char *file, unsigned flags, struct fs_offline *s)
{
	memset(s, 0, sizeof(*s));
	return online_attach(file, flags, &s->os) < 0 ? -EIO : 0;
}

/* Mounts the attached filesystem on a fresh private directory. */
static int fs_mount(const char *file, struct fs_offline *s, const char *type,
		    unsigned long mflags, const char *data)
{
	int r;

	snprintf(s->dir, sizeof(s->dir), "/tmp/libimg-fs-XXXXXX");
	if (!mkdtemp(s->dir)) {
		r = -errno;
		errmsg_err(file, r, "%s: cannot create a mount point: %s", file, strerror(-r));
		s->dir[0] = 0;
		return r;
	}
	if (mount(s->os.loop, s->dir, type, mflags, data) < 0) {
		r = -errno;
		errmsg_err(file, r, "%s: cannot mount the %s filesystem (%s on %s): %s", file, type,
			   s->os.loop, s->dir, strerror(-r));
		rmdir(s->dir);
		s->dir[0] = 0;
		return r;
	}
	return 0;
}

static int fs_umount(struct fs_offline *s)
{
	int r = 0, i;

	if (!s->dir[0])
		return 0;
	/* a program that just exited may still pin it for a moment */
	for (i = 0; umount(s->dir) < 0; i++) {
		if (errno != EBUSY || i == 50) {
			r = -errno;
			errmsg_err(s->dir, r, "%s: cannot unmount: %s", s->dir, strerror(-r));
			return r;
		}
		usleep(100 * 1000);
	}
	rmdir(s->dir);
	s->dir[0] = 0;
	return r;
}

/* Unmounts, detaches, stops the daemon.  0 or -errno (message printed). */
static int fs_end(struct fs_offline *s)
{
	int r = fs_umount(s);

	if (online_teardown(&s->os) < 0 && !r)
		r = -EIO;
	return r;
}

/* "Estimated minimum size of the filesystem: N" (blocks) of resize2fs -P. */
static int ext_min_size(const char *file, const char *dev, uint64_t block, uint64_t *min)
{
	char out[4096], *p;
	char *av[] = { "resize2fs", "-P", (char *)dev, NULL };
	unsigned long long n;

	if (run_capture(av, out, sizeof(out)) != 0)
		return -EIO;
	p = strstr(out, "minimum size of the filesystem:");
	if (!p || sscanf(p + strlen("minimum size of the filesystem:"), "%llu", &n) != 1 ||
	    __builtin_mul_overflow((uint64_t)n, block, min)) {
		errmsg("%s: cannot read the minimum size from resize2fs -P: %s", file, out);
		return -EPROTO;
	}
	return 0;
}

/* "N bytes (...)" of btrfs inspect-internal min-dev-size. */
static int btrfs_min_size(const char *file, const char *dir, uint64_t *min)
{
	char out[4096];
	char *av[] = { "btrfs", "inspect-internal", "min-dev-size", (char *)dir, NULL };
	unsigned long long n;

	if (run_capture(av, out, sizeof(out)) != 0)
		return -EIO;
	if (sscanf(out, "%llu bytes", &n) != 1) {
		errmsg("%s: cannot read the minimum size from btrfs inspect-internal "
		       "min-dev-size: %s", file, out);
		return -EPROTO;
	}
	/* the kernel refuses to resize a btrfs device below 256 MiB */
	*min = n > (256ull << 20) ? n : 256ull << 20;
	return 0;
}

int fs_offline_grow(const char *file, const char *type)
{
	struct fs_offline s;
	int r;

	if (fs_attach(file, 0, &s) < 0)
		return -EIO;
	if (fs_is_ext(type)) {
		/* resize2fs wants a check since the last mount */
		char *fsck[] = { "e2fsck", "-f", "-p", s.os.loop, NULL };
		char *av[] = { "resize2fs", s.os.loop, NULL };
		r = run_quiet(fsck);
		if (r != 0 && r != 1) {     /* 1: errors corrected */
			errmsg("%s: e2fsck -f -p could not check the %s filesystem", file, type);
			r = -EUCLEAN;
		} else {
			r = run_quiet(av) ? -EIO : 0;
		}
	} else if (!strcmp(type, "xfs") || !strcmp(type, "btrfs")) {
		r = fs_mount(file, &s, type, 0, NULL);
		if (r == 0 && !strcmp(type, "xfs")) {
			char *av[] = { "xfs_growfs", s.dir, NULL };
			r = run_quiet(av) ? -EIO : 0;
		} else if (r == 0) {
			char *av[] = { "btrfs", "filesystem", "resize", "max", s.dir, NULL };
			r = run_quiet(av) ? -EIO : 0;
		}
	} else {
		r = -EOPNOTSUPP;
	}
	if (fs_end(&s) < 0 && !r)
		r = -EIO;
	return r;
}

int fs_offline_inspect(const char *file, const struct img_fs_info *fi,
		       struct fs_offline_facts *facts)
{
	struct fs_offline s;
	char path[PATH_MAX];
	struct stat sb;
	int r;

	memset(facts, 0, sizeof(*facts));
	if (fs_attach(file, ONLINE_READ_ONLY, &s) < 0)
		return -EIO;
	if (fs_is_ext(fi->type)) {
		char *fsck[] = { "e2fsck", "-f", "-n", s.os.loop, NULL };
		r = run_quiet(fsck);
		if (r != 0) {
			errmsg("%s: e2fsck -f -n finds the %s filesystem in the image damaged "
			       "(exit status %d): it needs checking", file, fi->type, r);
			r = -EUCLEAN;
			goto out;
		}
		r = ext_min_size(file, s.os.loop, fi->block_size, &facts->min_size);
		if (r < 0)
			goto out;
		/* read-only and without journal replay: nothing is written */
		r = fs_mount(file, &s, fi->type, MS_RDONLY, "noload");
		if (r < 0)
			goto out;
		online_path(s.dir, ONLINE_BALLOON, path, sizeof(path));
		if (lstat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
			facts->has_balloon = 1;
			facts->balloon = (uint64_t)sb.st_blocks * 512;
		}
	} else if (!strcmp(fi->type, "btrfs")) {
		r = fs_mount(file, &s, fi->type, MS_RDONLY, NULL);
		if (r < 0)
			goto out;
		r = btrfs_min_size(file, s.dir, &facts->min_size);
	} else {
		r = -EOPNOTSUPP;
	}
out:
	if (fs_end(&s) < 0 && !r)
		r = -EIO;
	return r;
}

int fs_offline_shrink(const char *file, const struct img_fs_info *fi, unsigned flags,
		      uint64_t *size)
{
	struct fs_offline s;
	char arg[32], path[PATH_MAX];
	uint64_t min;
	int r;

	if (fs_attach(file, 0, &s) < 0)
		return -EIO;
	if (fs_is_ext(fi->type)) {
		char *fsck[] = { "e2fsck", "-f", "-p", s.os.loop, NULL };
		char *rs[] = { "resize2fs", s.os.loop, arg, NULL };
		struct stat sb;

		if (flags & FS_SHRINK_BALLOON) {
			r = fs_mount(file, &s, fi->type, 0, NULL);
			if (r < 0)
				goto out;
			online_path(s.dir, ONLINE_BALLOON, path, sizeof(path));
			if (lstat(path, &sb) == 0 && S_ISREG(sb.st_mode) && unlink(path) < 0) {
				r = -errno;
				errmsg_err(file, r, "%s: cannot remove the balloon: %s",
					   file, strerror(-r));
				goto out;
			}
			r = fs_umount(&s);
			if (r < 0)
				goto out;
		}
		r = run_quiet(fsck);
		if (r != 0 && r != 1) {     /* 1: errors corrected */
			errmsg("%s: e2fsck -f -p could not check the %s filesystem; it was not "
			       "shrunk", file, fi->type);
			r = -EUCLEAN;
			goto out;
		}
		if (flags & FS_SHRINK_TO_MIN) {
			r = ext_min_size(file, s.os.loop, fi->block_size, &min);
			if (r < 0)
				goto out;
			*size = fs_min_with_margin(min, fi->size);
		}
		snprintf(arg, sizeof(arg), "%lluK", (unsigned long long)(*size / 1024));
		if (run_quiet(rs) != 0) {
			errmsg("%s: resize2fs could not shrink the %s filesystem to %s", file,
			       fi->type, arg);
			r = -EIO;
			goto out;
		}
		r = 0;
	} else if (!strcmp(fi->type, "btrfs")) {
		char *rs[] = { "btrfs", "filesystem", "resize", arg, s.dir, NULL };
		char *trim[] = { "fstrim", s.dir, NULL };

		r = fs_mount(file, &s, fi->type, 0, NULL);
		if (r < 0)
			goto out;
		if (flags & FS_SHRINK_TO_MIN) {
			r = btrfs_min_size(file, s.dir, &min);
			if (r < 0)
				goto out;
			*size = fs_min_with_margin(min, fi->size);
		}
		snprintf(arg, sizeof(arg), "%llu", (unsigned long long)*size);
		if (run_quiet(rs) != 0) {
			errmsg("%s: the btrfs filesystem did not shrink to %s bytes", file, arg);
			r = -EIO;
			goto out;
		}
		/* its free space goes back to the host: the image packs tighter */
		run_silent(trim);
		r = 0;
	} else {
		r = -EOPNOTSUPP;
	}
out:
	if (fs_end(&s) < 0 && !r)
		r = -EIO;
	return r;
}

/* The "log_root" of btrfs inspect-internal dump-super: 0 when the
 * filesystem has no log tree to replay. */
static int btrfs_log_root(const char *file, const char *dev, uint64_t *root)
{
	char out[16384], *p;
	char *av[] = { "btrfs", "inspect-internal", "dump-super", (char *)dev, NULL };
	unsigned long long n;

	if (run_capture(av, out, sizeof(out)) != 0)
		return -EIO;
	for (p = out; (p = strstr(p, "log_root")); p++)
		if ((p == out || p[-1] == '\n') && (p[8] == ' ' || p[8] == '\t'))
			break;
	if (!p || sscanf(p + 8, "%llu", &n) != 1) {
		errmsg("%s: no log_root in btrfs inspect-internal dump-super", file);
		return -EPROTO;
	}
	*root = n;
	return 0;
}

/* fs_offline_set_identity of an xfs filesystem on the attached s. */
static int set_identity_xfs(const char *file, struct fs_offline *s, const char *type,
			    const char *uuid, const char *label)
{
	char *av[12], ucmd[64], lcmd[300], out[4096];
	int n = 0, r;

	/* xfs_db, not xfs_admin: xfs_admin passes the label through
	 * eval (a shell), xfs_db splits its commands at white space
	 * (fs_label_valid refuses it) */
	if (label && (!fs_label_valid(type, label) ||
		      snprintf(lcmd, sizeof(lcmd), "label %s", label[0] ? label : "--") >=
		      (int)sizeof(lcmd))) {
		errmsg("%s: invalid xfs label", file);
		return -EINVAL;
	}
	if (uuid)
		snprintf(ucmd, sizeof(ucmd), "uuid %s", uuid);
	av[n++] = "xfs_db";
	av[n++] = "-x";
	av[n++] = "-p";
	av[n++] = "xfs_admin";
	if (uuid) {
		av[n++] = "-c";
		av[n++] = ucmd;
	}
	if (label) {
		av[n++] = "-c";
		av[n++] = lcmd;
	}
	av[n++] = s->os.loop;
	av[n] = NULL;
	/* it exits 0 on a refusal too: the caller reads the result back.
	 * It refuses a dirty log (a snapshot of a mounted filesystem):
	 * then, and only then, a mount replays it, in the clone
	 * (nouuid: the base's UUID may be mounted elsewhere), and
	 * xfs_db runs again.  The base is untrusted input: its
	 * filesystem is not given to the kernel when xfs_db can do
	 * without. */
	r = run_capture(av, out, sizeof(out));
	if (r == 0 && strstr(out, "to replay the log")) {
		r = fs_mount(file, s, type, MS_NOSUID | MS_NODEV | MS_NOEXEC, "nouuid");
		if (r == 0)
			r = fs_umount(s);
		if (r < 0)
			return r;
		r = run_quiet(av);
	}
	if (r != 0) {
		errmsg("%s: xfs_db could not set the xfs filesystem's %s", file,
		       uuid && label ? "UUID and label" : uuid ? "UUID" : "label");
		r = -EIO;
	}
	return r;
}

/* fs_offline_set_identity of a btrfs filesystem on the attached s. */
static int set_identity_btrfs(const char *file, struct fs_offline *s, const char *type,
			      const char *uuid, const char *label)
{
	char *tune[] = { "btrfstune", "-f", "-M", (char *)uuid, s->os.loop, NULL };
	char *lab[] = { "btrfs", "filesystem", "label", "--", s->os.loop, (char *)label, NULL };
	uint64_t log = 0;
	int r;

	/* btrfstune on a filesystem with a log tree (a copy of a mounted
	 * one after fsync) leaves it unmountable: a mount replays it
	 * first, in the clone */
	if ((r = btrfs_log_root(file, s->os.loop, &log)) < 0)
		return r;
	if (log) {
		r = fs_mount(file, s, type, MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
		if (r == 0)
			r = fs_umount(s);
		if (r == 0)
			r = btrfs_log_root(file, s->os.loop, &log);
		if (r < 0)
			return r;
		if (log) {
			errmsg("%s: mounting the btrfs filesystem did not replay its log tree "
			       "(is one with the same fsid mounted?)", file);
			return -EBUSY;
		}
	}
	if (uuid && run_quiet(tune) != 0) {
		errmsg("%s: btrfstune -M could not set the btrfs filesystem's UUID", file);
		r = -EIO;
	}
	if (!r && label && run_quiet(lab) != 0) {
		errmsg("%s: btrfs filesystem label could not set the label", file);
		r = -EIO;
	}
	return r;
}

int fs_offline_set_identity(const char *file, const char *type, const char *uuid,
			    const char *label)
{
	struct fs_offline s;
	int r;

	if (strcmp(type, "xfs") && strcmp(type, "btrfs"))
		return -EOPNOTSUPP;
	if (fs_attach(file, 0, &s) < 0)
		return -EIO;
	r = !strcmp(type, "xfs") ? set_identity_xfs(file, &s, type, uuid, label) :
	    set_identity_btrfs(file, &s, type, uuid, label);
	if (fs_end(&s) < 0 && !r)
		r = -EIO;
	return r;
}

int fs_offline_replay_journal(const char *file, const char *type)
{
	struct fs_offline s;
	char *av[] = { "e2fsck", "-E", "journal_only", "-p", NULL, NULL };
	int r;

	if (!fs_is_ext(type))
		return -EOPNOTSUPP;
	if (fs_attach(file, 0, &s) < 0)
		return -EIO;
	av[4] = s.os.loop;
	r = run_quiet(av);
	if (r != 0 && r != 1) {     /* 1: the journal was replayed */
		errmsg("%s: e2fsck -E journal_only could not replay the %s journal", file, type);
		r = -EUCLEAN;
	} else {
		r = 0;
	}
	if (fs_end(&s) < 0 && !r)
		r = -EIO;
	return r;
}
