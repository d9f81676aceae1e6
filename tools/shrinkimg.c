/* SPDX-License-Identifier: MIT */
/* shrinkimg: shrink an image's virtual size (offline). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "common_fs.h"
#include "common_online.h"

enum { OPT_DISCARD_DATA = 256 };

static const struct option longopts[] = {
	{ "discard-data", no_argument, NULL, OPT_DISCARD_DATA },
	{ "json",         no_argument, NULL, 'j' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "quiet",        no_argument, NULL, 'q' },
	{ "help",         no_argument, NULL, 'h' },
	{ "version",      no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE SIZE|-DELTA\n"
	       "Shrink the virtual size of a libimg image to SIZE, or by DELTA, and\n"
	       "give the host space past the new end back.  Sizes take binary suffixes\n"
	       "(5G, -512M), multiples of 512.  On an image mounted with imgmount: btrfs\n"
	       "shrinks online (filesystem, then image); ext2/3/4 cannot, so a hidden\n"
	       "balloon file reserves the space and gives it back to the host, and the\n"
	       "next shrinkimg while unmounted completes the shrink (shrinkimg(1)).\n"
	       "\n"
	       "  --discard-data  shrink even if data, or the filesystem the image\n"
	       "                  holds, lies past the new end (that data is lost);\n"
	       "                  without it shrinkimg refuses\n"
	       "  -j, --json      print {filename, old_size, new_size} as JSON\n"
	       "  -v, --verbose   say which I/O engine is used\n"
	       "  -q, --quiet     print nothing on success\n"
	       "  -h, --help      show this help\n"
	       "  -V, --version   show the version\n"
	       "\n"
	       "Exit status: 0 success (also when the size is already SIZE), 1 error\n"
	       "(including a refusal to drop data).  See shrinkimg(1).\n", progname);
}

static void print_result(const char *file, uint64_t old, uint64_t now, int online,
			 uint64_t balloon)
{
	char b1[64], b2[64];

	if (json) {
		struct json_out j;
		json_start(&j, stdout);
		json_object_begin(&j, NULL);
		json_string(&j, "filename", file);
		json_u64(&j, "old_size", old);
		json_u64(&j, "new_size", now);
		json_bool(&j, "online", online);
		if (balloon)
			json_u64(&j, "balloon", balloon);
		json_object_end(&j);
		json_finish(&j);
	} else if (now == old && !balloon) {
		printf("%s: virtual size is already %s; nothing to do\n", file,
		       human_size_exact(now, b1, sizeof(b1)));
	} else if (now != old) {
		printf("%s: virtual size %s -> %s%s\n", file,
		       human_size(old, b1, sizeof(b1)),
		       human_size_exact(now, b2, sizeof(b2)), online ? " (online)" : "");
	}
}

/* The filesystem at the start of the image, read without the lock (the
 * daemon holds it).  0 with *fi, 1 when none is recognised. */
static int probe_served(const char *file, struct img_fs_info *fi)
{
	struct img *img;
	int r;

	if (open_image(file, IMG_OPEN_NOLOCK, &img) < 0)
		return -EIO;
	r = fs_probe(file, img, fi);
	img_close(img);
	return r;
}

/* Mounts the attached filesystem on a private directory, looks for the
 * balloon and (remove) removes it, unmounts.  1 found, 0 not, -errno. */
static int balloon_visit(const char *file, const struct online_state *os, int remove)
{
	char dir[] = "/tmp/libimg-shrink-XXXXXX", type[64], path[PATH_MAX];
	struct stat sb;
	int r = 0, found;

	if (online_blkid_type(os->loop, type, sizeof(type)) < 0 || !type[0] || !mkdtemp(dir))
		return -EIO;
	{
		/* read-only and without journal replay: nothing is written */
		char *av[] = { "mount", "-t", type, "-o", remove ? "rw" : "ro,noload",
			       (char *)os->loop, dir, NULL };
		if (run_quiet(av) != 0) {
			rmdir(dir);
			return -EIO;
		}
	}
	snprintf(path, sizeof(path), "%s/%s", dir, ONLINE_BALLOON);
	found = lstat(path, &sb) == 0 && S_ISREG(sb.st_mode);
	if (found && remove && unlink(path) < 0) {
		r = -errno;
		errmsg("%s: cannot remove the balloon: %s", file, strerror(-r));
	}
	if (umount(dir) < 0 && !r) {
		r = -errno;
		errmsg("%s: cannot unmount: %s", dir, strerror(-r));
	}
	rmdir(dir);
	return r < 0 ? r : found;
}

/* Completes what an online shrink of ext2/3/4 started.  The image is
 * first attached read-only to look for the balloon (nothing changes when
 * there is none); then read-write: the balloon is removed, the filesystem
 * checked (e2fsck -f -p) and shrunk (resize2fs), and the image detached.
 * 0 done, 1 no balloon (the image is untouched), -errno. */
static int complete_balloon(const char *file, uint64_t new_size)
{
	struct online_state os;
	char kb[32];
	int r;

	if (online_attach(file, ONLINE_READ_ONLY, &os) < 0)
		return -EIO;
	r = balloon_visit(file, &os, 0);
	if (online_teardown(&os) < 0 && r >= 0)
		r = -EIO;
	if (r <= 0)
		return r < 0 ? r : 1;
	if (online_attach(file, 0, &os) < 0)
		return -EIO;
	r = balloon_visit(file, &os, 1);
	if (r == 1) {
		char *fsck[] = { "e2fsck", "-f", "-p", os.loop, NULL };
		char *rs[] = { "resize2fs", os.loop, kb, NULL };
		snprintf(kb, sizeof(kb), "%lluK", (unsigned long long)(new_size / 1024));
		r = run_quiet(fsck);
		if (r != 0 && r != 1) {     /* 1: errors corrected */
			errmsg("%s: the filesystem needs a manual e2fsck; nothing was shrunk", file);
			r = -EIO;
		} else if (run_quiet(rs) != 0) {
			errmsg("%s: resize2fs could not shrink the filesystem to %s", file, kb);
			r = -EIO;
		} else {
			r = 0;
		}
	} else if (r == 0) {
		r = 1;
	}
	if (online_teardown(&os) < 0 && r >= 0)
		r = -EIO;
	return r;
}

/* The image is served by imgserve: see usage(). */
static int shrink_online(const char *file, struct online_state *os, const char *size_arg,
			 unsigned rflags)
{
	struct img_fs_info fi;
	uint64_t cur, new_size, discarded = 0;
	char b1[64], b2[64], type[64] = "";
	int r, have_fs;

	if (!os->alive)
		return online_refuse_if_used(file, os), EXIT_ERROR;
	if (online_virtual_size(file, os, &cur) < 0)
		return EXIT_ERROR;
	if (parse_new_size(size_arg, cur, &new_size)) {
		errmsg("%s: invalid size '%s' (out of range for a %s image)", file, size_arg,
		       human_size(cur, b1, sizeof(b1)));
		return EXIT_ERROR;
	}
	if (new_size > cur) {
		errmsg("%s: %s is larger than the current size %s (use growimg to grow)",
		       file, human_size_exact(new_size, b1, sizeof(b1)),
		       human_size_exact(cur, b2, sizeof(b2)));
		return EXIT_ERROR;
	}
	if (new_size < IMG_SECTOR_SIZE || new_size % IMG_SECTOR_SIZE) {
		errmsg("%s: new size %llu must be a multiple of 512 bytes, at least 512",
		       file, (unsigned long long)new_size);
		return EXIT_ERROR;
	}
	if (new_size == cur) {
		if (!quiet)
			print_result(file, cur, cur, 1, 0);
		return EXIT_OK;
	}
	memset(&fi, 0, sizeof(fi));
	r = probe_served(file, &fi);
	if (r < 0)
		return EXIT_ERROR;
	have_fs = r == 0 && (fi.flags & IMG_FS_HAVE_SIZE) && !(rflags & IMG_RESIZE_DISCARD_DATA);
	if (have_fs && new_size < fi.size) {
		if (os->loop[0])
			online_blkid_type(os->loop, type, sizeof(type));
		if (!type[0])
			snprintf(type, sizeof(type), "%s", fi.type);
		if (!os->mountpoint[0]) {
			errmsg("%s: the %s filesystem spans %s; shrinking the image to %s would cut "
			       "it off; nothing was changed (mount it with imgmount, or shrink it "
			       "first)", file, type, human_size_exact(fi.size, b1, sizeof(b1)),
			       human_size_exact(new_size, b2, sizeof(b2)));
			return EXIT_ERROR;
		}
		if (!strcmp(type, "btrfs")) {
			char arg[32];
			char *av[] = { "btrfs", "filesystem", "resize", arg, os->mountpoint, NULL };
			snprintf(arg, sizeof(arg), "%llu", (unsigned long long)new_size);
			if (run_quiet(av) != 0) {
				errmsg("%s: the btrfs filesystem on %s did not shrink to %s; nothing "
				       "was changed", file, os->mountpoint,
				       human_size_exact(new_size, b1, sizeof(b1)));
				return EXIT_ERROR;
			}
			/* what lies past the filesystem's new end is not its data */
			rflags |= IMG_RESIZE_DISCARD_DATA;
		} else if (fs_is_ext(type)) {
			r = online_balloon_inflate(file, os, fi.size - new_size, &discarded);
			if (r == -ENOSPC)
				errmsg("%s: the %s filesystem on %s has less than %s free; nothing "
				       "was changed", file, type, os->mountpoint,
				       human_size_exact(fi.size - new_size, b1, sizeof(b1)));
			if (r < 0)
				return EXIT_ERROR;
			if (json) {
				print_result(file, cur, cur, 1, fi.size - new_size);
			} else if (!quiet) {
				printf("%s: %s cannot shrink while mounted: %s/%s now reserves %s "
				       "(fallocated, never written; %s of host space given back)\n",
				       file, type, os->mountpoint, ONLINE_BALLOON,
				       human_size_exact(fi.size - new_size, b1, sizeof(b1)),
				       human_size(discarded, b2, sizeof(b2)));
				printf("%s: the virtual size stays %s until the shrink completes: run "
				       "'imgumount %s', then 'shrinkimg %s %llu'\n", file,
				       human_size(cur, b1, sizeof(b1)), os->mountpoint, file,
				       (unsigned long long)new_size);
			}
			return EXIT_OK;
		} else {
			errmsg("%s: the %s filesystem spans %s and cannot shrink%s; nothing was "
			       "changed", file, type, human_size_exact(fi.size, b1, sizeof(b1)),
			       !strcmp(type, "xfs") ? " (xfs never shrinks)" : " online");
			return EXIT_ERROR;
		}
	}
	if (online_set_size(file, os, new_size, (rflags & IMG_RESIZE_DISCARD_DATA) != 0) < 0)
		return EXIT_ERROR;
	if (!quiet)
		print_result(file, cur, new_size, 1, 0);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	const char *file = NULL, *size_arg = NULL;
	struct img_info in;
	struct img *img;
	uint64_t new_size = 0, tmp;
	unsigned rflags = 0;
	int c, r, npos = 0, ret = EXIT_ERROR;
	char b1[64], b2[64];
	struct tool_getopt g = { 0 };

	tool_init(argc, argv);
	while ((c = tool_getopt(&g, argc, argv, "jqhVv", longopts)) != -1) {
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
		case OPT_DISCARD_DATA: rflags |= IMG_RESIZE_DISCARD_DATA; break;
		case 'j': json = 1; break;
		case 'q': quiet = 1; break;
		case 'v': verbose = 1; break;
		case 'h': usage(); return EXIT_OK;
		case 'V': print_version(); return EXIT_OK;
		default:
			return usage_error("bad usage");
		}
	}
	if (!file || !size_arg)
		return usage_error("expected FILE and SIZE");
	if (parse_size(size_arg[0] == '+' || size_arg[0] == '-' ? size_arg + 1 : size_arg,
		       &tmp)) {
		errmsg("invalid size '%s' (expected SIZE or -DELTA with an optional K, M, "
		       "G, T, P or E suffix)", size_arg);
		return EXIT_ERROR;
	}

	{
		struct online_state os;
		if (access(file, F_OK) == 0 && online_state_load(file, &os) > 0)
			return shrink_online(file, &os, size_arg, rflags);
	}
	/* A filesystem that would be cut is refused before the image is
	 * opened for writing: the file stays exactly as it was. */
	if (!(rflags & IMG_RESIZE_DISCARD_DATA)) {
		struct img_fs_info fi;
		if (open_image(file, 0, &img) < 0)
			return EXIT_ERROR;
		r = img_info(img, &in);
		if (r == 0 && fs_probe(file, img, &fi) == 0 && (fi.flags & IMG_FS_HAVE_SIZE) &&
		    parse_new_size(size_arg, in.virtual_size, &new_size) == 0 &&
		    new_size < fi.size && fs_is_ext(fi.type) && new_size >= IMG_SECTOR_SIZE &&
		    new_size % IMG_SECTOR_SIZE == 0 && access("/dev/fuse", R_OK | W_OK) == 0 &&
		    access("/dev/loop-control", R_OK | W_OK) == 0) {
			/* an online shrink left a balloon: finish it */
			img_close(img);
			img = NULL;
			r = complete_balloon(file, new_size);
			if (r < 0)
				return EXIT_ERROR;
			if (r == 0) {
				rflags |= IMG_RESIZE_DISCARD_DATA;
				if (!quiet && !json)
					printf("%s: removed the balloon and shrank the %s filesystem to "
					       "%s\n", file, fi.type, human_size_exact(new_size, b1,
					       sizeof(b1)));
				goto shrink;
			}
			if (open_image(file, 0, &img) < 0)
				return EXIT_ERROR;
			r = img_info(img, &in);
		}
		if (r == 0 && fs_probe(file, img, &fi) == 0 && (fi.flags & IMG_FS_HAVE_SIZE) &&
		    parse_new_size(size_arg, in.virtual_size, &new_size) == 0 &&
		    new_size < fi.size) {
			errmsg("%s: the %s filesystem in the image spans %s; shrinking the image "
			       "to %s would cut it off", file, fi.type,
			       human_size_exact(fi.size, b1, sizeof(b1)),
			       human_size_exact(new_size, b2, sizeof(b2)));
			errmsg("%s: nothing was changed; %s", file,
			       !strcmp(fi.type, "xfs") ? "xfs filesystems cannot shrink" :
			       fs_is_ext(fi.type) ? "shrink the filesystem first (resize2fs on the "
			       "image's export, unmounted)" :
			       !strcmp(fi.type, "btrfs") ? "shrink the filesystem first (btrfs "
			       "filesystem resize, mounted from the image's export)" :
			       "shrink the filesystem first");
			img_close(img);
			return EXIT_ERROR;
		}
		img_close(img);
	}
shrink:
	if (open_image(file, IMG_OPEN_RDWR | IMG_OPEN_IO_URING, &img) < 0)
		return EXIT_ERROR;
	memset(&in, 0, sizeof(in));
	r = img_info(img, &in);
	if (r < 0) {
		img_errmsg(file, r);
		goto out;
	}
	if (parse_new_size(size_arg, in.virtual_size, &new_size)) {
		errmsg("%s: invalid size '%s' (out of range for a %s image)", file, size_arg,
		       human_size(in.virtual_size, b1, sizeof(b1)));
		goto out;
	}
	if (new_size > in.virtual_size) {
		errmsg("%s: %s is larger than the current size %s (use growimg to grow)",
		       file, human_size_exact(new_size, b1, sizeof(b1)),
		       human_size_exact(in.virtual_size, b2, sizeof(b2)));
		goto out;
	}
	if (new_size < IMG_SECTOR_SIZE || new_size % IMG_SECTOR_SIZE) {
		errmsg("%s: new size %llu must be a multiple of 512 bytes, at least 512",
		       file, (unsigned long long)new_size);
		goto out;
	}
	if (new_size < in.virtual_size) {
		r = img_resize(img, new_size, rflags);
		if (r == -ENOTEMPTY) {
			errmsg("%s: data past %s would be lost; not shrinking "
			       "(use --discard-data to drop that data)", file,
			       human_size_exact(new_size, b1, sizeof(b1)));
			goto out;
		}
		if (r < 0) {
			img_errmsg(file, r);
			goto out;
		}
	}
	ret = EXIT_OK;
out:
	if (close_image(file, img) < 0)
		ret = EXIT_ERROR;
	if (ret != EXIT_OK || quiet)
		return ret;
	print_result(file, in.virtual_size, new_size, 0, 0);
	return ret;
}
