/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "img.h"

static const char usage[] = "usage: tern-img map [-f fmt] [--output=human|json] file\n";

struct ent {
	uint64_t start, length, offset;
	unsigned depth;
	bool present, zero, data, has_off;
	const char *file;
};

static bool mergeable(const struct ent *a, const struct ent *b)
{
	return a->depth == b->depth && a->present == b->present && a->zero == b->zero &&
	       a->data == b->data && a->has_off == b->has_off &&
	       (!a->has_off || a->offset + a->length == b->offset);
}

static void emit(const struct ent *e, bool json, bool first)
{
	if (json) {
		printf("%s{ \"start\": %llu, \"length\": %llu, \"depth\": %u, \"present\": %s, "
		       "\"zero\": %s, \"data\": %s", first ? "[" : ",\n", (unsigned long long)e->start,
		       (unsigned long long)e->length, e->depth, e->present ? "true" : "false",
		       e->zero ? "true" : "false", e->data ? "true" : "false");
		if (e->has_off)
			printf(", \"offset\": %llu", (unsigned long long)e->offset);
		printf("}");
	} else if (e->data && e->has_off) {
		printf("%#-16llx%#-16llx%#-16llx%s\n", (unsigned long long)e->start,
		       (unsigned long long)e->length, (unsigned long long)e->offset, e->file);
	}
}

int img_map(int argc, char **argv)
{
	if (img_wants_help(argc, argv, usage))
		return 0;
	static const struct option lo[] = { { "output", required_argument, NULL, 'O' },
	                                    { NULL, 0, NULL, 0 } };
	const char *fmt = NULL, *out = "human";
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "f:U", lo, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'O': out = optarg; break;
		case 'U': break;
		default: fputs(usage, stderr); return 1;
		}
	}
	if (optind >= argc) {
		img_error("expecting a filename");
		return 1;
	}
	bool json = !strcmp(out, "json");
	struct vdisk *d = img_open(argv[optind], fmt, 0);
	if (!d)
		return 1;
	if (!json)
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
	uint64_t size = vdisk_size(d), off = 0;
	struct ent cur = { 0 };
	bool have = false, first = true;
	int rc = 0;
	while (off < size) {
		struct vdisk_extent x;
		if (vdisk_block_status(d, off, size - off, &x) < 0) {
			char m[VDISK_ERRMSG_MAX];
			img_error("%s", vdisk_errmsg(d, m, sizeof(m)));
			rc = 1;
			break;
		}
		struct vdisk *layer = d;
		for (unsigned i = 0; i < x.depth && vdisk_backing(layer); i++)
			layer = vdisk_backing(layer);
		struct ent e = {
			.start = off, .length = x.length, .depth = x.depth,
			.present = x.flags & VDISK_BS_ALLOCATED, .zero = x.flags & VDISK_BS_ZERO,
			.data = x.flags & VDISK_BS_DATA, .has_off = x.flags & VDISK_BS_OFFSET,
			.offset = x.host_offset, .file = vdisk_path(layer),
		};
		if (have && mergeable(&cur, &e)) {
			cur.length += e.length;
		} else {
			if (have) {
				emit(&cur, json, first);
				first = false;
			}
			cur = e;
			have = true;
		}
		off += x.length;
	}
	if (have)
		emit(&cur, json, first);
	if (json)
		printf("%s]\n", have ? "" : "[");
	vdisk_close(d);
	return rc;
}
