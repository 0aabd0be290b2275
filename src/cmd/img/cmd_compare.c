/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"

static const char usage[] =
	"usage: tern-img compare [-f fmt] [-F fmt] [-s] [-p] image1 image2\n"
	"exit status: 0 identical, 1 different, 2 error\n";

#define CHUNK (1u << 20)

/* Is [off, off+len) of d zero? Reads only where block status says data. */
static int is_zero(struct vdisk *d, uint8_t *buf, uint64_t off, uint64_t len, uint64_t *bad)
{
	while (len) {
		struct vdisk_extent e;
		if (vdisk_block_status(d, off, len, &e) < 0)
			return -1;
		if (!(e.flags & VDISK_BS_ZERO) || (e.flags & VDISK_BS_DATA)) {
			for (uint64_t p = 0; p < e.length; p += CHUNK) {
				uint64_t n = e.length - p < CHUNK ? e.length - p : CHUNK;
				if (vdisk_pread(d, buf, n, off + p) < 0)
					return -1;
				for (uint64_t i = 0; i < n; i++)
					if (buf[i]) {
						*bad = off + p + i;
						return 1;
					}
			}
		}
		off += e.length;
		len -= e.length;
	}
	return 0;
}

int img_compare(int argc, char **argv)
{
	if (img_wants_help(argc, argv, usage))
		return 0;
	const char *f1 = NULL, *f2 = NULL;
	bool strict = false;
	int c;
	optind = 1;
	while ((c = getopt(argc, argv, "f:F:spqU")) != -1) {
		switch (c) {
		case 'f': f1 = optarg; break;
		case 'F': f2 = optarg; break;
		case 's': strict = true; break;
		case 'p': case 'q': case 'U': break;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (argc - optind != 2) {
		img_error("compare expects two images");
		return 2;
	}
	struct vdisk *a = img_open(argv[optind], f1, 0);
	struct vdisk *b = a ? img_open(argv[optind + 1], f2, 0) : NULL;
	if (!a || !b) {
		vdisk_close(a);
		return 2;
	}
	uint8_t *ba = malloc(CHUNK), *bb = malloc(CHUNK);
	uint64_t sa = vdisk_size(a), sb = vdisk_size(b), common = sa < sb ? sa : sb;
	int rc = 0;
	if (strict && sa != sb) {
		printf("Strict mode: Image size mismatch!\n");
		rc = 1;
		goto out;
	}
	for (uint64_t off = 0; off < common && !rc;) {
		struct vdisk_extent ea, eb;
		uint64_t n = common - off < CHUNK ? common - off : CHUNK;
		if (vdisk_block_status(a, off, n, &ea) < 0 || vdisk_block_status(b, off, n, &eb) < 0) {
			rc = 2;
			break;
		}
		n = ea.length < eb.length ? ea.length : eb.length;
		bool za = (ea.flags & VDISK_BS_ZERO) && !(ea.flags & VDISK_BS_DATA);
		bool zb = (eb.flags & VDISK_BS_ZERO) && !(eb.flags & VDISK_BS_DATA);
		if (!(za && zb)) {
			if (vdisk_pread(a, ba, n, off) < 0 || vdisk_pread(b, bb, n, off) < 0) {
				rc = 2;
				break;
			}
			if (memcmp(ba, bb, n)) {
				uint64_t i = 0;
				while (ba[i] == bb[i])
					i++;
				printf("Content mismatch at offset %llu!\n", (unsigned long long)(off + i));
				rc = 1;
				break;
			}
		}
		off += n;
	}
	if (!rc && sa != sb) {
		struct vdisk *big = sa > sb ? a : b;
		uint64_t bad = 0;
		int z = is_zero(big, ba, common, (sa > sb ? sa : sb) - common, &bad);
		if (z < 0)
			rc = 2;
		else if (z) {
			printf("Content mismatch at offset %llu!\n", (unsigned long long)bad);
			rc = 1;
		} else {
			printf("Warning: Image size mismatch!\n");
		}
	}
	if (rc == 2) {
		img_error("error while comparing");
	} else if (!rc) {
		printf("Images are identical.\n");
	}
out:
	free(ba);
	free(bb);
	vdisk_close(a);
	vdisk_close(b);
	return rc;
}
