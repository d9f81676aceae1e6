/* SPDX-License-Identifier: MIT */
/* A non-owning view of an I/O backend: every call goes to inner, and close
 * frees only the view.  For handing a backend to img_open_io() (which takes
 * ownership) while the test keeps using it after img_close(). */
#ifndef TESTS_IOBORROW_H
#define TESTS_IOBORROW_H

#include "libimg.h"

/* NULL when out of memory. */
struct img_io *io_borrow(struct img_io *inner);

#endif
