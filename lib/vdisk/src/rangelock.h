/* SPDX-License-Identifier: MIT */
/* Range locks: shared/exclusive locks on byte ranges of a disk. */
#ifndef VDISK_RANGELOCK_H
#define VDISK_RANGELOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct rl_node {
	uint64_t start, end; /* [start, end) */
	bool excl;
	struct rl_node *next, *prev;
};

struct rangelock {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct rl_node *head;
	unsigned waiting_excl;
};

void rangelock_init(struct rangelock *rl);
void rangelock_destroy(struct rangelock *rl);
/* Blocks until [start, end) can be held; n is caller-owned storage. */
void rangelock_lock(struct rangelock *rl, struct rl_node *n,
                    uint64_t start, uint64_t end, bool excl);
void rangelock_unlock(struct rangelock *rl, struct rl_node *n);

#endif
