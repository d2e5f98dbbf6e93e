// SPDX-License-Identifier: BSD-2-Clause
/*
 * The cache's entries: their stripe locks, their state changes (cached,
 * registered, retired), their monitor watches, and releasing them.  The
 * rules are in cache_internal.h.
 */
#define _GNU_SOURCE
#include "cache_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proc.h"

/*
 * Whether this process is a child of the one that created the cache.  A
 * child made without the fork handlers (syscall(SYS_fork), clone) is
 * caught here, on the slow paths: it passes through and never
 * deregisters, unwatches or drains anything (the MRs and the monitor's
 * descriptor belong to the parent).  The pid check is a system call, so
 * the hit path does not ask; it is not remembered in the cache, which a
 * clone(CLONE_VM) child shares with its parent.
 */
bool cache_in_child(struct cache *c)
{
	return atomic_load(&c->child) || proc_is_other(c->owner);
}

struct entry *find_by_cookie(struct cache *c, uint64_t cookie)
{
	uint64_t h = cookie_hash(cookie);

	for (struct hlink *l = *htab_bucket(&c->by_cookie, h); l;
	     l = l->next) {
		struct entry *e = container_of(l, struct entry, by_cookie);

		if (e->cookie == cookie)
			return e;
	}
	return NULL;
}

/* ---- stripes -------------------------------------------------------------- */

/*
 * The stripes an entry's state depends on: its key's (by_key, cached,
 * pending; hits take references under it) and, while it is registered,
 * its MR's (by_mr; the dereg fast path drops references under it).
 * Taken under c->lock only, so a thread holding two stripes is the one
 * c->lock holder and the fast paths hold one: no deadlock.  Two stripes
 * are still taken in index order (as fork preparation takes them all),
 * which keeps lock-order checkers quiet.
 */
struct elock stripes_lock2(struct cache *c, unsigned int x, unsigned int y)
{
	struct elock l = { (int)(x < y ? x : y), x == y ? -1 : (int)(x < y ? y : x) };

	stripe_lock(c, (unsigned int)l.a);
	if (l.b >= 0)
		stripe_lock(c, (unsigned int)l.b);
	return l;
}

struct elock entry_lock(struct cache *c, const struct entry *e)
{
	return stripes_lock2(c, e->kstripe,
			     e->registered ? e->mstripe : e->kstripe);
}

void entry_unlock(struct cache *c, struct elock l)
{
	if (l.b >= 0)
		stripe_unlock(c, (unsigned int)l.b);
	stripe_unlock(c, (unsigned int)l.a);
}

/*
 * Double a striped table when it is crowded (under c->lock, no stripe
 * held): every stripe is taken, so no fast path is inside it.
 */
void grow_striped(struct cache *c, struct htab *t, void **garbage)
{
	if (!htab_crowded(t) || *garbage)
		return;
	for (unsigned int i = 0; i < N_STRIPES; i++)
		stripe_lock(c, i);
	htab_grow(t, garbage);
	for (unsigned int i = N_STRIPES; i-- > 0;)
		stripe_unlock(c, i);
}

/* ---- entry state (under c->lock and the entry's stripes) ----------------- */

/* Make @e findable by lookups and by the monitor's events. */
void entry_cache(struct cache *c, struct entry *e)
{
	htab_insert(&c->by_key, &e->by_key, key_hash(&e->key));
	htab_insert(&c->by_cookie, &e->by_cookie, cookie_hash(e->cookie));
	e->cached = true;
}

/* Never return @e again; a registered @e is released at its last deref. */
void entry_uncache(struct cache *c, struct entry *e)
{
	if (!e->cached)
		return;
	entry_unpublish(e);
	region_unindex(c, e);
	htab_remove(&c->by_key, &e->by_key);
	htab_remove(&c->by_cookie, &e->by_cookie);
	e->cached = false;
	if (e->in_lru) {
		list_del(&e->lru);
		e->in_lru = false;
		c->n_clock--;
	}
}

/* Under c->lock and the stripes of the key and of @mr. */
void entry_set_registered(struct cache *c, struct entry *e, void *mr)
{
	e->mr = mr;
	htab_insert(&c->by_mr, &e->by_mr, mr_hash(mr));
	e->registered = true;
	c->n_registered++;
	c->bytes_registered += entry_pinned_bytes(c, e);
	atomic_store_explicit(&c->over, over_limits(c), memory_order_relaxed);
	stats_pin(c->stats, entry_pinned_bytes(c, e));
}

void entry_clear_registered(struct cache *c, struct entry *e)
{
	if (!e->registered)
		return;
	htab_remove(&c->by_mr, &e->by_mr);
	e->registered = false;
	c->n_registered--;
	c->bytes_registered -= entry_pinned_bytes(c, e);
	atomic_store_explicit(&c->over, over_limits(c), memory_order_relaxed);
	stats_unpin(c->stats, entry_pinned_bytes(c, e));
}

/*
 * Unlink @e from everything and queue it on @victims; release_victims()
 * then deregisters it (if @dereg) and frees it outside the locks.
 */
void entry_retire(struct cache *c, struct entry *e, struct entry **victims)
{
	entry_uncache(c, e);
	list_del(&e->all);
	e->next_victim = *victims;
	*victims = e;
}

/* Stop caching the idle @e and queue it for deregistration (locks held). */
void entry_evict(struct cache *c, struct entry *e, struct entry **victims)
{
	entry_clear_registered(c, e);
	if (e->mr && !e->releasing) {
		e->releasing = true;
		atomic_fetch_add(&c->releasing, 1);
	}
	entry_retire(c, e, victims);
}

/* ---- monitor calls (under mon_lock) ------------------------------------ */

int monitor_watch(struct cache *c, struct entry *e)
{
	uintptr_t start = e->key.addr & ~c->page_mask;
	uintptr_t end = (e->key.addr + e->key.length + c->page_mask) &
			~c->page_mask;
	int rc;

	if (end <= start)	/* wraps around: cannot be watched */
		return -EINVAL;
	lock_mon(c);
	rc = c->mon->ops->watch(c->mon, e->cookie, start, end);
	unlock_mon(c);
	return rc;
}

void monitor_unwatch(struct cache *c, struct entry *e)
{
	if (!e->watched)
		return;
	lock_mon(c);
	c->mon->ops->unwatch(c->mon, e->cookie);
	unlock_mon(c);
	e->watched = false;
}

/* ---- releasing registrations (no locks held) --------------------------- */

int real_dereg(struct cache *c, struct entry *e)
{
	int rc = c->ops.dereg(c->ops.arg, e->mr);

	if (rc)
		log_warn("deregistering cached MR %p [%#" PRIxPTR ", +%zu) failed: %s",
			 e->mr, e->key.addr, e->key.length, strerror(rc));
	return rc;
}

/* Deregister (after the monitor stopped caring), unwatch and free. */
void release_victims(struct cache *c, struct entry *victims)
{
	bool child;

	if (!victims)
		return;
	child = cache_in_child(c);	/* then: the parent's MRs, never touched */
	while (victims) {
		struct entry *e = victims;

		victims = e->next_victim;
		if (!child) {
			if (e->mr)
				real_dereg(c, e);
			monitor_unwatch(c, e);
		}
		if (e->releasing) {
			e->releasing = false;
			release_done(c);
		}
		entry_free(c, e);
	}
}

/* One counted deregistration finished: wake cache_wait_releases(). */
void release_done(struct cache *c)
{
	if (atomic_fetch_sub(&c->releasing, 1) != 1)
		return;
	lock_cache(c);
	pthread_cond_broadcast(&c->released);
	unlock_cache(c);
}

/*
 * Wait until no evicted MR is being deregistered by another thread.  The
 * timed wait re-checks the counter, so a wake-up lost between the check
 * and the wait costs at most 10 ms, never a hang.
 */
void cache_wait_releases(struct cache *c)
{
	lock_cache(c);
	while (atomic_load(&c->releasing)) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10 * 1000 * 1000;
		if (ts.tv_nsec >= 1000 * 1000 * 1000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000 * 1000 * 1000;
		}
		pthread_cond_timedwait(&c->released, &c->lock, &ts);
	}
	unlock_cache(c);
}

/* ---- the entry pool ------------------------------------------------------ */

/*
 * Entries are never freed before the cache: a thread may still remember
 * a retired one (struct hot_slot) and look at its state word, whose
 * generation tells it that the entry is no longer the one it knew.
 */
struct entry *entry_alloc(struct cache *c)
{
	struct entry *e;

	pthread_mutex_lock(&c->pool_lock);
	e = c->free_entries;
	if (e)
		c->free_entries = e->next_victim;
	pthread_mutex_unlock(&c->pool_lock);
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (e)
			atomic_init(&e->state, ST_GEN_ONE);
		return e;
	}
	/* Everything but the state word, which lock-free readers may load. */
	memset((char *)e + sizeof(e->state), 0, sizeof(*e) - sizeof(e->state));
	return e;
}

/*
 * Back to the pool as a new generation (nobody holds a reference); at the
 * last generation, out of use for good (see ST_GEN_LAST): its state word
 * stays unusable, so every remembered hit on it fails.
 */
void entry_free(struct cache *c, struct entry *e)
{
	uint64_t gen = ST_GEN(atomic_load(&e->state));
	bool spent = gen == ST_GEN_LAST;

	atomic_store(&e->state, spent ? gen : gen + ST_GEN_ONE);
	pthread_mutex_lock(&c->pool_lock);
	if (spent) {
		e->next_victim = c->spent_entries;
		c->spent_entries = e;
	} else {
		e->next_victim = c->free_entries;
		c->free_entries = e;
	}
	pthread_mutex_unlock(&c->pool_lock);
}

static void free_list(struct entry *e)
{
	for (struct entry *n; e; e = n) {
		n = e->next_victim;
		free(e);
	}
}

void entry_pool_free(struct cache *c)
{
	free_list(c->free_entries);
	free_list(c->spent_entries);
	c->free_entries = c->spent_entries = NULL;
}

