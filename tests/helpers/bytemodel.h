/* SPDX-License-Identifier: MIT */
/*
 * A model of what a virtual disk may read back after a crash.  It knows the
 * flushed contents and size (what must survive) and the operations done
 * since the last flush (what may or may not have survived).  After a crash,
 * a byte must read as its flushed value or as the value one of those later
 * operations gave it; nothing else (not another cluster's data, not stale
 * data of a freed cluster).  The virtual size must be the flushed size or
 * one set since.
 */
#ifndef TESTS_BYTEMODEL_H
#define TESTS_BYTEMODEL_H

#include <stddef.h>
#include <stdint.h>

struct bm_op {
	uint64_t off, len;
	uint8_t *data;             /* NULL: zeros */
};

struct bytemodel {
	uint64_t cap;              /* bytes allocated for flushed and cur */
	uint8_t *flushed;          /* durable contents (zeros past the size) */
	uint8_t *cur;              /* latest contents */
	uint64_t flushed_size, size;
	struct bm_op *ops;         /* since the last flush */
	size_t nops, capops;
	uint64_t *sizes;           /* sizes set since the last flush */
	size_t nsizes, capsizes;
};

/* An all-zero disk of size bytes, all flushed.  Contents are modelled up
 * to cap bytes (writes must stay below it); the size may grow past cap, and
 * bytes there must read as zeros. */
int bm_init(struct bytemodel *m, uint64_t size, uint64_t cap);
void bm_free(struct bytemodel *m);
/* Copies src into dst (dst must not be initialised). */
int bm_copy(struct bytemodel *dst, const struct bytemodel *src);

int bm_write(struct bytemodel *m, uint64_t off, const void *buf, uint64_t len);
int bm_zero(struct bytemodel *m, uint64_t off, uint64_t len);
/* A new virtual size: bytes past a smaller size read as zero afterwards. */
int bm_resize(struct bytemodel *m, uint64_t size);
/* Everything done so far is durable. */
void bm_flush(struct bytemodel *m);

/* Is size an allowed virtual size after a crash? */
int bm_size_ok(const struct bytemodel *m, uint64_t size);
/* Checks buf (len bytes read at off after a crash).  Returns 0, or 1 with
 * the first bad byte's offset in *bad_off. */
int bm_check(const struct bytemodel *m, uint64_t off, const void *buf, uint64_t len,
	     uint64_t *bad_off);
/* Checks buf against the latest contents (no crash): 0 or 1 as bm_check. */
int bm_check_exact(const struct bytemodel *m, uint64_t off, const void *buf, uint64_t len,
		   uint64_t *bad_off);
/* Describes what byte off may be, for messages: writes to out. */
void bm_describe(const struct bytemodel *m, uint64_t off, char *out, size_t outlen);

#endif
