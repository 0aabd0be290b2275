/* The snapshot file: header, sections of tagged fields, table of contents,
 * then guest RAM at a page-aligned offset with zero pages left as holes, so
 * RAM can be mapped straight from the file. docs/snapshot-format.md gives
 * the layout byte by byte. This file knows the container only; what goes in
 * the sections is snapshot/save.c's and snapshot/restore.c's business. */
#ifndef TERN_SNAPSHOT_SNAPFILE_H
#define TERN_SNAPSHOT_SNAPFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "state/state.h"
#include "util/error.h"

#define SNAP_MAGIC            "TERNSNAP"
#define SNAP_FORMAT_VERSION   1
#define SNAP_HEADER_SIZE      512
#define SNAP_TOC_ENTRY_SIZE   96
#define SNAP_PAGE_SIZE        4096
#define SNAP_ID_MAX           32
#define SNAP_KIND_MAX         16
#define SNAP_MAX_SECTIONS     4096
#define SNAP_MAX_STATE_BYTES  (256u << 20)   /* the state part is read into memory */

/* Who wrote the file: tern's version and the host CPU (vendor, CPUID
 * feature words, the XSAVE features it supports) and kernel. Informational:
 * restore compares what matters (xsave size, MSRs) when it loads the state. */
struct snap_host {
	char tern_version[32];
	char cpu_vendor[16];
	uint32_t cpuid1_eax, cpuid1_ecx, cpuid1_edx;
	uint32_t cpuid7_ebx, cpuid7_ecx, cpuid7_edx;
	uint32_t cpuidx1_ecx, cpuidx1_edx;     /* CPUID 0x80000001 */
	uint64_t xcr0_supported;               /* CPUID 0xd.0 edx:eax */
	char kernel_release[64];               /* uname -r */
};

struct snap_section {
	char id[SNAP_ID_MAX + 1];       /* "vcpu.0", "uart.0" */
	char kind[SNAP_KIND_MAX + 1];   /* "vcpu", "uart16550" */
	uint16_t version, min_version;
	uint64_t offset, length, checksum;
	const uint8_t *data;            /* the blob (reader: points into the loaded state part) */
	bool checksum_ok;               /* reader: false only after a lenient open */
	uint8_t *owned;                 /* writer: the blob */
};

struct snapshot {
	int fd;
	uint64_t file_size;
	uint32_t format_version;
	uint64_t created;
	struct snap_host host;
	uint64_t ram_offset, ram_length;
	unsigned nsections;
	struct snap_section *sections;
	uint8_t *state;                 /* reader: the state part, bytes [0, ram_offset) */
	uint64_t state_len;
	uint64_t toc_offset;            /* reader: where the TOC starts */
	bool lenient;                   /* reader: see snap_open_lenient */
	struct terr damage;             /* reader, lenient: the first damage found */
};

/* This host's identity for the header. */
void snap_host_fill(struct snap_host *h);

/* --- writing --- */
void snap_init_writer(struct snapshot *s);
/* Add a section; takes a copy of the blob. */
int snap_add_section(struct snapshot *s, const char *id, const char *kind, unsigned version,
		     unsigned min_version, const struct state_writer *blob, struct terr *err);
/* Lay out header, sections and TOC in one malloc'd buffer (*len bytes, a
 * page multiple: the state part, up to where RAM starts). RAM of ram_length
 * bytes is declared to follow at s->ram_offset (set here). With ram_length 0
 * the buffer is a whole snapshot without RAM: the migration stream sends it
 * as one message and the receiver opens it with snap_parse. */
int snap_encode(struct snapshot *s, uint64_t ram_length, uint8_t **buf, size_t *len,
		struct terr *err);
/* snap_encode, then write the state part to fd at offset 0; the caller
 * writes RAM at s->ram_offset. */
int snap_write_state(struct snapshot *s, int fd, uint64_t ram_length, struct terr *err);

/* --- reading --- */
/* Open and validate: magic, format version, header checksum, TOC bounds and
 * checksum, every section's bounds and checksum, zero padding everywhere
 * else in the state part, RAM extent against the file size. Errors name the
 * file, the part and the offset. Every byte of the state part is checked: a
 * flipped bit anywhere in it is reported. */
int snap_open(struct snapshot *s, const char *path, struct terr *err);
/* As snap_open, but damage that leaves the file readable (a section whose
 * checksum does not match, non-zero padding, RAM shorter than declared) is
 * recorded in s->damage (code non-zero) and the section's checksum_ok,
 * instead of failing: for inspecting a damaged file. A damaged header or
 * table of contents still fails. Never restore from a lenient open. */
int snap_open_lenient(struct snapshot *s, const char *path, struct terr *err);
/* The same checks over a memory buffer holding a whole file (fuzzing, tests). */
int snap_parse(struct snapshot *s, const uint8_t *buf, size_t len, const char *name,
	       struct terr *err);
const struct snap_section *snap_find(const struct snapshot *s, const char *id);
/* A reader over a section, refusing a section whose min_version is newer
 * than `supported` (naming the section and both versions). */
int snap_section_reader(const struct snapshot *s, const struct snap_section *sec,
			unsigned supported, struct state_reader *r, struct terr *err);
void snap_close(struct snapshot *s);

/* This host's CPU vendor differs from the one that wrote the snapshot. */
bool snap_vendor_differs(const struct snapshot *s);

#endif
