/* PVH boot: load an ELF kernel (ELF64 or ELF32, x86) carrying the Xen
 * XEN_ELFNOTE_PHYS32_ENTRY note, and build the hvm_start_info the PVH ABI
 * hands to that entry point in EBX. The file is never trusted: every header,
 * segment and note is bounds-checked before use, and nothing is written to
 * guest RAM until every segment has been validated. */
#ifndef TERN_ARCH_X86_ELF_PVH_H
#define TERN_ARCH_X86_ELF_PVH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arch/x86/boot_regs.h"
#include "arch/x86/layout.h"
#include "core/memory.h"
#include "util/error.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18

/* hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h), version 1 */
#define HVM_START_MAGIC       0x336ec578u
#define HVM_START_VERSION     1
#define HVM_START_INFO_SIZE   56
#define HVM_MODLIST_ENTRY_SIZE 32
#define HVM_MEMMAP_ENTRY_SIZE 24
#define PVH_MODLIST_ADDR      (LAYOUT_BOOT_INFO + 0x100)

/* What the ELF loader found. */
struct pvh_image {
	uint32_t entry;       /* PHYS32_ENTRY: 32-bit guest-physical entry */
	uint64_t start;       /* lowest byte of any PT_LOAD segment */
	uint64_t end;         /* one past the highest byte (memsz) */
};

/* Parse and load an ELF image held in buf (len bytes) into m. `name` only
 * labels messages ("kernel NAME: ..."). Checks: magic, class, little endian,
 * ET_EXEC/ET_DYN, machine x86-64 or i386, headers and program headers inside
 * the buffer, PT_LOAD with filesz <= memsz, no overflow, each segment at or
 * above LAYOUT_HIMEM_START and entirely in RAM; the bss part is zeroed. The
 * PHYS32_ENTRY note is searched in PT_NOTE segments, then SHT_NOTE sections,
 * and must point into a loaded segment. */
int elf_pvh_load_buf(const struct guest_mem *m, const void *buf, size_t len,
		     const char *name, struct pvh_image *img, struct terr *err);

/* Same, reading the file at path (mapped read-only). Errors for a missing,
 * unreadable, non-regular or empty file name the path. */
int elf_pvh_load_file(const struct guest_mem *m, const char *path,
		      struct pvh_image *img, struct terr *err);

/* True if the file at path starts with the ELF magic (false on any error;
 * the loaders report those). Lets the caller choose PVH or bzImage. */
bool elf_pvh_file_is_elf(const char *path);

/* Build hvm_start_info at LAYOUT_BOOT_INFO: version 1, flags 0, the command
 * line at LAYOUT_CMDLINE, the e820 map at LAYOUT_BOOT_MEMMAP, one module for
 * the initrd when initrd_size != 0 (its list at PVH_MODLIST_ADDR), and
 * rsdp_paddr (0 if none). */
int pvh_start_info_write(const struct guest_mem *m, const char *cmdline,
			 uint64_t initrd_gpa, uint64_t initrd_size, uint64_t rsdp,
			 struct terr *err);

/* The whole PVH boot: load kernel, then initrd (if not NULL; placed as high
 * as possible in low RAM above the kernel), write cmdline and start_info,
 * and describe the entry for boot_regs_setup(). */
int pvh_boot_load(const struct guest_mem *m, const char *kernel, const char *initrd,
		  const char *cmdline, uint64_t rsdp, struct boot_entry *out,
		  struct terr *err);

#endif
