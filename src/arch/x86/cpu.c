#include "arch/x86/cpu.h"
#include "core/kvm.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define MSR_IA32_TSC            0x10
#define MSR_IA32_SYSENTER_CS    0x174
#define MSR_IA32_SYSENTER_ESP   0x175
#define MSR_IA32_SYSENTER_EIP   0x176
#define MSR_IA32_MISC_ENABLE    0x1a0
#define MSR_MTRR_DEF_TYPE       0x2ff
#define MSR_STAR                0xc0000081
#define MSR_LSTAR               0xc0000082
#define MSR_CSTAR               0xc0000083
#define MSR_SYSCALL_MASK        0xc0000084
#define MSR_KERNEL_GS_BASE      0xc0000102

#define MISC_ENABLE_FAST_STRING 1ULL
#define MTRR_ENABLE_WB          ((1ULL << 11) | 6)   /* MTRRs on, default write-back */

#define APIC_LVT0  0x350
#define APIC_LVT1  0x360
#define APIC_MODE_EXTINT 0x7
#define APIC_MODE_NMI    0x4

#define CPUID_1_ECX_TSC_DEADLINE (1u << 24)

/* Features the in-kernel irqchip emulates but KVM_GET_SUPPORTED_CPUID does
 * not list (QEMU adds them the same way): the LAPIC's TSC-deadline mode,
 * which spares Linux calibrating the LAPIC timer against the PM timer. */
static void add_emulated_features(struct kvm_sys *kvm, struct kvm_cpuid2 *c)
{
	bool deadline = ioctl(kvm->fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
	for (unsigned i = 0; i < c->nent; i++)
		if (c->entries[i].function == 1 && deadline)
			c->entries[i].ecx |= CPUID_1_ECX_TSC_DEADLINE;
}

struct kvm_cpuid2 *x86_supported_cpuid(struct kvm_sys *kvm, struct terr *err)
{
	for (unsigned n = 128; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c) {
			terr_set(err, ENOMEM, "out of memory for CPUID");
			return NULL;
		}
		c->nent = n;
		if (ioctl(kvm->fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			add_emulated_features(kvm, c);
			return c;
		}
		int e = errno;
		free(c);
		if (e != E2BIG) {
			terr_set(err, e, "KVM_GET_SUPPORTED_CPUID: %s", strerror(e));
			return NULL;
		}
	}
	terr_set(err, E2BIG, "KVM_GET_SUPPORTED_CPUID: too many entries");
	return NULL;
}

static unsigned bits_for(unsigned n)
{
	unsigned b = 0;
	while ((1u << b) < n)
		b++;
	return b;
}

/* Make the topology leaves agree: ncpus cores, one thread each, one package,
 * APIC id == vCPU index. */
static void fix_topology(struct kvm_cpuid_entry2 *e, unsigned index, unsigned ncpus)
{
	unsigned core_bits = bits_for(ncpus);

	switch (e->function) {
	case 1:
		e->ebx = (e->ebx & 0x0000ffff) | (ncpus << 16) | (index << 24);
		if (ncpus > 1)
			e->edx |= 1u << 28;   /* HTT: the count in EBX[23:16] is valid */
		e->ecx |= 1u << 31;           /* running under a hypervisor */
		break;
	case 4:
		/* cores per package - 1 in EAX[31:26]; one thread shares each cache */
		e->eax = (e->eax & 0x03ffc3ff) | ((ncpus - 1) << 26);
		break;
	case 0xb:
	case 0x1f:
		if (e->index == 0) {          /* SMT level: one thread */
			e->eax = 0;
			e->ebx = 1;
			e->ecx = (1u << 8) | 0;
		} else if (e->index == 1) {   /* core level */
			e->eax = core_bits;
			e->ebx = ncpus;
			e->ecx = (2u << 8) | 1;
		} else {
			e->eax = e->ebx = 0;
			e->ecx = e->index;
		}
		e->edx = index;
		break;
	case 0x80000008:
		/* AMD: number of cores - 1 and APIC id size */
		e->ecx = (e->ecx & ~0xf0ffu) | (ncpus - 1) | (core_bits << 12);
		break;
	case 0x8000001e:
		e->eax = index;
		e->ebx = (e->ebx & ~0xff00u) & ~0xffu;
		e->ebx |= index;               /* core id; threads per core - 1 = 0 */
		e->ecx &= ~0x7ffu;             /* node 0, one node */
		break;
	}
}

static int set_cpuid(int fd, unsigned index, unsigned ncpus, const struct kvm_cpuid2 *sup,
		     struct terr *err)
{
	size_t sz = sizeof(*sup) + sup->nent * sizeof(sup->entries[0]);
	struct kvm_cpuid2 *c = malloc(sz);
	if (!c)
		return terr_set(err, ENOMEM, "out of memory for CPUID");
	memcpy(c, sup, sz);
	for (unsigned i = 0; i < c->nent; i++)
		fix_topology(&c->entries[i], index, ncpus);
	int r = 0;
	if (ioctl(fd, KVM_SET_CPUID2, c) < 0)
		r = terr_set(err, errno, "vCPU %u: KVM_SET_CPUID2: %s", index, strerror(errno));
	free(c);
	return r;
}

static int set_msrs(int fd, unsigned index, struct terr *err)
{
	static const struct { uint32_t idx; uint64_t val; } boot_msrs[] = {
		{ MSR_IA32_SYSENTER_CS, 0 }, { MSR_IA32_SYSENTER_ESP, 0 },
		{ MSR_IA32_SYSENTER_EIP, 0 }, { MSR_STAR, 0 }, { MSR_CSTAR, 0 },
		{ MSR_KERNEL_GS_BASE, 0 }, { MSR_SYSCALL_MASK, 0 }, { MSR_LSTAR, 0 },
		{ MSR_IA32_TSC, 0 }, { MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING },
		{ MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB },
	};
	const unsigned n = sizeof(boot_msrs) / sizeof(boot_msrs[0]);
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[sizeof(boot_msrs) / sizeof(boot_msrs[0])];
	} m;
	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = n;
	for (unsigned i = 0; i < n; i++) {
		m.e[i].index = boot_msrs[i].idx;
		m.e[i].data = boot_msrs[i].val;
	}
	int done = ioctl(fd, KVM_SET_MSRS, &m);
	if (done != (int)n)
		return terr_set(err, EINVAL, "vCPU %u: KVM_SET_MSRS set %d of %u MSRs (first refused: 0x%x)",
				index, done, n, done >= 0 && done < (int)n ? boot_msrs[done].idx : 0);
	return 0;
}

static int set_lint(int fd, unsigned index, struct terr *err)
{
	struct kvm_lapic_state la;
	if (ioctl(fd, KVM_GET_LAPIC, &la) < 0)
		return terr_set(err, errno, "vCPU %u: KVM_GET_LAPIC: %s", index, strerror(errno));
	uint32_t lvt0, lvt1;
	memcpy(&lvt0, &la.regs[APIC_LVT0], 4);
	memcpy(&lvt1, &la.regs[APIC_LVT1], 4);
	/* LINT0 delivers the PIC's ExtINT, LINT1 NMI, as on a PC */
	lvt0 = (lvt0 & ~0x700u) | (APIC_MODE_EXTINT << 8);
	lvt1 = (lvt1 & ~0x700u) | (APIC_MODE_NMI << 8);
	memcpy(&la.regs[APIC_LVT0], &lvt0, 4);
	memcpy(&la.regs[APIC_LVT1], &lvt1, 4);
	if (ioctl(fd, KVM_SET_LAPIC, &la) < 0)
		return terr_set(err, errno, "vCPU %u: KVM_SET_LAPIC: %s", index, strerror(errno));
	return 0;
}

static int set_fpu(int fd, unsigned index, struct terr *err)
{
	struct kvm_fpu fpu;
	memset(&fpu, 0, sizeof(fpu));
	fpu.fcw = 0x37f;
	fpu.mxcsr = 0x1f80;
	if (ioctl(fd, KVM_SET_FPU, &fpu) < 0)
		return terr_set(err, errno, "vCPU %u: KVM_SET_FPU: %s", index, strerror(errno));
	return 0;
}

int x86_vcpu_setup(int vcpu_fd, unsigned index, unsigned ncpus,
		   const struct kvm_cpuid2 *supported, struct terr *err)
{
	int r = set_cpuid(vcpu_fd, index, ncpus, supported, err);
	if (!r)
		r = set_msrs(vcpu_fd, index, err);
	if (!r)
		r = set_lint(vcpu_fd, index, err);
	if (!r)
		r = set_fpu(vcpu_fd, index, err);
	return r;
}
