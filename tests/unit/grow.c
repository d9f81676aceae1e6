/* SPDX-License-Identifier: MIT */
/* Growth beyond the BAT's capacity relocates the data clusters in its way;
 * growth within it only writes the header; shrink refuses to drop data
 * unless asked, zeroes the tail of the new last cluster, and gives the
 * host file's tail back. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libimg.h"
#include "testio.h"
#include "../helpers/ioborrow.h"
#include "../helpers/tassert.h"

#define CS (64u << 10)

static void pattern(uint8_t *b, uint64_t v) { memset(b, (int)(v * 37 + 1), CS); b[0] = (uint8_t)v; }

/* A temporary image of 4 MiB; its path in path (a mkstemp template). */
static void new_image(char *path)
{
	struct img_create_opts o = { .virtual_size = 4u << 20, .cluster_size = CS, .flags = IMG_CREATE_OVERWRITE };
	int fd = mkstemp(path);

	T_ASSERT(fd >= 0);
	close(fd);
	T_CHECK(img_create(path, &o) == 0);
}

/* Growth within the BAT's capacity, then beyond it; returns the image open
 * read-write at 2 GiB with clusters 0..63 and the last one written. */
static struct img *grown(char *path)
{
	struct img *img;
	struct img_info a, b;
	struct img_check_result cr;
	struct img_extent ex;
	uint8_t buf[CS], want[CS];

	new_image(path);
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	/* 64 clusters of data: they sit right after the one-cluster BAT. */
	for (uint64_t v = 0; v < 64; v++) {
		pattern(buf, v);
		T_CHECK(img_pwrite(img, buf, CS, v * CS) == CS);
	}
	img_info(img, &a);
	T_CHECK(a.bat_capacity == 16ull * 508 * CS);          /* 508 MiB */

	/* Within capacity: O(1), metadata unchanged. */
	T_CHECK(img_resize(img, 100u << 20, 0) == 0);
	img_info(img, &b);
	T_CHECK(b.virtual_size == 100u << 20 && b.metadata_size == a.metadata_size);

	/* Beyond capacity: the BAT grows into the data, which moves. */
	T_CHECK(img_resize(img, 2ull << 30, 0) == 0);
	img_info(img, &b);
	T_CHECK(b.virtual_size == 2ull << 30);
	T_CHECK(b.metadata_size > a.metadata_size);
	T_CHECK(b.bat_capacity >= 2ull << 30);
	T_CHECK(b.allocated_clusters == 64);
	for (uint64_t v = 0; v < 64; v++) {
		pattern(want, v);
		T_CHECK(img_pread(img, buf, CS, v * CS) == CS && !memcmp(buf, want, CS));
		T_CHECK(img_map(img, v * CS, &ex) == 0 && ex.type == IMG_EXTENT_DATA &&
		      ex.host_offset >= b.metadata_size);
	}
	/* Write near the new end, reopen, check. */
	pattern(buf, 999);
	T_CHECK(img_pwrite(img, buf, CS, (2ull << 30) - CS) == CS);
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_check(img, NULL, &cr) == 0 && cr.corruptions == 0 && cr.leaks == 0);
	pattern(want, 999);
	T_CHECK(img_pread(img, buf, CS, (2ull << 30) - CS) == CS && !memcmp(buf, want, CS));
	pattern(want, 5);
	T_CHECK(img_pread(img, buf, CS, 5 * CS) == CS && !memcmp(buf, want, CS));
	return img;
}

/* Shrink of the grown image: refused over data, then allowed; bytes past
 * the new end are zero after growing again.  Closes img. */
static void shrunk(struct img *img, const char *path)
{
	struct img_info b;
	struct img_check_result cr;
	uint8_t buf[CS], want[CS];

	T_CHECK(img_resize(img, 1u << 20, 0) == -ENOTEMPTY);
	T_CHECK(strstr(img_last_error(), "hold data") != NULL);
	T_CHECK(img_resize(img, 17ull * CS, IMG_RESIZE_DISCARD_DATA) == 0);
	/* Only the tail of the new last cluster would go: still refused. */
	T_CHECK(img_resize(img, (1u << 20) + 512, 0) == -ENOTEMPTY);
	T_CHECK(strstr(img_last_error(), "past the new end") != NULL);
	T_CHECK(img_resize(img, (1u << 20) + 512, IMG_RESIZE_DISCARD_DATA) == 0);
	img_info(img, &b);
	T_CHECK(b.virtual_size == (1u << 20) + 512 && b.allocated_clusters == 17);
	T_CHECK(b.file_size == b.metadata_size + 17ull * CS);   /* tail given back */
	T_CHECK(img_resize(img, 8u << 20, 0) == 0);
	T_CHECK(img_pread(img, buf, CS, 16 * CS) == CS);
	pattern(want, 16);
	T_CHECK(!memcmp(buf, want, 512));
	for (unsigned i = 512; i < CS; i++)
		if (buf[i]) {
			T_CHECK(!"byte past the shrunk end is not zero");
			break;
		}
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open(path, 0, &img) == 0);
	T_CHECK(img_check(img, NULL, &cr) == 0 && cr.corruptions == 0 && cr.leaks == 0);
	img_close(img);
}

static void grow_beyond_bat(void)
{
	char path[] = "/tmp/libimg-grow-XXXXXX";

	T_CHECK(img_close(grown(path)) == 0);
	unlink(path);
}

static void shrink(void)
{
	char path[] = "/tmp/libimg-grow-XXXXXX";

	shrunk(grown(path), path);
	unlink(path);
}

/* The in-memory BAT grows from a small array (calloc) to a mapped one
 * (8 MiB at 64 GiB), then to a larger mapping (the pages move): the
 * entries come along, the new ones read as unallocated.  From the image
 * grown and shrunk as in the two cases above. */
static void bat_to_mapping(void)
{
	char path[] = "/tmp/libimg-grow-XXXXXX";
	struct img *img;
	struct img_check_result cr;
	struct img_extent ex;
	uint8_t buf[CS], want[CS];

	shrunk(grown(path), path);
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_resize(img, 1ull << 30, IMG_RESIZE_DISCARD_DATA) == 0);
	pattern(buf, 7);
	T_CHECK(img_pwrite(img, buf, CS, (1ull << 30) - CS) == CS);
	T_CHECK(img_resize(img, 64ull << 30, 0) == 0);
	pattern(buf, 8);
	T_CHECK(img_pwrite(img, buf, CS, (64ull << 30) - CS) == CS);
	T_CHECK(img_resize(img, 256ull << 30, 0) == 0);
	pattern(buf, 9);
	T_CHECK(img_pwrite(img, buf, CS, (256ull << 30) - CS) == CS);
	for (int pass = 0; pass < 2; pass++) {
		const uint64_t at[3] = { (1ull << 30) - CS, (64ull << 30) - CS, (256ull << 30) - CS };
		for (int k = 0; k < 3; k++) {
			pattern(want, (uint64_t)(7 + k));
			T_CHECK(img_pread(img, buf, CS, at[k]) == CS && !memcmp(buf, want, CS));
		}
		T_CHECK(img_map(img, 128ull << 30, &ex) == 0 && ex.type == IMG_EXTENT_UNALLOCATED);
		T_CHECK(img_pread(img, buf, CS, 2ull << 30) == CS && buf[0] == 0 && buf[CS - 1] == 0);
		T_CHECK(img_check(img, NULL, &cr) == 0 && cr.corruptions == 0 && cr.leaks == 0);
		T_CHECK(img_close(img) == 0);
		T_CHECK(img_open(path, 0, &img) == 0);
	}
	img_close(img);
	unlink(path);
}

static void bad_sizes(void)
{
	char path[] = "/tmp/libimg-grow-XXXXXX";
	struct img *img;

	new_image(path);
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_resize(img, 1000, 0) == -EINVAL);
	T_CHECK(img_resize(img, 0, 0) == -EINVAL);
	T_CHECK(img_resize(img, 1ull << 60, 0) == -EINVAL);
	img_close(img);
	T_CHECK(img_open(path, 0, &img) == 0);
	T_CHECK(img_resize(img, 16u << 20, 0) == -EROFS);
	img_close(img);
	unlink(path);
}

/* Issue 22 #0 */
static void grow_crash(void)
{
	struct img_create_opts o = { .virtual_size = 4u << 20, .cluster_size = CS, .flags = IMG_CREATE_OVERWRITE };
	struct img *img;

	/* Issue 22 #0 (FORMAT.md 2, 6 rule 11): an empty image grown past its
	 * BAT's capacity (the new BAT lies past the end of the file) keeps a
	 * file at least data_offset long at every crash point: each state a
	 * crash can leave opens, with the old size or the new one. */
	for (uint64_t n = 1, crashed = 1; crashed; n++) {
		const uint64_t old_size = 4u << 20, new_size = 2ull << 30;
		struct img_io *cio, *m;
		uint64_t base;
		imgi_io_crash_new(NULL, 0, &cio);
		T_CHECK(img_create_io(cio, &o) == 0);
		base = imgi_io_crash_events(cio);
		imgi_io_crash_arm(cio, base + n);   /* the nth call after creation */
		if (img_open_io(io_borrow(cio), IMG_OPEN_RDWR, &img) == 0) {
			img_resize(img, new_size, 0);
			img_close(img);
		}
		crashed = (uint64_t)imgi_io_crash_crashed(cio);
		for (int mode = 0; mode < 6; mode++) {
			struct img_info in;
			T_CHECK(imgi_io_crash_materialize(cio, mode < 2 ? (enum imgi_crash_mode)mode :
						       IMG_CRASH_RANDOM, (uint64_t)mode, NULL, &m) == 0);
			if (img_open_io(m, 0, &img) != 0) {
				T_ERROR("crash at call %llu (mode %d): does not open",
					(unsigned long long)n, mode);
				continue;
			}
			img_info(img, &in);
			T_CHECK(in.virtual_size == old_size || in.virtual_size == new_size);
			T_CHECK(crashed || in.virtual_size == new_size);
			img_close(img);
		}
		cio->ops->close(cio);
	}
}

static void create_crash(void)
{
	struct img_create_opts o = { .virtual_size = 4u << 20, .cluster_size = CS, .flags = IMG_CREATE_OVERWRITE };
	struct img *img;

	/* The same for the creation itself (img_create_io writes in place):
	 * a crash leaves no image or a whole one, never a header naming a
	 * file shorter than its metadata area (the size is durable first). */
	for (uint64_t n = 1, crashed = 1; crashed; n++) {
		struct img_io *cio, *m;
		imgi_io_crash_new(NULL, 0, &cio);
		imgi_io_crash_arm(cio, n);
		img_create_io(cio, &o);
		crashed = (uint64_t)imgi_io_crash_crashed(cio);
		for (int mode = 0; mode < 6; mode++) {
			int r;
			T_CHECK(imgi_io_crash_materialize(cio, mode < 2 ? (enum imgi_crash_mode)mode :
						       IMG_CRASH_RANDOM, (uint64_t)mode, NULL, &m) == 0);
			r = img_open_io(m, 0, &img);
			if (r != 0 && r != -EMEDIUMTYPE)
				T_ERROR("creation, crash at call %llu (mode %d): does not open",
					(unsigned long long)n, mode);
			if (!r)
				img_close(img);
			T_CHECK(crashed || r == 0);
		}
		cio->ops->close(cio);
	}
}

/* Issue 22 (FORMAT.md 4, 5): a shrink past a BAT block whose entries an
 * earlier transaction in the log still maps.  Every state a crash leaves
 * opens, and a check finds no corruption in it: replaying the log goes
 * through the older transaction (entries in a block now past the virtual
 * size) before the one that clears them, and only the result counts. */
static void shrink_crash_(int in_place)
{
	const uint64_t old_size = 64u << 20, new_size = 16u << 20;
	struct img_create_opts o = { .virtual_size = old_size, .cluster_size = CS,
				     .flags = IMG_CREATE_OVERWRITE };
	uint8_t buf[CS];

	for (uint64_t n = 1, crashed = 1; crashed; n++) {
		struct img_io *cio, *m;
		struct img *img;
		uint64_t base;
		imgi_io_crash_new(NULL, 0, &cio);
		T_CHECK(img_create_io(cio, &o) == 0);
		T_CHECK(img_open_io(io_borrow(cio), IMG_OPEN_RDWR, &img) == 0);
		for (uint64_t v = 0; v < 4; v++) {      /* block 0 and block 1 */
			pattern(buf, v);
			T_CHECK(img_pwrite(img, buf, CS, v * CS) == CS);
			T_CHECK(img_pwrite(img, buf, CS, (600 + v) * CS) == CS);
		}
		T_CHECK(img_flush(img) == 0);    /* in the log, not in place */
		if (in_place) {                   /* in place, the log empty */
			img_close(img);
			T_CHECK(img_open_io(io_borrow(cio), IMG_OPEN_RDWR, &img) == 0);
		}
		base = imgi_io_crash_events(cio);
		imgi_io_crash_arm(cio, base + n);
		if (img_resize(img, new_size, IMG_RESIZE_DISCARD_DATA) == 0)
			img_flush(img);
		img_close(img);
		crashed = (uint64_t)imgi_io_crash_crashed(cio);
		for (int mode = 0; mode < 6; mode++) {
			struct img_check_result cr;
			struct img_info in;
			T_CHECK(imgi_io_crash_materialize(cio, mode < 2 ? (enum imgi_crash_mode)mode :
						       IMG_CRASH_RANDOM, (uint64_t)mode, NULL, &m) == 0);
			if (img_open_io(io_borrow(m), IMG_OPEN_CHECK, &img) != 0) {
				T_ERROR("shrink, crash at call %llu (mode %d): does not open: %s",
					(unsigned long long)n, mode, img_last_error());
				m->ops->close(m);
				continue;
			}
			memset(&cr, 0, sizeof(cr));
			T_CHECK(img_check(img, NULL, &cr) == 0);
			if (cr.corruptions)
				T_ERROR("shrink, crash at call %llu (mode %d): %llu corruptions",
					(unsigned long long)n, mode, (unsigned long long)cr.corruptions);
			img_info(img, &in);
			T_CHECK(in.virtual_size == old_size || in.virtual_size == new_size);
			pattern(buf, 3);
			{
				uint8_t got[CS];
				T_CHECK(img_pread(img, got, CS, 3 * CS) == CS && !memcmp(got, buf, CS));
			}
			img_close(img);
			m->ops->close(m);
		}
		cio->ops->close(cio);
	}
}

/* Issue 22 (FORMAT.md 6 rule 11): compaction that frees every data
 * cluster truncates the file to its metadata area, never below it.  Each
 * crash state opens and checks without corruption.  zeros: allocated
 * clusters that hold zeros (the zero detection frees them); compressed:
 * payloads whose entries were discarded (their host cluster is the tail). */
static void compact_crash_(int compressed)
{
	struct img_create_opts o = { .virtual_size = 4u << 20, .cluster_size = CS,
				     .flags = IMG_CREATE_OVERWRITE };
	struct img_compact_opts co = { 0 };
	uint8_t buf[CS];

	for (uint64_t n = 1, crashed = 1; crashed; n++) {
		struct img_io *cio, *m;
		struct img *img;
		uint64_t base;
		imgi_io_crash_new(NULL, 0, &cio);
		T_CHECK(img_create_io(cio, &o) == 0);
		T_CHECK(img_open_io(io_borrow(cio), IMG_OPEN_RDWR, &img) == 0);
		for (uint64_t v = 0; v < 6; v++) {
			if (compressed) {
				memset(buf, 'c', CS);
				T_CHECK(img_write_compressed(img, buf, CS, v * CS) == 1);
			} else {
				memset(buf, 0, CS);
				buf[0] = 1;
				T_CHECK(img_pwrite(img, buf, CS, v * CS) == CS);
				buf[0] = 0;              /* allocated, now all zero */
				T_CHECK(img_pwrite(img, buf, 1, v * CS) == 1);
			}
		}
		if (compressed)
			T_CHECK(img_discard(img, 0, 6 * CS) == 0);
		T_CHECK(img_flush(img) == 0);
		base = imgi_io_crash_events(cio);
		imgi_io_crash_arm(cio, base + n);
		if (img_compact(img, &co, NULL) == 0)
			img_flush(img);
		img_close(img);
		crashed = (uint64_t)imgi_io_crash_crashed(cio);
		for (int mode = 0; mode < 6; mode++) {
			struct img_check_result cr;
			T_CHECK(imgi_io_crash_materialize(cio, mode < 2 ? (enum imgi_crash_mode)mode :
						       IMG_CRASH_RANDOM, (uint64_t)mode, NULL, &m) == 0);
			if (img_open_io(io_borrow(m), IMG_OPEN_CHECK, &img) != 0) {
				T_ERROR("compact, crash at call %llu (mode %d): does not open: %s",
					(unsigned long long)n, mode, img_last_error());
				m->ops->close(m);
				continue;
			}
			memset(&cr, 0, sizeof(cr));
			T_CHECK(img_check(img, NULL, &cr) == 0 && cr.corruptions == 0);
			if (!crashed) {                  /* done: cut to the metadata */
				struct img_info in;
				T_CHECK(img_info(img, &in) == 0 && in.file_size == in.metadata_size);
			}
			img_close(img);
			m->ops->close(m);
		}
		cio->ops->close(cio);
	}
}

static void compact_crash_zeros(void) { compact_crash_(0); }
static void compact_crash_compressed(void) { compact_crash_(1); }
static void shrink_crash(void) { shrink_crash_(0); }
static void shrink_crash_in_place(void) { shrink_crash_(1); }

static const struct t_case cases[] = {
	T_CASE(grow_beyond_bat), T_CASE(shrink), T_CASE(bat_to_mapping), T_CASE(bad_sizes),
	T_CASE(grow_crash), T_CASE(create_crash), T_CASE(shrink_crash), T_CASE(shrink_crash_in_place),
	T_CASE(compact_crash_zeros), T_CASE(compact_crash_compressed),
};

int main(int argc, char **argv)
{
	return T_MAIN(argc, argv, cases);
}
