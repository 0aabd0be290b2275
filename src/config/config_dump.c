/* Dumps: name=value text (what -k reads) and a flat JSON object. Both carry
 * raw, unexpanded values; config_set's rules (no control characters, no
 * leading or trailing spaces) make the text form round-trip unescaped. */
#include "config/config_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int config_dump_kv(const struct config *cfg, FILE *f)
{
	for (size_t i = 0; i < cfg->n; i++)
		if (fprintf(f, "%s=%s\n", cfg->v[i].name, cfg->v[i].value) < 0)
			return -EIO;
	return 0;
}

char *config_dump_kv_string(const struct config *cfg)
{
	char *s = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&s, &len);

	if (!f)
		return NULL;
	int r = config_dump_kv(cfg, f);
	if (fclose(f) != 0 || r < 0) {
		free(s);
		return NULL;
	}
	return s;
}

json_t *config_to_json(const struct config *cfg)
{
	json_t *obj = json_object();

	if (!obj)
		return NULL;
	for (size_t i = 0; i < cfg->n; i++) {
		/* values are valid UTF-8 (config_set checked) */
		if (json_object_set_new(obj, cfg->v[i].name, json_string(cfg->v[i].value)) < 0) {
			json_decref(obj);
			return NULL;
		}
	}
	return obj;
}

int config_from_json(struct config *cfg, const json_t *obj, struct terr *err)
{
	struct config *tmp;
	const char *key;
	json_t *val;
	int r = 0;

	if (!json_is_object(obj))
		return terr_set(err, EINVAL, "configuration JSON: expected an object of \"name\": \"value\"");
	tmp = config_clone(cfg);
	if (!tmp)
		return terr_set(err, ENOMEM, "configuration JSON: out of memory");
	json_object_foreach((json_t *)obj, key, val) {
		if (!json_is_string(val)) {
			r = terr_set(err, EINVAL, "%s: expected a string value in the configuration JSON", key);
			break;
		}
		if (strlen(json_string_value(val)) != json_string_length(val)) {
			r = terr_set(err, EINVAL, "%s: value contains a NUL byte", key);
			break;
		}
		r = config_set(tmp, key, json_string_value(val), err);
		if (r < 0)
			break;
	}
	if (r == 0) {
		struct config swap = *cfg;
		*cfg = *tmp;
		*tmp = swap;
	}
	config_free(tmp);
	return r;
}
