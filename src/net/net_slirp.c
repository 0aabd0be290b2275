/* The user-mode back end: libslirp (4.x) runs a small TCP/IP stack that
 * terminates the guest's connections in tern and opens ordinary host
 * sockets for them, so no privileges are needed.
 *
 * Integration with the VM's event loop, without a thread and without a hook
 * in the loop: libslirp's set of sockets and its timers only change while
 * tern is calling into it (slirp_input, slirp_pollfds_poll, a timer
 * callback, slirp_add_hostfwd). So after every such call, still under the
 * back end's lock, resync():
 *   - slirp_pollfds_fill lists the sockets and the events slirp wants; they
 *     are mirrored into a private epoll instance (only the differences are
 *     applied), and that one epoll fd sits on the VM's event loop;
 *   - one timerfd is armed for the earliest of slirp's own deadline (the
 *     timeout slirp_pollfds_fill returns: TCP fast/slow timers, at most 1 s)
 *     and the timers slirp created through timer_new.
 * When either fd fires, service() collects the ready sockets from the
 * private epoll, hands them to slirp_pollfds_poll (which also runs the TCP
 * timers), runs expired timers, and resyncs.
 *
 * Frames slirp sends toward the guest (send_packet) are queued here, bounded;
 * an eventfd is readable while the queue is not empty, and the device reads
 * them with recv() when the guest has buffers. So slirp never calls into the
 * device, and the locks nest one way only: device -> slirp (transmit) and
 * slirp -> queue (send_packet), device -> queue (receive).
 *
 * slirp closes a socket only after unregister_poll_fd, where it leaves the
 * private epoll, so a recycled fd number never inherits a stale entry; as a
 * safety net every registration is redone once a second. */
#include "net/net.h"
#include "core/evloop.h"
#include "util/log.h"

#include <slirp/libslirp.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define RXQ_MAX_FRAMES 1024
#define RXQ_MAX_BYTES  (4u << 20)
#define FULL_RESYNC_NS 1000000000ll

struct slirp_timer {
	SlirpTimerCb cb;
	void *cb_opaque;
	int64_t expire_ms;            /* -1: not armed */
	struct slirp_timer *next;
};

struct fdslot {
	uint32_t reg;                 /* events registered in epfd (0: none) */
	uint32_t want;                /* events wanted by the current fill */
	unsigned seen;                /* fill generation that listed the fd */
	unsigned applied;
};

struct net_slirp {
	struct net_backend be;
	struct evloop *loop;
	bool on_loop_ep, on_loop_timer;

	pthread_mutex_t lock;         /* slirp, fds, timers, the fill */
	Slirp *slirp;
	int epfd, timerfd;
	struct pollfd *pfd;           /* the last fill: index = what add_poll returned */
	int *revents;
	size_t npfd, cappfd;
	struct fdslot *slots;         /* by fd number */
	size_t nslots;
	unsigned gen;
	struct slirp_timer *timers;
	int64_t armed_ns;             /* what the timerfd is set to (0: nothing) */
	int64_t last_full_ns;
	uint8_t *txbuf;
	unsigned guest_errors;

	pthread_mutex_t qlock;        /* the queue toward the guest */
	int evfd;                     /* readable while the queue is not empty */
	uint8_t *q[RXQ_MAX_FRAMES];
	uint32_t qlen[RXQ_MAX_FRAMES];
	unsigned qhead, qcount;
	size_t qbytes;
	uint64_t qdropped;
};

static struct net_slirp *to_s(struct net_backend *be)
{
	return (struct net_slirp *)be;
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* --- the queue toward the guest --- */

static void evfd_set(struct net_slirp *s)
{
	uint64_t one = 1;
	if (write(s->evfd, &one, sizeof(one)) < 0) {
		/* the counter is already non-zero */
	}
}

static void evfd_clear(struct net_slirp *s)
{
	uint64_t v;
	if (read(s->evfd, &v, sizeof(v)) < 0) {
		/* already zero */
	}
}

static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
	struct net_slirp *s = opaque;
	if (len == 0 || len > NET_MAX_FRAME - NET_VNET_HDR_LEN)
		return (ssize_t)len;
	pthread_mutex_lock(&s->qlock);
	if (s->qcount == RXQ_MAX_FRAMES || s->qbytes + len > RXQ_MAX_BYTES) {
		/* the guest does not take frames fast enough: TCP retransmits */
		if (s->qdropped++ == 0)
			log_info("net", "%s: the guest is not receiving; dropping frames toward it "
				 "(counted, not logged again)", s->be.id);
		pthread_mutex_unlock(&s->qlock);
		return (ssize_t)len;
	}
	uint8_t *copy = malloc(len);
	if (!copy) {
		s->qdropped++;
		pthread_mutex_unlock(&s->qlock);
		return (ssize_t)len;
	}
	memcpy(copy, buf, len);
	unsigned slot = (s->qhead + s->qcount) % RXQ_MAX_FRAMES;
	s->q[slot] = copy;
	s->qlen[slot] = (uint32_t)len;
	if (s->qcount++ == 0)
		evfd_set(s);
	s->qbytes += len;
	pthread_mutex_unlock(&s->qlock);
	return (ssize_t)len;
}

static ssize_t slirp_recv(struct net_backend *be, void *buf, size_t len)
{
	struct net_slirp *s = to_s(be);
	pthread_mutex_lock(&s->qlock);
	if (s->qcount == 0) {
		evfd_clear(s);
		pthread_mutex_unlock(&s->qlock);
		return 0;
	}
	uint8_t *f = s->q[s->qhead];
	uint32_t n = s->qlen[s->qhead];
	s->q[s->qhead] = NULL;
	s->qhead = (s->qhead + 1) % RXQ_MAX_FRAMES;
	s->qbytes -= n;
	if (--s->qcount == 0)
		evfd_clear(s);
	pthread_mutex_unlock(&s->qlock);
	if (n > len)
		n = (uint32_t)len;   /* cannot happen: frames are <= NET_MAX_FRAME */
	memcpy(buf, f, n);
	free(f);
	return n;
}

/* --- slirp's other callbacks (all called with s->lock held) --- */

static void cb_guest_error(const char *msg, void *opaque)
{
	struct net_slirp *s = opaque;
	if (s->guest_errors < 10)
		log_warn("net", "%s: the guest sent something slirp refuses: %s%s", s->be.id, msg,
			 s->guest_errors == 9 ? " (further ones are not logged)" : "");
	s->guest_errors++;
}

static int64_t cb_clock_get_ns(void *opaque)
{
	(void)opaque;
	return now_ns();
}

static void *cb_timer_new(SlirpTimerCb cb, void *cb_opaque, void *opaque)
{
	struct net_slirp *s = opaque;
	struct slirp_timer *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->cb = cb;
	t->cb_opaque = cb_opaque;
	t->expire_ms = -1;
	t->next = s->timers;
	s->timers = t;
	return t;
}

static void cb_timer_free(void *timer, void *opaque)
{
	struct net_slirp *s = opaque;
	for (struct slirp_timer **pp = &s->timers; *pp; pp = &(*pp)->next) {
		if (*pp == timer) {
			*pp = ((struct slirp_timer *)timer)->next;
			free(timer);
			return;
		}
	}
}

static void cb_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
	(void)opaque;
	if (timer)
		((struct slirp_timer *)timer)->expire_ms = expire_ms;
}

static void cb_register_poll_fd(int fd, void *opaque)
{
	(void)fd;
	(void)opaque;
}

static void cb_unregister_poll_fd(int fd, void *opaque)
{
	struct net_slirp *s = opaque;
	if (fd >= 0 && (size_t)fd < s->nslots && s->slots[fd].reg) {
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, NULL);
		s->slots[fd].reg = 0;
	}
}

static void cb_notify(void *opaque)
{
	/* slirp may take more data from a socket now: the resync after the
	 * current call picks that up */
	(void)opaque;
}

static const SlirpCb slirp_callbacks = {
	.send_packet = cb_send_packet,
	.guest_error = cb_guest_error,
	.clock_get_ns = cb_clock_get_ns,
	.timer_new = cb_timer_new,
	.timer_free = cb_timer_free,
	.timer_mod = cb_timer_mod,
	.register_poll_fd = cb_register_poll_fd,
	.unregister_poll_fd = cb_unregister_poll_fd,
	.notify = cb_notify,
};

/* --- sockets and timers on the event loop --- */

static uint32_t to_epoll(int ev)
{
	uint32_t e = 0;
	if (ev & SLIRP_POLL_IN)
		e |= EPOLLIN;
	if (ev & SLIRP_POLL_OUT)
		e |= EPOLLOUT;
	if (ev & SLIRP_POLL_PRI)
		e |= EPOLLPRI;
	return e;
}

static int from_epoll(uint32_t e)
{
	int ev = 0;
	if (e & EPOLLIN)
		ev |= SLIRP_POLL_IN;
	if (e & EPOLLOUT)
		ev |= SLIRP_POLL_OUT;
	if (e & EPOLLPRI)
		ev |= SLIRP_POLL_PRI;
	if (e & EPOLLERR)
		ev |= SLIRP_POLL_ERR;
	if (e & EPOLLHUP)
		ev |= SLIRP_POLL_HUP;
	return ev;
}

static int cb_add_poll(int fd, int events, void *opaque)
{
	struct net_slirp *s = opaque;
	if (s->npfd == s->cappfd) {
		size_t cap = s->cappfd ? s->cappfd * 2 : 16;
		struct pollfd *p = realloc(s->pfd, cap * sizeof(*p));
		if (!p)
			return -1;
		s->pfd = p;
		int *r = realloc(s->revents, cap * sizeof(*r));
		if (!r)
			return -1;
		s->revents = r;
		s->cappfd = cap;
	}
	s->pfd[s->npfd] = (struct pollfd){ .fd = fd, .events = (short)events };
	s->revents[s->npfd] = 0;
	return (int)s->npfd++;
}

static int cb_get_revents(int idx, void *opaque)
{
	struct net_slirp *s = opaque;
	return idx >= 0 && (size_t)idx < s->npfd ? s->revents[idx] : 0;
}

static bool slot_room(struct net_slirp *s, int fd)
{
	if ((size_t)fd < s->nslots)
		return true;
	size_t n = s->nslots ? s->nslots : 64;
	while (n <= (size_t)fd)
		n *= 2;
	struct fdslot *p = realloc(s->slots, n * sizeof(*p));
	if (!p)
		return false;
	memset(p + s->nslots, 0, (n - s->nslots) * sizeof(*p));
	s->slots = p;
	s->nslots = n;
	return true;
}

static void apply(struct net_slirp *s, int fd, uint32_t want)
{
	struct fdslot *sl = &s->slots[fd];
	if (sl->reg == want)
		return;
	struct epoll_event ev = { .events = want, .data.fd = fd };
	int r;
	if (sl->reg) {
		r = epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &ev);
		if (r < 0 && errno == ENOENT)
			r = epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
	} else {
		r = epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
		if (r < 0 && errno == EEXIST)
			r = epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &ev);
	}
	if (r < 0) {
		log_debug("net", "%s: cannot watch slirp socket %d: %s", s->be.id, fd, strerror(errno));
		sl->reg = 0;
		return;
	}
	sl->reg = want;
}

static void arm_timer(struct net_slirp *s, uint32_t timeout_ms)
{
	int64_t now = now_ns();
	int64_t deadline = now + (int64_t)(timeout_ms == UINT32_MAX ? 1000 : timeout_ms) * 1000000ll;
	for (struct slirp_timer *t = s->timers; t; t = t->next)
		if (t->expire_ms >= 0 && t->expire_ms * 1000000ll < deadline)
			deadline = t->expire_ms * 1000000ll;
	if (deadline <= now)
		deadline = now + 1;
	/* Only ever move the timer earlier: one that fires too soon costs a
	 * service() and a re-arm, while re-arming after every frame (slirp's
	 * timeout is relative to now) costs a syscall per frame. */
	if (s->armed_ns && s->armed_ns > now && s->armed_ns <= deadline + 1000000)
		return;
	struct itimerspec its = { .it_value = { .tv_sec = deadline / 1000000000ll,
						.tv_nsec = deadline % 1000000000ll } };
	if (timerfd_settime(s->timerfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
		s->armed_ns = deadline;
}

/* After every call into slirp: mirror its sockets into epfd, re-arm the
 * timerfd. */
static void resync(struct net_slirp *s)
{
	uint32_t timeout = UINT32_MAX;
	s->npfd = 0;
	slirp_pollfds_fill(s->slirp, &timeout, cb_add_poll, s);

	int64_t now = now_ns();
	bool full = now - s->last_full_ns >= FULL_RESYNC_NS;
	if (full) {
		s->last_full_ns = now;
		for (size_t fd = 0; fd < s->nslots; fd++) {
			if (s->slots[fd].reg)
				epoll_ctl(s->epfd, EPOLL_CTL_DEL, (int)fd, NULL);
			s->slots[fd].reg = 0;
		}
	}
	unsigned gen = ++s->gen;
	for (size_t i = 0; i < s->npfd; i++) {
		int fd = s->pfd[i].fd;
		if (fd < 0 || !slot_room(s, fd))
			continue;
		struct fdslot *sl = &s->slots[fd];
		uint32_t e = to_epoll(s->pfd[i].events);
		sl->want = sl->seen == gen ? sl->want | e : e;
		sl->seen = gen;
	}
	for (size_t i = 0; i < s->npfd; i++) {
		int fd = s->pfd[i].fd;
		if (fd < 0 || (size_t)fd >= s->nslots || s->slots[fd].applied == gen)
			continue;
		s->slots[fd].applied = gen;
		apply(s, fd, s->slots[fd].want);
	}
	for (size_t fd = 0; fd < s->nslots; fd++) {
		if (s->slots[fd].reg && s->slots[fd].seen != gen) {
			epoll_ctl(s->epfd, EPOLL_CTL_DEL, (int)fd, NULL);
			s->slots[fd].reg = 0;
		}
	}
	arm_timer(s, timeout);
}

static void run_timers(struct net_slirp *s)
{
	int64_t now_ms = now_ns() / 1000000ll;
	/* a callback may create, free or re-arm timers: restart after each */
	for (bool again = true; again;) {
		again = false;
		for (struct slirp_timer *t = s->timers; t; t = t->next) {
			if (t->expire_ms >= 0 && t->expire_ms <= now_ms) {
				t->expire_ms = -1;
				t->cb(t->cb_opaque);
				again = true;
				break;
			}
		}
	}
}

/* Hand the ready sockets to slirp (which also runs its TCP timers), run
 * expired timers, resync. */
static void service(struct net_slirp *s)
{
	struct epoll_event evs[128];
	int n = epoll_wait(s->epfd, evs, 128, 0);
	for (size_t i = 0; i < s->npfd; i++)
		s->revents[i] = 0;
	for (int i = 0; i < n; i++) {
		int fd = evs[i].data.fd;
		int rev = from_epoll(evs[i].events);
		/* the fill's index of fd (one entry per fd, usually) */
		for (size_t j = 0; j < s->npfd; j++)
			if (s->pfd[j].fd == fd)
				s->revents[j] |= rev & (s->pfd[j].events | SLIRP_POLL_ERR | SLIRP_POLL_HUP);
	}
	slirp_pollfds_poll(s->slirp, n < 0, cb_get_revents, s);
	run_timers(s);
	resync(s);
}

static void on_sockets(void *opaque, uint32_t events)
{
	struct net_slirp *s = opaque;
	(void)events;
	pthread_mutex_lock(&s->lock);
	service(s);
	pthread_mutex_unlock(&s->lock);
}

static void on_timer(void *opaque, uint32_t events)
{
	struct net_slirp *s = opaque;
	uint64_t v;
	(void)events;
	if (read(s->timerfd, &v, sizeof(v)) < 0) {
		/* spurious: nothing expired */
	}
	pthread_mutex_lock(&s->lock);
	s->armed_ns = 0;
	service(s);
	pthread_mutex_unlock(&s->lock);
}

/* --- the back end --- */

static int slirp_send(struct net_backend *be, const struct iovec *iov, unsigned iovcnt)
{
	struct net_slirp *s = to_s(be);
	size_t len = 0;
	for (unsigned i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > NET_MAX_FRAME - len)
			return -EMSGSIZE;
		len += iov[i].iov_len;
	}
	pthread_mutex_lock(&s->lock);
	size_t off = 0;
	for (unsigned i = 0; i < iovcnt; i++) {
		memcpy(s->txbuf + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	slirp_input(s->slirp, s->txbuf, (int)len);
	resync(s);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static void slirp_destroy(struct net_backend *be)
{
	struct net_slirp *s = to_s(be);
	if (s->on_loop_ep)
		evloop_del(s->loop, s->epfd);
	if (s->on_loop_timer)
		evloop_del(s->loop, s->timerfd);
	pthread_mutex_lock(&s->lock);
	if (s->slirp)
		slirp_cleanup(s->slirp);
	s->slirp = NULL;
	pthread_mutex_unlock(&s->lock);
	while (s->timers) {
		struct slirp_timer *t = s->timers;
		s->timers = t->next;
		free(t);
	}
	for (unsigned i = 0; i < s->qcount; i++)
		free(s->q[(s->qhead + i) % RXQ_MAX_FRAMES]);
	if (s->epfd >= 0)
		close(s->epfd);
	if (s->timerfd >= 0)
		close(s->timerfd);
	if (s->evfd >= 0)
		close(s->evfd);
	free(s->pfd);
	free(s->revents);
	free(s->slots);
	free(s->txbuf);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->qlock);
	free(s);
}

static const struct net_backend_ops slirp_ops = {
	.kind = "user",
	.send = slirp_send,
	.recv = slirp_recv,
	.destroy = slirp_destroy,
};

/* --- host forwards --- */

#define HOSTFWD_SYNTAX "[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT"

static bool parse_port(const char *s, size_t len, uint16_t *out)
{
	unsigned v = 0;
	if (len == 0 || len > 5)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v == 0 || v > 65535)
		return false;
	*out = (uint16_t)v;
	return true;
}

static bool parse_addr(const char *s, size_t len, uint32_t *out)
{
	char buf[INET_ADDRSTRLEN];
	struct in_addr a;
	if (len == 0) {
		*out = 0;
		return true;
	}
	if (len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET, buf, &a) != 1)
		return false;
	*out = a.s_addr;
	return true;
}

static int parse_one(const char *e, size_t len, struct net_hostfwd *f, const char *what,
		     unsigned n, struct terr *err)
{
	char ent[256];
	snprintf(ent, sizeof(ent), "%.*s", (int)(len < 200 ? len : 200), e);
#define BAD(...) terr_set(err, EINVAL, "%s: forward %u \"%s\": " __VA_ARGS__)
	const char *end = e + len;
	const char *c1 = memchr(e, ':', len);
	if (!c1)
		return BAD("expected %s", what, n, ent, HOSTFWD_SYNTAX);
	size_t plen = (size_t)(c1 - e);
	if (plen == 0 || (plen == 3 && !memcmp(e, "tcp", 3)))
		f->udp = false;
	else if (plen == 3 && !memcmp(e, "udp", 3))
		f->udp = true;
	else
		return BAD("unknown protocol \"%.*s\" (tcp or udp)", what, n, ent, (int)plen, e);
	const char *dash = memchr(c1 + 1, '-', (size_t)(end - c1 - 1));
	if (!dash)
		return BAD("no '-' between the host and the guest side (expected %s)", what, n, ent,
			   HOSTFWD_SYNTAX);
	/* host side: [ADDR]:PORT */
	const char *h = c1 + 1;
	const char *hc = memrchr(h, ':', (size_t)(dash - h));
	if (!hc)
		return BAD("the host side needs [HOSTADDR]:HOSTPORT", what, n, ent);
	if (!parse_addr(h, (size_t)(hc - h), &f->host_addr))
		return BAD("host address \"%.*s\" is not an IPv4 address", what, n, ent,
			   (int)(hc - h), h);
	if (!parse_port(hc + 1, (size_t)(dash - hc - 1), &f->host_port))
		return BAD("host port \"%.*s\" is not a number from 1 to 65535", what, n, ent,
			   (int)(dash - hc - 1), hc + 1);
	/* guest side: [ADDR]:PORT */
	const char *g = dash + 1;
	const char *gc = memrchr(g, ':', (size_t)(end - g));
	if (!gc)
		return BAD("the guest side needs [GUESTADDR]:GUESTPORT", what, n, ent);
	if (!parse_addr(g, (size_t)(gc - g), &f->guest_addr))
		return BAD("guest address \"%.*s\" is not an IPv4 address", what, n, ent,
			   (int)(gc - g), g);
	if (f->guest_addr) {
		uint32_t a = ntohl(f->guest_addr);
		if ((a & 0xffffff00u) != 0x0a000200u || (a & 0xff) < 4 || (a & 0xff) == 255)
			return BAD("guest address \"%.*s\" is not a guest address in 10.0.2.0/24 "
				   "(10.0.2.4 to 10.0.2.254)", what, n, ent, (int)(gc - g), g);
	}
	if (!parse_port(gc + 1, (size_t)(end - gc - 1), &f->guest_port))
		return BAD("guest port \"%.*s\" is not a number from 1 to 65535", what, n, ent,
			   (int)(end - gc - 1), gc + 1);
#undef BAD
	return 0;
}

int net_hostfwd_parse(const char *s, struct net_hostfwd *out, size_t max, const char *what,
		      struct terr *err)
{
	size_t n = 0;
	if (!s || !*s)
		return 0;
	for (const char *p = s;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (len == 0)
			return terr_set(err, EINVAL, "%s: empty forward in \"%s\" (expected a "
					"comma-separated list of %s)", what, s, HOSTFWD_SYNTAX);
		if (n == max)
			return terr_set(err, EINVAL, "%s: more than %zu forwards", what, max);
		int r = parse_one(p, len, &out[n], what, (unsigned)n + 1, err);
		if (r)
			return r;
		for (size_t i = 0; i < n; i++)
			if (out[i].udp == out[n].udp && out[i].host_port == out[n].host_port &&
			    (out[i].host_addr == out[n].host_addr || !out[i].host_addr ||
			     !out[n].host_addr))
				return terr_set(err, EINVAL, "%s: host port %u/%s is forwarded twice "
						"(forwards %zu and %zu)", what, out[n].host_port,
						out[n].udp ? "udp" : "tcp", i + 1, n + 1);
		n++;
		if (!comma)
			break;
		p = comma + 1;
	}
	return (int)n;
}

/* --- creation --- */

static struct in_addr ip4(uint32_t host_order)
{
	return (struct in_addr){ .s_addr = htonl(host_order) };
}

static struct in6_addr ip6(const char *s)
{
	struct in6_addr a;
	inet_pton(AF_INET6, s, &a);
	return a;
}

int net_slirp_create(struct evloop *loop, const struct net_slirp_params *p,
		     struct net_backend **out, struct terr *err)
{
	struct net_slirp *s = calloc(1, sizeof(*s));
	int r;
	if (!s)
		return terr_set(err, ENOMEM, "%s: out of memory", p->id);
	s->be.ops = &slirp_ops;
	snprintf(s->be.id, sizeof(s->be.id), "%s", p->id);
	s->loop = loop;
	s->epfd = s->timerfd = s->evfd = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->qlock, NULL);
	s->txbuf = malloc(NET_MAX_FRAME);
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	s->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	s->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!s->txbuf || s->epfd < 0 || s->timerfd < 0 || s->evfd < 0) {
		r = terr_set(err, errno ? errno : ENOMEM, "%s: cannot set up user-mode networking: %s",
			     p->id, strerror(errno ? errno : ENOMEM));
		slirp_destroy(&s->be);
		return r;
	}
	s->be.rx_fd = s->evfd;

	SlirpConfig cfg = {
		.version = 4,
		.restricted = 0,
		.in_enabled = true,
		.vnetwork = ip4(0x0a000200),     /* 10.0.2.0/24 */
		.vnetmask = ip4(0xffffff00),
		.vhost = ip4(0x0a000202),        /* 10.0.2.2: gateway, the host */
		.in6_enabled = true,
		.vprefix_addr6 = ip6("fec0::"),
		.vprefix_len = 64,
		.vhost6 = ip6("fec0::2"),
		.vhostname = p->hostname,
		.vdhcp_start = ip4(0x0a00020f),  /* 10.0.2.15 */
		.vnameserver = ip4(0x0a000203),  /* 10.0.2.3 */
		.vnameserver6 = ip6("fec0::3"),
		.if_mtu = p->mtu,                /* 0: libslirp's 1500 */
		.if_mru = p->mtu,
	};
	pthread_mutex_lock(&s->lock);
	s->slirp = slirp_new(&cfg, &slirp_callbacks, s);
	if (!s->slirp) {
		pthread_mutex_unlock(&s->lock);
		r = terr_set(err, ENOMEM, "%s: libslirp %s refused to start", p->id,
			     slirp_version_string());
		slirp_destroy(&s->be);
		return r;
	}
	for (size_t i = 0; i < p->nhostfwd; i++) {
		const struct net_hostfwd *f = &p->hostfwd[i];
		struct in_addr ha = { .s_addr = f->host_addr }, ga = { .s_addr = f->guest_addr };
		errno = 0;
		if (slirp_add_hostfwd(s->slirp, f->udp, ha, f->host_port, ga, f->guest_port) < 0) {
			int e = errno ? errno : EADDRINUSE;
			char hs[INET_ADDRSTRLEN];
			inet_ntop(AF_INET, &ha, hs, sizeof(hs));
			pthread_mutex_unlock(&s->lock);
			r = terr_set(err, e, "%s.hostfwd: cannot listen on %s port %s:%u for forward %zu: %s",
				     p->id, f->udp ? "udp" : "tcp", hs, f->host_port, i + 1, strerror(e));
			slirp_destroy(&s->be);
			return r;
		}
	}
	resync(s);
	pthread_mutex_unlock(&s->lock);

	if ((r = evloop_add(loop, s->epfd, EPOLLIN, on_sockets, s))) {
		slirp_destroy(&s->be);
		return terr_set(err, -r, "%s: cannot watch slirp's sockets: %s", p->id, strerror(-r));
	}
	s->on_loop_ep = true;
	if ((r = evloop_add(loop, s->timerfd, EPOLLIN, on_timer, s))) {
		slirp_destroy(&s->be);
		return terr_set(err, -r, "%s: cannot watch slirp's timers: %s", p->id, strerror(-r));
	}
	s->on_loop_timer = true;
	*out = &s->be;
	return 0;
}
