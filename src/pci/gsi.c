#include "pci/gsi.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

void gsi_router_init(struct gsi_router *r, int vm_fd)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	r->vm_fd = vm_fd;
}

void gsi_router_destroy(struct gsi_router *r)
{
	pthread_mutex_destroy(&r->lock);
}

int gsi_alloc(struct gsi_router *r)
{
	int gsi = -ENOSPC;
	pthread_mutex_lock(&r->lock);
	for (unsigned i = 0; i < GSI_MSI_MAX; i++) {
		if (!r->msi[i].used) {
			r->msi[i] = (struct gsi_msi_route){ .used = true };
			gsi = (int)(GSI_IRQCHIP_PINS + i);
			break;
		}
	}
	pthread_mutex_unlock(&r->lock);
	return gsi;
}

static struct gsi_msi_route *route_of(struct gsi_router *r, int gsi)
{
	if (gsi < GSI_IRQCHIP_PINS || gsi >= GSI_IRQCHIP_PINS + GSI_MSI_MAX)
		return NULL;
	return &r->msi[gsi - GSI_IRQCHIP_PINS];
}

void gsi_free(struct gsi_router *r, int gsi)
{
	pthread_mutex_lock(&r->lock);
	struct gsi_msi_route *m = route_of(r, gsi);
	if (m && m->used) {
		if (m->valid)
			r->dirty = true;
		*m = (struct gsi_msi_route){ 0 };
	}
	pthread_mutex_unlock(&r->lock);
}

void gsi_set_msi(struct gsi_router *r, int gsi, bool valid, uint64_t addr, uint32_t data)
{
	pthread_mutex_lock(&r->lock);
	struct gsi_msi_route *m = route_of(r, gsi);
	if (m && m->used) {
		if (!valid) {
			if (m->valid)
				r->dirty = true;
			m->valid = false;
		} else if (!m->valid || m->addr != addr || m->data != data) {
			m->valid = true;
			m->addr = addr;
			m->data = data;
			r->dirty = true;
		}
	}
	pthread_mutex_unlock(&r->lock);
}

static void irqchip_entry(struct kvm_irq_routing_entry *e, unsigned gsi, unsigned chip,
			  unsigned pin)
{
	memset(e, 0, sizeof(*e));
	e->gsi = gsi;
	e->type = KVM_IRQ_ROUTING_IRQCHIP;
	e->u.irqchip.irqchip = chip;
	e->u.irqchip.pin = pin;
}

int gsi_commit(struct gsi_router *r, struct terr *err)
{
	int ret = 0;
	pthread_mutex_lock(&r->lock);
	if (!r->dirty)
		goto out;
	unsigned cap = 40 + GSI_MSI_MAX;
	struct kvm_irq_routing *t = calloc(1, sizeof(*t) + cap * sizeof(t->entries[0]));
	if (!t) {
		ret = terr_set(err, ENOMEM, "GSI routing: out of memory");
		goto out;
	}
	unsigned n = 0;
	/* KVM's default table: what KVM_CREATE_IRQCHIP installs */
	for (unsigned i = 0; i < 16; i++) {
		irqchip_entry(&t->entries[n++], i, KVM_IRQCHIP_IOAPIC, i);
		irqchip_entry(&t->entries[n++], i, i < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE,
			      i % 8);
	}
	for (unsigned i = 16; i < GSI_IRQCHIP_PINS; i++)
		irqchip_entry(&t->entries[n++], i, KVM_IRQCHIP_IOAPIC, i);
	for (unsigned i = 0; i < GSI_MSI_MAX; i++) {
		const struct gsi_msi_route *m = &r->msi[i];
		if (!m->used || !m->valid)
			continue;
		struct kvm_irq_routing_entry *e = &t->entries[n++];
		memset(e, 0, sizeof(*e));
		e->gsi = GSI_IRQCHIP_PINS + i;
		e->type = KVM_IRQ_ROUTING_MSI;
		e->u.msi.address_lo = (uint32_t)m->addr;
		e->u.msi.address_hi = (uint32_t)(m->addr >> 32);
		e->u.msi.data = m->data;
	}
	t->nr = n;
	if (ioctl(r->vm_fd, KVM_SET_GSI_ROUTING, t) < 0) {
		ret = terr_set(err, errno, "KVM_SET_GSI_ROUTING with %u routes: %s", n, strerror(errno));
	} else {
		r->dirty = false;
		r->commits++;
	}
	free(t);
out:
	pthread_mutex_unlock(&r->lock);
	return ret;
}

int gsi_irqfd_bind(struct gsi_router *r, int gsi, int efd, struct terr *err)
{
	struct kvm_irqfd f = { .fd = (uint32_t)efd, .gsi = (uint32_t)gsi };
	if (ioctl(r->vm_fd, KVM_IRQFD, &f) < 0)
		return terr_set(err, errno, "KVM_IRQFD for GSI %d: %s", gsi, strerror(errno));
	return 0;
}

void gsi_irqfd_unbind(struct gsi_router *r, int gsi, int efd)
{
	struct kvm_irqfd f = { .fd = (uint32_t)efd, .gsi = (uint32_t)gsi,
			       .flags = KVM_IRQFD_FLAG_DEASSIGN };
	ioctl(r->vm_fd, KVM_IRQFD, &f);
}

int gsi_signal_msi(struct gsi_router *r, uint64_t addr, uint32_t data)
{
	struct kvm_msi m = { .address_lo = (uint32_t)addr, .address_hi = (uint32_t)(addr >> 32),
			     .data = data };
	int ret = ioctl(r->vm_fd, KVM_SIGNAL_MSI, &m);
	return ret < 0 ? -errno : 0;
}
