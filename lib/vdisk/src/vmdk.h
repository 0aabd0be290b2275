/* SPDX-License-Identifier: MIT */
/* VMDK: internal definitions shared by the vmdk_*.c files.
 *
 * An image is a text descriptor (embedded in a sparse file, or a file of its
 * own) listing extents: FLAT (raw data at an offset of a file), SPARSE (a
 * hosted sparse extent: header, grain directory, grain tables, grains) and
 * ZERO. Stream-optimized images are sparse extents whose grains are deflated
 * and preceded by markers; their grain directory may sit at the end of the
 * file, found through a footer.
 *
 * Concurrency: the generic layer's range locks (lock_align = grain size)
 * make a grain exclusive to one writer. Grain tables are loaded lazily and
 * published through atomic pointers; entries are read with atomic loads and
 * changed under one of VMDK_GT_STRIPES mutexes (by grain-table index), so
 * allocations in different grain tables never share a lock. File space is
 * taken with an atomic fetch-add on the extent's end. Changed grain tables
 * and directories are written back at flush and close.
 */
#ifndef VDISK_VMDK_H
#define VDISK_VMDK_H

#include <stdatomic.h>
#include <stdbool.h>

#include "vdisk_int.h"

#define VMDK_MAGIC            0x564d444bu /* "KDMV" little-endian */
#define VMDK_COWD_MAGIC       0x44574f43u /* "COWD": ESX sparse, unsupported */
#define VMDK_SECTOR           512u
#define VMDK_GD_AT_END        UINT64_MAX

#define VMDK_FLAG_NL_TEST     (1u << 0)
#define VMDK_FLAG_RGD         (1u << 1)
#define VMDK_FLAG_ZERO_GRAIN  (1u << 2)
#define VMDK_FLAG_COMPRESSED  (1u << 16)
#define VMDK_FLAG_MARKERS     (1u << 17)

#define VMDK_MARKER_EOS       0
#define VMDK_MARKER_GT        1
#define VMDK_MARKER_GD        2
#define VMDK_MARKER_FOOTER    3

/* limits against malformed and hostile images */
#define VMDK_MAX_GRAIN_SECTORS 32768u          /* 16 MiB */
#define VMDK_MAX_GTES          4096u
#define VMDK_MAX_GD_ENTRIES    (1u << 24)
#define VMDK_MAX_DESC_BYTES    (1u << 20)
#define VMDK_MAX_EXTENTS       4096u
#define VMDK_MAX_SECTORS       (1ull << 40)    /* 512 TiB per extent/disk */
#define VMDK_MAX_FILE_SECTORS  (1ull << 32)    /* grain offsets are 32-bit */

#define VMDK_GT_STRIPES 64

/* The 512-byte hosted sparse extent header, decoded. */
struct vmdk_header {
	uint32_t magic, version, flags;
	uint64_t capacity, grain_sectors, desc_offset, desc_sectors;
	uint32_t gtes;
	uint64_t rgd_offset, gd_offset, overhead;
	uint8_t unclean;
	uint16_t compress_algo;
};

void vmdk_header_decode(struct vmdk_header *h, const uint8_t *b);
void vmdk_header_encode(const struct vmdk_header *h, uint8_t *b);

struct vmdk_pending; /* a partly written grain of a stream being written */

struct vmdk_sparse {
	struct vmdk_header h;
	uint64_t grain_size;          /* bytes */
	uint32_t gd_entries, gt_bytes; /* gt_bytes: on disk, sector-rounded */
	bool compressed, markers, zeroed_grain;
	bool stream_write;            /* a streamOptimized image being written */
	bool writable;
	uint64_t header_pos;          /* where the header in use lies (footer) */
	_Atomic uint32_t *gd, *rgd;   /* rgd NULL if none (or read-only) */
	_Atomic(_Atomic uint32_t *) *gt;
	_Atomic uint8_t *gt_dirty;
	atomic_bool gd_dirty;
	pthread_mutex_t gd_lock;
	pthread_mutex_t gt_lock[VMDK_GT_STRIPES];
	atomic_uint_fast64_t alloc_end; /* bytes: next free, sector aligned */
	uint64_t overhead_bytes;
	/* stream writer */
	pthread_mutex_t pend_lock;
	struct vmdk_pending *pend;
	int zlevel;
};

enum vmdk_ext_type { VMDK_EXT_FLAT, VMDK_EXT_SPARSE, VMDK_EXT_ZERO };
enum vmdk_access { VMDK_RW, VMDK_RDONLY, VMDK_NOACCESS };

struct vmdk_extent {
	enum vmdk_ext_type type;
	enum vmdk_access access;
	char *file;          /* as written in the descriptor; NULL for ZERO */
	uint64_t sectors;    /* size in the descriptor */
	uint64_t flat_offset; /* FLAT: sectors into the file */
	uint64_t start;      /* guest byte offset */
	int fd;              /* -1 for ZERO */
	bool own_fd;         /* false: d->fd */
	struct vmdk_sparse *sp;
	struct vd_wb wb;     /* write-behind of sequential data writes */
};

/* A parsed descriptor. */
struct vmdk_desc {
	uint32_t cid, parent_cid;
	int version;
	char create_type[64];
	char adapter_type[32];
	char hwversion[16];
	char parent_hint[1024]; /* parentFileNameHint */
	struct vmdk_extent *ext;
	unsigned n_ext;
};

struct vmdk {
	struct vmdk_desc desc;
	bool embedded;        /* descriptor inside the sparse file d->fd */
	/* "CID=" of the descriptor in d->fd (0: none), changed at the first
	 * write as VMware does, so images linked to this one as their parent
	 * see that it changed */
	uint64_t cid_pos;
	atomic_bool cid_done;
	bool serialize;       /* extents not grain-aligned: one writer at a time */
	pthread_mutex_t wlock;
};

static inline struct vmdk *VM(struct vdisk *d) { return d->priv; }

static inline uint32_t vd_le32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static inline uint64_t vd_le64(const void *p)
{
	return vd_le32(p) | (uint64_t)vd_le32((const uint8_t *)p + 4) << 32;
}
static inline void vd_put_le32(void *p, uint32_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
	b[2] = (uint8_t)(v >> 16);
	b[3] = (uint8_t)(v >> 24);
}
static inline void vd_put_le64(void *p, uint64_t v)
{
	vd_put_le32(p, (uint32_t)v);
	vd_put_le32((uint8_t *)p + 4, (uint32_t)(v >> 32));
}

/* vmdk_desc.c */
/* Parse descriptor text; errors name the line. Extents get no fds. */
int vmdk_desc_parse(struct vdisk *d, const char *text, size_t len, struct vmdk_desc *out);
void vmdk_desc_free(struct vmdk_desc *desc);
/* Open an extent file named in a descriptor, confined to dir (no absolute
 * path, no "..", no '/', no symlink leaving dir). */
int vmdk_open_extent_file(struct vdisk *d, const char *desc_path, const char *name,
                          bool rw, int *fd);
/* Descriptor text for a new image; returns malloc'd text. */
char *vmdk_desc_format(uint32_t cid, uint32_t parent_cid, const char *parent_hint,
                       const char *create_type, const struct vmdk_extent *ext, unsigned n,
                       uint64_t total_sectors, const char *adapter,
                       const char *hwversion, const char *toolsversion);

/* vmdk_sparse.c */
int vmdk_sparse_open(struct vdisk *d, struct vmdk_extent *e, const uint8_t *hdr, bool rw);
void vmdk_sparse_close(struct vmdk_sparse *sp);
int vmdk_sparse_read(struct vdisk *d, struct vmdk_extent *e, const struct iovec *iov,
                     int cnt, uint64_t ioff, uint64_t off, uint64_t len);
int vmdk_sparse_write(struct vdisk *d, struct vmdk_extent *e, const struct iovec *iov,
                      int cnt, uint64_t ioff, uint64_t off, uint64_t len);
int vmdk_sparse_zero(struct vdisk *d, struct vmdk_extent *e, uint64_t off, uint64_t len);
int vmdk_sparse_status(struct vdisk *d, struct vmdk_extent *e, uint64_t off,
                       uint64_t len, struct vdisk_extent *x);
int vmdk_sparse_flush(struct vdisk *d, struct vmdk_extent *e);
int vmdk_sparse_check(struct vdisk *d, struct vmdk_extent *e, struct vdisk_check_result *r);
/* grain table entry of grain g (0 if its table is absent) */
int vmdk_gte_get(struct vdisk *d, struct vmdk_extent *e, uint64_t g, uint32_t *out);
int vmdk_gte_set(struct vdisk *d, struct vmdk_extent *e, uint64_t g, uint32_t v);
int vmdk_alloc(struct vdisk *d, struct vmdk_extent *e, uint64_t bytes, uint64_t *pos);

/* vmdk_stream.c */
/* in: scratch of VMDK_COMP_CAP(grain size) bytes */
#define VMDK_COMP_CAP(gs) (2 * (gs) + VMDK_SECTOR)
int vmdk_read_compressed(struct vdisk *d, struct vmdk_extent *e, uint64_t g,
                         uint32_t gte, uint8_t *out, uint8_t *in);
int vmdk_stream_write(struct vdisk *d, struct vmdk_extent *e, const struct iovec *iov,
                      int cnt, uint64_t ioff, uint64_t off, uint64_t len);
int vmdk_stream_write_grain(struct vdisk *d, struct vmdk_extent *e, uint64_t g,
                            const uint8_t *grain);
/* a grain written in part, not yet deflated: copy from it, true if found */
bool vmdk_stream_read_pending(struct vmdk_extent *e, uint64_t g, uint64_t in,
                              const struct iovec *iov, int cnt, uint64_t ioff, uint64_t n);
int vmdk_stream_zero(struct vdisk *d, struct vmdk_extent *e, uint64_t off, uint64_t len);
/* write pending grains, grain tables, directory, footer, end-of-stream */
int vmdk_stream_finish(struct vdisk *d, struct vmdk_extent *e);
/* discard the (empty) metadata tail of a fresh stream: writes start after
 * the overhead */
int vmdk_stream_begin(struct vdisk *d, struct vmdk_extent *e);

/* vmdk_create.c */
int vmdk_create(const char *path, const struct vdisk_create_opts *o, struct vdisk_error *err);
/* a sparse extent file: header (+ embedded descriptor), directories and
 * tables; stream: header, descriptor and an empty directory at the end */
int vmdk_write_sparse_extent(int fd, uint64_t capacity, const char *desc,
                             bool zeroed_grain, bool stream);

#endif
