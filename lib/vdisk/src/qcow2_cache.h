/* SPDX-License-Identifier: MIT */
/* A write-back cache of fixed-size metadata pieces (L2 slices, refblocks),
 * keyed by host offset, with clock replacement. Not locked: the qcow2
 * metadata lock protects it. */
#ifndef VDISK_QCOW2_CACHE_H
#define VDISK_QCOW2_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qc_cache;
typedef int (*qc_writeback_fn)(void *opaque, struct qc_cache *c, unsigned idx);

struct qc_entry {
	uint64_t off;        /* host offset, UINT64_MAX when empty */
	uint8_t *data;
	bool dirty, ref;
	int32_t hnext;
};

struct qc_cache {
	size_t entry_size;
	unsigned n, used, hand;
	struct qc_entry *e;
	int32_t *hash;
	unsigned hmask;
	unsigned ndirty;
	qc_writeback_fn writeback;
	/* optional: write back every dirty entry at once (one ordering sync
	 * for the lot instead of one per evicted entry) */
	int (*flush_all)(void *opaque, struct qc_cache *c);
	void *opaque;
};

int qc_cache_init(struct qc_cache *c, size_t entry_size, unsigned n,
                  qc_writeback_fn wb, void *opaque);
void qc_cache_destroy(struct qc_cache *c);
/* Get the piece at off; load it from fd unless `fresh` (then zero it).
 * The pointer is valid until the next cache call. */
int qc_cache_get(struct qc_cache *c, int fd, uint64_t off, bool fresh,
                 uint8_t **data, unsigned *idx);
void qc_cache_mark_dirty(struct qc_cache *c, unsigned idx);
/* Write back every dirty entry through the writeback callback. */
int qc_cache_flush(struct qc_cache *c);
/* Drop entries in [off, off+len) without writing them. */
void qc_cache_discard(struct qc_cache *c, uint64_t off, uint64_t len);

#endif
