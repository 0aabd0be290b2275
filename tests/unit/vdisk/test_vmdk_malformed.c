/* SPDX-License-Identifier: MIT */
/* Malformed VMDK images in the spirit of qemu-iotests 059: bad grain sizes,
 * huge grain tables, truncated sparse files, malformed extent lines and
 * extent paths leaving the image's folder. Each must fail with a clear
 * error naming the problem, never crash. */
#include <sys/stat.h>

#include "test_util.h"

static char img[300];

static void le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static void patch32(uint64_t off, uint32_t v) { uint8_t b[4]; le32(b, v); tu_patch(img, off, b, 4); }
static void patch64(uint64_t off, uint64_t v)
{
	uint8_t b[8];
	le32(b, (uint32_t)v);
	le32(b + 4, (uint32_t)(v >> 32));
	tu_patch(img, off, b, 8);
}

/* A 100 MiB monolithicSparse image (64 KiB grains, 512 entries per table:
 * directory at sector 38, tables from 39) with one grain written. */
static void fresh(const char *sub)
{
	tu_path(img, sizeof(img), "bad.vmdk");
	struct vdisk_create_opts co = { .format = "vmdk", .size = 100u << 20, .subformat = sub };
	tu_create(img, &co);
	struct vdisk *d = tu_open(img, "vmdk", VDISK_OPEN_RDWR);
	uint8_t buf[65536];
	tu_fill(buf, sizeof(buf), 3);
	assert_int_equal(vdisk_pwrite(d, buf, sizeof(buf), 0), 0);
	assert_int_equal(vdisk_close(d), 0);
}

static void expect_open_error(const char *path, int err, const char *needle)
{
	struct vdisk *d;
	struct vdisk_open_opts o = { .format = "vmdk" };
	struct vdisk_error e;
	int r = vdisk_open(&d, path, &o, &e);
	if (r == 0)
		vdisk_close(d);
	if (r != err || !strstr(e.msg, needle))
		print_error("open %s: got %d '%s', want %d with '%s'\n", path, r, e.msg, err, needle);
	assert_int_equal(r, err);
	assert_non_null(strstr(e.msg, needle));
}

static void expect_read_error(const char *needle)
{
	struct vdisk *d = tu_open(img, "vmdk", 0);
	uint8_t buf[4096];
	int r = vdisk_pread(d, buf, sizeof(buf), 0);
	char m[VDISK_ERRMSG_MAX];
	vdisk_errmsg(d, m, sizeof(m));
	if (r >= 0 || !strstr(m, needle))
		print_error("read: got %d '%s', want an error with '%s'\n", r, m, needle);
	assert_true(r < 0);
	assert_non_null(strstr(m, needle));
	vdisk_close(d);
}

static void t_grain_size(void **s)
{
	(void)s;
	static const uint64_t bad[] = { 0, 3, 100, 1u << 20, UINT64_MAX };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fresh(NULL);
		patch64(20, bad[i]);
		expect_open_error(img, -EINVAL, "grain size");
	}
}

static void t_grain_tables(void **s)
{
	(void)s;
	static const uint32_t bad[] = { 0, 4097, 0x80000000u, UINT32_MAX };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fresh(NULL);
		patch32(44, bad[i]);
		expect_open_error(img, -EINVAL, "entries per grain table");
	}
	/* a directory that would need gigabytes */
	fresh(NULL);
	patch64(20, 1);
	patch64(12, 1ull << 39);
	expect_open_error(img, -EFBIG, "grain directory");
	fresh(NULL);
	patch64(12, 0);
	expect_open_error(img, -EINVAL, "capacity");
	fresh(NULL);
	patch64(12, UINT64_MAX);
	expect_open_error(img, -EINVAL, "capacity");
}

static void t_truncated(void **s)
{
	(void)s;
	/* the directory beyond the end of the file */
	fresh(NULL);
	assert_int_equal(truncate(img, 30 * 512), 0);
	expect_open_error(img, -EINVAL, "truncated");
	/* the embedded descriptor cut */
	fresh(NULL);
	assert_int_equal(truncate(img, 5 * 512), 0);
	expect_open_error(img, -EIO, "truncated");
	/* directory present, its tables cut off */
	fresh(NULL);
	assert_int_equal(truncate(img, 39 * 512), 0);
	expect_read_error("truncated");
	/* directory offset pointing far away */
	fresh(NULL);
	patch64(56, 1ull << 40);
	expect_open_error(img, -EINVAL, "outside the file");
	/* shorter than a header */
	fresh(NULL);
	assert_int_equal(truncate(img, 100), 0);
	expect_open_error(img, -EIO, "truncated");
}

static void t_stream(void **s)
{
	(void)s;
	/* a stream cut in its footer */
	fresh("streamOptimized");
	struct stat st;
	assert_int_equal(stat(img, &st), 0);
	assert_int_equal(truncate(img, st.st_size - 700), 0);
	expect_open_error(img, -EINVAL, "footer");
	/* a compressed grain of an impossible size */
	fresh("streamOptimized");
	struct vdisk *d = tu_open(img, "vmdk", 0);
	struct vdisk_extent x;
	assert_int_equal(vdisk_block_status(d, 0, 65536, &x), 0);
	assert_true(x.flags & VDISK_BS_COMPRESSED);
	vdisk_close(d);
	/* the first grain follows the 64 KiB overhead: its marker's size */
	patch32(65536 + 8, 0x7fffffffu);
	expect_read_error("compressed size");
	/* garbage instead of deflate data */
	fresh("streamOptimized");
	patch64(65536 + 12, 0x0123456789abcdefull);
	expect_read_error("decompress");
	/* an unknown compression algorithm */
	fresh("streamOptimized");
	assert_int_equal(stat(img, &st), 0);
	uint8_t a[2] = { 7, 0 };
	tu_patch(img, (uint64_t)st.st_size - 1024 + 77, a, 2);
	expect_open_error(img, -ENOTSUP, "compression algorithm");
	/* a stream holding data opens read-only only */
	fresh("streamOptimized");
	struct vdisk_open_opts o = { .format = "vmdk", .flags = VDISK_OPEN_RDWR };
	struct vdisk_error e;
	assert_int_equal(vdisk_open(&d, img, &o, &e), -ENOTSUP);
	assert_non_null(strstr(e.msg, "written once"));
}

static void t_grain_in_metadata(void **s)
{
	(void)s;
	fresh(NULL);
	/* grain table 0 at sector 39: entry 0 now points at the header */
	patch32(39 * 512, 1);
	struct vdisk *d = tu_open(img, "vmdk", VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_pwrite(d, "x", 1, 0), -EIO);
	char m[VDISK_ERRMSG_MAX];
	assert_non_null(strstr(vdisk_errmsg(d, m, sizeof(m)), "metadata"));
	struct vdisk_check_result r = { 0 };
	assert_int_equal(vdisk_check(d, &r, 0), 0);
	assert_true(r.corruptions > 0);
	vdisk_close(d);
}

static void write_desc(const char *name, const char *extents)
{
	tu_path(img, sizeof(img), name);
	FILE *f = fopen(img, "w");
	assert_non_null(f);
	fprintf(f, "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
	           "createType=\"monolithicFlat\"\n\n# Extent description\n%s\n"
	           "ddb.adapterType = \"ide\"\n", extents);
	fclose(f);
}

static void t_extent_lines(void **s)
{
	(void)s;
	char data[300];
	tu_path(data, sizeof(data), "data.raw");
	FILE *f = fopen(data, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(truncate(data, 1 << 20), 0);
	static const struct { const char *line; int err; const char *needle; } cases[] = {
		{ "RW 2048 FLAT data.raw 0", -EINVAL, "double quotes" },
		{ "RW 2048 FLAT \"data.raw 0", -EINVAL, "closing quote" },
		{ "RW 2048 FLAT \"\" 0", -EINVAL, "empty" },
		{ "RW abc FLAT \"data.raw\" 0", -EINVAL, "number of sectors" },
		{ "RW 0 FLAT \"data.raw\" 0", -EINVAL, "out of range" },
		{ "RW 99999999999999999999999 FLAT \"data.raw\" 0", -EINVAL, "number of sectors" },
		{ "RW 2048 FLAT \"data.raw\" zz", -EINVAL, "offset" },
		{ "RW 2048 SPARSE \"data.raw\" 5", -EINVAL, "only FLAT" },
		{ "RW 2048 BOGUS \"data.raw\"", -ENOTSUP, "BOGUS" },
		{ "RW 2048", -EINVAL, "no type" },
		{ "RW 2048 ZERO \"data.raw\"", -EINVAL, "ZERO" },
		{ "this is not a descriptor line", -EINVAL, "line 8" },
		{ "CID=xyz", -EINVAL, "CID" },
		{ "", -EINVAL, "no extent lines" },
		{ "parentCID=0000abcd\nRW 2048 FLAT \"data.raw\" 0", -EINVAL, "parentFileNameHint" },
		{ "parentCID=0000abcd\nparentFileNameHint=\"gone.vmdk\"\nRW 2048 FLAT \"data.raw\" 0", -ENOENT, "gone.vmdk" },
		{ "RW 2048 FLAT \"missing.raw\" 0", -ENOENT, "missing.raw" },
		{ "RW 2048 SPARSE \"data.raw\"", -EINVAL, "no sparse header" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_desc("d.vmdk", cases[i].line);
		expect_open_error(img, cases[i].err, cases[i].needle);
	}
	/* well-formed: opens, and ZERO / NOACCESS extents behave */
	write_desc("d.vmdk", "RW 2048 FLAT \"data.raw\" 0\nRW 100 ZERO\nNOACCESS 8 FLAT \"data.raw\" 0");
	struct vdisk *d = tu_open(img, "vmdk", VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_size(d), (2048 + 100 + 8) * 512);
	uint8_t b[512];
	assert_int_equal(vdisk_pread(d, b, 512, 2048 * 512), 0);
	for (int i = 0; i < 512; i++)
		assert_int_equal(b[i], 0);
	assert_int_equal(vdisk_pwrite(d, b, 512, 2048 * 512), -EROFS);
	assert_int_equal(vdisk_pread(d, b, 512, 2148 * 512), -EACCES);
	vdisk_close(d);
}

static void t_escaping_paths(void **s)
{
	(void)s;
	static const struct { const char *line; const char *needle; } cases[] = {
		{ "RW 2048 FLAT \"/etc/passwd\" 0", "absolute" },
		{ "RW 2048 FLAT \"../data.raw\" 0", ".." },
		{ "RW 2048 FLAT \"..\" 0", ".." },
		{ "RW 2048 FLAT \"sub/data.raw\" 0", "own folder" },
		{ "RW 2048 SPARSE \"/dev/zero\"", "absolute" },
		{ "RW 2048 FLAT \"escape.raw\" 0", "outside" },
	};
	char link[300], cmd[700];
	tu_path(link, sizeof(link), "escape.raw");
	snprintf(cmd, sizeof(cmd), "ln -sf /etc/hostname %s", link);
	assert_int_equal(system(cmd), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_desc("d.vmdk", cases[i].line);
		struct vdisk *d;
		struct vdisk_open_opts o = { .format = "vmdk" };
		struct vdisk_error e;
		int r = vdisk_open(&d, img, &o, &e);
		if (r == 0)
			vdisk_close(d);
		if (r >= 0 || !strstr(e.msg, cases[i].needle))
			print_error("'%s': got %d '%s'\n", cases[i].line, r, e.msg);
		assert_true(r < 0);
		assert_non_null(strstr(e.msg, cases[i].needle));
	}
}

static void t_not_vmdk(void **s)
{
	(void)s;
	tu_path(img, sizeof(img), "junk.vmdk");
	uint8_t junk[4096];
	tu_fill(junk, sizeof(junk), 9);
	FILE *f = fopen(img, "w");
	assert_non_null(f);
	fwrite(junk, 1, sizeof(junk), f);
	fclose(f);
	struct vdisk *d;
	struct vdisk_open_opts o = { .format = "vmdk" };
	struct vdisk_error e;
	assert_true(vdisk_open(&d, img, &o, &e) < 0);
	assert_true(e.msg[0] != 0);
	/* COWD */
	tu_patch(img, 0, "COWD", 4);
	expect_open_error(img, -ENOTSUP, "COWD");
	/* a huge text file */
	assert_int_equal(truncate(img, 2 << 20), 0);
	tu_patch(img, 0, "# Disk", 6);
	expect_open_error(img, -EINVAL, "too large");
	/* probing: vmdk only when asked, raw otherwise */
	fresh(NULL);
	struct vdisk_error pe;
	assert_string_equal(vdisk_probe(img, &pe), "vmdk");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_grain_size),
		cmocka_unit_test(t_grain_tables),
		cmocka_unit_test(t_truncated),
		cmocka_unit_test(t_stream),
		cmocka_unit_test(t_grain_in_metadata),
		cmocka_unit_test(t_extent_lines),
		cmocka_unit_test(t_escaping_paths),
		cmocka_unit_test(t_not_vmdk),
	};
	tu_mkdir();
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	tu_rmdir();
	return r;
}
