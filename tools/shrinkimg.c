/* SPDX-License-Identifier: MIT */
/* shrinkimg: shrink an image's virtual size (offline). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "common_fs.h"

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
	       "give the host space past the new end back.  The image must not be in\n"
	       "use.  Sizes take binary suffixes (5G, -512M), multiples of 512.\n"
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

	/* A filesystem that would be cut is refused before the image is
	 * opened for writing: the file stays exactly as it was. */
	if (!(rflags & IMG_RESIZE_DISCARD_DATA)) {
		struct img_fs_info fi;
		if (open_image(file, 0, &img) < 0)
			return EXIT_ERROR;
		r = img_info(img, &in);
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
	if (json) {
		struct json_out j;
		json_start(&j, stdout);
		json_object_begin(&j, NULL);
		json_string(&j, "filename", file);
		json_u64(&j, "old_size", in.virtual_size);
		json_u64(&j, "new_size", new_size);
		json_object_end(&j);
		json_finish(&j);
	} else if (new_size == in.virtual_size) {
		printf("%s: virtual size is already %s; nothing to do\n", file,
		       human_size_exact(new_size, b1, sizeof(b1)));
	} else {
		printf("%s: virtual size %s -> %s\n", file,
		       human_size(in.virtual_size, b1, sizeof(b1)),
		       human_size_exact(new_size, b2, sizeof(b2)));
	}
	return ret;
}
