/* The VM's KVM interrupt routing table. KVM_SET_GSI_ROUTING replaces the
 * whole table, so one owner keeps it: the default irqchip routes (GSI 0-15
 * to the PICs and the IOAPIC, 16-23 to the IOAPIC, as KVM sets them up) plus
 * one MSI route per allocated GSI (24 and up). Commits are lazy: changing a
 * route marks the table dirty, gsi_commit writes it (KVM waits for an SRCU
 * grace period there, so batch changes and commit once).
 *
 * Also: irqfds (an eventfd bound to a GSI, so any thread can inject an
 * interrupt with one write(2), no vCPU thread involved) and direct MSI
 * injection. */
#ifndef TERN_PCI_GSI_H
#define TERN_PCI_GSI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

#define GSI_IRQCHIP_PINS   24     /* IOAPIC pins; MSI GSIs start here */
#define GSI_MSI_MAX        1024   /* MSI GSIs per VM */

struct gsi_msi_route {
	bool used, valid;
	uint64_t addr;
	uint32_t data;
};

struct gsi_router {
	pthread_mutex_t lock;
	int vm_fd;
	bool dirty;
	unsigned commits;             /* KVM_SET_GSI_ROUTING calls (tests) */
	struct gsi_msi_route msi[GSI_MSI_MAX];
};

void gsi_router_init(struct gsi_router *r, int vm_fd);
void gsi_router_destroy(struct gsi_router *r);
/* A free GSI for an MSI route (no route yet), or -ENOSPC. */
int gsi_alloc(struct gsi_router *r);
void gsi_free(struct gsi_router *r, int gsi);
/* Route gsi to the MSI (addr, data); valid false removes the route. */
void gsi_set_msi(struct gsi_router *r, int gsi, bool valid, uint64_t addr, uint32_t data);
/* Write the table to KVM if anything changed. */
int gsi_commit(struct gsi_router *r, struct terr *err);

/* Bind eventfd efd to gsi (KVM_IRQFD); unbind undoes it. */
int gsi_irqfd_bind(struct gsi_router *r, int gsi, int efd, struct terr *err);
void gsi_irqfd_unbind(struct gsi_router *r, int gsi, int efd);
/* Inject one MSI now (KVM_SIGNAL_MSI), without a route. */
int gsi_signal_msi(struct gsi_router *r, uint64_t addr, uint32_t data);

#endif
