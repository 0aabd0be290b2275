/* virtio-rng (virtio 1.x, 5.4): one request queue; every device-writable
 * buffer the driver posts comes back filled from getrandom(2). No
 * configuration space, no device features. On PCI it is a modern
 * virtio-pci function (1af4:1044, class "other"). */
#ifndef TERN_VIRTIO_VIRTIO_RNG_H
#define TERN_VIRTIO_VIRTIO_RNG_H

#include "core/device.h"
#include "util/error.h"

struct vm;
struct pci_bus;

#define VIRTIO_RNG_QUEUE_SIZE 64
/* At most this much entropy per request; the driver asks again for more. */
#define VIRTIO_RNG_MAX_REQUEST (64 * 1024)

/* Create virtio-rng `id` ("rng.0") on `bus` (slot < 0: first free one) and
 * add it to the VM's devices. */
int virtio_rng_create(struct vm *vm, struct pci_bus *bus, const char *id, int slot,
		      struct device **out, struct terr *err);

extern const struct device_ops virtio_rng_ops;

#endif
