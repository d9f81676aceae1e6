/* SPDX-License-Identifier: MIT */
/* imgumount: unmount what imgmount mounted, detach, stop the daemon. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "common_online.h"

static void usage(void)
{
	printf("Usage: %s [OPTIONS] MOUNTPOINT|DEVICE|FILE\n"
	       "Unmount the filesystem imgmount mounted, detach its loop device and stop the\n"
	       "imgserve daemon, which flushes and closes the image (left clean).  Also\n"
	       "cleans up after a daemon that died (lazy unmount of its export).\n"
	       "\n"
	       "  -q, --quiet    print nothing on success\n"
	       "  -h, --help     show this help\n"
	       "  -V, --version  show the version\n"
	       "\n"
	       "Exit status: 0 success, 1 error, 2 usage, 5 not found, 6 not mounted\n"
	       "  (nothing to do: harmless in a cleanup).  See imgumount(1), libimg(7).\n", progname);
}

static int run(int argc, char **argv)
{
	struct online_state st;
	const char *arg;
	int status, r;

	tool_init(argc, argv);
	if (!(arg = tool_one_operand(argc, argv, "qhV", NULL, NULL, NULL, usage,
				     "MOUNTPOINT or FILE", &status)))
		return status;
	if ((r = online_state_of(arg, &st)) == -ENOTCONN)
		return EXIT_NOTMOUNTED;   /* nothing to do: harmless in a cleanup */
	if (r < 0)
		return EXIT_ERROR;
	if (online_teardown(&st) < 0)
		return EXIT_ERROR;
	if (!quiet)
		printf("%s: unmounted\n", st.image);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
