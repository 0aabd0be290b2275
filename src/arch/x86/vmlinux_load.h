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

#define VMLINUX_MAX_SEGMENTS 16

struct vmlinux_segment {
	uint64_t off;           /* in the unpacked image */
	uint64_t at;            /* in RAM, from the load address */
	uint64_t filesz, memsz;
};

struct vmlinux {
	const uint8_t *bz;      /* the bzImage */
	const char *name;       /* its path, for messages */
	const uint8_t *payload; /* the compressed kernel inside it */
	size_t payload_len;
	size_t len;             /* its unpacked size */
	uint8_t *head;          /* the unpacked image's first head_len bytes */
	size_t head_len;
	uint64_t pref;          /* LOAD_PHYSICAL_ADDR: where it is linked to run */
	uint64_t size;          /* from pref to the end of the last segment */
	uint64_t entry_off;     /* e_entry - pref */
	int64_t lead;           /* unpacked at the load address - lead (see vmlinux_load) */
	struct vmlinux_segment seg[VMLINUX_MAX_SEGMENTS];   /* the PT_LOAD ones */
	unsigned nseg;
	size_t elf_end;         /* the ELF file's length; relocations follow */
	bool relocs;            /* a well-formed relocation table follows */
};

/* Find the bzImage bz's payload (len bytes, header already checked) and
 * read its vmlinux's layout from the first bytes unpacked; the rest is
 * unpacked by vmlinux_load, in place. -ENOTSUP with err clear when the
 * kernel must unpack itself (an old boot protocol, a codec this build
 * lacks); other errors name what is corrupt. On success vmlinux_release
 * frees it. */
int vmlinux_probe(const uint8_t *bz, size_t len, const char *name, struct vmlinux *v,
		  struct terr *err);

/* Unpack the kernel into guest RAM and place it at a 2 MiB-aligned physical
 * address in [pref, ram_top) and, when relocations allow, a random virtual
 * offset: the choices the decompressor's KASLR makes (nokaslr on the
 * command line keeps the linked addresses). The payload unpacks straight
 * into RAM at phys - lead, where the largest segments are already in
 * place; RAM the unpacking touched outside the segments is cleared.
 * *entry is the physical 64-bit entry point; *kaslr tells whether the
 * kernel's place was randomized. */
int vmlinux_load(const struct guest_mem *m, struct vmlinux *v, uint64_t ram_top,
		 const char *cmdline, uint64_t *entry, bool *kaslr, struct terr *err);

void vmlinux_release(struct vmlinux *v);

#endif
