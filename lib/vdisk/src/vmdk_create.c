/* SPDX-License-Identifier: MIT */
/* VMDK image creation: monolithicSparse, monolithicFlat,
 * twoGbMaxExtentSparse, twoGbMaxExtentFlat and streamOptimized, with the
 * descriptor options qemu-img offers (adapter type, hardware and tools
 * versions, zeroed-grain). */
#include "vmdk.h"

#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

#define GRAIN_SECTORS 128u          /* 64 KiB grains */
#define GTES          512u
#define SPLIT_SECTORS 4194304ull    /* 2 GiB per extent of the twoGb kinds */

static int put(int fd, const void *b, size_t n, uint64_t pos)
{
	return vd_pwrite_full(fd, b, n, pos);
}

int vmdk_write_sparse_extent(int fd, uint64_t capacity, const char *desc,
                             bool zeroed_grain, bool stream)
{
	uint64_t gde = VD_DIV_UP(capacity, (uint64_t)GRAIN_SECTORS * GTES);
	uint64_t gd_sectors = VD_DIV_UP(gde * 4, VMDK_SECTOR), gt_sectors = GTES * 4 / VMDK_SECTOR;
	uint64_t desc_sectors = desc ? VD_MAX(20, VD_DIV_UP(strlen(desc) + 1, VMDK_SECTOR)) : 0;
	struct vmdk_header h = {
		.magic = VMDK_MAGIC,
		.version = stream ? 3 : zeroed_grain ? 2 : 1,
		.flags = VMDK_FLAG_NL_TEST | (zeroed_grain ? VMDK_FLAG_ZERO_GRAIN : 0) |
		         (stream ? VMDK_FLAG_COMPRESSED | VMDK_FLAG_MARKERS : VMDK_FLAG_RGD),
		.capacity = capacity,
		.grain_sectors = GRAIN_SECTORS,
		.desc_offset = desc ? 1 : 0,
		.desc_sectors = desc_sectors,
		.gtes = GTES,
		.compress_algo = stream ? 1 : 0,
	};
	uint64_t next = 1 + desc_sectors, rgt = 0, gt = 0;
	if (stream) {
		h.gd_offset = VMDK_GD_AT_END;
	} else {
		h.rgd_offset = next;
		next += gd_sectors;
		rgt = next;
		next += gde * gt_sectors;
		h.gd_offset = next;
		next += gd_sectors;
		gt = next;
		next += gde * gt_sectors;
	}
	h.overhead = VD_ALIGN_UP(next, GRAIN_SECTORS);
	size_t gdb = (size_t)(gd_sectors * VMDK_SECTOR);
	uint8_t *b = calloc(1, VD_MAX(gdb, desc_sectors * VMDK_SECTOR) + 3 * VMDK_SECTOR);
	if (!b)
		return -ENOMEM;
	int r;
	vmdk_header_encode(&h, b);
	if ((r = put(fd, b, VMDK_SECTOR, 0)) < 0)
		goto out;
	if (desc) {
		memset(b, 0, desc_sectors * VMDK_SECTOR);
		memcpy(b, desc, strlen(desc));
		if ((r = put(fd, b, desc_sectors * VMDK_SECTOR, VMDK_SECTOR)) < 0)
			goto out;
	}
	uint64_t end = h.overhead * VMDK_SECTOR;
	if (stream) {
		/* an empty directory after a marker, the footer, end-of-stream */
		uint8_t *m = b;
		memset(b, 0, gdb + 3 * VMDK_SECTOR);
		vd_put_le64(m, gd_sectors);
		vd_put_le32(m + 12, VMDK_MARKER_GD);
		if ((r = put(fd, b, VMDK_SECTOR + gdb, end)) < 0)
			goto out;
		end += VMDK_SECTOR + gdb;
		memset(b, 0, 3 * VMDK_SECTOR);
		vd_put_le64(b, 1);
		vd_put_le32(b + 12, VMDK_MARKER_FOOTER);
		h.gd_offset = h.overhead + 1;
		vmdk_header_encode(&h, b + VMDK_SECTOR);
		if ((r = put(fd, b, 3 * VMDK_SECTOR, end)) < 0)
			goto out;
		end += 3 * VMDK_SECTOR;
	} else {
		memset(b, 0, gdb);
		for (uint64_t i = 0; i < gde; i++)
			vd_put_le32(b + i * 4, (uint32_t)(rgt + i * gt_sectors));
		if ((r = put(fd, b, gdb, h.rgd_offset * VMDK_SECTOR)) < 0)
			goto out;
		for (uint64_t i = 0; i < gde; i++)
			vd_put_le32(b + i * 4, (uint32_t)(gt + i * gt_sectors));
		if ((r = put(fd, b, gdb, h.gd_offset * VMDK_SECTOR)) < 0)
			goto out;
	}
	if (ftruncate(fd, (off_t)end) < 0)
		r = -errno;
out:
	free(b);
	return r;
}

static int open_new(const char *dir, const char *name, struct vdisk_error *err, int *fd)
{
	char p[4096];
	if (snprintf(p, sizeof(p), "%s/%s", dir, name) >= (int)sizeof(p))
		return vd_seterr(err, -ENAMETOOLONG, "path of extent '%s' too long", name);
	*fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (*fd < 0)
		return vd_seterr(err, -errno, "could not create '%s': %s", p, strerror(errno));
	return 0;
}

static int write_file(const char *path, const char *text, struct vdisk_error *err)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return vd_seterr(err, -errno, "could not create '%s': %s", path, strerror(errno));
	int r = vd_pwrite_full(fd, text, strlen(text), 0);
	if (r == 0)
		r = vd_fdatasync(fd);
	close(fd);
	return r < 0 ? vd_seterr(err, r, "writing '%s': %s", path, strerror(-r)) : 0;
}

static int check_opts(const struct vdisk_create_opts *o, const char **sub, const char **adapter,
                      const char **hw, struct vdisk_error *err)
{
	static const char *const subs[] = { "monolithicSparse", "monolithicFlat",
		"twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized" };
	static const char *const adapters[] = { "ide", "buslogic", "lsilogic", "legacyESX" };
	*sub = o->subformat ? o->subformat : "monolithicSparse";
	bool ok = false;
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
		ok |= !strcmp(*sub, subs[i]);
	if (!ok)
		return vd_seterr(err, -EINVAL, "unknown vmdk subformat '%s' (monolithicSparse, "
		                 "monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, "
		                 "streamOptimized)", *sub);
	*adapter = o->adapter_type ? o->adapter_type : "ide";
	ok = false;
	for (size_t i = 0; i < sizeof(adapters) / sizeof(adapters[0]); i++)
		ok |= !strcmp(*adapter, adapters[i]);
	if (!ok)
		return vd_seterr(err, -EINVAL, "unknown vmdk adapter type '%s' (ide, buslogic, "
		                 "lsilogic, legacyESX)", *adapter);
	if (o->compat6 && o->hwversion)
		return vd_seterr(err, -EINVAL, "compat6 and hwversion cannot both be given");
	*hw = o->compat6 ? "6" : o->hwversion ? o->hwversion : "4";
	for (const char *p = *hw; *p; p++)
		if (*p < '0' || *p > '9' || p - *hw > 3)
			return vd_seterr(err, -EINVAL, "vmdk hwversion '%s' is not a number", *hw);
	if (o->toolsversion)
		for (const char *p = o->toolsversion; *p; p++)
			if (*p < '0' || *p > '9' || p - o->toolsversion > 10)
				return vd_seterr(err, -EINVAL, "vmdk toolsversion '%s' is not a number",
				                 o->toolsversion);
	if (o->backing_file && (strstr(*sub, "Flat") || !strcmp(*sub, "streamOptimized")))
		return vd_seterr(err, -EINVAL, "a vmdk image with a parent (backing file) must be "
		                 "monolithicSparse or twoGbMaxExtentSparse");
	if (o->backing_format && strcmp(o->backing_format, "vmdk"))
		return vd_seterr(err, -EINVAL, "the parent of a vmdk image must be a vmdk image, "
		                 "not %s", o->backing_format);
	if (o->cluster_size && o->cluster_size != GRAIN_SECTORS * VMDK_SECTOR)
		return vd_seterr(err, -EINVAL, "vmdk grains are 64 KiB; cluster_size cannot be set");
	bool flat = strstr(*sub, "Flat");
	if (o->prealloc != VDISK_PREALLOC_OFF && !flat)
		return vd_seterr(err, -ENOTSUP, "preallocation is supported for the flat vmdk "
		                 "subformats only");
	if (o->zeroed_grain && flat)
		return vd_seterr(err, -EINVAL, "zeroed_grain needs a sparse subformat");
	return 0;
}

static int check_size(uint64_t size, bool flat, struct vdisk_error *err)
{
	if (!size)
		return vd_seterr(err, -EINVAL, "a vmdk image needs a size");
	if (!flat && VD_DIV_UP(size, VMDK_SECTOR) > VMDK_MAX_FILE_SECTORS)
		return vd_seterr(err, -EFBIG, "sparse vmdk images hold at most 2 TiB");
	if (VD_DIV_UP(size, VMDK_SECTOR) > VMDK_MAX_SECTORS)
		return vd_seterr(err, -EFBIG, "vmdk image size too large");
	return 0;
}

/* The parent's CID and size; its name is relative to the new image's folder. */
static int parent_info(const char *path, const char *name, uint32_t *cid, uint64_t *size,
                       struct vdisk_error *err)
{
	char *p;
	if (name[0] == '/') {
		p = strdup(name);
	} else {
		char *dup = strdup(path);
		p = NULL;
		if (dup) {
			const char *dir = dirname(dup);
			size_t n = strlen(dir) + strlen(name) + 2;
			if ((p = malloc(n)))
				snprintf(p, n, "%s/%s", dir, name);
			free(dup);
		}
	}
	if (!p)
		return vd_seterr(err, -ENOMEM, "out of memory");
	struct vdisk *b;
	struct vdisk_open_opts bo = { .format = "vmdk", .flags = VDISK_OPEN_NO_BACKING };
	int r = vdisk_open(&b, p, &bo, err);
	free(p);
	if (r < 0)
		return r;
	*cid = VM(b)->desc.cid;
	*size = vdisk_size(b);
	vdisk_close(b);
	return 0;
}

static int fill_flat(int fd, uint64_t bytes, enum vdisk_prealloc mode)
{
	if (ftruncate(fd, (off_t)bytes) < 0)
		return -errno;
	if (mode == VDISK_PREALLOC_FALLOC || mode == VDISK_PREALLOC_METADATA)
		return fallocate(fd, 0, 0, (off_t)bytes) < 0 ? -errno : 0;
	if (mode == VDISK_PREALLOC_FULL) {
		static const uint8_t zero[65536];
		for (uint64_t p = 0; p < bytes; p += sizeof(zero)) {
			int r = vd_pwrite_full(fd, zero, (size_t)VD_MIN(sizeof(zero), bytes - p), p);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

int vmdk_create(const char *path, const struct vdisk_create_opts *o, struct vdisk_error *err)
{
	const char *sub = NULL, *adapter = NULL, *hw = NULL;
	int r = check_opts(o, &sub, &adapter, &hw, err);
	if (r < 0)
		return r;
	bool flat = strstr(sub, "Flat"), split = !strncmp(sub, "twoGb", 5);
	uint32_t pcid = UINT32_MAX;
	uint64_t size = o->size, psize = 0;
	if (o->backing_file) {
		if ((r = parent_info(path, o->backing_file, &pcid, &psize, err)) < 0)
			return r;
		if (!size)
			size = psize;
	}
	if ((r = check_size(size, flat, err)) < 0)
		return r;
	uint64_t sectors = VD_DIV_UP(size, VMDK_SECTOR);
	bool stream = !strcmp(sub, "streamOptimized");
	bool mono_sparse = !flat && !split;
	uint32_t cid;
	if (getrandom(&cid, sizeof(cid), 0) != sizeof(cid))
		cid = (uint32_t)getpid() * 2654435761u;

	char *d1 = strdup(path), *d2 = strdup(path);
	if (!d1 || !d2) {
		free(d1);
		free(d2);
		return vd_seterr(err, -ENOMEM, "out of memory");
	}
	const char *dir = dirname(d1);
	char *base = basename(d2);
	size_t bl = strlen(base);
	if (bl > 5 && !strcmp(base + bl - 5, ".vmdk"))
		base[bl - 5] = 0;

	unsigned n = mono_sparse || !split ? 1 : (unsigned)VD_DIV_UP(sectors, SPLIT_SECTORS);
	struct vmdk_extent *ext = calloc(n, sizeof(*ext));
	int *fds = malloc(n * sizeof(int));
	char *desc = NULL;
	unsigned opened = 0;
	if (!ext || !fds) {
		r = vd_seterr(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (unsigned i = 0; i < n; i++) {
		char name[300];
		ext[i].type = flat ? VMDK_EXT_FLAT : VMDK_EXT_SPARSE;
		ext[i].sectors = split ? VD_MIN(SPLIT_SECTORS, sectors - i * SPLIT_SECTORS) : sectors;
		if (mono_sparse) {
			char *d3 = strdup(path);
			ext[i].file = d3 ? strdup(basename(d3)) : NULL;
			free(d3);
		} else if (split) {
			snprintf(name, sizeof(name), "%s-%c%03u.vmdk", base, flat ? 'f' : 's', i + 1);
			ext[i].file = strdup(name);
		} else {
			snprintf(name, sizeof(name), "%s-flat.vmdk", base);
			ext[i].file = strdup(name);
		}
		if (!ext[i].file) {
			r = vd_seterr(err, -ENOMEM, "out of memory");
			goto out;
		}
	}
	desc = vmdk_desc_format(cid, pcid, o->backing_file, sub, ext, n, sectors, adapter, hw,
	                        o->toolsversion ? o->toolsversion : "2147483647");
	if (!desc) {
		r = vd_seterr(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (mono_sparse) {
		int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0) {
			r = vd_seterr(err, -errno, "could not create '%s': %s", path, strerror(errno));
			goto out;
		}
		r = vmdk_write_sparse_extent(fd, sectors, desc, o->zeroed_grain, stream);
		if (r == 0)
			r = vd_fdatasync(fd);
		close(fd);
		if (r < 0)
			vd_seterr(err, r, "writing '%s': %s", path, strerror(-r));
		goto out;
	}
	for (unsigned i = 0; i < n; i++, opened++) {
		if ((r = open_new(dir, ext[i].file, err, &fds[i])) < 0)
			goto out;
		r = flat ? fill_flat(fds[i], ext[i].sectors * VMDK_SECTOR, o->prealloc)
		         : vmdk_write_sparse_extent(fds[i], ext[i].sectors, NULL, o->zeroed_grain, false);
		if (r == 0)
			r = vd_fdatasync(fds[i]);
		if (r < 0) {
			vd_seterr(err, r, "writing extent '%s': %s", ext[i].file, strerror(-r));
			opened++;
			goto out;
		}
	}
	r = write_file(path, desc, err);
out:
	for (unsigned i = 0; i < opened; i++)
		close(fds[i]);
	for (unsigned i = 0; ext && i < n; i++)
		free(ext[i].file);
	free(ext);
	free(fds);
	free(desc);
	free(d1);
	free(d2);
	return r;
}
