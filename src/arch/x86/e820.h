/* The guest's e820 memory map, derived from the RAM layout of a guest_mem and
 * the fixed holes of layout.h. One table serves the PVH memmap and the Linux
 * zero page, so both boot paths describe memory identically. */
#ifndef TERN_ARCH_X86_E820_H
#define TERN_ARCH_X86_E820_H

#include <stdint.h>

#include "core/memory.h"
#include "util/error.h"

#define E820_RAM       1
#define E820_RESERVED  2
#define E820_ACPI      3

/* The zero page holds at most 128 entries; the PVH memmap area as many. */
#define E820_MAX_ENTRIES 128

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;     /* E820_RAM, E820_RESERVED, ... */
};

/* Fill tab[0..max) with the memory map of m, sorted by address:
 *   RAM       0          - 0x9fbff
 *   reserved  0x9fc00    - 0xfffff   (EBDA, VGA, BIOS area, ACPI tables)
 *   RAM       1 MiB      - top of low RAM (at most 3 GiB)
 *   reserved  ECAM       (0xe0000000, 256 MiB, so Linux trusts MCFG)
 *   reserved  KVM TSS and identity-map pages (0xfeffb000 - 0xfeffefff)
 *   RAM       4 GiB      - 4 GiB + high RAM, when there is any
 * The 32-bit MMIO window, IOAPIC and LAPIC are simply not RAM.
 * Only m's regions are read (m need not be mapped). Returns the number of
 * entries, or -EINVAL when RAM is below 1 MiB or does not fit in max. */
int e820_build(const struct guest_mem *m, struct e820_entry *tab, unsigned max,
	       struct terr *err);

/* Top of the RAM region that starts at 0 (exclusive): where the low, 32-bit
 * addressable RAM ends. 0 if m has no such region. */
uint64_t e820_low_ram_top(const struct guest_mem *m);

#endif
