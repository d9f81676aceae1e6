/* SPDX-License-Identifier: MIT */
/* imgattach: serve an image (imgserve --daemon) and put a loop device on it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "online/daemon.h"
#include "online/qos.h"

static const struct option longopts[] = {
	{ "json",    no_argument, NULL, 'j' },
	{ "read-only", no_argument, NULL, 'r' },
	{ "quiet",   no_argument, NULL, 'q' },
	{ "help",    no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	BACKING_PATH_OPTION,
	WAIT_OPTION,
	QOS_OPTIONS,
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE\n"
	       "Serve the libimg image FILE (imgserve --daemon) and attach a loop device\n"
	       "over its export, with discard passed through to the image.  Prints the\n"
	       "device.  Undo with imgdetach.\n"
	       "\n"
	       "  -r, --read-only  serve read-only (the image is not changed)\n"
	       "  -j, --json     print the result as a JSON object (also with -q)\n"
	       QOS_HELP
	       BACKING_PATH_HELP
	       WAIT_HELP
	       "  -q, --quiet    print nothing on success\n"
	       "  -h, --help     show this help\n"
	       "  -V, --version  show the version\n"
	       "\n"
	       "Exit status: 0 success, 1 error, 2 usage, 3 corrupt, 4 broken chain,\n"
	       "  5 not found, 75 in use; nothing is left behind.  See libimg(7).\n",
	       progname);
}

struct attach_opts {
	int ro, qos_set;
	struct qos_limits qos;
};

static int attach_option(int c, void *ctx)
{
	struct attach_opts *o = ctx;
	int r = qos_option(c, optarg, &o->qos, &o->qos_set);

	if (r)
		return r > 0 ? 0 : -1;
	if (c != 'r')
		return -1;
	o->ro = 1;
	return 0;
}

static int run(int argc, char **argv)
{
	struct online_state st;
	const char *file = NULL;
	struct attach_opts o = { 0 };
	int c;

	tool_init(argc, argv);
	qos_limits_default(&o.qos);
	if (!(file = tool_one_operand(argc, argv, "jrqhV", longopts, attach_option, &o, usage,
				      "FILE", &c)))
		return c;
	if (o.qos_set && qos_format(&o.qos, online_attach_qos, sizeof(online_attach_qos)) < 0)
		return usage_error("QoS settings too long");
	if ((c = online_attach(file, o.ro ? ONLINE_READ_ONLY : 0, &st)) < 0)
		return exit_status(c);   /* EXIT_BUSY: served or locked elsewhere */
	if (json) {
		struct json_out j;
		json_start(&j, stdout);
		json_doc_begin(&j);
		json_string(&j, "filename", file);
		json_string(&j, "device", st.loop);
		json_string(&j, "export", st.export_path);
		json_u64(&j, "pid", (uint64_t)st.pid);
		json_string(&j, "rundir", st.rundir);
		json_object_end(&j);
		json_finish(&j);
	} else if (!quiet) {
		printf("%s\n", st.loop);
	}
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
