/* SPDX-License-Identifier: MIT */
/*
 * ops_fuzzer: the model-based test, driven by the fuzzer.
 *
 * The input decodes into the geometry of a fresh image and a sequence of
 * operations (write, read, discard, write-zeroes, flush, reopen, crash and
 * reopen, grow, shrink, compact, check).  A sparse model of the virtual disk
 * (one buffer per written cluster) follows along; after each operation the
 * range it touched, img_info and img_map are checked against the model, and
 * after every operation that moves clusters or reopens, the whole disk.
 *
 * Input layout (bytes run out into zeros):
 *   byte 0     bits 0-1: cluster size 64 KiB << (b % 4 % 3); bit 2: bat_reserve
 *              of 4x; bit 3: made by img_create_io (1 MiB log), else by hand
 *              with a one-cluster log (more checkpoints, split commits)
 *   byte 1..2  virtual size in clusters (1 + v % 64), byte 3: minus 512*(b%8)
 *   then ops:  one opcode byte, then its arguments (see decode_* below)
 * fuzz/gen_corpus.c writes seeds in this layout.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#define MAX_VSIZE   (1ull << 30)
#define MAX_OPS     128
#define MAX_IO      (128u << 10)
#define FILE_CAP    (160ull << 20)
#define MAX_HEAVY   12     /* reopen, crash, grow, shrink, compact, check per input:
                            * each costs megabytes of fresh memory under ASan */

struct model {
	uint64_t vsize;
	uint64_t cs;
	unsigned cbits;
	uint64_t ncl;        /* entries in cl */
	uint8_t **cl;        /* NULL: all zero */
};

/* OPS_TRACE=1 in the environment prints each operation (replaying a crash). */
static int tracing = -1;

__attribute__((format(printf, 1, 2)))
static void trace(const char *fmt, ...)
{
	va_list ap;
	if (tracing < 0)
		tracing = getenv("OPS_TRACE") != NULL;
	if (!tracing)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

struct state {
	struct model m;
	struct fuzz_io f;
	struct img *img;
	uint8_t *buf, *exp;  /* MAX_IO each */
	unsigned step;
	uint8_t last_op;
};

/* ---- the model ---------------------------------------------------------- */

static void m_set_size(struct model *m, uint64_t size)
{
	uint64_t n = (size + m->cs - 1) >> m->cbits;
	if (size < m->vsize) {
		/* Drop whole clusters past the end, zero the tail of the last. */
		for (uint64_t c = n; c < m->ncl; c++) {
			free(m->cl[c]);
			m->cl[c] = NULL;
		}
		if (n && m->cl[n - 1] && size % m->cs)
			memset(m->cl[n - 1] + size % m->cs, 0, m->cs - size % m->cs);
	}
	if (n > m->ncl) {
		uint8_t **nc = realloc(m->cl, n * sizeof(*nc));
		if (!nc)
			FUZZ_BUG("out of memory");
		memset(nc + m->ncl, 0, (n - m->ncl) * sizeof(*nc));
		m->cl = nc;
		m->ncl = n;
	}
	m->vsize = size;
}

static void m_write(struct model *m, uint64_t off, const uint8_t *src, uint64_t len)
{
	while (len) {
		uint64_t c = off >> m->cbits, in = off & (m->cs - 1);
		uint64_t n = m->cs - in < len ? m->cs - in : len;
		if (!m->cl[c]) {
			if (src && imgi_is_zero(src, n))
				goto next;
			if (!src)
				goto next;
			m->cl[c] = calloc(1, m->cs);
			if (!m->cl[c])
				FUZZ_BUG("out of memory");
		}
		if (src)
			memcpy(m->cl[c] + in, src, n);
		else
			memset(m->cl[c] + in, 0, n);
next:
		off += n;
		len -= n;
		if (src)
			src += n;
	}
}

static void m_read(const struct model *m, uint64_t off, uint8_t *dst, uint64_t len)
{
	while (len) {
		uint64_t c = off >> m->cbits, in = off & (m->cs - 1);
		uint64_t n = m->cs - in < len ? m->cs - in : len;
		if (m->cl[c])
			memcpy(dst, m->cl[c] + in, n);
		else
			memset(dst, 0, n);
		off += n;
		len -= n;
		dst += n;
	}
}

static int m_is_zero(const struct model *m, uint64_t off, uint64_t len)
{
	while (len) {
		uint64_t c = off >> m->cbits, in = off & (m->cs - 1);
		uint64_t n = m->cs - in < len ? m->cs - in : len;
		if (m->cl[c] && !imgi_is_zero(m->cl[c] + in, n))
			return 0;
		off += n;
		len -= n;
	}
	return 1;
}

static void m_free(struct model *m)
{
	for (uint64_t c = 0; c < m->ncl; c++)
		free(m->cl[c]);
	free(m->cl);
}

/* ---- checks --------------------------------------------------------------- */

static void verify_range(struct state *s, uint64_t off, uint64_t len)
{
	while (len) {
		uint64_t n = len < MAX_IO ? len : MAX_IO;
		ssize_t r = img_pread(s->img, s->buf, n, off);
		if (r != (ssize_t)n)
			FUZZ_BUG("step %u (op %u): img_pread(%llu, %llu) = %zd", s->step, s->last_op,
				 (unsigned long long)off, (unsigned long long)n, r);
		m_read(&s->m, off, s->exp, n);
		if (memcmp(s->buf, s->exp, n)) {
			uint64_t i = 0;
			while (s->buf[i] == s->exp[i])
				i++;
			FUZZ_BUG("step %u (op %u): virtual byte %llu reads 0x%02x, model has 0x%02x",
				 s->step, s->last_op, (unsigned long long)(off + i), s->buf[i], s->exp[i]);
		}
		off += n;
		len -= n;
	}
}

static void verify_info_map(struct state *s)
{
	struct img_info info;
	uint64_t off = 0, alloc = 0, zero = 0, comp = 0;
	int r = img_info(s->img, &info);

	if (r)
		FUZZ_BUG("step %u (op %u): img_info = %d", s->step, s->last_op, r);
	if (info.virtual_size != s->m.vsize)
		FUZZ_BUG("step %u (op %u): virtual size %llu, model %llu", s->step, s->last_op,
			 (unsigned long long)info.virtual_size, (unsigned long long)s->m.vsize);
	if (info.cluster_size != s->m.cs)
		FUZZ_BUG("step %u: cluster size %u", s->step, info.cluster_size);
	if (info.bat_capacity < info.virtual_size)
		FUZZ_BUG("step %u: BAT capacity %llu below the virtual size", s->step,
			 (unsigned long long)info.bat_capacity);
	if (info.allocated_clusters + info.zero_clusters > (s->m.vsize + s->m.cs - 1) / s->m.cs)
		FUZZ_BUG("step %u (op %u): %llu allocated + %llu zero clusters on a %llu-cluster disk",
			 s->step, s->last_op, (unsigned long long)info.allocated_clusters,
			 (unsigned long long)info.zero_clusters,
			 (unsigned long long)((s->m.vsize + s->m.cs - 1) / s->m.cs));

	/* The map: well formed, only data extents may hold non-zero bytes, and
	 * it counts the clusters img_info counts. */
	for (unsigned i = 0; ; i++) {
		struct img_extent e;
		uint64_t ncl;
		if (i > 4 * s->m.ncl + 8)
			FUZZ_BUG("step %u: img_map does not reach the end", s->step);
		r = img_map(s->img, off, &e);
		if (r)
			FUZZ_BUG("step %u (op %u): img_map(%llu) = %d", s->step, s->last_op,
				 (unsigned long long)off, r);
		if (e.length == 0) {
			if (off != s->m.vsize)
				FUZZ_BUG("step %u: img_map ends at %llu of %llu", s->step,
					 (unsigned long long)off, (unsigned long long)s->m.vsize);
			break;
		}
		if (e.offset != off || e.length > s->m.vsize - off || e.type > IMG_EXTENT_COMPRESSED)
			FUZZ_BUG("step %u (op %u): img_map(%llu) gives %llu+%llu type %u", s->step,
				 s->last_op, (unsigned long long)off, (unsigned long long)e.offset,
				 (unsigned long long)e.length, e.type);
		if (e.type != IMG_EXTENT_DATA && e.type != IMG_EXTENT_COMPRESSED &&
		    !m_is_zero(&s->m, off, e.length))
			FUZZ_BUG("step %u (op %u): img_map says %llu+%llu is %s but the model has data",
				 s->step, s->last_op, (unsigned long long)off,
				 (unsigned long long)e.length, e.type ? "zero" : "unallocated");
		if (off & (s->m.cs - 1) || (e.length & (s->m.cs - 1) && off + e.length != s->m.vsize))
			FUZZ_BUG("step %u (op %u): img_map extent %llu+%llu is not whole clusters",
				 s->step, s->last_op, (unsigned long long)off, (unsigned long long)e.length);
		ncl = (e.length + s->m.cs - 1) >> s->m.cbits;
		if (e.type == IMG_EXTENT_DATA)
			alloc += ncl;
		else if (e.type == IMG_EXTENT_COMPRESSED)
			comp += ncl;
		else if (e.type == IMG_EXTENT_ZERO)
			zero += ncl;
		off += e.length;
	}
	if (comp != info.compressed_clusters)
		FUZZ_BUG("step %u (op %u): img_map shows %llu compressed clusters, img_info %llu",
			 s->step, s->last_op, (unsigned long long)comp,
			 (unsigned long long)info.compressed_clusters);
	if (alloc != info.allocated_clusters || zero != info.zero_clusters)
		FUZZ_BUG("step %u (op %u): img_map shows %llu data and %llu zero clusters, img_info %llu and %llu",
			 s->step, s->last_op, (unsigned long long)alloc, (unsigned long long)zero,
			 (unsigned long long)info.allocated_clusters,
			 (unsigned long long)info.zero_clusters);
}

static void verify_full(struct state *s)
{
	verify_info_map(s);
	for (uint64_t c = 0; c < s->m.ncl; c++) {
		uint64_t off = c << s->m.cbits, n;
		if (!s->m.cl[c])
			continue;
		n = s->m.vsize - off < s->m.cs ? s->m.vsize - off : s->m.cs;
		verify_range(s, off, n);
	}
	/* A few clusters the model says are empty. */
	for (unsigned i = 0; i < 4; i++) {
		uint64_t vcl = (s->m.vsize + s->m.cs - 1) >> s->m.cbits;
		uint64_t c = fuzz_mix(s->step * 4 + i) % vcl, off = c << s->m.cbits;
		uint64_t n = s->m.vsize - off < 4096 ? s->m.vsize - off : 4096;
		verify_range(s, off, n);
	}
	verify_range(s, s->m.vsize - 512, 512);
}

/* ---- open, close, reopen -------------------------------------------------- */

/* Opens data read-write; takes data (from malloc) over. */
static void open_rw(struct state *s, uint8_t *data, size_t len, const char *why)
{
	int r;
	fuzz_io_adopt(&s->f, data, len, FILE_CAP);
	s->f.save_on_close = 1;
	r = img_open_io(&s->f.io, IMG_OPEN_RDWR, &s->img);
	if (r)
		FUZZ_BUG("step %u: %s: img_open_io = %d", s->step, why, r);
}

/* Closes the handle; returns the file it left (caller frees). */
static uint8_t *close_img(struct state *s, size_t *len)
{
	uint8_t *d;
	int r = img_close(s->img);
	s->img = NULL;
	if (r)
		FUZZ_BUG("step %u: img_close = %d", s->step, r);
	d = s->f.saved;
	*len = s->f.saved_len;
	s->f.saved = NULL;
	fuzz_io_release(&s->f);
	return d;
}

/* The first problems img_check reported, for the bug message. */
static char check_msgs[1024];

static void keep_report(void *arg, enum img_check_severity sev, int fixed, const char *msg)
{
	size_t n = strlen(check_msgs);
	if (n < sizeof(check_msgs) - 1)
		snprintf(check_msgs + n, sizeof(check_msgs) - n, "[%d] %s; ", (int)sev, msg);
}

/* OPS_DUMP=DIR writes each image verify_image opens to DIR/step-N.img. */
static void dump(const struct state *s, const uint8_t *data, size_t len)
{
	const char *dir = getenv("OPS_DUMP");
	char path[512];
	FILE *f;

	if (!dir)
		return;
	snprintf(path, sizeof(path), "%s/step-%u.img", dir, s->step);
	f = fopen(path, "wb");
	if (f) {
		fwrite(data, 1, len, f);
		fclose(f);
	}
}

/* A read-only open of data: the whole model, then check must find nothing
 * (clean: after a close; after a crash leaks are allowed).  data (from
 * malloc) is lent to the backend without a copy and handed back: the
 * backend's capacity 0 fails any write, so it comes back unchanged. */
static uint8_t *verify_image(struct state *s, uint8_t *data, size_t len, int clean)
{
	struct fuzz_io g;
	struct img *keep = s->img;
	struct img_check_opts o;
	struct img_check_result res;
	int r;

	dump(s, data, len);
	fuzz_io_adopt(&g, data, len, 0);
	g.save_on_close = 1;
	r = img_open_io(&g.io, 0, &s->img);
	if (r)
		FUZZ_BUG("step %u (op %u): read-only open = %d", s->step, s->last_op, r);
	verify_full(s);
	memset(&o, 0, sizeof(o));
	o.report = keep_report;
	check_msgs[0] = 0;
	r = img_check(s->img, &o, &res);
	if (r)
		FUZZ_BUG("step %u (op %u): img_check = %d", s->step, s->last_op, r);
	if (res.corruptions || (clean && res.leaks))
		FUZZ_BUG("step %u (op %u): check finds %llu corruptions, %llu leaks: %s", s->step,
			 s->last_op, (unsigned long long)res.corruptions, (unsigned long long)res.leaks,
			 check_msgs);
	img_close(s->img);
	data = g.saved;
	if (g.saved_len != len)
		FUZZ_BUG("step %u: a read-only open changed the file's size", s->step);
	g.saved = NULL;
	fuzz_io_release(&g);
	s->img = keep;
	return data;
}

/* ---- operations ------------------------------------------------------------- */

static void fill(uint8_t *b, uint64_t off, uint64_t len, unsigned kind, uint64_t seed)
{
	if (kind == 0) {
		memset(b, 0, len);
		return;
	}
	if (kind == 1) {
		memset(b, (int)(seed | 1) & 0xff, len);
		return;
	}
	/* position-dependent: misplaced data shows */
	for (uint64_t i = 0; i < len; ) {
		uint64_t p = off + i, v = fuzz_mix(seed ^ (p >> 3) * 0x100000001b3ull);
		for (unsigned k = (unsigned)(p & 7); k < 8 && i < len; k++, i++)
			b[i] = (uint8_t)(v >> (8 * k));
	}
}

/* An offset and length inside the disk, from the input. */
static void decode_range(struct fuzz_in *in, const struct model *m, uint64_t *off,
			 uint64_t *len, int *aligned)
{
	uint8_t mode = fuzz_u8(in);
	uint32_t a = fuzz_u32(in);
	uint16_t b = fuzz_u16(in);
	uint64_t max;

	switch (mode & 3) {
	case 0:  *off = a % m->vsize; break;                        /* any byte */
	case 1:  *off = a % (m->vsize / 512) * 512; break;          /* sector */
	case 2:  *off = ((uint64_t)a % m->ncl) << m->cbits; break;  /* cluster */
	default: *off = m->vsize - 1 - a % (m->vsize < 3 * m->cs ? m->vsize : 3 * m->cs);
		 *off &= ~511ull; break;                            /* near the end */
	}
	if (*off >= m->vsize)
		*off = 0;
	switch ((mode >> 2) & 3) {
	case 0:  max = 4096; break;
	case 1:  max = m->cs; break;
	case 2:  max = 2 * m->cs; break;
	default: max = MAX_IO; break;
	}
	if (max > MAX_IO)
		max = MAX_IO;
	*len = 1 + b % max;
	if ((mode & 3) != 0 && !(mode & 0x10))
		*len = (*len + 511) & ~511ull;     /* whole sectors */
	if ((mode & 0x20) && (mode & 3) == 2)
		*len = m->cs < MAX_IO ? m->cs : MAX_IO;   /* a whole cluster */
	if (*len > m->vsize - *off)
		*len = m->vsize - *off;
	*aligned = !(*off % 512) && !(*len % 512);
}

static void op_write(struct state *s, struct fuzz_in *in)
{
	uint64_t off, len;
	int al, comp;
	unsigned kind;
	ssize_t r;

	decode_range(in, &s->m, &off, &len, &al);
	kind = fuzz_u8(in);
	/* bit 7 on a whole cluster: stored compressed (FORMAT.md 4.2) */
	comp = (kind & 0x80) && !(off & (s->m.cs - 1)) &&
	       len == (s->m.vsize - off < s->m.cs ? s->m.vsize - off : s->m.cs);
	kind %= 3;
	fill(s->buf, off, len, kind, s->step + 1);
	trace("%u: write%s %llu+%llu kind %u\n", s->step, comp ? " compressed" : "",
	      (unsigned long long)off, (unsigned long long)len, kind);
	if (comp) {
		int c = img_write_compressed(s->img, s->buf, len, off);
		if (c < 0)
			FUZZ_BUG("step %u: img_write_compressed(%llu, %llu) = %d", s->step,
				 (unsigned long long)off, (unsigned long long)len, c);
		r = (ssize_t)len;
	} else {
		r = img_pwrite(s->img, s->buf, len, off);
	}
	if (r != (ssize_t)len)
		FUZZ_BUG("step %u: img_pwrite(%llu, %llu) = %zd", s->step,
			 (unsigned long long)off, (unsigned long long)len, r);
	m_write(&s->m, off, s->buf, len);
	verify_range(s, off, len);
}

static void op_zero(struct state *s, struct fuzz_in *in, int discard)
{
	uint64_t off, len, lo, hi;
	int al, r;

	decode_range(in, &s->m, &off, &len, &al);
	trace("%u: %s %llu+%llu\n", s->step, discard ? "discard" : "zeroes",
	      (unsigned long long)off, (unsigned long long)len);
	r = discard ? img_discard(s->img, off, len) : img_write_zeroes(s->img, off, len);
	if (r == -EINVAL && !al)
		return;     /* unaligned requests may be refused */
	if (r)
		FUZZ_BUG("step %u: %s(%llu, %llu) = %d", s->step,
			 discard ? "img_discard" : "img_write_zeroes",
			 (unsigned long long)off, (unsigned long long)len, r);
	m_write(&s->m, off, NULL, len);
	lo = off > s->m.cs ? off - s->m.cs : 0;
	hi = off + len + s->m.cs < s->m.vsize ? off + len + s->m.cs : s->m.vsize;
	verify_range(s, lo, hi - lo);
}

static void op_reopen(struct state *s)
{
	size_t len;
	uint8_t *d;

	trace("%u: reopen\n", s->step);
	d = close_img(s, &len);
	d = verify_image(s, d, len, 1);
	open_rw(s, d, len, "reopen");
	verify_full(s);
}

/* Flush, take the file as it is (dirty, log not checkpointed), drop the
 * handle, and go on with the copy: what a crash after the flush leaves. */
static void op_crash(struct state *s)
{
	size_t len;
	const uint8_t *cur;
	uint8_t *copy;
	int r;

	trace("%u: crash\n", s->step);
	r = img_flush(s->img);
	if (r)
		FUZZ_BUG("step %u: img_flush = %d", s->step, r);
	cur = fuzz_io_data(&s->f, &len);
	copy = malloc(len ? len : 1);
	if (!copy)
		FUZZ_BUG("out of memory");
	memcpy(copy, cur, len);
	free(close_img(s, &(size_t){0}));
	copy = verify_image(s, copy, len, 0);
	open_rw(s, copy, len, "reopen after a crash");
	verify_full(s);
}

static void op_grow(struct state *s, struct fuzz_in *in)
{
	uint8_t kind = fuzz_u8(in);
	uint16_t a = fuzz_u16(in);
	uint64_t ns;
	struct img_info info;
	int r;

	if (img_info(s->img, &info))
		FUZZ_BUG("img_info");
	switch (kind % 3) {
	case 0:  ns = s->m.vsize + 512 * (1 + (uint64_t)a); break;
	case 1:  ns = info.bat_capacity + 512 * (1 + (uint64_t)a % 4096); break; /* grow the BAT */
	default: ns = s->m.vsize * 2; break;
	}
	if (ns > MAX_VSIZE)
		return;
	trace("%u: grow %llu -> %llu\n", s->step, (unsigned long long)s->m.vsize,
	      (unsigned long long)ns);
	r = img_resize(s->img, ns, 0);
	if (r)
		FUZZ_BUG("step %u: grow %llu -> %llu = %d", s->step,
			 (unsigned long long)s->m.vsize, (unsigned long long)ns, r);
	m_set_size(&s->m, ns);
	verify_full(s);
}

static int map_has_data(struct img *img, uint64_t off, uint64_t end)
{
	while (off < end) {
		struct img_extent e;
		if (img_map(img, off, &e) || e.length == 0)
			return 1;
		if (e.type == IMG_EXTENT_DATA || e.type == IMG_EXTENT_COMPRESSED)
			return 1;
		off += e.length;
	}
	return 0;
}

static void op_shrink(struct state *s, struct fuzz_in *in)
{
	uint8_t kind = fuzz_u8(in);
	uint32_t a = fuzz_u32(in);
	uint64_t ns, ce;
	unsigned flags = kind & 1 ? IMG_RESIZE_DISCARD_DATA : 0;
	int r, zero_past, data_past;

	if (s->m.vsize <= 512)
		return;
	ns = 512 + (uint64_t)a % (s->m.vsize / 512 - 1) * 512;
	if (kind & 2)
		ns = ns < s->m.cs ? ns : ns & ~(s->m.cs - 1);
	/* The end of the cluster holding the new end: what stays allocated. */
	ce = (ns + s->m.cs - 1) & ~(s->m.cs - 1);
	zero_past = m_is_zero(&s->m, ns, s->m.vsize - ns);
	data_past = ce < s->m.vsize && map_has_data(s->img, ce, s->m.vsize);
	trace("%u: shrink %llu -> %llu flags %u\n", s->step, (unsigned long long)s->m.vsize,
	      (unsigned long long)ns, flags);
	r = img_resize(s->img, ns, flags);
	if (r == -ENOTEMPTY && !flags) {
		if (!data_past && zero_past)
			FUZZ_BUG("step %u: shrink %llu -> %llu refused (ENOTEMPTY) with nothing past the end",
				 s->step, (unsigned long long)s->m.vsize, (unsigned long long)ns);
		verify_full(s);
		return;
	}
	if (r)
		FUZZ_BUG("step %u: shrink %llu -> %llu flags %u = %d", s->step,
			 (unsigned long long)s->m.vsize, (unsigned long long)ns, flags, r);
	if (!flags && !zero_past && !m_is_zero(&s->m, ce < s->m.vsize ? ce : s->m.vsize,
					       s->m.vsize - (ce < s->m.vsize ? ce : s->m.vsize)))
		FUZZ_BUG("step %u: shrink %llu -> %llu without DISCARD_DATA dropped data",
			 s->step, (unsigned long long)s->m.vsize, (unsigned long long)ns);
	m_set_size(&s->m, ns);
	verify_full(s);
}

/* OPS_TRACE: the image's extents with host offsets. */
static void trace_map(struct state *s)
{
	for (uint64_t off = 0; off < s->m.vsize; ) {
		struct img_extent e;
		if (img_map(s->img, off, &e) || e.length == 0)
			break;
		trace("    %llu+%llu type %d host %llu\n", (unsigned long long)e.offset,
		      (unsigned long long)e.length, (int)e.type, (unsigned long long)e.host_offset);
		off += e.length;
	}
}

static void op_compact(struct state *s, struct fuzz_in *in)
{
	struct img_compact_opts o;
	struct img_compact_stats st;
	int r;

	memset(&o, 0, sizeof(o));
	{
		unsigned f = fuzz_u8(in);
		o.flags = (f & 1 ? IMG_COMPACT_NO_ZERO_DETECT : 0) | (f & 2 ? IMG_COMPACT_COMPRESS : 0);
	}
	trace("%u: compact flags %u\n", s->step, o.flags);
	trace_map(s);
	r = img_compact(s->img, &o, &st);
	trace_map(s);
	if (r)
		FUZZ_BUG("step %u: img_compact = %d", s->step, r);
	/* Never larger than before, to the cluster.  A file may end inside
	 * its last host cluster (a cluster at the end is written only as far
	 * as its data goes, the rest is a hole), while compaction may write
	 * that cluster in full (moved, or packed with compressed payloads
	 * first placed past the end): the bound is the old size rounded up to
	 * a cluster.  Host space used (the model has no st_blocks) is not
	 * the question here. */
	if (st.file_size_after > (st.file_size_before + s->m.cs - 1) / s->m.cs * s->m.cs)
		FUZZ_BUG("step %u: compaction grew the file %llu -> %llu", s->step,
			 (unsigned long long)st.file_size_before, (unsigned long long)st.file_size_after);
	verify_full(s);
}

static void op_check(struct state *s)
{
	struct img_check_opts o;
	struct img_check_result res;
	int r;

	trace("%u: check\n", s->step);
	/* On the live handle: no corruption. */
	memset(&o, 0, sizeof(o));
	o.report = keep_report;
	check_msgs[0] = 0;
	r = img_check(s->img, &o, &res);
	if (r)
		FUZZ_BUG("step %u: img_check on the open handle = %d", s->step, r);
	if (res.corruptions)
		FUZZ_BUG("step %u: img_check on the open handle finds %llu corruptions: %s", s->step,
			 (unsigned long long)res.corruptions, check_msgs);
	op_reopen(s);   /* then closed: clean, no leak */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	struct state s;
	struct img_create_opts co;
	uint8_t b0 = fuzz_u8(&in);
	uint16_t ncl = fuzz_u16(&in);
	uint8_t sub = fuzz_u8(&in);
	size_t len;
	uint8_t *d;
	int r;
	unsigned heavy = 0;

	memset(&s, 0, sizeof(s));
	s.m.cbits = 16 + (b0 & 3) % 3;
	s.m.cs = 1ull << s.m.cbits;
	memset(&co, 0, sizeof(co));
	co.virtual_size = (1 + (uint64_t)ncl % 64) * s.m.cs - 512 * (uint64_t)(sub % 8);
	co.cluster_size = (uint32_t)s.m.cs;
	if (b0 & 4)
		co.bat_reserve = 4 * co.virtual_size;
	m_set_size(&s.m, co.virtual_size);
	s.buf = malloc(MAX_IO);
	s.exp = malloc(MAX_IO);
	if (!s.buf || !s.exp)
		FUZZ_BUG("out of memory");

	if (b0 & 8) {
		fuzz_io_init(&s.f, NULL, 0, FILE_CAP);
		r = img_create_io(&s.f.io, &co);
		if (r)
			FUZZ_BUG("img_create_io(size %llu, cluster %u) = %d",
				 (unsigned long long)co.virtual_size, co.cluster_size, r);
	} else {
		static const uint8_t uuid[16] = "ops_fuzzer uuid";
		uint8_t hdr[2 * IMG_HEADER_SLOT];
		uint64_t want = co.bat_reserve > co.virtual_size ? co.bat_reserve : co.virtual_size;
		uint64_t per = s.m.cs / IMG_BLOCK_SIZE * IMG_ENTRIES_PER_BLOCK;
		uint64_t bc = ((want + s.m.cs - 1) / s.m.cs + per - 1) / per;
		fuzz_empty_image(hdr, s.m.cbits, co.virtual_size, s.m.cs, bc, uuid);
		fuzz_io_init(&s.f, hdr, sizeof(hdr), FILE_CAP);
	}
	s.f.save_on_close = 1;
	r = img_open_io(&s.f.io, IMG_OPEN_RDWR, &s.img);
	if (r)
		FUZZ_BUG("img_open_io of a fresh image = %d", r);
	trace("create: size %llu cluster %u bat_reserve %llu %s\n",
	      (unsigned long long)co.virtual_size, co.cluster_size,
	      (unsigned long long)co.bat_reserve, b0 & 8 ? "img_create_io" : "one-cluster log");
	verify_full(&s);

	for (s.step = 1; s.step <= MAX_OPS && in.n; s.step++) {
		s.last_op = fuzz_u8(&in) % OP_NUM;
		if (s.last_op >= OP_REOPEN && ++heavy > MAX_HEAVY)
			s.last_op = OP_FLUSH;
		switch (s.last_op) {
		case OP_WRITE:
		case OP_WRITE2:  op_write(&s, &in); break;
		case OP_READ: {
			uint64_t off, l;
			int al;
			decode_range(&in, &s.m, &off, &l, &al);
			trace("%u: read %llu+%llu\n", s.step, (unsigned long long)off,
			      (unsigned long long)l);
			verify_range(&s, off, l);
			break;
		}
		case OP_DISCARD: op_zero(&s, &in, 1); break;
		case OP_ZEROES:  op_zero(&s, &in, 0); break;
		case OP_FLUSH:
			trace("%u: flush\n", s.step);
			r = img_flush(s.img);
			if (r)
				FUZZ_BUG("step %u: img_flush = %d", s.step, r);
			break;
		case OP_REOPEN:  op_reopen(&s); break;
		case OP_CRASH:   op_crash(&s); break;
		case OP_GROW:    op_grow(&s, &in); break;
		case OP_SHRINK:  op_shrink(&s, &in); break;
		case OP_COMPACT: op_compact(&s, &in); break;
		case OP_CHECK:   op_check(&s); break;
		}
		verify_info_map(&s);
	}

	verify_full(&s);
	d = close_img(&s, &len);
	d = verify_image(&s, d, len, 1);
	free(d);
	m_free(&s.m);
	free(s.buf);
	free(s.exp);
	return 0;
}
