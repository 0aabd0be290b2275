#include "virtio/virtio_console.h"
#include "config/config.h"
#include "core/vm.h"
#include "util/log.h"
#include "virtio/virtio_dev.h"
#include "virtio/virtio_pci.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define RXQ 0
#define TXQ 1

enum vcon_kind { VCON_FILE, VCON_STDIO, VCON_UNIX };

struct virtio_console {
	struct device dev;
	struct virtio_dev vdev;
	struct virtio_pci vp;
	struct vm *vm;
	bool vdev_ready, vp_ready;
	enum vcon_kind kind;
	int out_fd;                  /* file, stdout or the client; -1: none */
	int in_fd;                   /* stdin or the client; -1: none */
	int file_fd;                 /* owned: the output file */
	int listen_fd;               /* unix: the listening socket */
	char *sock_path;
	bool in_watched, listen_watched;
	bool in_eof;                 /* stdin ended */
	/* under vdev.lock */
	bool paused;
	uint8_t pending[VIRTIO_CONSOLE_RX_BUF];
	size_t plen, poff;           /* input not yet in a guest buffer */
	struct vq_chain chain;
	uint64_t dropped;
	bool logged_drop;
};

static struct virtio_console *to_vc(struct device *d)
{
	return (struct virtio_console *)d;
}

static void on_input(void *opaque, uint32_t events);
static void on_accept(void *opaque, uint32_t events);

/* Read input only when it can go somewhere: not paused, nothing pending. */
static void update_watch(struct virtio_console *c)
{
	bool want = c->in_fd >= 0 && !c->in_eof && !c->paused && c->plen == 0;
	if (want == c->in_watched)
		return;
	if (want) {
		if (evloop_add(&c->vm->loop, c->in_fd, EPOLLIN, on_input, c) == 0)
			c->in_watched = true;
	} else {
		evloop_del(&c->vm->loop, c->in_fd);
		c->in_watched = false;
	}
}

static void drop_client(struct virtio_console *c)
{
	if (c->kind != VCON_UNIX || c->in_fd < 0)
		return;
	if (c->in_watched)
		evloop_del(&c->vm->loop, c->in_fd);
	c->in_watched = false;
	close(c->in_fd);
	c->in_fd = c->out_fd = -1;
	c->plen = c->poff = 0;
	log_info("virtio", "%s: client disconnected from %s", c->dev.id, c->sock_path);
}

/* Hand pending input to the guest's receive buffers. */
static void deliver(struct virtio_console *c)
{
	struct virtqueue *vq = &c->vdev.vqs[RXQ];
	bool pushed = false;
	while (!c->paused && c->poff < c->plen && vq_pop(vq, &c->chain) == 1) {
		uint32_t n = vq_chain_copy_to(&c->chain, 0, c->pending + c->poff,
					      (uint32_t)(c->plen - c->poff));
		c->poff += n;
		vq_push(vq, c->chain.head, n);
		pushed = true;
	}
	if (c->poff == c->plen)
		c->plen = c->poff = 0;
	if (pushed)
		virtio_dev_notify(&c->vdev, RXQ);
}

static void on_input(void *opaque, uint32_t events)
{
	struct virtio_console *c = opaque;
	(void)events;
	pthread_mutex_lock(&c->vdev.lock);
	if (c->in_fd >= 0 && c->plen == 0 && !c->paused) {
		ssize_t n = read(c->in_fd, c->pending, sizeof(c->pending));
		if (n > 0) {
			c->plen = (size_t)n;
			c->poff = 0;
			deliver(c);
		} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			if (c->kind == VCON_UNIX)
				drop_client(c);
			else
				c->in_eof = true;
		}
	}
	update_watch(c);
	pthread_mutex_unlock(&c->vdev.lock);
}

static void on_accept(void *opaque, uint32_t events)
{
	struct virtio_console *c = opaque;
	(void)events;
	int fd = accept4(c->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	pthread_mutex_lock(&c->vdev.lock);
	if (c->in_fd >= 0) {
		/* one client at a time */
		static const char busy[] = "tern: this console already has a client\r\n";
		if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
			/* it goes away anyway */
		}
		close(fd);
	} else {
		c->in_fd = c->out_fd = fd;
		log_info("virtio", "%s: client connected to %s", c->dev.id, c->sock_path);
		update_watch(c);
	}
	pthread_mutex_unlock(&c->vdev.lock);
}

static void count_drop(struct virtio_console *c, size_t n, const char *why)
{
	c->dropped += n;
	if (!c->logged_drop && n)
		log_info("virtio", "%s: guest output dropped (%s); further drops are not logged",
			 c->dev.id, why);
	c->logged_drop = true;
}

/* Write one chain's device-readable part to the output. */
static void emit(struct virtio_console *c, const struct vq_chain *ch)
{
	if (c->out_fd < 0) {
		if (c->kind == VCON_UNIX)
			count_drop(c, ch->out_len, "no client");
		return;
	}
	for (unsigned i = 0; i < ch->nout; i++) {
		const uint8_t *p = ch->iov[i].iov_base;
		size_t left = ch->iov[i].iov_len;
		while (left) {
			ssize_t w = c->kind == VCON_UNIX
					    ? send(c->out_fd, p, left, MSG_NOSIGNAL | MSG_DONTWAIT)
					    : write(c->out_fd, p, left);
			if (w > 0) {
				p += w;
				left -= (size_t)w;
				continue;
			}
			if (w < 0 && errno == EINTR)
				continue;
			if (c->kind == VCON_UNIX && w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				count_drop(c, left, "the client does not keep up");
				break;
			}
			if (c->kind == VCON_UNIX) {
				drop_client(c);
				return;
			}
			count_drop(c, left, strerror(errno));
			break;
		}
	}
}

static void transmit(struct virtio_console *c)
{
	struct virtqueue *vq = &c->vdev.vqs[TXQ];
	bool pushed = false;
	while (vq_pop(vq, &c->chain) == 1) {
		emit(c, &c->chain);
		vq_push(vq, c->chain.head, 0);
		pushed = true;
	}
	if (pushed)
		virtio_dev_notify(&c->vdev, TXQ);
}

static void vc_queue_notify(struct virtio_dev *vdev, unsigned q)
{
	struct virtio_console *c = vdev->priv;
	if (q == TXQ) {
		transmit(c);
	} else {
		deliver(c);
		update_watch(c);
	}
}

static void vc_vdev_reset(struct virtio_dev *vdev)
{
	struct virtio_console *c = vdev->priv;
	c->plen = c->poff = 0;
	update_watch(c);
}

static int vc_vdev_save(struct virtio_dev *vdev, struct state_writer *w)
{
	struct virtio_console *c = vdev->priv;
	sw_bytes(w, "rx_pending", c->pending + c->poff, c->plen - c->poff);
	return w->err;
}

static int vc_vdev_load(struct virtio_dev *vdev, const struct state_reader *r, struct terr *err)
{
	struct virtio_console *c = vdev->priv;
	const void *p;
	size_t len;
	int ret = sr_bytes(r, "rx_pending", &p, &len, err);
	if (ret)
		return ret;
	if (len > sizeof(c->pending))
		return terr_set(err, EINVAL, "%s: %zu bytes of pending input, at most %zu fit",
				c->dev.id, len, sizeof(c->pending));
	if (len)
		memcpy(c->pending, p, len);
	c->plen = len;
	c->poff = 0;
	update_watch(c);
	return 0;
}

static const struct virtio_dev_ops vc_vdev_ops = {
	.queue_notify = vc_queue_notify,
	.reset = vc_vdev_reset,
	.save = vc_vdev_save,
	.load = vc_vdev_load,
};

/* --- device ops --- */

static void vc_reset(struct device *d)
{
	virtio_pci_reset(&to_vc(d)->vp);
}

static int vc_pause(struct device *d)
{
	struct virtio_console *c = to_vc(d);
	virtio_pci_pause(&c->vp);
	pthread_mutex_lock(&c->vdev.lock);
	c->paused = true;
	update_watch(c);
	pthread_mutex_unlock(&c->vdev.lock);
	return 0;
}

static void vc_resume(struct device *d)
{
	struct virtio_console *c = to_vc(d);
	pthread_mutex_lock(&c->vdev.lock);
	c->paused = false;
	deliver(c);
	update_watch(c);
	pthread_mutex_unlock(&c->vdev.lock);
	virtio_pci_resume(&c->vp);
}

static int vc_save(struct device *d, struct state_writer *w)
{
	return virtio_pci_save(&to_vc(d)->vp, w);
}

static int vc_load(struct device *d, const struct state_reader *r, struct terr *err)
{
	return virtio_pci_load(&to_vc(d)->vp, r, err);
}

static void vc_destroy(struct device *d)
{
	struct virtio_console *c = to_vc(d);
	bool loop_alive = c->vm->loop.epfd >= 0;
	if (c->in_watched && loop_alive)
		evloop_del(&c->vm->loop, c->in_fd);
	if (c->listen_watched && loop_alive)
		evloop_del(&c->vm->loop, c->listen_fd);
	if (c->vp_ready)
		virtio_pci_destroy(&c->vp);
	if (c->vdev_ready)
		virtio_dev_destroy(&c->vdev);
	if (c->kind == VCON_UNIX && c->in_fd >= 0)
		close(c->in_fd);
	if (c->listen_fd >= 0) {
		close(c->listen_fd);
		unlink(c->sock_path);
	}
	if (c->file_fd >= 0)
		close(c->file_fd);
	free(c->sock_path);
	vq_chain_free(&c->chain);
	free(c);
}

const struct device_ops virtio_console_ops = {
	.type = "virtio-console",
	.state_version = 1,
	.state_min_version = 1,
	.reset = vc_reset,
	.pause = vc_pause,
	.resume = vc_resume,
	.save = vc_save,
	.load = vc_load,
	.destroy = vc_destroy,
};

size_t virtio_console_receive(struct device *d, const void *buf, size_t len)
{
	struct virtio_console *c = to_vc(d);
	pthread_mutex_lock(&c->vdev.lock);
	if (c->poff) {
		memmove(c->pending, c->pending + c->poff, c->plen - c->poff);
		c->plen -= c->poff;
		c->poff = 0;
	}
	size_t n = sizeof(c->pending) - c->plen;
	if (n > len)
		n = len;
	memcpy(c->pending + c->plen, buf, n);
	c->plen += n;
	deliver(c);
	update_watch(c);
	pthread_mutex_unlock(&c->vdev.lock);
	return n;
}

static int open_unix(struct virtio_console *c, const char *path, struct terr *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	if (!*path)
		return terr_set(err, EINVAL, "vconsole.path: \"unix:\" needs a socket path");
	if (strlen(path) >= sizeof(sa.sun_path))
		return terr_set(err, ENAMETOOLONG, "vconsole.path: socket path \"%s\" is longer than "
				"%zu bytes", path, sizeof(sa.sun_path) - 1);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return terr_set(err, EEXIST, "vconsole.path: \"%s\" exists and is not a socket",
					path);
		unlink(path);   /* a stale socket from an earlier run */
	}
	memcpy(sa.sun_path, path, strlen(path));
	c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->listen_fd < 0)
		return terr_set(err, errno, "vconsole.path: socket: %s", strerror(errno));
	if (bind(c->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(c->listen_fd, 1) < 0) {
		int e = errno;
		close(c->listen_fd);
		c->listen_fd = -1;
		return terr_set(err, e, "vconsole.path: cannot listen on \"%s\": %s", path, strerror(e));
	}
	c->sock_path = strdup(path);
	if (!c->sock_path)
		return terr_set(err, ENOMEM, "%s: out of memory", c->dev.id);
	int r = evloop_add(&c->vm->loop, c->listen_fd, EPOLLIN, on_accept, c);
	if (r)
		return terr_set(err, -r, "%s: cannot watch the socket: %s", c->dev.id, strerror(-r));
	c->listen_watched = true;
	return 0;
}

int virtio_console_create(struct vm *vm, struct pci_bus *bus,
			  const struct virtio_console_params *p, struct device **out,
			  struct terr *err)
{
	int r;
	struct virtio_console *c = calloc(1, sizeof(*c));
	if (!c)
		return terr_set(err, ENOMEM, "%s: out of memory", p->id);
	c->dev.ops = &virtio_console_ops;
	snprintf(c->dev.id, sizeof(c->dev.id), "%s", p->id);
	c->dev.priv = c;
	c->vm = vm;
	c->out_fd = c->in_fd = c->file_fd = c->listen_fd = -1;
	vq_chain_init(&c->chain);

	struct virtio_dev_params vp = {
		.ops = &vc_vdev_ops, .priv = c, .mem = &vm->mem, .id = c->dev.id,
		.device_id = VIRTIO_ID_CONSOLE, .nqueues = 2, .queue_size = VIRTIO_CONSOLE_QUEUE_SIZE,
		.config_size = VIRTIO_CONSOLE_CFG_SIZE,
	};
	if ((r = virtio_dev_init(&c->vdev, &vp, err)))
		goto fail;
	c->vdev_ready = true;

	if (!strcmp(p->path, "stdio")) {
		c->kind = VCON_STDIO;
		c->out_fd = STDOUT_FILENO;
		c->in_fd = p->input ? STDIN_FILENO : -1;
	} else if (!strncmp(p->path, "unix:", 5)) {
		c->kind = VCON_UNIX;
		if ((r = open_unix(c, p->path + 5, err)))
			goto fail;
	} else {
		c->kind = VCON_FILE;
		c->file_fd = open(p->path, O_WRONLY | O_CREAT | O_CLOEXEC | (p->append ? O_APPEND : O_TRUNC),
				  0644);
		if (c->file_fd < 0) {
			r = terr_set(err, errno, "vconsole.path: cannot open \"%s\": %s", p->path,
				     strerror(errno));
			goto fail;
		}
		c->out_fd = c->file_fd;
	}
	if ((r = virtio_pci_init(&c->vp, vm, bus, &c->vdev,
				 &(struct virtio_pci_params){ .class_code = 0x078000, .slot = p->slot },
				 err)))
		goto fail;
	c->vp_ready = true;
	pthread_mutex_lock(&c->vdev.lock);
	update_watch(c);
	pthread_mutex_unlock(&c->vdev.lock);
	vm_add_device(vm, &c->dev);
	*out = &c->dev;
	return 0;
fail:
	vc_destroy(&c->dev);
	return r;
}

int virtio_console_create_from_config(struct vm *vm, struct pci_bus *bus, struct config *cfg,
				      bool restoring, bool input, struct device **out,
				      struct terr *err)
{
	const char *path;
	*out = NULL;
	int r = config_get_path(cfg, "vconsole.path", &path, err);
	if (r || !path)
		return r;
	struct virtio_console_params p = { .id = "vconsole.0", .path = path, .append = restoring,
					    .input = input, .slot = -1 };
	return virtio_console_create(vm, bus, &p, out, err);
}
