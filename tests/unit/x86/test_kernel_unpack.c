/* kernel_payload_unpack on lz4 "legacy" payloads, the format of Debian's
 * kernels: blocks of 8 MiB unpacked in parallel must land in order, and a
 * corrupt or short block anywhere must be refused with an error. */
#include <lz4.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>
#include <zstd.h>

#include "arch/x86/kernel_unpack.h"
#include "util/error.h"

#define BLOCK (8u << 20)

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* Data that compresses but is not uniform: a counter per 4 bytes plus noise. */
static uint8_t *make_data(size_t n)
{
	uint8_t *d = malloc(n);
	assert_non_null(d);
	uint32_t x = 12345;
	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245u + 12345u;
		d[i] = (i & 3) ? (uint8_t)(i >> 10) : (uint8_t)(x >> 24);
	}
	return d;
}

/* magic, then per block (u32 size, data), then the u32 unpacked size;
 * block_sizes[i] is how many input bytes block i takes (0: BLOCK). */
static uint8_t *make_payload(const uint8_t *d, size_t n, const size_t *block_sizes,
			     size_t *out_len, size_t *block_off)
{
	size_t cap = 8 + n + n / 8 + 1024;
	uint8_t *p = malloc(cap);
	assert_non_null(p);
	put32(p, 0x184c2102u);
	size_t pos = 4, in = 0;
	for (unsigned i = 0; in < n; i++) {
		size_t take = block_sizes && block_sizes[i] ? block_sizes[i] : BLOCK;
		if (take > n - in)
			take = n - in;
		int c = LZ4_compress_default((const char *)d + in, (char *)p + pos + 4, (int)take,
					     (int)(cap - pos - 8));
		assert_true(c > 0);
		put32(p + pos, (uint32_t)c);
		if (block_off)
			block_off[i] = pos + 4;
		pos += 4 + (size_t)c;
		in += take;
	}
	put32(p + pos, (uint32_t)n);
	*out_len = pos + 4;
	return p;
}

static void roundtrip_three_blocks(void **state)
{
	(void)state;
	size_t n = 2 * BLOCK + 3 * 1000 * 1000, len;
	uint8_t *d = make_data(n);
	uint8_t *p = make_payload(d, n, NULL, &len, NULL);
	assert_int_equal(kernel_codec_of(p, len), KERNEL_CODEC_LZ4);
	uint8_t *out = NULL;
	size_t out_len = 0;
	struct terr err = { 0 };
	assert_int_equal(kernel_payload_unpack(p, len, "test", &out, &out_len, &err), 0);
	assert_int_equal(out_len, n);
	assert_memory_equal(out, d, n);
	free(out);
	free(p);
	free(d);
}

static void corrupt_block_refused(void **state)
{
	(void)state;
	size_t n = 3 * BLOCK, len, off[4];
	uint8_t *d = make_data(n);
	uint8_t *p = make_payload(d, n, NULL, &len, off);
	/* a literal-length token far too long in the middle block */
	memset(p + off[1], 0xff, 64);
	uint8_t *out = NULL;
	size_t out_len = 0;
	struct terr err = { 0 };
	assert_true(kernel_payload_unpack(p, len, "bad", &out, &out_len, &err) < 0);
	assert_null(out);
	assert_non_null(strstr(err.msg, "corrupt"));
	assert_non_null(strstr(err.msg, "bad"));
	free(p);
	free(d);
}

static void short_middle_block_refused(void **state)
{
	(void)state;
	/* the first block unpacks to 4 MiB: later blocks would land at the
	 * wrong place, so the payload is refused rather than mis-assembled */
	size_t n = BLOCK + BLOCK / 2, len;
	size_t sizes[] = { BLOCK / 2, 0, 0 };
	uint8_t *d = make_data(n);
	uint8_t *p = make_payload(d, n, sizes, &len, NULL);
	uint8_t *out = NULL;
	size_t out_len = 0;
	struct terr err = { 0 };
	assert_true(kernel_payload_unpack(p, len, "short", &out, &out_len, &err) < 0);
	assert_null(out);
	free(p);
	free(d);
}

static void truncated_refused(void **state)
{
	(void)state;
	size_t n = BLOCK + 100, len;
	uint8_t *d = make_data(n);
	uint8_t *p = make_payload(d, n, NULL, &len, NULL);
	/* drop the middle of the stream, keep the size trailer */
	size_t cut = len / 2;
	memmove(p + cut, p + len - 4, 4);
	uint8_t *out = NULL;
	size_t out_len = 0;
	struct terr err = { 0 };
	assert_true(kernel_payload_unpack(p, cut + 4, "cut", &out, &out_len, &err) < 0);
	assert_null(out);
	free(p);
	free(d);
}

/* The first bytes alone, for each codec: what vmlinux_load plans with
 * before it unpacks the rest into guest RAM. */
static void peek_prefix(const uint8_t *p, size_t len, const uint8_t *d, size_t n)
{
	struct terr err = { 0 };
	size_t size = 0;
	static uint8_t head[70000];
	assert_int_equal(kernel_payload_size(p, len, "peek", &size, &err), 0);
	assert_int_equal(size, n);
	memset(head, 0xee, sizeof(head));
	assert_int_equal(kernel_payload_peek(p, len, "peek", head, 65536, &err), 0);
	assert_memory_equal(head, d, 65536);
	assert_int_equal(head[65536], 0xee);   /* no more than asked */
	/* into a caller's buffer, all of it */
	uint8_t *out = malloc(n);
	assert_non_null(out);
	assert_int_equal(kernel_payload_unpack_into(p, len, "peek", out, n, &err), 0);
	assert_memory_equal(out, d, n);
	free(out);
}

static void peek_lz4_gzip_zstd(void **state)
{
	(void)state;
	size_t n = BLOCK + 5000, len;
	uint8_t *d = make_data(n);
	uint8_t *p = make_payload(d, n, NULL, &len, NULL);
	peek_prefix(p, len, d, n);
	free(p);

	/* gzip: the trailer's ISIZE is the size word */
	size_t cap = n + n / 2 + 1024;
	p = malloc(cap);
	assert_non_null(p);
	z_stream z;
	memset(&z, 0, sizeof(z));
	assert_int_equal(deflateInit2(&z, 1, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = d;
	z.avail_in = (uInt)n;
	z.next_out = p;
	z.avail_out = (uInt)cap;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	len = z.total_out;
	deflateEnd(&z);
	peek_prefix(p, len, d, n);

	/* zstd, then the size word the kernel's build appends */
	len = ZSTD_compress(p, cap - 4, d, n, 1);
	assert_false(ZSTD_isError(len));
	put32(p + len, (uint32_t)n);
	peek_prefix(p, len + 4, d, n);

	/* a corrupt start is an error naming the codec */
	struct terr err = { 0 };
	uint8_t head[4096];
	memset(p + 4, 0x55, 64);
	assert_true(kernel_payload_peek(p, len + 4, "bad", head, sizeof(head), &err) < 0);
	assert_non_null(strstr(err.msg, "zstd"));
	free(p);
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(roundtrip_three_blocks),
		cmocka_unit_test(corrupt_block_refused),
		cmocka_unit_test(short_middle_block_refused),
		cmocka_unit_test(truncated_refused),
		cmocka_unit_test(peek_lz4_gzip_zstd),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
