/* SPDX-License-Identifier: MIT */
/* Error texts: img_strerror(), and the per-thread error state the library
 * sets (imgi_set_error, imgi_set_chain_error, imgi_set_holder) and the caller
 * reads (img_last_error, img_last_chain_error, img_last_holder). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static _Thread_local char last_error[512];
static _Thread_local int last_chain_error;
static _Thread_local pid_t last_holder;

void imgi_set_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
}

void imgi_clear_error(void)
{
	last_error[0] = 0;
	last_holder = 0;
}

IMG_API const char *img_last_error(void)
{
	return last_error;
}

void imgi_set_chain_error(int err)
{
	last_chain_error = err;
}

IMG_API int img_last_chain_error(void)
{
	return last_chain_error;
}

void imgi_set_holder(pid_t pid)
{
	last_holder = pid;
}

IMG_API pid_t img_last_holder(void)
{
	return last_holder;
}

IMG_API const char *img_strerror(int err)
{
	switch (-err) {
	case 0:          return "success";
	case EUCLEAN:    return "image is corrupt";
	case EOPNOTSUPP: return "image uses an unsupported feature";
	case EROFS:      return "image is read-only";
	case EBUSY:      return "image is locked by another process";
	case ENOTEMPTY:  return "clusters past the new end hold data";
	case ECANCELED:  return "operation cancelled";
	case EMEDIUMTYPE: return "not a libimg image";
	case ENOMEDIUM:  return "no filesystem recognised in the image";
	case ENOTRECOVERABLE: return "the filesystem in the image needs checking (fsck)";
	default:         return strerror(-err);
	}
}
