/* Per-vCPU architectural set-up: CPUID (what KVM supports, with a consistent
 * topology of `ncpus` single-thread cores in one package), the MSRs a guest
 * expects at reset, the local APIC's LINT pins and the FPU. */
#ifndef TERN_ARCH_X86_CPU_H
#define TERN_ARCH_X86_CPU_H

#include <linux/kvm.h>

#include "util/error.h"

struct kvm_sys;

/* KVM_GET_SUPPORTED_CPUID, fetched once per VM and shared by its vCPUs. */
struct kvm_cpuid2 *x86_supported_cpuid(struct kvm_sys *kvm, struct terr *err);

/* Set CPUID, MSRs, LAPIC LINT0/LINT1 and FPU of vCPU `index` of `ncpus`. */
int x86_vcpu_setup(int vcpu_fd, unsigned index, unsigned ncpus,
		   const struct kvm_cpuid2 *supported, struct terr *err);

#endif
