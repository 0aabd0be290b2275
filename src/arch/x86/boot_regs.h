/* Initial vCPU state for the two ways tern enters a kernel, plus the small
 * pieces of guest-RAM boot data both loaders share (command line, initrd).
 *
 * Everything here is a pure function over guest RAM and KVM register
 * structures: the vCPU code calls KVM_SET_REGS / KVM_SET_SREGS with the
 * result. CPUID and MSRs are set up elsewhere. */
#ifndef TERN_ARCH_X86_BOOT_REGS_H
#define TERN_ARCH_X86_BOOT_REGS_H

#include <stdint.h>
#include <linux/kvm.h>

#include "core/memory.h"
#include "util/error.h"

enum boot_entry_kind {
	BOOT_ENTRY_PVH32,    /* PVH: 32-bit protected mode, paging off, EBX = start_info */
	BOOT_ENTRY_LINUX64,  /* Linux boot protocol: long mode, RSI = zero page */
};

/* What a loader hands to boot_regs_setup(). */
struct boot_entry {
	enum boot_entry_kind kind;
	uint64_t entry;      /* guest-physical entry point (RIP) */
	uint64_t boot_info;  /* hvm_start_info (EBX) or zero page (RSI) */
};

/* GDT written at LAYOUT_BOOT_GDT; selectors follow Linux's boot protocol
 * (__BOOT_CS = 0x10, __BOOT_DS = 0x18). */
#define BOOT_GDT_CODE32  0x08   /* flat 32-bit code, PVH entry */
#define BOOT_GDT_CODE64  0x10   /* 64-bit code, Linux 64-bit entry */
#define BOOT_GDT_DATA    0x18   /* flat 32-bit read/write data */
#define BOOT_GDT_TSS     0x20   /* TSS, base 0, limit 0x67 (16-byte slot) */
#define BOOT_GDT_ENTRIES 6

/* Write the GDT (and, for BOOT_ENTRY_LINUX64, identity page tables mapping
 * the first 4 GiB with 2 MiB pages at LAYOUT_PML4..) into guest RAM, and set
 * the registers e->kind requires. regs is overwritten entirely. sregs is
 * updated in place: pass what KVM_GET_SREGS returned, so fields tern does not
 * own here (APIC base, pending interrupts) survive. -EFAULT with a message if
 * the boot structures' pages are not RAM. */
int boot_regs_setup(const struct guest_mem *m, const struct boot_entry *e,
		    struct kvm_regs *regs, struct kvm_sregs *sregs, struct terr *err);

/* Copy cmdline (NUL included) to LAYOUT_CMDLINE. max_len is the longest
 * string the kernel accepts, without the NUL (also capped by
 * LAYOUT_CMDLINE_MAX - 1). Error names the length and the limit. */
int boot_cmdline_write(const struct guest_mem *m, const char *cmdline, uint64_t max_len,
		       struct terr *err);

/* Load the file at path into RAM as high as possible, page-aligned, so that
 * it ends at or below `limit` (exclusive) and starts at or above `floor`.
 * On success *gpa and *size describe it. Errors: missing or unreadable file,
 * not a regular file, empty, short read, and
 * "initrd X (N MiB) does not fit below 0x...". */
int boot_initrd_load(const struct guest_mem *m, const char *path, uint64_t floor,
		     uint64_t limit, uint64_t *gpa, uint64_t *size, struct terr *err);

#endif
