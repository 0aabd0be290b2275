/* SPDX-License-Identifier: MIT */
/* qcow2 L1/L2: entry lookup, validation, L2 allocation and copy-on-write. */
#include "qcow2.h"

#include <stdlib.h>

enum qc_kind qcow2_kind(const struct qcow2 *q, uint64_t e)
{
	if (e & QCOW_OFLAG_COMPRESSED)
		return QC_COMPRESSED;
	if (!q->ext_l2 && q->version >= 3 && (e & QCOW_OFLAG_ZERO))
		return QC_ZERO;
	if (e & L2E_OFFSET_MASK)
		return QC_NORMAL;
	return QC_UNALLOC;
}

void qcow2_compressed_loc(const struct qcow2 *q, uint64_t e, uint64_t *off, uint64_t *len)
{
	unsigned x = 62 - (q->cluster_bits - 8);
	*off = e & ((1ull << x) - 1);
	uint64_t nsec = ((e >> x) & ((1ull << (q->cluster_bits - 8)) - 1)) + 1;
	*len = nsec * 512;
}

static int slice_of(struct vdisk *d, uint64_t guest, uint64_t l2off, uint8_t **slice,
                    unsigned *idx, uint64_t *pos)
{
	struct qcow2 *q = Q(d);
	uint64_t l2i = (guest >> q->cluster_bits) & (qc_l2_entries(q) - 1);
	uint64_t sb = q->l2c.entry_size;
	uint64_t soff = l2off + (l2i / q->slice_entries) * sb;
	int r = qc_cache_get(&q->l2c, d->fd, soff, false, slice, idx);
	if (r < 0)
		return vd_err(d, r, "reading L2 table at %#llx: %s", (unsigned long long)l2off,
		              strerror(-r));
	*pos = (l2i % q->slice_entries) * q->l2_entry_size;
	return 0;
}

int qcow2_get_l2e(struct vdisk *d, uint64_t guest, uint64_t *e, uint64_t *bitmap)
{
	struct qcow2 *q = Q(d);
	uint64_t l1i = guest >> (q->cluster_bits + q->l2_bits);
	*e = 0;
	*bitmap = 0;
	if (l1i >= q->l1_size)
		return 0;
	uint64_t l2off = q->l1[l1i] & L1E_OFFSET_MASK;
	if (!l2off)
		return 0;
	uint8_t *s;
	unsigned idx;
	uint64_t pos;
	int r = slice_of(d, guest, l2off, &s, &idx, &pos);
	if (r < 0)
		return r;
	*e = vd_be64(s + pos);
	if (q->ext_l2)
		*bitmap = vd_be64(s + pos + 8);
	return 0;
}

int qcow2_check_l2e(struct vdisk *d, uint64_t guest, uint64_t e)
{
	struct qcow2 *q = Q(d);
	enum qc_kind k = qcow2_kind(q, e);
	if (k == QC_COMPRESSED) {
		uint64_t off, len;
		qcow2_compressed_loc(q, e, &off, &len);
		if (off < q->cluster_size)
			return qcow2_signal_corruption(d, "compressed cluster for guest offset %#llx "
			                               "points into the image header",
			                               (unsigned long long)guest);
		return 0;
	}
	uint64_t host = e & L2E_OFFSET_MASK;
	if (!host)
		return 0;
	if (host & (q->cluster_size - 1))
		return qcow2_signal_corruption(d, "L2 entry for guest offset %#llx has an unaligned "
		                               "host offset %#llx", (unsigned long long)guest,
		                               (unsigned long long)host);
	const char *ov = qcow2_overlaps(q, host, q->cluster_size);
	if (ov)
		return qcow2_signal_corruption(d, "data cluster for guest offset %#llx at %#llx "
		                               "overlaps %s", (unsigned long long)guest,
		                               (unsigned long long)host, ov);
	return 0;
}

static int write_l1e(struct vdisk *d, uint64_t l1i, uint64_t v)
{
	struct qcow2 *q = Q(d);
	uint8_t be[8];
	vd_put_be64(be, v);
	int r = vd_pwrite_full(d->fd, be, 8, q->l1_offset + l1i * 8);
	if (r < 0)
		return vd_err(d, r, "writing L1 entry %llu: %s", (unsigned long long)l1i, strerror(-r));
	q->l1[l1i] = v;
	return 0;
}

/* Give the guest range of l1i a private (refcount 1) L2 table. */
static int l2_make_writable(struct vdisk *d, uint64_t l1i)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, l1e = q->l1[l1i];
	uint64_t old = l1e & L1E_OFFSET_MASK;
	if (old && (l1e & QCOW_OFLAG_COPIED))
		return 0;
	uint8_t *buf = calloc(1, cs);
	if (!buf)
		return vd_err(d, -ENOMEM, "out of memory");
	int r;
	uint64_t nw;
	if (old) {
		/* shared with a snapshot: copy it. The data clusters keep their
		 * refcounts (one per referencing table, as qemu counts them). */
		if ((r = vd_pread_zero(d->fd, buf, cs, old)) < 0) {
			r = vd_err(d, r, "reading L2 table: %s", strerror(-r));
			goto out;
		}
		for (uint64_t i = 0; i < qc_l2_entries(q); i++) {
			uint8_t *p = buf + i * q->l2_entry_size;
			vd_put_be64(p, vd_be64(p) & ~QCOW_OFLAG_COPIED);
		}
	}
	if ((r = qcow2_alloc_clusters(d, 1, &nw)) < 0)
		goto out;
	if ((r = qc_cache_flush(&q->rbc)) < 0)
		goto out;
	if ((r = vd_pwrite_full(d->fd, buf, cs, nw)) < 0) {
		r = vd_err(d, r, "writing a new L2 table: %s", strerror(-r));
		goto out;
	}
	q->host_end = VD_MAX(q->host_end, nw + cs);
	if (!(q->compat & QCOW2_COMPAT_LAZY) && (r = vd_fdatasync(d->fd)) < 0)
		goto out;
	if ((r = qc_oset_add(&q->l2_tabs, nw)) < 0)
		goto out;
	if ((r = write_l1e(d, l1i, nw | QCOW_OFLAG_COPIED)) < 0)
		goto out;
	if (old) {
		qc_oset_del(&q->l2_tabs, old);
		qc_cache_discard(&q->l2c, old, cs);
		if ((r = vd_fdatasync(d->fd)) < 0)
			goto out;
		r = qcow2_update_refcount(d, old, cs, -1);
	}
out:
	free(buf);
	return r;
}

int qcow2_set_l2e(struct vdisk *d, uint64_t guest, uint64_t e, uint64_t bitmap)
{
	struct qcow2 *q = Q(d);
	uint64_t l1i = guest >> (q->cluster_bits + q->l2_bits);
	if (l1i >= q->l1_size)
		return vd_err(d, -EINVAL, "guest offset %#llx beyond the L1 table",
		              (unsigned long long)guest);
	int r = l2_make_writable(d, l1i);
	if (r < 0)
		return r;
	uint8_t *s;
	unsigned idx;
	uint64_t pos;
	if ((r = slice_of(d, guest, q->l1[l1i] & L1E_OFFSET_MASK, &s, &idx, &pos)) < 0)
		return r;
	vd_put_be64(s + pos, e);
	if (q->ext_l2)
		vd_put_be64(s + pos + 8, bitmap);
	qc_cache_mark_dirty(&q->l2c, idx);
	return 0;
}

int qcow2_free_l2e_target(struct vdisk *d, uint64_t e)
{
	struct qcow2 *q = Q(d);
	if (qcow2_kind(q, e) == QC_COMPRESSED) {
		uint64_t co, cl;
		qcow2_compressed_loc(q, e, &co, &cl);
		co &= ~511ull;
		uint64_t cs = q->cluster_size;
		uint64_t first = co / cs, last = (co + cl - 1) / cs;
		return qcow2_free_clusters(d, first * cs, last - first + 1);
	}
	uint64_t host = e & L2E_OFFSET_MASK;
	return host ? qcow2_free_clusters(d, host, 1) : 0;
}
