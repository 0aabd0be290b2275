/* The snapshot commands of the control socket: snapshot-save (docs/control.md,
 * docs/snapshot-format.md). */
#ifndef TERN_SNAPSHOT_SNAPSHOT_CMDS_H
#define TERN_SNAPSHOT_SNAPSHOT_CMDS_H

#include "machine/machine.h"
#include "util/error.h"

/* Register the commands on m->control (nothing when the machine has no
 * control socket). Call after control_start, before the VM runs. */
int snapshot_cmds_register(struct machine *m, struct terr *err);
/* Once the VM has stopped (vm_wait returned) and before the control server
 * goes: waits for a save in progress to give up or finish. */
void snapshot_cmds_stop(struct machine *m);

#endif
