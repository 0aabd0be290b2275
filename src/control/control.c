/* The control socket server: accepts clients on the event loop, frames their
 * input into lines, dispatches requests to the registered handlers and writes
 * replies and events without ever blocking the loop. */
#include "control/control_internal.h"
#include "util/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define READ_CHUNK   (64 * 1024)
#define READS_PER_WAKE 4           /* then let the other fds have a turn */

struct control_client {
	struct control_client *next;
	struct control_server *s;
	int fd;
	uint64_t id;
	struct control_linebuf in;
	char *out;
	size_t out_len, out_off, out_cap;
	unsigned pending;       /* requests dispatched, not yet answered */
	bool rd_eof;            /* the client will send nothing more */
	uint32_t watching;      /* epoll events registered */
	bool dead;              /* to be closed */
};

/* ---- reference counting ---------------------------------------------- */

static void server_free(struct control_server *s)
{
	while (s->cmds) {
		struct control_cmd *c = s->cmds;
		s->cmds = c->next;
		free(c->help);
		free(c);
	}
	while (s->q_head) {
		struct control_msg *m = s->q_head;
		s->q_head = m->next;
		free(m);
	}
	if (s->builtin_free)
		s->builtin_free(s->builtin);
	pthread_mutex_destroy(&s->lock);
	free(s->path);
	free(s);
}

/* Called with s->lock held; unlocks. */
static void server_unref_locked(struct control_server *s)
{
	bool last = --s->refs == 0;
	pthread_mutex_unlock(&s->lock);
	if (last)
		server_free(s);
}

/* ---- the outgoing queue (any thread) --------------------------------- */

static void wake(struct control_server *s)
{
	uint64_t one = 1;
	if (write(s->post_fd, &one, sizeof(one)) < 0) {
		/* the counter is saturated: the loop is awake anyway */
	}
}

/* Queue a line (takes the malloc'd text); with s->lock held. */
static void enqueue_locked(struct control_server *s, uint64_t client, bool reply, char *text, size_t len)
{
	if (!text)
		return;
	struct control_msg *m = s->dead ? NULL : malloc(sizeof(*m) + len);
	if (m) {
		m->next = NULL;
		m->client = client;
		m->reply = reply;
		m->len = len;
		memcpy(m->data, text, len);
		*s->q_tail = m;
		s->q_tail = &m->next;
	}
	free(text);
}

/* ---- clients (loop thread) ------------------------------------------- */

static void on_client(void *opaque, uint32_t events);

/* Watch for input until the client's EOF, for output while some is queued.
 * With neither, epoll still reports a hang-up. */
static void client_update_watch(struct control_client *c)
{
	uint32_t want = (c->rd_eof ? 0 : EPOLLIN) | (c->out_off < c->out_len ? EPOLLOUT : 0);
	if (c->watching == want || c->dead || !c->s->loop)
		return;
	evloop_del(c->s->loop, c->fd);
	if (evloop_add(c->s->loop, c->fd, want, on_client, c) < 0) {
		c->dead = true;
		return;
	}
	c->watching = want;
}

static void client_flush(struct control_client *c)
{
	while (!c->dead && c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				client_update_watch(c);
				return;
			}
			c->dead = true;      /* EPIPE, ECONNRESET: the client left */
			return;
		}
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	if (c->out_cap > 256 * 1024) {
		free(c->out);
		c->out = NULL;
		c->out_cap = 0;
	}
	client_update_watch(c);
}

static void client_append(struct control_client *c, const char *data, size_t len)
{
	if (c->dead)
		return;
	if (c->out_len - c->out_off + len > c->s->max_output) {
		log_warn("control", "%s: dropping client %llu: it does not read what it is sent (%zu bytes queued)",
			 c->s->path, (unsigned long long)c->id, c->out_len - c->out_off);
		c->dead = true;
		return;
	}
	if (c->out_off > 0 && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len + len > c->out_cap) {
		if (c->out_off > 0) {
			memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
			c->out_len -= c->out_off;
			c->out_off = 0;
		}
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + len)
			cap *= 2;
		if (cap != c->out_cap) {
			char *o = realloc(c->out, cap);
			if (!o) {
				c->dead = true;
				return;
			}
			c->out = o;
			c->out_cap = cap;
		}
	}
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
}

static struct control_client *find_client(struct control_server *s, uint64_t id)
{
	for (struct control_client *c = s->clients; c; c = c->next)
		if (c->id == id)
			return c;
	return NULL;
}

/* Move everything queued to the clients' buffers, then write. */
static void deliver(struct control_server *s)
{
	pthread_mutex_lock(&s->lock);
	struct control_msg *m = s->q_head;
	s->q_head = NULL;
	s->q_tail = &s->q_head;
	pthread_mutex_unlock(&s->lock);
	while (m) {
		struct control_msg *next = m->next;
		if (m->client == 0) {
			for (struct control_client *c = s->clients; c; c = c->next)
				client_append(c, m->data, m->len);
		} else {
			struct control_client *c = find_client(s, m->client);
			if (c) {
				client_append(c, m->data, m->len);
				if (m->reply && c->pending)
					c->pending--;
			}
		}
		free(m);
		m = next;
	}
	for (struct control_client *c = s->clients; c; c = c->next)
		client_flush(c);
}

static void client_close(struct control_client *c)
{
	struct control_server *s = c->s;
	evloop_del(s->loop, c->fd);
	close(c->fd);
	pthread_mutex_lock(&s->lock);
	for (struct control_req *r = s->reqs; r; r = r->next)
		if (r->client == c->id)
			r->client_gone = true;
	pthread_mutex_unlock(&s->lock);
	control_linebuf_free(&c->in);
	free(c->out);
	free(c);
	s->nclients--;
}

/* Close the clients that are dead, or done: sent everything after their EOF. */
static void sweep(struct control_server *s)
{
	struct control_client **pp = &s->clients;
	while (*pp) {
		struct control_client *c = *pp;
		bool done = c->rd_eof && c->pending == 0 && c->out_off == c->out_len;
		if (c->dead || done) {
			*pp = c->next;
			client_close(c);
		} else {
			pp = &c->next;
		}
	}
}

/* Through the queue like every answer, so a client gets its answers in the
 * order of its requests (as long as the handlers answer at once). */
static void send_error(struct control_client *c, json_t *id, const char *code, const char *msg)
{
	size_t len = 0;
	char *t = control_format_error(id, code, msg, &len);
	pthread_mutex_lock(&c->s->lock);
	enqueue_locked(c->s, c->id, false, t, len);
	pthread_mutex_unlock(&c->s->lock);
}

static void dispatch(struct control_client *c, const char *line, size_t len)
{
	struct control_server *s = c->s;
	struct control_request rq;
	const char *code;
	char msg[CONTROL_MAX_MESSAGE];

	if (control_parse_request(line, len, &rq, &code, msg, sizeof(msg))) {
		send_error(c, rq.id, code, msg);
		control_request_clear(&rq);
		return;
	}
	pthread_mutex_lock(&s->lock);
	struct control_cmd *cmd = NULL;
	for (struct control_cmd *k = s->cmds; k; k = k->next)
		if (!strcmp(k->name, rq.cmd))
			cmd = k;
	control_handler fn = cmd ? cmd->fn : NULL;
	void *opaque = cmd ? cmd->opaque : NULL;
	pthread_mutex_unlock(&s->lock);
	if (!fn) {
		char name[CONTROL_MAX_CMD + 1];
		control_sanitize(name, sizeof(name), rq.cmd);
		snprintf(msg, sizeof(msg), "unknown command \"%s\"%s (\"commands\" lists them)", name,
			 strlen(rq.cmd) > CONTROL_MAX_CMD ? "..." : "");
		send_error(c, rq.id, CONTROL_E_UNKNOWN, msg);
		control_request_clear(&rq);
		return;
	}
	struct control_req *req = calloc(1, sizeof(*req));
	if (!req) {
		send_error(c, rq.id, CONTROL_E_FAILED, "out of memory");
		control_request_clear(&rq);
		return;
	}
	req->s = s;
	req->client = c->id;
	req->root = rq.root;       /* takes the reference */
	req->id = rq.id;
	snprintf(req->cmd, sizeof(req->cmd), "%s", rq.cmd);
	pthread_mutex_lock(&s->lock);
	s->refs++;
	req->next = s->reqs;
	if (s->reqs)
		s->reqs->prev = req;
	s->reqs = req;
	pthread_mutex_unlock(&s->lock);
	c->pending++;
	fn(req, rq.args, opaque);
}

static void on_client(void *opaque, uint32_t events)
{
	struct control_client *c = opaque;
	struct control_server *s = c->s;
	char buf[READ_CHUNK];

	if (!c->rd_eof && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
		for (int i = 0; i < READS_PER_WAKE && !c->rd_eof && !c->dead; i++) {
			ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno != EAGAIN && errno != EWOULDBLOCK)
					c->dead = true;
				break;
			}
			if (n == 0) {
				c->rd_eof = true;
				/* a last line without its '\n' still counts */
				if (control_linebuf_pending(&c->in) > 0)
					n = 1, buf[0] = '\n';
			}
			if (control_linebuf_feed(&c->in, buf, (size_t)n)) {
				c->dead = true;
				break;
			}
			char *line;
			size_t len;
			int k;
			while (!c->dead && (k = control_linebuf_next(&c->in, &line, &len)) != CONTROL_LINE_NONE) {
				if (k == CONTROL_LINE_TOO_LONG) {
					char msg[128];
					snprintf(msg, sizeof(msg), "request line longer than %zu bytes; ignored up to its end",
						 s->max_line);
					send_error(c, NULL, CONTROL_E_TOO_LONG, msg);
				} else if (!control_line_is_blank(line, len)) {
					dispatch(c, line, len);
				}
			}
			if ((size_t)n < sizeof(buf))
				break;
		}
		if (c->rd_eof)
			client_update_watch(c);   /* no more EPOLLIN: it would fire forever */
	} else if ((events & (EPOLLHUP | EPOLLERR)) && c->rd_eof) {
		c->dead = true;           /* gone for good: answers cannot reach it */
	}
	deliver(s);
	sweep(s);
}

static void on_post(void *opaque, uint32_t events)
{
	struct control_server *s = opaque;
	uint64_t v;
	(void)events;
	if (read(s->post_fd, &v, sizeof(v)) < 0) {
		/* spurious wake-up */
	}
	deliver(s);
	sweep(s);
}

static void on_listen(void *opaque, uint32_t events)
{
	struct control_server *s = opaque;
	(void)events;
	for (int i = 0; i < 16; i++) {
		int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED)
				log_warn("control", "%s: accept: %s", s->path, strerror(errno));
			return;
		}
		if (s->nclients >= s->max_clients) {
			char msg[96];
			snprintf(msg, sizeof(msg), "too many control clients (%u); try again later",
				 s->max_clients);
			size_t len;
			char *t = control_format_error(NULL, CONTROL_E_BUSY, msg, &len);
			if (t && send(fd, t, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
				/* best effort */
			}
			free(t);
			close(fd);
			continue;
		}
		struct control_client *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->s = s;
		c->fd = fd;
		c->id = ++s->next_client;
		c->watching = EPOLLIN;
		control_linebuf_init(&c->in, s->max_line);
		if (evloop_add(s->loop, fd, EPOLLIN, on_client, c) < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = s->clients;
		s->clients = c;
		s->nclients++;
	}
}

/* ---- creating the socket --------------------------------------------- */

/* mkdir -p of path's parent, new directories 0700. */
static int make_parent(const char *path, struct terr *err)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	struct stat st;
	if (stat(dir, &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			return terr_set(err, ENOTDIR, "control.path: %s is not a directory", dir);
		return 0;
	}
	for (char *p = dir + 1; ; p++) {
		if (*p == '/' || *p == '\0') {
			char save = *p;
			*p = '\0';
			if (mkdir(dir, 0700) < 0 && errno != EEXIST)
				return terr_set(err, errno, "control.path: cannot create directory %s: %s%s", dir,
						strerror(errno),
						errno == EACCES ? " (set control.path, or XDG_RUNTIME_DIR)" : "");
			*p = save;
			if (save == '\0')
				break;
		}
	}
	return 0;
}

static int fill_addr(struct sockaddr_un *sa, const char *path, struct terr *err)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	size_t n = strlen(path);
	if (n == 0)
		return terr_set(err, EINVAL, "control.path: empty path");
	if (n >= sizeof(sa->sun_path))
		return terr_set(err, ENAMETOOLONG,
				"control.path: \"%s\" is too long for a UNIX socket (%zu bytes, at most %zu)",
				path, n, sizeof(sa->sun_path) - 1);
	memcpy(sa->sun_path, path, n);
	return 0;
}

/* Fails if a live process listens on path; removes a stale socket. */
static int clear_stale(const char *path, const struct sockaddr_un *sa, struct terr *err)
{
	struct stat st;
	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return terr_set(err, errno, "control.path: %s: %s", path, strerror(errno));
	}
	if (!S_ISSOCK(st.st_mode))
		return terr_set(err, EEXIST, "control.path: %s exists and is not a socket; not replacing it",
				path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return terr_set(err, errno, "control.path: socket: %s", strerror(errno));
	int r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	int e = errno;
	close(fd);
	if (r == 0)
		return terr_set(err, EADDRINUSE, "control.path: another tern is already listening on %s", path);
	if (e == ECONNREFUSED) {
		if (unlink(path) < 0 && errno != ENOENT)
			return terr_set(err, errno, "control.path: cannot remove the stale socket %s: %s", path,
					strerror(errno));
		log_info("control", "replaced the stale socket %s", path);
		return 0;
	}
	if (e == EAGAIN)   /* a live listener with a full backlog */
		return terr_set(err, EADDRINUSE, "control.path: another tern is already listening on %s", path);
	return terr_set(err, e, "control.path: %s: %s", path, strerror(e));
}

int control_server_create(const struct control_server_opts *o, struct control_server **out,
			  struct terr *err)
{
	struct sockaddr_un sa;
	int r;

	*out = NULL;
	r = fill_addr(&sa, o->path, err);
	if (r)
		return r;
	struct control_server *s = calloc(1, sizeof(*s));
	if (!s)
		return terr_set(err, ENOMEM, "control: out of memory");
	pthread_mutex_init(&s->lock, NULL);
	s->refs = 1;
	s->q_tail = &s->q_head;
	s->loop = o->loop;
	s->listen_fd = s->post_fd = -1;
	s->max_line = o->max_line ? o->max_line : CONTROL_MAX_LINE;
	s->max_output = o->max_output ? o->max_output : CONTROL_MAX_OUTPUT;
	s->max_clients = o->max_clients ? o->max_clients : CONTROL_MAX_CLIENTS;
	s->path = strdup(o->path);
	if (!s->path) {
		r = terr_set(err, ENOMEM, "control: out of memory");
		goto fail;
	}
	r = make_parent(o->path, err);
	if (r)
		goto fail;
	r = clear_stale(o->path, &sa, err);
	if (r)
		goto fail;
	s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->listen_fd < 0) {
		r = terr_set(err, errno, "control.path: socket: %s", strerror(errno));
		goto fail;
	}
	/* Nobody can connect before listen(), so tightening the mode after
	 * bind() leaves no window. */
	if (bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = terr_set(err, errno, "control.path: cannot bind %s: %s", o->path, strerror(errno));
		goto fail;
	}
	struct stat st;
	if (chmod(o->path, 0600) < 0 || stat(o->path, &st) < 0) {
		r = terr_set(err, errno, "control.path: %s: %s", o->path, strerror(errno));
		unlink(o->path);
		goto fail;
	}
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	if (listen(s->listen_fd, 16) < 0) {
		r = terr_set(err, errno, "control.path: listen on %s: %s", o->path, strerror(errno));
		unlink(o->path);
		goto fail;
	}
	s->post_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->post_fd < 0) {
		r = terr_set(err, errno, "control: eventfd: %s", strerror(errno));
		unlink(o->path);
		goto fail;
	}
	r = evloop_add(s->loop, s->listen_fd, EPOLLIN, on_listen, s);
	if (!r) {
		r = evloop_add(s->loop, s->post_fd, EPOLLIN, on_post, s);
		if (r)
			evloop_del(s->loop, s->listen_fd);
	}
	if (r) {
		terr_set(err, -r, "control: cannot watch the socket: %s", strerror(-r));
		unlink(o->path);
		goto fail;
	}
	*out = s;
	return 0;
fail:
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->post_fd >= 0)
		close(s->post_fd);
	server_free(s);
	return r;
}

const char *control_server_path(const struct control_server *s)
{
	return s ? s->path : NULL;
}

/* Best effort: give clients up to ~200 ms to take their last lines. */
static void final_flush(struct control_server *s)
{
	for (int round = 0; round < 20; round++) {
		bool left = false;
		for (struct control_client *c = s->clients; c; c = c->next) {
			client_flush(c);
			if (!c->dead && c->out_off < c->out_len)
				left = true;
		}
		if (!left)
			return;
		usleep(10 * 1000);
	}
}

void control_server_destroy(struct control_server *s)
{
	if (!s)
		return;
	/* The socket file goes first: once a client sees its connection
	 * close, the path is free. Removed only if it is still ours. */
	struct stat st;
	if (stat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
		unlink(s->path);
	if (s->builtin_shutdown)
		s->builtin_shutdown(s);
	evloop_del(s->loop, s->listen_fd);
	close(s->listen_fd);
	evloop_del(s->loop, s->post_fd);
	for (struct control_client *c = s->clients; c; c = c->next)
		evloop_del(s->loop, c->fd);
	/* what is queued first, then "exiting" for what will never be answered */
	pthread_mutex_lock(&s->lock);
	for (struct control_req *r = s->reqs; r; r = r->next) {
		size_t len;
		char *t = control_format_error(r->id, CONTROL_E_EXITING,
					       "tern is exiting before the command finished", &len);
		enqueue_locked(s, r->client, true, t, len);
		r->client_gone = true;
	}
	s->dead = true;
	pthread_mutex_unlock(&s->lock);
	s->loop = NULL;
	struct control_msg *m = s->q_head;
	s->q_head = NULL;
	s->q_tail = &s->q_head;
	for (; m; ) {
		struct control_msg *next = m->next;
		for (struct control_client *c = s->clients; c; c = c->next)
			if (m->client == 0 || m->client == c->id)
				client_append(c, m->data, m->len);
		free(m);
		m = next;
	}
	final_flush(s);
	while (s->clients) {
		struct control_client *c = s->clients;
		s->clients = c->next;
		close(c->fd);
		control_linebuf_free(&c->in);
		free(c->out);
		free(c);
	}
	close(s->post_fd);
	pthread_mutex_lock(&s->lock);
	server_unref_locked(s);
}

/* ---- commands -------------------------------------------------------- */

int control_register_help(struct control_server *s, const char *name, const char *help,
			  control_handler fn, void *opaque)
{
	if (!s)
		return 0;
	if (!control_cmd_name_valid(name) || !fn)
		return -EINVAL;
	struct control_cmd *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->help = help ? strdup(help) : NULL;
	c->fn = fn;
	c->opaque = opaque;
	pthread_mutex_lock(&s->lock);
	for (struct control_cmd *k = s->cmds; k; k = k->next) {
		if (!strcmp(k->name, name)) {
			pthread_mutex_unlock(&s->lock);
			free(c->help);
			free(c);
			return -EEXIST;
		}
	}
	/* keep the list sorted: "commands" prints it as is */
	struct control_cmd **pp = &s->cmds;
	while (*pp && strcmp((*pp)->name, name) < 0)
		pp = &(*pp)->next;
	c->next = *pp;
	*pp = c;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int control_register(struct control_server *s, const char *name, control_handler fn, void *opaque)
{
	return control_register_help(s, name, NULL, fn, opaque);
}

int control_unregister(struct control_server *s, const char *name)
{
	if (!s)
		return 0;
	pthread_mutex_lock(&s->lock);
	for (struct control_cmd **pp = &s->cmds; *pp; pp = &(*pp)->next) {
		if (!strcmp((*pp)->name, name)) {
			struct control_cmd *c = *pp;
			*pp = c->next;
			pthread_mutex_unlock(&s->lock);
			free(c->help);
			free(c);
			return 0;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return -ENOENT;
}

/* ---- answers --------------------------------------------------------- */

static void req_finish(struct control_req *req, char *text, size_t len)
{
	struct control_server *s = req->s;
	pthread_mutex_lock(&s->lock);
	if (req->prev)
		req->prev->next = req->next;
	else
		s->reqs = req->next;
	if (req->next)
		req->next->prev = req->prev;
	bool post = !s->dead && !req->client_gone;
	if (post)
		enqueue_locked(s, req->client, true, text, len);
	else
		free(text);
	if (post)
		wake(s);
	json_decref(req->root);
	free(req);
	server_unref_locked(s);
}

void control_reply_ok(struct control_req *req, json_t *result)
{
	size_t len = 0;
	char *t = NULL;
	if (result && !json_is_object(result)) {
		t = control_format_error(req->id, CONTROL_E_FAILED,
					 "internal error: the reply is not a JSON object", &len);
	} else {
		t = control_format_ok(req->id, result, &len);
		if (!t)
			t = control_format_error(req->id, CONTROL_E_FAILED,
						 "out of memory for the reply", &len);
	}
	json_decref(result);
	req_finish(req, t, len);
}

void control_reply_error(struct control_req *req, const char *code, const char *fmt, ...)
{
	char msg[CONTROL_MAX_MESSAGE];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	size_t len = 0;
	char *t = control_format_error(req->id, code, msg, &len);
	req_finish(req, t, len);
}

const char *control_req_cmd(const struct control_req *req)
{
	return req->cmd;
}

json_t *control_req_id(const struct control_req *req)
{
	return req->id;
}

struct control_server *control_req_server(const struct control_req *req)
{
	return req->s;
}

bool control_req_client_alive(const struct control_req *req)
{
	pthread_mutex_lock(&req->s->lock);
	bool alive = !req->client_gone && !req->s->dead;
	pthread_mutex_unlock(&req->s->lock);
	return alive;
}

int control_req_arg(struct control_req *req, json_t *args, const char *key, json_type type,
		    bool required, json_t **out)
{
	char msg[CONTROL_MAX_MESSAGE];
	if (control_arg(args, key, type, required, out, msg, sizeof(msg))) {
		control_reply_error(req, CONTROL_E_BAD_ARGS, "%s: %s", req->cmd, msg);
		return -1;
	}
	return 0;
}

int control_req_args_known(struct control_req *req, json_t *args, const char *const *known)
{
	char msg[CONTROL_MAX_MESSAGE];
	if (control_args_known(args, known, msg, sizeof(msg))) {
		control_reply_error(req, CONTROL_E_BAD_ARGS, "%s: %s", req->cmd, msg);
		return -1;
	}
	return 0;
}

/* ---- events ---------------------------------------------------------- */

void control_emit_event(struct control_server *s, const char *name, json_t *data)
{
	if (!s) {
		json_decref(data);
		return;
	}
	size_t len = 0;
	char *t = control_format_event(name, data, &len);
	json_decref(data);
	pthread_mutex_lock(&s->lock);
	bool post = !s->dead && t;
	enqueue_locked(s, 0, false, t, len);
	if (post)
		wake(s);
	pthread_mutex_unlock(&s->lock);
}

void control_emit_progress(struct control_req *req, uint64_t done, uint64_t total)
{
	json_t *d = json_pack("{s:s, s:O, s:I, s:I}", "op", req->cmd,
			      "id", req->id ? req->id : json_null(),
			      "done", (json_int_t)done, "total", (json_int_t)total);
	control_emit_event(req->s, "progress", d);
}
