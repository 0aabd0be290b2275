/* An address bus (port I/O or MMIO): devices register ranges with access
 * callbacks; vCPU exits are dispatched to the range that holds the address.
 * Ranges may be added and removed while vCPUs run (PCI BAR moves), so lookups
 * take a read lock. */
#ifndef TERN_CORE_BUS_H
#define TERN_CORE_BUS_H

#include <pthread.h>
#include <stdint.h>

#include "util/error.h"

/* offset is relative to the range's base; size is 1, 2, 4 or 8. */
typedef void (*bus_read_fn)(void *opaque, uint64_t offset, void *data, unsigned size);
typedef void (*bus_write_fn)(void *opaque, uint64_t offset, const void *data, unsigned size);

struct bus_range {
	uint64_t base, len;
	bus_read_fn read;
	bus_write_fn write;
	void *opaque;
	const char *owner;   /* device id, for messages */
};

struct bus {
	const char *name;    /* "pio" or "mmio" */
	pthread_rwlock_t lock;
	struct bus_range *ranges;   /* sorted by base, never overlapping */
	unsigned n, cap;
};

void bus_init(struct bus *b, const char *name);
void bus_destroy(struct bus *b);
/* Fails with an error naming both owners if [base, base+len) overlaps a range. */
int bus_register(struct bus *b, uint64_t base, uint64_t len, bus_read_fn rd, bus_write_fn wr,
		 void *opaque, const char *owner, struct terr *err);
int bus_unregister(struct bus *b, uint64_t base, void *opaque);
/* Returns 0 when a range handled the access, -ENOENT when none holds addr
 * (reads then see all ones). */
int bus_read(struct bus *b, uint64_t addr, void *data, unsigned size);
int bus_write(struct bus *b, uint64_t addr, const void *data, unsigned size);

#endif
