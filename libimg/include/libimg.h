/* SPDX-License-Identifier: MIT */
/*
 * libimg: expandable ("thin") disk images.
 *
 * The one header users include.  Conventions:
 *   - every function returns 0 (or a byte count) on success and a negative
 *     errno value on failure;
 *   - output pointers come last;
 *   - option structs are zero-initialised for defaults, their reserved fields
 *     must stay zero (a non-zero reserved field is -EINVAL);
 *   - the library never prints and never exits.  After a failure,
 *     img_last_error() gives a message for the calling thread that names the
 *     file and what is wrong ("disk.img: BAT block 3: bad crc32c").
 *
 * Error values with a fixed meaning:
 *   -EUCLEAN     the image is corrupt (use IMG_OPEN_CHECK to open it anyway)
 *   -EOPNOTSUPP  the image uses an incompatible feature this library lacks
 *                (the newest header copy has an unknown incompatible feature
 *                bit or a format version other than 1: the image needs a
 *                newer libimg; no open, not even a check, writes to it)
 *   -EROFS       a read-only feature or a read-only open forbids writing; a
 *                delta opened with IMG_OPEN_NO_BACKING refuses changes to what
 *                it shows; an image whose header sequence number reached
 *                2^63 opens read-only only (FORMAT.md 3)
 *   -EBUSY       the image is locked by another process (img_last_error()
 *                names the process)
 *   -EEXIST      img_create() target exists and IMG_CREATE_OVERWRITE not set
 *   -ENOTEMPTY   a shrink would drop clusters that hold data
 *   -EINVAL      bad argument (size not a multiple of 512, out of range, ...)
 *   -ENOSPC/-EIO from the host file system, passed through
 *   -EIO         also: the handle is failed.  When a sync of the host file
 *                fails (in img_flush, a commit inside any operation, a
 *                header write), what was written since the last successful
 *                sync may be lost (the kernel may have dropped those pages),
 *                so the failure is sticky (FORMAT.md 6, rule 10): the sync
 *                that failed returns its error, and every later write,
 *                discard, write-zeroes, flush, resize, compact, repair and
 *                header change on the handle returns -EIO; reads still
 *                work; img_close returns -EIO and leaves the image dirty.
 *                Close and reopen: the open recovers a consistent image in
 *                which each cluster reads its old or its new contents.
 *
 * Threads: an open image may be used from many threads at once: img_pread,
 * img_pwrite, img_discard, img_write_zeroes, img_flush, img_map and img_info
 * may run concurrently on one handle.  img_resize, img_compact, img_check and
 * img_close must not run concurrently with anything else on the handle
 * (img_compact and img_resize take care of the I/O functions themselves: they
 * may run while other threads do I/O).
 */
#ifndef LIBIMG_H
#define LIBIMG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version's one source (scripts/version.sh reads it for the build, the
 * man pages and libimg.pc): the string is made of the three numbers. */
#define LIBIMG_VERSION_MAJOR 0
#define LIBIMG_VERSION_MINOR 1
#define LIBIMG_VERSION_PATCH 0
#define LIBIMG_STR_(x) #x
#define LIBIMG_XSTR_(x) LIBIMG_STR_(x)
#define LIBIMG_VERSION_STRING LIBIMG_XSTR_(LIBIMG_VERSION_MAJOR) "." \
	LIBIMG_XSTR_(LIBIMG_VERSION_MINOR) "." LIBIMG_XSTR_(LIBIMG_VERSION_PATCH)

/* Format limits (see format-spec/FORMAT.md). */
#define IMG_MIN_CLUSTER_SIZE     (64u * 1024)
#define IMG_MAX_CLUSTER_SIZE     (64u * 1024 * 1024)
#define IMG_DEFAULT_CLUSTER_SIZE (1024u * 1024)
#define IMG_SECTOR_SIZE          512u

struct img;

/* ---------------------------------------------------------------------- */
/* I/O backends.  Most users never see these: img_open() and img_create()  */
/* use the posix backend.  Tests and fuzzers pass their own.               */
/* ---------------------------------------------------------------------- */

struct img_io;

/* One request of a batch (img_io_batch). */
#define IMG_IO_OP_READ  0u
#define IMG_IO_OP_WRITE 1u
struct img_io_req {
	void *buf;
	size_t len;              /* at most 1 GiB */
	uint64_t off;
	uint32_t op;             /* IMG_IO_OP_* */
	int32_t result;          /* set by img_io_batch: 0 or -errno */
};

struct img_io_ops {
	/* Read len bytes at off.  Bytes past the end of the file read as zero.
	 * Returns 0 or -errno; never a short transfer. */
	int (*pread)(struct img_io *io, void *buf, size_t len, uint64_t off);
	/* Write len bytes at off, extending the file if needed.  0 or -errno. */
	int (*pwrite)(struct img_io *io, const void *buf, size_t len, uint64_t off);
	/* Make every completed write, punch and truncate durable. */
	int (*flush)(struct img_io *io);
	/* Deallocate [off, off+len) so that it reads back as zeros; the file
	 * size does not change.  -EOPNOTSUPP if the host cannot. */
	int (*punch)(struct img_io *io, uint64_t off, uint64_t len);
	int (*truncate)(struct img_io *io, uint64_t size);
	int (*size)(struct img_io *io, uint64_t *size);
	/* Host bytes allocated (st_blocks * 512); may be NULL. */
	int (*usage)(struct img_io *io, uint64_t *bytes);
	/* Take a whole-file lock: exclusive (1) or shared (0).  On -EBUSY,
	 * *holder is the holding process id, or 0 when unknown.  May be NULL
	 * (no locking). */
	int (*lock)(struct img_io *io, int exclusive, pid_t *holder);
	void (*close)(struct img_io *io);
	/* Run n independent reads and writes, possibly at once (see
	 * img_io_batch).  May be NULL: img_io_batch then calls pread and
	 * pwrite one after another. */
	int (*batch)(struct img_io *io, struct img_io_req *reqs, size_t n);
	/* The first byte of data at or after off (SEEK_DATA), UINT64_MAX when
	 * only a hole is left.  May be NULL: the library then reads the data
	 * instead of skipping holes. */
	int (*seek_data)(struct img_io *io, uint64_t off, uint64_t *data);
	/* Advice about the host page cache of the file's bytes [off, off +
	 * len), as posix_fadvise: IMG_ADVISE_DONTNEED (give the clean pages
	 * back) or IMG_ADVISE_WILLNEED (start reading them in).  A hint:
	 * nothing but the cache changes.  0 or -errno.  May be NULL (no cache
	 * to advise, a file in memory): the library then does nothing. */
	int (*advise)(struct img_io *io, uint64_t off, uint64_t len, unsigned advice);
	/* Run n reads (IMG_IO_OP_READ only; every buffer, offset and length a
	 * multiple of 4096) as batch does, past the host page cache (O_DIRECT)
	 * where the file system allows it and through it where it does not:
	 * same results, a read past the end of the file gives zeros.  May be
	 * NULL: the library then runs them through batch (or pread). */
	int (*read_direct)(struct img_io *io, struct img_io_req *reqs, size_t n);
};

/* Advice values (struct img_io_ops.advise, img_cache_advise). */
#define IMG_ADVISE_DONTNEED 1u
#define IMG_ADVISE_WILLNEED 2u

struct img_io {
	const struct img_io_ops *ops;
	const char *name;        /* used in messages: the file name */
};

/* O_* style flags for img_io_posix_open. */
#define IMG_IO_RDONLY  0x1u
#define IMG_IO_CREATE  0x2u   /* O_CREAT|O_EXCL */
#define IMG_IO_DIRECT  0x4u   /* O_DIRECT: the caller aligns buffers, offsets
                               * and lengths (4096 is always enough) */
#define IMG_IO_NO_WRITE_BEHIND 0x8u /* no write-behind: the backend does not
                               * start the write-out of the file's dirty pages
                               * every 32 MiB written (see io_posix.c) */

/* Opens path (following symbolic links).  Only a regular file: a FIFO,
 * device or socket gives -EINVAL, a directory -EISDIR, without blocking
 * (the open is non-blocking until the type is checked). */
int img_io_posix_open(const char *path, unsigned flags, struct img_io **out);
/* The io_uring backend (liburing): batches (img_io_batch) run with up to 32
 * requests in flight; single reads and writes are plain system calls.
 * Same flags and contract as the posix backend.  Fails with -ENOSYS (no
 * io_uring in the kernel), -EPERM (refused, e.g. by seccomp in a
 * container) or -ENOMEM (locked-memory limit) without touching the file:
 * then use the posix backend. */
int img_io_uring_open(const char *path, unsigned flags, struct img_io **out);
/* Runs reqs[0..n): every request is done when it returns, in no promised
 * order (requests must not overlap where one writes).  Reads past the end
 * of the file give zeros.  Returns 0 if all succeeded, else the first
 * failure's -errno; each req->result says how that one went. */
int img_io_batch(struct img_io *io, struct img_io_req *reqs, size_t n);
/* An in-memory file (tests, fuzzing).  init/len: initial contents, may be
 * NULL/0.  The backend copies them. */
int img_io_mem_new(const void *init, size_t len, struct img_io **out);
/* Like img_io_mem_new, but the backend takes data (from malloc, len bytes)
 * instead of copying it, and frees it.  On failure data is freed too. */
int img_io_mem_adopt(void *data, size_t len, struct img_io **out);
/* Contents of a memory backend (valid until the next write). */
const void *img_io_mem_data(struct img_io *io, size_t *len);
/* Takes the contents out of a memory backend (malloc'ed, the caller frees
 * them; NULL when empty): the backend is left an empty file. */
void *img_io_mem_take(struct img_io *io, size_t *len);

/* ---------------------------------------------------------------------- */
/* Create, open, close                                                     */
/* ---------------------------------------------------------------------- */

struct img_create_opts {
	uint64_t virtual_size;     /* bytes, a multiple of 512; required */
	uint32_t cluster_size;     /* power of two, 64 KiB..64 MiB; 0 = 1 MiB */
	uint32_t flags;            /* IMG_CREATE_* */
	uint64_t bat_reserve;      /* virtual size the BAT must hold without any
	                            * relocation (0 = only what virtual_size needs,
	                            * rounded up to whole clusters of BAT) */
	/* A delta over this backing image (FORMAT.md 3.1): the path is stored
	 * as given and resolved relative to the new image's directory; it must
	 * be relative without ".." components unless
	 * IMG_CREATE_ALLOW_BACKING_PATH.  The backing chain is opened (read-
	 * only) and checked; virtual_size 0 means the backing's size.  NULL:
	 * a standalone image.  img_create() only (img_create_io: -EINVAL). */
	union {
		const char *backing_file;
		uint64_t backing_file_pad_;   /* same layout on 32-bit hosts */
	};
	uint64_t reserved[4];
};

#define IMG_CREATE_OVERWRITE          0x1u   /* replace an existing file (only
                                              * a regular file nobody has
                                              * locked: img_target_claim) */
#define IMG_CREATE_ALLOW_BACKING_PATH 0x2u   /* backing_file may be absolute or
                                              * contain ".." */

/* Creates the image atomically: written to a temporary file beside path,
 * synced, then renamed.  A failure leaves nothing behind, and a refusal
 * leaves an existing file at path byte for byte as it was.  path is
 * claimed first (img_target_claim): -EEXIST when something is there
 * without IMG_CREATE_OVERWRITE; with it, -EINVAL when that is not a
 * regular file (a symlink, FIFO, device, directory), -EROFS when it is
 * protected (its mode has no write bit, or it is an image marked as a
 * template: FORMAT.md 3.2), -EBUSY (naming the holder) when it is locked: an image open for writing (served, mounted)
 * or the base of an open delta.  -EINVAL when the backing file is path
 * itself (the same file, or the same name once resolved), -ELOOP when
 * path is anywhere further down the backing chain. */
int img_create(const char *path, const struct img_create_opts *opts);
/* Creates an image on an empty backend (tests, fuzzing). */
int img_create_io(struct img_io *io, const struct img_create_opts *opts);

/* Replacing a file safely.  img_create does this itself; a program that
 * writes a new file under a temporary name in path's directory and renames
 * it over path (as imgconvert and mkimg --fs do) claims path before it
 * starts, publishes, then releases:
 *
 *   img_target_claim(path, flags, &t)  flags 0 or IMG_CREATE_OVERWRITE.
 *       Nothing at path: 0.  Something there: -EEXIST without
 *       IMG_CREATE_OVERWRITE; -EINVAL unless it is a regular file (a
 *       symlink is not followed, a FIFO or device is not opened); -EROFS
 *       when it is protected (mode without a write bit, a template); else it
 *       is opened and locked exclusively, as a writer locks an image (a
 *       file that cannot be opened for writing, mode 0444: a shared lock,
 *       refused while anyone else holds one), and stays locked until
 *       img_target_release: -EBUSY when it is locked (open for writing,
 *       served, or the base of an open delta), img_last_error() naming
 *       the holder.  A refusal changes nothing.
 *   img_target_publish(t, tmp)  renames tmp over path and syncs the
 *       directory; -EBUSY when the name no longer holds the file claimed
 *       (changed by another process), -EEXIST when nothing was there at
 *       the claim and something is now (nothing is replaced then).
 *   img_target_release(t)  unlocks; t may be NULL.
 *
 * Messages name path.  The lock is an OFD lock (FORMAT.md section 7). */
struct img_target;
int img_target_claim(const char *path, unsigned flags, struct img_target **out);
int img_target_publish(struct img_target *t, const char *tmp);
void img_target_release(struct img_target *t);

#define IMG_OPEN_RDWR    0x01u   /* read-write (default: read-only) */
#define IMG_OPEN_NOLOCK  0x02u   /* do not lock (like qemu-img -U); read-only only */
#define IMG_OPEN_CHECK   0x04u   /* open a corrupt image for check/repair/salvage:
                                  * problems are recorded, not fatal; writes other
                                  * than img_check repair are refused while the
                                  * image is corrupt */
#define IMG_OPEN_IO_URING 0x20u  /* img_open: use the io_uring backend, or the
                                  * posix one where the kernel refuses io_uring
                                  * (img_info() says which and why).  Without
                                  * it, LIBIMG_IO=uring in the environment
                                  * asks the same; LIBIMG_IO=posix forbids it */
#define IMG_OPEN_NO_WRITE_BEHIND 0x40u /* the backend leaves the write-out of
                                  * dirty pages to the kernel (and img_flush)
                                  * instead of starting it every 32 MiB
                                  * written.  For servers (imgserve) whose
                                  * clients overwrite the same blocks and
                                  * flush when they need to: there the write-
                                  * out costs the request threads CPU and
                                  * writes blocks that are written again.
                                  * Bulk copies want write-behind (default) */
#define IMG_OPEN_SCRATCH 0x80u  /* with IMG_OPEN_RDWR, for a file nobody uses
                                  * until img_close returns (a new image built
                                  * under a temporary name and renamed into
                                  * place after, as imgconvert and mkimg do):
                                  * commits write BAT blocks in place, without
                                  * the log, one sync each (FORMAT.md 6,
                                  * "Unpublished files").  img_flush and
                                  * img_close still make everything durable,
                                  * but a crash before img_close returns may
                                  * leave the file inconsistent: throw it away */
#define IMG_OPEN_ALLOW_BACKING_PATH 0x08u  /* follow backing references that are
                                  * absolute or contain ".." (refused otherwise,
                                  * with -EPERM) */
#define IMG_OPEN_NO_BACKING 0x10u /* do not open the backing chain: unallocated
                                  * clusters of a delta read as zeros; every
                                  * change to what the delta shows is refused
                                  * (-EROFS): writes, discard, write-zeroes,
                                  * compressed writes, img_resize, img_compact,
                                  * filesystem trim, snapshot, merge and a safe
                                  * rebase.  Header-only changes (img_set_backing
                                  * with IMG_BACKING_UNSAFE) and img_check
                                  * (with repair) work */

/*
 * Backing chains (FORMAT.md 3.1).  img_open() opens the backing images of a
 * delta read-only with a shared lock, each relative to the directory of the
 * image that names it.  A backing file must be a regular file beneath that
 * directory, or beneath a directory the backing-path policy allows
 * (img_set_backing_policy), and is opened without leaving that directory
 * through a symbolic link (openat2 RESOLVE_BENEATH).  Refused: an absolute
 * path or a ".." component when no directory is allowed, a file (after
 * symbolic links) outside the image's directory and the allowed ones, both
 * unless IMG_OPEN_ALLOW_BACKING_PATH or IMG_BACKING_POLICY_ANY (-EPERM); a
 * FIFO, device or socket (-EINVAL), a directory (-EISDIR); a chain deeper than
 * IMG_MAX_BACKING_DEPTH (-ELOOP), a loop (-ELOOP), a missing backing file
 * (-ENOENT), a backing image whose uuid is not the one recorded
 * (-EUCLEAN).  img_open_io() cannot resolve a reference: it refuses a delta
 * (-EOPNOTSUPP) unless IMG_OPEN_NO_BACKING.
 */
#define IMG_MAX_BACKING_DEPTH 64

/* The backing-path policy of the process (FORMAT.md 3.1): besides the
 * directory of the image that names it, a backing file may lie beneath
 * any of dirs[0..ndirs) (absolute paths; symbolic links in them are
 * resolved at each open; a directory that does not exist allows nothing),
 * and references that are absolute or contain ".." are followed when they
 * lead there.  IMG_BACKING_POLICY_ANY: any path, as if every call had
 * IMG_OPEN_ALLOW_BACKING_PATH (IMG_CREATE_, IMG_BACKING_ALLOW_PATH).
 * Replaces the policy in force (default: no directory, no flag) for every
 * later img_open, img_create, img_set_backing, img_snapshot and img_merge
 * of any thread.  Returns 0, or -EINVAL (a relative directory, an unknown
 * flag) with nothing changed.  The tools set it from the
 * --allow-backing-path option, LIBIMG_BACKING_DIRS and
 * /etc/libimg/backing-dirs (libimg-backing(7)). */
#define IMG_BACKING_POLICY_ANY 0x1u
int img_set_backing_policy(const char *const *dirs, size_t ndirs, unsigned flags);

/* 1 if path starts like a libimg image (either header copy has the magic),
 * 0 if it does not, -errno if it cannot be read.  Cheap: no validation.
 * Regular files and block devices are read (img_open refuses a block
 * device); anything else is -EINVAL (-EISDIR), without blocking. */
int img_probe(const char *path);

/* 1 if the file at path is protected by its mode (no write bit: a
 * snapshot, a base made read-only; FORMAT.md 3.2): no libimg tool opens it
 * for writing or replaces it, root included.  0 if it has a write bit,
 * -errno if it cannot be stat'ed. */
int img_file_readonly(const char *path);

int img_open(const char *path, unsigned flags, struct img **out);
/* Takes ownership of io (closed by img_close, or on failure). */
int img_open_io(struct img_io *io, unsigned flags, struct img **out);
/* Commits, clears the dirty flag, releases the lock and frees the handle.
 * Returns the first error met; the handle is freed in any case.  On a
 * failed handle (a sync failed, see -EIO above) it writes nothing and
 * returns -EIO. */
int img_close(struct img *img);

/* ---------------------------------------------------------------------- */
/* Data                                                                    */
/* ---------------------------------------------------------------------- */

/* Any offset and length inside the virtual size.  Return len or -errno. */
ssize_t img_pread(struct img *img, void *buf, size_t len, uint64_t off);
ssize_t img_pwrite(struct img *img, const void *buf, size_t len, uint64_t off);
/* Whole clusters in the range become unallocated and their host space is
 * given back at once; partial clusters read back as zeros and their host
 * range is punched.  0 or -errno. */
int img_discard(struct img *img, uint64_t off, uint64_t len);
/* The range reads back as zeros.  Whole clusters become "zero" clusters
 * without host space.  0 or -errno. */
int img_write_zeroes(struct img *img, uint64_t off, uint64_t len);
/* Everything written before the call is durable when it returns.  A
 * failure means some of it may be lost, and the handle is failed from then
 * on (-EIO above): reopen the image. */
int img_flush(struct img *img);
/* Writes one whole cluster (off a multiple of the cluster size, len the
 * cluster size, or what is left of the disk for the last one) stored
 * lz4-compressed (FORMAT.md 4.2) when that saves at least one 512-byte
 * sector, else stored as a normal cluster.  Returns 1 (compressed), 0
 * (stored normally) or -errno.  Sets the image's COMPRESSED feature: older
 * readers cannot open it until no compressed cluster is left.  Reads
 * decompress; a later write into the cluster stores it uncompressed. */
int img_write_compressed(struct img *img, const void *buf, size_t len, uint64_t off);
/* The sparse write (copying a disk into an image, e.g. a new one): as
 * img_pwrite of [off, off+len), but buf is cut into blocks aligned in the
 * virtual disk (4 KiB, or the image's clusters with IMG_SPARSE_CLUSTERS)
 * and a block of zeros is not written where the image already reads zeros
 * (by its map: a "zero" cluster, or an unallocated one of an image that
 * shows no backing image), so it allocates nothing there.  Every other
 * block is written, zeros included: afterwards the range reads as buf.
 * IMG_SPARSE_COMPRESS (clusters, as IMG_SPARSE_CLUSTERS): a whole cluster
 * that is written is stored as img_write_compressed stores it, partial
 * ones as img_pwrite.  Returns the bytes written (len less the bytes
 * skipped), or -errno (a part may have been written). */
#define IMG_SPARSE_CLUSTERS 0x1u
#define IMG_SPARSE_COMPRESS 0x2u
ssize_t img_pwrite_sparse(struct img *img, const void *buf, size_t len, uint64_t off,
			  unsigned flags);

/* ---------------------------------------------------------------------- */
/* Information                                                             */
/* ---------------------------------------------------------------------- */

struct img_info {
	uint64_t virtual_size;
	uint64_t bat_capacity;       /* virtual size the BAT holds without growing */
	uint64_t allocated_clusters;
	uint64_t zero_clusters;
	uint64_t metadata_size;      /* bytes before the first data cluster */
	uint64_t file_size;          /* host st_size */
	uint64_t disk_usage;         /* host st_blocks * 512 */
	uint64_t incompat_features;
	uint64_t ro_compat_features;
	uint64_t compat_features;
	uint64_t header_seq;
	uint32_t cluster_size;
	uint32_t format_version;
	uint32_t dirty;              /* the image was dirty when opened */
	uint32_t read_only;
	uint32_t corrupt;            /* problems found at open (IMG_OPEN_CHECK) */
	uint32_t backing_depth;      /* backing images open below this one */
	uint64_t log_replayed;       /* log transactions replayed at open */
	uint64_t leaked_clusters;    /* host clusters no entry maps (at open) */
	uint32_t io_engine;          /* IMG_IO_ENGINE_*: the backend in use */
	int32_t io_uring_error;      /* io_uring was asked for but refused: the
	                              * -errno of the refusal (posix used), else 0 */
	uint64_t compressed_clusters; /* virtual clusters stored lz4-compressed */
	uint64_t reserved[4];
};

#define IMG_IO_ENGINE_OTHER 0u   /* img_open_io: the caller's backend */
#define IMG_IO_ENGINE_POSIX 1u
#define IMG_IO_ENGINE_URING 2u

int img_info(struct img *img, struct img_info *out);

enum img_extent_type {
	IMG_EXTENT_UNALLOCATED = 0,  /* reads as zeros (no host space) */
	IMG_EXTENT_ZERO = 1,         /* explicitly zero (no host space) */
	IMG_EXTENT_DATA = 2,         /* stored at host_offset */
	IMG_EXTENT_COMPRESSED = 3,   /* data stored lz4-compressed (one cluster
	                              * per extent; host_offset: the payload) */
};

struct img_extent {
	uint64_t offset;       /* virtual offset */
	uint64_t length;       /* bytes; 0 only at the end of the disk */
	uint64_t host_offset;  /* DATA: host offset of the first byte; the run
	                        * is contiguous on the host.  Else 0. */
	uint32_t type;         /* enum img_extent_type */
	uint32_t depth;        /* which image of the chain the run comes from:
	                        * 0 this one, 1 its backing image, ...  For
	                        * DATA, host_offset is in that image's file */
};

/* The longest run of one type (and depth) starting at off.  Unallocated
 * runs of a delta are mapped through its backing chain (the type and depth
 * where the bytes really come from; past a backing image's virtual size,
 * UNALLOCATED at that depth).  Iterate with off += ext.length until
 * ext.length == 0. */
int img_map(struct img *img, uint64_t off, struct img_extent *out);

/* The backing image a delta was opened over, or NULL (none, or opened with
 * IMG_OPEN_NO_BACKING).  Owned by img: valid until img_close(img).  May be
 * passed to img_info, img_map, img_pread and the other read functions. */
struct img *img_backing(struct img *img);
/* The backing reference as stored in the header (NUL-terminated) into buf.
 * Returns its length, 0 if the image has none, -ERANGE if len is too
 * small. */
ssize_t img_backing_ref(struct img *img, char *buf, size_t len);
/* The name the image was opened by (the path for img_open). */
const char *img_name(struct img *img);

/* ---------------------------------------------------------------------- */
/* Copying and serving a whole disk (libimg/bulk.c), by virtual offset     */
/* ---------------------------------------------------------------------- */

/* What a run of the virtual disk is to a program copying it. */
#define IMG_RUN_DATA    0u   /* to be read: data of this image or of an image
                              * of its backing chain, compressed or not */
#define IMG_RUN_ZERO    1u   /* reads as zeros (zero clusters, unallocated
                              * clusters without a backing image, a backing
                              * image's unallocated clusters, past its
                              * virtual size): nothing to read */
#define IMG_RUN_BACKING 2u   /* only with IMG_RUN_TOP: unallocated in this
                              * delta, its bytes come from the backing chain */

struct img_run {
	uint64_t offset;       /* virtual offset */
	uint64_t length;       /* bytes; 0 only at the end of the disk */
	uint32_t type;         /* IMG_RUN_* */
	uint32_t reserved_u32;
	uint64_t reserved[2];
};

#define IMG_RUN_TOP 0x1u     /* runs of this image alone, as a copy that keeps
                              * the backing chain wants them: what a delta
                              * leaves to its chain is IMG_RUN_BACKING */

/* The longest run of one type starting at off, through the backing chain
 * (as img_map, but runs of data are not cut where the host layout, the
 * image of the chain or the compression changes, and zero and
 * unallocated runs are one type).  Iterate with off += run.length until
 * run.length == 0: runs of IMG_RUN_DATA are read (img_read_bulk), the
 * others need not be.  0 or -errno (-EINVAL: off past the virtual size,
 * an unknown flag). */
int img_next_run(struct img *img, uint64_t off, unsigned flags, struct img_run *out);

#define IMG_READ_DIRECT 0x1u  /* past the host page cache where it can */

/* img_pread for a program that reads large ranges once (a conversion, a
 * backup): the same bytes, read with fewer system calls: the data
 * clusters' host ranges as requests of up to 1 MiB submitted together (in
 * flight together on the io_uring backend, IMG_OPEN_IO_URING), the
 * clusters of a backing image likewise in its file, compressed clusters
 * a run of payloads at a time.  With IMG_READ_DIRECT the data clusters
 * are read past the host page cache (O_DIRECT: one copy less, and the
 * cache is not filled with what is read once) when buf, off and len are
 * multiples of 4096 and the file system allows it, else through the
 * cache; compressed clusters always through the cache.  Returns len or
 * -errno. */
ssize_t img_read_bulk(struct img *img, void *buf, size_t len, uint64_t off, unsigned flags);

/* Host page cache advice for the data of the virtual range [off, off +
 * len) (clipped to the virtual size), for a server that bounds the cache
 * it fills: IMG_ADVISE_DONTNEED gives back the cached pages of the host
 * ranges the range's data clusters occupy in this image's own file
 * (widened to 2 MiB boundaries, as the kernel gives back only whole
 * folios: neighbouring data may go too), IMG_ADVISE_WILLNEED starts
 * reading them in.  Compressed clusters and the data of backing images
 * (other files) are left alone.  A hint: nothing but the cache changes.
 * 0 or -errno. */
int img_cache_advise(struct img *img, uint64_t off, uint64_t len, unsigned advice);

/* ---------------------------------------------------------------------- */
/* Operations                                                              */
/* ---------------------------------------------------------------------- */

/* Called from long operations; a non-zero return cancels with -ECANCELED. */
typedef int (*img_progress_fn)(void *arg, uint64_t done, uint64_t total);

#define IMG_RESIZE_DISCARD_DATA 0x1u  /* shrink even if dropped clusters hold data */

/* Grow or shrink the virtual size (a multiple of 512).  Growing is O(1)
 * while the BAT has room and otherwise relocates the data clusters in the
 * BAT's way.  Shrinking refuses with -ENOTEMPTY if clusters past the new
 * end hold data, unless IMG_RESIZE_DISCARD_DATA; afterwards live clusters
 * are moved out of the host file's tail and the file is truncated. */
int img_resize(struct img *img, uint64_t new_size, unsigned flags);
/* img_resize reporting progress (may be NULL) while data clusters move: a
 * growth that relocates the clusters in the BAT's way, and a shrink's
 * packing of the host file before it is truncated.  A non-zero return
 * cancels with -ECANCELED: during a growth's relocation nothing has
 * changed the disk (the size is the old one); during a shrink's packing
 * the image already has its new size, only its file is not yet truncated
 * (img_compact finishes that). */
int img_resize_progress(struct img *img, uint64_t new_size, unsigned flags,
			img_progress_fn progress, void *progress_arg);

struct img_compact_opts {
	uint32_t flags;            /* IMG_COMPACT_* */
	uint32_t reserved_u32;
	img_progress_fn progress;
	void *progress_arg;
	uint64_t reserved[4];
};

#define IMG_COMPACT_NO_ZERO_DETECT 0x1u
#define IMG_COMPACT_COMPRESS       0x2u   /* store every allocated cluster
                                          * compressed where that saves a
                                          * sector (FORMAT.md 4.2) */

struct img_compact_stats {
	uint64_t file_size_before, file_size_after;
	uint64_t disk_usage_before, disk_usage_after;
	uint64_t zero_clusters_freed;     /* all-zero clusters made unallocated */
	uint64_t clusters_moved;
	uint64_t clusters_compressed;     /* IMG_COMPACT_COMPRESS */
	uint64_t payloads_repacked;       /* compressed payloads copied out of
	                                   * host clusters with freed sectors */
	uint64_t reserved[2];
};

/* Zero detection, then relocation of live clusters from the end of the host
 * file into the lowest free clusters, then truncation.  Crash-safe at every
 * step.  stats may be NULL.  opts->progress sees the steps as one count
 * that only goes forward, ending at done == total. */
int img_compact(struct img *img, const struct img_compact_opts *opts,
		struct img_compact_stats *stats);

enum img_check_severity { IMG_CHECK_INFO = 0, IMG_CHECK_LEAK = 1, IMG_CHECK_CORRUPT = 2 };

struct img_check_opts {
	uint32_t flags;            /* IMG_CHECK_* */
	uint32_t reserved_u32;
	/* Each problem found, in words; may be NULL. fixed: repaired. */
	void (*report)(void *arg, enum img_check_severity sev, int fixed, const char *msg);
	void *report_arg;
	/* May be NULL: called as the check goes through the problems found
	 * at open, the BAT blocks past the virtual size and the host file's
	 * clusters (done of total, in steps of these); non-zero cancels with
	 * -ECANCELED (a repair keeps what it committed). */
	img_progress_fn progress;
	void *progress_arg;
	uint64_t reserved[2];
};

#define IMG_CHECK_REPAIR 0x1u      /* needs an IMG_OPEN_RDWR|IMG_OPEN_CHECK handle */

struct img_check_result {
	uint64_t corruptions;          /* found */
	uint64_t corruptions_fixed;
	uint64_t leaks;                /* leaked host clusters found */
	uint64_t leaks_fixed;
	uint64_t allocated_clusters;
	uint64_t tail_bytes;           /* host bytes past the last used cluster */
	uint64_t incomplete;           /* problems found at open that were not
	                                * recorded (more than the check keeps: a
	                                * corruption, nothing repaired); 0 when
	                                * the check is complete */
	uint64_t reserved[3];
};

/* Verifies both header copies, every metadata block's crc32c, the log,
 * BAT bounds, duplicate mappings, entries inside metadata or past the end
 * of the file, bytes past the virtual size, leaks and the file's tail.
 * Returns 0 when the check ran (see res), or -errno when it could not.
 * The open records at most 100,000 problems; past that res->incomplete
 * counts the rest, they count as one more corruption, and IMG_CHECK_REPAIR
 * changes nothing (a partial repair could report a clean image). */
int img_check(struct img *img, const struct img_check_opts *opts,
	      struct img_check_result *res);

/* ---------------------------------------------------------------------- */
/* Snapshots and chains                                                    */
/* ---------------------------------------------------------------------- */

#define IMG_BACKING_UNSAFE 0x1u            /* only rewrite the reference */
#define IMG_BACKING_ALLOW_PATH 0x2u        /* as IMG_OPEN_ALLOW_BACKING_PATH */
#define IMG_BACKING_CHECK_ONLY 0x4u        /* only check that ref may be the new
                                            * backing image (reference allowed,
                                            * file opens, no loop): changes
                                            * nothing; any handle, read-only
                                            * included.  For a caller that opens
                                            * for writing only once this passes,
                                            * so that a refusal leaves the file
                                            * as it was */

/* Changes the backing reference of an image opened read-write (with or
 * without IMG_OPEN_NO_BACKING).  ref NULL: the image becomes standalone.
 * Safe (flags 0, like qemu-img rebase): every cluster that reads through
 * the old chain and would read differently through the new one is first
 * copied into the image, committed, and only then is the header changed;
 * the visible disk does not change.  IMG_BACKING_UNSAFE: only the header
 * changes.  The new backing image is opened relative to the image's
 * directory and replaces the old one on the handle.  0 or -errno. */
int img_set_backing(struct img *img, const char *ref, unsigned flags,
		    img_progress_fn progress, void *progress_arg);

/* Snapshot (offline): the image at path becomes a read-only snapshot under a
 * second name in its directory (name, or "FILE.snapN" with the lowest free
 * N when NULL), and path becomes a new empty delta over it: the user keeps
 * using path.  The new delta records that its backing image is its own
 * snapshot (FORMAT.md 3.1, IMG_FEATURE_COMPAT_OWN_SNAPSHOT), and the
 * snapshot records the new delta's uuid as its owner
 * (IMG_FEATURE_INCOMPAT_OWNER), so that a merge of that delta may consume
 * it.  Crash-safe (link, new top in a temporary file, synced, the owner
 * written into the snapshot's header A/B, renamed over path).  out (may be NULL) gets the snapshot's file
 * name.  flags: IMG_BACKING_ALLOW_PATH.  -EBUSY if the image is in use,
 * -EROFS if it is a template or its file mode has no write bit, -EEXIST if
 * name is taken; a refusal changes nothing. */
int img_snapshot(const char *path, const char *name, unsigned flags, char *out, size_t outlen);
/* Merge (offline): commits the delta at path into its backing image, which
 * then replaces it under path's name (the delta's file is gone; the
 * backing file takes the delta's mode).  Clusters the delta holds
 * overwrite the backing's, zero clusters make the backing's clusters zero,
 * the backing grows or shrinks to the delta's size.  Crash-safe (the
 * delta's view never changes; the backing is synced before it is renamed
 * over path); rerun after a crash.
 * Bases are protected: only the delta's own snapshot (made by img_snapshot
 * or img_snapshot_live: the delta has OWN_SNAPSHOT and the snapshot records
 * the delta's uuid as its owner) is merged into; any other backing image (a
 * clone's base, made by img_create with backing_file, or one set by
 * img_set_backing; a clone with the OWN_SNAPSHOT bit forged; a snapshot
 * from before libimg recorded owners) is refused with -EPERM unless named
 * (img_merge_into).
 * A template is refused (-EROFS), and so is a base whose file mode has no
 * write bit unless it is the delta's own snapshot, and a delta whose file
 * mode has no write bit (a snapshot: the image over it would lose it).  The backing is locked
 * for writing: -EBUSY while any other image over it is open.  The delta is
 * only read (opened read-only: no writer meanwhile).  Everything is
 * checked before anything changes; a refusal or failure changes no file's
 * bytes, name or mode. */
int img_merge(const char *path, unsigned flags, img_progress_fn progress, void *progress_arg);
/* img_merge into a base the caller names explicitly: base must name the
 * file the delta's backing reference resolves to (same device and inode,
 * else -EINVAL).  It is merged into even if it is not the delta's own
 * snapshot; a template or a read-only file mode is still refused.  Other
 * images over that base see its new contents and lose it under its name
 * (it takes path's name).  base NULL: img_merge. */
int img_merge_into(const char *path, const char *base, unsigned flags,
		   img_progress_fn progress, void *progress_arg);

/* Templates (FORMAT.md 3.2): a template is a shared base of clones, marked
 * in its header (IMG_FEATURE_RO_COMPAT_TEMPLATE, a read-only compatible
 * feature: libimg and older readers open it read-only only).  img_open
 * with IMG_OPEN_RDWR refuses a template with -EROFS, so no tool writes it,
 * merges into it, snapshots, grows, compacts or repairs it.  on 1 marks the
 * image at path, 0 clears the mark; only the header changes.  -EBUSY while
 * the image is open anywhere (a delta over it included), -EROFS when the
 * file's mode has no write bit. */
int img_set_template(const char *path, int on);
#define IMG_FEATURE_RO_COMPAT_TEMPLATE 0x1ull  /* img_info.ro_compat_features */
#define IMG_FEATURE_COMPAT_OWN_SNAPSHOT 0x1ull /* img_info.compat_features */
#define IMG_FEATURE_INCOMPAT_OWNER 0x4ull    /* img_info.incompat_features: a snapshot
						* recording its owner (FORMAT.md 3.1) */

/* Snapshot of an image the caller has open read-write by path (its whole
 * chain), for a daemon that serves it: as img_snapshot, then *imgp is
 * replaced by a handle on the new top (opened with the same flags); the
 * old handle is closed.  The caller keeps every other user of *imgp out
 * for the duration (no I/O, no other call on it).  The image is unlocked
 * for a moment between the close and the reopen.  Everything
 * img_snapshot_check checks is checked first: a refusal leaves *imgp as it
 * was.  On a later failure *imgp is a handle on what path names: the old
 * image (when the new top cannot be opened after the switch, the old image
 * is renamed back under path first), or the new top when only making the
 * snapshot read-only failed; NULL only if it could not be opened again. */
int img_snapshot_live(struct img **imgp, const char *name, unsigned flags,
		      char *out, size_t outlen);
/* What img_snapshot_live checks before it changes anything, for a daemon
 * to call before it freezes the filesystem: the handle usable, the image
 * a writable regular file and no template, name valid and free, the
 * directory writable with room for the new top, and the backing chain
 * (every file present, the uuid recorded, lockable) opens again by path.
 * 0 or -errno with img_last_error(); changes nothing. */
int img_snapshot_check(struct img *img, const char *name, unsigned flags);
/* Merge of a delta the caller has open read-write by path with its chain:
 * as img_merge, then *imgp is replaced by a handle on the merged image
 * (the old backing file, now under path's name).  Same rules as
 * img_snapshot_live: exclusive use of the handle for the whole merge.  A
 * refusal, or a failure before the rename, leaves *imgp the caller's
 * handle (its backing chain attached again); after it, *imgp names what
 * path holds, or is NULL if that could not be opened. */
int img_merge_live(struct img **imgp, unsigned flags, img_progress_fn progress,
		   void *progress_arg);
/* img_merge_live into a base the caller names (img_merge_into). */
int img_merge_live_into(struct img **imgp, const char *base, unsigned flags,
			img_progress_fn progress, void *progress_arg);

/* ---------------------------------------------------------------------- */
/* Filesystems inside an image (libimg/fs.c: libblkid and libext2fs)       */
/* ---------------------------------------------------------------------- */

/* Only a filesystem that starts at offset 0 of the virtual disk is seen
 * (no partition tables).  Error values of these functions:
 *   -ENOMEDIUM        no filesystem recognised (img_last_error() says what
 *                     was found instead: nothing, a partition table, or
 *                     several conflicting signatures)
 *   -EOPNOTSUPP       the operation does not support this filesystem type,
 *                     or the filesystem uses a feature libext2fs lacks
 *   -ENOTRECOVERABLE  the filesystem needs checking first: its journal
 *                     needs recovery, it was not cleanly unmounted, it
 *                     records errors, it is bigger than the virtual disk, or
 *                     its metadata is damaged (run e2fsck -f)
 */

#define IMG_FS_HAVE_LABEL      0x01u  /* label[] is set (may be "") */
#define IMG_FS_HAVE_UUID       0x02u
#define IMG_FS_HAVE_SIZE       0x04u  /* size */
#define IMG_FS_HAVE_USED       0x08u  /* used */
#define IMG_FS_HAVE_BLOCK_SIZE 0x10u
#define IMG_FS_HAVE_STATE      0x20u  /* state is meaningful */

/* state bits (ext2/3/4 only) */
#define IMG_FS_STATE_NEEDS_RECOVERY 0x1u  /* journal not replayed (unclean
                                           * unmount, or mounted now) */
#define IMG_FS_STATE_NOT_CLEAN      0x2u  /* not marked cleanly unmounted */
#define IMG_FS_STATE_ERRORS         0x4u  /* the kernel recorded errors */

struct img_fs_info {
	char type[32];         /* libblkid's TYPE: "ext4", "xfs", "btrfs",
	                        * "vfat", "swap", "crypto_LUKS", ... */
	char label[256];       /* as libblkid reports it (UTF-8) */
	char uuid[64];         /* text form */
	char version[32];      /* libblkid's VERSION, "" when unknown */
	uint64_t size;         /* bytes the filesystem spans on the disk */
	uint64_t used;         /* bytes the filesystem does not count as
	                        * free (data and metadata, journal included) */
	uint64_t block_size;   /* the filesystem's block (sector for btrfs) */
	uint32_t flags;        /* IMG_FS_HAVE_*: which fields are known */
	uint32_t state;        /* IMG_FS_STATE_* */
	uint64_t reserved[6];
};

/* What is at the start of the virtual disk: libblkid for every type it
 * knows (type, label, uuid), libext2fs for ext2/3/4 (size, used, block
 * size, state), the superblock for xfs and btrfs (size, used, block size).
 * Reads a few MiB of the image; needs no privileges.  0, -ENOMEDIUM, or
 * -errno. */
int img_fs_probe(struct img *img, struct img_fs_info *out);

/* The errors an ext2/3/4 filesystem records in its superblock (what the
 * kernel saves when it meets one: ext4's s_error_count and its first and
 * last error).  Times are seconds since the epoch, 0 when none; func is
 * the kernel function that reported it ("" when none), line its line. */
struct img_fs_error_at {
	uint64_t time;
	uint64_t block;        /* the block involved, 0 when none */
	uint32_t ino;          /* the inode involved, 0 when none */
	uint32_t line;
	char func[33];
	uint8_t reserved[7];
};
struct img_fs_errors {
	uint32_t count;        /* errors recorded since the last e2fsck */
	uint32_t flags;        /* IMG_FS_STATE_ERRORS when the filesystem is
	                        * marked as having errors */
	struct img_fs_error_at first, last;
	uint64_t reserved[4];
};

/* The recorded error state of the ext2/3/4 filesystem at the start of the
 * virtual disk (read only, through libext2fs; needs no privileges).  0,
 * -ENOMEDIUM (no ext2/3/4 filesystem there), or -errno. */
int img_fs_errors(struct img *img, struct img_fs_errors *out);

/* ext2/3/4: gives the filesystem at the start of the virtual disk the
 * UUID uuid ("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"; NULL: kept) and the
 * label label (at most 16 bytes; NULL: kept), as tune2fs -U / -L would.
 * A metadata_csum filesystem without the metadata_csum_seed feature gets
 * it (Linux 4.4+, e2fsprogs 1.43+), so that no checksum but the
 * superblock's is rewritten: a few blocks (the superblock, its backups and
 * the group descriptors) are written.  For a clone, only the clone is
 * written; its base is not.  flags must be 0.  The image must be open
 * read-write and the filesystem not mounted.  0, -EINVAL (bad uuid or a
 * label too long), -ENOMEDIUM, -EOPNOTSUPP (not ext2/3/4, or its
 * stable_inodes feature forbids a new UUID), -ENOTRECOVERABLE (the journal
 * needs recovery or errors are recorded), or -errno. */
int img_fs_set_identity(struct img *img, const char *uuid, const char *label,
			unsigned flags);

#define IMG_FS_TRIM_WHOLE_CLUSTERS 0x1u  /* do not punch free ranges inside
                                          * partly used clusters */

struct img_fs_trim_stats {
	uint64_t fs_free_bytes;        /* free per the block bitmaps */
	uint64_t clusters_discarded;   /* entirely free clusters unmapped */
	uint64_t bytes_punched;        /* free bytes inside partly used
	                                * clusters punched out of the host file */
	uint64_t disk_usage_before;    /* host st_blocks * 512 */
	uint64_t disk_usage_after;
	uint64_t reserved[4];
};

/* ext2/3/4: gives back the space of every block the filesystem's block
 * bitmaps say is free, whether or not a discard ever reached the image.
 * Clusters holding only free blocks become unallocated; free ranges of at
 * least 4 KiB inside partly used clusters are punched out of the host file
 * (read back as zeros).  Blocks the filesystem uses are never touched and
 * nothing in the filesystem is written.  Refuses (-ENOTRECOVERABLE) a
 * filesystem that is not clean: then its bitmaps cannot be trusted.  The
 * image must be open read-write and not in use by anyone else (mounted
 * through an export, the filesystem is not clean and this refuses).
 * flags: IMG_FS_TRIM_*.  stats may be NULL.  0 or -errno. */
int img_fs_trim_free(struct img *img, unsigned flags, struct img_fs_trim_stats *stats);

/* ---------------------------------------------------------------------- */
/* Errors                                                                  */
/* ---------------------------------------------------------------------- */

/* Text for a negative errno value, with libimg's fixed meanings. */
const char *img_strerror(int err);
/* Detailed message for the last failure in this thread ("" if none). */
const char *img_last_error(void);
/* After img_open() failed: the -errno of the failure when it was in the
 * backing chain, the image itself having opened (a backing file missing
 * -ENOENT, not the image the delta was made over -EUCLEAN, a reference
 * refused -EPERM, a loop or too deep -ELOOP, locked -EBUSY, or any failure
 * to open a backing image); 0 when the image itself failed, and after an
 * img_open() that succeeded.  Per thread, like img_last_error().  Such an
 * image can still be opened alone with IMG_OPEN_NO_BACKING (imginfo and
 * imgcheck do, to describe it).  Also -EUCLEAN after img_snapshot(),
 * img_merge*() refused because the backing file is not the image the delta
 * was made over (the tools exit 4 for it, not 3). */
int img_last_chain_error(void);
/* After a call failed with -EBUSY because another process holds the lock
 * of a file (img_open, img_target_claim, and the operations that open
 * other images: snapshot, merge, rebase): the holding process id when it
 * could be found (F_GETLK, /proc/locks), else 0.  0 after any other
 * failure (reset where img_last_error() is).  Per thread.  The tools put
 * it in their JSON error object ("holder_pid"). */
pid_t img_last_holder(void);

#ifdef __cplusplus
}
#endif
#endif /* LIBIMG_H */
