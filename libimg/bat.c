/* SPDX-License-Identifier: MIT */
/*
 * The in-memory BAT: a flat array of 64-bit entries (8 bytes per virtual
 * cluster, nothing else per cluster), plus a bitmap of BAT blocks changed
 * since the last commit.  Blocks go to disk only through the log
 * (journal.c).
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
	if (!(img->dirty[blk / 64] >> (blk % 64) & 1)) {
		img->dirty[blk / 64] |= 1ull << (blk % 64);
		img->ndirty++;
	}
}

/* Large arrays: ask for transparent huge pages.  Filling a full 1 TiB BAT
 * (8 MiB) then takes 4 page faults instead of 2048, which is most of the
 * open time on hosts where faults are slow (paravirtual guests); pages of
 * a sparse BAT that are never touched still cost nothing.  A hint. */
static void bat_advise(void *p, size_t len)
{
	uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095;
	uintptr_t e = ((uintptr_t)p + len) & ~(uintptr_t)4095;

	if (len >= (4u << 20) && e > a)
		(void)madvise((void *)a, e - a, MADV_HUGEPAGE);
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
	if (!img->bat) {
		/* calloc: untouched pages of zero entries cost no memory, so a
		 * huge sparse BAT uses memory only where entries exist. */
		b = calloc(n, sizeof(*b));
	} else {
		b = realloc(img->bat, n * sizeof(*b));
		if (b)
			memset(b + img->bat_alloc, 0, (n - img->bat_alloc) * sizeof(*b));
	}
	if (!b)
		return -ENOMEM;
	img->bat = b;
	bat_advise(b, n * sizeof(*b));
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
 */
int bat_load_blocks(struct img *img, uint64_t first, uint64_t count, uint64_t *bad)
{
	enum { CHUNK = 256 };
	uint8_t *buf = malloc((size_t)CHUNK * IMG_BLOCK_SIZE);
	char why[160];
	int r = 0;

	if (!buf)
		return -ENOMEM;
	/* Blocks past the end of the file read as zero: nothing to read. */
	{
		uint64_t size = img_file_size(img), end_blk;
		end_blk = size > img->hdr.bat_offset ?
			(size - img->hdr.bat_offset + IMG_BLOCK_SIZE - 1) / IMG_BLOCK_SIZE : 0;
		if (first + count > end_blk)
			count = end_blk > first ? end_blk - first : 0;
	}
	for (uint64_t b = first; b < first + count && !r; b += CHUNK) {
		uint64_t n = first + count - b < CHUNK ? first + count - b : CHUNK, data;
		/* A hole in the file reads as zeros: skip it without reading
		 * (reading a hole still fills the page cache with zero pages:
		 * 512 MiB for an empty 64 TiB image). */
		if (img_io_seek_data(img->io, img->hdr.bat_offset + b * IMG_BLOCK_SIZE, &data) == 0 &&
		    data >= img->hdr.bat_offset + (b + n) * IMG_BLOCK_SIZE)
			continue;
		r = img->io->ops->pread(img->io, buf, n * IMG_BLOCK_SIZE,
					img->hdr.bat_offset + b * IMG_BLOCK_SIZE);
		if (r) {
			img_fail(img, r, "reading BAT blocks");
			break;
		}
		for (uint64_t i = 0; i < n; i++) {
			uint64_t seq;
			int d;
			/* An all-zero block holds no entries (decode would give
			 * zeros): the array is fresh zeros here, so leave its
			 * pages untouched and a sparse BAT costs no memory. */
			if (img_is_zero(buf + i * IMG_BLOCK_SIZE, IMG_BLOCK_SIZE))
				continue;
			d = img_bat_block_decode(buf + i * IMG_BLOCK_SIZE, b + i,
						     img->bat + (b + i) * IMG_ENTRIES_PER_BLOCK,
						     &seq, why, sizeof(why));
			if (img->blk_seen)
				img->blk_seen[(b + i) / 64] |= 1ull << ((b + i) % 64);
			if (d >= 0)
				continue;
			memset(img->bat + (b + i) * IMG_ENTRIES_PER_BLOCK, 0,
			       IMG_ENTRIES_PER_BLOCK * sizeof(uint64_t));
			if (!bad) {
				r = img_fail(img, -EUCLEAN, "%s", why);
				break;
			}
			bad[(b + i) / 64] |= 1ull << ((b + i) % 64);
		}
	}
	free(buf);
	return r;
}
