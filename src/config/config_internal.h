/* Shared between the files of src/config; not part of the API. */
#ifndef TERN_CONFIG_INTERNAL_H
#define TERN_CONFIG_INTERNAL_H

#include "config/config.h"

struct config_entry {
	char *name;
	char *value;
};

struct config {
	struct config_entry *v;   /* sorted by config_name_cmp */
	size_t n, cap;
	char **pool;              /* expanded strings handed out by getters */
	size_t npool, cappool;
};

/* Name order: component by component, all-digit components numerically. */
int config_name_cmp(const char *a, const char *b);

/* Suggest a declared name close to an unknown one ("" if none) into buf. */
void config_suggest(const char *name, char *buf, size_t size);

/* 4096 -> "4K" when exact (largest suffix), for messages. */
void config_fmt_size(uint64_t v, char *buf, size_t size);

/* Check a raw value's characters (no control chars, no surrounding spaces,
 * valid UTF-8, bounded length). */
int config_check_chars(const char *name, const char *value, struct terr *err);

/* Parse a value of the declared type; any of the out pointers may be NULL.
 * shown is the raw value when it differs from value (an expansion). */
struct config_parsed {
	bool b;
	int64_t i;
	uint64_t size;
	unsigned index;
	uint8_t mac[6];
};
int config_parse_value(const struct config_decl *d, const char *name, const char *value,
		       const char *shown, struct config_parsed *out, struct terr *err);

/* Check the %() syntax of a raw value and that references name declared
 * settings. *has_ref tells whether it holds any %(...). */
int config_check_refs(const char *name, const char *value, bool *has_ref, struct terr *err);
/* Remove %% escapes from a value with no references (malloc'd). */
char *config_unescape(const char *value);
/* Expand the value of name (set or default) into a malloc'd string; *out is
 * NULL when the setting has neither. */
int config_expand(const struct config *cfg, const char *name, char **out, struct terr *err);

#endif
