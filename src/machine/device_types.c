#include "machine/device_types.h"
#include "hw/acpi_pm.h"
#include "hw/i8042.h"
#include "hw/rtc_cmos.h"
#include "hw/test_exit.h"
#include "hw/uart16550.h"
#include "pci/pci.h"
#include "virtio/virtio_rng.h"
#include "virtio/virtio_net.h"
#include "virtio/virtio_blk.h"
#include "virtio/virtio_console.h"

#include <string.h>

static const struct device_ops *const all_types[] = {
	&uart16550_ops,
	&test_exit_ops,
	&acpi_pm_ops,
	&i8042_ops,
	&rtc_cmos_ops,
	&pci_host_ops,
	&virtio_rng_ops,
	&virtio_net_ops,
	&virtio_blk_ops,
	&virtio_console_ops,
};

const struct device_ops *const *device_types(size_t *count)
{
	*count = sizeof(all_types) / sizeof(all_types[0]);
	return all_types;
}

const struct device_ops *device_type_find(const char *type)
{
	for (size_t i = 0; i < sizeof(all_types) / sizeof(all_types[0]); i++)
		if (!strcmp(all_types[i]->type, type))
			return all_types[i];
	return NULL;
}
