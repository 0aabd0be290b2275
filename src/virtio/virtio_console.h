/* virtio-console (virtio 1.x, 5.3): one port, no MULTIPORT, so Linux makes
 * it a console (hvc0). Queue 0 receives (host -> guest), queue 1 transmits
 * (guest -> host). On PCI it is a modern virtio-pci function (1af4:1043,
 * class communication / other 0x078000).
 *
 * Back ends (`vconsole.path`):
 *   FILE        output appended to or truncating FILE; no input
 *   stdio       output to stdout, input from stdin (when `input` is set)
 *   unix:PATH   tern listens on a UNIX socket at PATH and serves one client
 *               at a time: what it sends is guest input, guest output goes
 *               to it. With no client, output is dropped; a client that
 *               does not keep up loses output (a slow reader never stalls
 *               the VM). A stale socket file at PATH is replaced; any other
 *               file there is an error.
 *
 * Output is written as soon as the guest posts it (Linux's hvc driver spins
 * until the buffer comes back). Input is read only while the guest has
 * receive buffers: what does not fit waits in a small buffer (saved with the
 * device) and reading stops until the driver posts more. */
#ifndef TERN_VIRTIO_VIRTIO_CONSOLE_H
#define TERN_VIRTIO_VIRTIO_CONSOLE_H

#include <stdbool.h>

#include "core/device.h"
#include "util/error.h"

struct vm;
struct pci_bus;

#define VIRTIO_CONSOLE_QUEUE_SIZE 128
#define VIRTIO_CONSOLE_RX_BUF     4096
#define VIRTIO_CONSOLE_CFG_SIZE   12    /* cols, rows, max_nr_ports, emerg_wr */

struct virtio_console_params {
	const char *id;       /* "vconsole.0" */
	const char *path;     /* FILE, "stdio" or "unix:PATH" */
	bool append;          /* FILE: append (a restored guest carries on) */
	bool input;           /* stdio: read stdin */
	int slot;             /* PCI slot, -1: first free */
};

int virtio_console_create(struct vm *vm, struct pci_bus *bus,
			  const struct virtio_console_params *p, struct device **out,
			  struct terr *err);

struct config;
/* vconsole.0 from vconsole.path (no device when it is unset: *out = NULL).
 * `restoring`: a file is appended to; `input`: stdio reads stdin. */
int virtio_console_create_from_config(struct vm *vm, struct pci_bus *bus, struct config *cfg,
				      bool restoring, bool input, struct device **out,
				      struct terr *err);

/* Host input queued for the guest (tests): copies what fits in the pending
 * buffer and hands it to the guest when it has receive buffers. Returns the
 * number of bytes taken. */
size_t virtio_console_receive(struct device *d, const void *buf, size_t len);

extern const struct device_ops virtio_console_ops;

#endif
