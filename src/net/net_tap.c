/* The tap back end: /dev/net/tun with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and
 * a 12-byte vnet header (TUNSETVNETHDRSZ), so frames go to and come from the
 * kernel in exactly the layout the guest uses (struct virtio_net_hdr_v1):
 * the device passes the guest's header through on transmit, and the kernel's
 * offloads (partial checksums, TSO, UFO) reach the guest on receive once the
 * guest accepted them (TUNSETOFFLOAD). */
#include "net/net.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

struct net_tap {
	struct net_backend be;
	int fd;
	char ifname[IFNAMSIZ];
};

static struct net_tap *to_tap(struct net_backend *be)
{
	return (struct net_tap *)be;
}

static int tap_send(struct net_backend *be, const struct iovec *iov, unsigned iovcnt)
{
	struct net_tap *t = to_tap(be);
	for (;;) {
		ssize_t n = writev(t->fd, iov, (int)iovcnt);
		if (n >= 0)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

static ssize_t tap_recv(struct net_backend *be, void *buf, size_t len)
{
	struct net_tap *t = to_tap(be);
	for (;;) {
		ssize_t n = read(t->fd, buf, len);
		if (n >= 0)
			return n;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

static unsigned to_tun_flags(unsigned off)
{
	unsigned f = 0;
	if (off & NET_OFF_CSUM)
		f |= TUN_F_CSUM;
	if (off & NET_OFF_TSO4)
		f |= TUN_F_TSO4;
	if (off & NET_OFF_TSO6)
		f |= TUN_F_TSO6;
	if (off & NET_OFF_TSO_ECN)
		f |= TUN_F_TSO_ECN;
	if (off & NET_OFF_UFO)
		f |= TUN_F_UFO;
	return f;
}

static int tap_set_offloads(struct net_backend *be, unsigned off)
{
	struct net_tap *t = to_tap(be);
	/* segmentation offloads only make sense with checksum offload */
	if (!(off & NET_OFF_CSUM))
		off = 0;
	if (ioctl(t->fd, TUNSETOFFLOAD, (unsigned long)to_tun_flags(off & be->offloads)) < 0)
		return -errno;
	return 0;
}

static void tap_destroy(struct net_backend *be)
{
	struct net_tap *t = to_tap(be);
	if (t->fd >= 0)
		close(t->fd);
	free(t);
}

static const struct net_backend_ops tap_ops = {
	.kind = "tap",
	.send = tap_send,
	.recv = tap_recv,
	.set_offloads = tap_set_offloads,
	.destroy = tap_destroy,
};

const char *net_tap_ifname(const struct net_backend *be)
{
	return be->ops == &tap_ops ? ((const struct net_tap *)be)->ifname : NULL;
}

/* Which offloads this kernel's tap takes: the largest set TUNSETOFFLOAD
 * accepts (UFO was dropped from some kernels and restored in others). */
static unsigned probe_offloads(int fd)
{
	static const unsigned sets[] = {
		NET_OFF_CSUM | NET_OFF_TSO4 | NET_OFF_TSO6 | NET_OFF_TSO_ECN | NET_OFF_UFO,
		NET_OFF_CSUM | NET_OFF_TSO4 | NET_OFF_TSO6 | NET_OFF_TSO_ECN,
		NET_OFF_CSUM | NET_OFF_TSO4 | NET_OFF_TSO6,
		NET_OFF_CSUM,
	};
	unsigned got = 0;
	for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
		if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)to_tun_flags(sets[i])) == 0) {
			got = sets[i];
			break;
		}
	}
	/* nothing until the guest accepts offloads */
	if (ioctl(fd, TUNSETOFFLOAD, 0ul) < 0)
		got = 0;
	return got;
}

int net_tap_create(const struct net_tap_params *p, struct net_backend **out, struct terr *err)
{
	const char *want = p->ifname && *p->ifname ? p->ifname : NULL;
	if (want && strlen(want) >= IFNAMSIZ)
		return terr_set(err, EINVAL, "%s: tap name \"%s\" is longer than %d bytes", p->id, want,
				IFNAMSIZ - 1);
	bool existed = want && if_nametoindex(want) != 0;

	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		if (e == ENOENT || e == ENODEV || e == ENXIO)
			return terr_set(err, e, "%s: /dev/net/tun is missing (is the tun module loaded?): %s",
					p->id, strerror(e));
		if (e == EACCES || e == EPERM)
			return terr_set(err, e, "%s: no permission to open /dev/net/tun (needs read and write "
					"access to it)", p->id);
		return terr_set(err, e, "%s: cannot open /dev/net/tun: %s", p->id, strerror(e));
	}

	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", want ? want : "tap%d");
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int e = errno;
		close(fd);
		const char *n = want ? want : "a new tap";
		switch (e) {
		case EPERM:
		case EACCES:
			if (existed)
				return terr_set(err, e, "%s: no permission to attach to tap %s (it belongs to "
						"another user or group; create it with `ip tuntap add %s mode "
						"tap user USER`, or run tern with CAP_NET_ADMIN)",
						p->id, n, n);
			return terr_set(err, e, "%s: %s does not exist and tern may not create it (creating "
					"a tap needs CAP_NET_ADMIN; or create it beforehand with `ip tuntap "
					"add NAME mode tap user USER`)", p->id, want ? want : "the tap");
		case EBUSY:
			return terr_set(err, e, "%s: tap %s is in use by another process", p->id, n);
		case EINVAL:
			return terr_set(err, e, "%s: %s exists but is not a tap with vnet headers (a tun "
					"device, a multi-queue tap, or another kind of interface)", p->id, n);
		default:
			return terr_set(err, e, "%s: TUNSETIFF on %s: %s", p->id, n, strerror(e));
		}
	}
	int hdr = NET_VNET_HDR_LEN;
	if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
		int e = errno;
		close(fd);
		return terr_set(err, e, "%s: tap %s does not take a %d-byte vnet header: %s", p->id,
				ifr.ifr_name, hdr, strerror(e));
	}

	struct net_tap *t = calloc(1, sizeof(*t));
	if (!t) {
		close(fd);
		return terr_set(err, ENOMEM, "%s: out of memory", p->id);
	}
	t->fd = fd;
	snprintf(t->ifname, sizeof(t->ifname), "%s", ifr.ifr_name);
	t->be.ops = &tap_ops;
	snprintf(t->be.id, sizeof(t->be.id), "%s", p->id);
	t->be.rx_fd = fd;
	t->be.vnet_hdr = true;
	t->be.offloads = probe_offloads(fd);
	log_info("net", "%s: tap %s (%s)%s", p->id, t->ifname, existed ? "existing" : "created",
		 t->be.offloads & NET_OFF_TSO4 ? ", offloads on" : "");
	*out = &t->be;
	return 0;
}
