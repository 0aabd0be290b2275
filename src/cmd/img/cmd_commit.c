/* SPDX-License-Identifier: MIT */
/* commit: write what an image and the layers between it and a base decide
 * (data and zeroes) into the base, then empty the image so it reads
 * through to the base again. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "img.h"

static const char usage[] =
	"usage: tern-img commit [-f fmt] [-b base] [-d] [-p] [-q] [-t cache] file\n"
	"  -b base  commit into this image of the backing chain (default: the\n"
	"           image's backing file); implies -d, as the layers between\n"
	"           stop matching the image once the base changes\n"
	"  -d       leave the image's own data in place (do not empty it)\n"
	"  -p       show progress\n";

#define STEP (4u << 20)
#define MAX_LOCKS 66

struct locks {
	int fd[MAX_LOCKS];
	int n;
};

/* Hold a flock of our own: the chain is opened without the library's
 * locks, because the base is opened a second time, for writing. */
static int take_lock(struct locks *l, const char *path, bool excl)
{
	if (l->n == MAX_LOCKS)
		return 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		img_error("Could not open '%s': %s", path, strerror(errno));
		return -1;
	}
	if (flock(fd, (excl ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0) {
		img_error("Could not lock '%s' (%s): is it in use?", path, excl ? "exclusive" : "shared");
		close(fd);
		return -1;
	}
	l->fd[l->n++] = fd;
	return 0;
}

static void drop_locks(struct locks *l)
{
	while (l->n)
		close(l->fd[--l->n]);
}

static int fail(struct vdisk *d, const char *what)
{
	char m[VDISK_ERRMSG_MAX];
	img_error("%s: %s", what, vdisk_errmsg(d, m, sizeof(m)));
	return -1;
}

/* Find base (by real path) in top's chain; -1 if it is not there. */
static int chain_depth(struct vdisk *top, const char *base, struct vdisk **out)
{
	char want[PATH_MAX], have[PATH_MAX];
	if (!realpath(base, want))
		return -1;
	int depth = 1;
	for (struct vdisk *l = vdisk_backing(top); l; l = vdisk_backing(l), depth++)
		if (realpath(vdisk_path(l), have) && !strcmp(have, want)) {
			*out = l;
			return depth;
		}
	return -1;
}

static int copy_up(struct vdisk *top, struct vdisk *base, unsigned bdepth, bool progress)
{
	uint64_t size = vdisk_size(top);
	uint8_t *buf = malloc(STEP);
	if (!buf) {
		img_error("out of memory");
		return -1;
	}
	int r = 0;
	for (uint64_t off = 0; off < size && r == 0;) {
		uint64_t len = size - off < STEP ? size - off : STEP;
		struct vdisk_extent e;
		if (vdisk_block_status(top, off, len, &e) < 0) {
			r = fail(top, "block status");
			break;
		}
		len = e.length;
		if (e.depth < bdepth && (e.flags & VDISK_BS_ALLOCATED)) {
			if ((e.flags & VDISK_BS_ZERO) && !(e.flags & VDISK_BS_DATA)) {
				if (vdisk_write_zeroes(base, off, len, VDISK_ZERO_MAY_UNMAP) < 0)
					r = fail(base, "writing zeroes into the base");
			} else if (vdisk_pread(top, buf, len, off) < 0) {
				r = fail(top, "reading the image");
			} else if (vd_zero(buf, len)) {
				if (vdisk_write_zeroes(base, off, len, VDISK_ZERO_MAY_UNMAP) < 0)
					r = fail(base, "writing zeroes into the base");
			} else if (vdisk_pwrite(base, buf, len, off) < 0) {
				r = fail(base, "writing into the base");
			}
		}
		off += len;
		if (progress)
			img_progress(100.0 * (double)off / (double)size);
	}
	if (progress)
		printf("\n");
	free(buf);
	return r;
}

int img_commit(int argc, char **argv)
{
	if (img_wants_help(argc, argv, usage))
		return 0;
	const char *fmt = NULL, *bname = NULL;
	bool drop = true, progress = false, quiet = false;
	int c;
	optind = 1;
	while ((c = getopt(argc, argv, "f:b:dpqt:r:")) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'b': bname = optarg; break;
		case 'd': drop = false; break;
		case 'p': progress = true; break;
		case 'q': quiet = true; break;
		case 't': case 'r': break;
		default: fputs(usage, stderr); return 1;
		}
	}
	if (optind != argc - 1) {
		fputs(usage, stderr);
		return 1;
	}
	const char *path = argv[optind];
	if (bname)
		drop = false;
	struct locks lk = { .n = 0 };
	struct vdisk *top = NULL, *base = NULL, *layer = NULL;
	int rc = 1;
	if (take_lock(&lk, path, drop) < 0)
		return 1;
	top = img_open(path, fmt, (drop ? VDISK_OPEN_RDWR : 0) | VDISK_OPEN_NO_LOCK);
	if (!top)
		goto out;
	if (!vdisk_backing(top)) {
		img_error("Image '%s' does not have a backing file: nothing to commit into", path);
		goto out;
	}
	int bdepth = 1;
	layer = vdisk_backing(top);
	if (bname && (bdepth = chain_depth(top, bname, &layer)) < 0) {
		img_error("'%s' is not in the backing chain of '%s'", bname, path);
		goto out;
	}
	/* the layers in between are read, the base written */
	int d = 1;
	for (struct vdisk *l = vdisk_backing(top); l && d <= bdepth; l = vdisk_backing(l), d++)
		if (take_lock(&lk, vdisk_path(l), d == bdepth) < 0)
			goto out;
	struct vdisk_open_opts bo = { .flags = VDISK_OPEN_RDWR | VDISK_OPEN_NO_LOCK,
	                              .format = vdisk_format(layer) };
	struct vdisk_error err;
	if (vdisk_open(&base, vdisk_path(layer), &bo, &err) < 0) {
		img_error("Could not open the base '%s' for writing: %s", vdisk_path(layer), err.msg);
		base = NULL;
		goto out;
	}
	if (vdisk_size(base) < vdisk_size(top) && vdisk_resize(base, vdisk_size(top), 0) < 0) {
		fail(base, "growing the base to the image's size");
		goto out;
	}
	if (progress)
		img_progress(0);
	if (copy_up(top, base, (unsigned)bdepth, progress) < 0)
		goto out;
	if (vdisk_flush(base) < 0) {
		fail(base, "flushing the base");
		goto out;
	}
	int r = vdisk_close(base);
	base = NULL;
	if (r < 0) {
		img_error("error while closing the base '%s'", vdisk_path(layer));
		goto out;
	}
	if (drop && vdisk_make_empty(top) < 0) {
		fail(top, "emptying the image after the commit");
		goto out;
	}
	if (!quiet)
		printf("Image committed.\n");
	rc = 0;
out:
	vdisk_close(base);
	if (top && vdisk_close(top) < 0 && rc == 0) {
		img_error("error while closing '%s'", path);
		rc = 1;
	}
	drop_locks(&lk);
	return rc;
}
