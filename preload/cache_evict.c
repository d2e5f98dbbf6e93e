// SPDX-License-Identifier: BSD-2-Clause
/*
 * Letting go of idle cached registrations: eviction for the limits (the
 * clock algorithm), on memory pressure, and before the application
 * releases a PD or a device; taking an MR out of the cache for rereg.
 * The rules are in cache_internal.h.
 */
#define _GNU_SOURCE
#include "cache_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

/* ---- limits ------------------------------------------------------------ */

/*
 * Evict idle entries until within limits, by the clock algorithm (an
 * approximation of least recently used that needs no list update on the
 * hit path): the hand starts at the oldest entry of the clock list; a
 * busy entry, or one hit since the hand last passed (its referenced bit
 * is cleared), moves to the head; the first idle unreferenced one goes.
 * Two rounds at most.
 */
void enforce_limits(struct cache *c, struct entry **victims)
{
	size_t budget = 2 * c->n_clock + 1;

	while (over_limits(c) && !list_empty(&c->lru) && budget-- > 0) {
		struct entry *e = container_of(c->lru.prev, struct entry, lru);
		struct elock l = entry_lock(c, e);
		bool keep = entry_refs(e) > 0 ||
			    atomic_exchange(&e->referenced, false) ||
			    !entry_try_evict(e);

		if (!keep) {
			log_debug("evict mr=%p addr=%#" PRIxPTR " len=%zu",
				  e->mr, e->key.addr, e->key.length);
			entry_evict(c, e, victims);
			stats_inc(&c->stats->evictions);
		}
		entry_unlock(c, l);
		if (keep) {
			list_del(&e->lru);
			list_add_head(&c->lru, &e->lru);
		}
	}
}

/*
 * Release every idle entry for which @match is true (NULL: all); they
 * count as evictions if @evictions.
 */
static void evict_idle_matching(struct cache *c, struct entry **victims,
				bool (*match)(const struct entry *, void *),
				void *what, bool evictions)
{
	for (struct list *l = c->lru.next, *n; l != &c->lru; l = n) {
		struct entry *e = container_of(l, struct entry, lru);
		struct elock el;

		n = l->next;
		if (match && !match(e, what))
			continue;
		el = entry_lock(c, e);
		if (entry_try_evict(e)) {
			entry_evict(c, e, victims);
			if (evictions)
				stats_inc(&c->stats->evictions);
		}
		entry_unlock(c, el);
	}
}

/* Release every idle entry (memory pressure). */
void evict_all_idle(struct cache *c, struct entry **victims)
{
	evict_idle_matching(c, victims, NULL, NULL, true);
}


/* Retire the idle entries for which @match is true. */
static void release_matching(struct cache *c, void *what,
			     bool (*match)(const struct entry *, void *))
{
	struct entry *victims = NULL;

	if (cache_in_child(c))
		return;
	lock_cache(c);
	/* Not evictions: the application is letting go of the PD/device. */
	evict_idle_matching(c, &victims, match, what, false);
	unlock_cache(c);
	release_victims(c, victims);
	/* MRs of this PD/device that another thread is deregistering now. */
	cache_wait_releases(c);
}

static bool match_pd(const struct entry *e, void *pd)
{
	return e->key.pd == pd;
}

static bool match_ctx(const struct entry *e, void *ctx)
{
	return e->ctx == ctx;
}

void cache_release_pd(struct cache *c, void *pd)
{
	rights_forget(c, pd, NULL);
	release_matching(c, pd, match_pd);
}

void cache_release_ctx(struct cache *c, void *dev_ctx)
{
	rights_forget(c, NULL, dev_ctx);
	release_matching(c, dev_ctx, match_ctx);
}

void cache_forget_ctx(struct cache *c, void *dev_ctx)
{
	struct entry *gone = NULL;

	rights_forget(c, NULL, dev_ctx);
	if (cache_in_child(c))
		return;
	lock_cache(c);
	for (struct list *l = c->all.next, *n; l != &c->all; l = n) {
		struct entry *e = container_of(l, struct entry, all);

		n = l->next;
		if (e->ctx == dev_ctx && !e->pending) {
			struct elock el = entry_lock(c, e);

			entry_clear_registered(c, e);
			entry_retire(c, e, &gone);
			entry_unlock(c, el);
		}
	}
	unlock_cache(c);
	/* The device is closed: its MRs are gone with it, only unwatch. */
	for (struct entry *e = gone, *n; e; e = n) {
		n = e->next_victim;
		monitor_unwatch(c, e);
		entry_free(c, e);
	}
}

int cache_detach(struct cache *c, void *mr)
{
	struct entry *e;
	int rc = 0;

	if (cache_in_child(c))
		return 0;
	/* A slice object: the region's keys, shared with its other users. */
	if (slice_of(&c->slices, mr))
		return -EBUSY;
	lock_cache(c);
	e = find_by_mr(c, mr);
	if (e) {
		struct elock l = entry_lock(c, e);
		uint64_t s = atomic_load(&e->state);

		do {
			if ((s & ST_REFS) > 1) {
				rc = -EBUSY;	/* other holders keep what they asked for */
				break;
			}
			/* Unusable from now on, and in use again if idle. */
		} while (!atomic_compare_exchange_weak(&e->state, &s,
						       ST_GEN(s) | 1));
		if (!rc)
			entry_uncache(c, e);
		entry_unlock(c, l);
	}
	unlock_cache(c);
	return rc;
}

