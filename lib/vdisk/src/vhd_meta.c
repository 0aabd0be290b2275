/* SPDX-License-Identifier: MIT */
/* VHD metadata helpers: checksums, CHS geometry, the disk-size rules and
 * finding the parent of a differencing disk through its locators. */
#include "vhd.h"

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t csum_off)
{
	uint32_t sum = 0;
	for (size_t i = 0; i < len; i++)
		if (i < csum_off || i >= csum_off + 4)
			sum += buf[i];
	return ~sum;
}

/* The CHS algorithm of the VHD specification (appendix "CHS calculation"). */
void vhd_geometry(uint64_t sectors, uint16_t *cyls, uint8_t *heads, uint8_t *secs)
{
	uint64_t spt, hh, cth;
	if (sectors > VHD_MAX_GEOMETRY)
		sectors = VHD_MAX_GEOMETRY;
	if (sectors >= 65535ull * 16 * 63) {
		spt = 255;
		hh = 16;
		cth = sectors / spt;
	} else {
		spt = 17;
		cth = sectors / spt;
		hh = (cth + 1023) / 1024;
		if (hh < 4)
			hh = 4;
		if (cth >= hh * 1024 || hh > 16) {
			spt = 31;
			hh = 16;
			cth = sectors / spt;
		}
		if (cth >= hh * 1024) {
			spt = 63;
			hh = 16;
			cth = sectors / spt;
		}
	}
	*cyls = (uint16_t)(cth / hh);
	*heads = (uint8_t)hh;
	*secs = (uint8_t)spt;
}

/*
 * Virtual PC sizes a disk by its CHS geometry; Hyper-V, disk2vhd, XenServer
 * and Citrix tools by the footer's current size. qemu-img writes "qemu"
 * (geometry decides) or, with force_size, "qem2" (current size decides). A
 * geometry at the CHS maximum cannot describe a larger disk, so then the
 * current size decides whoever made the image.
 */
uint64_t vhd_footer_size(const uint8_t *f, bool *from_chs)
{
	static const char *const by_size[] = { "win ", "qem2", "d2v ", "CTXS" };
	bool chs = true;
	for (size_t i = 0; i < sizeof(by_size) / sizeof(by_size[0]); i++)
		if (!memcmp(f + VF_CREATOR_APP, by_size[i], 4))
			chs = false;
	if (!memcmp(f + VF_CREATOR_APP, "tap\0", 4))
		chs = false;
	uint64_t geo = (uint64_t)vd_be16(f + VF_CYLS) * f[VF_HEADS] * f[VF_SECS];
	if (geo == VHD_MAX_GEOMETRY)
		chs = false;
	*from_chs = chs;
	return chs ? geo * 512 : vd_be64(f + VF_CUR_SIZE) / 512 * 512;
}

size_t vhd_utf16(const char *s, uint8_t *out, size_t cap, bool be)
{
	size_t n = 0;
	const uint8_t *p = (const uint8_t *)s;
	while (*p) {
		uint32_t c = *p++;
		int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
		c &= more == 3 ? 0x07 : more == 2 ? 0x0f : more == 1 ? 0x1f : 0x7f;
		for (; more && (*p & 0xc0) == 0x80; more--)
			c = c << 6 | (*p++ & 0x3f);
		uint16_t u[2];
		int nu = 1;
		if (c >= 0x10000) {
			c -= 0x10000;
			u[0] = (uint16_t)(0xd800 | c >> 10);
			u[1] = (uint16_t)(0xdc00 | (c & 0x3ff));
			nu = 2;
		} else {
			u[0] = (uint16_t)c;
		}
		for (int i = 0; i < nu; i++) {
			if (n + 2 > cap)
				return n;
			out[n + (be ? 0 : 1)] = (uint8_t)(u[i] >> 8);
			out[n + (be ? 1 : 0)] = (uint8_t)u[i];
			n += 2;
		}
	}
	return n;
}

/* UTF-16 (len bytes) to UTF-8 in out (NUL-terminated); stops at a NUL. */
static void utf16_to_utf8(const uint8_t *in, size_t len, bool be, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i + 1 < len; i += 2) {
		uint32_t c = be ? (uint32_t)(in[i] << 8 | in[i + 1]) : (uint32_t)(in[i + 1] << 8 | in[i]);
		if (!c)
			break;
		if (c >= 0xd800 && c < 0xdc00 && i + 3 < len) {
			uint32_t c2 = be ? (uint32_t)(in[i + 2] << 8 | in[i + 3])
			                 : (uint32_t)(in[i + 3] << 8 | in[i + 2]);
			if (c2 >= 0xdc00 && c2 < 0xe000) {
				c = 0x10000 + ((c - 0xd800) << 10) + (c2 - 0xdc00);
				i += 2;
			}
		}
		uint8_t b[4];
		int nb;
		if (c < 0x80) {
			b[0] = (uint8_t)c;
			nb = 1;
		} else if (c < 0x800) {
			b[0] = (uint8_t)(0xc0 | c >> 6);
			b[1] = (uint8_t)(0x80 | (c & 0x3f));
			nb = 2;
		} else if (c < 0x10000) {
			b[0] = (uint8_t)(0xe0 | c >> 12);
			b[1] = (uint8_t)(0x80 | (c >> 6 & 0x3f));
			b[2] = (uint8_t)(0x80 | (c & 0x3f));
			nb = 3;
		} else {
			b[0] = (uint8_t)(0xf0 | c >> 18);
			b[1] = (uint8_t)(0x80 | (c >> 12 & 0x3f));
			b[2] = (uint8_t)(0x80 | (c >> 6 & 0x3f));
			b[3] = (uint8_t)(0x80 | (c & 0x3f));
			nb = 4;
		}
		if (o + (size_t)nb + 1 > cap)
			break;
		memcpy(out + o, b, (size_t)nb);
		o += (size_t)nb;
	}
	out[o] = 0;
}

/* A locator's text as a path on this system, or false if it has none. */
static bool locator_path(uint32_t code, const uint8_t *data, size_t len, char *out, size_t cap)
{
	if (code == 0x57327275 || code == 0x57326b75) { /* "W2ru", "W2ku": UTF-16LE */
		utf16_to_utf8(data, len, false, out, cap);
		if (code == 0x57326b75 && out[0] && out[1] == ':')
			return false; /* a drive letter means nothing here */
		for (char *p = out; *p; p++)
			if (*p == '\\')
				*p = '/';
		/* ".\name" → "name" */
		while (out[0] == '.' && out[1] == '/')
			memmove(out, out + 2, strlen(out + 2) + 1);
		return out[0] != 0;
	}
	if (code == 0x4d616358) { /* "MacX": a file:// URL, UTF-8 */
		size_t n = VD_MIN(len, cap - 1);
		memcpy(out, data, n);
		out[n] = 0;
		out[strnlen(out, n)] = 0;
		const char *p = out;
		if (!strncmp(p, "file://", 7))
			p += 7;
		if (!strncmp(p, "localhost/", 10))
			p += 9;
		/* undo %XX escapes */
		char *w = out;
		for (; *p; p++) {
			unsigned v;
			if (*p == '%' && sscanf(p + 1, "%2x", &v) == 1) {
				*w++ = (char)v;
				p += 2;
			} else {
				*w++ = *p;
			}
		}
		*w = 0;
		return out[0] != 0;
	}
	return false;
}

/* name relative to the image's folder unless absolute */
static char *resolve(const char *img, const char *name)
{
	if (name[0] == '/')
		return strdup(name);
	char *dup = strdup(img);
	if (!dup)
		return NULL;
	const char *dir = dirname(dup);
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);
	if (p)
		snprintf(p, n, "%s/%s", dir, name);
	free(dup);
	return p;
}

static int try_parent(struct vdisk *d, const struct vdisk_open_opts *o, const char *name,
                      char *tried, size_t tcap)
{
	char *p = resolve(d->path, name);
	if (!p)
		return vd_err(d, -ENOMEM, "out of memory");
	size_t tl = strlen(tried);
	snprintf(tried + tl, tcap - tl, "%s'%s'", tl ? ", " : "", p);
	if (access(p, F_OK) < 0) {
		free(p);
		return -ENOENT;
	}
	struct vdisk_open_opts po = { .format = "vpc",
	                              .flags = o->flags & ~(uint32_t)(VDISK_OPEN_RDWR | VDISK_OPEN_PROBE) };
	struct vdisk_error e;
	int r = vd_open_internal(&d->backing, p, &po, d->depth + 1, &e);
	if (r < 0) {
		vd_err(d, r, "parent of '%s': %s", d->path, e.msg);
		free(p);
		return r;
	}
	free(p);
	struct vhd *v = VHD(d), *pv = VHD(d->backing);
	if (memcmp(pv->footer + VF_UUID, v->dynhdr + VH_PARENT_UUID, 16)) {
		vdisk_close(d->backing);
		d->backing = NULL;
		return vd_err(d, -EINVAL, "'%s': parent '%s' has another unique id than the one "
		              "recorded in the differencing disk (was it replaced or modified?)",
		              d->path, name);
	}
	snprintf(v->parent_name, sizeof(v->parent_name), "%s", name);
	return 0;
}

int vhd_open_parent(struct vdisk *d, const struct vdisk_open_opts *o)
{
	struct vhd *v = VHD(d);
	static const uint32_t order[] = { 0x57327275, 0x57326b75, 0x4d616358 };
	char tried[2048] = "", name[1024];
	struct stat st;
	if (fstat(d->fd, &st) < 0)
		return vd_err(d, -errno, "stat '%s': %s", d->path, strerror(errno));
	for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
		for (int i = 0; i < VHD_NLOCATORS; i++) {
			const uint8_t *l = v->dynhdr + VH_LOCATORS + i * VH_LOCATOR_SIZE;
			uint32_t code = vd_be32(l), len = vd_be32(l + 8);
			uint64_t off = vd_be64(l + 16);
			if (code != order[k])
				continue;
			if (!len || len > 4096 || off > (uint64_t)st.st_size ||
			    len > (uint64_t)st.st_size - off)
				return vd_err(d, -EINVAL, "'%s': parent locator %d (%.4s) at %llu, %u bytes, "
				              "lies outside the file", d->path, i, (const char *)l,
				              (unsigned long long)off, len);
			uint8_t buf[4096];
			int r = vd_pread_full(d->fd, buf, len, off);
			if (r < 0)
				return vd_err(d, r, "read parent locator of '%s': %s", d->path, strerror(-r));
			if (!locator_path(code, buf, len, name, sizeof(name)))
				continue;
			r = try_parent(d, o, name, tried, sizeof(tried));
			if (r != -ENOENT)
				return r;
		}
	}
	/* last resort: the parent's name, beside the image */
	utf16_to_utf8(v->dynhdr + VH_PARENT_NAME, 512, true, name, sizeof(name));
	if (name[0] && !strchr(name, '/') && !strchr(name, '\\')) {
		int r = try_parent(d, o, name, tried, sizeof(tried));
		if (r != -ENOENT)
			return r;
	}
	return vd_err(d, -ENOENT, "'%s': parent disk not found (tried %s)", d->path,
	              tried[0] ? tried : "no usable locator");
}
