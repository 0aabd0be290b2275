/* The device model: every device, from the UART to a virtio disk, is one
 * struct device with one ops table. save/load are mandatory: a device that
 * cannot be snapshotted cannot be written. */
#ifndef TERN_CORE_DEVICE_H
#define TERN_CORE_DEVICE_H

#include "state/state.h"
#include "util/error.h"

struct vm;
struct device;

struct device_ops {
	const char *type;             /* "uart16550", "test-exit", ... */
	unsigned state_version;       /* written into the device's state section */
	unsigned state_min_version;   /* oldest reader that understands what we write */
	/* Back to power-on state (guest reset). */
	void (*reset)(struct device *d);
	/* Quiesce for a snapshot: finish in-flight work, make no guest-visible
	 * change until resume. Optional. */
	int (*pause)(struct device *d);
	void (*resume)(struct device *d);
	/* Write every piece of guest-visible state as tagged fields. */
	int (*save)(struct device *d, struct state_writer *w);
	/* Apply state written by save (possibly by an older or newer tern:
	 * unknown fields are ignored, missing ones keep their reset value). */
	int (*load)(struct device *d, const struct state_reader *r, struct terr *err);
	void (*destroy)(struct device *d);
	/* Migration between two processes: host resources only one of them
	 * may hold (a writable disk's image lock). release: the VM is paused
	 * and the device quiesced; give them up, keeping what is needed to
	 * take them back. acquire: take them (back), waiting up to timeout_ms
	 * while another process lets go. Optional; err names what is held. */
	int (*release)(struct device *d, struct terr *err);
	int (*acquire)(struct device *d, unsigned timeout_ms, struct terr *err);
};

struct device {
	const struct device_ops *ops;
	char id[32];                  /* stable id: "uart.0", "blk.1" */
	struct vm *vm;
	void *priv;
	struct device *next;          /* in the VM's device list, creation order */
};

#endif
