/* Just enough of Ethernet, ARP, IPv4, UDP, TCP and DHCP to play the guest's
 * side against a network back end in the unit tests. Frames are built into
 * and parsed from plain byte arrays; multi-byte fields in network order. */
#ifndef TERN_TESTS_NET_PKT_H
#define TERN_TESTS_NET_PKT_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ETH_HLEN_ 14
#define IP_HLEN_ 20

static const uint8_t GUEST_MAC[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
static const uint8_t BCAST[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

static inline void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p + 2, (uint16_t)v);
}

static inline uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)get16(p) << 16 | get16(p + 2);
}

static inline uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += get16(p + i);
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

static inline uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static inline size_t eth_hdr(uint8_t *f, const uint8_t dst[6], const uint8_t src[6], uint16_t type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	put16(f + 12, type);
	return ETH_HLEN_;
}

/* IPv4 header at p for `payload` bytes of protocol `proto`; addresses in
 * host order. */
static inline void ip_hdr(uint8_t *p, uint8_t proto, uint32_t src, uint32_t dst, size_t payload)
{
	memset(p, 0, IP_HLEN_);
	p[0] = 0x45;
	put16(p + 2, (uint16_t)(IP_HLEN_ + payload));
	put16(p + 4, 0x1234);
	p[8] = 64;
	p[9] = proto;
	put32(p + 12, src);
	put32(p + 16, dst);
	put16(p + 10, csum_fold(csum_add(0, p, IP_HLEN_)));
}

/* Transport checksum (UDP/TCP) over the pseudo header and segment. */
static inline uint16_t l4_csum(const uint8_t *ip, const uint8_t *seg, size_t len)
{
	uint8_t ph[12];
	memcpy(ph, ip + 12, 8);
	ph[8] = 0;
	ph[9] = ip[9];
	put16(ph + 10, (uint16_t)len);
	return csum_fold(csum_add(csum_add(0, ph, 12), seg, len));
}

/* A whole UDP frame; returns its length. */
static inline size_t udp_frame(uint8_t *f, const uint8_t dst_mac[6], uint32_t src, uint16_t sport,
			       uint32_t dst, uint16_t dport, const void *data, size_t len)
{
	size_t o = eth_hdr(f, dst_mac, GUEST_MAC, 0x0800);
	uint8_t *ip = f + o, *u = ip + IP_HLEN_;
	ip_hdr(ip, 17, src, dst, 8 + len);
	put16(u, sport);
	put16(u + 2, dport);
	put16(u + 4, (uint16_t)(8 + len));
	put16(u + 6, 0);
	memcpy(u + 8, data, len);
	uint16_t c = l4_csum(ip, u, 8 + len);
	put16(u + 6, c ? c : 0xffff);
	return o + IP_HLEN_ + 8 + len;
}

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10

static inline size_t tcp_frame(uint8_t *f, const uint8_t dst_mac[6], uint32_t src, uint16_t sport,
			       uint32_t dst, uint16_t dport, uint32_t seq, uint32_t ack,
			       uint8_t flags, const void *data, size_t len)
{
	size_t o = eth_hdr(f, dst_mac, GUEST_MAC, 0x0800);
	uint8_t *ip = f + o, *t = ip + IP_HLEN_;
	ip_hdr(ip, 6, src, dst, 20 + len);
	memset(t, 0, 20);
	put16(t, sport);
	put16(t + 2, dport);
	put32(t + 4, seq);
	put32(t + 8, ack);
	t[12] = 5 << 4;
	t[13] = flags;
	put16(t + 14, 65535);
	if (len)
		memcpy(t + 20, data, len);
	put16(t + 16, l4_csum(ip, t, 20 + len));
	return o + IP_HLEN_ + 20 + len;
}

static inline size_t arp_request(uint8_t *f, uint32_t sender_ip, uint32_t target_ip)
{
	size_t o = eth_hdr(f, BCAST, GUEST_MAC, 0x0806);
	uint8_t *a = f + o;
	put16(a, 1);
	put16(a + 2, 0x0800);
	a[4] = 6;
	a[5] = 4;
	put16(a + 6, 1);
	memcpy(a + 8, GUEST_MAC, 6);
	put32(a + 14, sender_ip);
	memset(a + 18, 0, 6);
	put32(a + 24, target_ip);
	return o + 28;
}

/* A DHCP message from the guest (type 1 DISCOVER or 3 REQUEST). */
static inline size_t dhcp_frame(uint8_t *f, uint8_t type, uint32_t xid, uint32_t req_ip,
				uint32_t server)
{
	uint8_t b[300];
	memset(b, 0, sizeof(b));
	b[0] = 1;        /* BOOTREQUEST */
	b[1] = 1;
	b[2] = 6;
	put32(b + 4, xid);
	memcpy(b + 28, GUEST_MAC, 6);
	put32(b + 236, 0x63825363);
	size_t o = 240;
	b[o++] = 53;
	b[o++] = 1;
	b[o++] = type;
	if (req_ip) {
		b[o++] = 50;
		b[o++] = 4;
		put32(b + o, req_ip);
		o += 4;
	}
	if (server) {
		b[o++] = 54;
		b[o++] = 4;
		put32(b + o, server);
		o += 4;
	}
	b[o++] = 255;
	return udp_frame(f, BCAST, 0, 68, 0xffffffff, 67, b, sizeof(b));
}

/* Find DHCP option `code` in the BOOTP message at b (len bytes). */
static inline const uint8_t *dhcp_option(const uint8_t *b, size_t len, uint8_t code, uint8_t *olen)
{
	for (size_t o = 240; o + 1 < len;) {
		if (b[o] == 255)
			break;
		if (b[o] == 0) {
			o++;
			continue;
		}
		if (b[o] == code) {
			*olen = b[o + 1];
			return b + o + 2;
		}
		o += 2u + b[o + 1];
	}
	return NULL;
}

/* A parsed IPv4 frame. */
struct ip4 {
	uint16_t ethertype;
	uint8_t proto;
	uint32_t src, dst;
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint8_t flags;
	const uint8_t *data;
	size_t len;
};

static inline bool parse_frame(const uint8_t *f, size_t n, struct ip4 *p)
{
	memset(p, 0, sizeof(*p));
	if (n < ETH_HLEN_)
		return false;
	p->ethertype = get16(f + 12);
	if (p->ethertype != 0x0800 || n < ETH_HLEN_ + IP_HLEN_)
		return true;
	const uint8_t *ip = f + ETH_HLEN_;
	size_t ihl = (size_t)(ip[0] & 15) * 4, tot = get16(ip + 2);
	if (tot > n - ETH_HLEN_ || ihl > tot)
		return false;
	p->proto = ip[9];
	p->src = get32(ip + 12);
	p->dst = get32(ip + 16);
	const uint8_t *l4 = ip + ihl;
	size_t l4len = tot - ihl;
	if (p->proto == 17 && l4len >= 8) {
		p->sport = get16(l4);
		p->dport = get16(l4 + 2);
		p->data = l4 + 8;
		p->len = l4len - 8;
	} else if (p->proto == 6 && l4len >= 20) {
		size_t off = (size_t)(l4[12] >> 4) * 4;
		p->sport = get16(l4);
		p->dport = get16(l4 + 2);
		p->seq = get32(l4 + 4);
		p->ack = get32(l4 + 8);
		p->flags = l4[13];
		p->data = l4 + off;
		p->len = l4len - off;
	}
	return true;
}

#endif
