/* SPDX-License-Identifier: MIT */
/* qcow2 data path: read, write (with allocation and copy-on-write),
 * write-zeroes, discard, compressed write, block status. */
#include "qcow2.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_RUN_CLUSTERS 4096

/* State of the guest range starting at in-cluster offset `in` of a cluster
 * whose entry is (e, bm): the kind and how many bytes share it. */
static enum qc_kind classify(const struct qcow2 *q, uint64_t e, uint64_t bm,
                             uint64_t in, uint64_t *run)
{
	uint64_t cs = q->cluster_size;
	enum qc_kind k = qcow2_kind(q, e);
	if (!q->ext_l2 || k == QC_COMPRESSED) {
		*run = cs - in;
		return k;
	}
	uint64_t scs = 1ull << q->sc_bits;
	unsigned sc = (unsigned)(in >> q->sc_bits);
	enum qc_kind first = QC_UNALLOC;
	unsigned j;
	for (j = sc; j < 32; j++) {
		enum qc_kind kj = (bm >> j & 1) ? QC_NORMAL
		                 : (bm >> (32 + j) & 1) ? QC_ZERO : QC_UNALLOC;
		if (j == sc)
			first = kj;
		else if (kj != first)
			break;
	}
	*run = (uint64_t)j * scs - in;
	return first;
}

static int read_backing(struct vdisk *d, uint8_t *buf, uint64_t len, uint64_t off)
{
	uint64_t n = 0;
	if (d->backing && off < d->backing->size)
		n = VD_MIN(len, d->backing->size - off);
	if (n) {
		int r = vdisk_pread(d->backing, buf, n, off);
		if (r < 0) {
			char m[VDISK_ERRMSG_MAX];
			return vd_err(d, r, "backing file: %s", vdisk_errmsg(d->backing, m, sizeof(m)));
		}
	}
	memset(buf + n, 0, len - n);
	return 0;
}

static int read_backing_iov(struct vdisk *d, const struct iovec *iov, int cnt,
                            uint64_t ioff, uint64_t len, uint64_t off)
{
	uint64_t n = 0;
	if (d->backing && off < d->backing->size)
		n = VD_MIN(len, d->backing->size - off);
	if (n) {
		struct vd_iov v;
		int r = vd_iov_sub(&v, iov, cnt, ioff, n);
		if (r < 0)
			return r;
		r = vdisk_preadv(d->backing, v.v, v.cnt, off);
		vd_iov_free(&v);
		if (r < 0) {
			char m[VDISK_ERRMSG_MAX];
			return vd_err(d, r, "backing file: %s", vdisk_errmsg(d->backing, m, sizeof(m)));
		}
	}
	vd_iov_memset(iov, cnt, ioff + n, 0, len - n);
	return 0;
}

static int read_compressed(struct vdisk *d, uint64_t e, uint8_t *out)
{
	struct qcow2 *q = Q(d);
	uint64_t co, cl;
	qcow2_compressed_loc(q, e, &co, &cl);
	uint64_t inlen = cl - (co & 511);
	uint8_t *in = malloc(inlen);
	if (!in)
		return vd_err(d, -ENOMEM, "out of memory");
	int r = vd_pread_zero(d->fd, in, inlen, co);
	if (r == 0 && qcow2_decompress(q, in, inlen, out, q->cluster_size) < 0)
		r = vd_err(d, -EIO, "compressed cluster at %#llx does not decompress (%s)",
		           (unsigned long long)co, q->compression_type ? "zstd" : "zlib");
	else if (r < 0)
		r = vd_err(d, r, "reading compressed cluster: %s", strerror(-r));
	free(in);
	return r;
}

int qcow2_read_cluster_content(struct vdisk *d, uint64_t gc, uint64_t e, uint64_t bm,
                               uint8_t *buf)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size;
	if (qcow2_kind(q, e) == QC_COMPRESSED)
		return read_compressed(d, e, buf);
	uint64_t in = 0;
	while (in < cs) {
		uint64_t run;
		enum qc_kind k = classify(q, e, bm, in, &run);
		int r = 0;
		if (k == QC_NORMAL)
			r = vd_pread_zero(d->fd, buf + in, run, (e & L2E_OFFSET_MASK) + in);
		else if (k == QC_ZERO)
			memset(buf + in, 0, run);
		else
			r = read_backing(d, buf + in, run, gc + in);
		if (r < 0)
			return r;
		in += run;
	}
	return 0;
}

static int lookup(struct vdisk *d, uint64_t guest, uint64_t *e, uint64_t *bm)
{
	int r = qcow2_get_l2e(d, guest, e, bm);
	if (r == 0)
		r = qcow2_check_l2e(d, guest, *e);
	return r;
}

static int qcow2_preadv(struct vdisk *d, const struct iovec *iov, int cnt,
                        uint64_t off, uint64_t len)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, done = 0;
	uint8_t *cbuf = NULL;
	int r = 0;
	while (done < len) {
		uint64_t pos = off + done, in = pos & (cs - 1), e, bm, run;
		pthread_mutex_lock(&q->lock);
		r = lookup(d, pos, &e, &bm);
		enum qc_kind k = classify(q, e, bm, in, &run);
		uint64_t n = VD_MIN(run, len - done);
		uint64_t host = (e & L2E_OFFSET_MASK) + in;
		/* merge physically contiguous data clusters */
		while (r == 0 && k == QC_NORMAL && n == run && done + n < len &&
		       ((pos + n) & (cs - 1)) == 0 && n < (64u << 20)) {
			uint64_t e2, bm2, run2;
			if ((r = lookup(d, pos + n, &e2, &bm2)) < 0)
				break;
			if (classify(q, e2, bm2, 0, &run2) != QC_NORMAL ||
			    (e2 & L2E_OFFSET_MASK) != host + n)
				break;
			run = n + run2;
			n = VD_MIN(run, len - done);
		}
		pthread_mutex_unlock(&q->lock);
		if (r < 0)
			break;
		switch (k) {
		case QC_NORMAL: {
			struct vd_iov v;
			if ((r = vd_iov_sub(&v, iov, cnt, done, n)) < 0)
				break;
			r = vd_preadv_zero(d->fd, v.v, v.cnt, host, n);
			vd_iov_free(&v);
			if (r < 0)
				r = vd_err(d, r, "reading '%s' at %#llx: %s", d->path,
				           (unsigned long long)host, strerror(-r));
			break;
		}
		case QC_ZERO:
			vd_iov_memset(iov, cnt, done, 0, n);
			break;
		case QC_UNALLOC:
			r = read_backing_iov(d, iov, cnt, done, n, pos);
			break;
		case QC_COMPRESSED:
			if (!cbuf && !(cbuf = malloc(cs))) {
				r = vd_err(d, -ENOMEM, "out of memory");
				break;
			}
			if ((r = read_compressed(d, e, cbuf)) == 0)
				vd_iov_from_buf(iov, cnt, done, cbuf + in, n);
			break;
		}
		if (r < 0)
			break;
		done += n;
	}
	free(cbuf);
	return r;
}

static int writable(struct vdisk *d)
{
	struct qcow2 *q = Q(d);
	if (q->broken)
		return vd_err(d, -EIO, "qcow2 image '%s' is corrupt; writes refused", d->path);
	return 0;
}

/* Does the old entry hold host clusters that must be freed once replaced? */
static bool holds_host(const struct qcow2 *q, uint64_t e)
{
	return qcow2_kind(q, e) == QC_COMPRESSED || (e & L2E_OFFSET_MASK);
}

/* Replace one cluster's content: new host cluster, old content merged
 * for the parts the write does not cover. Works for every entry kind. */
static int cow_cluster(struct vdisk *d, uint64_t gc, const struct iovec *iov, int cnt,
                       uint64_t ioff, uint64_t in, uint64_t n)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, e, bm, host;
	uint8_t *buf = malloc(cs);
	if (!buf)
		return vd_err(d, -ENOMEM, "out of memory");
	pthread_mutex_lock(&q->lock);
	int r = lookup(d, gc, &e, &bm);
	pthread_mutex_unlock(&q->lock);
	if (r < 0)
		goto out;
	if (n < cs && (r = qcow2_read_cluster_content(d, gc, e, bm, buf)) < 0)
		goto out;
	vd_iov_to_buf(iov, cnt, ioff, buf + in, n);
	pthread_mutex_lock(&q->lock);
	r = qcow2_alloc_clusters(d, 1, &host);
	if (r == 0)
		q->host_end = VD_MAX(q->host_end, host + cs);
	pthread_mutex_unlock(&q->lock);
	if (r < 0)
		goto out;
	if ((r = vd_pwrite_full(d->fd, buf, cs, host)) < 0) {
		r = vd_err(d, r, "writing data at %#llx: %s", (unsigned long long)host, strerror(-r));
		goto out;
	}
	pthread_mutex_lock(&q->lock);
	r = qcow2_set_l2e(d, gc, host | QCOW_OFLAG_COPIED, q->ext_l2 ? 0xffffffffull : 0);
	/* the new mapping must be durable before the old space is reused */
	if (r == 0 && holds_host(q, e))
		r = qcow2_defer_free(d, e);
	pthread_mutex_unlock(&q->lock);
out:
	free(buf);
	return r;
}

/* Extended L2, cluster already ours: fill the touched subclusters that
 * were not allocated, then mark them allocated. */
static int extl2_write(struct vdisk *d, uint64_t gc, uint64_t e, uint64_t bm,
                       const struct iovec *iov, int cnt, uint64_t ioff, uint64_t in, uint64_t n)
{
	struct qcow2 *q = Q(d);
	uint64_t scs = 1ull << q->sc_bits, host = e & L2E_OFFSET_MASK;
	unsigned s0 = (unsigned)(in >> q->sc_bits), s1 = (unsigned)((in + n - 1) >> q->sc_bits);
	uint8_t *buf = malloc(scs);
	if (!buf)
		return vd_err(d, -ENOMEM, "out of memory");
	int r = 0;
	for (unsigned j = s0; j <= s1 && r == 0; j++) {
		uint64_t a = VD_MAX(in, (uint64_t)j * scs), b = VD_MIN(in + n, (uint64_t)(j + 1) * scs);
		bool full = a == (uint64_t)j * scs && b == (uint64_t)(j + 1) * scs;
		if ((bm >> j & 1) || full) {
			struct vd_iov v;
			if ((r = vd_iov_sub(&v, iov, cnt, ioff + (a - in), b - a)) < 0)
				break;
			r = vd_pwritev_full(d->fd, v.v, v.cnt, host + a, b - a);
			vd_iov_free(&v);
		} else {
			uint64_t base = (uint64_t)j * scs;
			if (bm >> (32 + j) & 1)
				memset(buf, 0, scs);
			else if ((r = read_backing(d, buf, scs, gc + base)) < 0)
				break;
			vd_iov_to_buf(iov, cnt, ioff + (a - in), buf + (a - base), b - a);
			r = vd_pwrite_full(d->fd, buf, scs, host + base);
		}
		if (r < 0)
			r = vd_err(d, r, "writing data: %s", strerror(-r));
	}
	free(buf);
	if (r < 0)
		return r;
	for (unsigned j = s0; j <= s1; j++) {
		bm |= 1ull << j;
		bm &= ~(1ull << (32 + j));
	}
	pthread_mutex_lock(&q->lock);
	r = qcow2_set_l2e(d, gc, e, bm);
	pthread_mutex_unlock(&q->lock);
	return r;
}

static int zero_fill(struct vdisk *d, uint64_t off, uint64_t len)
{
	struct qcow2 *q = Q(d);
	while (len) {
		uint64_t n = VD_MIN(len, q->cluster_size);
		int r = vd_pwrite_full(d->fd, q->zbuf, n, off);
		if (r < 0)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

/* Is the old content of this cluster all zero without any host cluster? */
static bool zero_unowned(const struct vdisk *d, const struct qcow2 *q, uint64_t gc,
                         uint64_t e, uint64_t bm)
{
	enum qc_kind k = qcow2_kind(q, e);
	if (q->ext_l2) {
		if (k != QC_UNALLOC)
			return false;
		return !d->backing || gc >= d->backing->size ||
		       (bm >> 32) == 0xffffffffull;
	}
	if (k == QC_ZERO)
		return !(e & L2E_OFFSET_MASK);
	return k == QC_UNALLOC && (!d->backing || gc >= d->backing->size);
}

static int qcow2_pwritev(struct vdisk *d, const struct iovec *iov, int cnt,
                         uint64_t off, uint64_t len)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, done = 0;
	int r = writable(d);
	while (r == 0 && done < len) {
		uint64_t pos = off + done, in = pos & (cs - 1), gc = pos - in, e, bm;
		uint64_t n = VD_MIN(cs - in, len - done);
		pthread_mutex_lock(&q->lock);
		r = lookup(d, gc, &e, &bm);
		if (r < 0) {
			pthread_mutex_unlock(&q->lock);
			break;
		}
		enum qc_kind k = qcow2_kind(q, e);
		bool owned = k == QC_NORMAL && (e & QCOW_OFLAG_COPIED);
		if (owned && !q->ext_l2) {
			/* in place; merge contiguous owned clusters */
			uint64_t host = (e & L2E_OFFSET_MASK) + in;
			while (done + n < len && n < (64u << 20)) {
				uint64_t e2, bm2;
				if (lookup(d, pos + n, &e2, &bm2) < 0 || qcow2_kind(q, e2) != QC_NORMAL ||
				    !(e2 & QCOW_OFLAG_COPIED) || (e2 & L2E_OFFSET_MASK) != host + n)
					break;
				n += VD_MIN(cs, len - done - n);
			}
			pthread_mutex_unlock(&q->lock);
			struct vd_iov v;
			if ((r = vd_iov_sub(&v, iov, cnt, done, n)) < 0)
				break;
			r = vd_pwritev_full(d->fd, v.v, v.cnt, host, n);
			vd_iov_free(&v);
			if (r < 0)
				r = vd_err(d, r, "writing '%s' at %#llx: %s", d->path,
				           (unsigned long long)host, strerror(-r));
			done += n;
			continue;
		}
		if (owned) { /* extended L2 */
			pthread_mutex_unlock(&q->lock);
			r = extl2_write(d, gc, e, bm, iov, cnt, done, in, n);
			done += n;
			continue;
		}
		if (!zero_unowned(d, q, gc, e, bm) || q->ext_l2) {
			pthread_mutex_unlock(&q->lock);
			if (q->ext_l2 && k == QC_UNALLOC) {
				/* give the cluster a host cluster, then fill subclusters */
				uint64_t host;
				pthread_mutex_lock(&q->lock);
				r = qcow2_alloc_clusters(d, 1, &host);
				if (r == 0) {
					q->host_end = VD_MAX(q->host_end, host + cs);
					r = qcow2_set_l2e(d, gc, host | QCOW_OFLAG_COPIED, bm);
				}
				pthread_mutex_unlock(&q->lock);
				if (r == 0)
					r = extl2_write(d, gc, host | QCOW_OFLAG_COPIED, bm, iov, cnt,
					                done, in, n);
			} else {
				r = cow_cluster(d, gc, iov, cnt, done, in, n);
			}
			done += n;
			continue;
		}
		/* a run of clusters whose old content is zero and unowned:
		 * allocate them contiguously and write with one call */
		uint64_t nc = 1;
		while (done + n < len && nc < MAX_RUN_CLUSTERS) {
			uint64_t e2, bm2;
			if (lookup(d, gc + nc * cs, &e2, &bm2) < 0 ||
			    !zero_unowned(d, q, gc + nc * cs, e2, bm2))
				break;
			n += VD_MIN(cs, len - done - n);
			nc++;
		}
		/* clusters at or past the allocation end were never written */
		uint64_t host, old_end = q->host_end;
		r = qcow2_alloc_clusters(d, nc, &host);
		bool fresh = host >= old_end;
		pthread_mutex_unlock(&q->lock);
		if (r < 0)
			break;
		struct vd_iov v;
		if ((r = vd_iov_sub(&v, iov, cnt, done, n)) < 0)
			break;
		r = vd_pwritev_full(d->fd, v.v, v.cnt, host + in, n);
		vd_iov_free(&v);
		/* Fresh clusters (at or past the old end of the allocation) read
		 * as zero already: the file is extended to cover them, under the
		 * metadata lock, before any table pointing to them reaches the
		 * disk (qcow2_cover_end). Never ftruncate here: a concurrent
		 * writer may have extended the file past our clusters. */
		uint64_t tail = nc * cs - in - n;
		if (r == 0 && !fresh && in)
			r = vd_pwrite_full(d->fd, q->zbuf, in, host);
		if (r == 0 && tail && !fresh)
			r = zero_fill(d, host + in + n, tail);
		if (r < 0) {
			r = vd_err(d, r, "writing '%s' at %#llx: %s", d->path,
			           (unsigned long long)host, strerror(-r));
			break;
		}
		pthread_mutex_lock(&q->lock);
		for (uint64_t i = 0; i < nc && r == 0; i++)
			r = qcow2_set_l2e(d, gc + i * cs, (host + i * cs) | QCOW_OFLAG_COPIED, 0);
		pthread_mutex_unlock(&q->lock);
		done += n;
	}
	return r;
}

/* Zero or discard whole clusters; partial clusters are written as zeroes
 * (write_zeroes) or left alone (discard). `empty` (with discard): the
 * clusters become unallocated, reading from the backing file again. */
static int zero_range(struct vdisk *d, uint64_t off, uint64_t len, bool discard, bool empty)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size;
	int r = writable(d);
	if (r < 0)
		return r;
	uint64_t a = VD_ALIGN_UP(off, cs), b = (off + len) / cs * cs;
	if (off + len == d->size)
		b = VD_ALIGN_UP(off + len, cs); /* the tail cluster is whole */
	uint64_t end = off + len;
	if (!discard) {
		/* partial clusters at either end: real zeroes */
		uint64_t he = VD_MIN(a, end);
		struct iovec zv = { q->zbuf, he - off };
		if (he > off && (r = qcow2_pwritev(d, &zv, 1, off, he - off)) < 0)
			return r;
		uint64_t ts = VD_MAX(b, he);
		zv.iov_len = end - ts;
		if (ts < end && (r = qcow2_pwritev(d, &zv, 1, ts, end - ts)) < 0)
			return r;
	}
	if (a >= b)
		return 0;
	bool v2_backed = q->version < 3 && d->backing;
	if (v2_backed && !empty) {
		if (discard)
			return 0;
		/* v2 cannot express zero over a backing file: write zeroes */
		for (uint64_t p = a; p < b && r == 0; p += cs) {
			struct iovec zv = { q->zbuf, VD_MIN(cs, d->size - p) };
			r = qcow2_pwritev(d, &zv, 1, p, zv.iov_len);
		}
		return r;
	}
	uint64_t nc = (b - a) / cs;
	uint64_t *old = malloc(nc * sizeof(*old));
	if (!old)
		return vd_err(d, -ENOMEM, "out of memory");
	pthread_mutex_lock(&q->lock);
	uint64_t nold = 0;
	for (uint64_t p = a; p < b && r == 0; p += cs) {
		uint64_t e, bm;
		if ((r = lookup(d, p, &e, &bm)) < 0)
			break;
		uint64_t ne, nbm = 0;
		if (empty) {
			ne = 0;
		} else if (q->ext_l2) {
			ne = 0;
			nbm = 0xffffffffull << 32;
			if (!d->backing && discard)
				nbm = 0;
		} else if (q->version >= 3) {
			ne = (d->backing || !discard) ? QCOW_OFLAG_ZERO : 0;
		} else {
			ne = 0;
		}
		if (e == ne && bm == nbm)
			continue;
		if (!q->l1[p >> (q->cluster_bits + q->l2_bits)] && ne == 0 && nbm == 0)
			continue;
		if ((r = qcow2_set_l2e(d, p, ne, nbm)) < 0)
			break;
		if (holds_host(q, e))
			old[nold++] = e;
	}
	for (uint64_t i = 0; i < nold && r == 0; i++)
		r = qcow2_defer_free(d, old[i]);
	pthread_mutex_unlock(&q->lock);
	free(old);
	return r;
}

static int qcow2_write_zeroes(struct vdisk *d, uint64_t off, uint64_t len, unsigned flags)
{
	(void)flags;
	return zero_range(d, off, len, false, false);
}

static int qcow2_discard(struct vdisk *d, uint64_t off, uint64_t len)
{
	return zero_range(d, off, len, true, false);
}

static int qcow2_make_empty(struct vdisk *d)
{
	return zero_range(d, 0, d->size, true, true);
}

/* Sector-granular allocation for compressed data, packed into shared
 * clusters; every cluster a piece touches holds one reference for it. */
static int alloc_bytes(struct vdisk *d, uint64_t size, uint64_t *out)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, c;
	int r;
	bool fresh_start = !q->cfree || !(q->cfree & (cs - 1));
	if (!fresh_start) {
		uint64_t rc;
		if ((r = qcow2_get_refcount(d, q->cfree / cs, &rc)) < 0)
			return r;
		if (rc == 0) /* the shared cluster was freed meanwhile */
			fresh_start = true;
	}
	if (fresh_start) {
		if ((r = qcow2_alloc_clusters(d, 1, &c)) < 0)
			return r;
		q->cfree = c;
	}
	uint64_t off = q->cfree, cend = (off & ~(uint64_t)(cs - 1)) + cs;
	if (!fresh_start && off + size > cend) {
		if ((r = qcow2_alloc_clusters(d, 1, &c)) < 0)
			return r;
		if (c != cend) {
			off = c; /* not contiguous: start over in the new cluster */
			fresh_start = true;
		}
	}
	if (!fresh_start && (r = qcow2_update_refcount(d, off, 1, 1)) < 0)
		return r;
	q->cfree = off + size;
	q->host_end = VD_MAX(q->host_end, VD_ALIGN_UP(off + size, cs));
	*out = off;
	return 0;
}

static int qcow2_pwrite_compressed(struct vdisk *d, const void *data, size_t len, uint64_t off)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size;
	int r = writable(d);
	if (r < 0)
		return r;
	if (off % cs || (len != cs && off + len != d->size) || len > cs)
		return vd_err(d, -EINVAL, "compressed writes must cover exactly one cluster");
	if (q->ext_l2)
		return vd_err(d, -ENOTSUP, "compressed writes to extended-L2 images are not supported");
	uint8_t *in = NULL, *out = malloc(cs);
	const uint8_t *src = data;
	if (len < cs) {
		in = calloc(1, cs);
		if (in)
			memcpy(in, data, len);
		src = in;
	}
	if (!out || !src) {
		free(in);
		free(out);
		return vd_err(d, -ENOMEM, "out of memory");
	}
	ssize_t clen = qcow2_compress(q, src, cs, out, cs - 512);
	if (clen < 0) {
		/* incompressible: store normally */
		struct iovec v = { (void *)src, len };
		free(out);
		r = qcow2_pwritev(d, &v, 1, off, len);
		free(in);
		return r;
	}
	/* compressed data is placed in fresh, sector-aligned space of its own
	 * cluster(s); the descriptor counts 512-byte sectors */
	uint64_t nsec = VD_DIV_UP((uint64_t)clen, 512);
	uint64_t host = 0, e, bm;
	pthread_mutex_lock(&q->lock);
	r = lookup(d, off, &e, &bm);
	if (r == 0)
		r = alloc_bytes(d, nsec * 512, &host);
	pthread_mutex_unlock(&q->lock);
	if (r == 0) {
		memset(out + clen, 0, nsec * 512 - (uint64_t)clen);
		r = vd_pwrite_full(d->fd, out, nsec * 512, host);
		if (r < 0)
			r = vd_err(d, r, "writing compressed data: %s", strerror(-r));
	}
	if (r == 0) {
		unsigned x = 62 - (q->cluster_bits - 8);
		uint64_t ne = QCOW_OFLAG_COMPRESSED | (nsec - 1) << x | host;
		pthread_mutex_lock(&q->lock);
		r = qcow2_set_l2e(d, off, ne, 0);
		if (r == 0 && holds_host(q, e))
			r = qcow2_defer_free(d, e);
		pthread_mutex_unlock(&q->lock);
	}
	free(in);
	free(out);
	return r;
}

static int qcow2_block_status(struct vdisk *d, uint64_t off, uint64_t len,
                              struct vdisk_extent *x)
{
	struct qcow2 *q = Q(d);
	uint64_t cs = q->cluster_size, done = 0, e, bm, run;
	enum qc_kind k0 = QC_UNALLOC;
	uint64_t host0 = 0;
	int r = 0;
	pthread_mutex_lock(&q->lock);
	while (done < len) {
		uint64_t pos = off + done, in = pos & (cs - 1);
		if ((r = lookup(d, pos, &e, &bm)) < 0)
			break;
		enum qc_kind k = classify(q, e, bm, in, &run);
		uint64_t host = (e & L2E_OFFSET_MASK) + in;
		if (done == 0) {
			k0 = k;
			host0 = host;
		} else if (k != k0 || k == QC_COMPRESSED ||
		           (k == QC_NORMAL && host != host0 + done)) {
			break;
		}
		done += VD_MIN(run, len - done);
		if (k == QC_COMPRESSED)
			break;
	}
	pthread_mutex_unlock(&q->lock);
	if (r < 0)
		return r;
	x->offset = off;
	x->length = done;
	x->depth = 0;
	x->host_offset = 0;
	switch (k0) {
	case QC_NORMAL:
		x->flags = VDISK_BS_DATA | VDISK_BS_ALLOCATED | VDISK_BS_OFFSET;
		x->host_offset = host0;
		return 0;
	case QC_ZERO:
		x->flags = VDISK_BS_ZERO | VDISK_BS_ALLOCATED;
		return 0;
	case QC_COMPRESSED:
		x->flags = VDISK_BS_DATA | VDISK_BS_ALLOCATED | VDISK_BS_COMPRESSED;
		return 0;
	case QC_UNALLOC:
		break;
	}
	if (d->backing && off < d->backing->size) {
		uint64_t n = VD_MIN(done, d->backing->size - off);
		struct vdisk_extent b;
		if ((r = vdisk_block_status(d->backing, off, n, &b)) < 0) {
			char m[VDISK_ERRMSG_MAX];
			return vd_err(d, r, "backing file: %s", vdisk_errmsg(d->backing, m, sizeof(m)));
		}
		*x = b;
		x->depth = b.depth + 1;
		if (!(b.flags & VDISK_BS_ALLOCATED))
			x->depth = b.depth + 1;
		return 0;
	}
	x->flags = VDISK_BS_ZERO;
	x->depth = d->backing ? 1 : 0;
	return 0;
}

static int qcow2_flush(struct vdisk *d)
{
	struct qcow2 *q = Q(d);
	pthread_mutex_lock(&q->lock);
	int r = qcow2_meta_flush(d);
	pthread_mutex_unlock(&q->lock);
	return r;
}

/* defined in qcow2_open.c */
int qcow2_open(struct vdisk *d, const struct vdisk_open_opts *o);
int qcow2_close(struct vdisk *d);
int qcow2_info(struct vdisk *d, struct vdisk_info *info);
int qcow2_resize(struct vdisk *d, uint64_t size, unsigned flags);

const struct vdisk_ops vdisk_qcow2_ops = {
	.name = "qcow2",
	.open = qcow2_open,
	.close = qcow2_close,
	.create = qcow2_create,
	.preadv = qcow2_preadv,
	.pwritev = qcow2_pwritev,
	.flush = qcow2_flush,
	.discard = qcow2_discard,
	.write_zeroes = qcow2_write_zeroes,
	.pwrite_compressed = qcow2_pwrite_compressed,
	.block_status = qcow2_block_status,
	.resize = qcow2_resize,
	.info = qcow2_info,
	.check = qcow2_check,
	.snap_list = qcow2_snap_list,
	.snap_create = qcow2_snap_create,
	.snap_apply = qcow2_snap_apply,
	.snap_delete = qcow2_snap_delete,
	.snap_vmstate = qcow2_snap_vmstate,
	.set_backing = qcow2_set_backing,
	.make_empty = qcow2_make_empty,
};
