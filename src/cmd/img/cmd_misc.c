/* SPDX-License-Identifier: MIT */
/* resize, snapshot */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "img.h"

static int fail_d(struct vdisk *d, const char *what)
{
	char m[VDISK_ERRMSG_MAX];
	img_error("%s: %s", what, vdisk_errmsg(d, m, sizeof(m)));
	vdisk_close(d);
	return 1;
}

int img_resize(int argc, char **argv)
{
	static const char usage[] = "usage: tern-img resize [-f fmt] [--shrink] file [+|-]size\n";
	if (img_wants_help(argc, argv, usage))
		return 0;
	static const struct option lo[] = { { "shrink", no_argument, NULL, 's' },
	                                    { NULL, 0, NULL, 0 } };
	const char *fmt = NULL;
	unsigned flags = 0;
	int c;
	optind = 1;
	/* "-1G" must not be taken for an option: stop at the first non-option */
	while ((c = getopt_long(argc, argv, "+f:q", lo, NULL)) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 's': flags |= VDISK_RESIZE_SHRINK; break;
		case 'q': break;
		default: fputs(usage, stderr); return 1;
		}
	}
	if (argc - optind != 2) {
		fputs(usage, stderr);
		return 1;
	}
	const char *s = argv[optind + 1];
	int sign = 0;
	if (*s == '+' || *s == '-')
		sign = *s++ == '+' ? 1 : -1;
	uint64_t v;
	if (img_parse_size(s, &v) < 0) {
		img_error("invalid size '%s'", argv[optind + 1]);
		return 1;
	}
	struct vdisk *d = img_open(argv[optind], fmt, VDISK_OPEN_RDWR);
	if (!d)
		return 1;
	uint64_t cur = vdisk_size(d), ns = sign > 0 ? cur + v : sign < 0 ? cur - v : v;
	if (sign < 0 && v > cur) {
		img_error("new size would be negative");
		vdisk_close(d);
		return 1;
	}
	if (vdisk_resize(d, ns, flags) < 0)
		return fail_d(d, "resize failed");
	printf("Image resized.\n");
	return vdisk_close(d) < 0;
}

int img_snapshot(int argc, char **argv)
{
	static const char usage[] =
		"usage: tern-img snapshot [-f fmt] [-q] [-U] [-l | -c name | -a name | -d name] file\n"
		"  -l        list the internal snapshots\n"
		"  -c name   create a snapshot of the current disk\n"
		"  -a name   apply (revert the disk to) a snapshot, by id or name\n"
		"  -d name   delete a snapshot, by id or name\n";
	if (img_wants_help(argc, argv, usage))
		return 0;
	char op = 0;
	const char *name = NULL, *fmt = NULL;
	bool quiet = false;
	int c;
	optind = 1;
	while ((c = getopt(argc, argv, "f:lc:a:d:qU")) != -1) {
		switch (c) {
		case 'f': fmt = optarg; break;
		case 'l': case 'c': case 'a': case 'd':
			if (op) {
				img_error("cannot mix '-l', '-a', '-c', '-d'");
				return 1;
			}
			op = (char)c;
			name = optarg;
			break;
		case 'q': quiet = true; break;
		case 'U': break;
		default: fputs(usage, stderr); return 1;
		}
	}
	if (!op || optind != argc - 1) {
		fputs(usage, stderr);
		return 1;
	}
	struct vdisk *d = img_open(argv[optind], fmt, op == 'l' ? 0 : VDISK_OPEN_RDWR);
	if (!d)
		return 1;
	int r = 0;
	if (op == 'l') {
		struct vdisk_snapshot *s;
		unsigned n;
		if ((r = vdisk_snapshot_list(d, &s, &n)) < 0)
			return fail_d(d, "Could not list snapshots");
		if (!quiet && n)
			img_print_snapshots(s, n);
		free(s);
	} else if (op == 'c') {
		r = vdisk_snapshot_create(d, name, NULL, 0);
		if (r < 0)
			return fail_d(d, "Could not create snapshot");
	} else if (op == 'a') {
		r = vdisk_snapshot_apply(d, name);
		if (r < 0)
			return fail_d(d, "Could not apply snapshot");
	} else {
		r = vdisk_snapshot_delete(d, name);
		if (r < 0)
			return fail_d(d, "Could not delete snapshot");
	}
	return vdisk_close(d) < 0;
}
