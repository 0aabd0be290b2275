#include "control/protocol.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- line framing ---------------------------------------------------- */

void control_linebuf_init(struct control_linebuf *lb, size_t limit)
{
	memset(lb, 0, sizeof(*lb));
	lb->limit = limit;
}

void control_linebuf_free(struct control_linebuf *lb)
{
	free(lb->buf);
	memset(lb, 0, sizeof(*lb));
}

static void linebuf_drop_all(struct control_linebuf *lb)
{
	lb->start = lb->len = lb->scanned = 0;
}

int control_linebuf_feed(struct control_linebuf *lb, const void *data, size_t n)
{
	if (lb->start > 0) {
		memmove(lb->buf, lb->buf + lb->start, lb->len - lb->start);
		lb->len -= lb->start;
		lb->start = 0;
	}
	if (lb->len == 0 && lb->cap > 256 * 1024) {
		/* give back the memory of a long line once it is gone */
		free(lb->buf);
		lb->buf = NULL;
		lb->cap = 0;
	}
	if (lb->len + n + 1 > lb->cap) {
		size_t cap = lb->cap ? lb->cap : 4096;
		while (cap < lb->len + n + 1)
			cap *= 2;
		char *b = realloc(lb->buf, cap);
		if (!b)
			return -ENOMEM;
		lb->buf = b;
		lb->cap = cap;
	}
	if (n)
		memcpy(lb->buf + lb->len, data, n);
	lb->len += n;
	return 0;
}

int control_linebuf_next(struct control_linebuf *lb, char **line, size_t *len)
{
	for (;;) {
		if (!lb->buf)
			return CONTROL_LINE_NONE;
		char *p = lb->buf + lb->start;
		size_t avail = lb->len - lb->start;
		char *nl = memchr(p + lb->scanned, '\n', avail - lb->scanned);
		if (!nl) {
			lb->scanned = avail;
			if (lb->skipping) {
				linebuf_drop_all(lb);
				return CONTROL_LINE_NONE;
			}
			if (avail > lb->limit) {
				lb->skipping = true;
				linebuf_drop_all(lb);
				return CONTROL_LINE_TOO_LONG;
			}
			return CONTROL_LINE_NONE;
		}
		size_t n = (size_t)(nl - p);
		lb->start += n + 1;
		lb->scanned = 0;
		if (lb->skipping) {
			lb->skipping = false;
			continue;
		}
		if (n > lb->limit)
			return CONTROL_LINE_TOO_LONG;
		*nl = '\0';
		if (n && p[n - 1] == '\r')
			p[--n] = '\0';
		*line = p;
		*len = n;
		return CONTROL_LINE_OK;
	}
}

size_t control_linebuf_pending(const struct control_linebuf *lb)
{
	return lb->skipping ? 0 : lb->len - lb->start;
}

bool control_line_is_blank(const char *line, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (line[i] != ' ' && line[i] != '\t')
			return false;
	return true;
}

/* ---- text ------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;      /* no surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

void control_sanitize(char *dst, size_t n, const char *src)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t left = strlen(src), o = 0;
	while (left) {
		size_t k = utf8_len(s, left);
		if (k == 0) {
			if (o + 1 >= n)
				break;
			dst[o++] = '?';
			s++;
			left--;
			continue;
		}
		if (o + k >= n)
			break;
		if (k == 1 && (*s < 0x20 || *s == 0x7f))
			dst[o++] = ' ';
		else
			memcpy(dst + o, s, k), o += k;
		s += k;
		left -= k;
	}
	dst[o] = '\0';
}

static const char *type_name(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	case JSON_NULL: return "null";
	}
	return "something else";
}

/* ---- requests -------------------------------------------------------- */

static int fail(const char **code, const char *c, char *msg, size_t msgsz, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static int fail(const char **code, const char *c, char *msg, size_t msgsz, const char *fmt, ...)
{
	char raw[CONTROL_MAX_MESSAGE];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	control_sanitize(msg, msgsz, raw);
	*code = c;
	return -1;
}

int control_parse_request(const char *line, size_t len, struct control_request *r,
			  const char **code, char *msg, size_t msgsz)
{
	json_error_t je;
	memset(r, 0, sizeof(*r));
	r->root = json_loadb(line, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
	if (!r->root)
		return fail(code, CONTROL_E_BAD_REQUEST, msg, msgsz,
			    "malformed JSON at byte %d: %s", je.position, je.text);
	if (!json_is_object(r->root))
		return fail(code, CONTROL_E_BAD_REQUEST, msg, msgsz,
			    "a request is a JSON object {\"id\", \"cmd\", \"args\"}, not %s",
			    type_name(r->root));
	r->id = json_object_get(r->root, "id");
	const char *key;
	json_t *val;
	json_object_foreach(r->root, key, val) {
		if (strcmp(key, "id") && strcmp(key, "cmd") && strcmp(key, "args"))
			return fail(code, CONTROL_E_BAD_REQUEST, msg, msgsz,
				    "unknown key \"%.64s\" in the request (a request has \"id\", \"cmd\" and \"args\")",
				    key);
	}
	json_t *cmd = json_object_get(r->root, "cmd");
	if (!cmd)
		return fail(code, CONTROL_E_BAD_REQUEST, msg, msgsz,
			    "the request has no \"cmd\" (try {\"cmd\": \"commands\"})");
	if (!json_is_string(cmd))
		return fail(code, CONTROL_E_BAD_REQUEST, msg, msgsz,
			    "\"cmd\" must be a string, not %s", type_name(cmd));
	json_t *args = json_object_get(r->root, "args");
	if (!args || json_is_null(args)) {
		args = json_object();
		if (!args || json_object_set_new(r->root, "args", args))
			return fail(code, CONTROL_E_FAILED, msg, msgsz, "out of memory");
	} else if (!json_is_object(args)) {
		return fail(code, CONTROL_E_BAD_REQUEST, msg, msgsz,
			    "\"args\" must be an object, not %s", type_name(args));
	}
	r->cmd = json_string_value(cmd);
	r->args = args;
	return 0;
}

void control_request_clear(struct control_request *r)
{
	json_decref(r->root);
	memset(r, 0, sizeof(*r));
}

bool control_cmd_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > CONTROL_MAX_CMD || name[0] < 'a' || name[0] > 'z')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return false;
	}
	return true;
}

/* ---- replies and events ---------------------------------------------- */

static char *dump_line(json_t *obj, size_t *len)
{
	if (!obj)
		return NULL;
	char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(obj);
	if (!s)
		return NULL;
	size_t n = strlen(s);
	char *t = realloc(s, n + 2);
	if (!t) {
		free(s);
		return NULL;
	}
	t[n] = '\n';
	t[n + 1] = '\0';
	if (len)
		*len = n + 1;
	return t;
}

/* {"id": id} with id null when absent */
static json_t *reply_base(json_t *id)
{
	json_t *o = json_object();
	if (o && json_object_set(o, "id", id ? id : json_null())) {
		json_decref(o);
		return NULL;
	}
	return o;
}

char *control_format_ok(json_t *id, json_t *result, size_t *len)
{
	json_t *o = reply_base(id);
	if (!o)
		return NULL;
	json_t *res = result ? json_incref(result) : json_object();
	if (!res || json_object_set_new(o, "ok", res)) {
		json_decref(o);
		return NULL;
	}
	return dump_line(o, len);
}

char *control_format_error(json_t *id, const char *code, const char *message, size_t *len)
{
	char c[CONTROL_MAX_CMD + 1], m[CONTROL_MAX_MESSAGE];
	control_sanitize(c, sizeof(c), code ? code : CONTROL_E_FAILED);
	control_sanitize(m, sizeof(m), message ? message : "");
	json_t *o = reply_base(id);
	if (!o)
		return NULL;
	json_t *e = json_pack("{s:s, s:s}", "code", c, "message", m);
	if (!e || json_object_set_new(o, "error", e)) {
		json_decref(o);
		return NULL;
	}
	return dump_line(o, len);
}

char *control_format_event(const char *name, json_t *data, size_t *len)
{
	char n[CONTROL_MAX_CMD + 1];
	control_sanitize(n, sizeof(n), name);
	json_t *d = data ? json_incref(data) : json_object();
	json_t *o = json_pack("{s:s, s:o}", "event", n, "data", d);
	return dump_line(o, len);
}

/* ---- arguments ------------------------------------------------------- */

int control_args_known(json_t *args, const char *const *known, char *msg, size_t msgsz)
{
	const char *key;
	json_t *val;
	json_object_foreach(args, key, val) {
		bool ok = false;
		for (const char *const *k = known; *k; k++)
			if (!strcmp(key, *k))
				ok = true;
		if (ok)
			continue;
		char list[256] = "";
		size_t o = 0;
		for (const char *const *k = known; *k && o < sizeof(list); k++)
			o += (size_t)snprintf(list + o, sizeof(list) - o, "%s\"%s\"",
					      k == known ? "" : ", ", *k);
		const char *c;
		if (!known[0])
			return fail(&c, CONTROL_E_BAD_ARGS, msg, msgsz,
				    "unknown argument \"%.64s\" (this command takes none)", key);
		return fail(&c, CONTROL_E_BAD_ARGS, msg, msgsz,
			    "unknown argument \"%.64s\" (known: %s)", key, list);
	}
	return 0;
}

static const char *want_name(json_type t)
{
	switch (t) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	case JSON_NULL: return "null";
	}
	return "?";
}

int control_arg(json_t *args, const char *key, json_type type, bool required,
		json_t **out, char *msg, size_t msgsz)
{
	const char *c;
	json_t *v = json_object_get(args, key);
	*out = NULL;
	if (!v || (json_is_null(v) && type != JSON_NULL)) {
		if (required)
			return fail(&c, CONTROL_E_BAD_ARGS, msg, msgsz,
				    "missing argument \"%s\" (%s)", key, want_name(type));
		return 0;
	}
	bool ok;
	switch (type) {
	case JSON_TRUE:
	case JSON_FALSE: ok = json_is_boolean(v); break;
	case JSON_REAL: ok = json_is_number(v); break;
	default: ok = json_typeof(v) == type; break;
	}
	if (!ok)
		return fail(&c, CONTROL_E_BAD_ARGS, msg, msgsz,
			    "argument \"%s\" must be %s, not %s", key, want_name(type), type_name(v));
	*out = v;
	return 0;
}
