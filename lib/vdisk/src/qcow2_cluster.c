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

/* The in-memory L1 entry changes now; the table on disk at the next
 * metadata flush, after the L2 table it points to is durable. */
void qcow2_set_l1e(struct qcow2 *q, uint64_t l1i, uint64_t v)
{
	q->l1[l1i] = v;
	q->l1_dirty[l1i / 64 / 64] |= 1ull << (l1i / 64 % 64);
	q->l1_ndirty++;
}

/* Write the L1 blocks (512 bytes, 64 entries) changed since the last call. */
int qcow2_write_l1_dirty(struct vdisk *d)
{
	struct qcow2 *q = Q(d);
	if (!q->l1_ndirty)
		return 0;
	uint64_t nblk = VD_DIV_UP(q->l1_size, 64);
	uint64_t be[64];
	for (uint64_t b = 0; b < nblk; b++) {
		if (!(q->l1_dirty[b / 64] >> (b % 64) & 1))
			continue;
		uint64_t n = VD_MIN(64, q->l1_size - b * 64);
		for (uint64_t i = 0; i < n; i++)
			vd_put_be64(&be[i], q->l1[b * 64 + i]);
		int r = vd_pwrite_full(d->fd, be, n * 8, q->l1_offset + b * 512);
		if (r < 0)
			return vd_err(d, r, "writing the L1 table: %s", strerror(-r));
		q->l1_dirty[b / 64] &= ~(1ull << (b % 64));
	}
	q->l1_ndirty = 0;
	return 0;
}

/* Give the guest range of l1i a private (refcount 1) L2 table. */
static int l2_make_writable(struct vdisk *d, uint64_t l1i)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, l1e = q->l1[l1i], rc;
	uint64_t old = l1e & L1E_OFFSET_MASK;
	if (old && (l1e & QCOW_OFLAG_COPIED))
		return 0;
	int r;
	if (old) {
		/* COPIED clear but not actually shared: just fix the flag */
		if ((r = qcow2_get_refcount(d, old / cs, &rc)) < 0)
			return r;
		if (rc == 1) {
			qcow2_set_l1e(q, l1i, l1e | QCOW_OFLAG_COPIED);
			return 0;
		}
	}
	uint8_t *buf = calloc(1, cs);
	if (!buf)
		return vd_err(d, -ENOMEM, "out of memory");
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
	/* not synced here: the metadata flush syncs before the L1 entry
	 * reaches the disk */
	if ((r = vd_pwrite_full(d->fd, buf, cs, nw)) < 0) {
		r = vd_err(d, r, "writing a new L2 table: %s", strerror(-r));
		goto out;
	}
	if ((r = qc_oset_add(&q->l2_tabs, nw)) < 0)
		goto out;
	qcow2_set_l1e(q, l1i, nw | QCOW_OFLAG_COPIED);
	if (old) {
		qc_oset_del(&q->l2_tabs, old);
		qc_cache_discard(&q->l2c, old, cs);
		/* the old table loses the active reference once the new L1
		 * entry is on disk */
		r = qcow2_defer_free(d, old);
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

/* Replace the active L1 table by a new one of `need` entries (entries past
 * the old size are zero, COPIED flags as in `src` or the current table):
 * written to fresh clusters and synced, then the header is switched with
 * one 12-byte write, then the old table's clusters are freed. A crash at
 * any point leaves either table in place and at worst leaked clusters. */
int qcow2_replace_l1(struct vdisk *d, const uint64_t *src, uint32_t need)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size;
	if ((uint64_t)need * 8 > QCOW2_MAX_L1_BYTES)
		return vd_err(d, -EFBIG, "an L1 table of %u entries exceeds %u bytes", need,
		              QCOW2_MAX_L1_BYTES);
	if (!src)
		src = q->l1;
	uint32_t have = src == q->l1 ? q->l1_size : need;
	uint64_t nl1c = VD_DIV_UP((uint64_t)need * 8, cs), noff = 0;
	uint64_t *nl1 = calloc(nl1c * cs / 8, 8), *be = calloc(nl1c * cs / 8, 8);
	int r;
	if (!nl1 || !be) {
		r = vd_err(d, -ENOMEM, "out of memory");
		goto out;
	}
	memcpy(nl1, src, (size_t)VD_MIN(have, need) * 8);
	for (uint64_t i = 0; i < need; i++)
		vd_put_be64(&be[i], nl1[i]);
	if ((r = qcow2_meta_flush(d)) < 0 || (r = qcow2_alloc_clusters(d, nl1c, &noff)) < 0)
		goto out;
	if ((r = qcow2_meta_flush(d)) < 0)
		goto out;
	if ((r = vd_pwrite_full(d->fd, be, nl1c * cs, noff)) < 0 || (r = vd_fdatasync(d->fd)) < 0) {
		r = vd_err(d, r, "writing the new L1 table: %s", strerror(-r));
		goto out;
	}
	uint8_t h[12];
	vd_put_be32(h, need);
	vd_put_be64(h + 4, noff);
	if ((r = vd_pwrite_full(d->fd, h, 12, 36)) < 0 || (r = vd_fdatasync(d->fd)) < 0) {
		r = vd_err(d, r, "switching the L1 table: %s", strerror(-r));
		goto out;
	}
	uint64_t ooff = q->l1_offset, osz = q->l1_size;
	free(q->l1);
	q->l1 = nl1;
	nl1 = NULL;
	q->l1_offset = noff;
	q->l1_size = need;
	if ((r = qcow2_alloc_l1_dirty(q)) < 0)
		goto out;
	if ((r = qcow2_rebuild_osets(q)) < 0)
		goto out;
	if (osz)
		r = qcow2_free_clusters(d, ooff, VD_DIV_UP(osz * 8, cs));
out:
	free(nl1);
	free(be);
	return r;
}

int qcow2_grow_l1(struct vdisk *d, uint32_t need)
{
	struct qcow2 *q = Q(d);
	if (need <= q->l1_size)
		return 0;
	return qcow2_replace_l1(d, NULL, need);
}

int qcow2_alloc_l1_dirty(struct qcow2 *q)
{
	free(q->l1_dirty);
	q->l1_ndirty = 0;
	q->l1_dirty = calloc(VD_DIV_UP(VD_DIV_UP((uint64_t)q->l1_size, 64), 64) + 1, 8);
	return q->l1_dirty ? 0 : -ENOMEM;
}
