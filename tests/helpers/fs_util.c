/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fs_util.h"

static char tmpdir[64];

int fsu_run(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

int fsu_have(const char *prog, ...)
{
	va_list ap;
	int ok = 1;

	va_start(ap, prog);
	for (const char *p = prog; p && ok; p = va_arg(ap, const char *))
		ok = fsu_run("command -v %s >/dev/null 2>&1", p) == 0;
	va_end(ap);
	return ok;
}

static int zero4k(const uint8_t *b, size_t n)
{
	return n == 0 || (b[0] == 0 && !memcmp(b, b + 1, n - 1));
}

int fsu_raw_to_img(const char *raw, const char *path, uint32_t cluster_size, uint64_t vsize)
{
	struct img_create_opts o = { .cluster_size = cluster_size, .flags = IMG_CREATE_OVERWRITE };
	struct img *img = NULL;
	struct stat st;
	uint8_t *buf = malloc(1 << 20);
	int fd = open(raw, O_RDONLY), r = 0;
	uint64_t off = 0;

	if (fd < 0 || !buf || fstat(fd, &st) < 0) {
		r = -errno ? -errno : -ENOMEM;
		goto out;
	}
	o.virtual_size = (uint64_t)st.st_size > vsize ? (uint64_t)st.st_size : vsize;
	o.virtual_size = (o.virtual_size + 511) & ~511ull;
	if ((r = img_create(path, &o)) || (r = img_open(path, IMG_OPEN_RDWR, &img)))
		goto out;
	for (;;) {
		ssize_t n = pread(fd, buf, 1 << 20, (off_t)off);
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		for (ssize_t p = 0; p < n && !r; p += 4096) {
			size_t k = (size_t)(n - p) < 4096 ? (size_t)(n - p) : 4096;
			if (!zero4k(buf + p, k) && img_pwrite(img, buf + p, k, off + (uint64_t)p) != (ssize_t)k)
				r = -EIO;
		}
		if (r)
			break;
		off += (uint64_t)n;
	}
	if (!r)
		r = img_flush(img);
out:
	if (img) {
		int c = img_close(img);
		if (!r)
			r = c;
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return r;
}

int fsu_img_to_raw(struct img *img, uint64_t len, const char *raw)
{
	uint8_t *buf = malloc(1 << 20);
	int fd = open(raw, O_WRONLY | O_CREAT | O_TRUNC, 0600), r = 0;

	if (fd < 0 || !buf) {
		r = -errno ? -errno : -ENOMEM;
		goto out;
	}
	for (uint64_t off = 0; off < len && !r; off += 1 << 20) {
		size_t k = len - off < (1u << 20) ? (size_t)(len - off) : (1u << 20);
		if (img_pread(img, buf, k, off) != (ssize_t)k)
			r = -EIO;
		else if (!zero4k(buf, k) && pwrite(fd, buf, k, (off_t)off) != (ssize_t)k)
			r = -errno;
	}
	if (!r && ftruncate(fd, (off_t)len) < 0)
		r = -errno;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return r;
}

const char *fsu_tmpdir(void)
{
	if (!tmpdir[0]) {
		snprintf(tmpdir, sizeof(tmpdir), "/tmp/libimg-fs-XXXXXX");
		if (!mkdtemp(tmpdir)) {
			perror("mkdtemp");
			exit(1);
		}
	}
	return tmpdir;
}

void fsu_cleanup(void)
{
	if (tmpdir[0] && !getenv("FSU_KEEP"))
		fsu_run("rm -rf '%s'", tmpdir);
}
