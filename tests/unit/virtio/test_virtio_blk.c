/* virtio-blk behind the modern virtio-pci transport on a real /dev/kvm VM,
 * driven the way Linux's virtio_blk driver drives it (header, data, status
 * byte; one request queue per vCPU), on raw images (io_uring, and the
 * worker-thread engine) and qcow2 images (vdisk on worker threads) in a
 * temporary directory: identity and configuration, reads and writes checked
 * against the image file, flush, discard (the file's allocation shrinks),
 * write-zeroes, GET_ID, read-only disks, multiple queues, request-level
 * validation of hostile requests, pause with requests in flight, save ->
 * load -> save with requests in flight (and into a fresh VM), device reset
 * with requests in flight, and two disks. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <vdisk.h>

#include "arch/x86/acpi.h"
#include "core/kvm.h"
#include "core/vm.h"
#include "pci/pci.h"
#include "virtio/virtio_blk.h"
#include "virtio/virtio_dev.h"
#include "virtio/virtio_pci.h"

#define SLOT 3
#define QS 64                       /* the driver's queue size */
#define SLOTS 16                    /* requests in flight per queue (4 descriptors each) */
#define MEM (32u << 20)
#define RING(q)  (0x100000ull + 0x10000ull * (q))
#define DESC(q)  RING(q)
#define AVAIL(q) (RING(q) + 0x1000)
#define USED(q)  (RING(q) + 0x2000)
#define HDR(q, s) (0x200000ull + 0x1000ull * (q) + 64ull * (s))
#define DATA(q, s) (0x400000ull + 0x400000ull * (q) + 0x40000ull * (s))   /* 256 KiB each */
#define DISK_SIZE (8u << 20)
#define SECTORS (DISK_SIZE / 512)

struct fixture {
	struct kvm_sys kvm;
	struct vm vm;
	struct acpi_config acpi;
	struct device *host, *blk;
	struct pci_bus *bus;
	struct pci_device *pd;
	uint64_t bar;
	char dir[64];
	char path[128];
	const char *format;
	enum blk_engine engine;
	bool readonly;
	unsigned queues;
	uint16_t avail_idx[4];
	uint16_t used_seen[4];
};

/* --- images --- */

static void make_image(struct fixture *f, const char *format)
{
	snprintf(f->path, sizeof(f->path), "%s/disk.%s", f->dir, format);
	f->format = format;
	if (!strcmp(format, "raw")) {
		int fd = open(f->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
		assert_true(fd >= 0);
		assert_int_equal(ftruncate(fd, DISK_SIZE), 0);
		close(fd);
	} else {
		struct vdisk_create_opts o = { .format = format, .size = DISK_SIZE };
		struct vdisk_error e;
		if (vdisk_create(f->path, &o, &e) < 0)
			fail_msg("%s", e.msg);
	}
}

/* Read the image through vdisk (after the device is gone). */
static void image_read(struct fixture *f, void *buf, size_t len, uint64_t off)
{
	struct vdisk *d;
	struct vdisk_error e;
	struct vdisk_open_opts o = { .format = f->format };
	if (vdisk_open(&d, f->path, &o, &e) < 0)
		fail_msg("%s", e.msg);
	assert_int_equal(vdisk_pread(d, buf, len, off), 0);
	vdisk_close(d);
}

/* --- the VM --- */

static int make_vm(struct fixture *f)
{
	struct terr err = { 0 };
	if (kvm_sys_open(&f->kvm, "/dev/kvm", &err) ||
	    vm_create(&f->vm, &f->kvm, MEM, f->queues, NULL, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	struct pci_host_params p;
	acpi_config_defaults(&f->acpi, &f->vm.mem, f->queues);
	pci_host_params_from_acpi(&p, &f->acpi);
	if (pci_host_create(&f->vm, &p, &f->host, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	f->bus = pci_host_bus(f->host);
	struct virtio_blk_params bp = {
		.id = "blk.0", .path = f->path, .format = f->format, .readonly = f->readonly,
		.queues = f->queues, .engine = f->engine, .slot = SLOT,
	};
	if (virtio_blk_create(&f->vm, f->bus, &bp, &f->blk, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	f->pd = pci_bus_device(f->bus, SLOT);
	memset(f->avail_idx, 0, sizeof(f->avail_idx));
	memset(f->used_seen, 0, sizeof(f->used_seen));
	return f->pd ? 0 : -1;
}

static void free_vm(struct fixture *f)
{
	vm_destroy(&f->vm);
	kvm_sys_close(&f->kvm);
}

static int setup_common(void **ctx, const char *format, enum blk_engine engine, bool ro,
			unsigned queues)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *base = getenv("TERN_TEST_BLK_DIR");
	snprintf(f->dir, sizeof(f->dir), "%s/tern-blk-XXXXXX", base ? base : "/tmp");
	if (!mkdtemp(f->dir))
		return -1;
	f->engine = engine;
	f->readonly = ro;
	f->queues = queues;
	make_image(f, format);
	if (make_vm(f)) {
		free(f);
		return -1;
	}
	*ctx = f;
	return 0;
}

static int setup_raw(void **ctx) { return setup_common(ctx, "raw", BLK_ENGINE_AUTO, false, 1); }
/* The image on tmpfs: small reads and writes are served inline (blk_uring.c) */
static int setup_shm(void **ctx, const char *format)
{
	struct stat st;
	if (stat("/dev/shm", &st) || !S_ISDIR(st.st_mode))
		return setup_common(ctx, format, BLK_ENGINE_AUTO, false, 1);   /* the test skips */
	setenv("TERN_TEST_BLK_DIR", "/dev/shm", 1);
	int r = setup_common(ctx, format, BLK_ENGINE_AUTO, false, 1);
	unsetenv("TERN_TEST_BLK_DIR");
	return r;
}
static int setup_raw_shm(void **ctx) { return setup_shm(ctx, "raw"); }
static int setup_qcow2_shm(void **ctx) { return setup_shm(ctx, "qcow2"); }
static int setup_raw_threads(void **ctx) { return setup_common(ctx, "raw", BLK_ENGINE_THREADS, false, 1); }
static int setup_qcow2(void **ctx) { return setup_common(ctx, "qcow2", BLK_ENGINE_AUTO, false, 1); }
static int setup_raw_mq(void **ctx) { return setup_common(ctx, "raw", BLK_ENGINE_AUTO, false, 2); }
static int setup_ro(void **ctx) { return setup_common(ctx, "raw", BLK_ENGINE_AUTO, true, 1); }

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
	__atomic_load((uint16_t *)ram(f, gpa), &v, __ATOMIC_ACQUIRE);
	return v;
}

static uint32_t r32(struct fixture *f, uint64_t gpa)
{
	uint32_t v;
	memcpy(&v, ram(f, gpa), 4);
	return v;
}

static uint64_t features(struct fixture *f)
{
	wr(f, VIRTIO_PCI_COMMON_DFSELECT, 4, 0);
	uint64_t lo = rd(f, VIRTIO_PCI_COMMON_DF, 4);
	wr(f, VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
	return lo | rd(f, VIRTIO_PCI_COMMON_DF, 4) << 32;
}

/* Linux's order: reset, ACK, DRIVER, features, FEATURES_OK, queues, DRIVER_OK.
 * Accepts everything offered. */
static void bring_up(struct fixture *f)
{
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, 0);
	assert_int_equal(status(f), 0);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	uint64_t feat = features(f);
	wr(f, VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
	wr(f, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)feat);
	wr(f, VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
	wr(f, VIRTIO_PCI_COMMON_GF, 4, (uint32_t)(feat >> 32));
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	   VIRTIO_STATUS_FEATURES_OK);
	assert_true(status(f) & VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(rd(f, VIRTIO_PCI_COMMON_NUMQ, 2), f->queues);
	for (unsigned q = 0; q < f->queues; q++) {
		wr(f, VIRTIO_PCI_COMMON_Q_SELECT, 2, q);
		assert_int_equal(rd(f, VIRTIO_PCI_COMMON_Q_SIZE, 2), VIRTIO_BLK_QUEUE_SIZE);
		wr(f, VIRTIO_PCI_COMMON_Q_SIZE, 2, QS);
		memset(ram(f, RING(q)), 0, 0x3000);
		wr64(f, VIRTIO_PCI_COMMON_Q_DESCLO, DESC(q));
		wr64(f, VIRTIO_PCI_COMMON_Q_AVAILLO, AVAIL(q));
		wr64(f, VIRTIO_PCI_COMMON_Q_USEDLO, USED(q));
		wr(f, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
		f->avail_idx[q] = 0;
		f->used_seen[q] = 0;
	}
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	   VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	assert_true(status(f) & VIRTIO_STATUS_DRIVER_OK);
}

struct seg {
	uint64_t gpa;
	uint32_t len;
	bool write;   /* device-writable */
};

static void put_desc(struct fixture *f, unsigned q, uint16_t i, const struct seg *s, bool next)
{
	uint8_t *p = ram(f, DESC(q) + 16u * i);
	uint16_t flags = (uint16_t)((s->write ? VIRTQ_DESC_F_WRITE : 0) | (next ? VIRTQ_DESC_F_NEXT : 0));
	uint16_t nx = (uint16_t)(i + 1);
	memcpy(p, &s->gpa, 8);
	memcpy(p + 8, &s->len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &nx, 2);
}

static void kick(struct fixture *f, unsigned q)
{
	wr(f, VIRTIO_PCI_NOTIFY_OFF + VIRTIO_PCI_NOTIFY_MULT * q, 2, q);
}

/* Post a chain of up to 4 segments in request slot (avail index % SLOTS);
 * returns the slot. */
static unsigned post_chain(struct fixture *f, unsigned q, const struct seg *segs, unsigned n,
			   bool do_kick)
{
	unsigned slot = f->avail_idx[q] % SLOTS;
	uint16_t head = (uint16_t)(4 * slot);
	assert_true(n >= 1 && n <= 4);
	for (unsigned i = 0; i < n; i++)
		put_desc(f, q, (uint16_t)(head + i), &segs[i], i + 1 < n);
	w16(f, AVAIL(q) + 4 + 2 * (f->avail_idx[q] % QS), head);
	f->avail_idx[q]++;
	__atomic_thread_fence(__ATOMIC_RELEASE);
	w16(f, AVAIL(q) + 2, f->avail_idx[q]);
	if (do_kick)
		kick(f, q);
	return slot;
}

/* A request the way Linux builds it: header, data (if any), status. */
static unsigned post_req(struct fixture *f, unsigned q, uint32_t type, uint64_t sector,
			 uint64_t data, uint32_t len, bool do_kick)
{
	unsigned slot = f->avail_idx[q] % SLOTS;
	uint64_t hdr = HDR(q, slot);
	uint8_t h[16] = { 0 };
	memcpy(h, &type, 4);
	memcpy(h + 8, &sector, 8);
	memcpy(ram(f, hdr), h, 16);
	*(uint8_t *)ram(f, hdr + 16) = 0xee;   /* the device must overwrite it */
	struct seg s[3] = { { hdr, 16, false } };
	unsigned n = 1;
	if (len)
		s[n++] = (struct seg){ data, len, type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID };
	s[n++] = (struct seg){ hdr + 16, 1, true };
	return post_chain(f, q, s, n, do_kick);
}

static uint8_t req_status(struct fixture *f, unsigned q, unsigned slot)
{
	return *(volatile uint8_t *)ram(f, HDR(q, slot) + 16);
}

/* Run the event loop until queue q's used index reaches `want`. */
static void wait_used(struct fixture *f, unsigned q, uint16_t want)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while ((uint16_t)(r16(f, USED(q) + 2) - want) > 0x8000) {
		evloop_run_once(&f->vm.loop, 20);
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec > 10)
			fail_msg("queue %u: used index %u, waited for %u", q, r16(f, USED(q) + 2), want);
	}
}

/* One request, start to end: returns its status. */
static uint8_t do_req(struct fixture *f, unsigned q, uint32_t type, uint64_t sector, uint64_t data,
		      uint32_t len)
{
	unsigned slot = post_req(f, q, type, sector, data, len, true);
	wait_used(f, q, f->avail_idx[q]);
	f->used_seen[q] = f->avail_idx[q];
	return req_status(f, q, slot);
}

static void fill(struct fixture *f, uint64_t gpa, uint32_t len, unsigned seed)
{
	uint8_t *p = ram(f, gpa);
	for (uint32_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
}

static bool is_fill(const uint8_t *p, uint32_t len, unsigned seed)
{
	for (uint32_t i = 0; i < len; i++)
		if (p[i] != (uint8_t)(seed * 131 + i * 7 + (i >> 9)))
			return false;
	return true;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

static uint64_t cfg(struct fixture *f, unsigned off, unsigned size)
{
	return rd(f, VIRTIO_PCI_DEVICE_OFF + off, size);
}

/* --- tests --- */

static void test_identity_and_config(void **ctx)
{
	struct fixture *f = *ctx;
	assert_int_equal(pci_config_read(f->pd, PCI_VENDOR_ID, 2), 0x1af4);
	assert_int_equal(pci_config_read(f->pd, PCI_DEVICE_ID, 2), 0x1042);
	assert_int_equal(pci_config_read(f->pd, PCI_CLASS_DEVICE, 2), 0x0100);
	enable_decoding(f);
	uint64_t feat = features(f);
	uint64_t want = (1ull << VIRTIO_BLK_F_SEG_MAX) | (1ull << VIRTIO_BLK_F_BLK_SIZE) |
			(1ull << VIRTIO_BLK_F_FLUSH) | (1ull << VIRTIO_BLK_F_MQ) |
			(1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES) |
			(1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_F_INDIRECT_DESC) |
			(1ull << VIRTIO_F_EVENT_IDX);
	assert_int_equal(feat, want);
	assert_int_equal(cfg(f, VIRTIO_BLK_CFG_CAPACITY, 8), SECTORS);
	assert_int_equal(cfg(f, VIRTIO_BLK_CFG_CAPACITY, 4), SECTORS);
	assert_int_equal(cfg(f, VIRTIO_BLK_CFG_SEG_MAX, 4), VIRTIO_BLK_QUEUE_SIZE - 2);
	assert_int_equal(cfg(f, VIRTIO_BLK_CFG_BLK_SIZE, 4), 512);
	assert_int_equal(cfg(f, VIRTIO_BLK_CFG_NUM_QUEUES, 2), 1);
	assert_int_equal(cfg(f, VIRTIO_BLK_CFG_MAX_DISCARD_SEG, 4), 1);
	assert_int_equal(cfg(f, VIRTIO_BLK_CFG_MAX_DISCARD_SECT, 4), VIRTIO_BLK_MAX_DISCARD_SECTORS);
	assert_true(cfg(f, VIRTIO_BLK_CFG_DISCARD_ALIGN, 4) >= 1);
	assert_int_equal(cfg(f, VIRTIO_BLK_CFG_WZ_MAY_UNMAP, 1), 1);
	assert_int_equal(cfg(f, VIRTIO_BLK_CFG_SIZE, 4), 0);   /* past the end */
	assert_string_equal(virtio_blk_engine(f->blk), "io_uring");
}

/* Writes and reads of several sizes and offsets, checked against the image
 * file; then flush. */
static void rw_roundtrip(struct fixture *f)
{
	enable_decoding(f);
	bring_up(f);
	static const struct { uint64_t sector; uint32_t len; } io[] = {
		{ 0, 512 }, { 1, 4096 }, { 100, 65536 }, { SECTORS - 8, 4096 }, { 2000, 256 * 1024 },
		{ 777, 1536 },
	};
	for (unsigned i = 0; i < sizeof(io) / sizeof(io[0]); i++) {
		fill(f, DATA(0, 0), io[i].len, i + 1);
		assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_OUT, io[i].sector, DATA(0, 0), io[i].len),
				 VIRTIO_BLK_S_OK);
		/* used length of a write: the status byte */
		assert_int_equal(r32(f, USED(0) + 4 + 8 * ((f->avail_idx[0] - 1) % QS) + 4), 1);
	}
	for (unsigned i = 0; i < sizeof(io) / sizeof(io[0]); i++) {
		memset(ram(f, DATA(0, 1)), 0x5a, io[i].len);
		assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, io[i].sector, DATA(0, 1), io[i].len),
				 VIRTIO_BLK_S_OK);
		assert_int_equal(r32(f, USED(0) + 4 + 8 * ((f->avail_idx[0] - 1) % QS) + 4), io[i].len + 1);
		if (!is_fill(ram(f, DATA(0, 1)), io[i].len, i + 1))
			fail_msg("read back of request %u differs", i);
	}
	/* many in flight at once, on different slots */
	for (unsigned s = 0; s < SLOTS; s++) {
		fill(f, DATA(0, s), 65536, 100 + s);
		post_req(f, 0, VIRTIO_BLK_T_OUT, 4096 + 128ull * s, DATA(0, s), 65536, s == SLOTS - 1);
	}
	wait_used(f, 0, f->avail_idx[0]);
	for (unsigned s = 0; s < SLOTS; s++)
		assert_int_equal(req_status(f, 0, s), VIRTIO_BLK_S_OK);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_FLUSH, 0, 0, 0), VIRTIO_BLK_S_OK);
	assert_int_equal(virtio_blk_inflight(f->blk), 0);

	/* the image holds it (read after the device closed it) */
	free_vm(f);
	f->vm.fd = -1;
	uint8_t *buf = malloc(256 * 1024);
	for (unsigned i = 0; i < sizeof(io) / sizeof(io[0]); i++) {
		image_read(f, buf, io[i].len, io[i].sector * 512);
		if (!is_fill(buf, io[i].len, i + 1))
			fail_msg("image content of request %u differs", i);
	}
	for (unsigned s = 0; s < SLOTS; s++) {
		image_read(f, buf, 65536, (4096 + 128ull * s) * 512);
		assert_true(is_fill(buf, 65536, 100 + s));
	}
	free(buf);
	if (strcmp(f->format, "raw")) {
		struct vdisk *d;
		struct vdisk_error e;
		struct vdisk_open_opts o = { .format = f->format };
		assert_int_equal(vdisk_open(&d, f->path, &o, &e), 0);
		struct vdisk_check_result res = { 0 };
		assert_int_equal(vdisk_check(d, &res, 0), 0);
		assert_int_equal(res.corruptions, 0);
		assert_int_equal(res.leaks, 0);
		vdisk_close(d);
	}
}

static void test_rw_raw(void **ctx)
{
	rw_roundtrip(*ctx);
}

/* On tmpfs a small request completes during the notification itself: the
 * used ring has it before the event loop ever runs (on other file systems
 * the completion comes from io_uring through the loop). The round trip
 * then also holds there. */
static void tmpfs_inline(struct fixture *f)
{
	if (strncmp(f->dir, "/dev/shm/", 9))
		skip();
	enable_decoding(f);
	bring_up(f);
	for (unsigned i = 0; i < 8; i++) {
		fill(f, DATA(0, 0), 4096, 40 + i);
		post_req(f, 0, VIRTIO_BLK_T_OUT, 64 + 8 * i, DATA(0, 0), 4096, true);
		assert_int_equal(r16(f, USED(0) + 2), f->avail_idx[0]);
		assert_int_equal(req_status(f, 0, (f->avail_idx[0] - 1) % SLOTS), VIRTIO_BLK_S_OK);
		f->used_seen[0] = f->avail_idx[0];
		memset(ram(f, DATA(0, 1)), 0, 4096);
		post_req(f, 0, VIRTIO_BLK_T_IN, 64 + 8 * i, DATA(0, 1), 4096, true);
		assert_int_equal(r16(f, USED(0) + 2), f->avail_idx[0]);
		f->used_seen[0] = f->avail_idx[0];
		if (!is_fill(ram(f, DATA(0, 1)), 4096, 40 + i))
			fail_msg("inline read back of request %u differs", i);
	}
	/* larger than the inline limit: through io_uring and the loop */
	fill(f, DATA(0, 2), 256 * 1024, 7);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_OUT, 4096, DATA(0, 2), 256 * 1024), VIRTIO_BLK_S_OK);
	rw_roundtrip(f);
}

static void test_rw_raw_tmpfs_inline(void **ctx)
{
	struct fixture *f = *ctx;
	assert_string_equal(virtio_blk_engine(f->blk), "io_uring");
	tmpfs_inline(f);
}

/* qcow2 (vdisk on worker threads): the same, allocation included */
static void test_rw_qcow2_tmpfs_inline(void **ctx)
{
	struct fixture *f = *ctx;
	assert_string_equal(virtio_blk_engine(f->blk), "threads");
	tmpfs_inline(f);
}

static void test_rw_raw_threads(void **ctx)
{
	struct fixture *f = *ctx;
	assert_string_equal(virtio_blk_engine(f->blk), "threads");
	rw_roundtrip(f);
}

static void test_rw_qcow2(void **ctx)
{
	struct fixture *f = *ctx;
	assert_string_equal(virtio_blk_engine(f->blk), "threads");
	rw_roundtrip(f);
}

static uint64_t allocated(struct fixture *f)
{
	struct stat st;
	assert_int_equal(stat(f->path, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

/* Discard gives space back; write-zeroes reads back as zeroes, with and
 * without unmap. */
static void discard_zeroes(struct fixture *f)
{
	enable_decoding(f);
	bring_up(f);
	uint64_t before = allocated(f);
	/* 4 MiB of data: sectors 0-8191, 256 KiB per write */
	for (unsigned i = 0; i < 16; i++) {
		fill(f, DATA(0, 0), 256 * 1024, 7 + i);
		assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_OUT, 512ull * i, DATA(0, 0), 256 * 1024),
				 VIRTIO_BLK_S_OK);
	}
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_FLUSH, 0, 0, 0), VIRTIO_BLK_S_OK);
	uint64_t full = allocated(f);
	assert_true(full >= before + 4 * 1024 * 1024);

	/* discard the first MiB */
	uint8_t seg[16] = { 0 };
	uint64_t sector = 0;
	uint32_t n = 2048, flags = 0;
	memcpy(seg, &sector, 8);
	memcpy(seg + 8, &n, 4);
	memcpy(seg + 12, &flags, 4);
	memcpy(ram(f, DATA(0, 2)), seg, 16);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_DISCARD, 0, DATA(0, 2), 16), VIRTIO_BLK_S_OK);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_FLUSH, 0, 0, 0), VIRTIO_BLK_S_OK);
	uint64_t after = allocated(f);
	if (!(after + 960 * 1024 <= full))   /* qcow2 may write a metadata page */
		fail_msg("discard of 1 MiB: allocation %llu -> %llu", (unsigned long long)full,
			 (unsigned long long)after);
	/* discarded data reads as zeroes here (raw: a hole; qcow2 without
	 * backing: unallocated) */
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, 0, DATA(0, 3), 65536), VIRTIO_BLK_S_OK);
	assert_true(all_zero(ram(f, DATA(0, 3)), 65536));

	/* write-zeroes without and with unmap over the remaining data */
	sector = 4096;
	n = 1024;
	flags = 0;
	memcpy(seg, &sector, 8);
	memcpy(seg + 8, &n, 4);
	memcpy(seg + 12, &flags, 4);
	memcpy(ram(f, DATA(0, 2)), seg, 16);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_WRITE_ZEROES, 0, DATA(0, 2), 16), VIRTIO_BLK_S_OK);
	sector = 5120;
	flags = VIRTIO_BLK_WZ_UNMAP;
	memcpy(seg, &sector, 8);
	memcpy(seg + 12, &flags, 4);
	memcpy(ram(f, DATA(0, 2)), seg, 16);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_WRITE_ZEROES, 0, DATA(0, 2), 16), VIRTIO_BLK_S_OK);
	memset(ram(f, DATA(0, 3)), 1, 256 * 1024);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, 4096, DATA(0, 3), 256 * 1024), VIRTIO_BLK_S_OK);
	assert_true(all_zero(ram(f, DATA(0, 3)), 256 * 1024));
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, 5120, DATA(0, 3), 256 * 1024), VIRTIO_BLK_S_OK);
	assert_true(all_zero(ram(f, DATA(0, 3)), 256 * 1024));
	/* data next to it is intact */
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, 3584, DATA(0, 3), 256 * 1024), VIRTIO_BLK_S_OK);
	assert_true(is_fill(ram(f, DATA(0, 3)), 256 * 1024, 7 + 7));
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, 6144, DATA(0, 3), 256 * 1024), VIRTIO_BLK_S_OK);
	assert_true(is_fill(ram(f, DATA(0, 3)), 256 * 1024, 7 + 12));
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, 2048, DATA(0, 3), 256 * 1024), VIRTIO_BLK_S_OK);
	assert_true(is_fill(ram(f, DATA(0, 3)), 256 * 1024, 7 + 4));

	/* unmap on a discard, and two segments: unsupported */
	flags = VIRTIO_BLK_WZ_UNMAP;
	memcpy(seg + 12, &flags, 4);
	memcpy(ram(f, DATA(0, 2)), seg, 16);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_DISCARD, 0, DATA(0, 2), 16), VIRTIO_BLK_S_UNSUPP);
	flags = 0;
	memcpy(seg + 12, &flags, 4);
	memcpy(ram(f, DATA(0, 2)), seg, 16);
	memcpy(ram(f, DATA(0, 2) + 16), seg, 16);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_DISCARD, 0, DATA(0, 2), 32), VIRTIO_BLK_S_UNSUPP);
	/* beyond the end */
	sector = SECTORS - 8;
	n = 16;
	memcpy(seg, &sector, 8);
	memcpy(seg + 8, &n, 4);
	memcpy(ram(f, DATA(0, 2)), seg, 16);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_WRITE_ZEROES, 0, DATA(0, 2), 16), VIRTIO_BLK_S_IOERR);
	/* a short segment */
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_DISCARD, 0, DATA(0, 2), 8), VIRTIO_BLK_S_IOERR);
}

static void test_discard_zeroes_raw(void **ctx)
{
	discard_zeroes(*ctx);
}

static void test_discard_zeroes_qcow2(void **ctx)
{
	discard_zeroes(*ctx);
}

static void test_get_id(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	bring_up(f);
	memset(ram(f, DATA(0, 0)), 0x77, 64);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_GET_ID, 0, DATA(0, 0), 20), VIRTIO_BLK_S_OK);
	char id[21] = { 0 };
	memcpy(id, ram(f, DATA(0, 0)), 20);
	assert_string_equal(id, "tern-blk.0");
	assert_true(all_zero(ram(f, DATA(0, 0) + 10), 10));
	assert_int_equal(*(uint8_t *)ram(f, DATA(0, 0) + 20), 0x77);   /* nothing past 20 */
	/* a short buffer gets what fits */
	memset(ram(f, DATA(0, 0)), 0x77, 64);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_GET_ID, 0, DATA(0, 0), 4), VIRTIO_BLK_S_OK);
	assert_memory_equal(ram(f, DATA(0, 0)), "tern\x77", 5);
}

/* A configured serial of exactly 20 bytes is not terminated. */
static void test_serial_20(void **ctx)
{
	struct fixture *f = *ctx;
	struct terr err = { 0 };
	char path2[160];
	snprintf(path2, sizeof(path2), "%s/second.raw", f->dir);
	int fd = open(path2, O_RDWR | O_CREAT, 0644);
	assert_true(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
	close(fd);
	struct device *d;
	struct virtio_blk_params bp = { .id = "blk.1", .path = path2, .format = "raw",
					.serial = "ABCDEFGHIJKLMNOPQRST", .queues = 1, .slot = 4 };
	assert_int_equal(virtio_blk_create(&f->vm, f->bus, &bp, &d, &err), 0);
	/* 21 bytes is refused, with the device named */
	bp.id = "blk.2";
	bp.serial = "ABCDEFGHIJKLMNOPQRSTU";
	assert_true(virtio_blk_create(&f->vm, f->bus, &bp, &d, &err) < 0);
	assert_non_null(strstr(err.msg, "blk.2"));
	/* a missing image is a clear error */
	terr_clear(&err);
	bp.serial = NULL;
	bp.path = "/nonexistent/disk.raw";
	assert_true(virtio_blk_create(&f->vm, f->bus, &bp, &d, &err) < 0);
	assert_non_null(strstr(err.msg, "/nonexistent/disk.raw"));
	/* the image in use by blk.0 cannot be opened again for writing */
	terr_clear(&err);
	bp.path = f->path;
	assert_true(virtio_blk_create(&f->vm, f->bus, &bp, &d, &err) < 0);
	assert_non_null(strstr(err.msg, "in use"));

	struct pci_device *pd = pci_bus_device(f->bus, 4);
	assert_non_null(pd);
	f->pd = pd;
	enable_decoding(f);
	bring_up(f);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_GET_ID, 0, DATA(0, 0), 32), VIRTIO_BLK_S_OK);
	assert_memory_equal(ram(f, DATA(0, 0)), "ABCDEFGHIJKLMNOPQRST", 20);
	assert_int_equal(r32(f, USED(0) + 8), 21);
	assert_int_equal(cfg(f, VIRTIO_BLK_CFG_CAPACITY, 8), 2048);
}

static void test_readonly(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	uint64_t feat = features(f);
	assert_true(feat & (1ull << VIRTIO_BLK_F_RO));
	assert_false(feat & (1ull << VIRTIO_BLK_F_DISCARD));
	assert_false(feat & (1ull << VIRTIO_BLK_F_WRITE_ZEROES));
	bring_up(f);
	fill(f, DATA(0, 0), 4096, 3);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_OUT, 0, DATA(0, 0), 4096), VIRTIO_BLK_S_IOERR);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, 0, DATA(0, 1), 4096), VIRTIO_BLK_S_OK);
	assert_true(all_zero(ram(f, DATA(0, 1)), 4096));
	memset(ram(f, DATA(0, 2)), 0, 16);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_DISCARD, 0, DATA(0, 2), 16), VIRTIO_BLK_S_IOERR);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_WRITE_ZEROES, 0, DATA(0, 2), 16), VIRTIO_BLK_S_IOERR);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_FLUSH, 0, 0, 0), VIRTIO_BLK_S_OK);
	/* the file is untouched */
	int fd = open(f->path, O_RDONLY);
	uint8_t buf[4096];
	assert_int_equal(pread(fd, buf, sizeof(buf), 0), 4096);
	close(fd);
	assert_true(all_zero(buf, sizeof(buf)));
}

/* Hostile and malformed requests: an error status, never a crash, and the
 * device keeps working. */
static void test_hostile_requests(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	bring_up(f);
	uint64_t h = HDR(0, 15), d = DATA(0, 0);
	uint8_t hdr[16] = { 0 };
	uint32_t type;
	uint64_t sector;

	/* a read of 1000 bytes (not a multiple of 512) */
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, 0, d, 1000), VIRTIO_BLK_S_IOERR);
	/* past the end, and a sector number that wraps */
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, SECTORS - 1, d, 1024), VIRTIO_BLK_S_IOERR);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_OUT, UINT64_MAX - 1, d, 4096), VIRTIO_BLK_S_IOERR);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, SECTORS, d, 512), VIRTIO_BLK_S_IOERR);
	/* an unknown type, and GET_LIFETIME, are unsupported */
	assert_int_equal(do_req(f, 0, 99, 0, d, 512), VIRTIO_BLK_S_UNSUPP);
	assert_int_equal(do_req(f, 0, 10, 0, d, 512), VIRTIO_BLK_S_UNSUPP);

	/* a header of 8 bytes */
	type = VIRTIO_BLK_T_IN;
	memcpy(hdr, &type, 4);
	memcpy(ram(f, h), hdr, 16);
	struct seg s1[] = { { h, 8, false }, { d, 512, true }, { h + 16, 1, true } };
	unsigned slot = post_chain(f, 0, s1, 3, true);
	(void)slot;
	wait_used(f, 0, f->avail_idx[0]);
	assert_int_equal(*(uint8_t *)ram(f, h + 16), VIRTIO_BLK_S_IOERR);

	/* a read whose data is device-readable (wrong direction) */
	sector = 0;
	memcpy(hdr + 8, &sector, 8);
	memcpy(ram(f, h), hdr, 16);
	struct seg s2[] = { { h, 16, false }, { d, 512, false }, { h + 16, 1, true } };
	post_chain(f, 0, s2, 3, true);
	wait_used(f, 0, f->avail_idx[0]);
	assert_int_equal(*(uint8_t *)ram(f, h + 16), VIRTIO_BLK_S_IOERR);

	/* a write whose data is device-writable (wrong direction) */
	type = VIRTIO_BLK_T_OUT;
	memcpy(hdr, &type, 4);
	memcpy(ram(f, h), hdr, 16);
	fill(f, d, 512, 9);
	struct seg s3[] = { { h, 16, false }, { d, 512, true }, { h + 16, 1, true } };
	post_chain(f, 0, s3, 3, true);
	wait_used(f, 0, f->avail_idx[0]);
	assert_int_equal(*(uint8_t *)ram(f, h + 16), VIRTIO_BLK_S_IOERR);
	assert_true(is_fill(ram(f, d), 512, 9));   /* not overwritten */

	/* no device-writable byte at all: returned unused (no status to write) */
	struct seg s4[] = { { h, 16, false }, { d, 512, false } };
	post_chain(f, 0, s4, 2, true);
	wait_used(f, 0, f->avail_idx[0]);
	assert_int_equal(r32(f, USED(0) + 4 + 8 * ((f->avail_idx[0] - 1) % QS) + 4), 0);

	/* header, data and status in one writable-after-readable layout that
	 * Linux never uses but the spec allows: header+data in one readable
	 * descriptor, status alone */
	type = VIRTIO_BLK_T_OUT;
	sector = 8;
	memcpy(hdr, &type, 4);
	memcpy(hdr + 8, &sector, 8);
	uint64_t one = DATA(0, 5);
	memcpy(ram(f, one), hdr, 16);
	fill(f, one + 16, 1024, 11);
	struct seg s5[] = { { one, 16 + 1024, false }, { h + 16, 1, true } };
	post_chain(f, 0, s5, 2, true);
	wait_used(f, 0, f->avail_idx[0]);
	assert_int_equal(*(uint8_t *)ram(f, h + 16), VIRTIO_BLK_S_OK);
	/* and a read with data and status in one writable descriptor */
	type = VIRTIO_BLK_T_IN;
	memcpy(hdr, &type, 4);
	memcpy(ram(f, h), hdr, 16);
	struct seg s6[] = { { h, 16, false }, { d, 1025, true } };
	post_chain(f, 0, s6, 2, true);
	wait_used(f, 0, f->avail_idx[0]);
	assert_int_equal(*(uint8_t *)ram(f, d + 1024), VIRTIO_BLK_S_OK);
	assert_true(is_fill(ram(f, d), 1024, 11));

	/* still working */
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, 8, d, 1024), VIRTIO_BLK_S_OK);
	assert_false(status(f) & VIRTIO_STATUS_NEEDS_RESET);

	/* a descriptor outside guest RAM breaks the queue: NEEDS_RESET */
	struct seg s7[] = { { h, 16, false }, { 0x7fff0000ull, 4096, true }, { h + 16, 1, true } };
	type = VIRTIO_BLK_T_IN;
	memcpy(hdr, &type, 4);
	memcpy(ram(f, h), hdr, 16);
	post_chain(f, 0, s7, 3, true);
	assert_true(status(f) & VIRTIO_STATUS_NEEDS_RESET);
	/* the driver resets; everything works again */
	bring_up(f);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, 8, d, 1024), VIRTIO_BLK_S_OK);
	assert_true(is_fill(ram(f, d), 1024, 11));
}

/* One queue per vCPU: requests on queue 1 complete on queue 1. */
static void test_multiqueue(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	assert_int_equal(cfg(f, VIRTIO_BLK_CFG_NUM_QUEUES, 2), 2);
	bring_up(f);
	for (unsigned s = 0; s < 8; s++) {
		fill(f, DATA(0, s), 32768, s);
		fill(f, DATA(1, s), 32768, 50 + s);
		post_req(f, 0, VIRTIO_BLK_T_OUT, 64ull * s, DATA(0, s), 32768, false);
		post_req(f, 1, VIRTIO_BLK_T_OUT, 1024 + 64ull * s, DATA(1, s), 32768, false);
	}
	kick(f, 1);
	kick(f, 0);
	wait_used(f, 0, 8);
	wait_used(f, 1, 8);
	for (unsigned s = 0; s < 8; s++) {
		assert_int_equal(req_status(f, 0, s), VIRTIO_BLK_S_OK);
		assert_int_equal(req_status(f, 1, s), VIRTIO_BLK_S_OK);
	}
	/* cross-read: queue 1 reads what queue 0 wrote */
	assert_int_equal(do_req(f, 1, VIRTIO_BLK_T_IN, 64 * 3, DATA(1, 12), 32768), VIRTIO_BLK_S_OK);
	assert_true(is_fill(ram(f, DATA(1, 12)), 32768, 3));
	assert_int_equal(r16(f, USED(0) + 2), 8);
}

/* Pause waits for the requests in flight; kicks while paused wait for
 * resume. */
static void test_pause_inflight(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	bring_up(f);
	virtio_blk_hold_completions(f->blk, true);
	for (unsigned s = 0; s < SLOTS; s++) {
		fill(f, DATA(0, s), 256 * 1024, 200 + s);
		post_req(f, 0, VIRTIO_BLK_T_OUT, 512ull * s, DATA(0, s), 256 * 1024, false);
	}
	kick(f, 0);
	/* nobody ran the event loop: the completions are not in yet */
	assert_int_equal(virtio_blk_inflight(f->blk), SLOTS);
	vm_pause(&f->vm);
	assert_int_equal(virtio_blk_inflight(f->blk), 0);
	assert_int_equal(r16(f, USED(0) + 2), SLOTS);
	for (unsigned s = 0; s < SLOTS; s++)
		assert_int_equal(req_status(f, 0, s), VIRTIO_BLK_S_OK);
	/* a request posted while paused is not taken */
	post_req(f, 0, VIRTIO_BLK_T_IN, 0, DATA(1, 0), 4096, true);
	for (int i = 0; i < 5; i++)
		evloop_run_once(&f->vm.loop, 10);
	assert_int_equal(r16(f, USED(0) + 2), SLOTS);
	assert_int_equal(virtio_blk_inflight(f->blk), 0);
	virtio_blk_hold_completions(f->blk, false);
	vm_resume(&f->vm);
	wait_used(f, 0, SLOTS + 1);
	assert_true(is_fill(ram(f, DATA(1, 0)), 4096, 200));
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

/* save -> mutate -> load -> save with requests in flight at the first save,
 * then the state and RAM into a fresh VM (the disk reopened there), which
 * carries on. */
static void save_load_inflight(struct fixture *f)
{
	enable_decoding(f);
	bring_up(f);
	virtio_blk_hold_completions(f->blk, true);
	for (unsigned s = 0; s < 12; s++) {
		fill(f, DATA(0, s), 128 * 1024, 300 + s);
		post_req(f, 0, VIRTIO_BLK_T_OUT, 256ull * s, DATA(0, s), 128 * 1024, false);
	}
	kick(f, 0);
	assert_int_equal(virtio_blk_inflight(f->blk), 12);
	struct state_writer a, b;
	save(f->blk, &a);
	virtio_blk_hold_completions(f->blk, false);
	/* completed by the save, none left in progress */
	assert_int_equal(virtio_blk_inflight(f->blk), 0);
	assert_int_equal(r16(f, USED(0) + 2), 12);
	for (unsigned s = 0; s < 12; s++)
		assert_int_equal(req_status(f, 0, s), VIRTIO_BLK_S_OK);
	uint8_t *snapshot_ram = malloc(MEM);
	memcpy(snapshot_ram, f->vm.mem.base, MEM);

	/* mutate: more requests (some still in flight), queue select moved */
	for (unsigned s = 12; s < 16; s++) {
		fill(f, DATA(0, s), 4096, s);
		post_req(f, 0, VIRTIO_BLK_T_OUT, 8000 + 8ull * s, DATA(0, s), 4096, s == 15);
	}
	wr(f, VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
	load(f->blk, &a);
	assert_int_equal(virtio_blk_inflight(f->blk), 0);
	save(f->blk, &b);
	if (a.len != b.len || memcmp(a.buf, b.buf, a.len))
		fail_msg("save -> mutate -> load -> save differs");
	sw_free(&b);

	/* restore into a fresh VM on the same image */
	free_vm(f);
	assert_int_equal(make_vm(f), 0);
	memcpy(f->vm.mem.base, snapshot_ram, MEM);
	load(f->blk, &a);
	save(f->blk, &b);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.buf, b.buf, a.len);
	f->bar = pci_bar_address(f->pd, VIRTIO_PCI_BAR);
	assert_true(status(f) & VIRTIO_STATUS_DRIVER_OK);
	f->avail_idx[0] = 12;
	for (unsigned s = 0; s < 12; s++) {
		unsigned slot = post_req(f, 0, VIRTIO_BLK_T_IN, 256ull * s, DATA(1, 0), 128 * 1024, true);
		wait_used(f, 0, f->avail_idx[0]);
		assert_int_equal(req_status(f, 0, slot), VIRTIO_BLK_S_OK);
		if (!is_fill(ram(f, DATA(1, 0)), 128 * 1024, 300 + s))
			fail_msg("after restore: data of request %u differs", s);
	}
	free(snapshot_ram);
	sw_free(&a);
	sw_free(&b);
}

static void test_save_load_inflight_raw(void **ctx)
{
	save_load_inflight(*ctx);
}

static void test_save_load_inflight_qcow2(void **ctx)
{
	save_load_inflight(*ctx);
}

/* A state saved for another disk is refused with a clear message. */
static void test_load_other_disk(void **ctx)
{
	struct fixture *f = *ctx;
	struct terr err = { 0 };
	struct state_writer w, dev;
	sw_init(&dev);
	sw_uint(&dev, "capacity", 12345);
	sw_init(&w);
	sw_uint(&w, "status", 0);
	sw_blob(&w, "dev", &dev);
	struct state_reader r;
	assert_int_equal(sr_init(&r, w.buf, w.len, "blk.0", &err), 0);
	assert_true(f->blk->ops->load(f->blk, &r, &err) < 0);
	assert_string_equal(err.msg, "blk.0: the image of disk.0.path has 8388608 bytes, the saved machine's "
				     "disk had 6320640: a restored or incoming machine needs an image of the same size");
	sr_free(&r);
	sw_free(&w);
	sw_free(&dev);
}

/* The driver resets the device with requests in flight: their results are
 * dropped, nothing breaks, and the device works after bring-up. */
static void test_reset_inflight(void **ctx)
{
	struct fixture *f = *ctx;
	enable_decoding(f);
	bring_up(f);
	virtio_blk_hold_completions(f->blk, true);
	for (unsigned s = 0; s < SLOTS; s++) {
		fill(f, DATA(0, s), 256 * 1024, 400 + s);
		post_req(f, 0, VIRTIO_BLK_T_OUT, 512ull * s, DATA(0, s), 256 * 1024, false);
	}
	kick(f, 0);
	assert_int_equal(virtio_blk_inflight(f->blk), SLOTS);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, 0);
	assert_int_equal(virtio_blk_inflight(f->blk), 0);
	virtio_blk_hold_completions(f->blk, false);
	assert_int_equal(status(f), 0);
	for (int i = 0; i < 5; i++)
		evloop_run_once(&f->vm.loop, 10);
	bring_up(f);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, 512, DATA(1, 0), 4096), VIRTIO_BLK_S_OK);
	assert_true(is_fill(ram(f, DATA(1, 0)), 4096, 401));
	/* system reset too */
	virtio_blk_hold_completions(f->blk, true);
	post_req(f, 0, VIRTIO_BLK_T_OUT, 0, DATA(0, 0), 256 * 1024, true);
	assert_int_equal(virtio_blk_inflight(f->blk), 1);
	f->blk->ops->reset(f->blk);
	assert_int_equal(virtio_blk_inflight(f->blk), 0);
}

/* Two disks: separate images, separate devices, both work. */
static void test_two_disks(void **ctx)
{
	struct fixture *f = *ctx;
	struct terr err = { 0 };
	char path2[160];
	snprintf(path2, sizeof(path2), "%s/second.qcow2", f->dir);
	struct vdisk_create_opts o = { .format = "qcow2", .size = 4u << 20 };
	struct vdisk_error e;
	assert_int_equal(vdisk_create(path2, &o, &e), 0);
	struct device *d2;
	struct virtio_blk_params bp = { .id = "blk.1", .path = path2, .format = "qcow2",
					.queues = 1, .slot = 4 };
	assert_int_equal(virtio_blk_create(&f->vm, f->bus, &bp, &d2, &err), 0);
	assert_ptr_equal(vm_find_device(&f->vm, "blk.1"), d2);
	struct pci_device *pd0 = f->pd, *pd1 = pci_bus_device(f->bus, 4);
	enable_decoding(f);
	bring_up(f);
	fill(f, DATA(0, 0), 8192, 1);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_OUT, 0, DATA(0, 0), 8192), VIRTIO_BLK_S_OK);
	/* the second disk's own rings, in another part of RAM: reuse the
	 * helpers with queue index 2's layout by pointing f at it */
	f->pd = pd1;
	enable_decoding(f);
	assert_int_equal(cfg(f, VIRTIO_BLK_CFG_CAPACITY, 8), 8192);
	/* set queue 0 of blk.1 at RING(2) */
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, 0);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(f, VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
	wr(f, VIRTIO_PCI_COMMON_GF, 4, 1);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	   VIRTIO_STATUS_FEATURES_OK);
	wr(f, VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
	wr(f, VIRTIO_PCI_COMMON_Q_SIZE, 2, QS);
	memset(ram(f, RING(2)), 0, 0x3000);
	wr64(f, VIRTIO_PCI_COMMON_Q_DESCLO, DESC(2));
	wr64(f, VIRTIO_PCI_COMMON_Q_AVAILLO, AVAIL(2));
	wr64(f, VIRTIO_PCI_COMMON_Q_USEDLO, USED(2));
	wr(f, VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
	wr(f, VIRTIO_PCI_COMMON_STATUS, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
	   VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	f->avail_idx[2] = 0;
	/* post on "queue 2" descriptors but kick queue 0 of blk.1 */
	memset(ram(f, DATA(2, 0)), 0x33, 8192);
	unsigned slot = post_req(f, 2, VIRTIO_BLK_T_IN, 0, DATA(2, 0), 8192, false);
	kick(f, 0);
	wait_used(f, 2, 1);
	assert_int_equal(req_status(f, 2, slot), VIRTIO_BLK_S_OK);
	assert_true(all_zero(ram(f, DATA(2, 0)), 8192));   /* not blk.0's data */
	f->pd = pd0;
	enable_decoding(f);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, 0, DATA(0, 1), 8192), VIRTIO_BLK_S_OK);
	assert_true(is_fill(ram(f, DATA(0, 1)), 8192, 1));
}

/* --- dirty tracking for live migration --- */

/* Take the pages tern recorded as written since the last call. */
static void take_dirty(struct fixture *f, uint64_t *bits)
{
	memset(bits, 0, MEM / 4096 / 8);
	guest_mem_take_host_writes(&f->vm.mem, 0, bits, MEM / 4096 / 64);
}

static unsigned count_bits(const uint64_t *bits)
{
	unsigned n = 0;
	for (unsigned w = 0; w < MEM / 4096 / 64; w++)
		n += (unsigned)__builtin_popcountll(bits[w]);
	return n;
}

#define DIRTY(bits, gpa) ((bits)[(gpa) / 4096 / 64] >> ((gpa) / 4096 % 64) & 1)

/* A read brings data into guest RAM behind the vCPUs' back: with tracking
 * on, exactly the pages of its buffer, its status byte and the used ring
 * are recorded (the avail ring, the descriptors and the header are not); a
 * write records only its status and the used ring; with tracking off,
 * nothing. */
static void dirty_reads(struct fixture *f)
{
	uint64_t *bits = calloc(MEM / 4096 / 64, sizeof(uint64_t));
	enable_decoding(f);
	bring_up(f);
	fill(f, DATA(0, 0), 3 * 4096, 9);
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_OUT, 64, DATA(0, 0), 3 * 4096), VIRTIO_BLK_S_OK);
	assert_int_equal(guest_mem_track_host_writes(&f->vm.mem, true), 0);
	assert_int_equal(guest_mem_track_host_writes(&f->vm.mem, false), 0);
	const uint64_t buf = DATA(0, 2) + 0x800;   /* 12 KiB from the middle of a page: 4 pages */
	assert_int_equal(do_req(f, 0, VIRTIO_BLK_T_IN, 64, buf, 3 * 4096), VIRTIO_BLK_S_OK);
	assert_true(is_fill(ram(f, buf), 3 * 4096, 9));
	take_dirty(f, bits);
	assert_int_equal(count_bits(bits), 0);

	assert_int_equal(guest_mem_track_host_writes(&f->vm.mem, true), 0);
	memset(ram(f, buf), 0, 3 * 4096);
	unsigned slot = post_req(f, 0, VIRTIO_BLK_T_IN, 64, buf, 3 * 4096, true);
	wait_used(f, 0, f->avail_idx[0]);
	assert_int_equal(req_status(f, 0, slot), VIRTIO_BLK_S_OK);
	assert_true(is_fill(ram(f, buf), 3 * 4096, 9));
	take_dirty(f, bits);
	for (uint64_t pg = buf; pg < buf + 3 * 4096; pg += 4096)
		assert_true(DIRTY(bits, pg));
	assert_true(DIRTY(bits, buf + 3 * 4096 - 1));
	assert_true(DIRTY(bits, HDR(0, slot) + 16));
	assert_true(DIRTY(bits, USED(0)));
	assert_int_equal(count_bits(bits), 4 + 1 + 1);

	slot = post_req(f, 0, VIRTIO_BLK_T_OUT, 128, DATA(0, 0), 4096, true);
	wait_used(f, 0, f->avail_idx[0]);
	assert_int_equal(req_status(f, 0, slot), VIRTIO_BLK_S_OK);
	take_dirty(f, bits);
	assert_true(DIRTY(bits, HDR(0, slot) + 16) && DIRTY(bits, USED(0)));
	assert_int_equal(count_bits(bits), 2);

	assert_int_equal(guest_mem_track_host_writes(&f->vm.mem, false), 0);
	slot = post_req(f, 0, VIRTIO_BLK_T_IN, 64, buf, 3 * 4096, true);
	wait_used(f, 0, f->avail_idx[0]);
	take_dirty(f, bits);
	assert_int_equal(count_bits(bits), 0);
	f->used_seen[0] = f->avail_idx[0];
	free(bits);
}

static void test_dirty_reads_uring(void **ctx)
{
	dirty_reads(*ctx);
}

static void test_dirty_reads_threads(void **ctx)
{
	dirty_reads(*ctx);
}

#define T(fn, s) cmocka_unit_test_setup_teardown(fn, s, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_identity_and_config, setup_raw),
		T(test_rw_raw, setup_raw),
		T(test_rw_raw_threads, setup_raw_threads),
		T(test_rw_raw_tmpfs_inline, setup_raw_shm),
		T(test_rw_qcow2_tmpfs_inline, setup_qcow2_shm),
		T(test_rw_qcow2, setup_qcow2),
		T(test_discard_zeroes_raw, setup_raw),
		T(test_discard_zeroes_qcow2, setup_qcow2),
		T(test_get_id, setup_raw),
		T(test_serial_20, setup_raw),
		T(test_readonly, setup_ro),
		T(test_hostile_requests, setup_raw),
		T(test_multiqueue, setup_raw_mq),
		T(test_pause_inflight, setup_raw),
		T(test_save_load_inflight_raw, setup_raw),
		T(test_save_load_inflight_qcow2, setup_qcow2),
		T(test_load_other_disk, setup_raw),
		T(test_reset_inflight, setup_raw),
		T(test_two_disks, setup_raw),
		T(test_dirty_reads_uring, setup_raw),
		T(test_dirty_reads_threads, setup_raw_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
