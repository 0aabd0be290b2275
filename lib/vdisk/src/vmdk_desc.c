/* SPDX-License-Identifier: MIT */
/* VMDK descriptors: parsing the text (header keys, extent lines, the disk
 * database), opening extent files confined to the image's folder, and the
 * text of new images. */
#include "vmdk.h"

#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *skip_ws(const char *p, const char *e)
{
	while (p < e && (*p == ' ' || *p == '\t'))
		p++;
	return p;
}

static bool word_is(const char *p, const char *e, const char *w)
{
	size_t n = strlen(w);
	return (size_t)(e - p) >= n && !memcmp(p, w, n) &&
	       ((size_t)(e - p) == n || p[n] == ' ' || p[n] == '\t');
}

/* A decimal number; returns the end or NULL. */
static const char *parse_u64(const char *p, const char *e, uint64_t *v)
{
	uint64_t x = 0;
	const char *s = p;
	while (p < e && isdigit((unsigned char)*p)) {
		unsigned dgt = (unsigned)(*p - '0');
		if (x > (UINT64_MAX - dgt) / 10)
			return NULL;
		x = x * 10 + dgt;
		p++;
	}
	if (p == s)
		return NULL;
	*v = x;
	return p;
}

/* Copy value of `key=value` or `key = "value"` into out. */
static void copy_value(const char *p, const char *e, char *out, size_t cap)
{
	p = skip_ws(p, e);
	while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		e--;
	if (e - p >= 2 && *p == '"' && e[-1] == '"') {
		p++;
		e--;
	}
	size_t n = VD_MIN((size_t)(e - p), cap - 1);
	memcpy(out, p, n);
	out[n] = 0;
}

static int bad_line(struct vdisk *d, unsigned line, const char *why, const char *p, const char *e)
{
	int n = (int)VD_MIN(e - p, 80);
	return vd_err(d, -EINVAL, "vmdk descriptor of '%s', line %u: %s: '%.*s'",
	              d->path, line, why, n, p);
}

static int parse_extent(struct vdisk *d, unsigned line, const char *p, const char *e,
                        struct vmdk_extent *x)
{
	const char *l0 = p;
	memset(x, 0, sizeof(*x));
	x->fd = -1;
	if (word_is(p, e, "RW")) {
		x->access = VMDK_RW;
		p += 2;
	} else if (word_is(p, e, "RDONLY")) {
		x->access = VMDK_RDONLY;
		p += 6;
	} else {
		x->access = VMDK_NOACCESS;
		p += 8;
	}
	p = skip_ws(p, e);
	if (!(p = parse_u64(p, e, &x->sectors)) || (p < e && *p != ' ' && *p != '\t'))
		return bad_line(d, line, "extent size is not a number of sectors", l0, e);
	if (!x->sectors || x->sectors > VMDK_MAX_SECTORS)
		return bad_line(d, line, "extent size out of range", l0, e);
	p = skip_ws(p, e);
	const char *t = p;
	while (p < e && *p != ' ' && *p != '\t')
		p++;
	size_t tl = (size_t)(p - t);
	if (tl == 4 && !memcmp(t, "FLAT", 4))
		x->type = VMDK_EXT_FLAT;
	else if (tl == 4 && !memcmp(t, "VMFS", 4))
		x->type = VMDK_EXT_FLAT;
	else if (tl == 6 && !memcmp(t, "SPARSE", 6))
		x->type = VMDK_EXT_SPARSE;
	else if (tl == 4 && !memcmp(t, "ZERO", 4))
		x->type = VMDK_EXT_ZERO;
	else if (!tl)
		return bad_line(d, line, "extent line has no type", l0, e);
	else
		return vd_err(d, -ENOTSUP, "vmdk descriptor of '%s', line %u: extent type '%.*s' "
		              "is not supported (FLAT, VMFS, SPARSE and ZERO are)",
		              d->path, line, (int)VD_MIN(tl, 32), t);
	p = skip_ws(p, e);
	if (x->type == VMDK_EXT_ZERO) {
		if (p < e)
			return bad_line(d, line, "a ZERO extent takes no file name", l0, e);
		return 0;
	}
	if (p >= e || *p != '"')
		return bad_line(d, line, "extent file name must be in double quotes", l0, e);
	const char *n0 = ++p;
	while (p < e && *p != '"')
		p++;
	if (p >= e)
		return bad_line(d, line, "extent file name has no closing quote", l0, e);
	if (p == n0)
		return bad_line(d, line, "extent file name is empty", l0, e);
	x->file = strndup(n0, (size_t)(p - n0));
	if (!x->file)
		return vd_err(d, -ENOMEM, "out of memory");
	p = skip_ws(p + 1, e);
	if (p < e) {
		if (x->type != VMDK_EXT_FLAT)
			return bad_line(d, line, "only FLAT extents take an offset", l0, e);
		if (!(p = parse_u64(p, e, &x->flat_offset)) || skip_ws(p, e) != e)
			return bad_line(d, line, "extent offset is not a number of sectors", l0, e);
		if (x->flat_offset > VMDK_MAX_SECTORS)
			return bad_line(d, line, "extent offset out of range", l0, e);
	}
	return 0;
}

int vmdk_desc_parse(struct vdisk *d, const char *text, size_t len, struct vmdk_desc *out)
{
	memset(out, 0, sizeof(*out));
	out->parent_cid = UINT32_MAX;
	snprintf(out->create_type, sizeof(out->create_type), "monolithicSparse");
	const char *p = text, *end = text + len;
	unsigned line = 0, cap = 0;
	uint64_t total = 0;
	int r = 0;
	while (p < end && !r) {
		const char *e = memchr(p, '\n', (size_t)(end - p));
		if (!e)
			e = end;
		const char *next = e < end ? e + 1 : end;
		line++;
		if (memchr(p, 0, (size_t)(e - p))) {
			/* the embedded descriptor area ends with NULs */
			const char *z = memchr(p, 0, (size_t)(e - p));
			e = z;
			next = end;
		}
		while (e > p && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
			e--;
		const char *s = skip_ws(p, e);
		p = next;
		if (s == e || *s == '#')
			continue;
		if (word_is(s, e, "RW") || word_is(s, e, "RDONLY") || word_is(s, e, "NOACCESS")) {
			if (out->n_ext >= VMDK_MAX_EXTENTS) {
				r = vd_err(d, -EINVAL, "vmdk descriptor of '%s' has more than %u extents",
				           d->path, VMDK_MAX_EXTENTS);
				break;
			}
			if (out->n_ext == cap) {
				unsigned nc = cap ? cap * 2 : 4;
				void *n = realloc(out->ext, nc * sizeof(*out->ext));
				if (!n) {
					r = vd_err(d, -ENOMEM, "out of memory");
					break;
				}
				out->ext = n;
				cap = nc;
			}
			struct vmdk_extent *x = &out->ext[out->n_ext];
			r = parse_extent(d, line, s, e, x);
			if (r < 0) {
				free(x->file);
				break;
			}
			x->start = total * VMDK_SECTOR;
			total += x->sectors;
			out->n_ext++;
			if (total > VMDK_MAX_SECTORS)
				r = vd_err(d, -EINVAL, "vmdk descriptor of '%s': extents add up to more "
				           "than %llu sectors", d->path, (unsigned long long)VMDK_MAX_SECTORS);
			continue;
		}
		const char *eq = memchr(s, '=', (size_t)(e - s));
		if (!eq) {
			r = bad_line(d, line, "neither an extent nor a key=value line", s, e);
			break;
		}
		const char *k = s, *ke = eq;
		while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
			ke--;
		size_t kl = (size_t)(ke - k);
		char val[128];
		copy_value(eq + 1, e, val, sizeof(val));
#define KEY(str) (kl == strlen(str) && !memcmp(k, str, kl))
		if (KEY("version")) {
			out->version = atoi(val);
		} else if (KEY("CID") || KEY("parentCID")) {
			char *ep;
			errno = 0;
			unsigned long v = strtoul(val, &ep, 16);
			if (errno || *ep || ep == val || v > UINT32_MAX) {
				r = bad_line(d, line, "CID is not a 32-bit hexadecimal number", s, e);
				break;
			}
			if (KEY("CID"))
				out->cid = (uint32_t)v;
			else
				out->parent_cid = (uint32_t)v;
		} else if (KEY("createType")) {
			copy_value(eq + 1, e, out->create_type, sizeof(out->create_type));
		} else if (KEY("ddb.adapterType")) {
			copy_value(eq + 1, e, out->adapter_type, sizeof(out->adapter_type));
		} else if (KEY("ddb.virtualHWVersion")) {
			copy_value(eq + 1, e, out->hwversion, sizeof(out->hwversion));
		} else if (KEY("parentFileNameHint")) {
			copy_value(eq + 1, e, out->parent_hint, sizeof(out->parent_hint));
		}
#undef KEY
	}
	if (!r && !out->n_ext)
		r = vd_err(d, -EINVAL, "vmdk descriptor of '%s' has no extent lines", d->path);
	if (!r && out->parent_cid != UINT32_MAX && !out->parent_hint[0])
		r = vd_err(d, -EINVAL, "vmdk image '%s' has a parent image (parentCID %08x) but no "
		           "parentFileNameHint naming it", d->path, out->parent_cid);
	if (!r && !strcmp(out->create_type, "vmfsSparse"))
		r = vd_err(d, -ENOTSUP, "vmdk image '%s': createType vmfsSparse (COWD) is not supported",
		           d->path);
	if (r < 0)
		vmdk_desc_free(out);
	return r;
}

void vmdk_desc_free(struct vmdk_desc *desc)
{
	for (unsigned i = 0; i < desc->n_ext; i++)
		free(desc->ext[i].file);
	free(desc->ext);
	desc->ext = NULL;
	desc->n_ext = 0;
}

static bool name_ok(const char *n)
{
	return *n && !strchr(n, '/') && strcmp(n, ".") && strcmp(n, "..");
}

int vmdk_open_extent_file(struct vdisk *d, const char *desc_path, const char *name,
                          bool rw, int *fd)
{
	if (name[0] == '/')
		return vd_err(d, -EACCES, "vmdk extent '%s' of '%s' is an absolute path; extents must "
		              "lie in the image's own folder", name, desc_path);
	if (strstr(name, ".."))
		return vd_err(d, -EACCES, "vmdk extent '%s' of '%s' contains '..'; extents must "
		              "lie in the image's own folder", name, desc_path);
	if (!name_ok(name))
		return vd_err(d, -EACCES, "vmdk extent '%s' of '%s' names a subfolder; extents must "
		              "lie in the image's own folder", name, desc_path);
	char *dup = strdup(desc_path);
	if (!dup)
		return vd_err(d, -ENOMEM, "out of memory");
	int dfd = open(dirname(dup), O_PATH | O_DIRECTORY | O_CLOEXEC);
	free(dup);
	if (dfd < 0)
		return vd_err(d, -errno, "vmdk: cannot open the folder of '%s': %s", desc_path,
		              strerror(errno));
	uint64_t fl = (uint64_t)(rw ? O_RDWR : O_RDONLY) | O_CLOEXEC;
	if (d->open_flags & VDISK_OPEN_DIRECT)
		fl |= O_DIRECT;
	struct open_how how = { .flags = fl, .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
	long f = syscall(SYS_openat2, dfd, name, &how, sizeof(how));
	if (f < 0 && errno == ENOSYS)
		f = openat(dfd, name, (int)fl | O_NOFOLLOW);
	int e = errno;
	close(dfd);
	if (f < 0) {
		if (e == EXDEV || e == ELOOP)
			return vd_err(d, -EACCES, "vmdk extent '%s' of '%s' resolves outside the image's "
			              "folder", name, desc_path);
		return vd_err(d, -e, "vmdk: cannot open extent '%s' of '%s': %s", name, desc_path,
		              strerror(e));
	}
	*fd = (int)f;
	return 0;
}

char *vmdk_desc_format(uint32_t cid, uint32_t parent_cid, const char *parent_hint,
                       const char *create_type, const struct vmdk_extent *ext, unsigned n,
                       uint64_t total_sectors, const char *adapter,
                       const char *hwversion, const char *toolsversion)
{
	size_t cap = 1024 + (size_t)n * 300 + (parent_hint ? strlen(parent_hint) + 40 : 0);
	char *s = malloc(cap);
	if (!s)
		return NULL;
	size_t o = (size_t)snprintf(s, cap,
		"# Disk DescriptorFile\nversion=1\nCID=%08" PRIx32 "\nparentCID=%08" PRIx32 "\n"
		"createType=\"%s\"\n", cid, parent_cid, create_type);
	if (parent_hint)
		o += (size_t)snprintf(s + o, cap - o, "parentFileNameHint=\"%s\"\n", parent_hint);
	o += (size_t)snprintf(s + o, cap - o, "\n# Extent description\n");
	for (unsigned i = 0; i < n && o < cap; i++) {
		const struct vmdk_extent *x = &ext[i];
		if (x->type == VMDK_EXT_FLAT)
			o += (size_t)snprintf(s + o, cap - o, "RW %" PRIu64 " FLAT \"%s\" %" PRIu64 "\n",
			                      x->sectors, x->file, x->flat_offset);
		else
			o += (size_t)snprintf(s + o, cap - o, "RW %" PRIu64 " SPARSE \"%s\"\n",
			                      x->sectors, x->file);
	}
	/* CHS as BIOSes see it: 16 heads for IDE, 255 for SCSI */
	unsigned heads = strcmp(adapter, "ide") ? 255 : 16;
	uint64_t cyl = total_sectors / (heads * 63ull);
	if (cyl > 16383)
		cyl = 16383;
	if (o < cap)
		o += (size_t)snprintf(s + o, cap - o,
			"\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"%s\"\n"
			"ddb.geometry.cylinders = \"%" PRIu64 "\"\nddb.geometry.heads = \"%u\"\n"
			"ddb.geometry.sectors = \"63\"\nddb.adapterType = \"%s\"\n"
			"ddb.toolsVersion = \"%s\"\n",
			hwversion, cyl, heads, adapter, toolsversion);
	if (o >= cap) {
		free(s);
		return NULL;
	}
	return s;
}
