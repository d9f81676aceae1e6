/* SPDX-License-Identifier: MIT */
/*
 * The in-memory BAT: a flat array of 64-bit entries (8 bytes per virtual
 * cluster, nothing else per cluster), plus a bitmap of BAT blocks changed
 * since the last commit (the BAT dirty bit: set only by bat_mark_dirty,
 * taken and cleared only by bat_take_dirty, both under meta_lock).  Blocks
 * go to disk only through the log (journal.c).  bat_dropped is the entry
 * of a cluster whose contents are dropped (discard, an all-zero cluster
 * compacted, a filesystem trim): unallocated, or "zero" in a delta, where
 * unallocated would show the backing image again (FORMAT.md 3.1).
 * The memory for the array and the open's read buffer is allocated here
 * too (imgi_big_alloc: large areas are mappings aligned for huge pages).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

void bat_set(struct img *img, uint64_t v, uint64_t e)
{
	uint64_t old = img->bat[v], blk = v / IMG_ENTRIES_PER_BLOCK;

	if (old == e)
		return;
	if (IMG_E_STATE(old) == IMG_E_ALLOC)
		img->nalloc--;
	else if (IMG_E_STATE(old) == IMG_E_ZERO)
		img->nzero--;
	else if (IMG_E_STATE(old) == IMG_E_COMP)
		img->ncomp--;
	if (IMG_E_STATE(e) == IMG_E_ALLOC)
		img->nalloc++;
	else if (IMG_E_STATE(e) == IMG_E_ZERO)
		img->nzero++;
	else if (IMG_E_STATE(e) == IMG_E_COMP)
		img->ncomp++;
	__atomic_store_n(&img->bat[v], e, __ATOMIC_RELEASE);
	bat_mark_dirty(img, blk);
}

uint64_t bat_dropped(const struct img *img)
{
	return img->delta ? IMG_E_MAKE(IMG_E_ZERO, 0) : 0;
}

void bat_mark_dirty(struct img *img, uint64_t blk)
{
	if (!(img->dirty[blk / 64] >> (blk % 64) & 1)) {
		img->dirty[blk / 64] |= 1ull << (blk % 64);
		img->ndirty++;
	}
}

uint64_t bat_take_dirty(struct img *img, uint64_t *blocks)
{
	uint64_t n = 0;

	for (uint64_t w = 0; w * 64 < img->bat_alloc / IMG_ENTRIES_PER_BLOCK; w++) {
		uint64_t bits = img->dirty[w];
		while (bits) {
			blocks[n++] = w * 64 + (uint64_t)__builtin_ctzll(bits);
			bits &= bits - 1;
		}
		img->dirty[w] = 0;
	}
	img->ndirty = 0;
	return n;
}

/*
 * Memory for the BAT array and the open's read buffer.
 *
 * Large areas are mapped directly, aligned to 2 MiB and marked for
 * transparent huge pages: filling a full 1 TiB BAT (8 MiB) then takes 4
 * page faults instead of 2048, and on hosts where a fault is slow
 * (paravirtual guests: about 15 us each on the development machine) those
 * faults were most of the open time.  malloc cannot do this: its large
 * blocks start 16 bytes past a page boundary, so the huge pages never line
 * up with the array.  Pages never touched (a sparse 64 TiB BAT) still cost
 * nothing, and fresh mappings read as zeros, so nothing is cleared by hand.
 * Small areas come from calloc.
 */
#define HUGE_ALIGN ((size_t)2 << 20)
#define MAP_MIN    ((size_t)1 << 20)    /* below this: calloc */

struct mem_hdr {
	size_t len;         /* bytes asked for */
	size_t map_len;     /* bytes mapped from the header's page (0: calloc'd) */
	size_t pad[2];      /* keeps the area 16-byte aligned */
};

void *imgi_big_alloc(size_t len)
{
	size_t want, map_len, head;
	uint8_t *m, *p;
	struct mem_hdr *h;

	if (len < MAP_MIN) {
		h = calloc(1, sizeof(*h) + len);
		if (!h)
			return NULL;
		h->len = len;
		return h + 1;
	}
	/* Map more than needed, keep the aligned part and the page before it
	 * (the header sits at its end), give back the rest. */
	want = (len + 4095) & ~(size_t)4095;
	if (want > SIZE_MAX - HUGE_ALIGN - 4096)
		return NULL;
	map_len = want + HUGE_ALIGN + 4096;
	m = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	p = (uint8_t *)(((uintptr_t)m + 4096 + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
	head = (size_t)(p - 4096 - m);
	if (head)
		munmap(m, head);
	munmap(p + want, map_len - head - 4096 - want);
	(void)madvise(p, want, MADV_HUGEPAGE);   /* a hint: fine if refused */
	h = (struct mem_hdr *)p - 1;
	h->len = len;
	h->map_len = want + 4096;
	return p;
}

void imgi_big_free(void *p)
{
	struct mem_hdr *h;

	if (!p)
		return;
	h = (struct mem_hdr *)p - 1;
	if (h->map_len)
		munmap((uint8_t *)p - 4096, h->map_len);
	else
		free(h);
}

/* Grow to len bytes keeping the contents; the new bytes are zero. */
static void *big_realloc(void *p, size_t len)
{
	struct mem_hdr *h = p ? (struct mem_hdr *)p - 1 : NULL;
	void *n;

	if (h && len <= h->len)
		return p;
	n = imgi_big_alloc(len);
	if (!n || !p)
		return n;
	if (h->map_len && ((struct mem_hdr *)n - 1)->map_len) {
		/* Move the pages (the header's page with them) instead of
		 * copying: untouched pages of a sparse BAT stay untouched. */
		struct mem_hdr *nh = (struct mem_hdr *)n - 1, keep = *nh;
		if (mremap((uint8_t *)p - 4096, h->map_len, h->map_len, MREMAP_MAYMOVE | MREMAP_FIXED,
			   (uint8_t *)n - 4096) != MAP_FAILED) {
			*nh = keep;
			return n;
		}
	}
	memcpy(n, p, h->len);
	imgi_big_free(p);
	return n;
}

void bat_free_array(struct img *img)
{
	imgi_big_free(img->bat);
	img->bat = NULL;
}

/* Size the array (and the dirty bitmap) for at least `entries` entries,
 * rounded up to whole blocks.  New entries are zero (unallocated). */
int bat_resize_array(struct img *img, uint64_t entries)
{
	uint64_t blocks = (entries + IMG_ENTRIES_PER_BLOCK - 1) / IMG_ENTRIES_PER_BLOCK;
	uint64_t n = blocks * IMG_ENTRIES_PER_BLOCK, words = (blocks + 63) / 64;
	uint64_t old_words = (img->bat_alloc / IMG_ENTRIES_PER_BLOCK + 63) / 64;
	uint64_t *b, *d;

	if (blocks == 0)
		blocks = 1, n = IMG_ENTRIES_PER_BLOCK, words = 1;
	if (n <= img->bat_alloc)
		return 0;
	/* Untouched pages of zero entries cost no memory, so a huge sparse
	 * BAT uses memory only where entries exist. */
	b = big_realloc(img->bat, n * sizeof(*b));
	if (!b)
		return -ENOMEM;
	img->bat = b;
	d = realloc(img->dirty, words * sizeof(*d));
	if (!d)
		return -ENOMEM;
	if (words > old_words)
		memset(d + old_words, 0, (words - old_words) * sizeof(*d));
	img->dirty = d;
	img->bat_alloc = n;
	return 0;
}

/*
 * Read BAT blocks [first, first+count) from their place into the array.
 * The entries there must be zero on entry (a fresh or just-grown array).
 * A block that fails to decode gets its bit set in `bad` (if not NULL; the
 * caller decides after log replay whether it is corruption) and its entries
 * zeroed; without `bad` it is an error (-EUCLEAN).
 *
 * This is most of the time of opening a large image: 2 MiB reads into one
 * buffer (huge pages, see above), the crc32c of three blocks at a time
 * (imgi_block_crcs), and each block's entries copied once into the array.
 */
int bat_load_blocks(struct img *img, uint64_t first, uint64_t count, uint64_t *bad)
{
	enum { CHUNK = 512 };           /* blocks per read: 2 MiB */
	uint32_t crcs[CHUNK];
	uint8_t *buf = NULL;
	char why[160];
	int r = 0;

	/* Blocks past the end of the file: none in an image that opened
	 * (FORMAT.md 2: a file shorter than data_offset is refused); kept
	 * as a bound, they would read as zero. */
	{
		uint64_t size = imgi_file_size(img), end_blk;
		end_blk = size > img->hdr.bat_offset ?
			(size - img->hdr.bat_offset + IMG_BLOCK_SIZE - 1) / IMG_BLOCK_SIZE : 0;
		if (first + count > end_blk)
			count = end_blk > first ? end_blk - first : 0;
	}
	if (!count)
		return 0;
	buf = imgi_big_alloc((size_t)(count < CHUNK ? count : CHUNK) * IMG_BLOCK_SIZE);
	if (!buf)
		return -ENOMEM;
	for (uint64_t b = first; b < first + count && !r; b += CHUNK) {
		uint64_t n = first + count - b < CHUNK ? first + count - b : CHUNK, data;
		/* A hole in the file reads as zeros: skip it without reading
		 * (reading a hole still fills the page cache with zero pages:
		 * 512 MiB for an empty 64 TiB image). */
		if (imgi_io_seek_data(img->io, img->hdr.bat_offset + b * IMG_BLOCK_SIZE, &data) == 0 &&
		    data >= img->hdr.bat_offset + (b + n) * IMG_BLOCK_SIZE)
			continue;
		r = img->io->ops->pread(img->io, buf, n * IMG_BLOCK_SIZE,
					img->hdr.bat_offset + b * IMG_BLOCK_SIZE);
		if (r) {
			imgi_fail(img, r, "reading BAT blocks");
			break;
		}
		imgi_block_crcs(buf, (size_t)n, crcs);
		for (uint64_t i = 0; i < n; i++) {
			const uint8_t *blk = buf + i * IMG_BLOCK_SIZE;
			uint64_t seq;
			int d;
			/* An all-zero block holds no entries (decode would give
			 * zeros): the array is fresh zeros here, so leave its
			 * pages untouched and a sparse BAT costs no memory.  A
			 * block with the magic is not all zero. */
			if (get_le32(blk) != IMG_BAT_MAGIC && imgi_is_zero(blk, IMG_BLOCK_SIZE))
				continue;
			d = imgi_bat_block_decode_crc(blk, b + i, crcs[i],
						     img->bat + (b + i) * IMG_ENTRIES_PER_BLOCK,
						     &seq, why, sizeof(why));
			if (img->blk_seen)
				img->blk_seen[(b + i) / 64] |= 1ull << ((b + i) % 64);
			if (d >= 0)
				continue;
			memset(img->bat + (b + i) * IMG_ENTRIES_PER_BLOCK, 0,
			       IMG_ENTRIES_PER_BLOCK * sizeof(uint64_t));
			if (!bad) {
				r = imgi_fail(img, -EUCLEAN, "%s", why);
				break;
			}
			bad[(b + i) / 64] |= 1ull << ((b + i) % 64);
		}
	}
	imgi_big_free(buf);
	return r;
}
