/* The per-VM control socket: a UNIX stream socket speaking one JSON object per
 * line (control/protocol.h, docs/control.md), served on the VM's event loop.
 *
 * Other layers add commands with control_register. A handler runs on the
 * event-loop thread and must answer each request exactly once, with
 * control_reply_ok or control_reply_error, either before it returns or later
 * from any thread (a long operation hands the request to a worker thread,
 * which sends progress events with control_emit_progress and answers at the
 * end). The answer frees the request. Replies and events are posted to the
 * loop thread, so no function here blocks on a client.
 *
 *	static void snap_save(struct control_req *req, json_t *args, void *opaque)
 *	{
 *		json_t *path;
 *		if (control_req_arg(req, args, "path", JSON_STRING, true, &path))
 *			return;                       // answered "bad-args"
 *		if (busy) {
 *			control_reply_error(req, CONTROL_E_BUSY, "a snapshot is already being saved");
 *			return;
 *		}
 *		start_worker(req, json_string_value(path)); // args live until the answer
 *	}
 *	// on the worker:  control_emit_progress(req, done, total); ...
 *	//                 control_reply_ok(req, json_pack("{s:s}", "path", p));
 */
#ifndef TERN_CONTROL_CONTROL_H
#define TERN_CONTROL_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config/config.h"
#include "control/protocol.h"
#include "core/evloop.h"
#include "core/vm.h"
#include "util/error.h"

struct control_server;
struct control_req;

/* args: the request's "args" object (never NULL), valid until the request is
 * answered. Runs on the event-loop thread: it must not block for long (a
 * vm_pause is fine; writing a snapshot is not). */
typedef void (*control_handler)(struct control_req *req, json_t *args, void *opaque);

/* ---- the server ------------------------------------------------------ */

struct control_server_opts {
	const char *path;        /* socket path */
	struct evloop *loop;     /* the loop that serves it */
	size_t max_line;         /* 0: CONTROL_MAX_LINE */
	size_t max_output;       /* bytes queued for one client before it is
	                            dropped; 0: CONTROL_MAX_OUTPUT */
	unsigned max_clients;    /* 0: CONTROL_MAX_CLIENTS */
};

#define CONTROL_MAX_OUTPUT   (4 * 1024 * 1024)
#define CONTROL_MAX_CLIENTS  32

/* Create the socket (mode 0600; missing parent directories are made 0700) and
 * watch it on opts->loop. A socket file left by a tern that is gone is
 * replaced; one that a live process listens on is refused. Messages start
 * with "control.path: ". No commands are registered. */
int control_server_create(const struct control_server_opts *opts, struct control_server **out,
			  struct terr *err);
/* Call once the loop no longer runs (or from the loop thread). Delivers what
 * is queued, answers requests still outstanding with "exiting", closes every
 * client and removes the socket file. Requests answered later by workers are
 * dropped quietly; control_emit_* must not be called after this returns.
 * NULL is fine. */
void control_server_destroy(struct control_server *s);
const char *control_server_path(const struct control_server *s);

/* Add a command. name: [a-z][a-z0-9-]*, at most CONTROL_MAX_CMD bytes; help:
 * one line for "commands" (may be NULL). -EEXIST when taken, -EINVAL for a
 * bad name. Thread-safe. With s == NULL (no control socket) they do nothing
 * and return 0, so callers need not check. */
int control_register(struct control_server *s, const char *name, control_handler fn, void *opaque);
int control_register_help(struct control_server *s, const char *name, const char *help,
			  control_handler fn, void *opaque);
int control_unregister(struct control_server *s, const char *name);

/* ---- answering a request (any thread, exactly once) ------------------ */

/* result: an object (consumed; NULL means {}). */
void control_reply_ok(struct control_req *req, json_t *result);
void control_reply_error(struct control_req *req, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

const char *control_req_cmd(const struct control_req *req);
json_t *control_req_id(const struct control_req *req);           /* borrowed; NULL if none */
struct control_server *control_req_server(const struct control_req *req);
/* False once the client that sent it has gone away (its answer is then
 * dropped; the operation may carry on or stop, as the command documents). */
bool control_req_client_alive(const struct control_req *req);

/* Argument helpers: on a missing, unknown or mistyped argument they answer the
 * request with "bad-args" and return -1; the handler then just returns.
 * type: JSON_STRING, JSON_INTEGER, JSON_TRUE (= boolean), JSON_REAL (= any
 * number), JSON_OBJECT, JSON_ARRAY. *out = NULL when absent and optional. */
int control_req_arg(struct control_req *req, json_t *args, const char *key, json_type type,
		    bool required, json_t **out);
/* known: NULL-terminated list of the argument names the command takes. */
int control_req_args_known(struct control_req *req, json_t *args, const char *const *known);

/* ---- events (any thread) --------------------------------------------- */

/* Push {"event": name, "data": data} to every connected client (data is
 * consumed; NULL means {}). */
void control_emit_event(struct control_server *s, const char *name, json_t *data);
/* {"event": "progress", "data": {"op": <cmd>, "id": <req id>, "done": done,
 * "total": total}} for a request still being worked on. Units are the
 * command's (bytes for snapshot-save and migrate). Emit at most a few per
 * second: every client receives every event. */
void control_emit_progress(struct control_req *req, uint64_t done, uint64_t total);

/* ---- VM state (control/builtin.c) ------------------------------------ */

/* The VM as the "status" command and "state" events name it. */
enum control_vm_state { CONTROL_VM_RUNNING, CONTROL_VM_PAUSED, CONTROL_VM_EXITING };
const char *control_vm_state_name(enum control_vm_state st);
enum control_vm_state control_vm_state(struct vm *vm);

/* Register status, pause, resume, quit, config, commands (and help). The
 * configuration is copied now (config is not thread-safe). */
int control_builtins_register(struct control_server *s, struct vm *vm, const char *name,
			      const struct config *cfg, struct terr *err);
/* Emit a "state" event if the VM's state changed since the last one. Call it
 * after your own vm_pause / vm_resume (snapshot save, migration). */
void control_notify_state(struct control_server *s);
/* The VM was started paused (vm_start(vm, true, ...), a restore that waits):
 * that pause reference now belongs to the user, and "resume" releases it.
 * Call it before the VM starts running. */
void control_adopt_pause(struct control_server *s);
/* Make "resume" fail with bad-state and this reason (a migrated-away source
 * must never run again); NULL lifts the block. */
void control_block_resume(struct control_server *s, const char *reason);

/* ---- wiring into a machine ------------------------------------------- */

/* The socket path a configuration asks for: control.path when set; else
 * CONTROL_DEFAULT_DIR/NAME.sock when "name" is set explicitly; else none
 * (*path = '\0'): see docs/control.md for why. */
int control_path_from_config(struct config *cfg, char *path, size_t n, struct terr *err);
/* $XDG_RUNTIME_DIR/tern, or /run/tern when XDG_RUNTIME_DIR is unset or empty. */
void control_default_dir(char *dir, size_t n);
/* control_default_dir()/NAME.sock; -ENAMETOOLONG if it does not fit. */
int control_default_path(const char *name, char *path, size_t n);

/* All of the above for a VM about to start: resolve the path, create the
 * server on vm->loop, register the built-ins. *out = NULL (and 0) when the
 * configuration asks for no socket. */
int control_start(struct vm *vm, struct config *cfg, struct control_server **out, struct terr *err);

#endif
