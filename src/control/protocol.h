/* The control protocol without sockets: line framing, request parsing, reply
 * and event formatting, argument checks. Pure functions, shared by the server
 * (control.c), the client (ternctl) and the fuzz target. docs/control.md is
 * the specification.
 *
 * One JSON object per line ('\n'; a '\r' before it is ignored):
 *   request  {"id": ANY, "cmd": "status", "args": {...}}   id and args optional
 *   reply    {"id": ANY, "ok": {...}}
 *            {"id": ANY, "error": {"code": "bad-args", "message": "..."}}
 *   event    {"event": "state", "data": {...}} */
#ifndef TERN_CONTROL_PROTOCOL_H
#define TERN_CONTROL_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#define CONTROL_MAX_LINE     (1024 * 1024)   /* longest request line, bytes */
#define CONTROL_MAX_CMD      64              /* longest command name */
#define CONTROL_MAX_MESSAGE  1024            /* longest error message */

/* Error codes (the "code" of an error reply). */
#define CONTROL_E_BAD_REQUEST  "bad-request"     /* not a request: bad JSON, wrong shape */
#define CONTROL_E_TOO_LONG     "too-long"        /* line over CONTROL_MAX_LINE */
#define CONTROL_E_UNKNOWN      "unknown-command"
#define CONTROL_E_BAD_ARGS     "bad-args"        /* args missing, unknown or of the wrong type */
#define CONTROL_E_BAD_STATE    "bad-state"       /* not possible in the VM's current state */
#define CONTROL_E_BUSY         "busy"            /* another operation of the kind is running */
#define CONTROL_E_FAILED       "failed"          /* tried and failed; the message says why */
#define CONTROL_E_EXITING      "exiting"         /* tern exited before the command finished */

/* ---- line framing ---------------------------------------------------- */

struct control_linebuf {
	char *buf;
	size_t start;       /* first unconsumed byte */
	size_t len;         /* bytes in buf */
	size_t scanned;     /* bytes from start known to hold no '\n' */
	size_t cap;
	size_t limit;       /* longest line accepted */
	bool skipping;      /* inside a line that was too long: drop to its '\n' */
};

enum {
	CONTROL_LINE_NONE = 0,      /* no complete line yet */
	CONTROL_LINE_OK = 1,        /* *line and *len hold one line */
	CONTROL_LINE_TOO_LONG = 2,  /* a line passed the limit: its bytes are dropped
	                               up to and including its '\n' (reported once) */
};

void control_linebuf_init(struct control_linebuf *lb, size_t limit);
void control_linebuf_free(struct control_linebuf *lb);
/* Append bytes; 0 or -ENOMEM. Call control_linebuf_next until it returns
 * CONTROL_LINE_NONE after each feed, so the buffer stays below limit + n. */
int control_linebuf_feed(struct control_linebuf *lb, const void *data, size_t n);
/* Next line without its '\n' (and '\r'), NUL-terminated, valid until the
 * next feed. */
int control_linebuf_next(struct control_linebuf *lb, char **line, size_t *len);
/* Bytes of an incomplete line held (not counting a line being skipped). */
size_t control_linebuf_pending(const struct control_linebuf *lb);

/* A line of only spaces and tabs: ignored by the server. */
bool control_line_is_blank(const char *line, size_t len);

/* ---- requests -------------------------------------------------------- */

struct control_request {
	json_t *root;        /* owns everything below; NULL when the line was not JSON */
	json_t *id;          /* borrowed: the request's id, or NULL when absent */
	const char *cmd;     /* borrowed; NULL on error */
	json_t *args;        /* borrowed: an object (empty when absent or null) */
};

/* Parse one line. 0 on success. On failure returns -1 with *code set to an
 * error code and msg to a sentence; r->id is still set when the line was an
 * object with an "id", so the error reply can carry it. Call
 * control_request_clear in both cases. */
int control_parse_request(const char *line, size_t len, struct control_request *r,
			  const char **code, char *msg, size_t msgsz);
void control_request_clear(struct control_request *r);

/* A command name: 1..CONTROL_MAX_CMD of [a-z0-9-], starting with a letter. */
bool control_cmd_name_valid(const char *name);

/* ---- replies and events: malloc'd line ending in '\n', NULL on ENOMEM - */

/* result NULL means {}; neither id nor result is consumed. */
char *control_format_ok(json_t *id, json_t *result, size_t *len);
char *control_format_error(json_t *id, const char *code, const char *message, size_t *len);
char *control_format_event(const char *name, json_t *data, size_t *len);

/* Copy src into dst (size n > 0) as valid UTF-8 without control characters:
 * bad bytes become '?', controls become ' '; truncates on a character
 * boundary. Error messages go through it, so a file name with odd bytes
 * cannot break a reply. */
void control_sanitize(char *dst, size_t n, const char *src);

/* ---- arguments ------------------------------------------------------- */

/* Fail (return -1, msg set) when args holds a key not in the NULL-terminated
 * list `known`. */
int control_args_known(json_t *args, const char *const *known, char *msg, size_t msgsz);
/* Look up args[key] of JSON type `type` (JSON_TRUE stands for either boolean,
 * JSON_INTEGER for an integer). *out = NULL when absent (or null) and not
 * required. -1 with msg when missing but required, or of another type. */
int control_arg(json_t *args, const char *key, json_type type, bool required,
		json_t **out, char *msg, size_t msgsz);

#endif
