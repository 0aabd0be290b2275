#include "migration/wire.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

static const struct {
	const char *name;
	uint32_t max;
} types[] = {
	[MIG_HELLO] = { "HELLO", 256u << 10 },
	[MIG_WELCOME] = { "WELCOME", 64u << 10 },
	[MIG_REFUSE] = { "REFUSE", 64u << 10 },
	[MIG_CONFIG] = { "CONFIG", 4u << 20 },
	[MIG_READY] = { "READY", 4096 },
	[MIG_RAM] = { "RAM", 24u << 20 },
	[MIG_ROUND] = { "ROUND", 4096 },
	[MIG_STATE] = { "STATE", MIG_MAX_PAYLOAD },
	[MIG_DONE] = { "DONE", 4096 },
	[MIG_HAVE_ALL] = { "HAVE_ALL", 4096 },
	[MIG_GO] = { "GO", 4096 },
	[MIG_STARTED] = { "STARTED", 4096 },
	[MIG_RELEASED] = { "RELEASED", 4096 },
	[MIG_LOCKED] = { "LOCKED", 4096 },
};

const char *mig_type_name(unsigned type)
{
	return type >= 1 && type <= MIG_TYPE_MAX ? types[type].name : "unknown";
}

uint32_t mig_type_max(unsigned type)
{
	return type >= 1 && type <= MIG_TYPE_MAX ? types[type].max : 0;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> 8 * i); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

/* ---- rate limit -------------------------------------------------------- */

void mig_rl_init(struct mig_ratelimit *rl, uint64_t bytes_per_sec)
{
	memset(rl, 0, sizeof(*rl));
	rl->per_window = bytes_per_sec / (1000000000ull / MIG_RL_WINDOW_NS);
	if (bytes_per_sec && !rl->per_window)
		rl->per_window = 1;
}

static bool cancelled(const struct mig_conn *c)
{
	return c->cancel && atomic_load(c->cancel);
}

/* Waits until n more bytes fit in the window, then books them. */
static int rl_take(struct mig_conn *c, uint64_t n, struct terr *err)
{
	struct mig_ratelimit *rl = c->rl;
	if (!rl || !rl->per_window)
		return 0;
	for (;;) {
		uint64_t now = mono_ns();
		while (rl->count && rl->t[rl->head] + MIG_RL_WINDOW_NS <= now) {
			rl->in_window -= rl->n[rl->head];
			rl->head = (rl->head + 1) % MIG_RL_SLOTS;
			rl->count--;
		}
		/* a frame larger than a whole window goes alone (callers keep
		 * frames below half a window) */
		if (rl->count == 0 || (rl->in_window + n <= rl->per_window && rl->count < MIG_RL_SLOTS))
			break;
		if (cancelled(c))
			return terr_set(err, ECANCELED, "cancelled");
		uint64_t wait = rl->t[rl->head] + MIG_RL_WINDOW_NS - now;
		if (wait > 10000000ull)
			wait = 10000000ull;
		struct timespec ts = { 0, (long)wait };
		nanosleep(&ts, NULL);
		rl->sleep_ns += mono_ns() - now;
	}
	unsigned slot = (rl->head + rl->count) % MIG_RL_SLOTS;
	rl->t[slot] = mono_ns();
	rl->n[slot] = n;
	rl->count++;
	rl->in_window += n;
	return 0;
}

/* ---- connection -------------------------------------------------------- */

int mig_conn_init(struct mig_conn *c, int fd, const char *peer, struct terr *err)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->abort_fd = -1;
	c->timeout_ms = -1;
	c->peer = peer;
	c->xxh = XXH3_createState();
	if (!c->xxh)
		return terr_set(err, ENOMEM, "out of memory");
	if (fd >= 0) {
		/* deep socket buffers: fewer wake-ups between the two ends */
		int sz = 8 << 20;
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
		int fl = fcntl(fd, F_GETFL);
		if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
			return terr_set(err, errno, "connection to %s: %s", peer, strerror(errno));
	}
	return 0;
}

void mig_conn_init_mem(struct mig_conn *c, const uint8_t *buf, size_t len, const char *peer)
{
	mig_conn_init(c, -1, peer, NULL);
	c->mem = buf;
	c->mem_len = len;
}

void mig_conn_free(struct mig_conn *c)
{
	if (c->xxh)
		XXH3_freeState(c->xxh);
	c->xxh = NULL;
}

/* Wait for fd to become ready for `events`. */
static int wait_fd(struct mig_conn *c, short events, struct terr *err)
{
	int waited = 0;
	for (;;) {
		if (cancelled(c))
			return terr_set(err, ECANCELED, "cancelled");
		struct pollfd p[2] = { { .fd = c->fd, .events = events },
				       { .fd = c->abort_fd, .events = POLLIN } };
		int slice = 200;
		if (c->timeout_ms >= 0 && c->timeout_ms - waited < slice)
			slice = c->timeout_ms - waited;
		int n = poll(p, c->abort_fd >= 0 ? 2 : 1, slice);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return terr_set(err, errno, "waiting for %s: %s", c->peer, strerror(errno));
		if (n > 0 && c->abort_fd >= 0 && (p[1].revents & POLLIN))
			return terr_set(err, EINTR, "interrupted by a signal");
		if (n > 0)
			return 0;   /* ready, or an error the next call reports */
		waited += slice;
		if (c->timeout_ms >= 0 && waited >= c->timeout_ms)
			return terr_set(err, ETIMEDOUT, "%s sent nothing for %d s", c->peer,
					c->timeout_ms / 1000);
	}
}

int mig_write_all(struct mig_conn *c, const struct iovec *iov_in, int niov, struct terr *err)
{
	struct iovec iov[16];
	if (niov > 16)
		return terr_set(err, EINVAL, "too many pieces in one frame");
	memcpy(iov, iov_in, sizeof(*iov) * (size_t)niov);
	int i = 0;
	while (i < niov) {
		if (iov[i].iov_len == 0) {
			i++;
			continue;
		}
		/* a cancel between frames leaves the stream whole (a REFUSE can
		 * follow); inside one it is seen while waiting */
		if (cancelled(c) && i == 0 && iov[0].iov_base == iov_in[0].iov_base)
			return terr_set(err, ECANCELED, "cancelled");
		struct msghdr mh = { .msg_iov = iov + i, .msg_iovlen = (size_t)(niov - i) };
		ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				int r = wait_fd(c, POLLOUT, err);
				if (r) {
					c->tx_broken = true;
					return r;
				}
				continue;
			}
			c->tx_broken = true;
			return terr_set(err, errno, "sending to %s: %s", c->peer,
					errno == EPIPE || errno == ECONNRESET ? "the connection was closed" :
					strerror(errno));
		}
		c->tx_bytes += (uint64_t)w;
		size_t left = (size_t)w;
		while (i < niov && left >= iov[i].iov_len) {
			left -= iov[i].iov_len;
			i++;
		}
		if (i < niov) {
			iov[i].iov_base = (uint8_t *)iov[i].iov_base + left;
			iov[i].iov_len -= left;
		}
	}
	return 0;
}

int mig_read_all(struct mig_conn *c, void *dst, size_t n, struct terr *err)
{
	uint8_t *p = dst;
	if (c->fd < 0) {
		if (c->mem_len - c->mem_pos < n)
			return terr_set(err, EPIPE, "%s closed the connection in the middle of a frame",
					c->peer);
		memcpy(p, c->mem + c->mem_pos, n);
		c->mem_pos += n;
		c->rx_bytes += n;
		return 0;
	}
	while (n) {
		ssize_t r = read(c->fd, p, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				int e = wait_fd(c, POLLIN, err);
				if (e)
					return e;
				continue;
			}
			return terr_set(err, errno, "receiving from %s: %s", c->peer,
					errno == ECONNRESET ? "the connection was reset" : strerror(errno));
		}
		if (r == 0)
			return terr_set(err, EPIPE, "%s closed the connection", c->peer);
		p += r;
		n -= (size_t)r;
		c->rx_bytes += (uint64_t)r;
	}
	return 0;
}

/* ---- frames ------------------------------------------------------------ */

void mig_hdr_encode(uint8_t hdr[MIG_HDR_SIZE], unsigned type, uint32_t len, uint32_t seq,
		    const struct iovec *iov, int niov)
{
	XXH3_state_t st;
	put32(hdr, MIG_MAGIC);
	put16(hdr + 4, (uint16_t)type);
	put16(hdr + 6, 0);
	put32(hdr + 8, len);
	put32(hdr + 12, seq);
	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, hdr, 16);
	for (int i = 0; i < niov; i++)
		if (iov[i].iov_len)
			XXH3_64bits_update(&st, iov[i].iov_base, iov[i].iov_len);
	put64(hdr + 16, XXH3_64bits_digest(&st));
}

int mig_send(struct mig_conn *c, unsigned type, const struct iovec *iov, int niov, struct terr *err)
{
	uint8_t hdr[MIG_HDR_SIZE];
	struct iovec all[9];
	uint64_t len = 0;
	if (niov > 8)
		return terr_set(err, EINVAL, "too many pieces in one frame");
	if (c->tx_tail)
		return terr_set(err, EINVAL, "a %u-byte tail of the last frame is still owed", c->tx_tail);
	for (int i = 0; i < niov; i++)
		len += iov[i].iov_len;
	if (len > mig_type_max(type))
		return terr_set(err, E2BIG, "%s message of %llu bytes is over the limit of %u",
				mig_type_name(type), (unsigned long long)len, mig_type_max(type));
	int r = rl_take(c, len + MIG_HDR_SIZE, err);
	if (r)
		return r;
	mig_hdr_encode(hdr, type, (uint32_t)len, c->tx_seq, iov, niov);
	all[0] = (struct iovec){ hdr, MIG_HDR_SIZE };
	memcpy(all + 1, iov, sizeof(*iov) * (size_t)niov);
	r = mig_write_all(c, all, niov + 1, err);
	if (!r)
		c->tx_seq++;
	return r;
}

int mig_send_split(struct mig_conn *c, unsigned type, uint32_t len, const struct iovec *head,
		   int nhead, struct terr *err)
{
	uint8_t hdr[MIG_HDR_SIZE];
	struct iovec all[9];
	uint64_t hlen = 0;
	if (nhead > 8)
		return terr_set(err, EINVAL, "too many pieces in one frame");
	if (c->tx_tail)
		return terr_set(err, EINVAL, "a %u-byte tail of the last frame is still owed", c->tx_tail);
	for (int i = 0; i < nhead; i++)
		hlen += head[i].iov_len;
	if (len > mig_type_max(type) || hlen > len)
		return terr_set(err, E2BIG, "%s message of %u bytes (%llu of them summed) is over the "
				"limit of %u", mig_type_name(type), len, (unsigned long long)hlen,
				mig_type_max(type));
	int r = rl_take(c, (uint64_t)len + MIG_HDR_SIZE, err);
	if (r)
		return r;
	mig_hdr_encode(hdr, type, len, c->tx_seq, head, nhead);
	all[0] = (struct iovec){ hdr, MIG_HDR_SIZE };
	memcpy(all + 1, head, sizeof(*head) * (size_t)nhead);
	r = mig_write_all(c, all, nhead + 1, err);
	if (r)
		return r;
	c->tx_seq++;
	c->tx_tail = len - (uint32_t)hlen;
	if (c->tx_tail)
		c->tx_broken = true;   /* until the tail is out */
	return 0;
}

static void tail_sent(struct mig_conn *c, size_t n)
{
	c->tx_tail -= (uint32_t)n;
	if (!c->tx_tail)
		c->tx_broken = false;
}

int mig_send_tail(struct mig_conn *c, const struct iovec *iov, int niov, struct terr *err)
{
	uint64_t n = 0;
	for (int i = 0; i < niov; i++)
		n += iov[i].iov_len;
	if (n > c->tx_tail)
		return terr_set(err, EINVAL, "%llu bytes, more than the %u the frame still owes",
				(unsigned long long)n, c->tx_tail);
	if (!n)
		return 0;
	int r = mig_write_all(c, iov, niov, err);
	if (r)
		return r;
	tail_sent(c, n);
	return 0;
}

/* sendfile cannot take MSG_NOSIGNAL: SIGPIPE is held back from this thread
 * while it runs, and one it raised is taken before it is let go, so a peer
 * that went away is an EPIPE here and not the end of the process. */
static ssize_t sendfile_nosignal(int out, int in, off_t *off, size_t len)
{
	sigset_t pipe_only, old;
	sigemptyset(&pipe_only);
	sigaddset(&pipe_only, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
	ssize_t w = sendfile(out, in, off, len);
	int e = errno;
	sigset_t pending;
	/* raised also when part went out before the peer closed (w > 0) */
	if (!sigismember(&old, SIGPIPE) && sigpending(&pending) == 0 &&
	    sigismember(&pending, SIGPIPE)) {
		const struct timespec none = { 0, 0 };
		sigtimedwait(&pipe_only, NULL, &none);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = e;
	return w;
}

int mig_send_file(struct mig_conn *c, int fd, uint64_t off, size_t len, struct terr *err)
{
	if (len > c->tx_tail)
		return terr_set(err, EINVAL, "%zu bytes, more than the %u the frame still owes", len,
				c->tx_tail);
	while (len) {
		off_t o = (off_t)off;
		ssize_t w = sendfile_nosignal(c->fd, fd, &o, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				int r = wait_fd(c, POLLOUT, err);
				if (r)
					return r;
				continue;
			}
			return terr_set(err, errno, "sending to %s: %s", c->peer,
					errno == EPIPE || errno == ECONNRESET ? "the connection was closed" :
					strerror(errno));
		}
		if (w == 0)
			return terr_set(err, EIO, "sending to %s: guest RAM ends at offset %llu", c->peer,
					(unsigned long long)off);
		off += (uint64_t)w;
		len -= (size_t)w;
		c->tx_bytes += (uint64_t)w;
		tail_sent(c, (size_t)w);
	}
	return 0;
}

int mig_send_buf(struct mig_conn *c, unsigned type, const void *p, size_t len, struct terr *err)
{
	struct iovec iov = { (void *)p, len };
	return mig_send(c, type, &iov, 1, err);
}

int mig_frame_begin(struct mig_conn *c, unsigned *type, uint32_t *len, struct terr *err)
{
	uint8_t h[MIG_HDR_SIZE];
	int r = mig_read_all(c, h, sizeof(h), err);
	if (r)
		return r;
	uint32_t magic = get32(h), seq = get32(h + 12), l = get32(h + 8);
	unsigned t = get16(h + 4);
	if (magic != MIG_MAGIC)
		return terr_set(err, EPROTO, "%s does not speak tern's migration protocol (frame %u "
				"starts with 0x%08x)", c->peer, c->rx_seq, magic);
	if (get16(h + 6))
		return terr_set(err, EPROTO, "frame %u from %s has flags 0x%x this tern does not know",
				c->rx_seq, c->peer, get16(h + 6));
	if (seq != c->rx_seq)
		return terr_set(err, EPROTO, "frame %u from %s is numbered %u: frames lost or out of "
				"order", c->rx_seq, c->peer, seq);
	if (!mig_type_max(t))
		return terr_set(err, EPROTO, "frame %u from %s has unknown message type %u", seq,
				c->peer, t);
	if (l > mig_type_max(t))
		return terr_set(err, EPROTO, "%s frame %u from %s is %u bytes long, over the limit of %u",
				mig_type_name(t), seq, c->peer, l, mig_type_max(t));
	XXH3_64bits_reset(c->xxh);
	XXH3_64bits_update(c->xxh, h, 16);
	c->rx_checked = false;
	c->rx_type = t;
	c->rx_len = c->rx_left = l;
	c->rx_sum = get64(h + 16);
	c->rx_seq++;
	*type = t;
	*len = l;
	return 0;
}

int mig_frame_read(struct mig_conn *c, void *dst, size_t n, struct terr *err)
{
	if (n > c->rx_left)
		return terr_set(err, EPROTO, "%s frame %u from %s: its contents run past its %u bytes",
				mig_type_name(c->rx_type), c->rx_seq - 1, c->peer, c->rx_len);
	int r = mig_read_all(c, dst, n, err);
	if (r)
		return r;
	if (!c->rx_checked)
		XXH3_64bits_update(c->xxh, dst, n);
	c->rx_left -= (uint32_t)n;
	return 0;
}

static int sum_mismatch(struct mig_conn *c, struct terr *err)
{
	return terr_set(err, EPROTO, "%s frame %u from %s (%u bytes): checksum mismatch, the "
			"stream is damaged", mig_type_name(c->rx_type), c->rx_seq - 1, c->peer,
			c->rx_len);
}

int mig_frame_check(struct mig_conn *c, struct terr *err)
{
	if (XXH3_64bits_digest(c->xxh) != c->rx_sum)
		return sum_mismatch(c, err);
	c->rx_checked = true;
	return 0;
}

int mig_frame_end(struct mig_conn *c, struct terr *err)
{
	if (c->rx_left)
		return terr_set(err, EPROTO, "%s frame %u from %s: %u of its %u bytes are not accounted "
				"for by its contents", mig_type_name(c->rx_type), c->rx_seq - 1, c->peer,
				c->rx_left, c->rx_len);
	if (!c->rx_checked && XXH3_64bits_digest(c->xxh) != c->rx_sum)
		return sum_mismatch(c, err);
	return 0;
}

int mig_recv(struct mig_conn *c, unsigned *type, uint8_t **buf, uint32_t *len, struct terr *err)
{
	*buf = NULL;
	int r = mig_frame_begin(c, type, len, err);
	if (r)
		return r;
	uint8_t *b = malloc(*len ? *len : 1);
	if (!b)
		return terr_set(err, ENOMEM, "out of memory for a %u-byte message", *len);
	r = mig_frame_read(c, b, *len, err);
	if (!r)
		r = mig_frame_end(c, err);
	if (r) {
		free(b);
		return r;
	}
	*buf = b;
	return 0;
}
