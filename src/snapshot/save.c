#include "snapshot/snapshot.h"
#include "arch/x86/cpu_state.h"
#include "core/vcpu.h"
#include "snapshot/snapfile.h"
#include "snapshot/sections.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Guest RAM goes out in chunks, taken in turn by the saving thread and a
 * helper (the vCPUs are paused, so two cores copy into the page cache in
 * parallel); one fsync at the end makes it durable. (Starting write-back of
 * each finished chunk early with sync_file_range from a third thread was
 * measured slower on the development host: bench/RESULTS.md.) */
#define RAM_CHUNK    (32u << 20)
#define RAM_MAX_RUN  (8u << 20)
#define RAM_THREADS  2

struct ram_writer {
	struct machine *m;
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

/* The non-zero pages of [start, end) of RAM. For our own memfd, extents
 * never touched are skipped without reading them. */
static int write_chunk(struct ram_writer *w, uint64_t start, uint64_t end, struct terr *err)
{
	const struct guest_mem *mem = &w->m->vm.mem;
	const uint64_t page = SNAP_PAGE_SIZE;
	uint64_t pos = start;
	int r;

	while (pos < end) {
		uint64_t ext_end = end;
		if (mem->memfd) {
			off_t d = lseek(mem->fd, (off_t)pos, SEEK_DATA);
			if (d < 0 && errno == ENXIO)
				break;
			if (d >= 0) {
				if ((uint64_t)d >= end)
					break;
				pos = (uint64_t)d & ~(page - 1);
				off_t h = lseek(mem->fd, d, SEEK_HOLE);
				if (h > 0 && (uint64_t)h < end)
					ext_end = ((uint64_t)h + page - 1) & ~(page - 1);
			}
		}
		uint64_t run = 0, run_start = pos;
		for (; pos < ext_end; pos += page) {
			bool zero = page_is_zero(mem->base + pos);
			if (zero || run == RAM_MAX_RUN) {
				if (run && (r = write_run(w->fd, mem->base + run_start, run,
							  w->ram_offset + run_start, err)))
					return r;
				w->data += run;
				run = 0;
				if (zero)
					continue;
			}
			if (!run)
				run_start = pos;
			run += page;
		}
		if (run && (r = write_run(w->fd, mem->base + run_start, run, w->ram_offset + run_start, err)))
			return r;
		w->data += run;
		pos = ext_end;
	}
	return 0;
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
		if (write_chunk(w, start, end, &err))
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
static int write_ram(struct machine *m, int fd, uint64_t ram_offset, snapshot_progress_fn progress,
		     void *opaque, uint64_t *data_bytes, struct terr *err)
{
	struct ram_writer w = { .m = m, .fd = fd, .ram_offset = ram_offset, .size = m->vm.mem.size };
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
	r = write_ram(m, fd, s.ram_offset, progress, opaque, &data, err);
	if (r)
		goto out;
	double t_ram = now_ms();
	/* zero pages at the end are holes too, but the file has its full size */
	if (ftruncate(fd, (off_t)(s.ram_offset + s.ram_length)) < 0 || fsync(fd) < 0) {
		r = terr_set(err, errno, "snapshot: finishing %s: %s", tmp, strerror(errno));
		goto out;
	}
	close(fd);
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = terr_set(err, errno, "snapshot: renaming %s to %s: %s", tmp, path, strerror(errno));
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
	log_debug("snapshot", "%s: state %.1f ms, RAM %.1f ms, fsync and rename %.1f ms", path,
		  t_state - t_paused, t_ram - t_state, now_ms() - t_ram);
	if (stats) {
		stats->ram_bytes = m->vm.mem.size;
		stats->data_bytes = data;
		stats->file_bytes = s.ram_offset + s.ram_length;
		stats->state_bytes = s.ram_offset;
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
