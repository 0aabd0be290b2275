/* The built-in commands: status, pause, resume, quit, config, commands/help;
 * the VM state model and "state" events; the socket path from the
 * configuration; control_start for the machine. */
#include "control/control_internal.h"
#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct builtin {
	struct control_server *s;
	struct vm *vm;
	char name[80];
	json_t *config;            /* flat {"name": "raw value"} copied at start */
	struct timespec t0;

	pthread_mutex_t lock;
	bool held_pause;           /* "pause" holds one vm_pause reference */
	char *resume_block;        /* why "resume" is refused, or NULL */
	int last_state;            /* last "state" event sent, -1 none */
};

static const char *const no_args[] = { NULL };

const char *control_vm_state_name(enum control_vm_state st)
{
	switch (st) {
	case CONTROL_VM_RUNNING: return "running";
	case CONTROL_VM_PAUSED: return "paused";
	case CONTROL_VM_EXITING: return "exiting";
	}
	return "?";
}

enum control_vm_state control_vm_state(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	enum control_vm_state st = vm->exit_req ? CONTROL_VM_EXITING :
		vm->paused_users > 0 ? CONTROL_VM_PAUSED : CONTROL_VM_RUNNING;
	pthread_mutex_unlock(&vm->lock);
	return st;
}

static const char *exit_reason_name(enum vm_exit_reason r)
{
	switch (r) {
	case VM_EXIT_NONE: return "none";
	case VM_EXIT_POWEROFF: return "poweroff";
	case VM_EXIT_TEST: return "test-exit";
	case VM_EXIT_RESET: return "reset";
	case VM_EXIT_QUIT: return "quit";
	case VM_EXIT_TRIPLE_FAULT: return "triple-fault";
	case VM_EXIT_INTERNAL_ERROR: return "internal-error";
	case VM_EXIT_HOST_ERROR: return "host-error";
	}
	return "?";
}

void control_notify_state(struct control_server *s)
{
	if (!s || !s->builtin)
		return;
	struct builtin *b = s->builtin;
	enum control_vm_state st = control_vm_state(b->vm);
	pthread_mutex_lock(&b->lock);
	bool changed = b->last_state != (int)st;
	b->last_state = (int)st;
	pthread_mutex_unlock(&b->lock);
	if (changed)
		control_emit_event(s, "state", json_pack("{s:s}", "state", control_vm_state_name(st)));
}

void control_block_resume(struct control_server *s, const char *reason)
{
	if (!s || !s->builtin)
		return;
	struct builtin *b = s->builtin;
	char *r = reason ? strdup(reason) : NULL;
	pthread_mutex_lock(&b->lock);
	free(b->resume_block);
	b->resume_block = r;
	pthread_mutex_unlock(&b->lock);
}

void control_adopt_pause(struct control_server *s)
{
	if (!s || !s->builtin)
		return;
	struct builtin *b = s->builtin;
	pthread_mutex_lock(&b->lock);
	b->held_pause = true;
	pthread_mutex_unlock(&b->lock);
}

/* ---- commands -------------------------------------------------------- */

static void cmd_status(struct control_req *req, json_t *args, void *opaque)
{
	struct builtin *b = opaque;
	if (control_req_args_known(req, args, no_args))
		return;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t ms = (int64_t)(now.tv_sec - b->t0.tv_sec) * 1000 + (now.tv_nsec - b->t0.tv_nsec) / 1000000;
	json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:i, s:s, s:i, s:s}",
			      "name", b->name,
			      "state", control_vm_state_name(control_vm_state(b->vm)),
			      "uptime_ms", (json_int_t)ms,
			      "memory_bytes", (json_int_t)b->vm->mem.size,
			      "cpus", (int)b->vm->nvcpus,
			      "version", TERN_VERSION,
			      "pid", (int)getpid(),
			      "socket", control_server_path(b->s));
	control_reply_ok(req, o);
}

static void cmd_pause(struct control_req *req, json_t *args, void *opaque)
{
	struct builtin *b = opaque;
	if (control_req_args_known(req, args, no_args))
		return;
	if (control_vm_state(b->vm) == CONTROL_VM_EXITING) {
		control_reply_error(req, CONTROL_E_BAD_STATE, "the VM is exiting");
		return;
	}
	pthread_mutex_lock(&b->lock);
	bool held = b->held_pause;
	b->held_pause = true;
	pthread_mutex_unlock(&b->lock);
	if (!held) {
		vm_pause(b->vm);     /* returns once every vCPU is parked */
		log_info("control", "VM paused");
	}
	control_notify_state(b->s);
	control_reply_ok(req, json_pack("{s:s}", "state", "paused"));
}

static void cmd_resume(struct control_req *req, json_t *args, void *opaque)
{
	struct builtin *b = opaque;
	if (control_req_args_known(req, args, no_args))
		return;
	enum control_vm_state st = control_vm_state(b->vm);
	if (st == CONTROL_VM_EXITING) {
		control_reply_error(req, CONTROL_E_BAD_STATE, "the VM is exiting");
		return;
	}
	pthread_mutex_lock(&b->lock);
	char *block = b->resume_block ? strdup(b->resume_block) : NULL;
	bool held = b->held_pause;
	if (held && !block)
		b->held_pause = false;
	pthread_mutex_unlock(&b->lock);
	if (block) {
		control_reply_error(req, CONTROL_E_BAD_STATE, "the VM cannot be resumed: %s", block);
		free(block);
		return;
	}
	if (!held) {
		if (st == CONTROL_VM_PAUSED) {
			control_reply_error(req, CONTROL_E_BAD_STATE,
					    "the VM is paused by an operation in progress, not by \"pause\"; "
					    "it runs again when that ends");
			return;
		}
		control_reply_ok(req, json_pack("{s:s}", "state", "running"));
		return;
	}
	vm_resume(b->vm);
	log_info("control", "VM resumed");
	control_notify_state(b->s);
	control_reply_ok(req, json_pack("{s:s}", "state", control_vm_state_name(control_vm_state(b->vm))));
}

static void cmd_quit(struct control_req *req, json_t *args, void *opaque)
{
	struct builtin *b = opaque;
	if (control_req_args_known(req, args, no_args))
		return;
	log_info("control", "quit requested");
	control_reply_ok(req, NULL);
	vm_request_exit(b->vm, VM_EXIT_QUIT, 0);
}

static void cmd_config(struct control_req *req, json_t *args, void *opaque)
{
	struct builtin *b = opaque;
	if (control_req_args_known(req, args, no_args))
		return;
	control_reply_ok(req, json_pack("{s:O}", "config", b->config));
}

static void cmd_commands(struct control_req *req, json_t *args, void *opaque)
{
	struct builtin *b = opaque;
	if (control_req_args_known(req, args, no_args))
		return;
	json_t *list = json_array();
	struct control_server *s = b->s;
	pthread_mutex_lock(&s->lock);
	for (struct control_cmd *c = s->cmds; c && list; c = c->next)
		json_array_append_new(list, json_pack("{s:s, s:s}", "name", c->name,
						      "help", c->help ? c->help : ""));
	pthread_mutex_unlock(&s->lock);
	control_reply_ok(req, json_pack("{s:o}", "commands", list ? list : json_array()));
}

/* ---- life cycle ------------------------------------------------------ */

/* The last word before the socket closes: why the VM ends. */
static void builtin_shutdown(struct control_server *s)
{
	struct builtin *b = s->builtin;
	struct vm *vm = b->vm;
	pthread_mutex_lock(&vm->lock);
	bool exiting = vm->exit_req;
	enum vm_exit_reason why = vm->exit_reason;
	int status = vm->exit_status;
	pthread_mutex_unlock(&vm->lock);
	if (!exiting)
		return;
	control_emit_event(s, "state", json_pack("{s:s, s:s, s:i}", "state", "exiting",
						 "reason", exit_reason_name(why), "status", status));
}

static void builtin_free(void *opaque)
{
	struct builtin *b = opaque;
	if (!b)
		return;
	json_decref(b->config);
	free(b->resume_block);
	pthread_mutex_destroy(&b->lock);
	free(b);
}

int control_builtins_register(struct control_server *s, struct vm *vm, const char *name,
			      const struct config *cfg, struct terr *err)
{
	if (!s)
		return 0;
	if (s->builtin)
		return terr_set(err, EEXIST, "control: built-in commands registered twice");
	struct builtin *b = calloc(1, sizeof(*b));
	if (!b)
		return terr_set(err, ENOMEM, "control: out of memory");
	b->s = s;
	b->vm = vm;
	snprintf(b->name, sizeof(b->name), "%s", name ? name : "");
	b->config = cfg ? config_to_json(cfg) : json_object();
	clock_gettime(CLOCK_MONOTONIC, &b->t0);
	pthread_mutex_init(&b->lock, NULL);
	b->last_state = -1;
	if (!b->config) {
		builtin_free(b);
		return terr_set(err, ENOMEM, "control: out of memory");
	}
	static const struct {
		const char *name, *help;
		control_handler fn;
	} cmds[] = {
		{ "status", "name, state, uptime, memory, vCPUs and version of the VM", cmd_status },
		{ "pause", "stop every vCPU (devices quiesced); the VM stays in memory", cmd_pause },
		{ "resume", "run again after \"pause\"", cmd_resume },
		{ "quit", "end the VM in order; tern exits with status 0", cmd_quit },
		{ "config", "the configuration the VM was started with", cmd_config },
		{ "commands", "list the commands", cmd_commands },
		{ "help", "list the commands (same as \"commands\")", cmd_commands },
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		int r = control_register_help(s, cmds[i].name, cmds[i].help, cmds[i].fn, b);
		if (r) {
			for (size_t j = 0; j < i; j++)
				control_unregister(s, cmds[j].name);
			builtin_free(b);
			return terr_set(err, -r, "control: cannot register \"%s\": %s", cmds[i].name,
					strerror(-r));
		}
	}
	s->builtin = b;
	s->builtin_shutdown = builtin_shutdown;
	s->builtin_free = builtin_free;
	b->last_state = (int)control_vm_state(vm);
	return 0;
}

/* ---- paths ----------------------------------------------------------- */

void control_default_dir(char *dir, size_t n)
{
	const char *x = getenv("XDG_RUNTIME_DIR");
	if (x && *x)
		snprintf(dir, n, "%s/tern", x);
	else
		snprintf(dir, n, "/run/tern");
}

int control_default_path(const char *name, char *path, size_t n)
{
	char dir[4096];
	control_default_dir(dir, sizeof(dir));
	int k = snprintf(path, n, "%s/%s.sock", dir, name);
	if (k < 0 || (size_t)k >= n)
		return -ENAMETOOLONG;
	return 0;
}

int control_path_from_config(struct config *cfg, char *path, size_t n, struct terr *err)
{
	const char *p, *name;
	int r = config_get_path(cfg, "control.path", &p, err);
	if (r)
		return r;
	path[0] = '\0';
	if (p) {
		if (strlen(p) >= n)
			return terr_set(err, ENAMETOOLONG, "control.path: \"%s\" is too long", p);
		snprintf(path, n, "%s", p);
		return 0;
	}
	if (!config_is_set(cfg, "name"))
		return 0;
	r = config_get_str(cfg, "name", &name, err);
	if (r)
		return r;
	if (control_default_path(name, path, n))
		return terr_set(err, ENAMETOOLONG, "control.path: the default socket path for name=%s is too long; "
				"set control.path", name);
	return 0;
}

int control_start(struct vm *vm, struct config *cfg, struct control_server **out, struct terr *err)
{
	char path[4096];
	const char *name;
	*out = NULL;
	int r = control_path_from_config(cfg, path, sizeof(path), err);
	if (!r)
		r = config_get_str(cfg, "name", &name, err);
	if (r || !path[0])
		return r;
	struct control_server_opts o = { .path = path, .loop = &vm->loop };
	struct control_server *s;
	r = control_server_create(&o, &s, err);
	if (r)
		return r;
	r = control_builtins_register(s, vm, name, cfg, err);
	if (r) {
		control_server_destroy(s);
		return r;
	}
	log_info("control", "listening on %s", path);
	*out = s;
	return 0;
}
