/* VM life cycle on the real /dev/kvm: a real-mode guest increments a counter
 * in RAM; pausing must freeze it (every vCPU parked), resuming must let it
 * run again; an exit requested from another thread ends the VM with its
 * status; a triple fault ends it with TERN_EXIT_TRIPLE_FAULT. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/device.h"
#include "core/kvm.h"
#include "core/vcpu.h"
#include "core/vm.h"

#define CODE 0x1000
#define COUNTER 0x2000

static void msleep(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Put vCPU 0 at CODE with the given IDT limit, in real mode or in flat
 * 32-bit protected mode. */
static void start_at(struct vm *vm, const uint8_t *code, size_t len, uint16_t idt_limit,
		     bool protected_mode)
{
	assert_int_equal(guest_mem_write(&vm->mem, CODE, code, len), 0);
	struct kvm_sregs s;
	struct kvm_regs r;
	int fd = vm->vcpus[0].fd;
	assert_int_equal(ioctl(fd, KVM_GET_SREGS, &s), 0);
	s.cs.selector = 0;
	s.cs.base = 0;
	s.idt.limit = idt_limit;
	if (protected_mode) {
		struct kvm_segment flat = { .base = 0, .limit = 0xffffffff, .type = 3, .present = 1,
					    .s = 1, .db = 1, .g = 1, .selector = 0x10 };
		s.ds = s.es = s.fs = s.gs = s.ss = flat;
		flat.type = 0xb;
		flat.selector = 0x8;
		s.cs = flat;
		s.cr0 |= 1;
	}
	assert_int_equal(ioctl(fd, KVM_SET_SREGS, &s), 0);
	memset(&r, 0, sizeof(r));
	r.rip = CODE;
	r.rflags = 2;
	assert_int_equal(ioctl(fd, KVM_SET_REGS, &r), 0);
}

static uint32_t counter(struct vm *vm)
{
	uint32_t v;
	assert_int_equal(guest_mem_read(&vm->mem, COUNTER, &v, 4), 0);
	return v;
}

static void test_pause_resume_exit(void **ctx)
{
	(void)ctx;
	struct kvm_sys kvm;
	struct vm vm;
	struct terr err = { 0 };
	assert_int_equal(kvm_sys_open(&kvm, "/dev/kvm", &err), 0);
	/* two vCPUs: the second sits in wait-for-SIPI inside KVM_RUN, which the
	 * barrier must also reach */
	assert_int_equal(vm_create(&vm, &kvm, 4 << 20, 2, NULL, &err), 0);
	/* 1: inc dword [COUNTER]; jmp 1b */
	const uint8_t loop[] = { 0x66, 0xff, 0x06, COUNTER & 0xff, COUNTER >> 8, 0xeb, 0xf9 };
	start_at(&vm, loop, sizeof(loop), 0x3ff, false);
	assert_int_equal(vm_start(&vm, false, &err), 0);

	uint32_t c0 = counter(&vm);
	for (int i = 0; i < 200 && counter(&vm) == c0; i++)
		msleep(10);
	assert_true(counter(&vm) != c0);

	for (int round = 0; round < 5; round++) {
		vm_pause(&vm);
		pthread_mutex_lock(&vm.lock);
		assert_int_equal(vm.parked, 2);
		pthread_mutex_unlock(&vm.lock);
		uint32_t c1 = counter(&vm);
		msleep(30);
		assert_int_equal(counter(&vm), c1);
		/* nested pause/resume keeps it paused */
		vm_pause(&vm);
		vm_resume(&vm);
		msleep(10);
		assert_int_equal(counter(&vm), c1);
		vm_resume(&vm);
		for (int i = 0; i < 200 && counter(&vm) == c1; i++)
			msleep(5);
		assert_true(counter(&vm) != c1);
	}
	vm_request_exit(&vm, VM_EXIT_QUIT, 7);
	assert_int_equal(vm_wait(&vm), 7);
	assert_int_equal(vm.exit_reason, VM_EXIT_QUIT);
	vm_destroy(&vm);
	kvm_sys_close(&kvm);
}

/* A device whose pause and resume take a while, and which records whether
 * it is quiesced: the window in which an unserialized second vm_pause
 * would return too early, or a vm_resume would undo a newer pause. */
struct slow_dev {
	struct device dev;
	int quiesced;                /* atomic */
};

static int slow_pause(struct device *d)
{
	struct slow_dev *s = (struct slow_dev *)d;
	msleep(2);
	__atomic_store_n(&s->quiesced, 1, __ATOMIC_SEQ_CST);
	return 0;
}

static void slow_resume(struct device *d)
{
	struct slow_dev *s = (struct slow_dev *)d;
	msleep(2);
	__atomic_store_n(&s->quiesced, 0, __ATOMIC_SEQ_CST);
}

static const struct device_ops slow_ops = {
	.type = "slow", .pause = slow_pause, .resume = slow_resume,
};

struct throttler {
	struct vm *vm;
	int stop;                    /* atomic */
};

/* What migration's auto-converge does: pause, sleep, resume, sleep. */
static void *throttle(void *arg)
{
	struct throttler *t = arg;
	while (!__atomic_load_n(&t->stop, __ATOMIC_SEQ_CST)) {
		vm_pause(t->vm);
		msleep(1);
		vm_resume(t->vm);
		msleep(1);
	}
	return NULL;
}

/* Another thread pausing and resuming all the time must not let a pause of
 * ours return before the vCPUs are parked and the devices quiesced, nor end
 * it while we still hold it. */
static void test_concurrent_pause(void **ctx)
{
	(void)ctx;
	struct kvm_sys kvm;
	struct vm vm;
	struct terr err = { 0 };
	struct slow_dev sd = { .dev = { .ops = &slow_ops } };
	snprintf(sd.dev.id, sizeof(sd.dev.id), "slow.0");
	assert_int_equal(kvm_sys_open(&kvm, "/dev/kvm", &err), 0);
	assert_int_equal(vm_create(&vm, &kvm, 4 << 20, 2, NULL, &err), 0);
	vm_add_device(&vm, &sd.dev);
	const uint8_t loop[] = { 0x66, 0xff, 0x06, COUNTER & 0xff, COUNTER >> 8, 0xeb, 0xf9 };
	start_at(&vm, loop, sizeof(loop), 0x3ff, false);
	assert_int_equal(vm_start(&vm, false, &err), 0);

	struct throttler t = { .vm = &vm };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, throttle, &t), 0);
	for (int i = 0; i < 150; i++) {
		vm_pause(&vm);
		assert_int_equal(__atomic_load_n(&sd.quiesced, __ATOMIC_SEQ_CST), 1);
		uint32_t c = counter(&vm);
		msleep(3);   /* the throttler resumes at least once meanwhile */
		assert_int_equal(counter(&vm), c);
		assert_int_equal(__atomic_load_n(&sd.quiesced, __ATOMIC_SEQ_CST), 1);
		vm_resume(&vm);
		if (i % 8 == 0)
			msleep(1);
	}
	__atomic_store_n(&t.stop, 1, __ATOMIC_SEQ_CST);
	pthread_join(th, NULL);
	vm_request_exit(&vm, VM_EXIT_QUIT, 0);
	assert_int_equal(vm_wait(&vm), 0);
	vm.devices = NULL;   /* sd lives on this stack: not vm_destroy's to free */
	vm_destroy(&vm);
	kvm_sys_close(&kvm);
}

static void test_triple_fault(void **ctx)
{
	(void)ctx;
	struct kvm_sys kvm;
	struct vm vm;
	struct terr err = { 0 };
	assert_int_equal(kvm_sys_open(&kvm, "/dev/kvm", &err), 0);
	assert_int_equal(vm_create(&vm, &kvm, 4 << 20, 1, NULL, &err), 0);
	/* ud2 in protected mode with an empty IDT: #UD -> #GP -> double fault
	 * -> shutdown */
	const uint8_t ud2[] = { 0x0f, 0x0b };
	start_at(&vm, ud2, sizeof(ud2), 0, true);
	assert_int_equal(vm_start(&vm, false, &err), 0);
	assert_int_equal(vm_wait(&vm), TERN_EXIT_TRIPLE_FAULT);
	assert_int_equal(vm.exit_reason, VM_EXIT_TRIPLE_FAULT);
	vm_destroy(&vm);
	kvm_sys_close(&kvm);
}

static void test_bad_sizes(void **ctx)
{
	(void)ctx;
	struct kvm_sys kvm;
	struct vm vm;
	struct terr err = { 0 };
	assert_int_equal(kvm_sys_open(&kvm, "/dev/kvm", &err), 0);
	assert_true(vm_create(&vm, &kvm, 4 << 20, 0, NULL, &err) < 0);
	assert_non_null(strstr(err.msg, "cpus: 0 vCPUs requested"));
	terr_clear(&err);
	assert_true(vm_create(&vm, &kvm, 4095, 1, NULL, &err) < 0);
	assert_non_null(strstr(err.msg, "memory.size"));
	kvm_sys_close(&kvm);

	terr_clear(&err);
	assert_true(kvm_sys_open(&kvm, "/nonexistent/kvm", &err) < 0);
	assert_string_equal(err.msg, "/nonexistent/kvm does not exist: this host has no KVM "
			    "(load kvm_intel or kvm_amd, or enable virtualization)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pause_resume_exit),
		cmocka_unit_test(test_concurrent_pause),
		cmocka_unit_test(test_triple_fault),
		cmocka_unit_test(test_bad_sizes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
