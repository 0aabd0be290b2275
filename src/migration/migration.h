/* Warm and live migration of a machine to another tern
 * (docs/migration-protocol.md).
 *
 * Source: migration_send (or the control commands migrate, migrate-status,
 * migrate-cancel) connects to a `tern receive`, checks compatibility, sends
 * the configuration, then guest RAM - all of it with the guest paused
 * (warm), or in pre-copy rounds while it runs (live: KVM's dirty log,
 * rounds until the predicted downtime fits the limit, throttling a guest
 * that dirties faster than the link drains) - then, paused, the last dirty
 * pages and every vCPU's and device's state. Only once the destination says
 * it has everything does the source give the guest up: after that it never
 * runs here again. Any failure before that point (the destination gone, the
 * connection dropped, a cancel, the timeout) leaves it running as before.
 *
 * Destination: migration_receive listens, builds the machine from the
 * configuration it is sent (with local -o overrides), fills its RAM, loads
 * the state, and starts the guest only when told to; anything else ends it
 * with exit status 1 and nothing started. */
#ifndef TERN_MIGRATION_MIGRATION_H
#define TERN_MIGRATION_MIGRATION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

struct machine;

#define MIG_DEFAULT_DOWNTIME_MS  100

struct mig_params {
	char dest[512];                /* tcp:HOST:PORT or unix:PATH */
	bool live;                     /* false: warm */
	uint64_t max_bandwidth;        /* bytes/s over any one-second window; 0 = unlimited */
	uint32_t downtime_limit_ms;    /* live: target for the final stop-and-copy */
	uint32_t timeout_s;            /* give up after this long; 0 = never */
	bool zstd;                     /* compress RAM frames */
};

enum mig_state {
	MIG_S_NONE,          /* no migration yet */
	MIG_S_SETUP,         /* connecting, handshake, configuration */
	MIG_S_PRECOPY,       /* live rounds, the guest runs */
	MIG_S_STOPPED,       /* the guest is paused: last pages, state, handover */
	MIG_S_COMPLETED,     /* the guest runs on the destination */
	MIG_S_FAILED,        /* the guest runs here as before (or see error) */
	MIG_S_CANCELLED,
};
const char *mig_state_name(enum mig_state s);

struct mig_stats {
	enum mig_state state;
	bool live;
	unsigned round;                /* 1 = the full pass */
	double elapsed_ms;             /* since the start (final once ended) */
	double setup_ms;               /* connect, handshake, destination built */
	double downtime_ms;            /* guest paused here until it ran there (measured) */
	double expected_downtime_ms;   /* prediction of the last round */
	uint64_t ram_bytes;            /* guest RAM size */
	uint64_t bytes_sent;           /* everything written to the connection */
	uint64_t remaining_bytes;      /* RAM still to send, as known now */
	uint64_t dirty_rate;           /* bytes/s the guest dirtied in the last round */
	uint64_t bandwidth;            /* bytes/s measured */
	uint64_t pages_data, pages_zero;
	uint64_t state_bytes;          /* vCPU and device state */
	unsigned throttle_pct;         /* auto-converge: share of time the vCPUs are held */
	uint64_t max_window_bytes;     /* most bytes sent in any one-second window */
	bool committed;                /* the destination owns the guest */
	char error[512];
};

/* Run a migration of m on the calling thread (tests; the control command
 * runs it on a worker). *cancel stops it (from any thread), *stats follows
 * it when progress is set. Returns 0 once the guest runs on the
 * destination: m's VM is then left paused for ever (the caller must not
 * resume it). On failure the VM runs as before. */
typedef void (*mig_progress_fn)(void *opaque, const struct mig_stats *st);
int migration_send(struct machine *m, const struct mig_params *p, atomic_bool *cancel,
		   mig_progress_fn progress, void *opaque, struct mig_stats *stats,
		   struct terr *err);

/* The control commands on m->control (nothing without a socket). */
int migration_cmds_register(struct machine *m, struct terr *err);
/* After vm_wait, before the control server goes: stops and joins a
 * migration in progress. */
void migration_cmds_stop(struct machine *m);

/* tern receive: listen on `listen` (tcp:HOST:PORT, port 0 = any, or
 * unix:PATH), take one migration, run the guest; returns tern's exit
 * status (1 when the migration did not complete). */
int migration_receive(const char *listen, char **overrides, int noverrides);

#endif
