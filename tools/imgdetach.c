/* SPDX-License-Identifier: MIT */
/* imgdetach: remove the loop device imgattach made and stop the daemon. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "online/daemon.h"

static const struct option longopts[] = {
	{ "json",    no_argument, NULL, 'j' },
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
	       "  -j, --json     print the result as a JSON object (also with -q)\n"
	       "  -q, --quiet    print nothing on success\n"
	       "  -h, --help     show this help\n"
	       "  -V, --version  show the version\n"
	       "\n"
	       "Exit status: 0 success, 1 error (also: mounted, use imgumount), 2 usage,\n"
	       "  5 not found, 6 not attached (nothing to do: harmless in a cleanup).\n"
	       "  See imgdetach(1), libimg(7).\n", progname);
}

static int run(int argc, char **argv)
{
	struct online_state st;
	const char *arg;
	int status, r;

	tool_init(argc, argv);
	if (!(arg = tool_one_operand(argc, argv, "jqhV", longopts, NULL, NULL, usage,
				     "DEVICE or FILE", &status)))
		return status;
	if ((r = online_state_of(arg, &st)) == -ENOTCONN)
		return EXIT_NOTMOUNTED;   /* nothing to do: harmless in a cleanup */
	if (r < 0)
		return EXIT_ERROR;
	if (st.mountpoint[0]) {
		errmsg("%s: mounted on %s; use imgumount", arg, st.mountpoint);
		return EXIT_ERROR;
	}
	return online_teardown_report(&st, "detached");
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
