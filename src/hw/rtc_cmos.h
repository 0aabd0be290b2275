/* MC146818-compatible CMOS RTC at ports 0x70 (index; bit 7, the NMI mask,
 * is ignored) and 0x71 (data), with 128 bytes of CMOS RAM.
 *
 * The clock is the host's wall clock (CLOCK_REALTIME, UTC) plus a guest
 * offset in nanoseconds. The guest changes the offset by writing the time
 * registers (with SET in register B, the clock stops and restarts from the
 * written time when SET is cleared). The offset is what is saved, so a
 * restored guest's clock keeps following real time: it shows the time of
 * the restore, shifted by whatever the guest had set.
 *
 * Registers 0x00-0x09 and the century (RTC_CENTURY_REG, for the FADT's
 * CENTURY field) follow register B: BCD or binary, 12- or 24-hour. UIP
 * (register A bit 7) is set during the last 244 us of every second, as on
 * the real part, so Linux's UIP-avoiding reads see consistent values.
 * Register D reads "valid RAM and time". The day of the week is derived
 * from the date; writes to it are ignored.
 *
 * Interrupts (IRQ 8): alarm, update-ended and periodic flags are not
 * generated; PIE/AIE/UIE can be set but register C always reads 0. */
#ifndef TERN_HW_RTC_CMOS_H
#define TERN_HW_RTC_CMOS_H

#include <stdint.h>

#include "core/device.h"
#include "util/error.h"

#define RTC_INDEX_PORT    0x70
#define RTC_DATA_PORT     0x71
#define RTC_IRQ           8
#define RTC_CENTURY_REG   0x32

struct vm;

/* id: "rtc.0" when NULL. */
int rtc_cmos_create(struct vm *vm, const char *id, struct device **out, struct terr *err);

/* The guest's current time, seconds since the epoch (UTC). */
int64_t rtc_cmos_guest_time(struct device *d);

extern const struct device_ops rtc_cmos_ops;

#endif
