/* SPDX-License-Identifier: MIT */
/* shrinkimg: shrink an image's virtual size and the filesystem in it. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "common_fs.h"
#include "online/daemon.h"
#include "online/fs_offline.h"
#include "online/mount.h"

enum { OPT_DISCARD_DATA = 256, OPT_MIN, OPT_NO_FS };

/* beside IMG_RESIZE_* in rflags: --no-fs */
#define SHRINK_NO_FS 0x80000000u

static const struct option longopts[] = {
	{ "discard-data", no_argument, NULL, OPT_DISCARD_DATA },
	{ "min",          no_argument, NULL, OPT_MIN },
	{ "no-fs",        no_argument, NULL, OPT_NO_FS },
	{ "progress",     no_argument, NULL, 'p' },
	{ "json",         no_argument, NULL, 'j' },
	{ "verbose",      no_argument, NULL, 'v' },
	{ "quiet",        no_argument, NULL, 'q' },
	{ "help",         no_argument, NULL, 'h' },
	{ "version",      no_argument, NULL, 'V' },
	BACKING_PATH_OPTION,
	WAIT_OPTION,
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE SIZE|-DELTA|--min\n"
	       "Shrink a libimg image (and the filesystem in it) to SIZE, by DELTA, or\n"
	       "to the filesystem's minimum plus max(5%%, 16 MiB) (--min), and give the\n"
	       "host space past the new end back.  Offline, ext2/3/4 shrinks with e2fsck\n"
	       "-f and resize2fs, btrfs with btrfs filesystem resize, on a private attach\n"
	       "(root, /dev/fuse, loop devices); xfs cannot.  Mounted with imgmount:\n"
	       "btrfs shrinks online; ext2/3/4 gets a balloon the next offline shrinkimg\n"
	       "completes (shrinkimg(1)).\n"
	       "\n"
	       "  --min           shrink to the filesystem's minimum plus the margin\n"
	       "  --no-fs         shrink only the image: refuse to cut a filesystem\n"
	       "  --discard-data  shrink even if data or the filesystem lies past the\n"
	       "                  new end (that data is lost)\n"
	       "  -j, --json      print the result as a JSON object (also with -q)\n"
	       "  -p, --progress  show progress on standard error\n"
	       "  -v, --verbose   say which I/O engine is used\n"
	       BACKING_PATH_HELP
	       WAIT_HELP
	       "  -q, --quiet     print nothing on success\n"
	       "  -h, --help      show this help;  -V, --version  show the version\n"
	       "\n"
	       "Exit status: 0 success, 1 error (nothing changed when refused), 2 usage,\n"
	       "  3 corrupt, 4 broken chain, 5 not found, 8 no space, 75 in use.\n"
	       "  See shrinkimg(1), libimg(7).\n", progname);
}

/* -p */
static struct progress pr;

/* What the filesystem step did, for the report. */
struct fs_report {
	const char *type;      /* NULL: no filesystem step */
	uint64_t old_size, new_size, min_size;
	uint64_t trimmed;      /* host bytes its free blocks gave back */
	int balloon_removed;   /* an online shrink's balloon was removed */
};

static void print_result(const char *file, uint64_t old, uint64_t now, int online,
			 uint64_t balloon, const struct fs_report *fr)
{
	char b1[64], b2[64], b3[64];

	if (json) {
		struct json_out j;
		int fs = fr && fr->type;

		/* the same keys online and offline: null where one does not apply */
		json_start(&j, stdout);
		json_doc_begin(&j);
		json_string(&j, "filename", file);
		json_u64(&j, "old_size", old);
		json_u64(&j, "new_size", now);
		json_bool(&j, "online", online);
		if (balloon)
			json_u64(&j, "balloon", balloon);
		else
			json_null(&j, "balloon");
		json_string(&j, "filesystem", fs ? fr->type : NULL);
		if (fs) {
			json_u64(&j, "filesystem_old_size", fr->old_size);
			json_u64(&j, "filesystem_size", fr->new_size);
		} else {
			json_null(&j, "filesystem_old_size");
			json_null(&j, "filesystem_size");
		}
		if (fs && fr->min_size)
			json_u64(&j, "filesystem_min_size", fr->min_size);
		else
			json_null(&j, "filesystem_min_size");
		if (fs)
			json_u64(&j, "fs_trim_bytes", fr->trimmed);
		else
			json_null(&j, "fs_trim_bytes");
		json_bool(&j, "balloon_removed", fr && fr->balloon_removed);
		json_object_end(&j);
		json_finish(&j);
		return;
	}
	if (fr && fr->type) {
		if (fr->balloon_removed)
			printf("%s: removed the balloon an online shrink left\n", file);
		printf("%s: the %s filesystem shrank from %s to %s", file, fr->type,
		       human_size(fr->old_size, b1, sizeof(b1)),
		       human_size(fr->new_size, b2, sizeof(b2)));
		if (fr->min_size)
			printf(" (its minimum %s plus the margin)",
			       human_size(fr->min_size, b3, sizeof(b3)));
		printf("\n");
	}
	if (now == old && !balloon) {
		printf("%s: virtual size is already %s; nothing to do\n", file,
		       human_size_exact(now, b1, sizeof(b1)));
	} else if (now != old) {
		printf("%s: virtual size %s -> %s%s\n", file,
		       human_size(old, b1, sizeof(b1)),
		       human_size_exact(now, b2, sizeof(b2)), online ? " (online)" : "");
	}
}

/* The filesystem at the start of the image, read without the lock (the
 * daemon holds it).  0 with *fi, 1 when none is recognised. */
static int probe_served(const char *file, struct img_fs_info *fi)
{
	struct img *img;
	int r;

	if (open_image(file, IMG_OPEN_NOLOCK, &img) < 0)
		return -EIO;
	r = fs_probe(file, img, fi);
	img_close(img);
	return r;
}

/* The image is served by imgserve: see usage(). */
static int shrink_online(const char *file, struct online_state *os, const char *size_arg,
			 unsigned rflags)
{
	struct img_fs_info fi;
	uint64_t cur, new_size, discarded = 0;
	char b1[64], b2[64], type[64] = "";
	int r, have_fs;

	if (!os->alive)
		return online_refuse_if_used(file, os), EXIT_ERROR;
	if (online_virtual_size(file, os, &cur) < 0)
		return EXIT_ERROR;
	if (parse_new_size(size_arg, cur, &new_size)) {
		errmsg("%s: invalid size '%s' (out of range for a %s image)", file, size_arg,
		       human_size(cur, b1, sizeof(b1)));
		return EXIT_ERROR;
	}
	if (new_size > cur) {
		errmsg("%s: %s is larger than the current size %s (use growimg to grow)",
		       file, human_size_exact(new_size, b1, sizeof(b1)),
		       human_size_exact(cur, b2, sizeof(b2)));
		return EXIT_ERROR;
	}
	if (new_size < IMG_SECTOR_SIZE || new_size % IMG_SECTOR_SIZE) {
		errmsg("%s: new size %llu must be a multiple of 512 bytes, at least 512",
		       file, (unsigned long long)new_size);
		return EXIT_ERROR;
	}
	if (new_size == cur) {
		progress_finish(&pr, 1);
		if (!quiet || json)
			print_result(file, cur, cur, 1, 0, NULL);
		return EXIT_OK;
	}
	memset(&fi, 0, sizeof(fi));
	r = probe_served(file, &fi);
	if (r < 0)
		return EXIT_ERROR;
	have_fs = r == 0 && (fi.flags & IMG_FS_HAVE_SIZE) &&
		  !(rflags & (IMG_RESIZE_DISCARD_DATA | SHRINK_NO_FS));
	if (have_fs && new_size < fi.size) {
		if (os->loop[0])
			online_blkid_type(os->loop, type, sizeof(type));
		if (!type[0])
			snprintf(type, sizeof(type), "%s", fi.type);
		if (!os->mountpoint[0]) {
			errmsg("%s: the %s filesystem spans %s; shrinking the image to %s would cut "
			       "it off; nothing was changed (mount it with imgmount, or shrink it "
			       "first)", file, type, human_size_exact(fi.size, b1, sizeof(b1)),
			       human_size_exact(new_size, b2, sizeof(b2)));
			return EXIT_ERROR;
		}
		if (!strcmp(type, "btrfs")) {
			char arg[32];
			char *av[] = { "btrfs", "filesystem", "resize", arg, os->mountpoint, NULL };
			snprintf(arg, sizeof(arg), "%llu", (unsigned long long)new_size);
			progress_phase(&pr, 0, 50, "shrinking the mounted btrfs filesystem "
				       "(btrfs filesystem resize)");
			if (run_quiet(av) != 0) {
				progress_finish(&pr, 0);
				errmsg("%s: the btrfs filesystem on %s did not shrink to %s; nothing "
				       "was changed", file, os->mountpoint,
				       human_size_exact(new_size, b1, sizeof(b1)));
				return EXIT_ERROR;
			}
			/* what lies past the filesystem's new end is not its data */
			rflags |= IMG_RESIZE_DISCARD_DATA;
		} else if (fs_is_ext(type)) {
			progress_phase(&pr, 0, 100, "reserving the space in the mounted filesystem "
				       "(a balloon)");
			r = online_balloon_inflate(file, os, fi.size - new_size, &discarded);
			progress_finish(&pr, r >= 0);
			if (r == -ENOSPC)
				errmsg("%s: the %s filesystem on %s has less than %s free; nothing "
				       "was changed", file, type, os->mountpoint,
				       human_size_exact(fi.size - new_size, b1, sizeof(b1)));
			if (r < 0)
				return EXIT_ERROR;
			if (json) {
				print_result(file, cur, cur, 1, fi.size - new_size, NULL);
			} else if (!quiet) {
				printf("%s: %s cannot shrink while mounted: %s/%s now reserves %s "
				       "(fallocated, never written; %s of host space given back)\n",
				       file, type, os->mountpoint, ONLINE_BALLOON,
				       human_size_exact(fi.size - new_size, b1, sizeof(b1)),
				       human_size(discarded, b2, sizeof(b2)));
				printf("%s: the virtual size stays %s until the shrink completes: run "
				       "'imgumount %s', then 'shrinkimg %s %llu'\n", file,
				       human_size(cur, b1, sizeof(b1)), os->mountpoint, file,
				       (unsigned long long)new_size);
			}
			return EXIT_OK;
		} else {
			errmsg("%s: the %s filesystem spans %s and cannot shrink%s; nothing was "
			       "changed", file, type, human_size_exact(fi.size, b1, sizeof(b1)),
			       !strcmp(type, "xfs") ? " (xfs never shrinks)" : " online");
			return EXIT_ERROR;
		}
	}
	/* the daemon reports no progress: a step */
	progress_phase(&pr, 50, 100, "shrinking the image (imgserve)");
	r = online_set_size(file, os, new_size, (rflags & IMG_RESIZE_DISCARD_DATA) != 0);
	progress_finish(&pr, r >= 0);
	if (r < 0)
		return EXIT_ERROR;
	if (!quiet || json)
		print_result(file, cur, new_size, 1, 0, NULL);
	return EXIT_OK;
}

/* What a refusal to cut the filesystem should advise. */
static const char *fs_advice(const char *type)
{
	return !strcmp(type, "xfs") ? "xfs filesystems cannot shrink" :
	       fs_is_ext(type) || !strcmp(type, "btrfs") ? "without --no-fs shrinkimg "
	       "shrinks the filesystem first" : "shrink the filesystem first";
}

/* Offline, before anything changes: decides whether the filesystem must
 * shrink, checks that it can (read-only), and sets *new_size (for --min:
 * its minimum plus the margin).  Returns 1 when the filesystem step is to
 * run (*fi, *facts filled), 0 when the image alone shrinks, -errno (-1
 * for a refusal of its own) after a refusal (message printed, nothing
 * changed). */
static int plan_fs(const char *file, const char *size_arg, int to_min, unsigned rflags,
		   uint64_t *new_size, struct img_fs_info *fi, struct fs_offline_facts *facts)
{
	struct img_info in;
	struct img *img;
	const char *why;
	char b1[64], b2[64], b3[64], fb[512];
	int r, have_fs;

	memset(fi, 0, sizeof(*fi));
	memset(facts, 0, sizeof(*facts));
	if ((r = open_image(file, 0, &img)) < 0)
		return r;
	r = img_info(img, &in);
	if (r < 0) {
		lib_errmsg(file, r);
		img_close(img);
		return -1;
	}
	r = fs_probe(file, img, fi);
	img_close(img);
	have_fs = r == 0 && (fi->flags & IMG_FS_HAVE_SIZE);
	if (!to_min) {
		/* a bad size is reported by the caller */
		if (parse_new_size(size_arg, in.virtual_size, new_size) || !have_fs ||
		    *new_size >= fi->size || *new_size > in.virtual_size)
			return 0;
		if (rflags & (IMG_RESIZE_DISCARD_DATA | SHRINK_NO_FS)) {
			if (rflags & IMG_RESIZE_DISCARD_DATA)
				return 0;
			errmsg("%s: the %s filesystem in the image spans %s; shrinking the image "
			       "to %s would cut it off", file, fi->type,
			       human_size_exact(fi->size, b1, sizeof(b1)),
			       human_size_exact(*new_size, b2, sizeof(b2)));
			errmsg("%s: nothing was changed; %s", file, fs_advice(fi->type));
			return -1;
		}
	} else if (r != 0) {
		errmsg("%s: --min needs a filesystem whose minimum size can be found (ext2/3/4 "
		       "or btrfs), and none is recognised in the image; nothing was changed",
		       file);
		return -1;
	}
	if (!strcmp(fi->type, "xfs")) {
		errmsg("%s: the xfs filesystem in the image spans %s and xfs filesystems cannot "
		       "shrink; nothing was changed", file,
		       human_size_exact(fi->size, b1, sizeof(b1)));
		return -1;
	}
	if (!fs_is_ext(fi->type) && strcmp(fi->type, "btrfs")) {
		errmsg("%s: shrinkimg cannot shrink a %s filesystem (only ext2/3/4 and btrfs)%s; "
		       "nothing was changed", file, fi->type, to_min ? "" :
		       " and the image's new end would cut it off");
		return -1;
	}
	if (!have_fs) {
		errmsg("%s: the size of the %s filesystem in the image is unknown; nothing was "
		       "changed", file, fi->type);
		return -1;
	}
	if ((fi->flags & IMG_FS_HAVE_STATE) && fi->state) {
		errmsg("%s: the filesystem in the image needs checking (%s)", file,
		       fs_describe(fi, fb, sizeof(fb)));
		errmsg("%s: nothing was changed; check it first (imgattach %s; e2fsck -f "
		       "DEVICE; imgdetach %s)", file, file, file);
		return -1;
	}
	if (!fs_offline_possible(&why)) {
		errmsg("%s: shrinking the %s filesystem in the image needs %s (it attaches the "
		       "image to run %s); nothing was changed", file, fi->type, why,
		       fs_is_ext(fi->type) ? "e2fsck and resize2fs" : "btrfs filesystem resize");
		return -1;
	}
	snprintf(fb, sizeof(fb), "checking the %s filesystem (%s)", fi->type,
		 fs_is_ext(fi->type) ? "e2fsck -f -n" : "btrfs inspect-internal");
	progress_phase(&pr, 0, 20, fb);
	if (fs_offline_inspect(file, fi, facts) < 0) {
		errmsg("%s: nothing was changed", file);
		return -1;
	}
	if (to_min) {
		if (facts->has_balloon)
			return 1;   /* measured again once the balloon is gone */
		*new_size = fs_min_with_margin(facts->min_size, fi->size);
		if (*new_size >= fi->size) {
			*new_size = fi->size < in.virtual_size ? fi->size : in.virtual_size;
			return 0;
		}
		return 1;
	}
	if (!facts->has_balloon && *new_size < facts->min_size) {
		errmsg("%s: %s is below the smallest the %s filesystem can shrink to, %s "
		       "(%s of it used); nothing was changed", file,
		       human_size_exact(*new_size, b1, sizeof(b1)), fi->type,
		       human_size(facts->min_size, b2, sizeof(b2)),
		       human_size(fi->used, b3, sizeof(b3)));
		return -1;
	}
	return 1;
}

static int run(int argc, char **argv)
{
	const char *file = NULL, *size_arg = NULL;
	struct img_info in;
	struct img *img;
	struct img_fs_info fi;
	struct fs_offline_facts facts;
	struct img_fs_trim_stats ts;
	struct fs_report fr = { 0 };
	uint64_t new_size = 0, tmp;
	unsigned rflags = 0;
	int c, r, npos = 0, ret = EXIT_ERROR, to_min = 0, fs_step = 0, want_progress = 0;
	char b1[64], b2[64], step[160];
	struct tool_getopt g = { 0 };

	tool_init(argc, argv);
	while ((c = tool_getopt(&g, argc, argv, "pjqhVv", longopts)) != -1) {
		switch (c) {
		case 1:
			if (npos == 0)
				file = optarg;
			else if (npos == 1)
				size_arg = optarg;
			else
				return usage_error("too many arguments");
			npos++;
			break;
		case OPT_DISCARD_DATA: rflags |= IMG_RESIZE_DISCARD_DATA; break;
		case OPT_MIN: to_min = 1; break;
		case OPT_NO_FS: rflags |= SHRINK_NO_FS; break;
		case 'p': want_progress = 1; break;
		case 'j': json = 1; break;
		case 'q': quiet = 1; break;
		case 'v': verbose = 1; break;
		case 'h': usage(); return EXIT_OK;
		case 'V': print_version(); return EXIT_OK;
		default:
			return usage_error("bad usage");
		}
	}
	if (!file || (!size_arg && !to_min))
		return usage_error("expected FILE and SIZE, or FILE --min");
	if (to_min && size_arg)
		return usage_error("give SIZE or --min, not both");
	if (to_min && (rflags & (IMG_RESIZE_DISCARD_DATA | SHRINK_NO_FS)))
		return usage_error("--min shrinks the filesystem: it excludes --no-fs and "
				   "--discard-data");
	if (size_arg &&
	    parse_size(size_arg[0] == '+' || size_arg[0] == '-' ? size_arg + 1 : size_arg,
		       &tmp)) {
		return value_error("invalid size '%s' (expected SIZE or -DELTA with an optional "
				   "K, M, G, T, P or E suffix)", size_arg);
	}

	progress_init(&pr, want_progress && !quiet);
	{
		struct online_state os;
		if (access(file, F_OK) == 0 && online_state_load(file, &os) > 0) {
			if (to_min) {
				errmsg("%s: --min works on an image that is not served; nothing was "
				       "changed (imgumount it first)", file);
				return EXIT_ERROR;
			}
			return shrink_online(file, &os, size_arg, rflags);
		}
	}
	/* Everything that can refuse does so before the image is opened for
	 * writing (which alone rewrites its header): the file stays exactly as
	 * it was. */
	r = plan_fs(file, size_arg, to_min, rflags, &new_size, &fi, &facts);
	if (r < 0) {
		progress_finish(&pr, 0);
		return exit_status(r);   /* 4: chain, 75: in use */
	}
	if (r == 1) {
		fr.old_size = fi.size;
		/* external programs: a step */
		snprintf(step, sizeof(step), "shrinking the %s filesystem (%s)", fi.type,
			 fs_is_ext(fi.type) ? "e2fsck -f, resize2fs" : "btrfs filesystem resize");
		progress_phase(&pr, 20, 60, step);
		if (fs_offline_shrink(file, &fi, (to_min ? FS_SHRINK_TO_MIN : 0) |
				      (facts.has_balloon ? FS_SHRINK_BALLOON : 0), &new_size) < 0) {
			progress_finish(&pr, 0);
			errmsg("%s: the image keeps its size: the %s filesystem in it was not "
			       "shrunk (it still spans %s)", file, fi.type,
			       human_size_exact(fi.size, b1, sizeof(b1)));
			return EXIT_ERROR;
		}
		/* what lies past the filesystem's new end is not its data */
		rflags |= IMG_RESIZE_DISCARD_DATA;
		fs_step = 1;
		fr.type = fi.type;
		fr.new_size = new_size;
		fr.balloon_removed = facts.has_balloon;
		if (to_min)
			fr.min_size = facts.has_balloon ? 0 : facts.min_size;
	}
	if ((r = open_image(file, IMG_OPEN_RDWR | IMG_OPEN_IO_URING, &img)) < 0) {
		ret = exit_status(r);
		goto fs_done;
	}
	memset(&in, 0, sizeof(in));
	r = img_info(img, &in);
	if (r < 0) {
		lib_errmsg(file, r);
		goto out;
	}
	if (!fs_step && !to_min &&
	    parse_new_size(size_arg, in.virtual_size, &new_size)) {
		errmsg("%s: invalid size '%s' (out of range for a %s image)", file, size_arg,
		       human_size(in.virtual_size, b1, sizeof(b1)));
		goto out;
	}
	if (new_size > in.virtual_size) {
		errmsg("%s: %s is larger than the current size %s (use growimg to grow)",
		       file, human_size_exact(new_size, b1, sizeof(b1)),
		       human_size_exact(in.virtual_size, b2, sizeof(b2)));
		goto out;
	}
	if (new_size < IMG_SECTOR_SIZE || new_size % IMG_SECTOR_SIZE) {
		errmsg("%s: new size %llu must be a multiple of 512 bytes, at least 512",
		       file, (unsigned long long)new_size);
		goto out;
	}
	if (fs_step && fs_is_ext(fi.type)) {
		/* The filesystem was just checked: the clusters its free blocks
		 * hold go back, and the relocation below packs only live ones. */
		memset(&ts, 0, sizeof(ts));
		progress_phase(&pr, 60, 70, "giving back the filesystem's free blocks");
		r = img_fs_trim_free(img, 0, &ts);
		if (r < 0) {
			lib_errmsg(file, r);
			goto out;
		}
		fr.trimmed = ts.disk_usage_before > ts.disk_usage_after ?
			     ts.disk_usage_before - ts.disk_usage_after : 0;
	}
	if (new_size < in.virtual_size) {
		/* the relocation that packs the host file: measured */
		progress_phase(&pr, fs_step ? 70 : 0, 100, fs_step ? "shrinking the image" : NULL);
		r = img_resize_progress(img, new_size, rflags & IMG_RESIZE_DISCARD_DATA,
					pr.enabled ? progress_cb : NULL, &pr);
		if (r == -ENOTEMPTY) {
			errmsg("%s: data past %s would be lost; not shrinking "
			       "(use --discard-data to drop that data)", file,
			       human_size_exact(new_size, b1, sizeof(b1)));
			goto out;
		}
		if (r < 0) {
			lib_errmsg(file, r);
			goto out;
		}
	}
	if (fs_step) {
		/* what the filesystem spans now, as its superblock says */
		struct img_fs_info now;
		if (fs_probe(file, img, &now) == 0 && (now.flags & IMG_FS_HAVE_SIZE))
			fr.new_size = now.size;
	}
	ret = EXIT_OK;
out:
	if (close_image(file, img) < 0)
		ret = EXIT_ERROR;
fs_done:
	progress_finish(&pr, ret == EXIT_OK);
	if (ret != EXIT_OK && fs_step)
		errmsg("%s: the %s filesystem in the image now spans %s but the image was not "
		       "shrunk: 'shrinkimg %s %llu' completes it", file, fi.type,
		       human_size_exact(new_size, b1, sizeof(b1)), file,
		       (unsigned long long)new_size);
	if (ret != EXIT_OK || (quiet && !json))
		return ret;
	print_result(file, in.virtual_size, new_size, 0, 0, &fr);
	return ret;
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
