/* Intel 8042 keyboard controller at ports 0x60 (data) and 0x64 (status /
 * command), enough for Linux's i8042 and atkbd drivers: controller self
 * test, configuration byte, interface tests, a keyboard that answers its
 * commands (reset, identify, LEDs, scan-code set, typematic, enable) but
 * never sends a key, no auxiliary (mouse) port, IRQ 1 while keyboard data
 * waits, and the reset line: command 0xfe (pulse output line 0) or an
 * output-port write with bit 0 clear requests VM_EXIT_RESET.
 *
 * Port 0x61 (system control port B, PIT channel 2 gate and speaker) is not
 * here: KVM's in-kernel PIT created with KVM_PIT_SPEAKER_DUMMY registers a
 * speaker device at 0x61 that reflects the channel 2 output, which Linux's
 * PIT calibration reads. */
#ifndef TERN_HW_I8042_H
#define TERN_HW_I8042_H

#include "core/device.h"
#include "util/error.h"

#define I8042_DATA_PORT    0x60
#define I8042_CMD_PORT     0x64
#define I8042_KBD_IRQ      1

struct vm;

/* id: "i8042.0" when NULL. */
int i8042_create(struct vm *vm, const char *id, struct device **out, struct terr *err);

extern const struct device_ops i8042_ops;

#endif
