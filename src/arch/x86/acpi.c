#include "arch/x86/acpi.h"
#include "arch/x86/acpi_dsdt.h"
#include "arch/x86/aml.h"
#include "arch/x86/layout.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

#define HDR_LEN   36
#define RSDP_LEN  36
#define FACS_LEN  64
#define FADT_LEN  276          /* ACPI 6.x FADT, revision 6 */
#define MCFG_ENTRY 16

/* FADT field offsets (ACPI 6.4, table 5.9) */
#define FADT_FIRMWARE_CTRL   36
#define FADT_DSDT            40
#define FADT_SCI_INT         46
#define FADT_PM1A_EVT_BLK    56
#define FADT_PM1A_CNT_BLK    64
#define FADT_PM_TMR_BLK      76
#define FADT_PM1_EVT_LEN     88
#define FADT_PM1_CNT_LEN     89
#define FADT_PM_TMR_LEN      91
#define FADT_P_LVL2_LAT      96
#define FADT_P_LVL3_LAT      98
#define FADT_IAPC_BOOT_ARCH  109
#define FADT_FLAGS           112
#define FADT_RESET_REG       116
#define FADT_RESET_VALUE     128
#define FADT_MINOR_VERSION   131
#define FADT_X_FIRMWARE_CTRL 132
#define FADT_X_DSDT          140
#define FADT_X_PM1A_EVT_BLK  148
#define FADT_X_PM1A_CNT_BLK  172
#define FADT_X_PM_TMR_BLK    208

#define FADT_F_WBINVD        (1u << 0)
#define FADT_F_PROC_C1       (1u << 2)
#define FADT_F_SLP_BUTTON    (1u << 5)   /* no sleep button */
#define FADT_F_TMR_VAL_EXT   (1u << 8)   /* 32-bit PM timer */
#define FADT_F_RESET_REG_SUP (1u << 10)

#define BOOT_ARCH_LEGACY_DEVICES (1u << 0)
#define BOOT_ARCH_8042           (1u << 1)
#define BOOT_ARCH_NO_VGA         (1u << 2)

#define MADT_PCAT_COMPAT     1
#define MADT_LAPIC           0
#define MADT_IOAPIC          1
#define MADT_ISO             2
#define MADT_LAPIC_NMI       4
#define MPS_ACTIVE_HIGH      0x1
#define MPS_LEVEL            0xc

#define GAS_SYSTEM_IO        1

struct out {
	uint8_t *buf;
	size_t cap, len;
	uint64_t gpa;
};

static void put16(uint8_t *p, uint16_t v) { v = htole16(v); memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }

static uint8_t checksum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	while (n--)
		s = (uint8_t)(s + *p++);
	return (uint8_t)-s;
}

/* Reserve n zeroed bytes at `align`; NULL when they do not fit. */
static uint8_t *alloc(struct out *o, size_t n, size_t align, uint64_t *gpa)
{
	size_t at = (o->len + align - 1) & ~(align - 1);
	if (at > o->cap || n > o->cap - at)
		return NULL;
	memset(o->buf + o->len, 0, at + n - o->len);
	o->len = at + n;
	*gpa = o->gpa + at;
	return o->buf + at;
}

static void header(uint8_t *p, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(p, sig, 4);
	put32(p + 4, len);
	p[8] = rev;
	memcpy(p + 10, "TERN  ", 6);      /* OEM id */
	memcpy(p + 16, "TERNVM  ", 8);    /* OEM table id */
	put32(p + 24, 1);                 /* OEM revision */
	memcpy(p + 28, "TERN", 4);        /* creator id */
	put32(p + 32, 1);                 /* creator revision */
}

static void finish(uint8_t *p, uint32_t len)
{
	p[9] = 0;
	p[9] = checksum(p, len);
}

/* Generic Address Structure for an I/O port block */
static void gas_io(uint8_t *p, uint16_t port, unsigned bytes)
{
	p[0] = GAS_SYSTEM_IO;
	p[1] = (uint8_t)(bytes * 8);   /* register bit width */
	p[2] = 0;                      /* bit offset */
	p[3] = bytes >= 4 ? 3 : bytes; /* access size: 1 byte, 2 word, 3 dword */
	put64(p + 4, port);
}

static int check_config(const struct acpi_config *c, struct terr *err)
{
	if (c->ncpus < 1 || c->ncpus > ACPI_MAX_CPUS)
		return terr_set(err, EINVAL, "acpi: %u vCPUs; the MADT describes 1 to %u",
				c->ncpus, ACPI_MAX_CPUS);
	if (c->pci_bus_end > c->ecam_bus_end)
		return terr_set(err, EINVAL, "acpi: PCI buses 0-%u do not fit in the ECAM "
				"window of buses 0-%u", c->pci_bus_end, c->ecam_bus_end);
	if (c->ecam_bus_end > 255 || c->ecam_base & 0xfffff ||
	    c->ecam_base + ((uint64_t)c->ecam_bus_end + 1) * MIB(1) > GIB(4))
		return terr_set(err, EINVAL, "acpi: ECAM at 0x%llx for buses 0-%u must be 1 MiB "
				"aligned, below 4 GiB, at most 256 buses",
				(unsigned long long)c->ecam_base, c->ecam_bus_end);
	if (!c->pci_io_size || c->pci_io_base + (uint64_t)c->pci_io_size > 0x10000)
		return terr_set(err, EINVAL, "acpi: PCI I/O window 0x%x + 0x%x is empty or "
				"beyond port 0xffff", c->pci_io_base, c->pci_io_size);
	if (!c->mmio32_size || c->mmio32_base + c->mmio32_size > GIB(4) ||
	    c->mmio32_base + c->mmio32_size < c->mmio32_base)
		return terr_set(err, EINVAL, "acpi: 32-bit MMIO window 0x%llx + 0x%llx is empty "
				"or not below 4 GiB", (unsigned long long)c->mmio32_base,
				(unsigned long long)c->mmio32_size);
	if (c->mmio64_size && c->mmio64_base + c->mmio64_size < c->mmio64_base)
		return terr_set(err, EINVAL, "acpi: 64-bit MMIO window 0x%llx + 0x%llx wraps",
				(unsigned long long)c->mmio64_base,
				(unsigned long long)c->mmio64_size);
	if (c->sci_irq >= 16 || c->com1_irq >= 16)
		return terr_set(err, EINVAL, "acpi: SCI (IRQ %u) and COM1 (IRQ %u) must be ISA "
				"IRQs 0-15", c->sci_irq, c->com1_irq);
	if (!c->pm1a_evt_port || !c->pm1a_cnt_port)
		return terr_set(err, EINVAL, "acpi: the PM1a event and control blocks need "
				"I/O ports");
	return 0;
}

static uint8_t *build_fadt(struct out *o, const struct acpi_config *c, uint64_t facs,
			   uint64_t dsdt, uint64_t *gpa)
{
	uint8_t *p = alloc(o, FADT_LEN, 16, gpa);
	if (!p)
		return NULL;
	header(p, "FACP", FADT_LEN, 6);
	put32(p + FADT_FIRMWARE_CTRL, (uint32_t)facs);
	put32(p + FADT_DSDT, (uint32_t)dsdt);
	put16(p + FADT_SCI_INT, c->sci_irq);
	/* SMI_CMD 0: no SMM, the machine is always in ACPI mode */
	put32(p + FADT_PM1A_EVT_BLK, c->pm1a_evt_port);
	put32(p + FADT_PM1A_CNT_BLK, c->pm1a_cnt_port);
	p[FADT_PM1_EVT_LEN] = 4;
	p[FADT_PM1_CNT_LEN] = 2;
	if (c->pm_tmr_port) {
		put32(p + FADT_PM_TMR_BLK, c->pm_tmr_port);
		p[FADT_PM_TMR_LEN] = 4;
		gas_io(p + FADT_X_PM_TMR_BLK, c->pm_tmr_port, 4);
	}
	put16(p + FADT_P_LVL2_LAT, 101);   /* > 100: C2 not supported */
	put16(p + FADT_P_LVL3_LAT, 1001);  /* > 1000: C3 not supported */
	put16(p + FADT_IAPC_BOOT_ARCH, BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_NO_VGA |
	      (c->i8042 ? BOOT_ARCH_8042 : 0));
	/* PWR_BUTTON clear: the fixed-feature power button (PM1 PWRBTN_STS) */
	put32(p + FADT_FLAGS, FADT_F_WBINVD | FADT_F_PROC_C1 | FADT_F_SLP_BUTTON |
	      FADT_F_RESET_REG_SUP | (c->pm_tmr_port ? FADT_F_TMR_VAL_EXT : 0));
	gas_io(p + FADT_RESET_REG, c->reset_port, 1);
	p[FADT_RESET_VALUE] = c->reset_value;
	p[FADT_MINOR_VERSION] = 0;
	put64(p + FADT_X_FIRMWARE_CTRL, facs);
	put64(p + FADT_X_DSDT, dsdt);
	gas_io(p + FADT_X_PM1A_EVT_BLK, c->pm1a_evt_port, 4);
	gas_io(p + FADT_X_PM1A_CNT_BLK, c->pm1a_cnt_port, 2);
	finish(p, FADT_LEN);
	return p;
}

static uint8_t *build_madt(struct out *o, const struct acpi_config *c, uint64_t *gpa)
{
	uint32_t len = HDR_LEN + 8 + c->ncpus * 8 + 12 + 2 * 10 + 6;
	uint8_t *p = alloc(o, len, 16, gpa), *e;
	if (!p)
		return NULL;
	header(p, "APIC", len, 5);
	put32(p + 36, (uint32_t)LAYOUT_LAPIC);
	put32(p + 40, MADT_PCAT_COMPAT);   /* the in-kernel irqchip has 8259s */
	e = p + 44;
	for (unsigned i = 0; i < c->ncpus; i++, e += 8) {
		e[0] = MADT_LAPIC;
		e[1] = 8;
		e[2] = (uint8_t)i;             /* ACPI processor UID */
		e[3] = (uint8_t)i;             /* APIC id */
		put32(e + 4, 1);               /* enabled */
	}
	e[0] = MADT_IOAPIC;
	e[1] = 12;
	e[2] = 0;                              /* IOAPIC id, KVM's reset value */
	put32(e + 4, (uint32_t)LAYOUT_IOAPIC);
	put32(e + 8, 0);                       /* GSI base */
	e += 12;
	/* PIT IRQ 0 is wired to IOAPIC pin 2 */
	e[0] = MADT_ISO;
	e[1] = 10;
	e[2] = 0;                              /* bus: ISA */
	e[3] = 0;
	put32(e + 4, 2);
	put16(e + 8, 0);                       /* conforms to the bus */
	e += 10;
	e[0] = MADT_ISO;
	e[1] = 10;
	e[2] = 0;
	e[3] = c->sci_irq;
	put32(e + 4, c->sci_irq);
	put16(e + 8, MPS_LEVEL | MPS_ACTIVE_HIGH);
	e += 10;
	e[0] = MADT_LAPIC_NMI;
	e[1] = 6;
	e[2] = 0xff;                           /* all processors */
	put16(e + 3, 0);
	e[5] = 1;                              /* LINT1 */
	finish(p, len);
	return p;
}

static uint8_t *build_mcfg(struct out *o, const struct acpi_config *c, uint64_t *gpa)
{
	uint32_t len = HDR_LEN + 8 + MCFG_ENTRY;
	uint8_t *p = alloc(o, len, 16, gpa);
	if (!p)
		return NULL;
	header(p, "MCFG", len, 1);
	put64(p + 44, c->ecam_base);
	put16(p + 52, 0);                      /* segment */
	p[54] = 0;                             /* start bus */
	p[55] = (uint8_t)c->pci_bus_end;
	finish(p, len);
	return p;
}

static uint8_t *build_dsdt(struct out *o, const struct acpi_config *c, uint64_t *gpa)
{
	uint8_t *p = alloc(o, HDR_LEN, 16, gpa);   /* header; the AML body follows */
	struct aml a;

	if (!p)
		return NULL;
	aml_init(&a, o->buf + o->len, o->cap - o->len);
	acpi_dsdt_body(&a, c);
	if (a.overflow)
		return NULL;
	o->len += a.len;
	header(p, "DSDT", (uint32_t)(HDR_LEN + a.len), 2);  /* rev 2: 64-bit integers */
	finish(p, (uint32_t)(HDR_LEN + a.len));
	return p;
}

int acpi_build_buf(uint8_t *buf, size_t cap, uint64_t gpa, const struct acpi_config *c,
		   struct acpi_tables *t, struct terr *err)
{
	struct out o = { .buf = buf, .cap = cap, .gpa = gpa };
	uint8_t *rsdp, *facs, *xsdt;
	int r;

	if ((r = check_config(c, err)) < 0)
		return r;
	memset(t, 0, sizeof(*t));
	/* RSDP first: 16-byte aligned in 0xe0000-0xfffff, where Linux scans */
	if (!(rsdp = alloc(&o, RSDP_LEN, 16, &t->rsdp)) ||
	    !(facs = alloc(&o, FACS_LEN, 64, &t->facs)) ||
	    !build_dsdt(&o, c, &t->dsdt) ||
	    !build_fadt(&o, c, t->facs, t->dsdt, &t->fadt) ||
	    !build_madt(&o, c, &t->madt) ||
	    !build_mcfg(&o, c, &t->mcfg) ||
	    !(xsdt = alloc(&o, HDR_LEN + 3 * 8, 16, &t->xsdt)))
		return terr_set(err, ENOSPC, "acpi: the tables do not fit in %zu bytes", cap);

	memcpy(facs, "FACS", 4);
	put32(facs + 4, FACS_LEN);
	facs[32] = 2;                                  /* version */

	header(xsdt, "XSDT", HDR_LEN + 3 * 8, 1);
	put64(xsdt + HDR_LEN, t->fadt);
	put64(xsdt + HDR_LEN + 8, t->madt);
	put64(xsdt + HDR_LEN + 16, t->mcfg);
	finish(xsdt, HDR_LEN + 3 * 8);

	memcpy(rsdp, "RSD PTR ", 8);
	memcpy(rsdp + 9, "TERN  ", 6);
	rsdp[15] = 2;                                  /* ACPI 2.0+: XSDT */
	put32(rsdp + 16, 0);                           /* no RSDT */
	put32(rsdp + 20, RSDP_LEN);
	put64(rsdp + 24, t->xsdt);
	rsdp[8] = checksum(rsdp, 20);                  /* ACPI 1.0 part */
	rsdp[32] = checksum(rsdp, RSDP_LEN);           /* the whole structure */
	t->end = gpa + o.len;
	return 0;
}

void acpi_config_defaults(struct acpi_config *c, const struct guest_mem *m, unsigned ncpus)
{
	uint64_t top = GIB(4);

	for (unsigned i = 0; i < m->nregions; i++)
		if (m->regions[i].gpa + m->regions[i].size > top)
			top = m->regions[i].gpa + m->regions[i].size;
	*c = (struct acpi_config){
		.ncpus = ncpus,
		.pm1a_evt_port = 0x600,
		.pm1a_cnt_port = 0x604,
		.pm_tmr_port = 0x608,
		.reset_port = 0x60c,
		.reset_value = 1,
		.sci_irq = 9,
		.i8042 = true,
		.ecam_base = LAYOUT_ECAM_START,
		.ecam_bus_end = (unsigned)(LAYOUT_ECAM_SIZE >> 20) - 1,
		.pci_bus_end = 0,
		.rtc = true,
		.pci_io_base = 0x1000,
		.pci_io_size = 0xf000,
		.mmio32_base = LAYOUT_MMIO32_START,
		.mmio32_size = LAYOUT_MMIO32_SIZE,
		.mmio64_base = (top + GIB(1) - 1) & ~(GIB(1) - 1),
		.mmio64_size = LAYOUT_MMIO64_SIZE,
		.com1_port = 0x3f8,
		.com1_irq = 4,
	};
}

int acpi_build(const struct guest_mem *m, const struct acpi_config *c, uint64_t *rsdp,
	       struct terr *err)
{
	struct acpi_tables t;
	uint64_t size = LAYOUT_ACPI_END - LAYOUT_ACPI_START;
	uint8_t *p = guest_mem_ptr(m, LAYOUT_ACPI_START, size);
	int r;

	if (!p)
		return terr_set(err, EFAULT, "acpi: 0x%llx - 0x%llx is not in guest RAM",
				LAYOUT_ACPI_START, LAYOUT_ACPI_END - 1);
	memset(p, 0, size);
	if ((r = acpi_build_buf(p, size, LAYOUT_ACPI_START, c, &t, err)) < 0)
		return r;
	*rsdp = t.rsdp;
	return 0;
}
