/* PCI devices: configuration space with write masks, capabilities, BARs
 * (placement, sizing, moves, COMMAND gating), INTx, save/load. */
#include "pci/pci_internal.h"
#include "core/vm.h"
#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CMD_WRITABLE (PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | \
		      PCI_COMMAND_PARITY | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE)
#define STATUS_W1C   (PCI_STATUS_DETECTED_PARITY | PCI_STATUS_SIG_SYSTEM_ERROR | \
		      PCI_STATUS_REC_MASTER_ABORT | PCI_STATUS_REC_TARGET_ABORT | \
		      PCI_STATUS_SIG_TARGET_ABORT | PCI_STATUS_PARITY)
#define MEM_BAR_ALIGN 4096

static void put(uint8_t *p, unsigned off, unsigned size, uint32_t v)
{
	for (unsigned i = 0; i < size; i++)
		p[off + i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get(const uint8_t *p, unsigned off, unsigned size)
{
	uint32_t v = 0;
	for (unsigned i = 0; i < size; i++)
		v |= (uint32_t)p[off + i] << (8 * i);
	return v;
}

static bool in_space(unsigned off, unsigned size)
{
	return size >= 1 && size <= 4 && off < PCI_CFG_SPACE && off + size <= PCI_CFG_SPACE;
}

void pci_config_set8(struct pci_device *pd, unsigned off, uint8_t v)
{
	if (in_space(off, 1))
		put(pd->cfg, off, 1, v);
}

void pci_config_set16(struct pci_device *pd, unsigned off, uint16_t v)
{
	if (in_space(off, 2))
		put(pd->cfg, off, 2, v);
}

void pci_config_set32(struct pci_device *pd, unsigned off, uint32_t v)
{
	if (in_space(off, 4))
		put(pd->cfg, off, 4, v);
}

uint32_t pci_config_get(struct pci_device *pd, unsigned off, unsigned size)
{
	if (!in_space(off, size))
		return 0xffffffffu;
	pthread_mutex_lock(&pd->lock);
	uint32_t v = get(pd->cfg, off, size);
	pthread_mutex_unlock(&pd->lock);
	return v;
}

void pci_config_set_wmask(struct pci_device *pd, unsigned off, unsigned size, uint32_t mask)
{
	if (in_space(off, size))
		put(pd->wmask, off, size, mask);
}

void pci_config_set_w1cmask(struct pci_device *pd, unsigned off, unsigned size, uint32_t mask)
{
	if (in_space(off, size))
		put(pd->w1cmask, off, size, mask);
}

void pci_device_init(struct pci_device *pd, const char *name, const struct pci_id *id,
		     const struct pci_device_ops *ops, void *opaque)
{
	memset(pd, 0, sizeof(*pd));
	snprintf(pd->name, sizeof(pd->name), "%s", name);
	pd->ops = ops;
	pd->opaque = opaque;
	pd->slot = -1;
	pthread_mutex_init(&pd->lock, NULL);
	put(pd->cfg, PCI_VENDOR_ID, 2, id->vendor);
	put(pd->cfg, PCI_DEVICE_ID, 2, id->device);
	put(pd->cfg, PCI_REVISION_ID, 1, id->revision);
	put(pd->cfg, PCI_CLASS_PROG, 1, id->class_code & 0xff);
	put(pd->cfg, PCI_CLASS_DEVICE, 2, (id->class_code >> 8) & 0xffff);
	put(pd->cfg, PCI_HEADER_TYPE, 1, PCI_HEADER_TYPE_NORMAL);
	put(pd->cfg, PCI_SUBSYSTEM_VENDOR_ID, 2, id->subsys_vendor);
	put(pd->cfg, PCI_SUBSYSTEM_ID, 2, id->subsys);
	put(pd->cfg, PCI_INTERRUPT_PIN, 1, id->intx_pin <= 4 ? id->intx_pin : 0);
	put(pd->wmask, PCI_COMMAND, 2, CMD_WRITABLE);
	put(pd->w1cmask, PCI_STATUS, 2, STATUS_W1C);
	put(pd->wmask, PCI_CACHE_LINE_SIZE, 1, 0xff);
	put(pd->wmask, PCI_LATENCY_TIMER, 1, 0xff);
	put(pd->wmask, PCI_INTERRUPT_LINE, 1, 0xff);
	pd->cap_next = PCI_CAP_START;
	for (unsigned i = 0; i < PCI_STD_NUM_BARS; i++) {
		pd->bar[i].pd = pd;
		pd->bar[i].index = i;
	}
}

int pci_device_add_bar(struct pci_device *pd, unsigned idx, enum pci_bar_type type,
		       bool prefetch, uint64_t size, pci_bar_read_fn rd, pci_bar_write_fn wr,
		       void *opaque, struct terr *err)
{
	unsigned span = type == PCI_BAR_MEM64 ? 2 : 1;
	if (pd->bus)
		return terr_set(err, EBUSY, "%s: BAR %u declared after the device was attached",
				pd->name, idx);
	if (type == PCI_BAR_UNUSED || idx + span > PCI_STD_NUM_BARS)
		return terr_set(err, EINVAL, "%s: BAR %u does not exist", pd->name, idx);
	for (unsigned i = idx; i < idx + span; i++)
		if (pd->bar[i].type != PCI_BAR_UNUSED || (i > 0 && pd->bar[i - 1].type == PCI_BAR_MEM64))
			return terr_set(err, EBUSY, "%s: BAR %u is already in use", pd->name, i);
	uint64_t min = type == PCI_BAR_IO ? 4 : 16;
	uint64_t max = type == PCI_BAR_IO ? 256 : type == PCI_BAR_MEM32 ? (1ull << 31) : (1ull << 40);
	if (size < min || size > max || (size & (size - 1)))
		return terr_set(err, EINVAL, "%s: BAR %u size 0x%llx is not a power of two from 0x%llx "
				"to 0x%llx", pd->name, idx, (unsigned long long)size,
				(unsigned long long)min, (unsigned long long)max);
	struct pci_bar *b = &pd->bar[idx];
	b->type = type;
	b->prefetch = type != PCI_BAR_IO && prefetch;
	b->size = size;
	b->read = rd;
	b->write = wr;
	b->opaque = opaque;
	unsigned reg = PCI_BASE_ADDRESS_0 + 4 * idx;
	if (type == PCI_BAR_IO) {
		put(pd->cfg, reg, 4, PCI_BASE_ADDRESS_SPACE_IO);
		put(pd->wmask, reg, 4, (uint32_t)(~(size - 1) & 0xfffc));   /* 16-bit decode */
	} else {
		uint32_t flags = (type == PCI_BAR_MEM64 ? PCI_BASE_ADDRESS_MEM_TYPE_64 : 0) |
				 (b->prefetch ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0);
		uint64_t mask = ~(size - 1);
		put(pd->cfg, reg, 4, flags);
		put(pd->wmask, reg, 4, (uint32_t)mask & ~0xfu);
		if (type == PCI_BAR_MEM64)
			put(pd->wmask, reg + 4, 4, (uint32_t)(mask >> 32));
	}
	return 0;
}

int pci_add_capability(struct pci_device *pd, uint8_t id, unsigned len, struct terr *err)
{
	if (pd->bus)
		return terr_set(err, EBUSY, "%s: capability 0x%02x added after attach", pd->name, id);
	unsigned off = (pd->cap_next + 3) & ~3u;
	if (len < 2 || off + len > 0x100)
		return terr_set(err, ENOSPC, "%s: no room for a %u-byte capability 0x%02x", pd->name,
				len, id);
	memset(pd->cfg + off, 0, len);
	memset(pd->wmask + off, 0, len);
	memset(pd->w1cmask + off, 0, len);
	pd->cfg[off] = id;
	pd->cfg[off + PCI_CAP_LIST_NEXT] = 0;
	if (pd->cap_last)
		pd->cfg[pd->cap_last + PCI_CAP_LIST_NEXT] = (uint8_t)off;
	else
		pd->cfg[PCI_CAPABILITY_LIST] = (uint8_t)off;
	pd->cap_last = (uint8_t)off;
	pd->cap_next = off + len;
	put(pd->cfg, PCI_STATUS, 2, get(pd->cfg, PCI_STATUS, 2) | PCI_STATUS_CAP_LIST);
	return (int)off;
}

unsigned pci_find_capability(struct pci_device *pd, uint8_t id, unsigned from)
{
	unsigned off;
	if (!(get(pd->cfg, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST))
		return 0;
	off = from ? pd->cfg[from + PCI_CAP_LIST_NEXT] : pd->cfg[PCI_CAPABILITY_LIST];
	for (unsigned hops = 0; off >= PCI_CAP_START && off < 0x100 && hops < 48; hops++) {
		if (pd->cfg[off] == id)
			return off;
		off = pd->cfg[off + PCI_CAP_LIST_NEXT] & ~3u;
	}
	return 0;
}

/* ---- BARs ---- */

static uint64_t bar_addr_locked(const struct pci_device *pd, unsigned i)
{
	const struct pci_bar *b = &pd->bar[i];
	unsigned reg = PCI_BASE_ADDRESS_0 + 4 * i;
	uint32_t lo = get(pd->cfg, reg, 4);
	switch (b->type) {
	case PCI_BAR_IO:
		return lo & PCI_BASE_ADDRESS_IO_MASK & 0xffff;
	case PCI_BAR_MEM32:
		return lo & PCI_BASE_ADDRESS_MEM_MASK;
	case PCI_BAR_MEM64:
		return (lo & PCI_BASE_ADDRESS_MEM_MASK) | (uint64_t)get(pd->cfg, reg + 4, 4) << 32;
	default:
		return 0;
	}
}

uint64_t pci_bar_address(struct pci_device *pd, unsigned idx)
{
	if (idx >= PCI_STD_NUM_BARS)
		return 0;
	pthread_mutex_lock(&pd->lock);
	uint64_t a = bar_addr_locked(pd, idx);
	pthread_mutex_unlock(&pd->lock);
	return a;
}

bool pci_bus_master(struct pci_device *pd)
{
	return pci_config_get(pd, PCI_COMMAND, 2) & PCI_COMMAND_MASTER;
}

static void bar_read(void *opaque, uint64_t off, void *data, unsigned size)
{
	struct pci_bar *b = opaque;
	struct pci_device *pd = b->pd;
	if (pd->msix && msix_in_region(pd->msix, b->index, off, size)) {
		pthread_mutex_lock(&pd->lock);
		bool done = msix_bar_access(pd, b->index, off, data, size, false);
		pthread_mutex_unlock(&pd->lock);
		if (done)
			return;
	}
	if (b->read)
		b->read(b->opaque, b->index, off, data, size);
	else
		memset(data, 0xff, size);
}

static void bar_write(void *opaque, uint64_t off, const void *data, unsigned size)
{
	struct pci_bar *b = opaque;
	struct pci_device *pd = b->pd;
	if (pd->msix && msix_in_region(pd->msix, b->index, off, size)) {
		pthread_mutex_lock(&pd->lock);
		bool done = msix_bar_access(pd, b->index, off, (void *)data, size, true);
		pthread_mutex_unlock(&pd->lock);
		if (done)
			return;
	}
	if (b->write)
		b->write(b->opaque, b->index, off, data, size);
}

static bool bar_placeable(const struct pci_bar *b, uint64_t addr)
{
	if (addr == 0 || addr + b->size - 1 < addr)
		return false;
	if (b->type == PCI_BAR_IO)
		return addr + b->size <= 0x10000;
	if (b->type == PCI_BAR_MEM32)
		return addr + b->size <= (1ull << 32);
	return true;
}

/* Record a bar_mapped call to make once the device lock is dropped. An
 * unmap followed by a map (a move) is two events; anything longer folds
 * into the last state, which is what the model must end up with. */
static void note_event(struct pci_bar *b, bool mapped, uint64_t addr)
{
	if (b->events == 2) {
		b->event[0] = b->event[1];
		b->events = 1;
	}
	b->event[b->events].mapped = mapped;
	b->event[b->events].addr = addr;
	b->events++;
}

struct bar_events {
	unsigned n;
	struct { unsigned bar; bool mapped; uint64_t addr; } e[PCI_STD_NUM_BARS * 2];
};

/* Under the lock: take the owed events. */
static void take_events(struct pci_device *pd, struct bar_events *ev)
{
	ev->n = 0;
	for (unsigned i = 0; i < PCI_STD_NUM_BARS; i++) {
		struct pci_bar *b = &pd->bar[i];
		for (unsigned k = 0; k < b->events; k++) {
			ev->e[ev->n].bar = i;
			ev->e[ev->n].mapped = b->event[k].mapped;
			ev->e[ev->n].addr = b->event[k].addr;
			ev->n++;
		}
		b->events = 0;
	}
}

/* Without the lock: tell the model. */
static void send_events(struct pci_device *pd, const struct bar_events *ev)
{
	if (!pd->ops || !pd->ops->bar_mapped)
		return;
	for (unsigned k = 0; k < ev->n; k++)
		pd->ops->bar_mapped(pd, ev->e[k].bar, ev->e[k].mapped, ev->e[k].addr);
}

/* Make the bus decode exactly the BARs that COMMAND enables, where their
 * registers point. A range that would overlap another (a guest placing two
 * BARs on each other) stays unmapped until the guest moves it. */
static void update_mappings(struct pci_device *pd)
{
	if (!pd->bus)
		return;
	struct vm *vm = pd->bus->vm;
	uint16_t cmd = (uint16_t)get(pd->cfg, PCI_COMMAND, 2);
	for (unsigned i = 0; i < PCI_STD_NUM_BARS; i++) {
		struct pci_bar *b = &pd->bar[i];
		if (b->type == PCI_BAR_UNUSED)
			continue;
		bool io = b->type == PCI_BAR_IO;
		struct bus *bus = io ? &vm->pio : &vm->mmio;
		uint64_t addr = bar_addr_locked(pd, i);
		bool want = (cmd & (io ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY)) && bar_placeable(b, addr);
		if (b->mapped && (!want || b->mapped_at != addr)) {
			bus_unregister(bus, b->mapped_at, b);
			b->mapped = false;
			note_event(b, false, b->mapped_at);
		}
		if (want && !b->mapped) {
			struct terr err = { 0 };
			if (bus_register(bus, addr, b->size, bar_read, bar_write, b, pd->name, &err) == 0) {
				b->mapped = true;
				b->mapped_at = addr;
				note_event(b, true, addr);
			} else {
				log_warn(pd->name, "BAR %u not decoded: %s", i, err.msg);
			}
		}
	}
}

static void unmap_all(struct pci_device *pd)
{
	if (!pd->bus)
		return;
	for (unsigned i = 0; i < PCI_STD_NUM_BARS; i++) {
		struct pci_bar *b = &pd->bar[i];
		if (b->mapped) {
			struct vm *vm = pd->bus->vm;
			bus_unregister(b->type == PCI_BAR_IO ? &vm->pio : &vm->mmio, b->mapped_at, b);
			b->mapped = false;
		}
	}
}

/* ---- INTx ---- */

static void update_intx(struct pci_device *pd)
{
	uint16_t st = (uint16_t)get(pd->cfg, PCI_STATUS, 2);
	st = (uint16_t)(pd->intx_level ? st | PCI_STATUS_INTERRUPT : st & ~PCI_STATUS_INTERRUPT);
	put(pd->cfg, PCI_STATUS, 2, st);
	unsigned pin = pd->cfg[PCI_INTERRUPT_PIN];
	if (!pd->bus || pin == 0 || pin > 4)
		return;
	int out = pd->intx_level && !(get(pd->cfg, PCI_COMMAND, 2) & PCI_COMMAND_INTX_DISABLE);
	if (out != pd->intx_out) {
		pd->intx_out = out;
		vm_irq_line(pd->bus->vm, pci_intx_gsi((unsigned)pd->slot, pin - 1), out);
	}
}

void pci_set_irq(struct pci_device *pd, int level)
{
	pthread_mutex_lock(&pd->lock);
	pd->intx_level = level != 0;
	update_intx(pd);
	pthread_mutex_unlock(&pd->lock);
}

/* ---- Guest configuration accesses ---- */

static bool overlaps(unsigned off, unsigned size, unsigned start, unsigned len)
{
	return off < start + len && start < off + size;
}

uint32_t pci_config_read(struct pci_device *pd, unsigned off, unsigned size)
{
	if (!in_space(off, size))
		return 0xffffffffu;
	pthread_mutex_lock(&pd->lock);
	uint32_t v = get(pd->cfg, off, size);
	pthread_mutex_unlock(&pd->lock);
	if (pd->ops && pd->ops->config_read)
		pd->ops->config_read(pd, off, size, &v);
	return v;
}

void pci_config_write(struct pci_device *pd, unsigned off, unsigned size, uint32_t val)
{
	if (!in_space(off, size))
		return;
	pthread_mutex_lock(&pd->lock);
	uint16_t old_cmd = (uint16_t)get(pd->cfg, PCI_COMMAND, 2);
	for (unsigned i = 0; i < size; i++) {
		unsigned o = off + i;
		uint8_t v = (uint8_t)(val >> (8 * i));
		uint8_t c = (uint8_t)((pd->cfg[o] & ~pd->wmask[o]) | (v & pd->wmask[o]));
		pd->cfg[o] = (uint8_t)(c & ~(v & pd->w1cmask[o]));
	}
	uint16_t cmd = (uint16_t)get(pd->cfg, PCI_COMMAND, 2);
	if (overlaps(off, size, PCI_COMMAND, 2) || overlaps(off, size, PCI_BASE_ADDRESS_0, 24))
		update_mappings(pd);
	if ((cmd ^ old_cmd) & PCI_COMMAND_INTX_DISABLE)
		update_intx(pd);
	if (pd->msix && overlaps(off, size, pd->msix->cap + PCI_MSIX_FLAGS, 2))
		msix_control_changed(pd);
	struct bar_events ev;
	take_events(pd, &ev);
	pthread_mutex_unlock(&pd->lock);
	send_events(pd, &ev);
	if (pd->ops && pd->ops->config_write)
		pd->ops->config_write(pd, off, size, val);
}

/* ---- Life cycle ---- */

static int place_bar(struct pci_bus *bus, struct pci_device *pd, unsigned i, struct terr *err)
{
	struct pci_bar *b = &pd->bar[i];
	uint64_t *next, end;
	uint64_t align = b->size;
	const char *window;
	if (b->type == PCI_BAR_IO) {
		next = &bus->io_next;
		end = bus->io_end;
		window = "I/O";
	} else if (b->type == PCI_BAR_MEM64 && bus->m64_end > bus->m64_next) {
		next = &bus->m64_next;
		end = bus->m64_end;
		window = "64-bit MMIO";
	} else {
		next = &bus->m32_next;
		end = bus->m32_end;
		window = "32-bit MMIO";
	}
	if (b->type != PCI_BAR_IO && align < MEM_BAR_ALIGN)
		align = MEM_BAR_ALIGN;
	uint64_t addr = (*next + align - 1) & ~(align - 1);
	if (addr < *next || addr + b->size > end || addr + b->size < addr)
		return terr_set(err, ENOSPC, "%s: BAR %u (0x%llx bytes) does not fit in the PCI %s window",
				pd->name, i, (unsigned long long)b->size, window);
	*next = addr + b->size;
	unsigned reg = PCI_BASE_ADDRESS_0 + 4 * i;
	put(pd->cfg, reg, 4, (get(pd->cfg, reg, 4) & (b->type == PCI_BAR_IO ? 0x3 : 0xf)) |
			     (uint32_t)addr);
	if (b->type == PCI_BAR_MEM64)
		put(pd->cfg, reg + 4, 4, (uint32_t)(addr >> 32));
	return 0;
}

int pci_device_attach(struct pci_bus *bus, struct pci_device *pd, int slot, struct terr *err)
{
	int r = 0;
	if (pd->bus)
		return terr_set(err, EBUSY, "%s: already on the PCI bus", pd->name);
	pthread_mutex_lock(&bus->lock);
	if (slot < 0) {
		for (int s = 1; s < PCI_SLOTS && slot < 0; s++)
			if (!bus->slots[s])
				slot = s;
		if (slot < 0) {
			r = terr_set(err, ENOSPC, "%s: all %d PCI slots are taken", pd->name, PCI_SLOTS);
			goto out;
		}
	}
	if (slot >= PCI_SLOTS) {
		r = terr_set(err, EINVAL, "%s: PCI slot %d does not exist (0-%d)", pd->name, slot,
			     PCI_SLOTS - 1);
		goto out;
	}
	if (bus->slots[slot]) {
		r = terr_set(err, EBUSY, "%s: PCI slot %d is taken by %s", pd->name, slot,
			     bus->slots[slot]->name);
		goto out;
	}
	/* place the BARs, largest first so alignment wastes least; undo on failure */
	uint64_t saved[3][1] = { { bus->io_next }, { bus->m32_next }, { bus->m64_next } };
	unsigned order[PCI_STD_NUM_BARS], n = 0;
	for (unsigned i = 0; i < PCI_STD_NUM_BARS; i++)
		if (pd->bar[i].type != PCI_BAR_UNUSED)
			order[n++] = i;
	for (unsigned a = 0; a < n; a++)
		for (unsigned b = a + 1; b < n; b++)
			if (pd->bar[order[b]].size > pd->bar[order[a]].size) {
				unsigned t = order[a];
				order[a] = order[b];
				order[b] = t;
			}
	for (unsigned k = 0; k < n; k++) {
		r = place_bar(bus, pd, order[k], err);
		if (r) {
			bus->io_next = saved[0][0];
			bus->m32_next = saved[1][0];
			bus->m64_next = saved[2][0];
			goto out;
		}
	}
	pd->bus = bus;
	pd->slot = slot;
	unsigned pin = pd->cfg[PCI_INTERRUPT_PIN];
	pd->cfg[PCI_INTERRUPT_LINE] = pin ? (uint8_t)pci_intx_gsi((unsigned)slot, pin - 1) : 0xff;
	if (pd->msix) {
		r = msix_attach(pd, err);
		if (r) {
			pd->bus = NULL;
			pd->slot = -1;
			goto out;
		}
	}
	memcpy(pd->reset_cfg, pd->cfg, sizeof(pd->cfg));
	bus->slots[slot] = pd;
	atomic_fetch_add(&bus->refs, 1);
out:
	pthread_mutex_unlock(&bus->lock);
	return r;
}

void pci_device_detach(struct pci_device *pd)
{
	struct pci_bus *bus = pd->bus;
	pthread_mutex_lock(&pd->lock);
	unmap_all(pd);
	if (pd->intx_out && bus)
		vm_irq_line(bus->vm, pci_intx_gsi((unsigned)pd->slot, pd->cfg[PCI_INTERRUPT_PIN] - 1), 0);
	if (pd->msix)
		msix_detach(pd);
	pthread_mutex_unlock(&pd->lock);
	if (bus) {
		pthread_mutex_lock(&bus->lock);
		if (pd->slot >= 0 && bus->slots[pd->slot] == pd)
			bus->slots[pd->slot] = NULL;
		pthread_mutex_unlock(&bus->lock);
		pd->bus = NULL;
		pci_bus_unref(bus);
	}
	pthread_mutex_destroy(&pd->lock);
}

void pci_device_reset(struct pci_device *pd)
{
	pthread_mutex_lock(&pd->lock);
	if (pd->bus)
		memcpy(pd->cfg, pd->reset_cfg, sizeof(pd->cfg));
	update_mappings(pd);   /* COMMAND is 0 now: nothing decoded */
	pd->intx_level = 0;
	update_intx(pd);
	if (pd->msix)
		msix_reset(pd);
	struct bar_events ev;
	take_events(pd, &ev);
	pthread_mutex_unlock(&pd->lock);
	send_events(pd, &ev);
}

/* ---- State ---- */

int pci_device_save(struct pci_device *pd, struct state_writer *w)
{
	struct state_writer in;
	sw_init(&in);
	pthread_mutex_lock(&pd->lock);
	sw_bytes(&in, "config", pd->cfg, sizeof(pd->cfg));
	sw_uint(&in, "intx", (uint64_t)pd->intx_level);
	if (pd->msix)
		msix_save(pd, &in);
	pthread_mutex_unlock(&pd->lock);
	sw_blob(w, "pci", &in);
	int r = in.err ? in.err : w->err;
	sw_free(&in);
	return r;
}

int pci_device_load(struct pci_device *pd, const struct state_reader *r, struct terr *err)
{
	const void *blob;
	size_t len;
	int ret = sr_bytes(r, "pci", &blob, &len, err);
	if (ret)
		return ret;
	if (!blob)
		return 0;   /* nothing saved: keep the current state */
	struct state_reader in;
	ret = sr_init(&in, blob, len, r->what ? r->what : pd->name, err);
	if (ret)
		return ret;
	uint8_t *cfg = malloc(PCI_CFG_SPACE);
	uint64_t intx;
	if (!cfg) {
		ret = terr_set(err, ENOMEM, "%s: out of memory", pd->name);
		goto out;
	}
	memcpy(cfg, pd->cfg, PCI_CFG_SPACE);
	if ((ret = sr_bytes_exact(&in, "config", cfg, PCI_CFG_SPACE, err)) ||
	    (ret = sr_uint_max(&in, "intx", 0, 1, &intx, err)))
		goto out;
	/* the identity of the function must match: a snapshot of another device
	 * model (or another version of it with other ids) is refused */
	static const struct { unsigned off, size; const char *what; } ident[] = {
		{ PCI_VENDOR_ID, 2, "vendor id" }, { PCI_DEVICE_ID, 2, "device id" },
		{ PCI_CLASS_REVISION, 4, "class/revision" }, { PCI_HEADER_TYPE, 1, "header type" },
		{ PCI_SUBSYSTEM_VENDOR_ID, 4, "subsystem ids" }, { PCI_INTERRUPT_PIN, 1, "interrupt pin" },
	};
	for (unsigned i = 0; i < sizeof(ident) / sizeof(ident[0]); i++) {
		uint32_t a = get(cfg, ident[i].off, ident[i].size);
		uint32_t b = get(pd->cfg, ident[i].off, ident[i].size);
		if (a != b) {
			ret = terr_set(err, EINVAL, "%s: saved PCI %s 0x%x, this device has 0x%x",
				       r->what ? r->what : pd->name, ident[i].what, a, b);
			goto out;
		}
	}
	pthread_mutex_lock(&pd->lock);
	if (pd->msix && (ret = msix_load(pd, &in, err))) {
		pthread_mutex_unlock(&pd->lock);
		goto out;
	}
	/* restore what the guest could have written; the rest is the model's */
	for (unsigned o = 0; o < PCI_CFG_SPACE; o++) {
		uint8_t m = pd->wmask[o] | pd->w1cmask[o];
		pd->cfg[o] = (uint8_t)((pd->cfg[o] & ~m) | (cfg[o] & m));
	}
	pd->intx_level = (int)intx;
	pd->intx_out = -1;   /* derived: re-driven */
	update_intx(pd);
	update_mappings(pd);
	if (pd->msix)
		msix_control_changed(pd);
	struct bar_events ev;
	take_events(pd, &ev);
	pthread_mutex_unlock(&pd->lock);
	send_events(pd, &ev);
out:
	free(cfg);
	sr_free(&in);
	return ret;
}
