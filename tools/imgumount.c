/* SPDX-License-Identifier: MIT */
/* imgumount: unmount what imgmount mounted, detach, stop the daemon. */
#include <errno.h>
#include <limits.h>
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
	printf("Usage: %s [OPTIONS] MOUNTPOINT|DEVICE|FILE\n"
	       "Unmount the filesystem imgmount mounted, detach its loop device and stop the\n"
	       "imgserve daemon, which flushes and closes the image (left clean).  Also\n"
	       "cleans up after a daemon that died (lazy unmount of its export).\n"
	       "\n"
	       "  -j, --json     print the result as a JSON object (also with -q)\n"
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
	if (!(arg = tool_one_operand(argc, argv, "jqhV", longopts, NULL, NULL, usage,
				     "MOUNTPOINT or FILE", &status)))
		return status;
	if ((r = online_state_of(arg, &st)) == -ENOTCONN)
		return EXIT_NOTMOUNTED;   /* nothing to do: harmless in a cleanup */
	if (r < 0)
		return EXIT_ERROR;
	return online_teardown_report(&st, "unmounted");
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
