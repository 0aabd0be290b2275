/* SPDX-License-Identifier: MIT */
/*
 * VHD creation: fixed, dynamic (2 MiB blocks) and differencing disks.
 *
 * Sizes follow qemu-img so images match what it makes: by default the size
 * is rounded up to a whole CHS geometry and the creator is "qemu" (readers
 * size it by its geometry, as Virtual PC does); with force_size the size is
 * kept, the geometry is the CHS maximum and the creator "qem2" (readers use
 * the current size, as for Hyper-V images). A differencing disk takes its
 * parent's size, geometry and sizing rule, and records the parent's unique
 * id, time stamp, name and three locators: W2ru (relative Windows path),
 * W2ku (absolute) and Mac X (file:// URL).
 */
#include "vhd.h"

#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void vhd_uuid(uint8_t *u)
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

static uint32_t vhd_now(void)
{
	time_t t = time(NULL);
	return t > (time_t)VHD_EPOCH ? (uint32_t)(t - VHD_EPOCH) : 0;
}

struct geo {
	uint64_t size;
	uint16_t cyls;
	uint8_t heads, secs;
	const char *app;
};

static int size_geometry(uint64_t want, bool force, struct geo *g, struct vdisk_error *err)
{
	uint64_t sectors = VD_DIV_UP(want, 512);
	uint16_t c = 0;
	uint8_t h = 0, s = 0;
	if (force) {
		c = 65535;
		h = 16;
		s = 255;
	} else {
		/* grow until the geometry holds the whole size (never truncate) */
		uint64_t t = VD_MIN(sectors, VHD_MAX_GEOMETRY);
		for (uint64_t i = 0; t > (uint64_t)c * h * s; i++)
			vhd_geometry(t + i, &c, &h, &s);
	}
	uint64_t geo = (uint64_t)c * h * s;
	if (geo == VHD_MAX_GEOMETRY) {
		if (sectors > VHD_MAX_SECTORS)
			return vd_seterr(err, -EFBIG, "VHD disk size %llu is too large, the maximum "
			                 "is 2040 GiB", (unsigned long long)want);
	} else {
		sectors = geo;
	}
	g->size = sectors * 512;
	g->cyls = c;
	g->heads = h;
	g->secs = s;
	g->app = force ? "qem2" : "qemu";
	return 0;
}

static void build_footer(uint8_t *f, uint32_t type, const struct geo *g, uint64_t data_off)
{
	memset(f, 0, VHD_FOOTER_SIZE);
	memcpy(f + VF_COOKIE, "conectix", 8);
	vd_put_be32(f + VF_FEATURES, 2);
	vd_put_be32(f + VF_VERSION, 0x00010000);
	vd_put_be64(f + VF_DATA_OFFSET, data_off);
	vd_put_be32(f + VF_TIMESTAMP, vhd_now());
	memcpy(f + VF_CREATOR_APP, g->app, 4);
	vd_put_be32(f + VF_CREATOR_VER, 0x00050003);
	memcpy(f + VF_CREATOR_OS, "Wi2k", 4);
	vd_put_be64(f + VF_ORIG_SIZE, g->size);
	vd_put_be64(f + VF_CUR_SIZE, g->size);
	vd_put_be16(f + VF_CYLS, g->cyls);
	f[VF_HEADS] = g->heads;
	f[VF_SECS] = g->secs;
	vd_put_be32(f + VF_TYPE, type);
	vhd_uuid(f + VF_UUID);
	vd_put_be32(f + VF_CHECKSUM, vhd_checksum(f, VHD_FOOTER_SIZE, VF_CHECKSUM));
}

static int create_fixed(int fd, const struct geo *g)
{
	uint8_t f[VHD_FOOTER_SIZE];
	build_footer(f, VHD_TYPE_FIXED, g, UINT64_MAX);
	if (ftruncate(fd, (off_t)g->size) < 0)
		return -errno;
	return vd_pwrite_full(fd, f, VHD_FOOTER_SIZE, g->size);
}

struct parent {
	uint8_t uuid[16];
	uint32_t ts;
	char name[PATH_MAX];
	char w2ru[PATH_MAX], abs[PATH_MAX];
};

struct locator {
	uint32_t code;
	uint8_t data[3 * PATH_MAX];
	uint32_t len;
};

/* dynamic or differencing; p NULL for dynamic */
static int create_dynamic(int fd, const struct geo *g, const struct parent *p)
{
	uint32_t bs = VHD_DEF_BLOCK;
	uint64_t n = VD_DIV_UP(g->size, bs);
	uint64_t bat_off = VHD_FOOTER_SIZE + VHD_DYNHDR_SIZE;
	uint64_t bat_size = VD_ALIGN_UP(n * 4, 512);
	uint8_t f[VHD_FOOTER_SIZE], h[VHD_DYNHDR_SIZE] = {0};
	build_footer(f, p ? VHD_TYPE_DIFF : VHD_TYPE_DYNAMIC, g, VHD_FOOTER_SIZE);
	memcpy(h + VH_COOKIE, "cxsparse", 8);
	vd_put_be64(h + VH_DATA_OFFSET, UINT64_MAX);
	vd_put_be64(h + VH_TABLE_OFFSET, bat_off);
	vd_put_be32(h + VH_VERSION, 0x00010000);
	vd_put_be32(h + VH_MAX_ENTRIES, (uint32_t)n);
	vd_put_be32(h + VH_BLOCK_SIZE, bs);
	uint64_t end = bat_off + bat_size;
	static struct locator loc[3];
	int nloc = 0;
	if (p) {
		memcpy(h + VH_PARENT_UUID, p->uuid, 16);
		vd_put_be32(h + VH_PARENT_TS, p->ts);
		vhd_utf16(p->name, h + VH_PARENT_NAME, 512, true);
		char win[PATH_MAX + 2];
		loc[nloc].code = 0x57327275; /* W2ru */
		snprintf(win, sizeof(win), "%s%s", p->w2ru[0] == '.' ? "" : ".\\", p->w2ru);
		for (char *c = win; *c; c++)
			if (*c == '/')
				*c = '\\';
		loc[nloc].len = (uint32_t)vhd_utf16(win, loc[nloc].data, sizeof(loc[nloc].data), false);
		nloc++;
		loc[nloc].code = 0x57326b75; /* W2ku */
		snprintf(win, sizeof(win), "%s", p->abs);
		for (char *c = win; *c; c++)
			if (*c == '/')
				*c = '\\';
		loc[nloc].len = (uint32_t)vhd_utf16(win, loc[nloc].data, sizeof(loc[nloc].data), false);
		nloc++;
		loc[nloc].code = 0x4d616358; /* MacX */
		char *w = (char *)loc[nloc].data;
		w += sprintf(w, "file://");
		for (const char *c = p->abs; *c; c++) {
			if (*c == '%' || *c == ' ' || *c == '#' || *c == '?')
				w += sprintf(w, "%%%02X", (unsigned char)*c);
			else
				*w++ = *c;
		}
		loc[nloc].len = (uint32_t)(w - (char *)loc[nloc].data);
		nloc++;
		for (int i = 0; i < nloc; i++) {
			uint8_t *l = h + VH_LOCATORS + i * VH_LOCATOR_SIZE;
			uint32_t space = VD_ALIGN_UP(loc[i].len, 512);
			vd_put_be32(l, loc[i].code);
			/* bytes, as Windows writes it (the specification says sectors) */
			vd_put_be32(l + 4, space);
			vd_put_be32(l + 8, loc[i].len);
			vd_put_be64(l + 16, end);
			end += space;
		}
	}
	vd_put_be32(h + VH_CHECKSUM, vhd_checksum(h, VHD_DYNHDR_SIZE, VH_CHECKSUM));
	uint8_t *bat = malloc(bat_size);
	if (!bat)
		return -ENOMEM;
	memset(bat, 0xff, bat_size);
	int r = vd_pwrite_full(fd, f, VHD_FOOTER_SIZE, 0);
	if (r == 0)
		r = vd_pwrite_full(fd, h, VHD_DYNHDR_SIZE, VHD_FOOTER_SIZE);
	if (r == 0)
		r = vd_pwrite_full(fd, bat, bat_size, bat_off);
	free(bat);
	for (int i = 0; i < nloc && r == 0; i++) {
		uint8_t *l = h + VH_LOCATORS + i * VH_LOCATOR_SIZE;
		r = vd_pwrite_full(fd, loc[i].data, loc[i].len, vd_be64(l + 16));
	}
	if (r == 0)
		r = vd_pwrite_full(fd, f, VHD_FOOTER_SIZE, end);
	return r;
}

/* The path of `to` relative to the folder `from` (both absolute, no
 * trailing slash). */
static void relpath(const char *from, const char *to, char *out, size_t cap)
{
	/* the longest common prefix ending at a component boundary */
	size_t common = 0, i = 0;
	for (; from[i] && from[i] == to[i]; i++)
		if (from[i] == '/')
			common = i;
	if (!from[i] && to[i] == '/')
		common = i;
	size_t o = 0;
	out[0] = 0;
	for (const char *c = from + common; *c; c++)
		if (*c == '/' && o + 4 < cap) {
			memcpy(out + o, "../", 4);
			o += 3;
		}
	snprintf(out + o, cap - o, "%s", to + common + 1);
}

static int parent_info(const char *path, const struct vdisk_create_opts *o, struct geo *g,
                       struct parent *p, struct vdisk_error *err)
{
	if (o->backing_format && strcmp(o->backing_format, "vpc"))
		return vd_seterr(err, -EINVAL, "the parent of a differencing VHD must be a VHD "
		                 "(vpc), not %s", o->backing_format);
	char *dup = strdup(path);
	if (!dup)
		return vd_seterr(err, -ENOMEM, "out of memory");
	char dir[PATH_MAX], ppath[PATH_MAX * 2];
	if (!realpath(dirname(dup), dir)) {
		free(dup);
		return vd_seterr(err, -errno, "folder of '%s': %s", path, strerror(errno));
	}
	free(dup);
	if (o->backing_file[0] == '/')
		snprintf(ppath, sizeof(ppath), "%s", o->backing_file);
	else
		snprintf(ppath, sizeof(ppath), "%s/%s", dir, o->backing_file);
	if (!realpath(ppath, p->abs))
		return vd_seterr(err, -errno, "parent '%s': %s", ppath, strerror(errno));
	struct vdisk *b;
	struct vdisk_open_opts bo = { .format = "vpc", .flags = VDISK_OPEN_NO_BACKING };
	int r = vdisk_open(&b, p->abs, &bo, err);
	if (r < 0)
		return r;
	struct vhd *pv = VHD(b);
	memcpy(p->uuid, pv->footer + VF_UUID, 16);
	g->size = b->size;
	g->cyls = vd_be16(pv->footer + VF_CYLS);
	g->heads = pv->footer[VF_HEADS];
	g->secs = pv->footer[VF_SECS];
	g->app = pv->size_from_chs ? "qemu" : "qem2";
	struct stat st;
	p->ts = fstat(b->fd, &st) == 0 && st.st_mtime > (time_t)VHD_EPOCH
	        ? (uint32_t)(st.st_mtime - VHD_EPOCH) : 0;
	vdisk_close(b);
	if (o->size && o->size != g->size)
		return vd_seterr(err, -EINVAL, "a differencing VHD has its parent's size (%llu), "
		                 "not %llu", (unsigned long long)g->size, (unsigned long long)o->size);
	const char *base = strrchr(p->abs, '/');
	snprintf(p->name, sizeof(p->name), "%s", base ? base + 1 : p->abs);
	if (o->backing_file[0] != '/')
		snprintf(p->w2ru, sizeof(p->w2ru), "%s", o->backing_file);
	else
		relpath(dir, p->abs, p->w2ru, sizeof(p->w2ru));
	return 0;
}

int vhd_create(const char *path, const struct vdisk_create_opts *o, struct vdisk_error *err)
{
	bool fixed = false;
	if (o->subformat && !strcmp(o->subformat, "fixed"))
		fixed = true;
	else if (o->subformat && strcmp(o->subformat, "dynamic"))
		return vd_seterr(err, -EINVAL, "VHD subformat '%s' unknown (dynamic or fixed)",
		                 o->subformat);
	if (o->prealloc != VDISK_PREALLOC_OFF)
		return vd_seterr(err, -EINVAL, "VHD has no preallocation option (subformat=fixed "
		                 "allocates everything)");
	struct geo g;
	struct parent par;
	int r;
	if (o->backing_file) {
		if (fixed)
			return vd_seterr(err, -EINVAL, "a differencing VHD cannot be fixed");
		if ((r = parent_info(path, o, &g, &par, err)) < 0)
			return r;
	} else if ((r = size_geometry(o->size, o->force_size, &g, err)) < 0) {
		return r;
	}
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return vd_seterr(err, -errno, "could not create '%s': %s", path, strerror(errno));
	r = fixed ? create_fixed(fd, &g) : create_dynamic(fd, &g, o->backing_file ? &par : NULL);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r < 0)
		return vd_seterr(err, r, "create '%s': %s", path, strerror(-r));
	return 0;
}
