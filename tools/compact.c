/* SPDX-License-Identifier: MIT */
/* compact: give an image's unused host space back (offline, or through
 * imgserve's control socket while the image is served). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "common_fs.h"
#include "online/control.h"
#include "online/mount.h"

enum { OPT_NO_ZERO_DETECT = 256, OPT_NO_FS_TRIM, OPT_COMPRESS };

static const struct option longopts[] = {
	{ "progress",       no_argument, NULL, 'p' },
	{ "no-zero-detect", no_argument, NULL, OPT_NO_ZERO_DETECT },
	{ "compress",       no_argument, NULL, OPT_COMPRESS },
	{ "no-fs-trim",     no_argument, NULL, OPT_NO_FS_TRIM },
	{ "json",           no_argument, NULL, 'j' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "quiet",          no_argument, NULL, 'q' },
	{ "help",           no_argument, NULL, 'h' },
	{ "version",        no_argument, NULL, 'V' },
	BACKING_PATH_OPTION,
	WAIT_OPTION,
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE\n"
	       "Compact a libimg image: when it holds an ext2/3/4 filesystem, the blocks its\n"
	       "bitmaps say are free go back to the host first (even if no discard reached\n"
	       "the image); then all-zero clusters become unallocated, live clusters move\n"
	       "from the end of the host file into free space, and the file is truncated.\n"
	       "Crash-safe at every step.  Served by imgserve (imgmount, imgattach), the\n"
	       "daemon compacts while I/O goes on, after fstrim on the mounted filesystem.\n"
	       "\n"
	       "  -p, --progress      progress on stderr (a bar, or lines on a pipe)\n"
	       "  --no-zero-detect    do not look for all-zero clusters\n"
	       "  --no-fs-trim        leave the filesystem's free blocks alone\n"
	       "  --compress          store clusters lz4-compressed where it saves space\n"
	       "  -j, --json          print the result as a JSON object\n"
	       "  -v, --verbose       say which I/O engine is used\n"
	       BACKING_PATH_HELP
	       WAIT_HELP
	       "  -q, --quiet         print nothing on success\n"
	       "  -h, --help          show this help\n"
	       "  -V, --version       show the version\n"
	       "\n"
	       "An ext2/3/4 filesystem that needs fsck is refused unchanged (e2fsck -f it,\n"
	       "or --no-fs-trim).  xfs, btrfs: free space goes back by fstrim while mounted.\n"
	       "Exit status: 0 success, 1 error, 2 usage, 3 corrupt, 4 broken chain,\n"
	       "  5 not found, 8 no space, 75 in use.  See compact(1), libimg(7).\n", progname);
}

static uint64_t gain(uint64_t before, uint64_t after)
{
	return before > after ? before - after : 0;
}

/* The image is served: fstrim the mounted filesystem (its free blocks go
 * back through discard), then the daemon compacts.  0 or -errno. */
static int compact_online(const char *file, struct online_state *os, unsigned flags,
			  int fs_trim, struct img_compact_stats *st,
			  struct img_fs_trim_stats *ts, struct img_fs_info *fi, int *trimmed)
{
	char reply[4096];
	int r;

	if (!os->alive)
		return online_refuse_if_used(file, os);
	if (os->loop[0] && online_blkid_type(os->loop, fi->type, sizeof(fi->type)) == 0 &&
	    fi->type[0])
		fi->flags |= IMG_FS_HAVE_SIZE;
	if (fs_trim && os->mountpoint[0]) {
		char *av[] = { "fstrim", os->mountpoint, NULL };
		if (online_request(os, CTL_STATUS, reply, sizeof(reply)) == 0)
			online_json_u64(reply, CTL_KEY_DISK_USAGE, &ts->disk_usage_before);
		if (run_quiet(av) != 0) {
			errmsg("%s: fstrim %s failed", file, os->mountpoint);
			return -EIO;
		}
		if (online_request(os, CTL_STATUS, reply, sizeof(reply)) == 0)
			online_json_u64(reply, CTL_KEY_DISK_USAGE, &ts->disk_usage_after);
		*trimmed = 1;
	}
	r = online_request(os, flags & IMG_COMPACT_NO_ZERO_DETECT ?
			   CTL_COMPACT " " CTL_NO_ZERO_DETECT : CTL_COMPACT, reply, sizeof(reply));
	if (r < 0) {
		errmsg("%s: %s", file, reply);
		return r;
	}
	online_json_u64(reply, CTL_KEY_FILE_SIZE_BEFORE, &st->file_size_before);
	online_json_u64(reply, CTL_KEY_FILE_SIZE_AFTER, &st->file_size_after);
	online_json_u64(reply, CTL_KEY_DISK_USAGE_BEFORE, &st->disk_usage_before);
	online_json_u64(reply, CTL_KEY_DISK_USAGE_AFTER, &st->disk_usage_after);
	online_json_u64(reply, CTL_KEY_ZERO_CLUSTERS_FREED, &st->zero_clusters_freed);
	online_json_u64(reply, CTL_KEY_CLUSTERS_MOVED, &st->clusters_moved);
	return 0;
}

struct compact_cmdline {
	unsigned flags;      /* IMG_COMPACT_* */
	int progress;
	int fs_trim;
};

static int compact_option(int c, void *arg)
{
	struct compact_cmdline *co = arg;

	switch (c) {
	case 'p': co->progress = 1; return 0;
	case OPT_NO_ZERO_DETECT: co->flags |= IMG_COMPACT_NO_ZERO_DETECT; return 0;
	case OPT_COMPRESS: co->flags |= IMG_COMPACT_COMPRESS; return 0;
	case OPT_NO_FS_TRIM: co->fs_trim = 0; return 0;
	}
	return -1;
}

static int run(int argc, char **argv)
{
	struct img_compact_opts opts = { 0 };
	struct img_compact_stats st;
	struct progress pr;
	const char *file = NULL;
	struct img *img;
	struct img_fs_trim_stats ts;
	struct img_fs_info fi;
	const char *fs_note = NULL;
	struct compact_cmdline co = { 0, 0, 1 };
	int r, want_progress, ret, fs_trim, have_fs = 0, trimmed = 0;
	int online = 0;
	struct online_state os;
	char b1[64], b2[64], b3[64];

	tool_init(argc, argv);
	if (!(file = tool_one_operand(argc, argv, "pjqhVv", longopts, compact_option, &co, usage,
				      "FILE", &ret)))
		return ret;
	ret = EXIT_ERROR;
	opts.flags = co.flags;
	want_progress = co.progress;
	fs_trim = co.fs_trim;

	memset(&st, 0, sizeof(st));
	memset(&ts, 0, sizeof(ts));
	memset(&fi, 0, sizeof(fi));
	progress_init(&pr, want_progress && !quiet);
	if (access(file, F_OK) == 0 && online_state_load(file, &os) > 0) {
		/* the daemon compacts and reports no progress: the end only */
		r = compact_online(file, &os, opts.flags, fs_trim, &st, &ts, &fi, &trimmed);
		progress_finish(&pr, r >= 0);
		if (r < 0)
			return EXIT_ERROR;
		have_fs = (fi.flags & IMG_FS_HAVE_SIZE) != 0;
		if (trimmed)
			st.disk_usage_before = ts.disk_usage_before;
		ret = EXIT_OK;
		online = 1;
		goto report;
	}
	if (fs_trim) {
		/* Refuse a filesystem that needs checking before the image is
		 * opened for writing (which alone rewrites its header): then
		 * the file is left exactly as it was. */
		if ((r = open_image(file, 0, &img)) < 0)
			return exit_status(r);
		r = img_fs_probe(img, &fi);
		img_close(img);
		if (r == 0 && fs_is_ext(fi.type) && (fi.flags & IMG_FS_HAVE_STATE) && fi.state) {
			char fb[512];
			errmsg("%s: the filesystem in the image needs checking (%s)", file,
			       fs_describe(&fi, fb, sizeof(fb)));
			errmsg("%s: nothing was changed; check the filesystem (e2fsck -f) "
			       "or compact with --no-fs-trim", file);
			return EXIT_ERROR;
		}
	}
	if ((r = open_image(file, IMG_OPEN_RDWR | IMG_OPEN_IO_URING, &img)) < 0)
		return exit_status(r);
	if (pr.enabled) {
		opts.progress = progress_cb;
		opts.progress_arg = &pr;
	}
	memset(&st, 0, sizeof(st));
	memset(&ts, 0, sizeof(ts));
	memset(&fi, 0, sizeof(fi));
	r = 0;
	if (fs_trim) {
		/* The filesystem's free blocks first: what they free, the
		 * relocation below then packs. */
		r = fs_probe(file, img, &fi);
		have_fs = r == 0;
		r = r > 0 ? 0 : r;
		if (have_fs && fs_is_ext(fi.type)) {
			/* not measured: a step of its own, then the compaction */
			progress_phase(&pr, 0, 10, "giving back the filesystem's free blocks");
			r = img_fs_trim_free(img, 0, &ts);
			trimmed = r == 0;
			progress_phase(&pr, 10, 100, "compacting");
		} else if (have_fs && (!strcmp(fi.type, "xfs") || !strcmp(fi.type, "btrfs")))
			fs_note = "free space inside the filesystem was not given back: only "
				  "ext2/3/4 can be read offline; for this one run fstrim while it "
				  "is mounted";
	}
	if (r >= 0)
		r = img_compact(img, &opts, &st);
	progress_finish(&pr, r >= 0);
	if (r < 0) {
		lib_errmsg(file, r);
		if (r == -ENOTRECOVERABLE || r == -EOPNOTSUPP)
			errmsg("%s: nothing was changed; check the filesystem (e2fsck -f) "
			       "or compact with --no-fs-trim", file);
	} else
		ret = EXIT_OK;
	if (trimmed)
		st.disk_usage_before = ts.disk_usage_before;
	if (close_image(file, img) < 0)
		ret = EXIT_ERROR;
report:
	if (ret != EXIT_OK || (quiet && !json))
		return ret;
	if (json) {
		struct json_out j;
		json_start(&j, stdout);
		json_doc_begin(&j);
		json_string(&j, "filename", file);
		json_u64(&j, "file_size_before", st.file_size_before);
		json_u64(&j, "file_size_after", st.file_size_after);
		json_u64(&j, "disk_usage_before", st.disk_usage_before);
		json_u64(&j, "disk_usage_after", st.disk_usage_after);
		json_u64(&j, "reclaimed_bytes", gain(st.disk_usage_before, st.disk_usage_after));
		json_u64(&j, "zero_clusters_freed", st.zero_clusters_freed);
		json_u64(&j, "clusters_moved", st.clusters_moved);
		json_u64(&j, "clusters_compressed", st.clusters_compressed);
		json_u64(&j, "payloads_repacked", st.payloads_repacked);
		if (have_fs)
			json_string(&j, "filesystem", fi.type);
		else
			json_null(&j, "filesystem");
		json_bool(&j, "fs_trim", trimmed);
		json_u64(&j, "fs_trim_bytes", gain(ts.disk_usage_before, ts.disk_usage_after));
		json_u64(&j, "fs_trim_clusters", ts.clusters_discarded);
		json_u64(&j, "fs_trim_punched", ts.bytes_punched);
		json_u64(&j, "fs_free_bytes", ts.fs_free_bytes);
		json_string(&j, "fs_note", fs_note);   /* NULL: null */
		json_bool(&j, "online", online);
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
		if (trimmed && online)
			printf("  %s from the filesystem's free blocks (fstrim %s)\n",
			       human_size(gain(ts.disk_usage_before, ts.disk_usage_after), b2, sizeof(b2)),
			       os.mountpoint);
		else if (trimmed)
			printf("  %s from the filesystem's free blocks (%s: %llu clusters unmapped, "
			       "%s punched in partly used ones)\n",
			       human_size(gain(ts.disk_usage_before, ts.disk_usage_after), b2, sizeof(b2)),
			       fi.type, (unsigned long long)ts.clusters_discarded,
			       human_size(ts.bytes_punched, b3, sizeof(b3)));
		else if (fs_note)
			printf("  %s: %s\n", fi.type, fs_note);
	}
	return ret;
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
