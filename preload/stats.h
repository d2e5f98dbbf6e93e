/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Counters of the shim's activity.  All fields are atomics updated with
 * relaxed ordering: they are statistics, read once at exit.
 */
#ifndef UMMUSHIM_STATS_H
#define UMMUSHIM_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The hit counter is split into cache-line-sized shards, so that threads
 * never write the same cache line on a hit; stats_hits() adds them up.
 * The cache gives each thread's hot a shard of its own (1.., written by
 * that thread alone: stats_inc_owned()) while there are enough, and
 * shard 0 (atomic increments: stats_hit()) to the rest, so the sum is
 * exact.
 */
#define STATS_HIT_SHARDS 64

struct stats_shard {
	atomic_uint_fast64_t v;
	char pad[56];	/* padding, not alignment: the struct is calloc'ed */
};

struct shim_stats {
	struct stats_shard hits[STATS_HIT_SHARDS];	/* lookups served from the cache */
	atomic_uint_fast64_t misses;		/* lookups registered for the cache */
	atomic_uint_fast64_t passthrough;	/* registrations not cached */
	atomic_uint_fast64_t unwatchable;	/* of those: device memory (VM_IO/PFNMAP) */
	atomic_uint_fast64_t real_regs;		/* calls into the real registration */
	atomic_uint_fast64_t real_deregs;	/* calls into the real deregistration */
	atomic_uint_fast64_t evictions;		/* idle entries dropped for the limits */
	atomic_uint_fast64_t invalidations;	/* entries hit by an invalidation */
	/*
	 * MRs in use when their memory was invalidated or the monitor
	 * failed (stale), and of the invalidated ones: the application
	 * unmapped the memory (certain), or the kernel reported an
	 * invalidation for another or an unknown reason.
	 */
	atomic_uint_fast64_t stale;
	atomic_uint_fast64_t stale_unmapped;
	atomic_uint_fast64_t stale_invalidated;
	/* Pages pinned by the cache's registrations now, in bytes. */
	atomic_uint_fast64_t pinned_bytes;
	atomic_uint_fast64_t peak_pinned_bytes;
	atomic_uint_fast64_t reg_ns;		/* time inside real registrations */
	atomic_uint_fast64_t dereg_ns;		/* time inside real deregistrations */
	/* ibv_dereg_mr calls refused (EAGAIN): the deferred queue was full. */
	atomic_uint_fast64_t deferred_full;
};

static inline void stats_inc(atomic_uint_fast64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static inline void stats_add(atomic_uint_fast64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static inline uint64_t stats_get(const atomic_uint_fast64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

static inline void stats_hit(struct shim_stats *s, unsigned int shard)
{
	stats_inc(&s->hits[shard % STATS_HIT_SHARDS].v);
}

/*
 * The same for a counter only the calling thread writes (its own hit
 * shard): no read-modify-write, readers still see whole values.
 */
static inline void stats_inc_owned(atomic_uint_fast64_t *v)
{
	atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

static inline uint64_t stats_hits(const struct shim_stats *s)
{
	uint64_t n = 0;

	for (int i = 0; i < STATS_HIT_SHARDS; i++)
		n += stats_get(&s->hits[i].v);
	return n;
}

/* Account @bytes more pinned bytes and track the peak. */
void stats_pin(struct shim_stats *s, uint64_t bytes);
void stats_unpin(struct shim_stats *s, uint64_t bytes);

/*
 * Format the counters as one "key=value ..." line into @buf (no newline),
 * starting with "monitor=<name>".  Async-signal-safe enough for a
 * destructor: no allocation, no locks.
 */
void stats_format(const struct shim_stats *s, const char *monitor,
		  char *buf, size_t size);

/* Nanoseconds of CLOCK_MONOTONIC, for timing the real calls. */
uint64_t stats_now_ns(void);

#endif /* UMMUSHIM_STATS_H */
