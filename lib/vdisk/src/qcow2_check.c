/* SPDX-License-Identifier: MIT */
/* qcow2 consistency check and repair: rebuild the reference counts from
 * every table, compare with the stored refcounts, check OFLAG_COPIED. */
#include "qcow2.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define MAX_CHECK_CLUSTERS (1ull << 30)

struct ck {
	struct vdisk *d;
	struct qcow2 *q;
	struct vdisk_check_result *r;
	uint64_t n;          /* clusters in the file */
	uint32_t *ref;       /* computed references (saturating) */
	uint8_t *l2;         /* one L2 table */
	uint64_t last_data;  /* for fragmentation */
};

static void inc(struct ck *c, uint64_t off, uint64_t len)
{
	uint64_t cs = c->q->cluster_size;
	if (!len)
		return;
	for (uint64_t k = off / cs; k <= (off + len - 1) / cs; k++) {
		if (k >= c->n) {
			vd_check_report(c->r, "ERROR: counting reference for region exceeding the end of the file "
			       "(cluster %llu)", (unsigned long long)k);
			c->r->corruptions++;
			return;
		}
		if (c->ref[k] != UINT32_MAX)
			c->ref[k]++;
	}
}

static int walk_l1(struct ck *c, const uint64_t *l1, uint32_t l1_size, bool active)
{
	struct qcow2 *q = c->q;
	uint64_t cs = q->cluster_size;
	for (uint32_t i = 0; i < l1_size; i++) {
		uint64_t l2 = l1[i] & L1E_OFFSET_MASK;
		if (!l2)
			continue;
		if (l2 % cs) {
			vd_check_report(c->r, "ERROR: L2 table offset %#llx unaligned (L1 index %u)",
			       (unsigned long long)l2, i);
			c->r->corruptions++;
			continue;
		}
		inc(c, l2, cs);
		if (l2 / cs >= c->n)
			continue;
		int r = vd_pread_zero(c->d->fd, c->l2, cs, l2);
		if (r < 0) {
			vd_check_report(c->r, "ERROR: could not read L2 table at %#llx", (unsigned long long)l2);
			c->r->check_errors++;
			continue;
		}
		for (uint64_t j = 0; j < qc_l2_entries(q); j++) {
			uint64_t e = vd_be64(c->l2 + j * q->l2_entry_size);
			uint64_t guest = ((uint64_t)i << (q->cluster_bits + q->l2_bits)) | (j << q->cluster_bits);
			enum qc_kind k = qcow2_kind(q, e);
			if (k == QC_COMPRESSED) {
				uint64_t co, cl;
				qcow2_compressed_loc(q, e, &co, &cl);
				inc(c, co & ~511ull, cl);
				if (active) {
					c->r->allocated_clusters++;
					c->r->compressed_clusters++;
				}
				continue;
			}
			uint64_t host = e & L2E_OFFSET_MASK;
			if (!host)
				continue;
			if (host % cs) {
				vd_check_report(c->r, "ERROR: offset=%llx: cluster at guest offset %#llx is not aligned",
				       (unsigned long long)host, (unsigned long long)guest);
				c->r->corruptions++;
				continue;
			}
			inc(c, host, cs);
			if (active && k == QC_NORMAL) {
				c->r->allocated_clusters++;
				if (c->last_data && host != c->last_data + cs)
					c->r->fragmented_clusters++;
				c->last_data = host;
			}
		}
	}
	return 0;
}

/* Compare OFLAG_COPIED in the active tables with the stored refcounts. */
static int check_copied(struct ck *c, unsigned fix)
{
	struct vdisk *d = c->d;
	struct qcow2 *q = c->q;
	uint64_t cs = q->cluster_size;
	int r;
	for (uint32_t i = 0; i < q->l1_size; i++) {
		uint64_t l2 = q->l1[i] & L1E_OFFSET_MASK, rc;
		if (!l2 || l2 % cs || l2 / cs >= c->n)
			continue;
		if ((r = qcow2_get_refcount(d, l2 / cs, &rc)) < 0)
			return r;
		bool copied = q->l1[i] & QCOW_OFLAG_COPIED;
		if ((rc == 1) != copied) {
			vd_check_report(c->r, "ERROR OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%llx refcount=%llu",
			       i, (unsigned long long)q->l1[i], (unsigned long long)rc);
			c->r->corruptions++;
			if (fix & VDISK_FIX_ERRORS) {
				uint64_t v = rc == 1 ? q->l1[i] | QCOW_OFLAG_COPIED : q->l1[i] & ~QCOW_OFLAG_COPIED;
				uint8_t be[8];
				vd_put_be64(be, v);
				if ((r = vd_pwrite_full(d->fd, be, 8, q->l1_offset + i * 8ull)) < 0)
					return r;
				q->l1[i] = v;
				c->r->corruptions_fixed++;
			}
		}
		if ((r = vd_pread_zero(d->fd, c->l2, cs, l2)) < 0)
			return r;
		bool dirty = false;
		for (uint64_t j = 0; j < qc_l2_entries(q); j++) {
			uint8_t *p = c->l2 + j * q->l2_entry_size;
			uint64_t e = vd_be64(p), host = e & L2E_OFFSET_MASK;
			if (qcow2_kind(q, e) == QC_COMPRESSED || !host || host % cs || host / cs >= c->n)
				continue;
			if ((r = qcow2_get_refcount(d, host / cs, &rc)) < 0)
				return r;
			if ((rc == 1) != !!(e & QCOW_OFLAG_COPIED)) {
				vd_check_report(c->r, "ERROR OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu",
				       (unsigned long long)e, (unsigned long long)rc);
				c->r->corruptions++;
				if (fix & VDISK_FIX_ERRORS) {
					vd_put_be64(p, rc == 1 ? e | QCOW_OFLAG_COPIED : e & ~QCOW_OFLAG_COPIED);
					dirty = true;
					c->r->corruptions_fixed++;
				}
			}
		}
		if (dirty && (r = vd_pwrite_full(d->fd, c->l2, cs, l2)) < 0)
			return r;
	}
	return 0;
}

static int set_rc(struct vdisk *d, uint64_t cluster, uint64_t old, uint64_t want)
{
	struct qcow2 *q = Q(d);
	int64_t delta = want > old ? (int64_t)(want - old) : -(int64_t)(old - want);
	return qcow2_update_refcount(d, cluster * q->cluster_size, 1, delta);
}

static int check_once(struct vdisk *d, struct vdisk_check_result *res, unsigned fix)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size;
	struct stat st;
	if (fstat(d->fd, &st) < 0)
		return vd_err(d, -errno, "stat: %s", strerror(errno));
	struct ck c = { .d = d, .q = q, .r = res };
	c.n = VD_DIV_UP((uint64_t)st.st_size, cs);
	if (c.n > MAX_CHECK_CLUSTERS)
		return vd_err(d, -EFBIG, "image too large to check");
	c.ref = calloc(c.n ? c.n : 1, sizeof(*c.ref));
	c.l2 = malloc(cs);
	uint64_t *l1 = NULL;
	int r = 0;
	if (!c.ref || !c.l2) {
		r = vd_err(d, -ENOMEM, "out of memory");
		goto out;
	}
	/* metadata must be on disk before we read the tables directly */
	if (d->rw && (r = qcow2_meta_flush(d)) < 0)
		goto out;
	res->total_clusters = VD_DIV_UP(d->size, cs);
	inc(&c, 0, cs);
	inc(&c, q->l1_offset, (uint64_t)q->l1_size * 8);
	walk_l1(&c, q->l1, q->l1_size, true);
	for (uint32_t s = 0; s < q->nb_snaps; s++) {
		struct qcow2_snap *sn = &q->snaps[s];
		free(l1);
		l1 = calloc(sn->l1_size ? sn->l1_size : 1, 8);
		if (!l1) {
			r = vd_err(d, -ENOMEM, "out of memory");
			goto out;
		}
		if (vd_pread_full(d->fd, l1, (size_t)sn->l1_size * 8, sn->l1_offset) < 0) {
			vd_check_report(c.r, "ERROR: could not read the L1 table of snapshot %s", sn->id);
			res->check_errors++;
			continue;
		}
		for (uint32_t k = 0; k < sn->l1_size; k++)
			l1[k] = vd_be64(&l1[k]);
		inc(&c, sn->l1_offset, (uint64_t)sn->l1_size * 8);
		walk_l1(&c, l1, sn->l1_size, false);
	}
	if (q->nb_snaps)
		inc(&c, q->snap_offset, q->snap_table_bytes);
	inc(&c, q->reftable_offset, (uint64_t)q->reftable_clusters * cs);
	for (uint64_t i = 0; i < q->reftable_entries; i++)
		if (q->reftable[i])
			inc(&c, q->reftable[i], cs);

	/* compare */
	uint64_t limit = VD_MAX(c.n, 0);
	for (uint64_t bi = 0; bi < q->reftable_entries; bi++)
		if (q->reftable[bi])
			limit = VD_MAX(limit, (bi + 1) << q->rb_bits);
	uint64_t end = 0;
	for (uint64_t k = 0; k < limit; k++) {
		uint64_t bi = k >> q->rb_bits;
		if (k >= c.n && (bi >= q->reftable_entries || !q->reftable[bi])) {
			k = ((bi + 1) << q->rb_bits) - 1;
			continue;
		}
		uint64_t rc, want = k < c.n ? c.ref[k] : 0;
		if ((r = qcow2_get_refcount(d, k, &rc)) < 0)
			goto out;
		if (want)
			end = k + 1;
		if (rc == want)
			continue;
		if (rc > want) {
			vd_check_report(c.r, "%s cluster %llu refcount=%llu reference=%llu",
			       (fix & VDISK_FIX_LEAKS) ? "Repairing" : "Leaked",
			       (unsigned long long)k, (unsigned long long)rc, (unsigned long long)want);
			res->leaks++;
			if (fix & VDISK_FIX_LEAKS) {
				if ((r = set_rc(d, k, rc, want)) < 0)
					goto out;
				res->leaks_fixed++;
			}
		} else {
			vd_check_report(c.r, "%s cluster %llu refcount=%llu reference=%llu",
			       (fix & VDISK_FIX_ERRORS) ? "Repairing" : "ERROR",
			       (unsigned long long)k, (unsigned long long)rc, (unsigned long long)want);
			res->corruptions++;
			if (fix & VDISK_FIX_ERRORS) {
				if ((r = set_rc(d, k, rc, want)) < 0)
					goto out;
				res->corruptions_fixed++;
			}
		}
	}
	if ((r = check_copied(&c, fix)) < 0)
		goto out;
	res->image_end_offset = end * cs;
	if (fix && (r = qcow2_meta_flush(d)) < 0)
		goto out;
out:
	free(l1);
	free(c.ref);
	free(c.l2);
	return r;
}

int qcow2_check(struct vdisk *d, struct vdisk_check_result *res, unsigned fix)
{
	struct qcow2 *q = Q(d);
	pthread_mutex_lock(&q->lock);
	void (*rep)(void *, const char *) = res->report;
	void *op = res->opaque;
	memset(res, 0, sizeof(*res));
	res->report = rep;
	res->opaque = op;
	int r = check_once(d, res, fix);
	if (r == 0 && fix && (res->leaks_fixed || res->corruptions_fixed)) {
		/* double-check the repaired image; report what remains */
		struct vdisk_check_result again = { 0 };
		r = check_once(d, &again, 0);
		if (r == 0) {
			res->corruptions_fixed = res->corruptions - VD_MIN(res->corruptions, again.corruptions);
			res->leaks_fixed = res->leaks - VD_MIN(res->leaks, again.leaks);
			res->corruptions = again.corruptions;
			res->leaks = again.leaks;
			res->allocated_clusters = again.allocated_clusters;
			res->fragmented_clusters = again.fragmented_clusters;
			res->compressed_clusters = again.compressed_clusters;
			res->image_end_offset = again.image_end_offset;
			if (!again.corruptions && (q->incompat & QCOW2_INCOMPAT_CORRUPT))
				r = qcow2_update_incompat(d, q, 0, QCOW2_INCOMPAT_CORRUPT);
			if (r == 0 && !again.corruptions)
				q->broken = false;
		}
	}
	pthread_mutex_unlock(&q->lock);
	return r;
}
