/* SPDX-License-Identifier: MIT */
/*
 * Writes the seed corpus of the fuzz harnesses (fuzz/gen_corpus.sh runs it):
 *
 *   gen_corpus OUTDIR      writes the directories open, ops and tools in OUTDIR
 *
 * open/ (also used by check_fuzzer and tests/cli/corpus.bats) holds images.
 * The name says what a reader must do with each:
 *   valid-*  opens, and checks clean;
 *   ok-*     opens (read-only);
 *   bad-*    is refused (-EUCLEAN, -EOPNOTSUPP, or -EMEDIUMTYPE: not an image);
 *   odd-*    anything but crash.
 * The generator checks these with the library and exits 1 on a mismatch.
 *
 * Images are built small: headers written by hand with a one-cluster log (the
 * library's own default log is 1 MiB), then filled through the library on the
 * memory backend, with a fixed uuid so that the output is reproducible.
 * Malformed variants edit fields in place and recompute the checksums
 * (fuzz_fix_crcs), so that each reaches the check it is meant for.
 *
 * ops/ holds operation sequences in the layout ops_fuzzer.c decodes; tools/
 * holds size strings for tools_fuzzer.c; chain/ holds backing chains of two
 * or three images in the layout chain_fuzzer.c decodes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "testio.h"

/* Not a harness: the prototype in fuzz.h has no definition here. */

static const char *outdir;
static int mismatches;

struct blob {
	uint8_t *p;
	size_t len;
};

static void die(const char *what)
{
	fprintf(stderr, "gen_corpus: %s (%s)\n", what, img_last_error());
	exit(2);
}

static struct blob blob_copy(const void *p, size_t len)
{
	struct blob b;
	b.p = calloc(1, len ? len : 1);
	if (!b.p)
		die("out of memory");
	if (len && p)
		memcpy(b.p, p, len);
	b.len = len;
	return b;
}

static struct blob blob_dup(struct blob a, size_t len)
{
	struct blob b = blob_copy(a.p, len < a.len ? len : a.len);
	b.len = len;
	if (len > a.len) {
		uint8_t *n = realloc(b.p, len);
		if (!n)
			die("out of memory");
		memset(n + a.len, 0, len - a.len);
		b.p = n;
	}
	return b;
}

static void save(const char *sub, const char *name, const void *p, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", outdir, sub);
	if (mkdir(path, 0755) && errno != EEXIST)
		die(path);
	snprintf(path, sizeof(path), "%s/%s/%s", outdir, sub, name);
	f = fopen(path, "wb");
	if (!f || (len && fwrite(p, 1, len, f) != len) || fclose(f))
		die(path);
}

/* ---- expectations ------------------------------------------------------ */

static void verify(const char *name, struct blob b)
{
	struct fuzz_io f;
	struct img *img;
	struct img_check_opts o;
	struct img_check_result res;
	int r, cr = 1, want_open = 0, want_clean = 0, want_refused = 0;
	char got[160];

	if (!strncmp(name, "valid-", 6))
		want_open = want_clean = 1;
	else if (!strncmp(name, "ok-", 3))
		want_open = 1;
	else if (!strncmp(name, "bad-", 4))
		want_refused = 1;

	memset(&res, 0, sizeof(res));
	fuzz_io_init(&f, b.p, b.len, 0);
	r = img_open_io(&f.io, 0, &img);
	if (r == 0) {
		memset(&o, 0, sizeof(o));
		cr = img_check(img, &o, &res);
		img_close(img);
	}
	fuzz_io_release(&f);
	if (r)
		snprintf(got, sizeof(got), "refused: %s", img_last_error());
	else if (cr)
		snprintf(got, sizeof(got), "opens, check fails %d", cr);
	else
		snprintf(got, sizeof(got), "opens, %llu corruptions, %llu leaks",
			 (unsigned long long)res.corruptions, (unsigned long long)res.leaks);
	if ((want_open && r) || (want_refused && r != -EUCLEAN && r != -EOPNOTSUPP && r != -EMEDIUMTYPE) ||
	    (want_clean && (cr || res.corruptions || res.leaks))) {
		printf("  MISMATCH %-28s %7zu  %s\n", name, b.len, got);
		mismatches++;
	} else if (getenv("GEN_VERBOSE")) {
		printf("  %-37s %7zu  %s\n", name, b.len, got);
	}
}

static void emit(const char *name, struct blob b)
{
	verify(name, b);
	save("open", name, b.p, b.len);
}

static void emit_free(const char *name, struct blob b)
{
	emit(name, b);
	free(b.p);
}

/* ---- building images --------------------------------------------------- */

static const uint8_t fixed_uuid[16] = {
	0x6c, 0x69, 0x62, 0x69, 0x6d, 0x67, 0x2d, 0x66,
	0x75, 0x7a, 0x7a, 0x2d, 0x73, 0x65, 0x65, 0x64,
};

/* Header field offsets (FORMAT.md §3). */
enum { H_VERSION = 8, H_HSIZE = 12, H_CRC = 16, H_CBITS = 20, H_SEQ = 24,
       H_INCOMPAT = 32, H_ROCOMPAT = 40, H_COMPAT = 48, H_FLAGS = 56, H_VSIZE = 64,
       H_LOGOFF = 72, H_LOGSIZE = 80, H_LOGSEQ = 88, H_BATOFF = 96, H_BATCL = 104,
       H_UUID = 112 };

static void set64(struct blob *b, unsigned field, uint64_t v)
{
	for (unsigned s = 0; s < 2; s++)
		if (b->len >= (s + 1) * IMG_HEADER_SLOT)
			put_le64(b->p + s * IMG_HEADER_SLOT + field, v);
}

static void set32(struct blob *b, unsigned field, uint32_t v)
{
	for (unsigned s = 0; s < 2; s++)
		if (b->len >= (s + 1) * IMG_HEADER_SLOT)
			put_le32(b->p + s * IMG_HEADER_SLOT + field, v);
}

static struct blob fixed(struct blob b)
{
	fuzz_fix_crcs(b.p, b.len);
	return b;
}

/* An empty image: just the two headers, a log of log_size. */
static struct blob hand(unsigned cbits, uint64_t vsize, uint64_t log_size, uint64_t bat_clusters)
{
	struct blob b = blob_copy(NULL, 2 * IMG_HEADER_SLOT);
	fuzz_empty_image(b.p, cbits, vsize, log_size, bat_clusters, fixed_uuid);
	return b;
}

static struct img *open_rw(struct fuzz_io *f, struct blob b)
{
	struct img *img;
	fuzz_io_init(f, b.p, b.len, 1ull << 30);
	f->save_on_close = 1;
	if (img_open_io(&f->io, IMG_OPEN_RDWR, &img))
		die("cannot open a generated image read-write");
	return img;
}

/* Closes cleanly and returns what the close left. */
static struct blob close_rw(struct fuzz_io *f, struct img *img)
{
	struct blob b;
	if (img_close(img))
		die("img_close");
	b.p = f->saved;
	b.len = f->saved_len;
	f->saved = NULL;
	fuzz_io_release(f);
	return b;
}

/* Flushes and returns the file as a crash right now would leave it: dirty,
 * the log not checkpointed.  The handle is then dropped. */
static struct blob crash_rw(struct fuzz_io *f, struct img *img)
{
	size_t len;
	const uint8_t *d;
	struct blob b;

	if (img_flush(img))
		die("img_flush");
	d = fuzz_io_data(f, &len);
	b = blob_copy(d, len);
	free(close_rw(f, img).p);
	return b;
}

static void wr(struct img *img, uint64_t off, size_t len, uint8_t seed)
{
	uint8_t *buf = malloc(len);
	if (!buf)
		die("out of memory");
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed + i * 7 + (i >> 9));
	if (img_pwrite(img, buf, len, off) != (ssize_t)len)
		die("img_pwrite");
	free(buf);
}

/* Drops trailing zero bytes (they read back the same past the end of the
 * file), but never below `keep`. */
static void trim(struct blob *b, size_t keep)
{
	while (b->len > keep && !b->p[b->len - 1])
		b->len--;
}

static uint64_t bat_entry_off(const struct blob *b, uint64_t i)
{
	uint64_t bat = get_le64(b->p + H_BATOFF);
	return bat + 4096 * (i / IMG_ENTRIES_PER_BLOCK) + IMG_BAT_HDR + 8 * (i % IMG_ENTRIES_PER_BLOCK);
}

static uint64_t get_entry(const struct blob *b, uint64_t i)
{
	uint64_t o = bat_entry_off(b, i);
	return o + 8 <= b->len ? get_le64(b->p + o) : 0;
}

static void set_entry(struct blob *b, uint64_t i, uint64_t e)
{
	uint64_t o = bat_entry_off(b, i);
	if (o + 8 > b->len)
		die("BAT entry past the end of the image");
	put_le64(b->p + o, e);
}

/* ---- the image corpus ---------------------------------------------------- */

static void header_variants(struct blob base)
{
	struct blob b;
	static const struct { const char *name; unsigned field; int width; uint64_t v; } f[] = {
		{ "bad-hdr-version-2",        H_VERSION,  32, 2 },
		{ "bad-hdr-size-120",         H_HSIZE,    32, 120 },
		{ "bad-hdr-size-132",         H_HSIZE,    32, 132 },
		{ "bad-hdr-size-8192",        H_HSIZE,    32, 8192 },
		{ "ok-hdr-size-256",          H_HSIZE,    32, 256 },
		{ "bad-hdr-cbits-15",         H_CBITS,    32, 15 },
		{ "bad-hdr-cbits-27",         H_CBITS,    32, 27 },
		{ "bad-hdr-cbits-huge",       H_CBITS,    32, 0x80000010u },
		{ "bad-hdr-seq-0",            H_SEQ,      64, 0 },
		{ "bad-hdr-incompat",         H_INCOMPAT, 64, 1ull << 40 },
		{ "ok-hdr-rocompat",          H_ROCOMPAT, 64, 1ull << 63 },
		{ "ok-hdr-compat",            H_COMPAT,   64, 5 },
		{ "bad-hdr-flags",            H_FLAGS,    64, 2 },
		{ "ok-hdr-dirty",             H_FLAGS,    64, 1 },
		{ "bad-hdr-vsize-0",          H_VSIZE,    64, 0 },
		{ "bad-hdr-vsize-511",        H_VSIZE,    64, 511 },
		{ "bad-hdr-vsize-odd",        H_VSIZE,    64, (1u << 20) + 100 },
		{ "bad-hdr-vsize-over-bat",   H_VSIZE,    64, 509ull << 20 },
		{ "bad-hdr-vsize-2e57",       H_VSIZE,    64, (1ull << 57) + 512 },
		{ "bad-hdr-vsize-max",        H_VSIZE,    64, UINT64_MAX - 511 },
		{ "bad-hdr-logoff",           H_LOGOFF,   64, 4096 },
		{ "bad-hdr-logsize-4k",       H_LOGSIZE,  64, 4096 },
		{ "bad-hdr-logsize-2e63",     H_LOGSIZE,  64, 1ull << 63 },
		{ "bad-hdr-batoff",           H_BATOFF,   64, 3ull << 16 },
		{ "bad-hdr-batoff-wrap",      H_BATOFF,   64, UINT64_MAX - 4095 },
		{ "bad-hdr-batcl-0",          H_BATCL,    64, 0 },
		{ "bad-hdr-batcl-2e40",       H_BATCL,    64, 1ull << 40 },
		{ "bad-hdr-batcl-wrap",       H_BATCL,    64, 1ull << 48 },
	};

	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		b = blob_dup(base, base.len);
		if (f[i].width == 32)
			set32(&b, f[i].field, (uint32_t)f[i].v);
		else
			set64(&b, f[i].field, f[i].v);
		emit(f[i].name, fixed(b));
		free(b.p);
	}

	/* A consistent log size other than one cluster: 3 clusters. */
	b = blob_dup(base, base.len);
	set64(&b, H_LOGSIZE, 3 << 16);
	set64(&b, H_BATOFF, 4 << 16);
	emit("valid-hdr-log-3-clusters", fixed(b));
	free(b.p);

	/* Reserved bytes of the slot. */
	b = blob_dup(base, base.len);
	b.p[200] = 1;
	b.p[IMG_HEADER_SLOT + 200] = 1;
	emit("bad-hdr-reserved", fixed(b));
	free(b.p);

	/* Copy A broken or missing: B is used. */
	b = blob_dup(base, base.len);
	b.p[H_CRC] ^= 0x40;
	emit("ok-hdr-a-crc", b);
	free(b.p);
	b = blob_dup(base, base.len);
	memset(b.p, 0, IMG_HEADER_SLOT);
	emit("ok-hdr-a-zero", b);
	free(b.p);
	b = blob_dup(base, 6000);         /* B torn: A is used */
	emit("ok-hdr-b-torn", b);
	free(b.p);
	b = blob_dup(base, base.len);
	b.p[H_CRC] ^= 1;
	b.p[IMG_HEADER_SLOT + H_CRC] ^= 1;
	emit("bad-hdr-both-crc", b);
	free(b.p);
	b = blob_dup(base, base.len);
	b.p[0] = 0x88;
	b.p[IMG_HEADER_SLOT] = 0x88;
	emit("bad-hdr-both-magic", b);
	free(b.p);

	/* Equal sequence numbers, different contents. */
	b = blob_dup(base, base.len);
	put_le64(b.p + IMG_HEADER_SLOT + H_SEQ, 2);
	b.p[IMG_HEADER_SLOT + H_UUID] ^= 0xff;
	emit("bad-hdr-equal-seq", fixed(b));
	free(b.p);
	/* Equal sequence numbers, same contents: fine. */
	b = blob_dup(base, base.len);
	put_le64(b.p + IMG_HEADER_SLOT + H_SEQ, 2);
	emit("valid-hdr-equal-seq-same", fixed(b));
	free(b.p);
	/* B newer than A but broken: A is used. */
	b = blob_dup(base, base.len);
	put_le64(b.p + IMG_HEADER_SLOT + H_SEQ, 9);
	put_le64(b.p + IMG_HEADER_SLOT + H_VSIZE, 0);
	emit("ok-hdr-b-newer-invalid", fixed(b));
	free(b.p);

	/* Short files. */
	emit_free("bad-empty", blob_dup(base, 0));
	b = blob_dup(base, 100);
	emit("bad-short-100", b);
	free(b.p);
	b = blob_copy(NULL, 8192);
	emit("bad-zeros-8k", b);
	free(b.p);

	/* Deterministic byte flips, as given and with checksums recomputed. */
	for (unsigned i = 0; i < 6; i++) {
		char name[64];
		b = blob_dup(base, base.len);
		for (unsigned k = 0; k < 1 + i; k++) {
			uint64_t x = fuzz_mix(i * 16 + k);
			size_t pos = (size_t)(x % 128) + (x & (1ull << 40) ? IMG_HEADER_SLOT : 0);
			b.p[pos] ^= (uint8_t)(1u << ((x >> 8) & 7));
		}
		snprintf(name, sizeof(name), "odd-hdr-flip-%u", i);
		emit(name, b);
		snprintf(name, sizeof(name), "odd-hdr-flip-%u-fixed", i);
		emit(name, fixed(b));
		free(b.p);
	}
}

/* The image with data every BAT variant starts from: 64 KiB clusters, one
 * cluster of log, 1 MiB virtual.  Cluster 0 holds data (written in two
 * pieces, one unaligned, part of it discarded), cluster 5 is a zero cluster.
 * The BAT block is in place after the clean close. */
static struct blob data_image(void)
{
	struct fuzz_io f;
	struct blob b = hand(16, 1 << 20, 1 << 16, 1), r;
	struct img *img = open_rw(&f, b);

	free(b.p);
	wr(img, 0, 4096, 1);
	wr(img, 5000, 700, 2);
	if (img_write_zeroes(img, 5 << 16, 1 << 16))
		die("img_write_zeroes");
	if (img_discard(img, 1024, 512))
		die("img_discard");
	r = close_rw(&f, img);
	trim(&r, 0);
	if (IMG_E_STATE(get_entry(&r, 0)) != IMG_E_ALLOC)
		die("the data image has no allocated entry in place");
	return r;
}

static void bat_variants(struct blob d)
{
	struct blob b;
	uint64_t e0 = get_entry(&d, 0), h0 = IMG_E_PAYLOAD(e0);
	uint64_t bat = get_le64(d.p + H_BATOFF);

	emit("valid-c64k-data", d);

	/* Block-level problems; the data past the block is not needed. */
	b = blob_dup(d, bat + 4096);
	b.p[bat + 4] ^= 0x10;
	emit("bad-bat-crc", b);
	free(b.p);
	b = blob_dup(d, bat + 4096);
	put_le64(b.p + bat + 8, 7);
	emit("bad-bat-index", fixed(b));
	free(b.p);

	/* Entry problems. */
	b = blob_dup(d, d.len);
	set_entry(&b, 3, e0);
	emit("bad-entry-dup", fixed(b));
	free(b.p);

	b = blob_dup(d, d.len);
	set_entry(&b, 1, IMG_E_MAKE(3, 0));                  /* compressed: unknown here */
	set_entry(&b, 2, IMG_E_MAKE(0, 5));                  /* unallocated with a payload */
	set_entry(&b, 3, IMG_E_MAKE(IMG_E_ALLOC, 1));        /* inside the log */
	set_entry(&b, 4, IMG_E_MAKE(IMG_E_ALLOC, 1ull << 32)); /* index too large */
	set_entry(&b, 6, IMG_E_MAKE(IMG_E_ALLOC, h0 + 50));  /* past the end of the file */
	set_entry(&b, 7, IMG_E_MAKE(15, 0));                 /* reserved state */
	set_entry(&b, 16, IMG_E_MAKE(IMG_E_ZERO, 0));        /* past the virtual size */
	emit("bad-entries-mixed", fixed(b));
	free(b.p);

	/* Repair that must not make data worse (issue 15 #5): a duplicate of
	 * a cluster whose last 60 KiB are zeros, where the lowest free cluster
	 * holds leaked bytes that a sparse copy would let through. */
	b = blob_dup(d, (h0 + 2) << 16);
	memset(b.p + ((h0 + 1) << 16), 0xa5, 1 << 16);
	set_entry(&b, 3, e0);
	emit("bad-dup-over-leak", fixed(b));
	free(b.p);
	/* Bytes of the last cluster past the virtual size (#9): the disk is
	 * 32 KiB short of its last cluster, which is all 0x77. */
	b = blob_dup(d, (h0 + 2) << 16);
	memset(b.p + ((h0 + 1) << 16), 0x77, 1 << 16);
	set_entry(&b, 15, IMG_E_MAKE(IMG_E_ALLOC, h0 + 1));
	set64(&b, H_VSIZE, (1 << 20) - (32 << 10));
	emit("ok-tail-past-vsize", fixed(b));
	free(b.p);

	/* A leak: a host cluster with data that nothing maps (clean image). */
	b = blob_dup(d, (h0 + 2) << 16);
	memset(b.p + ((h0 + 1) << 16), 0x5a, 512);
	trim(&b, 0);
	emit("ok-leak", b);
	free(b.p);
}

/* Compressed clusters (FORMAT.md 4.2): four payloads packed in one host
 * cluster, one cluster stored normally, one compressed cluster rewritten. */
static struct blob comp_image(void)
{
	struct fuzz_io f;
	struct blob b = hand(16, 1 << 20, 1 << 16, 1), r;
	struct img *img = open_rw(&f, b);
	uint8_t *buf = malloc(1 << 16);

	free(b.p);
	if (!buf)
		die("out of memory");
	for (unsigned c = 0; c < 6; c++) {
		for (unsigned i = 0; i < 1u << 16; i++)
			buf[i] = (uint8_t)("libimg lz4 "[(i / (c + 3)) % 11] + (i % 1000 == 0 ? c : 0));
		if (img_write_compressed(img, buf, 1 << 16, (uint64_t)c << 16) != 1)
			die("img_write_compressed");
	}
	wr(img, 9 << 16, 1 << 16, 9);          /* incompressible enough: normal */
	wr(img, (5 << 16) + 100, 300, 3);     /* a compressed cluster rewritten */
	free(buf);
	r = close_rw(&f, img);
	trim(&r, 0);
	if (IMG_E_STATE(get_entry(&r, 1)) != IMG_E_COMP)
		die("the compressed image has no compressed entry in place");
	return r;
}

static void comp_variants(struct blob d)
{
	struct blob b;
	uint64_t e1 = get_entry(&d, 1), e2 = get_entry(&d, 2), s1 = IMG_C_SECTOR(e1);
	uint64_t p = s1 * 512;

	emit("valid-c64k-compressed", d);

	b = blob_dup(d, d.len);                 /* payloads share sectors */
	set_entry(&b, 2, IMG_C_MAKE(s1 + IMG_C_COUNT(e1) - 1, IMG_C_COUNT(e2)));
	emit("bad-comp-overlap", fixed(b));
	free(b.p);
	b = blob_dup(d, d.len);                 /* crossing a host cluster */
	set_entry(&b, 2, IMG_C_MAKE(s1 | 127, 2));
	emit("bad-comp-cross", fixed(b));
	free(b.p);
	b = blob_dup(d, d.len);                 /* as long as a cluster */
	set_entry(&b, 2, IMG_C_MAKE(s1 & ~127ull, 128));
	emit("bad-comp-long", fixed(b));
	free(b.p);
	b = blob_dup(d, d.len);                 /* inside the log */
	set_entry(&b, 2, IMG_C_MAKE(200, 1));
	emit("bad-comp-metadata", fixed(b));
	free(b.p);
	b = blob_dup(d, d.len);                 /* the feature bit cleared */
	set64(&b, H_INCOMPAT, get_le64(b.p + H_INCOMPAT) & ~IMG_INCOMPAT_COMPRESSED);
	emit("bad-comp-nofeature", fixed(b));
	free(b.p);
	/* Payload damage: the image opens, reads of that cluster fail. */
	b = blob_dup(d, d.len);
	b.p[p + 20] ^= 0x40;
	emit("ok-comp-bad-crc", b);
	free(b.p);
	b = blob_dup(d, d.len);
	{
		uint32_t clen = get_le32(b.p + p);
		memset(b.p + p + 8, 0xF0, clen > 32 ? 32 : clen);
		put_le32(b.p + p + 4, imgi_crc32c(0, b.p + p + 8, clen));
	}
	emit("ok-comp-bad-lz4", b);
	free(b.p);
	b = blob_dup(d, d.len);
	put_le32(b.p + p, 0xFFFFFFF0u);
	emit("ok-comp-bad-clen", b);
	free(b.p);
	/* A compressed last cluster whose bytes past the virtual size are not
	 * zero (issue 15 #9): the disk ends in the middle of cluster 4. */
	b = blob_dup(d, d.len);
	set_entry(&b, 5, 0);
	set_entry(&b, 9, 0);
	set64(&b, H_VSIZE, (4 << 16) + (32 << 10));
	emit("ok-comp-tail-past-vsize", fixed(b));
	free(b.p);
}

/* A duplicate while a BAT block is unreadable (issue 15 #5): the repair's
 * copy must not go into the cluster that block maps (cluster 600's), the
 * lowest that looks free. */
static void bad_block_dup_image(void)
{
	struct fuzz_io f;
	struct blob b = hand(16, 64 << 20, 1 << 16, 1), r;
	struct img *img = open_rw(&f, b);

	free(b.p);
	wr(img, 0, 4096, 1);
	wr(img, 1 << 16, 4096, 2);
	wr(img, 2 << 16, 4096, 3);
	wr(img, 600ull << 16, 4096, 4);
	r = close_rw(&f, img);
	trim(&r, 0);
	set_entry(&r, 9, get_entry(&r, 2));
	fuzz_fix_crcs(r.p, r.len);
	r.p[bat_entry_off(&r, 1000)] ^= 1;          /* block 1: bad crc */
	emit("bad-dup-bad-block", r);
	free(r.p);
}

/* Grown BAT: 64 KiB clusters hold 8128 entries (508 MiB) per BAT cluster. */
static struct blob grown_image(void)
{
	struct fuzz_io f;
	struct blob b = hand(16, 1 << 20, 1 << 16, 1), r;
	struct img *img = open_rw(&f, b);

	free(b.p);
	wr(img, 0, 512, 3);                          /* in the way of the BAT */
	if (img_resize(img, 600ull << 20, 0))
		die("img_resize to 600 MiB");
	if (img_write_zeroes(img, 590ull << 20, 1 << 16))   /* a block in the new BAT cluster */
		die("img_write_zeroes");
	r = close_rw(&f, img);
	trim(&r, 0);
	return r;
}

/* Dirty with log transactions not checkpointed. */
static struct blob dirty_image(void)
{
	struct fuzz_io f;
	struct blob b = hand(16, 1 << 20, 1 << 16, 1);
	struct img *img = open_rw(&f, b);

	free(b.p);
	wr(img, 100, 1000, 4);
	if (img_write_zeroes(img, 3 << 16, 1 << 16))
		die("img_write_zeroes");
	if (img_flush(img))
		die("img_flush");
	wr(img, 2000, 512, 5);
	b = crash_rw(&f, img);
	trim(&b, 0);
	return b;
}

static void log_variants(struct blob d)
{
	uint64_t log = get_le64(d.p + H_LOGOFF);
	struct blob b;

	emit("ok-c64k-dirty-log", d);
	if (get_le32(d.p + log) != IMG_LOG_MAGIC) {
		printf("  note: no log transaction at the start of the log; skipping log variants\n");
		return;
	}
	/* The first payload torn: replay stops before it. */
	b = blob_dup(d, d.len);
	b.p[log + 4096 + 100] ^= 1;
	emit("ok-log-payload-torn", b);
	free(b.p);
}

static void library_images(void)
{
	struct fuzz_io f;
	struct img_create_opts o;
	struct blob b;

	/* As img_create_io makes them (1 MiB log), trailing zeros trimmed. */
	memset(&o, 0, sizeof(o));
	o.virtual_size = 16 << 20;
	fuzz_io_init(&f, NULL, 0, 1ull << 30);
	if (img_create_io(&f.io, &o))
		die("img_create_io");
	{
		size_t len;
		const uint8_t *d = fuzz_io_data(&f, &len);
		b = blob_copy(d, len);
	}
	fuzz_io_release(&f);
	trim(&b, 0);
	memcpy(b.p + H_UUID, fixed_uuid, 16);
	memcpy(b.p + IMG_HEADER_SLOT + H_UUID, fixed_uuid, 16);
	emit("valid-create-default", fixed(b));
	free(b.p);
}

static void images(void)
{
	struct blob base = hand(16, 1 << 20, 1 << 16, 1), d;

	emit("valid-c64k-empty", base);
	emit_free("valid-c128k-empty", hand(17, 4 << 20, 1 << 17, 1));
	emit_free("valid-c1m-empty", hand(20, 64 << 20, 1 << 20, 1));
	emit_free("valid-c64m-empty", hand(26, 1ull << 30, 1 << 26, 1));
	/* The largest 64 KiB-cluster disk: 2^27 clusters, 8 TiB. */
	emit_free("valid-c64k-8tib", hand(16, 1ull << 43, 1 << 16, ((1ull << 27) + 8127) / 8128));
	/* 64 MiB clusters, 2 GiB of BAT: the largest BAT region. */
	emit_free("valid-c64m-maxbat", hand(26, 1ull << 50, 1 << 26, 32));
	library_images();
	header_variants(base);

	d = data_image();
	bat_variants(d);
	free(d.p);
	comp_variants(d = comp_image());
	free(d.p);
	bad_block_dup_image();
	emit("valid-c64k-grown", d = grown_image());
	free(d.p);
	log_variants(d = dirty_image());
	free(d.p);
	free(base.p);
}

/* ---- ops sequences --------------------------------------------------------- */

struct seq {
	uint8_t b[512];
	size_t n;
};

static void put8(struct seq *s, unsigned v) { s->b[s->n++] = (uint8_t)v; }
static void put16(struct seq *s, unsigned v) { put8(s, v & 0xff); put8(s, v >> 8); }
static void put32(struct seq *s, uint32_t v) { put16(s, v & 0xffff); put16(s, v >> 16); }

/* mode: bits 0-1 where (byte, sector, cluster, near end), 2-3 length class,
 * bit 4 unaligned length, bit 5 whole cluster. */
static void range(struct seq *s, unsigned mode, uint32_t where, unsigned len)
{
	put8(s, mode);
	put32(s, where);
	put16(s, len);
}

static void ops(void)
{
	struct seq s;

	/* Basic I/O on a 16-cluster disk. */
	memset(&s, 0, sizeof(s));
	put8(&s, 0); put16(&s, 15); put8(&s, 0);
	put8(&s, OP_WRITE);   range(&s, 0x1c, 1000, 3000); put8(&s, 2);
	put8(&s, OP_WRITE);   range(&s, 0x26, 3, 0); put8(&s, 2);
	put8(&s, OP_READ);    range(&s, 0x0c, 0, 60000);
	put8(&s, OP_ZEROES);  range(&s, 0x26, 3, 0);
	put8(&s, OP_DISCARD); range(&s, 0x01, 700, 5000);
	put8(&s, OP_FLUSH);
	put8(&s, OP_WRITE);   range(&s, 0x0f, 100, 9000); put8(&s, 1);
	put8(&s, OP_REOPEN);
	put8(&s, OP_READ);    range(&s, 0x0c, 0, 65535);
	put8(&s, OP_CHECK);
	save("ops", "basic-io", s.b, s.n);

	/* Grow past the BAT (relocation), then shrink and compact. */
	memset(&s, 0, sizeof(s));
	put8(&s, 0); put16(&s, 3); put8(&s, 0);
	put8(&s, OP_WRITE);   range(&s, 0x26, 0, 0); put8(&s, 2);
	put8(&s, OP_WRITE);   range(&s, 0x26, 1, 0); put8(&s, 2);
	put8(&s, OP_GROW);    put8(&s, 1); put16(&s, 300);
	put8(&s, OP_WRITE);   range(&s, 0x0f, 7, 4000); put8(&s, 2);
	put8(&s, OP_REOPEN);
	put8(&s, OP_SHRINK);  put8(&s, 3); put32(&s, 5);
	put8(&s, OP_COMPACT); put8(&s, 0);
	put8(&s, OP_CHECK);
	save("ops", "grow-shrink-compact", s.b, s.n);

	/* Crashes after flushes: the log is replayed. */
	memset(&s, 0, sizeof(s));
	put8(&s, 1); put16(&s, 7); put8(&s, 3);    /* 128 KiB clusters, odd size */
	put8(&s, OP_WRITE);   range(&s, 0x0d, 200000, 30000); put8(&s, 2);
	put8(&s, OP_WRITE);   range(&s, 0x03, 5, 2000); put8(&s, 1);
	put8(&s, OP_CRASH);
	put8(&s, OP_DISCARD); range(&s, 0x06, 0, 0);
	put8(&s, OP_ZEROES);  range(&s, 0x01, 9, 3000);
	put8(&s, OP_CRASH);
	put8(&s, OP_WRITE);   range(&s, 0x1c, 77777, 12345); put8(&s, 2);
	put8(&s, OP_CRASH);
	put8(&s, OP_CHECK);
	save("ops", "crash-replay", s.b, s.n);

	/* Compaction: zero clusters detected, live ones moved down. */
	memset(&s, 0, sizeof(s));
	put8(&s, 2 | 4); put16(&s, 11); put8(&s, 0);   /* 256 KiB, bat_reserve */
	for (unsigned c = 0; c < 6; c++) {
		put8(&s, OP_WRITE); range(&s, 0x26, c, 0); put8(&s, c & 1 ? 0 : 2);
	}
	put8(&s, OP_DISCARD); range(&s, 0x26, 0, 0);
	put8(&s, OP_DISCARD); range(&s, 0x26, 2, 0);
	put8(&s, OP_COMPACT); put8(&s, 0);
	put8(&s, OP_REOPEN);
	put8(&s, OP_COMPACT); put8(&s, 1);
	put8(&s, OP_SHRINK);  put8(&s, 0); put32(&s, 3);      /* may be refused */
	put8(&s, OP_GROW);    put8(&s, 2); put16(&s, 0);
	put8(&s, OP_CHECK);
	save("ops", "compact", s.b, s.n);

	/* Unaligned discards and zeroes, tail of an odd-sized disk. */
	memset(&s, 0, sizeof(s));
	put8(&s, 0); put16(&s, 2); put8(&s, 5);
	put8(&s, OP_WRITE);   range(&s, 0x0f, 0, 65535); put8(&s, 2);
	put8(&s, OP_WRITE);   range(&s, 0x2e, 2, 0); put8(&s, 2);
	put8(&s, OP_DISCARD); range(&s, 0x10, 333, 777);
	put8(&s, OP_ZEROES);  range(&s, 0x10, 4444, 55);
	put8(&s, OP_SHRINK);  put8(&s, 0); put32(&s, 150);
	put8(&s, OP_GROW);    put8(&s, 0); put16(&s, 7);
	put8(&s, OP_READ);    range(&s, 0x03, 0, 4000);
	put8(&s, OP_CRASH);
	put8(&s, OP_REOPEN);
	save("ops", "unaligned-tail", s.b, s.n);

	/* Compressed clusters: written, rewritten, discarded, compacted
	 * (with and without compression), across a crash and a shrink. */
	memset(&s, 0, sizeof(s));
	put8(&s, 0); put16(&s, 9); put8(&s, 0);
	for (unsigned c = 0; c < 8; c++) {
		put8(&s, OP_WRITE); range(&s, 0x26, c, 0); put8(&s, 0x80 | (c % 3));
	}
	put8(&s, OP_READ);    range(&s, 0x0c, 0, 65535);
	put8(&s, OP_WRITE);   range(&s, 0x1c, 70000, 3000); put8(&s, 1);
	put8(&s, OP_DISCARD); range(&s, 0x26, 4, 0);
	put8(&s, OP_ZEROES);  range(&s, 0x10, 3 * 65536 + 100, 900);
	put8(&s, OP_FLUSH);
	put8(&s, OP_CRASH);
	put8(&s, OP_COMPACT); put8(&s, 0);
	put8(&s, OP_WRITE);   range(&s, 0x26, 9, 0); put8(&s, 2);
	put8(&s, OP_COMPACT); put8(&s, 2);
	put8(&s, OP_SHRINK);  put8(&s, 0); put32(&s, 200);
	put8(&s, OP_REOPEN);
	put8(&s, OP_CHECK);
	save("ops", "compressed", s.b, s.n);
}

/* ---- inputs for tools_fuzzer (first byte: the target) ------------------------ */

static void tools(void)
{
	static const char *const sizes[] = {
		"0", "512", "1", "4096", "1K", "1k", "64K", "1M", "10G", "1T", "8T", "1P", "1E",
		"16E", "1.5G", "0.5K", "1.0000000000000000001K", "0x1000", "010", " 1G", "1G ",
		"1GB", "1GiB", "1gib", "1B", "1 G", "-1", "-1G", "+1G", "+0", "-512", "+", "-", "",
		"G", "K1", ".5K", "1.", "18446744073709551615", "18446744073709551616",
		"18446744073709551615K", "17179869184G", "16777216T", "15.999999999999999999E",
		"99999999999999999999999999", "1e9", "inf", "nan", "+-1", "++1", "--1", "1KK",
	};
	static const char *const names[] = {
		"disk.img", "a \"quoted\" name", "back\\slash", "tab\there", "nl\nx", "\x7f\x01",
		"caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x92\xbe", "\xc3", "\xc0\xaf", "\xed\xa0\x80",
		"\xf4\x90\x80\x80", "\xe0\x80\xaf", "\xff\xfe",
		/* backing references a hostile image may hold (issue 15 #4) */
		"b\x1b[31mx\ny.img", "csi \xc2\x9b 2J", "\x1b]0;title\x07", "0123456789abc\xc3\xa9\xc3\xa9",
	};
	static const char argvs[][48] = {
		"disk.img\0-5G", "--size\0" "10G\0disk.img", "-s\0" "1G\0-j\0x", "--\0-r\0-5G",
		"--cluster-size=64K\0--json\0f", "-jpr\0--help", "--size", "-s", "--bogus\0-Z\0f",
		"-.5G\0--\0--", "--siz=3\0--js",
	};
	uint8_t buf[256];
	char name[32];

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t cur = i % 3 == 0 ? 0 : i % 3 == 1 ? (1ull << 30) : UINT64_MAX - 511;
		size_t n = strlen(sizes[i]);
		buf[0] = 0;
		put_le64(buf + 1, cur);
		memcpy(buf + 9, sizes[i], n);
		snprintf(name, sizeof(name), "size-%02zu", i);
		save("tools", name, buf, 9 + n);
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		size_t n = strlen(names[i]);
		buf[0] = 1;
		memcpy(buf + 1, names[i], n);
		snprintf(name, sizeof(name), "json-%02zu", i);
		save("tools", name, buf, 1 + n);
	}
	for (size_t i = 0; i < sizeof(argvs) / sizeof(argvs[0]); i++) {
		size_t n = sizeof(argvs[i]);
		while (n && !argvs[i][n - 1])
			n--;
		buf[0] = 2;
		memcpy(buf + 1, argvs[i], n);
		snprintf(name, sizeof(name), "argv-%02zu", i);
		save("tools", name, buf, 1 + n);
	}
	/* imgserve's answers (tools/online/control.h): target 4 */
	static const char *const replies[] = {
		"{}", " { } ",
		("{\"pid\": 4242,\"image\": \"/srv/a.img\",\"export\": \"/run/libimg/0123/disk\","
		 "\"open\": true,\"virtual_size\": 10737418240,\"read_only\": false,\"reads\": 0}"),
		"{\"old_size\": 1048576,\"new_size\": 18446744073709551615}",
		"{\"snapshot\": \"a.img.snap1\",\"x\": null}",
		"{\"k\": \"q\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\\u0085\"}",
		"{\"k\": \"caf\xc3\xa9 \xff raw\"}",
		"{\"a\": 1,}", "{\"a\": -1}", "{\"a\": 1.5}", "{\"a\": {}}", "{\"a\": \"\\ud800\"}",
		"{\"a\": 18446744073709551616}", "{\"a\": \"\\u0000\"}", "{\"a\": tru}", "ok {}",
	};
	for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
		size_t n = strlen(replies[i]);
		buf[0] = 4;
		memcpy(buf + 1, replies[i], n);
		snprintf(name, sizeof(name), "reply-%02zu", i);
		save("tools", name, buf, 1 + n);
	}
	for (unsigned i = 0; i < 6; i++) {
		static const uint64_t v[] = { 0, 1023, 1024, 1536, 1ull << 40, UINT64_MAX };
		buf[0] = 3;
		put_le64(buf + 1, v[i]);
		snprintf(name, sizeof(name), "human-%u", i);
		save("tools", name, buf, 9);
	}
}

/* ---- chains (chain_fuzzer.c) ------------------------------------------- */

/* The image of b with an open handle over it: the backing for a delta.
 * The handle owns a fresh backend (the blob is copied). */
static struct img *open_ro(struct blob b)
{
	struct img_io *io;
	struct img *img = NULL;
	if (img_io_mem_new(b.p, b.len, &io) || img_open_io(io, IMG_OPEN_NO_BACKING, &img))
		die("cannot open a generated image");
	return img;
}

/* A new delta of vsize (0: the backing's) over the image in blob below
 * (itself opened over below2 when that is not empty), with writes w of
 * len bytes at off[i] (seed i + base), the file left clean. */
static struct blob delta_image(struct blob below, struct blob below2, uint64_t vsize,
			       const uint64_t *off, const size_t *len, unsigned nw, uint8_t base,
			       int compress_first)
{
	struct fuzz_io f;
	struct img *back, *img;
	struct img_io *io;
	struct imgi_header h;
	struct blob r, d;

	back = open_ro(below);
	if (below2.len) {
		struct img *b2 = open_ro(below2);
		img_close(back);
		if (img_io_mem_new(below.p, below.len, &io) || imgi_open_io_over(io, 0, b2, &back))
			die("cannot open a generated delta");
	}
	/* by hand, with a one-cluster log as the other seeds (small inputs) */
	if (!vsize) {
		struct img_info info;
		img_info(back, &info);
		vsize = info.virtual_size;
	}
	d = hand(16, vsize, 1 << 16, 1);
	for (unsigned sl = 0; sl < 2; sl++) {
		if (imgi_header_decode(d.p + sl * IMG_HEADER_SLOT, &h, NULL, 0))
			die("a hand-made header does not decode");
		imgi_header_set_backing(&h, fixed_uuid, "base.img", 8);
		imgi_header_encode(&h, d.p + sl * IMG_HEADER_SLOT);
	}
	fuzz_io_init(&f, d.p, d.len, 1ull << 30);
	free(d.p);
	f.save_on_close = 1;
	if (imgi_open_io_over(&f.io, IMG_OPEN_RDWR, back, &img))
		die("cannot open a new delta");
	for (unsigned i = 0; i < nw; i++) {
		if (i == 0 && compress_first) {
			uint8_t *buf = malloc(1 << 16);
			if (!buf)
				die("out of memory");
			for (unsigned k = 0; k < 1u << 16; k++)
				buf[k] = (uint8_t)("chain lz4 "[(k / 5) % 10]);
			if (img_write_compressed(img, buf, 1 << 16, off[0] & ~0xFFFFull) != 1)
				die("img_write_compressed");
			free(buf);
			continue;
		}
		wr(img, off[i], len[i], (uint8_t)(base + i));
	}
	r = close_rw(&f, img);
	trim(&r, 2 * IMG_HEADER_SLOT);
	return r;
}

/* A chain input: depth, lengths, images top first. */
static void emit_chain(const char *name, const struct blob *imgs, unsigned n)
{
	size_t total = 1 + 4 * (n - 1), at = 0;
	uint8_t *p;

	for (unsigned i = 0; i < n; i++)
		total += imgs[i].len;
	if (!(p = malloc(total)))
		die("out of memory");
	p[at++] = (uint8_t)(n - 2);
	for (unsigned i = 0; i + 1 < n; i++) {
		put_le32(p + at, (uint32_t)imgs[i].len);
		at += 4;
	}
	for (unsigned i = 0; i < n; i++) {
		memcpy(p + at, imgs[i].p, imgs[i].len);
		at += imgs[i].len;
	}
	save("chain", name, p, total);
	free(p);
}

static void chains(void)
{
	static const uint64_t off1[] = { 0, 3 << 16, (5 << 16) + 1000, 15 << 16 };
	static const size_t len1[] = { 1 << 16, 4096, 20000, 1 << 16 };
	static const uint64_t off2[] = { 1 << 16, 100, (7 << 16) + 512 };
	static const size_t len2[] = { 1 << 16, 3000, 512 };
	static const uint64_t off3[] = { 2 << 16, 0 };
	static const size_t len3[] = { 1 << 16, 700 };
	struct blob none = { NULL, 0 }, base, mid, top, big, imgs[3];
	struct fuzz_io f;
	struct img *img;

	base = hand(16, 1 << 20, 1 << 16, 1);
	img = open_rw(&f, base);
	free(base.p);
	wr(img, 0, 1 << 16, 1);
	wr(img, 2 << 16, 5000, 2);
	wr(img, 5 << 16, 1 << 16, 3);
	wr(img, 15 << 16, 1 << 16, 4);
	base = close_rw(&f, img);
	trim(&base, 0);

	/* two images: a delta over a plain image */
	mid = delta_image(base, none, 0, off1, len1, 4, 10, 0);
	imgs[0] = mid;
	imgs[1] = base;
	emit_chain("valid-2-delta", imgs, 2);
	/* three: a delta (its first cluster compressed) over a delta */
	top = delta_image(mid, base, 0, off2, len2, 3, 20, 1);
	imgs[0] = top;
	imgs[1] = mid;
	imgs[2] = base;
	emit_chain("valid-3-compressed-top", imgs, 3);
	/* a delta larger than its backing */
	big = delta_image(base, none, 2 << 20, off3, len3, 2, 30, 0);
	imgs[0] = big;
	imgs[1] = base;
	emit_chain("valid-2-larger-delta", imgs, 2);
	/* the backing's uuid does not match (imgi_open_io_over does not look) */
	imgs[0] = blob_dup(mid, mid.len);
	imgs[0].p[128] ^= 0xff;
	imgs[1] = base;
	emit_chain("odd-2-uuid", (struct blob[]){ fixed(imgs[0]), base }, 2);
	free(imgs[0].p);
	free(top.p);
	free(mid.p);
	free(big.p);
	free(base.p);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
		return 2;
	}
	outdir = argv[1];
	if (mkdir(outdir, 0755) && errno != EEXIST)
		die(outdir);
	images();
	ops();
	tools();
	chains();
	if (mismatches) {
		fprintf(stderr, "gen_corpus: %d images do not behave as their names say\n", mismatches);
		return 1;
	}
	return 0;
}
