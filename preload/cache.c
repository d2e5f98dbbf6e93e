// SPDX-License-Identifier: BSD-2-Clause
/*
 * Registration cache: creation, the registration path (remembered and
 * plain hits, containment, miss, pending entries) and the fork handlers
 * (deregistration: cache_dereg.c).  See
 * cache.h for the semantics and cache_internal.h for the structures and
 * the locking rules.
 */
#define _GNU_SOURCE
#include "cache_fast.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proc.h"

static void free_garbage(void **garbage, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(garbage[i]);
}

/* ---- public API --------------------------------------------------------- */

struct cache *cache_create(const struct cache_ops *ops, struct monitor *mon,
			   const struct cache_limits *limits,
			   struct shim_stats *stats)
{
	struct cache *c;
	long page = sysconf(_SC_PAGESIZE);

	/* monitor_check() compares an inline counter instead of probing. */
	if ((mon->gen != NULL) != (mon->seen != NULL) ||
	    (mon->gen && mon->ops->check)) {
		errno = EINVAL;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	if (htab_init(&c->by_key) || htab_init(&c->by_mr) ||
	    htab_init(&c->by_cookie)) {
		htab_free(&c->by_key);
		htab_free(&c->by_mr);
		htab_free(&c->by_cookie);
		free(c);
		return NULL;
	}
	if (hot_init(c) || slice_pool_init(&c->slices, ops->slice_init ?
					   ops->slice_size : 0)) {
		htab_free(&c->by_key);
		htab_free(&c->by_mr);
		htab_free(&c->by_cookie);
		free(c);
		return NULL;
	}
	region_index_init(&c->regions);
	pthread_mutex_init(&c->pool_lock, NULL);
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->mon_lock, NULL);
	pthread_cond_init(&c->pending_done, NULL);
	pthread_cond_init(&c->released, NULL);
	for (unsigned int i = 0; i < N_STRIPES; i++)
		pthread_mutex_init(&c->stripes[i].lock, NULL);
	c->ops = *ops;
	c->mon = mon;
	c->limits = *limits;
	if (limits->subrange == CACHE_SUBRANGE_ALL && ops->slice_init)
		c->wide_rights = limits->rights;
	c->stats = stats;
	c->page_mask = (uintptr_t)(page > 0 ? page : 4096) - 1;
	list_init(&c->all);
	list_init(&c->lru);
	c->next_cookie = 1;
	c->owner = proc_pid();
	return c;
}

void cache_destroy(struct cache *c)
{
	struct entry *idle = NULL, *rest = NULL;
	bool child;

	if (!c)
		return;
	child = cache_in_child(c);
	lock_cache(c);
	while (!list_empty(&c->all)) {
		struct entry *e = container_of(c->all.next, struct entry, all);
		struct elock l = entry_lock(c, e);
		bool idle_mr = e->registered && entry_refs(e) == 0 && !child;

		entry_clear_registered(c, e);
		entry_retire(c, e, idle_mr ? &idle : &rest);
		entry_unlock(c, l);
	}
	unlock_cache(c);
	release_victims(c, idle);
	for (struct entry *e = rest, *n; e; e = n) {
		n = e->next_victim;
		if (!child)
			monitor_unwatch(c, e);
		entry_free(c, e);
	}
	entry_pool_free(c);
	hot_fini(c);
	slice_pool_fini(&c->slices);
	region_index_fini(&c->regions);
	pthread_mutex_destroy(&c->pool_lock);
	htab_free(&c->by_key);
	htab_free(&c->by_mr);
	htab_free(&c->by_cookie);
	pthread_cond_destroy(&c->pending_done);
	pthread_cond_destroy(&c->released);
	for (unsigned int i = 0; i < N_STRIPES; i++)
		pthread_mutex_destroy(&c->stripes[i].lock);
	pthread_mutex_destroy(&c->mon_lock);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/*
 * Real registration; on ENOMEM retry once after releasing idle MRs.  Every
 * registration goes through here, cached or not: an idle cached MR must
 * never be why the application's registration fails.
 */
static void *reg_with_retry(struct cache *c, const struct cache_key *key,
			    int how)
{
	struct entry *victims = NULL;
	void *mr = c->ops.reg(c->ops.arg, key, how);

	/* A forked child never releases the parent's MRs. */
	if (mr || errno != ENOMEM || cache_in_child(c))
		return mr;
	lock_cache(c);
	evict_all_idle(c, &victims);
	unlock_cache(c);
	if (!victims) {
		errno = ENOMEM;
		return NULL;
	}
	log_info("registration of %zu bytes failed with ENOMEM; released idle cached MRs and retrying",
		 key->length);
	release_victims(c, victims);
	return c->ops.reg(c->ops.arg, key, how);
}

static void *passthrough_reg(struct cache *c, const struct cache_key *key,
			     int how)
{
	void *mr;

	stats_inc(&c->stats->passthrough);
	mr = reg_with_retry(c, key, how);
	log_debug("reg (not cached) mr=%p addr=%#" PRIxPTR " len=%zu", mr,
		  key->addr, key->length);
	return mr;
}

void *cache_reg_uncached(struct cache *c, const struct cache_key *key,
			 int how)
{
	int old = nocancel_begin();
	void *mr = passthrough_reg(c, key, how);

	nocancel_end(old);
	return mr;
}

void cache_release_invalidated(struct cache *c)
{
	int old = nocancel_begin();

	cache_sync(c);
	nocancel_end(old);
}

/* Drop a pending entry whose registration will not be cached. */
static void abandon_pending(struct cache *c, struct entry *e)
{
	struct elock l;

	lock_cache(c);
	l = entry_lock(c, e);
	entry_uncache(c, e);
	entry_unlock(c, l);
	list_del(&e->all);
	pthread_cond_broadcast(&c->pending_done);
	unlock_cache(c);
}

/*
 * Register for the pending entry @e created by cache_reg() on behalf of
 * the request @req (@e's key, or the region around it).  The MR with one
 * reference of generation *@gen; or, *@gen 0, when @e cannot be watched,
 * @req's own registration passed through, and when a widened @e cannot
 * be registered, @req's own answer, passed through too.  But when @e
 * holds rights learnt from its PD (@learnt) and cannot be registered,
 * NULL and *@retry: the caller tries again without them (memory that
 * cannot take a learnt right, e.g. LOCAL_WRITE on read-only pages), unless
 * the error was a lack of memory.
 */
static void *miss_register(struct cache *c, struct entry *e,
			   const struct cache_key *req, int how,
			   bool learnt, uint64_t *gen, bool *retry)
{
	struct entry *victims = NULL;
	bool widened = !key_equal(&e->key, req);
	void *garbage = NULL, *igarbage = NULL;
	struct cache_key key;
	struct elock l;
	bool uncached;
	void *mr;
	int rc, err;

	*gen = 0;
	/* Watch first, so that an invalidation racing with the pinning is seen. */
	rc = monitor_watch(c, e);
	if (rc < 0) {
		if (rc == -ENXIO)	/* device memory: never cached */
			stats_inc(&c->stats->unwatchable);
		log_debug("cannot watch [%#" PRIxPTR ", +%zu): %s; not cached",
			  e->key.addr, e->key.length, strerror(-rc));
		abandon_pending(c, e);
		entry_free(c, e);
		return passthrough_reg(c, req, how);
	}
	e->watched = true;

	mr = reg_with_retry(c, &e->key, how);
	if (mr)
		stats_inc(&c->stats->misses);
	if (!mr) {
		err = errno;
		abandon_pending(c, e);
		monitor_unwatch(c, e);
		entry_free(c, e);
		/*
		 * Out of memory or resources: fewer rights would not help;
		 * the request's own registration is passed through below.
		 */
		if (learnt && err != ENOMEM && err != EAGAIN) {
			*retry = true;
			errno = err;
			return NULL;
		}
		if (widened)	/* the request's own answer */
			return passthrough_reg(c, req, how);
		errno = err;
		return NULL;
	}
	/*
	 * An invalidation that happened during the pinning (e.g. the
	 * copy-on-write break of a zero page) is applied to the pending entry
	 * now, before anybody can get the MR from the cache.
	 */
	cache_sync(c);

	key = e->key;	/* for the log: e may change once unlocked */
	lock_cache(c);
	rights_learn(c, &e->key, e->ctx);	/* what the device granted */
	grow_striped(c, &c->by_mr, &garbage);
	e->mstripe = (unsigned int)(mr_hash(mr) & STRIPE_MASK);
	l = stripes_lock2(c, e->kstripe, e->mstripe);
	entry_set_registered(c, e, mr);
	e->pending = false;
	uncached = e->inval_pending;
	*gen = ST_GEN(atomic_load(&e->state));
	atomic_store(&e->state, *gen | 1);	/* ours; not usable yet */
	if (uncached) {
		entry_uncache(c, e);
	} else {
		list_add_head(&c->lru, &e->lru);	/* the clock list */
		e->in_lru = true;
		c->n_clock++;
	}
	entry_unlock(c, l);
	if (!uncached) {
		/* e->region is final before any hit can read it. */
		if (e->region)
			region_publish(c, e, &victims, &igarbage);
		atomic_fetch_or_explicit(&e->state, ST_USABLE,
					 memory_order_release);
	}
	enforce_limits(c, &victims);
	pthread_cond_broadcast(&c->pending_done);
	unlock_cache(c);

	log_debug("miss mr=%p addr=%#" PRIxPTR " len=%zu access=%#x%s", mr,
		  key.addr, key.length, key.access,
		  uncached ? " (invalidated while registering: not cached)" : "");
	free(garbage);
	free(igarbage);
	release_victims(c, victims);
	return mr;
}

/*
 * The hit path: look @key up under its stripe alone and take a reference
 * on a ready entry.  NULL: not a plain hit (absent or being registered),
 * take the slow path.  A ready entry in by_key is registered: it leaves
 * by_key (under this stripe) before it stops being registered.
 */
static void *try_hit(struct cache *c, struct hot *hot,
		     const struct cache_key *key)
{
	uint64_t h = key_hash(key);
	unsigned int st = (unsigned int)(h & STRIPE_MASK);
	struct entry *e;
	uint64_t gen;
	void *mr = NULL;

	stripe_lock(c, st);
	e = find_by_key_h(c, key, h);
	if (e && (gen = entry_get(e, 0)) != 0) {
		mark_referenced(e);
		mr = e->mr;
		hot_remember(hot, e, gen);
	}
	stripe_unlock(c, st);
	if (mr) {
		count_hit(c, hot);
		if (log_enabled(LOG_LEVEL_DEBUG)) {
			int old = nocancel_begin();	/* the reference is ours */

			log_debug("hit mr=%p addr=%#" PRIxPTR " len=%zu", mr,
				  key->addr, key->length);
			nocancel_end(old);
		}
	}
	return mr;
}

/*
 * Under c->lock: what a miss of @key registers (@key itself, or with
 * containment the region around it, with @learn_ctx and the PD's learnt
 * rights), unless a cached region already contains @key: then that hit is
 * returned (c->lock released).
 */
static void *lookup_or_widen(struct cache *c, struct hot *h,
			     const struct cache_key *key, const void *learn_ctx,
			     bool *widen, struct cache_key *rk,
			     unsigned int *extra)
{
	bool found = false;
	void *mr;

	*rk = *key;
	*extra = 0;
	if (!*widen)
		return NULL;
	mr = region_hit_locked(c, h, key, &found);
	if (mr) {
		unlock_cache(c);
		log_debug("hit (inside %p) addr=%#" PRIxPTR " len=%zu", mr,
			  key->addr, key->length);
		return mr;
	}
	if (found)	/* no slice object to be had: an exact miss */
		*widen = false;
	else
		*rk = widened_key(c, key, learn_ctx, extra);
	return NULL;
}

/*
 * Hand out the region's MR for @key; when a slice object cannot be had
 * (pool exhausted, no memory), register the request itself, uncached,
 * rather than fail a registration the application may rightly expect.
 */
static void *serve_or_pass(struct cache *c, struct hot *h, struct entry *e,
			   uint64_t gen, void *mr, const struct cache_key *key,
			   int how)
{
	void *ret = hot_serve(c, h, e, gen, mr, key);

	return ret ? ret : passthrough_reg(c, key, how);
}

/*
 * reg_slow()'s work; with @learn a miss registers with the PD's learnt
 * rights too, and if that fails, NULL and *@retry (see miss_register()).
 */
static void *reg_slow_once(struct cache *c, const struct cache_key *key,
			   void *dev_ctx, int how, bool learn, bool *retry)
{
	void *garbage[2] = { NULL, NULL };
	struct entry *e, *fresh = NULL;
	bool widen = widen_ok(c, key);
	/* Learnt rights exist under CACHE_SUBRANGE_ALL only. */
	const void *learn_ctx = learn && c->wide_rights ? dev_ctx : NULL;
	unsigned int extra = 0;
	struct cache_key rk;
	struct hot *h;
	uint64_t gen;
	void *mr;

	/*
	 * cache_reg() checked the range just before (once is enough): a
	 * failed check queued it for this drain (the backend keeps changed()
	 * true until a drain took it); a passed one stands for the whole
	 * call, as it does for the fast paths, because the application's
	 * changes to its memory that this registration must see happened
	 * before the call.  Whatever changed since is caught by the drain
	 * below (changed()) or, for a miss, by the watch set up before the
	 * real registration.
	 */
	cache_sync(c);
	h = hot_get(c);
	mr = try_hit(c, h, key);
	if (mr)
		return mr;

	lock_cache(c);
	for (;;) {
		if (atomic_load(&c->broken))
			goto unlock_passthrough;
		mr = lookup_or_widen(c, h, key, learn_ctx, &widen, &rk,
				     &extra);
		if (mr) {
			if (fresh)
				entry_free(c, fresh);
			return mr;
		}
		e = find_by_key(c, &rk);
		if (e && !e->pending && (gen = entry_get(e, 0)) != 0) {
			/* Became ready meanwhile: a hit (c->lock keeps it). */
			mr = e->mr;
			atomic_store(&e->referenced, true);
			hot_remember(h, e, gen);
			unlock_cache(c);
			count_hit(c, h);
			log_debug("hit mr=%p addr=%#" PRIxPTR " len=%zu", mr,
				  key->addr, key->length);
			if (fresh)
				entry_free(c, fresh);
			return serve_or_pass(c, h, e, gen, mr, key, how);
		}
		if (e) {
			/* Another thread is registering this key: wait for it. */
			pthread_cond_wait(&c->pending_done, &c->lock);
			continue;
		}
		if (fresh)
			break;
		/* A miss: allocate outside the lock, then look again. */
		unlock_cache(c);
		if (cache_in_child(c))	/* no watch of the parent's monitor */
			return passthrough_reg(c, key, how);
		fresh = entry_alloc(c);
		if (!fresh)
			return passthrough_reg(c, key, how);
		lock_cache(c);
	}
	e = fresh;
	e->key = rk;
	e->ctx = dev_ctx;
	e->cookie = c->next_cookie++;
	e->kstripe = (unsigned int)(key_hash(&rk) & STRIPE_MASK);
	e->pending = true;
	e->region = widen;
	list_init(&e->lru);
	list_add_head(&c->all, &e->all);
	grow_striped(c, &c->by_key, &garbage[0]);
	htab_grow(&c->by_cookie, &garbage[1]);	/* c->lock alone guards it */
	stripe_lock(c, e->kstripe);
	entry_cache(c, e);
	stripe_unlock(c, e->kstripe);
	unlock_cache(c);
	free_garbage(garbage, 2);
	mr = miss_register(c, e, key, how, extra != 0, &gen, retry);
	if (!gen)	/* passed through, or failed */
		return mr;
	hot_remember(h, e, gen);
	return serve_or_pass(c, h, e, gen, mr, key, how);

unlock_passthrough:
	unlock_cache(c);
	if (fresh)
		entry_free(c, fresh);
	return passthrough_reg(c, key, how);
}

/*
 * After cache_reg()'s monitor_check() of @key (see there).  Out of line:
 * inlined, its frame would be set up on the hit path too.
 */
__attribute__((noinline)) static void *
reg_slow(struct cache *c, const struct cache_key *key, void *dev_ctx, int how)
{
	bool retry = false;
	void *mr = reg_slow_once(c, key, dev_ctx, how, true, &retry);

	if (!retry)
		return mr;
	log_debug("registration with the PD's learnt rights failed: %s; retrying with the request's own",
		  strerror(errno));
	/* Without learnt rights it never asks for a retry. */
	return reg_slow_once(c, key, dev_ctx, how, false, &retry);
}

void *cache_reg_miss(struct cache *c, const struct cache_key *key,
		     void *dev_ctx, int how, enum cache_check check)
{
	void *mr;
	int old;

	if (atomic_load(&c->child) || atomic_load(&c->broken))
		return passthrough_reg(c, key, how);
	if (check == CACHE_CHECK_NOT_DONE)
		check = monitor_check(c->mon, key->addr,
				      key->addr + key->length) ?
			CACHE_CHECK_PASSED : CACHE_CHECK_FAILED;
	/* Nothing to drain: a plain hit under the key's stripe. */
	if (check == CACHE_CHECK_PASSED) {
		mr = try_hit(c, hot_peek(c), key);
		if (mr)
			return mr;
	}
	old = nocancel_begin();
	mr = reg_slow(c, key, dev_ctx, how);
	nocancel_end(old);
	return mr;
}

void *cache_reg(struct cache *c, const struct cache_key *key, void *dev_ctx,
		int how)
{
	enum cache_check check;
	void *mr = cache_reg_hit(c, key, &check);	/* a remembered hit */

	return mr ? mr : cache_reg_miss(c, key, dev_ctx, how, check);
}

/* Every lock, so that the child finds none held by a vanished thread. */
void cache_fork_prepare(struct cache *c)
{
	lock_mon(c);
	lock_cache(c);
	for (unsigned int i = 0; i < N_STRIPES; i++)
		stripe_lock(c, i);
}

static void unlock_all_stripes(struct cache *c)
{
	for (unsigned int i = N_STRIPES; i-- > 0;)
		stripe_unlock(c, i);
}

void cache_fork_parent(struct cache *c)
{
	unlock_all_stripes(c);
	unlock_cache(c);
	unlock_mon(c);
}

void cache_fork_child(struct cache *c)
{
	atomic_store(&c->child, true);
	/* The forking thread took them all in prepare; it is the one left. */
	unlock_all_stripes(c);
	unlock_cache(c);
	unlock_mon(c);
}

bool cache_is_broken(struct cache *c)
{
	return atomic_load(&c->broken);
}

size_t cache_registered_count(struct cache *c)
{
	size_t n;

	lock_cache(c);
	n = c->n_registered;
	unlock_cache(c);
	return n;
}

/* Cached, registered entries without references. */
size_t cache_idle_count(struct cache *c)
{
	size_t n = 0;

	lock_cache(c);
	for (struct list *l = c->lru.next; l != &c->lru; l = l->next) {
		struct entry *e = container_of(l, struct entry, lru);

		n += entry_refs(e) == 0;
	}
	unlock_cache(c);
	return n;
}
