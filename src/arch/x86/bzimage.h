/* Linux x86 boot protocol, 64-bit entry (Documentation/arch/x86/boot.rst):
 * validate a bzImage's setup header, copy its protected-mode kernel into
 * guest RAM, and build the zero page (struct boot_params) at
 * LAYOUT_BOOT_INFO with the command line, e820 map, initrd and RSDP.
 * The vCPU enters at load address + 0x200 in long mode with RSI = zero page. */
#ifndef TERN_ARCH_X86_BZIMAGE_H
#define TERN_ARCH_X86_BZIMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arch/x86/boot_regs.h"
#include "core/memory.h"
#include "util/error.h"

/* 2.12 added xloadflags, the only way to know the kernel has a 64-bit entry
 * (XLF_KERNEL_64); everything else tern uses (pref_address, init_size,
 * cmdline_size, relocatable_kernel) is older. */
#define BZIMAGE_MIN_VERSION 0x020c

/* Zero page offsets tern writes (arch/x86/include/uapi/asm/bootparam.h). */
#define BP_ACPI_RSDP_ADDR   0x070   /* u64 */
#define BP_E820_ENTRIES     0x1e8   /* u8 */
#define BP_SENTINEL         0x1ef   /* u8, must stay 0 */
#define BP_HDR              0x1f1   /* setup header, copied from the file */
#define BP_HDR_END          0x290   /* the header may not grow beyond this */
#define BP_E820_TABLE       0x2d0   /* 128 x { u64 addr, u64 size, u32 type } */

/* Setup header fields (same offset in the file and in the zero page). */
#define HDR_SETUP_SECTS     0x1f1   /* u8, 0 means 4 */
#define HDR_SYSSIZE         0x1f4   /* u32, 16-byte paragraphs */
#define HDR_VID_MODE        0x1fa   /* u16 */
#define HDR_BOOT_FLAG       0x1fe   /* u16, 0xaa55 */
#define HDR_JUMP            0x200   /* u16; byte 0x201 gives the header's end */
#define HDR_HEADER          0x202   /* u32, "HdrS" */
#define HDR_VERSION         0x206   /* u16 */
#define HDR_TYPE_OF_LOADER  0x210   /* u8 */
#define HDR_LOADFLAGS       0x211   /* u8 */
#define HDR_RAMDISK_IMAGE   0x218   /* u32 */
#define HDR_RAMDISK_SIZE    0x21c   /* u32 */
#define HDR_CMD_LINE_PTR    0x228   /* u32 */
#define HDR_INITRD_ADDR_MAX 0x22c   /* u32 */
#define HDR_KERNEL_ALIGN    0x230   /* u32 */
#define HDR_RELOCATABLE     0x234   /* u8 */
#define HDR_XLOADFLAGS      0x236   /* u16 */
#define HDR_CMDLINE_SIZE    0x238   /* u32 */
#define HDR_PAYLOAD_OFFSET  0x248   /* u32, from the end of the setup code */
#define HDR_PAYLOAD_LENGTH  0x24c   /* u32 */
#define HDR_PREF_ADDRESS    0x258   /* u64 */
#define HDR_INIT_SIZE       0x260   /* u32 */
#define HDR_MIN_FILE        0x264   /* a file must hold the header up to here */

#define LOADFLAG_LOADED_HIGH 0x01
#define LOADFLAG_KASLR       0x02   /* set by whoever randomized the kernel */
#define XLF_KERNEL_64        0x01

/* What the header said, and where the kernel went. */
struct bzimage_info {
	uint16_t version;          /* boot protocol, 0x020f = 2.15 */
	uint64_t load_addr;        /* protected-mode kernel copied here */
	uint64_t kernel_end;       /* load_addr + max(init_size, image): RAM it needs */
	uint64_t initrd_addr_max;  /* highest byte an initrd may occupy */
	uint32_t cmdline_size;     /* longest command line, NUL excluded */
};

/* Validate the bzImage in buf, copy its kernel to RAM (at pref_address; at
 * 1 MiB for a relocatable kernel whose pref_address is lower) and write a
 * fresh zero page at LAYOUT_BOOT_INFO holding the file's setup header with
 * type_of_loader 0xff and vid_mode 0xffff. `name` labels messages
 * ("kernel NAME: ..."). Nothing is written unless the header is valid and
 * the kernel fits. */
int bzimage_load_buf(const struct guest_mem *m, const void *buf, size_t len,
		     const char *name, struct bzimage_info *info, struct terr *err);

/* Same for the file at path (mapped read-only). */
int bzimage_load_file(const struct guest_mem *m, const char *path,
		      struct bzimage_info *info, struct terr *err);

/* Complete the zero page: cmdline at LAYOUT_CMDLINE (at most cmdline_size
 * bytes), e820 map, initrd (0/0 for none), acpi_rsdp_addr (0 for none). */
int bzimage_zero_page_finish(const struct guest_mem *m, const struct bzimage_info *info,
			     const char *cmdline, uint64_t initrd_gpa, uint64_t initrd_size,
			     uint64_t rsdp, struct terr *err);

struct bzimage_opts {
	/* Unpack a gzip, xz, zstd or lz4 kernel on the host (kernel_unpack.h)
	 * and enter vmlinux's 64-bit entry point with RSI = zero page, as the
	 * kernel's decompressor would, placing it as the decompressor's KASLR
	 * would (random 2 MiB-aligned physical address and virtual offset,
	 * relocations applied, KASLR_FLAG set; nokaslr on the command line
	 * keeps the linked addresses). Otherwise, and for other codecs, the
	 * compressed kernel is entered at load address + 0x200. */
	bool host_unpack;
};

/* The whole Linux boot: load the kernel and the initrd (if not NULL; as high
 * as possible below min(initrd_addr_max, top of low RAM), above the kernel
 * or, unpacked on the host, with the kernel below it), finish the zero page
 * and describe the 64-bit entry for boot_regs_setup(). opts NULL: host
 * unpacking on. */
int bzimage_boot_load(const struct guest_mem *m, const char *kernel, const char *initrd,
		      const char *cmdline, uint64_t rsdp, const struct bzimage_opts *opts,
		      struct boot_entry *out, struct terr *err);

#endif
