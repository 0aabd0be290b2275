/* The control server over a real UNIX socket, on an event loop this test runs
 * itself (evloop_run_once): request and reply, pipelining, bad input, an
 * asynchronous command answered from another thread with progress events, a
 * client that never reads, a client that half-closes, destroy with requests
 * outstanding, the socket file (mode, parent directory, live and stale
 * sockets), the built-in commands on a VM without vCPUs, and the socket path
 * rules of the configuration. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "control/control.h"
#include "control/control_internal.h"

struct fixture {
	char dir[64];
	char path[100];
	struct evloop loop;
	struct control_server *s;
};

struct cl {
	int fd;
	struct control_linebuf in;
	bool eof;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int setup_opts(void **state, const struct control_server_opts *o)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/tern-ctl-test.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/sub/dir/vm.sock", f->dir);
	struct terr err = { 0 };
	assert_int_equal(evloop_init(&f->loop, &err), 0);
	struct control_server_opts opts = o ? *o : (struct control_server_opts){ 0 };
	opts.path = f->path;
	opts.loop = &f->loop;
	if (control_server_create(&opts, &f->s, &err))
		fail_msg("%s", err.msg);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_opts(state, NULL);
}

static int setup_small(void **state)
{
	struct control_server_opts o = { .max_line = 64, .max_output = 4096, .max_clients = 2 };
	return setup_opts(state, &o);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	control_server_destroy(f->s);
	evloop_destroy(&f->loop);
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static struct cl *cl_open(struct fixture *f)
{
	struct cl *c = calloc(1, sizeof(*c));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(c->fd >= 0);
	assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	control_linebuf_init(&c->in, 1 << 24);
	evloop_run_once(&f->loop, 0);     /* accept */
	return c;
}

static void cl_close(struct cl *c)
{
	if (c->fd >= 0)
		close(c->fd);
	control_linebuf_free(&c->in);
	free(c);
}

static void cl_send(struct cl *c, const char *s)
{
	size_t n = strlen(s);
	assert_int_equal(send(c->fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Run the loop until the client has a line (returned, malloc'd), or until
 * EOF or the timeout (NULL). */
static char *cl_line(struct fixture *f, struct cl *c, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;
	for (;;) {
		char *line;
		size_t len;
		if (control_linebuf_next(&c->in, &line, &len) == CONTROL_LINE_OK)
			return strdup(line);
		if (c->eof || now_ms() > end)
			return NULL;
		evloop_run_once(&f->loop, 5);
		char buf[65536];
		ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN))
			c->eof = true;
		else if (n > 0)
			assert_int_equal(control_linebuf_feed(&c->in, buf, (size_t)n), 0);
	}
}

static void expect(struct fixture *f, struct cl *c, const char *want)
{
	char *got = cl_line(f, c, 2000);
	if (!got)
		fail_msg("no line, expected %s", want);
	if (strcmp(got, want))
		fail_msg("got      %s\nexpected %s", got, want);
	free(got);
}

/* Expect a line containing part. */
static void expect_has(struct fixture *f, struct cl *c, const char *part)
{
	char *got = cl_line(f, c, 2000);
	if (!got)
		fail_msg("no line, expected one with %s", part);
	if (!strstr(got, part))
		fail_msg("got %s\nexpected a line with %s", got, part);
	free(got);
}

static void expect_eof(struct fixture *f, struct cl *c)
{
	char *got = cl_line(f, c, 2000);
	if (got)
		fail_msg("expected EOF, got %s", got);
	assert_true(c->eof);
}

/* ---- commands used by the tests ------------------------------------- */

static void cmd_echo(struct control_req *req, json_t *args, void *opaque)
{
	(void)opaque;
	control_reply_ok(req, json_pack("{s:O}", "args", args));
}

static void cmd_fail(struct control_req *req, json_t *args, void *opaque)
{
	(void)opaque;
	json_t *why;
	if (control_req_arg(req, args, "why", JSON_STRING, true, &why))
		return;
	control_reply_error(req, CONTROL_E_FAILED, "it failed: %s", json_string_value(why));
}

struct worker {
	struct control_req *req;
	int steps;
	bool reply;            /* false: never answers (destroy test) */
	pthread_t thread;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	for (int i = 1; i <= w->steps; i++)
		control_emit_progress(w->req, (uint64_t)i, (uint64_t)w->steps);
	if (w->reply)
		control_reply_ok(w->req, json_pack("{s:i}", "steps", w->steps));
	return NULL;
}

static void cmd_async(struct control_req *req, json_t *args, void *opaque)
{
	struct worker *w = opaque;
	json_t *steps;
	if (control_req_arg(req, args, "steps", JSON_INTEGER, true, &steps))
		return;
	w->req = req;
	w->steps = (int)json_integer_value(steps);
	assert_int_equal(pthread_create(&w->thread, NULL, work, w), 0);
}

/* Held until the test answers it itself. */
static struct control_req *held;
static void cmd_hold(struct control_req *req, json_t *args, void *opaque)
{
	(void)args;
	(void)opaque;
	held = req;
}

static void register_test_commands(struct control_server *s, struct worker *w)
{
	assert_int_equal(control_register_help(s, "echo", "echo args", cmd_echo, NULL), 0);
	assert_int_equal(control_register(s, "fail", cmd_fail, NULL), 0);
	assert_int_equal(control_register(s, "async", cmd_async, w), 0);
	assert_int_equal(control_register(s, "hold", cmd_hold, NULL), 0);
}

/* ---- tests ----------------------------------------------------------- */

static void test_request_reply(void **state)
{
	struct fixture *f = *state;
	struct worker w = { .reply = true };
	register_test_commands(f->s, &w);
	struct cl *c = cl_open(f);

	cl_send(c, "{\"id\": 1, \"cmd\": \"echo\", \"args\": {\"x\": [1, \"two\"]}}\n");
	expect(f, c, "{\"id\":1,\"ok\":{\"args\":{\"x\":[1,\"two\"]}}}");
	/* pipelined, in one write, with a CRLF, a blank line and errors between:
	 * answers come in request order */
	cl_send(c, "{\"id\":\"a\",\"cmd\":\"echo\"}\r\n\n   \n{\"id\":\"b\",\"cmd\":\"nope\"}\nnot json\n"
		   "{\"id\":\"c\",\"cmd\":\"fail\",\"args\":{\"why\":\"because\"}}\n"
		   "{\"id\":\"d\",\"cmd\":\"fail\"}\n{\"cmd\":\"echo\",\"id\":\"e\"}\n");
	expect(f, c, "{\"id\":\"a\",\"ok\":{\"args\":{}}}");
	expect(f, c, "{\"id\":\"b\",\"error\":{\"code\":\"unknown-command\",\"message\":\"unknown command \\\"nope\\\" (\\\"commands\\\" lists them)\"}}");
	expect_has(f, c, "{\"id\":null,\"error\":{\"code\":\"bad-request\",\"message\":\"malformed JSON");
	expect(f, c, "{\"id\":\"c\",\"error\":{\"code\":\"failed\",\"message\":\"it failed: because\"}}");
	expect(f, c, "{\"id\":\"d\",\"error\":{\"code\":\"bad-args\",\"message\":\"fail: missing argument \\\"why\\\" (a string)\"}}");
	expect(f, c, "{\"id\":\"e\",\"ok\":{\"args\":{}}}");
	/* a half line waits for the rest */
	cl_send(c, "{\"id\":2,\"cmd\":");
	assert_null(cl_line(f, c, 100));
	cl_send(c, "\"echo\"}\n");
	expect(f, c, "{\"id\":2,\"ok\":{\"args\":{}}}");
	cl_close(c);
}

static void test_too_long(void **state)
{
	struct fixture *f = *state;   /* max_line 64 */
	struct worker w = { .reply = true };
	register_test_commands(f->s, &w);
	struct cl *c = cl_open(f);
	char big[300];
	memset(big, 'x', sizeof(big) - 2);
	big[sizeof(big) - 2] = '\n';
	big[sizeof(big) - 1] = '\0';
	cl_send(c, big);
	expect(f, c, "{\"id\":null,\"error\":{\"code\":\"too-long\",\"message\":\"request line longer than 64 bytes; ignored up to its end\"}}");
	cl_send(c, "{\"id\":3,\"cmd\":\"echo\"}\n");
	expect(f, c, "{\"id\":3,\"ok\":{\"args\":{}}}");
	cl_close(c);
}

static void test_async_progress(void **state)
{
	struct fixture *f = *state;
	struct worker w = { .reply = true };
	register_test_commands(f->s, &w);
	struct cl *a = cl_open(f), *b = cl_open(f);
	cl_send(a, "{\"id\":9,\"cmd\":\"async\",\"args\":{\"steps\":3}}\n");
	/* both clients see the events; only a gets the answer */
	for (int i = 1; i <= 3; i++) {
		char want[128];
		snprintf(want, sizeof(want),
			 "{\"event\":\"progress\",\"data\":{\"op\":\"async\",\"id\":9,\"done\":%d,\"total\":3}}", i);
		expect(f, a, want);
		expect(f, b, want);
	}
	expect(f, a, "{\"id\":9,\"ok\":{\"steps\":3}}");
	pthread_join(w.thread, NULL);
	assert_null(cl_line(f, b, 50));
	/* events from any thread */
	control_emit_event(f->s, "state", json_pack("{s:s}", "state", "paused"));
	expect(f, a, "{\"event\":\"state\",\"data\":{\"state\":\"paused\"}}");
	expect(f, b, "{\"event\":\"state\",\"data\":{\"state\":\"paused\"}}");
	cl_close(a);
	cl_close(b);
}

/* A client that never reads is dropped once max_output is queued; the loop
 * goes on serving the others. */
static void test_slow_client(void **state)
{
	struct fixture *f = *state;   /* max_output 4096 */
	struct worker w = { .reply = true };
	register_test_commands(f->s, &w);
	struct cl *slow = cl_open(f), *good = cl_open(f);
	char pad[900];
	memset(pad, 'p', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	assert_int_equal(f->s->nclients, 2);
	for (int i = 0; i < 2000 && f->s->nclients == 2; i++) {
		control_emit_event(f->s, "noise", json_pack("{s:s}", "pad", pad));
		evloop_run_once(&f->loop, 0);
		/* the good client keeps up */
		char buf[65536];
		while (recv(good->fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
			;
	}
	assert_int_equal(f->s->nclients, 1);
	cl_send(good, "{\"id\":1,\"cmd\":\"echo\"}\n");
	char *line;
	while ((line = cl_line(f, good, 2000)) && strstr(line, "\"event\""))
		free(line);
	assert_non_null(line);
	assert_string_equal(line, "{\"id\":1,\"ok\":{\"args\":{}}}");
	free(line);
	/* the slow one gets EOF after what the kernel had buffered */
	char buf[65536];
	ssize_t n;
	while ((n = recv(slow->fd, buf, sizeof(buf), 0)) > 0)
		;
	assert_int_equal(n, 0);
	cl_close(slow);
	cl_close(good);
}

static void test_max_clients(void **state)
{
	struct fixture *f = *state;   /* max_clients 2 */
	struct cl *a = cl_open(f), *b = cl_open(f), *c = cl_open(f);
	expect_has(f, c, "\"code\":\"busy\"");
	expect_eof(f, c);
	cl_close(a);
	evloop_run_once(&f->loop, 10);
	struct cl *d = cl_open(f);
	assert_int_equal(f->s->nclients, 2);
	cl_close(b);
	cl_close(c);
	cl_close(d);
}

/* A client that sends its requests and shuts its side still gets every
 * answer, even late ones; then the server closes. A last line without '\n'
 * counts. */
static void test_half_close(void **state)
{
	struct fixture *f = *state;
	struct worker w = { .reply = true };
	register_test_commands(f->s, &w);
	struct cl *c = cl_open(f);
	cl_send(c, "{\"id\":1,\"cmd\":\"hold\"}\n{\"id\":2,\"cmd\":\"echo\"}");
	shutdown(c->fd, SHUT_WR);
	expect(f, c, "{\"id\":2,\"ok\":{\"args\":{}}}");
	assert_null(cl_line(f, c, 50));
	assert_false(c->eof);
	assert_non_null(held);
	control_reply_ok(held, json_pack("{s:b}", "late", 1));
	held = NULL;
	expect(f, c, "{\"id\":1,\"ok\":{\"late\":true}}");
	expect_eof(f, c);
	cl_close(c);
}

/* Answers to a client that has gone are dropped; control_req_client_alive
 * says so. */
static void test_client_gone(void **state)
{
	struct fixture *f = *state;
	struct worker w = { .reply = true };
	register_test_commands(f->s, &w);
	struct cl *c = cl_open(f);
	cl_send(c, "{\"id\":1,\"cmd\":\"hold\"}\n");
	for (int i = 0; i < 10 && !held; i++)
		evloop_run_once(&f->loop, 10);
	assert_non_null(held);
	assert_true(control_req_client_alive(held));
	cl_close(c);
	for (int i = 0; i < 10 && control_req_client_alive(held); i++)
		evloop_run_once(&f->loop, 10);
	assert_false(control_req_client_alive(held));
	control_reply_ok(held, NULL);
	held = NULL;
	evloop_run_once(&f->loop, 10);
	assert_int_equal(f->s->nclients, 0);
}

/* Destroy with a request outstanding: the client hears "exiting"; the
 * worker's answer afterwards goes nowhere, safely. */
static void test_destroy_outstanding(void **state)
{
	struct fixture *f = *state;
	struct worker w = { .reply = true };
	register_test_commands(f->s, &w);
	struct cl *c = cl_open(f);
	cl_send(c, "{\"id\":\"x\",\"cmd\":\"hold\"}\n");
	for (int i = 0; i < 10 && !held; i++)
		evloop_run_once(&f->loop, 10);
	assert_non_null(held);
	control_emit_event(f->s, "last", NULL);
	control_server_destroy(f->s);
	f->s = NULL;
	struct stat st;
	assert_int_equal(stat(f->path, &st), -1);   /* the socket file is gone */
	expect(f, c, "{\"event\":\"last\",\"data\":{}}");
	expect(f, c, "{\"id\":\"x\",\"error\":{\"code\":\"exiting\",\"message\":\"tern is exiting before the command finished\"}}");
	expect_eof(f, c);
	control_emit_progress(held, 1, 2);
	control_reply_ok(held, NULL);      /* frees the request and the server */
	held = NULL;
	cl_close(c);
}

static void test_register(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(control_register(f->s, "echo", cmd_echo, NULL), 0);
	assert_int_equal(control_register(f->s, "echo", cmd_echo, NULL), -EEXIST);
	assert_int_equal(control_register(f->s, "Bad", cmd_echo, NULL), -EINVAL);
	assert_int_equal(control_register(f->s, "", cmd_echo, NULL), -EINVAL);
	assert_int_equal(control_register(f->s, "x", NULL, NULL), -EINVAL);
	assert_int_equal(control_unregister(f->s, "echo"), 0);
	assert_int_equal(control_unregister(f->s, "echo"), -ENOENT);
	/* no socket: nothing to do, no error */
	assert_int_equal(control_register(NULL, "echo", cmd_echo, NULL), 0);
	control_emit_event(NULL, "x", json_object());
	control_notify_state(NULL);
	control_block_resume(NULL, "x");
	control_adopt_pause(NULL);
	control_server_destroy(NULL);
}

static void test_socket_file(void **state)
{
	struct fixture *f = *state;
	struct stat st;
	char sub[160];
	assert_int_equal(stat(f->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(sub, sizeof(sub), "%s/sub", f->dir);
	assert_int_equal(stat(sub, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	snprintf(sub, sizeof(sub), "%s/sub/dir", f->dir);
	assert_int_equal(stat(sub, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_string_equal(control_server_path(f->s), f->path);

	/* a live socket is refused */
	struct control_server *s2;
	struct terr err = { 0 };
	struct control_server_opts o = { .path = f->path, .loop = &f->loop };
	assert_int_equal(control_server_create(&o, &s2, &err), -EADDRINUSE);
	char want[200];
	snprintf(want, sizeof(want), "control.path: another tern is already listening on %s", f->path);
	assert_string_equal(err.msg, want);
	assert_null(s2);
	assert_int_equal(stat(f->path, &st), 0);    /* and left alone */

	/* a stale one (its listener gone, file left) is replaced */
	control_server_destroy(f->s);
	f->s = NULL;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(stat(f->path, &st), 0);
	terr_clear(&err);
	if (control_server_create(&o, &f->s, &err))
		fail_msg("%s", err.msg);
	struct cl *c = cl_open(f);
	cl_close(c);

	/* a file that is not a socket is never removed */
	char other[160];
	snprintf(other, sizeof(other), "%s/file", f->dir);
	int k = open(other, O_CREAT | O_WRONLY, 0600);
	close(k);
	o.path = other;
	terr_clear(&err);
	assert_int_equal(control_server_create(&o, &s2, &err), -EEXIST);
	assert_non_null(strstr(err.msg, "exists and is not a socket"));
	assert_int_equal(stat(other, &st), 0);

	/* too long for sun_path */
	char lng[200];
	memset(lng, 'a', sizeof(lng) - 1);
	lng[0] = '/';
	lng[sizeof(lng) - 1] = '\0';
	o.path = lng;
	terr_clear(&err);
	assert_int_equal(control_server_create(&o, &s2, &err), -ENAMETOOLONG);
	assert_non_null(strstr(err.msg, "too long for a UNIX socket"));

	/* the file is removed at destroy only while it is still ours */
	control_server_destroy(f->s);
	f->s = NULL;
	assert_int_equal(stat(f->path, &st), -1);
	o.path = f->path;
	terr_clear(&err);
	assert_int_equal(control_server_create(&o, &f->s, &err), 0);
	unlink(f->path);
	k = open(f->path, O_CREAT | O_WRONLY, 0600);   /* someone else's now */
	close(k);
	control_server_destroy(f->s);
	f->s = NULL;
	assert_int_equal(stat(f->path, &st), 0);
}

/* ---- built-ins on a VM without vCPUs --------------------------------- */

static void fake_vm(struct vm *vm)
{
	memset(vm, 0, sizeof(*vm));
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	pthread_cond_init(&vm->resume_cond, NULL);
	vm->mem.size = 64 << 20;   /* no vCPUs: vm_pause has nobody to wait for */
}

static void test_builtins(void **state)
{
	struct fixture *f = *state;
	struct vm vm;
	fake_vm(&vm);
	struct config *cfg = config_new();
	struct terr err = { 0 };
	assert_int_equal(config_set(cfg, "memory.size", "64M", &err), 0);
	assert_int_equal(control_builtins_register(f->s, &vm, "t1", cfg, &err), 0);
	config_free(cfg);     /* copied */
	struct cl *c = cl_open(f), *w = cl_open(f);

	cl_send(c, "{\"id\":1,\"cmd\":\"status\"}\n");
	char *line = cl_line(f, c, 2000);
	assert_non_null(line);
	json_t *j = json_loads(line, 0, NULL);
	free(line);
	json_t *ok = json_object_get(j, "ok");
	assert_string_equal(json_string_value(json_object_get(ok, "name")), "t1");
	assert_string_equal(json_string_value(json_object_get(ok, "state")), "running");
	assert_int_equal(json_integer_value(json_object_get(ok, "memory_bytes")), 64 << 20);
	assert_string_equal(json_string_value(json_object_get(ok, "version")), TERN_VERSION);
	assert_true(json_is_integer(json_object_get(ok, "uptime_ms")));
	json_decref(j);

	cl_send(c, "{\"id\":2,\"cmd\":\"pause\"}\n");
	/* everyone hears the state change; the answer follows */
	expect(f, w, "{\"event\":\"state\",\"data\":{\"state\":\"paused\"}}");
	expect(f, c, "{\"event\":\"state\",\"data\":{\"state\":\"paused\"}}");
	expect(f, c, "{\"id\":2,\"ok\":{\"state\":\"paused\"}}");
	assert_int_equal(vm.paused_users, 1);
	cl_send(c, "{\"id\":3,\"cmd\":\"pause\"}\n");    /* again: nothing changes */
	expect(f, c, "{\"id\":3,\"ok\":{\"state\":\"paused\"}}");
	assert_int_equal(vm.paused_users, 1);
	cl_send(c, "{\"id\":4,\"cmd\":\"status\",\"args\":{\"verbose\":true}}\n");
	expect_has(f, c, "{\"id\":4,\"error\":{\"code\":\"bad-args\"");

	/* a migrated-away source refuses to run again */
	control_block_resume(f->s, "it has migrated to another host");
	cl_send(c, "{\"id\":5,\"cmd\":\"resume\"}\n");
	expect(f, c, "{\"id\":5,\"error\":{\"code\":\"bad-state\",\"message\":\"the VM cannot be resumed: it has migrated to another host\"}}");
	control_block_resume(f->s, NULL);
	cl_send(c, "{\"id\":6,\"cmd\":\"resume\"}\n");
	expect(f, c, "{\"event\":\"state\",\"data\":{\"state\":\"running\"}}");
	expect(f, c, "{\"id\":6,\"ok\":{\"state\":\"running\"}}");
	assert_int_equal(vm.paused_users, 0);
	cl_send(c, "{\"id\":7,\"cmd\":\"resume\"}\n");   /* running: nothing to do */
	expect(f, c, "{\"id\":7,\"ok\":{\"state\":\"running\"}}");

	/* paused by someone else (a snapshot): resume is not ours to give */
	vm_pause(&vm);
	control_notify_state(f->s);
	expect(f, c, "{\"event\":\"state\",\"data\":{\"state\":\"paused\"}}");
	control_notify_state(f->s);   /* no change, no event */
	cl_send(c, "{\"id\":8,\"cmd\":\"resume\"}\n");
	expect_has(f, c, "{\"id\":8,\"error\":{\"code\":\"bad-state\",\"message\":\"the VM is paused by an operation in progress");
	vm_resume(&vm);
	control_notify_state(f->s);
	expect(f, c, "{\"event\":\"state\",\"data\":{\"state\":\"running\"}}");

	/* started paused (a restore that waits): "resume" lets it go */
	vm.paused_users = 1;
	vm.pause_req = true;
	control_adopt_pause(f->s);
	cl_send(c, "{\"id\":81,\"cmd\":\"resume\"}\n");
	expect(f, c, "{\"id\":81,\"ok\":{\"state\":\"running\"}}");
	assert_int_equal(vm.paused_users, 0);
	assert_false(vm.pause_req);

	cl_send(c, "{\"id\":9,\"cmd\":\"config\"}\n");
	expect(f, c, "{\"id\":9,\"ok\":{\"config\":{\"memory.size\":\"64M\"}}}");
	cl_send(c, "{\"id\":10,\"cmd\":\"commands\"}\n");
	expect_has(f, c, "{\"name\":\"status\",\"help\":\"name, state, uptime");
	cl_send(c, "{\"id\":11,\"cmd\":\"quit\"}\n");
	expect(f, c, "{\"id\":11,\"ok\":{}}");
	assert_true(vm.exit_req);
	assert_int_equal(vm.exit_reason, VM_EXIT_QUIT);
	assert_int_equal(vm.exit_status, 0);
	cl_send(c, "{\"id\":12,\"cmd\":\"pause\"}\n");
	expect(f, c, "{\"id\":12,\"error\":{\"code\":\"bad-state\",\"message\":\"the VM is exiting\"}}");

	/* the last word: why the VM ends */
	control_server_destroy(f->s);
	f->s = NULL;
	expect(f, c, "{\"event\":\"state\",\"data\":{\"state\":\"exiting\",\"reason\":\"quit\",\"status\":0}}");
	expect_eof(f, c);
	cl_close(c);
	cl_close(w);
}

static void test_paths(void **state)
{
	(void)state;
	char p[256];
	struct terr err = { 0 };
	struct config *cfg = config_new();

	setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
	assert_int_equal(control_path_from_config(cfg, p, sizeof(p), &err), 0);
	assert_string_equal(p, "");     /* neither name nor control.path: no socket */
	assert_int_equal(config_set(cfg, "name", "web", &err), 0);
	assert_int_equal(control_path_from_config(cfg, p, sizeof(p), &err), 0);
	assert_string_equal(p, "/run/user/1000/tern/web.sock");
	setenv("XDG_RUNTIME_DIR", "", 1);
	assert_int_equal(control_path_from_config(cfg, p, sizeof(p), &err), 0);
	assert_string_equal(p, "/run/tern/web.sock");
	unsetenv("XDG_RUNTIME_DIR");
	assert_int_equal(control_path_from_config(cfg, p, sizeof(p), &err), 0);
	assert_string_equal(p, "/run/tern/web.sock");
	assert_int_equal(config_set(cfg, "control.path", "/tmp/%(name).ctl", &err), 0);
	assert_int_equal(control_path_from_config(cfg, p, sizeof(p), &err), 0);
	assert_string_equal(p, "/tmp/web.ctl");
	assert_int_equal(control_default_path("x", p, 8), -ENAMETOOLONG);
	config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_request_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_long, setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_async_progress, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_client, setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_max_clients, setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_half_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_destroy_outstanding, setup, teardown),
		cmocka_unit_test_setup_teardown(test_register, setup, teardown),
		cmocka_unit_test_setup_teardown(test_socket_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_builtins, setup, teardown),
		cmocka_unit_test(test_paths),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
