/* ACPI tables: signature, length, checksum, revision and key fields of each
 * table, the AML encoder's corner cases, and an external judge: iasl
 * (acpica-tools) must decompile every table, and recompile the DSDT, without
 * errors. */
#include <errno.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "arch/x86/acpi.h"
#include "arch/x86/aml.h"
#include "arch/x86/layout.h"
#include "test_util.h"

#define SPACE (LAYOUT_ACPI_END - LAYOUT_ACPI_START)

static uint8_t buf[SPACE];

static uint8_t *at(uint64_t gpa) { return buf + (gpa - LAYOUT_ACPI_START); }
static uint16_t r16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t r32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t r64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	while (n--)
		s = (uint8_t)(s + *p++);
	return s;
}

/* Check the standard header of the table at gpa; returns its length. */
static uint32_t check_table(uint64_t gpa, const char *sig, uint8_t rev)
{
	const uint8_t *p = at(gpa);
	uint32_t len = r32(p + 4);

	assert_memory_equal(p, sig, 4);
	assert_int_equal(p[8], rev);
	assert_true(len >= 36 && gpa + len <= LAYOUT_ACPI_END);
	assert_int_equal(sum(p, len), 0);
	assert_memory_equal(p + 10, "TERN  ", 6);
	return len;
}

static void build(struct acpi_tables *t, uint64_t ram, unsigned ncpus)
{
	struct guest_mem m;
	struct acpi_config c;
	struct terr err = { 0 };

	memset(&m, 0, sizeof(m));
	guest_mem_layout(&m, ram);
	acpi_config_defaults(&c, &m, ncpus);
	memset(buf, 0xee, sizeof(buf));
	int r = acpi_build_buf(buf, sizeof(buf), LAYOUT_ACPI_START, &c, t, &err);
	if (r < 0)
		fail_msg("%s", err.msg);
}

static void test_rsdp_xsdt(void **state)
{
	(void)state;
	struct acpi_tables t;

	build(&t, MIB(256), 2);
	assert_int_equal(t.rsdp, LAYOUT_ACPI_START);
	const uint8_t *p = at(t.rsdp);
	assert_memory_equal(p, "RSD PTR ", 8);
	assert_int_equal(sum(p, 20), 0);
	assert_int_equal(sum(p, 36), 0);
	assert_int_equal(p[15], 2);
	assert_int_equal(r32(p + 20), 36);
	assert_int_equal(r64(p + 24), t.xsdt);

	uint32_t len = check_table(t.xsdt, "XSDT", 1);
	assert_int_equal(len, 36 + 3 * 8);
	assert_int_equal(r64(at(t.xsdt) + 36), t.fadt);
	assert_int_equal(r64(at(t.xsdt) + 44), t.madt);
	assert_int_equal(r64(at(t.xsdt) + 52), t.mcfg);
	assert_true(t.end <= LAYOUT_ACPI_END);
}

static void test_fadt_facs(void **state)
{
	(void)state;
	struct acpi_tables t;

	build(&t, MIB(256), 1);
	const uint8_t *f = at(t.fadt);
	assert_int_equal(check_table(t.fadt, "FACP", 6), 276);
	assert_int_equal(r32(f + 36), t.facs);
	assert_int_equal(r32(f + 40), t.dsdt);
	assert_int_equal(r64(f + 132), t.facs);          /* X_FIRMWARE_CTRL */
	assert_int_equal(r64(f + 140), t.dsdt);          /* X_DSDT */
	assert_int_equal(r16(f + 46), 9);                /* SCI_INT */
	assert_int_equal(r32(f + 48), 0);                /* SMI_CMD: none */
	assert_int_equal(r32(f + 56), 0x600);            /* PM1a_EVT_BLK */
	assert_int_equal(r32(f + 64), 0x604);            /* PM1a_CNT_BLK */
	assert_int_equal(r32(f + 76), 0x608);            /* PM_TMR_BLK */
	assert_int_equal(f[88], 4);
	assert_int_equal(f[89], 2);
	assert_int_equal(f[91], 4);
	uint32_t flags = r32(f + 112);
	assert_true(flags & (1u << 10));                 /* RESET_REG_SUP */
	assert_false(flags & (1u << 4));                 /* fixed power button */
	assert_false(flags & (1u << 20));                /* not hardware-reduced */
	assert_int_equal(f[116], 1);                     /* RESET_REG: system I/O */
	assert_int_equal(f[117], 8);
	assert_int_equal(r64(f + 120), 0x60c);
	assert_int_equal(f[128], 1);                     /* RESET_VALUE */
	assert_int_equal(f[148], 1);                     /* X_PM1a_EVT_BLK */
	assert_int_equal(f[149], 32);
	assert_int_equal(r64(f + 152), 0x600);
	assert_int_equal(f[172], 1);                     /* X_PM1a_CNT_BLK */
	assert_int_equal(f[173], 16);
	assert_int_equal(r64(f + 176), 0x604);
	assert_int_equal(r16(f + 109) & 2, 2);           /* 8042 present */

	const uint8_t *s = at(t.facs);
	assert_int_equal(t.facs % 64, 0);
	assert_memory_equal(s, "FACS", 4);
	assert_int_equal(r32(s + 4), 64);
	assert_int_equal(s[32], 2);
}

static void test_madt(void **state)
{
	(void)state;
	struct acpi_tables t;

	build(&t, GIB(8), 4);
	uint32_t len = check_table(t.madt, "APIC", 5);
	const uint8_t *p = at(t.madt);
	assert_int_equal(r32(p + 36), 0xfee00000);
	assert_int_equal(r32(p + 40), 1);
	unsigned lapics = 0, ioapics = 0, isos = 0, nmis = 0;
	for (uint32_t o = 44; o < len;) {
		const uint8_t *e = p + o;
		assert_true(e[1] >= 2 && o + e[1] <= len);
		switch (e[0]) {
		case 0:
			assert_int_equal(e[1], 8);
			assert_int_equal(e[3], lapics);      /* APIC ids 0..n-1 */
			assert_int_equal(r32(e + 4), 1);
			lapics++;
			break;
		case 1:
			assert_int_equal(e[1], 12);
			assert_int_equal(r32(e + 4), 0xfec00000);
			assert_int_equal(r32(e + 8), 0);
			ioapics++;
			break;
		case 2:
			assert_int_equal(e[1], 10);
			if (e[3] == 0) {
				assert_int_equal(r32(e + 4), 2);
				assert_int_equal(r16(e + 8), 0);
			} else {
				assert_int_equal(e[3], 9);   /* SCI: level, active high */
				assert_int_equal(r32(e + 4), 9);
				assert_int_equal(r16(e + 8), 0xd);
			}
			isos++;
			break;
		case 4:
			assert_int_equal(e[5], 1);
			nmis++;
			break;
		default:
			fail_msg("unexpected MADT entry type %u", e[0]);
		}
		o += e[1];
	}
	assert_int_equal(lapics, 4);
	assert_int_equal(ioapics, 1);
	assert_int_equal(isos, 2);
	assert_int_equal(nmis, 1);
}

static void test_mcfg(void **state)
{
	(void)state;
	struct acpi_tables t;

	build(&t, MIB(256), 1);
	assert_int_equal(check_table(t.mcfg, "MCFG", 1), 60);
	const uint8_t *p = at(t.mcfg);
	assert_int_equal(r64(p + 44), 0xe0000000);
	assert_int_equal(r16(p + 52), 0);
	assert_int_equal(p[54], 0);
	assert_int_equal(p[55], 0);          /* one bus: pci_bus_end */
}

static bool contains(const uint8_t *p, size_t n, const void *needle, size_t m)
{
	for (size_t i = 0; i + m <= n; i++)
		if (!memcmp(p + i, needle, m))
			return true;
	return false;
}

static void test_dsdt(void **state)
{
	(void)state;
	struct acpi_tables t;

	build(&t, GIB(8), 1);
	uint32_t len = check_table(t.dsdt, "DSDT", 2);
	const uint8_t *p = at(t.dsdt);
	const uint8_t pnp0a08[] = { 0x0c, 0x41, 0xd0, 0x0a, 0x08 };
	const uint8_t pnp0501[] = { 0x0c, 0x41, 0xd0, 0x05, 0x01 };
	const uint8_t com1_io[] = { 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08 };
	const uint8_t com1_irq[] = { 0x22, 0x10, 0x00 };
	const uint8_t s5[] = { 0x08, '\\', '_', 'S', '5', '_', 0x12, 0x08, 0x04,
			       0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00 };
	assert_true(contains(p, len, pnp0a08, sizeof(pnp0a08)));
	assert_true(contains(p, len, pnp0501, sizeof(pnp0501)));
	assert_true(contains(p, len, com1_io, sizeof(com1_io)));
	assert_true(contains(p, len, com1_irq, sizeof(com1_irq)));
	assert_true(contains(p, len, s5, sizeof(s5)));
	assert_true(contains(p, len, "_PRT", 4));
	/* 64-bit window: 1 GiB above the end of 8 GiB RAM (4 GiB + 5 GiB) */
	uint64_t w = GIB(9);
	assert_true(contains(p, len, &w, 8));
}

static void test_pci_intx(void **state)
{
	(void)state;
	assert_int_equal(acpi_pci_intx_gsi(0, 0), 16);
	assert_int_equal(acpi_pci_intx_gsi(1, 0), 17);
	assert_int_equal(acpi_pci_intx_gsi(7, 1), 16);
	assert_int_equal(acpi_pci_intx_gsi(31, 3), 18);
}

static void test_aml(void **state)
{
	(void)state;
	uint8_t b[8192];
	struct aml a;

	aml_init(&a, b, sizeof(b));
	aml_integer(&a, 0);
	aml_integer(&a, 1);
	aml_integer(&a, 0xff);
	aml_integer(&a, 0x1234);
	aml_integer(&a, 0x12345678);
	aml_integer(&a, 0x123456789aULL);
	const uint8_t ints[] = { 0x00, 0x01, 0x0a, 0xff, 0x0b, 0x34, 0x12, 0x0c, 0x78, 0x56,
				 0x34, 0x12, 0x0e, 0x9a, 0x78, 0x56, 0x34, 0x12, 0, 0, 0 };
	assert_int_equal(a.len, sizeof(ints));
	assert_memory_equal(b, ints, sizeof(ints));

	aml_init(&a, b, sizeof(b));
	aml_name_string(&a, "\\_SB.PCI0.S1");
	const uint8_t name[] = { '\\', 0x2f, 3, '_', 'S', 'B', '_', 'P', 'C', 'I', '0',
				 'S', '1', '_', '_' };
	assert_memory_equal(b, name, sizeof(name));

	/* PkgLength: 1 byte up to 63, then 2 bytes with the low nibble first */
	aml_init(&a, b, sizeof(b));
	size_t m = aml_scope_begin(&a, "ABCD");   /* 4 bytes of name */
	aml_end(&a, m);
	assert_int_equal(a.len, 6);
	assert_int_equal(b[1], 5);
	aml_init(&a, b, sizeof(b));
	m = aml_scope_begin(&a, "ABCD");
	for (int i = 0; i < 100; i++)
		aml_integer(&a, 0);
	aml_end(&a, m);
	assert_int_equal(a.len, 1 + 2 + 4 + 100);
	assert_int_equal(b[1], 0x40 | (106 & 0xf));
	assert_int_equal(b[2], 106 >> 4);
	assert_memory_equal(b + 3, "ABCD", 4);
	aml_init(&a, b, sizeof(b));
	m = aml_scope_begin(&a, "ABCD");
	for (int i = 0; i < 5000; i++)
		aml_integer(&a, 0);
	aml_end(&a, m);
	assert_int_equal(b[1], 0x80 | (5007 & 0xf));
	assert_int_equal(b[2], (5007 >> 4) & 0xff);
	assert_int_equal(b[3], 5007 >> 12);

	/* running out of room is reported, never written past */
	uint8_t small[8];
	aml_init(&a, small, sizeof(small));
	aml_string(&a, "too long for eight");
	assert_true(a.overflow);
}

static void test_bad_config(void **state)
{
	(void)state;
	struct guest_mem m;
	struct acpi_config c;
	struct acpi_tables t;
	struct terr err = { 0 };

	memset(&m, 0, sizeof(m));
	guest_mem_layout(&m, MIB(256));
	acpi_config_defaults(&c, &m, 256);
	assert_int_equal(acpi_build_buf(buf, sizeof(buf), LAYOUT_ACPI_START, &c, &t, &err),
			 -EINVAL);
	assert_string_equal(err.msg, "acpi: 256 vCPUs; the MADT describes 1 to 255");
	acpi_config_defaults(&c, &m, 255);
	terr_clear(&err);
	assert_int_equal(acpi_build_buf(buf, 1000, LAYOUT_ACPI_START, &c, &t, &err), -ENOSPC);
	assert_string_equal(err.msg, "acpi: the tables do not fit in 1000 bytes");
	/* 255 vCPUs fit in the ACPI area */
	assert_int_equal(acpi_build_buf(buf, sizeof(buf), LAYOUT_ACPI_START, &c, &t, NULL), 0);
}

static void test_guest_ram(void **state)
{
	(void)state;
	struct guest_mem m;
	struct acpi_config c;
	struct terr err = { 0 };
	uint64_t rsdp;

	tu_mem(&m, MIB(16));
	acpi_config_defaults(&c, &m, 2);
	assert_int_equal(acpi_build(&m, &c, &rsdp, &err), 0);
	assert_int_equal(rsdp, LAYOUT_ACPI_START);
	assert_memory_equal(m.base + rsdp, "RSD PTR ", 8);
	guest_mem_destroy(&m);
}

/* Run a shell command, returning its output; fail on a non-zero status. */
static void run(const char *cmd, char *out, size_t cap)
{
	FILE *f = popen(cmd, "r");
	size_t n = 0;

	assert_non_null(f);
	while (n + 1 < cap && !feof(f)) {
		size_t k = fread(out + n, 1, cap - 1 - n, f);
		if (!k)
			break;
		n += k;
	}
	out[n] = '\0';
	int st = pclose(f);
	if (st != 0)
		fail_msg("`%s` failed (status %d):\n%s", cmd, st, out);
}

static void dump(const char *dir, const char *name, uint64_t gpa, size_t len)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s.dat", dir, name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(at(gpa), 1, len, f), len);
	fclose(f);
}

static void test_iasl(void **state)
{
	(void)state;
	struct acpi_tables t;
	static char out[1 << 16];
	char cmd[1024];
	const char *dir = tu_dir();

	if (system("command -v iasl >/dev/null 2>&1") != 0)
		skip();
	build(&t, MIB(3584), 2);
	/* No RSDP: iasl (20200925) cannot read a bare RSDP file; the checksum
	 * and fields are checked in test_rsdp_xsdt. */
	dump(dir, "xsdt", t.xsdt, r32(at(t.xsdt) + 4));
	dump(dir, "facp", t.fadt, r32(at(t.fadt) + 4));
	dump(dir, "facs", t.facs, 64);
	dump(dir, "apic", t.madt, r32(at(t.madt) + 4));
	dump(dir, "mcfg", t.mcfg, r32(at(t.mcfg) + 4));
	dump(dir, "dsdt", t.dsdt, r32(at(t.dsdt) + 4));

	const char *names[] = { "xsdt", "facp", "facs", "apic", "mcfg", "dsdt" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(cmd, sizeof(cmd), "cd %s && iasl -d %s.dat 2>&1", dir, names[i]);
		run(cmd, out, sizeof(out));
		if (strstr(out, "Error") || strstr(out, "Warning") || strstr(out, "Invalid"))
			fail_msg("iasl -d %s.dat complained:\n%s", names[i], out);
		snprintf(cmd, sizeof(cmd), "%s/%s.dsl", dir, names[i]);
		assert_int_equal(access(cmd, R_OK), 0);
	}
	/* the decompiled DSDT must compile back cleanly */
	snprintf(cmd, sizeof(cmd), "cd %s && iasl -p recompiled dsdt.dsl 2>&1", dir);
	run(cmd, out, sizeof(out));
	if (!strstr(out, "0 Errors"))
		fail_msg("iasl dsdt.dsl:\n%s", out);
	/* and what the disassembler saw must be what we meant */
	snprintf(cmd, sizeof(cmd), "cat %s/dsdt.dsl %s/facp.dsl %s/apic.dsl", dir, dir, dir);
	run(cmd, out, sizeof(out));
	const char *want[] = { "PNP0A08", "PNP0A03", "PNP0501", "PNP0C0C", "PNP0C02",
			       "Name (\\_S5, Package (0x04)", "0x03F8", "{4}",
			       "0x0000000140000000", "WordBusNumber", "PM1A Event Block Address : 00000600",
			       "Reset Register Supported (V2) : 1", "Value to cause reset : 01",
			       "Processor ID : 01", "Interrupt : 00000009" };
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (!strstr(out, want[i]))
			fail_msg("decompiled tables lack \"%s\"", want[i]);
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
		cmocka_unit_test(test_rsdp_xsdt),
		cmocka_unit_test(test_fadt_facs),
		cmocka_unit_test(test_madt),
		cmocka_unit_test(test_mcfg),
		cmocka_unit_test(test_dsdt),
		cmocka_unit_test(test_pci_intx),
		cmocka_unit_test(test_aml),
		cmocka_unit_test(test_bad_config),
		cmocka_unit_test(test_guest_ram),
		cmocka_unit_test(test_iasl),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
