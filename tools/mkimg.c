/* SPDX-License-Identifier: MIT */
/* mkimg: create an empty image. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"

enum { OPT_CLUSTER_SIZE = 256, OPT_BAT_RESERVE };

static const struct option longopts[] = {
	{ "cluster-size", required_argument, NULL, OPT_CLUSTER_SIZE },
	{ "bat-reserve",  required_argument, NULL, OPT_BAT_RESERVE },
	{ "force",        no_argument,       NULL, 'f' },
	{ "quiet",        no_argument,       NULL, 'q' },
	{ "help",         no_argument,       NULL, 'h' },
	{ "version",      no_argument,       NULL, 'V' },
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE SIZE\n"
	       "Create an empty (thin) libimg image of SIZE bytes.\n"
	       "\n"
	       "SIZE takes binary suffixes: 512, 64K, 10G, 1.5T (a multiple of 512).\n"
	       "\n"
	       "  --cluster-size SIZE  allocation unit, a power of two from 64K to 64M\n"
	       "                       (default 1M)\n"
	       "  --bat-reserve SIZE   make the block table big enough for images of up\n"
	       "                       to SIZE, so that growing never relocates data\n"
	       "  -f, --force          overwrite FILE if it exists\n"
	       "  -q, --quiet          print nothing on success\n"
	       "  -h, --help           show this help\n"
	       "  -V, --version        show the version\n"
	       "\n"
	       "The image is written to a temporary file and renamed into place: a\n"
	       "failed mkimg leaves nothing behind.\n"
	       "Exit status: 0 created, 1 error.  See mkimg(1).\n", progname);
}

static int get_size(const char *what, const char *s, uint64_t *out)
{
	if (parse_size(s, out)) {
		errmsg("invalid %s '%s' (expected bytes with an optional K, M, G, T, "
		       "P or E suffix)", what, s);
		return -EINVAL;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct img_create_opts o = { 0 };
	const char *file = NULL, *size_arg = NULL;
	uint64_t size, v;
	int c, r, npos = 0, force = 0;
	char b1[64], b2[64];
	struct tool_getopt g = { 0 };

	tool_init(argc, argv);
	while ((c = tool_getopt(&g, argc, argv, "fqhV", longopts)) != -1) {
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
				return EXIT_ERROR;
			if (v < IMG_MIN_CLUSTER_SIZE || v > IMG_MAX_CLUSTER_SIZE ||
			    (v & (v - 1))) {
				errmsg("invalid cluster size '%s' (a power of two from 64K to 64M)",
				       optarg);
				return EXIT_ERROR;
			}
			o.cluster_size = (uint32_t)v;
			break;
		case OPT_BAT_RESERVE:
			if (get_size("BAT reserve", optarg, &o.bat_reserve))
				return EXIT_ERROR;
			break;
		case 'f': force = 1; break;
		case 'q': quiet = 1; break;
		case 'h': usage(); return EXIT_OK;
		case 'V': print_version(); return EXIT_OK;
		default:
			return usage_error("bad usage");
		}
	}
	if (!file || !size_arg)
		return usage_error("expected FILE and SIZE");
	if (!*file)
		return usage_error("empty file name");
	if (get_size("size", size_arg, &size))
		return EXIT_ERROR;
	if (size < IMG_SECTOR_SIZE || size % IMG_SECTOR_SIZE) {
		errmsg("invalid size '%s': must be a multiple of 512 bytes, at least 512",
		       size_arg);
		return EXIT_ERROR;
	}
	o.virtual_size = size;
	if (force)
		o.flags |= IMG_CREATE_OVERWRITE;

	r = img_create(file, &o);
	if (r == -EEXIST) {
		errmsg("%s: already exists (use --force to overwrite)", file);
		return EXIT_ERROR;
	}
	if (r < 0) {
		img_errmsg(file, r);
		return EXIT_ERROR;
	}
	if (!quiet)
		printf("Created %s: virtual size %s, cluster size %s\n", file,
		       human_size_exact(size, b1, sizeof(b1)),
		       human_size(o.cluster_size ? o.cluster_size : IMG_DEFAULT_CLUSTER_SIZE,
				  b2, sizeof(b2)));
	return EXIT_OK;
}
