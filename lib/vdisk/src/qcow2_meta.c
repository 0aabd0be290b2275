/* SPDX-License-Identifier: MIT */
/* qcow2 metadata write-back ordering, overlap checks and corruption. */
#include "qcow2.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int qc_oset_add(struct qc_oset *s, uint64_t off)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t m = (lo + hi) / 2;
		if (s->v[m] < off)
			lo = m + 1;
		else
			hi = m;
	}
	if (lo < s->n && s->v[lo] == off)
		return 0;
	if (s->n == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 64;
		uint64_t *nv = realloc(s->v, nc * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		s->v = nv;
		s->cap = nc;
	}
	memmove(&s->v[lo + 1], &s->v[lo], (s->n - lo) * sizeof(*s->v));
	s->v[lo] = off;
	s->n++;
	return 0;
}

void qc_oset_del(struct qc_oset *s, uint64_t off)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t m = (lo + hi) / 2;
		if (s->v[m] < off)
			lo = m + 1;
		else
			hi = m;
	}
	if (lo < s->n && s->v[lo] == off) {
		memmove(&s->v[lo], &s->v[lo + 1], (s->n - lo - 1) * sizeof(*s->v));
		s->n--;
	}
}

/* Does [off, off+len) intersect any [v, v+unit)? */
bool qc_oset_hit(const struct qc_oset *s, uint64_t off, uint64_t len, uint64_t unit)
{
	uint64_t lo_key = off >= unit ? off - unit + 1 : 0;
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t m = (lo + hi) / 2;
		if (s->v[m] < lo_key)
			lo = m + 1;
		else
			hi = m;
	}
	return lo < s->n && s->v[lo] < off + len;
}

void qc_oset_free(struct qc_oset *s)
{
	free(s->v);
	s->v = NULL;
	s->n = s->cap = 0;
}

int qcow2_rebuild_osets(struct qcow2 *q)
{
	q->l2_tabs.n = 0;
	q->refblocks.n = 0;
	for (uint32_t i = 0; i < q->l1_size; i++) {
		uint64_t o = q->l1[i] & L1E_OFFSET_MASK;
		if (o && qc_oset_add(&q->l2_tabs, o) < 0)
			return -ENOMEM;
	}
	for (uint64_t i = 0; i < q->reftable_entries; i++) {
		uint64_t o = q->reftable[i] & REFT_OFFSET_MASK;
		if (o && qc_oset_add(&q->refblocks, o) < 0)
			return -ENOMEM;
	}
	return 0;
}

static bool ranges_meet(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

const char *qcow2_overlaps(struct qcow2 *q, uint64_t off, uint64_t len)
{
	uint64_t cs = q->cluster_size;
	if (ranges_meet(off, len, 0, cs))
		return "the image header";
	if (ranges_meet(off, len, q->l1_offset, VD_ALIGN_UP((uint64_t)q->l1_size * 8, cs)))
		return "the active L1 table";
	if (ranges_meet(off, len, q->reftable_offset, (uint64_t)q->reftable_clusters * cs))
		return "the refcount table";
	if (q->nb_snaps && ranges_meet(off, len, q->snap_offset, VD_ALIGN_UP(q->snap_table_bytes, cs)))
		return "the snapshot table";
	for (uint32_t i = 0; i < q->nb_snaps; i++)
		if (ranges_meet(off, len, q->snaps[i].l1_offset,
		                VD_ALIGN_UP((uint64_t)q->snaps[i].l1_size * 8, cs)))
			return "an inactive L1 table";
	if (qc_oset_hit(&q->refblocks, off, len, cs))
		return "a refcount block";
	if (qc_oset_hit(&q->l2_tabs, off, len, cs))
		return "an active L2 table";
	return NULL;
}

int qcow2_signal_corruption(struct vdisk *d, const char *fmt, ...)
{
	struct qcow2 *q = Q(d);
	char what[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	bool was = q->broken;
	q->broken = true;
	if (d->rw && !was && q->version >= 3) {
		qcow2_update_incompat(d, q, QCOW2_INCOMPAT_CORRUPT, 0);
		return vd_err(d, -EIO, "qcow2 image '%s' is corrupt: %s; marked corrupt, "
		              "further writes refused", d->path, what);
	}
	return vd_err(d, -EIO, "qcow2 image '%s' is corrupt: %s", d->path, what);
}

/* Clusters allocated past the end of the file read as zero without being
 * written; the file must cover them before tables pointing to them are
 * written, so that the image end matches the allocation. Called with the
 * metadata lock held: every allocation lies below host_end and no one
 * writes past it, so extending to host_end can never cut off data written
 * concurrently (unlike a per-request fstat + ftruncate). */
int qcow2_cover_end(struct vdisk *d)
{
	struct qcow2 *q = Q(d);
	if (q->file_end >= q->host_end)
		return 0;
	struct stat st;
	if (fstat(d->fd, &st) < 0)
		return vd_err(d, -errno, "stat '%s': %s", d->path, strerror(errno));
	if ((uint64_t)st.st_size < q->host_end && ftruncate(d->fd, (off_t)q->host_end) < 0)
		return vd_err(d, -errno, "extending '%s': %s", d->path, strerror(errno));
	q->file_end = q->host_end;
	return 0;
}

/* Write-back callback shared by both caches. An L2 slice may only reach
 * the disk after the refcounts of everything it points to, and after the
 * data it points to: flush the refcount cache and sync first. */
int qcow2_cache_writeback(void *opaque, struct qc_cache *c, unsigned idx)
{
	struct vdisk *d = opaque;
	struct qcow2 *q = Q(d);
	int r;
	if ((r = qcow2_cover_end(d)) < 0)
		return r;
	if (c == &q->l2c) {
		if ((r = qc_cache_flush(&q->rbc)) < 0)
			return r;
		if (!(q->compat & QCOW2_COMPAT_LAZY) && (r = vd_fdatasync(d->fd)) < 0)
			return r;
	}
	return qcow2_write_entry(d, c, idx);
}

/* Write one cache entry as it is (the caller saw to the ordering). */
int qcow2_write_entry(struct vdisk *d, struct qc_cache *c, unsigned idx)
{
	struct qcow2 *q = Q(d);
	struct qc_entry *e = &c->e[idx];
	if (c == &q->l2c) {
		uint64_t tab = e->off & ~(uint64_t)(q->cluster_size - 1);
		if (!qc_oset_hit(&q->l2_tabs, tab, 1, 1))
			return qcow2_signal_corruption(d, "refusing to write an L2 slice at %#llx "
			                               "that is not an active L2 table",
			                               (unsigned long long)e->off);
	}
	int r = vd_pwrite_full(d->fd, e->data, c->entry_size, e->off);
	if (r < 0)
		return vd_err(d, r, "writing qcow2 metadata at %#llx: %s",
		              (unsigned long long)e->off, strerror(-r));
	if (e->dirty) {
		e->dirty = false;
		c->ndirty--;
	}
	return 0;
}

/* Refcount blocks first (what the new tables point to must be counted),
 * sync, then L2 slices, sync; then the clusters whose mappings those L2
 * slices dropped lose their reference (a crash before that leaks them,
 * never frees a cluster a table on disk still uses). */
/* Eviction of a dirty entry: write back the whole cache, with one sync
 * between refcount blocks and L2 slices. */
int qcow2_cache_flush_all(void *opaque, struct qc_cache *c)
{
	struct vdisk *d = opaque;
	struct qcow2 *q = Q(d);
	int r;
	if ((r = qcow2_cover_end(d)) < 0 || (r = qc_cache_flush(&q->rbc)) < 0)
		return r;
	if (c != &q->l2c)
		return 0;
	if (!(q->compat & QCOW2_COMPAT_LAZY) && (r = vd_fdatasync(d->fd)) < 0)
		return vd_err(d, r, "fdatasync: %s", strerror(-r));
	for (unsigned i = 0; i < c->used; i++)
		if (c->e[i].dirty && c->e[i].off != UINT64_MAX &&
		    (r = qcow2_write_entry(d, c, i)) < 0)
			return r;
	return 0;
}

int qcow2_meta_flush(struct vdisk *d)
{
	struct qcow2 *q = Q(d);
	int r;
	if ((r = qcow2_cover_end(d)) < 0)
		return r;
	if ((r = qc_cache_flush(&q->rbc)) < 0)
		return r;
	if (q->l2c.ndirty || q->l1_ndirty) {
		if ((r = vd_fdatasync(d->fd)) < 0)
			return vd_err(d, r, "fdatasync: %s", strerror(-r));
		for (unsigned i = 0; i < q->l2c.used; i++)
			if (q->l2c.e[i].dirty && q->l2c.e[i].off != UINT64_MAX &&
			    (r = qcow2_write_entry(d, &q->l2c, i)) < 0)
				return r;
		if ((r = qcow2_write_l1_dirty(d)) < 0)
			return r;
	}
	if ((r = vd_fdatasync(d->fd)) < 0)
		return vd_err(d, r, "fdatasync: %s", strerror(-r));
	if (!q->npend) {
		qcow2_punch_flush(d);
		return 0;
	}
	size_t n = q->npend;
	q->npend = 0;
	for (size_t i = 0; i < n; i++)
		if ((r = qcow2_free_l2e_target(d, q->pend[i])) < 0)
			return r;
	if ((r = qc_cache_flush(&q->rbc)) < 0)
		return r;
	qcow2_punch_flush(d);
	if ((r = vd_fdatasync(d->fd)) < 0)
		return vd_err(d, r, "fdatasync: %s", strerror(-r));
	return 0;
}

int qcow2_defer_free(struct vdisk *d, uint64_t e)
{
	struct qcow2 *q = Q(d);
	if (q->npend == q->cappend) {
		size_t nc = q->cappend ? q->cappend * 2 : 256;
		uint64_t *nv = realloc(q->pend, nc * sizeof(*nv));
		if (!nv)
			return vd_err(d, -ENOMEM, "out of memory");
		q->pend = nv;
		q->cappend = nc;
	}
	q->pend[q->npend++] = e;
	if (q->npend >= 65536)
		return qcow2_meta_flush(d);
	return 0;
}

/* With lazy refcounts, set the dirty bit before the first allocation. */
int qcow2_mark_dirty(struct vdisk *d)
{
	struct qcow2 *q = Q(d);
	if (!(q->compat & QCOW2_COMPAT_LAZY) || q->dirty_on_disk || q->version < 3)
		return 0;
	int r = qcow2_update_incompat(d, q, QCOW2_INCOMPAT_DIRTY, 0);
	if (r == 0)
		q->dirty_on_disk = true;
	return r;
}
