#include "snapshot/snapshot.h"
#include "arch/x86/cpu_state.h"
#include "core/vcpu.h"
#include "snapshot/snapfile.h"
#include "snapshot/sections.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <pthread.h>
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

/* Writes the non-zero pages of guest RAM at ram_offset of fd. For our own
 * memfd, never-touched extents are skipped without reading them. */
static int write_ram(struct machine *m, int fd, uint64_t ram_offset, snapshot_progress_fn progress,
		     void *opaque, uint64_t *data_bytes, struct terr *err)
{
	const struct guest_mem *mem = &m->vm.mem;
	const uint64_t size = mem->size, max_run = 8u << 20;
	uint64_t pos = 0, last_report = 0;
	int r;

	*data_bytes = 0;
	while (pos < size) {
		uint64_t ext_end = size;
		if (mem->memfd) {
			off_t d = lseek(mem->fd, (off_t)pos, SEEK_DATA);
			if (d < 0 && errno == ENXIO)
				break;
			if (d >= 0) {
				pos = (uint64_t)d & ~(uint64_t)(SNAP_PAGE_SIZE - 1);
				off_t h = lseek(mem->fd, d, SEEK_HOLE);
				if (h > 0 && (uint64_t)h < size)
					ext_end = ((uint64_t)h + SNAP_PAGE_SIZE - 1) & ~(uint64_t)(SNAP_PAGE_SIZE - 1);
			}
		}
		uint64_t run = 0, run_start = pos;
		for (; pos < ext_end; pos += SNAP_PAGE_SIZE) {
			if (page_is_zero(mem->base + pos) || run == max_run) {
				if (run && (r = write_run(fd, mem->base + run_start, run, ram_offset + run_start, err)))
					return r;
				*data_bytes += run;
				run = 0;
				if (page_is_zero(mem->base + pos))
					continue;
			}
			if (!run)
				run_start = pos;
			run += SNAP_PAGE_SIZE;
		}
		if (run && (r = write_run(fd, mem->base + run_start, run, ram_offset + run_start, err)))
			return r;
		*data_bytes += run;
		if (pos - last_report >= (64u << 20)) {
			if (progress)
				progress(opaque, pos, size);
			last_report = pos;
			/* tern is ending under us (quit, signal): give up, the
			 * temporary file goes */
			if (vm_exiting(&m->vm))
				return terr_set(err, ESHUTDOWN, "snapshot: the VM is shutting down");
		}
	}
	if (progress)
		progress(opaque, size, size);
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
	r = write_ram(m, fd, s.ram_offset, progress, opaque, &data, err);
	if (r)
		goto out;
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
