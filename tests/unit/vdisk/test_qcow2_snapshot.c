/* SPDX-License-Identifier: MIT */
/* qcow2 internal snapshots: create, apply, delete, VM-state area, names,
 * refcount limits, size changes, backing files. */
#include <sys/uio.h>

#include "test_util.h"

#define DISK (4u << 20)

static void rnd_io(struct vdisk *d, uint8_t *ref, uint64_t size, uint64_t *seed, int n)
{
	uint8_t *buf = malloc(200000);
	for (int i = 0; i < n; i++) {
		*seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t len = 1 + (*seed >> 20) % 200000, off = (*seed >> 40) % (size - len);
		if ((*seed >> 8) % 5 == 0) {
			assert_int_equal(vdisk_write_zeroes(d, off, len, VDISK_ZERO_MAY_UNMAP), 0);
			memset(ref + off, 0, len);
		} else {
			tu_fill(buf, len, *seed);
			assert_int_equal(vdisk_pwrite(d, buf, len, off), 0);
			memcpy(ref + off, buf, len);
		}
	}
	free(buf);
}

static void expect(struct vdisk *d, const uint8_t *ref, uint64_t size)
{
	uint8_t *got = malloc(size);
	assert_int_equal(vdisk_size(d), size);
	assert_int_equal(vdisk_pread(d, got, size, 0), 0);
	assert_memory_equal(got, ref, size);
	free(got);
}

/* Several snapshots of a changing disk; each applies back exactly, in any
 * order, then they are deleted one by one; check is clean throughout. */
static void model(uint32_t cs, uint32_t rbits, int compat, bool extl2, bool compressed)
{
	char p[300];
	tu_path(p, sizeof(p), "snap.qcow2");
	struct vdisk_create_opts co = { .format = "qcow2", .size = DISK, .cluster_size = cs,
	                                .refcount_bits = rbits, .compat = compat,
	                                .extended_l2 = extl2 };
	tu_create(p, &co);
	struct vdisk *d = tu_open(p, "qcow2", VDISK_OPEN_RDWR);
	enum { N = 4 };
	uint8_t *ref[N + 1];
	for (int i = 0; i <= N; i++)
		ref[i] = calloc(1, DISK);
	uint64_t seed = cs + rbits;
	if (compressed) {
		uint8_t *c = malloc(cs);
		for (uint64_t off = 0; off + cs <= DISK / 2; off += 3 * (uint64_t)cs) {
			memset(c, (int)(off / cs), cs);
			assert_int_equal(vdisk_pwrite_compressed(d, c, cs, off), 0);
			memcpy(ref[N] + off, c, cs);
		}
		free(c);
	}
	for (int s = 0; s < N; s++) {
		rnd_io(d, ref[N], DISK, &seed, 15);
		memcpy(ref[s], ref[N], DISK);
		char name[16];
		snprintf(name, sizeof(name), "s%d", s);
		assert_int_equal(vdisk_snapshot_create(d, name, NULL, 0), 0);
		tu_check_clean(d);
	}
	rnd_io(d, ref[N], DISK, &seed, 15);
	expect(d, ref[N], DISK);
	struct vdisk_snapshot *l;
	unsigned n;
	assert_int_equal(vdisk_snapshot_list(d, &l, &n), 0);
	assert_int_equal(n, N);
	assert_string_equal(l[0].id, "1");
	assert_string_equal(l[3].name, "s3");
	assert_int_equal(l[2].disk_size, DISK);
	free(l);
	static const int order[] = { 2, 0, 3, 1 };
	for (int k = 0; k < N; k++) {
		char name[16];
		snprintf(name, sizeof(name), "s%d", order[k]);
		assert_int_equal(vdisk_snapshot_apply(d, name), 0);
		expect(d, ref[order[k]], DISK);
		tu_check_clean(d);
		/* writes after an apply copy-on-write the shared clusters */
		memcpy(ref[N], ref[order[k]], DISK);
		rnd_io(d, ref[N], DISK, &seed, 5);
		expect(d, ref[N], DISK);
		tu_check_clean(d);
	}
	/* reopen: still the same */
	assert_int_equal(vdisk_close(d), 0);
	d = tu_open(p, "qcow2", VDISK_OPEN_RDWR);
	expect(d, ref[N], DISK);
	assert_int_equal(vdisk_snapshot_delete(d, "s1"), 0);
	tu_check_clean(d);
	assert_int_equal(vdisk_snapshot_delete(d, "1"), 0); /* by id: s0 */
	tu_check_clean(d);
	assert_int_equal(vdisk_snapshot_apply(d, "s3"), 0);
	expect(d, ref[3], DISK);
	assert_int_equal(vdisk_snapshot_delete(d, "s3"), 0);
	assert_int_equal(vdisk_snapshot_delete(d, "s2"), 0);
	assert_int_equal(vdisk_snapshot_delete(d, "s2"), -ENOENT);
	expect(d, ref[3], DISK);
	tu_check_clean(d);
	assert_int_equal(vdisk_snapshot_list(d, &l, &n), 0);
	assert_int_equal(n, 0);
	free(l);
	/* everything the snapshots held was freed: a fresh overwrite of the
	 * whole disk leaves no more than the disk and its metadata */
	assert_int_equal(vdisk_close(d), 0);
	d = tu_open(p, "qcow2", 0);
	expect(d, ref[3], DISK);
	tu_check_clean(d);
	vdisk_close(d);
	for (int i = 0; i <= N; i++)
		free(ref[i]);
}

static void t_model_64k(void **s) { (void)s; model(65536, 16, 3, false, false); }
static void t_model_4k_r4(void **s) { (void)s; model(4096, 4, 3, false, false); }
static void t_model_512_r64(void **s) { (void)s; model(512, 64, 3, false, false); }
static void t_model_v2(void **s) { (void)s; model(65536, 16, 2, false, false); }
static void t_model_extl2(void **s) { (void)s; model(32768, 16, 3, true, false); }
static void t_model_compressed(void **s) { (void)s; model(4096, 8, 3, false, true); }

/* The VM-state area: gathered from an iovec, read back at any offset,
 * independent of the disk contents and of later writes. */
static void t_vmstate(void **s)
{
	(void)s;
	char p[300];
	tu_path(p, sizeof(p), "vm.qcow2");
	struct vdisk_create_opts co = { .format = "qcow2", .size = DISK, .cluster_size = 4096 };
	tu_create(p, &co);
	struct vdisk *d = tu_open(p, "qcow2", VDISK_OPEN_RDWR);
	size_t len = 3u << 20;
	uint8_t *vm = malloc(len), *got = malloc(len);
	tu_fill(vm, len, 99);
	struct iovec iov[3] = { { vm, 1000 }, { vm + 1000, len - 5000 }, { vm + len - 4000, 4000 } };
	struct vdisk_snapshot_params sp = { .name = "with-state", .vmstate = iov, .vmstate_cnt = 3,
	                                    .vm_clock_nsec = 123456789, .icount = 42 };
	assert_int_equal(vdisk_snapshot_create_ex(d, &sp), 0);
	uint8_t junk[8192];
	tu_fill(junk, sizeof(junk), 5);
	for (uint64_t off = 0; off < DISK; off += 65536)
		assert_int_equal(vdisk_pwrite(d, junk, sizeof(junk), off), 0);
	assert_int_equal(vdisk_snapshot_read_vmstate(d, "with-state", got, len, 0), 0);
	assert_memory_equal(got, vm, len);
	assert_int_equal(vdisk_snapshot_read_vmstate(d, "with-state", got, 777, 123457), 0);
	assert_memory_equal(got, vm + 123457, 777);
	assert_int_equal(vdisk_snapshot_read_vmstate(d, "with-state", got, 2, len - 1), -EINVAL);
	struct vdisk_snapshot *l;
	unsigned n;
	assert_int_equal(vdisk_snapshot_list(d, &l, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(l[0].vm_state_size, len);
	assert_int_equal(l[0].vm_clock_nsec, 123456789);
	assert_int_equal(l[0].icount, 42);
	free(l);
	tu_check_clean(d);
	/* applying leaves the VM state out of the guest-visible disk */
	assert_int_equal(vdisk_snapshot_apply(d, "with-state"), 0);
	assert_int_equal(vdisk_size(d), DISK);
	assert_int_equal(vdisk_pread(d, got, 8192, 0), 0);
	memset(junk, 0, sizeof(junk));
	assert_memory_equal(got, junk, 8192);
	tu_check_clean(d);
	assert_int_equal(vdisk_close(d), 0);
	d = tu_open(p, "qcow2", VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_snapshot_read_vmstate(d, "1", got, len, 0), 0);
	assert_memory_equal(got, vm, len);
	assert_int_equal(vdisk_snapshot_delete(d, "with-state"), 0);
	tu_check_clean(d);
	vdisk_close(d);
	free(vm);
	free(got);
}

static void t_names_and_limits(void **s)
{
	(void)s;
	char p[300];
	tu_path(p, sizeof(p), "n.qcow2");
	struct vdisk_create_opts co = { .format = "qcow2", .size = DISK };
	tu_create(p, &co);
	struct vdisk *d = tu_open(p, "qcow2", VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_snapshot_create(d, "a", NULL, 0), 0);
	assert_int_equal(vdisk_snapshot_create(d, "a", NULL, 0), -EEXIST);
	assert_int_equal(vdisk_snapshot_create(d, "1", NULL, 0), -EEXIST); /* an id */
	assert_int_equal(vdisk_snapshot_create(d, "", NULL, 0), -EINVAL);
	char longname[300];
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	assert_int_equal(vdisk_snapshot_create(d, longname, NULL, 0), -EINVAL);
	struct vdisk_snapshot_params sp = { .name = "b", .id = "7", .icount = UINT64_MAX };
	assert_int_equal(vdisk_snapshot_create_ex(d, &sp), 0);
	assert_int_equal(vdisk_snapshot_create(d, "c", NULL, 0), 0); /* gets id 8 */
	struct vdisk_snapshot *l;
	unsigned n;
	assert_int_equal(vdisk_snapshot_list(d, &l, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(l[2].id, "8");
	assert_int_equal(l[0].icount, UINT64_MAX);
	free(l);
	assert_int_equal(vdisk_snapshot_apply(d, "nope"), -ENOENT);
	vdisk_close(d);
	/* read-only handles cannot change snapshots */
	d = tu_open(p, "qcow2", 0);
	assert_int_equal(vdisk_snapshot_create(d, "z", NULL, 0), -EBADF);
	assert_int_equal(vdisk_snapshot_delete(d, "a"), -EBADF);
	vdisk_close(d);
	/* 1-bit refcounts cannot share clusters */
	struct vdisk_create_opts c1 = { .format = "qcow2", .size = DISK, .refcount_bits = 1 };
	tu_create(p, &c1);
	d = tu_open(p, "qcow2", VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_pwrite(d, "x", 1, 0), 0);
	assert_int_equal(vdisk_snapshot_create(d, "a", NULL, 0), -ENOTSUP);
	tu_check_clean(d);
	vdisk_close(d);
	/* 2-bit refcounts: three references at most; the refusal changes nothing */
	struct vdisk_create_opts c2 = { .format = "qcow2", .size = DISK, .refcount_bits = 2 };
	tu_create(p, &c2);
	d = tu_open(p, "qcow2", VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_pwrite(d, "x", 1, 0), 0);
	assert_int_equal(vdisk_snapshot_create(d, "a", NULL, 0), 0);
	assert_int_equal(vdisk_snapshot_create(d, "b", NULL, 0), 0);
	assert_int_equal(vdisk_snapshot_create(d, "c", NULL, 0), -ERANGE);
	assert_int_equal(vdisk_snapshot_apply(d, "a"), -ERANGE);
	tu_check_clean(d);
	assert_int_equal(vdisk_pwrite(d, "y", 1, 0), 0);
	assert_int_equal(vdisk_snapshot_apply(d, "a"), 0);
	char c;
	assert_int_equal(vdisk_pread(d, &c, 1, 0), 0);
	assert_int_equal(c, 'x');
	tu_check_clean(d);
	vdisk_close(d);
}

/* A snapshot remembers the disk size; applying it restores that size. */
static void t_size_change(void **s)
{
	(void)s;
	char p[300];
	tu_path(p, sizeof(p), "sz.qcow2");
	struct vdisk_create_opts co = { .format = "qcow2", .size = 1 << 20, .cluster_size = 512 };
	tu_create(p, &co);
	struct vdisk *d = tu_open(p, "qcow2", VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_pwrite(d, "small", 5, (1 << 20) - 5), 0);
	assert_int_equal(vdisk_snapshot_create(d, "small", NULL, 0), 0);
	assert_int_equal(vdisk_resize(d, 8u << 20, 0), 0);
	assert_int_equal(vdisk_resize(d, 1u << 20, VDISK_RESIZE_SHRINK), -ENOTSUP);
	assert_int_equal(vdisk_pwrite(d, "big", 3, (8u << 20) - 3), 0);
	assert_int_equal(vdisk_snapshot_create(d, "big", NULL, 0), 0);
	assert_int_equal(vdisk_snapshot_apply(d, "small"), 0);
	assert_int_equal(vdisk_size(d), 1 << 20);
	char b[5];
	assert_int_equal(vdisk_pread(d, b, 5, (1 << 20) - 5), 0);
	assert_memory_equal(b, "small", 5);
	tu_check_clean(d);
	assert_int_equal(vdisk_snapshot_apply(d, "big"), 0);
	assert_int_equal(vdisk_size(d), 8u << 20);
	assert_int_equal(vdisk_pread(d, b, 3, (8u << 20) - 3), 0);
	assert_memory_equal(b, "big", 3);
	tu_check_clean(d);
	assert_int_equal(vdisk_close(d), 0);
	d = tu_open(p, "qcow2", 0);
	assert_int_equal(vdisk_size(d), 8u << 20);
	vdisk_close(d);
}

/* An overlay's snapshots: unallocated clusters keep reading the backing file. */
static void t_backing(void **s)
{
	(void)s;
	char base[300], top[300];
	tu_path(base, sizeof(base), "b.raw");
	tu_path(top, sizeof(top), "t.qcow2");
	struct vdisk_create_opts bo = { .format = "raw", .size = DISK };
	tu_create(base, &bo);
	uint8_t *ref = malloc(DISK), *r2 = malloc(DISK);
	tu_fill(ref, DISK, 3);
	struct vdisk *d = tu_open(base, "raw", VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_pwrite(d, ref, DISK, 0), 0);
	vdisk_close(d);
	struct vdisk_create_opts to = { .format = "qcow2", .backing_file = "b.raw",
	                                .backing_format = "raw", .cluster_size = 4096 };
	tu_create(top, &to);
	d = tu_open(top, "qcow2", VDISK_OPEN_RDWR);
	uint64_t seed = 1;
	rnd_io(d, ref, DISK, &seed, 10);
	memcpy(r2, ref, DISK);
	assert_int_equal(vdisk_snapshot_create(d, "x", NULL, 0), 0);
	rnd_io(d, ref, DISK, &seed, 10);
	assert_int_equal(vdisk_discard(d, 0, DISK), 0);
	assert_int_equal(vdisk_snapshot_apply(d, "x"), 0);
	expect(d, r2, DISK);
	tu_check_clean(d);
	vdisk_close(d);
	free(ref);
	free(r2);
}

static int setup(void **s) { (void)s; tu_mkdir(); return 0; }
static int teardown(void **s) { (void)s; tu_rmdir(); return 0; }

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_model_64k),
		cmocka_unit_test(t_model_4k_r4),
		cmocka_unit_test(t_model_512_r64),
		cmocka_unit_test(t_model_v2),
		cmocka_unit_test(t_model_extl2),
		cmocka_unit_test(t_model_compressed),
		cmocka_unit_test(t_vmstate),
		cmocka_unit_test(t_names_and_limits),
		cmocka_unit_test(t_size_change),
		cmocka_unit_test(t_backing),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
