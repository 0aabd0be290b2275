/* bzImage loader: synthetic images with valid and broken setup headers,
 * the zero page it builds, and Debian's kernel when one is at hand. */
#include <errno.h>
#include <glob.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <cmocka.h>

#include "arch/x86/bzimage.h"
#include "arch/x86/e820.h"
#include "arch/x86/kernel_unpack.h"
#include "arch/x86/layout.h"
#include "test_util.h"

#define RAM MIB(256)
#define SETUP (5 * 512)        /* setup_sects 4 + boot sector */
#define KSIZE 0x4000

static uint8_t img[SETUP + KSIZE + 512];
static struct guest_mem mem;

static int setup(void **state)
{
	(void)state;
	tu_mem(&mem, RAM);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	guest_mem_destroy(&mem);
	tu_cleanup();
	return 0;
}

static void w16(size_t o, uint16_t v) { memcpy(img + o, &v, 2); }
static void w32(size_t o, uint32_t v) { memcpy(img + o, &v, 4); }
static void w64(size_t o, uint64_t v) { memcpy(img + o, &v, 8); }
static uint8_t z8(size_t o) { return mem.base[LAYOUT_BOOT_INFO + o]; }
static uint16_t z16(size_t o) { uint16_t v; memcpy(&v, mem.base + LAYOUT_BOOT_INFO + o, 2); return v; }
static uint32_t z32(size_t o) { uint32_t v; memcpy(&v, mem.base + LAYOUT_BOOT_INFO + o, 4); return v; }
static uint64_t z64(size_t o) { uint64_t v; memcpy(&v, mem.base + LAYOUT_BOOT_INFO + o, 8); return v; }

/* A minimal bzImage as a 2.15 x86-64 kernel would describe itself; returns
 * its length (SETUP + KSIZE). */
static size_t make(void)
{
	memset(img, 0, sizeof(img));
	img[HDR_SETUP_SECTS] = 4;
	w32(HDR_SYSSIZE, KSIZE / 16);
	w16(HDR_BOOT_FLAG, 0xaa55);
	img[HDR_JUMP] = 0xeb;
	img[HDR_JUMP + 1] = 0x6a;             /* header ends at 0x26c */
	memcpy(img + HDR_HEADER, "HdrS", 4);
	w16(HDR_VERSION, 0x020f);
	img[HDR_LOADFLAGS] = LOADFLAG_LOADED_HIGH;
	w32(HDR_INITRD_ADDR_MAX, 0x7fffffff);
	w32(HDR_KERNEL_ALIGN, 0x200000);
	img[HDR_RELOCATABLE] = 1;
	w16(HDR_XLOADFLAGS, 0x7f);
	w32(HDR_CMDLINE_SIZE, 2047);
	w64(HDR_PREF_ADDRESS, MIB(16));
	w32(HDR_INIT_SIZE, MIB(4));
	for (size_t i = 0; i < KSIZE; i++)
		img[SETUP + i] = (uint8_t)(i * 13 + 1);
	return SETUP + KSIZE;
}

static void expect_err(size_t len, int code, const char *msg)
{
	struct bzimage_info info;
	struct terr err = { 0 };
	char want[512];

	snprintf(want, sizeof(want), "kernel bz: %s", msg);
	assert_int_equal(bzimage_load_buf(&mem, img, len, "bz", &info, &err), code);
	assert_string_equal(err.msg, want);
}

static void test_load(void **state)
{
	(void)state;
	struct bzimage_info info;
	struct terr err = { 0 };
	size_t n = make();

	memset(mem.base + LAYOUT_BOOT_INFO, 0xcc, 4096);
	assert_int_equal(bzimage_load_buf(&mem, img, n, "bz", &info, &err), 0);
	assert_int_equal(info.version, 0x020f);
	assert_int_equal(info.load_addr, MIB(16));
	assert_int_equal(info.kernel_end, MIB(20));
	assert_int_equal(info.cmdline_size, 2047);
	assert_memory_equal(mem.base + MIB(16), img + SETUP, KSIZE);
	/* zero page: header copied to 0x26c, the rest zero, our fields set */
	assert_memory_equal(mem.base + LAYOUT_BOOT_INFO + 0x202, img + 0x202, 4);
	assert_int_equal(z16(HDR_BOOT_FLAG), 0xaa55);
	assert_int_equal(z16(HDR_VERSION), 0x020f);
	assert_int_equal(z8(HDR_TYPE_OF_LOADER), 0xff);
	assert_int_equal(z16(HDR_VID_MODE), 0xffff);
	assert_int_equal(z64(HDR_PREF_ADDRESS), MIB(16));
	assert_int_equal(z32(HDR_INIT_SIZE), MIB(4));
	assert_int_equal(z8(BP_SENTINEL), 0);
	assert_int_equal(z8(0), 0);
	assert_int_equal(z8(0x26c), 0);
	assert_int_equal(z8(4095), 0);
}

static void test_setup_sects_zero(void **state)
{
	(void)state;
	struct bzimage_info info;
	struct terr err = { 0 };
	size_t n = make();

	img[HDR_SETUP_SECTS] = 0;   /* means 4 */
	assert_int_equal(bzimage_load_buf(&mem, img, n, "bz", &info, &err), 0);
	assert_memory_equal(mem.base + MIB(16), img + SETUP, KSIZE);
	assert_int_equal(z8(HDR_SETUP_SECTS), 4);
}

static void test_longer_file(void **state)
{
	(void)state;
	struct bzimage_info info;
	struct terr err = { 0 };
	size_t n = make();

	/* a signed kernel carries its signature after the image */
	assert_int_equal(bzimage_load_buf(&mem, img, n + 512, "bz", &info, &err), 0);
}

static void test_placement(void **state)
{
	(void)state;
	struct bzimage_info info;
	struct terr err = { 0 };
	size_t n = make();

	w64(HDR_PREF_ADDRESS, 0);   /* relocatable: 1 MiB */
	assert_int_equal(bzimage_load_buf(&mem, img, n, "bz", &info, &err), 0);
	assert_int_equal(info.load_addr, MIB(1));
	img[HDR_RELOCATABLE] = 0;
	expect_err(n, -ENOEXEC, "is not relocatable and wants to load at 0x0, below 1 MiB");
	make();
	w32(HDR_INIT_SIZE, MIB(300));
	expect_err(n, -ENOMEM, "needs 0x1000000 - 0x13bfffff (300 MiB from its load "
		   "address) but low guest RAM ends at 0x10000000");
}

static void test_bad_headers(void **state)
{
	(void)state;
	size_t n = make();

	expect_err(0x200, -ENOEXEC, "too small to be a bzImage (512 bytes)");
	w16(HDR_BOOT_FLAG, 0x55aa);
	expect_err(n, -ENOEXEC, "not a bzImage (no 0xaa55 boot flag at offset 0x1fe)");
	make();
	memcpy(img + HDR_HEADER, "HdrZ", 4);
	expect_err(n, -ENOEXEC, "not a bzImage (no \"HdrS\" magic at offset 0x202)");
	make();
	w16(HDR_VERSION, 0x020b);
	expect_err(n, -ENOEXEC, "boot protocol 2.11 is too old; tern needs 2.12 or later "
		   "(64-bit entry)");
	make();
	w16(HDR_XLOADFLAGS, 0x7e);
	expect_err(n, -ENOEXEC, "has no 64-bit entry point (XLF_KERNEL_64 not set in "
		   "xloadflags)");
	make();
	img[HDR_LOADFLAGS] = 0;
	expect_err(n, -ENOEXEC, "is a zImage (LOADED_HIGH not set); only bzImage is "
		   "supported");
	make();
	memcpy(img, "\177ELF", 4);
	expect_err(n, -ENOEXEC, "is an ELF file, not a bzImage (ELF kernels boot through PVH)");
}

static void test_truncated(void **state)
{
	(void)state;
	size_t n = make();

	expect_err(n - 1, -ENOEXEC, "truncated: the header announces 16384 bytes of kernel "
		   "after the setup code, the file holds 16383");
	expect_err(0x300, -ENOEXEC, "truncated: the setup code (2560 bytes) is longer than "
		   "the file (768 bytes)");
	w32(HDR_SYSSIZE, 0);
	expect_err(n, -ENOEXEC, "truncated: the header announces 0 bytes of kernel after "
		   "the setup code, the file holds 16384");
	make();
	w32(HDR_SYSSIZE, 0xffffffff);   /* x16 must not wrap */
	expect_err(n, -ENOEXEC, "truncated: the header announces 68719476720 bytes of kernel "
		   "after the setup code, the file holds 16384");
}

static void test_boot(void **state)
{
	(void)state;
	struct boot_entry e;
	struct terr err = { 0 };
	static uint8_t rd[MIB(3) + 77];
	size_t n = make();

	w32(HDR_INITRD_ADDR_MAX, MIB(128) - 1);
	for (size_t i = 0; i < sizeof(rd); i++)
		rd[i] = (uint8_t)(i ^ (i >> 8));
	const char *k = tu_file("bzImage", img, n);
	const char *i = tu_file("initrd", rd, sizeof(rd));
	assert_int_equal(bzimage_boot_load(&mem, k, i, "console=ttyS0 root=/dev/vda", 0xe0000, NULL,
					   &e, &err), 0);
	assert_int_equal(e.kind, BOOT_ENTRY_LINUX64);
	assert_int_equal(e.entry, MIB(16) + 0x200);
	assert_int_equal(e.boot_info, LAYOUT_BOOT_INFO);
	assert_int_equal(z32(HDR_CMD_LINE_PTR), LAYOUT_CMDLINE);
	assert_string_equal((char *)mem.base + LAYOUT_CMDLINE, "console=ttyS0 root=/dev/vda");
	uint32_t ig = z32(HDR_RAMDISK_IMAGE), isz = z32(HDR_RAMDISK_SIZE);
	assert_int_equal(isz, sizeof(rd));
	assert_int_equal(ig % 4096, 0);
	assert_true(ig + isz <= MIB(128) && ig + isz > MIB(128) - 4096);
	assert_memory_equal(mem.base + ig, rd, sizeof(rd));
	assert_int_equal(z64(BP_ACPI_RSDP_ADDR), 0xe0000);

	struct e820_entry map[E820_MAX_ENTRIES];
	int nmap = e820_build(&mem, map, E820_MAX_ENTRIES, &err);
	assert_int_equal(z8(BP_E820_ENTRIES), nmap);
	for (int j = 0; j < nmap; j++) {
		assert_int_equal(z64(BP_E820_TABLE + j * 20), map[j].addr);
		assert_int_equal(z64(BP_E820_TABLE + j * 20 + 8), map[j].size);
		assert_int_equal(z32(BP_E820_TABLE + j * 20 + 16), map[j].type);
	}

	/* without initrd_addr_max in the way, the initrd goes to the top of RAM */
	make();
	k = tu_file("bzImage2", img, n);
	assert_int_equal(bzimage_boot_load(&mem, k, i, NULL, 0, NULL, &e, &err), 0);
	assert_int_equal(z32(HDR_RAMDISK_IMAGE) + z32(HDR_RAMDISK_SIZE) > RAM - 4096, 1);
	assert_int_equal(z64(BP_ACPI_RSDP_ADDR), 0);
}

static void test_cmdline_too_long(void **state)
{
	(void)state;
	struct boot_entry e;
	struct terr err = { 0 };
	char line[300];
	size_t n = make();

	w32(HDR_CMDLINE_SIZE, 255);
	const char *k = tu_file("bzImage3", img, n);
	memset(line, 'x', 256);
	line[256] = '\0';
	assert_int_equal(bzimage_boot_load(&mem, k, NULL, line, 0, NULL, &e, &err), -E2BIG);
	assert_string_equal(err.msg, "cmdline: 256 bytes is longer than the 255 the kernel "
			    "accepts");
	line[255] = '\0';
	terr_clear(&err);
	assert_int_equal(bzimage_boot_load(&mem, k, NULL, line, 0, NULL, &e, &err), 0);
}

static void test_initrd_too_big(void **state)
{
	(void)state;
	struct boot_entry e;
	struct terr err = { 0 };
	static uint8_t rd[MIB(9)];
	char want[512];
	size_t n = make();

	/* kernel needs 16-20 MiB; initrd must end below 28 MiB: 8 MiB free */
	w32(HDR_INITRD_ADDR_MAX, MIB(28) - 1);
	const char *k = tu_file("bzImage4", img, n);
	const char *i = tu_file("big.img", rd, sizeof(rd));
	assert_int_equal(bzimage_boot_load(&mem, k, i, "", 0, NULL, &e, &err), -ENOMEM);
	snprintf(want, sizeof(want), "initrd %s (9 MiB) does not fit below 0x1c00000 (free "
		 "RAM for it: 0x1400000 - 0x1c00000)", i);
	assert_string_equal(err.msg, want);
}

/* ---- host unpacking ---- */

#define VBASE 0xffffffff81000000ULL   /* where a kernel linked at 16 MiB runs */
static uint8_t elf[0x4000];
static uint8_t big[SETUP + 0x10000];

static void put(uint8_t *p, size_t o, uint64_t v, unsigned n) { memcpy(p + o, &v, n); }

/* raw (a vmlinux and what follows it) gzip-compressed into a bzImage in
 * big; returns the bzImage's length. */
static size_t pack(const uint8_t *raw, size_t raw_len, bool corrupt)
{
	size_t n = make();
	(void)n;
	memset(big, 0, sizeof(big));
	memcpy(big, img, SETUP);
	z_stream z;
	memset(&z, 0, sizeof(z));
	assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (Bytef *)(uintptr_t)raw;
	z.avail_in = (uInt)raw_len;
	z.next_out = big + SETUP + 0x100;
	z.avail_out = sizeof(big) - SETUP - 0x100;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	size_t plen = z.total_out;
	deflateEnd(&z);
	if (corrupt)
		memset(big + SETUP + 0x100 + plen / 2, 0x55, 16);
	size_t ksize = (0x100 + plen + 15) & ~(size_t)15;
	memcpy(big + HDR_SYSSIZE, &(uint32_t){ (uint32_t)(ksize / 16) }, 4);
	memcpy(big + HDR_PAYLOAD_OFFSET, &(uint32_t){ 0x100 }, 4);
	memcpy(big + HDR_PAYLOAD_LENGTH, &(uint32_t){ (uint32_t)plen }, 4);
	memcpy(big + HDR_INIT_SIZE, &(uint32_t){ (uint32_t)MIB(8) }, 4);
	return SETUP + ksize;
}

/* A vmlinux as the payload holds it: an ELF with a text segment at 16 MiB
 * and a data+bss segment at 18 MiB, then a relocation table for one 64-bit,
 * one inverse 32-bit and one 32-bit place; gzip-compressed into a bzImage.
 * Returns the bzImage's length (in big). */
static size_t make_packed(bool corrupt)
{
	memset(elf, 0, sizeof(elf));
	memcpy(elf, "\177ELF\2\1\1", 7);
	put(elf, 16, 2, 2);                 /* ET_EXEC */
	put(elf, 18, 62, 2);                /* EM_X86_64 */
	put(elf, 24, MIB(16) + 0x100, 8);   /* e_entry, physical */
	put(elf, 32, 64, 8);                /* e_phoff */
	put(elf, 54, 56, 2);
	put(elf, 56, 2, 2);
	uint8_t *ph = elf + 64;
	put(ph, 0, 1, 4); put(ph, 8, 0x1000, 8); put(ph, 16, VBASE, 8); put(ph, 24, MIB(16), 8);
	put(ph, 32, 0x2000, 8); put(ph, 40, 0x2000, 8);
	ph += 56;
	put(ph, 0, 1, 4); put(ph, 8, 0x3000, 8); put(ph, 16, VBASE + MIB(2), 8);
	put(ph, 24, MIB(18), 8); put(ph, 32, 0x1000, 8); put(ph, 40, 0x3000, 8);
	for (size_t i = 0x1000; i < 0x4000; i++)
		elf[i] = (uint8_t)(i * 7);
	put(elf, 0x1010, VBASE + 0x40, 8);  /* 64-bit pointer */
	put(elf, 0x1020, 0x81000080, 4);    /* 32-bit sign-extended pointer */
	put(elf, 0x1030, 0x1000, 4);        /* PC-relative to a per-CPU symbol */
	uint32_t relocs[] = { 0, 0x81000010, 0, 0x81000030, 0, 0x81000020 };
	static uint8_t raw[sizeof(elf) + sizeof(relocs)];
	memcpy(raw, elf, sizeof(elf));
	memcpy(raw + sizeof(elf), relocs, sizeof(relocs));
	return pack(raw, sizeof(raw), corrupt);
}

static void test_host_unpack_nokaslr(void **state)
{
	(void)state;
	struct boot_entry e;
	struct terr err = { 0 };
	const char *k = tu_file("packed", big, make_packed(false));

	memset(mem.base + MIB(16), 0xee, MIB(8));
	assert_int_equal(bzimage_boot_load(&mem, k, NULL, "console=ttyS0 nokaslr", 0, NULL, &e,
					   &err), 0);
	assert_int_equal(e.kind, BOOT_ENTRY_LINUX64);
	assert_int_equal(e.entry, MIB(16) + 0x100);
	assert_memory_equal(mem.base + MIB(16), elf + 0x1000, 0x2000);   /* as linked */
	assert_memory_equal(mem.base + MIB(18), elf + 0x3000, 0x1000);
	for (size_t i = 0x1000; i < 0x3000; i++)   /* bss cleared */
		assert_int_equal(mem.base[MIB(18) + i], 0);
	assert_int_equal(z8(HDR_LOADFLAGS) & LOADFLAG_KASLR, 0);
	assert_int_equal(z16(HDR_VERSION), 0x020f);

	/* boot.unpack=guest: the compressed kernel at 16 MiB, entered at +0x200 */
	struct bzimage_opts guest = { .host_unpack = false };
	assert_int_equal(bzimage_boot_load(&mem, k, NULL, "", 0, &guest, &e, &err), 0);
	assert_int_equal(e.entry, MIB(16) + 0x200);
	assert_memory_equal(mem.base + MIB(16), big + SETUP, 0x100);
}

static void test_host_unpack_kaslr(void **state)
{
	(void)state;
	struct boot_entry e;
	struct terr err = { 0 };
	static uint8_t rd[MIB(1)];
	const char *k = tu_file("packed2", big, make_packed(false));
	const char *i = tu_file("rd", rd, sizeof(rd));
	bool moved = false, shifted = false;

	for (int run = 0; run < 8; run++) {
		assert_int_equal(bzimage_boot_load(&mem, k, i, "console=ttyS0", 0, NULL, &e, &err), 0);
		uint64_t phys = e.entry - 0x100;
		assert_int_equal(phys % MIB(2), 0);
		assert_true(phys >= MIB(16));
		assert_true(phys + MIB(4) <= z32(HDR_RAMDISK_IMAGE));   /* below the initrd */
		moved |= phys != MIB(16);
		const uint8_t *t = mem.base + phys;
		uint64_t p64, delta;
		uint32_t p32, inv;
		memcpy(&p64, t + 0x10, 8);
		memcpy(&p32, t + 0x20, 4);
		memcpy(&inv, t + 0x30, 4);
		delta = p64 - (VBASE + 0x40);
		assert_int_equal(delta % MIB(2), 0);
		assert_true(delta < MIB(512));
		assert_int_equal(p32, (uint32_t)(0x81000080 + delta));
		assert_int_equal(inv, (uint32_t)(0x1000 - delta));
		shifted |= delta != 0;
		/* everything else as linked */
		assert_memory_equal(t, elf + 0x1000, 0x10);
		assert_memory_equal(t + 0x40, elf + 0x1040, 0x2000 - 0x40);
		assert_int_equal(z8(HDR_LOADFLAGS) & LOADFLAG_KASLR, LOADFLAG_KASLR);
	}
	assert_true(moved);
	assert_true(shifted);
}

/* The payload unpacks in place, 4 KiB below the load address here (the
 * ELF header before the first segment): what it leaves outside the
 * segments is cleared, and RAM beyond what it touched is left alone. */
static void test_host_unpack_clears_leftovers(void **state)
{
	(void)state;
	struct boot_entry e;
	struct terr err = { 0 };
	const char *k = tu_file("packed3", big, make_packed(false));

	memset(mem.base + MIB(15), 0xee, MIB(8));
	assert_int_equal(bzimage_boot_load(&mem, k, NULL, "nokaslr", 0, NULL, &e, &err), 0);
	const uint8_t *t = mem.base + MIB(16);
	for (size_t i = 1; i <= 0x1000; i++)        /* ELF header */
		assert_int_equal(t[-(ptrdiff_t)i], 0);
	assert_int_equal(t[-0x1001], 0xee);
	assert_memory_equal(t, elf + 0x1000, 0x2000);
	/* the moved segment's source and the relocations: the file's last
	 * 0x2018 bytes, unpacked up to 16 MiB - 4 KiB + 0x4018 */
	for (size_t i = 0x2000; i < 0x3018; i++)
		assert_int_equal(t[i], 0);
	assert_int_equal(t[0x3018], 0xee);
	assert_memory_equal(t + MIB(2), elf + 0x3000, 0x1000);
	for (size_t i = 0x1000; i < 0x3000; i++)
		assert_int_equal(t[MIB(2) + i], 0);
	assert_int_equal(t[MIB(2) + 0x3000], 0xee);
}

/* Segments whose moves would overwrite each other: the first one's bss
 * covers where the second one unpacked. Both must still arrive intact. */
static void test_host_unpack_overlapping_moves(void **state)
{
	(void)state;
	struct boot_entry e;
	struct terr err = { 0 };
	static uint8_t raw[0x4000];

	memset(raw, 0, sizeof(raw));
	memcpy(raw, "\177ELF\2\1\1", 7);
	put(raw, 16, 2, 2);
	put(raw, 18, 62, 2);
	put(raw, 24, MIB(16) + 0x100, 8);
	put(raw, 32, 64, 8);
	put(raw, 54, 56, 2);
	put(raw, 56, 2, 2);
	uint8_t *ph = raw + 64;   /* 16 MiB: 4 KiB of data, 12 KiB of bss */
	put(ph, 0, 1, 4); put(ph, 8, 0x2000, 8); put(ph, 16, VBASE, 8); put(ph, 24, MIB(16), 8);
	put(ph, 32, 0x1000, 8); put(ph, 40, 0x4000, 8);
	ph += 56;                 /* 18 MiB: 4 KiB unpacked right after the first */
	put(ph, 0, 1, 4); put(ph, 8, 0x3000, 8); put(ph, 16, VBASE + MIB(2), 8);
	put(ph, 24, MIB(18), 8); put(ph, 32, 0x1000, 8); put(ph, 40, 0x1000, 8);
	for (size_t i = 0x2000; i < 0x4000; i++)
		raw[i] = (uint8_t)(i * 11 + 3);
	const char *k = tu_file("overlap", big, pack(raw, sizeof(raw), false));

	memset(mem.base + MIB(14), 0xee, MIB(8));
	assert_int_equal(bzimage_boot_load(&mem, k, NULL, "nokaslr", 0, NULL, &e, &err), 0);
	assert_int_equal(e.entry, MIB(16) + 0x100);
	assert_memory_equal(mem.base + MIB(16), raw + 0x2000, 0x1000);
	for (size_t i = 0x1000; i < 0x4000; i++)
		assert_int_equal(mem.base[MIB(16) + i], 0);
	assert_memory_equal(mem.base + MIB(18), raw + 0x3000, 0x1000);
	for (size_t i = 1; i <= 0x2000; i++)        /* headers, unpacked below */
		assert_int_equal(mem.base[MIB(16) - i], 0);
}

static void test_host_unpack_corrupt(void **state)
{
	(void)state;
	struct boot_entry e;
	struct terr err = { 0 };
	const char *k = tu_file("corrupt", big, make_packed(true));

	assert_true(bzimage_boot_load(&mem, k, NULL, "", 0, NULL, &e, &err) < 0);
	assert_non_null(strstr(err.msg, "corrupt"));
}

static void test_real_kernel(void **state)
{
	(void)state;
	glob_t g;
	struct boot_entry e;
	struct terr err = { 0 };
	const char *pat[] = { SOURCE_ROOT "/tests/nested/work/kernel/*/boot/vmlinuz-*",
			      "/boot/vmlinuz-*" };
	const char *path = NULL;

	for (size_t j = 0; j < 2 && !path; j++) {
		if (glob(pat[j], 0, NULL, &g) == 0)
			path = g.gl_pathv[0];
		else
			globfree(&g);
	}
	if (!path)
		skip();
	struct bzimage_opts guest = { .host_unpack = false };
	int r = bzimage_boot_load(&mem, path, NULL, "console=ttyS0", 0xe0000, &guest, &e, &err);
	if (r < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(e.entry % 0x200000, 0x200);
	assert_true(z16(HDR_VERSION) >= 0x020c);
	/* unpacked here (if this build knows its codec): vmlinux's entry */
	r = bzimage_boot_load(&mem, path, NULL, "console=ttyS0", 0xe0000, NULL, &e, &err);
	if (r < 0)
		fail_msg("%s", err.msg);
	assert_true(e.entry % 0x200000 == 0 || e.entry % 0x200000 == 0x200);

	/* nokaslr: every segment as the ELF in the payload has it, unpacked
	 * here the plain way (to a buffer) as the oracle */
	r = bzimage_boot_load(&mem, path, NULL, "console=ttyS0 nokaslr", 0xe0000, NULL, &e, &err);
	if (r < 0)
		fail_msg("%s", err.msg);
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	static uint8_t kbuf[64 << 20];
	size_t klen = fread(kbuf, 1, sizeof(kbuf), f);
	fclose(f);
	uint32_t poff, plen;
	memcpy(&poff, kbuf + HDR_PAYLOAD_OFFSET, 4);
	memcpy(&plen, kbuf + HDR_PAYLOAD_LENGTH, 4);
	size_t setup = (size_t)((kbuf[HDR_SETUP_SECTS] ? kbuf[HDR_SETUP_SECTS] : 4) + 1) * 512;
	assert_true(setup + poff + plen <= klen);
	uint8_t *elfimg = NULL;
	size_t elflen = 0;
	if (kernel_payload_unpack(kbuf + setup + poff, plen, "real", &elfimg, &elflen, &err) < 0) {
		globfree(&g);
		skip();   /* a codec this build lacks: the guest unpacks it */
	}
	uint64_t phoff, pref;
	uint16_t phnum;
	memcpy(&phoff, elfimg + 32, 8);
	memcpy(&phnum, elfimg + 56, 2);
	memcpy(&pref, kbuf + HDR_PREF_ADDRESS, 8);
	unsigned loads = 0;
	for (unsigned i = 0; i < phnum; i++) {
		const uint8_t *ph = elfimg + phoff + i * 56;
		uint32_t type;
		uint64_t off, paddr, filesz, memsz;
		memcpy(&type, ph, 4);
		memcpy(&off, ph + 8, 8);
		memcpy(&paddr, ph + 24, 8);
		memcpy(&filesz, ph + 32, 8);
		memcpy(&memsz, ph + 40, 8);
		if (type != 1)
			continue;
		loads++;
		assert_memory_equal(mem.base + paddr, elfimg + off, filesz);
		for (uint64_t j = filesz; j < memsz; j++)
			assert_int_equal(mem.base[paddr + j], 0);
	}
	assert_true(loads > 0);
	free(elfimg);
	globfree(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_setup_sects_zero),
		cmocka_unit_test(test_longer_file),
		cmocka_unit_test(test_placement),
		cmocka_unit_test(test_bad_headers),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_boot),
		cmocka_unit_test(test_cmdline_too_long),
		cmocka_unit_test(test_initrd_too_big),
		cmocka_unit_test(test_host_unpack_nokaslr),
		cmocka_unit_test(test_host_unpack_kaslr),
		cmocka_unit_test(test_host_unpack_clears_leftovers),
		cmocka_unit_test(test_host_unpack_overlapping_moves),
		cmocka_unit_test(test_host_unpack_corrupt),
		cmocka_unit_test(test_real_kernel),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
