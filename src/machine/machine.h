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

struct machine {
	struct config *cfg;            /* borrowed; outlives the machine */
	struct kvm_sys kvm;
	struct vm vm;
	bool vm_created;
	struct kvm_cpuid2 *cpuid;
	int console_fd;                /* console.path file, or -1 for stdio */
	int signal_fd;                 /* SIGINT/SIGTERM/SIGHUP -> orderly exit */
	bool tty_raw;
	struct termios tty_saved;
	/* --- control socket (src/control) --- */
	struct control_server *control;   /* NULL when the configuration asks for none */
	/* --- end control socket --- */
};

/* Build everything from m->cfg: VM, vCPUs, devices, kernel, registers. On
 * error nothing is left running and err says what is wrong. */
int machine_build(struct machine *m, struct config *cfg, struct terr *err);
/* Run until the guest or the host ends the VM; returns the exit status. */
int machine_run(struct machine *m, struct terr *err);
void machine_destroy(struct machine *m);

#endif
