/* SPDX-License-Identifier: MIT */
/*
 * open_fuzzer: arbitrary bytes as an image.  Open, info, map, read the whole
 * (capped) virtual disk, close; must never crash, hang or allocate in
 * proportion to an unchecked field.
 *
 * Each input runs as given and, if different, with its checksums recomputed
 * (fuzz_fix_crcs), so that mutations get past the crc32c checks.
 *
 * Oracles, besides the sanitizers:
 *  - a read-only open never writes to the file;
 *  - img_map is well formed (extents start where asked, stay inside the
 *    virtual size, known types) and agrees with img_pread: unallocated and
 *    zero extents read as zeros, data extents read the host bytes at
 *    host_offset (zeros past the end of the file);
 *  - img_read_bulk reads what img_pread reads (where every chunk read),
 *    and img_next_run's runs cover the disk, alternate in type and are
 *    zeros where they say IMG_RUN_ZERO (issue 17);
 *  - a read-write open (log replay, leak reclaim) shows the same virtual
 *    contents as the read-only open; a small write there changes only its own
 *    range, also after close and a read-only reopen;
 *  - a refused open returns a negative errno with a message naming the file.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#define READ_CAP     (2u << 20)   /* bytes of the virtual disk read in order */
#define CHUNK        (64u << 10)
#define NCHUNKS      (READ_CAP / CHUNK)
#define NSAMPLES     6            /* reads at offsets past READ_CAP */
#define MAP_STEPS    (1u << 16)   /* img_map calls per walk */
#define WRITE_SLACK  (16ull << 20) /* growth allowed to a read-write open */

struct view {
	uint8_t *buf;                 /* READ_CAP bytes */
	uint64_t len;                 /* bytes of buf that cover the disk */
	uint8_t ok[NCHUNKS];          /* chunk read successfully */
	uint64_t sample_off[NSAMPLES];
	uint8_t sample[NSAMPLES][512];
	uint8_t sample_ok[NSAMPLES];
	uint64_t vsize;
};

static void check_info(struct img *img, struct img_info *info)
{
	int r = img_info(img, info);
	if (r)
		FUZZ_BUG("img_info on an open image: %d", r);
	if (info->cluster_size < IMG_MIN_CLUSTER_SIZE || info->cluster_size > IMG_MAX_CLUSTER_SIZE ||
	    (info->cluster_size & (info->cluster_size - 1)))
		FUZZ_BUG("img_info: cluster size %u", info->cluster_size);
	if (info->virtual_size == 0 || info->virtual_size % 512)
		FUZZ_BUG("img_info: virtual size %llu", (unsigned long long)info->virtual_size);
	if (info->bat_capacity < info->virtual_size)
		FUZZ_BUG("img_info: BAT capacity %llu below virtual size %llu",
			 (unsigned long long)info->bat_capacity, (unsigned long long)info->virtual_size);
}

/* The map, as walked once from offset 0 (bounded: img_map is O(run)). */
struct map {
	struct img_extent *e;
	unsigned n;
	uint64_t covered;             /* extents known for [0, covered) */
};

/* Walks the whole map (bounded) and checks that it is well formed. */
static void walk_map(struct img *img, uint64_t vsize, struct map *m)
{
	uint64_t off = 0;

	m->n = 0;
	m->covered = 0;
	for (unsigned i = 0; i < MAP_STEPS; i++) {
		struct img_extent e;
		int r = img_map(img, off, &e);
		if (r < 0)
			return;   /* a lazily read BAT block may be corrupt */
		if (r > 0)
			FUZZ_BUG("img_map returned %d", r);
		if (e.length == 0) {
			if (off != vsize)
				FUZZ_BUG("img_map: length 0 at %llu before the end %llu",
					 (unsigned long long)off, (unsigned long long)vsize);
			return;
		}
		if (e.offset != off)
			FUZZ_BUG("img_map(%llu) starts at %llu", (unsigned long long)off,
				 (unsigned long long)e.offset);
		if (e.type > IMG_EXTENT_COMPRESSED)
			FUZZ_BUG("img_map: type %u", e.type);
		if (e.depth)
			FUZZ_BUG("img_map: depth %u without a backing image", e.depth);
		if (e.type == IMG_EXTENT_COMPRESSED && e.length > (1ull << 26))
			FUZZ_BUG("img_map: compressed extent longer than a cluster");
		if (e.length > vsize - off)
			FUZZ_BUG("img_map: extent %llu+%llu past the end %llu", (unsigned long long)off,
				 (unsigned long long)e.length, (unsigned long long)vsize);
		if (e.type != IMG_EXTENT_DATA && e.type != IMG_EXTENT_COMPRESSED && e.host_offset)
			FUZZ_BUG("img_map: host offset on a non-data extent");
		if (e.type == IMG_EXTENT_DATA && e.host_offset + e.length < e.host_offset)
			FUZZ_BUG("img_map: host range wraps");
		m->e[m->n++] = e;
		off += e.length;
		m->covered = off;
		if (off == vsize) {
			/* the next call must say "end" */
			r = img_map(img, off, &e);
			if (r == 0 && e.length != 0)
				FUZZ_BUG("img_map at the end gives length %llu", (unsigned long long)e.length);
			return;
		}
	}
}

/* What img_pread must return for [off, off+len), per the map and the file;
 * -1 when the map does not cover the range. */
static int expected(const struct map *m, const uint8_t *file, size_t flen,
		    uint64_t off, uint8_t *out, size_t len)
{
	unsigned lo = 0, hi = m->n;
	size_t done = 0;

	if (off + len > m->covered)
		return -1;
	while (hi - lo > 1) {          /* the last extent starting at or before off */
		unsigned mid = (lo + hi) / 2;
		if (m->e[mid].offset <= off)
			lo = mid;
		else
			hi = mid;
	}
	for (unsigned i = lo; done < len && i < m->n; i++) {
		const struct img_extent *e = &m->e[i];
		uint64_t pos = off + done, in = pos - e->offset;
		uint64_t n = e->length - in < len - done ? e->length - in : len - done;
		if (e->type == IMG_EXTENT_COMPRESSED)
			return -1;   /* what it decompresses to is not in the map */
		if (e->type == IMG_EXTENT_DATA) {
			uint64_t h = e->host_offset + in, inside = 0;
			if (h < flen)
				inside = flen - h < n ? flen - h : n;
			if (inside)
				memcpy(out + done, file + h, inside);
			memset(out + done + inside, 0, n - inside);
		} else {
			memset(out + done, 0, n);
		}
		done += n;
	}
	return done == len ? 0 : -1;
}

/* Reads the capped disk into v; with file != NULL checks it against img_map. */
static void read_view(struct img *img, struct view *v, uint64_t vsize,
		      const struct map *m, const uint8_t *file, size_t flen, uint64_t seed)
{
	uint8_t *exp = file ? malloc(CHUNK) : NULL;

	v->vsize = vsize;
	v->len = vsize < READ_CAP ? vsize : READ_CAP;
	for (unsigned c = 0; c < NCHUNKS; c++) {
		uint64_t off = (uint64_t)c * CHUNK, n;
		ssize_t r;
		v->ok[c] = 0;
		if (off >= v->len)
			continue;
		n = v->len - off < CHUNK ? v->len - off : CHUNK;
		r = img_pread(img, v->buf + off, n, off);
		if (r < 0)
			continue;
		if ((uint64_t)r != n)
			FUZZ_BUG("img_pread(%llu, %llu) returned %zd", (unsigned long long)off,
				 (unsigned long long)n, r);
		v->ok[c] = 1;
		if (exp && !expected(m, file, flen, off, exp, n) && memcmp(exp, v->buf + off, n)) {
			size_t i = 0;
			while (exp[i] == v->buf[off + i])
				i++;
			FUZZ_BUG("virtual byte %llu reads 0x%02x, img_map says 0x%02x",
				 (unsigned long long)(off + i), v->buf[off + i], exp[i]);
		}
	}
	for (unsigned s = 0; s < NSAMPLES; s++) {
		uint64_t off, n;
		ssize_t r;
		v->sample_ok[s] = 0;
		off = fuzz_mix(seed + s) % (vsize / 512) * 512;
		if (s == 0)
			off = vsize - 512;            /* the last sector */
		v->sample_off[s] = off;
		n = vsize - off < 512 ? vsize - off : 512;
		r = img_pread(img, v->sample[s], n, off);
		if (r < 0)
			continue;
		if ((uint64_t)r != n)
			FUZZ_BUG("img_pread(%llu, %llu) returned %zd", (unsigned long long)off,
				 (unsigned long long)n, r);
		v->sample_ok[s] = 1;
		if (exp && !expected(m, file, flen, off, exp, n) && memcmp(exp, v->sample[s], n))
			FUZZ_BUG("virtual sector at %llu disagrees with img_map", (unsigned long long)off);
	}
	/* The bulk read and the runs agree with img_pread. */
	{
		uint8_t *bulk = malloc(v->len ? v->len : 1);
		int all = 1;
		uint64_t off = 0;
		unsigned last = 99;
		if (!bulk)
			FUZZ_BUG("out of memory");
		for (unsigned c = 0; c < NCHUNKS && (uint64_t)c * CHUNK < v->len; c++)
			all &= v->ok[c];
		ssize_t r = img_read_bulk(img, bulk, v->len, 0, IMG_READ_DIRECT);
		if (all && r != (ssize_t)v->len)
			FUZZ_BUG("img_read_bulk(0, %llu) returned %zd where img_pread read",
				 (unsigned long long)v->len, r);
		if (r >= 0 && (r != (ssize_t)v->len || (all && memcmp(bulk, v->buf, v->len))))
			FUZZ_BUG("img_read_bulk differs from img_pread");
		free(bulk);
		for (unsigned k = 0; k < MAP_STEPS && off < v->len; k++) {
			struct img_run run;
			if (img_next_run(img, off, 0, &run))
				break;
			if (run.offset != off || !run.length || run.length > vsize - off ||
			    run.type > IMG_RUN_ZERO || run.type == last)
				FUZZ_BUG("img_next_run(%llu): %llu bytes of type %u",
					 (unsigned long long)off, (unsigned long long)run.length,
					 run.type);
			/* chunk by chunk with memcmp: a loop over the bytes, each
			 * compare instrumented, took 90% of the harness's time */
			for (uint64_t i = off, z; run.type == IMG_RUN_ZERO && i < v->len &&
			     i < off + run.length; i = z) {
				static const uint8_t zeros[CHUNK];
				z = (i / CHUNK + 1) * CHUNK;
				if (z > v->len)
					z = v->len;
				if (z > off + run.length)
					z = off + run.length;
				if (v->ok[i / CHUNK] && memcmp(v->buf + i, zeros, z - i))
					FUZZ_BUG("virtual bytes at %llu are not zero in an IMG_RUN_ZERO run",
						 (unsigned long long)i);
			}
			last = run.type;
			off += run.length;
		}
	}
	/* Odd sizes and offsets, and reads that must fail. */
	{
		uint8_t b[3];
		if (vsize > 4)
			(void)img_pread(img, b, 3, 1);
		if (img_pread(img, b, 1, vsize) > 0)
			FUZZ_BUG("img_pread past the end succeeded");
		if (img_pread(img, b, 2, vsize - 1) == 2)
			FUZZ_BUG("img_pread across the end read 2 bytes");
		if (img_pread(img, b, 1, UINT64_MAX) > 0)
			FUZZ_BUG("img_pread at 2^64-1 succeeded");
	}
	free(exp);
}

/* Both views read a range successfully and it differs outside [skip, skip+slen). */
/* [lo, hi) of both buffers must match. */
static void same_range(const uint8_t *x, const uint8_t *y, uint64_t lo, uint64_t hi, const char *what)
{
	if (lo >= hi || !memcmp(x + lo, y + lo, hi - lo))
		return;
	while (x[lo] == y[lo])
		lo++;
	FUZZ_BUG("%s: virtual byte %llu: 0x%02x then 0x%02x", what, (unsigned long long)lo,
		 x[lo], y[lo]);
}

/* Both views read a range successfully and it differs outside [skip, skip+slen). */
static void compare_views(const struct view *a, const struct view *b, uint64_t skip,
			  uint64_t slen, const char *what)
{
	if (a->vsize != b->vsize)
		FUZZ_BUG("%s: virtual size %llu vs %llu", what, (unsigned long long)a->vsize,
			 (unsigned long long)b->vsize);
	for (unsigned c = 0; c < NCHUNKS; c++) {
		uint64_t off = (uint64_t)c * CHUNK, end;
		if (!a->ok[c] || !b->ok[c] || off >= a->len)
			continue;
		end = a->len - off < CHUNK ? a->len : off + CHUNK;
		same_range(a->buf, b->buf, off, end < skip ? end : skip, what);
		same_range(a->buf, b->buf, off > skip + slen ? off : skip + slen, end, what);
	}
	for (unsigned s = 0; s < NSAMPLES; s++) {
		uint64_t off = a->sample_off[s];
		if (!a->sample_ok[s] || !b->sample_ok[s] || off != b->sample_off[s])
			continue;
		if (off + 512 > skip && off < skip + slen)
			continue;
		if (memcmp(a->sample[s], b->sample[s], 512))
			FUZZ_BUG("%s: virtual sector %llu differs", what, (unsigned long long)off);
	}
}

static void check_refusal(int r, const char *what)
{
	const char *msg;
	if (r > 0)
		FUZZ_BUG("%s returned %d", what, r);
	if (r != -EUCLEAN && r != -EOPNOTSUPP && r != -EMEDIUMTYPE)
		return;
	msg = img_last_error();
	if (!msg[0] || !strstr(msg, "fuzz.img"))
		FUZZ_BUG("%s refused (%d) with a message not naming the file: \"%s\"", what, r, msg);
}

static void run_one(const uint8_t *data, size_t size)
{
	struct fuzz_io f;
	struct img *img;
	struct img_info info;
	struct view ro, rw, after;
	struct map map;
	int r, ro_rc, ro_ok = 0;
	uint64_t vsize = 0, woff = 0, wlen = 0;

	/* Buffers of megabytes, allocated once: a fresh mapping per input
	 * (ASan maps large blocks) cost more than the work it was for. */
	static struct img_extent *map_e;
	static uint8_t *bufs;

	if (!bufs) {
		map_e = malloc(MAP_STEPS * sizeof(*map_e));
		bufs = malloc(3 * (size_t)READ_CAP);
		if (!map_e || !bufs)
			FUZZ_BUG("out of memory");
	}
	memset(&ro, 0, sizeof(ro));
	memset(&rw, 0, sizeof(rw));
	memset(&after, 0, sizeof(after));
	map.e = map_e;
	ro.buf = bufs;
	rw.buf = bufs + READ_CAP;
	after.buf = bufs + 2 * (size_t)READ_CAP;

	/* 1. Read-only.  The file must not change. */
	fuzz_io_init(&f, data, size, 0);    /* cap 0: any write fails */
	f.save_on_close = 1;
	r = ro_rc = img_open_io(&f.io, 0, &img);
	if (r == 0) {
		check_info(img, &info);
		vsize = info.virtual_size;
		walk_map(img, vsize, &map);
		read_view(img, &ro, vsize, &map, fuzz_io_data(&f, &(size_t){0}), size, size);
		ro_ok = 1;
		r = img_close(img);
		if (r)
			FUZZ_BUG("img_close of a read-only handle: %d", r);
	} else {
		check_refusal(r, "read-only open");
	}
	if (f.saved_len != size || (size && memcmp(f.saved, data, size)))
		FUZZ_BUG("a read-only open changed the file");
	fuzz_io_release(&f);

	/* 2. Salvage: a corrupt image opened for check. */
	if (ro_rc == -EUCLEAN) {
		fuzz_io_init(&f, data, size, 0);
		r = img_open_io(&f.io, IMG_OPEN_CHECK, &img);
		if (r == 0) {
			check_info(img, &info);
			walk_map(img, info.virtual_size, &map);
			read_view(img, &rw, info.virtual_size, NULL, NULL, 0, size);
			img_close(img);
		} else {
			check_refusal(r, "read-only check open");
		}
		fuzz_io_release(&f);
	}

	/* 3. Read-write: replay, reclaim, then one small write. */
	fuzz_io_init(&f, data, size, size + WRITE_SLACK);
	f.save_on_close = 1;
	r = img_open_io(&f.io, IMG_OPEN_RDWR, &img);
	if (r == 0) {
		static uint8_t pattern[1536];
		ssize_t w;

		check_info(img, &info);
		if (!ro_ok)
			FUZZ_BUG("read-write open succeeded where read-only open failed");
		walk_map(img, info.virtual_size, &map);
		read_view(img, &rw, info.virtual_size, NULL, NULL, 0, size);
		compare_views(&ro, &rw, 0, 0, "read-only vs read-write open");

		memset(pattern, 0xa5, sizeof(pattern));
		woff = fuzz_mix(size ^ 0x5a) % (rw.len / 512) * 512;
		wlen = rw.len - woff < sizeof(pattern) ? rw.len - woff : sizeof(pattern);
		w = img_pwrite(img, pattern, wlen, woff);
		if (w >= 0 && (uint64_t)w != wlen)
			FUZZ_BUG("img_pwrite returned %zd for %llu", w, (unsigned long long)wlen);
		read_view(img, &after, info.virtual_size, NULL, NULL, 0, size);
		compare_views(&rw, &after, woff, wlen, "after a write");
		if (w >= 0) {
			unsigned c = (unsigned)(woff / CHUNK);
			if (after.ok[c] && memcmp(after.buf + woff, pattern,
						   wlen < CHUNK - woff % CHUNK ? wlen : CHUNK - woff % CHUNK))
				FUZZ_BUG("a write at %llu does not read back", (unsigned long long)woff);
		}
		r = img_close(img);
		/* Reopen what the close left and look again. */
		if (r == 0 && w >= 0 && f.saved) {
			struct fuzz_io g;
			struct img *img2;
			fuzz_io_init(&g, f.saved, f.saved_len, 0);
			r = img_open_io(&g.io, 0, &img2);
			if (r)
				FUZZ_BUG("cannot reopen an image closed cleanly after a write: %d", r);
			read_view(img2, &ro, vsize, NULL, NULL, 0, size);
			compare_views(&after, &ro, 0, 0, "after close and reopen");
			img_close(img2);
			fuzz_io_release(&g);
		}
	} else if (r == -EROFS) {
		/* read-only compatible features */
	} else {
		check_refusal(r, "read-write open");
	}
	fuzz_io_release(&f);

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
