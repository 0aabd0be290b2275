/* The tree itself (a sorted array of name/value pairs), value validation and
 * the typed getters. */
#include "config/config_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct config *config_new(void)
{
	return calloc(1, sizeof(struct config));
}

static void pool_clear(struct config *cfg)
{
	for (size_t i = 0; i < cfg->npool; i++)
		free(cfg->pool[i]);
	cfg->npool = 0;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n; i++) {
		free(cfg->v[i].name);
		free(cfg->v[i].value);
	}
	pool_clear(cfg);
	free(cfg->pool);
	free(cfg->v);
	free(cfg);
}

struct config *config_clone(const struct config *cfg)
{
	struct config *c = config_new();
	if (!c)
		return NULL;
	if (cfg->n) {
		c->v = calloc(cfg->n, sizeof(*c->v));
		if (!c->v)
			goto fail;
		c->cap = cfg->n;
	}
	for (size_t i = 0; i < cfg->n; i++) {
		c->v[i].name = strdup(cfg->v[i].name);
		c->v[i].value = strdup(cfg->v[i].value);
		c->n++;
		if (!c->v[i].name || !c->v[i].value)
			goto fail;
	}
	return c;
fail:
	config_free(c);
	return NULL;
}

bool config_equal(const struct config *a, const struct config *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->v[i].name, b->v[i].name) || strcmp(a->v[i].value, b->v[i].value))
			return false;
	return true;
}

/* Index of name, or of where it would be inserted (*found false). */
static size_t find(const struct config *cfg, const char *name, bool *found)
{
	size_t lo = 0, hi = cfg->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = config_name_cmp(cfg->v[mid].name, name);
		if (r == 0) {
			*found = true;
			return mid;
		}
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

const char *config_get_raw(const struct config *cfg, const char *name)
{
	bool found;
	size_t i = find(cfg, name, &found);
	return found ? cfg->v[i].value : NULL;
}

bool config_is_set(const struct config *cfg, const char *name)
{
	return config_get_raw(cfg, name) != NULL;
}

static int unknown(const char *name, struct terr *err)
{
	char hint[160];

	config_suggest(name, hint, sizeof(hint));
	if (hint[0] && !strcmp(hint, name))
		return terr_set(err, EINVAL, "%s: index out of range (0..%d, no leading zeros)",
				name, CONFIG_MAX_INDEX);
	if (hint[0])
		return terr_set(err, EINVAL, "%s: unknown setting (did you mean %s?)", name, hint);
	return terr_set(err, EINVAL, "%s: unknown setting (tern --help-config lists them)", name);
}

/* Validate UTF-8: shortest forms only, no surrogates, at most U+10FFFF. */
static bool valid_utf8(const unsigned char *s)
{
	while (*s) {
		unsigned c = *s++;
		unsigned need, min;
		uint32_t cp;
		if (c < 0x80)
			continue;
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1, min = 0x80, cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2, min = 0x800, cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3, min = 0x10000, cp = c & 0x07;
		} else {
			return false;
		}
		for (unsigned i = 0; i < need; i++, s++) {
			if ((*s & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (*s & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
	}
	return true;
}

int config_check_chars(const char *name, const char *value, struct terr *err)
{
	size_t len = strlen(value);

	if (len > CONFIG_MAX_VALUE)
		return terr_set(err, EINVAL, "%s: value is too long (%zu bytes, at most %d)",
				name, len, CONFIG_MAX_VALUE);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f)
			return terr_set(err, EINVAL, "%s: value contains a control character "
					"(newlines and tabs are not allowed)", name);
	if (len && (value[0] == ' ' || value[len - 1] == ' '))
		return terr_set(err, EINVAL, "%s: value \"%s\" has leading or trailing spaces",
				name, value);
	if (!valid_utf8((const unsigned char *)value))
		return terr_set(err, EINVAL, "%s: value is not valid UTF-8", name);
	return 0;
}

void config_fmt_size(uint64_t v, char *buf, size_t size)
{
	static const char suffix[] = "KMGT";
	int s = -1;
	while (s < 3 && v && v % 1024 == 0) {
		v /= 1024;
		s++;
	}
	if (s < 0)
		snprintf(buf, size, "%llu", (unsigned long long)v);
	else
		snprintf(buf, size, "%llu%c", (unsigned long long)v, suffix[s]);
}

static bool parse_size(const char *s, uint64_t *out, bool *overflow)
{
	uint64_t v = 0;
	const char *p = s;

	*overflow = false;
	if (!isdigit((unsigned char)*p))
		return false;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			*overflow = true;
		else
			v = v * 10 + d;
	}
	unsigned shift = 0;
	if (*p) {
		const char *sx = strchr("KMGT", toupper((unsigned char)*p));
		if (!sx || p[1])
			return false;
		shift = 10 * (unsigned)(sx - "KMGT" + 1);
	}
	if (shift && v > (UINT64_MAX >> shift))
		*overflow = true;
	*out = v << shift;
	return true;
}

static bool parse_int(const char *s, int64_t *out)
{
	bool neg = *s == '-';
	const char *p = s + neg;
	int base = 10;
	uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;

	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	}
	if (!*p)
		return false;
	for (; *p; p++) {
		unsigned d;
		if (isdigit((unsigned char)*p))
			d = (unsigned)(*p - '0');
		else if (base == 16 && isxdigit((unsigned char)*p))
			d = (unsigned)(tolower((unsigned char)*p) - 'a' + 10);
		else
			return false;
		if (v > (lim - d) / (unsigned)base)
			v = lim + 1;  /* saturate: out of range */
		else
			v = v * (unsigned)base + d;
	}
	if (v > lim) {
		*out = neg ? INT64_MIN : INT64_MAX;
		return true;   /* caller reports range */
	}
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return true;
}

static bool parse_mac(const char *s, uint8_t mac[6])
{
	for (int i = 0; i < 6; i++) {
		if (!isxdigit((unsigned char)s[0]) || !isxdigit((unsigned char)s[1]))
			return false;
		char hex[3] = { s[0], s[1], 0 };
		mac[i] = (uint8_t)strtoul(hex, NULL, 16);
		s += 2;
		if (i < 5 && *s++ != ':')
			return false;
	}
	return *s == '\0';
}

int config_parse_value(const struct config_decl *d, const char *name, const char *value,
		       const char *shown, struct config_parsed *out, struct terr *err)
{
	static const char *const bools[] = { "true", "false", "yes", "no", "on", "off", "1", "0" };
	struct config_parsed tmp;
	char q[300];
	char a[32], b[32];

	if (!out)
		out = &tmp;
	/* how the value appears in messages */
	if (shown && strcmp(shown, value))
		snprintf(q, sizeof(q), "\"%.100s\" (from \"%.100s\")", value, shown);
	else
		snprintf(q, sizeof(q), "\"%.200s\"", value);

	switch (d->type) {
	case CONFIG_BOOL:
		for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++)
			if (!strcasecmp(value, bools[i])) {
				out->b = i % 2 == 0;
				return 0;
			}
		return terr_set(err, EINVAL, "%s: %s is not a bool (expected true/false, yes/no, on/off, 1/0)",
				name, q);
	case CONFIG_INT:
		if (!parse_int(value, &out->i))
			return terr_set(err, EINVAL, "%s: %s is not an integer (expected %lld..%lld)",
					name, q, (long long)d->min, (long long)d->max);
		if (out->i < d->min || out->i > d->max)
			return terr_set(err, ERANGE, "%s: %s is out of range (expected %lld..%lld)",
					name, q, (long long)d->min, (long long)d->max);
		return 0;
	case CONFIG_SIZE: {
		bool overflow;
		if (!parse_size(value, &out->size, &overflow))
			return terr_set(err, EINVAL, "%s: %s is not a size (examples: 512M, 2G)", name, q);
		if (overflow)
			return terr_set(err, ERANGE, "%s: %s is too large (more than 64 bits)", name, q);
		config_fmt_size((uint64_t)d->min, a, sizeof(a));
		config_fmt_size((uint64_t)d->max, b, sizeof(b));
		if (out->size < (uint64_t)d->min)
			return terr_set(err, ERANGE, "%s: %s is too small (at least %s)", name, q, a);
		if (d->max && out->size > (uint64_t)d->max)
			return terr_set(err, ERANGE, "%s: %s is too large (at most %s)", name, q, b);
		return 0;
	}
	case CONFIG_PATH:
		if (!*value)
			return terr_set(err, EINVAL, "%s: %s is not a path (expected a file name)", name, q);
		return 0;
	case CONFIG_ENUM: {
		char list[200];
		size_t o = 0;
		list[0] = '\0';
		for (unsigned i = 0; d->values[i]; i++) {
			if (!strcmp(value, d->values[i])) {
				out->index = i;
				return 0;
			}
			int r = snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", d->values[i]);
			if (r > 0 && (size_t)r < sizeof(list) - o)
				o += (size_t)r;
		}
		return terr_set(err, EINVAL, "%s: %s is not one of: %s", name, q, list);
	}
	case CONFIG_STRING:
		if (d->check && !d->check(value))
			return terr_set(err, EINVAL, "%s: %s is not valid (expected %s)", name, q, d->expect);
		return 0;
	case CONFIG_MAC:
		if (!parse_mac(value, out->mac))
			return terr_set(err, EINVAL, "%s: %s is not a MAC address "
					"(expected six hex pairs like 52:54:00:12:34:56)", name, q);
		if (out->mac[0] & 1)
			return terr_set(err, EINVAL, "%s: %s is a multicast address "
					"(expected a unicast MAC address)", name, q);
		return 0;
	}
	return terr_set(err, EINVAL, "%s: bad declaration", name);
}

static void invalidate(struct config *cfg)
{
	pool_clear(cfg);
}

int config_set(struct config *cfg, const char *name, const char *value, struct terr *err)
{
	const struct config_decl *d = config_find_decl(name);
	bool has_ref, found;
	int r;

	if (!d)
		return unknown(name, err);
	r = config_check_chars(name, value, err);
	if (r < 0)
		return r;
	r = config_check_refs(name, value, &has_ref, err);
	if (r < 0)
		return r;
	if (!has_ref) {
		/* no reference: the value is known now, check it now */
		char *plain = strchr(value, '%') ? config_unescape(value) : NULL;
		if (strchr(value, '%') && !plain)
			return terr_set(err, ENOMEM, "%s: out of memory", name);
		r = config_parse_value(d, name, plain ? plain : value, value, NULL, err);
		free(plain);
		if (r < 0)
			return r;
	}

	char *v = strdup(value);
	if (!v)
		return terr_set(err, ENOMEM, "%s: out of memory", name);
	size_t i = find(cfg, name, &found);
	if (found) {
		free(cfg->v[i].value);
		cfg->v[i].value = v;
		invalidate(cfg);
		return 0;
	}
	char *nm = strdup(name);
	if (!nm)
		goto nomem;
	if (cfg->n == cfg->cap) {
		size_t cap = cfg->cap ? cfg->cap * 2 : 16;
		struct config_entry *nv = realloc(cfg->v, cap * sizeof(*nv));
		if (!nv)
			goto nomem;
		cfg->v = nv;
		cfg->cap = cap;
	}
	memmove(&cfg->v[i + 1], &cfg->v[i], (cfg->n - i) * sizeof(*cfg->v));
	cfg->v[i].name = nm;
	cfg->v[i].value = v;
	cfg->n++;
	invalidate(cfg);
	return 0;
nomem:
	free(nm);
	free(v);
	return terr_set(err, ENOMEM, "%s: out of memory", name);
}

int config_unset(struct config *cfg, const char *name)
{
	bool found;
	size_t i = find(cfg, name, &found);
	if (!found)
		return -ENOENT;
	free(cfg->v[i].name);
	free(cfg->v[i].value);
	memmove(&cfg->v[i], &cfg->v[i + 1], (cfg->n - i - 1) * sizeof(*cfg->v));
	cfg->n--;
	invalidate(cfg);
	return 0;
}

/* Look up, expand and validate name. *s: the expanded value (malloc'd, or
 * NULL when neither set nor defaulted); caller frees. */
static int get_common(struct config *cfg, const char *name, enum config_type want, bool any,
		      char **s, struct config_parsed *p, struct terr *err)
{
	const struct config_decl *d = config_find_decl(name);
	int r;

	*s = NULL;
	if (!d)
		return unknown(name, err);
	if (!any && d->type != want)
		return terr_set(err, EINVAL, "%s: is of type %s, read as %s (program error)", name,
				config_type_name(d->type), config_type_name(want));
	r = config_expand(cfg, name, s, err);
	if (r < 0)
		return r;
	if (!*s)
		return 0;
	const char *raw = config_get_raw(cfg, name);
	r = config_parse_value(d, name, *s, raw ? raw : d->def, p, err);
	if (r < 0) {
		free(*s);
		*s = NULL;
	}
	return r;
}

static int not_set(const char *name, struct terr *err)
{
	return terr_set(err, ENOENT, "%s: not set and has no default", name);
}

/* Hand out s: the stored string when expansion changed nothing, else keep
 * s in the pool until the next change. */
static int hand_out(struct config *cfg, const char *name, char *s, const char **out, struct terr *err)
{
	const char *raw = config_get_raw(cfg, name);
	const struct config_decl *d = config_find_decl(name);
	const char *src = raw ? raw : d->def;

	if (!s) {
		*out = NULL;
		return 0;
	}
	if (src && !strcmp(src, s)) {
		free(s);
		*out = src;
		return 0;
	}
	if (cfg->npool == cfg->cappool) {
		size_t cap = cfg->cappool ? cfg->cappool * 2 : 8;
		char **np = realloc(cfg->pool, cap * sizeof(*np));
		if (!np) {
			free(s);
			return terr_set(err, ENOMEM, "%s: out of memory", name);
		}
		cfg->pool = np;
		cfg->cappool = cap;
	}
	cfg->pool[cfg->npool++] = s;
	*out = s;
	return 0;
}

int config_get_str(struct config *cfg, const char *name, const char **out, struct terr *err)
{
	char *s;
	int r = get_common(cfg, name, CONFIG_STRING, true, &s, NULL, err);
	*out = NULL;
	if (r < 0)
		return r;
	return hand_out(cfg, name, s, out, err);
}

int config_get_path(struct config *cfg, const char *name, const char **out, struct terr *err)
{
	char *s;
	int r = get_common(cfg, name, CONFIG_PATH, false, &s, NULL, err);
	*out = NULL;
	if (r < 0)
		return r;
	return hand_out(cfg, name, s, out, err);
}

#define SCALAR_GETTER(fn, T, type, ...)                                   \
	int fn(struct config *cfg, const char *name, T, struct terr *err)        \
	{                                                                        \
		struct config_parsed p;                                          \
		char *s;                                                         \
		int r = get_common(cfg, name, type, false, &s, &p, err);         \
		if (r < 0)                                                       \
			return r;                                                \
		if (!s)                                                          \
			return not_set(name, err);                               \
		free(s);                                                         \
		__VA_ARGS__;                                                     \
		return 0;                                                        \
	}

SCALAR_GETTER(config_get_bool, bool *out, CONFIG_BOOL, *out = p.b)
SCALAR_GETTER(config_get_int, int64_t *out, CONFIG_INT, *out = p.i)
SCALAR_GETTER(config_get_size, uint64_t *out, CONFIG_SIZE, *out = p.size)
SCALAR_GETTER(config_get_enum, unsigned *out, CONFIG_ENUM, *out = p.index)
SCALAR_GETTER(config_get_mac, uint8_t mac[6], CONFIG_MAC, memcpy(mac, p.mac, 6))

int config_check(struct config *cfg, struct terr *err)
{
	for (size_t i = 0; i < cfg->n; i++) {
		const char *s;
		int r = config_get_str(cfg, cfg->v[i].name, &s, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static bool has_prefix(const char *name, const char *prefix)
{
	size_t l = strlen(prefix);
	return !strncmp(name, prefix, l) && (name[l] == '\0' || name[l] == '.');
}

int config_foreach(const struct config *cfg, const char *prefix,
		   int (*fn)(const char *name, const char *raw, void *opaque), void *opaque)
{
	for (size_t i = 0; i < cfg->n; i++) {
		if (prefix && *prefix && !has_prefix(cfg->v[i].name, prefix))
			continue;
		int r = fn(cfg->v[i].name, cfg->v[i].value, opaque);
		if (r)
			return r;
	}
	return 0;
}

size_t config_indices(const struct config *cfg, const char *base, unsigned *out, size_t max)
{
	size_t count = 0, bl = strlen(base);
	long last = -1;

	for (size_t i = 0; i < cfg->n; i++) {
		const char *nm = cfg->v[i].name;
		if (strncmp(nm, base, bl) || nm[bl] != '.' || !isdigit((unsigned char)nm[bl + 1]))
			continue;
		char *end;
		long idx = strtol(nm + bl + 1, &end, 10);
		if (*end != '.' || idx == last)
			continue;
		last = idx;   /* names sort numerically, so indices come ascending */
		if (count < max)
			out[count] = (unsigned)idx;
		count++;
	}
	return count;
}

int config_fill_defaults(struct config *cfg, struct terr *err)
{
	size_t nd;
	const struct config_decl *decls = config_decls(&nd);
	char name[128];
	int r;

	for (size_t i = 0; i < nd; i++) {
		const struct config_decl *d = &decls[i];
		const char *n = strstr(d->pattern, ".N.");
		if (!d->def)
			continue;
		if (!n) {
			if (!config_is_set(cfg, d->pattern) && (r = config_set(cfg, d->pattern, d->def, err)) < 0)
				return r;
			continue;
		}
		char base[64];
		snprintf(base, sizeof(base), "%.*s", (int)(n - d->pattern), d->pattern);
		unsigned idx[CONFIG_MAX_INDEX + 1];
		size_t cnt = config_indices(cfg, base, idx, CONFIG_MAX_INDEX + 1);
		for (size_t k = 0; k < cnt; k++) {
			snprintf(name, sizeof(name), "%s.%u.%s", base, idx[k], n + 3);
			if (!config_is_set(cfg, name) && (r = config_set(cfg, name, d->def, err)) < 0)
				return r;
		}
	}
	return 0;
}
