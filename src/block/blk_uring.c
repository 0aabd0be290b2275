/* The io_uring engine: raw images, one ring per disk, requests straight on
 * the image's file descriptor. Reads and writes go out as readv/writev on the
 * caller's iovecs (guest RAM), flush as fdatasync, discard as a punched
 * hole, write-zeroes as a punched hole (may unmap) or a zeroed range, with a
 * fall-back to writing zeroes where the file system has neither. Short
 * transfers and EAGAIN are resubmitted; a read past the end of the file
 * returns zeroes. The owner's event loop watches the ring's fd, which polls
 * readable while completions wait in the completion queue. */
#include "block/blk_internal.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

static int prep(struct blk *b, struct blk_io *io)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
	if (!sqe)
		return -EBUSY;
	uint64_t at = io->off + io->done;
	int cnt = io->iovcnt > IOV_MAX ? IOV_MAX : io->iovcnt;
	switch (io->op) {
	case BLK_READ:
		io_uring_prep_readv(sqe, b->fd, io->iov, (unsigned)cnt, at);
		break;
	case BLK_WRITE:
		io_uring_prep_writev(sqe, b->fd, io->iov, (unsigned)cnt, at);
		break;
	case BLK_FLUSH:
		io_uring_prep_fsync(sqe, b->fd, IORING_FSYNC_DATASYNC);
		break;
	case BLK_DISCARD:
		io_uring_prep_fallocate(sqe, b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					(off_t)io->off, (off_t)io->len);
		break;
	case BLK_WRITE_ZEROES:
		if (io->step == 0) {
			int mode = (io->flags & BLK_IO_MAY_UNMAP) ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE;
			io_uring_prep_fallocate(sqe, b->fd, mode | FALLOC_FL_KEEP_SIZE, (off_t)io->off,
						(off_t)io->len);
		} else {
			uint64_t n = io->len - io->done;
			io_uring_prep_write(sqe, b->fd, b->zbuf, n > BLK_ZBUF_SIZE ? BLK_ZBUF_SIZE : (unsigned)n,
					    at);
		}
		break;
	}
	io_uring_sqe_set_data(sqe, io);
	b->prepared++;
	return 0;
}

/* Put io (back) on the ring, behind anything already waiting. */
static void queue(struct blk *b, struct blk_io *io)
{
	if (b->backlog.head || prep(b, io))
		blk_list_add(&b->backlog, io);
}

/* An image on a memory file system (tmpfs, ramfs): a read or write is a
 * copy to or from the page cache that cannot wait for a device, yet
 * io_uring hands every such request to a worker thread (shmem has no
 * non-blocking path). Small ones are done right here instead, saving two
 * thread switches per request; they complete through the ready list at the
 * caller's next reap, as an io_uring completion would. */
static bool served_inline(struct blk *b, struct blk_io *io)
{
	if (!b->mem_fs || io->len > BLK_SYNC_MAX || (io->op != BLK_READ && io->op != BLK_WRITE))
		return false;
	while (io->done < io->len) {
		int cnt = io->iovcnt > IOV_MAX ? IOV_MAX : io->iovcnt;
		off_t at = (off_t)(io->off + io->done);
		ssize_t n = io->op == BLK_READ ? preadv(b->fd, io->iov, cnt, at)
					       : pwritev(b->fd, io->iov, cnt, at);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			blk_complete_later(b, io, -errno);
			return true;
		}
		if (n == 0) {
			if (io->op == BLK_WRITE) {
				blk_complete_later(b, io, -EIO);
				return true;
			}
			blk_iov_zero(io);   /* past the end of a file that shrank */
			break;
		}
		io->done += (uint64_t)n;
		blk_iov_advance(io, (uint64_t)n);
	}
	blk_complete_later(b, io, 0);
	return true;
}

static void uring_submit(struct blk *b, struct blk_io *io)
{
	if (!served_inline(b, io))
		queue(b, io);
}

static void uring_commit(struct blk *b)
{
	struct blk_io *io;
	for (;;) {
		while ((io = b->backlog.head) && prep(b, io) == 0)
			blk_list_pop(&b->backlog);
		if (!b->prepared)
			return;
		int r = io_uring_submit(&b->ring);
		if (r < 0) {
			/* -EAGAIN/-EBUSY: the kernel is short of resources or the
			 * completion queue is full; the entries stay prepared and go
			 * at the next commit, after completions were reaped */
			if (r != -EAGAIN && r != -EBUSY && r != -EINTR)
				log_warn("block", "%s: io_uring_submit: %s", b->id, strerror(-r));
			return;
		}
		b->prepared -= (unsigned)r < b->prepared ? (unsigned)r : b->prepared;
		if (!b->backlog.head || r == 0)
			return;
	}
}

/* A transfer moved n > 0 bytes: done, or go on with the rest. */
static void progress(struct blk *b, struct blk_io *io, uint64_t n, bool vectored)
{
	io->done += n;
	if (io->done >= io->len) {
		blk_finish(b, io, 0);
		return;
	}
	if (vectored)
		blk_iov_advance(io, n);
	queue(b, io);
}

static void complete(struct blk *b, struct blk_io *io, int res)
{
	if (res == -EINTR || res == -EAGAIN) {
		queue(b, io);
		return;
	}
	switch (io->op) {
	case BLK_READ:
		if (res < 0)
			blk_finish(b, io, res);
		else if (res == 0) {
			/* past the end of a file that shrank under us */
			blk_iov_zero(io);
			blk_finish(b, io, 0);
		} else
			progress(b, io, (uint64_t)res, true);
		return;
	case BLK_WRITE:
		if (res <= 0)
			blk_finish(b, io, res < 0 ? res : -EIO);
		else
			progress(b, io, (uint64_t)res, true);
		return;
	case BLK_FLUSH:
		blk_finish(b, io, res < 0 ? res : 0);
		return;
	case BLK_DISCARD:
		/* discard is advisory: a file system without holes keeps the data */
		blk_finish(b, io, res == -EOPNOTSUPP ? 0 : (res < 0 ? res : 0));
		return;
	case BLK_WRITE_ZEROES:
		if (io->step == 0) {
			if (res == -EOPNOTSUPP || res == -EINVAL) {
				if (!b->zbuf && !(b->zbuf = calloc(1, BLK_ZBUF_SIZE))) {
					blk_finish(b, io, -ENOMEM);
					return;
				}
				io->step = 1;
				io->done = 0;
				queue(b, io);
				return;
			}
			blk_finish(b, io, res < 0 ? res : 0);
		} else if (res <= 0) {
			blk_finish(b, io, res < 0 ? res : -EIO);
		} else {
			progress(b, io, (uint64_t)res, false);
		}
		return;
	}
}

static unsigned uring_poll(struct blk *b, bool wait, bool ack)
{
	(void)ack;   /* the ring fd is readable exactly while completions wait */
	unsigned n = 0;
	for (;;) {
		struct io_uring_cqe *cqe;
		while (io_uring_peek_cqe(&b->ring, &cqe) == 0) {
			struct blk_io *io = io_uring_cqe_get_data(cqe);
			int res = cqe->res;
			io_uring_cqe_seen(&b->ring, cqe);
			unsigned before = b->inflight;
			complete(b, io, res);
			n += before - b->inflight;
		}
		uring_commit(b);
		if (n || !wait || b->inflight == 0)
			return n;
		int r = io_uring_wait_cqe(&b->ring, &cqe);
		if (r < 0 && r != -EINTR && r != -EAGAIN) {
			log_err("block", "%s: waiting for I/O completions: %s", b->id, strerror(-r));
			return n;
		}
	}
}

static int uring_close(struct blk *b)
{
	int r = 0;
	if (!b->readonly && fdatasync(b->fd) < 0)
		r = -errno;
	io_uring_queue_exit(&b->ring);
	close(b->fd);
	b->fd = -1;
	free(b->zbuf);
	b->zbuf = NULL;
	return r;
}

static int lock_refused(struct blk *b, bool excl, struct terr *err)
{
	int e = errno;
	return terr_set(err, e, "%s: image \"%s\" is in use (another process or disk holds a lock "
			"on it; %s lock refused: %s)", b->id, b->path, excl ? "exclusive" : "shared",
			strerror(e));
}

static int uring_release(struct blk *b, struct terr *err)
{
	if (fdatasync(b->fd) < 0)
		return terr_set(err, errno, "%s: flushing \"%s\": %s", b->id, b->path, strerror(errno));
	if (flock(b->fd, LOCK_UN) < 0)
		return terr_set(err, errno, "%s: unlocking \"%s\": %s", b->id, b->path, strerror(errno));
	return 0;
}

/* Raw: no metadata to read again, the same descriptor serves. */
static int uring_acquire(struct blk *b, struct terr *err)
{
	if (flock(b->fd, LOCK_EX | LOCK_NB) < 0)
		return lock_refused(b, true, err);
	return 0;
}

static const struct blk_engine_ops uring_ops = {
	.name = "io_uring",
	.submit = uring_submit,
	.commit = uring_commit,
	.poll = uring_poll,
	.close = uring_close,
	.release = uring_release,
	.acquire = uring_acquire,
};

int blk_uring_open(struct blk *b, const struct blk_opts *o, struct terr *err)
{
	struct stat st;
	int r;
	int fd = open(o->path, (o->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0)
		return terr_set(err, errno, "%s: cannot open image \"%s\"%s: %s", o->id, o->path,
				o->readonly ? "" : " for writing", strerror(errno));
	if (fstat(fd, &st) < 0) {
		r = terr_set(err, errno, "%s: stat \"%s\": %s", o->id, o->path, strerror(errno));
		goto fail;
	}
	if (S_ISREG(st.st_mode)) {
		b->size = (uint64_t)st.st_size;
		b->granularity = st.st_blksize >= 512 && st.st_blksize <= (1 << 20) ? (uint32_t)st.st_blksize : 4096;
	} else if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &b->size) < 0) {
			r = terr_set(err, errno, "%s: BLKGETSIZE64 on \"%s\": %s", o->id, o->path,
				     strerror(errno));
			goto fail;
		}
		b->granularity = 4096;
	} else {
		r = terr_set(err, EINVAL, "%s: \"%s\" is neither a regular file nor a block device",
			     o->id, o->path);
		goto fail;
	}
	/* the same locks vdisk takes: one writer, or any number of readers
	 * (an inactive writable image takes its lock in blk_acquire) */
	if ((o->readonly || !o->inactive) &&
	    flock(fd, (o->readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
		r = lock_refused(b, !o->readonly, err);
		goto fail;
	}
	unsigned depth = o->depth ? o->depth : 256;
	if (depth > 4096)
		depth = 4096;
	r = io_uring_queue_init(depth, &b->ring, 0);
	if (r < 0) {
		terr_set(err, ENOSYS, "%s: io_uring is not available: %s", o->id, strerror(-r));
		r = -ENOSYS;
		goto fail;
	}
	struct io_uring_probe *probe = io_uring_get_probe_ring(&b->ring);
	bool ok = probe && io_uring_opcode_supported(probe, IORING_OP_READV) &&
		  io_uring_opcode_supported(probe, IORING_OP_WRITEV) &&
		  io_uring_opcode_supported(probe, IORING_OP_WRITE) &&
		  io_uring_opcode_supported(probe, IORING_OP_FSYNC) &&
		  io_uring_opcode_supported(probe, IORING_OP_FALLOCATE);
	if (probe)
		io_uring_free_probe(probe);
	if (!ok) {
		io_uring_queue_exit(&b->ring);
		terr_set(err, ENOSYS, "%s: this kernel's io_uring lacks readv, writev, fsync or "
			 "fallocate", o->id);
		r = -ENOSYS;
		goto fail;
	}
	struct statfs sfs;
	b->mem_fs = S_ISREG(st.st_mode) && fstatfs(fd, &sfs) == 0 &&
		    (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC);
	b->fd = fd;
	b->ring_ok = true;
	b->ops = &uring_ops;
	return 0;
fail:
	close(fd);
	return r;
}
