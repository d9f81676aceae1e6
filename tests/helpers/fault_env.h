/* SPDX-License-Identifier: MIT */
/*
 * LIBIMG_FAULT: the fault backend (libimg/testio.h) armed from the
 * environment.  Test code only: the library never reads the variable.  A
 * program that wants it sets the hook, imgi_io_wrap_set(imgi_io_fault_from_env),
 * before it opens anything; the tools built for tests/cli/faults.bats
 * ($(BUILD)/faultbin, tests/faultbin/fault_on.c) do it at start-up.
 */
#ifndef LIBIMG_TESTS_FAULT_ENV_H
#define LIBIMG_TESTS_FAULT_ENV_H

#include "testio.h"

/*
 * LIBIMG_FAULT="op:N:ERRNO[,sticky][,partial][,drop]" in the environment, where op
 * is read|write|flush|punch|truncate|mutating|any, N >= 1 and ERRNO a name
 * (EIO, ENOSPC, EDQUOT, EROFS, ENOMEM, EFBIG) or a number: wraps inner in a
 * fault backend armed that way (taking ownership of inner) and stores it in
 * *out.  Unset or empty: *out = inner.  A malformed value: -EINVAL, a
 * message in img_last_error(), and inner still belongs to the caller.
 * Fits imgi_io_wrap_set.
 */
int imgi_io_fault_from_env(struct img_io *inner, struct img_io **out);

#endif
