/* vblk: keep a virtio-blk device reading into guest RAM, and check that every
 * buffer holds what the disk has at the sector the guest asked for.
 *
 * It is its own tiny driver: finds the virtio-blk function on PCI bus 0
 * through ECAM, places its BARs in the 32-bit MMIO window, negotiates
 * VIRTIO_F_VERSION_1 only, sets up queue 0 and polls the used ring (no
 * interrupts). The disk must hold the pattern below (tests/host makes it):
 * 64-bit word k (0..63) of sector s is (s << 16) | (k << 8) | 0xa5.
 *
 * The buffers (`bufs` of 64 KiB each, above 16 MiB) are written only by the
 * device; the guest records in a table which sector each buffer holds once
 * its read has completed, and checks every buffer against its table entry
 * right before reading into it again (and all of them every verify_every
 * passes). So after a live migration that missed a page the device wrote
 * (the dirty log of KVM does not see it), a buffer and its table entry
 * disagree and the check says BAD before the buffer is refilled; a used ring
 * the destination did not get leaves the guest waiting for ever (the test
 * times out).
 *
 * Command line (defaults in brackets):
 *   passes=N        passes to run [20], 0 = for ever; a pass reads every buffer
 *   bufs=N          buffers of 64 KiB [128]
 *   inflight=N      requests in flight at once [16] (at most 42)
 *   verify_every=K  check every buffer every K passes [1]
 *   inject=stale    before the final check, read one buffer again but
 *                   record another sector: the run must end BAD
 *
 * Output:
 *   vblk: start disk=NNN sectors bufs=N
 *   vblk: verify OK  (every verify_every passes)
 *   vblk: OK / vblk: BAD buffer N sector S word W expected 0x.. got 0x.. */
#include "rt.h"

#define ECAM 0xe0000000ull
#define MMIO32 0xc0000000ull
#define QS 128
#define BUF (64 * KiB)
#define MAX_BUFS 1024

#define VIRTIO_VENDOR 0x1af4
#define VIRTIO_BLK_DEVICE 0x1042

/* common configuration */
#define C_DFSELECT 0x00
#define C_DF 0x04
#define C_GFSELECT 0x08
#define C_GF 0x0c
#define C_STATUS 0x14
#define C_QSELECT 0x16
#define C_QSIZE 0x18
#define C_QENABLE 0x1c
#define C_QNOFF 0x1e
#define C_QDESC 0x20
#define C_QAVAIL 0x28
#define C_QUSED 0x30

struct desc {
	u64 addr;
	u32 len;
	u16 flags, next;
};

static struct desc ring_desc[QS] __attribute__((aligned(4096)));
static volatile u16 ring_avail[3 + QS] __attribute__((aligned(4096)));
static volatile u32 ring_used[1 + 2 * QS + 1] __attribute__((aligned(4096)));
static struct {
	u32 type, reserved;
	u64 sector;
} hdrs[QS / 3] __attribute__((aligned(64)));
static volatile u8 stats[QS / 3];
static volatile u64 table[MAX_BUFS];   /* sector + 1 held by buffer b, 0: none yet */

static u8 *common, *notify;
static u64 bufbase, nbufs, sectors;
static u16 avail_idx, used_seen;

static inline u32 mmio_r32(u64 a) { return *(volatile u32 *)(uintptr_t)a; }
static inline void mmio_w32(u64 a, u32 v) { *(volatile u32 *)(uintptr_t)a = v; }
static inline u16 mmio_r16(u64 a) { return *(volatile u16 *)(uintptr_t)a; }
static inline void mmio_w16(u64 a, u16 v) { *(volatile u16 *)(uintptr_t)a = v; }
static inline u8 mmio_r8(u64 a) { return *(volatile u8 *)(uintptr_t)a; }
static inline void mmio_w8(u64 a, u8 v) { *(volatile u8 *)(uintptr_t)a = v; }
#define barrier() __asm__ volatile("" ::: "memory")

static u64 cfg_addr(unsigned dev, unsigned off)
{
	return ECAM + ((u64)dev << 15) + off;
}

static u64 word(u64 sector, unsigned k)
{
	return sector << 16 | (u64)k << 8 | 0xa5;
}

/* BARs at MMIO32 up, each aligned to its size; returns the address of bar `want`. */
static u64 place_bars(unsigned dev, unsigned want)
{
	u64 next = MMIO32, found = 0;
	for (unsigned i = 0; i < 6; i++) {
		u64 reg = cfg_addr(dev, 0x10 + 4 * i);
		u32 orig = mmio_r32(reg);
		if (orig & 1)
			continue;   /* I/O */
		bool is64 = ((orig >> 1) & 3) == 2;
		mmio_w32(reg, 0xffffffff);
		u32 mask = mmio_r32(reg) & ~0xfu;
		if (!mask) {
			if (is64)
				i++;
			continue;
		}
		u64 size = (u64)(~mask) + 1;
		next = (next + size - 1) & ~(size - 1);
		mmio_w32(reg, (u32)next);
		if (is64)
			mmio_w32(cfg_addr(dev, 0x10 + 4 * (i + 1)), 0);
		if (i == want)
			found = next;
		next += size;
		if (is64)
			i++;
	}
	mmio_w16(cfg_addr(dev, 4), mmio_r16(cfg_addr(dev, 4)) | 6);   /* memory, bus master */
	return found;
}

static void setup(void)
{
	unsigned dev = 32;
	for (unsigned d = 0; d < 32; d++)
		if (mmio_r32(cfg_addr(d, 0)) == (VIRTIO_BLK_DEVICE << 16 | VIRTIO_VENDOR)) {
			dev = d;
			break;
		}
	if (dev == 32)
		rt_fatal("vblk: no virtio-blk on PCI bus 0\n");
	/* the vendor capabilities say where the structures are */
	u64 common_off = 0, notify_off = 0;
	unsigned common_bar = 6, notify_bar = 6;
	u32 mult = 0;
	for (unsigned p = mmio_r8(cfg_addr(dev, 0x34)) & ~3u; p; p = mmio_r8(cfg_addr(dev, p + 1)) & ~3u) {
		if (mmio_r8(cfg_addr(dev, p)) != 0x09)
			continue;
		u8 type = mmio_r8(cfg_addr(dev, p + 3)), bar = mmio_r8(cfg_addr(dev, p + 4));
		u32 off = mmio_r32(cfg_addr(dev, p + 8));
		if (type == 1) {
			common_bar = bar;
			common_off = off;
		} else if (type == 2) {
			notify_bar = bar;
			notify_off = off;
			mult = mmio_r32(cfg_addr(dev, p + 16));
		}
	}
	if (common_bar > 5 || notify_bar != common_bar)
		rt_fatal("vblk: virtio capabilities not found (common bar %u, notify bar %u)\n",
			 common_bar, notify_bar);
	u64 bar = place_bars(dev, common_bar);
	if (!bar)
		rt_fatal("vblk: BAR %u could not be placed\n", common_bar);
	common = (u8 *)(uintptr_t)(bar + common_off);
	u64 c = (u64)(uintptr_t)common;

	mmio_w8(c + C_STATUS, 0);
	mmio_w8(c + C_STATUS, 1);
	mmio_w8(c + C_STATUS, 1 | 2);
	mmio_w32(c + C_DFSELECT, 1);
	if (!(mmio_r32(c + C_DF) & 1))
		rt_fatal("vblk: the device does not offer VIRTIO_F_VERSION_1\n");
	mmio_w32(c + C_GFSELECT, 0);
	mmio_w32(c + C_GF, 0);
	mmio_w32(c + C_GFSELECT, 1);
	mmio_w32(c + C_GF, 1);   /* VERSION_1 */
	mmio_w8(c + C_STATUS, 1 | 2 | 8);
	if (!(mmio_r8(c + C_STATUS) & 8))
		rt_fatal("vblk: FEATURES_OK refused\n");
	mmio_w16(c + C_QSELECT, 0);
	if (mmio_r16(c + C_QSIZE) < QS)
		rt_fatal("vblk: queue 0 is smaller than %u\n", QS);
	mmio_w16(c + C_QSIZE, QS);
	mmio_w32(c + C_QDESC, (u32)(uintptr_t)ring_desc);
	mmio_w32(c + C_QDESC + 4, 0);
	mmio_w32(c + C_QAVAIL, (u32)(uintptr_t)ring_avail);
	mmio_w32(c + C_QAVAIL + 4, 0);
	mmio_w32(c + C_QUSED, (u32)(uintptr_t)ring_used);
	mmio_w32(c + C_QUSED + 4, 0);
	u16 qnoff = mmio_r16(c + C_QNOFF);
	mmio_w16(c + C_QENABLE, 1);
	mmio_w8(c + C_STATUS, 1 | 2 | 4 | 8);
	notify = (u8 *)(uintptr_t)(bar + notify_off + (u64)qnoff * mult);
	/* device configuration: capacity is its first field; structure 4 */
	for (unsigned p = mmio_r8(cfg_addr(dev, 0x34)) & ~3u; p; p = mmio_r8(cfg_addr(dev, p + 1)) & ~3u)
		if (mmio_r8(cfg_addr(dev, p)) == 0x09 && mmio_r8(cfg_addr(dev, p + 3)) == 4) {
			u64 d = bar + mmio_r32(cfg_addr(dev, p + 8));
			sectors = (u64)mmio_r32(d) | (u64)mmio_r32(d + 4) << 32;
		}
	if (sectors < BUF / 512)
		rt_fatal("vblk: the disk has %lu sectors, fewer than one buffer\n", (unsigned long)sectors);
}

/* Does buffer b hold the sector its table entry names? */
static bool verify_buf(u64 b)
{
	u64 t = table[b];
	if (!t)
		return true;
	const u64 *p = (const u64 *)(uintptr_t)(bufbase + b * BUF);
	for (unsigned w = 0; w < BUF / 8; w++) {
		u64 want = word(t - 1 + w / 64, w % 64);
		if (p[w] != want) {
			rt_printf("vblk: BAD buffer %lu sector %lu word %u expected 0x%lx got 0x%lx\n",
				  (unsigned long)b, (unsigned long)(t - 1), w, (unsigned long)want,
				  (unsigned long)p[w]);
			return false;
		}
	}
	return true;
}

/* Reads into buffers first..first+n-1 (n <= slots), each checked first,
 * then waits for all. */
static bool read_batch(u64 first, unsigned n, u64 pass)
{
	u64 sector[QS / 3];
	for (unsigned j = 0; j < n; j++) {
		u64 b = (first + j) % nbufs;
		if (!verify_buf(b))
			return false;
		u64 span = sectors - BUF / 512 + 1;
		sector[j] = rt_pattern(b * 977 + pass, 0x5eed) % span;
		hdrs[j].type = 0;   /* VIRTIO_BLK_T_IN */
		hdrs[j].reserved = 0;
		hdrs[j].sector = sector[j];
		stats[j] = 0xee;
		struct desc *d = &ring_desc[3 * j];
		d[0] = (struct desc){ (u64)(uintptr_t)&hdrs[j], 16, 1, (u16)(3 * j + 1) };
		d[1] = (struct desc){ bufbase + b * BUF, BUF, 1 | 2, (u16)(3 * j + 2) };
		d[2] = (struct desc){ (u64)(uintptr_t)&stats[j], 1, 2, 0 };
		ring_avail[2 + (avail_idx + j) % QS] = (u16)(3 * j);
	}
	barrier();
	avail_idx = (u16)(avail_idx + n);
	ring_avail[1] = avail_idx;
	barrier();
	mmio_w16((u64)(uintptr_t)notify, 0);
	while ((u16)(ring_used[0] >> 16) != avail_idx)
		__asm__ volatile("pause");
	barrier();
	for (; used_seen != avail_idx; used_seen++) {
		u32 id = ring_used[1 + 2 * (used_seen % QS)], len = ring_used[2 + 2 * (used_seen % QS)];
		unsigned j = id / 3;
		if (id % 3 || j >= n || stats[j] != 0 || len != BUF + 1)
			rt_fatal("vblk: request %u came back with id %u status %u length %u\n", j, id,
				 j < n ? stats[j] : 0xff, len);
	}
	for (unsigned j = 0; j < n; j++)
		table[(first + j) % nbufs] = sector[j] + 1;
	return true;
}

static bool verify(void)
{
	for (u64 b = 0; b < nbufs; b++)
		if (!verify_buf(b))
			return false;
	return true;
}

int main(void)
{
	u64 passes = rt_arg("passes", 20), every = rt_arg("verify_every", 1);
	u64 inflight = rt_arg("inflight", 16);
	struct rt_range ram[8];
	nbufs = rt_arg("bufs", 128);
	if (inflight < 1 || inflight > QS / 3)
		rt_fatal("vblk: inflight= must be 1 to %u\n", QS / 3);
	if (nbufs < 1 || nbufs > MAX_BUFS)
		rt_fatal("vblk: bufs= must be 1 to %u\n", MAX_BUFS);
	if (!rt_ram_above(RT_RESERVED_TOP, ram, 8) || ram[0].size < nbufs * BUF)
		rt_fatal("vblk: not enough RAM above 16 MiB for %lu buffers\n", (unsigned long)nbufs);
	bufbase = ram[0].base;
	setup();
	rt_printf("vblk: start disk=%lu sectors bufs=%lu\n", (unsigned long)sectors, (unsigned long)nbufs);
	for (u64 pass = 1; !passes || pass <= passes; pass++) {
		for (u64 b = 0; b < nbufs; b += inflight)
			if (!read_batch(b, (unsigned)(nbufs - b < inflight ? nbufs - b : inflight), pass))
				return RT_EXIT_BAD;
		if (every && pass % every == 0) {
			if (!verify())
				return RT_EXIT_BAD;
			rt_puts("vblk: verify OK\n");
		}
	}
	if (rt_arg_is("inject", "stale")) {
		rt_puts("vblk: inject stale buffer 0\n");
		table[0] = table[0] % (sectors - BUF / 512) + 2;
	}
	if (!verify())
		return RT_EXIT_BAD;
	rt_puts("vblk: OK\n");
	return RT_EXIT_OK;
}
