/* SPDX-License-Identifier: MIT */
/* The fault-injecting backend: which call fails, with what, and that a failed
 * call does not reach the inner backend; LIBIMG_FAULT parsing; the library
 * ignores LIBIMG_FAULT unless a test hook (imgi_io_wrap_set) asks for it. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testio.h"
#include "../helpers/fault_env.h"
#include "../helpers/tassert.h"

static struct img_io *new_mem_fault(void)
{
	struct img_io *m, *f;
	T_OK(img_io_mem_new(NULL, 0, &m));
	T_OK(imgi_io_fault_new(m, &f));
	return f;
}

static int wr(struct img_io *io, uint8_t v, size_t len, uint64_t off)
{
	uint8_t buf[8192];
	T_ASSERT(len <= sizeof(buf));
	memset(buf, v, len);
	return io->ops->pwrite(io, buf, len, off);
}

/* Byte at off as read through io. */
static uint8_t byte_at(struct img_io *io, uint64_t off)
{
	uint8_t b;
	T_OK(io->ops->pread(io, &b, 1, off));
	return b;
}

static void test_passthrough(void)
{
	struct img_io *f = new_mem_fault();
	uint64_t sz;

	T_ASSERT(f->ops->usage == NULL && f->ops->lock == NULL);
	T_OK(wr(f, 0xaa, 4096, 0));
	T_OK(f->ops->flush(f));
	T_OK(f->ops->punch(f, 0, 512));
	T_OK(f->ops->truncate(f, 8192));
	T_OK(f->ops->size(f, &sz));
	T_EQ(sz, 8192);
	T_EQ(byte_at(f, 0), 0);
	T_EQ(byte_at(f, 512), 0xaa);
	/* Unarmed: every call counted (size is not a call class). */
	T_EQ(imgi_io_fault_calls(f), 6);
	T_EQ(imgi_io_fault_fired(f), 0);
	f->ops->close(f);
}

static void test_nth_write_once(void)
{
	struct img_io *f = new_mem_fault();

	imgi_io_fault_arm(f, IMG_FAULT_WRITE, 3, ENOSPC, 0);
	T_OK(wr(f, 1, 512, 0));
	T_OK(f->ops->flush(f));           /* not a write: not counted */
	T_OK(wr(f, 2, 512, 512));
	T_EQ(byte_at(f, 0), 1);           /* reads not counted either */
	T_EQ(wr(f, 3, 512, 1024), -ENOSPC);
	T_EQ(byte_at(f, 1024), 0);        /* the failed write never landed */
	T_OK(wr(f, 4, 512, 1024));        /* once only */
	T_EQ(byte_at(f, 1024), 4);
	T_EQ(imgi_io_fault_calls(f), 4);
	T_EQ(imgi_io_fault_fired(f), 1);
	f->ops->close(f);
}

static void test_sticky_and_mask(void)
{
	struct img_io *f = new_mem_fault();
	uint8_t b[16];

	T_OK(wr(f, 7, 4096, 0));
	imgi_io_fault_arm(f, IMG_FAULT_FLUSH | IMG_FAULT_PUNCH, 2, EIO, IMG_FAULT_STICKY);
	T_OK(f->ops->flush(f));
	T_OK(wr(f, 8, 512, 0));
	T_EQ(f->ops->punch(f, 0, 512), -EIO);
	T_EQ(byte_at(f, 0), 8);           /* punch did not happen */
	T_EQ(f->ops->flush(f), -EIO);
	T_EQ(f->ops->punch(f, 512, 512), -EIO);
	T_OK(f->ops->truncate(f, 4096));  /* not in the mask */
	T_OK(f->ops->pread(f, b, sizeof(b), 0));
	T_EQ(imgi_io_fault_calls(f), 4);
	T_EQ(imgi_io_fault_fired(f), 3);
	/* Disarming lifts the fault. */
	imgi_io_fault_arm(f, 0, 0, 0, 0);
	T_OK(f->ops->flush(f));
	T_OK(f->ops->punch(f, 0, 512));
	T_EQ(byte_at(f, 0), 0);
	T_EQ(imgi_io_fault_fired(f), 0);
	f->ops->close(f);
}

static void test_reads_and_truncate(void)
{
	struct img_io *f = new_mem_fault();
	uint8_t b[4];
	uint64_t sz;

	T_OK(wr(f, 5, 4096, 0));
	imgi_io_fault_arm(f, IMG_FAULT_READ, 1, EIO, 0);
	T_EQ(f->ops->pread(f, b, sizeof(b), 0), -EIO);
	T_OK(f->ops->pread(f, b, sizeof(b), 0));
	T_EQ(b[0], 5);
	imgi_io_fault_arm(f, IMG_FAULT_TRUNCATE, 1, ENOSPC, 0);
	T_EQ(f->ops->truncate(f, 1 << 20), -ENOSPC);
	T_OK(f->ops->size(f, &sz));
	T_EQ(sz, 4096);
	/* A negative errno is accepted as well. */
	imgi_io_fault_arm(f, IMG_FAULT_ANY, 2, -EIO, 0);
	T_OK(f->ops->size(f, &sz));       /* size never fails */
	T_OK(f->ops->flush(f));
	T_EQ(f->ops->pread(f, b, 1, 0), -EIO);
	f->ops->close(f);
}

static void test_partial(void)
{
	struct img_io *f = new_mem_fault();
	uint64_t sz;

	imgi_io_fault_arm(f, IMG_FAULT_WRITE, 1, ENOSPC, IMG_FAULT_PARTIAL);
	T_EQ(wr(f, 9, 4096 + 1100, 0), -ENOSPC);
	/* Half of 5196 is 2598, rounded down to 2560. */
	T_OK(f->ops->size(f, &sz));
	T_EQ(sz, 2560);
	T_EQ(byte_at(f, 2559), 9);
	T_EQ(byte_at(f, 2560), 0);
	/* Too short to split: nothing written. */
	imgi_io_fault_arm(f, IMG_FAULT_WRITE, 1, ENOSPC, IMG_FAULT_PARTIAL);
	T_EQ(wr(f, 10, 1000, 8192), -ENOSPC);
	T_OK(f->ops->size(f, &sz));
	T_EQ(sz, 2560);
	f->ops->close(f);
}

static void test_posix_inner(void)
{
	char path[] = "/tmp/libimg-io-fault-XXXXXX";
	struct img_io *p, *f;
	uint64_t used;
	pid_t holder;
	int fd = mkstemp(path);

	T_ASSERT(fd >= 0);
	close(fd);
	T_OK(img_io_posix_open(path, 0, &p));
	T_OK(imgi_io_fault_new(p, &f));
	T_ASSERT(f->ops->usage != NULL && f->ops->lock != NULL);
	T_ASSERT(strcmp(f->name, path) == 0);
	T_OK(f->ops->lock(f, 1, &holder));
	T_OK(wr(f, 1, 8192, 0));
	T_OK(f->ops->flush(f));
	T_OK(f->ops->usage(f, &used));
	T_ASSERT(used >= 8192);
	imgi_io_fault_arm(f, IMG_FAULT_FLUSH, 1, EIO, 0);
	T_EQ(f->ops->flush(f), -EIO);
	f->ops->close(f);
	unlink(path);
}

struct thr {
	struct img_io *io;
	int failures;
};

static void *thr_main(void *arg)
{
	struct thr *t = arg;
	uint8_t b = 1;
	for (int i = 0; i < 5000; i++)
		if (t->io->ops->pwrite(t->io, &b, 1, (uint64_t)i) == -EIO)
			t->failures++;
	return NULL;
}

/* Counting is exact under concurrent calls. */
static void test_threads(void)
{
	struct img_io *f = new_mem_fault();
	struct thr t[2] = { { f, 0 }, { f, 0 } };
	pthread_t id[2];

	imgi_io_fault_arm(f, IMG_FAULT_WRITE, 7777, EIO, 0);
	for (int i = 0; i < 2; i++)
		T_OK(pthread_create(&id[i], NULL, thr_main, &t[i]));
	for (int i = 0; i < 2; i++)
		T_OK(pthread_join(id[i], NULL));
	T_EQ(imgi_io_fault_calls(f), 10000);
	T_EQ(imgi_io_fault_fired(f), 1);
	T_EQ(t[0].failures + t[1].failures, 1);
	f->ops->close(f);
}

/* Arms through LIBIMG_FAULT and returns the wrapper, or NULL with *r set. */
static struct img_io *from_env(const char *spec, int *r, struct img_io **inner)
{
	struct img_io *out = NULL;

	T_OK(img_io_mem_new(NULL, 0, inner));
	if (spec)
		T_OK(setenv("LIBIMG_FAULT", spec, 1));
	else
		T_OK(unsetenv("LIBIMG_FAULT"));
	*r = imgi_io_fault_from_env(*inner, &out);
	return out;
}

static void test_env(void)
{
	static const char *bad[] = {
		"write", "write:3", "write:0:EIO", "write:-1:EIO", "write:x:EIO",
		"write:3:EWHAT", "scribble:3:EIO", "write:3:EIO,forever", "write:3:EIO:1",
		"write::EIO", ":3:EIO", "write:3:0", "write:99999999999999999999:EIO",
	};
	struct img_io *inner, *f;
	int r;

	f = from_env(NULL, &r, &inner);
	T_OK(r);
	T_ASSERT(f == inner);
	inner->ops->close(inner);

	f = from_env("", &r, &inner);
	T_OK(r);
	T_ASSERT(f == inner);
	inner->ops->close(inner);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f = from_env(bad[i], &r, &inner);
		if (r != -EINVAL)
			T_FAIL("LIBIMG_FAULT=%s: got %d, expected -EINVAL", bad[i], r);
		T_ASSERT(strstr(img_last_error(), "LIBIMG_FAULT") != NULL);
		inner->ops->close(inner);    /* still ours */
	}

	f = from_env("write:2:ENOSPC", &r, &inner);
	T_OK(r);
	T_ASSERT(f != inner);
	T_OK(wr(f, 1, 512, 0));
	T_EQ(wr(f, 1, 512, 0), -ENOSPC);
	T_OK(wr(f, 1, 512, 0));
	f->ops->close(f);

	f = from_env("flush:1:EIO,sticky", &r, &inner);
	T_OK(r);
	T_OK(wr(f, 1, 512, 0));
	T_EQ(f->ops->flush(f), -EIO);
	T_EQ(f->ops->flush(f), -EIO);
	f->ops->close(f);

	f = from_env("any:2:28,partial,sticky", &r, &inner);
	T_OK(r);
	T_OK(f->ops->flush(f));
	T_EQ(wr(f, 3, 2048, 0), -ENOSPC);
	T_EQ(byte_at(inner, 1023), 3);
	T_EQ(byte_at(inner, 1024), 0);
	T_EQ(f->ops->punch(f, 0, 512), -ENOSPC);
	f->ops->close(f);

	f = from_env("truncate:1:EDQUOT", &r, &inner);
	T_OK(r);
	T_EQ(f->ops->truncate(f, 10), -EDQUOT);
	f->ops->close(f);
	unsetenv("LIBIMG_FAULT");
}

/* The library reads LIBIMG_FAULT only through the hook: without it an image
 * is created and opened as if the variable were not set; with it the first
 * write fails. */
static void test_hook(void)
{
	char dir[] = "/tmp/io_fault.XXXXXX", path[64];
	struct img_create_opts o = { .virtual_size = 1 << 20 };
	struct img *img;
	int r;

	T_ASSERT(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/a.img", dir);
	T_OK(setenv("LIBIMG_FAULT", "write:1:EIO,sticky", 1));
	T_OK(img_create(path, &o));
	T_OK(img_open(path, IMG_OPEN_RDWR, &img));
	T_EQ(img_pwrite(img, "x", 1, 0), 1);
	T_OK(img_close(img));

	imgi_io_wrap_set(imgi_io_fault_from_env);
	T_OK(unlink(path));
	T_EQ(img_create(path, &o), -EIO);
	T_ASSERT(access(path, F_OK) < 0);
	T_OK(unsetenv("LIBIMG_FAULT"));
	T_OK(img_create(path, &o));
	T_OK(setenv("LIBIMG_FAULT", "write:1:EIO,sticky", 1));
	r = img_open(path, IMG_OPEN_RDWR, &img);     /* may write already */
	if (!r) {
		T_ASSERT(img_pwrite(img, "x", 1, 0) < 0 || img_flush(img) < 0);
		(void)img_close(img);
	} else {
		T_EQ(r, -EIO);
	}

	imgi_io_wrap_set(NULL);
	T_OK(unsetenv("LIBIMG_FAULT"));
	T_OK(unlink(path));
	T_OK(rmdir(dir));
}

static const struct t_case cases[] = {
	T_CASE(test_passthrough), T_CASE(test_nth_write_once), T_CASE(test_sticky_and_mask),
	T_CASE(test_reads_and_truncate), T_CASE(test_partial), T_CASE(test_posix_inner),
	T_CASE(test_threads), T_CASE(test_env), T_CASE(test_hook),
};

int main(int argc, char **argv)
{
	return T_MAIN(argc, argv, cases);
}
