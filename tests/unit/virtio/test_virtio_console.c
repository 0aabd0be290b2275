/* virtio-console behind the modern virtio-pci transport on a real /dev/kvm
 * VM, driven the way Linux's virtio_console driver drives a single-port
 * device (hvc0): identity, transmit into a file, receive with too few and
 * too small buffers, a UNIX-socket client (input, output, disconnect,
 * reconnect, a second client refused), pause holding input, save/load of
 * pending input, and bad back-end settings. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "arch/x86/acpi.h"
#include "core/kvm.h"
#include "core/vm.h"
#include "pci/pci.h"
#include "virtio/virtio_console.h"
#include "virtio/virtio_dev.h"
#include "virtio/virtio_pci.h"

#define SLOT 3
#define QS 16
#define RING(q)  (0x100000ull + 0x10000ull * (q))
#define DESC(q)  RING(q)
#define AVAIL(q) (RING(q) + 0x1000)
#define USED(q)  (RING(q) + 0x2000)
#define BUF(q, i) (0x200000ull + 0x10000ull * (q) + 0x1000ull * (i))
#define RXQ 0
#define TXQ 1

struct fixture {
	struct kvm_sys kvm;
	struct vm vm;
	struct acpi_config acpi;
	struct device *host, *con;
	struct pci_bus *bus;
	struct pci_device *pd;
	uint64_t bar;
	char dir[64];
	char path[128];      /* the output file, or the socket */
	char spec[160];      /* vconsole.path */
	uint16_t avail_idx[2];
};

static int make_vm(struct fixture *f, bool append)
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
	struct virtio_console_params cp = { .id = "vconsole.0", .path = f->spec, .append = append,
					    .slot = SLOT };
	if (pci_host_create(&f->vm, &p, &f->host, &err) ||
	    virtio_console_create(&f->vm, pci_host_bus(f->host), &cp, &f->con, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	f->bus = pci_host_bus(f->host);
	f->pd = pci_bus_device(f->bus, SLOT);
	f->avail_idx[0] = f->avail_idx[1] = 0;
	return f->pd ? 0 : -1;
}

static void free_vm(struct fixture *f)
{
	vm_destroy(&f->vm);
	kvm_sys_close(&f->kvm);
}

static int setup_with(void **ctx, bool sock)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/tern-vcon-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/%s", f->dir, sock ? "sock" : "hvc0.txt");
	snprintf(f->spec, sizeof(f->spec), "%s%s", sock ? "unix:" : "", f->path);
	if (make_vm(f, false)) {
		free(f);
		return -1;
	}
	*ctx = f;
	return 0;
}

static int setup_file(void **ctx) { return setup_with(ctx, false); }
static int setup_sock(void **ctx) { return setup_with(ctx, true); }

static int teardown(void **ctx)
{
	struct fixture *f = *ctx;
	if (f->vm.fd >= 0)
		free_vm(f);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", f->dir);
	free(f);
	return 0;
}

/* --- the driver's side --- */

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

static void *ram(struct fixture *f, uint64_t gpa)
{
	return guest_mem_ptr(&f->vm.mem, gpa, 1);
}

static uint16_t r16(struct fixture *f, uint64_t gpa)
{
	uint16_t v;
	__atomic_load((uint16_t *)ram(f, gpa), &v, __ATOMIC_ACQUIRE);
	return v;
}

static uint32_t r32(struct fixture *f, uint64_t gpa)
{
	uint32_t v;
	memcpy(&v, ram(f, gpa), 4);
	return v;
}

static void bring_up(struct fixture *f)
{
	pci_config_write(f->pd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	f->bar = pci_bar_address(f->pd, VIRTIO_PCI_BAR);
	assert_true(f->bar != 0);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, 0);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(f, VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
	wr(f, VIRTIO_PCI_COMMON_GF, 4, 1);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	   VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_NUMQ, 2), 2);
	for (unsigned q = 0; q < 2; q++) {
		wr(f, VIRTIO_PCI_COMMON_Q_SELECT, 2, q);
		wr(f, VIRTIO_PCI_COMMON_Q_SIZE, 2, QS);
		memset(ram(f, RING(q)), 0, 0x3000);
		wr64(f, VIRTIO_PCI_COMMON_Q_DESCLO, DESC(q));
		wr64(f, VIRTIO_PCI_COMMON_Q_AVAILLO, AVAIL(q));
		wr64(f, VIRTIO_PCI_COMMON_Q_USEDLO, USED(q));
		wr(f, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
		f->avail_idx[q] = 0;
	}
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	   VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	assert_true(rd(f, VIRTIO_PCI_COMMON_STATUS, 1) & VIRTIO_STATUS_DRIVER_OK);
}

/* One buffer in descriptor (avail index % QS); returns its guest address. */
static uint64_t post(struct fixture *f, unsigned q, uint32_t len, bool writable, bool kick)
{
	uint16_t d = (uint16_t)(f->avail_idx[q] % QS);
	uint64_t a = BUF(q, d);
	uint8_t *p = ram(f, DESC(q) + 16u * d);
	uint16_t flags = writable ? VIRTQ_DESC_F_WRITE : 0, next = 0;
	memcpy(p, &a, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
	uint16_t v = d;
	memcpy(ram(f, AVAIL(q) + 4 + 2 * d), &v, 2);
	f->avail_idx[q]++;
	__atomic_thread_fence(__ATOMIC_RELEASE);
	memcpy(ram(f, AVAIL(q) + 2), &f->avail_idx[q], 2);
	if (kick)
		wr(f, VIRTIO_PCI_NOTIFY_OFF + VIRTIO_PCI_NOTIFY_MULT * q, 2, q);
	return a;
}

static void transmit(struct fixture *f, const char *s)
{
	uint16_t d = (uint16_t)(f->avail_idx[TXQ] % QS);
	memcpy(ram(f, BUF(TXQ, d)), s, strlen(s));
	post(f, TXQ, (uint32_t)strlen(s), false, true);
	/* Linux's hvc spins until the buffer comes back: it is back at once */
	assert_int_equal(r16(f, USED(TXQ) + 2), f->avail_idx[TXQ]);
}

static void run_loop(struct fixture *f, int rounds)
{
	for (int i = 0; i < rounds; i++)
		evloop_run_once(&f->vm.loop, 10);
}

/* The used element for rx buffer number i: its length. */
static uint32_t rx_len(struct fixture *f, unsigned i)
{
	return r32(f, USED(RXQ) + 4 + 8 * (i % QS) + 4);
}

static char *slurp(const char *path)
{
	static char buf[4096];
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n >= 0);
	buf[n] = 0;
	return buf;
}

/* --- tests --- */

static void test_identity(void **ctx)
{
	struct fixture *f = *ctx;
	assert_int_equal(pci_config_read(f->pd, PCI_VENDOR_ID, 2), 0x1af4);
	assert_int_equal(pci_config_read(f->pd, PCI_DEVICE_ID, 2), 0x1043);
	assert_int_equal(pci_config_read(f->pd, PCI_CLASS_DEVICE, 2), 0x0780);
	bring_up(f);
	wr(f, VIRTIO_PCI_COMMON_DFSELECT, 4, 0);
	/* no MULTIPORT, no SIZE: a single console port */
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_DF, 4),
			 (1u << VIRTIO_F_INDIRECT_DESC) | (1u << VIRTIO_F_EVENT_IDX));
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF, 4), 0);
}

static void test_file_output(void **ctx)
{
	struct fixture *f = *ctx;
	bring_up(f);
	transmit(f, "hello ");
	transmit(f, "from hvc0\n");
	assert_string_equal(slurp(f->path), "hello from hvc0\n");
	/* a chain of two readable descriptors is written in order */
	memcpy(ram(f, BUF(TXQ, 10)), "ab", 2);
	memcpy(ram(f, BUF(TXQ, 11)), "cd\n", 3);
	uint8_t *p = ram(f, DESC(TXQ) + 16 * 10);
	uint64_t a = BUF(TXQ, 10), b = BUF(TXQ, 11);
	uint32_t l1 = 2, l2 = 3;
	uint16_t fl = VIRTQ_DESC_F_NEXT, nx = 11, z = 0;
	memcpy(p, &a, 8);
	memcpy(p + 8, &l1, 4);
	memcpy(p + 12, &fl, 2);
	memcpy(p + 14, &nx, 2);
	memcpy(p + 16, &b, 8);
	memcpy(p + 24, &l2, 4);
	memcpy(p + 28, &z, 2);
	uint16_t head = 10;
	memcpy(ram(f, AVAIL(TXQ) + 4 + 2 * (f->avail_idx[TXQ] % QS)), &head, 2);
	f->avail_idx[TXQ]++;
	memcpy(ram(f, AVAIL(TXQ) + 2), &f->avail_idx[TXQ], 2);
	wr(f, VIRTIO_PCI_NOTIFY_OFF + VIRTIO_PCI_NOTIFY_MULT * TXQ, 2, TXQ);
	assert_string_equal(slurp(f->path), "hello from hvc0\nabcd\n");

	/* a restored guest appends to the file */
	free_vm(f);
	assert_int_equal(make_vm(f, true), 0);
	bring_up(f);
	transmit(f, "more\n");
	assert_string_equal(slurp(f->path), "hello from hvc0\nabcd\nmore\n");
}

static void test_receive(void **ctx)
{
	struct fixture *f = *ctx;
	bring_up(f);
	/* input before the guest has buffers waits */
	assert_int_equal(virtio_console_receive(f->con, "abcdef", 6), 6);
	assert_int_equal(r16(f, USED(RXQ) + 2), 0);
	/* a 4-byte buffer takes 4, the next the rest */
	uint64_t b0 = post(f, RXQ, 4, true, true);
	assert_int_equal(r16(f, USED(RXQ) + 2), 1);
	assert_int_equal(rx_len(f, 0), 4);
	assert_memory_equal(ram(f, b0), "abcd", 4);
	uint64_t b1 = post(f, RXQ, 4096, true, true);
	assert_int_equal(r16(f, USED(RXQ) + 2), 2);
	assert_int_equal(rx_len(f, 1), 2);
	assert_memory_equal(ram(f, b1), "ef", 2);
	/* buffers waiting: input goes in at once */
	uint64_t b2 = post(f, RXQ, 4096, true, true);
	assert_int_equal(virtio_console_receive(f->con, "xyz", 3), 3);
	assert_int_equal(r16(f, USED(RXQ) + 2), 3);
	assert_memory_equal(ram(f, b2), "xyz", 3);
	/* a full pending buffer refuses more */
	static char big[VIRTIO_CONSOLE_RX_BUF + 100];
	memset(big, 'q', sizeof(big));
	assert_int_equal(virtio_console_receive(f->con, big, sizeof(big)), VIRTIO_CONSOLE_RX_BUF);
	/* a device-readable rx buffer gets nothing and comes back empty */
	post(f, RXQ, 16, false, true);
	assert_int_equal(r16(f, USED(RXQ) + 2), 4);
	assert_int_equal(rx_len(f, 3), 0);
	uint64_t b4 = post(f, RXQ, 4096, true, true);
	assert_int_equal(rx_len(f, 4), VIRTIO_CONSOLE_RX_BUF);
	assert_int_equal(((uint8_t *)ram(f, b4))[VIRTIO_CONSOLE_RX_BUF - 1], 'q');
}

static int connect_to(const char *path)
{
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(s);
		return -1;
	}
	return s;
}

static void test_unix_socket(void **ctx)
{
	struct fixture *f = *ctx;
	struct stat st;
	assert_int_equal(stat(f->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	bring_up(f);
	/* no client: output is dropped, the guest goes on */
	transmit(f, "nobody hears this\n");
	int s = connect_to(f->path);
	assert_true(s >= 0);
	run_loop(f, 3);   /* accept */
	transmit(f, "to the client\n");
	char buf[64] = { 0 };
	assert_int_equal(read(s, buf, sizeof(buf)), 14);
	assert_string_equal(buf, "to the client\n");
	/* input from the client reaches the guest's buffer */
	uint64_t b = post(f, RXQ, 64, true, true);
	assert_int_equal(write(s, "typed", 5), 5);
	for (int i = 0; i < 50 && r16(f, USED(RXQ) + 2) == 0; i++)
		run_loop(f, 1);
	assert_int_equal(r16(f, USED(RXQ) + 2), 1);
	assert_int_equal(rx_len(f, 0), 5);
	assert_memory_equal(ram(f, b), "typed", 5);
	/* a second client is turned away */
	int s2 = connect_to(f->path);
	assert_true(s2 >= 0);
	run_loop(f, 3);
	memset(buf, 0, sizeof(buf));
	assert_true(read(s2, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "already has a client"));
	close(s2);
	/* the client leaves; output is dropped; a new client gets the next */
	close(s);
	run_loop(f, 3);
	transmit(f, "lost\n");
	s = connect_to(f->path);
	assert_true(s >= 0);
	run_loop(f, 3);
	transmit(f, "found\n");
	memset(buf, 0, sizeof(buf));
	assert_int_equal(read(s, buf, sizeof(buf)), 6);
	assert_string_equal(buf, "found\n");
	close(s);
	/* the socket file goes away with the device */
	free_vm(f);
	f->vm.fd = -1;
	assert_int_equal(stat(f->path, &st), -1);
}

/* A stale socket is replaced; a regular file in the way is an error. */
static void test_bad_backends(void **ctx)
{
	struct fixture *f = *ctx;
	struct terr err = { 0 };
	struct device *d;
	char p[200];
	snprintf(p, sizeof(p), "unix:%s", f->path);   /* a regular file (hvc0.txt) */
	struct virtio_console_params cp = { .id = "vconsole.1", .path = p, .slot = 5 };
	assert_true(virtio_console_create(&f->vm, f->bus, &cp, &d, &err) < 0);
	assert_non_null(strstr(err.msg, "is not a socket"));
	terr_clear(&err);
	cp.path = "/nonexistent/dir/out.txt";
	assert_true(virtio_console_create(&f->vm, f->bus, &cp, &d, &err) < 0);
	assert_non_null(strstr(err.msg, "/nonexistent/dir/out.txt"));
	terr_clear(&err);
	cp.path = "unix:";
	assert_true(virtio_console_create(&f->vm, f->bus, &cp, &d, &err) < 0);
	/* a stale socket file from an earlier run */
	char sp[100];
	snprintf(sp, sizeof(sp), "%s/stale", f->dir);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sp);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(s);
	snprintf(p, sizeof(p), "unix:%s", sp);
	cp.path = p;
	terr_clear(&err);
	if (virtio_console_create(&f->vm, f->bus, &cp, &d, &err))
		fail_msg("%s", err.msg);
}

static void save(struct device *d, struct state_writer *w)
{
	sw_init(w);
	assert_int_equal(d->ops->save(d, w), 0);
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

/* Pause holds input; save/load carries pending input into a fresh VM. */
static void test_pause_save_load(void **ctx)
{
	struct fixture *f = *ctx;
	bring_up(f);
	vm_pause(&f->vm);
	post(f, RXQ, 64, true, true);   /* the kick is held */
	assert_int_equal(virtio_console_receive(f->con, "held", 4), 4);
	assert_int_equal(r16(f, USED(RXQ) + 2), 0);
	struct state_writer a, b;
	save(f->con, &a);
	/* mutate, load, save again: equal */
	wr(f, VIRTIO_PCI_COMMON_Q_SELECT, 2, 1);
	assert_int_equal(virtio_console_receive(f->con, "more", 4), 4);
	load(f->con, &a);
	save(f->con, &b);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.buf, b.buf, a.len);
	sw_free(&b);

	/* a fresh VM with the RAM and the state */
	uint8_t *mem = malloc(8 << 20);
	memcpy(mem, f->vm.mem.base, 8 << 20);
	free_vm(f);
	assert_int_equal(make_vm(f, true), 0);
	memcpy(f->vm.mem.base, mem, 8 << 20);
	free(mem);
	vm_pause(&f->vm);
	load(f->con, &a);
	save(f->con, &b);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.buf, b.buf, a.len);
	f->bar = pci_bar_address(f->pd, VIRTIO_PCI_BAR);
	assert_int_equal(r16(f, USED(RXQ) + 2), 0);
	vm_resume(&f->vm);   /* the held buffer gets the pending input */
	assert_int_equal(r16(f, USED(RXQ) + 2), 1);
	assert_int_equal(rx_len(f, 0), 4);
	assert_memory_equal(ram(f, BUF(RXQ, 0)), "held", 4);
	/* too much pending input in a state is refused */
	struct state_writer big, dev;
	static uint8_t junk[VIRTIO_CONSOLE_RX_BUF + 1];
	sw_init(&dev);
	sw_bytes(&dev, "rx_pending", junk, sizeof(junk));
	sw_init(&big);
	sw_blob(&big, "dev", &dev);
	struct state_reader r;
	struct terr err = { 0 };
	assert_int_equal(sr_init(&r, big.buf, big.len, "vconsole.0", &err), 0);
	assert_true(f->con->ops->load(f->con, &r, &err) < 0);
	assert_non_null(strstr(err.msg, "vconsole.0"));
	sr_free(&r);
	sw_free(&big);
	sw_free(&dev);
	sw_free(&a);
	sw_free(&b);
}

#define T(fn, s) cmocka_unit_test_setup_teardown(fn, s, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_identity, setup_file),
		T(test_file_output, setup_file),
		T(test_receive, setup_file),
		T(test_unix_socket, setup_sock),
		T(test_bad_backends, setup_file),
		T(test_pause_save_load, setup_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
