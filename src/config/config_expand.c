/* %(name) expansion when a value is read; %% is a literal %. The result of
 * an expansion is not scanned again. */
#include "config/config_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 16

int config_check_refs(const char *name, const char *value, bool *has_ref, struct terr *err)
{
	*has_ref = false;
	for (const char *p = value; (p = strchr(p, '%')); ) {
		if (p[1] == '%') {
			p += 2;
			continue;
		}
		if (p[1] != '(')
			return terr_set(err, EINVAL, "%s: \"%.200s\" has a lone %% (write %%%% for a literal %%)",
					name, value);
		const char *close = strchr(p + 2, ')');
		if (!close)
			return terr_set(err, EINVAL, "%s: \"%.200s\" has an unterminated %%(", name, value);
		char ref[128];
		size_t len = (size_t)(close - p - 2);
		if (len >= sizeof(ref))
			len = sizeof(ref) - 1;
		memcpy(ref, p + 2, len);
		ref[len] = '\0';
		if (!config_find_decl(ref)) {
			char hint[160];
			config_suggest(ref, hint, sizeof(hint));
			if (hint[0] && strcmp(hint, ref))
				return terr_set(err, EINVAL, "%s: %%(%s) refers to an unknown setting (did you mean %s?)",
						name, ref, hint);
			return terr_set(err, EINVAL, "%s: %%(%s) refers to an unknown setting", name, ref);
		}
		*has_ref = true;
		p = close + 1;
	}
	return 0;
}

char *config_unescape(const char *value)
{
	char *out = malloc(strlen(value) + 1), *o = out;
	if (!out)
		return NULL;
	for (const char *p = value; *p; p++) {
		*o++ = *p;
		if (p[0] == '%' && p[1] == '%')
			p++;
	}
	*o = '\0';
	return out;
}

struct buf {
	char *s;
	size_t len, cap;
	unsigned refs;   /* references expanded so far, bounded by MAX_REFS */
};

#define MAX_REFS 4096

/* 0, -E2BIG past CONFIG_MAX_VALUE, or -ENOMEM */
static int buf_add(struct buf *b, const char *s, size_t len)
{
	if (b->len + len > CONFIG_MAX_VALUE)
		return -E2BIG;
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->len + len + 1)
			cap *= 2;
		char *ns = realloc(b->s, cap);
		if (!ns)
			return -ENOMEM;
		b->s = ns;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, len);
	b->len += len;
	b->s[b->len] = '\0';
	return 0;
}

/* "a -> b -> c" */
static void chain_str(const char *const *chain, size_t n, char *buf, size_t size)
{
	size_t o = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		int r = snprintf(buf + o, size - o, "%s%s", i ? " -> " : "", chain[i]);
		if (r < 0 || (size_t)r >= size - o)
			break;
		o += (size_t)r;
	}
}

/* Expand chain[depth-1]'s value into b. */
static int expand(const struct config *cfg, const char **chain, char (*names)[128], size_t depth,
		  struct buf *b, struct terr *err)
{
	const char *name = chain[depth - 1];
	const char *value = config_get_raw(cfg, name);
	char cs[400];
	int r;

	if (!value) {
		const struct config_decl *d = config_find_decl(name);
		value = d ? d->def : NULL;
	}
	if (!value) {
		chain_str(chain, depth, cs, sizeof(cs));
		return terr_set(err, ENOENT, "%s: reference to %s, which is not set (%s)",
				chain[0], name, cs);
	}
	for (const char *p = value; *p; ) {
		const char *pc = strchr(p, '%');
		if (!pc) {
			if ((r = buf_add(b, p, strlen(p))) < 0)
				goto fail;
			break;
		}
		if ((r = buf_add(b, p, (size_t)(pc - p))) < 0)
			goto fail;
		if (pc[1] == '%') {
			if ((r = buf_add(b, "%", 1)) < 0)
				goto fail;
			p = pc + 2;
			continue;
		}
		/* config_set checked the syntax; stay safe on anything else */
		const char *close = pc[1] == '(' ? strchr(pc + 2, ')') : NULL;
		size_t len = close ? (size_t)(close - pc - 2) : 0;
		if (!close || len >= sizeof(names[0]))
			return terr_set(err, EINVAL, "%s: bad %%( in \"%.200s\"", name, value);
		memcpy(names[depth], pc + 2, len);
		names[depth][len] = '\0';
		chain[depth] = names[depth];
		for (size_t i = 0; i < depth; i++)
			if (!strcmp(chain[i], chain[depth])) {
				chain_str(chain, depth + 1, cs, sizeof(cs));
				return terr_set(err, ELOOP, "%s: reference loop %s", chain[0], cs);
			}
		if (depth + 1 >= MAX_DEPTH) {
			chain_str(chain, depth + 1, cs, sizeof(cs));
			return terr_set(err, ELOOP, "%s: references nested more than %d deep (%s)",
					chain[0], MAX_DEPTH - 1, cs);
		}
		if (++b->refs > MAX_REFS)
			return terr_set(err, E2BIG, "%s: more than %d references to expand", chain[0], MAX_REFS);
		r = expand(cfg, chain, names, depth + 1, b, err);
		if (r < 0)
			return r;
		p = close + 1;
	}
	return 0;
fail:
	if (r == -ENOMEM)
		return terr_set(err, ENOMEM, "%s: out of memory", chain[0]);
	return terr_set(err, E2BIG, "%s: expands to more than %d bytes", chain[0], CONFIG_MAX_VALUE);
}

int config_expand(const struct config *cfg, const char *name, char **out, struct terr *err)
{
	const char *chain[MAX_DEPTH];
	char names[MAX_DEPTH][128];
	struct buf b = { 0 };
	int r;

	*out = NULL;
	const struct config_decl *d = config_find_decl(name);
	if (!config_get_raw(cfg, name) && !(d && d->def))
		return 0;
	chain[0] = name;
	if (buf_add(&b, "", 0) < 0)
		return terr_set(err, ENOMEM, "%s: out of memory", name);
	r = expand(cfg, chain, names, 1, &b, err);
	if (r < 0) {
		free(b.s);
		return r;
	}
	*out = b.s;
	return 0;
}
