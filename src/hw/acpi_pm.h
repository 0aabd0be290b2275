/* ACPI fixed-hardware power management (the PM1a blocks of the FADT):
 *
 *   ACPI_PM1A_EVT_PORT  4 bytes  PM1_STS (2, write 1 to clear) + PM1_EN (2)
 *   ACPI_PM1A_CNT_PORT  2 bytes  PM1_CNT: SCI_EN always set (there is no SMI
 *                                 and no SMI_CMD, so the OS finds the machine
 *                                 in ACPI mode); SLP_EN with SLP_TYP ==
 *                                 ACPI_S5_SLP_TYP powers the VM off
 *   ACPI_PM_TMR_PORT    4 bytes  PM timer, 3.579545 MHz, 32 bits wide
 *                                 (FADT TMR_VAL_EXT set), read-only
 *   ACPI_RESET_PORT     1 byte   writing ACPI_RESET_VALUE resets the VM
 *                                 (FADT RESET_REG, I/O space)
 *
 * The SCI is ISA IRQ ACPI_SCI_IRQ, asserted while (PM1_STS & PM1_EN) has a
 * bit set; the power button is the fixed-feature one (PWRBTN_STS/EN).
 * The values here are the ones acpi_config_defaults() (arch/x86/acpi.c)
 * writes into the FADT; tests/unit/hw checks that the two agree. */
#ifndef TERN_HW_ACPI_PM_H
#define TERN_HW_ACPI_PM_H

#include <stdint.h>

#include "arch/x86/acpi.h"   /* ACPI_S5_SLP_TYP and the PM1 bit names */
#include "core/device.h"
#include "util/error.h"

#define ACPI_PM1A_EVT_PORT   0x600
#define ACPI_PM1A_CNT_PORT   0x604
#define ACPI_PM_TMR_PORT     0x608
#define ACPI_RESET_PORT      0x60c
#define ACPI_RESET_VALUE     1
#define ACPI_SCI_IRQ         9
#define ACPI_PM_TMR_HZ       3579545ULL

/* PM1_STS / PM1_EN bits */
#define ACPI_PM1_TMR         (1u << 0)
#define ACPI_PM1_GBL         (1u << 5)
#define ACPI_PM1_PWRBTN      (1u << 8)
#define ACPI_PM1_SLPBTN      (1u << 9)
#define ACPI_PM1_RTC         (1u << 10)
#define ACPI_PM1_WAK         (1u << 15)   /* status only */

struct vm;

struct acpi_pm_params {
	const char *id;          /* "acpi-pm.0" */
	uint16_t evt_port;       /* 0: ACPI_PM1A_EVT_PORT, and so on */
	uint16_t cnt_port;
	uint16_t tmr_port;
	uint16_t reset_port;
	uint8_t reset_value;     /* used when reset_port is given */
	uint8_t sci_irq;         /* 0: ACPI_SCI_IRQ */
};

/* p may be NULL: id "acpi-pm.0" and the default ports above. */
int acpi_pm_create(struct vm *vm, const struct acpi_pm_params *p, struct device **out,
		   struct terr *err);
/* Press the power button: set PWRBTN_STS and raise the SCI if the guest
 * enabled it (an ACPI OS then shuts down in order). Any thread. */
void acpi_pm_power_button(struct device *d);
/* The PM timer's current value (tests). */
uint32_t acpi_pm_timer(struct device *d);

extern const struct device_ops acpi_pm_ops;

#endif
