/* SPDX-License-Identifier: MIT */
/* Locking between processes: one writer or many readers; a refused open is
 * -EBUSY and names the holding process.  Replacing a file (img_create with
 * IMG_CREATE_OVERWRITE, img_target_*) takes its lock too (issue 14 #2) and
 * refuses anything but a regular file, or a delta over itself (issue 15
 * #8), changing nothing. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libimg.h"
#include "../helpers/tassert.h"

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

/* The whole contents of path (malloc'd), *len its size; NULL if none or
 * not a regular file. */
static char *slurp(const char *path, size_t *len)
{
	struct stat st;
	char *buf = NULL;
	FILE *f;
	long n;

	*len = 0;
	/* (a FIFO would block the open: only regular files have contents) */
	if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode) || !(f = fopen(path, "rb")))
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n)
		*len = (size_t)n;
	fclose(f);
	return buf;
}

/* Entries of dir, . and .. aside. */
static int entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	while (d && (de = readdir(d)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	if (d)
		closedir(d);
	return n;
}

/* img_create over dir/name is refused with err (message containing
 * want), and nothing in dir changes: name byte for byte, no new file. */
static void refused(const char *dir, const char *name, const struct img_create_opts *o, int err,
		    const char *want)
{
	char path[512];
	size_t l0, l1;
	char *before, *after;
	int n = entries(dir), r;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	before = slurp(path, &l0);
	r = img_create(path, o);
	T_CHECK(r == err);
	if (r != err)
		fprintf(stderr, "  %s: %d, want %d\n", name, r, err);
	T_CHECK(strstr(img_last_error(), want) != NULL);
	after = slurp(path, &l1);
	T_CHECK(l0 == l1 && (!before || !memcmp(before, after, l0)));
	T_CHECK(entries(dir) == n);
	free(before);
	free(after);
}

static void replace_tests(void)
{
	char dir[] = "/tmp/libimg-replace-XXXXXX", a[300], b[300], c[300], pidstr[32], tmp[320];
	struct img_create_opts o = { .virtual_size = 1u << 20, .flags = IMG_CREATE_OVERWRITE };
	struct img_target *t;
	pid_t pid;
	int fd;

	if (!mkdtemp(dir))
		exit(2);
	snprintf(a, sizeof(a), "%s/a.img", dir);
	snprintf(b, sizeof(b), "%s/b.img", dir);
	snprintf(c, sizeof(c), "%s/c.img", dir);
	T_CHECK(img_create(a, &o) == 0);

	/* an image open for writing (served, mounted) is not replaced */
	pid = holder(a, IMG_OPEN_RDWR);
	snprintf(pidstr, sizeof(pidstr), "process %d", (int)pid);
	refused(dir, "a.img", &o, -EBUSY, pidstr);
	T_CHECK(img_target_claim(a, IMG_CREATE_OVERWRITE, &t) == -EBUSY);
	stop(pid);

	/* nor the base of an open clone (its shared lock) */
	o.backing_file = "a.img";
	o.flags = 0;
	T_CHECK(img_create(b, &o) == 0);
	o.backing_file = NULL;
	o.flags = IMG_CREATE_OVERWRITE;
	pid = holder(b, 0);
	snprintf(pidstr, sizeof(pidstr), "process %d", (int)pid);
	refused(dir, "a.img", &o, -EBUSY, pidstr);
	stop(pid);
	pid = holder(b, IMG_OPEN_RDWR);
	refused(dir, "a.img", &o, -EBUSY, "in use");
	stop(pid);
	/* free again: replaced */
	T_CHECK(img_create(c, &o) == 0);
	T_CHECK(img_create(c, &o) == 0);

	/* a delta over itself, by name or through another name */
	o.backing_file = "a.img";
	refused(dir, "a.img", &o, -EINVAL, "is this file itself");
	o.backing_file = "./a.img";
	refused(dir, "a.img", &o, -EINVAL, "is this file itself");
	snprintf(tmp, sizeof(tmp), "%s/hard.img", dir);
	T_CHECK(link(a, tmp) == 0);
	o.backing_file = "hard.img";
	refused(dir, "a.img", &o, -EINVAL, "is this file itself");
	unlink(tmp);
	/* ... or anywhere down its chain: b.img is a clone of a.img */
	o.backing_file = "b.img";
	refused(dir, "a.img", &o, -ELOOP, "loops back");
	o.backing_file = NULL;

	/* only regular files are replaced: no symlink followed, no FIFO
	 * opened (that would block), no device */
	snprintf(tmp, sizeof(tmp), "%s/link.img", dir);
	T_CHECK(symlink("a.img", tmp) == 0);
	refused(dir, "link.img", &o, -EINVAL, "a symbolic link, not a regular file");
	snprintf(tmp, sizeof(tmp), "%s/fifo", dir);
	T_CHECK(mkfifo(tmp, 0600) == 0);
	refused(dir, "fifo", &o, -EINVAL, "a FIFO, not a regular file");
	snprintf(tmp, sizeof(tmp), "%s/sub", dir);
	T_CHECK(mkdir(tmp, 0700) == 0);
	refused(dir, "sub", &o, -EINVAL, "a directory, not a regular file");
	snprintf(tmp, sizeof(tmp), "%s/null", dir);
	if (mknod(tmp, S_IFCHR | 0600, makedev(1, 3)) == 0)   /* as root only */
		refused(dir, "null", &o, -EINVAL, "a character device, not a regular file");

	/* img_target_*: a name claimed while empty is not replaced if a file
	 * appears there meanwhile; a claimed file is replaced */
	T_CHECK(img_target_claim(c, 0, &t) == -EEXIST);
	snprintf(tmp, sizeof(tmp), "%s/new", dir);
	T_CHECK(img_target_claim(tmp, 0, &t) == 0);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);   /* someone else's */
	T_CHECK(fd >= 0);
	close(fd);
	T_CHECK(img_target_publish(t, c) == -EEXIST);
	img_target_release(t);
	T_CHECK(access(c, F_OK) == 0);
	T_CHECK(img_target_claim(tmp, IMG_CREATE_OVERWRITE, &t) == 0);
	T_CHECK(img_target_publish(t, c) == 0);
	img_target_release(t);
	T_CHECK(access(c, F_OK) != 0 && img_probe(tmp) == 1);
	/* the claimed file replaced by another process: not replaced */
	T_CHECK(img_create(c, &o) == 0);
	T_CHECK(img_target_claim(tmp, IMG_CREATE_OVERWRITE, &t) == 0);
	T_CHECK(rename(a, tmp) == 0);
	T_CHECK(img_target_publish(t, c) == -EBUSY);
	img_target_release(t);
	T_CHECK(access(c, F_OK) == 0);

	{
		char cmd[400];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", dir);
	}
}

/* A temporary image; its path in path (a mkstemp template). */
static void new_image(char *path)
{
	struct img_create_opts o = { .virtual_size = 1u << 20, .flags = IMG_CREATE_OVERWRITE };
	int fd = mkstemp(path);

	T_ASSERT(fd >= 0);
	close(fd);
	T_CHECK(img_create(path, &o) == 0);
}

static void create_needs_overwrite(void)
{
	char path[] = "/tmp/libimg-lock-XXXXXX";
	struct img_create_opts o = { .virtual_size = 1u << 20 };
	int fd = mkstemp(path);

	close(fd);
	T_CHECK(img_create(path, &o) == -EEXIST);
	T_CHECK(strstr(img_last_error(), "already exists") != NULL);
	o.flags = IMG_CREATE_OVERWRITE;
	T_CHECK(img_create(path, &o) == 0);
	unlink(path);
}

/* A writer excludes writers and readers, and is named. */
static void writer_excludes(void)
{
	char path[] = "/tmp/libimg-lock-XXXXXX", pidstr[32];
	struct img *img;
	pid_t pid;

	new_image(path);
	pid = holder(path, IMG_OPEN_RDWR);
	snprintf(pidstr, sizeof(pidstr), "process %d", (int)pid);
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == -EBUSY);
	T_CHECK(strstr(img_last_error(), pidstr) != NULL);
	T_CHECK(img_open(path, 0, &img) == -EBUSY);
	T_CHECK(strstr(img_last_error(), pidstr) != NULL);
	/* ... except a reader that asked for no lock (qemu-img -U). */
	T_CHECK(img_open(path, IMG_OPEN_NOLOCK, &img) == 0);
	img_close(img);
	T_CHECK(img_open(path, IMG_OPEN_NOLOCK | IMG_OPEN_RDWR, &img) == -EINVAL);
	stop(pid);
	unlink(path);
}

/* Readers share; a writer waits for them.  The holder died: the lock is
 * gone with it. */
static void readers_share(void)
{
	char path[] = "/tmp/libimg-lock-XXXXXX", pidstr[32];
	struct img *img;
	pid_t pid;

	new_image(path);
	pid = holder(path, 0);
	T_CHECK(img_open(path, 0, &img) == 0);
	img_close(img);
	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == -EBUSY);
	snprintf(pidstr, sizeof(pidstr), "process %d", (int)pid);
	T_CHECK(strstr(img_last_error(), pidstr) != NULL);
	stop(pid);

	T_CHECK(img_open(path, IMG_OPEN_RDWR, &img) == 0);
	img_close(img);
	unlink(path);
}

/* A file renamed over the name between the open and the lock (a mkimg -f
 * of another process): the lock is refused, not taken on a file no name
 * leads to any more (issue 14, red team). */
static void renamed_over(void)
{
	char path[] = "/tmp/libimg-lock-XXXXXX";
	struct img_create_opts o = { .virtual_size = 1u << 20, .flags = IMG_CREATE_OVERWRITE };
	struct img_io *io;
	char other[sizeof(path) + 8];
	pid_t h = 0;

	new_image(path);
	snprintf(other, sizeof(other), "%s.new", path);
	T_CHECK(img_io_posix_open(path, 0, &io) == 0);
	T_CHECK(img_create(other, &o) == 0);
	T_CHECK(rename(other, path) == 0);
	T_CHECK(io->ops->lock(io, 1, &h) == -EBUSY);
	io->ops->close(io);
	/* the name's own file locks as before */
	T_CHECK(img_io_posix_open(path, 0, &io) == 0);
	T_CHECK(io->ops->lock(io, 1, &h) == 0);
	io->ops->close(io);
	unlink(path);
}

static const struct t_case cases[] = {
	T_CASE(create_needs_overwrite), T_CASE(writer_excludes), T_CASE(readers_share),
	T_CASE(renamed_over), T_CASE(replace_tests),
};

int main(int argc, char **argv)
{
	return T_MAIN(argc, argv, cases);
}
