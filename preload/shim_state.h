/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The shim's process-wide state behind the interposers (interpose.c):
 * the configuration, the monitor and the cache, made at the first verbs
 * call; the fork hooks; the real calls timed for the statistics, and the
 * statistics line at exit.  Global because the interposed functions are
 * process-wide: one configuration, one cache, one set of counters.
 */
#ifndef UMMUSHIM_SHIM_STATE_H
#define UMMUSHIM_SHIM_STATE_H

#include <stdatomic.h>
#include <stdbool.h>

#include <infiniband/verbs.h>

#include "cache.h"
#include "stats.h"

#define SHIM_HIDDEN __attribute__((visibility("hidden")))

/* Global (hidden): the counters of the statistics line. */
extern struct shim_stats shim_stats SHIM_HIDDEN;
/* Global (hidden): the cache, NULL: pass through.  Read on every call. */
extern _Atomic(struct cache *) shim_the_cache SHIM_HIDDEN;
/* Global (hidden): the shim was initialised (shim_cache() ran once). */
extern atomic_bool shim_initialized SHIM_HIDDEN;
/* Global (hidden): this is a child forked from a process with a cache. */
extern atomic_bool shim_forked SHIM_HIDDEN;

/* Initialise once (configuration, monitor, cache, releaser thread). */
void shim_init_once(void);

/* The cache, initialising on first use; NULL means pass through. */
static inline struct cache *shim_cache(void)
{
	struct cache *c = atomic_load(&shim_the_cache);

	/* A published cache means initialised (see shim_init()). */
	if (__builtin_expect(c != NULL, 1))
		return atomic_load(&shim_forked) ? NULL : c;
	if (atomic_load(&shim_forked))
		return NULL;
	if (!atomic_load(&shim_initialized))
		shim_init_once();
	return atomic_load(&shim_the_cache);
}

/* The cache if it already exists (no initialisation). */
static inline struct cache *shim_cache_if_ready(void)
{
	return atomic_load(&shim_the_cache);
}

/* The real registration / deregistration, timed and counted. */
struct ibv_mr *shim_timed_reg(int how, const struct cache_key *k);
int shim_timed_dereg(struct ibv_mr *mr);

/* What resolving the real functions found worth saying, once (info). */
void shim_report_patch_note(void);

#endif /* UMMUSHIM_SHIM_STATE_H */
