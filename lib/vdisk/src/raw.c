/* SPDX-License-Identifier: MIT */
/* raw: regular files and block devices. */
#include "vdisk_int.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

struct raw_state {
	bool blockdev;
	bool direct;            /* O_DIRECT: no page cache to write behind */
	struct vd_wb wb;
};

static int raw_open(struct vdisk *d, const struct vdisk_open_opts *o)
{
	(void)o;
	struct stat st;
	if (fstat(d->fd, &st) < 0)
		return vd_err(d, -errno, "stat '%s': %s", d->path, strerror(errno));
	struct raw_state *s = calloc(1, sizeof(*s));
	if (!s)
		return vd_err(d, -ENOMEM, "out of memory");
	if (S_ISBLK(st.st_mode)) {
		uint64_t sz;
		if (ioctl(d->fd, BLKGETSIZE64, &sz) < 0) {
			free(s);
			return vd_err(d, -errno, "BLKGETSIZE64 on '%s': %s", d->path, strerror(errno));
		}
		d->size = sz;
		s->blockdev = true;
	} else if (S_ISREG(st.st_mode)) {
		d->size = (uint64_t)st.st_size;
	} else {
		free(s);
		return vd_err(d, -EINVAL, "'%s' is neither a regular file nor a block device", d->path);
	}
	s->direct = d->open_flags & VDISK_OPEN_DIRECT;
	d->priv = s;
	return 0;
}

static int raw_close(struct vdisk *d)
{
	int r = d->rw ? vd_fdatasync(d->fd) : 0;
	free(d->priv);
	return r;
}

static int raw_preadv(struct vdisk *d, const struct iovec *iov, int cnt,
                      uint64_t off, uint64_t len)
{
	int r = vd_preadv_zero(d->fd, iov, cnt, off, len);
	return r < 0 ? vd_err(d, r, "read '%s' at %llu: %s", d->path,
	                      (unsigned long long)off, strerror(-r)) : 0;
}

static int raw_pwritev(struct vdisk *d, const struct iovec *iov, int cnt,
                       uint64_t off, uint64_t len)
{
	struct raw_state *s = d->priv;
	int r = vd_pwritev_full(d->fd, iov, cnt, off, len);
	if (r < 0)
		return vd_err(d, r, "write '%s' at %llu: %s", d->path, (unsigned long long)off,
		              strerror(-r));
	if (!s->direct)
		vd_wb_wrote(&s->wb, d->fd, off, len);
	return 0;
}

static int raw_flush(struct vdisk *d)
{
	int r = vd_fdatasync(d->fd);
	return r < 0 ? vd_err(d, r, "flush '%s': %s", d->path, strerror(-r)) : 0;
}

static int raw_discard(struct vdisk *d, uint64_t off, uint64_t len)
{
	struct raw_state *s = d->priv;
	if (s->blockdev) {
		uint64_t range[2] = { off, len };
		if (ioctl(d->fd, BLKDISCARD, range) < 0 && errno != EOPNOTSUPP)
			return vd_err(d, -errno, "BLKDISCARD: %s", strerror(errno));
		return 0;
	}
	if (fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
	              (off_t)off, (off_t)len) < 0 && errno != EOPNOTSUPP)
		return vd_err(d, -errno, "punch hole: %s", strerror(errno));
	return 0;
}

static int raw_write_zeroes(struct vdisk *d, uint64_t off, uint64_t len, unsigned flags)
{
	struct raw_state *s = d->priv;
	if (!s->blockdev) {
		int mode = (flags & VDISK_ZERO_MAY_UNMAP)
			? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE;
		if (fallocate(d->fd, mode, (off_t)off, (off_t)len) == 0)
			return 0;
	} else {
		uint64_t range[2] = { off, len };
		if (ioctl(d->fd, BLKZEROOUT, range) == 0)
			return 0;
	}
	/* fallback: write zeroes */
	static const uint8_t zero[65536];
	while (len) {
		size_t n = (size_t)VD_MIN(len, sizeof(zero));
		int r = vd_pwrite_full(d->fd, zero, n, off);
		if (r < 0)
			return vd_err(d, r, "write zeroes: %s", strerror(-r));
		off += n;
		len -= n;
	}
	return 0;
}

static int raw_block_status(struct vdisk *d, uint64_t off, uint64_t len,
                            struct vdisk_extent *e)
{
	struct raw_state *s = d->priv;
	e->offset = off;
	e->length = len;
	e->depth = 0;
	e->host_offset = off;
	e->flags = VDISK_BS_DATA | VDISK_BS_ALLOCATED | VDISK_BS_OFFSET;
	if (s->blockdev)
		return 0;
	off_t data = lseek(d->fd, (off_t)off, SEEK_DATA);
	if (data < 0 && errno == ENXIO) {
		/* all hole to EOF */
		e->flags = VDISK_BS_ZERO | VDISK_BS_ALLOCATED;
		return 0;
	}
	if (data < 0)
		return 0; /* SEEK_DATA unsupported: report data */
	if ((uint64_t)data > off) {
		e->length = VD_MIN(len, (uint64_t)data - off);
		e->flags = VDISK_BS_ZERO | VDISK_BS_ALLOCATED;
		return 0;
	}
	off_t hole = lseek(d->fd, (off_t)off, SEEK_HOLE);
	if (hole > (off_t)off)
		e->length = VD_MIN(len, (uint64_t)hole - off);
	return 0;
}

static int raw_resize(struct vdisk *d, uint64_t size, unsigned flags)
{
	(void)flags;
	struct raw_state *s = d->priv;
	if (s->blockdev)
		return vd_err(d, -ENOTSUP, "cannot resize a block device");
	if (ftruncate(d->fd, (off_t)size) < 0)
		return vd_err(d, -errno, "truncate: %s", strerror(errno));
	d->size = size;
	return 0;
}

static int raw_create(const char *path, const struct vdisk_create_opts *o,
                      struct vdisk_error *err)
{
	if (o->backing_file)
		return vd_seterr(err, -EINVAL, "raw images have no backing file");
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return vd_seterr(err, -errno, "could not create '%s': %s", path, strerror(errno));
	int r = 0;
	if (ftruncate(fd, (off_t)o->size) < 0)
		r = vd_seterr(err, -errno, "truncate '%s': %s", path, strerror(errno));
	if (!r && o->size && (o->prealloc == VDISK_PREALLOC_FALLOC ||
	                      o->prealloc == VDISK_PREALLOC_FULL)) {
		if (o->prealloc == VDISK_PREALLOC_FULL) {
			static const uint8_t zero[65536];
			for (uint64_t p = 0; p < o->size && !r; p += sizeof(zero))
				r = vd_pwrite_full(fd, zero, (size_t)VD_MIN(sizeof(zero), o->size - p), p);
			if (r)
				vd_seterr(err, r, "preallocate: %s", strerror(-r));
		} else if (fallocate(fd, 0, 0, (off_t)o->size) < 0) {
			r = vd_seterr(err, -errno, "fallocate: %s", strerror(errno));
		}
	}
	close(fd);
	return r;
}

const struct vdisk_ops vdisk_raw_ops = {
	.name = "raw",
	.open = raw_open,
	.close = raw_close,
	.create = raw_create,
	.preadv = raw_preadv,
	.pwritev = raw_pwritev,
	.flush = raw_flush,
	.discard = raw_discard,
	.write_zeroes = raw_write_zeroes,
	.block_status = raw_block_status,
	.resize = raw_resize,
};
