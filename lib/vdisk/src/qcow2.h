/* SPDX-License-Identifier: MIT */
/* qcow2 internal definitions (format: QEMU docs/interop/qcow2.txt). */
#ifndef VDISK_QCOW2_H
#define VDISK_QCOW2_H

#include "vdisk_int.h"
#include "qcow2_cache.h"

#define QCOW2_MAGIC 0x514649fbu

#define QCOW2_INCOMPAT_DIRTY       (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT     (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE   (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2       (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN       0x1full
#define QCOW2_COMPAT_LAZY          (1ull << 0)

#define QCOW2_EXT_END          0x00000000u
#define QCOW2_EXT_BACKING_FMT  0xe2792acau
#define QCOW2_EXT_FEATURES     0x6803f857u
#define QCOW2_EXT_BITMAPS      0x23852875u
#define QCOW2_EXT_CRYPTO       0x0537be77u
#define QCOW2_EXT_DATA_FILE    0x44415441u

#define QCOW_OFLAG_COPIED     (1ull << 63)
#define QCOW_OFLAG_COMPRESSED (1ull << 62)
#define QCOW_OFLAG_ZERO       (1ull << 0)
#define L1E_OFFSET_MASK       0x00fffffffffffe00ull
#define L1E_RESERVED          0x7f000000000001ffull
#define L2E_OFFSET_MASK       0x00fffffffffffe00ull
#define L2E_STD_RESERVED      0x3f000000000001feull
#define REFT_OFFSET_MASK      0xfffffffffffffe00ull

#define QCOW2_MAX_L1_BYTES       (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
#define QCOW2_MAX_SNAPSHOTS      65536
#define QCOW2_MAX_SNAP_TABLE     (64u << 20)
#define QCOW2_MAX_BACKING_NAME   1023

/* A sorted set of host offsets (one-cluster metadata), for overlap checks. */
struct qc_oset {
	uint64_t *v;
	size_t n, cap;
};
int qc_oset_add(struct qc_oset *s, uint64_t off);
void qc_oset_del(struct qc_oset *s, uint64_t off);
bool qc_oset_hit(const struct qc_oset *s, uint64_t off, uint64_t len, uint64_t unit);
void qc_oset_free(struct qc_oset *s);

struct qcow2_ext {
	uint32_t type, len;
	uint8_t *data;
	struct qcow2_ext *next;
};

struct qcow2_snap {
	uint64_t l1_offset;
	uint32_t l1_size;
	char *id, *name;
	uint32_t date_sec, date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t vm_state_size;
	uint64_t disk_size;
	uint64_t icount;
	uint32_t extra_len;  /* as stored */
	uint8_t *extra;      /* raw extra data, preserved */
};

/* Kinds of guest cluster, decoded from an L2 entry. */
enum qc_kind {
	QC_UNALLOC,     /* read from backing or zero */
	QC_ZERO,        /* reads zero (v3 flag), may keep a host cluster */
	QC_NORMAL,      /* data at host offset */
	QC_COMPRESSED,
};

struct qcow2 {
	struct vdisk *d;
	pthread_mutex_t lock;        /* guards all metadata below */

	uint32_t version;
	uint32_t cluster_bits, cluster_size;
	uint32_t header_length;
	uint64_t incompat, compat, autoclear;
	uint32_t refcount_order, refcount_bits;
	uint32_t rb_bits;            /* log2(refcounts per refblock) */
	uint64_t backing_off;
	uint32_t backing_len;
	char *backing_name, *backing_fmt;
	uint8_t compression_type;
	bool ext_l2;
	uint32_t l2_entry_size;      /* 8 or 16 */
	uint32_t l2_bits;            /* log2(entries per L2 table) */
	uint32_t sc_bits;            /* log2(subcluster size) */
	uint32_t crypt_method;

	uint64_t l1_offset;
	uint32_t l1_size;
	uint64_t *l1;                /* host byte order */
	uint64_t *l1_dirty;          /* bitmap of 512-byte L1 blocks not yet written */
	uint64_t l1_ndirty;

	uint64_t reftable_offset;
	uint32_t reftable_clusters;
	uint64_t reftable_entries;   /* capacity */
	uint64_t *reftable;

	uint64_t snap_offset;
	uint32_t nb_snaps;
	uint64_t snap_table_bytes;
	struct qcow2_snap *snaps;

	struct qcow2_ext *exts;      /* unknown extensions, preserved */

	struct qc_cache l2c;         /* L2 slices */
	struct qc_cache rbc;         /* refcount blocks */
	uint32_t slice_entries;      /* L2 entries per slice */

	uint64_t free_hint;          /* cluster index: lowest possibly free */
	uint64_t host_end;           /* bytes at or past this are fresh (read zero);
	                              * every allocation lies below it */
	uint64_t file_end;           /* the file is known to be at least this long */
	struct qc_oset l2_tabs;      /* L2 tables of the active L1 */
	struct qc_oset refblocks;    /* refcount blocks */

	bool broken;                 /* corruption found: writes refused */
	bool dirty_on_disk;          /* we set the dirty bit */
	uint8_t *zbuf;               /* a zeroed cluster */
	uint64_t *pend;              /* L2 entries replaced, whose clusters are
	                              * freed once the new mapping is on disk */
	size_t npend, cappend;
	uint64_t *punch;             /* freed ranges (off, len) not yet punched */
	size_t npunch, cappunch;
	uint64_t cfree;              /* next free byte for compressed data */
};

static inline struct qcow2 *Q(struct vdisk *d) { return d->priv; }

static inline uint64_t qc_off_in_cluster(const struct qcow2 *q, uint64_t off)
{
	return off & (q->cluster_size - 1);
}
static inline uint64_t qc_l2_entries(const struct qcow2 *q) { return 1ull << q->l2_bits; }

/* qcow2_header.c */
int qcow2_read_header(struct vdisk *d, struct qcow2 *q, const uint8_t *c0, uint64_t fsize,
                      bool allow_data_file);
int qcow2_write_header(struct vdisk *d, struct qcow2 *q); /* whole cluster 0 */
int qcow2_update_incompat(struct vdisk *d, struct qcow2 *q, uint64_t set, uint64_t clear);
int qcow2_backing_name_ok(const char *name, char *why, size_t whylen);
void qcow2_free_exts(struct qcow2 *q);

/* qcow2_backing.c */
int qcow2_open_backing(struct vdisk *d, const char *name, const char *fmt,
                       const struct vdisk_open_opts *o, struct vdisk **out);
int qcow2_set_backing(struct vdisk *d, const char *name, const char *fmt);

/* qcow2_refcount.c */
int qcow2_get_refcount(struct vdisk *d, uint64_t cluster, uint64_t *rc);
int qcow2_update_refcount(struct vdisk *d, uint64_t off, uint64_t len, int64_t delta);
int qcow2_alloc_clusters(struct vdisk *d, uint64_t n, uint64_t *off);
int qcow2_free_clusters(struct vdisk *d, uint64_t off, uint64_t n);
void qcow2_punch_flush(struct vdisk *d);
int qcow2_load_reftable(struct vdisk *d, struct qcow2 *q, uint64_t fsize);
uint64_t qcow2_rb_get(const struct qcow2 *q, const void *blk, uint64_t i);
void qcow2_rb_set(const struct qcow2 *q, void *blk, uint64_t i, uint64_t v);

/* qcow2_meta.c: cache write-back with ordering, overlap checks, corruption */
int qcow2_meta_flush(struct vdisk *d);          /* refblocks, sync, L2, sync */
int qcow2_cache_writeback(void *opaque, struct qc_cache *c, unsigned idx);
int qcow2_cache_flush_all(void *opaque, struct qc_cache *c);
int qcow2_write_entry(struct vdisk *d, struct qc_cache *c, unsigned idx);
const char *qcow2_overlaps(struct qcow2 *q, uint64_t off, uint64_t len);
int qcow2_signal_corruption(struct vdisk *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int qcow2_rebuild_osets(struct qcow2 *q);
int qcow2_mark_dirty(struct vdisk *d);
/* Extend the file (never shrink) to host_end; metadata lock held. */
int qcow2_cover_end(struct vdisk *d);

/* qcow2_cluster.c: L1/L2 lookup and update */
int qcow2_get_l2e(struct vdisk *d, uint64_t guest, uint64_t *e, uint64_t *bitmap);
/* Make the L2 table for guest writable (allocate/COW), then set the entry. */
int qcow2_set_l2e(struct vdisk *d, uint64_t guest, uint64_t e, uint64_t bitmap);
enum qc_kind qcow2_kind(const struct qcow2 *q, uint64_t e);
int qcow2_check_l2e(struct vdisk *d, uint64_t guest, uint64_t e);
void qcow2_compressed_loc(const struct qcow2 *q, uint64_t e, uint64_t *off, uint64_t *len);
int qcow2_free_l2e_target(struct vdisk *d, uint64_t e); /* drop the entry's host refs */
/* Free the entry's clusters after the next metadata flush (which is when
 * the L2 entry that replaced it is on disk); metadata lock held. */
int qcow2_defer_free(struct vdisk *d, uint64_t e);
/* Switch to a new active L1 table of `need` entries copied from src (NULL:
 * the current one), crash-safely; the old table's clusters are freed. */
int qcow2_replace_l1(struct vdisk *d, const uint64_t *src, uint32_t need);
int qcow2_grow_l1(struct vdisk *d, uint32_t need);
int qcow2_write_l1_dirty(struct vdisk *d);
/* Change an active L1 entry; it reaches the disk at the next metadata flush. */
void qcow2_set_l1e(struct qcow2 *q, uint64_t l1i, uint64_t v);
int qcow2_alloc_l1_dirty(struct qcow2 *q);

/* qcow2_compress.c */
int qcow2_decompress(struct qcow2 *q, const uint8_t *in, size_t inlen,
                     uint8_t *out, size_t outlen);
ssize_t qcow2_compress(struct qcow2 *q, const uint8_t *in, size_t inlen,
                       uint8_t *out, size_t outcap);

/* qcow2_io.c */
extern const struct vdisk_ops vdisk_qcow2_ops;
int qcow2_read_cluster_content(struct vdisk *d, uint64_t guest_cluster, uint64_t e,
                               uint64_t bitmap, uint8_t *buf);

/* qcow2_check.c */
int qcow2_check(struct vdisk *d, struct vdisk_check_result *r, unsigned fix);

/* qcow2_create.c */
int qcow2_create(const char *path, const struct vdisk_create_opts *o,
                 struct vdisk_error *err);

/* qcow2_snapshot.c */
int qcow2_read_snapshots(struct vdisk *d, struct qcow2 *q, uint64_t fsize);
void qcow2_free_snapshots(struct qcow2 *q);
int qcow2_snap_list(struct vdisk *d, struct vdisk_snapshot **l, unsigned *n);
int qcow2_snap_create(struct vdisk *d, const struct vdisk_snapshot_params *p);
int qcow2_snap_apply(struct vdisk *d, const char *name);
int qcow2_snap_delete(struct vdisk *d, const char *name);
int qcow2_snap_vmstate(struct vdisk *d, const char *name, void *buf, uint64_t len, uint64_t off);

#endif
