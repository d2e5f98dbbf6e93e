// SPDX-License-Identifier: BSD-2-Clause
/*
 * The deregistration paths: the thread's remembered hits (no lock), the
 * MR's lock stripe, and the slow path under c->lock that keeps idle MRs
 * (lazy deregistration) and releases stale, detached and merged-away
 * ones at their last dereg.  The rules are in cache_internal.h.
 */
#define _GNU_SOURCE
#include "cache_fast.h"

#include <errno.h>
#include <inttypes.h>

/*
 * The dereg fast path by MR: drop a reference under the MR's stripe
 * alone (which keeps the entry in by_mr).  0: the slow path must decide
 * (not a cached MR, an entry no lookup may use any more, a double
 * dereg); 1: done; 2: done, and the entry is idle now.
 */
static int try_fast_dereg(struct cache *c, void *mr)
{
	uint64_t h = mr_hash(mr);
	unsigned int st = (unsigned int)(h & STRIPE_MASK);
	struct entry *e;
	int done = 0;

	stripe_lock(c, st);
	e = find_by_mr_h(c, mr, h);
	if (e)
		done = entry_put_fast(e, ST_GEN(atomic_load(&e->state)));
	stripe_unlock(c, st);
	return done;
}

int dereg_entry_locked(struct cache *c, struct entry *e, uint64_t gen,
		       void *mr)
{
	struct entry *victims = NULL;
	bool child = cache_in_child(c);
	uint64_t s = atomic_load(&e->state);
	struct elock l;
	int rc;

	if (gen && ST_GEN(s) != gen) {
		/* Retired meanwhile: its device was closed under it. */
		unlock_cache(c);
		return 0;
	}
	l = entry_lock(c, e);
	if (child) {
		/* The parent's registration: never touch it from here. */
		if (s & ST_REFS)
			atomic_fetch_sub(&e->state, 1);
		entry_unlock(c, l);
		unlock_cache(c);
		return 0;
	}
	do {
		if (!(s & ST_REFS)) {
			entry_unlock(c, l);
			unlock_cache(c);
			log_warn("ibv_dereg_mr(%p): MR already deregistered by the application; ignored",
				 mr);
			return EINVAL;
		}
	} while (!atomic_compare_exchange_weak(&e->state, &s, s - 1));
	if ((s - 1) & ST_REFS) {
		entry_unlock(c, l);
		unlock_cache(c);
		return 0;
	}
	if (s & ST_USABLE) {
		/* Lazy deregistration: keep it for the next lookup. */
		entry_unlock(c, l);
		enforce_limits(c, &victims);
		unlock_cache(c);
		log_debug("dereg (kept) mr=%p", mr);
		release_victims(c, victims);
		return 0;
	}
	/* Stale, detached or merged into a larger region: it goes now. */
	entry_clear_registered(c, e);
	entry_unlock(c, l);
	list_del(&e->all);
	unlock_cache(c);
	log_debug("dereg (released) mr=%p", mr);
	if (cache_in_child(c)) {
		entry_free(c, e);	/* the parent's MR: never deregistered here */
		return 0;
	}
	rc = real_dereg(c, e);
	monitor_unwatch(c, e);
	entry_free(c, e);
	return rc;
}

static int dereg_slow(struct cache *c, void *mr)
{
	struct entry *e;
	int rc;

	lock_cache(c);
	e = find_by_mr(c, mr);
	if (!e) {
		unlock_cache(c);
		rc = c->ops.dereg(c->ops.arg, mr);
		log_debug("dereg (not cached) mr=%p rc=%d", mr, rc);
		return rc;
	}
	return dereg_entry_locked(c, e, 0, mr);
}

/* The lock-free dereg of an MR this thread's last hits returned. */
static int hot_dereg(struct cache *c, void *mr)
{
	struct hot *h = hot_peek(c);

	for (unsigned int i = 0; h && i < HOT_SLOTS; i++) {
		struct hot_slot *s = &h->slot[i];

		if (s->e && s->mr == mr)
			return entry_put_fast(s->e, s->gen);
	}
	return 0;
}

int cache_dereg_miss(struct cache *c, void *mr)
{
	struct slice_hdr *sh;
	int old, rc, done;

	sh = slice_of(&c->slices, mr);
	if (sh)
		return slice_dereg(c, sh, mr);
	if (!atomic_load(&c->child)) {
		done = hot_dereg(c, mr);
		if (!done)
			done = try_fast_dereg(c, mr);
		if (done == 2)
			after_idle(c, mr);
		if (done)
			return 0;
	}
	old = nocancel_begin();
	rc = dereg_slow(c, mr);
	nocancel_end(old);
	return rc;
}

int cache_dereg(struct cache *c, void *mr)
{
	return cache_dereg_inline(c, mr);
}
