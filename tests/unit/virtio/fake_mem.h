/* A fake guest RAM for the virtio tests: a struct guest_mem whose regions
 * are plain malloc'd buffers, plus a tiny "driver" that lays out a split
 * virtqueue in it. Region 0 is [0, 64K) and region 1 is [64K, 128K): adjacent
 * in guest-physical terms but separate host buffers, so anything straddling
 * 0x10000 must be refused by the one-region rule (region 1 is at offset 64K
 * of the "backing", so the page of a dirty-tracking bit is gpa / 4096 for
 * both). With `huge`, region 2 is a
 * 3 GiB PROT_NONE reservation at 4 GiB: descriptors may point into it (the
 * walker never touches buffers) to build chains longer than 4 GiB. */
#ifndef TERN_TESTS_VIRTIO_FAKE_MEM_H
#define TERN_TESTS_VIRTIO_FAKE_MEM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/memory.h"
#include "virtio/virtqueue.h"

#define FM_REGION 0x10000u
#define FM_HUGE_GPA 0x100000000ull
#define FM_HUGE_SIZE 0xc0000000ull

/* Default ring layout used by the tests. */
#define FM_DESC  0x1000u
#define FM_AVAIL 0x2000u
#define FM_USED  0x3000u
#define FM_BUF   0x4000u

struct fake_mem {
	struct guest_mem m;
	uint8_t *r0, *r1;
	void *huge;
};

static inline void fm_init(struct fake_mem *f, int huge)
{
	memset(f, 0, sizeof(*f));
	f->r0 = aligned_alloc(4096, FM_REGION);
	f->r1 = aligned_alloc(4096, FM_REGION);
	memset(f->r0, 0, FM_REGION);
	memset(f->r1, 0, FM_REGION);
	f->m.fd = -1;
	f->m.nregions = 2;
	f->m.regions[0] = (struct guest_region){ .gpa = 0, .size = FM_REGION, .hva = f->r0 };
	f->m.regions[1] = (struct guest_region){ .gpa = FM_REGION, .size = FM_REGION,
						 .offset = FM_REGION, .hva = f->r1 };
	f->m.size = 2 * FM_REGION;
	if (huge) {
		f->huge = mmap(NULL, FM_HUGE_SIZE, PROT_NONE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (f->huge != MAP_FAILED) {
			f->m.regions[2] = (struct guest_region){ .gpa = FM_HUGE_GPA, .size = FM_HUGE_SIZE,
								 .hva = f->huge };
			f->m.nregions = 3;
		} else {
			f->huge = NULL;
		}
	}
}

static inline void fm_free(struct fake_mem *f)
{
	free(f->r0);
	free(f->r1);
	if (f->huge)
		munmap(f->huge, FM_HUGE_SIZE);
}

static inline uint8_t *fm_ptr(struct fake_mem *f, uint64_t gpa)
{
	return guest_mem_ptr(&f->m, gpa, 1);
}

static inline void fm_w16(struct fake_mem *f, uint64_t gpa, uint16_t v)
{
	memcpy(fm_ptr(f, gpa), &v, 2);
}

static inline uint16_t fm_r16(struct fake_mem *f, uint64_t gpa)
{
	uint16_t v;
	memcpy(&v, fm_ptr(f, gpa), 2);
	return v;
}

static inline uint32_t fm_r32(struct fake_mem *f, uint64_t gpa)
{
	uint32_t v;
	memcpy(&v, fm_ptr(f, gpa), 4);
	return v;
}

/* Write descriptor i of the table at `table`. */
static inline void fm_desc(struct fake_mem *f, uint64_t table, unsigned i, uint64_t addr,
			   uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t *p = fm_ptr(f, table + 16ull * i);
	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

/* Driver side: put `head` in the next avail slot and publish it. */
static inline void fm_offer(struct fake_mem *f, uint64_t avail, uint16_t qsize, uint16_t head)
{
	uint16_t idx = fm_r16(f, avail + 2);
	fm_w16(f, avail + 4 + 2u * (idx % qsize), head);
	fm_w16(f, avail + 2, (uint16_t)(idx + 1));
}

#endif
