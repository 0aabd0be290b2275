/* A machine: a VM assembled from its configuration tree. It creates the KVM
 * VM and vCPUs, the platform devices, loads the kernel and sets the boot
 * registers. Snapshot restore and migration rebuild a machine the same way
 * and then apply saved state. */
#ifndef TERN_MACHINE_MACHINE_H
#define TERN_MACHINE_MACHINE_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <termios.h>

#include "config/config.h"
#include "core/kvm.h"
#include "core/vm.h"
#include "util/error.h"

struct control_server;
struct snapshot_cmds;
struct migration_cmds;

/* How machine_build gets the guest going: a fresh boot loads the kernel;
 * a restore takes RAM from a snapshot and leaves registers and device state
 * to the caller. */
struct machine_restore {
	struct guest_mem_source ram;
	/* An incoming migration: writable disk images are opened without their
	 * locks, which the source still holds; the devices' acquire ops take
	 * them before the guest starts (src/migration/receive.c). */
	bool incoming;
};

struct machine {
	struct config *cfg;            /* borrowed; outlives the machine */
	bool restoring;
	bool incoming;                 /* machine_restore.incoming */
	struct kvm_sys kvm;
	struct vm vm;
	bool vm_created;
	struct device *pci_host;       /* pci.0: virtio devices attach to its bus */
	struct kvm_cpuid2 *cpuid;
	uint32_t *msr_list;            /* MSRs a snapshot saves (KVM_GET_MSR_INDEX_LIST) */
	unsigned nmsrs;
	int console_fd;                /* console.path file, or -1 for stdio */
	int signal_fd;                 /* SIGINT/SIGTERM/SIGHUP -> orderly exit */
	bool tty_raw;
	struct termios tty_saved;
	/* --- control socket (src/control) --- */
	struct control_server *control;   /* NULL when the configuration asks for none */
	struct snapshot_cmds *snapshot_cmds;  /* snapshot-save (src/snapshot/snapshot_cmds.c) */
	struct migration_cmds *migration_cmds; /* migrate* (src/migration/cmds.c) */
	/* --- end control socket --- */
};

/* Build everything from cfg: VM, vCPUs, devices, and (without `restore`)
 * kernel and boot registers. On error nothing is left running and err says
 * what is wrong. */
int machine_build(struct machine *m, struct config *cfg, const struct machine_restore *restore,
		  struct terr *err);
/* Run until the guest or the host ends the VM; returns the exit status.
 * With `paused` the vCPUs wait for a resume before their first instruction. */
int machine_run(struct machine *m, bool paused, struct terr *err);
void machine_destroy(struct machine *m);

#endif
