#include "core/memory.h"
#include "arch/x86/layout.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <unistd.h>

void guest_mem_layout(struct guest_mem *m, uint64_t size)
{
	uint64_t low = size < LAYOUT_LOWMEM_MAX ? size : LAYOUT_LOWMEM_MAX;

	m->size = size;
	m->nregions = 0;
	m->regions[m->nregions++] = (struct guest_region){ .gpa = 0, .size = low, .offset = 0 };
	if (size > low)
		m->regions[m->nregions++] = (struct guest_region){
			.gpa = LAYOUT_HIGHMEM_START, .size = size - low, .offset = low };
	for (unsigned i = 0; i < m->nregions; i++)
		m->regions[i].hva = m->base ? m->base + m->regions[i].offset : NULL;
}

int guest_mem_create(struct guest_mem *m, uint64_t size, struct terr *err)
{
	int r;

	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if (size < MIB(2) || size % 4096)
		return terr_set(err, EINVAL, "memory.size: %llu bytes is not a usable RAM size "
				"(at least 2M, a multiple of 4K)", (unsigned long long)size);
	/* RAM is committed lazily, so an impossible size would only fail when
	 * the guest touches it; refuse it up front instead. */
	struct sysinfo si;
	if (sysinfo(&si) == 0) {
		uint64_t host = ((uint64_t)si.totalram + si.totalswap) * si.mem_unit;
		if (size > host)
			return terr_set(err, ENOMEM, "memory.size: %llu MiB is more than this host has "
					"(%llu MiB of RAM and swap)", (unsigned long long)(size >> 20),
					(unsigned long long)(host >> 20));
	}
	m->fd = memfd_create("tern-ram", MFD_CLOEXEC);
	if (m->fd < 0)
		return terr_set(err, errno, "memfd_create for guest RAM: %s", strerror(errno));
	if (ftruncate(m->fd, (off_t)size) < 0) {
		r = terr_set(err, errno, "memory.size: cannot size guest RAM to %llu MiB: %s",
			     (unsigned long long)(size >> 20), strerror(errno));
		goto fail;
	}
	/* MAP_NORESERVE: RAM is committed page by page as the guest touches it. */
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m->fd, 0);
	if (p == MAP_FAILED) {
		r = terr_set(err, errno, "memory.size: cannot map %llu MiB of guest RAM: %s",
			     (unsigned long long)(size >> 20), strerror(errno));
		goto fail;
	}
	m->base = p;
	m->memfd = true;
	/* where the host allows huge pages for shared memory (shmem_enabled =
	 * advise), ask for them: one fault then maps 2 MiB instead of 4 KiB */
	madvise(m->base, size, MADV_HUGEPAGE);
	guest_mem_layout(m, size);
	return 0;
fail:
	close(m->fd);
	m->fd = -1;
	return r;
}

void guest_mem_destroy(struct guest_mem *m)
{
	free(m->host_dirty);
	m->host_dirty = NULL;
	m->host_dirty_on = false;
	if (m->base)
		munmap(m->base, m->size);
	if (m->fd >= 0)
		close(m->fd);
	m->base = NULL;
	m->fd = -1;
	m->nregions = 0;
}

void *guest_mem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < m->nregions; i++) {
		const struct guest_region *g = &m->regions[i];
		/* written so that no sum can overflow */
		if (gpa >= g->gpa && gpa - g->gpa <= g->size && len <= g->size - (gpa - g->gpa))
			return g->hva ? g->hva + (gpa - g->gpa) : NULL;
	}
	return NULL;
}

int guest_mem_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len)
{
	void *p = guest_mem_ptr(m, gpa, len);
	if (!p)
		return -EFAULT;
	memcpy(p, src, len);
	return 0;
}

int guest_mem_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len)
{
	void *p = guest_mem_ptr(m, gpa, len);
	if (!p)
		return -EFAULT;
	memcpy(dst, p, len);
	return 0;
}

/* Copies the data extents of [src->offset, +size) of the file into RAM. */
static int fill_from_file(struct guest_mem *m, uint64_t size, const struct guest_mem_source *src,
			  struct terr *err)
{
	const off_t end = (off_t)(src->offset + size);
	off_t pos = (off_t)src->offset;
	while (pos < end) {
		off_t data = lseek(src->fd, pos, SEEK_DATA);
		if (data < 0 && errno == ENXIO)
			break;   /* only holes remain */
		if (data < 0)
			data = pos;   /* no SEEK_DATA: read everything */
		if (data >= end)
			break;
		off_t hole = lseek(src->fd, data, SEEK_HOLE);
		if (hole < 0 || hole > end)
			hole = end;
		for (off_t at = data; at < hole;) {
			size_t chunk = (size_t)(hole - at) < (8u << 20) ? (size_t)(hole - at) : (8u << 20);
			ssize_t n = pread(src->fd, m->base + (at - (off_t)src->offset), chunk, at);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return terr_set(err, n < 0 ? errno : EIO, "reading guest RAM from the snapshot "
						"at offset %lld: %s", (long long)at,
						n < 0 ? strerror(errno) : "unexpected end of file");
			at += n;
		}
		pos = hole;
	}
	return 0;
}

/* --- migration (src/migration): RAM a receiver fills --- */
static int create_anon(struct guest_mem *m, uint64_t size, struct terr *err)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	if (size < MIB(2) || size % 4096)
		return terr_set(err, EINVAL, "memory.size: %llu bytes is not a usable RAM size "
				"(at least 2M, a multiple of 4K)", (unsigned long long)size);
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	if (p == MAP_FAILED)
		return terr_set(err, errno, "memory.size: cannot map %llu MiB of guest RAM: %s",
				(unsigned long long)(size >> 20), strerror(errno));
	madvise(p, size, MADV_HUGEPAGE);
	m->base = p;
	guest_mem_layout(m, size);
	return 0;
}
/* --- end migration --- */

int guest_mem_create_from(struct guest_mem *m, uint64_t size, const struct guest_mem_source *src,
			  struct terr *err)
{
	int r;

	if (!src)
		return guest_mem_create(m, size, err);
	if (src->anon)
		return create_anon(m, size, err);
	if (src->eager) {
		r = guest_mem_create(m, size, err);
		if (!r && (r = fill_from_file(m, size, src, err)))
			guest_mem_destroy(m);
		return r;
	}
	memset(m, 0, sizeof(*m));
	m->fd = fcntl(src->fd, F_DUPFD_CLOEXEC, 0);
	if (m->fd < 0)
		return terr_set(err, errno, "dup of the snapshot file: %s", strerror(errno));
	/* private: the guest's writes go to anonymous copies, the file stays as
	 * it is; pages are read from it on first touch */
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, m->fd,
		       (off_t)src->offset);
	if (p == MAP_FAILED) {
		r = terr_set(err, errno, "mapping %llu MiB of guest RAM from the snapshot: %s",
			     (unsigned long long)(size >> 20), strerror(errno));
		close(m->fd);
		m->fd = -1;
		return r;
	}
	m->base = p;
	m->memfd = false;
	guest_mem_layout(m, size);
	return 0;
}

/* --- dirty tracking of tern's own writes (src/migration) --- */
void guest_mem_note_write_slow(const struct guest_mem *m, const void *hva, size_t len)
{
	uint64_t *bits = __atomic_load_n(&m->host_dirty, __ATOMIC_ACQUIRE);
	if (!bits || !len)
		return;
	const uint8_t *p = hva;
	for (unsigned i = 0; i < m->nregions; i++) {
		const struct guest_region *g = &m->regions[i];
		if (!g->hva || p < g->hva || (uint64_t)(p - g->hva) >= g->size ||
		    len > g->size - (uint64_t)(p - g->hva))
			continue;
		uint64_t at = g->offset + (uint64_t)(p - g->hva);
		if (at + len > m->size)
			return;
		for (uint64_t pg = at / 4096, last = (at + len - 1) / 4096; pg <= last; pg++)
			__atomic_fetch_or(&bits[pg / 64], 1ull << (pg % 64), __ATOMIC_RELEASE);
		return;
	}
}

/* A full barrier on every thread of the process (see memory.h): the
 * expedited private command where the kernel has it (registered once), else
 * the global one; without membarrier at all, a fence here only (x86 writers
 * drain their store buffers long before the first pass reads the page). */
static void barrier_all_threads(void)
{
	static int mode = -1;   /* -1 unknown, 0 none, 1 private expedited, 2 global */
	int cur = __atomic_load_n(&mode, __ATOMIC_ACQUIRE);
	if (cur < 0) {
		long q = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0);
		cur = 0;
		if (q > 0 && (q & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
		    syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0)
			cur = 1;
		else if (q > 0 && (q & MEMBARRIER_CMD_GLOBAL))
			cur = 2;
		__atomic_store_n(&mode, cur, __ATOMIC_RELEASE);
	}
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (cur == 1)
		syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0);
	else if (cur == 2)
		syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0);
}

int guest_mem_track_host_writes(struct guest_mem *m, bool on)
{
	size_t words = (m->size / 4096 + 63) / 64;
	if (on && !m->host_dirty) {
		uint64_t *b = calloc(words ? words : 1, sizeof(uint64_t));
		if (!b)
			return -ENOMEM;
		__atomic_store_n(&m->host_dirty, b, __ATOMIC_RELEASE);
	} else if (on) {
		for (size_t i = 0; i < words; i++)
			__atomic_store_n(&m->host_dirty[i], 0, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&m->host_dirty_on, on, __ATOMIC_SEQ_CST);
	if (on)
		barrier_all_threads();
	return 0;
}

void guest_mem_take_host_writes(struct guest_mem *m, uint64_t first, uint64_t *out, size_t nwords)
{
	if (!m->host_dirty)
		return;
	uint64_t words = (m->size / 4096 + 63) / 64;
	for (size_t i = 0; i < nwords && first / 64 + i < words; i++)
		out[i] |= __atomic_exchange_n(&m->host_dirty[first / 64 + i], 0, __ATOMIC_ACQ_REL);
}
/* --- end dirty tracking --- */
