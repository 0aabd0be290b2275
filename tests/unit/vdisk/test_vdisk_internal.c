/* SPDX-License-Identifier: MIT */
/* White-box tests: refcount packing for every width, range locks,
 * backing-name policy, compression round trip, write-behind runs. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_util.h"
#include "qcow2.h"
#include "rangelock.h"

static void t_refcount_widths(void **s)
{
	(void)s;
	uint8_t blk[512];
	for (uint32_t order = 0; order <= 6; order++) {
		struct qcow2 q = { .refcount_order = order, .refcount_bits = 1u << order };
		uint64_t n = 512 * 8 >> order, max = order == 6 ? UINT64_MAX : (1ull << (1u << order)) - 1;
		memset(blk, 0, sizeof(blk));
		for (uint64_t i = 0; i < n; i++)
			qcow2_rb_set(&q, blk, i, (i * 0x9e3779b97f4a7c15ull) & max);
		for (uint64_t i = 0; i < n; i++)
			assert_int_equal(qcow2_rb_get(&q, blk, i), (i * 0x9e3779b97f4a7c15ull) & max);
	}
	/* qemu's layout: 1-bit refcounts are LSB first, 16-bit are big-endian */
	struct qcow2 q1 = { .refcount_order = 0 }, q4 = { .refcount_order = 4 };
	memset(blk, 0, sizeof(blk));
	qcow2_rb_set(&q1, blk, 1, 1);
	assert_int_equal(blk[0], 2);
	qcow2_rb_set(&q4, blk, 1, 0x1234);
	assert_int_equal(blk[2], 0x12);
	assert_int_equal(blk[3], 0x34);
}

static void t_backing_names(void **s)
{
	(void)s;
	char why[256];
	assert_int_equal(qcow2_backing_name_ok("base.qcow2", why, sizeof(why)), 0);
	assert_int_equal(qcow2_backing_name_ok("/abs/dir/base.img", why, sizeof(why)), 0);
	assert_int_equal(qcow2_backing_name_ok("./a:b.img", why, sizeof(why)), 0);
	assert_int_equal(qcow2_backing_name_ok("json:{}", why, sizeof(why)), -EPERM);
	assert_int_equal(qcow2_backing_name_ok("nbd:localhost:10809", why, sizeof(why)), -EPERM);
	assert_int_equal(qcow2_backing_name_ok("file:/etc/passwd", why, sizeof(why)), -EPERM);
	assert_int_equal(qcow2_backing_name_ok("https://x/y", why, sizeof(why)), -EPERM);
	assert_int_equal(qcow2_backing_name_ok("", why, sizeof(why)), -EINVAL);
}

static void t_compress_roundtrip(void **s)
{
	(void)s;
	uint8_t in[65536], out[65536], back[65536];
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i % 251 < 100 ? 'a' : i % 7);
	for (uint8_t t = 0; t < 2; t++) {
		struct qcow2 q = { .compression_type = t, .cluster_size = 65536 };
		ssize_t n = qcow2_compress(&q, in, sizeof(in), out, sizeof(out) - 512);
		assert_true(n > 0 && n < 65536);
		memset(out + n, 0, 512); /* sector padding must be tolerated */
		assert_int_equal(qcow2_decompress(&q, out, (size_t)n + 300, back, sizeof(back)), 0);
		assert_memory_equal(in, back, sizeof(in));
		out[n / 2] ^= 0xff; /* damaged data fails cleanly (or differs) */
		int r = qcow2_decompress(&q, out, (size_t)n, back, sizeof(back));
		assert_true(r < 0 || memcmp(in, back, sizeof(in)) != 0 || r == 0);
	}
}

struct rl_arg {
	struct rangelock *rl;
	int *inside;
	int bad;
};

static void *rl_worker(void *p)
{
	struct rl_arg *a = p;
	for (int i = 0; i < 2000; i++) {
		struct rl_node n;
		rangelock_lock(a->rl, &n, 100, 200, true);
		if (__atomic_add_fetch(a->inside, 1, __ATOMIC_SEQ_CST) != 1)
			a->bad = 1;
		__atomic_sub_fetch(a->inside, 1, __ATOMIC_SEQ_CST);
		rangelock_unlock(a->rl, &n);
	}
	return NULL;
}

static void t_rangelock(void **s)
{
	(void)s;
	struct rangelock rl;
	rangelock_init(&rl);
	/* disjoint exclusive ranges and shared readers coexist */
	struct rl_node a, b, c, d;
	rangelock_lock(&rl, &a, 0, 100, true);
	rangelock_lock(&rl, &b, 100, 200, true);
	rangelock_lock(&rl, &c, 300, 400, false);
	rangelock_lock(&rl, &d, 350, 450, false);
	rangelock_unlock(&rl, &a);
	rangelock_unlock(&rl, &b);
	rangelock_unlock(&rl, &c);
	rangelock_unlock(&rl, &d);
	/* overlapping exclusive holders are mutually exclusive */
	int inside = 0;
	struct rl_arg args[3] = { { &rl, &inside, 0 }, { &rl, &inside, 0 }, { &rl, &inside, 0 } };
	pthread_t t[3];
	for (int i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, rl_worker, &args[i]);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 3; i++)
		assert_int_equal(args[i].bad, 0);
	rangelock_destroy(&rl);
}

static void t_oset(void **s)
{
	(void)s;
	struct qc_oset o = { 0 };
	for (uint64_t i = 10; i > 0; i--)
		assert_int_equal(qc_oset_add(&o, i * 4096), 0);
	assert_true(qc_oset_hit(&o, 4096, 1, 4096));
	assert_true(qc_oset_hit(&o, 8191, 1, 4096));
	assert_false(qc_oset_hit(&o, 0, 4096, 4096));
	assert_false(qc_oset_hit(&o, 11 * 4096, 4096, 4096));
	qc_oset_del(&o, 4096);
	assert_false(qc_oset_hit(&o, 4096, 4096, 4096));
	qc_oset_free(&o);
}

/* Write-behind: sequential runs are kicked once they reach VD_WB_BYTES,
 * scattered writes never are. */
static void t_write_behind(void **s)
{
	(void)s;
	char path[] = "/tmp/vdisk-wb-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	static uint8_t buf[1 << 20];
	memset(buf, 0x5a, sizeof(buf));
	struct vd_wb wb = { 0 };
	/* scattered 4 KiB writes: each starts a run of its own */
	for (uint64_t i = 0; i < 4096; i++) {
		uint64_t off = (i * 100003 % 8192) * 4096;
		vd_wb_wrote(&wb, fd, off, 4096);
		assert_int_equal(atomic_load(&wb.start), off);
		assert_int_equal(atomic_load(&wb.pending), 4096);
	}
	/* a sequential run (with a gap below VD_WB_GAP): kicked at the mark */
	uint64_t off = 64u << 20, first = off;
	vd_wb_wrote(&wb, fd, off, 0);
	for (int i = 0; i < 12; i++) {
		assert_int_equal(vd_pwrite_full(fd, buf, sizeof(buf), off), 0);
		vd_wb_wrote(&wb, fd, off, sizeof(buf));
		off += sizeof(buf) + (i == 3 ? 4096 : 0);
		uint64_t written = (uint64_t)(i + 1) * sizeof(buf);
		if (written < VD_WB_BYTES) {
			assert_int_equal(atomic_load(&wb.start), first);
			assert_int_equal(atomic_load(&wb.pending), written);
		}
	}
	/* kicked once, at 8 MiB: the run starts again after that write */
	assert_int_equal(atomic_load(&wb.start), first + VD_WB_BYTES + 4096);
	assert_int_equal(atomic_load(&wb.pending), 4u << 20);
	assert_false(atomic_load(&wb.busy));
	assert_int_equal(vd_fdatasync(fd), 0);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_refcount_widths),
		cmocka_unit_test(t_backing_names),
		cmocka_unit_test(t_compress_roundtrip),
		cmocka_unit_test(t_rangelock),
		cmocka_unit_test(t_oset),
		cmocka_unit_test(t_write_behind),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
