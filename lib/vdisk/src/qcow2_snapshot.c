/* SPDX-License-Identifier: MIT */
/* qcow2 internal snapshots: table parsing, list, create, apply, delete and
 * the VM-state area (stored past the disk's L1 range, as qemu does). */
#include "qcow2.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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
		if (s->extra_len >= 24)
			s->icount = vd_be64(rest + 16);
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

int qcow2_snap_create(struct vdisk *d, const char *name, const void *vm, uint64_t len)
{
	(void)name; (void)vm; (void)len;
	return vd_err(d, -ENOTSUP, "creating internal snapshots is not implemented yet");
}

int qcow2_snap_apply(struct vdisk *d, const char *name)
{
	(void)name;
	return vd_err(d, -ENOTSUP, "applying internal snapshots is not implemented yet");
}

int qcow2_snap_delete(struct vdisk *d, const char *name)
{
	(void)name;
	return vd_err(d, -ENOTSUP, "deleting internal snapshots is not implemented yet");
}
