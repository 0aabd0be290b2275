/* PCI: one bus (bus 0, 32 slots, function 0) behind a host bridge, with
 * configuration space reached through CF8/CFC port I/O and through ECAM,
 * BARs placed in the windows the DSDT advertises, INTx on the _PRT's GSIs
 * and MSI-X delivered through KVM GSI routing and irqfd.
 *
 * How a device model uses it (virtio-pci, for example):
 *
 *     struct my_dev { struct device dev; struct pci_device pci; ... };
 *
 *     pci_device_init(&m->pci, m->dev.id, &(struct pci_id){ ... }, &my_pci_ops, m);
 *     pci_device_add_bar(&m->pci, 0, PCI_BAR_MEM64, true, 0x4000, my_read, my_write, m, err);
 *     int cap = pci_add_capability(&m->pci, PCI_CAP_ID_VNDR, 16, err);
 *     pci_config_set8(&m->pci, cap + 2, ...);            (fill the capability)
 *     pci_msix_init(&m->pci, nvec, 0, 0x2000, 0, 0x3000, err);
 *     pci_device_attach(bus, &m->pci, -1, err);          (places BARs, goes live)
 *     ...
 *     device ops: reset -> pci_device_reset, save -> pci_device_save (plus the
 *     model's own fields), load -> pci_device_load, destroy -> pci_device_detach
 *
 * Threads and locks. Configuration accesses and BAR accesses arrive on vCPU
 * threads; pci_msix_notify and pci_set_irq may be called from any thread.
 * Each pci_device has its own lock, taken inside the PCI layer only; the
 * model's callbacks (BAR read/write, config_read/config_write hooks) run
 * WITHOUT it, so a model may call back into the PCI layer (pci_msix_notify,
 * pci_set_irq, pci_config_get) from its callbacks and while holding its own
 * lock. Never call the PCI layer's config or attach functions while the
 * bus is being destroyed.
 *
 * Address windows (also described by the DSDT's _CRS; the values come from
 * acpi_config_defaults() in arch/x86/acpi.c, which follows layout.h):
 *   I/O     0x1000 - 0xffff
 *   MMIO32  LAYOUT_MMIO32_START (0xc0000000), 512 MiB
 *   MMIO64  above RAM, 1 GiB aligned, LAYOUT_MMIO64_SIZE (64 GiB)
 *   ECAM    LAYOUT_ECAM_START (0xe0000000), 1 MiB per bus
 * 64-bit memory BARs go to the 64-bit window (the 32-bit one when there is
 * no 64-bit window), 32-bit ones to the 32-bit window, I/O BARs to the I/O
 * window; every memory BAR is at least 4 KiB aligned, so no two BARs share
 * a page.
 *
 * INTx: device in slot s raising pin p (0 = INTA .. 3 = INTD) asserts
 * GSI pci_intx_gsi(s, p) = 16 + ((s + p) mod 8), IOAPIC pins 16-23. The
 * _PRT lists these GSIs directly (no link devices), so Linux programs the
 * pins level-triggered, active-low, as ACPI specifies for _PRT GSIs; KVM's
 * IOAPIC ignores the polarity bit for lines driven through KVM_IRQ_LINE, so
 * the device asserts with level 1 and deasserts with 0. */
#ifndef TERN_PCI_PCI_H
#define TERN_PCI_PCI_H

#include <linux/pci_regs.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "arch/x86/acpi.h"
#include "core/device.h"
#include "pci/gsi.h"
#include "state/state.h"
#include "util/error.h"

struct vm;
struct pci_bus;
struct pci_device;
struct pci_msix;

#define PCI_SLOTS          32
#define PCI_CFG_SPACE      4096    /* ECAM reaches all of it; CF8 the first 256 bytes */
#define PCI_CAP_START      0x40    /* capabilities live in 0x40-0xff */

/* The host bridge at 00:00.0: Red Hat's id for a generic PCIe host bridge,
 * which no guest driver binds or applies quirks to. */
#define PCI_HOST_VENDOR    0x1b36
#define PCI_HOST_DEVICE    0x0008
#define PCI_HOST_CLASS     0x060000   /* bridge, host */

#define PCI_IO_WINDOW_BASE 0x1000
#define PCI_IO_WINDOW_SIZE 0xf000

/* The _PRT's swizzle: the one definition is acpi_pci_intx_gsi. */
static inline unsigned pci_intx_gsi(unsigned slot, unsigned pin)
{
	return acpi_pci_intx_gsi(slot, pin);
}

/* ---- Device models ---- */

struct pci_id {
	uint16_t vendor, device;
	uint16_t subsys_vendor, subsys;
	uint32_t class_code;    /* base << 16 | sub << 8 | prog-if */
	uint8_t revision;
	uint8_t intx_pin;       /* 0: no INTx, 1: INTA ... 4: INTD */
};

enum pci_bar_type { PCI_BAR_UNUSED, PCI_BAR_IO, PCI_BAR_MEM32, PCI_BAR_MEM64 };

/* BAR accesses: off is relative to the BAR's start; size 1, 2, 4 or 8.
 * Accesses to an MSI-X table or PBA inside the BAR never reach these. */
typedef void (*pci_bar_read_fn)(void *opaque, unsigned bar, uint64_t off, void *data,
				unsigned size);
typedef void (*pci_bar_write_fn)(void *opaque, unsigned bar, uint64_t off, const void *data,
				 unsigned size);

struct pci_bar {
	enum pci_bar_type type;
	bool prefetch;
	uint64_t size;               /* power of two; 0 for an unused BAR */
	pci_bar_read_fn read;
	pci_bar_write_fn write;
	void *opaque;
	/* where the BAR is decoded now (PCI layer, under the device lock) */
	bool mapped;
	uint64_t mapped_at;
	unsigned events;             /* bar_mapped calls owed (PCI layer) */
	struct { bool mapped; uint64_t addr; } event[2];
	struct pci_device *pd;
	unsigned index;
};

struct pci_device_ops {
	/* After a guest configuration write was applied (BARs moved, MSI-X
	 * state updated). off/size/val as the guest wrote them. Optional. */
	void (*config_write)(struct pci_device *pd, unsigned off, unsigned size, uint32_t val);
	/* After a guest configuration read: may replace *val (e.g. virtio's
	 * VIRTIO_PCI_CAP_PCI_CFG window). Optional. */
	void (*config_read)(struct pci_device *pd, unsigned off, unsigned size, uint32_t *val);
	/* A BAR started (mapped true) or stopped being decoded at addr: the
	 * guest enabled/disabled decoding or moved it, or reset/load did. For
	 * what the bus does not see, e.g. KVM ioeventfds on notify addresses,
	 * which the model must move with the BAR. Optional. */
	void (*bar_mapped)(struct pci_device *pd, unsigned bar, bool mapped, uint64_t addr);
};

struct pci_device {
	char name[32];               /* owner of its bus ranges and messages: the device id */
	const struct pci_device_ops *ops;
	void *opaque;                /* the model, for ops */
	struct pci_bus *bus;         /* set by pci_device_attach */
	int slot;
	pthread_mutex_t lock;
	uint8_t cfg[PCI_CFG_SPACE];
	uint8_t wmask[PCI_CFG_SPACE];     /* bits the guest may write */
	uint8_t w1cmask[PCI_CFG_SPACE];   /* bits the guest clears by writing 1 */
	uint8_t reset_cfg[PCI_CFG_SPACE]; /* power-on contents, taken at attach */
	struct pci_bar bar[PCI_STD_NUM_BARS];
	unsigned cap_next;           /* where the next capability goes */
	uint8_t cap_last;            /* offset of the last capability, 0: none */
	int intx_level;              /* what the model asserts */
	int intx_out;                /* what the GSI carries (INTx disable applied) */
	struct pci_msix *msix;
};

/* Fill the standard header (type 0): ids, class, pin, and the write masks
 * of COMMAND, STATUS (RW1C error bits), cache line, latency, interrupt line. */
void pci_device_init(struct pci_device *pd, const char *name, const struct pci_id *id,
		     const struct pci_device_ops *ops, void *opaque);

/* Declare BAR idx (0-5; a 64-bit BAR also takes idx + 1). size: a power of
 * two, at least 16 bytes for memory and 4 for I/O (at most 256 for I/O).
 * Before attach only. */
int pci_device_add_bar(struct pci_device *pd, unsigned idx, enum pci_bar_type type,
		       bool prefetch, uint64_t size, pci_bar_read_fn rd, pci_bar_write_fn wr,
		       void *opaque, struct terr *err);

/* Append a capability of `len` bytes (including the id and next bytes) to
 * the list: returns its offset (>= 0x40, dword aligned) or -ENOSPC. The body
 * is zero and read-only; set contents with pci_config_set*() and writable
 * bits with pci_config_set_wmask(). Before attach only. */
int pci_add_capability(struct pci_device *pd, uint8_t id, unsigned len, struct terr *err);
/* Offset of the first capability with this id at or after `from` in the list
 * walk (0 to start at the head), or 0 when there is none. */
unsigned pci_find_capability(struct pci_device *pd, uint8_t id, unsigned from);

/* Model-side access to configuration space (little endian; no masks). */
void pci_config_set8(struct pci_device *pd, unsigned off, uint8_t v);
void pci_config_set16(struct pci_device *pd, unsigned off, uint16_t v);
void pci_config_set32(struct pci_device *pd, unsigned off, uint32_t v);
uint32_t pci_config_get(struct pci_device *pd, unsigned off, unsigned size);
void pci_config_set_wmask(struct pci_device *pd, unsigned off, unsigned size, uint32_t mask);
void pci_config_set_w1cmask(struct pci_device *pd, unsigned off, unsigned size, uint32_t mask);

/* Guest-side access, as CF8/CFC and ECAM perform it (masks, BAR moves,
 * hooks). Exposed for tests and for the host bridge. */
uint32_t pci_config_read(struct pci_device *pd, unsigned off, unsigned size);
void pci_config_write(struct pci_device *pd, unsigned off, unsigned size, uint32_t val);

/* Put the device in a slot (slot < 0: the first free one, from 1), give its
 * BARs addresses in the windows and take the power-on configuration. */
int pci_device_attach(struct pci_bus *bus, struct pci_device *pd, int slot, struct terr *err);
/* Undo attach and free what init/attach/msix_init took (BAR ranges, irqfds,
 * GSIs). Call from the model's destroy. Safe on a device never attached. */
void pci_device_detach(struct pci_device *pd);
/* Power-on state: configuration, BARs unmapped, MSI-X masked, INTx low. */
void pci_device_reset(struct pci_device *pd);

/* The device's PCI state as one nested field "pci": configuration space
 * (writable bits only are restored; ids and capability layout come from
 * the model), INTx level, MSI-X table and PBA. Load validates, re-maps the
 * BARs where the guest had put them and re-routes the MSI-X vectors. */
int pci_device_save(struct pci_device *pd, struct state_writer *w);
int pci_device_load(struct pci_device *pd, const struct state_reader *r, struct terr *err);

/* Guest-programmed BAR address (0 when never programmed). */
uint64_t pci_bar_address(struct pci_device *pd, unsigned idx);
/* Bus mastering enabled (the model may DMA). */
bool pci_bus_master(struct pci_device *pd);

/* INTx: assert (1) or deassert (0) the device's pin. Reflected in
 * STATUS.INTERRUPT; the GSI follows unless COMMAND.INTX_DISABLE is set. */
void pci_set_irq(struct pci_device *pd, int level);

/* ---- MSI-X ---- */

/* Add an MSI-X capability with `nvec` vectors (1-2048); the table (16 bytes
 * per vector) and the PBA live in the given BARs at the given offsets
 * (8-byte aligned, inside the BAR, not overlapping). Allocates one GSI and
 * one irqfd per vector. Before attach only. Returns the capability offset. */
int pci_msix_init(struct pci_device *pd, unsigned nvec, unsigned table_bar, uint32_t table_off,
		  unsigned pba_bar, uint32_t pba_off, struct terr *err);
/* Signal vector vec from any thread. When MSI-X is enabled and neither the
 * function nor the vector is masked, the message goes to the guest (irqfd
 * write: no vCPU thread involved) and 0 is returned; when masked, the
 * vector's pending bit is set (delivered on unmask) and 1 is returned;
 * when MSI-X is disabled, nothing happens and -EAGAIN is returned (the
 * model uses INTx then). */
int pci_msix_notify(struct pci_device *pd, unsigned vec);
bool pci_msix_enabled(struct pci_device *pd);
bool pci_msix_pending(struct pci_device *pd, unsigned vec);
/* The GSI and the eventfd of a vector (tests, diagnostics): -1 if none. */
int pci_msix_vector_gsi(struct pci_device *pd, unsigned vec);

/* ---- The host bridge and its bus ---- */

struct pci_host_params {
	const char *id;               /* "pci.0" */
	uint64_t ecam_base;           /* LAYOUT_ECAM_START */
	unsigned ecam_buses;          /* buses the ECAM window covers: 1-256 */
	uint16_t io_base;             /* I/O window */
	uint32_t io_size;
	uint64_t mmio32_base, mmio32_size;
	uint64_t mmio64_base, mmio64_size;   /* size 0: no 64-bit window */
};

/* Fill params from an acpi_config (acpi_config_defaults), so the windows
 * the bus allocates from are the ones the DSDT describes. */
void pci_host_params_from_acpi(struct pci_host_params *p, const struct acpi_config *c);

/* Create the host bridge device (00:00.0) with its bus: registers CF8-CFF
 * (and the reset control register at 0xcf9: writing 0x06 resets the VM)
 * and the ECAM window. */
int pci_host_create(struct vm *vm, const struct pci_host_params *p, struct device **out,
		    struct terr *err);
/* The bus behind a host bridge device, for device models to attach to. */
struct pci_bus *pci_host_bus(struct device *host);
/* The device in a slot, or NULL. */
struct pci_device *pci_bus_device(struct pci_bus *bus, unsigned slot);
/* The VM's GSI router (MSI routes, irqfds): every KVM GSI route goes
 * through it, as KVM_SET_GSI_ROUTING replaces the whole table. */
struct gsi_router *pci_bus_gsi(struct pci_bus *bus);

extern const struct device_ops pci_host_ops;

#endif
