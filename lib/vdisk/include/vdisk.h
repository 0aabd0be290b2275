/* SPDX-License-Identifier: MIT */
/*
 * vdisk — a stand-alone virtual-disk library (raw, qcow2).
 *
 * Conventions:
 *  - every function returning int returns 0 (or a non-negative count) on
 *    success and a negative errno on failure;
 *  - failures on an open handle leave a human-readable message that
 *    vdisk_errmsg() copies out; open and create fill a struct vdisk_error;
 *  - I/O calls are thread-safe: requests on disjoint ranges run in
 *    parallel, overlapping ones are serialised by range locks.
 */
#ifndef VDISK_H
#define VDISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vdisk;

#define VDISK_ERRMSG_MAX 512

struct vdisk_error {
	int code;                     /* negative errno, 0 if none */
	char msg[VDISK_ERRMSG_MAX];
};

/* ---- opening -------------------------------------------------------- */

enum {
	VDISK_OPEN_RDWR            = 1u << 0, /* read-write (default read-only) */
	VDISK_OPEN_PROBE           = 1u << 1, /* format==NULL: probe the header */
	VDISK_OPEN_NO_BACKING      = 1u << 2, /* do not open backing files */
	VDISK_OPEN_NO_LOCK         = 1u << 3, /* skip the flock() */
	VDISK_OPEN_DIRECT          = 1u << 4, /* O_DIRECT */
	VDISK_OPEN_ALLOW_DATA_FILE = 1u << 5, /* reserved: external data files */
	VDISK_OPEN_NO_REPAIR       = 1u << 6, /* do not repair a dirty image on rw open */
	VDISK_OPEN_FORCE_CORRUPT   = 1u << 7, /* allow rw open of a corrupt image (for repair) */
};

struct vdisk_open_opts {
	uint32_t flags;             /* VDISK_OPEN_* */
	const char *format;         /* "raw", "qcow2", "vdi", "vpc"; NULL with VDISK_OPEN_PROBE */
	uint64_t l2_cache_bytes;    /* 0: enough for the whole disk, capped at 32 MiB */
	uint32_t l2_slice_bytes;    /* 0: 4096 */
	const char *backing_format; /* override for the top image's backing format */
};

int vdisk_open(struct vdisk **out, const char *path,
               const struct vdisk_open_opts *opts, struct vdisk_error *err);
int vdisk_close(struct vdisk *d); /* flushes; returns the flush result */

/* The image's lock (flock on its own file; backing files keep their shared
 * locks, and a vmdk's extents in other files keep theirs). Opening takes it:
 * exclusive for a writable handle, shared for a read-only one, none with
 * VDISK_OPEN_NO_LOCK. vdisk_lock() changes it on an open handle, so that
 * another process can take the image over and give it back (a VMM's
 * migration between two processes on one host, or hosts sharing storage).
 *   VDISK_LOCK_NONE, VDISK_LOCK_SHARED: a writable handle is flushed first
 *     (on failure nothing changes) and refuses writes (-EBADF) until it
 *     holds the exclusive lock again; closing it then writes nothing.
 *   VDISK_LOCK_EXCLUSIVE: a handle opened with VDISK_OPEN_RDWR writes again.
 * The lock is not waited for: -EWOULDBLOCK while another process holds a
 * conflicting one. Call it with no I/O in flight on the handle. What the
 * handle caches of the format's metadata is kept: only take a lock back
 * when nobody wrote the image meanwhile (otherwise close and reopen). */
enum vdisk_lock_mode { VDISK_LOCK_NONE, VDISK_LOCK_SHARED, VDISK_LOCK_EXCLUSIVE };
int vdisk_lock(struct vdisk *d, enum vdisk_lock_mode mode);

/* Probe a file's format from its header: "qcow2" or "raw". */
const char *vdisk_probe(const char *path, struct vdisk_error *err);

/* ---- creating ------------------------------------------------------- */

enum vdisk_prealloc {
	VDISK_PREALLOC_OFF = 0,
	VDISK_PREALLOC_METADATA,
	VDISK_PREALLOC_FALLOC,
	VDISK_PREALLOC_FULL,
};

enum vdisk_compression {
	VDISK_COMPRESS_ZLIB = 0,
	VDISK_COMPRESS_ZSTD = 1,
};

struct vdisk_create_opts {
	const char *format;            /* "raw", "qcow2", "vdi", "vpc" */
	uint64_t size;                 /* virtual size; 0 with a backing file: its size */
	int compat;                    /* qcow2: 2 (0.10) or 3 (1.1, default) */
	uint32_t cluster_size;         /* qcow2: 512..2 MiB, default 64 KiB */
	uint32_t refcount_bits;        /* qcow2: 1..64 power of two, default 16 */
	bool lazy_refcounts;
	bool extended_l2;
	enum vdisk_prealloc prealloc;
	enum vdisk_compression compression;
	const char *backing_file;      /* stored as given */
	const char *backing_format;    /* stored in the header extension */
	const char *subformat;         /* vpc: "dynamic" (default) or "fixed" */
	bool force_size;               /* vpc: keep the size as given, not rounded to CHS */
	bool vdi_static;               /* vdi: "static=on", every block allocated */
	/* vmdk: subformat is monolithicSparse (default), monolithicFlat,
	 * twoGbMaxExtentSparse, twoGbMaxExtentFlat or streamOptimized */
	const char *adapter_type;      /* vmdk: ide (default), buslogic, lsilogic, legacyESX */
	const char *hwversion;         /* vmdk: ddb.virtualHWVersion, default "4" */
	const char *toolsversion;      /* vmdk: ddb.toolsVersion, default "2147483647" */
	bool compat6;                  /* vmdk: hwversion 6 */
	bool zeroed_grain;             /* vmdk: zeroed-grain table entries (GTE 1) */
};

int vdisk_create(const char *path, const struct vdisk_create_opts *opts,
                 struct vdisk_error *err);

/* ---- I/O ------------------------------------------------------------ */

int vdisk_preadv(struct vdisk *d, const struct iovec *iov, int iovcnt, uint64_t off);
int vdisk_pwritev(struct vdisk *d, const struct iovec *iov, int iovcnt, uint64_t off);
int vdisk_pread(struct vdisk *d, void *buf, size_t len, uint64_t off);
int vdisk_pwrite(struct vdisk *d, const void *buf, size_t len, uint64_t off);
int vdisk_flush(struct vdisk *d);
/* Discard: the range's contents become unspecified (qcow2: zero or backing). */
int vdisk_discard(struct vdisk *d, uint64_t off, uint64_t len);

enum { VDISK_ZERO_MAY_UNMAP = 1u << 0 };
int vdisk_write_zeroes(struct vdisk *d, uint64_t off, uint64_t len, unsigned flags);

/* Write one whole cluster compressed (qcow2 only; off cluster-aligned,
 * len == cluster size, or the tail cluster of the disk). */
int vdisk_pwrite_compressed(struct vdisk *d, const void *buf, size_t len, uint64_t off);

enum {
	VDISK_BS_DATA      = 1u << 0, /* reads come from an allocated data area */
	VDISK_BS_ZERO      = 1u << 1, /* reads return zeroes */
	VDISK_BS_ALLOCATED = 1u << 2, /* decided by this image, not its backing */
	VDISK_BS_OFFSET    = 1u << 3, /* host_offset is valid (uncompressed data) */
	VDISK_BS_COMPRESSED = 1u << 4,
};

struct vdisk_extent {
	uint64_t offset, length; /* guest range */
	unsigned flags;          /* VDISK_BS_* */
	unsigned depth;          /* 0: this image, 1: its backing, ... */
	uint64_t host_offset;    /* in the file of layer `depth` */
};

/* Status of the extent starting at off (length ≤ len, > 0), looking
 * through the backing chain. */
int vdisk_block_status(struct vdisk *d, uint64_t off, uint64_t len,
                       struct vdisk_extent *ext);

uint64_t vdisk_size(const struct vdisk *d);
uint32_t vdisk_cluster_size(const struct vdisk *d); /* 0 for raw */
const char *vdisk_format(const struct vdisk *d);
const char *vdisk_path(const struct vdisk *d);
struct vdisk *vdisk_backing(const struct vdisk *d);

enum { VDISK_RESIZE_SHRINK = 1u << 0 };
int vdisk_resize(struct vdisk *d, uint64_t new_size, unsigned flags);

/* Copy the handle's last error message. */
const char *vdisk_errmsg(struct vdisk *d, char *buf, size_t len);

/* Change the backing file reference stored in the image (qcow2; other
 * formats: -ENOTSUP). backing_file NULL or "": no backing file; it is
 * stored as given (a relative name is resolved against the image's folder);
 * backing_format NULL: none recorded (the file is probed when opened).
 * Nothing is copied: what the image reads through unallocated ranges
 * changes to the new file's content (a safe rebase copies the differing
 * clusters first). Everything written before the call is made durable
 * before the header changes. Unless the handle was opened with
 * VDISK_OPEN_NO_BACKING, the new file is opened (read-only) first, a name
 * that does not open changes nothing, and the handle reads through it
 * afterwards. */
int vdisk_set_backing(struct vdisk *d, const char *backing_file,
                      const char *backing_format);
/* Drop every mapping of the image itself (qcow2; others: -ENOTSUP), so
 * that all of it reads from the backing file again (zero without one):
 * what `commit` leaves in the top image. */
int vdisk_make_empty(struct vdisk *d);

/* ---- info ----------------------------------------------------------- */

struct vdisk_info {
	const char *format;
	uint64_t virtual_size;
	uint64_t actual_size;    /* bytes allocated on the host file system */
	uint32_t cluster_size;
	int compat;              /* 2 or 3 */
	uint32_t refcount_bits;
	bool lazy_refcounts, corrupt, dirty, extended_l2;
	enum vdisk_compression compression;
	char backing_file[1024];
	char backing_format[64];
	char backing_resolved[4096];
	unsigned nb_snapshots;
	char subformat[64];      /* vmdk: createType */
	bool write_compressed;   /* writes go best as whole compressed clusters
	                          * (vmdk streamOptimized): convert uses them */
};

int vdisk_info(struct vdisk *d, struct vdisk_info *info);

/* ---- consistency check ---------------------------------------------- */

enum { VDISK_FIX_LEAKS = 1u << 0, VDISK_FIX_ERRORS = 1u << 1 };

struct vdisk_check_result {
	uint64_t corruptions, leaks, check_errors;
	uint64_t corruptions_fixed, leaks_fixed;
	uint64_t total_clusters, allocated_clusters, fragmented_clusters,
	         compressed_clusters;
	uint64_t image_end_offset;
	/* callback for one-line reports (may be NULL) */
	void (*report)(void *opaque, const char *line);
	void *opaque;
};

/* -ENOTSUP if the format has no check. */
int vdisk_check(struct vdisk *d, struct vdisk_check_result *res, unsigned fix);

/* ---- internal snapshots (qcow2) ------------------------------------- */

struct vdisk_snapshot {
	char id[128];
	char name[256];
	uint64_t vm_state_size;
	uint64_t disk_size;
	uint32_t date_sec, date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t icount;
};

/* The list is malloc'd; free() it. */
int vdisk_snapshot_list(struct vdisk *d, struct vdisk_snapshot **list, unsigned *n);
/* Create a snapshot of the current disk, with an optional VM-state area
 * (stored the way qemu stores it, so `qemu-io -c 'read -b'` finds it after
 * `qemu-img snapshot -a`). Names must be unique and not look like another
 * snapshot's id. */
int vdisk_snapshot_create(struct vdisk *d, const char *name,
                          const void *vmstate, uint64_t vmstate_len);

struct vdisk_snapshot_params {
	const char *name;              /* required, ≤ 255 bytes */
	const char *id;                /* NULL: the next free number */
	const struct iovec *vmstate;   /* VM-state area, gathered; may be NULL */
	int vmstate_cnt;
	uint64_t vm_clock_nsec;
	uint64_t icount;               /* UINT64_MAX: not recorded */
	uint32_t date_sec, date_nsec;  /* 0: now */
};
int vdisk_snapshot_create_ex(struct vdisk *d, const struct vdisk_snapshot_params *p);
/* Revert the disk to a snapshot (id or name; ids are tried first). The
 * virtual size becomes the snapshot's. */
int vdisk_snapshot_apply(struct vdisk *d, const char *name_or_id);
int vdisk_snapshot_delete(struct vdisk *d, const char *name_or_id);
/* Read the VM-state area saved with a snapshot. */
int vdisk_snapshot_read_vmstate(struct vdisk *d, const char *name_or_id,
                                void *buf, uint64_t len, uint64_t off);

#ifdef __cplusplus
}
#endif
#endif
