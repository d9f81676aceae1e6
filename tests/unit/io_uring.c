/* SPDX-License-Identifier: MIT */
/*
 * The io_uring backend against the same contract as the posix one (both run
 * the same checks): reads past the end of the file are zeros, a read that
 * straddles the end is completed with zeros, punch leaves the size, truncate
 * sets it, batches of more requests than the ring's depth, mixed reads and
 * writes, bad requests.  Then: an image on it (img_open with
 * IMG_OPEN_IO_URING), the fault backend wrapped around it, and the fallback
 * to posix when the kernel refuses io_uring (seccomp in a child).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testio.h"
#include "../helpers/tassert.h"

static char dir[] = "/tmp/libimg-uring.XXXXXX";

static void path_of(char *p, size_t n, const char *name)
{
	snprintf(p, n, "%s/%s", dir, name);
}

static int zeros(const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return 0;
	return 1;
}

static void fill(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(i * 131 + seed * 7 + (i >> 9));
}

typedef int (*open_fn)(const char *, unsigned, struct img_io **);

static void contract(open_fn op, const char *what)
{
	char p[256];
	struct img_io *io;
	uint8_t *a = malloc(1 << 20), *b = malloc(1 << 20);
	uint64_t size;

	T_ASSERT(a && b);
	snprintf(p, sizeof(p), "%s/contract-%s", dir, what);
	unlink(p);
	T_OK(op(p, IMG_IO_CREATE, &io));
	{
		struct img_io *io2 = NULL;
		T_EQ(op(p, IMG_IO_CREATE, &io2), -EEXIST);   /* O_EXCL kept */
		T_ASSERT(io2 == NULL);
	}

	/* write, read back */
	fill(a, 1 << 20, 1);
	T_OK(io->ops->pwrite(io, a, 1 << 20, 4096));
	T_OK(io->ops->size(io, &size));
	T_EQ(size, 4096 + (1 << 20));
	memset(b, 0xee, 1 << 20);
	T_OK(io->ops->pread(io, b, 1 << 20, 4096));
	T_OK(memcmp(a, b, 1 << 20));
	/* the hole before the data reads as zeros */
	T_OK(io->ops->pread(io, b, 4096, 0));
	T_ASSERT(zeros(b, 4096));
	/* past the end: zeros; straddling the end: data then zeros */
	memset(b, 0xee, 8192);
	T_OK(io->ops->pread(io, b, 8192, size + 100));
	T_ASSERT(zeros(b, 8192));
	memset(b, 0xee, 8192);
	T_OK(io->ops->pread(io, b, 8192, size - 1000));
	T_OK(memcmp(b, a + (1 << 20) - 1000, 1000));
	T_ASSERT(zeros(b + 1000, 8192 - 1000));
	/* punch: zeros, same size */
	T_OK(io->ops->punch(io, 4096 + 65536, 65536));
	T_OK(io->ops->pread(io, b, 65536, 4096 + 65536));
	T_ASSERT(zeros(b, 65536));
	T_OK(io->ops->size(io, &size));
	T_EQ(size, 4096 + (1 << 20));
	/* truncate */
	T_OK(io->ops->truncate(io, 8192));
	T_OK(io->ops->size(io, &size));
	T_EQ(size, 8192);
	T_OK(io->ops->pread(io, b, 4096, 4096));
	T_OK(memcmp(a, b, 4096));
	T_OK(io->ops->flush(io));

	/* a batch of 100 writes of 8 KiB (more than the ring's depth), then
	 * 100 reads, one of them past the end, one straddling it */
	{
		struct img_io_req q[100];
		uint8_t *w = malloc(100 * 8192), *r = malloc(100 * 8192);
		T_ASSERT(w && r);
		fill(w, 100 * 8192, 3);
		for (int i = 0; i < 100; i++)
			q[i] = (struct img_io_req){ .buf = w + i * 8192, .len = 8192,
						    .off = (uint64_t)(99 - i) * 8192, .op = IMG_IO_OP_WRITE,
						    .result = 1 };
		T_OK(img_io_batch(io, q, 100));
		for (int i = 0; i < 100; i++)
			T_EQ(q[i].result, 0);
		T_OK(io->ops->size(io, &size));
		T_EQ(size, 100 * 8192);
		memset(r, 0xee, 100 * 8192);
		for (int i = 0; i < 100; i++)
			q[i] = (struct img_io_req){ .buf = r + i * 8192, .len = 8192,
						    .off = (uint64_t)(99 - i) * 8192, .op = IMG_IO_OP_READ,
						    .result = 1 };
		q[98].off = size + 5000;            /* wholly past the end */
		q[97].off = size - 3000;            /* straddles it */
		T_OK(img_io_batch(io, q, 100));
		for (int i = 0; i < 100; i++) {
			T_EQ(q[i].result, 0);
			if (i == 98) {
				T_ASSERT(zeros(r + i * 8192, 8192));
			} else if (i == 97) {
				T_OK(memcmp(r + i * 8192, w + 0 * 8192 + 8192 - 3000, 3000));
				T_ASSERT(zeros(r + i * 8192 + 3000, 8192 - 3000));
			} else {
				T_OK(memcmp(r + i * 8192, w + i * 8192, 8192));
			}
		}
		/* an unknown op fails the batch */
		q[0].op = 7;
		T_EQ(img_io_batch(io, q, 1), -EINVAL);
		/* an empty batch is fine */
		T_OK(img_io_batch(io, q, 0));
		free(w);
		free(r);
	}
	/* direct I/O: aligned requests work (where the file system has it) */
	io->ops->close(io);
	io = NULL;
	if (op(p, IMG_IO_DIRECT, &io) == -EINVAL)
		printf("%s: no direct I/O on this file system: not checked\n", what);
	else {
		T_ASSERT(io != NULL);
		uint8_t *al;
		T_OK(posix_memalign((void **)&al, 4096, 65536));
		fill(al, 65536, 9);
		T_OK(io->ops->pwrite(io, al, 65536, 1 << 20));
		memset(al, 0, 65536);
		T_OK(io->ops->pread(io, al, 65536, 1 << 20));
		fill(a, 65536, 9);
		T_OK(memcmp(a, al, 65536));
		free(al);
		io->ops->close(io);
	}
	unlink(p);
	free(a);
	free(b);
}

/* An image on the io_uring backend, through img_open. */
static void image_on_uring(void)
{
	char p[256];
	struct img_create_opts o = { .virtual_size = 64 << 20, .cluster_size = 65536 };
	struct img_info in;
	struct img_check_result cr;
	struct img *img;
	uint8_t *a = malloc(3 << 20), *b = malloc(3 << 20);

	path_of(p, sizeof(p), "img-uring.img");
	T_OK(img_create(p, &o));
	T_OK(img_open(p, IMG_OPEN_RDWR | IMG_OPEN_IO_URING, &img));
	T_OK(img_info(img, &in));
	T_EQ(in.io_engine, IMG_IO_ENGINE_URING);
	T_EQ(in.io_uring_error, 0);
	fill(a, 3 << 20, 5);
	T_EQ(img_pwrite(img, a, (3 << 20) - 777, 12345), (3 << 20) - 777);
	T_OK(img_discard(img, 1 << 20, 1 << 20));
	T_OK(img_flush(img));
	T_OK(img_close(img));
	T_OK(img_open(p, IMG_OPEN_IO_URING, &img));
	T_EQ(img_pread(img, b, 3 << 20, 12345), 3 << 20);
	T_OK(memcmp(a, b, (1 << 20) - 12345));
	T_ASSERT(zeros(b + (1 << 20) - 12345, 1 << 20));
	T_OK(memcmp(a + (2 << 20) - 12345, b + (2 << 20) - 12345, (1 << 20) - 777));
	T_OK(img_check(img, NULL, &cr));
	T_EQ(cr.corruptions + cr.leaks, 0);
	T_OK(img_close(img));
	/* LIBIMG_IO=posix overrides the flag */
	setenv("LIBIMG_IO", "posix", 1);
	T_OK(img_open(p, IMG_OPEN_IO_URING, &img));
	T_OK(img_info(img, &in));
	T_EQ(in.io_engine, IMG_IO_ENGINE_POSIX);
	T_OK(img_close(img));
	setenv("LIBIMG_IO", "uring", 1);
	T_OK(img_open(p, 0, &img));
	T_OK(img_info(img, &in));
	T_EQ(in.io_engine, IMG_IO_ENGINE_URING);
	T_OK(img_close(img));
	unsetenv("LIBIMG_IO");
	unlink(p);
	free(a);
	free(b);
}

/* The fault backend wraps the io_uring one: faults reach the image, batches
 * go through the wrapper's calls one by one. */
static void fault_wraps_uring(void)
{
	char p[256];
	struct img_io *u, *f;
	struct img_io_req q[3];
	uint8_t buf[3][4096];

	path_of(p, sizeof(p), "fault-uring");
	unlink(p);
	T_OK(img_io_uring_open(p, IMG_IO_CREATE, &u));
	T_OK(imgi_io_fault_new(u, &f));
	memset(buf, 0x5a, sizeof(buf));
	for (int i = 0; i < 3; i++)
		q[i] = (struct img_io_req){ .buf = buf[i], .len = 4096, .off = (uint64_t)i * 4096,
					    .op = IMG_IO_OP_WRITE };
	imgi_io_fault_arm(f, IMG_FAULT_WRITE, 2, EIO, 0);
	T_EQ(img_io_batch(f, q, 3), -EIO);
	T_EQ(q[0].result, 0);
	T_EQ(q[1].result, -EIO);
	T_EQ(q[2].result, 0);
	T_EQ(imgi_io_fault_fired(f), 1);
	memset(buf, 0, sizeof(buf));
	T_OK(f->ops->pread(f, buf[0], 4096, 4096));
	T_ASSERT(zeros(buf[0], 4096));      /* the failed one never landed */
	T_OK(f->ops->pread(f, buf[0], 4096, 8192));
	T_EQ(buf[0][0], 0x5a);
	f->ops->close(f);   /* closes the uring backend too */
	unlink(p);
}

/* In a child where io_uring_setup is refused (seccomp, as in many
 * containers): img_io_uring_open fails with -EPERM without creating the
 * file, img_open falls back to posix and says why. */
static void fallback_when_refused(void)
{
	char p[256], q[256];
	pid_t pid;
	int st;

	path_of(p, sizeof(p), "fallback.img");
	path_of(q, sizeof(q), "never-created");
	{
		struct img_create_opts o = { .virtual_size = 1 << 20 };
		T_OK(img_create(p, &o));
	}
	pid = fork();
	T_ASSERT(pid >= 0);
	if (pid == 0) {
		struct sock_filter flt[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = { .len = sizeof(flt) / sizeof(flt[0]), .filter = flt };
		struct img_io *io;
		struct img *img;
		struct img_info in;
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
		    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
			_exit(77);
		T_EQ(img_io_uring_open(q, IMG_IO_CREATE, &io), -EPERM);
		T_ASSERT(strstr(img_last_error(), "io_uring unavailable"));
		T_EQ(access(q, F_OK), -1);
		T_OK(img_open(p, IMG_OPEN_RDWR | IMG_OPEN_IO_URING, &img));
		T_OK(img_info(img, &in));
		T_EQ(in.io_engine, IMG_IO_ENGINE_POSIX);
		T_EQ(in.io_uring_error, -EPERM);
		T_EQ(img_pwrite(img, "x", 1, 5), 1);
		T_OK(img_close(img));
		_exit(0);
	}
	T_EQ(waitpid(pid, &st, 0), pid);
	T_ASSERT(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77)
		printf("fallback: seccomp unavailable here, not checked\n");
	else
		T_EQ(WEXITSTATUS(st), 0);
	unlink(p);
}

static int uring_refused;   /* img_io_uring_open's error here, or 0 */

static void posix_contract(void)
{
	contract(img_io_posix_open, "posix");
}

static void uring_contract(void)
{
	if (uring_refused)
		T_SKIP("io_uring refused here (%s)", img_strerror(uring_refused));
	contract(img_io_uring_open, "uring");
}

static void uring_image(void)
{
	if (uring_refused)
		T_SKIP("io_uring refused here (%s)", img_strerror(uring_refused));
	image_on_uring();
}

static void uring_under_fault(void)
{
	if (uring_refused)
		T_SKIP("io_uring refused here (%s)", img_strerror(uring_refused));
	fault_wraps_uring();
}

static const struct t_case cases[] = {
	T_CASE(posix_contract), T_CASE(uring_contract), T_CASE(uring_image),
	T_CASE(uring_under_fault), T_CASE(fallback_when_refused),
};

int main(int argc, char **argv)
{
	struct img_io *probe;
	char p[256];
	int r;

	T_ASSERT(mkdtemp(dir));
	path_of(p, sizeof(p), "probe");
	uring_refused = img_io_uring_open(p, IMG_IO_CREATE, &probe);
	if (!uring_refused) {
		probe->ops->close(probe);
		unlink(p);
	}
	r = T_MAIN(argc, argv, cases);
	rmdir(dir);
	if (uring_refused && !r) {
		printf("io_uring refused here (%s): only the posix contract and the fallback ran\n",
		       img_strerror(uring_refused));
		return T_SKIP_STATUS;
	}
	return r;
}
