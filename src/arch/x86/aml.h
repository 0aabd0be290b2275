/* A tiny ACPI Machine Language encoder: just what tern's DSDT needs (names,
 * integers, strings, EISA ids, scopes, devices, packages, buffers and
 * resource templates). Writes into a caller buffer; running out of room sets
 * `overflow` instead of writing past the end, so callers check once at the
 * end. Nested objects are opened with *_begin, which returns a mark, and
 * closed with aml_end(mark), which fills in the PkgLength. */
#ifndef TERN_ARCH_X86_AML_H
#define TERN_ARCH_X86_AML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aml {
	uint8_t *buf;
	size_t len, cap;
	bool overflow;
};

void aml_init(struct aml *a, uint8_t *buf, size_t cap);
void aml_bytes(struct aml *a, const void *p, size_t n);

/* "\\_SB.PCI0", "_HID", "^FOO": root/parent prefixes, dotted 4-char segments
 * (shorter ones padded with '_'). */
void aml_name_string(struct aml *a, const char *path);
void aml_integer(struct aml *a, uint64_t v);       /* smallest encoding */
void aml_string(struct aml *a, const char *s);
void aml_eisaid(struct aml *a, const char *id);    /* "PNP0A08" as a DWord */

/* Name(name, <object>): the object follows with aml_integer/... */
void aml_name(struct aml *a, const char *name);

size_t aml_scope_begin(struct aml *a, const char *name);
size_t aml_device_begin(struct aml *a, const char *name);
size_t aml_package_begin(struct aml *a, unsigned nelems);   /* nelems <= 255 */
void aml_end(struct aml *a, size_t mark);

/* Resource templates, built separately and then emitted as a Buffer. */
struct aml_res {
	uint8_t b[512];
	size_t n;
	bool overflow;
};

void aml_res_io(struct aml_res *r, uint16_t base, uint8_t len);   /* IO(Decode16) fixed */
void aml_res_irq(struct aml_res *r, unsigned irq);                 /* IRQNoFlags */
void aml_res_mem32_fixed(struct aml_res *r, uint32_t base, uint32_t len);
void aml_res_bus(struct aml_res *r, uint16_t min, uint16_t max);   /* WordBusNumber */
void aml_res_word_io(struct aml_res *r, uint16_t min, uint16_t max);
void aml_res_dword_mem(struct aml_res *r, uint32_t min, uint32_t max, bool cacheable);
void aml_res_qword_mem(struct aml_res *r, uint64_t min, uint64_t max, bool cacheable);
/* Append the end tag and emit Buffer(){...} into a. */
void aml_res_emit(struct aml *a, struct aml_res *r);

#endif
