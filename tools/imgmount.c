/* SPDX-License-Identifier: MIT */
/* imgmount: serve an image, attach a loop device and mount its filesystem. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "common_fs.h"
#include "online/daemon.h"
#include "online/qos.h"
#include "online/mount.h"

enum { OPT_ALLOW_SUID_DEV = 256 };

static const struct option longopts[] = {
	{ "options", required_argument, NULL, 'o' },
	{ "allow-suid-dev", no_argument, NULL, OPT_ALLOW_SUID_DEV },
	{ "json",    no_argument,       NULL, 'j' },
	{ "read-only", no_argument, NULL, 'r' },
	{ "quiet",   no_argument,       NULL, 'q' },
	{ "help",    no_argument,       NULL, 'h' },
	{ "version", no_argument,       NULL, 'V' },
	BACKING_PATH_OPTION,
	WAIT_OPTION,
	QOS_OPTIONS,
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE MOUNTPOINT\n"
	       "Serve the libimg image FILE, attach a loop device over its export and mount\n"
	       "the filesystem it holds (ext2/3/4, xfs or btrfs, found with libblkid) on\n"
	       "MOUNTPOINT.  Discard is on by default so that deleted files give their host\n"
	       "space back at once.  Undo with imgumount.\n"
	       "  -o, --options OPTS  mount options, added after the defaults (nosuid,nodev;\n"
	       "                      ext and xfs: discard; btrfs: discard=async);\n"
	       "                      'nodiscard' turns the discard default off\n"
	       "      --allow-suid-dev  mount without nosuid,nodev: setuid programs and\n"
	       "                      device nodes work (unsafe for an untrusted image)\n"
	       "  -r, --read-only     serve and mount read-only (the image is not changed;\n"
	       "                      ext filesystems are mounted with noload)\n"
	       "  -j, --json          print the result as a JSON object (also with -q)\n"
	       QOS_HELP
	       BACKING_PATH_HELP
	       WAIT_HELP
	       "  -q, --quiet         print nothing on success (-h, --help; -V, --version)\n"
	       "Exit status: 0 success, 1 error, 2 usage, 3 corrupt, 4 broken chain,\n"
	       "  5 not found, 75 in use; nothing is left behind.  See libimg(7).\n",
	       progname);
}

/* 1 if the comma-separated mount options opts name option o. */
static int has_option(const char *opts, const char *o)
{
	size_t n = strlen(o);

	for (const char *p = opts; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
		if (!strncmp(p, o, n) && (p[n] == ',' || p[n] == 0))
			return 1;
	return 0;
}

static int run(int argc, char **argv)
{
	struct tool_getopt g = { 0 };
	struct online_state st;
	const char *file = NULL, *mp = NULL, *user_opts = NULL, *def;
	char mpc[PATH_MAX], type[64], opts[4096];
	struct stat sb;
	int c, r, ro = 0, allow_suid_dev = 0, qos_set = 0;
	struct qos_limits qos;

	tool_init(argc, argv);
	qos_limits_default(&qos);
	while ((c = tool_getopt(&g, argc, argv, "o:jrqhV", longopts)) != -1) {
		if ((r = qos_option(c, optarg, &qos, &qos_set)) != 0) {
			if (r < 0)
				return EXIT_USAGE;
			continue;
		}
		switch (c) {
		case 1:
			if (!file)
				file = optarg;
			else if (!mp)
				mp = optarg;
			else
				return usage_error("too many arguments");
			break;
		case 'o': user_opts = optarg; break;
		case 'j': json = 1; break;
		case 'r': ro = 1; break;
		case OPT_ALLOW_SUID_DEV: allow_suid_dev = 1; break;
		case 'q': quiet = 1; break;
		case 'h': usage(); return EXIT_OK;
		case 'V': print_version(); return EXIT_OK;
		default:
			return usage_error("bad usage");
		}
	}
	if (!file || !mp)
		return usage_error("expected FILE and MOUNTPOINT");
	if (qos_set && qos_format(&qos, online_attach_qos, sizeof(online_attach_qos)) < 0)
		return usage_error("QoS settings too long");
	/* an image is untrusted input: its setuid programs and device nodes
	 * work only when asked for by name (issue 15 #3) */
	if (!allow_suid_dev && user_opts && (has_option(user_opts, "suid") ||
					      has_option(user_opts, "dev")))
		return usage_error("-o suid/dev: give --allow-suid-dev (unsafe for an image you "
				   "do not trust)");
	/* everything that can be checked before anything is started */
	if (stat(mp, &sb) < 0 || !realpath(mp, mpc)) {
		errmsg_err(mp, -errno, "%s: %s", mp, strerror(errno));
		return EXIT_ERROR;
	}
	if (!S_ISDIR(sb.st_mode)) {
		errmsg("%s: not a directory", mp);
		return EXIT_ERROR;
	}
	if (online_state_find(NULL, mpc, &st)) {
		char fc[PATH_MAX];
		/* this image, already mounted here (a rerun, two imgmount at
		 * once): it is served, which online_attach refuses (75, the
		 * daemon named) or waits for (--wait) like any other use */
		if (!realpath(file, fc) || strcmp(fc, st.image)) {
			errmsg_err(mp, 0, "%s: already the mount point of %s", mp, st.image);
			return EXIT_ERROR;
		}
	}
	if ((r = online_attach(file, ro ? ONLINE_READ_ONLY : 0, &st)) < 0)
		return exit_status(r);   /* EXIT_BUSY: served or locked elsewhere */
	r = online_blkid_type(st.loop, type, sizeof(type));
	if (r < 0 || !type[0]) {
		errmsg("%s: no filesystem recognised on the image", file);
		goto fail;
	}
	if (fs_is_ext(type) || !strcmp(type, "xfs"))
		def = "discard";
	else if (!strcmp(type, "btrfs"))
		def = "discard=async";
	else {
		errmsg("%s: holds %s, not ext2/3/4, xfs or btrfs", file, type);
		goto fail;
	}
	if (user_opts && strstr(user_opts, "nodiscard"))
		def = "";
	if (ro)
		def = fs_is_ext(type) ? "ro,noload" : !strcmp(type, "xfs") ? "ro,norecovery" : "ro";
	snprintf(opts, sizeof(opts), "%s%s%s%s%s", allow_suid_dev ? "" : "nosuid,nodev",
		 !allow_suid_dev && *def ? "," : "", def,
		 (!allow_suid_dev || *def) && user_opts ? "," : "", user_opts ? user_opts : "");
	{
		char *av[] = { "mount", "-t", type, "-o", opts[0] ? opts : "defaults", st.loop, mpc,
			       NULL };
		if (run_quiet(av) != 0) {
			errmsg("%s: cannot mount the %s filesystem on %s", file, type, mp);
			goto fail;
		}
	}
	r = online_state_set(st.rundir, RUNDIR_MOUNTPOINT, mpc);
	snprintf(st.mountpoint, sizeof(st.mountpoint), "%s", mpc);
	if (r < 0) {
		errmsg_err(st.rundir, r, "%s: cannot record the mount point: %s",
			   st.rundir, strerror(-r));
		goto fail;
	}
	if (json) {
		struct json_out j;
		json_start(&j, stdout);
		json_doc_begin(&j);
		json_string(&j, "filename", file);
		json_string(&j, "mountpoint", mpc);
		json_string(&j, "device", st.loop);
		json_string(&j, "filesystem", type);
		json_string(&j, "options", opts);
		json_u64(&j, "pid", (uint64_t)st.pid);
		json_object_end(&j);
		json_finish(&j);
	} else if (!quiet) {
		printf("%s: %s mounted on %s (%s)\n", file, type, mpc, st.loop);
	}
	return EXIT_OK;
fail:
	online_teardown(&st);
	return EXIT_ERROR;
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
