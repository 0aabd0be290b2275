#include "arch/x86/elf_pvh.h"
#include "arch/x86/e820.h"
#include "arch/x86/layout.h"

#include <elf.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The file as parsed: offsets and counts read from the ELF header. <elf.h>
 * only supplies constants and field offsets; values are read one by one. */
struct elf_file {
	const uint8_t *p;
	size_t len;
	const char *name;
	bool is64;
	uint64_t phoff, shoff;
	unsigned phnum, phentsize, shnum, shentsize;
};

struct elf_seg {
	uint32_t type;
	uint64_t offset, paddr, filesz, memsz, align;
};

static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return le16toh(v); }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }

/* [off, off+size) inside the file, without overflow */
static bool in_file(const struct elf_file *f, uint64_t off, uint64_t size)
{
	return off <= f->len && size <= f->len - off;
}

#define F64(type, field) offsetof(type, field)

static int parse_header(struct elf_file *f, struct terr *err)
{
	const uint8_t *p = f->p;

	if (f->len < SELFMAG || memcmp(p, ELFMAG, SELFMAG) != 0)
		return terr_set(err, ENOEXEC, "kernel %s: not an ELF file (no ELF magic)", f->name);
	if (f->len < EI_NIDENT)
		return terr_set(err, ENOEXEC, "kernel %s: truncated ELF header (%zu bytes)",
				f->name, f->len);
	if (p[EI_CLASS] != ELFCLASS64 && p[EI_CLASS] != ELFCLASS32)
		return terr_set(err, ENOEXEC, "kernel %s: unsupported ELF class %u", f->name,
				p[EI_CLASS]);
	if (p[EI_DATA] != ELFDATA2LSB)
		return terr_set(err, ENOEXEC, "kernel %s: ELF data encoding %u is not "
				"little-endian", f->name, p[EI_DATA]);
	f->is64 = p[EI_CLASS] == ELFCLASS64;
	size_t ehsize = f->is64 ? sizeof(Elf64_Ehdr) : sizeof(Elf32_Ehdr);
	size_t phsize = f->is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);
	size_t shsize = f->is64 ? sizeof(Elf64_Shdr) : sizeof(Elf32_Shdr);
	if (f->len < ehsize)
		return terr_set(err, ENOEXEC, "kernel %s: truncated ELF header (%zu bytes, "
				"need %zu)", f->name, f->len, ehsize);

	unsigned type, machine;
	if (f->is64) {
		type = rd16(p + F64(Elf64_Ehdr, e_type));
		machine = rd16(p + F64(Elf64_Ehdr, e_machine));
		f->phoff = rd64(p + F64(Elf64_Ehdr, e_phoff));
		f->shoff = rd64(p + F64(Elf64_Ehdr, e_shoff));
		f->phentsize = rd16(p + F64(Elf64_Ehdr, e_phentsize));
		f->phnum = rd16(p + F64(Elf64_Ehdr, e_phnum));
		f->shentsize = rd16(p + F64(Elf64_Ehdr, e_shentsize));
		f->shnum = rd16(p + F64(Elf64_Ehdr, e_shnum));
	} else {
		type = rd16(p + F64(Elf32_Ehdr, e_type));
		machine = rd16(p + F64(Elf32_Ehdr, e_machine));
		f->phoff = rd32(p + F64(Elf32_Ehdr, e_phoff));
		f->shoff = rd32(p + F64(Elf32_Ehdr, e_shoff));
		f->phentsize = rd16(p + F64(Elf32_Ehdr, e_phentsize));
		f->phnum = rd16(p + F64(Elf32_Ehdr, e_phnum));
		f->shentsize = rd16(p + F64(Elf32_Ehdr, e_shentsize));
		f->shnum = rd16(p + F64(Elf32_Ehdr, e_shnum));
	}
	if (type != ET_EXEC && type != ET_DYN)
		return terr_set(err, ENOEXEC, "kernel %s: ELF type %u is not an executable",
				f->name, type);
	if (machine != EM_X86_64 && machine != EM_386)
		return terr_set(err, ENOEXEC, "kernel %s: ELF machine %u is not x86-64 or i386",
				f->name, machine);
	if (f->phnum == 0 || f->phnum == PN_XNUM)
		return terr_set(err, ENOEXEC, "kernel %s: ELF has no usable program headers "
				"(e_phnum %u)", f->name, f->phnum);
	if (f->phentsize < phsize)
		return terr_set(err, ENOEXEC, "kernel %s: program header size %u is smaller "
				"than %zu", f->name, f->phentsize, phsize);
	if (!in_file(f, f->phoff, (uint64_t)f->phnum * f->phentsize))
		return terr_set(err, ENOEXEC, "kernel %s: program headers (%u x %u bytes at "
				"offset 0x%llx) extend beyond the end of the file (%zu bytes)",
				f->name, f->phnum, f->phentsize,
				(unsigned long long)f->phoff, f->len);
	/* Section headers are optional; ignore them when they make no sense. */
	if (f->shentsize < shsize || !in_file(f, f->shoff, (uint64_t)f->shnum * f->shentsize))
		f->shnum = 0;
	return 0;
}

static struct elf_seg get_seg(const struct elf_file *f, unsigned i)
{
	const uint8_t *p = f->p + f->phoff + (uint64_t)i * f->phentsize;

	if (f->is64)
		return (struct elf_seg){
			.type = rd32(p + F64(Elf64_Phdr, p_type)),
			.offset = rd64(p + F64(Elf64_Phdr, p_offset)),
			.paddr = rd64(p + F64(Elf64_Phdr, p_paddr)),
			.filesz = rd64(p + F64(Elf64_Phdr, p_filesz)),
			.memsz = rd64(p + F64(Elf64_Phdr, p_memsz)),
			.align = rd64(p + F64(Elf64_Phdr, p_align)),
		};
	return (struct elf_seg){
		.type = rd32(p + F64(Elf32_Phdr, p_type)),
		.offset = rd32(p + F64(Elf32_Phdr, p_offset)),
		.paddr = rd32(p + F64(Elf32_Phdr, p_paddr)),
		.filesz = rd32(p + F64(Elf32_Phdr, p_filesz)),
		.memsz = rd32(p + F64(Elf32_Phdr, p_memsz)),
		.align = rd32(p + F64(Elf32_Phdr, p_align)),
	};
}

static int check_load(const struct guest_mem *m, const struct elf_file *f, unsigned i,
		      const struct elf_seg *s, struct terr *err)
{
	if (s->filesz > s->memsz)
		return terr_set(err, ENOEXEC, "kernel %s: segment %u has a file size (0x%llx) "
				"larger than its memory size (0x%llx)", f->name, i,
				(unsigned long long)s->filesz, (unsigned long long)s->memsz);
	if (!in_file(f, s->offset, s->filesz))
		return terr_set(err, ENOEXEC, "kernel %s: segment %u data (0x%llx bytes at "
				"offset 0x%llx) extends beyond the end of the file (%zu bytes)",
				f->name, i, (unsigned long long)s->filesz,
				(unsigned long long)s->offset, f->len);
	if (s->paddr + s->memsz < s->paddr)
		return terr_set(err, ENOEXEC, "kernel %s: segment %u at 0x%llx with size "
				"0x%llx wraps around the address space", f->name, i,
				(unsigned long long)s->paddr, (unsigned long long)s->memsz);
	unsigned long long lo = s->paddr, hi = s->paddr + s->memsz - 1;
	if (s->paddr < LAYOUT_HIMEM_START)
		return terr_set(err, ENOEXEC, "kernel %s: segment %u at 0x%llx - 0x%llx "
				"overlaps tern's boot structures below 1 MiB (kernels must "
				"load at or above 0x%llx)", f->name, i, lo, hi,
				LAYOUT_HIMEM_START);
	if (!guest_mem_ptr(m, s->paddr, s->memsz))
		return terr_set(err, ENOEXEC, "kernel %s: segment %u at 0x%llx - 0x%llx lies "
				"outside guest RAM (%llu MiB)", f->name, i, lo, hi,
				(unsigned long long)(m->size >> 20));
	return 0;
}

/* Walk the notes in [off, off+size) of the file; 1 and *entry when the
 * PHYS32_ENTRY note is found, 0 if not, negative on a malformed entry note. */
static int find_note(const struct elf_file *f, uint64_t off, uint64_t size, uint64_t align,
		     uint32_t *entry, struct terr *err)
{
	uint64_t a = align == 8 ? 8 : 4;   /* notes are 4-aligned, 8 in some ELF64 */
	const uint8_t *p;

	if (!in_file(f, off, size))
		return 0;
	p = f->p + off;
	for (uint64_t o = 0; size - o >= 12;) {
		uint64_t namesz = rd32(p + o), descsz = rd32(p + o + 4);
		uint32_t type = rd32(p + o + 8);
		o += 12;
		uint64_t namepad = (namesz + a - 1) & ~(a - 1);
		if (namepad > size - o)
			return 0;
		const uint8_t *name = p + o;
		o += namepad;
		uint64_t descpad = (descsz + a - 1) & ~(a - 1);
		if (descpad > size - o)
			return 0;
		const uint8_t *desc = p + o;
		o += descpad;
		if (type != XEN_ELFNOTE_PHYS32_ENTRY || namesz != 4 || memcmp(name, "Xen", 4))
			continue;
		uint64_t v;
		if (descsz == 4)
			v = rd32(desc);
		else if (descsz == 8)
			v = rd64(desc);
		else
			return terr_set(err, ENOEXEC, "kernel %s: PVH entry note has a %llu-byte "
					"value (expected 4 or 8)", f->name,
					(unsigned long long)descsz);
		if (v >> 32)
			return terr_set(err, ENOEXEC, "kernel %s: PVH entry point 0x%llx is above "
					"4 GiB", f->name, (unsigned long long)v);
		*entry = (uint32_t)v;
		return 1;
	}
	return 0;
}

static int find_entry(const struct elf_file *f, uint32_t *entry, struct terr *err)
{
	int r;

	for (unsigned i = 0; i < f->phnum; i++) {
		struct elf_seg s = get_seg(f, i);
		if (s.type == PT_NOTE && (r = find_note(f, s.offset, s.filesz, s.align, entry, err)))
			return r;
	}
	for (unsigned i = 0; i < f->shnum; i++) {
		const uint8_t *p = f->p + f->shoff + (uint64_t)i * f->shentsize;
		uint32_t type;
		uint64_t off, size, align;
		if (f->is64) {
			type = rd32(p + F64(Elf64_Shdr, sh_type));
			off = rd64(p + F64(Elf64_Shdr, sh_offset));
			size = rd64(p + F64(Elf64_Shdr, sh_size));
			align = rd64(p + F64(Elf64_Shdr, sh_addralign));
		} else {
			type = rd32(p + F64(Elf32_Shdr, sh_type));
			off = rd32(p + F64(Elf32_Shdr, sh_offset));
			size = rd32(p + F64(Elf32_Shdr, sh_size));
			align = rd32(p + F64(Elf32_Shdr, sh_addralign));
		}
		if (type == SHT_NOTE && (r = find_note(f, off, size, align, entry, err)))
			return r;
	}
	return terr_set(err, ENOEXEC, "kernel %s: no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); "
			"tern boots ELF kernels only through PVH: build Linux with "
			"CONFIG_PVH=y, or boot its bzImage", f->name);
}

int elf_pvh_load_buf(const struct guest_mem *m, const void *buf, size_t len,
		     const char *name, struct pvh_image *img, struct terr *err)
{
	struct elf_file f = { .p = buf, .len = len, .name = name };
	uint64_t lo = UINT64_MAX, hi = 0;
	bool entry_ok = false;
	uint32_t entry = 0;
	unsigned nload = 0;
	int r;

	if ((r = parse_header(&f, err)) < 0)
		return r;
	/* Validate everything before touching guest RAM. */
	for (unsigned i = 0; i < f.phnum; i++) {
		struct elf_seg s = get_seg(&f, i);
		if (s.type != PT_LOAD || s.memsz == 0)
			continue;
		if ((r = check_load(m, &f, i, &s, err)) < 0)
			return r;
		nload++;
		if (s.paddr < lo)
			lo = s.paddr;
		if (s.paddr + s.memsz > hi)
			hi = s.paddr + s.memsz;
	}
	if (!nload)
		return terr_set(err, ENOEXEC, "kernel %s: ELF has no loadable segment", name);
	if ((r = find_entry(&f, &entry, err)) < 0)
		return r;
	for (unsigned i = 0; i < f.phnum; i++) {
		struct elf_seg s = get_seg(&f, i);
		if (s.type == PT_LOAD && entry >= s.paddr && entry - s.paddr < s.memsz)
			entry_ok = true;
	}
	if (!entry_ok)
		return terr_set(err, ENOEXEC, "kernel %s: PVH entry point 0x%x is not inside "
				"any loaded segment", name, entry);

	for (unsigned i = 0; i < f.phnum; i++) {
		struct elf_seg s = get_seg(&f, i);
		if (s.type != PT_LOAD || s.memsz == 0)
			continue;
		uint8_t *dst = guest_mem_ptr(m, s.paddr, s.memsz);
		memcpy(dst, f.p + s.offset, s.filesz);
		memset(dst + s.filesz, 0, s.memsz - s.filesz);   /* bss */
	}
	*img = (struct pvh_image){ .entry = entry, .start = lo, .end = hi };
	return 0;
}

int elf_pvh_load_file(const struct guest_mem *m, const char *path,
		      struct pvh_image *img, struct terr *err)
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
	r = elf_pvh_load_buf(m, p, (size_t)st.st_size, path, img, err);
	munmap(p, (size_t)st.st_size);
out:
	close(fd);
	return r;
}

bool elf_pvh_file_is_elf(const char *path)
{
	uint8_t magic[SELFMAG];
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return false;
	ssize_t n = pread(fd, magic, sizeof(magic), 0);
	close(fd);
	return n == SELFMAG && memcmp(magic, ELFMAG, SELFMAG) == 0;
}

static void put32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }

int pvh_start_info_write(const struct guest_mem *m, const char *cmdline,
			 uint64_t initrd_gpa, uint64_t initrd_size, uint64_t rsdp,
			 struct terr *err)
{
	struct e820_entry map[E820_MAX_ENTRIES];
	uint8_t *si = guest_mem_ptr(m, LAYOUT_BOOT_INFO, LAYOUT_BOOT_MEMMAP - LAYOUT_BOOT_INFO);
	uint8_t *mm = guest_mem_ptr(m, LAYOUT_BOOT_MEMMAP,
				    E820_MAX_ENTRIES * HVM_MEMMAP_ENTRY_SIZE);
	int r, n;

	if (!si || !mm)
		return terr_set(err, EFAULT, "boot: hvm_start_info at 0x%llx is not in guest RAM",
				LAYOUT_BOOT_INFO);
	if ((n = e820_build(m, map, E820_MAX_ENTRIES, err)) < 0)
		return n;
	if ((r = boot_cmdline_write(m, cmdline ? cmdline : "", LAYOUT_CMDLINE_MAX - 1, err)) < 0)
		return r;

	memset(si, 0, LAYOUT_BOOT_MEMMAP - LAYOUT_BOOT_INFO);
	memset(mm, 0, E820_MAX_ENTRIES * HVM_MEMMAP_ENTRY_SIZE);
	for (int i = 0; i < n; i++) {
		uint8_t *e = mm + i * HVM_MEMMAP_ENTRY_SIZE;
		put64(e, map[i].addr);
		put64(e + 8, map[i].size);
		put32(e + 16, map[i].type);   /* + 20: reserved, 0 */
	}
	put32(si + 0, HVM_START_MAGIC);
	put32(si + 4, HVM_START_VERSION);
	put32(si + 8, 0);                           /* flags: no SIF_* apply */
	if (initrd_size) {
		uint8_t *mod = si + (PVH_MODLIST_ADDR - LAYOUT_BOOT_INFO);
		put32(si + 12, 1);                  /* nr_modules */
		put64(si + 16, PVH_MODLIST_ADDR);   /* modlist_paddr */
		put64(mod + 0, initrd_gpa);
		put64(mod + 8, initrd_size);        /* + 16 cmdline_paddr, + 24 reserved: 0 */
	}
	put64(si + 24, LAYOUT_CMDLINE);             /* cmdline_paddr */
	put64(si + 32, rsdp);                       /* rsdp_paddr */
	put64(si + 40, LAYOUT_BOOT_MEMMAP);         /* memmap_paddr */
	put32(si + 48, (uint32_t)n);                /* memmap_entries */
	return 0;
}

int pvh_boot_load(const struct guest_mem *m, const char *kernel, const char *initrd,
		  const char *cmdline, uint64_t rsdp, struct boot_entry *out,
		  struct terr *err)
{
	struct pvh_image img;
	uint64_t initrd_gpa = 0, initrd_size = 0;
	int r;

	if ((r = elf_pvh_load_file(m, kernel, &img, err)) < 0)
		return r;
	if (initrd) {
		uint64_t floor = (img.end + 0xfff) & ~0xfffULL;
		r = boot_initrd_load(m, initrd, floor, e820_low_ram_top(m), &initrd_gpa,
				     &initrd_size, err);
		if (r < 0)
			return r;
	}
	if ((r = pvh_start_info_write(m, cmdline, initrd_gpa, initrd_size, rsdp, err)) < 0)
		return r;
	*out = (struct boot_entry){ .kind = BOOT_ENTRY_PVH32, .entry = img.entry,
				    .boot_info = LAYOUT_BOOT_INFO };
	return 0;
}
