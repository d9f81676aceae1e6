/* SPDX-License-Identifier: MIT */
/* Locking between processes: one writer or many readers; a refused open is
 * -EBUSY and names the holding process. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libimg.h"

static int fails;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: %s (%s)\n", __FILE__, __LINE__, #c, img_last_error()); fails++; } } while (0)

/* Child: open with flags, report over the pipe, hold until killed. */
static pid_t holder(const char *path, unsigned flags)
{
	int p[2];
	char c;
	pid_t pid;

	if (pipe(p))
		exit(2);
	pid = fork();
	if (pid == 0) {
		struct img *img;
		int r = img_open(path, flags, &img);
		c = r ? 'n' : 'y';
		if (write(p[1], &c, 1) != 1)
			_exit(2);
		pause();
		_exit(0);
	}
	close(p[1]);
	if (read(p[0], &c, 1) != 1 || c != 'y') {
		fprintf(stderr, "holder could not open\n");
		exit(1);
	}
	close(p[0]);
	return pid;
}

static void stop(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

int main(void)
{
	char path[] = "/tmp/libimg-lock-XXXXXX", pidstr[32];
	struct img_create_opts o = { .virtual_size = 1u << 20 };
	struct img *img;
	pid_t pid;
	int fd = mkstemp(path);

	close(fd);
	CHECK(img_create(path, &o) == -EEXIST);
	CHECK(strstr(img_last_error(), "already exists") != NULL);
	o.flags = IMG_CREATE_OVERWRITE;
	CHECK(img_create(path, &o) == 0);

	/* A writer excludes writers and readers, and is named. */
	pid = holder(path, IMG_OPEN_RDWR);
	snprintf(pidstr, sizeof(pidstr), "process %d", (int)pid);
	CHECK(img_open(path, IMG_OPEN_RDWR, &img) == -EBUSY);
	CHECK(strstr(img_last_error(), pidstr) != NULL);
	CHECK(img_open(path, 0, &img) == -EBUSY);
	CHECK(strstr(img_last_error(), pidstr) != NULL);
	/* ... except a reader that asked for no lock (qemu-img -U). */
	CHECK(img_open(path, IMG_OPEN_NOLOCK, &img) == 0);
	img_close(img);
	CHECK(img_open(path, IMG_OPEN_NOLOCK | IMG_OPEN_RDWR, &img) == -EINVAL);
	stop(pid);

	/* Readers share; a writer waits for them. */
	pid = holder(path, 0);
	CHECK(img_open(path, 0, &img) == 0);
	img_close(img);
	CHECK(img_open(path, IMG_OPEN_RDWR, &img) == -EBUSY);
	snprintf(pidstr, sizeof(pidstr), "process %d", (int)pid);
	CHECK(strstr(img_last_error(), pidstr) != NULL);
	stop(pid);

	/* The holder died: the lock is gone with it. */
	CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	img_close(img);

	unlink(path);
	if (fails)
		fprintf(stderr, "%d checks failed\n", fails);
	return fails ? 1 : 0;
}
