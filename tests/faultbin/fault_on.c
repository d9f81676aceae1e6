/* SPDX-License-Identifier: MIT */
/*
 * Linked into the tools built for tests/cli/faults.bats ($(BUILD)/faultbin,
 * the same programs as $(BUILD)/bin): sets the library's test hook at
 * start-up so that LIBIMG_FAULT (tests/helpers/fault_env.h) injects I/O
 * faults into every image file the tool opens.  The installed tools and
 * library do not have it and ignore the variable.
 */
#include "testio.h"
#include "../helpers/fault_env.h"

__attribute__((constructor)) static void fault_on(void)
{
	imgi_io_wrap_set(imgi_io_fault_from_env);
}
