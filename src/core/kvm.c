#include "core/kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

struct required_cap {
	int cap;
	const char *name;
	const char *why;
};

static const struct required_cap required_caps[] = {
	{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", "guest RAM" },
	{ KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP", "in-kernel interrupt controllers" },
	{ KVM_CAP_PIT2, "KVM_CAP_PIT2", "in-kernel PIT" },
	{ KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING", "MSI and GSI routing" },
	{ KVM_CAP_IRQFD, "KVM_CAP_IRQFD", "device interrupts without the vCPU thread" },
	{ KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD", "device notifications without the vCPU thread" },
	{ KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID", "CPUID set-up" },
	{ KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR", "x86 TSS region" },
	{ KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE", "vCPU state save and restore" },
	{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT", "pausing vCPUs" },
	{ KVM_CAP_XSAVE, "KVM_CAP_XSAVE", "FPU state save and restore" },
	{ KVM_CAP_XCRS, "KVM_CAP_XCRS", "XCR0 save and restore" },
	{ KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS", "pending event save and restore" },
	{ KVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS", "debug register save and restore" },
	{ KVM_CAP_ADJUST_CLOCK, "KVM_CAP_ADJUST_CLOCK", "kvmclock save and restore" },
	{ KVM_CAP_GET_MSR_FEATURES, "KVM_CAP_GET_MSR_FEATURES", "MSR discovery" },
};

int kvm_sys_open(struct kvm_sys *k, const char *path, struct terr *err)
{
	int r;

	memset(k, 0, sizeof(*k));
	k->fd = open(path, O_RDWR | O_CLOEXEC);
	if (k->fd < 0) {
		int e = errno;
		if (e == ENOENT)
			return terr_set(err, e, "%s does not exist: this host has no KVM "
					"(load kvm_intel or kvm_amd, or enable virtualization)", path);
		if (e == EACCES || e == EPERM)
			return terr_set(err, e, "%s: permission denied (add yourself to the 'kvm' "
					"group or run as root)", path);
		return terr_set(err, e, "%s: %s", path, strerror(e));
	}
	int version = ioctl(k->fd, KVM_GET_API_VERSION, 0);
	if (version != KVM_API_VERSION) {
		r = terr_set(err, EINVAL, "%s: KVM API version %d, tern needs %d", path, version,
			     KVM_API_VERSION);
		goto fail;
	}
	for (size_t i = 0; i < sizeof(required_caps) / sizeof(required_caps[0]); i++) {
		if (ioctl(k->fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0) {
			r = terr_set(err, ENOTSUP, "%s lacks %s, which tern needs for %s", path,
				     required_caps[i].name, required_caps[i].why);
			goto fail;
		}
	}
	k->vcpu_mmap_size = ioctl(k->fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (k->vcpu_mmap_size <= 0) {
		r = terr_set(err, errno, "%s: KVM_GET_VCPU_MMAP_SIZE failed", path);
		goto fail;
	}
	k->max_vcpus = ioctl(k->fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (k->max_vcpus <= 0)
		k->max_vcpus = ioctl(k->fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	if (k->max_vcpus <= 0)
		k->max_vcpus = 4;
	k->dirty_log_manual = ioctl(k->fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) > 0;
	return 0;
fail:
	close(k->fd);
	k->fd = -1;
	return r;
}

void kvm_sys_close(struct kvm_sys *k)
{
	if (k->fd >= 0)
		close(k->fd);
	k->fd = -1;
}
