/* SPDX-License-Identifier: MIT */
/*
 * Internal declarations shared by the library's modules.
 *
 * Locking (an image handle is used by many threads at once):
 *   map_lock (rwlock, writer-preferring)
 *       held shared by every data I/O (pread/pwrite/partial discard) for the
 *       whole time it uses a host cluster it looked up; held exclusive by
 *       anything that takes a host cluster away from a virtual cluster while
 *       I/O may be running (discard, write_zeroes, relocation, resize).  So a
 *       reader never reads a cluster that was remapped under it.
 *   meta_lock (mutex)
 *       protects the BAT array's writers, the dirty-block bitmap, the
 *       allocator and the pending-free list.  Entries are read without it
 *       (atomic loads); they are stored with atomic stores under it.
 *   commit_lock (mutex)
 *       serialises commits, checkpoints and header writes (journal.c).
 * Order: map_lock -> commit_lock -> meta_lock.  Never the reverse.
 */
#ifndef LIBIMG_INTERNAL_H
#define LIBIMG_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "libimg.h"
#include "format.h"

#define IMG_API __attribute__((visibility("default")))

/* A problem found when opening with IMG_OPEN_CHECK. */
enum imgi_problem_kind {
	P_HEADER_COPY,    /* one header copy invalid (info; rewritten on repair) */
	P_BAD_BLOCK,      /* BAT block unreadable: its entries are unknown */
	P_BAD_ENTRY,      /* entry invalid: cleared in memory; repair commits that */
	P_PAST_VSIZE,     /* non-zero entry past the virtual size: cleared */
	P_DUPLICATE,      /* entry maps a host cluster another entry maps */
	P_PAST_EOF,       /* entry maps past the end of the file: the file was
	                   * cut; cleared in memory, never by a repair */
};

struct imgi_problem {
	enum imgi_problem_kind kind;
	uint64_t v;           /* virtual cluster (or block index for P_BAD_BLOCK) */
	uint64_t h;           /* host cluster for P_DUPLICATE */
	char msg[160];
};

/* Compressed entries per host cluster (compress.c, only through cref_*):
 * a window of counts while the host clusters holding payloads fill it
 * densely, else an open-addressing table of those clusters alone; memory
 * follows the host clusters that hold payloads, never the file's length
 * (FORMAT.md 2). */
struct cref {
	uint32_t *cnt;              /* dense: counts of host clusters [base, base + len) */
	uint64_t base, len;
	uint64_t *slot;             /* table: h << 32 | count; 0 is an empty slot */
	uint64_t cap;               /* slots (a power of two); 0 while dense */
	uint64_t hosts;             /* host clusters with a non-zero count */
};

struct img {
	struct img_io *io;
	char *name;
	unsigned flags;
	int rdonly;

	struct imgi_header hdr;      /* the header in force (durable); commit_lock */
	struct imgi_geom g;          /* changes only under map_lock exclusive */
	uint64_t vsize;             /* virtual size: as g, for the data path */
	int hdr_slot;               /* slot holding hdr: 0 (A) or 1 (B) */
	int hdr_unsure;             /* a header commit failed after its write: the
	                             * other slot may hold a header this handle
	                             * does not use; rewritten before the next
	                             * flush can make it durable (journal.c) */

	/* BAT: g.vclusters live entries, array sized bat_alloc (whole blocks) */
	uint64_t *bat;
	uint64_t bat_alloc;
	uint64_t *dirty;            /* bit per BAT block */
	uint64_t ndirty;

	/* allocator (alloc.c): bit per host cluster, 1 = metadata or mapped */
	uint64_t *used;
	uint64_t used_bits;         /* bitmap capacity */
	uint64_t hint;              /* no free cluster below this */
	uint64_t nalloc, nzero;
	uint64_t *pending;          /* freed, waiting for the commit */
	size_t npending, pending_cap;

	/* journal (journal.c) */
	uint64_t log_pos;           /* next log block */
	uint64_t log_limit;         /* blocks of the log we use */
	uint64_t next_seq;          /* sequence of the next transaction */
	uint8_t *logbuf;            /* log blocks [0, log_pos) as written */

	pthread_rwlock_t map_lock;
	pthread_mutex_t meta_lock;
	pthread_mutex_t commit_lock;

	unsigned io_engine;         /* IMG_IO_ENGINE_*, set by img_open */
	unsigned io_open_flags;     /* IMG_OPEN_NO_WRITE_BEHIND as img_open got it */
	int io_uring_error;         /* why io_uring was refused, or 0 */
	int can_punch;
	int was_dirty;
	int failed;                 /* a sync failed: the -errno it returned;
	                             * the handle refuses every later change
	                             * and flush with -EIO (imgi_check_writable,
	                             * imgi_sync); atomic */
	int corrupt;
	int bad_blocks;
	uint64_t *bad_map;          /* at open: BAT blocks that failed to decode */
	uint64_t *blk_seen;         /* at open: BAT blocks loaded with entries (the
	                             * rest of the array is untouched zeros) */
	uint64_t *spare_logged;     /* at open: blocks past the live BAT that the
	                             * replayed log rewrote (checked zero there) */
	uint64_t *spare_mapped;     /* during the replay: of those, the ones whose
	                             * last payload so far holds a non-zero entry */
	struct imgi_problem *problems;
	size_t nproblems;
	uint64_t problems_dropped;  /* found at open past the cap (or without
	                             * memory) and not recorded: the check is
	                             * incomplete and repair is refused */
	uint64_t log_replayed;
	uint64_t leaked_at_open;

	/* compressed clusters (FORMAT.md 4.2, compress.c); meta_lock */
	struct cref cref;           /* per host cluster: compressed entries in it */
	uint64_t ncomp;             /* entries in state 3 */
	uint64_t pack_h;            /* host cluster being filled with payloads */
	uint64_t pack_next;         /* its next free sector (within the cluster) */
	int pack_valid;

	/* backing chain (FORMAT.md 3.1) */
	struct img *backing;        /* read-only, or NULL */
	char *dir;                  /* directory backing references resolve in */
	unsigned depth;             /* images below this one */
	int delta;                  /* the header has IMG_INCOMPAT_BACKING */
};

/* A delta whose backing is open: its unallocated clusters read from it. */
#define IMG_SHOWS_BACKING(img) ((img)->backing != NULL)

/* error.c */
void imgi_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void imgi_clear_error(void);
/* What img_last_chain_error() returns: set by img_open. */
void imgi_set_chain_error(int err);
/* The lock holder named by the last -EBUSY (img_last_holder); 0 unknown. */
void imgi_set_holder(pid_t pid);
/* lock.c: the pid holding a conflicting lock on fd's file, or 0. */
pid_t imgi_lock_holder_from_proc(int fd);

/* journal.c: write the header nh to the other slot (seq + 1) and sync. */
int imgi_header_commit(struct img *img, struct imgi_header *nh); /* commit_lock held */

/* image.c */
/* The header in force of the image at path (FORMAT.md 3, "Choosing a
 * copy"), read through imgi_vfs without opening the image (no lock, no BAT,
 * no chain): 0, or -errno with the message set (-EMEDIUMTYPE not an
 * image, -EUCLEAN no valid copy, -EOPNOTSUPP from a newer writer). */
int imgi_read_header(const char *path, struct imgi_header *h);
/* FORMAT.md 3.2: a file whose mode has no write bit is protected (a
 * snapshot, a base made read-only): no tool opens it for writing or
 * replaces it, root included, and a merge writes it only when it is the
 * delta's own snapshot.  The one rule, for every caller (the tools through
 * img_file_readonly). */
int imgi_mode_protected(mode_t mode);
int imgi_reclaim_free(struct img *img);    /* punch free clusters below EOF */

/* util.c: the handle utilities, down to imgi_check_failed. */
uint64_t imgi_file_size(struct img *img);
/* Make [off, off+len) of the host file read as zeros: punch, or write zeros
 * where the host cannot punch. */
int imgi_zero_host(struct img *img, uint64_t off, uint64_t len);
int imgi_fail(struct img *img, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The sparse cluster write, the one rule for writing into free host
 * clusters (copy-up, relocation, compaction, repair): a free cluster reads
 * as zeros, so of len bytes of buf going to host_off only the runs of
 * 4 KiB blocks (aligned to buf) that are not all zeros are written, and
 * when that is nothing and host_off is at or past the end of the file, one
 * zero byte at host_off (a mapped cluster starts inside the file, FORMAT.md
 * 4.1).  imgi_sparse_reqs stores those writes into rq (room for
 * IMG_SPARSE_MAX_REQS(len)) and returns their number, for a caller that
 * batches them (img_io_batch); imgi_write_sparse makes them, one after
 * another (0 or -errno, no message). */
#define IMG_SPARSE_MAX_REQS(len) ((size_t)((len) / 8192) + 2)
size_t imgi_sparse_reqs(struct img *img, const uint8_t *buf, uint64_t len, uint64_t host_off,
		       struct img_io_req *rq);
int imgi_write_sparse(struct img *img, const uint8_t *buf, uint64_t len, uint64_t host_off);

/* The one rule for "may this handle change the image" (util.c).  0, or
 * -errno with a message naming doing ("writing", "resizing", ...):
 *   -EROFS    opened read-only;
 *   -EIO      an earlier sync failed (the handle is failed until reopened,
 *             see imgi_sync);
 *   -EUCLEAN  the image is corrupt (repair first);
 *   -EROFS    IMG_CHANGE_CONTENT on a delta whose backing chain is not open
 *             (IMG_OPEN_NO_BACKING): what the disk shows depends on the
 *             backing image, which this handle cannot read.
 * IMG_CHANGE_CONTENT: the change alters or moves what the virtual disk
 * shows (data writes, discard, write-zeroes, compressed writes, compact,
 * resize, filesystem trim, live snapshot/merge, a safe rebase).
 * IMG_CHANGE_HEADER: a header-only change that keeps the delta's own
 * clusters as they are (an unsafe rebase, img_set_backing with
 * IMG_BACKING_UNSAFE, a template mark): allowed without the backing chain.
 * IMG_CHANGE_REPAIR: img_check's repair, which works on corrupt images and
 * on a delta without its chain (its own metadata only): read-only and a
 * failed sync refuse it.
 * imgi_check_changeable is the same rule but for the open mode: whether
 * the image could be changed through a handle opened for writing, asked on
 * a read-only handle before an operation opens it again for writing (a
 * refusal then touches nothing, not even the header). */
enum imgi_change { IMG_CHANGE_CONTENT, IMG_CHANGE_HEADER, IMG_CHANGE_REPAIR };
int imgi_check_writable(struct img *img, enum imgi_change what, const char *doing);
int imgi_check_changeable(struct img *img, enum imgi_change what, const char *doing);
/* Sync the host file (what: "syncing data", ...).  A failed sync is
 * sticky (FORMAT.md 6, rule 10): the kernel may have dropped the pages it
 * could not write, so nothing written since the last successful sync is
 * known to be on the disk, and a later sync that succeeds proves nothing.
 * The handle records the failure (img->failed) and every later sync,
 * commit, header write and change fails with -EIO; img_close returns -EIO
 * without committing; reads still work.  Reopening recovers (replay and
 * leak reclaim).  Returns 0, the sync's -errno, or -EIO when already
 * failed. */
int imgi_sync(struct img *img, const char *what);
/* -EIO with a message if a sync of img failed earlier, else 0. */
int imgi_check_failed(struct img *img);

/* image.c: open (read-only, shared lock, with its chain) the image that
 * backing reference ref names, resolved in img's directory; the loop check
 * counts img.  For img_set_backing. */
int imgi_open_ref(struct img *img, const char *ref, unsigned flags, struct img **out);
/* image.c: check a backing reference against the rules of FORMAT.md 3.1
 * (absolute, "..", empty, NUL, length).  0 or -EPERM/-EINVAL with a
 * message. */
int imgi_check_backing_ref(const char *owner, const char *ref, int allow);

/* image.c: create path (atomically, as img_create) as a delta over the
 * image backing, already open (opts->backing_file is its reference), or a
 * standalone image when backing is NULL. */
int imgi_create_over(const char *path, const struct img_create_opts *opts, struct img *backing);
/* imgi_create_over with the new file's mode (0: 0666 & ~umask). */
int imgi_create_over_mode(const char *path, const struct img_create_opts *opts,
			 struct img *backing, mode_t mode);
/* imgi_create_over_mode with compat feature bits set in the new header
 * (IMG_COMPAT_OWN_SNAPSHOT: the snapshot's new top). */
int imgi_create_over_ext(const char *path, const struct img_create_opts *opts,
			struct img *backing, mode_t mode, uint64_t compat);
/* Internal open flag: with IMG_OPEN_RDWR, open a template (FORMAT.md 3.2)
 * for writing, to set or clear the mark (img_set_template only).  The
 * public img_open refuses it. */
#define IMG_OPEN_TEMPLATE_ 0x40000000u
/* img_open that also takes the internal flags above. */
int imgi_open_internal(const char *path, unsigned flags, struct img **out);
/* ref resolved in img's directory (malloc'd), NULL without a directory. */
char *imgi_resolve_ref(struct img *img, const char *ref);

/* vfs.c: the file and directory operations of path-based calls; 0 or
 * -errno each.  POSIX unless a test installed another (imgi_vfs_set). */
struct stat;
struct imgi_vfs {
	int (*stat)(const char *path, struct stat *st);
	/* an existing file (IMG_IO_RDONLY or 0) */
	int (*open)(const char *path, unsigned ioflags, struct img_io **out);
	/* an existing file rel beneath the directory root, never leaving it
	 * (imgi_io_posix_open_beneath); name for messages.  NULL: backing
	 * references are checked by their text only (FORMAT.md 3.1) */
	int (*open_beneath)(const char *root, const char *rel, const char *name,
			    unsigned ioflags, struct img_io **out);
	/* a new empty file from a template ending in XXXXXX (filled in) */
	int (*mktemp)(char *tmpl, mode_t mode);
	int (*link)(const char *from, const char *to);
	int (*rename)(const char *from, const char *to, int noreplace);
	int (*unlink)(const char *path);
	int (*chmod)(const char *path, mode_t mode);
	int (*sync_dir)(const char *dir);   /* names in dir made durable */
	/* path, an existing file about to be replaced (img_target_claim):
	 * *st receives what it is, without following a symlink.  A regular
	 * file is opened without blocking and locked exclusively (when it
	 * cannot be opened for writing, with a shared lock and only when no
	 * other process holds any): *fd, released by close(); -EBUSY with
	 * *holder (0: unknown) when another process holds a lock.  Anything
	 * else is not opened (*fd -1).  -ENOENT: nothing there.  NULL (a vfs
	 * without locks): the create path uses stat and locks nothing. */
	int (*claim)(const char *path, struct stat *st, int *fd, pid_t *holder);
	/* what path is, without following a symlink.  NULL: a vfs without
	 * symlinks */
	int (*lstat)(const char *path, struct stat *st);
	/* an existing file opened through io_uring (IMG_OPEN_IO_URING or
	 * LIBIMG_IO=uring): path when root is NULL, else rel beneath root as
	 * open_beneath.  -ENOSYS, -EPERM, -ENOMEM, -EACCES, -EOPNOTSUPP or
	 * -EINVAL: the kernel refused the ring (open is used instead).  NULL:
	 * a vfs without io_uring, open is used */
	int (*open_uring)(const char *root, const char *rel, const char *path,
			  unsigned ioflags, struct img_io **out);
	/* 0 when this process may create names in dir, else -errno.  NULL: a
	 * vfs without permissions, every directory is writable */
	int (*dir_writable)(const char *dir);
	/* *bytes: the space an unprivileged writer has left in dir's
	 * filesystem.  NULL or an error: unknown, and not checked */
	int (*space_free)(const char *dir, uint64_t *bytes);
};
extern const struct imgi_vfs *imgi_vfs;
extern const struct imgi_vfs imgi_vfs_posix;
/* The backend of an image file just opened by path, or the test hook's
 * wrapper around it (testio.h imgi_io_wrap_set; none unless a test set
 * one).  On failure inner is still the caller's. */
int imgi_io_wrap(struct img_io *inner, struct img_io **out);

/* rw.c: reading through the backing chain, the one rule: what an image
 * over the backing image b shows at [off, off+len) where it holds no
 * cluster of its own: b's bytes (through b's own chain) below b's virtual
 * size, zeros at and past it, and zeros everywhere when b is NULL (no
 * backing).  0 or -errno (b's message). */
int imgi_read_through(struct img *b, uint8_t *buf, uint64_t len, uint64_t off);
/* rw.c: allocate unallocated cluster v of a delta with the backing
 * image's bytes up to the virtual size (the rest reads zero).  map_lock
 * held. */
int imgi_copy_up(struct img *img, uint64_t v);

/* compress.c */
/* Read and decompress compressed entry e (of virtual cluster v) into out
 * (cluster_size bytes).  -EUCLEAN with a message on a bad payload. */
int comp_read(struct img *img, uint64_t v, uint64_t e, uint8_t *out);
/* Buffers comp_read_run keeps between calls (all-zero to start). */
struct comp_scratch {
	uint8_t *payload;
	uint64_t payload_cap;
	uint8_t *cluster;
};
void comp_scratch_free(struct comp_scratch *s);
/* Reads [pos, end) (pos in a compressed cluster, end <= the virtual size)
 * into out from that cluster and the compressed ones after it whose
 * payloads follow it on the host, with one read of the payloads (up to
 * 1 MiB); whole clusters are decompressed straight into out.  *done: the
 * bytes produced (at least up to the end of pos's cluster or end).
 * map_lock held. */
int comp_read_run(struct img *img, uint64_t pos, uint64_t end, uint8_t *out, uint64_t *done,
		  struct comp_scratch *s);
/* Count a compressed entry pointing into its host cluster (meta_lock). */
int comp_ref(struct img *img, uint64_t e);
/* The counts (meta_lock held, or no I/O running): cref_get is 0 for a host
 * cluster holding no counted payload; cref_init empties the counts and
 * sizes them for `hosts` host clusters within [lo, hi] (open; a hint);
 * cref_hosts is the number of host clusters with a count. */
uint32_t cref_get(const struct img *img, uint64_t h);
int cref_init(struct img *img, uint64_t lo, uint64_t hi, uint64_t hosts);
uint64_t cref_hosts(const struct img *img);
void cref_free(struct img *img);
/* Release what entry e holds (meta_lock held): an allocated cluster goes
 * to the pending list; a compressed payload drops its host cluster's count,
 * and the cluster goes to the pending list when nothing points into it. */
int imgi_release_entry(struct img *img, uint64_t e);
/* Store data (cluster_size bytes) as compressed cluster v when that saves
 * a sector: 1 stored, 0 not worth it (nothing changed), -errno.  The old
 * entry is released.  map_lock held exclusive. */
int comp_store(struct img *img, uint64_t v, const uint8_t *data);
/* Copy compressed cluster v's payload (bytes as they are) into the
 * packing cluster, or a new one at or above host cluster min_h (and below
 * max_h unless 0: else returns 1, nothing done), then remap and release the
 * old sectors (relocation, FORMAT.md 6 rule 5: the commit syncs the copy
 * before the entry).  map_lock exclusive. */
int comp_move(struct img *img, uint64_t v, uint64_t min_h, uint64_t max_h);
/* Where the host file may end: past the last used cluster, or past the
 * last payload when that cluster holds compressed payloads. */
uint64_t imgi_used_end(struct img *img);
/* Host cluster of a compressed entry. */
#define COMP_HOST(img, e) ((IMG_C_SECTOR(e) * 512) >> (img)->g.cluster_bits)

/* bat.c */
static inline uint64_t bat_get(const struct img *img, uint64_t v)
{
	return __atomic_load_n(&img->bat[v], __ATOMIC_ACQUIRE);
}
void bat_set(struct img *img, uint64_t v, uint64_t e);     /* meta_lock held */
/* The BAT dirty bit (meta_lock held): BAT block blk changed since the last
 * commit (bat_set marks it; repair and a failed commit mark blocks
 * themselves).  bat_take_dirty stores the dirty blocks in ascending order
 * into blocks (room for img->ndirty), clears every bit and returns their
 * number. */
void bat_mark_dirty(struct img *img, uint64_t blk);
/* The delta discard rule, for every path that drops a cluster's contents
 * (img_discard, compaction of an all-zero cluster, filesystem trim): the
 * entry it gets, unallocated in a standalone image, "zero" in a delta
 * (unallocated would let the backing image show through again, FORMAT.md
 * 3.1). */
uint64_t bat_dropped(const struct img *img);
uint64_t bat_take_dirty(struct img *img, uint64_t *blocks);
int bat_resize_array(struct img *img, uint64_t entries);   /* map_lock excl */
int bat_load_blocks(struct img *img, uint64_t first, uint64_t count, uint64_t *bad);
void bat_free_array(struct img *img);
/* Zeroed memory; large areas are mapped, aligned for huge pages (bat.c). */
void *imgi_big_alloc(size_t len);
void imgi_big_free(void *p);

/* Read a counter that meta_lock protects. */
static inline uint64_t imgi_locked_read(struct img *img, const void *field, int size_t_field)
{
	uint64_t v;
	pthread_mutex_lock(&img->meta_lock);
	v = size_t_field ? (uint64_t)*(const size_t *)field : *(const uint64_t *)field;
	pthread_mutex_unlock(&img->meta_lock);
	return v;
}
#define IMG_NPENDING(img) imgi_locked_read((img), &(img)->npending, 1)
#define IMG_NALLOC(img)   imgi_locked_read((img), &(img)->nalloc, 0)

/* alloc.c (meta_lock held) */
int alloc_init(struct img *img, uint64_t nbits);
int alloc_mark(struct img *img, uint64_t h);              /* mark used */
void alloc_unmark(struct img *img, uint64_t h);           /* free now */
int alloc_test(const struct img *img, uint64_t h);
int alloc_get(struct img *img, uint64_t min, uint64_t *h); /* lowest free >= min */
int alloc_defer_free(struct img *img, uint64_t h);        /* after next commit */
uint64_t alloc_last_used(const struct img *img);          /* highest used + 1 */
/* Bits to size the bitmap with at open for a file of file_clusters
 * clusters: the metadata and one per BAT entry, at most the file. */
uint64_t alloc_initial_bits(const struct img *img, uint64_t file_clusters);
/* The first free (used) cluster in [h, end), or end; a word at a time.
 * Clusters past the bitmap are free. */
uint64_t alloc_next_free(const struct img *img, uint64_t h, uint64_t end);
uint64_t alloc_next_used(const struct img *img, uint64_t h, uint64_t end);
/* Free clusters in [lo, hi), run by run. */
uint64_t alloc_count_free(const struct img *img, uint64_t lo, uint64_t hi);
/* Open's fast path: walk entries e[0..n), skipping zero ones and marking
 * the host cluster of each allocated entry that maps one in [lo, hi) not
 * marked yet; stop at the first other entry (any other state, out of
 * range, or a cluster already marked: a duplicate), which the caller
 * checks in full.  Returns the entries walked; *marked: clusters marked. */
size_t alloc_mark_entries(struct img *img, const uint64_t *e, size_t n, uint64_t lo,
			  uint64_t hi, uint64_t *marked);
/* Give back (punch, mark free) a cluster that was reserved but never mapped.
 * Called without meta_lock. */
void alloc_release_unmapped(struct img *img, uint64_t h);

/* io_posix.c: count one write of len bytes on fd (writes under 64 KiB do
 * not count); every 32 MiB counted, start the write-out of the file's
 * dirty pages without waiting (write-behind, a hint). */
void imgi_io_write_behind(int fd, uint64_t *counter, uint64_t len);

/* io_posix.c: a posix backend on the existing file rel beneath the
 * directory root (a canonical path), opened without leaving root, even
 * through a symbolic link (openat2 RESOLVE_BENEATH; without openat2, the
 * file found is checked to be beneath root): -EPERM with a message
 * otherwise.  name is what messages and io->name call the file.  Regular
 * files only, as img_io_posix_open.  io_uring.c: the same for io_uring. */
int imgi_io_posix_open_beneath(const char *root, const char *rel, const char *name,
			      unsigned flags, struct img_io **out);
int imgi_io_uring_open_beneath(const char *root, const char *rel, const char *name,
			      unsigned flags, struct img_io **out);

/* io_posix.c: what a file of type m (st_mode) is, for messages ("a FIFO",
 * "a block device", ...). */
const char *imgi_file_kind(mode_t m);

/* io_posix.c: the descriptor of a posix backend. */
int imgi_io_posix_fd(struct img_io *io);
/* io.c: the first byte of data at or after off (SEEK_DATA) in the file
 * (UINT64_MAX: only a hole is left), through the backend's seek_data
 * operation (posix, io_uring); -EOPNOTSUPP for backends without one. */
int imgi_io_seek_data(struct img_io *io, uint64_t off, uint64_t *data);
/* io.c: cache advice (IMG_ADVISE_*) on the file's bytes [off, off + len)
 * through the backend's advise operation; 0 without one (a hint), -EINVAL
 * for an unknown advice. */
int imgi_io_advise(struct img_io *io, uint64_t off, uint64_t len, unsigned advice);
/* io.c: reads (IMG_IO_OP_READ only, else -EINVAL) past the host page
 * cache: the requests whose buffer, offset and length are multiples of
 * IMG_IO_DIRECT_ALIGN through the backend's read_direct operation, the
 * others (and all of them without one) through img_io_batch.  Results as
 * img_io_batch. */
#define IMG_IO_DIRECT_ALIGN 4096u
int imgi_io_read_direct(struct img_io *io, struct img_io_req *reqs, size_t n);
/* io_posix.c: the O_DIRECT descriptor of a posix backend (the same file
 * opened again at the first call, through /proc/self/fd), or -1 when the
 * file system or the system refuses direct I/O. */
int imgi_io_posix_direct_fd(struct img_io *io);
/* io.c: img_io_batch for backends without a batch op. */
int imgi_io_batch_loop(struct img_io *io, struct img_io_req *reqs, size_t n);

/* journal.c */
int journal_commit(struct img *img);       /* the whole of img_flush */
int journal_checkpoint(struct img *img);   /* commit_lock held */
int journal_replay(struct img *img);       /* at open */

/* util.c: record a problem for img_check (open and replay; IMG_OPEN_CHECK
 * handles only), at most MAX_PROBLEMS of them. */
#define MAX_PROBLEMS 100000
void imgi_problem_add(struct img *img, enum imgi_problem_kind kind, uint64_t v,
		     uint64_t h, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* rw.c: copy one host cluster to another (relocation). */
int imgi_copy_cluster(struct img *img, uint64_t from, uint64_t to, void *buf);
/* Relocate the mapping of virtual cluster v to a free cluster >= min (or
 * below max if max != 0).  map_lock must be held exclusive. */
int imgi_relocate(struct img *img, uint64_t v, uint64_t min, uint64_t max, void *buf);

/* compact.c: move live clusters out of the host file's tail, truncate it.
 * Takes map_lock itself (exclusive, in batches). stats may be NULL. */
int imgi_compact_relocate(struct img *img, img_progress_fn progress, void *arg,
			 struct img_compact_stats *stats);

#define HOST_OFF(img, h) ((uint64_t)(h) << (img)->g.cluster_bits)

#endif
