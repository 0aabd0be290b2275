#include "arch/x86/e820.h"
#include "arch/x86/layout.h"

#include <errno.h>

struct e820_builder {
	struct e820_entry *tab;
	unsigned max, n;
};

static int add(struct e820_builder *b, uint64_t addr, uint64_t size, uint32_t type,
	       struct terr *err)
{
	if (!size)
		return 0;
	if (b->n >= b->max)
		return terr_set(err, EINVAL, "e820: the memory map needs more than %u entries",
				b->max);
	b->tab[b->n++] = (struct e820_entry){ .addr = addr, .size = size, .type = type };
	return 0;
}

uint64_t e820_low_ram_top(const struct guest_mem *m)
{
	for (unsigned i = 0; i < m->nregions; i++)
		if (m->regions[i].gpa == 0)
			return m->regions[i].size;
	return 0;
}

int e820_build(const struct guest_mem *m, struct e820_entry *tab, unsigned max,
	       struct terr *err)
{
	struct e820_builder b = { .tab = tab, .max = max };
	uint64_t low = e820_low_ram_top(m);
	int r;

	if (low < LAYOUT_HIMEM_START)
		return terr_set(err, EINVAL, "e820: guest RAM below 1 MiB is %llu KiB; "
				"tern needs at least the first 1 MiB",
				(unsigned long long)(low >> 10));
	if (low > LAYOUT_PCI_HOLE_START)
		return terr_set(err, EINVAL, "e820: low RAM (%llu MiB) overlaps the PCI hole "
				"at 0x%llx", (unsigned long long)(low >> 20),
				LAYOUT_PCI_HOLE_START);

	if ((r = add(&b, 0, LAYOUT_EBDA, E820_RAM, err)) < 0 ||
	    (r = add(&b, LAYOUT_EBDA, LAYOUT_HIMEM_START - LAYOUT_EBDA, E820_RESERVED, err)) < 0 ||
	    (r = add(&b, LAYOUT_HIMEM_START, low - LAYOUT_HIMEM_START, E820_RAM, err)) < 0 ||
	    (r = add(&b, LAYOUT_ECAM_START, LAYOUT_ECAM_SIZE, E820_RESERVED, err)) < 0 ||
	    /* KVM's VMX TSS and identity map live here; QEMU reserves them too. */
	    (r = add(&b, LAYOUT_KVM_IDENT_MAP, LAYOUT_KVM_TSS + 0x3000 - LAYOUT_KVM_IDENT_MAP,
		     E820_RESERVED, err)) < 0)
		return r;

	for (unsigned i = 0; i < m->nregions; i++) {
		const struct guest_region *g = &m->regions[i];
		if (g->gpa == 0)
			continue;
		if (g->gpa < LAYOUT_HIGHMEM_START)
			return terr_set(err, EINVAL, "e820: RAM region at 0x%llx lies in the "
					"PCI hole", (unsigned long long)g->gpa);
		if ((r = add(&b, g->gpa, g->size, E820_RAM, err)) < 0)
			return r;
	}
	return (int)b.n;
}
