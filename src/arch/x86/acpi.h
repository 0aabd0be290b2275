/* ACPI tables generated from the VM's configuration and written into guest
 * RAM at LAYOUT_ACPI_START..LAYOUT_ACPI_END: RSDP (2.0) -> XSDT -> FADT
 * (-> FACS, DSDT), MADT, MCFG. Debian's kernels need them for SMP, PCI
 * interrupt routing and power-off.
 *
 * Contract with the devices that implement what the tables describe:
 *  - PM1a event block (4 bytes at pm1a_evt_port): PM1 status (2) + enable (2).
 *    The power button is the fixed-feature one: to request a shutdown, set
 *    PWRBTN_STS (bit 8) in status and, if PWRBTN_EN (bit 8) is set in
 *    enable, raise the SCI (level, active high, on sci_irq).
 *  - PM1a control (2 bytes at pm1a_cnt_port): reads return SCI_EN (bit 0)
 *    set, as there is no SMI_CMD to switch modes. A write with SLP_EN
 *    (bit 13) and SLP_TYP (bits 10-12) == ACPI_S5_SLP_TYP powers off.
 *  - Reset: writing reset_value to I/O port reset_port resets the VM.
 *  - PCI INTx: device `slot`, pin INTA..INTD (0..3) raises GSI
 *    acpi_pci_intx_gsi(slot, pin), level-triggered, active low (the classic
 *    swizzle over IOAPIC pins 16-23, without link devices). */
#ifndef TERN_ARCH_X86_ACPI_H
#define TERN_ARCH_X86_ACPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/memory.h"
#include "util/error.h"

#define ACPI_S5_SLP_TYP        5
#define ACPI_PM1_CNT_SCI_EN    (1u << 0)
#define ACPI_PM1_CNT_SLP_TYP_SHIFT 10
#define ACPI_PM1_CNT_SLP_EN    (1u << 13)
#define ACPI_PM1_STS_PWRBTN    (1u << 8)
#define ACPI_MAX_CPUS          255    /* xAPIC MADT entries: 8-bit APIC ids */

struct acpi_config {
	unsigned ncpus;            /* local APICs with ids 0..ncpus-1 */
	uint16_t pm1a_evt_port;    /* 4-byte PM1a event block */
	uint16_t pm1a_cnt_port;    /* 2-byte PM1a control block */
	uint16_t pm_tmr_port;      /* 4-byte, 24-bit PM timer; 0: none */
	uint16_t reset_port;       /* RESET_REG in I/O space */
	uint8_t reset_value;
	uint8_t sci_irq;           /* ISA IRQ = GSI of the SCI */
	bool i8042;                /* an 8042 keyboard controller is present */
	uint64_t ecam_base;        /* PCI segment 0 ECAM */
	unsigned ecam_bus_end;     /* the ECAM window covers buses 0..ecam_bus_end
				    * (<= 255); reserved in e820 and by \_SB.MRES */
	unsigned pci_bus_end;      /* buses behind the root bridge: MCFG end bus and
				    * _CRS bus range (<= ecam_bus_end). Linux scans
				    * 32 slots of every bus up to MCFG's end bus
				    * with port I/O at boot (peer-bridge fixup):
				    * 8192 config reads for 255, so keep it 0
				    * while there are no bridges. */
	bool rtc;                  /* a CMOS RTC at 0x70, IRQ 8 */
	uint16_t pci_io_base;      /* PCI I/O window [base, base + size) */
	uint32_t pci_io_size;
	uint64_t mmio32_base, mmio32_size;  /* 32-bit PCI MMIO window */
	uint64_t mmio64_base, mmio64_size;  /* 64-bit PCI MMIO window; size 0: none */
	uint16_t com1_port;        /* 16550 at this port, 8 bytes; 0: none */
	uint8_t com1_irq;
};

/* Guest-physical address of each table (for tests and diagnostics). */
struct acpi_tables {
	uint64_t rsdp, xsdt, fadt, facs, dsdt, madt, mcfg;
	uint64_t end;              /* first byte after the last table */
};

/* tern's platform: the windows of layout.h (the 64-bit window 1 GiB-aligned
 * above the end of RAM), PM block at 0x600 (event 0x600, control 0x604,
 * timer 0x608), reset by writing 1 to port 0x60c, SCI on IRQ 9, an i8042,
 * a CMOS RTC, COM1 at 0x3f8 / IRQ 4, PCI I/O 0x1000 - 0xffff, one PCI bus
 * (ECAM window for 256). */
void acpi_config_defaults(struct acpi_config *c, const struct guest_mem *m, unsigned ncpus);

/* Build all tables into buf (cap bytes), which the guest will see at `gpa`,
 * and fill *t. -EINVAL for a configuration the tables cannot express, -ENOSPC
 * when they do not fit. */
int acpi_build_buf(uint8_t *buf, size_t cap, uint64_t gpa, const struct acpi_config *c,
		   struct acpi_tables *t, struct terr *err);

/* Build the tables at LAYOUT_ACPI_START in guest RAM; *rsdp receives the
 * RSDP's address for hvm_start_info / the zero page. */
int acpi_build(const struct guest_mem *m, const struct acpi_config *c, uint64_t *rsdp,
	       struct terr *err);

/* GSI that PCI device `slot` (0-31) raises on pin 0-3 (INTA-INTD). */
static inline unsigned acpi_pci_intx_gsi(unsigned slot, unsigned pin)
{
	return 16 + ((slot + pin) & 7);
}

#endif
