/* e820 maps for the memory sizes that exercise each layout case. */
#include <errno.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "arch/x86/e820.h"
#include "arch/x86/layout.h"

struct want { uint64_t addr, size; uint32_t type; };

static void check(uint64_t ram, const struct want *w, int nw)
{
	struct guest_mem m;
	struct e820_entry tab[E820_MAX_ENTRIES];
	struct terr err = { 0 };

	memset(&m, 0, sizeof(m));
	guest_mem_layout(&m, ram);
	int n = e820_build(&m, tab, E820_MAX_ENTRIES, &err);
	assert_int_equal(n, nw);
	uint64_t total = 0;
	for (int i = 0; i < n; i++) {
		assert_int_equal(tab[i].addr, w[i].addr);
		assert_int_equal(tab[i].size, w[i].size);
		assert_int_equal(tab[i].type, w[i].type);
		if (i)  /* sorted, no overlap */
			assert_true(tab[i - 1].addr + tab[i - 1].size <= tab[i].addr);
		if (tab[i].type == E820_RAM)
			total += tab[i].size;
	}
	/* every byte of RAM is described except the 0x9fc00 - 1 MiB hole */
	assert_int_equal(total, ram - (LAYOUT_HIMEM_START - LAYOUT_EBDA));
}

#define LOW(top) \
	{ 0, 0x9fc00, E820_RAM }, { 0x9fc00, 0x60400, E820_RESERVED }, \
	{ 0x100000, (top) - 0x100000, E820_RAM }, \
	{ 0xe0000000, MIB(256), E820_RESERVED }, { 0xfeffb000, 0x4000, E820_RESERVED }

static void test_256m(void **state)
{
	(void)state;
	const struct want w[] = { LOW(MIB(256)) };
	check(MIB(256), w, 5);
}

static void test_3g(void **state)
{
	(void)state;
	const struct want w[] = { LOW(GIB(3)) };
	check(GIB(3), w, 5);
}

static void test_3584m(void **state)
{
	(void)state;
	const struct want w[] = { LOW(GIB(3)), { GIB(4), MIB(512), E820_RAM } };
	check(MIB(3584), w, 6);
}

static void test_8g(void **state)
{
	(void)state;
	const struct want w[] = { LOW(GIB(3)), { GIB(4), GIB(5), E820_RAM } };
	check(GIB(8), w, 6);
}

static void test_low_top(void **state)
{
	(void)state;
	struct guest_mem m;
	memset(&m, 0, sizeof(m));
	guest_mem_layout(&m, GIB(8));
	assert_int_equal(e820_low_ram_top(&m), GIB(3));
	guest_mem_layout(&m, MIB(100));
	assert_int_equal(e820_low_ram_top(&m), MIB(100));
}

static void test_errors(void **state)
{
	(void)state;
	struct guest_mem m;
	struct e820_entry tab[4];
	struct terr err = { 0 };

	memset(&m, 0, sizeof(m));
	guest_mem_layout(&m, GIB(8));
	assert_int_equal(e820_build(&m, tab, 4, &err), -EINVAL);
	assert_string_equal(err.msg, "e820: the memory map needs more than 4 entries");

	terr_clear(&err);
	guest_mem_layout(&m, 512 * 1024);
	assert_int_equal(e820_build(&m, tab, 4, &err), -EINVAL);
	assert_string_equal(err.msg, "e820: guest RAM below 1 MiB is 512 KiB; "
			    "tern needs at least the first 1 MiB");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_256m),
		cmocka_unit_test(test_3g),
		cmocka_unit_test(test_3584m),
		cmocka_unit_test(test_8g),
		cmocka_unit_test(test_low_top),
		cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
