/* SPDX-License-Identifier: MIT */
/* Filesystem helpers of the tools (see common_fs.h): used by mkimg, imginfo,
 * compact, growimg, shrinkimg, imgmount and the online code. */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common_fs.h"

extern char **environ;

int fs_is_ext(const char *type)
{
	return !strcmp(type, "ext2") || !strcmp(type, "ext3") || !strcmp(type, "ext4");
}

int fs_uuid_new(char out[37])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char u[16];
	size_t got = 0, k = 0;

	while (got < sizeof(u)) {
		ssize_t n = getrandom(u + got, sizeof(u) - got, 0);
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n > 0)
			got += (size_t)n;
	}
	u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);   /* version 4 */
	u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);   /* RFC 4122 variant */
	for (size_t i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[k++] = '-';
		out[k++] = hex[u[i] >> 4];
		out[k++] = hex[u[i] & 15];
	}
	out[k] = 0;
	return 0;
}

int fs_uuid_valid(const char *s)
{
	size_t i;

	if (strlen(s) != 36)
		return 0;
	for (i = 0; i < 36; i++)
		if ((i == 8 || i == 13 || i == 18 || i == 23) ? s[i] != '-' :
		    !strchr("0123456789abcdefABCDEF", s[i]))
			return 0;
	return 1;
}

size_t fs_label_max(const char *type)
{
	if (fs_is_ext(type))
		return 16;
	if (!strcmp(type, "xfs"))
		return 12;
	if (!strcmp(type, "btrfs"))
		return 255;
	return 0;
}

int fs_label_valid(const char *type, const char *label)
{
	size_t n = strlen(label);

	if (n > fs_label_max(type))
		return 0;
	if (!strcmp(type, "xfs")) {
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)label[i] <= ' ' || label[i] == 0x7f)
				return 0;
		if (!strcmp(label, "--"))
			return 0;
	}
	return 1;
}

int fs_probe(const char *file, struct img *img, struct img_fs_info *fi)
{
	int r = img_fs_probe(img, fi);

	if (r == -ENOMEDIUM)
		return 1;
	if (r < 0)
		errmsg("warning: %s: cannot look for a filesystem: %s", file, img_strerror(r));
	return r;
}

void fs_json(struct json_out *j, const char *key, const struct img_fs_info *fi)
{
	if (!fi) {
		json_null(j, key);
		return;
	}
	json_object_begin(j, key);
	json_string(j, "type", fi->type);
	if (fi->flags & IMG_FS_HAVE_LABEL)
		json_string(j, "label", fi->label);
	if (fi->flags & IMG_FS_HAVE_UUID)
		json_string(j, "uuid", fi->uuid);
	if (fi->version[0])
		json_string(j, "version", fi->version);
	if (fi->flags & IMG_FS_HAVE_SIZE)
		json_u64(j, "size", fi->size);
	if (fi->flags & IMG_FS_HAVE_USED)
		json_u64(j, "used", fi->used);
	if (fi->flags & IMG_FS_HAVE_BLOCK_SIZE)
		json_u64(j, "block_size", fi->block_size);
	if (fi->flags & IMG_FS_HAVE_STATE) {
		json_bool(j, "clean", fi->state == 0);
		json_bool(j, "needs_recovery", !!(fi->state & IMG_FS_STATE_NEEDS_RECOVERY));
		json_bool(j, "errors", !!(fi->state & IMG_FS_STATE_ERRORS));
	}
	json_object_end(j);
}

const char *fs_describe(const struct img_fs_info *fi, char *buf, size_t len)
{
	char s1[32], s2[32], e[TEXT_ESCAPE_LEN(sizeof(fi->label))];
	size_t n;

	/* type, label and UUID are read from the image: escaped */
	n = (size_t)snprintf(buf, len, "%s", text_escape(fi->type, e, sizeof(e)));
	if (n < len && (fi->flags & IMG_FS_HAVE_LABEL) && fi->label[0])
		n += (size_t)snprintf(buf + n, len - n, ", label \"%s\"",
				      text_escape(fi->label, e, sizeof(e)));
	if (n < len && (fi->flags & IMG_FS_HAVE_UUID))
		n += (size_t)snprintf(buf + n, len - n, ", UUID %s",
				      text_escape(fi->uuid, e, sizeof(e)));
	if (n < len && (fi->flags & IMG_FS_HAVE_SIZE))
		n += (size_t)snprintf(buf + n, len - n, ", %s", human_size(fi->size, s1, sizeof(s1)));
	if (n < len && (fi->flags & IMG_FS_HAVE_USED) && (fi->flags & IMG_FS_HAVE_SIZE) && fi->size)
		n += (size_t)snprintf(buf + n, len - n, ", %s used (%llu%%)",
				      human_size(fi->used, s2, sizeof(s2)),
				      (unsigned long long)(fi->used * 100 / fi->size));
	if (n < len && (fi->flags & IMG_FS_HAVE_STATE) && fi->state)
		snprintf(buf + n, len - n, ", %s",
			 fi->state & IMG_FS_STATE_NEEDS_RECOVERY ? "needs journal recovery" :
			 fi->state & IMG_FS_STATE_ERRORS ? "has errors" : "not cleanly unmounted");
	return buf;
}

/* Runs argv with its output kept in a temporary file; copies up to len - 1
 * bytes of it into out (when out).  When it fails and !silent, prints what
 * it said. */
static int run_logged(char *const argv[], char *out, size_t len, int silent)
{
	posix_spawn_file_actions_t fa;
	char log[] = "/tmp/libimg-run-XXXXXX";
	int fd = mkstemp(log), st = 0, r;
	pid_t pid;

	if (out && len)
		out[0] = 0;
	if (fd < 0) {
		r = -errno;
		errmsg("cannot create a temporary file: %s", strerror(-r));
		return r;
	}
	unlink(log);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, fd, 1);
	posix_spawn_file_actions_adddup2(&fa, fd, 2);
	fflush(stdout);
	fflush(stderr);
	r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r) {
		errmsg_err(NULL, -r, "cannot run %s: %s", argv[0], strerror(r));
		close(fd);
		return 127;
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR) {
			r = -errno;
			close(fd);
			return r;
		}
	r = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	if (out && len > 1) {
		ssize_t n = pread(fd, out, len - 1, 0);
		out[n > 0 ? n : 0] = 0;
	}
	if (r && !silent) {
		char buf[1024];
		errmsg("%s failed (exit status %d)%s", argv[0], r, lseek(fd, 0, SEEK_END) > 0 ? ":" : "");
		FILE *f;
		int lines = 0;
		lseek(fd, 0, SEEK_SET);
		/* what it said, up to 12 lines (not a whole usage text) */
		if ((f = fdopen(dup(fd), "r"))) {
			while (fgets(buf, sizeof(buf), f))
				if (++lines <= 12)
					fputs(buf, stderr);
			if (lines > 12)
				fprintf(stderr, "[%d more lines]\n", lines - 12);
			fclose(f);
		}
	}
	close(fd);
	return r;
}

int run_quiet(char *const argv[])
{
	return run_logged(argv, NULL, 0, 0);
}

int run_capture(char *const argv[], char *out, size_t len)
{
	return run_logged(argv, out, len, 0);
}

int run_silent(char *const argv[])
{
	return run_logged(argv, NULL, 0, 1);
}

int run_capture_silent(char *const argv[], char *out, size_t len)
{
	return run_logged(argv, out, len, 1);
}

#define COPY_CHUNK (1u << 20)

int copy_raw_into_image(const char *file, int fd, uint64_t size, struct img *img,
			uint64_t *copied, struct progress *pr)
{
	char *buf = malloc(COPY_CHUNK);
	uint64_t off = 0;
	int r = 0;

	*copied = 0;
	if (!buf) {
		errmsg("out of memory");
		return -ENOMEM;
	}
	while (off < size && !r) {
		off_t d = lseek(fd, (off_t)off, SEEK_DATA), h;
		uint64_t end;

		if (d < 0 && errno == ENXIO)
			break;                      /* only a hole is left */
		if (d < 0) {                        /* no SEEK_DATA: all of it */
			d = (off_t)off;
			h = (off_t)size;
		} else {
			h = lseek(fd, d, SEEK_HOLE);
			if (h < 0)
				h = (off_t)size;
		}
		end = (uint64_t)h < size ? (uint64_t)h : size;
		for (uint64_t p = (uint64_t)d; p < end && !r; p += COPY_CHUNK) {
			size_t n = end - p < COPY_CHUNK ? (size_t)(end - p) : COPY_CHUNK;
			ssize_t got = pread(fd, buf, n, (off_t)p);
			if (got != (ssize_t)n) {
				r = got < 0 ? -errno : -EIO;
				errmsg_err(NULL, r, "reading the filesystem made for %s: %s",
					   file, strerror(-r));
				break;
			}
			/* The image is new: its zero blocks are not written. */
			ssize_t w = img_pwrite_sparse(img, buf, n, p, 0);
			if (w < 0) {
				r = (int)w;
				lib_errmsg(file, r);
			} else {
				*copied += (uint64_t)w;
			}
			if (pr && !r)
				progress_update(pr, p + n, size);
		}
		off = end;
	}
	free(buf);
	return r;
}
