/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"

static const char usage[] =
	"usage: tern-img info [-f fmt] [--output=human|json] [--backing-chain] file\n";

static json_t *info_json(struct vdisk *d)
{
	struct vdisk_info in;
	vdisk_info(d, &in);
	json_t *j = json_object();
	json_object_set_new(j, "virtual-size", json_integer((json_int_t)in.virtual_size));
	json_object_set_new(j, "filename", json_string(vdisk_path(d)));
	if (in.cluster_size)
		json_object_set_new(j, "cluster-size", json_integer(in.cluster_size));
	json_object_set_new(j, "format", json_string(in.format));
	json_object_set_new(j, "actual-size", json_integer((json_int_t)in.actual_size));
	if (in.backing_file[0]) {
		json_object_set_new(j, "backing-filename", json_string(in.backing_file));
		if (in.backing_resolved[0])
			json_object_set_new(j, "full-backing-filename", json_string(in.backing_resolved));
		if (in.backing_format[0])
			json_object_set_new(j, "backing-filename-format", json_string(in.backing_format));
	}
	if (!strcmp(in.format, "vmdk") && in.subformat[0]) {
		json_t *data = json_object(), *fs = json_object();
		json_object_set_new(data, "create-type", json_string(in.subformat));
		json_object_set_new(fs, "type", json_string("vmdk"));
		json_object_set_new(fs, "data", data);
		json_object_set_new(j, "format-specific", fs);
	}
	if (!strcmp(in.format, "qcow2")) {
		json_t *data = json_object();
		json_object_set_new(data, "compat", json_string(in.compat == 2 ? "0.10" : "1.1"));
		if (in.compat >= 3) {
			json_object_set_new(data, "compression-type",
			                    json_string(in.compression == VDISK_COMPRESS_ZSTD ? "zstd" : "zlib"));
			json_object_set_new(data, "lazy-refcounts", json_boolean(in.lazy_refcounts));
		}
		json_object_set_new(data, "refcount-bits", json_integer(in.refcount_bits));
		json_object_set_new(data, "corrupt", json_boolean(in.corrupt));
		json_object_set_new(data, "extended-l2", json_boolean(in.extended_l2));
		json_t *fs = json_object();
		json_object_set_new(fs, "type", json_string("qcow2"));
		json_object_set_new(fs, "data", data);
		json_object_set_new(j, "format-specific", fs);
		struct vdisk_snapshot *sn;
		unsigned n;
		if (in.nb_snapshots && vdisk_snapshot_list(d, &sn, &n) == 0) {
			json_t *a = json_array();
			for (unsigned i = 0; i < n; i++) {
				json_t *s = json_object();
				json_object_set_new(s, "id", json_string(sn[i].id));
				json_object_set_new(s, "name", json_string(sn[i].name));
				json_object_set_new(s, "vm-state-size", json_integer((json_int_t)sn[i].vm_state_size));
				json_object_set_new(s, "date-sec", json_integer(sn[i].date_sec));
				json_object_set_new(s, "date-nsec", json_integer(sn[i].date_nsec));
				json_object_set_new(s, "vm-clock-sec", json_integer((json_int_t)(sn[i].vm_clock_nsec / 1000000000)));
				json_object_set_new(s, "vm-clock-nsec", json_integer((json_int_t)(sn[i].vm_clock_nsec % 1000000000)));
				json_object_set_new(s, "icount", json_integer((json_int_t)sn[i].icount));
				json_array_append_new(a, s);
			}
			json_object_set_new(j, "snapshots", a);
			free(sn);
		}
		json_object_set_new(j, "dirty-flag", json_boolean(in.dirty));
	}
	return j;
}

static void info_human(struct vdisk *d)
{
	struct vdisk_info in;
	char a[64], b[64];
	vdisk_info(d, &in);
	img_human_size(in.virtual_size, a, sizeof(a));
	img_human_size(in.actual_size, b, sizeof(b));
	printf("image: %s\nfile format: %s\nvirtual size: %s (%llu bytes)\ndisk size: %s\n",
	       vdisk_path(d), in.format, a, (unsigned long long)in.virtual_size, b);
	if (in.cluster_size)
		printf("cluster_size: %u\n", in.cluster_size);
	if (in.backing_file[0]) {
		printf("backing file: %s", in.backing_file);
		if (in.backing_resolved[0] && strcmp(in.backing_resolved, in.backing_file))
			printf(" (actual path: %s)", in.backing_resolved);
		printf("\n");
		if (in.backing_format[0])
			printf("backing file format: %s\n", in.backing_format);
	}
	struct vdisk_snapshot *sn;
	unsigned n;
	if (in.nb_snapshots && vdisk_snapshot_list(d, &sn, &n) == 0) {
		img_print_snapshots(sn, n);
		free(sn);
	}
	if (!strcmp(in.format, "vmdk") && in.subformat[0])
		printf("Format specific information:\n    create type: %s\n", in.subformat);
	if (!strcmp(in.format, "qcow2")) {
		printf("Format specific information:\n    compat: %s\n", in.compat == 2 ? "0.10" : "1.1");
		if (in.compat >= 3) {
			printf("    compression type: %s\n",
			       in.compression == VDISK_COMPRESS_ZSTD ? "zstd" : "zlib");
			printf("    lazy refcounts: %s\n", in.lazy_refcounts ? "true" : "false");
		}
		printf("    refcount bits: %u\n    corrupt: %s\n    extended l2: %s\n",
		       in.refcount_bits, in.corrupt ? "true" : "false",
		       in.extended_l2 ? "true" : "false");
	}
}

int img_info(int argc, char **argv)
{
	if (img_wants_help(argc, argv, usage))
		return 0;
	static const struct option lo[] = {
		{ "output", required_argument, NULL, 'O' },
		{ "backing-chain", no_argument, NULL, 'B' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *out = "human";
	bool chain = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "f:U", lo, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'O': out = optarg; break;
		case 'B': chain = true; break;
		case 'U': break;
		default: fputs(usage, stderr); return 1;
		}
	}
	if (optind >= argc) {
		img_error("expecting a filename");
		return 1;
	}
	bool json = !strcmp(out, "json");
	if (!json && strcmp(out, "human")) {
		img_error("--output must be human or json");
		return 1;
	}
	struct vdisk *d = img_open(argv[optind], fmt, 0);
	if (!d)
		return 1;
	if (json) {
		json_t *j;
		if (chain) {
			j = json_array();
			for (struct vdisk *x = d; x; x = vdisk_backing(x))
				json_array_append_new(j, info_json(x));
		} else {
			j = info_json(d);
		}
		char *s = json_dumps(j, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
		printf("%s\n", s);
		free(s);
		json_decref(j);
	} else {
		for (struct vdisk *x = d; x; x = chain ? vdisk_backing(x) : NULL) {
			info_human(x);
			if (chain && vdisk_backing(x))
				printf("\n");
		}
	}
	vdisk_close(d);
	return 0;
}
