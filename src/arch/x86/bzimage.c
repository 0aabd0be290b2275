#include "arch/x86/bzimage.h"
#include "arch/x86/e820.h"
#include "arch/x86/kernel_unpack.h"
#include "arch/x86/layout.h"
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

/* ---- host unpacking: enter vmlinux directly ---------------------------- */

#define START_KERNEL_MAP    0xffffffff80000000ULL   /* __START_KERNEL_map */
/* The kernel image must fit in KERNEL_IMAGE_SIZE of virtual space: 1 GiB
 * with RANDOMIZE_BASE, 512 MiB without; tern stays within the smaller. */
#define KERNEL_VIRT_MAX     MIB(512)
#define PMD_SIZE            MIB(2)

#define ELF_PT_LOAD 1
#define ELF_SHT_NOBITS 8

/* The kernel inside the payload: an ELF followed, for kernels built with
 * RANDOMIZE_BASE, by its relocation table (arch/x86/tools/relocs.c: a
 * zero, 64-bit relocations, a zero, inverse 32-bit ones, a zero, 32-bit
 * ones; each the 32-bit virtual address of a place to adjust). */
struct vmlinux {
	const uint8_t *b;
	size_t len;
	uint64_t pref;          /* LOAD_PHYSICAL_ADDR: where it is linked to run */
	uint64_t size;          /* from pref to the end of the last segment */
	uint64_t entry_off;     /* e_entry - pref */
	size_t elf_end;         /* the ELF file's length; relocations follow */
	bool relocs;            /* a well-formed relocation table follows */
};

static uint32_t rd32s(const uint8_t *p) { return rd32(p); }

static void max_end(uint64_t *end, uint64_t off, uint64_t len, size_t limit)
{
	if (off <= limit && len <= limit - off && off + len > *end)
		*end = off + len;
}

static int vmlinux_parse(struct vmlinux *v, const char *name, struct terr *err)
{
	const uint8_t *b = v->b;
	size_t len = v->len;

	if (len < 64 || memcmp(b, "\177ELF", 4) != 0)
		return terr_set(err, ENOEXEC, "kernel %s: the unpacked kernel is not an ELF file",
				name);
	if (b[4] != 2 || b[5] != 1 || rd16(b + 18) != 62 || rd16(b + 16) != 2)
		return terr_set(err, ENOEXEC, "kernel %s: the unpacked kernel is not a 64-bit "
				"x86 executable ELF", name);
	uint64_t phoff = rd64(b + 32), shoff = rd64(b + 40), entry = rd64(b + 24);
	unsigned phentsize = rd16(b + 54), phnum = rd16(b + 56);
	unsigned shentsize = rd16(b + 58), shnum = rd16(b + 60);
	if (phentsize != 56 || phnum == 0 || phoff > len || (uint64_t)phnum * 56 > len - phoff)
		return terr_set(err, ENOEXEC, "kernel %s: the unpacked kernel's program headers "
				"are missing or truncated", name);

	uint64_t end = 0, top = 0;
	bool any = false;
	max_end(&end, phoff, (uint64_t)phnum * 56, len);
	for (unsigned i = 0; i < phnum; i++) {
		const uint8_t *ph = b + phoff + (uint64_t)i * 56;
		uint64_t off = rd64(ph + 8), paddr = rd64(ph + 24);
		uint64_t filesz = rd64(ph + 32), memsz = rd64(ph + 40);
		max_end(&end, off, filesz, len);
		if (rd32s(ph) != ELF_PT_LOAD)
			continue;
		if (off > len || filesz > len - off || filesz > memsz || paddr < v->pref ||
		    paddr - v->pref > KERNEL_UNPACK_MAX || memsz > KERNEL_UNPACK_MAX)
			return terr_set(err, ENOEXEC, "kernel %s: the unpacked kernel's segment %u "
					"(file 0x%llx + 0x%llx, memory 0x%llx + 0x%llx) is outside "
					"the file or below its load address 0x%llx", name, i,
					(unsigned long long)off, (unsigned long long)filesz,
					(unsigned long long)paddr, (unsigned long long)memsz,
					(unsigned long long)v->pref);
		if (paddr - v->pref + memsz > top)
			top = paddr - v->pref + memsz;
		any = true;
	}
	if (!any)
		return terr_set(err, ENOEXEC, "kernel %s: the unpacked kernel has no loadable "
				"segment", name);
	if (entry < v->pref || entry - v->pref >= top)
		return terr_set(err, ENOEXEC, "kernel %s: the unpacked kernel's entry point 0x%llx "
				"is outside its image", name, (unsigned long long)entry);
	if (shentsize == 64 && shoff <= len && (uint64_t)shnum * 64 <= len - shoff) {
		max_end(&end, shoff, (uint64_t)shnum * 64, len);
		for (unsigned i = 0; i < shnum; i++) {
			const uint8_t *sh = b + shoff + (uint64_t)i * 64;
			if (rd32s(sh + 4) != ELF_SHT_NOBITS)
				max_end(&end, rd64(sh + 24), rd64(sh + 32), len);
		}
	}
	v->size = top;
	v->entry_off = entry - v->pref;
	v->elf_end = (size_t)end;

	/* The relocation table, if what follows the ELF is exactly one. */
	v->relocs = false;
	size_t tail = len - v->elf_end;
	if (tail >= 12 && tail % 4 == 0 && rd32(b + v->elf_end) == 0) {
		size_t i = tail / 4, zeros = 0;
		while (i-- > 0 && zeros < 3)
			if (rd32(b + v->elf_end + i * 4) == 0)
				zeros++;
		v->relocs = zeros == 3 && i == (size_t)-1;
	}
	return 0;
}

static uint64_t random_below(uint64_t n)
{
	uint64_t r = 0;
	if (n <= 1)
		return 0;
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r)) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		r = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
	}
	return r % n;
}

/* What the kernel's decompressor does after unpacking (misc.c:
 * handle_relocations): the image was linked to run at virtual
 * START_KERNEL_MAP + pref and now runs at START_KERNEL_MAP + virt. */
static int apply_relocs(uint8_t *img, const struct vmlinux *v, uint64_t virt, const char *name,
			struct terr *err)
{
	int64_t delta = (int64_t)(virt - v->pref);
	const uint8_t *r = v->b + v->len;   /* read backwards */
	for (int kind = 0; kind < 3; kind++) {   /* 32-bit, inverse 32-bit, 64-bit */
		for (r -= 4; rd32(r) != 0; r -= 4) {
			uint64_t va = (uint64_t)(int64_t)(int32_t)rd32(r);
			uint64_t at = va - START_KERNEL_MAP - v->pref;   /* offset in the image */
			unsigned width = kind == 2 ? 8 : 4;
			if (va < START_KERNEL_MAP + v->pref || at > v->size - width)
				return terr_set(err, ENOEXEC, "kernel %s: relocation at 0x%llx is "
						"outside the kernel image", name,
						(unsigned long long)va);
			if (kind == 2)
				wr64(img + at, rd64(img + at) + (uint64_t)delta);
			else if (kind == 1)
				wr32(img + at, rd32(img + at) - (uint32_t)delta);
			else
				wr32(img + at, rd32(img + at) + (uint32_t)delta);
		}
	}
	return 0;
}

static bool cmdline_has_word(const char *cmdline, const char *word)
{
	size_t n = strlen(word);
	for (const char *p = cmdline; p && (p = strstr(p, word)); p += n)
		if ((p == cmdline || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
			return true;
	return false;
}

/* The unpacked kernel goes to a 2 MiB-aligned physical address in
 * [pref, below the initrd) and, when relocations allow, a random virtual
 * offset: the same choices the decompressor's KASLR makes (nokaslr on the
 * command line keeps the linked addresses). */
static int load_vmlinux(const struct guest_mem *m, const uint8_t *file, const struct vmlinux *v,
			uint64_t ram_top, const char *cmdline, const char *name,
			uint64_t *entry, bool *kaslr, struct terr *err)
{
	uint64_t align = rd32(file + HDR_KERNEL_ALIGN);
	if (align < PMD_SIZE || (align & (align - 1)))
		align = PMD_SIZE;
	uint64_t size = (v->size + PMD_SIZE - 1) & ~(PMD_SIZE - 1);
	if (v->pref & (PMD_SIZE - 1))
		return terr_set(err, ENOEXEC, "kernel %s: load address 0x%llx is not 2 MiB aligned",
				name, (unsigned long long)v->pref);
	if (ram_top < v->pref || ram_top - v->pref < size)
		return terr_set(err, ENOMEM, "kernel %s: needs 0x%llx - 0x%llx (%llu MiB) but free "
				"low guest RAM ends at 0x%llx", name, (unsigned long long)v->pref,
				(unsigned long long)(v->pref + size - 1),
				(unsigned long long)(size >> 20), (unsigned long long)ram_top);

	bool relocatable = file[HDR_RELOCATABLE] != 0;
	*kaslr = relocatable && v->relocs && !cmdline_has_word(cmdline, "nokaslr");
	uint64_t phys = v->pref, virt = v->pref;
	if (*kaslr) {
		phys += random_below((ram_top - v->pref - size) / align + 1) * align;
		if (KERNEL_VIRT_MAX >= v->pref + size)
			virt += random_below((KERNEL_VIRT_MAX - v->pref - size) / align + 1) * align;
	}
	uint8_t *img = guest_mem_ptr(m, phys, size);
	if (!img)
		return terr_set(err, EFAULT, "kernel %s: 0x%llx + 0x%llx is not in guest RAM", name,
				(unsigned long long)phys, (unsigned long long)size);

	const uint8_t *b = v->b;
	uint64_t phoff = rd64(b + 32);
	unsigned phnum = rd16(b + 56);
	for (unsigned i = 0; i < phnum; i++) {
		const uint8_t *ph = b + phoff + (uint64_t)i * 56;
		if (rd32(ph) != ELF_PT_LOAD)
			continue;
		uint64_t off = rd64(ph + 8), at = rd64(ph + 24) - v->pref;
		uint64_t filesz = rd64(ph + 32), memsz = rd64(ph + 40);
		memcpy(img + at, b + off, filesz);
		memset(img + at + filesz, 0, memsz - filesz);
	}
	if (virt != v->pref) {
		int r = apply_relocs(img, v, virt, name, err);
		if (r < 0)
			return r;
	}
	*entry = phys + v->entry_off;
	log_debug("boot", "kernel %s: unpacked on the host, physical 0x%llx, virtual offset "
		  "0x%llx, entry 0x%llx", name, (unsigned long long)phys,
		  (unsigned long long)virt, (unsigned long long)*entry);
	return 0;
}

/* Unpack the payload on the host: 0 and the blob, -ENOTSUP (err clear) when
 * the kernel must unpack itself, other errors for a corrupt kernel. */
static int host_unpack(const uint8_t *p, size_t len, const char *name, uint8_t **blob,
		       size_t *blob_len, struct terr *err)
{
	unsigned sects = p[HDR_SETUP_SECTS] ? p[HDR_SETUP_SECTS] : 4;
	uint64_t setup = (uint64_t)(sects + 1) * 512;
	uint64_t poff = rd32(p + HDR_PAYLOAD_OFFSET), plen = rd32(p + HDR_PAYLOAD_LENGTH);
	if (rd16(p + HDR_VERSION) < 0x0208 || plen == 0 || setup > len)
		return -ENOTSUP;   /* the guest path reports what is wrong */
	if (poff > len - setup || plen > len - setup - poff)
		return terr_set(err, ENOEXEC, "kernel %s: truncated: the compressed kernel "
				"(0x%llx + 0x%llx after the setup code) is beyond the end of the "
				"file", name, (unsigned long long)poff, (unsigned long long)plen);
	const uint8_t *payload = p + setup + poff;
	enum kernel_codec c = kernel_codec_of(payload, plen);
	if (!kernel_codec_supported(c)) {
		log_info("boot", "kernel %s: %s-compressed; the guest unpacks it", name,
			 kernel_codec_name(c));
		return -ENOTSUP;
	}
	return kernel_payload_unpack(payload, plen, name, blob, blob_len, err);
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
	uint8_t *blob = NULL;
	size_t blob_len = 0, len = 0;
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
		r = host_unpack(p, len, kernel, &blob, &blob_len, err);
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
		struct vmlinux v = { .b = blob, .len = blob_len, .pref = rd64(p + HDR_PREF_ADDRESS) };
		if ((r = vmlinux_parse(&v, kernel, err)) < 0)
			goto out;
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
		r = load_vmlinux(m, p, &v, top, cmdline, kernel, &entry, &kaslr, err);
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
	free(blob);
	munmap(map, len);
	return r;
}
