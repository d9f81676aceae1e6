/* SPDX-License-Identifier: MIT */
/*
 * On-disk structures of libimg format version 1: the mirror of
 * format-spec/FORMAT.md.  Encode/decode are explicit little-endian; every
 * decoded field is validated with checked arithmetic against the hard caps.
 * No I/O and no allocation here.
 */
#ifndef LIBIMG_FORMAT_H
#define LIBIMG_FORMAT_H

#include <stdint.h>
#include <stddef.h>

#define IMG_BLOCK_SIZE        4096u          /* metadata block size (B) */
#define IMG_HEADER_SLOT       4096u          /* header A at 0, B at 4096 */
#define IMG_HEADER_SIZE_V1    128u
#define IMG_FORMAT_VERSION    1u
/* A writer opens for writing only an image whose header in force has a
 * seq below this (FORMAT.md 3, "Sequence numbers"): no session can run seq
 * past 2^64 - 1 into 0. */
#define IMG_SEQ_WRITE_LIMIT   (1ull << 63)
#define IMG_MIN_CLUSTER_BITS  16u
#define IMG_MAX_CLUSTER_BITS  26u
#define IMG_DEFAULT_CLUSTER_BITS 20u
#define IMG_MAX_VIRTUAL_SIZE  (1ull << 57)
#define IMG_MAX_ENTRIES       (1ull << 27)   /* virtual clusters */
#define IMG_MAX_BAT_BYTES     (1ull << 31)   /* BAT region */
#define IMG_MAX_HOST_CLUSTER  (1ull << 32)   /* host cluster index bound */
#define IMG_MAX_FILE_SIZE     (1ull << 62)
#define IMG_MIN_LOG_SIZE      (16u * 1024)
#define IMG_MAX_LOG_SIZE      (64ull * 1024 * 1024)
#define IMG_DEFAULT_LOG_SIZE  (1024u * 1024)

#define IMG_BAT_HDR           32u
#define IMG_ENTRIES_PER_BLOCK 508u           /* (4096 - 32) / 8 */
#define IMG_LOG_HDR           32u
#define IMG_BACKING_OFF       152u           /* backing_path in the header */
#define IMG_MAX_BACKING_LEN   (IMG_HEADER_SLOT - IMG_BACKING_OFF)   /* 3944 */
#define IMG_LOG_MAX_TARGETS   508u

#define IMG_FLAG_DIRTY        0x1ull
#define IMG_FLAGS_KNOWN       IMG_FLAG_DIRTY
#define IMG_INCOMPAT_BACKING  0x1ull   /* §3.1: a delta over a backing image */
#define IMG_INCOMPAT_COMPRESSED 0x2ull /* §4.2: lz4-compressed clusters (state 3) */
#define IMG_INCOMPAT_OWNER    0x4ull   /* §3.1: owner_uuid, the delta whose own snapshot this is */
#define IMG_INCOMPAT_KNOWN    (IMG_INCOMPAT_BACKING | IMG_INCOMPAT_COMPRESSED | IMG_INCOMPAT_OWNER)
#define IMG_RO_COMPAT_TEMPLATE 0x1ull  /* §3.2: a template (shared base): never opened for writing */
#define IMG_RO_COMPAT_KNOWN   IMG_RO_COMPAT_TEMPLATE
#define IMG_COMPAT_OWN_SNAPSHOT 0x1ull /* §3.1: the backing image is this image's own snapshot */
#define IMG_COMPAT_KNOWN      IMG_COMPAT_OWN_SNAPSHOT

extern const uint8_t imgi_header_magic[8];
#define IMG_BAT_MAGIC 0x31544142u   /* "BAT1" read as little-endian u32 */
#define IMG_LOG_MAGIC 0x31474f4cu   /* "LOG1" */

/* BAT entry: state in the top 4 bits, payload in the low 60. */
#define IMG_E_UNALLOC   0u
#define IMG_E_ZERO      1u
#define IMG_E_ALLOC     2u
#define IMG_E_COMP      3u
/* state 3 payload: first sector (43 bits), sector count - 1 (17 bits) */
#define IMG_C_SECTOR(e)  ((e) & ((1ull << 43) - 1))
#define IMG_C_COUNT(e)   ((((e) >> 43) & ((1ull << 17) - 1)) + 1)
#define IMG_C_MAKE(s, n) (((uint64_t)IMG_E_COMP << 60) | ((uint64_t)((n) - 1) << 43) | (s))
#define IMG_C_MAX_SECTOR ((1ull << 43) - 1)
#define IMG_C_HDR        8u               /* clen, crc */
#define IMG_E_STATE(e)  ((unsigned)((e) >> 60))
#define IMG_E_PAYLOAD(e) ((e) & ((1ull << 60) - 1))
#define IMG_E_MAKE(s, p) (((uint64_t)(s) << 60) | (p))

struct imgi_header {
	uint32_t version;
	uint32_t header_size;
	uint32_t cluster_bits;
	uint64_t seq;
	uint64_t incompat, ro_compat, compat;
	uint64_t flags;
	uint64_t virtual_size;
	uint64_t log_offset, log_size, log_seq;
	uint64_t bat_offset, bat_clusters;
	uint8_t uuid[16];
	/* §3.1, with IMG_INCOMPAT_BACKING */
	uint8_t backing_uuid[16];
	uint32_t backing_len;
	char backing_path[IMG_MAX_BACKING_LEN + 1];   /* NUL-terminated copy */
	/* §3.1, with IMG_INCOMPAT_OWNER: the uuid of the new top the
	 * snapshot path made over this image (never all zero) */
	uint8_t owner_uuid[16];
};

/* Sets (path != NULL) or clears the backing reference: incompat bit,
 * header_size, fields; clears IMG_COMPAT_OWN_SNAPSHOT (a new reference is
 * not the image's own snapshot).  len must be 1..IMG_MAX_BACKING_LEN (checked by the
 * caller).  The owner field (who is above the image) is kept when it still
 * fits in the slot, else cleared (§3.1: cleared is always safe). */
void imgi_header_set_backing(struct imgi_header *h, const uint8_t uuid[16],
			    const char *path, size_t len);
/* Records (uuid != NULL, not all zero) or clears the owner field (§3.1,
 * IMG_INCOMPAT_OWNER) and sets header_size.  -ENOSPC (h unchanged) when the
 * backing path leaves no room for it in the slot. */
int imgi_header_set_owner(struct imgi_header *h, const uint8_t uuid[16]);
/* 1 when h records owner as the delta whose own snapshot it is. */
int imgi_header_owned_by(const struct imgi_header *h, const uint8_t owner[16]);
/* The backing uuid check (§3.1), the one rule for every open of a chain,
 * reattach and merge: 1 when base (the header of the image top's backing
 * reference names) is the image top was made over (its uuid is top's
 * backing_uuid) or top records none (backing_uuid all zero), else 0. */
int imgi_header_backing_matches(const struct imgi_header *top, const struct imgi_header *base);

/* Derived geometry, computed (and checked) from a header. */
struct imgi_geom {
	uint64_t cluster_size;
	unsigned cluster_bits;
	uint64_t vclusters;       /* ceil(virtual_size / cluster_size) */
	uint64_t bat_blocks;      /* blocks in the BAT region */
	uint64_t bat_capacity;    /* entries the BAT region holds */
	uint64_t used_blocks;     /* blocks covering vclusters */
	uint64_t log_blocks;
	uint64_t data_offset;
	uint64_t data_cluster0;   /* first data cluster index */
};

uint32_t imgi_crc32c(uint32_t crc, const void *buf, size_t len);

static inline uint16_t get_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}
static inline void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v); put_le32(p + 4, (uint32_t)(v >> 32));
}

/* Header.  encode fills a 4096-byte slot (computes the crc).  decode checks
 * magic, size and crc (a copy failing these is torn or not a header:
 * -EUCLEAN), then version and incompatible features: a well-formed copy
 * from a newer writer (another version, an unknown incompat bit) gives
 * -EOPNOTSUPP with h->seq, h->version and h->incompat filled in, so the
 * caller can tell whether it is the newest copy (FORMAT.md 3, "Choosing a
 * copy"); then every field (imgi_header_validate, -EUCLEAN).  A reason goes
 * into why. */
void imgi_header_encode(const struct imgi_header *h, uint8_t slot[IMG_HEADER_SLOT]);
int imgi_header_decode(const uint8_t slot[IMG_HEADER_SLOT], struct imgi_header *h,
		      char *why, size_t whylen);
/* Field rules of §2/§3 and the derived geometry. */
int imgi_header_validate(const struct imgi_header *h, struct imgi_geom *g,
			char *why, size_t whylen);
/* Geometry for a virtual size given the other header fields. */
int imgi_geom_compute(const struct imgi_header *h, struct imgi_geom *g);

/* BAT blocks.  entries: IMG_ENTRIES_PER_BLOCK values. */
void imgi_bat_block_encode(uint64_t index, uint64_t seq, const uint64_t *entries,
			  uint8_t blk[IMG_BLOCK_SIZE]);
/* Returns 0 (entries filled; *seq set), 1 if the block is all zero (entries
 * zeroed, *seq 0), or -EUCLEAN with a reason. */
int imgi_bat_block_decode(const uint8_t blk[IMG_BLOCK_SIZE], uint64_t index,
			 uint64_t *entries, uint64_t *seq, char *why, size_t whylen);
/* The same with the block's crc32c already computed (imgi_block_crcs). */
int imgi_bat_block_decode_crc(const uint8_t blk[IMG_BLOCK_SIZE], uint64_t index, uint32_t crc,
			     uint64_t *entries, uint64_t *seq, char *why, size_t whylen);
/* The crc32c of each of n consecutive metadata blocks (IMG_BLOCK_SIZE bytes
 * each, the crc field at bytes 4..7 taken as zero): what the block's crc
 * field must hold.  Uses the CPU's crc32 instruction on three blocks at a
 * time where it exists (checked at run time; LIBIMG_NO_HW_CRC=1 forces the
 * portable slicing-by-8 code, for tests), else the table code. */
void imgi_block_crcs(const uint8_t *blks, size_t n, uint32_t *crcs);

/* Log descriptors. */
void imgi_log_desc_encode(uint64_t seq, uint32_t count, const uint64_t *targets,
			 uint8_t blk[IMG_BLOCK_SIZE]);
/* Validates magic, crc, count (1..IMG_LOG_MAX_TARGETS), reserved and
 * unused bytes; fills seq, count and targets.  0; -EUCLEAN when the block
 * is not intact (magic or crc wrong: torn, or never a descriptor); -EBADMSG
 * when it is intact but a field is one no writer writes (count out of
 * range, reserved or unused bytes not zero): seq and count are filled. */
int imgi_log_desc_decode(const uint8_t blk[IMG_BLOCK_SIZE], uint64_t *seq,
			uint32_t *count, uint64_t *targets);

/* Is the buffer all zero bytes? */
int imgi_is_zero(const void *buf, size_t len);

#endif
