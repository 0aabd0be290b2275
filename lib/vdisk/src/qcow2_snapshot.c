/* SPDX-License-Identifier: MIT */
/* qcow2 internal snapshots: table parsing, list, create, apply, delete and
 * the VM-state area (stored past the disk's L1 range, as qemu does). */
#include "qcow2.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/uio.h>

#define SNAP_HDR 40
#define MAX_EXTRA 1024

void qcow2_free_snapshots(struct qcow2 *q)
{
	for (uint32_t i = 0; q->snaps && i < q->nb_snaps; i++) {
		free(q->snaps[i].id);
		free(q->snaps[i].name);
		free(q->snaps[i].extra);
	}
	free(q->snaps);
	q->snaps = NULL;
}

int qcow2_read_snapshots(struct vdisk *d, struct qcow2 *q, uint64_t fsize)
{
	if (!q->nb_snaps)
		return 0;
	q->snaps = calloc(q->nb_snaps, sizeof(*q->snaps));
	if (!q->snaps)
		return vd_err(d, -ENOMEM, "out of memory");
	uint64_t off = q->snap_offset;
	for (uint32_t i = 0; i < q->nb_snaps; i++) {
		struct qcow2_snap *s = &q->snaps[i];
		uint8_t h[SNAP_HDR];
		if (off - q->snap_offset + SNAP_HDR > QCOW2_MAX_SNAP_TABLE || off + SNAP_HDR > fsize)
			return vd_err(d, -EINVAL, "'%s': snapshot table entry %u lies outside the file "
			              "or beyond %u bytes", d->path, i, QCOW2_MAX_SNAP_TABLE);
		int r = vd_pread_full(d->fd, h, SNAP_HDR, off);
		if (r < 0)
			return vd_err(d, r, "'%s': reading the snapshot table: %s", d->path, strerror(-r));
		s->l1_offset = vd_be64(h);
		s->l1_size = vd_be32(h + 8);
		uint32_t idl = vd_be16(h + 12), nml = vd_be16(h + 14);
		s->date_sec = vd_be32(h + 16);
		s->date_nsec = vd_be32(h + 20);
		s->vm_clock_nsec = vd_be64(h + 24);
		s->vm_state_size = vd_be32(h + 32);
		s->extra_len = vd_be32(h + 36);
		if (s->extra_len > MAX_EXTRA)
			return vd_err(d, -EINVAL, "'%s': snapshot %u has %u bytes of extra data (max %u)",
			              d->path, i, s->extra_len, MAX_EXTRA);
		uint64_t ent = SNAP_HDR + (uint64_t)s->extra_len + idl + nml;
		if (off + ent > fsize || off - q->snap_offset + ent > QCOW2_MAX_SNAP_TABLE)
			return vd_err(d, -EINVAL, "'%s': snapshot %u extends beyond the file", d->path, i);
		uint8_t *rest = malloc(ent - SNAP_HDR + 1);
		if (!rest)
			return vd_err(d, -ENOMEM, "out of memory");
		if ((r = vd_pread_full(d->fd, rest, ent - SNAP_HDR, off + SNAP_HDR)) < 0) {
			free(rest);
			return vd_err(d, r, "'%s': reading snapshot %u: %s", d->path, i, strerror(-r));
		}
		if (s->extra_len >= 8)
			s->vm_state_size = vd_be64(rest);
		s->disk_size = s->extra_len >= 16 ? vd_be64(rest + 8) : d->size;
		s->icount = s->extra_len >= 24 ? vd_be64(rest + 16) : UINT64_MAX;
		s->extra = malloc(s->extra_len + 1);
		s->id = strndup((char *)rest + s->extra_len, idl);
		s->name = strndup((char *)rest + s->extra_len + idl, nml);
		if (s->extra)
			memcpy(s->extra, rest, s->extra_len);
		free(rest);
		if (!s->extra || !s->id || !s->name)
			return vd_err(d, -ENOMEM, "out of memory");
		uint64_t cs = q->cluster_size;
		if (s->l1_offset % cs || (s->l1_size && s->l1_offset < cs))
			return vd_err(d, -EINVAL, "'%s': snapshot %u L1 table offset %#llx invalid",
			              d->path, i, (unsigned long long)s->l1_offset);
		if ((uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES)
			return vd_err(d, -EFBIG, "'%s': snapshot %u L1 table too large (%u entries)",
			              d->path, i, s->l1_size);
		if (s->l1_size && (s->l1_offset > fsize || (uint64_t)s->l1_size * 8 > fsize - s->l1_offset))
			return vd_err(d, -EINVAL, "'%s': snapshot %u L1 table lies outside the file",
			              d->path, i);
		off = VD_ALIGN_UP(off + ent, 8);
	}
	q->snap_table_bytes = off - q->snap_offset;
	return 0;
}

static int find_snap(struct qcow2 *q, const char *name)
{
	for (uint32_t i = 0; i < q->nb_snaps; i++)
		if (!strcmp(q->snaps[i].id, name))
			return (int)i;
	for (uint32_t i = 0; i < q->nb_snaps; i++)
		if (!strcmp(q->snaps[i].name, name))
			return (int)i;
	return -1;
}

int qcow2_snap_list(struct vdisk *d, struct vdisk_snapshot **l, unsigned *n)
{
	struct qcow2 *q = Q(d);
	pthread_mutex_lock(&q->lock);
	*n = q->nb_snaps;
	*l = calloc(q->nb_snaps ? q->nb_snaps : 1, sizeof(**l));
	if (!*l) {
		pthread_mutex_unlock(&q->lock);
		return vd_err(d, -ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < q->nb_snaps; i++) {
		struct vdisk_snapshot *o = &(*l)[i];
		struct qcow2_snap *s = &q->snaps[i];
		snprintf(o->id, sizeof(o->id), "%s", s->id);
		snprintf(o->name, sizeof(o->name), "%s", s->name);
		o->vm_state_size = s->vm_state_size;
		o->disk_size = s->disk_size;
		o->date_sec = s->date_sec;
		o->date_nsec = s->date_nsec;
		o->vm_clock_nsec = s->vm_clock_nsec;
		o->icount = s->icount;
	}
	pthread_mutex_unlock(&q->lock);
	return 0;
}

/* Read `len` bytes at guest offset `goff` through an arbitrary L1 table. */
static int read_via_l1(struct vdisk *d, const uint64_t *l1, uint32_t l1_size,
                       uint8_t *buf, uint64_t len, uint64_t goff)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size;
	uint8_t *cbuf = malloc(cs);
	if (!cbuf)
		return vd_err(d, -ENOMEM, "out of memory");
	int r = 0;
	while (len && r == 0) {
		uint64_t in = goff & (cs - 1), n = VD_MIN(cs - in, len), e = 0, bm = 0;
		uint64_t l1i = goff >> (q->cluster_bits + q->l2_bits);
		uint64_t l2 = l1i < l1_size ? l1[l1i] & L1E_OFFSET_MASK : 0;
		if (l2) {
			uint8_t ent[16];
			uint64_t l2i = (goff >> q->cluster_bits) & (qc_l2_entries(q) - 1);
			if ((r = vd_pread_full(d->fd, ent, q->l2_entry_size, l2 + l2i * q->l2_entry_size)) < 0)
				break;
			e = vd_be64(ent);
			if (q->ext_l2)
				bm = vd_be64(ent + 8);
		}
		if ((r = qcow2_check_l2e(d, goff, e)) < 0)
			break;
		/* no backing for the vm-state area: treat unallocated as zero */
		struct vdisk *bk = d->backing;
		d->backing = NULL;
		r = qcow2_read_cluster_content(d, goff - in, e, bm, cbuf);
		d->backing = bk;
		memcpy(buf, cbuf + in, n);
		buf += n;
		goff += n;
		len -= n;
	}
	free(cbuf);
	return r;
}

static uint64_t vm_state_offset(struct qcow2 *q, uint64_t disk_size)
{
	uint64_t cover = (uint64_t)q->cluster_size << q->l2_bits;
	return VD_DIV_UP(disk_size, cover) * cover;
}

int qcow2_snap_vmstate(struct vdisk *d, const char *name, void *buf, uint64_t len, uint64_t off)
{
	struct qcow2 *q = Q(d);
	pthread_mutex_lock(&q->lock);
	int i = find_snap(q, name), r;
	if (i < 0) {
		r = vd_err(d, -ENOENT, "no snapshot '%s'", name);
		goto out;
	}
	struct qcow2_snap *s = &q->snaps[i];
	if (off > s->vm_state_size || len > s->vm_state_size - off) {
		r = vd_err(d, -EINVAL, "read beyond the VM state of snapshot '%s' (%llu bytes)", name,
		           (unsigned long long)s->vm_state_size);
		goto out;
	}
	uint64_t *l1 = calloc(s->l1_size ? s->l1_size : 1, 8);
	if (!l1) {
		r = vd_err(d, -ENOMEM, "out of memory");
		goto out;
	}
	r = vd_pread_full(d->fd, l1, (size_t)s->l1_size * 8, s->l1_offset);
	for (uint32_t k = 0; k < s->l1_size; k++)
		l1[k] = vd_be64(&l1[k]);
	if (r == 0)
		r = read_via_l1(d, l1, s->l1_size, buf, len, vm_state_offset(q, s->disk_size) + off);
	else
		r = vd_err(d, r, "reading snapshot L1: %s", strerror(-r));
	free(l1);
out:
	pthread_mutex_unlock(&q->lock);
	return r;
}

/* ---- writing ------------------------------------------------------- */

static int read_l1(struct vdisk *d, uint64_t off, uint32_t n, uint64_t **out)
{
	uint64_t *l1 = calloc(n ? n : 1, 8);
	if (!l1)
		return vd_err(d, -ENOMEM, "out of memory");
	int r = n ? vd_pread_full(d->fd, l1, (size_t)n * 8, off) : 0;
	if (r < 0) {
		free(l1);
		return vd_err(d, r, "reading the L1 table at %#llx: %s", (unsigned long long)off,
		              strerror(-r));
	}
	for (uint32_t i = 0; i < n; i++)
		l1[i] = vd_be64(&l1[i]);
	*out = l1;
	return 0;
}

/* Every table and cluster reachable from l1 must be a sane place in the
 * file before reference counts change because of it. */
static int validate_tree(struct vdisk *d, const uint64_t *l1, uint32_t n, uint8_t *buf)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, end = q->host_end;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t l2 = l1[i] & L1E_OFFSET_MASK;
		if (!l2)
			continue;
		if (l2 % cs || l2 < cs || l2 >= end)
			return qcow2_signal_corruption(d, "L2 table %u of a snapshot tree at %#llx is "
			                               "misplaced", i, (unsigned long long)l2);
		int r = vd_pread_full(d->fd, buf, cs, l2);
		if (r < 0)
			return vd_err(d, r, "reading L2 table at %#llx: %s", (unsigned long long)l2,
			              strerror(-r));
		for (uint64_t j = 0; j < qc_l2_entries(q); j++) {
			uint64_t e = vd_be64(buf + j * q->l2_entry_size), off, len;
			if (qcow2_kind(q, e) == QC_COMPRESSED) {
				qcow2_compressed_loc(q, e, &off, &len);
				off &= ~511ull;
			} else {
				off = e & L2E_OFFSET_MASK;
				len = cs;
				if (!off)
					continue;
				if (off % cs)
					return qcow2_signal_corruption(d, "L2 table at %#llx: entry %llu has an "
					                               "unaligned offset %#llx",
					                               (unsigned long long)l2,
					                               (unsigned long long)j,
					                               (unsigned long long)off);
			}
			if (off < cs || off >= end || len > end - off)
				return qcow2_signal_corruption(d, "L2 table at %#llx: entry %llu points "
				                               "outside the image (%#llx)",
				                               (unsigned long long)l2, (unsigned long long)j,
				                               (unsigned long long)off);
		}
	}
	return 0;
}

/* Add delta (+1 or -1) to the reference count of every L2 table and data
 * cluster reachable from l1 (as qemu counts: once per L1 table that
 * reaches a cluster). Freed clusters are given back to the file system. */
static int tree_refs(struct vdisk *d, const uint64_t *l1, uint32_t n, int delta, uint8_t *buf)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size;
	int r;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t l2 = l1[i] & L1E_OFFSET_MASK;
		if (!l2)
			continue;
		if ((r = vd_pread_full(d->fd, buf, cs, l2)) < 0)
			return vd_err(d, r, "reading L2 table at %#llx: %s", (unsigned long long)l2,
			              strerror(-r));
		for (uint64_t j = 0; j < qc_l2_entries(q); j++) {
			uint64_t e = vd_be64(buf + j * q->l2_entry_size);
			bool comp = qcow2_kind(q, e) == QC_COMPRESSED;
			if (!comp && !(e & L2E_OFFSET_MASK))
				continue;
			if (delta < 0) {
				r = qcow2_free_l2e_target(d, e);
			} else if (comp) {
				uint64_t co, cl;
				qcow2_compressed_loc(q, e, &co, &cl);
				r = qcow2_update_refcount(d, co & ~511ull, cl, 1);
			} else {
				r = qcow2_update_refcount(d, e & L2E_OFFSET_MASK, cs, 1);
			}
			if (r < 0)
				return r;
		}
		r = delta < 0 ? qcow2_free_clusters(d, l2, 1) : qcow2_update_refcount(d, l2, cs, 1);
		if (r < 0)
			return r;
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* With narrow refcounts, make sure one more reference to every cluster of
 * the tree fits before changing any (a tree may reach one cluster several
 * times: compressed clusters share host clusters). */
static int check_room(struct vdisk *d, const uint64_t *l1, uint32_t n, uint8_t *buf)
{
	struct qcow2 *q = Q(d);
	if (q->refcount_bits >= 16)
		return 0;
	uint64_t cs = q->cluster_size, cnt = 0, cap = 1024, max = (1ull << q->refcount_bits) - 1;
	uint64_t *v = malloc(cap * 8);
	int r = 0;
	if (!v)
		return vd_err(d, -ENOMEM, "out of memory");
#define PUSH(x) do { if (cnt == cap) { uint64_t *nv_ = realloc(v, (cap *= 2) * 8); \
		if (!nv_) { r = vd_err(d, -ENOMEM, "out of memory"); goto out; } v = nv_; } \
		v[cnt++] = (x); } while (0)
	for (uint32_t i = 0; i < n; i++) {
		uint64_t l2 = l1[i] & L1E_OFFSET_MASK;
		if (!l2)
			continue;
		PUSH(l2 / cs);
		if ((r = vd_pread_full(d->fd, buf, cs, l2)) < 0) {
			r = vd_err(d, r, "reading L2 table: %s", strerror(-r));
			goto out;
		}
		for (uint64_t j = 0; j < qc_l2_entries(q); j++) {
			uint64_t e = vd_be64(buf + j * q->l2_entry_size), co, cl;
			if (qcow2_kind(q, e) == QC_COMPRESSED) {
				qcow2_compressed_loc(q, e, &co, &cl);
				co &= ~511ull;
				for (uint64_t c = co / cs; c <= (co + cl - 1) / cs; c++)
					PUSH(c);
			} else if (e & L2E_OFFSET_MASK) {
				PUSH((e & L2E_OFFSET_MASK) / cs);
			}
		}
	}
#undef PUSH
	qsort(v, cnt, 8, cmp_u64);
	for (uint64_t i = 0; i < cnt;) {
		uint64_t j = i, rc;
		while (j < cnt && v[j] == v[i])
			j++;
		if ((r = qcow2_get_refcount(d, v[i], &rc)) < 0)
			goto out;
		if (rc + (j - i) > max) {
			r = vd_err(d, -ERANGE, "cluster %#llx would need more references than %u-bit "
			           "refcounts can count (create the image with larger refcount_bits)",
			           (unsigned long long)(v[i] * cs), q->refcount_bits);
			goto out;
		}
		i = j;
	}
out:
	free(v);
	return r;
}

/* OFLAG_COPIED in the active tables must say "refcount is exactly 1". */
static int fix_copied(struct vdisk *d)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, sb = q->l2c.entry_size, rc;
	int r;
	for (uint32_t i = 0; i < q->l1_size; i++) {
		uint64_t l2 = q->l1[i] & L1E_OFFSET_MASK;
		if (!l2)
			continue;
		if ((r = qcow2_get_refcount(d, l2 / cs, &rc)) < 0)
			return r;
		uint64_t v = (q->l1[i] & ~QCOW_OFLAG_COPIED) | (rc == 1 ? QCOW_OFLAG_COPIED : 0);
		if (v != q->l1[i])
			qcow2_set_l1e(q, i, v);
		for (uint64_t so = 0; so < cs; so += sb) {
			uint8_t *sl;
			unsigned idx;
			if ((r = qc_cache_get(&q->l2c, d->fd, l2 + so, false, &sl, &idx)) < 0)
				return vd_err(d, r, "reading L2 table at %#llx: %s",
				              (unsigned long long)l2, strerror(-r));
			bool dirty = false;
			for (uint64_t k = 0; k < sb; k += q->l2_entry_size) {
				uint64_t e = vd_be64(sl + k), host = e & L2E_OFFSET_MASK;
				if (qcow2_kind(q, e) == QC_COMPRESSED || !host)
					continue;
				if ((r = qcow2_get_refcount(d, host / cs, &rc)) < 0)
					return r;
				uint64_t ne = (e & ~QCOW_OFLAG_COPIED) | (rc == 1 ? QCOW_OFLAG_COPIED : 0);
				if (ne != e) {
					vd_put_be64(sl + k, ne);
					dirty = true;
				}
			}
			if (dirty)
				qc_cache_mark_dirty(&q->l2c, idx);
		}
	}
	return 0;
}

static uint64_t entry_bytes(const struct qcow2_snap *s)
{
	return VD_ALIGN_UP(SNAP_HDR + (uint64_t)s->extra_len + strlen(s->id) + strlen(s->name), 8);
}

/* Write a whole new snapshot table to fresh clusters, switch the header
 * to it (nb_snapshots and snapshots_offset are 12 adjacent bytes, one
 * write), then free the old table. The caller owns `snaps`; on success it
 * replaces q->snaps. */
static int write_table(struct vdisk *d, struct qcow2_snap *snaps, uint32_t n)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, total = 0, off = 0;
	for (uint32_t i = 0; i < n; i++)
		total += entry_bytes(&snaps[i]);
	if (total > QCOW2_MAX_SNAP_TABLE)
		return vd_err(d, -EFBIG, "the snapshot table would exceed %u bytes",
		              QCOW2_MAX_SNAP_TABLE);
	uint64_t ncl = VD_DIV_UP(total, cs);
	uint8_t *buf = calloc(1, ncl ? ncl * cs : 1);
	if (!buf)
		return vd_err(d, -ENOMEM, "out of memory");
	uint8_t *p = buf;
	for (uint32_t i = 0; i < n; i++) {
		const struct qcow2_snap *s = &snaps[i];
		size_t il = strlen(s->id), nl = strlen(s->name);
		vd_put_be64(p, s->l1_offset);
		vd_put_be32(p + 8, s->l1_size);
		vd_put_be16(p + 12, (uint16_t)il);
		vd_put_be16(p + 14, (uint16_t)nl);
		vd_put_be32(p + 16, s->date_sec);
		vd_put_be32(p + 20, s->date_nsec);
		vd_put_be64(p + 24, s->vm_clock_nsec);
		vd_put_be32(p + 32, (uint32_t)s->vm_state_size);
		vd_put_be32(p + 36, s->extra_len);
		memcpy(p + SNAP_HDR, s->extra, s->extra_len);
		memcpy(p + SNAP_HDR + s->extra_len, s->id, il);
		memcpy(p + SNAP_HDR + s->extra_len + il, s->name, nl);
		p += entry_bytes(s);
	}
	int r = 0;
	if (ncl && (r = qcow2_alloc_clusters(d, ncl, &off)) < 0)
		goto out;
	if ((r = qcow2_meta_flush(d)) < 0)
		goto out;
	if (ncl && ((r = vd_pwrite_full(d->fd, buf, ncl * cs, off)) < 0 ||
	            (r = vd_fdatasync(d->fd)) < 0)) {
		r = vd_err(d, r, "writing the snapshot table: %s", strerror(-r));
		goto out;
	}
	uint8_t h[12];
	vd_put_be32(h, n);
	vd_put_be64(h + 4, off);
	if ((r = vd_pwrite_full(d->fd, h, 12, 60)) < 0 || (r = vd_fdatasync(d->fd)) < 0) {
		r = vd_err(d, r, "updating the header: %s", strerror(-r));
		goto out;
	}
	uint64_t ooff = q->snap_offset, obytes = q->nb_snaps ? q->snap_table_bytes : 0;
	q->snap_offset = off;
	q->snap_table_bytes = total;
	if (obytes)
		r = qcow2_free_clusters(d, ooff, VD_DIV_UP(obytes, cs));
out:
	free(buf);
	return r;
}

static void free_snap(struct qcow2_snap *s)
{
	free(s->id);
	free(s->name);
	free(s->extra);
}

/* Extra data of a new snapshot: 64-bit VM-state size, disk size, icount. */
static int fill_extra(struct qcow2_snap *s, uint64_t icount)
{
	s->extra_len = 24;
	s->extra = malloc(24);
	if (!s->extra)
		return -ENOMEM;
	vd_put_be64(s->extra, s->vm_state_size);
	vd_put_be64(s->extra + 8, s->disk_size);
	vd_put_be64(s->extra + 16, icount);
	return 0;
}

/* v3 needs at least 16 bytes of extra data per entry; old entries with
 * less (written by old qemu versions) are upgraded when rewritten. */
static int upgrade_extra(struct qcow2 *q, struct qcow2_snap *s)
{
	if (q->version < 3 || s->extra_len >= 16)
		return 0;
	uint8_t *x = calloc(1, 16);
	if (!x)
		return -ENOMEM;
	memcpy(x, s->extra, s->extra_len);
	vd_put_be64(x, s->vm_state_size);
	vd_put_be64(x + 8, s->disk_size);
	free(s->extra);
	s->extra = x;
	s->extra_len = 16;
	return 0;
}

/* Write the VM state into fresh data clusters and fresh L2 tables that
 * only the snapshot's L1 will reference; their L1 entries go to l1[from..]. */
static int write_vmstate(struct vdisk *d, const struct iovec *iov, int cnt, uint64_t len,
                         uint64_t *l1, uint32_t from)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, nent = qc_l2_entries(q);
	uint64_t ncl = VD_DIV_UP(len, cs), nl2 = VD_DIV_UP(ncl, nent);
	uint8_t *tab = calloc(1, cs);
	if (!tab)
		return vd_err(d, -ENOMEM, "out of memory");
	int r = 0;
	uint64_t done = 0;
	for (uint64_t t = 0; t < nl2 && r == 0; t++) {
		memset(tab, 0, cs);
		uint64_t first = t * nent, n = VD_MIN(nent, ncl - first), host, l2;
		if ((r = qcow2_alloc_clusters(d, n, &host)) < 0)
			break;
		uint64_t bytes = VD_MIN(n * cs, len - done);
		struct vd_iov v;
		if ((r = vd_iov_sub(&v, iov, cnt, done, bytes)) < 0)
			break;
		r = vd_pwritev_full(d->fd, v.v, v.cnt, host, bytes);
		vd_iov_free(&v);
		if (r < 0) {
			r = vd_err(d, r, "writing the VM state: %s", strerror(-r));
			break;
		}
		done += bytes;
		for (uint64_t k = 0; k < n; k++) {
			uint8_t *p = tab + k * q->l2_entry_size;
			vd_put_be64(p, (host + k * cs) | QCOW_OFLAG_COPIED);
			if (q->ext_l2)
				vd_put_be64(p + 8, 0xffffffffull);
		}
		if ((r = qcow2_alloc_clusters(d, 1, &l2)) < 0)
			break;
		if ((r = vd_pwrite_full(d->fd, tab, cs, l2)) < 0) {
			r = vd_err(d, r, "writing an L2 table: %s", strerror(-r));
			break;
		}
		l1[from + t] = l2 | QCOW_OFLAG_COPIED;
	}
	free(tab);
	return r;
}

static bool is_number(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

int qcow2_snap_create(struct vdisk *d, const struct vdisk_snapshot_params *p)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, cover = cs << q->l2_bits;
	uint64_t vmlen = 0;
	for (int i = 0; i < p->vmstate_cnt; i++)
		vmlen += p->vmstate[i].iov_len;
	if (strlen(p->name) > 255)
		return vd_err(d, -EINVAL, "snapshot name longer than 255 bytes");
	if (p->id && (!*p->id || strlen(p->id) > 127))
		return vd_err(d, -EINVAL, "snapshot id must be 1..127 bytes");
	pthread_mutex_lock(&q->lock);
	int r = 0;
	char idbuf[32];
	const char *id = p->id;
	uint64_t *l1 = NULL;
	uint8_t *buf = NULL;
	struct qcow2_snap ns = {0}, *arr = NULL;
	if (q->broken) {
		r = vd_err(d, -EIO, "image is corrupt; snapshot refused");
		goto out;
	}
	if (q->refcount_bits < 2) {
		r = vd_err(d, -ENOTSUP, "'%s' has 1-bit refcounts, which cannot count the second "
		           "reference a snapshot needs (use refcount_bits >= 2)", d->path);
		goto out;
	}
	if (q->nb_snaps >= QCOW2_MAX_SNAPSHOTS) {
		r = vd_err(d, -ENOSPC, "too many snapshots (%u)", q->nb_snaps);
		goto out;
	}
	if (!id) {
		unsigned long max = 0;
		for (uint32_t i = 0; i < q->nb_snaps; i++)
			if (is_number(q->snaps[i].id))
				max = VD_MAX(max, strtoul(q->snaps[i].id, NULL, 10));
		snprintf(idbuf, sizeof(idbuf), "%lu", max + 1);
		id = idbuf;
	}
	for (uint32_t i = 0; i < q->nb_snaps; i++) {
		if (!strcmp(q->snaps[i].id, id) || !strcmp(q->snaps[i].name, id)) {
			r = vd_err(d, -EEXIST, "a snapshot with id or name '%s' already exists", id);
			goto out;
		}
		if (!strcmp(q->snaps[i].name, p->name) || !strcmp(q->snaps[i].id, p->name)) {
			r = vd_err(d, -EEXIST, "a snapshot named '%s' already exists", p->name);
			goto out;
		}
	}
	uint64_t disk_l1 = VD_DIV_UP(d->size, cover);
	uint64_t nl2 = VD_DIV_UP(VD_DIV_UP(vmlen, cs), qc_l2_entries(q));
	uint64_t sl1 = disk_l1 + nl2;
	if (sl1 * 8 > QCOW2_MAX_L1_BYTES || disk_l1 > q->l1_size) {
		r = vd_err(d, -EFBIG, "the snapshot's L1 table would be too large");
		goto out;
	}
	if ((r = qcow2_meta_flush(d)) < 0)
		goto out;
	l1 = calloc(sl1 ? sl1 : 1, 8);
	buf = malloc(cs);
	if (!l1 || !buf) {
		r = vd_err(d, -ENOMEM, "out of memory");
		goto out;
	}
	if ((r = check_room(d, q->l1, (uint32_t)disk_l1, buf)) < 0)
		goto out;
	/* 1. the VM state, in clusters only this snapshot references */
	if (vmlen && (r = write_vmstate(d, p->vmstate, p->vmstate_cnt, vmlen, l1,
	                                (uint32_t)disk_l1)) < 0)
		goto out;
	/* 2. the snapshot's L1: the disk part of the active one */
	for (uint64_t i = 0; i < disk_l1; i++)
		l1[i] = q->l1[i] & ~QCOW_OFLAG_COPIED;
	uint64_t l1c = VD_DIV_UP(sl1 * 8, cs), l1off = 0;
	if (sl1) {
		if ((r = qcow2_alloc_clusters(d, l1c, &l1off)) < 0)
			goto out;
		uint64_t *be = calloc(l1c * cs / 8, 8);
		if (!be) {
			r = vd_err(d, -ENOMEM, "out of memory");
			goto out;
		}
		for (uint64_t i = 0; i < sl1; i++)
			vd_put_be64(&be[i], l1[i]);
		r = vd_pwrite_full(d->fd, be, l1c * cs, l1off);
		free(be);
		if (r < 0) {
			r = vd_err(d, r, "writing the snapshot's L1 table: %s", strerror(-r));
			goto out;
		}
	}
	/* 3. everything the disk part reaches gains a reference */
	if ((r = tree_refs(d, q->l1, (uint32_t)disk_l1, +1, buf)) < 0 || (r = fix_copied(d)) < 0 ||
	    (r = qcow2_meta_flush(d)) < 0)
		goto out;
	/* 4. the table entry makes it visible */
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	ns.l1_offset = l1off;
	ns.l1_size = (uint32_t)sl1;
	ns.id = strdup(id);
	ns.name = strdup(p->name);
	ns.date_sec = p->date_sec || p->date_nsec ? p->date_sec : (uint32_t)now.tv_sec;
	ns.date_nsec = p->date_sec || p->date_nsec ? p->date_nsec : (uint32_t)now.tv_nsec;
	ns.vm_clock_nsec = p->vm_clock_nsec;
	ns.vm_state_size = vmlen;
	ns.disk_size = d->size;
	ns.icount = p->icount;
	arr = calloc(q->nb_snaps + 1, sizeof(*arr));
	if (!ns.id || !ns.name || !arr || fill_extra(&ns, p->icount) < 0) {
		r = vd_err(d, -ENOMEM, "out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < q->nb_snaps && r == 0; i++)
		if (upgrade_extra(q, &q->snaps[i]) < 0)
			r = vd_err(d, -ENOMEM, "out of memory");
	memcpy(arr, q->snaps, q->nb_snaps * sizeof(*arr));
	arr[q->nb_snaps] = ns;
	if (r == 0 && (r = write_table(d, arr, q->nb_snaps + 1)) == 0) {
		free(q->snaps);
		q->snaps = arr;
		q->nb_snaps++;
		arr = NULL;
		memset(&ns, 0, sizeof(ns));
	}
out:
	free(arr);
	free_snap(&ns);
	free(l1);
	free(buf);
	pthread_mutex_unlock(&q->lock);
	return r;
}

int qcow2_snap_apply(struct vdisk *d, const char *name)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, cover = cs << q->l2_bits;
	pthread_mutex_lock(&q->lock);
	uint64_t *sl1 = NULL, *nl1 = NULL, *old = NULL;
	uint8_t *buf = malloc(cs);
	int r = 0, i = find_snap(q, name);
	if (!buf) {
		r = vd_err(d, -ENOMEM, "out of memory");
		goto out;
	}
	if (i < 0) {
		r = vd_err(d, -ENOENT, "no snapshot '%s' in '%s'", name, d->path);
		goto out;
	}
	if (q->broken) {
		r = vd_err(d, -EIO, "image is corrupt; snapshot apply refused");
		goto out;
	}
	struct qcow2_snap *s = &q->snaps[i];
	uint64_t sdisk = VD_DIV_UP(s->disk_size, cover);
	if (sdisk * 8 > QCOW2_MAX_L1_BYTES) {
		r = vd_err(d, -EFBIG, "snapshot '%s' has a disk size too large", name);
		goto out;
	}
	uint32_t use = (uint32_t)VD_MIN(s->l1_size, sdisk);
	uint32_t need = (uint32_t)VD_MAX(q->l1_size, sdisk);
	if ((r = qcow2_meta_flush(d)) < 0 || (r = read_l1(d, s->l1_offset, s->l1_size, &sl1)) < 0 ||
	    (r = validate_tree(d, sl1, use, buf)) < 0 || (r = check_room(d, sl1, use, buf)) < 0)
		goto out;
	nl1 = calloc(need ? need : 1, 8);
	old = malloc((q->l1_size ? q->l1_size : 1) * 8ull);
	if (!nl1 || !old) {
		r = vd_err(d, -ENOMEM, "out of memory");
		goto out;
	}
	for (uint32_t k = 0; k < use; k++)
		nl1[k] = sl1[k] & ~QCOW_OFLAG_COPIED;
	uint32_t oldn = q->l1_size;
	memcpy(old, q->l1, oldn * 8ull);
	/* the snapshot's tree gains the active reference first, then the
	 * header switches to a new active L1, then the old tree loses it:
	 * a crash in between leaks clusters, never loses any */
	if ((r = tree_refs(d, nl1, use, +1, buf)) < 0 || (r = qcow2_meta_flush(d)) < 0)
		goto out;
	qc_cache_discard(&q->l2c, 0, UINT64_MAX);
	if ((r = qcow2_replace_l1(d, nl1, need)) < 0)
		goto out;
	if ((r = tree_refs(d, old, oldn, -1, buf)) < 0 || (r = fix_copied(d)) < 0)
		goto out;
	if (s->disk_size != d->size) {
		uint8_t b[8];
		vd_put_be64(b, s->disk_size);
		if ((r = qcow2_meta_flush(d)) < 0)
			goto out;
		if ((r = vd_pwrite_full(d->fd, b, 8, 24)) < 0) {
			r = vd_err(d, r, "writing the disk size: %s", strerror(-r));
			goto out;
		}
		d->size = s->disk_size;
	}
	r = qcow2_meta_flush(d);
out:
	free(sl1);
	free(nl1);
	free(old);
	free(buf);
	pthread_mutex_unlock(&q->lock);
	return r;
}

int qcow2_snap_delete(struct vdisk *d, const char *name)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size;
	pthread_mutex_lock(&q->lock);
	uint64_t *sl1 = NULL;
	struct qcow2_snap *arr = NULL;
	uint8_t *buf = malloc(cs);
	int r = 0, i = find_snap(q, name);
	if (!buf) {
		r = vd_err(d, -ENOMEM, "out of memory");
		goto out;
	}
	if (i < 0) {
		r = vd_err(d, -ENOENT, "no snapshot '%s' in '%s'", name, d->path);
		goto out;
	}
	if (q->broken) {
		r = vd_err(d, -EIO, "image is corrupt; snapshot delete refused");
		goto out;
	}
	struct qcow2_snap s = q->snaps[i];
	if ((r = qcow2_meta_flush(d)) < 0 || (r = read_l1(d, s.l1_offset, s.l1_size, &sl1)) < 0 ||
	    (r = validate_tree(d, sl1, s.l1_size, buf)) < 0)
		goto out;
	arr = calloc(q->nb_snaps, sizeof(*arr));
	if (!arr) {
		r = vd_err(d, -ENOMEM, "out of memory");
		goto out;
	}
	uint32_t n = 0;
	for (uint32_t k = 0; k < q->nb_snaps && r == 0; k++)
		if ((int)k != i && upgrade_extra(q, &q->snaps[k]) < 0)
			r = vd_err(d, -ENOMEM, "out of memory");
	for (uint32_t k = 0; k < q->nb_snaps; k++)
		if ((int)k != i)
			arr[n++] = q->snaps[k];
	/* first the entry goes, then its references: a crash leaks */
	if (r < 0 || (r = write_table(d, arr, n)) < 0)
		goto out;
	free(q->snaps);
	q->snaps = arr;
	q->nb_snaps = n;
	arr = NULL;
	if ((r = tree_refs(d, sl1, s.l1_size, -1, buf)) < 0)
		goto freed;
	if (s.l1_size && (r = qcow2_free_clusters(d, s.l1_offset,
	                                          VD_DIV_UP(s.l1_size * 8ull, cs))) < 0)
		goto freed;
	if ((r = fix_copied(d)) == 0)
		r = qcow2_meta_flush(d);
freed:
	free_snap(&s);
out:
	free(arr);
	free(sl1);
	free(buf);
	pthread_mutex_unlock(&q->lock);
	return r;
}
