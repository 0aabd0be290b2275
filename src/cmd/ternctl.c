/* ternctl: talk to a running tern over its control socket (docs/control.md,
 * docs/man/ternctl.1).
 *
 * Exit status: 0 done; 1 the VM answered with an error (or the operation
 * failed); 2 usage error; 3 the VM could not be reached or the connection was
 * lost. */
#include "control/client.h"
#include "control/control.h"
#include "snapshot/inspect.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

struct ctl {
	const char *sock;          /* -s */
	const char *name;          /* -n */
	bool json;                 /* --json */
	int timeout_ms;            /* --timeout; -1 = for ever */
	char path[4096];
	char hint[4200];
	struct control_conn conn;
	bool connected;
	int next_id;
};

struct command {
	const char *name;
	const char *usage;         /* arguments, for the usage line */
	const char *summary;       /* one line for the list */
	const char *help;          /* more, for "ternctl help COMMAND" */
	int (*run)(struct ctl *ctl, int argc, char **argv);
};

static const struct command *find_command(const char *name);
static void command_usage(const struct command *c, FILE *f);

/* ---- finding and reaching the VM ------------------------------------- */

static int pick_socket(struct ctl *ctl)
{
	if (ctl->sock) {
		snprintf(ctl->path, sizeof(ctl->path), "%s", ctl->sock);
		snprintf(ctl->hint, sizeof(ctl->hint), "control.path=%s", ctl->sock);
		return 0;
	}
	if (ctl->name) {
		if (control_default_path(ctl->name, ctl->path, sizeof(ctl->path))) {
			fprintf(stderr, "ternctl: the socket path for -n %s is too long\n", ctl->name);
			return EXIT_USAGE;
		}
		snprintf(ctl->hint, sizeof(ctl->hint), "name=%s", ctl->name);
		return 0;
	}
	/* Neither: the one VM in the default directory, if there is one. */
	char dir[4096];
	control_default_dir(dir, sizeof(dir));
	DIR *d = opendir(dir);
	char found[8][256];
	unsigned n = 0;
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			size_t len = strlen(e->d_name);
			if (len > 5 && len < sizeof(found[0]) && !strcmp(e->d_name + len - 5, ".sock")) {
				if (n < 8)
					snprintf(found[n], sizeof(found[n]), "%.*s", (int)(len - 5), e->d_name);
				n++;
			}
		}
		closedir(d);
	}
	if (n == 0) {
		fprintf(stderr, "ternctl: no VM found in %s (start tern with -o name=NAME, or give -s SOCKET)\n",
			dir);
		return EXIT_UNREACHABLE;
	}
	if (n > 1) {
		fprintf(stderr, "ternctl: %u VMs in %s (", n, dir);
		for (unsigned i = 0; i < n && i < 8; i++)
			fprintf(stderr, "%s%s", i ? ", " : "", found[i]);
		fprintf(stderr, "%s): pick one with -n NAME\n", n > 8 ? ", ..." : "");
		return EXIT_USAGE;
	}
	if (control_default_path(found[0], ctl->path, sizeof(ctl->path))) {
		fprintf(stderr, "ternctl: the socket path in %s is too long\n", dir);
		return EXIT_USAGE;
	}
	snprintf(ctl->hint, sizeof(ctl->hint), "name=%s", found[0]);
	return 0;
}

static int ensure_connected(struct ctl *ctl)
{
	if (ctl->connected)
		return 0;
	int r = pick_socket(ctl);
	if (r)
		return r;
	struct terr err = { 0 };
	if (control_conn_open(&ctl->conn, ctl->path, ctl->hint, &err)) {
		fprintf(stderr, "ternctl: %s\n", err.msg);
		return EXIT_UNREACHABLE;
	}
	ctl->connected = true;
	return 0;
}

/* ---- progress -------------------------------------------------------- */

struct progress {
	bool tty;
	bool drawn;
	int last_pct;
	const char *op;
};

static void human_size(char *buf, size_t n, uint64_t v)
{
	if (v >= (1ull << 30))
		snprintf(buf, n, "%.1f GiB", (double)v / (1ull << 30));
	else if (v >= (1ull << 20))
		snprintf(buf, n, "%.1f MiB", (double)v / (1ull << 20));
	else if (v >= 1024)
		snprintf(buf, n, "%.1f KiB", (double)v / 1024);
	else
		snprintf(buf, n, "%llu B", (unsigned long long)v);
}

static void progress_show(struct progress *p, uint64_t done, uint64_t total)
{
	if (total == 0 || done > total)
		done = total;
	int pct = total ? (int)(done * 100 / total) : 100;
	if (p->tty) {
		char bar[31], a[32], b[32];
		int fill = pct * 30 / 100;
		for (int i = 0; i < 30; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[30] = '\0';
		human_size(a, sizeof(a), done);
		human_size(b, sizeof(b), total);
		fprintf(stderr, "\r%s [%s] %3d%%  %s / %s   ", p->op, bar, pct, a, b);
		fflush(stderr);
		p->drawn = true;
	} else if (p->last_pct < 0 || pct >= p->last_pct + 10 || (pct == 100 && p->last_pct != 100)) {
		fprintf(stderr, "%s: %d%%\n", p->op, pct);
	} else {
		return;
	}
	p->last_pct = pct;
}

static void progress_end(struct progress *p)
{
	if (p->tty && p->drawn)
		fputc('\n', stderr);
	p->drawn = false;
}

/* ---- one request ----------------------------------------------------- */

static int read_msg(struct ctl *ctl, json_t **msg)
{
	struct terr err = { 0 };
	int r = control_conn_read(&ctl->conn, ctl->timeout_ms, msg, &err);
	if (r == 1)
		return 0;
	if (r == 0)
		fprintf(stderr, "ternctl: the VM closed the connection before answering\n");
	else if (r == -ETIMEDOUT)
		fprintf(stderr, "ternctl: no answer from the VM within %d s\n", ctl->timeout_ms / 1000);
	else
		fprintf(stderr, "ternctl: %s\n", err.msg);
	return EXIT_UNREACHABLE;
}

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
	if (s)
		printf("%s\n", s);
	free(s);
}

/* Send {"id", "cmd", "args"} (args consumed), wait for its answer. Progress
 * events for it are drawn when progress is set. On success *result holds the
 * "ok" object (caller decrefs). */
static int call(struct ctl *ctl, const char *cmd, json_t *args, json_t **result, struct progress *pg)
{
	*result = NULL;
	int r = ensure_connected(ctl);
	if (r) {
		json_decref(args);
		return r;
	}
	json_t *id = json_integer(++ctl->next_id);
	json_t *req = json_pack("{s:O, s:s, s:o}", "id", id, "cmd", cmd, "args", args ? args : json_object());
	char *line = req ? json_dumps(req, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(req);
	if (!line) {
		json_decref(id);
		fprintf(stderr, "ternctl: out of memory\n");
		return EXIT_ERROR;
	}
	struct terr err = { 0 };
	size_t len = strlen(line);
	line[len] = '\n';   /* replaces the NUL: sent with its length */
	r = control_conn_send(&ctl->conn, line, len + 1, &err);
	free(line);
	if (r) {
		json_decref(id);
		fprintf(stderr, "ternctl: %s\n", err.msg);
		return EXIT_UNREACHABLE;
	}
	for (;;) {
		json_t *msg;
		r = read_msg(ctl, &msg);
		if (r) {
			if (pg)
				progress_end(pg);
			json_decref(id);
			return r;
		}
		json_t *ev = json_object_get(msg, "event");
		if (ev) {
			json_t *data = json_object_get(msg, "data");
			if (pg && json_is_string(ev) && !strcmp(json_string_value(ev), "progress") &&
			    json_equal(json_object_get(data, "id"), id)) {
				json_t *d = json_object_get(data, "done"), *t = json_object_get(data, "total");
				if (json_is_integer(d) && json_is_integer(t) && json_integer_value(d) >= 0 &&
				    json_integer_value(t) >= 0)
					progress_show(pg, (uint64_t)json_integer_value(d),
						      (uint64_t)json_integer_value(t));
			}
			json_decref(msg);
			continue;
		}
		if (!json_equal(json_object_get(msg, "id"), id)) {
			json_decref(msg);     /* someone else's answer: cannot happen on our own connection */
			continue;
		}
		json_decref(id);
		if (pg)
			progress_end(pg);
		json_t *ok = json_object_get(msg, "ok");
		if (ok) {
			*result = json_incref(ok);
			json_decref(msg);
			return EXIT_OK;
		}
		json_t *e = json_object_get(msg, "error");
		const char *m = json_string_value(json_object_get(e, "message"));
		fprintf(stderr, "ternctl: %s\n", m ? m : "the VM answered with an unreadable error");
		if (ctl->json && e) {
			json_t *o = json_pack("{s:O}", "error", e);
			print_json(o);
			json_decref(o);
		}
		json_decref(msg);
		return EXIT_ERROR;
	}
}

/* ---- argument helpers ------------------------------------------------ */

/* Pulls --json and --help out of a command's arguments; the rest stay in
 * argv (compacted). Returns the new argc, or -1 after printing help. */
static int common_args(struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	int k = 0;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--json") || !strcmp(argv[i], "-j")) {
			ctl->json = true;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			command_usage(c, stdout);
			return -1;
		} else {
			argv[k++] = argv[i];
		}
	}
	return k;
}

static int want_args(const struct command *c, int argc, int min, int max)
{
	if (argc < min || argc > max) {
		fprintf(stderr, "ternctl: %s: %s\n", c->name,
			argc < min ? "missing argument" : "too many arguments");
		command_usage(c, stderr);
		return EXIT_USAGE;
	}
	return 0;
}

static int simple(struct ctl *ctl, const char *cmd, int argc, char **argv, json_t **res)
{
	const struct command *c = find_command(cmd);
	argc = common_args(ctl, c, argc, argv);
	if (argc < 0)
		return -1;
	int r = want_args(c, argc, 0, 0);
	if (r)
		return r;
	return call(ctl, cmd, NULL, res, NULL);
}

/* ---- commands -------------------------------------------------------- */

static void print_duration(int64_t ms)
{
	int64_t s = ms / 1000;
	if (s >= 86400)
		printf("%lldd %lldh %lldm %llds\n", (long long)(s / 86400), (long long)(s / 3600 % 24),
		       (long long)(s / 60 % 60), (long long)(s % 60));
	else if (s >= 3600)
		printf("%lldh %lldm %llds\n", (long long)(s / 3600), (long long)(s / 60 % 60), (long long)(s % 60));
	else if (s >= 60)
		printf("%lldm %llds\n", (long long)(s / 60), (long long)(s % 60));
	else
		printf("%.1fs\n", (double)ms / 1000);
}

static int cmd_status(struct ctl *ctl, int argc, char **argv)
{
	json_t *res;
	int r = simple(ctl, "status", argc, argv, &res);
	if (r)
		return r < 0 ? 0 : r;
	if (ctl->json) {
		print_json(res);
	} else {
		char mem[32];
		json_t *v;
		printf("name:    %s\n", json_string_value(json_object_get(res, "name")) ?: "?");
		printf("state:   %s\n", json_string_value(json_object_get(res, "state")) ?: "?");
		printf("uptime:  ");
		print_duration(json_integer_value(json_object_get(res, "uptime_ms")));
		human_size(mem, sizeof(mem), (uint64_t)json_integer_value(json_object_get(res, "memory_bytes")));
		printf("memory:  %s\n", mem);
		printf("cpus:    %lld\n", (long long)json_integer_value(json_object_get(res, "cpus")));
		printf("version: %s\n", json_string_value(json_object_get(res, "version")) ?: "?");
		if ((v = json_object_get(res, "pid")))
			printf("pid:     %lld\n", (long long)json_integer_value(v));
		if ((v = json_object_get(res, "socket")))
			printf("socket:  %s\n", json_string_value(v) ?: "?");
	}
	json_decref(res);
	return 0;
}

static int cmd_plain(struct ctl *ctl, const char *cmd, int argc, char **argv)
{
	json_t *res;
	int r = simple(ctl, cmd, argc, argv, &res);
	if (r)
		return r < 0 ? 0 : r;
	if (ctl->json)
		print_json(res);
	json_decref(res);
	return 0;
}

static int cmd_pause(struct ctl *ctl, int argc, char **argv)
{
	return cmd_plain(ctl, "pause", argc, argv);
}

static int cmd_resume(struct ctl *ctl, int argc, char **argv)
{
	return cmd_plain(ctl, "resume", argc, argv);
}

static int cmd_quit(struct ctl *ctl, int argc, char **argv)
{
	int r = cmd_plain(ctl, "quit", argc, argv);
	if (r || !ctl->connected)
		return r;
	/* tern closes the socket as it exits: wait for that, so that a script
	 * can rely on the VM being gone once we return. */
	for (;;) {
		char *line;
		size_t len;
		struct terr err = { 0 };
		int k = control_conn_read_line(&ctl->conn, ctl->timeout_ms, &line, &len, &err);
		if (k == 1)
			continue;
		if (k == -ETIMEDOUT) {
			fprintf(stderr, "ternctl: the VM accepted quit but is still running after %d s\n",
				ctl->timeout_ms / 1000);
			return EXIT_ERROR;
		}
		return 0;
	}
}

static int cmd_config(struct ctl *ctl, int argc, char **argv)
{
	json_t *res;
	int r = simple(ctl, "config", argc, argv, &res);
	if (r)
		return r < 0 ? 0 : r;
	json_t *cfg = json_object_get(res, "config");
	if (ctl->json) {
		print_json(cfg);
	} else {
		const char *k;
		json_t *v;
		json_object_foreach(cfg, k, v)
			printf("%s=%s\n", k, json_string_value(v) ?: "");
	}
	json_decref(res);
	return 0;
}

static int cmd_commands(struct ctl *ctl, int argc, char **argv)
{
	json_t *res;
	int r = simple(ctl, "commands", argc, argv, &res);
	if (r)
		return r < 0 ? 0 : r;
	if (ctl->json) {
		print_json(res);
	} else {
		size_t i;
		json_t *c;
		json_array_foreach(json_object_get(res, "commands"), i, c)
			printf("  %-16s %s\n", json_string_value(json_object_get(c, "name")) ?: "?",
			       json_string_value(json_object_get(c, "help")) ?: "");
	}
	json_decref(res);
	return 0;
}

/* A path as the VM (whose working directory is not ours) must see it. */
static char *absolute(const char *p)
{
	if (p[0] == '/')
		return strdup(p);
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	char *out;
	if (asprintf(&out, "%s/%s", cwd, p) < 0)
		return NULL;
	return out;
}

static int snapshot_save(struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	bool exit_after = false;
	int k = 0;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--exit"))
			exit_after = true;
		else
			argv[k++] = argv[i];
	}
	int r = want_args(c, k, 1, 1);
	if (r)
		return r;
	char *path = absolute(argv[0]);
	if (!path) {
		fprintf(stderr, "ternctl: %s: cannot make the path absolute: %s\n", argv[0], strerror(errno));
		return EXIT_ERROR;
	}
	struct progress pg = { .tty = isatty(STDERR_FILENO), .last_pct = -1, .op = "snapshot" };
	json_t *res;
	r = call(ctl, "snapshot-save", json_pack("{s:s, s:b}", "path", path, "exit", exit_after), &res, &pg);
	free(path);
	if (r)
		return r;
	if (ctl->json)
		print_json(res);
	json_decref(res);
	return 0;
}

/* ---- snapshot inspect (offline: reads the file, no VM) --------------- */

static void print_size_line(const char *label, uint64_t v)
{
	char b[32];
	human_size(b, sizeof(b), v);
	printf("%-16s %s (%llu bytes)\n", label, b, (unsigned long long)v);
}

static json_int_t jint(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static const char *jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s ? s : "?";
}

static void print_fields(json_t *fields, int indent)
{
	size_t i;
	json_t *f;
	json_array_foreach(fields, i, f) {
		const char *name = jstr(f, "name"), *type = jstr(f, "type");
		json_t *v = json_object_get(f, "value");
		printf("%*s%s", indent, "", name);
		if (!strcmp(type, "uint")) {
			if (json_is_string(v)) {
				printf(" = %s\n", json_string_value(v));
			} else {
				unsigned long long n = (unsigned long long)json_integer_value(v);
				if (n < 10)
					printf(" = %llu\n", n);
				else
					printf(" = %llu (0x%llx)\n", n, n);
			}
		} else if (!strcmp(type, "str") && v) {
			printf(" = \"%s\"\n", json_string_value(v));
		} else if (!strcmp(type, "fields")) {
			printf(": %lld bytes of fields\n", (long long)jint(f, "length"));
			print_fields(json_object_get(f, "fields"), indent + 2);
		} else if (!strcmp(name, "msrs") && indent == 2 && json_is_string(json_object_get(f, "hex")) &&
			   jint(f, "length") % 16 == 0) {
			/* vcpu MSRs: (u32 index, u32 0, u64 value) records, little-endian */
			const char *hex = json_string_value(json_object_get(f, "hex"));
			long long n = (long long)jint(f, "length") / 16;
			printf(": %lld MSRs\n", n);
			for (long long k = 0; k < n && strlen(hex) >= (size_t)(k + 1) * 32; k++) {
				unsigned long long ix = 0, val = 0;
				for (int b = 3; b >= 0; b--)
					ix = ix << 8 | strtoul((char[3]){ hex[k * 32 + 2 * b], hex[k * 32 + 2 * b + 1], 0 }, NULL, 16);
				for (int b = 7; b >= 0; b--)
					val = val << 8 | strtoul((char[3]){ hex[k * 32 + 16 + 2 * b], hex[k * 32 + 17 + 2 * b], 0 }, NULL, 16);
				printf("%*s0x%08llx = 0x%llx\n", indent + 2, "", ix, val);
			}
		} else {
			const char *hex = json_string_value(json_object_get(f, "hex"));
			long long len = (long long)jint(f, "length");
			printf(": %lld bytes%s", len, strcmp(type, "bytes") ? " (not UTF-8)" : "");
			if (hex && *hex) {
				size_t n = strlen(hex);
				printf(":");
				for (size_t k = 0; k < n && k < 64; k += 2)
					printf(" %.2s", hex + k);
				if (n > 64)
					printf(" ...");
			}
			printf("\n");
		}
	}
}

static void print_inspect(json_t *o)
{
	json_t *h = json_object_get(o, "header"), *cpu = json_object_get(h, "cpu");
	json_t *ram = json_object_get(o, "ram");
	printf("%-16s %s\n", "file:", jstr(o, "file"));
	print_size_line("file size:", (uint64_t)jint(o, "file_bytes"));
	printf("%-16s %lld\n", "format version:", (long long)jint(h, "format_version"));
	printf("%-16s tern %s\n", "written by:", jstr(h, "tern_version"));
	printf("%-16s %s (%lld)\n", "created:", jstr(h, "created_utc"), (long long)jint(h, "created"));
	printf("%-16s Linux %s\n", "host kernel:", jstr(h, "kernel"));
	printf("%-16s %s family %lld model %lld stepping %lld\n", "host cpu:", jstr(cpu, "vendor"),
	       (long long)jint(cpu, "family"), (long long)jint(cpu, "model"),
	       (long long)jint(cpu, "stepping"));
	printf("%-16s", "cpu features:");
	size_t i, col = 17;
	json_t *v;
	json_array_foreach(json_object_get(cpu, "features"), i, v) {
		const char *n = json_string_value(v);
		if (!n)
			continue;
		if (col + strlen(n) + 1 > 100) {
			printf("\n%-16s", "");
			col = 17;
		}
		printf(" %s", n);
		col += strlen(n) + 1;
	}
	printf("\n%-16s %s\n", "xcr0 supported:", jstr(cpu, "xcr0_supported"));

	char a[32], b[32];
	human_size(a, sizeof(a), (uint64_t)jint(ram, "size"));
	printf("%-16s %s at byte %lld", "ram:", a, (long long)jint(ram, "offset"));
	if (json_object_get(ram, "data_bytes")) {
		human_size(a, sizeof(a), (uint64_t)jint(ram, "data_bytes"));
		human_size(b, sizeof(b), (uint64_t)jint(ram, "hole_bytes"));
		printf(": %s data, %s holes, %lld data extents", a, b, (long long)jint(ram, "data_extents"));
	}
	printf("\n");
	if (json_object_get(ram, "missing_bytes"))
		printf("%-16s %lld bytes of RAM are missing from the file\n", "", (long long)jint(ram, "missing_bytes"));
	json_array_foreach(json_object_get(ram, "regions"), i, v) {
		human_size(a, sizeof(a), (uint64_t)jint(v, "size"));
		printf("  region %zu:      guest 0x%llx, %s, at RAM offset 0x%llx", i,
		       (unsigned long long)jint(v, "gpa"), a, (unsigned long long)jint(v, "offset"));
		if (json_object_get(v, "data_bytes")) {
			human_size(b, sizeof(b), (uint64_t)jint(v, "data_bytes"));
			printf(", %s data", b);
		}
		printf("\n");
	}

	json_t *secs = json_object_get(o, "sections");
	printf("\nsections (%zu):\n  %-20s %-12s %4s %4s %9s %9s  %s\n", json_array_size(secs), "ID",
	       "KIND", "VER", "MIN", "OFFSET", "LENGTH", "CHECKSUM");
	json_array_foreach(secs, i, v)
		printf("  %-20s %-12s %4lld %4lld %9lld %9lld  %s %s\n", jstr(v, "id"), jstr(v, "kind"),
		       (long long)jint(v, "version"), (long long)jint(v, "min_version"),
		       (long long)jint(v, "offset"), (long long)jint(v, "length"), jstr(v, "checksum"),
		       json_is_true(json_object_get(v, "checksum_ok")) ? "ok" : "MISMATCH");

	json_t *cfg = json_object_get(o, "config");
	if (cfg) {
		const char *k;
		printf("\nconfig:\n");
		json_object_foreach(cfg, k, v)
			printf("  %s=%s\n", k, json_is_string(v) ? json_string_value(v) : "?");
	}
	json_array_foreach(secs, i, v) {
		printf("\nsection %s (%s, version %lld, min_version %lld):\n", jstr(v, "id"), jstr(v, "kind"),
		       (long long)jint(v, "version"), (long long)jint(v, "min_version"));
		if (!json_is_true(json_object_get(v, "checksum_ok")))
			printf("  (damaged: checksum mismatch; fields not shown)\n");
		else if (json_object_get(v, "error"))
			printf("  (fields do not parse: %s)\n", jstr(v, "error"));
		else if (!strcmp(jstr(v, "id"), "config"))
			printf("  json: the configuration above\n");
		else
			print_fields(json_object_get(v, "fields"), 2);
	}
}

static int snapshot_inspect_cmd(struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	int r = want_args(c, argc, 1, 1);
	if (r)
		return r;
	struct terr err = { 0 };
	json_t *o = snapshot_inspect_file(argv[0], &err);
	if (!o) {
		fprintf(stderr, "ternctl: %s\n", err.msg);
		return EXIT_ERROR;
	}
	if (ctl->json) {
		char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		if (s)
			printf("%s\n", s);
		free(s);
	} else {
		print_inspect(o);
	}
	fflush(stdout);
	const char *dmg = json_string_value(json_object_get(o, "damage"));
	if (dmg)
		fprintf(stderr, "ternctl: %s\n", dmg);
	json_decref(o);
	return dmg ? EXIT_ERROR : EXIT_OK;
}

static int cmd_snapshot(struct ctl *ctl, int argc, char **argv)
{
	const struct command *c = find_command("snapshot");
	argc = common_args(ctl, c, argc, argv);
	if (argc < 0)
		return 0;
	if (argc < 1) {
		fprintf(stderr, "ternctl: snapshot: which one? (save, inspect)\n");
		command_usage(c, stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[0], "save"))
		return snapshot_save(ctl, c, argc - 1, argv + 1);
	if (!strcmp(argv[0], "inspect"))
		return snapshot_inspect_cmd(ctl, c, argc - 1, argv + 1);
	fprintf(stderr, "ternctl: snapshot: unknown subcommand \"%s\" (known: save, inspect)\n", argv[0]);
	return EXIT_USAGE;
}

/* raw JSON: one request line, print the answer line as it came. */
static int raw_one(struct ctl *ctl, const char *text)
{
	if (strchr(text, '\n')) {
		fprintf(stderr, "ternctl: raw: the request must be one line (use \"raw -\" for several)\n");
		return EXIT_USAGE;
	}
	int r = ensure_connected(ctl);
	if (r)
		return r;
	struct terr err = { 0 };
	if (control_conn_send(&ctl->conn, text, strlen(text), &err) ||
	    control_conn_send(&ctl->conn, "\n", 1, &err)) {
		fprintf(stderr, "ternctl: %s\n", err.msg);
		return EXIT_UNREACHABLE;
	}
	for (;;) {
		char *line;
		size_t len;
		int k = control_conn_read_line(&ctl->conn, ctl->timeout_ms, &line, &len, &err);
		if (k != 1) {
			if (k == 0)
				fprintf(stderr, "ternctl: the VM closed the connection before answering\n");
			else if (k == -ETIMEDOUT)
				fprintf(stderr, "ternctl: no answer from the VM within %d s\n", ctl->timeout_ms / 1000);
			else
				fprintf(stderr, "ternctl: %s\n", err.msg);
			return EXIT_UNREACHABLE;
		}
		json_t *j = json_loadb(line, len, 0, NULL);
		bool event = j && json_object_get(j, "event");
		bool ok = j && json_object_get(j, "ok");
		json_decref(j);
		if (event)
			continue;
		printf("%s\n", line);
		return ok ? EXIT_OK : EXIT_ERROR;
	}
}

/* raw -: stdin to the socket byte for byte, then every line that comes back
 * until the VM closes the connection (it does once it has answered all). */
static int raw_stream(struct ctl *ctl)
{
	int r = ensure_connected(ctl);
	if (r)
		return r;
	struct terr err = { 0 };
	char buf[65536];
	for (;;) {
		ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "ternctl: reading stdin: %s\n", strerror(errno));
			return EXIT_ERROR;
		}
		if (n == 0)
			break;
		if (control_conn_send(&ctl->conn, buf, (size_t)n, &err)) {
			fprintf(stderr, "ternctl: %s\n", err.msg);
			return EXIT_UNREACHABLE;
		}
	}
	shutdown(ctl->conn.fd, SHUT_WR);
	for (;;) {
		char *line;
		size_t len;
		int k = control_conn_read_line(&ctl->conn, ctl->timeout_ms, &line, &len, &err);
		if (k == 0)
			return 0;
		if (k < 0) {
			if (k == -ETIMEDOUT)
				fprintf(stderr, "ternctl: the VM did not finish answering within %d s\n",
					ctl->timeout_ms / 1000);
			else
				fprintf(stderr, "ternctl: %s\n", err.msg);
			return EXIT_UNREACHABLE;
		}
		printf("%s\n", line);
		fflush(stdout);
	}
}

static int cmd_raw(struct ctl *ctl, int argc, char **argv)
{
	const struct command *c = find_command("raw");
	if (argc == 1 && (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help"))) {
		command_usage(c, stdout);
		return 0;
	}
	int r = want_args(c, argc, 1, 1);
	if (r)
		return r;
	if (!strcmp(argv[0], "-"))
		return raw_stream(ctl);
	return raw_one(ctl, argv[0]);
}

/* ---- migration (src/migration, docs/migration-protocol.md) ---------- */

static void print_ms(const char *label, json_t *v)
{
	if (json_is_number(v))
		printf("%s%.1f ms\n", label, json_number_value(v));
}

static void print_bytes(const char *label, json_t *v)
{
	char b[32];
	if (json_is_integer(v)) {
		human_size(b, sizeof(b), (uint64_t)json_integer_value(v));
		printf("%s%s\n", label, b);
	}
}

static void print_rate(const char *label, json_t *v)
{
	char b[32];
	if (json_is_integer(v) && json_integer_value(v) > 0) {
		human_size(b, sizeof(b), (uint64_t)json_integer_value(v));
		printf("%s%s/s\n", label, b);
	}
}

static void print_migration(json_t *o)
{
	const char *state = json_string_value(json_object_get(o, "state"));
	printf("state:              %s\n", state ?: "?");
	if (!state || !strcmp(state, "none"))
		return;
	printf("destination:        %s (%s)\n", json_string_value(json_object_get(o, "dest")) ?: "?",
	       json_string_value(json_object_get(o, "mode")) ?: "?");
	print_ms("elapsed:            ", json_object_get(o, "elapsed_ms"));
	printf("round:              %lld\n", (long long)json_integer_value(json_object_get(o, "round")));
	print_bytes("bytes sent:         ", json_object_get(o, "bytes_sent"));
	print_bytes("remaining:          ", json_object_get(o, "remaining_bytes"));
	print_rate("dirty rate:         ", json_object_get(o, "dirty_rate"));
	print_rate("bandwidth:          ", json_object_get(o, "bandwidth"));
	print_ms("expected downtime:  ", json_object_get(o, "expected_downtime_ms"));
	json_t *t = json_object_get(o, "throttle_pct");
	if (json_integer_value(t))
		printf("throttle:           %lld%%\n", (long long)json_integer_value(t));
	if (json_object_get(o, "downtime_ms")) {
		print_ms("total time:         ", json_object_get(o, "total_ms"));
		print_ms("downtime:           ", json_object_get(o, "downtime_ms"));
		printf("rounds:             %lld\n", (long long)json_integer_value(json_object_get(o, "rounds")));
	}
	const char *e = json_string_value(json_object_get(o, "error"));
	if (e)
		printf("error:              %s\n", e);
}

static int migrate_start(struct ctl *ctl, const struct command *c, int argc, char **argv)
{
	const char *dest = NULL, *mode = NULL, *bw = NULL;
	long down = -1, tmo = -1;
	bool compress = false, exit_after = false;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool takes = !strcmp(a, "--mode") || !strcmp(a, "--max-bandwidth") ||
			     !strcmp(a, "--downtime-limit") || !strcmp(a, "--timeout");
		if (takes && !v) {
			fprintf(stderr, "ternctl: migrate: %s needs a value\n", a);
			return EXIT_USAGE;
		}
		char *end;
		if (!strcmp(a, "--mode")) {
			mode = v;
		} else if (!strcmp(a, "--max-bandwidth")) {
			bw = v;
		} else if (!strcmp(a, "--downtime-limit") || !strcmp(a, "--timeout")) {
			long n = strtol(v, &end, 10);
			if (*end || end == v || n < 0) {
				fprintf(stderr, "ternctl: migrate: %s: \"%s\" is not a whole number\n", a, v);
				return EXIT_USAGE;
			}
			*(a[2] == 'd' ? &down : &tmo) = n;
		} else if (!strcmp(a, "--compress")) {
			compress = true;
		} else if (!strcmp(a, "--exit")) {
			exit_after = true;
		} else if (a[0] == '-' || dest) {
			fprintf(stderr, "ternctl: migrate: unexpected argument \"%s\"\n", a);
			command_usage(c, stderr);
			return EXIT_USAGE;
		} else {
			dest = a;
		}
		if (takes)
			i++;
	}
	if (!dest) {
		fprintf(stderr, "ternctl: migrate: where to? (tcp:HOST:PORT or unix:PATH)\n");
		command_usage(c, stderr);
		return EXIT_USAGE;
	}
	json_t *args = json_pack("{s:s, s:b, s:b}", "dest", dest, "compress", compress, "exit", exit_after);
	if (mode)
		json_object_set_new(args, "mode", json_string(mode));
	if (bw)
		json_object_set_new(args, "max_bandwidth", json_string(bw));
	if (down >= 0)
		json_object_set_new(args, "downtime_limit_ms", json_integer(down));
	if (tmo >= 0)
		json_object_set_new(args, "timeout_s", json_integer(tmo));
	struct progress pg = { .tty = isatty(STDERR_FILENO), .last_pct = -1, .op = "migrate" };
	json_t *res;
	int r = call(ctl, "migrate", args, &res, &pg);
	if (r)
		return r;
	if (ctl->json) {
		print_json(res);
	} else {
		char b[32];
		human_size(b, sizeof(b), (uint64_t)json_integer_value(json_object_get(res, "bytes_sent")));
		printf("migrated to %s (%s): %.1f ms, downtime %.2f ms, %lld round(s), %s sent\n",
		       json_string_value(json_object_get(res, "dest")) ?: dest,
		       json_string_value(json_object_get(res, "mode")) ?: "?",
		       json_number_value(json_object_get(res, "total_ms")),
		       json_number_value(json_object_get(res, "downtime_ms")),
		       (long long)json_integer_value(json_object_get(res, "rounds")), b);
	}
	json_decref(res);
	return 0;
}

static int cmd_migrate(struct ctl *ctl, int argc, char **argv)
{
	const struct command *c = find_command("migrate");
	argc = common_args(ctl, c, argc, argv);
	if (argc < 0)
		return 0;
	if (argc < 1) {
		fprintf(stderr, "ternctl: migrate: where to? (tcp:HOST:PORT, unix:PATH, status or cancel)\n");
		command_usage(c, stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[0], "status") || !strcmp(argv[0], "cancel")) {
		int r = want_args(c, argc, 1, 1);
		if (r)
			return r;
		bool status = !strcmp(argv[0], "status");
		json_t *res;
		r = call(ctl, status ? "migrate-status" : "migrate-cancel", NULL, &res, NULL);
		if (r)
			return r;
		if (ctl->json)
			print_json(res);
		else if (status)
			print_migration(res);
		json_decref(res);
		return 0;
	}
	return migrate_start(ctl, c, argc, argv);
}
/* ---- end migration ---------------------------------------------------- */

static int cmd_help(struct ctl *ctl, int argc, char **argv);

static const struct command commands[] = {
	{ "status", "", "state, uptime, memory, vCPUs and version of the VM",
	  "Prints one \"key: value\" line each; --json prints the reply object.", cmd_status },
	{ "pause", "", "stop the vCPUs; the VM stays in memory",
	  "Returns once every vCPU is stopped and every device quiesced. Pausing a paused VM does nothing.",
	  cmd_pause },
	{ "resume", "", "let a paused VM run again",
	  "Undoes \"pause\". A VM paused by an operation in progress (a snapshot) runs again when that\n"
	  "operation ends, not before.", cmd_resume },
	{ "quit", "", "end the VM in order (tern exits with status 0)",
	  "Waits until tern has closed its socket, so the VM is gone when ternctl returns.", cmd_quit },
	{ "snapshot", "save FILE [--exit] | inspect FILE", "save the VM to FILE; show what a snapshot holds",
	  "save FILE     write the VM's state to FILE (made absolute here: tern runs elsewhere);\n"
	  "              the VM goes on running, or tern exits once the file is complete with --exit.\n"
	  "              A progress bar on stderr when it is a terminal, \"snapshot: N%\" lines otherwise.\n"
	  "inspect FILE  header, sections and their fields, the configuration and RAM statistics of a\n"
	  "              snapshot file, without starting a VM or talking to one; --json for the\n"
	  "              whole as one object. Exit status 1 when the file is damaged (what is\n"
	  "              readable is still shown) or not a snapshot.",
	  cmd_snapshot },
	/* --- migration --- */
	{ "migrate", "DEST [--mode warm|live] [--max-bandwidth RATE] [--downtime-limit MS] "
	  "[--timeout S] [--compress] [--exit] | status | cancel",
	  "move the VM to a tern receive, with a progress bar",
	  "DEST       tcp:HOST:PORT or unix:PATH of a \"tern receive --listen\" on the other side.\n"
	  "           --mode live (default): RAM is copied while the guest runs, in rounds, until\n"
	  "           the rest fits in --downtime-limit MS (default 100); a guest that dirties memory\n"
	  "           faster than the link drains it is slowed down. --mode warm: paused throughout.\n"
	  "           --max-bandwidth RATE caps bytes/s over any second (100M = 100 MiB/s; default\n"
	  "           unlimited); --timeout S gives up after S seconds (default never); --compress\n"
	  "           sends RAM zstd-compressed. On success the VM here stays paused and cannot be\n"
	  "           resumed (with --exit tern ends); on failure it runs on as before.\n"
	  "status     state, elapsed time, bytes sent and remaining, dirty rate, round, expected\n"
	  "           downtime; the final figures (total time, measured downtime) after the end.\n"
	  "cancel     stop the migration in progress; the VM runs on here.",
	  cmd_migrate },
	/* --- end migration --- */
	{ "config", "", "the configuration the VM was started with",
	  "name=value lines, as tern --dump-config prints them; --json gives an object.", cmd_config },
	{ "commands", "", "the commands this VM accepts (including ones ternctl has no verb for)",
	  "Every command can be sent with \"ternctl raw '{\\\"cmd\\\": NAME, \\\"args\\\": {...}}'\".",
	  cmd_commands },
	{ "raw", "JSON | -", "send a request as is and print the answer",
	  "raw JSON   send JSON (one line) as a request; print the reply line as it came; exit 0 for an\n"
	  "           \"ok\" reply and 1 for an \"error\" reply.\n"
	  "raw -      send stdin byte for byte (several requests, broken ones, half lines: for tests),\n"
	  "           then print every line the VM sends back until it closes the connection.",
	  cmd_raw },
	{ "help", "[COMMAND]", "this list, or more about one command", NULL, cmd_help },
};

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

static void command_usage(const struct command *c, FILE *f)
{
	fprintf(f, "usage: ternctl [-s SOCKET | -n NAME] %s%s%s\n\n%s.\n", c->name, *c->usage ? " " : "",
		c->usage, c->summary);
	if (c->help)
		fprintf(f, "\n%s\n", c->help);
}

static void usage(FILE *f)
{
	char dir[4096];
	control_default_dir(dir, sizeof(dir));
	fprintf(f,
		"usage: ternctl [-s SOCKET | -n NAME] [--json] [--timeout SEC] COMMAND [ARGS]\n"
		"\n"
		"Controls a running tern through its control socket.\n"
		"\n"
		"  -s, --socket SOCKET   the socket (tern's control.path)\n"
		"  -n, --name NAME       the VM started with -o name=NAME (socket %s/NAME.sock)\n"
		"                        with neither: the only VM in %s\n"
		"  -j, --json            print replies as JSON\n"
		"  -t, --timeout SEC     give up waiting for an answer after SEC seconds\n"
		"  -h, --help            this text (ternctl help COMMAND: more about one)\n"
		"  -V, --version         print the version\n"
		"\n"
		"Commands:\n", dir, dir);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		char head[256];
		snprintf(head, sizeof(head), "%s%s%s", commands[i].name, *commands[i].usage ? " " : "",
			 commands[i].usage);
		if (strlen(head) > 28)   /* a long usage gets a line of its own */
			fprintf(f, "  %s\n  %-28s %s\n", head, "", commands[i].summary);
		else
			fprintf(f, "  %-28s %s\n", head, commands[i].summary);
	}
	fprintf(f,
		"\n"
		"Exit status: 0 done; 1 the VM answered with an error; 2 usage error;\n"
		"3 the VM could not be reached.\n");
}

static int cmd_help(struct ctl *ctl, int argc, char **argv)
{
	(void)ctl;
	if (argc == 0) {
		usage(stdout);
		return 0;
	}
	const struct command *c = find_command(argv[0]);
	if (!c) {
		fprintf(stderr, "ternctl: help: unknown command \"%s\"\n", argv[0]);
		return EXIT_USAGE;
	}
	command_usage(c, stdout);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "name", required_argument, NULL, 'n' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctl ctl = { .timeout_ms = -1 };
	int c;

	while ((c = getopt_long(argc, argv, "+s:n:jt:hV", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			ctl.sock = optarg;
			break;
		case 'n':
			ctl.name = optarg;
			break;
		case 'j':
			ctl.json = true;
			break;
		case 't': {
			char *end;
			double s = strtod(optarg, &end);
			if (*end || !(s > 0) || s > 86400 * 365) {
				fprintf(stderr, "ternctl: --timeout: \"%s\" is not a number of seconds\n", optarg);
				return EXIT_USAGE;
			}
			ctl.timeout_ms = (int)(s * 1000);
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("ternctl %s\n", TERN_VERSION);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (ctl.sock && ctl.name) {
		fprintf(stderr, "ternctl: give -s SOCKET or -n NAME, not both\n");
		return EXIT_USAGE;
	}
	if (ctl.name && !*ctl.name) {
		fprintf(stderr, "ternctl: -n: empty name\n");
		return EXIT_USAGE;
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const struct command *cmd = find_command(argv[optind]);
	if (!cmd) {
		fprintf(stderr, "ternctl: unknown command \"%s\" (ternctl --help lists them)\n", argv[optind]);
		return EXIT_USAGE;
	}
	int r = cmd->run(&ctl, argc - optind - 1, argv + optind + 1);
	if (ctl.connected)
		control_conn_close(&ctl.conn);
	fflush(stdout);
	return r;
}
