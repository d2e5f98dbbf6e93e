// SPDX-License-Identifier: BSD-2-Clause
#define _GNU_SOURCE
#include "stats.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

void stats_pin(struct shim_stats *s, uint64_t bytes)
{
	uint64_t now = atomic_fetch_add_explicit(&s->pinned_bytes, bytes,
						 memory_order_relaxed) + bytes;
	uint_fast64_t peak = atomic_load_explicit(&s->peak_pinned_bytes,
						  memory_order_relaxed);

	while (now > peak &&
	       !atomic_compare_exchange_weak_explicit(&s->peak_pinned_bytes,
						      &peak, now,
						      memory_order_relaxed,
						      memory_order_relaxed))
		;
}

void stats_unpin(struct shim_stats *s, uint64_t bytes)
{
	atomic_fetch_sub_explicit(&s->pinned_bytes, bytes,
				  memory_order_relaxed);
}

void stats_format(const struct shim_stats *s, const char *monitor,
		  char *buf, size_t size)
{
	snprintf(buf, size,
		 "monitor=%s hits=%" PRIu64 " misses=%" PRIu64
		 " passthrough=%" PRIu64 " real_regs=%" PRIu64
		 " real_deregs=%" PRIu64 " evictions=%" PRIu64
		 " invalidations=%" PRIu64 " stale=%" PRIu64
		 " stale_unmapped=%" PRIu64 " stale_invalidated=%" PRIu64
		 " unwatchable=%" PRIu64 " pinned_bytes=%" PRIu64 " peak_pinned_bytes=%" PRIu64
		 " reg_ns=%" PRIu64 " dereg_ns=%" PRIu64
		 " deferred_full=%" PRIu64,
		 monitor, stats_hits(s), stats_get(&s->misses),
		 stats_get(&s->passthrough), stats_get(&s->real_regs),
		 stats_get(&s->real_deregs), stats_get(&s->evictions),
		 stats_get(&s->invalidations), stats_get(&s->stale),
		 stats_get(&s->stale_unmapped), stats_get(&s->stale_invalidated),
		 stats_get(&s->unwatchable),
		 stats_get(&s->pinned_bytes), stats_get(&s->peak_pinned_bytes),
		 stats_get(&s->reg_ns), stats_get(&s->dereg_ns),
		 stats_get(&s->deferred_full));
}

uint64_t stats_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}
