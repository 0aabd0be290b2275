#include "virtio/virtio_dev.h"
#include "util/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CORE_FEATURES ((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_F_INDIRECT_DESC) | \
		       (1ull << VIRTIO_F_EVENT_IDX))

/* A driver that breaks the protocol (not the rings) is logged once per
 * device; what it asked for is refused and tern carries on. */
static void protocol_error(struct virtio_dev *dev, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void protocol_error(struct virtio_dev *dev, const char *fmt, ...)
{
	if (dev->logged)
		return;
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warn("virtio", "%s: %s (further driver errors on this device are not logged)",
		 dev->id, msg);
	dev->logged = true;
}

static void queue_broken(void *opaque, struct virtqueue *vq)
{
	(void)vq;
	virtio_dev_needs_reset(opaque);
}

int virtio_dev_init(struct virtio_dev *dev, const struct virtio_dev_params *p, struct terr *err)
{
	memset(dev, 0, sizeof(*dev));
	if (!p->ops || !p->ops->queue_notify || !p->mem || p->nqueues == 0 ||
	    p->nqueues > VIRTIO_MAX_QUEUES || !p->queue_size || (p->queue_size & (p->queue_size - 1)))
		return terr_set(err, EINVAL, "%s: invalid virtio device parameters", p->id);
	dev->ops = p->ops;
	dev->priv = p->priv;
	dev->mem = p->mem;
	snprintf(dev->id, sizeof(dev->id), "%s", p->id);
	dev->device_id = p->device_id;
	dev->config_size = p->config_size;
	dev->host_features = p->features | CORE_FEATURES;
	dev->nqueues = p->nqueues;
	dev->vqs = calloc(p->nqueues, sizeof(*dev->vqs));
	if (!dev->vqs)
		return terr_set(err, ENOMEM, "%s: out of memory", p->id);
	for (unsigned i = 0; i < p->nqueues; i++) {
		char name[64];
		snprintf(name, sizeof(name), "%.31s queue %u", dev->id, i);
		vq_init(&dev->vqs[i], p->mem, p->queue_size, name, queue_broken, dev);
	}
	pthread_mutex_init(&dev->lock, NULL);
	return 0;
}

void virtio_dev_destroy(struct virtio_dev *dev)
{
	if (!dev->vqs)
		return;
	free(dev->vqs);
	dev->vqs = NULL;
	pthread_mutex_destroy(&dev->lock);
}

void virtio_dev_set_transport(struct virtio_dev *dev, const struct virtio_transport_ops *t,
			      void *transport_priv)
{
	dev->transport = t;
	dev->transport_priv = transport_priv;
}

static void reset_core(struct virtio_dev *dev)
{
	dev->status = 0;
	dev->guest_features = 0;
	for (unsigned i = 0; i < dev->nqueues; i++)
		vq_reset(&dev->vqs[i]);
}

void virtio_dev_reset(struct virtio_dev *dev)
{
	reset_core(dev);
	if (dev->ops->reset)
		dev->ops->reset(dev);
}

static bool features_acceptable(struct virtio_dev *dev)
{
	uint64_t extra = dev->guest_features & ~dev->host_features;
	if (extra) {
		protocol_error(dev, "the driver accepted features 0x%llx that were not offered; "
			       "FEATURES_OK refused", (unsigned long long)extra);
		return false;
	}
	if (!virtio_dev_has_feature(dev, VIRTIO_F_VERSION_1)) {
		protocol_error(dev, "the driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are "
			       "not supported); FEATURES_OK refused");
		return false;
	}
	return true;
}

void virtio_dev_set_status(struct virtio_dev *dev, uint8_t v)
{
	if (v == 0) {
		virtio_dev_reset(dev);
		return;
	}
	uint8_t old = dev->status;
	uint8_t keep = old & VIRTIO_STATUS_NEEDS_RESET;   /* the device's bit */
	v &= (uint8_t)~VIRTIO_STATUS_NEEDS_RESET;
	uint8_t cleared = (uint8_t)(old & ~VIRTIO_STATUS_NEEDS_RESET & ~v);
	if (cleared) {
		protocol_error(dev, "the driver cleared status bits 0x%x without a reset; ignored",
			       cleared);
		return;
	}
	uint8_t added = (uint8_t)(v & ~old);
	if ((added & VIRTIO_STATUS_FEATURES_OK) && !features_acceptable(dev))
		v &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
	if ((added & VIRTIO_STATUS_DRIVER_OK) && !(v & VIRTIO_STATUS_FEATURES_OK)) {
		protocol_error(dev, "DRIVER_OK without FEATURES_OK; refused");
		v &= (uint8_t)~VIRTIO_STATUS_DRIVER_OK;
	}
	dev->status = v | keep;
	if ((dev->status & added & VIRTIO_STATUS_DRIVER_OK) && dev->ops->driver_ok)
		dev->ops->driver_ok(dev);
}

uint32_t virtio_dev_get_device_features(const struct virtio_dev *dev, uint32_t sel)
{
	return sel < 2 ? (uint32_t)(dev->host_features >> (32 * sel)) : 0;
}

uint32_t virtio_dev_get_driver_features(const struct virtio_dev *dev, uint32_t sel)
{
	return sel < 2 ? (uint32_t)(dev->guest_features >> (32 * sel)) : 0;
}

void virtio_dev_set_driver_features(struct virtio_dev *dev, uint32_t sel, uint32_t val)
{
	if (dev->status & VIRTIO_STATUS_FEATURES_OK) {
		protocol_error(dev, "the driver wrote features after FEATURES_OK; ignored");
		return;
	}
	if (sel >= 2) {
		if (val)
			protocol_error(dev, "the driver accepted feature bits in word %u, none are "
				       "offered there; ignored", sel);
		return;
	}
	unsigned shift = 32 * sel;
	dev->guest_features = (dev->guest_features & ~(0xffffffffull << shift)) |
			      ((uint64_t)val << shift);
}

void virtio_dev_read_config(struct virtio_dev *dev, uint32_t off, void *buf, uint32_t len)
{
	memset(buf, 0, len);
	if (off > dev->config_size || len > dev->config_size - off || !dev->ops->get_config)
		return;
	dev->ops->get_config(dev, off, buf, len);
}

void virtio_dev_write_config(struct virtio_dev *dev, uint32_t off, const void *buf, uint32_t len)
{
	if (off > dev->config_size || len > dev->config_size - off || !dev->ops->set_config)
		return;
	dev->ops->set_config(dev, off, buf, len);
}

struct virtqueue *virtio_dev_queue(struct virtio_dev *dev, unsigned q)
{
	return q < dev->nqueues ? &dev->vqs[q] : NULL;
}

int virtio_dev_queue_enable(struct virtio_dev *dev, unsigned q)
{
	if (q >= dev->nqueues)
		return -EINVAL;
	if (dev->vqs[q].enabled)
		return 0;
	return vq_enable(&dev->vqs[q], dev->guest_features);
}

void virtio_dev_queue_kick(struct virtio_dev *dev, unsigned q)
{
	if (q >= dev->nqueues) {
		protocol_error(dev, "notification for queue %u, the device has %u; ignored", q,
			       dev->nqueues);
		return;
	}
	if (!vq_is_ready(&dev->vqs[q]))
		return;
	dev->ops->queue_notify(dev, q);
}

void virtio_dev_notify(struct virtio_dev *dev, unsigned q)
{
	if (q < dev->nqueues && vq_should_notify(&dev->vqs[q]) && dev->transport)
		dev->transport->notify_queue(dev, q);
}

void virtio_dev_needs_reset(struct virtio_dev *dev)
{
	if (dev->status & VIRTIO_STATUS_NEEDS_RESET)
		return;
	dev->status |= VIRTIO_STATUS_NEEDS_RESET;
	if ((dev->status & VIRTIO_STATUS_DRIVER_OK) && dev->transport)
		dev->transport->notify_config(dev);
}

void virtio_dev_config_changed(struct virtio_dev *dev)
{
	dev->config_generation++;
	if ((dev->status & VIRTIO_STATUS_DRIVER_OK) && dev->transport)
		dev->transport->notify_config(dev);
}

int virtio_dev_save(struct virtio_dev *dev, struct state_writer *w)
{
	sw_uint(w, "status", dev->status);
	sw_uint(w, "driver_features", dev->guest_features);
	sw_uint(w, "config_generation", dev->config_generation);
	sw_uint(w, "queues", dev->nqueues);
	for (unsigned i = 0; i < dev->nqueues; i++) {
		struct state_writer q;
		char name[16];
		sw_init(&q);
		vq_save(&dev->vqs[i], &q);
		snprintf(name, sizeof(name), "vq.%u", i);
		sw_blob(w, name, &q);
		if (q.err)
			w->err = q.err;
		sw_free(&q);
	}
	if (dev->ops->save) {
		struct state_writer d;
		sw_init(&d);
		int r = dev->ops->save(dev, &d);
		if (!r)
			sw_blob(w, "dev", &d);
		if (d.err)
			w->err = d.err;
		sw_free(&d);
		if (r)
			return r;
	}
	return w->err;
}

/* Load a nested blob `name` with fn; an absent blob loads as an empty one
 * (every field at its reset value). */
static int load_nested(struct virtio_dev *dev, const struct state_reader *r, const char *name,
		       int (*fn)(void *obj, const struct state_reader *r, struct terr *err),
		       void *obj, struct terr *err)
{
	const void *p;
	size_t len;
	struct state_reader inner;
	int ret = sr_bytes(r, name, &p, &len, err);
	if (ret)
		return ret;
	ret = sr_init(&inner, p ? p : "", len, dev->id, err);
	if (ret) {
		terr_prefix(err, "%s: ", name);
		return ret;
	}
	ret = fn(obj, &inner, err);
	sr_free(&inner);
	return ret;
}

static int load_vq(void *obj, const struct state_reader *r, struct terr *err)
{
	return vq_load(obj, r, err);
}

static int load_dev(void *obj, const struct state_reader *r, struct terr *err)
{
	struct virtio_dev *dev = obj;
	return dev->ops->load(dev, r, err);
}

int virtio_dev_load(struct virtio_dev *dev, const struct state_reader *r, struct terr *err)
{
	uint64_t status, feat, gen, nq;
	int ret;

	if ((ret = sr_uint_max(r, "status", 0, 0xff, &status, err)) ||
	    (ret = sr_uint(r, "driver_features", 0, &feat, err)) ||
	    (ret = sr_uint_max(r, "config_generation", 0, 0xff, &gen, err)) ||
	    (ret = sr_uint(r, "queues", dev->nqueues, &nq, err)))
		return ret;
	if (nq != dev->nqueues)
		return terr_set(err, EINVAL, "%s: saved with %llu queues, this device has %u", dev->id,
				(unsigned long long)nq, dev->nqueues);
	/* Before FEATURES_OK the driver's feature word is just what it wrote;
	 * after, it must be something this device offers. */
	if ((status & VIRTIO_STATUS_FEATURES_OK) && (feat & ~dev->host_features))
		return terr_set(err, EINVAL, "%s: saved driver features 0x%llx include 0x%llx, which "
				"this device does not offer", dev->id, (unsigned long long)feat,
				(unsigned long long)(feat & ~dev->host_features));
	virtio_dev_reset(dev);
	dev->status = (uint8_t)status;
	dev->guest_features = feat;
	dev->config_generation = (uint8_t)gen;
	for (unsigned i = 0; i < dev->nqueues; i++) {
		char name[16];
		snprintf(name, sizeof(name), "vq.%u", i);
		if ((ret = load_nested(dev, r, name, load_vq, &dev->vqs[i], err)))
			return ret;
		/* a queue that cannot work on this guest's RAM means the device
		 * needs a reset, as if the driver had just broken it */
		if (dev->vqs[i].broken)
			dev->status |= VIRTIO_STATUS_NEEDS_RESET;
	}
	if (dev->ops->load && (ret = load_nested(dev, r, "dev", load_dev, dev, err)))
		return ret;
	return 0;
}
