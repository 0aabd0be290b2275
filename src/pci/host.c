/* The host bridge (00:00.0) and its bus: configuration mechanism #1
 * (address at 0xcf8, data at 0xcfc-0xcff), ECAM, the reset control
 * register at 0xcf9, and the windows BARs are placed in. */
#include "pci/pci_internal.h"
#include "arch/x86/layout.h"
#include "core/vm.h"
#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CF8_PORT        0xcf8
#define CF8_ENABLE      0x80000000u
#define RCR_SYS_RST     0x02
#define RCR_RST_CPU     0x04
#define RCR_FULL_RST    0x08

struct pci_host {
	struct device dev;
	struct pci_device pci;
	struct pci_bus *bus;
	pthread_mutex_t lock;
	uint64_t ecam_base, ecam_len;
	bool cf8_registered, ecam_registered;
	/* guest-visible, saved (with the bridge's configuration space) */
	uint32_t cf8;
	uint8_t rcr;
};

static struct pci_host *to_host(struct device *d)
{
	return (struct pci_host *)d;
}

void pci_host_params_from_acpi(struct pci_host_params *p, const struct acpi_config *c)
{
	memset(p, 0, sizeof(*p));
	p->id = "pci.0";
	p->ecam_base = c->ecam_base;
	p->ecam_buses = c->ecam_bus_end + 1;
	p->io_base = c->pci_io_base;
	p->io_size = c->pci_io_size;
	p->mmio32_base = c->mmio32_base;
	p->mmio32_size = c->mmio32_size;
	p->mmio64_base = c->mmio64_base;
	p->mmio64_size = c->mmio64_size;
}

void pci_bus_unref(struct pci_bus *bus)
{
	if (atomic_fetch_sub(&bus->refs, 1) == 1) {
		gsi_router_destroy(&bus->gsi);
		pthread_mutex_destroy(&bus->lock);
		free(bus);
	}
}

struct pci_device *pci_bus_device(struct pci_bus *bus, unsigned slot)
{
	if (slot >= PCI_SLOTS)
		return NULL;
	pthread_mutex_lock(&bus->lock);
	struct pci_device *pd = bus->slots[slot];
	pthread_mutex_unlock(&bus->lock);
	return pd;
}

struct gsi_router *pci_bus_gsi(struct pci_bus *bus)
{
	return &bus->gsi;
}

struct pci_bus *pci_host_bus(struct device *host)
{
	return host && host->ops == &pci_host_ops ? to_host(host)->bus : NULL;
}

/* Devices are attached while the machine is built and detached only when
 * the VM is destroyed, so a device found in a slot outlives the access. */
static struct pci_device *lookup(struct pci_host *h, unsigned bus, unsigned dev, unsigned fn)
{
	if (bus != 0 || fn != 0)
		return NULL;
	return pci_bus_device(h->bus, dev);
}

static uint32_t config_read(struct pci_host *h, unsigned bus, unsigned dev, unsigned fn,
			    unsigned reg, unsigned size)
{
	struct pci_device *pd = lookup(h, bus, dev, fn);
	if (!pd || (reg & (size - 1)))
		return 0xffffffffu;
	return pci_config_read(pd, reg, size);
}

static void config_write(struct pci_host *h, unsigned bus, unsigned dev, unsigned fn,
			 unsigned reg, unsigned size, uint32_t val)
{
	struct pci_device *pd = lookup(h, bus, dev, fn);
	if (pd && !(reg & (size - 1)))
		pci_config_write(pd, reg, size, val);
}

static uint32_t load_le(const void *data, unsigned size)
{
	const uint8_t *p = data;
	uint32_t v = 0;
	for (unsigned i = 0; i < size && i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static void store_le(void *data, unsigned size, uint64_t v)
{
	uint8_t *p = data;
	for (unsigned i = 0; i < size; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* 0xcf8-0xcff: the address register takes dword accesses at 0xcf8 only;
 * a byte at 0xcf9 is the reset control register; 0xcfc-0xcff are the data
 * window into the dword the address register selects. */
static void cf8_read(void *opaque, uint64_t off, void *data, unsigned size)
{
	struct pci_host *h = opaque;
	if (off < 4) {
		pthread_mutex_lock(&h->lock);
		uint64_t v = ~0ull;
		if (off == 0 && size == 4)
			v = h->cf8;
		else if (off == 1 && size == 1)
			v = h->rcr;
		pthread_mutex_unlock(&h->lock);
		store_le(data, size, v);
		return;
	}
	pthread_mutex_lock(&h->lock);
	uint32_t a = h->cf8;
	pthread_mutex_unlock(&h->lock);
	unsigned reg = (a & 0xfc) + (unsigned)(off - 4);
	if (!(a & CF8_ENABLE) || size > 4 || off - 4 + size > 4) {
		store_le(data, size, ~0ull);
		return;
	}
	store_le(data, size, config_read(h, (a >> 16) & 0xff, (a >> 11) & 31, (a >> 8) & 7, reg, size));
}

static void cf8_write(void *opaque, uint64_t off, const void *data, unsigned size)
{
	struct pci_host *h = opaque;
	uint32_t v = load_le(data, size);
	if (off < 4) {
		bool reset = false;
		pthread_mutex_lock(&h->lock);
		if (off == 0 && size == 4) {
			h->cf8 = v & 0x80fffffcu;   /* enable, bus, device, function, register */
		} else if (off == 1 && size == 1) {
			h->rcr = (uint8_t)(v & (RCR_SYS_RST | RCR_FULL_RST));
			reset = v & RCR_RST_CPU;
		}
		pthread_mutex_unlock(&h->lock);
		if (reset) {
			log_info(h->dev.id, "guest wrote the reset control register (0xcf9)");
			vm_request_exit(h->dev.vm, VM_EXIT_RESET, 0);
		}
		return;
	}
	pthread_mutex_lock(&h->lock);
	uint32_t a = h->cf8;
	pthread_mutex_unlock(&h->lock);
	if (!(a & CF8_ENABLE) || size > 4 || off - 4 + size > 4)
		return;
	config_write(h, (a >> 16) & 0xff, (a >> 11) & 31, (a >> 8) & 7,
		     (a & 0xfc) + (unsigned)(off - 4), size, v);
}

/* ECAM: bus << 20 | device << 15 | function << 12 | register. An 8-byte
 * access is two dword accesses. */
static void ecam_read(void *opaque, uint64_t off, void *data, unsigned size)
{
	struct pci_host *h = opaque;
	if (size == 8) {
		ecam_read(opaque, off, data, 4);
		ecam_read(opaque, off + 4, (uint8_t *)data + 4, 4);
		return;
	}
	store_le(data, size, config_read(h, (unsigned)(off >> 20) & 0xff, (unsigned)(off >> 15) & 31,
					 (unsigned)(off >> 12) & 7, (unsigned)off & 0xfff, size));
}

static void ecam_write(void *opaque, uint64_t off, const void *data, unsigned size)
{
	struct pci_host *h = opaque;
	if (size == 8) {
		ecam_write(opaque, off, data, 4);
		ecam_write(opaque, off + 4, (const uint8_t *)data + 4, 4);
		return;
	}
	config_write(h, (unsigned)(off >> 20) & 0xff, (unsigned)(off >> 15) & 31,
		     (unsigned)(off >> 12) & 7, (unsigned)off & 0xfff, size, load_le(data, size));
}

static void host_reset(struct device *d)
{
	struct pci_host *h = to_host(d);
	pthread_mutex_lock(&h->lock);
	h->cf8 = 0;
	h->rcr = 0;
	pthread_mutex_unlock(&h->lock);
	pci_device_reset(&h->pci);
}

static int host_save(struct device *d, struct state_writer *w)
{
	struct pci_host *h = to_host(d);
	pthread_mutex_lock(&h->lock);
	sw_uint(w, "cf8", h->cf8);
	sw_uint(w, "rcr", h->rcr);
	pthread_mutex_unlock(&h->lock);
	int r = pci_device_save(&h->pci, w);
	return r ? r : w->err;
}

static int host_load(struct device *d, const struct state_reader *r, struct terr *err)
{
	struct pci_host *h = to_host(d);
	uint64_t cf8, rcr;
	int ret;
	if ((ret = sr_uint_max(r, "cf8", 0, 0xffffffff, &cf8, err)) ||
	    (ret = sr_uint_max(r, "rcr", 0, 0xff, &rcr, err)))
		return ret;
	if (cf8 & ~0x80fffffcull)
		return terr_set(err, EINVAL, "%s: configuration address 0x%llx has reserved bits set",
				d->id, (unsigned long long)cf8);
	if (rcr & ~(uint64_t)(RCR_SYS_RST | RCR_FULL_RST))
		return terr_set(err, EINVAL, "%s: reset control 0x%llx has undefined bits set", d->id,
				(unsigned long long)rcr);
	ret = pci_device_load(&h->pci, r, err);
	if (ret)
		return ret;
	pthread_mutex_lock(&h->lock);
	h->cf8 = (uint32_t)cf8;
	h->rcr = (uint8_t)rcr;
	pthread_mutex_unlock(&h->lock);
	return 0;
}

static void host_destroy(struct device *d)
{
	struct pci_host *h = to_host(d);
	if (d->vm) {
		if (h->cf8_registered)
			bus_unregister(&d->vm->pio, CF8_PORT, h);
		if (h->ecam_registered)
			bus_unregister(&d->vm->mmio, h->ecam_base, h);
	}
	if (h->pci.bus)
		pci_device_detach(&h->pci);
	else
		pthread_mutex_destroy(&h->pci.lock);
	if (h->bus)
		pci_bus_unref(h->bus);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

const struct device_ops pci_host_ops = {
	.type = "pci-host",
	.state_version = 1,
	.state_min_version = 1,
	.reset = host_reset,
	.save = host_save,
	.load = host_load,
	.destroy = host_destroy,
};

int pci_host_create(struct vm *vm, const struct pci_host_params *p, struct device **out,
		    struct terr *err)
{
	const char *id = p->id ? p->id : "pci.0";
	if (!p->io_size || p->io_base + (uint64_t)p->io_size > 0x10000 || !p->mmio32_size ||
	    p->mmio32_base + p->mmio32_size > (1ull << 32) || p->ecam_buses < 1 || p->ecam_buses > 256)
		return terr_set(err, EINVAL, "%s: PCI windows (I/O 0x%x+0x%x, MMIO32 0x%llx+0x%llx, "
				"%u ECAM buses) are empty or out of range", id, p->io_base, p->io_size,
				(unsigned long long)p->mmio32_base,
				(unsigned long long)p->mmio32_size, p->ecam_buses);
	struct pci_host *h = calloc(1, sizeof(*h));
	struct pci_bus *bus = calloc(1, sizeof(*bus));
	if (!h || !bus) {
		free(h);
		free(bus);
		return terr_set(err, ENOMEM, "%s: out of memory", id);
	}
	h->dev.ops = &pci_host_ops;
	snprintf(h->dev.id, sizeof(h->dev.id), "%s", id);
	h->dev.priv = h;
	pthread_mutex_init(&h->lock, NULL);
	h->ecam_base = p->ecam_base;
	h->ecam_len = (uint64_t)p->ecam_buses << 20;

	bus->vm = vm;
	atomic_init(&bus->refs, 1);   /* the host bridge's own */
	pthread_mutex_init(&bus->lock, NULL);
	bus->io_next = p->io_base;
	bus->io_end = p->io_base + (uint64_t)p->io_size;
	bus->m32_next = p->mmio32_base;
	bus->m32_end = p->mmio32_base + p->mmio32_size;
	bus->m64_next = p->mmio64_base;
	bus->m64_end = p->mmio64_size ? p->mmio64_base + p->mmio64_size : p->mmio64_base;
	gsi_router_init(&bus->gsi, vm->fd);
	h->bus = bus;

	pci_device_init(&h->pci, h->dev.id,
			&(struct pci_id){ .vendor = PCI_HOST_VENDOR, .device = PCI_HOST_DEVICE,
					  .subsys_vendor = PCI_HOST_VENDOR,
					  .subsys = PCI_HOST_DEVICE, .class_code = PCI_HOST_CLASS },
			NULL, h);
	vm_add_device(vm, &h->dev);
	int r = pci_device_attach(bus, &h->pci, 0, err);
	if (r)
		return r;   /* the VM owns the device now and frees it */
	r = bus_register(&vm->pio, CF8_PORT, 8, cf8_read, cf8_write, h, h->dev.id, err);
	if (r)
		return r;
	h->cf8_registered = true;
	r = bus_register(&vm->mmio, h->ecam_base, h->ecam_len, ecam_read, ecam_write, h, h->dev.id,
			 err);
	if (r)
		return r;
	h->ecam_registered = true;
	*out = &h->dev;
	return 0;
}
