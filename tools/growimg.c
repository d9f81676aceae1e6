/* SPDX-License-Identifier: MIT */
/* growimg: grow an image's virtual size and the filesystem in it. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common.h"
#include "common_fs.h"
#include "online/daemon.h"
#include "online/fs_offline.h"
#include "online/mount.h"

enum { OPT_NO_FS = 256 };

static const struct option longopts[] = {
	{ "no-fs",   no_argument, NULL, OPT_NO_FS },
	{ "progress", no_argument, NULL, 'p' },
	{ "json",    no_argument, NULL, 'j' },
	{ "quiet",   no_argument, NULL, 'q' },
	{ "help",    no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	BACKING_PATH_OPTION,
	WAIT_OPTION,
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE SIZE|+DELTA\n"
	       "Grow the virtual size of a libimg image to SIZE, or by DELTA.\n"
	       "Sizes take binary suffixes (20G, +512M) and must be multiples of 512.\n"
	       "The new space reads as zeros.  A filesystem in the image (ext2/3/4, xfs,\n"
	       "btrfs) grows to fill it: offline through a private attach of the image\n"
	       "(resize2fs; xfs_growfs, btrfs filesystem resize on a private mount: needs\n"
	       "root, /dev/fuse, loop devices).  On an image served by imgserve (imgmount)\n"
	       "the daemon grows it and a mounted filesystem is grown online.\n"
	       "\n"
	       "  --no-fs        grow only the image, not the filesystem in it\n"
	       "  -j, --json     print the result as a JSON object (also with -q)\n"
	       "  -p, --progress show progress on standard error\n"
	       BACKING_PATH_HELP
	       WAIT_HELP
	       "  -q, --quiet    print nothing on success\n"
	       "  -h, --help     show this help\n"
	       "  -V, --version  show the version\n"
	       "\n"
	       "Exit status: 0 success (also: already SIZE), 1 error (nothing changed),\n"
	       "  2 usage, 3 corrupt, 4 broken chain, 5 not found, 7 partial: the image\n"
	       "  grew, its filesystem did not (the message says what completes it),\n"
	       "  8 no space, 75 in use.  See growimg(1), libimg(7).\n",
	       progname);
}

/* -p */
static struct progress pr;

/* The name of the filesystem step, for -p. */
static const char *fs_step_name(const char *type, char *buf, size_t len)
{
	snprintf(buf, len, "growing the %s filesystem (%s)", type,
		 fs_is_ext(type) ? "resize2fs" : !strcmp(type, "xfs") ? "xfs_growfs" :
		 "btrfs filesystem resize");
	return buf;
}

/* The image is served: the daemon grows it, then the loop device and the
 * mounted filesystem follow. */
static int grow_online(const char *file, struct online_state *os, const char *size_arg)
{
	uint64_t cur, new_size;
	char b1[64], b2[64], type[64];
	struct statvfs sv;
	int r;

	if (!os->alive)
		return online_refuse_if_used(file, os), EXIT_ERROR;
	if (online_virtual_size(file, os, &cur) < 0)
		return EXIT_ERROR;
	if (parse_new_size(size_arg, cur, &new_size)) {
		errmsg("%s: invalid size '%s' (out of range for a %s image)", file, size_arg,
		       human_size(cur, b1, sizeof(b1)));
		return EXIT_ERROR;
	}
	if (new_size < cur) {
		errmsg("%s: %s is smaller than the current size %s (use shrinkimg to shrink)",
		       file, human_size_exact(new_size, b1, sizeof(b1)),
		       human_size_exact(cur, b2, sizeof(b2)));
		return EXIT_ERROR;
	}
	if (new_size % IMG_SECTOR_SIZE) {
		errmsg("%s: new size %llu is not a multiple of 512 bytes", file,
		       (unsigned long long)new_size);
		return EXIT_ERROR;
	}
	/* the daemon reports no progress: steps only */
	progress_phase(&pr, 0, 50, "growing the image (imgserve)");
	if (online_set_size(file, os, new_size, 0) < 0) {
		progress_finish(&pr, 0);
		return EXIT_ERROR;
	}
	progress_phase(&pr, 50, 100, "growing the mounted filesystem");
	r = online_fs_grow(file, os, type, sizeof(type));
	progress_finish(&pr, !(r == -EIO || r == -EOPNOTSUPP || r == -EPERM));
	if (r == -EIO || r == -EOPNOTSUPP || r == -EPERM) {
		/* partial: the image and the loop device have their new size,
		 * the filesystem not; say what completes it */
		char how[PATH_MAX + 64];
		if (r == -EOPNOTSUPP) {
			errmsg("%s: the image grew, but growing a %s filesystem is not supported",
			       file, type);
			snprintf(how, sizeof(how), "grow the %s filesystem on %s with its own tool",
				 type, os->loop);
		} else if (fs_is_ext(type)) {
			snprintf(how, sizeof(how), "'resize2fs %s'%s", os->loop,
				 r == -EPERM ? " as a process with CAP_SYS_RESOURCE" : "");
		} else if (!strcmp(type, "xfs")) {
			snprintf(how, sizeof(how), "'xfs_growfs %s'", os->mountpoint);
		} else {
			snprintf(how, sizeof(how), "'btrfs filesystem resize max %s'", os->mountpoint);
		}
		error_forget();   /* this line, not its cause, is the error */
		errmsg_err(file, r, "%s: partial: the image and %s grew to %llu bytes, the %s filesystem on %s "
		       "did not; to complete it run %s, or 'imgumount %s' then 'growimg %s %llu'",
		       file, os->loop, (unsigned long long)new_size, type, os->mountpoint, how,
		       os->mountpoint, file, (unsigned long long)new_size);
		return EXIT_PARTIAL;
	}
	if (json) {   /* the keys of the offline grow, in the same order */
		struct json_out j;
		json_start(&j, stdout);
		json_doc_begin(&j);
		json_string(&j, "filename", file);
		json_u64(&j, "old_size", cur);
		json_u64(&j, "new_size", new_size);
		json_bool(&j, "online", 1);
		json_string(&j, "device", os->loop[0] ? os->loop : NULL);
		json_string(&j, "filesystem", type[0] ? type : NULL);
		if (r >= 0 && statvfs(os->mountpoint, &sv) == 0)
			json_u64(&j, "filesystem_size", (uint64_t)sv.f_blocks * sv.f_frsize);
		else
			json_null(&j, "filesystem_size");
		json_bool(&j, "filesystem_grown", r == 0);
		json_object_end(&j);
		json_finish(&j);
		return EXIT_OK;
	}
	if (quiet)
		return EXIT_OK;
	printf("%s: virtual size %s -> %s (online)\n", file, human_size(cur, b1, sizeof(b1)),
	       human_size_exact(new_size, b2, sizeof(b2)));
	if (r == 1)
		printf("%s: the %s filesystem on %s already fills the image\n", file, type,
		       os->mountpoint);
	else if (r == 0 && statvfs(os->mountpoint, &sv) == 0)
		printf("%s: the %s filesystem on %s grew to %s\n", file, type, os->mountpoint,
		       human_size((uint64_t)sv.f_blocks * sv.f_frsize, b1, sizeof(b1)));
	else if (r == -ENOTCONN)
		printf("%s: the %s filesystem on %s is not mounted: grow it yourself (resize2fs "
		       "%s; xfs and btrfs grow only while mounted)\n", file, type, os->loop,
		       os->loop);
	return EXIT_OK;
}

/* The filesystem is grown offline when it is one of these. */
static int fs_growable(const char *type)
{
	return fs_is_ext(type) || !strcmp(type, "xfs") || !strcmp(type, "btrfs");
}

static int run(int argc, char **argv)
{
	const char *file = NULL, *size_arg = NULL, *why;
	struct img_info in;
	struct img *img;
	uint64_t new_size = 0, tmp;
	int c, r, npos = 0, ret = EXIT_ERROR, no_fs = 0, grow_fs = 0, fs_grew = 0, want_progress = 0;
	char b1[64], b2[64], fb[512], step[128];
	struct tool_getopt g = { 0 };
	struct img_fs_info fi;
	int have_fs = 0;

	tool_init(argc, argv);
	while ((c = tool_getopt(&g, argc, argv, "pjqhV", longopts)) != -1) {
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
		case OPT_NO_FS: no_fs = 1; break;
		case 'p': want_progress = 1; break;
		case 'j': json = 1; break;
		case 'q': quiet = 1; break;
		case 'h': usage(); return EXIT_OK;
		case 'V': print_version(); return EXIT_OK;
		default:
			return usage_error("bad usage");
		}
	}
	if (!file || !size_arg)
		return usage_error("expected FILE and SIZE");
	/* syntax first, so that a typo is reported before the image is opened */
	if (parse_size(size_arg[0] == '+' || size_arg[0] == '-' ? size_arg + 1 : size_arg,
		       &tmp)) {
		return value_error("invalid size '%s' (expected SIZE or +DELTA with an optional "
				   "K, M, G, T, P or E suffix)", size_arg);
	}

	progress_init(&pr, want_progress && !quiet);
	{
		struct online_state os;
		if (access(file, F_OK) == 0 && online_state_load(file, &os) > 0)
			return grow_online(file, &os, size_arg);
	}
	/* Everything is checked read-only first: a refusal changes nothing
	 * (opening for writing alone rewrites the header). */
	if ((r = open_image(file, 0, &img)) < 0)
		return exit_status(r);
	memset(&in, 0, sizeof(in));
	memset(&fi, 0, sizeof(fi));
	r = img_info(img, &in);
	if (r < 0) {
		lib_errmsg(file, r);
		goto out;
	}
	if (parse_new_size(size_arg, in.virtual_size, &new_size)) {
		errmsg("%s: invalid size '%s' (out of range for a %s image)", file, size_arg,
		       human_size(in.virtual_size, b1, sizeof(b1)));
		goto out;
	}
	if (new_size < in.virtual_size) {
		errmsg("%s: %s is smaller than the current size %s (use shrinkimg to shrink)",
		       file, human_size_exact(new_size, b1, sizeof(b1)),
		       human_size_exact(in.virtual_size, b2, sizeof(b2)));
		goto out;
	}
	if (new_size % IMG_SECTOR_SIZE) {
		errmsg("%s: new size %llu is not a multiple of 512 bytes", file,
		       (unsigned long long)new_size);
		goto out;
	}
	have_fs = fs_probe(file, img, &fi) == 0 && (fi.flags & IMG_FS_HAVE_SIZE);
	/* the filesystem grows when it is smaller than the new size, also
	 * when the image already has it (a rerun after a failed fs step) */
	grow_fs = !no_fs && have_fs && fi.size < new_size && fs_growable(fi.type);
	if (grow_fs && (fi.flags & IMG_FS_HAVE_STATE) && fi.state) {
		errmsg("%s: the filesystem in the image needs checking (%s)", file,
		       fs_describe(&fi, fb, sizeof(fb)));
		errmsg("%s: nothing was changed; check it (e2fsck -f on the image's export), "
		       "or grow only the image with --no-fs", file);
		goto out;
	}
	if (grow_fs && !fs_offline_possible(&why)) {
		errmsg("%s: growing the %s filesystem in the image needs %s (it attaches the "
		       "image to run %s); nothing was changed; --no-fs grows only the image",
		       file, fi.type, why, fs_is_ext(fi.type) ? "resize2fs" :
		       !strcmp(fi.type, "xfs") ? "xfs_growfs" : "btrfs filesystem resize");
		goto out;
	}
	if (new_size > in.virtual_size) {
		img_close(img);
		if ((r = open_image(file, IMG_OPEN_RDWR, &img)) < 0)
			return exit_status(r);
		/* data clusters in the way of a larger BAT move: measured */
		progress_phase(&pr, 0, grow_fs ? 50 : 100, grow_fs ? "growing the image" : NULL);
		r = img_resize_progress(img, new_size, 0, pr.enabled ? progress_cb : NULL, &pr);
		if (r < 0) {
			lib_errmsg(file, r);
			goto out;
		}
	}
	ret = EXIT_OK;
out:
	if (close_image(file, img) < 0)
		ret = EXIT_ERROR;
	if (ret != EXIT_OK) {
		progress_finish(&pr, 0);
		return ret;
	}
	if (grow_fs) {
		/* The image has its new size (durable): if this step fails, a
		 * rerun of the same command does only what is left.  An
		 * external program: a step. */
		progress_phase(&pr, 50, 100, fs_step_name(fi.type, step, sizeof(step)));
		r = fs_offline_grow(file, fi.type);
		progress_finish(&pr, r >= 0);
		if (r < 0) {
			error_forget();
			errmsg_err(file, r, "%s: partial: the image has grown to %s but the %s filesystem in it "
			       "has not (it still spans %s); run 'growimg %s %llu' again to grow "
			       "it, or see the messages above", file,
			       human_size_exact(new_size, b1, sizeof(b1)), fi.type,
			       human_size(fi.size, b2, sizeof(b2)), file,
			       (unsigned long long)new_size);
			return EXIT_PARTIAL;
		}
		fs_grew = 1;
		if (open_image(file, 0, &img) == 0) {
			if (fs_probe(file, img, &fi) != 0)
				have_fs = 0;
			img_close(img);
		}
	}
	progress_finish(&pr, 1);
	if (json) {   /* the keys of the online grow, in the same order */
		struct json_out j;
		json_start(&j, stdout);
		json_doc_begin(&j);
		json_string(&j, "filename", file);
		json_u64(&j, "old_size", in.virtual_size);
		json_u64(&j, "new_size", new_size);
		json_bool(&j, "online", 0);
		json_null(&j, "device");
		json_string(&j, "filesystem", have_fs ? fi.type : NULL);
		if (have_fs)
			json_u64(&j, "filesystem_size", fi.size);
		else
			json_null(&j, "filesystem_size");
		json_bool(&j, "filesystem_grown", fs_grew);
		json_object_end(&j);
		json_finish(&j);
		return ret;
	}
	if (quiet)
		return ret;
	if (new_size == in.virtual_size && !fs_grew)
		printf("%s: virtual size is already %s; nothing to do\n", file,
		       human_size_exact(new_size, b1, sizeof(b1)));
	else if (new_size != in.virtual_size)
		printf("%s: virtual size %s -> %s\n", file,
		       human_size(in.virtual_size, b1, sizeof(b1)),
		       human_size_exact(new_size, b2, sizeof(b2)));
	if (fs_grew)
		printf("%s: the %s filesystem grew to %s\n", file, fi.type,
		       human_size(fi.size, b1, sizeof(b1)));
	else if (have_fs && fi.size < new_size)
		printf("%s: the %s filesystem still spans %s (%s)\n", file, fi.type,
		       human_size(fi.size, b1, sizeof(b1)),
		       no_fs ? "--no-fs" : "growimg cannot grow this type");
	return ret;
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
