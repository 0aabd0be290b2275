/* The client side of the control socket (ternctl, tests): connect with a
 * clear error for each way it can fail, send lines, read messages. */
#ifndef TERN_CONTROL_CLIENT_H
#define TERN_CONTROL_CLIENT_H

#include <jansson.h>

#include "control/protocol.h"
#include "util/error.h"

struct control_conn {
	int fd;
	struct control_linebuf in;
	bool eof;
};

/* Connect to path. hint says how the path was chosen, for the message when
 * nothing is there: "control.path=/x.sock" or "name=web". err->code tells
 * the cases apart: -ENOENT (no socket), -ECONNREFUSED (a stale socket from a
 * tern that has gone), -EACCES (not ours), others. */
int control_conn_open(struct control_conn *c, const char *path, const char *hint, struct terr *err);
void control_conn_close(struct control_conn *c);
/* Write all of data (blocking). */
int control_conn_send(struct control_conn *c, const void *data, size_t len, struct terr *err);
/* The next line, NUL-terminated and without its '\n', into *line (valid until
 * the next call). timeout_ms < 0 waits for ever. 1: a line; 0: the server
 * closed the connection; -ETIMEDOUT; other negative errno with err set. */
int control_conn_read_line(struct control_conn *c, int timeout_ms, char **line, size_t *len,
			   struct terr *err);
/* The same, parsed: *msg is a JSON object (the caller decrefs). A line that
 * is not a JSON object is an error (-EPROTO). */
int control_conn_read(struct control_conn *c, int timeout_ms, json_t **msg, struct terr *err);

#endif
