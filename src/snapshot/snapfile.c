#include "snapshot/snapfile.h"

#include <cpuid.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

/* header field offsets (docs/snapshot-format.md) */
enum {
	H_MAGIC = 0, H_VERSION = 8, H_HSIZE = 12, H_FLAGS = 16, H_TOC_OFF = 24, H_TOC_COUNT = 32,
	H_TOC_ESIZE = 36, H_TOC_SUM = 40, H_RAM_OFF = 48, H_RAM_LEN = 56, H_CREATED = 64,
	H_TERN_VERSION = 72, H_VENDOR = 104, H_CPUID = 120, H_CPUIDX = 144, H_XCR0 = 152,
	H_KERNEL = 160, H_SUM = 504,
};
/* TOC entry field offsets */
enum { T_ID = 0, T_KIND = 32, T_VER = 48, T_MINVER = 50, T_FLAGS = 52, T_OFF = 56,
       T_LEN = 64, T_SUM = 72, T_RESERVED = 80 };

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> 8 * i); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

void snap_host_fill(struct snap_host *h)
{
	unsigned a, b, c, d, maxext;
	struct utsname u;
	memset(h, 0, sizeof(*h));
	snprintf(h->tern_version, sizeof(h->tern_version), "%s", TERN_VERSION);
	__cpuid(0, a, b, c, d);
	memcpy(h->cpu_vendor, &b, 4);
	memcpy(h->cpu_vendor + 4, &d, 4);
	memcpy(h->cpu_vendor + 8, &c, 4);
	unsigned max = a;
	__cpuid(1, h->cpuid1_eax, b, h->cpuid1_ecx, h->cpuid1_edx);
	if (max >= 7)
		__cpuid_count(7, 0, a, h->cpuid7_ebx, h->cpuid7_ecx, h->cpuid7_edx);
	if (max >= 0xd) {
		__cpuid_count(0xd, 0, a, b, c, d);
		h->xcr0_supported = (uint64_t)d << 32 | a;
	}
	__cpuid(0x80000000, maxext, b, c, d);
	if (maxext >= 0x80000001)
		__cpuid(0x80000001, a, b, h->cpuidx1_ecx, h->cpuidx1_edx);
	if (uname(&u) == 0)
		memcpy(h->kernel_release, u.release, strnlen(u.release, sizeof(h->kernel_release) - 1));
}

bool snap_vendor_differs(const struct snapshot *s)
{
	struct snap_host here;
	snap_host_fill(&here);
	return strncmp(here.cpu_vendor, s->host.cpu_vendor, sizeof(here.cpu_vendor)) != 0;
}

void snap_init_writer(struct snapshot *s)
{
	memset(s, 0, sizeof(*s));
	s->fd = -1;
	s->format_version = SNAP_FORMAT_VERSION;
	snap_host_fill(&s->host);
}

static bool valid_name(const char *n, size_t max)
{
	size_t l = strlen(n);
	if (l == 0 || l > max)
		return false;
	for (size_t i = 0; i < l; i++)
		if (n[i] < 0x21 || n[i] > 0x7e)
			return false;
	return true;
}

int snap_add_section(struct snapshot *s, const char *id, const char *kind, unsigned version,
		     unsigned min_version, const struct state_writer *blob, struct terr *err)
{
	if (!valid_name(id, SNAP_ID_MAX) || !valid_name(kind, SNAP_KIND_MAX))
		return terr_set(err, EINVAL, "snapshot: bad section name \"%s\" of kind \"%s\"", id, kind);
	if (blob->err)
		return terr_set(err, -blob->err, "snapshot: section %s: out of memory", id);
	if (snap_find(s, id))
		return terr_set(err, EEXIST, "snapshot: two sections named %s", id);
	if (s->nsections >= SNAP_MAX_SECTIONS)
		return terr_set(err, E2BIG, "snapshot: more than %d sections", SNAP_MAX_SECTIONS);
	struct snap_section *ns = realloc(s->sections, (s->nsections + 1) * sizeof(*ns));
	if (!ns)
		return terr_set(err, ENOMEM, "snapshot: out of memory");
	s->sections = ns;
	struct snap_section *sec = &ns[s->nsections];
	memset(sec, 0, sizeof(*sec));
	snprintf(sec->id, sizeof(sec->id), "%s", id);
	snprintf(sec->kind, sizeof(sec->kind), "%s", kind);
	sec->version = (uint16_t)version;
	sec->min_version = (uint16_t)min_version;
	sec->length = blob->len;
	sec->owned = malloc(blob->len ? blob->len : 1);
	if (!sec->owned)
		return terr_set(err, ENOMEM, "snapshot: out of memory");
	if (blob->len)
		memcpy(sec->owned, blob->buf, blob->len);
	sec->data = sec->owned;
	sec->checksum = XXH3_64bits(sec->owned, blob->len);
	sec->checksum_ok = true;
	s->nsections++;
	return 0;
}

int snap_encode(struct snapshot *s, uint64_t ram_length, uint8_t **out, size_t *out_len,
		struct terr *err)
{
	uint64_t off = SNAP_PAGE_SIZE;   /* the header has the first page */
	for (unsigned i = 0; i < s->nsections; i++) {
		s->sections[i].offset = off;
		off = align_up(off + s->sections[i].length, 8);
	}
	uint64_t toc_off = off;
	uint64_t toc_len = (uint64_t)s->nsections * SNAP_TOC_ENTRY_SIZE;
	s->ram_offset = align_up(toc_off + toc_len, SNAP_PAGE_SIZE);
	s->ram_length = ram_length;
	s->created = (uint64_t)time(NULL);
	uint64_t state_len = s->ram_offset;
	if (state_len > SNAP_MAX_STATE_BYTES)
		return terr_set(err, E2BIG, "snapshot: %llu bytes of state, more than the %u a reader "
				"accepts", (unsigned long long)state_len, SNAP_MAX_STATE_BYTES);

	uint8_t *buf = calloc(1, state_len);
	if (!buf)
		return terr_set(err, ENOMEM, "snapshot: out of memory for %llu bytes of state",
				(unsigned long long)state_len);
	for (unsigned i = 0; i < s->nsections; i++) {
		const struct snap_section *sec = &s->sections[i];
		if (sec->length)
			memcpy(buf + sec->offset, sec->data, sec->length);
		uint8_t *e = buf + toc_off + (uint64_t)i * SNAP_TOC_ENTRY_SIZE;
		memcpy(e + T_ID, sec->id, strlen(sec->id));
		memcpy(e + T_KIND, sec->kind, strlen(sec->kind));
		put16(e + T_VER, sec->version);
		put16(e + T_MINVER, sec->min_version);
		put32(e + T_FLAGS, 0);
		put64(e + T_OFF, sec->offset);
		put64(e + T_LEN, sec->length);
		put64(e + T_SUM, sec->checksum);
	}
	uint8_t *h = buf;
	memcpy(h + H_MAGIC, SNAP_MAGIC, 8);
	put32(h + H_VERSION, s->format_version);
	put32(h + H_HSIZE, SNAP_HEADER_SIZE);
	put64(h + H_FLAGS, 0);
	put64(h + H_TOC_OFF, toc_off);
	put32(h + H_TOC_COUNT, s->nsections);
	put32(h + H_TOC_ESIZE, SNAP_TOC_ENTRY_SIZE);
	put64(h + H_TOC_SUM, XXH3_64bits(buf + toc_off, toc_len));
	put64(h + H_RAM_OFF, s->ram_offset);
	put64(h + H_RAM_LEN, ram_length);
	put64(h + H_CREATED, s->created);
	memcpy(h + H_TERN_VERSION, s->host.tern_version, strnlen(s->host.tern_version, 31));
	memcpy(h + H_VENDOR, s->host.cpu_vendor, strnlen(s->host.cpu_vendor, 15));
	const uint32_t ids[6] = { s->host.cpuid1_eax, s->host.cpuid1_ecx, s->host.cpuid1_edx,
				  s->host.cpuid7_ebx, s->host.cpuid7_ecx, s->host.cpuid7_edx };
	for (int i = 0; i < 6; i++)
		put32(h + H_CPUID + 4 * i, ids[i]);
	put32(h + H_CPUIDX, s->host.cpuidx1_ecx);
	put32(h + H_CPUIDX + 4, s->host.cpuidx1_edx);
	put64(h + H_XCR0, s->host.xcr0_supported);
	memcpy(h + H_KERNEL, s->host.kernel_release, strnlen(s->host.kernel_release, 63));
	put64(h + H_SUM, XXH3_64bits(h, H_SUM));
	*out = buf;
	*out_len = state_len;
	return 0;
}

int snap_write_state(struct snapshot *s, int fd, uint64_t ram_length, struct terr *err)
{
	uint8_t *buf;
	size_t state_len;
	int r = snap_encode(s, ram_length, &buf, &state_len, err);
	if (r)
		return r;
	for (uint64_t done = 0; done < state_len;) {
		ssize_t w = pwrite(fd, buf + done, state_len - done, (off_t)done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			r = terr_set(err, w < 0 ? errno : EIO, "snapshot: writing the state part: %s",
				     strerror(w < 0 ? errno : EIO));
			break;
		}
		done += (uint64_t)w;
	}
	free(buf);
	return r;
}

/* --- reading --- */

/* A TOC name: 1..field printable ASCII bytes, then NULs to the end of the field. */
static bool valid_field_name(const uint8_t *p, size_t field)
{
	size_t l = strnlen((const char *)p, field);
	if (l == 0)
		return false;
	for (size_t i = 0; i < l; i++)
		if (p[i] < 0x21 || p[i] > 0x7e)
			return false;
	for (size_t i = l; i < field; i++)
		if (p[i])
			return false;
	return true;
}

/* The first non-zero byte in [from, to) of the state part, or -1. */
static int64_t nonzero_at(const uint8_t *p, uint64_t from, uint64_t to)
{
	for (uint64_t i = from; i < to; i++)
		if (p[i])
			return (int64_t)i;
	return -1;
}

/* Checks the header (the first SNAP_HEADER_SIZE bytes, available as h) and
 * finds where the state part ends. file_size bounds everything. */
static int check_header(const uint8_t *h, uint64_t file_size, const char *name,
			uint64_t *state_len, struct terr *err)
{
	if (memcmp(h + H_MAGIC, SNAP_MAGIC, 8))
		return terr_set(err, EINVAL, "%s: not a tern snapshot (bad magic)", name);
	bool sum_ok = get64(h + H_SUM) == XXH3_64bits(h, H_SUM);
	uint32_t version = get32(h + H_VERSION);
	if (version != SNAP_FORMAT_VERSION) {
		if (sum_ok || version > SNAP_FORMAT_VERSION + 16)
			return terr_set(err, ENOTSUP, "%s: snapshot format version %u, this tern reads "
					"version %u%s", name, version, SNAP_FORMAT_VERSION,
					sum_ok ? "" : " (and the header checksum does not match: damaged?)");
	}
	if (!sum_ok)
		return terr_set(err, EINVAL, "%s: header checksum mismatch (bytes 0-%d are damaged)",
				name, H_SUM + 7);
	if (get32(h + H_HSIZE) != SNAP_HEADER_SIZE || get32(h + H_TOC_ESIZE) != SNAP_TOC_ENTRY_SIZE)
		return terr_set(err, EINVAL, "%s: header declares sizes this tern does not know", name);
	if (get64(h + H_FLAGS))
		return terr_set(err, ENOTSUP, "%s: header flags 0x%llx: features this tern does not "
				"know", name, (unsigned long long)get64(h + H_FLAGS));
	uint64_t toc_off = get64(h + H_TOC_OFF);
	uint32_t count = get32(h + H_TOC_COUNT);
	uint64_t ram_off = get64(h + H_RAM_OFF);
	if (count > SNAP_MAX_SECTIONS)
		return terr_set(err, EINVAL, "%s: %u sections declared, at most %d", name, count,
				SNAP_MAX_SECTIONS);
	if (toc_off < SNAP_PAGE_SIZE || toc_off % 8 || toc_off > SNAP_MAX_STATE_BYTES)
		return terr_set(err, EINVAL, "%s: table of contents at byte %llu: not where one can be",
				name, (unsigned long long)toc_off);
	uint64_t toc_end = toc_off + (uint64_t)count * SNAP_TOC_ENTRY_SIZE;
	if (ram_off != align_up(toc_end, SNAP_PAGE_SIZE))
		return terr_set(err, EINVAL, "%s: RAM at byte %llu, but the state part ends at byte %llu",
				name, (unsigned long long)ram_off,
				(unsigned long long)align_up(toc_end, SNAP_PAGE_SIZE));
	if (ram_off > SNAP_MAX_STATE_BYTES)
		return terr_set(err, EINVAL, "%s: %llu bytes of state, more than the %u this tern reads",
				name, (unsigned long long)ram_off, SNAP_MAX_STATE_BYTES);
	if (ram_off > file_size)
		return terr_set(err, EINVAL, "%s: truncated: the state part should end at byte %llu, "
				"the file has %llu", name, (unsigned long long)ram_off,
				(unsigned long long)file_size);
	*state_len = ram_off;
	return 0;
}

static int cmp_by_offset(const void *a, const void *b)
{
	const struct snap_section *x = *(const struct snap_section *const *)a;
	const struct snap_section *y = *(const struct snap_section *const *)b;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	return x->length < y->length ? -1 : x->length > y->length;
}

/* Damage that a lenient open records and carries on after. */
static int damage(struct snapshot *s, struct terr *err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int damage(struct snapshot *s, struct terr *err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = terr_vset(s->lenient ? &s->damage : err, EINVAL, fmt, ap);
	va_end(ap);
	return s->lenient ? 0 : r;
}

/* Everything after the header: s->state holds [0, state_len), the header
 * has passed check_header. */
static int parse_state(struct snapshot *s, const char *name, struct terr *err)
{
	const uint8_t *h = s->state;
	int64_t nz;

	s->format_version = get32(h + H_VERSION);
	uint64_t toc_off = get64(h + H_TOC_OFF);
	uint32_t count = get32(h + H_TOC_COUNT);
	uint64_t toc_len = (uint64_t)count * SNAP_TOC_ENTRY_SIZE;
	s->toc_offset = toc_off;
	s->ram_offset = get64(h + H_RAM_OFF);
	s->ram_length = get64(h + H_RAM_LEN);
	s->created = get64(h + H_CREATED);
	memcpy(s->host.tern_version, h + H_TERN_VERSION, 31);
	memcpy(s->host.cpu_vendor, h + H_VENDOR, 15);
	uint32_t *ids[6] = { &s->host.cpuid1_eax, &s->host.cpuid1_ecx, &s->host.cpuid1_edx,
			     &s->host.cpuid7_ebx, &s->host.cpuid7_ecx, &s->host.cpuid7_edx };
	for (int i = 0; i < 6; i++)
		*ids[i] = get32(h + H_CPUID + 4 * i);
	s->host.cpuidx1_ecx = get32(h + H_CPUIDX);
	s->host.cpuidx1_edx = get32(h + H_CPUIDX + 4);
	s->host.xcr0_supported = get64(h + H_XCR0);
	memcpy(s->host.kernel_release, h + H_KERNEL, 63);

	int r;
	if ((nz = nonzero_at(s->state, SNAP_HEADER_SIZE, SNAP_PAGE_SIZE)) >= 0 &&
	    (r = damage(s, err, "%s: byte %lld of the header page is not zero (damaged)",
			name, (long long)nz)))
		return r;
	if (get64(h + H_TOC_SUM) != XXH3_64bits(s->state + toc_off, toc_len))
		return terr_set(err, EINVAL, "%s: table of contents checksum mismatch (bytes %llu-%llu)",
				name, (unsigned long long)toc_off,
				(unsigned long long)(toc_off + toc_len - (toc_len ? 1 : 0)));
	if ((nz = nonzero_at(s->state, toc_off + toc_len, s->state_len)) >= 0 &&
	    (r = damage(s, err, "%s: byte %lld, between the table of contents and RAM, is not zero "
			"(damaged)", name, (long long)nz)))
		return r;
	if (s->ram_length % SNAP_PAGE_SIZE)
		return terr_set(err, EINVAL, "%s: %llu bytes of RAM declared, not a whole number of "
				"pages", name, (unsigned long long)s->ram_length);
	if (s->ram_length > s->file_size - s->ram_offset &&
	    (r = damage(s, err, "%s: RAM is shorter than declared: the file has %llu bytes, RAM "
			"should end at byte %llu", name, (unsigned long long)s->file_size,
			(unsigned long long)(s->ram_offset + s->ram_length))))
		return r;

	s->sections = calloc(count ? count : 1, sizeof(*s->sections));
	struct snap_section **order = calloc(count ? count : 1, sizeof(*order));
	if (!s->sections || !order) {
		free(order);
		return terr_set(err, ENOMEM, "%s: out of memory", name);
	}
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *e = s->state + toc_off + (uint64_t)i * SNAP_TOC_ENTRY_SIZE;
		struct snap_section *sec = &s->sections[i];
		if (!valid_field_name(e + T_ID, SNAP_ID_MAX) || !valid_field_name(e + T_KIND, SNAP_KIND_MAX)) {
			r = terr_set(err, EINVAL, "%s: table of contents entry %u has a bad name", name, i);
			goto out;
		}
		memcpy(sec->id, e + T_ID, SNAP_ID_MAX);
		memcpy(sec->kind, e + T_KIND, SNAP_KIND_MAX);
		sec->version = get16(e + T_VER);
		sec->min_version = get16(e + T_MINVER);
		sec->offset = get64(e + T_OFF);
		sec->length = get64(e + T_LEN);
		sec->checksum = get64(e + T_SUM);
		if (get32(e + T_FLAGS)) {
			r = terr_set(err, ENOTSUP, "%s: section %s has flags 0x%x: features this tern does "
				     "not know", name, sec->id, get32(e + T_FLAGS));
			goto out;
		}
		if (nonzero_at(e, T_RESERVED, SNAP_TOC_ENTRY_SIZE) >= 0) {
			r = terr_set(err, EINVAL, "%s: table of contents entry %u (%s): reserved bytes are "
				     "not zero", name, i, sec->id);
			goto out;
		}
		if (sec->min_version > sec->version) {
			r = terr_set(err, EINVAL, "%s: section %s: min_version %u is above its version %u",
				     name, sec->id, sec->min_version, sec->version);
			goto out;
		}
		if (sec->offset < SNAP_PAGE_SIZE || sec->offset > toc_off || sec->length > toc_off - sec->offset) {
			r = terr_set(err, EINVAL, "%s: section %s at byte %llu (%llu bytes) lies outside "
				     "the state part", name, sec->id, (unsigned long long)sec->offset,
				     (unsigned long long)sec->length);
			goto out;
		}
		sec->data = s->state + sec->offset;
		sec->checksum_ok = XXH3_64bits(sec->data, sec->length) == sec->checksum;
		if (!sec->checksum_ok &&
		    (r = damage(s, err, "%s: section %s (bytes %llu-%llu) checksum mismatch", name,
				sec->id, (unsigned long long)sec->offset,
				(unsigned long long)(sec->offset + sec->length - (sec->length ? 1 : 0)))))
			goto out;
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(s->sections[j].id, sec->id)) {
				r = terr_set(err, EINVAL, "%s: section %s appears twice", name, sec->id);
				goto out;
			}
		order[i] = sec;
		s->nsections++;
	}
	/* sections do not overlap, and the bytes between them are zero */
	r = 0;
	nz = -1;
	qsort(order, count, sizeof(*order), cmp_by_offset);
	uint64_t pos = SNAP_PAGE_SIZE;
	for (uint32_t i = 0; i < count; i++) {
		if (order[i]->offset < pos) {
			r = terr_set(err, EINVAL, "%s: section %s at byte %llu overlaps %s", name,
				     order[i]->id, (unsigned long long)order[i]->offset, order[i - 1]->id);
			goto out;
		}
		if ((nz = nonzero_at(s->state, pos, order[i]->offset)) >= 0)
			break;
		pos = order[i]->offset + order[i]->length;
	}
	if (nz >= 0 || (nz = nonzero_at(s->state, pos, toc_off)) >= 0)
		r = damage(s, err, "%s: byte %lld lies between sections and is not zero (damaged)",
			   name, (long long)nz);
out:
	free(order);
	return r;
}

int snap_parse(struct snapshot *s, const uint8_t *buf, size_t len, const char *name,
	       struct terr *err)
{
	uint64_t end;
	memset(s, 0, sizeof(*s));
	s->fd = -1;
	s->file_size = len;
	if (len < SNAP_HEADER_SIZE)
		return terr_set(err, EINVAL, "%s: %zu bytes, too short for a snapshot header", name, len);
	int r = check_header(buf, len, name, &end, err);
	if (r)
		return r;
	s->state = malloc(end);
	if (!s->state)
		return terr_set(err, ENOMEM, "%s: out of memory", name);
	memcpy(s->state, buf, end);
	s->state_len = end;
	r = parse_state(s, name, err);
	if (r)
		snap_close(s);
	return r;
}

static int read_full(int fd, uint8_t *p, uint64_t len, const char *path, struct terr *err)
{
	for (uint64_t done = 0; done < len;) {
		ssize_t n = pread(fd, p + done, len - done, (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return terr_set(err, EIO, "%s: reading the state part: %s", path,
					n < 0 ? strerror(errno) : "unexpected end of file");
		done += (uint64_t)n;
	}
	return 0;
}

static int open_file(struct snapshot *s, const char *path, bool lenient, struct terr *err)
{
	uint8_t h[SNAP_HEADER_SIZE];
	struct stat st;
	uint64_t end;
	int r;

	memset(s, 0, sizeof(*s));
	s->lenient = lenient;
	s->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (s->fd < 0)
		return terr_set(err, errno, "%s: %s", path, strerror(errno));
	if (fstat(s->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		r = terr_set(err, EINVAL, "%s: not a regular file", path);
		goto fail;
	}
	s->file_size = (uint64_t)st.st_size;
	if (s->file_size < SNAP_HEADER_SIZE) {
		r = terr_set(err, EINVAL, "%s: %llu bytes, too short for a snapshot header", path,
			     (unsigned long long)s->file_size);
		goto fail;
	}
	if ((r = read_full(s->fd, h, sizeof(h), path, err)) ||
	    (r = check_header(h, s->file_size, path, &end, err)))
		goto fail;
	s->state = malloc(end);
	if (!s->state) {
		r = terr_set(err, ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	s->state_len = end;
	if ((r = read_full(s->fd, s->state, end, path, err)))
		goto fail;
	/* the header may have changed since it was checked (a file written
	 * under us): check it again from what was read */
	if ((r = check_header(s->state, s->file_size, path, &end, err)))
		goto fail;
	if (end != s->state_len) {
		r = terr_set(err, EINVAL, "%s: the file changed while it was read", path);
		goto fail;
	}
	r = parse_state(s, path, err);
	if (r)
		goto fail;
	return 0;
fail:
	snap_close(s);
	return r;
}

int snap_open(struct snapshot *s, const char *path, struct terr *err)
{
	return open_file(s, path, false, err);
}

int snap_open_lenient(struct snapshot *s, const char *path, struct terr *err)
{
	return open_file(s, path, true, err);
}

const struct snap_section *snap_find(const struct snapshot *s, const char *id)
{
	for (unsigned i = 0; i < s->nsections; i++)
		if (!strcmp(s->sections[i].id, id))
			return &s->sections[i];
	return NULL;
}

int snap_section_reader(const struct snapshot *s, const struct snap_section *sec,
			unsigned supported, struct state_reader *r, struct terr *err)
{
	(void)s;
	if (sec->min_version > supported)
		return terr_set(err, ENOTSUP, "section %s needs a reader of version %u or newer; this "
				"tern reads %s version %u", sec->id, sec->min_version, sec->kind, supported);
	return sr_init(r, sec->length ? sec->data : (const uint8_t *)"", sec->length, sec->id, err);
}

void snap_close(struct snapshot *s)
{
	if (s->sections)
		for (unsigned i = 0; i < s->nsections; i++)
			free(s->sections[i].owned);
	free(s->sections);
	free(s->state);
	if (s->fd >= 0)
		close(s->fd);
	s->sections = NULL;
	s->state = NULL;
	s->nsections = 0;
	s->fd = -1;
}
