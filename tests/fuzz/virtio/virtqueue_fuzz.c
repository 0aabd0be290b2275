/* libFuzzer target for the split-virtqueue walker: the input builds a guest
 * RAM of one or two regions (each its own malloc'd block, so AddressSanitizer
 * sees any access outside them), a queue over it, and a stream of driver and
 * device actions. Whatever the guest wrote, every buffer handed to the device
 * must lie inside guest RAM, nothing may crash, and a save/load in the middle
 * must give a queue that behaves the same.
 *
 * Input: a 23-byte header, up to 2 x 4 KiB of guest RAM contents, then
 * operations (see the switch below). */
#include <sanitizer/asan_interface.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "virtio/virtqueue.h"

#define REGION 0x1000u
#define MAX_OPS 512

struct in {
	const uint8_t *p;
	size_t n;
};

static uint64_t take(struct in *in, unsigned bytes)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < bytes; i++) {
		uint8_t b = 0;
		if (in->n) {
			b = *in->p++;
			in->n--;
		}
		v |= (uint64_t)b << (8 * i);
	}
	return v;
}

static void on_broken(void *opaque, struct virtqueue *vq)
{
	(void)vq;
	(*(unsigned *)opaque)++;
}

/* Every buffer of a chain must be addressable guest RAM. */
static void check_chain(const struct vq_chain *c, struct virtqueue *vq)
{
	uint64_t out = 0, in = 0;
	if (c->head >= vq->size)
		abort();
	for (unsigned i = 0; i < c->nout + c->nin; i++) {
		uint8_t *b = c->iov[i].iov_base;
		size_t l = c->iov[i].iov_len;
		if (!l || __asan_region_is_poisoned(b, l))
			abort();
		if (i < c->nout) {
			volatile uint8_t x = b[0];
			x = b[l - 1];
			(void)x;
			out += l;
		} else {
			b[0] = 0xa5;
			b[l - 1] = 0x5a;
			in += l;
		}
	}
	if (out != c->out_len || in != c->in_len)
		abort();
}

static void save_load(struct virtqueue *vq, const struct guest_mem *m, unsigned *broken)
{
	struct state_writer w;
	struct state_reader r;
	struct terr err = { 0 };
	struct virtqueue fresh;

	sw_init(&w);
	vq_save(vq, &w);
	if (w.err || sr_init(&r, w.buf, w.len, "fuzz.0", &err))
		abort();
	if (vq_init(&fresh, m, vq->max_size, "fuzz.0 queue 0 (loaded)", on_broken, broken) ||
	    vq_load(&fresh, &r, &err))
		abort();
	/* the same guest-visible state comes back */
	if (fresh.last_avail_idx != vq->last_avail_idx || fresh.used_idx != vq->used_idx ||
	    fresh.broken != vq->broken || fresh.ready != vq->ready)
		abort();
	fresh.logged = vq->logged;
	*vq = fresh;
	sr_free(&r);
	sw_free(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int quiet;
	if (!quiet) {
		log_set_level(LOG_ERROR);   /* one warning per broken queue is noise here */
		quiet = 1;
	}
	struct in in = { data, size };
	unsigned flags = (unsigned)take(&in, 1);
	unsigned qsize_raw = (unsigned)take(&in, 2);
	unsigned max_log2 = (unsigned)take(&in, 1) % 16;
	uint64_t desc = take(&in, 4), avail = take(&in, 4), used = take(&in, 4);
	uint16_t start = (uint16_t)take(&in, 2);
	uint64_t region1_gpa = (flags & 8) ? REGION : 0x100000;
	take(&in, 5);   /* reserved */

	struct guest_mem m = { .fd = -1 };
	uint8_t *r0 = malloc(REGION), *r1 = malloc(REGION);
	if (!r0 || !r1)
		goto out_free;
	memset(r0, 0, REGION);
	memset(r1, 0, REGION);
	m.regions[0] = (struct guest_region){ .gpa = 0, .size = REGION, .hva = r0 };
	m.nregions = 1;
	if (flags & 4) {
		m.regions[1] = (struct guest_region){ .gpa = region1_gpa, .size = REGION, .hva = r1 };
		m.nregions = 2;
	}
	m.size = REGION * m.nregions;
	/* RAM contents */
	size_t n = in.n < 2 * REGION ? in.n : 2 * REGION;
	size_t n0 = n < REGION ? n : REGION;
	memcpy(r0, in.p, n0);
	memcpy(r1, in.p + n0, n - n0);
	in.p += n;
	in.n -= n;

	unsigned broken = 0;
	struct virtqueue vq;
	struct vq_chain c;
	vq_chain_init(&c);
	if (vq_init(&vq, &m, (uint16_t)(1u << max_log2), "fuzz.0 queue 0", on_broken, &broken))
		abort();
	vq.size = (flags & 16) ? (uint16_t)qsize_raw : (uint16_t)(1u << (qsize_raw % 16));
	vq.desc_gpa = desc;
	vq.avail_gpa = avail;
	vq.used_gpa = used;
	vq.last_avail_idx = vq.used_idx = start;
	uint64_t features = ((flags & 1) ? 1ull << VIRTIO_F_INDIRECT_DESC : 0) |
			    ((flags & 2) ? 1ull << VIRTIO_F_EVENT_IDX : 0);
	int er = vq_enable(&vq, features);
	if ((er == 0) != vq_is_ready(&vq) || (er != 0) != vq.broken)
		abort();

	for (unsigned op = 0; op < MAX_OPS && in.n; op++) {
		unsigned code = (unsigned)take(&in, 1);
		switch (code % 8) {
		case 0:
		case 1: {   /* device: pop, use, push */
			bool was_broken = vq.broken;
			int r = vq_pop(&vq, &c);
			if (r == 1) {
				check_chain(&c, &vq);
				if (vq_push(&vq, c.head, c.in_len) != 0)
					abort();
			} else if (r < 0 && !vq.broken) {
				abort();
			} else if (r == 0 && vq_has_avail(&vq)) {
				abort();
			}
			if (vq.broken && !was_broken && broken == 0)
				abort();
			break;
		}
		case 2: {   /* driver writes a byte of RAM (rings included) */
			uint64_t off = take(&in, 2) % (2 * REGION);
			uint8_t v = (uint8_t)take(&in, 1);
			uint8_t *p = guest_mem_ptr(&m, off < REGION ? off : region1_gpa + off - REGION, 1);
			if (p)
				*p = v;
			break;
		}
		case 3: {   /* driver publishes avail idx + k */
			if (vq_is_ready(&vq)) {
				uint8_t *p = guest_mem_ptr(&m, vq.avail_gpa + 2, 2);
				uint16_t idx;
				memcpy(&idx, p, 2);
				idx = (uint16_t)(idx + take(&in, 1) % 4);
				memcpy(p, &idx, 2);
			}
			break;
		}
		case 4:
			vq_should_notify(&vq);
			break;
		case 5:
			if (code & 8)
				vq_notify_enable(&vq);
			else
				vq_notify_disable(&vq);
			break;
		case 6:
			save_load(&vq, &m, &broken);
			break;
		case 7:     /* driver resets and sets the queue up again */
			vq_reset(&vq);
			vq.size = (uint16_t)(1u << (take(&in, 1) % 16));
			vq.desc_gpa = desc;
			vq.avail_gpa = avail;
			vq.used_gpa = used;
			vq_enable(&vq, features);
			break;
		}
	}
	vq_chain_free(&c);
out_free:
	free(r0);
	free(r1);
	return 0;
}
