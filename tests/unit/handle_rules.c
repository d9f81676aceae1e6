/* SPDX-License-Identifier: MIT */
/*
 * The core's rules for what a handle may change (one case each, named
 * after the issue that found it):
 *   issue 14 #5  a delta opened without its backing chain (NO_BACKING)
 *                changes nothing the disk shows: grow, shrink, writes,
 *                discard, compaction, trim and a safe rebase are refused;
 *                an unsafe rebase (header only) works; grown with its
 *                chain, the new space reads zeros, not the backing bytes.
 *   issue 14 #8  a failed sync is final for the handle: with the fault
 *                backend dropping unflushed writes on a failed flush, every
 *                later write, flush, change and the close fail with EIO,
 *                and the reopened image checks clean with no mapping to
 *                data that never reached the disk.
 *   issue 14 #9  a newer, well-formed header copy with an unknown
 *                incompatible bit or another version refuses the image (no
 *                open falls back to the older copy or writes anything); an
 *                older such copy is superseded; a torn one is skipped.
 *   issue 15 #10 the header sequence number never wraps: at 2^63 and above
 *                a write open is refused and the file is unchanged.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libimg.h"
#include "format.h"
#include "testio.h"
#include "../helpers/ioborrow.h"
#include "../helpers/tassert.h"

#define CS (64u << 10)
#define VS (4u << 20)

static char dir[] = "/tmp/libimg-rules-XXXXXX";

static char *P(const char *name)
{
	static char buf[4][512];
	static int i;
	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
	return buf[i];
}

static int is_fill(const uint8_t *b, size_t n, uint8_t v)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != v)
			return 0;
	return 1;
}

/* ---- issue 14 #5 ----------------------------------------------------- */

static void no_backing_changes_nothing(void)
{
	struct img_create_opts o = { .virtual_size = 2 * VS, .cluster_size = CS,
				     .flags = IMG_CREATE_OVERWRITE };
	struct img_compact_opts co = { 0 };
	struct img_info in;
	struct img *img;
	uint8_t *b = malloc(2 * VS);

	T_CHECK(b != NULL);
	/* base: 8 MiB of 0xAA; top: a 4 MiB delta over it (smaller than its
	 * base, so growing it would uncover base bytes if nothing hid them). */
	T_CHECK(img_create(P("base.img"), &o) == 0);
	T_CHECK(img_open(P("base.img"), IMG_OPEN_RDWR, &img) == 0);
	memset(b, 0xAA, 2 * VS);
	T_CHECK(img_pwrite(img, b, 2 * VS, 0) == 2 * VS);
	T_CHECK(img_close(img) == 0);
	o.virtual_size = VS;
	o.backing_file = "base.img";
	T_CHECK(img_create(P("top.img"), &o) == 0);

	T_CHECK(img_open(P("top.img"), IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING, &img) == 0);
	T_CHECK(img_resize(img, 2 * VS, 0) == -EROFS);
	T_CHECK(strstr(img_last_error(), "without its backing chain") != NULL);
	T_CHECK(img_close(img) == 0);
	/* With its chain: still 4 MiB.  (Before the fix the NO_BACKING grow
	 * went through and the new 4 MiB showed the base's 0xAA.) */
	T_CHECK(img_open(P("top.img"), 0, &img) == 0);
	T_CHECK(img_info(img, &in) == 0);
	T_CHECK(in.virtual_size == VS);
	if (in.virtual_size == 2 * VS) {
		T_CHECK(img_pread(img, b, VS, VS) == VS);
		T_CHECK(is_fill(b, VS, 0));
	}
	T_CHECK(img_close(img) == 0);

	T_CHECK(img_open(P("top.img"), IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING, &img) == 0);
	T_CHECK(img_resize(img, VS / 2, IMG_RESIZE_DISCARD_DATA) == -EROFS);
	T_CHECK(img_pwrite(img, b, 4096, 0) == -EROFS);
	T_CHECK(img_discard(img, 0, CS) == -EROFS);
	T_CHECK(img_write_zeroes(img, 0, CS) == -EROFS);
	T_CHECK(img_write_compressed(img, b, CS, 0) == -EROFS);
	T_CHECK(img_pwrite_sparse(img, b, CS, 0, 0) == -EROFS);
	T_CHECK(img_compact(img, &co, NULL) == -EROFS);
	T_CHECK(img_fs_trim_free(img, 0, NULL) == -EROFS);
	T_CHECK(img_set_backing(img, "base.img", 0, NULL, NULL) == -EROFS);
	/* A header-only change stays allowed (imgsnap rebase -u). */
	T_CHECK(img_set_backing(img, "base.img", IMG_BACKING_UNSAFE, NULL, NULL) == 0);
	T_CHECK(img_info(img, &in) == 0 && in.virtual_size == VS);
	T_CHECK(img_close(img) == 0);

	/* With its chain: the same 4 MiB of the base's bytes. */
	T_CHECK(img_open(P("top.img"), IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_info(img, &in) == 0 && in.virtual_size == VS);
	T_CHECK(img_pread(img, b, VS, 0) == VS && is_fill(b, VS, 0xAA));
	/* Grown with its chain, the new space reads zeros. */
	T_CHECK(img_resize(img, 2 * VS, 0) == 0);
	T_CHECK(img_pread(img, b, VS, VS) == VS && is_fill(b, VS, 0));
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open(P("top.img"), 0, &img) == 0);
	T_CHECK(img_pread(img, b, 2 * VS, 0) == 2 * VS);
	T_CHECK(is_fill(b, VS, 0xAA) && is_fill(b + VS, VS, 0));
	T_CHECK(img_close(img) == 0);
	free(b);
}

/* ---- issue 14 #8 ----------------------------------------------------- */

static void fill(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(seed * 37 + i * 13 + (i >> 11));
}

static void failed_sync_is_final(void)
{
	struct img_create_opts o = { .virtual_size = VS, .cluster_size = CS };
	/* no zero detection: on the old code it would unmap the lost cluster
	 * and hide the defect */
	struct img_compact_opts co = { .flags = IMG_COMPACT_NO_ZERO_DETECT };
	struct img_check_opts ko = { 0 };
	struct img_check_result res;
	struct img_extent ex;
	struct img_io *mem, *f;
	struct img *img;
	uint8_t *a = malloc(3 * CS), *n1 = malloc(CS), *n5 = malloc(CS), *got = malloc(CS);

	T_CHECK(a && n1 && n5 && got);
	T_CHECK(img_io_mem_new(NULL, 0, &mem) == 0);
	T_CHECK(img_create_io(mem, &o) == 0);
	T_CHECK(imgi_io_fault_new(io_borrow(mem), &f) == 0);
	imgi_io_fault_arm(f, 0, 0, 0, IMG_FAULT_DROP);
	T_CHECK(img_open_io(io_borrow(f), IMG_OPEN_RDWR, &img) == 0);
	/* Durable: clusters 0..2. */
	fill(a, 3 * CS, 1);
	T_CHECK(img_pwrite(img, a, 3 * CS, 0) == 3 * CS);
	T_CHECK(img_flush(img) == 0);
	/* Not yet: an overwrite of cluster 1, a new cluster 5. */
	fill(n1, CS, 2);
	fill(n5, CS, 3);
	T_CHECK(img_pwrite(img, n1, CS, CS) == CS);
	T_CHECK(img_pwrite(img, n5, CS, 5 * CS) == CS);
	/* The data sync fails and the host drops the pages. */
	imgi_io_fault_arm(f, IMG_FAULT_FLUSH, 1, EIO, IMG_FAULT_DROP);
	T_CHECK(img_flush(img) == -EIO);
	T_CHECK(imgi_io_fault_dropped(f) > 0);
	imgi_io_fault_arm(f, 0, 0, 0, IMG_FAULT_DROP);
	/* The handle is failed: nothing more is written or "made durable"
	 * (before the fix the retried flush succeeded and mapped cluster 5,
	 * whose data was gone). */
	T_CHECK(img_flush(img) == -EIO);
	T_CHECK(strstr(img_last_error(), "earlier sync failed") != NULL);
	T_CHECK(img_pwrite(img, n5, CS, 7 * CS) == -EIO);
	T_CHECK(img_discard(img, 0, CS) == -EIO);
	T_CHECK(img_write_zeroes(img, 0, CS) == -EIO);
	T_CHECK(img_resize(img, 2 * VS, 0) == -EIO);
	T_CHECK(img_compact(img, &co, NULL) == -EIO);
	T_CHECK(img_pread(img, got, CS, 0) == CS && !memcmp(got, a, CS));   /* reads work */
	T_CHECK(img_close(img) == -EIO);

	/* Reopened: consistent, each cluster old or new, nothing mapped to
	 * lost data. */
	T_CHECK(img_open_io(io_borrow(mem), IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_check(img, &ko, &res) == 0 && res.corruptions == 0 && res.leaks == 0);
	T_CHECK(img_pread(img, got, CS, 0) == CS && !memcmp(got, a, CS));
	T_CHECK(img_pread(img, got, CS, CS) == CS && (!memcmp(got, a + CS, CS) || !memcmp(got, n1, CS)));
	T_CHECK(img_pread(img, got, CS, 2 * CS) == CS && !memcmp(got, a + 2 * CS, CS));
	T_CHECK(img_pread(img, got, CS, 5 * CS) == CS && (is_fill(got, CS, 0) || !memcmp(got, n5, CS)));
	T_CHECK(img_map(img, 5 * CS, &ex) == 0);
	if (ex.type == IMG_EXTENT_DATA)
		T_CHECK(!memcmp(got, n5, CS));
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open_io(io_borrow(mem), 0, &img) == 0);
	T_CHECK(img_check(img, &ko, &res) == 0 && res.corruptions == 0 && res.leaks == 0);
	T_CHECK(img_close(img) == 0);
	f->ops->close(f);
	mem->ops->close(mem);
	free(a);
	free(n1);
	free(n5);
	free(got);
}

/* The fault backend's DROP mode itself: a failed flush puts the file back
 * as the last successful flush left it (contents and size). */
static void fault_drop_mode(void)
{
	struct img_io *mem, *f;
	uint8_t b[8192], want[8192];
	uint64_t size;

	T_CHECK(img_io_mem_new(NULL, 0, &mem) == 0);
	T_CHECK(imgi_io_fault_new(io_borrow(mem), &f) == 0);
	imgi_io_fault_arm(f, 0, 0, 0, IMG_FAULT_DROP);
	memset(want, 1, sizeof(want));
	T_CHECK(f->ops->pwrite(f, want, sizeof(want), 0) == 0);
	T_CHECK(f->ops->flush(f) == 0);
	memset(b, 2, sizeof(b));
	T_CHECK(f->ops->pwrite(f, b, 4096, 4096) == 0);       /* overwrite */
	T_CHECK(f->ops->pwrite(f, b, 4096, 16384) == 0);      /* extend */
	T_CHECK(f->ops->punch(f, 0, 4096) == 0);
	imgi_io_fault_arm(f, IMG_FAULT_FLUSH, 1, EIO, IMG_FAULT_DROP);
	T_CHECK(f->ops->flush(f) == -EIO);
	T_CHECK(imgi_io_fault_dropped(f) == 3);
	T_CHECK(mem->ops->size(mem, &size) == 0 && size == sizeof(want));
	T_CHECK(mem->ops->pread(mem, b, sizeof(b), 0) == 0 && !memcmp(b, want, sizeof(want)));
	/* Without DROP a failed flush drops nothing (the old model). */
	imgi_io_fault_arm(f, 0, 0, 0, 0);
	T_CHECK(f->ops->pwrite(f, b, 4096, 16384) == 0);
	imgi_io_fault_arm(f, IMG_FAULT_FLUSH, 1, EIO, 0);
	T_CHECK(f->ops->flush(f) == -EIO);
	T_CHECK(mem->ops->size(mem, &size) == 0 && size == 16384 + 4096);
	f->ops->close(f);
	mem->ops->close(mem);
}

/* ---- issue 14 #9 and issue 15 #10: header copies ---------------------- */

/* A clean 4 MiB image with data, as bytes. */
static uint8_t *clean_image(size_t *len)
{
	struct img_create_opts o = { .virtual_size = VS, .cluster_size = CS };
	struct img_io *mem;
	struct img *img;
	uint8_t buf[4096];
	const void *d;
	uint8_t *out;

	memset(buf, 0x77, sizeof(buf));
	T_CHECK(img_io_mem_new(NULL, 0, &mem) == 0);
	T_CHECK(img_create_io(mem, &o) == 0);
	T_CHECK(img_open_io(io_borrow(mem), IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_pwrite(img, buf, sizeof(buf), CS) == sizeof(buf));
	T_CHECK(img_close(img) == 0);
	d = img_io_mem_data(mem, len);
	out = malloc(*len);
	memcpy(out, d, *len);
	mem->ops->close(mem);
	return out;
}

/* The slot in force (higher seq) of a clean image. */
static int slot_in_force(const uint8_t *b)
{
	struct imgi_header a, c;
	T_CHECK(imgi_header_decode(b, &a, NULL, 0) == 0);
	T_CHECK(imgi_header_decode(b + IMG_HEADER_SLOT, &c, NULL, 0) == 0);
	return c.seq > a.seq;
}

/* Rewrite slot s from the header in slot from, with seq, version and an
 * extra incompat bit. */
static void put_copy(uint8_t *b, int s, int from, uint64_t seq, uint32_t version, uint64_t incompat)
{
	struct imgi_header h;
	T_CHECK(imgi_header_decode(b + from * IMG_HEADER_SLOT, &h, NULL, 0) == 0);
	h.seq = seq;
	h.version = version;
	h.incompat |= incompat;
	imgi_header_encode(&h, b + s * IMG_HEADER_SLOT);
}

/* Opens a copy of bytes with flags: the result, and whether the bytes
 * are unchanged afterwards (closing what opened). */
static int open_copy(const uint8_t *bytes, size_t len, unsigned flags, int *unchanged)
{
	struct img_io *mem;
	struct img *img = NULL;
	const void *d;
	size_t n;
	int r;

	T_CHECK(img_io_mem_new(bytes, len, &mem) == 0);
	r = img_open_io(io_borrow(mem), flags, &img);
	if (!r)
		img_close(img);
	d = img_io_mem_data(mem, &n);
	*unchanged = n == len && !memcmp(d, bytes, len);
	mem->ops->close(mem);
	return r;
}

static void newer_header_refuses(void)
{
	static const unsigned modes[] = { 0, IMG_OPEN_RDWR, IMG_OPEN_CHECK,
					  IMG_OPEN_RDWR | IMG_OPEN_CHECK };
	size_t len;
	uint8_t *orig = clean_image(&len), *b = malloc(len);
	int cur = slot_in_force(orig), same;
	struct imgi_header h;

	T_CHECK(imgi_header_decode(orig + cur * IMG_HEADER_SLOT, &h, NULL, 0) == 0);
	for (int kind = 0; kind < 2; kind++) {
		/* The other slot gets a newer copy from a newer writer: an
		 * unknown incompat bit, or version 2. */
		memcpy(b, orig, len);
		put_copy(b, 1 - cur, cur, h.seq + 1, kind ? 2 : 1, kind ? 0 : 1ull << 40);
		for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
			T_CHECK(open_copy(b, len, modes[m], &same) == -EOPNOTSUPP);
			T_CHECK(strstr(img_last_error(), "newer libimg") != NULL);
			T_CHECK(same);
		}
	}
	/* An older copy with an unknown bit is superseded: the image opens,
	 * read-only and for writing. */
	memcpy(b, orig, len);
	put_copy(b, 1 - cur, cur, h.seq - 1, 1, 1ull << 40);
	T_CHECK(open_copy(b, len, 0, &same) == 0 && same);
	T_CHECK(open_copy(b, len, IMG_OPEN_RDWR, &same) == 0);
	/* A newer copy with an unknown bit but a bad crc is torn: skipped. */
	memcpy(b, orig, len);
	put_copy(b, 1 - cur, cur, h.seq + 1, 1, 1ull << 40);
	b[(1 - cur) * IMG_HEADER_SLOT + 64] ^= 1;
	T_CHECK(open_copy(b, len, 0, &same) == 0 && same);
	free(b);
	free(orig);
}

static void seq_never_wraps(void)
{
	size_t len;
	uint8_t *orig = clean_image(&len), *b = malloc(len);
	int cur = slot_in_force(orig), same;
	struct img_io *mem;
	struct img_info in;
	struct img *img;
	uint8_t d[4096];

	/* At the very end of the range, and at 2^63: read-only only. */
	for (int k = 0; k < 2; k++) {
		uint64_t top = k ? IMG_SEQ_WRITE_LIMIT : UINT64_MAX;
		memcpy(b, orig, len);
		put_copy(b, cur, cur, top, 1, 0);
		put_copy(b, 1 - cur, cur, top - 1, 1, 0);
		T_CHECK(open_copy(b, len, IMG_OPEN_RDWR, &same) == -EROFS);
		T_CHECK(strstr(img_last_error(), "sequence number") != NULL);
		T_CHECK(same);
		T_CHECK(open_copy(b, len, IMG_OPEN_RDWR | IMG_OPEN_CHECK, &same) == -EROFS && same);
		T_CHECK(img_io_mem_new(b, len, &mem) == 0);
		T_CHECK(img_open_io(mem, 0, &img) == 0);
		T_CHECK(img_info(img, &in) == 0 && in.header_seq == top && !in.dirty);
		T_CHECK(img_pread(img, d, sizeof(d), CS) == sizeof(d) && is_fill(d, sizeof(d), 0x77));
		T_CHECK(img_close(img) == 0);
	}
	/* Just below: a writer opens and closes normally, past 2^63. */
	memcpy(b, orig, len);
	put_copy(b, cur, cur, IMG_SEQ_WRITE_LIMIT - 1, 1, 0);
	put_copy(b, 1 - cur, cur, IMG_SEQ_WRITE_LIMIT - 2, 1, 0);
	T_CHECK(img_io_mem_new(b, len, &mem) == 0);
	T_CHECK(img_open_io(io_borrow(mem), IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_pwrite(img, d, sizeof(d), 0) == sizeof(d));
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open_io(mem, 0, &img) == 0);
	T_CHECK(img_info(img, &in) == 0 && in.header_seq > IMG_SEQ_WRITE_LIMIT && !in.dirty);
	T_CHECK(img_close(img) == 0);
	free(b);
	free(orig);
}

static const struct t_case cases[] = {
	T_CASE(no_backing_changes_nothing), T_CASE(failed_sync_is_final), T_CASE(fault_drop_mode),
	T_CASE(newer_header_refuses), T_CASE(seq_never_wraps),
};

int main(int argc, char **argv)
{
	int r;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	r = T_MAIN(argc, argv, cases);
	{
		char cmd[600];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (!getenv("KEEP") && system(cmd)) {}
	}
	return r;
}
