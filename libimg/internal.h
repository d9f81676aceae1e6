/* SPDX-License-Identifier: MIT */
/* Internal declarations shared by the library's modules. */
#ifndef LIBIMG_INTERNAL_H
#define LIBIMG_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "libimg.h"
#include "format.h"

#define IMG_API __attribute__((visibility("default")))

/* error.c: the per-thread message behind img_last_error(). */
void img_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void img_clear_error(void);
/* lock.c: the pid holding a conflicting lock on fd's file, or 0. */
pid_t img_lock_holder_from_proc(int fd);

#endif
