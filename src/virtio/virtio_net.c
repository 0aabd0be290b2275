#include "virtio/virtio_net.h"
#include "config/config.h"
#include "core/vm.h"
#include "net/net.h"
#include "util/log.h"
#include "virtio/virtio_dev.h"
#include "virtio/virtio_pci.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define RXQ 0
#define TXQ 1
#define CTRLQ 2
#define NQUEUES 3
#define HDR NET_VNET_HDR_LEN
/* Work done per event before giving the event loop back to others. */
#define RX_BURST 256
#define TX_BURST 256
#define LOG_INTERVAL_NS (5ll * 1000000000ll)

/* At most one message per interval and kind; the rest are counted. */
struct ratelog {
	int64_t next_ns;
	uint64_t suppressed;
};

struct virtio_net {
	struct device dev;
	struct virtio_dev vdev;
	struct virtio_pci vp;
	struct vm *vm;
	struct net_backend *be;
	bool vdev_ready, vp_ready;

	/* guest-visible, saved */
	uint8_t mac[6];
	uint16_t status;
	/* guest-visible, from the configuration (a restore rebuilds it) */
	uint16_t mtu;                 /* offered with VIRTIO_NET_F_MTU, 0: not */

	/* host side */
	struct vq_chain chain, first;   /* reused across requests */
	uint8_t *rxbuf;                 /* one frame from the back end, header first */
	uint32_t rx_pending;            /* its length while it waits for guest buffers */
	bool rx_watched;                /* be->rx_fd is on the event loop */
	unsigned rx_popped;             /* chains popped when there was not enough room */
	uint16_t *heads;                /* mergeable receive: chains of one frame */
	uint32_t *lens;
	struct iovec *txiov;
	unsigned txiov_cap;
	int tx_more_fd;                 /* eventfd: continue a long transmit burst */
	bool tx_more_on_loop;
	unsigned offloads;              /* NET_OFF_* last given to the back end */
	bool announce_pending;          /* state was loaded: announce on resume */
	struct virtio_net_stats stats;
	struct ratelog log_tx, log_rx, log_be;
};

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static void ratelog(struct virtio_net *n, struct ratelog *rl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void ratelog(struct virtio_net *n, struct ratelog *rl, const char *fmt, ...)
{
	int64_t now = now_ns();
	if (now < rl->next_ns) {
		rl->suppressed++;
		return;
	}
	char msg[256], more[64] = "";
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (rl->suppressed)
		snprintf(more, sizeof(more), " (%llu similar messages suppressed)",
			 (unsigned long long)rl->suppressed);
	log_warn("virtio", "%s: %s%s", n->dev.id, msg, more);
	rl->suppressed = 0;
	rl->next_ns = now + LOG_INTERVAL_NS;
}

static bool has(const struct virtio_net *n, unsigned bit)
{
	return virtio_dev_has_feature(&n->vdev, bit);
}

static bool driver_running(const struct virtio_net *n)
{
	return (n->vdev.status & VIRTIO_STATUS_DRIVER_OK) &&
	       !(n->vdev.status & VIRTIO_STATUS_NEEDS_RESET) && !n->vp.paused;
}

/* --- receive: back end -> guest --- */

static void on_rx(void *opaque, uint32_t events);

static void rx_watch(struct virtio_net *n, bool on)
{
	if (on == n->rx_watched)
		return;
	if (on) {
		int r = evloop_add(&n->vm->loop, n->be->rx_fd, EPOLLIN, on_rx, n);
		if (r) {
			ratelog(n, &n->log_be, "cannot watch the %s back end: %s", n->be->ops->kind,
				strerror(-r));
			return;
		}
	} else {
		evloop_del(&n->vm->loop, n->be->rx_fd);
	}
	n->rx_watched = on;
}

/* Check the header of a received frame against what the guest accepted.
 * false: drop it. */
static bool rx_fixup(struct virtio_net *n)
{
	uint8_t *h = n->rxbuf;
	if (!n->be->vnet_hdr) {
		memset(h, 0, HDR);
		return true;
	}
	uint8_t gso = h[1] & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN, flags = h[0];
	bool ok = true;
	if (!has(n, VIRTIO_NET_F_GUEST_CSUM)) {
		/* the guest gets complete checksums and no flags */
		ok = !(flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && gso == VIRTIO_NET_HDR_GSO_NONE;
		h[0] = 0;
	} else if (gso != VIRTIO_NET_HDR_GSO_NONE) {
		ok = (gso == VIRTIO_NET_HDR_GSO_TCPV4 && has(n, VIRTIO_NET_F_GUEST_TSO4)) ||
		     (gso == VIRTIO_NET_HDR_GSO_TCPV6 && has(n, VIRTIO_NET_F_GUEST_TSO6)) ||
		     (gso == VIRTIO_NET_HDR_GSO_UDP && has(n, VIRTIO_NET_F_GUEST_UFO));
		if ((h[1] & VIRTIO_NET_HDR_GSO_ECN) && !has(n, VIRTIO_NET_F_GUEST_ECN))
			ok = false;
	}
	if (!ok)
		ratelog(n, &n->log_rx, "the host sent a frame with offloads the guest did not accept "
			"(flags 0x%x, gso 0x%x); dropped", flags, h[1]);
	return ok;
}

enum { RX_NO_ROOM, RX_DONE, RX_DROPPED, RX_BROKEN };

/* Put the pending frame into the guest's receive buffers: one chain, or with
 * VIRTIO_NET_F_MRG_RXBUF as many as it takes (num_buffers in the header of
 * the first), published at once. */
static int rx_deliver(struct virtio_net *n)
{
	struct virtqueue *vq = &n->vdev.vqs[RXQ];
	bool mrg = has(n, VIRTIO_NET_F_MRG_RXBUF);
	uint32_t total = n->rx_pending, off = 0;
	unsigned used = 0;

	while (off < total) {
		if (used == vq->size) {
			/* the whole ring is smaller than the frame */
			vq_unpop(vq, used);
			ratelog(n, &n->log_rx, "a %u-byte frame does not fit in the %u receive buffers of "
				"the guest; dropped", total - HDR, used);
			return RX_DROPPED;
		}
		struct vq_chain *c = used ? &n->chain : &n->first;
		int r = vq_pop(vq, c);
		if (r <= 0) {
			if (r == -EIO)
				return RX_BROKEN;
			/* the caller hands them back (after asking for a kick) */
			n->rx_popped = used;
			return RX_NO_ROOM;
		}
		if (c->in_len < (used ? 1u : HDR)) {
			vq_fail(vq, "receive buffer at head %u has %u writable bytes, less than %s", c->head,
				c->in_len, used ? "one" : "the 12-byte virtio-net header");
			return RX_BROKEN;
		}
		if (!mrg && c->in_len < total) {
			vq_unpop(vq, 1);
			ratelog(n, &n->log_rx, "a %u-byte frame does not fit in the guest's %u-byte receive "
				"buffer (no mergeable buffers); dropped", total - HDR, c->in_len - HDR);
			return RX_DROPPED;
		}
		uint32_t len = c->in_len < total - off ? c->in_len : total - off;
		vq_chain_copy_to(c, 0, n->rxbuf + off, len);
		n->heads[used] = c->head;
		n->lens[used] = len;
		used++;
		off += len;
	}
	uint16_t nb = htole16((uint16_t)used);
	vq_chain_copy_to(&n->first, 10, &nb, 2);
	if (vq_push_batch(vq, n->heads, n->lens, used))
		return RX_BROKEN;
	n->stats.rx_frames++;
	n->stats.rx_bytes += total - HDR;
	return RX_DONE;
}

/* Move frames from the back end into the guest while both have some. */
static void rx_process(struct virtio_net *n)
{
	struct virtqueue *vq = &n->vdev.vqs[RXQ];
	bool pushed = false;

	if (!driver_running(n) || !vq_is_ready(vq)) {
		rx_watch(n, false);
		return;
	}
	/* kicks are only wanted when the device waits for buffers */
	vq_notify_disable(vq);
	for (unsigned budget = RX_BURST; budget; budget--) {
		if (!n->rx_pending) {
			uint8_t *dst = n->be->vnet_hdr ? n->rxbuf : n->rxbuf + HDR;
			size_t room = n->be->vnet_hdr ? NET_MAX_FRAME : NET_MAX_FRAME - HDR;
			ssize_t len = net_recv(n->be, dst, room);
			if (len == 0)
				break;
			if (len < 0) {
				ratelog(n, &n->log_be, "receiving from the %s back end: %s", n->be->ops->kind,
					strerror((int)-len));
				break;
			}
			uint32_t total = (uint32_t)len + (n->be->vnet_hdr ? 0 : HDR);
			if (total < HDR + 14) {
				n->stats.rx_dropped++;
				continue;
			}
			n->rx_pending = total;
			if (!rx_fixup(n)) {
				n->stats.rx_dropped++;
				n->rx_pending = 0;
				continue;
			}
		}
		int r = rx_deliver(n);
		if (r == RX_DONE || r == RX_DROPPED) {
			if (r == RX_DONE)
				pushed = true;
			else
				n->stats.rx_dropped++;
			n->rx_pending = 0;
			continue;
		}
		if (r == RX_BROKEN) {
			n->rx_pending = 0;
			rx_watch(n, false);
			goto out;
		}
		/* No room: ask for a kick, then give the buffers back; if more came
		 * meanwhile, try again (the disable / enable / recheck loop, so no
		 * kick is lost and no buffer is half-used). */
		bool more = vq_notify_enable(vq);
		vq_unpop(vq, n->rx_popped);
		if (more) {
			vq_notify_disable(vq);
			continue;
		}
		rx_watch(n, false);
		goto out;
	}
	rx_watch(n, true);
out:
	if (pushed)
		virtio_dev_notify(&n->vdev, RXQ);
}

static void on_rx(void *opaque, uint32_t events)
{
	struct virtio_net *n = opaque;
	(void)events;
	pthread_mutex_lock(&n->vdev.lock);
	if (n->rx_watched)
		rx_process(n);
	pthread_mutex_unlock(&n->vdev.lock);
}

/* --- transmit: guest -> back end --- */

/* Build the iovec of the chain's readable part from byte `skip` on. */
static unsigned tx_iov(struct virtio_net *n, const struct vq_chain *c, uint32_t skip)
{
	if (n->txiov_cap < c->nout) {
		struct iovec *v = realloc(n->txiov, c->nout * sizeof(*v));
		if (!v)
			return 0;
		n->txiov = v;
		n->txiov_cap = c->nout;
	}
	unsigned k = 0;
	for (unsigned i = 0; i < c->nout; i++) {
		size_t l = c->iov[i].iov_len;
		if (skip >= l) {
			skip -= (uint32_t)l;
			continue;
		}
		n->txiov[k].iov_base = (uint8_t *)c->iov[i].iov_base + skip;
		n->txiov[k].iov_len = l - skip;
		skip = 0;
		k++;
	}
	return k;
}

static void tx_one(struct virtio_net *n, const struct vq_chain *c)
{
	uint8_t h[HDR];
	if (c->out_len < HDR) {
		ratelog(n, &n->log_tx, "transmit buffer at head %u holds %u bytes, less than the 12-byte "
			"virtio-net header; dropped", c->head, c->out_len);
		goto drop;
	}
	vq_chain_copy_from(c, 0, h, HDR);
	uint32_t len = c->out_len - HDR;
	uint8_t gso = h[1] & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
	bool gso_ok = (gso == VIRTIO_NET_HDR_GSO_NONE && !(h[1] & VIRTIO_NET_HDR_GSO_ECN)) ||
		      (gso == VIRTIO_NET_HDR_GSO_TCPV4 && has(n, VIRTIO_NET_F_HOST_TSO4)) ||
		      (gso == VIRTIO_NET_HDR_GSO_TCPV6 && has(n, VIRTIO_NET_F_HOST_TSO6)) ||
		      (gso == VIRTIO_NET_HDR_GSO_UDP && has(n, VIRTIO_NET_F_HOST_UFO));
	if ((h[1] & VIRTIO_NET_HDR_GSO_ECN) && !has(n, VIRTIO_NET_F_HOST_ECN))
		gso_ok = false;
	if (!gso_ok) {
		ratelog(n, &n->log_tx, "transmit with segmentation type 0x%x that was not negotiated; "
			"dropped", h[1]);
		goto drop;
	}
	if ((h[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM) && !has(n, VIRTIO_NET_F_CSUM)) {
		ratelog(n, &n->log_tx, "transmit asks for checksum offload, which was not negotiated; "
			"dropped");
		goto drop;
	}
	/* a frame without segmentation: up to the MTU offered (plus an
	 * Ethernet header and a VLAN tag), at least a jumbo frame */
	uint32_t max = NET_MAX_FRAME - HDR;
	if (gso == VIRTIO_NET_HDR_GSO_NONE && (uint32_t)n->mtu + 18 < max)
		max = (uint32_t)n->mtu + 18 > NET_MAX_PLAIN_FRAME ? (uint32_t)n->mtu + 18
								  : NET_MAX_PLAIN_FRAME;
	if (len < 14 || len > max) {
		ratelog(n, &n->log_tx, "transmit frame of %u bytes (%s); dropped", len,
			len < 14 ? "shorter than an Ethernet header" : "too long");
		goto drop;
	}
	unsigned cnt = tx_iov(n, c, n->be->vnet_hdr ? 0 : HDR);
	if (!cnt)
		goto drop;
	int r = net_send(n->be, n->txiov, cnt);
	if (r) {
		ratelog(n, &n->log_be, "the %s back end did not take a %u-byte frame: %s",
			n->be->ops->kind, len, strerror(-r));
		goto drop;
	}
	n->stats.tx_frames++;
	n->stats.tx_bytes += len;
	return;
drop:
	n->stats.tx_dropped++;
}

static void tx_process(struct virtio_net *n)
{
	struct virtqueue *vq = &n->vdev.vqs[TXQ];
	unsigned budget = TX_BURST;
	bool pushed = false;

	if (!driver_running(n) || !vq_is_ready(vq))
		return;
	for (;;) {
		vq_notify_disable(vq);
		while (budget) {
			if (vq_pop(vq, &n->chain) != 1)
				break;
			tx_one(n, &n->chain);
			vq_push(vq, n->chain.head, 0);
			pushed = true;
			budget--;
		}
		if (!budget) {
			/* more later, after others had their turn: kicks stay off */
			uint64_t one = 1;
			if (write(n->tx_more_fd, &one, sizeof(one)) < 0)
				vq_notify_enable(vq);
			break;
		}
		if (!vq_notify_enable(vq))
			break;
	}
	if (pushed)
		virtio_dev_notify(&n->vdev, TXQ);
}

static void on_tx_more(void *opaque, uint32_t events)
{
	struct virtio_net *n = opaque;
	uint64_t v;
	(void)events;
	if (read(n->tx_more_fd, &v, sizeof(v)) < 0)
		return;
	pthread_mutex_lock(&n->vdev.lock);
	tx_process(n);
	pthread_mutex_unlock(&n->vdev.lock);
}

/* --- control queue (5.1.6.5): receive modes and MAC filters are accepted
 * (every frame reaches the guest anyway), the MAC address can be set, and
 * the guest acknowledges announcements --- */

#define CTRL_RX              0
#define CTRL_RX_NOBCAST      5
#define CTRL_MAC             1
#define CTRL_MAC_TABLE_SET   0
#define CTRL_MAC_ADDR_SET    1
#define CTRL_ANNOUNCE        3
#define CTRL_ANNOUNCE_ACK    0
#define CTRL_OK              0
#define CTRL_ERR             1

static uint8_t ctrl_one(struct virtio_net *n, const struct vq_chain *c)
{
	uint8_t h[2];
	if (vq_chain_copy_from(c, 0, h, 2) != 2)
		return CTRL_ERR;
	uint32_t dlen = c->out_len - 2;
	switch (h[0]) {
	case CTRL_RX:
		/* promiscuous, all-multicast, ...: one byte, on or off */
		return h[1] <= CTRL_RX_NOBCAST && dlen == 1 ? CTRL_OK : CTRL_ERR;
	case CTRL_MAC:
		if (h[1] == CTRL_MAC_ADDR_SET && dlen == 6 &&
		    has(n, VIRTIO_NET_F_CTRL_MAC_ADDR)) {
			uint8_t mac[6];
			vq_chain_copy_from(c, 2, mac, 6);
			if (mac[0] & 1)
				return CTRL_ERR;   /* not a unicast address */
			memcpy(n->mac, mac, 6);
			return CTRL_OK;
		}
		if (h[1] == CTRL_MAC_TABLE_SET) {
			/* two tables: le32 count, then count MACs; check the sizes */
			uint32_t off = 2, cnt;
			for (int t = 0; t < 2; t++) {
				if (vq_chain_copy_from(c, off, &cnt, 4) != 4)
					return CTRL_ERR;
				cnt = le32toh(cnt);
				if (cnt > (c->out_len - off - 4) / 6)
					return CTRL_ERR;
				off += 4 + 6 * cnt;
			}
			return off == c->out_len ? CTRL_OK : CTRL_ERR;
		}
		return CTRL_ERR;
	case CTRL_ANNOUNCE:
		if (h[1] != CTRL_ANNOUNCE_ACK || !has(n, VIRTIO_NET_F_GUEST_ANNOUNCE))
			return CTRL_ERR;
		n->status &= (uint16_t)~VIRTIO_NET_S_ANNOUNCE;
		return CTRL_OK;
	}
	return CTRL_ERR;
}

static void ctrl_process(struct virtio_net *n)
{
	struct virtqueue *vq = &n->vdev.vqs[CTRLQ];
	bool pushed = false;
	if (!driver_running(n) || !vq_is_ready(vq))
		return;
	while (vq_pop(vq, &n->chain) == 1) {
		const struct vq_chain *c = &n->chain;
		if (c->in_len < 1 || c->out_len < 2) {
			vq_fail(vq, "control command at head %u: %u bytes of command and %u for the "
				"status (needs at least 2 and 1)", c->head, c->out_len, c->in_len);
			return;
		}
		uint8_t ack = ctrl_one(n, c);
		/* the status byte is the last writable one */
		vq_chain_copy_to(c, c->in_len - 1, &ack, 1);
		vq_push(vq, c->head, 1);
		pushed = true;
	}
	if (pushed)
		virtio_dev_notify(&n->vdev, CTRLQ);
}

/* Ask the guest to announce itself (gratuitous ARP, unsolicited neighbour
 * advertisements) after it moved: a restored snapshot, a migration. */
static void announce(struct virtio_net *n)
{
	if (!(n->vdev.status & VIRTIO_STATUS_DRIVER_OK) || !has(n, VIRTIO_NET_F_GUEST_ANNOUNCE) ||
	    !has(n, VIRTIO_NET_F_CTRL_VQ))
		return;
	n->status |= VIRTIO_NET_S_ANNOUNCE;
	virtio_dev_config_changed(&n->vdev);
}

/* --- the virtio device --- */

static void net_get_config(struct virtio_dev *vdev, uint32_t off, void *buf, uint32_t len)
{
	struct virtio_net *n = vdev->priv;
	uint8_t c[VIRTIO_NET_CONFIG_SIZE];
	memcpy(c, n->mac, 6);
	uint16_t st = htole16(n->status), pairs = htole16(1), mtu = htole16(n->mtu);
	memcpy(c + 6, &st, 2);
	memcpy(c + 8, &pairs, 2);
	memcpy(c + 10, &mtu, 2);
	memcpy(buf, c + off, len);
}

static void net_queue_notify(struct virtio_dev *vdev, unsigned q)
{
	struct virtio_net *n = vdev->priv;
	if (q == RXQ)
		rx_process(n);
	else if (q == TXQ)
		tx_process(n);
	else if (q == CTRLQ)
		ctrl_process(n);
}

static unsigned wanted_offloads(const struct virtio_net *n)
{
	unsigned off = 0;
	if (!(n->vdev.status & VIRTIO_STATUS_DRIVER_OK) || !has(n, VIRTIO_NET_F_GUEST_CSUM))
		return 0;
	off |= NET_OFF_CSUM;
	if (has(n, VIRTIO_NET_F_GUEST_TSO4))
		off |= NET_OFF_TSO4;
	if (has(n, VIRTIO_NET_F_GUEST_TSO6))
		off |= NET_OFF_TSO6;
	if (has(n, VIRTIO_NET_F_GUEST_ECN))
		off |= NET_OFF_TSO_ECN;
	if (has(n, VIRTIO_NET_F_GUEST_UFO))
		off |= NET_OFF_UFO;
	return off & n->be->offloads;
}

static void apply_offloads(struct virtio_net *n)
{
	unsigned off = wanted_offloads(n);
	if (off == n->offloads)
		return;
	int r = net_set_offloads(n->be, off);
	if (r)
		ratelog(n, &n->log_be, "cannot set the %s back end's offloads to 0x%x: %s",
			n->be->ops->kind, off, strerror(-r));
	else
		n->offloads = off;
}

static void net_vdev_reset(struct virtio_dev *vdev)
{
	struct virtio_net *n = vdev->priv;
	n->rx_pending = 0;
	rx_watch(n, false);
	apply_offloads(n);
}

static void net_driver_ok(struct virtio_dev *vdev)
{
	struct virtio_net *n = vdev->priv;
	apply_offloads(n);
	rx_process(n);
	tx_process(n);
}

static int net_vdev_save(struct virtio_dev *vdev, struct state_writer *w)
{
	struct virtio_net *n = vdev->priv;
	sw_bytes(w, "mac", n->mac, 6);
	sw_uint(w, "status", n->status);
	return 0;
}

static int net_vdev_load(struct virtio_dev *vdev, const struct state_reader *r, struct terr *err)
{
	struct virtio_net *n = vdev->priv;
	uint64_t st;
	int ret;
	if (sr_find(r, "mac") && (ret = sr_bytes_exact(r, "mac", n->mac, 6, err)))
		return ret;
	if ((ret = sr_uint_max(r, "status", VIRTIO_NET_S_LINK_UP, 0xffff, &st, err)))
		return ret;
	n->status = (uint16_t)st;
	return 0;
}

static const struct virtio_dev_ops net_vdev_ops = {
	.get_config = net_get_config,
	.queue_notify = net_queue_notify,
	.reset = net_vdev_reset,
	.driver_ok = net_driver_ok,
	.save = net_vdev_save,
	.load = net_vdev_load,
};

/* --- the device --- */

static struct virtio_net *to_net(struct device *d)
{
	return (struct virtio_net *)d;
}

static void net_reset(struct device *d)
{
	virtio_pci_reset(&to_net(d)->vp);
}

static int net_pause(struct device *d)
{
	struct virtio_net *n = to_net(d);
	virtio_pci_pause(&n->vp);
	pthread_mutex_lock(&n->vdev.lock);
	rx_watch(n, false);
	pthread_mutex_unlock(&n->vdev.lock);
	return 0;
}

static void net_resume(struct device *d)
{
	struct virtio_net *n = to_net(d);
	virtio_pci_resume(&n->vp);
	/* a burst cut short before the pause, and frames that waited */
	pthread_mutex_lock(&n->vdev.lock);
	tx_process(n);
	rx_process(n);
	ctrl_process(n);
	if (n->announce_pending) {
		n->announce_pending = false;
		announce(n);
	}
	pthread_mutex_unlock(&n->vdev.lock);
}

static int net_save(struct device *d, struct state_writer *w)
{
	return virtio_pci_save(&to_net(d)->vp, w);
}

static int net_load(struct device *d, const struct state_reader *r, struct terr *err)
{
	struct virtio_net *n = to_net(d);
	int ret = virtio_pci_load(&n->vp, r, err);
	pthread_mutex_lock(&n->vdev.lock);
	/* a frame that waited belongs to the timeline the state replaced */
	n->rx_pending = 0;
	rx_watch(n, false);
	apply_offloads(n);
	/* the guest now runs somewhere else: it announces itself at resume */
	n->announce_pending = !ret;
	if (!n->vp.paused) {
		tx_process(n);
		rx_process(n);
	}
	pthread_mutex_unlock(&n->vdev.lock);
	return ret;
}

static void net_destroy(struct device *d)
{
	struct virtio_net *n = to_net(d);
	if (n->rx_watched)
		evloop_del(&n->vm->loop, n->be->rx_fd);
	if (n->tx_more_on_loop)
		evloop_del(&n->vm->loop, n->tx_more_fd);
	if (n->vp_ready)
		virtio_pci_destroy(&n->vp);
	if (n->vdev_ready)
		virtio_dev_destroy(&n->vdev);
	net_backend_destroy(n->be);
	if (n->tx_more_fd >= 0)
		close(n->tx_more_fd);
	vq_chain_free(&n->chain);
	vq_chain_free(&n->first);
	free(n->rxbuf);
	free(n->heads);
	free(n->lens);
	free(n->txiov);
	free(n);
}

const struct device_ops virtio_net_ops = {
	.type = "virtio-net",
	.state_version = 1,
	.state_min_version = 1,
	.reset = net_reset,
	.pause = net_pause,
	.resume = net_resume,
	.save = net_save,
	.load = net_load,
	.destroy = net_destroy,
};

void virtio_net_get_stats(struct device *d, struct virtio_net_stats *out)
{
	struct virtio_net *n = to_net(d);
	pthread_mutex_lock(&n->vdev.lock);
	*out = n->stats;
	pthread_mutex_unlock(&n->vdev.lock);
}

static uint64_t features_for(const struct net_backend *be, uint16_t mtu)
{
	uint64_t f = (1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_NET_F_STATUS) |
		     (1ull << VIRTIO_NET_F_MRG_RXBUF) | (1ull << VIRTIO_NET_F_CTRL_VQ) |
		     (1ull << VIRTIO_NET_F_CTRL_RX) | (1ull << VIRTIO_NET_F_GUEST_ANNOUNCE) |
		     (1ull << VIRTIO_NET_F_CTRL_MAC_ADDR);
	if (mtu)
		f |= 1ull << VIRTIO_NET_F_MTU;
	if (!be->vnet_hdr || !(be->offloads & NET_OFF_CSUM))
		return f;
	f |= (1ull << VIRTIO_NET_F_CSUM) | (1ull << VIRTIO_NET_F_GUEST_CSUM);
	if (be->offloads & NET_OFF_TSO4)
		f |= (1ull << VIRTIO_NET_F_HOST_TSO4) | (1ull << VIRTIO_NET_F_GUEST_TSO4);
	if (be->offloads & NET_OFF_TSO6)
		f |= (1ull << VIRTIO_NET_F_HOST_TSO6) | (1ull << VIRTIO_NET_F_GUEST_TSO6);
	if (be->offloads & NET_OFF_TSO_ECN)
		f |= (1ull << VIRTIO_NET_F_HOST_ECN) | (1ull << VIRTIO_NET_F_GUEST_ECN);
	if (be->offloads & NET_OFF_UFO)
		f |= (1ull << VIRTIO_NET_F_HOST_UFO) | (1ull << VIRTIO_NET_F_GUEST_UFO);
	return f;
}

int virtio_net_create(struct vm *vm, struct pci_bus *bus, const struct virtio_net_params *p,
		      struct device **out, struct terr *err)
{
	struct virtio_net *n = calloc(1, sizeof(*n));
	int r;
	if (!n) {
		net_backend_destroy(p->be);
		return terr_set(err, ENOMEM, "%s: out of memory", p->id);
	}
	n->dev.ops = &virtio_net_ops;
	snprintf(n->dev.id, sizeof(n->dev.id), "%s", p->id);
	n->dev.priv = n;
	n->vm = vm;
	n->be = p->be;
	n->tx_more_fd = -1;
	memcpy(n->mac, p->mac, 6);
	n->mtu = p->mtu;
	n->status = VIRTIO_NET_S_LINK_UP;
	vq_chain_init(&n->chain);
	vq_chain_init(&n->first);
	n->rxbuf = malloc(NET_MAX_FRAME);
	n->heads = calloc(VIRTIO_NET_QUEUE_SIZE, sizeof(*n->heads));
	n->lens = calloc(VIRTIO_NET_QUEUE_SIZE, sizeof(*n->lens));
	n->tx_more_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!n->be || !n->rxbuf || !n->heads || !n->lens || n->tx_more_fd < 0) {
		r = terr_set(err, n->be ? ENOMEM : EINVAL, "%s: %s", p->id,
			     n->be ? "out of memory" : "no network back end");
		net_destroy(&n->dev);
		return r;
	}
	if ((r = evloop_add(&vm->loop, n->tx_more_fd, EPOLLIN, on_tx_more, n))) {
		r = terr_set(err, -r, "%s: cannot use the event loop: %s", p->id, strerror(-r));
		net_destroy(&n->dev);
		return r;
	}
	n->tx_more_on_loop = true;
	struct virtio_dev_params vp = {
		.ops = &net_vdev_ops, .priv = n, .mem = &vm->mem, .id = n->dev.id,
		.device_id = VIRTIO_ID_NET, .features = features_for(n->be, p->mtu), .nqueues = NQUEUES,
		.queue_size = VIRTIO_NET_QUEUE_SIZE, .config_size = VIRTIO_NET_CONFIG_SIZE,
	};
	if ((r = virtio_dev_init(&n->vdev, &vp, err))) {
		net_destroy(&n->dev);
		return r;
	}
	n->vdev_ready = true;
	if ((r = virtio_pci_init(&n->vp, vm, bus, &n->vdev,
				 &(struct virtio_pci_params){ .class_code = 0x020000, .slot = p->slot },
				 err))) {
		net_destroy(&n->dev);
		return r;
	}
	n->vp_ready = true;
	vm_add_device(vm, &n->dev);
	*out = &n->dev;
	return 0;
}

/* --- from the configuration --- */

void virtio_net_default_mac(const char *vm_name, unsigned index, uint8_t mac[6])
{
	/* FNV-1a over "name\0index" */
	uint32_t h = 2166136261u;
	char idx[16];
	snprintf(idx, sizeof(idx), "%u", index);
	for (const char *p = vm_name ? vm_name : ""; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	h = (h ^ 0) * 16777619u;
	for (const char *p = idx; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	mac[0] = 0x52;   /* locally administered, unicast */
	mac[1] = 0x54;
	mac[2] = (uint8_t)(h >> 24);
	mac[3] = (uint8_t)(h >> 16);
	mac[4] = (uint8_t)(h >> 8);
	mac[5] = (uint8_t)h;
}

int virtio_net_create_from_config(struct vm *vm, struct pci_bus *bus, struct config *cfg,
				  unsigned index, struct device **out, struct terr *err)
{
	char id[32], key[64];
	const char *name, *tap, *fwd;
	unsigned backend;
	struct virtio_net_params p = { .id = id, .slot = -1 };
	int r;

	snprintf(id, sizeof(id), "net.%u", index);
	if ((r = config_get_str(cfg, "name", &name, err)))
		return r;
	snprintf(key, sizeof(key), "net.%u.backend", index);
	if ((r = config_get_enum(cfg, key, &backend, err)))
		return r;
	snprintf(key, sizeof(key), "net.%u.mac", index);
	if (config_is_set(cfg, key)) {
		if ((r = config_get_mac(cfg, key, p.mac, err)))
			return r;
	} else {
		virtio_net_default_mac(name, index, p.mac);
	}
	snprintf(key, sizeof(key), "net.%u.tap", index);
	if ((r = config_get_str(cfg, key, &tap, err)))
		return r;
	snprintf(key, sizeof(key), "net.%u.hostfwd", index);
	if ((r = config_get_str(cfg, key, &fwd, err)))
		return r;
	char mkey[64];
	int64_t mtu;
	snprintf(mkey, sizeof(mkey), "net.%u.mtu", index);
	if ((r = config_get_int(cfg, mkey, &mtu, err)))
		return r;
	if (mtu > 0 && mtu < 68)
		return terr_set(err, EINVAL, "%s: %lld is below the smallest IPv4 MTU, 68 (0 picks "
				"one for the back end)", mkey, (long long)mtu);
	if (mtu == 0)
		mtu = backend == 0 ? NET_SLIRP_MTU : 0;
	p.mtu = (uint16_t)mtu;

	if (backend == 0) {   /* user */
		if (tap)
			return terr_set(err, EINVAL, "net.%u.tap is set but net.%u.backend is user "
					"(set net.%u.backend=tap to use a tap)", index, index, index);
		struct net_hostfwd hf[NET_MAX_HOSTFWD];
		int nf = net_hostfwd_parse(fwd, hf, NET_MAX_HOSTFWD, key, err);
		if (nf < 0)
			return nf;
		struct net_slirp_params sp = { .id = id, .hostfwd = hf, .nhostfwd = (size_t)nf,
					       .hostname = name, .mtu = p.mtu };
		r = net_slirp_create(&vm->loop, &sp, &p.be, err);
	} else {              /* tap */
		if (fwd)
			return terr_set(err, EINVAL, "net.%u.hostfwd only applies to the user back end "
					"(net.%u.backend is tap)", index, index);
		struct net_tap_params tp = { .id = id, .ifname = tap };
		r = net_tap_create(&tp, &p.be, err);
	}
	if (r)
		return r;
	return virtio_net_create(vm, bus, &p, out, err);
}
