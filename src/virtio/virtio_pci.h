/* The modern virtio-pci transport (virtio 1.x, 4.1) on the PCI layer: vendor
 * 0x1af4, device 0x1040 + type, revision 1, no legacy interface. One 64-bit
 * memory BAR (BAR 4, 32 KiB) holds everything:
 *
 *   0x0000  common configuration       (VIRTIO_PCI_CAP_COMMON_CFG)
 *   0x1000  ISR status, read to clear  (VIRTIO_PCI_CAP_ISR_CFG)
 *   0x2000  device configuration       (VIRTIO_PCI_CAP_DEVICE_CFG)
 *   0x3000  notifications, queue q at 0x3000 + 4 q (VIRTIO_PCI_CAP_NOTIFY_CFG,
 *           notify_off_multiplier 4)
 *   0x4000  MSI-X table (one vector per queue plus one for configuration)
 *   0x6000  MSI-X PBA
 *
 * plus the VIRTIO_PCI_CAP_PCI_CFG window in configuration space. Queue
 * notifications come through one ioeventfd per queue on the notify address
 * (re-registered whenever the guest moves or disables the BAR), handled on
 * the VM's event loop; a notification of another width falls back to the
 * MMIO exit. Interrupts go out as MSI-X through the PCI layer's irqfds, or
 * as INTx with the ISR when the driver has not enabled MSI-X.
 *
 * Locking: the virtio_dev's lock covers the transport registers too. */
#ifndef TERN_VIRTIO_VIRTIO_PCI_H
#define TERN_VIRTIO_VIRTIO_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "pci/pci.h"
#include "virtio/virtio_dev.h"

#define VIRTIO_PCI_VENDOR        0x1af4
#define VIRTIO_PCI_DEVICE_BASE   0x1040
#define VIRTIO_PCI_SUBSYS        0x1100

#define VIRTIO_PCI_BAR           4
#define VIRTIO_PCI_BAR_SIZE      0x8000
#define VIRTIO_PCI_COMMON_OFF    0x0000
#define VIRTIO_PCI_ISR_OFF       0x1000
#define VIRTIO_PCI_DEVICE_OFF    0x2000
#define VIRTIO_PCI_NOTIFY_OFF    0x3000
#define VIRTIO_PCI_NOTIFY_MULT   4
#define VIRTIO_PCI_MSIX_OFF      0x4000
#define VIRTIO_PCI_PBA_OFF       0x6000

/* Capability types (4.1.4). */
#define VIRTIO_PCI_CAP_COMMON_CFG  1
#define VIRTIO_PCI_CAP_NOTIFY_CFG  2
#define VIRTIO_PCI_CAP_ISR_CFG     3
#define VIRTIO_PCI_CAP_DEVICE_CFG  4
#define VIRTIO_PCI_CAP_PCI_CFG     5

/* Common configuration layout (4.1.4.3). */
#define VIRTIO_PCI_COMMON_DFSELECT   0x00
#define VIRTIO_PCI_COMMON_DF         0x04
#define VIRTIO_PCI_COMMON_GFSELECT   0x08
#define VIRTIO_PCI_COMMON_GF         0x0c
#define VIRTIO_PCI_COMMON_MSIX       0x10
#define VIRTIO_PCI_COMMON_NUMQ       0x12
#define VIRTIO_PCI_COMMON_STATUS     0x14
#define VIRTIO_PCI_COMMON_CFGGENERATION 0x15
#define VIRTIO_PCI_COMMON_Q_SELECT   0x16
#define VIRTIO_PCI_COMMON_Q_SIZE     0x18
#define VIRTIO_PCI_COMMON_Q_MSIX     0x1a
#define VIRTIO_PCI_COMMON_Q_ENABLE   0x1c
#define VIRTIO_PCI_COMMON_Q_NOFF     0x1e
#define VIRTIO_PCI_COMMON_Q_DESCLO   0x20
#define VIRTIO_PCI_COMMON_Q_DESCHI   0x24
#define VIRTIO_PCI_COMMON_Q_AVAILLO  0x28
#define VIRTIO_PCI_COMMON_Q_AVAILHI  0x2c
#define VIRTIO_PCI_COMMON_Q_USEDLO   0x30
#define VIRTIO_PCI_COMMON_Q_USEDHI   0x34
#define VIRTIO_PCI_COMMON_SIZE       0x38

#define VIRTIO_PCI_ISR_QUEUE   0x1
#define VIRTIO_PCI_ISR_CONFIG  0x2

struct virtio_pci;

/* One queue's ioeventfd and its event-loop context. */
struct virtio_pci_kick {
	struct virtio_pci *vp;
	unsigned q;
	int fd;
};

struct virtio_pci {
	struct pci_device pci;
	struct virtio_dev *vdev;
	struct vm *vm;
	unsigned nvec;                /* MSI-X vectors: nqueues + 1 */
	int cap_pci_cfg;              /* offset of the PCI_CFG capability */

	/* transport registers, saved */
	uint32_t dfselect, gfselect;
	uint16_t queue_select;
	uint16_t msix_config;
	uint8_t isr;

	/* host side */
	bool paused;
	struct virtio_pci_kick *kicks;  /* one per queue */
	bool ioev_on;                 /* ioeventfds registered at ioev_base */
	uint64_t ioev_base;           /* notify region's guest address */
	bool ioev_failed_logged;
};

struct virtio_pci_params {
	uint32_t class_code;          /* PCI class (base << 16 | sub << 8 | prog-if) */
	int slot;                     /* -1: first free slot */
};

/* Put vdev on `bus` behind a modern virtio-pci function and connect it as
 * its transport. vdev must be initialized and live as long as vp. */
int virtio_pci_init(struct virtio_pci *vp, struct vm *vm, struct pci_bus *bus,
		    struct virtio_dev *vdev, const struct virtio_pci_params *p, struct terr *err);
void virtio_pci_destroy(struct virtio_pci *vp);

/* System reset: PCI function and virtio device back to power-on. */
void virtio_pci_reset(struct virtio_pci *vp);
/* Pause: kicks arriving meanwhile are held; resume handles every queue that
 * has buffers (so a kick lost across a snapshot/restore is not lost). */
void virtio_pci_pause(struct virtio_pci *vp);
void virtio_pci_resume(struct virtio_pci *vp);

/* PCI state ("pci"), transport registers and the virtio device. */
int virtio_pci_save(struct virtio_pci *vp, struct state_writer *w);
int virtio_pci_load(struct virtio_pci *vp, const struct state_reader *r, struct terr *err);

/* BAR 4 register access (what a vCPU's MMIO exit reaches; tests use it). */
void virtio_pci_bar_read(void *opaque, unsigned bar, uint64_t off, void *data, unsigned size);
void virtio_pci_bar_write(void *opaque, unsigned bar, uint64_t off, const void *data,
			  unsigned size);

#endif
