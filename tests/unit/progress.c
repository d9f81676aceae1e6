/* SPDX-License-Identifier: MIT */
/* Progress callbacks of long operations (issue 16): img_resize_progress
 * (a growth's relocation, a shrink's packing), img_check (opts.progress)
 * and img_compact report a count that only goes forward against a total
 * that does not change, ending at done == total where the operation says
 * so; a non-zero return cancels with -ECANCELED and leaves the image
 * consistent. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libimg.h"
#include "../helpers/tassert.h"

#define CS (64u << 10)

struct rec {
	uint64_t calls, done, total;
	int backwards, total_changed, over;
	uint64_t cancel_at;        /* return 1 on this call (1-based); 0 never */
};

static int record(void *arg, uint64_t done, uint64_t total)
{
	struct rec *r = arg;

	if (r->calls && done < r->done)
		r->backwards = 1;
	if (r->calls && total != r->total)
		r->total_changed = 1;
	if (done > total)
		r->over = 1;
	r->done = done;
	r->total = total;
	r->calls++;
	return r->cancel_at && r->calls == r->cancel_at;
}

static void pattern(uint8_t *b, uint64_t v) { memset(b, (int)(v * 37 + 1), CS); b[0] = (uint8_t)v; }

/* A 64 MiB image (1024 clusters) with data in every 8th cluster, written
 * in ascending order of the virtual clusters or descending (then the
 * first ones sit at the end of the host file). */
static struct img *make_order(const char *path, int desc)
{
	struct img_create_opts o = { .virtual_size = 64u << 20, .cluster_size = CS,
				     .flags = IMG_CREATE_OVERWRITE };
	uint8_t buf[CS];
	struct img *img = NULL;

	T_CHECK(img_create(path, &o) == 0);
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	for (uint64_t i = 0; i < 1024; i += 8) {
		uint64_t v = desc ? 1016 - i : i;
		pattern(buf, v);
		T_CHECK(img_pwrite(img, buf, CS, v * CS) == CS);
	}
	T_CHECK(img_flush(img) == 0);
	return img;
}

static struct img *make(const char *path) { return make_order(path, 0); }

static int data_ok(struct img *img, uint64_t upto)
{
	uint8_t buf[CS], want[CS];

	for (uint64_t v = 0; v < upto; v += 8) {
		pattern(want, v);
		if (img_pread(img, buf, CS, v * CS) != CS || memcmp(buf, want, CS))
			return 0;
	}
	return 1;
}

static int clean(struct img *img)
{
	struct img_check_result cr;
	return img_check(img, NULL, &cr) == 0 && cr.corruptions == 0 && cr.leaks == 0;
}

/* Growth past the BAT's capacity: the relocation is reported. */
static void grow_relocation(void)
{
	char path[] = "/tmp/libimg-progress-XXXXXX";
	struct img *img;
	struct rec r;
	int fd = mkstemp(path);

	T_ASSERT(fd >= 0);
	close(fd);
	img = make(path);
	memset(&r, 0, sizeof(r));
	T_CHECK(img_resize_progress(img, 4ull << 30, 0, record, &r) == 0);
	T_CHECK(r.calls >= 4);
	T_CHECK(!r.backwards && !r.total_changed && !r.over);
	T_CHECK(data_ok(img, 1024));
	T_CHECK(clean(img));
	T_CHECK(img_close(img) == 0);
	unlink(path);
}

/* Cancelled during the relocation: -ECANCELED, the size unchanged,
 * the data where it reads, the image consistent. */
static void cancelled_relocation(void)
{
	char path[] = "/tmp/libimg-progress-XXXXXX";
	struct img *img;
	struct img_info in;
	struct rec r;
	int fd = mkstemp(path);

	T_ASSERT(fd >= 0);
	close(fd);
	img = make(path);
	memset(&r, 0, sizeof(r));
	r.cancel_at = 2;
	T_CHECK(img_resize_progress(img, 4ull << 30, 0, record, &r) == -ECANCELED);
	T_CHECK(r.calls == 2);
	T_CHECK(img_info(img, &in) == 0 && in.virtual_size == 64u << 20);
	T_CHECK(data_ok(img, 1024));
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open(path, IMG_OPEN_RDWR | IMG_OPEN_CHECK, &img) == 0);
	T_CHECK(clean(img));
	T_CHECK(data_ok(img, 1024));
	/* and it can grow afterwards */
	T_CHECK(img_resize_progress(img, 4ull << 30, 0, NULL, NULL) == 0);
	T_CHECK(data_ok(img, 1024));
	T_CHECK(img_close(img) == 0);
	unlink(path);
}

/* Shrink: the packing of the host file is reported (what is kept
 * sits at the end of the file: it moves). */
static void shrink_packing(void)
{
	char path[] = "/tmp/libimg-progress-XXXXXX";
	struct img *img;
	struct rec r;
	int fd = mkstemp(path);

	T_ASSERT(fd >= 0);
	close(fd);
	img = make_order(path, 1);
	memset(&r, 0, sizeof(r));
	T_CHECK(img_resize_progress(img, 16u << 20, IMG_RESIZE_DISCARD_DATA, record, &r) == 0);
	T_CHECK(r.calls >= 1);
	T_CHECK(!r.backwards && !r.total_changed && !r.over);
	T_CHECK(r.done == r.total);
	T_CHECK(data_ok(img, 256));
	T_CHECK(clean(img));
	T_CHECK(img_close(img) == 0);
	unlink(path);
}

/* Check: forward, ending at done == total; cancel -> -ECANCELED. */
static void check_progress(void)
{
	char path[] = "/tmp/libimg-progress-XXXXXX";
	struct img *img;
	struct rec r;
	int fd = mkstemp(path);

	T_ASSERT(fd >= 0);
	close(fd);
	img = make(path);
	T_CHECK(img_close(img) == 0);
	T_CHECK(img_open(path, IMG_OPEN_CHECK, &img) == 0);
	{
		struct img_check_opts co = { 0 };
		struct img_check_result cr;
		memset(&r, 0, sizeof(r));
		co.progress = record;
		co.progress_arg = &r;
		T_CHECK(img_check(img, &co, &cr) == 0 && cr.corruptions == 0 && cr.leaks == 0);
		T_CHECK(r.calls >= 2);
		T_CHECK(!r.backwards && !r.total_changed && !r.over);
		T_CHECK(r.done == r.total && r.total > 0);
		memset(&r, 0, sizeof(r));
		r.cancel_at = 1;
		T_CHECK(img_check(img, &co, &cr) == -ECANCELED);
	}
	T_CHECK(img_close(img) == 0);
	unlink(path);
}

/* Compact: its steps (zero detection, relocation) as one count that
 * only goes forward and ends at done == total. */
static void compact_progress(void)
{
	char path[] = "/tmp/libimg-progress-XXXXXX";
	struct img *img;
	struct rec r;
	int fd = mkstemp(path);

	T_ASSERT(fd >= 0);
	close(fd);
	img = make(path);
	{
		struct img_compact_opts co = { 0 };
		struct img_compact_stats st;
		uint8_t zero[CS];
		memset(zero, 0, sizeof(zero));
		/* the front emptied, zeros written over some clusters */
		for (uint64_t v = 0; v < 512; v += 8)
			T_CHECK(img_discard(img, v * CS, CS) == 0);
		for (uint64_t v = 512; v < 600; v += 8)
			T_CHECK(img_pwrite(img, zero, CS, v * CS) == CS);
		memset(&r, 0, sizeof(r));
		co.progress = record;
		co.progress_arg = &r;
		T_CHECK(img_compact(img, &co, &st) == 0);
		T_CHECK(st.zero_clusters_freed > 0 && st.clusters_moved > 0);
		T_CHECK(r.calls >= 3);
		T_CHECK(!r.backwards && !r.total_changed && !r.over);
		T_CHECK(r.done == r.total);
	}
	T_CHECK(clean(img));
	T_CHECK(img_close(img) == 0);
	unlink(path);
}

static const struct t_case cases[] = {
	T_CASE(grow_relocation), T_CASE(cancelled_relocation), T_CASE(shrink_packing),
	T_CASE(check_progress), T_CASE(compact_progress),
};

int main(int argc, char **argv)
{
	return T_MAIN(argc, argv, cases);
}
