/* SPDX-License-Identifier: MIT */
/* Finding the process that holds a lock on an image, for error messages.
 * OFD locks report no pid through F_OFD_GETLK, so look the file up in
 * /proc/locks (by device and inode), and failing that in /proc/PID/fdinfo. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "internal.h"

static pid_t from_proc_locks(dev_t dev, ino_t ino)
{
	FILE *f = fopen("/proc/locks", "re");
	char line[256];
	pid_t found = 0;

	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned maj, min;
		unsigned long long in;
		long pid;
		char kind[32], adv[32], rw[32];
		/* "1: OFDLCK ADVISORY WRITE 1234 fd:01:5678 0 EOF" */
		if (sscanf(line, "%*s %31s %31s %31s %ld %x:%x:%llu", kind, adv, rw, &pid,
			   &maj, &min, &in) != 7)
			continue;
		if (in == (unsigned long long)ino && makedev(maj, min) == dev && pid > 0 &&
		    pid != getpid())
			found = (pid_t)pid;
	}
	fclose(f);
	return found;
}

static pid_t from_fdinfo(dev_t dev, ino_t ino)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	pid_t found = 0;

	if (!d)
		return 0;
	while (!found && (de = readdir(d))) {
		char path[300];
		DIR *fds;
		struct dirent *fe;
		long pid = strtol(de->d_name, NULL, 10);
		if (pid <= 0 || pid == getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/fd", pid);
		if (!(fds = opendir(path)))
			continue;
		while (!found && (fe = readdir(fds))) {
			struct stat st;
			char fpath[600], line[256];
			FILE *fi;
			if (fe->d_name[0] == '.')
				continue;
			snprintf(fpath, sizeof(fpath), "/proc/%ld/fd/%s", pid, fe->d_name);
			if (stat(fpath, &st) || st.st_dev != dev || st.st_ino != ino)
				continue;
			snprintf(fpath, sizeof(fpath), "/proc/%ld/fdinfo/%s", pid, fe->d_name);
			if (!(fi = fopen(fpath, "re")))
				continue;
			while (fgets(line, sizeof(line), fi))
				if (!strncmp(line, "lock:", 5))
					found = (pid_t)pid;
			fclose(fi);
		}
		closedir(fds);
	}
	closedir(d);
	return found;
}

pid_t imgi_lock_holder_from_proc(int fd)
{
	struct stat st;
	pid_t p;

	if (fstat(fd, &st))
		return 0;
	p = from_proc_locks(st.st_dev, st.st_ino);
	return p ? p : from_fdinfo(st.st_dev, st.st_ino);
}
