/* SPDX-License-Identifier: MIT */
/* qcow2 header: parse and validate, serialise, feature bits. */
#include "qcow2.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#define HDR_V2_LEN 72
#define HDR_V3_LEN 104

void qcow2_free_exts(struct qcow2 *q)
{
	while (q->exts) {
		struct qcow2_ext *n = q->exts->next;
		free(q->exts->data);
		free(q->exts);
		q->exts = n;
	}
}

/* Refuse names that are not plain file paths: json: pseudo-protocol and
 * any "proto:" prefix before the first slash. */
int qcow2_backing_name_ok(const char *name, char *why, size_t whylen)
{
	if (!*name) {
		snprintf(why, whylen, "empty backing file name");
		return -EINVAL;
	}
	if (!strncmp(name, "json:", 5)) {
		snprintf(why, whylen, "backing file name '%s' is a json: specification", name);
		return -EPERM;
	}
	const char *colon = strchr(name, ':');
	const char *slash = strchr(name, '/');
	if (colon && (!slash || colon < slash)) {
		bool proto = colon > name;
		for (const char *p = name; p < colon; p++)
			if (!isalnum((unsigned char)*p) && *p != '+' && *p != '-' && *p != '.' && *p != '_')
				proto = false;
		if (proto) {
			snprintf(why, whylen, "backing file name '%s' has a protocol prefix", name);
			return -EPERM;
		}
	}
	return 0;
}

static void feature_name(const uint8_t *c0, uint64_t ftab_off, uint32_t ftab_len,
                         int type, int bit, char *out, size_t outlen)
{
	snprintf(out, outlen, "unknown feature bit %d", bit);
	for (uint32_t i = 0; ftab_off && i + 48 <= ftab_len; i += 48) {
		const uint8_t *e = c0 + ftab_off + i;
		if (e[0] == type && e[1] == bit) {
			char nm[47];
			memcpy(nm, e + 2, 46);
			nm[46] = 0;
			snprintf(out, outlen, "'%s' (bit %d)", nm, bit);
			return;
		}
	}
}

int qcow2_read_header(struct vdisk *d, struct qcow2 *q, const uint8_t *h,
                      uint64_t fsize, bool allow_data_file)
{
	const char *p = d->path;
	if (vd_be32(h) != QCOW2_MAGIC)
		return vd_err(d, -EINVAL, "'%s' is not a qcow2 image (bad magic)", p);
	q->version = vd_be32(h + 4);
	if (q->version != 2 && q->version != 3)
		return vd_err(d, -ENOTSUP, "'%s': unsupported qcow2 version %u", p, q->version);
	q->backing_off = vd_be64(h + 8);
	q->backing_len = vd_be32(h + 16);
	q->cluster_bits = vd_be32(h + 20);
	if (q->cluster_bits < 9 || q->cluster_bits > 21)
		return vd_err(d, -EINVAL, "'%s': cluster size 2^%u outside 512 B..2 MiB", p,
		              q->cluster_bits);
	q->cluster_size = 1u << q->cluster_bits;
	d->size = vd_be64(h + 24);
	q->crypt_method = vd_be32(h + 32);
	q->l1_size = vd_be32(h + 36);
	q->l1_offset = vd_be64(h + 40);
	q->reftable_offset = vd_be64(h + 48);
	q->reftable_clusters = vd_be32(h + 56);
	q->nb_snaps = vd_be32(h + 60);
	q->snap_offset = vd_be64(h + 64);
	uint64_t cs = q->cluster_size;

	if (q->version == 2) {
		q->refcount_order = 4;
		q->header_length = HDR_V2_LEN;
	} else {
		q->incompat = vd_be64(h + 72);
		q->compat = vd_be64(h + 80);
		q->autoclear = vd_be64(h + 88);
		q->refcount_order = vd_be32(h + 96);
		q->header_length = vd_be32(h + 100);
		if (q->header_length < HDR_V3_LEN || q->header_length % 8)
			return vd_err(d, -EINVAL, "'%s': invalid header_length %u (must be >= 104 and a "
			              "multiple of 8)", p, q->header_length);
		if (q->header_length > cs)
			return vd_err(d, -EINVAL, "'%s': header_length %u exceeds the cluster size %llu",
			              p, q->header_length, (unsigned long long)cs);
		if (q->header_length > HDR_V3_LEN)
			q->compression_type = h[104];
	}
	if (q->refcount_order > 6)
		return vd_err(d, -EINVAL, "'%s': refcount_order %u too large (max 6 = 64 bits)", p,
		              q->refcount_order);
	q->refcount_bits = 1u << q->refcount_order;
	q->rb_bits = q->cluster_bits + 3 - q->refcount_order;

	/* header extensions: scan first, so feature names are known */
	uint64_t ftab_off = 0;
	uint32_t ftab_len = 0;
	uint64_t ext_end = q->backing_off && q->backing_off < cs ? q->backing_off : cs;
	uint64_t off = q->header_length;
	for (;;) {
		if (off + 8 > ext_end) {
			if (off == ext_end)
				break; /* qemu tolerates a missing end marker exactly at the end */
			return vd_err(d, -EINVAL, "'%s': header extension at %llu crosses the end of "
			              "the header area", p, (unsigned long long)off);
		}
		uint32_t type = vd_be32(h + off), len = vd_be32(h + off + 4);
		if (type == QCOW2_EXT_END)
			break;
		if (len > ext_end - off - 8)
			return vd_err(d, -EINVAL, "'%s': header extension %#x at %llu has length %u "
			              "beyond the header cluster", p, type,
			              (unsigned long long)off, len);
		const uint8_t *data = h + off + 8;
		switch (type) {
		case QCOW2_EXT_BACKING_FMT:
			if (len > 63)
				return vd_err(d, -EINVAL, "'%s': backing format name too long (%u)", p, len);
			q->backing_fmt = strndup((const char *)data, len);
			if (!q->backing_fmt)
				return -ENOMEM;
			break;
		case QCOW2_EXT_FEATURES:
			ftab_off = off + 8;
			ftab_len = len;
			break;
		case QCOW2_EXT_CRYPTO:
			return vd_err(d, -ENOTSUP, "'%s': encrypted qcow2 images are not supported", p);
		case QCOW2_EXT_DATA_FILE:
			if (!allow_data_file)
				return vd_err(d, -EPERM, "'%s': refusing an external data file reference", p);
			return vd_err(d, -ENOTSUP, "'%s': external data files are not supported", p);
		default:
			break;
		}
		if (type != QCOW2_EXT_BACKING_FMT && type != QCOW2_EXT_FEATURES) {
			/* preserved as-is (bitmaps included, autoclear cleared on rw open) */
			struct qcow2_ext *e = calloc(1, sizeof(*e)), **tail = &q->exts;
			if (!e || !(e->data = malloc(len ? len : 1))) {
				free(e);
				return -ENOMEM;
			}
			e->type = type;
			e->len = len;
			memcpy(e->data, data, len);
			while (*tail)
				tail = &(*tail)->next;
			*tail = e;
		}
		off += 8 + VD_ALIGN_UP((uint64_t)len, 8);
	}

	uint64_t unknown = q->incompat & ~QCOW2_INCOMPAT_KNOWN;
	if (unknown) {
		char names[300] = "";
		for (int b = 0; b < 64; b++) {
			if (!(unknown >> b & 1))
				continue;
			char nm[80];
			feature_name(h, ftab_off, ftab_len, 0, b, nm, sizeof(nm));
			size_t l = strlen(names);
			snprintf(names + l, sizeof(names) - l, "%s%s", l ? ", " : "", nm);
		}
		return vd_err(d, -ENOTSUP, "'%s': unsupported incompatible qcow2 feature(s): %s", p, names);
	}
	if (q->incompat & QCOW2_INCOMPAT_DATA_FILE)
		return vd_err(d, allow_data_file ? -ENOTSUP : -EPERM,
		              "'%s': image uses an external data file (refused)", p);
	if (q->crypt_method)
		return vd_err(d, -ENOTSUP, "'%s': encrypted qcow2 images are not supported", p);
	if (q->compression_type > 1)
		return vd_err(d, -ENOTSUP, "'%s': unknown compression type %u", p, q->compression_type);
	if (q->compression_type && !(q->incompat & QCOW2_INCOMPAT_COMPRESSION))
		return vd_err(d, -EINVAL, "'%s': compression type %u set without the "
		              "compression-type incompatible bit", p, q->compression_type);
	q->ext_l2 = q->incompat & QCOW2_INCOMPAT_EXTL2;
	if (q->ext_l2 && q->cluster_bits < 14)
		return vd_err(d, -EINVAL, "'%s': extended L2 entries need clusters of at least 16 KiB", p);
	q->l2_entry_size = q->ext_l2 ? 16 : 8;
	q->l2_bits = q->cluster_bits - (q->ext_l2 ? 4 : 3);
	q->sc_bits = q->ext_l2 ? q->cluster_bits - 5 : q->cluster_bits;

	/* backing file */
	if (q->backing_off) {
		if (q->backing_len > QCOW2_MAX_BACKING_NAME || q->backing_len == 0)
			return vd_err(d, -EINVAL, "'%s': backing file name length %u invalid (1..%u)", p,
			              q->backing_len, QCOW2_MAX_BACKING_NAME);
		if (q->backing_off > cs || q->backing_len > cs - q->backing_off)
			return vd_err(d, -EINVAL, "'%s': backing file name at %llu+%u lies outside the "
			              "header cluster", p, (unsigned long long)q->backing_off,
			              q->backing_len);
		q->backing_name = strndup((const char *)h + q->backing_off, q->backing_len);
		if (!q->backing_name)
			return -ENOMEM;
		if (strlen(q->backing_name) != q->backing_len)
			return vd_err(d, -EINVAL, "'%s': backing file name contains a NUL byte", p);
	}

	/* size and tables */
	uint64_t l2_cover = cs << q->l2_bits;
	if (d->size > (1ull << 62))
		return vd_err(d, -EINVAL, "'%s': virtual size %llu too large", p,
		              (unsigned long long)d->size);
	if ((uint64_t)q->l1_size * 8 > QCOW2_MAX_L1_BYTES)
		return vd_err(d, -EFBIG, "'%s': L1 table too large (%u entries, max %u)", p,
		              q->l1_size, QCOW2_MAX_L1_BYTES / 8);
	if (VD_DIV_UP(d->size, l2_cover) > q->l1_size)
		return vd_err(d, -EINVAL, "'%s': L1 table too small (%u entries) for virtual size %llu",
		              p, q->l1_size, (unsigned long long)d->size);
	if (q->l1_offset % cs)
		return vd_err(d, -EINVAL, "'%s': L1 table offset %#llx not cluster-aligned", p,
		              (unsigned long long)q->l1_offset);
	if (q->l1_size && (q->l1_offset < cs || q->l1_offset > fsize ||
	                   (uint64_t)q->l1_size * 8 > fsize - q->l1_offset))
		return vd_err(d, -EINVAL, "'%s': L1 table at %#llx (%u entries) lies outside the file",
		              p, (unsigned long long)q->l1_offset, q->l1_size);
	if (q->reftable_offset % cs)
		return vd_err(d, -EINVAL, "'%s': refcount table offset %#llx not cluster-aligned", p,
		              (unsigned long long)q->reftable_offset);
	if (!q->reftable_clusters || (uint64_t)q->reftable_clusters * cs > QCOW2_MAX_REFTABLE_BYTES)
		return vd_err(d, -EINVAL, "'%s': refcount table size of %u clusters invalid (max %u bytes)",
		              p, q->reftable_clusters, QCOW2_MAX_REFTABLE_BYTES);
	if (q->reftable_offset < cs || q->reftable_offset > fsize ||
	    (uint64_t)q->reftable_clusters * cs > fsize - q->reftable_offset + cs - 1)
		return vd_err(d, -EINVAL, "'%s': refcount table at %#llx (%u clusters) lies outside the file",
		              p, (unsigned long long)q->reftable_offset, q->reftable_clusters);
	if (q->nb_snaps > QCOW2_MAX_SNAPSHOTS)
		return vd_err(d, -EINVAL, "'%s': too many snapshots (%u)", p, q->nb_snaps);
	if (q->nb_snaps && (q->snap_offset % cs || q->snap_offset < cs || q->snap_offset >= fsize))
		return vd_err(d, -EINVAL, "'%s': snapshot table offset %#llx invalid", p,
		              (unsigned long long)q->snap_offset);
	if (q->l1_size && q->reftable_offset < q->l1_offset + (uint64_t)q->l1_size * 8 &&
	    q->l1_offset < q->reftable_offset + (uint64_t)q->reftable_clusters * cs)
		return vd_err(d, -EINVAL, "'%s': L1 table and refcount table overlap", p);
	return 0;
}

static uint8_t *put_ext(uint8_t *p, uint32_t type, const void *data, uint32_t len)
{
	vd_put_be32(p, type);
	vd_put_be32(p + 4, len);
	memcpy(p + 8, data, len);
	memset(p + 8 + len, 0, VD_ALIGN_UP(len, 8) - len);
	return p + 8 + VD_ALIGN_UP(len, 8);
}

static const struct { uint8_t type, bit; const char *name; } feat_names[] = {
	{ 0, 0, "dirty bit" }, { 0, 1, "corrupt bit" }, { 0, 2, "external data file" },
	{ 0, 3, "compression type" }, { 0, 4, "extended L2 entries" },
	{ 1, 0, "lazy refcounts" }, { 2, 0, "bitmaps" }, { 2, 1, "raw external data" },
};

/* Serialise the whole header cluster. */
int qcow2_write_header(struct vdisk *d, struct qcow2 *q)
{
	uint64_t cs = q->cluster_size;
	uint8_t *h = calloc(1, cs);
	if (!h)
		return -ENOMEM;
	vd_put_be32(h, QCOW2_MAGIC);
	vd_put_be32(h + 4, q->version);
	vd_put_be32(h + 20, q->cluster_bits);
	vd_put_be64(h + 24, d->size);
	vd_put_be32(h + 36, q->l1_size);
	vd_put_be64(h + 40, q->l1_offset);
	vd_put_be64(h + 48, q->reftable_offset);
	vd_put_be32(h + 56, q->reftable_clusters);
	vd_put_be32(h + 60, q->nb_snaps);
	vd_put_be64(h + 64, q->snap_offset);
	uint8_t *p = h + HDR_V2_LEN;
	if (q->version >= 3) {
		vd_put_be64(h + 72, q->incompat);
		vd_put_be64(h + 80, q->compat);
		vd_put_be64(h + 88, q->autoclear);
		vd_put_be32(h + 96, q->refcount_order);
		vd_put_be32(h + 100, 112);
		h[104] = q->compression_type;
		p = h + 112;
		q->header_length = 112;
	}
	uint8_t *end = h + cs;
	size_t nfeat = sizeof(feat_names) / sizeof(feat_names[0]);
	size_t need = 8 + 64 + 8 + (q->backing_name ? strlen(q->backing_name) : 0);
	for (struct qcow2_ext *e = q->exts; e; e = e->next)
		need += 8 + VD_ALIGN_UP(e->len, 8);
	if ((size_t)(end - p) < need) {
		free(h);
		return vd_err(d, -ENOSPC, "header extensions and backing name do not fit in one cluster");
	}
	/* the feature-name table is optional: only when it fits */
	bool feat = q->version >= 3 && (size_t)(end - p) >= need + 8 + nfeat * 48;
	if (q->backing_fmt)
		p = put_ext(p, QCOW2_EXT_BACKING_FMT, q->backing_fmt, (uint32_t)strlen(q->backing_fmt));
	if (feat) {
		vd_put_be32(p, QCOW2_EXT_FEATURES);
		vd_put_be32(p + 4, (uint32_t)(nfeat * 48));
		for (size_t i = 0; i < nfeat; i++) {
			uint8_t *e = p + 8 + i * 48;
			e[0] = feat_names[i].type;
			e[1] = feat_names[i].bit;
			strncpy((char *)e + 2, feat_names[i].name, 46);
		}
		p += 8 + nfeat * 48;
	}
	for (struct qcow2_ext *e = q->exts; e; e = e->next)
		p = put_ext(p, e->type, e->data, e->len);
	memset(p, 0, 8); /* end */
	p += 8;
	if (q->backing_name) {
		size_t l = strlen(q->backing_name);
		memcpy(p, q->backing_name, l);
		q->backing_off = (uint64_t)(p - h);
		q->backing_len = (uint32_t)l;
	} else {
		q->backing_off = 0;
		q->backing_len = 0;
	}
	vd_put_be64(h + 8, q->backing_off);
	vd_put_be32(h + 16, q->backing_len);
	int r = vd_pwrite_full(d->fd, h, cs, 0);
	free(h);
	if (r < 0)
		return vd_err(d, r, "writing the qcow2 header: %s", strerror(-r));
	return 0;
}

/* Update the incompatible-feature field in place and sync. */
int qcow2_update_incompat(struct vdisk *d, struct qcow2 *q, uint64_t set, uint64_t clear)
{
	if (q->version < 3)
		return 0;
	uint64_t v = (q->incompat | set) & ~clear;
	uint8_t b[8];
	vd_put_be64(b, v);
	int r = vd_fdatasync(d->fd);
	if (r == 0)
		r = vd_pwrite_full(d->fd, b, 8, 72);
	if (r == 0)
		r = vd_fdatasync(d->fd);
	if (r < 0)
		return vd_err(d, r, "updating the qcow2 feature bits: %s", strerror(-r));
	q->incompat = v;
	return 0;
}
