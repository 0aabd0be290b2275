/* SPDX-License-Identifier: MIT */
#include "qcow2_cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk_int.h"

static unsigned hslot(const struct qc_cache *c, uint64_t off)
{
	uint64_t h = off / c->entry_size;
	h *= 0x9e3779b97f4a7c15ull;
	return (unsigned)(h >> 32) & c->hmask;
}

int qc_cache_init(struct qc_cache *c, size_t entry_size, unsigned n,
                  qc_writeback_fn wb, void *opaque)
{
	memset(c, 0, sizeof(*c));
	if (n < 4)
		n = 4;
	c->entry_size = entry_size;
	c->n = n;
	c->writeback = wb;
	c->opaque = opaque;
	unsigned hs = 1;
	while (hs < n * 2)
		hs <<= 1;
	c->hmask = hs - 1;
	c->e = calloc(n, sizeof(*c->e));
	c->hash = malloc(sizeof(*c->hash) * hs);
	if (!c->e || !c->hash) {
		qc_cache_destroy(c);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < hs; i++)
		c->hash[i] = -1;
	for (unsigned i = 0; i < n; i++)
		c->e[i].off = UINT64_MAX;
	return 0;
}

void qc_cache_destroy(struct qc_cache *c)
{
	if (c->e)
		for (unsigned i = 0; i < c->n; i++)
			free(c->e[i].data);
	free(c->e);
	free(c->hash);
	c->e = NULL;
	c->hash = NULL;
}

static int lookup(const struct qc_cache *c, uint64_t off)
{
	for (int32_t i = c->hash[hslot(c, off)]; i >= 0; i = c->e[i].hnext)
		if (c->e[i].off == off)
			return i;
	return -1;
}

static void unhash(struct qc_cache *c, unsigned idx)
{
	int32_t *pp = &c->hash[hslot(c, c->e[idx].off)];
	while (*pp >= 0) {
		if ((unsigned)*pp == idx) {
			*pp = c->e[idx].hnext;
			break;
		}
		pp = &c->e[*pp].hnext;
	}
	c->e[idx].off = UINT64_MAX;
}

static int victim(struct qc_cache *c, unsigned *out)
{
	if (c->used < c->n) {
		*out = c->used++;
		return 0;
	}
	/* clock; prefer clean entries on the first two sweeps */
	for (unsigned pass = 0; pass < 4 * c->n; pass++) {
		unsigned i = c->hand;
		c->hand = (c->hand + 1) % c->n;
		struct qc_entry *e = &c->e[i];
		if (e->ref) {
			e->ref = false;
			continue;
		}
		if (e->dirty && pass < 2 * c->n)
			continue;
		if (e->dirty && c->flush_all) {
			int r = c->flush_all(c->opaque, c);
			if (r < 0)
				return r;
		}
		if (e->dirty) {
			int r = c->writeback(c->opaque, c, i);
			if (r < 0)
				return r;
		}
		unhash(c, i);
		*out = i;
		return 0;
	}
	return -EIO;
}

int qc_cache_get(struct qc_cache *c, int fd, uint64_t off, bool fresh,
                 uint8_t **data, unsigned *idx)
{
	int i = lookup(c, off);
	if (i >= 0) {
		c->e[i].ref = true;
		if (fresh)
			memset(c->e[i].data, 0, c->entry_size);
		*data = c->e[i].data;
		*idx = (unsigned)i;
		return 0;
	}
	unsigned v;
	int r = victim(c, &v);
	if (r < 0)
		return r;
	struct qc_entry *e = &c->e[v];
	if (!e->data) {
		e->data = malloc(c->entry_size);
		if (!e->data)
			return -ENOMEM;
	}
	if (fresh)
		memset(e->data, 0, c->entry_size);
	else if ((r = vd_pread_zero(fd, e->data, c->entry_size, off)) < 0)
		return r;
	e->off = off;
	e->dirty = false;
	e->ref = true;
	unsigned h = hslot(c, off);
	e->hnext = c->hash[h];
	c->hash[h] = (int32_t)v;
	*data = e->data;
	*idx = v;
	return 0;
}

void qc_cache_mark_dirty(struct qc_cache *c, unsigned idx)
{
	if (!c->e[idx].dirty) {
		c->e[idx].dirty = true;
		c->ndirty++;
	}
}

int qc_cache_flush(struct qc_cache *c)
{
	if (!c->ndirty)
		return 0;
	for (unsigned i = 0; i < c->used; i++) {
		if (c->e[i].dirty && c->e[i].off != UINT64_MAX) {
			int r = c->writeback(c->opaque, c, i);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

void qc_cache_discard(struct qc_cache *c, uint64_t off, uint64_t len)
{
	for (unsigned i = 0; i < c->used; i++) {
		struct qc_entry *e = &c->e[i];
		if (e->off != UINT64_MAX && e->off >= off && e->off < off + len) {
			if (e->dirty) {
				e->dirty = false;
				c->ndirty--;
			}
			unhash(c, i);
		}
	}
}
