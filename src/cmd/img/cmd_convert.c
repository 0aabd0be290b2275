/* SPDX-License-Identifier: MIT */
/* convert: block-status-driven copy with zero skipping, several threads,
 * optional compressed output. Chunks are read in parallel and written in
 * the guest's order (unless -W), so a qcow2 target's clusters follow the
 * guest's, as with qemu-img; the target is flushed once, at close. */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"

static const char usage[] =
	"usage: tern-img convert [-f fmt] [-O fmt] [-o options] [-c] [-p] [-S size] [-m threads]\n"
	"                        [-n] [-W] [-B backing] src dst\n"
	"  -c       compress the output (qcow2; a vmdk streamOptimized target always is)\n"
	"  -S size  minimum run of zeroes left unallocated (default 4k; 0 = fully allocate)\n"
	"  -m n     threads (default 4)\n"
	"  -n       do not create the target (it must exist)\n"
	"  -W       write chunks as they are read (default: in the guest's order)\n";

#define CHUNK (2u << 20)

struct job {
	struct vdisk *src, *dst;
	uint64_t size, sparse, nchunks;
	bool compress, target_zero, progress, unordered;
	uint32_t csize;
	atomic_uint_fast64_t next, done;
	atomic_int err;
	pthread_mutex_t plock;       /* progress; with turn: the write order */
	pthread_cond_t turn;         /* wnext advanced */
	uint64_t wnext;              /* the chunk that writes next (in order) */
	char errmsg[600];
};

static void fail(struct job *j, struct vdisk *d, int r)
{
	int z = 0;
	if (atomic_compare_exchange_strong(&j->err, &z, r)) {
		char m[VDISK_ERRMSG_MAX];
		snprintf(j->errmsg, sizeof(j->errmsg), "%s", vdisk_errmsg(d, m, sizeof(m)));
	}
}

static int write_piece(struct job *j, uint8_t *buf, uint64_t off, uint64_t len)
{
	if (j->compress) {
		for (uint64_t p = 0; p < len; p += j->csize) {
			uint64_t n = len - p < j->csize ? len - p : j->csize;
			if (vd_zero(buf + p, n) && j->target_zero)
				continue;
			int r = vdisk_pwrite_compressed(j->dst, buf + p, n, off + p);
			if (r < 0)
				return r;
		}
		return 0;
	}
	if (!j->sparse)
		return vdisk_pwrite(j->dst, buf, len, off);
	/* skip zero runs of at least `sparse` bytes (aligned units) */
	uint64_t p = 0;
	while (p < len) {
		uint64_t u = j->sparse - (off + p) % j->sparse;
		if (u > len - p)
			u = len - p;
		bool z = vd_zero(buf + p, u);
		uint64_t q = p + u;
		while (q < len) {
			uint64_t u2 = len - q < j->sparse ? len - q : j->sparse;
			if (vd_zero(buf + q, u2) != z)
				break;
			q += u2;
		}
		int r = 0;
		if (!z)
			r = vdisk_pwrite(j->dst, buf + p, q - p, off + p);
		else if (!j->target_zero)
			r = vdisk_write_zeroes(j->dst, off + p, q - p, VDISK_ZERO_MAY_UNMAP);
		if (r < 0)
			return r;
		p = q;
	}
	return 0;
}

struct piece {
	uint64_t off, len;
	bool zero;                   /* reads zero: nothing read, maybe write zeroes */
};

/* A worker's last block-status answer. The source does not change during
 * a convert, so one answer serves every chunk it covers: ask for up to
 * BS_SPAN at once (a raw file answers from one SEEK_DATA/SEEK_HOLE pair
 * however long the extent is; asking per 2 MiB chunk cost two extent-tree
 * walks per chunk, ~15% of convert's CPU). */
#define BS_SPAN (1ull << 30)
struct bscache {
	struct vdisk_extent e;
	bool valid;
};

static int status(struct job *j, struct bscache *bc, uint64_t off, uint64_t end,
                  struct vdisk_extent *out)
{
	if (!bc->valid || off < bc->e.offset || off >= bc->e.offset + bc->e.length) {
		uint64_t len = j->size - off < BS_SPAN ? j->size - off : BS_SPAN;
		int r = vdisk_block_status(j->src, off, len, &bc->e);
		if (r < 0)
			return r;
		bc->valid = true;
	}
	uint64_t eend = bc->e.offset + bc->e.length;
	*out = bc->e;
	out->offset = off;
	out->length = (eend < end ? eend : end) - off;
	if (out->flags & VDISK_BS_OFFSET)
		out->host_offset = bc->e.host_offset + (off - bc->e.offset);
	return 0;
}

/* Wait until chunk c may write (in-order mode), or mark it written. */
static void chunk_turn(struct job *j, uint64_t c, bool done)
{
	if (j->unordered)
		return;
	pthread_mutex_lock(&j->plock);
	if (done) {
		j->wnext = c + 1;
		pthread_cond_broadcast(&j->turn);
	} else {
		while (j->wnext != c && !j->unordered)
			pthread_cond_wait(&j->turn, &j->plock);
	}
	pthread_mutex_unlock(&j->plock);
}

/* Read chunk [off, end) into buf as pieces; returns their number or -1. */
static int read_chunk(struct job *j, struct bscache *bc, uint8_t *buf, struct piece *pc,
                      uint64_t off, uint64_t end)
{
	uint64_t base = off;
	int n = 0;
	if (j->compress) {
		/* whole clusters only: the chunk is read as one piece
		 * (write_piece skips its zero clusters) unless all zero */
		struct vdisk_extent e;
		int r = status(j, bc, off, end, &e);
		if (r < 0) {
			fail(j, j->src, r);
			return -1;
		}
		bool z = (e.flags & VDISK_BS_ZERO) && !(e.flags & VDISK_BS_DATA) &&
		         e.length == end - off && j->target_zero;
		if (!z && (r = vdisk_pread(j->src, buf, end - off, off)) < 0) {
			fail(j, j->src, r);
			return -1;
		}
		pc[0] = (struct piece){ off, end - off, z };
		return 1;
	}
	while (off < end) {
		struct vdisk_extent e;
		int r = status(j, bc, off, end, &e);
		if (r < 0) {
			fail(j, j->src, r);
			return -1;
		}
		bool z = (e.flags & VDISK_BS_ZERO) && !(e.flags & VDISK_BS_DATA) && j->sparse;
		if (!z && (r = vdisk_pread(j->src, buf + (off - base), e.length, off)) < 0) {
			fail(j, j->src, r);
			return -1;
		}
		if (n && pc[n - 1].zero == z && pc[n - 1].off + pc[n - 1].len == off)
			pc[n - 1].len += e.length;
		else
			pc[n++] = (struct piece){ off, e.length, z };
		off += e.length;
	}
	return n;
}

static int write_chunk(struct job *j, uint8_t *buf, const struct piece *pc, int n, uint64_t base)
{
	for (int i = 0; i < n; i++) {
		int r = 0;
		if (!pc[i].zero)
			r = write_piece(j, buf + (pc[i].off - base), pc[i].off, pc[i].len);
		else if (!j->target_zero && !j->compress)
			r = vdisk_write_zeroes(j->dst, pc[i].off, pc[i].len, VDISK_ZERO_MAY_UNMAP);
		if (r < 0) {
			fail(j, j->dst, r);
			return -1;
		}
	}
	return 0;
}

static void *worker(void *arg)
{
	struct job *j = arg;
	uint8_t *buf = malloc(CHUNK);
	/* extents are at least 512 bytes long, and adjacent alike ones merge */
	struct piece *pc = calloc(CHUNK / 512 + 1, sizeof(*pc));
	if (!buf || !pc) {
		atomic_store(&j->err, -12);
		/* let the chunks behind this thread's go on to fail */
		j->unordered = true;
		pthread_mutex_lock(&j->plock);
		pthread_cond_broadcast(&j->turn);
		pthread_mutex_unlock(&j->plock);
		free(buf);
		free(pc);
		return NULL;
	}
	struct bscache bc = { .valid = false };
	for (;;) {
		uint64_t c = atomic_fetch_add(&j->next, 1);
		if (c >= j->nchunks)
			break;
		uint64_t off = c * CHUNK, end = off + CHUNK < j->size ? off + CHUNK : j->size;
		int n = atomic_load(&j->err) ? -1 : read_chunk(j, &bc, buf, pc, off, end);
		chunk_turn(j, c, false);
		if (n > 0 && !atomic_load(&j->err))
			write_chunk(j, buf, pc, n, off);
		chunk_turn(j, c, true);
		uint64_t d = atomic_fetch_add(&j->done, 1) + 1;
		if (j->progress) {
			pthread_mutex_lock(&j->plock);
			img_progress(100.0 * (double)d / (double)j->nchunks);
			pthread_mutex_unlock(&j->plock);
		}
	}
	free(buf);
	free(pc);
	return NULL;
}

int img_convert(int argc, char **argv)
{
	if (img_wants_help(argc, argv, usage))
		return 0;
	struct vdisk_create_opts co = { .format = "raw" };
	const char *sfmt = NULL;
	bool compress = false, progress = false, nocreate = false, unordered = false;
	uint64_t sparse = 4096;
	int threads = 4, c;
	optind = 1;
	while ((c = getopt(argc, argv, "f:O:o:cpS:m:nWB:qU")) != -1) {
		switch (c) {
		case 'f': sfmt = optarg; break;
		case 'O': co.format = optarg; break;
		case 'o': if (img_parse_create_opts(optarg, &co) < 0) return 1; break;
		case 'c': compress = true; break;
		case 'p': progress = true; break;
		case 'S':
			if (img_parse_size(optarg, &sparse) < 0) {
				img_error("invalid -S value '%s'", optarg);
				return 1;
			}
			break;
		case 'm': threads = atoi(optarg); break;
		case 'n': nocreate = true; break;
		case 'B': co.backing_file = optarg; break;
		case 'W': unordered = true; break;
		case 'q': case 'U': break;
		default: fputs(usage, stderr); return 1;
		}
	}
	if (argc - optind != 2) {
		img_error("convert expects one source and one destination");
		return 1;
	}
	if (threads < 1 || threads > 64)
		threads = 4;
	struct vdisk *src = img_open(argv[optind], sfmt, 0);
	if (!src)
		return 1;
	const char *dpath = argv[optind + 1];
	if (!nocreate) {
		co.size = vdisk_size(src);
		struct vdisk_error err;
		if (vdisk_create(dpath, &co, &err) < 0) {
			img_error("%s: %s", dpath, err.msg);
			vdisk_close(src);
			return 1;
		}
	}
	struct vdisk *dst = img_open(dpath, nocreate ? NULL : co.format,
	                             VDISK_OPEN_RDWR | VDISK_OPEN_NO_BACKING);
	if (!dst) {
		vdisk_close(src);
		return 1;
	}
	struct job j = {
		.src = src, .dst = dst, .size = vdisk_size(src), .sparse = sparse,
		.compress = compress, .target_zero = !nocreate && !co.backing_file &&
		                                     co.prealloc == 0,
		.progress = progress, .csize = vdisk_cluster_size(dst),
	};
	struct vdisk_info dinfo;
	if (!compress && vdisk_info(dst, &dinfo) == 0 && dinfo.write_compressed)
		j.compress = compress = true; /* vmdk streamOptimized: whole deflated grains */
	if (compress && !j.csize) {
		img_error("compression needs a qcow2 target");
		vdisk_close(src);
		vdisk_close(dst);
		return 1;
	}
	if (j.size > vdisk_size(dst)) {
		img_error("target is smaller than the source");
		vdisk_close(src);
		vdisk_close(dst);
		return 1;
	}
	j.nchunks = (j.size + CHUNK - 1) / CHUNK;
	pthread_mutex_init(&j.plock, NULL);
	pthread_cond_init(&j.turn, NULL);
	j.unordered = unordered;
	if (progress)
		img_progress(0);
	pthread_t t[64];
	for (int i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, worker, &j);
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	if (progress)
		printf("\n");
	int rc = 0;
	if (atomic_load(&j.err)) {
		img_error("error while converting: %s", j.errmsg);
		rc = 1;
	}
	vdisk_close(src);
	if (vdisk_close(dst) < 0 && !rc) {
		img_error("error while closing '%s'", dpath);
		rc = 1;
	}
	return rc;
}
