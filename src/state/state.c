#include "state/state.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void sw_init(struct state_writer *w)
{
	memset(w, 0, sizeof(*w));
}

void sw_free(struct state_writer *w)
{
	free(w->buf);
	memset(w, 0, sizeof(*w));
}

static uint8_t *sw_reserve(struct state_writer *w, size_t n)
{
	if (w->err)
		return NULL;
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		while (cap < w->len + n)
			cap *= 2;
		uint8_t *p = realloc(w->buf, cap);
		if (!p) {
			w->err = -ENOMEM;
			return NULL;
		}
		w->buf = p;
		w->cap = cap;
	}
	uint8_t *p = w->buf + w->len;
	w->len += n;
	return p;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void sw_field(struct state_writer *w, uint8_t type, const char *name,
		     const void *v, size_t len)
{
	size_t nl = strlen(name);
	if (nl == 0 || nl > 255 || len > UINT32_MAX) {
		w->err = w->err ? w->err : -EINVAL;
		return;
	}
	uint8_t *p = sw_reserve(w, 2 + nl + 4 + len);
	if (!p)
		return;
	p[0] = type;
	p[1] = (uint8_t)nl;
	memcpy(p + 2, name, nl);
	put_le32(p + 2 + nl, (uint32_t)len);
	if (len)
		memcpy(p + 6 + nl, v, len);
}

void sw_uint(struct state_writer *w, const char *name, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	sw_field(w, STATE_UINT, name, b, 8);
}

void sw_bytes(struct state_writer *w, const char *name, const void *p, size_t len)
{
	sw_field(w, STATE_BYTES, name, p, len);
}

void sw_str(struct state_writer *w, const char *name, const char *s)
{
	sw_field(w, STATE_STR, name, s, strlen(s));
}

void sw_blob(struct state_writer *w, const char *name, const struct state_writer *inner)
{
	if (inner->err) {
		w->err = w->err ? w->err : inner->err;
		return;
	}
	sw_field(w, STATE_BYTES, name, inner->buf, inner->len);
}

int sr_init(struct state_reader *r, const void *buf, size_t len, const char *what,
	    struct terr *err)
{
	const uint8_t *p = buf;
	size_t off = 0, cap = 0;

	memset(r, 0, sizeof(*r));
	r->what = what;
	while (off < len) {
		if (len - off < 2)
			goto trunc;
		uint8_t type = p[off], nl = p[off + 1];
		if (type < STATE_UINT || type > STATE_STR)
			return sr_free(r), terr_set(err, EINVAL, "%s: field at byte %zu has unknown type %u",
						    what, off, type);
		if (nl == 0)
			return sr_free(r), terr_set(err, EINVAL, "%s: field at byte %zu has an empty name",
						    what, off);
		if (len - off - 2 < (size_t)nl + 4)
			goto trunc;
		const uint8_t *lp = p + off + 2 + nl;
		uint32_t vl = (uint32_t)lp[0] | (uint32_t)lp[1] << 8 | (uint32_t)lp[2] << 16 |
			      (uint32_t)lp[3] << 24;
		if (len - off - 6 - nl < vl)
			goto trunc;
		if (type == STATE_UINT && vl != 8)
			return sr_free(r), terr_set(err, EINVAL, "%s: integer field '%.*s' has length %u, not 8",
						    what, nl, (const char *)p + off + 2, vl);
		if (r->nfields == cap) {
			cap = cap ? cap * 2 : 16;
			struct state_field *f = realloc(r->fields, cap * sizeof(*f));
			if (!f) {
				sr_free(r);
				return terr_set(err, ENOMEM, "%s: out of memory", what);
			}
			r->fields = f;
		}
		struct state_field fld = {
			.name = (const char *)p + off + 2, .name_len = nl, .type = type,
			.len = vl, .data = lp + 4,
		};
		for (size_t i = 0; i < r->nfields; i++)
			if (r->fields[i].name_len == nl && !memcmp(r->fields[i].name, fld.name, nl)) {
				sr_free(r);
				return terr_set(err, EINVAL, "%s: field '%.*s' appears twice", what, nl, fld.name);
			}
		r->fields[r->nfields++] = fld;
		off += 6 + (size_t)nl + vl;
	}
	return 0;
trunc:
	sr_free(r);
	return terr_set(err, EINVAL, "%s: field at byte %zu runs past the end of the state (%zu bytes)",
			what, off, len);
}

void sr_free(struct state_reader *r)
{
	free(r->fields);
	r->fields = NULL;
	r->nfields = 0;
}

const struct state_field *sr_find(const struct state_reader *r, const char *name)
{
	size_t nl = strlen(name);
	for (size_t i = 0; i < r->nfields; i++)
		if (r->fields[i].name_len == nl && !memcmp(r->fields[i].name, name, nl))
			return &r->fields[i];
	return NULL;
}

int sr_uint(const struct state_reader *r, const char *name, uint64_t def, uint64_t *out,
	    struct terr *err)
{
	const struct state_field *f = sr_find(r, name);
	if (!f) {
		*out = def;
		return 0;
	}
	if (f->type != STATE_UINT)
		return terr_set(err, EINVAL, "%s: field '%s' is not an integer", r->what, name);
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | f->data[i];
	*out = v;
	return 0;
}

int sr_uint_max(const struct state_reader *r, const char *name, uint64_t def, uint64_t max,
		uint64_t *out, struct terr *err)
{
	int ret = sr_uint(r, name, def, out, err);
	if (ret)
		return ret;
	if (*out > max)
		return terr_set(err, ERANGE, "%s: field '%s' is %llu, above its limit %llu", r->what,
				name, (unsigned long long)*out, (unsigned long long)max);
	return 0;
}

int sr_bytes_exact(const struct state_reader *r, const char *name, void *dst, size_t len,
		   struct terr *err)
{
	const struct state_field *f = sr_find(r, name);
	if (!f)
		return 0;
	if (f->type == STATE_UINT || f->len != len)
		return terr_set(err, EINVAL, "%s: field '%s' has %u bytes, expected %zu", r->what,
				name, f->len, len);
	memcpy(dst, f->data, len);
	return 0;
}

int sr_bytes(const struct state_reader *r, const char *name, const void **out, size_t *len,
	     struct terr *err)
{
	const struct state_field *f = sr_find(r, name);
	*out = NULL;
	*len = 0;
	if (!f)
		return 0;
	if (f->type == STATE_UINT)
		return terr_set(err, EINVAL, "%s: field '%s' is an integer, expected bytes", r->what, name);
	*out = f->data;
	*len = f->len;
	return 0;
}
