/* SPDX-License-Identifier: MIT */
/*
 * libext2fs over an open image (libimg/fs.c).  Internal: the public API
 * does not expose libext2fs types; unit tests and the library use this.
 */
#ifndef LIBIMG_FS_EXT2_H
#define LIBIMG_FS_EXT2_H

#include <ext2fs/ext2fs.h>

#include "libimg.h"

/* The io_manager whose channels read and write the virtual disk of an
 * image.  Its open() takes the image from imgi_ext2fs_open(), not from the
 * name, so use that rather than passing the manager to ext2fs_open2(). */
extern struct struct_io_manager imgi_ext2_io_manager;

/* ext2fs_open2() on the filesystem at offset 0 of img's virtual disk.
 * ext2_flags: EXT2_FLAG_* (EXT2_FLAG_RW to write; EXT2_FLAG_64BITS is
 * always added).  Returns 0 or a libext2fs/errno error code (EFBIG, before
 * libext2fs reads anything: the superblock claims a filesystem bigger than
 * the virtual disk); the image stays owned by the caller and must outlive
 * the filesystem handle. */
errcode_t imgi_ext2fs_open(struct img *img, int ext2_flags, ext2_filsys *out);

/* A negative errno for a libext2fs error code, with a message through
 * imgi_set_error() that starts with name and what ("reading the block
 * bitmaps"). */
int imgi_ext2fs_error(const char *name, const char *what, errcode_t code);

#endif
