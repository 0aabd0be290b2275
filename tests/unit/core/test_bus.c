/* Port I/O and MMIO bus: dispatch by range, overlaps refused with both
 * owners named, unassigned reads are all ones. */
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/bus.h"

struct probe {
	uint64_t last_off;
	uint8_t last_val;
	unsigned reads, writes;
};

static void probe_read(void *o, uint64_t off, void *data, unsigned size)
{
	struct probe *p = o;
	p->reads++;
	p->last_off = off;
	memset(data, (int)(0x40 + off), size);
}

static void probe_write(void *o, uint64_t off, const void *data, unsigned size)
{
	struct probe *p = o;
	(void)size;
	p->writes++;
	p->last_off = off;
	p->last_val = *(const uint8_t *)data;
}

static void test_dispatch_and_overlap(void **ctx)
{
	(void)ctx;
	struct bus b;
	struct probe a = { 0 }, c = { 0 };
	struct terr err = { 0 };
	bus_init(&b, "port I/O");
	assert_int_equal(bus_register(&b, 0x3f8, 8, probe_read, probe_write, &a, "uart.0", &err), 0);
	assert_int_equal(bus_register(&b, 0x400, 0x10, probe_read, probe_write, &c, "pm.0", &err), 0);
	/* overlaps at either edge */
	assert_int_equal(bus_register(&b, 0x3f0, 9, probe_read, probe_write, &c, "x", &err), -EBUSY);
	assert_string_equal(err.msg, "x: port I/O range 0x3f0-0x3f8 overlaps uart.0 at 0x3f8-0x3ff");
	terr_clear(&err);
	assert_int_equal(bus_register(&b, 0x3ff, 1, probe_read, probe_write, &c, "y", &err), -EBUSY);
	terr_clear(&err);
	/* adjacent is fine */
	assert_int_equal(bus_register(&b, 0x3f0, 8, probe_read, probe_write, &c, "z", &err), 0);

	uint8_t v = 0x5a;
	assert_int_equal(bus_write(&b, 0x3fb, &v, 1), 0);
	assert_int_equal(a.writes, 1);
	assert_int_equal(a.last_off, 3);
	assert_int_equal(a.last_val, 0x5a);
	uint32_t d = 0;
	assert_int_equal(bus_read(&b, 0x40f, &d, 4), 0);
	assert_int_equal(c.last_off, 0xf);
	assert_int_equal(d, 0x4f4f4f4f);
	/* unassigned */
	d = 0;
	assert_int_equal(bus_read(&b, 0x500, &d, 4), -ENOENT);
	assert_int_equal(d, 0xffffffff);
	assert_int_equal(bus_unregister(&b, 0x3f8, &a), 0);
	assert_int_equal(bus_read(&b, 0x3f8, &d, 1), -ENOENT);
	assert_int_equal(bus_unregister(&b, 0x3f8, &a), -ENOENT);
	/* zero length and wrap-around */
	assert_true(bus_register(&b, 0x10, 0, probe_read, probe_write, &a, "w", &err) < 0);
	terr_clear(&err);
	assert_true(bus_register(&b, UINT64_MAX, 2, probe_read, probe_write, &a, "w", &err) < 0);
	bus_destroy(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dispatch_and_overlap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
