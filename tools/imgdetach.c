/* SPDX-License-Identifier: MIT */
/* imgdetach: remove the loop device imgattach made and stop the daemon. */
#include <errno.h>
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
	printf("Usage: %s [OPTIONS] DEVICE|FILE\n"
	       "Detach the loop device of an image attached by imgattach and stop its\n"
	       "imgserve daemon, which flushes and closes the image (left clean).  Copes\n"
	       "with a daemon that died.  A mounted filesystem is refused: use imgumount.\n"
	       "\n"
	       "  -q, --quiet    print nothing on success\n"
	       "  -h, --help     show this help\n"
	       "  -V, --version  show the version\n"
	       "\n"
	       "Exit status: 0 success, 1 error.  See imgdetach(1).\n", progname);
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
		return usage_error("expected DEVICE or FILE");
	if (stat(arg, &sb) < 0) {
		errmsg("%s: %s", arg, strerror(errno));
		return EXIT_ERROR;
	}
	if (S_ISBLK(sb.st_mode)) {
		if (!online_state_find(arg, NULL, &st)) {
			errmsg("%s: not a loop device of a libimg image (no state under %s)", arg,
			       online_rundir_base());
			return EXIT_ERROR;
		}
	} else {
		r = online_state_load(arg, &st);
		if (r < 0)
			return EXIT_ERROR;
		if (r == 0) {
			errmsg("%s: not attached (no state in %s)", arg, st.rundir);
			return EXIT_ERROR;
		}
	}
	if (st.mountpoint[0]) {
		errmsg("%s: mounted on %s; use imgumount", arg, st.mountpoint);
		return EXIT_ERROR;
	}
	if (online_teardown(&st) < 0)
		return EXIT_ERROR;
	if (!quiet)
		printf("%s: detached\n", st.image);
	return EXIT_OK;
}
