/* Shared between control.c (the server) and builtin.c (the VM commands). */
#ifndef TERN_CONTROL_INTERNAL_H
#define TERN_CONTROL_INTERNAL_H

#include "control/control.h"

#include <pthread.h>
#include <sys/types.h>

struct control_cmd {
	struct control_cmd *next;
	char name[CONTROL_MAX_CMD + 1];
	char *help;
	control_handler fn;
	void *opaque;
};

struct control_msg {
	struct control_msg *next;
	uint64_t client;          /* 0: every client (an event) */
	bool reply;               /* answers one of the client's requests */
	size_t len;
	char data[];              /* one line with its '\n' */
};

struct control_client;

struct control_server {
	/* Shared with other threads, under lock. */
	pthread_mutex_t lock;
	unsigned refs;            /* the owner + one per unanswered request */
	bool dead;                /* destroyed: answers and events are dropped */
	struct control_cmd *cmds;
	struct control_msg *q_head, **q_tail;
	struct control_req *reqs; /* unanswered requests */

	/* The loop thread only (or the destroying thread once the loop is gone). */
	struct evloop *loop;
	char *path;
	dev_t dev;
	ino_t ino;
	int listen_fd;
	int post_fd;              /* eventfd: something was queued */
	struct control_client *clients;
	unsigned nclients;
	uint64_t next_client;
	size_t max_line, max_output;
	unsigned max_clients;

	/* builtin.c */
	void *builtin;
	void (*builtin_shutdown)(struct control_server *s);   /* before destroy */
	void (*builtin_free)(void *builtin);
};

struct control_req {
	struct control_server *s;
	struct control_req *prev, *next;   /* in s->reqs */
	uint64_t client;
	bool client_gone;
	json_t *root;                      /* owns id and args */
	json_t *id;
	char cmd[CONTROL_MAX_CMD + 1];
};

#endif
