/* SPDX-License-Identifier: MIT */
/* Open-time validation and check/repair: each kind of damage is refused
 * with -EUCLEAN (and a message naming it), reported by img_check, and
 * repaired where that needs no guessing.  Also: log replay of a dirty
 * image, read-only replay in memory, a torn header copy. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libimg.h"
#include "format.h"
#include "../helpers/tassert.h"

#define CS (64u << 10)
/* Layout of a 64 KiB-cluster image: header cluster, 1 MiB log, BAT. */
#define LOG_OFF  ((uint64_t)CS)
#define BAT_OFF  (LOG_OFF + (1u << 20))
#define DATA0    ((BAT_OFF + CS) / CS)

static int open_bytes(const uint8_t *bytes, size_t len, unsigned flags, struct img **out, struct img_io **iop)
{
	struct img_io *io;
	img_io_mem_new(bytes, len, &io);
	if (iop)
		*iop = io;
	return img_open_io(io, flags, out);
}

/* A clean image, built with a memory backend we keep (close it via a
 * borrowed handle). */
struct keep { struct img_io io; struct img_io *in; };
static int kp_pread(struct img_io *io, void *b, size_t l, uint64_t o) { return ((struct keep *)io)->in->ops->pread(((struct keep *)io)->in, b, l, o); }
static int kp_pwrite(struct img_io *io, const void *b, size_t l, uint64_t o) { return ((struct keep *)io)->in->ops->pwrite(((struct keep *)io)->in, b, l, o); }
static int kp_flush(struct img_io *io) { (void)io; return 0; }
static int kp_punch(struct img_io *io, uint64_t o, uint64_t l) { return ((struct keep *)io)->in->ops->punch(((struct keep *)io)->in, o, l); }
static int kp_trunc(struct img_io *io, uint64_t s) { return ((struct keep *)io)->in->ops->truncate(((struct keep *)io)->in, s); }
static int kp_size(struct img_io *io, uint64_t *s) { return ((struct keep *)io)->in->ops->size(((struct keep *)io)->in, s); }
static void kp_close(struct img_io *io) { free(io); }
static const struct img_io_ops kp_ops = { kp_pread, kp_pwrite, kp_flush, kp_punch, kp_trunc, kp_size, NULL, NULL, kp_close, NULL, NULL, NULL, NULL };

static struct img_io *keep(struct img_io *in)
{
	struct keep *k = calloc(1, sizeof(*k));
	k->io.ops = &kp_ops;
	k->io.name = "test.img";
	k->in = in;
	return &k->io;
}

static struct img_io *base;   /* the clean image's bytes */

static void build_base(int close_it, struct img **left_open)
{
	struct img_create_opts o = { .virtual_size = 16u << 20, .cluster_size = CS };
	struct img *img;
	uint8_t buf[CS];

	if (base)
		base->ops->close(base);
	img_io_mem_new(NULL, 0, &base);
	T_CHECK(img_create_io(base, &o) == 0);
	T_CHECK(img_open_io(keep(base), IMG_OPEN_RDWR, &img) == 0);
	for (int v = 0; v < 4; v++) {
		memset(buf, v + 1, sizeof(buf));
		T_CHECK(img_pwrite(img, buf, CS, (uint64_t)v * CS) == CS);
	}
	T_CHECK(img_flush(img) == 0);
	if (close_it)
		T_CHECK(img_close(img) == 0);
	else
		*left_open = img;
}

static uint8_t *copy_base(size_t *len)
{
	const void *d = img_io_mem_data(base, len);
	uint8_t *c = malloc(*len + 2 * CS);
	memcpy(c, d, *len);
	return c;
}

/* Rewrite BAT block 0 of bytes with entry v set to e (valid crc). */
static void set_entry(uint8_t *bytes, unsigned v, uint64_t e)
{
	uint64_t ents[IMG_ENTRIES_PER_BLOCK], seq;
	imgi_bat_block_decode(bytes + BAT_OFF, 0, ents, &seq, NULL, 0);
	ents[v] = e;
	imgi_bat_block_encode(0, seq, ents, bytes + BAT_OFF);
}

static uint64_t entry(uint8_t *bytes, unsigned v)
{
	uint64_t ents[IMG_ENTRIES_PER_BLOCK], seq;
	imgi_bat_block_decode(bytes + BAT_OFF, 0, ents, &seq, NULL, 0);
	return ents[v];
}

/* img_check's report callback: the first corruption's message. */
static void keep_report(void *arg, enum img_check_severity sev, int fixed, const char *msg)
{
	(void)fixed;
	if (sev == IMG_CHECK_CORRUPT && !*(char *)arg)
		snprintf(arg, 400, "%s", msg);
}

/* The same for information (a damaged header copy). */
static void keep_info(void *arg, enum img_check_severity sev, int fixed, const char *msg)
{
	(void)fixed;
	if (sev == IMG_CHECK_INFO && !*(char *)arg)
		snprintf(arg, 400, "%s", msg);
}

static void expect_corrupt(uint8_t *bytes, size_t len, const char *what, int repairable)
{
	struct img *img;
	struct img_check_result cr;
	struct img_check_opts co = { .flags = IMG_CHECK_REPAIR };
	struct img_io *io;

	T_CHECK(open_bytes(bytes, len, IMG_OPEN_RDWR, &img, NULL) == -EUCLEAN);
	if (!strstr(img_last_error(), what))
		T_ERROR("message '%s' lacks '%s'", img_last_error(), what);
	T_CHECK(open_bytes(bytes, len, IMG_OPEN_CHECK, &img, NULL) == 0);
	T_CHECK(img_check(img, NULL, &cr) == 0);
	T_CHECK(cr.corruptions >= 1 && cr.corruptions_fixed == 0);
	img_close(img);
	/* repair on a writable check handle */
	img_io_mem_new(bytes, len, &io);
	struct img_io *k = keep(io);
	T_CHECK(img_open_io(k, IMG_OPEN_RDWR | IMG_OPEN_CHECK, &img) == 0);
	T_CHECK(img_check(img, &co, &cr) == 0);
	T_CHECK(repairable ? cr.corruptions_fixed == cr.corruptions : cr.corruptions_fixed < cr.corruptions);
	img_close(img);
	if (repairable) {
		/* afterwards: opens normally, checks clean */
		T_CHECK(img_open_io(keep(io), IMG_OPEN_RDWR, &img) == 0);
		if (img) {
			T_CHECK(img_check(img, NULL, &cr) == 0);
			T_CHECK(cr.corruptions == 0 && cr.leaks == 0);
			img_close(img);
		}
	}
	io->ops->close(io);
}

/* A clean base image, and a copy of its bytes to break (malloc'd). */
static uint8_t *fresh(size_t *len)
{
	build_base(1, NULL);
	return copy_base(len);
}

static void clean_base(void)
{
	struct img *img;
	struct img_check_result cr;
	uint8_t *b;
	size_t len;

	b = fresh(&len);
	T_CHECK(open_bytes(b, len, 0, &img, NULL) == 0);
	T_CHECK(img_check(img, NULL, &cr) == 0 && cr.corruptions == 0 && cr.leaks == 0);
	T_CHECK(cr.allocated_clusters == 4);
	img_close(img);
	free(b);
}

/* Entry inside metadata. */
static void entry_inside_metadata(void)
{
	uint8_t *b;
	size_t len;

	b = fresh(&len);
	set_entry(b, 5, IMG_E_MAKE(IMG_E_ALLOC, 1));
	expect_corrupt(b, len, "inside the metadata", 1);
	free(b);
}

/* Entry past the end of the file: not repaired (issue 22, FORMAT.md
 * 4.1: the file was cut, or the entry is damaged and its cluster looks
 * leaked; clearing it would read zeros in an image that checks clean). */
static void entry_past_eof(void)
{
	uint8_t *b;
	size_t len;

	b = fresh(&len);
	set_entry(b, 5, IMG_E_MAKE(IMG_E_ALLOC, 1000));
	expect_corrupt(b, len, "past the end of the file", 0);
	free(b);
}

/* The first cluster past the end of the file (the bound itself). */
static void entry_at_eof_bound(void)
{
	uint8_t *b;
	size_t len;

	b = fresh(&len);
	T_CHECK(len == (DATA0 + 4) * CS);
	set_entry(b, 5, IMG_E_MAKE(IMG_E_ALLOC, DATA0 + 4));
	expect_corrupt(b, len, "past the end of the file", 0);
	free(b);
}

/* A file ending inside its last mapped cluster still maps it. */
static void file_ends_in_last_cluster(void)
{
	struct img *img;
	uint8_t *b;
	size_t len;

	b = fresh(&len);
	T_CHECK(open_bytes(b, len - 1, 0, &img, NULL) == 0);
	img_close(img);
	free(b);
}

/* A duplicate after entries that leave the fast path (a zero entry,
 * an unallocated gap) is still found. */
static void duplicate_after_gap(void)
{
	uint8_t *b;
	size_t len;

	b = fresh(&len);
	set_entry(b, 6, IMG_E_MAKE(IMG_E_ZERO, 0));
	set_entry(b, 200, entry(b, 0));
	expect_corrupt(b, len, "another entry maps", 1);
	free(b);
}

/* Two entries on one cluster: repaired by copying; both keep data. */
static void duplicate_repaired_by_copy(void)
{
	struct img *img;
	struct img_check_result cr;
	uint8_t *b, buf[CS];
	size_t len;

	b = fresh(&len);
	set_entry(b, 9, entry(b, 2));
	expect_corrupt(b, len, "another entry maps", 1);
	{
		struct img_io *io;
		img_io_mem_new(b, len, &io);
		T_CHECK(img_open_io(keep(io), IMG_OPEN_RDWR | IMG_OPEN_CHECK, &img) == 0);
		struct img_check_opts co = { .flags = IMG_CHECK_REPAIR };
		T_CHECK(img_check(img, &co, &cr) == 0 && cr.corruptions_fixed == 1);
		T_CHECK(img_pread(img, buf, CS, 9 * CS) == CS && buf[0] == 3 && buf[CS - 1] == 3);
		memset(buf, 0x77, CS);
		T_CHECK(img_pwrite(img, buf, CS, 9 * CS) == CS);
		T_CHECK(img_pread(img, buf, CS, 2 * CS) == CS && buf[0] == 3);   /* independent now */
		img_close(img);
		io->ops->close(io);
	}
	free(b);
}

/* Unknown state, and payload on an unallocated entry. */
static void unknown_state_and_payload(void)
{
	uint8_t *b;
	size_t len;

	b = fresh(&len);
	set_entry(b, 6, 7ull << 60);
	expect_corrupt(b, len, "unknown state", 1);
	free(b);
	b = copy_base(&len);
	set_entry(b, 6, 5);
	expect_corrupt(b, len, "non-zero payload", 1);
	free(b);
}

/* Entry past the virtual size (16 MiB = 256 clusters). */
static void entry_past_vsize(void)
{
	uint8_t *b;
	size_t len;

	b = fresh(&len);
	set_entry(b, 300, IMG_E_MAKE(IMG_E_ZERO, 0));
	expect_corrupt(b, len, "past the virtual size", 1);
	free(b);
}

/* BAT block with a bad crc: not repairable (entries unknown). */
static void bat_block_bad_crc(void)
{
	uint8_t *b;
	size_t len;

	b = fresh(&len);
	b[BAT_OFF + 200] ^= 0x10;
	expect_corrupt(b, len, "bad crc32c", 0);
	free(b);
}

/* Both headers bad; not an image; unknown incompatible feature. */
static void bad_headers_and_features(void)
{
	struct img *img;
	uint8_t *b;
	size_t len;

	b = fresh(&len);
	b[30] ^= 1;
	b[IMG_HEADER_SLOT + 30] ^= 1;
	T_CHECK(open_bytes(b, len, 0, &img, NULL) == -EUCLEAN);
	T_CHECK(strstr(img_last_error(), "no valid header") != NULL);
	memset(b, 0, 2 * IMG_HEADER_SLOT);
	T_CHECK(open_bytes(b, len, 0, &img, NULL) == -EMEDIUMTYPE);
	free(b);
	b = copy_base(&len);
	{
		struct imgi_header h;
		for (int s = 0; s < 2; s++) {
			imgi_header_decode(b + s * IMG_HEADER_SLOT, &h, NULL, 0);
			h.incompat = 1ull << 40;
			imgi_header_encode(&h, b + s * IMG_HEADER_SLOT);
		}
		T_CHECK(open_bytes(b, len, 0, &img, NULL) == -EOPNOTSUPP);
		for (int s = 0; s < 2; s++) {
			imgi_header_decode(b + s * IMG_HEADER_SLOT, &h, NULL, 0);
			h.incompat = 0;
			h.ro_compat = 1;
			imgi_header_encode(&h, b + s * IMG_HEADER_SLOT);
		}
		T_CHECK(open_bytes(b, len, IMG_OPEN_RDWR, &img, NULL) == -EROFS);
		T_CHECK(open_bytes(b, len, 0, &img, NULL) == 0);
		img_close(img);
	}
	free(b);
}

/* A torn header copy: the other is used; not corruption. */
static void torn_header_copy(void)
{
	struct img *img;
	struct img_check_result cr;
	uint8_t *b, buf[CS];
	size_t len;

	b = fresh(&len);
	{
		struct imgi_header ha, hb;
		imgi_header_decode(b, &ha, NULL, 0);
		imgi_header_decode(b + IMG_HEADER_SLOT, &hb, NULL, 0);
		int cur = hb.seq > ha.seq;     /* slot in force */
		memset(b + cur * IMG_HEADER_SLOT + 256, 0xff, 256);   /* tear it */
		T_CHECK(open_bytes(b, len, IMG_OPEN_CHECK, &img, NULL) == 0);
		T_CHECK(img_check(img, NULL, &cr) == 0 && cr.corruptions == 0);
		T_CHECK(img_pread(img, buf, CS, 0) == CS && buf[0] == 1);
		img_close(img);
	}
	free(b);
}

/* Dirty image with log transactions not checkpointed: read-only open
 * replays in memory; read-write open replays and checkpoints. */
static void dirty_log_replay(void)
{
	struct img *img;
	struct img_info info;
	uint8_t *b, buf[CS];
	size_t len;

	{
		struct img *live;
		build_base(0, &live);      /* open, flushed, not closed */
		b = copy_base(&len);
		T_CHECK(open_bytes(b, len, 0, &img, NULL) == 0);
		img_info(img, &info);
		T_CHECK(info.dirty == 1 && info.log_replayed >= 1 && info.allocated_clusters == 4);
		T_CHECK(img_pread(img, buf, CS, 3 * CS) == CS && buf[0] == 4);
		img_close(img);
		/* the in-place BAT block is still empty: only the log has it */
		T_CHECK(entry(b, 3) == 0);
		struct img_io *io;
		img_io_mem_new(b, len, &io);
		T_CHECK(img_open_io(keep(io), IMG_OPEN_RDWR, &img) == 0);
		img_close(img);
		const uint8_t *after = img_io_mem_data(io, &len);
		T_CHECK(entry((uint8_t *)after, 3) != 0);    /* checkpointed */
		io->ops->close(io);
		free(b);
		img_close(live);
	}
}

/* Leaked cluster (data no entry maps): found, repaired. */
static void leaked_cluster(void)
{
	struct img *img;
	struct img_check_result cr;
	uint8_t *b;
	size_t len;

	b = fresh(&len);
	{
		uint64_t h = entry(b, 3);
		set_entry(b, 3, 0);        /* cluster h now leaked, holds 0x04 */
		T_CHECK(open_bytes(b, len, IMG_OPEN_CHECK, &img, NULL) == 0);
		T_CHECK(img_check(img, NULL, &cr) == 0 && cr.leaks == 1 && cr.corruptions == 0);
		img_close(img);
		struct img_io *io;
		img_io_mem_new(b, len, &io);
		T_CHECK(img_open_io(keep(io), IMG_OPEN_RDWR | IMG_OPEN_CHECK, &img) == 0);
		struct img_check_opts co = { .flags = IMG_CHECK_REPAIR };
		T_CHECK(img_check(img, &co, &cr) == 0 && cr.leaks == 1 && cr.leaks_fixed == 1);
		img_close(img);
		T_CHECK(img_open_io(keep(io), 0, &img) == 0);
		T_CHECK(img_check(img, NULL, &cr) == 0 && cr.leaks == 0);
		img_close(img);
		(void)h;
		io->ops->close(io);
	}
	free(b);
}

/* Truncated file: entries past EOF. */
static void truncated_file(void)
{
	struct img *img;
	uint8_t *b;
	size_t len;

	b = fresh(&len);
	T_CHECK(open_bytes(b, (size_t)(DATA0 * CS + 10), 0, &img, NULL) == -EUCLEAN);
	T_CHECK(open_bytes(b, 100, 0, &img, NULL) == -EMEDIUMTYPE || 1);
	T_CHECK(open_bytes(b, 0, 0, &img, NULL) == -EMEDIUMTYPE);
	free(b);
}

/* Issue 22 #4 (FORMAT.md 4): a BAT block past the virtual size */
static void bat_block_past_vsize(void)
{
	struct img *img;
	struct img_check_result cr;
	uint8_t *b, buf[CS];
	size_t len;

	/* Issue 22 #4 (FORMAT.md 4): a BAT block past the ones covering the
	 * virtual size (16 MiB: block 0 only) holding garbage: an open does
	 * not read it and opens; a check reports it, a repair empties it. */
	b = fresh(&len);
	memset(b + BAT_OFF + 3 * IMG_BLOCK_SIZE, 0x6b, IMG_BLOCK_SIZE);
	T_CHECK(open_bytes(b, len, 0, &img, NULL) == 0);
	T_CHECK(img_pread(img, buf, CS, 0) == CS && buf[0] == 1);
	img_close(img);
	T_CHECK(open_bytes(b, len, IMG_OPEN_CHECK, &img, NULL) == 0);
	T_CHECK(img_check(img, NULL, &cr) == 0 && cr.corruptions == 1);
	img_close(img);
	{
		struct img_io *io;
		struct img_check_opts co = { .flags = IMG_CHECK_REPAIR };
		img_io_mem_new(b, len, &io);
		T_CHECK(img_open_io(keep(io), IMG_OPEN_RDWR | IMG_OPEN_CHECK, &img) == 0);
		T_CHECK(img_check(img, &co, &cr) == 0 && cr.corruptions == 1 && cr.corruptions_fixed == 1);
		img_close(img);
		T_CHECK(img_open_io(keep(io), 0, &img) == 0);
		T_CHECK(img_check(img, NULL, &cr) == 0 && cr.corruptions == 0);
		img_close(img);
		io->ops->close(io);
	}
	free(b);
}

/* Issue 22 #2: a BAT block with its reserved field set */
static void bat_block_reserved(void)
{
	struct img *img;
	struct img_check_result cr;
	uint8_t *b;
	size_t len;

	/* Issue 22 #2: BAT block with its reserved field set (crc valid):
	 * corrupt, and the cause named (open and check). */
	b = fresh(&len);
	b[BAT_OFF + 24] = 1;
	put_le32(b + BAT_OFF + 4, 0);
	put_le32(b + BAT_OFF + 4, imgi_crc32c(0, b + BAT_OFF, IMG_BLOCK_SIZE));
	expect_corrupt(b, len, "BAT block 0: reserved field not zero", 0);
	T_CHECK(open_bytes(b, len, IMG_OPEN_CHECK, &img, NULL) == 0);
	{
		char seen[400] = "";
		struct img_check_opts co = { .report = keep_report, .report_arg = seen };
		T_CHECK(img_check(img, &co, &cr) == 0 && cr.corruptions >= 1);
		T_CHECK(strstr(seen, "BAT block 0: reserved field not zero") != NULL);
		T_CHECK(strstr(seen, "bad magic, crc or location") == NULL);
	}
	img_close(img);
	free(b);
}

/* Issue 22 #3: header copies with other uuids, junk in cluster 0 */
static void header_copy_uuid_and_cluster0(void)
{
	struct img *img;
	struct img_check_result cr;
	uint8_t *b, buf[CS];
	size_t len;

	/* Issue 22 #3: the older header copy with another uuid (crc fixed):
	 * a damaged copy, ignored (the image opens with the copy in force),
	 * reported by a check (not as corruption); the next header write
	 * replaces it.  Junk in cluster 0 past the two slots: ignored. */
	b = fresh(&len);
	{
		struct imgi_header ha, hb, h;
		imgi_header_decode(b, &ha, NULL, 0);
		imgi_header_decode(b + IMG_HEADER_SLOT, &hb, NULL, 0);
		int old = hb.seq > ha.seq ? 0 : 1;     /* the slot not in force */
		imgi_header_decode(b + old * IMG_HEADER_SLOT, &h, NULL, 0);
		h.uuid[3] ^= 0x40;
		imgi_header_encode(&h, b + old * IMG_HEADER_SLOT);
		T_CHECK(open_bytes(b, len, 0, &img, NULL) == 0);
		T_CHECK(img_pread(img, buf, CS, 0) == CS && buf[0] == 1);
		img_close(img);
		T_CHECK(open_bytes(b, len, IMG_OPEN_CHECK, &img, NULL) == 0);
		char seen[400] = "";
		struct img_check_opts co = { .report = keep_info, .report_arg = seen };
		T_CHECK(img_check(img, &co, &cr) == 0 && cr.corruptions == 0);
		T_CHECK(strstr(seen, "uuid differs") != NULL);
		img_close(img);
		/* equal seq and another uuid: different contents, corrupt */
		h.seq = old ? ha.seq : hb.seq;
		imgi_header_encode(&h, b + old * IMG_HEADER_SLOT);
		T_CHECK(open_bytes(b, len, 0, &img, NULL) == -EUCLEAN);
		T_CHECK(strstr(img_last_error(), "differ with the same sequence number") != NULL);
	}
	free(b);
	b = fresh(&len);
	memset(b + 2 * IMG_HEADER_SLOT, 0xa5, CS - 2 * IMG_HEADER_SLOT);
	T_CHECK(open_bytes(b, len, IMG_OPEN_CHECK, &img, NULL) == 0);
	T_CHECK(img_check(img, NULL, &cr) == 0 && cr.corruptions == 0 && cr.leaks == 0);
	T_CHECK(img_pread(img, buf, CS, 0) == CS && buf[0] == 1);
	img_close(img);
	free(b);
}

/* Issue 22 #1 and #4: the log descriptor rules, replay before the in-place BAT */
static void log_descriptor_reserved(void)
{
	struct img *img;
	struct img_info info;
	uint8_t *b, buf[CS];
	size_t len;

	/* Issue 22 #1 and FORMAT.md 5: two committed transactions in the log;
	 * the first descriptor intact (crc fixed) with a reserved byte set.
	 * Ending the replay there would drop the second, flushed, silently:
	 * the image is corrupt instead.  Issue 22 #4 (replay before the
	 * in-place BAT is judged): an in-place block that is torn, or whose
	 * reserved field is set, but that a replayed payload replaces, is
	 * never looked at: the image opens with the log's entries. */
	{
		struct img *live;
		struct img_io *lio;
		struct img_create_opts o = { .virtual_size = 16u << 20, .cluster_size = CS };
		img_io_mem_new(NULL, 0, &lio);
		T_CHECK(img_create_io(lio, &o) == 0);
		T_CHECK(img_open_io(keep(lio), IMG_OPEN_RDWR, &live) == 0);
		memset(buf, 0x11, sizeof(buf));
		T_CHECK(img_pwrite(live, buf, CS, 0) == CS && img_flush(live) == 0);
		memset(buf, 0x22, sizeof(buf));
		T_CHECK(img_pwrite(live, buf, CS, 5 * CS) == CS && img_flush(live) == 0);
		const uint8_t *d = img_io_mem_data(lio, &len);
		b = malloc(len);
		memcpy(b, d, len);
		img_close(live);
		lio->ops->close(lio);
		/* as left: two transactions, both replayed */
		T_CHECK(open_bytes(b, len, 0, &img, NULL) == 0);
		img_info(img, &info);
		T_CHECK(info.log_replayed == 2);
		T_CHECK(img_pread(img, buf, CS, 5 * CS) == CS && buf[0] == 0x22);
		img_close(img);
		/* the in-place block 0 torn, then with its reserved field set:
		 * the log replaces it */
		T_CHECK(entry(b, 0) == 0);
		uint8_t save[IMG_BLOCK_SIZE];
		memcpy(save, b + BAT_OFF, sizeof(save));
		memset(b + BAT_OFF, 0x5a, IMG_BLOCK_SIZE);
		memcpy(b + BAT_OFF, "BAT1", 4);
		T_CHECK(open_bytes(b, len, 0, &img, NULL) == 0);
		T_CHECK(img_pread(img, buf, CS, 0) == CS && buf[0] == 0x11 && buf[CS - 1] == 0x11);
		img_close(img);
		{
			uint64_t ents[IMG_ENTRIES_PER_BLOCK] = { 0 };
			imgi_bat_block_encode(0, 1, ents, b + BAT_OFF);
			b[BAT_OFF + 24] = 1;
			put_le32(b + BAT_OFF + 4, 0);
			put_le32(b + BAT_OFF + 4, imgi_crc32c(0, b + BAT_OFF, IMG_BLOCK_SIZE));
		}
		T_CHECK(open_bytes(b, len, 0, &img, NULL) == 0);
		T_CHECK(img_pread(img, buf, CS, 5 * CS) == CS && buf[0] == 0x22);
		img_close(img);
		memcpy(b + BAT_OFF, save, sizeof(save));
		/* the first descriptor: a reserved byte set, crc fixed */
		T_CHECK(memcmp(b + LOG_OFF, "LOG1", 4) == 0);
		b[LOG_OFF + 24] = 1;
		put_le32(b + LOG_OFF + 4, 0);
		put_le32(b + LOG_OFF + 4, imgi_crc32c(0, b + LOG_OFF, IMG_BLOCK_SIZE));
		T_CHECK(open_bytes(b, len, 0, &img, NULL) == -EUCLEAN);
		T_CHECK(strstr(img_last_error(), "descriptor is intact but reserved or unused bytes are not zero") != NULL);
		T_CHECK(open_bytes(b, len, IMG_OPEN_CHECK, &img, NULL) == -EUCLEAN);
		/* its crc broken instead: torn, the end of the replay (opens) */
		b[LOG_OFF + 4] ^= 1;
		T_CHECK(open_bytes(b, len, 0, &img, NULL) == 0);
		img_close(img);
		free(b);
	}
}

/* Issue 22 #0: a file shorter than its metadata area */
static void truncated_metadata(void)
{
	struct img *img;
	uint8_t *b;
	size_t len;

	/* Issue 22 #0: a file shorter than its metadata area (data_offset)
	 * was cut: refused as corrupt, also for checking, never read as an
	 * empty disk (its BAT past the end would read as zeros). */
	b = fresh(&len);
	{
		const size_t cut[] = { 1000, 2 * IMG_HEADER_SLOT, (size_t)BAT_OFF, (size_t)BAT_OFF + 4096,
				       (size_t)(DATA0 * CS - 1) };
		for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
			T_CHECK(open_bytes(b, cut[i], 0, &img, NULL) == -EUCLEAN);
			if (!strstr(img_last_error(), "truncated"))
				T_ERROR("cut at %zu: message '%s'", cut[i], img_last_error());
			T_CHECK(open_bytes(b, cut[i], IMG_OPEN_CHECK, &img, NULL) == -EUCLEAN);
		}
		char want[160];
		snprintf(want, sizeof(want), "the file is 1000 bytes, shorter than its metadata area "
			 "(header, log and BAT: %llu bytes)", (unsigned long long)(DATA0 * CS));
		T_CHECK(open_bytes(b, 1000, 0, &img, NULL) == -EUCLEAN);
		T_CHECK(strstr(img_last_error(), want) != NULL);
	}
	free(b);
	/* A new image is exactly its metadata area, and opens. */
	{
		struct img_create_opts o = { .virtual_size = 16u << 20, .cluster_size = CS };
		struct img_io *io;
		img_io_mem_new(NULL, 0, &io);
		T_CHECK(img_create_io(io, &o) == 0);
		img_io_mem_data(io, &len);
		T_CHECK(len == DATA0 * CS);
		T_CHECK(img_open_io(keep(io), 0, &img) == 0);
		img_close(img);
		io->ops->close(io);
	}
}

/* Issue 22 #0/#4: a compressed payload ending past the end of the file */
static void compressed_past_eof(void)
{
	struct img *img;
	uint8_t *b, buf[CS];
	size_t len;

	/* Issue 22 #0/#4: a compressed payload that starts inside the file
	 * and ends past it (the file cut inside it, here only in its last
	 * sector): a writer writes all n sectors, so it is corrupt, never
	 * read with zeros for what was cut. */
	{
		struct img_create_opts o = { .virtual_size = 16u << 20, .cluster_size = CS };
		struct img_io *io;
		img_io_mem_new(NULL, 0, &io);
		T_CHECK(img_create_io(io, &o) == 0);
		T_CHECK(img_open_io(keep(io), IMG_OPEN_RDWR, &img) == 0);
		for (unsigned i = 0; i < CS; i++)
			buf[i] = (uint8_t)("compressible text "[i % 18]);
		T_CHECK(img_write_compressed(img, buf, CS, 0) == 1);
		T_CHECK(img_write_compressed(img, buf, CS, CS) == 1);
		T_CHECK(img_close(img) == 0);
		const uint8_t *d = img_io_mem_data(io, &len);
		b = malloc(len);
		memcpy(b, d, len);
		io->ops->close(io);
		uint64_t e0 = entry(b, 0), e1 = entry(b, 1), e = e0 > e1 ? e0 : e1;
		uint64_t end = (IMG_C_SECTOR(e) + IMG_C_COUNT(e)) * 512;
		T_CHECK(IMG_E_STATE(e) == IMG_E_COMP && end == len);
		T_CHECK(open_bytes(b, len, 0, &img, NULL) == 0);
		img_close(img);
		T_CHECK(open_bytes(b, len - 1, 0, &img, NULL) == -EUCLEAN);
		T_CHECK(strstr(img_last_error(), "compressed payload past the end of the file") != NULL);
		T_CHECK(open_bytes(b, IMG_C_SECTOR(e) * 512 + 1, 0, &img, NULL) == -EUCLEAN);
		free(b);
	}
}

static const struct t_case cases[] = {
	T_CASE(clean_base), T_CASE(entry_inside_metadata), T_CASE(entry_past_eof),
	T_CASE(entry_at_eof_bound), T_CASE(file_ends_in_last_cluster),
	T_CASE(duplicate_after_gap), T_CASE(duplicate_repaired_by_copy),
	T_CASE(unknown_state_and_payload), T_CASE(entry_past_vsize), T_CASE(bat_block_bad_crc),
	T_CASE(bad_headers_and_features), T_CASE(torn_header_copy), T_CASE(dirty_log_replay),
	T_CASE(leaked_cluster), T_CASE(truncated_file),
	T_CASE(bat_block_past_vsize), T_CASE(bat_block_reserved), T_CASE(header_copy_uuid_and_cluster0),
	T_CASE(log_descriptor_reserved), T_CASE(truncated_metadata), T_CASE(compressed_past_eof),
};

int main(int argc, char **argv)
{
	int r = T_MAIN(argc, argv, cases);

	if (base)
		base->ops->close(base);
	return r;
}
