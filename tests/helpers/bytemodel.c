/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytemodel.h"

int bm_init(struct bytemodel *m, uint64_t size, uint64_t cap)
{
	memset(m, 0, sizeof(*m));
	m->cap = cap;
	m->flushed = calloc(1, cap ? cap : 1);
	m->cur = calloc(1, cap ? cap : 1);
	if (!m->flushed || !m->cur) {
		bm_free(m);
		return -ENOMEM;
	}
	m->flushed_size = m->size = size;
	return 0;
}

static void ops_clear(struct bytemodel *m)
{
	for (size_t i = 0; i < m->nops; i++)
		free(m->ops[i].data);
	m->nops = 0;
	m->nsizes = 0;
}

void bm_free(struct bytemodel *m)
{
	ops_clear(m);
	free(m->ops);
	free(m->sizes);
	free(m->flushed);
	free(m->cur);
	memset(m, 0, sizeof(*m));
}

static int add_op(struct bytemodel *m, uint64_t off, const void *buf, uint64_t len)
{
	struct bm_op *op;

	if (off > m->cap || len > m->cap - off)
		return -EINVAL;
	if (m->nops == m->capops) {
		size_t n = m->capops ? 2 * m->capops : 16;
		op = realloc(m->ops, n * sizeof(*op));
		if (!op)
			return -ENOMEM;
		m->ops = op;
		m->capops = n;
	}
	op = &m->ops[m->nops];
	op->off = off;
	op->len = len;
	op->data = NULL;
	if (buf) {
		op->data = malloc(len ? len : 1);
		if (!op->data)
			return -ENOMEM;
		memcpy(op->data, buf, len);
		memcpy(m->cur + off, buf, len);
	} else {
		memset(m->cur + off, 0, len);
	}
	m->nops++;
	return 0;
}

int bm_copy(struct bytemodel *dst, const struct bytemodel *src)
{
	int r = bm_init(dst, src->size, src->cap);

	if (r)
		return r;
	memcpy(dst->flushed, src->flushed, src->cap);
	dst->flushed_size = src->flushed_size;
	for (size_t i = 0; !r && i < src->nops; i++)
		r = add_op(dst, src->ops[i].off, src->ops[i].data, src->ops[i].len);
	if (!r && src->nsizes) {
		dst->sizes = malloc(src->nsizes * sizeof(*dst->sizes));
		if (!dst->sizes)
			r = -ENOMEM;
		else
			memcpy(dst->sizes, src->sizes, src->nsizes * sizeof(*dst->sizes));
		dst->nsizes = dst->capsizes = src->nsizes;
	}
	if (r) {
		bm_free(dst);
		return r;
	}
	memcpy(dst->cur, src->cur, src->cap);
	dst->size = src->size;
	return 0;
}

int bm_write(struct bytemodel *m, uint64_t off, const void *buf, uint64_t len)
{
	return add_op(m, off, buf, len);
}

int bm_zero(struct bytemodel *m, uint64_t off, uint64_t len)
{
	return add_op(m, off, NULL, len);
}

int bm_resize(struct bytemodel *m, uint64_t size)
{
	int r = 0;

	/* Past cap the disk always reads as zeros: nothing to record there. */
	if (size < m->size && size < m->cap)
		r = add_op(m, size, NULL, (m->size < m->cap ? m->size : m->cap) - size);
	if (r)
		return r;
	if (m->nsizes == m->capsizes) {
		size_t n = m->capsizes ? 2 * m->capsizes : 8;
		uint64_t *s = realloc(m->sizes, n * sizeof(*s));
		if (!s)
			return -ENOMEM;
		m->sizes = s;
		m->capsizes = n;
	}
	m->sizes[m->nsizes++] = size;
	m->size = size;
	return 0;
}

void bm_flush(struct bytemodel *m)
{
	memcpy(m->flushed, m->cur, m->cap);
	m->flushed_size = m->size;
	ops_clear(m);
}

int bm_size_ok(const struct bytemodel *m, uint64_t size)
{
	if (size == m->flushed_size)
		return 1;
	for (size_t i = 0; i < m->nsizes; i++)
		if (m->sizes[i] == size)
			return 1;
	return 0;
}

static int byte_ok(const struct bytemodel *m, uint64_t off, uint8_t v)
{
	if (off >= m->cap)
		return v == 0;
	if (m->flushed[off] == v)
		return 1;
	for (size_t i = 0; i < m->nops; i++) {
		const struct bm_op *op = &m->ops[i];
		if (off >= op->off && off - op->off < op->len &&
		    (op->data ? op->data[off - op->off] : 0) == v)
			return 1;
	}
	return 0;
}

int bm_check(const struct bytemodel *m, uint64_t off, const void *buf, uint64_t len,
	     uint64_t *bad_off)
{
	const uint8_t *b = buf;

	for (uint64_t pos = 0; pos < len; ) {
		uint64_t n = len - pos < 4096 ? len - pos : 4096;
		/* Fast path: whole chunks equal to the flushed contents. */
		if (off + pos + n <= m->cap && !memcmp(b + pos, m->flushed + off + pos, n)) {
			pos += n;
			continue;
		}
		for (uint64_t i = 0; i < n; i++)
			if (!byte_ok(m, off + pos + i, b[pos + i])) {
				*bad_off = off + pos + i;
				return 1;
			}
		pos += n;
	}
	return 0;
}

int bm_check_exact(const struct bytemodel *m, uint64_t off, const void *buf, uint64_t len,
		   uint64_t *bad_off)
{
	const uint8_t *b = buf;

	if (off <= m->cap && len <= m->cap - off && !memcmp(b, m->cur + off, len))
		return 0;
	for (uint64_t i = 0; i < len; i++) {
		uint8_t want = off + i < m->cap ? m->cur[off + i] : 0;
		if (b[i] != want) {
			*bad_off = off + i;
			return 1;
		}
	}
	return 0;
}

void bm_describe(const struct bytemodel *m, uint64_t off, char *out, size_t outlen)
{
	size_t used;

	if (off >= m->cap) {
		snprintf(out, outlen, "past the model: 0");
		return;
	}
	used = (size_t)snprintf(out, outlen, "flushed %#x, latest %#x, unflushed ops:",
				m->flushed[off], m->cur[off]);
	for (size_t i = 0; i < m->nops && used < outlen; i++) {
		const struct bm_op *op = &m->ops[i];
		if (off >= op->off && off - op->off < op->len)
			used += (size_t)snprintf(out + used, outlen - used, " #%zu[%#llx+%#llx]=%#x", i,
						 (unsigned long long)op->off,
						 (unsigned long long)op->len,
						 op->data ? op->data[off - op->off] : 0);
	}
}
