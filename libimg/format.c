/* SPDX-License-Identifier: MIT */
/* Encode, decode and validate the on-disk structures (format-spec/FORMAT.md);
 * crc32c (the CPU's instruction when it has one, else slicing-by-8;
 * LIBIMG_NO_HW_CRC=1 forces the latter) and imgi_is_zero. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"

const uint8_t imgi_header_magic[8] = { 0x89, 'L', 'I', 'B', 'I', 'M', 'G', '\n' };

/* ---- CRC-32C -------------------------------------------------------- */

static uint32_t crc_table[8][256];

static void crc_init_table(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t len)
{
	while (len && ((uintptr_t)p & 7)) {
		crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
		len--;
	}
	while (len >= 8) {
		uint64_t v = get_le64(p) ^ crc;
		crc = crc_table[7][v & 0xff] ^ crc_table[6][(v >> 8) & 0xff] ^
		      crc_table[5][(v >> 16) & 0xff] ^ crc_table[4][(v >> 24) & 0xff] ^
		      crc_table[3][(v >> 32) & 0xff] ^ crc_table[2][(v >> 40) & 0xff] ^
		      crc_table[1][(v >> 48) & 0xff] ^ crc_table[0][v >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t len)
{
	uint64_t c = crc;
	while (len && ((uintptr_t)p & 7)) {
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
		len--;
	}
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return (uint32_t)c;
}

/* The crc32 instruction has a latency of three cycles and a throughput of
 * one: one stream uses a third of it.  Metadata blocks are checked many at
 * a time at open (2048 blocks for a full 1 TiB BAT), so three blocks go
 * through the unit together, each its own chain: no combining step.  The
 * first word has the crc field (bytes 4..7) taken as zero. */
__attribute__((target("sse4.2")))
static void block_crcs_hw(const uint8_t *blks, size_t n, uint32_t *crcs)
{
	enum { W = IMG_BLOCK_SIZE / 8 };
	size_t i = 0;

	for (; i + 3 <= n; i += 3) {
		const uint8_t *a = blks + i * IMG_BLOCK_SIZE, *b = a + IMG_BLOCK_SIZE, *c = b + IMG_BLOCK_SIZE;
		uint64_t ca = 0xffffffffu, cb = 0xffffffffu, cc = 0xffffffffu;
		ca = __builtin_ia32_crc32di(ca, get_le64(a) & 0xffffffffu);
		cb = __builtin_ia32_crc32di(cb, get_le64(b) & 0xffffffffu);
		cc = __builtin_ia32_crc32di(cc, get_le64(c) & 0xffffffffu);
		for (unsigned w = 1; w < W; w++) {
			uint64_t va, vb, vc;
			memcpy(&va, a + 8 * w, 8);
			memcpy(&vb, b + 8 * w, 8);
			memcpy(&vc, c + 8 * w, 8);
			ca = __builtin_ia32_crc32di(ca, va);
			cb = __builtin_ia32_crc32di(cb, vb);
			cc = __builtin_ia32_crc32di(cc, vc);
		}
		crcs[i] = ~(uint32_t)ca;
		crcs[i + 1] = ~(uint32_t)cb;
		crcs[i + 2] = ~(uint32_t)cc;
	}
	for (; i < n; i++) {
		const uint8_t *a = blks + i * IMG_BLOCK_SIZE;
		uint64_t ca = __builtin_ia32_crc32di(0xffffffffu, get_le64(a) & 0xffffffffu);
		ca = crc_hw((uint32_t)ca, a + 8, IMG_BLOCK_SIZE - 8);
		crcs[i] = ~(uint32_t)ca;
	}
}
#endif

static uint32_t (*crc_impl)(uint32_t, const uint8_t *, size_t);
#if defined(__x86_64__)
static int crc_have_hw;
#endif

static void crc_choose(void)
{
	crc_init_table();
	crc_impl = crc_sw;
#if defined(__x86_64__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("sse4.2") && !getenv("LIBIMG_NO_HW_CRC")) {
		crc_impl = crc_hw;
		crc_have_hw = 1;
	}
#endif
}

#include <pthread.h>
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

uint32_t imgi_crc32c(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc_once, crc_choose);
	return ~crc_impl(~crc, buf, len);
}

/* ---- helpers -------------------------------------------------------- */

int imgi_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	size_t head = len < 16 ? len : 16;

	/* A few bytes first (a cheap way out for data), then memcmp of the
	 * buffer with itself 16 bytes on: about four times the speed of a
	 * word-by-word loop on zeros, which the sparse writes scan. */
	for (size_t i = 0; i < head; i++)
		if (p[i])
			return 0;
	return len <= 16 || !memcmp(p, p + 16, len - 16);
}

__attribute__((format(printf, 3, 4)))
static int fail(char *why, size_t whylen, const char *fmt, ...)
{
	if (why && whylen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return -EUCLEAN;
}

/* CRC-32C of len bytes with the 4-byte crc field at crc_off taken as zero. */
static uint32_t crc_skip(const uint8_t *blk, size_t len, size_t crc_off)
{
	static const uint8_t zero4[4];
	uint32_t c = imgi_crc32c(0, blk, crc_off);
	c = imgi_crc32c(c, zero4, 4);
	return imgi_crc32c(c, blk + crc_off + 4, len - crc_off - 4);
}

static uint32_t block_crc(const uint8_t *blk, size_t len)
{
	return crc_skip(blk, len, 4);
}

/* ---- header --------------------------------------------------------- */

/* §3.1: the owner field follows the backing reference (padded to 8), or
 * the 128 bytes of version 1 in an image without one. */
static size_t owner_offset(uint64_t incompat, uint32_t backing_len)
{
	return incompat & IMG_INCOMPAT_BACKING ? (IMG_BACKING_OFF + backing_len + 7) & ~(size_t)7
					       : IMG_HEADER_SIZE_V1;
}

/* header_size for the fields h carries. */
static uint32_t header_size_of(const struct imgi_header *h)
{
	size_t n = owner_offset(h->incompat, h->backing_len);

	if (h->incompat & IMG_INCOMPAT_OWNER)
		n += 16;
	return (uint32_t)n;
}

void imgi_header_encode(const struct imgi_header *h, uint8_t slot[IMG_HEADER_SLOT])
{
	memset(slot, 0, IMG_HEADER_SLOT);
	memcpy(slot, imgi_header_magic, 8);
	put_le32(slot + 8, h->version);
	put_le32(slot + 12, h->header_size);
	put_le32(slot + 20, h->cluster_bits);
	put_le64(slot + 24, h->seq);
	put_le64(slot + 32, h->incompat);
	put_le64(slot + 40, h->ro_compat);
	put_le64(slot + 48, h->compat);
	put_le64(slot + 56, h->flags);
	put_le64(slot + 64, h->virtual_size);
	put_le64(slot + 72, h->log_offset);
	put_le64(slot + 80, h->log_size);
	put_le64(slot + 88, h->log_seq);
	put_le64(slot + 96, h->bat_offset);
	put_le64(slot + 104, h->bat_clusters);
	memcpy(slot + 112, h->uuid, 16);
	if (h->incompat & IMG_INCOMPAT_BACKING) {
		memcpy(slot + 128, h->backing_uuid, 16);
		put_le32(slot + 144, h->backing_len);
		memcpy(slot + IMG_BACKING_OFF, h->backing_path, h->backing_len);
	}
	if (h->incompat & IMG_INCOMPAT_OWNER)
		memcpy(slot + owner_offset(h->incompat, h->backing_len), h->owner_uuid, 16);
	put_le32(slot + 16, crc_skip(slot, h->header_size, 16));
}

void imgi_header_set_backing(struct imgi_header *h, const uint8_t uuid[16],
			    const char *path, size_t len)
{
	memset(h->backing_uuid, 0, sizeof(h->backing_uuid));
	memset(h->backing_path, 0, sizeof(h->backing_path));
	h->backing_len = 0;
	h->incompat &= ~IMG_INCOMPAT_BACKING;
	/* A new reference is not the image's own snapshot (§3.1): only the
	 * snapshot path sets the bit again, after this. */
	h->compat &= ~IMG_COMPAT_OWN_SNAPSHOT;
	if (path) {
		h->incompat |= IMG_INCOMPAT_BACKING;
		if (uuid)
			memcpy(h->backing_uuid, uuid, 16);
		memcpy(h->backing_path, path, len);
		h->backing_len = (uint32_t)len;
	}
	/* The owner (who is above this image) does not change with what is
	 * below it; without room for it, it goes (cleared is safe: §3.1). */
	if ((h->incompat & IMG_INCOMPAT_OWNER) &&
	    owner_offset(h->incompat, h->backing_len) + 16 > IMG_HEADER_SLOT) {
		h->incompat &= ~IMG_INCOMPAT_OWNER;
		memset(h->owner_uuid, 0, sizeof(h->owner_uuid));
	}
	h->header_size = header_size_of(h);
}

int imgi_header_set_owner(struct imgi_header *h, const uint8_t uuid[16])
{
	if (uuid && (imgi_is_zero(uuid, 16) ||
		     owner_offset(h->incompat, h->backing_len) + 16 > IMG_HEADER_SLOT))
		return imgi_is_zero(uuid, 16) ? -EINVAL : -ENOSPC;
	memset(h->owner_uuid, 0, sizeof(h->owner_uuid));
	h->incompat &= ~IMG_INCOMPAT_OWNER;
	if (uuid) {
		memcpy(h->owner_uuid, uuid, 16);
		h->incompat |= IMG_INCOMPAT_OWNER;
	}
	h->header_size = header_size_of(h);
	return 0;
}

int imgi_header_owned_by(const struct imgi_header *h, const uint8_t owner[16])
{
	return (h->incompat & IMG_INCOMPAT_OWNER) && !imgi_is_zero(h->owner_uuid, 16) &&
	       !memcmp(h->owner_uuid, owner, 16);
}

int imgi_header_backing_matches(const struct imgi_header *top, const struct imgi_header *base)
{
	return imgi_is_zero(top->backing_uuid, 16) || !memcmp(top->backing_uuid, base->uuid, 16);
}

int imgi_geom_compute(const struct imgi_header *h, struct imgi_geom *g)
{
	uint64_t cs, bat_bytes, t;

	if (h->cluster_bits < IMG_MIN_CLUSTER_BITS || h->cluster_bits > IMG_MAX_CLUSTER_BITS)
		return -EUCLEAN;
	cs = 1ull << h->cluster_bits;
	g->cluster_size = cs;
	g->cluster_bits = h->cluster_bits;
	if (__builtin_mul_overflow(h->bat_clusters, cs, &bat_bytes) || bat_bytes > IMG_MAX_BAT_BYTES)
		return -EUCLEAN;
	g->bat_blocks = bat_bytes / IMG_BLOCK_SIZE;
	g->bat_capacity = g->bat_blocks * IMG_ENTRIES_PER_BLOCK;
	if (h->virtual_size > IMG_MAX_VIRTUAL_SIZE)
		return -EUCLEAN;
	g->vclusters = (h->virtual_size + cs - 1) >> h->cluster_bits;
	g->used_blocks = (g->vclusters + IMG_ENTRIES_PER_BLOCK - 1) / IMG_ENTRIES_PER_BLOCK;
	g->log_blocks = h->log_size / IMG_BLOCK_SIZE;
	if (__builtin_add_overflow(h->bat_offset, bat_bytes, &t))
		return -EUCLEAN;
	g->data_offset = t;
	g->data_cluster0 = t >> h->cluster_bits;
	return 0;
}

int imgi_header_validate(const struct imgi_header *h, struct imgi_geom *g,
			char *why, size_t whylen)
{
	uint64_t cs;

	if (h->version != IMG_FORMAT_VERSION) {
		fail(why, whylen, "format version %u is not supported (this library reads 1)", h->version);
		return -EOPNOTSUPP;
	}
	if (h->cluster_bits < IMG_MIN_CLUSTER_BITS || h->cluster_bits > IMG_MAX_CLUSTER_BITS)
		return fail(why, whylen, "cluster size 2^%u out of range (64 KiB..64 MiB)", h->cluster_bits);
	cs = 1ull << h->cluster_bits;
	if (h->seq == 0)
		return fail(why, whylen, "header sequence number is 0");
	if (h->flags & ~IMG_FLAGS_KNOWN)
		return fail(why, whylen, "unknown header flags 0x%llx", (unsigned long long)h->flags);
	if (h->virtual_size < 512 || h->virtual_size % 512 || h->virtual_size > IMG_MAX_VIRTUAL_SIZE)
		return fail(why, whylen, "virtual size %llu is not a multiple of 512 in range",
			    (unsigned long long)h->virtual_size);
	if (h->log_offset != cs)
		return fail(why, whylen, "log offset %llu is not the second cluster",
			    (unsigned long long)h->log_offset);
	if (h->log_size % cs || h->log_size < cs || h->log_size < IMG_MIN_LOG_SIZE ||
	    h->log_size > IMG_MAX_LOG_SIZE)
		return fail(why, whylen, "log size %llu invalid", (unsigned long long)h->log_size);
	if (h->bat_offset != h->log_offset + h->log_size)
		return fail(why, whylen, "BAT offset %llu does not follow the log",
			    (unsigned long long)h->bat_offset);
	if (h->bat_clusters == 0 || h->bat_clusters > IMG_MAX_BAT_BYTES / cs)
		return fail(why, whylen, "BAT cluster count %llu out of range",
			    (unsigned long long)h->bat_clusters);
	if (imgi_geom_compute(h, g) < 0)
		return fail(why, whylen, "geometry overflows");
	if (g->vclusters > IMG_MAX_ENTRIES)
		return fail(why, whylen, "virtual size needs %llu clusters, more than the cap 2^27",
			    (unsigned long long)g->vclusters);
	if (g->vclusters > g->bat_capacity)
		return fail(why, whylen, "virtual size needs %llu BAT entries but the BAT holds %llu",
			    (unsigned long long)g->vclusters, (unsigned long long)g->bat_capacity);
	if (h->incompat & ~IMG_INCOMPAT_KNOWN) {
		fail(why, whylen, "unknown incompatible features 0x%llx",
		     (unsigned long long)(h->incompat & ~IMG_INCOMPAT_KNOWN));
		return -EOPNOTSUPP;
	}
	return 0;
}

int imgi_header_decode(const uint8_t slot[IMG_HEADER_SLOT], struct imgi_header *h,
		      char *why, size_t whylen)
{
	struct imgi_geom g;
	size_t used = IMG_HEADER_SIZE_V1;

	if (memcmp(slot, imgi_header_magic, 8))
		return fail(why, whylen, "bad magic");
	memset(h, 0, sizeof(*h));
	h->version = get_le32(slot + 8);
	h->header_size = get_le32(slot + 12);
	/* Magic, header_size, crc and seq keep their places in every version
	 * (FORMAT.md 8): a copy that fails these is torn. */
	if (h->header_size < IMG_HEADER_SIZE_V1 || h->header_size > IMG_HEADER_SLOT ||
	    h->header_size % 8)
		return fail(why, whylen, "header size %u invalid", h->header_size);
	if (get_le32(slot + 16) != crc_skip(slot, h->header_size, 16))
		return fail(why, whylen, "bad crc32c");
	h->incompat = get_le64(slot + 32);
	h->cluster_bits = get_le32(slot + 20);
	h->seq = get_le64(slot + 24);
	h->ro_compat = get_le64(slot + 40);
	h->compat = get_le64(slot + 48);
	h->flags = get_le64(slot + 56);
	h->virtual_size = get_le64(slot + 64);
	h->log_offset = get_le64(slot + 72);
	h->log_size = get_le64(slot + 80);
	h->log_seq = get_le64(slot + 88);
	h->bat_offset = get_le64(slot + 96);
	h->bat_clusters = get_le64(slot + 104);
	memcpy(h->uuid, slot + 112, 16);
	if (h->version != IMG_FORMAT_VERSION) {
		fail(why, whylen, "format version %u is not supported (this library reads 1): "
		     "the image needs a newer libimg", h->version);
		return -EOPNOTSUPP;
	}
	if (h->incompat & ~IMG_INCOMPAT_KNOWN) {
		fail(why, whylen, "unknown incompatible features 0x%llx: the image needs a newer libimg",
		     (unsigned long long)(h->incompat & ~IMG_INCOMPAT_KNOWN));
		return -EOPNOTSUPP;
	}
	if (h->incompat & IMG_INCOMPAT_BACKING) {
		uint32_t n = get_le32(slot + 144);
		if (n == 0 || n > IMG_MAX_BACKING_LEN)
			return fail(why, whylen, "backing path length %u out of range (1..%u)",
				    n, IMG_MAX_BACKING_LEN);
		if (h->header_size < IMG_BACKING_OFF + n)
			return fail(why, whylen, "backing path of %u bytes runs past the header size %u",
				    n, h->header_size);
		if (get_le32(slot + 148))
			return fail(why, whylen, "reserved bytes are not zero");
		if (memchr(slot + IMG_BACKING_OFF, 0, n))
			return fail(why, whylen, "backing path contains a NUL byte");
		memcpy(h->backing_uuid, slot + 128, 16);
		h->backing_len = n;
		memcpy(h->backing_path, slot + IMG_BACKING_OFF, n);
		h->backing_path[n] = 0;
		used = IMG_BACKING_OFF + n;
	}
	if (h->incompat & IMG_INCOMPAT_OWNER) {
		size_t o = owner_offset(h->incompat, h->backing_len);
		if (o + 16 > h->header_size)
			return fail(why, whylen, "owner field runs past the header size %u",
				    h->header_size);
		if (!imgi_is_zero(slot + used, o - used))
			return fail(why, whylen, "reserved bytes are not zero");
		if (imgi_is_zero(slot + o, 16))
			return fail(why, whylen, "owner field is all zero");
		memcpy(h->owner_uuid, slot + o, 16);
		used = o + 16;
	}
	if (!imgi_is_zero(slot + used, IMG_HEADER_SLOT - used))
		return fail(why, whylen, "reserved bytes are not zero");
	return imgi_header_validate(h, &g, why, whylen);
}

/* ---- BAT blocks ----------------------------------------------------- */

void imgi_bat_block_encode(uint64_t index, uint64_t seq, const uint64_t *entries,
			  uint8_t blk[IMG_BLOCK_SIZE])
{
	put_le32(blk, IMG_BAT_MAGIC);
	put_le32(blk + 4, 0);
	put_le64(blk + 8, index);
	put_le64(blk + 16, seq);
	put_le64(blk + 24, 0);
	for (unsigned i = 0; i < IMG_ENTRIES_PER_BLOCK; i++)
		put_le64(blk + IMG_BAT_HDR + 8 * i, entries[i]);
	put_le32(blk + 4, block_crc(blk, IMG_BLOCK_SIZE));
}

void imgi_block_crcs(const uint8_t *blks, size_t n, uint32_t *crcs)
{
	pthread_once(&crc_once, crc_choose);
#if defined(__x86_64__)
	if (crc_have_hw) {
		block_crcs_hw(blks, n, crcs);
		return;
	}
#endif
	for (size_t i = 0; i < n; i++)
		crcs[i] = block_crc(blks + i * IMG_BLOCK_SIZE, IMG_BLOCK_SIZE);
}

int imgi_bat_block_decode(const uint8_t blk[IMG_BLOCK_SIZE], uint64_t index,
			 uint64_t *entries, uint64_t *seq, char *why, size_t whylen)
{
	return imgi_bat_block_decode_crc(blk, index, get_le32(blk) == IMG_BAT_MAGIC ?
					block_crc(blk, IMG_BLOCK_SIZE) : 0,
					entries, seq, why, whylen);
}

int imgi_bat_block_decode_crc(const uint8_t blk[IMG_BLOCK_SIZE], uint64_t index, uint32_t crc,
			     uint64_t *entries, uint64_t *seq, char *why, size_t whylen)
{
	/* A block with the magic is not all zero: no need to scan it. */
	if (get_le32(blk) != IMG_BAT_MAGIC && imgi_is_zero(blk, IMG_BLOCK_SIZE)) {
		memset(entries, 0, IMG_ENTRIES_PER_BLOCK * sizeof(*entries));
		*seq = 0;
		return 1;
	}
	if (get_le32(blk) != IMG_BAT_MAGIC)
		return fail(why, whylen, "BAT block %llu: bad magic", (unsigned long long)index);
	if (get_le32(blk + 4) != crc)
		return fail(why, whylen, "BAT block %llu: bad crc32c", (unsigned long long)index);
	if (get_le64(blk + 8) != index)
		return fail(why, whylen, "BAT block %llu: claims to be block %llu",
			    (unsigned long long)index, (unsigned long long)get_le64(blk + 8));
	if (get_le64(blk + 24))
		return fail(why, whylen, "BAT block %llu: reserved field not zero", (unsigned long long)index);
	*seq = get_le64(blk + 16);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(entries, blk + IMG_BAT_HDR, IMG_ENTRIES_PER_BLOCK * sizeof(*entries));
#else
	for (unsigned i = 0; i < IMG_ENTRIES_PER_BLOCK; i++)
		entries[i] = get_le64(blk + IMG_BAT_HDR + 8 * i);
#endif
	return 0;
}

/* ---- log descriptors ------------------------------------------------ */

void imgi_log_desc_encode(uint64_t seq, uint32_t count, const uint64_t *targets,
			 uint8_t blk[IMG_BLOCK_SIZE])
{
	memset(blk, 0, IMG_BLOCK_SIZE);
	put_le32(blk, IMG_LOG_MAGIC);
	put_le64(blk + 8, seq);
	put_le32(blk + 16, count);
	for (uint32_t i = 0; i < count; i++)
		put_le64(blk + IMG_LOG_HDR + 8 * i, targets[i]);
	put_le32(blk + 4, block_crc(blk, IMG_BLOCK_SIZE));
}

int imgi_log_desc_decode(const uint8_t blk[IMG_BLOCK_SIZE], uint64_t *seq,
			uint32_t *count, uint64_t *targets)
{
	uint32_t n;

	if (get_le32(blk) != IMG_LOG_MAGIC)
		return -EUCLEAN;
	if (get_le32(blk + 4) != block_crc(blk, IMG_BLOCK_SIZE))
		return -EUCLEAN;
	/* Intact: a writer wrote it whole.  The fields it never writes so
	 * are -EBADMSG (FORMAT.md 5: corruption for the expected seq). */
	*seq = get_le64(blk + 8);
	*count = n = get_le32(blk + 16);
	if (n == 0 || n > IMG_LOG_MAX_TARGETS)
		return -EBADMSG;
	if (!imgi_is_zero(blk + 20, 12))
		return -EBADMSG;
	if (!imgi_is_zero(blk + IMG_LOG_HDR + 8 * n, IMG_BLOCK_SIZE - IMG_LOG_HDR - 8 * n))
		return -EBADMSG;
	for (uint32_t i = 0; i < n; i++)
		targets[i] = get_le64(blk + IMG_LOG_HDR + 8 * i);
	return 0;
}
