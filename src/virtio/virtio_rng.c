#include "virtio/virtio_rng.h"
#include "core/vm.h"
#include "util/log.h"
#include "virtio/virtio_dev.h"
#include "virtio/virtio_pci.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

struct virtio_rng {
	struct device dev;
	struct virtio_dev vdev;
	struct virtio_pci vp;
	struct vq_chain chain;     /* reused across requests */
	bool vdev_ready, vp_ready;
	bool logged;
};

/* Fill [p, p + len) with random bytes; returns how many were written. */
static size_t fill(struct virtio_rng *rng, uint8_t *p, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = getrandom(p + done, len - done, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (!rng->logged)
				log_warn("virtio", "%s: getrandom: %s", rng->dev.id, strerror(errno));
			rng->logged = true;
			break;
		}
		done += (size_t)n;
	}
	return done;
}

static void rng_queue_notify(struct virtio_dev *vdev, unsigned q)
{
	struct virtio_rng *rng = vdev->priv;
	struct virtqueue *vq = &vdev->vqs[q];
	bool pushed = false;

	while (vq_pop(vq, &rng->chain) == 1) {
		const struct vq_chain *c = &rng->chain;
		uint32_t written = 0;
		for (unsigned i = c->nout; i < c->nout + c->nin && written < VIRTIO_RNG_MAX_REQUEST; i++) {
			size_t want = c->iov[i].iov_len;
			if (want > VIRTIO_RNG_MAX_REQUEST - written)
				want = VIRTIO_RNG_MAX_REQUEST - written;
			size_t got = fill(rng, c->iov[i].iov_base, want);
			written += (uint32_t)got;
			if (got < want)
				break;
		}
		vq_chain_note_in(c, 0, written);   /* filled through the iovecs */
		vq_push(vq, c->head, written);
		pushed = true;
	}
	if (pushed)
		virtio_dev_notify(vdev, q);
}

static const struct virtio_dev_ops rng_vdev_ops = {
	.queue_notify = rng_queue_notify,
};

static struct virtio_rng *to_rng(struct device *d)
{
	return (struct virtio_rng *)d;
}

static void rng_reset(struct device *d)
{
	virtio_pci_reset(&to_rng(d)->vp);
}

static int rng_pause(struct device *d)
{
	virtio_pci_pause(&to_rng(d)->vp);
	return 0;
}

static void rng_resume(struct device *d)
{
	virtio_pci_resume(&to_rng(d)->vp);
}

static int rng_save(struct device *d, struct state_writer *w)
{
	return virtio_pci_save(&to_rng(d)->vp, w);
}

static int rng_load(struct device *d, const struct state_reader *r, struct terr *err)
{
	return virtio_pci_load(&to_rng(d)->vp, r, err);
}

static void rng_destroy(struct device *d)
{
	struct virtio_rng *rng = to_rng(d);
	if (rng->vp_ready)
		virtio_pci_destroy(&rng->vp);
	if (rng->vdev_ready)
		virtio_dev_destroy(&rng->vdev);
	vq_chain_free(&rng->chain);
	free(rng);
}

const struct device_ops virtio_rng_ops = {
	.type = "virtio-rng",
	.state_version = 1,
	.state_min_version = 1,
	.reset = rng_reset,
	.pause = rng_pause,
	.resume = rng_resume,
	.save = rng_save,
	.load = rng_load,
	.destroy = rng_destroy,
};

int virtio_rng_create(struct vm *vm, struct pci_bus *bus, const char *id, int slot,
		      struct device **out, struct terr *err)
{
	struct virtio_rng *rng = calloc(1, sizeof(*rng));
	int r;
	if (!rng)
		return terr_set(err, ENOMEM, "%s: out of memory", id);
	rng->dev.ops = &virtio_rng_ops;
	snprintf(rng->dev.id, sizeof(rng->dev.id), "%s", id);
	rng->dev.priv = rng;
	vq_chain_init(&rng->chain);
	struct virtio_dev_params p = {
		.ops = &rng_vdev_ops, .priv = rng, .mem = &vm->mem, .id = rng->dev.id,
		.device_id = VIRTIO_ID_RNG, .nqueues = 1, .queue_size = VIRTIO_RNG_QUEUE_SIZE,
	};
	if ((r = virtio_dev_init(&rng->vdev, &p, err))) {
		rng_destroy(&rng->dev);
		return r;
	}
	rng->vdev_ready = true;
	if ((r = virtio_pci_init(&rng->vp, vm, bus, &rng->vdev,
				 &(struct virtio_pci_params){ .class_code = 0xff0000, .slot = slot },
				 err))) {
		rng_destroy(&rng->dev);
		return r;
	}
	rng->vp_ready = true;
	vm_add_device(vm, &rng->dev);
	*out = &rng->dev;
	return 0;
}
