/* libFuzzer target for the virtio device core as a driver drives it: status
 * writes, feature words, queue set-up, kicks, configuration accesses,
 * resets and save/load, in any order, over a guest RAM whose contents come
 * from the input too. Nothing may crash or touch memory outside guest RAM,
 * NEEDS_RESET must follow any broken queue, and save -> load into a fresh
 * device -> save must give the same bytes.
 *
 * Input: u16 length L, L bytes of operations (1 + up to 6 bytes each), then
 * guest RAM contents (2 x 4 KiB, zero-padded). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "virtio/virtio_dev.h"

#define REGION 0x1000u
#define NQ 2
#define MAX_OPS 256

struct in {
	const uint8_t *p;
	size_t n;
};

static uint64_t take(struct in *in, unsigned bytes)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < bytes && in->n; i++, in->n--)
		v |= (uint64_t)*in->p++ << (8 * i);
	return v;
}

struct model {
	struct virtio_dev vdev;
	struct vq_chain c;
	uint8_t config[12];
	uint64_t served;
	unsigned irqs;
};

static void get_config(struct virtio_dev *d, uint32_t off, void *buf, uint32_t len)
{
	struct model *m = d->priv;
	if (off + len > sizeof(m->config))
		abort();   /* the core must have bounded it */
	memcpy(buf, m->config + off, len);
}

static void set_config(struct virtio_dev *d, uint32_t off, const void *buf, uint32_t len)
{
	struct model *m = d->priv;
	if (off + len > sizeof(m->config))
		abort();
	memcpy(m->config + off, buf, len);
}

static void queue_notify(struct virtio_dev *d, unsigned q)
{
	struct model *m = d->priv;
	if (q >= NQ || !vq_is_ready(&d->vqs[q]))
		abort();
	while (vq_pop(&d->vqs[q], &m->c) == 1) {
		uint8_t fill[64];
		memset(fill, 0x5a, sizeof(fill));
		uint32_t n = vq_chain_copy_to(&m->c, 0, fill, sizeof(fill));
		uint8_t back[64];
		vq_chain_copy_from(&m->c, 0, back, sizeof(back));
		vq_push(&d->vqs[q], m->c.head, n);
		m->served++;
	}
	virtio_dev_notify(d, q);
}

static void model_reset(struct virtio_dev *d)
{
	((struct model *)d->priv)->served = 0;
}

static int model_save(struct virtio_dev *d, struct state_writer *w)
{
	sw_uint(w, "served", ((struct model *)d->priv)->served);
	return w->err;
}

static int model_load(struct virtio_dev *d, const struct state_reader *r, struct terr *err)
{
	return sr_uint(r, "served", 0, &((struct model *)d->priv)->served, err);
}

static const struct virtio_dev_ops ops = {
	.get_config = get_config, .set_config = set_config, .queue_notify = queue_notify,
	.reset = model_reset, .save = model_save, .load = model_load,
};

static void t_queue(struct virtio_dev *d, unsigned q)
{
	if (q >= NQ)
		abort();
	((struct model *)d->priv)->irqs++;
}

static void t_config(struct virtio_dev *d)
{
	((struct model *)d->priv)->irqs++;
}

static const struct virtio_transport_ops transport = { .notify_queue = t_queue,
						       .notify_config = t_config };

static void model_init(struct model *m, const struct guest_mem *mem)
{
	struct terr err = { 0 };
	struct virtio_dev_params p = {
		.ops = &ops, .priv = m, .mem = mem, .id = "fuzz.0", .device_id = VIRTIO_ID_RNG,
		.features = 1ull << 5, .nqueues = NQ, .queue_size = 16,
		.config_size = sizeof(m->config),
	};
	memset(m, 0, sizeof(*m));
	if (virtio_dev_init(&m->vdev, &p, &err))
		abort();
	virtio_dev_set_transport(&m->vdev, &transport, NULL);
	vq_chain_init(&m->c);
}

static void model_free(struct model *m)
{
	virtio_dev_destroy(&m->vdev);
	vq_chain_free(&m->c);
}

static void save(struct model *m, struct state_writer *w)
{
	sw_init(w);
	if (virtio_dev_save(&m->vdev, w) || w->err)
		abort();
}

static void round_trip(struct model *m, const struct guest_mem *mem)
{
	struct state_writer a, b;
	struct state_reader r;
	struct terr err = { 0 };
	struct model *fresh = malloc(sizeof(*fresh));
	if (!fresh)
		return;
	save(m, &a);
	model_init(fresh, mem);
	if (sr_init(&r, a.buf, a.len, "fuzz.0", &err) || virtio_dev_load(&fresh->vdev, &r, &err))
		abort();
	sr_free(&r);
	save(fresh, &b);
	if (a.len != b.len || memcmp(a.buf, b.buf, a.len))
		abort();
	sw_free(&a);
	sw_free(&b);
	model_free(fresh);
	free(fresh);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int quiet;
	if (!quiet) {
		log_set_level(LOG_ERROR);
		quiet = 1;
	}
	struct in all = { data, size };
	size_t oplen = (size_t)take(&all, 2);
	if (oplen > all.n)
		oplen = all.n;
	struct in in = { all.p, oplen };
	all.p += oplen;
	all.n -= oplen;
	uint8_t *r0 = calloc(1, REGION), *r1 = calloc(1, REGION);
	struct guest_mem mem = { .fd = -1, .nregions = 2, .size = 2 * REGION };
	struct model *m = malloc(sizeof(*m));
	if (!r0 || !r1 || !m)
		goto out;
	mem.regions[0] = (struct guest_region){ .gpa = 0, .size = REGION, .hva = r0 };
	mem.regions[1] = (struct guest_region){ .gpa = REGION, .size = REGION, .hva = r1 };
	size_t n = all.n < 2 * REGION ? all.n : 2 * REGION;
	memcpy(r0, all.p, n < REGION ? n : REGION);
	if (n > REGION)
		memcpy(r1, all.p + REGION, n - REGION);
	model_init(m, &mem);
	struct virtio_dev *d = &m->vdev;

	for (unsigned op = 0; op < MAX_OPS && in.n; op++) {
		unsigned code = (unsigned)take(&in, 1);
		unsigned q = (code >> 4) % (NQ + 1);   /* NQ: a queue that does not exist */
		struct virtqueue *vq = virtio_dev_queue(d, q);
		switch (code % 8) {
		case 0:
			virtio_dev_set_status(d, (uint8_t)take(&in, 1));
			break;
		case 1: {
			uint32_t sel = (uint32_t)take(&in, 1) % 3;
			virtio_dev_set_driver_features(d, sel, (uint32_t)take(&in, 4));
			break;
		}
		case 2:   /* queue layout: gpas within 2 regions plus a bit */
			if (vq && !vq->enabled) {
				vq->size = (uint16_t)(1u << (take(&in, 1) % 6));
				vq->desc_gpa = take(&in, 2) % (3 * REGION);
				vq->avail_gpa = take(&in, 2) % (3 * REGION);
				vq->used_gpa = take(&in, 2) % (3 * REGION);
			}
			if (virtio_dev_queue_enable(d, q) == 0 && vq && !vq_is_ready(vq) && !vq->broken)
				abort();
			break;
		case 3:
			virtio_dev_queue_kick(d, q);
			break;
		case 4: {
			uint8_t buf[16];
			uint32_t off = (uint32_t)take(&in, 1), len = (uint32_t)take(&in, 1) % 9;
			if (code & 0x80)
				virtio_dev_write_config(d, off, buf, len);
			else
				virtio_dev_read_config(d, off, buf, len);
			break;
		}
		case 5: {   /* driver writes RAM */
			uint32_t off = (uint32_t)take(&in, 2) % (2 * REGION);
			uint8_t v = (uint8_t)take(&in, 1);
			(off < REGION ? r0 : r1)[off % REGION] = v;
			break;
		}
		case 6:
			round_trip(m, &mem);
			break;
		case 7:
			virtio_dev_reset(d);
			break;
		}
		for (unsigned i = 0; i < NQ; i++)
			if (d->vqs[i].broken && !(d->status & VIRTIO_STATUS_NEEDS_RESET))
				abort();
	}
	round_trip(m, &mem);
	model_free(m);
out:
	free(m);
	free(r0);
	free(r1);
	return 0;
}
