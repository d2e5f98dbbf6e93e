// SPDX-License-Identifier: BSD-2-Clause
/*
 * Invalidations: draining the monitor and applying what it reports to the
 * cache's entries (an idle one is released, a busy one becomes stale, a
 * pending one is not cached), and turning caching off when the monitor
 * fails.  The rules are in cache_internal.h.
 */
#define _GNU_SOURCE
#include "cache_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

/* ---- invalidation ------------------------------------------------------ */

struct drain_ctx {
	struct cache *c;
	struct entry *victims;
};

static void invalidate_entry(struct cache *c, struct entry *e,
			     struct entry **victims)
{
	struct elock l;

	if (!e->cached)
		return;
	stats_inc(&c->stats->invalidations);
	l = entry_lock(c, e);	/* no reference is taken or dropped now */
	if (e->pending) {
		/*
		 * The pages may have changed while the real registration
		 * pinned them: hand the MR to the caller but never cache it.
		 * This is also what a copy-on-write break caused by the
		 * pinning itself looks like, so it is not worth a warning.
		 */
		e->inval_pending = true;
		log_debug("invalidate pending addr=%#" PRIxPTR " len=%zu",
			  e->key.addr, e->key.length);
	} else if (atomic_load(&e->refs) == 0) {
		log_debug("invalidate idle mr=%p addr=%#" PRIxPTR " len=%zu",
			  e->mr, e->key.addr, e->key.length);
		entry_evict(c, e, victims);
	} else {
		entry_uncache(c, e);
		stats_inc(&c->stats->stale);
		log_warn("memory behind MR %p [%#" PRIxPTR ", %#" PRIxPTR
			 ") changed while the application still uses the MR; it is no longer cached and is deregistered at its last ibv_dereg_mr",
			 e->mr, e->key.addr, e->key.addr + e->key.length);
	}
	entry_unlock(c, l);
}

static bool entry_overlaps(const struct cache *c, const struct entry *e,
			   uintptr_t start, uintptr_t end)
{
	uintptr_t s = e->key.addr & ~c->page_mask;
	uintptr_t t = e->key.addr + e->key.length;

	return s < end && start < t;
}

/*
 * The control build used by the integrity tests (never installed) drops
 * every invalidation, to prove that those tests detect stale data.
 */
#ifdef UMMUSHIM_TEST_IGNORE_INVALIDATION
static const bool ignore_invalidations = true;
#else
static const bool ignore_invalidations = false;
#endif

/* monitor_inval_fn: called by the monitor's drain() under mon_lock. */
static void on_invalidate(void *arg, uint64_t cookie, uintptr_t start,
			  uintptr_t end)
{
	struct drain_ctx *d = arg;
	struct cache *c = d->c;

	if (ignore_invalidations)
		return;
	lock_cache(c);
	if (cookie == MONITOR_COOKIE_ANY) {
		for (struct list *l = c->all.next, *n; l != &c->all; l = n) {
			struct entry *e = container_of(l, struct entry, all);

			n = l->next;
			if (entry_overlaps(c, e, start, end))
				invalidate_entry(c, e, &d->victims);
		}
	} else {
		struct entry *e = find_by_cookie(c, cookie);

		if (e)
			invalidate_entry(c, e, &d->victims);
	}
	unlock_cache(c);
}

/* The monitor failed: stop caching and let go of everything idle. */
static void cache_break(struct cache *c, int err, struct entry **victims)
{
	log_warn("invalidation monitor '%s' failed (%s): caching disabled, all calls pass through from now on",
		 c->mon->ops->name, strerror(-err));
	lock_cache(c);
	atomic_store(&c->broken, true);
	for (struct list *l = c->all.next, *n; l != &c->all; l = n) {
		struct entry *e = container_of(l, struct entry, all);
		struct elock el;

		n = l->next;
		if (!e->cached)
			continue;
		el = entry_lock(c, e);
		if (e->pending)
			e->inval_pending = true;
		else if (atomic_load(&e->refs) == 0)
			entry_evict(c, e, victims);
		else
			entry_uncache(c, e);
		entry_unlock(c, el);
	}
	unlock_cache(c);
}

/*
 * Apply every invalidation reported so far.  The common case costs one
 * load of the monitor's counter.  A thread that sees a change waits for
 * mon_lock even if another thread is already draining: it must not look
 * up entries before the invalidations it could observe are applied.
 */
void cache_sync(struct cache *c)
{
	struct drain_ctx d = { .c = c, .victims = NULL };

	if (!c->mon->ops->changed(c->mon) || cache_in_child(c))
		return;
	lock_mon(c);
	if (!atomic_load(&c->broken) && c->mon->ops->changed(c->mon)) {
		int rc = c->mon->ops->drain(c->mon, on_invalidate, &d);

		/*
		 * A monitor used from a forked child fails (ECHILD from the
		 * uffd monitor, EIO from /dev/ummunot, whose events belong
		 * to the parent's mm): that is a fork, not a broken monitor.
		 */
		if (rc < 0 && (rc == -ECHILD || cache_in_child(c)))
			atomic_store(&c->child, true);
		else if (rc < 0)
			cache_break(c, rc, &d.victims);
	}
	unlock_mon(c);
	release_victims(c, d.victims);
}
