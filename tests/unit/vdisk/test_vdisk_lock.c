/* SPDX-License-Identifier: MIT */
/* vdisk_lock: an open image's lock given up and taken back, the way a
 * migration hands a disk from one process to another (two handles in one
 * process conflict like two processes: flock locks belong to the open file). */
#include "test_util.h"

static void lock_handover(const char *fmt)
{
	char p[300];
	tu_mkdir();
	tu_path(p, sizeof(p), "disk");
	struct vdisk_create_opts co = { .format = fmt, .size = 4 << 20 };
	tu_create(p, &co);
	struct vdisk *src = tu_open(p, fmt, VDISK_OPEN_RDWR);
	uint8_t buf[4096], got[4096];
	tu_fill(buf, sizeof(buf), 7);
	assert_int_equal(vdisk_pwrite(src, buf, sizeof(buf), 65536), 0);

	/* the owner holds it: a second writable open is refused */
	struct vdisk *dst = NULL;
	struct vdisk_open_opts o = { .flags = VDISK_OPEN_RDWR, .format = fmt };
	struct vdisk_error e;
	assert_true(vdisk_open(&dst, p, &o, &e) < 0);
	assert_int_equal(e.code, -EWOULDBLOCK);

	/* given up: flushed, read-only, and another writer gets in */
	assert_int_equal(vdisk_lock(src, VDISK_LOCK_NONE), 0);
	assert_int_equal(vdisk_pwrite(src, buf, sizeof(buf), 0), -EBADF);
	assert_int_equal(vdisk_pread(src, got, sizeof(got), 65536), 0);
	assert_memory_equal(got, buf, sizeof(buf));
	dst = tu_open(p, fmt, VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_pread(dst, got, sizeof(got), 65536), 0);
	assert_memory_equal(got, buf, sizeof(buf));
	/* ... and while it is there the old owner cannot take it back */
	assert_int_equal(vdisk_lock(src, VDISK_LOCK_EXCLUSIVE), -EWOULDBLOCK);
	assert_int_equal(vdisk_lock(src, VDISK_LOCK_SHARED), -EWOULDBLOCK);
	char msg[VDISK_ERRMSG_MAX];
	assert_non_null(strstr(vdisk_errmsg(src, msg, sizeof(msg)), "another process holds it"));
	assert_int_equal(vdisk_close(dst), 0);

	/* taken back: it writes again */
	assert_int_equal(vdisk_lock(src, VDISK_LOCK_EXCLUSIVE), 0);
	assert_true(vdisk_open(&dst, p, &o, &e) < 0);
	tu_fill(buf, sizeof(buf), 9);
	assert_int_equal(vdisk_pwrite(src, buf, sizeof(buf), 0), 0);
	/* shared: readers may join, writers not */
	assert_int_equal(vdisk_lock(src, VDISK_LOCK_SHARED), 0);
	struct vdisk *ro = tu_open(p, fmt, 0);
	assert_int_equal(vdisk_pread(ro, got, sizeof(got), 0), 0);
	assert_memory_equal(got, buf, sizeof(buf));
	assert_true(vdisk_open(&dst, p, &o, &e) < 0);
	assert_int_equal(vdisk_close(ro), 0);
	assert_int_equal(vdisk_lock(src, 7), -EINVAL);
	assert_int_equal(vdisk_close(src), 0);

	/* a read-only handle never becomes writable */
	ro = tu_open(p, fmt, 0);
	assert_int_equal(vdisk_lock(ro, VDISK_LOCK_EXCLUSIVE), 0);
	assert_int_equal(vdisk_pwrite(ro, buf, sizeof(buf), 0), -EBADF);
	assert_int_equal(vdisk_close(ro), 0);
	tu_rmdir();
}

static void test_raw(void **st) { (void)st; lock_handover("raw"); }
static void test_qcow2(void **st) { (void)st; lock_handover("qcow2"); }

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_raw),
		cmocka_unit_test(test_qcow2),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
