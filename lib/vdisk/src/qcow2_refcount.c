/* SPDX-License-Identifier: MIT */
/* qcow2 refcounts: every width from 1 to 64 bits, block allocation,
 * refcount-table growth, cluster allocation and freeing. */
#include "qcow2.h"

#include <fcntl.h>
#include <stdlib.h>

uint64_t qcow2_rb_get(const struct qcow2 *q, const void *blk, uint64_t i)
{
	const uint8_t *b = blk;
	switch (q->refcount_order) {
	case 0: return b[i / 8] >> (i % 8) & 1;
	case 1: return b[i / 4] >> (2 * (i % 4)) & 3;
	case 2: return b[i / 2] >> (4 * (i % 2)) & 15;
	case 3: return b[i];
	case 4: return vd_be16(b + 2 * i);
	case 5: return vd_be32(b + 4 * i);
	default: return vd_be64(b + 8 * i);
	}
}

void qcow2_rb_set(const struct qcow2 *q, void *blk, uint64_t i, uint64_t v)
{
	uint8_t *b = blk;
	switch (q->refcount_order) {
	case 0: b[i / 8] = (uint8_t)((b[i / 8] & ~(1u << (i % 8))) | v << (i % 8)); break;
	case 1: b[i / 4] = (uint8_t)((b[i / 4] & ~(3u << 2 * (i % 4))) | v << 2 * (i % 4)); break;
	case 2: b[i / 2] = (uint8_t)((b[i / 2] & ~(15u << 4 * (i % 2))) | v << 4 * (i % 2)); break;
	case 3: b[i] = (uint8_t)v; break;
	case 4: vd_put_be16(b + 2 * i, (uint16_t)v); break;
	case 5: vd_put_be32(b + 4 * i, (uint32_t)v); break;
	default: vd_put_be64(b + 8 * i, v); break;
	}
}

static uint64_t rc_max(const struct qcow2 *q)
{
	return q->refcount_bits == 64 ? UINT64_MAX : (1ull << q->refcount_bits) - 1;
}

int qcow2_load_reftable(struct vdisk *d, struct qcow2 *q, uint64_t fsize)
{
	uint64_t cs = q->cluster_size;
	uint64_t bytes = (uint64_t)q->reftable_clusters * cs;
	q->reftable_entries = bytes / 8;
	q->reftable = malloc(bytes);
	if (!q->reftable)
		return vd_err(d, -ENOMEM, "out of memory for the refcount table");
	int r = vd_pread_zero(d->fd, q->reftable, bytes, q->reftable_offset);
	if (r < 0)
		return vd_err(d, r, "reading the refcount table: %s", strerror(-r));
	for (uint64_t i = 0; i < q->reftable_entries; i++) {
		uint64_t e = vd_be64(&q->reftable[i]);
		q->reftable[i] = e;
		if (!e)
			continue;
		if (e & 0x1ff)
			return vd_err(d, -EINVAL, "'%s': refcount table entry %llu (%#llx) has reserved bits set",
			              d->path, (unsigned long long)i, (unsigned long long)e);
		if (e % cs)
			return vd_err(d, -EINVAL, "'%s': refcount block %llu at %#llx is not cluster-aligned",
			              d->path, (unsigned long long)i, (unsigned long long)e);
		if (e < cs)
			return vd_err(d, -EINVAL, "'%s': refcount block %llu at offset 0 overlaps the header",
			              d->path, (unsigned long long)i);
		if (e >= fsize)
			return vd_err(d, -EINVAL, "'%s': refcount block %llu at %#llx lies beyond the end "
			              "of the file (%llu)", d->path, (unsigned long long)i,
			              (unsigned long long)e, (unsigned long long)fsize);
	}
	return 0;
}

static int load_block(struct vdisk *d, uint64_t bi, uint8_t **blk, unsigned *idx)
{
	struct qcow2 *q = Q(d);
	int r = qc_cache_get(&q->rbc, d->fd, q->reftable[bi], false, blk, idx);
	if (r < 0)
		return vd_err(d, r, "reading refcount block %llu: %s", (unsigned long long)bi,
		              strerror(-r));
	return 0;
}

int qcow2_get_refcount(struct vdisk *d, uint64_t cluster, uint64_t *rc)
{
	struct qcow2 *q = Q(d);
	uint64_t bi = cluster >> q->rb_bits;
	if (bi >= q->reftable_entries || !q->reftable[bi]) {
		*rc = 0;
		return 0;
	}
	uint8_t *blk;
	unsigned idx;
	int r = load_block(d, bi, &blk, &idx);
	if (r < 0)
		return r;
	*rc = qcow2_rb_get(q, blk, cluster & ((1ull << q->rb_bits) - 1));
	return 0;
}

/* Grow the refcount table so that entry `need` exists. The new table and
 * the refcount blocks describing it go into a fresh area past everything
 * the old table covers; each step leaves at worst leaked clusters. */
static int grow_reftable(struct vdisk *d, uint64_t need)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, old_n = q->reftable_entries;
	qcow2_punch_flush(d);
	uint64_t A = VD_MAX(VD_DIV_UP(q->host_end, cs), old_n << q->rb_bits);
	uint64_t nb = 0, nt = 0;
	for (int iter = 0; iter < 16; iter++) {
		uint64_t area_end = A + nb + nt;
		uint64_t first_bi = A >> q->rb_bits;
		uint64_t last_bi = (area_end ? area_end - 1 : 0) >> q->rb_bits;
		if (area_end == A)
			last_bi = first_bi;
		uint64_t entries = VD_MAX(VD_MAX(need + 1, last_bi + 1), old_n * 2);
		uint64_t nt2 = VD_DIV_UP(entries * 8, cs), nb2 = last_bi - first_bi + 1;
		if (nt2 == nt && nb2 == nb)
			break;
		nt = nt2;
		nb = nb2;
	}
	if (nt * cs > QCOW2_MAX_REFTABLE_BYTES)
		return vd_err(d, -EFBIG, "refcount table would exceed %u bytes", QCOW2_MAX_REFTABLE_BYTES);
	uint64_t first_bi = A >> q->rb_bits;
	uint64_t area_end = A + nb + nt;
	uint8_t *blk = malloc(cs);
	uint64_t *tab = calloc(1, nt * cs);
	uint64_t *newtab = malloc(nt * cs);
	int r = 0;
	if (!blk || !tab || !newtab) {
		r = vd_err(d, -ENOMEM, "out of memory growing the refcount table");
		goto out;
	}
	for (uint64_t k = 0; k < nb; k++) {
		uint64_t bi = first_bi + k;
		memset(blk, 0, cs);
		for (uint64_t c = A; c < area_end; c++)
			if (c >> q->rb_bits == bi)
				qcow2_rb_set(q, blk, c & ((1ull << q->rb_bits) - 1), 1);
		if ((r = vd_pwrite_full(d->fd, blk, cs, (A + k) * cs)) < 0)
			goto io;
	}
	for (uint64_t i = 0; i < old_n; i++)
		newtab[i] = q->reftable[i];
	for (uint64_t i = old_n; i < nt * cs / 8; i++)
		newtab[i] = 0;
	for (uint64_t k = 0; k < nb; k++)
		newtab[first_bi + k] = (A + k) * cs;
	for (uint64_t i = 0; i < nt * cs / 8; i++)
		vd_put_be64(&tab[i], newtab[i]);
	if ((r = vd_pwrite_full(d->fd, tab, nt * cs, (A + nb) * cs)) < 0)
		goto io;
	if ((r = vd_fdatasync(d->fd)) < 0)
		goto io;
	uint8_t hdr[12];
	vd_put_be64(hdr, (A + nb) * cs);
	vd_put_be32(hdr + 8, (uint32_t)nt);
	if ((r = vd_pwrite_full(d->fd, hdr, 12, 48)) < 0 || (r = vd_fdatasync(d->fd)) < 0)
		goto io;
	uint64_t old_off = q->reftable_offset, old_cl = q->reftable_clusters;
	free(q->reftable);
	q->reftable = newtab;
	newtab = NULL;
	q->reftable_entries = nt * cs / 8;
	q->reftable_offset = (A + nb) * cs;
	q->reftable_clusters = (uint32_t)nt;
	for (uint64_t k = 0; k < nb; k++)
		if ((r = qc_oset_add(&q->refblocks, (A + k) * cs)) < 0)
			goto out;
	q->host_end = VD_MAX(q->host_end, area_end * cs);
	r = qcow2_update_refcount(d, old_off, old_cl * cs, -1);
	goto out;
io:
	r = vd_err(d, r, "growing the refcount table: %s", strerror(-r));
out:
	free(blk);
	free(tab);
	free(newtab);
	return r;
}

/* Make refcount block bi exist. A missing block means every cluster it
 * would describe is free, so the block takes the first of them. */
static int ensure_block(struct vdisk *d, uint64_t bi)
{
	struct qcow2 *q = Q(d);
	int r;
	if (bi >= q->reftable_entries && (r = grow_reftable(d, bi)) < 0)
		return r;
	if (q->reftable[bi])
		return 0;
	if (bi == 0)
		return qcow2_signal_corruption(d, "refcount block 0 is missing");
	uint64_t cs = q->cluster_size;
	uint64_t off = (bi << q->rb_bits) * cs;
	qcow2_punch_flush(d);
	const char *ov = qcow2_overlaps(q, off, cs);
	if (ov)
		return qcow2_signal_corruption(d, "new refcount block at %#llx would overlap %s",
		                               (unsigned long long)off, ov);
	uint8_t *blk;
	unsigned idx;
	if ((r = qc_cache_get(&q->rbc, d->fd, off, true, &blk, &idx)) < 0)
		return vd_err(d, r, "refcount cache: %s", strerror(-r));
	qcow2_rb_set(q, blk, 0, 1);
	qc_cache_mark_dirty(&q->rbc, idx);
	if ((r = qcow2_cache_writeback(d, &q->rbc, idx)) < 0)
		return r;
	if ((r = vd_fdatasync(d->fd)) < 0)
		return vd_err(d, r, "fdatasync: %s", strerror(-r));
	uint8_t be[8];
	vd_put_be64(be, off);
	if ((r = vd_pwrite_full(d->fd, be, 8, q->reftable_offset + bi * 8)) < 0)
		return vd_err(d, r, "writing the refcount table: %s", strerror(-r));
	q->reftable[bi] = off;
	if ((r = qc_oset_add(&q->refblocks, off)) < 0)
		return r;
	q->host_end = VD_MAX(q->host_end, off + cs);
	return 0;
}

int qcow2_update_refcount(struct vdisk *d, uint64_t off, uint64_t len, int64_t delta)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size;
	if (!len)
		return 0;
	uint64_t first = off / cs, last = (off + len - 1) / cs;
	for (uint64_t c = first; c <= last; c++) {
		uint64_t bi = c >> q->rb_bits;
		int r;
		if (delta > 0) {
			if ((r = ensure_block(d, bi)) < 0)
				return r;
		} else if (bi >= q->reftable_entries || !q->reftable[bi]) {
			return qcow2_signal_corruption(d, "freeing cluster %#llx which has no refcount block",
			                               (unsigned long long)(c * cs));
		}
		uint8_t *blk;
		unsigned idx;
		if ((r = load_block(d, bi, &blk, &idx)) < 0)
			return r;
		uint64_t i = c & ((1ull << q->rb_bits) - 1);
		uint64_t old = qcow2_rb_get(q, blk, i), nv;
		if (delta < 0) {
			if (old < (uint64_t)-delta)
				return qcow2_signal_corruption(d, "refcount of cluster %#llx would drop below 0",
				                               (unsigned long long)(c * cs));
			nv = old - (uint64_t)-delta;
		} else {
			if (rc_max(q) - old < (uint64_t)delta)
				return vd_err(d, -ERANGE, "refcount of cluster %#llx would overflow %u bits",
				              (unsigned long long)(c * cs), q->refcount_bits);
			nv = old + (uint64_t)delta;
		}
		qcow2_rb_set(q, blk, i, nv);
		qc_cache_mark_dirty(&q->rbc, idx);
		if (nv == 0) {
			if (c < q->free_hint)
				q->free_hint = c;
			qc_cache_discard(&q->l2c, c * cs, cs);
			qc_cache_discard(&q->rbc, c * cs, cs);
		}
	}
	return 0;
}

static bool block_missing(const struct qcow2 *q, uint64_t bi)
{
	return bi >= q->reftable_entries || !q->reftable[bi];
}

/* Missing refcount blocks for clusters [s, s+len). */
static uint64_t count_missing(const struct qcow2 *q, uint64_t s, uint64_t len, uint64_t *maxbi)
{
	uint64_t m = 0;
	*maxbi = 0;
	for (uint64_t bi = s >> q->rb_bits; bi <= (s + len - 1) >> q->rb_bits; bi++)
		if (block_missing(q, bi)) {
			m++;
			*maxbi = bi;
		}
	return m;
}

/* Find n free clusters. Refcount blocks missing for the run are placed
 * at its start (they describe themselves), the data follows them. */
int qcow2_alloc_clusters(struct vdisk *d, uint64_t n, uint64_t *out)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size;
	int r;
	if ((r = qcow2_mark_dirty(d)) < 0)
		return r;
	qcow2_punch_flush(d);
restart:;
	uint64_t s = q->free_hint, first_free = UINT64_MAX, m = 0, maxbi = 0;
	for (;;) {
		uint64_t want = n + m, run = 0, c = s;
		while (run < want) {
			uint64_t rc;
			if ((r = qcow2_get_refcount(d, c, &rc)) < 0)
				return r;
			if (rc) {
				run = 0;
				s = ++c;
				continue;
			}
			if (first_free == UINT64_MAX)
				first_free = c;
			run++;
			c++;
		}
		uint64_t m2 = count_missing(q, s, want, &maxbi);
		if (m2 <= m)
			break;
		m = m2;
	}
	if (m && maxbi >= q->reftable_entries) {
		if ((r = grow_reftable(d, maxbi)) < 0)
			return r;
		goto restart; /* the new table took space somewhere */
	}
	if (m) {
		uint64_t span = n + m;
		uint8_t *blk = malloc(cs);
		if (!blk)
			return vd_err(d, -ENOMEM, "out of memory");
		uint64_t k = 0;
		for (uint64_t bi = s >> q->rb_bits; bi <= (s + span - 1) >> q->rb_bits && r == 0; bi++) {
			if (!block_missing(q, bi))
				continue;
			uint64_t at = s + k++;
			memset(blk, 0, cs);
			for (uint64_t c = s; c < s + m; c++)
				if (c >> q->rb_bits == bi)
					qcow2_rb_set(q, blk, c & ((1ull << q->rb_bits) - 1), 1);
			qc_cache_discard(&q->rbc, at * cs, cs);
			if ((r = vd_pwrite_full(d->fd, blk, cs, at * cs)) < 0)
				r = vd_err(d, r, "writing a refcount block: %s", strerror(-r));
		}
		free(blk);
		if (r < 0)
			return r;
		uint64_t *newoff = calloc(m, sizeof(*newoff)), *newbi = calloc(m, sizeof(*newbi));
		if (!newoff || !newbi) {
			free(newoff);
			free(newbi);
			return vd_err(d, -ENOMEM, "out of memory");
		}
		k = 0;
		for (uint64_t bi = s >> q->rb_bits; bi <= (s + span - 1) >> q->rb_bits; bi++)
			if (block_missing(q, bi)) {
				newbi[k] = bi;
				newoff[k] = (s + k) * cs;
				k++;
			}
		for (uint64_t c = s; c < s + m && r == 0; c++)
			if (!block_missing(q, c >> q->rb_bits))
				r = qcow2_update_refcount(d, c * cs, cs, 1);
		if (r == 0)
			r = qc_cache_flush(&q->rbc);
		if (r == 0 && (r = vd_fdatasync(d->fd)) < 0)
			r = vd_err(d, r, "fdatasync: %s", strerror(-r));
		for (uint64_t i = 0; i < m && r == 0; i++) {
			uint8_t be[8];
			vd_put_be64(be, newoff[i]);
			if ((r = vd_pwrite_full(d->fd, be, 8, q->reftable_offset + newbi[i] * 8)) < 0) {
				r = vd_err(d, r, "writing the refcount table: %s", strerror(-r));
				break;
			}
			q->reftable[newbi[i]] = newoff[i];
			r = qc_oset_add(&q->refblocks, newoff[i]);
		}
		free(newoff);
		free(newbi);
		if (r < 0)
			return r;
		q->host_end = VD_MAX(q->host_end, (s + m) * cs);
	}
	if ((r = qcow2_update_refcount(d, (s + m) * cs, n * cs, 1)) < 0)
		return r;
	q->free_hint = first_free == s ? s + m + n : first_free;
	q->host_end = VD_MAX(q->host_end, (s + m + n) * cs);
	*out = (s + m) * cs;
	return 0;
}

static int cmp_range(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;
	return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Punch the queued free clusters (merged into runs). Must run before any
 * free cluster is reused, so every path that takes free space calls it. */
void qcow2_punch_flush(struct vdisk *d)
{
	struct qcow2 *q = Q(d);
	if (!q->npunch)
		return;
	qsort(q->punch, q->npunch, 2 * sizeof(uint64_t), cmp_range);
	uint64_t s = q->punch[0], e = s + q->punch[1];
	for (size_t i = 1; i <= q->npunch; i++) {
		if (i < q->npunch && q->punch[2 * i] <= e) {
			e = VD_MAX(e, q->punch[2 * i] + q->punch[2 * i + 1]);
			continue;
		}
		fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)s, (off_t)(e - s));
		if (i < q->npunch) {
			s = q->punch[2 * i];
			e = s + q->punch[2 * i + 1];
		}
	}
	q->npunch = 0;
}

static void punch_later(struct vdisk *d, uint64_t off, uint64_t len)
{
	struct qcow2 *q = Q(d);
	if (q->npunch && q->punch[2 * q->npunch - 2] + q->punch[2 * q->npunch - 1] == off) {
		q->punch[2 * q->npunch - 1] += len;
		return;
	}
	if (q->npunch == q->cappunch) {
		size_t nc = q->cappunch ? q->cappunch * 2 : 64;
		uint64_t *nv = realloc(q->punch, nc * 2 * sizeof(*nv));
		if (!nv)
			return; /* only space is lost */
		q->punch = nv;
		q->cappunch = nc;
	}
	q->punch[2 * q->npunch] = off;
	q->punch[2 * q->npunch + 1] = len;
	q->npunch++;
	if (q->npunch >= 4096)
		qcow2_punch_flush(d);
}

int qcow2_free_clusters(struct vdisk *d, uint64_t off, uint64_t n)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size;
	int r = qcow2_update_refcount(d, off, n * cs, -1);
	if (r < 0)
		return r;
	/* give the space back to the file system where nothing uses it now */
	for (uint64_t c = off / cs; c < off / cs + n; c++) {
		uint64_t rc;
		if (qcow2_get_refcount(d, c, &rc) == 0 && rc == 0)
			punch_later(d, c * cs, cs);
	}
	return 0;
}
