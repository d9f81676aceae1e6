/* SPDX-License-Identifier: MIT */
/*
 * A bounded host page cache for a served image (imgserve).
 *
 * The export daemon reads and writes the image file through the host page
 * cache.  Left alone the kernel keeps every page it touched, so one busy
 * export can fill the host's memory with a second copy of what the
 * filesystem above the loop device caches already; dropping everything
 * often (the daemon's first policy) makes every read a disk read, even of
 * a small hot working set.  This keeps the pages of at most `limit` bytes
 * of the virtual disk, least recently used given back first:
 *
 *   - the virtual disk is cut in chunks of 2 MiB, or of the cluster size
 *     when that is larger; a chunk counts as cached in full from its first
 *     read or write (so the pages really held are at most the limit);
 *   - cached chunks wait in a FIFO; a use sets the chunk's reference bit
 *     (an atomic OR, no lock when the chunk is cached already);
 *   - a chunk not cached yet enters at the tail, its bit clear, once there
 *     is room: while the FIFO is full its head is taken out, and either
 *     goes back to the tail with its bit cleared (it was used since its
 *     last turn: a second chance) or is given back through the drop
 *     callback (POSIX_FADV_DONTNEED on the host ranges its data occupies).
 *
 * Pages dirty when their chunk is given back are only sent to the disk
 * then (the kernel drops clean pages alone), so the chunk is given back
 * a second time HC_LATE evictions later, unless it was used again
 * meanwhile: without that, the writes of a stream stay cached after
 * their write-out, beyond the limit.
 *
 * That is CLOCK, the kernel's own approximation of LRU, kept per image.  A
 * chunk entering with its bit clear means a one-pass stream (a backup
 * reading the whole disk) pushes out only other unused chunks, not the
 * ones that are read again.  A limit of 0 keeps nothing: every chunk is
 * given back right after its use.
 *
 * Threads: hcache_touch may run concurrently; admission and eviction hold
 * the mutex.  hcache_resize and hcache_reset must not run concurrently
 * with hcache_touch (imgserve holds its io_lock for writing).  A chunk
 * given back while another request still reads it may have pages cached
 * again untracked: at most what the requests in flight moved.
 */
#ifndef LIBIMG_TOOLS_COMMON_CACHE_H
#define LIBIMG_TOOLS_COMMON_CACHE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define HC_LATE 32u   /* chunks given back a second time this many evictions later */

/* Gives back the host pages of the virtual range [off, off + len). */
typedef void (*hcache_drop_fn)(void *ctx, uint64_t off, uint64_t len);

struct hcache {
	pthread_mutex_t lock;
	_Atomic uint8_t *state;     /* per chunk: HC_CACHED | HC_REF */
	uint64_t nchunks;
	unsigned shift;             /* a chunk is 1 << shift bytes */
	uint64_t *fifo;             /* cached chunks, a ring of cap entries */
	uint64_t cap, head, n;
	uint64_t late[HC_LATE];     /* given back once, again later */
	unsigned nlate, late_head;
	hcache_drop_fn drop;
	void *ctx;
};

/* 0 or -ENOMEM.  limit: bytes of cache kept (0: none). */
int hcache_init(struct hcache *c, uint64_t limit, uint64_t vsize, uint32_t cluster_size,
		hcache_drop_fn drop, void *ctx);
void hcache_free(struct hcache *c);
/* Records a read or write of [off, off + len); gives back what exceeds
 * the limit. */
void hcache_touch(struct hcache *c, uint64_t off, uint64_t len);
/* The virtual size changed: 0 or -ENOMEM (then nothing changed). */
int hcache_resize(struct hcache *c, uint64_t vsize);
/* Forgets every chunk without giving anything back (the file changed). */
void hcache_reset(struct hcache *c);
/* Bytes counted as cached now. */
uint64_t hcache_bytes(struct hcache *c);
uint64_t hcache_chunk_size(const struct hcache *c);

#endif
