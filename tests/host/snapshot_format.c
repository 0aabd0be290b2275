/* The snapshot container against docs/snapshot-format.md, without a VM:
 *  - the byte layout of header, sections and TOC as the page gives it;
 *  - every byte of the state part of a real snapshot (the committed
 *    fixture) flipped in turn, two ways: each is reported, none crashes;
 *  - the file cut at every length of the state part, and inside RAM;
 *  - wrong magic, another format version, unknown flags, RAM shorter than
 *    declared, a section's min_version above what the reader supports
 *    (the message names the section and both versions);
 *  - unknown fields skipped, missing ones defaulted.
 * Usage: snapshot_format FIXTURE.snap WORKDIR */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "snapshot/snapfile.h"
#include "state/state.h"

static int failures, checks;
#define CHECK(cond, ...)                                                      \
	do {                                                                  \
		checks++;                                                     \
		if (!(cond)) {                                                \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);  \
			fprintf(stderr, __VA_ARGS__);                         \
			fprintf(stderr, "\n");                                \
			failures++;                                           \
		}                                                             \
	} while (0)

static uint64_t le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* A small snapshot built in memory: three sections, 8 KiB of RAM. */
static uint8_t *build_small(size_t *len, uint64_t *state_len)
{
	struct snapshot s;
	struct terr err = { 0 };
	struct state_writer w;
	snap_init_writer(&s);
	sw_init(&w);
	sw_uint(&w, "alpha", 0x1122334455667788ull);
	sw_str(&w, "name", "tern");
	CHECK(snap_add_section(&s, "first", "demo", 3, 2, &w, &err) == 0, "%s", err.msg);
	sw_free(&w);
	sw_init(&w);   /* empty section */
	CHECK(snap_add_section(&s, "empty", "demo", 1, 1, &w, &err) == 0, "%s", err.msg);
	sw_free(&w);
	sw_init(&w);
	sw_bytes(&w, "blob", "abcde", 5);
	CHECK(snap_add_section(&s, "third.0", "other", 1, 1, &w, &err) == 0, "%s", err.msg);
	sw_free(&w);
	uint8_t *state;
	size_t n;
	CHECK(snap_encode(&s, 8192, &state, &n, &err) == 0, "%s", err.msg);
	*state_len = n;
	uint8_t *buf = calloc(1, n + 8192);
	memcpy(buf, state, n);
	buf[n + 100] = 0xaa;   /* a RAM byte */
	free(state);
	snap_close(&s);
	*len = n + 8192;
	return buf;
}

static void test_layout(void)
{
	size_t len;
	uint64_t sl;
	uint8_t *b = build_small(&len, &sl);
	/* header, docs/snapshot-format.md "Header" */
	CHECK(!memcmp(b, "TERNSNAP", 8), "magic");
	CHECK(le(b + 8, 4) == 1, "format_version");
	CHECK(le(b + 12, 4) == 512, "header_size");
	CHECK(le(b + 16, 8) == 0, "flags");
	uint64_t toc = le(b + 24, 8);
	CHECK(le(b + 32, 4) == 3, "toc_count");
	CHECK(le(b + 36, 4) == 96, "toc_entry_size");
	CHECK(le(b + 40, 8) == XXH3_64bits(b + toc, 3 * 96), "toc_checksum");
	uint64_t ram_off = le(b + 48, 8);
	CHECK(ram_off == ((toc + 3 * 96 + 4095) & ~4095ull) && ram_off == sl, "ram_offset %llu",
	      (unsigned long long)ram_off);
	CHECK(le(b + 56, 8) == 8192, "ram_length");
	CHECK(!strcmp((const char *)b + 72, TERN_VERSION), "tern_version");
	CHECK(le(b + 504, 8) == XXH3_64bits(b, 504), "header_checksum");
	for (int i = 224; i < 504; i++)
		CHECK(b[i] == 0, "reserved header byte %d", i);
	for (int i = 512; i < 4096; i++)
		CHECK(b[i] == 0, "header padding byte %d", i);
	/* sections in TOC order from 4096, 8-aligned */
	const uint8_t *e = b + toc;
	CHECK(!strcmp((const char *)e, "first") && !strcmp((const char *)e + 32, "demo"), "entry 0 names");
	CHECK(le(e + 48, 2) == 3 && le(e + 50, 2) == 2, "entry 0 versions");
	CHECK(le(e + 52, 4) == 0, "entry 0 flags");
	CHECK(le(e + 56, 8) == 4096, "entry 0 offset");
	uint64_t l0 = le(e + 64, 8);
	CHECK(l0 == (2 + 5 + 4 + 8) + (2 + 4 + 4 + 4), "entry 0 length %llu", (unsigned long long)l0);
	CHECK(le(e + 72, 8) == XXH3_64bits(b + 4096, l0), "entry 0 checksum");
	/* the first field: u8 type 1, u8 name length 5, "alpha", u32 8, value */
	CHECK(b[4096] == 1 && b[4097] == 5 && !memcmp(b + 4098, "alpha", 5) && le(b + 4103, 4) == 8 &&
	      le(b + 4107, 8) == 0x1122334455667788ull, "first field bytes");
	CHECK(le(e + 96 + 56, 8) == ((4096 + l0 + 7) & ~7ull), "entry 1 offset is the next multiple of 8");
	CHECK(le(e + 96 + 64, 8) == 0, "entry 1 is empty");
	for (int i = 80; i < 96; i++)
		CHECK(e[i] == 0, "TOC reserved byte %d", i);

	struct snapshot s;
	struct terr err = { 0 };
	CHECK(snap_parse(&s, b, len, "small", &err) == 0, "parse: %s", err.msg);
	if (!err.code) {
		CHECK(s.nsections == 3 && !strcmp(s.sections[2].id, "third.0") &&
		      s.sections[2].length == 5 + 2 + 4 + 4 && s.ram_length == 8192, "parsed sections");
		snap_close(&s);
	}
	free(b);
}

static int parse(const uint8_t *b, size_t len, struct terr *err)
{
	struct snapshot s;
	terr_clear(err);
	int r = snap_parse(&s, b, len, "f", err);
	if (r == 0)
		snap_close(&s);
	return r;
}

/* Every byte of [0, state_len) damaged in turn must be reported. */
static void test_flips(const uint8_t *file, size_t len, uint64_t state_len, const char *what)
{
	uint8_t *b = malloc(len);
	memcpy(b, file, len);
	struct terr err = { 0 };
	CHECK(parse(b, len, &err) == 0, "%s: the intact file does not parse: %s", what, err.msg);
	unsigned missed = 0;
	for (int pass = 0; pass < 2; pass++) {
		const uint8_t x = pass ? 0xff : 0x01;
		for (uint64_t i = 0; i < state_len; i++) {
			b[i] ^= x;
			int r = parse(b, len, &err);
			b[i] ^= x;
			if (r == 0 || !err.msg[0]) {
				if (missed++ < 10)
					fprintf(stderr, "FAIL: %s: byte %llu ^ 0x%02x was not noticed\n", what,
						(unsigned long long)i, x);
			}
		}
	}
	CHECK(missed == 0, "%s: %u damaged bytes not reported", what, missed);
	fprintf(stderr, "%s: %llu bytes of state, each flipped two ways: all reported\n", what,
		(unsigned long long)state_len);
	free(b);
}

static void test_truncation(const uint8_t *file, size_t len, uint64_t state_len, const char *what)
{
	struct terr err = { 0 };
	unsigned missed = 0;
	for (uint64_t n = 0; n < state_len; n++)
		if (parse(file, n, &err) == 0)
			missed++;
	CHECK(missed == 0, "%s: %u truncated lengths accepted", what, missed);
	/* inside RAM: "RAM is shorter than declared" */
	uint64_t cuts[] = { state_len, state_len + 1, state_len + 4096, len - 4096, len - 1 };
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		if (cuts[i] >= len)
			continue;
		CHECK(parse(file, cuts[i], &err) < 0 && strstr(err.msg, "RAM is shorter than declared"),
		      "%s: cut at %llu: %s", what, (unsigned long long)cuts[i], err.msg);
	}
}

static void rehash_header(uint8_t *b)
{
	put_le(b + 504, XXH3_64bits(b, 504), 8);
}

static void test_header_errors(const uint8_t *file, size_t len)
{
	uint8_t *b = malloc(len);
	struct terr err = { 0 };

	memcpy(b, file, len);
	memcpy(b, "QEVM\0\0\0\3", 8);
	CHECK(parse(b, len, &err) < 0 && !strcmp(err.msg, "f: not a tern snapshot (bad magic)"),
	      "wrong magic: %s", err.msg);

	memcpy(b, file, len);
	put_le(b + 8, 2, 4);
	rehash_header(b);
	CHECK(parse(b, len, &err) < 0 &&
	      !strcmp(err.msg, "f: snapshot format version 2, this tern reads version 1"),
	      "format version 2: %s", err.msg);

	memcpy(b, file, len);
	put_le(b + 16, 4, 8);
	rehash_header(b);
	CHECK(parse(b, len, &err) < 0 && strstr(err.msg, "header flags 0x4"), "header flags: %s", err.msg);

	memcpy(b, file, len);
	put_le(b + 56, le(b + 56, 8) + 4096, 8);
	rehash_header(b);
	CHECK(parse(b, len, &err) < 0 && strstr(err.msg, "RAM is shorter than declared"),
	      "RAM longer than the file: %s", err.msg);

	CHECK(parse(file, 100, &err) < 0 && strstr(err.msg, "too short for a snapshot header"),
	      "100 bytes: %s", err.msg);
	free(b);
}

/* A section whose min_version is above the reader's: refused by name. */
static void test_versions(void)
{
	struct snapshot s, r;
	struct terr err = { 0 };
	struct state_writer w;
	snap_init_writer(&s);
	sw_init(&w);
	sw_uint(&w, "known", 7);
	sw_uint(&w, "added_in_v3", 9);
	CHECK(snap_add_section(&s, "vcpu.0", "vcpu", 3, 3, &w, &err) == 0, "%s", err.msg);
	CHECK(snap_add_section(&s, "uart.0", "uart16550", 5, 1, &w, &err) == 0, "%s", err.msg);
	sw_free(&w);
	uint8_t *b;
	size_t n;
	CHECK(snap_encode(&s, 0, &b, &n, &err) == 0, "%s", err.msg);
	snap_close(&s);
	CHECK(snap_parse(&r, b, n, "v", &err) == 0, "%s", err.msg);
	struct state_reader rd;
	terr_clear(&err);
	CHECK(snap_section_reader(&r, snap_find(&r, "vcpu.0"), 1, &rd, &err) < 0 &&
	      !strcmp(err.msg, "section vcpu.0 needs a reader of version 3 or newer; this tern reads "
			      "vcpu version 1"), "min_version: %s", err.msg);
	/* newer version, old min_version: loads; unknown fields skipped,
	 * missing ones defaulted */
	terr_clear(&err);
	CHECK(snap_section_reader(&r, snap_find(&r, "uart.0"), 1, &rd, &err) == 0, "%s", err.msg);
	uint64_t v = 0, d = 0;
	CHECK(sr_uint(&rd, "known", 0, &v, &err) == 0 && v == 7, "known field");
	CHECK(sr_uint(&rd, "added_in_v9", 42, &d, &err) == 0 && d == 42, "missing field defaulted");
	sr_free(&rd);
	snap_close(&r);
	free(b);
}

static uint8_t *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return NULL;
	uint8_t *b = malloc((size_t)st.st_size + 1);
	size_t done = 0;
	while (done < (size_t)st.st_size) {
		ssize_t r = read(fd, b + done, (size_t)st.st_size - done);
		if (r <= 0)
			break;
		done += (size_t)r;
	}
	close(fd);
	*len = done;
	return b;
}

/* snap_open on files: one flipped byte per part, truncated files. */
static void test_open(const uint8_t *file, size_t len, uint64_t state_len, const char *dir)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/snapshot_format.snap", dir);
	struct terr err = { 0 };
	struct snapshot s;
	uint64_t offs[] = { 3, 20, 300, 600, 4100, state_len / 2, state_len - 1 };
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		uint8_t c = file[offs[i]] ^ 0x40;
		CHECK(fd >= 0 && write(fd, file, len) == (ssize_t)len &&
		      pwrite(fd, &c, 1, (off_t)offs[i]) == 1, "write %s", path);
		close(fd);
		terr_clear(&err);
		CHECK(snap_open(&s, path, &err) < 0 && strstr(err.msg, path), "open with byte %llu "
		      "flipped: %s", (unsigned long long)offs[i], err.msg);
	}
	uint64_t cuts[] = { 0, 511, 4096, state_len - 1, state_len + 4096 };
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		CHECK(fd >= 0 && write(fd, file, cuts[i]) == (ssize_t)cuts[i], "write");
		close(fd);
		terr_clear(&err);
		CHECK(snap_open(&s, path, &err) < 0, "open of a file cut at %llu succeeded",
		      (unsigned long long)cuts[i]);
	}
	unlink(path);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: snapshot_format FIXTURE.snap WORKDIR\n");
		return 2;
	}
	test_layout();
	test_versions();

	size_t slen;
	uint64_t ssl;
	uint8_t *small = build_small(&slen, &ssl);
	test_flips(small, slen, ssl, "small");
	test_truncation(small, slen, ssl, "small");
	free(small);

	size_t len;
	uint8_t *fx = slurp(argv[1], &len);
	CHECK(fx != NULL, "cannot read %s", argv[1]);
	if (fx) {
		struct snapshot s;
		struct terr err = { 0 };
		CHECK(snap_parse(&s, fx, len, "fixture", &err) == 0, "fixture: %s", err.msg);
		uint64_t sl = s.state_len;
		if (!err.code)
			snap_close(&s);
		test_flips(fx, len, sl, "fixture");
		test_truncation(fx, len, sl, "fixture");
		test_header_errors(fx, len);
		test_open(fx, len, sl, argv[2]);
		free(fx);
	}
	fprintf(stderr, "%d checks, %d failed\n", checks, failures);
	if (!failures)
		printf("OK\n");
	return failures ? 1 : 0;
}
