/* SPDX-License-Identifier: MIT */
/* Malformed VDI and VHD images in the spirit of qemu-iotests 084 (VDI block
 * sizes and counts, truncated files) and 146 (VHD size detection): each must
 * fail with a clear error naming the problem, or open with the size the
 * image's creator meant; never crash. */
#include "test_util.h"

#include <sys/stat.h>

static char img[300];

static void le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static void patch_le32(uint64_t off, uint32_t v) { uint8_t b[4]; le32(b, v); tu_patch(img, off, b, 4); }
static void patch_le64(uint64_t off, uint64_t v)
{
	uint8_t b[8];
	le32(b, (uint32_t)v);
	le32(b + 4, (uint32_t)(v >> 32));
	tu_patch(img, off, b, 8);
}
static void patch_be32(uint64_t off, uint32_t v) { uint8_t b[4]; tu_be32(b, v); tu_patch(img, off, b, 4); }
static void patch_be64(uint64_t off, uint64_t v) { uint8_t b[8]; tu_be64(b, v); tu_patch(img, off, b, 8); }

static uint64_t fsize(void)
{
	struct stat st;
	assert_int_equal(stat(img, &st), 0);
	return (uint64_t)st.st_size;
}

static void expect_error(const char *fmt, uint32_t flags, int err, const char *needle)
{
	struct vdisk *d;
	struct vdisk_open_opts o = { .format = fmt, .flags = flags };
	struct vdisk_error e;
	int r = vdisk_open(&d, img, &o, &e);
	if (r == 0)
		vdisk_close(d);
	if (r != err || !strstr(e.msg, needle))
		print_error("got %d '%s', expected %d with '%s'\n", r, r ? e.msg : "", err, needle);
	assert_int_equal(r, err);
	assert_non_null(strstr(e.msg, needle));
}

/* ---- VDI -------------------------------------------------------------- */

/* 16 MiB dynamic VDI (1 MiB blocks): header 0, block map 512 (16 entries),
 * data 1024; blocks 0 and 5 written (slots 0 and 1). */
static void vdi_fresh(void)
{
	tu_path(img, sizeof(img), "bad.vdi");
	struct vdisk_create_opts co = { .format = "vdi", .size = 16u << 20 };
	tu_create(img, &co);
	struct vdisk *d = tu_open(img, "vdi", VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_pwrite(d, "data", 4, 0), 0);
	assert_int_equal(vdisk_pwrite(d, "more", 4, 5u << 20), 0);
	assert_int_equal(vdisk_close(d), 0);
}

static void t_vdi_header(void **s)
{
	(void)s;
	vdi_fresh();
	patch_le32(0x40, 0x12345678);
	expect_error("vdi", 0, -EINVAL, "not a VDI image");
	vdi_fresh();
	patch_le32(0x44, 0x00020000);
	expect_error("vdi", 0, -ENOTSUP, "unsupported VDI version");
	vdi_fresh();
	patch_le32(0x48, 0);
	expect_error("vdi", 0, -EINVAL, "header size");
	vdi_fresh();
	patch_le32(0x4c, 4); /* differencing */
	expect_error("vdi", 0, -ENOTSUP, "image type 4");
}

static void t_vdi_block_size(void **s)
{
	(void)s;
	static const uint32_t bad[] = { 0, 1000, 256, 1u << 30, 0x80000000u, 3u << 20 };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		vdi_fresh();
		patch_le32(0x178, bad[i]);
		expect_error("vdi", 0, -EINVAL, "block size");
	}
	vdi_fresh();
	patch_le32(0x17c, 100);
	expect_error("vdi", 0, -EINVAL, "block extra");
}

static void t_vdi_block_count(void **s)
{
	(void)s;
	vdi_fresh();
	patch_le32(0x180, 0x40000000u);
	expect_error("vdi", 0, -EINVAL, "block count");
	vdi_fresh();
	patch_le32(0x180, 0xffffffffu);
	expect_error("vdi", 0, -EINVAL, "block count");
	/* more blocks than the file has room for in the map */
	vdi_fresh();
	patch_le32(0x180, 0x3fffffffu);
	expect_error("vdi", 0, -EINVAL, "extends beyond the end of the file");
	/* disk larger than its blocks */
	vdi_fresh();
	patch_le64(0x170, (16ull << 20) + 512);
	expect_error("vdi", 0, -EINVAL, "exceeds its 16 blocks");
	vdi_fresh();
	patch_le32(0x184, 17);
	expect_error("vdi", 0, -EINVAL, "allocated block count");
}

static void t_vdi_offsets(void **s)
{
	(void)s;
	vdi_fresh();
	patch_le32(0x154, 1u << 30);
	expect_error("vdi", 0, -EINVAL, "block map");
	vdi_fresh();
	patch_le32(0x154, 100);
	expect_error("vdi", 0, -EINVAL, "block map offset");
	vdi_fresh();
	patch_le32(0x158, 512);
	expect_error("vdi", 0, -EINVAL, "data offset");
}

static void t_vdi_map(void **s)
{
	(void)s;
	vdi_fresh();
	patch_le32(512 + 3 * 4, 16);
	expect_error("vdi", 0, -EINVAL, "beyond the 16 blocks");
	vdi_fresh();
	patch_le32(512 + 7 * 4, 1); /* block 7 shares block 5's slot */
	expect_error("vdi", 0, -EINVAL, "entries 5 and 7 both point to data block 1");
	/* forced open for a check: the check reports it */
	struct vdisk *d = tu_open(img, "vdi", VDISK_OPEN_FORCE_CORRUPT);
	struct vdisk_check_result r = { 0 };
	assert_int_equal(vdisk_check(d, &r, 0), 0);
	assert_true(r.corruptions > 0);
	vdisk_close(d);
}

static void t_vdi_truncated(void **s)
{
	(void)s;
	vdi_fresh();
	assert_int_equal(truncate(img, 300), 0);
	expect_error("vdi", 0, -EINVAL, "too short");
	vdi_fresh();
	assert_int_equal(truncate(img, 530), 0); /* inside the block map */
	expect_error("vdi", 0, -EINVAL, "extends beyond the end of the file");
	/* data cut off: reads as zeroes, no crash */
	vdi_fresh();
	assert_int_equal(truncate(img, 1024 + 2), 0);
	struct vdisk *d = tu_open(img, "vdi", 0);
	char buf[8] = "xxxxxxx";
	assert_int_equal(vdisk_pread(d, buf, 4, 0), 0);
	assert_memory_equal(buf, "da\0\0", 4);
	assert_int_equal(vdisk_pread(d, buf, 4, 5u << 20), 0);
	assert_memory_equal(buf, "\0\0\0\0", 4);
	vdisk_close(d);
}

/* ---- VHD -------------------------------------------------------------- */

static void vhd_sum(uint64_t off, size_t len, size_t csum)
{
	uint8_t *b = malloc(len);
	FILE *f = fopen(img, "rb");
	assert_non_null(f);
	assert_int_equal(fseek(f, (long)off, SEEK_SET), 0);
	assert_int_equal(fread(b, 1, len, f), len);
	fclose(f);
	uint32_t sum = 0;
	for (size_t i = 0; i < len; i++)
		if (i < csum || i >= csum + 4)
			sum += b[i];
	patch_be32(off + csum, ~sum);
	free(b);
}

/* fix both footers (dynamic) or the one (fixed) */
static void vhd_fix(bool dynamic)
{
	vhd_sum(fsize() - 512, 512, 64);
	if (dynamic)
		vhd_sum(0, 512, 64);
}

static void patch_footers_be32(uint32_t field, uint32_t v, bool dynamic)
{
	patch_be32(fsize() - 512 + field, v);
	if (dynamic)
		patch_be32(field, v);
	vhd_fix(dynamic);
}

/* 64 MiB dynamic VHD (2 MiB blocks): footer copy 0, header 512, BAT 1536
 * (32 entries, 512 bytes), first block at 2048; block 0 written. */
static void vhd_fresh(void)
{
	tu_path(img, sizeof(img), "bad.vhd");
	struct vdisk_create_opts co = { .format = "vpc", .size = 64u << 20, .force_size = true };
	tu_create(img, &co);
	struct vdisk *d = tu_open(img, "vpc", VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_pwrite(d, "data", 4, 0), 0);
	assert_int_equal(vdisk_close(d), 0);
}

static void t_vhd_footer(void **s)
{
	(void)s;
	vhd_fresh();
	tu_patch(img, fsize() - 512, "XXXXXXXX", 8);
	tu_patch(img, 0, "XXXXXXXX", 8);
	expect_error("vpc", 0, -EINVAL, "not a VHD image");
	/* a bad checksum at the end: the copy at 0 still describes the disk */
	vhd_fresh();
	patch_be32(fsize() - 512 + 64, 0x12345678);
	struct vdisk *d = tu_open(img, "vpc", 0);
	assert_int_equal(vdisk_size(d), 64u << 20);
	vdisk_close(d);
	/* both bad */
	patch_be32(64, 0x12345678);
	expect_error("vpc", 0, -EINVAL, "footer checksum mismatch");
	vhd_fresh();
	patch_footers_be32(60, 5, true);
	expect_error("vpc", 0, -ENOTSUP, "disk type 5");
	vhd_fresh();
	assert_int_equal(truncate(img, 100), 0);
	expect_error("vpc", 0, -EINVAL, "too short");
}

static void t_vhd_dynhdr(void **s)
{
	(void)s;
	vhd_fresh();
	patch_be32(512 + 32, 0x300000);
	expect_error("vpc", 0, -EINVAL, "dynamic header checksum mismatch");
	static const uint32_t bad[] = { 0, 256, 1000, 0x300000, 1u << 30 };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		vhd_fresh();
		patch_be32(512 + 32, bad[i]);
		vhd_sum(512, 1024, 36);
		expect_error("vpc", 0, -EINVAL, "block size");
	}
	vhd_fresh();
	patch_be32(512 + 28, 31); /* 31 entries of 2 MiB < 64 MiB */
	vhd_sum(512, 1024, 36);
	expect_error("vpc", 0, -EINVAL, "too small for the disk size");
	vhd_fresh();
	patch_be32(512 + 28, 0x40000000u);
	vhd_sum(512, 1024, 36);
	expect_error("vpc", 0, -EINVAL, "extends beyond the end of the file");
	vhd_fresh();
	patch_be64(512 + 16, 1ull << 40);
	vhd_sum(512, 1024, 36);
	expect_error("vpc", 0, -EINVAL, "block table");
	vhd_fresh();
	patch_footers_be32(16, 1, true); /* header offset beyond 4 GiB */
	expect_error("vpc", 0, -EINVAL, "dynamic header offset");
}

static void t_vhd_bat(void **s)
{
	(void)s;
	vhd_fresh();
	patch_be32(1536 + 4, 0x00ffffffu);
	expect_error("vpc", 0, -EINVAL, "entry 1: block");
	vhd_fresh();
	patch_be32(1536 + 4, 1); /* inside the dynamic header */
	expect_error("vpc", 0, -EINVAL, "overlaps");
	vhd_fresh();
	patch_be32(1536 + 4, 3); /* on the block table */
	expect_error("vpc", 0, -EINVAL, "overlaps the block table");
	/* data cut off after the table: the end footer is gone, the block beyond */
	vhd_fresh();
	assert_int_equal(truncate(img, 4096), 0);
	expect_error("vpc", 0, -EINVAL, "extends beyond the end of the data");
}

static void t_vhd_fixed(void **s)
{
	(void)s;
	tu_path(img, sizeof(img), "bad.vhd");
	struct vdisk_create_opts co = { .format = "vpc", .size = 8u << 20, .subformat = "fixed",
	                                .force_size = true };
	tu_create(img, &co);
	struct vdisk *d = tu_open(img, "vpc", 0);
	assert_int_equal(vdisk_size(d), 8u << 20);
	vdisk_close(d);
	patch_be64(fsize() - 512 + 48, 16u << 20);
	vhd_fix(false);
	expect_error("vpc", 0, -EINVAL, "holds only");
	patch_be64(fsize() - 512 + 48, 4096ull << 30);
	vhd_fix(false);
	expect_error("vpc", 0, -EFBIG, "2040 GiB");
}

/* iotests 146 in spirit: the size each creator's software reads */
static void t_vhd_size_rules(void **s)
{
	(void)s;
	tu_path(img, sizeof(img), "size.vhd");
	struct vdisk_create_opts co = { .format = "vpc", .size = 100u << 20, .subformat = "fixed" };
	tu_create(img, &co);
	/* qemu's CHS for 100 MiB: 1 MiB more would not fit: 203 x 16 x 63 */
	uint64_t chs, cur = 100u << 20;
	{
		struct vdisk *d = tu_open(img, "vpc", 0);
		chs = vdisk_size(d);
		vdisk_close(d);
	}
	assert_true(chs >= cur);
	patch_be64(fsize() - 512 + 48, cur - 4096); /* current size differs from the CHS */
	static const struct { const char app[5]; bool by_chs; } apps[] = {
		{ "vpc ", true }, { "qemu", true }, { "abcd", true },
		{ "win ", false }, { "qem2", false }, { "d2v ", false }, { "CTXS", false },
		{ "tap", false },
	};
	for (size_t i = 0; i < sizeof(apps) / sizeof(apps[0]); i++) {
		tu_patch(img, fsize() - 512 + 28, apps[i].app, 4);
		vhd_fix(false);
		struct vdisk *d = tu_open(img, "vpc", 0);
		if (vdisk_size(d) != (apps[i].by_chs ? chs : cur - 4096))
			print_error("creator '%s': size %llu\n", apps[i].app,
			            (unsigned long long)vdisk_size(d));
		assert_int_equal(vdisk_size(d), apps[i].by_chs ? chs : cur - 4096);
		vdisk_close(d);
	}
	/* the maximum geometry: current size whoever made it */
	tu_patch(img, fsize() - 512 + 28, "vpc ", 4);
	uint8_t geo[4] = { 0xff, 0xff, 16, 255 };
	tu_patch(img, fsize() - 512 + 56, geo, 4);
	vhd_fix(false);
	struct vdisk *d = tu_open(img, "vpc", 0);
	assert_int_equal(vdisk_size(d), cur - 4096);
	vdisk_close(d);
}

static void t_vhd_parent(void **s)
{
	(void)s;
	char base[300], child[300];
	tu_path(base, sizeof(base), "base.vhd");
	tu_path(child, sizeof(child), "child.vhd");
	struct vdisk_create_opts co = { .format = "vpc", .size = 8u << 20 };
	tu_create(base, &co);
	struct vdisk_create_opts cc = { .format = "vpc", .backing_file = "base.vhd" };
	tu_create(child, &cc);
	struct vdisk *d = tu_open(child, "vpc", VDISK_OPEN_RDWR);
	assert_non_null(vdisk_backing(d));
	assert_int_equal(vdisk_pwrite(d, "x", 1, 1000), 0);
	vdisk_close(d);
	snprintf(img, sizeof(img), "%s", child);
	/* the parent gone */
	char moved[300];
	tu_path(moved, sizeof(moved), "elsewhere.vhd");
	assert_int_equal(rename(base, moved), 0);
	expect_error("vpc", 0, -ENOENT, "parent disk not found");
	/* without backing it opens */
	d = tu_open(child, "vpc", VDISK_OPEN_NO_BACKING);
	vdisk_close(d);
	/* another disk under the parent's name */
	tu_create(base, &co);
	expect_error("vpc", 0, -EINVAL, "unique id");
	assert_int_equal(rename(moved, base), 0);
	d = tu_open(child, "vpc", 0);
	vdisk_close(d);
	/* a locator pointing outside the file */
	patch_be64(512 + 576 + 16, 1ull << 40);
	vhd_sum(512, 1024, 36);
	expect_error("vpc", 0, -EINVAL, "lies outside the file");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_vdi_header),
		cmocka_unit_test(t_vdi_block_size),
		cmocka_unit_test(t_vdi_block_count),
		cmocka_unit_test(t_vdi_offsets),
		cmocka_unit_test(t_vdi_map),
		cmocka_unit_test(t_vdi_truncated),
		cmocka_unit_test(t_vhd_footer),
		cmocka_unit_test(t_vhd_dynhdr),
		cmocka_unit_test(t_vhd_bat),
		cmocka_unit_test(t_vhd_fixed),
		cmocka_unit_test(t_vhd_size_rules),
		cmocka_unit_test(t_vhd_parent),
	};
	tu_mkdir();
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	tu_rmdir();
	return r;
}
