/* SPDX-License-Identifier: MIT */
/* imgmap: list the runs of data, zero and unallocated clusters. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const struct option longopts[] = {
	{ "json",        no_argument, NULL, 'j' },
	{ "force-share", no_argument, NULL, 'U' },
	{ "quiet",       no_argument, NULL, 'q' },
	{ "help",        no_argument, NULL, 'h' },
	{ "version",     no_argument, NULL, 'V' },
	BACKING_PATH_OPTION,
	WAIT_OPTION,
	{ NULL, 0, NULL, 0 }
};

static void usage(void)
{
	printf("Usage: %s [OPTIONS] FILE\n"
	       "List the runs of a libimg image's virtual disk: data (with the host\n"
	       "offset where it is stored), zero, and unallocated.\n"
	       "\n"
	       "  -j, --json         print a JSON array of {schema, start, length, type,\n"
	       "                     data, zero, compressed, offset, depth} objects\n"
	       "                     (offset only for data; also with -q)\n"
	       "  -U, --force-share  do not lock the image\n"
	       BACKING_PATH_HELP
	       WAIT_HELP
	       "  -q, --quiet        print nothing; only the exit status tells\n"
	       "  -h, --help         show this help\n"
	       "  -V, --version      show the version\n"
	       "\n"
	       "Exit status: 0 success, 1 error, 2 usage, 3 corrupt or not an image,\n"
	       "  4 broken chain, 5 not found, 75 in use.  See imgmap(1), libimg(7).\n", progname);
}

static const char *type_name(uint32_t t)
{
	switch (t) {
	case IMG_EXTENT_DATA: return "data";
	case IMG_EXTENT_COMPRESSED: return "compressed";
	case IMG_EXTENT_ZERO: return "zero";
	case IMG_EXTENT_UNALLOCATED: return "unallocated";
	default: return "unknown";
	}
}

static int map_option(int c, void *flags)
{
	if (c != 'U')
		return -1;
	*(unsigned *)flags |= IMG_OPEN_NOLOCK;
	return 0;
}

static int run(int argc, char **argv)
{
	const char *file = NULL;
	struct img_info in;
	struct img *img;
	struct json_out j;
	unsigned flags = 0;
	uint64_t off = 0;
	int r, ret;

	tool_init(argc, argv);
	if (!(file = tool_one_operand(argc, argv, "jUqhV", longopts, map_option, &flags, usage,
				      "FILE", &ret)))
		return ret;
	ret = EXIT_ERROR;

	if ((r = open_image(file, flags, &img)) < 0)
		return exit_status(r);   /* 4: its backing chain cannot be opened */
	memset(&in, 0, sizeof(in));
	r = img_info(img, &in);
	if (r < 0) {
		lib_errmsg(file, r);
		goto out;
	}

	if (json) {   /* -j -q too */
		json_start(&j, stdout);
		json_array_begin(&j, NULL);
	} else if (quiet) {
		/* still walk the map: the exit status says whether it is sound */
	} else {
		printf("%-20s%-20s%-13s%s\n", "Offset", "Length", "Type", "Host offset");
	}
	while (off < in.virtual_size) {
		struct img_extent e;

		memset(&e, 0, sizeof(e));
		r = img_map(img, off, &e);
		if (r < 0) {
			lib_errmsg(file, r);
			break;
		}
		if (e.length == 0)
			break;
		if (e.offset != off || e.length > in.virtual_size - off) {
			errmsg("%s: map returned a bad run at offset %llu", file,
			       (unsigned long long)off);
			r = -EIO;
			break;
		}
		if (json) {
			json_doc_begin(&j);
			json_u64(&j, "start", e.offset);
			json_u64(&j, "length", e.length);
			json_string(&j, "type", type_name(e.type));
			json_bool(&j, "data", e.type == IMG_EXTENT_DATA || e.type == IMG_EXTENT_COMPRESSED);
			json_bool(&j, "zero", e.type != IMG_EXTENT_DATA && e.type != IMG_EXTENT_COMPRESSED);
			json_bool(&j, "compressed", e.type == IMG_EXTENT_COMPRESSED);
			if (e.type == IMG_EXTENT_DATA || e.type == IMG_EXTENT_COMPRESSED)
				json_u64(&j, "offset", e.host_offset);
			json_u64(&j, "depth", e.depth);   /* as qemu-img map */
			json_object_end(&j);
		} else if (quiet) {
			/* nothing */
		} else if (e.type == IMG_EXTENT_DATA || e.type == IMG_EXTENT_COMPRESSED) {
			printf("0x%-18llx0x%-18llx%-13s0x%llx\n", (unsigned long long)e.offset,
			       (unsigned long long)e.length, type_name(e.type),
			       (unsigned long long)e.host_offset);
		} else {
			printf("0x%-18llx0x%-18llx%s\n", (unsigned long long)e.offset,
			       (unsigned long long)e.length, type_name(e.type));
		}
		off += e.length;
	}
	if (r >= 0 && off < in.virtual_size) {
		errmsg("%s: map ended early at offset %llu", file, (unsigned long long)off);
		r = -EIO;
	}
	if (json && r >= 0) {
		json_array_end(&j);
		json_finish(&j);
	} else if (json) {
		json_discard(&j);   /* no half map */
	}
	if (r >= 0)
		ret = EXIT_OK;
out:
	if (close_image(file, img) < 0)
		ret = EXIT_ERROR;
	return ret;
}

int main(int argc, char **argv)
{
	return tool_exit(run(argc, argv));
}
