/* The configuration tree: dotted names ("memory.size", "disk.0.path") mapped
 * to string values, set from -o name=value and -k FILE, read through typed
 * getters that expand %(name) references and validate against the one
 * declaration table (config_decl.c). See docs/config.md.
 *
 * A tree holds only what was set; getters fall back to the declared default.
 * There is no global state: every VM owns its own tree. A tree is not
 * thread-safe (getters cache expanded strings in it): use it from one thread
 * at a time. */
#ifndef TERN_CONFIG_CONFIG_H
#define TERN_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "util/error.h"

enum config_type {
	CONFIG_BOOL,    /* true/false, yes/no, on/off, 1/0 (any case) */
	CONFIG_INT,     /* decimal or 0x hex, within [min, max] */
	CONFIG_SIZE,    /* bytes with optional K/M/G/T suffix (binary), within [min, max] */
	CONFIG_PATH,    /* a non-empty file name */
	CONFIG_ENUM,    /* one of values[] */
	CONFIG_STRING,  /* any text (optionally checked by check()) */
	CONFIG_MAC,     /* unicast MAC address aa:bb:cc:dd:ee:ff */
};

/* One declared setting. In a pattern, a component "N" stands for a decimal
 * index 0..CONFIG_MAX_INDEX written without leading zeros; N only appears as
 * the second component ("disk.N.path"). */
struct config_decl {
	const char *pattern;
	enum config_type type;
	const char *def;              /* raw default value; NULL = none */
	const char *help;             /* one line */
	const char *const *values;    /* CONFIG_ENUM: NULL-terminated */
	int64_t min, max;             /* CONFIG_INT, CONFIG_SIZE (max 0 = no limit) */
	bool (*check)(const char *value); /* CONFIG_STRING: extra check, or NULL */
	const char *expect;           /* what check() accepts, for error messages */
};

#define CONFIG_MAX_INDEX 999
#define CONFIG_MAX_VALUE 16384    /* longest raw or expanded value, in bytes */

/* The declaration table, and the entry matching a concrete name (or NULL). */
const struct config_decl *config_decls(size_t *count);
const struct config_decl *config_find_decl(const char *name);
const char *config_type_name(enum config_type type);

struct config;

struct config *config_new(void);                 /* NULL when out of memory */
void config_free(struct config *cfg);
struct config *config_clone(const struct config *cfg);
bool config_equal(const struct config *a, const struct config *b);

/* Set one setting. The name must be declared; the value must not contain
 * control characters (newlines, tabs...), leading or trailing spaces or
 * invalid UTF-8, and must be valid for the setting's type. A value holding
 * %(ref) is checked for syntax and declared references now and for its type
 * when read. Later sets override earlier ones. */
int config_set(struct config *cfg, const char *name, const char *value, struct terr *err);
int config_unset(struct config *cfg, const char *name);   /* 0 or -ENOENT */

/* "-o name=value": spaces around name and value are trimmed. */
int config_set_option(struct config *cfg, const char *opt, struct terr *err);
/* "-k FILE": one name=value per line, '#' comment lines, blank lines.
 * All or nothing: on error the tree is unchanged and err says "FILE:LINE: ...". */
int config_load_file(struct config *cfg, const char *path, struct terr *err);
/* The same parser on a buffer; origin names it in errors. */
int config_load_string(struct config *cfg, const char *text, size_t len,
		       const char *origin, struct terr *err);

bool config_is_set(const struct config *cfg, const char *name);
const char *config_get_raw(const struct config *cfg, const char *name); /* set value, unexpanded, or NULL */

/* Typed getters: the set value or else the declared default, %()-expanded and
 * validated. Strings returned stay valid until the tree is next changed.
 * config_get_str works on any type; config_get_str/path set *out = NULL and
 * return 0 when the setting has neither a value nor a default; the other
 * getters then fail with -ENOENT. Using a getter of the wrong type is -EINVAL. */
int config_get_str(struct config *cfg, const char *name, const char **out, struct terr *err);
int config_get_path(struct config *cfg, const char *name, const char **out, struct terr *err);
int config_get_bool(struct config *cfg, const char *name, bool *out, struct terr *err);
int config_get_int(struct config *cfg, const char *name, int64_t *out, struct terr *err);
int config_get_size(struct config *cfg, const char *name, uint64_t *out, struct terr *err);
/* *out = index of the value in the declaration's values[] */
int config_get_enum(struct config *cfg, const char *name, unsigned *out, struct terr *err);
int config_get_mac(struct config *cfg, const char *name, uint8_t mac[6], struct terr *err);

/* Read every set setting once through its getter: reports bad expansions,
 * loops and type errors before anything starts. */
int config_check(struct config *cfg, struct terr *err);

/* Calls fn for each set name equal to prefix or starting with "prefix."
 * (prefix NULL or "" = all), in name order (indices numerically); stops at
 * and returns the first non-zero result of fn. */
int config_foreach(const struct config *cfg, const char *prefix,
		   int (*fn)(const char *name, const char *raw, void *opaque), void *opaque);
/* Distinct indices N with some "base.N.*" set, ascending; returns how many
 * there are (may exceed max; only max are stored). */
size_t config_indices(const struct config *cfg, const char *base, unsigned *out, size_t max);
/* Set every unset setting that has a default: plain names, and indexed ones
 * for each index in use. Makes a dump independent of future default changes. */
int config_fill_defaults(struct config *cfg, struct terr *err);

/* name=value lines, sorted, raw (unexpanded); config_load_* reads them back
 * to an equal tree. The string version returns malloc'd text or NULL. */
int config_dump_kv(const struct config *cfg, FILE *f);
char *config_dump_kv_string(const struct config *cfg);
/* A flat JSON object {"name": "raw value", ...}, keys sorted; NULL on ENOMEM. */
json_t *config_to_json(const struct config *cfg);
/* Apply such an object (all or nothing). */
int config_from_json(struct config *cfg, const json_t *obj, struct terr *err);

/* tern --help-config, and the settings table of docs/config.md. */
void config_print_help(FILE *f);
void config_print_markdown(FILE *f);

#endif
