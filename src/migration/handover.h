/* The disk lock handover between two tern processes (protocol 2,
 * docs/migration-protocol.md): every device that holds something only one
 * process may hold (a writable disk's image lock) gives it up on the
 * source and takes it on the destination, through the device ops release
 * and acquire (src/core/device.h). */
#ifndef TERN_MIGRATION_HANDOVER_H
#define TERN_MIGRATION_HANDOVER_H

#include "util/error.h"

struct vm;

/* How long a side waits for the other to let go of a lock: the
 * destination once the source said RELEASED (at once on one host; shared
 * storage may lag); the source taking its locks back after a failure (the
 * destination may still be exiting). */
#define MIG_LOCK_WAIT_DEST_MS   3000
#define MIG_LOCK_WAIT_SOURCE_MS 10000

/* The VM is paused. Releases in device order; stops at the first failure
 * (err names the device): mig_acquire_all takes back what was released. */
int mig_release_all(struct vm *vm, struct terr *err);
/* Takes every device's resources (those it already holds: nothing to do);
 * tries them all, err names the first failure. */
int mig_acquire_all(struct vm *vm, unsigned timeout_ms, struct terr *err);

#endif
