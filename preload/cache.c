// SPDX-License-Identifier: BSD-2-Clause
/*
 * Registration cache: see cache.h for the semantics and the locking rules.
 *
 * An entry lives in up to three hash indexes and two lists:
 *  - by_key and by_cookie while it is "cached" (a lookup may return it);
 *  - by_mr while it holds a real registration (so ibv_dereg_mr finds it);
 *  - the "all" list for its whole life (scans by pd/context/range);
 *  - the clock list ("lru") while it is cached and registered, busy or
 *    idle: eviction skips busy entries and gives recently hit ones a
 *    second chance, so hits and derefs never touch a shared list.
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

static bool htab_crowded(const struct htab *t)
{
	return t->count >= t->nbuckets * 2;
}

static void htab_insert(struct htab *t, struct hlink *l, uint64_t hash)
{
	struct hlink **b;

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
	atomic_ulong refs;	/* application references */
	atomic_bool referenced;	/* hit since the clock hand last passed */
	unsigned int kstripe;	/* lock stripe of key (by_key) */
	unsigned int mstripe;	/* lock stripe of mr (by_mr), once registered */

	bool pending;		/* real registration in progress */
	bool cached;		/* in by_key/by_cookie: lookups may return it */
	bool registered;	/* in by_mr: holds a real registration */
	bool watched;		/* the monitor watches it */
	bool in_lru;		/* in the clock list (cached and registered) */
	bool inval_pending;	/* invalidated while being registered */

	struct hlink by_key, by_mr, by_cookie;
	struct list all, lru;
	struct entry *next_victim;
};

/*
 * Lock stripes: the hit path (a lookup by key) and the dereg path (a
 * lookup by MR) take only the stripe of the hash they look up, so threads
 * using different entries share no lock.  Padded so that two stripes
 * never share a cache line.
 */
#define N_STRIPES 64
#define STRIPE_MASK (N_STRIPES - 1)

struct stripe {
	pthread_mutex_t lock;
	char pad[64];
};

struct cache {
	pthread_mutex_t lock;		/* structure: indexes, lists, counters */
	pthread_mutex_t mon_lock;	/* serialises monitor calls */
	pthread_cond_t pending_done;	/* a pending entry was resolved */
	struct stripe stripes[N_STRIPES];

	struct cache_ops ops;
	struct monitor *mon;
	struct cache_limits limits;
	struct shim_stats *stats;
	uintptr_t page_mask;

	struct htab by_key, by_mr, by_cookie;
	struct list all, lru;	/* lru: the clock list */
	size_t n_clock;
	uint64_t next_cookie;
	/* Written under lock; read without it by the dereg fast path. */
	atomic_size_t n_registered;
	_Atomic uint64_t bytes_registered;

	atomic_bool broken;	/* monitor failed: caching is off for good */
	atomic_bool child;	/* forked child: pass through */
	pid_t owner;		/* the process that created the cache */
};

/*
 * Lock helpers.  While a thread holds c->lock or c->mon_lock, its log
 * lines are held back (log_hold()) and written when it lets go of the
 * last one, so a stalled log destination (a full stderr pipe) can never
 * stall other threads' registrations.
 */
static void lock_cache(struct cache *c)
{
	log_hold();
	pthread_mutex_lock(&c->lock);
}

static void unlock_cache(struct cache *c)
{
	pthread_mutex_unlock(&c->lock);
	log_release();
}

static void lock_mon(struct cache *c)
{
	log_hold();
	pthread_mutex_lock(&c->mon_lock);
}

static void unlock_mon(struct cache *c)
{
	pthread_mutex_unlock(&c->mon_lock);
	log_release();
}

/*
 * Thread cancellation is disabled on every slow path (from before it can
 * take a lock, own a pending entry or queue victims, until it has let go
 * of all of them), so that a pthread_cancel() acting at a cancellation
 * point inside (a log write, the real registration's system calls, a
 * monitor read, pthread_cond_wait) can never leave a lock held, a pending
 * entry behind (every later lookup of that key would wait forever) or
 * registrations unreleased.  The fast paths hold one stripe lock across
 * no cancellation point and need no such protection, so they do not pay
 * for it.  A pending cancel acts at the caller's next cancellation point.
 */
static int nocancel_begin(void)
{
	int old = PTHREAD_CANCEL_ENABLE;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	return old;
}

static void nocancel_end(int old)
{
	pthread_setcancelstate(old, NULL);	/* keeps errno */
}

/*
 * Whether this process is a child of the one that created the cache.  A
 * child made without the fork handlers (syscall(SYS_fork), clone) is
 * caught here, on the slow paths: it then passes through for good and
 * never deregisters, unwatches or drains anything (the MRs and the
 * monitor's descriptor belong to the parent).  getpid() is a system call,
 * so the hit path does not ask.
 */
static bool in_child(struct cache *c)
{
	if (atomic_load(&c->child))
		return true;
	if (getpid() == c->owner)
		return false;
	atomic_store(&c->child, true);
	return true;
}

static uint64_t key_hash(const struct cache_key *k)
{
	uint64_t h = mix64((uintptr_t)k->pd);

	h = mix64(h ^ k->addr);
	h = mix64(h ^ k->length);
	h = mix64(h ^ k->iova);
	return mix64(h ^ k->access);
}

static uint64_t mr_hash(const void *mr)
{
	return mix64((uintptr_t)mr);
}

static bool key_equal(const struct cache_key *a, const struct cache_key *b)
{
	return a->pd == b->pd && a->addr == b->addr &&
	       a->length == b->length && a->iova == b->iova &&
	       a->access == b->access;
}

/*
 * Lookups by key and by MR: under c->lock, or under the stripe of @h
 * alone (every change of a bucket holds that bucket's stripe: the stripe
 * is the hash's low bits, and a table has at least N_STRIPES buckets).
 */
static struct entry *find_by_key_h(struct cache *c, const struct cache_key *k,
				   uint64_t h)
{
	for (struct hlink *l = *htab_bucket(&c->by_key, h); l; l = l->next) {
		struct entry *e = container_of(l, struct entry, by_key);

		if (l->hash == h && key_equal(&e->key, k))
			return e;
	}
	return NULL;
}

static struct entry *find_by_key(struct cache *c, const struct cache_key *k)
{
	return find_by_key_h(c, k, key_hash(k));
}

static struct entry *find_by_mr_h(struct cache *c, void *mr, uint64_t h)
{
	for (struct hlink *l = *htab_bucket(&c->by_mr, h); l; l = l->next) {
		struct entry *e = container_of(l, struct entry, by_mr);

		if (e->mr == mr)
			return e;
	}
	return NULL;
}

static struct entry *find_by_mr(struct cache *c, void *mr)
{
	return find_by_mr_h(c, mr, mr_hash(mr));
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

/* ---- stripes -------------------------------------------------------------- */

static void stripe_lock(struct cache *c, unsigned int i)
{
	pthread_mutex_lock(&c->stripes[i].lock);
}

static void stripe_unlock(struct cache *c, unsigned int i)
{
	pthread_mutex_unlock(&c->stripes[i].lock);
}

/*
 * The stripes an entry's state depends on: its key's (by_key, cached,
 * pending; hits take references under it) and, while it is registered,
 * its MR's (by_mr; the dereg fast path drops references under it).
 * Taken under c->lock only, so a thread holding two stripes is the one
 * c->lock holder and the fast paths hold one: no deadlock.  Two stripes
 * are still taken in index order (as fork preparation takes them all),
 * which keeps lock-order checkers quiet.
 */
struct elock {
	int a, b;	/* stripe indexes, a < b; -1: none */
};

static struct elock stripes_lock2(struct cache *c, unsigned int x,
				  unsigned int y)
{
	struct elock l = { (int)(x < y ? x : y), x == y ? -1 : (int)(x < y ? y : x) };

	stripe_lock(c, (unsigned int)l.a);
	if (l.b >= 0)
		stripe_lock(c, (unsigned int)l.b);
	return l;
}

static struct elock entry_lock(struct cache *c, const struct entry *e)
{
	return stripes_lock2(c, e->kstripe,
			     e->registered ? e->mstripe : e->kstripe);
}

static void entry_unlock(struct cache *c, struct elock l)
{
	if (l.b >= 0)
		stripe_unlock(c, (unsigned int)l.b);
	stripe_unlock(c, (unsigned int)l.a);
}

/*
 * Double a striped table when it is crowded (under c->lock, no stripe
 * held): every stripe is taken, so no fast path is inside it.
 */
static void grow_striped(struct cache *c, struct htab *t, void **garbage)
{
	if (!htab_crowded(t) || *garbage)
		return;
	for (unsigned int i = 0; i < N_STRIPES; i++)
		stripe_lock(c, i);
	htab_maybe_grow(t, garbage);
	for (unsigned int i = N_STRIPES; i-- > 0;)
		stripe_unlock(c, i);
}

/* ---- entry state (under c->lock and the entry's stripes) ----------------- */

/* Make @e findable by lookups and by the monitor's events. */
static void entry_cache(struct cache *c, struct entry *e)
{
	htab_insert(&c->by_key, &e->by_key, key_hash(&e->key));
	htab_insert(&c->by_cookie, &e->by_cookie, mix64(e->cookie));
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
		c->n_clock--;
	}
}

/* Under c->lock and the stripes of the key and of @mr. */
static void entry_set_registered(struct cache *c, struct entry *e, void *mr)
{
	e->mr = mr;
	htab_insert(&c->by_mr, &e->by_mr, mr_hash(mr));
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

/* Stop caching the idle @e and queue it for deregistration (locks held). */
static void entry_evict(struct cache *c, struct entry *e,
			struct entry **victims)
{
	entry_clear_registered(c, e);
	entry_retire(c, e, victims);
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
	lock_mon(c);
	rc = c->mon->ops->watch(c->mon, e->cookie, start, end);
	unlock_mon(c);
	return rc;
}

static void monitor_unwatch(struct cache *c, struct entry *e)
{
	if (!e->watched)
		return;
	lock_mon(c);
	c->mon->ops->unwatch(c->mon, e->cookie);
	unlock_mon(c);
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
	bool child;

	if (!victims)
		return;
	child = in_child(c);	/* then: the parent's MRs, never touched */
	while (victims) {
		struct entry *e = victims;

		victims = e->next_victim;
		if (!child) {
			if (e->mr)
				real_dereg(c, e);
			monitor_unwatch(c, e);
		}
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
/*
 * Evict idle entries until within limits, by the clock algorithm (an
 * approximation of least recently used that needs no list update on the
 * hit path): the hand starts at the oldest entry of the clock list; a
 * busy entry, or one hit since the hand last passed (its referenced bit
 * is cleared), moves to the head; the first idle unreferenced one goes.
 * Two rounds at most.
 */
static void enforce_limits(struct cache *c, struct entry **victims)
{
	size_t budget = 2 * c->n_clock + 1;

	while (over_limits(c) && !list_empty(&c->lru) && budget-- > 0) {
		struct entry *e = container_of(c->lru.prev, struct entry, lru);
		struct elock l = entry_lock(c, e);
		bool keep = atomic_load(&e->refs) > 0 ||
			    atomic_exchange(&e->referenced, false);

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
		if (atomic_load(&e->refs) == 0) {
			entry_evict(c, e, victims);
			if (evictions)
				stats_inc(&c->stats->evictions);
		}
		entry_unlock(c, el);
	}
}

/* Release every idle entry (memory pressure). */
static void evict_all_idle(struct cache *c, struct entry **victims)
{
	evict_idle_matching(c, victims, NULL, NULL, true);
}

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
static void cache_sync(struct cache *c)
{
	struct drain_ctx d = { .c = c, .victims = NULL };

	if (!c->mon->ops->changed(c->mon) || in_child(c))
		return;
	lock_mon(c);
	if (!atomic_load(&c->broken) && c->mon->ops->changed(c->mon)) {
		int rc = c->mon->ops->drain(c->mon, on_invalidate, &d);

		/*
		 * A monitor used from a forked child fails (ECHILD from the
		 * uffd monitor, EIO from /dev/ummunot, whose events belong
		 * to the parent's mm): that is a fork, not a broken monitor.
		 */
		if (rc < 0 && (rc == -ECHILD || in_child(c)))
			atomic_store(&c->child, true);
		else if (rc < 0)
			cache_break(c, rc, &d.victims);
	}
	unlock_mon(c);
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
	for (unsigned int i = 0; i < N_STRIPES; i++)
		pthread_mutex_init(&c->stripes[i].lock, NULL);
	c->ops = *ops;
	c->mon = mon;
	c->limits = *limits;
	c->stats = stats;
	c->page_mask = (uintptr_t)(page > 0 ? page : 4096) - 1;
	list_init(&c->all);
	list_init(&c->lru);
	c->next_cookie = 1;
	c->owner = getpid();
	return c;
}

void cache_destroy(struct cache *c)
{
	struct entry *idle = NULL, *rest = NULL;

	if (!c)
		return;
	(void)in_child(c);
	lock_cache(c);
	while (!list_empty(&c->all)) {
		struct entry *e = container_of(c->all.next, struct entry, all);
		struct elock l = entry_lock(c, e);
		bool idle_mr = e->registered && atomic_load(&e->refs) == 0 &&
			       !atomic_load(&c->child);

		entry_clear_registered(c, e);
		entry_retire(c, e, idle_mr ? &idle : &rest);
		entry_unlock(c, l);
	}
	unlock_cache(c);
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
	for (unsigned int i = 0; i < N_STRIPES; i++)
		pthread_mutex_destroy(&c->stripes[i].lock);
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
	struct elock l;

	lock_cache(c);
	l = entry_lock(c, e);
	entry_uncache(c, e);
	entry_unlock(c, l);
	list_del(&e->all);
	pthread_cond_broadcast(&c->pending_done);
	unlock_cache(c);
}

/* Real registration; on ENOMEM retry once after releasing idle MRs. */
static void *reg_with_retry(struct cache *c, const struct cache_key *key,
			    int how)
{
	struct entry *victims = NULL;
	void *mr = c->ops.reg(c->ops.arg, key, how);

	if (mr || errno != ENOMEM)
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

/* Register for the pending entry @e created by cache_reg(). */
static void *miss_register(struct cache *c, struct entry *e, int how)
{
	struct entry *victims = NULL;
	struct cache_key key;
	void *garbage = NULL;
	struct elock l;
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
	lock_cache(c);
	grow_striped(c, &c->by_mr, &garbage);
	e->mstripe = (unsigned int)(mr_hash(mr) & STRIPE_MASK);
	l = stripes_lock2(c, e->kstripe, e->mstripe);
	atomic_store(&e->refs, 1);
	entry_set_registered(c, e, mr);
	e->pending = false;
	uncached = e->inval_pending;
	if (uncached) {
		entry_uncache(c, e);
	} else {
		list_add_head(&c->lru, &e->lru);	/* the clock list */
		e->in_lru = true;
		c->n_clock++;
	}
	entry_unlock(c, l);
	enforce_limits(c, &victims);
	pthread_cond_broadcast(&c->pending_done);
	unlock_cache(c);

	log_debug("miss mr=%p addr=%#" PRIxPTR " len=%zu access=%#x%s", mr,
		  key.addr, key.length, key.access,
		  uncached ? " (invalidated while registering: not cached)" : "");
	free(garbage);
	release_victims(c, victims);
	return mr;
}

/*
 * The hit path: look @key up under its stripe alone and take a reference
 * on a ready entry.  NULL: not a plain hit (absent or being registered),
 * take the slow path.  A ready entry in by_key is registered: it leaves
 * by_key (under this stripe) before it stops being registered.
 */
static void *try_hit(struct cache *c, const struct cache_key *key)
{
	uint64_t h = key_hash(key);
	unsigned int st = (unsigned int)(h & STRIPE_MASK);
	struct entry *e;
	void *mr = NULL;

	stripe_lock(c, st);
	e = find_by_key_h(c, key, h);
	if (e && !e->pending) {
		atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
		if (!atomic_load_explicit(&e->referenced, memory_order_relaxed))
			atomic_store_explicit(&e->referenced, true,
					      memory_order_relaxed);
		mr = e->mr;
	}
	stripe_unlock(c, st);
	if (mr) {
		stats_hit(c->stats, st);
		if (log_enabled(LOG_LEVEL_DEBUG)) {
			int old = nocancel_begin();	/* the reference is ours */

			log_debug("hit mr=%p addr=%#" PRIxPTR " len=%zu", mr,
				  key->addr, key->length);
			nocancel_end(old);
		}
	}
	return mr;
}

static void *reg_slow(struct cache *c, const struct cache_key *key,
		      void *dev_ctx, int how)
{
	void *garbage[2] = { NULL, NULL };
	struct entry *e, *fresh = NULL;
	void *mr;

	/* A failed check queues the range for the drain in cache_sync(). */
	(void)monitor_check(c->mon, key->addr, key->addr + key->length);
	cache_sync(c);
	mr = try_hit(c, key);
	if (mr)
		return mr;

	lock_cache(c);
	for (;;) {
		if (atomic_load(&c->broken))
			goto unlock_passthrough;
		e = find_by_key(c, key);
		if (e && !e->pending) {
			/* Became ready meanwhile: a hit (c->lock keeps it). */
			unsigned int st = e->kstripe;

			stripe_lock(c, st);
			atomic_fetch_add(&e->refs, 1);
			atomic_store(&e->referenced, true);
			mr = e->mr;
			stripe_unlock(c, st);
			unlock_cache(c);
			stats_hit(c->stats, st);
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
		unlock_cache(c);
		if (in_child(c))	/* no watch of the parent's monitor */
			return passthrough_reg(c, key, how);
		fresh = calloc(1, sizeof(*fresh));
		if (!fresh)
			return passthrough_reg(c, key, how);
		lock_cache(c);
	}
	e = fresh;
	e->key = *key;
	e->ctx = dev_ctx;
	e->cookie = c->next_cookie++;
	e->kstripe = (unsigned int)(key_hash(key) & STRIPE_MASK);
	e->pending = true;
	list_init(&e->lru);
	list_add_head(&c->all, &e->all);
	grow_striped(c, &c->by_key, &garbage[0]);
	if (htab_crowded(&c->by_cookie))	/* c->lock alone guards it */
		htab_maybe_grow(&c->by_cookie, &garbage[1]);
	stripe_lock(c, e->kstripe);
	entry_cache(c, e);
	stripe_unlock(c, e->kstripe);
	unlock_cache(c);
	free_garbage(garbage, 2);
	return miss_register(c, e, how);

unlock_passthrough:
	unlock_cache(c);
	free(fresh);
	return passthrough_reg(c, key, how);
}

void *cache_reg(struct cache *c, const struct cache_key *key, void *dev_ctx,
		int how)
{
	void *mr;
	int old;

	if (atomic_load(&c->child) || atomic_load(&c->broken))
		return passthrough_reg(c, key, how);
	/* The fast path: nothing to drain, a plain hit. */
	if (monitor_check(c->mon, key->addr, key->addr + key->length)) {
		mr = try_hit(c, key);
		if (mr)
			return mr;
	}
	old = nocancel_begin();
	mr = reg_slow(c, key, dev_ctx, how);
	nocancel_end(old);
	return mr;
}

/*
 * The dereg fast path: drop a reference under the MR's stripe alone.
 * True when done (*@idle: that was the last reference); false when the
 * slow path must decide (not a cached MR, the last reference to an entry
 * that is no longer cached, a double dereg).  References are only added
 * concurrently (hits, under the key's stripe), and "cached" only changes
 * under this stripe too, so the checks hold until the decrement.
 */
static bool try_fast_dereg(struct cache *c, void *mr, bool *idle)
{
	uint64_t h = mr_hash(mr);
	unsigned int st = (unsigned int)(h & STRIPE_MASK);
	struct entry *e;
	bool done = false;

	stripe_lock(c, st);
	e = find_by_mr_h(c, mr, h);
	if (e) {
		unsigned long r = atomic_load(&e->refs);

		if (r > 1 || (r == 1 && e->cached)) {
			*idle = atomic_fetch_sub(&e->refs, 1) == 1;
			done = true;
		}
	}
	stripe_unlock(c, st);
	return done;
}

static int dereg_slow(struct cache *c, void *mr)
{
	struct entry *victims = NULL;
	struct entry *e;
	struct elock l;
	unsigned long r;
	int rc;

	lock_cache(c);
	e = find_by_mr(c, mr);
	if (!e) {
		unlock_cache(c);
		rc = c->ops.dereg(c->ops.arg, mr);
		log_debug("dereg (not cached) mr=%p rc=%d", mr, rc);
		return rc;
	}
	l = entry_lock(c, e);
	r = atomic_load(&e->refs);
	if (atomic_load(&c->child)) {
		/* The parent's registration: never touch it from here. */
		if (r)
			atomic_fetch_sub(&e->refs, 1);
		entry_unlock(c, l);
		unlock_cache(c);
		return 0;
	}
	if (r == 0) {
		entry_unlock(c, l);
		unlock_cache(c);
		log_warn("ibv_dereg_mr(%p): MR already deregistered by the application; ignored",
			 mr);
		return EINVAL;
	}
	if (atomic_fetch_sub(&e->refs, 1) > 1) {
		entry_unlock(c, l);
		unlock_cache(c);
		return 0;
	}
	if (e->cached) {
		/* Lazy deregistration: keep it for the next lookup. */
		entry_unlock(c, l);
		enforce_limits(c, &victims);
		unlock_cache(c);
		log_debug("dereg (kept) mr=%p", mr);
		release_victims(c, victims);
		return 0;
	}
	/* Stale or detached: it goes now. */
	entry_clear_registered(c, e);
	entry_unlock(c, l);
	list_del(&e->all);
	unlock_cache(c);
	log_debug("dereg (released) mr=%p", mr);
	if (in_child(c)) {
		free(e);	/* the parent's MR: never deregistered here */
		return 0;
	}
	rc = real_dereg(c, e);
	monitor_unwatch(c, e);
	free(e);
	return rc;
}

int cache_dereg(struct cache *c, void *mr)
{
	struct entry *victims = NULL;
	bool idle = false;
	int old, rc;

	if (!atomic_load(&c->child) && try_fast_dereg(c, mr, &idle)) {
		if (idle && (log_enabled(LOG_LEVEL_DEBUG) || over_limits(c))) {
			/* Lazy deregistration: kept for the next lookup. */
			old = nocancel_begin();
			log_debug("dereg (kept) mr=%p", mr);
			if (over_limits(c)) {
				lock_cache(c);
				enforce_limits(c, &victims);
				unlock_cache(c);
				release_victims(c, victims);
			}
			nocancel_end(old);
		}
		return 0;
	}
	old = nocancel_begin();
	rc = dereg_slow(c, mr);
	nocancel_end(old);
	return rc;
}

/* Retire the idle entries for which @match is true. */
static void release_matching(struct cache *c, void *what,
			     bool (*match)(const struct entry *, void *))
{
	struct entry *victims = NULL;

	if (in_child(c))
		return;
	lock_cache(c);
	/* Not evictions: the application is letting go of the PD/device. */
	evict_idle_matching(c, &victims, match, what, false);
	unlock_cache(c);
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

	if (in_child(c))
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
		free(e);
	}
}

int cache_detach(struct cache *c, void *mr)
{
	struct entry *e;
	int rc = 0;

	if (in_child(c))
		return 0;
	lock_cache(c);
	e = find_by_mr(c, mr);
	if (e) {
		struct elock l = entry_lock(c, e);

		if (atomic_load(&e->refs) > 1) {
			rc = -EBUSY;	/* other holders keep what they asked for */
		} else if (e->cached) {
			if (atomic_load(&e->refs) == 0)
				atomic_store(&e->refs, 1);	/* in use again */
			entry_uncache(c, e);
		}
		entry_unlock(c, l);
	}
	unlock_cache(c);
	return rc;
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

		n += atomic_load(&e->refs) == 0;
	}
	unlock_cache(c);
	return n;
}
