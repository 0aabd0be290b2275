/* SPDX-License-Identifier: MIT */
/* Small I/O and iovec helpers. */
#include "vdisk_int.h"

#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int vd_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int vd_pread_zero(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) {
			memset(p, 0, len);
			return 0;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int vd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int vd_fdatasync(int fd)
{
	return fdatasync(fd) < 0 ? -errno : 0;
}

void vd_wb_wrote(struct vd_wb *wb, int fd, uint64_t off, uint64_t len)
{
	uint64_t prev = atomic_exchange_explicit(&wb->end, off + len, memory_order_relaxed);
	if (off < prev || off - prev > VD_WB_GAP) {
		/* not after the last write: a new run starts here */
		atomic_store_explicit(&wb->start, off, memory_order_relaxed);
		atomic_store_explicit(&wb->pending, len, memory_order_relaxed);
		return;
	}
	if (atomic_fetch_add_explicit(&wb->pending, len, memory_order_relaxed) + len < VD_WB_BYTES)
		return;
	if (atomic_exchange(&wb->busy, true))
		return;
	uint64_t s = atomic_exchange_explicit(&wb->start, off + len, memory_order_relaxed);
	atomic_store_explicit(&wb->pending, 0, memory_order_relaxed);
	/* an error here shows again at the flush, which reports it */
	if (s < off + len)
		(void)sync_file_range(fd, (off_t)s, (off_t)(off + len - s), SYNC_FILE_RANGE_WRITE);
	atomic_store(&wb->busy, false);
}

static int iov_grow(struct vd_iov *v)
{
	int ncap = v->cap * 2;
	struct iovec *n;
	if (v->v == v->inl) {
		n = malloc(sizeof(*n) * (size_t)ncap);
		if (!n)
			return -ENOMEM;
		memcpy(n, v->v, sizeof(*n) * (size_t)v->cnt);
	} else {
		n = realloc(v->v, sizeof(*n) * (size_t)ncap);
		if (!n)
			return -ENOMEM;
	}
	v->v = n;
	v->cap = ncap;
	return 0;
}

int vd_iov_sub(struct vd_iov *out, const struct iovec *iov, int cnt,
               uint64_t off, uint64_t len)
{
	out->v = out->inl;
	out->cap = 8;
	out->cnt = 0;
	for (int i = 0; i < cnt && len; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		uint64_t take = VD_MIN(iov[i].iov_len - off, len);
		if (out->cnt == out->cap) {
			int r = iov_grow(out);
			if (r < 0) {
				vd_iov_free(out);
				return r;
			}
		}
		out->v[out->cnt].iov_base = (uint8_t *)iov[i].iov_base + off;
		out->v[out->cnt].iov_len = take;
		out->cnt++;
		len -= take;
		off = 0;
	}
	return len ? -EINVAL : 0;
}

void vd_iov_free(struct vd_iov *v)
{
	if (v->v && v->v != v->inl)
		free(v->v);
	v->v = NULL;
	v->cnt = 0;
}

#define IOV_WALK(iov, cnt, off, len, BODY)                                   \
	for (int i_ = 0; i_ < (cnt) && (len); i_++) {                        \
		if ((off) >= (iov)[i_].iov_len) {                            \
			(off) -= (iov)[i_].iov_len;                          \
			continue;                                            \
		}                                                            \
		uint64_t n_ = VD_MIN((iov)[i_].iov_len - (off), (len));      \
		uint8_t *p_ = (uint8_t *)(iov)[i_].iov_base + (off);         \
		BODY;                                                        \
		(len) -= n_;                                                 \
		(off) = 0;                                                   \
	}

void vd_iov_memset(const struct iovec *iov, int cnt, uint64_t off, int c, uint64_t len)
{
	IOV_WALK(iov, cnt, off, len, memset(p_, c, n_));
}

void vd_iov_to_buf(const struct iovec *iov, int cnt, uint64_t off, void *buf, uint64_t len)
{
	uint8_t *b = buf;
	IOV_WALK(iov, cnt, off, len, { memcpy(b, p_, n_); b += n_; });
}

void vd_iov_from_buf(const struct iovec *iov, int cnt, uint64_t off, const void *buf, uint64_t len)
{
	const uint8_t *b = buf;
	IOV_WALK(iov, cnt, off, len, { memcpy(p_, b, n_); b += n_; });
}

bool vd_buf_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len && ((uintptr_t)p & 7)) {
		if (*p)
			return false;
		p++;
		len--;
	}
	const uint64_t *q = (const uint64_t *)(const void *)p;
	while (len >= 32) {
		if (q[0] | q[1] | q[2] | q[3])
			return false;
		q += 4;
		len -= 32;
	}
	p = (const uint8_t *)q;
	while (len--)
		if (*p++)
			return false;
	return true;
}

/* preadv that loops over IOV_MAX and short reads; beyond EOF reads zero. */
int vd_preadv_zero(int fd, const struct iovec *iov, int cnt, uint64_t off, uint64_t len)
{
	struct vd_iov v;
	while (len) {
		int r = vd_iov_sub(&v, iov, cnt, 0, len);
		if (r < 0)
			return r;
		int n = VD_MIN(v.cnt, IOV_MAX);
		ssize_t got;
		do
			got = preadv(fd, v.v, n, (off_t)off);
		while (got < 0 && errno == EINTR);
		vd_iov_free(&v);
		if (got < 0)
			return -errno;
		if (got == 0) {
			vd_iov_memset(iov, cnt, 0, 0, len);
			return 0;
		}
		/* advance: rebuild the vector from the consumed offset */
		struct vd_iov rest;
		r = vd_iov_sub(&rest, iov, cnt, (uint64_t)got, len - (uint64_t)got);
		if (r < 0)
			return r;
		off += (uint64_t)got;
		len -= (uint64_t)got;
		if (!len) {
			vd_iov_free(&rest);
			break;
		}
		r = vd_preadv_zero(fd, rest.v, rest.cnt, off, len);
		vd_iov_free(&rest);
		return r;
	}
	return 0;
}

int vd_pwritev_full(int fd, const struct iovec *iov, int cnt, uint64_t off, uint64_t len)
{
	while (len) {
		struct vd_iov v;
		int r = vd_iov_sub(&v, iov, cnt, 0, len);
		if (r < 0)
			return r;
		int n = VD_MIN(v.cnt, IOV_MAX);
		ssize_t put;
		do
			put = pwritev(fd, v.v, n, (off_t)off);
		while (put < 0 && errno == EINTR);
		vd_iov_free(&v);
		if (put < 0)
			return -errno;
		if (put == 0)
			return -EIO;
		if ((uint64_t)put == len)
			return 0;
		struct vd_iov rest;
		r = vd_iov_sub(&rest, iov, cnt, (uint64_t)put, len - (uint64_t)put);
		if (r < 0)
			return r;
		r = vd_pwritev_full(fd, rest.v, rest.cnt, off + (uint64_t)put,
		                    len - (uint64_t)put);
		vd_iov_free(&rest);
		return r;
	}
	return 0;
}

void vd_check_report(struct vdisk_check_result *r, const char *fmt, ...)
{
	if (!r->report)
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	r->report(r->opaque, line);
}
