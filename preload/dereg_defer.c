// SPDX-License-Identifier: BSD-2-Clause
/*
 * The queue of deferred deregistrations (dereg_defer.h): a fixed array of
 * slots and a count of claimed ones.
 *
 * Queueing first claims a slot in the count (at most DEREG_DEFER_SLOTS
 * claims), then stores the pointer into an empty slot with a
 * compare-and-swap.  Taking exchanges a full slot with NULL first; the
 * taker gives the claim back once the deregistration is done
 * (dereg_defer_done()), so that "nothing pending" means no
 * deregistration is still under way either (ibv_dealloc_pd waits for it).  A slot is therefore full only while its
 * claim is held, so a claimer always finds an empty slot (fewer than
 * DEREG_DEFER_SLOTS others hold claims), and a pointer is taken exactly
 * once (the exchange that sees it empties the slot).  A taker that finds
 * the count nonzero but no full slot (a queuer between its two steps, in
 * a handler on another thread) returns NULL: that queuer's own thread
 * takes it at its return to the application.
 */
#define _GNU_SOURCE
#include "dereg_defer.h"

#include <errno.h>
#include <stddef.h>

#include "proc.h"

/* Global: the queue is process-wide by design (see dereg_defer.h). */
atomic_uint dereg_defer_claimed;
static _Atomic(void *) slots[DEREG_DEFER_SLOTS];
__thread volatile sig_atomic_t dereg_defer_queued_here
	__attribute__((tls_model("initial-exec")));
/*
 * The process whose deregistrations the queue holds (0: not known yet,
 * taken as the caller's).  A child, also one made without the fork
 * handlers, finds another pid here and empties the queue first.
 */
static atomic_int owner;

/* Drop what another process queued (see dereg_defer_adopt()). */
static void adopt(void)
{
	int o = atomic_load_explicit(&owner, memory_order_relaxed);

	if (o != 0 && o != (int)proc_pid())
		dereg_defer_reset();
}

int dereg_defer(void *mr)
{
	unsigned int n;

	adopt();
	n = atomic_load(&dereg_defer_claimed);

	do {
		if (n >= DEREG_DEFER_SLOTS)
			return EAGAIN;
	} while (!atomic_compare_exchange_weak(&dereg_defer_claimed, &n, n + 1));
	for (;;) {
		for (size_t i = 0; i < DEREG_DEFER_SLOTS; i++) {
			void *empty = NULL;

			if (atomic_compare_exchange_strong(&slots[i], &empty, mr)) {
				dereg_defer_queued_here = 1;
				return 0;
			}
		}
	}
}

void *dereg_defer_take(void)
{
	if (!dereg_defer_pending())
		return NULL;
	for (size_t i = 0; i < DEREG_DEFER_SLOTS; i++) {
		void *mr;

		if (!atomic_load_explicit(&slots[i], memory_order_relaxed))
			continue;
		mr = atomic_exchange(&slots[i], NULL);
		if (mr)
			return mr;	/* the claim goes with it */
	}
	return NULL;
}

void dereg_defer_done(void *mr)
{
	(void)mr;
	atomic_fetch_sub(&dereg_defer_claimed, 1);
}

void dereg_defer_reset(void)
{
	for (size_t i = 0; i < DEREG_DEFER_SLOTS; i++)
		atomic_store_explicit(&slots[i], NULL, memory_order_relaxed);
	atomic_store(&dereg_defer_claimed, 0);
	dereg_defer_queued_here = 0;
	atomic_store(&owner, (int)proc_pid());
}

void dereg_defer_adopt(void)
{
	adopt();
}

static void reset_in_child(void *arg)
{
	(void)arg;
	dereg_defer_reset();
}

/* Global: registered once with proc.c, never removed. */
static struct proc_fork_hooks fork_hooks = { .child = reset_in_child };

void dereg_defer_install_fork_hook(void)
{
	int none = 0;

	/* Before anything can be queued: no race with a first queuer. */
	atomic_compare_exchange_strong(&owner, &none, (int)proc_pid());
	proc_fork_hooks_add(&fork_hooks);
}
