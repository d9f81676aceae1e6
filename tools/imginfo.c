/* SPDX-License-Identifier: MIT */
/* imginfo: describe an image. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "common_fs.h"
#include "online/rundir.h"

static const struct option longopts[] = {
	{ "json",        no_argument, NULL, 'j' },
	{ "force-share", no_argument, NULL, 'U' },
	{ "backing-chain", no_argument, NULL, 'B' },
	{ "allow-backing-path", no_argument, NULL, 'A' },
	{ "quiet",       no_argument, NULL, 'q' },
	{ "help",        no_argument, NULL, 'h' },
	{ "version",     no_argument, NULL, 'V' },
	WAIT_OPTION,
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE\n"
	       "Show the virtual size, allocation and host usage of a libimg image,\n"
	       "and the filesystem it holds (type, label, UUID, size, used).\n"
	       "\n"
	       "  -j, --json         print a JSON object, sizes in bytes (also with -q)\n"
	       "  -U, --force-share  do not lock the image (may show a state that is\n"
	       "                     being changed by another process)\n"
	       "      --backing-chain  describe every image of the backing chain, top\n"
	       "                     first (with --json: an array)\n"
	       "      --allow-backing-path  follow absolute or '..' backing references\n"
	       WAIT_HELP
	       "  -q, --quiet        print nothing; only the exit status tells\n"
	       "  -h, --help         show this help\n"
	       "  -V, --version      show the version\n"
	       "\n"
	       "Exit status: 0 success, 1 error, 2 usage, 3 corrupt or not an image,\n"
	       "  4 described, but its backing chain cannot be opened, 5 not found,\n"
	       "  75 in use.  See imginfo(1), libimg(7).\n", progname);
}

/* An ext4 error time: "YYYY-MM-DDTHH:MM:SSZ" (UTC) into buf. */
static const char *error_time(uint64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, len, "%llu", (unsigned long long)t);
	return buf;
}

static void error_at_json(struct json_out *j, const char *key, const struct img_fs_error_at *at)
{
	char t[64];

	if (!at->time && !at->func[0]) {
		json_null(j, key);
		return;
	}
	json_object_begin(j, key);
	json_string(j, "time", error_time(at->time, t, sizeof(t)));
	json_string(j, "function", at->func);
	json_u64(j, "line", at->line);
	json_u64(j, "inode", at->ino);
	json_u64(j, "block", at->block);
	json_object_end(j);
}

/* The ext2/3/4 filesystem's recorded errors (img_fs_errors); null
 * without one. */
static void errors_json(struct json_out *j, const struct img_fs_errors *fe)
{
	if (!fe) {
		json_null(j, "filesystem_errors");
		return;
	}
	json_object_begin(j, "filesystem_errors");
	json_u64(j, "count", fe->count);
	json_bool(j, "marked", !!(fe->flags & IMG_FS_STATE_ERRORS));
	error_at_json(j, "first", &fe->first);
	error_at_json(j, "last", &fe->last);
	json_object_end(j);
}

static void errors_human(const struct img_fs_errors *fe)
{
	char t[64], f[TEXT_ESCAPE_LEN(33)];

	if (!fe || (!fe->count && !(fe->flags & IMG_FS_STATE_ERRORS)))
		return;
	printf("filesystem errors: %u recorded%s", fe->count,
	       fe->flags & IMG_FS_STATE_ERRORS ? " (marked: run e2fsck)" : "");
	if (fe->first.time || fe->first.func[0])
		printf(", first %s in %s:%u", error_time(fe->first.time, t, sizeof(t)),
		       text_escape(fe->first.func, f, sizeof(f)), fe->first.line);
	if (fe->last.time || fe->last.func[0])
		printf(", last %s in %s:%u", error_time(fe->last.time, t, sizeof(t)),
		       text_escape(fe->last.func, f, sizeof(f)), fe->last.line);
	printf("\n");
}

static void print_json(struct json_out *jp, const char *file, const struct img_info *in,
		       const char *backing, const char *chain_error,
		       const struct img_fs_info *fi, const struct img_fs_errors *fe,
		       const struct online_state *use)
{
	struct json_out j = *jp;

	json_doc_begin(&j);
	json_string(&j, "filename", file);
	json_string(&j, "format", "libimg");
	json_u64(&j, "format_version", in->format_version);
	json_u64(&j, "virtual_size", in->virtual_size);
	json_u64(&j, "cluster_size", in->cluster_size);
	json_u64(&j, "allocated_clusters", in->allocated_clusters);
	json_u64(&j, "allocated_bytes", in->allocated_clusters * in->cluster_size);
	json_u64(&j, "zero_clusters", in->zero_clusters);
	json_u64(&j, "compressed_clusters", in->compressed_clusters);
	json_u64(&j, "metadata_size", in->metadata_size);
	json_u64(&j, "bat_capacity", in->bat_capacity);
	json_u64(&j, "file_size", in->file_size);
	json_u64(&j, "disk_usage", in->disk_usage);
	json_bool(&j, "dirty", in->dirty != 0);
	json_u64(&j, "header_seq", in->header_seq);
	json_u64(&j, "incompat_features", in->incompat_features);
	json_u64(&j, "ro_compat_features", in->ro_compat_features);
	json_u64(&j, "compat_features", in->compat_features);
	json_u64(&j, "log_replayed", in->log_replayed);
	json_u64(&j, "leaked_clusters", in->leaked_clusters);
	json_string(&j, "backing", backing);
	json_u64(&j, "backing_depth", in->backing_depth);
	json_string(&j, "backing_chain_error", chain_error);
	fs_json(&j, "filesystem", fi);
	errors_json(&j, fe);
	if (use) {
		json_object_begin(&j, "in_use");
		json_u64(&j, "pid", (uint64_t)use->pid);
		json_bool(&j, "running", use->alive);
		json_string(&j, "export", use->export_path[0] ? use->export_path : NULL);
		json_string(&j, "loop_device", use->loop[0] ? use->loop : NULL);
		json_string(&j, "mountpoint", use->mountpoint[0] ? use->mountpoint : NULL);
		json_string(&j, "rundir", use->rundir);
		json_object_end(&j);
	} else {
		json_null(&j, "in_use");
	}
	json_object_end(&j);
	*jp = j;
}

static void print_human(const char *file, const struct img_info *in, const char *backing,
			const char *chain_error, const struct img_fs_info *fi,
			const struct img_fs_errors *fe, const struct online_state *use)
{
	char b[64], fb[1024], e[TEXT_ESCAPE_LEN(4096)];

	/* file: a backing image's name comes from a reference in the image */
	printf("image: %s\n", text_escape(file, e, sizeof(e)));
	printf("file format: libimg\n");
	printf("format version: %u\n", in->format_version);
	printf("virtual size: %s\n", human_size_exact(in->virtual_size, b, sizeof(b)));
	printf("cluster size: %s\n", human_size_exact(in->cluster_size, b, sizeof(b)));
	printf("allocated: %llu clusters, %s\n",
	       (unsigned long long)in->allocated_clusters,
	       human_size_exact(in->allocated_clusters * in->cluster_size, b, sizeof(b)));
	printf("zero clusters: %llu\n", (unsigned long long)in->zero_clusters);
	if (in->compressed_clusters)
		printf("compressed clusters: %llu\n", (unsigned long long)in->compressed_clusters);
	printf("metadata size: %s\n", human_size_exact(in->metadata_size, b, sizeof(b)));
	printf("BAT capacity: %s\n", human_size_exact(in->bat_capacity, b, sizeof(b)));
	printf("file size: %s\n", human_size_exact(in->file_size, b, sizeof(b)));
	printf("disk usage: %s\n", human_size_exact(in->disk_usage, b, sizeof(b)));
	printf("dirty: %s\n", in->dirty ? "yes (not closed cleanly)" : "no");
	if (in->leaked_clusters)
		printf("leaked clusters: %llu\n", (unsigned long long)in->leaked_clusters);
	if (in->incompat_features || in->ro_compat_features || in->compat_features)
		printf("features: incompat 0x%llx, ro_compat 0x%llx, compat 0x%llx\n",
		       (unsigned long long)in->incompat_features,
		       (unsigned long long)in->ro_compat_features,
		       (unsigned long long)in->compat_features);
	if (backing && chain_error)
		printf("backing file: %s (cannot be opened)\n", text_escape(backing, e, sizeof(e)));
	else if (backing)
		printf("backing file: %s (chain depth %u)\n", text_escape(backing, e, sizeof(e)),
		       in->backing_depth);
	else
		printf("backing file: none\n");
	if (chain_error)
		printf("backing chain error: %s\n", text_escape(chain_error, e, sizeof(e)));
	if (chain_error)   /* what the disk holds depends on the chain */
		printf("filesystem: unknown (the backing chain cannot be opened)\n");
	else
		printf("filesystem: %s\n", fi ? fs_describe(fi, fb, sizeof(fb)) : "none recognised");
	errors_human(fe);
	if (use) {
		printf("in use: by imgserve (pid %ld)%s\n", (long)use->pid,
		       use->alive ? "" : ", which is no longer running (run imgumount)");
		if (use->export_path[0])
			printf("export: %s\n", use->export_path);
		if (use->loop[0])
			printf("loop device: %s\n", use->loop);
		if (use->mountpoint[0])
			printf("mounted on: %s\n", use->mountpoint);
	}
}

/* One image of the chain: its info and backing reference. */
static int describe(struct img *img, const char *name, struct json_out *j, int with_fs,
		    const char *chain_error, const struct online_state *use)
{
	struct img_info in;
	struct img_fs_info fi;
	struct img_fs_errors fe;
	int have_fe = 0;
	char ref[4096];
	ssize_t n;
	int r;

	memset(&in, 0, sizeof(in));
	if ((r = img_info(img, &in)) < 0 || (n = img_backing_ref(img, ref, sizeof(ref))) < 0) {
		lib_errmsg(name, r < 0 ? r : -ERANGE);
		return -1;
	}
	/* A filesystem that cannot be probed is a warning, not a failure:
	 * imginfo describes the image first. */
	r = with_fs && (!quiet || json) ? fs_probe(name, img, &fi) : 1;
	if (quiet && !json)   /* -j -q: the JSON still */
		return 0;
	/* ext2/3/4: the errors its superblock records */
	if (r == 0 && !strncmp(fi.type, "ext", 3))
		have_fe = img_fs_errors(img, &fe) == 0;
	if (json)
		print_json(j, name, &in, n ? ref : NULL, chain_error, r == 0 ? &fi : NULL,
			   have_fe ? &fe : NULL, use);
	else
		print_human(name, &in, n ? ref : NULL, chain_error, r == 0 ? &fi : NULL,
			    have_fe ? &fe : NULL, use);
	return 0;
}

struct info_opts {
	unsigned flags;
	int chain;
};

static int info_option(int c, void *arg)
{
	struct info_opts *o = arg;

	switch (c) {
	case 'U': o->flags |= IMG_OPEN_NOLOCK; return 0;
	case 'B': o->chain = 1; return 0;
	case 'A': o->flags |= IMG_OPEN_ALLOW_BACKING_PATH; return 0;
	}
	return -1;
}

static int run(int argc, char **argv)
{
	const char *file = NULL;
	struct json_out j;
	struct img *img;
	struct online_state use;
	struct info_opts o = { 0, 0 };
	unsigned flags;
	char chain_msg[512];
	int r = 0, chain, in_use, chain_err;

	tool_init(argc, argv);
	if (!(file = tool_one_operand(argc, argv, "jUqhV", longopts, info_option, &o, usage,
				      "FILE", &r)))
		return r;
	flags = o.flags;
	chain = o.chain;

	/* A served image is locked by its daemon: describe it without the
	 * lock (the counts may be moving) and say who holds it. */
	in_use = access(file, F_OK) == 0 && online_state_load(file, &use) > 0;
	if (in_use && use.alive)
		flags |= IMG_OPEN_NOLOCK;
	/* A delta whose base is missing or replaced is described alone (its
	 * own header and BAT), with the chain's problem, and exits 4. */
	if ((r = open_image_degraded(file, flags, &img, &chain_err, chain_msg, sizeof(chain_msg))) < 0)
		return exit_status(r);
	if (json)
		json_start(&j, stdout);
	if (chain && json)
		json_array_begin(&j, NULL);
	/* without its chain, the filesystem is not probed: what the disk
	 * holds reads partly from the base */
	r = describe(img, file, &j, !chain_err, chain_err ? chain_msg : NULL, in_use ? &use : NULL);
	for (struct img *b = img_backing(img); chain && b && !r; b = img_backing(b)) {
		if (!json && !quiet)
			printf("\n");
		r = describe(b, img_name(b), &j, 1, NULL, NULL);
	}
	if (chain && json)
		json_array_end(&j);
	if (json && !r)
		json_finish(&j);
	else if (json)
		json_discard(&j);   /* no half document */
	if (close_image(file, img) < 0 || r)
		return EXIT_ERROR;
	if (chain_err) {
		char e[TEXT_ESCAPE_LEN(512)];
		errmsg("%s: its backing chain cannot be opened: %s", file,
		       text_escape(chain_msg, e, sizeof(e)));
		return EXIT_CHAIN;
	}
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
