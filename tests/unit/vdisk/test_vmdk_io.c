/* SPDX-License-Identifier: MIT */
/* VMDK I/O: a random model of writes, zero writes and reads per subformat
 * (against a raw reference), threads allocating grains in shared grain
 * tables, the redundant grain tables equal to the primary ones on disk, and
 * stream-optimized images written by parts and by threads. */
#include <pthread.h>
#include <sys/stat.h>

#include "test_util.h"

#define MB (1ull << 20)

static uint64_t rnd(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static void same(struct vdisk *a, struct vdisk *b, uint64_t off, uint64_t len)
{
	static uint8_t x[1 << 20], y[1 << 20];
	while (len) {
		uint64_t n = len < sizeof(x) ? len : sizeof(x);
		assert_int_equal(vdisk_pread(a, x, n, off), 0);
		assert_int_equal(vdisk_pread(b, y, n, off), 0);
		if (memcmp(x, y, n)) {
			for (uint64_t i = 0; i < n; i++)
				if (x[i] != y[i]) {
					print_error("differ at %llu\n", (unsigned long long)(off + i));
					break;
				}
			fail();
		}
		off += n;
		len -= n;
	}
}

static void model(const char *sub, bool zg, uint64_t size)
{
	char img[300], ref[300];
	tu_path(img, sizeof(img), "m.vmdk");
	tu_path(ref, sizeof(ref), "m.raw");
	struct vdisk_create_opts co = { .format = "vmdk", .size = size, .subformat = sub,
	                                .zeroed_grain = zg };
	tu_create(img, &co);
	struct vdisk_create_opts ro = { .format = "raw", .size = size };
	tu_create(ref, &ro);
	struct vdisk *d = tu_open(img, "vmdk", VDISK_OPEN_RDWR);
	struct vdisk *r = tu_open(ref, "raw", VDISK_OPEN_RDWR);
	assert_int_equal(vdisk_size(d), size);
	static uint8_t buf[300 << 10];
	uint64_t x = 0x1234567 + size + zg, offs[400], lens[400];
	for (int i = 0; i < 400; i++) {
		uint64_t v = rnd(&x);
		uint64_t len = 1 + v % sizeof(buf);
		/* near the 2 GiB extent boundary half of the time on big disks */
		uint64_t off = (size > 2048 * MB && (v & 1)) ? 2048 * MB - 150000 + (v >> 20) % 300000
		                                              : (v >> 24) % size;
		if (off + len > size)
			len = size - off;
		offs[i] = off;
		lens[i] = len;
		if ((v >> 8) % 5 == 0) {
			assert_int_equal(vdisk_write_zeroes(d, off, len, VDISK_ZERO_MAY_UNMAP), 0);
			assert_int_equal(vdisk_write_zeroes(r, off, len, 0), 0);
		} else {
			tu_fill(buf, len, v);
			assert_int_equal(vdisk_pwrite(d, buf, len, off), 0);
			assert_int_equal(vdisk_pwrite(r, buf, len, off), 0);
		}
		if (i % 97 == 0)
			assert_int_equal(vdisk_flush(d), 0);
	}
	assert_int_equal(vdisk_close(d), 0);
	d = tu_open(img, "vmdk", 0);
	for (int i = 0; i < 400; i++)
		same(d, r, offs[i], lens[i]);
	same(d, r, 0, 4 * MB);
	same(d, r, size - 3 * MB, 3 * MB);
	struct vdisk_check_result cr = { 0 };
	assert_int_equal(vdisk_check(d, &cr, 0), 0);
	assert_int_equal(cr.corruptions, 0);
	vdisk_close(d);
	vdisk_close(r);
}

static void t_model_sparse(void **s) { (void)s; model(NULL, false, 64 * MB + 1536); }
static void t_model_zeroed(void **s) { (void)s; model(NULL, true, 64 * MB); }
static void t_model_flat(void **s) { (void)s; model("monolithicFlat", false, 64 * MB); }
static void t_model_2gb_sparse(void **s) { (void)s; model("twoGbMaxExtentSparse", true, 2051 * MB); }
static void t_model_2gb_flat(void **s) { (void)s; model("twoGbMaxExtentFlat", false, 2051 * MB); }

/* ---- threads --------------------------------------------------------- */

#define NT 8
struct thr { struct vdisk *d; int id; uint64_t size; };

/* thread t owns the grains g with g % NT == t: all threads allocate in the
 * same grain tables at once */
static void *writer(void *arg)
{
	struct thr *t = arg;
	static _Thread_local uint8_t buf[65536];
	uint64_t grains = t->size / 65536;
	for (uint64_t g = (uint64_t)t->id; g < grains; g += NT) {
		tu_fill(buf, sizeof(buf), g);
		/* in two pieces: the first allocates, the second rewrites */
		if (vdisk_pwrite(t->d, buf, 4096, g * 65536) < 0 ||
		    vdisk_pwrite(t->d, buf + 4096, 65536 - 4096, g * 65536 + 4096) < 0)
			return (void *)1;
	}
	return NULL;
}

static void verify_grains(struct vdisk *d, uint64_t size)
{
	static uint8_t a[65536], b[65536];
	for (uint64_t g = 0; g < size / 65536; g++) {
		tu_fill(a, sizeof(a), g);
		assert_int_equal(vdisk_pread(d, b, sizeof(b), g * 65536), 0);
		if (memcmp(a, b, sizeof(a)))
			print_error("grain %llu differs\n", (unsigned long long)g);
		assert_memory_equal(a, b, sizeof(a));
	}
}

static void t_threads(void **s)
{
	(void)s;
	char img[300];
	tu_path(img, sizeof(img), "t.vmdk");
	uint64_t size = 96 * MB; /* 3 grain tables */
	struct vdisk_create_opts co = { .format = "vmdk", .size = size };
	tu_create(img, &co);
	struct vdisk *d = tu_open(img, "vmdk", VDISK_OPEN_RDWR);
	pthread_t th[NT];
	struct thr t[NT];
	for (int i = 0; i < NT; i++) {
		t[i] = (struct thr){ d, i, size };
		assert_int_equal(pthread_create(&th[i], NULL, writer, &t[i]), 0);
	}
	for (int i = 0; i < NT; i++) {
		void *rv;
		pthread_join(th[i], &rv);
		assert_null(rv);
	}
	verify_grains(d, size);
	assert_int_equal(vdisk_close(d), 0);
	d = tu_open(img, "vmdk", 0);
	verify_grains(d, size);
	struct vdisk_check_result cr = { 0 };
	assert_int_equal(vdisk_check(d, &cr, 0), 0);
	assert_int_equal(cr.corruptions, 0);
	assert_int_equal(cr.allocated_clusters, size / 65536);
	vdisk_close(d);

	/* the redundant directory's tables equal the primary ones: header
	 * fields rgdOffset (48) and gdOffset (56), 3 tables of 512 entries */
	FILE *f = fopen(img, "rb");
	assert_non_null(f);
	uint8_t h[512];
	assert_int_equal(fread(h, 1, 512, f), 512);
	uint64_t rgd = h[48] | (uint64_t)h[49] << 8 | (uint64_t)h[50] << 16;
	uint64_t gd = h[56] | (uint64_t)h[57] << 8 | (uint64_t)h[58] << 16;
	uint32_t dir[2][3];
	static uint8_t tab[2][2048];
	uint64_t at[2] = { rgd, gd };
	for (int k = 0; k < 2; k++) {
		assert_int_equal(fseek(f, (long)(at[k] * 512), SEEK_SET), 0);
		assert_int_equal(fread(dir[k], 4, 3, f), 3);
	}
	for (int i = 0; i < 3; i++) {
		for (int k = 0; k < 2; k++) {
			assert_int_equal(fseek(f, (long)dir[k][i] * 512, SEEK_SET), 0);
			assert_int_equal(fread(tab[k], 1, 2048, f), 2048);
		}
		assert_memory_equal(tab[0], tab[1], 2048);
	}
	fclose(f);
}

static void t_stream(void **s)
{
	(void)s;
	char img[300];
	tu_path(img, sizeof(img), "s.vmdk");
	uint64_t size = 40 * MB;
	struct vdisk_create_opts co = { .format = "vmdk", .size = size, .subformat = "streamOptimized" };
	tu_create(img, &co);
	/* an empty stream reads as zeroes */
	struct vdisk *d = tu_open(img, "vmdk", 0);
	uint8_t z[4096], b[4096];
	memset(z, 0, sizeof(z));
	assert_int_equal(vdisk_pread(d, b, sizeof(b), size - 4096), 0);
	assert_memory_equal(z, b, sizeof(b));
	vdisk_close(d);
	/* threads write whole grains; every grain is written in two parts */
	d = tu_open(img, "vmdk", VDISK_OPEN_RDWR);
	struct vdisk_info in;
	assert_int_equal(vdisk_info(d, &in), 0);
	assert_true(in.write_compressed);
	assert_string_equal(in.subformat, "streamOptimized");
	pthread_t th[NT];
	struct thr t[NT];
	for (int i = 0; i < NT; i++) {
		t[i] = (struct thr){ d, i, size };
		assert_int_equal(pthread_create(&th[i], NULL, writer, &t[i]), 0);
	}
	for (int i = 0; i < NT; i++) {
		void *rv;
		pthread_join(th[i], &rv);
		assert_null(rv);
	}
	/* pending parts read back before the close; a written grain is final */
	verify_grains(d, size);
	uint8_t g[65536];
	memset(g, 7, sizeof(g));
	assert_int_equal(vdisk_pwrite_compressed(d, g, sizeof(g), 0), -ENOTSUP);
	assert_int_equal(vdisk_close(d), 0);
	d = tu_open(img, "vmdk", 0);
	verify_grains(d, size);
	struct vdisk_check_result cr = { 0 };
	assert_int_equal(vdisk_check(d, &cr, 0), 0);
	assert_int_equal(cr.corruptions, 0);
	assert_int_equal(cr.compressed_clusters, size / 65536);
	vdisk_close(d);
}

static void cid_of(const char *path, char out[9])
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	static char t[12288];
	size_t n = fread(t, 1, sizeof(t) - 1, f);
	fclose(f);
	t[n] = 0;
	for (size_t i = 0; i + 12 < n; i++)
		if (t[i] == '\n' && !memcmp(t + i + 1, "CID=", 4)) {
			memcpy(out, t + i + 5, 8);
			out[8] = 0;
			return;
		}
	fail();
}

/* A write gives the image a new content ID (once per session), reads and
 * opens without writes do not. */
static void t_cid(void **s)
{
	(void)s;
	static const char *const subs[] = { "monolithicSparse", "twoGbMaxExtentFlat" };
	for (int k = 0; k < 2; k++) {
		char img[300], c0[9], c1[9], c2[9];
		tu_path(img, sizeof(img), "c.vmdk");
		struct vdisk_create_opts co = { .format = "vmdk", .size = MB, .subformat = subs[k] };
		tu_create(img, &co);
		cid_of(img, c0);
		struct vdisk *d = tu_open(img, "vmdk", VDISK_OPEN_RDWR);
		uint8_t b[512] = { 1 };
		assert_int_equal(vdisk_pread(d, b, sizeof(b), 0), 0);
		assert_int_equal(vdisk_close(d), 0);
		cid_of(img, c1);
		assert_string_equal(c0, c1);
		d = tu_open(img, "vmdk", VDISK_OPEN_RDWR);
		assert_int_equal(vdisk_pwrite(d, b, sizeof(b), 0), 0);
		assert_int_equal(vdisk_pwrite(d, b, sizeof(b), 4096), 0);
		assert_int_equal(vdisk_close(d), 0);
		cid_of(img, c2);
		assert_string_not_equal(c0, c2);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_model_sparse),
		cmocka_unit_test(t_model_zeroed),
		cmocka_unit_test(t_model_flat),
		cmocka_unit_test(t_model_2gb_sparse),
		cmocka_unit_test(t_model_2gb_flat),
		cmocka_unit_test(t_threads),
		cmocka_unit_test(t_stream),
		cmocka_unit_test(t_cid),
	};
	tu_mkdir();
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	tu_rmdir();
	return r;
}
