/* virtio-net (virtio 1.x, 5.1): one receive and one transmit queue and a
 * control queue, the MAC address and link status in configuration space,
 * mergeable receive buffers, and checksum / segmentation offloads when the
 * host back end takes them (tap with vnet headers; the user-mode back end
 * offers none). The control queue accepts receive modes and MAC filters
 * (every frame reaches the guest anyway) and MAC address changes; after its
 * state is loaded (restore, migration) the device asks the guest to
 * announce itself (VIRTIO_NET_F_GUEST_ANNOUNCE) when it resumes. Frames go
 * to and come from a struct net_backend (src/net/net.h): transmit runs when
 * the driver kicks (ioeventfd, on the event loop), receive when the back end
 * is readable and the guest has posted buffers.
 *
 * A guest that sends a short header, an oversize frame or an offload it did
 * not negotiate loses that frame (counted, logged at most every few
 * seconds); a malformed ring stops the queue and sets NEEDS_RESET (virtio
 * core). On PCI it is a modern virtio-pci function (1af4:1041, class
 * "Ethernet controller"). */
#ifndef TERN_VIRTIO_VIRTIO_NET_H
#define TERN_VIRTIO_VIRTIO_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "core/device.h"
#include "util/error.h"

struct vm;
struct pci_bus;
struct config;
struct net_backend;

#define VIRTIO_NET_QUEUE_SIZE 256

/* Feature bits (5.1.3). */
#define VIRTIO_NET_F_CSUM        0
#define VIRTIO_NET_F_GUEST_CSUM  1
#define VIRTIO_NET_F_MTU         3
#define VIRTIO_NET_F_MAC         5
#define VIRTIO_NET_F_GUEST_TSO4  7
#define VIRTIO_NET_F_GUEST_TSO6  8
#define VIRTIO_NET_F_GUEST_ECN   9
#define VIRTIO_NET_F_GUEST_UFO   10
#define VIRTIO_NET_F_HOST_TSO4   11
#define VIRTIO_NET_F_HOST_TSO6   12
#define VIRTIO_NET_F_HOST_ECN    13
#define VIRTIO_NET_F_HOST_UFO    14
#define VIRTIO_NET_F_MRG_RXBUF   15
#define VIRTIO_NET_F_STATUS      16
#define VIRTIO_NET_F_CTRL_VQ     17
#define VIRTIO_NET_F_CTRL_RX     18
#define VIRTIO_NET_F_GUEST_ANNOUNCE 21
#define VIRTIO_NET_F_CTRL_MAC_ADDR  23

#define VIRTIO_NET_S_LINK_UP     1
#define VIRTIO_NET_S_ANNOUNCE    2

/* struct virtio_net_hdr_v1 fields */
#define VIRTIO_NET_HDR_F_NEEDS_CSUM  1
#define VIRTIO_NET_HDR_F_DATA_VALID  2
#define VIRTIO_NET_HDR_GSO_NONE      0
#define VIRTIO_NET_HDR_GSO_TCPV4     1
#define VIRTIO_NET_HDR_GSO_UDP       3
#define VIRTIO_NET_HDR_GSO_TCPV6     4
#define VIRTIO_NET_HDR_GSO_ECN       0x80

/* Configuration space: mac[6], status, max_virtqueue_pairs. */
#define VIRTIO_NET_CONFIG_SIZE 12   /* mac, status, max_virtqueue_pairs, mtu */

struct virtio_net_params {
	const char *id;               /* "net.0" */
	int slot;                     /* PCI slot, -1: first free */
	uint8_t mac[6];
	struct net_backend *be;       /* owned by the device from now on, even on failure */
	uint16_t mtu;                 /* offered with VIRTIO_NET_F_MTU; 0: not offered */
};

/* Create virtio-net `p->id` on `bus` and add it to the VM's devices. */
int virtio_net_create(struct vm *vm, struct pci_bus *bus, const struct virtio_net_params *p,
		      struct device **out, struct terr *err);

/* net.N from the configuration: net.N.backend (user or tap), net.N.mac (or
 * the default below), net.N.tap, net.N.hostfwd, net.N.mtu (default: the
 * user back end's NET_SLIRP_MTU, nothing offered for tap). */
int virtio_net_create_from_config(struct vm *vm, struct pci_bus *bus, struct config *cfg,
				  unsigned index, struct device **out, struct terr *err);

/* The MAC of net.N when net.N.mac is unset: 52:54 followed by four bytes of
 * a hash of the VM's name and N, so it is stable across restarts, restores
 * and migrations, and differs between the NICs of one VM (locally
 * administered, unicast). */
void virtio_net_default_mac(const char *vm_name, unsigned index, uint8_t mac[6]);

/* Counters, for tests and (later) the control socket. */
struct virtio_net_stats {
	uint64_t rx_frames, rx_bytes, rx_dropped;
	uint64_t tx_frames, tx_bytes, tx_dropped;
};
void virtio_net_get_stats(struct device *d, struct virtio_net_stats *out);

extern const struct device_ops virtio_net_ops;

#endif
