/* SPDX-License-Identifier: MIT */
/* mkimg: create an empty image, or one holding a new filesystem. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common.h"
#include "common_fs.h"

enum { OPT_CLUSTER_SIZE = 256, OPT_BAT_RESERVE, OPT_FS, OPT_LABEL, OPT_FROM, OPT_BACKING,
       OPT_ALLOW_BACKING_PATH };

static const struct option longopts[] = {
	{ "cluster-size", required_argument, NULL, OPT_CLUSTER_SIZE },
	{ "bat-reserve",  required_argument, NULL, OPT_BAT_RESERVE },
	{ "fs",           required_argument, NULL, OPT_FS },
	{ "label",        required_argument, NULL, OPT_LABEL },
	{ "from",         required_argument, NULL, OPT_FROM },
	{ "backing",      required_argument, NULL, OPT_BACKING },
	{ "allow-backing-path", no_argument, NULL, OPT_ALLOW_BACKING_PATH },
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
	       "  --backing BASE       a clone reading what it did not write from BASE (named\n"
	       "                       relative to FILE's directory; SIZE defaults to BASE's;\n"
	       "                       --allow-backing-path: BASE may be absolute, hold '..')\n"
	       "  --cluster-size SIZE  allocation unit: a power of two, 64K..64M (default 1M)\n"
	       "  --bat-reserve SIZE   size the block table so growing to SIZE moves no data\n"
	       "  --fs TYPE            make a filesystem in it (no root): ext4/3/2, xfs, btrfs\n"
	       "  --label LABEL        the filesystem's label\n"
	       "  --from DIR           copy DIR's tree into the new filesystem (ext*:\n"
	       "                       mke2fs -d; btrfs: --rootdir; xfs: a protofile,\n"
	       "                       without hard links, xattrs or the sticky bit)\n"
	       "  -f, --force          overwrite FILE if it exists\n"
	       "  -p, --progress       show progress on standard error\n"
	       "  -j, --json           print the result as a JSON object (also with -q)\n"
	       WAIT_HELP
	       "  -q, --quiet          print nothing on success\n"
	       "  -h, --help / -V, --version  show this help / the version\n"
	       "Made beside FILE and renamed into place: a failure leaves nothing.\n"
	       "Exit status: 0 created, 1 error, 2 usage, 3 base corrupt, 4 base's chain\n"
	       "  broken, 5 not found, 8 no space, 75 in use.  See mkimg(1), libimg(7).\n", progname, progname);
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

static void on_signal(int sig)
{
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
		errmsg("%s: already exists (use --force to overwrite)", file);
	else if (r < 0)
		img_errmsg(file, r);
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
			errmsg("%s: already exists (use --force to overwrite)", file);
		else
			img_errmsg(file, r);
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
	if (run_quiet(argv) != 0)
		goto out;

	if ((r = temp_beside(file, "new", T_IMG)) < 0)
		goto out;
	close(r);
	o->flags |= IMG_CREATE_OVERWRITE;
	if ((r = img_create(tmp[T_IMG], o)) < 0) {
		img_errmsg(file, r);
		goto out;
	}
	if ((r = img_open(tmp[T_IMG], IMG_OPEN_RDWR | IMG_OPEN_SCRATCH, &img)) < 0) {
		img_errmsg(file, r);
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
		img_errmsg(file, r);
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

static int run(int argc, char **argv)
{
	struct img_create_opts o = { 0 };
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
	if ((label || from) && !fs)
		return usage_error("--label and --from need --fs");
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
	if (force)
		o.flags |= IMG_CREATE_OVERWRITE;

	{
		int64_t start = 0, waited;
		while ((r = img_create(file, &o)) == -EBUSY && lock_wait_again(&start, &waited))
			;
	}
	progress_finish(&pr, r == 0);   /* nothing long to measure */
	if (r == -EEXIST) {
		errmsg("%s: already exists (use --force to overwrite)", file);
		return EXIT_ERROR;
	}
	if (r < 0) {
		img_errmsg(file, r);
		return exit_status(r);   /* EXIT_BUSY: FILE is in use */
	}
	if (!size) {   /* the backing image's size */
		struct img *img;
		struct img_info in;
		if (img_open(file, IMG_OPEN_NOLOCK | (o.flags & IMG_CREATE_ALLOW_BACKING_PATH ?
						       IMG_OPEN_ALLOW_BACKING_PATH : 0), &img) == 0) {
			img_info(img, &in);
			size = in.virtual_size;
			img_close(img);
		}
	}
	if (json) {
		print_json(file, size, o.cluster_size, o.backing_file, NULL, NULL, 0);
	} else if (!quiet) {
		printf("Created %s: virtual size %s, cluster size %s\n", file,
		       human_size_exact(size, b1, sizeof(b1)),
		       human_size(o.cluster_size ? o.cluster_size : IMG_DEFAULT_CLUSTER_SIZE,
				  b2, sizeof(b2)));
		if (o.backing_file) {
			/* the reference as stored: shown as imginfo shows it */
			char e[TEXT_ESCAPE_LEN(4096)];
			printf("  backing file: %s\n", text_escape(o.backing_file, e, sizeof(e)));
		}
	}
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
