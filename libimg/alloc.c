/* SPDX-License-Identifier: MIT */
/*
 * Host cluster allocator.
 *
 * A bitmap with one bit per host cluster: set = metadata or mapped by a BAT
 * entry (or reserved by a write in flight), clear = free.  It is rebuilt
 * from the BAT at every open: the format has no reference counts.
 *
 * Invariant (FORMAT.md §6 rule 2): a cluster released by a BAT change goes
 * to the pending list, not the bitmap; journal_commit() hands pending
 * clusters back (punched) only after the transaction carrying the change is
 * durable.  Allocation is first-fit from the lowest free cluster, which
 * keeps the host file compact.
 *
 * The bitmap is sized by what the metadata maps, not by the file: at open
 * it covers the metadata and one cluster per BAT entry (a compact image),
 * and grows when an entry maps a cluster past it.  Clusters past it are
 * free, so a file much longer than its mappings (a sparse tail of any
 * length, up to the 2^62 bytes of FORMAT.md 2) costs no memory, and the
 * walks below go run by run (a word at a time), not cluster by cluster.
 *
 * Every function here runs with meta_lock held, except
 * alloc_release_unmapped(), which does I/O and takes it itself.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int alloc_init(struct img *img, uint64_t nbits)
{
	uint64_t words = (nbits + 63) / 64;
	img->used = calloc(words ? words : 1, 8);
	if (!img->used)
		return -ENOMEM;
	img->used_bits = words * 64;
	img->hint = 0;
	return 0;
}

static int alloc_grow(struct img *img, uint64_t need_bits)
{
	uint64_t words, old = img->used_bits / 64, *n;

	if (need_bits <= img->used_bits)
		return 0;
	if (need_bits > IMG_MAX_HOST_CLUSTER)
		return -EFBIG;
	words = old ? old : 1;
	while (words * 64 < need_bits)
		words *= 2;
	n = realloc(img->used, words * 8);
	if (!n)
		return -ENOMEM;
	memset(n + old, 0, (words - old) * 8);
	img->used = n;
	img->used_bits = words * 64;
	return 0;
}

size_t alloc_mark_entries(struct img *img, const uint64_t *e, size_t n, uint64_t lo,
			  uint64_t hi, uint64_t *marked)
{
	uint64_t *used = img->used, count = 0;
	size_t i = 0;

	if (hi > img->used_bits)
		hi = img->used_bits;
	for (; i < n; i++) {
		uint64_t x = e[i], h = IMG_E_PAYLOAD(x), bit = 1ull << (h % 64);
		if (!x)
			continue;
		if (IMG_E_STATE(x) != IMG_E_ALLOC || h < lo || h >= hi || (used[h / 64] & bit))
			break;
		used[h / 64] |= bit;
		count++;
	}
	*marked = count;
	return i;
}

uint64_t alloc_initial_bits(const struct img *img, uint64_t file_clusters)
{
	uint64_t n = img->g.data_cluster0 + img->bat_alloc;

	if (file_clusters < n)
		n = file_clusters;
	if (n < img->g.data_cluster0)
		n = img->g.data_cluster0;
	return n + 64;
}

uint64_t alloc_next_free(const struct img *img, uint64_t h, uint64_t end)
{
	while (h < end && h < img->used_bits) {
		uint64_t w = ~img->used[h / 64] & (~0ull << (h % 64));
		if (w) {
			h = (h & ~63ull) + (uint64_t)__builtin_ctzll(w);
			break;
		}
		h = (h & ~63ull) + 64;
	}
	return h < end ? h : end;
}

uint64_t alloc_next_used(const struct img *img, uint64_t h, uint64_t end)
{
	while (h < end && h < img->used_bits) {
		uint64_t w = img->used[h / 64] & (~0ull << (h % 64));
		if (w) {
			h = (h & ~63ull) + (uint64_t)__builtin_ctzll(w);
			return h < end ? h : end;
		}
		h = (h & ~63ull) + 64;
	}
	return end;
}

uint64_t alloc_count_free(const struct img *img, uint64_t lo, uint64_t hi)
{
	uint64_t n = 0;

	for (uint64_t h = alloc_next_free(img, lo, hi); h < hi; ) {
		uint64_t u = alloc_next_used(img, h, hi);
		n += u - h;
		h = alloc_next_free(img, u, hi);
	}
	return n;
}

int alloc_test(const struct img *img, uint64_t h)
{
	return h < img->used_bits && (img->used[h / 64] >> (h % 64) & 1);
}

int alloc_mark(struct img *img, uint64_t h)
{
	int r = alloc_grow(img, h + 1);
	if (r)
		return r;
	img->used[h / 64] |= 1ull << (h % 64);
	return 0;
}

void alloc_unmark(struct img *img, uint64_t h)
{
	if (h >= img->used_bits)
		return;
	img->used[h / 64] &= ~(1ull << (h % 64));
	if (h < img->hint)
		img->hint = h;
}

int alloc_get(struct img *img, uint64_t min, uint64_t *out)
{
	uint64_t h = min > img->hint ? min : img->hint;
	int r;

	while (h < img->used_bits) {
		uint64_t w = img->used[h / 64] | ((1ull << (h % 64)) - 1);
		if (w != ~0ull) {
			h = (h & ~63ull) + (uint64_t)__builtin_ctzll(~w);
			break;
		}
		h = (h & ~63ull) + 64;
	}
	if (h >= IMG_MAX_HOST_CLUSTER)
		return -ENOSPC;
	if ((r = alloc_mark(img, h)))
		return r;
	if (min <= img->hint)
		img->hint = h + 1;
	*out = h;
	return 0;
}

int alloc_defer_free(struct img *img, uint64_t h)
{
	if (img->npending == img->pending_cap) {
		size_t ncap = img->pending_cap ? img->pending_cap * 2 : 64;
		uint64_t *n = realloc(img->pending, ncap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		img->pending = n;
		img->pending_cap = ncap;
	}
	img->pending[img->npending++] = h;
	return 0;
}

uint64_t alloc_last_used(const struct img *img)
{
	for (uint64_t w = img->used_bits / 64; w > 0; w--)
		if (img->used[w - 1])
			return (w - 1) * 64 + 64 - (uint64_t)__builtin_clzll(img->used[w - 1]);
	return 0;
}

void alloc_release_unmapped(struct img *img, uint64_t h)
{
	/* Never mapped by a durable entry: safe to zero and reuse now.  If the
	 * zeroing fails the cluster goes to the pending list, so the next
	 * commit retries (rule 4: never handed out with stale bytes, never
	 * left unzeroed in an image closed clean). */
	int r = imgi_zero_host(img, HOST_OFF(img, h), img->g.cluster_size);

	pthread_mutex_lock(&img->meta_lock);
	if (!r)
		alloc_unmark(img, h);
	else
		(void)alloc_defer_free(img, h);  /* ENOMEM: stays used (leaked) */
	pthread_mutex_unlock(&img->meta_lock);
}
