/* SPDX-License-Identifier: MIT */
/* Starting and stopping the daemon of an image; see daemon.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control.h"
#include "daemon.h"
#include "loop.h"

/* The imgserve beside this program, else the one in PATH. */
static void imgserve_path(char *buf, size_t len)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n > 0) {
		char *slash;
		self[n] = 0;
		slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			if ((size_t)snprintf(buf, len, "%s/imgserve", self) < len &&
			    access(buf, X_OK) == 0)
				return;
		}
	}
	snprintf(buf, len, "imgserve");
}

static int wait_child(pid_t pid)
{
	int st = 0;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int is_mounted(const char *path);

/* Removes what st records in its run directory, the export file (the
 * "disk.XXXXXX" its imgattach made, or "disk" of older versions) and the
 * directory itself (which stays while another attach's file is there). */
static void remove_rundir(const struct online_state *st)
{
	/* Under the run directory's lock (rundir.h), and only when
	 * the records are still ours: an attach of the same image that
	 * waited for this teardown (--wait) may have started its daemon, which
	 * records itself under the same keys (a rerun of imgmount --wait
	 * racing imgumount left that daemon running with no record, its
	 * export mounted, 1 run in 6).  pid last: what says "recorded". */
	static const char *const keys[] = { CTL_SOCKET, RUNDIR_DISK, RUNDIR_LOG,
					    RUNDIR_IMAGE, RUNDIR_LOOP, RUNDIR_MOUNTPOINT,
					    RUNDIR_EXPORT, RUNDIR_PID };
	char dir[PATH_MAX];
	const char *slash = strrchr(st->export_path, '/');
	int lk = online_state_lock(st->rundir);
	pid_t now;
	size_t i;

	if (lk == -ENOENT)
		return;   /* gone already */
	/* our export, when it is a file of this run directory (its name is
	 * unique to our attach: ours to remove whoever else recorded since) */
	if (slash && !strncmp(slash + 1, RUNDIR_DISK ".", strlen(RUNDIR_DISK) + 1) && realpath(st->rundir, dir) &&
	    (size_t)(slash - st->export_path) == strlen(dir) &&
	    !strncmp(st->export_path, dir, strlen(dir)) && !is_mounted(st->export_path))
		unlink(st->export_path);
	/* Another daemon recorded itself once ours was gone (an attach that
	 * waited for this teardown): its records are not ours to remove. */
	now = online_state_pid(st->rundir);
	if (now > 0 && now != st->pid) {
		online_state_unlock(lk);
		return;
	}
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		online_state_set(st->rundir, keys[i], NULL);
	rmdir(st->rundir);
	online_state_unlock(lk);
}

/* Makes st->rundir (and its base) and a new empty export file in it,
 * "disk.XXXXXX", unique to this attach: two attaches racing for one image
 * never share (nor remove) each other's export.  A loser of the race that
 * takes back its export may remove the run directory between our mkdir
 * and our file: then make both again.  disk receives the file's canonical
 * path (as imgserve records it).  0 or -errno (message printed). */
static int make_export_file(struct online_state *st, char *disk, size_t len)
{
	char dir[PATH_MAX];
	int r = 0, fd = -1, tries;

	for (tries = 0; tries < 100 && fd < 0; tries++) {
		if (mkdir(online_rundir_base(), 0755) < 0 && errno != EEXIST) {
			r = -errno;
			errmsg_err(NULL, r, "%s: %s", online_rundir_base(), strerror(-r));
			return r;
		}
		if (mkdir(st->rundir, 0700) < 0 && errno != EEXIST) {
			r = -errno;
			errmsg_err(st->rundir, r, "%s: %s", st->rundir, strerror(-r));
			return r;
		}
		if (!realpath(st->rundir, dir)) {
			if (errno == ENOENT)
				continue;
			r = -errno;
			errmsg_err(st->rundir, r, "%s: %s", st->rundir, strerror(-r));
			return r;
		}
		if (online_path(dir, RUNDIR_DISK_NEW, disk, len) < 0) {
			errmsg("%s: run directory path too long", dir);
			return -ENAMETOOLONG;
		}
		fd = mkostemp(disk, O_CLOEXEC);
		if (fd < 0 && errno != ENOENT) {
			r = -errno;
			errmsg_err(disk, r, "%s: %s", disk, strerror(-r));
			return r;
		}
	}
	if (fd < 0) {
		errmsg("%s: the run directory keeps disappearing", st->rundir);
		return -EAGAIN;
	}
	close(fd);
	return 0;
}

/* Copies what the daemon wrote on its standard error before it was ready
 * (held in the memory file efd) to ours, and leaves its last line in why
 * ("" when it said nothing), without its leading "imgserve: ". */
static void relay_daemon_stderr(int efd, char *why, size_t len)
{
	char buf[8192], *p, *e;
	ssize_t n;
	size_t have = 0;

	why[0] = 0;
	if (efd < 0 || lseek(efd, 0, SEEK_SET) < 0)
		return;
	while ((n = read(efd, buf + have, sizeof(buf) - 1 - have)) > 0) {
		if (write(STDERR_FILENO, buf + have, (size_t)n) < 0) {
			/* our stderr is gone: the line is still kept */
		}
		have += (size_t)n;
		if (have == sizeof(buf) - 1) {   /* keep the tail only */
			memmove(buf, buf + have / 2, have - have / 2);
			have -= have / 2;
		}
	}
	buf[have] = 0;
	while (have && buf[have - 1] == '\n')
		buf[--have] = 0;
	p = (e = strrchr(buf, '\n')) ? e + 1 : buf;
	if (!strncmp(p, "imgserve: ", 10))
		p += 10;
	have = strlen(p);
	if (have >= len)
		have = len - 1;
	memcpy(why, p, have);
	why[have] = 0;
}

char online_attach_qos[256];

/* The child of start_daemon: runs imgserve --daemon on disk. */
static void __attribute__((noreturn)) exec_daemon(const char *serve, unsigned flags,
						  const struct online_state *st,
						  const char *disk, int efd)
{
	if (efd >= 0)
		dup2(efd, STDERR_FILENO);
	/* The daemon loads the allowed backing directories itself (same
	 * environment); --allow-backing-path is passed on. */
	const char *av[12];
	char w[64], qos[sizeof(online_attach_qos) + 8];
	int n = 0;

	av[n++] = "imgserve";
	av[n++] = "--daemon";
	av[n++] = "--quiet";
	if (flags & ONLINE_READ_ONLY)
		av[n++] = "--read-only";
	if (backing_any)
		av[n++] = "--allow-backing-path";
	if (wait_ms >= 0) {   /* the daemon waits for the image's lock */
		if (wait_ms == WAIT_FOREVER)
			snprintf(w, sizeof(w), "--wait");
		else
			snprintf(w, sizeof(w), "--wait=%lld.%03lld",
				 (long long)(wait_ms / 1000), (long long)(wait_ms % 1000));
		av[n++] = w;
	}
	if (online_attach_qos[0]) {
		snprintf(qos, sizeof(qos), "--qos=%s", online_attach_qos);
		av[n++] = qos;
	}
	av[n++] = st->image;
	av[n++] = disk;
	av[n] = NULL;
	execvp(serve, (char *const *)av);
	errmsg_err(NULL, -errno, "cannot run %s: %s", serve, strerror(errno));
	_exit(127);
}

/* Starts imgserve --daemon on the export file disk and waits until it
 * says it is ready.  0, or -errno (message printed: the daemon's own);
 * on failure disk and, when empty, the run directory are removed. */
static int start_daemon(const char *file, unsigned flags, struct online_state *st,
			const char *disk)
{
	char serve[PATH_MAX], why[1024];
	pid_t pid;
	int r, efd;

	imgserve_path(serve, sizeof(serve));
	/* the daemon's messages until it is ready (then it writes to
	 * RUNDIR/log): relayed to our stderr, the last one into our error */
	efd = memfd_create("imgserve-stderr", MFD_CLOEXEC);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		r = -errno;
		errmsg("fork: %s", strerror(-r));
		unlink(disk);
		rmdir(st->rundir);
		if (efd >= 0)
			close(efd);
		return r;
	}
	if (pid == 0)
		exec_daemon(serve, flags, st, disk, efd);
	/* imgserve --daemon returns 0 only once its daemon said it is ready
	 * (else it has failed and said why on our stderr; EXIT_BUSY: the
	 * image is locked by another process). */
	r = wait_child(pid);
	relay_daemon_stderr(efd, why, sizeof(why));
	if (efd >= 0)
		close(efd);
	if (r != 0) {
		/* No daemon of ours runs: take back only our export file (the
		 * rest of the directory may be a racing imgattach's). */
		unlink(disk);
		rmdir(st->rundir);
		/* the daemon said why; its status is ours (libimg(7)), its
		 * message our error's (the cause's errno is not known here:
		 * none is recorded for a broken chain or another failure) */
		if (r == EXIT_CHAIN)
			note_chain_error();
		r = r == 127 || r == EXIT_NOTFOUND ? -ENOENT : r == EXIT_BUSY ? -EBUSY :
		    r == EXIT_CORRUPT ? -EUCLEAN : r == EXIT_NOSPACE ? -ENOSPC : -EIO;
		errmsg_err(file, r == -EIO ? 0 : r, "%s: not served: %s", file,
			   why[0] ? why : "the daemon (imgserve) failed");
		return r;
	}
	return 0;
}

int online_attach(const char *file, unsigned flags, struct online_state *st)
{
	char disk[PATH_MAX];
	int r;

	/* --wait: for another daemon serving it to stop, too; and for a
	 * daemon gone whose state is still recorded, 2 s at most: an
	 * imgumount between stopping it and removing its run directory (a
	 * state left longer is stale, refused below) */
	for (int64_t start = 0, waited, gone_naps = 0;;) {
		if ((r = online_state_load(file, st)) < 0)
			return r;
		if (!online_state_recorded(st) || (!st->alive && ++gone_naps > 40) ||
		    !lock_wait_again(&start, &waited))
			break;
	}
	if ((r = online_refuse_if_used(file, st)) < 0)
		return r;
	r = img_probe(st->image);
	if (r <= 0) {
		r = r == 0 ? -EMEDIUMTYPE : r;
		errmsg_err(file, r, "%s: %s", file, r == -EMEDIUMTYPE ? "not a libimg image" :
			   strerror(-r));
		return r;
	}
	if ((r = make_export_file(st, disk, sizeof(disk))) < 0)
		return r;
	if ((r = start_daemon(file, flags, st, disk)) < 0)
		return r;
	/* Ours is the daemon that recorded our export file, whatever else the
	 * run directory holds: never adopt another daemon's export. */
	online_state_reload(st);
	if (!st->alive || strcmp(st->export_path, disk)) {
		errmsg("%s: the daemon started on %s did not record itself in %s (%s recorded): "
		       "not adopting it", file, disk, st->rundir,
		       st->export_path[0] ? st->export_path : "no export");
		/* leave whatever is recorded alone: it is not ours */
		if (!is_mounted(disk))
			unlink(disk);
		return -EIO;
	}
	r = loop_attach(st->export_path, LOOP_ATTACH_DIRECT_IO |
			((flags & ONLINE_READ_ONLY) ? LOOP_ATTACH_READ_ONLY : 0), st->loop,
			sizeof(st->loop));
	if (r < 0) {
		st->loop[0] = 0;
		goto fail;
	}
	r = online_state_set(st->rundir, RUNDIR_LOOP, st->loop);
	if (r < 0) {
		errmsg_err(st->rundir, r, "%s: cannot record the loop device: %s",
			   st->rundir, strerror(-r));
		goto fail;
	}
	return 0;
fail:
	online_state_reload(st);
	online_teardown(st);
	return r;
}

/* 1 if path is a mount point in this namespace (per /proc/self/mountinfo). */
static int is_mounted(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096], mp[PATH_MAX];
	int found = 0;

	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		/* id parent maj:min root mountpoint ... (octal escapes for spaces) */
		char raw[PATH_MAX], *o = mp;
		const char *p;
		if (sscanf(line, "%*s %*s %*s %*s %4095s", raw) != 1)
			continue;
		for (p = raw; *p && o < mp + sizeof(mp) - 1; p++) {
			if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] && p[3]) {
				*o++ = (char)(((p[1] - '0') << 6) | ((p[2] - '0') << 3) | (p[3] - '0'));
				p += 3;
			} else {
				*o++ = *p;
			}
		}
		*o = 0;
		found = !strcmp(mp, path);
	}
	fclose(f);
	return found;
}

/* Waits up to ms milliseconds for pid to end. */
static int wait_gone(pid_t pid, int ms)
{
	for (; ms > 0; ms -= 10) {
		if (online_pid_ended(pid))
			return 1;
		usleep(10 * 1000);
	}
	return 0;
}

int online_teardown(struct online_state *st)
{
	char reply[1024];
	int r;

	if (st->mountpoint[0]) {
		/* A daemon that died in the middle of a snapshot may have left
		 * the filesystem frozen: thaw it first (EINVAL: it was not). */
		if (is_mounted(st->mountpoint)) {
			int fd = open(st->mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (fd >= 0) {
				(void)ioctl(fd, FITHAW, 0);
				close(fd);
			}
		}
		if (is_mounted(st->mountpoint) && umount(st->mountpoint) < 0) {
			r = -errno;
			errmsg_err(st->mountpoint, r, "%s: cannot unmount: %s",
				   st->mountpoint, strerror(-r));
			return r;
		}
		online_state_set(st->rundir, RUNDIR_MOUNTPOINT, NULL);
		st->mountpoint[0] = 0;
	}
	if (st->loop[0]) {
		r = loop_detach(st->loop, st->export_path[0] ? st->export_path : NULL);
		if (r < 0 && r != -ENXIO)
			return r;
		online_state_set(st->rundir, RUNDIR_LOOP, NULL);
		st->loop[0] = 0;
	}
	if (st->alive) {
		r = online_request(st, CTL_STOP, reply, sizeof(reply));
		if (r < 0 && r != -ECONNREFUSED && r != -ENOENT) {
			errmsg("%s: %s", st->image, reply);
			return r;
		}
		/* it flushes and closes the image, then exits */
		if (!wait_gone(st->pid, 60000)) {
			errmsg("%s: imgserve (pid %ld) did not stop; leaving it", st->image,
			       (long)st->pid);
			return -ETIMEDOUT;
		}
		st->alive = 0;
	}
	/* A daemon that died (SIGKILL) leaves its FUSE mount behind. */
	if (st->export_path[0] && is_mounted(st->export_path) &&
	    umount2(st->export_path, MNT_DETACH) < 0) {
		r = -errno;
		errmsg_err(st->export_path, r, "%s: cannot unmount: %s",
			   st->export_path, strerror(-r));
		return r;
	}
	remove_rundir(st);
	st->pid = 0;
	st->export_path[0] = 0;
	return 0;
}

int online_teardown_report(struct online_state *st, const char *done)
{
	char mnt[sizeof(st->mountpoint)], dev[sizeof(st->loop)];
	pid_t pid;

	/* what is torn down, for -j (online_teardown may clear st) */
	snprintf(mnt, sizeof(mnt), "%s", st->mountpoint);
	snprintf(dev, sizeof(dev), "%s", st->loop);
	pid = st->pid;
	if (online_teardown(st) < 0)
		return EXIT_ERROR;
	if (json) {
		struct json_out j;
		json_start(&j, stdout);
		json_doc_begin(&j);
		json_string(&j, "filename", st->image);
		json_string(&j, "mountpoint", mnt[0] ? mnt : NULL);
		json_string(&j, "device", dev[0] ? dev : NULL);
		if (pid)
			json_u64(&j, "pid", (uint64_t)pid);
		else
			json_null(&j, "pid");
		json_object_end(&j);
		json_finish(&j);
	} else if (!quiet) {
		printf("%s: %s\n", st->image, done);
	}
	return EXIT_OK;
}

int online_virtual_size(const char *file, const struct online_state *st, uint64_t *size)
{
	char reply[4096];
	int r = online_request(st, CTL_STATUS, reply, sizeof(reply));

	if (r == 0 && online_json_u64(reply, CTL_KEY_VIRTUAL_SIZE, size) < 0) {
		snprintf(reply, sizeof(reply), "the daemon's status has no virtual_size");
		r = -EPROTO;
	}
	if (r < 0)
		errmsg("%s: %s", file, reply);
	return r;
}

int online_set_size(const char *file, const struct online_state *st, uint64_t size,
		    int discard_data)
{
	char cmd[96], reply[4096];
	uint64_t cur;
	int r = online_virtual_size(file, st, &cur);

	if (r < 0)
		return r;
	snprintf(cmd, sizeof(cmd), "%s %llu%s", size >= cur ? CTL_GROW : CTL_SHRINK,
		 (unsigned long long)size, discard_data ? " " CTL_DISCARD_DATA : "");
	r = online_request(st, cmd, reply, sizeof(reply));
	if (r < 0) {
		errmsg("%s: %s", file, reply);
		return r;
	}
	return online_refresh_size(st);
}
