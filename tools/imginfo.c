/* SPDX-License-Identifier: MIT */
/* imginfo: describe an image. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "common_fs.h"
#include "common_online.h"

static const struct option longopts[] = {
	{ "json",        no_argument, NULL, 'j' },
	{ "force-share", no_argument, NULL, 'U' },
	{ "quiet",       no_argument, NULL, 'q' },
	{ "help",        no_argument, NULL, 'h' },
	{ "version",     no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE\n"
	       "Show the virtual size, allocation and host usage of a libimg image,\n"
	       "and the filesystem it holds (type, label, UUID, size, used).\n"
	       "\n"
	       "  -j, --json         print a JSON object (sizes in bytes)\n"
	       "  -U, --force-share  do not lock the image (may show a state that is\n"
	       "                     being changed by another process)\n"
	       "  -q, --quiet        print nothing; only the exit status tells\n"
	       "  -h, --help         show this help\n"
	       "  -V, --version      show the version\n"
	       "\n"
	       "Exit status: 0 success, 1 error.  See imginfo(1).\n", progname);
}

/* use: what the run directory records about a served image, or NULL. */
static void print_json(const char *file, const struct img_info *in, const struct img_fs_info *fi,
		       const struct online_state *use)
{
	struct json_out j;

	json_start(&j, stdout);
	json_object_begin(&j, NULL);
	json_string(&j, "filename", file);
	json_string(&j, "format", "libimg");
	json_u64(&j, "format_version", in->format_version);
	json_u64(&j, "virtual_size", in->virtual_size);
	json_u64(&j, "cluster_size", in->cluster_size);
	json_u64(&j, "allocated_clusters", in->allocated_clusters);
	json_u64(&j, "allocated_bytes", in->allocated_clusters * in->cluster_size);
	json_u64(&j, "zero_clusters", in->zero_clusters);
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
	json_null(&j, "backing");
	fs_json(&j, "filesystem", fi);
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
	json_finish(&j);
}

static void print_human(const char *file, const struct img_info *in, const struct img_fs_info *fi,
			const struct online_state *use)
{
	char b[64], fb[512];

	printf("image: %s\n", file);
	printf("file format: libimg\n");
	printf("format version: %u\n", in->format_version);
	printf("virtual size: %s\n", human_size_exact(in->virtual_size, b, sizeof(b)));
	printf("cluster size: %s\n", human_size_exact(in->cluster_size, b, sizeof(b)));
	printf("allocated: %llu clusters, %s\n",
	       (unsigned long long)in->allocated_clusters,
	       human_size_exact(in->allocated_clusters * in->cluster_size, b, sizeof(b)));
	printf("zero clusters: %llu\n", (unsigned long long)in->zero_clusters);
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
	printf("backing file: none\n");
	printf("filesystem: %s\n", fi ? fs_describe(fi, fb, sizeof(fb)) : "none recognised");
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

int main(int argc, char **argv)
{
	const char *file = NULL;
	struct img_info in;
	struct img_fs_info fi;
	struct img *img;
	struct online_state use;
	unsigned flags = 0;
	int c, r, in_use;
	struct tool_getopt g = { 0 };

	tool_init(argc, argv);
	while ((c = tool_getopt(&g, argc, argv, "jUqhV", longopts)) != -1) {
		switch (c) {
		case 1:
			if (file)
				return usage_error("too many arguments");
			file = optarg;
			break;
		case 'j': json = 1; break;
		case 'U': flags |= IMG_OPEN_NOLOCK; break;
		case 'q': quiet = 1; break;
		case 'h': usage(); return EXIT_OK;
		case 'V': print_version(); return EXIT_OK;
		default:
			return usage_error("bad usage");
		}
	}
	if (!file)
		return usage_error("expected FILE");

	/* A served image is locked by its daemon: describe it without the
	 * lock (the counts may be moving) and say who holds it. */
	in_use = access(file, F_OK) == 0 && online_state_load(file, &use) > 0;
	if (in_use && use.alive)
		flags |= IMG_OPEN_NOLOCK;
	if (open_image(file, flags, &img) < 0)
		return EXIT_ERROR;
	memset(&in, 0, sizeof(in));
	r = img_info(img, &in);
	if (r < 0) {
		img_errmsg(file, r);
		img_close(img);
		return EXIT_ERROR;
	}
	/* A filesystem that cannot be probed is a warning, not a failure:
	 * imginfo describes the image first. */
	r = quiet ? 1 : fs_probe(file, img, &fi);
	if (close_image(file, img) < 0)
		return EXIT_ERROR;
	if (quiet)
		return EXIT_OK;
	if (json)
		print_json(file, &in, r == 0 ? &fi : NULL, in_use ? &use : NULL);
	else
		print_human(file, &in, r == 0 ? &fi : NULL, in_use ? &use : NULL);
	return EXIT_OK;
}
