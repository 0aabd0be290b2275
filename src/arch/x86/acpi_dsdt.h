/* The DSDT's AML body, kept apart from the fixed-layout tables of acpi.c. */
#ifndef TERN_ARCH_X86_ACPI_DSDT_H
#define TERN_ARCH_X86_ACPI_DSDT_H

#include "arch/x86/acpi.h"
#include "arch/x86/aml.h"

/* Emit the DSDT's definition blocks (everything after the table header):
 * \_SB.PCI0 (host bridge with _CRS and _PRT), \_SB.MRES (ECAM reserved as
 * a motherboard resource), \_SB.COM1, the RTC and PS/2 ports (PNP0B00,
 * PNP0303, PNP0F13), \_SB.PWRB and \_S5. */
void acpi_dsdt_body(struct aml *a, const struct acpi_config *c);

#endif
