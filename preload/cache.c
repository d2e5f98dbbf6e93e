// SPDX-License-Identifier: BSD-2-Clause
/*
 * Registration cache: see cache.h for the semantics and the locking rules.
 *
 * An entry lives in up to three hash indexes and two lists:
 *  - by_key and by_cookie while it is "cached" (a lookup may return it);
 *  - by_mr while it holds a real registration (so ibv_dereg_mr finds it);
 *  - the "all" list for its whole life (scans by pd/context/range);
 *  - the LRU list while it is cached, registered and unreferenced.
 * An entry that is registered but no longer cached (stale, detached by
 * rereg, or invalidated while it was being registered) is deregistered at
 * its last cache_dereg().
 */
#define _GNU_SOURCE
#include "cache.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* ---- small intrusive containers ---------------------------------------- */

struct list {
	struct list *prev, *next;
};

static void list_init(struct list *l)
{
	l->prev = l->next = l;
}

static bool list_empty(const struct list *l)
{
	return l->next == l;
}

static void list_add_head(struct list *head, struct list *n)
{
	n->next = head->next;
	n->prev = head;
	head->next->prev = n;
	head->next = n;
}

static void list_del(struct list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

struct hlink {
	struct hlink *next;
	uint64_t hash;
};

struct htab {
	struct hlink **buckets;
	size_t nbuckets;	/* power of two */
	size_t count;
};

#define HTAB_MIN_BUCKETS 64

static int htab_init(struct htab *t)
{
	t->buckets = calloc(HTAB_MIN_BUCKETS, sizeof(*t->buckets));
	t->nbuckets = HTAB_MIN_BUCKETS;
	t->count = 0;
	return t->buckets ? 0 : -1;
}

static struct hlink **htab_bucket(const struct htab *t, uint64_t hash)
{
	return &t->buckets[hash & (t->nbuckets - 1)];
}

/*
 * Double the table when it gets crowded.  The old bucket array is handed
 * back through @garbage, to be freed once the cache lock is dropped (see
 * the locking rules in cache.h).  If the allocation fails, the table just
 * keeps longer chains.
 */
static void htab_maybe_grow(struct htab *t, void **garbage)
{
	size_t nb = t->nbuckets * 2;
	struct hlink **nbk;

	if (t->count < t->nbuckets * 2 || *garbage)
		return;
	nbk = calloc(nb, sizeof(*nbk));
	if (!nbk)
		return;
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct hlink *l = t->buckets[i], *next;

		for (; l; l = next) {
			next = l->next;
			l->next = nbk[l->hash & (nb - 1)];
			nbk[l->hash & (nb - 1)] = l;
		}
	}
	*garbage = t->buckets;
	t->buckets = nbk;
	t->nbuckets = nb;
}

static void htab_insert(struct htab *t, struct hlink *l, uint64_t hash,
			void **garbage)
{
	struct hlink **b;

	htab_maybe_grow(t, garbage);
	b = htab_bucket(t, hash);
	l->hash = hash;
	l->next = *b;
	*b = l;
	t->count++;
}

static void htab_remove(struct htab *t, struct hlink *l)
{
	for (struct hlink **p = htab_bucket(t, l->hash); *p; p = &(*p)->next) {
		if (*p == l) {
			*p = l->next;
			l->next = NULL;
			t->count--;
			return;
		}
	}
}

static uint64_t mix64(uint64_t x)
{
	/* splitmix64 finaliser: cheap and spreads pointer bits well. */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

#define container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* ---- entries ------------------------------------------------------------ */

struct entry {
	struct cache_key key;
	void *ctx;		/* device context of key.pd */
	void *mr;		/* real MR, NULL while pending */
	uint64_t cookie;	/* monitor watch id, unique per cache */
	unsigned long refs;	/* application references */

	bool pending;		/* real registration in progress */
	bool cached;		/* in by_key/by_cookie: lookups may return it */
	bool registered;	/* in by_mr: holds a real registration */
	bool watched;		/* the monitor watches it */
	bool in_lru;
	bool inval_pending;	/* invalidated while being registered */

	struct hlink by_key, by_mr, by_cookie;
	struct list all, lru;
	struct entry *next_victim;
};

struct cache {
	pthread_mutex_t lock;		/* indexes, lists, entries, counters */
	pthread_mutex_t mon_lock;	/* serialises monitor calls */
	pthread_cond_t pending_done;	/* a pending entry was resolved */

	struct cache_ops ops;
	struct monitor *mon;
	struct cache_limits limits;
	struct shim_stats *stats;
	uintptr_t page_mask;

	struct htab by_key, by_mr, by_cookie;
	struct list all, lru;
	uint64_t next_cookie;
	size_t n_registered, n_idle;
	uint64_t bytes_registered;

	atomic_bool broken;	/* monitor failed: caching is off for good */
	atomic_bool child;	/* forked child: pass through */
};

static uint64_t key_hash(const struct cache_key *k)
{
	uint64_t h = mix64((uintptr_t)k->pd);

	h = mix64(h ^ k->addr);
	h = mix64(h ^ k->length);
	h = mix64(h ^ k->iova);
	return mix64(h ^ k->access);
}

static bool key_equal(const struct cache_key *a, const struct cache_key *b)
{
	return a->pd == b->pd && a->addr == b->addr &&
	       a->length == b->length && a->iova == b->iova &&
	       a->access == b->access;
}

static struct entry *find_by_key(struct cache *c, const struct cache_key *k)
{
	uint64_t h = key_hash(k);

	for (struct hlink *l = *htab_bucket(&c->by_key, h); l; l = l->next) {
		struct entry *e = container_of(l, struct entry, by_key);

		if (l->hash == h && key_equal(&e->key, k))
			return e;
	}
	return NULL;
}

static struct entry *find_by_mr(struct cache *c, void *mr)
{
	uint64_t h = mix64((uintptr_t)mr);

	for (struct hlink *l = *htab_bucket(&c->by_mr, h); l; l = l->next) {
		struct entry *e = container_of(l, struct entry, by_mr);

		if (e->mr == mr)
			return e;
	}
	return NULL;
}

static struct entry *find_by_cookie(struct cache *c, uint64_t cookie)
{
	uint64_t h = mix64(cookie);

	for (struct hlink *l = *htab_bucket(&c->by_cookie, h); l;
	     l = l->next) {
		struct entry *e = container_of(l, struct entry, by_cookie);

		if (e->cookie == cookie)
			return e;
	}
	return NULL;
}

/* Make @e findable by lookups and by the monitor's events. */
static void entry_cache(struct cache *c, struct entry *e, void **garbage)
{
	htab_insert(&c->by_key, &e->by_key, key_hash(&e->key), &garbage[0]);
	htab_insert(&c->by_cookie, &e->by_cookie, mix64(e->cookie),
		    &garbage[1]);
	e->cached = true;
}

/* Never return @e again; a registered @e is released at its last deref. */
static void entry_uncache(struct cache *c, struct entry *e)
{
	if (!e->cached)
		return;
	htab_remove(&c->by_key, &e->by_key);
	htab_remove(&c->by_cookie, &e->by_cookie);
	e->cached = false;
	if (e->in_lru) {
		list_del(&e->lru);
		e->in_lru = false;
		c->n_idle--;
	}
}

static void entry_set_registered(struct cache *c, struct entry *e, void *mr,
				 void **garbage)
{
	e->mr = mr;
	htab_insert(&c->by_mr, &e->by_mr, mix64((uintptr_t)mr), garbage);
	e->registered = true;
	c->n_registered++;
	c->bytes_registered += e->key.length;
	stats_pin(c->stats, e->key.length);
}

static void entry_clear_registered(struct cache *c, struct entry *e)
{
	if (!e->registered)
		return;
	htab_remove(&c->by_mr, &e->by_mr);
	e->registered = false;
	c->n_registered--;
	c->bytes_registered -= e->key.length;
	stats_unpin(c->stats, e->key.length);
}

/*
 * Unlink @e from everything and queue it on @victims; release_victims()
 * then deregisters it (if @dereg) and frees it outside the locks.
 */
static void entry_retire(struct cache *c, struct entry *e,
			 struct entry **victims)
{
	entry_uncache(c, e);
	list_del(&e->all);
	e->next_victim = *victims;
	*victims = e;
}

/* ---- monitor calls (under mon_lock) ------------------------------------ */

static int monitor_watch(struct cache *c, struct entry *e)
{
	uintptr_t start = e->key.addr & ~c->page_mask;
	uintptr_t end = (e->key.addr + e->key.length + c->page_mask) &
			~c->page_mask;
	int rc;

	if (end <= start)	/* wraps around: cannot be watched */
		return -EINVAL;
	pthread_mutex_lock(&c->mon_lock);
	rc = c->mon->ops->watch(c->mon, e->cookie, start, end);
	pthread_mutex_unlock(&c->mon_lock);
	return rc;
}

static void monitor_unwatch(struct cache *c, struct entry *e)
{
	if (!e->watched)
		return;
	pthread_mutex_lock(&c->mon_lock);
	c->mon->ops->unwatch(c->mon, e->cookie);
	pthread_mutex_unlock(&c->mon_lock);
	e->watched = false;
}

/* ---- releasing registrations (no locks held) --------------------------- */

static int real_dereg(struct cache *c, struct entry *e)
{
	int rc = c->ops.dereg(c->ops.arg, e->mr);

	if (rc)
		log_warn("deregistering cached MR %p [%#" PRIxPTR ", +%zu) failed: %s",
			 e->mr, e->key.addr, e->key.length, strerror(rc));
	return rc;
}

/* Deregister (after the monitor stopped caring), unwatch and free. */
static void release_victims(struct cache *c, struct entry *victims)
{
	while (victims) {
		struct entry *e = victims;

		victims = e->next_victim;
		if (e->mr)
			real_dereg(c, e);
		monitor_unwatch(c, e);
		free(e);
	}
}

static void free_garbage(void **garbage, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(garbage[i]);
}

/* ---- limits ------------------------------------------------------------ */

static bool over_limits(const struct cache *c)
{
	return c->n_registered > c->limits.max_entries ||
	       c->bytes_registered > c->limits.max_bytes;
}

/* Evict idle entries, least recently used first, until within limits. */
static void enforce_limits(struct cache *c, struct entry **victims)
{
	while (over_limits(c) && !list_empty(&c->lru)) {
		struct entry *e = container_of(c->lru.prev, struct entry, lru);

		log_debug("evict mr=%p addr=%#" PRIxPTR " len=%zu", e->mr,
			  e->key.addr, e->key.length);
		entry_clear_registered(c, e);
		entry_retire(c, e, victims);
		stats_inc(&c->stats->evictions);
	}
}

/* Release every idle entry (memory pressure). */
static void evict_all_idle(struct cache *c, struct entry **victims)
{
	while (!list_empty(&c->lru)) {
		struct entry *e = container_of(c->lru.prev, struct entry, lru);

		entry_clear_registered(c, e);
		entry_retire(c, e, victims);
		stats_inc(&c->stats->evictions);
	}
}

/* ---- invalidation ------------------------------------------------------ */

struct drain_ctx {
	struct cache *c;
	struct entry *victims;
};

static void invalidate_entry(struct cache *c, struct entry *e,
			     struct entry **victims)
{
	if (!e->cached)
		return;
	stats_inc(&c->stats->invalidations);
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
	} else if (e->refs == 0) {
		log_debug("invalidate idle mr=%p addr=%#" PRIxPTR " len=%zu",
			  e->mr, e->key.addr, e->key.length);
		entry_clear_registered(c, e);
		entry_retire(c, e, victims);
	} else {
		entry_uncache(c, e);
		stats_inc(&c->stats->stale);
		log_warn("memory behind MR %p [%#" PRIxPTR ", %#" PRIxPTR
			 ") changed while the application still uses the MR; it is no longer cached and is deregistered at its last ibv_dereg_mr",
			 e->mr, e->key.addr, e->key.addr + e->key.length);
	}
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
	pthread_mutex_lock(&c->lock);
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
	pthread_mutex_unlock(&c->lock);
}

/* The monitor failed: stop caching and let go of everything idle. */
static void cache_break(struct cache *c, int err, struct entry **victims)
{
	log_warn("invalidation monitor '%s' failed (%s): caching disabled, all calls pass through from now on",
		 c->mon->ops->name, strerror(-err));
	pthread_mutex_lock(&c->lock);
	atomic_store(&c->broken, true);
	for (struct list *l = c->all.next, *n; l != &c->all; l = n) {
		struct entry *e = container_of(l, struct entry, all);

		n = l->next;
		if (!e->cached)
			continue;
		if (e->pending) {
			e->inval_pending = true;
		} else if (e->refs == 0) {
			entry_clear_registered(c, e);
			entry_retire(c, e, victims);
		} else {
			entry_uncache(c, e);
		}
	}
	pthread_mutex_unlock(&c->lock);
}

/*
 * Apply every invalidation reported so far.  The common case costs one
 * load of the monitor's counter.  A thread that sees a change waits for
 * mon_lock even if another thread is already draining: it must not look
 * up entries before the invalidations it could observe are applied.
 */
static void cache_sync(struct cache *c)
{
	struct drain_ctx d = { .c = c, .victims = NULL };

	if (!c->mon->ops->changed(c->mon))
		return;
	pthread_mutex_lock(&c->mon_lock);
	if (!atomic_load(&c->broken) && c->mon->ops->changed(c->mon)) {
		int rc = c->mon->ops->drain(c->mon, on_invalidate, &d);

		if (rc < 0)
			cache_break(c, rc, &d.victims);
	}
	pthread_mutex_unlock(&c->mon_lock);
	release_victims(c, d.victims);
}

/* ---- public API --------------------------------------------------------- */

struct cache *cache_create(const struct cache_ops *ops, struct monitor *mon,
			   const struct cache_limits *limits,
			   struct shim_stats *stats)
{
	struct cache *c = calloc(1, sizeof(*c));
	long page = sysconf(_SC_PAGESIZE);

	if (!c)
		return NULL;
	if (htab_init(&c->by_key) || htab_init(&c->by_mr) ||
	    htab_init(&c->by_cookie)) {
		free(c->by_key.buckets);
		free(c->by_mr.buckets);
		free(c->by_cookie.buckets);
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->mon_lock, NULL);
	pthread_cond_init(&c->pending_done, NULL);
	c->ops = *ops;
	c->mon = mon;
	c->limits = *limits;
	c->stats = stats;
	c->page_mask = (uintptr_t)(page > 0 ? page : 4096) - 1;
	list_init(&c->all);
	list_init(&c->lru);
	c->next_cookie = 1;
	return c;
}

void cache_destroy(struct cache *c)
{
	struct entry *idle = NULL, *rest = NULL;

	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	while (!list_empty(&c->all)) {
		struct entry *e = container_of(c->all.next, struct entry, all);
		bool idle_mr = e->registered && e->refs == 0 &&
			       !atomic_load(&c->child);

		entry_clear_registered(c, e);
		entry_retire(c, e, idle_mr ? &idle : &rest);
	}
	pthread_mutex_unlock(&c->lock);
	release_victims(c, idle);
	for (struct entry *e = rest, *n; e; e = n) {
		n = e->next_victim;
		if (!atomic_load(&c->child))
			monitor_unwatch(c, e);
		free(e);
	}
	free(c->by_key.buckets);
	free(c->by_mr.buckets);
	free(c->by_cookie.buckets);
	pthread_cond_destroy(&c->pending_done);
	pthread_mutex_destroy(&c->mon_lock);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static void *passthrough_reg(struct cache *c, const struct cache_key *key,
			     int how)
{
	void *mr;

	stats_inc(&c->stats->passthrough);
	mr = c->ops.reg(c->ops.arg, key, how);
	log_debug("reg (not cached) mr=%p addr=%#" PRIxPTR " len=%zu", mr,
		  key->addr, key->length);
	return mr;
}

/* Drop a pending entry whose registration will not be cached. */
static void abandon_pending(struct cache *c, struct entry *e)
{
	pthread_mutex_lock(&c->lock);
	entry_uncache(c, e);
	list_del(&e->all);
	pthread_cond_broadcast(&c->pending_done);
	pthread_mutex_unlock(&c->lock);
}

/* Real registration; on ENOMEM retry once after releasing idle MRs. */
static void *reg_with_retry(struct cache *c, const struct cache_key *key,
			    int how)
{
	struct entry *victims = NULL;
	void *mr = c->ops.reg(c->ops.arg, key, how);

	if (mr || errno != ENOMEM)
		return mr;
	pthread_mutex_lock(&c->lock);
	evict_all_idle(c, &victims);
	pthread_mutex_unlock(&c->lock);
	if (!victims) {
		errno = ENOMEM;
		return NULL;
	}
	log_info("registration of %zu bytes failed with ENOMEM; released idle cached MRs and retrying",
		 key->length);
	release_victims(c, victims);
	return c->ops.reg(c->ops.arg, key, how);
}

/* Register for the pending entry @e created by cache_reg(). */
static void *miss_register(struct cache *c, struct entry *e, int how)
{
	struct entry *victims = NULL;
	struct cache_key key;
	void *garbage = NULL;
	bool uncached;
	void *mr;
	int rc, err;

	/* Watch first, so that an invalidation racing with the pinning is seen. */
	rc = monitor_watch(c, e);
	if (rc < 0) {
		log_debug("cannot watch [%#" PRIxPTR ", +%zu): %s; not cached",
			  e->key.addr, e->key.length, strerror(-rc));
		key = e->key;
		abandon_pending(c, e);
		free(e);
		return passthrough_reg(c, &key, how);
	}
	e->watched = true;
	stats_inc(&c->stats->misses);

	mr = reg_with_retry(c, &e->key, how);
	if (!mr) {
		err = errno;
		abandon_pending(c, e);
		monitor_unwatch(c, e);
		free(e);
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
	pthread_mutex_lock(&c->lock);
	e->pending = false;
	e->refs = 1;
	entry_set_registered(c, e, mr, &garbage);
	uncached = e->inval_pending;
	if (uncached)
		entry_uncache(c, e);
	enforce_limits(c, &victims);
	pthread_cond_broadcast(&c->pending_done);
	pthread_mutex_unlock(&c->lock);

	log_debug("miss mr=%p addr=%#" PRIxPTR " len=%zu access=%#x%s", mr,
		  key.addr, key.length, key.access,
		  uncached ? " (invalidated while registering: not cached)" : "");
	free(garbage);
	release_victims(c, victims);
	return mr;
}

/* Take a reference on the ready entry @e (under c->lock). */
static void entry_get(struct cache *c, struct entry *e)
{
	if (e->refs++ == 0) {
		list_del(&e->lru);
		e->in_lru = false;
		c->n_idle--;
	}
}

void *cache_reg(struct cache *c, const struct cache_key *key, void *dev_ctx,
		int how)
{
	void *garbage[2] = { NULL, NULL };
	struct entry *e, *fresh = NULL;

	if (atomic_load(&c->child) || atomic_load(&c->broken))
		return passthrough_reg(c, key, how);
	cache_sync(c);

	pthread_mutex_lock(&c->lock);
	for (;;) {
		if (atomic_load(&c->broken))
			goto unlock_passthrough;
		e = find_by_key(c, key);
		if (e && !e->pending) {
			void *mr = e->mr;

			entry_get(c, e);
			pthread_mutex_unlock(&c->lock);
			stats_inc(&c->stats->hits);
			log_debug("hit mr=%p addr=%#" PRIxPTR " len=%zu", mr,
				  key->addr, key->length);
			free(fresh);
			return mr;
		}
		if (e) {
			/* Another thread is registering this key: wait for it. */
			pthread_cond_wait(&c->pending_done, &c->lock);
			continue;
		}
		if (fresh)
			break;
		/* A miss: allocate outside the lock, then look again. */
		pthread_mutex_unlock(&c->lock);
		fresh = calloc(1, sizeof(*fresh));
		if (!fresh)
			return passthrough_reg(c, key, how);
		pthread_mutex_lock(&c->lock);
	}
	e = fresh;
	e->key = *key;
	e->ctx = dev_ctx;
	e->cookie = c->next_cookie++;
	e->pending = true;
	list_init(&e->lru);
	list_add_head(&c->all, &e->all);
	entry_cache(c, e, garbage);
	pthread_mutex_unlock(&c->lock);
	free_garbage(garbage, 2);
	return miss_register(c, e, how);

unlock_passthrough:
	pthread_mutex_unlock(&c->lock);
	free(fresh);
	return passthrough_reg(c, key, how);
}

int cache_dereg(struct cache *c, void *mr)
{
	struct entry *victims = NULL;
	struct entry *e;
	int rc;

	pthread_mutex_lock(&c->lock);
	e = find_by_mr(c, mr);
	if (!e) {
		pthread_mutex_unlock(&c->lock);
		rc = c->ops.dereg(c->ops.arg, mr);
		log_debug("dereg (not cached) mr=%p rc=%d", mr, rc);
		return rc;
	}
	if (atomic_load(&c->child)) {
		/* The parent's registration: never touch it from here. */
		if (e->refs)
			e->refs--;
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	if (e->refs == 0) {
		pthread_mutex_unlock(&c->lock);
		log_warn("ibv_dereg_mr(%p): MR already deregistered by the application; ignored",
			 mr);
		return EINVAL;
	}
	if (--e->refs > 0) {
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	if (e->cached) {
		/* Lazy deregistration: keep it for the next lookup. */
		list_add_head(&c->lru, &e->lru);
		e->in_lru = true;
		c->n_idle++;
		enforce_limits(c, &victims);
		pthread_mutex_unlock(&c->lock);
		log_debug("dereg (kept) mr=%p", mr);
		release_victims(c, victims);
		return 0;
	}
	/* Stale or detached: it goes now. */
	entry_clear_registered(c, e);
	list_del(&e->all);
	pthread_mutex_unlock(&c->lock);
	log_debug("dereg (released) mr=%p", mr);
	rc = real_dereg(c, e);
	monitor_unwatch(c, e);
	free(e);
	return rc;
}

/* Retire the idle entries for which @match is true. */
static void release_matching(struct cache *c, void *what,
			     bool (*match)(const struct entry *, void *))
{
	struct entry *victims = NULL;

	if (atomic_load(&c->child))
		return;
	pthread_mutex_lock(&c->lock);
	for (struct list *l = c->lru.next, *n; l != &c->lru; l = n) {
		struct entry *e = container_of(l, struct entry, lru);

		n = l->next;
		if (match(e, what)) {
			entry_clear_registered(c, e);
			entry_retire(c, e, &victims);
		}
	}
	pthread_mutex_unlock(&c->lock);
	release_victims(c, victims);
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
	release_matching(c, pd, match_pd);
}

void cache_release_ctx(struct cache *c, void *dev_ctx)
{
	release_matching(c, dev_ctx, match_ctx);
}

void cache_forget_ctx(struct cache *c, void *dev_ctx)
{
	struct entry *gone = NULL;

	if (atomic_load(&c->child))
		return;
	pthread_mutex_lock(&c->lock);
	for (struct list *l = c->all.next, *n; l != &c->all; l = n) {
		struct entry *e = container_of(l, struct entry, all);

		n = l->next;
		if (e->ctx == dev_ctx && !e->pending) {
			entry_clear_registered(c, e);
			entry_retire(c, e, &gone);
		}
	}
	pthread_mutex_unlock(&c->lock);
	/* The device is closed: its MRs are gone with it, only unwatch. */
	for (struct entry *e = gone, *n; e; e = n) {
		n = e->next_victim;
		monitor_unwatch(c, e);
		free(e);
	}
}

void cache_detach(struct cache *c, void *mr)
{
	struct entry *e;

	if (atomic_load(&c->child))
		return;
	pthread_mutex_lock(&c->lock);
	e = find_by_mr(c, mr);
	if (e && e->cached) {
		if (e->refs == 0)
			e->refs = 1;	/* the caller is using it again */
		else if (e->refs > 1)
			log_warn("ibv_rereg_mr(%p): MR is shared by %lu cached registrations; all of them see the change",
				 mr, e->refs);
		entry_uncache(c, e);
	}
	pthread_mutex_unlock(&c->lock);
}

void cache_fork_prepare(struct cache *c)
{
	pthread_mutex_lock(&c->mon_lock);
	pthread_mutex_lock(&c->lock);
}

void cache_fork_parent(struct cache *c)
{
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_unlock(&c->mon_lock);
}

void cache_fork_child(struct cache *c)
{
	atomic_store(&c->child, true);
	/* The forking thread took both in prepare; it is the one left. */
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_unlock(&c->mon_lock);
}

bool cache_is_broken(struct cache *c)
{
	return atomic_load(&c->broken);
}

size_t cache_registered_count(struct cache *c)
{
	size_t n;

	pthread_mutex_lock(&c->lock);
	n = c->n_registered;
	pthread_mutex_unlock(&c->lock);
	return n;
}

size_t cache_idle_count(struct cache *c)
{
	size_t n;

	pthread_mutex_lock(&c->lock);
	n = c->n_idle;
	pthread_mutex_unlock(&c->lock);
	return n;
}
