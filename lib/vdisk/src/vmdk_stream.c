/* SPDX-License-Identifier: MIT */
/* VMDK compressed grains: reading deflated grains (with or without grain
 * markers), and writing stream-optimized extents: each grain is deflated by
 * the writing thread, appended at the end of the file after a grain marker;
 * grain tables, the directory, a footer and the end-of-stream marker follow
 * the grains when the image is closed. */
#include "vmdk.h"

#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

#define PEND_RUNS 16

struct vmdk_pending {
	uint64_t g;
	uint8_t *buf;
	unsigned nruns;              /* written runs, sorted and merged */
	bool lost;                   /* too scattered to track: kept to the close */
	uint64_t run[PEND_RUNS][2];
	struct vmdk_pending *next;
};

/* Record [s, e) as written; true once the whole grain [0, gs) is. */
static bool pend_cover(struct vmdk_pending *p, uint64_t s, uint64_t e, uint64_t gs)
{
	if (p->lost)
		return false;
	uint64_t out[PEND_RUNS + 1][2];
	unsigned n = 0, i = 0;
	while (i < p->nruns && p->run[i][1] < s)
		memcpy(out[n++], p->run[i++], sizeof(out[0]));
	uint64_t ms = s, me = e;
	while (i < p->nruns && p->run[i][0] <= e) {
		ms = VD_MIN(ms, p->run[i][0]);
		me = VD_MAX(me, p->run[i][1]);
		i++;
	}
	out[n][0] = ms;
	out[n++][1] = me;
	while (i < p->nruns)
		memcpy(out[n++], p->run[i++], sizeof(out[0]));
	if (n > PEND_RUNS) {
		p->lost = true;
		return false;
	}
	memcpy(p->run, out, n * sizeof(out[0]));
	p->nruns = n;
	return n == 1 && p->run[0][0] == 0 && p->run[0][1] >= gs;
}

static const char *ename(const struct vdisk *d, const struct vmdk_extent *e)
{
	return e->file ? e->file : d->path;
}

static int inflate_grain(const uint8_t *in, size_t inlen, uint8_t *out, size_t outlen,
                         size_t *got)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	/* deflate in a zlib wrapper (what VMware and qemu write), or raw */
	bool wrapped = inlen >= 2 && (in[0] & 0x0f) == 8 && ((in[0] << 8 | in[1]) % 31) == 0;
	if (inflateInit2(&z, wrapped ? 15 : -15) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)inlen;
	z.next_out = out;
	z.avail_out = (uInt)outlen;
	int zr = inflate(&z, Z_FINISH);
	*got = outlen - z.avail_out;
	inflateEnd(&z);
	return zr == Z_STREAM_END || (zr == Z_BUF_ERROR && z.avail_out == 0) ? 0 : -EIO;
}

int vmdk_read_compressed(struct vdisk *d, struct vmdk_extent *e, uint64_t g,
                         uint32_t gte, uint8_t *out, uint8_t *in)
{
	struct vmdk_sparse *sp = e->sp;
	uint64_t gs = sp->grain_size, pos = (uint64_t)gte * VMDK_SECTOR;
	uint64_t cap = VMDK_COMP_CAP(gs), inlen;
	int r;
	/* one read covers the marker and, nearly always, the data */
	uint64_t first = VD_MIN(cap, gs + 4096);
	if ((r = vd_pread_zero(e->fd, in, first, pos)) < 0)
		return vd_err(d, r, "vmdk extent '%s': grain %llu: reading at %#llx: %s",
		              ename(d, e), (unsigned long long)g, (unsigned long long)pos,
		              strerror(-r));
	uint8_t *data = in;
	if (sp->markers) {
		inlen = vd_le32(in + 8);
		if (!inlen || inlen > cap - 12)
			return vd_err(d, -EIO, "vmdk extent '%s': grain %llu: compressed size %llu is "
			              "out of range", ename(d, e), (unsigned long long)g,
			              (unsigned long long)inlen);
		data = in + 12;
		if (12 + inlen > first &&
		    (r = vd_pread_full(e->fd, in + first, 12 + inlen - first, pos + first)) < 0)
			return vd_err(d, r, "vmdk extent '%s': grain %llu: reading %llu compressed "
			              "bytes at %#llx: %s", ename(d, e), (unsigned long long)g,
			              (unsigned long long)inlen, (unsigned long long)pos,
			              r == -EIO ? "beyond the end of the file" : strerror(-r));
	} else {
		inlen = cap;
		if (first < cap && (r = vd_pread_zero(e->fd, in + first, cap - first, pos + first)) < 0)
			return vd_err(d, r, "vmdk extent '%s': grain %llu: %s", ename(d, e),
			              (unsigned long long)g, strerror(-r));
	}
	size_t got = 0;
	r = inflate_grain(data, inlen, out, gs, &got);
	/* the extent's last grain may be short */
	uint64_t need = VD_MIN(gs, e->sectors * VMDK_SECTOR - g * gs);
	if (r < 0 || got < need)
		return vd_err(d, -EIO, "vmdk extent '%s': grain %llu does not decompress to %llu bytes",
		              ename(d, e), (unsigned long long)g, (unsigned long long)need);
	memset(out + got, 0, gs - got);
	return 0;
}

/* ---- stream writer ------------------------------------------------------ */

static void put_marker(uint8_t *b, uint64_t val, uint32_t size, uint32_t type)
{
	memset(b, 0, VMDK_SECTOR);
	vd_put_le64(b, val);
	vd_put_le32(b + 8, size);
	vd_put_le32(b + 12, type);
}

int vmdk_stream_write_grain(struct vdisk *d, struct vmdk_extent *e, uint64_t g,
                            const uint8_t *grain)
{
	struct vmdk_sparse *sp = e->sp;
	uint64_t gs = sp->grain_size;
	if (vd_buf_is_zero(grain, gs))
		return 0; /* an unallocated grain reads as zeroes */
	uLongf clen = compressBound((uLong)gs);
	uint8_t *b = malloc(VD_ALIGN_UP(12 + clen, VMDK_SECTOR));
	if (!b)
		return vd_err(d, -ENOMEM, "out of memory");
	/* data that does not compress (already compressed or encrypted) is
	 * stored: a deflate stream of stored blocks, at memcpy speed */
	int level = sp->zlevel;
	if (gs >= 8192) {
		uLongf sl = clen;
		if (compress2(b + 12, &sl, grain, 4096, level) == Z_OK && sl > 4096 - 64)
			level = 0;
	}
	if (compress2(b + 12, &clen, grain, (uLong)gs, level) != Z_OK) {
		free(b);
		return vd_err(d, -EIO, "vmdk: deflating grain %llu failed", (unsigned long long)g);
	}
	vd_put_le64(b, g * sp->h.grain_sectors);
	vd_put_le32(b + 8, (uint32_t)clen);
	uint64_t total = VD_ALIGN_UP(12 + clen, VMDK_SECTOR), pos;
	memset(b + 12 + clen, 0, total - 12 - clen);
	int r = vmdk_alloc(d, e, total, &pos);
	if (r == 0 && (r = vd_pwrite_full(e->fd, b, total, pos)) < 0)
		r = vd_err(d, r, "vmdk extent '%s': writing grain %llu: %s", ename(d, e),
		           (unsigned long long)g, strerror(-r));
	free(b);
	return r < 0 ? r : vmdk_gte_set(d, e, g, (uint32_t)(pos / VMDK_SECTOR));
}

static struct vmdk_pending *pend_take(struct vmdk_sparse *sp, uint64_t g, bool unlink)
{
	pthread_mutex_lock(&sp->pend_lock);
	struct vmdk_pending **pp = &sp->pend, *p;
	while ((p = *pp) && p->g != g)
		pp = &p->next;
	if (p && unlink)
		*pp = p->next;
	pthread_mutex_unlock(&sp->pend_lock);
	return p;
}

static int written_once(struct vdisk *d, struct vmdk_extent *e, uint64_t g)
{
	return vd_err(d, -ENOTSUP, "vmdk extent '%s' is stream-optimized: grain %llu was already "
	              "written, and grains are written once", ename(d, e), (unsigned long long)g);
}

int vmdk_stream_write(struct vdisk *d, struct vmdk_extent *e, const struct iovec *iov,
                      int cnt, uint64_t ioff, uint64_t off, uint64_t len)
{
	struct vmdk_sparse *sp = e->sp;
	uint64_t gs = sp->grain_size, done = 0, esize = e->sectors * VMDK_SECTOR;
	uint8_t *buf = NULL;
	int r = 0;
	while (done < len && !r) {
		uint64_t pos = off + done, g = pos / gs, in = pos % gs;
		uint64_t n = VD_MIN(gs - in, len - done);
		uint32_t gte;
		if ((r = vmdk_gte_get(d, e, g, &gte)) < 0)
			break;
		if (gte) {
			r = written_once(d, e, g);
			break;
		}
		if (in == 0 && (n == gs || pos + n == esize)) {
			struct vmdk_pending *p = pend_take(sp, g, true);
			if (p) {
				free(p->buf);
				free(p);
			}
			if (!buf && !(buf = calloc(1, gs))) {
				r = vd_err(d, -ENOMEM, "out of memory");
				break;
			}
			vd_iov_to_buf(iov, cnt, ioff + done, buf, n);
			memset(buf + n, 0, gs - n);
			r = vmdk_stream_write_grain(d, e, g, buf);
		} else {
			/* a part of a grain: kept until the rest comes or the close */
			struct vmdk_pending *p = pend_take(sp, g, false);
			if (!p) {
				p = calloc(1, sizeof(*p));
				if (!p || !(p->buf = calloc(1, gs))) {
					free(p);
					r = vd_err(d, -ENOMEM, "out of memory");
					break;
				}
				p->g = g;
				pthread_mutex_lock(&sp->pend_lock);
				p->next = sp->pend;
				sp->pend = p;
				pthread_mutex_unlock(&sp->pend_lock);
			}
			vd_iov_to_buf(iov, cnt, ioff + done, p->buf + in, n);
			uint64_t end = VD_MIN(gs, esize - g * gs);
			if (pend_cover(p, in, in + n, end)) {
				/* complete: deflate and append it now */
				pend_take(sp, g, true);
				r = vmdk_stream_write_grain(d, e, g, p->buf);
				free(p->buf);
				free(p);
			}
		}
		done += n;
	}
	free(buf);
	return r;
}

int vmdk_stream_zero(struct vdisk *d, struct vmdk_extent *e, uint64_t off, uint64_t len)
{
	struct vmdk_sparse *sp = e->sp;
	uint64_t gs = sp->grain_size, done = 0, esize = e->sectors * VMDK_SECTOR;
	int r = 0;
	while (done < len && !r) {
		uint64_t pos = off + done, g = pos / gs, in = pos % gs;
		uint64_t n = VD_MIN(gs - in, len - done);
		uint32_t gte;
		if ((r = vmdk_gte_get(d, e, g, &gte)) < 0)
			break;
		bool whole = in == 0 && (n == gs || pos + n == esize);
		struct vmdk_pending *p = pend_take(sp, g, whole);
		if (whole) {
			if (p) {
				free(p->buf);
				free(p);
			}
			if (gte)
				r = vmdk_gte_set(d, e, g, 0); /* the written grain is dropped */
		} else if (p) {
			memset(p->buf + in, 0, n);
			pend_cover(p, in, in + n, VD_MIN(gs, esize - g * gs) + 1);
		} else if (gte) {
			r = written_once(d, e, g);
		}
		done += n;
	}
	return r;
}

bool vmdk_stream_read_pending(struct vmdk_extent *e, uint64_t g, uint64_t in,
                              const struct iovec *iov, int cnt, uint64_t ioff, uint64_t n)
{
	struct vmdk_pending *p = pend_take(e->sp, g, false);
	if (p)
		vd_iov_from_buf(iov, cnt, ioff, p->buf + in, n);
	return p != NULL;
}

int vmdk_stream_begin(struct vdisk *d, struct vmdk_extent *e)
{
	struct vmdk_sparse *sp = e->sp;
	(void)d;
	for (uint32_t t = 0; t < sp->gd_entries; t++) {
		free((void *)atomic_load(&sp->gt[t]));
		atomic_store(&sp->gt[t], NULL);
		atomic_store(&sp->gd[t], 0);
	}
	uint64_t start = sp->overhead_bytes;
	uint64_t min = VMDK_SECTOR * (1 + sp->h.desc_offset + sp->h.desc_sectors);
	if (start < min)
		start = VD_ALIGN_UP(min, VMDK_SECTOR);
	atomic_store(&sp->alloc_end, start);
	return 0;
}

static int put(struct vdisk *d, struct vmdk_extent *e, const void *b, size_t n, uint64_t pos)
{
	int r = vd_pwrite_full(e->fd, b, n, pos);
	return r < 0 ? vd_err(d, r, "vmdk extent '%s': writing the stream's metadata: %s",
	                      ename(d, e), strerror(-r)) : 0;
}

int vmdk_stream_finish(struct vdisk *d, struct vmdk_extent *e)
{
	struct vmdk_sparse *sp = e->sp;
	int r = 0;
	/* grains written in part: the rest reads as zeroes */
	for (struct vmdk_pending *p = sp->pend, *nx; p; p = nx) {
		nx = p->next;
		if (!r)
			r = vmdk_stream_write_grain(d, e, p->g, p->buf);
		free(p->buf);
		free(p);
	}
	sp->pend = NULL;
	if (r < 0)
		return r;
	uint64_t pos = atomic_load(&sp->alloc_end);
	size_t gdb = VD_ALIGN_UP((size_t)sp->gd_entries * 4, VMDK_SECTOR);
	size_t cap = VD_MAX(gdb, sp->gt_bytes) + VMDK_SECTOR;
	uint8_t *b = calloc(1, cap);
	if (!b)
		return vd_err(d, -ENOMEM, "out of memory");
	for (uint32_t t = 0; t < sp->gd_entries && !r; t++) {
		_Atomic uint32_t *g = atomic_load(&sp->gt[t]);
		bool any = false;
		memset(b, 0, cap);
		for (uint32_t i = 0; g && i < sp->h.gtes; i++) {
			uint32_t v = atomic_load(&g[i]);
			vd_put_le32(b + VMDK_SECTOR + i * 4, v);
			any |= v != 0;
		}
		if (!any) {
			atomic_store(&sp->gd[t], 0);
			continue;
		}
		put_marker(b, sp->gt_bytes / VMDK_SECTOR, 0, VMDK_MARKER_GT);
		r = put(d, e, b, VMDK_SECTOR + sp->gt_bytes, pos);
		atomic_store(&sp->gd[t], (uint32_t)(pos / VMDK_SECTOR + 1));
		pos += VMDK_SECTOR + sp->gt_bytes;
	}
	uint64_t gd_sector = pos / VMDK_SECTOR + 1;
	if (!r) {
		memset(b, 0, cap);
		put_marker(b, gdb / VMDK_SECTOR, 0, VMDK_MARKER_GD);
		for (uint32_t t = 0; t < sp->gd_entries; t++)
			vd_put_le32(b + VMDK_SECTOR + t * 4, atomic_load(&sp->gd[t]));
		r = put(d, e, b, VMDK_SECTOR + gdb, pos);
		pos += VMDK_SECTOR + gdb;
	}
	uint8_t tail[3 * VMDK_SECTOR];
	struct vmdk_header h = sp->h;
	h.flags &= ~VMDK_FLAG_RGD;
	h.rgd_offset = 0;
	if (!r) {
		put_marker(tail, 1, 0, VMDK_MARKER_FOOTER);
		h.gd_offset = gd_sector;
		vmdk_header_encode(&h, tail + VMDK_SECTOR);
		memset(tail + 2 * VMDK_SECTOR, 0, VMDK_SECTOR); /* end of stream */
		r = put(d, e, tail, sizeof(tail), pos);
		pos += sizeof(tail);
	}
	if (!r && ftruncate(e->fd, (off_t)pos) < 0)
		r = vd_err(d, -errno, "vmdk extent '%s': truncate: %s", ename(d, e), strerror(errno));
	if (!r) {
		/* the header at the start points readers at the footer */
		uint8_t h0[VMDK_SECTOR];
		struct vmdk_header cur;
		if ((r = vd_pread_full(e->fd, h0, sizeof(h0), 0)) < 0)
			r = vd_err(d, r, "vmdk extent '%s': reading the header: %s", ename(d, e),
			           strerror(-r));
		vmdk_header_decode(&cur, h0);
		if (!r && cur.gd_offset != VMDK_GD_AT_END) {
			h.gd_offset = VMDK_GD_AT_END;
			vmdk_header_encode(&h, h0);
			r = put(d, e, h0, sizeof(h0), 0);
		}
	}
	atomic_store(&sp->alloc_end, pos);
	free(b);
	return r;
}
