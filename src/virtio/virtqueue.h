/* Split virtqueue, device side (virtio 1.x, 2.7): the descriptor table, the
 * available ring and the used ring live in guest RAM and are written by a
 * driver tern does not trust. Every guest address goes through
 * guest_mem_ptr(); every violation of the ring protocol (a descriptor outside
 * RAM, a loop, an overflowing length, a readable buffer after a writable one,
 * the available index running ahead by more than the queue size, ...) marks
 * the queue broken: it is logged once per queue, the owner is told through
 * on_broken (the device then sets DEVICE_NEEDS_RESET), and the queue does
 * nothing more until it is reset. tern never crashes and never touches memory
 * outside guest RAM because of what a guest wrote.
 *
 * Concurrency: the guest runs on other CPUs while the device walks the rings.
 * avail->idx is read with acquire, used->idx written with release, and the
 * event-index checks have a full fence between publishing and reading the
 * other side's index. Descriptors are fetched once into a local copy and only
 * the copy is validated and used. The device side itself is single-threaded:
 * callers serialize on the owning device's lock. */
#ifndef TERN_VIRTIO_VIRTQUEUE_H
#define TERN_VIRTIO_VIRTQUEUE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/memory.h"
#include "state/state.h"
#include "util/error.h"

#define VQ_MAX_SIZE 32768u

#define VIRTQ_DESC_F_NEXT       1
#define VIRTQ_DESC_F_WRITE      2
#define VIRTQ_DESC_F_INDIRECT   4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY     1

/* Ring feature bits (virtio 1.x, 6). */
#define VIRTIO_F_INDIRECT_DESC  28
#define VIRTIO_F_EVENT_IDX      29

#define VIRTIO_MSI_NO_VECTOR    0xffff

/* One popped descriptor chain as host pointers into guest RAM: iov[0, nout)
 * are the device-readable buffers (driver -> device), iov[nout, nout + nin)
 * the device-writable ones. Zero-length descriptors are dropped. The array is
 * owned by the chain and reused across pops; vq_chain_free releases it. */
struct vq_chain {
	const struct guest_mem *mem;  /* the queue's RAM (dirty tracking of writes) */
	uint16_t head;            /* descriptor index to hand back to vq_push */
	unsigned nout, nin;
	uint32_t out_len, in_len; /* bytes (a chain holds at most 4 GiB - 1) */
	struct iovec *iov;
	unsigned cap;
};

struct virtqueue;
typedef void (*vq_broken_fn)(void *opaque, struct virtqueue *vq);

struct virtqueue {
	const struct guest_mem *mem;
	char name[48];               /* "rng.0 queue 0", for messages */
	uint16_t max_size;           /* what the device offers (power of two) */
	vq_broken_fn on_broken;
	void *opaque;

	/* Written by the driver through the transport; saved. */
	uint16_t size;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint16_t msix_vector;
	bool enabled;
	uint64_t features;           /* negotiated ring features (INDIRECT_DESC, EVENT_IDX) */

	/* Device-side progress; saved. */
	uint16_t last_avail_idx;     /* next avail ring slot to pop */
	uint16_t used_idx;           /* next used ring slot (== used->idx we published) */
	uint16_t signalled_used;     /* used idx at the last notification (event idx) */
	bool signalled_used_valid;
	bool notify_enabled;         /* device wants kicks (used->flags / avail_event) */
	bool broken;

	/* Host side only, not saved. */
	bool logged;                 /* a violation was logged already */
	uint64_t nviolations;
	uint8_t *desc, *avail, *used; /* host views of the rings, valid while ready */
	bool ready;                  /* enabled, validated and not broken */
};

/* max_size: power of two, 1..VQ_MAX_SIZE (checked by the caller's code, not
 * the guest: an invalid value here is a programming error and returns
 * -EINVAL). The queue starts reset. */
int vq_init(struct virtqueue *vq, const struct guest_mem *mem, uint16_t max_size,
	    const char *name, vq_broken_fn on_broken, void *opaque);
/* Back to the reset state (size = max_size, addresses 0, disabled, not broken). */
void vq_reset(struct virtqueue *vq);

/* Start using the queue with the addresses and size the driver wrote: the
 * size must be a power of two no larger than max_size, the rings aligned
 * (desc 16, avail 2, used 4) and each ring entirely inside one RAM region.
 * Anything else breaks the queue (-EINVAL). `features` are the negotiated
 * device features (only the ring bits are used). */
int vq_enable(struct virtqueue *vq, uint64_t features);

/* Record a violation found by a device model (e.g. a request header that is
 * too short): logs once, marks the queue broken, calls on_broken. */
void vq_fail(struct virtqueue *vq, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline bool vq_is_ready(const struct virtqueue *vq)
{
	return vq->ready;
}

void vq_chain_init(struct vq_chain *c);
void vq_chain_free(struct vq_chain *c);

/* Pop the next available chain: 1 and *c filled, 0 when the ring is empty,
 * -EIO when the queue is not ready or broke now. */
int vq_pop(struct virtqueue *vq, struct vq_chain *c);
/* Is there a chain to pop? (false when not ready) */
bool vq_has_avail(struct virtqueue *vq);
/* Return chain `head` with `written` bytes written into its writable part.
 * The used element is written before used->idx is published (release). */
int vq_push(struct virtqueue *vq, uint16_t head, uint32_t written);

/* Return n chains at once: heads[i] with lens[i] bytes written, all made
 * visible to the driver by one used->idx update (a virtio-net frame spread
 * over several mergeable receive buffers must not be seen half-published). */
int vq_push_batch(struct virtqueue *vq, const uint16_t *heads, const uint32_t *lens, unsigned n);
/* Hand back the last n chains popped and not pushed: the next vq_pop returns
 * them again (a device that found too little buffer space to use them). */
void vq_unpop(struct virtqueue *vq, unsigned n);

/* After one or more vq_push: must the driver be interrupted? Honours
 * VIRTIO_F_EVENT_IDX (used_event) or else VIRTQ_AVAIL_F_NO_INTERRUPT. */
bool vq_should_notify(struct virtqueue *vq);

/* Available-buffer notification suppression. disable: the driver need not
 * kick (used->flags NO_NOTIFY; with EVENT_IDX avail_event stops moving).
 * enable: ask for kicks again; returns true when buffers arrived meanwhile,
 * so the caller must process them (the usual disable / drain / enable /
 * recheck loop has no lost wake-up). */
void vq_notify_disable(struct virtqueue *vq);
bool vq_notify_enable(struct virtqueue *vq);

/* Copy helpers over a chain's iovecs. */
uint32_t vq_chain_copy_from(const struct vq_chain *c, uint32_t off, void *dst, uint32_t len);
uint32_t vq_chain_copy_to(const struct vq_chain *c, uint32_t off, const void *src, uint32_t len);

/* Dirty tracking of the device's writes to guest RAM (a live migration must
 * send those pages again; KVM's dirty log sees only the guest's writes).
 * The virtqueue layer records by itself everything it writes: the used ring
 * (elements, idx, flags, avail_event) and vq_chain_copy_to. A device or back
 * end that writes through the chain's iovecs directly (virtio-rng filling
 * them, virtio-blk's status byte and the disk reads into them) calls
 * vq_chain_note_in once the bytes [off, off + len) of the chain's writable
 * part are written, before the chain is pushed; any thread may call it. One
 * atomic load when no migration runs. */
void vq_chain_note_in(const struct vq_chain *c, uint32_t off, uint32_t len);

/* Every guest-visible field of the queue, as tagged fields. */
void vq_save(const struct virtqueue *vq, struct state_writer *w);
/* Reset, then apply saved fields (missing ones keep their reset value). The
 * values are what the driver wrote, so a saved enabled queue is validated
 * again exactly as vq_enable does and comes back broken if it does not fit
 * (e.g. restored onto less RAM); only malformed fields are errors. */
int vq_load(struct virtqueue *vq, const struct state_reader *r, struct terr *err);

#endif
