/* SPDX-License-Identifier: MIT */
/* In-memory I/O backend for tests and fuzzing.  Thread-safe (one mutex).
 * Files are capped at IMG_MEM_MAX bytes: writes past it fail with -EFBIG,
 * which keeps hostile inputs from allocating without bound.
 *
 * Bytes past len are undefined (the capacity is not cleared, so a big
 * reservation costs no page faults); whatever makes len grow clears the gap
 * it opens first, so [0, len) always reads as the file. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define IMG_MEM_MAX (1ull << 31)

struct mem_io {
	struct img_io io;
	pthread_mutex_t lock;
	uint8_t *data;
	size_t len, cap;
};

static int mem_reserve(struct mem_io *m, uint64_t end)
{
	size_t ncap;
	uint8_t *n;

	if (end > IMG_MEM_MAX)
		return -EFBIG;
	if (end <= m->cap)
		return 0;
	ncap = m->cap ? m->cap : 65536;
	while (ncap < end)
		ncap *= 2;
	n = realloc(m->data, ncap);
	if (!n)
		return -ENOMEM;
	m->data = n;
	m->cap = ncap;
	return 0;
}

static int mem_pread(struct img_io *io, void *buf, size_t len, uint64_t off)
{
	struct mem_io *m = (struct mem_io *)io;
	pthread_mutex_lock(&m->lock);
	if (off >= m->len) {
		memset(buf, 0, len);
	} else {
		size_t n = m->len - off < len ? (size_t)(m->len - off) : len;
		memcpy(buf, m->data + off, n);
		memset((uint8_t *)buf + n, 0, len - n);
	}
	pthread_mutex_unlock(&m->lock);
	return 0;
}

static int mem_pwrite(struct img_io *io, const void *buf, size_t len, uint64_t off)
{
	struct mem_io *m = (struct mem_io *)io;
	int r;
	uint64_t end;

	if (__builtin_add_overflow(off, (uint64_t)len, &end))
		return -EFBIG;
	pthread_mutex_lock(&m->lock);
	r = mem_reserve(m, end);
	if (!r) {
		if (off > m->len)
			memset(m->data + m->len, 0, off - m->len);
		memcpy(m->data + off, buf, len);
		if (end > m->len)
			m->len = end;
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int mem_flush(struct img_io *io)
{
	(void)io;
	return 0;
}

static int mem_punch(struct img_io *io, uint64_t off, uint64_t len)
{
	struct mem_io *m = (struct mem_io *)io;
	pthread_mutex_lock(&m->lock);
	if (off < m->len) {
		uint64_t n = m->len - off < len ? m->len - off : len;
		memset(m->data + off, 0, n);
	}
	pthread_mutex_unlock(&m->lock);
	return 0;
}

static int mem_truncate(struct img_io *io, uint64_t size)
{
	struct mem_io *m = (struct mem_io *)io;
	int r = 0;
	pthread_mutex_lock(&m->lock);
	if (size > m->len && !(r = mem_reserve(m, size)))
		memset(m->data + m->len, 0, size - m->len);
	if (!r)
		m->len = size;
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int mem_size(struct img_io *io, uint64_t *size)
{
	struct mem_io *m = (struct mem_io *)io;
	pthread_mutex_lock(&m->lock);
	*size = m->len;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

static void mem_close(struct img_io *io)
{
	struct mem_io *m = (struct mem_io *)io;
	pthread_mutex_destroy(&m->lock);
	free(m->data);
	free(m);
}

static const struct img_io_ops mem_ops = {
	.pread = mem_pread, .pwrite = mem_pwrite, .flush = mem_flush, .punch = mem_punch,
	.truncate = mem_truncate, .size = mem_size, .close = mem_close,
};

IMG_API int img_io_mem_new(const void *init, size_t len, struct img_io **out)
{
	struct mem_io *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	m->io.ops = &mem_ops;
	m->io.name = "(memory)";
	if (len) {
		int r = mem_reserve(m, len);
		if (r) {
			mem_close(&m->io);
			return r;
		}
		memcpy(m->data, init, len);
		m->len = len;
	}
	*out = &m->io;
	return 0;
}

IMG_API int img_io_mem_adopt(void *data, size_t len, struct img_io **out)
{
	struct mem_io *m;
	int r;

	if (len > IMG_MEM_MAX) {
		free(data);
		return -EFBIG;
	}
	if ((r = img_io_mem_new(NULL, 0, out))) {
		free(data);
		return r;
	}
	m = (struct mem_io *)*out;
	m->data = data;
	m->len = m->cap = data ? len : 0;
	return 0;
}

IMG_API void *img_io_mem_take(struct img_io *io, size_t *len)
{
	struct mem_io *m = (struct mem_io *)io;
	void *d;

	pthread_mutex_lock(&m->lock);
	d = m->data;
	*len = m->len;
	m->data = NULL;
	m->len = m->cap = 0;
	pthread_mutex_unlock(&m->lock);
	return d;
}

IMG_API const void *img_io_mem_data(struct img_io *io, size_t *len)
{
	struct mem_io *m = (struct mem_io *)io;
	*len = m->len;
	return m->data;
}
