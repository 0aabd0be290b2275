#include "arch/x86/bzimage.h"
#include "arch/x86/e820.h"
#include "arch/x86/layout.h"
#include "arch/x86/vmlinux_load.h"
#include "util/log.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ZERO_PAGE_SIZE 4096

static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return le16toh(v); }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }
static void wr16(uint8_t *p, uint16_t v) { v = htole16(v); memcpy(p, &v, 2); }
static void wr32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static void wr64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }

static int check_header(const uint8_t *p, size_t len, const char *name, struct terr *err)
{
	if (len >= 4 && memcmp(p, "\177ELF", 4) == 0)
		return terr_set(err, ENOEXEC, "kernel %s: is an ELF file, not a bzImage "
				"(ELF kernels boot through PVH)", name);
	if (len < HDR_MIN_FILE)
		return terr_set(err, ENOEXEC, "kernel %s: too small to be a bzImage (%zu bytes)",
				name, len);
	if (rd16(p + HDR_BOOT_FLAG) != 0xaa55)
		return terr_set(err, ENOEXEC, "kernel %s: not a bzImage (no 0xaa55 boot flag "
				"at offset 0x1fe)", name);
	if (memcmp(p + HDR_HEADER, "HdrS", 4) != 0)
		return terr_set(err, ENOEXEC, "kernel %s: not a bzImage (no \"HdrS\" magic at "
				"offset 0x202)", name);
	unsigned v = rd16(p + HDR_VERSION);
	if (v < BZIMAGE_MIN_VERSION)
		return terr_set(err, ENOEXEC, "kernel %s: boot protocol %u.%02u is too old; "
				"tern needs %u.%02u or later (64-bit entry)", name, v >> 8,
				v & 0xff, BZIMAGE_MIN_VERSION >> 8, BZIMAGE_MIN_VERSION & 0xff);
	if (!(p[HDR_LOADFLAGS] & LOADFLAG_LOADED_HIGH))
		return terr_set(err, ENOEXEC, "kernel %s: is a zImage (LOADED_HIGH not set); "
				"only bzImage is supported", name);
	if (!(rd16(p + HDR_XLOADFLAGS) & XLF_KERNEL_64))
		return terr_set(err, ENOEXEC, "kernel %s: has no 64-bit entry point "
				"(XLF_KERNEL_64 not set in xloadflags)", name);
	return 0;
}

/* A fresh zero page holding the file's setup header. */
static void zero_page_init(uint8_t *zp, const uint8_t *p, unsigned sects)
{
	/* The header ends at 0x202 + the jump's offset byte; never past
	 * BP_HDR_END, where other zero-page fields start. */
	uint64_t hdr_end = 0x202 + (uint64_t)p[HDR_JUMP + 1];
	if (hdr_end > BP_HDR_END)
		hdr_end = BP_HDR_END;
	memset(zp, 0, ZERO_PAGE_SIZE);
	memcpy(zp + BP_HDR, p + BP_HDR, hdr_end - BP_HDR);
	zp[HDR_SETUP_SECTS] = (uint8_t)sects;
	zp[HDR_TYPE_OF_LOADER] = 0xff;                 /* "undefined" boot loader */
	wr16(zp + HDR_VID_MODE, 0xffff);               /* "normal", no mode change */
}

int bzimage_load_buf(const struct guest_mem *m, const void *buf, size_t len,
		     const char *name, struct bzimage_info *info, struct terr *err)
{
	const uint8_t *p = buf;
	int r;

	if ((r = check_header(p, len, name, err)) < 0)
		return r;
	unsigned sects = p[HDR_SETUP_SECTS] ? p[HDR_SETUP_SECTS] : 4;
	uint64_t setup = (uint64_t)(sects + 1) * 512;
	uint64_t ksize = (uint64_t)rd32(p + HDR_SYSSIZE) * 16;
	if (setup > len)
		return terr_set(err, ENOEXEC, "kernel %s: truncated: the setup code (%llu bytes) "
				"is longer than the file (%zu bytes)", name,
				(unsigned long long)setup, len);
	/* Signed kernels carry a signature after the image, so the file may be
	 * longer than the header says, never shorter. */
	if (ksize == 0 || ksize > len - setup)
		return terr_set(err, ENOEXEC, "kernel %s: truncated: the header announces %llu "
				"bytes of kernel after the setup code, the file holds %llu",
				name, (unsigned long long)ksize,
				(unsigned long long)(len - setup));

	uint64_t low_top = e820_low_ram_top(m);
	uint64_t init = rd32(p + HDR_INIT_SIZE);
	uint64_t need = init > ksize ? init : ksize;
	uint64_t load = rd64(p + HDR_PREF_ADDRESS);
	bool reloc = p[HDR_RELOCATABLE] != 0;
	if (load < LAYOUT_HIMEM_START) {
		if (!reloc)
			return terr_set(err, ENOEXEC, "kernel %s: is not relocatable and wants to "
					"load at 0x%llx, below 1 MiB", name,
					(unsigned long long)load);
		load = LAYOUT_HIMEM_START;
	}
	if (load > low_top || need > low_top - load)
		return terr_set(err, ENOMEM, "kernel %s: needs 0x%llx - 0x%llx (%llu MiB from "
				"its load address) but low guest RAM ends at 0x%llx", name,
				(unsigned long long)load, (unsigned long long)(load + need - 1),
				(unsigned long long)((need + MIB(1) - 1) >> 20),
				(unsigned long long)low_top);
	uint8_t *dst = guest_mem_ptr(m, load, need);
	uint8_t *zp = guest_mem_ptr(m, LAYOUT_BOOT_INFO, ZERO_PAGE_SIZE);
	if (!dst || !zp)
		return terr_set(err, EFAULT, "kernel %s: load area 0x%llx or zero page 0x%llx is "
				"not in guest RAM", name, (unsigned long long)load,
				LAYOUT_BOOT_INFO);

	memcpy(dst, p + setup, ksize);
	zero_page_init(zp, p, sects);

	unsigned v = rd16(p + HDR_VERSION);
	*info = (struct bzimage_info){
		.version = (uint16_t)v,
		.load_addr = load,
		.kernel_end = load + need,
		.initrd_addr_max = rd32(p + HDR_INITRD_ADDR_MAX),
		.cmdline_size = rd32(p + HDR_CMDLINE_SIZE),
	};
	return 0;
}

int bzimage_load_file(const struct guest_mem *m, const char *path,
		      struct bzimage_info *info, struct terr *err)
{
	struct stat st;
	int r, fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return terr_set(err, errno, "kernel %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		r = terr_set(err, errno, "kernel %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = terr_set(err, EINVAL, "kernel %s: not a regular file", path);
		goto out;
	}
	if (st.st_size == 0) {
		r = terr_set(err, ENOEXEC, "kernel %s: file is empty", path);
		goto out;
	}
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED) {
		r = terr_set(err, errno, "kernel %s: cannot map the file: %s", path,
			     strerror(errno));
		goto out;
	}
	r = bzimage_load_buf(m, p, (size_t)st.st_size, path, info, err);
	munmap(p, (size_t)st.st_size);
out:
	close(fd);
	return r;
}

int bzimage_zero_page_finish(const struct guest_mem *m, const struct bzimage_info *info,
			     const char *cmdline, uint64_t initrd_gpa, uint64_t initrd_size,
			     uint64_t rsdp, struct terr *err)
{
	struct e820_entry map[E820_MAX_ENTRIES];
	uint8_t *zp = guest_mem_ptr(m, LAYOUT_BOOT_INFO, ZERO_PAGE_SIZE);
	int r, n;

	if (!zp)
		return terr_set(err, EFAULT, "boot: zero page at 0x%llx is not in guest RAM",
				LAYOUT_BOOT_INFO);
	if (initrd_size && (initrd_gpa >> 32 || initrd_size >> 32 ||
			    initrd_gpa + initrd_size - 1 > info->initrd_addr_max))
		return terr_set(err, EINVAL, "boot: initrd at 0x%llx (%llu bytes) is above the "
				"kernel's initrd_addr_max 0x%llx",
				(unsigned long long)initrd_gpa, (unsigned long long)initrd_size,
				(unsigned long long)info->initrd_addr_max);
	if ((r = boot_cmdline_write(m, cmdline ? cmdline : "", info->cmdline_size, err)) < 0)
		return r;
	if ((n = e820_build(m, map, E820_MAX_ENTRIES, err)) < 0)
		return n;

	wr32(zp + HDR_CMD_LINE_PTR, (uint32_t)LAYOUT_CMDLINE);
	wr32(zp + HDR_RAMDISK_IMAGE, (uint32_t)initrd_gpa);
	wr32(zp + HDR_RAMDISK_SIZE, (uint32_t)initrd_size);
	/* boot_params.acpi_rsdp_addr is a zero-page field read by every kernel
	 * that knows it (zero-page.rst: "ALL"); older ones ignore the padding,
	 * and all find the RSDP by scanning 0xe0000 - 0xfffff anyway. */
	wr64(zp + BP_ACPI_RSDP_ADDR, rsdp);
	zp[BP_E820_ENTRIES] = (uint8_t)n;
	for (int i = 0; i < n; i++) {
		uint8_t *e = zp + BP_E820_TABLE + i * 20;
		wr64(e, map[i].addr);
		wr64(e + 8, map[i].size);
		wr32(e + 16, map[i].type);
	}
	return 0;
}

static int map_file(const char *path, const char *what, void **p, size_t *len, struct terr *err)
{
	struct stat st;
	int r = 0, fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return terr_set(err, errno, "%s %s: %s", what, path, strerror(errno));
	if (fstat(fd, &st) < 0)
		r = terr_set(err, errno, "%s %s: %s", what, path, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		r = terr_set(err, EINVAL, "%s %s: not a regular file", what, path);
	else if (st.st_size == 0)
		r = terr_set(err, ENOEXEC, "%s %s: file is empty", what, path);
	if (!r) {
		*p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (*p == MAP_FAILED)
			r = terr_set(err, errno, "%s %s: cannot map the file: %s", what, path,
				     strerror(errno));
		*len = (size_t)st.st_size;
	}
	close(fd);
	return r;
}

int bzimage_boot_load(const struct guest_mem *m, const char *kernel, const char *initrd,
		      const char *cmdline, uint64_t rsdp, const struct bzimage_opts *opts,
		      struct boot_entry *out, struct terr *err)
{
	struct bzimage_info info;
	uint64_t initrd_gpa = 0, initrd_size = 0, entry = 0;
	struct vmlinux v = { 0 };
	size_t len = 0;
	void *map;
	bool kaslr = false;
	int r;

	if (!cmdline)
		cmdline = "";
	if ((r = map_file(kernel, "kernel", &map, &len, err)) < 0)
		return r;
	const uint8_t *p = map;
	if ((r = check_header(p, len, kernel, err)) < 0)
		goto out;
	r = -ENOTSUP;
	if (!opts || opts->host_unpack)
		r = vmlinux_probe(p, len, kernel, &v, err);
	if (r == -ENOTSUP) {
		/* the kernel's own decompressor runs in the guest */
		terr_clear(err);
		if ((r = bzimage_load_buf(m, p, len, kernel, &info, err)) < 0)
			goto out;
		if (initrd) {
			uint64_t limit = e820_low_ram_top(m);
			if (info.initrd_addr_max < limit - 1)
				limit = info.initrd_addr_max + 1;
			uint64_t floor = (info.kernel_end + 0xfff) & ~0xfffULL;
			r = boot_initrd_load(m, initrd, floor, limit, &initrd_gpa, &initrd_size,
					     err);
			if (r < 0)
				goto out;
		}
		entry = info.load_addr + 0x200;
	} else if (r < 0) {
		goto out;
	} else {
		uint64_t top = e820_low_ram_top(m);
		info = (struct bzimage_info){
			.version = rd16(p + HDR_VERSION),
			.load_addr = v.pref,
			.kernel_end = v.pref + v.size,
			.initrd_addr_max = rd32(p + HDR_INITRD_ADDR_MAX),
			.cmdline_size = rd32(p + HDR_CMDLINE_SIZE),
		};
		/* the initrd first, at the top; the kernel anywhere below it */
		if (initrd) {
			uint64_t limit = top;
			if (info.initrd_addr_max < limit - 1)
				limit = info.initrd_addr_max + 1;
			uint64_t floor = (info.kernel_end + PMD_SIZE - 1) & ~(PMD_SIZE - 1);
			r = boot_initrd_load(m, initrd, floor, limit, &initrd_gpa, &initrd_size,
					     err);
			if (r < 0)
				goto out;
			top = initrd_gpa & ~(PMD_SIZE - 1);
		}
		r = vmlinux_load(m, &v, top, cmdline, &entry, &kaslr, err);
		if (r < 0)
			goto out;
		uint8_t *zp = guest_mem_ptr(m, LAYOUT_BOOT_INFO, ZERO_PAGE_SIZE);
		if (!zp) {
			r = terr_set(err, EFAULT, "boot: zero page at 0x%llx is not in guest RAM",
				     LAYOUT_BOOT_INFO);
			goto out;
		}
		zero_page_init(zp, p, p[HDR_SETUP_SECTS] ? p[HDR_SETUP_SECTS] : 4);
		if (kaslr)
			zp[HDR_LOADFLAGS] |= LOADFLAG_KASLR;
	}
	r = bzimage_zero_page_finish(m, &info, cmdline, initrd_gpa, initrd_size, rsdp, err);
	if (r < 0)
		goto out;
	*out = (struct boot_entry){ .kind = BOOT_ENTRY_LINUX64, .entry = entry,
				    .boot_info = LAYOUT_BOOT_INFO };
out:
	vmlinux_release(&v);
	munmap(map, len);
	return r;
}
