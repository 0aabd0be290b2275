/* SPDX-License-Identifier: MIT */
/* qcow2 and raw read/write semantics against an in-memory reference. */
#include <pthread.h>

#include "test_util.h"

#define DISK (8u << 20)

/* Random writes/zeroes/discards mirrored into a reference buffer; the
 * image must read back identical and check clean, also after reopen. */
static void run_model(const char *fmt, uint32_t cs, uint32_t rbits, int compat, bool extl2)
{
	char p[300];
	tu_path(p, sizeof(p), "m.img");
	struct vdisk_create_opts co = { .format = fmt, .size = DISK, .cluster_size = cs,
	                                .refcount_bits = rbits, .compat = compat,
	                                .extended_l2 = extl2 };
	tu_create(p, &co);
	struct vdisk *d = tu_open(p, fmt, VDISK_OPEN_RDWR);
	uint8_t *ref = calloc(1, DISK), *buf = malloc(1 << 20), *got = malloc(1 << 20);
	assert_non_null(ref);
	uint64_t seed = cs * 31 + rbits;
	for (int i = 0; i < 300; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t len = 1 + (seed >> 20) % (i % 10 == 0 ? (1 << 20) : 9000);
		uint64_t off = (seed >> 40) % (DISK - len);
		int op = (int)((seed >> 8) % 10);
		if (op < 7) {
			tu_fill(buf, len, seed);
			assert_int_equal(vdisk_pwrite(d, buf, len, off), 0);
			memcpy(ref + off, buf, len);
		} else if (op < 9) {
			assert_int_equal(vdisk_write_zeroes(d, off, len, VDISK_ZERO_MAY_UNMAP), 0);
			memset(ref + off, 0, len);
		} else {
			/* discard: contents unspecified where it took effect; rewrite to keep the model */
			assert_int_equal(vdisk_discard(d, off, len), 0);
			struct iovec v[2] = { { ref + off, len / 2 }, { ref + off + len / 2, len - len / 2 } };
			assert_int_equal(vdisk_pwritev(d, v, 2, off), 0);
		}
		if (i % 50 == 49)
			assert_int_equal(vdisk_flush(d), 0);
	}
	for (uint64_t off = 0; off < DISK; off += 1 << 20) {
		assert_int_equal(vdisk_pread(d, got, 1 << 20, off), 0);
		assert_memory_equal(got, ref + off, 1 << 20);
	}
	if (!strcmp(fmt, "qcow2"))
		tu_check_clean(d);
	assert_int_equal(vdisk_close(d), 0);
	d = tu_open(p, fmt, 0);
	for (uint64_t off = 0; off < DISK; off += 1 << 20) {
		assert_int_equal(vdisk_pread(d, got, 1 << 20, off), 0);
		assert_memory_equal(got, ref + off, 1 << 20);
	}
	if (!strcmp(fmt, "qcow2"))
		tu_check_clean(d);
	vdisk_close(d);
	free(ref);
	free(buf);
	free(got);
}

static void t_raw(void **s) { (void)s; run_model("raw", 0, 0, 0, false); }
static void t_q64k(void **s) { (void)s; run_model("qcow2", 65536, 16, 3, false); }
static void t_q512_r1(void **s) { (void)s; run_model("qcow2", 512, 1, 3, false); }
static void t_q4k_r64(void **s) { (void)s; run_model("qcow2", 4096, 64, 3, false); }
static void t_q1k_r2(void **s) { (void)s; run_model("qcow2", 1024, 2, 3, false); }
static void t_q2m_r8(void **s) { (void)s; run_model("qcow2", 2u << 20, 8, 3, false); }
static void t_q_v2(void **s) { (void)s; run_model("qcow2", 65536, 16, 2, false); }
static void t_q_extl2(void **s) { (void)s; run_model("qcow2", 65536, 32, 3, true); }
static void t_q_r4(void **s) { (void)s; run_model("qcow2", 2048, 4, 3, false); }

/* Refcount table growth: tiny clusters and wide refcounts force it. */
static void t_reftable_growth(void **s)
{
	(void)s;
	char p[300];
	tu_path(p, sizeof(p), "g.img");
	struct vdisk_create_opts co = { .format = "qcow2", .size = 64u << 20,
	                                .cluster_size = 512, .refcount_bits = 64 };
	tu_create(p, &co);
	struct vdisk *d = tu_open(p, "qcow2", VDISK_OPEN_RDWR);
	uint8_t *buf = malloc(3 << 20), *got = malloc(3 << 20);
	tu_fill(buf, 3 << 20, 9);
	assert_int_equal(vdisk_pwrite(d, buf, 3 << 20, 10u << 20), 0);
	tu_check_clean(d);
	assert_int_equal(vdisk_close(d), 0);
	d = tu_open(p, "qcow2", 0);
	assert_int_equal(vdisk_pread(d, got, 3 << 20, 10u << 20), 0);
	assert_memory_equal(got, buf, 3 << 20);
	tu_check_clean(d);
	vdisk_close(d);
	free(buf);
	free(got);
}

/* Backing chain: overlay reads fall through, writes stay in the overlay;
 * relative backing names resolve against the overlay's folder. */
static void t_backing(void **s)
{
	(void)s;
	char base[300], top[300];
	tu_path(base, sizeof(base), "base.qcow2");
	tu_path(top, sizeof(top), "top.qcow2");
	struct vdisk_create_opts co = { .format = "qcow2", .size = DISK, .cluster_size = 4096 };
	tu_create(base, &co);
	struct vdisk *d = tu_open(base, "qcow2", VDISK_OPEN_RDWR);
	uint8_t *a = malloc(DISK), *got = malloc(DISK);
	tu_fill(a, DISK, 1);
	assert_int_equal(vdisk_pwrite(d, a, DISK, 0), 0);
	vdisk_close(d);
	struct vdisk_create_opts to = { .format = "qcow2", .backing_file = "base.qcow2",
	                                .backing_format = "qcow2", .cluster_size = 65536 };
	tu_create(top, &to);
	d = tu_open(top, "qcow2", VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_size(d), DISK);
	uint8_t w[5000];
	tu_fill(w, sizeof(w), 77);
	assert_int_equal(vdisk_pwrite(d, w, sizeof(w), 70000), 0);
	memcpy(a + 70000, w, sizeof(w));
	assert_int_equal(vdisk_write_zeroes(d, 1 << 20, 1 << 20, 0), 0);
	memset(a + (1 << 20), 0, 1 << 20);
	assert_int_equal(vdisk_pread(d, got, DISK, 0), 0);
	assert_memory_equal(got, a, DISK);
	struct vdisk_extent e;
	assert_int_equal(vdisk_block_status(d, 3u << 20, 4096, &e), 0);
	assert_int_equal(e.depth, 1);
	assert_true(e.flags & VDISK_BS_DATA);
	tu_check_clean(d);
	vdisk_close(d);
	/* the base is untouched */
	d = tu_open(base, "qcow2", 0);
	assert_int_equal(vdisk_pread(d, got, 4096, 1 << 20), 0);
	tu_fill(a, DISK, 1);
	assert_memory_equal(got, a + (1 << 20), 4096);
	vdisk_close(d);
	free(a);
	free(got);
}

struct par { struct vdisk *d; int id; };

static void *par_writer(void *arg)
{
	struct par *p = arg;
	uint8_t buf[12345];
	for (int i = 0; i < 64; i++) {
		tu_fill(buf, sizeof(buf), (uint64_t)(p->id * 1000 + i));
		uint64_t off = ((uint64_t)p->id * 64 + (uint64_t)i) * 16384 + 77;
		if (vdisk_pwrite(p->d, buf, sizeof(buf), off) < 0)
			return (void *)1;
	}
	return NULL;
}

/* Four threads writing disjoint, unaligned ranges at once. */
static void t_parallel(void **s)
{
	(void)s;
	char p[300];
	tu_path(p, sizeof(p), "par.qcow2");
	struct vdisk_create_opts co = { .format = "qcow2", .size = DISK, .cluster_size = 4096 };
	tu_create(p, &co);
	struct vdisk *d = tu_open(p, "qcow2", VDISK_OPEN_RDWR);
	pthread_t t[4];
	struct par ps[4];
	for (int i = 0; i < 4; i++) {
		ps[i] = (struct par){ d, i };
		pthread_create(&t[i], NULL, par_writer, &ps[i]);
	}
	for (int i = 0; i < 4; i++) {
		void *rv;
		pthread_join(t[i], &rv);
		assert_null(rv);
	}
	uint8_t buf[12345], got[12345];
	for (int id = 0; id < 4; id++)
		for (int i = 0; i < 64; i++) {
			tu_fill(buf, sizeof(buf), (uint64_t)(id * 1000 + i));
			uint64_t off = ((uint64_t)id * 64 + (uint64_t)i) * 16384 + 77;
			assert_int_equal(vdisk_pread(d, got, sizeof(got), off), 0);
			assert_memory_equal(got, buf, sizeof(buf));
		}
	tu_check_clean(d);
	vdisk_close(d);
}

/* Eight threads own interleaved cluster-sized stripes (neighbouring
 * clusters belong to different threads, so L2 slices, refcount blocks and
 * the allocation frontier are shared) and do random writes, zeroes,
 * discards and reads against a private model; one of them flushes now
 * and then. Covers the allocation path racing with itself, with
 * copy-on-write of partial clusters, with zero-fill of reused clusters and
 * with metadata write-back. */
#define ST_THREADS 8
#define ST_CS 4096u
#define ST_DISK (4u << 20)

struct stress {
	struct vdisk *d;
	int id;
	uint8_t *ref; /* shared model; each thread touches only its stripes */
	int err;
};

static void *stress_run(void *arg)
{
	struct stress *st = arg;
	uint8_t buf[3 * ST_CS], got[3 * ST_CS];
	uint64_t seed = 0x1234567ull * (uint64_t)(st->id + 1);
	uint64_t stripes = ST_DISK / ST_CS / ST_THREADS;
	for (int i = 0; i < 400 && !st->err; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		/* one of this thread's clusters, a sub-range of it */
		uint64_t c = ((seed >> 33) % stripes) * ST_THREADS + (uint64_t)st->id;
		uint64_t in = (seed >> 13) % ST_CS, len = 1 + (seed >> 45) % (ST_CS - in);
		uint64_t off = c * ST_CS + in;
		int op = (int)((seed >> 5) % 16);
		int r = 0;
		if (op < 9) {
			tu_fill(buf, len, seed);
			r = vdisk_pwrite(st->d, buf, len, off);
			memcpy(st->ref + off, buf, len);
		} else if (op < 11) {
			r = vdisk_write_zeroes(st->d, off, len, VDISK_ZERO_MAY_UNMAP);
			memset(st->ref + off, 0, len);
		} else if (op < 12) {
			/* whole cluster discard, then restore the model's content */
			r = vdisk_discard(st->d, c * ST_CS, ST_CS);
			if (r == 0)
				r = vdisk_pwrite(st->d, st->ref + c * ST_CS, ST_CS, c * ST_CS);
		} else if (op < 13 && st->id == 0) {
			r = vdisk_flush(st->d);
		} else {
			r = vdisk_pread(st->d, got, len, off);
			if (r == 0 && memcmp(got, st->ref + off, len))
				r = -EILSEQ;
		}
		if (r < 0)
			st->err = r;
	}
	return NULL;
}

static void stress_one(uint32_t rbits, bool lazy)
{
	char p[300];
	tu_path(p, sizeof(p), "stress.qcow2");
	struct vdisk_create_opts co = { .format = "qcow2", .size = ST_DISK, .cluster_size = ST_CS,
	                                .refcount_bits = rbits, .lazy_refcounts = lazy };
	tu_create(p, &co);
	/* a small L2 cache forces slice eviction (write-back) under load */
	struct vdisk *d = NULL;
	struct vdisk_open_opts o = { .flags = VDISK_OPEN_RDWR, .format = "qcow2",
	                             .l2_cache_bytes = 4 * 512, .l2_slice_bytes = 512 };
	struct vdisk_error e;
	assert_int_equal(vdisk_open(&d, p, &o, &e), 0);
	uint8_t *ref = calloc(1, ST_DISK), *got = malloc(ST_DISK);
	pthread_t t[ST_THREADS];
	struct stress st[ST_THREADS];
	for (int i = 0; i < ST_THREADS; i++) {
		st[i] = (struct stress){ d, i, ref, 0 };
		pthread_create(&t[i], NULL, stress_run, &st[i]);
	}
	for (int i = 0; i < ST_THREADS; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(st[i].err, 0);
	}
	assert_int_equal(vdisk_pread(d, got, ST_DISK, 0), 0);
	assert_memory_equal(got, ref, ST_DISK);
	tu_check_clean(d);
	assert_int_equal(vdisk_close(d), 0);
	d = tu_open(p, "qcow2", 0);
	assert_int_equal(vdisk_pread(d, got, ST_DISK, 0), 0);
	assert_memory_equal(got, ref, ST_DISK);
	tu_check_clean(d);
	vdisk_close(d);
	free(ref);
	free(got);
}

static void t_stress(void **s)
{
	(void)s;
	stress_one(16, false);
	stress_one(1, true);
}

static void t_compressed_write(void **s)
{
	(void)s;
	for (int z = 0; z < 2; z++) {
		char p[300];
		tu_path(p, sizeof(p), "c.qcow2");
		struct vdisk_create_opts co = { .format = "qcow2", .size = 1 << 20, .cluster_size = 65536,
		                                .compression = z ? VDISK_COMPRESS_ZSTD : VDISK_COMPRESS_ZLIB };
		tu_create(p, &co);
		struct vdisk *d = tu_open(p, "qcow2", VDISK_OPEN_RDWR);
		uint8_t *buf = malloc(65536), *got = malloc(65536);
		for (int c = 0; c < 16; c++) {
			memset(buf, c, 65536);
			snprintf((char *)buf, 64, "cluster %d", c);
			assert_int_equal(vdisk_pwrite_compressed(d, buf, 65536, (uint64_t)c * 65536), 0);
		}
		struct vdisk_extent e;
		assert_int_equal(vdisk_block_status(d, 0, 65536, &e), 0);
		assert_true(e.flags & VDISK_BS_COMPRESSED);
		/* overwrite inside a compressed cluster: copy-on-write */
		assert_int_equal(vdisk_pwrite(d, "hello", 5, 3 * 65536 + 100), 0);
		tu_check_clean(d);
		vdisk_close(d);
		d = tu_open(p, "qcow2", 0);
		for (int c = 0; c < 16; c++) {
			memset(buf, c, 65536);
			snprintf((char *)buf, 64, "cluster %d", c);
			if (c == 3)
				memcpy(buf + 100, "hello", 5);
			assert_int_equal(vdisk_pread(d, got, 65536, (uint64_t)c * 65536), 0);
			assert_memory_equal(got, buf, 65536);
		}
		vdisk_close(d);
		free(buf);
		free(got);
	}
}

static void t_resize(void **s)
{
	(void)s;
	char p[300];
	tu_path(p, sizeof(p), "r.qcow2");
	struct vdisk_create_opts co = { .format = "qcow2", .size = 1 << 20, .cluster_size = 512 };
	tu_create(p, &co);
	struct vdisk *d = tu_open(p, "qcow2", VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_resize(d, 64u << 20, 0), 0);
	assert_int_equal(vdisk_size(d), 64u << 20);
	assert_int_equal(vdisk_pwrite(d, "end", 3, (64u << 20) - 3), 0);
	assert_int_equal(vdisk_resize(d, 1 << 20, 0), -EINVAL);
	tu_check_clean(d);
	vdisk_close(d);
	d = tu_open(p, "qcow2", 0);
	char b[3];
	assert_int_equal(vdisk_pread(d, b, 3, (64u << 20) - 3), 0);
	assert_memory_equal(b, "end", 3);
	vdisk_close(d);
}

static void t_bounds_and_ro(void **s)
{
	(void)s;
	char p[300];
	tu_path(p, sizeof(p), "b.qcow2");
	struct vdisk_create_opts co = { .format = "qcow2", .size = 1 << 20 };
	tu_create(p, &co);
	struct vdisk *d = tu_open(p, "qcow2", 0);
	char b[16];
	assert_int_equal(vdisk_pread(d, b, 16, (1 << 20) - 8), -EINVAL);
	assert_int_equal(vdisk_pwrite(d, b, 16, 0), -EBADF);
	vdisk_close(d);
	/* a qcow2 file opened as raw stays raw */
	d = tu_open(p, "raw", 0);
	assert_string_equal(vdisk_format(d), "raw");
	vdisk_close(d);
	/* without a format and without probing: refused */
	struct vdisk_open_opts o = { 0 };
	struct vdisk_error e;
	assert_int_equal(vdisk_open(&d, p, &o, &e), -EINVAL);
	/* a writer holds an exclusive lock */
	d = tu_open(p, "qcow2", VDISK_OPEN_RDWR);
	struct vdisk *d2;
	o.format = "qcow2";
	assert_true(vdisk_open(&d2, p, &o, &e) < 0);
	vdisk_close(d);
}

static int setup(void **s) { (void)s; tu_mkdir(); return 0; }
static int teardown(void **s) { (void)s; tu_rmdir(); return 0; }

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_raw),
		cmocka_unit_test(t_q64k),
		cmocka_unit_test(t_q512_r1),
		cmocka_unit_test(t_q1k_r2),
		cmocka_unit_test(t_q_r4),
		cmocka_unit_test(t_q4k_r64),
		cmocka_unit_test(t_q2m_r8),
		cmocka_unit_test(t_q_v2),
		cmocka_unit_test(t_q_extl2),
		cmocka_unit_test(t_reftable_growth),
		cmocka_unit_test(t_backing),
		cmocka_unit_test(t_parallel),
		cmocka_unit_test(t_stress),
		cmocka_unit_test(t_compressed_write),
		cmocka_unit_test(t_resize),
		cmocka_unit_test(t_bounds_and_ro),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
