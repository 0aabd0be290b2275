/* SPDX-License-Identifier: MIT */
/*
 * VHD ("vpc"): fixed, dynamic and differencing disks, read/write.
 *
 * Concurrency: writes are serialised per block by the generic layer
 * (lock_align is the block size), BAT entries are read and written
 * atomically, and the allocation mutex only moves the end of the file.
 * A new block goes where the footer was; the footer is rewritten at the
 * new end at the next flush (until then the copy at offset 0 describes the
 * disk, as for any reader that finds no footer at the end).
 */
#include "vhd.h"
#include "vd_hole.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static inline uint32_t bat_get(struct vhd *v, uint64_t blk)
{
	return __atomic_load_n(&v->bat[blk], __ATOMIC_ACQUIRE);
}
static inline void bat_set(struct vhd *v, uint64_t blk, uint32_t e)
{
	__atomic_store_n(&v->bat[blk], e, __ATOMIC_RELEASE);
}
static inline uint64_t block_data(struct vhd *v, uint32_t e)
{
	return (uint64_t)e * 512 + v->bitmap_size;
}

/* ---- open ------------------------------------------------------------- */

static bool footer_ok(const uint8_t *f)
{
	return !memcmp(f, "conectix", 8) &&
	       vd_be32(f + VF_CHECKSUM) == vhd_checksum(f, VHD_FOOTER_SIZE, VF_CHECKSUM);
}

/* The footer at the end, or the copy at the start of a dynamic disk. */
static int read_footer(struct vdisk *d, struct vhd *v, uint64_t fsize, bool *at_end)
{
	uint8_t end[VHD_FOOTER_SIZE], head[VHD_FOOTER_SIZE];
	int r = vd_pread_full(d->fd, end, VHD_FOOTER_SIZE, fsize - VHD_FOOTER_SIZE);
	if (r == 0)
		r = vd_pread_full(d->fd, head, VHD_FOOTER_SIZE, 0);
	if (r < 0)
		return vd_err(d, r, "read the VHD footer of '%s': %s", d->path, strerror(-r));
	*at_end = footer_ok(end);
	if (*at_end) {
		memcpy(v->footer, end, VHD_FOOTER_SIZE);
		return 0;
	}
	if (footer_ok(head)) {
		memcpy(v->footer, head, VHD_FOOTER_SIZE);
		return 0;
	}
	const uint8_t *f = !memcmp(end, "conectix", 8) ? end : head;
	if (memcmp(f, "conectix", 8))
		return vd_err(d, -EINVAL, "'%s' is not a VHD image (no \"conectix\" footer at its "
		              "end or start)", d->path);
	return vd_err(d, -EINVAL, "'%s': VHD footer checksum mismatch (stored 0x%08x, "
	              "computed 0x%08x)", d->path, vd_be32(f + VF_CHECKSUM),
	              vhd_checksum(f, VHD_FOOTER_SIZE, VF_CHECKSUM));
}

static int open_dynamic(struct vdisk *d, struct vhd *v, uint64_t fsize, uint64_t footer_off)
{
	const char *p = d->path;
	uint64_t hoff = vd_be64(v->footer + VF_DATA_OFFSET);
	if (hoff % 512 || hoff > fsize || fsize - hoff < VHD_DYNHDR_SIZE)
		return vd_err(d, -EINVAL, "'%s': VHD dynamic header offset %llu lies outside the file",
		              p, (unsigned long long)hoff);
	uint8_t *h = v->dynhdr;
	int r = vd_pread_full(d->fd, h, VHD_DYNHDR_SIZE, hoff);
	if (r < 0)
		return vd_err(d, r, "read the VHD dynamic header of '%s': %s", p, strerror(-r));
	if (memcmp(h, "cxsparse", 8))
		return vd_err(d, -EINVAL, "'%s': no VHD dynamic header (\"cxsparse\") at %llu", p,
		              (unsigned long long)hoff);
	uint32_t cs = vhd_checksum(h, VHD_DYNHDR_SIZE, VH_CHECKSUM);
	if (vd_be32(h + VH_CHECKSUM) != cs)
		return vd_err(d, -EINVAL, "'%s': VHD dynamic header checksum mismatch (stored 0x%08x, "
		              "computed 0x%08x)", p, vd_be32(h + VH_CHECKSUM), cs);
	v->block_size = vd_be32(h + VH_BLOCK_SIZE);
	if (v->block_size < 512 || v->block_size > VHD_MAX_BLOCK ||
	    (v->block_size & (v->block_size - 1)))
		return vd_err(d, -EINVAL, "'%s': VHD block size %u out of range (a power of two, "
		              "512 bytes to 256 MiB)", p, v->block_size);
	v->bitmap_size = VD_ALIGN_UP(v->block_size / 512 / 8, 512);
	v->nentries = vd_be32(h + VH_MAX_ENTRIES);
	v->bat_off = vd_be64(h + VH_TABLE_OFFSET);
	if ((uint64_t)v->nentries * v->block_size < d->size)
		return vd_err(d, -EINVAL, "'%s': VHD block table of %u entries of %u bytes is too "
		              "small for the disk size %llu", p, v->nentries, v->block_size,
		              (unsigned long long)d->size);
	uint64_t bat_end = v->bat_off + (uint64_t)v->nentries * 4;
	if (v->bat_off % 512 || bat_end > fsize)
		return vd_err(d, -EINVAL, "'%s': VHD block table [%llu, %llu) is misaligned or extends "
		              "beyond the end of the file (%llu bytes)", p,
		              (unsigned long long)v->bat_off, (unsigned long long)bat_end,
		              (unsigned long long)fsize);
	v->bat = malloc((size_t)VD_MAX(v->nentries, 1) * 4);
	if (!v->bat)
		return vd_err(d, -ENOMEM, "out of memory for a VHD block table of %u entries", v->nentries);
	if (v->nentries && (r = vd_pread_full(d->fd, v->bat, (size_t)v->nentries * 4, v->bat_off)) < 0)
		return vd_err(d, r, "read the VHD block table of '%s': %s", p, strerror(-r));
	uint64_t meta_end = VD_ALIGN_UP(VD_MAX(bat_end, hoff + VHD_DYNHDR_SIZE), 512);
	uint64_t next = meta_end;
	uint64_t limit = footer_off;
	for (uint32_t i = 0; i < v->nentries; i++) {
		uint32_t e = vd_be32(&v->bat[i]);
		v->bat[i] = e;
		if (e == VHD_BAT_FREE)
			continue;
		uint64_t s = (uint64_t)e * 512, end = s + v->bitmap_size + v->block_size;
		if (s < meta_end && s + v->bitmap_size + v->block_size > v->bat_off && s < bat_end)
			return vd_err(d, -EINVAL, "'%s': VHD block table entry %u (sector %u) overlaps the "
			              "block table", p, i, e);
		if (s < hoff + VHD_DYNHDR_SIZE)
			return vd_err(d, -EINVAL, "'%s': VHD block table entry %u (sector %u) overlaps the "
			              "headers", p, i, e);
		if (end > limit)
			return vd_err(d, -EINVAL, "'%s': VHD block table entry %u: block [%llu, %llu) "
			              "extends beyond the end of the data (%llu)", p, i,
			              (unsigned long long)s, (unsigned long long)end,
			              (unsigned long long)limit);
		next = VD_MAX(next, end);
	}
	/* parent locators live between the table and the blocks */
	for (int i = 0; i < VHD_NLOCATORS; i++) {
		const uint8_t *l = h + VH_LOCATORS + i * VH_LOCATOR_SIZE;
		uint64_t lo = vd_be64(l + 16), ll = vd_be32(l + 8);
		if (vd_be32(l) && lo < fsize && ll <= fsize - lo)
			next = VD_MAX(next, VD_ALIGN_UP(lo + ll, 512));
	}
	v->next_free = VD_MAX(next, footer_off < fsize ? footer_off : 0);
	v->next_free = VD_ALIGN_UP(v->next_free, 512);
	v->file_end_at_open = fsize;
	d->lock_align = v->block_size;
	return 0;
}

static int vhd_open(struct vdisk *d, const struct vdisk_open_opts *o)
{
	struct stat st;
	if (fstat(d->fd, &st) < 0)
		return vd_err(d, -errno, "stat '%s': %s", d->path, strerror(errno));
	uint64_t fsize = (uint64_t)st.st_size;
	if (fsize < VHD_FOOTER_SIZE)
		return vd_err(d, -EINVAL, "'%s': file too short (%llu bytes) for a VHD footer",
		              d->path, (unsigned long long)fsize);
	struct vhd *v = calloc(1, sizeof(*v));
	if (!v)
		return vd_err(d, -ENOMEM, "out of memory");
	d->priv = v;
	pthread_mutex_init(&v->alloc, NULL);
	bool at_end;
	int r = read_footer(d, v, fsize, &at_end);
	if (r < 0)
		goto fail;
	v->type = vd_be32(v->footer + VF_TYPE);
	if (v->type != VHD_TYPE_FIXED && v->type != VHD_TYPE_DYNAMIC && v->type != VHD_TYPE_DIFF) {
		r = vd_err(d, -ENOTSUP, "'%s': unsupported VHD disk type %u (2 fixed, 3 dynamic, "
		           "4 differencing)", d->path, v->type);
		goto fail;
	}
	d->size = vhd_footer_size(v->footer, &v->size_from_chs);
	if (d->size / 512 > VHD_MAX_SECTORS) {
		r = vd_err(d, -EFBIG, "'%s': VHD disk size %llu exceeds the 2040 GiB maximum",
		           d->path, (unsigned long long)d->size);
		goto fail;
	}
	uint64_t footer_off = at_end ? fsize - VHD_FOOTER_SIZE : fsize;
	if (v->type == VHD_TYPE_FIXED) {
		if (!at_end) {
			r = vd_err(d, -EINVAL, "'%s': fixed VHD without a valid footer at its end", d->path);
			goto fail;
		}
		if (d->size > footer_off) {
			r = vd_err(d, -EINVAL, "'%s': fixed VHD of %llu bytes, but the file holds only "
			           "%llu bytes of data", d->path, (unsigned long long)d->size,
			           (unsigned long long)footer_off);
			goto fail;
		}
		return 0;
	}
	if ((r = open_dynamic(d, v, fsize, footer_off)) < 0)
		goto fail;
	if (!at_end)
		v->footer_dirty = true; /* rewritten at the end on the next flush */
	if (v->type == VHD_TYPE_DIFF && !(o->flags & VDISK_OPEN_NO_BACKING) &&
	    (r = vhd_open_parent(d, o)) < 0)
		goto fail;
	return 0;
fail:
	if (d->backing) {
		vdisk_close(d->backing);
		d->backing = NULL;
	}
	pthread_mutex_destroy(&v->alloc);
	free(v->bat);
	free(v);
	d->priv = NULL;
	return r;
}

/* ---- reads ------------------------------------------------------------ */

static int read_parent(struct vdisk *d, const struct iovec *iov, int cnt, uint64_t done,
                       uint64_t n, uint64_t pos)
{
	uint64_t have = 0;
	if (d->backing && pos < d->backing->size)
		have = VD_MIN(n, d->backing->size - pos);
	if (have) {
		struct vd_iov sub;
		int r = vd_iov_sub(&sub, iov, cnt, done, have);
		if (r == 0) {
			r = vdisk_preadv(d->backing, sub.v, sub.cnt, pos);
			vd_iov_free(&sub);
		}
		if (r < 0) {
			char m[VDISK_ERRMSG_MAX];
			return vd_err(d, r, "parent of '%s': %s", d->path,
			              vdisk_errmsg(d->backing, m, sizeof(m)));
		}
	}
	if (have < n)
		vd_iov_memset(iov, cnt, done + have, 0, n - have);
	return 0;
}

static int read_host(struct vdisk *d, const struct iovec *iov, int cnt, uint64_t done,
                     uint64_t n, uint64_t host)
{
	struct vd_iov sub;
	int r = vd_iov_sub(&sub, iov, cnt, done, n);
	if (r == 0) {
		r = vd_preadv_zero(d->fd, sub.v, sub.cnt, host, n);
		vd_iov_free(&sub);
	}
	if (r < 0)
		return vd_err(d, r, "read '%s' at %llu: %s", d->path, (unsigned long long)host,
		              strerror(-r));
	return 0;
}

static inline bool bit(const uint8_t *bm, uint64_t s) { return bm[s / 8] & (0x80 >> (s % 8)); }

/* Read the bitmap bytes covering sectors [s0, s1) of the block at e into bm
 * (indexed from sector s0 & ~7). */
static int read_bitmap(struct vdisk *d, struct vhd *v, uint32_t e, uint64_t s0, uint64_t s1,
                       uint8_t *bm)
{
	uint64_t b0 = s0 / 8, b1 = VD_DIV_UP(s1, 8);
	if (b1 > v->bitmap_size)
		return vd_err(d, -EINVAL, "VHD sector bitmap access beyond its end");
	int r = vd_pread_zero(d->fd, bm, b1 - b0, (uint64_t)e * 512 + b0);
	if (r < 0)
		return vd_err(d, r, "read a VHD sector bitmap of '%s': %s", d->path, strerror(-r));
	return 0;
}

/* Differencing block: runs of sectors from this file or the parent. */
static int read_diff_block(struct vdisk *d, struct vhd *v, uint32_t e, const struct iovec *iov,
                           int cnt, uint64_t done, uint64_t n, uint64_t pos, uint64_t in)
{
	uint64_t s0 = in / 512, s1 = VD_DIV_UP(in + n, 512);
	uint8_t *bm = malloc(VD_DIV_UP(s1, 8) - s0 / 8 + 1);
	if (!bm)
		return vd_err(d, -ENOMEM, "out of memory");
	int r = read_bitmap(d, v, e, s0, s1, bm);
	uint64_t base = s0 / 8 * 8;
	for (uint64_t p = 0; p < n && r == 0;) {
		uint64_t s = (in + p) / 512;
		bool set = bit(bm, s - base);
		uint64_t q = (s + 1) * 512 - in; /* in + q is sector-aligned from here */
		while (q < n && bit(bm, (in + q) / 512 - base) == set)
			q += 512;
		q = VD_MIN(q, n);
		r = set ? read_host(d, iov, cnt, done + p, q - p, block_data(v, e) + in + p)
		        : read_parent(d, iov, cnt, done + p, q - p, pos + p);
		p = q;
	}
	free(bm);
	return r;
}

static inline bool contiguous(struct vhd *v, uint32_t e, uint32_t e2, uint32_t k)
{
	/* allocated blocks never are: a bitmap separates their data */
	(void)v;
	(void)k;
	return e == VHD_BAT_FREE && e2 == VHD_BAT_FREE;
}

static int vhd_preadv(struct vdisk *d, const struct iovec *iov, int cnt,
                      uint64_t off, uint64_t len)
{
	struct vhd *v = VHD(d);
	if (v->type == VHD_TYPE_FIXED)
		return read_host(d, iov, cnt, 0, len, off);
	uint64_t bs = v->block_size, done = 0;
	int r = 0;
	while (done < len && r == 0) {
		uint64_t pos = off + done, blk = pos / bs, in = pos % bs;
		uint32_t e = bat_get(v, blk);
		uint64_t n = VD_MIN(bs - in, len - done);
		if (e == VHD_BAT_FREE) {
			for (uint32_t k = 1; done + n < len && contiguous(v, e, bat_get(v, blk + k), k); k++)
				n += VD_MIN(bs, len - done - n);
			if (v->type == VHD_TYPE_DIFF)
				r = read_parent(d, iov, cnt, done, n, pos);
			else
				vd_iov_memset(iov, cnt, done, 0, n);
		} else if (v->type == VHD_TYPE_DIFF) {
			r = read_diff_block(d, v, e, iov, cnt, done, n, pos, in);
		} else {
			r = read_host(d, iov, cnt, done, n, block_data(v, e) + in);
		}
		done += n;
	}
	return r;
}

/* ---- writes ----------------------------------------------------------- */

static int write_host(struct vdisk *d, const struct iovec *iov, int cnt, uint64_t done,
                      uint64_t n, uint64_t host)
{
	struct vd_iov sub;
	int r = vd_iov_sub(&sub, iov, cnt, done, n);
	if (r == 0) {
		r = vd_pwritev_full(d->fd, sub.v, sub.cnt, host, n);
		vd_iov_free(&sub);
	}
	if (r < 0)
		return vd_err(d, r, "write '%s' at %llu: %s", d->path, (unsigned long long)host,
		              strerror(-r));
	if (!(d->open_flags & VDISK_OPEN_DIRECT))
		vd_wb_wrote(&VHD(d)->wb, d->fd, host, n);
	return 0;
}

static int write_bat(struct vdisk *d, struct vhd *v, uint64_t blk, uint32_t e)
{
	uint8_t b[4];
	vd_put_be32(b, e);
	int r = vd_pwrite_full(d->fd, b, 4, v->bat_off + blk * 4);
	if (r < 0)
		return vd_err(d, r, "write VHD block table entry %llu of '%s': %s",
		              (unsigned long long)blk, d->path, strerror(-r));
	return 0;
}

static int zero_host(struct vdisk *d, uint64_t host, uint64_t n)
{
	if (fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)host, (off_t)n) == 0)
		return 0;
	static const uint8_t zero[65536];
	for (uint64_t p = 0; p < n;) {
		size_t k = (size_t)VD_MIN(n - p, sizeof(zero));
		int r = vd_pwrite_full(d->fd, zero, k, host + p);
		if (r < 0)
			return vd_err(d, r, "write zeroes to '%s': %s", d->path, strerror(-r));
		p += k;
	}
	return 0;
}

/* A new block at the end of the file: its bitmap all set (dynamic) or all
 * clear (differencing); its data reads as zeroes (beyond the old end). */
static int alloc_block(struct vdisk *d, struct vhd *v, uint64_t blk, uint32_t *out)
{
	uint64_t span = v->bitmap_size + (uint64_t)v->block_size;
	pthread_mutex_lock(&v->alloc);
	uint64_t at = v->next_free;
	if (at / 512 + span / 512 >= VHD_BAT_FREE) {
		pthread_mutex_unlock(&v->alloc);
		return vd_err(d, -EFBIG, "'%s': VHD file would grow beyond 2 TiB", d->path);
	}
	v->next_free = at + span;
	v->footer_dirty = true;
	pthread_mutex_unlock(&v->alloc);
	uint8_t *bm = malloc(v->bitmap_size);
	if (!bm)
		return vd_err(d, -ENOMEM, "out of memory");
	memset(bm, v->type == VHD_TYPE_DIFF ? 0 : 0xff, v->bitmap_size);
	int r = 0;
	/* space that existed at open (an old footer, leftovers of an
	 * interrupted allocation) must read as zeroes */
	if (at < v->file_end_at_open)
		r = zero_host(d, at, VD_MIN(span, v->file_end_at_open - at));
	if (r == 0 && (r = vd_pwrite_full(d->fd, bm, v->bitmap_size, at)) < 0)
		vd_err(d, r, "write a VHD sector bitmap of '%s': %s", d->path, strerror(-r));
	free(bm);
	if (r < 0)
		return r;
	*out = (uint32_t)(at / 512);
	(void)blk;
	return 0;
}

/* Set the bitmap bits of sectors [s0, s1) of the block at e. */
static int set_bits(struct vdisk *d, struct vhd *v, uint32_t e, uint64_t s0, uint64_t s1)
{
	uint64_t b0 = s0 / 8, b1 = VD_DIV_UP(s1, 8);
	uint8_t *bm = malloc(b1 - b0);
	if (!bm)
		return vd_err(d, -ENOMEM, "out of memory");
	int r = read_bitmap(d, v, e, s0, s1, bm);
	for (uint64_t s = s0; s < s1 && r == 0; s++)
		bm[s / 8 - b0] |= (uint8_t)(0x80 >> (s % 8));
	if (r == 0 && (r = vd_pwrite_full(d->fd, bm, b1 - b0, (uint64_t)e * 512 + b0)) < 0)
		vd_err(d, r, "write a VHD sector bitmap of '%s': %s", d->path, strerror(-r));
	free(bm);
	return r;
}

/* Differencing: whole sectors only, read-modify-write for partial ones. */
static int write_diff(struct vdisk *d, struct vhd *v, uint32_t e, const struct iovec *iov,
                      int cnt, uint64_t done, uint64_t n, uint64_t pos, uint64_t in)
{
	uint64_t a0 = in / 512 * 512, a1 = VD_ALIGN_UP(in + n, 512);
	int r;
	if (a0 == in && a1 == in + n) {
		r = write_host(d, iov, cnt, done, n, block_data(v, e) + in);
	} else {
		uint8_t *buf = malloc(a1 - a0);
		if (!buf)
			return vd_err(d, -ENOMEM, "out of memory");
		struct iovec bv = { buf, a1 - a0 };
		uint64_t bpos = pos - (in - a0);
		/* head and tail sectors as they read now */
		r = read_diff_block(d, v, e, &bv, 1, 0, 512, bpos, a0);
		if (r == 0 && a1 - a0 > 512)
			r = read_diff_block(d, v, e, &bv, 1, a1 - a0 - 512, 512, bpos + a1 - a0 - 512,
			                    a1 - 512);
		if (r == 0) {
			vd_iov_to_buf(iov, cnt, done, buf + (in - a0), n);
			r = write_host(d, &bv, 1, 0, a1 - a0, block_data(v, e) + a0);
		}
		free(buf);
	}
	if (r == 0)
		r = set_bits(d, v, e, a0 / 512, a1 / 512);
	return r;
}

static int vhd_pwritev(struct vdisk *d, const struct iovec *iov, int cnt,
                       uint64_t off, uint64_t len)
{
	struct vhd *v = VHD(d);
	if (v->type == VHD_TYPE_FIXED)
		return write_host(d, iov, cnt, 0, len, off);
	uint64_t bs = v->block_size, done = 0;
	int r = 0;
	while (done < len && r == 0) {
		uint64_t pos = off + done, blk = pos / bs, in = pos % bs;
		uint64_t n = VD_MIN(bs - in, len - done);
		uint32_t e = bat_get(v, blk);
		bool fresh = e == VHD_BAT_FREE;
		if (fresh && (r = alloc_block(d, v, blk, &e)) < 0)
			break;
		if (v->type == VHD_TYPE_DIFF)
			r = write_diff(d, v, e, iov, cnt, done, n, pos, in);
		else
			r = write_host(d, iov, cnt, done, n, block_data(v, e) + in);
		/* the table points at the block only once its contents are written */
		if (r == 0 && fresh && (r = write_bat(d, v, blk, e)) == 0)
			bat_set(v, blk, e);
		done += n;
	}
	return r;
}

static int vhd_write_zeroes(struct vdisk *d, uint64_t off, uint64_t len, unsigned flags)
{
	(void)flags;
	struct vhd *v = VHD(d);
	if (v->type == VHD_TYPE_FIXED)
		return zero_host(d, off, len);
	uint64_t bs = v->block_size;
	for (uint64_t done = 0; done < len;) {
		uint64_t pos = off + done, blk = pos / bs, in = pos % bs;
		uint64_t n = VD_MIN(bs - in, len - done);
		uint32_t e = bat_get(v, blk);
		int r = 0;
		if (v->type == VHD_TYPE_DIFF && (e != VHD_BAT_FREE || d->backing)) {
			/* zeroes must hide the parent: write them */
			uint8_t *z = calloc(1, n);
			if (!z)
				return vd_err(d, -ENOMEM, "out of memory");
			struct iovec zv = { z, n };
			r = vhd_pwritev(d, &zv, 1, pos, n);
			free(z);
		} else if (e != VHD_BAT_FREE) {
			r = zero_host(d, block_data(v, e) + in, n);
		}
		if (r < 0)
			return r;
		done += n;
	}
	return 0;
}

static int vhd_discard(struct vdisk *d, uint64_t off, uint64_t len)
{
	struct vhd *v = VHD(d);
	/* blocks stay allocated (the format has no free list); fixed disks and
	 * the data of dynamic ones can drop their storage */
	if (v->type == VHD_TYPE_DIFF)
		return 0;
	return vhd_write_zeroes(d, off, len, VDISK_ZERO_MAY_UNMAP);
}

/* ---- block status ----------------------------------------------------- */

static int parent_status(struct vdisk *d, uint64_t off, uint64_t len, struct vdisk_extent *x)
{
	x->offset = off;
	x->length = len;
	x->host_offset = 0;
	if (!d->backing || off >= d->backing->size) {
		x->flags = VDISK_BS_ZERO;
		x->depth = d->backing ? 1 : 0;
		return 0;
	}
	struct vdisk_extent b;
	int r = vdisk_block_status(d->backing, off, VD_MIN(len, d->backing->size - off), &b);
	if (r < 0) {
		char m[VDISK_ERRMSG_MAX];
		return vd_err(d, r, "parent of '%s': %s", d->path, vdisk_errmsg(d->backing, m, sizeof(m)));
	}
	*x = b;
	x->depth = b.depth + 1;
	return 0;
}

static int vhd_block_status(struct vdisk *d, uint64_t off, uint64_t len,
                            struct vdisk_extent *x)
{
	struct vhd *v = VHD(d);
	x->offset = off;
	x->depth = 0;
	bool hole;
	if (v->type == VHD_TYPE_FIXED) {
		x->length = vd_host_run(d->fd, off, len, &hole);
		x->flags = VDISK_BS_DATA | VDISK_BS_ALLOCATED | VDISK_BS_OFFSET |
		           (hole ? VDISK_BS_ZERO : 0);
		x->host_offset = off;
		return 0;
	}
	uint64_t bs = v->block_size, blk = off / bs, in = off % bs;
	uint32_t e = bat_get(v, blk);
	uint64_t n = VD_MIN(bs - in, len);
	if (e == VHD_BAT_FREE || v->type != VHD_TYPE_DIFF)
		for (uint32_t k = 1; n < len && contiguous(v, e, bat_get(v, blk + k), k); k++)
			n += VD_MIN(bs, len - n);
	if (e == VHD_BAT_FREE) {
		if (v->type == VHD_TYPE_DIFF)
			return parent_status(d, off, n, x);
		x->length = n;
		x->flags = VDISK_BS_ZERO;
		x->host_offset = 0;
		return 0;
	}
	if (v->type == VHD_TYPE_DIFF) {
		/* the run of sectors sharing the first one's bit */
		uint64_t s0 = in / 512, s1 = VD_DIV_UP(in + n, 512);
		uint8_t *bm = malloc(VD_DIV_UP(s1, 8) - s0 / 8 + 1);
		if (!bm)
			return vd_err(d, -ENOMEM, "out of memory");
		int r = read_bitmap(d, v, e, s0, s1, bm);
		if (r < 0) {
			free(bm);
			return r;
		}
		uint64_t base = s0 / 8 * 8, s = s0 + 1;
		bool set = bit(bm, s0 - base);
		while (s < s1 && bit(bm, s - base) == set)
			s++;
		free(bm);
		n = VD_MIN(n, s * 512 - in);
		if (!set)
			return parent_status(d, off, n, x);
	}
	x->host_offset = block_data(v, e) + in;
	x->length = vd_host_run(d->fd, x->host_offset, n, &hole);
	x->flags = VDISK_BS_DATA | VDISK_BS_ALLOCATED | VDISK_BS_OFFSET |
	           (hole ? VDISK_BS_ZERO : 0);
	return 0;
}

/* ---- flush, close, info, check ----------------------------------------- */

static int vhd_flush(struct vdisk *d)
{
	struct vhd *v = VHD(d);
	int r = 0;
	if (v->type != VHD_TYPE_FIXED) {
		pthread_mutex_lock(&v->alloc);
		if (v->footer_dirty) {
			r = vd_pwrite_full(d->fd, v->footer, VHD_FOOTER_SIZE, v->next_free);
			if (r == 0 && ftruncate(d->fd, (off_t)(v->next_free + VHD_FOOTER_SIZE)) < 0)
				r = -errno;
			if (r == 0)
				v->footer_dirty = false;
		}
		pthread_mutex_unlock(&v->alloc);
		if (r < 0)
			return vd_err(d, r, "write the VHD footer of '%s': %s", d->path, strerror(-r));
	}
	if ((r = vd_fdatasync(d->fd)) < 0)
		return vd_err(d, r, "flush '%s': %s", d->path, strerror(-r));
	return 0;
}

static int vhd_close(struct vdisk *d)
{
	struct vhd *v = VHD(d);
	int r = d->rw ? vhd_flush(d) : 0;
	pthread_mutex_destroy(&v->alloc);
	free(v->bat);
	free(v);
	return r;
}

static int vhd_info(struct vdisk *d, struct vdisk_info *info)
{
	struct vhd *v = VHD(d);
	if (v->type != VHD_TYPE_FIXED)
		info->cluster_size = v->block_size;
	if (v->type == VHD_TYPE_DIFF) {
		if (v->parent_name[0])
			snprintf(info->backing_file, sizeof(info->backing_file), "%s", v->parent_name);
		snprintf(info->backing_format, sizeof(info->backing_format), "vpc");
		if (d->backing)
			snprintf(info->backing_resolved, sizeof(info->backing_resolved), "%s",
			         d->backing->path);
	}
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static int vhd_check(struct vdisk *d, struct vdisk_check_result *res, unsigned fix)
{
	struct vhd *v = VHD(d);
	if (fix)
		return vd_err(d, -ENOTSUP, "VHD images cannot be repaired");
	uint8_t head[VHD_FOOTER_SIZE];
	if (v->type == VHD_TYPE_FIXED) {
		res->image_end_offset = d->size + VHD_FOOTER_SIZE;
		return 0;
	}
	if (vd_pread_full(d->fd, head, VHD_FOOTER_SIZE, 0) == 0 &&
	    memcmp(head, v->footer, VHD_FOOTER_SIZE)) {
		vd_check_report(res, "ERROR: the footer copy at offset 0 differs from the footer");
		res->corruptions++;
	}
	uint32_t *s = malloc((size_t)VD_MAX(v->nentries, 1) * 4), n = 0;
	if (!s)
		return vd_err(d, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < v->nentries; i++)
		if (bat_get(v, i) != VHD_BAT_FREE)
			s[n++] = bat_get(v, i);
	qsort(s, n, 4, cmp_u32);
	uint64_t span = (v->bitmap_size + (uint64_t)v->block_size) / 512;
	for (uint32_t i = 1; i < n; i++)
		if ((uint64_t)s[i - 1] + span > s[i]) {
			vd_check_report(res, "ERROR: blocks at sectors %u and %u overlap", s[i - 1], s[i]);
			res->corruptions++;
		}
	free(s);
	res->total_clusters = v->nentries;
	res->allocated_clusters = n;
	res->image_end_offset = v->next_free + VHD_FOOTER_SIZE;
	return 0;
}

const struct vdisk_ops vdisk_vpc_ops = {
	.name = "vpc",
	.open = vhd_open,
	.close = vhd_close,
	.create = vhd_create,
	.preadv = vhd_preadv,
	.pwritev = vhd_pwritev,
	.flush = vhd_flush,
	.discard = vhd_discard,
	.write_zeroes = vhd_write_zeroes,
	.block_status = vhd_block_status,
	.info = vhd_info,
	.check = vhd_check,
};
