/* SPDX-License-Identifier: MIT */
/* Format codec: CRC-32C vector, header/BAT/log round trips, and validation
 * rejecting each kind of bad field. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include "format.h"
#include "../helpers/tassert.h"

static struct imgi_header good(void)
{
	struct imgi_header h = { 0 };
	h.version = 1;
	h.header_size = IMG_HEADER_SIZE_V1;
	h.cluster_bits = 20;
	h.seq = 5;
	h.virtual_size = 10ull << 30;
	h.log_offset = 1 << 20;
	h.log_size = 1 << 20;
	h.log_seq = 1;
	h.bat_offset = 2 << 20;
	h.bat_clusters = 1;
	memset(h.uuid, 0xab, sizeof(h.uuid));
	return h;
}

/* Encode h, decode, expect result r. */
static int roundtrip(const struct imgi_header *h)
{
	uint8_t slot[IMG_HEADER_SLOT];
	struct imgi_header d;
	char why[160];
	imgi_header_encode(h, slot);
	return imgi_header_decode(slot, &d, why, sizeof(why));
}

/* imgi_block_crcs against the block's own encode, for runs of 1..8 blocks
 * (three at a time with a remainder of 0, 1 and 2), from an unaligned
 * buffer too; and each block of a run accepted by decode with its crc. */
static void check_block_crcs(void)
{
	enum { N = 8 };
	static uint8_t run[N * IMG_BLOCK_SIZE + 8];
	uint64_t e[IMG_ENTRIES_PER_BLOCK], o[IMG_ENTRIES_PER_BLOCK], seq, x = 0x9e3779b97f4a7c15ull;
	uint32_t crcs[N];
	char why[160];

	for (int shift = 0; shift < 16; shift += 8) {
		uint8_t *base = run + (shift ? 4 : 0);   /* 4-byte misaligned */
		for (unsigned b = 0; b < N; b++) {
			for (unsigned i = 0; i < IMG_ENTRIES_PER_BLOCK; i++) {
				x ^= x << 13; x ^= x >> 7; x ^= x << 17;
				e[i] = x;
			}
			imgi_bat_block_encode(b, b + 1, e, base + b * IMG_BLOCK_SIZE);
		}
		for (unsigned n = 1; n <= N; n++) {
			memset(crcs, 0, sizeof(crcs));
			imgi_block_crcs(base, n, crcs);
			for (unsigned b = 0; b < n; b++) {
				const uint8_t *p = base + b * IMG_BLOCK_SIZE;
				T_CHECK(crcs[b] == get_le32(p + 4));
				T_CHECK(imgi_bat_block_decode_crc(p, b, crcs[b], o, &seq, why, sizeof(why)) == 0);
				T_CHECK(seq == b + 1);
			}
		}
		/* a flipped bit shows in that block's crc only */
		base[2 * IMG_BLOCK_SIZE + 999] ^= 0x10;
		imgi_block_crcs(base, 4, crcs);
		T_CHECK(crcs[1] == get_le32(base + IMG_BLOCK_SIZE + 4));
		T_CHECK(crcs[2] != get_le32(base + 2 * IMG_BLOCK_SIZE + 4));
		T_CHECK(crcs[3] == get_le32(base + 3 * IMG_BLOCK_SIZE + 4));
		T_CHECK(imgi_bat_block_decode_crc(base + 2 * IMG_BLOCK_SIZE, 2, crcs[2], o, &seq,
					       why, sizeof(why)) == -EUCLEAN);
		/* the crc field itself is not covered */
		base[2 * IMG_BLOCK_SIZE + 999] ^= 0x10;
		base[5] ^= 0xff;
		imgi_block_crcs(base, 1, crcs);
		base[5] ^= 0xff;
		T_CHECK(crcs[0] == get_le32(base + 4));
	}
}

static void crc32c_values(void)
{
	/* CRC-32C check value (RFC 3720 / iSCSI). */
	T_CHECK(imgi_crc32c(0, "123456789", 9) == 0xE3069283u);
	T_CHECK(imgi_crc32c(imgi_crc32c(0, "1234", 4), "56789", 5) == 0xE3069283u);
	{
		/* odd lengths and alignments: byte at a time equals bulk */
		static uint8_t big[5000];
		for (unsigned i = 0; i < sizeof(big); i++)
			big[i] = (uint8_t)(i * 131 + 7);
		for (unsigned off = 0; off < 9; off++) {
			uint32_t c = 0;
			for (unsigned i = off; i < sizeof(big); i++)
				c = imgi_crc32c(c, big + i, 1);
			T_CHECK(c == imgi_crc32c(0, big + off, sizeof(big) - off));
		}
	}
}

static void header_roundtrip(void)
{
	uint8_t slot[IMG_HEADER_SLOT];
	struct imgi_header h = good(), d;
	char why[160];

	/* Header round trip. */
	imgi_header_encode(&h, slot);
	T_CHECK(imgi_header_decode(slot, &d, why, sizeof(why)) == 0);
	T_CHECK(!memcmp(&h, &d, sizeof(h)));
	T_CHECK(!memcmp(slot, "\x89LIBIMG\n", 8));
	/* Every bit flip in the covered bytes is caught by the crc. */
	for (unsigned i = 0; i < IMG_HEADER_SIZE_V1 * 8; i++) {
		imgi_header_encode(&h, slot);
		slot[i / 8] ^= (uint8_t)(1u << (i % 8));
		T_CHECK(imgi_header_decode(slot, &d, why, sizeof(why)) < 0);
	}
	/* Reserved bytes of the slot must be zero. */
	imgi_header_encode(&h, slot);
	slot[4000] = 1;
	T_CHECK(imgi_header_decode(slot, &d, why, sizeof(why)) == -EUCLEAN);
}

static void header_validation(void)
{
	struct imgi_header h = good(), b;

	/* Validation, one bad field at a time (re-encoded so the crc is good). */
	b = h; b.version = 2;              T_CHECK(roundtrip(&b) == -EOPNOTSUPP);
	b = h; b.cluster_bits = 15;        T_CHECK(roundtrip(&b) == -EUCLEAN);
	b = h; b.cluster_bits = 27;        T_CHECK(roundtrip(&b) == -EUCLEAN);
	b = h; b.seq = 0;                  T_CHECK(roundtrip(&b) == -EUCLEAN);
	b = h; b.flags = 2;                T_CHECK(roundtrip(&b) == -EUCLEAN);
	b = h; b.virtual_size = 1000;      T_CHECK(roundtrip(&b) == -EUCLEAN);
	b = h; b.virtual_size = 0;         T_CHECK(roundtrip(&b) == -EUCLEAN);
	b = h; b.virtual_size = 1ull << 58; T_CHECK(roundtrip(&b) == -EUCLEAN);
	b = h; b.virtual_size = 200ull << 30; T_CHECK(roundtrip(&b) == -EUCLEAN); /* > BAT capacity */
	b = h; b.log_offset = 4096;        T_CHECK(roundtrip(&b) == -EUCLEAN);
	b = h; b.log_size = 12345;         T_CHECK(roundtrip(&b) == -EUCLEAN);
	b = h; b.log_size = 128ull << 20; b.bat_offset = b.log_offset + b.log_size;
					   T_CHECK(roundtrip(&b) == -EUCLEAN);
	b = h; b.bat_offset += 1 << 20;    T_CHECK(roundtrip(&b) == -EUCLEAN);
	b = h; b.bat_clusters = 0;         T_CHECK(roundtrip(&b) == -EUCLEAN);
	b = h; b.bat_clusters = 1ull << 40; T_CHECK(roundtrip(&b) == -EUCLEAN);
	b = h; b.bat_clusters = UINT64_MAX; T_CHECK(roundtrip(&b) == -EUCLEAN);
	b = h; b.incompat = 1ull << 40;    T_CHECK(roundtrip(&b) == -EOPNOTSUPP);
	/* BACKING (FORMAT.md 3.1): the reference round-trips; bad ones fail. */
	b = h; imgi_header_set_backing(&b, h.uuid, "base.img", 8);
	T_CHECK(roundtrip(&b) == 0);
	b = h; b.incompat = IMG_INCOMPAT_BACKING;   /* no path: length 0 */
	T_CHECK(roundtrip(&b) == -EUCLEAN);
	b = h; b.ro_compat = 1;            T_CHECK(roundtrip(&b) == 0);  /* open decides */
	b = h; b.compat = 1;               T_CHECK(roundtrip(&b) == 0);
	/* 2^27 entries is the cap: 128 TiB at 1 MiB clusters fits, more not. */
	b = h; b.virtual_size = 128ull << 40; b.bat_clusters = 1033; T_CHECK(roundtrip(&b) == 0);
	b = h; b.virtual_size = (128ull << 40) + 512; b.bat_clusters = 1034; T_CHECK(roundtrip(&b) == -EUCLEAN);
}

static void geometry(void)
{
	struct imgi_header h = good();
	struct imgi_geom g;
	char why[160];

	/* Geometry. */
	T_CHECK(imgi_header_validate(&h, &g, why, sizeof(why)) == 0);
	T_CHECK(g.cluster_size == 1 << 20);
	T_CHECK(g.vclusters == 10240);
	T_CHECK(g.bat_blocks == 256);
	T_CHECK(g.bat_capacity == 256 * 508);
	T_CHECK(g.used_blocks == (10240 + 507) / 508);
	T_CHECK(g.data_offset == 3 << 20);
	T_CHECK(g.data_cluster0 == 3);
}

static void bat_blocks(void)
{
	uint8_t blk[IMG_BLOCK_SIZE];
	uint64_t e[IMG_ENTRIES_PER_BLOCK], o[IMG_ENTRIES_PER_BLOCK], seq;
	char why[160];

	/* BAT blocks. */
	for (unsigned i = 0; i < IMG_ENTRIES_PER_BLOCK; i++)
		e[i] = i % 3 ? IMG_E_MAKE(IMG_E_ALLOC, 100 + i) : 0;
	imgi_bat_block_encode(7, 42, e, blk);
	T_CHECK(imgi_bat_block_decode(blk, 7, o, &seq, why, sizeof(why)) == 0);
	T_CHECK(seq == 42 && !memcmp(e, o, sizeof(e)));
	T_CHECK(imgi_bat_block_decode(blk, 8, o, &seq, why, sizeof(why)) == -EUCLEAN); /* location */
	blk[100] ^= 1;
	T_CHECK(imgi_bat_block_decode(blk, 7, o, &seq, why, sizeof(why)) == -EUCLEAN); /* crc */
	memset(blk, 0, sizeof(blk));
	T_CHECK(imgi_bat_block_decode(blk, 9, o, &seq, why, sizeof(why)) == 1);        /* empty */
	T_CHECK(o[0] == 0 && o[507] == 0);
}

static void log_descriptors(void)
{
	uint8_t blk[IMG_BLOCK_SIZE];
	uint64_t t[3] = { 1, 5, 9 }, ot[IMG_LOG_MAX_TARGETS], seq;
	uint32_t cnt;

	/* Log descriptors. */
	imgi_log_desc_encode(77, 3, t, blk);
	T_CHECK(imgi_log_desc_decode(blk, &seq, &cnt, ot) == 0);
	T_CHECK(seq == 77 && cnt == 3 && ot[2] == 9);
	blk[9] ^= 1;
	T_CHECK(imgi_log_desc_decode(blk, &seq, &cnt, ot) == -EUCLEAN);
	imgi_log_desc_encode(77, 0, t, blk);
	T_CHECK(imgi_log_desc_decode(blk, &seq, &cnt, ot) == -EBADMSG);                /* count 0 */
	T_CHECK(seq == 77 && cnt == 0);
	/* issue 22 #1: intact (crc fixed) with reserved bytes set: -EBADMSG,
	 * not the -EUCLEAN of a torn block */
	imgi_log_desc_encode(78, 3, t, blk);
	blk[25] = 1;
	put_le32(blk + 4, 0);
	put_le32(blk + 4, imgi_crc32c(0, blk, IMG_BLOCK_SIZE));
	T_CHECK(imgi_log_desc_decode(blk, &seq, &cnt, ot) == -EBADMSG);
	T_CHECK(seq == 78 && cnt == 3);
}

static void entry_encoding(void)
{
	/* Entry encoding. */
	T_CHECK(IMG_E_STATE(IMG_E_MAKE(IMG_E_ALLOC, 5)) == IMG_E_ALLOC);
	T_CHECK(IMG_E_PAYLOAD(IMG_E_MAKE(IMG_E_ALLOC, 5)) == 5);
	T_CHECK(IMG_E_MAKE(IMG_E_UNALLOC, 0) == 0);
}

static const struct t_case cases[] = {
	T_CASE(crc32c_values), T_CASE(check_block_crcs), T_CASE(header_roundtrip),
	T_CASE(header_validation), T_CASE(geometry), T_CASE(bat_blocks), T_CASE(log_descriptors),
	T_CASE(entry_encoding),
};

int main(int argc, char **argv)
{
	int list = 0, r;

	for (int i = 1; i < argc; i++)
		list |= !strcmp(argv[i], "-l");
	/* Run once more with the portable crc code (the choice is made once
	 * per process), with the same arguments: the same checks must pass
	 * with both. */
	if (!list && !getenv("LIBIMG_NO_HW_CRC")) {
		pid_t pid;
		int st = 0;
		fflush(NULL);
		pid = fork();
		if (pid == 0) {
			setenv("LIBIMG_NO_HW_CRC", "1", 1);
			execv("/proc/self/exe", argv);
			_exit(127);
		}
		T_CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	fprintf(stderr, "crc32c: %s code\n", getenv("LIBIMG_NO_HW_CRC") ? "portable" : "default");
	r = T_MAIN(argc, argv, cases);
	return t_failures() && !r ? 1 : r;   /* the portable run failed */
}
