/* Migration framing, messages and RAM frames without KVM: frames round-trip
 * over a socket pair; every byte of a frame flipped, and every truncation,
 * is refused; the rate limit holds over every one-second window; HELLO
 * checks (versions both ways, CPU vendor and features, RAM layout); RAM
 * frames into a fake guest RAM (zero pages, compression, pages changed in
 * later rounds) and every kind of malformed RAM frame. */
#include <errno.h>
#include <linux/kvm.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "migration/proto.h"
#include "migration/ram.h"
#include "migration/wire.h"

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A frame as bytes, as mig_send (mig_send_split for RAM frames) would write
 * it. */
static size_t make_frame(uint8_t *out, unsigned type, const void *p, uint32_t len, uint32_t seq)
{
	struct iovec iov = { (void *)p, type == MIG_RAM ? mig_ram_summed(p, len) : len };
	mig_hdr_encode(out, type, len, seq, &iov, 1);
	memcpy(out + MIG_HDR_SIZE, p, len);
	return MIG_HDR_SIZE + len;
}

static void test_roundtrip_socketpair(void **ctx)
{
	(void)ctx;
	int sv[2];
	struct terr err = { 0 };
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct mig_conn a, b;
	assert_int_equal(mig_conn_init(&a, sv[0], "a", &err), 0);
	assert_int_equal(mig_conn_init(&b, sv[1], "b", &err), 0);
	b.timeout_ms = 2000;
	const char *names[] = { "round", "dirty_bytes" };
	uint64_t vals[] = { 3, 123456 };
	assert_int_equal(mig_send_fields(&a, MIG_ROUND, names, vals, 2, &err), 0);
	assert_int_equal(mig_send_buf(&a, MIG_GO, NULL, 0, &err), 0);
	mig_send_refuse(&a, "no room here");

	uint8_t *buf;
	uint32_t len;
	unsigned type;
	assert_int_equal(mig_recv(&b, &type, &buf, &len, &err), 0);
	assert_int_equal(type, MIG_ROUND);
	uint64_t got[2] = { 0, 0 };
	assert_int_equal(mig_parse_fields(buf, len, type, names, got, 2, &err), 0);
	assert_int_equal(got[0], 3);
	assert_int_equal(got[1], 123456);
	free(buf);
	assert_int_equal(mig_expect(&b, MIG_GO, &buf, &len, &err), 0);
	assert_int_equal(len, 0);
	free(buf);
	/* a REFUSE where something else is expected carries the reason */
	assert_int_equal(mig_expect(&b, MIG_HAVE_ALL, &buf, &len, &err), -ECONNABORTED);
	assert_non_null(strstr(err.msg, "no room here"));
	terr_clear(&err);
	/* nothing more: a timeout, then EOF once the peer closes */
	b.timeout_ms = 300;
	assert_int_equal(mig_recv(&b, &type, &buf, &len, &err), -ETIMEDOUT);
	terr_clear(&err);
	close(sv[0]);
	assert_int_equal(mig_recv(&b, &type, &buf, &len, &err), -EPIPE);
	assert_non_null(strstr(err.msg, "closed the connection"));
	mig_conn_free(&a);
	mig_conn_free(&b);
	close(sv[1]);
}

static void test_every_byte_flipped(void **ctx)
{
	(void)ctx;
	uint8_t payload[300], frame[400];
	for (unsigned i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 7 + 1);
	size_t n = make_frame(frame, MIG_STATE, payload, sizeof(payload), 0);
	struct terr err = { 0 };
	struct mig_conn c;
	uint8_t *buf;
	uint32_t len;
	unsigned type;
	mig_conn_init_mem(&c, frame, n, "test");
	assert_int_equal(mig_recv(&c, &type, &buf, &len, &err), 0);
	assert_memory_equal(buf, payload, sizeof(payload));
	free(buf);
	mig_conn_free(&c);
	for (size_t i = 0; i < n; i++) {
		for (int bit = 0; bit < 8; bit += 7) {
			frame[i] ^= (uint8_t)(1u << bit);
			mig_conn_init_mem(&c, frame, n, "test");
			terr_clear(&err);
			buf = NULL;
			int r = mig_recv(&c, &type, &buf, &len, &err);
			if (r == 0)
				fail_msg("byte %zu bit %d flipped went unnoticed", i, bit);
			assert_null(buf);
			assert_true(err.msg[0]);
			mig_conn_free(&c);
			frame[i] ^= (uint8_t)(1u << bit);
		}
	}
	/* every truncation */
	for (size_t cut = 0; cut < n; cut++) {
		mig_conn_init_mem(&c, frame, cut, "test");
		terr_clear(&err);
		assert_int_not_equal(mig_recv(&c, &type, &buf, &len, &err), 0);
		mig_conn_free(&c);
	}
}

static void test_sequence_and_limits(void **ctx)
{
	(void)ctx;
	uint8_t frames[200];
	struct terr err = { 0 };
	struct mig_conn c;
	uint8_t *buf;
	uint32_t len;
	unsigned type;
	/* frame 1 where frame 0 is due */
	size_t n = make_frame(frames, MIG_GO, "", 0, 1);
	mig_conn_init_mem(&c, frames, n, "test");
	assert_int_equal(mig_recv(&c, &type, &buf, &len, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "out of order"));
	mig_conn_free(&c);
	/* unknown type */
	terr_clear(&err);
	n = make_frame(frames, 99, "", 0, 0);
	mig_conn_init_mem(&c, frames, n, "test");
	assert_int_equal(mig_recv(&c, &type, &buf, &len, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "unknown message type 99"));
	mig_conn_free(&c);
	/* a length over the type's limit is refused before anything is read */
	terr_clear(&err);
	uint8_t hdr[MIG_HDR_SIZE];
	mig_hdr_encode(hdr, MIG_GO, 1u << 30, 0, NULL, 0);
	mig_conn_init_mem(&c, hdr, sizeof(hdr), "test");
	assert_int_equal(mig_recv(&c, &type, &buf, &len, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "over the limit"));
	mig_conn_free(&c);
	/* the sender refuses too */
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(mig_conn_init(&c, sv[0], "peer", &err), 0);
	terr_clear(&err);
	static uint8_t big[8192];
	assert_int_equal(mig_send_buf(&c, MIG_GO, big, sizeof(big), &err), -E2BIG);
	mig_conn_free(&c);
	close(sv[0]);
	close(sv[1]);
}

static void test_rate_limit_window(void **ctx)
{
	(void)ctx;
	const uint64_t rate = 4u << 20;   /* 4 MiB/s */
	int sv[2];
	struct terr err = { 0 };
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	int sz = 16 << 20;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	struct mig_conn c;
	struct mig_ratelimit rl;
	assert_int_equal(mig_conn_init(&c, sv[0], "peer", &err), 0);
	mig_rl_init(&rl, rate);
	c.rl = &rl;
	/* a reader drains the other end */
	if (fork() == 0) {
		char b[65536];
		close(sv[0]);
		while (read(sv[1], b, sizeof(b)) > 0)
			;
		_exit(0);
	}
	close(sv[1]);
	static uint8_t chunk[100000];
	enum { N = 120 };
	double t[N];
	double t0 = now_ms();
	for (int i = 0; i < N; i++) {
		assert_int_equal(mig_send_buf(&c, MIG_STATE, chunk, sizeof(chunk), &err), 0);
		t[i] = now_ms();
	}
	double total = now_ms() - t0;
	/* 12 MB at 4 MiB/s: about 2.9 s, and never more than `rate` bytes
	 * started in any one-second window */
	assert_true(total > 2500);
	for (int i = 0; i < N; i++) {
		uint64_t in = 0;
		for (int j = i; j < N && t[j] - t[i] < 1000; j++)
			in += sizeof(chunk) + MIG_HDR_SIZE;
		if (in > rate)
			fail_msg("%llu bytes in the second after frame %d, limit %llu",
				 (unsigned long long)in, i, (unsigned long long)rate);
	}
	mig_conn_free(&c);
	close(sv[0]);
}

/* ---- HELLO ---------------------------------------------------------- */

static struct kvm_cpuid2 *cpuid_new(unsigned n)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
	c->nent = n;
	return c;
}

static void set_vendor(struct kvm_cpuid_entry2 *e, const char *v)
{
	memset(e, 0, sizeof(*e));
	memcpy(&e->ebx, v, 4);
	memcpy(&e->edx, v + 4, 4);
	memcpy(&e->ecx, v + 8, 4);
	e->eax = 0xd;
}

static struct kvm_cpuid2 *sample_cpuid(const char *vendor, uint32_t l7ebx)
{
	struct kvm_cpuid2 *c = cpuid_new(3);
	set_vendor(&c->entries[0], vendor);
	c->entries[1] = (struct kvm_cpuid_entry2){ .function = 1, .ecx = 0x80202001, .edx = 0x178bfbff };
	c->entries[2] = (struct kvm_cpuid_entry2){ .function = 7, .index = 0,
						   .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
						   .ebx = l7ebx };
	return c;
}

static void hello_roundtrip(const struct mig_hello *in, struct mig_hello *out)
{
	struct state_writer w;
	struct terr err = { 0 };
	sw_init(&w);
	mig_hello_encode(in, &w);
	assert_int_equal(w.err, 0);
	assert_int_equal(mig_hello_decode(w.buf, w.len, out, &err), 0);
	sw_free(&w);
}

static void test_hello(void **ctx)
{
	(void)ctx;
	struct terr err = { 0 };
	struct guest_mem mem;
	memset(&mem, 0, sizeof(mem));
	guest_mem_layout(&mem, 5ull << 30);
	struct kvm_cpuid2 *src = sample_cpuid("AuthenticAMD", 0x219c07ab);
	struct mig_hello h, d;
	assert_int_equal(mig_hello_fill(&h, &mem, 2, src, "live", true, &err), 0);
	hello_roundtrip(&h, &d);
	assert_string_equal(d.mode, "live");
	assert_string_equal(d.cpu_vendor, "AuthenticAMD");
	assert_string_equal(d.tern_version, TERN_VERSION);
	assert_int_equal(d.mem_size, 5ull << 30);
	assert_int_equal(d.nregions, 2);
	assert_int_equal(d.cpus, 2);
	assert_true(d.zstd);
	assert_int_equal(d.ncpuid, 3);
	uint32_t v = 0;
	assert_int_equal(mig_check_version(&d, &v, &err), 0);
	assert_int_equal(v, MIG_PROTO_VERSION);
	assert_int_equal(mig_check_layout(&d, &err), 0);

	/* the same CPU, and a host with more features: accepted */
	assert_int_equal(mig_check_cpu(&d, src, &err), 0);
	struct kvm_cpuid2 *more = sample_cpuid("AuthenticAMD", 0xffffffff);
	assert_int_equal(mig_check_cpu(&d, more, &err), 0);
	/* a feature the guest uses missing here: refused, naming it */
	struct kvm_cpuid2 *less = sample_cpuid("AuthenticAMD", 0x219c07ab & ~0x20u);
	assert_int_equal(mig_check_cpu(&d, less, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "7.0.ebx bits 0x00000020"));
	terr_clear(&err);
	/* another vendor */
	struct kvm_cpuid2 *intel = sample_cpuid("GenuineIntel", 0xffffffff);
	assert_int_equal(mig_check_cpu(&d, intel, &err), -EPROTO);
	assert_non_null(strstr(err.msg, "AuthenticAMD"));
	assert_non_null(strstr(err.msg, "GenuineIntel"));
	terr_clear(&err);

	/* versions: a newer source that still speaks ours is served in ours;
	 * one that no longer does, or an older one we dropped, is refused
	 * naming both ranges */
	d.proto_min = 1;
	d.proto_max = MIG_PROTO_VERSION + 5;
	assert_int_equal(mig_check_version(&d, &v, &err), 0);
	assert_int_equal(v, MIG_PROTO_VERSION);
	d.proto_min = MIG_PROTO_VERSION + 1;
	assert_int_equal(mig_check_version(&d, &v, &err), -EPROTONOSUPPORT);
	assert_non_null(strstr(err.msg, "incompatible migration protocol"));
	terr_clear(&err);
	d.proto_min = d.proto_max = 0;
	assert_int_equal(mig_check_version(&d, &v, &err), -EPROTONOSUPPORT);
	terr_clear(&err);
	/* a tern from before the disk lock handover (protocol 1) */
	d.proto_min = d.proto_max = 1;
	assert_int_equal(mig_check_version(&d, &v, &err), -EPROTONOSUPPORT);
	assert_non_null(strstr(err.msg, "speaks versions 1 to 1"));
	terr_clear(&err);
	/* the source side refuses a WELCOME with a version it does not speak */
	{
		struct state_writer w;
		char tv[32];
		sw_init(&w);
		sw_uint(&w, "proto", MIG_PROTO_VERSION + 1);
		sw_str(&w, "tern_version", "9.9.9");
		assert_int_equal(mig_parse_welcome(w.buf, w.len, &v, tv, sizeof(tv), &err),
				 -EPROTONOSUPPORT);
		assert_non_null(strstr(err.msg, "9.9.9"));
		sw_free(&w);
		terr_clear(&err);
	}
	/* a layout this tern would not make */
	d.regions[1].gpa += 4096;
	assert_int_equal(mig_check_layout(&d, &err), -EPROTO);
	terr_clear(&err);
	d.page_size = 65536;
	assert_int_equal(mig_check_layout(&d, &err), -EPROTO);
	terr_clear(&err);
	/* a CPUID list that is not whole entries */
	{
		struct state_writer w;
		sw_init(&w);
		sw_bytes(&w, "cpuid", "abc", 3);
		struct mig_hello x;
		assert_int_equal(mig_hello_decode(w.buf, w.len, &x, &err), -EPROTO);
		sw_free(&w);
		terr_clear(&err);
	}
	mig_hello_free(&h);
	mig_hello_free(&d);
	free(src);
	free(more);
	free(less);
	free(intel);
}

static void test_addresses(void **ctx)
{
	(void)ctx;
	struct terr err = { 0 };
	assert_int_equal(mig_addr_check("tcp:127.0.0.1:4444", &err), 0);
	assert_int_equal(mig_addr_check("tcp:[::1]:4444", &err), 0);
	assert_int_equal(mig_addr_check("tcp:host.example:0", &err), 0);
	assert_int_equal(mig_addr_check("unix:/tmp/x.sock", &err), 0);
	const char *bad[] = { "tcp:1.2.3.4", "tcp::4444", "tcp:h:99999", "tcp:h:x", "udp:h:1",
			      "unix:", "/tmp/x", "tcp:[::1:4", NULL };
	for (int i = 0; bad[i]; i++) {
		terr_clear(&err);
		if (mig_addr_check(bad[i], &err) == 0)
			fail_msg("\"%s\" accepted", bad[i]);
		assert_non_null(strstr(err.msg, bad[i]));
	}
	/* listen on port 0, connect to what it says */
	char bound[128];
	int lfd, cfd;
	terr_clear(&err);
	assert_int_equal(mig_listen("tcp:127.0.0.1:0", &lfd, bound, sizeof(bound), &err), 0);
	assert_null(strstr(bound, ":0"));
	assert_int_equal(mig_connect(bound, 2000, &cfd, &err), 0);
	close(cfd);
	close(lfd);
	/* nobody there */
	assert_int_equal(mig_connect("unix:/nonexistent/x.sock", 500, &cfd, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "cannot connect"));
}

/* ---- RAM frames --------------------------------------------------------- */

#define RAM_SIZE (8u << 20)

struct fake_ram {
	struct guest_mem mem;
	uint8_t *buf;
};

static void fake_ram_init(struct fake_ram *f)
{
	memset(f, 0, sizeof(*f));
	f->buf = aligned_alloc(4096, RAM_SIZE);
	memset(f->buf, 0, RAM_SIZE);
	f->mem.base = f->buf;
	guest_mem_layout(&f->mem, RAM_SIZE);
}

/* Sends what `fill` queues through a socket pair and receives it into dst. */
struct pipe_pair {
	int sv[2];
	struct mig_conn tx, rx;
};

static void pipe_open(struct pipe_pair *p)
{
	struct terr err = { 0 };
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p->sv), 0);
	int sz = 32 << 20;
	setsockopt(p->sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	setsockopt(p->sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	assert_int_equal(mig_conn_init(&p->tx, p->sv[0], "tx", &err), 0);
	assert_int_equal(mig_conn_init(&p->rx, p->sv[1], "rx", &err), 0);
	p->rx.timeout_ms = 2000;
}

static void pipe_close(struct pipe_pair *p)
{
	mig_conn_free(&p->tx);
	mig_conn_free(&p->rx);
	close(p->sv[0]);
	close(p->sv[1]);
}

/* Receive RAM frames until the sender's frames are used up. */
static void drain(struct pipe_pair *p, struct mig_ram_rx *rx, uint64_t frames)
{
	struct terr err = { 0 };
	for (uint64_t i = 0; i < frames; i++) {
		unsigned type;
		uint32_t len;
		assert_int_equal(mig_frame_begin(&p->rx, &type, &len, &err), 0);
		assert_int_equal(type, MIG_RAM);
		if (mig_ram_rx_frame(rx, &p->rx, len, &err))
			fail_msg("%s", err.msg);
	}
}

static void ram_transfer(bool zstd)
{
	struct fake_ram src, dst;
	struct pipe_pair p;
	struct mig_ram_tx tx;
	struct mig_ram_rx rx;
	struct terr err = { 0 };
	fake_ram_init(&src);
	fake_ram_init(&dst);
	pipe_open(&p);
	/* a pattern in most pages (compressible: a counter in each word of
	 * every other page, zeros elsewhere) */
	for (uint64_t pg = 0; pg < RAM_SIZE / 4096; pg++)
		if (pg % 3)
			for (unsigned w = 0; w < 512; w += 2)
				((uint64_t *)(src.buf + pg * 4096))[w] = pg * 1000 + w;
	assert_int_equal(mig_ram_tx_init(&tx, &p.tx, 1u << 20, zstd, &err), 0);
	assert_int_equal(mig_ram_rx_init(&rx, &dst.mem, &err), 0);
	/* round 1: every page, half through the mapping, half reserved and
	 * committed */
	for (uint64_t pg = 0; pg < RAM_SIZE / 4096 / 2; pg++)
		assert_int_equal(mig_ram_tx_page(&tx, pg * 4096, src.buf + pg * 4096, &err), 0);
	for (uint64_t pg = RAM_SIZE / 4096 / 2; pg < RAM_SIZE / 4096; pg += 64) {
		uint8_t *d = mig_ram_tx_reserve(&tx, 64, &err);
		assert_non_null(d);
		memcpy(d, src.buf + pg * 4096, 64 * 4096);
		assert_int_equal(mig_ram_tx_commit(&tx, pg * 4096, 64, &err), 0);
	}
	assert_int_equal(mig_ram_tx_flush(&tx, &err), 0);
	drain(&p, &rx, tx.frames);
	assert_memory_equal(src.buf, dst.buf, RAM_SIZE);
	assert_int_equal(rx.pages_zero, tx.pages_zero);
	assert_int_equal(rx.pages_data, tx.pages_data);
	if (zstd)
		assert_true(tx.bytes < RAM_SIZE / 2);
	/* round 2: pages changed, some to zero, some from zero */
	uint64_t frames0 = tx.frames;
	for (uint64_t pg = 0; pg < RAM_SIZE / 4096; pg += 5) {
		if (pg % 2)
			memset(src.buf + pg * 4096, 0, 4096);
		else
			memset(src.buf + pg * 4096, (int)(pg & 0xff) | 1, 4096);
		assert_int_equal(mig_ram_tx_page(&tx, pg * 4096, src.buf + pg * 4096, &err), 0);
	}
	assert_int_equal(mig_ram_tx_flush(&tx, &err), 0);
	drain(&p, &rx, tx.frames - frames0);
	assert_memory_equal(src.buf, dst.buf, RAM_SIZE);
	mig_ram_tx_free(&tx);
	mig_ram_rx_free(&rx);
	pipe_close(&p);
	free(src.buf);
	free(dst.buf);
}

static void test_ram_plain(void **ctx)
{
	(void)ctx;
	ram_transfer(false);
}

static void test_ram_zstd(void **ctx)
{
	(void)ctx;
	ram_transfer(true);
}

/* Zero-copy frames: pages sent from a memfd with sendfile, mixed with zero
 * pages and copied pages (each switch between the two kinds of data ends a
 * frame), arrive intact. */
static void test_ram_file(void **ctx)
{
	(void)ctx;
	struct fake_ram dst;
	struct pipe_pair p;
	struct mig_ram_tx tx;
	struct mig_ram_rx rx;
	struct terr err = { 0 };
	int fd = memfd_create("test-ram", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, RAM_SIZE), 0);
	uint8_t *src = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(src != MAP_FAILED);
	for (uint64_t pg = 0; pg < RAM_SIZE / 4096; pg++)
		if (pg % 7 != 3)
			for (unsigned w = 0; w < 512; w++)
				((uint64_t *)(src + pg * 4096))[w] = pg * 0x9e3779b97f4a7c15ull + w;
	fake_ram_init(&dst);
	memset(dst.buf, 0xee, RAM_SIZE);   /* zero pages must be written as zeros */
	pipe_open(&p);
	assert_int_equal(mig_ram_tx_init(&tx, &p.tx, 1u << 20, false, &err), 0);
	assert_int_equal(mig_ram_rx_init(&rx, &dst.mem, &err), 0);
	for (uint64_t pg = 0; pg < RAM_SIZE / 4096; pg++)
		rx.written[pg / 64] |= 1ull << (pg % 64);
	for (uint64_t pg = 0; pg < RAM_SIZE / 4096; pg++) {
		int r;
		if (mig_page_is_zero(src + pg * 4096))
			r = mig_ram_tx_zero(&tx, pg * 4096, &err);
		else if (pg % 100 < 3)
			r = mig_ram_tx_page(&tx, pg * 4096, src + pg * 4096, &err);
		else
			r = mig_ram_tx_file_page(&tx, pg * 4096, fd, pg * 4096, &err);
		assert_int_equal(r, 0);
	}
	assert_int_equal(mig_ram_tx_flush(&tx, &err), 0);
	assert_int_equal(p.tx.tx_tail, 0);
	assert_false(p.tx.tx_broken);
	assert_true(tx.frames > 8);   /* 1 MiB frames, and the switches */
	drain(&p, &rx, tx.frames);
	assert_memory_equal(src, dst.buf, RAM_SIZE);
	assert_int_equal(rx.pages_zero, RAM_SIZE / 4096 / 7 + 1);
	assert_int_equal(rx.pages_data + rx.pages_zero, RAM_SIZE / 4096);
	mig_ram_tx_free(&tx);
	mig_ram_rx_free(&rx);
	pipe_close(&p);
	munmap(src, RAM_SIZE);
	close(fd);
	free(dst.buf);
}

/* A peer that went away is an error from mig_send_file, not a SIGPIPE that
 * ends the process (sendfile cannot be told MSG_NOSIGNAL). */
static void test_send_file_peer_gone(void **ctx)
{
	(void)ctx;
	struct pipe_pair p;
	struct terr err = { 0 };
	int fd = memfd_create("test-ram", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	pipe_open(&p);
	struct iovec head = { "head", 4 };
	assert_int_equal(mig_send_split(&p.tx, MIG_RAM, 4 + (1 << 20), &head, 1, &err), 0);
	close(p.sv[1]);
	p.sv[1] = -1;
	assert_int_not_equal(mig_send_file(&p.tx, fd, 0, 1 << 20, &err), 0);
	assert_non_null(strstr(err.msg, "closed"));
	assert_true(p.tx.tx_broken);
	sigset_t pending;
	assert_int_equal(sigpending(&pending), 0);
	assert_false(sigismember(&pending, SIGPIPE));
	pipe_close(&p);
	close(fd);
}

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> 8 * i); }

/* One RAM frame with one run and `data` bytes after it; returns the error
 * message of receiving it (empty when accepted). */
static const char *one_run(uint64_t gpa, uint32_t npages, uint16_t kind, uint16_t resv,
			   uint32_t flags, const void *data, size_t dlen, uint32_t nruns)
{
	static char msg[600];
	static uint8_t payload[1 << 16], frame[(1 << 16) + 64];
	struct fake_ram f;
	struct mig_ram_rx rx;
	struct mig_conn c;
	struct terr err = { 0 };
	fake_ram_init(&f);
	put32(payload, nruns);
	put32(payload + 4, flags);
	put64(payload + 8, gpa);
	put32(payload + 16, npages);
	payload[20] = (uint8_t)kind;
	payload[21] = (uint8_t)(kind >> 8);
	payload[22] = (uint8_t)resv;
	payload[23] = 0;
	memcpy(payload + 24, data, dlen);
	size_t n = make_frame(frame, MIG_RAM, payload, (uint32_t)(24 + dlen), 0);
	mig_conn_init_mem(&c, frame, n, "test");
	assert_int_equal(mig_ram_rx_init(&rx, &f.mem, &err), 0);
	unsigned type;
	uint32_t len;
	assert_int_equal(mig_frame_begin(&c, &type, &len, &err), 0);
	msg[0] = '\0';
	if (mig_ram_rx_frame(&rx, &c, len, &err))
		snprintf(msg, sizeof(msg), "%s", err.msg);
	mig_ram_rx_free(&rx);
	mig_conn_free(&c);
	free(f.buf);
	return msg;
}

static void test_ram_malformed(void **ctx)
{
	(void)ctx;
	static uint8_t page[2 * 4096];
	memset(page, 0x5a, sizeof(page));
	/* the good one */
	assert_string_equal(one_run(0x100000, 1, MIG_RUN_DATA, 0, 0, page, 4096, 1), "");
	assert_string_equal(one_run(0x100000, 100, MIG_RUN_ZERO, 0, 0, NULL, 0, 1), "");
	const struct {
		const char *msg;
		uint64_t gpa;
		uint32_t n;
		uint16_t kind, resv;
		uint32_t flags;
		size_t dlen;
		uint32_t nruns;
	} bad[] = {
		{ "not inside guest RAM", RAM_SIZE, 1, MIG_RUN_DATA, 0, 0, 4096, 1 },
		{ "not inside guest RAM", RAM_SIZE - 4096, 2, MIG_RUN_DATA, 0, 0, 8192, 1 },
		{ "not inside guest RAM", 0x100800, 1, MIG_RUN_DATA, 0, 0, 4096, 1 },
		{ "not inside guest RAM", UINT64_MAX - 4095, 1, MIG_RUN_ZERO, 0, 0, 0, 1 },
		{ "unknown kind", 0, 1, 7, 0, 0, 4096, 1 },
		{ "reserved bits", 0, 1, MIG_RUN_DATA, 1, 0, 4096, 1 },
		{ "has 0 pages", 0, 0, MIG_RUN_DATA, 0, 0, 0, 1 },
		{ "pages follow, its runs need", 0, 1, MIG_RUN_DATA, 0, 0, 8192, 1 },
		{ "pages follow, its runs need", 0, 2, MIG_RUN_DATA, 0, 0, 4096, 1 },
		{ "pages follow, its runs need", 0, 4, MIG_RUN_ZERO, 0, 0, 4096, 1 },
		{ "flags 0x4", 0, 1, MIG_RUN_DATA, 0, 4, 4096, 1 },
		{ "do not decompress", 0, 1, MIG_RUN_DATA, 0, MIG_RAM_ZSTD, 4096, 1 },
		{ "runs (1 to", 0, 1, MIG_RUN_DATA, 0, 0, 4096, 0 },
		{ "do not fit", 0, 1, MIG_RUN_DATA, 0, 0, 4096, 1000 },
		{ "has 2049 pages (1 to 2048", 0, 2049, MIG_RUN_DATA, 0, 0, 4096, 1 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *m = one_run(bad[i].gpa, bad[i].n, bad[i].kind, bad[i].resv, bad[i].flags,
					page, bad[i].dlen, bad[i].nruns);
		if (!strstr(m, bad[i].msg))
			fail_msg("case %zu: \"%s\" does not say \"%s\"", i, m, bad[i].msg);
		assert_non_null(strstr(m, "RAM frame 0"));
	}
}

/* Receives one RAM frame with byte `flip` of its payload flipped into fresh
 * fake RAM (f->buf, to free); returns mig_ram_rx_frame's result. */
static int receive_flipped(struct fake_ram *f, const uint8_t *payload, uint32_t plen, size_t flip)
{
	static uint8_t frame[24 + 4096 + 64];
	struct mig_ram_rx rx;
	struct mig_conn c;
	struct terr err = { 0 };
	unsigned type;
	uint32_t len;
	size_t n = make_frame(frame, MIG_RAM, payload, plen, 0);
	frame[MIG_HDR_SIZE + flip] ^= 0x01;
	fake_ram_init(f);
	mig_conn_init_mem(&c, frame, n, "test");
	assert_int_equal(mig_ram_rx_init(&rx, &f->mem, &err), 0);
	assert_int_equal(mig_frame_begin(&c, &type, &len, &err), 0);
	int r = mig_ram_rx_frame(&rx, &c, len, &err);
	mig_ram_rx_free(&rx);
	mig_conn_free(&c);
	return r;
}

/* A RAM frame whose run table was damaged is refused before any page is
 * written (its checksum covers the table; the page data after it is not
 * covered). */
static void test_ram_table_damaged(void **ctx)
{
	(void)ctx;
	static uint8_t payload[24 + 4096];
	struct fake_ram f;
	put32(payload, 1);
	put32(payload + 4, 0);
	put64(payload + 8, 0x100000);
	put32(payload + 16, 1);
	payload[20] = MIG_RUN_DATA;
	memset(payload + 24, 0x77, 4096);
	for (size_t at = 0; at < 24; at++) {
		assert_int_not_equal(receive_flipped(&f, payload, sizeof(payload), at), 0);
		for (size_t i = 0; i < RAM_SIZE; i++)
			if (f.buf[i])
				fail_msg("byte %zu of the table flipped: guest RAM written at 0x%zx", at, i);
		free(f.buf);
	}
	/* flipping a byte of the page data: the checksum does not see it */
	assert_int_equal(receive_flipped(&f, payload, sizeof(payload), 24 + 100), 0);
	assert_int_equal(f.buf[0x100000 + 100], 0x76);
	free(f.buf);
}

/* tern's own writes to guest RAM (devices) are logged while tracking */
static void test_host_write_log(void **ctx)
{
	(void)ctx;
	struct fake_ram f;
	fake_ram_init(&f);
	const uint64_t pages = RAM_SIZE / 4096;
	uint64_t got[RAM_SIZE / 4096 / 64];
#define BIT(pg) (got[(pg) / 64] >> ((pg) % 64) & 1)
	/* not tracking: nothing recorded */
	guest_mem_note_write(&f.mem, f.buf + 0x10 * 4096, 1);
	memset(got, 0, sizeof(got));
	guest_mem_take_host_writes(&f.mem, 0, got, pages / 64);
	assert_false(BIT(0x10));
	assert_int_equal(guest_mem_track_host_writes(&f.mem, true), 0);
	guest_mem_note_write(&f.mem, f.buf + 0x500 * 4096 + 100, 5000);   /* 0x500, 0x501 */
	guest_mem_note_write(&f.mem, f.buf + 0x7ff * 4096, 4096);         /* the last page */
	guest_mem_note_write(&f.mem, f.buf + RAM_SIZE, 10);               /* outside: ignored */
	guest_mem_note_write(&f.mem, f.buf - 4096, 10);
	guest_mem_note_write(&f.mem, f.buf + 0x20 * 4096, 0);             /* nothing written */
	guest_mem_take_host_writes(&f.mem, 0, got, pages / 64);
	assert_true(BIT(0x500) && BIT(0x501) && BIT(0x7ff));
	assert_false(BIT(0x4ff) || BIT(0x502) || BIT(0x20) || BIT(0));
	/* taken: gone; a range from a later word */
	memset(got, 0, sizeof(got));
	guest_mem_note_write(&f.mem, f.buf + 0x540 * 4096, 1);
	guest_mem_take_host_writes(&f.mem, 0x500, got, 2);
	assert_false(BIT(0x0) || BIT(0x1));
	assert_true(BIT(0x40));
	assert_int_equal(guest_mem_track_host_writes(&f.mem, false), 0);
	guest_mem_note_write(&f.mem, f.buf + 0x600 * 4096, 1);
	memset(got, 0, sizeof(got));
	guest_mem_take_host_writes(&f.mem, 0, got, pages / 64);
	assert_false(BIT(0x600));
#undef BIT
	free(f.mem.host_dirty);
	free(f.buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_socketpair),
		cmocka_unit_test(test_every_byte_flipped),
		cmocka_unit_test(test_sequence_and_limits),
		cmocka_unit_test(test_rate_limit_window),
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_ram_plain),
		cmocka_unit_test(test_ram_zstd),
		cmocka_unit_test(test_ram_file),
		cmocka_unit_test(test_send_file_peer_gone),
		cmocka_unit_test(test_ram_table_damaged),
		cmocka_unit_test(test_ram_malformed),
		cmocka_unit_test(test_host_write_log),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
