/* SPDX-License-Identifier: MIT */
/* rebase: point an image at another backing file. Safe mode (default)
 * first copies into the image every range it does not allocate itself and
 * where the old and the new backing file differ, so what the guest sees is
 * unchanged; -u only rewrites the reference. */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "img.h"

static const char usage[] =
	"usage: tern-img rebase [-f fmt] [-F backing_fmt] [-u] [-p] [-q] [-U] -b backing_file file\n"
	"  -b name  the new backing file, stored as given (relative names are\n"
	"           resolved against the image's folder); \"\" removes it\n"
	"  -F fmt   the new backing file's format (default: probed)\n"
	"  -u       unsafe: only rewrite the reference, copy nothing\n"
	"  -p       show progress\n";

#define STEP (4u << 20)

/* The path a backing name refers to, relative to the image's folder. */
static char *resolve(const char *image, const char *name)
{
	if (name[0] == '/')
		return strdup(name);
	char *dup = strdup(image);
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

struct rebase {
	struct vdisk *img, *nb;  /* nb NULL: the new backing reads zero */
	uint64_t size, gran;
	uint8_t *old, *new;
	bool progress;
};

static int fail(struct vdisk *d, const char *what)
{
	char m[VDISK_ERRMSG_MAX];
	img_error("%s: %s", what, vdisk_errmsg(d, m, sizeof(m)));
	return -1;
}

/* Read [off, off+len) of the new backing file (zeroes past its end). */
static int read_new(struct rebase *rb, uint64_t off, uint64_t len)
{
	uint64_t n = 0;
	if (rb->nb && off < vdisk_size(rb->nb))
		n = len < vdisk_size(rb->nb) - off ? len : vdisk_size(rb->nb) - off;
	if (n && vdisk_pread(rb->nb, rb->new, n, off) < 0)
		return fail(rb->nb, "reading the new backing file");
	memset(rb->new + n, 0, len - n);
	return 0;
}

/* One extent the image does not allocate: copy where the views differ. */
static int copy_differences(struct rebase *rb, uint64_t off, uint64_t len)
{
	if (vdisk_pread(rb->img, rb->old, len, off) < 0)
		return fail(rb->img, "reading through the old backing file");
	if (read_new(rb, off, len) < 0)
		return -1;
	uint64_t p = 0;
	while (p < len) {
		uint64_t g = rb->gran - (off + p) % rb->gran;
		if (g > len - p)
			g = len - p;
		if (!memcmp(rb->old + p, rb->new + p, g)) {
			p += g;
			continue;
		}
		/* extend over following differing granules: one write */
		uint64_t q = p + g;
		while (q < len) {
			uint64_t g2 = len - q < rb->gran ? len - q : rb->gran;
			if (!memcmp(rb->old + q, rb->new + q, g2))
				break;
			q += g2;
		}
		int r = vd_zero(rb->old + p, q - p)
		        ? vdisk_write_zeroes(rb->img, off + p, q - p, 0)
		        : vdisk_pwrite(rb->img, rb->old + p, q - p, off + p);
		if (r < 0)
			return fail(rb->img, "writing into the image");
		p = q;
	}
	return 0;
}

static int copy_all(struct rebase *rb)
{
	for (uint64_t off = 0; off < rb->size;) {
		uint64_t len = rb->size - off < STEP ? rb->size - off : STEP;
		struct vdisk_extent e;
		if (vdisk_block_status(rb->img, off, len, &e) < 0)
			return fail(rb->img, "block status");
		bool own = e.depth == 0 && (e.flags & VDISK_BS_ALLOCATED);
		if (!own && copy_differences(rb, off, e.length) < 0)
			return -1;
		off += e.length;
		if (rb->progress)
			img_progress(100.0 * (double)off / (double)rb->size);
	}
	return 0;
}

int img_rebase(int argc, char **argv)
{
	if (img_wants_help(argc, argv, usage))
		return 0;
	const char *fmt = NULL, *bfmt = NULL, *name = NULL;
	bool unsafe = false, progress = false;
	int c;
	optind = 1;
	while ((c = getopt(argc, argv, "f:F:b:upqt:T:U")) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'F': bfmt = optarg; break;
		case 'b': name = optarg; break;
		case 'u': unsafe = true; break;
		case 'p': progress = true; break;
		case 'q': progress = false; break;
		case 't': case 'T': case 'U': break;
		default: fputs(usage, stderr); return 1;
		}
	}
	if (optind != argc - 1) {
		fputs(usage, stderr);
		return 1;
	}
	if (!name) {
		img_error("rebase needs the new backing file: -b name (-b \"\" to remove it)");
		return 1;
	}
	const char *path = argv[optind];
	if (!*name && bfmt) {
		img_error("-F %s given without a backing file", bfmt);
		return 1;
	}
	struct vdisk *img = img_open(path, fmt, VDISK_OPEN_RDWR | (unsafe ? VDISK_OPEN_NO_BACKING : 0));
	if (!img)
		return 1;
	struct rebase rb = { .img = img, .size = vdisk_size(img), .progress = progress };
	char *npath = NULL, *probed = NULL;
	int rc = 1;
	if (!strcmp(vdisk_format(img), "raw")) {
		img_error("'%s' is opened as raw: a raw image has no backing file to change", path);
		goto out;
	}
	if (*name && !(npath = resolve(path, name))) {
		img_error("out of memory");
		goto out;
	}
	if (!unsafe && *name) {
		rb.nb = img_open(npath, bfmt, 0);
		if (!rb.nb) {
			img_error("Could not open the new backing file '%s'", npath);
			goto out;
		}
		if (!bfmt)
			bfmt = vdisk_format(rb.nb);
	} else if (*name && !bfmt) {
		/* unsafe: record the probed format if the file is there */
		struct vdisk_error err;
		const char *p = vdisk_probe(npath, &err);
		if (p)
			bfmt = probed = strdup(p);
		else
			fprintf(stderr, "tern-img: warning: %s; no backing format recorded\n", err.msg);
	}
	if (!unsafe) {
		uint32_t cs = vdisk_cluster_size(img);
		rb.gran = cs ? cs : 65536;
		rb.old = malloc(STEP);
		rb.new = malloc(STEP);
		if (!rb.old || !rb.new) {
			img_error("out of memory");
			goto out;
		}
		if (progress)
			img_progress(0);
		int r = copy_all(&rb);
		if (progress)
			printf("\n");
		if (r < 0)
			goto out;
	}
	if (vdisk_set_backing(img, name, bfmt) < 0) {
		char m[VDISK_ERRMSG_MAX];
		img_error("Could not change the backing file of '%s' to '%s': %s", path, name,
		          vdisk_errmsg(img, m, sizeof(m)));
		goto out;
	}
	rc = 0;
out:
	free(rb.old);
	free(rb.new);
	free(npath);
	free(probed);
	vdisk_close(rb.nb);
	if (vdisk_close(img) < 0 && rc == 0) {
		img_error("error while closing '%s'", path);
		rc = 1;
	}
	return rc;
}
