#include "block/blk_internal.h"
#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

void blk_signal(struct blk *b)
{
	uint64_t one = 1;
	if (b->efd >= 0 && write(b->efd, &one, sizeof(one)) < 0) {
		/* the counter is saturated: it is readable anyway */
	}
}

void blk_ack(struct blk *b)
{
	uint64_t v;
	if (b->efd >= 0 && read(b->efd, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing was signalled */
	}
}

void blk_finish(struct blk *b, struct blk_io *io, int result)
{
	io->result = result;
	b->inflight--;
	b->done(b->opaque, io);
}

void blk_complete_later(struct blk *b, struct blk_io *io, int result)
{
	io->result = result;
	blk_list_add(&b->ready, io);
}

unsigned blk_run_ready(struct blk *b)
{
	unsigned n = 0;
	struct blk_io *io;
	while ((io = blk_list_pop(&b->ready))) {
		blk_finish(b, io, io->result);
		n++;
	}
	return n;
}

void blk_iov_advance(struct blk_io *io, uint64_t n)
{
	while (n && io->iovcnt) {
		if (n < io->iov[0].iov_len) {
			io->iov[0].iov_base = (uint8_t *)io->iov[0].iov_base + n;
			io->iov[0].iov_len -= n;
			return;
		}
		n -= io->iov[0].iov_len;
		io->iov++;
		io->iovcnt--;
	}
	/* drop empty entries so the next submission starts on data */
	while (io->iovcnt && io->iov[0].iov_len == 0) {
		io->iov++;
		io->iovcnt--;
	}
}

void blk_iov_zero(struct blk_io *io)
{
	for (int i = 0; i < io->iovcnt; i++)
		memset(io->iov[i].iov_base, 0, io->iov[i].iov_len);
}

int blk_open(struct blk **out, const struct blk_opts *o, struct terr *err)
{
	struct blk *b = calloc(1, sizeof(*b));
	int r;
	if (!b)
		return terr_set(err, ENOMEM, "%s: out of memory", o->id);
	snprintf(b->id, sizeof(b->id), "%s", o->id);
	b->path = strdup(o->path);
	b->format = strdup(o->format);
	b->readonly = o->readonly;
	b->inactive = o->inactive && !o->readonly;
	b->reopen = b->inactive;
	b->done = o->done;
	b->opaque = o->opaque;
	b->fd = -1;
	b->efd = -1;
	if (!b->path || !b->format) {
		r = terr_set(err, ENOMEM, "%s: out of memory", o->id);
		goto fail;
	}
	bool raw = !strcmp(o->format, "raw");
	enum blk_engine e = o->engine;
	if (e == BLK_ENGINE_URING && !raw) {
		r = terr_set(err, EINVAL, "%s: the io_uring engine serves raw images only, not %s",
			     o->id, o->format);
		goto fail;
	}
	if (e == BLK_ENGINE_AUTO)
		e = raw ? BLK_ENGINE_URING : BLK_ENGINE_THREADS;
	if (e == BLK_ENGINE_URING) {
		struct terr uerr = { 0 };
		r = blk_uring_open(b, o, &uerr);
		if (r == -ENOSYS && o->engine == BLK_ENGINE_AUTO) {
			/* no io_uring here (old kernel, seccomp, sysctl): vdisk on threads */
			log_info("block", "%s: %s; using worker threads instead", o->id, uerr.msg);
			e = BLK_ENGINE_THREADS;
		} else if (r) {
			terr_set(err, -r, "%s", uerr.msg);
			goto fail;
		}
	}
	if (e == BLK_ENGINE_THREADS && (r = blk_threads_open(b, o, err)))
		goto fail;
	*out = b;
	return 0;
fail:
	if (b->efd >= 0)
		close(b->efd);
	free(b->path);
	free(b->format);
	free(b);
	return r;
}

int blk_close(struct blk *b)
{
	if (!b)
		return 0;
	blk_drain(b);
	int r = b->ops->close(b);
	if (b->efd >= 0)
		close(b->efd);
	free(b->path);
	free(b->format);
	free(b);
	return r;
}

uint64_t blk_size(const struct blk *b)
{
	return b->size;
}

bool blk_readonly(const struct blk *b)
{
	return b->readonly;
}

uint32_t blk_discard_granularity(const struct blk *b)
{
	return b->granularity;
}

const char *blk_engine_name(const struct blk *b)
{
	return b->ops->name;
}

int blk_event_fd(const struct blk *b)
{
	return b->ring_ok ? b->ring.ring_fd : b->efd;
}

void blk_submit(struct blk *b, struct blk_io *io)
{
	io->result = 0;
	io->done = 0;
	io->step = 0;
	io->next = NULL;
	b->inflight++;
	if (b->inactive) {
		/* the image belongs to another process now (or still) */
		blk_complete_later(b, io, -EIO);
		return;
	}
	if (b->readonly && (io->op == BLK_WRITE || io->op == BLK_DISCARD ||
			    io->op == BLK_WRITE_ZEROES)) {
		blk_complete_later(b, io, -EROFS);
		return;
	}
	if (io->off > b->size || io->len > b->size - io->off) {
		blk_complete_later(b, io, -EINVAL);
		return;
	}
	if ((io->op == BLK_READ || io->op == BLK_WRITE || io->op == BLK_DISCARD ||
	     io->op == BLK_WRITE_ZEROES) && io->len == 0) {
		blk_complete_later(b, io, 0);
		return;
	}
	b->ops->submit(b, io);
}

void blk_commit(struct blk *b)
{
	b->ops->commit(b);
}

/* Callbacks may submit more (a queue that waited for a free slot): go on
 * until nothing is ready. */
static unsigned poll_common(struct blk *b, bool ack)
{
	unsigned n = 0;
	if (b->hold)
		return 0;
	do {
		n += blk_run_ready(b);
		n += b->ops->poll(b, false, ack);
		ack = false;
	} while (b->ready.head);
	return n;
}

unsigned blk_poll(struct blk *b)
{
	return poll_common(b, true);
}

unsigned blk_reap(struct blk *b)
{
	return poll_common(b, false);
}

void blk_drain(struct blk *b)
{
	blk_commit(b);
	while (b->inflight) {
		if (blk_run_ready(b))
			continue;
		b->ops->poll(b, true, false);
	}
}

int blk_release(struct blk *b, struct terr *err)
{
	if (b->readonly || b->inactive)
		return 0;
	blk_drain(b);
	int r = b->ops->release(b, err);
	if (!r)
		b->inactive = true;
	return r;
}

int blk_acquire(struct blk *b, unsigned timeout_ms, struct terr *err)
{
	if (b->readonly || !b->inactive)
		return 0;
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct terr e = { 0 };
		int r = b->ops->acquire(b, &e);
		if (!r) {
			b->inactive = false;
			b->reopen = false;
			return 0;
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
		double ms = (double)(t.tv_sec - t0.tv_sec) * 1e3 + (double)(t.tv_nsec - t0.tv_nsec) / 1e6;
		if (r != -EWOULDBLOCK || ms >= timeout_ms) {
			terr_set(err, -r, "%s", e.msg);
			return r;
		}
		/* the other process is letting go (closing, exiting) */
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	}
}

bool blk_active(const struct blk *b)
{
	return !b->inactive;
}

void blk_hold(struct blk *b, bool hold)
{
	b->hold = hold;
}

unsigned blk_inflight(const struct blk *b)
{
	return b->inflight;
}
