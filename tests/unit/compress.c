/* SPDX-License-Identifier: MIT */
/* lz4-compressed clusters (FORMAT.md 4.2): round trip, incompressible data
 * stored normally, writes and discards into compressed clusters, reopen and
 * check, compaction reclaiming rewritten payloads, shrink/grow, and hostile
 * payloads (bad crc, malformed lz4, lengths, overlapping or misplaced
 * entries) refused with -EUCLEAN and a message, never read past.  Named
 * sub-tests (tassert.h), each on an image of its own (make_image). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libimg.h"
#include "format.h"
#include "../helpers/tassert.h"

#define CS (64u << 10)
#define NC 64u
#define VS (NC * CS)
static char path[sizeof("/tmp/libimg-compress-XXXXXX")];
/* what the image holds */
static uint8_t want[VS], got[VS];

static void text(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)("abcdefgh"[(i / 64 + seed) % 8] + (i % 7 == 0 ? seed % 5 : 0));
}

static uint64_t bat_off(void)
{
	uint8_t slot[IMG_HEADER_SLOT];
	struct imgi_header h;
	char why[160];
	int fd = open(path, O_RDONLY);
	T_CHECK(pread(fd, slot, sizeof(slot), 0) == (ssize_t)sizeof(slot));
	close(fd);
	if (imgi_header_decode(slot, &h, why, sizeof(why)))
		T_CHECK(imgi_header_decode(slot + 0, &h, why, sizeof(why)) == 0);
	return h.bat_offset;
}

/* Read or replace BAT entry v in place (block 0 only; image closed
 * clean, so the BAT in place is current). */
static uint64_t get_entry(unsigned v)
{
	uint8_t blk[IMG_BLOCK_SIZE];
	int fd = open(path, O_RDONLY);
	T_CHECK(pread(fd, blk, sizeof(blk), (off_t)bat_off()) == (ssize_t)sizeof(blk));
	close(fd);
	return get_le64(blk + IMG_BAT_HDR + 8 * v);
}

static void set_entry(unsigned v, uint64_t e)
{
	uint8_t blk[IMG_BLOCK_SIZE];
	uint64_t ents[IMG_ENTRIES_PER_BLOCK], seq;
	int fd = open(path, O_RDWR);
	off_t off = (off_t)bat_off();
	T_CHECK(pread(fd, blk, sizeof(blk), off) == (ssize_t)sizeof(blk));
	T_CHECK(imgi_bat_block_decode(blk, 0, ents, &seq, NULL, 0) == 0);
	ents[v] = e;
	imgi_bat_block_encode(0, seq, ents, blk);
	T_CHECK(pwrite(fd, blk, sizeof(blk), off) == (ssize_t)sizeof(blk));
	close(fd);
}

static void poke(uint64_t off, const void *b, size_t n)
{
	int fd = open(path, O_RDWR);
	T_CHECK(pwrite(fd, b, n, (off_t)off) == (ssize_t)n);
	close(fd);
}

static void peek(uint64_t off, void *b, size_t n)
{
	int fd = open(path, O_RDONLY);
	T_CHECK(pread(fd, b, n, (off_t)off) == (ssize_t)n);
	close(fd);
}

/* A new image at path (a new name) with every cluster written through
 * img_write_compressed: 7 of 8 compress, each 8th is incompressible and
 * stored normally.  Closed. */
static void make_image(void)
{
	struct img_create_opts o = { .virtual_size = VS, .cluster_size = CS, .flags = IMG_CREATE_OVERWRITE };
	struct img *img;
	int fd;

	strcpy(path, "/tmp/libimg-compress-XXXXXX");
	fd = mkstemp(path);
	T_ASSERT(fd >= 0);
	close(fd);
	T_CHECK(img_create(path, &o) == 0);
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	for (unsigned v = 0; v < NC; v++) {
		text(want + v * CS, CS, v);
		if (v % 8 == 7)   /* incompressible: stored normally */
			for (unsigned i = 0; i < CS; i++)
				want[v * CS + i] = (uint8_t)(rand() >> 7);
		T_CHECK(img_write_compressed(img, want + v * CS, CS, (uint64_t)v * CS) == (v % 8 != 7));
	}
	T_CHECK(img_write_compressed(img, want, CS, 512) == -EINVAL);
	T_CHECK(img_write_compressed(img, want, 4096, 0) == -EINVAL);
	T_CHECK(img_close(img) == 0);
}

static void round_trip(void)
{
	struct img_check_result cr;
	struct img_info in;
	struct img_extent ex;
	struct img *img;

	make_image();
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	img_info(img, &in);
	T_CHECK(in.compressed_clusters == NC - NC / 8 && in.allocated_clusters == NC / 8);
	T_CHECK((in.incompat_features & 2) != 0);
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
	T_CHECK(img_map(img, 0, &ex) == 0 && ex.type == IMG_EXTENT_COMPRESSED && ex.length == CS);
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
	T_CHECK(img_check(img, NULL, &cr) == 0 && cr.corruptions == 0 && cr.leaks == 0);
	/* Ranges starting and ending anywhere: runs of compressed clusters
	 * read with one read of their payloads, whole ones decompressed in
	 * place, partial ones through a bounce buffer. */
	for (unsigned i = 0; i < 300; i++) {
		uint64_t off = (uint64_t)rand() % VS, len = 1 + (uint64_t)rand() % (VS - off);
		if (i % 3 == 0)
			off -= off % CS;
		if (i % 5 == 0)
			len = (VS - off) < 7 * CS ? VS - off : 7 * CS;
		memset(got, 0xee, len);
		T_CHECK(img_pread(img, got, len, off) == (ssize_t)len && !memcmp(got, want + off, len));
	}
	T_CHECK(img_close(img) == 0);
	unlink(path);
}

/* A write into a compressed cluster stores it uncompressed; partial and
 * whole discard / zeroes. */
static void writes_into_compressed(void)
{
	struct img_info in;
	struct img *img;

	make_image();
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	memset(want + 3 * CS + 1000, 0x5A, 3000);
	T_CHECK(img_pwrite(img, want + 3 * CS + 1000, 3000, 3 * CS + 1000) == 3000);
	T_CHECK(img_discard(img, 5 * CS + 4096, 8192) == 0);
	memset(want + 5 * CS + 4096, 0, 8192);
	T_CHECK(img_write_zeroes(img, 6 * CS, CS) == 0);
	memset(want + 6 * CS, 0, CS);
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
	img_info(img, &in);
	T_CHECK(in.compressed_clusters == NC - NC / 8 - 3);
	T_CHECK(img_close(img) == 0);
	unlink(path);
}

/* Rewrite most compressed clusters: compaction reclaims their payloads'
 * space; compact --compress; shrink into a compressed cluster and grow
 * back. */
static void compaction_and_resize(void)
{
	struct img_compact_opts co = { 0 };
	struct img_compact_stats st;
	struct img_check_result cr;
	struct img_info in;
	struct img *img;
	uint64_t size_full;

	make_image();
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	for (unsigned v = 8; v < NC; v++) {
		if (v % 8 == 7 || v % 3 == 0)
			continue;
		want[v * CS] ^= 1;
		T_CHECK(img_pwrite(img, want + v * CS, 1, (uint64_t)v * CS) == 1);
	}
	T_CHECK(img_compact(img, NULL, &st) == 0);
	img_info(img, &in);
	size_full = in.file_size;
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
	/* compact --compress: the allocated clusters become compressed */
	co.flags = IMG_COMPACT_COMPRESS;
	T_CHECK(img_compact(img, &co, &st) == 0 && st.clusters_compressed > 10);
	img_info(img, &in);
	T_CHECK(in.file_size < size_full / 2);
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
	/* Shrink into a compressed cluster and grow back: zeros past the cut. */
	T_CHECK(img_resize(img, VS - CS / 2, IMG_RESIZE_DISCARD_DATA) == 0);
	T_CHECK(img_resize(img, VS, 0) == 0);
	memset(want + VS - CS / 2, 0, CS / 2);
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open(path, 0, &img) == 0);
	T_CHECK(img_check(img, NULL, &cr) == 0 && cr.corruptions == 0 && cr.leaks == 0);
	T_CHECK(img_pread(img, got, VS, 0) == VS && !memcmp(got, want, VS));
	T_CHECK(img_close(img) == 0);
	unlink(path);
}

/* Hostile payloads.  Cluster 1 is compressed (state 3). */
static void hostile_payloads(void)
{
	static uint8_t saved[4096];
	struct img *img;
	uint64_t e;

	make_image();
	e = get_entry(1);
	T_CHECK(IMG_E_STATE(e) == IMG_E_COMP);
	peek(IMG_C_SECTOR(e) * 512, saved, sizeof(saved));
	{
		uint8_t b[16];
		memcpy(b, saved, 16);
		b[12] ^= 0xFF;                  /* lz4 data: crc catches it */
		poke(IMG_C_SECTOR(e) * 512, b, 16);
		T_CHECK(img_open(path, 0, &img) == 0);
		T_CHECK(img_pread(img, got, CS, CS) == -EUCLEAN);
		T_CHECK(strstr(img_last_error(), "compressed cluster 1: bad crc32c") != NULL);
		T_CHECK(img_pread(img, got, CS, 0) == CS);   /* others still read */
		T_CHECK(img_close(img) == 0);
		/* malformed lz4 with a matching crc */
		{
			uint32_t clen = get_le32(saved);
			uint8_t *p = malloc(clen + 8);
			peek(IMG_C_SECTOR(e) * 512, p, clen + 8);
			memset(p + 8, 0xF0, clen > 64 ? 64 : clen);   /* huge literal runs */
			put_le32(p + 4, imgi_crc32c(0, p + 8, clen));
			poke(IMG_C_SECTOR(e) * 512, p, clen + 8);
			T_CHECK(img_open(path, 0, &img) == 0);
			T_CHECK(img_pread(img, got, CS, CS) == -EUCLEAN);
			T_CHECK(strstr(img_last_error(), "lz4 data") != NULL);
			T_CHECK(img_close(img) == 0);
			free(p);
		}
		/* a length past its sectors */
		put_le32(b, 0x7FFFFFFF);
		poke(IMG_C_SECTOR(e) * 512, b, 4);
		T_CHECK(img_open(path, 0, &img) == 0);
		T_CHECK(img_pread(img, got, CS, CS) == -EUCLEAN);
		T_CHECK(strstr(img_last_error(), "does not fit") != NULL);
		T_CHECK(img_close(img) == 0);
		poke(IMG_C_SECTOR(e) * 512, saved, sizeof(saved));
	}
	unlink(path);
}

/* Entries: overlapping payloads, a payload crossing a cluster, one as
 * long as a cluster, one inside the metadata. */
static void hostile_entries(void)
{
	struct img_check_result cr;
	struct img *img;
	uint64_t e, e2;

	make_image();
	e = get_entry(1);
	e2 = get_entry(2);
	T_CHECK(IMG_E_STATE(e) == IMG_E_COMP);
	set_entry(2, IMG_C_MAKE(IMG_C_SECTOR(e) + 1, IMG_C_COUNT(e2)));
	T_CHECK(img_open(path, 0, &img) == -EUCLEAN);
	T_CHECK(strstr(img_last_error(), "overlaps another compressed payload") != NULL);
	T_CHECK(img_open(path, IMG_OPEN_RDWR | IMG_OPEN_CHECK, &img) == 0);
	{
		struct img_check_opts ko = { .flags = IMG_CHECK_REPAIR };
		T_CHECK(img_check(img, &ko, &cr) == 0 && cr.corruptions >= 1 &&
		      cr.corruptions == cr.corruptions_fixed);
	}
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open(path, 0, &img) == 0);
	T_CHECK(img_pread(img, got, CS, CS) == CS && !memcmp(got, want + CS, CS));
	T_CHECK(img_close(img) == 0);
	set_entry(2, IMG_C_MAKE((IMG_C_SECTOR(e) | (CS / 512 - 1)), 2));
	T_CHECK(img_open(path, 0, &img) == -EUCLEAN);
	T_CHECK(strstr(img_last_error(), "crossing") != NULL);
	set_entry(2, IMG_C_MAKE(IMG_C_SECTOR(e) & ~(uint64_t)(CS / 512 - 1), CS / 512));
	T_CHECK(img_open(path, 0, &img) == -EUCLEAN);
	set_entry(2, IMG_C_MAKE(8, 1));
	T_CHECK(img_open(path, 0, &img) == -EUCLEAN);
	T_CHECK(strstr(img_last_error(), "metadata") != NULL);
	set_entry(2, 0);
	unlink(path);
}

static const struct t_case cases[] = {
	T_CASE(round_trip), T_CASE(writes_into_compressed), T_CASE(compaction_and_resize),
	T_CASE(hostile_payloads), T_CASE(hostile_entries),
};

int main(int argc, char **argv)
{
	return T_MAIN(argc, argv, cases);
}
