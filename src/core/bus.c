#include "core/bus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void bus_init(struct bus *b, const char *name)
{
	memset(b, 0, sizeof(*b));
	b->name = name;
	pthread_rwlock_init(&b->lock, NULL);
}

void bus_destroy(struct bus *b)
{
	free(b->ranges);
	b->ranges = NULL;
	b->n = b->cap = 0;
	pthread_rwlock_destroy(&b->lock);
}

int bus_register(struct bus *b, uint64_t base, uint64_t len, bus_read_fn rd, bus_write_fn wr,
		 void *opaque, const char *owner, struct terr *err)
{
	int r = 0;

	if (len == 0 || base + len - 1 < base)
		return terr_set(err, EINVAL, "%s: %s range at 0x%llx has a bad length 0x%llx", owner,
				b->name, (unsigned long long)base, (unsigned long long)len);
	pthread_rwlock_wrlock(&b->lock);
	unsigned pos = 0;
	while (pos < b->n && b->ranges[pos].base < base)
		pos++;
	const struct bus_range *prev = pos ? &b->ranges[pos - 1] : NULL;
	const struct bus_range *next = pos < b->n ? &b->ranges[pos] : NULL;
	const struct bus_range *clash = NULL;
	if (prev && prev->base + prev->len > base)
		clash = prev;
	else if (next && next->base <= base + len - 1)
		clash = next;
	if (clash) {
		r = terr_set(err, EBUSY, "%s: %s range 0x%llx-0x%llx overlaps %s at 0x%llx-0x%llx",
			     owner, b->name, (unsigned long long)base,
			     (unsigned long long)(base + len - 1), clash->owner,
			     (unsigned long long)clash->base,
			     (unsigned long long)(clash->base + clash->len - 1));
		goto out;
	}
	if (b->n == b->cap) {
		unsigned cap = b->cap ? b->cap * 2 : 16;
		struct bus_range *nr = realloc(b->ranges, cap * sizeof(*nr));
		if (!nr) {
			r = terr_set(err, ENOMEM, "%s: out of memory", owner);
			goto out;
		}
		b->ranges = nr;
		b->cap = cap;
	}
	memmove(&b->ranges[pos + 1], &b->ranges[pos], (b->n - pos) * sizeof(*b->ranges));
	b->ranges[pos] = (struct bus_range){ base, len, rd, wr, opaque, owner };
	b->n++;
out:
	pthread_rwlock_unlock(&b->lock);
	return r;
}

int bus_unregister(struct bus *b, uint64_t base, void *opaque)
{
	int r = -ENOENT;
	pthread_rwlock_wrlock(&b->lock);
	for (unsigned i = 0; i < b->n; i++) {
		if (b->ranges[i].base == base && b->ranges[i].opaque == opaque) {
			memmove(&b->ranges[i], &b->ranges[i + 1], (b->n - i - 1) * sizeof(*b->ranges));
			b->n--;
			r = 0;
			break;
		}
	}
	pthread_rwlock_unlock(&b->lock);
	return r;
}

static const struct bus_range *bus_find(const struct bus *b, uint64_t addr)
{
	unsigned lo = 0, hi = b->n;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		const struct bus_range *rg = &b->ranges[mid];
		if (addr < rg->base)
			hi = mid;
		else if (addr - rg->base >= rg->len)
			lo = mid + 1;
		else
			return rg;
	}
	return NULL;
}

/* The range is copied out and the lock dropped before the callback runs, so a
 * device may move its own ranges from inside an access (a PCI BAR write that
 * arrives through ECAM on the same bus). Devices live as long as the VM. */
static int bus_lookup(struct bus *b, uint64_t addr, struct bus_range *out)
{
	pthread_rwlock_rdlock(&b->lock);
	const struct bus_range *rg = bus_find(b, addr);
	if (rg)
		*out = *rg;
	pthread_rwlock_unlock(&b->lock);
	return rg ? 0 : -ENOENT;
}

int bus_read(struct bus *b, uint64_t addr, void *data, unsigned size)
{
	struct bus_range rg;
	if (bus_lookup(b, addr, &rg) || !rg.read) {
		memset(data, 0xff, size);
		return -ENOENT;
	}
	rg.read(rg.opaque, addr - rg.base, data, size);
	return 0;
}

int bus_write(struct bus *b, uint64_t addr, const void *data, unsigned size)
{
	struct bus_range rg;
	if (bus_lookup(b, addr, &rg))
		return -ENOENT;
	if (rg.write)
		rg.write(rg.opaque, addr - rg.base, data, size);
	return 0;
}
