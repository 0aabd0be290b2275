/* The snapshot commands of the control socket (docs/control.md):
 *
 *   snapshot-save {path, exit}
 *
 * The handler checks the arguments on the event loop and hands the save to
 * a worker thread, which pauses the VM (a "state" event says so), writes
 * the file (progress events), then either resumes (a VM the user had paused
 * stays paused: pauses nest) or, with exit, answers and ends tern with
 * status 0 once the file is durable, without letting the guest run again.
 * One save at a time: a second one gets "busy". */
#include "snapshot/snapshot_cmds.h"
#include "control/control.h"
#include "snapshot/snapshot.h"
#include "util/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct snapshot_cmds {
	struct machine *m;
	pthread_mutex_t lock;
	bool busy;                 /* a save is running (its thread may still need a join) */
	bool joinable;             /* thread holds a finished or running worker */
	pthread_t thread;
	/* the running save */
	struct control_req *req;
	char *path;
	bool exit_after;
	struct timespec last_progress;
};

static void on_progress(void *opaque, uint64_t done, uint64_t total)
{
	struct snapshot_cmds *c = opaque;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	double dt = (double)(now.tv_sec - c->last_progress.tv_sec) +
		    (double)(now.tv_nsec - c->last_progress.tv_nsec) / 1e9;
	/* a few per second, and always the last one */
	if (dt < 0.2 && done != total)
		return;
	c->last_progress = now;
	control_emit_progress(c->req, done, total);
}

static json_t *stats_json(const char *path, const struct snapshot_stats *st, bool exit_after)
{
	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:f, s:f, s:b}",
			 "path", path,
			 "ram_bytes", (json_int_t)st->ram_bytes,
			 "data_bytes", (json_int_t)st->data_bytes,
			 "file_bytes", (json_int_t)st->file_bytes,
			 "state_bytes", (json_int_t)st->state_bytes,
			 "paused_ms", st->paused_ms,
			 "total_ms", st->total_ms,
			 "exit", exit_after);
}

static void *save_worker(void *arg)
{
	struct snapshot_cmds *c = arg;
	struct machine *m = c->m;
	struct snapshot_stats st = { 0 };
	struct terr err = { 0 };

	/* our own pause reference: the VM stays stopped from here to the end
	 * (for ever with exit), whatever snapshot_save does inside */
	vm_pause(&m->vm);
	control_notify_state(m->control);
	clock_gettime(CLOCK_MONOTONIC, &c->last_progress);
	int r = snapshot_save(m, c->path, on_progress, c, &st, &err);
	if (r) {
		log_warn("snapshot", "%s", err.msg);
		vm_resume(&m->vm);
		control_notify_state(m->control);
		control_reply_error(c->req, r == -ESHUTDOWN ? CONTROL_E_BAD_STATE : CONTROL_E_FAILED,
				    "%s", err.msg);
	} else if (c->exit_after) {
		log_info("snapshot", "saved %s; exiting", c->path);
		control_reply_ok(c->req, stats_json(c->path, &st, true));
		/* the reply is queued before the exit: control_server_destroy
		 * delivers it before it closes the clients */
		vm_request_exit(&m->vm, VM_EXIT_QUIT, 0);
	} else {
		vm_resume(&m->vm);
		control_notify_state(m->control);
		log_info("snapshot", "saved %s (%.1f ms paused)", c->path, st.paused_ms);
		control_reply_ok(c->req, stats_json(c->path, &st, false));
	}
	pthread_mutex_lock(&c->lock);
	c->req = NULL;
	free(c->path);
	c->path = NULL;
	c->busy = false;
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

static void cmd_save(struct control_req *req, json_t *args, void *opaque)
{
	static const char *const known[] = { "path", "exit", NULL };
	struct snapshot_cmds *c = opaque;
	json_t *path, *ex;

	if (control_req_args_known(req, args, known) ||
	    control_req_arg(req, args, "path", JSON_STRING, true, &path) ||
	    control_req_arg(req, args, "exit", JSON_TRUE, false, &ex))
		return;
	const char *p = json_string_value(path);
	if (p[0] != '/') {
		control_reply_error(req, CONTROL_E_BAD_ARGS, "path: \"%s\" is not absolute (tern's working "
				    "directory is not the client's)", p);
		return;
	}
	if (control_vm_state(&c->m->vm) == CONTROL_VM_EXITING) {
		control_reply_error(req, CONTROL_E_BAD_STATE, "the VM is exiting");
		return;
	}
	pthread_mutex_lock(&c->lock);
	if (c->busy) {
		pthread_mutex_unlock(&c->lock);
		control_reply_error(req, CONTROL_E_BUSY, "a snapshot is already being saved");
		return;
	}
	bool join = c->joinable;
	c->joinable = false;
	pthread_mutex_unlock(&c->lock);
	if (join)
		pthread_join(c->thread, NULL);   /* finished: busy was false */

	char *copy = strdup(p);
	if (!copy) {
		control_reply_error(req, CONTROL_E_FAILED, "out of memory");
		return;
	}
	pthread_mutex_lock(&c->lock);
	c->busy = true;
	c->req = req;
	c->path = copy;
	c->exit_after = ex && json_is_true(ex);
	int e = pthread_create(&c->thread, NULL, save_worker, c);
	if (e) {
		c->busy = false;
		c->req = NULL;
		c->path = NULL;
	} else {
		c->joinable = true;
	}
	pthread_mutex_unlock(&c->lock);
	if (e) {
		free(copy);
		control_reply_error(req, CONTROL_E_FAILED, "cannot start the snapshot thread: %s",
				    strerror(e));
	}
}

int snapshot_cmds_register(struct machine *m, struct terr *err)
{
	if (!m->control)
		return 0;
	struct snapshot_cmds *c = calloc(1, sizeof(*c));
	if (!c)
		return terr_set(err, ENOMEM, "out of memory");
	c->m = m;
	pthread_mutex_init(&c->lock, NULL);
	int r = control_register_help(m->control, "snapshot-save",
				      "save the VM to a file: {path (absolute), exit (bool)}; "
				      "progress events, then the figures", cmd_save, c);
	if (r) {
		pthread_mutex_destroy(&c->lock);
		free(c);
		return terr_set(err, -r, "control: cannot register snapshot-save: %s", strerror(-r));
	}
	m->snapshot_cmds = c;
	return 0;
}

void snapshot_cmds_stop(struct machine *m)
{
	struct snapshot_cmds *c = m->snapshot_cmds;
	if (!c)
		return;
	/* the VM has stopped (vm_wait returned): a save still running notices
	 * the exit within 64 MiB and gives up; its answer is an error */
	pthread_mutex_lock(&c->lock);
	bool join = c->joinable;
	c->joinable = false;
	pthread_mutex_unlock(&c->lock);
	if (join)
		pthread_join(c->thread, NULL);
	control_unregister(m->control, "snapshot-save");
	pthread_mutex_destroy(&c->lock);
	free(c);
	m->snapshot_cmds = NULL;
}
