/* Guest RAM: one memfd holding all of the guest's RAM, mapped once into tern,
 * split into guest-physical regions (low RAM below the PCI hole, high RAM
 * above 4 GiB). Backing with a memfd lets RAM later be shared with another
 * process, replaced by a private mapping of a snapshot file, and tracked for
 * dirty pages per region (each region is one KVM memory slot). */
#ifndef TERN_CORE_MEMORY_H
#define TERN_CORE_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

#define GUEST_MEM_MAX_REGIONS 4

struct guest_region {
	uint64_t gpa;      /* guest-physical start */
	uint64_t size;     /* bytes, page multiple */
	uint64_t offset;   /* offset of this region in the backing fd / mapping */
	uint8_t *hva;      /* host address of gpa */
};

struct guest_mem {
	int fd;                /* memfd (or snapshot file for a lazy restore), -1 if none */
	bool memfd;            /* fd is our own memfd: holes in it are never-touched RAM */
	uint8_t *base;         /* mapping of all RAM, regions are slices of it */
	uint64_t size;         /* total RAM bytes */
	unsigned nregions;
	struct guest_region regions[GUEST_MEM_MAX_REGIONS];
	/* --- dirty tracking of tern's own writes (src/migration) --- */
	uint64_t *host_dirty;  /* one bit per page; allocated by the first
	                          tracking, freed with the memory */
	bool host_dirty_on;    /* atomic: guest_mem_note_write records */
	/* --- end dirty tracking --- */
};

/* Lay out `size` bytes of RAM (low RAM up to the PCI hole, the rest at 4 GiB),
 * back it with a fresh memfd and map it. */
int guest_mem_create(struct guest_mem *m, uint64_t size, struct terr *err);
void guest_mem_destroy(struct guest_mem *m);

/* Where restored RAM comes from: `size` bytes at `offset` of a snapshot file,
 * laid out like the memfd (regions back to back, zero pages as holes). */
struct guest_mem_source {
	int fd;
	uint64_t offset;
	bool eager;   /* read everything into a fresh memfd now */
	/* --- migration (src/migration) --- */
	bool anon;    /* fd unused: fresh private anonymous RAM with transparent
	                 huge pages, which a migration receiver fills (faulting
	                 2 MiB at a time is several times faster than a memfd's
	                 4 KiB pages on hosts without shmem huge pages) */
	/* --- end migration --- */
};

/* Lazy: map the file privately, pages fault in from it on first touch and
 * the file is never written. Eager: fresh memfd filled from the file's data
 * extents (holes are skipped). */
int guest_mem_create_from(struct guest_mem *m, uint64_t size, const struct guest_mem_source *src,
			  struct terr *err);

/* Region layout only (no allocation): fills regions[] and nregions. Used by
 * the loaders' unit tests and by restore, which maps RAM from a file. */
void guest_mem_layout(struct guest_mem *m, uint64_t size);

/* Host pointer for [gpa, gpa+len) if that range lies entirely inside one RAM
 * region, else NULL. Guest-controlled addresses always go through here. */
void *guest_mem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);

/* Copy to/from guest RAM; -EFAULT if the range is not entirely RAM. */
int guest_mem_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len);
int guest_mem_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len);

/* --- dirty tracking of tern's own writes (src/migration) ---
 * KVM's dirty log sees the guest's writes only. Code that writes guest RAM
 * from the host (a device filling a receive buffer, a used ring) calls this
 * AFTER the write, so that a migration in progress sends the page again.
 * hva..hva+len must lie in one RAM region (anything else is ignored); the
 * page recorded is the page of the backing (region offset), so regions need
 * not be slices of one mapping. Any thread may call it (the bits are set
 * atomically); one atomic load when no migration runs. The virtio devices
 * reach it through the virtqueue layer (vq_chain_copy_to, vq_chain_note_in,
 * the used-ring writes). */
void guest_mem_note_write_slow(const struct guest_mem *m, const void *hva, size_t len);
static inline void guest_mem_note_write(const struct guest_mem *m, const void *hva, size_t len)
{
	if (__atomic_load_n(&m->host_dirty_on, __ATOMIC_ACQUIRE) && len)
		guest_mem_note_write_slow(m, hva, len);
}
static inline bool guest_mem_tracking_host_writes(const struct guest_mem *m)
{
	return __atomic_load_n(&m->host_dirty_on, __ATOMIC_ACQUIRE);
}
/* Start (allocating the bitmap) or stop recording; a migration only.
 * Starting returns after every thread of the process has passed a full
 * memory barrier (membarrier), so a writer that still saw recording off
 * had its write visible before the caller reads any page: the cheap check
 * above needs no fence of its own. */
int guest_mem_track_host_writes(struct guest_mem *m, bool on);
/* Move the recorded bits of pages [first, first + 64 * nwords) of RAM (by
 * offset in the backing, first a multiple of 64) into out (OR), clearing
 * them. */
void guest_mem_take_host_writes(struct guest_mem *m, uint64_t first, uint64_t *out, size_t nwords);
/* --- end dirty tracking --- */

#endif
