/* SPDX-License-Identifier: MIT */
/* tern-img: create, inspect, convert and check disk images. */
#include <stdio.h>
#include <string.h>

#include "img.h"

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *summary;
} cmds[] = {
	{ "bench", img_bench, "measure I/O speed" },
	{ "check", img_check, "check (and repair) an image" },
	{ "commit", img_commit, "write an overlay's data into its backing file" },
	{ "compare", img_compare, "compare the contents of two images" },
	{ "convert", img_convert, "copy an image, possibly to another format" },
	{ "create", img_create, "create an image" },
	{ "info", img_info, "show information about an image" },
	{ "map", img_map, "show the allocation map of an image" },
	{ "rebase", img_rebase, "change an image's backing file" },
	{ "resize", img_resize, "change an image's virtual size" },
	{ "snapshot", img_snapshot, "list, create, apply or delete internal snapshots" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: tern-img <command> [options]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].summary);
	fprintf(f, "\nformats: raw, qcow2, vdi, vpc. 'tern-img <command> --help' for details.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 1;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("tern-img version %s\n", TERN_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	img_error("unknown command '%s'", argv[1]);
	usage(stderr);
	return 1;
}
