/* The migration commands of the control socket (docs/control.md):
 *
 *   migrate {dest, mode, max_bandwidth, downtime_limit_ms, timeout_s,
 *            compress, exit}
 *   migrate-status
 *   migrate-cancel
 *
 * migrate checks its arguments on the event loop and runs the migration on
 * a worker thread, which sends progress events and answers with the
 * figures. After a completed migration the VM stays paused and "resume" is
 * refused (or, with exit, tern ends with status 0); migrate-status keeps
 * reporting the final figures. One migration at a time. */
#include "migration/migration.h"
#include "control/control.h"
#include "machine/machine.h"
#include "migration/proto.h"
#include "util/log.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct migration_cmds {
	struct machine *m;
	pthread_mutex_t lock;
	bool busy;                 /* a migration is running */
	bool joinable;
	pthread_t thread;
	struct control_req *req;
	struct mig_params params;
	bool exit_after;
	atomic_bool cancel;
	struct mig_stats stats;    /* the running or the last migration */
	bool have_stats;
	bool migrated;             /* the guest belongs to another tern now */
	double last_progress;
};

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static json_t *stats_json(const struct mig_stats *st, const struct mig_params *p)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:f, s:I, s:I, s:I, s:I, s:I, s:f, s:i, "
			      "s:I, s:I, s:I, s:I, s:b}",
			      "state", mig_state_name(st->state),
			      "dest", p->dest,
			      "mode", p->live ? "live" : "warm",
			      "round", (int)st->round,
			      "elapsed_ms", st->elapsed_ms,
			      "ram_bytes", (json_int_t)st->ram_bytes,
			      "bytes_sent", (json_int_t)st->bytes_sent,
			      "remaining_bytes", (json_int_t)st->remaining_bytes,
			      "dirty_rate", (json_int_t)st->dirty_rate,
			      "bandwidth", (json_int_t)st->bandwidth,
			      "expected_downtime_ms", st->expected_downtime_ms,
			      "throttle_pct", (int)st->throttle_pct,
			      "pages_data", (json_int_t)st->pages_data,
			      "pages_zero", (json_int_t)st->pages_zero,
			      "max_bandwidth", (json_int_t)p->max_bandwidth,
			      "max_window_bytes", (json_int_t)st->max_window_bytes,
			      "committed", st->committed);
	if (!o)
		return NULL;
	json_object_set_new(o, "downtime_limit_ms", json_integer(p->downtime_limit_ms));
	json_object_set_new(o, "timeout_s", json_integer(p->timeout_s));
	if (st->state == MIG_S_COMPLETED) {
		json_object_set_new(o, "total_ms", json_real(st->elapsed_ms));
		json_object_set_new(o, "downtime_ms", json_real(st->downtime_ms));
		json_object_set_new(o, "setup_ms", json_real(st->setup_ms));
		json_object_set_new(o, "rounds", json_integer(st->round));
		json_object_set_new(o, "state_bytes", json_integer((json_int_t)st->state_bytes));
	}
	if (st->error[0])
		json_object_set_new(o, "error", json_string(st->error));
	return o;
}

/* worker thread */
static void on_progress(void *opaque, const struct mig_stats *st)
{
	struct migration_cmds *c = opaque;
	pthread_mutex_lock(&c->lock);
	c->stats = *st;
	c->have_stats = true;
	double t = now_ms();
	bool emit = t - c->last_progress >= 200;
	if (emit)
		c->last_progress = t;
	pthread_mutex_unlock(&c->lock);
	if (emit && st->state != MIG_S_COMPLETED)
		control_emit_progress(c->req, st->bytes_sent, st->bytes_sent + st->remaining_bytes);
}

static void *worker(void *arg)
{
	struct migration_cmds *c = arg;
	struct machine *m = c->m;
	struct mig_stats st;
	struct terr err = { 0 };

	log_info("migration", "%s migration to %s", c->params.live ? "live" : "warm", c->params.dest);
	int r = migration_send(m, &c->params, &c->cancel, on_progress, c, &st, &err);
	pthread_mutex_lock(&c->lock);
	c->stats = st;
	c->have_stats = true;
	if (st.committed)
		c->migrated = true;
	struct control_req *req = c->req;
	pthread_mutex_unlock(&c->lock);
	if (!r) {
		log_info("migration", "migrated to %s: %.0f ms, downtime %.2f ms, %u round(s), %llu "
			 "bytes", c->params.dest, st.elapsed_ms, st.downtime_ms, st.round,
			 (unsigned long long)st.bytes_sent);
		control_emit_progress(req, st.bytes_sent, st.bytes_sent);
		json_t *o = stats_json(&st, &c->params);
		if (o)
			json_object_set_new(o, "exit", json_boolean(c->exit_after));
		control_reply_ok(req, o);
		if (c->exit_after)
			vm_request_exit(&m->vm, VM_EXIT_QUIT, 0);
	} else {
		log_warn("migration", "migration to %s %s: %s", c->params.dest,
			 r == -ECANCELED ? "cancelled" : "failed", err.msg);
		control_reply_error(req, r == -ESHUTDOWN ? CONTROL_E_BAD_STATE : CONTROL_E_FAILED,
				    "%s", err.msg);
	}
	pthread_mutex_lock(&c->lock);
	c->req = NULL;
	c->busy = false;
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* "100M", "1.5G", "2000000": bytes per second, K/M/G/T binary multiples,
 * an optional trailing "B", "iB" and "/s". */
static int parse_rate(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || !(v >= 0) || isinf(v))
		return -1;
	double mult = 1;
	switch (toupper((unsigned char)*end)) {
	case 'K': mult = 1024.0; end++; break;
	case 'M': mult = 1024.0 * 1024; end++; break;
	case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
	case 'T': mult = 1024.0 * 1024 * 1024 * 1024; end++; break;
	}
	if (mult > 1 && *end == 'i')
		end++;
	if (*end == 'B')
		end++;
	if (!strcmp(end, "/s"))
		end += 2;
	if (*end || v * mult > 1e18)
		return -1;
	*out = (uint64_t)(v * mult);
	return 0;
}

static void cmd_migrate(struct control_req *req, json_t *args, void *opaque)
{
	static const char *const known[] = { "dest", "mode", "max_bandwidth", "downtime_limit_ms",
					     "timeout_s", "compress", "exit", NULL };
	struct migration_cmds *c = opaque;
	json_t *dest, *mode, *down, *tmo, *comp, *ex;
	struct mig_params p = { .live = true, .downtime_limit_ms = MIG_DEFAULT_DOWNTIME_MS };
	struct terr err = { 0 };

	if (control_req_args_known(req, args, known) ||
	    control_req_arg(req, args, "dest", JSON_STRING, true, &dest) ||
	    control_req_arg(req, args, "mode", JSON_STRING, false, &mode) ||
	    control_req_arg(req, args, "downtime_limit_ms", JSON_INTEGER, false, &down) ||
	    control_req_arg(req, args, "timeout_s", JSON_INTEGER, false, &tmo) ||
	    control_req_arg(req, args, "compress", JSON_TRUE, false, &comp) ||
	    control_req_arg(req, args, "exit", JSON_TRUE, false, &ex))
		return;
	if (mig_addr_check(json_string_value(dest), &err)) {
		control_reply_error(req, CONTROL_E_BAD_ARGS, "migrate: dest: %s", err.msg);
		return;
	}
	snprintf(p.dest, sizeof(p.dest), "%s", json_string_value(dest));
	if (mode) {
		const char *mv = json_string_value(mode);
		if (strcmp(mv, "live") && strcmp(mv, "warm")) {
			control_reply_error(req, CONTROL_E_BAD_ARGS, "migrate: mode: \"%s\" is not warm or "
					    "live", mv);
			return;
		}
		p.live = !strcmp(mv, "live");
	}
	json_t *bw = json_object_get(args, "max_bandwidth");
	if (bw && !json_is_null(bw)) {
		if (json_is_integer(bw) && json_integer_value(bw) >= 0) {
			p.max_bandwidth = (uint64_t)json_integer_value(bw);
		} else if (!json_is_string(bw) || parse_rate(json_string_value(bw), &p.max_bandwidth)) {
			control_reply_error(req, CONTROL_E_BAD_ARGS, "migrate: max_bandwidth: bytes per "
					    "second, a number or a string such as \"100M\" (0 = unlimited)");
			return;
		}
		if (p.max_bandwidth && p.max_bandwidth < (1u << 20)) {
			control_reply_error(req, CONTROL_E_BAD_ARGS, "migrate: max_bandwidth: %llu bytes/s "
					    "is below the 1 MiB/s minimum (0 = unlimited)",
					    (unsigned long long)p.max_bandwidth);
			return;
		}
	}
	if (down) {
		json_int_t v = json_integer_value(down);
		if (v < 1 || v > 3600000) {
			control_reply_error(req, CONTROL_E_BAD_ARGS, "migrate: downtime_limit_ms: %lld is "
					    "not between 1 and 3600000", (long long)v);
			return;
		}
		p.downtime_limit_ms = (uint32_t)v;
	}
	if (tmo) {
		json_int_t v = json_integer_value(tmo);
		if (v < 0 || v > 31536000) {
			control_reply_error(req, CONTROL_E_BAD_ARGS, "migrate: timeout_s: %lld is not "
					    "between 0 (none) and 31536000", (long long)v);
			return;
		}
		p.timeout_s = (uint32_t)v;
	}
	p.zstd = comp && json_is_true(comp);
	if (control_vm_state(&c->m->vm) == CONTROL_VM_EXITING) {
		control_reply_error(req, CONTROL_E_BAD_STATE, "the VM is exiting");
		return;
	}
	pthread_mutex_lock(&c->lock);
	if (c->migrated) {
		pthread_mutex_unlock(&c->lock);
		control_reply_error(req, CONTROL_E_BAD_STATE, "the guest was migrated to %s already",
				    c->params.dest);
		return;
	}
	if (c->busy) {
		pthread_mutex_unlock(&c->lock);
		control_reply_error(req, CONTROL_E_BUSY, "a migration to %s is in progress",
				    c->params.dest);
		return;
	}
	bool join = c->joinable;
	c->joinable = false;
	pthread_mutex_unlock(&c->lock);
	if (join)
		pthread_join(c->thread, NULL);

	pthread_mutex_lock(&c->lock);
	c->busy = true;
	c->req = req;
	c->params = p;
	c->exit_after = ex && json_is_true(ex);
	atomic_store(&c->cancel, false);
	memset(&c->stats, 0, sizeof(c->stats));
	c->stats.state = MIG_S_SETUP;
	c->stats.live = p.live;
	c->have_stats = true;
	c->last_progress = 0;
	int e = pthread_create(&c->thread, NULL, worker, c);
	if (e) {
		c->busy = false;
		c->req = NULL;
		c->stats.state = MIG_S_FAILED;
	} else {
		c->joinable = true;
	}
	pthread_mutex_unlock(&c->lock);
	if (e)
		control_reply_error(req, CONTROL_E_FAILED, "cannot start the migration thread: %s",
				    strerror(e));
}

static void cmd_status(struct control_req *req, json_t *args, void *opaque)
{
	static const char *const none[] = { NULL };
	struct migration_cmds *c = opaque;
	if (control_req_args_known(req, args, none))
		return;
	pthread_mutex_lock(&c->lock);
	json_t *o = c->have_stats ? stats_json(&c->stats, &c->params) :
		json_pack("{s:s}", "state", mig_state_name(MIG_S_NONE));
	pthread_mutex_unlock(&c->lock);
	control_reply_ok(req, o);
}

static void cmd_cancel(struct control_req *req, json_t *args, void *opaque)
{
	static const char *const none[] = { NULL };
	struct migration_cmds *c = opaque;
	if (control_req_args_known(req, args, none))
		return;
	pthread_mutex_lock(&c->lock);
	bool busy = c->busy, committed = c->stats.committed;
	if (busy && !committed)
		atomic_store(&c->cancel, true);
	pthread_mutex_unlock(&c->lock);
	if (!busy)
		control_reply_error(req, CONTROL_E_BAD_STATE, "no migration is in progress");
	else if (committed)
		control_reply_error(req, CONTROL_E_BAD_STATE, "too late: the destination has the guest");
	else
		control_reply_ok(req, json_pack("{s:s}", "state", "cancelling"));
}

int migration_cmds_register(struct machine *m, struct terr *err)
{
	if (!m->control)
		return 0;
	struct migration_cmds *c = calloc(1, sizeof(*c));
	if (!c)
		return terr_set(err, ENOMEM, "out of memory");
	c->m = m;
	pthread_mutex_init(&c->lock, NULL);
	atomic_init(&c->cancel, false);
	int r = control_register_help(m->control, "migrate",
				      "move the VM to a tern receive: {dest, mode (warm|live), "
				      "max_bandwidth, downtime_limit_ms, timeout_s, compress, exit}; "
				      "progress events, then the figures", cmd_migrate, c);
	if (!r)
		r = control_register_help(m->control, "migrate-status",
					  "the migration in progress, or the last one's figures",
					  cmd_status, c);
	if (!r)
		r = control_register_help(m->control, "migrate-cancel",
					  "stop the migration in progress; the VM runs on here",
					  cmd_cancel, c);
	if (r) {
		control_unregister(m->control, "migrate");
		control_unregister(m->control, "migrate-status");
		pthread_mutex_destroy(&c->lock);
		free(c);
		return terr_set(err, -r, "control: cannot register the migration commands: %s",
				strerror(-r));
	}
	m->migration_cmds = c;
	return 0;
}

void migration_cmds_stop(struct machine *m)
{
	struct migration_cmds *c = m->migration_cmds;
	if (!c)
		return;
	/* the VM has stopped: a migration still running sees it at its next
	 * check and gives up */
	atomic_store(&c->cancel, true);
	pthread_mutex_lock(&c->lock);
	bool join = c->joinable;
	c->joinable = false;
	pthread_mutex_unlock(&c->lock);
	if (join)
		pthread_join(c->thread, NULL);
	control_unregister(m->control, "migrate");
	control_unregister(m->control, "migrate-status");
	control_unregister(m->control, "migrate-cancel");
	pthread_mutex_destroy(&c->lock);
	free(c);
	m->migration_cmds = NULL;
}
