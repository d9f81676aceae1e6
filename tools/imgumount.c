/* SPDX-License-Identifier: MIT */
/* imgumount: unmount what imgmount mounted, detach, stop the daemon. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "common_online.h"

static const struct option longopts[] = {
	{ "quiet",   no_argument, NULL, 'q' },
	{ "help",    no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] MOUNTPOINT|FILE\n"
	       "Unmount the filesystem imgmount mounted, detach its loop device and stop the\n"
	       "imgserve daemon, which flushes and closes the image (left clean).  Also\n"
	       "cleans up after a daemon that died (lazy unmount of its export).\n"
	       "\n"
	       "  -q, --quiet    print nothing on success\n"
	       "  -h, --help     show this help\n"
	       "  -V, --version  show the version\n"
	       "\n"
	       "Exit status: 0 success, 1 error.  See imgumount(1).\n", progname);
}

int main(int argc, char **argv)
{
	struct tool_getopt g = { 0 };
	struct online_state st;
	const char *arg = NULL;
	struct stat sb;
	int c, r;

	tool_init(argc, argv);
	while ((c = tool_getopt(&g, argc, argv, "qhV", longopts)) != -1) {
		switch (c) {
		case 1:
			if (arg)
				return usage_error("too many arguments");
			arg = optarg;
			break;
		case 'q': quiet = 1; break;
		case 'h': usage(); return EXIT_OK;
		case 'V': print_version(); return EXIT_OK;
		default:
			return usage_error("bad usage");
		}
	}
	if (!arg)
		return usage_error("expected MOUNTPOINT or FILE");
	if (stat(arg, &sb) < 0) {
		errmsg("%s: %s", arg, strerror(errno));
		return EXIT_ERROR;
	}
	if (S_ISDIR(sb.st_mode)) {
		if (!online_state_find(NULL, arg, &st)) {
			errmsg("%s: not mounted by imgmount (no state under %s)", arg,
			       online_rundir_base());
			return EXIT_ERROR;
		}
	} else {
		r = online_state_load(arg, &st);
		if (r < 0)
			return EXIT_ERROR;
		if (r == 0) {
			errmsg("%s: not mounted or attached (no state in %s)", arg, st.rundir);
			return EXIT_ERROR;
		}
	}
	if (online_teardown(&st) < 0)
		return EXIT_ERROR;
	if (!quiet)
		printf("%s: unmounted\n", st.image);
	return EXIT_OK;
}
