/* SPDX-License-Identifier: MIT */
/* mkimg: create an empty image, one holding a new filesystem, or a thin
 * clone of a base (--backing). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common.h"
#include "common_fs.h"
#include "online/fs_offline.h"

enum { OPT_CLUSTER_SIZE = 256, OPT_BAT_RESERVE, OPT_FS, OPT_LABEL, OPT_FROM, OPT_BACKING,
       OPT_ALLOW_BACKING_PATH, OPT_FS_UUID, OPT_KEEP_FS_UUID };

static const struct option longopts[] = {
	{ "cluster-size", required_argument, NULL, OPT_CLUSTER_SIZE },
	{ "bat-reserve",  required_argument, NULL, OPT_BAT_RESERVE },
	{ "fs",           required_argument, NULL, OPT_FS },
	{ "label",        required_argument, NULL, OPT_LABEL },
	{ "from",         required_argument, NULL, OPT_FROM },
	{ "backing",      required_argument, NULL, OPT_BACKING },
	{ "allow-backing-path", no_argument, NULL, OPT_ALLOW_BACKING_PATH },
	{ "fs-uuid",      required_argument, NULL, OPT_FS_UUID },
	{ "keep-fs-uuid", no_argument,       NULL, OPT_KEEP_FS_UUID },
	{ "force",        no_argument,       NULL, 'f' },
	{ "progress",     no_argument,       NULL, 'p' },
	{ "json",         no_argument,       NULL, 'j' },
	{ "quiet",        no_argument,       NULL, 'q' },
	{ "help",         no_argument,       NULL, 'h' },
	{ "version",      no_argument,       NULL, 'V' },
	WAIT_OPTION,
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE SIZE\n"
	       "       %s --backing BASE [OPTIONS] FILE [SIZE]\n"
	       "Create an empty (thin) libimg image of SIZE bytes (512, 64K, 10G: a\n"
	       "multiple of 512), one holding a new filesystem (--fs), or a thin clone.\n"
	       "\n"
	       "  --backing BASE       a thin clone of BASE (in FILE's directory or an allowed\n"
	       "                       one, libimg-backing(7)); SIZE defaults to BASE's\n"
	       "  --fs-uuid UUID       the clone's filesystem UUID (default: a new random one)\n"
	       "  --keep-fs-uuid       the clone keeps the base's filesystem UUID\n"
	       "      --allow-backing-path  BASE anywhere: absolute or with '..' (unsafe)\n"
	       "  --cluster-size SIZE  allocation unit: a power of two, 64K..64M (default 1M)\n"
	       "  --bat-reserve SIZE   size the block table so growing to SIZE moves no data\n"
	       "  --fs TYPE            make a filesystem in it (no root): ext4/3/2, xfs, btrfs\n"
	       "  --label LABEL        the filesystem's label (with --backing: the clone's)\n"
	       "  --from DIR           copy DIR's tree in (ext*: mke2fs -d; btrfs: --rootdir;\n"
	       "                       xfs: a protofile: no hard links, xattrs, sticky bit)\n"
	       "  -f, --force          overwrite FILE if it exists\n"
	       "  -p, --progress       show progress on standard error\n"
	       "  -j, --json           print the result as a JSON object (also with -q)\n"
	       WAIT_HELP
	       "  -q, --quiet          print nothing on success\n"
	       "  -h, --help / -V, --version  show this help / the version\n"
	       "Exit status: 0 created (a failure leaves nothing), 1 error, 2 usage, 3 base\n"
	       "  corrupt, 4 base's chain broken, 5 not found, 8 no space, 75 in use.\n", progname, progname);
}

static int get_size(const char *what, const char *s, uint64_t *out)
{
	if (parse_size(s, out)) {
		value_error("invalid %s '%s' (expected bytes with an optional K, M, G, T, "
			    "P or E suffix)", what, s);
		return -EINVAL;
	}
	return 0;
}

/* ---- temporary files, removed on failure and on a signal -------------- */

enum { T_RAW, T_IMG, T_PROTO, T_COUNT };
static char tmp[T_COUNT][PATH_MAX];
static volatile sig_atomic_t tmp_live[T_COUNT];

static void drop_temps(void)
{
	for (int i = 0; i < T_COUNT; i++)
		if (tmp_live[i]) {
			unlink(tmp[i]);
			tmp_live[i] = 0;
		}
}

/* While an image is attached (the xfs and btrfs identity step), a signal
 * is only noted: the daemon and loop device are undone first, then the
 * signal acts (end_deferring). */
static volatile sig_atomic_t deferring, deferred_sig;

static void on_signal(int sig)
{
	if (deferring) {
		deferred_sig = sig;
		return;
	}
	for (int i = 0; i < T_COUNT; i++)
		if (tmp_live[i])
			unlink(tmp[i]);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void catch_signals(void)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGPIPE };
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
}

static void end_deferring(void)
{
	int sig = deferred_sig;

	deferring = 0;
	if (sig) {
		drop_temps();
		signal(sig, SIG_DFL);
		raise(sig);
	}
}

/* A new file ".NAME.TAG.XXXXXX" beside file; returns its fd or -errno. */
static int temp_beside(const char *file, const char *tag, int which)
{
	char d[PATH_MAX], b[PATH_MAX];
	int fd;

	if (strlen(file) >= sizeof(d) ||
	    snprintf(tmp[which], sizeof(tmp[which]), "%s/.%s.%s.XXXXXX",
		     dirname(strcpy(d, file)), basename(strcpy(b, file)), tag) >= (int)sizeof(tmp[which])) {
		errmsg("%s: file name too long", file);
		return -ENAMETOOLONG;
	}
	fd = mkstemp(tmp[which]);
	if (fd < 0) {
		int e = errno;
		errmsg_err(file, -e, "%s: cannot create a temporary file beside it: %s",
			   file, strerror(e));
		return -e;
	}
	tmp_live[which] = 1;
	return fd;
}

/* ---- xfs: a protofile describing the --from tree ---------------------- */

struct proto_stats {
	unsigned long hardlinks, xattrs, sticky, sockets;
};

static int proto_word_ok(const char *what, const char *s)
{
	if (!*s || strpbrk(s, " \t\n:") || !strcmp(s, "$")) {
		errmsg("--from: %s '%s': an xfs protofile cannot hold names with spaces, "
		       "tabs, newlines or ':' (or the name '$')", what, s);
		return 0;
	}
	return 1;
}

static void proto_mode(FILE *f, const struct stat *st, char type)
{
	fprintf(f, "%c%c%c%03o %u %u", type, st->st_mode & S_ISUID ? 'u' : '-',
		st->st_mode & S_ISGID ? 'g' : '-', (unsigned)(st->st_mode & 0777),
		(unsigned)st->st_uid, (unsigned)st->st_gid);
}

static int proto_dir(FILE *f, const char *path, struct proto_stats *ps, int depth)
{
	struct dirent **ents = NULL;
	int n = scandir(path, &ents, NULL, alphasort), r = 0;

	if (n < 0) {
		errmsg_err(NULL, -errno, "--from: %s: %s", path, strerror(errno));
		return -1;
	}
	if (depth > 1000) {
		errmsg("--from: %s: too deep", path);
		r = -1;
	}
	for (int i = 0; i < n && !r; i++) {
		const char *name = ents[i]->d_name;
		char child[PATH_MAX], target[PATH_MAX];
		struct stat st;
		ssize_t tl;

		if (!strcmp(name, ".") || !strcmp(name, ".."))
			continue;
		if (snprintf(child, sizeof(child), "%s/%s", path, name) >= (int)sizeof(child)) {
			errmsg("--from: %s/%s: path too long", path, name);
			r = -1;
			break;
		}
		if (lstat(child, &st) < 0) {
			errmsg_err(NULL, -errno, "--from: %s: %s", child, strerror(errno));
			r = -1;
			break;
		}
		if (S_ISSOCK(st.st_mode)) {
			ps->sockets++;
			continue;
		}
		if (!proto_word_ok("name", name)) {
			r = -1;
			break;
		}
		if (st.st_mode & S_ISVTX)
			ps->sticky++;
		if (llistxattr(child, NULL, 0) > 0)
			ps->xattrs++;
		fprintf(f, "%s ", name);
		if (S_ISREG(st.st_mode)) {
			if (!proto_word_ok("path", child)) {
				r = -1;
				break;
			}
			if (st.st_nlink > 1)
				ps->hardlinks++;
			proto_mode(f, &st, '-');
			fprintf(f, " %s\n", child);
		} else if (S_ISDIR(st.st_mode)) {
			proto_mode(f, &st, 'd');
			fputc('\n', f);
			r = proto_dir(f, child, ps, depth + 1);
			fputs("$\n", f);
		} else if (S_ISLNK(st.st_mode)) {
			tl = readlink(child, target, sizeof(target) - 1);
			if (tl < 0) {
				errmsg_err(NULL, -errno, "--from: %s: %s", child, strerror(errno));
				r = -1;
				break;
			}
			target[tl] = 0;
			if (!proto_word_ok("symbolic link target", target)) {
				r = -1;
				break;
			}
			proto_mode(f, &st, 'l');
			fprintf(f, " %s\n", target);
		} else if (S_ISBLK(st.st_mode) || S_ISCHR(st.st_mode)) {
			proto_mode(f, &st, S_ISBLK(st.st_mode) ? 'b' : 'c');
			fprintf(f, " %u %u\n", major(st.st_rdev), minor(st.st_rdev));
		} else {
			proto_mode(f, &st, 'p');
			fputc('\n', f);
		}
	}
	for (int i = 0; i < n; i++)
		free(ents[i]);
	free(ents);
	return r;
}

/* Writes the protofile for dir into tmp[T_PROTO]. */
static int write_protofile(const char *file, const char *dir)
{
	struct proto_stats ps = { 0 };
	char abs[PATH_MAX];
	struct stat st;
	FILE *f;
	int fd, r;

	if (!realpath(dir, abs) || stat(abs, &st) < 0) {
		errmsg_err(NULL, -errno, "--from: %s: %s", dir, strerror(errno));
		return -1;
	}
	if (!proto_word_ok("path", abs))
		return -1;
	if ((fd = temp_beside(file, "proto", T_PROTO)) < 0)
		return -1;
	if (!(f = fdopen(fd, "w"))) {
		close(fd);
		return -1;
	}
	fputs("/dev/null\n0 0\n", f);
	proto_mode(f, &st, 'd');
	fputc('\n', f);
	r = proto_dir(f, abs, &ps, 0);
	fputs("$\n", f);
	if (fclose(f) != 0 && !r) {
		errmsg_err(tmp[T_PROTO], -errno, "%s: %s", tmp[T_PROTO], strerror(errno));
		r = -1;
	}
	if (!r && (ps.hardlinks || ps.xattrs || ps.sticky || ps.sockets) && !quiet)
		errmsg("warning: --from with xfs (mkfs.xfs protofile): %lu names of hard-linked "
		       "files become separate files; not copied: extended attributes of %lu "
		       "files, the sticky bit of %lu, %lu sockets", ps.hardlinks, ps.xattrs,
		       ps.sticky, ps.sockets);
	return r;
}

/* ---- mkimg --fs ------------------------------------------------------- */

/* -p */
static struct progress pr;

/* Renames the finished image over file (claimed by target). */
static int publish(const char *file, struct img_target *target)
{
	int r = img_target_publish(target, tmp[T_IMG]);

	if (r == -EEXIST)
		errmsg_err(file, -EEXIST, "%s: already exists (use --force to overwrite)", file);
	else if (r < 0)
		lib_errmsg(file, r);
	if (r < 0 && !access(tmp[T_IMG], F_OK))
		return r;
	tmp_live[T_IMG] = 0;   /* renamed (a failed directory sync after) */
	return r;
}

/*
 * The filesystem is made by its own mkfs in a sparse raw file beside FILE
 * (mkfs programs write block devices or files, not images), then the raw
 * file's data is copied into a new image skipping holes and all-zero
 * blocks.  mke2fs gets lazy_itable_init and lazy_journal_init: on a fresh
 * sparse file (and in a fresh image) unwritten blocks read as zeros, so
 * the inode tables and the journal need no zeroing, and an empty 1 TiB
 * ext4 costs a few MiB.  Returns an exit status.
 */
/* mkimg -j: what was made.  fi is NULL without --fs. */
static void print_json(const char *file, uint64_t size, uint32_t cluster_size,
		       const char *backing, const struct img_fs_info *fi, const char *from,
		       uint64_t copied)
{
	struct json_out j;

	json_start(&j, stdout);
	json_doc_begin(&j);
	json_string(&j, "filename", file);
	json_u64(&j, "virtual_size", size);
	json_u64(&j, "cluster_size", cluster_size ? cluster_size : IMG_DEFAULT_CLUSTER_SIZE);
	json_string(&j, "backing", backing);
	fs_json(&j, "filesystem", fi);
	json_string(&j, "from", from);
	if (fi)
		json_u64(&j, "copied_bytes", copied);
	else
		json_null(&j, "copied_bytes");
	json_object_end(&j);
	json_finish(&j);
}

static int make_with_fs(const char *file, struct img_create_opts *o, const char *fs,
			const char *label, const char *from, int force, uint64_t *copied,
			struct img_fs_info *fi)
{
	char *argv[24];
	struct img *img = NULL;
	struct img_target *target = NULL;
	int n = 0, fd = -1, r, ret = EXIT_ERROR;

	/* FILE stays locked from here to the rename (a served image, the base
	 * of an open clone, anything but a regular file: refused) */
	if ((r = target_claim(file, force ? IMG_CREATE_OVERWRITE : 0, &target)) < 0) {
		if (r == -EEXIST)
			errmsg_err(file, -EEXIST, "%s: already exists (use --force to overwrite)", file);
		else
			lib_errmsg(file, r);
		return exit_status(r);
	}
	catch_signals();
	if ((fd = temp_beside(file, "mkfs", T_RAW)) < 0)
		goto out;
	if (ftruncate(fd, (off_t)o->virtual_size) < 0) {
		errmsg_err(tmp[T_RAW], -errno, "%s: cannot make a %llu-byte temporary file: %s",
			   tmp[T_RAW], (unsigned long long)o->virtual_size, strerror(errno));
		goto out;
	}
	if (fs_is_ext(fs)) {
		argv[n++] = "mke2fs";
		argv[n++] = "-t";
		argv[n++] = (char *)fs;
		argv[n++] = "-F";
		argv[n++] = "-q";
		argv[n++] = "-b";          /* not 1 KiB below 512 MiB: images grow */
		argv[n++] = "4096";
		argv[n++] = "-E";
		argv[n++] = "lazy_itable_init=1,lazy_journal_init=1";
		if (from) {
			argv[n++] = "-d";
			argv[n++] = (char *)from;
		}
	} else if (!strcmp(fs, "xfs")) {
		argv[n++] = "mkfs.xfs";
		argv[n++] = "-f";
		argv[n++] = "-q";
		if (from) {
			if (write_protofile(file, from))
				goto out;
			argv[n++] = "-p";
			argv[n++] = tmp[T_PROTO];
		}
	} else {
		argv[n++] = "mkfs.btrfs";
		argv[n++] = "-f";
		argv[n++] = "-q";
		if (from) {
			argv[n++] = "--rootdir";
			argv[n++] = (char *)from;
		}
	}
	if (label) {
		argv[n++] = "-L";
		argv[n++] = (char *)label;
	}
	argv[n++] = tmp[T_RAW];
	argv[n] = NULL;
	{
		/* an external program (it copies --from's tree): a step */
		char step[PATH_MAX + 64];
		snprintf(step, sizeof(step), "making the %s filesystem (%s%s%s)", fs, argv[0],
			 from ? ", copying " : "", from ? from : "");
		progress_phase(&pr, 0, 50, step);
	}
	if (run_quiet(argv) != 0) {
		struct statvfs sv;
		/* the mkfs program says only "failed": a host left with less
		 * than a MiB for us is what made it fail (status 8, not 1) */
		if (fstatvfs(fd, &sv) == 0 && (uint64_t)sv.f_bavail * sv.f_frsize < (1u << 20)) {
			error_forget();   /* this cause, not the program's status */
			errmsg_err(file, -ENOSPC, "%s: %s: %s while making the filesystem", file,
				   argv[0], strerror(ENOSPC));
		}
		goto out;
	}

	if ((r = temp_beside(file, "new", T_IMG)) < 0)
		goto out;
	close(r);
	o->flags |= IMG_CREATE_OVERWRITE;
	{
		int64_t start = 0, waited;   /* --wait: the base may be locked */
		while ((r = img_create(tmp[T_IMG], o)) == -EBUSY && lock_wait_again(&start, &waited))
			;
	}
	if (r < 0) {
		lib_errmsg(file, r);
		goto out;
	}
	if ((r = img_open(tmp[T_IMG], IMG_OPEN_RDWR | IMG_OPEN_SCRATCH, &img)) < 0) {
		lib_errmsg(file, r);
		goto out;
	}
	progress_phase(&pr, 50, 100, "copying the filesystem into the image");
	if (copy_raw_into_image(file, fd, o->virtual_size, img, copied, &pr))
		goto out;
	/* What was made is what was asked for (and imginfo will say so). */
	r = img_fs_probe(img, fi);
	if (r < 0 || strcmp(fi->type, fs)) {
		errmsg("%s: the new image does not hold the %s filesystem %s made (%s)", file, fs,
		       argv[0], r < 0 ? img_last_error() : fi->type);
		goto out;
	}
	r = img_close(img);
	img = NULL;
	if (r < 0) {
		lib_errmsg(file, r);
		goto out;
	}
	if ((r = publish(file, target)) == 0)
		ret = EXIT_OK;
	else
		ret = exit_status(r);
out:
	img_target_release(target);
	if (img)
		img_close(img);
	if (fd >= 0)
		close(fd);
	drop_temps();
	return ret;
}

/* ---- mkimg --backing ---------------------------------------------------- */

struct clone_id {
	const char *uuid;      /* --fs-uuid, NULL: a random one */
	const char *label;     /* --label, NULL: kept */
	int keep_uuid;         /* --keep-fs-uuid */
	int changed;           /* out: the identity was set */
};

/* img_last_error() without the temporary clone's name in front: messages
 * name FILE. */
static const char *detail(void)
{
	const char *d = img_last_error();
	size_t tl = strlen(tmp[T_IMG]);

	if (tl && !strncmp(d, tmp[T_IMG], tl) && d[tl] == ':' && d[tl + 1] == ' ')
		d += tl + 2;
	return d;
}

/* lib_errmsg for the temporary clone: "FILE: what (detail)". */
static void new_errmsg(const char *file, int r)
{
	char e[TEXT_ESCAPE_LEN(1024)], d[1024];
	size_t dl, wl = strlen(strerror(-r));

	snprintf(d, sizeof(d), "%s", detail());
	dl = strlen(d);
	/* "...: No such file or directory" repeats what is printed first */
	if (dl > wl + 2 && !strcmp(d + dl - wl, strerror(-r)) && !strncmp(d + dl - wl - 2, ": ", 2))
		d[dl - wl - 2] = 0;
	if (d[0] && strcmp(d, img_strerror(r)))
		errmsg_err(file, r, "%s: %s (%s)", file, img_strerror(r),
			   text_escape(d, e, sizeof(e)));
	else
		errmsg_err(file, r, "%s: %s", file, img_strerror(r));
}

/* Opens the clone being made under its temporary name (mode: IMG_OPEN_*;
 * nobody else knows the file, so IMG_OPEN_NOLOCK for reading). */
static int open_new(const char *file, unsigned create_flags, unsigned mode, struct img **img)
{
	int r = img_open(tmp[T_IMG], mode | (create_flags & IMG_CREATE_ALLOW_BACKING_PATH ?
					     IMG_OPEN_ALLOW_BACKING_PATH : 0), img);
	if (r < 0)
		new_errmsg(file, r);
	return r;
}

/* Gives the clone's filesystem (of type, probed into fi) its own UUID
 * and/or label: ext2/3/4 through the library, xfs and btrfs with their own
 * tools on the attached clone.  Then probes again: what was asked for must
 * be what is there.  0 or -1 (message naming the step printed). */
static int set_clone_identity(const char *file, unsigned create_flags, struct clone_id *id,
			      struct img_fs_info *fi)
{
	char uuid[37], step[96], e[TEXT_ESCAPE_LEN(256)];
	const char *why;
	struct img *img = NULL;
	int r;

	snprintf(step, sizeof(step), "giving the clone's %s filesystem %s", fi->type,
		 !id->keep_uuid && id->label ? "a new UUID and label" :
		 !id->keep_uuid ? "a new UUID" : "a new label");
	if (id->keep_uuid)
		uuid[0] = 0;
	else if (id->uuid)
		snprintf(uuid, sizeof(uuid), "%s", id->uuid);
	else if ((r = fs_uuid_new(uuid)) < 0) {
		errmsg("%s: %s: no random UUID: %s", file, step, strerror(-r));
		return -1;
	}
	if (create_flags & IMG_CREATE_ALLOW_BACKING_PATH)
		backing_any = 1;   /* for the daemon that serves the clone */
	if (fs_is_ext(fi->type)) {
		/* a snapshot of a mounted filesystem: as root, its journal is
		 * replayed first, in the clone (without root: refused below) */
		if ((fi->flags & IMG_FS_HAVE_STATE) && (fi->state & IMG_FS_STATE_NEEDS_RECOVERY) &&
		    fs_offline_possible(&why)) {
			deferring = 1;
			r = fs_offline_replay_journal(tmp[T_IMG], fi->type);
			end_deferring();
			if (r < 0)
				goto fail;
		}
		if ((r = open_new(file, create_flags, IMG_OPEN_RDWR | IMG_OPEN_SCRATCH, &img)) < 0)
			goto fail;
		r = img_fs_set_identity(img, uuid[0] ? uuid : NULL, id->label, 0);
		if (r < 0)
			errmsg_err(file, r, "%s: %s", file, detail());
		r = img_close(img) < 0 && !r ? -EIO : r;
		if (r < 0)
			goto fail;
	} else {
		if (!fs_offline_possible(&why)) {
			errmsg("%s: %s needs root, /dev/fuse and loop devices (missing: %s); "
			       "--keep-fs-uuid makes the clone with the base's UUID", file, step, why);
			goto fail;
		}
		deferring = 1;
		r = fs_offline_set_identity(tmp[T_IMG], fi->type, uuid[0] ? uuid : NULL, id->label);
		end_deferring();
		if (r < 0)
			goto fail;
	}
	if ((r = open_new(file, create_flags, IMG_OPEN_NOLOCK, &img)) < 0)
		goto fail;
	r = img_fs_probe(img, fi);
	img_close(img);
	if (r < 0 || (uuid[0] && strcasecmp(fi->uuid, uuid)) ||
	    (id->label && strcmp(fi->label, id->label))) {
		errmsg("%s: after %s, the clone holds %s (UUID %s, label \"%s\")", file, step,
		       r < 0 ? "no filesystem found" : "another identity",
		       r < 0 ? "-" : fi->uuid, r < 0 ? "" : text_escape(fi->label, e, sizeof(e)));
		goto fail;
	}
	id->changed = 1;
	return 0;
fail:
	errmsg("%s: %s failed; no clone was made (--keep-fs-uuid makes it with the base's "
	       "filesystem identity)", file, step);
	return -1;
}

static int claim(const char *file, int force, struct img_target **target)
{
	int r = target_claim(file, force ? IMG_CREATE_OVERWRITE : 0, target);

	if (r == -EEXIST)
		errmsg_err(file, -EEXIST, "%s: already exists (use --force to overwrite)", file);
	else if (r < 0)
		lib_errmsg(file, r);
	return r;
}

/* The clone made under its temporary name will replace FILE: FILE must
 * not be its base nor anywhere down its chain (the rename would take the
 * chain's file away), as img_create refuses for a clone made in place.
 * 0, or -1 with a message. */
static int chain_has(const char *file, const struct img_create_opts *o)
{
	struct stat fst, bst;
	struct img *img, *b;
	int depth = 0, found = 0;

	if (stat(file, &fst) < 0)
		return 0;                   /* nothing to replace */
	if (open_new(file, o->flags, IMG_OPEN_NOLOCK, &img) < 0)
		return -1;
	for (b = img_backing(img); b && !found; b = img_backing(b)) {
		depth++;
		found = stat(img_name(b), &bst) == 0 && bst.st_dev == fst.st_dev &&
			bst.st_ino == fst.st_ino;
	}
	img_close(img);
	if (found && depth == 1)
		errmsg("%s: the backing file '%s' is this file itself: refused", file,
		       o->backing_file);
	else if (found)
		errmsg("%s: the backing chain loops back to this image: refused", file);
	return found ? -1 : 0;
}

/*
 * A clone is made under a temporary name beside FILE, its filesystem gets
 * its own identity, and it is renamed into place (FILE claimed, so locked,
 * before the rename and checked at the start): a failure at any step
 * leaves nothing, and with --force the file it would replace stays as it
 * was.  Only the clone is written: its base is opened read-only (a
 * protected base, FORMAT.md 3.1).
 * fi->type is "" when no filesystem was found.  Returns an exit status.
 */
static int make_clone(const char *file, struct img_create_opts *o, int force,
		      struct clone_id *id, uint64_t *size, struct img_fs_info *fi)
{
	struct img_target *target = NULL;
	struct img *img = NULL;
	struct img_info in;
	int r, ret = EXIT_ERROR, explicit = id->uuid || id->label;
	size_t max;

	memset(fi, 0, sizeof(*fi));
	/* Refused at once what the claim at the end would refuse (FILE
	 * exists, is protected, in use); released while the clone is made,
	 * which opens its chain with shared locks (FILE may be in it). */
	if ((r = claim(file, force, &target)) < 0)
		return exit_status(r);
	img_target_release(target);
	target = NULL;
	catch_signals();
	if ((r = temp_beside(file, "new", T_IMG)) < 0)
		goto out;
	close(r);
	o->flags |= IMG_CREATE_OVERWRITE;
	{
		/* the chain's shared locks: a base open for writing */
		int64_t start = 0, waited = -1;
		while ((r = img_create(tmp[T_IMG], o)) == -EBUSY &&
		       lock_wait_again(&start, &waited))
			;
	}
	if (r < 0) {
		new_errmsg(file, r);
		ret = exit_status(r);
		goto out;
	}
	if (chain_has(file, o) < 0)
		goto out;
	if ((r = open_new(file, o->flags, IMG_OPEN_NOLOCK, &img)) < 0)
		goto out;
	img_info(img, &in);
	*size = in.virtual_size;
	r = img_fs_probe(img, fi);
	img_close(img);
	if (r < 0 && r != -ENOMEDIUM) {
		errmsg("%s: cannot look for a filesystem in the base: %s", file, detail());
		goto out;
	}
	if (r < 0)
		fi->type[0] = 0;
	if (!id->keep_uuid || id->label) {
		max = fi->type[0] ? fs_label_max(fi->type) : 0;
		if (!max && explicit) {
			errmsg("%s: --fs-uuid and --label need an ext2/3/4, xfs or btrfs filesystem "
			       "in the base, which holds %s", file, fi->type[0] ? fi->type : "none");
			goto out;
		}
		if (max && id->label && strlen(id->label) > max) {
			errmsg("%s: label '%s' is too long: a %s label has at most %zu bytes",
			       file, id->label, fi->type, max);
			goto out;
		}
		if (max && id->label && !fs_label_valid(fi->type, id->label)) {
			errmsg("%s: label '%s': an xfs label set here holds no white space "
			       "and is not '--'", file, id->label);
			goto out;
		}
		if (max && set_clone_identity(file, o->flags, id, fi) < 0)
			goto out;
	}
	/* FILE locked from here to the rename; it may have changed since */
	if ((r = claim(file, force, &target)) < 0) {
		ret = exit_status(r);
		goto out;
	}
	if (chain_has(file, o) < 0)
		goto out;
	if ((r = publish(file, target)) == 0)
		ret = EXIT_OK;
	else
		ret = exit_status(r);
out:
	img_target_release(target);
	drop_temps();
	return ret;
}

/* An absolute BASE in FILE's own directory is stored as its name alone: the
 * relative reference every clone is expected to have (FORMAT.md 3.1), not
 * an absolute path the backing-path policy refuses.  Returns base itself
 * otherwise.  The name points into base. */
static const char *base_beside(const char *file, const char *base)
{
	char fc[PATH_MAX], bc[PATH_MAX], fd[PATH_MAX], bd[PATH_MAX];
	const char *name;

	if (base[0] != '/' || strlen(file) >= sizeof(fc) || strlen(base) >= sizeof(bc))
		return base;
	strcpy(fc, file);
	strcpy(bc, base);
	name = strrchr(base, '/') + 1;
	if (!*name || !strcmp(name, ".") || !strcmp(name, ".."))
		return base;
	if (!realpath(dirname(fc), fd) || !realpath(dirname(bc), bd) || strcmp(fd, bd))
		return base;
	return name;
}

static int run(int argc, char **argv)
{
	struct img_create_opts o = { 0 };
	struct clone_id cid = { 0 };
	const char *file = NULL, *size_arg = NULL, *fs = NULL, *label = NULL, *from = NULL;
	struct img_fs_info fi;
	struct stat st;
	uint64_t size, v, copied = 0;
	int c, r, npos = 0, force = 0, want_progress = 0;
	char b1[64], b2[64];
	struct tool_getopt g = { 0 };

	tool_init(argc, argv);
	while ((c = tool_getopt(&g, argc, argv, "fjpqhV", longopts)) != -1) {
		switch (c) {
		case 1:
			if (npos == 0)
				file = optarg;
			else if (npos == 1)
				size_arg = optarg;
			else
				return usage_error("too many arguments");
			npos++;
			break;
		case OPT_CLUSTER_SIZE:
			if (get_size("cluster size", optarg, &v))
				return exit_usage;
			if (v < IMG_MIN_CLUSTER_SIZE || v > IMG_MAX_CLUSTER_SIZE ||
			    (v & (v - 1)))
				return value_error("invalid cluster size '%s' (a power of two from "
						   "64K to 64M)", optarg);
			o.cluster_size = (uint32_t)v;
			break;
		case OPT_BAT_RESERVE:
			if (get_size("BAT reserve", optarg, &o.bat_reserve))
				return exit_usage;
			break;
		case OPT_FS:
			fs = optarg;
			if (!fs_is_ext(fs) && strcmp(fs, "xfs") && strcmp(fs, "btrfs")) {
				return value_error("unknown filesystem type '%s' (ext4, ext3, ext2, "
						   "xfs or btrfs)", fs);
			}
			break;
		case OPT_LABEL: label = optarg; break;
		case OPT_FROM: from = optarg; break;
		case OPT_BACKING: o.backing_file = optarg; break;
		case OPT_ALLOW_BACKING_PATH: o.flags |= IMG_CREATE_ALLOW_BACKING_PATH; break;
		case OPT_FS_UUID:
			if (!fs_uuid_valid(optarg))
				return usage_error("invalid --fs-uuid '%s' (expected "
						   "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", optarg);
			cid.uuid = optarg;
			break;
		case OPT_KEEP_FS_UUID: cid.keep_uuid = 1; break;
		case 'f': force = 1; break;
		case 'p': want_progress = 1; break;
		case 'j': json = 1; break;
		case 'q': quiet = 1; break;
		case 'h': usage(); return EXIT_OK;
		case 'V': print_version(); return EXIT_OK;
		default:
			return usage_error("bad usage");
		}
	}
	if (!file || (!size_arg && !o.backing_file))
		return usage_error("expected FILE and SIZE");
	if (!*file)
		return usage_error("empty file name");
	if (o.backing_file && fs)
		return usage_error("--backing and --fs cannot be combined");
	size = 0;
	if (size_arg && get_size("size", size_arg, &size))
		return exit_usage;
	if (size_arg && (size < IMG_SECTOR_SIZE || size % IMG_SECTOR_SIZE)) {
		errmsg("invalid size '%s': must be a multiple of 512 bytes, at least 512",
		       size_arg);
		return EXIT_ERROR;
	}
	o.virtual_size = size;
	if ((cid.uuid || cid.keep_uuid) && !o.backing_file)
		return usage_error("--fs-uuid and --keep-fs-uuid need --backing");
	if (cid.uuid && cid.keep_uuid)
		return usage_error("--fs-uuid and --keep-fs-uuid cannot be combined");
	if (from && !fs)
		return usage_error("--from needs --fs");
	if (label && !fs && !o.backing_file)
		return usage_error("--label needs --fs or --backing");
	if (from && stat(from, &st) < 0) {
		errmsg_err(from, -errno, "--from %s: %s", from, strerror(errno));
		return EXIT_ERROR;
	}
	if (from && !S_ISDIR(st.st_mode)) {
		errmsg("--from %s: not a directory", from);
		return EXIT_ERROR;
	}
	progress_init(&pr, want_progress && !quiet);
	if (fs) {
		r = make_with_fs(file, &o, fs, label, from, force, &copied, &fi);
		progress_finish(&pr, r == EXIT_OK);
		if (r == EXIT_OK && json) {
			print_json(file, size, o.cluster_size, NULL, &fi, from, copied);
		} else if (r == EXIT_OK && !quiet) {
			char b3[256];
			printf("Created %s: virtual size %s, cluster size %s\n", file,
			       human_size_exact(size, b1, sizeof(b1)),
			       human_size(o.cluster_size ? o.cluster_size : IMG_DEFAULT_CLUSTER_SIZE,
					  b2, sizeof(b2)));
			printf("  filesystem: %s\n", fs_describe(&fi, b3, sizeof(b3)));
			printf("  %s of filesystem data copied%s%s\n", human_size(copied, b1, sizeof(b1)),
			       from ? " from " : "", from ? from : "");
		}
		return r;
	}
	if (o.backing_file) {
		if (!(o.flags & IMG_CREATE_ALLOW_BACKING_PATH))
			o.backing_file = base_beside(file, o.backing_file);
		cid.label = label;
		r = make_clone(file, &o, force, &cid, &size, &fi);
		progress_finish(&pr, r == EXIT_OK);
		if (r != EXIT_OK)
			return r;
	} else {
		if (force)
			o.flags |= IMG_CREATE_OVERWRITE;
		{
			int64_t start = 0, waited;
			while ((r = img_create(file, &o)) == -EBUSY &&
			       lock_wait_again(&start, &waited))
				;
		}
		progress_finish(&pr, r == 0);   /* nothing long to measure */
		if (r == -EEXIST) {
			errmsg_err(file, -EEXIST, "%s: already exists (use --force to overwrite)", file);
			return EXIT_ERROR;
		}
		if (r < 0) {
			lib_errmsg(file, r);
			return exit_status(r);   /* EXIT_BUSY: FILE is in use */
		}
	}
	if (json) {
		print_json(file, size, o.cluster_size, o.backing_file, fi.type[0] ? &fi : NULL,
			   NULL, 0);
	} else if (!quiet) {
		printf("Created %s: virtual size %s, cluster size %s\n", file,
		       human_size_exact(size, b1, sizeof(b1)),
		       human_size(o.cluster_size ? o.cluster_size : IMG_DEFAULT_CLUSTER_SIZE,
				  b2, sizeof(b2)));
		if (o.backing_file) {
			/* the reference as stored: shown as imginfo shows it */
			char e[TEXT_ESCAPE_LEN(4096)];
			printf("  backing file: %s\n", text_escape(o.backing_file, e, sizeof(e)));
			if (fi.type[0]) {
				char b3[256];
				printf("  filesystem: %s%s\n", fs_describe(&fi, b3, sizeof(b3)),
				       cid.changed ? "" : cid.keep_uuid ? " (the base's UUID)" :
				       " (the base's identity: only an ext2/3/4, xfs or btrfs "
				       "UUID is changed)");
			} else {
				printf("  filesystem: none found (no UUID to change)\n");
			}
		}
	}
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
