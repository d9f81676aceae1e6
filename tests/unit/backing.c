/* SPDX-License-Identifier: MIT */
/* Backing chains (FORMAT.md 3.1): reads fall through to the backing image
 * (zeros past its size), partial writes copy the cluster up, discard and
 * write-zeroes hide the backing, compaction keeps zero shadows, map shows
 * where bytes come from, safe rebase keeps the disk, and hostile chains are
 * refused: absolute path, "..", a loop, depth 1000, a replaced base.
 * Named sub-tests (tassert.h), each in a directory of its own with the
 * same base (setup). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "libimg.h"
#include "format.h"
#include "../helpers/tassert.h"

#define CS (64u << 10)
#define VS (4u << 20)
static char dir[sizeof("/tmp/libimg-backing-XXXXXX")];
static uint8_t base[VS], want[VS], got[VS];

static char *P(const char *name)
{
	static char buf[8][512];
	static int i;
	i = (i + 1) % 8;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
	return buf[i];
}

static int mk(const char *name, uint64_t size, const char *backing, unsigned flags)
{
	struct img_create_opts o = { .virtual_size = size, .cluster_size = CS,
				     .flags = IMG_CREATE_OVERWRITE | flags };
	o.backing_file = backing;
	return img_create(P(name), &o);
}

static void fill(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 9));
}

/* Rewrite both header copies with a backing reference (no uuid), the way
 * a hostile file would look. */
static void set_ref(const char *name, const char *ref)
{
	uint8_t slot[IMG_HEADER_SLOT];
	struct imgi_header h;
	char why[160];
	int fd = open(P(name), O_RDWR);

	T_CHECK(fd >= 0);
	T_CHECK(pread(fd, slot, sizeof(slot), 0) == (ssize_t)sizeof(slot));
	T_CHECK(imgi_header_decode(slot, &h, why, sizeof(why)) == 0);
	imgi_header_set_backing(&h, NULL, ref, strlen(ref));
	imgi_header_encode(&h, slot);
	T_CHECK(pwrite(fd, slot, sizeof(slot), 0) == (ssize_t)sizeof(slot));
	T_CHECK(pwrite(fd, slot, sizeof(slot), IMG_HEADER_SLOT) == (ssize_t)sizeof(slot));
	close(fd);
}

static uint64_t crc_of(const char *name)
{
	int fd = open(P(name), O_RDONLY);
	uint8_t b[65536];
	ssize_t n;
	uint32_t c = 0;
	while ((n = read(fd, b, sizeof(b))) > 0)
		c = imgi_crc32c(c, b, (size_t)n);
	close(fd);
	return c;
}

/* A new directory (dir) with the base: data everywhere but cluster 5
 * (zero cluster) and 6..7 (never written).  The crc32c of its file. */
static uint32_t setup(void)
{
	struct img *b;

	strcpy(dir, "/tmp/libimg-backing-XXXXXX");
	T_ASSERT(mkdtemp(dir) != NULL);
	fill(base, VS, 1);
	memset(base + 5 * CS, 0, 3 * CS);
	T_CHECK(mk("base.img", VS, NULL, 0) == 0);
	T_CHECK(img_open(P("base.img"), IMG_OPEN_RDWR, &b) == 0);
	T_CHECK(img_pwrite(b, base, VS, 0) == VS);
	T_CHECK(img_write_zeroes(b, 5 * CS, CS) == 0);
	T_CHECK(img_discard(b, 6 * CS, 2 * CS) == 0);
	T_CHECK(img_close(b) == 0);
	return (uint32_t)crc_of("base.img");
}

static void cleanup(void)
{
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (!getenv("KEEP") && system(cmd)) {}
}

static void other_cluster_size(void)
{
	struct img_check_result cr;
	struct img_info in;
	struct img *img;

	setup();
	/* Issue 22 #4 (FORMAT.md 3.1, 4.2): a delta may have another cluster
	 * size than its base (reads and copy-up go by bytes) and may hold
	 * compressed clusters of its own (the features are independent). */
	{
		struct img_create_opts o = { .virtual_size = VS, .cluster_size = 1u << 20,
					     .flags = IMG_CREATE_OVERWRITE, .backing_file = "base.img" };
		const uint64_t big = 1u << 20;
		T_CHECK(img_create(P("big.img"), &o) == 0);
		T_CHECK(img_open(P("big.img"), IMG_OPEN_RDWR, &img) == 0);
		T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, base, VS));
		memcpy(want, base, VS);
		memset(want + 100, 0x3c, 5000);                 /* copy-up of 1 MiB from 64 KiB clusters */
		T_CHECK(img_pwrite(img, want + 100, 5000, 100) == 5000);
		for (uint64_t i = 0; i < big; i++)
			want[2 * big + i] = (uint8_t)("delta text "[i % 11]);
		T_CHECK(img_write_compressed(img, want + 2 * big, big, 2 * big) == 1);
		T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
		T_CHECK(img_close(img) == 0);
		T_CHECK(img_open(P("big.img"), 0, &img) == 0);
		img_info(img, &in);
		T_CHECK(in.cluster_size == big && in.compressed_clusters == 1 && in.allocated_clusters == 1);
		T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
		T_CHECK(img_check(img, NULL, &cr) == 0 && cr.corruptions == 0 && cr.leaks == 0);
		T_CHECK(img_close(img) == 0);
		T_CHECK(unlink(P("big.img")) == 0);
	}

	cleanup();
}

/* Reads through, copy-up, discard, zeroes, compaction, the base's lock,
 * resize: one delta's story. */
static void delta_story(void)
{
	struct img *img, *b;
	struct img_info in;
	struct img_extent ex;
	struct img_check_result cr;
	struct img_compact_stats cs;
	char ref[64];
	uint32_t base_crc = setup();

	/* A delta with the base's size by default. */
	T_CHECK(mk("top.img", 0, "base.img", 0) == 0);
	T_CHECK(img_open(P("top.img"), IMG_OPEN_RDWR, &img) == 0);
	img_info(img, &in);
	T_CHECK(in.virtual_size == VS && in.backing_depth == 1 && in.allocated_clusters == 0);
	T_CHECK(img_backing_ref(img, ref, sizeof(ref)) == 8 && !strcmp(ref, "base.img"));
	T_CHECK(img_backing_ref(img, ref, 4) == -ERANGE);
	T_CHECK(img_backing(img) != NULL);
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, base, VS));

	/* map: the base's data shows at depth 1 */
	T_CHECK(img_map(img, 0, &ex) == 0 && ex.type == IMG_EXTENT_DATA && ex.depth == 1 &&
	      ex.length == 5 * CS);
	T_CHECK(img_map(img, 5 * CS, &ex) == 0 && ex.type == IMG_EXTENT_ZERO && ex.depth == 1);

	/* Partial write: copy-on-write of the rest of the cluster. */
	memcpy(want, base, VS);
	memset(want + 3 * CS + 100, 0xAB, 1000);
	T_CHECK(img_pwrite(img, want + 3 * CS + 100, 1000, 3 * CS + 100) == 1000);
	/* A write spanning a partial, a whole and a partial cluster. */
	memset(want + 8 * CS + 7, 0xCD, 2 * CS);
	T_CHECK(img_pwrite(img, want + 8 * CS + 7, 2 * CS, 8 * CS + 7) == 2 * CS);
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
	T_CHECK(img_map(img, 3 * CS, &ex) == 0 && ex.type == IMG_EXTENT_DATA && ex.depth == 0 &&
	      ex.length == CS);

	/* Discard and write-zeroes hide the backing: whole clusters become
	 * zero, partial ones are copied up with zeros. */
	T_CHECK(img_discard(img, 12 * CS, CS) == 0);
	memset(want + 12 * CS, 0, CS);
	T_CHECK(img_write_zeroes(img, 14 * CS + 512, 4096) == 0);
	memset(want + 14 * CS + 512, 0, 4096);
	T_CHECK(img_discard(img, 3 * CS, CS) == 0);         /* allocated -> zero */
	memset(want + 3 * CS, 0, CS);
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
	T_CHECK(img_map(img, 12 * CS, &ex) == 0 && ex.type == IMG_EXTENT_ZERO && ex.depth == 0);

	/* Compaction: an all-zero allocated cluster of a delta becomes zero,
	 * never unallocated (the base has data there). */
	memset(want + 20 * CS, 0, CS);
	T_CHECK(img_pwrite(img, want + 20 * CS, CS, 20 * CS) == CS);
	T_CHECK(img_compact(img, NULL, &cs) == 0 && cs.zero_clusters_freed >= 1);
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
	T_CHECK(img_close(img) == 0);

	/* Reopen: the same; check clean; the base never changed. */
	T_CHECK(img_open(P("top.img"), 0, &img) == 0);
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
	T_CHECK(img_check(img, NULL, &cr) == 0 && cr.corruptions == 0 && cr.leaks == 0);
	T_CHECK(img_close(img) == 0);
	T_CHECK(crc_of("base.img") == base_crc);

	/* The base is locked shared while a delta is open: no writer. */
	T_CHECK(img_open(P("top.img"), IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_open(P("base.img"), IMG_OPEN_RDWR, &b) == -EBUSY);
	T_CHECK(img_open(P("base.img"), 0, &b) == 0 && img_close(b) == 0);

	/* Grow the delta past the base: zeros there; shrink and grow again:
	 * the dropped part reads zeros, not the base. */
	T_CHECK(img_resize(img, 2 * VS, 0) == 0);
	T_CHECK(img_pread(img, got, VS, VS) == VS && imgi_is_zero(got, VS));
	T_CHECK(img_resize(img, VS / 2 + 4096, 0) == 0);
	T_CHECK(img_resize(img, VS, 0) == 0);
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS / 2 + 4096) &&
	      imgi_is_zero(got + VS / 2 + 4096, VS / 2 - 4096));
	T_CHECK(img_close(img) == 0);

	cleanup();
}

static void safe_rebase(void)
{
	struct img *img;
	struct img_info in;
	char ref[64];

	setup();
	/* top.img: a delta over base.img with data of its own */
	T_CHECK(mk("top.img", 0, "base.img", 0) == 0);
	T_CHECK(img_open(P("top.img"), IMG_OPEN_RDWR, &img) == 0);
	memset(want, 0xAB, 3 * CS);
	T_CHECK(img_pwrite(img, want, 3 * CS, 3 * CS + 100) == 3 * CS);
	T_CHECK(img_close(img) == 0);
	memcpy(want, base, VS);
	/* Safe rebase onto nothing (flatten in place): the disk is unchanged. */
	T_CHECK(mk("top2.img", 0, "base.img", 0) == 0);
	T_CHECK(img_open(P("top2.img"), IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_pwrite(img, want, 1000, 77) == 1000);
	memcpy(want, base, VS);
	memcpy(want + 77, base, 1000);
	T_CHECK(img_set_backing(img, NULL, 0, NULL, NULL) == 0);
	img_info(img, &in);
	T_CHECK(in.backing_depth == 0 && in.incompat_features == 0);
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open(P("top2.img"), 0, &img) == 0);
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
	T_CHECK(img_close(img) == 0);
	/* Safe rebase of top.img onto top2.img: the disk stays the same. */
	T_CHECK(img_open(P("top.img"), IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_pread(img, want, VS, 0) == VS);
	T_CHECK(img_set_backing(img, "top2.img", 0, NULL, NULL) == 0);
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open(P("top.img"), 0, &img) == 0);
	T_CHECK(img_backing_ref(img, ref, sizeof(ref)) == 8 && !strcmp(ref, "top2.img"));
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
	T_CHECK(img_close(img) == 0);

	cleanup();
}

/* img_open_io cannot follow a reference; NO_BACKING opens alone and
 * refuses data writes. */
static void open_without_following(void)
{
	struct img *img;

	setup();
	T_CHECK(mk("top.img", 0, "base.img", 0) == 0);
	T_CHECK(img_open(P("top.img"), IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING, &img) == 0);
	T_CHECK(img_backing(img) == NULL);
	T_CHECK(img_pwrite(img, want, 512, 0) == -EROFS);
	T_CHECK(img_close(img) == 0);

	/* img_create_io and img_open_io do not follow references. */
	{
		struct img_io *io;
		struct img_create_opts o = { .virtual_size = VS };
		o.backing_file = "base.img";
		img_io_mem_new(NULL, 0, &io);
		T_CHECK(img_create_io(io, &o) == -EINVAL);
		io->ops->close(io);
		T_CHECK(img_io_posix_open(P("top.img"), IMG_IO_RDONLY, &io) == 0);
		T_CHECK(img_open_io(io, 0, &img) == -EOPNOTSUPP);
		T_CHECK(img_io_posix_open(P("top.img"), IMG_IO_RDONLY, &io) == 0);
		T_CHECK(img_open_io(io, IMG_OPEN_NO_BACKING, &img) == 0 && img_close(img) == 0);
	}
	cleanup();
}

/* An absolute path, "..", a missing base; a chain failure is told from
 * one of the image itself. */
static void refused_references(void)
{
	struct img *img;

	setup();
	T_CHECK(mk("abs.img", 0, P("base.img"), 0) == -EPERM);
	T_CHECK(strstr(img_last_error(), "absolute") != NULL);
	T_CHECK(mk("abs.img", 0, P("base.img"), IMG_CREATE_ALLOW_BACKING_PATH) == 0);
	T_CHECK(img_open(P("abs.img"), 0, &img) == -EPERM);
	T_CHECK(strstr(img_last_error(), "absolute") && strstr(img_last_error(), "abs.img"));
	T_CHECK(img_open(P("abs.img"), IMG_OPEN_ALLOW_BACKING_PATH, &img) == 0 && img_close(img) == 0);
	T_CHECK(mk("dots.img", VS, NULL, 0) == 0);
	set_ref("dots.img", "x/../base.img");
	T_CHECK(img_open(P("dots.img"), 0, &img) == -EPERM);
	T_CHECK(strstr(img_last_error(), "..") != NULL);
	T_CHECK(img_open(P("dots.img"), IMG_OPEN_ALLOW_BACKING_PATH, &img) == -ENOENT);
	set_ref("dots.img", "missing.img");
	T_CHECK(img_open(P("dots.img"), 0, &img) == -ENOENT);
	T_CHECK(strstr(img_last_error(), "missing.img") != NULL);
	/* issue 14 #7: a chain failure is told from one of the image itself */
	T_CHECK(img_last_chain_error() == -ENOENT);
	T_CHECK(img_open(P("dots.img"), IMG_OPEN_NO_BACKING, &img) == 0 && img_close(img) == 0);
	T_CHECK(img_last_chain_error() == 0);
	T_CHECK(img_open(P("abs.img"), 0, &img) == -EPERM && img_last_chain_error() == -EPERM);
	T_CHECK(img_open(P("no-such.img"), 0, &img) == -ENOENT && img_last_chain_error() == 0);
	cleanup();
}

static void refused_loop(void)
{
	struct img *img;

	setup();
	/* A loop: a -> b -> a. */
	T_CHECK(mk("la.img", VS, NULL, 0) == 0 && mk("lb.img", VS, NULL, 0) == 0);
	set_ref("la.img", "lb.img");
	set_ref("lb.img", "la.img");
	T_CHECK(img_open(P("la.img"), 0, &img) == -ELOOP);
	T_CHECK(strstr(img_last_error(), "loop") != NULL);
	T_CHECK(img_last_chain_error() == -ELOOP);
	set_ref("la.img", "la.img");
	T_CHECK(img_open(P("la.img"), 0, &img) == -ELOOP);
	cleanup();
}

static void refused_depth(void)
{
	struct img_info in;
	struct img *img;

	setup();
	/* Depth 1000: refused past 64. */
	for (int i = 0; i < 1000; i++) {
		char n[32], r[32];
		snprintf(n, sizeof(n), "d%d.img", i);
		T_CHECK(mk(n, 65536, NULL, 0) == 0);
		if (i) {
			snprintf(r, sizeof(r), "d%d.img", i - 1);
			set_ref(n, r);
		}
	}
	T_CHECK(img_open(P("d999.img"), 0, &img) == -ELOOP);
	T_CHECK(strstr(img_last_error(), "deeper than 64") != NULL);
	T_CHECK(img_open(P("d64.img"), 0, &img) == 0);
	img_info(img, &in);
	T_CHECK(in.backing_depth == 64);
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open(P("d65.img"), 0, &img) == -ELOOP);
	cleanup();
}

static void refused_replaced_base(void)
{
	struct img *img;

	setup();
	/* A replaced base (another image under the same name). */
	T_CHECK(mk("b2.img", VS, NULL, 0) == 0 && mk("t2.img", 0, "b2.img", 0) == 0);
	T_CHECK(mk("b2.img", VS, NULL, 0) == 0);
	T_CHECK(img_open(P("t2.img"), 0, &img) == -EUCLEAN);
	T_CHECK(strstr(img_last_error(), "uuid") != NULL);
	T_CHECK(img_last_chain_error() == -EUCLEAN);
	cleanup();
}

static const struct t_case cases[] = {
	T_CASE(other_cluster_size), T_CASE(delta_story), T_CASE(safe_rebase),
	T_CASE(open_without_following), T_CASE(refused_references), T_CASE(refused_loop),
	T_CASE(refused_depth), T_CASE(refused_replaced_base),
};

int main(int argc, char **argv)
{
	return T_MAIN(argc, argv, cases);
}
