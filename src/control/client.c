#include "control/client.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Client lines (replies, events) may be longer than requests: "config". */
#define CLIENT_MAX_LINE (16 * 1024 * 1024)

int control_conn_open(struct control_conn *c, const char *path, const char *hint, struct terr *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	if (strlen(path) >= sizeof(sa.sun_path))
		return terr_set(err, ENAMETOOLONG, "%s is too long for a UNIX socket (%zu bytes, at most %zu)",
				path, strlen(path), sizeof(sa.sun_path) - 1);
	memcpy(sa.sun_path, path, strlen(path));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return terr_set(err, errno, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		switch (e) {
		case ENOENT:
			return terr_set(err, e, "no VM is listening on %s (is tern running with %s?)", path,
					hint ? hint : "control.path set to it");
		case ECONNREFUSED:
			return terr_set(err, e, "nothing listens on %s any more: the tern that made it has exited "
					"(a stale socket; the next tern with this path replaces it)", path);
		case EACCES:
		case EPERM:
			return terr_set(err, e, "permission denied on %s (a VM of another user?)", path);
		case ENOTDIR:
			return terr_set(err, ENOENT, "no VM is listening on %s (a part of the path is not a "
					"directory)", path);
		case ENOTSOCK:
			return terr_set(err, e, "%s is not a socket", path);
		default:
			return terr_set(err, e, "cannot connect to %s: %s", path, strerror(e));
		}
	}
	c->fd = fd;
	control_linebuf_init(&c->in, CLIENT_MAX_LINE);
	return 0;
}

void control_conn_close(struct control_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	control_linebuf_free(&c->in);
}

int control_conn_send(struct control_conn *c, const void *data, size_t len, struct terr *err)
{
	const char *p = data;
	while (len) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return terr_set(err, errno, "the VM closed the connection (%s)", strerror(errno));
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int control_conn_read_line(struct control_conn *c, int timeout_ms, char **line, size_t *len,
			   struct terr *err)
{
	for (;;) {
		int k = control_linebuf_next(&c->in, line, len);
		if (k == CONTROL_LINE_OK)
			return 1;
		if (k == CONTROL_LINE_TOO_LONG)
			return terr_set(err, EPROTO, "the VM sent a line longer than %d bytes", CLIENT_MAX_LINE);
		if (c->eof)
			return 0;
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		int r = poll(&pfd, 1, timeout_ms);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return terr_set(err, errno, "poll: %s", strerror(errno));
		}
		if (r == 0)
			return -ETIMEDOUT;
		char buf[65536];
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			if (errno == ECONNRESET) {
				n = 0;
			} else {
				return terr_set(err, errno, "reading from the VM: %s", strerror(errno));
			}
		}
		if (n == 0) {
			c->eof = true;
			/* a last line without '\n' still counts */
			if (control_linebuf_pending(&c->in) == 0)
				return 0;
			buf[0] = '\n';
			n = 1;
		}
		if (control_linebuf_feed(&c->in, buf, (size_t)n))
			return terr_set(err, ENOMEM, "out of memory");
	}
}

int control_conn_read(struct control_conn *c, int timeout_ms, json_t **msg, struct terr *err)
{
	char *line;
	size_t len;
	*msg = NULL;
	for (;;) {
		int r = control_conn_read_line(c, timeout_ms, &line, &len, err);
		if (r <= 0)
			return r;
		if (control_line_is_blank(line, len))
			continue;
		json_error_t je;
		json_t *j = json_loadb(line, len, 0, &je);
		if (!j || !json_is_object(j)) {
			json_decref(j);
			return terr_set(err, EPROTO, "the VM sent a line that is not a JSON object: %.80s", line);
		}
		*msg = j;
		return 1;
	}
}
