/* SPDX-License-Identifier: MIT */
/*
 * check_fuzzer: arbitrary bytes as an image, then img_check.
 *
 *  1. check on a read-only IMG_OPEN_CHECK handle: must not write the file;
 *  2. repair (IMG_OPEN_RDWR|IMG_OPEN_CHECK, IMG_CHECK_REPAIR);
 *  3. unless the image was refused as unrepairable (the open or the repair
 *     fails, or not every problem was fixed), the repaired image must open
 *     without IMG_OPEN_CHECK and check clean: no corruption, no leak;
 *  4. repairing it again finds nothing, and leaves the same virtual disk
 *     (first READ_CAP bytes and the last sector), size and counts;
 *  5. whether or not the repair fixed everything, it never makes data
 *     worse: every cluster of the first READ_CAP bytes that read without
 *     error before the repair (on the check handle of step 1: invalid
 *     entries read as unallocated there) reads the same bytes after it.
 *
 * Each input runs as given and, if different, with its checksums recomputed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#define READ_CAP     (1u << 20)
#define WRITE_SLACK  (16ull << 20)

struct snapshot {
	struct img_info info;
	uint8_t *buf;           /* READ_CAP + 512 bytes */
	uint64_t len;           /* bytes of buf read from the start of the disk */
	int head_ok, tail_ok;
};

static void count_report(void *arg, enum img_check_severity sev, int fixed, const char *msg)
{
	unsigned long *n = arg;
	if (sev > IMG_CHECK_CORRUPT)
		FUZZ_BUG("check report with severity %d", (int)sev);
	if (!msg || strlen(msg) > 4096)
		FUZZ_BUG("check report without a sane message");
	(void)fixed;
	++*n;
}

static int do_check(struct img *img, unsigned flags, struct img_check_result *res)
{
	struct img_check_opts o;
	unsigned long reports = 0;
	int r;

	memset(&o, 0, sizeof(o));
	memset(res, 0, sizeof(*res));
	o.flags = flags;
	o.report = count_report;
	o.report_arg = &reports;
	r = img_check(img, &o, res);
	if (r > 0)
		FUZZ_BUG("img_check returned %d", r);
	if (r == 0) {
		if (res->corruptions_fixed > res->corruptions || res->leaks_fixed > res->leaks)
			FUZZ_BUG("img_check fixed more than it found: %llu/%llu corruptions, %llu/%llu leaks",
				 (unsigned long long)res->corruptions_fixed,
				 (unsigned long long)res->corruptions,
				 (unsigned long long)res->leaks_fixed, (unsigned long long)res->leaks);
		if (!(flags & IMG_CHECK_REPAIR) && (res->corruptions_fixed || res->leaks_fixed))
			FUZZ_BUG("img_check without repair claims fixes");
		if ((res->corruptions || res->leaks) && !reports)
			FUZZ_BUG("img_check found %llu corruptions, %llu leaks and reported nothing",
				 (unsigned long long)res->corruptions, (unsigned long long)res->leaks);
	}
	return r;
}

static void take_snapshot(struct img *img, struct snapshot *s)
{
	uint64_t vs;
	if (img_info(img, &s->info))
		FUZZ_BUG("img_info failed on an open image");
	vs = s->info.virtual_size;
	s->len = vs < READ_CAP ? vs : READ_CAP;
	s->head_ok = img_pread(img, s->buf, s->len, 0) == (ssize_t)s->len;
	s->tail_ok = img_pread(img, s->buf + READ_CAP, 512, vs - 512) == 512;
}

static void same_snapshot(const struct snapshot *a, const struct snapshot *b)
{
	if (a->info.virtual_size != b->info.virtual_size ||
	    a->info.cluster_size != b->info.cluster_size ||
	    a->info.allocated_clusters != b->info.allocated_clusters ||
	    a->info.zero_clusters != b->info.zero_clusters)
		FUZZ_BUG("a second repair changed the image: size %llu/%llu, allocated %llu/%llu, zero %llu/%llu",
			 (unsigned long long)a->info.virtual_size, (unsigned long long)b->info.virtual_size,
			 (unsigned long long)a->info.allocated_clusters,
			 (unsigned long long)b->info.allocated_clusters,
			 (unsigned long long)a->info.zero_clusters, (unsigned long long)b->info.zero_clusters);
	if (a->head_ok != b->head_ok || a->tail_ok != b->tail_ok)
		FUZZ_BUG("reads fail after one repair and not the other");
	if (a->head_ok && memcmp(a->buf, b->buf, a->len))
		FUZZ_BUG("a second repair changed the first %llu bytes of the disk",
			 (unsigned long long)a->len);
	if (a->tail_ok && memcmp(a->buf + READ_CAP, b->buf + READ_CAP, 512))
		FUZZ_BUG("a second repair changed the last sector");
}

/* The clusters of the first READ_CAP bytes of a disk as a check handle
 * reads them: intact[c] when cluster c read without error. */
struct intact {
	uint8_t *buf;            /* READ_CAP bytes */
	uint8_t ok[READ_CAP / IMG_MIN_CLUSTER_SIZE];
	uint64_t len, cs;
};

static void read_intact(struct img *img, struct intact *in)
{
	struct img_info info;

	memset(in->ok, 0, sizeof(in->ok));
	in->len = 0;
	if (img_info(img, &info))
		FUZZ_BUG("img_info failed on an open image");
	in->cs = info.cluster_size;
	in->len = info.virtual_size < READ_CAP ? info.virtual_size : READ_CAP;
	for (uint64_t c = 0; c * in->cs < in->len; c++) {
		uint64_t n = in->len - c * in->cs < in->cs ? in->len - c * in->cs : in->cs;
		in->ok[c] = img_pread(img, in->buf + c * in->cs, n, c * in->cs) == (ssize_t)n;
	}
}

/* Step 5: the repaired contents (data) keep every intact cluster of *in. */
static void same_intact(const uint8_t *data, size_t size, const struct intact *in)
{
	static uint8_t *after;
	struct intact a;
	struct fuzz_io f;
	struct img *img;

	if (!after && !(after = malloc(READ_CAP)))
		FUZZ_BUG("out of memory");
	a.buf = after;
	fuzz_io_init(&f, data, size, 0);
	if (img_open_io(&f.io, IMG_OPEN_CHECK, &img))
		FUZZ_BUG("a repaired image does not open for checking");
	read_intact(img, &a);
	img_close(img);
	fuzz_io_release(&f);
	if (a.len != in->len || a.cs != in->cs)
		FUZZ_BUG("the repair changed the disk's size or cluster size");
	for (uint64_t c = 0; c * in->cs < in->len; c++) {
		uint64_t n = in->len - c * in->cs < in->cs ? in->len - c * in->cs : in->cs;
		if (!in->ok[c])
			continue;
		if (!a.ok[c])
			FUZZ_BUG("cluster %llu read before the repair and fails after it",
				 (unsigned long long)c);
		if (memcmp(in->buf + c * in->cs, a.buf + c * in->cs, n))
			FUZZ_BUG("the repair changed the data of intact cluster %llu",
				 (unsigned long long)c);
	}
}

/* Opens data read-write for repair, repairs, closes.  Returns 0 and the
 * contents left by img_close in *out and *outlen when the repair fixed everything
 * it found; 1 (contents too) when it left problems, -1 when the image was
 * refused as unrepairable (it could not be opened, repaired or closed). */
static int repair(const uint8_t *data, size_t size, struct img_check_result *res,
		  uint8_t **out, size_t *outlen)
{
	struct fuzz_io f;
	struct img *img;
	int r, rc = -1;

	fuzz_io_init(&f, data, size, size + WRITE_SLACK);
	f.save_on_close = 1;
	r = img_open_io(&f.io, IMG_OPEN_RDWR | IMG_OPEN_CHECK, &img);
	if (r) {
		if (r > 0)
			FUZZ_BUG("img_open_io returned %d", r);
		goto out;
	}
	r = do_check(img, IMG_CHECK_REPAIR, res);
	if (img_close(img) == 0 && r == 0) {
		*out = f.saved;
		*outlen = f.saved_len;
		f.saved = NULL;
		rc = res->corruptions_fixed == res->corruptions && res->leaks_fixed == res->leaks ? 0 : 1;
	}
out:
	fuzz_io_release(&f);
	return rc;
}

/* The repaired image opens normally, checks clean, snapshot into s. */
static void verify_clean(const uint8_t *data, size_t size, struct snapshot *s, const char *what)
{
	struct fuzz_io f;
	struct img *img;
	struct img_check_result res;
	int r;

	fuzz_io_init(&f, data, size, 0);
	f.save_on_close = 1;
	r = img_open_io(&f.io, 0, &img);
	if (r)
		FUZZ_BUG("%s: the image does not open: %d", what, r);
	r = do_check(img, 0, &res);
	if (r)
		FUZZ_BUG("%s: img_check failed: %d", what, r);
	if (res.corruptions || res.leaks)
		FUZZ_BUG("%s: check finds %llu corruptions and %llu leaks", what,
			 (unsigned long long)res.corruptions, (unsigned long long)res.leaks);
	take_snapshot(img, s);
	img_close(img);
	if (f.saved_len != size || memcmp(f.saved, data, size))
		FUZZ_BUG("%s: a read-only open changed the file", what);
	fuzz_io_release(&f);
}

static void run_one(const uint8_t *data, size_t size)
{
	struct fuzz_io f;
	struct img *img;
	struct img_check_result res;
	struct snapshot s1, s2;
	uint8_t *r1 = NULL, *r2 = NULL;
	size_t r1len = 0, r2len = 0;
	int r;

	static uint8_t *before;
	struct intact in;
	int have_intact = 0;

	if (!before && !(before = malloc(READ_CAP)))
		FUZZ_BUG("out of memory");
	in.buf = before;
	/* 1. Check only, read-only; what reads before any repair. */
	fuzz_io_init(&f, data, size, 0);
	f.save_on_close = 1;
	r = img_open_io(&f.io, IMG_OPEN_CHECK, &img);
	if (r == 0) {
		read_intact(img, &in);
		have_intact = 1;
		do_check(img, 0, &res);
		img_close(img);
	} else if (r > 0) {
		FUZZ_BUG("img_open_io returned %d", r);
	}
	if (f.saved_len != size || (size && memcmp(f.saved, data, size)))
		FUZZ_BUG("a read-only check changed the file");
	fuzz_io_release(&f);

	/* 2. Repair; 5. it keeps every intact cluster, fixed or not. */
	r = repair(data, size, &res, &r1, &r1len);
	if (r >= 0 && have_intact)
		same_intact(r1, r1len, &in);
	if (r) {
		free(r1);
		return;    /* refused as unrepairable, or problems left */
	}

	/* 3. Then the image is clean. */
	{       /* allocated once (see open_fuzzer.c) */
		static uint8_t *bufs;
		if (!bufs && !(bufs = malloc(2 * ((size_t)READ_CAP + 512))))
			FUZZ_BUG("out of memory");
		s1.buf = bufs;
		s2.buf = bufs + READ_CAP + 512;
	}
	verify_clean(r1, r1len, &s1, "after repair");

	/* 4. Repair twice is repair once. */
	if (repair(r1, r1len, &res, &r2, &r2len))
		FUZZ_BUG("a repaired image is refused by a second repair, or it finds something");
	if (res.corruptions || res.leaks)
		FUZZ_BUG("a second repair finds %llu corruptions and %llu leaks",
			 (unsigned long long)res.corruptions, (unsigned long long)res.leaks);
	verify_clean(r2, r2len, &s2, "after a second repair");
	same_snapshot(&s1, &s2);

	free(r1);
	free(r2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy;

	if (!fuzz_too_big(data, size))
		run_one(data, size);
	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	if (fuzz_fix_crcs(copy, size) && !fuzz_too_big(copy, size))
		run_one(copy, size);
	free(copy);
	return 0;
}
