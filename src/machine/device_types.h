/* Every device type tern has, in one list: the generic save/load test walks
 * it, and the snapshot code maps section kinds to types through it. A new
 * device type is added here. */
#ifndef TERN_MACHINE_DEVICE_TYPES_H
#define TERN_MACHINE_DEVICE_TYPES_H

#include <stddef.h>

#include "core/device.h"

const struct device_ops *const *device_types(size_t *count);
const struct device_ops *device_type_find(const char *type);

#endif
