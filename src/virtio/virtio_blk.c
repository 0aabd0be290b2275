#include "virtio/virtio_blk.h"
#include "config/config.h"
#include "core/vm.h"
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

struct virtio_blk;

/* One request taken from a queue, from vq_pop until vq_push. */
struct vblk_req {
	struct virtio_blk *blk;
	uint16_t q;
	struct vq_chain chain;
	struct blk_io io;
	struct iovec *iov;           /* the data part of the chain */
	unsigned iov_cap;
	uint8_t *status;             /* the chain's last device-writable byte */
	uint32_t written;            /* used length when the request succeeds */
	bool dma_in;                 /* a read was submitted: the back end writes the data part */
	uint64_t sector;             /* for messages */
	struct vblk_req *next_free;
};

struct vblk_queue {
	struct vblk_req *reqs;       /* VIRTIO_BLK_QUEUE_SIZE of them */
	struct vblk_req *free;
	unsigned busy;
	bool starved;                /* stopped popping: every request was busy */
};

struct virtio_blk {
	struct device dev;
	struct virtio_dev vdev;
	struct virtio_pci vp;
	struct vm *vm;
	struct blk *be;
	bool vdev_ready, vp_ready, ev_added;
	unsigned nq;
	struct vblk_queue *queues;
	uint64_t capacity;           /* sectors */
	uint32_t seg_max;
	uint32_t discard_align;      /* sectors */
	bool readonly;
	char serial[VIRTIO_BLK_ID_BYTES];
	/* under vdev.lock */
	bool dropping;               /* reset: completions are discarded */
	unsigned pause_depth;
	uint64_t notify_mask;        /* queues with new used entries */
	bool logged_request, logged_io;
};

static struct virtio_blk *to_blk(struct device *d)
{
	return (struct virtio_blk *)d;
}

/* A driver that sends malformed requests is told IOERR; the first one is
 * logged, so a broken driver is visible without flooding the log. */
static void bad_request(struct virtio_blk *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void bad_request(struct virtio_blk *b, const char *fmt, ...)
{
	if (b->logged_request)
		return;
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warn("virtio", "%s: %s (further bad requests on this disk are not logged)", b->dev.id,
		 msg);
	b->logged_request = true;
}

/* --- request slots --- */

static struct vblk_req *req_get(struct virtio_blk *b, unsigned q)
{
	struct vblk_queue *vq = &b->queues[q];
	struct vblk_req *rq = vq->free;
	if (rq) {
		vq->free = rq->next_free;
		vq->busy++;
	}
	return rq;
}

static void req_put(struct vblk_req *rq)
{
	struct vblk_queue *vq = &rq->blk->queues[rq->q];
	rq->next_free = vq->free;
	vq->free = rq;
	vq->busy--;
}

static void flush_notify(struct virtio_blk *b)
{
	uint64_t m = b->notify_mask;
	b->notify_mask = 0;
	for (unsigned q = 0; m; q++, m >>= 1)
		if (m & 1)
			virtio_dev_notify(&b->vdev, q);
}

static void process_queue(struct virtio_blk *b, unsigned q);

/* Status byte first, then the used element (vq_push publishes the index
 * with release, so the driver sees the data and the status before it). */
static void finish(struct vblk_req *rq, uint8_t status)
{
	struct virtio_blk *b = rq->blk;
	unsigned q = rq->q;
	if (rq->status)
		*(volatile uint8_t *)rq->status = status;
	/* for a live migration: the data a read brought in (whatever the
	 * outcome: a failed read may have written part of it) and the status */
	if (rq->dma_in)
		vq_chain_note_in(&rq->chain, 0, rq->chain.in_len);
	else if (rq->status)
		vq_chain_note_in(&rq->chain, rq->chain.in_len - 1, 1);
	vq_push(&b->vdev.vqs[q], rq->chain.head,
		status == VIRTIO_BLK_S_OK ? rq->written : (rq->status ? 1 : 0));
	b->notify_mask |= 1ull << q;
	req_put(rq);
	if (b->queues[q].starved && !b->pause_depth) {
		b->queues[q].starved = false;
		process_queue(b, q);
	}
}

/* The back end's completion callback (vdev.lock held). */
static void io_done(void *opaque, struct blk_io *io)
{
	struct vblk_req *rq = io->opaque;
	struct virtio_blk *b = rq->blk;
	(void)opaque;
	if (b->dropping) {
		if (rq->dma_in)   /* the guest never sees it, but its RAM changed */
			vq_chain_note_in(&rq->chain, 0, rq->chain.in_len);
		req_put(rq);
		return;
	}
	if (io->result < 0 && !b->logged_io) {
		static const char *const names[] = { "read", "write", "flush", "discard",
						     "write-zeroes" };
		log_warn("virtio", "%s: %s at sector %llu failed: %s (the guest sees an I/O error; "
			 "further failures are not logged)", b->dev.id, names[io->op],
			 (unsigned long long)rq->sector, strerror(-io->result));
		b->logged_io = true;
	}
	finish(rq, io->result < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK);
}

/* Copy `len` bytes' worth of the chain's iovecs [first, first + n), after
 * skipping `skip` bytes, into rq->iov. */
static int collect(struct vblk_req *rq, unsigned first, unsigned n, uint64_t skip, uint64_t len)
{
	if (rq->iov_cap < n) {
		unsigned cap = n < 16 ? 16 : n;
		struct iovec *v = realloc(rq->iov, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		rq->iov = v;
		rq->iov_cap = cap;
	}
	int cnt = 0;
	for (unsigned i = first; i < first + n && len; i++) {
		struct iovec v = rq->chain.iov[i];
		if (skip >= v.iov_len) {
			skip -= v.iov_len;
			continue;
		}
		v.iov_base = (uint8_t *)v.iov_base + skip;
		v.iov_len -= skip;
		skip = 0;
		if (v.iov_len > len)
			v.iov_len = len;
		len -= v.iov_len;
		rq->iov[cnt++] = v;
	}
	rq->io.iov = rq->iov;
	rq->io.iovcnt = cnt;
	return 0;
}

static bool range_ok(struct virtio_blk *b, uint64_t sector, uint64_t nsectors)
{
	return sector <= b->capacity && nsectors <= b->capacity - sector;
}

static void submit(struct virtio_blk *b, struct vblk_req *rq, enum blk_op op, uint64_t sector,
		   uint64_t bytes, unsigned flags)
{
	rq->io.op = op;
	rq->io.flags = flags;
	rq->io.off = sector * VIRTIO_BLK_SECTOR;
	rq->io.len = bytes;
	rq->io.opaque = rq;
	rq->sector = sector;
	blk_submit(b->be, &rq->io);
}

/* Read or write: data is everything between the header and the status. */
static void do_rw(struct virtio_blk *b, struct vblk_req *rq, bool write, uint64_t sector)
{
	struct vq_chain *c = &rq->chain;
	uint64_t len;
	if (write) {
		if (b->readonly) {
			finish(rq, VIRTIO_BLK_S_IOERR);
			return;
		}
		if (c->in_len != 1) {
			bad_request(b, "write request (head %u) with %u device-writable bytes, not just "
				    "the status byte", c->head, c->in_len);
			finish(rq, VIRTIO_BLK_S_IOERR);
			return;
		}
		len = c->out_len - 16;
	} else {
		if (c->out_len != 16) {
			bad_request(b, "read request (head %u) with %u device-readable bytes, not just "
				    "the 16-byte header", c->head, c->out_len);
			finish(rq, VIRTIO_BLK_S_IOERR);
			return;
		}
		len = c->in_len - 1;
	}
	if (len % VIRTIO_BLK_SECTOR) {
		bad_request(b, "%s of %llu bytes (head %u), not a multiple of %u", write ? "write" : "read",
			    (unsigned long long)len, c->head, VIRTIO_BLK_SECTOR);
		finish(rq, VIRTIO_BLK_S_IOERR);
		return;
	}
	if (!range_ok(b, sector, len / VIRTIO_BLK_SECTOR)) {
		bad_request(b, "%s of sectors %llu+%llu beyond the capacity of %llu sectors",
			    write ? "write" : "read", (unsigned long long)sector,
			    (unsigned long long)(len / VIRTIO_BLK_SECTOR), (unsigned long long)b->capacity);
		finish(rq, VIRTIO_BLK_S_IOERR);
		return;
	}
	int r = write ? collect(rq, 0, c->nout, 16, len) : collect(rq, c->nout, c->nin, 0, len);
	if (r) {
		finish(rq, VIRTIO_BLK_S_IOERR);
		return;
	}
	rq->written = write ? 1 : (uint32_t)len + 1;
	rq->dma_in = !write;
	submit(b, rq, write ? BLK_WRITE : BLK_READ, sector, len, 0);
}

static void do_discard_zeroes(struct virtio_blk *b, struct vblk_req *rq, bool zeroes)
{
	struct vq_chain *c = &rq->chain;
	const char *what = zeroes ? "write-zeroes" : "discard";
	if (!virtio_dev_has_feature(&b->vdev, zeroes ? VIRTIO_BLK_F_WRITE_ZEROES : VIRTIO_BLK_F_DISCARD)) {
		finish(rq, b->readonly ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_UNSUPP);
		return;
	}
	uint32_t payload = c->out_len - 16;
	if (payload < 16 || c->in_len != 1) {
		bad_request(b, "%s request (head %u) with %u bytes of segments and %u device-writable "
			    "bytes", what, c->head, payload, c->in_len);
		finish(rq, VIRTIO_BLK_S_IOERR);
		return;
	}
	if (payload > 16) {
		/* max_discard_seg and max_write_zeroes_seg are 1 */
		finish(rq, VIRTIO_BLK_S_UNSUPP);
		return;
	}
	uint8_t seg[16];
	uint64_t sector;
	uint32_t n, flags;
	vq_chain_copy_from(c, 16, seg, 16);
	memcpy(&sector, seg, 8);
	memcpy(&n, seg + 8, 4);
	memcpy(&flags, seg + 12, 4);
	sector = le64toh(sector);
	n = le32toh(n);
	flags = le32toh(flags);
	if (flags & ~(zeroes ? VIRTIO_BLK_WZ_UNMAP : 0u)) {
		finish(rq, VIRTIO_BLK_S_UNSUPP);
		return;
	}
	if (n > VIRTIO_BLK_MAX_DISCARD_SECTORS || !range_ok(b, sector, n)) {
		bad_request(b, "%s of sectors %llu+%u beyond the capacity of %llu sectors or the "
			    "limit of %u", what, (unsigned long long)sector, n,
			    (unsigned long long)b->capacity, VIRTIO_BLK_MAX_DISCARD_SECTORS);
		finish(rq, VIRTIO_BLK_S_IOERR);
		return;
	}
	rq->written = 1;
	rq->io.iov = NULL;
	rq->io.iovcnt = 0;
	submit(b, rq, zeroes ? BLK_WRITE_ZEROES : BLK_DISCARD, sector, (uint64_t)n * VIRTIO_BLK_SECTOR,
	       zeroes && (flags & VIRTIO_BLK_WZ_UNMAP) ? BLK_IO_MAY_UNMAP : 0);
}

static void handle(struct virtio_blk *b, struct vblk_req *rq)
{
	struct vq_chain *c = &rq->chain;
	rq->status = NULL;
	rq->dma_in = false;
	rq->written = 1;
	rq->sector = 0;
	if (c->in_len == 0) {
		bad_request(b, "request (head %u) without a device-writable status byte; returned unused",
			    c->head);
		finish(rq, VIRTIO_BLK_S_IOERR);
		return;
	}
	const struct iovec *last = &c->iov[c->nout + c->nin - 1];
	rq->status = (uint8_t *)last->iov_base + last->iov_len - 1;
	if (c->out_len < 16) {
		bad_request(b, "request (head %u) with a header of %u bytes, not 16", c->head, c->out_len);
		finish(rq, VIRTIO_BLK_S_IOERR);
		return;
	}
	uint8_t hdr[16];
	uint32_t type;
	uint64_t sector;
	vq_chain_copy_from(c, 0, hdr, 16);
	memcpy(&type, hdr, 4);
	memcpy(&sector, hdr + 8, 8);
	type = le32toh(type);
	sector = le64toh(sector);

	switch (type) {
	case VIRTIO_BLK_T_IN:
		do_rw(b, rq, false, sector);
		return;
	case VIRTIO_BLK_T_OUT:
		do_rw(b, rq, true, sector);
		return;
	case VIRTIO_BLK_T_FLUSH:
		if (b->readonly) {
			finish(rq, VIRTIO_BLK_S_OK);
			return;
		}
		rq->io.iov = NULL;
		rq->io.iovcnt = 0;
		submit(b, rq, BLK_FLUSH, 0, 0, 0);
		return;
	case VIRTIO_BLK_T_GET_ID: {
		/* the string, NUL-padded, not terminated when it is 20 bytes */
		uint32_t n = c->in_len - 1;
		if (n > VIRTIO_BLK_ID_BYTES)
			n = VIRTIO_BLK_ID_BYTES;
		vq_chain_copy_to(c, 0, b->serial, n);
		rq->written = n + 1;
		finish(rq, VIRTIO_BLK_S_OK);
		return;
	}
	case VIRTIO_BLK_T_DISCARD:
		do_discard_zeroes(b, rq, false);
		return;
	case VIRTIO_BLK_T_WRITE_ZEROES:
		do_discard_zeroes(b, rq, true);
		return;
	default:
		finish(rq, VIRTIO_BLK_S_UNSUPP);
		return;
	}
}

/* Take every available request of queue q (vdev.lock held). */
static void process_queue(struct virtio_blk *b, unsigned q)
{
	struct virtqueue *vq = &b->vdev.vqs[q];
	do {
		vq_notify_disable(vq);
		for (;;) {
			struct vblk_req *rq = req_get(b, q);
			if (!rq) {
				/* a driver that re-posts heads still in flight: go on
				 * when one completes */
				b->queues[q].starved = true;
				vq_notify_enable(vq);
				goto out;
			}
			int r = vq_pop(vq, &rq->chain);
			if (r != 1) {
				req_put(rq);
				if (r < 0) {
					vq_notify_enable(vq);
					goto out;
				}
				break;
			}
			handle(b, rq);
		}
	} while (vq_notify_enable(vq));
out:
	blk_commit(b->be);
}

static void blk_queue_notify(struct virtio_dev *vdev, unsigned q)
{
	struct virtio_blk *b = vdev->priv;
	process_queue(b, q);
	/* refused requests, and reads the kernel served from its cache during
	 * the submission, complete now rather than after a trip through the
	 * event loop */
	blk_reap(b->be);
	flush_notify(b);
}

/* Completions from the back end, on the event loop. */
static void on_completion(void *opaque, uint32_t events)
{
	struct virtio_blk *b = opaque;
	(void)events;
	pthread_mutex_lock(&b->vdev.lock);
	blk_poll(b->be);
	flush_notify(b);
	pthread_mutex_unlock(&b->vdev.lock);
}

static void put_le(uint8_t *p, unsigned off, unsigned size, uint64_t v)
{
	for (unsigned i = 0; i < size; i++)
		p[off + i] = (uint8_t)(v >> (8 * i));
}

static void blk_get_config(struct virtio_dev *vdev, uint32_t off, void *buf, uint32_t len)
{
	struct virtio_blk *b = vdev->priv;
	uint8_t c[VIRTIO_BLK_CFG_SIZE] = { 0 };
	put_le(c, VIRTIO_BLK_CFG_CAPACITY, 8, b->capacity);
	put_le(c, VIRTIO_BLK_CFG_SEG_MAX, 4, b->seg_max);
	put_le(c, VIRTIO_BLK_CFG_BLK_SIZE, 4, VIRTIO_BLK_SECTOR);
	put_le(c, VIRTIO_BLK_CFG_NUM_QUEUES, 2, b->nq);
	if (!b->readonly) {
		put_le(c, VIRTIO_BLK_CFG_MAX_DISCARD_SECT, 4, VIRTIO_BLK_MAX_DISCARD_SECTORS);
		put_le(c, VIRTIO_BLK_CFG_MAX_DISCARD_SEG, 4, 1);
		put_le(c, VIRTIO_BLK_CFG_DISCARD_ALIGN, 4, b->discard_align);
		put_le(c, VIRTIO_BLK_CFG_MAX_WZ_SECT, 4, VIRTIO_BLK_MAX_DISCARD_SECTORS);
		put_le(c, VIRTIO_BLK_CFG_MAX_WZ_SEG, 4, 1);
		put_le(c, VIRTIO_BLK_CFG_WZ_MAY_UNMAP, 1, 1);
	}
	memcpy(buf, c + off, len);
}

/* Wait for every request in flight (vdev.lock held). With `drop`, their
 * results are thrown away (reset: the queues are gone); otherwise they
 * complete normally. */
static void drain(struct virtio_blk *b, bool drop)
{
	b->dropping = drop;
	blk_drain(b->be);
	b->dropping = false;
	if (drop)
		b->notify_mask = 0;
	else
		flush_notify(b);
}

/* Device reset (status 0, system reset, load): the queues were reset by the
 * core already. */
static void blk_vdev_reset(struct virtio_dev *vdev)
{
	struct virtio_blk *b = vdev->priv;
	drain(b, true);
	for (unsigned q = 0; q < b->nq; q++)
		b->queues[q].starved = false;
}

/* Device-specific state: what the guest was told about the disk, so that a
 * restore onto a different disk is refused instead of corrupting it. */
static int blk_vdev_save(struct virtio_dev *vdev, struct state_writer *w)
{
	struct virtio_blk *b = vdev->priv;
	sw_uint(w, "capacity", b->capacity);
	sw_uint(w, "readonly", b->readonly);
	sw_uint(w, "queues", b->nq);
	return w->err;
}

static int blk_vdev_load(struct virtio_dev *vdev, const struct state_reader *r, struct terr *err)
{
	struct virtio_blk *b = vdev->priv;
	uint64_t cap, ro;
	int ret;
	if ((ret = sr_uint(r, "capacity", b->capacity, &cap, err)) ||
	    (ret = sr_uint_max(r, "readonly", b->readonly, 1, &ro, err)))
		return ret;
	if (cap != b->capacity) {
		/* blk.N comes from disk.N.path: name the setting to change */
		const char *dot = strchr(b->dev.id, '.');
		return terr_set(err, EINVAL, "%s: the image of disk.%s.path has %llu bytes, the saved "
				"machine's disk had %llu: a restored or incoming machine needs an image of the same size",
				b->dev.id, dot ? dot + 1 : b->dev.id,
				(unsigned long long)b->capacity * 512, (unsigned long long)cap * 512);
	}
	if ((bool)ro != b->readonly)
		return terr_set(err, EINVAL, "%s: saved %s, now configured %s", b->dev.id,
				ro ? "read-only" : "read-write", b->readonly ? "read-only" : "read-write");
	return 0;
}

static const struct virtio_dev_ops blk_vdev_ops = {
	.get_config = blk_get_config,
	.queue_notify = blk_queue_notify,
	.reset = blk_vdev_reset,
	.save = blk_vdev_save,
	.load = blk_vdev_load,
};

/* --- device ops --- */

/* Stop taking requests and complete the ones in flight. Nests. */
static void quiesce(struct virtio_blk *b)
{
	pthread_mutex_lock(&b->vdev.lock);
	bool first = b->pause_depth++ == 0;
	pthread_mutex_unlock(&b->vdev.lock);
	if (first)
		virtio_pci_pause(&b->vp);
	pthread_mutex_lock(&b->vdev.lock);
	drain(b, false);
	pthread_mutex_unlock(&b->vdev.lock);
}

/* The last resume (or one without a pause: a VM restored paused resumes
 * devices it never paused) lets the queues go and takes whatever arrived. */
static void unquiesce(struct virtio_blk *b)
{
	pthread_mutex_lock(&b->vdev.lock);
	if (b->pause_depth > 0)
		b->pause_depth--;
	bool last = b->pause_depth == 0;
	if (last)
		for (unsigned q = 0; q < b->nq; q++)
			b->queues[q].starved = false;
	pthread_mutex_unlock(&b->vdev.lock);
	if (last)
		virtio_pci_resume(&b->vp);
}

static void blk_reset(struct device *d)
{
	virtio_pci_reset(&to_blk(d)->vp);
}

static int blk_pause(struct device *d)
{
	quiesce(to_blk(d));
	return 0;
}

static void blk_resume(struct device *d)
{
	unquiesce(to_blk(d));
}

/* Requests in flight are completed first, so the saved queues hold none. */
static int blk_save(struct device *d, struct state_writer *w)
{
	struct virtio_blk *b = to_blk(d);
	quiesce(b);
	int r = virtio_pci_save(&b->vp, w);
	unquiesce(b);
	return r;
}

static int blk_load(struct device *d, const struct state_reader *r, struct terr *err)
{
	return virtio_pci_load(&to_blk(d)->vp, r, err);
}

static void blk_destroy(struct device *d)
{
	struct virtio_blk *b = to_blk(d);
	if (b->be && b->vdev_ready) {
		pthread_mutex_lock(&b->vdev.lock);
		drain(b, true);
		pthread_mutex_unlock(&b->vdev.lock);
	}
	if (b->ev_added && b->vm->loop.epfd >= 0)
		evloop_del(&b->vm->loop, blk_event_fd(b->be));
	if (b->vp_ready)
		virtio_pci_destroy(&b->vp);
	if (b->be) {
		int r = blk_close(b->be);
		if (r < 0)
			log_warn("virtio", "%s: closing the image: %s", d->id, strerror(-r));
	}
	if (b->vdev_ready)
		virtio_dev_destroy(&b->vdev);
	for (unsigned q = 0; b->queues && q < b->nq; q++) {
		for (unsigned i = 0; b->queues[q].reqs && i < VIRTIO_BLK_QUEUE_SIZE; i++) {
			vq_chain_free(&b->queues[q].reqs[i].chain);
			free(b->queues[q].reqs[i].iov);
		}
		free(b->queues[q].reqs);
	}
	free(b->queues);
	free(b);
}

static int blk_release_dev(struct device *d, struct terr *err)
{
	struct virtio_blk *b = to_blk(d);
	pthread_mutex_lock(&b->vdev.lock);
	int r = blk_release(b->be, err);
	pthread_mutex_unlock(&b->vdev.lock);
	return r;
}

static int blk_acquire_dev(struct device *d, unsigned timeout_ms, struct terr *err)
{
	struct virtio_blk *b = to_blk(d);
	pthread_mutex_lock(&b->vdev.lock);
	int r = blk_acquire(b->be, timeout_ms, err);
	pthread_mutex_unlock(&b->vdev.lock);
	return r;
}

const struct device_ops virtio_blk_ops = {
	.type = "virtio-blk",
	.state_version = 1,
	.state_min_version = 1,
	.reset = blk_reset,
	.pause = blk_pause,
	.resume = blk_resume,
	.save = blk_save,
	.load = blk_load,
	.destroy = blk_destroy,
	.release = blk_release_dev,
	.acquire = blk_acquire_dev,
};

unsigned virtio_blk_inflight(struct device *d)
{
	struct virtio_blk *b = to_blk(d);
	pthread_mutex_lock(&b->vdev.lock);
	unsigned n = 0;
	for (unsigned q = 0; q < b->nq; q++)
		n += b->queues[q].busy;
	pthread_mutex_unlock(&b->vdev.lock);
	return n;
}

void virtio_blk_hold_completions(struct device *d, bool hold)
{
	struct virtio_blk *b = to_blk(d);
	pthread_mutex_lock(&b->vdev.lock);
	blk_hold(b->be, hold);
	pthread_mutex_unlock(&b->vdev.lock);
}

const char *virtio_blk_engine(struct device *d)
{
	return blk_engine_name(to_blk(d)->be);
}

int virtio_blk_create(struct vm *vm, struct pci_bus *bus, const struct virtio_blk_params *p,
		      struct device **out, struct terr *err)
{
	int r;
	if (!p->queues || p->queues > VIRTIO_MAX_QUEUES)
		return terr_set(err, EINVAL, "%s: %u request queues (1 to %u)", p->id, p->queues,
				VIRTIO_MAX_QUEUES);
	if (p->serial && strlen(p->serial) > VIRTIO_BLK_ID_BYTES)
		return terr_set(err, EINVAL, "%s: serial \"%s\" is longer than %u bytes", p->id,
				p->serial, VIRTIO_BLK_ID_BYTES);
	struct virtio_blk *b = calloc(1, sizeof(*b));
	if (!b)
		return terr_set(err, ENOMEM, "%s: out of memory", p->id);
	b->dev.ops = &virtio_blk_ops;
	snprintf(b->dev.id, sizeof(b->dev.id), "%s", p->id);
	b->dev.priv = b;
	b->vm = vm;
	b->nq = p->queues;
	b->readonly = p->readonly;
	char serial[64];
	snprintf(serial, sizeof(serial), "%s", p->serial ? p->serial : "tern-");
	if (!p->serial)
		snprintf(serial + 5, sizeof(serial) - 5, "%s", p->id);
	memcpy(b->serial, serial, strnlen(serial, VIRTIO_BLK_ID_BYTES));

	b->queues = calloc(b->nq, sizeof(*b->queues));
	if (!b->queues) {
		r = terr_set(err, ENOMEM, "%s: out of memory", p->id);
		goto fail;
	}
	for (unsigned q = 0; q < b->nq; q++) {
		struct vblk_queue *vq = &b->queues[q];
		vq->reqs = calloc(VIRTIO_BLK_QUEUE_SIZE, sizeof(*vq->reqs));
		if (!vq->reqs) {
			r = terr_set(err, ENOMEM, "%s: out of memory", p->id);
			goto fail;
		}
		for (unsigned i = VIRTIO_BLK_QUEUE_SIZE; i-- > 0;) {
			struct vblk_req *rq = &vq->reqs[i];
			rq->blk = b;
			rq->q = (uint16_t)q;
			vq_chain_init(&rq->chain);
			rq->next_free = vq->free;
			vq->free = rq;
		}
	}

	struct blk_opts bo = {
		.id = b->dev.id, .path = p->path, .format = p->format, .readonly = p->readonly,
		.inactive = p->inactive, .engine = p->engine, .depth = VIRTIO_BLK_QUEUE_SIZE, .done = io_done, .opaque = b,
	};
	if ((r = blk_open(&b->be, &bo, err)))
		goto fail;
	b->capacity = blk_size(b->be) / VIRTIO_BLK_SECTOR;
	uint32_t g = blk_discard_granularity(b->be) / VIRTIO_BLK_SECTOR;
	b->discard_align = g ? g : 1;
	b->seg_max = VIRTIO_BLK_QUEUE_SIZE - 2;

	uint64_t features = (1ull << VIRTIO_BLK_F_SEG_MAX) | (1ull << VIRTIO_BLK_F_BLK_SIZE) |
			    (1ull << VIRTIO_BLK_F_FLUSH) | (1ull << VIRTIO_BLK_F_MQ);
	if (b->readonly)
		features |= 1ull << VIRTIO_BLK_F_RO;
	else
		features |= (1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES);
	struct virtio_dev_params vp = {
		.ops = &blk_vdev_ops, .priv = b, .mem = &vm->mem, .id = b->dev.id,
		.device_id = VIRTIO_ID_BLOCK, .features = features, .nqueues = b->nq,
		.queue_size = VIRTIO_BLK_QUEUE_SIZE, .config_size = VIRTIO_BLK_CFG_SIZE,
	};
	if ((r = virtio_dev_init(&b->vdev, &vp, err)))
		goto fail;
	b->vdev_ready = true;
	if ((r = evloop_add(&vm->loop, blk_event_fd(b->be), EPOLLIN, on_completion, b))) {
		terr_set(err, -r, "%s: cannot watch I/O completions: %s", p->id, strerror(-r));
		goto fail;
	}
	b->ev_added = true;
	if ((r = virtio_pci_init(&b->vp, vm, bus, &b->vdev,
				 &(struct virtio_pci_params){ .class_code = 0x010000, .slot = p->slot },
				 err)))
		goto fail;
	b->vp_ready = true;
	log_debug("virtio", "%s: %s (%s, %s, %llu sectors, %u queues, %s)", b->dev.id, p->path,
		  p->format, b->readonly ? "read-only" : "read-write", (unsigned long long)b->capacity,
		  b->nq, blk_engine_name(b->be));
	vm_add_device(vm, &b->dev);
	*out = &b->dev;
	return 0;
fail:
	blk_destroy(&b->dev);
	return r;
}

int virtio_blk_create_from_config(struct vm *vm, struct pci_bus *bus, struct config *cfg,
				  unsigned index, bool inactive, struct device **out,
				  struct terr *err)
{
	char id[32], key[64];
	const char *path, *format, *serial;
	bool ro;
	unsigned engine;
	int r;
	static const enum blk_engine engines[] = { BLK_ENGINE_AUTO, BLK_ENGINE_URING,
						   BLK_ENGINE_THREADS };

	snprintf(id, sizeof(id), "blk.%u", index);
	snprintf(key, sizeof(key), "disk.%u.path", index);
	if ((r = config_get_path(cfg, key, &path, err)))
		return r;
	if (!path)
		return terr_set(err, EINVAL, "%s: no image for disk %u (set disk.%u.path=FILE)", key,
				index, index);
	snprintf(key, sizeof(key), "disk.%u.format", index);
	if ((r = config_get_str(cfg, key, &format, err)))
		return r;
	snprintf(key, sizeof(key), "disk.%u.readonly", index);
	if ((r = config_get_bool(cfg, key, &ro, err)))
		return r;
	snprintf(key, sizeof(key), "disk.%u.engine", index);
	if ((r = config_get_enum(cfg, key, &engine, err)))
		return r;
	snprintf(key, sizeof(key), "disk.%u.serial", index);
	if ((r = config_get_str(cfg, key, &serial, err)))
		return r;
	/* the getters' strings live until the tree changes; the device keeps
	 * copies of what it needs */
	unsigned queues = vm->nvcpus < VIRTIO_MAX_QUEUES ? vm->nvcpus : VIRTIO_MAX_QUEUES;
	struct virtio_blk_params p = {
		.id = id, .path = path, .format = format, .readonly = ro, .serial = serial,
		.queues = queues ? queues : 1,
		.engine = engine < sizeof(engines) / sizeof(engines[0]) ? engines[engine] : BLK_ENGINE_AUTO,
		.slot = -1, .inactive = inactive,
	};
	return virtio_blk_create(vm, bus, &p, out, err);
}
