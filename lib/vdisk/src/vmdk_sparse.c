/* SPDX-License-Identifier: MIT */
/* VMDK hosted sparse extents: header, grain directory and tables, grain
 * allocation, read, write, zero, block status, write-back and check. */
#include "vmdk.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

void vmdk_header_decode(struct vmdk_header *h, const uint8_t *b)
{
	h->magic = vd_le32(b);
	h->version = vd_le32(b + 4);
	h->flags = vd_le32(b + 8);
	h->capacity = vd_le64(b + 12);
	h->grain_sectors = vd_le64(b + 20);
	h->desc_offset = vd_le64(b + 28);
	h->desc_sectors = vd_le64(b + 36);
	h->gtes = vd_le32(b + 44);
	h->rgd_offset = vd_le64(b + 48);
	h->gd_offset = vd_le64(b + 56);
	h->overhead = vd_le64(b + 64);
	h->unclean = b[72];
	h->compress_algo = (uint16_t)(b[77] | b[78] << 8);
}

void vmdk_header_encode(const struct vmdk_header *h, uint8_t *b)
{
	memset(b, 0, VMDK_SECTOR);
	vd_put_le32(b, h->magic);
	vd_put_le32(b + 4, h->version);
	vd_put_le32(b + 8, h->flags);
	vd_put_le64(b + 12, h->capacity);
	vd_put_le64(b + 20, h->grain_sectors);
	vd_put_le64(b + 28, h->desc_offset);
	vd_put_le64(b + 36, h->desc_sectors);
	vd_put_le32(b + 44, h->gtes);
	vd_put_le64(b + 48, h->rgd_offset);
	vd_put_le64(b + 56, h->gd_offset);
	vd_put_le64(b + 64, h->overhead);
	b[72] = h->unclean;
	b[73] = '\n';
	b[74] = ' ';
	b[75] = '\r';
	b[76] = '\n';
	b[77] = (uint8_t)h->compress_algo;
	b[78] = (uint8_t)(h->compress_algo >> 8);
}

static const char *ename(const struct vdisk *d, const struct vmdk_extent *e)
{
	return e->file ? e->file : d->path;
}

static int check_header(struct vdisk *d, struct vmdk_extent *e, const struct vmdk_header *h,
                        uint64_t fsize)
{
	const char *n = ename(d, e);
	if (h->magic != VMDK_MAGIC)
		return vd_err(d, -EINVAL, "vmdk extent '%s': bad magic %#x", n, h->magic);
	if (h->version < 1 || h->version > 3)
		return vd_err(d, -ENOTSUP, "vmdk extent '%s': version %u is not supported", n,
		              h->version);
	uint64_t g = h->grain_sectors;
	if (!g || g > VMDK_MAX_GRAIN_SECTORS || (g & (g - 1)))
		return vd_err(d, -EINVAL, "vmdk extent '%s': grain size of %llu sectors is invalid "
		              "(a power of two up to %u)", n, (unsigned long long)g,
		              VMDK_MAX_GRAIN_SECTORS);
	if (!h->gtes || h->gtes > VMDK_MAX_GTES)
		return vd_err(d, -EINVAL, "vmdk extent '%s': %u entries per grain table is out of "
		              "range (1..%u)", n, h->gtes, VMDK_MAX_GTES);
	if (!h->capacity || h->capacity > VMDK_MAX_SECTORS)
		return vd_err(d, -EINVAL, "vmdk extent '%s': capacity of %llu sectors is out of range",
		              n, (unsigned long long)h->capacity);
	if ((h->flags & VMDK_FLAG_COMPRESSED) && h->compress_algo != 1)
		return vd_err(d, -ENOTSUP, "vmdk extent '%s': compression algorithm %u is not "
		              "supported (1, deflate, is)", n, h->compress_algo);
	uint64_t cover = g * h->gtes;
	uint64_t gde = VD_DIV_UP(h->capacity, cover);
	if (gde > VMDK_MAX_GD_ENTRIES)
		return vd_err(d, -EFBIG, "vmdk extent '%s': grain directory of %llu entries is too "
		              "large", n, (unsigned long long)gde);
	uint64_t fs = VD_DIV_UP(fsize, VMDK_SECTOR);
	if (h->gd_offset == 0 || h->gd_offset >= fs)
		return vd_err(d, -EINVAL, "vmdk extent '%s': grain directory at sector %llu lies "
		              "outside the file (%llu sectors): truncated or corrupt", n,
		              (unsigned long long)h->gd_offset, (unsigned long long)fs);
	if (h->rgd_offset && (h->flags & VMDK_FLAG_RGD) && h->rgd_offset >= fs)
		return vd_err(d, -EINVAL, "vmdk extent '%s': redundant grain directory at sector "
		              "%llu lies outside the file (%llu sectors)", n,
		              (unsigned long long)h->rgd_offset, (unsigned long long)fs);
	if (e->sectors > h->capacity)
		return vd_err(d, -EINVAL, "vmdk extent '%s': the descriptor gives %llu sectors, more "
		              "than its capacity %llu", n, (unsigned long long)e->sectors,
		              (unsigned long long)h->capacity);
	return 0;
}

static int load_dir(struct vdisk *d, struct vmdk_extent *e, uint64_t sector,
                    _Atomic uint32_t **out, const char *what)
{
	struct vmdk_sparse *sp = e->sp;
	size_t n = (size_t)sp->gd_entries * 4;
	uint8_t *b = malloc(n);
	_Atomic uint32_t *v = calloc(sp->gd_entries, sizeof(*v));
	if (!b || !v) {
		free(b);
		free(v);
		return vd_err(d, -ENOMEM, "out of memory");
	}
	int r = vd_pread_full(e->fd, b, n, sector * VMDK_SECTOR);
	if (r < 0) {
		free(b);
		free(v);
		return vd_err(d, r, "vmdk extent '%s': cannot read the %s at sector %llu: %s",
		              ename(d, e), what, (unsigned long long)sector,
		              r == -EIO ? "file truncated" : strerror(-r));
	}
	for (uint32_t i = 0; i < sp->gd_entries; i++)
		atomic_init(&v[i], vd_le32(b + i * 4));
	free(b);
	*out = v;
	return 0;
}

int vmdk_sparse_open(struct vdisk *d, struct vmdk_extent *e, const uint8_t *hdr, bool rw)
{
	struct stat st;
	if (fstat(e->fd, &st) < 0)
		return vd_err(d, -errno, "stat '%s': %s", ename(d, e), strerror(errno));
	uint64_t fsize = (uint64_t)st.st_size;
	struct vmdk_sparse *sp = calloc(1, sizeof(*sp));
	if (!sp)
		return vd_err(d, -ENOMEM, "out of memory");
	e->sp = sp;
	pthread_mutex_init(&sp->gd_lock, NULL);
	pthread_mutex_init(&sp->pend_lock, NULL);
	for (int i = 0; i < VMDK_GT_STRIPES; i++)
		pthread_mutex_init(&sp->gt_lock[i], NULL);
	vmdk_header_decode(&sp->h, hdr);
	if (sp->h.gd_offset == VMDK_GD_AT_END) {
		/* stream-optimized: the footer, second-to-last sector, holds the
		 * real header; a footer marker precedes it */
		uint8_t f[2 * VMDK_SECTOR];
		if (fsize < 3 * VMDK_SECTOR || (fsize & (VMDK_SECTOR - 1)))
			return vd_err(d, -EINVAL, "vmdk extent '%s': grain directory at the end, but "
			              "the file (%llu bytes) has no footer", ename(d, e),
			              (unsigned long long)fsize);
		int r = vd_pread_full(e->fd, f, sizeof(f), fsize - 3 * VMDK_SECTOR);
		if (r < 0)
			return vd_err(d, r, "vmdk extent '%s': reading the footer: %s", ename(d, e),
			              strerror(-r));
		if (vd_le32(f + 8) != 0 || vd_le32(f + 12) != VMDK_MARKER_FOOTER ||
		    vd_le32(f + VMDK_SECTOR) != VMDK_MAGIC)
			return vd_err(d, -EINVAL, "vmdk extent '%s': grain directory at the end, but no "
			              "valid footer before the last sector", ename(d, e));
		vmdk_header_decode(&sp->h, f + VMDK_SECTOR);
		sp->header_pos = fsize - 2 * VMDK_SECTOR;
		if (sp->h.gd_offset == VMDK_GD_AT_END)
			return vd_err(d, -EINVAL, "vmdk extent '%s': the footer does not locate the "
			              "grain directory", ename(d, e));
	}
	int r = check_header(d, e, &sp->h, fsize);
	if (r < 0)
		return r;
	struct vmdk_header *h = &sp->h;
	sp->grain_size = h->grain_sectors * VMDK_SECTOR;
	sp->gd_entries = (uint32_t)VD_DIV_UP(h->capacity, h->grain_sectors * h->gtes);
	sp->gt_bytes = (uint32_t)VD_ALIGN_UP(h->gtes * 4u, VMDK_SECTOR);
	sp->compressed = h->flags & VMDK_FLAG_COMPRESSED;
	sp->markers = h->flags & VMDK_FLAG_MARKERS;
	sp->zeroed_grain = h->flags & VMDK_FLAG_ZERO_GRAIN;
	sp->overhead_bytes = h->overhead * VMDK_SECTOR;
	sp->writable = rw && e->access == VMDK_RW;
	sp->zlevel = 1;
	atomic_init(&sp->alloc_end, VD_ALIGN_UP(fsize, VMDK_SECTOR));
	if ((r = load_dir(d, e, h->gd_offset, &sp->gd, "grain directory")) < 0)
		return r;
	if (sp->writable && (h->flags & VMDK_FLAG_RGD) && h->rgd_offset &&
	    (r = load_dir(d, e, h->rgd_offset, &sp->rgd, "redundant grain directory")) < 0)
		return r;
	sp->gt = calloc(sp->gd_entries, sizeof(*sp->gt));
	sp->gt_dirty = calloc(sp->gd_entries, 1);
	if (!sp->gt || !sp->gt_dirty)
		return vd_err(d, -ENOMEM, "out of memory");
	if (sp->writable && sp->compressed) {
		for (uint32_t i = 0; i < sp->gd_entries; i++) {
			uint32_t t;
			if (!atomic_load(&sp->gd[i]))
				continue;
			for (uint32_t j = 0; j < h->gtes; j++) {
				if ((r = vmdk_gte_get(d, e, (uint64_t)i * h->gtes + j, &t)) < 0)
					return r;
				if (t)
					return vd_err(d, -ENOTSUP, "vmdk extent '%s' is stream-optimized and "
					              "holds data: such images are written once (open it "
					              "read-only, or convert it)", ename(d, e));
			}
		}
		sp->stream_write = true;
		if ((r = vmdk_stream_begin(d, e)) < 0)
			return r;
	}
	return 0;
}

void vmdk_sparse_close(struct vmdk_sparse *sp)
{
	if (!sp)
		return;
	if (sp->gt)
		for (uint32_t i = 0; i < sp->gd_entries; i++)
			free((void *)atomic_load(&sp->gt[i]));
	free((void *)sp->gt);
	free(sp->gt_dirty);
	free((void *)sp->gd);
	free((void *)sp->rgd);
	pthread_mutex_destroy(&sp->gd_lock);
	pthread_mutex_destroy(&sp->pend_lock);
	for (int i = 0; i < VMDK_GT_STRIPES; i++)
		pthread_mutex_destroy(&sp->gt_lock[i]);
	free(sp);
}

/* The in-memory grain table t, loaded on first use; *out NULL if the
 * directory has no table there. */
static int gt_load(struct vdisk *d, struct vmdk_extent *e, uint32_t t, _Atomic uint32_t **out)
{
	struct vmdk_sparse *sp = e->sp;
	_Atomic uint32_t *g = atomic_load_explicit(&sp->gt[t], memory_order_acquire);
	if (g) {
		*out = g;
		return 0;
	}
	uint32_t sec = atomic_load(&sp->gd[t]);
	if (!sec) {
		*out = NULL;
		return 0;
	}
	pthread_mutex_t *l = &sp->gt_lock[t % VMDK_GT_STRIPES];
	pthread_mutex_lock(l);
	int r = 0;
	g = atomic_load_explicit(&sp->gt[t], memory_order_acquire);
	if (!g) {
		uint8_t *b = malloc(sp->h.gtes * 4u);
		_Atomic uint32_t *ng = calloc(sp->h.gtes, sizeof(*ng));
		if (!b || !ng) {
			r = vd_err(d, -ENOMEM, "out of memory");
		} else if ((r = vd_pread_full(e->fd, b, sp->h.gtes * 4u,
		                              (uint64_t)sec * VMDK_SECTOR)) < 0) {
			r = vd_err(d, r, "vmdk extent '%s': cannot read grain table %u at sector %u: %s",
			           ename(d, e), t, sec, r == -EIO ? "beyond the end of the file "
			           "(truncated?)" : strerror(-r));
		} else {
			for (uint32_t i = 0; i < sp->h.gtes; i++)
				atomic_init(&ng[i], vd_le32(b + i * 4));
			atomic_store_explicit(&sp->gt[t], ng, memory_order_release);
			g = ng;
			ng = NULL;
		}
		free(b);
		free((void *)ng);
	}
	pthread_mutex_unlock(l);
	*out = g;
	return r;
}

int vmdk_gte_get(struct vdisk *d, struct vmdk_extent *e, uint64_t g, uint32_t *out)
{
	struct vmdk_sparse *sp = e->sp;
	uint64_t t = g / sp->h.gtes;
	if (t >= sp->gd_entries) {
		*out = 0;
		return 0;
	}
	_Atomic uint32_t *gt;
	int r = gt_load(d, e, (uint32_t)t, &gt);
	if (r < 0)
		return r;
	*out = gt ? atomic_load_explicit(&gt[g % sp->h.gtes], memory_order_acquire) : 0;
	return 0;
}

int vmdk_alloc(struct vdisk *d, struct vmdk_extent *e, uint64_t bytes, uint64_t *pos)
{
	struct vmdk_sparse *sp = e->sp;
	uint64_t p = atomic_fetch_add(&sp->alloc_end, VD_ALIGN_UP(bytes, VMDK_SECTOR));
	if ((p + bytes) / VMDK_SECTOR >= VMDK_MAX_FILE_SECTORS)
		return vd_err(d, -ENOSPC, "vmdk extent '%s' is full: grain offsets are 32-bit "
		              "sector numbers", ename(d, e));
	*pos = p;
	return 0;
}

/* A new, empty grain table for directory entry t (called with gd_lock). */
static int gt_create(struct vdisk *d, struct vmdk_extent *e, uint32_t t)
{
	struct vmdk_sparse *sp = e->sp;
	_Atomic uint32_t *g = calloc(sp->h.gtes, sizeof(*g));
	if (!g)
		return vd_err(d, -ENOMEM, "out of memory");
	if (sp->stream_write) {
		/* placed after the grains when the stream is finished */
		atomic_store_explicit(&sp->gt[t], g, memory_order_release);
		return 0;
	}
	uint64_t pos, rpos = 0;
	int r = vmdk_alloc(d, e, sp->gt_bytes, &pos);
	if (r == 0 && sp->rgd)
		r = vmdk_alloc(d, e, sp->gt_bytes, &rpos);
	if (r < 0) {
		free((void *)g);
		return r;
	}
	/* fresh space reads as zeroes; the table is written at flush */
	atomic_store_explicit(&sp->gt[t], g, memory_order_release);
	atomic_store(&sp->gd[t], (uint32_t)(pos / VMDK_SECTOR));
	if (sp->rgd)
		atomic_store(&sp->rgd[t], (uint32_t)(rpos / VMDK_SECTOR));
	atomic_store(&sp->gt_dirty[t], 1);
	atomic_store(&sp->gd_dirty, true);
	return 0;
}

int vmdk_gte_set(struct vdisk *d, struct vmdk_extent *e, uint64_t g, uint32_t v)
{
	struct vmdk_sparse *sp = e->sp;
	uint64_t t = g / sp->h.gtes;
	if (t >= sp->gd_entries)
		return vd_err(d, -EIO, "vmdk extent '%s': grain %llu beyond the directory",
		              ename(d, e), (unsigned long long)g);
	_Atomic uint32_t *gt;
	int r = gt_load(d, e, (uint32_t)t, &gt);
	if (r < 0)
		return r;
	if (!gt) {
		pthread_mutex_lock(&sp->gd_lock);
		if (!atomic_load(&sp->gt[t]))
			r = gt_create(d, e, (uint32_t)t);
		pthread_mutex_unlock(&sp->gd_lock);
		if (r < 0)
			return r;
		gt = atomic_load_explicit(&sp->gt[t], memory_order_acquire);
	}
	pthread_mutex_t *l = &sp->gt_lock[t % VMDK_GT_STRIPES];
	pthread_mutex_lock(l);
	atomic_store_explicit(&gt[g % sp->h.gtes], v, memory_order_release);
	atomic_store(&sp->gt_dirty[t], 1);
	pthread_mutex_unlock(l);
	return 0;
}

/* ---- data path ------------------------------------------------------- */

enum gkind { G_ZERO, G_ZEROED, G_DATA, G_COMP };

static enum gkind kind(const struct vmdk_sparse *sp, uint32_t gte)
{
	if (gte == 0)
		return G_ZERO;
	if (gte == 1 && sp->zeroed_grain)
		return G_ZEROED;
	return sp->compressed ? G_COMP : G_DATA;
}

/* Guest bytes [pos, pos + n) of the parent image into iov at ioff; zeroes
 * past its end. */
static int read_parent(struct vdisk *d, const struct iovec *iov, int cnt, uint64_t ioff,
                       uint64_t pos, uint64_t n)
{
	uint64_t m = pos < d->backing->size ? VD_MIN(n, d->backing->size - pos) : 0;
	if (m) {
		struct vd_iov v;
		int r = vd_iov_sub(&v, iov, cnt, ioff, m);
		if (r < 0)
			return r;
		r = vdisk_preadv(d->backing, v.v, v.cnt, pos);
		vd_iov_free(&v);
		if (r < 0) {
			char msg[VDISK_ERRMSG_MAX];
			return vd_err(d, r, "parent image: %s", vdisk_errmsg(d->backing, msg, sizeof(msg)));
		}
	}
	vd_iov_memset(iov, cnt, ioff + m, 0, n - m);
	return 0;
}

int vmdk_sparse_read(struct vdisk *d, struct vmdk_extent *e, const struct iovec *iov,
                     int cnt, uint64_t ioff, uint64_t off, uint64_t len)
{
	struct vmdk_sparse *sp = e->sp;
	uint64_t gs = sp->grain_size, done = 0;
	uint8_t *gbuf = NULL;
	int r = 0;
	while (done < len && !r) {
		uint64_t pos = off + done, g = pos / gs, in = pos % gs;
		uint32_t gte;
		if ((r = vmdk_gte_get(d, e, g, &gte)) < 0)
			break;
		enum gkind k = kind(sp, gte);
		uint64_t n = VD_MIN(gs - in, len - done);
		if (k == G_DATA) {
			uint64_t host = (uint64_t)gte * VMDK_SECTOR + in;
			/* merge grains that follow each other in the file */
			while (done + n < len && n < (32u << 20)) {
				uint32_t nx;
				if ((r = vmdk_gte_get(d, e, g + 1, &nx)) < 0)
					break;
				if (kind(sp, nx) != G_DATA || (uint64_t)nx * VMDK_SECTOR != host + n)
					break;
				g++;
				n += VD_MIN(gs, len - done - n);
			}
			if (r < 0)
				break;
			struct vd_iov v;
			if ((r = vd_iov_sub(&v, iov, cnt, ioff + done, n)) < 0)
				break;
			r = vd_preadv_zero(e->fd, v.v, v.cnt, host, n);
			vd_iov_free(&v);
			if (r < 0)
				r = vd_err(d, r, "vmdk extent '%s': read at %llu: %s", ename(d, e),
				           (unsigned long long)host, strerror(-r));
		} else if (k == G_COMP) {
			if (!gbuf && !(gbuf = malloc(gs + VMDK_COMP_CAP(gs)))) {
				r = vd_err(d, -ENOMEM, "out of memory");
				break;
			}
			if ((r = vmdk_read_compressed(d, e, g, gte, gbuf, gbuf + gs)) == 0)
				vd_iov_from_buf(iov, cnt, ioff + done, gbuf + in, n);
		} else if (sp->stream_write &&
		           vmdk_stream_read_pending(e, g, in, iov, cnt, ioff + done, n)) {
			/* served from a grain being written */
		} else if (k == G_ZERO && d->backing) {
			r = read_parent(d, iov, cnt, ioff + done, e->start + pos, n);
		} else {
			vd_iov_memset(iov, cnt, ioff + done, 0, n);
		}
		done += n;
	}
	free(gbuf);
	return r;
}

static int grain_writable(struct vdisk *d, struct vmdk_extent *e, uint64_t g, uint32_t gte)
{
	struct vmdk_sparse *sp = e->sp;
	uint64_t host = (uint64_t)gte * VMDK_SECTOR;
	if (host < VMDK_SECTOR || (sp->overhead_bytes && host < sp->overhead_bytes))
		return vd_err(d, -EIO, "vmdk extent '%s': grain %llu points into the metadata "
		              "(sector %u); writes refused", ename(d, e), (unsigned long long)g, gte);
	return 0;
}

int vmdk_sparse_write(struct vdisk *d, struct vmdk_extent *e, const struct iovec *iov,
                      int cnt, uint64_t ioff, uint64_t off, uint64_t len)
{
	struct vmdk_sparse *sp = e->sp;
	if (sp->stream_write)
		return vmdk_stream_write(d, e, iov, cnt, ioff, off, len);
	if (sp->compressed)
		return vd_err(d, -ENOTSUP, "vmdk extent '%s' has compressed grains and is read-only",
		              ename(d, e));
	uint64_t gs = sp->grain_size, done = 0;
	int r = 0;
	while (done < len && !r) {
		uint64_t pos = off + done, g = pos / gs, in = pos % gs;
		uint64_t n = VD_MIN(gs - in, len - done);
		uint32_t gte;
		if ((r = vmdk_gte_get(d, e, g, &gte)) < 0)
			break;
		uint64_t host;
		bool fresh = kind(sp, gte) != G_DATA;
		if (fresh) {
			/* a new grain at the end of the file: its unwritten parts
			 * are fresh space and read as zeroes */
			if ((r = vmdk_alloc(d, e, gs, &host)) < 0)
				break;
		} else {
			if ((r = grain_writable(d, e, g, gte)) < 0)
				break;
			host = (uint64_t)gte * VMDK_SECTOR;
		}
		if (fresh && kind(sp, gte) == G_ZERO && d->backing && n < gs) {
			/* copy-on-write: the rest of the grain comes from the parent */
			uint64_t esize = e->sectors * VMDK_SECTOR, cover = VD_MIN(gs, esize - g * gs);
			uint8_t *gb = malloc(cover);
			if (!gb) {
				r = vd_err(d, -ENOMEM, "out of memory");
				break;
			}
			struct iovec gv = { gb, cover };
			r = read_parent(d, &gv, 1, 0, e->start + g * gs, cover);
			if (r == 0) {
				vd_iov_to_buf(iov, cnt, ioff + done, gb + in, n);
				if ((r = vd_pwrite_full(e->fd, gb, cover, host)) < 0)
					r = vd_err(d, r, "vmdk extent '%s': write at %llu: %s", ename(d, e),
					           (unsigned long long)host, strerror(-r));
			}
			free(gb);
			if (r == 0)
				r = vmdk_gte_set(d, e, g, (uint32_t)(host / VMDK_SECTOR));
			done += n;
			continue;
		}
		struct vd_iov v;
		if ((r = vd_iov_sub(&v, iov, cnt, ioff + done, n)) < 0)
			break;
		r = vd_pwritev_full(e->fd, v.v, v.cnt, host + in, n);
		vd_iov_free(&v);
		if (r < 0) {
			r = vd_err(d, r, "vmdk extent '%s': write at %llu: %s", ename(d, e),
			           (unsigned long long)(host + in), strerror(-r));
			break;
		}
		if (!(d->open_flags & VDISK_OPEN_DIRECT))
			vd_wb_wrote(&e->wb, e->fd, host + in, n);
		if (fresh)
			r = vmdk_gte_set(d, e, g, (uint32_t)(host / VMDK_SECTOR));
		done += n;
	}
	return r;
}

int vmdk_sparse_zero(struct vdisk *d, struct vmdk_extent *e, uint64_t off, uint64_t len)
{
	struct vmdk_sparse *sp = e->sp;
	if (sp->stream_write)
		return vmdk_stream_zero(d, e, off, len);
	if (sp->compressed)
		return vd_err(d, -ENOTSUP, "vmdk extent '%s' has compressed grains and is read-only",
		              ename(d, e));
	static const uint8_t zero[65536];
	uint64_t gs = sp->grain_size, done = 0, esize = e->sectors * VMDK_SECTOR;
	int r = 0;
	while (done < len && !r) {
		uint64_t pos = off + done, g = pos / gs, in = pos % gs;
		uint64_t n = VD_MIN(gs - in, len - done);
		uint32_t gte;
		if ((r = vmdk_gte_get(d, e, g, &gte)) < 0)
			break;
		enum gkind k = kind(sp, gte);
		bool whole = in == 0 && (n == gs || pos + n == esize);
		if ((k == G_DATA || (k == G_ZERO && d->backing)) && whole && sp->zeroed_grain) {
			r = vmdk_gte_set(d, e, g, 1);
		} else if (k == G_ZERO && d->backing) {
			/* the parent's data must read as zeroes now: a zero grain */
			uint8_t *zb = calloc(1, n);
			if (!zb) {
				r = vd_err(d, -ENOMEM, "out of memory");
				break;
			}
			struct iovec zv = { zb, n };
			r = vmdk_sparse_write(d, e, &zv, 1, 0, pos, n);
			free(zb);
		} else if (k == G_DATA) {
			if ((r = grain_writable(d, e, g, gte)) < 0)
				break;
			uint64_t host = (uint64_t)gte * VMDK_SECTOR + in;
			for (uint64_t p = 0; p < n && !r; p += sizeof(zero))
				r = vd_pwrite_full(e->fd, zero, (size_t)VD_MIN(sizeof(zero), n - p), host + p);
			if (r < 0)
				r = vd_err(d, r, "vmdk extent '%s': write zeroes: %s", ename(d, e),
				           strerror(-r));
		}
		/* unallocated and zeroed grains already read as zeroes */
		done += n;
	}
	return r;
}

int vmdk_sparse_status(struct vdisk *d, struct vmdk_extent *e, uint64_t off,
                       uint64_t len, struct vdisk_extent *x)
{
	struct vmdk_sparse *sp = e->sp;
	uint64_t gs = sp->grain_size, done = 0, host0 = 0;
	enum gkind k0 = G_ZERO;
	int r = 0;
	while (done < len) {
		uint64_t pos = off + done, g = pos / gs, in = pos % gs;
		uint32_t gte;
		if ((r = vmdk_gte_get(d, e, g, &gte)) < 0)
			return r;
		enum gkind k = kind(sp, gte);
		uint64_t host = (uint64_t)gte * VMDK_SECTOR + in;
		if (k == G_ZEROED && !d->backing)
			k = G_ZERO; /* reported alike, like unallocated grains */
		if (done == 0) {
			k0 = k;
			host0 = host;
		} else if (k != k0 || (k == G_DATA && host != host0 + done)) {
			break;
		}
		done += VD_MIN(gs - in, len - done);
	}
	x->offset = off;
	x->length = done;
	x->depth = 0;
	x->host_offset = 0;
	switch (k0) {
	case G_DATA:
		x->flags = VDISK_BS_DATA | VDISK_BS_ALLOCATED | VDISK_BS_OFFSET;
		x->host_offset = host0;
		break;
	case G_COMP:
		x->flags = VDISK_BS_DATA | VDISK_BS_ALLOCATED | VDISK_BS_COMPRESSED;
		break;
	case G_ZEROED:
		x->flags = VDISK_BS_ZERO | VDISK_BS_ALLOCATED;
		break;
	case G_ZERO:
		x->flags = VDISK_BS_ZERO;
		if (!d->backing)
			break;
		x->depth = 1;
		uint64_t pos = e->start + off;
		if (pos < d->backing->size) {
			struct vdisk_extent b;
			r = vdisk_block_status(d->backing, pos, VD_MIN(done, d->backing->size - pos), &b);
			if (r < 0) {
				char msg[VDISK_ERRMSG_MAX];
				return vd_err(d, r, "parent image: %s",
				              vdisk_errmsg(d->backing, msg, sizeof(msg)));
			}
			*x = b;
			x->depth = b.depth + 1;
		}
		break;
	}
	return 0;
}

/* ---- write-back -------------------------------------------------------- */

static int write_dir(struct vdisk *d, struct vmdk_extent *e, _Atomic uint32_t *v,
                     uint64_t sector, const char *what)
{
	struct vmdk_sparse *sp = e->sp;
	size_t n = (size_t)sp->gd_entries * 4;
	uint8_t *b = malloc(n);
	if (!b)
		return vd_err(d, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < sp->gd_entries; i++)
		vd_put_le32(b + i * 4, atomic_load(&v[i]));
	int r = vd_pwrite_full(e->fd, b, n, sector * VMDK_SECTOR);
	free(b);
	return r < 0 ? vd_err(d, r, "vmdk extent '%s': writing the %s: %s", ename(d, e), what,
	                      strerror(-r)) : 0;
}

int vmdk_sparse_flush(struct vdisk *d, struct vmdk_extent *e)
{
	struct vmdk_sparse *sp = e->sp;
	if (!sp->writable || sp->stream_write)
		return 0;
	/* new grains reach the disk before the tables pointing at them, and
	 * grains whose tails were never written lie inside the file */
	bool any = atomic_load(&sp->gd_dirty);
	for (uint32_t t = 0; t < sp->gd_entries && !any; t++)
		any = atomic_load(&sp->gt_dirty[t]);
	if (!any)
		return 0;
	struct stat st;
	uint64_t end = atomic_load(&sp->alloc_end);
	if (fstat(e->fd, &st) == 0 && (uint64_t)st.st_size < end &&
	    ftruncate(e->fd, (off_t)end) < 0)
		return vd_err(d, -errno, "vmdk extent '%s': extend: %s", ename(d, e), strerror(errno));
	int r = vd_fdatasync(e->fd);
	if (r < 0)
		return vd_err(d, r, "vmdk extent '%s': sync: %s", ename(d, e), strerror(-r));
	size_t tb = sp->h.gtes * 4u;
	uint8_t *b = malloc(tb);
	if (!b)
		return vd_err(d, -ENOMEM, "out of memory");
	for (uint32_t t = 0; t < sp->gd_entries && !r; t++) {
		if (!atomic_exchange(&sp->gt_dirty[t], 0))
			continue;
		_Atomic uint32_t *g = atomic_load(&sp->gt[t]);
		pthread_mutex_t *l = &sp->gt_lock[t % VMDK_GT_STRIPES];
		pthread_mutex_lock(l);
		for (uint32_t i = 0; i < sp->h.gtes; i++)
			vd_put_le32(b + i * 4, atomic_load(&g[i]));
		pthread_mutex_unlock(l);
		r = vd_pwrite_full(e->fd, b, tb, (uint64_t)atomic_load(&sp->gd[t]) * VMDK_SECTOR);
		if (r == 0 && sp->rgd && atomic_load(&sp->rgd[t]))
			r = vd_pwrite_full(e->fd, b, tb, (uint64_t)atomic_load(&sp->rgd[t]) * VMDK_SECTOR);
		if (r < 0) {
			atomic_store(&sp->gt_dirty[t], 1);
			r = vd_err(d, r, "vmdk extent '%s': writing grain table %u: %s", ename(d, e), t,
			           strerror(-r));
		}
	}
	free(b);
	if (r == 0 && atomic_exchange(&sp->gd_dirty, false)) {
		pthread_mutex_lock(&sp->gd_lock);
		/* tables added meanwhile lie inside the file too */
		end = atomic_load(&sp->alloc_end);
		if (fstat(e->fd, &st) == 0 && (uint64_t)st.st_size < end &&
		    ftruncate(e->fd, (off_t)end) < 0)
			r = vd_err(d, -errno, "vmdk extent '%s': extend: %s", ename(d, e),
			           strerror(errno));
		if (r == 0)
			r = write_dir(d, e, sp->gd, sp->h.gd_offset, "grain directory");
		if (r == 0 && sp->rgd)
			r = write_dir(d, e, sp->rgd, sp->h.rgd_offset, "redundant grain directory");
		pthread_mutex_unlock(&sp->gd_lock);
		if (r < 0)
			atomic_store(&sp->gd_dirty, true);
	}
	return r;
}

/* ---- check --------------------------------------------------------------- */

int vmdk_sparse_check(struct vdisk *d, struct vmdk_extent *e, struct vdisk_check_result *res)
{
	struct vmdk_sparse *sp = e->sp;
	struct stat st;
	if (fstat(e->fd, &st) < 0)
		return vd_err(d, -errno, "stat: %s", strerror(errno));
	uint64_t fsize = VD_MAX((uint64_t)st.st_size, atomic_load(&sp->alloc_end));
	uint64_t ngrains = VD_DIV_UP(e->sectors, sp->h.grain_sectors);
	res->total_clusters += ngrains;
	uint64_t prev = 0;
	for (uint32_t t = 0; t < sp->gd_entries; t++) {
		uint32_t sec = atomic_load(&sp->gd[t]);
		if (!sec)
			continue;
		if ((uint64_t)sec * VMDK_SECTOR + sp->gt_bytes > fsize) {
			res->corruptions++;
			vd_check_report(res, "ERROR: %s: grain table %u at sector %u is beyond the end of the file",
			       ename(d, e), t, sec);
			continue;
		}
		_Atomic uint32_t *g;
		int r = gt_load(d, e, t, &g);
		if (r < 0) {
			res->check_errors++;
			vd_check_report(res, "ERROR: %s: %s", ename(d, e), d->errmsg);
			continue;
		}
		for (uint32_t i = 0; i < sp->h.gtes; i++) {
			uint64_t gi = (uint64_t)t * sp->h.gtes + i;
			uint32_t v = atomic_load(&g[i]);
			enum gkind k = kind(sp, v);
			if (k == G_ZERO || k == G_ZEROED)
				continue;
			if (gi >= ngrains) {
				res->corruptions++;
				vd_check_report(res, "ERROR: %s: grain %llu beyond the extent is allocated",
				       ename(d, e), (unsigned long long)gi);
				continue;
			}
			uint64_t host = (uint64_t)v * VMDK_SECTOR;
			if (host >= fsize || (k == G_DATA && host < sp->overhead_bytes)) {
				res->corruptions++;
				vd_check_report(res, "ERROR: %s: grain %llu at offset %#llx lies %s", ename(d, e),
				       (unsigned long long)gi, (unsigned long long)host,
				       host >= fsize ? "beyond the end of the file" : "inside the metadata");
				continue;
			}
			res->allocated_clusters++;
			if (k == G_COMP)
				res->compressed_clusters++;
			if (k == G_DATA && prev && host != prev + sp->grain_size)
				res->fragmented_clusters++;
			if (k == G_DATA)
				prev = host;
		}
	}
	res->image_end_offset = VD_MAX(res->image_end_offset, fsize);
	return 0;
}
