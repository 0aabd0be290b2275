/* The generic device test, run on every device type in device_types():
 * drive the device into a non-reset state through its own registers, save
 * (A), mutate it further, load A, save again (B): A and B must be equal, and
 * a fresh instance loaded with A must save A too. Also: loading ignores
 * unknown fields and refuses malformed ones. */
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/kvm.h"
#include "core/vm.h"
#include "hw/acpi_pm.h"
#include "hw/i8042.h"
#include "hw/rtc_cmos.h"
#include "hw/test_exit.h"
#include "hw/uart16550.h"
#include "machine/device_types.h"
#include "pci/pci.h"
#include "net/net.h"
#include "virtio/virtio_rng.h"
#include "virtio/virtio_blk.h"
#include "virtio/virtio_console.h"
#include "virtio/virtio_pci.h"
#include "virtio/virtio_net.h"

/* How the test makes an instance of each type. A device type missing here
 * fails the test, so no device can skip the save/load check. */
static int make_uart(struct vm *vm, struct device **out, struct terr *err)
{
	struct uart_params p = { .id = "uart.0", .port = 0x3f8, .irq = 4, .out_fd = -1, .in_fd = -1 };
	return uart16550_create(vm, &p, out, err);
}

static int make_test_exit(struct vm *vm, struct device **out, struct terr *err)
{
	return test_exit_create(vm, "test-exit.0", TEST_EXIT_PORT, out, err);
}

static int make_acpi_pm(struct vm *vm, struct device **out, struct terr *err)
{
	return acpi_pm_create(vm, NULL, out, err);
}

static int make_i8042(struct vm *vm, struct device **out, struct terr *err)
{
	return i8042_create(vm, NULL, out, err);
}

static int make_rtc_cmos(struct vm *vm, struct device **out, struct terr *err)
{
	return rtc_cmos_create(vm, NULL, out, err);
}

static int make_pci_host(struct vm *vm, struct device **out, struct terr *err)
{
	struct acpi_config c;
	struct pci_host_params p;
	acpi_config_defaults(&c, &vm->mem, 1);
	pci_host_params_from_acpi(&p, &c);
	return pci_host_create(vm, &p, out, err);
}

/* virtio-rng on the VM's PCI bus (made here if the test has none yet), with
 * BAR 4 decoded so the scribbles reach the virtio registers. */
static int make_virtio_rng(struct vm *vm, struct device **out, struct terr *err)
{
	struct device *host = vm_find_device(vm, "pci.0");
	int r;
	if (!host && (r = make_pci_host(vm, &host, err)))
		return r;
	struct pci_bus *bus = pci_host_bus(host);
	if ((r = virtio_rng_create(vm, bus, "rng.0", -1, out, err)))
		return r;
	for (unsigned s = 0; s < PCI_SLOTS; s++) {
		struct pci_device *pd = pci_bus_device(bus, s);
		if (pd && !strcmp(pd->name, "rng.0"))
			pci_config_write(pd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
	}
	return 0;
}

/* virtio-net with the user-mode back end (no privileges needed), BAR 4
 * decoded like virtio-rng's. */
static int make_virtio_net(struct vm *vm, struct device **out, struct terr *err)
{
	struct device *host = vm_find_device(vm, "pci.0");
	int r;
	if (!host && (r = make_pci_host(vm, &host, err)))
		return r;
	struct pci_bus *bus = pci_host_bus(host);
	struct virtio_net_params p = { .id = "net.0", .slot = -1,
				       .mac = { 0x52, 0x54, 0, 0x12, 0x34, 0x56 } };
	struct net_slirp_params sp = { .id = "net.0" };
	if ((r = net_slirp_create(&vm->loop, &sp, &p.be, err)) ||
	    (r = virtio_net_create(vm, bus, &p, out, err)))
		return r;
	for (unsigned s = 0; s < PCI_SLOTS; s++) {
		struct pci_device *pd = pci_bus_device(bus, s);
		if (pd && !strcmp(pd->name, "net.0"))
			pci_config_write(pd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
	}
	return 0;
}

/* The PCI function of device `id` on the VM's bus, with memory decoding and
 * bus mastering on; returns BAR 4's address. */
static uint64_t decode_bar4(struct pci_bus *bus, const char *id)
{
	for (unsigned s = 0; s < PCI_SLOTS; s++) {
		struct pci_device *pd = pci_bus_device(bus, s);
		if (pd && !strcmp(pd->name, id)) {
			pci_config_write(pd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
			return pci_bar_address(pd, VIRTIO_PCI_BAR);
		}
	}
	return 0;
}

static void bar_write(struct vm *vm, uint64_t addr, unsigned size, uint64_t v)
{
	bus_write(&vm->mmio, addr, &v, size);
}

/* A temporary file of `size` bytes, unlinked once the device holds it open. */
static int temp_file(char *path, size_t len, uint64_t size)
{
	snprintf(path, len, "/tmp/tern-devtest-XXXXXX");
	int fd = mkstemp(path);
	if (fd < 0)
		return -errno;
	int r = ftruncate(fd, (off_t)size) < 0 ? -errno : 0;
	close(fd);
	return r;
}

/* virtio-blk on a temporary raw image, with its driver up and eight 4 KiB
 * writes in flight (submitted, their completions held back) when the
 * generic test starts: the first save has to complete them, the loads must
 * not resurrect them. */
static int make_virtio_blk(struct vm *vm, struct device **out, struct terr *err)
{
	struct device *host = vm_find_device(vm, "pci.0");
	char path[64];
	int r;
	if (!host && (r = make_pci_host(vm, &host, err)))
		return r;
	if ((r = temp_file(path, sizeof(path), 1 << 20)))
		return terr_set(err, -r, "temporary image: %s", strerror(-r));
	struct virtio_blk_params p = { .id = "blk.0", .path = path, .format = "raw", .queues = 1,
				       .slot = -1 };
	r = virtio_blk_create(vm, pci_host_bus(host), &p, out, err);
	unlink(path);
	if (r)
		return r;
	uint64_t bar = decode_bar4(pci_host_bus(host), "blk.0");
	const uint64_t desc = 0x200000, avail = 0x201000, used = 0x202000, hdr = 0x203000,
		       data = 0x210000;
	bar_write(vm, bar + VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	bar_write(vm, bar + VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
	bar_write(vm, bar + VIRTIO_PCI_COMMON_GF, 4, 1);   /* VERSION_1 */
	bar_write(vm, bar + VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE |
		  VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	bar_write(vm, bar + VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
	bar_write(vm, bar + VIRTIO_PCI_COMMON_Q_SIZE, 2, 32);
	bar_write(vm, bar + VIRTIO_PCI_COMMON_Q_DESCLO, 4, desc);
	bar_write(vm, bar + VIRTIO_PCI_COMMON_Q_AVAILLO, 4, avail);
	bar_write(vm, bar + VIRTIO_PCI_COMMON_Q_USEDLO, 4, used);
	bar_write(vm, bar + VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
	bar_write(vm, bar + VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE |
		  VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	/* completions wait until a save (or a reset) takes them */
	virtio_blk_hold_completions(*out, true);
	uint8_t *ram = guest_mem_ptr(&vm->mem, desc, 0x20000);
	if (!ram)
		return terr_set(err, EINVAL, "no guest RAM for the rings");
	memset(ram, 0, 0x20000);
	for (unsigned i = 0; i < 8; i++) {
		uint32_t type = VIRTIO_BLK_T_OUT;
		uint64_t sector = 8 * i;
		memcpy(ram + (hdr - desc) + 32 * i, &type, 4);
		memcpy(ram + (hdr - desc) + 32 * i + 8, &sector, 8);
		memset(ram + (data - desc) + 4096 * i, 0xa0 + i, 4096);
		struct { uint64_t addr; uint32_t len; uint16_t flags, next; } d[3] = {
			{ hdr + 32 * i, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(3 * i + 1) },
			{ data + 4096 * i, 4096, VIRTQ_DESC_F_NEXT, (uint16_t)(3 * i + 2) },
			{ hdr + 32 * i + 16, 1, VIRTQ_DESC_F_WRITE, 0 },
		};
		memcpy(ram + 16 * 3 * i, d, sizeof(d));
		uint16_t head = (uint16_t)(3 * i);
		memcpy(ram + (avail - desc) + 4 + 2 * i, &head, 2);
	}
	uint16_t idx = 8;
	memcpy(ram + (avail - desc) + 2, &idx, 2);
	bar_write(vm, bar + VIRTIO_PCI_NOTIFY_OFF, 2, 0);
	if (virtio_blk_inflight(*out) != 8)
		return terr_set(err, EINVAL, "blk.0: %u requests in flight after the kick, not 8",
				virtio_blk_inflight(*out));
	return 0;
}

/* virtio-console writing to a temporary file (unlinked; the device keeps it
 * open). */
static int make_virtio_console(struct vm *vm, struct device **out, struct terr *err)
{
	struct device *host = vm_find_device(vm, "pci.0");
	char path[64];
	int r;
	if (!host && (r = make_pci_host(vm, &host, err)))
		return r;
	if ((r = temp_file(path, sizeof(path), 0)))
		return terr_set(err, -r, "temporary file: %s", strerror(-r));
	struct virtio_console_params p = { .id = "vconsole.0", .path = path, .slot = -1 };
	r = virtio_console_create(vm, pci_host_bus(host), &p, out, err);
	unlink(path);
	if (!r)
		decode_bar4(pci_host_bus(host), "vconsole.0");
	return r;
}

static const struct {
	const char *type;
	int (*make)(struct vm *vm, struct device **out, struct terr *err);
} factories[] = {
	{ "uart16550", make_uart },
	{ "test-exit", make_test_exit },
	{ "acpi-pm", make_acpi_pm },
	{ "i8042", make_i8042 },
	{ "rtc-cmos", make_rtc_cmos },
	{ "pci-host", make_pci_host },
	{ "virtio-rng", make_virtio_rng },
	{ "virtio-net", make_virtio_net },
	{ "virtio-blk", make_virtio_blk },
	{ "virtio-console", make_virtio_console },
};

struct fixture {
	struct kvm_sys kvm;
	struct vm vm;
};

static int setup(void **ctx)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct terr err = { 0 };
	if (kvm_sys_open(&f->kvm, "/dev/kvm", &err) || vm_create(&f->vm, &f->kvm, 4 << 20, 1, NULL, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		free(f);
		return -1;
	}
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

/* Writes pseudo-random bytes to every register the device owns. */
static void scribble(struct vm *vm, struct device *d, unsigned seed)
{
	struct bus *buses[] = { &vm->pio, &vm->mmio };
	for (int b = 0; b < 2; b++) {
		for (unsigned i = 0; i < buses[b]->n; i++) {
			struct bus_range rg = buses[b]->ranges[i];
			if (strcmp(rg.owner, d->id))
				continue;
			for (uint64_t off = 0; off < rg.len && off < 4096; off++) {
				seed = seed * 1103515245u + 12345u;
				uint8_t v = (uint8_t)(seed >> 16);
				if (rg.write)
					rg.write(rg.opaque, off, &v, 1);
				uint8_t junk;
				if (rg.read && (seed & 0x100))
					rg.read(rg.opaque, off, &junk, 1);
			}
		}
	}
}

static void save(struct device *d, struct state_writer *w)
{
	sw_init(w);
	assert_int_equal(d->ops->save(d, w), 0);
	assert_int_equal(w->err, 0);
}

static void load(struct device *d, const struct state_writer *w)
{
	struct state_reader r;
	struct terr err = { 0 };
	assert_int_equal(sr_init(&r, w->buf, w->len, d->id, &err), 0);
	if (d->ops->load(d, &r, &err))
		fail_msg("%s: load failed: %s", d->id, err.msg);
	sr_free(&r);
}

static void check_type(struct fixture *f, const struct device_ops *ops, size_t fi)
{
	struct terr err = { 0 };
	struct device *d;
	assert_int_equal(factories[fi].make(&f->vm, &d, &err), 0);
	assert_ptr_equal(d->ops, ops);
	assert_non_null(ops->save);
	assert_non_null(ops->load);
	assert_true(ops->state_version >= ops->state_min_version && ops->state_min_version >= 1);

	for (unsigned round = 0; round < 20; round++) {
		struct state_writer a, b;
		scribble(&f->vm, d, 1000 + round);
		save(d, &a);
		scribble(&f->vm, d, 5000 + round);
		load(d, &a);
		save(d, &b);
		if (a.len != b.len || memcmp(a.buf, b.buf, a.len))
			fail_msg("%s: save -> mutate -> load -> save differs in round %u", d->id, round);

		/* unknown fields from a newer tern are ignored */
		struct state_writer c;
		sw_init(&c);
		sw_uint(&c, "field_from_the_future", 1);
		sw_bytes(&c, "more_future", "zz", 2);
		{
			/* a + c concatenated is a valid blob */
			uint8_t *buf = malloc(a.len + c.len);
			memcpy(buf, a.buf, a.len);
			memcpy(buf + a.len, c.buf, c.len);
			struct state_reader r;
			assert_int_equal(sr_init(&r, buf, a.len + c.len, d->id, &err), 0);
			scribble(&f->vm, d, 9000 + round);
			assert_int_equal(d->ops->load(d, &r, &err), 0);
			sr_free(&r);
			free(buf);
		}
		struct state_writer e;
		save(d, &e);
		assert_int_equal(e.len, a.len);
		assert_memory_equal(e.buf, a.buf, a.len);
		sw_free(&c);
		sw_free(&e);
		sw_free(&a);
		sw_free(&b);
	}
	/* a field of the wrong type is refused with the device named */
	struct state_writer a, bad;
	save(d, &a);
	struct state_reader r;
	assert_int_equal(sr_init(&r, a.buf, a.len, d->id, &err), 0);
	if (r.nfields > 0) {
		const struct state_field *fld = &r.fields[0];
		char name[256];
		memcpy(name, fld->name, fld->name_len);
		name[fld->name_len] = 0;
		sw_init(&bad);
		if (fld->type == STATE_UINT)
			sw_str(&bad, name, "not a number");
		else
			sw_uint(&bad, name, 1);
		struct state_reader rb;
		assert_int_equal(sr_init(&rb, bad.buf, bad.len, d->id, &err), 0);
		/* either way round, a field of the wrong type is an error */
		assert_true(d->ops->load(d, &rb, &err) < 0);
		assert_non_null(strstr(err.msg, d->id));
		sr_free(&rb);
		sw_free(&bad);
	}
	sr_free(&r);
	sw_free(&a);
}

static void test_every_device_type(void **ctx)
{
	struct fixture *f = *ctx;
	size_t n;
	const struct device_ops *const *types = device_types(&n);
	assert_true(n >= 2);
	for (size_t i = 0; i < n; i++) {
		size_t fi = 0;
		while (fi < sizeof(factories) / sizeof(factories[0]) && strcmp(factories[fi].type, types[i]->type))
			fi++;
		if (fi == sizeof(factories) / sizeof(factories[0]))
			fail_msg("device type %s has no factory in the generic save/load test", types[i]->type);
		check_type(f, types[i], fi);
	}
}

/* The UART's receive FIFO and line status survive save/load byte for byte. */
static void test_uart_fifo_state(void **ctx)
{
	struct fixture *f = *ctx;
	struct terr err = { 0 };
	struct device *d;
	struct uart_params p = { .id = "uart.1", .port = 0x2f8, .irq = 3, .out_fd = -1, .in_fd = -1 };
	assert_int_equal(uart16550_create(&f->vm, &p, &d, &err), 0);
	assert_int_equal(uart16550_receive(d, (const uint8_t *)"abc", 3), 3);
	struct state_writer a;
	save(d, &a);
	uint8_t c;
	bus_read(&f->vm.pio, 0x2f8, &c, 1);
	assert_int_equal(c, 'a');
	load(d, &a);
	uint8_t lsr;
	bus_read(&f->vm.pio, 0x2f8 + 5, &lsr, 1);
	assert_true(lsr & 1);   /* data ready again */
	char got[3];
	for (int i = 0; i < 3; i++)
		bus_read(&f->vm.pio, 0x2f8, &got[i], 1);
	assert_memory_equal(got, "abc", 3);
	bus_read(&f->vm.pio, 0x2f8 + 5, &lsr, 1);
	assert_false(lsr & 1);
	/* more than the FIFO holds is refused */
	struct state_writer big;
	sw_init(&big);
	sw_bytes(&big, "rx_fifo", "0123456789abcdefg", 17);
	struct state_reader r;
	assert_int_equal(sr_init(&r, big.buf, big.len, d->id, &err), 0);
	assert_true(d->ops->load(d, &r, &err) < 0);
	assert_string_equal(err.msg, "uart.1: receive FIFO holds 17 bytes, at most 16 fit");
	sr_free(&r);
	sw_free(&big);
	sw_free(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_every_device_type, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uart_fifo_state, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
