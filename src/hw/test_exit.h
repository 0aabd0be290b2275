/* The test-exit port (0x501, off unless test_exit.enable is set): an 8-bit
 * write of N ends the VM with exit status N. Test guests use it to report. */
#ifndef TERN_HW_TEST_EXIT_H
#define TERN_HW_TEST_EXIT_H

#include <stdint.h>

#include "core/device.h"
#include "util/error.h"

#define TEST_EXIT_PORT 0x501

struct vm;

int test_exit_create(struct vm *vm, const char *id, uint16_t port, struct device **out,
		     struct terr *err);

extern const struct device_ops test_exit_ops;

#endif
