/* The tap back end. Needs /dev/net/tun and the right to create a tap
 * (CAP_NET_ADMIN); skipped otherwise. The taps it makes are not persistent:
 * they vanish when the test closes them.
 *   - a new tap (kernel-chosen name), its offloads, and TUNSETOFFLOAD;
 *   - attaching to it again while open: "in use"; to `lo`: "not a tap";
 *   - frames both ways: send() with a vnet header comes out of the interface
 *     (an AF_PACKET socket on it sees it without the header); a frame put on
 *     the interface comes to recv() with a 12-byte header. */
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "net/net.h"

#define ETHERTYPE_TEST 0x88b5   /* IEEE local experimental */

static struct net_backend *try_create(const char *name, struct terr *err)
{
	struct net_backend *be = NULL;
	struct net_tap_params p = { .id = "net.0", .ifname = name };
	return net_tap_create(&p, &be, err) ? NULL : be;
}

static int setup(void **ctx)
{
	struct terr err = { 0 };
	struct net_backend *be = try_create(NULL, &err);
	if (!be) {
		fprintf(stderr, "tap unavailable here: %s\n", err.msg);
		*ctx = NULL;
		return 0;
	}
	*ctx = be;
	return 0;
}

static int teardown(void **ctx)
{
	net_backend_destroy(*ctx);
	return 0;
}

#define NEED_TAP(be) do { if (!(be)) skip(); } while (0)

static void test_create_and_offloads(void **ctx)
{
	struct net_backend *be = *ctx;
	NEED_TAP(be);
	assert_string_equal(be->ops->kind, "tap");
	assert_true(be->vnet_hdr);
	const char *name = net_tap_ifname(be);
	assert_non_null(name);
	assert_true(strncmp(name, "tap", 3) == 0);
	assert_true(if_nametoindex(name) > 0);
	assert_true(be->offloads & NET_OFF_CSUM);
	assert_true(be->offloads & NET_OFF_TSO4);
	assert_true(be->offloads & NET_OFF_TSO6);
	assert_int_equal(net_set_offloads(be, NET_OFF_CSUM | NET_OFF_TSO4), 0);
	assert_int_equal(net_set_offloads(be, 0), 0);
	/* nothing to read yet */
	uint8_t buf[2048];
	assert_int_equal(net_recv(be, buf, sizeof(buf)), 0);
}

static void test_errors(void **ctx)
{
	struct net_backend *be = *ctx;
	NEED_TAP(be);
	struct terr err = { 0 };
	/* the same tap again while it is attached */
	assert_null(try_create(net_tap_ifname(be), &err));
	assert_int_equal(err.code, -EBUSY);
	assert_non_null(strstr(err.msg, "is in use by another process"));
	/* an interface that is not a tap */
	terr_clear(&err);
	assert_null(try_create("lo", &err));
	assert_int_equal(err.code, -EINVAL);
	assert_non_null(strstr(err.msg, "net.0: lo exists but is not a tap"));
	/* a name that is too long */
	terr_clear(&err);
	assert_null(try_create("a-much-too-long-name", &err));
	assert_non_null(strstr(err.msg, "longer than 15 bytes"));
}

/* A persistent tap made beforehand (what `ip tuntap add` does) is attached
 * to by name; it stays after tern lets go of it. */
static void test_existing_tap(void **ctx)
{
	NEED_TAP(*ctx);
	const char *name = "terntest0";
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETPERSIST, 1) < 0) {
		close(fd);
		skip();
	}
	close(fd);
	struct terr err = { 0 };
	struct net_backend *be = try_create(name, &err);
	if (!be)
		fail_msg("%s", err.msg);
	assert_string_equal(net_tap_ifname(be), name);
	assert_true(be->vnet_hdr);
	net_backend_destroy(be);
	assert_true(if_nametoindex(name) > 0);
	/* and again (nothing held on to it) */
	be = try_create(name, &err);
	assert_non_null(be);
	net_backend_destroy(be);
	/* remove it */
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	assert_int_equal(ioctl(fd, TUNSETIFF, &ifr), 0);
	assert_int_equal(ioctl(fd, TUNSETPERSIST, 0), 0);
	close(fd);
	assert_int_equal(if_nametoindex(name), 0);
}

static int if_up(const char *name)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	int r = ioctl(s, SIOCGIFFLAGS, &ifr);
	if (r == 0) {
		ifr.ifr_flags |= IFF_UP;
		r = ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	close(s);
	return r;
}

static void test_frames_both_ways(void **ctx)
{
	struct net_backend *be = *ctx;
	NEED_TAP(be);
	const char *name = net_tap_ifname(be);
	assert_int_equal(if_up(name), 0);
	int ps = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETHERTYPE_TEST));
	assert_true(ps >= 0);
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETHERTYPE_TEST),
				   .sll_ifindex = (int)if_nametoindex(name) };
	assert_int_equal(bind(ps, (struct sockaddr *)&sll, sizeof(sll)), 0);

	/* guest -> host: header of zeros, then the frame */
	uint8_t hdr[NET_VNET_HDR_LEN] = { 0 }, fr[200], got[4096];
	memset(fr, 0xff, 6);
	memcpy(fr + 6, "\x52\x54\x00\x12\x34\x56", 6);
	fr[12] = ETHERTYPE_TEST >> 8;
	fr[13] = ETHERTYPE_TEST & 0xff;
	for (unsigned i = 14; i < sizeof(fr); i++)
		fr[i] = (uint8_t)i;
	struct iovec v[2] = { { hdr, sizeof(hdr) }, { fr, sizeof(fr) } };
	assert_int_equal(net_send(be, v, 2), 0);
	struct pollfd pf = { .fd = ps, .events = POLLIN };
	assert_int_equal(poll(&pf, 1, 2000), 1);
	assert_int_equal(recv(ps, got, sizeof(got), 0), sizeof(fr));
	assert_memory_equal(got, fr, sizeof(fr));

	/* host -> guest: what goes out of the interface comes to recv() */
	fr[0] = 0x52;
	for (unsigned i = 14; i < sizeof(fr); i++)
		fr[i] = (uint8_t)(3 * i);
	sll.sll_halen = 6;
	memcpy(sll.sll_addr, fr, 6);
	assert_int_equal(sendto(ps, fr, sizeof(fr), 0, (struct sockaddr *)&sll, sizeof(sll)),
			 sizeof(fr));
	ssize_t n = 0;
	for (int i = 0; i < 100; i++) {
		struct pollfd tf = { .fd = be->rx_fd, .events = POLLIN };
		poll(&tf, 1, 50);
		n = net_recv(be, got, sizeof(got));
		if (n > 0 && got[NET_VNET_HDR_LEN + 12] == fr[12] && got[NET_VNET_HDR_LEN + 13] == fr[13])
			break;   /* (the kernel may send its own frames too: skip them) */
		n = 0;
	}
	assert_int_equal(n, NET_VNET_HDR_LEN + sizeof(fr));
	assert_memory_equal(got + NET_VNET_HDR_LEN, fr, sizeof(fr));
	assert_int_equal(got[1], 0);   /* no GSO */
	close(ps);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_create_and_offloads),
		T(test_errors),
		T(test_existing_tap),
		T(test_frames_both_ways),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
