/* Block back ends: asynchronous disk I/O for the virtual disk devices, between
 * a device model (virtio-blk) and the image file. Two engines:
 *
 *   io_uring  raw images: readv/writev/fsync/fallocate straight on the image's
 *             file descriptor through one io_uring per disk. Zero copy: the
 *             iovecs point into guest RAM.
 *   threads   every other format (qcow2, ...) through lib/vdisk on a small
 *             pool of worker threads; vdisk is synchronous and thread-safe
 *             (range locks), so disjoint requests run in parallel and vdisk
 *             stays the only code that knows the format's metadata. Also the
 *             fallback for raw when io_uring is not available.
 *
 * Either way the owner watches one file descriptor (blk_event_fd) on the VM's
 * event loop and answers it with blk_poll: the ring's own fd for io_uring
 * (readable while completions wait: no eventfd to signal and read), an
 * eventfd for the threads engine.
 *
 * Threads and locking: the back end is not thread-safe. Its owner serializes
 * every call (virtio-blk holds its device lock), and the completion callback
 * runs inside blk_poll / blk_drain / blk_close on the calling thread. The
 * worker threads of the threads engine never call back into the owner.
 *
 * Nothing here knows about virtio or the VM. */
#ifndef TERN_BLOCK_BLK_H
#define TERN_BLOCK_BLK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "util/error.h"

struct blk;

enum blk_op {
	BLK_READ,
	BLK_WRITE,
	BLK_FLUSH,          /* everything completed before it reaches stable storage */
	BLK_DISCARD,        /* contents become unspecified (raw: zeroes, a hole) */
	BLK_WRITE_ZEROES,   /* reads return zeroes; BLK_IO_MAY_UNMAP: may deallocate */
};

enum { BLK_IO_MAY_UNMAP = 1u << 0 };

/* One request, owned by the caller from blk_submit until its completion
 * callback. off/len in bytes; for READ/WRITE len is the sum of the iovecs,
 * and the back end may rewrite iov[] (it advances through it on a short
 * transfer), so the caller hands over an array it does not need back. */
struct blk_io {
	enum blk_op op;
	unsigned flags;
	uint64_t off, len;
	struct iovec *iov;
	int iovcnt;
	int result;          /* 0 or a negative errno, set before the callback */
	void *opaque;        /* the caller's */

	/* back-end private */
	struct blk_io *next;
	uint64_t done;       /* bytes transferred so far */
	int step;            /* write-zeroes fall-back progress */
};

typedef void (*blk_done_fn)(void *opaque, struct blk_io *io);

enum blk_engine { BLK_ENGINE_AUTO, BLK_ENGINE_URING, BLK_ENGINE_THREADS };

struct blk_opts {
	const char *id;          /* "blk.0", for messages */
	const char *path;
	const char *format;      /* "raw", "qcow2", ... (vdisk's names) */
	bool readonly;
	/* A writable image opened inactive (a migration's destination): without
	 * its lock and without writing anything to it, while another process
	 * still owns it; no I/O until blk_acquire. Read-only images ignore it
	 * (their shared lock sits beside the owner's). */
	bool inactive;
	enum blk_engine engine;  /* AUTO: io_uring for raw, threads otherwise */
	unsigned threads;        /* worker threads of the threads engine; 0: 4 */
	unsigned depth;          /* expected requests in flight (ring size); 0: 256 */
	blk_done_fn done;        /* completion callback */
	void *opaque;
};

/* Open the image and start the engine. Errors name the id and the file. */
int blk_open(struct blk **out, const struct blk_opts *o, struct terr *err);
/* Complete everything in flight (callbacks run), flush a writable image,
 * close it. Returns the flush result. */
int blk_close(struct blk *b);

uint64_t blk_size(const struct blk *b);          /* bytes */
bool blk_readonly(const struct blk *b);
/* Smallest useful discard unit in bytes (qcow2: cluster size; raw: 4096). */
uint32_t blk_discard_granularity(const struct blk *b);
const char *blk_engine_name(const struct blk *b);   /* "io_uring" or "threads" */
/* Readable when completions wait for blk_poll. */
int blk_event_fd(const struct blk *b);

/* Queue a request. Never fails synchronously: errors arrive as a completion
 * with io->result < 0. Requests may be held until blk_commit. */
void blk_submit(struct blk *b, struct blk_io *io);
/* Start every request queued by blk_submit (one system call per batch).
 * Requests that complete without I/O (refused, empty) and reads the kernel
 * served inline are only noticed by a following blk_reap or blk_poll: call
 * one before leaving the critical section. */
void blk_commit(struct blk *b);
/* Run the callbacks of the requests that completed; returns how many.
 * blk_poll answers blk_event_fd being readable; blk_reap is the same
 * without consuming the event (right after blk_commit: it saves a trip
 * through the event loop when the kernel completed requests inline). */
unsigned blk_poll(struct blk *b);
unsigned blk_reap(struct blk *b);
/* Wait until nothing is in flight, running callbacks as requests complete. */
void blk_drain(struct blk *b);
/* The image lock across a migration (docs/migration-protocol.md). Both are
 * no-ops on a read-only image, and need nothing in flight.
 * blk_release: flush a writable image and give its lock up; the image stays
 * open, and requests fail with EIO until blk_acquire.
 * blk_acquire: take the exclusive lock, waiting up to timeout_ms while
 * another process holds it; an image opened inactive is opened again, so
 * that the format's metadata the previous owner changed is read afresh.
 * On failure the image stays inactive (err names the disk and the file). */
int blk_release(struct blk *b, struct terr *err);
int blk_acquire(struct blk *b, unsigned timeout_ms, struct terr *err);
/* Holds its lock (or is read-only): requests are served. */
bool blk_active(const struct blk *b);

/* Tests: while held, blk_poll and blk_reap complete nothing, so requests
 * stay in flight however fast the kernel is; blk_drain and blk_close still
 * complete everything. (With an event loop thread running, the event fd
 * stays readable meanwhile: hold only briefly.) */
void blk_hold(struct blk *b, bool hold);
unsigned blk_inflight(const struct blk *b);

#endif
