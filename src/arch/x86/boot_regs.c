#include "arch/x86/boot_regs.h"
#include "arch/x86/layout.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CR0_PE    (1ULL << 0)
#define CR0_ET    (1ULL << 4)
#define CR0_PG    (1ULL << 31)
#define CR4_PAE   (1ULL << 5)
#define EFER_LME  (1ULL << 8)
#define EFER_LMA  (1ULL << 10)

#define PTE_P     (1ULL << 0)
#define PTE_RW    (1ULL << 1)
#define PTE_PS    (1ULL << 7)

/* Descriptor flags as in the GDT entry: access byte in bits 0-7 (type, S,
 * DPL, P) and G/DB/L/AVL in bits 12-15. */
#define SEG_CODE32 0xc09b  /* G, D, P, S, execute/read accessed */
#define SEG_CODE64 0xa09b  /* G, L, P, S, execute/read accessed */
#define SEG_DATA   0xc093  /* G, B, P, S, read/write accessed */
#define SEG_TSS    0x008b  /* P, busy 32/64-bit TSS, byte granular */

static uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit)
{
	return ((uint64_t)(base & 0xff000000u) << 32) | ((uint64_t)(base & 0x00ffffffu) << 16) |
	       (limit & 0xffffu) | ((uint64_t)(limit & 0xf0000u) << 32) |
	       ((uint64_t)(flags & 0xf0ffu) << 40);
}

/* The KVM view of the same descriptor, so the cached segment and the GDT
 * in guest RAM can never disagree. */
static struct kvm_segment kvm_seg(uint16_t sel, uint16_t flags, uint32_t base, uint32_t limit)
{
	bool g = flags & 0x8000;
	return (struct kvm_segment){
		.base = base,
		.limit = g ? (limit << 12) | 0xfff : limit,
		.selector = sel,
		.type = flags & 0xf,
		.s = (flags >> 4) & 1,
		.dpl = (flags >> 5) & 3,
		.present = (flags >> 7) & 1,
		.avl = (flags >> 12) & 1,
		.l = (flags >> 13) & 1,
		.db = (flags >> 14) & 1,
		.g = g,
	};
}

static int write_gdt(const struct guest_mem *m, struct terr *err)
{
	uint64_t gdt[BOOT_GDT_ENTRIES] = {
		[BOOT_GDT_CODE32 / 8] = gdt_entry(SEG_CODE32, 0, 0xfffff),
		[BOOT_GDT_CODE64 / 8] = gdt_entry(SEG_CODE64, 0, 0xfffff),
		[BOOT_GDT_DATA / 8]   = gdt_entry(SEG_DATA, 0, 0xfffff),
		[BOOT_GDT_TSS / 8]    = gdt_entry(SEG_TSS, 0, 0x67),
		/* [BOOT_GDT_TSS / 8 + 1]: upper half of a 64-bit TSS descriptor, 0 */
	};
	if (guest_mem_write(m, LAYOUT_BOOT_GDT, gdt, sizeof(gdt)) < 0)
		return terr_set(err, EFAULT, "boot: GDT at 0x%llx is not in guest RAM",
				LAYOUT_BOOT_GDT);
	return 0;
}

/* Identity map of 0 - 4 GiB with 2 MiB pages: one PML4 entry, four PDPT
 * entries, four page directories. */
static int write_page_tables(const struct guest_mem *m, struct terr *err)
{
	uint8_t *pml4 = guest_mem_ptr(m, LAYOUT_PML4, 4096);
	uint8_t *pdpt = guest_mem_ptr(m, LAYOUT_PDPT, 4096);
	uint8_t *pd = guest_mem_ptr(m, LAYOUT_PD, 4 * 4096);

	if (!pml4 || !pdpt || !pd)
		return terr_set(err, EFAULT, "boot: page tables at 0x%llx - 0x%llx are not in "
				"guest RAM", LAYOUT_PML4, LAYOUT_PD + 4 * 4096 - 1);
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	uint64_t e = LAYOUT_PDPT | PTE_P | PTE_RW;
	memcpy(pml4, &e, 8);
	for (uint64_t i = 0; i < 4; i++) {
		e = (LAYOUT_PD + i * 4096) | PTE_P | PTE_RW;
		memcpy(pdpt + i * 8, &e, 8);
	}
	for (uint64_t i = 0; i < 4 * 512; i++) {
		e = (i << 21) | PTE_P | PTE_RW | PTE_PS;
		memcpy(pd + i * 8, &e, 8);
	}
	return 0;
}

int boot_regs_setup(const struct guest_mem *m, const struct boot_entry *e,
		    struct kvm_regs *regs, struct kvm_sregs *sregs, struct terr *err)
{
	bool lm = e->kind == BOOT_ENTRY_LINUX64;
	int r;

	if (e->kind != BOOT_ENTRY_PVH32 && !lm)
		return terr_set(err, EINVAL, "boot: unknown entry kind %d", (int)e->kind);
	if (!lm && (e->entry >> 32 || e->boot_info >> 32))
		return terr_set(err, EINVAL, "boot: PVH entry 0x%llx or start_info 0x%llx is "
				"above 4 GiB", (unsigned long long)e->entry,
				(unsigned long long)e->boot_info);
	if ((r = write_gdt(m, err)) < 0)
		return r;
	if (lm && (r = write_page_tables(m, err)) < 0)
		return r;

	memset(regs, 0, sizeof(*regs));
	regs->rflags = 2;   /* reserved bit 1; IF and VM clear */
	regs->rip = e->entry;
	regs->rsp = LAYOUT_BOOT_STACK;
	if (lm)
		regs->rsi = e->boot_info;
	else
		regs->rbx = e->boot_info;

	struct kvm_segment data = kvm_seg(BOOT_GDT_DATA, SEG_DATA, 0, 0xfffff);
	sregs->cs = lm ? kvm_seg(BOOT_GDT_CODE64, SEG_CODE64, 0, 0xfffff)
		       : kvm_seg(BOOT_GDT_CODE32, SEG_CODE32, 0, 0xfffff);
	sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = data;
	sregs->tr = kvm_seg(BOOT_GDT_TSS, SEG_TSS, 0, 0x67);
	sregs->ldt = (struct kvm_segment){ .type = 2, .unusable = 1 };  /* no LDT */
	sregs->gdt = (struct kvm_dtable){ .base = LAYOUT_BOOT_GDT,
					  .limit = BOOT_GDT_ENTRIES * 8 - 1 };
	/* No IDT yet: an early exception becomes a clean triple fault. */
	sregs->idt = (struct kvm_dtable){ .base = 0, .limit = 0 };
	sregs->cr2 = 0;
	sregs->cr8 = 0;
	if (lm) {
		sregs->cr0 = CR0_PE | CR0_ET | CR0_PG;
		sregs->cr3 = LAYOUT_PML4;
		sregs->cr4 = CR4_PAE;
		sregs->efer = EFER_LME | EFER_LMA;
	} else {
		sregs->cr0 = CR0_PE | CR0_ET;
		sregs->cr3 = 0;
		sregs->cr4 = 0;
		sregs->efer = 0;
	}
	return 0;
}

int boot_cmdline_write(const struct guest_mem *m, const char *cmdline, uint64_t max_len,
		       struct terr *err)
{
	size_t len = strlen(cmdline);

	if (max_len > LAYOUT_CMDLINE_MAX - 1)
		max_len = LAYOUT_CMDLINE_MAX - 1;
	if (len > max_len)
		return terr_set(err, E2BIG, "cmdline: %zu bytes is longer than the %llu the "
				"kernel accepts", len, (unsigned long long)max_len);
	if (guest_mem_write(m, LAYOUT_CMDLINE, cmdline, len + 1) < 0)
		return terr_set(err, EFAULT, "cmdline: 0x%llx is not in guest RAM",
				LAYOUT_CMDLINE);
	return 0;
}

int boot_initrd_load(const struct guest_mem *m, const char *path, uint64_t floor,
		     uint64_t limit, uint64_t *gpa, uint64_t *size, struct terr *err)
{
	struct stat st;
	int r, fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return terr_set(err, errno, "initrd %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		r = terr_set(err, errno, "initrd %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = terr_set(err, EINVAL, "initrd %s: not a regular file", path);
		goto out;
	}
	if (st.st_size == 0) {
		r = terr_set(err, EINVAL, "initrd %s: file is empty", path);
		goto out;
	}
	uint64_t len = (uint64_t)st.st_size;
	uint64_t mib = (len + MIB(1) - 1) >> 20;
	limit &= ~0xfffULL;
	if (len > limit || ((limit - len) & ~0xfffULL) < floor) {
		r = terr_set(err, ENOMEM, "initrd %s (%llu MiB) does not fit below 0x%llx "
			     "(free RAM for it: 0x%llx - 0x%llx)", path,
			     (unsigned long long)mib, (unsigned long long)limit,
			     (unsigned long long)floor, (unsigned long long)limit);
		goto out;
	}
	uint64_t at = (limit - len) & ~0xfffULL;
	uint8_t *dst = guest_mem_ptr(m, at, len);
	if (!dst) {
		r = terr_set(err, EFAULT, "initrd %s (%llu MiB) at 0x%llx is not in guest RAM",
			     path, (unsigned long long)mib, (unsigned long long)at);
		goto out;
	}
	for (uint64_t done = 0; done < len;) {
		ssize_t n = pread(fd, dst + done, len - done, (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = terr_set(err, errno, "initrd %s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0) {
			r = terr_set(err, EIO, "initrd %s: file shrank while being read", path);
			goto out;
		}
		done += (uint64_t)n;
	}
	*gpa = at;
	*size = len;
	r = 0;
out:
	close(fd);
	return r;
}
