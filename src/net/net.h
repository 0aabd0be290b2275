/* Host network back ends: what a virtio-net device sends its guest's frames
 * to and receives frames from. One file per back end:
 *
 *   net_slirp.c  user-mode networking through libslirp (no privileges; a
 *                private 10.0.2.0/24 with DHCP, DNS and host port forwards)
 *   net_tap.c    a Linux tap interface (an existing one by name, or one tern
 *                creates when it has CAP_NET_ADMIN), with IFF_VNET_HDR so the
 *                kernel takes and gives checksum and segmentation offloads
 *
 * The interface is frame-oriented and non-blocking, and the same for every
 * back end, so the device has one data path:
 *
 *   - send() takes one frame as an iovec. When be->vnet_hdr is set, the frame
 *     starts with the 12-byte virtio-net header (struct virtio_net_hdr_v1,
 *     VERSION_1 layout, little-endian) and the back end honours its checksum
 *     and GSO fields; otherwise it is the bare Ethernet frame.
 *   - rx_fd becomes readable (level-triggered) while recv() may have a frame;
 *     recv() copies one frame (with the header when vnet_hdr) and returns its
 *     length, or 0 when there is none. The device watches rx_fd on the VM's
 *     event loop only while the guest has receive buffers, which is how a
 *     slow guest pushes back on the host.
 *
 * Threads: send() may be called from any thread (the event loop for kicks
 * through ioeventfd, a vCPU for a notification that took the MMIO exit);
 * recv() and set_offloads() from any thread too. Calls on one back end are
 * serialized by the device's lock; a back end with its own event-loop work
 * (slirp's sockets and timers) takes its own lock inside, never calling back
 * into the device. */
#ifndef TERN_NET_NET_H
#define TERN_NET_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "util/error.h"

struct evloop;

/* struct virtio_net_hdr_v1 (virtio 1.x 5.1.6): flags, gso_type, hdr_len,
 * gso_size, csum_start, csum_offset, num_buffers. */
#define NET_VNET_HDR_LEN 12
/* The largest frame a back end hands over or takes: a 64 KiB GSO frame plus
 * its headers (what the tap driver can produce), header included. */
#define NET_MAX_FRAME (65536 + 4096)
/* The largest Ethernet frame without GSO that tern accepts from a guest
 * (a jumbo frame of 9000 bytes of payload and its headers, and some). */
#define NET_MAX_PLAIN_FRAME 9216

/* Offloads the host side takes from the guest and may give it (the tap's
 * TUN_F_* bits in meaning). */
enum {
	NET_OFF_CSUM    = 1u << 0,   /* partial checksums (csum_start/offset) */
	NET_OFF_TSO4    = 1u << 1,
	NET_OFF_TSO6    = 1u << 2,
	NET_OFF_TSO_ECN = 1u << 3,
	NET_OFF_UFO     = 1u << 4,
};

struct net_backend;

struct net_backend_ops {
	const char *kind;                    /* "user", "tap" */
	/* One frame to the host network. 0, or a negative errno (the frame is
	 * dropped; the device counts and logs it). */
	int (*send)(struct net_backend *be, const struct iovec *iov, unsigned iovcnt);
	/* One frame from the host network into buf (len >= NET_MAX_FRAME): its
	 * length, 0 when none is waiting, or a negative errno. */
	ssize_t (*recv)(struct net_backend *be, void *buf, size_t len);
	/* Which offloads the host side may put into received frames (a subset
	 * of be->offloads, per what the guest accepted). Optional. */
	int (*set_offloads)(struct net_backend *be, unsigned offloads);
	void (*destroy)(struct net_backend *be);
};

struct net_backend {
	const struct net_backend_ops *ops;
	char id[32];           /* the device's id, for messages ("net.0") */
	int rx_fd;             /* readable while recv() may return a frame */
	bool vnet_hdr;         /* frames carry the 12-byte virtio-net header */
	unsigned offloads;     /* NET_OFF_* the back end supports (needs vnet_hdr) */
};

static inline int net_send(struct net_backend *be, const struct iovec *iov, unsigned iovcnt)
{
	return be->ops->send(be, iov, iovcnt);
}

static inline ssize_t net_recv(struct net_backend *be, void *buf, size_t len)
{
	return be->ops->recv(be, buf, len);
}

static inline int net_set_offloads(struct net_backend *be, unsigned offloads)
{
	return be->ops->set_offloads ? be->ops->set_offloads(be, offloads) : 0;
}

static inline void net_backend_destroy(struct net_backend *be)
{
	if (be)
		be->ops->destroy(be);
}

/* --- user-mode networking (net_slirp.c) --- */

/* One host port forward: connections (or datagrams) to host_addr:host_port
 * on the host go to guest_addr:guest_port in the guest's network. */
struct net_hostfwd {
	bool udp;
	uint32_t host_addr;    /* network byte order; 0 = any */
	uint16_t host_port;
	uint32_t guest_addr;   /* network byte order; 0 = the DHCP address (.15) */
	uint16_t guest_port;
};

#define NET_MAX_HOSTFWD 64

/* Parse a comma-separated list of QEMU-style forwards:
 *   [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT
 * e.g. "tcp::2222-:22,udp:127.0.0.1:5353-:53". `what` names the setting in
 * errors ("net.0.hostfwd"). Returns how many (0..NET_MAX_HOSTFWD) or a
 * negative errno with err saying which entry is wrong and why. */
int net_hostfwd_parse(const char *s, struct net_hostfwd *out, size_t max, const char *what,
		      struct terr *err);

struct net_slirp_params {
	const char *id;                      /* "net.0" */
	const struct net_hostfwd *hostfwd;
	size_t nhostfwd;
	const char *hostname;                /* DHCP host name offered, or NULL */
	unsigned mtu;                        /* of the link to the guest; 0: 1500 */
};

/* The user back end's default MTU, as slirp4netns and passt use: a guest
 * that takes it (virtio-net offers it) sends and receives whole TCP
 * segments of up to 64 KiB per frame, since slirp has no segmentation
 * offloads and every frame costs the guest's stack and an interrupt. */
#define NET_SLIRP_MTU 65520

/* A private network 10.0.2.0/24: gateway and host 10.0.2.2, DNS 10.0.2.3,
 * DHCP from 10.0.2.15; IPv6 fec0::/64 with router advertisements. Its
 * sockets and timers run on `loop`. */
int net_slirp_create(struct evloop *loop, const struct net_slirp_params *p,
		     struct net_backend **out, struct terr *err);

/* --- tap (net_tap.c) --- */

struct net_tap_params {
	const char *id;                      /* "net.0" */
	const char *ifname;                  /* NULL or "": a new tapN */
};

/* Attach to tap `ifname` (created if missing, which needs CAP_NET_ADMIN),
 * non-blocking, with the 12-byte vnet header. The chosen name is in
 * net_tap_ifname(). */
int net_tap_create(const struct net_tap_params *p, struct net_backend **out, struct terr *err);
const char *net_tap_ifname(const struct net_backend *be);

#endif
