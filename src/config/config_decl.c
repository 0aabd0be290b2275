/* The declaration table: every setting tern knows, declared once. Adding a
 * setting = one line here, then regenerate the table in docs/config.md
 * (build/tests/unit/config/config-doc --update docs/config.md); the unit test
 * "config" fails while the docs are out of date. */
#include "config/config_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static bool check_vm_name(const char *v)
{
	if (!*v || *v == '.' || strlen(v) > 64)
		return false;
	for (; *v; v++)
		if (!isalnum((unsigned char)*v) && !strchr("._-", *v))
			return false;
	return true;
}

static bool check_ifname(const char *v)
{
	if (!*v || strlen(v) > 15 || !strcmp(v, ".") || !strcmp(v, ".."))
		return false;
	for (; *v; v++)
		if ((unsigned char)*v <= ' ' || *v == '/' || *v == ':')
			return false;
	return true;
}

static bool check_serial(const char *v)
{
	return strlen(v) <= 20;   /* VIRTIO_BLK_ID_BYTES */
}

static const char *const on_reboot_values[] = { "exit", "restart", NULL };
static const char *const unpack_values[] = { "host", "guest", NULL };
static const char *const disk_formats[] = { "raw", "qcow2", "vmdk", "vdi", "vhd", NULL };
static const char *const net_backends[] = { "user", "tap", NULL };
static const char *const disk_engines[] = { "auto", "io_uring", "threads", NULL };

#define MiB (1024 * 1024)

static const struct config_decl decls[] = {
	{ "name", CONFIG_STRING, "tern", "name of the VM (control socket, logs)",
	  .check = check_vm_name, .expect = "up to 64 letters, digits, '.', '_', '-', not starting with '.'" },
	{ "memory.size", CONFIG_SIZE, "256M", "guest RAM (bytes, or with suffix K, M, G, T)", .min = MiB },
	{ "cpus", CONFIG_INT, "1", "number of vCPUs", .min = 1, .max = 255 },
	{ "kernel", CONFIG_PATH, NULL, "guest kernel: PVH ELF (vmlinux, test guests) or bzImage" },
	{ "initrd", CONFIG_PATH, NULL, "initial ramdisk loaded next to the kernel" },
	{ "cmdline", CONFIG_STRING, "console=ttyS0", "kernel command line" },
	{ "boot.unpack", CONFIG_ENUM, "host", "who unpacks a compressed bzImage: host (tern unpacks gzip, xz, zstd and lz4 kernels and enters them directly, placed at random as the kernel's KASLR would) or guest (the kernel's own decompressor)",
	  .values = unpack_values },
	{ "console.path", CONFIG_PATH, "stdio", "COM1 output: stdio, or a file (write ./stdio for a file of that name)" },
	{ "console.input", CONFIG_BOOL, "true", "read COM1 input from stdin when console.path is stdio" },
	{ "test_exit.enable", CONFIG_BOOL, "false", "enable the test-exit port 0x501 through which a guest ends the VM with a status" },
	{ "on_reboot", CONFIG_ENUM, "exit", "what a guest reboot does", .values = on_reboot_values },
	{ "control.path", CONFIG_PATH, NULL, "control socket (unset: $XDG_RUNTIME_DIR/tern/NAME.sock when name is set, else none; docs/control.md)" },
	{ "disk.N.path", CONFIG_PATH, NULL, "image file of virtio-blk disk N" },
	{ "disk.N.format", CONFIG_ENUM, "raw", "image format of disk N", .values = disk_formats },
	{ "disk.N.readonly", CONFIG_BOOL, "false", "attach disk N read-only" },
	{ "disk.N.serial", CONFIG_STRING, NULL, "serial number the guest sees for disk N (unset: tern-blk.N)",
	  .check = check_serial, .expect = "at most 20 bytes" },
	{ "disk.N.engine", CONFIG_ENUM, "auto", "how disk N does I/O: io_uring on a raw image, or vdisk on worker threads (auto: io_uring for raw, threads otherwise)",
	  .values = disk_engines },
	{ "net.N.backend", CONFIG_ENUM, "user", "host side of virtio-net device N", .values = net_backends },
	{ "net.N.mac", CONFIG_MAC, NULL, "MAC address of net N (unset: derived from name and N)" },
	{ "net.N.tap", CONFIG_STRING, NULL, "tap interface of net N when backend is tap",
	  .check = check_ifname, .expect = "an interface name of 1 to 15 bytes without '/', ':' or spaces" },
	{ "net.N.hostfwd", CONFIG_STRING, NULL, "user backend port forwards, e.g. tcp::2222-:22 (comma-separated)" },
	{ "net.N.mtu", CONFIG_INT, "0", "MTU of net N's link, offered to the guest's driver (VIRTIO_NET_F_MTU), 68 to 65520; 0: 65520 for the user back end (whole TCP segments of up to 64 KiB per frame), none offered for tap (the guest keeps 1500)",
	  .min = 0, .max = 65520 },
	{ "rng.enable", CONFIG_BOOL, "false", "add a virtio-rng device fed from getrandom()" },
	{ "vconsole.path", CONFIG_PATH, NULL, "virtio-console (hvc0): a file for its output, stdio (output to stdout, input from stdin), or unix:PATH (a socket tern listens on); unset: no device" },
	{ "snapshot.eager", CONFIG_BOOL, "false", "restore reads all guest RAM up front instead of mapping it lazily" },
};

const struct config_decl *config_decls(size_t *count)
{
	*count = sizeof(decls) / sizeof(decls[0]);
	return decls;
}

const char *config_type_name(enum config_type type)
{
	switch (type) {
	case CONFIG_BOOL: return "bool";
	case CONFIG_INT: return "int";
	case CONFIG_SIZE: return "size";
	case CONFIG_PATH: return "path";
	case CONFIG_ENUM: return "enum";
	case CONFIG_STRING: return "string";
	case CONFIG_MAC: return "mac";
	}
	return "?";
}

/* Length of the component starting at s. */
static size_t comp_len(const char *s)
{
	return strcspn(s, ".");
}

/* A decimal index 0..CONFIG_MAX_INDEX without leading zeros. */
static bool is_index(const char *s, size_t len)
{
	if (len == 0 || len > 3 || (len > 1 && s[0] == '0'))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isdigit((unsigned char)s[i]))
			return false;
	return true;
}

static bool all_digits(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isdigit((unsigned char)s[i]))
			return false;
	return true;
}

static bool match(const char *pattern, const char *name)
{
	for (;;) {
		size_t pl = comp_len(pattern), nl = comp_len(name);
		if (pl == 1 && pattern[0] == 'N') {
			if (!is_index(name, nl))
				return false;
		} else if (pl != nl || memcmp(pattern, name, pl) != 0) {
			return false;
		}
		pattern += pl;
		name += nl;
		if (!*pattern || !*name)
			return !*pattern && !*name;
		pattern++;
		name++;
	}
}

const struct config_decl *config_find_decl(const char *name)
{
	for (size_t i = 0; i < sizeof(decls) / sizeof(decls[0]); i++)
		if (match(decls[i].pattern, name))
			return &decls[i];
	return NULL;
}

int config_name_cmp(const char *a, const char *b)
{
	for (;;) {
		size_t al = comp_len(a), bl = comp_len(b);
		int r;
		if (all_digits(a, al) && all_digits(b, bl) && al != bl) {
			r = al < bl ? -1 : 1;   /* canonical indices: shorter is smaller */
		} else {
			r = memcmp(a, b, al < bl ? al : bl);
			if (r == 0 && al != bl)
				r = al < bl ? -1 : 1;
		}
		if (r)
			return r;
		a += al;
		b += bl;
		if (!*a || !*b)
			return (*a != 0) - (*b != 0);
		a++;
		b++;
	}
}

static size_t distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[130];

	if (lb >= sizeof(row) / sizeof(row[0]))
		return (size_t)-1;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

void config_suggest(const char *name, char *buf, size_t size)
{
	char norm[128], digits[128];
	size_t nl = 0, dl = 0;

	buf[0] = '\0';
	if (strlen(name) >= sizeof(norm) || size == 0)
		return;
	/* "disk.01.pth" -> "disk.N.pth", remembering "1" for N */
	for (const char *s = name; *s;) {
		size_t cl = comp_len(s);
		if (all_digits(s, cl) && dl == 0) {
			const char *d = s;
			while (d < s + cl - 1 && *d == '0')
				d++;
			dl = (size_t)(s + cl - d);
			memcpy(digits, d, dl);
			norm[nl++] = 'N';
		} else {
			memcpy(norm + nl, s, cl);
			nl += cl;
		}
		s += cl;
		if (*s)
			norm[nl++] = *s++;
	}
	norm[nl] = '\0';
	if (dl == 0)
		digits[dl++] = '0';
	digits[dl] = '\0';

	size_t best = (size_t)-1;
	const struct config_decl *hit = NULL;
	for (size_t i = 0; i < sizeof(decls) / sizeof(decls[0]); i++) {
		size_t dist = distance(norm, decls[i].pattern);
		if (dist < best) {
			best = dist;
			hit = &decls[i];
		}
	}
	if (!hit || best > 2 || best * 3 > strlen(hit->pattern))
		return;
	/* render the pattern with N replaced by the index */
	size_t o = 0;
	for (const char *p = hit->pattern; *p && o + 1 < size; p++) {
		bool isN = *p == 'N' && (p == hit->pattern || p[-1] == '.') && (p[1] == '.' || !p[1]);
		if (isN) {
			for (const char *d = digits; *d && o + 1 < size; d++)
				buf[o++] = *d;
		} else {
			buf[o++] = *p;
		}
	}
	buf[o] = '\0';
}

static void type_desc(const struct config_decl *d, char *buf, size_t size, const char *sep)
{
	size_t o;

	switch (d->type) {
	case CONFIG_INT:
		snprintf(buf, size, "int %lld..%lld", (long long)d->min, (long long)d->max);
		break;
	case CONFIG_ENUM:
		o = 0;
		buf[0] = '\0';
		for (size_t i = 0; d->values[i]; i++) {
			int r = snprintf(buf + o, size - o, "%s%s", i ? sep : "", d->values[i]);
			if (r < 0 || (size_t)r >= size - o)
				break;
			o += (size_t)r;
		}
		break;
	default:
		snprintf(buf, size, "%s", config_type_name(d->type));
		break;
	}
}

/* The help line plus what the declaration adds (minimum size, check). */
static void full_help(const struct config_decl *d, char *buf, size_t size)
{
	char min[32] = "";

	if (d->type == CONFIG_SIZE && d->min)
		config_fmt_size((uint64_t)d->min, min, sizeof(min));
	snprintf(buf, size, "%s%s%s%s%s", d->help, min[0] ? "; at least " : "", min,
		 d->expect ? "; " : "", d->expect ? d->expect : "");
}

void config_print_help(FILE *f)
{
	char help[400];

	char type[128];

	fprintf(f, "Settings: -o NAME=VALUE, or NAME=VALUE lines in a -k FILE; "
		"N is an index 0..%d; %%(NAME) expands another setting.\n\n", CONFIG_MAX_INDEX);
	fprintf(f, "  %-18s %-24s %-14s %s\n", "NAME", "TYPE", "DEFAULT", "DESCRIPTION");
	for (size_t i = 0; i < sizeof(decls) / sizeof(decls[0]); i++) {
		const struct config_decl *d = &decls[i];
		type_desc(d, type, sizeof(type), "|");
		full_help(d, help, sizeof(help));
		fprintf(f, "  %-18s %-24s %-14s %s\n", d->pattern, type,
			d->def ? (*d->def ? d->def : "\"\"") : "-", help);
	}
}

void config_print_markdown(FILE *f)
{
	char type[128], help[400];

	fprintf(f, "| Setting | Type | Default | Description |\n");
	fprintf(f, "|---|---|---|---|\n");
	for (size_t i = 0; i < sizeof(decls) / sizeof(decls[0]); i++) {
		const struct config_decl *d = &decls[i];
		type_desc(d, type, sizeof(type), ", ");
		fprintf(f, "| `%s` | %s | ", d->pattern, type);
		if (d->def)
			fprintf(f, "`%s`", d->def);
		else
			fprintf(f, "(none)");
		full_help(d, help, sizeof(help));
		fprintf(f, " | %s", help);
		fprintf(f, " |\n");
	}
}
