/* A tiny ELF writer for the PVH loader tests and the fuzz corpus: one or two
 * PT_LOAD segments and the Xen PHYS32_ENTRY note, in ELF64 or ELF32. */
#ifndef TERN_TESTS_X86_ELF_WRITER_H
#define TERN_TESTS_X86_ELF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct elf_spec {
	bool is32;
	uint16_t machine;         /* 0: EM_X86_64 / EM_386 by class */
	unsigned nload;           /* 1 or 2 (0 means 1) */
	uint64_t paddr[2];        /* load addresses */
	uint64_t filesz[2], memsz[2];
	enum { NOTE_PHDR, NOTE_SECTION, NOTE_NONE } note;
	uint32_t entry;           /* value in the note */
	unsigned descsz;          /* 0: 8 for ELF64, 4 for ELF32 */
};

/* Write the file into buf (cap bytes); returns its length. Segment i's data
 * is the byte pattern (i + 1) * 0x11 repeated. */
size_t elf_write(const struct elf_spec *s, uint8_t *buf, size_t cap);

/* Offsets of the parts a test may corrupt. */
#define ELFW_DATA_OFF 0x1000    /* segment 0 data; segment 1 follows it */

#endif
