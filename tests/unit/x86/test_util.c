#include "test_util.h"

#include <stdarg.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <unistd.h>
#include <cmocka.h>

static char dir[64];
static char paths[32][128];
static unsigned npaths;

void tu_mem(struct guest_mem *m, uint64_t size)
{
	struct terr err = { 0 };
	int r = guest_mem_create(m, size, &err);
	if (r < 0)
		fail_msg("guest_mem_create: %s", err.msg);
}

const char *tu_dir(void)
{
	if (!dir[0]) {
		snprintf(dir, sizeof(dir), "/tmp/tern-x86-test-XXXXXX");
		if (!mkdtemp(dir))
			fail_msg("mkdtemp failed");
	}
	return dir;
}

const char *tu_file(const char *name, const void *buf, size_t len)
{
	char *p = paths[npaths++ % 32];
	snprintf(p, 128, "%s/%s", tu_dir(), name);
	FILE *f = fopen(p, "wb");
	assert_non_null(f);
	if (len)
		assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

void tu_cleanup(void)
{
	if (!dir[0])
		return;
	if (getenv("TERN_TEST_KEEP")) {   /* keep the files for a post-mortem */
		fprintf(stderr, "test files kept in %s\n", dir);
		return;
	}
	if (nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	dir[0] = '\0';
}
