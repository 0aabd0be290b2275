/* Shared between the files of src/pci; not for device models. */
#ifndef TERN_PCI_PCI_INTERNAL_H
#define TERN_PCI_PCI_INTERNAL_H

#include "pci/pci.h"

struct pci_bus {
	struct vm *vm;
	atomic_int refs;              /* the host bridge + every attached device */
	pthread_mutex_t lock;         /* slots and the allocators */
	struct pci_device *slots[PCI_SLOTS];
	uint64_t io_next, io_end;
	uint64_t m32_next, m32_end;
	uint64_t m64_next, m64_end;
	struct gsi_router gsi;
};

struct pci_msix {
	unsigned nvec;
	unsigned cap;                 /* capability offset */
	unsigned table_bar, pba_bar;
	uint32_t table_off, pba_off;
	uint8_t *table;               /* nvec * 16 bytes, as the guest sees it */
	uint64_t *pba;                /* nvec bits */
	int *gsi, *efd;               /* per vector; -1 before attach */
};

void pci_bus_unref(struct pci_bus *bus);

/* msix.c. Whether an access touches the table or the PBA: the layout is
 * fixed at init, so no lock is needed (BAR accesses elsewhere stay lock-free). */
bool msix_in_region(const struct pci_msix *m, unsigned bar, uint64_t off, unsigned size);
/* The rest with pd->lock held. */
bool msix_bar_access(struct pci_device *pd, unsigned bar, uint64_t off, void *data,
		     unsigned size, bool write);
void msix_control_changed(struct pci_device *pd);
void msix_reset(struct pci_device *pd);
int msix_attach(struct pci_device *pd, struct terr *err);
void msix_detach(struct pci_device *pd);   /* frees everything */
void msix_save(struct pci_device *pd, struct state_writer *w);
int msix_load(struct pci_device *pd, const struct state_reader *r, struct terr *err);

#endif
