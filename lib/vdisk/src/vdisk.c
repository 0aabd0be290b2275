/* SPDX-License-Identifier: MIT */
/* The generic layer: format selection, locking, argument checks, dispatch. */
#include "vdisk_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define VD_MAX_CHAIN 64

static const struct vdisk_ops *const formats[] = {
	&vdisk_qcow2_ops,
	&vdisk_vdi_ops,
	&vdisk_vpc_ops,
	&vdisk_vmdk_ops,
	&vdisk_raw_ops,
};

int vd_err(struct vdisk *d, int err, const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&d->err_lock);
	va_start(ap, fmt);
	vsnprintf(d->errmsg, sizeof(d->errmsg), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&d->err_lock);
	return err;
}

int vd_seterr(struct vdisk_error *e, int err, const char *fmt, ...)
{
	if (e) {
		va_list ap;
		e->code = err;
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
		va_end(ap);
	}
	return err;
}

const char *vdisk_errmsg(struct vdisk *d, char *buf, size_t len)
{
	pthread_mutex_lock(&d->err_lock);
	snprintf(buf, len, "%s", d->errmsg);
	pthread_mutex_unlock(&d->err_lock);
	return buf;
}

static const struct vdisk_ops *find_format(const char *name)
{
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
		if (!strcmp(formats[i]->name, name))
			return formats[i];
	return NULL;
}

static const char *probe_fd(int fd)
{
	uint8_t magic[4];
	if (vd_pread_full(fd, magic, 4, 0) == 0 && !memcmp(magic, "QFI\xfb", 4))
		return "qcow2";
	uint8_t sig[4];
	if (vd_pread_full(fd, sig, 4, 0x40) == 0 && sig[0] == 0x7f && sig[1] == 0x10 &&
	    sig[2] == 0xda && sig[3] == 0xbe)
		return "vdi";
	uint8_t cookie[8];
	if (vd_pread_full(fd, cookie, 8, 0) == 0 && !memcmp(cookie, "conectix", 8))
		return "vpc"; /* dynamic and differencing; a fixed VHD probes as raw */
	/* vmdk: a sparse extent ("KDMV"), or a text descriptor */
	char text[22];
	if (vd_pread_full(fd, text, sizeof(text), 0) == 0 &&
	    (!memcmp(text, "KDMV", 4) || !memcmp(text, "# Disk DescriptorFile", 21)))
		return "vmdk";
	return "raw";
}

const char *vdisk_probe(const char *path, struct vdisk_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		vd_seterr(err, -errno, "could not open '%s': %s", path, strerror(errno));
		return NULL;
	}
	const char *f = probe_fd(fd);
	close(fd);
	return f;
}

int vd_open_internal(struct vdisk **out, const char *path,
                     const struct vdisk_open_opts *o, int depth,
                     struct vdisk_error *err)
{
	struct vdisk_open_opts def = {0};
	if (!o)
		o = &def;
	if (depth > VD_MAX_CHAIN)
		return vd_seterr(err, -ELOOP, "backing chain of '%s' is deeper than %d",
		                 path, VD_MAX_CHAIN);
	bool rw = o->flags & VDISK_OPEN_RDWR;
	int oflags = (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC;
	if (o->flags & VDISK_OPEN_DIRECT)
		oflags |= O_DIRECT;
	int fd = open(path, oflags);
	if (fd < 0)
		return vd_seterr(err, -errno, "could not open '%s': %s", path, strerror(errno));

	const struct vdisk_ops *ops;
	if (o->format) {
		ops = find_format(o->format);
		if (!ops) {
			close(fd);
			return vd_seterr(err, -ENOTSUP, "unknown format '%s'", o->format);
		}
	} else if (o->flags & VDISK_OPEN_PROBE) {
		ops = find_format(probe_fd(fd));
	} else {
		close(fd);
		return vd_seterr(err, -EINVAL, "no format given for '%s' and probing not requested", path);
	}

	if (!(o->flags & VDISK_OPEN_NO_LOCK) &&
	    flock(fd, (rw ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0) {
		int e = -errno;
		close(fd);
		return vd_seterr(err, e, "could not lock '%s' (%s): is it in use?", path,
		                 rw ? "exclusive" : "shared");
	}

	struct vdisk *d = calloc(1, sizeof(*d));
	if (!d) {
		close(fd);
		return vd_seterr(err, -ENOMEM, "out of memory");
	}
	d->path = strdup(path);
	d->fd = fd;
	d->rw = rw;
	d->open_flags = o->flags;
	d->ops = ops;
	d->depth = depth;
	d->lock_align = 1;
	rangelock_init(&d->rl);
	pthread_mutex_init(&d->err_lock, NULL);
	int r = d->path ? ops->open(d, o) : vd_err(d, -ENOMEM, "out of memory");
	if (r < 0) {
		vd_seterr(err, r, "%s", d->errmsg);
		if (d->backing)
			vdisk_close(d->backing);
		rangelock_destroy(&d->rl);
		pthread_mutex_destroy(&d->err_lock);
		close(fd);
		free(d->path);
		free(d);
		return r;
	}
	*out = d;
	return 0;
}

int vdisk_open(struct vdisk **out, const char *path,
               const struct vdisk_open_opts *opts, struct vdisk_error *err)
{
	if (err) {
		err->code = 0;
		err->msg[0] = 0;
	}
	return vd_open_internal(out, path, opts, 0, err);
}

int vdisk_close(struct vdisk *d)
{
	if (!d)
		return 0;
	int r = 0;
	if (d->ops->close)
		r = d->ops->close(d);
	if (d->backing)
		vdisk_close(d->backing);
	rangelock_destroy(&d->rl);
	pthread_mutex_destroy(&d->err_lock);
	close(d->fd);
	free(d->path);
	free(d);
	return r;
}

int vdisk_lock(struct vdisk *d, enum vdisk_lock_mode mode)
{
	static const char *const names[] = { "none", "shared", "exclusive" };
	if ((unsigned)mode > VDISK_LOCK_EXCLUSIVE)
		return vd_err(d, -EINVAL, "unknown lock mode %d", (int)mode);
	if (mode != VDISK_LOCK_EXCLUSIVE && d->rw) {
		/* what this handle wrote is on disk before anyone else may look */
		int r = d->ops->flush(d);
		if (r < 0)
			return r;
	}
	int op = mode == VDISK_LOCK_NONE ? LOCK_UN : mode == VDISK_LOCK_SHARED ? LOCK_SH : LOCK_EX;
	if (flock(d->fd, op | LOCK_NB) < 0) {
		int e = -errno;
		return vd_err(d, e, "could not lock '%s' (%s): %s", d->path, names[mode],
		              e == -EWOULDBLOCK ? "another process holds it" : strerror(-e));
	}
	d->rw = mode == VDISK_LOCK_EXCLUSIVE && (d->open_flags & VDISK_OPEN_RDWR);
	return 0;
}

int vdisk_create(const char *path, const struct vdisk_create_opts *o,
                 struct vdisk_error *err)
{
	if (err) {
		err->code = 0;
		err->msg[0] = 0;
	}
	if (!o || !o->format)
		return vd_seterr(err, -EINVAL, "no format given");
	const struct vdisk_ops *ops = find_format(o->format);
	if (!ops || !ops->create)
		return vd_seterr(err, -ENOTSUP, "cannot create format '%s'", o->format);
	return ops->create(path, o, err);
}

static int check_range(struct vdisk *d, uint64_t off, uint64_t len)
{
	if (off > d->size || len > d->size - off)
		return vd_err(d, -EINVAL, "request [%llu, +%llu) beyond the end of the disk (%llu)",
		              (unsigned long long)off, (unsigned long long)len,
		              (unsigned long long)d->size);
	return 0;
}

static uint64_t iov_len(const struct iovec *iov, int cnt)
{
	uint64_t n = 0;
	for (int i = 0; i < cnt; i++)
		n += iov[i].iov_len;
	return n;
}

static void lock_range(struct vdisk *d, struct rl_node *n, uint64_t off,
                       uint64_t len, bool excl)
{
	uint64_t a = d->lock_align;
	uint64_t s = off / a * a, e = VD_ALIGN_UP(off + len, a);
	rangelock_lock(&d->rl, n, s, e, excl);
}

int vdisk_preadv(struct vdisk *d, const struct iovec *iov, int iovcnt, uint64_t off)
{
	uint64_t len = iov_len(iov, iovcnt);
	int r = check_range(d, off, len);
	if (r < 0 || !len)
		return r;
	struct rl_node n;
	lock_range(d, &n, off, len, false);
	r = d->ops->preadv(d, iov, iovcnt, off, len);
	rangelock_unlock(&d->rl, &n);
	return r;
}

int vdisk_pwritev(struct vdisk *d, const struct iovec *iov, int iovcnt, uint64_t off)
{
	if (!d->rw)
		return vd_err(d, -EBADF, "image '%s' is open read-only", d->path);
	uint64_t len = iov_len(iov, iovcnt);
	int r = check_range(d, off, len);
	if (r < 0 || !len)
		return r;
	struct rl_node n;
	lock_range(d, &n, off, len, true);
	r = d->ops->pwritev(d, iov, iovcnt, off, len);
	rangelock_unlock(&d->rl, &n);
	return r;
}

int vdisk_pread(struct vdisk *d, void *buf, size_t len, uint64_t off)
{
	struct iovec v = { buf, len };
	return vdisk_preadv(d, &v, 1, off);
}

int vdisk_pwrite(struct vdisk *d, const void *buf, size_t len, uint64_t off)
{
	struct iovec v = { (void *)buf, len };
	return vdisk_pwritev(d, &v, 1, off);
}

int vdisk_flush(struct vdisk *d)
{
	if (!d->rw)
		return 0;
	return d->ops->flush(d);
}

int vdisk_discard(struct vdisk *d, uint64_t off, uint64_t len)
{
	if (!d->rw)
		return vd_err(d, -EBADF, "image '%s' is open read-only", d->path);
	int r = check_range(d, off, len);
	if (r < 0 || !len)
		return r;
	if (!d->ops->discard)
		return 0;
	struct rl_node n;
	lock_range(d, &n, off, len, true);
	r = d->ops->discard(d, off, len);
	rangelock_unlock(&d->rl, &n);
	return r;
}

int vdisk_write_zeroes(struct vdisk *d, uint64_t off, uint64_t len, unsigned flags)
{
	if (!d->rw)
		return vd_err(d, -EBADF, "image '%s' is open read-only", d->path);
	int r = check_range(d, off, len);
	if (r < 0 || !len)
		return r;
	struct rl_node n;
	lock_range(d, &n, off, len, true);
	r = d->ops->write_zeroes(d, off, len, flags);
	rangelock_unlock(&d->rl, &n);
	return r;
}

int vdisk_pwrite_compressed(struct vdisk *d, const void *buf, size_t len, uint64_t off)
{
	if (!d->rw)
		return vd_err(d, -EBADF, "image '%s' is open read-only", d->path);
	if (!d->ops->pwrite_compressed)
		return vd_err(d, -ENOTSUP, "format %s cannot write compressed data", d->ops->name);
	int r = check_range(d, off, len);
	if (r < 0 || !len)
		return r;
	struct rl_node n;
	lock_range(d, &n, off, len, true);
	r = d->ops->pwrite_compressed(d, buf, len, off);
	rangelock_unlock(&d->rl, &n);
	return r;
}

int vdisk_block_status(struct vdisk *d, uint64_t off, uint64_t len,
                       struct vdisk_extent *ext)
{
	int r = check_range(d, off, len);
	if (r < 0)
		return r;
	if (!len)
		return vd_err(d, -EINVAL, "block status of an empty range");
	struct rl_node n;
	lock_range(d, &n, off, len, false);
	r = d->ops->block_status(d, off, len, ext);
	rangelock_unlock(&d->rl, &n);
	return r;
}

uint64_t vdisk_size(const struct vdisk *d) { return d->size; }
const char *vdisk_format(const struct vdisk *d) { return d->ops->name; }
const char *vdisk_path(const struct vdisk *d) { return d->path; }
struct vdisk *vdisk_backing(const struct vdisk *d) { return d->backing; }

uint32_t vdisk_cluster_size(const struct vdisk *d)
{
	return d->lock_align > 1 ? d->lock_align : 0;
}

static int whole(struct vdisk *d, struct rl_node *n)
{
	rangelock_lock(&d->rl, n, 0, UINT64_MAX, true);
	return 0;
}

int vdisk_resize(struct vdisk *d, uint64_t size, unsigned flags)
{
	if (!d->rw)
		return vd_err(d, -EBADF, "image '%s' is open read-only", d->path);
	if (!d->ops->resize)
		return vd_err(d, -ENOTSUP, "format %s cannot be resized", d->ops->name);
	if (size < d->size && !(flags & VDISK_RESIZE_SHRINK))
		return vd_err(d, -EINVAL, "shrinking needs VDISK_RESIZE_SHRINK (--shrink)");
	struct rl_node n;
	whole(d, &n);
	int r = d->ops->resize(d, size, flags);
	rangelock_unlock(&d->rl, &n);
	return r;
}

int vdisk_set_backing(struct vdisk *d, const char *name, const char *fmt)
{
	if (!d->rw)
		return vd_err(d, -EBADF, "image '%s' is open read-only", d->path);
	if (!d->ops->set_backing)
		return vd_err(d, -ENOTSUP, "format %s has no backing file reference", d->ops->name);
	if (name && !*name)
		name = NULL;
	if (fmt && !*fmt)
		fmt = NULL;
	if (!name && fmt)
		return vd_err(d, -EINVAL, "a backing format ('%s') without a backing file", fmt);
	struct rl_node n;
	whole(d, &n);
	int r = d->ops->set_backing(d, name, fmt);
	rangelock_unlock(&d->rl, &n);
	return r;
}

int vdisk_make_empty(struct vdisk *d)
{
	if (!d->rw)
		return vd_err(d, -EBADF, "image '%s' is open read-only", d->path);
	if (!d->ops->make_empty)
		return vd_err(d, -ENOTSUP, "format %s cannot be emptied into a backing file",
		              d->ops->name);
	struct rl_node n;
	whole(d, &n);
	int r = d->ops->make_empty(d);
	rangelock_unlock(&d->rl, &n);
	return r;
}

int vdisk_info(struct vdisk *d, struct vdisk_info *info)
{
	memset(info, 0, sizeof(*info));
	info->format = d->ops->name;
	info->virtual_size = d->size;
	struct stat st;
	if (fstat(d->fd, &st) == 0)
		info->actual_size = (uint64_t)st.st_blocks * 512;
	return d->ops->info ? d->ops->info(d, info) : 0;
}

int vdisk_check(struct vdisk *d, struct vdisk_check_result *res, unsigned fix)
{
	if (!d->ops->check)
		return vd_err(d, -ENOTSUP, "format %s does not support checks", d->ops->name);
	if (fix && !d->rw)
		return vd_err(d, -EBADF, "repair needs a read-write open");
	struct rl_node n;
	whole(d, &n);
	int r = d->ops->check(d, res, fix);
	rangelock_unlock(&d->rl, &n);
	return r;
}

#define SNAP_CALL(fn, ...)                                                           \
	do {                                                                         \
		if (!d->ops->fn)                                                     \
			return vd_err(d, -ENOTSUP, "format %s has no internal snapshots", \
			              d->ops->name);                                 \
		struct rl_node n_;                                                   \
		whole(d, &n_);                                                       \
		int r_ = d->ops->fn(__VA_ARGS__);                                    \
		rangelock_unlock(&d->rl, &n_);                                       \
		return r_;                                                           \
	} while (0)

int vdisk_snapshot_list(struct vdisk *d, struct vdisk_snapshot **list, unsigned *n)
{
	SNAP_CALL(snap_list, d, list, n);
}

int vdisk_snapshot_create_ex(struct vdisk *d, const struct vdisk_snapshot_params *p)
{
	if (!d->rw)
		return vd_err(d, -EBADF, "image '%s' is open read-only", d->path);
	if (!p || !p->name || !*p->name)
		return vd_err(d, -EINVAL, "a snapshot needs a name");
	SNAP_CALL(snap_create, d, p);
}

int vdisk_snapshot_create(struct vdisk *d, const char *name, const void *vm, uint64_t len)
{
	struct iovec v = { (void *)vm, len };
	struct vdisk_snapshot_params p = { .name = name, .vmstate = len ? &v : NULL,
	                                   .vmstate_cnt = len ? 1 : 0, .icount = UINT64_MAX };
	return vdisk_snapshot_create_ex(d, &p);
}

int vdisk_snapshot_apply(struct vdisk *d, const char *name)
{
	if (!d->rw)
		return vd_err(d, -EBADF, "image '%s' is open read-only", d->path);
	SNAP_CALL(snap_apply, d, name);
}

int vdisk_snapshot_delete(struct vdisk *d, const char *name)
{
	if (!d->rw)
		return vd_err(d, -EBADF, "image '%s' is open read-only", d->path);
	SNAP_CALL(snap_delete, d, name);
}

int vdisk_snapshot_read_vmstate(struct vdisk *d, const char *name, void *buf,
                                uint64_t len, uint64_t off)
{
	SNAP_CALL(snap_vmstate, d, name, buf, len, off);
}
