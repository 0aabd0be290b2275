/* SPDX-License-Identifier: MIT */
/* Internal definitions shared by the vdisk core and its format drivers. */
#ifndef VDISK_INT_H
#define VDISK_INT_H

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "vdisk.h"
#include "rangelock.h"

struct vdisk;

/* One ops table per format. */
struct vdisk_ops {
	const char *name;
	int (*open)(struct vdisk *d, const struct vdisk_open_opts *o);
	int (*close)(struct vdisk *d); /* flushes; frees priv */
	int (*create)(const char *path, const struct vdisk_create_opts *o,
	              struct vdisk_error *err);
	int (*preadv)(struct vdisk *d, const struct iovec *iov, int iovcnt,
	              uint64_t off, uint64_t len);
	int (*pwritev)(struct vdisk *d, const struct iovec *iov, int iovcnt,
	               uint64_t off, uint64_t len);
	int (*flush)(struct vdisk *d);
	int (*discard)(struct vdisk *d, uint64_t off, uint64_t len);
	int (*write_zeroes)(struct vdisk *d, uint64_t off, uint64_t len, unsigned flags);
	int (*pwrite_compressed)(struct vdisk *d, const void *buf, size_t len, uint64_t off);
	int (*block_status)(struct vdisk *d, uint64_t off, uint64_t len,
	                    struct vdisk_extent *ext);
	int (*resize)(struct vdisk *d, uint64_t size, unsigned flags);
	int (*info)(struct vdisk *d, struct vdisk_info *info);
	int (*check)(struct vdisk *d, struct vdisk_check_result *r, unsigned fix);
	int (*snap_list)(struct vdisk *d, struct vdisk_snapshot **l, unsigned *n);
	int (*snap_create)(struct vdisk *d, const struct vdisk_snapshot_params *p);
	int (*snap_apply)(struct vdisk *d, const char *name);
	int (*snap_delete)(struct vdisk *d, const char *name);
	int (*snap_vmstate)(struct vdisk *d, const char *name, void *buf,
	                    uint64_t len, uint64_t off);
	/* name NULL: no backing file; see vdisk_set_backing() */
	int (*set_backing)(struct vdisk *d, const char *name, const char *fmt);
	int (*make_empty)(struct vdisk *d); /* see vdisk_make_empty() */
};

extern const struct vdisk_ops vdisk_raw_ops;
extern const struct vdisk_ops vdisk_qcow2_ops;
extern const struct vdisk_ops vdisk_vdi_ops;
extern const struct vdisk_ops vdisk_vpc_ops;
extern const struct vdisk_ops vdisk_vmdk_ops;

struct vdisk {
	const struct vdisk_ops *ops;
	char *path;
	int fd;
	bool rw;
	uint32_t open_flags;
	uint64_t size;          /* virtual size */
	uint32_t lock_align;    /* write-lock granularity (cluster size) */
	int depth;              /* 0: top of a chain */
	struct vdisk *backing;
	struct rangelock rl;
	pthread_mutex_t err_lock;
	char errmsg[VDISK_ERRMSG_MAX];
	void *priv;             /* format state */
};

/* Record an error on the handle; returns err (negative errno). */
int vd_err(struct vdisk *d, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int vd_seterr(struct vdisk_error *e, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Open a chained image (backing); depth guards against loops. */
int vd_open_internal(struct vdisk **out, const char *path,
                     const struct vdisk_open_opts *o, int depth,
                     struct vdisk_error *err);

/* ---- helpers (vdisk_util.c) ----------------------------------------- */
int vd_pread_full(int fd, void *buf, size_t len, uint64_t off); /* short → -EIO */
int vd_pread_zero(int fd, void *buf, size_t len, uint64_t off); /* short → zero-fill */
int vd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
int vd_preadv_zero(int fd, const struct iovec *iov, int cnt, uint64_t off, uint64_t len);
int vd_pwritev_full(int fd, const struct iovec *iov, int cnt, uint64_t off, uint64_t len);
int vd_fdatasync(int fd);

/* Write-behind for sequential writes: data writes report here, and once a
 * run of writes that follow each other (each starting at most VD_WB_GAP
 * past the end of the one before) has written VD_WB_BYTES, the writer that
 * crosses the mark asks the kernel to start writing the run back
 * (sync_file_range SYNC_FILE_RANGE_WRITE: submits, does not wait). The
 * device then works while the caller is still copying, and the final flush
 * has little left to do (a convert's 768 MB: 0.6-1.1 s instead of 1.1-2.2 s
 * copy + fdatasync). Scattered writes never form a run and are left to the
 * flush: kicking them early was slower (ext4 allocates and submits them
 * one by one instead of in one sorted pass). Durability is unchanged: only
 * a flush (fdatasync) makes data durable, and a write-back error shows
 * there. Zero-initialised, lock-free; races only make a run shorter. */
#define VD_WB_BYTES (8u << 20)
#define VD_WB_GAP (2u << 20)
struct vd_wb {
	_Atomic uint64_t end;     /* end of the last write */
	_Atomic uint64_t start;   /* start of the run not yet kicked */
	_Atomic uint64_t pending; /* bytes written in it */
	_Atomic bool busy;
};
void vd_wb_wrote(struct vd_wb *wb, int fd, uint64_t off, uint64_t len);
/* One line of a check's findings to the caller's report callback, if any. */
void vd_check_report(struct vdisk_check_result *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* An iovec cursor: the sub-vector [off, off+len) of iov. */
struct vd_iov {
	struct iovec *v;
	int cnt, cap;
	struct iovec inl[8];
};
int vd_iov_sub(struct vd_iov *out, const struct iovec *iov, int cnt,
               uint64_t off, uint64_t len);
void vd_iov_free(struct vd_iov *v);
void vd_iov_memset(const struct iovec *iov, int cnt, uint64_t off, int c, uint64_t len);
void vd_iov_to_buf(const struct iovec *iov, int cnt, uint64_t off, void *buf, uint64_t len);
void vd_iov_from_buf(const struct iovec *iov, int cnt, uint64_t off, const void *buf, uint64_t len);
bool vd_buf_is_zero(const void *buf, size_t len);

static inline uint16_t vd_be16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t)(b[0] << 8 | b[1]);
}
static inline uint32_t vd_be32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}
static inline uint64_t vd_be64(const void *p)
{
	return (uint64_t)vd_be32(p) << 32 | vd_be32((const uint8_t *)p + 4);
}
static inline void vd_put_be16(void *p, uint16_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)(v >> 8);
	b[1] = (uint8_t)v;
}
static inline void vd_put_be32(void *p, uint32_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)(v >> 24);
	b[1] = (uint8_t)(v >> 16);
	b[2] = (uint8_t)(v >> 8);
	b[3] = (uint8_t)v;
}
static inline void vd_put_be64(void *p, uint64_t v)
{
	vd_put_be32(p, (uint32_t)(v >> 32));
	vd_put_be32((uint8_t *)p + 4, (uint32_t)v);
}

#define VD_MIN(a, b) ((a) < (b) ? (a) : (b))
#define VD_MAX(a, b) ((a) > (b) ? (a) : (b))
#define VD_ALIGN_UP(x, a) (((x) + (a) - 1) / (a) * (a))
#define VD_DIV_UP(x, a) (((x) + (a) - 1) / (a))

#endif
