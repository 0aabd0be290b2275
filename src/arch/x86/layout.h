/* Guest physical memory map of an x86 tern VM.
 *
 *   0x00000000 - 0x00000fff  real-mode IVT/BDA (reserved)
 *   0x00001000 - 0x0000ffff  boot structures: GDT, page tables, zero page /
 *                            hvm_start_info, memmap, boot stack
 *   0x00020000 - 0x0002ffff  kernel command line
 *   0x00090000 - 0x0009efff  free for the guest (AP trampolines)
 *   0x0009fc00 - 0x000fffff  EBDA, VGA hole, BIOS area: reserved in e820;
 *                            ACPI tables live at 0xe0000 - 0xfffff
 *   0x00100000 - RAM top     RAM (kernel loaded at 1 MiB)
 *   0xc0000000 - 0xffffffff  PCI hole when RAM > 3 GiB: 32-bit MMIO window,
 *                            ECAM, IOAPIC, LAPIC
 *   0x100000000 -            high RAM (what did not fit below the hole)
 *   above high RAM           64-bit MMIO window (1 GiB aligned)
 */
#ifndef TERN_ARCH_X86_LAYOUT_H
#define TERN_ARCH_X86_LAYOUT_H

#define GIB(x) ((unsigned long long)(x) << 30)
#define MIB(x) ((unsigned long long)(x) << 20)

#define LAYOUT_BOOT_GDT        0x1000ULL
#define LAYOUT_BOOT_IDT        0x1100ULL
#define LAYOUT_BOOT_INFO       0x7000ULL   /* zero page or hvm_start_info */
#define LAYOUT_BOOT_MEMMAP     0x7800ULL   /* PVH memmap entries (up to 128) */
#define LAYOUT_BOOT_STACK      0x8ff0ULL
#define LAYOUT_PML4            0x9000ULL   /* identity page tables for 64-bit boot */
#define LAYOUT_PDPT            0xa000ULL
#define LAYOUT_PD              0xb000ULL   /* 4 pages: 0xb000 - 0xefff, maps 4 GiB */
#define LAYOUT_CMDLINE         0x20000ULL
#define LAYOUT_CMDLINE_MAX     0x10000ULL
#define LAYOUT_GUEST_FREE      0x90000ULL  /* 0x90000 - 0x9efff free for the guest */
#define LAYOUT_EBDA            0x9fc00ULL
#define LAYOUT_ACPI_START      0xe0000ULL
#define LAYOUT_ACPI_END        0x100000ULL
#define LAYOUT_HIMEM_START     0x100000ULL /* first byte a kernel image may use */

#define LAYOUT_LOWMEM_MAX      GIB(3)      /* RAM below the PCI hole */
#define LAYOUT_PCI_HOLE_START  0xc0000000ULL
#define LAYOUT_MMIO32_START    0xc0000000ULL
#define LAYOUT_MMIO32_SIZE     MIB(512)    /* 0xc0000000 - 0xdfffffff */
#define LAYOUT_ECAM_START      0xe0000000ULL
#define LAYOUT_ECAM_SIZE       MIB(256)    /* buses 0-255 */
#define LAYOUT_IOAPIC          0xfec00000ULL
#define LAYOUT_LAPIC           0xfee00000ULL
#define LAYOUT_HIGHMEM_START   GIB(4)
#define LAYOUT_MMIO64_SIZE     GIB(64)

/* KVM needs three pages for the VMX TSS and one for the identity map,
 * placed in the hole where no RAM is. */
#define LAYOUT_KVM_TSS         0xfeffc000ULL
#define LAYOUT_KVM_IDENT_MAP   0xfeffb000ULL

#endif
