/* The PCI layer on a real /dev/kvm VM, through the buses a vCPU uses:
 * CF8/CFC and ECAM reach the same registers; BAR sizing, placement in the
 * ACPI windows, moves and COMMAND gating; the capability list; MSI-X table,
 * masking, pending bits and delivery into the local APIC through irqfd;
 * INTx status; save/load of a device's PCI state into a fresh VM. */
#include <errno.h>
#include <linux/kvm.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <cmocka.h>

#include "arch/x86/acpi.h"
#include "arch/x86/layout.h"
#include "core/kvm.h"
#include "core/vcpu.h"
#include "core/vm.h"
#include "pci/pci.h"

#define CF8 0xcf8
#define CFC 0xcfc

/* ---- a small device model ---- */

#define TD_VENDOR 0x1af4
#define TD_DEVICE 0x10ff
#define TD_NVEC   4

struct testdev {
	struct device dev;
	struct pci_device pci;
	uint32_t regs[16];         /* BAR 0 and BAR 4 registers */
	unsigned reads, writes;    /* accesses that reached the model */
	unsigned cfg_writes;
	int vndr_cap;
	unsigned map_events;       /* bar_mapped calls */
	bool bar_on[6];            /* what bar_mapped last said */
	uint64_t bar_at[6];
};

static void td_read(void *opaque, unsigned bar, uint64_t off, void *data, unsigned size)
{
	struct testdev *t = opaque;
	(void)bar;
	t->reads++;
	uint32_t v = t->regs[(off / 4) % 16];
	memcpy(data, &v, size > 4 ? 4 : size);
}

static void td_write(void *opaque, unsigned bar, uint64_t off, const void *data, unsigned size)
{
	struct testdev *t = opaque;
	(void)bar;
	t->writes++;
	uint32_t v = 0;
	memcpy(&v, data, size > 4 ? 4 : size);
	t->regs[(off / 4) % 16] = v;
}

static void td_cfg_write(struct pci_device *pd, unsigned off, unsigned size, uint32_t val)
{
	(void)off;
	(void)size;
	(void)val;
	((struct testdev *)pd->opaque)->cfg_writes++;
}

static void td_bar_mapped(struct pci_device *pd, unsigned bar, bool mapped, uint64_t addr)
{
	struct testdev *t = pd->opaque;
	t->map_events++;
	t->bar_on[bar] = mapped;
	t->bar_at[bar] = addr;
}

static const struct pci_device_ops td_pci_ops = { .config_write = td_cfg_write,
						  .bar_mapped = td_bar_mapped };

static int td_save(struct device *d, struct state_writer *w)
{
	return pci_device_save(&((struct testdev *)d)->pci, w);
}

static int td_load(struct device *d, const struct state_reader *r, struct terr *err)
{
	return pci_device_load(&((struct testdev *)d)->pci, r, err);
}

static void td_reset(struct device *d)
{
	pci_device_reset(&((struct testdev *)d)->pci);
}

static void td_destroy(struct device *d)
{
	pci_device_detach(&((struct testdev *)d)->pci);
	free(d);
}

static const struct device_ops td_ops = {
	.type = "pci-testdev", .state_version = 1, .state_min_version = 1,
	.reset = td_reset, .save = td_save, .load = td_load, .destroy = td_destroy,
};

/* BAR 0: 4 KiB MMIO32; BAR 2: 16 KiB MMIO64 with the MSI-X table at 0 and
 * the PBA at 0x800; BAR 4: 32 ports of I/O. A vendor capability, then MSI-X. */
static struct testdev *make_testdev(struct vm *vm, struct pci_bus *bus, uint16_t device_id,
				    int slot)
{
	struct terr err = { 0 };
	struct testdev *t = calloc(1, sizeof(*t));
	t->dev.ops = &td_ops;
	snprintf(t->dev.id, sizeof(t->dev.id), "testdev.%d", slot);
	pci_device_init(&t->pci, t->dev.id,
			&(struct pci_id){ .vendor = TD_VENDOR, .device = device_id,
					  .class_code = 0xff0000, .intx_pin = 1 },
			&td_pci_ops, t);
	if (pci_device_add_bar(&t->pci, 0, PCI_BAR_MEM32, false, 0x1000, td_read, td_write, t, &err) ||
	    pci_device_add_bar(&t->pci, 2, PCI_BAR_MEM64, true, 0x4000, td_read, td_write, t, &err) ||
	    pci_device_add_bar(&t->pci, 4, PCI_BAR_IO, false, 32, td_read, td_write, t, &err))
		fail_msg("%s", err.msg);
	t->vndr_cap = pci_add_capability(&t->pci, PCI_CAP_ID_VNDR, 8, &err);
	assert_true(t->vndr_cap >= 0x40);
	pci_config_set8(&t->pci, (unsigned)t->vndr_cap + 2, 8);
	pci_config_set8(&t->pci, (unsigned)t->vndr_cap + 4, 0x5a);
	pci_config_set_wmask(&t->pci, (unsigned)t->vndr_cap + 5, 1, 0x0f);
	if (pci_msix_init(&t->pci, TD_NVEC, 2, 0, 2, 0x800, &err) < 0)
		fail_msg("%s", err.msg);
	vm_add_device(vm, &t->dev);
	if (pci_device_attach(bus, &t->pci, slot, &err))
		fail_msg("%s", err.msg);
	return t;
}

/* ---- fixture ---- */

struct fixture {
	struct kvm_sys kvm;
	struct vm vm;
	struct acpi_config acpi;
	struct device *host;
	struct pci_bus *bus;
};

static int setup(void **ctx)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct terr err = { 0 };
	if (kvm_sys_open(&f->kvm, "/dev/kvm", &err) ||
	    vm_create(&f->vm, &f->kvm, 8 << 20, 1, NULL, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		free(f);
		return -1;
	}
	struct pci_host_params p;
	acpi_config_defaults(&f->acpi, &f->vm.mem, 1);
	pci_host_params_from_acpi(&p, &f->acpi);
	if (pci_host_create(&f->vm, &p, &f->host, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	f->bus = pci_host_bus(f->host);
	*ctx = f;
	return 0;
}

static int teardown(void **ctx)
{
	struct fixture *f = *ctx;
	vm_destroy(&f->vm);
	kvm_sys_close(&f->kvm);
	free(f);
	return 0;
}

static uint32_t pio_in(struct vm *vm, uint16_t port, unsigned size)
{
	uint32_t v = 0;
	bus_read(&vm->pio, port, &v, size);
	return v;
}

static void pio_out(struct vm *vm, uint16_t port, uint32_t v, unsigned size)
{
	bus_write(&vm->pio, port, &v, size);
}

static uint32_t cf8_read(struct vm *vm, unsigned dev, unsigned reg, unsigned size)
{
	pio_out(vm, CF8, 0x80000000u | dev << 11 | (reg & 0xfc), 4);
	return pio_in(vm, (uint16_t)(CFC + (reg & 3)), size);
}

static void cf8_write(struct vm *vm, unsigned dev, unsigned reg, unsigned size, uint32_t v)
{
	pio_out(vm, CF8, 0x80000000u | dev << 11 | (reg & 0xfc), 4);
	pio_out(vm, (uint16_t)(CFC + (reg & 3)), v, size);
}

static uint64_t ecam_addr(unsigned bus, unsigned dev, unsigned fn, unsigned reg)
{
	return LAYOUT_ECAM_START + ((uint64_t)bus << 20 | dev << 15 | fn << 12 | reg);
}

static uint32_t ecam_read(struct vm *vm, unsigned dev, unsigned reg, unsigned size)
{
	uint32_t v = 0;
	assert_int_equal(bus_read(&vm->mmio, ecam_addr(0, dev, 0, reg), &v, size), 0);
	return v;
}

static void ecam_write(struct vm *vm, unsigned dev, unsigned reg, unsigned size, uint32_t v)
{
	assert_int_equal(bus_write(&vm->mmio, ecam_addr(0, dev, 0, reg), &v, size), 0);
}

static int mmio_read32(struct vm *vm, uint64_t addr, uint32_t *v)
{
	return bus_read(&vm->mmio, addr, v, 4);
}

/* ---- tests ---- */

static void test_host_bridge_cf8_and_ecam(void **ctx)
{
	struct fixture *f = *ctx;
	struct vm *vm = &f->vm;
	uint32_t id = (uint32_t)PCI_HOST_DEVICE << 16 | PCI_HOST_VENDOR;
	assert_int_equal(cf8_read(vm, 0, 0, 4), id);
	assert_int_equal(ecam_read(vm, 0, 0, 4), id);
	assert_int_equal(cf8_read(vm, 0, 2, 2), PCI_HOST_DEVICE);
	assert_int_equal(ecam_read(vm, 0, 2, 2), PCI_HOST_DEVICE);
	assert_int_equal(cf8_read(vm, 0, 1, 1), PCI_HOST_VENDOR >> 8);
	assert_int_equal(cf8_read(vm, 0, PCI_CLASS_REVISION, 4) >> 8, PCI_HOST_CLASS);
	assert_int_equal(ecam_read(vm, 0, PCI_CLASS_DEVICE, 2), PCI_HOST_CLASS >> 8);
	assert_int_equal(ecam_read(vm, 0, PCI_HEADER_TYPE, 1), 0);
	/* a write through one mechanism is seen through the other */
	cf8_write(vm, 0, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	assert_int_equal(ecam_read(vm, 0, PCI_COMMAND, 2), PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	ecam_write(vm, 0, PCI_CACHE_LINE_SIZE, 1, 0x10);
	assert_int_equal(cf8_read(vm, 0, PCI_CACHE_LINE_SIZE, 1), 0x10);
	/* read-only ids stay */
	ecam_write(vm, 0, PCI_VENDOR_ID, 4, 0x12345678);
	assert_int_equal(cf8_read(vm, 0, 0, 4), id);
	/* the address register reads back; an empty slot, another function or
	 * another bus, and a disabled address all read as all ones */
	pio_out(vm, CF8, 0x80000000u | 3 << 11, 4);
	assert_int_equal(pio_in(vm, CF8, 4), 0x80000000u | 3 << 11);
	assert_int_equal(cf8_read(vm, 5, 0, 4), 0xffffffffu);
	uint32_t v;
	assert_int_equal(bus_read(&vm->mmio, ecam_addr(0, 0, 1, 0), &v, 4), 0);
	assert_int_equal(v, 0xffffffffu);
	assert_int_equal(bus_read(&vm->mmio, ecam_addr(1, 0, 0, 0), &v, 4), 0);
	assert_int_equal(v, 0xffffffffu);
	pio_out(vm, CF8, 0, 4);
	assert_int_equal(pio_in(vm, CFC, 4), 0xffffffffu);
	/* extended configuration space exists through ECAM only, and is empty */
	assert_int_equal(ecam_read(vm, 0, 0x100, 4), 0);
	/* 0xcf9 resets */
	assert_false(vm->exit_req);
	pio_out(vm, 0xcf9, 0x02, 1);
	assert_false(vm->exit_req);
	pio_out(vm, 0xcf9, 0x06, 1);
	assert_true(vm->exit_req);
	assert_int_equal(vm->exit_reason, VM_EXIT_RESET);
}

static void test_windows_and_placement(void **ctx)
{
	struct fixture *f = *ctx;
	struct testdev *a = make_testdev(&f->vm, f->bus, TD_DEVICE, 3);
	struct testdev *b = make_testdev(&f->vm, f->bus, TD_DEVICE, -1);
	assert_ptr_equal(pci_bus_device(f->bus, 3), &a->pci);
	assert_int_equal(b->pci.slot, 1);   /* first free slot after the bridge */
	struct testdev *ds[] = { a, b };
	for (int i = 0; i < 2; i++) {
		struct pci_device *pd = &ds[i]->pci;
		uint64_t m32 = pci_bar_address(pd, 0), m64 = pci_bar_address(pd, 2);
		uint64_t io = pci_bar_address(pd, 4);
		assert_true(m32 >= f->acpi.mmio32_base && m32 + 0x1000 <= f->acpi.mmio32_base + f->acpi.mmio32_size);
		assert_int_equal(m32 & 0xfff, 0);
		assert_true(m64 >= f->acpi.mmio64_base && m64 + 0x4000 <= f->acpi.mmio64_base + f->acpi.mmio64_size);
		assert_true(m64 >= (1ull << 32));
		assert_int_equal(m64 & 0x3fff, 0);
		assert_true(io >= f->acpi.pci_io_base && io + 32 <= 0x10000u);
		assert_int_equal(io & 31, 0);
	}
	assert_true(pci_bar_address(&a->pci, 0) != pci_bar_address(&b->pci, 0));
	assert_true(pci_bar_address(&a->pci, 4) != pci_bar_address(&b->pci, 4));
	/* interrupt line and pin follow the _PRT swizzle */
	assert_int_equal(ecam_read(&f->vm, 3, PCI_INTERRUPT_PIN, 1), 1);
	assert_int_equal(ecam_read(&f->vm, 3, PCI_INTERRUPT_LINE, 1), pci_intx_gsi(3, 0));
	assert_int_equal(pci_intx_gsi(3, 0), acpi_pci_intx_gsi(3, 0));
	/* a taken slot is refused */
	struct terr err = { 0 };
	struct pci_device extra;
	pci_device_init(&extra, "extra", &(struct pci_id){ .vendor = 1, .device = 2 }, NULL, NULL);
	assert_int_equal(pci_device_attach(f->bus, &extra, 3, &err), -EBUSY);
	assert_non_null(strstr(err.msg, "testdev.3"));
	pci_device_detach(&extra);
}

static void test_bar_sizing(void **ctx)
{
	struct fixture *f = *ctx;
	struct vm *vm = &f->vm;
	make_testdev(vm, f->bus, TD_DEVICE, 2);
	uint32_t bar0 = ecam_read(vm, 2, PCI_BASE_ADDRESS_0, 4);
	assert_int_equal(bar0 & 0xf, 0);   /* 32-bit, not prefetchable */
	ecam_write(vm, 2, PCI_BASE_ADDRESS_0, 4, 0xffffffff);
	assert_int_equal(ecam_read(vm, 2, PCI_BASE_ADDRESS_0, 4), 0xfffff000u);
	ecam_write(vm, 2, PCI_BASE_ADDRESS_0, 4, bar0);
	assert_int_equal(ecam_read(vm, 2, PCI_BASE_ADDRESS_0, 4), bar0);
	/* 64-bit prefetchable: type bits, and the high half sizes too */
	uint32_t lo = cf8_read(vm, 2, PCI_BASE_ADDRESS_2, 4), hi = cf8_read(vm, 2, PCI_BASE_ADDRESS_3, 4);
	assert_int_equal(lo & 0xf, PCI_BASE_ADDRESS_MEM_TYPE_64 | PCI_BASE_ADDRESS_MEM_PREFETCH);
	cf8_write(vm, 2, PCI_BASE_ADDRESS_2, 4, 0xffffffff);
	cf8_write(vm, 2, PCI_BASE_ADDRESS_3, 4, 0xffffffff);
	assert_int_equal(cf8_read(vm, 2, PCI_BASE_ADDRESS_2, 4), 0xffffc00cu);
	assert_int_equal(cf8_read(vm, 2, PCI_BASE_ADDRESS_3, 4), 0xffffffffu);
	cf8_write(vm, 2, PCI_BASE_ADDRESS_2, 4, lo);
	cf8_write(vm, 2, PCI_BASE_ADDRESS_3, 4, hi);
	/* I/O: bit 0 set, 16-bit decode */
	uint32_t io = ecam_read(vm, 2, PCI_BASE_ADDRESS_4, 4);
	assert_int_equal(io & 3, PCI_BASE_ADDRESS_SPACE_IO);
	ecam_write(vm, 2, PCI_BASE_ADDRESS_4, 4, 0xffffffff);
	assert_int_equal(ecam_read(vm, 2, PCI_BASE_ADDRESS_4, 4), 0x0000ffe1u);
	/* unused BARs and the ROM BAR read 0 and stay 0 */
	ecam_write(vm, 2, PCI_BASE_ADDRESS_1, 4, 0xffffffff);
	assert_int_equal(ecam_read(vm, 2, PCI_BASE_ADDRESS_1, 4), 0);
	ecam_write(vm, 2, PCI_ROM_ADDRESS, 4, 0xffffffff);
	assert_int_equal(ecam_read(vm, 2, PCI_ROM_ADDRESS, 4), 0);
}

static void test_bar_gating_and_moves(void **ctx)
{
	struct fixture *f = *ctx;
	struct vm *vm = &f->vm;
	struct testdev *t = make_testdev(vm, f->bus, TD_DEVICE, 4);
	uint64_t m32 = pci_bar_address(&t->pci, 0);
	uint16_t io = (uint16_t)pci_bar_address(&t->pci, 4);
	uint32_t v = 0x1234abcd;
	/* COMMAND is 0 at power-on: nothing decodes */
	assert_int_equal(bus_write(&vm->mmio, m32 + 8, &v, 4), -ENOENT);
	assert_int_equal(bus_write(&vm->pio, io, &v, 4), -ENOENT);
	assert_int_equal(t->writes, 0);
	/* memory decode on: MMIO BARs answer, the I/O BAR still does not */
	assert_int_equal(t->map_events, 0);
	ecam_write(vm, 4, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
	assert_int_equal(t->map_events, 2);   /* BAR 0 and BAR 2 */
	assert_true(t->bar_on[0] && t->bar_on[2] && !t->bar_on[4]);
	assert_int_equal(t->bar_at[0], m32);
	assert_int_equal(bus_write(&vm->mmio, m32 + 8, &v, 4), 0);
	assert_int_equal(t->regs[2], 0x1234abcd);
	uint32_t r = 0;
	assert_int_equal(mmio_read32(vm, m32 + 8, &r), 0);
	assert_int_equal(r, 0x1234abcd);
	assert_int_equal(bus_write(&vm->pio, io, &v, 4), -ENOENT);
	ecam_write(vm, 4, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_IO);
	assert_int_equal(bus_write(&vm->pio, io + 4, &v, 2), 0);
	assert_int_equal(t->regs[1], 0xabcd);
	/* move BAR 0 while decoding: the old address misses, the new one hits */
	uint64_t to = f->acpi.mmio32_base + 0x100000;
	ecam_write(vm, 4, PCI_BASE_ADDRESS_0, 4, (uint32_t)to);
	assert_int_equal(pci_bar_address(&t->pci, 0), to);
	assert_true(t->bar_on[0]);
	assert_int_equal(t->bar_at[0], to);   /* the model heard of the move */
	assert_int_equal(mmio_read32(vm, m32 + 8, &r), -ENOENT);
	assert_int_equal(mmio_read32(vm, to + 8, &r), 0);
	assert_int_equal(r, 0x1234abcd);
	/* move the I/O BAR with a 16-bit write */
	cf8_write(vm, 4, PCI_BASE_ADDRESS_4, 2, 0xe000);
	assert_int_equal(bus_read(&vm->pio, io, &r, 4), -ENOENT);
	assert_int_equal(bus_read(&vm->pio, 0xe004, &r, 2), 0);
	assert_int_equal(r & 0xffff, 0xabcd);
	/* move the 64-bit BAR below 4 GiB in two halves */
	uint64_t m64 = f->acpi.mmio32_base + 0x200000;
	ecam_write(vm, 4, PCI_BASE_ADDRESS_3, 4, 0);
	ecam_write(vm, 4, PCI_BASE_ADDRESS_2, 4, (uint32_t)m64);
	assert_int_equal(pci_bar_address(&t->pci, 2), m64);
	unsigned before = t->writes;
	assert_int_equal(bus_write(&vm->mmio, m64 + 0x1000, &v, 4), 0);   /* past the MSI-X table and PBA */
	assert_int_equal(t->writes, before + 1);
	/* memory decode off: both MMIO BARs vanish, I/O stays */
	ecam_write(vm, 4, PCI_COMMAND, 2, PCI_COMMAND_IO);
	assert_int_equal(mmio_read32(vm, to, &r), -ENOENT);
	assert_int_equal(mmio_read32(vm, m64 + 0x1000, &r), -ENOENT);
	assert_false(t->bar_on[0] || t->bar_on[2]);
	assert_true(t->bar_on[4]);
	assert_int_equal(bus_read(&vm->pio, 0xe000, &r, 1), 0);
	/* a guest that stacks one BAR on another gets the second one undecoded,
	 * and tern keeps running */
	ecam_write(vm, 4, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
	ecam_write(vm, 4, PCI_BASE_ADDRESS_2, 4, (uint32_t)to);
	assert_int_equal(mmio_read32(vm, to + 8, &r), 0);
	/* reset: back to the placed addresses, nothing decoded */
	td_reset(&t->dev);
	assert_int_equal(pci_bar_address(&t->pci, 0), m32);
	assert_int_equal(mmio_read32(vm, to + 8, &r), -ENOENT);
	assert_int_equal(mmio_read32(vm, m32 + 8, &r), -ENOENT);
	assert_true(t->cfg_writes > 0);   /* the model saw configuration writes */
}

static void test_capability_list(void **ctx)
{
	struct fixture *f = *ctx;
	struct vm *vm = &f->vm;
	struct testdev *t = make_testdev(vm, f->bus, TD_DEVICE, 6);
	assert_true(ecam_read(vm, 6, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
	unsigned ids[8], offs[8], n = 0;
	unsigned off = cf8_read(vm, 6, PCI_CAPABILITY_LIST, 1);
	while (off && n < 8) {
		assert_true(off >= 0x40 && (off & 3) == 0);
		offs[n] = off;
		ids[n++] = cf8_read(vm, 6, off, 1);
		off = cf8_read(vm, 6, off + 1, 1);
	}
	assert_int_equal(n, 2);
	assert_int_equal(ids[0], PCI_CAP_ID_VNDR);
	assert_int_equal(ids[1], PCI_CAP_ID_MSIX);
	assert_int_equal(offs[0], (unsigned)t->vndr_cap);
	assert_int_equal(pci_find_capability(&t->pci, PCI_CAP_ID_MSIX, 0), offs[1]);
	assert_int_equal(pci_find_capability(&t->pci, PCI_CAP_ID_VNDR, 0), offs[0]);
	assert_int_equal(pci_find_capability(&t->pci, PCI_CAP_ID_EXP, 0), 0);
	/* capability bodies: read-only except what the model opened */
	assert_int_equal(ecam_read(vm, 6, offs[0] + 4, 1), 0x5a);
	ecam_write(vm, 6, offs[0] + 4, 2, 0xffff);
	assert_int_equal(ecam_read(vm, 6, offs[0] + 4, 2), 0x0f5a);
	ecam_write(vm, 6, offs[0], 2, 0);   /* the list links cannot be broken */
	assert_int_equal(ecam_read(vm, 6, offs[0] + 1, 1), offs[1]);
	/* MSI-X: table size N-1, table in BAR 2 at 0, PBA in BAR 2 at 0x800 */
	assert_int_equal(ecam_read(vm, 6, offs[1] + PCI_MSIX_FLAGS, 2), TD_NVEC - 1);
	assert_int_equal(ecam_read(vm, 6, offs[1] + PCI_MSIX_TABLE, 4), 2);
	assert_int_equal(ecam_read(vm, 6, offs[1] + PCI_MSIX_PBA, 4), 0x800 | 2);
	/* STATUS error bits are write-1-to-clear, the rest read-only */
	ecam_write(vm, 6, PCI_STATUS, 2, 0xffff);
	assert_int_equal(ecam_read(vm, 6, PCI_STATUS, 2), PCI_STATUS_CAP_LIST);
}

/* ---- MSI-X ---- */

#define VEC 0x45

static void enable_lapic(struct vm *vm)
{
	struct kvm_lapic_state s;
	assert_int_equal(ioctl(vm->vcpus[0].fd, KVM_GET_LAPIC, &s), 0);
	uint32_t svr;
	memcpy(&svr, s.regs + 0xf0, 4);
	svr |= 0x100;   /* software enable */
	memcpy(s.regs + 0xf0, &svr, 4);
	assert_int_equal(ioctl(vm->vcpus[0].fd, KVM_SET_LAPIC, &s), 0);
}

static bool irr_has(struct vm *vm, unsigned vec)
{
	struct kvm_lapic_state s;
	assert_int_equal(ioctl(vm->vcpus[0].fd, KVM_GET_LAPIC, &s), 0);
	uint32_t irr;
	memcpy(&irr, s.regs + 0x200 + (vec / 32) * 0x10, 4);
	return (irr >> (vec % 32)) & 1;
}

/* irqfd injection may complete on a kernel worker: give it a moment */
static bool wait_irr(struct vm *vm, unsigned vec)
{
	for (int i = 0; i < 200; i++) {
		if (irr_has(vm, vec))
			return true;
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	return false;
}

static void clear_irr(struct vm *vm)
{
	struct kvm_lapic_state s;
	assert_int_equal(ioctl(vm->vcpus[0].fd, KVM_GET_LAPIC, &s), 0);
	memset(s.regs + 0x200, 0, 0x80);
	assert_int_equal(ioctl(vm->vcpus[0].fd, KVM_SET_LAPIC, &s), 0);
}

static void table_write(struct vm *vm, uint64_t bar2, unsigned vec, unsigned field, uint32_t v)
{
	assert_int_equal(bus_write(&vm->mmio, bar2 + vec * 16 + field, &v, 4), 0);
}

static uint32_t table_read(struct vm *vm, uint64_t bar2, unsigned vec, unsigned field)
{
	uint32_t v = 0;
	assert_int_equal(bus_read(&vm->mmio, bar2 + vec * 16 + field, &v, 4), 0);
	return v;
}

static uint64_t pba_read(struct vm *vm, uint64_t bar2)
{
	uint64_t v = 0;
	assert_int_equal(bus_read(&vm->mmio, bar2 + 0x800, &v, 8), 0);
	return v;
}

static void test_msix(void **ctx)
{
	struct fixture *f = *ctx;
	struct vm *vm = &f->vm;
	struct testdev *t = make_testdev(vm, f->bus, TD_DEVICE, 7);
	struct pci_device *pd = &t->pci;
	unsigned cap = pci_find_capability(pd, PCI_CAP_ID_MSIX, 0);
	uint64_t bar2 = pci_bar_address(pd, 2);
	enable_lapic(vm);
	assert_false(irr_has(vm, VEC));
	ecam_write(vm, 7, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);

	/* power-on: every vector masked, nothing pending, MSI-X off */
	for (unsigned v = 0; v < TD_NVEC; v++)
		assert_int_equal(table_read(vm, bar2, v, 12), 1);
	assert_int_equal(pba_read(vm, bar2), 0);
	assert_false(pci_msix_enabled(pd));
	assert_int_equal(pci_msix_notify(pd, 1), -EAGAIN);
	assert_int_equal(pci_msix_notify(pd, TD_NVEC), -EINVAL);
	/* each vector has its own MSI GSI above the IOAPIC's */
	for (unsigned v = 0; v < TD_NVEC; v++) {
		assert_true(pci_msix_vector_gsi(pd, v) >= 24);
		for (unsigned u = 0; u < v; u++)
			assert_true(pci_msix_vector_gsi(pd, u) != pci_msix_vector_gsi(pd, v));
	}

	/* program vector 1: LAPIC 0, fixed, vector VEC; still masked */
	table_write(vm, bar2, 1, 0, 0xfee00000u);
	table_write(vm, bar2, 1, 4, 0);
	table_write(vm, bar2, 1, 8, VEC);
	assert_int_equal(table_read(vm, bar2, 1, 0), 0xfee00000u);
	assert_int_equal(table_read(vm, bar2, 1, 8), VEC);
	/* reserved vector-control bits read 0 */
	table_write(vm, bar2, 1, 12, 0xfffffffe | 1);
	assert_int_equal(table_read(vm, bar2, 1, 12), 1);
	/* 64-bit table access */
	uint64_t q = 0;
	assert_int_equal(bus_read(&vm->mmio, bar2 + 16, &q, 8), 0);
	assert_int_equal(q, 0xfee00000u);

	/* enable MSI-X with the function masked: a message becomes pending */
	ecam_write(vm, 7, cap + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
	assert_true(pci_msix_enabled(pd));
	/* the table-size field is read-only */
	assert_int_equal(ecam_read(vm, 7, cap + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_QSIZE, TD_NVEC - 1);
	table_write(vm, bar2, 1, 12, 0);   /* vector unmasked, function still masked */
	assert_int_equal(pci_msix_notify(pd, 1), 1);
	assert_true(pci_msix_pending(pd, 1));
	assert_int_equal(pba_read(vm, bar2), 1u << 1);
	/* the PBA is read-only */
	uint64_t ones = ~0ull;
	bus_write(&vm->mmio, bar2 + 0x800, &ones, 8);
	assert_int_equal(pba_read(vm, bar2), 1u << 1);
	struct timespec ts = { 0, 20000000 };
	nanosleep(&ts, NULL);
	assert_false(irr_has(vm, VEC));
	/* unmasking the function delivers the pending message and clears the bit */
	ecam_write(vm, 7, cap + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE);
	assert_true(wait_irr(vm, VEC));
	assert_int_equal(pba_read(vm, bar2), 0);
	clear_irr(vm);

	/* unmasked: delivered at once through the irqfd */
	assert_int_equal(pci_msix_notify(pd, 1), 0);
	assert_true(wait_irr(vm, VEC));
	clear_irr(vm);

	/* vector mask: pending, then delivered by unmasking the vector */
	table_write(vm, bar2, 1, 12, 1);
	assert_int_equal(pci_msix_notify(pd, 1), 1);
	assert_int_equal(pba_read(vm, bar2), 1u << 1);
	nanosleep(&ts, NULL);
	assert_false(irr_has(vm, VEC));
	/* reprogram while masked: the new vector is what arrives */
	table_write(vm, bar2, 1, 8, VEC + 1);
	table_write(vm, bar2, 1, 12, 0);
	assert_true(wait_irr(vm, VEC + 1));
	assert_false(irr_has(vm, VEC));
	assert_int_equal(pba_read(vm, bar2), 0);
	clear_irr(vm);
	/* routes went to KVM, batched: not one commit per table write */
	unsigned commits = pci_bus_gsi(f->bus)->commits;
	assert_true(commits >= 2 && commits < 8);

	/* disabling MSI-X stops delivery */
	ecam_write(vm, 7, cap + PCI_MSIX_FLAGS, 2, 0);
	assert_int_equal(pci_msix_notify(pd, 1), -EAGAIN);
	nanosleep(&ts, NULL);
	assert_false(irr_has(vm, VEC + 1));
}

static void test_intx(void **ctx)
{
	struct fixture *f = *ctx;
	struct vm *vm = &f->vm;
	struct testdev *t = make_testdev(vm, f->bus, TD_DEVICE, 9);
	pci_set_irq(&t->pci, 1);
	assert_true(ecam_read(vm, 9, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	ecam_write(vm, 9, PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE);
	assert_true(ecam_read(vm, 9, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);   /* status stays */
	assert_int_equal(t->pci.intx_out, 0);
	ecam_write(vm, 9, PCI_COMMAND, 2, 0);
	assert_int_equal(t->pci.intx_out, 1);
	pci_set_irq(&t->pci, 0);
	assert_false(ecam_read(vm, 9, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	assert_int_equal(t->pci.intx_out, 0);
}

/* save in one VM, load into a fresh VM with the same machine: the BARs sit
 * where the guest moved them, decode as the guest enabled them, and the
 * MSI-X table and pending bits are back. */
static void test_save_load(void **ctx)
{
	struct fixture *f = *ctx;
	struct vm *vm = &f->vm;
	struct terr err = { 0 };
	struct testdev *t = make_testdev(vm, f->bus, TD_DEVICE, 5);
	uint64_t to = f->acpi.mmio32_base + 0x300000;
	ecam_write(vm, 5, PCI_BASE_ADDRESS_0, 4, (uint32_t)to);
	ecam_write(vm, 5, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	unsigned cap = pci_find_capability(&t->pci, PCI_CAP_ID_MSIX, 0);
	uint64_t bar2 = pci_bar_address(&t->pci, 2);
	table_write(vm, bar2, 2, 0, 0xfee00000u);
	table_write(vm, bar2, 2, 8, 0x51);
	ecam_write(vm, 5, cap + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE);
	assert_int_equal(pci_msix_notify(&t->pci, 2), 1);   /* masked: pending */
	pci_set_irq(&t->pci, 1);
	struct state_writer w;
	sw_init(&w);
	assert_int_equal(t->dev.ops->save(&t->dev, &w), 0);

	struct fixture *g = NULL;
	assert_int_equal(setup((void **)&g), 0);
	struct testdev *u = make_testdev(&g->vm, g->bus, TD_DEVICE, 5);
	enable_lapic(&g->vm);
	struct state_reader r;
	assert_int_equal(sr_init(&r, w.buf, w.len, u->dev.id, &err), 0);
	if (u->dev.ops->load(&u->dev, &r, &err))
		fail_msg("%s", err.msg);
	sr_free(&r);
	uint32_t v = 0;
	assert_int_equal(ecam_read(&g->vm, 5, PCI_COMMAND, 2), PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	assert_int_equal(pci_bar_address(&u->pci, 0), to);
	assert_int_equal(mmio_read32(&g->vm, to, &v), 0);
	assert_int_equal(table_read(&g->vm, bar2, 2, 8), 0x51);
	assert_true(pci_msix_pending(&u->pci, 2));
	assert_true(ecam_read(&g->vm, 5, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	/* the restored routes work: unmask, and the pending message arrives */
	table_write(&g->vm, bar2, 2, 12, 0);
	assert_true(wait_irr(&g->vm, 0x51));
	assert_false(pci_msix_pending(&u->pci, 2));

	/* a device with another id refuses the state, naming itself */
	struct testdev *x = make_testdev(&g->vm, g->bus, TD_DEVICE + 1, 6);
	assert_int_equal(sr_init(&r, w.buf, w.len, x->dev.id, &err), 0);
	assert_true(x->dev.ops->load(&x->dev, &r, &err) < 0);
	assert_non_null(strstr(err.msg, "testdev.6"));
	assert_non_null(strstr(err.msg, "device id"));
	sr_free(&r);
	sw_free(&w);
	teardown((void **)&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_host_bridge_cf8_and_ecam, setup, teardown),
		cmocka_unit_test_setup_teardown(test_windows_and_placement, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bar_sizing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bar_gating_and_moves, setup, teardown),
		cmocka_unit_test_setup_teardown(test_capability_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_msix, setup, teardown),
		cmocka_unit_test_setup_teardown(test_intx, setup, teardown),
		cmocka_unit_test_setup_teardown(test_save_load, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
