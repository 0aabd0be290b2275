#include "arch/x86/aml.h"

#include <string.h>

#define AML_ZERO       0x00
#define AML_ONE        0x01
#define AML_NAME       0x08
#define AML_BYTE       0x0a
#define AML_WORD       0x0b
#define AML_DWORD      0x0c
#define AML_STRING     0x0d
#define AML_QWORD      0x0e
#define AML_SCOPE      0x10
#define AML_BUFFER     0x11
#define AML_PACKAGE    0x12
#define AML_EXT        0x5b
#define AML_DEVICE     0x82   /* after AML_EXT */
#define AML_DUAL_NAME  0x2e
#define AML_MULTI_NAME 0x2f

/* A PkgLength is at most 4 bytes; begin reserves 4 and end shrinks. */
#define PKGLEN_MAX 4

void aml_init(struct aml *a, uint8_t *buf, size_t cap)
{
	*a = (struct aml){ .buf = buf, .cap = cap };
}

void aml_bytes(struct aml *a, const void *p, size_t n)
{
	if (a->overflow || n > a->cap - a->len) {
		a->overflow = true;
		return;
	}
	memcpy(a->buf + a->len, p, n);
	a->len += n;
}

static void byte(struct aml *a, uint8_t v)
{
	aml_bytes(a, &v, 1);
}

static void le(struct aml *a, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		byte(a, (uint8_t)(v >> (8 * i)));
}

void aml_name_string(struct aml *a, const char *path)
{
	while (*path == '\\' || *path == '^')
		byte(a, (uint8_t)*path++);
	unsigned nseg = *path ? 1 : 0;
	for (const char *p = path; *p; p++)
		nseg += *p == '.';
	if (nseg == 0) {
		byte(a, 0);   /* NullName */
		return;
	}
	if (nseg == 2)
		byte(a, AML_DUAL_NAME);
	else if (nseg > 2) {
		byte(a, AML_MULTI_NAME);
		byte(a, (uint8_t)nseg);
	}
	while (*path) {
		char seg[4] = { '_', '_', '_', '_' };
		for (unsigned i = 0; *path && *path != '.'; path++)
			if (i < 4)
				seg[i++] = *path;
		aml_bytes(a, seg, 4);
		if (*path == '.')
			path++;
	}
}

void aml_integer(struct aml *a, uint64_t v)
{
	if (v == 0)
		byte(a, AML_ZERO);
	else if (v == 1)
		byte(a, AML_ONE);
	else if (v <= 0xff) {
		byte(a, AML_BYTE);
		le(a, v, 1);
	} else if (v <= 0xffff) {
		byte(a, AML_WORD);
		le(a, v, 2);
	} else if (v <= 0xffffffff) {
		byte(a, AML_DWORD);
		le(a, v, 4);
	} else {
		byte(a, AML_QWORD);
		le(a, v, 8);
	}
}

void aml_string(struct aml *a, const char *s)
{
	byte(a, AML_STRING);
	aml_bytes(a, s, strlen(s) + 1);
}

static unsigned hexval(char c)
{
	return c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
}

/* Compressed EISA id: three 5-bit letters and four hex digits, stored big
 * endian in a DWord (so "PNP0A08" is 41 d0 0a 08 in memory). */
void aml_eisaid(struct aml *a, const char *id)
{
	uint32_t v = (uint32_t)((id[0] - 0x40) & 0x1f) << 26 |
		     (uint32_t)((id[1] - 0x40) & 0x1f) << 21 |
		     (uint32_t)((id[2] - 0x40) & 0x1f) << 16 |
		     hexval(id[3]) << 12 | hexval(id[4]) << 8 | hexval(id[5]) << 4 |
		     hexval(id[6]);
	byte(a, AML_DWORD);
	le(a, __builtin_bswap32(v), 4);
}

void aml_name(struct aml *a, const char *name)
{
	byte(a, AML_NAME);
	aml_name_string(a, name);
}

static size_t pkg_begin(struct aml *a)
{
	size_t mark = a->len;
	le(a, 0, PKGLEN_MAX);
	return mark;
}

/* PkgLength counts itself and what follows up to the end of the object. */
void aml_end(struct aml *a, size_t mark)
{
	if (a->overflow)
		return;
	size_t body = a->len - mark - PKGLEN_MAX;
	unsigned n = body + 1 <= 0x3f ? 1 : body + 2 <= 0xfff ? 2 : body + 3 <= 0xfffff ? 3 : 4;
	size_t total = body + n;
	uint8_t enc[PKGLEN_MAX];

	if (total > 0xfffffff) {
		a->overflow = true;
		return;
	}
	if (n == 1) {
		enc[0] = (uint8_t)total;
	} else {
		enc[0] = (uint8_t)(((n - 1) << 6) | (total & 0xf));
		for (unsigned i = 1; i < n; i++)
			enc[i] = (uint8_t)(total >> (4 + 8 * (i - 1)));
	}
	memmove(a->buf + mark + n, a->buf + mark + PKGLEN_MAX, body);
	memcpy(a->buf + mark, enc, n);
	a->len -= PKGLEN_MAX - n;
}

size_t aml_scope_begin(struct aml *a, const char *name)
{
	byte(a, AML_SCOPE);
	size_t mark = pkg_begin(a);
	aml_name_string(a, name);
	return mark;
}

size_t aml_device_begin(struct aml *a, const char *name)
{
	byte(a, AML_EXT);
	byte(a, AML_DEVICE);
	size_t mark = pkg_begin(a);
	aml_name_string(a, name);
	return mark;
}

size_t aml_package_begin(struct aml *a, unsigned nelems)
{
	byte(a, AML_PACKAGE);
	size_t mark = pkg_begin(a);
	byte(a, (uint8_t)nelems);
	return mark;
}

/* Resource descriptors (ACPI 6.x, section 6.4) */

static void rbytes(struct aml_res *r, const uint8_t *p, size_t n)
{
	if (r->overflow || n > sizeof(r->b) - r->n) {
		r->overflow = true;
		return;
	}
	memcpy(r->b + r->n, p, n);
	r->n += n;
}

static void rle(struct aml_res *r, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		uint8_t b = (uint8_t)(v >> (8 * i));
		rbytes(r, &b, 1);
	}
}

void aml_res_io(struct aml_res *r, uint16_t base, uint8_t len)
{
	const uint8_t hdr[2] = { 0x47, 0x01 };   /* I/O port, 16-bit decode */
	rbytes(r, hdr, 2);
	rle(r, base, 2);   /* minimum */
	rle(r, base, 2);   /* maximum */
	rle(r, 1, 1);      /* alignment */
	rle(r, len, 1);
}

void aml_res_irq(struct aml_res *r, unsigned irq)
{
	rle(r, 0x22, 1);   /* IRQ, no flags: edge, active high, exclusive */
	rle(r, 1u << (irq & 15), 2);
}

void aml_res_mem32_fixed(struct aml_res *r, uint32_t base, uint32_t len)
{
	rle(r, 0x86, 1);
	rle(r, 9, 2);
	rle(r, 1, 1);      /* read/write */
	rle(r, base, 4);
	rle(r, len, 4);
}

/* Address space descriptors: producer, positive decode, min and max fixed */
#define ADDR_FLAGS_PRODUCER_FIXED 0x0c
#define ADDR_TYPE_MEM 0
#define ADDR_TYPE_IO  1
#define ADDR_TYPE_BUS 2

static void word_addr(struct aml_res *r, uint8_t type, uint8_t tflags, uint16_t min,
		      uint16_t max)
{
	rle(r, 0x88, 1);
	rle(r, 13, 2);
	rle(r, type, 1);
	rle(r, ADDR_FLAGS_PRODUCER_FIXED, 1);
	rle(r, tflags, 1);
	rle(r, 0, 2);                          /* granularity */
	rle(r, min, 2);
	rle(r, max, 2);
	rle(r, 0, 2);                          /* translation */
	rle(r, (uint16_t)(max - min + 1), 2);  /* length */
}

void aml_res_bus(struct aml_res *r, uint16_t min, uint16_t max)
{
	word_addr(r, ADDR_TYPE_BUS, 0, min, max);
}

void aml_res_word_io(struct aml_res *r, uint16_t min, uint16_t max)
{
	word_addr(r, ADDR_TYPE_IO, 0x03 /* entire range */, min, max);
}

/* memory type-specific flags: bit 0 read/write, bits 1-2 01 cacheable */
void aml_res_dword_mem(struct aml_res *r, uint32_t min, uint32_t max, bool cacheable)
{
	rle(r, 0x87, 1);
	rle(r, 23, 2);
	rle(r, ADDR_TYPE_MEM, 1);
	rle(r, ADDR_FLAGS_PRODUCER_FIXED, 1);
	rle(r, cacheable ? 0x03 : 0x01, 1);
	rle(r, 0, 4);
	rle(r, min, 4);
	rle(r, max, 4);
	rle(r, 0, 4);
	rle(r, (uint64_t)max - min + 1, 4);
}

void aml_res_qword_mem(struct aml_res *r, uint64_t min, uint64_t max, bool cacheable)
{
	rle(r, 0x8a, 1);
	rle(r, 43, 2);
	rle(r, ADDR_TYPE_MEM, 1);
	rle(r, ADDR_FLAGS_PRODUCER_FIXED, 1);
	rle(r, cacheable ? 0x03 : 0x01, 1);
	rle(r, 0, 8);
	rle(r, min, 8);
	rle(r, max, 8);
	rle(r, 0, 8);
	rle(r, max - min + 1, 8);
}

void aml_res_emit(struct aml *a, struct aml_res *r)
{
	const uint8_t end[2] = { 0x79, 0x00 };   /* end tag, checksum 0 = ignore */
	rbytes(r, end, 2);
	if (r->overflow) {
		a->overflow = true;
		return;
	}
	byte(a, AML_BUFFER);
	size_t mark = pkg_begin(a);
	aml_integer(a, r->n);
	aml_bytes(a, r->b, r->n);
	aml_end(a, mark);
}
