// SPDX-License-Identifier: BSD-2-Clause
/*
 * Doing the queued deregistrations (dereg_defer.h) on the way back to the
 * application.
 *
 * While the queue is drained the thread's depth is raised, so that a
 * signal handler's ibv_dereg_mr on this thread is queued, not done under
 * the drain.  A handler that runs after the last take found nothing but
 * before the depth falls again queues too, and nothing else would take
 * its entry before this thread is back in the application: dereg_defer()
 * marks the thread (dereg_defer_queued_here), and the drain goes round
 * again.  It loops on that mark, not on dereg_defer_pending(): another
 * thread's half-queued entry keeps the count up, and its own thread takes
 * it.
 */
#define _GNU_SOURCE
#include "dereg_defer.h"

void dereg_defer_drain(volatile unsigned int *depth, void (*dereg)(void *mr))
{
	void *mr;

	dereg_defer_adopt();	/* not the parent's */
	do {
		dereg_defer_queued_here = 0;
		++*depth;
		atomic_signal_fence(memory_order_seq_cst);
		while ((mr = dereg_defer_take()) != NULL) {
			dereg(mr);
			dereg_defer_done(mr);
		}
		--*depth;
		atomic_signal_fence(memory_order_seq_cst);
	} while (dereg_defer_queued_here);
}
