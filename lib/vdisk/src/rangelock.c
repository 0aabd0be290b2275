/* SPDX-License-Identifier: MIT */
#include "rangelock.h"

#include <stddef.h>

void rangelock_init(struct rangelock *rl)
{
	pthread_mutex_init(&rl->mu, NULL);
	pthread_cond_init(&rl->cv, NULL);
	rl->head = NULL;
	rl->waiting_excl = 0;
}

void rangelock_destroy(struct rangelock *rl)
{
	pthread_cond_destroy(&rl->cv);
	pthread_mutex_destroy(&rl->mu);
}

static bool conflicts(const struct rangelock *rl, uint64_t s, uint64_t e, bool excl)
{
	for (const struct rl_node *n = rl->head; n; n = n->next)
		if (n->start < e && s < n->end && (excl || n->excl))
			return true;
	return false;
}

void rangelock_lock(struct rangelock *rl, struct rl_node *n,
                    uint64_t start, uint64_t end, bool excl)
{
	n->start = start;
	n->end = end > start ? end : start + 1;
	n->excl = excl;
	pthread_mutex_lock(&rl->mu);
	while (conflicts(rl, n->start, n->end, excl))
		pthread_cond_wait(&rl->cv, &rl->mu);
	n->prev = NULL;
	n->next = rl->head;
	if (rl->head)
		rl->head->prev = n;
	rl->head = n;
	pthread_mutex_unlock(&rl->mu);
}

void rangelock_unlock(struct rangelock *rl, struct rl_node *n)
{
	pthread_mutex_lock(&rl->mu);
	if (n->prev)
		n->prev->next = n->next;
	else
		rl->head = n->next;
	if (n->next)
		n->next->prev = n->prev;
	pthread_cond_broadcast(&rl->cv);
	pthread_mutex_unlock(&rl->mu);
}
