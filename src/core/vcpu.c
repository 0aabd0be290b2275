#include "core/vcpu.h"
#include "core/vm.h"
#include "util/log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/* vCPU threads are kicked out of KVM_RUN with this signal; its handler does
 * nothing, the point is the EINTR. */
#define VCPU_KICK_SIGNAL (SIGRTMIN + 3)

static void kick_handler(int sig)
{
	(void)sig;
}

static void install_kick_handler(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;   /* no SA_RESTART: KVM_RUN must return */
	sigemptyset(&sa.sa_mask);
	sigaction(VCPU_KICK_SIGNAL, &sa, NULL);
}

int vcpu_create(struct vcpu *v, struct vm *vm, unsigned index, struct terr *err)
{
	memset(v, 0, sizeof(*v));
	v->vm = vm;
	v->index = index;
	v->fd = ioctl(vm->fd, KVM_CREATE_VCPU, (unsigned long)index);
	if (v->fd < 0)
		return terr_set(err, errno, "KVM_CREATE_VCPU %u: %s", index, strerror(errno));
	void *p = mmap(NULL, vm->kvm->vcpu_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (p == MAP_FAILED) {
		int r = terr_set(err, errno, "mapping kvm_run of vCPU %u: %s", index, strerror(errno));
		close(v->fd);
		v->fd = -1;
		return r;
	}
	v->run = p;
	return 0;
}

void vcpu_destroy(struct vcpu *v)
{
	if (v->run)
		munmap(v->run, v->vm->kvm->vcpu_mmap_size);
	if (v->fd >= 0)
		close(v->fd);
	v->run = NULL;
	v->fd = -1;
}

void vcpu_kick(struct vcpu *v)
{
	if (!v->run)
		return;
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (v->started)
		pthread_kill(v->thread, VCPU_KICK_SIGNAL);
}

void vcpu_dump_regs(struct vcpu *v)
{
	struct kvm_regs r;
	struct kvm_sregs s;

	if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 || ioctl(v->fd, KVM_GET_SREGS, &s) < 0) {
		fprintf(stderr, "tern: vCPU %u: cannot read registers: %s\n", v->index, strerror(errno));
		return;
	}
	fprintf(stderr,
		"tern: vCPU %u registers:\n"
		"  rip %016llx rflags %016llx\n"
		"  rax %016llx rbx %016llx rcx %016llx rdx %016llx\n"
		"  rsi %016llx rdi %016llx rsp %016llx rbp %016llx\n"
		"  r8  %016llx r9  %016llx r10 %016llx r11 %016llx\n"
		"  r12 %016llx r13 %016llx r14 %016llx r15 %016llx\n"
		"  cs %04x base %llx dpl %u l %u db %u  ss %04x  ds %04x\n"
		"  cr0 %016llx cr2 %016llx cr3 %016llx cr4 %016llx efer %llx\n"
		"  gdt %llx/%x idt %llx/%x tr %04x\n",
		v->index, r.rip, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp,
		r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, s.cs.selector, s.cs.base,
		s.cs.dpl, s.cs.l, s.cs.db, s.ss.selector, s.ds.selector, s.cr0, s.cr2, s.cr3, s.cr4,
		s.efer, s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit, s.tr.selector);
}

static void handle_io(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
		if (run->io.direction == KVM_EXIT_IO_OUT)
			bus_write(&v->vm->pio, run->io.port, data, run->io.size);
		else
			bus_read(&v->vm->pio, run->io.port, data, run->io.size);
	}
}

static void handle_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	unsigned len = run->mmio.len;
	if (len > sizeof(run->mmio.data))
		len = sizeof(run->mmio.data);
	if (run->mmio.is_write) {
		if (bus_write(&v->vm->mmio, run->mmio.phys_addr, run->mmio.data, len) < 0)
			log_debug("vcpu", "write to unassigned MMIO 0x%llx", run->mmio.phys_addr);
	} else {
		bus_read(&v->vm->mmio, run->mmio.phys_addr, run->mmio.data, len);
	}
}

static void fatal_exit(struct vcpu *v, enum vm_exit_reason why, int status, const char *what)
{
	fprintf(stderr, "tern: vCPU %u: %s\n", v->index, what);
	vcpu_dump_regs(v);
	vm_request_exit(v->vm, why, status);
}

/* At the reset vector: what an AMD host's KVM leaves after a shutdown. */
static bool in_reset_state(struct vcpu *v)
{
	struct kvm_regs r;
	struct kvm_sregs s;
	return ioctl(v->fd, KVM_GET_REGS, &r) == 0 && ioctl(v->fd, KVM_GET_SREGS, &s) == 0 &&
	       r.rip == 0xfff0 && s.cs.base == 0xffff0000;
}

/* Returns false when the thread must stop. */
static bool handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	char msg[160];

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		handle_io(v);
		v->needs_completion = true;
		return true;
	case KVM_EXIT_MMIO:
		handle_mmio(v);
		v->needs_completion = true;
		return true;
	case KVM_EXIT_INTR:
	case KVM_EXIT_HLT:
		return true;
	case KVM_EXIT_SHUTDOWN:
		fatal_exit(v, VM_EXIT_TRIPLE_FAULT, TERN_EXIT_TRIPLE_FAULT,
			   "the guest triple-faulted (CPU shutdown)");
		if (in_reset_state(v))
			fprintf(stderr, "tern: (these are the vCPU's reset values, not the faulting "
				"state: on AMD hosts KVM reinitializes a vCPU at a shutdown)\n");
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		switch (run->system_event.type) {
		case KVM_SYSTEM_EVENT_SHUTDOWN:
			vm_request_exit(v->vm, VM_EXIT_POWEROFF, 0);
			return false;
		case KVM_SYSTEM_EVENT_RESET:
			vm_request_exit(v->vm, VM_EXIT_RESET, 0);
			return false;
		default:
			snprintf(msg, sizeof(msg), "system event %u (guest crash)", run->system_event.type);
			fatal_exit(v, VM_EXIT_INTERNAL_ERROR, TERN_EXIT_INTERNAL_ERROR, msg);
			return false;
		}
	case KVM_EXIT_INTERNAL_ERROR:
		snprintf(msg, sizeof(msg), "KVM internal error, suberror %u",
			 run->internal.suberror);
		fatal_exit(v, VM_EXIT_INTERNAL_ERROR, TERN_EXIT_INTERNAL_ERROR, msg);
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		snprintf(msg, sizeof(msg), "KVM could not enter the guest, hardware reason 0x%llx",
			 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		fatal_exit(v, VM_EXIT_INTERNAL_ERROR, TERN_EXIT_INTERNAL_ERROR, msg);
		return false;
	default:
		snprintf(msg, sizeof(msg), "unexpected KVM exit reason %u", run->exit_reason);
		fatal_exit(v, VM_EXIT_INTERNAL_ERROR, TERN_EXIT_INTERNAL_ERROR, msg);
		return false;
	}
}

/* Re-enter once with immediate_exit set: KVM finishes the I/O instruction of
 * the last exit and returns at once, so the saved state is consistent. */
static void complete_pending(struct vcpu *v)
{
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (ioctl(v->fd, KVM_RUN, 0) < 0 && errno != EINTR)
		log_warn("vcpu", "vCPU %u: completing I/O: %s", v->index, strerror(errno));
	v->needs_completion = false;
}

/* Park while a pause is requested. Returns false if the VM is exiting. */
static bool park_if_asked(struct vcpu *v)
{
	struct vm *vm = v->vm;
	pthread_mutex_lock(&vm->lock);
	while (vm->pause_req && !vm->exit_req) {
		if (v->needs_completion) {
			pthread_mutex_unlock(&vm->lock);
			complete_pending(v);
			pthread_mutex_lock(&vm->lock);
			continue;
		}
		vm->parked++;
		pthread_cond_broadcast(&vm->cond);
		pthread_cond_wait(&vm->resume_cond, &vm->lock);
		vm->parked--;
	}
	bool go = !vm->exit_req;
	pthread_mutex_unlock(&vm->lock);
	return go;
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct vm *vm = v->vm;
	char name[16];

	snprintf(name, sizeof(name), "vcpu%u", v->index);
	pthread_setname_np(pthread_self(), name);
	for (;;) {
		__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
		if (!park_if_asked(v))
			break;
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			char msg[96];
			snprintf(msg, sizeof(msg), "KVM_RUN failed: %s", strerror(errno));
			fatal_exit(v, VM_EXIT_HOST_ERROR, TERN_EXIT_HOST_ERROR, msg);
			break;
		}
		v->needs_completion = false;
		if (!handle_exit(v))
			break;
	}
	pthread_mutex_lock(&vm->lock);
	vm->live_threads--;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}

int vcpu_start(struct vcpu *v, struct terr *err)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, install_kick_handler);

	pthread_mutex_lock(&v->vm->lock);
	v->vm->live_threads++;
	pthread_mutex_unlock(&v->vm->lock);
	int r = pthread_create(&v->thread, NULL, vcpu_thread, v);
	if (r) {
		pthread_mutex_lock(&v->vm->lock);
		v->vm->live_threads--;
		pthread_mutex_unlock(&v->vm->lock);
		return terr_set(err, r, "cannot start vCPU %u thread: %s", v->index, strerror(r));
	}
	v->started = true;
	return 0;
}
