/* virtio-net behind the modern virtio-pci transport on a real /dev/kvm VM,
 * driven the way Linux's virtio_net driver drives it (through the MMIO bus a
 * vCPU exit reaches), with a fake back end: a SOCK_SEQPACKET socket pair whose
 * far end is the test, so every frame is one message. Covers: identity,
 * features per back end, configuration space (MAC, link), transmit (header
 * stripped or passed through, descriptors split anywhere), receive into one
 * buffer and into mergeable buffers published at once, back-pressure (no
 * buffers: the back end is not read; buffers posted: the frames arrive in
 * order), offloads handed to the back end, hostile drivers (short headers,
 * oversize frames, offloads not negotiated, receive buffers smaller than a
 * header, buffers outside RAM), pause/resume, reset, save/load into a fresh
 * VM that carries on, the default MAC, net.N from the configuration, and the
 * control queue (receive modes, MAC filters and address, the announcement a
 * load asks for at resume). */
#include <errno.h>
#include <linux/kvm.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <cmocka.h>

#include "arch/x86/acpi.h"
#include "config/config.h"
#include "core/kvm.h"
#include "core/vm.h"
#include "net/net.h"
#include "pci/pci.h"
#include "virtio/virtio_dev.h"
#include "virtio/virtio_net.h"
#include "virtio/virtio_pci.h"

#define SLOT 4
#define QS 16
#define BUF 0x200000ull       /* buffers: 0x200000 + 0x1000 * n (4 KiB each) ... */
#define BIG 0x400000ull       /* ... and a 128 KiB area for large frames */

/* rx, tx, control: desc, +0x1000 avail, +0x2000 used */
static const uint64_t QBASE[3] = { 0x100000, 0x110000, 0x120000 };

/* --- the fake back end --- */

struct fake_be {
	struct net_backend be;
	int fd;                  /* the device's end */
	unsigned offloads_set;
	unsigned set_calls;
};

static int fb_send(struct net_backend *be, const struct iovec *iov, unsigned cnt)
{
	struct fake_be *f = (struct fake_be *)be;
	struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = cnt };
	return sendmsg(f->fd, &m, MSG_DONTWAIT) < 0 ? -errno : 0;
}

static ssize_t fb_recv(struct net_backend *be, void *buf, size_t len)
{
	struct fake_be *f = (struct fake_be *)be;
	ssize_t n = recv(f->fd, buf, len, MSG_DONTWAIT);
	if (n < 0)
		return errno == EAGAIN ? 0 : -errno;
	return n;
}

static int fb_set_offloads(struct net_backend *be, unsigned off)
{
	struct fake_be *f = (struct fake_be *)be;
	f->offloads_set = off;
	f->set_calls++;
	return 0;
}

static void fb_destroy(struct net_backend *be)
{
	struct fake_be *f = (struct fake_be *)be;
	close(f->fd);
	free(f);
}

static const struct net_backend_ops fb_ops = {
	.kind = "fake", .send = fb_send, .recv = fb_recv, .set_offloads = fb_set_offloads,
	.destroy = fb_destroy,
};

/* A back end and the test's end of it. */
static struct fake_be *fake_new(bool vnet_hdr, unsigned offloads, int *peer)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	int big = 4 << 20;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	struct fake_be *f = calloc(1, sizeof(*f));
	f->be.ops = &fb_ops;
	snprintf(f->be.id, sizeof(f->be.id), "net.0");
	f->be.rx_fd = sv[0];
	f->be.vnet_hdr = vnet_hdr;
	f->be.offloads = offloads;
	f->fd = sv[0];
	*peer = sv[1];
	return f;
}

/* --- fixture --- */

static const uint8_t MAC[6] = { 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef };

struct fixture {
	struct kvm_sys kvm;
	struct vm vm;
	struct acpi_config acpi;
	struct device *host, *net;
	struct fake_be *fb;
	int peer;
	struct pci_bus *bus;
	struct pci_device *pd;
	uint64_t bar;
	uint16_t next_desc[3];   /* the driver's free descriptor cursor per queue */
};

static int make_vm(struct fixture *f, bool vnet_hdr, unsigned offloads, const uint8_t mac[6],
		   uint16_t mtu)
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
	f->fb = fake_new(vnet_hdr, offloads, &f->peer);
	struct virtio_net_params np = { .id = "net.0", .slot = SLOT, .be = &f->fb->be, .mtu = mtu };
	memcpy(np.mac, mac, 6);
	if (pci_host_create(&f->vm, &p, &f->host, &err) ||
	    virtio_net_create(&f->vm, pci_host_bus(f->host), &np, &f->net, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	f->bus = pci_host_bus(f->host);
	f->pd = pci_bus_device(f->bus, SLOT);
	return f->pd ? 0 : -1;
}

static int setup_plain(void **ctx)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (make_vm(f, false, 0, MAC, 0)) {
		free(f);
		return -1;
	}
	*ctx = f;
	return 0;
}

/* a back end without offloads and the 64 KiB MTU of the user back end */
static int setup_mtu(void **ctx)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (make_vm(f, false, 0, MAC, 65520)) {
		free(f);
		return -1;
	}
	*ctx = f;
	return 0;
}

static int setup_vnet(void **ctx)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (make_vm(f, true, NET_OFF_CSUM | NET_OFF_TSO4 | NET_OFF_TSO6, MAC, 0)) {
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
	close(f->peer);
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

static uint8_t *ram(struct fixture *f, uint64_t gpa)
{
	uint8_t *p = guest_mem_ptr(&f->vm.mem, gpa, 1);
	assert_non_null(p);
	return p;
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

static uint16_t used_idx(struct fixture *f, unsigned q)
{
	return r16(f, QBASE[q] + 0x2002);
}

/* used ring element i of queue q: descriptor head and length */
static uint32_t used_id(struct fixture *f, unsigned q, unsigned i)
{
	return r32(f, QBASE[q] + 0x2004 + 8 * (i % QS));
}

static uint32_t used_len(struct fixture *f, unsigned q, unsigned i)
{
	return r32(f, QBASE[q] + 0x2008 + 8 * (i % QS));
}

static uint64_t offered(struct fixture *f)
{
	wr(f, VIRTIO_PCI_COMMON_DFSELECT, 4, 0);
	uint64_t lo = rd(f, VIRTIO_PCI_COMMON_DF, 4);
	wr(f, VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
	return lo | rd(f, VIRTIO_PCI_COMMON_DF, 4) << 32;
}

static void bring_up(struct fixture *f, uint64_t features)
{
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, 0);
	assert_int_equal(status(f), 0);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	features |= 1ull << VIRTIO_F_VERSION_1;
	assert_int_equal(features & ~offered(f), 0);
	wr(f, VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
	wr(f, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)features);
	wr(f, VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
	wr(f, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)(features >> 32));
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	   VIRTIO_STATUS_FEATURES_OK);
	assert_true(status(f) & VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_NUMQ, 2), 3);
	for (unsigned q = 0; q < 3; q++) {
		wr(f, VIRTIO_PCI_COMMON_Q_SELECT, 2, q);
		assert_int_equal(rd(f, VIRTIO_PCI_COMMON_Q_SIZE, 2), VIRTIO_NET_QUEUE_SIZE);
		wr(f, VIRTIO_PCI_COMMON_Q_SIZE, 2, QS);
		memset(ram(f, QBASE[q]), 0, 0x3000);
		wr64(f, VIRTIO_PCI_COMMON_Q_DESCLO, QBASE[q]);
		wr64(f, VIRTIO_PCI_COMMON_Q_AVAILLO, QBASE[q] + 0x1000);
		wr64(f, VIRTIO_PCI_COMMON_Q_USEDLO, QBASE[q] + 0x2000);
		wr(f, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
		f->next_desc[q] = 0;
	}
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	   VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	assert_true(status(f) & VIRTIO_STATUS_DRIVER_OK);
}

struct seg {
	uint64_t gpa;
	uint32_t len;
	bool write;
};

/* Put a chain of descriptors on queue q's available ring (no kick). */
static uint16_t add_chain(struct fixture *f, unsigned q, const struct seg *s, unsigned n)
{
	uint16_t head = f->next_desc[q];
	for (unsigned i = 0; i < n; i++) {
		uint16_t d = (uint16_t)((head + i) % QS);
		uint8_t *p = ram(f, QBASE[q] + 16 * d);
		uint16_t flags = (uint16_t)((s[i].write ? VIRTQ_DESC_F_WRITE : 0) |
					    (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
		uint16_t next = (uint16_t)((d + 1) % QS);
		memcpy(p, &s[i].gpa, 8);
		memcpy(p + 8, &s[i].len, 4);
		memcpy(p + 12, &flags, 2);
		memcpy(p + 14, &next, 2);
	}
	f->next_desc[q] = (uint16_t)((head + n) % QS);
	uint64_t avail = QBASE[q] + 0x1000;
	uint16_t idx = r16(f, avail + 2);
	w16(f, avail + 4 + 2 * (idx % QS), head);
	w16(f, avail + 2, (uint16_t)(idx + 1));
	return head;
}

static void kick(struct fixture *f, unsigned q)
{
	wr(f, VIRTIO_PCI_NOTIFY_OFF + VIRTIO_PCI_NOTIFY_MULT * q, 2, q);
}

/* Post `n` receive buffers of `len` bytes (one descriptor each). */
static void post_rx(struct fixture *f, unsigned first, unsigned n, uint32_t len)
{
	for (unsigned i = 0; i < n; i++) {
		struct seg s = { BUF + 0x1000ull * (first + i), len, true };
		memset(ram(f, s.gpa), 0xee, len);
		add_chain(f, 0, &s, 1);
	}
	kick(f, 0);
}

static void frame(uint8_t *p, size_t len, unsigned seed)
{
	static const uint8_t hdr[14] = { 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef,
					 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00 };
	memcpy(p, hdr, len < 14 ? len : 14);
	for (size_t i = 14; i < len; i++)
		p[i] = (uint8_t)(i * 7 + seed);
}

/* The test's end: send one message (to the guest), or receive one. */
static void peer_send(struct fixture *f, const void *p, size_t len)
{
	assert_int_equal(send(f->peer, p, len, 0), (ssize_t)len);
}

static ssize_t peer_recv(struct fixture *f, void *p, size_t len)
{
	ssize_t n = recv(f->peer, p, len, MSG_DONTWAIT);
	return n < 0 ? -errno : n;
}

/* Run the event loop until nothing more happens. */
static void pump(struct fixture *f)
{
	for (int i = 0; i < 64; i++)
		if (evloop_run_once(&f->vm.loop, 20) <= 0)
			break;
}

static struct virtio_net_stats stats(struct fixture *f)
{
	struct virtio_net_stats s;
	virtio_net_get_stats(f->net, &s);
	return s;
}

/* --- tests --- */

static void test_identity_and_config(void **ctx)
{
	struct fixture *f = *ctx;
	assert_int_equal(pci_config_read(f->pd, PCI_VENDOR_ID, 2), 0x1af4);
	assert_int_equal(pci_config_read(f->pd, PCI_DEVICE_ID, 2), 0x1041);
	assert_int_equal(pci_config_read(f->pd, PCI_CLASS_DEVICE, 2), 0x0200);
	enable_decoding(f);
	uint64_t feat = offered(f);
	assert_true(feat & (1ull << VIRTIO_NET_F_MAC));
	assert_true(feat & (1ull << VIRTIO_NET_F_STATUS));
	assert_true(feat & (1ull << VIRTIO_NET_F_MRG_RXBUF));
	assert_true(feat & (1ull << VIRTIO_F_VERSION_1));
	/* no vnet header in this back end: no offloads */
	assert_false(feat & ((1ull << VIRTIO_NET_F_CSUM) | (1ull << VIRTIO_NET_F_GUEST_CSUM) |
			     (1ull << VIRTIO_NET_F_HOST_TSO4) | (1ull << VIRTIO_NET_F_GUEST_TSO4)));
	for (unsigned i = 0; i < 6; i++)
		assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF + i, 1), MAC[i]);
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF + 6, 2), VIRTIO_NET_S_LINK_UP);
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF + 8, 2), 1);
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF, 4),
			 (uint32_t)(MAC[0] | MAC[1] << 8 | MAC[2] << 16 | (uint32_t)MAC[3] << 24));
	/* writes to the configuration are ignored */
	wr(f, VIRTIO_PCI_DEVICE_OFF, 1, 0x11);
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF, 1), MAC[0]);
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF + 10, 2), 0);
}

static void test_features_with_vnet_hdr(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	uint64_t feat = offered(f);
	static const unsigned want[] = { VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM,
					 VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_GUEST_TSO4,
					 VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_GUEST_TSO6 };
	for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		assert_true(feat & (1ull << want[i]));
	/* the fake took no ECN or UFO */
	assert_false(feat & (1ull << VIRTIO_NET_F_HOST_UFO));
	assert_false(feat & (1ull << VIRTIO_NET_F_GUEST_ECN));

	/* offloads reach the back end at DRIVER_OK, per what the guest took */
	bring_up(f, (1ull << VIRTIO_NET_F_GUEST_CSUM) | (1ull << VIRTIO_NET_F_GUEST_TSO4) |
		 (1ull << VIRTIO_NET_F_CSUM) | (1ull << VIRTIO_NET_F_HOST_TSO4));
	assert_int_equal(f->fb->offloads_set, NET_OFF_CSUM | NET_OFF_TSO4);
	/* and go away at reset */
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, 0);
	assert_int_equal(f->fb->offloads_set, 0);
	/* without GUEST_CSUM nothing is offloaded */
	bring_up(f, 1ull << VIRTIO_NET_F_GUEST_TSO4);
	assert_int_equal(f->fb->offloads_set, 0);
}

static void test_tx(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	bring_up(f, 1ull << VIRTIO_NET_F_MRG_RXBUF);
	/* header in its own descriptor, the frame split in two at an odd place */
	uint8_t fr[1514], got[2048];
	frame(fr, sizeof(fr), 1);
	memset(ram(f, BUF), 0, 12);
	memcpy(ram(f, BUF + 0x1000), fr, 101);
	memcpy(ram(f, BUF + 0x2000), fr + 101, sizeof(fr) - 101);
	struct seg s[3] = { { BUF, 12, false }, { BUF + 0x1000, 101, false },
			    { BUF + 0x2000, sizeof(fr) - 101, false } };
	uint16_t head = add_chain(f, 1, s, 3);
	kick(f, 1);
	assert_int_equal(peer_recv(f, got, sizeof(got)), sizeof(fr));
	assert_memory_equal(got, fr, sizeof(fr));
	assert_int_equal(used_idx(f, 1), 1);
	assert_int_equal(used_id(f, 1, 0), head);
	assert_int_equal(used_len(f, 1, 0), 0);
	/* INTx + ISR */
	assert_int_equal(rd(f, VIRTIO_PCI_ISR_OFF, 1), VIRTIO_PCI_ISR_QUEUE);

	/* header and frame in one descriptor, a minimal frame */
	memset(ram(f, BUF + 0x3000), 0, 12);
	frame(ram(f, BUF + 0x3000) + 12, 60, 2);
	struct seg one = { BUF + 0x3000, 72, false };
	add_chain(f, 1, &one, 1);
	kick(f, 1);
	assert_int_equal(peer_recv(f, got, sizeof(got)), 60);
	assert_memory_equal(got, ram(f, BUF + 0x3000) + 12, 60);
	assert_int_equal(used_idx(f, 1), 2);
	assert_int_equal(stats(f).tx_frames, 2);
	assert_int_equal(stats(f).tx_bytes, 1514 + 60);
}

/* With an MTU offered, whole frames up to it go out without GSO (the user
 * back end's 64 KiB segments); one byte more is dropped. */
static void test_tx_up_to_mtu(void **ctx)
{
	struct fixture *f = *ctx;
	static uint8_t got[70000];
	enable_decoding(f);
	bring_up(f, (1ull << VIRTIO_NET_F_MRG_RXBUF) | (1ull << VIRTIO_NET_F_MTU));
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF + 10, 2), 65520);
	memset(ram(f, BIG), 0, 12);
	frame(ram(f, BIG) + 12, 65520 + 14, 3);
	struct seg big = { BIG, 12 + 65520 + 14, false };
	add_chain(f, 1, &big, 1);
	kick(f, 1);
	assert_int_equal(peer_recv(f, got, sizeof(got)), 65520 + 14);
	assert_memory_equal(got, ram(f, BIG) + 12, 65520 + 14);
	struct seg over = { BIG, 12 + 65520 + 18 + 1, false };
	add_chain(f, 1, &over, 1);
	kick(f, 1);
	assert_int_equal(peer_recv(f, got, sizeof(got)), -EAGAIN);
	assert_int_equal(stats(f).tx_frames, 1);
	assert_int_equal(stats(f).tx_dropped, 1);
}

static void test_tx_vnet_hdr_passthrough(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	bring_up(f, (1ull << VIRTIO_NET_F_CSUM) | (1ull << VIRTIO_NET_F_HOST_TSO4));
	/* a TSO frame with a partial checksum: the header goes through as is */
	uint32_t len = 12 + 20000;
	uint8_t *p = ram(f, BIG);
	memset(p, 0, 12);
	p[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	p[1] = VIRTIO_NET_HDR_GSO_TCPV4;
	uint16_t gso_size = 1448, csum_start = 34, csum_off = 16;
	memcpy(p + 4, &gso_size, 2);
	memcpy(p + 6, &csum_start, 2);
	memcpy(p + 8, &csum_off, 2);
	frame(p + 12, len - 12, 3);
	struct seg s = { BIG, len, false };
	add_chain(f, 1, &s, 1);
	kick(f, 1);
	uint8_t *got = malloc(NET_MAX_FRAME);
	assert_int_equal(peer_recv(f, got, NET_MAX_FRAME), len);
	assert_memory_equal(got, p, len);
	/* UDP segmentation was not negotiated (nor offered): dropped */
	p[1] = VIRTIO_NET_HDR_GSO_UDP;
	add_chain(f, 1, &s, 1);
	kick(f, 1);
	assert_int_equal(peer_recv(f, got, NET_MAX_FRAME), -EAGAIN);
	assert_int_equal(used_idx(f, 1), 2);
	assert_int_equal(stats(f).tx_dropped, 1);
	free(got);
}

/* Receive into single buffers (no MRG_RXBUF). */
static void test_rx_single(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	bring_up(f, 0);
	post_rx(f, 0, 4, 1526);
	uint8_t fr[1514];
	frame(fr, sizeof(fr), 4);
	peer_send(f, fr, sizeof(fr));
	frame(fr, 60, 5);
	peer_send(f, fr, 60);
	pump(f);
	assert_int_equal(used_idx(f, 0), 2);
	assert_int_equal(used_len(f, 0, 0), 12 + 1514);
	assert_int_equal(used_len(f, 0, 1), 12 + 60);
	uint8_t *b0 = ram(f, BUF), *b1 = ram(f, BUF + 0x1000);
	/* header: no flags, no GSO, num_buffers 1 */
	static const uint8_t h[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0 };
	assert_memory_equal(b0, h, 12);
	assert_memory_equal(b1, h, 12);
	frame(fr, sizeof(fr), 4);
	assert_memory_equal(b0 + 12, fr, 1514);
	frame(fr, 60, 5);
	assert_memory_equal(b1 + 12, fr, 60);
	/* a frame bigger than the buffer: dropped, the buffer stays posted */
	uint8_t big[3000];
	frame(big, sizeof(big), 6);
	peer_send(f, big, sizeof(big));
	frame(fr, 100, 7);
	peer_send(f, fr, 100);
	pump(f);
	assert_int_equal(used_idx(f, 0), 3);
	assert_int_equal(used_id(f, 0, 2), 2);
	assert_int_equal(used_len(f, 0, 2), 112);
	assert_memory_equal(ram(f, BUF + 0x2000) + 12, fr, 100);
	assert_int_equal(stats(f).rx_dropped, 1);
	assert_int_equal(stats(f).rx_frames, 3);
}

/* Mergeable buffers: a frame spread over several, num_buffers in the first
 * header, all published by one used->idx update. */
static void test_rx_mergeable(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	bring_up(f, 1ull << VIRTIO_NET_F_MRG_RXBUF);
	post_rx(f, 0, 8, 512);
	uint8_t fr[1514];
	frame(fr, sizeof(fr), 8);
	peer_send(f, fr, sizeof(fr));
	pump(f);
	/* 12 + 1514 = 1526 bytes: 512 + 512 + 502 */
	assert_int_equal(used_idx(f, 0), 3);
	assert_int_equal(used_len(f, 0, 0), 512);
	assert_int_equal(used_len(f, 0, 1), 512);
	assert_int_equal(used_len(f, 0, 2), 502);
	assert_int_equal(r16(f, BUF + 10), 3);
	uint8_t got[1526];
	memcpy(got, ram(f, BUF), 512);
	memcpy(got + 512, ram(f, BUF + 0x1000), 512);
	memcpy(got + 1024, ram(f, BUF + 0x2000), 502);
	assert_memory_equal(got + 12, fr, 1514);

	/* 5 buffers left: a frame needing 6 waits (nothing half-published) */
	uint8_t fr2[2800];
	frame(fr2, sizeof(fr2), 9);
	peer_send(f, fr2, sizeof(fr2));
	pump(f);
	assert_int_equal(used_idx(f, 0), 3);
	/* one more buffer and a kick: it arrives whole, in 6 buffers */
	post_rx(f, 8, 1, 512);
	pump(f);
	assert_int_equal(used_idx(f, 0), 9);
	assert_int_equal(r16(f, BUF + 0x3000 + 10), 6);
	uint32_t total = 0;
	for (unsigned i = 3; i < 9; i++)
		total += used_len(f, 0, i);
	assert_int_equal(total, 12 + sizeof(fr2));
	assert_memory_equal(ram(f, BUF + 0x3000) + 12, fr2, 500);
	/* buffer 8 holds bytes 2560.. of header + frame: frame bytes 2548.. */
	assert_int_equal(used_len(f, 0, 8), 12 + sizeof(fr2) - 512 * 5);
	assert_memory_equal(ram(f, BUF + 0x8000), fr2 + 512 * 5 - 12, sizeof(fr2) + 12 - 512 * 5);
}

/* No buffers: the back end is not read (the guest pushes back); posting
 * buffers later delivers everything in order. */
static void test_rx_backpressure(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	bring_up(f, 1ull << VIRTIO_NET_F_MRG_RXBUF);
	uint8_t fr[200];
	for (unsigned i = 0; i < 10; i++) {
		frame(fr, sizeof(fr), 20 + i);
		peer_send(f, fr, sizeof(fr));
	}
	pump(f);
	assert_int_equal(used_idx(f, 0), 0);
	/* the loop does not spin on the readable back end */
	assert_int_equal(evloop_run_once(&f->vm.loop, 0), 0);
	for (unsigned round = 0; round < 2; round++) {
		post_rx(f, 5 * round, 5, 1526);
		pump(f);
		assert_int_equal(used_idx(f, 0), 5 * (round + 1));
	}
	for (unsigned i = 0; i < 10; i++) {
		frame(fr, sizeof(fr), 20 + i);
		assert_int_equal(used_len(f, 0, i), 212);
		assert_memory_equal(ram(f, BUF + 0x1000ull * used_id(f, 0, i)) + 12, fr, 200);
	}
	assert_int_equal(stats(f).rx_frames, 10);
	assert_int_equal(stats(f).rx_dropped, 0);
}

static void test_rx_offloads_checked(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	bring_up(f, 1ull << VIRTIO_NET_F_MRG_RXBUF);   /* no GUEST_CSUM */
	post_rx(f, 0, 4, 2048);
	uint8_t m[12 + 100];
	memset(m, 0, 12);
	frame(m + 12, 100, 30);
	/* DATA_VALID from the host: cleared (the guest did not take GUEST_CSUM) */
	m[0] = VIRTIO_NET_HDR_F_DATA_VALID;
	peer_send(f, m, sizeof(m));
	/* a GSO frame the guest did not accept: dropped */
	m[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	m[1] = VIRTIO_NET_HDR_GSO_TCPV4;
	peer_send(f, m, sizeof(m));
	pump(f);
	assert_int_equal(used_idx(f, 0), 1);
	assert_int_equal(ram(f, BUF)[0], 0);
	assert_int_equal(ram(f, BUF)[1], 0);
	assert_int_equal(r16(f, BUF + 10), 1);
	assert_int_equal(stats(f).rx_dropped, 1);
	/* with GUEST_CSUM + GUEST_TSO4 it goes through, header intact */
	bring_up(f, (1ull << VIRTIO_NET_F_MRG_RXBUF) | (1ull << VIRTIO_NET_F_GUEST_CSUM) |
		 (1ull << VIRTIO_NET_F_GUEST_TSO4));
	post_rx(f, 0, 4, 2048);
	peer_send(f, m, sizeof(m));
	pump(f);
	assert_int_equal(used_idx(f, 0), 1);
	assert_int_equal(ram(f, BUF)[0], VIRTIO_NET_HDR_F_NEEDS_CSUM);
	assert_int_equal(ram(f, BUF)[1], VIRTIO_NET_HDR_GSO_TCPV4);
}

static void test_hostile_tx(void **ctx)
{
	struct fixture *f = *ctx;
	uint8_t got[64];
	enable_decoding(f);
	bring_up(f, 1ull << VIRTIO_NET_F_MRG_RXBUF);
	/* a short header */
	struct seg s = { BUF, 5, false };
	add_chain(f, 1, &s, 1);
	/* a header and no frame */
	struct seg h = { BUF, 12, false };
	add_chain(f, 1, &h, 1);
	/* an oversize frame without GSO (64 KiB) */
	memset(ram(f, BIG), 0, 12);
	struct seg big = { BIG, 12 + 65536, false };
	add_chain(f, 1, &big, 1);
	/* checksum offload that was not negotiated */
	memset(ram(f, BUF + 0x1000), 0, 12);
	ram(f, BUF + 0x1000)[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	struct seg cs = { BUF + 0x1000, 12 + 60, false };
	add_chain(f, 1, &cs, 1);
	/* a device-writable buffer only */
	struct seg w = { BUF + 0x2000, 100, true };
	add_chain(f, 1, &w, 1);
	kick(f, 1);
	assert_int_equal(used_idx(f, 1), 5);
	assert_int_equal(peer_recv(f, got, sizeof(got)), -EAGAIN);
	assert_int_equal(stats(f).tx_dropped, 5);
	assert_false(status(f) & VIRTIO_STATUS_NEEDS_RESET);
	/* a buffer outside guest RAM: the queue breaks, NEEDS_RESET */
	struct seg out = { 0x7fff0000, 100, false };
	add_chain(f, 1, &out, 1);
	kick(f, 1);
	assert_true(status(f) & VIRTIO_STATUS_NEEDS_RESET);
	/* a reset brings it back */
	bring_up(f, 1ull << VIRTIO_NET_F_MRG_RXBUF);
	memset(ram(f, BUF), 0, 12);
	frame(ram(f, BUF) + 12, 60, 40);
	struct seg ok = { BUF, 72, false };
	add_chain(f, 1, &ok, 1);
	kick(f, 1);
	assert_int_equal(peer_recv(f, got, sizeof(got)), 60);
}

static void test_hostile_rx(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	bring_up(f, 1ull << VIRTIO_NET_F_MRG_RXBUF);
	/* a receive buffer smaller than the header */
	post_rx(f, 0, 1, 8);
	uint8_t fr[60];
	frame(fr, sizeof(fr), 50);
	peer_send(f, fr, sizeof(fr));
	pump(f);
	assert_true(status(f) & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(used_idx(f, 0), 0);
	/* after a reset it receives again */
	bring_up(f, 1ull << VIRTIO_NET_F_MRG_RXBUF);
	post_rx(f, 0, 2, 1526);
	peer_send(f, fr, sizeof(fr));
	pump(f);
	assert_int_equal(used_idx(f, 0), 1);
	assert_memory_equal(ram(f, BUF) + 12, fr, sizeof(fr));
	/* a device-readable buffer on the receive queue, behind buffer 1 */
	struct seg r = { BUF + 0x5000, 100, false };
	add_chain(f, 0, &r, 1);
	kick(f, 0);
	peer_send(f, fr, sizeof(fr));
	pump(f);
	assert_int_equal(used_idx(f, 0), 2);
	assert_false(status(f) & VIRTIO_STATUS_NEEDS_RESET);
	/* the next frame meets it: no room for a header, the queue breaks */
	peer_send(f, fr, sizeof(fr));
	pump(f);
	assert_true(status(f) & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(used_idx(f, 0), 2);
}

static void test_pause_resume(void **ctx)
{
	struct fixture *f = *ctx;
	uint8_t got[128];
	enable_decoding(f);
	bring_up(f, 1ull << VIRTIO_NET_F_MRG_RXBUF);
	post_rx(f, 0, 4, 1526);
	assert_int_equal(f->net->ops->pause(f->net), 0);
	uint8_t fr[80];
	frame(fr, sizeof(fr), 60);
	peer_send(f, fr, sizeof(fr));
	pump(f);
	assert_int_equal(used_idx(f, 0), 0);
	/* a transmit kicked while paused waits too */
	memset(ram(f, BUF + 0x8000), 0, 12);
	frame(ram(f, BUF + 0x8000) + 12, 60, 61);
	struct seg s = { BUF + 0x8000, 72, false };
	add_chain(f, 1, &s, 1);
	kick(f, 1);
	assert_int_equal(peer_recv(f, got, sizeof(got)), -EAGAIN);
	f->net->ops->resume(f->net);
	pump(f);
	assert_int_equal(used_idx(f, 0), 1);
	assert_memory_equal(ram(f, BUF) + 12, fr, sizeof(fr));
	assert_int_equal(peer_recv(f, got, sizeof(got)), 60);
	assert_int_equal(used_idx(f, 1), 1);
}

static void save(struct device *d, struct state_writer *w)
{
	sw_init(w);
	assert_int_equal(d->ops->save(d, w), 0);
}

/* Mid-stream save, load into a fresh VM (RAM copied, a new back end, another
 * MAC in its configuration): the saved MAC wins, and both directions carry
 * on where they were. */
static void test_save_load_fresh_vm(void **ctx)
{
	struct fixture *f = *ctx;
	struct terr err = { 0 };
	uint8_t got[256], fr[100];
	enable_decoding(f);
	bring_up(f, (1ull << VIRTIO_NET_F_MRG_RXBUF) | (1ull << VIRTIO_F_EVENT_IDX));
	post_rx(f, 0, 6, 1526);
	frame(fr, sizeof(fr), 70);
	peer_send(f, fr, sizeof(fr));
	pump(f);
	memset(ram(f, BUF + 0x8000), 0, 12);
	frame(ram(f, BUF + 0x8000) + 12, 60, 71);
	struct seg s = { BUF + 0x8000, 72, false };
	add_chain(f, 1, &s, 1);
	kick(f, 1);
	assert_int_equal(peer_recv(f, got, sizeof(got)), 60);
	assert_int_equal(used_idx(f, 0), 1);
	assert_int_equal(used_idx(f, 1), 1);

	vm_pause(&f->vm);
	struct state_writer a;
	save(f->net, &a);

	struct fixture *g = calloc(1, sizeof(*g));
	static const uint8_t other[6] = { 0x52, 0x54, 0, 0, 0, 1 };
	assert_int_equal(make_vm(g, false, 0, other, 0), 0);
	memcpy(g->vm.mem.base, f->vm.mem.base, f->vm.mem.size);
	g->net->ops->pause(g->net);
	struct state_reader r;
	assert_int_equal(sr_init(&r, a.buf, a.len, "net.0", &err), 0);
	if (g->net->ops->load(g->net, &r, &err))
		fail_msg("%s", err.msg);
	sr_free(&r);
	struct state_writer b;
	save(g->net, &b);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.buf, b.buf, a.len);
	g->net->ops->resume(g->net);
	g->bar = pci_bar_address(g->pd, VIRTIO_PCI_BAR);
	assert_int_equal(g->bar, f->bar);
	assert_true(status(g) & VIRTIO_STATUS_DRIVER_OK);
	for (unsigned i = 0; i < 6; i++)
		assert_int_equal(rd(g, VIRTIO_PCI_DEVICE_OFF + i, 1), MAC[i]);
	/* receive continues in buffer 1, transmit in used slot 1 */
	memcpy(g->next_desc, f->next_desc, sizeof(g->next_desc));
	frame(fr, sizeof(fr), 72);
	peer_send(g, fr, sizeof(fr));
	pump(g);
	assert_int_equal(used_idx(g, 0), 2);
	assert_int_equal(used_id(g, 0, 1), 1);
	assert_memory_equal(ram(g, BUF + 0x1000) + 12, fr, sizeof(fr));
	memset(ram(g, BUF + 0x9000), 0, 12);
	frame(ram(g, BUF + 0x9000) + 12, 70, 73);
	struct seg s2 = { BUF + 0x9000, 82, false };
	add_chain(g, 1, &s2, 1);
	kick(g, 1);
	assert_int_equal(peer_recv(g, got, sizeof(got)), 70);
	assert_int_equal(used_idx(g, 1), 2);
	/* the original is untouched */
	assert_int_equal(used_idx(f, 0), 1);
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
	bring_up(f, 1ull << VIRTIO_NET_F_MRG_RXBUF);
	uint8_t fr[60];
	frame(fr, sizeof(fr), 80);
	peer_send(f, fr, sizeof(fr));
	pump(f);    /* waits: no buffers */
	f->net->ops->reset(f->net);
	enable_decoding(f);
	assert_int_equal(status(f), 0);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0);
	/* after the driver comes back, the next frame arrives (the one that
	 * waited across the reset may be gone: a reset drops in-flight work) */
	bring_up(f, 1ull << VIRTIO_NET_F_MRG_RXBUF);
	post_rx(f, 0, 2, 1526);
	pump(f);
	frame(fr, sizeof(fr), 81);
	peer_send(f, fr, sizeof(fr));
	pump(f);
	uint16_t n = used_idx(f, 0);
	assert_true(n >= 1);
	assert_memory_equal(ram(f, BUF + 0x1000ull * used_id(f, 0, n - 1)) + 12, fr, sizeof(fr));
}

static void test_default_mac(void **ctx)
{
	(void)ctx;
	uint8_t a[6], b[6], c[6], d[6];
	virtio_net_default_mac("tern", 0, a);
	virtio_net_default_mac("tern", 0, b);
	virtio_net_default_mac("tern", 1, c);
	virtio_net_default_mac("other", 0, d);
	assert_memory_equal(a, b, 6);
	assert_memory_not_equal(a, c, 6);
	assert_memory_not_equal(a, d, 6);
	for (const uint8_t *m = a; m; m = m == a ? c : m == c ? d : NULL) {
		assert_int_equal(m[0] & 1, 0);      /* unicast */
		assert_int_equal(m[0] & 2, 2);      /* locally administered */
	}
}

/* Two bytes of the device-specific config of the virtio-net named `name`
 * (not the fixture's own device). */
static uint16_t dev_cfg16(struct fixture *f, const char *name, unsigned off)
{
	struct pci_device *pd = NULL;
	for (unsigned s = 0; s < PCI_SLOTS && !pd; s++) {
		struct pci_device *p = pci_bus_device(f->bus, s);
		if (p && !strcmp(p->name, name) && p != f->pd)
			pd = p;
	}
	assert_non_null(pd);
	pci_config_write(pd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
	uint64_t v = 0;
	assert_int_equal(bus_read(&f->vm.mmio, pci_bar_address(pd, VIRTIO_PCI_BAR) +
				  VIRTIO_PCI_DEVICE_OFF + off, &v, 2), 0);
	return (uint16_t)v;
}

/* net.N from the configuration: back end, MAC (set or derived), forwards,
 * MTU, and the errors for settings that do not go together. */
static void test_from_config(void **ctx)
{
	struct fixture *f = *ctx;
	struct config *cfg = config_new();
	struct terr err = { 0 };
	struct device *d;
	static const char *const set[] = {
		"name=vm1", "net.0.hostfwd=tcp:127.0.0.1:1-:22", "net.1.backend=tap",
		"net.1.hostfwd=tcp::2-:22", "net.2.tap=tap9", "net.3.hostfwd=tcp::3-:22,bogus",
		"net.4.mac=52:54:00:00:00:07", "net.5.mtu=9000", "net.6.mtu=67",
	};
	for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++)
		assert_int_equal(config_set_option(cfg, set[i], &err), 0);
	/* net.0: user, forward on a port nobody may take without root (or
	 * taken): either way an error names net.0.hostfwd, or it works */
	int r = virtio_net_create_from_config(&f->vm, f->bus, cfg, 0, &d, &err);
	if (r) {
		assert_non_null(strstr(err.msg, "net.0.hostfwd: cannot listen on tcp port 127.0.0.1:1"));
	} else {
		uint8_t mac[6];
		virtio_net_default_mac("vm1", 0, mac);
		struct pci_device *pd = NULL;
		for (unsigned s = 0; s < PCI_SLOTS && !pd; s++) {
			struct pci_device *p = pci_bus_device(f->bus, s);
			if (p && !strcmp(p->name, "net.0") && p != f->pd)
				pd = p;
		}
		assert_non_null(pd);
		assert_string_equal(d->id, "net.0");
		pci_config_write(pd, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
		uint64_t bar = pci_bar_address(pd, VIRTIO_PCI_BAR);
		for (unsigned i = 0; i < 6; i++) {
			uint64_t v = 0;
			assert_int_equal(bus_read(&f->vm.mmio, bar + VIRTIO_PCI_DEVICE_OFF + i, &v, 1), 0);
			assert_int_equal(v, mac[i]);
		}
	}
	terr_clear(&err);
	assert_int_equal(virtio_net_create_from_config(&f->vm, f->bus, cfg, 1, &d, &err), -EINVAL);
	assert_string_equal(err.msg, "net.1.hostfwd only applies to the user back end "
			    "(net.1.backend is tap)");
	terr_clear(&err);
	assert_int_equal(virtio_net_create_from_config(&f->vm, f->bus, cfg, 2, &d, &err), -EINVAL);
	assert_string_equal(err.msg, "net.2.tap is set but net.2.backend is user (set "
			    "net.2.backend=tap to use a tap)");
	terr_clear(&err);
	assert_int_equal(virtio_net_create_from_config(&f->vm, f->bus, cfg, 3, &d, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "net.3.hostfwd: forward 2 \"bogus\": expected"));
	terr_clear(&err);
	if (virtio_net_create_from_config(&f->vm, f->bus, cfg, 4, &d, &err))
		fail_msg("%s", err.msg);
	assert_string_equal(d->id, "net.4");
	/* the user back end's MTU by default, or the one set */
	assert_int_equal(dev_cfg16(f, "net.4", 10), NET_SLIRP_MTU);
	if (virtio_net_create_from_config(&f->vm, f->bus, cfg, 5, &d, &err))
		fail_msg("%s", err.msg);
	assert_int_equal(dev_cfg16(f, "net.5", 10), 9000);
	assert_int_equal(virtio_net_create_from_config(&f->vm, f->bus, cfg, 6, &d, &err), -EINVAL);
	assert_string_equal(err.msg, "net.6.mtu: 67 is below the smallest IPv4 MTU, 68 (0 picks "
			    "one for the back end)");
	config_free(cfg);
}

/* One control command: class, command, data; returns the ack byte. */
static uint8_t ctrl(struct fixture *f, uint8_t cls, uint8_t cmd, const void *data, uint32_t len)
{
	uint8_t *p = ram(f, BUF + 0xa000);
	p[0] = cls;
	p[1] = cmd;
	if (len)
		memcpy(ram(f, BUF + 0xb000), data, len);
	*ram(f, BUF + 0xc000) = 0xee;
	struct seg s[3] = { { BUF + 0xa000, 2, false }, { BUF + 0xb000, len, false },
			    { BUF + 0xc000, 1, true } };
	uint16_t before = used_idx(f, 2);
	add_chain(f, 2, s, 3);
	kick(f, 2);
	assert_int_equal(used_idx(f, 2), (uint16_t)(before + 1));
	assert_int_equal(used_len(f, 2, before), 1);
	return *ram(f, BUF + 0xc000);
}

static void test_ctrl_and_announce(void **ctx)
{
	struct fixture *f = *ctx;
	struct terr err = { 0 };
	enable_decoding(f);
	uint64_t feat = offered(f);
	static const unsigned want[] = { VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_CTRL_RX,
					 VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_CTRL_MAC_ADDR };
	for (unsigned i = 0; i < 4; i++)
		assert_true(feat & (1ull << want[i]));
	bring_up(f, (1ull << VIRTIO_NET_F_MRG_RXBUF) | (1ull << VIRTIO_NET_F_CTRL_VQ) |
		 (1ull << VIRTIO_NET_F_CTRL_RX) | (1ull << VIRTIO_NET_F_GUEST_ANNOUNCE) |
		 (1ull << VIRTIO_NET_F_CTRL_MAC_ADDR));
	uint8_t on = 1;
	assert_int_equal(ctrl(f, 0, 0, &on, 1), 0);            /* promiscuous on */
	assert_int_equal(ctrl(f, 0, 1, &on, 1), 0);            /* all-multicast on */
	assert_int_equal(ctrl(f, 0, 9, &on, 1), 1);            /* no such command */
	assert_int_equal(ctrl(f, 9, 0, &on, 1), 1);            /* no such class */
	/* MAC filter tables: no unicast, one multicast */
	uint8_t tables[4 + 4 + 6] = { 0, 0, 0, 0, 1, 0, 0, 0, 0x01, 0x00, 0x5e, 0, 0, 1 };
	assert_int_equal(ctrl(f, 1, 0, tables, sizeof(tables)), 0);
	tables[4] = 2;                                          /* claims two, holds one */
	assert_int_equal(ctrl(f, 1, 0, tables, sizeof(tables)), 1);
	/* a new MAC address, seen in the configuration */
	static const uint8_t mac2[6] = { 0x52, 0x54, 0x00, 0x99, 0x88, 0x77 };
	assert_int_equal(ctrl(f, 1, 1, mac2, 6), 0);
	for (unsigned i = 0; i < 6; i++)
		assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF + i, 1), mac2[i]);
	static const uint8_t mcast[6] = { 0x01, 0x54, 0, 0, 0, 1 };
	assert_int_equal(ctrl(f, 1, 1, mcast, 6), 1);
	assert_int_equal(ctrl(f, 3, 0, NULL, 0), 0);           /* an ack nobody asked for */

	/* save, load, resume: the guest is asked to announce itself */
	vm_pause(&f->vm);
	struct state_writer w;
	sw_init(&w);
	assert_int_equal(f->net->ops->save(f->net, &w), 0);
	struct state_reader r;
	assert_int_equal(sr_init(&r, w.buf, w.len, "net.0", &err), 0);
	assert_int_equal(f->net->ops->load(f->net, &r, &err), 0);
	sr_free(&r);
	sw_free(&w);
	rd(f, VIRTIO_PCI_ISR_OFF, 1);
	uint8_t gen = (uint8_t)rd(f, VIRTIO_PCI_COMMON_CFGGENERATION, 1);
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF + 6, 2), VIRTIO_NET_S_LINK_UP);
	vm_resume(&f->vm);
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF + 6, 2),
			 VIRTIO_NET_S_LINK_UP | VIRTIO_NET_S_ANNOUNCE);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_CFGGENERATION, 1), (uint8_t)(gen + 1));
	assert_int_equal(rd(f, VIRTIO_PCI_ISR_OFF, 1), VIRTIO_PCI_ISR_CONFIG);
	/* the MAC the guest set survived */
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF + 5, 1), mac2[5]);
	assert_int_equal(ctrl(f, 3, 0, NULL, 0), 0);
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF + 6, 2), VIRTIO_NET_S_LINK_UP);
	/* a second resume does not announce again */
	vm_pause(&f->vm);
	vm_resume(&f->vm);
	assert_int_equal(rd(f, VIRTIO_PCI_DEVICE_OFF + 6, 2), VIRTIO_NET_S_LINK_UP);

	/* a command without room for its status: the queue breaks */
	struct seg bad = { BUF + 0xa000, 3, false };
	add_chain(f, 2, &bad, 1);
	kick(f, 2);
	assert_true(status(f) & VIRTIO_STATUS_NEEDS_RESET);
}

#define TP(fn) cmocka_unit_test_setup_teardown(fn, setup_plain, teardown)
#define TV(fn) cmocka_unit_test_setup_teardown(fn, setup_vnet, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		TP(test_identity_and_config),
		TV(test_features_with_vnet_hdr),
		TP(test_tx),
		cmocka_unit_test_setup_teardown(test_tx_up_to_mtu, setup_mtu, teardown),
		TV(test_tx_vnet_hdr_passthrough),
		TP(test_rx_single),
		TP(test_rx_mergeable),
		TP(test_rx_backpressure),
		TV(test_rx_offloads_checked),
		TP(test_hostile_tx),
		TP(test_hostile_rx),
		TP(test_pause_resume),
		TP(test_save_load_fresh_vm),
		TP(test_device_reset),
		cmocka_unit_test(test_default_mac),
		TP(test_from_config),
		TP(test_ctrl_and_announce),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
