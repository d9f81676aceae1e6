/* SPDX-License-Identifier: MIT */
/*
 * The write-ahead log of BAT blocks (FORMAT.md §5, §6).
 *
 * Invariants kept here:
 *  - Data before map: a commit first snapshots the dirty BAT blocks (whose
 *    entries were published only after their data writes completed), then
 *    syncs the host file, and only then writes the log transaction.
 *  - Free after durable: clusters released by the snapshot's changes are
 *    punched and handed to the allocator only after the transaction is
 *    synced.
 *  - No torn metadata: BAT blocks are written in place only by a
 *    checkpoint, after a sync that makes every logged transaction durable;
 *    the header that empties the log is written (A/B) after the in-place
 *    writes are synced.
 *  - A failed commit leaves the log position and sequence where the first
 *    transaction not known to be durable began, so the retry overwrites it:
 *    the log never holds a durable transaction behind a torn one.
 *  - A failed sync is never retried (FORMAT.md 6, rule 10): the host may
 *    have dropped the pages it could not write and reported them clean, so
 *    a later sync that succeeds proves nothing about them.  Every sync goes
 *    through imgi_sync(), which marks the handle failed: later commits,
 *    checkpoints and header writes refuse with -EIO, and only a reopen
 *    (replay, leak reclaim) goes on from what the disk really holds.
 *
 *  - A header is never written over the copy in force: imgi_header_commit()
 *    writes the other slot (A/B) with seq + 1 and syncs; it is the one
 *    header writer of an open handle (the DIRTY bit at open and close in
 *    image.c, checkpoint, resize, compress's feature bit, snapshot.c's
 *    reference, owner and template changes).
 *
 * One parser (log_walk) serves replay at open and checkpoint, which reads
 * the copy of the log this handle keeps in memory.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Blocks of the log a writer uses before it checkpoints (1 MiB). */
#define LOG_USE_MAX 256u

int imgi_header_commit(struct img *img, struct imgi_header *nh)
{
	uint8_t slot[IMG_HEADER_SLOT];
	int other = 1 - img->hdr_slot, r;

	if ((r = imgi_check_failed(img)))
		return r;
	/* Never wraps to 0 (an invalid seq): a write open needs seq < 2^63. */
	if (img->hdr.seq == UINT64_MAX)
		return imgi_fail(img, -EOVERFLOW, "header sequence number at its maximum");
	nh->seq = img->hdr.seq + 1;
	imgi_header_encode(nh, slot);
	r = img->io->ops->pwrite(img->io, slot, sizeof(slot), (uint64_t)other * IMG_HEADER_SLOT);
	if (r) {
		/* The write may sit in the host's cache and become durable with
		 * any later sync: the next commit rewrites that slot first. */
		img->hdr_unsure = 1;
		return imgi_fail(img, r, "writing header %c", other ? 'B' : 'A');
	}
	if ((r = imgi_sync(img, other ? "syncing header B" : "syncing header A"))) {
		/* Failed sync: the handle is failed (imgi_sync) and writes no
		 * more; the slot holds this header or the one before it. */
		img->hdr_unsure = 1;
		return r;
	}
	img->hdr = *nh;
	img->hdr_slot = other;
	img->hdr_unsure = 0;
	return 0;
}

typedef int (*log_apply_fn)(struct img *img, uint64_t target, const uint8_t *blk);

/* Walk transactions in buf (nblocks log blocks) starting with seq0; call
 * apply for each payload of each complete transaction.  Returns the number
 * of blocks consumed; *ntx and *next_seq describe what was found. */
static uint64_t log_walk(struct img *img, const uint8_t *buf, uint64_t nblocks,
			 uint64_t seq0, log_apply_fn apply, uint64_t *ntx,
			 uint64_t *next_seq, int *err)
{
	uint64_t pos = 0, seq = seq0, targets[IMG_LOG_MAX_TARGETS], scratch[IMG_ENTRIES_PER_BLOCK];

	*ntx = 0;
	*err = 0;
	while (pos < nblocks) {
		uint64_t dseq = 0, bseq;
		uint32_t count = 0;
		const char *bad = NULL;
		int ok = 1, d;

		/* FORMAT.md 5: a descriptor that is not intact (magic, crc)
		 * or carries another seq ends the replay (torn, or stale); an
		 * intact one with the expected seq was written whole, so a
		 * field no writer writes is corruption, not the end: ending
		 * there would drop the committed transactions after it. */
		d = imgi_log_desc_decode(buf + pos * IMG_BLOCK_SIZE, &dseq, &count, targets);
		if (d == -EUCLEAN || dseq != seq)
			break;
		if (d)
			bad = count == 0 || count > IMG_LOG_MAX_TARGETS ? "its count is out of range"
									 : "reserved or unused bytes are not zero";
		else if (pos + 1 + count > nblocks)
			bad = "the transaction runs past the end of the log";
		for (uint32_t k = 0; k < count && !bad; k++) {
			if (targets[k] >= img->g.bat_blocks)
				bad = "a target is past the BAT";
			for (uint32_t j = 0; j < k && !bad; j++)
				if (targets[j] == targets[k])
					bad = "two targets are the same block";
		}
		if (bad) {
			*err = imgi_fail(img, -EUCLEAN, "log transaction %llu (log block %llu): the "
					"descriptor is intact but %s", (unsigned long long)dseq,
					(unsigned long long)pos, bad);
			break;
		}
		/* A payload that is not a valid block of this transaction
		 * (torn, stale, or an older attempt's that a retried commit
		 * did not overwrite) ends the replay: never acknowledged. */
		for (uint32_t k = 0; k < count && ok; k++) {
			const uint8_t *p = buf + (pos + 1 + k) * IMG_BLOCK_SIZE;
			if (imgi_bat_block_decode(p, targets[k], scratch, &bseq, NULL, 0) != 0 ||
			    bseq != dseq)
				ok = 0;
		}
		if (!ok)
			break;
		for (uint32_t k = 0; k < count && !*err; k++)
			*err = apply(img, targets[k], buf + (pos + 1 + k) * IMG_BLOCK_SIZE);
		if (*err)
			break;
		pos += 1 + count;
		seq++;
		(*ntx)++;
	}
	*next_seq = seq;
	return pos;
}

/* Replay into memory.  Blocks past the live BAT must hold only zero entries
 * (FORMAT.md §4.1); they are checked, not stored.  Only the last payload of
 * such a block counts (spare_mapped, reported after the replay): a shrink
 * logs the block with its entries cleared after older transactions that
 * mapped them, and a crash before the checkpoint leaves both in the log. */
static int apply_to_memory(struct img *img, uint64_t target, const uint8_t *blk)
{
	uint64_t seq, tmp[IMG_ENTRIES_PER_BLOCK];
	uint64_t *dst = target < img->bat_alloc / IMG_ENTRIES_PER_BLOCK ?
		img->bat + target * IMG_ENTRIES_PER_BLOCK : tmp;

	imgi_bat_block_decode(blk, target, dst, &seq, NULL, 0);
	if (dst != tmp && img->blk_seen)
		img->blk_seen[target / 64] |= 1ull << (target % 64);
	if (dst == tmp && target < img->g.bat_blocks) {
		if (!img->spare_logged)
			img->spare_logged = calloc((img->g.bat_blocks + 63) / 64, 8);
		if (!img->spare_logged)
			return -ENOMEM;
		img->spare_logged[target / 64] |= 1ull << (target % 64);
		if (!img->spare_mapped)
			img->spare_mapped = calloc((img->g.bat_blocks + 63) / 64, 8);
		if (!img->spare_mapped)
			return -ENOMEM;
		if (imgi_is_zero(tmp, sizeof(tmp)))
			img->spare_mapped[target / 64] &= ~(1ull << (target % 64));
		else
			img->spare_mapped[target / 64] |= 1ull << (target % 64);
	}
	if (img->bad_map && target < img->bat_alloc / IMG_ENTRIES_PER_BLOCK)
		img->bad_map[target / 64] &= ~(1ull << (target % 64));
	return 0;
}

static int apply_in_place(struct img *img, uint64_t target, const uint8_t *blk)
{
	return img->io->ops->pwrite(img->io, blk, IMG_BLOCK_SIZE,
				    img->hdr.bat_offset + target * IMG_BLOCK_SIZE);
}

static int logbuf_reserve(struct img *img, uint64_t blocks)
{
	if (!img->logbuf) {
		img->logbuf = malloc((size_t)img->log_limit * IMG_BLOCK_SIZE);
		if (!img->logbuf)
			return -ENOMEM;
	}
	return blocks <= img->log_limit ? 0 : -EINVAL;
}

int journal_replay(struct img *img)
{
	uint64_t nblocks = img->g.log_blocks, ntx, next, pos;
	uint8_t *buf;
	int r, err;

	/* Read the whole log region (another writer may have used all of it),
	 * but not past the end of the file (none: the open refused a file
	 * shorter than data_offset before this, FORMAT.md 2). */
	{
		uint64_t size = imgi_file_size(img), in_file;
		in_file = size > img->hdr.log_offset ?
			(size - img->hdr.log_offset + IMG_BLOCK_SIZE - 1) / IMG_BLOCK_SIZE : 0;
		if (nblocks > in_file)
			nblocks = in_file;
	}
	img->log_limit = img->g.log_blocks < LOG_USE_MAX ? img->g.log_blocks : LOG_USE_MAX;
	/* Usually the log is empty (a clean close checkpoints it): when its
	 * first block is not the descriptor the header expects, there is
	 * nothing to replay and no need to read the whole region. */
	if (nblocks) {
		uint64_t first[IMG_BLOCK_SIZE / 8], dseq, targets[IMG_LOG_MAX_TARGETS];
		uint32_t count;
		r = img->io->ops->pread(img->io, first, IMG_BLOCK_SIZE, img->hdr.log_offset);
		if (r)
			return imgi_fail(img, r, "reading the log");
		dseq = 0;
		if (imgi_log_desc_decode((const uint8_t *)first, &dseq, &count, targets) == -EUCLEAN ||
		    dseq != img->hdr.log_seq)
			nblocks = 0;
	}
	if (nblocks == 0) {
		img->next_seq = img->hdr.log_seq;
		return 0;
	}
	buf = malloc((size_t)nblocks * IMG_BLOCK_SIZE);
	if (!buf)
		return -ENOMEM;
	r = img->io->ops->pread(img->io, buf, nblocks * IMG_BLOCK_SIZE, img->hdr.log_offset);
	if (r) {
		free(buf);
		return imgi_fail(img, r, "reading the log");
	}
	pos = log_walk(img, buf, nblocks, img->hdr.log_seq, apply_to_memory, &ntx, &next, &err);
	for (uint64_t b = 0; img->spare_mapped && b < img->g.bat_blocks; b++)
		if (img->spare_mapped[b / 64] >> (b % 64) & 1)
			imgi_problem_add(img, P_PAST_VSIZE, b * IMG_ENTRIES_PER_BLOCK, 0,
					"log transaction maps clusters in BAT block %llu, past the virtual size",
					(unsigned long long)b);
	free(img->spare_mapped);
	img->spare_mapped = NULL;
	img->log_replayed = ntx;
	img->next_seq = next;
	/* Keep the replayed transactions for the checkpoint a writer does. */
	if (pos > img->log_limit)
		img->log_limit = pos;
	r = pos ? logbuf_reserve(img, pos) : 0;
	if (!r && pos) {
		memcpy(img->logbuf, buf, pos * IMG_BLOCK_SIZE);
		img->log_pos = pos;
	}
	free(buf);
	return r ? r : err;
}

int journal_checkpoint(struct img *img)
{
	uint64_t ntx, next;
	struct imgi_header nh;
	int r, err;

	if (img->log_pos == 0)
		return 0;
	/* Every logged transaction durable before any in-place write. */
	if ((r = imgi_sync(img, "syncing the log")))
		return r;
	log_walk(img, img->logbuf, img->log_pos, img->hdr.log_seq, apply_in_place, &ntx, &next, &err);
	if (err)
		return imgi_fail(img, err, "writing BAT blocks in place");
	if (next != img->next_seq)
		return imgi_fail(img, -EIO, "log copy inconsistent (internal error)");
	if ((r = imgi_sync(img, "syncing BAT blocks")))
		return r;
	nh = img->hdr;
	nh.log_seq = img->next_seq;
	if ((r = imgi_header_commit(img, &nh)))
		return r;
	img->log_pos = 0;
	return 0;
}

/* Write one transaction of `count` encoded blocks at the log position. */
static int log_append(struct img *img, const uint64_t *targets, uint32_t count,
		      uint8_t *blocks /* count blocks, encoded with next_seq */)
{
	uint8_t *tx;
	int r;

	if ((r = logbuf_reserve(img, img->log_pos + 1 + count)))
		return r;
	tx = img->logbuf + img->log_pos * IMG_BLOCK_SIZE;
	imgi_log_desc_encode(img->next_seq, count, targets, tx);
	memcpy(tx + IMG_BLOCK_SIZE, blocks, (size_t)count * IMG_BLOCK_SIZE);
	r = img->io->ops->pwrite(img->io, tx, (size_t)(1 + count) * IMG_BLOCK_SIZE,
				 img->hdr.log_offset + img->log_pos * IMG_BLOCK_SIZE);
	if (r)
		return imgi_fail(img, r, "writing the log");
	img->log_pos += 1 + count;
	img->next_seq++;
	return 0;
}

/* Punches freed clusters and hands them to the allocator.  Rule 4: a free
 * cluster reads as zeros, so a cluster whose zeroing fails goes back on the
 * pending list (the next commit, or the reclaim at the next open after an
 * unclean close, retries) and the error is returned: it is never handed
 * out with stale bytes and never left behind in an image closed clean. */
static int release_pending(struct img *img, uint64_t *list, size_t n)
{
	int err = 0;

	for (size_t i = 0; i < n; ) {
		size_t j = i + 1;
		int r;
		while (j < n && list[j] == list[j - 1] + 1)
			j++;
		r = imgi_zero_host(img, HOST_OFF(img, list[i]), (j - i) * img->g.cluster_size);
		pthread_mutex_lock(&img->meta_lock);
		for (size_t k = i; k < j; k++) {
			if (!r)
				alloc_unmark(img, list[k]);
			else if (alloc_defer_free(img, list[k]))
				break;  /* out of memory: the rest stay leaked (used) */
		}
		pthread_mutex_unlock(&img->meta_lock);
		if (r && !err)
			err = imgi_fail(img, r, "punching freed clusters");
		i = j;
	}
	return err;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int commit_locked(struct img *img)
{
	uint64_t *targets = NULL, *pending = NULL, n = 0, maxc, rb_pos, rb_seq;
	size_t npending = 0;
	uint8_t *blocks = NULL;
	int r = 0;

	/* 0. A header commit failed after writing its slot: before anything
	 *    is synced, put this handle's header there (with a higher seq), or
	 *    the sync could make the other one durable. */
	if (img->hdr_unsure) {
		struct imgi_header nh = img->hdr;
		if ((r = imgi_header_commit(img, &nh)))
			return r;
	}

	/* 1. Snapshot: dirty blocks and the clusters their changes freed. */
	pthread_mutex_lock(&img->meta_lock);
	if (img->ndirty) {
		targets = malloc(img->ndirty * sizeof(*targets));
		blocks = malloc(img->ndirty * IMG_BLOCK_SIZE);
		if (!targets || !blocks) {
			pthread_mutex_unlock(&img->meta_lock);
			r = -ENOMEM;
			goto out;
		}
		n = bat_take_dirty(img, targets);
	}
	pending = img->pending;
	npending = img->npending;
	img->pending = NULL;
	img->npending = img->pending_cap = 0;
	/* Encode while holding the lock: the images are consistent. */
	maxc = img->log_limit - 1 < IMG_LOG_MAX_TARGETS ? img->log_limit - 1 : IMG_LOG_MAX_TARGETS;
	for (uint64_t i = 0; i < n; i++)
		imgi_bat_block_encode(targets[i], img->next_seq + i / maxc,
				     img->bat + targets[i] * IMG_ENTRIES_PER_BLOCK,
				     blocks + i * IMG_BLOCK_SIZE);
	pthread_mutex_unlock(&img->meta_lock);

	/* Scratch (IMG_OPEN_SCRATCH, FORMAT.md 6 "Unpublished files"): no
	 * log.  The blocks go in place, then one sync makes data and map
	 * durable together.  The log is empty: a writer's open checkpoints
	 * it, and scratch commits never append, so no later checkpoint can
	 * replay older blocks over these. */
	if (img->flags & IMG_OPEN_SCRATCH) {
		for (uint64_t i = 0; i < n && !r; i++)
			r = apply_in_place(img, targets[i], blocks + i * IMG_BLOCK_SIZE);
		if (r)
			imgi_fail(img, r, "writing BAT blocks in place");
		else
			r = imgi_sync(img, "syncing BAT blocks written in place");
		if (r)
			goto restore;
		goto done;
	}

	/* 2. Data durable before the map that points at it. */
	if ((r = imgi_sync(img, "syncing data")))
		goto restore;
	if (n == 0)
		goto done;

	/* 3. The log. */
	rb_pos = img->log_pos;
	rb_seq = img->next_seq;
	for (uint64_t i = 0; i < n; i += maxc) {
		uint32_t c = (uint32_t)(n - i < maxc ? n - i : maxc);
		if (img->log_pos + 1 + c > img->log_limit) {
			if ((r = journal_checkpoint(img)))
				goto rollback;
			rb_pos = img->log_pos;
			rb_seq = img->next_seq;
		}
		if ((r = log_append(img, targets + i, c, blocks + i * IMG_BLOCK_SIZE)))
			goto rollback;
	}
	if ((r = imgi_sync(img, "syncing the log")))
		goto rollback;
done:
	/* 4. Now the frees are durable: punch and reuse. */
	if (npending) {
		qsort(pending, npending, sizeof(*pending), cmp_u64);
		r = release_pending(img, pending, npending);
	}
	goto out;

rollback:
	img->log_pos = rb_pos;
	img->next_seq = rb_seq;
restore:
	pthread_mutex_lock(&img->meta_lock);
	for (uint64_t i = 0; i < n; i++)
		bat_mark_dirty(img, targets[i]);
	for (size_t i = 0; i < npending; i++)
		if (alloc_defer_free(img, pending[i]))
			break;  /* out of memory: the rest stay leaked (used) */
	pthread_mutex_unlock(&img->meta_lock);
out:
	free(pending);
	free(targets);
	free(blocks);
	return r;
}

int journal_commit(struct img *img)
{
	int r;

	if (img->rdonly)
		return 0;
	if ((r = imgi_check_failed(img)))
		return r;
	pthread_mutex_lock(&img->commit_lock);
	r = commit_locked(img);
	pthread_mutex_unlock(&img->commit_lock);
	return r;
}
