/* The device-independent part of a virtio device (virtio 1.x, 2 and 3):
 * feature negotiation, the device status state machine, the configuration
 * generation, the virtqueues, and save/load of all of it. A device model
 * (virtio-rng, -blk, ...) fills a struct virtio_dev_ops; a transport
 * (virtio-pci, or a unit test) drives the device through the functions
 * below and receives interrupts through struct virtio_transport_ops.
 *
 * Locking: dev->lock serializes everything. Transports take it around
 * register accesses and queue notifications; device models take it when
 * they complete work asynchronously. Every function below except init and
 * destroy expects it held, and every ops callback is called with it held. */
#ifndef TERN_VIRTIO_VIRTIO_DEV_H
#define TERN_VIRTIO_VIRTIO_DEV_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/memory.h"
#include "state/state.h"
#include "util/error.h"
#include "virtio/virtqueue.h"

/* Device status bits (2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE  0x01
#define VIRTIO_STATUS_DRIVER       0x02
#define VIRTIO_STATUS_DRIVER_OK    0x04
#define VIRTIO_STATUS_FEATURES_OK  0x08
#define VIRTIO_STATUS_NEEDS_RESET  0x40
#define VIRTIO_STATUS_FAILED       0x80

/* Transport-independent feature bits (6). */
#define VIRTIO_F_VERSION_1         32

/* Device types (5). */
#define VIRTIO_ID_NET      1
#define VIRTIO_ID_BLOCK    2
#define VIRTIO_ID_CONSOLE  3
#define VIRTIO_ID_RNG      4
#define VIRTIO_ID_BALLOON  5

#define VIRTIO_MAX_QUEUES  64

struct virtio_dev;

/* What a transport does for the core: raise a used-buffer notification for
 * queue q, or a configuration-change notification. */
struct virtio_transport_ops {
	void (*notify_queue)(struct virtio_dev *dev, unsigned q);
	void (*notify_config)(struct virtio_dev *dev);
};

/* What a device model provides. Only queue_notify is mandatory. */
struct virtio_dev_ops {
	/* Read/write the device-specific configuration space; the core has
	 * already checked off + len <= config_size. No set_config: writes are
	 * ignored. */
	void (*get_config)(struct virtio_dev *dev, uint32_t off, void *buf, uint32_t len);
	void (*set_config)(struct virtio_dev *dev, uint32_t off, const void *buf, uint32_t len);
	/* The driver made buffers available on queue q (a ready queue). */
	void (*queue_notify)(struct virtio_dev *dev, unsigned q);
	/* Device reset (status written 0): drop in-flight work and device state. */
	void (*reset)(struct virtio_dev *dev);
	/* DRIVER_OK was just set: the device may start using the queues. */
	void (*driver_ok)(struct virtio_dev *dev);
	/* Device-specific state, stored as one nested blob "dev". */
	int (*save)(struct virtio_dev *dev, struct state_writer *w);
	int (*load)(struct virtio_dev *dev, const struct state_reader *r, struct terr *err);
};

struct virtio_dev_params {
	const struct virtio_dev_ops *ops;
	void *priv;                   /* the device model's own struct */
	const struct guest_mem *mem;
	const char *id;               /* "rng.0" */
	uint16_t device_id;           /* VIRTIO_ID_* */
	uint64_t features;            /* device-specific bits offered; the core adds
					 VERSION_1, INDIRECT_DESC and EVENT_IDX */
	unsigned nqueues;             /* 1..VIRTIO_MAX_QUEUES */
	uint16_t queue_size;          /* maximum size of every queue (power of two) */
	uint32_t config_size;         /* bytes of device-specific configuration */
};

struct virtio_dev {
	const struct virtio_dev_ops *ops;
	void *priv;
	const struct virtio_transport_ops *transport;
	void *transport_priv;
	const struct guest_mem *mem;
	char id[32];
	uint16_t device_id;
	uint32_t config_size;
	pthread_mutex_t lock;

	/* guest-visible, saved */
	uint64_t host_features;       /* offered */
	uint64_t guest_features;      /* accepted by the driver */
	uint8_t status;
	uint8_t config_generation;
	unsigned nqueues;
	struct virtqueue *vqs;

	bool logged;                  /* a driver protocol error was logged */
};

int virtio_dev_init(struct virtio_dev *dev, const struct virtio_dev_params *p, struct terr *err);
void virtio_dev_destroy(struct virtio_dev *dev);
void virtio_dev_set_transport(struct virtio_dev *dev, const struct virtio_transport_ops *t,
			      void *transport_priv);

/* Device reset: status 0, no features, every queue reset, ops->reset. */
void virtio_dev_reset(struct virtio_dev *dev);

/* The driver writes the status byte: 0 resets; otherwise bits are only ever
 * added (clearing one without a reset is ignored), FEATURES_OK is kept only
 * when the accepted features are acceptable (VERSION_1, nothing that was not
 * offered), DRIVER_OK only after FEATURES_OK. NEEDS_RESET is the device's. */
void virtio_dev_set_status(struct virtio_dev *dev, uint8_t status);

/* 32-bit windows on the 64-bit feature words (sel 0: bits 0-31, 1: 32-63). */
uint32_t virtio_dev_get_device_features(const struct virtio_dev *dev, uint32_t sel);
uint32_t virtio_dev_get_driver_features(const struct virtio_dev *dev, uint32_t sel);
/* Ignored once FEATURES_OK is set. */
void virtio_dev_set_driver_features(struct virtio_dev *dev, uint32_t sel, uint32_t val);

static inline bool virtio_dev_has_feature(const struct virtio_dev *dev, unsigned bit)
{
	return dev->guest_features & (1ull << bit);
}

/* Device-specific configuration: reads outside config_size return zeros,
 * writes outside it are ignored. */
void virtio_dev_read_config(struct virtio_dev *dev, uint32_t off, void *buf, uint32_t len);
void virtio_dev_write_config(struct virtio_dev *dev, uint32_t off, const void *buf, uint32_t len);

/* Queue q or NULL when q >= nqueues. The transport writes size, addresses
 * and msix_vector directly while the queue is not enabled. */
struct virtqueue *virtio_dev_queue(struct virtio_dev *dev, unsigned q);
/* The driver enabled queue q: validate it with the negotiated features. A
 * bad layout breaks the queue and sets NEEDS_RESET. */
int virtio_dev_queue_enable(struct virtio_dev *dev, unsigned q);
/* The driver notified queue q (from the transport's notify register or
 * ioeventfd): hand it to the device model if the queue is ready. */
void virtio_dev_queue_kick(struct virtio_dev *dev, unsigned q);
/* Device model, after vq_push on queue q: interrupt the driver if it asked. */
void virtio_dev_notify(struct virtio_dev *dev, unsigned q);

/* The device is in an error state (e.g. a queue broke): set NEEDS_RESET and,
 * if the driver is running, raise a configuration-change notification. */
void virtio_dev_needs_reset(struct virtio_dev *dev);
/* The device changed its configuration: bump the generation and notify. */
void virtio_dev_config_changed(struct virtio_dev *dev);

/* Core state, every queue ("vq.N" blobs) and the model's "dev" blob. */
int virtio_dev_save(struct virtio_dev *dev, struct state_writer *w);
/* Reset, then apply; names dev->id in errors. */
int virtio_dev_load(struct virtio_dev *dev, const struct state_reader *r, struct terr *err);

#endif
