#include "arch/x86/acpi_dsdt.h"

static void pci_root(struct aml *a, const struct acpi_config *c)
{
	size_t dev = aml_device_begin(a, "PCI0");
	aml_name(a, "_HID");
	aml_eisaid(a, "PNP0A08");   /* PCI Express root bridge */
	aml_name(a, "_CID");
	aml_eisaid(a, "PNP0A03");   /* ... compatible with plain PCI */
	aml_name(a, "_ADR");
	aml_integer(a, 0);
	aml_name(a, "_SEG");
	aml_integer(a, 0);
	aml_name(a, "_BBN");
	aml_integer(a, 0);
	aml_name(a, "_UID");
	aml_integer(a, 0);

	struct aml_res r = { .n = 0 };
	aml_res_bus(&r, 0, (uint16_t)c->pci_bus_end);
	aml_res_io(&r, 0xcf8, 8);   /* CF8/CFC configuration ports, consumed */
	aml_res_word_io(&r, c->pci_io_base, (uint16_t)(c->pci_io_base + c->pci_io_size - 1));
	aml_res_dword_mem(&r, (uint32_t)c->mmio32_base,
			  (uint32_t)(c->mmio32_base + c->mmio32_size - 1), false);
	if (c->mmio64_size)
		aml_res_qword_mem(&r, c->mmio64_base, c->mmio64_base + c->mmio64_size - 1, true);
	aml_name(a, "_CRS");
	aml_res_emit(a, &r);

	/* Direct GSI routing, one entry per slot and pin: no link devices. */
	aml_name(a, "_PRT");
	size_t prt = aml_package_begin(a, 32 * 4);
	for (unsigned slot = 0; slot < 32; slot++)
		for (unsigned pin = 0; pin < 4; pin++) {
			size_t e = aml_package_begin(a, 4);
			aml_integer(a, (uint64_t)slot << 16 | 0xffff);
			aml_integer(a, pin);
			aml_integer(a, 0);   /* source: none, a GSI follows */
			aml_integer(a, acpi_pci_intx_gsi(slot, pin));
			aml_end(a, e);
		}
	aml_end(a, prt);
	aml_end(a, dev);
}

/* Linux trusts MCFG only if the ECAM area is reserved, by e820 early on
 * and by a motherboard resource (PNP0C02) later. */
static void motherboard_resources(struct aml *a, const struct acpi_config *c)
{
	size_t dev = aml_device_begin(a, "MRES");
	aml_name(a, "_HID");
	aml_eisaid(a, "PNP0C02");
	aml_name(a, "_UID");
	aml_integer(a, 0);
	struct aml_res r = { .n = 0 };
	aml_res_mem32_fixed(&r, (uint32_t)c->ecam_base, (c->ecam_bus_end + 1) << 20);
	aml_name(a, "_CRS");
	aml_res_emit(a, &r);
	aml_end(a, dev);
}

static void com1(struct aml *a, const struct acpi_config *c)
{
	size_t dev = aml_device_begin(a, "COM1");
	aml_name(a, "_HID");
	aml_eisaid(a, "PNP0501");   /* 16550A-compatible */
	aml_name(a, "_UID");
	aml_integer(a, 1);
	struct aml_res r = { .n = 0 };
	aml_res_io(&r, c->com1_port, 8);
	aml_res_irq(&r, c->com1_irq);
	aml_name(a, "_CRS");
	aml_res_emit(a, &r);
	aml_end(a, dev);
}

/* ISA devices with fixed resources, so Linux binds its drivers through
 * PNP instead of probing ports. */
static void isa_device(struct aml *a, const char *name, const char *hid,
		       const struct aml_res *res)
{
	size_t dev = aml_device_begin(a, name);
	aml_name(a, "_HID");
	aml_eisaid(a, hid);
	struct aml_res r = *res;
	aml_name(a, "_CRS");
	aml_res_emit(a, &r);
	aml_end(a, dev);
}

static void legacy_devices(struct aml *a, const struct acpi_config *c)
{
	struct aml_res r = { .n = 0 };
	if (c->rtc) {
		aml_res_io(&r, 0x70, 2);
		aml_res_irq(&r, 8);
		isa_device(a, "RTC", "PNP0B00", &r);   /* AT real-time clock */
	}
	if (c->i8042) {
		r = (struct aml_res){ .n = 0 };
		aml_res_io(&r, 0x60, 1);
		aml_res_io(&r, 0x64, 1);
		aml_res_irq(&r, 1);
		isa_device(a, "KBD", "PNP0303", &r);   /* PS/2 keyboard port */
		r = (struct aml_res){ .n = 0 };
		aml_res_irq(&r, 12);
		isa_device(a, "MOU", "PNP0F13", &r);   /* PS/2 mouse port */
	}
}

void acpi_dsdt_body(struct aml *a, const struct acpi_config *c)
{
	size_t sb = aml_scope_begin(a, "\\_SB");
	pci_root(a, c);
	motherboard_resources(a, c);
	if (c->com1_port)
		com1(a, c);
	legacy_devices(a, c);
	size_t pwrb = aml_device_begin(a, "PWRB");
	aml_name(a, "_HID");
	aml_eisaid(a, "PNP0C0C");
	aml_name(a, "_UID");
	aml_integer(a, 0);
	aml_end(a, pwrb);
	aml_end(a, sb);

	/* \_S5: SLP_TYP for PM1a and PM1b control; the PM device powers off
	 * on SLP_EN with this SLP_TYP (see acpi.h). */
	aml_name(a, "\\_S5");
	size_t s5 = aml_package_begin(a, 4);
	aml_integer(a, ACPI_S5_SLP_TYP);
	aml_integer(a, ACPI_S5_SLP_TYP);
	aml_integer(a, 0);
	aml_integer(a, 0);
	aml_end(a, s5);
}
