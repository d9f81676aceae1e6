/* SPDX-License-Identifier: MIT */
/* Loop devices over an export; see loop.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/loop.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loop.h"

int loop_attach(const char *file, unsigned flags, char *dev, size_t len)
{
	struct loop_config cfg;
	int ctl = -1, bfd = -1, lfd = -1, r = 0, tries, ro = (flags & LOOP_ATTACH_READ_ONLY) != 0;
	int direct_io = (flags & LOOP_ATTACH_DIRECT_IO) != 0;

	bfd = open(file, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (bfd < 0) {
		r = -errno;
		errmsg_err(file, r, "%s: %s", file, strerror(-r));
		goto out;
	}
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		r = -errno;
		errmsg("/dev/loop-control: %s", strerror(-r));
		goto out;
	}
	for (tries = 0; tries < 16; tries++) {
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0) {
			r = -errno;
			errmsg("no free loop device: %s", strerror(-r));
			goto out;
		}
		snprintf(dev, len, "/dev/loop%d", n);
		lfd = open(dev, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
		if (lfd < 0) {
			r = -errno;
			errmsg_err(dev, r, "%s: %s", dev, strerror(-r));
			goto out;
		}
		memset(&cfg, 0, sizeof(cfg));
		cfg.fd = (unsigned)bfd;
		cfg.info.lo_flags = (direct_io ? LO_FLAGS_DIRECT_IO : 0) |
				    (ro ? LO_FLAGS_READ_ONLY : 0);
		snprintf((char *)cfg.info.lo_file_name, sizeof(cfg.info.lo_file_name), "%s", file);
		r = ioctl(lfd, LOOP_CONFIGURE, &cfg) < 0 ? -errno : 0;
		if (r == -EINVAL && direct_io) {
			cfg.info.lo_flags &= ~(unsigned)LO_FLAGS_DIRECT_IO;
			r = ioctl(lfd, LOOP_CONFIGURE, &cfg) < 0 ? -errno : 0;
		}
		close(lfd);
		lfd = -1;
		if (r != -EBUSY)    /* EBUSY: someone took it first; next one */
			break;
	}
	if (r < 0)
		errmsg_err(dev, r, "%s: cannot attach %s: %s", dev, file, strerror(-r));
out:
	if (lfd >= 0)
		close(lfd);
	if (ctl >= 0)
		close(ctl);
	if (bfd >= 0)
		close(bfd);
	return r;
}

/* /sys/block/loopN/loop/backing_file of dev into buf ("" if none). */
static void loop_backing(const char *dev, char *buf, size_t len)
{
	const char *name = strrchr(dev, '/');
	char path[128];
	ssize_t n;
	int fd;

	buf[0] = 0;
	snprintf(path, sizeof(path), "/sys/block/%s/loop/backing_file", name ? name + 1 : dev);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		n = 0;
	buf[n] = 0;
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = 0;
}

int loop_detach(const char *dev, const char *file)
{
	char backing[PATH_MAX];
	int fd, r = 0, tries;

	loop_backing(dev, backing, sizeof(backing));
	if (!backing[0])
		return -ENXIO;
	if (file && strcmp(backing, file)) {
		errmsg("%s: backed by %s, not by %s: not detaching it", dev, backing, file);
		return -EBUSY;
	}
	fd = open(dev, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		errmsg_err(dev, r, "%s: %s", dev, strerror(-r));
		return r;
	}
	/* Right after an unmount the device may still be held for a moment. */
	for (tries = 0; tries < 50; tries++) {
		r = ioctl(fd, LOOP_CLR_FD, 0) < 0 ? -errno : 0;
		if (r != -EBUSY)
			break;
		usleep(100 * 1000);
	}
	close(fd);
	if (r == -ENXIO)
		return r;
	if (r < 0) {
		errmsg_err(dev, r, "%s: cannot detach: %s", dev, strerror(-r));
		return r;
	}
	/* LOOP_CLR_FD on a device someone still has open only arms autoclear:
	 * wait until the backing file is really gone. */
	for (tries = 0; tries < 100; tries++) {
		loop_backing(dev, backing, sizeof(backing));
		if (!backing[0])
			return 0;
		usleep(50 * 1000);
	}
	errmsg("%s: still in use; it is detached when its last user closes it", dev);
	return -EBUSY;
}

int loop_set_capacity(const char *dev)
{
	int fd = open(dev, O_RDONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (ioctl(fd, LOOP_SET_CAPACITY, 0) < 0)
		r = -errno;
	close(fd);
	return r;
}

int online_refresh_size(const struct online_state *st)
{
	struct stat sb;
	int r;

	/* The daemon invalidated the export's attributes: a stat fetches the
	 * new size into the kernel's inode, which is what the loop driver
	 * reads. */
	if (st->export_path[0] && stat(st->export_path, &sb) < 0) {
		r = -errno;
		errmsg_err(st->export_path, r, "%s: %s", st->export_path, strerror(-r));
		return r;
	}
	if (st->loop[0]) {
		r = loop_set_capacity(st->loop);
		if (r < 0) {
			errmsg_err(st->loop, r, "%s: cannot update the capacity: %s",
				   st->loop, strerror(-r));
			return r;
		}
	}
	return 0;
}
