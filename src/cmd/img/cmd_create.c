/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"

static const char usage[] =
	"usage: tern-img create [-f fmt] [-o options] [-b backing [-F backing_fmt]] [-u] file [size]\n"
	"  -f fmt        raw, qcow2, vdi, vpc or vmdk (default raw)\n"
	"  -o options    compat=0.10|1.1, cluster_size=N, refcount_bits=1..64,\n"
	"                lazy_refcounts=on|off, extended_l2=on|off,\n"
	"                compression_type=zlib|zstd, preallocation=off|metadata|falloc|full,\n"
	"                backing_file=PATH, backing_fmt=FMT\n"
	"                vdi: static=on|off; vpc: subformat=dynamic|fixed, force_size=on|off\n"
	"                (vpc with -b: a differencing disk of a vpc parent)\n"
	"                vmdk: subformat=monolithicSparse|monolithicFlat|twoGbMaxExtentSparse|\n"
	"                twoGbMaxExtentFlat|streamOptimized, adapter_type=ide|buslogic|lsilogic|\n"
	"                legacyESX, hwversion=N, compat6=on|off, toolsversion=N, zeroed_grain=on|off\n"
	"  -b, -F        backing file and its format\n"
	"  -u            do not open the backing file (size must be given)\n";

int img_create(int argc, char **argv)
{
	if (img_wants_help(argc, argv, usage))
		return 0;
	struct vdisk_create_opts o = { .format = "raw" };
	int c;
	optind = 1;
	while ((c = getopt(argc, argv, "f:o:b:F:uq")) != -1) {
		switch (c) {
		case 'f': o.format = optarg; break;
		case 'o':
			if (!strcmp(optarg, "help")) {
				fputs(usage, stdout);
				return 0;
			}
			if (img_parse_create_opts(optarg, &o) < 0)
				return 1;
			break;
		case 'b': o.backing_file = optarg; break;
		case 'F': o.backing_format = optarg; break;
		case 'u': case 'q': break;
		default: fputs(usage, stderr); return 1;
		}
	}
	if (optind >= argc) {
		img_error("expecting a filename");
		return 1;
	}
	const char *file = argv[optind++];
	if (optind < argc && img_parse_size(argv[optind], &o.size) < 0) {
		img_error("invalid image size '%s'", argv[optind]);
		return 1;
	}
	if (!o.size && !o.backing_file && optind >= argc) {
		img_error("image size not given");
		return 1;
	}
	struct vdisk_error err;
	if (vdisk_create(file, &o, &err) < 0) {
		img_error("%s: %s", file, err.msg);
		return 1;
	}
	return 0;
}
