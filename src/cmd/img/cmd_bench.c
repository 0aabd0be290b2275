/* SPDX-License-Identifier: MIT */
/* bench: like qemu-img bench: -c count, -d depth (threads), -s size,
 * -S stride, -w write, --pattern, random offsets with -r. */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "img.h"

static const char usage[] =
	"usage: tern-img bench [-f fmt] [-c count] [-d depth] [-s size] [-S stride] [-o offset]\n"
	"                      [-w] [-r] [--flush-interval=n] file\n"
	"  -d depth  requests in flight (one thread each)\n"
	"  -S stride offset step between requests (default: size); offsets wrap at\n"
	"            the image size, as with qemu-img bench\n"
	"  -r        random offsets (aligned to size) instead of sequential stride\n";

struct bench {
	struct vdisk *d;
	uint64_t count, size, stride, offset, disk;
	bool write, random;
	atomic_uint_fast64_t next;
	atomic_int err;
};

static void *run(void *arg)
{
	struct bench *b = arg;
	uint8_t *buf = aligned_alloc(4096, (b->size + 4095) / 4096 * 4096);
	if (!buf)
		return NULL;
	memset(buf, 0xa5, b->size);
	uint64_t seed = (uint64_t)(uintptr_t)buf ^ 0x9e3779b97f4a7c15ull;
	for (;;) {
		uint64_t i = atomic_fetch_add(&b->next, 1);
		if (i >= b->count || atomic_load(&b->err))
			break;
		uint64_t off;
		if (b->random) {
			seed ^= seed << 13;
			seed ^= seed >> 7;
			seed ^= seed << 17;
			off = seed % (b->disk / b->size) * b->size;
		} else {
			/* as qemu-img bench: the offset wraps at the image size */
			off = (b->offset + i * b->stride) % b->disk;
			if (off > b->disk - b->size)
				off = b->disk - b->size;
		}
		int r = b->write ? vdisk_pwrite(b->d, buf, b->size, off)
		                 : vdisk_pread(b->d, buf, b->size, off);
		if (r < 0)
			atomic_store(&b->err, r);
	}
	free(buf);
	return NULL;
}

int img_bench(int argc, char **argv)
{
	if (img_wants_help(argc, argv, usage))
		return 0;
	const char *fmt = NULL;
	struct bench b = { .count = 75000, .size = 4096, .stride = 0 };
	int depth = 64, c;
	optind = 1;
	while ((c = getopt(argc, argv, "f:c:d:s:S:o:wrnqt:i:U")) != -1) {
		uint64_t v = 0;
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'c': b.count = strtoull(optarg, NULL, 10); break;
		case 'd': depth = atoi(optarg); break;
		case 's': img_parse_size(optarg, &v); b.size = v; break;
		case 'S': img_parse_size(optarg, &v); b.stride = v; break;
		case 'o': img_parse_size(optarg, &v); b.offset = v; break;
		case 'w': b.write = true; break;
		case 'r': b.random = true; break;
		case 'n': case 'q': case 't': case 'i': case 'U': break;
		default: fputs(usage, stderr); return 1;
		}
	}
	if (optind >= argc || depth < 1 || depth > 256 || !b.size) {
		fputs(usage, stderr);
		return 1;
	}
	if (!b.stride)
		b.stride = b.size;
	struct vdisk *d = img_open(argv[optind], fmt, b.write ? VDISK_OPEN_RDWR : 0);
	if (!d)
		return 1;
	b.d = d;
	b.disk = vdisk_size(d);
	if (b.disk < b.size) {
		img_error("image smaller than the request size");
		vdisk_close(d);
		return 1;
	}
	printf("Sending %llu %s requests, %llu bytes each, %d in parallel\n",
	       (unsigned long long)b.count, b.write ? "write" : "read",
	       (unsigned long long)b.size, depth);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pthread_t *t = calloc((size_t)depth, sizeof(*t));
	for (int i = 0; i < depth; i++)
		pthread_create(&t[i], NULL, run, &b);
	for (int i = 0; i < depth; i++)
		pthread_join(t[i], NULL);
	free(t);
	if (b.write)
		vdisk_flush(d);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	int rc = 0;
	if (atomic_load(&b.err)) {
		char m[VDISK_ERRMSG_MAX];
		img_error("I/O error: %s", vdisk_errmsg(d, m, sizeof(m)));
		rc = 1;
	}
	printf("Run completed in %.3f seconds.\n", s);
	if (vdisk_close(d) < 0)
		rc = 1;
	return rc;
}
