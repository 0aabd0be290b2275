/* The tagged-field codec: round trips, unknown fields skipped, missing fields
 * defaulted, malformed framing refused with a message, never a crash. */
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "state/state.h"

static void test_round_trip(void **ctx)
{
	(void)ctx;
	struct state_writer w;
	sw_init(&w);
	sw_uint(&w, "a", 0x1122334455667788ULL);
	sw_bytes(&w, "blob", "xyz", 3);
	sw_str(&w, "name", "uart.0");
	sw_bytes(&w, "empty", NULL, 0);
	assert_int_equal(w.err, 0);

	struct state_reader r;
	struct terr err = { 0 };
	assert_int_equal(sr_init(&r, w.buf, w.len, "t", &err), 0);
	assert_int_equal(r.nfields, 4);
	uint64_t v;
	assert_int_equal(sr_uint(&r, "a", 0, &v, &err), 0);
	assert_true(v == 0x1122334455667788ULL);
	size_t n;
	const void *pv;
	assert_int_equal(sr_bytes(&r, "blob", &pv, &n, &err), 0);
	const char *p = pv;
	assert_non_null(p);
	assert_int_equal(n, 3);
	assert_memory_equal(p, "xyz", 3);
	assert_int_equal(sr_bytes(&r, "name", &pv, &n, &err), 0);
	p = pv;
	assert_int_equal(n, 6);
	assert_memory_equal(p, "uart.0", 6);
	assert_int_equal(sr_bytes(&r, "empty", &pv, &n, &err), 0);
	assert_non_null(pv);
	assert_int_equal(n, 0);
	assert_int_equal(sr_bytes(&r, "absent", &pv, &n, &err), 0);
	assert_null(pv);
	assert_true(sr_bytes(&r, "a", &pv, &n, &err) < 0);
	assert_string_equal(err.msg, "t: field 'a' is an integer, expected bytes");
	sr_free(&r);
	sw_free(&w);
}

static void test_missing_defaults_unknown_skipped(void **ctx)
{
	(void)ctx;
	struct state_writer w;
	sw_init(&w);
	sw_uint(&w, "from_the_future", 7);
	sw_uint(&w, "known", 3);
	struct state_reader r;
	struct terr err = { 0 };
	assert_int_equal(sr_init(&r, w.buf, w.len, "t", &err), 0);
	uint64_t v;
	assert_int_equal(sr_uint(&r, "known", 0, &v, &err), 0);
	assert_int_equal(v, 3);
	assert_int_equal(sr_uint(&r, "older_reader_default", 42, &v, &err), 0);
	assert_int_equal(v, 42);
	uint8_t buf[4] = { 9, 9, 9, 9 };
	assert_int_equal(sr_bytes_exact(&r, "absent", buf, 4, &err), 0);
	assert_int_equal(buf[0], 9);
	sr_free(&r);
	sw_free(&w);
}

static void test_type_and_range_errors(void **ctx)
{
	(void)ctx;
	struct state_writer w;
	sw_init(&w);
	sw_bytes(&w, "b", "abcd", 4);
	sw_uint(&w, "big", 300);
	struct state_reader r;
	struct terr err = { 0 };
	assert_int_equal(sr_init(&r, w.buf, w.len, "dev.0", &err), 0);
	uint64_t v;
	assert_true(sr_uint(&r, "b", 0, &v, &err) < 0);
	assert_string_equal(err.msg, "dev.0: field 'b' is not an integer");
	terr_clear(&err);
	assert_true(sr_uint_max(&r, "big", 0, 255, &v, &err) < 0);
	assert_string_equal(err.msg, "dev.0: field 'big' is 300, above its limit 255");
	terr_clear(&err);
	uint8_t three[3];
	assert_true(sr_bytes_exact(&r, "b", three, 3, &err) < 0);
	assert_string_equal(err.msg, "dev.0: field 'b' has 4 bytes, expected 3");
	sr_free(&r);
	sw_free(&w);
}

/* Every truncation of a valid blob is either a shorter valid blob (cut at a
 * field boundary) or an error; never a read past the end (ASan checks). */
static void test_every_truncation(void **ctx)
{
	(void)ctx;
	struct state_writer w;
	sw_init(&w);
	sw_uint(&w, "x", 1);
	sw_str(&w, "s", "hello");
	sw_bytes(&w, "b", "0123456789", 10);
	size_t boundaries[] = { 0, 2 + 1 + 4 + 8, 2 + 1 + 4 + 8 + 2 + 1 + 4 + 5, w.len };
	for (size_t cut = 0; cut <= w.len; cut++) {
		uint8_t *copy = malloc(cut ? cut : 1);
		memcpy(copy, w.buf, cut);
		struct state_reader r;
		struct terr err = { 0 };
		int ret = sr_init(&r, copy, cut, "t", &err);
		bool boundary = false;
		for (size_t i = 0; i < 4; i++)
			boundary |= cut == boundaries[i];
		if (boundary) {
			assert_int_equal(ret, 0);
			sr_free(&r);
		} else {
			assert_true(ret < 0);
			assert_non_null(strstr(err.msg, "t: field at byte"));
		}
		free(copy);
	}
	sw_free(&w);
}

static void test_malformed(void **ctx)
{
	(void)ctx;
	struct state_reader r;
	struct terr err = { 0 };
	/* unknown type */
	const uint8_t bad_type[] = { 9, 1, 'a', 0, 0, 0, 0 };
	assert_true(sr_init(&r, bad_type, sizeof(bad_type), "t", &err) < 0);
	assert_string_equal(err.msg, "t: field at byte 0 has unknown type 9");
	/* integer with length 4 */
	terr_clear(&err);
	const uint8_t short_int[] = { STATE_UINT, 1, 'a', 4, 0, 0, 0, 1, 2, 3, 4 };
	assert_true(sr_init(&r, short_int, sizeof(short_int), "t", &err) < 0);
	assert_string_equal(err.msg, "t: integer field 'a' has length 4, not 8");
	/* duplicate */
	terr_clear(&err);
	struct state_writer w;
	sw_init(&w);
	sw_uint(&w, "a", 1);
	sw_uint(&w, "a", 2);
	assert_true(sr_init(&r, w.buf, w.len, "t", &err) < 0);
	assert_string_equal(err.msg, "t: field 'a' appears twice");
	sw_free(&w);
	/* empty name */
	terr_clear(&err);
	const uint8_t no_name[] = { STATE_BYTES, 0, 0, 0, 0, 0 };
	assert_true(sr_init(&r, no_name, sizeof(no_name), "t", &err) < 0);
	assert_string_equal(err.msg, "t: field at byte 0 has an empty name");
	/* a length that would wrap */
	terr_clear(&err);
	const uint8_t huge[] = { STATE_BYTES, 1, 'a', 0xff, 0xff, 0xff, 0xff, 0 };
	assert_true(sr_init(&r, huge, sizeof(huge), "t", &err) < 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_missing_defaults_unknown_skipped),
		cmocka_unit_test(test_type_and_range_errors),
		cmocka_unit_test(test_every_truncation),
		cmocka_unit_test(test_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
