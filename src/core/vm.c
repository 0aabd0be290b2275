#include "core/vm.h"
#include "core/vcpu.h"
#include "arch/x86/layout.h"
#include "util/log.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int vm_set_memory(struct vm *vm, struct terr *err)
{
	for (unsigned i = 0; i < vm->mem.nregions; i++) {
		const struct guest_region *g = &vm->mem.regions[i];
		struct kvm_userspace_memory_region mr = {
			.slot = i,
			.flags = vm->dirty_logging ? KVM_MEM_LOG_DIRTY_PAGES : 0,
			.guest_phys_addr = g->gpa,
			.memory_size = g->size,
			.userspace_addr = (uintptr_t)g->hva,
		};
		if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &mr) < 0)
			return terr_set(err, errno, "memory.size: KVM refused guest RAM slot %u (%llu MiB at 0x%llx): %s",
					i, (unsigned long long)(g->size >> 20),
					(unsigned long long)g->gpa, strerror(errno));
	}
	return 0;
}

int vm_create(struct vm *vm, struct kvm_sys *kvm, uint64_t mem_size, unsigned ncpus,
	      const struct guest_mem_source *src, struct terr *err)
{
	int r;

	memset(vm, 0, sizeof(*vm));
	vm->kvm = kvm;
	vm->fd = -1;
	vm->mem.fd = -1;
	vm->devices_tail = &vm->devices;
	bus_init(&vm->pio, "port I/O");
	bus_init(&vm->mmio, "MMIO");
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	pthread_cond_init(&vm->resume_cond, NULL);

	if (ncpus == 0 || (int)ncpus > kvm->max_vcpus) {
		r = terr_set(err, EINVAL, "cpus: %u vCPUs requested, this host's KVM allows 1 to %d",
			     ncpus, kvm->max_vcpus);
		goto fail_early;
	}
	r = evloop_init(&vm->loop, err);
	if (r)
		goto fail_early;
	vm->fd = ioctl(kvm->fd, KVM_CREATE_VM, 0);
	if (vm->fd < 0) {
		r = terr_set(err, errno, "KVM_CREATE_VM: %s", strerror(errno));
		goto fail;
	}
	if (ioctl(vm->fd, KVM_SET_TSS_ADDR, (unsigned long)LAYOUT_KVM_TSS) < 0) {
		r = terr_set(err, errno, "KVM_SET_TSS_ADDR: %s", strerror(errno));
		goto fail;
	}
	uint64_t ident = LAYOUT_KVM_IDENT_MAP;
	if (ioctl(vm->fd, KVM_SET_IDENTITY_MAP_ADDR, &ident) < 0) {
		r = terr_set(err, errno, "KVM_SET_IDENTITY_MAP_ADDR: %s", strerror(errno));
		goto fail;
	}
	/* RAM slots before the irqchip: on this nested KVM the first slot of a
	 * VM that already has an in-kernel irqchip costs 3-8 ms, before it
	 * 0.05-1 ms (bench/RESULTS.md, "Snapshot") */
	r = guest_mem_create_from(&vm->mem, mem_size, src, err);
	if (r)
		goto fail;
	r = vm_set_memory(vm, err);
	if (r)
		goto fail;
	if (ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) < 0) {
		r = terr_set(err, errno, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
		goto fail;
	}
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	if (ioctl(vm->fd, KVM_CREATE_PIT2, &pit) < 0) {
		r = terr_set(err, errno, "KVM_CREATE_PIT2: %s", strerror(errno));
		goto fail;
	}
	vm->vcpus = calloc(ncpus, sizeof(*vm->vcpus));
	if (!vm->vcpus) {
		r = terr_set(err, ENOMEM, "out of memory for %u vCPUs", ncpus);
		goto fail;
	}
	for (unsigned i = 0; i < ncpus; i++) {
		r = vcpu_create(&vm->vcpus[i], vm, i, err);
		if (r)
			goto fail;
		vm->nvcpus++;
	}
	return 0;
fail:
	vm_destroy(vm);
	return r;
fail_early:
	bus_destroy(&vm->pio);
	bus_destroy(&vm->mmio);
	return r;
}

int vm_start(struct vm *vm, bool paused, struct terr *err)
{
	int r = evloop_start(&vm->loop, err);
	if (r)
		return r;
	pthread_mutex_lock(&vm->lock);
	vm->running = true;
	if (paused) {
		vm->paused_users++;
		vm->pause_req = true;
	}
	pthread_mutex_unlock(&vm->lock);
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		r = vcpu_start(&vm->vcpus[i], err);
		if (r) {
			vm_request_exit(vm, VM_EXIT_HOST_ERROR, TERN_EXIT_HOST_ERROR);
			return r;
		}
	}
	log_debug("vm", "%u vCPU%s started%s", vm->nvcpus, vm->nvcpus == 1 ? "" : "s",
		  paused ? " (paused)" : "");
	/* Loaded state may hold requests the guest made available while the
	 * saving side was already pausing (its notification dropped or still in
	 * an eventfd there); with event-index suppression the guest will not
	 * notify again, so devices look at their queues now, as after a resume.
	 * Started paused, the vm_resume that releases the VM does it. */
	if (vm->state_loaded && !paused)
		for (struct device *d = vm->devices; d; d = d->next)
			if (d->ops->resume)
				d->ops->resume(d);
	return 0;
}

static void kick_all(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nvcpus; i++)
		vcpu_kick(&vm->vcpus[i]);
}

/* Pauses and resumes nest, and come from several threads (control socket,
 * snapshot, migration, its throttle). One transition runs at a time: a
 * second vm_pause returns only once the first has parked every vCPU and
 * quiesced every device, and a vm_pause racing a vm_resume cannot see its
 * pause undone when the resume clears pause_req after it. Device pause and
 * resume callbacks must not wait for the event loop (they don't: they
 * drain their own engines), since it may be waiting here. */
static void wait_transition(struct vm *vm)
{
	while (vm->pause_busy)
		pthread_cond_wait(&vm->cond, &vm->lock);
}

void vm_pause(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	wait_transition(vm);
	if (vm->paused_users++ > 0) {
		pthread_mutex_unlock(&vm->lock);
		return;
	}
	vm->pause_busy = true;
	vm->pause_req = true;
	pthread_mutex_unlock(&vm->lock);
	kick_all(vm);
	pthread_mutex_lock(&vm->lock);
	while (vm->running && vm->parked < vm->live_threads)
		pthread_cond_wait(&vm->cond, &vm->lock);
	pthread_mutex_unlock(&vm->lock);
	for (struct device *d = vm->devices; d; d = d->next)
		if (d->ops->pause)
			d->ops->pause(d);
	pthread_mutex_lock(&vm->lock);
	vm->pause_busy = false;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
}

void vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	wait_transition(vm);
	if (vm->paused_users == 0 || --vm->paused_users > 0) {
		pthread_mutex_unlock(&vm->lock);
		return;
	}
	vm->pause_busy = true;
	pthread_mutex_unlock(&vm->lock);
	for (struct device *d = vm->devices; d; d = d->next)
		if (d->ops->resume)
			d->ops->resume(d);
	pthread_mutex_lock(&vm->lock);
	vm->pause_req = false;
	vm->pause_busy = false;
	pthread_cond_broadcast(&vm->resume_cond);
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
}

void vm_request_exit(struct vm *vm, enum vm_exit_reason why, int status)
{
	pthread_mutex_lock(&vm->lock);
	if (!vm->exit_req) {
		vm->exit_req = true;
		vm->exit_reason = why;
		vm->exit_status = status;
	}
	pthread_cond_broadcast(&vm->cond);
	pthread_cond_broadcast(&vm->resume_cond);
	pthread_mutex_unlock(&vm->lock);
	kick_all(vm);
}

int vm_wait(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	while (!vm->exit_req)
		pthread_cond_wait(&vm->cond, &vm->lock);
	int status = vm->exit_status;
	pthread_mutex_unlock(&vm->lock);
	kick_all(vm);
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		if (vm->vcpus[i].started) {
			pthread_join(vm->vcpus[i].thread, NULL);
			vm->vcpus[i].started = false;
		}
	}
	evloop_stop(&vm->loop);
	pthread_mutex_lock(&vm->lock);
	vm->running = false;
	pthread_mutex_unlock(&vm->lock);
	return status;
}

void vm_destroy(struct vm *vm)
{
	if (vm->running) {
		vm_request_exit(vm, VM_EXIT_QUIT, 0);
		vm_wait(vm);
	}
	/* the loop thread is stopped (vm_wait); devices unregister their fds
	 * from the loop as they go, so the loop is torn down after them */
	evloop_stop(&vm->loop);
	while (vm->devices) {
		struct device *d = vm->devices;
		vm->devices = d->next;
		if (d->ops->destroy)
			d->ops->destroy(d);
	}
	vm->devices_tail = &vm->devices;
	evloop_destroy(&vm->loop);
	for (unsigned i = 0; i < vm->nvcpus; i++)
		vcpu_destroy(&vm->vcpus[i]);
	free(vm->vcpus);
	vm->vcpus = NULL;
	vm->nvcpus = 0;
	if (vm->fd >= 0)
		close(vm->fd);
	vm->fd = -1;
	guest_mem_destroy(&vm->mem);
	bus_destroy(&vm->pio);
	bus_destroy(&vm->mmio);
	pthread_cond_destroy(&vm->cond);
	pthread_cond_destroy(&vm->resume_cond);
	pthread_mutex_destroy(&vm->lock);
}

void vm_add_device(struct vm *vm, struct device *d)
{
	d->vm = vm;
	d->next = NULL;
	*vm->devices_tail = d;
	vm->devices_tail = &d->next;
}

struct device *vm_find_device(struct vm *vm, const char *id)
{
	for (struct device *d = vm->devices; d; d = d->next)
		if (!strcmp(d->id, id))
			return d;
	return NULL;
}

int vm_irq_line(struct vm *vm, unsigned gsi, int level)
{
	struct kvm_irq_level irq = { .irq = gsi, .level = level };
	if (ioctl(vm->fd, KVM_IRQ_LINE, &irq) < 0)
		return -errno;
	return 0;
}

/* --- dirty page tracking (src/migration) --- */
int vm_dirty_log_start(struct vm *vm, bool *all_dirty, struct terr *err)
{
	*all_dirty = false;
	if (vm->dirty_logging)
		return terr_set(err, EBUSY, "dirty page tracking is already on");
	int caps = ioctl(vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
	vm->dirty_manual = false;
	if (caps > 0) {
		struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 };
		cap.args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE |
			      ((unsigned)caps & KVM_DIRTY_LOG_INITIALLY_SET);
		if (ioctl(vm->fd, KVM_ENABLE_CAP, &cap) == 0) {
			vm->dirty_manual = true;
			*all_dirty = (unsigned)caps & KVM_DIRTY_LOG_INITIALLY_SET;
		}
	}
	if (guest_mem_track_host_writes(&vm->mem, true))
		return terr_set(err, ENOMEM, "out of memory for the dirty page log");
	vm->dirty_logging = true;
	int r = vm_set_memory(vm, err);
	if (r) {
		vm_dirty_log_stop(vm);
		terr_prefix(err, "starting dirty page tracking: ");
	}
	return r;
}

void vm_dirty_log_stop(struct vm *vm)
{
	struct terr err = { 0 };
	guest_mem_track_host_writes(&vm->mem, false);
	if (!vm->dirty_logging)
		return;
	vm->dirty_logging = false;
	if (vm_set_memory(vm, &err))
		log_warn("vm", "stopping dirty page tracking: %s", err.msg);
}

int vm_dirty_log_get(struct vm *vm, unsigned slot, uint64_t *bitmap, struct terr *err)
{
	struct kvm_dirty_log dl = { .slot = slot, .dirty_bitmap = bitmap };
	if (ioctl(vm->fd, KVM_GET_DIRTY_LOG, &dl) < 0)
		return terr_set(err, errno, "KVM_GET_DIRTY_LOG (slot %u): %s", slot, strerror(errno));
	return 0;
}

int vm_dirty_log_clear(struct vm *vm, unsigned slot, uint64_t first, uint64_t n,
		       const uint64_t *bits, struct terr *err)
{
	if (!vm->dirty_manual || !n)
		return 0;
	struct kvm_clear_dirty_log cl = { .slot = slot, .num_pages = (uint32_t)n,
					  .first_page = first, .dirty_bitmap = (void *)bits };
	if (ioctl(vm->fd, KVM_CLEAR_DIRTY_LOG, &cl) < 0)
		return terr_set(err, errno, "KVM_CLEAR_DIRTY_LOG (slot %u, pages %llu+%llu): %s", slot,
				(unsigned long long)first, (unsigned long long)n, strerror(errno));
	return 0;
}
/* --- end dirty page tracking --- */
