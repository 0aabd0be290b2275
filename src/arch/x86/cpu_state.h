/* Save and load of the x86 architectural state KVM holds: per vCPU the
 * registers, special registers, FPU/xsave, XCRs, every MSR KVM lists that
 * the vCPU can read, local APIC, pending events, debug registers, MP state;
 * per VM the PIC pair, IOAPIC, PIT and kvmclock. Everything is written as
 * named fields (src/state/state.h), so readers skip what they do not know
 * and keep the freshly created vCPU's value for what is missing. The
 * architectural blobs (xsave area, LAPIC register page) are stored as bytes:
 * their layout is defined by the CPU, not by tern or KVM. */
#ifndef TERN_ARCH_X86_CPU_STATE_H
#define TERN_ARCH_X86_CPU_STATE_H

#include "state/state.h"
#include "util/error.h"

struct kvm_sys;

#define VCPU_STATE_VERSION 1
#define VM_STATE_VERSION 1

/* The MSR indices KVM_GET_MSR_INDEX_LIST reports (malloc'd, *n entries). */
int x86_msr_index_list(struct kvm_sys *kvm, uint32_t **out, unsigned *n, struct terr *err);

int x86_vcpu_state_save(int vcpu_fd, unsigned index, const uint32_t *msrs, unsigned nmsrs,
			struct state_writer *w, struct terr *err);
int x86_vcpu_state_load(int vcpu_fd, unsigned index, const struct state_reader *r,
			struct terr *err);

int x86_vm_state_save(int vm_fd, struct state_writer *w, struct terr *err);
int x86_vm_state_load(int vm_fd, const struct state_reader *r, struct terr *err);

#endif
