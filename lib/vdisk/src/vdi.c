/* SPDX-License-Identifier: MIT */
/*
 * VDI (VirtualBox Disk Image), normal (dynamic) and static, read/write.
 *
 * Layout (little-endian): a 64-byte text banner, then at 0x40 the signature
 * 0xbeda107f and version 1.1, then the version 1 header: its size, image
 * type (1 normal, 2 static), flags, a 256-byte comment, the block map and
 * data offsets, the legacy geometry, the disk size, the block size, the
 * per-block extra bytes, the block count, the allocated block count and
 * four UUIDs. The block map holds one 32-bit entry per guest block: the
 * index of its data slot, or 0xffffffff (never written) / 0xfffffffe
 * (zero, e.g. discarded). Slot i starts at data + i * (block + extra),
 * its data after the extra bytes.
 *
 * Other implementations allocate the next block at slot "allocated count",
 * so at rest the used slots are exactly 0..count-1. Discarding a whole
 * block frees its slot (hole punched, kept on a free list for the next
 * allocation); the next flush fills the remaining gaps by moving the last
 * slots down and truncates the file, so the image is dense again.
 *
 * Concurrency: the generic layer serialises writes per block (lock_align is
 * the block size); the map entries are read and written atomically; the
 * allocation mutex only guards the slot counter and the free list.
 */
#include "vdisk_int.h"
#include "vd_hole.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define VDI_SIGNATURE    0xbeda107fu
#define VDI_VERSION_1_1  0x00010001u
#define VDI_TYPE_NORMAL  1u
#define VDI_TYPE_STATIC  2u
#define VDI_FREE         0xffffffffu
#define VDI_ZERO         0xfffffffeu
#define VDI_HDR_OFF      0x48u
#define VDI_HDR_MIN      0x180u   /* version 1 header without the LCHS geometry */
#define VDI_MAX_BLOCKS   0x3fffffffu
#define VDI_DEF_BLOCK    (1u << 20)
#define VDI_BANNER       "<<< tern VM Virtual Disk Image >>>\n"

/* header field offsets (from the start of the file) */
enum {
	H_SIGNATURE = 0x40, H_VERSION = 0x44, H_SIZE = 0x48, H_TYPE = 0x4c,
	H_FLAGS = 0x50, H_COMMENT = 0x54, H_OFF_BMAP = 0x154, H_OFF_DATA = 0x158,
	H_CYLS = 0x15c, H_HEADS = 0x160, H_SECS = 0x164, H_SECSIZE = 0x168,
	H_DISK_SIZE = 0x170, H_BLOCK_SIZE = 0x178, H_BLOCK_EXTRA = 0x17c,
	H_BLOCKS = 0x180, H_ALLOCATED = 0x184, H_UUID_IMAGE = 0x188,
	H_UUID_SNAP = 0x198, H_UUID_LINK = 0x1a8, H_UUID_PARENT = 0x1b8,
};

struct vdi {
	uint32_t type, block_size, block_extra, nblocks;
	uint64_t off_bmap, off_data, slot_size;
	uint32_t *bmap;           /* host order; accessed atomically */
	pthread_mutex_t alloc;    /* slot counter, free list, header writes */
	uint32_t nslots;          /* slots in use or free: the high-water mark */
	uint32_t *freel;          /* free slots (below nslots) */
	uint32_t nfree, freecap;
	uint32_t clean_from;      /* slots from here on were beyond EOF at open */
	bool hdr_dirty;
	uint8_t hdr[512];
};

static inline struct vdi *V(struct vdisk *d) { return d->priv; }

static inline uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }
static inline void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void put_le64(uint8_t *p, uint64_t v) { put_le32(p, (uint32_t)v); put_le32(p + 4, (uint32_t)(v >> 32)); }

static inline uint32_t map_get(struct vdi *v, uint64_t blk)
{
	return __atomic_load_n(&v->bmap[blk], __ATOMIC_ACQUIRE);
}
static inline void map_set(struct vdi *v, uint64_t blk, uint32_t e)
{
	__atomic_store_n(&v->bmap[blk], e, __ATOMIC_RELEASE);
}
static inline bool slot_used(uint32_t e) { return e < VDI_ZERO; }

static uint64_t slot_data(struct vdi *v, uint32_t slot)
{
	return v->off_data + (uint64_t)slot * v->slot_size + v->block_extra;
}

/* ---- header ----------------------------------------------------------- */

/* Validate the header in h (512 bytes) against a file of fsize bytes. */
static int parse_header(struct vdisk *d, struct vdi *v, const uint8_t *h, uint64_t fsize)
{
	const char *p = d->path;
	if (le32(h + H_SIGNATURE) != VDI_SIGNATURE)
		return vd_err(d, -EINVAL, "'%s' is not a VDI image (signature 0x%08x)", p,
		              le32(h + H_SIGNATURE));
	if (le32(h + H_VERSION) != VDI_VERSION_1_1)
		return vd_err(d, -ENOTSUP, "'%s': unsupported VDI version 0x%08x (only 1.1)", p,
		              le32(h + H_VERSION));
	uint32_t hsize = le32(h + H_SIZE);
	if (hsize < VDI_HDR_MIN || hsize > 512 - VDI_HDR_OFF)
		return vd_err(d, -EINVAL, "'%s': VDI header size %u out of range (%u..%u)", p,
		              hsize, VDI_HDR_MIN, 512 - VDI_HDR_OFF);
	v->type = le32(h + H_TYPE);
	if (v->type != VDI_TYPE_NORMAL && v->type != VDI_TYPE_STATIC)
		return vd_err(d, -ENOTSUP, "'%s': unsupported VDI image type %u (only normal and static)",
		              p, v->type);
	v->block_size = le32(h + H_BLOCK_SIZE);
	if (v->block_size < 512 || v->block_size > (64u << 20) ||
	    (v->block_size & (v->block_size - 1)))
		return vd_err(d, -EINVAL, "'%s': VDI block size %u out of range "
		              "(a power of two, 512 bytes to 64 MiB)", p, v->block_size);
	v->block_extra = le32(h + H_BLOCK_EXTRA);
	if (v->block_extra % 512 || v->block_extra > v->block_size)
		return vd_err(d, -EINVAL, "'%s': VDI block extra size %u out of range "
		              "(a multiple of 512, at most the block size)", p, v->block_extra);
	v->nblocks = le32(h + H_BLOCKS);
	if (v->nblocks > VDI_MAX_BLOCKS)
		return vd_err(d, -EINVAL, "'%s': VDI block count %u out of range (at most %u)", p,
		              v->nblocks, VDI_MAX_BLOCKS);
	uint64_t size = le64(h + H_DISK_SIZE);
	if (size > (uint64_t)v->nblocks * v->block_size)
		return vd_err(d, -EINVAL, "'%s': VDI disk size %llu exceeds its %u blocks of %u bytes",
		              p, (unsigned long long)size, v->nblocks, v->block_size);
	uint32_t allocated = le32(h + H_ALLOCATED);
	if (allocated > v->nblocks)
		return vd_err(d, -EINVAL, "'%s': VDI allocated block count %u exceeds the block count %u",
		              p, allocated, v->nblocks);
	v->off_bmap = le32(h + H_OFF_BMAP);
	v->off_data = le32(h + H_OFF_DATA);
	uint64_t map_end = v->off_bmap + (uint64_t)v->nblocks * 4;
	if (v->off_bmap < VDI_HDR_OFF + hsize || v->off_bmap % 512)
		return vd_err(d, -EINVAL, "'%s': VDI block map offset %llu is misaligned or inside "
		              "the header", p, (unsigned long long)v->off_bmap);
	if (map_end > fsize)
		return vd_err(d, -EINVAL, "'%s': VDI block map [%llu, %llu) extends beyond the end "
		              "of the file (%llu bytes)", p, (unsigned long long)v->off_bmap,
		              (unsigned long long)map_end, (unsigned long long)fsize);
	if (v->off_data < map_end || v->off_data % 512)
		return vd_err(d, -EINVAL, "'%s': VDI data offset %llu is misaligned or overlaps "
		              "the block map", p, (unsigned long long)v->off_data);
	/* VirtualBox rounds odd sizes (from convertfromraw) up to a sector */
	d->size = VD_ALIGN_UP(size, 512);
	if (d->size > (uint64_t)v->nblocks * v->block_size)
		d->size = size;
	v->slot_size = (uint64_t)v->block_size + v->block_extra;
	return 0;
}

/* Validate the map: entries below the block count, no slot used twice. */
static int check_map(struct vdisk *d, struct vdi *v, uint32_t *used, bool strict)
{
	uint32_t *owner = calloc(v->nblocks ? v->nblocks : 1, sizeof(*owner));
	if (!owner)
		return vd_err(d, -ENOMEM, "out of memory for the VDI block map check");
	int r = 0;
	uint32_t n = 0, top = 0;
	for (uint32_t b = 0; b < v->nblocks; b++) {
		uint32_t e = v->bmap[b];
		if (!slot_used(e))
			continue;
		if (e >= v->nblocks) {
			r = vd_err(d, -EINVAL, "'%s': VDI block map entry %u points to data block %u, "
			           "beyond the %u blocks of the image", d->path, b, e, v->nblocks);
			break;
		}
		if (owner[e] && strict) {
			r = vd_err(d, -EINVAL, "'%s': VDI block map entries %u and %u both point to "
			           "data block %u", d->path, owner[e] - 1, b, e);
			break;
		}
		owner[e] = b + 1;
		n++;
		top = VD_MAX(top, e + 1);
	}
	free(owner);
	if (used)
		*used = top;
	(void)n;
	return r;
}

static void build_free_list(struct vdi *v)
{
	/* slots below the high-water mark that no entry references */
	uint8_t *ref = calloc(v->nslots ? v->nslots : 1, 1);
	if (!ref)
		return;
	for (uint32_t b = 0; b < v->nblocks; b++)
		if (slot_used(v->bmap[b]) && v->bmap[b] < v->nslots)
			ref[v->bmap[b]] = 1;
	for (uint32_t s = 0; s < v->nslots; s++) {
		if (ref[s])
			continue;
		if (v->nfree == v->freecap) {
			uint32_t nc = v->freecap ? v->freecap * 2 : 16;
			uint32_t *n = realloc(v->freel, nc * sizeof(*n));
			if (!n)
				break;
			v->freel = n;
			v->freecap = nc;
		}
		v->freel[v->nfree++] = s;
	}
	free(ref);
}

static int vdi_open(struct vdisk *d, const struct vdisk_open_opts *o)
{
	struct stat st;
	if (fstat(d->fd, &st) < 0)
		return vd_err(d, -errno, "stat '%s': %s", d->path, strerror(errno));
	uint64_t fsize = (uint64_t)st.st_size;
	if (fsize < 512)
		return vd_err(d, -EINVAL, "'%s': file too short (%llu bytes) for a VDI header",
		              d->path, (unsigned long long)fsize);
	struct vdi *v = calloc(1, sizeof(*v));
	if (!v)
		return vd_err(d, -ENOMEM, "out of memory");
	pthread_mutex_init(&v->alloc, NULL);
	int r = vd_pread_full(d->fd, v->hdr, 512, 0);
	if (r < 0) {
		vd_err(d, r, "read the VDI header of '%s': %s", d->path, strerror(-r));
		goto fail;
	}
	if ((r = parse_header(d, v, v->hdr, fsize)) < 0)
		goto fail;
	v->bmap = malloc((size_t)(v->nblocks ? v->nblocks : 1) * 4);
	if (!v->bmap) {
		r = vd_err(d, -ENOMEM, "out of memory for a VDI block map of %u entries", v->nblocks);
		goto fail;
	}
	if (v->nblocks && (r = vd_pread_full(d->fd, v->bmap, (size_t)v->nblocks * 4, v->off_bmap)) < 0) {
		vd_err(d, r, "read the VDI block map of '%s': %s", d->path, strerror(-r));
		goto fail;
	}
	for (uint32_t b = 0; b < v->nblocks; b++)
		v->bmap[b] = le32((const uint8_t *)&v->bmap[b]);
	uint32_t top = 0;
	if ((r = check_map(d, v, &top, !(o->flags & VDISK_OPEN_FORCE_CORRUPT))) < 0)
		goto fail;
	/* a stale (low) allocated count after a crash must not reuse live slots */
	v->nslots = VD_MAX(top, le32(v->hdr + H_ALLOCATED));
	uint64_t data_end = fsize > v->off_data ? fsize - v->off_data : 0;
	v->clean_from = (uint32_t)VD_MIN((uint64_t)VDI_MAX_BLOCKS + 1, VD_DIV_UP(data_end, v->slot_size));
	if (d->rw)
		build_free_list(v);
	d->lock_align = v->block_size;
	d->priv = v;
	return 0;
fail:
	free(v->bmap);
	pthread_mutex_destroy(&v->alloc);
	free(v);
	return r;
}

static int write_header(struct vdisk *d, struct vdi *v)
{
	put_le32(v->hdr + H_ALLOCATED, v->nslots - v->nfree);
	int r = vd_pwrite_full(d->fd, v->hdr, 512, 0);
	if (r < 0)
		return vd_err(d, r, "write the VDI header of '%s': %s", d->path, strerror(-r));
	v->hdr_dirty = false;
	return 0;
}

static int write_entry(struct vdisk *d, struct vdi *v, uint64_t blk, uint32_t e)
{
	uint8_t b[4];
	put_le32(b, e);
	int r = vd_pwrite_full(d->fd, b, 4, v->off_bmap + blk * 4);
	if (r < 0)
		return vd_err(d, r, "write VDI block map entry %llu of '%s': %s",
		              (unsigned long long)blk, d->path, strerror(-r));
	return 0;
}

/* ---- allocation and compaction ---------------------------------------- */

/* A slot whose data reads as zeroes. */
static int alloc_slot(struct vdisk *d, struct vdi *v, uint32_t *slot, bool *dirty)
{
	pthread_mutex_lock(&v->alloc);
	int r = 0;
	if (v->nfree) {
		*slot = v->freel[--v->nfree];
		*dirty = true; /* hole punched when freed, but be safe with old files */
		v->hdr_dirty = true;
	} else if (v->nslots >= v->nblocks) {
		r = vd_err(d, -ENOSPC, "'%s': no free VDI data block (all %u used)", d->path, v->nblocks);
	} else {
		*slot = v->nslots++;
		*dirty = *slot < v->clean_from;
		/* dense: keep the on-disk count exact, as other readers allocate from it */
		if (v->nfree == 0)
			r = write_header(d, v);
		else
			v->hdr_dirty = true;
	}
	pthread_mutex_unlock(&v->alloc);
	return r;
}

static void free_slot(struct vdi *v, uint32_t slot)
{
	pthread_mutex_lock(&v->alloc);
	if (v->nfree == v->freecap) {
		uint32_t nc = v->freecap ? v->freecap * 2 : 16;
		uint32_t *n = realloc(v->freel, nc * sizeof(*n));
		if (!n) {
			/* leaked until the next open rebuilds the list */
			pthread_mutex_unlock(&v->alloc);
			return;
		}
		v->freel = n;
		v->freecap = nc;
	}
	v->freel[v->nfree++] = slot;
	v->hdr_dirty = true;
	pthread_mutex_unlock(&v->alloc);
}

static int zero_host(struct vdisk *d, uint64_t off, uint64_t len)
{
	if (!len)
		return 0;
	if (fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
		return 0;
	static const uint8_t zero[65536];
	while (len) {
		size_t n = (size_t)VD_MIN(len, sizeof(zero));
		int r = vd_pwrite_full(d->fd, zero, n, off);
		if (r < 0)
			return vd_err(d, r, "zero VDI data in '%s': %s", d->path, strerror(-r));
		off += n;
		len -= n;
	}
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Move the highest slots into the free ones so slots 0..count-1 are used;
 * caller holds the whole disk exclusively. */
static int compact(struct vdisk *d, struct vdi *v)
{
	if (!v->nfree)
		return 0;
	uint32_t *owner = malloc((size_t)v->nslots * sizeof(*owner));
	uint8_t *buf = malloc(v->slot_size);
	int r = 0;
	if (!owner || !buf) {
		r = vd_err(d, -ENOMEM, "out of memory compacting '%s'", d->path);
		goto out;
	}
	memset(owner, 0xff, (size_t)v->nslots * sizeof(*owner));
	for (uint32_t b = 0; b < v->nblocks; b++)
		if (slot_used(v->bmap[b]) && v->bmap[b] < v->nslots)
			owner[v->bmap[b]] = b;
	qsort(v->freel, v->nfree, sizeof(*v->freel), cmp_u32);
	for (uint32_t fi = 0;; fi++) {
		while (v->nslots && owner[v->nslots - 1] == UINT32_MAX)
			v->nslots--; /* free slots at the top just go */
		if (fi >= v->nfree || v->freel[fi] >= v->nslots)
			break;
		uint32_t hole = v->freel[fi], last = v->nslots - 1, b = owner[last];
		uint64_t src = v->off_data + (uint64_t)last * v->slot_size;
		uint64_t dst = v->off_data + (uint64_t)hole * v->slot_size;
		if ((r = vd_pread_zero(d->fd, buf, v->slot_size, src)) < 0 ||
		    (r = vd_pwrite_full(d->fd, buf, v->slot_size, dst)) < 0) {
			vd_err(d, r, "move VDI block in '%s': %s", d->path, strerror(-r));
			goto out;
		}
		/* the copy is durable before the map points at it */
		if ((r = vd_fdatasync(d->fd)) < 0) {
			vd_err(d, r, "flush '%s': %s", d->path, strerror(-r));
			goto out;
		}
		if ((r = write_entry(d, v, b, hole)) < 0)
			goto out;
		map_set(v, b, hole);
		owner[hole] = b;
		owner[last] = UINT32_MAX;
	}
	v->nfree = 0;
	if (ftruncate(d->fd, (off_t)(v->off_data + (uint64_t)v->nslots * v->slot_size)) < 0)
		r = vd_err(d, -errno, "truncate '%s': %s", d->path, strerror(errno));
	v->clean_from = v->nslots;
	v->hdr_dirty = true;
out:
	free(owner);
	free(buf);
	return r;
}

/* ---- I/O -------------------------------------------------------------- */

/* Does the block k after one mapped to e continue its run (both unmapped,
 * or stored k slots further on)? */
static inline bool same_run(struct vdi *v, uint32_t e, uint32_t e2, uint32_t k)
{
	if (!slot_used(e))
		return !slot_used(e2);
	return slot_used(e2) && v->block_extra == 0 && e2 == e + k;
}

static int vdi_preadv(struct vdisk *d, const struct iovec *iov, int cnt,
                      uint64_t off, uint64_t len)
{
	struct vdi *v = V(d);
	uint64_t bs = v->block_size, done = 0;
	while (done < len) {
		uint64_t pos = off + done, blk = pos / bs, in = pos % bs;
		uint32_t e = map_get(v, blk);
		uint64_t n = VD_MIN(bs - in, len - done);
		/* extend over blocks stored contiguously (or all unallocated) */
		for (uint32_t k = 1; done + n < len; k++) {
			if (!same_run(v, e, map_get(v, blk + k), k))
				break;
			n += VD_MIN(bs, len - done - n);
		}
		if (!slot_used(e)) {
			vd_iov_memset(iov, cnt, done, 0, n);
		} else {
			struct vd_iov sub;
			int r = vd_iov_sub(&sub, iov, cnt, done, n);
			if (r == 0) {
				r = vd_preadv_zero(d->fd, sub.v, sub.cnt, slot_data(v, e) + in, n);
				vd_iov_free(&sub);
			}
			if (r < 0)
				return vd_err(d, r, "read '%s' at %llu: %s", d->path,
				              (unsigned long long)pos, strerror(-r));
		}
		done += n;
	}
	return 0;
}

static int write_at(struct vdisk *d, const struct iovec *iov, int cnt, uint64_t done,
                    uint64_t n, uint64_t host)
{
	struct vd_iov sub;
	int r = vd_iov_sub(&sub, iov, cnt, done, n);
	if (r == 0) {
		r = vd_pwritev_full(d->fd, sub.v, sub.cnt, host, n);
		vd_iov_free(&sub);
	}
	if (r < 0)
		return vd_err(d, r, "write '%s' at %llu: %s", d->path,
		              (unsigned long long)host, strerror(-r));
	return 0;
}

static int vdi_pwritev(struct vdisk *d, const struct iovec *iov, int cnt,
                       uint64_t off, uint64_t len)
{
	struct vdi *v = V(d);
	uint64_t bs = v->block_size, done = 0;
	int r;
	while (done < len) {
		uint64_t pos = off + done, blk = pos / bs, in = pos % bs;
		uint64_t n = VD_MIN(bs - in, len - done);
		uint32_t e = map_get(v, blk);
		if (slot_used(e)) {
			if ((r = write_at(d, iov, cnt, done, n, slot_data(v, e) + in)) < 0)
				return r;
			done += n;
			continue;
		}
		uint32_t slot = 0;
		bool dirty = false;
		if ((r = alloc_slot(d, v, &slot, &dirty)) < 0)
			return r;
		uint64_t host = slot_data(v, slot);
		if (dirty && n < bs && ((r = zero_host(d, host, in)) < 0 ||
		                        (r = zero_host(d, host + in + n, bs - in - n)) < 0)) {
			free_slot(v, slot);
			return r;
		}
		if (v->block_extra && (r = zero_host(d, host - v->block_extra, v->block_extra)) < 0) {
			free_slot(v, slot);
			return r;
		}
		if ((r = write_at(d, iov, cnt, done, n, host + in)) < 0 ||
		    (r = write_entry(d, v, blk, slot)) < 0) {
			free_slot(v, slot);
			return r;
		}
		map_set(v, blk, slot);
		done += n;
	}
	return 0;
}

/* Unmap the whole blocks of [off, off+len); with zero, also zero the partial
 * ones that are allocated. */
static int unmap_range(struct vdisk *d, uint64_t off, uint64_t len, bool zero)
{
	struct vdi *v = V(d);
	uint64_t bs = v->block_size, end = off + len;
	int r;
	if (v->type == VDI_TYPE_STATIC) {
		/* slots stay mapped; their data becomes zeroes */
		for (uint64_t pos = off; pos < end;) {
			uint64_t blk = pos / bs, in = pos % bs, n = VD_MIN(bs - in, end - pos);
			if ((r = zero_host(d, slot_data(v, map_get(v, blk)) + in, n)) < 0)
				return r;
			pos += n;
		}
		return 0;
	}
	for (uint64_t pos = off; pos < end;) {
		uint64_t blk = pos / bs, in = pos % bs, n = VD_MIN(bs - in, end - pos);
		uint32_t e = map_get(v, blk);
		bool whole = n == bs || (in == 0 && pos + n >= d->size);
		if (slot_used(e) && whole) {
			if ((r = write_entry(d, v, blk, VDI_ZERO)) < 0)
				return r;
			map_set(v, blk, VDI_ZERO);
			zero_host(d, slot_data(v, e) - v->block_extra, v->slot_size);
			free_slot(v, e);
		} else if (slot_used(e) && zero &&
		           (r = zero_host(d, slot_data(v, e) + in, n)) < 0) {
			return r;
		}
		pos += n;
	}
	return 0;
}

static int vdi_discard(struct vdisk *d, uint64_t off, uint64_t len)
{
	if (V(d)->type == VDI_TYPE_STATIC)
		return 0;
	return unmap_range(d, off, len, false);
}

static int vdi_write_zeroes(struct vdisk *d, uint64_t off, uint64_t len, unsigned flags)
{
	(void)flags; /* unallocated blocks read as zeroes: always unmap whole blocks */
	return unmap_range(d, off, len, true);
}

static int vdi_block_status(struct vdisk *d, uint64_t off, uint64_t len,
                            struct vdisk_extent *x)
{
	struct vdi *v = V(d);
	uint64_t bs = v->block_size, blk = off / bs, in = off % bs;
	uint32_t e = map_get(v, blk);
	uint64_t n = VD_MIN(bs - in, len);
	for (uint32_t k = 1; n < len; k++) {
		if (!same_run(v, e, map_get(v, blk + k), k))
			break;
		n += VD_MIN(bs, len - n);
	}
	x->offset = off;
	x->length = n;
	x->depth = 0;
	x->host_offset = 0;
	if (slot_used(e)) {
		bool hole;
		x->host_offset = slot_data(v, e) + in;
		x->length = vd_host_run(d->fd, x->host_offset, n, &hole);
		x->flags = VDISK_BS_DATA | VDISK_BS_ALLOCATED | VDISK_BS_OFFSET |
		           (hole ? VDISK_BS_ZERO : 0);
	} else {
		x->flags = VDISK_BS_ZERO;
	}
	return 0;
}

static int vdi_flush_locked(struct vdisk *d, struct vdi *v)
{
	int r = 0;
	pthread_mutex_lock(&v->alloc);
	if (v->nfree)
		r = compact(d, v);
	if (!r && v->hdr_dirty)
		r = write_header(d, v);
	pthread_mutex_unlock(&v->alloc);
	if (r)
		return r;
	if ((r = vd_fdatasync(d->fd)) < 0)
		return vd_err(d, r, "flush '%s': %s", d->path, strerror(-r));
	return 0;
}

static int vdi_flush(struct vdisk *d)
{
	struct vdi *v = V(d);
	pthread_mutex_lock(&v->alloc);
	bool holes = v->nfree > 0;
	pthread_mutex_unlock(&v->alloc);
	if (!holes)
		return vdi_flush_locked(d, v);
	/* moving blocks: no request may be in flight */
	struct rl_node n;
	rangelock_lock(&d->rl, &n, 0, UINT64_MAX, true);
	int r = vdi_flush_locked(d, v);
	rangelock_unlock(&d->rl, &n);
	return r;
}

static int vdi_close(struct vdisk *d)
{
	struct vdi *v = V(d);
	int r = d->rw ? vdi_flush_locked(d, v) : 0;
	free(v->bmap);
	free(v->freel);
	pthread_mutex_destroy(&v->alloc);
	free(v);
	return r;
}

static int vdi_info(struct vdisk *d, struct vdisk_info *info)
{
	info->cluster_size = V(d)->block_size;
	return 0;
}

/* ---- check ------------------------------------------------------------ */

static int vdi_check(struct vdisk *d, struct vdisk_check_result *res, unsigned fix)
{
	struct vdi *v = V(d);
	if (fix)
		return vd_err(d, -ENOTSUP, "VDI images cannot be repaired");
	uint32_t *owner = calloc(v->nblocks ? v->nblocks : 1, sizeof(*owner));
	if (!owner)
		return vd_err(d, -ENOMEM, "out of memory");
	uint32_t used = 0, top = 0;
	for (uint32_t b = 0; b < v->nblocks; b++) {
		uint32_t e = map_get(v, b);
		if (!slot_used(e))
			continue;
		if (e >= v->nblocks) {
			vd_check_report(res, "ERROR: block map entry %u points to data block %u (of %u)", b, e,
			       v->nblocks);
			res->corruptions++;
			continue;
		}
		if (owner[e]) {
			vd_check_report(res, "ERROR: block map entries %u and %u both use data block %u",
			       owner[e] - 1, b, e);
			res->corruptions++;
			continue;
		}
		owner[e] = b + 1;
		used++;
		top = VD_MAX(top, e + 1);
	}
	free(owner);
	uint32_t hdr_alloc = le32(v->hdr + H_ALLOCATED);
	if (!d->rw && used != hdr_alloc) {
		vd_check_report(res, "ERROR: allocated blocks mismatch: header says %u, block map uses %u",
		       hdr_alloc, used);
		res->corruptions++;
	}
	if (top > used) {
		vd_check_report(res, "ERROR: data blocks are not contiguous (%u used, highest is %u)", used, top);
		res->corruptions++;
	}
	res->total_clusters = v->nblocks;
	res->allocated_clusters = used;
	res->image_end_offset = v->off_data + (uint64_t)top * v->slot_size;
	return 0;
}

/* ---- create ----------------------------------------------------------- */

static void uuid_v4(uint8_t *u)
{
	if (getrandom(u, 16, 0) != 16) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		for (int i = 0; i < 16; i++)
			u[i] = (uint8_t)((uint64_t)ts.tv_nsec >> (i % 8 * 4) ^ (uint64_t)getpid() >> i);
	}
	u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
	u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
}

static int vdi_create(const char *path, const struct vdisk_create_opts *o,
                      struct vdisk_error *err)
{
	if (o->backing_file)
		return vd_seterr(err, -EINVAL, "VDI images have no backing file (differencing VDI "
		                 "is not supported)");
	if (o->prealloc != VDISK_PREALLOC_OFF && o->prealloc != VDISK_PREALLOC_METADATA)
		return vd_seterr(err, -EINVAL, "VDI supports preallocation=off or metadata "
		                 "(or static=on)");
	bool stat_img = o->vdi_static || o->prealloc == VDISK_PREALLOC_METADATA;
	uint64_t size = VD_ALIGN_UP(o->size, 512);
	uint32_t bs = VDI_DEF_BLOCK;
	uint64_t nblocks = VD_DIV_UP(size, bs);
	if (nblocks > VDI_MAX_BLOCKS)
		return vd_seterr(err, -EFBIG, "VDI images are limited to %llu bytes",
		                 (unsigned long long)VDI_MAX_BLOCKS * bs);
	uint64_t off_bmap = 512, off_data = VD_ALIGN_UP(off_bmap + nblocks * 4, 512);
	uint8_t h[512] = {0};
	memcpy(h, VDI_BANNER, sizeof(VDI_BANNER) - 1);
	put_le32(h + H_SIGNATURE, VDI_SIGNATURE);
	put_le32(h + H_VERSION, VDI_VERSION_1_1);
	put_le32(h + H_SIZE, VDI_HDR_MIN);
	put_le32(h + H_TYPE, stat_img ? VDI_TYPE_STATIC : VDI_TYPE_NORMAL);
	put_le32(h + H_OFF_BMAP, (uint32_t)off_bmap);
	put_le32(h + H_OFF_DATA, (uint32_t)off_data);
	put_le32(h + H_SECSIZE, 512);
	put_le64(h + H_DISK_SIZE, size);
	put_le32(h + H_BLOCK_SIZE, bs);
	put_le32(h + H_BLOCKS, (uint32_t)nblocks);
	put_le32(h + H_ALLOCATED, stat_img ? (uint32_t)nblocks : 0);
	uuid_v4(h + H_UUID_IMAGE);
	uuid_v4(h + H_UUID_SNAP);

	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return vd_seterr(err, -errno, "could not create '%s': %s", path, strerror(errno));
	int r = vd_pwrite_full(fd, h, 512, 0);
	uint8_t *map = malloc(65536);
	if (!map && !r)
		r = -ENOMEM;
	for (uint64_t b = 0; b < nblocks && !r;) {
		uint64_t n = VD_MIN(nblocks - b, 65536 / 4);
		for (uint64_t i = 0; i < n; i++)
			put_le32(map + i * 4, stat_img ? (uint32_t)(b + i) : VDI_FREE);
		r = vd_pwrite_full(fd, map, n * 4, off_bmap + b * 4);
		b += n;
	}
	free(map);
	uint64_t end = off_data + (stat_img ? nblocks * bs : 0);
	if (!r && ftruncate(fd, (off_t)end) < 0)
		r = -errno;
	if (!r && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r < 0)
		return vd_seterr(err, r, "create '%s': %s", path, strerror(-r));
	return 0;
}

const struct vdisk_ops vdisk_vdi_ops = {
	.name = "vdi",
	.open = vdi_open,
	.close = vdi_close,
	.create = vdi_create,
	.preadv = vdi_preadv,
	.pwritev = vdi_pwritev,
	.flush = vdi_flush,
	.discard = vdi_discard,
	.write_zeroes = vdi_write_zeroes,
	.block_status = vdi_block_status,
	.info = vdi_info,
	.check = vdi_check,
};
