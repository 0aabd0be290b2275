#include "arch/x86/vmlinux_load.h"
#include "arch/x86/bzimage.h"
#include "arch/x86/kernel_unpack.h"
#include "arch/x86/layout.h"
#include "util/log.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return le16toh(v); }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }
static void wr32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static void wr64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }

#define START_KERNEL_MAP    0xffffffff80000000ULL   /* __START_KERNEL_map */
/* The kernel image must fit in KERNEL_IMAGE_SIZE of virtual space: 1 GiB
 * with RANDOMIZE_BASE, 512 MiB without; tern stays within the smaller. */
#define KERNEL_VIRT_MAX     MIB(512)

#define ELF_PT_LOAD 1
#define ELF_SHT_NOBITS 8

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
int vmlinux_load(const struct guest_mem *m, const struct vmlinux *v, uint64_t ram_top,
		 const char *cmdline, uint64_t *entry, bool *kaslr, struct terr *err)
{
	const uint8_t *file = v->bz;
	const char *name = v->name;
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

int vmlinux_probe(const uint8_t *bz, size_t len, const char *name, struct vmlinux *v,
		  struct terr *err)
{
	uint8_t *blob = NULL;
	size_t blob_len = 0;
	memset(v, 0, sizeof(*v));
	int r = host_unpack(bz, len, name, &blob, &blob_len, err);
	if (r < 0)
		return r;
	*v = (struct vmlinux){ .bz = bz, .name = name, .b = blob, .len = blob_len,
			       .pref = rd64(bz + HDR_PREF_ADDRESS) };
	r = vmlinux_parse(v, name, err);
	if (r < 0)
		vmlinux_release(v);
	return r;
}

void vmlinux_release(struct vmlinux *v)
{
	free((void *)v->b);
	v->b = NULL;
}
