/* libFuzzer target for the snapshot reader: the input is a whole snapshot
 * file. snap_parse validates it (header, TOC, checksums, padding, RAM
 * extent); a file it accepts goes through everything a restore or an
 * inspect reads without a VM: each section's fields (nested blobs too), the
 * section readers with their version checks, the embedded configuration,
 * and the JSON view, which must serialize. Nothing may crash or leak.
 *
 * Checksums stop random mutations early, so a file whose checksums do not
 * match is also re-checked with its checksums recomputed (FUZZ_FIX_SUMS):
 * that lets the fuzzer reach the field parsers with arbitrary contents. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "config/config.h"
#include "snapshot/inspect.h"
#include "snapshot/snapfile.h"

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Recompute every checksum the header and TOC declare, where they fit. */
static void fix_sums(uint8_t *b, size_t len)
{
	if (len < 4096)
		return;
	uint64_t toc = get(b + 24, 8), count = get(b + 32, 4);
	if (count <= 4096 && toc <= len && count * 96 <= len - toc) {
		for (uint64_t i = 0; i < count; i++) {
			uint8_t *e = b + toc + i * 96;
			uint64_t off = get(e + 56, 8), l = get(e + 64, 8);
			if (off <= len && l <= len - off)
				put64(e + 72, XXH3_64bits(b + off, l));
		}
		put64(b + 40, XXH3_64bits(b + toc, count * 96));
	}
	put64(b + 504, XXH3_64bits(b, 504));
}

static void exercise(const struct snapshot *s)
{
	struct terr err = { 0 };
	for (unsigned i = 0; i < s->nsections; i++) {
		const struct snap_section *sec = &s->sections[i];
		struct state_reader r;
		terr_clear(&err);
		if (snap_section_reader(s, sec, 1, &r, &err) == 0) {
			uint64_t v;
			const void *p;
			size_t n;
			terr_clear(&err);
			sr_uint(&r, "size", 0, &v, &err);
			terr_clear(&err);
			sr_bytes(&r, "json", &p, &n, &err);
			if (!strcmp(sec->id, "config") && p) {
				json_t *j = json_loadb(p, n, 0, NULL);
				if (j) {
					struct config *c = config_new();
					terr_clear(&err);
					if (c && config_from_json(c, j, &err) == 0) {
						terr_clear(&err);
						config_check(c, &err);
					}
					config_free(c);
					json_decref(j);
				}
			}
			sr_free(&r);
		}
	}
	json_t *o = snapshot_inspect(s);
	if (o) {
		char *text = json_dumps(o, JSON_COMPACT);
		if (!text)
			abort();   /* the view must always serialize */
		free(text);
		json_decref(o);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct snapshot s;
	struct terr err = { 0 };
	if (snap_parse(&s, data, size, "fuzz", &err) == 0) {
		exercise(&s);
		snap_close(&s);
		return 0;
	}
	if (!err.msg[0])
		abort();   /* every refusal says why */
	uint8_t *b = malloc(size ? size : 1);
	if (!b)
		return 0;
	memcpy(b, data, size);
	fix_sums(b, size);
	terr_clear(&err);
	if (snap_parse(&s, b, size, "fuzz", &err) == 0) {
		exercise(&s);
		snap_close(&s);
	} else if (!err.msg[0]) {
		abort();
	}
	free(b);
	return 0;
}
