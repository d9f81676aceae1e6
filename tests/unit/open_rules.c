/* SPDX-License-Identifier: MIT */
/* What the library opens (FORMAT.md 3.1, "Resolving"): regular files only,
 * refused without blocking (a FIFO as image or backing file, a directory,
 * a device); a backing name that is a symbolic link leading out of the
 * delta's directory is refused, one that stays inside is followed; the
 * backing-path policy (img_set_backing_policy) lets absolute, ".." and
 * linked references into allowed directories, and IMG_BACKING_POLICY_ANY
 * anything.  Issue 15 #1, #7, #12 and issue 14 #6 (library part).  Every
 * open runs under alarm(): a hang fails the test instead of blocking it.
 * Named sub-tests (tassert.h), each in a directory of its own (new_top);
 * the last, without_openat2, runs the program again with
 * LIBIMG_NO_OPENAT2=1 (the path of kernels without openat2: O_NOFOLLOW and
 * a check of the file opened), where the same rules must hold. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libimg.h"
#include "../helpers/tassert.h"

/* io_posix.c (internal.h) */
int imgi_io_posix_open_beneath(const char *root, const char *rel, const char *name,
			      unsigned flags, struct img_io **out);


#define CS (64u << 10)
#define VS (1u << 20)
static char top[sizeof("/tmp/libimg-open-rules-XXXXXX")];

static char *P(const char *name)
{
	static char buf[8][512];
	static int i;
	i = (i + 1) % 8;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", top, name);
	return buf[i];
}

static int mk(const char *name, const char *backing, unsigned flags)
{
	struct img_create_opts o = { .virtual_size = backing ? 0 : VS, .cluster_size = CS,
				     .flags = IMG_CREATE_OVERWRITE | flags };
	o.backing_file = backing;
	return img_create(P(name), &o);
}

/* Fills the image with byte v (and closes it). */
static void fill(const char *name, int v)
{
	static unsigned char b[VS];
	struct img *img;

	memset(b, v, sizeof(b));
	T_CHECK(img_open(P(name), IMG_OPEN_RDWR, &img) == 0);
	if (!img)
		return;
	T_CHECK(img_pwrite(img, b, sizeof(b), 0) == (ssize_t)sizeof(b));
	T_CHECK(img_close(img) == 0);
}

/* img_open of name with flags; the first byte it reads in *byte. */
static int open_read(const char *name, unsigned flags, int *byte)
{
	struct img *img;
	unsigned char c = 0;
	int r;

	alarm(10);
	r = img_open(P(name), flags, &img);
	alarm(0);
	if (r)
		return r;
	T_CHECK(img_pread(img, &c, 1, 0) == 1);
	*byte = c;
	T_CHECK(img_close(img) == 0);
	return 0;
}

/* A hash of the file's bytes (FNV-1a). */
static uint64_t file_sum(const char *name)
{
	unsigned char b[65536];
	uint64_t h = 1469598103934665603ull;
	int fd = open(P(name), O_RDONLY);
	ssize_t n;

	T_CHECK(fd >= 0);
	while (fd >= 0 && (n = read(fd, b, sizeof(b))) > 0)
		for (ssize_t i = 0; i < n; i++)
			h = (h ^ b[i]) * 1099511628211ull;
	if (fd >= 0)
		close(fd);
	return h;
}

static int has(const char *s)
{
	return strstr(img_last_error(), s) != NULL;
}

static void on_alarm(int sig)
{
	(void)sig;
	static const char m[] = "open_rules: an open blocked for 10 s\n";
	if (write(2, m, sizeof(m) - 1) < 0)
		_exit(1);
	_exit(1);
}

/* A new directory (top) with ct/ (the containers'), tpl/ (templates) and
 * other/ in it. */
static void new_top(void)
{
	char buf[1024];

	strcpy(top, "/tmp/libimg-open-rules-XXXXXX");
	if (!mkdtemp(top))
		T_FAIL("mkdtemp: %s", strerror(errno));
	snprintf(buf, sizeof(buf), "%s/ct", top);
	T_CHECK(mkdir(buf, 0755) == 0);
	snprintf(buf, sizeof(buf), "%s/tpl", top);
	T_CHECK(mkdir(buf, 0755) == 0);
	snprintf(buf, sizeof(buf), "%s/other", top);
	T_CHECK(mkdir(buf, 0755) == 0);
}

static void remove_top(void)
{
	char buf[1024];

	snprintf(buf, sizeof(buf), "rm -rf '%s'", top);
	if (system(buf) != 0)
		fprintf(stderr, "could not remove %s\n", top);
}

/* A FIFO, a directory, a device: refused at once, as image or backing. */
static void non_regular_refused(void)
{
	struct img *img = NULL;
	int b = -1;

	new_top();
	/* Issue 15 #12: a FIFO as an image or as a backing file is refused at
	 * once (it used to block in open() forever, the delta locked). */
	T_CHECK(mkfifo(P("fifo.img"), 0644) == 0);
	alarm(10);
	T_CHECK(img_probe(P("fifo.img")) == -EINVAL);
	T_CHECK(has("not a regular file: a FIFO"));
	T_CHECK(img_open(P("fifo.img"), 0, &img) == -EINVAL);
	T_CHECK(has("fifo.img") && has("not a regular file: a FIFO"));
	alarm(0);
	T_CHECK(mk("ct/base.img", NULL, 0) == 0);
	fill("ct/base.img", 0x11);
	T_CHECK(mk("ct/d.img", "base.img", 0) == 0);
	T_CHECK(open_read("ct/d.img", 0, &b) == 0 && b == 0x11);
	T_CHECK(unlink(P("ct/base.img")) == 0 && mkfifo(P("ct/base.img"), 0644) == 0);
	T_CHECK(open_read("ct/d.img", 0, &b) == -EINVAL);
	T_CHECK(has("base.img") && has("a FIFO"));
	{
		/* a refused chain leaves the delta byte for byte as it was,
		 * even opened for writing */
		uint64_t before = file_sum("ct/d.img");
		T_CHECK(open_read("ct/d.img", IMG_OPEN_RDWR, &b) == -EINVAL);
		T_CHECK(file_sum("ct/d.img") == before);
	}
	T_CHECK(open_read("ct/d.img", IMG_OPEN_ALLOW_BACKING_PATH, &b) == -EINVAL);
	/* the delta's lock was released: it opens alone read-write */
	T_CHECK(open_read("ct/d.img", IMG_OPEN_RDWR | IMG_OPEN_NO_BACKING, &b) == 0);
	/* A directory, a character device. */
	T_CHECK(unlink(P("ct/base.img")) == 0 && mkdir(P("ct/base.img"), 0755) == 0);
	T_CHECK(open_read("ct/d.img", 0, &b) == -EISDIR);
	T_CHECK(has("a directory"));
	T_CHECK(rmdir(P("ct/base.img")) == 0);
	T_CHECK(img_open("/dev/null", 0, &img) == -EINVAL);
	T_CHECK(has("/dev/null") && has("a character device"));
	alarm(10);
	T_CHECK(img_probe("/dev/null") == -EINVAL);
	alarm(0);

	remove_top();
}

/* A backing name that is a symbolic link out of the delta's directory. */
static void link_out_refused(void)
{
	int b = -1;

	new_top();
	/* Issue 15 #1: a backing name in the delta's directory that is a
	 * symbolic link to an image elsewhere. */
	T_CHECK(mk("other/secret.img", NULL, 0) == 0);
	fill("other/secret.img", 0x5e);
	T_CHECK(symlink("../other/secret.img", P("ct/base.img")) == 0);
	T_CHECK(mk("ct/d5.img", "base.img", 0) == -EPERM);
	T_CHECK(access(P("ct/d5.img"), F_OK) < 0);
	/* (a header written by someone else: the uuid is secret.img's) */
	T_CHECK(mk("ct/d.img", "base.img", IMG_CREATE_ALLOW_BACKING_PATH) == 0);
	b = -1;
	T_CHECK(open_read("ct/d.img", 0, &b) == -EPERM && b == -1);
	T_CHECK(has("d.img") && has("outside the image's directory") && has("secret.img"));
	T_CHECK(open_read("ct/d.img", IMG_OPEN_RDWR, &b) == -EPERM);
	/* an absolute link too, and through a linked directory */
	T_CHECK(unlink(P("ct/base.img")) == 0 && symlink(P("other/secret.img"), P("ct/base.img")) == 0);
	T_CHECK(open_read("ct/d.img", 0, &b) == -EPERM);
	T_CHECK(unlink(P("ct/base.img")) == 0 && symlink(P("other"), P("ct/sub")) == 0);
	T_CHECK(mk("ct/d2.img", "sub/secret.img", IMG_CREATE_ALLOW_BACKING_PATH) == 0);
	T_CHECK(open_read("ct/d2.img", 0, &b) == -EPERM);
	/* creating a delta over such a name is refused the same way */
	T_CHECK(mk("ct/d3.img", "sub/secret.img", 0) == -EPERM);
	T_CHECK(has("d3.img") && has("outside"));
	T_CHECK(access(P("ct/d3.img"), F_OK) < 0);
	/* the user's explicit "anything": followed */
	T_CHECK(open_read("ct/d2.img", IMG_OPEN_ALLOW_BACKING_PATH, &b) == 0 && b == 0x5e);
	/* a link that stays in the directory is followed */
	T_CHECK(mk("ct/real.img", NULL, 0) == 0);
	fill("ct/real.img", 0x22);
	T_CHECK(mk("ct/d4.img", "real.img", 0) == 0);
	T_CHECK(rename(P("ct/real.img"), P("ct/real2.img")) == 0);
	T_CHECK(symlink("real2.img", P("ct/real.img")) == 0);
	T_CHECK(open_read("ct/d4.img", 0, &b) == 0 && b == 0x22);

	/* The open itself, as if a link changed after the path was resolved:
	 * it never leaves the directory. */
	{
		struct img_io *io = NULL;
		char root[600];
		snprintf(root, sizeof(root), "%s/ct", top);
		T_CHECK(symlink("../other/secret.img", P("ct/swapped.img")) == 0);
		T_CHECK(imgi_io_posix_open_beneath(root, "swapped.img", "x", IMG_IO_RDONLY, &io) == -EPERM);
		T_CHECK(imgi_io_posix_open_beneath(root, "sub/secret.img", "x", IMG_IO_RDONLY, &io) == -EPERM);
		T_CHECK(has("leads out"));
		T_CHECK(imgi_io_posix_open_beneath(root, "real2.img", "x", IMG_IO_RDONLY, &io) == 0);
		if (io)
			io->ops->close(io);
		T_CHECK(unlink(P("ct/swapped.img")) == 0);
	}

	remove_top();
}

static void policy_allowed_dirs(void)
{
	const char *dirs[2];
	int b = -1;

	new_top();
	/* what the cases above leave: other/secret.img (0x5e), ct/sub linked
	 * to other/, ct/d2.img over sub/secret.img, ct/d.img over a missing
	 * base.img, a FIFO fifo.img */
	T_CHECK(mkfifo(P("fifo.img"), 0644) == 0);
	T_CHECK(mk("other/secret.img", NULL, 0) == 0);
	fill("other/secret.img", 0x5e);
	T_CHECK(symlink(P("other"), P("ct/sub")) == 0);
	T_CHECK(mk("ct/d2.img", "sub/secret.img", IMG_CREATE_ALLOW_BACKING_PATH) == 0);
	T_CHECK(mk("ct/base.img", NULL, 0) == 0);
	T_CHECK(mk("ct/d.img", "base.img", 0) == 0);
	T_CHECK(unlink(P("ct/base.img")) == 0);

	/* Issue 14 #6: the policy's allowed directories (a template
	 * directory beside the containers' one). */
	T_CHECK(mk("tpl/base.img", NULL, 0) == 0);
	fill("tpl/base.img", 0x33);
	T_CHECK(mk("ct/abs.img", P("tpl/base.img"), 0) == -EPERM);
	T_CHECK(has("absolute") && has("LIBIMG_BACKING_DIRS"));
	T_CHECK(mk("ct/rel.img", "../tpl/base.img", 0) == -EPERM);
	dirs[0] = P("tpl");
	T_CHECK(img_set_backing_policy(dirs, 1, 0) == 0);
	T_CHECK(mk("ct/abs.img", P("tpl/base.img"), 0) == 0);
	T_CHECK(mk("ct/rel.img", "../tpl/base.img", 0) == 0);
	T_CHECK(open_read("ct/abs.img", 0, &b) == 0 && b == 0x33);
	T_CHECK(open_read("ct/rel.img", 0, &b) == 0 && b == 0x33);
	/* a name in the delta's directory linked into the allowed one */
	T_CHECK(symlink(P("tpl/base.img"), P("ct/tbase.img")) == 0);
	T_CHECK(mk("ct/lnk.img", "tbase.img", 0) == 0);
	T_CHECK(open_read("ct/lnk.img", 0, &b) == 0 && b == 0x33);
	/* still refused: outside every allowed directory */
	T_CHECK(open_read("ct/d2.img", 0, &b) == -EPERM);
	T_CHECK(open_read("ct/d.img", 0, &b) == -ENOENT);      /* base.img removed above */
	T_CHECK(mk("ct/bad.img", P("other/secret.img"), 0) == -EPERM);
	T_CHECK(has("outside the allowed backing directories"));
	T_CHECK(mk("ct/bad.img", "../other/secret.img", 0) == -EPERM);
	/* a ".." that climbs out of the allowed directory again */
	T_CHECK(mk("ct/bad.img", "../tpl/../other/secret.img", 0) == -EPERM);
	/* the allowed directory given through a symbolic link */
	T_CHECK(symlink(P("tpl"), P("tpl-link")) == 0);
	dirs[0] = P("tpl-link");
	T_CHECK(img_set_backing_policy(dirs, 1, 0) == 0);
	T_CHECK(open_read("ct/abs.img", 0, &b) == 0 && b == 0x33);
	/* a directory that does not exist allows nothing; bad arguments */
	dirs[0] = P("nowhere");
	T_CHECK(img_set_backing_policy(dirs, 1, 0) == 0);
	T_CHECK(open_read("ct/abs.img", 0, &b) == -EPERM);
	T_CHECK(open_read("ct/lnk.img", 0, &b) == -EPERM);
	dirs[0] = "relative/dir";
	T_CHECK(img_set_backing_policy(dirs, 1, 0) == -EINVAL);
	T_CHECK(has("relative/dir"));
	T_CHECK(img_set_backing_policy(NULL, 0, 0x100) == -EINVAL);
	T_CHECK(open_read("ct/abs.img", 0, &b) == -EPERM);    /* unchanged by the refusals */
	/* Anything. */
	T_CHECK(img_set_backing_policy(NULL, 0, IMG_BACKING_POLICY_ANY) == 0);
	T_CHECK(open_read("ct/abs.img", 0, &b) == 0 && b == 0x33);
	T_CHECK(open_read("ct/d2.img", 0, &b) == 0 && b == 0x5e);
	/* ...but never a FIFO */
	T_CHECK(mk("ct/f.img", "base.img", IMG_CREATE_ALLOW_BACKING_PATH) == -ENOENT);
	T_CHECK(symlink(P("fifo.img"), P("ct/base.img")) == 0);
	T_CHECK(open_read("ct/d.img", 0, &b) == -EINVAL);
	/* Default again. */
	T_CHECK(img_set_backing_policy(NULL, 0, 0) == 0);
	T_CHECK(open_read("ct/abs.img", 0, &b) == -EPERM);
	remove_top();
}

/* All of the above again on the path of kernels without openat2. */
static void without_openat2(void)
{
	if (getenv("LIBIMG_NO_OPENAT2"))
		T_SKIP("this is the pass without openat2");
	{
		pid_t pid;
		int st = 0;
		fflush(NULL);
		pid = fork();
		if (pid == 0) {
			setenv("LIBIMG_NO_OPENAT2", "1", 1);
			unsetenv("T_ONLY");   /* every sub-test, this one skipped */
			execl("/proc/self/exe", "open_rules", (char *)NULL);
			_exit(127);
		}
		T_CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
}

static const struct t_case cases[] = {
	T_CASE(non_regular_refused), T_CASE(link_out_refused), T_CASE(policy_allowed_dirs),
	T_CASE(without_openat2),
};

int main(int argc, char **argv)
{
	signal(SIGALRM, on_alarm);
	return T_MAIN(argc, argv, cases);
}
