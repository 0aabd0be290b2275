/* Snapshot save and restore of a whole machine: configuration, VM-wide and
 * per-vCPU KVM state, every device's state and guest RAM, in one file
 * (snapshot/snapfile.h). */
#ifndef TERN_SNAPSHOT_SNAPSHOT_H
#define TERN_SNAPSHOT_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "machine/machine.h"
#include "util/error.h"

typedef void (*snapshot_progress_fn)(void *opaque, uint64_t done, uint64_t total);

struct snapshot_stats {
	uint64_t ram_bytes;        /* guest RAM size */
	uint64_t data_bytes;       /* RAM bytes written (non-zero pages) */
	uint64_t file_bytes;       /* size of the file, holes included */
	uint64_t state_bytes;      /* header, sections and TOC */
	double paused_ms;          /* how long the guest was stopped */
	double total_ms;
	bool direct;               /* RAM went out with O_DIRECT (else through the page cache) */
};

/* Save the running or paused machine to `path`: pause every vCPU and
 * quiesce every device, write to a temporary name beside `path`, fsync,
 * rename over `path`, then resume (the caller keeps the VM paused by
 * holding its own vm_pause). On error `path` is untouched. */
int snapshot_save(struct machine *m, const char *path, snapshot_progress_fn progress,
		  void *opaque, struct snapshot_stats *stats, struct terr *err);

/* Rebuild a machine from a snapshot: its embedded configuration, then the
 * `noverrides` -o settings (host-specific ones such as disk paths and
 * console.path; memory.size and cpus cannot change), RAM mapped lazily or
 * read eagerly (snapshot.eager), and every section loaded. On success *cfg
 * (owned by the caller, to be freed after machine_destroy) and m are ready
 * for machine_run. Nothing runs on error. */
int snapshot_restore(const char *path, char **overrides, int noverrides, struct machine *m,
		     struct config **cfg, struct terr *err);

/* ---- the pieces, for migration and tests --------------------------- */

struct snapshot;

/* Append every section of the machine to s (a writer: snap_init_writer):
 * "config" (the whole configuration, defaults filled in), "vm", "vcpu.N",
 * one per device (its id, kind = device type), and "ram" (the RAM layout,
 * not the bytes). The VM must be paused (vm_pause) for the whole call. */
int snapshot_build_sections(struct machine *m, struct snapshot *s, struct terr *err);

/* The configuration a snapshot embeds, with `noverrides` -o settings applied
 * (memory.size and cpus cannot change). `name` is for messages. */
int snapshot_config(const struct snapshot *s, const char *name, char **overrides, int noverrides,
		    struct config **out, struct terr *err);

/* Load every section into a machine built (machine_build with a restore
 * source) from snapshot_config's configuration, before it runs: the ram
 * layout is checked against the machine's RAM, then vm, vcpu.N and every
 * device. A section of a device the machine does not have, or a device
 * without a section, is an error; so is a section whose min_version is
 * above what this tern reads (the message names the section and both
 * versions). */
int snapshot_apply_sections(const struct snapshot *s, struct machine *m, struct terr *err);

#endif
