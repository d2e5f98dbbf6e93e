// SPDX-License-Identifier: BSD-2-Clause
/* Ranges whose hit-path check failed (uffd_suspects.h). */
#include "uffd_suspects.h"

void suspects_init(struct suspects *q)
{
	pthread_mutex_init(&q->lock, NULL);
	q->n = 0;
	q->overflow = false;
	atomic_init(&q->pending, false);
}

void suspects_destroy(struct suspects *q)
{
	pthread_mutex_destroy(&q->lock);
}

/* Queue [start, end) for the next drain(); changed() is true from now on. */
void suspect_add(struct suspects *q, uintptr_t start, uintptr_t end)
{
	pthread_mutex_lock(&q->lock);
	if (q->n > 0 && q->v[q->n - 1].start == start &&
	    q->v[q->n - 1].end == end)
		;	/* the same range again (the slow path checks twice) */
	else if (q->n < SUSPECTS_MAX)
		q->v[q->n++] = (struct suspect){ start, end };
	else
		q->overflow = true;
	atomic_store_explicit(&q->pending, true, memory_order_release);
	pthread_mutex_unlock(&q->lock);
}

/* Report and forget the queued ranges. */
int suspects_report(struct suspects *q, monitor_inval_fn fn, void *ctx)
{
	int reported = 0;

	if (!atomic_load_explicit(&q->pending, memory_order_acquire))
		return 0;
	pthread_mutex_lock(&q->lock);
	if (q->overflow) {
		fn(ctx, MONITOR_COOKIE_ANY, 0, UINTPTR_MAX, 0);
		reported++;
	} else {
		for (size_t i = 0; i < q->n; i++, reported++)
			fn(ctx, MONITOR_COOKIE_ANY, q->v[i].start, q->v[i].end,
			   0);
	}
	q->n = 0;
	q->overflow = false;
	atomic_store_explicit(&q->pending, false, memory_order_release);
	pthread_mutex_unlock(&q->lock);
	return reported;
}
