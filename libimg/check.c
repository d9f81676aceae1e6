/* SPDX-License-Identifier: MIT */
/*
 * Consistency check and repair.
 *
 * Problems found while opening (header copies, BAT blocks, entries) are
 * recorded by the open (image.c) and the log replay (journal.c) through
 * imgi_problem_add (util.c) when the image is opened with IMG_OPEN_CHECK;
 * this module reports them, checks what open does not read (BAT blocks past the
 * virtual size, leaked clusters, the file's tail) and repairs what can be
 * repaired without guessing:
 *   - invalid entries and entries past the virtual size: cleared (they were
 *     unreadable or outside the disk, so no visible data changes); in a
 *     delta an invalid entry inside the disk becomes zero (bat_dropped), as
 *     unallocated it would read the backing image's older data;
 *   - an entry that maps past the end of the file (FORMAT.md 4.1 and 4.2: the
 *     file was cut, by a copy or a host out of space, past its metadata
 *     area): nothing is repaired, like a file shorter than its metadata
 *     area, which the open refuses.  Clearing would make a disk that checks
 *     clean with zeros where the data was, and destroy the entries that
 *     tell what was lost; the data is not in this file, but may be in the
 *     file it was copied from;
 *   - two entries on one host cluster: the later one gets a copy, so both
 *     keep reading what they read now.  The copy goes into a cluster that
 *     is zeroed first (in check mode free clusters were not reclaimed and
 *     may hold leaked bytes, which a sparse copy would let through), and
 *     while any BAT block is unreadable into a cluster past the end of the
 *     file (the unknown entries may map any cluster below it);
 *   - leaked clusters: punched; the tail past the last used cluster:
 *     truncated (both skipped while any BAT block is unreadable, since its
 *     clusters would look leaked);
 *   - bytes of the last cluster past the virtual size that are not zero
 *     (growing would show them): zeroed;
 *   - an unreadable BAT block is not repaired: its entries are unknown.
 *
 * The open records at most MAX_PROBLEMS problems (their messages cost
 * memory); past that it counts them.  Such a check is incomplete: it says
 * so (a corruption, res->incomplete) and repairs nothing, since repairing
 * the recorded problems only would report a clean image with the others
 * left in place.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct reporter {
	const struct img_check_opts *opts;
	struct img_check_result *res;
	/* progress: the problems found at open, the spare BAT blocks and the
	 * clusters of the host file from the first data cluster, in that
	 * order, one unit each */
	uint64_t spare_base, file_base, total;
};

/* done units of rp->total; -ECANCELED when the caller's callback asks. */
static int progress(struct img *img, struct reporter *rp, uint64_t done)
{
	if (!rp->opts || !rp->opts->progress)
		return 0;
	if (rp->opts->progress(rp->opts->progress_arg, done < rp->total ? done : rp->total,
			       rp->total))
		return imgi_fail(img, -ECANCELED, "check cancelled");
	return 0;
}

__attribute__((format(printf, 4, 5)))
static void report(struct reporter *rp, enum img_check_severity sev, int fixed, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	if (sev == IMG_CHECK_CORRUPT) {
		rp->res->corruptions++;
		rp->res->corruptions_fixed += !!fixed;
	} else if (sev == IMG_CHECK_LEAK) {
		rp->res->leaks++;
		rp->res->leaks_fixed += !!fixed;
	}
	if (!rp->opts || !rp->opts->report)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	rp->opts->report(rp->opts->report_arg, sev, fixed, msg);
}

/* A host cluster for a repair to write a whole cluster into, reading as
 * zeros.  No entry that could exist maps it: while a BAT block is
 * unreadable its entries may map any cluster below the end of the file that
 * looks free, so the cluster is taken past the end of the file (an entry
 * can map nothing there).  A free cluster below the end of the file may hold
 * leaked bytes (check mode does not reclaim them): it is zeroed.  map_lock
 * held exclusive. */
static int repair_cluster_get(struct img *img, uint64_t *q)
{
	uint64_t min = img->g.data_cluster0, cs = img->g.cluster_size;
	int r;

	if (img->bad_blocks) {
		uint64_t fc = (imgi_file_size(img) + cs - 1) >> img->g.cluster_bits;
		if (fc > min)
			min = fc;
	}
	pthread_mutex_lock(&img->meta_lock);
	r = alloc_get(img, min, q);
	pthread_mutex_unlock(&img->meta_lock);
	if (r)
		return imgi_fail(img, r, "allocating a cluster for the repair");
	if (HOST_OFF(img, *q) < imgi_file_size(img) && (r = imgi_zero_host(img, HOST_OFF(img, *q), cs))) {
		pthread_mutex_lock(&img->meta_lock);
		(void)alloc_defer_free(img, *q);    /* never reused unzeroed */
		pthread_mutex_unlock(&img->meta_lock);
		return imgi_fail(img, r, "zeroing host cluster %llu", (unsigned long long)*q);
	}
	return 0;
}

/* BAT blocks that open does not read: past the live ones. */
static int check_spare_blocks(struct img *img, struct reporter *rp, int repair)
{
	uint64_t first = img->bat_alloc / IMG_ENTRIES_PER_BLOCK, ents[IMG_ENTRIES_PER_BLOCK], seq;
	uint8_t blk[IMG_BLOCK_SIZE];
	char why[160];
	int r = 0;

	for (uint64_t b = first; b < img->g.bat_blocks && !r; b++) {
		int d;
		if ((b - first) % 64 == 0 && (r = progress(img, rp, rp->spare_base + b - first)))
			break;
		/* The log holds a newer copy of this block (already checked at
		 * open); the copy in place is stale until the next checkpoint. */
		if (img->spare_logged && img->spare_logged[b / 64] >> (b % 64) & 1)
			continue;
		if ((r = img->io->ops->pread(img->io, blk, sizeof(blk), img->hdr.bat_offset + b * IMG_BLOCK_SIZE)))
			return imgi_fail(img, r, "reading BAT block %llu", (unsigned long long)b);
		d = imgi_bat_block_decode(blk, b, ents, &seq, why, sizeof(why));
		if (d == 1 || (d == 0 && imgi_is_zero(ents, sizeof(ents))))
			continue;
		/* Past the virtual size every entry must be zero: writing an
		 * empty block loses nothing the disk could show. */
		int fix = 0;
		if (repair) {
			memset(blk, 0, sizeof(blk));
			fix = !(r = img->io->ops->pwrite(img->io, blk, sizeof(blk),
							 img->hdr.bat_offset + b * IMG_BLOCK_SIZE));
		}
		report(rp, IMG_CHECK_CORRUPT, fix, "BAT block %llu (past the virtual size): %s",
		       (unsigned long long)b, d < 0 ? why : "entries not empty");
	}
	return r;
}

/* The bytes of the last cluster past the virtual size must read as zeros
 * (FORMAT.md 4.1): growing the disk would show them.  Repair zeroes them
 * in place (allocated), or stores the cluster allocated with its tail
 * zeroed (compressed; the payload is left to the commit).  map_lock held
 * exclusive; buf holds a cluster. */
static int check_vsize_tail(struct img *img, struct reporter *rp, int repair, uint8_t *buf,
			    int *unfixed)
{
	uint64_t cs = img->g.cluster_size, in = img->vsize % cs, v = img->vsize / cs, e, q;
	int r = 0, fix = 0;

	if (!in || v >= img->bat_alloc)
		return 0;
	e = img->bat[v];
	if (IMG_E_STATE(e) == IMG_E_ALLOC) {
		if ((r = img->io->ops->pread(img->io, buf, cs - in, HOST_OFF(img, IMG_E_PAYLOAD(e)) + in)))
			return imgi_fail(img, r, "reading host cluster %llu",
					(unsigned long long)IMG_E_PAYLOAD(e));
		if (imgi_is_zero(buf, cs - in))
			return 0;
		if (repair && !(r = imgi_zero_host(img, HOST_OFF(img, IMG_E_PAYLOAD(e)) + in, cs - in)))
			fix = 1;
	} else if (IMG_E_STATE(e) == IMG_E_COMP) {
		if (comp_read(img, v, e, buf) || imgi_is_zero(buf + in, cs - in))
			return 0;     /* unreadable: reads fail, nothing shows */
		if (repair && !(r = repair_cluster_get(img, &q))) {
			memset(buf + in, 0, cs - in);
			if ((r = imgi_write_sparse(img, buf, cs, HOST_OFF(img, q)))) {
				alloc_release_unmapped(img, q);
			} else {
				pthread_mutex_lock(&img->meta_lock);
				if (!(r = imgi_release_entry(img, e)))
					bat_set(img, v, IMG_E_MAKE(IMG_E_ALLOC, q));
				pthread_mutex_unlock(&img->meta_lock);
				fix = !r;
			}
		}
	} else {
		return 0;
	}
	report(rp, IMG_CHECK_CORRUPT, fix, "BAT entry %llu: the %llu bytes of the last cluster past the "
	       "virtual size are not zero%s", (unsigned long long)v, (unsigned long long)(cs - in),
	       fix ? ": zeroed" : "");
	*unfixed += !fix;
	return r;
}

#define LEAK_GROUP_BYTES (16u << 20)   /* free clusters read in one batch */

/* The next free cluster at or after h (below end) that may hold data: free
 * clusters are found a bitmap word at a time, and holes of the file are
 * skipped with SEEK_DATA where the backend has it, so a sparse tail of
 * any length costs one call. */
static uint64_t next_free_data(struct img *img, uint64_t h, uint64_t end)
{
	uint64_t d;

	for (;;) {
		if ((h = alloc_next_free(img, h, end)) >= end)
			return end;
		if (imgi_io_seek_data(img->io, HOST_OFF(img, h), &d))
			return h;                 /* no SEEK_DATA: read it */
		if (d == UINT64_MAX)
			return end;
		if (d >> img->g.cluster_bits == h)
			return h;
		h = d >> img->g.cluster_bits;     /* the hole before d is free */
	}
}

static int check_leaks(struct img *img, struct reporter *rp, int repair)
{
	uint64_t cs = img->g.cluster_size, size = imgi_file_size(img);
	uint64_t end = (size + cs - 1) / cs, last, grp = LEAK_GROUP_BYTES / cs;
	struct img_io_req rq[256];
	uint64_t at[256];
	uint8_t *buf;
	int r = 0;

	grp = grp < 1 ? 1 : grp > 256 ? 256 : grp;
	{
		uint64_t nfree = 0;   /* small images: small buffers */
		for (uint64_t h = next_free_data(img, img->g.data_cluster0, end); h < end && nfree < grp;
		     h = next_free_data(img, h + 1, end))
			nfree++;
		if (nfree < grp)
			grp = nfree ? nfree : 1;
	}
	if (!(buf = malloc(grp * cs)))
		return -ENOMEM;
	/* Every cluster no entry maps that holds data in the file is read (a
	 * batch at a time: at once on the io_uring backend): one holding
	 * non-zero bytes is a leak. */
	for (uint64_t h = next_free_data(img, img->g.data_cluster0, end); h < end && !r; ) {
		uint64_t n = 0;
		for (; h < end && n < grp; h = next_free_data(img, h + 1, end)) {
			rq[n] = (struct img_io_req){ .buf = buf + n * cs, .len = cs,
						     .off = HOST_OFF(img, h), .op = IMG_IO_OP_READ };
			at[n++] = h;
		}
		if ((r = img_io_batch(img->io, rq, n))) {
			imgi_fail(img, r, "reading free clusters");
			break;
		}
		if ((r = progress(img, rp, rp->file_base + (h - img->g.data_cluster0))))
			break;
		for (uint64_t k = 0; k < n && !r; k++) {
			if (imgi_is_zero(buf + k * cs, cs))
				continue;
			int fix = repair && !(r = imgi_zero_host(img, HOST_OFF(img, at[k]), cs));
			report(rp, IMG_CHECK_LEAK, fix,
			       "host cluster %llu holds data but no entry maps it (leaked)",
			       (unsigned long long)at[k]);
		}
	}
	free(buf);
	if (r)
		return r;
	last = HOST_OFF(img, alloc_last_used(img));
	if (size > last) {
		rp->res->tail_bytes = size - last;
		if (repair) {
			if ((r = img->io->ops->truncate(img->io, last)))
				return imgi_fail(img, r, "truncating the tail");
			report(rp, IMG_CHECK_INFO, 1, "%llu bytes past the last used cluster truncated",
			       (unsigned long long)(size - last));
		} else {
			report(rp, IMG_CHECK_INFO, 0, "%llu bytes past the last used cluster",
			       (unsigned long long)(size - last));
		}
	}
	return 0;
}

/* A read-only handle gave its allocator bitmap back after open (image.c):
 * the leak check needs it, so rebuild it from the BAT (validated at open,
 * so no duplicates or out-of-range entries).  map_lock held exclusive. */
static int ensure_allocator(struct img *img)
{
	uint64_t fc = (imgi_file_size(img) + img->g.cluster_size - 1) >> img->g.cluster_bits;
	int r;

	if (img->used)
		return 0;
	pthread_mutex_lock(&img->meta_lock);
	r = alloc_init(img, alloc_initial_bits(img, fc));
	for (uint64_t h = 0; !r && h < img->g.data_cluster0; h++)
		r = alloc_mark(img, h);
	for (uint64_t v = 0; !r && v < img->g.vclusters; v++)
		if (IMG_E_STATE(img->bat[v]) == IMG_E_ALLOC)
			r = alloc_mark(img, IMG_E_PAYLOAD(img->bat[v]));
		else if (IMG_E_STATE(img->bat[v]) == IMG_E_COMP)   /* its host cluster */
			r = alloc_mark(img, COMP_HOST(img, img->bat[v]));
	pthread_mutex_unlock(&img->meta_lock);
	return r;
}

IMG_API int img_check(struct img *img, const struct img_check_opts *opts,
		      struct img_check_result *res)
{
	struct img_check_result local;
	struct reporter rp = { opts, res ? res : &local, 0, 0, 0 };
	int repair = opts && (opts->flags & IMG_CHECK_REPAIR), r = 0, unfixed = 0;
	uint8_t *buf = NULL;

	imgi_clear_error();
	memset(rp.res, 0, sizeof(*rp.res));
	if (opts && (opts->flags & ~IMG_CHECK_REPAIR))
		return -EINVAL;
	if (repair && (r = imgi_check_writable(img, IMG_CHANGE_REPAIR, "repair")))
		return r;
	if (!(buf = malloc(img->g.cluster_size)))
		return -ENOMEM;
	pthread_rwlock_wrlock(&img->map_lock);
	r = ensure_allocator(img);
	if (img->problems_dropped) {
		rp.res->incomplete = img->problems_dropped;
		report(&rp, IMG_CHECK_CORRUPT, 0,
		       "the check is incomplete: %llu more problems found at open were not recorded "
		       "(at most %u are)%s", (unsigned long long)img->problems_dropped, MAX_PROBLEMS,
		       repair ? ": nothing repaired" : "");
		unfixed++;
		repair = 0;
	}

	{
		uint64_t first = img->bat_alloc / IMG_ENTRIES_PER_BLOCK;
		uint64_t fc = (imgi_file_size(img) + img->g.cluster_size - 1) >> img->g.cluster_bits;
		rp.spare_base = img->nproblems;
		rp.file_base = rp.spare_base + (img->g.bat_blocks > first ? img->g.bat_blocks - first : 0);
		rp.total = rp.file_base + (fc > img->g.data_cluster0 ? fc - img->g.data_cluster0 : 0);
		if (!r)
			r = progress(img, &rp, 0);
	}
	for (size_t i = 0; repair && i < img->nproblems; i++) {
		if (img->problems[i].kind != P_PAST_EOF)
			continue;
		report(&rp, IMG_CHECK_INFO, 0, "entries map clusters past the end of the file (%llu "
		       "bytes: cut or copied short?): nothing repaired",
		       (unsigned long long)imgi_file_size(img));
		repair = 0;
	}
	for (size_t i = 0; i < img->nproblems && !r; i++) {
		struct imgi_problem *p = &img->problems[i];
		int fix = 0;

		if (i % 1024 == 0 && i && (r = progress(img, &rp, i)))
			break;

		switch (p->kind) {
		case P_HEADER_COPY:
			/* An open for writing rewrote the other slot already. */
			report(&rp, IMG_CHECK_INFO, !img->rdonly, "%s", p->msg);
			break;
		case P_BAD_BLOCK:
			report(&rp, IMG_CHECK_CORRUPT, 0, "%s", p->msg);
			unfixed++;
			break;
		case P_PAST_EOF:
			report(&rp, IMG_CHECK_CORRUPT, 0, "%s", p->msg);
			unfixed++;
			break;
		case P_BAD_ENTRY:
		case P_PAST_VSIZE:
			if (repair) {
				pthread_mutex_lock(&img->meta_lock);
				r = bat_resize_array(img, p->v + 1);
				if (!r)
					bat_mark_dirty(img, p->v / IMG_ENTRIES_PER_BLOCK);
				/* inside the disk of a delta: zero, as a dropped
				 * cluster, never the backing image's older data */
				if (!r && p->kind == P_BAD_ENTRY)
					bat_set(img, p->v, bat_dropped(img));
				pthread_mutex_unlock(&img->meta_lock);
				fix = !r;
			}
			report(&rp, IMG_CHECK_CORRUPT, fix, "%s%s", p->msg,
			       !fix ? "" : p->kind == P_BAD_ENTRY && bat_dropped(img) ?
			       ": cleared (reads as zeros, not from the backing image)" : ": cleared");
			unfixed += !fix;
			break;
		case P_DUPLICATE:
			if (repair && IMG_E_STATE(img->bat[p->v]) == IMG_E_COMP) {
				/* Its payload shares sectors or a cluster: give it
				 * its own uncompressed copy when it decompresses,
				 * else it is unreadable anyway: clear it. */
				uint64_t q, e = img->bat[p->v];
				int d = comp_read(img, p->v, e, buf);
				r = d ? 0 : repair_cluster_get(img, &q);
				if (!r && !d && (r = imgi_write_sparse(img, buf, img->g.cluster_size, HOST_OFF(img, q))))
					alloc_release_unmapped(img, q);
				if (!r) {
					pthread_mutex_lock(&img->meta_lock);
					bat_set(img, p->v, d ? bat_dropped(img) : IMG_E_MAKE(IMG_E_ALLOC, q));
					pthread_mutex_unlock(&img->meta_lock);
					fix = 1;
				}
				report(&rp, IMG_CHECK_CORRUPT, fix, "%s%s", p->msg,
				       !fix ? "" : d ? ": cleared (it does not decompress)" : ": given its own copy");
				unfixed += !fix;
				break;
			}
			if (repair) {
				uint64_t q;
				/* q reads as zeros: the sparse copy leaves nothing
				 * but p->h's bytes in it */
				r = repair_cluster_get(img, &q);
				if (!r && !(r = imgi_copy_cluster(img, p->h, q, buf))) {
					pthread_mutex_lock(&img->meta_lock);
					bat_set(img, p->v, IMG_E_MAKE(IMG_E_ALLOC, q));
					pthread_mutex_unlock(&img->meta_lock);
					fix = 1;
				} else if (!r) {
					alloc_release_unmapped(img, q);
				}
			}
			report(&rp, IMG_CHECK_CORRUPT, fix, "%s%s", p->msg, fix ? ": given its own copy" : "");
			unfixed += !fix;
			break;
		}
	}
	if (!r)
		r = check_vsize_tail(img, &rp, repair, buf, &unfixed);
	if (!r)
		r = check_spare_blocks(img, &rp, repair);
	if (!r) {
		if (img->bad_blocks)
			report(&rp, IMG_CHECK_INFO, 0,
			       "leak check skipped: unreadable BAT blocks make mapped clusters look free");
		else
			r = check_leaks(img, &rp, repair);
	}
	if (!r)
		r = progress(img, &rp, rp.total);
	rp.res->allocated_clusters = img->nalloc;
	pthread_rwlock_unlock(&img->map_lock);
	free(buf);
	if (!r && repair) {
		r = journal_commit(img);
		if (!r && !unfixed) {
			img->corrupt = 0;
			img->nproblems = 0;
		}
	}
	return r;
}
