#include "core/evloop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct evloop_entry {
	int fd;
	bool dead;           /* deleted; freed by the loop after its batch */
	evloop_fn fn;
	void *opaque;
	struct evloop_entry *next;
};

int evloop_init(struct evloop *l, struct terr *err)
{
	memset(l, 0, sizeof(*l));
	l->wakefd = -1;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		return terr_set(err, errno, "epoll_create1: %s", strerror(errno));
	l->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->wakefd < 0) {
		int r = terr_set(err, errno, "eventfd: %s", strerror(errno));
		close(l->epfd);
		l->epfd = -1;
		return r;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wakefd, &ev);
	pthread_mutex_init(&l->lock, NULL);
	atomic_init(&l->stop, false);
	return 0;
}

int evloop_add(struct evloop *l, int fd, uint32_t events, evloop_fn fn, void *opaque)
{
	struct evloop_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	*e = (struct evloop_entry){ .fd = fd, .fn = fn, .opaque = opaque };
	struct epoll_event ev = { .events = events, .data.ptr = e };
	pthread_mutex_lock(&l->lock);
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int r = -errno;
		pthread_mutex_unlock(&l->lock);
		free(e);
		return r;
	}
	e->next = l->entries;
	l->entries = e;
	pthread_mutex_unlock(&l->lock);
	return 0;
}

int evloop_del(struct evloop *l, int fd)
{
	int r = -ENOENT;
	pthread_mutex_lock(&l->lock);
	for (struct evloop_entry *e = l->entries; e; e = e->next) {
		if (e->fd == fd && !e->dead) {
			epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
			e->dead = true;
			r = 0;
			break;
		}
	}
	pthread_mutex_unlock(&l->lock);
	return r;
}

static void reap_dead(struct evloop *l)
{
	pthread_mutex_lock(&l->lock);
	struct evloop_entry **pp = &l->entries;
	while (*pp) {
		struct evloop_entry *e = *pp;
		if (e->dead) {
			*pp = e->next;
			free(e);
		} else {
			pp = &e->next;
		}
	}
	pthread_mutex_unlock(&l->lock);
}

int evloop_run_once(struct evloop *l, int timeout_ms)
{
	struct epoll_event evs[32];
	int n = epoll_wait(l->epfd, evs, 32, timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		struct evloop_entry *e = evs[i].data.ptr;
		if (!e) {
			uint64_t v;
			if (read(l->wakefd, &v, sizeof(v)) < 0) {
				/* nothing to drain */
			}
			continue;
		}
		pthread_mutex_lock(&l->lock);
		bool dead = e->dead;
		pthread_mutex_unlock(&l->lock);
		if (!dead)
			e->fn(e->opaque, evs[i].events);
	}
	reap_dead(l);
	return n;
}

static void *evloop_thread(void *arg)
{
	struct evloop *l = arg;
	while (!atomic_load(&l->stop))
		if (evloop_run_once(l, -1) < 0)
			break;
	return NULL;
}

int evloop_start(struct evloop *l, struct terr *err)
{
	int r = pthread_create(&l->thread, NULL, evloop_thread, l);
	if (r)
		return terr_set(err, r, "cannot start the event loop thread: %s", strerror(r));
	l->started = true;
	return 0;
}

void evloop_stop(struct evloop *l)
{
	if (!l->started)
		return;
	atomic_store(&l->stop, true);
	uint64_t one = 1;
	if (write(l->wakefd, &one, sizeof(one)) < 0) {
		/* the loop is stopping anyway */
	}
	pthread_join(l->thread, NULL);
	l->started = false;
}

void evloop_destroy(struct evloop *l)
{
	evloop_stop(l);
	while (l->entries) {
		struct evloop_entry *e = l->entries;
		l->entries = e->next;
		free(e);
	}
	if (l->wakefd >= 0)
		close(l->wakefd);
	if (l->epfd >= 0)
		close(l->epfd);
	l->wakefd = l->epfd = -1;
	pthread_mutex_destroy(&l->lock);
}
