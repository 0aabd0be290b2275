/* A VM: the KVM VM fd, guest RAM, buses, vCPUs, devices and the event loop,
 * with the life cycle (start, pause/resume barrier, exit from any thread). */
#ifndef TERN_CORE_VM_H
#define TERN_CORE_VM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/bus.h"
#include "core/device.h"
#include "core/evloop.h"
#include "core/kvm.h"
#include "core/memory.h"
#include "util/error.h"

struct vcpu;

enum vm_exit_reason {
	VM_EXIT_NONE,
	VM_EXIT_POWEROFF,        /* guest powered off: status 0 */
	VM_EXIT_TEST,            /* test-exit port: the guest's status */
	VM_EXIT_RESET,           /* guest asked for a reset */
	VM_EXIT_QUIT,            /* asked by the host (control socket, signal) */
	VM_EXIT_TRIPLE_FAULT,    /* status 2, registers dumped */
	VM_EXIT_INTERNAL_ERROR,  /* KVM could not run the guest: status 3 */
	VM_EXIT_HOST_ERROR,      /* tern failed while running: status 4 */
};

/* Exit statuses of the tern process (docs/architecture.md lists them). */
#define TERN_EXIT_SETUP_ERROR     1
#define TERN_EXIT_TRIPLE_FAULT    2
#define TERN_EXIT_INTERNAL_ERROR  3
#define TERN_EXIT_HOST_ERROR      4

struct vm {
	struct kvm_sys *kvm;
	int fd;
	struct guest_mem mem;
	struct bus pio, mmio;
	struct evloop loop;
	unsigned nvcpus;
	struct vcpu *vcpus;
	struct device *devices, **devices_tail;

	pthread_mutex_t lock;
	pthread_cond_t cond;          /* vCPUs parked, exit requested */
	pthread_cond_t resume_cond;   /* pause lifted */
	bool running;                 /* vCPU threads started */
	bool pause_req;
	unsigned paused_users;        /* nested vm_pause() calls */
	bool pause_busy;              /* a pause or resume is under way */
	bool state_loaded;            /* devices were loaded from a snapshot or a migration */
	unsigned parked;              /* vCPU threads parked */
	unsigned live_threads;        /* vCPU threads not yet exited */
	bool exit_req;
	enum vm_exit_reason exit_reason;
	int exit_status;
	/* --- dirty page tracking (src/migration) --- */
	bool dirty_logging;           /* KVM_MEM_LOG_DIRTY_PAGES on every RAM slot */
	bool dirty_manual;            /* bits stay set until vm_dirty_log_clear */
	/* --- end dirty page tracking --- */
};

/* Create the KVM VM with in-kernel irqchip and PIT, `mem_size` bytes of RAM
 * (fresh, or from a snapshot when src is not NULL) and `ncpus` vCPUs
 * (created, not started). */
int vm_create(struct vm *vm, struct kvm_sys *kvm, uint64_t mem_size, unsigned ncpus,
	      const struct guest_mem_source *src, struct terr *err);
/* Start the vCPU threads and the event loop; with `paused` the vCPUs park
 * before their first instruction (vm_resume lets them go). */
int vm_start(struct vm *vm, bool paused, struct terr *err);
/* Barrier: returns once every vCPU is out of KVM_RUN with its last
 * instruction completed and parked, and every device is quiesced. Nests. */
void vm_pause(struct vm *vm);
void vm_resume(struct vm *vm);
/* End the VM from any thread (vCPU, event loop, signal-safe is NOT given).
 * The first request wins. */
void vm_request_exit(struct vm *vm, enum vm_exit_reason why, int status);
/* Wait for an exit request, then stop the vCPUs and the loop; returns the
 * process exit status. */
int vm_wait(struct vm *vm);
void vm_destroy(struct vm *vm);

void vm_add_device(struct vm *vm, struct device *d);
struct device *vm_find_device(struct vm *vm, const char *id);
/* Raise or lower an interrupt line (ISA IRQ / GSI) of the in-kernel irqchip. */
int vm_irq_line(struct vm *vm, unsigned gsi, int level);

/* --- dirty page tracking (src/migration) ---
 * KVM's dirty log on every RAM slot (slot i = mem.regions[i]), plus the log
 * of tern's own writes (guest_mem_note_write). Where KVM has
 * KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, fetching the log does not clear it:
 * the caller clears (and so write-protects again) the pages it is about to
 * send, a chunk at a time, and *all_dirty says whether every page starts
 * dirty (KVM_DIRTY_LOG_INITIALLY_SET: nothing is write-protected up front).
 * Without it, fetching clears and clearing does nothing. */
int vm_dirty_log_start(struct vm *vm, bool *all_dirty, struct terr *err);
void vm_dirty_log_stop(struct vm *vm);
/* Slot `slot`'s dirty bitmap: bit i of word i/64 is page i of the region;
 * (region pages + 63) / 64 words. */
int vm_dirty_log_get(struct vm *vm, unsigned slot, uint64_t *bitmap, struct terr *err);
/* Clear the pages of [first, first + n) of the slot whose bits are set in
 * `bits` (bit 0 = page first) and write-protect them again. first is a
 * multiple of 64, and so is n unless the range ends at the end of the slot. */
int vm_dirty_log_clear(struct vm *vm, unsigned slot, uint64_t first, uint64_t n,
		       const uint64_t *bits, struct terr *err);
/* --- end dirty page tracking --- */

#endif
