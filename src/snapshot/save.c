#include "snapshot/snapshot.h"
#include "arch/x86/cpu_state.h"
#include "core/vcpu.h"
#include "snapshot/snapfile.h"
#include "snapshot/sections.h"
#include "util/log.h"

#include <liburing.h>
#include <linux/magic.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int add_config(struct snapshot *s, struct config *cfg, struct terr *err)
{
	/* defaults are written in, so a later tern with other defaults
	 * rebuilds the same machine */
	struct config *full = config_clone(cfg);
	if (!full)
		return terr_set(err, ENOMEM, "snapshot: out of memory");
	int r = config_fill_defaults(full, err);
	if (r) {
		config_free(full);
		return r;
	}
	json_t *j = config_to_json(full);
	char *text = j ? json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
	json_decref(j);
	config_free(full);
	if (!text)
		return terr_set(err, ENOMEM, "snapshot: out of memory");
	struct state_writer w;
	sw_init(&w);
	sw_str(&w, "json", text);
	free(text);
	r = snap_add_section(s, SECTION_CONFIG, SECTION_CONFIG, SECTION_CONFIG_VERSION, 1, &w, err);
	sw_free(&w);
	return r;
}

static int add_machine_state(struct snapshot *s, struct machine *m, struct terr *err)
{
	if (!m->vm.mem.base)
		return terr_set(err, EINVAL, "snapshot: the machine has no RAM");
	struct state_writer w;
	int r;

	sw_init(&w);
	r = x86_vm_state_save(m->vm.fd, &w, err);
	if (!r)
		r = snap_add_section(s, SECTION_VM, SECTION_VM, VM_STATE_VERSION, 1, &w, err);
	sw_free(&w);
	for (unsigned i = 0; !r && i < m->vm.nvcpus; i++) {
		char id[SNAP_ID_MAX + 1];
		snprintf(id, sizeof(id), "vcpu.%u", i);
		sw_init(&w);
		r = x86_vcpu_state_save(m->vm.vcpus[i].fd, i, m->msr_list, m->nmsrs, &w, err);
		if (!r)
			r = snap_add_section(s, id, SECTION_VCPU, VCPU_STATE_VERSION, 1, &w, err);
		sw_free(&w);
	}
	for (struct device *d = m->vm.devices; !r && d; d = d->next) {
		sw_init(&w);
		r = d->ops->save(d, &w);
		if (r)
			r = terr_set(err, -r, "%s: saving its state failed: %s", d->id, strerror(-r));
		else
			r = snap_add_section(s, d->id, d->ops->type, d->ops->state_version,
					     d->ops->state_min_version, &w, err);
		sw_free(&w);
	}
	if (r)
		return r;
	/* the RAM layout; the bytes follow at the header's ram_offset */
	sw_init(&w);
	sw_uint(&w, "size", m->vm.mem.size);
	sw_uint(&w, "page_size", SNAP_PAGE_SIZE);
	sw_uint(&w, "regions", m->vm.mem.nregions);
	for (unsigned i = 0; i < m->vm.mem.nregions; i++) {
		char n[32];
		snprintf(n, sizeof(n), "region%u.gpa", i);
		sw_uint(&w, n, m->vm.mem.regions[i].gpa);
		snprintf(n, sizeof(n), "region%u.size", i);
		sw_uint(&w, n, m->vm.mem.regions[i].size);
		snprintf(n, sizeof(n), "region%u.offset", i);
		sw_uint(&w, n, m->vm.mem.regions[i].offset);
	}
	r = snap_add_section(s, SECTION_RAM, SECTION_RAM, SECTION_RAM_VERSION, 1, &w, err);
	sw_free(&w);
	return r;
}

int snapshot_build_sections(struct machine *m, struct snapshot *s, struct terr *err)
{
	int r = add_config(s, m->cfg, err);
	return r ? r : add_machine_state(s, m, err);
}

static bool vm_exiting(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	bool e = vm->exit_req;
	pthread_mutex_unlock(&vm->lock);
	return e;
}

static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *q = (const uint64_t *)p;
	uint64_t acc = 0;
	for (unsigned i = 0; i < SNAP_PAGE_SIZE / 8; i += 8) {
		acc |= q[i] | q[i + 1] | q[i + 2] | q[i + 3] | q[i + 4] | q[i + 5] | q[i + 6] | q[i + 7];
		if (acc)
			return false;
	}
	return true;
}

static int write_run(int fd, const uint8_t *p, uint64_t len, uint64_t off, struct terr *err)
{
	while (len) {
		ssize_t w = pwrite(fd, p, len, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return terr_set(err, w < 0 ? errno : EIO, "snapshot: writing guest RAM: %s",
					strerror(w < 0 ? errno : ENOSPC));
		p += w;
		off += (uint64_t)w;
		len -= (uint64_t)w;
	}
	return 0;
}

/* Guest RAM is written two ways. The direct path (the default) writes it
 * with O_DIRECT straight from guest memory through io_uring, several large
 * aligned writes in flight: no copy into the page cache, and by the time the
 * last write completes the data is on the disk, so the fsync that follows has
 * only metadata left to do (a 1 GiB guest on the development host's ext4:
 * RAM 0.6-1.1 s and fsync ~1 ms, against 0.4-1.2 s and 0.4-0.8 s buffered;
 * bench/RESULTS.md. In a stand-alone test 1 GiB took 0.54-0.86 s with 8
 * writes of 2-4 MiB in flight, 0.75-0.93 s from 4 threads doing O_DIRECT
 * pwrite.) The buffered path copies RAM into the page cache from two threads
 * and leaves it all to the final fsync (the vCPUs are paused, so two cores
 * copy in parallel; starting the write-back of each finished chunk early with
 * sync_file_range from a third thread was measured slower). It serves where
 * O_DIRECT is refused (EINVAL: a file system without it, or one that needs
 * more than page alignment), on tmpfs (where O_DIRECT is a copy into memory
 * too), where io_uring is unavailable, and when TERN_SNAPSHOT_DIRECT=off (for
 * tests and comparison). Both write only the non-zero pages, so zero pages
 * stay holes either way. */
#define RAM_CHUNK    (32u << 20)
#define RAM_MAX_RUN  (8u << 20)
#define RAM_THREADS  2
#define DIO_MAX_RUN  (2u << 20)   /* one write of the direct path */
#define DIO_DEPTH    8            /* direct writes in flight */

/* Where RAM may hold data: for our own memfd its data extents (extents never
 * touched are holes in it, and are skipped without reading them: reading
 * would allocate them), otherwise all of it. Found once per save: a
 * SEEK_HOLE walks the memfd's pages up to the hole, so asking again for each
 * chunk would walk the same pages over and over. */
struct ram_extents {
	struct ram_extent {
		uint64_t start, end;
	} *e;
	size_t n;
};

static int ram_extents_add(struct ram_extents *x, uint64_t start, uint64_t end, struct terr *err)
{
	if ((x->n & (x->n - 1)) == 0) {   /* 0, 1, 2, 4, ...: grow */
		void *p = realloc(x->e, (x->n ? 2 * x->n : 1) * sizeof(*x->e));
		if (!p)
			return terr_set(err, ENOMEM, "snapshot: out of memory");
		x->e = p;
	}
	x->e[x->n++] = (struct ram_extent){ start, end };
	return 0;
}

static int ram_extents_find(const struct guest_mem *mem, struct ram_extents *x, struct terr *err)
{
	const uint64_t page = SNAP_PAGE_SIZE, size = mem->size;
	uint64_t pos = 0;

	while (mem->memfd && pos < size) {
		off_t d = lseek(mem->fd, (off_t)pos, SEEK_DATA);
		if (d < 0 && errno == ENXIO)
			return 0;
		if (d < 0)
			break;   /* cannot tell: read the rest */
		off_t h = lseek(mem->fd, d, SEEK_HOLE);
		uint64_t start = (uint64_t)d & ~(page - 1);
		uint64_t end = h < 0 || (uint64_t)h > size ? size : ((uint64_t)h + page - 1) & ~(page - 1);
		if (start >= size)
			return 0;
		if (end <= start)
			break;
		int r = ram_extents_add(x, start, end, err);
		if (r)
			return r;
		pos = end;
	}
	return pos < size ? ram_extents_add(x, pos, size, err) : 0;
}

/* Calls fn for each run of non-zero pages of RAM in [start, end) and in
 * one of the extents, runs at most max_run bytes. */
typedef int (*ram_run_fn)(void *ctx, uint64_t pos, uint64_t len, struct terr *err);

static int for_each_run(const uint8_t *base, const struct ram_extents *x, uint64_t start,
			uint64_t end, uint64_t max_run, ram_run_fn fn, void *ctx, struct terr *err)
{
	const uint64_t page = SNAP_PAGE_SIZE;
	size_t lo = 0, hi = x->n;
	int r;

	/* the first extent ending after start */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (x->e[mid].end <= start)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; i < x->n && x->e[i].start < end; i++) {
		uint64_t pos = x->e[i].start > start ? x->e[i].start : start;
		uint64_t ext_end = x->e[i].end < end ? x->e[i].end : end;
		uint64_t run = 0, run_start = pos;
		for (; pos < ext_end; pos += page) {
			bool zero = page_is_zero(base + pos);
			if (zero || run == max_run) {
				if (run && (r = fn(ctx, run_start, run, err)))
					return r;
				run = 0;
				if (zero)
					continue;
			}
			if (!run)
				run_start = pos;
			run += page;
		}
		if (run && (r = fn(ctx, run_start, run, err)))
			return r;
	}
	return 0;
}

/* ---- the buffered path ---- */

struct ram_writer {
	struct machine *m;
	const struct ram_extents *x;
	int fd;
	uint64_t ram_offset, size;
	_Atomic uint64_t next;        /* start of the next chunk to take */
	_Atomic uint64_t done;        /* RAM bytes finished */
	_Atomic uint64_t data;        /* bytes written */
	_Atomic bool failed;
	pthread_mutex_t lock;
	struct terr err;              /* the first error */
};

static int ram_fail(struct ram_writer *w, const struct terr *e)
{
	pthread_mutex_lock(&w->lock);
	if (!w->err.code)
		w->err = *e;
	pthread_mutex_unlock(&w->lock);
	w->failed = true;
	return e->code;
}

static int buffered_run(void *ctx, uint64_t pos, uint64_t len, struct terr *err)
{
	struct ram_writer *w = ctx;
	int r = write_run(w->fd, w->m->vm.mem.base + pos, len, w->ram_offset + pos, err);
	if (!r)
		w->data += len;
	return r;
}

/* Takes chunks until none is left; the saving thread (progress != NULL)
 * also reports progress and watches for the VM ending. */
static int ram_work(struct ram_writer *w, snapshot_progress_fn progress, void *opaque)
{
	struct terr err = { 0 };
	while (!w->failed) {
		uint64_t start = atomic_fetch_add(&w->next, RAM_CHUNK);
		if (start >= w->size)
			break;
		uint64_t end = w->size - start < RAM_CHUNK ? w->size : start + RAM_CHUNK;
		if (for_each_run(w->m->vm.mem.base, w->x, start, end, RAM_MAX_RUN, buffered_run, w, &err))
			return ram_fail(w, &err);
		uint64_t done = atomic_fetch_add(&w->done, end - start) + (end - start);
		if (progress) {
			progress(opaque, done < w->size ? done : w->size - 1, w->size);
			/* tern is ending under us (quit, signal): give up, the
			 * temporary file goes */
			if (vm_exiting(&w->m->vm)) {
				terr_set(&err, ESHUTDOWN, "snapshot: the VM is shutting down");
				return ram_fail(w, &err);
			}
		}
	}
	return 0;
}

static void *ram_helper(void *arg)
{
	ram_work(arg, NULL, NULL);
	return NULL;
}

/* Writes the non-zero pages of guest RAM at ram_offset of fd. */
static int write_ram_buffered(struct machine *m, const struct ram_extents *x, int fd,
			      uint64_t ram_offset, snapshot_progress_fn progress, void *opaque, uint64_t *data_bytes,
			      struct terr *err)
{
	struct ram_writer w = { .m = m, .x = x, .fd = fd, .ram_offset = ram_offset, .size = m->vm.mem.size };
	pthread_t helpers[RAM_THREADS - 1];
	unsigned nhelpers = 0;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	pthread_mutex_init(&w.lock, NULL);
	for (unsigned i = 0; i < RAM_THREADS - 1 && (long)i + 1 < cpus && w.size > RAM_CHUNK; i++)
		if (pthread_create(&helpers[nhelpers], NULL, ram_helper, &w) == 0)
			nhelpers++;
	ram_work(&w, progress, opaque);
	for (unsigned i = 0; i < nhelpers; i++)
		pthread_join(helpers[i], NULL);
	pthread_mutex_destroy(&w.lock);
	*data_bytes = w.data;
	if (w.failed)
		return terr_set(err, -w.err.code, "%s", w.err.msg);
	if (progress)
		progress(opaque, w.size, w.size);
	return 0;
}

/* ---- the direct path ---- */

struct dio_req {
	uint64_t pos, len, done;      /* a run of RAM; bytes of it written so far */
};

struct dio_writer {
	struct io_uring ring;
	int fd;                       /* the temporary file, opened O_DIRECT */
	const uint8_t *base;
	uint64_t ram_offset;
	struct dio_req reqs[DIO_DEPTH];
	unsigned free[DIO_DEPTH], nfree;
	uint64_t data;                /* bytes written */
	bool refused;                 /* a write got EINVAL: take the buffered path */
	bool broken;                  /* io_uring itself failed */
};

static void dio_submit(struct dio_writer *d, unsigned i)
{
	struct dio_req *q = &d->reqs[i];
	struct io_uring_sqe *sqe = io_uring_get_sqe(&d->ring);   /* never NULL: DIO_DEPTH entries */
	io_uring_prep_write(sqe, d->fd, d->base + q->pos + q->done, (unsigned)(q->len - q->done),
			    d->ram_offset + q->pos + q->done);
	io_uring_sqe_set_data64(sqe, i);
}

/* Waits for one completion; a short write or EAGAIN goes out again. A
 * failed write frees its slot; io_uring failing itself marks the writer
 * broken (nothing more can be waited for). */
static int dio_reap(struct dio_writer *d, struct terr *err)
{
	struct io_uring_cqe *cqe;
	int r;

	do
		r = io_uring_submit_and_wait(&d->ring, 1);
	while (r == -EINTR);
	if (r >= 0)
		r = io_uring_peek_cqe(&d->ring, &cqe);
	if (r < 0) {
		d->broken = true;
		return terr_set(err, -r, "snapshot: io_uring: %s", strerror(-r));
	}
	unsigned i = (unsigned)io_uring_cqe_get_data64(cqe);
	int res = cqe->res;
	io_uring_cqe_seen(&d->ring, cqe);
	struct dio_req *q = &d->reqs[i];
	if (res == -EAGAIN || res == -EINTR) {
		dio_submit(d, i);
		return 0;
	}
	if (res > 0) {
		q->done += (uint64_t)res;
		d->data += (uint64_t)res;
		if (q->done < q->len) {
			dio_submit(d, i);
			return 0;
		}
	}
	d->free[d->nfree++] = i;
	if (res == -EINVAL) {
		/* the file system wants other alignment than it told */
		d->refused = true;
		return 0;
	}
	if (res <= 0)
		return terr_set(err, res < 0 ? -res : ENOSPC, "snapshot: writing guest RAM: %s",
				strerror(res < 0 ? -res : ENOSPC));
	return 0;
}

static int dio_run(void *ctx, uint64_t pos, uint64_t len, struct terr *err)
{
	struct dio_writer *d = ctx;
	int r;

	if (d->refused)
		return 0;
	while (!d->nfree)
		if ((r = dio_reap(d, err)))
			return r;
	unsigned i = d->free[--d->nfree];
	d->reqs[i] = (struct dio_req){ .pos = pos, .len = len };
	dio_submit(d, i);
	io_uring_submit(&d->ring);
	return 0;
}

/* Whether O_DIRECT is worth taking on this file: tmpfs accepts it but copies
 * into memory all the same (through one io_uring worker at a time: slower
 * than the two copying threads of the buffered path); and whether the file
 * system takes it at page alignment (from guest memory, at page-aligned
 * offsets of the file). When it does not say, assume it does (a refusal then
 * shows as EINVAL on the first write). */
static bool dio_worthwhile(int fd, const char *tmp)
{
	struct statfs sf;
	if (fstatfs(fd, &sf) == 0 && sf.f_type == TMPFS_MAGIC) {
		log_debug("snapshot", "%s: on tmpfs, writing through the page cache", tmp);
		return false;
	}
#ifdef STATX_DIOALIGN
	struct statx stx;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 && (stx.stx_mask & STATX_DIOALIGN)) {
		if (!stx.stx_dio_offset_align || stx.stx_dio_offset_align > SNAP_PAGE_SIZE ||
		    stx.stx_dio_mem_align > SNAP_PAGE_SIZE) {
			log_debug("snapshot", "%s: no O_DIRECT at page alignment (offset %u, memory %u)",
				  tmp, stx.stx_dio_offset_align, stx.stx_dio_mem_align);
			return false;
		}
	}
#endif
	return true;
}

/* Writes the non-zero pages of guest RAM at ram_offset of the temporary file
 * `tmp` (already sized to hold them: writes that extend a file are
 * synchronous in ext4) with O_DIRECT. Returns 1 when the direct path cannot
 * be taken (nothing failed: the caller takes the buffered one), 0 when RAM
 * is written, or a negative errno. */
static int write_ram_direct(struct machine *m, const struct ram_extents *x, const char *tmp,
			    uint64_t ram_offset,
			    snapshot_progress_fn progress, void *opaque, uint64_t *data_bytes,
			    struct terr *err)
{
	const char *env = getenv("TERN_SNAPSHOT_DIRECT");
	if (env && (!strcmp(env, "off") || !strcmp(env, "0")))
		return 1;
	struct dio_writer d = { .base = m->vm.mem.base, .ram_offset = ram_offset };
	const uint64_t size = m->vm.mem.size;
	int r;

	if ((uintptr_t)d.base % SNAP_PAGE_SIZE || ram_offset % SNAP_PAGE_SIZE)
		return 1;
	d.fd = open(tmp, O_WRONLY | O_DIRECT | O_CLOEXEC);
	if (d.fd < 0) {
		log_debug("snapshot", "%s: O_DIRECT refused (%s), writing through the page cache", tmp,
			  strerror(errno));
		return 1;
	}
	if (!dio_worthwhile(d.fd, tmp)) {
		close(d.fd);
		return 1;
	}
	r = io_uring_queue_init(DIO_DEPTH, &d.ring, 0);
	if (r < 0) {
		log_debug("snapshot", "io_uring unavailable (%s), writing through the page cache",
			  strerror(-r));
		close(d.fd);
		return 1;
	}
	for (unsigned i = 0; i < DIO_DEPTH; i++)
		d.free[d.nfree++] = DIO_DEPTH - 1 - i;
	r = 0;
	for (uint64_t start = 0; !r && !d.refused && start < size; start += RAM_CHUNK) {
		uint64_t end = size - start < RAM_CHUNK ? size : start + RAM_CHUNK;
		r = for_each_run(m->vm.mem.base, x, start, end, DIO_MAX_RUN, dio_run, &d, err);
		if (!r && progress) {
			/* the writes of this chunk may still be in flight: the
			 * whole is reported once they all completed */
			progress(opaque, end < size ? end : size - 1, size);
			/* tern is ending under us (quit, signal): give up, the
			 * temporary file goes */
			if (vm_exiting(&m->vm))
				r = terr_set(err, ESHUTDOWN, "snapshot: the VM is shutting down");
		}
	}
	/* wait for every write in flight, also after an error: they read
	 * guest memory (err keeps the first error) */
	while (d.nfree < DIO_DEPTH && !d.broken) {
		int r2 = dio_reap(&d, err);
		if (!r)
			r = r2;
	}
	io_uring_queue_exit(&d.ring);
	close(d.fd);
	if (r)
		return r;
	if (d.refused) {
		log_debug("snapshot", "%s: O_DIRECT write refused, writing through the page cache", tmp);
		return 1;
	}
	*data_bytes = d.data;
	if (progress)
		progress(opaque, size, size);
	return 0;
}

/* A file replaced by the rename has its blocks freed when the last
 * reference to it goes, in the rename itself unless something holds it open
 * (half a second for 1 GiB on ext4 on the development host). The save holds
 * it with an O_PATH descriptor across the rename, and lets it go on a thread
 * of its own once the new file is durable. */
static void *close_thread(void *arg)
{
	close((int)(intptr_t)arg);
	return NULL;
}

static void close_later(int fd)
{
	pthread_attr_t a;
	pthread_t t;
	bool started = false;

	if (fd < 0)
		return;
	if (pthread_attr_init(&a) == 0) {
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		started = pthread_create(&t, &a, close_thread, (void *)(intptr_t)fd) == 0;
		pthread_attr_destroy(&a);
	}
	if (!started)
		close(fd);
}

int snapshot_save(struct machine *m, const char *path, snapshot_progress_fn progress,
		  void *opaque, struct snapshot_stats *stats, struct terr *err)
{
	struct snapshot s;
	char tmp[4096];
	int fd = -1, r;
	double t0 = now_ms(), t_paused;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp-%d", path, (int)getpid()) >= (int)sizeof(tmp))
		return terr_set(err, ENAMETOOLONG, "snapshot: path too long: %s", path);
	snap_init_writer(&s);
	vm_pause(&m->vm);
	t_paused = now_ms();
	if (vm_exiting(&m->vm)) {
		/* its vCPUs stopped wherever the exit found them */
		r = terr_set(err, ESHUTDOWN, "snapshot: the VM is shutting down");
		goto out;
	}
	r = snapshot_build_sections(m, &s, err);
	if (r)
		goto out;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = terr_set(err, errno, "snapshot: cannot create %s: %s", tmp, strerror(errno));
		goto out;
	}
	r = snap_write_state(&s, fd, m->vm.mem.size, err);
	if (r)
		goto out;
	uint64_t data = 0;
	double t_state = now_ms();
	/* the full size first: zero pages at the end are holes too, and the
	 * direct path's writes then never extend the file */
	if (ftruncate(fd, (off_t)(s.ram_offset + s.ram_length)) < 0) {
		r = terr_set(err, errno, "snapshot: sizing %s: %s", tmp, strerror(errno));
		goto out;
	}
	struct ram_extents x = { 0 };
	r = ram_extents_find(&m->vm.mem, &x, err);
	if (!r)
		r = write_ram_direct(m, &x, tmp, s.ram_offset, progress, opaque, &data, err);
	bool direct = r == 0;
	if (r > 0)
		r = write_ram_buffered(m, &x, fd, s.ram_offset, progress, opaque, &data, err);
	free(x.e);
	if (r)
		goto out;
	double t_ram = now_ms();
	if (fsync(fd) < 0) {
		r = terr_set(err, errno, "snapshot: finishing %s: %s", tmp, strerror(errno));
		goto out;
	}
	double t_fsync = now_ms();
	close(fd);
	fd = -1;
	int old = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (rename(tmp, path) < 0) {
		r = terr_set(err, errno, "snapshot: renaming %s to %s: %s", tmp, path, strerror(errno));
		if (old >= 0)
			close(old);
		goto out;
	}
	/* make the rename itself durable */
	char dirbuf[4096];
	snprintf(dirbuf, sizeof(dirbuf), "%s", path);
	int dfd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	close_later(old);
	log_debug("snapshot", "%s: state %.1f ms, RAM %.1f ms (%s), fsync %.1f ms, rename %.1f ms",
		  path, t_state - t_paused, t_ram - t_state, direct ? "O_DIRECT" : "page cache",
		  t_fsync - t_ram, now_ms() - t_fsync);
	if (stats) {
		stats->ram_bytes = m->vm.mem.size;
		stats->data_bytes = data;
		stats->file_bytes = s.ram_offset + s.ram_length;
		stats->state_bytes = s.ram_offset;
		stats->direct = direct;
	}
out:
	if (fd >= 0) {
		close(fd);
		unlink(tmp);
	} else if (r) {
		unlink(tmp);
	}
	vm_resume(&m->vm);
	if (stats) {
		double t1 = now_ms();
		stats->paused_ms = t1 - t_paused;
		stats->total_ms = t1 - t0;
	}
	snap_close(&s);
	return r;
}
