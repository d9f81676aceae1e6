/* SPDX-License-Identifier: MIT */
/* A bounded host page cache for a served image: see common_cache.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common_cache.h"

#define HC_CACHED 0x1u
#define HC_REF    0x2u
#define HC_MIN_SHIFT 21u            /* 2 MiB */

int hcache_init(struct hcache *c, uint64_t limit, uint64_t vsize, uint32_t cluster_size,
		hcache_drop_fn drop, void *ctx)
{
	memset(c, 0, sizeof(*c));
	c->shift = HC_MIN_SHIFT;
	while (c->shift < 40 && ((uint64_t)1 << c->shift) < cluster_size)
		c->shift++;
	c->cap = limit >> c->shift;
	c->drop = drop;
	c->ctx = ctx;
	if (c->cap && !(c->fifo = malloc(c->cap * sizeof(*c->fifo))))
		return -ENOMEM;
	if (hcache_resize(c, vsize)) {
		free(c->fifo);
		c->fifo = NULL;
		return -ENOMEM;
	}
	pthread_mutex_init(&c->lock, NULL);
	return 0;
}

void hcache_free(struct hcache *c)
{
	free(c->fifo);
	free((void *)c->state);
	pthread_mutex_destroy(&c->lock);
	memset(c, 0, sizeof(*c));
}

int hcache_resize(struct hcache *c, uint64_t vsize)
{
	uint64_t n = (vsize >> c->shift) + !!(vsize & (((uint64_t)1 << c->shift) - 1));
	_Atomic uint8_t *s;

	if (n == c->nchunks && c->state)
		return 0;
	/* calloc of a large array maps untouched zero pages: the memory used
	 * follows the chunks used, not the disk's size */
	s = calloc(n ? n : 1, 1);
	if (!s)
		return -ENOMEM;
	if (c->state)
		memcpy((void *)s, (const void *)c->state, n < c->nchunks ? n : c->nchunks);
	free((void *)c->state);
	c->state = s;
	c->nchunks = n;
	return 0;
}

void hcache_reset(struct hcache *c)
{
	if (c->state)
		memset((void *)c->state, 0, c->nchunks);
	c->head = c->n = 0;
	c->nlate = c->late_head = 0;
}

uint64_t hcache_bytes(struct hcache *c)
{
	uint64_t n;

	pthread_mutex_lock(&c->lock);
	n = c->n;
	pthread_mutex_unlock(&c->lock);
	return n << c->shift;
}

uint64_t hcache_chunk_size(const struct hcache *c)
{
	return (uint64_t)1 << c->shift;
}

static void give_back(struct hcache *c, uint64_t k)
{
	c->drop(c->ctx, k << c->shift, (uint64_t)1 << c->shift);
}

/* Lock held, the FIFO full: takes one chunk out, giving its pages back. */
static void evict_one(struct hcache *c)
{
	/* Each turn clears one reference bit, so within cap turns an entry
	 * without one comes up, unless other threads keep setting them: then
	 * after 2 * cap turns the head goes regardless. */
	for (uint64_t turn = 0;; turn++) {
		uint64_t k = c->fifo[c->head];
		c->head = (c->head + 1) % c->cap;
		c->n--;
		if (k >= c->nchunks)            /* past a new, smaller end */
			return;
		if ((atomic_load(&c->state[k]) & HC_REF) && turn < 2 * c->cap) {
			atomic_fetch_and(&c->state[k], (uint8_t)~HC_REF);
			c->fifo[(c->head + c->n) % c->cap] = k;
			c->n++;
			continue;
		}
		atomic_store(&c->state[k], 0);
		give_back(c, k);
		if (c->nlate == HC_LATE) {
			/* the oldest: its dirty pages have been written out
			 * since; again unless it came back into use */
			uint64_t o = c->late[c->late_head];
			c->late_head = (c->late_head + 1) % HC_LATE;
			c->nlate--;
			if (o < c->nchunks && !atomic_load(&c->state[o]))
				give_back(c, o);
		}
		c->late[(c->late_head + c->nlate) % HC_LATE] = k;
		c->nlate++;
		return;
	}
}

void hcache_touch(struct hcache *c, uint64_t off, uint64_t len)
{
	uint64_t first, last;

	if (!len || !c->nchunks)
		return;
	first = off >> c->shift;
	last = (off + len - 1) >> c->shift;
	if (last >= c->nchunks)
		last = c->nchunks - 1;
	for (uint64_t k = first; k <= last; k++) {
		uint8_t s = atomic_load_explicit(&c->state[k], memory_order_relaxed);
		if (s & HC_CACHED) {
			if (!(s & HC_REF))
				atomic_fetch_or_explicit(&c->state[k], HC_REF, memory_order_relaxed);
			continue;
		}
		if (!c->cap) {                  /* no cache at all */
			give_back(c, k);
			continue;
		}
		pthread_mutex_lock(&c->lock);
		if (!(atomic_load(&c->state[k]) & HC_CACHED)) {
			while (c->n == c->cap)
				evict_one(c);
			c->fifo[(c->head + c->n) % c->cap] = k;
			c->n++;
			atomic_store(&c->state[k], HC_CACHED);
		}
		pthread_mutex_unlock(&c->lock);
	}
}
