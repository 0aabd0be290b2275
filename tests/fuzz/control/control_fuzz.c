/* libFuzzer target for the control protocol: the input is what a client
 * writes to the socket. The first byte picks the size of the pieces it
 * arrives in; the rest goes through the line framer, and every line through
 * the request parser. Whatever it holds, nothing may crash, and every reply
 * built from what the parser returned must be exactly one line of valid JSON
 * that reads back with the same id. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control/protocol.h"

#define LIMIT 4096    /* small, so that long lines are exercised too */

static void check_line(const char *text, size_t len, json_t *id)
{
	if (!text)
		return;                         /* out of memory */
	if (len == 0 || text[len - 1] != '\n' || memchr(text, '\n', len - 1) || strlen(text) != len)
		abort();
	json_error_t je;
	json_t *j = json_loadb(text, len - 1, 0, &je);
	if (!j || !json_is_object(j))
		abort();
	if (id && !json_equal(json_object_get(j, "id"), id))
		abort();
	json_decref(j);
}

static void one_line(const char *line, size_t len)
{
	struct control_request r;
	const char *code = NULL;
	char msg[CONTROL_MAX_MESSAGE];
	size_t n = 0;
	char *t;

	if (control_line_is_blank(line, len))
		return;
	int k = control_parse_request(line, len, &r, &code, msg, sizeof(msg));
	if (k) {
		if (!code || strlen(msg) >= sizeof(msg))
			abort();
		t = control_format_error(r.id, code, msg, &n);
		check_line(t, n, r.id);
		free(t);
		control_request_clear(&r);
		return;
	}
	if (!r.cmd || !json_is_object(r.args))
		abort();
	control_cmd_name_valid(r.cmd);
	/* what a handler would do with its args */
	static const char *const known[] = { "path", "exit", "dest", NULL };
	json_t *v;
	control_args_known(r.args, known, msg, sizeof(msg));
	control_arg(r.args, "path", JSON_STRING, false, &v, msg, sizeof(msg));
	control_arg(r.args, "exit", JSON_TRUE, true, &v, msg, sizeof(msg));
	control_arg(r.args, "n", JSON_INTEGER, false, &v, msg, sizeof(msg));
	/* an unknown-command message names the command, sanitized */
	char name[CONTROL_MAX_CMD + 1];
	control_sanitize(name, sizeof(name), r.cmd);
	t = control_format_error(r.id, CONTROL_E_UNKNOWN, name, &n);
	check_line(t, n, r.id);
	free(t);
	t = control_format_ok(r.id, r.args, &n);
	check_line(t, n, r.id);
	free(t);
	t = control_format_event(r.cmd, r.args, &n);
	check_line(t, n, NULL);
	free(t);
	control_request_clear(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	size_t piece = (size_t)data[0] + 1;
	data++;
	size--;

	struct control_linebuf lb;
	control_linebuf_init(&lb, LIMIT);
	for (size_t off = 0; off <= size; off += piece) {
		size_t n = size - off < piece ? size - off : piece;
		if (off == size)
			n = 0;
		if (control_linebuf_feed(&lb, data + off, n))
			break;
		char *line;
		size_t len;
		int k;
		while ((k = control_linebuf_next(&lb, &line, &len)) != CONTROL_LINE_NONE) {
			if (k == CONTROL_LINE_OK) {
				if (len > LIMIT || line[len] != '\0')
					abort();
				one_line(line, len);
			}
		}
		if (lb.len - lb.start > LIMIT + piece)
			abort();
		if (off == size)
			break;
	}
	/* a last line without '\n' (the server takes it at EOF) */
	if (control_linebuf_pending(&lb) > 0 && control_linebuf_feed(&lb, "\n", 1) == 0) {
		char *line;
		size_t len;
		if (control_linebuf_next(&lb, &line, &len) == CONTROL_LINE_OK)
			one_line(line, len);
	}
	control_linebuf_free(&lb);

	/* sanitize on the raw input as a string */
	char *s = malloc(size + 1);
	if (s) {
		memcpy(s, data, size);
		s[size] = '\0';
		char out[64];
		control_sanitize(out, sizeof(out), s);
		if (strlen(out) >= sizeof(out))
			abort();
		free(s);
	}
	return 0;
}
