/* SPDX-License-Identifier: MIT */
/* compact: give an image's unused host space back (offline). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

enum { OPT_NO_ZERO_DETECT = 256 };

static const struct option longopts[] = {
	{ "progress",       no_argument, NULL, 'p' },
	{ "no-zero-detect", no_argument, NULL, OPT_NO_ZERO_DETECT },
	{ "json",           no_argument, NULL, 'j' },
	{ "quiet",          no_argument, NULL, 'q' },
	{ "help",           no_argument, NULL, 'h' },
	{ "version",        no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE\n"
	       "Compact a libimg image: clusters that hold only zeros become\n"
	       "unallocated, live clusters move from the end of the host file into\n"
	       "free space, and the file is truncated.  Safe against crashes at every\n"
	       "step.  The image must not be in use.\n"
	       "\n"
	       "  -p, --progress      show a progress bar (on a terminal)\n"
	       "  --no-zero-detect    do not look for all-zero clusters\n"
	       "  -j, --json          print the result as a JSON object\n"
	       "  -q, --quiet         print nothing on success\n"
	       "  -h, --help          show this help\n"
	       "  -V, --version       show the version\n"
	       "\n"
	       "Exit status: 0 success, 1 error.  See compact(1).\n", progname);
}

static uint64_t gain(uint64_t before, uint64_t after)
{
	return before > after ? before - after : 0;
}

int main(int argc, char **argv)
{
	struct img_compact_opts opts = { 0 };
	struct img_compact_stats st;
	struct progress pr;
	const char *file = NULL;
	struct img *img;
	int c, r, want_progress = 0, ret = EXIT_ERROR;
	char b1[64], b2[64], b3[64];
	struct tool_getopt g = { 0 };

	tool_init(argc, argv);
	while ((c = tool_getopt(&g, argc, argv, "pjqhV", longopts)) != -1) {
		switch (c) {
		case 1:
			if (file)
				return usage_error("too many arguments");
			file = optarg;
			break;
		case 'p': want_progress = 1; break;
		case OPT_NO_ZERO_DETECT: opts.flags |= IMG_COMPACT_NO_ZERO_DETECT; break;
		case 'j': json = 1; break;
		case 'q': quiet = 1; break;
		case 'h': usage(); return EXIT_OK;
		case 'V': print_version(); return EXIT_OK;
		default:
			return usage_error("bad usage");
		}
	}
	if (!file)
		return usage_error("expected FILE");

	if (open_image(file, IMG_OPEN_RDWR, &img) < 0)
		return EXIT_ERROR;
	progress_init(&pr, want_progress && !quiet);
	if (pr.enabled) {
		opts.progress = progress_cb;
		opts.progress_arg = &pr;
	}
	memset(&st, 0, sizeof(st));
	r = img_compact(img, &opts, &st);
	progress_finish(&pr, r >= 0);
	if (r < 0)
		img_errmsg(file, r);
	else
		ret = EXIT_OK;
	if (close_image(file, img) < 0)
		ret = EXIT_ERROR;
	if (ret != EXIT_OK || quiet)
		return ret;
	if (json) {
		struct json_out j;
		json_start(&j, stdout);
		json_object_begin(&j, NULL);
		json_string(&j, "filename", file);
		json_u64(&j, "file_size_before", st.file_size_before);
		json_u64(&j, "file_size_after", st.file_size_after);
		json_u64(&j, "disk_usage_before", st.disk_usage_before);
		json_u64(&j, "disk_usage_after", st.disk_usage_after);
		json_u64(&j, "reclaimed_bytes", gain(st.disk_usage_before, st.disk_usage_after));
		json_u64(&j, "zero_clusters_freed", st.zero_clusters_freed);
		json_u64(&j, "clusters_moved", st.clusters_moved);
		json_object_end(&j);
		json_finish(&j);
	} else {
		printf("%s: gave back %s to the host\n", file,
		       human_size_exact(gain(st.disk_usage_before, st.disk_usage_after),
					b1, sizeof(b1)));
		printf("  disk usage: %s -> %s\n",
		       human_size(st.disk_usage_before, b2, sizeof(b2)),
		       human_size(st.disk_usage_after, b3, sizeof(b3)));
		printf("  file size:  %s -> %s\n",
		       human_size(st.file_size_before, b2, sizeof(b2)),
		       human_size(st.file_size_after, b3, sizeof(b3)));
		printf("  %llu all-zero clusters freed, %llu clusters moved\n",
		       (unsigned long long)st.zero_clusters_freed,
		       (unsigned long long)st.clusters_moved);
	}
	return ret;
}
