#include "arch/x86/vmlinux_load.h"
#include "arch/x86/bzimage.h"
#include "arch/x86/kernel_unpack.h"
#include "arch/x86/layout.h"
#include "util/log.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return le16toh(v); }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }
static void wr32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static void wr64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }

#define START_KERNEL_MAP    0xffffffff80000000ULL   /* __START_KERNEL_map */
/* The kernel image must fit in KERNEL_IMAGE_SIZE of virtual space: 1 GiB
 * with RANDOMIZE_BASE, 512 MiB without; tern stays within the smaller. */
#define KERNEL_VIRT_MAX     MIB(512)

#define ELF_PT_LOAD 1
#define ELF_SHT_NOBITS 8

static uint32_t rd32s(const uint8_t *p) { return rd32(p); }

static void max_end(uint64_t *end, uint64_t off, uint64_t len, size_t limit)
{
	if (off <= limit && len <= limit - off && off + len > *end)
		*end = off + len;
}

/* The ELF and program headers, from the first head_len bytes of an image
 * of v->len bytes: the layout (size, entry) and the segments. */
static int parse_headers(struct vmlinux *v, const uint8_t *b, size_t head_len, struct terr *err)
{
	const char *name = v->name;
	size_t len = v->len;

	if (head_len < 64 || memcmp(b, "\177ELF", 4) != 0)
		return terr_set(err, ENOEXEC, "kernel %s: the unpacked kernel is not an ELF file",
				name);
	if (b[4] != 2 || b[5] != 1 || rd16(b + 18) != 62 || rd16(b + 16) != 2)
		return terr_set(err, ENOEXEC, "kernel %s: the unpacked kernel is not a 64-bit "
				"x86 executable ELF", name);
	uint64_t phoff = rd64(b + 32), entry = rd64(b + 24);
	unsigned phentsize = rd16(b + 54), phnum = rd16(b + 56);
	if (phentsize != 56 || phnum == 0 || phoff > len || (uint64_t)phnum * 56 > len - phoff)
		return terr_set(err, ENOEXEC, "kernel %s: the unpacked kernel's program headers "
				"are missing or truncated", name);
	if (phoff + (uint64_t)phnum * 56 > head_len)
		return -EAGAIN;   /* unpack more of the start and try again */

	uint64_t top = 0;
	v->nseg = 0;
	for (unsigned i = 0; i < phnum; i++) {
		const uint8_t *ph = b + phoff + (uint64_t)i * 56;
		uint64_t off = rd64(ph + 8), paddr = rd64(ph + 24);
		uint64_t filesz = rd64(ph + 32), memsz = rd64(ph + 40);
		if (rd32s(ph) != ELF_PT_LOAD)
			continue;
		if (off > len || filesz > len - off || filesz > memsz || paddr < v->pref ||
		    paddr - v->pref > KERNEL_UNPACK_MAX || memsz > KERNEL_UNPACK_MAX)
			return terr_set(err, ENOEXEC, "kernel %s: the unpacked kernel's segment %u "
					"(file 0x%llx + 0x%llx, memory 0x%llx + 0x%llx) is outside "
					"the file or below its load address 0x%llx", name, i,
					(unsigned long long)off, (unsigned long long)filesz,
					(unsigned long long)paddr, (unsigned long long)memsz,
					(unsigned long long)v->pref);
		if (v->nseg == VMLINUX_MAX_SEGMENTS)
			return terr_set(err, ENOEXEC, "kernel %s: the unpacked kernel has more than "
					"%u loadable segments", name, VMLINUX_MAX_SEGMENTS);
		v->seg[v->nseg++] = (struct vmlinux_segment){
			.off = off, .at = paddr - v->pref, .filesz = filesz, .memsz = memsz };
		if (paddr - v->pref + memsz > top)
			top = paddr - v->pref + memsz;
	}
	if (!v->nseg)
		return terr_set(err, ENOEXEC, "kernel %s: the unpacked kernel has no loadable "
				"segment", name);
	if (entry < v->pref || entry - v->pref >= top)
		return terr_set(err, ENOEXEC, "kernel %s: the unpacked kernel's entry point 0x%llx "
				"is outside its image", name, (unsigned long long)entry);
	v->size = top;
	v->entry_off = entry - v->pref;
	/* Unpacked at phys - lead, the segments holding the most bytes are
	 * already in place; the others move. */
	uint64_t best = 0;
	v->lead = 0;
	for (unsigned i = 0; i < v->nseg; i++) {
		int64_t lead = (int64_t)(v->seg[i].off - v->seg[i].at);
		uint64_t sum = 0;
		for (unsigned j = 0; j < v->nseg; j++)
			if ((int64_t)(v->seg[j].off - v->seg[j].at) == lead)
				sum += v->seg[j].filesz;
		if (sum > best) {
			best = sum;
			v->lead = lead;
		}
	}
	return 0;
}

/* The whole image unpacked: where the ELF ends and whether a relocation
 * table follows. */
static void parse_tail(struct vmlinux *v, const uint8_t *b)
{
	size_t len = v->len;
	uint64_t phoff = rd64(b + 32), shoff = rd64(b + 40);
	unsigned phnum = rd16(b + 56), shentsize = rd16(b + 58), shnum = rd16(b + 60);
	uint64_t end = 0;

	max_end(&end, phoff, (uint64_t)phnum * 56, len);
	for (unsigned i = 0; i < phnum; i++) {
		const uint8_t *ph = b + phoff + (uint64_t)i * 56;
		max_end(&end, rd64(ph + 8), rd64(ph + 32), len);
	}
	if (shentsize == 64 && shoff <= len && (uint64_t)shnum * 64 <= len - shoff) {
		max_end(&end, shoff, (uint64_t)shnum * 64, len);
		for (unsigned i = 0; i < shnum; i++) {
			const uint8_t *sh = b + shoff + (uint64_t)i * 64;
			if (rd32s(sh + 4) != ELF_SHT_NOBITS)
				max_end(&end, rd64(sh + 24), rd64(sh + 32), len);
		}
	}
	v->elf_end = (size_t)end;

	/* The relocation table, if what follows the ELF is exactly one. */
	v->relocs = false;
	size_t tail = len - v->elf_end;
	if (tail >= 12 && tail % 4 == 0 && rd32(b + v->elf_end) == 0) {
		size_t i = tail / 4, zeros = 0;
		while (i-- > 0 && zeros < 3)
			if (rd32(b + v->elf_end + i * 4) == 0)
				zeros++;
		v->relocs = zeros == 3 && i == (size_t)-1;
	}
}

static uint64_t random_below(uint64_t n)
{
	uint64_t r = 0;
	if (n <= 1)
		return 0;
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r)) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		r = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
	}
	return r % n;
}

/* What the kernel's decompressor does after unpacking (misc.c:
 * handle_relocations): the image was linked to run at virtual
 * START_KERNEL_MAP + pref and now runs at START_KERNEL_MAP + virt. */
static int apply_relocs(uint8_t *img, const struct vmlinux *v, const uint8_t *table,
			size_t table_len, uint64_t virt, const char *name, struct terr *err)
{
	int64_t delta = (int64_t)(virt - v->pref);
	const uint8_t *r = table + table_len;   /* read backwards; parse_tail checked it */
	for (int kind = 0; kind < 3; kind++) {   /* 32-bit, inverse 32-bit, 64-bit */
		for (r -= 4; rd32(r) != 0; r -= 4) {
			uint64_t va = (uint64_t)(int64_t)(int32_t)rd32(r);
			uint64_t at = va - START_KERNEL_MAP - v->pref;   /* offset in the image */
			unsigned width = kind == 2 ? 8 : 4;
			if (va < START_KERNEL_MAP + v->pref || at > v->size - width)
				return terr_set(err, ENOEXEC, "kernel %s: relocation at 0x%llx is "
						"outside the kernel image", name,
						(unsigned long long)va);
			if (kind == 2)
				wr64(img + at, rd64(img + at) + (uint64_t)delta);
			else if (kind == 1)
				wr32(img + at, rd32(img + at) - (uint32_t)delta);
			else
				wr32(img + at, rd32(img + at) + (uint32_t)delta);
		}
	}
	return 0;
}

static bool cmdline_has_word(const char *cmdline, const char *word)
{
	size_t n = strlen(word);
	for (const char *p = cmdline; p && (p = strstr(p, word)); p += n)
		if ((p == cmdline || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
			return true;
	return false;
}

/* Move each segment from where it was unpacked (src + off) to where it runs
 * (img + at) and clear its bss. src and img overlap in guest RAM, so the
 * order matters: moves down in ascending order, then moves up in
 * descending order, each checked not to overwrite a source still to move;
 * a layout where that fails goes through a copy of the sources. */
static int place_segments(const struct vmlinux *v, uint8_t *img, const uint8_t *src)
{
	unsigned order[VMLINUX_MAX_SEGMENTS], n = 0;
	const struct vmlinux_segment *s = v->seg;
	for (int up = 0; up < 2; up++) {
		unsigned first = n;
		for (unsigned i = 0; i < v->nseg; i++)
			if ((img + s[i].at > src + s[i].off) == up)
				order[n++] = i;
		for (unsigned a = first; a < n; a++)   /* insertion sort by at */
			for (unsigned b = a; b > first; b--) {
				bool swap = up ? s[order[b]].at > s[order[b - 1]].at
					       : s[order[b]].at < s[order[b - 1]].at;
				if (!swap)
					break;
				unsigned t = order[b];
				order[b] = order[b - 1];
				order[b - 1] = t;
			}
	}
	bool safe = true;
	for (unsigned k = 0; k < n && safe; k++) {
		const struct vmlinux_segment *d = &s[order[k]];
		for (unsigned j = k + 1; j < n && safe; j++) {
			const struct vmlinux_segment *o = &s[order[j]];
			safe = img + d->at + d->memsz <= src + o->off ||
			       src + o->off + o->filesz <= img + d->at;
		}
	}
	uint8_t *copy = NULL;
	if (!safe) {
		size_t total = 0;
		for (unsigned i = 0; i < v->nseg; i++)
			total += s[i].filesz;
		copy = malloc(total ? total : 1);
		if (!copy)
			return -ENOMEM;
		total = 0;
		for (unsigned i = 0; i < v->nseg; i++) {
			memcpy(copy + total, src + s[i].off, s[i].filesz);
			total += s[i].filesz;
		}
	}
	for (unsigned k = 0; k < n; k++) {
		const struct vmlinux_segment *d = &s[order[k]];
		const uint8_t *from = src + d->off;
		if (copy) {
			from = copy;
			for (unsigned i = 0; i < order[k]; i++)
				from += s[i].filesz;
		}
		if (img + d->at != from)
			memmove(img + d->at, from, d->filesz);
		memset(img + d->at + d->filesz, 0, d->memsz - d->filesz);
	}
	free(copy);
	return 0;
}

/* Clear what unpacking left in [lo, hi) outside the segments: ELF headers,
 * section data, the relocation table, the sources of moved segments. */
static void clear_leftovers(const struct vmlinux *v, uint8_t *img, uint8_t *lo, uint8_t *hi)
{
	while (lo < hi) {
		uint8_t *next = hi;
		bool covered = false;
		for (unsigned i = 0; i < v->nseg && !covered; i++) {
			uint8_t *a = img + v->seg[i].at, *b = a + v->seg[i].memsz;
			if (a <= lo && lo < b) {
				lo = b;
				covered = true;
			} else if (a > lo && a < next) {
				next = a;
			}
		}
		if (!covered) {
			memset(lo, 0, (size_t)(next - lo));
			lo = next;
		}
	}
}

/* The kernel goes to a 2 MiB-aligned physical address in [pref, below the
 * initrd) and, when relocations allow, a random virtual offset: the same
 * choices the decompressor's KASLR makes (nokaslr on the command line keeps
 * the linked addresses). The payload unpacks straight into guest RAM at
 * phys - lead, so that most of the image is in place without a copy. */
int vmlinux_load(const struct guest_mem *m, struct vmlinux *v, uint64_t ram_top,
		 const char *cmdline, uint64_t *entry, bool *kaslr, struct terr *err)
{
	const uint8_t *file = v->bz;
	const char *name = v->name;
	uint64_t align = rd32(file + HDR_KERNEL_ALIGN);
	if (align < PMD_SIZE || (align & (align - 1)))
		align = PMD_SIZE;
	if (v->pref & (PMD_SIZE - 1))
		return terr_set(err, ENOEXEC, "kernel %s: load address 0x%llx is not 2 MiB aligned",
				name, (unsigned long long)v->pref);
	uint64_t size = (v->size + PMD_SIZE - 1) & ~(PMD_SIZE - 1);
	/* RAM the unpacking touches: below and above phys */
	uint64_t below = v->lead > 0 ? (uint64_t)v->lead : 0;
	uint64_t above = size;
	if ((int64_t)v->len - v->lead > (int64_t)above)
		above = (uint64_t)((int64_t)v->len - v->lead);
	uint64_t lo = v->pref;
	if (lo < LAYOUT_HIMEM_START + below)
		lo = (LAYOUT_HIMEM_START + below + align - 1) & ~(align - 1);
	if (ram_top < lo || ram_top - lo < above)
		return terr_set(err, ENOMEM, "kernel %s: needs 0x%llx - 0x%llx (%llu MiB) but free "
				"low guest RAM ends at 0x%llx", name,
				(unsigned long long)(lo - below),
				(unsigned long long)(lo + above - 1),
				(unsigned long long)((below + above + MIB(1) - 1) >> 20),
				(unsigned long long)ram_top);

	bool relocatable = file[HDR_RELOCATABLE] != 0;
	bool randomize = relocatable && !cmdline_has_word(cmdline, "nokaslr");
	uint64_t phys = lo, virt = v->pref;
	if (randomize)
		phys += random_below((ram_top - lo - above) / align + 1) * align;
	uint8_t *area = guest_mem_ptr(m, phys - below, below + above);
	if (!area)
		return terr_set(err, EFAULT, "kernel %s: 0x%llx + 0x%llx is not in guest RAM", name,
				(unsigned long long)(phys - below),
				(unsigned long long)(below + above));
	uint8_t *img = area + below, *at = img - v->lead;

	int r = kernel_payload_unpack_into(v->payload, v->payload_len, name, at, v->len, err);
	if (r < 0)
		return r;
	if (memcmp(at, v->head, v->head_len) != 0)
		return terr_set(err, EINVAL, "kernel %s: the compressed kernel's first bytes "
				"unpacked differently the second time", name);
	parse_tail(v, at);
	/* relocations after the moves, from a copy: a segment may land on them */
	uint8_t *table = NULL;
	size_t table_len = v->len - v->elf_end;
	if (randomize && v->relocs) {
		if (KERNEL_VIRT_MAX >= v->pref + size)
			virt += random_below((KERNEL_VIRT_MAX - v->pref - size) / align + 1) * align;
		table = malloc(table_len);
		if (!table)
			return terr_set(err, ENOMEM, "kernel %s: no memory for its relocations", name);
		memcpy(table, at + v->elf_end, table_len);
	}
	if (place_segments(v, img, at) < 0) {
		free(table);
		return terr_set(err, ENOMEM, "kernel %s: no memory to place its segments", name);
	}
	uint8_t *ulo = at < img ? at : img;
	clear_leftovers(v, img, ulo, at + v->len);
	if (table && virt != v->pref)
		r = apply_relocs(img, v, table, table_len, virt, name, err);
	free(table);
	if (r < 0)
		return r;
	*kaslr = randomize;
	*entry = phys + v->entry_off;
	log_debug("boot", "kernel %s: unpacked on the host at 0x%llx, physical 0x%llx, virtual "
		  "offset 0x%llx, entry 0x%llx", name, (unsigned long long)(phys - v->lead),
		  (unsigned long long)phys, (unsigned long long)virt, (unsigned long long)*entry);
	return 0;
}

/* The payload, when this build can unpack it: 0, -ENOTSUP (err clear) when
 * the kernel must unpack itself, other errors for a corrupt kernel. */
static int find_payload(const uint8_t *p, size_t len, const char *name, const uint8_t **payload,
			size_t *plen_out, struct terr *err)
{
	unsigned sects = p[HDR_SETUP_SECTS] ? p[HDR_SETUP_SECTS] : 4;
	uint64_t setup = (uint64_t)(sects + 1) * 512;
	uint64_t poff = rd32(p + HDR_PAYLOAD_OFFSET), plen = rd32(p + HDR_PAYLOAD_LENGTH);
	if (rd16(p + HDR_VERSION) < 0x0208 || plen == 0 || setup > len)
		return -ENOTSUP;   /* the guest path reports what is wrong */
	if (poff > len - setup || plen > len - setup - poff)
		return terr_set(err, ENOEXEC, "kernel %s: truncated: the compressed kernel "
				"(0x%llx + 0x%llx after the setup code) is beyond the end of the "
				"file", name, (unsigned long long)poff, (unsigned long long)plen);
	*payload = p + setup + poff;
	*plen_out = plen;
	enum kernel_codec c = kernel_codec_of(*payload, plen);
	if (!kernel_codec_supported(c)) {
		log_info("boot", "kernel %s: %s-compressed; the guest unpacks it", name,
			 kernel_codec_name(c));
		return -ENOTSUP;
	}
	return 0;
}

int vmlinux_probe(const uint8_t *bz, size_t len, const char *name, struct vmlinux *v,
		  struct terr *err)
{
	memset(v, 0, sizeof(*v));
	v->bz = bz;
	v->name = name;
	v->pref = rd64(bz + HDR_PREF_ADDRESS);
	int r = find_payload(bz, len, name, &v->payload, &v->payload_len, err);
	if (r < 0)
		return r;
	if ((r = kernel_payload_size(v->payload, v->payload_len, name, &v->len, err)) < 0)
		return r;
	/* the headers come first; program headers beyond 64 KiB are unusual,
	 * and unpacking a longer start costs little */
	size_t want = 64u << 10;
	for (;;) {
		if (want > v->len)
			want = v->len;
		uint8_t *head = realloc(v->head, want);
		if (!head) {
			r = terr_set(err, ENOMEM, "kernel %s: out of memory", name);
			break;
		}
		v->head = head;
		v->head_len = want;
		if ((r = kernel_payload_peek(v->payload, v->payload_len, name, head, want, err)) < 0)
			break;
		r = parse_headers(v, head, want, err);
		if (r != -EAGAIN)
			break;
		uint64_t phoff = rd64(head + 32), need = phoff + (uint64_t)rd16(head + 56) * 56;
		want = (size_t)need;   /* parse_headers checked it is within the image */
	}
	if (r < 0)
		vmlinux_release(v);
	return r;
}

void vmlinux_release(struct vmlinux *v)
{
	free(v->head);
	v->head = NULL;
}
