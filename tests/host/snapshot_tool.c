/* Test helper: rewrites one section of a snapshot file, keeping everything
 * else (RAM included) as it is, with valid checksums, so that the tests can
 * hand tern files that are well-formed but different:
 *
 *   snapshot_tool edit IN OUT SECTION [--version V] [--min-version M]
 *                 [--add NAME=UINT] [--drop NAME]
 *
 * --version/--min-version: the section's TOC versions (a newer min_version
 * than tern reads must be refused, naming the section and both versions);
 * --add: an extra integer field (unknown fields are skipped); --drop: remove
 * a field (missing fields take their default).
 *
 *   snapshot_tool strip IN OUT
 *
 * writes IN's state part alone, declaring no RAM: a small whole file (the
 * fuzzer's seed corpus). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapshot/snapfile.h"
#include "state/state.h"

static int die(const char *msg)
{
	fprintf(stderr, "snapshot_tool: %s\n", msg);
	return 2;
}

static int copy_ram(int in, int out, uint64_t from, uint64_t to, uint64_t len)
{
	static uint8_t buf[1 << 20];
	for (uint64_t done = 0; done < len;) {
		size_t n = len - done < sizeof(buf) ? (size_t)(len - done) : sizeof(buf);
		ssize_t r = pread(in, buf, n, (off_t)(from + done));
		if (r <= 0)
			return -1;
		bool zero = true;
		for (ssize_t i = 0; i < r && zero; i++)
			zero = buf[i] == 0;
		if (!zero && pwrite(out, buf, (size_t)r, (off_t)(to + done)) != r)
			return -1;
		done += (uint64_t)r;
	}
	return ftruncate(out, (off_t)(to + len));
}

int main(int argc, char **argv)
{
	bool strip = argc == 4 && !strcmp(argv[1], "strip");
	if (!strip && (argc < 5 || strcmp(argv[1], "edit")))
		return die("usage: snapshot_tool edit IN OUT SECTION [--version V] [--min-version M] "
			   "[--add NAME=UINT] [--drop NAME] | strip IN OUT");
	const char *in = argv[2], *out = argv[3], *id = strip ? "" : argv[4];
	long version = -1, min_version = -1;
	const char *add = NULL, *drop = NULL;
	for (int i = 5; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--version"))
			version = strtol(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--min-version"))
			min_version = strtol(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--add"))
			add = argv[i + 1];
		else if (!strcmp(argv[i], "--drop"))
			drop = argv[i + 1];
		else
			return die("unknown option");
	}

	struct terr err = { 0 };
	struct snapshot s, w;
	if (snap_open(&s, in, &err)) {
		fprintf(stderr, "snapshot_tool: %s\n", err.msg);
		return 2;
	}
	if (!strip && !snap_find(&s, id))
		return die("no such section");
	snap_init_writer(&w);
	w.host = s.host;
	for (unsigned i = 0; i < s.nsections; i++) {
		const struct snap_section *sec = &s.sections[i];
		struct state_writer b;
		sw_init(&b);
		unsigned v = sec->version, mv = sec->min_version;
		if (!strcmp(sec->id, id)) {
			struct state_reader r;
			if (sr_init(&r, sec->data, sec->length, sec->id, &err)) {
				fprintf(stderr, "snapshot_tool: %s\n", err.msg);
				return 2;
			}
			/* copy field by field, leaving out the dropped one */
			for (size_t k = 0; k < r.nfields; k++) {
				const struct state_field *f = &r.fields[k];
				char name[256];
				snprintf(name, sizeof(name), "%.*s", f->name_len, f->name);
				if (drop && !strcmp(name, drop))
					continue;
				if (f->type == STATE_UINT) {
					uint64_t x = 0;
					for (int j = 7; j >= 0; j--)
						x = x << 8 | f->data[j];
					sw_uint(&b, name, x);
				} else if (f->type == STATE_STR) {
					char *t = strndup((const char *)f->data, f->len);
					sw_str(&b, name, t);
					free(t);
				} else {
					sw_bytes(&b, name, f->data, f->len);
				}
			}
			sr_free(&r);
			if (add) {
				char name[256];
				const char *eq = strchr(add, '=');
				if (!eq)
					return die("--add wants NAME=UINT");
				snprintf(name, sizeof(name), "%.*s", (int)(eq - add), add);
				sw_uint(&b, name, strtoull(eq + 1, NULL, 0));
			}
			if (version >= 0)
				v = (unsigned)version;
			if (min_version >= 0)
				mv = (unsigned)min_version;
		} else {
			sw_bytes(&b, "x", "", 0);   /* placeholder: replaced below */
			b.len = 0;
			if (sec->length) {
				free(b.buf);
				b.buf = malloc(sec->length);
				memcpy(b.buf, sec->data, sec->length);
				b.len = b.cap = sec->length;
			}
		}
		if (snap_add_section(&w, sec->id, sec->kind, v, mv, &b, &err)) {
			fprintf(stderr, "snapshot_tool: %s\n", err.msg);
			return 2;
		}
		sw_free(&b);
	}
	int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return die(strerror(errno));
	if (snap_write_state(&w, fd, strip ? 0 : s.ram_length, &err)) {
		fprintf(stderr, "snapshot_tool: %s\n", err.msg);
		return 2;
	}
	if (!strip && copy_ram(s.fd, fd, s.ram_offset, w.ram_offset, s.ram_length) < 0)
		return die("copying RAM failed");
	close(fd);
	snap_close(&w);
	snap_close(&s);
	return 0;
}
