/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "img.h"

void img_error(const char *fmt, ...)
{
	va_list ap;
	fputs("tern-img: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int img_parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -1;
	uint64_t mul = 1;
	switch (*end) {
	case 0: break;
	case 'b': case 'B': mul = 1; end++; break;
	case 'k': case 'K': mul = 1ull << 10; end++; break;
	case 'm': case 'M': mul = 1ull << 20; end++; break;
	case 'g': case 'G': mul = 1ull << 30; end++; break;
	case 't': case 'T': mul = 1ull << 40; end++; break;
	case 'p': case 'P': mul = 1ull << 50; end++; break;
	case 'e': case 'E': mul = 1ull << 60; end++; break;
	default: return -1;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end)
		return -1;
	double r = v * (double)mul;
	if (r >= 18446744073709551615.0)
		return -1;
	*out = (uint64_t)r;
	return 0;
}

static bool on(const char *v)
{
	return !strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes");
}

int img_parse_create_opts(const char *s, struct vdisk_create_opts *o)
{
	char *dup = strdup(s), *save = NULL;
	int r = 0;
	for (char *kv = strtok_r(dup, ",", &save); kv && !r; kv = strtok_r(NULL, ",", &save)) {
		char *v = strchr(kv, '=');
		if (!v) {
			img_error("invalid option '%s' (expected name=value)", kv);
			r = -1;
			break;
		}
		*v++ = 0;
		uint64_t n;
		if (!strcmp(kv, "size")) {
			if (img_parse_size(v, &o->size) < 0)
				r = -1;
		} else if (!strcmp(kv, "compat")) {
			if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
				o->compat = 2;
			else if (!strcmp(v, "1.1") || !strcmp(v, "v3"))
				o->compat = 3;
			else
				r = -1;
		} else if (!strcmp(kv, "cluster_size")) {
			if (img_parse_size(v, &n) < 0)
				r = -1;
			o->cluster_size = (uint32_t)n;
		} else if (!strcmp(kv, "refcount_bits")) {
			o->refcount_bits = (uint32_t)strtoul(v, NULL, 10);
		} else if (!strcmp(kv, "lazy_refcounts")) {
			o->lazy_refcounts = on(v);
		} else if (!strcmp(kv, "extended_l2")) {
			o->extended_l2 = on(v);
		} else if (!strcmp(kv, "compression_type")) {
			if (!strcmp(v, "zlib"))
				o->compression = VDISK_COMPRESS_ZLIB;
			else if (!strcmp(v, "zstd"))
				o->compression = VDISK_COMPRESS_ZSTD;
			else
				r = -1;
		} else if (!strcmp(kv, "preallocation")) {
			if (!strcmp(v, "off"))
				o->prealloc = VDISK_PREALLOC_OFF;
			else if (!strcmp(v, "metadata"))
				o->prealloc = VDISK_PREALLOC_METADATA;
			else if (!strcmp(v, "falloc"))
				o->prealloc = VDISK_PREALLOC_FALLOC;
			else if (!strcmp(v, "full"))
				o->prealloc = VDISK_PREALLOC_FULL;
			else
				r = -1;
		} else if (!strcmp(kv, "backing_file")) {
			o->backing_file = strdup(v);
		} else if (!strcmp(kv, "backing_fmt")) {
			o->backing_format = strdup(v);
		} else if (!strcmp(kv, "subformat")) {
			o->subformat = strdup(v);
		} else if (!strcmp(kv, "force_size")) {
			o->force_size = on(v);
		} else if (!strcmp(kv, "static")) {
			o->vdi_static = on(v);
		} else if (!strcmp(kv, "adapter_type")) {
			o->adapter_type = strdup(v);
		} else if (!strcmp(kv, "hwversion")) {
			o->hwversion = strdup(v);
		} else if (!strcmp(kv, "toolsversion")) {
			o->toolsversion = strdup(v);
		} else if (!strcmp(kv, "compat6")) {
			o->compat6 = on(v);
		} else if (!strcmp(kv, "zeroed_grain")) {
			o->zeroed_grain = on(v);
		} else {
			img_error("unknown option '%s'", kv);
			r = -1;
			break;
		}
		if (r)
			img_error("invalid value '%s' for option '%s'", v, kv);
	}
	free(dup);
	return r;
}

struct vdisk *img_open(const char *path, const char *fmt, uint32_t flags)
{
	struct vdisk_open_opts o = { .flags = flags, .format = fmt };
	if (!fmt)
		o.flags |= VDISK_OPEN_PROBE;
	struct vdisk *d;
	struct vdisk_error err;
	if (vdisk_open(&d, path, &o, &err) < 0) {
		img_error("Could not open '%s': %s", path, err.msg);
		return NULL;
	}
	return d;
}

void img_human_size(uint64_t v, char *buf, size_t len)
{
	static const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double x = (double)v;
	int i = 0;
	while (x >= 1024 && i < 6) {
		x /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)v);
	else
		snprintf(buf, len, "%.3g %s", x, u[i]);
}

bool img_wants_help(int argc, char **argv, const char *usage)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(usage, stdout);
			return true;
		}
	return false;
}

void img_progress(double pct)
{
	printf("    (%.2f/100%%)\r", pct);
	fflush(stdout);
}

bool vd_zero(const void *buf, uint64_t len)
{
	const unsigned char *p = buf;
	while (len && ((uintptr_t)p & 7)) {
		if (*p++)
			return false;
		len--;
	}
	const uint64_t *q = (const uint64_t *)(const void *)p;
	for (; len >= 32; len -= 32, q += 4)
		if (q[0] | q[1] | q[2] | q[3])
			return false;
	p = (const unsigned char *)q;
	while (len--)
		if (*p++)
			return false;
	return true;
}

/* The snapshot list in qemu-img's layout. */
void img_print_snapshots(const struct vdisk_snapshot *sn, unsigned n)
{
	printf("Snapshot list:\n%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE",
	       "VM CLOCK", "ICOUNT");
	for (unsigned i = 0; i < n; i++) {
		char size[32], date[64], clock[64], icount[32] = "";
		img_human_size(sn[i].vm_state_size, size, sizeof(size));
		time_t t = (time_t)sn[i].date_sec;
		struct tm tm;
		localtime_r(&t, &tm);
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
		uint64_t ms = sn[i].vm_clock_nsec / 1000000;
		snprintf(clock, sizeof(clock), "%02llu:%02llu:%02llu.%03llu",
		         (unsigned long long)(ms / 3600000), (unsigned long long)(ms / 60000 % 60),
		         (unsigned long long)(ms / 1000 % 60), (unsigned long long)(ms % 1000));
		if (sn[i].icount != UINT64_MAX)
			snprintf(icount, sizeof(icount), "%llu", (unsigned long long)sn[i].icount);
		printf("%-9s %-16s %8s%20s%13s%11s\n", sn[i].id, sn[i].name, size, date, clock, icount);
	}
}
