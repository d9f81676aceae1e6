/* SPDX-License-Identifier: MIT */
/*
 * chain_fuzzer: a backing chain of two or three fuzzed images on the memory
 * backend (FORMAT.md 3.1), the top one a delta over the next, and so on.
 *
 * Input: byte 0 picks the depth (2 or 3 images), then a 32-bit length per
 * image but the last, then the images one after another (the last gets
 * the rest).  The chain is built bottom-up with imgi_open_io_over (a delta
 * over an open image; the bottom image is opened with IMG_OPEN_NO_BACKING
 * when it is itself a delta, so its unallocated clusters read as zeros).
 *
 *  1. read-only: info, the first READ_CAP bytes and the last sector read
 *     fully or fail with -errno, a check runs; no image's bytes change;
 *  2. read-write top: a write of a few bytes into cluster 0 (a copy-up from
 *     the chain when it is unallocated) and one into the last sector read
 *     back as written, and every other byte of cluster 0 reads as before
 *     the write when it read then; after the close the backing images'
 *     bytes are unchanged (nothing writes to a backing image);
 *  3. reopened, the top reads what was written (when the close succeeded).
 *
 * Each input runs as given and, if different, with every image's
 * checksums recomputed (fuzz_fix_crcs).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "testio.h"

#define READ_CAP    (1u << 20)
#define WRITE_SLACK (16ull << 20)
#define MAX_IMGS    3

struct chain_in {
	unsigned n;
	const uint8_t *p[MAX_IMGS];
	size_t len[MAX_IMGS];
};

static void split(const uint8_t *data, size_t size, struct chain_in *c)
{
	struct fuzz_in in = { data, size };
	size_t at;

	c->n = 2 + fuzz_u8(&in) % 2;
	for (unsigned i = 0; i + 1 < c->n; i++)
		c->len[i] = fuzz_u32(&in);
	at = size - in.n;
	for (unsigned i = 0; i < c->n; i++) {
		size_t left = size - at;
		if (i + 1 == c->n || c->len[i] > left)
			c->len[i] = left;
		c->p[i] = data + at;
		at += c->len[i];
	}
}

static void release_all(struct fuzz_io *f, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		fuzz_io_release(&f[i]);
}

/* Opens the chain (images[0] on top) over f[]; flags for the top one.  0
 * with *top, or -errno (everything closed). */
static int open_chain(struct fuzz_io *f, const struct chain_in *c, uint8_t **bytes,
		      unsigned flags, struct img **top)
{
	struct img *below = NULL, *img;
	int r;

	*top = NULL;
	for (unsigned i = c->n; i-- > 0; ) {
		fuzz_io_init(&f[i], bytes[i], c->len[i], c->len[i] + WRITE_SLACK);
		f[i].save_on_close = 1;
	}
	for (unsigned i = c->n; i-- > 0; ) {
		unsigned fl = i == 0 ? flags : 0;
		if (!below) {
			r = img_open_io(&f[i].io, fl | IMG_OPEN_NO_BACKING, &img);
		} else {
			r = imgi_open_io_over(&f[i].io, fl, below, &img);
			below = NULL;     /* closed by imgi_open_io_over on failure */
		}
		if (r > 0)
			FUZZ_BUG("open returned %d", r);
		if (r) {
			/* every backend handed to an open is closed by now */
			release_all(f, c->n);
			return r;
		}
		below = img;
	}
	*top = below;
	return 0;
}

/* After the chain was closed: backing images i >= from unchanged. */
static void backing_unchanged(struct fuzz_io *f, const struct chain_in *c, uint8_t **bytes,
			      unsigned from, const char *when)
{
	for (unsigned i = from; i < c->n; i++)
		if (f[i].saved && (f[i].saved_len != c->len[i] || memcmp(f[i].saved, bytes[i], c->len[i])))
			FUZZ_BUG("%s: backing image %u changed", when, i);
}

static ssize_t read_checked(struct img *img, void *buf, size_t len, uint64_t off)
{
	ssize_t r = img_pread(img, buf, len, off);
	if (r != (ssize_t)len && (r >= 0 || r < -4095))
		FUZZ_BUG("img_pread(%zu at %llu) returned %zd", len, (unsigned long long)off, r);
	return r;
}

static void run_one(const struct chain_in *c, uint8_t **bytes)
{
	static uint8_t *buf, *before;
	struct fuzz_io f[MAX_IMGS];
	struct img_check_result res;
	struct img_info info;
	struct img *img;
	uint64_t vs, cs, n0;
	int head_ok, r;
	uint8_t pat[512];

	if (!buf && (!(buf = malloc(READ_CAP)) || !(before = malloc(READ_CAP))))
		FUZZ_BUG("out of memory");

	/* 1. Read-only. */
	if (open_chain(f, c, bytes, 0, &img))
		return;
	if (img_info(img, &info))
		FUZZ_BUG("img_info failed");
	vs = info.virtual_size;
	cs = info.cluster_size;
	if (!img_backing(img))
		FUZZ_BUG("a delta opened over an image has no backing");
	n0 = vs < cs ? vs : cs;
	if (n0 > READ_CAP)
		n0 = READ_CAP;
	head_ok = read_checked(img, before, n0, 0) == (ssize_t)n0;
	read_checked(img, buf, vs < READ_CAP ? vs : READ_CAP, 0);
	read_checked(img, buf, 512, vs - 512);
	memset(&res, 0, sizeof(res));
	if (img_check(img, NULL, &res) > 0)
		FUZZ_BUG("img_check returned a positive value");
	img_close(img);
	backing_unchanged(f, c, bytes, 0, "a read-only open");
	release_all(f, c->n);

	/* 2. Read-write top. */
	if (open_chain(f, c, bytes, IMG_OPEN_RDWR, &img))
		return;
	for (unsigned i = 0; i < sizeof(pat); i++)
		pat[i] = (uint8_t)fuzz_mix(i + c->len[0]);
	{
		uint64_t off = n0 > 400 ? 100 : 0, len = n0 > 400 ? 300 : 1;
		int wrote = img_pwrite(img, pat, len, off) == (ssize_t)len;
		if (wrote && read_checked(img, buf, n0, 0) == (ssize_t)n0) {
			if (memcmp(buf + off, pat, len))
				FUZZ_BUG("a write into cluster 0 does not read back");
			if (head_ok && (memcmp(buf, before, off) ||
					memcmp(buf + off + len, before + off + len, n0 - off - len)))
				FUZZ_BUG("a write into cluster 0 changed its other bytes (copy-up)");
		}
		if (img_pwrite(img, pat, 512, vs - 512) == 512 &&
		    read_checked(img, buf, 512, vs - 512) == 512 && memcmp(buf, pat, 512))
			FUZZ_BUG("a write into the last sector does not read back");
		r = img_close(img);
		backing_unchanged(f, c, bytes, 1, "a write through the top image");

		/* 3. Reopened, what was written is there. */
		if (!r && wrote && f[0].saved) {
			struct chain_in c2 = *c;
			uint8_t *b2[MAX_IMGS];
			struct fuzz_io g[MAX_IMGS];
			for (unsigned i = 0; i < c->n; i++)
				b2[i] = bytes[i];
			b2[0] = f[0].saved;
			c2.len[0] = f[0].saved_len;
			if (open_chain(g, &c2, b2, 0, &img))
				FUZZ_BUG("a chain whose top closed cleanly does not open again");
			if (read_checked(img, buf, n0, 0) == (ssize_t)n0 && memcmp(buf + off, pat, len))
				FUZZ_BUG("a write into cluster 0 is lost at close");
			img_close(img);
			release_all(g, c->n);
		}
	}
	release_all(f, c->n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct chain_in c;
	uint8_t *bytes[MAX_IMGS] = { NULL }, *fixed[MAX_IMGS] = { NULL };
	int differ = 0, big = 0;

	split(data, size, &c);
	for (unsigned i = 0; i < c.n; i++) {
		bytes[i] = malloc(c.len[i] ? c.len[i] : 1);
		fixed[i] = malloc(c.len[i] ? c.len[i] : 1);
		if (!bytes[i] || !fixed[i])
			goto out;
		memcpy(bytes[i], c.p[i], c.len[i]);
		memcpy(fixed[i], c.p[i], c.len[i]);
		big |= fuzz_too_big(bytes[i], c.len[i]);
		differ |= fuzz_fix_crcs(fixed[i], c.len[i]);
	}
	if (!big)
		run_one(&c, bytes);
	big = 0;
	for (unsigned i = 0; i < c.n; i++)
		big |= fuzz_too_big(fixed[i], c.len[i]);
	if (differ && !big)
		run_one(&c, fixed);
out:
	for (unsigned i = 0; i < c.n; i++) {
		free(bytes[i]);
		free(fixed[i]);
	}
	return 0;
}
