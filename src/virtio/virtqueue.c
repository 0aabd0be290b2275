#include "virtio/virtqueue.h"
#include "util/log.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ring layout (virtio 1.x, 2.7): sizes in bytes for a queue of n entries. */
#define DESC_SIZE 16u
#define AVAIL_BYTES(n) (6u + 2u * (uint32_t)(n))   /* flags, idx, ring[n], used_event */
#define USED_BYTES(n)  (6u + 8u * (uint32_t)(n))   /* flags, idx, ring[n], avail_event */

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};

/* --- guest memory accessors (ring fields are naturally aligned, checked in
 * validate()) --- */

static inline uint16_t ld16_acquire(const uint8_t *p)
{
	return le16toh(__atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_ACQUIRE));
}

static inline uint16_t ld16(const uint8_t *p)
{
	return le16toh(__atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_RELAXED));
}

/* Every store into the used ring is recorded for a live migration (after
 * the store; one atomic load when no migration runs). */
static inline void st16(const struct virtqueue *vq, uint8_t *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)(void *)p, htole16(v), __ATOMIC_RELAXED);
	guest_mem_note_write(vq->mem, p, 2);
}

static inline void st16_release(const struct virtqueue *vq, uint8_t *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)(void *)p, htole16(v), __ATOMIC_RELEASE);
	guest_mem_note_write(vq->mem, p, 2);
}

/* A used element: id and len. */
static inline void st_elem(const struct virtqueue *vq, uint8_t *e, uint32_t id, uint32_t len)
{
	__atomic_store_n((uint32_t *)(void *)e, htole32(id), __ATOMIC_RELAXED);
	__atomic_store_n((uint32_t *)(void *)(e + 4), htole32(len), __ATOMIC_RELAXED);
	guest_mem_note_write(vq->mem, e, 8);
}

/* Fetch a descriptor exactly once: copy it, then a compiler barrier so every
 * later use reads the copy and never the guest's memory again (which the
 * guest may change between a check and a use). Indirect tables need not be
 * aligned, hence memcpy. */
static void fetch_desc(const uint8_t *p, struct desc *d)
{
	uint8_t raw[DESC_SIZE];
	memcpy(raw, p, sizeof(raw));
	__asm__ __volatile__("" : : "r"(raw) : "memory");
	uint64_t a;
	uint32_t l;
	uint16_t f, n;
	memcpy(&a, raw, 8);
	memcpy(&l, raw + 8, 4);
	memcpy(&f, raw + 12, 2);
	memcpy(&n, raw + 14, 2);
	d->addr = le64toh(a);
	d->len = le32toh(l);
	d->flags = le16toh(f);
	d->next = le16toh(n);
}

static inline bool has_feature(const struct virtqueue *vq, unsigned bit)
{
	return vq->features & (1ull << bit);
}

static inline uint8_t *avail_ring(const struct virtqueue *vq, uint16_t slot)
{
	return vq->avail + 4 + 2u * slot;
}

static inline uint8_t *used_event_ptr(const struct virtqueue *vq)
{
	return vq->avail + 4 + 2u * vq->size;
}

static inline uint8_t *avail_event_ptr(const struct virtqueue *vq)
{
	return vq->used + 4 + 8u * vq->size;
}

/* --- errors --- */

static void vq_vfail(struct virtqueue *vq, const char *fmt, va_list ap)
{
	vq->nviolations++;
	if (vq->broken)
		return;
	vq->broken = true;
	vq->ready = false;
	if (!vq->logged) {
		char msg[256];
		vsnprintf(msg, sizeof(msg), fmt, ap);
		log_warn("virtio", "%s: %s; the queue is stopped until the driver resets the "
			 "device (further errors on this queue are not logged)", vq->name, msg);
		vq->logged = true;
	}
	if (vq->on_broken)
		vq->on_broken(vq->opaque, vq);
}

void vq_fail(struct virtqueue *vq, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vq_vfail(vq, fmt, ap);
	va_end(ap);
}

/* --- life cycle --- */

static bool is_pow2(unsigned v)
{
	return v && !(v & (v - 1));
}

int vq_init(struct virtqueue *vq, const struct guest_mem *mem, uint16_t max_size,
	    const char *name, vq_broken_fn on_broken, void *opaque)
{
	memset(vq, 0, sizeof(*vq));
	if (!is_pow2(max_size))
		return -EINVAL;
	vq->mem = mem;
	vq->max_size = max_size;
	snprintf(vq->name, sizeof(vq->name), "%s", name ? name : "virtqueue");
	vq->on_broken = on_broken;
	vq->opaque = opaque;
	vq_reset(vq);
	return 0;
}

void vq_reset(struct virtqueue *vq)
{
	vq->size = vq->max_size;
	vq->desc_gpa = vq->avail_gpa = vq->used_gpa = 0;
	vq->msix_vector = VIRTIO_MSI_NO_VECTOR;
	vq->enabled = false;
	vq->features = 0;
	vq->last_avail_idx = 0;
	vq->used_idx = 0;
	vq->signalled_used = 0;
	vq->signalled_used_valid = false;
	vq->notify_enabled = true;
	vq->broken = false;
	vq->desc = vq->avail = vq->used = NULL;
	vq->ready = false;
	/* logged and nviolations survive: a guest resetting in a loop must not
	 * be able to flood the log. */
}

/* Map one ring: aligned in guest-physical terms (the spec's rule) and in
 * host terms (so the atomic accesses are aligned), all inside one region. */
static uint8_t *map_ring(struct virtqueue *vq, const char *what, uint64_t gpa, uint32_t len,
			 unsigned align)
{
	if (gpa & (align - 1)) {
		vq_fail(vq, "%s at 0x%llx is not %u-byte aligned", what, (unsigned long long)gpa, align);
		return NULL;
	}
	uint8_t *p = guest_mem_ptr(vq->mem, gpa, len);
	if (!p) {
		vq_fail(vq, "%s at 0x%llx (%u bytes) is not inside one guest RAM region", what,
			(unsigned long long)gpa, len);
		return NULL;
	}
	if ((uintptr_t)p & (align - 1)) {
		vq_fail(vq, "%s at 0x%llx is not %u-byte aligned in host memory", what,
			(unsigned long long)gpa, align);
		return NULL;
	}
	return p;
}

static int validate(struct virtqueue *vq)
{
	if (!is_pow2(vq->size) || vq->size > vq->max_size) {
		vq_fail(vq, "queue size %u is not a power of two no larger than %u", vq->size,
			vq->max_size);
		return -EINVAL;
	}
	uint8_t *d = map_ring(vq, "descriptor table", vq->desc_gpa, DESC_SIZE * vq->size, 16);
	if (!d)
		return -EINVAL;
	uint8_t *a = map_ring(vq, "available ring", vq->avail_gpa, AVAIL_BYTES(vq->size), 2);
	if (!a)
		return -EINVAL;
	uint8_t *u = map_ring(vq, "used ring", vq->used_gpa, USED_BYTES(vq->size), 4);
	if (!u)
		return -EINVAL;
	vq->desc = d;
	vq->avail = a;
	vq->used = u;
	vq->ready = true;
	return 0;
}

int vq_enable(struct virtqueue *vq, uint64_t features)
{
	if (vq->broken)
		return -EIO;
	vq->enabled = true;
	vq->features = features & ((1ull << VIRTIO_F_INDIRECT_DESC) | (1ull << VIRTIO_F_EVENT_IDX));
	vq->signalled_used_valid = false;
	return validate(vq);
}

/* --- chains --- */

void vq_chain_init(struct vq_chain *c)
{
	memset(c, 0, sizeof(*c));
}

void vq_chain_free(struct vq_chain *c)
{
	free(c->iov);
	memset(c, 0, sizeof(*c));
}

static int chain_add(struct vq_chain *c, void *p, uint32_t len)
{
	unsigned n = c->nout + c->nin;
	if (n == c->cap) {
		unsigned cap = c->cap ? c->cap * 2 : 8;
		struct iovec *iov = realloc(c->iov, cap * sizeof(*iov));
		if (!iov)
			return -ENOMEM;
		c->iov = iov;
		c->cap = cap;
	}
	c->iov[n].iov_base = p;
	c->iov[n].iov_len = len;
	return 0;
}

bool vq_has_avail(struct virtqueue *vq)
{
	if (!vq->ready)
		return false;
	return ld16_acquire(vq->avail + 2) != vq->last_avail_idx;
}

/* Walk the chain at `head` into c. Returns 0, -EIO (violation, queue broken)
 * or -ENOMEM (host; the chain stays in the ring). */
static int walk(struct virtqueue *vq, uint16_t head, struct vq_chain *c)
{
	const uint8_t *table = vq->desc;
	unsigned tsize = vq->size;   /* descriptors in the current table */
	unsigned count = 0;          /* descriptors visited in the current table */
	bool indirect = false, seen_write = false;
	uint64_t total = 0;
	uint16_t idx = head;
	struct desc d;

	c->mem = vq->mem;
	c->head = head;
	c->nout = c->nin = 0;
	c->out_len = c->in_len = 0;
	for (;;) {
		if (++count > tsize) {
			vq_fail(vq, "descriptor chain at head %u loops (more than %u descriptors%s)",
				head, tsize, indirect ? " in its indirect table" : "");
			return -EIO;
		}
		fetch_desc(table + DESC_SIZE * idx, &d);

		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (!has_feature(vq, VIRTIO_F_INDIRECT_DESC)) {
				vq_fail(vq, "head %u: indirect descriptor without VIRTIO_F_INDIRECT_DESC", head);
				return -EIO;
			}
			if (indirect) {
				vq_fail(vq, "head %u: nested indirect descriptor", head);
				return -EIO;
			}
			if (d.flags & VIRTQ_DESC_F_NEXT) {
				vq_fail(vq, "head %u: indirect descriptor with NEXT set", head);
				return -EIO;
			}
			if (d.len == 0 || d.len % DESC_SIZE) {
				vq_fail(vq, "head %u: indirect table of %u bytes (not a non-zero multiple of 16)",
					head, d.len);
				return -EIO;
			}
			if (d.len / DESC_SIZE > vq->size) {
				vq_fail(vq, "head %u: indirect table of %u descriptors, more than the queue size %u",
					head, d.len / DESC_SIZE, vq->size);
				return -EIO;
			}
			table = guest_mem_ptr(vq->mem, d.addr, d.len);
			if (!table) {
				vq_fail(vq, "head %u: indirect table at 0x%llx (%u bytes) is not inside one guest "
					"RAM region", head, (unsigned long long)d.addr, d.len);
				return -EIO;
			}
			tsize = d.len / DESC_SIZE;
			indirect = true;
			count = 0;
			idx = 0;
			continue;
		}

		if (d.flags & VIRTQ_DESC_F_WRITE) {
			seen_write = true;
			if (d.len) {
				void *p = guest_mem_ptr(vq->mem, d.addr, d.len);
				if (!p)
					goto outside;
				if (chain_add(c, p, d.len))
					return -ENOMEM;
				c->nin++;
			}
		} else {
			if (seen_write) {
				vq_fail(vq, "head %u: device-readable descriptor after a device-writable one", head);
				return -EIO;
			}
			if (d.len) {
				void *p = guest_mem_ptr(vq->mem, d.addr, d.len);
				if (!p)
					goto outside;
				if (chain_add(c, p, d.len))
					return -ENOMEM;
				c->nout++;
			}
		}
		total += d.len;
		if (total > UINT32_MAX) {
			vq_fail(vq, "head %u: descriptor chain longer than 4 GiB", head);
			return -EIO;
		}
		if (d.flags & VIRTQ_DESC_F_WRITE)
			c->in_len += d.len;
		else
			c->out_len += d.len;

		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		if (d.next >= tsize) {
			vq_fail(vq, "head %u: next index %u is outside the %s of %u descriptors", head,
				d.next, indirect ? "indirect table" : "descriptor table", tsize);
			return -EIO;
		}
		idx = d.next;
	}
outside:
	vq_fail(vq, "head %u: buffer at 0x%llx (%u bytes) is not inside one guest RAM region", head,
		(unsigned long long)d.addr, d.len);
	return -EIO;
}

int vq_pop(struct virtqueue *vq, struct vq_chain *c)
{
	if (!vq->ready)
		return -EIO;
	uint16_t avail_idx = ld16_acquire(vq->avail + 2);
	uint16_t pending = (uint16_t)(avail_idx - vq->last_avail_idx);
	if (pending == 0)
		return 0;
	if (pending > vq->size) {
		vq_fail(vq, "available index %u is %u entries ahead of %u, more than the queue size %u",
			avail_idx, pending, vq->last_avail_idx, vq->size);
		return -EIO;
	}
	/* The acquire on avail->idx orders this read after the driver's write. */
	uint16_t head = ld16(avail_ring(vq, vq->last_avail_idx & (vq->size - 1)));
	if (head >= vq->size) {
		vq_fail(vq, "available ring entry %u names descriptor %u, outside the table of %u",
			vq->last_avail_idx, head, vq->size);
		return -EIO;
	}
	int r = walk(vq, head, c);
	if (r)
		return r;
	vq->last_avail_idx++;
	if (has_feature(vq, VIRTIO_F_EVENT_IDX) && vq->notify_enabled)
		st16(vq, avail_event_ptr(vq), vq->last_avail_idx);
	return 1;
}

int vq_push(struct virtqueue *vq, uint16_t head, uint32_t written)
{
	if (!vq->ready)
		return -EIO;
	if (head >= vq->size)
		return -EINVAL;
	uint8_t *e = vq->used + 4 + 8u * (vq->used_idx & (vq->size - 1));
	st_elem(vq, e, head, written);
	uint16_t old = vq->used_idx, new = (uint16_t)(old + 1);
	vq->used_idx = new;
	/* If notifications were suppressed for so long that the free-running
	 * index wrapped past the last signalled value, the comparison in
	 * vq_should_notify would be wrong: forget the old value. */
	if ((int16_t)(new - vq->signalled_used) < (uint16_t)(new - old))
		vq->signalled_used_valid = false;
	/* Element before index: the driver reads idx with acquire. */
	st16_release(vq, vq->used + 2, new);
	return 0;
}

int vq_push_batch(struct virtqueue *vq, const uint16_t *heads, const uint32_t *lens, unsigned n)
{
	if (!vq->ready)
		return -EIO;
	if (n > vq->size)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++)
		if (heads[i] >= vq->size)
			return -EINVAL;
	uint16_t old = vq->used_idx, new = (uint16_t)(old + n);
	for (unsigned i = 0; i < n; i++) {
		uint8_t *e = vq->used + 4 + 8u * ((uint16_t)(old + i) & (vq->size - 1));
		st_elem(vq, e, heads[i], lens[i]);
	}
	vq->used_idx = new;
	if ((int16_t)(new - vq->signalled_used) < (uint16_t)(new - old))
		vq->signalled_used_valid = false;
	/* Elements before index, once for all of them. */
	st16_release(vq, vq->used + 2, new);
	return 0;
}

void vq_unpop(struct virtqueue *vq, unsigned n)
{
	/* The chains are walked again (and re-validated) when popped again; a
	 * stale avail_event only means the driver kicks later, and the caller
	 * re-enables notifications when it waits for more buffers. */
	vq->last_avail_idx = (uint16_t)(vq->last_avail_idx - n);
}

/* virtio 1.x 2.7.7.2: notify when the used index passed used_event. */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

bool vq_should_notify(struct virtqueue *vq)
{
	if (!vq->ready)
		return false;
	/* used->idx must be visible before we read the driver's suppression
	 * state, or we may miss an interrupt the driver asked for. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (has_feature(vq, VIRTIO_F_EVENT_IDX)) {
		bool valid = vq->signalled_used_valid;
		uint16_t old = vq->signalled_used;
		vq->signalled_used = vq->used_idx;
		vq->signalled_used_valid = true;
		return !valid || need_event(ld16(used_event_ptr(vq)), vq->used_idx, old);
	}
	return !(ld16(vq->avail) & VIRTQ_AVAIL_F_NO_INTERRUPT);
}

void vq_notify_disable(struct virtqueue *vq)
{
	vq->notify_enabled = false;
	if (vq->ready && !has_feature(vq, VIRTIO_F_EVENT_IDX))
		st16(vq, vq->used, VIRTQ_USED_F_NO_NOTIFY);
}

bool vq_notify_enable(struct virtqueue *vq)
{
	vq->notify_enabled = true;
	if (!vq->ready)
		return false;
	if (has_feature(vq, VIRTIO_F_EVENT_IDX))
		st16(vq, avail_event_ptr(vq), ld16(vq->avail + 2));
	else
		st16(vq, vq->used, 0);
	/* Publish before re-reading avail->idx: a buffer added meanwhile was
	 * either seen here or the driver saw our request and kicks. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return vq_has_avail(vq);
}

uint32_t vq_chain_copy_from(const struct vq_chain *c, uint32_t off, void *dst, uint32_t len)
{
	uint32_t done = 0;
	for (unsigned i = 0; i < c->nout && done < len; i++) {
		uint32_t l = (uint32_t)c->iov[i].iov_len;
		if (off >= l) {
			off -= l;
			continue;
		}
		uint32_t n = l - off < len - done ? l - off : len - done;
		memcpy((uint8_t *)dst + done, (uint8_t *)c->iov[i].iov_base + off, n);
		done += n;
		off = 0;
	}
	return done;
}

uint32_t vq_chain_copy_to(const struct vq_chain *c, uint32_t off, const void *src, uint32_t len)
{
	uint32_t done = 0;
	for (unsigned i = c->nout; i < c->nout + c->nin && done < len; i++) {
		uint32_t l = (uint32_t)c->iov[i].iov_len;
		if (off >= l) {
			off -= l;
			continue;
		}
		uint32_t n = l - off < len - done ? l - off : len - done;
		memcpy((uint8_t *)c->iov[i].iov_base + off, (const uint8_t *)src + done, n);
		if (c->mem)
			guest_mem_note_write(c->mem, (uint8_t *)c->iov[i].iov_base + off, n);
		done += n;
		off = 0;
	}
	return done;
}

void vq_chain_note_in(const struct vq_chain *c, uint32_t off, uint32_t len)
{
	if (!c->mem || !guest_mem_tracking_host_writes(c->mem))
		return;
	uint32_t done = 0;
	for (unsigned i = c->nout; i < c->nout + c->nin && done < len; i++) {
		uint32_t l = (uint32_t)c->iov[i].iov_len;
		if (off >= l) {
			off -= l;
			continue;
		}
		uint32_t n = l - off < len - done ? l - off : len - done;
		guest_mem_note_write(c->mem, (uint8_t *)c->iov[i].iov_base + off, n);
		done += n;
		off = 0;
	}
}

/* --- save / load --- */

void vq_save(const struct virtqueue *vq, struct state_writer *w)
{
	sw_uint(w, "size", vq->size);
	sw_uint(w, "desc", vq->desc_gpa);
	sw_uint(w, "avail", vq->avail_gpa);
	sw_uint(w, "used", vq->used_gpa);
	sw_uint(w, "msix_vector", vq->msix_vector);
	sw_uint(w, "enabled", vq->enabled);
	sw_uint(w, "features", vq->features);
	sw_uint(w, "last_avail_idx", vq->last_avail_idx);
	sw_uint(w, "used_idx", vq->used_idx);
	sw_uint(w, "signalled_used", vq->signalled_used);
	sw_uint(w, "signalled_used_valid", vq->signalled_used_valid);
	sw_uint(w, "notify_enabled", vq->notify_enabled);
	sw_uint(w, "broken", vq->broken);
}

int vq_load(struct virtqueue *vq, const struct state_reader *r, struct terr *err)
{
	uint64_t size, desc, avail, used, vec, en, feat, la, ui, su, suv, ne, br;
	int ret;

	vq_reset(vq);
	if ((ret = sr_uint_max(r, "size", vq->size, 0xffff, &size, err)) ||
	    (ret = sr_uint(r, "desc", 0, &desc, err)) ||
	    (ret = sr_uint(r, "avail", 0, &avail, err)) ||
	    (ret = sr_uint(r, "used", 0, &used, err)) ||
	    (ret = sr_uint_max(r, "msix_vector", VIRTIO_MSI_NO_VECTOR, 0xffff, &vec, err)) ||
	    (ret = sr_uint_max(r, "enabled", 0, 1, &en, err)) ||
	    (ret = sr_uint(r, "features", 0, &feat, err)) ||
	    (ret = sr_uint_max(r, "last_avail_idx", 0, 0xffff, &la, err)) ||
	    (ret = sr_uint_max(r, "used_idx", 0, 0xffff, &ui, err)) ||
	    (ret = sr_uint_max(r, "signalled_used", 0, 0xffff, &su, err)) ||
	    (ret = sr_uint_max(r, "signalled_used_valid", 0, 1, &suv, err)) ||
	    (ret = sr_uint_max(r, "notify_enabled", 1, 1, &ne, err)) ||
	    (ret = sr_uint_max(r, "broken", 0, 1, &br, err)))
		return ret;
	vq->size = (uint16_t)size;
	vq->desc_gpa = desc;
	vq->avail_gpa = avail;
	vq->used_gpa = used;
	vq->msix_vector = (uint16_t)vec;
	vq->enabled = en;
	vq->features = feat & ((1ull << VIRTIO_F_INDIRECT_DESC) | (1ull << VIRTIO_F_EVENT_IDX));
	vq->last_avail_idx = (uint16_t)la;
	vq->used_idx = (uint16_t)ui;
	vq->signalled_used = (uint16_t)su;
	vq->signalled_used_valid = suv;
	vq->notify_enabled = ne;
	vq->broken = br;
	/* Re-derive the host views; a queue that no longer fits breaks now,
	 * without calling back into the owner in the middle of its load (the
	 * owner looks at vq->broken afterwards). */
	if (vq->enabled && !vq->broken) {
		vq_broken_fn cb = vq->on_broken;
		vq->on_broken = NULL;
		validate(vq);
		vq->on_broken = cb;
	}
	return 0;
}
