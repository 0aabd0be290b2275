/* virtio-blk (virtio 1.x, 5.2) on a block back end (src/block): raw images
 * through io_uring, qcow2 and the other vdisk formats through vdisk on worker
 * threads. On PCI it is a modern virtio-pci function (1af4:1042, class mass
 * storage, SCSI 0x010000, as QEMU's virtio-blk-pci).
 *
 * Features offered: SEG_MAX, BLK_SIZE (512), FLUSH, MQ (one request queue
 * per vCPU), and on writable disks DISCARD and WRITE_ZEROES (one segment per
 * request, may unmap); read-only disks offer RO. GET_ID returns the serial.
 *
 * Requests run asynchronously: a chain is parsed and checked on the thread
 * that took the notification (the event loop for ioeventfd kicks), its data
 * iovecs point straight into guest RAM, and the back end's completion
 * eventfd brings it back on the event loop, where the status byte is
 * written last, the chain goes to the used ring and the driver is
 * interrupted (once per batch and queue, as the event index allows).
 *
 * Request checks (the status byte says IOERR, tern carries on): a header
 * shorter than 16 bytes, data in the wrong direction, a data length that is
 * not a multiple of 512, a sector range beyond the capacity, writes to a
 * read-only disk, more than one discard/write-zeroes segment (UNSUPP),
 * reserved flags (UNSUPP), unknown request types (UNSUPP). A chain without
 * any device-writable byte has no status byte to report in: it is returned
 * with a used length of 0 and logged once. Ring-level violations break the
 * queue through the virtio core (NEEDS_RESET).
 *
 * Pause, save and reset wait for the requests in flight: pause and save
 * complete them (status, used ring, interrupt) so nothing is half-written
 * and the saved queues hold no request in progress; reset drops their
 * results once the back end is done with guest memory. */
#ifndef TERN_VIRTIO_VIRTIO_BLK_H
#define TERN_VIRTIO_VIRTIO_BLK_H

#include <stdbool.h>

#include "block/blk.h"
#include "core/device.h"
#include "util/error.h"

struct vm;
struct pci_bus;

#define VIRTIO_BLK_QUEUE_SIZE 256
#define VIRTIO_BLK_SECTOR     512
#define VIRTIO_BLK_ID_BYTES   20

/* Feature bits (5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX      1
#define VIRTIO_BLK_F_SEG_MAX       2
#define VIRTIO_BLK_F_GEOMETRY      4
#define VIRTIO_BLK_F_RO            5
#define VIRTIO_BLK_F_BLK_SIZE      6
#define VIRTIO_BLK_F_FLUSH         9
#define VIRTIO_BLK_F_TOPOLOGY      10
#define VIRTIO_BLK_F_CONFIG_WCE    11
#define VIRTIO_BLK_F_MQ            12
#define VIRTIO_BLK_F_DISCARD       13
#define VIRTIO_BLK_F_WRITE_ZEROES  14

/* Request types and status (5.2.6). */
#define VIRTIO_BLK_T_IN            0
#define VIRTIO_BLK_T_OUT           1
#define VIRTIO_BLK_T_FLUSH         4
#define VIRTIO_BLK_T_GET_ID        8
#define VIRTIO_BLK_T_DISCARD       11
#define VIRTIO_BLK_T_WRITE_ZEROES  13
#define VIRTIO_BLK_S_OK            0
#define VIRTIO_BLK_S_IOERR         1
#define VIRTIO_BLK_S_UNSUPP        2

#define VIRTIO_BLK_WZ_UNMAP        1u

/* Configuration space layout (5.2.4), the fields tern fills. */
#define VIRTIO_BLK_CFG_CAPACITY          0
#define VIRTIO_BLK_CFG_SEG_MAX           12
#define VIRTIO_BLK_CFG_BLK_SIZE          20
#define VIRTIO_BLK_CFG_NUM_QUEUES        34
#define VIRTIO_BLK_CFG_MAX_DISCARD_SECT  36
#define VIRTIO_BLK_CFG_MAX_DISCARD_SEG   40
#define VIRTIO_BLK_CFG_DISCARD_ALIGN     44
#define VIRTIO_BLK_CFG_MAX_WZ_SECT       48
#define VIRTIO_BLK_CFG_MAX_WZ_SEG        52
#define VIRTIO_BLK_CFG_WZ_MAY_UNMAP      56
#define VIRTIO_BLK_CFG_SIZE              60

/* Largest discard / write-zeroes request: 2 GiB. */
#define VIRTIO_BLK_MAX_DISCARD_SECTORS   (1u << 22)

struct virtio_blk_params {
	const char *id;          /* "blk.0" */
	const char *path;
	const char *format;      /* "raw", "qcow2", ... */
	bool readonly;
	bool inactive;           /* a migration's destination: see blk_opts.inactive */
	const char *serial;      /* at most 20 bytes; NULL: "tern-" + id */
	unsigned queues;         /* request queues, 1..VIRTIO_MAX_QUEUES (one per vCPU) */
	enum blk_engine engine;  /* AUTO: io_uring for raw, vdisk threads otherwise */
	int slot;                /* PCI slot, -1: first free */
};

/* Open the image, create virtio-blk `id` on `bus` and add it to the VM. */
int virtio_blk_create(struct vm *vm, struct pci_bus *bus, const struct virtio_blk_params *p,
		      struct device **out, struct terr *err);

struct config;
/* virtio-blk "blk.N" from disk.N.* (path, format, readonly, serial, engine),
 * one request queue per vCPU of the VM; `inactive`: a writable image is
 * opened without its lock, taken by the device's acquire op (migration). */
int virtio_blk_create_from_config(struct vm *vm, struct pci_bus *bus, struct config *cfg,
				  unsigned index, bool inactive, struct device **out,
				  struct terr *err);

/* Requests taken from the queues and not yet completed (tests). */
unsigned virtio_blk_inflight(struct device *d);
/* Tests: keep completed requests in flight (see blk_hold) so that pause,
 * save and reset meet them however fast the host is. */
void virtio_blk_hold_completions(struct device *d, bool hold);
/* The back end's engine, "io_uring" or "threads" (tests, logs). */
const char *virtio_blk_engine(struct device *d);

extern const struct device_ops virtio_blk_ops;

#endif
