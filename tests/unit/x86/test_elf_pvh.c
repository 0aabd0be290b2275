/* PVH ELF loader: generated valid and malformed ELF files, exact messages,
 * hvm_start_info contents, and the real hello guest when it has been built. */
#include <errno.h>
#include <elf.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "arch/x86/e820.h"
#include "arch/x86/elf_pvh.h"
#include "arch/x86/layout.h"
#include "elf_writer.h"
#include "test_util.h"

#define RAM MIB(256)
#define KADDR MIB(16)

static uint8_t file[MIB(1)];
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

static struct elf_spec good64(void)
{
	return (struct elf_spec){ .paddr = { KADDR }, .filesz = { 0x3000 },
				  .memsz = { 0x5000 }, .entry = KADDR + 0x40 };
}

static size_t build(const struct elf_spec *s)
{
	size_t n = elf_write(s, file, sizeof(file));
	assert_true(n > 0);
	return n;
}

/* Load buf and expect failure with exactly "kernel t.elf: " + msg. */
static void expect_err(size_t len, int code, const char *msg)
{
	struct terr err = { 0 };
	struct pvh_image img;
	char want[512];

	snprintf(want, sizeof(want), "kernel t.elf: %s", msg);
	assert_int_equal(elf_pvh_load_buf(&mem, file, len, "t.elf", &img, &err), code);
	assert_string_equal(err.msg, want);
	assert_int_equal(err.code, code);
}

static void test_load64(void **state)
{
	(void)state;
	struct elf_spec s = good64();
	struct pvh_image img;
	struct terr err = { 0 };
	size_t n = build(&s);

	memset(mem.base + KADDR, 0xaa, 0x6000);
	assert_int_equal(elf_pvh_load_buf(&mem, file, n, "t.elf", &img, &err), 0);
	assert_int_equal(img.entry, KADDR + 0x40);
	assert_int_equal(img.start, KADDR);
	assert_int_equal(img.end, KADDR + 0x5000);
	for (unsigned i = 0; i < 0x3000; i++)
		assert_int_equal(mem.base[KADDR + i], 0x11);
	for (unsigned i = 0x3000; i < 0x5000; i++)   /* bss zeroed */
		assert_int_equal(mem.base[KADDR + i], 0);
	assert_int_equal(mem.base[KADDR + 0x5000], 0xaa);  /* nothing beyond */
}

static void test_load32(void **state)
{
	(void)state;
	struct elf_spec s = good64();
	struct pvh_image img;
	struct terr err = { 0 };

	s.is32 = true;
	size_t n = build(&s);
	assert_int_equal(elf_pvh_load_buf(&mem, file, n, "t.elf", &img, &err), 0);
	assert_int_equal(img.entry, KADDR + 0x40);
	/* an ELF32 kernel may also be tagged x86-64 (Linux's vmlinux never is) */
	s.machine = EM_X86_64;
	n = build(&s);
	assert_int_equal(elf_pvh_load_buf(&mem, file, n, "t.elf", &img, &err), 0);
}

static void test_note_in_section(void **state)
{
	(void)state;
	struct elf_spec s = good64();
	struct pvh_image img;
	struct terr err = { 0 };

	s.note = NOTE_SECTION;
	size_t n = build(&s);
	assert_int_equal(elf_pvh_load_buf(&mem, file, n, "t.elf", &img, &err), 0);
	assert_int_equal(img.entry, KADDR + 0x40);
	s.is32 = true;
	n = build(&s);
	assert_int_equal(elf_pvh_load_buf(&mem, file, n, "t.elf", &img, &err), 0);
}

static void test_no_note(void **state)
{
	(void)state;
	struct elf_spec s = good64();

	s.note = NOTE_NONE;
	expect_err(build(&s), -ENOEXEC, "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); tern "
		   "boots ELF kernels only through PVH: build Linux with CONFIG_PVH=y, or "
		   "boot its bzImage");
}

static void test_bad_note(void **state)
{
	(void)state;
	struct elf_spec s = good64();

	s.descsz = 2;
	expect_err(build(&s), -ENOEXEC, "PVH entry note has a 2-byte value (expected 4 or 8)");
	s = good64();
	s.entry = KADDR + 0x5000;   /* one past the segment */
	expect_err(build(&s), -ENOEXEC, "PVH entry point 0x1005000 is not inside any loaded "
		   "segment");
	/* a note whose sizes run past its area is ignored, not trusted */
	s = good64();
	size_t n = build(&s);
	uint32_t huge = 0xfffffff0;
	memcpy(file + sizeof(Elf64_Ehdr) + 2 * sizeof(Elf64_Phdr), &huge, 4);
	expect_err(n, -ENOEXEC, "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); tern "
		   "boots ELF kernels only through PVH: build Linux with CONFIG_PVH=y, or "
		   "boot its bzImage");
}

static void test_not_elf(void **state)
{
	(void)state;
	memcpy(file, "MZ\x90\0garbage", 11);
	expect_err(11, -ENOEXEC, "not an ELF file (no ELF magic)");
	expect_err(0, -ENOEXEC, "not an ELF file (no ELF magic)");
}

static void test_truncated(void **state)
{
	(void)state;
	struct elf_spec s = good64();
	size_t n = build(&s);

	(void)n;
	expect_err(10, -ENOEXEC, "truncated ELF header (10 bytes)");
	expect_err(40, -ENOEXEC, "truncated ELF header (40 bytes, need 64)");
	/* program headers cut off */
	expect_err(100, -ENOEXEC, "program headers (2 x 56 bytes at offset 0x40) extend beyond "
		   "the end of the file (100 bytes)");
	/* segment data cut off */
	expect_err(0x2000, -ENOEXEC, "segment 0 data (0x3000 bytes at offset 0x1000) extends "
		   "beyond the end of the file (8192 bytes)");
	s.is32 = true;
	build(&s);
	expect_err(50, -ENOEXEC, "truncated ELF header (50 bytes, need 52)");
}

static void test_bad_header(void **state)
{
	(void)state;
	struct elf_spec s = good64();
	size_t n = build(&s);

	file[EI_CLASS] = 7;
	expect_err(n, -ENOEXEC, "unsupported ELF class 7");
	build(&s);
	file[EI_DATA] = ELFDATA2MSB;
	expect_err(n, -ENOEXEC, "ELF data encoding 2 is not little-endian");
	s.machine = EM_AARCH64;
	build(&s);
	expect_err(n, -ENOEXEC, "ELF machine 183 is not x86-64 or i386");
	s = good64();
	build(&s);
	uint16_t v = ET_REL;
	memcpy(file + offsetof(Elf64_Ehdr, e_type), &v, 2);
	expect_err(n, -ENOEXEC, "ELF type 1 is not an executable");
	build(&s);
	v = 0;
	memcpy(file + offsetof(Elf64_Ehdr, e_phnum), &v, 2);
	expect_err(n, -ENOEXEC, "ELF has no usable program headers (e_phnum 0)");
	build(&s);
	v = 20;
	memcpy(file + offsetof(Elf64_Ehdr, e_phentsize), &v, 2);
	expect_err(n, -ENOEXEC, "program header size 20 is smaller than 56");
	build(&s);
	uint64_t off = 0xffffffffffffff00ULL;   /* phoff + size overflows */
	memcpy(file + offsetof(Elf64_Ehdr, e_phoff), &off, 8);
	expect_err(n, -ENOEXEC, "program headers (2 x 56 bytes at offset 0xffffffffffffff00) "
		   "extend beyond the end of the file (16384 bytes)");
}

static void test_filesz_gt_memsz(void **state)
{
	(void)state;
	struct elf_spec s = good64();

	s.memsz[0] = 0x2000;
	expect_err(build(&s), -ENOEXEC, "segment 0 has a file size (0x3000) larger than its "
		   "memory size (0x2000)");
}

static void test_outside_ram(void **state)
{
	(void)state;
	struct elf_spec s = good64();

	s.paddr[0] = RAM - 0x1000;
	s.entry = (uint32_t)s.paddr[0];
	expect_err(build(&s), -ENOEXEC, "segment 0 at 0xffff000 - 0x10003fff lies outside guest "
		   "RAM (256 MiB)");
	s.paddr[0] = 0xfee00000;
	s.entry = (uint32_t)s.paddr[0];
	expect_err(build(&s), -ENOEXEC, "segment 0 at 0xfee00000 - 0xfee04fff lies outside "
		   "guest RAM (256 MiB)");
	s.paddr[0] = 0xfffffffffffff000ULL;   /* paddr + memsz wraps */
	expect_err(build(&s), -ENOEXEC, "segment 0 at 0xfffffffffffff000 with size 0x5000 wraps "
		   "around the address space");
}

static void test_low_overlap(void **state)
{
	(void)state;
	struct elf_spec s = good64();

	s.paddr[0] = 0x7000;   /* over hvm_start_info */
	s.entry = 0x7000;
	expect_err(build(&s), -ENOEXEC, "segment 0 at 0x7000 - 0xbfff overlaps tern's boot "
		   "structures below 1 MiB (kernels must load at or above 0x100000)");
	s.paddr[0] = 0xff000;   /* straddles 1 MiB */
	expect_err(build(&s), -ENOEXEC, "segment 0 at 0xff000 - 0x103fff overlaps tern's boot "
		   "structures below 1 MiB (kernels must load at or above 0x100000)");
}

/* A bad second segment leaves RAM untouched: validation precedes copying. */
static void test_atomic(void **state)
{
	(void)state;
	struct elf_spec s = good64();

	s.nload = 2;
	s.paddr[1] = RAM;
	s.filesz[1] = 0x100;
	s.memsz[1] = 0x1000;
	memset(mem.base + KADDR, 0xaa, 0x100);
	expect_err(build(&s), -ENOEXEC, "segment 1 at 0x10000000 - 0x10000fff lies outside "
		   "guest RAM (256 MiB)");
	assert_int_equal(mem.base[KADDR], 0xaa);
}

static void test_two_segments(void **state)
{
	(void)state;
	struct elf_spec s = good64();
	struct pvh_image img;
	struct terr err = { 0 };

	s.nload = 2;
	s.paddr[1] = KADDR + MIB(1);
	s.filesz[1] = 0x10;
	s.memsz[1] = 0x2000;
	size_t n = build(&s);
	assert_int_equal(elf_pvh_load_buf(&mem, file, n, "t.elf", &img, &err), 0);
	assert_int_equal(img.end, KADDR + MIB(1) + 0x2000);
	assert_int_equal(mem.base[KADDR + MIB(1)], 0x22);
	assert_int_equal(mem.base[KADDR + MIB(1) + 0x10], 0);
}

static void check_unreadable(const char *path)
{
	struct pvh_image img;
	struct terr err = { 0 };
	char want[512];

	assert_int_equal(chmod(path, 0), 0);
	assert_int_equal(elf_pvh_load_file(&mem, path, &img, &err), -EACCES);
	/* built with strcat: gcc 12 with UBSan wrongly calls path NULL in snprintf */
	strcpy(want, "kernel ");
	strncat(want, path, 256);
	strcat(want, ": Permission denied");
	assert_string_equal(err.msg, want);
	assert_int_equal(chmod(path, 0644), 0);
}

static void test_files(void **state)
{
	(void)state;
	struct pvh_image img;
	struct terr err = { 0 };
	char want[512];

	assert_int_equal(elf_pvh_load_file(&mem, "/nonexistent/vmlinux", &img, &err), -ENOENT);
	assert_string_equal(err.msg, "kernel /nonexistent/vmlinux: No such file or directory");
	assert_false(elf_pvh_file_is_elf("/nonexistent/vmlinux"));

	terr_clear(&err);
	assert_int_equal(elf_pvh_load_file(&mem, tu_dir(), &img, &err), -EINVAL);
	snprintf(want, sizeof(want), "kernel %s: not a regular file", tu_dir());
	assert_string_equal(err.msg, want);

	terr_clear(&err);
	const char *p = tu_file("empty", "", 0);
	assert_int_equal(elf_pvh_load_file(&mem, p, &img, &err), -ENOEXEC);
	snprintf(want, sizeof(want), "kernel %s: file is empty", p);
	assert_string_equal(err.msg, want);

	terr_clear(&err);
	p = tu_file("text", "hello\n", 6);
	assert_int_equal(elf_pvh_load_file(&mem, p, &img, &err), -ENOEXEC);
	snprintf(want, sizeof(want), "kernel %s: not an ELF file (no ELF magic)", p);
	assert_string_equal(err.msg, want);
	assert_false(elf_pvh_file_is_elf(p));

	struct elf_spec s = good64();
	p = tu_file("k.elf", file, build(&s));
	assert_true(elf_pvh_file_is_elf(p));
	if (geteuid() != 0)   /* root reads anything */
		check_unreadable(p);
	assert_int_equal(elf_pvh_load_file(&mem, p, &img, &err), 0);
}

static uint32_t rd32(uint64_t gpa) { uint32_t v; memcpy(&v, mem.base + gpa, 4); return v; }
static uint64_t rd64(uint64_t gpa) { uint64_t v; memcpy(&v, mem.base + gpa, 8); return v; }

static void test_boot(void **state)
{
	(void)state;
	struct elf_spec s = good64();
	struct boot_entry e;
	struct terr err = { 0 };
	static uint8_t rd[0x2345];

	for (size_t i = 0; i < sizeof(rd); i++)
		rd[i] = (uint8_t)i;
	const char *k = tu_file("k2.elf", file, build(&s));
	const char *i = tu_file("initrd", rd, sizeof(rd));
	assert_int_equal(pvh_boot_load(&mem, k, i, "console=ttyS0 quiet", 0xe0000, &e, &err), 0);
	assert_int_equal(e.kind, BOOT_ENTRY_PVH32);
	assert_int_equal(e.entry, KADDR + 0x40);
	assert_int_equal(e.boot_info, LAYOUT_BOOT_INFO);

	uint64_t si = LAYOUT_BOOT_INFO;
	assert_int_equal(rd32(si + 0), 0x336ec578);
	assert_int_equal(rd32(si + 4), 1);
	assert_int_equal(rd32(si + 8), 0);
	assert_int_equal(rd32(si + 12), 1);
	uint64_t mod = rd64(si + 16);
	assert_int_equal(rd64(si + 24), LAYOUT_CMDLINE);
	assert_string_equal((char *)mem.base + LAYOUT_CMDLINE, "console=ttyS0 quiet");
	assert_int_equal(rd64(si + 32), 0xe0000);
	assert_int_equal(rd64(si + 40), LAYOUT_BOOT_MEMMAP);
	assert_int_equal(rd32(si + 48), 5);

	uint64_t ig = rd64(mod), isz = rd64(mod + 8);
	assert_int_equal(isz, sizeof(rd));
	assert_int_equal(ig % 4096, 0);
	assert_true(ig + isz <= RAM && ig + isz > RAM - 4096);
	assert_memory_equal(mem.base + ig, rd, sizeof(rd));
	assert_int_equal(rd64(mod + 16), 0);

	/* memmap matches e820_build */
	struct e820_entry map[E820_MAX_ENTRIES];
	assert_int_equal(e820_build(&mem, map, E820_MAX_ENTRIES, &err), 5);
	for (unsigned j = 0; j < 5; j++) {
		uint64_t a = LAYOUT_BOOT_MEMMAP + j * 24;
		assert_int_equal(rd64(a), map[j].addr);
		assert_int_equal(rd64(a + 8), map[j].size);
		assert_int_equal(rd32(a + 16), map[j].type);
		assert_int_equal(rd32(a + 20), 0);
	}

	/* no initrd: no modules */
	assert_int_equal(pvh_boot_load(&mem, k, NULL, NULL, 0, &e, &err), 0);
	assert_int_equal(rd32(si + 12), 0);
	assert_int_equal(rd64(si + 16), 0);
	assert_string_equal((char *)mem.base + LAYOUT_CMDLINE, "");
}

static void test_hello(void **state)
{
	(void)state;
#ifdef HELLO_ELF
	struct boot_entry e;
	struct terr err = { 0 };

	if (access(HELLO_ELF, R_OK) != 0)
		skip();
	assert_true(elf_pvh_file_is_elf(HELLO_ELF));
	int r = pvh_boot_load(&mem, HELLO_ELF, NULL, "", 0, &e, &err);
	if (r < 0)
		fail_msg("%s", err.msg);
	assert_true(e.entry >= LAYOUT_HIMEM_START);
#else
	skip();
#endif
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load64),
		cmocka_unit_test(test_load32),
		cmocka_unit_test(test_note_in_section),
		cmocka_unit_test(test_no_note),
		cmocka_unit_test(test_bad_note),
		cmocka_unit_test(test_not_elf),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_bad_header),
		cmocka_unit_test(test_filesz_gt_memsz),
		cmocka_unit_test(test_outside_ram),
		cmocka_unit_test(test_low_overlap),
		cmocka_unit_test(test_atomic),
		cmocka_unit_test(test_two_segments),
		cmocka_unit_test(test_files),
		cmocka_unit_test(test_boot),
		cmocka_unit_test(test_hello),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
