/* SPDX-License-Identifier: MIT */
/*
 * What the tests use of the library's inside (internal: in libimg.a, not
 * exported from the shared library).  The two test backends follow the
 * libimg I/O table (struct img_io_ops), so the image core runs on them
 * unchanged, the way SQLite's test VFSes do:
 *
 * Fault backend: wraps another backend and fails chosen calls.
 * Crash backend: an in-memory file that keeps writes that were not flushed
 * aside, so that a simulated power loss can keep, drop or tear each of them.
 *
 * Then the test hooks: imgi_io_wrap_set (a wrapper around every image file
 * opened by path: how LIBIMG_FAULT reaches the tools built for
 * tests/cli/faults.bats), backing chains on I/O backends
 * (imgi_create_io_over, imgi_open_io_over) and the path operations
 * (imgi_vfs_set: a directory in memory).
 */
#ifndef LIBIMG_TESTIO_H
#define LIBIMG_TESTIO_H

#include <stdint.h>
#include <stddef.h>

#include "libimg.h"

/* ---------------------------------------------------------------------- */
/* Fault injection                                                          */
/* ---------------------------------------------------------------------- */

/* Call classes, for op_mask. */
#define IMG_FAULT_READ     0x01u
#define IMG_FAULT_WRITE    0x02u
#define IMG_FAULT_FLUSH    0x04u
#define IMG_FAULT_PUNCH    0x08u
#define IMG_FAULT_TRUNCATE 0x10u
#define IMG_FAULT_MUTATING (IMG_FAULT_WRITE | IMG_FAULT_FLUSH | IMG_FAULT_PUNCH | IMG_FAULT_TRUNCATE)
#define IMG_FAULT_ANY      (IMG_FAULT_READ | IMG_FAULT_MUTATING)

/* Flags for imgi_io_fault_arm. */
#define IMG_FAULT_STICKY   0x1u  /* every later matching call fails too */
#define IMG_FAULT_PARTIAL  0x2u  /* a failing write first writes its first
                                  * half (rounded down to 512 bytes), like a
                                  * short write that ran out of space */
#define IMG_FAULT_DROP     0x4u  /* a failed flush loses every write, punch
                                  * and truncate since the last successful
                                  * flush, as Linux drops the pages whose
                                  * writeback failed: the inner file goes
                                  * back to what that flush made durable.
                                  * Changes are kept from the first arm with
                                  * this flag (arm with op_mask 0 to start
                                  * keeping them before the fault is armed);
                                  * arming without it forgets them */

/* Wraps inner and takes ownership of it (closed with the wrapper).  Not
 * armed: every call passes through.  The wrapper has usage, lock,
 * seek_data, advise and read_direct only where inner has them (each
 * request of read_direct counts as a read; batch goes through pread). */
int imgi_io_fault_new(struct img_io *inner, struct img_io **out);
/* From now on, the nth call (1-based) matching op_mask fails with -err
 * without reaching inner; with IMG_FAULT_STICKY so does every matching call
 * after it.  Resets the counters.  op_mask 0 disarms (calls still counted). */
void imgi_io_fault_arm(struct img_io *io, unsigned op_mask, uint64_t nth, int err,
		      unsigned flags);
/* Calls matching the armed op_mask since the last arm (all calls when
 * op_mask is 0). */
uint64_t imgi_io_fault_calls(struct img_io *io);
/* How many calls were failed since the last arm. */
uint64_t imgi_io_fault_fired(struct img_io *io);
/* The classes (IMG_FAULT_READ, ...) of the calls failed since the last arm. */
unsigned imgi_io_fault_fired_ops(struct img_io *io);
/* IMG_FAULT_DROP: changes dropped by failed flushes since the last arm. */
uint64_t imgi_io_fault_dropped(struct img_io *io);

/* Every image file the path-based calls create or open (the backend of
 * img_create's new file, and of each image img_open opens by path, the
 * backing chain included) goes through wrap, which returns it or a
 * backend wrapping it (taking ownership) in *out, or fails with -errno
 * leaving inner the caller's.  NULL (the default) opens them as they are.
 * A test hook: the library never sets one; the tools built for
 * tests/cli/faults.bats set imgi_io_fault_from_env (tests/helpers/fault_env.h)
 * at start-up.  Not thread-safe: set it before opening anything. */
void imgi_io_wrap_set(int (*wrap)(struct img_io *inner, struct img_io **out));

/* ---------------------------------------------------------------------- */
/* Crash simulation                                                         */
/* ---------------------------------------------------------------------- */

/* A memory file starting with init/len (copied; durable).  Writes, punches
 * and truncates are applied at once for reads and also queued as pending;
 * flush makes every pending operation durable.  .lock, .usage, .seek_data,
 * .advise and .read_direct are NULL (io.c's fallbacks: reads through
 * pread, which counts the crash). */
int imgi_io_crash_new(const void *init, size_t len, struct img_io **out);
/* A clock shared by several crash backends (and whatever else counts as a
 * mutating call, like a test's directory operations): power is lost for
 * all of them at once.  Single-threaded use only. */
struct imgi_crash_clock {
	uint64_t events, arm_at;
	int crashed;
};
/* imgi_io_crash_new counting its calls on clk (NULL: its own clock). */
int imgi_io_crash_new_clocked(const void *init, size_t len, struct imgi_crash_clock *clk,
			     struct img_io **out);
/* Counts one mutating call on clk: 0; -ECANCELED when it is the armed one
 * (power is lost during it: it may or may not have happened); -EIO after. */
int imgi_crash_clock_tick(struct imgi_crash_clock *clk);
/* Power is lost at the nth mutating call (write, flush, punch, truncate;
 * 1-based, counted from creation): that call is queued as pending when it
 * is a write, punch or truncate (it may have reached the disk), and it and
 * every later call, reads included, fail with -EIO.  0 disarms. */
void imgi_io_crash_arm(struct img_io *io, uint64_t n);
/* Mutating calls seen so far (including the one that lost power). */
uint64_t imgi_io_crash_events(struct img_io *io);
/* 1 once power was lost. */
int imgi_io_crash_crashed(struct img_io *io);
/* Operations still pending (not flushed). */
size_t imgi_io_crash_pending(struct img_io *io);

/* What happens to each pending operation at materialization. */
enum imgi_crash_mode {
	IMG_CRASH_DROP_ALL = 0,   /* only what was flushed survives */
	IMG_CRASH_KEEP_ALL = 1,   /* everything survives */
	IMG_CRASH_RANDOM = 2,     /* each operation independently kept,
	                           * dropped, or (writes and punches) torn at
	                           * 512-byte granularity, from seed */
};

/* A new memory backend (img_io_mem_new) holding the durable contents with
 * the pending operations applied in order as mode says.  The crash backend
 * is unchanged, so this may be called many times with different seeds.
 * stats (may be NULL) counts the choices made. */
struct imgi_crash_stats {
	uint64_t kept, dropped, torn;
};
int imgi_io_crash_materialize(struct img_io *io, enum imgi_crash_mode mode, uint64_t seed,
			     struct imgi_crash_stats *stats, struct img_io **out);

/* ---------------------------------------------------------------------- */
/* Backing chains on I/O backends (tests: the crash test's deltas)         */
/* ---------------------------------------------------------------------- */

/* img_create_io of a delta over the open image backing (opts->backing_file
 * is the reference written; nothing is resolved).  backing stays the
 * caller's. */
int imgi_create_io_over(struct img_io *io, const struct img_create_opts *opts, struct img *backing);
/* img_open_io of a delta with backing (open, read-only) as its backing
 * image: takes ownership of backing (closed with the delta, or on
 * failure). */
int imgi_open_io_over(struct img_io *io, unsigned flags, struct img *backing, struct img **out);

/* ---------------------------------------------------------------------- */
/* Path operations (tests: a directory in memory)                          */
/* ---------------------------------------------------------------------- */

/* Routes the file and directory operations of every path-based call
 * (struct imgi_vfs, internal.h) through vfs; NULL restores POSIX.  Not
 * thread-safe: set it before opening anything. */
struct imgi_vfs;
void imgi_vfs_set(const struct imgi_vfs *vfs);

#endif
