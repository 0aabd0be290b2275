#include "virtio/virtio_pci.h"
#include "core/vm.h"
#include "util/log.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

static struct virtio_pci *from_dev(struct virtio_dev *dev)
{
	return dev->transport_priv;
}

static uint16_t valid_vector(const struct virtio_pci *vp, uint16_t v)
{
	return v < vp->nvec ? v : VIRTIO_MSI_NO_VECTOR;
}

/* --- interrupts (called with the virtio_dev lock held) --- */

static void interrupt(struct virtio_pci *vp, uint16_t vector, uint8_t isr_bit)
{
	if (pci_msix_enabled(&vp->pci)) {
		if (vector != VIRTIO_MSI_NO_VECTOR)
			pci_msix_notify(&vp->pci, vector);
		return;
	}
	vp->isr |= isr_bit;
	pci_set_irq(&vp->pci, 1);
}

static void t_notify_queue(struct virtio_dev *dev, unsigned q)
{
	struct virtio_pci *vp = from_dev(dev);
	interrupt(vp, dev->vqs[q].msix_vector, VIRTIO_PCI_ISR_QUEUE);
}

static void t_notify_config(struct virtio_dev *dev)
{
	struct virtio_pci *vp = from_dev(dev);
	interrupt(vp, vp->msix_config, VIRTIO_PCI_ISR_CONFIG);
}

static const struct virtio_transport_ops pci_transport = {
	.notify_queue = t_notify_queue,
	.notify_config = t_notify_config,
};

/* --- ioeventfds --- */

static int ioeventfd(struct virtio_pci *vp, unsigned q, uint64_t base, bool assign)
{
	struct kvm_ioeventfd io = {
		.addr = base + VIRTIO_PCI_NOTIFY_MULT * q,
		.len = 2,
		.fd = vp->kicks[q].fd,
		.flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN,
	};
	return ioctl(vp->vm->fd, KVM_IOEVENTFD, &io) < 0 ? -errno : 0;
}

static void ioev_off(struct virtio_pci *vp)
{
	if (!vp->ioev_on)
		return;
	for (unsigned q = 0; q < vp->vdev->nqueues; q++)
		ioeventfd(vp, q, vp->ioev_base, false);
	vp->ioev_on = false;
}

/* Make the ioeventfds follow BAR 4: registered on the notify region while
 * the BAR is decoded, nowhere otherwise. Called with the virtio_dev lock. */
static void ioev_set(struct virtio_pci *vp, bool mapped, uint64_t bar_addr)
{
	uint64_t base = bar_addr + VIRTIO_PCI_NOTIFY_OFF;
	if (mapped == vp->ioev_on && (!mapped || base == vp->ioev_base))
		return;
	ioev_off(vp);
	if (!mapped || !vp->kicks)
		return;
	for (unsigned q = 0; q < vp->vdev->nqueues; q++) {
		int r = ioeventfd(vp, q, base, true);
		if (r) {
			/* the MMIO exit still delivers the notification */
			if (!vp->ioev_failed_logged)
				log_warn("virtio", "%s: no ioeventfd for queue notifications at 0x%llx: %s",
					 vp->vdev->id, (unsigned long long)base, strerror(-r));
			vp->ioev_failed_logged = true;
			while (q-- > 0)
				ioeventfd(vp, q, base, false);
			return;
		}
	}
	vp->ioev_on = true;
	vp->ioev_base = base;
}

/* The PCI layer's hook: BAR 4 started or stopped decoding, or moved (guest
 * configuration writes, reset, load). */
static void bar_mapped(struct pci_device *pd, unsigned bar, bool mapped, uint64_t addr)
{
	struct virtio_pci *vp = pd->opaque;
	if (bar != VIRTIO_PCI_BAR || !vp->vdev)
		return;
	pthread_mutex_lock(&vp->vdev->lock);
	ioev_set(vp, mapped, addr);
	pthread_mutex_unlock(&vp->vdev->lock);
}

static void on_kick(void *opaque, uint32_t events)
{
	struct virtio_pci_kick *k = opaque;
	struct virtio_pci *vp = k->vp;
	uint64_t n;
	(void)events;
	if (read(k->fd, &n, sizeof(n)) != sizeof(n))
		return;
	pthread_mutex_lock(&vp->vdev->lock);
	if (!vp->paused)
		virtio_dev_queue_kick(vp->vdev, k->q);
	pthread_mutex_unlock(&vp->vdev->lock);
}

/* --- common configuration --- */

static void put(uint8_t *p, unsigned off, unsigned size, uint64_t v)
{
	for (unsigned i = 0; i < size; i++)
		p[off + i] = (uint8_t)(v >> (8 * i));
}

static void common_snapshot(struct virtio_pci *vp, uint8_t *c)
{
	struct virtio_dev *dev = vp->vdev;
	struct virtqueue *vq = virtio_dev_queue(dev, vp->queue_select);
	memset(c, 0, VIRTIO_PCI_COMMON_SIZE);
	put(c, VIRTIO_PCI_COMMON_DFSELECT, 4, vp->dfselect);
	put(c, VIRTIO_PCI_COMMON_DF, 4, virtio_dev_get_device_features(dev, vp->dfselect));
	put(c, VIRTIO_PCI_COMMON_GFSELECT, 4, vp->gfselect);
	put(c, VIRTIO_PCI_COMMON_GF, 4, virtio_dev_get_driver_features(dev, vp->gfselect));
	put(c, VIRTIO_PCI_COMMON_MSIX, 2, vp->msix_config);
	put(c, VIRTIO_PCI_COMMON_NUMQ, 2, dev->nqueues);
	put(c, VIRTIO_PCI_COMMON_STATUS, 1, dev->status);
	put(c, VIRTIO_PCI_COMMON_CFGGENERATION, 1, dev->config_generation);
	put(c, VIRTIO_PCI_COMMON_Q_SELECT, 2, vp->queue_select);
	if (!vq) {
		put(c, VIRTIO_PCI_COMMON_Q_MSIX, 2, VIRTIO_MSI_NO_VECTOR);
		return;   /* queue_size 0: no such queue */
	}
	put(c, VIRTIO_PCI_COMMON_Q_SIZE, 2, vq->size);
	put(c, VIRTIO_PCI_COMMON_Q_MSIX, 2, vq->msix_vector);
	put(c, VIRTIO_PCI_COMMON_Q_ENABLE, 2, vq->enabled);
	put(c, VIRTIO_PCI_COMMON_Q_NOFF, 2, vp->queue_select);
	put(c, VIRTIO_PCI_COMMON_Q_DESCLO, 8, vq->desc_gpa);
	put(c, VIRTIO_PCI_COMMON_Q_AVAILLO, 8, vq->avail_gpa);
	put(c, VIRTIO_PCI_COMMON_Q_USEDLO, 8, vq->used_gpa);
}

static void set_half(uint64_t *field, bool high, uint32_t v)
{
	if (high)
		*field = (*field & 0xffffffffull) | ((uint64_t)v << 32);
	else
		*field = (*field & ~0xffffffffull) | v;
}

/* Reset of the transport's own registers, with the device's. */
static void transport_reset(struct virtio_pci *vp)
{
	vp->dfselect = vp->gfselect = 0;
	vp->queue_select = 0;
	vp->msix_config = VIRTIO_MSI_NO_VECTOR;
	vp->isr = 0;
	pci_set_irq(&vp->pci, 0);
}

static void common_write(struct virtio_pci *vp, unsigned off, unsigned size, uint64_t v)
{
	struct virtio_dev *dev = vp->vdev;
	struct virtqueue *vq = virtio_dev_queue(dev, vp->queue_select);
	uint64_t *addr = NULL;

	switch (off) {
	case VIRTIO_PCI_COMMON_DFSELECT:
		if (size == 4)
			vp->dfselect = (uint32_t)v;
		return;
	case VIRTIO_PCI_COMMON_GFSELECT:
		if (size == 4)
			vp->gfselect = (uint32_t)v;
		return;
	case VIRTIO_PCI_COMMON_GF:
		if (size == 4)
			virtio_dev_set_driver_features(dev, vp->gfselect, (uint32_t)v);
		return;
	case VIRTIO_PCI_COMMON_MSIX:
		if (size == 2)
			vp->msix_config = valid_vector(vp, (uint16_t)v);
		return;
	case VIRTIO_PCI_COMMON_STATUS:
		if (size != 1)
			return;
		virtio_dev_set_status(dev, (uint8_t)v);
		if ((uint8_t)v == 0)
			transport_reset(vp);
		return;
	case VIRTIO_PCI_COMMON_Q_SELECT:
		if (size == 2)
			vp->queue_select = (uint16_t)v;
		return;
	case VIRTIO_PCI_COMMON_Q_SIZE:
		if (size == 2 && vq && !vq->enabled)
			vq->size = (uint16_t)v;
		return;
	case VIRTIO_PCI_COMMON_Q_MSIX:
		if (size == 2 && vq)
			vq->msix_vector = valid_vector(vp, (uint16_t)v);
		return;
	case VIRTIO_PCI_COMMON_Q_ENABLE:
		/* 0 is not a valid write (no VIRTIO_F_RING_RESET) */
		if (size == 2 && vq && v == 1)
			virtio_dev_queue_enable(dev, vp->queue_select);
		return;
	}
	if (off >= VIRTIO_PCI_COMMON_Q_DESCLO && off < VIRTIO_PCI_COMMON_SIZE && vq && !vq->enabled) {
		unsigned field = (off - VIRTIO_PCI_COMMON_Q_DESCLO) / 8;
		bool high = (off - VIRTIO_PCI_COMMON_Q_DESCLO) % 8 == 4;
		addr = field == 0 ? &vq->desc_gpa : field == 1 ? &vq->avail_gpa : &vq->used_gpa;
		if (size == 8 && !high)
			*addr = v;
		else if (size == 4)
			set_half(addr, high, (uint32_t)v);
	}
}

/* --- BAR 4 --- */

void virtio_pci_bar_read(void *opaque, unsigned bar, uint64_t off, void *data, unsigned size)
{
	struct virtio_pci *vp = opaque;
	struct virtio_dev *dev = vp->vdev;
	(void)bar;
	memset(data, 0, size);
	pthread_mutex_lock(&dev->lock);
	if (off < VIRTIO_PCI_COMMON_SIZE) {
		uint8_t c[VIRTIO_PCI_COMMON_SIZE + 8];
		common_snapshot(vp, c);
		memset(c + VIRTIO_PCI_COMMON_SIZE, 0, 8);
		memcpy(data, c + off, size);
	} else if (off == VIRTIO_PCI_ISR_OFF) {
		*(uint8_t *)data = vp->isr;
		vp->isr = 0;   /* read to clear, and the INTx line drops */
		pci_set_irq(&vp->pci, 0);
	} else if (off >= VIRTIO_PCI_DEVICE_OFF && off < VIRTIO_PCI_DEVICE_OFF + 0x1000) {
		virtio_dev_read_config(dev, (uint32_t)(off - VIRTIO_PCI_DEVICE_OFF), data, size);
	}
	pthread_mutex_unlock(&dev->lock);
}

void virtio_pci_bar_write(void *opaque, unsigned bar, uint64_t off, const void *data,
			  unsigned size)
{
	struct virtio_pci *vp = opaque;
	struct virtio_dev *dev = vp->vdev;
	uint64_t v = 0;
	(void)bar;
	memcpy(&v, data, size < 8 ? size : 8);
	pthread_mutex_lock(&dev->lock);
	if (off < VIRTIO_PCI_COMMON_SIZE) {
		common_write(vp, (unsigned)off, size, v);
	} else if (off >= VIRTIO_PCI_DEVICE_OFF && off < VIRTIO_PCI_DEVICE_OFF + 0x1000) {
		virtio_dev_write_config(dev, (uint32_t)(off - VIRTIO_PCI_DEVICE_OFF), data, size);
	} else if (off >= VIRTIO_PCI_NOTIFY_OFF && off < VIRTIO_PCI_MSIX_OFF &&
		   (off - VIRTIO_PCI_NOTIFY_OFF) % VIRTIO_PCI_NOTIFY_MULT == 0) {
		/* the slow path: a notification the ioeventfd did not catch */
		if (!vp->paused)
			virtio_dev_queue_kick(dev, (unsigned)((off - VIRTIO_PCI_NOTIFY_OFF) /
							    VIRTIO_PCI_NOTIFY_MULT));
	}
	pthread_mutex_unlock(&dev->lock);
}

/* --- configuration space: the PCI_CFG window and BAR moves --- */

/* pci_cfg_data accesses go to BAR 4 at the capability's (bar, offset,
 * length); anything that does not name BAR 4 with an aligned 1/2/4-byte
 * access inside it reads as 0 and writes nowhere. */
static bool window(struct virtio_pci *vp, uint64_t *off, unsigned *len)
{
	unsigned cap = (unsigned)vp->cap_pci_cfg;
	uint32_t bar = pci_config_get(&vp->pci, cap + 4, 1);
	*off = pci_config_get(&vp->pci, cap + 8, 4);
	*len = pci_config_get(&vp->pci, cap + 12, 4);
	return bar == VIRTIO_PCI_BAR && (*len == 1 || *len == 2 || *len == 4) && *off % *len == 0 &&
	       *off + *len <= VIRTIO_PCI_MSIX_OFF;
}

static void cfg_read(struct pci_device *pd, unsigned off, unsigned size, uint32_t *val)
{
	struct virtio_pci *vp = pd->opaque;
	unsigned data = (unsigned)vp->cap_pci_cfg + 16;
	uint64_t boff;
	unsigned len;
	if (off != data || size != 4)
		return;
	uint32_t v = 0;
	if (window(vp, &boff, &len))
		virtio_pci_bar_read(vp, VIRTIO_PCI_BAR, boff, &v, len);
	*val = v;
}

static void cfg_write(struct pci_device *pd, unsigned off, unsigned size, uint32_t val)
{
	struct virtio_pci *vp = pd->opaque;
	unsigned data = (unsigned)vp->cap_pci_cfg + 16;
	uint64_t boff;
	unsigned len;
	if (off == data && size == 4 && window(vp, &boff, &len))
		virtio_pci_bar_write(vp, VIRTIO_PCI_BAR, boff, &val, len);
}

static const struct pci_device_ops vp_pci_ops = {
	.config_read = cfg_read,
	.config_write = cfg_write,
	.bar_mapped = bar_mapped,
};

/* --- set-up --- */

static int add_cap(struct virtio_pci *vp, uint8_t type, uint32_t off, uint32_t len,
		   unsigned cap_len, struct terr *err)
{
	int cap = pci_add_capability(&vp->pci, PCI_CAP_ID_VNDR, cap_len, err);
	if (cap < 0)
		return cap;
	unsigned c = (unsigned)cap;
	pci_config_set8(&vp->pci, c + 2, (uint8_t)cap_len);
	pci_config_set8(&vp->pci, c + 3, type);
	pci_config_set8(&vp->pci, c + 4, VIRTIO_PCI_BAR);
	pci_config_set32(&vp->pci, c + 8, off);
	pci_config_set32(&vp->pci, c + 12, len);
	return cap;
}

int virtio_pci_init(struct virtio_pci *vp, struct vm *vm, struct pci_bus *bus,
		    struct virtio_dev *vdev, const struct virtio_pci_params *p, struct terr *err)
{
	int r, cap;

	memset(vp, 0, sizeof(*vp));
	vp->vdev = vdev;
	vp->vm = vm;
	vp->nvec = vdev->nqueues + 1;
	vp->msix_config = VIRTIO_MSI_NO_VECTOR;
	pci_device_init(&vp->pci, vdev->id,
			&(struct pci_id){ .vendor = VIRTIO_PCI_VENDOR,
					  .device = (uint16_t)(VIRTIO_PCI_DEVICE_BASE + vdev->device_id),
					  .subsys_vendor = VIRTIO_PCI_VENDOR,
					  .subsys = VIRTIO_PCI_SUBSYS,
					  .class_code = p->class_code, .revision = 1, .intx_pin = 1 },
			&vp_pci_ops, vp);

	vp->kicks = calloc(vdev->nqueues, sizeof(*vp->kicks));
	if (!vp->kicks)
		return terr_set(err, ENOMEM, "%s: out of memory", vdev->id);
	for (unsigned q = 0; q < vdev->nqueues; q++)
		vp->kicks[q] = (struct virtio_pci_kick){ .vp = vp, .q = q, .fd = -1 };
	for (unsigned q = 0; q < vdev->nqueues; q++) {
		int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (fd < 0) {
			r = terr_set(err, errno, "%s: eventfd for queue %u: %s", vdev->id, q,
				     strerror(errno));
			goto fail;
		}
		vp->kicks[q].fd = fd;
		if ((r = evloop_add(&vm->loop, fd, EPOLLIN, on_kick, &vp->kicks[q]))) {
			terr_set(err, -r, "%s: cannot watch the notification eventfd: %s", vdev->id,
				 strerror(-r));
			goto fail;
		}
	}

	if ((r = pci_device_add_bar(&vp->pci, VIRTIO_PCI_BAR, PCI_BAR_MEM64, false, VIRTIO_PCI_BAR_SIZE,
				    virtio_pci_bar_read, virtio_pci_bar_write, vp, err)))
		goto fail;
	if ((r = add_cap(vp, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_COMMON_OFF, 0x1000, 16, err)) < 0 ||
	    (r = add_cap(vp, VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_ISR_OFF, 0x1000, 16, err)) < 0 ||
	    (r = add_cap(vp, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_DEVICE_OFF, 0x1000, 16, err)) < 0)
		goto fail;
	cap = add_cap(vp, VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_NOTIFY_OFF,
		      VIRTIO_PCI_NOTIFY_MULT * vdev->nqueues, 20, err);
	if ((r = cap) < 0)
		goto fail;
	pci_config_set32(&vp->pci, (unsigned)cap + 16, VIRTIO_PCI_NOTIFY_MULT);
	/* PCI_CFG: bar, offset, length and data are the driver's to write */
	cap = add_cap(vp, VIRTIO_PCI_CAP_PCI_CFG, 0, 0, 20, err);
	if ((r = cap) < 0)
		goto fail;
	pci_config_set8(&vp->pci, (unsigned)cap + 4, 0);
	pci_config_set_wmask(&vp->pci, (unsigned)cap + 4, 1, 0xff);
	pci_config_set_wmask(&vp->pci, (unsigned)cap + 8, 4, 0xffffffff);
	pci_config_set_wmask(&vp->pci, (unsigned)cap + 12, 4, 0xffffffff);
	pci_config_set_wmask(&vp->pci, (unsigned)cap + 16, 4, 0xffffffff);
	vp->cap_pci_cfg = cap;
	if ((r = pci_msix_init(&vp->pci, vp->nvec, VIRTIO_PCI_BAR, VIRTIO_PCI_MSIX_OFF,
			       VIRTIO_PCI_BAR, VIRTIO_PCI_PBA_OFF, err)) < 0)
		goto fail;
	if ((r = pci_device_attach(bus, &vp->pci, p->slot, err)))
		goto fail;
	virtio_dev_set_transport(vdev, &pci_transport, vp);
	return 0;
fail:
	virtio_pci_destroy(vp);
	return r < 0 ? r : -EINVAL;
}

void virtio_pci_destroy(struct virtio_pci *vp)
{
	if (!vp->vdev)
		return;
	pci_device_detach(&vp->pci);   /* no more BAR events after this */
	if (vp->kicks) {
		ioev_off(vp);
		for (unsigned q = 0; q < vp->vdev->nqueues; q++) {
			if (vp->kicks[q].fd < 0)
				continue;
			evloop_del(&vp->vm->loop, vp->kicks[q].fd);
			close(vp->kicks[q].fd);
		}
		free(vp->kicks);
		vp->kicks = NULL;
	}
	virtio_dev_set_transport(vp->vdev, NULL, NULL);
	vp->vdev = NULL;
}

void virtio_pci_reset(struct virtio_pci *vp)
{
	pci_device_reset(&vp->pci);
	pthread_mutex_lock(&vp->vdev->lock);
	virtio_dev_reset(vp->vdev);
	transport_reset(vp);
	pthread_mutex_unlock(&vp->vdev->lock);
}

void virtio_pci_pause(struct virtio_pci *vp)
{
	pthread_mutex_lock(&vp->vdev->lock);
	vp->paused = true;
	pthread_mutex_unlock(&vp->vdev->lock);
}

void virtio_pci_resume(struct virtio_pci *vp)
{
	struct virtio_dev *dev = vp->vdev;
	pthread_mutex_lock(&dev->lock);
	vp->paused = false;
	for (unsigned q = 0; q < dev->nqueues; q++)
		if (vq_has_avail(&dev->vqs[q]))
			virtio_dev_queue_kick(dev, q);
	pthread_mutex_unlock(&dev->lock);
}

int virtio_pci_save(struct virtio_pci *vp, struct state_writer *w)
{
	int r = pci_device_save(&vp->pci, w);
	if (r)
		return r;
	pthread_mutex_lock(&vp->vdev->lock);
	sw_uint(w, "device_feature_select", vp->dfselect);
	sw_uint(w, "driver_feature_select", vp->gfselect);
	sw_uint(w, "queue_select", vp->queue_select);
	sw_uint(w, "msix_config", vp->msix_config);
	sw_uint(w, "isr", vp->isr);
	r = virtio_dev_save(vp->vdev, w);
	pthread_mutex_unlock(&vp->vdev->lock);
	return r ? r : w->err;
}

int virtio_pci_load(struct virtio_pci *vp, const struct state_reader *r, struct terr *err)
{
	uint64_t dfs, gfs, qs, mc, isr;
	int ret;

	if ((ret = sr_uint_max(r, "device_feature_select", 0, 0xffffffff, &dfs, err)) ||
	    (ret = sr_uint_max(r, "driver_feature_select", 0, 0xffffffff, &gfs, err)) ||
	    (ret = sr_uint_max(r, "queue_select", 0, 0xffff, &qs, err)) ||
	    (ret = sr_uint_max(r, "msix_config", VIRTIO_MSI_NO_VECTOR, 0xffff, &mc, err)) ||
	    (ret = sr_uint_max(r, "isr", 0, VIRTIO_PCI_ISR_QUEUE | VIRTIO_PCI_ISR_CONFIG, &isr, err)))
		return ret;
	if ((ret = pci_device_load(&vp->pci, r, err)))
		return ret;
	pthread_mutex_lock(&vp->vdev->lock);
	ret = virtio_dev_load(vp->vdev, r, err);
	if (!ret) {
		vp->dfselect = (uint32_t)dfs;
		vp->gfselect = (uint32_t)gfs;
		vp->queue_select = (uint16_t)qs;
		vp->msix_config = valid_vector(vp, (uint16_t)mc);
		vp->isr = (uint8_t)isr;
		for (unsigned q = 0; q < vp->vdev->nqueues; q++)
			vp->vdev->vqs[q].msix_vector = valid_vector(vp, vp->vdev->vqs[q].msix_vector);
	}
	pthread_mutex_unlock(&vp->vdev->lock);
	return ret;
}
