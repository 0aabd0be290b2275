/* SPDX-License-Identifier: MIT */
/* qcow2 image creation, with optional preallocation. */
#include "qcow2.h"

#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int backing_size(const char *path, const struct vdisk_create_opts *o,
                        uint64_t *size, struct vdisk_error *err)
{
	char *p;
	if (o->backing_file[0] == '/') {
		p = strdup(o->backing_file);
	} else {
		char *dup = strdup(path);
		if (!dup)
			return -ENOMEM;
		const char *dir = dirname(dup);
		size_t n = strlen(dir) + strlen(o->backing_file) + 2;
		p = malloc(n);
		if (p)
			snprintf(p, n, "%s/%s", dir, o->backing_file);
		free(dup);
	}
	if (!p)
		return -ENOMEM;
	struct vdisk *b;
	struct vdisk_open_opts bo = { .format = o->backing_format,
	                              .flags = o->backing_format ? 0 : VDISK_OPEN_PROBE };
	int r = vdisk_open(&b, p, &bo, err);
	free(p);
	if (r < 0)
		return r;
	*size = vdisk_size(b);
	vdisk_close(b);
	return 0;
}

static int preallocate(const char *path, enum vdisk_prealloc mode, struct vdisk_error *err)
{
	struct vdisk *d;
	struct vdisk_open_opts oo = { .format = "qcow2",
	                              .flags = VDISK_OPEN_RDWR | VDISK_OPEN_NO_BACKING };
	int r = vdisk_open(&d, path, &oo, err);
	if (r < 0)
		return r;
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, nclusters = VD_DIV_UP(d->size, cs);
	pthread_mutex_lock(&q->lock);
	for (uint64_t c = 0; c < nclusters && r == 0;) {
		uint64_t n = VD_MIN(nclusters - c, 65536), host;
		if ((r = qcow2_alloc_clusters(d, n, &host)) < 0)
			break;
		q->host_end = VD_MAX(q->host_end, host + n * cs);
		for (uint64_t i = 0; i < n && r == 0; i++)
			r = qcow2_set_l2e(d, (c + i) * cs, (host + i * cs) | QCOW_OFLAG_COPIED,
			                  q->ext_l2 ? 0xffffffffull : 0);
		c += n;
	}
	pthread_mutex_unlock(&q->lock);
	uint64_t end = q->host_end;
	if (r == 0 && ftruncate(d->fd, (off_t)end) < 0)
		r = -errno;
	if (r == 0 && mode == VDISK_PREALLOC_FALLOC && fallocate(d->fd, 0, 0, (off_t)end) < 0)
		r = -errno;
	if (r == 0 && mode == VDISK_PREALLOC_FULL) {
		/* write zeroes over every data cluster (the file tail) */
		for (uint64_t p = 0; p < nclusters && r == 0; p++) {
			uint64_t e, bm;
			pthread_mutex_lock(&q->lock);
			r = qcow2_get_l2e(d, p * cs, &e, &bm);
			pthread_mutex_unlock(&q->lock);
			if (r == 0)
				r = vd_pwrite_full(d->fd, q->zbuf, cs, e & L2E_OFFSET_MASK);
		}
	}
	if (r < 0) {
		char m[VDISK_ERRMSG_MAX];
		vd_seterr(err, r, "preallocating '%s': %s", path,
		          d->errmsg[0] ? vdisk_errmsg(d, m, sizeof(m)) : strerror(-r));
	}
	int r2 = vdisk_close(d);
	return r ? r : r2;
}

int qcow2_create(const char *path, const struct vdisk_create_opts *o, struct vdisk_error *err)
{
	int version = o->compat ? o->compat : 3;
	uint32_t cs = o->cluster_size ? o->cluster_size : 65536;
	uint32_t rbits = o->refcount_bits ? o->refcount_bits : 16;
	if (version != 2 && version != 3)
		return vd_seterr(err, -EINVAL, "compat must be 0.10 (v2) or 1.1 (v3)");
	if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)))
		return vd_seterr(err, -EINVAL, "cluster size %u must be a power of two in 512..2M", cs);
	if (rbits < 1 || rbits > 64 || (rbits & (rbits - 1)))
		return vd_seterr(err, -EINVAL, "refcount_bits %u must be a power of two in 1..64", rbits);
	if (version == 2 && (rbits != 16 || o->lazy_refcounts || o->extended_l2 ||
	                     o->compression != VDISK_COMPRESS_ZLIB))
		return vd_seterr(err, -EINVAL, "compat=0.10 images support only 16-bit refcounts, "
		                 "no lazy refcounts, no extended L2 and zlib compression");
	if (o->extended_l2 && cs < 16384)
		return vd_seterr(err, -EINVAL, "extended L2 needs a cluster size of at least 16k");
	if (o->backing_file && o->prealloc != VDISK_PREALLOC_OFF)
		return vd_seterr(err, -EINVAL, "preallocation and a backing file cannot be combined");
	uint64_t size = o->size;
	if (o->backing_file) {
		char why[1200];
		int r = qcow2_backing_name_ok(o->backing_file, why, sizeof(why));
		if (r < 0)
			return vd_seterr(err, r, "%s", why);
		if (strlen(o->backing_file) > QCOW2_MAX_BACKING_NAME)
			return vd_seterr(err, -EINVAL, "backing file name too long");
		if (!size && (r = backing_size(path, o, &size, err)) < 0)
			return r;
	}

	struct qcow2 q = {0};
	q.version = (uint32_t)version;
	q.cluster_bits = (uint32_t)__builtin_ctz(cs);
	q.cluster_size = cs;
	q.refcount_order = (uint32_t)__builtin_ctz(rbits);
	q.refcount_bits = rbits;
	q.rb_bits = q.cluster_bits + 3 - q.refcount_order;
	q.ext_l2 = o->extended_l2;
	q.l2_entry_size = q.ext_l2 ? 16 : 8;
	q.l2_bits = q.cluster_bits - (q.ext_l2 ? 4 : 3);
	q.compression_type = o->compression == VDISK_COMPRESS_ZSTD ? 1 : 0;
	if (q.compression_type)
		q.incompat |= QCOW2_INCOMPAT_COMPRESSION;
	if (q.ext_l2)
		q.incompat |= QCOW2_INCOMPAT_EXTL2;
	if (o->lazy_refcounts)
		q.compat |= QCOW2_COMPAT_LAZY;
	q.backing_name = (char *)o->backing_file;
	q.backing_fmt = (char *)o->backing_format;

	uint64_t cover = (uint64_t)cs << q.l2_bits;
	uint64_t l1_size = VD_DIV_UP(size, cover);
	if (l1_size * 8 > QCOW2_MAX_L1_BYTES)
		return vd_seterr(err, -EFBIG, "virtual size %llu too large for cluster size %u",
		                 (unsigned long long)size, cs);
	uint64_t l1c = VD_DIV_UP(l1_size * 8, cs), per_block = 1ull << q.rb_bits;
	uint64_t rtc = 1, nb = 1, n0 = 0;
	for (int i = 0; i < 32; i++) {
		n0 = 1 + rtc + nb + l1c;
		uint64_t nb2 = VD_DIV_UP(n0, per_block), rtc2 = VD_DIV_UP(nb2 * 8, cs);
		if (nb2 == nb && rtc2 == rtc)
			break;
		nb = nb2;
		rtc = rtc2;
	}
	if (rtc * cs > QCOW2_MAX_REFTABLE_BYTES)
		return vd_seterr(err, -EFBIG, "refcount table would be too large");
	q.reftable_offset = cs;
	q.reftable_clusters = (uint32_t)rtc;
	q.l1_offset = (1 + rtc + nb) * cs;
	q.l1_size = (uint32_t)l1_size;

	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return vd_seterr(err, -errno, "could not create '%s': %s", path, strerror(errno));
	struct vdisk fake = { .fd = fd, .size = size };
	pthread_mutex_init(&fake.err_lock, NULL);
	int r = qcow2_write_header(&fake, &q);
	if (r < 0) {
		vd_seterr(err, r, "%s", fake.errmsg);
		goto out;
	}
	uint8_t *buf = calloc(1, (size_t)VD_MAX(rtc, 1) * cs);
	if (!buf) {
		r = vd_seterr(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (uint64_t i = 0; i < nb; i++)
		vd_put_be64(buf + i * 8, (1 + rtc + i) * cs);
	r = vd_pwrite_full(fd, buf, rtc * cs, cs);
	for (uint64_t i = 0; i < nb && r == 0; i++) {
		memset(buf, 0, cs);
		for (uint64_t c = i * per_block; c < n0 && c < (i + 1) * per_block; c++)
			qcow2_rb_set(&q, buf, c - i * per_block, 1);
		r = vd_pwrite_full(fd, buf, cs, (1 + rtc + i) * cs);
	}
	free(buf);
	if (r == 0 && ftruncate(fd, (off_t)(n0 * cs)) < 0)
		r = -errno;
	if (r == 0)
		r = vd_fdatasync(fd);
	if (r < 0)
		vd_seterr(err, r, "writing '%s': %s", path, strerror(-r));
out:
	pthread_mutex_destroy(&fake.err_lock);
	close(fd);
	if (r == 0 && o->prealloc != VDISK_PREALLOC_OFF)
		r = preallocate(path, o->prealloc, err);
	return r;
}
