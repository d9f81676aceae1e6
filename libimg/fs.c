/* SPDX-License-Identifier: MIT */
/*
 * Filesystems inside images: detection with libblkid, ext2/3/4 through
 * libext2fs with an io_manager that reads and writes the virtual disk, and
 * the return of the host space behind an ext2/3/4 filesystem's free blocks.
 *
 * Only a filesystem that starts at offset 0 of the virtual disk is handled:
 * libimg images hold one filesystem each, like ploop and container images.
 *
 * This module calls the public data API (img_pread, img_pwrite, img_map,
 * img_discard, ...) and imgi_check_writable (util.c), with one exception,
 * unmap_clusters() below, which unmaps many whole clusters under one
 * commit (see there).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <blkid.h>
#include <ext2fs/ext2fs.h>
#include <et/com_err.h>

#include "internal.h"
#include "fs_ext2.h"

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }
static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* ====================================================================== */
/* libext2fs io_manager over an image                                     */
/* ====================================================================== */

struct imgi_chan {
	struct img *img;
	int rw;
	struct struct_io_stats stats;
};

/* The image the next channel opens on (set by imgi_ext2fs_open() around
 * ext2fs_open2(), which passes only a name to the manager's open). */
static _Thread_local struct img *opening_img;

static errcode_t ic_open(const char *name, int flags, io_channel *out)
{
	struct img *img = opening_img;
	struct imgi_chan *c = NULL;
	io_channel ch = NULL;

	if (!img)
		return EXT2_ET_BAD_DEVICE_NAME;
	if (flags & IO_FLAG_RW) {
		int r = imgi_check_writable(img, IMG_CHANGE_CONTENT, "writing the filesystem");
		if (r)
			return -r;
	}
	ch = calloc(1, sizeof(*ch));
	c = calloc(1, sizeof(*c));
	if (!ch || !c || !(ch->name = strdup(name ? name : img->name))) {
		free(ch);
		free(c);
		return EXT2_ET_NO_MEMORY;
	}
	c->img = img;
	c->rw = !!(flags & IO_FLAG_RW);
	c->stats.num_fields = 2;
	ch->magic = EXT2_ET_MAGIC_IO_CHANNEL;
	ch->manager = &imgi_ext2_io_manager;
	ch->block_size = 1024;
	ch->refcount = 1;
	ch->private_data = c;
	*out = ch;
	return 0;
}

static errcode_t ic_close(io_channel ch)
{
	if (--ch->refcount > 0)
		return 0;
	free(ch->private_data);
	free(ch->name);
	free(ch);
	return 0;
}

static errcode_t ic_set_blksize(io_channel ch, int blksize)
{
	if (blksize <= 0)
		return EXT2_ET_INVALID_ARGUMENT;
	ch->block_size = blksize;
	return 0;
}

/* Byte range of count blocks (or -count bytes) at block. */
static errcode_t ic_span(io_channel ch, unsigned long long block, int count,
			 uint64_t *off, size_t *len)
{
	uint64_t n = count < 0 ? (uint64_t)-(int64_t)count : (uint64_t)count * (uint64_t)ch->block_size;

	if (__builtin_mul_overflow((uint64_t)block, (uint64_t)ch->block_size, off) ||
	    n > SIZE_MAX)
		return EXT2_ET_LLSEEK_FAILED;
	*len = (size_t)n;
	return 0;
}

/* errno (negative, from libimg) into a libext2fs error code. */
static errcode_t ic_err(ssize_t r, int reading)
{
	if (r == -EINVAL)   /* the only cause here: past the virtual size */
		return reading ? EXT2_ET_SHORT_READ : EXT2_ET_SHORT_WRITE;
	return (errcode_t)-r;
}

static errcode_t ic_read64(io_channel ch, unsigned long long block, int count, void *data)
{
	struct imgi_chan *c = ch->private_data;
	uint64_t off;
	size_t len;
	errcode_t e = ic_span(ch, block, count, &off, &len);
	ssize_t r;

	if (e)
		return e;
	r = img_pread(c->img, data, len, off);
	if (r < 0) {
		e = ic_err(r, 1);
		if (ch->read_error)
			e = ch->read_error(ch, (unsigned long)block, count, data, len, 0, e);
		return e;
	}
	c->stats.bytes_read += len;
	return 0;
}

static errcode_t ic_write64(io_channel ch, unsigned long long block, int count, const void *data)
{
	struct imgi_chan *c = ch->private_data;
	uint64_t off;
	size_t len;
	errcode_t e;
	ssize_t r;

	if (!c->rw)
		return EXT2_ET_RO_FILSYS;
	if ((e = ic_span(ch, block, count, &off, &len)))
		return e;
	r = img_pwrite(c->img, data, len, off);
	if (r < 0) {
		e = ic_err(r, 0);
		if (ch->write_error)
			e = ch->write_error(ch, (unsigned long)block, count, data, len, 0, e);
		return e;
	}
	c->stats.bytes_written += len;
	return 0;
}

static errcode_t ic_read(io_channel ch, unsigned long block, int count, void *data)
{
	return ic_read64(ch, block, count, data);
}

static errcode_t ic_write(io_channel ch, unsigned long block, int count, const void *data)
{
	return ic_write64(ch, block, count, data);
}

static errcode_t ic_write_byte(io_channel ch, unsigned long offset, int count, const void *data)
{
	struct imgi_chan *c = ch->private_data;
	ssize_t r;

	if (!c->rw)
		return EXT2_ET_RO_FILSYS;
	if (count < 0)
		return EXT2_ET_INVALID_ARGUMENT;
	r = img_pwrite(c->img, data, (size_t)count, offset);
	if (r < 0)
		return ic_err(r, 0);
	c->stats.bytes_written += (unsigned)count;
	return 0;
}

static errcode_t ic_flush(io_channel ch)
{
	struct imgi_chan *c = ch->private_data;
	int r = c->rw ? img_flush(c->img) : 0;

	return r ? (errcode_t)-r : 0;
}

static errcode_t ic_blocks(io_channel ch, unsigned long long block, unsigned long long count,
			   uint64_t *off, uint64_t *len)
{
	struct imgi_chan *c = ch->private_data;

	if (!c->rw)
		return EXT2_ET_RO_FILSYS;
	if (__builtin_mul_overflow((uint64_t)block, (uint64_t)ch->block_size, off) ||
	    __builtin_mul_overflow((uint64_t)count, (uint64_t)ch->block_size, len))
		return EXT2_ET_LLSEEK_FAILED;
	return 0;
}

/* discard (unmap) or zeroout (write zeroes) count blocks at block. */
static errcode_t ic_zero(io_channel ch, unsigned long long block, unsigned long long count,
			 int discard)
{
	struct imgi_chan *c = ch->private_data;
	uint64_t off, len;
	errcode_t e = ic_blocks(ch, block, count, &off, &len);
	int r;

	if (e)
		return e;
	r = discard ? img_discard(c->img, off, len) : img_write_zeroes(c->img, off, len);
	return r ? ic_err(r, 0) : 0;
}

static errcode_t ic_discard(io_channel ch, unsigned long long block, unsigned long long count)
{
	return ic_zero(ch, block, count, 1);
}

static errcode_t ic_zeroout(io_channel ch, unsigned long long block, unsigned long long count)
{
	return ic_zero(ch, block, count, 0);
}

static errcode_t ic_set_option(io_channel ch, const char *option, const char *arg)
{
	return EXT2_ET_INVALID_ARGUMENT;
}

static errcode_t ic_get_stats(io_channel ch, io_stats *stats)
{
	struct imgi_chan *c = ch->private_data;

	if (stats)
		*stats = &c->stats;
	return 0;
}

struct struct_io_manager imgi_ext2_io_manager = {
	.magic = EXT2_ET_MAGIC_IO_MANAGER,
	.name = "libimg I/O manager",
	.open = ic_open,
	.close = ic_close,
	.set_blksize = ic_set_blksize,
	.read_blk = ic_read,
	.write_blk = ic_write,
	.flush = ic_flush,
	.write_byte = ic_write_byte,
	.set_option = ic_set_option,
	.get_stats = ic_get_stats,
	.read_blk64 = ic_read64,
	.write_blk64 = ic_write64,
	.discard = ic_discard,
	.zeroout = ic_zeroout,
};

static pthread_once_t et_once = PTHREAD_ONCE_INIT;

static void et_init(void)
{
	initialize_ext2_error_table();
}

/* The superblock's size of the filesystem, before libext2fs reads
 * anything sized by it: a filesystem bigger than the virtual disk is
 * refused (EFBIG), as the kernel refuses one bigger than its device.  The
 * disk is untrusted input: libext2fs allocates and reads the group
 * descriptors of every group the superblock claims (a forged superblock
 * of tiny groups over a thin disk: gigabytes), and writes backup
 * superblocks where those groups would lie.  This bounds both by the
 * virtual size.  0, or an errno / libext2fs code. */
static errcode_t ext_fits_disk(struct img *img)
{
	struct img_info ii;
	uint8_t sb[1024];
	uint64_t blocks, bytes;
	uint32_t log;
	int r;

	if ((r = img_info(img, &ii)))
		return (errcode_t)-r;
	if (ii.virtual_size < 2048)
		return EXT2_ET_SHORT_READ;
	if (img_pread(img, sb, sizeof(sb), 1024) != (ssize_t)sizeof(sb))
		return EXT2_ET_SHORT_READ;
	if (sb[0x38] != 0x53 || sb[0x39] != 0xEF)              /* s_magic */
		return EXT2_ET_BAD_MAGIC;
	log = (uint32_t)sb[0x18] | (uint32_t)sb[0x19] << 8 | (uint32_t)sb[0x1a] << 16 |
	      (uint32_t)sb[0x1b] << 24;                       /* s_log_block_size */
	if (log > 6)                                           /* 1 KiB..64 KiB */
		return EXT2_ET_CORRUPT_SUPERBLOCK;
	blocks = (uint64_t)sb[4] | (uint64_t)sb[5] << 8 | (uint64_t)sb[6] << 16 |
		 (uint64_t)sb[7] << 24;                        /* s_blocks_count_lo */
	if (sb[0x60] & 0x80)                                   /* INCOMPAT_64BIT: _hi */
		blocks |= ((uint64_t)sb[0x150] | (uint64_t)sb[0x151] << 8 |
			   (uint64_t)sb[0x152] << 16 | (uint64_t)sb[0x153] << 24) << 32;
	if (__builtin_mul_overflow(blocks, (uint64_t)1024 << log, &bytes) || bytes > ii.virtual_size)
		return EFBIG;
	return 0;
}

errcode_t imgi_ext2fs_open(struct img *img, int ext2_flags, ext2_filsys *out)
{
	errcode_t e;

	pthread_once(&et_once, et_init);
	if ((e = ext_fits_disk(img)))
		return e;
	opening_img = img;
	e = ext2fs_open2(img->name, NULL, ext2_flags | EXT2_FLAG_64BITS, 0, 0,
			 &imgi_ext2_io_manager, out);
	opening_img = NULL;
	return e;
}

int imgi_ext2fs_error(const char *name, const char *what, errcode_t code)
{
	int err;

	pthread_once(&et_once, et_init);
	if (code == EFBIG) {                       /* ext_fits_disk */
		imgi_set_error("%s: %s: its superblock claims a filesystem bigger than the "
			      "virtual disk (damaged, or not made for this disk): not opened",
			      name, what);
		return -ENOTRECOVERABLE;
	}
	if (code > 0 && code < 4096)
		err = -(int)code;                  /* an errno from the image */
	else if (code == EXT2_ET_NO_MEMORY)
		err = -ENOMEM;
	else if (code == EXT2_ET_UNSUPP_FEATURE || code == EXT2_ET_RO_UNSUPP_FEATURE)
		err = -EOPNOTSUPP;
	else if (code == EXT2_ET_BAD_MAGIC)
		err = -ENOMEDIUM;
	else
		err = -ENOTRECOVERABLE;            /* damaged metadata, short read */
	imgi_set_error("%s: %s: %s", name, what, error_message(code));
	return err;
}

/* ====================================================================== */
/* Detection                                                              */
/* ====================================================================== */

/*
 * libblkid probes a file descriptor, and an image is not a plain disk, so
 * it gets a view: a memfd as big as the virtual disk (sparse) holding the
 * first PROBE_HEAD and the last PROBE_TAIL bytes of it, copied through
 * img_pread.  That is enough because every signature libblkid looks for
 * sits near one end of the device: ext2/3/4's superblock at 1 KiB, xfs's at
 * 0, btrfs's primary superblock at 64 KiB, vfat/exfat/ntfs boot sectors at
 * 0, swap at the end of the first page (at most 64 KiB), LUKS and LVM
 * labels in the first 4 KiB, iso9660/udf descriptors within the first
 * 512 KiB, ZFS labels in the first 512 KiB (and the last), and MD 0.90/1.0
 * superblocks, GPT backup headers and DDF anchors in the last 128 KiB.
 * Unwritten ranges stay holes, so the view costs only what is copied.
 */
#define PROBE_HEAD (8u << 20)
#define PROBE_TAIL (1u << 20)
#define COPY_BUF   (1u << 20)

/* Copy the written parts of [off, end) of the virtual disk into fd. */
static int copy_view(struct img *img, int fd, uint64_t off, uint64_t end, uint8_t *buf)
{
	while (off < end) {
		struct img_extent ex;
		uint64_t n;
		int r = img_map(img, off, &ex);

		if (r)
			return r;
		if (ex.length == 0)
			break;
		n = min_u64(ex.length, end - off);
		for (uint64_t p = off; (ex.type == IMG_EXTENT_DATA || ex.type == IMG_EXTENT_COMPRESSED) &&
				       p < off + n; ) {
			size_t k = (size_t)min_u64(COPY_BUF, off + n - p);
			ssize_t rr = img_pread(img, buf, k, p);
			if (rr < 0)
				return (int)rr;
			if (!imgi_is_zero(buf, k) && pwrite(fd, buf, k, (off_t)p) != (ssize_t)k) {
				imgi_set_error("%s: writing the probe view: %s", img->name, strerror(errno));
				return -errno ? -errno : -EIO;
			}
			p += k;
		}
		off += n;
	}
	return 0;
}

static void copy_tag(blkid_probe pr, const char *tag, char *dst, size_t size, int *found)
{
	const char *v = NULL;
	size_t len = 0;

	if (blkid_probe_lookup_value(pr, tag, &v, &len) == 0 && v) {
		snprintf(dst, size, "%s", v);
		if (found)
			*found = 1;
	}
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }
static uint32_t le32(const uint8_t *p) { return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0]; }
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p + 4) << 32 | le32(p); }

static int pow2_between(uint64_t v, uint64_t lo, uint64_t hi)
{
	return v >= lo && v <= hi && (v & (v - 1)) == 0;
}

/* Sizes from the superblocks libblkid already recognised (its 2.38 API has
 * no size tags).  Every field is checked before use; a field that does not
 * make sense stays unknown. */
static void xfs_sizes(int fd, struct img_fs_info *fi)
{
	uint8_t sb[160];
	uint64_t bs, dblocks, fdblocks, size;

	if (pread(fd, sb, sizeof(sb), 0) != (ssize_t)sizeof(sb) || memcmp(sb, "XFSB", 4))
		return;
	bs = be32(sb + 4);            /* sb_blocksize */
	dblocks = be64(sb + 8);       /* sb_dblocks */
	fdblocks = be64(sb + 144);    /* sb_fdblocks (exact when cleanly unmounted) */
	if (!pow2_between(bs, 512, 65536) || __builtin_mul_overflow(dblocks, bs, &size))
		return;
	fi->block_size = bs;
	fi->size = size;
	fi->flags |= IMG_FS_HAVE_BLOCK_SIZE | IMG_FS_HAVE_SIZE;
	if (fdblocks <= dblocks) {
		fi->used = (dblocks - fdblocks) * bs;
		fi->flags |= IMG_FS_HAVE_USED;
	}
}

static void btrfs_sizes(int fd, struct img_fs_info *fi)
{
	uint8_t sb[0x98];
	uint64_t total, used, ss;

	if (pread(fd, sb, sizeof(sb), 65536) != (ssize_t)sizeof(sb) || memcmp(sb + 0x40, "_BHRfS_M", 8))
		return;
	total = le64(sb + 0x70);      /* total_bytes */
	used = le64(sb + 0x78);       /* bytes_used */
	ss = le32(sb + 0x90);         /* sectorsize */
	if (pow2_between(ss, 4096, 65536)) {
		fi->block_size = ss;
		fi->flags |= IMG_FS_HAVE_BLOCK_SIZE;
	}
	if (total) {
		fi->size = total;
		fi->flags |= IMG_FS_HAVE_SIZE;
		if (used <= total) {
			fi->used = used;
			fi->flags |= IMG_FS_HAVE_USED;
		}
	}
}

static int is_ext(const char *type)
{
	return !strcmp(type, "ext2") || !strcmp(type, "ext3") || !strcmp(type, "ext4") ||
	       !strcmp(type, "ext4dev");
}

static uint32_t ext_state(ext2_filsys fs)
{
	uint32_t st = 0;

	if (ext2fs_has_feature_journal_needs_recovery(fs->super))
		st |= IMG_FS_STATE_NEEDS_RECOVERY;
	if (!(fs->super->s_state & EXT2_VALID_FS))
		st |= IMG_FS_STATE_NOT_CLEAN;
	if (fs->super->s_state & EXT2_ERROR_FS)
		st |= IMG_FS_STATE_ERRORS;
	return st;
}

/* Free blocks per the group descriptors (what the kernel keeps current;
 * the superblock's total is updated lazily). */
static uint64_t ext_free_blocks(ext2_filsys fs)
{
	uint64_t clusters = 0;

	for (dgrp_t g = 0; g < fs->group_desc_count; g++)
		clusters += ext2fs_bg_free_blocks_count(fs, g);
	return EXT2FS_C2B(fs, clusters);
}

static void ext_sizes(struct img *img, struct img_fs_info *fi)
{
	ext2_filsys fs = NULL;
	uint64_t size, nfree;

	if (imgi_ext2fs_open(img, EXT2_FLAG_IGNORE_CSUM_ERRORS | EXT2_FLAG_SKIP_MMP, &fs))
		return;
	if (!__builtin_mul_overflow(ext2fs_blocks_count(fs->super), (uint64_t)fs->blocksize, &size)) {
		nfree = ext_free_blocks(fs) * fs->blocksize;
		fi->size = size;
		fi->used = nfree <= size ? size - nfree : 0;
		fi->block_size = fs->blocksize;
		fi->state = ext_state(fs);
		fi->flags |= IMG_FS_HAVE_SIZE | IMG_FS_HAVE_USED | IMG_FS_HAVE_BLOCK_SIZE |
			     IMG_FS_HAVE_STATE;
	}
	ext2fs_close_free(&fs);
}

static void ext_error_at(struct img_fs_error_at *at, uint32_t t, uint8_t t_hi, uint64_t block,
			 uint32_t ino, uint32_t line, const uint8_t *func)
{
	at->time = (uint64_t)t | (uint64_t)t_hi << 32;
	at->block = block;
	at->ino = ino;
	at->line = line;
	/* 32 bytes, not always terminated */
	memcpy(at->func, func, 32);
	at->func[32] = 0;
}

IMG_API int img_fs_errors(struct img *img, struct img_fs_errors *out)
{
	ext2_filsys fs = NULL;
	struct ext2_super_block *sb;
	errcode_t e;

	memset(out, 0, sizeof(*out));
	if ((e = imgi_ext2fs_open(img, EXT2_FLAG_IGNORE_CSUM_ERRORS | EXT2_FLAG_SKIP_MMP, &fs)))
		return imgi_ext2fs_error(img->name, "reading the ext2/3/4 superblock", e);
	sb = fs->super;
	out->count = sb->s_error_count;
	if (sb->s_state & EXT2_ERROR_FS)
		out->flags |= IMG_FS_STATE_ERRORS;
	ext_error_at(&out->first, sb->s_first_error_time, sb->s_first_error_time_hi,
		     sb->s_first_error_block, sb->s_first_error_ino, sb->s_first_error_line,
		     sb->s_first_error_func);
	ext_error_at(&out->last, sb->s_last_error_time, sb->s_last_error_time_hi,
		     sb->s_last_error_block, sb->s_last_error_ino, sb->s_last_error_line,
		     sb->s_last_error_func);
	ext2fs_close_free(&fs);
	return 0;
}

IMG_API int img_fs_probe(struct img *img, struct img_fs_info *out)
{
	struct img_info ii;
	blkid_probe pr = NULL;
	uint8_t *buf = NULL;
	int fd = -1, r, have = 0;
	char pttype[64] = "";

	memset(out, 0, sizeof(*out));
	if ((r = img_info(img, &ii)))
		return r;
	buf = malloc(COPY_BUF);
	fd = memfd_create("libimg-probe", MFD_CLOEXEC);
	if (!buf || fd < 0) {
		r = !buf ? -ENOMEM : -errno;
		imgi_set_error("%s: making the probe view: %s", img->name, strerror(-r));
		goto out;
	}
	if (ftruncate(fd, (off_t)ii.virtual_size) < 0) {
		r = -errno;
		imgi_set_error("%s: sizing the probe view: %s", img->name, strerror(-r));
		goto out;
	}
	if ((r = copy_view(img, fd, 0, min_u64(PROBE_HEAD, ii.virtual_size), buf)) ||
	    (r = copy_view(img, fd, ii.virtual_size - min_u64(PROBE_TAIL, ii.virtual_size),
			   ii.virtual_size, buf)))
		goto out;

	if (!(pr = blkid_new_probe())) {
		r = -ENOMEM;
		goto out;
	}
	if (blkid_probe_set_device(pr, fd, 0, (blkid_loff_t)ii.virtual_size)) {
		r = -EIO;
		imgi_set_error("%s: libblkid refused the probe view", img->name);
		goto out;
	}
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID |
					  BLKID_SUBLKS_TYPE | BLKID_SUBLKS_VERSION |
					  BLKID_SUBLKS_USAGE);
	blkid_probe_enable_partitions(pr, 1);
	r = blkid_do_safeprobe(pr);
	if (r == -2) {
		r = -ENOMEDIUM;
		imgi_set_error("%s: several conflicting signatures found (wipefs shows them)", img->name);
		goto out;
	}
	if (r < 0) {
		r = -EIO;
		imgi_set_error("%s: libblkid failed to probe the virtual disk", img->name);
		goto out;
	}
	copy_tag(pr, "TYPE", out->type, sizeof(out->type), &have);
	if (!have) {
		copy_tag(pr, "PTTYPE", pttype, sizeof(pttype), NULL);
		r = -ENOMEDIUM;
		if (pttype[0])
			imgi_set_error("%s: the virtual disk holds a %s partition table; filesystems inside partitions are not supported",
				      img->name, pttype);
		else
			imgi_set_error("%s: no filesystem found on the virtual disk", img->name);
		goto out;
	}
	have = 0;
	copy_tag(pr, "LABEL", out->label, sizeof(out->label), &have);
	if (have)
		out->flags |= IMG_FS_HAVE_LABEL;
	have = 0;
	copy_tag(pr, "UUID", out->uuid, sizeof(out->uuid), &have);
	if (have)
		out->flags |= IMG_FS_HAVE_UUID;
	copy_tag(pr, "VERSION", out->version, sizeof(out->version), NULL);
	r = 0;

	if (is_ext(out->type))
		ext_sizes(img, out);
	else if (!strcmp(out->type, "xfs"))
		xfs_sizes(fd, out);
	else if (!strcmp(out->type, "btrfs"))
		btrfs_sizes(fd, out);
	if (!(out->flags & IMG_FS_HAVE_LABEL) && (is_ext(out->type) || !strcmp(out->type, "xfs") ||
						   !strcmp(out->type, "btrfs")))
		out->flags |= IMG_FS_HAVE_LABEL;   /* these always have one, "" when unset */
out:
	if (pr)
		blkid_free_probe(pr);
	if (fd >= 0)
		close(fd);
	free(buf);
	return r;
}

/* ====================================================================== */
/* Giving back the free blocks of ext2/3/4                                */
/* ====================================================================== */

#define UNMAP_BATCH 4096

/*
 * Unmap whole clusters as img_discard() does (rw.c zero_range), but with
 * one commit for the whole batch: img_discard commits at every call that
 * frees a cluster (two syncs), and the free space of a fragmented
 * filesystem is thousands of runs.  Same invariants: the mapping leaves
 * under map_lock held exclusive, the host cluster goes to the pending list
 * and is punched and reused only after the commit that made the change
 * durable.  A core img_discardv() (or a no-commit discard flag) would make
 * this function unnecessary.
 */
static int unmap_clusters(struct img *img, const uint64_t *v, size_t n, uint64_t *done)
{
	int r = 0;

	pthread_rwlock_wrlock(&img->map_lock);
	for (size_t i = 0; i < n && !r; i++) {
		uint64_t e;
		if (v[i] >= img->g.vclusters)
			continue;
		pthread_mutex_lock(&img->meta_lock);
		e = img->bat[v[i]];
		if (IMG_E_STATE(e) == IMG_E_ALLOC || IMG_E_STATE(e) == IMG_E_COMP) {
			r = imgi_release_entry(img, e);
			if (!r) {
				/* a delta's zero cluster hides its backing */
				bat_set(img, v[i], bat_dropped(img));
				(*done)++;
			}
		}
		pthread_mutex_unlock(&img->meta_lock);
	}
	pthread_rwlock_unlock(&img->map_lock);
	if (r)
		imgi_set_error("%s: unmapping free clusters: %s", img->name, img_strerror(r));
	/* Commit even after a failure: what was unmapped must become durable
	 * (or be rolled back into the pending list by the commit). */
	{
		int c = journal_commit(img);
		if (!r)
			r = c;
	}
	return r;
}

/* Punch the 4 KiB-aligned part of a free byte range of a partly used
 * cluster. */
static int punch_free(struct img *img, uint64_t a, uint64_t b, uint64_t *punched)
{
	uint64_t s = (a + 4095) & ~4095ull, e = b & ~4095ull;
	int r;

	if (s >= e)
		return 0;
	r = img_discard(img, s, e - s);
	if (!r)
		*punched += e - s;
	return r;
}

IMG_API int img_fs_trim_free(struct img *img, unsigned flags, struct img_fs_trim_stats *stats)
{
	struct img_fs_trim_stats st;
	struct img_fs_info fi;
	struct img_info ii;
	ext2_filsys fs = NULL;
	uint64_t *batch = NULL, fs_bytes, first, cs, bs, off = 0;
	size_t nbatch = 0;
	uint32_t state;
	errcode_t e;
	int r, punch;

	memset(&st, 0, sizeof(st));
	if (flags & ~IMG_FS_TRIM_WHOLE_CLUSTERS) {
		imgi_set_error("%s: unknown trim flags 0x%x", img->name, flags);
		return -EINVAL;
	}
	if ((r = imgi_check_writable(img, IMG_CHANGE_CONTENT, "giving back free blocks")))
		return r;
	if ((r = img_fs_probe(img, &fi)))
		return r;
	if (!is_ext(fi.type)) {
		imgi_set_error("%s: giving back free blocks needs an ext2/3/4 filesystem, not %s",
			      img->name, fi.type);
		return -EOPNOTSUPP;
	}
	if ((e = imgi_ext2fs_open(img, 0, &fs)))
		return imgi_ext2fs_error(img->name, "opening the ext2/3/4 filesystem", e);
	if ((r = img_info(img, &ii)))
		goto out;
	st.disk_usage_before = ii.disk_usage;
	state = ext_state(fs);
	if (state) {
		r = -ENOTRECOVERABLE;
		imgi_set_error("%s: the %s filesystem %s: run e2fsck -f on it first", img->name, fi.type,
			      state & IMG_FS_STATE_NEEDS_RECOVERY ? "needs journal recovery (mounted, or not cleanly unmounted)" :
			      state & IMG_FS_STATE_ERRORS ? "has errors recorded" :
			      "was not cleanly unmounted");
		goto out;
	}
	bs = fs->blocksize;
	cs = ii.cluster_size;
	if (__builtin_mul_overflow(ext2fs_blocks_count(fs->super), bs, &fs_bytes) ||
	    fs_bytes > ii.virtual_size) {
		r = -ENOTRECOVERABLE;
		imgi_set_error("%s: the filesystem (%llu blocks of %llu bytes) is bigger than the virtual disk (%llu bytes)",
			      img->name, (unsigned long long)ext2fs_blocks_count(fs->super),
			      (unsigned long long)bs, (unsigned long long)ii.virtual_size);
		goto out;
	}
	if ((e = ext2fs_read_block_bitmap(fs))) {
		r = imgi_ext2fs_error(img->name, "reading the block bitmaps", e);
		goto out;
	}
	st.fs_free_bytes = ext_free_blocks(fs) * bs;
	/* Blocks before s_first_data_block (the boot block of a 1 KiB-block
	 * filesystem) are not in the bitmap: never touched. */
	first = (uint64_t)fs->super->s_first_data_block * bs;
	punch = !(flags & IMG_FS_TRIM_WHOLE_CLUSTERS) &&
		__atomic_load_n(&img->can_punch, __ATOMIC_RELAXED);
	if (!(batch = malloc(UNMAP_BATCH * sizeof(*batch)))) {
		r = -ENOMEM;
		goto out;
	}

	/* Only allocated clusters hold host space: walk them. */
	while (off < fs_bytes && !r) {
		struct img_extent ex;
		if ((r = img_map(img, off, &ex)))
			break;
		if (ex.length == 0)
			break;
		/* Only this image's own clusters (depth 0) hold its space. */
		if ((ex.type != IMG_EXTENT_DATA && ex.type != IMG_EXTENT_COMPRESSED) || ex.depth) {
			off += ex.length;
			continue;
		}
		for (uint64_t c = off & ~(cs - 1); c < off + ex.length && c < fs_bytes && !r; c += cs) {
			uint64_t cend = min_u64(c + cs, ii.virtual_size);
			uint64_t a = max_u64(c, first), b = min_u64(cend, fs_bytes);
			blk64_t blk = a / bs, lim = b / bs, z, u;

			if (a >= b)
				continue;
			if (a == c && b == cend &&
			    ext2fs_test_block_bitmap_range2(fs->block_map, blk, (unsigned)(lim - blk))) {
				batch[nbatch++] = c / cs;
				if (nbatch == UNMAP_BATCH) {
					r = unmap_clusters(img, batch, nbatch, &st.clusters_discarded);
					nbatch = 0;
				}
				continue;
			}
			/* Free runs inside a partly used cluster (not a compressed
			 * one: punching it would mean rewriting it whole). */
			while (punch && ex.type == IMG_EXTENT_DATA && blk < lim && !r) {
				if (ext2fs_find_first_zero_block_bitmap2(fs->block_map, blk, lim - 1, &z))
					break;
				if (ext2fs_find_first_set_block_bitmap2(fs->block_map, z, lim - 1, &u))
					u = lim;
				r = punch_free(img, z * bs, u * bs, &st.bytes_punched);
				blk = u;
			}
		}
		off += ex.length;
	}
	if (nbatch) {
		int r2 = unmap_clusters(img, batch, nbatch, &st.clusters_discarded);
		if (!r)
			r = r2;
	}
	if (!r && (r = img_flush(img)) == 0 && (r = img_info(img, &ii)) == 0)
		st.disk_usage_after = ii.disk_usage;
out:
	free(batch);
	if (fs)
		ext2fs_close_free(&fs);
	if (stats)
		*stats = st;
	return r;
}

/* ====================================================================== */
/* A new UUID and label for ext2/3/4 (clones)                             */
/* ====================================================================== */

static int hexval(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
	       c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" into 16 bytes.  0 or -EINVAL. */
static int parse_uuid(const char *s, uint8_t out[16])
{
	size_t i, k = 0;

	if (strlen(s) != 36)
		return -EINVAL;
	for (i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return -EINVAL;
			continue;
		}
		if (hexval(s[i]) < 0 || hexval(s[i + 1]) < 0)
			return -EINVAL;
		out[k++] = (uint8_t)(hexval(s[i]) << 4 | hexval(s[i + 1]));
		i++;
	}
	return 0;
}

/*
 * What tune2fs -U and -L do, on the image's virtual disk.  The checksums
 * of metadata_csum filesystems are seeded by crc32c(UUID) unless the
 * metadata_csum_seed feature keeps the seed in the superblock: a filesystem
 * without it gets it (seed = the one in use), so no checksum but the
 * superblock's changes and nothing else is rewritten.  Group descriptor
 * checksums of uninit_bg/gdt_csum filesystems are a crc16 over the UUID:
 * recomputed (when they were valid).  The internal journal keeps its own
 * UUID (jbd2 checksums use it), as with tune2fs.
 */
IMG_API int img_fs_set_identity(struct img *img, const char *uuid, const char *label,
				unsigned flags)
{
	struct img_fs_info fi;
	ext2_filsys fs = NULL;
	uint8_t u[16];
	uint32_t state;
	errcode_t e;
	int r = 0, set_csum = 0;

	if (flags || (!uuid && !label) || (uuid && parse_uuid(uuid, u))) {
		imgi_set_error("%s: setting the filesystem identity: invalid arguments", img->name);
		return -EINVAL;
	}
	if (label && strlen(label) > EXT2_LABEL_LEN) {
		imgi_set_error("%s: an ext2/3/4 label has at most %d bytes, '%s' has %zu", img->name,
			      EXT2_LABEL_LEN, label, strlen(label));
		return -EINVAL;
	}
	if ((r = imgi_check_writable(img, IMG_CHANGE_CONTENT, "setting the filesystem identity")))
		return r;
	if ((r = img_fs_probe(img, &fi)))
		return r;
	if (!is_ext(fi.type)) {
		imgi_set_error("%s: setting the UUID or label here needs an ext2/3/4 filesystem, not %s",
			      img->name, fi.type);
		return -EOPNOTSUPP;
	}
	if ((e = imgi_ext2fs_open(img, EXT2_FLAG_RW, &fs)))
		return imgi_ext2fs_error(img->name, "opening the ext2/3/4 filesystem", e);
	state = ext_state(fs);
	if (state & (IMG_FS_STATE_NEEDS_RECOVERY | IMG_FS_STATE_ERRORS)) {
		r = -ENOTRECOVERABLE;
		imgi_set_error("%s: the %s filesystem %s: run e2fsck -f on it first", img->name, fi.type,
			      state & IMG_FS_STATE_NEEDS_RECOVERY ? "needs journal recovery (mounted, or not cleanly unmounted)" :
			      "has errors recorded");
		goto out;
	}
	if (uuid && ext2fs_has_feature_stable_inodes(fs->super)) {
		r = -EOPNOTSUPP;
		imgi_set_error("%s: the %s filesystem has the stable_inodes feature: its UUID cannot change",
			      img->name, fi.type);
		goto out;
	}
	if (uuid && ext2fs_has_feature_ea_inode(fs->super) &&
	    !ext2fs_has_feature_metadata_csum(fs->super)) {
		r = -EOPNOTSUPP;
		imgi_set_error("%s: the %s filesystem has ea_inode without metadata_csum: changing its UUID "
			      "would mean rewriting its extended attributes", img->name, fi.type);
		goto out;
	}
	if (uuid) {
		if (ext2fs_has_group_desc_csum(fs)) {
			dgrp_t g;
			for (g = 0; g < fs->group_desc_count; g++)
				if (!ext2fs_group_desc_csum_verify(fs, g))
					break;
			set_csum = g >= fs->group_desc_count;
		}
		if (ext2fs_has_feature_metadata_csum(fs->super) &&
		    !ext2fs_has_feature_csum_seed(fs->super)) {
			fs->super->s_checksum_seed = fs->csum_seed;
			ext2fs_set_feature_csum_seed(fs->super);
		}
		memcpy(fs->super->s_uuid, u, sizeof(u));
		ext2fs_init_csum_seed(fs);
		if (set_csum) {
			for (dgrp_t g = 0; g < fs->group_desc_count; g++)
				ext2fs_group_desc_csum_set(fs, g);
			fs->flags &= ~EXT2_FLAG_SUPER_ONLY;
		}
	}
	if (label) {
		memset(fs->super->s_volume_name, 0, sizeof(fs->super->s_volume_name));
		memcpy(fs->super->s_volume_name, label, strlen(label));
	}
	/* the backup superblocks too (e2fsck -b must not bring the old
	 * identity back) */
	fs->flags &= ~EXT2_FLAG_MASTER_SB_ONLY;
	ext2fs_mark_super_dirty(fs);
	e = ext2fs_close_free(&fs);
	if (e) {
		r = imgi_ext2fs_error(img->name, "writing the superblocks", e);
		goto out;
	}
	r = img_flush(img);
out:
	if (fs)
		ext2fs_close_free(&fs);
	return r;
}
