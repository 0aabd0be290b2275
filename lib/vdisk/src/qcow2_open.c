/* SPDX-License-Identifier: MIT */
/* qcow2 open, close, info, resize. */
#include "qcow2.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_L2_CACHE_MAX (32u << 20)
#define DEFAULT_SLICE 4096u
#define RB_CACHE_BYTES (4u << 20)

static void qcow2_free(struct qcow2 *q)
{
	if (!q)
		return;
	qc_cache_destroy(&q->l2c);
	qc_cache_destroy(&q->rbc);
	qc_oset_free(&q->l2_tabs);
	qc_oset_free(&q->refblocks);
	qcow2_free_snapshots(q);
	qcow2_free_exts(q);
	free(q->l1);
	free(q->l1_dirty);
	free(q->reftable);
	free(q->backing_name);
	free(q->backing_fmt);
	free(q->zbuf);
	free(q->pend);
	free(q->punch);
	pthread_mutex_destroy(&q->lock);
	free(q);
}

static int load_l1(struct vdisk *d, struct qcow2 *q, uint64_t fsize)
{
	uint64_t cs = q->cluster_size;
	q->l1 = calloc(q->l1_size ? q->l1_size : 1, 8);
	if (!q->l1)
		return vd_err(d, -ENOMEM, "out of memory for the L1 table");
	if (!q->l1_size)
		return 0;
	int r = vd_pread_full(d->fd, q->l1, (size_t)q->l1_size * 8, q->l1_offset);
	if (r < 0)
		return vd_err(d, r, "'%s': reading the L1 table: %s", d->path, strerror(-r));
	for (uint32_t i = 0; i < q->l1_size; i++) {
		uint64_t e = vd_be64(&q->l1[i]);
		q->l1[i] = e;
		uint64_t o = e & L1E_OFFSET_MASK;
		if (!o)
			continue;
		if (o % cs)
			return vd_err(d, -EINVAL, "'%s': L2 table offset %#llx unaligned (L1 index %u)",
			              d->path, (unsigned long long)o, i);
		if (o >= fsize)
			return vd_err(d, -EINVAL, "'%s': L2 table %u at %#llx lies beyond the end of the file",
			              d->path, i, (unsigned long long)o);
	}
	return 0;
}

/* Structural overlaps between the tables found at open. */
static int check_layout(struct vdisk *d, struct qcow2 *q)
{
	uint64_t cs = q->cluster_size;
	for (uint32_t i = 0; i < q->l1_size; i++) {
		uint64_t o = q->l1[i] & L1E_OFFSET_MASK;
		if (!o)
			continue;
		struct qc_oset save = q->l2_tabs;
		q->l2_tabs.n = 0; /* do not match itself */
		const char *ov = qcow2_overlaps(q, o, cs);
		q->l2_tabs = save;
		if (ov)
			return vd_err(d, -EINVAL, "'%s': L2 table %u at %#llx overlaps %s", d->path, i,
			              (unsigned long long)o, ov);
	}
	for (uint64_t i = 0; i < q->reftable_entries; i++) {
		uint64_t o = q->reftable[i];
		if (!o)
			continue;
		struct qc_oset save = q->refblocks;
		q->refblocks.n = 0;
		const char *ov = qcow2_overlaps(q, o, cs);
		q->refblocks = save;
		if (ov)
			return vd_err(d, -EINVAL, "'%s': refcount block %llu at %#llx overlaps %s", d->path,
			              (unsigned long long)i, (unsigned long long)o, ov);
	}
	return 0;
}

int qcow2_open(struct vdisk *d, const struct vdisk_open_opts *o)
{
	struct stat st;
	if (fstat(d->fd, &st) < 0)
		return vd_err(d, -errno, "stat '%s': %s", d->path, strerror(errno));
	uint64_t fsize = (uint64_t)st.st_size;
	struct qcow2 *q = calloc(1, sizeof(*q));
	if (!q)
		return vd_err(d, -ENOMEM, "out of memory");
	pthread_mutex_init(&q->lock, NULL);
	q->d = d;
	d->priv = q;
	uint8_t hdr[112] = {0};
	uint8_t *c0 = NULL;
	int r = vd_pread_zero(d->fd, hdr, sizeof(hdr), 0);
	if (r < 0) {
		r = vd_err(d, r, "reading '%s': %s", d->path, strerror(-r));
		goto fail;
	}
	if (fsize < 72 || vd_be32(hdr) != QCOW2_MAGIC) {
		r = vd_err(d, -EINVAL, "'%s' is not a qcow2 image (bad magic or too short)", d->path);
		goto fail;
	}
	uint32_t cb = vd_be32(hdr + 20);
	if (cb < 9 || cb > 21) {
		r = vd_err(d, -EINVAL, "'%s': cluster size 2^%u outside 512 B..2 MiB", d->path, cb);
		goto fail;
	}
	c0 = malloc(1u << cb);
	if (!c0) {
		r = vd_err(d, -ENOMEM, "out of memory");
		goto fail;
	}
	if ((r = vd_pread_zero(d->fd, c0, 1u << cb, 0)) < 0) {
		r = vd_err(d, r, "reading '%s': %s", d->path, strerror(-r));
		goto fail;
	}
	if ((r = qcow2_read_header(d, q, c0, fsize, o->flags & VDISK_OPEN_ALLOW_DATA_FILE)) < 0)
		goto fail;
	free(c0);
	c0 = NULL;
	uint64_t cs = q->cluster_size;
	d->lock_align = q->ext_l2 ? (1u << q->sc_bits) : q->cluster_size;
	d->lock_align = q->cluster_size;

	if (d->rw && (q->incompat & QCOW2_INCOMPAT_CORRUPT) &&
	    !(o->flags & VDISK_OPEN_FORCE_CORRUPT)) {
		r = vd_err(d, -EACCES, "'%s' is marked corrupt (the corrupt bit is set); open it "
		           "read-only, or repair it with 'tern-img check -r all'", d->path);
		goto fail;
	}
	if ((r = load_l1(d, q, fsize)) < 0 || (r = qcow2_load_reftable(d, q, fsize)) < 0 ||
	    (r = qcow2_read_snapshots(d, q, fsize)) < 0)
		goto fail;
	if ((r = qcow2_rebuild_osets(q)) < 0 || (r = check_layout(d, q)) < 0)
		goto fail;
	if (qcow2_alloc_l1_dirty(q) < 0) {
		r = vd_err(d, -ENOMEM, "out of memory");
		goto fail;
	}
	if (q->incompat & QCOW2_INCOMPAT_CORRUPT)
		q->broken = true;

	/* caches */
	uint32_t slice = o->l2_slice_bytes ? o->l2_slice_bytes : DEFAULT_SLICE;
	if (slice < 512 || (slice & (slice - 1)))
		slice = DEFAULT_SLICE;
	slice = VD_MIN(slice, (uint32_t)cs);
	slice = VD_MAX(slice, q->l2_entry_size);
	q->slice_entries = slice / q->l2_entry_size;
	uint64_t want = o->l2_cache_bytes;
	if (!want) {
		uint64_t need = VD_DIV_UP(d->size, cs) * q->l2_entry_size;
		want = VD_MIN(VD_MAX(need, 8 * (uint64_t)slice), (uint64_t)DEFAULT_L2_CACHE_MAX);
	}
	if ((r = qc_cache_init(&q->l2c, slice, (unsigned)VD_MAX(want / slice, 4),
	                       qcow2_cache_writeback, d)) < 0 ||
	    (r = qc_cache_init(&q->rbc, cs, (unsigned)VD_MAX(RB_CACHE_BYTES / cs, 4),
	                       qcow2_cache_writeback, d)) < 0) {
		r = vd_err(d, -ENOMEM, "out of memory for the metadata caches");
		goto fail;
	}
	q->l2c.flush_all = q->rbc.flush_all = qcow2_cache_flush_all;
	q->zbuf = calloc(1, cs);
	if (!q->zbuf) {
		r = vd_err(d, -ENOMEM, "out of memory");
		goto fail;
	}
	q->host_end = VD_ALIGN_UP(fsize, cs);
	q->file_end = fsize;

	if (q->backing_name && !(o->flags & VDISK_OPEN_NO_BACKING) &&
	    (r = qcow2_open_backing(d, q->backing_name,
	                            (d->depth == 0 && o->backing_format) ? o->backing_format
	                                                                 : q->backing_fmt,
	                            o, &d->backing)) < 0)
		goto fail;

	if (d->rw) {
		if (q->autoclear) {
			/* we do not maintain what autoclear features describe */
			q->autoclear = 0;
			uint8_t z[8] = {0};
			if (q->version >= 3 && (r = vd_pwrite_full(d->fd, z, 8, 88)) < 0) {
				r = vd_err(d, r, "clearing autoclear bits: %s", strerror(-r));
				goto fail;
			}
		}
		if ((q->incompat & QCOW2_INCOMPAT_DIRTY) && !(o->flags & VDISK_OPEN_NO_REPAIR)) {
			struct vdisk_check_result cr = {0};
			if ((r = qcow2_check(d, &cr, VDISK_FIX_LEAKS | VDISK_FIX_ERRORS)) < 0)
				goto fail;
			if (cr.corruptions > cr.corruptions_fixed) {
				r = vd_err(d, -EIO, "'%s': dirty image could not be repaired", d->path);
				goto fail;
			}
			if ((r = qcow2_update_incompat(d, q, 0, QCOW2_INCOMPAT_DIRTY)) < 0)
				goto fail;
		}
	}
	return 0;
fail:
	free(c0);
	qcow2_free(q);
	d->priv = NULL;
	return r;
}

int qcow2_close(struct vdisk *d)
{
	struct qcow2 *q = Q(d);
	int r = 0;
	if (!q)
		return 0;
	if (d->rw && !q->broken) {
		pthread_mutex_lock(&q->lock);
		r = qcow2_meta_flush(d);
		if (r == 0 && q->dirty_on_disk)
			r = qcow2_update_incompat(d, q, 0, QCOW2_INCOMPAT_DIRTY);
		pthread_mutex_unlock(&q->lock);
	}
	qcow2_free(q);
	d->priv = NULL;
	return r;
}

int qcow2_info(struct vdisk *d, struct vdisk_info *info)
{
	struct qcow2 *q = Q(d);
	pthread_mutex_lock(&q->lock);
	info->cluster_size = q->cluster_size;
	info->compat = (int)q->version;
	info->refcount_bits = q->refcount_bits;
	info->lazy_refcounts = q->compat & QCOW2_COMPAT_LAZY;
	info->corrupt = q->incompat & QCOW2_INCOMPAT_CORRUPT;
	info->dirty = q->incompat & QCOW2_INCOMPAT_DIRTY;
	info->extended_l2 = q->ext_l2;
	info->compression = q->compression_type ? VDISK_COMPRESS_ZSTD : VDISK_COMPRESS_ZLIB;
	if (q->backing_name)
		snprintf(info->backing_file, sizeof(info->backing_file), "%s", q->backing_name);
	if (q->backing_fmt)
		snprintf(info->backing_format, sizeof(info->backing_format), "%s", q->backing_fmt);
	if (d->backing)
		snprintf(info->backing_resolved, sizeof(info->backing_resolved), "%s", d->backing->path);
	info->nb_snapshots = q->nb_snaps;
	pthread_mutex_unlock(&q->lock);
	return 0;
}

/* Grow (or shrink, when the tail is unused) the virtual size. */
int qcow2_resize(struct vdisk *d, uint64_t size, unsigned flags)
{
	(void)flags;
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, cover = cs << q->l2_bits;
	int r = 0;
	if (q->broken)
		return vd_err(d, -EIO, "image is corrupt; resize refused");
	if (q->nb_snaps && size < d->size)
		return vd_err(d, -ENOTSUP, "cannot shrink an image with internal snapshots");
	pthread_mutex_lock(&q->lock);
	if (size < d->size) {
		/* drop the mappings beyond the new end */
		uint64_t from = VD_ALIGN_UP(size, cs);
		pthread_mutex_unlock(&q->lock);
		if (from < d->size && (r = d->ops->discard(d, from, d->size - from)) < 0)
			return r;
		pthread_mutex_lock(&q->lock);
		for (uint64_t p = from; p < d->size && r == 0; p += cs) {
			uint64_t e, bm;
			if ((r = qcow2_get_l2e(d, p, &e, &bm)) < 0)
				break;
			if (e & ~QCOW_OFLAG_ZERO) {
				r = vd_err(d, -EBUSY, "cannot shrink: data remains beyond the new size");
				break;
			}
		}
	}
	uint64_t need = VD_DIV_UP(size, cover);
	if (r == 0 && need * 8 > QCOW2_MAX_L1_BYTES)
		r = vd_err(d, -EFBIG, "new size needs an L1 table over %u bytes", QCOW2_MAX_L1_BYTES);
	else if (r == 0 && need > q->l1_size)
		r = qcow2_grow_l1(d, (uint32_t)need);
	if (r == 0) {
		uint8_t b[8];
		vd_put_be64(b, size);
		if ((r = vd_pwrite_full(d->fd, b, 8, 24)) == 0 && (r = vd_fdatasync(d->fd)) == 0)
			d->size = size;
		else
			r = vd_err(d, r, "writing the new size: %s", strerror(-r));
	}
	pthread_mutex_unlock(&q->lock);
	return r;
}
