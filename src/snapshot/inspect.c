#include "snapshot/inspect.h"
#include "snapshot/sections.h"
#include "state/state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- fields ---------------------------------------------------------- */

static json_t *hex_string(const uint8_t *p, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	char *s = malloc(len * 2 + 1);
	if (!s)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		s[2 * i] = digits[p[i] >> 4];
		s[2 * i + 1] = digits[p[i] & 15];
	}
	s[len * 2] = '\0';
	json_t *j = json_string(s);
	free(s);
	return j;
}

/* A nested blob is a BYTES field whose value parses, to its last byte, as
 * fields with printable names. Architectural byte arrays (xsave, the LAPIC
 * page, MSR records) practically never do: their first byte would have to
 * be a field type (1..3) followed by a consistent length chain. */
static bool looks_nested(const struct state_reader *r)
{
	if (r->nfields == 0)
		return false;
	for (size_t i = 0; i < r->nfields; i++)
		for (unsigned k = 0; k < r->fields[i].name_len; k++)
			if (r->fields[i].name[k] < 0x21 || r->fields[i].name[k] > 0x7e)
				return false;
	return true;
}

static json_t *fields_json(const struct state_reader *r, int depth);

static json_t *field_json(const struct state_field *f, int depth)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	json_object_set_new(o, "name", json_stringn(f->name, f->name_len));
	switch (f->type) {
	case STATE_UINT: {
		uint64_t v = 0;
		for (int i = 7; i >= 0; i--)
			v = v << 8 | f->data[i];
		json_object_set_new(o, "type", json_string("uint"));
		/* JSON integers are signed 64-bit: a value above that is given
		 * as a hex string */
		if (v > (uint64_t)INT64_MAX) {
			char b[24];
			snprintf(b, sizeof(b), "0x%llx", (unsigned long long)v);
			json_object_set_new(o, "value", json_string(b));
		} else {
			json_object_set_new(o, "value", json_integer((json_int_t)v));
		}
		break;
	}
	case STATE_STR: {
		json_object_set_new(o, "type", json_string("str"));
		json_t *v = json_stringn((const char *)f->data, f->len);
		if (v) {
			json_object_set_new(o, "value", v);
		} else {
			/* not UTF-8: shown as bytes */
			json_object_set_new(o, "length", json_integer(f->len));
			json_object_set_new(o, "hex", hex_string(f->data, f->len));
		}
		break;
	}
	default: {
		struct state_reader sub;
		struct terr e = { 0 };
		if (depth < 4 && sr_init(&sub, f->data, f->len, "", &e) == 0) {
			if (looks_nested(&sub)) {
				json_object_set_new(o, "type", json_string("fields"));
				json_object_set_new(o, "length", json_integer(f->len));
				json_object_set_new(o, "fields", fields_json(&sub, depth + 1));
				sr_free(&sub);
				break;
			}
			sr_free(&sub);
		}
		json_object_set_new(o, "type", json_string("bytes"));
		json_object_set_new(o, "length", json_integer(f->len));
		json_object_set_new(o, "hex", hex_string(f->data, f->len));
		break;
	}
	}
	return o;
}

static json_t *fields_json(const struct state_reader *r, int depth)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < r->nfields; i++)
		json_array_append_new(a, field_json(&r->fields[i], depth));
	return a;
}

json_t *snapshot_inspect_fields(const void *blob, size_t len, const char *what, struct terr *err)
{
	struct state_reader r;
	if (sr_init(&r, len ? blob : "", len, what, err))
		return NULL;
	json_t *a = fields_json(&r, 0);
	sr_free(&r);
	return a;
}

/* ---- header ---------------------------------------------------------- */

struct feature { unsigned word, bit; const char *name; };
enum { W1C, W1D, W7B, W7C, W7D, WXC, WXD };

/* A summary for people: the features that decide whether guest state moves
 * between hosts (vector extensions, XSAVE, virtualisation). */
static const struct feature features[] = {
	{ W1D, 0, "fpu" }, { W1D, 4, "tsc" }, { W1D, 5, "msr" }, { W1D, 6, "pae" },
	{ W1D, 8, "cx8" }, { W1D, 9, "apic" }, { W1D, 11, "sep" }, { W1D, 13, "pge" },
	{ W1D, 15, "cmov" }, { W1D, 16, "pat" }, { W1D, 19, "clflush" }, { W1D, 23, "mmx" },
	{ W1D, 24, "fxsr" }, { W1D, 25, "sse" }, { W1D, 26, "sse2" }, { W1D, 28, "ht" },
	{ W1C, 0, "sse3" }, { W1C, 1, "pclmulqdq" }, { W1C, 5, "vmx" }, { W1C, 9, "ssse3" },
	{ W1C, 12, "fma" }, { W1C, 13, "cx16" }, { W1C, 19, "sse4_1" }, { W1C, 20, "sse4_2" },
	{ W1C, 21, "x2apic" }, { W1C, 22, "movbe" }, { W1C, 23, "popcnt" },
	{ W1C, 24, "tsc_deadline" }, { W1C, 25, "aes" }, { W1C, 26, "xsave" },
	{ W1C, 28, "avx" }, { W1C, 29, "f16c" }, { W1C, 30, "rdrand" }, { W1C, 31, "hypervisor" },
	{ W7B, 0, "fsgsbase" }, { W7B, 3, "bmi1" }, { W7B, 5, "avx2" }, { W7B, 7, "smep" },
	{ W7B, 8, "bmi2" }, { W7B, 9, "erms" }, { W7B, 10, "invpcid" }, { W7B, 16, "avx512f" },
	{ W7B, 17, "avx512dq" }, { W7B, 18, "rdseed" }, { W7B, 19, "adx" }, { W7B, 20, "smap" },
	{ W7B, 23, "clflushopt" }, { W7B, 24, "clwb" }, { W7B, 28, "avx512cd" }, { W7B, 29, "sha_ni" },
	{ W7B, 30, "avx512bw" }, { W7B, 31, "avx512vl" },
	{ W7C, 1, "avx512vbmi" }, { W7C, 2, "umip" }, { W7C, 3, "pku" }, { W7C, 9, "vaes" },
	{ W7C, 10, "vpclmulqdq" }, { W7C, 11, "avx512_vnni" }, { W7C, 22, "rdpid" },
	{ W7D, 4, "fsrm" }, { W7D, 14, "serialize" }, { W7D, 24, "amx_tile" },
	{ WXC, 0, "lahf_lm" }, { WXC, 2, "svm" }, { WXC, 5, "abm" }, { WXC, 6, "sse4a" },
	{ WXC, 8, "3dnowprefetch" },
	{ WXD, 11, "syscall" }, { WXD, 20, "nx" }, { WXD, 26, "pdpe1gb" }, { WXD, 27, "rdtscp" },
	{ WXD, 29, "lm" },
};

static json_t *cpu_json(const struct snap_host *h)
{
	const uint32_t words[] = { h->cpuid1_ecx, h->cpuid1_edx, h->cpuid7_ebx, h->cpuid7_ecx,
				   h->cpuid7_edx, h->cpuidx1_ecx, h->cpuidx1_edx };
	uint32_t eax = h->cpuid1_eax;
	unsigned family = (eax >> 8) & 0xf, model = (eax >> 4) & 0xf;
	if (family == 0xf)
		family += (eax >> 20) & 0xff;
	if (family >= 6)
		model |= ((eax >> 16) & 0xf) << 4;
	json_t *f = json_array();
	for (size_t i = 0; f && i < sizeof(features) / sizeof(features[0]); i++)
		if (words[features[i].word] >> features[i].bit & 1)
			json_array_append_new(f, json_string(features[i].name));
	char c[7][12], x[24];
	for (int i = 0; i < 7; i++)
		snprintf(c[i], sizeof(c[i]), "0x%08x", words[i]);
	snprintf(x, sizeof(x), "0x%llx", (unsigned long long)h->xcr0_supported);
	char vendor[sizeof(h->cpu_vendor) + 1];
	snprintf(vendor, sizeof(vendor), "%.*s", (int)sizeof(h->cpu_vendor), h->cpu_vendor);
	return json_pack("{s:s, s:i, s:i, s:i, s:o, s:s, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:s}}",
			 "vendor", vendor,
			 "family", (int)family, "model", (int)model, "stepping", (int)(eax & 0xf),
			 "features", f ? f : json_array(),
			 "xcr0_supported", x,
			 "cpuid", "1.ecx", c[0], "1.edx", c[1], "7.ebx", c[2], "7.ecx", c[3],
			 "7.edx", c[4], "80000001.ecx", c[5], "80000001.edx", c[6]);
}

static json_t *header_json(const struct snapshot *s)
{
	char when[64] = "";
	time_t t = (time_t)s->created;
	struct tm tm;
	if (gmtime_r(&t, &tm))
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	char ver[sizeof(s->host.tern_version) + 1], kern[sizeof(s->host.kernel_release) + 1];
	snprintf(ver, sizeof(ver), "%.*s", (int)sizeof(s->host.tern_version), s->host.tern_version);
	snprintf(kern, sizeof(kern), "%.*s", (int)sizeof(s->host.kernel_release),
		 s->host.kernel_release);
	return json_pack("{s:i, s:s, s:I, s:s, s:o, s:s, s:I, s:i, s:I, s:I}",
			 "format_version", (int)s->format_version,
			 "tern_version", ver,
			 "created", (json_int_t)s->created,
			 "created_utc", when,
			 "cpu", cpu_json(&s->host),
			 "kernel", kern,
			 "toc_offset", (json_int_t)s->toc_offset,
			 "sections", (int)s->nsections,
			 "ram_offset", (json_int_t)s->ram_offset,
			 "ram_length", (json_int_t)s->ram_length);
}

/* ---- sections -------------------------------------------------------- */

static json_t *config_json(const struct snap_section *sec)
{
	struct state_reader r;
	struct terr e = { 0 };
	const void *text;
	size_t len;
	if (sr_init(&r, sec->length ? sec->data : (const uint8_t *)"", sec->length, sec->id, &e))
		return NULL;
	json_t *j = NULL;
	if (sr_bytes(&r, "json", &text, &len, &e) == 0 && text)
		j = json_loadb(text, len, 0, NULL);
	sr_free(&r);
	if (j && !json_is_object(j)) {
		json_decref(j);
		j = NULL;
	}
	return j;
}

static json_t *section_json(const struct snap_section *sec)
{
	char sum[24];
	snprintf(sum, sizeof(sum), "0x%016llx", (unsigned long long)sec->checksum);
	json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:I, s:I, s:s, s:b}",
			      "id", sec->id, "kind", sec->kind,
			      "version", (int)sec->version, "min_version", (int)sec->min_version,
			      "offset", (json_int_t)sec->offset, "length", (json_int_t)sec->length,
			      "checksum", sum, "checksum_ok", sec->checksum_ok);
	if (!o)
		return NULL;
	struct terr e = { 0 };
	json_t *f = sec->checksum_ok ? snapshot_inspect_fields(sec->data, sec->length, sec->id, &e) : NULL;
	if (f)
		json_object_set_new(o, "fields", f);
	else if (sec->checksum_ok)
		json_object_set_new(o, "error", json_string(e.msg));
	return o;
}

/* ---- RAM ------------------------------------------------------------- */

struct region { uint64_t gpa, size, offset, data; };

static unsigned ram_regions(const struct snapshot *s, struct region *reg, unsigned max)
{
	const struct snap_section *sec = snap_find(s, SECTION_RAM);
	struct state_reader r;
	struct terr e = { 0 };
	uint64_t n = 0;
	if (!sec || !sec->checksum_ok || sr_init(&r, sec->length ? sec->data : (const uint8_t *)"",
						 sec->length, sec->id, &e))
		return 0;
	if (sr_uint(&r, "regions", 0, &n, &e) || n > max)
		n = 0;
	for (unsigned i = 0; i < n; i++) {
		char name[32];
		uint64_t *v[3] = { &reg[i].gpa, &reg[i].size, &reg[i].offset };
		static const char *const what[3] = { "gpa", "size", "offset" };
		for (int k = 0; k < 3; k++) {
			snprintf(name, sizeof(name), "region%u.%s", i, what[k]);
			if (sr_uint(&r, name, 0, v[k], &e))
				*v[k] = 0;
		}
		reg[i].data = 0;
	}
	sr_free(&r);
	return (unsigned)n;
}

static json_t *ram_json(const struct snapshot *s)
{
	struct region reg[8];
	unsigned nreg = ram_regions(s, reg, 8);
	uint64_t start = s->ram_offset, len = s->ram_length;
	uint64_t in_file = s->file_size > start ? s->file_size - start : 0;
	if (in_file > len)
		in_file = len;
	uint64_t data = 0, extents = 0;
	bool seek_ok = s->fd >= 0;
	/* walk the data extents of [start, start + in_file) */
	for (uint64_t pos = 0; seek_ok && pos < in_file;) {
		off_t d = lseek(s->fd, (off_t)(start + pos), SEEK_DATA);
		if (d < 0) {
			if (errno != ENXIO)
				seek_ok = false;
			break;
		}
		if ((uint64_t)d >= start + in_file)
			break;
		off_t h = lseek(s->fd, d, SEEK_HOLE);
		if (h < 0) {
			seek_ok = false;
			break;
		}
		uint64_t a = (uint64_t)d - start, b = (uint64_t)h - start;
		if (b > in_file)
			b = in_file;
		data += b - a;
		extents++;
		for (unsigned i = 0; i < nreg; i++) {
			uint64_t lo = a > reg[i].offset ? a : reg[i].offset;
			uint64_t hi = b < reg[i].offset + reg[i].size ? b : reg[i].offset + reg[i].size;
			if (hi > lo)
				reg[i].data += hi - lo;
		}
		pos = b;
	}
	json_t *o = json_pack("{s:I, s:I, s:i}", "size", (json_int_t)len,
			      "offset", (json_int_t)start, "page_size", 4096);
	if (!o)
		return NULL;
	if (in_file < len)
		json_object_set_new(o, "missing_bytes", json_integer((json_int_t)(len - in_file)));
	if (seek_ok) {
		json_object_set_new(o, "data_bytes", json_integer((json_int_t)data));
		json_object_set_new(o, "hole_bytes", json_integer((json_int_t)(in_file - data)));
		json_object_set_new(o, "data_extents", json_integer((json_int_t)extents));
	}
	json_t *a = json_array();
	for (unsigned i = 0; a && i < nreg; i++) {
		json_t *r = json_pack("{s:I, s:I, s:I}", "gpa", (json_int_t)reg[i].gpa,
				      "size", (json_int_t)reg[i].size, "offset", (json_int_t)reg[i].offset);
		if (r && seek_ok)
			json_object_set_new(r, "data_bytes", json_integer((json_int_t)reg[i].data));
		json_array_append_new(a, r);
	}
	json_object_set_new(o, "regions", a ? a : json_array());
	return o;
}

/* ---- the whole ------------------------------------------------------- */

json_t *snapshot_inspect(const struct snapshot *s)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	json_object_set_new(o, "file_bytes", json_integer((json_int_t)s->file_size));
	json_object_set_new(o, "header", header_json(s));
	json_t *secs = json_array();
	for (unsigned i = 0; secs && i < s->nsections; i++)
		json_array_append_new(secs, section_json(&s->sections[i]));
	json_object_set_new(o, "sections", secs ? secs : json_array());
	const struct snap_section *cfg = snap_find(s, SECTION_CONFIG);
	json_t *c = cfg && cfg->checksum_ok ? config_json(cfg) : NULL;
	if (c)
		json_object_set_new(o, "config", c);
	json_object_set_new(o, "ram", ram_json(s));
	if (s->damage.code)
		json_object_set_new(o, "damage", json_string(s->damage.msg));
	return o;
}

json_t *snapshot_inspect_file(const char *path, struct terr *err)
{
	struct snapshot s;
	if (snap_open_lenient(&s, path, err))
		return NULL;
	json_t *o = snapshot_inspect(&s);
	if (o)
		json_object_set_new(o, "file", json_string(path));
	else
		terr_set(err, ENOMEM, "%s: out of memory", path);
	snap_close(&s);
	return o;
}
