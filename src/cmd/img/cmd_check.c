/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"

static const char usage[] =
	"usage: tern-img check [-f fmt] [-r leaks|all] [--output=human|json] file\n"
	"exit status: 0 clean, 1 check failed, 2 corruptions, 3 leaks only, 63 unsupported\n";

static void line(void *opaque, const char *l)
{
	if (!opaque)
		fprintf(stderr, "%s\n", l);
}

int img_check(int argc, char **argv)
{
	if (img_wants_help(argc, argv, usage))
		return 0;
	static const struct option lo[] = {
		{ "output", required_argument, NULL, 'O' },
		{ "repair", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *out = "human";
	unsigned fix = 0;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "f:r:qU", lo, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'O': out = optarg; break;
		case 'r':
			if (!strcmp(optarg, "leaks"))
				fix = VDISK_FIX_LEAKS;
			else if (!strcmp(optarg, "all"))
				fix = VDISK_FIX_LEAKS | VDISK_FIX_ERRORS;
			else {
				img_error("-r expects 'leaks' or 'all'");
				return 1;
			}
			break;
		case 'q': case 'U': break;
		default: fputs(usage, stderr); return 1;
		}
	}
	if (optind >= argc) {
		img_error("expecting a filename");
		return 1;
	}
	bool json = !strcmp(out, "json");
	uint32_t fl = fix ? VDISK_OPEN_RDWR | VDISK_OPEN_FORCE_CORRUPT | VDISK_OPEN_NO_REPAIR : 0;
	struct vdisk *d = img_open(argv[optind], fmt, fl | VDISK_OPEN_NO_BACKING);
	if (!d)
		return 1;
	struct vdisk_check_result r = { .report = line, .opaque = json ? (void *)1 : NULL };
	int e = vdisk_check(d, &r, fix);
	if (e == -ENOTSUP) {
		img_error("This image format does not support checks");
		vdisk_close(d);
		return 63;
	}
	if (e < 0) {
		char m[VDISK_ERRMSG_MAX];
		img_error("Check failed: %s", vdisk_errmsg(d, m, sizeof(m)));
		vdisk_close(d);
		return 1;
	}
	if (json) {
		json_t *j = json_object();
		json_object_set_new(j, "filename", json_string(argv[optind]));
		json_object_set_new(j, "format", json_string(vdisk_format(d)));
		json_object_set_new(j, "check-errors", json_integer((json_int_t)r.check_errors));
		if (r.corruptions)
			json_object_set_new(j, "corruptions", json_integer((json_int_t)r.corruptions));
		if (r.leaks)
			json_object_set_new(j, "leaks", json_integer((json_int_t)r.leaks));
		if (r.leaks_fixed)
			json_object_set_new(j, "leaks-fixed", json_integer((json_int_t)r.leaks_fixed));
		if (r.corruptions_fixed)
			json_object_set_new(j, "corruptions-fixed", json_integer((json_int_t)r.corruptions_fixed));
		json_object_set_new(j, "image-end-offset", json_integer((json_int_t)r.image_end_offset));
		json_object_set_new(j, "total-clusters", json_integer((json_int_t)r.total_clusters));
		json_object_set_new(j, "allocated-clusters", json_integer((json_int_t)r.allocated_clusters));
		json_object_set_new(j, "fragmented-clusters", json_integer((json_int_t)r.fragmented_clusters));
		json_object_set_new(j, "compressed-clusters", json_integer((json_int_t)r.compressed_clusters));
		char *s = json_dumps(j, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
		printf("%s\n", s);
		free(s);
		json_decref(j);
	} else {
		if (r.leaks_fixed || r.corruptions_fixed)
			printf("The following inconsistencies were found and repaired:\n\n"
			       "    %llu leaked clusters\n    %llu corruptions\n\n"
			       "Double checking the fixed image now...\n",
			       (unsigned long long)r.leaks_fixed, (unsigned long long)r.corruptions_fixed);
		if (!r.corruptions && !r.leaks && !r.check_errors)
			printf("No errors were found on the image.\n");
		if (r.corruptions)
			printf("\n%llu errors were found on the image.\nData may be corrupted, or further "
			       "writes to the image may corrupt it.\n", (unsigned long long)r.corruptions);
		if (r.leaks)
			printf("\n%llu leaked clusters were found on the image.\nThis means waste of disk "
			       "space, but no harm to data.\n", (unsigned long long)r.leaks);
		if (r.check_errors)
			printf("\n%llu internal errors have occurred during the check.\n",
			       (unsigned long long)r.check_errors);
		if (r.total_clusters)
			printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
			       (unsigned long long)r.allocated_clusters, (unsigned long long)r.total_clusters,
			       100.0 * (double)r.allocated_clusters / (double)r.total_clusters,
			       r.allocated_clusters ? 100.0 * (double)r.fragmented_clusters / (double)r.allocated_clusters : 0.0,
			       r.allocated_clusters ? 100.0 * (double)r.compressed_clusters / (double)r.allocated_clusters : 0.0);
		printf("Image end offset: %llu\n", (unsigned long long)r.image_end_offset);
	}
	e = vdisk_close(d);
	if (r.check_errors || e < 0)
		return 1;
	if (r.corruptions)
		return 2;
	if (r.leaks)
		return 3;
	return 0;
}
