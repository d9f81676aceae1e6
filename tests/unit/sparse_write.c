/* SPDX-License-Identifier: MIT */
/*
 * The sparse cluster write, one rule for every caller (issue 17):
 *   host      imgi_sparse_reqs (util.c): into a free host area, only the runs
 *             of non-zero 4 KiB blocks are written; nothing to write past
 *             the end of the file gives one zero byte at the cluster's
 *             start (FORMAT.md 4.1), inside the file nothing at all.
 *   fresh     img_pwrite_sparse on a new image: zero blocks (4 KiB, or
 *             clusters) allocate nothing; the bytes returned are those
 *             written; the content reads back as written.
 *   over      zeros over data, and zeros into a delta's unallocated
 *             cluster (the backing image shows there), are written: the
 *             range reads as the buffer afterwards.
 *   compress  IMG_SPARSE_COMPRESS stores whole clusters compressed and
 *             skips zero clusters.
 *   refused   a read-only handle refuses even an all-zero sparse write.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "../helpers/tassert.h"

#define CS (64u << 10)
#define VS (1u << 20)

static char dir[] = "/tmp/libimg-sparse-XXXXXX";

static char *P(const char *name)
{
	static char buf[2][512];
	static int i;
	i = (i + 1) % 2;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
	return buf[i];
}

static struct img *fresh(const char *name, const char *backing)
{
	struct img_create_opts o = { .virtual_size = VS, .cluster_size = CS,
				     .flags = IMG_CREATE_OVERWRITE, .backing_file = backing };
	struct img *img;

	T_OK(img_create(P(name), &o));
	T_OK(img_open(P(name), IMG_OPEN_RDWR, &img));
	return img;
}

static unsigned type_at(struct img *img, uint64_t off)
{
	struct img_extent e;
	T_OK(img_map(img, off, &e));
	return e.type;
}

static void host(void)
{
	struct img *img = fresh("host.img", NULL);
	uint64_t end = imgi_file_size(img);
	struct img_io_req rq[IMG_SPARSE_MAX_REQS(CS)];
	uint8_t *b = calloc(1, CS);

	T_ASSERT(b);
	/* data in blocks 1, 2 and 15: two runs */
	memset(b + 4096, 1, 8192);
	b[15 * 4096 + 7] = 2;
	T_EQ(imgi_sparse_reqs(img, b, CS, end + CS, rq), 2);
	T_EQ(rq[0].off, end + CS + 4096);
	T_EQ(rq[0].len, 8192);
	T_EQ(rq[1].off, end + CS + 15 * 4096);
	T_EQ(rq[1].len, 4096);
	/* all zeros: past the end one byte, inside the file nothing */
	memset(b, 0, CS);
	T_EQ(imgi_sparse_reqs(img, b, CS, end, rq), 1);
	T_EQ(rq[0].off, end);
	T_EQ(rq[0].len, 1);
	T_EQ(imgi_sparse_reqs(img, b, CS, 0, rq), 0);
	/* a length that is not a multiple of 4 KiB */
	b[CS - 8192 + 10] = 3;
	T_EQ(imgi_sparse_reqs(img, b, CS - 4096 - 100, end, rq), 1);
	T_EQ(rq[0].off, end + CS - 8192);
	T_EQ(rq[0].len, 4096 - 100);
	T_OK(img_close(img));
	free(b);
}

static void fresh_image(void)
{
	struct img *img = fresh("fresh.img", NULL);
	uint8_t *b = calloc(1, 4 * CS), *r = malloc(4 * CS);

	T_ASSERT(b && r);
	/* cluster 0: one 4 KiB block of data; cluster 1: zeros; cluster 2:
	 * data at its start and end; cluster 3: zeros */
	memset(b + 8192, 0x11, 4096);
	memset(b + 2 * CS, 0x22, 100);
	memset(b + 3 * CS - 4096, 0x33, 4096);
	T_EQ(img_pwrite_sparse(img, b, 4 * CS, 0, 0), 3 * 4096);
	T_EQ(type_at(img, 0), IMG_EXTENT_DATA);
	T_EQ(type_at(img, CS), IMG_EXTENT_UNALLOCATED);
	T_EQ(type_at(img, 2 * CS), IMG_EXTENT_DATA);
	T_EQ(type_at(img, 3 * CS), IMG_EXTENT_UNALLOCATED);
	T_EQ(img_pread(img, r, 4 * CS, 0), 4 * CS);
	T_ASSERT(!memcmp(r, b, 4 * CS));
	/* whole clusters: a cluster with data is written whole */
	T_EQ(img_pwrite_sparse(img, b, 4 * CS, 4 * CS, IMG_SPARSE_CLUSTERS), 2 * CS);
	T_EQ(type_at(img, 5 * CS), IMG_EXTENT_UNALLOCATED);
	T_EQ(img_pread(img, r, 4 * CS, 4 * CS), 4 * CS);
	T_ASSERT(!memcmp(r, b, 4 * CS));
	T_EQ(img_pwrite_sparse(img, b, 0, 0, 0), 0);
	T_EQ(img_pwrite_sparse(img, b, 4096, VS - 100, 0), -EINVAL);
	T_EQ(img_pwrite_sparse(img, b, 4096, 0, 0x80), -EINVAL);
	T_OK(img_close(img));
	free(b);
	free(r);
}

static void over(void)
{
	struct img *img = fresh("base.img", NULL);
	uint8_t *b = malloc(VS), *r = malloc(VS);

	T_ASSERT(b && r);
	memset(b, 0xAA, VS);
	T_EQ(img_pwrite(img, b, VS, 0), VS);
	/* zeros over data: written (the disk did not read zeros there) */
	memset(b, 0, CS);
	T_EQ(img_pwrite_sparse(img, b, CS, 0, 0), CS);
	T_EQ(img_pread(img, r, CS, 0), CS);
	T_ASSERT(imgi_is_zero(r, CS));
	T_OK(img_close(img));

	/* a delta: its unallocated clusters show the base's 0xAA */
	img = fresh("top.img", "base.img");
	T_EQ(img_pwrite_sparse(img, b, CS, 2 * CS, IMG_SPARSE_CLUSTERS), CS);
	T_EQ(img_pread(img, r, CS, 2 * CS), CS);
	T_ASSERT(imgi_is_zero(r, CS));
	/* a zero cluster of the delta reads zeros: skipped */
	T_OK(img_write_zeroes(img, 4 * CS, CS));
	T_EQ(img_pwrite_sparse(img, b, CS, 4 * CS, 0), 0);
	T_EQ(type_at(img, 4 * CS), IMG_EXTENT_ZERO);
	T_OK(img_close(img));
	free(b);
	free(r);
}

static void compress(void)
{
	struct img *img = fresh("comp.img", NULL);
	uint8_t *b = calloc(1, 3 * CS), *r = malloc(3 * CS);
	struct img_info in;

	T_ASSERT(b && r);
	memset(b, 0x44, CS);                 /* compresses */
	memset(b + 2 * CS + 512, 0x55, 512); /* compresses */
	T_EQ(img_pwrite_sparse(img, b, 3 * CS, VS - 3 * CS, IMG_SPARSE_COMPRESS), 2 * CS);
	T_EQ(type_at(img, VS - 3 * CS), IMG_EXTENT_COMPRESSED);
	T_EQ(type_at(img, VS - 2 * CS), IMG_EXTENT_UNALLOCATED);
	T_EQ(type_at(img, VS - CS), IMG_EXTENT_COMPRESSED);
	T_OK(img_info(img, &in));
	T_EQ(in.compressed_clusters, 2);
	T_EQ(img_pread(img, r, 3 * CS, VS - 3 * CS), 3 * CS);
	T_ASSERT(!memcmp(r, b, 3 * CS));
	/* a partial cluster goes in plainly */
	T_EQ(img_pwrite_sparse(img, b, 4096, 4096, IMG_SPARSE_COMPRESS), 4096);
	T_EQ(type_at(img, 0), IMG_EXTENT_DATA);
	T_OK(img_close(img));
	free(b);
	free(r);
}

static void refused(void)
{
	struct img *img;
	uint8_t *b = calloc(1, CS);

	T_ASSERT(b);
	img_close(fresh("ro.img", NULL));
	T_OK(img_open(P("ro.img"), 0, &img));
	T_EQ(img_pwrite_sparse(img, b, CS, 0, 0), -EROFS);
	T_OK(img_close(img));
	free(b);
}

int main(void)
{
	if (!mkdtemp(dir))
		T_FAIL("mkdtemp: %m");
	host();
	fresh_image();
	over();
	compress();
	refused();
	printf("SUMMARY: sparse_write: host, fresh, over, compress, refused passed\n");
	for (const char *n = "host.img\0fresh.img\0base.img\0top.img\0comp.img\0ro.img\0"; *n;
	     n += strlen(n) + 1)
		unlink(P(n));
	rmdir(dir);
	return 0;
}
