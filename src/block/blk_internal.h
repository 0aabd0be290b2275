/* Shared by the block engines (blk.c, blk_uring.c, blk_threads.c). */
#ifndef TERN_BLOCK_BLK_INTERNAL_H
#define TERN_BLOCK_BLK_INTERNAL_H

#include <liburing.h>
#include <pthread.h>

#include "block/blk.h"

struct vdisk;

struct blk_engine_ops {
	const char *name;
	void (*submit)(struct blk *b, struct blk_io *io);
	void (*commit)(struct blk *b);
	/* Complete what is done; with `wait`, block until at least one request
	 * completes when something is in flight; with `ack`, consume the
	 * completion event first. Returns how many completed. */
	unsigned (*poll)(struct blk *b, bool wait, bool ack);
	/* Stop the engine (nothing is in flight), flush a writable image and
	 * close it; returns the flush result. */
	int (*close)(struct blk *b);
	/* Flush and unlock a writable image (it stays open); lock it again
	 * (-EWOULDBLOCK while another process holds it), reopening an image
	 * opened inactive. err is set on failure. */
	int (*release)(struct blk *b, struct terr *err);
	int (*acquire)(struct blk *b, struct terr *err);
};

struct blk_list {
	struct blk_io *head, *tail;
};

static inline void blk_list_add(struct blk_list *l, struct blk_io *io)
{
	io->next = NULL;
	if (l->tail)
		l->tail->next = io;
	else
		l->head = io;
	l->tail = io;
}

static inline struct blk_io *blk_list_pop(struct blk_list *l)
{
	struct blk_io *io = l->head;
	if (io) {
		l->head = io->next;
		if (!l->head)
			l->tail = NULL;
		io->next = NULL;
	}
	return io;
}

struct blk {
	const struct blk_engine_ops *ops;
	char id[32];
	char *path;
	bool readonly;
	bool inactive;               /* no lock held: requests fail with EIO */
	bool reopen;                 /* opened inactive: acquire opens it again */
	char *format;
	uint64_t size;
	uint32_t granularity;
	blk_done_fn done;
	void *opaque;
	unsigned inflight;           /* submitted, callback not yet run */
	bool hold;                   /* tests: poll/reap complete nothing */
	int efd;                     /* threads engine: completion eventfd */
	struct blk_list ready;       /* completed without reaching the engine */

	/* io_uring engine */
	int fd;
	bool ring_ok;
	bool mem_fs;                 /* the image is on tmpfs/ramfs: small I/O inline */
	bool inline_logged;          /* an inline request's failure was logged */
	struct io_uring ring;
	struct blk_list backlog;     /* waiting for a free submission entry */
	unsigned prepared;           /* SQEs prepared, not yet submitted */
	void *zbuf;                  /* zeroes, for the write-zeroes fall-back */

	/* threads engine */
	struct vdisk *vd;
	pthread_mutex_t mu;
	pthread_cond_t work_cond, done_cond;
	struct blk_list work, finished;
	pthread_t *threads;
	unsigned nthreads;
	bool stop;
};

#define BLK_ZBUF_SIZE (1u << 20)
/* Largest read or write served inline on a memory file system. */
#define BLK_SYNC_MAX (128u << 10)

/* Finish io with `result` through the ready list (the callback runs at the
 * next reap or poll, never inside submit). */
void blk_complete_later(struct blk *b, struct blk_io *io, int result);
/* Run the callbacks of the ready list; returns how many. */
unsigned blk_run_ready(struct blk *b);
void blk_signal(struct blk *b);
void blk_ack(struct blk *b);
/* Call the owner's callback for a finished request. */
void blk_finish(struct blk *b, struct blk_io *io, int result);
/* Skip n bytes at the front of io's iovecs (in place). */
void blk_iov_advance(struct blk_io *io, uint64_t n);
/* Zero what remains of a read after end of file. */
void blk_iov_zero(struct blk_io *io);

int blk_uring_open(struct blk *b, const struct blk_opts *o, struct terr *err);
int blk_threads_open(struct blk *b, const struct blk_opts *o, struct terr *err);

#endif
