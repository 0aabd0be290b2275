/* SPDX-License-Identifier: MIT */
/* Helpers for the vdisk unit tests: temp dirs, patterns, hex patching. */
#ifndef VDISK_TEST_UTIL_H
#define VDISK_TEST_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "vdisk.h"

static char tdir[256];

static inline void tu_mkdir(void)
{
	snprintf(tdir, sizeof(tdir), "/tmp/vdisk-unit-XXXXXX");
	assert_non_null(mkdtemp(tdir));
}

static inline void tu_rmdir(void)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tdir);
	assert_int_equal(system(cmd), 0);
}

static inline const char *tu_path(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", tdir, name);
	return buf;
}

static inline void tu_fill(uint8_t *b, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)((seed * 131 + i * 7 + (i >> 9)) ^ (seed >> 3));
}

static inline struct vdisk *tu_open(const char *path, const char *fmt, uint32_t flags)
{
	struct vdisk *d = NULL;
	struct vdisk_open_opts o = { .flags = flags, .format = fmt };
	struct vdisk_error e;
	int r = vdisk_open(&d, path, &o, &e);
	if (r < 0)
		print_error("open %s: %s\n", path, e.msg);
	assert_int_equal(r, 0);
	return d;
}

static inline void tu_create(const char *path, const struct vdisk_create_opts *o)
{
	struct vdisk_error e;
	int r = vdisk_create(path, o, &e);
	if (r < 0)
		print_error("create %s: %s\n", path, e.msg);
	assert_int_equal(r, 0);
}

static inline void tu_patch(const char *path, uint64_t off, const void *data, size_t n)
{
	FILE *f = fopen(path, "r+b");
	assert_non_null(f);
	assert_int_equal(fseek(f, (long)off, SEEK_SET), 0);
	assert_int_equal(fwrite(data, 1, n, f), n);
	fclose(f);
}

static inline void tu_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static inline void tu_be64(uint8_t *p, uint64_t v)
{
	tu_be32(p, (uint32_t)(v >> 32));
	tu_be32(p + 4, (uint32_t)v);
}

/* Check result must be clean. */
static inline void tu_check_clean(struct vdisk *d)
{
	struct vdisk_check_result r = { 0 };
	assert_int_equal(vdisk_check(d, &r, 0), 0);
	assert_int_equal(r.corruptions, 0);
	assert_int_equal(r.leaks, 0);
}

#endif
