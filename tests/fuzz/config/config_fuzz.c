/* libFuzzer target for the configuration parser and %() expansion: the input
 * is a -k file. Whatever it holds, tern must not crash, and a tree it accepts
 * must read back identically from its name=value and JSON dumps. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

static int read_one(const char *name, const char *raw, void *opaque)
{
	(void)raw;
	struct config *cfg = opaque;
	struct terr err = { 0 };
	const char *s;
	bool b;
	int64_t i;
	uint64_t sz;
	unsigned idx;
	uint8_t mac[6];

	/* each getter of the right type, through expansion */
	if (config_get_str(cfg, name, &s, &err) == 0 && s && strlen(s) > CONFIG_MAX_VALUE)
		abort();
	switch (config_find_decl(name)->type) {
	case CONFIG_BOOL: config_get_bool(cfg, name, &b, &err); break;
	case CONFIG_INT: config_get_int(cfg, name, &i, &err); break;
	case CONFIG_SIZE: config_get_size(cfg, name, &sz, &err); break;
	case CONFIG_ENUM: config_get_enum(cfg, name, &idx, &err); break;
	case CONFIG_MAC: config_get_mac(cfg, name, mac, &err); break;
	case CONFIG_PATH: config_get_path(cfg, name, &s, &err); break;
	case CONFIG_STRING: break;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg = config_new();
	struct terr err = { 0 };

	if (!cfg)
		return 0;
	if (config_load_string(cfg, (const char *)data, size, "fuzz", &err) == 0) {
		config_check(cfg, &err);
		config_foreach(cfg, NULL, read_one, cfg);

		/* name=value round trip */
		char *kv = config_dump_kv_string(cfg);
		struct config *back = config_new();
		struct terr err2 = { 0 };
		if (!kv || !back || config_load_string(back, kv, strlen(kv), "dump", &err2) != 0 ||
		    !config_equal(cfg, back))
			abort();
		config_free(back);
		free(kv);

		/* JSON round trip */
		json_t *j = config_to_json(cfg);
		char *js = j ? json_dumps(j, JSON_COMPACT) : NULL;
		json_t *j2 = js ? json_loads(js, 0, NULL) : NULL;
		back = config_new();
		terr_clear(&err2);
		if (!j2 || !back || config_from_json(back, j2, &err2) != 0 || !config_equal(cfg, back))
			abort();
		config_free(back);
		json_decref(j2);
		free(js);
		json_decref(j);
	} else if (err.code == 0 || err.msg[0] == '\0') {
		abort();   /* every failure must say why */
	}
	config_free(cfg);
	return 0;
}
