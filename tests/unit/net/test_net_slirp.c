/* The user-mode back end (libslirp on tern's event loop), driven from the
 * guest's side with hand-built frames, on a private event loop:
 *   - host forward parsing (good lists, and every kind of error message);
 *   - DHCP: DISCOVER -> OFFER (10.0.2.15, router 10.0.2.2, DNS 10.0.2.3),
 *     REQUEST -> ACK; ARP for the gateway;
 *   - UDP to 10.0.2.2 reaches a socket on the host's loopback and the answer
 *     comes back (slirp's sockets on the event loop);
 *   - a TCP host forward: a host client connects, the guest sees the SYN,
 *     completes the handshake, and data flows both ways;
 *   - a forward on a port in use fails with a clear error;
 *   - the queue toward a guest that does not read is bounded. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/evloop.h"
#include "net/net.h"
#include "pkt.h"

#define NET(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (d))
#define GUEST_IP NET(10, 0, 2, 15)
#define HOST_IP  NET(10, 0, 2, 2)
#define DNS_IP   NET(10, 0, 2, 3)

/* --- host forward parsing --- */

static void parse_ok(const char *s, int n)
{
	struct net_hostfwd f[NET_MAX_HOSTFWD];
	struct terr err = { 0 };
	int r = net_hostfwd_parse(s, f, NET_MAX_HOSTFWD, "net.0.hostfwd", &err);
	if (r != n)
		fail_msg("\"%s\": %d forwards (%s), expected %d", s, r, err.msg, n);
}

static void parse_bad(const char *s, const char *msg)
{
	struct net_hostfwd f[NET_MAX_HOSTFWD];
	struct terr err = { 0 };
	int r = net_hostfwd_parse(s, f, NET_MAX_HOSTFWD, "net.0.hostfwd", &err);
	if (r != -EINVAL || !strstr(err.msg, msg) || strncmp(err.msg, "net.0.hostfwd: ", 15))
		fail_msg("\"%s\": got %d \"%s\", expected an error containing \"%s\"", s, r, err.msg, msg);
}

static void test_hostfwd_parse(void **ctx)
{
	(void)ctx;
	struct net_hostfwd f[NET_MAX_HOSTFWD];
	struct terr err = { 0 };
	assert_int_equal(net_hostfwd_parse("tcp::2222-:22,udp:127.0.0.1:5353-10.0.2.20:53",
					   f, NET_MAX_HOSTFWD, "x", &err), 2);
	assert_false(f[0].udp);
	assert_int_equal(f[0].host_addr, 0);
	assert_int_equal(f[0].host_port, 2222);
	assert_int_equal(f[0].guest_addr, 0);
	assert_int_equal(f[0].guest_port, 22);
	assert_true(f[1].udp);
	assert_int_equal(ntohl(f[1].host_addr), NET(127, 0, 0, 1));
	assert_int_equal(f[1].host_port, 5353);
	assert_int_equal(ntohl(f[1].guest_addr), NET(10, 0, 2, 20));
	assert_int_equal(f[1].guest_port, 53);
	parse_ok(NULL, 0);
	parse_ok("", 0);
	parse_ok("::8080-:80", 1);
	parse_ok("tcp::1-:65535", 1);
	parse_ok("tcp::2222-:22,tcp::2223-:22", 2);
	parse_ok("tcp::53-:53,udp::53-:53", 2);

	parse_bad("tcp", "expected [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT");
	parse_bad("sctp::1-:2", "unknown protocol \"sctp\" (tcp or udp)");
	parse_bad("tcp::2222:22", "no '-' between the host and the guest side");
	parse_bad("tcp:2222-:22", "the host side needs [HOSTADDR]:HOSTPORT");
	parse_bad("tcp::2222-22", "the guest side needs [GUESTADDR]:GUESTPORT");
	parse_bad("tcp::0-:22", "host port \"0\" is not a number from 1 to 65535");
	parse_bad("tcp::65536-:22", "host port \"65536\"");
	parse_bad("tcp::http-:22", "host port \"http\"");
	parse_bad("tcp::-:22", "host port \"\"");
	parse_bad("tcp::22-:99999", "guest port \"99999\"");
	parse_bad("tcp:localhost:22-:22", "host address \"localhost\" is not an IPv4 address");
	parse_bad("tcp::22-1.2.3.4:22", "guest address \"1.2.3.4\" is not a guest address in 10.0.2.0/24");
	parse_bad("tcp::22-10.0.2.2:22", "is not a guest address");
	parse_bad("tcp::22-10.0.2:22", "guest address \"10.0.2\" is not an IPv4 address");
	parse_bad("tcp::2222-:22,,tcp::1-:2", "empty forward");
	parse_bad("tcp::2222-:22,", "empty forward");
	parse_bad("tcp::2222-:22,tcp::2222-:23", "host port 2222/tcp is forwarded twice (forwards 1 and 2)");
	parse_bad("tcp::1-:1,udp::2-:2,tcp:127.0.0.1:1-:3", "host port 1/tcp is forwarded twice");
	parse_bad("tcp::1-:2,bogus", "forward 2 \"bogus\"");
	/* the limit */
	char many[NET_MAX_HOSTFWD * 16 + 32];
	size_t o = 0;
	for (unsigned i = 0; i <= NET_MAX_HOSTFWD; i++)
		o += (size_t)snprintf(many + o, sizeof(many) - o, "%stcp::%u-:1", i ? "," : "", 1000 + i);
	parse_bad(many, "more than 64 forwards");
}

/* --- the back end on a private event loop --- */

struct fixture {
	struct evloop loop;
	struct net_backend *be;
	uint8_t buf[NET_MAX_FRAME];
};

static int free_port(int type)
{
	int s = socket(AF_INET, type, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(s, (struct sockaddr *)&a, &l) < 0)
		return -1;
	close(s);
	return ntohs(a.sin_port);
}

static int make_mtu(struct fixture *f, const struct net_hostfwd *fwd, size_t nfwd, unsigned mtu,
		    struct terr *err)
{
	if (evloop_init(&f->loop, err))
		return -1;
	struct net_slirp_params p = { .id = "net.0", .hostfwd = fwd, .nhostfwd = nfwd,
				      .hostname = "guest", .mtu = mtu };
	return net_slirp_create(&f->loop, &p, &f->be, err);
}

static int make(struct fixture *f, const struct net_hostfwd *fwd, size_t nfwd, struct terr *err)
{
	return make_mtu(f, fwd, nfwd, 0, err);
}

static int setup(void **ctx)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct terr err = { 0 };
	if (make(f, NULL, 0, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	*ctx = f;
	return 0;
}

static int teardown(void **ctx)
{
	struct fixture *f = *ctx;
	net_backend_destroy(f->be);
	evloop_destroy(&f->loop);
	free(f);
	return 0;
}

static void send_frame(struct fixture *f, const uint8_t *p, size_t len)
{
	struct iovec v = { (void *)p, len };
	assert_int_equal(net_send(f->be, &v, 1), 0);
}

static int64_t ms_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The next frame toward the guest for which want() holds (others are
 * skipped), running the event loop meanwhile; its length, or 0 on timeout. */
static size_t wait_frame(struct fixture *f, bool (*want)(const struct ip4 *p, void *arg), void *arg,
			 struct ip4 *out, int timeout_ms)
{
	int64_t end = ms_now() + timeout_ms;
	for (;;) {
		ssize_t n = net_recv(f->be, f->buf, sizeof(f->buf));
		assert_true(n >= 0);
		if (n > 0) {
			struct ip4 p;
			if (parse_frame(f->buf, (size_t)n, &p) && (!want || want(&p, arg))) {
				if (out)
					*out = p;
				return (size_t)n;
			}
			continue;
		}
		if (ms_now() >= end)
			return 0;
		/* the back end's rx fd is not on this loop (the device adds it);
		 * poll it together with the loop's epoll fd */
		struct pollfd pf[2] = { { .fd = f->be->rx_fd, .events = POLLIN },
					{ .fd = f->loop.epfd, .events = POLLIN } };
		poll(pf, 2, 50);
		if (pf[1].revents)
			evloop_run_once(&f->loop, 0);
	}
}

static bool is_udp_to(const struct ip4 *p, void *arg)
{
	return p->proto == 17 && p->dport == *(uint16_t *)arg;
}

static void dhcp(struct fixture *f)
{
	uint8_t fr[600];
	struct ip4 p;
	uint16_t port = 68;
	uint8_t l;
	send_frame(f, fr, dhcp_frame(fr, 1, 0xabcd1234, 0, 0));
	assert_true(wait_frame(f, is_udp_to, &port, &p, 2000) > 0);
	assert_int_equal(p.sport, 67);
	assert_int_equal(get32(p.data + 4), 0xabcd1234);           /* xid */
	assert_int_equal(get32(p.data + 16), GUEST_IP);            /* yiaddr */
	const uint8_t *o = dhcp_option(p.data, p.len, 53, &l);
	assert_non_null(o);
	assert_int_equal(o[0], 2);                                  /* OFFER */
	assert_non_null(o = dhcp_option(p.data, p.len, 54, &l));
	assert_int_equal(get32(o), HOST_IP);
	assert_non_null(o = dhcp_option(p.data, p.len, 3, &l));
	assert_int_equal(get32(o), HOST_IP);                        /* router */
	assert_non_null(o = dhcp_option(p.data, p.len, 6, &l));
	assert_int_equal(get32(o), DNS_IP);
	assert_non_null(o = dhcp_option(p.data, p.len, 1, &l));
	assert_int_equal(get32(o), NET(255, 255, 255, 0));

	send_frame(f, fr, dhcp_frame(fr, 3, 0xabcd1235, GUEST_IP, HOST_IP));
	assert_true(wait_frame(f, is_udp_to, &port, &p, 2000) > 0);
	assert_non_null(o = dhcp_option(p.data, p.len, 53, &l));
	assert_int_equal(o[0], 5);                                  /* ACK */
	assert_int_equal(get32(p.data + 16), GUEST_IP);
}

static void test_dhcp_and_arp(void **ctx)
{
	struct fixture *f = *ctx;
	assert_string_equal(f->be->ops->kind, "user");
	assert_false(f->be->vnet_hdr);
	assert_int_equal(f->be->offloads, 0);
	dhcp(f);
	uint8_t fr[64];
	send_frame(f, fr, arp_request(fr, GUEST_IP, HOST_IP));
	struct ip4 p;
	size_t n = wait_frame(f, NULL, NULL, &p, 2000);
	assert_int_equal(p.ethertype, 0x0806);
	assert_true(n >= 42);
	assert_memory_equal(f->buf, GUEST_MAC, 6);
	assert_int_equal(get16(f->buf + 14 + 6), 2);                /* reply */
	assert_int_equal(get32(f->buf + 14 + 14), HOST_IP);         /* sender */
	assert_memory_equal(f->buf + 14 + 18, GUEST_MAC, 6);       /* target */
	/* nothing else is waiting, and rx_fd says so */
	assert_int_equal(net_recv(f->be, f->buf, sizeof(f->buf)), 0);
	struct pollfd pf = { .fd = f->be->rx_fd, .events = POLLIN };
	assert_int_equal(poll(&pf, 1, 0), 0);
}

/* UDP from the guest to 10.0.2.2 reaches the host's loopback; the answer
 * comes back through slirp's socket, watched on the event loop. */
static void test_udp_through_host(void **ctx)
{
	struct fixture *f = *ctx;
	dhcp(f);
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
	uint16_t hport = ntohs(a.sin_port), gport = 5000;
	uint8_t fr[200];
	/* the gateway's MAC, as ARP told us */
	static const uint8_t gw[6] = { 0x52, 0x55, 0x0a, 0x00, 0x02, 0x02 };
	send_frame(f, fr, udp_frame(fr, gw, GUEST_IP, gport, HOST_IP, hport, "ping", 4));
	char got[16];
	struct sockaddr_in from;
	socklen_t fl = sizeof(from);
	struct pollfd pf = { .fd = s, .events = POLLIN };
	assert_int_equal(poll(&pf, 1, 2000), 1);
	assert_int_equal(recvfrom(s, got, sizeof(got), 0, (struct sockaddr *)&from, &fl), 4);
	assert_memory_equal(got, "ping", 4);
	assert_int_equal(sendto(s, "pong!", 5, 0, (struct sockaddr *)&from, fl), 5);
	struct ip4 p;
	assert_true(wait_frame(f, is_udp_to, &gport, &p, 3000) > 0);
	assert_int_equal(p.src, HOST_IP);
	assert_int_equal(p.dst, GUEST_IP);
	assert_int_equal(p.sport, hport);
	assert_int_equal(p.len, 5);
	assert_memory_equal(p.data, "pong!", 5);
	close(s);
}

static bool is_tcp_to(const struct ip4 *p, void *arg)
{
	return p->proto == 6 && p->dport == *(uint16_t *)arg;
}

static bool is_tcp_data_to(const struct ip4 *p, void *arg)
{
	return is_tcp_to(p, arg) && p->len > 0;
}

/* A host client connects to the forward on hport (to the guest's port 22);
 * returns its socket once slirp's SYN toward the guest is in f->buf. */
static int connect_forward(struct fixture *f, int hport, struct ip4 *syn)
{
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)hport),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int r = connect(c, (struct sockaddr *)&a, sizeof(a));
	assert_true(r == 0 || errno == EINPROGRESS);
	uint16_t gport = 22;
	assert_true(wait_frame(f, is_tcp_to, &gport, syn, 3000) > 0);
	assert_int_equal(syn->flags & (TCP_SYN | TCP_ACK), TCP_SYN);
	return c;
}

/* A host client connects to the forwarded port; the guest answers the SYN;
 * bytes go both ways. */
static void test_tcp_hostfwd(void **ctx)
{
	struct fixture *f0 = *ctx;
	struct fixture *f = calloc(1, sizeof(*f));
	struct terr err = { 0 };
	int hport = free_port(SOCK_STREAM);
	assert_true(hport > 0);
	struct net_hostfwd fwd = { .udp = false, .host_port = (uint16_t)hport, .guest_port = 22 };
	if (make(f, &fwd, 1, &err))
		fail_msg("%s", err.msg);
	*ctx = f;
	net_backend_destroy(f0->be);
	evloop_destroy(&f0->loop);
	free(f0);
	dhcp(f);

	struct ip4 syn;
	int c = connect_forward(f, hport, &syn);
	uint16_t gport = 22;
	assert_int_equal(syn.dst, GUEST_IP);
	uint8_t smac[6];
	memcpy(smac, f->buf + 6, 6);
	uint16_t sport = syn.sport;
	uint32_t gseq = 1000, hseq = syn.seq + 1;
	uint8_t fr[200];
	send_frame(f, fr, tcp_frame(fr, smac, GUEST_IP, 22, syn.src, sport, gseq, hseq,
				    TCP_SYN | TCP_ACK, NULL, 0));
	gseq++;
	/* the host's client is connected; it speaks first */
	struct pollfd pf = { .fd = c, .events = POLLOUT };
	assert_int_equal(poll(&pf, 1, 2000), 1);
	assert_int_equal(write(c, "hello", 5), 5);
	struct ip4 d;
	assert_true(wait_frame(f, is_tcp_data_to, &gport, &d, 3000) > 0);
	assert_int_equal(d.len, 5);
	assert_memory_equal(d.data, "hello", 5);
	assert_int_equal(d.seq, hseq);
	hseq += 5;
	/* the guest answers, acknowledging */
	send_frame(f, fr, tcp_frame(fr, smac, GUEST_IP, 22, syn.src, sport, gseq, hseq,
				    TCP_ACK | TCP_PSH, "world", 5));
	char got[16];
	ssize_t n = 0;
	int64_t end = ms_now() + 3000;
	while (n <= 0 && ms_now() < end) {
		evloop_run_once(&f->loop, 20);
		n = read(c, got, sizeof(got));
	}
	assert_int_equal(n, 5);
	assert_memory_equal(got, "world", 5);
	close(c);
}

/* The MSS slirp announces in its SYN toward the guest (0: none), for a
 * back end made with `mtu`: the link's MTU less the IP and TCP headers. */
static unsigned syn_mss(unsigned mtu)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct terr err = { 0 };
	int hport = free_port(SOCK_STREAM);
	assert_true(hport > 0);
	struct net_hostfwd fwd = { .udp = false, .host_port = (uint16_t)hport, .guest_port = 22 };
	if (make_mtu(f, &fwd, 1, mtu, &err))
		fail_msg("%s", err.msg);
	dhcp(f);
	struct ip4 syn;
	int c = connect_forward(f, hport, &syn);
	const uint8_t *tcp = f->buf + ETH_HLEN_ + (size_t)(f->buf[ETH_HLEN_] & 15) * 4;
	size_t hlen = (size_t)(tcp[12] >> 4) * 4;
	unsigned mss = 0;
	for (size_t i = 20; i + 1 < hlen;) {
		if (tcp[i] == 0)
			break;
		if (tcp[i] == 1) {
			i++;
			continue;
		}
		if (tcp[i] == 2 && tcp[i + 1] == 4)
			mss = get16(tcp + i + 2);
		i += tcp[i + 1] ? tcp[i + 1] : 1;
	}
	close(c);
	net_backend_destroy(f->be);
	evloop_destroy(&f->loop);
	free(f);
	return mss;
}

/* net.N.mtu reaches slirp: its TCP segments toward the guest grow with it
 * (the guest's driver learns the MTU from virtio-net's config). */
static void test_mtu_sets_mss(void **ctx)
{
	(void)ctx;
	assert_int_equal(syn_mss(0), 1460);
	assert_int_equal(syn_mss(NET_SLIRP_MTU), NET_SLIRP_MTU - 40);
	assert_int_equal(syn_mss(9000), 9000 - 40);
}

/* A port that is taken: a clear error, nothing left behind. */
static void test_hostfwd_port_in_use(void **ctx)
{
	(void)ctx;
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&a, &al), 0);
	struct fixture *f = calloc(1, sizeof(*f));
	struct terr err = { 0 };
	struct net_hostfwd fwd[2] = { { .host_port = (uint16_t)free_port(SOCK_STREAM), .guest_port = 1 },
				      { .host_port = ntohs(a.sin_port), .guest_port = 80 } };
	assert_int_equal(make(f, fwd, 2, &err), -EADDRINUSE);
	char want[128];
	snprintf(want, sizeof(want), "net.0.hostfwd: cannot listen on tcp port 0.0.0.0:%u for forward 2",
		 ntohs(a.sin_port));
	if (!strstr(err.msg, want))
		fail_msg("got \"%s\", expected \"%s...\"", err.msg, want);
	evloop_destroy(&f->loop);
	free(f);
	close(l);
}

/* A guest that does not read: the queue toward it stops growing. */
static void test_queue_bounded(void **ctx)
{
	struct fixture *f = *ctx;
	uint8_t fr[64];
	dhcp(f);
	size_t len = arp_request(fr, GUEST_IP, HOST_IP);
	for (unsigned i = 0; i < 1500; i++)
		send_frame(f, fr, len);
	unsigned n = 0;
	while (net_recv(f->be, f->buf, sizeof(f->buf)) > 0)
		n++;
	assert_int_equal(n, 1024);
	/* and it works again afterwards */
	send_frame(f, fr, len);
	assert_true(net_recv(f->be, f->buf, sizeof(f->buf)) > 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hostfwd_parse),
		T(test_dhcp_and_arp),
		T(test_udp_through_host),
		T(test_tcp_hostfwd),
		cmocka_unit_test(test_hostfwd_port_in_use),
		cmocka_unit_test(test_mtu_sets_mss),
		T(test_queue_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
