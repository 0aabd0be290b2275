/* A vCPU: its KVM fd, its kvm_run page and its thread running KVM_RUN and
 * dispatching exits to the VM's buses. */
#ifndef TERN_CORE_VCPU_H
#define TERN_CORE_VCPU_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>

#include "util/error.h"

struct vm;

struct vcpu {
	struct vm *vm;
	unsigned index;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool started;
	bool needs_completion;   /* last exit was I/O or MMIO: re-enter to complete it */
};

int vcpu_create(struct vcpu *v, struct vm *vm, unsigned index, struct terr *err);
void vcpu_destroy(struct vcpu *v);
int vcpu_start(struct vcpu *v, struct terr *err);
/* Force the vCPU out of KVM_RUN (from any thread). */
void vcpu_kick(struct vcpu *v);
/* Print general and special registers to stderr. */
void vcpu_dump_regs(struct vcpu *v);

#endif
