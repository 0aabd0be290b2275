/* SPDX-License-Identifier: MIT */
/* Malformed qcow2 images in the spirit of qemu-iotests 060 and 080: each
 * must fail with a clear error naming the problem, never crash, and a
 * corrupt image is never written to. */
#include "test_util.h"

static char img[300];

/* Fresh 64 KiB-cluster image with one data cluster written at guest 0:
 * header 0, reftable 0x10000, refblock 0x20000, L1 0x30000,
 * data 0x40000 (allocated before its L2 table), L2 0x50000. */
static void fresh(void)
{
	tu_path(img, sizeof(img), "bad.qcow2");
	struct vdisk_create_opts co = { .format = "qcow2", .size = 64u << 20 };
	tu_create(img, &co);
	struct vdisk *d = tu_open(img, "qcow2", VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_pwrite(d, "data", 4, 0), 0);
	assert_int_equal(vdisk_close(d), 0);
}

static void expect_open_error(uint32_t flags, int err, const char *needle)
{
	struct vdisk *d;
	struct vdisk_open_opts o = { .format = "qcow2", .flags = flags };
	struct vdisk_error e;
	int r = vdisk_open(&d, img, &o, &e);
	if (r == 0)
		vdisk_close(d);
	assert_int_equal(r, err);
	if (!strstr(e.msg, needle))
		print_error("message '%s' lacks '%s'\n", e.msg, needle);
	assert_non_null(strstr(e.msg, needle));
}

static void patch32(uint64_t off, uint32_t v) { uint8_t b[4]; tu_be32(b, v); tu_patch(img, off, b, 4); }
static void patch64(uint64_t off, uint64_t v) { uint8_t b[8]; tu_be64(b, v); tu_patch(img, off, b, 8); }

static void t_header_length(void **s)
{
	(void)s;
	fresh();
	patch32(100, 0xfffffff8u);
	expect_open_error(0, -EINVAL, "header_length");
	fresh();
	patch32(100, 105);
	expect_open_error(0, -EINVAL, "header_length");
}

static void t_huge_extension(void **s)
{
	(void)s;
	fresh();
	/* first extension follows the 112-byte header */
	patch32(112 + 4, 0x7fffffffu);
	expect_open_error(0, -EINVAL, "header extension");
}

static void t_reftable(void **s)
{
	(void)s;
	fresh();
	patch64(48, 0x10000 + 512);
	expect_open_error(0, -EINVAL, "refcount table offset");
	fresh();
	patch64(48, 1ull << 40);
	expect_open_error(0, -EINVAL, "outside the file");
	fresh();
	patch32(56, 0x10000000u);
	expect_open_error(0, -EINVAL, "refcount table size");
	fresh();
	patch64(0x10000, 0); /* refcount block 0 at offset 0 */
	patch64(0x10000 + 8, 0x200);
	expect_open_error(0, -EINVAL, "refcount block 1");
}

static void t_l1(void **s)
{
	(void)s;
	fresh();
	patch32(36, 0x10000000u);
	expect_open_error(0, -EFBIG, "L1 table too large");
	fresh();
	patch64(40, 0x30000 + 8);
	expect_open_error(0, -EINVAL, "L1 table offset");
	fresh();
	patch32(36, 0);
	expect_open_error(0, -EINVAL, "L1 table too small");
	fresh();
	patch64(0x30000, 0x8000000000050200ull); /* unaligned L2 */
	expect_open_error(0, -EINVAL, "unaligned");
	fresh();
	patch64(0x30000, 0x8000000000010000ull); /* L2 == refcount table */
	expect_open_error(0, -EINVAL, "overlaps the refcount table");
}

static void t_snapshot_table(void **s)
{
	(void)s;
	fresh();
	patch32(60, 5);
	patch64(64, 1ull << 36);
	expect_open_error(0, -EINVAL, "snapshot table");
	fresh();
	patch32(60, 1000000);
	expect_open_error(0, -EINVAL, "too many snapshots");
}

static void t_backing_name(void **s)
{
	(void)s;
	fresh();
	patch64(8, 0x200);
	patch32(16, 2000);
	expect_open_error(0, -EINVAL, "backing file name length");
	fresh();
	patch64(8, 0x200);
	patch32(16, 13);
	tu_patch(img, 0x200, "json:{\"a\":1}", 12);
	tu_patch(img, 0x20c, "}", 1);
	expect_open_error(0, -EPERM, "json:");
	fresh();
	patch64(8, 0x200);
	patch32(16, 17);
	tu_patch(img, 0x200, "nbd://evil:10809/", 17);
	expect_open_error(0, -EPERM, "protocol prefix");
}

static void t_unknown_incompat(void **s)
{
	(void)s;
	fresh();
	patch64(72, 1ull << 10);
	expect_open_error(0, -ENOTSUP, "bit 10");
	fresh();
	patch64(72, 1ull << 2); /* external data file */
	expect_open_error(0, -EPERM, "external data file");
	fresh();
	patch32(32, 1); /* AES encryption */
	expect_open_error(0, -ENOTSUP, "encrypted");
}

static void t_corrupt_bit(void **s)
{
	(void)s;
	fresh();
	patch64(72, 1ull << 1);
	expect_open_error(VDISK_OPEN_RDWR, -EACCES, "marked corrupt");
	struct vdisk *d = tu_open(img, "qcow2", 0); /* read-only is allowed */
	char b[4];
	assert_int_equal(vdisk_pread(d, b, 4, 0), 0);
	assert_memory_equal(b, "data", 4);
	vdisk_close(d);
}

/* 060: an L2 entry pointing into the L1 table is caught on access, the
 * image is marked corrupt and nothing is written there. */
static void t_l2_into_metadata(void **s)
{
	(void)s;
	fresh();
	patch64(0x50000, 0x8000000000030000ull);
	struct vdisk *d = tu_open(img, "qcow2", VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_pwrite(d, "XXXX", 4, 0), -EIO);
	char m[VDISK_ERRMSG_MAX];
	vdisk_errmsg(d, m, sizeof(m));
	assert_non_null(strstr(m, "overlaps the active L1 table"));
	assert_int_equal(vdisk_pwrite(d, "XXXX", 4, 1 << 20), -EIO); /* all writes refused */
	vdisk_close(d);
	FILE *f = fopen(img, "rb");
	uint8_t l1[8], inc[8];
	assert_int_equal(fseek(f, 0x30000, SEEK_SET), 0);
	assert_int_equal(fread(l1, 1, 8, f), 8);
	assert_int_equal(fseek(f, 72, SEEK_SET), 0);
	assert_int_equal(fread(inc, 1, 8, f), 8);
	fclose(f);
	assert_int_equal(l1[7], 0x00); /* L1 entry 0 = 0x8000000000050000 untouched */
	assert_int_equal(l1[5], 0x05);
	assert_true(inc[7] & 2); /* corrupt bit set */
	expect_open_error(VDISK_OPEN_RDWR, -EACCES, "marked corrupt");
}

static void t_truncated(void **s)
{
	(void)s;
	fresh();
	assert_int_equal(truncate(img, 50), 0);
	expect_open_error(0, -EINVAL, "not a qcow2 image");
	fresh();
	assert_int_equal(truncate(img, 0x30000), 0); /* L1 gone */
	expect_open_error(0, -EINVAL, "outside the file");
}

static void t_bad_cluster_bits(void **s)
{
	(void)s;
	fresh();
	patch32(20, 30);
	expect_open_error(0, -EINVAL, "cluster size");
	fresh();
	patch32(4, 4);
	expect_open_error(0, -ENOTSUP, "version");
	fresh();
	patch32(96, 7);
	expect_open_error(0, -EINVAL, "refcount_order");
}

/* 060: refcounts lower than the references: check reports corruptions,
 * -r all repairs them and the image checks clean afterwards. */
static void t_check_repair(void **s)
{
	(void)s;
	fresh();
	/* refcount of the data cluster (index 4) = 0, plus a leak at index 9 */
	uint8_t z[2] = { 0, 0 }, one[2] = { 0, 1 };
	tu_patch(img, 0x20000 + 4 * 2, z, 2);
	tu_patch(img, 0x20000 + 9 * 2, one, 2);
	struct vdisk *d = tu_open(img, "qcow2", 0);
	struct vdisk_check_result r = { 0 };
	assert_int_equal(vdisk_check(d, &r, 0), 0);
	assert_int_equal(r.corruptions, 2); /* refcount 0 < 1, and OFLAG_COPIED mismatch */
	assert_int_equal(r.leaks, 1);
	vdisk_close(d);
	d = tu_open(img, "qcow2", VDISK_OPEN_RDWR | VDISK_OPEN_FORCE_CORRUPT);
	memset(&r, 0, sizeof(r));
	assert_int_equal(vdisk_check(d, &r, VDISK_FIX_LEAKS | VDISK_FIX_ERRORS), 0);
	assert_int_equal(r.corruptions, 0);
	assert_int_equal(r.leaks, 0);
	assert_true(r.leaks_fixed >= 1);
	tu_check_clean(d);
	vdisk_close(d);
}

static int setup(void **s) { (void)s; tu_mkdir(); return 0; }
static int teardown(void **s) { (void)s; tu_rmdir(); return 0; }

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_header_length),
		cmocka_unit_test(t_huge_extension),
		cmocka_unit_test(t_reftable),
		cmocka_unit_test(t_l1),
		cmocka_unit_test(t_snapshot_table),
		cmocka_unit_test(t_backing_name),
		cmocka_unit_test(t_unknown_incompat),
		cmocka_unit_test(t_corrupt_bit),
		cmocka_unit_test(t_l2_into_metadata),
		cmocka_unit_test(t_truncated),
		cmocka_unit_test(t_bad_cluster_bits),
		cmocka_unit_test(t_check_repair),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
