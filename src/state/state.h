/* Tagged-field state codec: how every device, vCPU and VM-wide component
 * writes its state. A blob is a sequence of fields
 *
 *     u8 type | u8 name_len | name bytes | u32 value_len (LE) | value bytes
 *
 * Types: STATE_UINT (value is 8 bytes LE), STATE_BYTES, STATE_STR (UTF-8, no
 * NUL). A reader indexes the fields once, then looks them up by name, so
 * fields it does not know are skipped and fields that are missing take the
 * caller's default. Snapshot files, the migration stream and the JSON view
 * all carry these blobs (see docs/snapshot-format.md). */
#ifndef TERN_STATE_STATE_H
#define TERN_STATE_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

enum state_type { STATE_UINT = 1, STATE_BYTES = 2, STATE_STR = 3 };

struct state_writer {
	uint8_t *buf;
	size_t len, cap;
	int err;            /* sticky -ENOMEM; checked once at the end */
};

void sw_init(struct state_writer *w);
void sw_free(struct state_writer *w);
void sw_uint(struct state_writer *w, const char *name, uint64_t v);
void sw_bytes(struct state_writer *w, const char *name, const void *p, size_t len);
void sw_str(struct state_writer *w, const char *name, const char *s);
/* A nested blob: the fields written into `inner`, stored as one BYTES field. */
void sw_blob(struct state_writer *w, const char *name, const struct state_writer *inner);

struct state_field {
	const char *name;   /* not NUL-terminated */
	uint8_t name_len;
	uint8_t type;
	uint32_t len;
	const uint8_t *data;
};

struct state_reader {
	struct state_field *fields;
	size_t nfields;
	const char *what;   /* "uart.0", for error messages */
};

/* Index a blob. Malformed framing (a field running past the end, a zero-length
 * name, a UINT whose length is not 8, a duplicated name) is an error naming
 * `what` and the byte offset. The reader points into buf: keep buf alive. */
int sr_init(struct state_reader *r, const void *buf, size_t len, const char *what,
	    struct terr *err);
void sr_free(struct state_reader *r);

const struct state_field *sr_find(const struct state_reader *r, const char *name);
/* UINT field or `def` when absent. A field of another type is an error. */
int sr_uint(const struct state_reader *r, const char *name, uint64_t def, uint64_t *out,
	    struct terr *err);
/* As sr_uint, and the value must be <= max. */
int sr_uint_max(const struct state_reader *r, const char *name, uint64_t def, uint64_t max,
		uint64_t *out, struct terr *err);
/* Copy a BYTES field of exactly `len` bytes into dst; absent: dst untouched,
 * returns 0 (caller has put the default there); wrong size: error. */
int sr_bytes_exact(const struct state_reader *r, const char *name, void *dst, size_t len,
		   struct terr *err);
/* Pointer and length of a BYTES or STR field; *out = NULL and *len = 0 when
 * absent; an integer field of that name is an error. */
int sr_bytes(const struct state_reader *r, const char *name, const void **out, size_t *len,
	     struct terr *err);

#endif
