/* /dev/kvm: open it and check every capability tern relies on. */
#ifndef TERN_CORE_KVM_H
#define TERN_CORE_KVM_H

#include <stdbool.h>

#include "util/error.h"

struct kvm_sys {
	int fd;            /* /dev/kvm */
	int vcpu_mmap_size;
	int max_vcpus;
	bool dirty_log_manual;   /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 */
};

/* Open `path` (normally /dev/kvm) and verify the API version and every
 * required capability. Errors say which is missing, or that the device is
 * absent or not accessible and what to do about it. */
int kvm_sys_open(struct kvm_sys *k, const char *path, struct terr *err);
void kvm_sys_close(struct kvm_sys *k);

#endif
