/* SPDX-License-Identifier: MIT */
/* qcow2 backing file: open the file a name refers to, change the reference. */
#include "qcow2.h"

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>

/* Open `name` (relative names against the image's folder) read-only as the
 * backing file of d, in format fmt (NULL: probe). */
int qcow2_open_backing(struct vdisk *d, const char *name, const char *fmt,
                       const struct vdisk_open_opts *o, struct vdisk **out)
{
	char why[1200];
	int r = qcow2_backing_name_ok(name, why, sizeof(why));
	if (r < 0)
		return vd_err(d, r, "'%s': %s (refused)", d->path, why);
	char *path;
	if (name[0] == '/') {
		path = strdup(name);
	} else {
		char *dup = strdup(d->path);
		if (!dup)
			return vd_err(d, -ENOMEM, "out of memory");
		const char *dir = dirname(dup);
		size_t n = strlen(dir) + strlen(name) + 2;
		path = malloc(n);
		if (path)
			snprintf(path, n, "%s/%s", dir, name);
		free(dup);
	}
	if (!path)
		return vd_err(d, -ENOMEM, "out of memory");
	struct vdisk_open_opts bo = {
		.flags = o ? (o->flags & (VDISK_OPEN_DIRECT | VDISK_OPEN_NO_LOCK)) : 0,
		.format = fmt,
		.l2_cache_bytes = o ? o->l2_cache_bytes : 0,
		.l2_slice_bytes = o ? o->l2_slice_bytes : 0,
	};
	if (!bo.format)
		bo.flags |= VDISK_OPEN_PROBE;
	struct vdisk_error err;
	r = vd_open_internal(out, path, &bo, d->depth + 1, &err);
	if (r < 0)
		r = vd_err(d, r, "'%s': opening backing file '%s': %s", d->path, path, err.msg);
	free(path);
	return r;
}

static void swap_names(struct qcow2 *q, char **name, char **fmt)
{
	char *n = q->backing_name, *f = q->backing_fmt;
	q->backing_name = *name;
	q->backing_fmt = *fmt;
	*name = n;
	*fmt = f;
}

/* Point the image at another backing file (name NULL: none). The new file
 * is opened first, so a name that does not resolve changes nothing; data
 * and metadata written so far reach the disk before the header does (a safe
 * rebase copies clusters first: they must be durable before the reference
 * changes). The header cluster is rewritten whole, unknown extensions kept. */
int qcow2_set_backing(struct vdisk *d, const char *name, const char *fmt)
{
	struct qcow2 *q = Q(d);
	if (q->broken)
		return vd_err(d, -EIO, "'%s' is corrupt; changing its backing file refused", d->path);
	if (name && strlen(name) > QCOW2_MAX_BACKING_NAME)
		return vd_err(d, -ENAMETOOLONG, "backing file name of %zu bytes is too long (max %u)",
		              strlen(name), QCOW2_MAX_BACKING_NAME);
	if (fmt && strlen(fmt) > 63)
		return vd_err(d, -EINVAL, "backing format name '%s' is too long (max 63)", fmt);
	if (name) {
		char why[1200];
		int r = qcow2_backing_name_ok(name, why, sizeof(why));
		if (r < 0)
			return vd_err(d, r, "%s (refused)", why);
	}
	struct vdisk *nb = NULL;
	int r;
	if (name && !(d->open_flags & VDISK_OPEN_NO_BACKING)) {
		struct vdisk_open_opts o = { .flags = d->open_flags };
		if ((r = qcow2_open_backing(d, name, fmt, &o, &nb)) < 0)
			return r;
	}
	char *nn = name ? strdup(name) : NULL, *nf = fmt ? strdup(fmt) : NULL;
	if ((name && !nn) || (fmt && !nf)) {
		free(nn);
		free(nf);
		vdisk_close(nb);
		return vd_err(d, -ENOMEM, "out of memory");
	}
	pthread_mutex_lock(&q->lock);
	r = qcow2_meta_flush(d);
	if (r == 0) {
		swap_names(q, &nn, &nf); /* nn, nf now hold the old names */
		r = qcow2_write_header(d, q);
		if (r == 0 && (r = vd_fdatasync(d->fd)) < 0)
			r = vd_err(d, r, "syncing the new qcow2 header: %s", strerror(-r));
		if (r < 0) {
			/* put the old reference back, on disk too if we can */
			swap_names(q, &nn, &nf);
			if (qcow2_write_header(d, q) == 0)
				vd_fdatasync(d->fd);
		}
	}
	pthread_mutex_unlock(&q->lock);
	free(nn);
	free(nf);
	if (r < 0) {
		vdisk_close(nb);
		return r;
	}
	if (!(d->open_flags & VDISK_OPEN_NO_BACKING)) {
		vdisk_close(d->backing);
		d->backing = nb;
	}
	return 0;
}
