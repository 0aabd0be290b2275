/* virtio-rng behind the modern virtio-pci transport on a real /dev/kvm VM,
 * driven the way Linux's virtio_pci_modern driver drives it, through the
 * MMIO bus a vCPU exit reaches: capabilities, feature negotiation, queue
 * set-up, entropy in the used ring, INTx + ISR and MSI-X (pending bits),
 * ioeventfd registration following the BAR, the PCI_CFG window, a hostile
 * queue set-up (NEEDS_RESET + configuration interrupt), and a save/load into
 * a fresh VM that continues the stream. */
#include <errno.h>
#include <linux/kvm.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <cmocka.h>

#include "arch/x86/acpi.h"
#include "core/kvm.h"
#include "core/vm.h"
#include "pci/pci.h"
#include "virtio/virtio_dev.h"
#include "virtio/virtio_pci.h"
#include "virtio/virtio_rng.h"

#define SLOT 3
#define QS 8
#define DESC  0x100000ull
#define AVAIL 0x101000ull
#define USED  0x102000ull
#define BUF   0x110000ull

struct fixture {
	struct kvm_sys kvm;
	struct vm vm;
	struct acpi_config acpi;
	struct device *host, *rng;
	struct pci_bus *bus;
	struct pci_device *pd;
	uint64_t bar;
};

static int make_vm(struct fixture *f)
{
	struct terr err = { 0 };
	if (kvm_sys_open(&f->kvm, "/dev/kvm", &err) ||
	    vm_create(&f->vm, &f->kvm, 8 << 20, 1, NULL, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	struct pci_host_params p;
	acpi_config_defaults(&f->acpi, &f->vm.mem, 1);
	pci_host_params_from_acpi(&p, &f->acpi);
	if (pci_host_create(&f->vm, &p, &f->host, &err) ||
	    virtio_rng_create(&f->vm, pci_host_bus(f->host), "rng.0", SLOT, &f->rng, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	f->bus = pci_host_bus(f->host);
	f->pd = pci_bus_device(f->bus, SLOT);
	return f->pd ? 0 : -1;
}

static int setup(void **ctx)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (make_vm(f)) {
		free(f);
		return -1;
	}
	*ctx = f;
	return 0;
}

static void free_vm(struct fixture *f)
{
	vm_destroy(&f->vm);
	kvm_sys_close(&f->kvm);
}

static int teardown(void **ctx)
{
	struct fixture *f = *ctx;
	free_vm(f);
	free(f);
	return 0;
}

/* --- the driver's side --- */

static void enable_decoding(struct fixture *f)
{
	pci_config_write(f->pd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	f->bar = pci_bar_address(f->pd, VIRTIO_PCI_BAR);
	assert_true(f->bar != 0);
}

static uint64_t rd(struct fixture *f, uint64_t off, unsigned size)
{
	uint64_t v = 0;
	assert_int_equal(bus_read(&f->vm.mmio, f->bar + off, &v, size), 0);
	return v;
}

static void wr(struct fixture *f, uint64_t off, unsigned size, uint64_t v)
{
	assert_int_equal(bus_write(&f->vm.mmio, f->bar + off, &v, size), 0);
}

static void wr64(struct fixture *f, unsigned off, uint64_t v)
{
	wr(f, off, 4, (uint32_t)v);
	wr(f, off + 4, 4, (uint32_t)(v >> 32));
}

static uint8_t status(struct fixture *f)
{
	return (uint8_t)rd(f, VIRTIO_PCI_COMMON_STATUS, 1);
}

static void *ram(struct fixture *f, uint64_t gpa)
{
	return guest_mem_ptr(&f->vm.mem, gpa, 1);
}

static void w16(struct fixture *f, uint64_t gpa, uint16_t v)
{
	memcpy(ram(f, gpa), &v, 2);
}

static uint16_t r16(struct fixture *f, uint64_t gpa)
{
	uint16_t v;
	memcpy(&v, ram(f, gpa), 2);
	return v;
}

static uint32_t r32(struct fixture *f, uint64_t gpa)
{
	uint32_t v;
	memcpy(&v, ram(f, gpa), 4);
	return v;
}

/* Linux's order: reset, ACK, DRIVER, features, FEATURES_OK, queues, DRIVER_OK. */
static void bring_up(struct fixture *f, uint64_t features, uint16_t qsize)
{
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, 0);
	assert_int_equal(status(f), 0);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(f, VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
	assert_true(rd(f, VIRTIO_PCI_COMMON_DF, 4) & 1);   /* VERSION_1 */
	wr(f, VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
	wr(f, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)features);
	wr(f, VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
	wr(f, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)(features >> 32));
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	   VIRTIO_STATUS_FEATURES_OK);
	assert_true(status(f) & VIRTIO_STATUS_FEATURES_OK);
	assert_true(rd(f, VIRTIO_PCI_COMMON_NUMQ, 2) >= 1);
	wr(f, VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
	assert_true(rd(f, VIRTIO_PCI_COMMON_Q_SIZE, 2) >= QS);
	wr(f, VIRTIO_PCI_COMMON_Q_SIZE, 2, qsize);
	memset(ram(f, DESC), 0, 0x3000);
	wr64(f, VIRTIO_PCI_COMMON_Q_DESCLO, DESC);
	wr64(f, VIRTIO_PCI_COMMON_Q_AVAILLO, AVAIL);
	wr64(f, VIRTIO_PCI_COMMON_Q_USEDLO, USED);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_Q_DESCLO, 8), DESC);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_Q_NOFF, 2), 0);
	wr(f, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 1);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	   VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	assert_true(status(f) & VIRTIO_STATUS_DRIVER_OK);
}

/* Post one writable buffer of len bytes in descriptor `d` and notify. */
static void post(struct fixture *f, uint16_t d, uint32_t len)
{
	uint8_t *p = ram(f, DESC + 16 * d);
	uint64_t a = BUF + 0x1000ull * d;
	uint16_t flags = VIRTQ_DESC_F_WRITE, next = 0;
	memcpy(p, &a, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
	memset(ram(f, a), 0, len);
	uint16_t idx = r16(f, AVAIL + 2);
	w16(f, AVAIL + 4 + 2 * (idx % QS), d);
	w16(f, AVAIL + 2, (uint16_t)(idx + 1));
	wr(f, VIRTIO_PCI_NOTIFY_OFF, 2, 0);   /* queue 0: MMIO exit path */
}

static bool nonzero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return true;
	return false;
}

static unsigned find_vndr_cap(struct pci_device *pd, uint8_t type)
{
	for (unsigned c = pci_find_capability(pd, PCI_CAP_ID_VNDR, 0); c;
	     c = pci_find_capability(pd, PCI_CAP_ID_VNDR, c))
		if (pci_config_get(pd, c + 3, 1) == type)
			return c;
	return 0;
}

/* --- tests --- */

static void test_identity_and_caps(void **ctx)
{
	struct fixture *f = *ctx;
	struct pci_device *pd = f->pd;
	assert_int_equal(pci_config_read(pd, PCI_VENDOR_ID, 2), 0x1af4);
	assert_int_equal(pci_config_read(pd, PCI_DEVICE_ID, 2), 0x1044);
	assert_int_equal(pci_config_read(pd, PCI_REVISION_ID, 1), 1);
	assert_int_equal(pci_config_read(pd, PCI_SUBSYSTEM_VENDOR_ID, 2), 0x1af4);
	assert_int_equal(pci_config_read(pd, PCI_CLASS_DEVICE, 2), 0xff00);
	static const struct { uint8_t type; uint32_t off; } want[] = {
		{ VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_COMMON_OFF },
		{ VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_ISR_OFF },
		{ VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_DEVICE_OFF },
		{ VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_NOTIFY_OFF },
		{ VIRTIO_PCI_CAP_PCI_CFG, 0 },
	};
	for (unsigned i = 0; i < 5; i++) {
		unsigned c = find_vndr_cap(pd, want[i].type);
		assert_true(c >= 0x40);
		assert_int_equal(pci_config_read(pd, c + 2, 1), want[i].type == VIRTIO_PCI_CAP_NOTIFY_CFG ||
				 want[i].type == VIRTIO_PCI_CAP_PCI_CFG ? 20 : 16);
		if (want[i].type != VIRTIO_PCI_CAP_PCI_CFG) {
			assert_int_equal(pci_config_read(pd, c + 4, 1), VIRTIO_PCI_BAR);
			assert_int_equal(pci_config_read(pd, c + 8, 4), want[i].off);
		}
		if (want[i].type == VIRTIO_PCI_CAP_NOTIFY_CFG)
			assert_int_equal(pci_config_read(pd, c + 16, 4), VIRTIO_PCI_NOTIFY_MULT);
	}
	assert_true(pci_find_capability(pd, PCI_CAP_ID_MSIX, 0) != 0);
	/* one queue of VIRTIO_RNG_QUEUE_SIZE, no device features beyond the core's */
	enable_decoding(f);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_NUMQ, 2), 1);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_Q_SIZE, 2), VIRTIO_RNG_QUEUE_SIZE);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_DF, 4),
			 (1u << VIRTIO_F_INDIRECT_DESC) | (1u << VIRTIO_F_EVENT_IDX));
	pci_config_write(pd, PCI_COMMAND, 2, 0);
	/* BAR 4 is a 64-bit memory BAR of 32 KiB */
	pci_config_write(pd, PCI_BASE_ADDRESS_4, 4, 0xffffffff);
	assert_int_equal(pci_config_read(pd, PCI_BASE_ADDRESS_4, 4) & ~0xfu, (uint32_t)~(VIRTIO_PCI_BAR_SIZE - 1));
	assert_int_equal(pci_config_read(pd, PCI_BASE_ADDRESS_4, 4) & 0x6, PCI_BASE_ADDRESS_MEM_TYPE_64);
}

static void test_entropy_intx(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	bring_up(f, 1ull << VIRTIO_F_VERSION_1, QS);
	post(f, 0, 64);
	assert_int_equal(r16(f, USED + 2), 1);
	assert_int_equal(r32(f, USED + 4), 0);
	assert_int_equal(r32(f, USED + 8), 64);
	assert_true(nonzero(ram(f, BUF), 64));
	/* MSI-X is off: INTx and ISR bit 0 */
	assert_true(pci_config_read(f->pd, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	assert_int_equal(rd(f, VIRTIO_PCI_ISR_OFF, 1), VIRTIO_PCI_ISR_QUEUE);
	assert_false(pci_config_read(f->pd, PCI_STATUS, 2) & PCI_STATUS_INTERRUPT);
	assert_int_equal(rd(f, VIRTIO_PCI_ISR_OFF, 1), 0);
	/* a big buffer is filled up to the per-request cap */
	post(f, 1, 4096);
	assert_int_equal(r32(f, USED + 16), 4096);
	assert_true(nonzero((uint8_t *)ram(f, BUF + 0x1000) + 4000, 96));
	/* device configuration space is empty */
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF, 4), 0);
}

static void test_msix(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	unsigned cap = pci_find_capability(f->pd, PCI_CAP_ID_MSIX, 0);
	assert_int_equal((pci_config_read(f->pd, cap + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_QSIZE) + 1, 2);
	/* enabled but function-masked: notifications become pending bits */
	pci_config_write(f->pd, cap + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
	bring_up(f, 1ull << VIRTIO_F_VERSION_1, QS);
	wr(f, VIRTIO_PCI_COMMON_MSIX, 2, 0);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_MSIX, 2), 0);
	wr(f, VIRTIO_PCI_COMMON_Q_MSIX, 2, 1);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_Q_MSIX, 2), 1);
	wr(f, VIRTIO_PCI_COMMON_Q_MSIX, 2, 7);       /* no such vector */
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_Q_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
	wr(f, VIRTIO_PCI_COMMON_Q_MSIX, 2, 1);
	post(f, 0, 16);
	assert_int_equal(r16(f, USED + 2), 1);
	assert_true(pci_msix_pending(f->pd, 1));
	assert_false(pci_msix_pending(f->pd, 0));
	assert_int_equal(rd(f, VIRTIO_PCI_ISR_OFF, 1), 0);   /* no ISR with MSI-X */
}

/* The ioeventfd sits on the notify address exactly while the BAR decodes. */
static void test_ioeventfd_follows_bar(void **ctx)
{
	struct fixture *f = *ctx;
	int efd = eventfd(0, EFD_CLOEXEC);
	assert_true(efd >= 0);
	enable_decoding(f);
	struct kvm_ioeventfd io = { .addr = f->bar + VIRTIO_PCI_NOTIFY_OFF, .len = 2, .fd = efd };
	/* taken: KVM refuses a second ioeventfd on the same address */
	assert_int_equal(ioctl(f->vm.fd, KVM_IOEVENTFD, &io), -1);
	assert_int_equal(errno, EEXIST);
	/* decoding off: the address is free */
	pci_config_write(f->pd, PCI_COMMAND, 2, 0);
	assert_int_equal(ioctl(f->vm.fd, KVM_IOEVENTFD, &io), 0);
	io.flags = KVM_IOEVENTFD_FLAG_DEASSIGN;
	assert_int_equal(ioctl(f->vm.fd, KVM_IOEVENTFD, &io), 0);
	/* move the BAR: the old address is free, the new one taken */
	uint64_t moved = f->bar + 0x100000;
	pci_config_write(f->pd, PCI_BASE_ADDRESS_4, 4, (uint32_t)moved | PCI_BASE_ADDRESS_MEM_TYPE_64);
	pci_config_write(f->pd, PCI_BASE_ADDRESS_5, 4, (uint32_t)(moved >> 32));
	pci_config_write(f->pd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
	io.flags = 0;
	assert_int_equal(ioctl(f->vm.fd, KVM_IOEVENTFD, &io), 0);
	io.flags = KVM_IOEVENTFD_FLAG_DEASSIGN;
	assert_int_equal(ioctl(f->vm.fd, KVM_IOEVENTFD, &io), 0);
	io.addr = moved + VIRTIO_PCI_NOTIFY_OFF;
	io.flags = 0;
	assert_int_equal(ioctl(f->vm.fd, KVM_IOEVENTFD, &io), -1);
	assert_int_equal(errno, EEXIST);
	close(efd);
}

static void test_pci_cfg_window(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	bring_up(f, 1ull << VIRTIO_F_VERSION_1, QS);
	unsigned c = find_vndr_cap(f->pd, VIRTIO_PCI_CAP_PCI_CFG);
	pci_config_write(f->pd, c + 4, 1, VIRTIO_PCI_BAR);
	pci_config_write(f->pd, c + 8, 4, VIRTIO_PCI_COMMON_STATUS);
	pci_config_write(f->pd, c + 12, 4, 1);
	assert_int_equal(pci_config_read(f->pd, c + 16, 4), status(f));
	/* write through the window: queue_select = 5 (no such queue) */
	pci_config_write(f->pd, c + 8, 4, VIRTIO_PCI_COMMON_Q_SELECT);
	pci_config_write(f->pd, c + 12, 4, 2);
	pci_config_write(f->pd, c + 16, 4, 5);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_Q_SELECT, 2), 5);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_Q_SIZE, 2), 0);
	/* a window naming another BAR reads 0 */
	pci_config_write(f->pd, c + 4, 1, 2);
	assert_int_equal(pci_config_read(f->pd, c + 16, 4), 0);
}

static void test_hostile_queue(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	bring_up(f, 1ull << VIRTIO_F_VERSION_1, QS);
	/* a descriptor pointing outside guest RAM */
	uint8_t *p = ram(f, DESC);
	uint64_t a = 0x7ffff000;
	uint32_t len = 0x2000;
	uint16_t flags = VIRTQ_DESC_F_WRITE;
	memcpy(p, &a, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	w16(f, AVAIL + 4, 0);
	w16(f, AVAIL + 2, 1);
	wr(f, VIRTIO_PCI_NOTIFY_OFF, 2, 0);
	assert_true(status(f) & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(r16(f, USED + 2), 0);
	assert_int_equal(rd(f, VIRTIO_PCI_ISR_OFF, 1), VIRTIO_PCI_ISR_CONFIG);
	/* the driver resets and everything works again */
	bring_up(f, 1ull << VIRTIO_F_VERSION_1, QS);
	assert_false(status(f) & VIRTIO_STATUS_NEEDS_RESET);
	post(f, 0, 8);
	assert_int_equal(r16(f, USED + 2), 1);

	/* a queue size that is not a power of two */
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, 0);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(f, VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
	wr(f, VIRTIO_PCI_COMMON_GF, 4, 1);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	   VIRTIO_STATUS_FEATURES_OK);
	wr(f, VIRTIO_PCI_COMMON_Q_SIZE, 2, 24);
	wr(f, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
	assert_true(status(f) & VIRTIO_STATUS_NEEDS_RESET);
	/* a legacy driver (no VERSION_1) does not get FEATURES_OK */
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, 0);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	   VIRTIO_STATUS_FEATURES_OK);
	assert_false(status(f) & VIRTIO_STATUS_FEATURES_OK);
}

static void save(struct device *d, struct state_writer *w)
{
	sw_init(w);
	assert_int_equal(d->ops->save(d, w), 0);
}

/* Mid-stream: two requests done, save, restore RAM and state into a fresh
 * VM, post a third there: it lands in used slot 2 with the right vector. */
static void test_save_load_fresh_vm(void **ctx)
{
	struct fixture *f = *ctx;
	struct terr err = { 0 };
	enable_decoding(f);
	bring_up(f, (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_F_EVENT_IDX), QS);
	post(f, 0, 16);
	post(f, 1, 16);
	assert_int_equal(r16(f, USED + 2), 2);
	vm_pause(&f->vm);
	struct state_writer a;
	save(f->rng, &a);

	struct fixture *g = calloc(1, sizeof(*g));
	assert_int_equal(make_vm(g), 0);
	memcpy(g->vm.mem.base, f->vm.mem.base, f->vm.mem.size);
	struct state_reader r;
	assert_int_equal(sr_init(&r, a.buf, a.len, "rng.0", &err), 0);
	if (g->rng->ops->load(g->rng, &r, &err))
		fail_msg("%s", err.msg);
	sr_free(&r);
	struct state_writer b;
	save(g->rng, &b);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.buf, b.buf, a.len);
	g->bar = pci_bar_address(g->pd, VIRTIO_PCI_BAR);
	assert_int_equal(g->bar, f->bar);
	assert_true(status(g) & VIRTIO_STATUS_DRIVER_OK);
	post(g, 2, 16);
	assert_int_equal(r16(g, USED + 2), 3);
	assert_int_equal(r32(g, USED + 4 + 8 * 2), 2);
	assert_true(nonzero(ram(g, BUF + 0x2000), 16));
	/* the original is untouched */
	assert_int_equal(r16(f, USED + 2), 2);

	/* a kick that arrives while paused is handled on resume */
	vm_pause(&g->vm);
	post(g, 3, 16);
	assert_int_equal(r16(g, USED + 2), 3);
	vm_resume(&g->vm);
	assert_int_equal(r16(g, USED + 2), 4);
	vm_resume(&f->vm);
	free_vm(g);
	free(g);
	sw_free(&a);
	sw_free(&b);
}

static void test_device_reset(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	bring_up(f, 1ull << VIRTIO_F_VERSION_1, QS);
	f->rng->ops->reset(f->rng);
	/* the BAR no longer decodes; turn it back on to look */
	enable_decoding(f);
	assert_int_equal(status(f), 0);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_MSIX, 2), VIRTIO_MSI_NO_VECTOR);
}


/* --- the transport with a model of the test's own (white-box): the
 * ioeventfd path through the event loop, configuration space and
 * configuration-change interrupts --- */

struct cfgdev {
	struct virtio_dev vdev;
	struct virtio_pci vp;
	uint8_t config[8];
	unsigned kicks;
};

static void cd_get(struct virtio_dev *d, uint32_t off, void *buf, uint32_t len)
{
	memcpy(buf, ((struct cfgdev *)d->priv)->config + off, len);
}

static void cd_notify(struct virtio_dev *d, unsigned q)
{
	struct cfgdev *c = d->priv;
	struct vq_chain ch;
	c->kicks++;
	vq_chain_init(&ch);
	while (vq_pop(&d->vqs[q], &ch) == 1)
		vq_push(&d->vqs[q], ch.head, 0);
	vq_chain_free(&ch);
	virtio_dev_notify(d, q);
}

static const struct virtio_dev_ops cd_ops = { .get_config = cd_get, .queue_notify = cd_notify };

static void test_transport_white_box(void **ctx)
{
	struct fixture *f = *ctx;
	struct terr err = { 0 };
	struct cfgdev *c = calloc(1, sizeof(*c));
	memcpy(c->config, "\x11\x22\x33\x44\x55\x66\x77\x88", 8);
	struct virtio_dev_params p = {
		.ops = &cd_ops, .priv = c, .mem = &f->vm.mem, .id = "cfg.0", .device_id = 0x2a,
		.nqueues = 2, .queue_size = QS, .config_size = 8,
	};
	assert_int_equal(virtio_dev_init(&c->vdev, &p, &err), 0);
	if (virtio_pci_init(&c->vp, &f->vm, f->bus, &c->vdev,
			    &(struct virtio_pci_params){ .class_code = 0xff0000, .slot = 5 }, &err))
		fail_msg("%s", err.msg);
	assert_int_equal(pci_config_read(&c->vp.pci, PCI_DEVICE_ID, 2), 0x1040 + 0x2a);
	/* the test's BAR helpers work on f->pd: point it at this device */
	f->pd = &c->vp.pci;
	enable_decoding(f);
	assert_int_equal(c->vp.ioev_on, true);
	assert_int_equal(c->vp.ioev_base, f->bar + VIRTIO_PCI_NOTIFY_OFF);

	/* configuration space through the BAR, at every width */
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF + 2, 1), 0x33);
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF + 2, 2), 0x4433);
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF + 4, 4), 0x88776655);
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF, 8), 0x8877665544332211ull);
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF + 6, 4), 0);   /* runs past the end */

	bring_up(f, 1ull << VIRTIO_F_VERSION_1, QS);
	/* a configuration change: generation moves, ISR bit 1 with INTx */
	uint8_t gen = (uint8_t)rd(f, VIRTIO_PCI_COMMON_CFGGENERATION, 1);
	pthread_mutex_lock(&c->vdev.lock);
	virtio_dev_config_changed(&c->vdev);
	pthread_mutex_unlock(&c->vdev.lock);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_CFGGENERATION, 1), (uint8_t)(gen + 1));
	assert_int_equal(rd(f, VIRTIO_PCI_ISR_OFF, 1), VIRTIO_PCI_ISR_CONFIG);

	/* the ioeventfd path: KVM would signal the eventfd; the event loop
	 * hands the kick to the model */
	uint8_t *d = ram(f, DESC);
	uint64_t a = BUF;
	uint32_t len = 8;
	memcpy(d, &a, 8);
	memcpy(d + 8, &len, 4);
	w16(f, AVAIL + 4, 0);
	w16(f, AVAIL + 2, 1);
	uint64_t one = 1;
	assert_int_equal(write(c->vp.kicks[0].fd, &one, 8), 8);
	assert_true(evloop_run_once(&f->vm.loop, 1000) >= 0);
	assert_int_equal(c->kicks, 1);
	assert_int_equal(r16(f, USED + 2), 1);
	/* held while paused, handled on resume */
	w16(f, AVAIL + 6, 0);
	w16(f, AVAIL + 2, 2);
	virtio_pci_pause(&c->vp);
	assert_int_equal(write(c->vp.kicks[0].fd, &one, 8), 8);
	assert_true(evloop_run_once(&f->vm.loop, 1000) >= 0);
	assert_int_equal(r16(f, USED + 2), 1);
	virtio_pci_resume(&c->vp);
	assert_int_equal(r16(f, USED + 2), 2);
	/* a kick for a queue that was never enabled does nothing */
	assert_int_equal(write(c->vp.kicks[1].fd, &one, 8), 8);
	assert_true(evloop_run_once(&f->vm.loop, 1000) >= 0);
	assert_int_equal(c->kicks, 2);

	/* BAR decoding off: the ioeventfds go away */
	pci_config_write(&c->vp.pci, PCI_COMMAND, 2, 0);
	assert_false(c->vp.ioev_on);
	virtio_pci_destroy(&c->vp);
	virtio_dev_destroy(&c->vdev);
	free(c);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_identity_and_caps),
		T(test_entropy_intx),
		T(test_msix),
		T(test_ioeventfd_follows_bar),
		T(test_pci_cfg_window),
		T(test_hostile_queue),
		T(test_save_load_fresh_vm),
		T(test_device_reset),
		T(test_transport_white_box),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
