/* Unit tests of src/config: getters, -o/-k parsing, %() expansion, dumps,
 * declarations, and that docs/config.md matches the declarations. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"
#include "docs_table.h"

static struct config *cfg;
static struct terr e;

static int setup(void **state)
{
	(void)state;
	cfg = config_new();
	terr_clear(&e);
	return cfg ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	config_free(cfg);
	return 0;
}

static void set_ok(const char *name, const char *value)
{
	struct terr err = { 0 };
	if (config_set(cfg, name, value, &err) != 0)
		fail_msg("set %s=%s: %s", name, value, err.msg);
}

/* r must be an error and e must hold exactly msg; clears e for the next one. */
static void expect_err(int r, const char *msg)
{
	if (r >= 0)
		fail_msg("expected failure \"%s\", got %d", msg, r);
	assert_int_equal(r, e.code);
	assert_string_equal(e.msg, msg);
	terr_clear(&e);
}

static void set_fails(const char *name, const char *value, const char *msg)
{
	const char *before = config_get_raw(cfg, name);
	char *copy = before ? strdup(before) : NULL;
	expect_err(config_set(cfg, name, value, &e), msg);
	if (copy)
		assert_string_equal(config_get_raw(cfg, name), copy);   /* unchanged */
	else
		assert_false(config_is_set(cfg, name));
	free(copy);
}

static char *write_tmp(const char *text)
{
	static char path[64];
	strcpy(path, "/tmp/tern-config-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

/* ---- getters ---- */

static void test_bool(void **state)
{
	(void)state;
	bool b = false;
	assert_int_equal(config_get_bool(cfg, "console.input", &b, &e), 0);
	assert_true(b);                                   /* default true */
	assert_int_equal(config_get_bool(cfg, "rng.enable", &b, &e), 0);
	assert_false(b);
	const char *yes[] = { "true", "yes", "on", "1", "TRUE", "Yes" };
	const char *no[] = { "false", "no", "off", "0", "OFF" };
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		set_ok("rng.enable", yes[i]);
		assert_int_equal(config_get_bool(cfg, "rng.enable", &b, &e), 0);
		assert_true(b);
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		set_ok("rng.enable", no[i]);
		assert_int_equal(config_get_bool(cfg, "rng.enable", &b, &e), 0);
		assert_false(b);
	}
	expect_err(config_set(cfg, "rng.enable", "maybe", &e),
		   "rng.enable: \"maybe\" is not a bool (expected true/false, yes/no, on/off, 1/0)");
	expect_err(config_set(cfg, "rng.enable", "", &e),
		   "rng.enable: \"\" is not a bool (expected true/false, yes/no, on/off, 1/0)");
	assert_string_equal(config_get_raw(cfg, "rng.enable"), "OFF");  /* unchanged by failures */
}

static void test_int(void **state)
{
	(void)state;
	int64_t v = 0;
	assert_int_equal(config_get_int(cfg, "cpus", &v, &e), 0);
	assert_int_equal(v, 1);
	set_ok("cpus", "4");
	assert_int_equal(config_get_int(cfg, "cpus", &v, &e), 0);
	assert_int_equal(v, 4);
	set_ok("cpus", "0x10");
	assert_int_equal(config_get_int(cfg, "cpus", &v, &e), 0);
	assert_int_equal(v, 16);
	set_ok("cpus", "255");
	set_fails("disk.0.serial", "123456789012345678901",
		  "disk.0.serial: \"123456789012345678901\" is not valid (expected at most 20 bytes)");
	expect_err(config_set(cfg, "cpus", "0", &e), "cpus: \"0\" is out of range (expected 1..255)");
	expect_err(config_set(cfg, "cpus", "256", &e), "cpus: \"256\" is out of range (expected 1..255)");
	expect_err(config_set(cfg, "cpus", "-1", &e), "cpus: \"-1\" is out of range (expected 1..255)");
	expect_err(config_set(cfg, "cpus", "99999999999999999999", &e),
		   "cpus: \"99999999999999999999\" is out of range (expected 1..255)");
	expect_err(config_set(cfg, "cpus", "two", &e), "cpus: \"two\" is not an integer (expected 1..255)");
	expect_err(config_set(cfg, "cpus", "4x", &e), "cpus: \"4x\" is not an integer (expected 1..255)");
	expect_err(config_set(cfg, "cpus", "0x", &e), "cpus: \"0x\" is not an integer (expected 1..255)");
	expect_err(config_set(cfg, "cpus", "", &e), "cpus: \"\" is not an integer (expected 1..255)");
	assert_int_equal(config_get_int(cfg, "cpus", &v, &e), 0);
	assert_int_equal(v, 255);
}

static uint64_t size_of(const char *s)
{
	uint64_t v = 0;
	set_ok("memory.size", s);
	if (config_get_size(cfg, "memory.size", &v, &e) != 0)
		fail_msg("%s: %s", s, e.msg);
	return v;
}

static void test_size(void **state)
{
	(void)state;
	uint64_t v = 0;
	assert_int_equal(config_get_size(cfg, "memory.size", &v, &e), 0);
	assert_int_equal(v, 256ull << 20);                /* default 256M */
	assert_int_equal(size_of("512M"), 512ull << 20);
	assert_int_equal(size_of("2G"), 2ull << 30);
	assert_int_equal(size_of("2g"), 2ull << 30);
	assert_int_equal(size_of("1T"), 1ull << 40);
	assert_int_equal(size_of("1024k"), 1ull << 20);
	assert_int_equal(size_of("1048576"), 1ull << 20);
	assert_int_equal(size_of("16777215T"), 16777215ull << 40);
	assert_int_equal(size_of("18446744073709551615"), UINT64_MAX);
	expect_err(config_set(cfg, "memory.size", "12X", &e),
		   "memory.size: \"12X\" is not a size (examples: 512M, 2G)");
	expect_err(config_set(cfg, "memory.size", "1.5G", &e),
		   "memory.size: \"1.5G\" is not a size (examples: 512M, 2G)");
	expect_err(config_set(cfg, "memory.size", "M", &e),
		   "memory.size: \"M\" is not a size (examples: 512M, 2G)");
	expect_err(config_set(cfg, "memory.size", "1MB", &e),
		   "memory.size: \"1MB\" is not a size (examples: 512M, 2G)");
	expect_err(config_set(cfg, "memory.size", "-1G", &e),
		   "memory.size: \"-1G\" is not a size (examples: 512M, 2G)");
	expect_err(config_set(cfg, "memory.size", "", &e),
		   "memory.size: \"\" is not a size (examples: 512M, 2G)");
	expect_err(config_set(cfg, "memory.size", "16777216T", &e),
		   "memory.size: \"16777216T\" is too large (more than 64 bits)");
	expect_err(config_set(cfg, "memory.size", "18446744073709551616", &e),
		   "memory.size: \"18446744073709551616\" is too large (more than 64 bits)");
	expect_err(config_set(cfg, "memory.size", "99999999999999999999999G", &e),
		   "memory.size: \"99999999999999999999999G\" is too large (more than 64 bits)");
	expect_err(config_set(cfg, "memory.size", "4K", &e),
		   "memory.size: \"4K\" is too small (at least 1M)");
	assert_int_equal(size_of("1M"), 1ull << 20);
}

static void test_path_and_string(void **state)
{
	(void)state;
	const char *s = "x";
	assert_int_equal(config_get_path(cfg, "kernel", &s, &e), 0);
	assert_null(s);                                   /* no value, no default */
	assert_int_equal(config_get_path(cfg, "console.path", &s, &e), 0);
	assert_string_equal(s, "stdio");
	set_fails("kernel", "", "kernel: \"\" is not a path (expected a file name)");
	set_ok("kernel", "/boot/vmlinuz with space");
	assert_int_equal(config_get_path(cfg, "kernel", &s, &e), 0);
	assert_string_equal(s, "/boot/vmlinuz with space");
	assert_int_equal(config_get_str(cfg, "cmdline", &s, &e), 0);
	assert_string_equal(s, "console=ttyS0");
	set_ok("cmdline", "");                            /* empty string is a value */
	assert_int_equal(config_get_str(cfg, "cmdline", &s, &e), 0);
	assert_string_equal(s, "");
	/* get_str reads any type */
	assert_int_equal(config_get_str(cfg, "memory.size", &s, &e), 0);
	assert_string_equal(s, "256M");
	/* checked strings */
	set_fails("name", "a/b", "name: \"a/b\" is not valid (expected up to 64 letters, digits, "
		  "'.', '_', '-', not starting with '.')");
	set_fails("name", ".hidden", "name: \".hidden\" is not valid (expected up to 64 letters, digits, "
		  "'.', '_', '-', not starting with '.')");
	set_ok("name", "vm-1.test_2");
	set_fails("net.0.tap", "tap/0", "net.0.tap: \"tap/0\" is not valid (expected an interface name "
		  "of 1 to 15 bytes without '/', ':' or spaces)");
	set_fails("net.0.tap", "a123456789012345", "net.0.tap: \"a123456789012345\" is not valid "
		  "(expected an interface name of 1 to 15 bytes without '/', ':' or spaces)");
	set_ok("net.0.tap", "tap0");
	set_ok("disk.0.serial", "12345678901234567890");
}

static void test_enum(void **state)
{
	(void)state;
	unsigned idx = 9;
	assert_int_equal(config_get_enum(cfg, "on_reboot", &idx, &e), 0);
	assert_int_equal(idx, 0);
	set_ok("on_reboot", "restart");
	assert_int_equal(config_get_enum(cfg, "on_reboot", &idx, &e), 0);
	assert_int_equal(idx, 1);
	assert_int_equal(config_get_enum(cfg, "disk.3.format", &idx, &e), 0);
	assert_int_equal(idx, 0);                         /* raw */
	set_ok("disk.3.format", "vhd");
	assert_int_equal(config_get_enum(cfg, "disk.3.format", &idx, &e), 0);
	assert_int_equal(idx, 4);
	set_fails("on_reboot", "reset", "on_reboot: \"reset\" is not one of: exit, restart");
	set_fails("disk.0.format", "QCOW2", "disk.0.format: \"QCOW2\" is not one of: raw, qcow2, vmdk, vdi, vhd");
	set_fails("net.1.backend", "bridge", "net.1.backend: \"bridge\" is not one of: user, tap");
}

static void test_mac(void **state)
{
	(void)state;
	uint8_t mac[6];
	expect_err(config_get_mac(cfg, "net.0.mac", mac, &e), "net.0.mac: not set and has no default");
	set_ok("net.0.mac", "52:54:00:Ab:cD:0f");
	assert_int_equal(config_get_mac(cfg, "net.0.mac", mac, &e), 0);
	const uint8_t want[6] = { 0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f };
	assert_memory_equal(mac, want, 6);
	const char *bad[] = { "52:54:00:12:34", "52:54:00:12:34:56:78", "52-54-00-12-34-56",
			      "5:54:00:12:34:56", "52:54:00:12:34:5g", "", "525400123456" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char msg[200];
		snprintf(msg, sizeof(msg), "net.1.mac: \"%s\" is not a MAC address "
			 "(expected six hex pairs like 52:54:00:12:34:56)", bad[i]);
		set_fails("net.1.mac", bad[i], msg);
	}
	set_fails("net.1.mac", "01:00:5e:00:00:01",
		  "net.1.mac: \"01:00:5e:00:00:01\" is a multicast address (expected a unicast MAC address)");
}

static void test_wrong_getter(void **state)
{
	(void)state;
	bool b;
	uint64_t sz;
	const char *s;
	expect_err(config_get_bool(cfg, "cpus", &b, &e), "cpus: is of type int, read as bool (program error)");
	expect_err(config_get_size(cfg, "cpus", &sz, &e), "cpus: is of type int, read as size (program error)");
	expect_err(config_get_path(cfg, "cmdline", &s, &e),
		   "cmdline: is of type string, read as path (program error)");
	expect_err(config_get_bool(cfg, "memroy.size", &b, &e),
		   "memroy.size: unknown setting (did you mean memory.size?)");
}

/* ---- names ---- */

static void test_unknown_names(void **state)
{
	(void)state;
	set_fails("memroy.size", "1G", "memroy.size: unknown setting (did you mean memory.size?)");
	set_fails("cpu", "1", "cpu: unknown setting (did you mean cpus?)");
	set_fails("disk.0.pth", "x", "disk.0.pth: unknown setting (did you mean disk.0.path?)");
	set_fails("disk.12.fromat", "raw", "disk.12.fromat: unknown setting (did you mean disk.12.format?)");
	set_fails("disk.01.path", "x", "disk.01.path: unknown setting (did you mean disk.1.path?)");
	set_fails("disk.x.path", "x", "disk.x.path: unknown setting (did you mean disk.0.path?)");
	set_fails("disk.1000.path", "x", "disk.1000.path: index out of range (0..999, no leading zeros)");
	set_fails("disk.path", "x", "disk.path: unknown setting (did you mean disk.0.path?)");
	set_fails("frobnicate", "x", "frobnicate: unknown setting (tern --help-config lists them)");
	set_fails("", "x", ": unknown setting (tern --help-config lists them)");
	set_fails("memory.size.", "1G", "memory.size.: unknown setting (did you mean memory.size?)");
	set_fails("Memory.Size", "1G", "Memory.Size: unknown setting (did you mean memory.size?)");
	set_ok("disk.999.path", "/x");
	set_ok("disk.0.path", "/y");
	set_ok("net.10.backend", "tap");
}

static void test_value_chars(void **state)
{
	(void)state;
	const char *ctl = "cmdline: value contains a control character (newlines and tabs are not allowed)";
	set_fails("cmdline", "a\nb", ctl);
	set_fails("cmdline", "a\tb", ctl);
	set_fails("cmdline", "a\rb", ctl);
	set_fails("cmdline", "a\x7f", ctl);
	set_fails("cmdline", " a", "cmdline: value \" a\" has leading or trailing spaces");
	set_fails("cmdline", "a ", "cmdline: value \"a \" has leading or trailing spaces");
	set_fails("cmdline", "\xc3(", "cmdline: value is not valid UTF-8");
	set_fails("cmdline", "\xed\xa0\x80", "cmdline: value is not valid UTF-8");  /* surrogate */
	set_fails("cmdline", "\xc0\xaf", "cmdline: value is not valid UTF-8");      /* overlong */
	set_ok("cmdline", "caf\xc3\xa9 \xf0\x9f\x90\xa6 a=b #c");
	char *big = malloc(CONFIG_MAX_VALUE + 2);
	memset(big, 'a', CONFIG_MAX_VALUE + 1);
	big[CONFIG_MAX_VALUE + 1] = '\0';
	set_fails("cmdline", big, "cmdline: value is too long (16385 bytes, at most 16384)");
	big[CONFIG_MAX_VALUE] = '\0';
	set_ok("cmdline", big);
	free(big);
}

/* ---- -o and -k ---- */

static void test_option(void **state)
{
	(void)state;
	assert_int_equal(config_set_option(cfg, "  memory.size =  1G ", &e), 0);
	assert_string_equal(config_get_raw(cfg, "memory.size"), "1G");
	assert_int_equal(config_set_option(cfg, "cmdline=a=b c", &e), 0);
	assert_string_equal(config_get_raw(cfg, "cmdline"), "a=b c");
	assert_int_equal(config_set_option(cfg, "cmdline=", &e), 0);
	assert_string_equal(config_get_raw(cfg, "cmdline"), "");
	expect_err(config_set_option(cfg, "memory.size", &e), "-o \"memory.size\": expected name=value");
	expect_err(config_set_option(cfg, "=1G", &e), "-o \"=1G\": expected name=value");
	expect_err(config_set_option(cfg, "memory.size=12X", &e),
		   "memory.size: \"12X\" is not a size (examples: 512M, 2G)");
}

static void test_file(void **state)
{
	(void)state;
	const char *text =
		"# a comment\n"
		"\n"
		"   \t\n"
		"  memory.size = 2G  \n"
		"cpus=2\r\n"
		"\t# indented comment\n"
		"cmdline = console=ttyS0 #not a comment\n"
		"cpus=3\n"
		"kernel=/k";                                  /* no final newline */
	char *path = write_tmp(text);
	assert_int_equal(config_load_file(cfg, path, &e), 0);
	unlink(path);
	assert_string_equal(config_get_raw(cfg, "memory.size"), "2G");
	assert_string_equal(config_get_raw(cfg, "cpus"), "3");       /* later line wins */
	assert_string_equal(config_get_raw(cfg, "cmdline"), "console=ttyS0 #not a comment");
	assert_string_equal(config_get_raw(cfg, "kernel"), "/k");

	assert_int_equal(config_load_string(cfg, "", 0, "empty", &e), 0);
}

static void test_file_errors(void **state)
{
	(void)state;
	char msg[600];
	set_ok("cpus", "7");
	char *path = write_tmp("cpus=2\n# c\n\nmemory.size=12X\n");
	snprintf(msg, sizeof(msg), "%s:4: memory.size: \"12X\" is not a size (examples: 512M, 2G)", path);
	expect_err(config_load_file(cfg, path, &e), msg);
	assert_string_equal(config_get_raw(cfg, "cpus"), "7");      /* all or nothing */
	unlink(path);

	path = write_tmp("cpus=2\njust words\n");
	snprintf(msg, sizeof(msg), "%s:2: expected name=value, got \"just words\"", path);
	expect_err(config_load_file(cfg, path, &e), msg);
	unlink(path);

	path = write_tmp("\n\nmemroy.size=1G\n");
	snprintf(msg, sizeof(msg), "%s:3: memroy.size: unknown setting (did you mean memory.size?)", path);
	expect_err(config_load_file(cfg, path, &e), msg);
	unlink(path);

	expect_err(config_load_file(cfg, "/nonexistent/tern.conf", &e),
		   "/nonexistent/tern.conf: No such file or directory");
	expect_err(config_load_file(cfg, "/", &e), "/: Is a directory");
	expect_err(config_load_string(cfg, "cpus=1\ncmdline=a\0b\n", 17, "snap", &e),
		   "snap:2: line contains a NUL byte");
	assert_string_equal(config_get_raw(cfg, "cpus"), "7");
}

static void test_override_order(void **state)
{
	(void)state;
	/* tern -o cpus=2 -k FILE -o memory.size=1G: FILE overrides the first -o */
	char *path = write_tmp("cpus=4\nmemory.size=512M\n");
	assert_int_equal(config_set_option(cfg, "cpus=2", &e), 0);
	assert_int_equal(config_set_option(cfg, "memory.size=2G", &e), 0);
	assert_int_equal(config_load_file(cfg, path, &e), 0);
	assert_int_equal(config_set_option(cfg, "memory.size=1G", &e), 0);
	unlink(path);
	assert_string_equal(config_get_raw(cfg, "cpus"), "4");
	assert_string_equal(config_get_raw(cfg, "memory.size"), "1G");
}

/* ---- expansion ---- */

static void test_expand(void **state)
{
	(void)state;
	const char *s;
	set_ok("name", "vm1");
	set_ok("control.path", "/run/tern/%(name).sock");
	set_ok("console.path", "%(control.path).log");
	assert_int_equal(config_get_path(cfg, "console.path", &s, &e), 0);
	assert_string_equal(s, "/run/tern/vm1.sock.log");
	assert_string_equal(config_get_raw(cfg, "console.path"), "%(control.path).log");
	/* a default is expanded too, and the value seen is the current one */
	set_ok("cmdline", "x cpus=%(cpus) mem=%(memory.size)");
	assert_int_equal(config_get_str(cfg, "cmdline", &s, &e), 0);
	assert_string_equal(s, "x cpus=1 mem=256M");
	set_ok("cpus", "3");
	assert_int_equal(config_get_str(cfg, "cmdline", &s, &e), 0);
	assert_string_equal(s, "x cpus=3 mem=256M");
	/* %% */
	set_ok("cmdline", "100%% %%(name) %(name)%%");
	assert_int_equal(config_get_str(cfg, "cmdline", &s, &e), 0);
	assert_string_equal(s, "100% %(name) vm1%");
	/* typed getter through a reference, and %% in a typed value */
	set_ok("disk.0.serial", "4");
	set_ok("cpus", "%(disk.0.serial)");
	int64_t v;
	assert_int_equal(config_get_int(cfg, "cpus", &v, &e), 0);
	assert_int_equal(v, 4);
	set_fails("memory.size", "1%%", "memory.size: \"1%\" (from \"1%%\") is not a size (examples: 512M, 2G)");
	set_ok("memory.size", "%(name)");                 /* checked when read */
	uint64_t sz;
	expect_err(config_get_size(cfg, "memory.size", &sz, &e),
		   "memory.size: \"vm1\" (from \"%(name)\") is not a size (examples: 512M, 2G)");
	expect_err(config_check(cfg, &e),
		   "memory.size: \"vm1\" (from \"%(name)\") is not a size (examples: 512M, 2G)");
	set_ok("memory.size", "%(disk.0.serial)G");
	assert_int_equal(config_check(cfg, &e), 0);
	assert_int_equal(config_get_size(cfg, "memory.size", &sz, &e), 0);
	assert_int_equal(sz, 4ull << 30);
}

static void test_expand_errors(void **state)
{
	(void)state;
	const char *s;
	set_ok("name", "%(cmdline)");
	set_ok("cmdline", "a %(vconsole.path) b");
	set_ok("vconsole.path", "%(name)");
	expect_err(config_get_str(cfg, "name", &s, &e), "name: reference loop name -> cmdline -> vconsole.path -> name");
	expect_err(config_get_str(cfg, "cmdline", &s, &e),
		   "cmdline: reference loop cmdline -> vconsole.path -> name -> cmdline");
	expect_err(config_check(cfg, &e), "cmdline: reference loop cmdline -> vconsole.path -> name -> cmdline");
	set_ok("name", "%(name)");
	expect_err(config_get_str(cfg, "name", &s, &e), "name: reference loop name -> name");
	set_ok("name", "%(kernel)");
	expect_err(config_get_str(cfg, "cmdline", &s, &e),
		   "cmdline: reference to kernel, which is not set (cmdline -> vconsole.path -> name -> kernel)");
	/* at set time */
	set_fails("initrd", "%(memroy.size)", "initrd: %(memroy.size) refers to an unknown setting (did you mean memory.size?)");
	set_fails("initrd", "%(nope)", "initrd: %(nope) refers to an unknown setting");
	set_fails("initrd", "%()", "initrd: %() refers to an unknown setting");
	set_fails("initrd", "%(disk.N.path)", "initrd: %(disk.N.path) refers to an unknown setting (did you mean disk.0.path?)");
	set_fails("initrd", "50%", "initrd: \"50%\" has a lone % (write %% for a literal %)");
	set_fails("initrd", "%x", "initrd: \"%x\" has a lone % (write %% for a literal %)");
	set_fails("initrd", "a%(name", "initrd: \"a%(name\" has an unterminated %(");
	/* deep chains and blow-ups stay bounded */
	char name[32], val[64];
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "disk.%d.serial", i);
		snprintf(val, sizeof(val), "%%(disk.%d.serial)", i + 1);
		set_ok(name, val);
	}
	expect_err(config_get_str(cfg, "disk.0.serial", &s, &e),
		   "disk.0.serial: references nested more than 15 deep (disk.0.serial -> disk.1.serial -> "
		   "disk.2.serial -> disk.3.serial -> disk.4.serial -> disk.5.serial -> disk.6.serial -> "
		   "disk.7.serial -> disk.8.serial -> disk.9.serial -> disk.10.serial -> disk.11.serial -> "
		   "disk.12.serial -> disk.13.serial -> disk.14.serial -> disk.15.serial)");
	/* 2^12 references to an empty value */
	for (int i = 0; i < 12; i++) {
		snprintf(name, sizeof(name), "net.%d.hostfwd", i);
		snprintf(val, sizeof(val), "%%(net.%d.hostfwd)%%(net.%d.hostfwd)", i + 1, i + 1);
		set_ok(name, val);
	}
	set_ok("net.12.hostfwd", "");
	expect_err(config_get_str(cfg, "net.0.hostfwd", &s, &e), "net.0.hostfwd: more than 4096 references to expand");
	set_ok("net.12.hostfwd", "0123456789");
	set_ok("net.0.hostfwd", "%(net.2.hostfwd)");      /* 1024 x 10 bytes: fine */
	assert_int_equal(config_get_str(cfg, "net.0.hostfwd", &s, &e), 0);
	assert_int_equal(strlen(s), 10240);
	set_ok("net.0.hostfwd", "%(net.1.hostfwd)");      /* 2048 x 10 bytes: too long */
	expect_err(config_get_str(cfg, "net.0.hostfwd", &s, &e), "net.0.hostfwd: expands to more than 16384 bytes");
}

/* ---- dumps ---- */

static void fill_sample(void)
{
	set_ok("memory.size", "1G");
	set_ok("cpus", "2");
	set_ok("disk.10.path", "/img/ten.qcow2");
	set_ok("disk.2.path", "/img/two = 2 #x");
	set_ok("disk.2.format", "qcow2");
	set_ok("name", "vm");
	set_ok("cmdline", "console=ttyS0 100%% caf\xc3\xa9 %(name) \"q\" \\n");
	set_ok("control.path", "%(name).sock");
	set_ok("disk.2.serial", "");
	set_ok("net.0.mac", "52:54:00:12:34:56");
}

static void test_dump_kv(void **state)
{
	(void)state;
	fill_sample();
	char *text = config_dump_kv_string(cfg);
	assert_non_null(text);
	assert_string_equal(text,
		"cmdline=console=ttyS0 100%% caf\xc3\xa9 %(name) \"q\" \\n\n"
		"control.path=%(name).sock\n"
		"cpus=2\n"
		"disk.2.format=qcow2\n"
		"disk.2.path=/img/two = 2 #x\n"
		"disk.2.serial=\n"
		"disk.10.path=/img/ten.qcow2\n"
		"memory.size=1G\n"
		"name=vm\n"
		"net.0.mac=52:54:00:12:34:56\n");
	struct config *back = config_new();
	assert_int_equal(config_load_string(back, text, strlen(text), "dump", &e), 0);
	assert_true(config_equal(cfg, back));
	/* and through a file, as -k would */
	char *path = write_tmp(text);
	struct config *back2 = config_new();
	assert_int_equal(config_load_file(back2, path, &e), 0);
	unlink(path);
	assert_true(config_equal(cfg, back2));
	set_ok("cpus", "3");
	assert_false(config_equal(cfg, back));
	config_free(back);
	config_free(back2);
	free(text);
}

static void test_dump_json(void **state)
{
	(void)state;
	fill_sample();
	json_t *j = config_to_json(cfg);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "disk.2.path")), "/img/two = 2 #x");
	char *s = json_dumps(j, JSON_SORT_KEYS);
	json_decref(j);
	json_t *j2 = json_loads(s, 0, NULL);
	assert_non_null(j2);
	struct config *back = config_new();
	assert_int_equal(config_from_json(back, j2, &e), 0);
	assert_true(config_equal(cfg, back));
	json_decref(j2);
	free(s);

	/* bad JSON input is all or nothing */
	j2 = json_loads("{\"cpus\": \"3\", \"memory.size\": 5}", 0, NULL);
	expect_err(config_from_json(back, j2, &e), "memory.size: expected a string value in the configuration JSON");
	json_decref(j2);
	j2 = json_loads("{\"cpus\": \"3\", \"memroy.size\": \"1G\"}", 0, NULL);
	expect_err(config_from_json(back, j2, &e), "memroy.size: unknown setting (did you mean memory.size?)");
	json_decref(j2);
	j2 = json_loads("[]", 0, NULL);
	expect_err(config_from_json(back, j2, &e), "configuration JSON: expected an object of \"name\": \"value\"");
	json_decref(j2);
	j2 = json_loads("{\"cmdline\": \"a\\u0000b\"}", JSON_ALLOW_NUL, NULL);
	expect_err(config_from_json(back, j2, &e), "cmdline: value contains a NUL byte");
	json_decref(j2);
	assert_true(config_equal(cfg, back));
	config_free(back);
}

/* ---- tree operations ---- */

static int count_cb(const char *name, const char *raw, void *opaque)
{
	(void)raw;
	char *acc = opaque;
	strcat(acc, name);
	strcat(acc, ";");
	return 0;
}

static int stop_cb(const char *name, const char *raw, void *opaque)
{
	(void)name;
	(void)raw;
	(void)opaque;
	return 42;
}

static void test_tree_ops(void **state)
{
	(void)state;
	fill_sample();
	set_ok("disk.0.readonly", "yes");
	unsigned idx[8];
	assert_int_equal(config_indices(cfg, "disk", idx, 8), 3);
	assert_int_equal(idx[0], 0);
	assert_int_equal(idx[1], 2);
	assert_int_equal(idx[2], 10);
	assert_int_equal(config_indices(cfg, "disk", idx, 1), 3);
	assert_int_equal(config_indices(cfg, "net", idx, 8), 1);
	assert_int_equal(config_indices(cfg, "rng", idx, 8), 0);
	assert_int_equal(config_indices(cfg, "dis", idx, 8), 0);

	char acc[512] = "";
	assert_int_equal(config_foreach(cfg, "disk", count_cb, acc), 0);
	assert_string_equal(acc, "disk.0.readonly;disk.2.format;disk.2.path;disk.2.serial;disk.10.path;");
	acc[0] = '\0';
	assert_int_equal(config_foreach(cfg, "disk.2", count_cb, acc), 0);
	assert_string_equal(acc, "disk.2.format;disk.2.path;disk.2.serial;");
	acc[0] = '\0';
	assert_int_equal(config_foreach(cfg, "na", count_cb, acc), 0);
	assert_string_equal(acc, "");
	assert_int_equal(config_foreach(cfg, "name", count_cb, acc), 0);
	assert_string_equal(acc, "name;");
	assert_int_equal(config_foreach(cfg, NULL, stop_cb, NULL), 42);

	struct config *c = config_clone(cfg);
	assert_true(config_equal(cfg, c));
	assert_true(config_is_set(c, "disk.10.path"));
	assert_int_equal(config_unset(c, "disk.10.path"), 0);
	assert_int_equal(config_unset(c, "disk.10.path"), -ENOENT);
	assert_false(config_is_set(c, "disk.10.path"));
	assert_true(config_is_set(cfg, "disk.10.path"));
	assert_false(config_equal(cfg, c));
	config_free(c);

	/* fill_defaults: plain settings and each index in use */
	assert_int_equal(config_fill_defaults(cfg, &e), 0);
	assert_string_equal(config_get_raw(cfg, "on_reboot"), "exit");
	assert_string_equal(config_get_raw(cfg, "memory.size"), "1G");     /* kept */
	assert_string_equal(config_get_raw(cfg, "disk.10.format"), "raw");
	assert_string_equal(config_get_raw(cfg, "disk.0.format"), "raw");
	assert_string_equal(config_get_raw(cfg, "disk.2.format"), "qcow2");
	assert_string_equal(config_get_raw(cfg, "disk.10.readonly"), "false");
	assert_string_equal(config_get_raw(cfg, "net.0.backend"), "user");
	assert_false(config_is_set(cfg, "disk.1.format"));
	assert_false(config_is_set(cfg, "kernel"));
	assert_int_equal(config_check(cfg, &e), 0);
}

/* ---- declarations and docs ---- */

static void test_decls(void **state)
{
	(void)state;
	size_t n;
	const struct config_decl *d = config_decls(&n);
	assert_true(n > 10);
	for (size_t i = 0; i < n; i++) {
		char name[128], *p;
		snprintf(name, sizeof(name), "%s", d[i].pattern);
		if ((p = strstr(name, ".N.")))
			p[1] = '7';
		assert_null(strchr(name, 'N'));                 /* N only as "x.N.y" */
		if (config_find_decl(name) != &d[i])
			fail_msg("%s: declared twice or unmatchable", d[i].pattern);
		assert_non_null(d[i].help);
		assert_null(strpbrk(d[i].help, "\n|<>"));         /* one line, safe in markdown */
		if (d[i].type == CONFIG_BOOL || d[i].type == CONFIG_INT ||
		    d[i].type == CONFIG_SIZE || d[i].type == CONFIG_ENUM)
			assert_non_null(d[i].def);
		if (d[i].type == CONFIG_ENUM)
			assert_non_null(d[i].values);
		if (d[i].check)
			assert_non_null(d[i].expect);
		if (d[i].def) {
			struct config *c = config_new();
			struct terr err = { 0 };
			if (config_set(c, name, d[i].def, &err) != 0)
				fail_msg("default of %s: %s", d[i].pattern, err.msg);
			config_free(c);
		}
	}
	/* help lists every setting */
	char *s = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&s, &len);
	config_print_help(f);
	fclose(f);
	for (size_t i = 0; i < n; i++)
		if (!strstr(s, d[i].pattern))
			fail_msg("--help-config lacks %s", d[i].pattern);
	assert_non_null(strstr(s, "exit|restart"));
	free(s);
}

static void test_docs_table_current(void **state)
{
	(void)state;
	size_t len, start, end;
	char *text = docs_read(DOCS_CONFIG_MD, &len);
	if (!text)
		fail_msg("cannot read %s", DOCS_CONFIG_MD);
	if (docs_find(text, &start, &end) < 0)
		fail_msg("%s lacks the settings table markers", DOCS_CONFIG_MD);
	char *table = docs_generate();
	if (strlen(table) != end - start || memcmp(text + start, table, end - start))
		fail_msg("the settings table in docs/config.md is out of date; run "
			 "build/tests/unit/config/config-doc --update docs/config.md");
	free(table);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
		T(test_bool),
		T(test_int),
		T(test_size),
		T(test_path_and_string),
		T(test_enum),
		T(test_mac),
		T(test_wrong_getter),
		T(test_unknown_names),
		T(test_value_chars),
		T(test_option),
		T(test_file),
		T(test_file_errors),
		T(test_override_order),
		T(test_expand),
		T(test_expand_errors),
		T(test_dump_kv),
		T(test_dump_json),
		T(test_tree_ops),
		T(test_decls),
		T(test_docs_table_current),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
