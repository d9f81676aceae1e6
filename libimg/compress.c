/* SPDX-License-Identifier: MIT */
/*
 * lz4-compressed clusters (FORMAT.md 4.2).
 *
 * Invariants kept here:
 *  - a payload is written into sectors that are free (the tail of the host
 *    cluster being packed, never a sector a durable entry may point into:
 *    the packing cluster is dropped as soon as its count falls to zero),
 *    and only then is the entry published (data before map);
 *  - a host cluster holding payloads stays marked used while any entry
 *    points into it (cref); when the last one leaves, the cluster goes to
 *    the pending list and is freed only after the commit (free after
 *    durable);
 *  - hostile payloads: every length is checked before use, the crc32c is
 *    checked before lz4 sees the bytes, LZ4_decompress_safe writes at most
 *    cluster_size bytes, and anything but exactly cluster_size bytes out is
 *    -EUCLEAN.
 */
#include <errno.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Checks and decompresses the payload p (the n sectors entry e of virtual
 * cluster v holds) into out (cluster_size bytes). */
static int comp_decode(struct img *img, uint64_t v, uint64_t e, const uint8_t *p, uint8_t *out)
{
	uint64_t cs = img->g.cluster_size, n = IMG_C_COUNT(e), clen = get_le32(p);
	int got;

	if (clen == 0 || clen > n * 512 - IMG_C_HDR)
		return imgi_fail(img, -EUCLEAN, "compressed cluster %llu: length %llu does not fit its %llu sectors",
				(unsigned long long)v, (unsigned long long)clen, (unsigned long long)n);
	if (imgi_crc32c(0, p + IMG_C_HDR, clen) != get_le32(p + 4))
		return imgi_fail(img, -EUCLEAN, "compressed cluster %llu: bad crc32c", (unsigned long long)v);
	got = LZ4_decompress_safe((const char *)p + IMG_C_HDR, (char *)out, (int)clen, (int)cs);
	if (got != (int)cs)
		return imgi_fail(img, -EUCLEAN, "compressed cluster %llu: lz4 data %s",
				(unsigned long long)v, got < 0 ? "is malformed" : "has the wrong size");
	return 0;
}

static int comp_count_ok(struct img *img, uint64_t v, uint64_t e)
{
	if (IMG_C_COUNT(e) * 512 >= img->g.cluster_size)   /* validated at open; never trust twice */
		return imgi_fail(img, -EUCLEAN, "compressed cluster %llu: payload too long",
				(unsigned long long)v);
	return 0;
}

int comp_read(struct img *img, uint64_t v, uint64_t e, uint8_t *out)
{
	uint64_t n = IMG_C_COUNT(e);
	uint8_t *p;
	int r;

	if ((r = comp_count_ok(img, v, e)))
		return r;
	if (!(p = malloc(n * 512)))
		return -ENOMEM;
	if ((r = img->io->ops->pread(img->io, p, n * 512, IMG_C_SECTOR(e) * 512)))
		imgi_fail(img, r, "reading compressed cluster %llu", (unsigned long long)v);
	else
		r = comp_decode(img, v, e, p, out);
	free(p);
	return r;
}

/* Payload bytes read at a time by comp_read_run. */
#define COMP_BATCH (1u << 20)

void comp_scratch_free(struct comp_scratch *s)
{
	free(s->payload);
	free(s->cluster);
	memset(s, 0, sizeof(*s));
}

int comp_read_run(struct img *img, uint64_t pos, uint64_t end, uint8_t *out, uint64_t *done,
		  struct comp_scratch *s)
{
	unsigned bits = img->g.cluster_bits;
	uint64_t cs = img->g.cluster_size, v0 = pos >> bits, e0 = bat_get(img, v0), k = 1;
	uint64_t sec0 = IMG_C_SECTOR(e0), bytes = IMG_C_COUNT(e0) * 512, at = 0, to = pos;
	int r;

	if ((r = comp_count_ok(img, v0, e0)))
		return r;
	/* The clusters after it in [pos, end) whose payloads follow on the
	 * host (imgconvert -c and compact pack them that way): one read. */
	while (((v0 + k) << bits) < end) {
		uint64_t e = bat_get(img, v0 + k), n = IMG_C_COUNT(e) * 512;
		if (IMG_E_STATE(e) != IMG_E_COMP || n >= cs || IMG_C_SECTOR(e) != sec0 + bytes / 512 ||
		    bytes + n > COMP_BATCH)
			break;
		bytes += n;
		k++;
	}
	if (s->payload_cap < bytes) {
		uint64_t cap = bytes;
		free(s->payload);
		s->payload_cap = 0;
		if (!(s->payload = malloc(cap)))
			return -ENOMEM;
		s->payload_cap = cap;
	}
	if ((r = img->io->ops->pread(img->io, s->payload, bytes, sec0 * 512)))
		return imgi_fail(img, r, "reading compressed cluster %llu", (unsigned long long)v0);
	for (uint64_t i = 0; i < k; i++) {
		uint64_t v = v0 + i, e = bat_get(img, v), cstart = v << bits;
		uint64_t from = pos > cstart ? pos : cstart;
		to = end < cstart + cs ? end : cstart + cs;
		if (from == cstart && to == cstart + cs) {
			/* a whole cluster: straight into the caller's buffer */
			r = comp_decode(img, v, e, s->payload + at, out + (from - pos));
		} else {
			if (!s->cluster && !(s->cluster = malloc(cs)))
				return -ENOMEM;
			r = comp_decode(img, v, e, s->payload + at, s->cluster);
			if (!r)
				memcpy(out + (from - pos), s->cluster + (from - cstart), to - from);
		}
		if (r)
			return r;
		at += IMG_C_COUNT(e) * 512;
	}
	*done = to - pos;
	return 0;
}

/*
 * The count of compressed entries per host cluster (struct cref).  One
 * rule decides the form, cref_dense_fits: a dense window of counts while
 * it holds at most CREF_SPREAD counts per host cluster holding payloads
 * (or CREF_MIN counts in all), else an open-addressing table (linear
 * probing, at most 3/4 full, deletion by backward shift) of 8 bytes a slot.
 * A table that fills up becomes a window again when the rule allows.
 * Either way memory follows the host clusters that hold payloads: at most
 * 16 bytes each in a window, 21.4 in a table (plus 4 KiB), whatever the
 * length of the file or where in it the payloads lie.
 */
#define CREF_MIN 1024u
#define CREF_SPREAD 4u

static int cref_dense_fits(uint64_t len, uint64_t hosts)
{
	return len <= CREF_MIN || len / CREF_SPREAD <= hosts;
}

static uint64_t cref_home(const struct cref *c, uint64_t h)
{
	uint64_t x = h * 0x9e3779b97f4a7c15ull;
	return (x ^ (x >> 29)) & (c->cap - 1);
}

/* Table: the slot holding h, or the empty slot where h goes. */
static uint64_t cref_find(const struct cref *c, uint64_t h)
{
	uint64_t i = cref_home(c, h);

	while (c->slot[i] && c->slot[i] >> 32 != h)
		i = (i + 1) & (c->cap - 1);
	return i;
}

/* Table of cap slots holding every non-zero count (window or table). */
static int cref_rehash(struct cref *c, uint64_t cap)
{
	struct cref n = { .cap = cap, .hosts = c->hosts };

	if (!(n.slot = calloc(cap, sizeof(*n.slot))))
		return -ENOMEM;
	for (uint64_t i = 0; i < c->len; i++)
		if (c->cnt[i])
			n.slot[cref_find(&n, c->base + i)] = (c->base + i) << 32 | c->cnt[i];
	for (uint64_t i = 0; i < c->cap; i++)
		if (c->slot[i])
			n.slot[cref_find(&n, c->slot[i] >> 32)] = c->slot[i];
	free(c->cnt);
	free(c->slot);
	*c = n;
	return 0;
}

/* The table as a window of counts over [lo, hi]. */
static int cref_to_window(struct cref *c, uint64_t lo, uint64_t hi)
{
	uint32_t *n = calloc(hi - lo + 1, sizeof(*n));

	if (!n)
		return -ENOMEM;
	for (uint64_t i = 0; i < c->cap; i++)
		if (c->slot[i])
			n[(c->slot[i] >> 32) - lo] = (uint32_t)c->slot[i];
	free(c->slot);
	c->slot = NULL;
	c->cap = 0;
	free(c->cnt);
	c->cnt = n;
	c->base = lo;
	c->len = hi - lo + 1;
	return 0;
}

/* Slots for n host clusters at most 3/4 full. */
static uint64_t cref_cap(uint64_t n)
{
	uint64_t cap = 16;

	while (cap / 4 * 3 < n)
		cap *= 2;
	return cap;
}

void cref_free(struct img *img)
{
	free(img->cref.cnt);
	free(img->cref.slot);
	memset(&img->cref, 0, sizeof(img->cref));
}

int cref_init(struct img *img, uint64_t lo, uint64_t hi, uint64_t hosts)
{
	struct cref *c = &img->cref;

	cref_free(img);
	if (!hosts)
		return 0;
	if (cref_dense_fits(hi - lo + 1, hosts)) {
		if (!(c->cnt = calloc(hi - lo + 1, sizeof(*c->cnt))))
			return -ENOMEM;
		c->base = lo;
		c->len = hi - lo + 1;
		return 0;
	}
	return cref_rehash(c, cref_cap(hosts));
}

uint64_t cref_hosts(const struct img *img)
{
	return img->cref.hosts;
}

uint32_t cref_get(const struct img *img, uint64_t h)
{
	const struct cref *c = &img->cref;

	if (c->cap)
		return (uint32_t)c->slot[cref_find(c, h)];
	return h >= c->base && h - c->base < c->len ? c->cnt[h - c->base] : 0;
}

/* A window of counts covering h, grown geometrically within the rule;
 * 1: the rule wants a table instead. */
static int cref_widen(struct cref *c, uint64_t h)
{
	uint64_t lo = h < c->base ? h : c->base, end = c->base + c->len;
	uint64_t hi = h >= end ? h + 1 : end, need = hi - lo, len, nbase;
	uint64_t room = (c->hosts + 1) * CREF_SPREAD > CREF_MIN ? (c->hosts + 1) * CREF_SPREAD : CREF_MIN;
	uint32_t *n;

	if (!cref_dense_fits(need, c->hosts + 1))
		return 1;
	len = 2 * c->len > 64 ? 2 * c->len : 64;
	if (len > room)
		len = room;
	if (len < need)
		len = need;
	/* grow toward h: upward from base, or downward from the end */
	nbase = h < c->base ? (hi > len ? hi - len : 0) : lo;
	if (nbase + len < hi)
		len = hi - nbase;
	if (!(n = calloc(len, sizeof(*n))))
		return -ENOMEM;
	if (c->len)
		memcpy(n + (c->base - nbase), c->cnt, c->len * sizeof(*n));
	free(c->cnt);
	c->cnt = n;
	c->base = nbase;
	c->len = len;
	return 0;
}

/* Count one more entry in host cluster h: 1 if it is the first, 0 if not,
 * or -ENOMEM (nothing changed). */
static int cref_add(struct img *img, uint64_t h)
{
	struct cref *c = &img->cref;
	int r;

	if (h >= IMG_MAX_HOST_CLUSTER)
		return -EOVERFLOW;
	if (!c->hosts) {        /* nothing counted: start over where h is */
		free(c->slot);
		c->slot = NULL;
		c->cap = 0;
		c->base = h;
	}
	if (c->cap && c->hosts + 1 > c->cap / 4 * 3) {
		/* the table is full: a window if they now lie densely, else
		 * twice the slots */
		uint64_t lo = h, hi = h;
		for (uint64_t i = 0; i < c->cap; i++)
			if (c->slot[i]) {
				uint64_t k = c->slot[i] >> 32;
				lo = k < lo ? k : lo;
				hi = k > hi ? k : hi;
			}
		if ((r = cref_dense_fits(hi - lo + 1, c->hosts + 1) ? cref_to_window(c, lo, hi)
								   : cref_rehash(c, c->cap * 2)))
			return r;
	}
	if (!c->cap && (h < c->base || h - c->base >= c->len)) {
		if ((r = cref_widen(c, h)) < 0)
			return r;
		if (r && (r = cref_rehash(c, cref_cap(c->hosts + 1))))
			return r;
	}
	if (!c->cap) {
		if (c->cnt[h - c->base]++)
			return 0;
	} else {
		uint64_t i = cref_find(c, h);
		if (c->slot[i]) {
			c->slot[i]++;
			return 0;
		}
		c->slot[i] = h << 32 | 1;
	}
	c->hosts++;
	return 1;
}

/* One entry fewer in host cluster h, which has a count: the count left. */
static uint32_t cref_drop(struct img *img, uint64_t h)
{
	struct cref *c = &img->cref;
	uint64_t i, j, k, m = c->cap - 1;

	if (!c->cap) {
		if (--c->cnt[h - c->base])
			return c->cnt[h - c->base];
		c->hosts--;
		return 0;
	}
	i = cref_find(c, h);
	if ((uint32_t)--c->slot[i])
		return (uint32_t)c->slot[i];
	c->hosts--;
	/* backward shift: a later slot of the run moves into the hole unless
	 * its home lies cyclically in (i, j] */
	for (j = i; c->slot[j = (j + 1) & m]; ) {
		k = cref_home(c, c->slot[j] >> 32);
		if (i <= j ? (k > i && k <= j) : (k > i || k <= j))
			continue;
		c->slot[i] = c->slot[j];
		i = j;
	}
	c->slot[i] = 0;
	return 0;
}

int comp_ref(struct img *img, uint64_t e)
{
	uint64_t h = COMP_HOST(img, e);
	int r = cref_add(img, h);

	if (r == 1 && (r = alloc_mark(img, h)))
		cref_drop(img, h);
	return r;
}

int imgi_release_entry(struct img *img, uint64_t e)
{
	if (IMG_E_STATE(e) == IMG_E_ALLOC)
		return alloc_defer_free(img, IMG_E_PAYLOAD(e));
	if (IMG_E_STATE(e) == IMG_E_COMP) {
		uint64_t h = COMP_HOST(img, e);
		if (!cref_get(img, h))
			return 0;   /* not counted (a duplicate found by check) */
		if (cref_drop(img, h))
			return 0;
		if (img->pack_valid && img->pack_h == h)
			img->pack_valid = 0;
		return alloc_defer_free(img, h);
	}
	return 0;
}

/* Turn the COMPRESSED feature on (durably) before the first entry that
 * needs it can be committed. */
static int enable_feature(struct img *img)
{
	struct imgi_header nh;
	int r = 0;

	pthread_mutex_lock(&img->commit_lock);
	if (!(img->hdr.incompat & IMG_INCOMPAT_COMPRESSED)) {
		nh = img->hdr;
		nh.incompat |= IMG_INCOMPAT_COMPRESSED;
		r = imgi_header_commit(img, &nh);
	}
	pthread_mutex_unlock(&img->commit_lock);
	return r;
}

/* Reserve n sectors for a payload: after the last payload of the packing
 * cluster, or at the start of a new cluster >= min_h.  *e gets the entry
 * (counted in cref).  0, 1 (no addressable room: store uncompressed), or
 * -errno. */
static int comp_place(struct img *img, uint64_t n, uint64_t min_h, uint64_t max_h, uint64_t *e)
{
	uint64_t spc = img->g.cluster_size / 512, h;
	int r = 0;

	pthread_mutex_lock(&img->meta_lock);
	if (!img->pack_valid || img->pack_h < min_h || (max_h && img->pack_h >= max_h) ||
	    img->pack_next + n > spc) {
		r = alloc_get(img, min_h, &h);
		if (!r && (HOST_OFF(img, h) / 512 + spc - 1 > IMG_C_MAX_SECTOR || (max_h && h >= max_h))) {
			alloc_unmark(img, h);   /* beyond what an entry can address,
			                         * or no lower than asked */
			r = 1;
		}
		if (!r) {
			/* a fresh cluster is free: its sectors read as zeros */
			img->pack_valid = 1;
			img->pack_h = h;
			img->pack_next = 0;
		}
	}
	if (!r) {
		*e = IMG_C_MAKE(HOST_OFF(img, img->pack_h) / 512 + img->pack_next, n);
		/* The cluster is marked used already: the count cannot fail
		 * to mark it, only to grow (ENOMEM). */
		if (!(r = comp_ref(img, *e)))
			img->pack_next += n;
	}
	pthread_mutex_unlock(&img->meta_lock);
	return r;
}

int comp_move(struct img *img, uint64_t v, uint64_t min_h, uint64_t max_h)
{
	uint64_t old = img->bat[v], n = IMG_C_COUNT(old), e;
	uint8_t *p = malloc(n * 512);
	int r;

	if (!p)
		return -ENOMEM;
	if ((r = img->io->ops->pread(img->io, p, n * 512, IMG_C_SECTOR(old) * 512))) {
		imgi_fail(img, r, "reading compressed cluster %llu", (unsigned long long)v);
		goto out;
	}
	if ((r = comp_place(img, n, min_h, max_h, &e))) {
		if (r == 1 && !max_h)
			r = imgi_fail(img, -ENOSPC, "no room to move compressed cluster %llu",
				     (unsigned long long)v);
		goto out;
	}
	if ((r = img->io->ops->pwrite(img->io, p, n * 512, IMG_C_SECTOR(e) * 512))) {
		imgi_fail(img, r, "writing compressed cluster %llu", (unsigned long long)v);
		pthread_mutex_lock(&img->meta_lock);
		imgi_release_entry(img, e);
		pthread_mutex_unlock(&img->meta_lock);
		goto out;
	}
	pthread_mutex_lock(&img->meta_lock);
	if (!(r = imgi_release_entry(img, old)))
		bat_set(img, v, e);
	pthread_mutex_unlock(&img->meta_lock);
out:
	free(p);
	return r;
}

int comp_store(struct img *img, uint64_t v, const uint8_t *data)
{
	uint64_t cs = img->g.cluster_size, spc = cs / 512, n, s, e, old;
	int bound = LZ4_compressBound((int)cs), clen, r;
	uint8_t *p = malloc((size_t)bound + IMG_C_HDR + 512);

	if (!p)
		return -ENOMEM;
	/* The last cluster of a disk whose size is not a multiple of the
	 * cluster holds only the sectors up to the end of the disk: compressed,
	 * it must save sectors against those. */
	if ((v + 1) * cs > img->vsize)
		spc = (img->vsize - v * cs + 511) / 512;
	clen = LZ4_compress_default((const char *)data, (char *)p + IMG_C_HDR, (int)cs, bound);
	n = clen > 0 ? ((uint64_t)clen + IMG_C_HDR + 511) / 512 : spc;
	if (n >= spc) {       /* saves no sector: store it normally */
		free(p);
		return 0;
	}
	put_le32(p, (uint32_t)clen);
	put_le32(p + 4, imgi_crc32c(0, p + IMG_C_HDR, (size_t)clen));
	memset(p + IMG_C_HDR + clen, 0, n * 512 - IMG_C_HDR - (uint64_t)clen);
	if ((r = enable_feature(img)))
		goto out;

	if ((r = comp_place(img, n, img->g.data_cluster0, 0, &e)) == 1) {
		r = 0;
		goto out;
	}
	if (r) {
		imgi_fail(img, r, "allocating space for a compressed cluster");
		goto out;
	}
	s = IMG_C_SECTOR(e);
	if ((r = img->io->ops->pwrite(img->io, p, n * 512, s * 512))) {
		imgi_fail(img, r, "writing a compressed cluster");
		pthread_mutex_lock(&img->meta_lock);
		imgi_release_entry(img, e);   /* the sectors are never reused */
		pthread_mutex_unlock(&img->meta_lock);
		goto out;
	}
	pthread_mutex_lock(&img->meta_lock);
	old = img->bat[v];
	r = imgi_release_entry(img, old);
	if (!r)
		bat_set(img, v, e);
	pthread_mutex_unlock(&img->meta_lock);
	if (!r)
		r = 1;
out:
	free(p);
	return r;
}

uint64_t imgi_used_end(struct img *img)
{
	uint64_t last = alloc_last_used(img), end = HOST_OFF(img, last), pend = 0;

	/* A host cluster of payloads needs only its sectors up to the last
	 * payload (meta_lock held by the caller, or no I/O running). */
	if (last && cref_get(img, last - 1)) {
		for (uint64_t v = 0; v < img->g.vclusters; v++) {
			uint64_t e = img->bat[v];
			if (IMG_E_STATE(e) == IMG_E_COMP && COMP_HOST(img, e) == last - 1 &&
			    (IMG_C_SECTOR(e) + IMG_C_COUNT(e)) * 512 > pend)
				pend = (IMG_C_SECTOR(e) + IMG_C_COUNT(e)) * 512;
		}
		if (pend)
			end = pend;
	}
	return end;
}
