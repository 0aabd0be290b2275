/* The event loop: one thread per VM waiting on epoll for device back ends
 * (console input, disk completions, network), timers and the control socket.
 * Callbacks run on the loop thread. */
#ifndef TERN_CORE_EVLOOP_H
#define TERN_CORE_EVLOOP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

typedef void (*evloop_fn)(void *opaque, uint32_t events);

struct evloop_entry;

struct evloop {
	int epfd;
	int wakefd;               /* eventfd that stops the loop */
	pthread_t thread;
	bool started;
	atomic_bool stop;
	pthread_mutex_t lock;
	struct evloop_entry *entries;   /* live and dead entries */
};

int evloop_init(struct evloop *l, struct terr *err);
/* Watch fd for `events` (EPOLLIN, ...); fn(opaque, revents) runs on the loop
 * thread. One entry per fd. */
int evloop_add(struct evloop *l, int fd, uint32_t events, evloop_fn fn, void *opaque);
/* Stop watching fd. Safe from a callback and from other threads: once it
 * returns, fn is not called again for fd (except a call already running on
 * the loop thread when called from another thread). */
int evloop_del(struct evloop *l, int fd);
int evloop_start(struct evloop *l, struct terr *err);
void evloop_stop(struct evloop *l);   /* stops and joins the thread */
void evloop_destroy(struct evloop *l);
/* Run one round of the loop on the calling thread (tests). */
int evloop_run_once(struct evloop *l, int timeout_ms);

#endif
