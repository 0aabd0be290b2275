/* SPDX-License-Identifier: MIT */
/* VMDK: opening (embedded or separate descriptor, extent files), the ops
 * table, and dispatch of requests over the extents. */
#include "vmdk.h"
#include "qcow2.h" /* qcow2_open_backing: names resolved and vetted alike */

#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

static void free_extents(struct vmdk *v)
{
	for (unsigned i = 0; i < v->desc.n_ext; i++) {
		struct vmdk_extent *e = &v->desc.ext[i];
		vmdk_sparse_close(e->sp);
		e->sp = NULL;
		if (e->own_fd && e->fd >= 0)
			close(e->fd);
		e->fd = -1;
	}
	vmdk_desc_free(&v->desc);
}

static void vmdk_free(struct vdisk *d)
{
	struct vmdk *v = VM(d);
	if (!v)
		return;
	free_extents(v);
	pthread_mutex_destroy(&v->wlock);
	free(v);
	d->priv = NULL;
}

static int read_text(struct vdisk *d, uint64_t off, uint64_t len, char **out)
{
	char *t = malloc(len + 1);
	if (!t)
		return vd_err(d, -ENOMEM, "out of memory");
	int r = vd_pread_full(d->fd, t, len, off);
	if (r < 0) {
		free(t);
		return vd_err(d, r, "vmdk '%s': cannot read the descriptor (%llu bytes at %llu)%s",
		              d->path, (unsigned long long)len, (unsigned long long)off,
		              r == -EIO ? ": file truncated" : "");
	}
	t[len] = 0;
	*out = t;
	return 0;
}

/* Where the CID's 8 hex digits are in text (at base in d->fd), or 0. */
static uint64_t find_cid(const char *t, size_t len, uint64_t base)
{
	for (size_t i = 0; i + 12 <= len; i++) {
		if ((i == 0 || t[i - 1] == '\n') && !memcmp(t + i, "CID=", 4)) {
			for (int k = 0; k < 8; k++)
				if (!isxdigit((unsigned char)t[i + 4 + k]))
					return 0;
			if (i + 12 < len && isxdigit((unsigned char)t[i + 12]))
				return 0;
			return base + i + 4;
		}
		if (!t[i])
			break;
	}
	return 0;
}

/* The first write of a session gives the image a new content ID. */
static void touch_cid(struct vdisk *d)
{
	struct vmdk *v = VM(d);
	if (!v->cid_pos || atomic_exchange(&v->cid_done, true))
		return;
	uint32_t cid;
	if (getrandom(&cid, sizeof(cid), 0) != sizeof(cid))
		cid = v->desc.cid * 2654435761u + 1;
	if (cid == v->desc.cid || cid == UINT32_MAX)
		cid ^= 0x5a5a5a5au;
	char hex[9];
	snprintf(hex, sizeof(hex), "%08x", cid);
	if (vd_pwrite_full(d->fd, hex, 8, v->cid_pos) == 0)
		v->desc.cid = cid;
}

static bool same_file(int a, int b)
{
	struct stat sa, sb;
	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

static int open_extent(struct vdisk *d, struct vmdk_extent *e)
{
	if (e->type == VMDK_EXT_ZERO)
		return 0;
	/* opened as the image is (access modes are enforced per extent), so
	 * extents sharing a file share its descriptor and lock */
	bool rw = d->rw;
	int r = vmdk_open_extent_file(d, d->path, e->file, rw, &e->fd);
	if (r < 0)
		return r;
	e->own_fd = true;
	int shared = same_file(e->fd, d->fd) ? d->fd : -1;
	for (struct vmdk_extent *p = VM(d)->desc.ext; shared < 0 && p < e; p++)
		if (p->fd >= 0 && same_file(e->fd, p->fd))
			shared = p->fd;
	if (shared >= 0) {
		close(e->fd);
		e->fd = shared;
		e->own_fd = false;
	} else if (!(d->open_flags & VDISK_OPEN_NO_LOCK) &&
	           flock(e->fd, (rw ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0) {
		return vd_err(d, -errno, "could not lock vmdk extent '%s': is it in use?", e->file);
	}
	if (e->type != VMDK_EXT_SPARSE)
		return 0;
	uint8_t h[VMDK_SECTOR];
	if ((r = vd_pread_full(e->fd, h, sizeof(h), 0)) < 0)
		return vd_err(d, r, "vmdk extent '%s': cannot read its header%s", e->file,
		              r == -EIO ? ": file too short" : "");
	if (vd_le32(h) != VMDK_MAGIC)
		return vd_err(d, -EINVAL, "vmdk extent '%s' is listed as SPARSE but has no sparse "
		              "header", e->file);
	return vmdk_sparse_open(d, e, h, rw && e->access == VMDK_RW);
}

static int open_sparse_file(struct vdisk *d, struct vmdk *v, const uint8_t *hdr)
{
	struct vmdk_header h;
	vmdk_header_decode(&h, hdr);
	int r;
	if (h.desc_offset && h.desc_sectors) {
		if (h.desc_sectors > VMDK_MAX_DESC_BYTES / VMDK_SECTOR || h.desc_offset > (1u << 20))
			return vd_err(d, -EINVAL, "vmdk '%s': embedded descriptor of %llu sectors at "
			              "sector %llu is out of range", d->path,
			              (unsigned long long)h.desc_sectors, (unsigned long long)h.desc_offset);
		char *t;
		if ((r = read_text(d, h.desc_offset * VMDK_SECTOR, h.desc_sectors * VMDK_SECTOR, &t)) < 0)
			return r;
		r = vmdk_desc_parse(d, t, h.desc_sectors * VMDK_SECTOR, &v->desc);
		v->cid_pos = find_cid(t, h.desc_sectors * VMDK_SECTOR, h.desc_offset * VMDK_SECTOR);
		free(t);
		if (r < 0)
			return r;
		/* the file itself is the one extent, whatever name it has now */
		vmdk_desc_free(&v->desc);
		v->embedded = true;
	} else {
		snprintf(v->desc.create_type, sizeof(v->desc.create_type), "monolithicSparse");
		v->desc.parent_cid = UINT32_MAX;
	}
	v->desc.ext = calloc(1, sizeof(*v->desc.ext));
	if (!v->desc.ext)
		return vd_err(d, -ENOMEM, "out of memory");
	v->desc.n_ext = 1;
	struct vmdk_extent *e = &v->desc.ext[0];
	e->type = VMDK_EXT_SPARSE;
	e->access = VMDK_RW;
	e->fd = d->fd;
	/* capacity checked by vmdk_sparse_open; the header in use may be the footer */
	e->sectors = 0;
	if ((r = vmdk_sparse_open(d, e, hdr, d->rw)) < 0)
		return r;
	e->sectors = e->sp->h.capacity;
	return 0;
}

static int vmdk_open(struct vdisk *d, const struct vdisk_open_opts *o)
{
	struct vmdk *v = calloc(1, sizeof(*v));
	if (!v)
		return vd_err(d, -ENOMEM, "out of memory");
	pthread_mutex_init(&v->wlock, NULL);
	d->priv = v;
	uint8_t hdr[VMDK_SECTOR];
	int r = vd_pread_zero(d->fd, hdr, sizeof(hdr), 0);
	struct stat st;
	if (r < 0 || fstat(d->fd, &st) < 0) {
		r = vd_err(d, r < 0 ? r : -errno, "vmdk '%s': cannot read: %s", d->path,
		           strerror(r < 0 ? -r : errno));
		goto fail;
	}
	uint32_t magic = vd_le32(hdr);
	if (magic == VMDK_MAGIC) {
		if ((r = open_sparse_file(d, v, hdr)) < 0)
			goto fail;
	} else if (magic == VMDK_COWD_MAGIC) {
		r = vd_err(d, -ENOTSUP, "vmdk '%s': ESX sparse (COWD) extents are not supported",
		           d->path);
		goto fail;
	} else {
		if ((uint64_t)st.st_size > VMDK_MAX_DESC_BYTES) {
			r = vd_err(d, -EINVAL, "'%s' is not a vmdk image: no sparse header, and too large "
			           "for a descriptor", d->path);
			goto fail;
		}
		char *t;
		if ((r = read_text(d, 0, (uint64_t)st.st_size, &t)) < 0)
			goto fail;
		r = vmdk_desc_parse(d, t, (size_t)st.st_size, &v->desc);
		v->cid_pos = find_cid(t, (size_t)st.st_size, 0);
		free(t);
		if (r < 0)
			goto fail;
		for (unsigned i = 0; i < v->desc.n_ext; i++)
			v->desc.ext[i].fd = -1;
		for (unsigned i = 0; i < v->desc.n_ext; i++)
			if ((r = open_extent(d, &v->desc.ext[i])) < 0)
				goto fail;
	}
	uint64_t total = 0, align = 1;
	for (unsigned i = 0; i < v->desc.n_ext; i++) {
		struct vmdk_extent *e = &v->desc.ext[i];
		e->start = total * VMDK_SECTOR;
		total += e->sectors;
		if (e->sp)
			align = VD_MAX(align, e->sp->grain_size);
	}
	for (unsigned i = 0; i < v->desc.n_ext; i++)
		if (v->desc.ext[i].sp && v->desc.ext[i].start % align)
			v->serialize = true;
	d->size = total * VMDK_SECTOR;
	d->lock_align = (uint32_t)align;
	/* a parent (VMware's delta links, qemu's -b) serves unallocated grains */
	if (v->desc.parent_cid != UINT32_MAX && !(o && (o->flags & VDISK_OPEN_NO_BACKING))) {
		const char *fmt = o && o->backing_format ? o->backing_format : "vmdk";
		if ((r = qcow2_open_backing(d, v->desc.parent_hint, fmt, o, &d->backing)) < 0)
			goto fail;
	}
	return 0;
fail:
	vmdk_free(d);
	return r;
}

static int vmdk_flush(struct vdisk *d)
{
	struct vmdk *v = VM(d);
	int r = 0;
	bool main_done = false;
	for (unsigned i = 0; i < v->desc.n_ext && !r; i++) {
		struct vmdk_extent *e = &v->desc.ext[i];
		if (e->sp && (r = vmdk_sparse_flush(d, e)) < 0)
			break;
		if (e->fd < 0 || !(d->rw && e->access == VMDK_RW))
			continue;
		if (!e->own_fd)
			main_done = true;
		if ((r = vd_fdatasync(e->fd)) < 0)
			r = vd_err(d, r, "flush '%s': %s", e->file ? e->file : d->path, strerror(-r));
	}
	if (!r && !main_done && (r = vd_fdatasync(d->fd)) < 0)
		r = vd_err(d, r, "flush '%s': %s", d->path, strerror(-r));
	return r;
}

static int vmdk_close(struct vdisk *d)
{
	struct vmdk *v = VM(d);
	int r = 0;
	if (d->rw) {
		for (unsigned i = 0; i < v->desc.n_ext; i++) {
			struct vmdk_extent *e = &v->desc.ext[i];
			if (e->sp && e->sp->stream_write) {
				int r2 = vmdk_stream_finish(d, e);
				r = r ? r : r2;
			}
		}
		int r2 = vmdk_flush(d);
		r = r ? r : r2;
	}
	vmdk_free(d);
	return r;
}

/* The extent holding guest offset off. */
static struct vmdk_extent *find(struct vmdk *v, uint64_t off)
{
	unsigned lo = 0, hi = v->desc.n_ext;
	while (hi - lo > 1) {
		unsigned mid = (lo + hi) / 2;
		if (v->desc.ext[mid].start <= off)
			lo = mid;
		else
			hi = mid;
	}
	return &v->desc.ext[lo];
}

static uint64_t ext_end(const struct vmdk_extent *e)
{
	return e->start + e->sectors * VMDK_SECTOR;
}

static const char *ename(const struct vdisk *d, const struct vmdk_extent *e)
{
	return e->file ? e->file : d->path;
}

static int vmdk_preadv(struct vdisk *d, const struct iovec *iov, int cnt, uint64_t off,
                       uint64_t len)
{
	struct vmdk *v = VM(d);
	uint64_t done = 0;
	int r = 0;
	while (done < len && !r) {
		uint64_t pos = off + done;
		struct vmdk_extent *e = find(v, pos);
		uint64_t in = pos - e->start, n = VD_MIN(ext_end(e) - pos, len - done);
		if (e->access == VMDK_NOACCESS) {
			r = vd_err(d, -EACCES, "vmdk extent '%s' is NOACCESS", ename(d, e));
		} else if (e->type == VMDK_EXT_ZERO) {
			vd_iov_memset(iov, cnt, done, 0, n);
		} else if (e->type == VMDK_EXT_SPARSE) {
			r = vmdk_sparse_read(d, e, iov, cnt, done, in, n);
		} else {
			struct vd_iov s;
			if ((r = vd_iov_sub(&s, iov, cnt, done, n)) < 0)
				break;
			uint64_t host = e->flat_offset * VMDK_SECTOR + in;
			r = vd_preadv_zero(e->fd, s.v, s.cnt, host, n);
			vd_iov_free(&s);
			if (r < 0)
				r = vd_err(d, r, "vmdk extent '%s': read at %llu: %s", ename(d, e),
				           (unsigned long long)host, strerror(-r));
		}
		done += n;
	}
	return r;
}

static int not_writable(struct vdisk *d, struct vmdk_extent *e)
{
	if (e->access != VMDK_RW)
		return vd_err(d, -EROFS, "vmdk extent '%s' is %s", ename(d, e),
		              e->access == VMDK_RDONLY ? "read-only (RDONLY)" : "NOACCESS");
	if (e->type == VMDK_EXT_ZERO)
		return vd_err(d, -EROFS, "a ZERO extent of vmdk '%s' cannot be written", d->path);
	return 0;
}

static int vmdk_pwritev(struct vdisk *d, const struct iovec *iov, int cnt, uint64_t off,
                        uint64_t len)
{
	struct vmdk *v = VM(d);
	uint64_t done = 0;
	int r = 0;
	if (v->serialize)
		pthread_mutex_lock(&v->wlock);
	while (done < len && !r) {
		uint64_t pos = off + done;
		struct vmdk_extent *e = find(v, pos);
		uint64_t in = pos - e->start, n = VD_MIN(ext_end(e) - pos, len - done);
		if ((r = not_writable(d, e)) < 0)
			break;
		if (e->type == VMDK_EXT_SPARSE) {
			r = vmdk_sparse_write(d, e, iov, cnt, done, in, n);
		} else {
			struct vd_iov s;
			if ((r = vd_iov_sub(&s, iov, cnt, done, n)) < 0)
				break;
			uint64_t host = e->flat_offset * VMDK_SECTOR + in;
			r = vd_pwritev_full(e->fd, s.v, s.cnt, host, n);
			vd_iov_free(&s);
			if (r < 0)
				r = vd_err(d, r, "vmdk extent '%s': write at %llu: %s", ename(d, e),
				           (unsigned long long)host, strerror(-r));
			else if (!(d->open_flags & VDISK_OPEN_DIRECT))
				vd_wb_wrote(&e->wb, e->fd, host, n);
		}
		done += n;
	}
	if (v->serialize)
		pthread_mutex_unlock(&v->wlock);
	if (r == 0)
		touch_cid(d);
	return r;
}

static int flat_zero(struct vdisk *d, struct vmdk_extent *e, uint64_t host, uint64_t n,
                     unsigned flags)
{
	int mode = (flags & VDISK_ZERO_MAY_UNMAP) ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
	                                           : FALLOC_FL_ZERO_RANGE;
	if (fallocate(e->fd, mode, (off_t)host, (off_t)n) == 0)
		return 0;
	static const uint8_t zero[65536];
	for (uint64_t p = 0; p < n; p += sizeof(zero)) {
		int r = vd_pwrite_full(e->fd, zero, (size_t)VD_MIN(sizeof(zero), n - p), host + p);
		if (r < 0)
			return vd_err(d, r, "vmdk extent '%s': write zeroes: %s", ename(d, e), strerror(-r));
	}
	return 0;
}

static int vmdk_write_zeroes(struct vdisk *d, uint64_t off, uint64_t len, unsigned flags)
{
	struct vmdk *v = VM(d);
	uint64_t done = 0;
	int r = 0;
	if (v->serialize)
		pthread_mutex_lock(&v->wlock);
	while (done < len && !r) {
		uint64_t pos = off + done;
		struct vmdk_extent *e = find(v, pos);
		uint64_t in = pos - e->start, n = VD_MIN(ext_end(e) - pos, len - done);
		if (e->type == VMDK_EXT_ZERO)
			;
		else if ((r = not_writable(d, e)) < 0)
			break;
		else if (e->type == VMDK_EXT_SPARSE)
			r = vmdk_sparse_zero(d, e, in, n);
		else
			r = flat_zero(d, e, e->flat_offset * VMDK_SECTOR + in, n, flags);
		done += n;
	}
	if (v->serialize)
		pthread_mutex_unlock(&v->wlock);
	if (r == 0)
		touch_cid(d);
	return r;
}

static int vmdk_pwrite_compressed(struct vdisk *d, const void *buf, size_t len, uint64_t off)
{
	struct vmdk *v = VM(d);
	struct vmdk_extent *e = find(v, off);
	if (!e->sp || !e->sp->stream_write)
		return vd_err(d, -ENOTSUP, "vmdk '%s': compressed writes need a streamOptimized image",
		              d->path);
	uint64_t gs = e->sp->grain_size, in = off - e->start;
	if (in % gs || (len != gs && off + len != ext_end(e)))
		return vd_err(d, -EINVAL, "vmdk: a compressed write must be one whole grain");
	uint32_t gte;
	int r = vmdk_gte_get(d, e, in / gs, &gte);
	if (r < 0)
		return r;
	if (gte)
		return vd_err(d, -ENOTSUP, "vmdk '%s' is stream-optimized: grain %llu was already "
		              "written", d->path, (unsigned long long)(in / gs));
	uint8_t *g = (uint8_t *)buf;
	if (len != gs) {
		if (!(g = calloc(1, gs)))
			return vd_err(d, -ENOMEM, "out of memory");
		memcpy(g, buf, len);
	}
	r = vmdk_stream_write_grain(d, e, in / gs, g);
	if (g != buf)
		free(g);
	if (r == 0)
		touch_cid(d);
	return r;
}

static int vmdk_block_status(struct vdisk *d, uint64_t off, uint64_t len,
                             struct vdisk_extent *x)
{
	struct vmdk *v = VM(d);
	struct vmdk_extent *e = find(v, off);
	uint64_t in = off - e->start, n = VD_MIN(ext_end(e) - off, len);
	x->offset = off;
	x->length = n;
	x->depth = 0;
	x->host_offset = 0;
	if (e->type == VMDK_EXT_ZERO) {
		x->flags = VDISK_BS_ZERO | VDISK_BS_ALLOCATED;
		return 0;
	}
	if (e->type == VMDK_EXT_SPARSE) {
		int r = vmdk_sparse_status(d, e, in, n, x);
		x->offset = off;
		return r;
	}
	uint64_t host = e->flat_offset * VMDK_SECTOR + in;
	x->flags = VDISK_BS_DATA | VDISK_BS_ALLOCATED | VDISK_BS_OFFSET;
	x->host_offset = host;
	off_t data = lseek(e->fd, (off_t)host, SEEK_DATA);
	if (data < 0 && errno == ENXIO) {
		x->flags = VDISK_BS_ZERO | VDISK_BS_ALLOCATED;
	} else if (data > (off_t)host) {
		x->length = VD_MIN(n, (uint64_t)data - host);
		x->flags = VDISK_BS_ZERO | VDISK_BS_ALLOCATED;
	} else if (data == (off_t)host) {
		off_t hole = lseek(e->fd, (off_t)host, SEEK_HOLE);
		if (hole > (off_t)host)
			x->length = VD_MIN(n, (uint64_t)hole - host);
	}
	return 0;
}

static int vmdk_info(struct vdisk *d, struct vdisk_info *in)
{
	struct vmdk *v = VM(d);
	snprintf(in->subformat, sizeof(in->subformat), "%s", v->desc.create_type);
	if (v->desc.parent_cid != UINT32_MAX) {
		snprintf(in->backing_file, sizeof(in->backing_file), "%s", v->desc.parent_hint);
		snprintf(in->backing_format, sizeof(in->backing_format), "vmdk");
		if (d->backing)
			snprintf(in->backing_resolved, sizeof(in->backing_resolved), "%s",
			         vdisk_path(d->backing));
	}
	for (unsigned i = 0; i < v->desc.n_ext; i++) {
		struct vmdk_extent *e = &v->desc.ext[i];
		struct stat st;
		if (e->own_fd && fstat(e->fd, &st) == 0)
			in->actual_size += (uint64_t)st.st_blocks * 512;
		if (e->sp && !in->cluster_size)
			in->cluster_size = (uint32_t)e->sp->grain_size;
		if (e->sp && e->sp->stream_write)
			in->write_compressed = true;
	}
	return 0;
}

static int vmdk_check(struct vdisk *d, struct vdisk_check_result *res, unsigned fix)
{
	struct vmdk *v = VM(d);
	if (fix)
		return vd_err(d, -ENOTSUP, "vmdk images cannot be repaired");
	int r = 0;
	for (unsigned i = 0; i < v->desc.n_ext && !r; i++)
		if (v->desc.ext[i].sp)
			r = vmdk_sparse_check(d, &v->desc.ext[i], res);
	return r;
}

const struct vdisk_ops vdisk_vmdk_ops = {
	.name = "vmdk",
	.open = vmdk_open,
	.close = vmdk_close,
	.create = vmdk_create,
	.preadv = vmdk_preadv,
	.pwritev = vmdk_pwritev,
	.flush = vmdk_flush,
	.write_zeroes = vmdk_write_zeroes,
	.pwrite_compressed = vmdk_pwrite_compressed,
	.block_status = vmdk_block_status,
	.info = vmdk_info,
	.check = vmdk_check,
};
