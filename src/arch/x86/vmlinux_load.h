/* A bzImage's kernel unpacked on the host and placed in guest RAM as the
 * kernel's own decompressor would place it (bzimage.c uses it; the codecs
 * are kernel_unpack.c's).
 *
 * The payload is vmlinux (an ELF) followed, for kernels built with
 * RANDOMIZE_BASE, by its relocation table (arch/x86/tools/relocs.c: a
 * zero, 64-bit relocations, a zero, inverse 32-bit ones, a zero, 32-bit
 * ones; each the 32-bit virtual address of a place to adjust). */
#ifndef TERN_ARCH_X86_VMLINUX_LOAD_H
#define TERN_ARCH_X86_VMLINUX_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/memory.h"
#include "util/error.h"

/* a huge page: the unit of the kernel's physical alignment */
#define PMD_SIZE (2ULL << 20)

struct vmlinux {
	const uint8_t *bz;      /* the bzImage */
	const char *name;       /* its path, for messages */
	const uint8_t *b;       /* the unpacked payload */
	size_t len;
	uint64_t pref;          /* LOAD_PHYSICAL_ADDR: where it is linked to run */
	uint64_t size;          /* from pref to the end of the last segment */
	uint64_t entry_off;     /* e_entry - pref */
	size_t elf_end;         /* the ELF file's length; relocations follow */
	bool relocs;            /* a well-formed relocation table follows */
};

/* Unpack the bzImage bz (len bytes, header already checked) and read its
 * vmlinux's layout. -ENOTSUP with err clear when the kernel must unpack
 * itself (an old boot protocol, a codec this build lacks); other errors
 * name what is corrupt. On success vmlinux_release frees it. */
int vmlinux_probe(const uint8_t *bz, size_t len, const char *name, struct vmlinux *v,
		  struct terr *err);

/* Place the kernel at a 2 MiB-aligned physical address in [pref, ram_top)
 * and, when relocations allow, a random virtual offset: the choices the
 * decompressor's KASLR makes (nokaslr on the command line keeps the linked
 * addresses). *entry is the physical 64-bit entry point; *kaslr tells
 * whether the kernel was moved. */
int vmlinux_load(const struct guest_mem *m, const struct vmlinux *v, uint64_t ram_top,
		 const char *cmdline, uint64_t *entry, bool *kaslr, struct terr *err);

void vmlinux_release(struct vmlinux *v);

#endif
