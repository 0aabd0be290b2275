/* Boot register state: the GDT in RAM agrees with the cached segments, the
 * page tables identity-map 4 GiB, and each protocol's registers are set. */
#include <errno.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "arch/x86/boot_regs.h"
#include "arch/x86/layout.h"
#include "test_util.h"

static uint64_t rd64(const struct guest_mem *m, uint64_t gpa)
{
	uint64_t v;
	assert_int_equal(guest_mem_read(m, gpa, &v, 8), 0);
	return v;
}

/* Decode the GDT descriptor for sel and compare with KVM's cached view. */
static void check_seg(const struct guest_mem *m, const struct kvm_segment *s, uint16_t sel)
{
	uint64_t d = rd64(m, LAYOUT_BOOT_GDT + sel);
	uint32_t limit = (d & 0xffff) | ((d >> 32) & 0xf0000);
	uint32_t base = ((d >> 16) & 0xffffff) | ((d >> 32) & 0xff000000);
	unsigned g = (d >> 55) & 1;

	assert_int_equal(s->selector, sel);
	assert_int_equal(s->base, base);
	assert_int_equal(s->limit, g ? (limit << 12) | 0xfff : limit);
	assert_int_equal(s->type, (d >> 40) & 0xf);
	assert_int_equal(s->s, (d >> 44) & 1);
	assert_int_equal(s->dpl, (d >> 45) & 3);
	assert_int_equal(s->present, (d >> 47) & 1);
	assert_int_equal(s->avl, (d >> 52) & 1);
	assert_int_equal(s->l, (d >> 53) & 1);
	assert_int_equal(s->db, (d >> 54) & 1);
	assert_int_equal(s->g, g);
	assert_int_equal(s->unusable, 0);
}

static void check_common(const struct guest_mem *m, const struct kvm_regs *r,
			 const struct kvm_sregs *s)
{
	assert_int_equal(r->rflags, 2);
	assert_int_equal(s->gdt.base, LAYOUT_BOOT_GDT);
	assert_int_equal(s->gdt.limit, BOOT_GDT_ENTRIES * 8 - 1);
	assert_int_equal(rd64(m, LAYOUT_BOOT_GDT), 0);  /* null descriptor */
	check_seg(m, &s->ds, BOOT_GDT_DATA);
	check_seg(m, &s->es, BOOT_GDT_DATA);
	check_seg(m, &s->ss, BOOT_GDT_DATA);
	check_seg(m, &s->tr, BOOT_GDT_TSS);
	assert_int_equal(s->ds.type, 3);         /* read/write, accessed */
	assert_int_equal(s->ds.limit, 0xffffffffu);
	assert_int_equal(s->ds.db, 1);
	assert_int_equal(s->tr.type, 11);        /* busy TSS */
	assert_int_equal(s->tr.limit, 0x67);
	assert_int_equal(s->tr.s, 0);
	assert_int_equal(s->ldt.unusable, 1);
	assert_int_equal(s->apic_base, 0xfee00900);  /* left alone */
}

static void test_pvh(void **state)
{
	(void)state;
	struct guest_mem m;
	struct kvm_regs r;
	struct kvm_sregs s = { .apic_base = 0xfee00900 };
	struct boot_entry e = { BOOT_ENTRY_PVH32, 0x1000200, LAYOUT_BOOT_INFO };
	struct terr err = { 0 };

	tu_mem(&m, MIB(64));
	assert_int_equal(boot_regs_setup(&m, &e, &r, &s, &err), 0);
	check_common(&m, &r, &s);
	check_seg(&m, &s.cs, BOOT_GDT_CODE32);
	assert_int_equal(s.cs.type, 11);
	assert_int_equal(s.cs.db, 1);
	assert_int_equal(s.cs.l, 0);
	assert_int_equal(s.cs.limit, 0xffffffffu);
	assert_int_equal(r.rip, 0x1000200);
	assert_int_equal(r.rbx, LAYOUT_BOOT_INFO);
	assert_int_equal(s.cr0, 0x11);           /* PE, ET; no paging */
	assert_int_equal(s.cr4, 0);
	assert_int_equal(s.efer, 0);
	guest_mem_destroy(&m);
}

/* Walk the guest's page tables for va. */
static uint64_t walk(const struct guest_mem *m, uint64_t cr3, uint64_t va)
{
	uint64_t e = rd64(m, cr3 + ((va >> 39) & 511) * 8);
	assert_true(e & 1);
	e = rd64(m, (e & ~0xfffULL) + ((va >> 30) & 511) * 8);
	assert_true(e & 1);
	e = rd64(m, (e & ~0xfffULL) + ((va >> 21) & 511) * 8);
	assert_true(e & 1);
	assert_true(e & 0x80);   /* 2 MiB page */
	assert_true(e & 2);      /* writable */
	return (e & ~0x1fffffULL) + (va & 0x1fffff);
}

static void test_linux64(void **state)
{
	(void)state;
	struct guest_mem m;
	struct kvm_regs r;
	struct kvm_sregs s = { .apic_base = 0xfee00900 };
	struct boot_entry e = { BOOT_ENTRY_LINUX64, 0x1000200, LAYOUT_BOOT_INFO };
	struct terr err = { 0 };

	tu_mem(&m, MIB(64));
	memset(m.base + LAYOUT_PML4, 0xff, 0x6000);  /* stale junk must go */
	assert_int_equal(boot_regs_setup(&m, &e, &r, &s, &err), 0);
	check_common(&m, &r, &s);
	check_seg(&m, &s.cs, BOOT_GDT_CODE64);
	assert_int_equal(s.cs.selector, 0x10);   /* __BOOT_CS */
	assert_int_equal(s.ds.selector, 0x18);   /* __BOOT_DS */
	assert_int_equal(s.cs.l, 1);
	assert_int_equal(s.cs.db, 0);
	assert_int_equal(r.rip, 0x1000200);
	assert_int_equal(r.rsi, LAYOUT_BOOT_INFO);
	assert_int_equal(s.cr0 & 0x80000001, 0x80000001);
	assert_int_equal(s.cr4, 0x20);
	assert_int_equal(s.efer, 0x500);
	assert_int_equal(s.cr3, LAYOUT_PML4);
	const uint64_t va[] = { 0, 0x7000, 0x1234567, 0xbfffffff, 0xfee00000, 0xffffffff };
	for (size_t i = 0; i < sizeof(va) / sizeof(va[0]); i++)
		assert_int_equal(walk(&m, s.cr3, va[i]), va[i]);
	assert_int_equal(rd64(&m, LAYOUT_PML4 + 8), 0);  /* nothing above 512 GiB */
	assert_int_equal(rd64(&m, LAYOUT_PDPT + 4 * 8), 0);
	guest_mem_destroy(&m);
}

static void test_bad(void **state)
{
	(void)state;
	struct guest_mem m;
	struct kvm_regs r;
	struct kvm_sregs s = { 0 };
	struct boot_entry e = { BOOT_ENTRY_PVH32, 0x100000000ULL, LAYOUT_BOOT_INFO };
	struct terr err = { 0 };

	tu_mem(&m, MIB(4));
	assert_int_equal(boot_regs_setup(&m, &e, &r, &s, &err), -EINVAL);
	assert_string_equal(err.msg, "boot: PVH entry 0x100000000 or start_info 0x7000 is "
			    "above 4 GiB");
	guest_mem_destroy(&m);
}

static void test_cmdline(void **state)
{
	(void)state;
	struct guest_mem m;
	struct terr err = { 0 };
	char buf[300];

	tu_mem(&m, MIB(4));
	assert_int_equal(boot_cmdline_write(&m, "console=ttyS0", 255, &err), 0);
	assert_string_equal((char *)m.base + LAYOUT_CMDLINE, "console=ttyS0");
	memset(buf, 'a', 256);
	buf[256] = '\0';
	assert_int_equal(boot_cmdline_write(&m, buf, 255, &err), -E2BIG);
	assert_string_equal(err.msg, "cmdline: 256 bytes is longer than the 255 the kernel "
			    "accepts");
	buf[255] = '\0';
	assert_int_equal(boot_cmdline_write(&m, buf, 255, NULL), 0);
	guest_mem_destroy(&m);
}

static void test_initrd(void **state)
{
	(void)state;
	struct guest_mem m;
	struct terr err = { 0 };
	uint64_t gpa, size;
	static uint8_t data[MIB(1) + 5];
	char msg[512];

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	const char *p = tu_file("initrd.img", data, sizeof(data));
	tu_mem(&m, MIB(16));
	assert_int_equal(boot_initrd_load(&m, p, MIB(2), MIB(16), &gpa, &size, &err), 0);
	assert_int_equal(size, sizeof(data));
	assert_int_equal(gpa % 4096, 0);
	assert_true(gpa + size <= MIB(16));
	assert_true(gpa + size > MIB(16) - 4096);   /* as high as possible */
	assert_memory_equal(m.base + gpa, data, sizeof(data));

	/* only 1 MiB free between floor and limit */
	assert_int_equal(boot_initrd_load(&m, p, MIB(15), MIB(16), &gpa, &size, &err), -ENOMEM);
	snprintf(msg, sizeof(msg), "initrd %s (2 MiB) does not fit below 0x1000000 "
		 "(free RAM for it: 0xf00000 - 0x1000000)", p);
	assert_string_equal(err.msg, msg);

	terr_clear(&err);
	assert_int_equal(boot_initrd_load(&m, "/nonexistent/initrd", 0, MIB(16), &gpa, &size,
					  &err), -ENOENT);
	assert_string_equal(err.msg, "initrd /nonexistent/initrd: No such file or directory");

	terr_clear(&err);
	assert_int_equal(boot_initrd_load(&m, tu_dir(), 0, MIB(16), &gpa, &size, &err), -EINVAL);
	snprintf(msg, sizeof(msg), "initrd %s: not a regular file", tu_dir());
	assert_string_equal(err.msg, msg);

	terr_clear(&err);
	p = tu_file("empty.img", "", 0);
	assert_int_equal(boot_initrd_load(&m, p, 0, MIB(16), &gpa, &size, &err), -EINVAL);
	snprintf(msg, sizeof(msg), "initrd %s: file is empty", p);
	assert_string_equal(err.msg, msg);
	guest_mem_destroy(&m);
}

static int teardown(void **state)
{
	(void)state;
	tu_cleanup();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pvh),
		cmocka_unit_test(test_linux64),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_cmdline),
		cmocka_unit_test(test_initrd),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
