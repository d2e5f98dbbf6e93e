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
#include "region_index.h"
#include "slice_pool.h"

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

/*
 * An entry's state word: application references (low bits), whether a
 * lookup may take one (USABLE: cached, registered, not pending) and the
 * entry's generation (high half), bumped whenever the entry goes back to
 * the pool.  Taking or dropping a reference is one compare-and-swap that
 * also checks the generation, so a thread that remembered (entry,
 * generation) from an earlier hit can use it without any lock.
 */
#define ST_REFS 0x7fffffffULL
#define ST_USABLE (1ULL << 31)
#define ST_GEN_ONE (1ULL << 32)
#define ST_GEN(s) ((s) & ~(ST_USABLE | ST_REFS))

struct entry {
	_Atomic uint64_t state;	/* first: entry_reset() keeps it */
	struct cache_key key;
	void *ctx;		/* device context of key.pd */
	void *mr;		/* real MR, NULL while pending */
	uint64_t cookie;	/* monitor watch id, unique per cache */
	atomic_bool referenced;	/* hit since the clock hand last passed */
	unsigned int kstripe;	/* lock stripe of key (by_key) */
	unsigned int mstripe;	/* lock stripe of mr (by_mr), once registered */

	bool pending;		/* real registration in progress */
	bool cached;		/* in by_key/by_cookie: lookups may return it */
	bool registered;	/* in by_mr: holds a real registration */
	bool watched;		/* the monitor watches it */
	bool in_lru;		/* in the clock list (cached and registered) */
	bool inval_pending;	/* invalidated while being registered */
	bool region;		/* may serve containment hits once ready */
	bool indexed;		/* in the region index (under c->lock) */

	struct hlink by_key, by_mr, by_cookie;
	struct list all, lru;
	struct entry *next_victim;	/* also: the entry pool's free list */
};

/*
 * What a thread remembers of its last hits: the entry, its generation at
 * the time and its key (a copy: the entry's fields may change once it is
 * retired, the copy and the generation check make that harmless).
 */
#define HOT_SLOTS 4

struct hot_slot {
	struct entry *e;	/* NULL: empty */
	uint64_t gen;
	void *mr;		/* the entry's real MR */
	struct cache_key key;	/* the entry's key */
	bool region;		/* may serve requests inside the key's range */
};

/* One per thread and cache: only that thread touches it while in use. */
struct hot {
	struct hot_slot slot[HOT_SLOTS];
	unsigned int next;		/* slot to replace next */
	unsigned int shard;		/* hit counter shard */
	struct slice_cache slices;	/* the thread's free slice objects */
	struct hot *next_hot;		/* c->hots, under c->lock */
	atomic_bool in_use;		/* a live thread owns it */
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
	uint64_t id;			/* unique per process, for tls_hot */
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

	struct region_index regions;	/* ready regions (under lock) */
	struct slice_pool slices;	/* per-request objects */
	pthread_mutex_t pool_lock;	/* guards free_entries */
	struct entry *free_entries;	/* retired entries, for reuse */
	struct hot *hots;		/* every thread's hot (under lock) */
	unsigned int n_hots;		/* under lock */
	pthread_key_t hot_key;		/* releases a thread's hot at exit */
};

/*
 * Process-wide: a counter that makes each cache's id unique, so that a
 * thread's remembered hot (tls_hot) is never used with another cache
 * that happens to live at a freed one's address (tests make many).
 */
static atomic_uint_fast64_t next_cache_id = 1;

/* This thread's hot for the cache whose id is tls_hot_id. */
static __thread struct hot *tls_hot
	__attribute__((tls_model("initial-exec")));
static __thread uint64_t tls_hot_id
	__attribute__((tls_model("initial-exec")));

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

/* ---- the state word: references without locks -------------------------- */

static unsigned long entry_refs(struct entry *e)
{
	return (unsigned long)(atomic_load(&e->state) & ST_REFS);
}

/*
 * Take a reference on @e if a lookup may use it and, unless @gen is 0
 * (any: the caller holds a lock that keeps @e), it is still incarnation
 * @gen.  Returns the generation taken, or 0 (never a valid generation).
 */
static uint64_t entry_get(struct entry *e, uint64_t gen)
{
	uint64_t s = atomic_load_explicit(&e->state, memory_order_relaxed);

	do {
		if (!(s & ST_USABLE) || (gen && ST_GEN(s) != gen) ||
		    (s & ST_REFS) == ST_REFS)
			return 0;
	} while (!atomic_compare_exchange_weak_explicit(&e->state, &s, s + 1,
							memory_order_acquire,
							memory_order_relaxed));
	return ST_GEN(s);
}

/*
 * Drop a reference on a usable @e of generation @gen without a lock.
 * 0: not done (take the slow path: not usable any more, another
 * generation, no reference to drop); 1: done; 2: done, @e is idle now.
 */
static int entry_put_fast(struct entry *e, uint64_t gen)
{
	uint64_t s = atomic_load_explicit(&e->state, memory_order_relaxed);

	do {
		if (!(s & ST_USABLE) || ST_GEN(s) != gen || !(s & ST_REFS))
			return 0;
	} while (!atomic_compare_exchange_weak_explicit(&e->state, &s, s - 1,
							memory_order_release,
							memory_order_relaxed));
	return ((s - 1) & ST_REFS) ? 1 : 2;
}

/* Idle and usable: make it unusable, so that no hit can take it. */
static bool entry_try_evict(struct entry *e)
{
	uint64_t s = atomic_load(&e->state);

	do {
		if (!(s & ST_USABLE) || (s & ST_REFS))
			return false;
	} while (!atomic_compare_exchange_weak(&e->state, &s, ST_GEN(s)));
	return true;
}

/* No lookup may take @e any more; the references it has stay. */
static void entry_unpublish(struct entry *e)
{
	atomic_fetch_and(&e->state, ~ST_USABLE);
}

/*
 * An invalidation or a failed monitor: an idle @e is made unusable
 * (true: evict it), a busy one only unusable (false: it is released at
 * its last dereg), atomically against lock-free hits and derefs.
 */
static bool entry_drop_if_idle(struct entry *e)
{
	uint64_t s = atomic_load(&e->state);

	for (;;) {
		uint64_t n = (s & ST_REFS) ? (s & ~ST_USABLE) : ST_GEN(s);

		if (atomic_compare_exchange_weak(&e->state, &s, n))
			return !(s & ST_REFS);
	}
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

static struct region_group entry_group(const struct entry *e)
{
	return (struct region_group){ e->key.pd, e->key.access,
				      e->key.iova - e->key.addr };
}

/* Never return @e again; a registered @e is released at its last deref. */
static void entry_uncache(struct cache *c, struct entry *e)
{
	if (!e->cached)
		return;
	entry_unpublish(e);
	if (e->indexed) {
		struct region_group g = entry_group(e);

		region_index_remove(&c->regions, &g, e->key.addr, e);
		e->indexed = false;
	}
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

/* ---- the entry pool ------------------------------------------------------ */

/*
 * Entries are never freed before the cache: a thread may still remember
 * a retired one (struct hot_slot), and only ever looks at its state word,
 * whose generation tells it that the entry is not the one it knew.
 */
static struct entry *entry_alloc(struct cache *c)
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

/* Back to the pool, as a new generation (nobody holds a reference). */
static void entry_free(struct cache *c, struct entry *e)
{
	uint64_t s = atomic_load(&e->state);

	atomic_store(&e->state, ST_GEN(s) + ST_GEN_ONE);
	pthread_mutex_lock(&c->pool_lock);
	e->next_victim = c->free_entries;
	c->free_entries = e;
	pthread_mutex_unlock(&c->pool_lock);
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
		entry_free(c, e);
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
	} else if (entry_drop_if_idle(e)) {
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
		else if (entry_drop_if_idle(e))
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

/* ---- each thread's hot: remembered hits and free slice objects ---------- */

/* pthread key destructor: the thread is gone, another may take its hot. */
static void hot_release(void *arg)
{
	struct hot *h = arg;

	for (unsigned int i = 0; i < HOT_SLOTS; i++)
		h->slot[i].e = NULL;
	atomic_store_explicit(&h->in_use, false, memory_order_release);
}

/* This thread's hot for @c if it has one (the hit path: no allocation). */
static struct hot *hot_peek(struct cache *c)
{
	return tls_hot_id == c->id ? tls_hot : NULL;
}

/*
 * This thread's hot for @c, taking a released one or making one (slow
 * paths).  NULL when out of memory: the thread then only remembers
 * nothing and gets no slices.
 */
static struct hot *hot_get(struct cache *c)
{
	struct hot *h = hot_peek(c);

	if (h)
		return h;
	lock_cache(c);
	for (h = c->hots; h; h = h->next_hot) {
		bool free_hot = false;

		if (atomic_compare_exchange_strong(&h->in_use, &free_hot, true))
			break;
	}
	if (!h) {
		h = calloc(1, sizeof(*h));
		if (h) {
			h->shard = c->n_hots++;
			atomic_init(&h->in_use, true);
			h->next_hot = c->hots;
			c->hots = h;
		}
	}
	unlock_cache(c);
	if (h && pthread_setspecific(c->hot_key, h) != 0) {
		atomic_store(&h->in_use, false);
		return NULL;
	}
	if (h) {
		tls_hot = h;
		tls_hot_id = c->id;
	}
	return h;
}

/* Remember a hit on (or a registration of) @e, generation @gen. */
static void hot_remember(struct hot *h, struct entry *e, uint64_t gen)
{
	struct hot_slot *s;

	if (!h)
		return;
	s = &h->slot[h->next++ % HOT_SLOTS];
	s->e = e;
	s->gen = gen;
	s->mr = e->mr;
	s->key = e->key;
	s->region = e->region;
}

static bool range_contains(const struct cache_key *region,
			   const struct cache_key *k)
{
	return k->pd == region->pd && k->access == region->access &&
	       k->iova - k->addr == region->iova - region->addr &&
	       k->addr >= region->addr &&
	       k->addr + k->length >= k->addr &&
	       k->addr + k->length <= region->addr + region->length;
}

static void count_hit(struct cache *c, struct hot *h)
{
	stats_hit(c->stats, h ? h->shard : 0);
}

/*
 * The per-request object for @key inside @e's region (a reference on @e
 * of generation @gen is held for it).  NULL when the pool is exhausted:
 * the caller drops the reference.
 */
static void *make_slice(struct cache *c, struct hot *h, struct entry *e,
			uint64_t gen, void *region_mr,
			const struct cache_key *key)
{
	struct slice_hdr *sh;

	if (!h)
		return NULL;
	sh = slice_get(&c->slices, &h->slices);
	if (!sh)
		return NULL;
	sh->owner = e;
	sh->gen = gen;
	c->ops.slice_init(slice_obj(sh), region_mr, key);
	return slice_obj(sh);
}

/*
 * The lock-free hit: one of this thread's remembered entries has @key, or
 * (containment) a region containing it.  NULL: take the next path.
 */
static void *hot_hit(struct cache *c, struct hot *h,
		     const struct cache_key *key)
{
	for (unsigned int i = 0; i < HOT_SLOTS; i++) {
		struct hot_slot *s = &h->slot[i];
		bool exact;
		void *mr;

		if (!s->e)
			continue;
		exact = key_equal(&s->key, key);
		if (!exact && !(s->region && range_contains(&s->key, key)))
			continue;
		if (!entry_get(s->e, s->gen)) {
			s->e = NULL;	/* dropped or reused: forget it */
			continue;
		}
		if (!atomic_load_explicit(&s->e->referenced,
					  memory_order_relaxed))
			atomic_store_explicit(&s->e->referenced, true,
					      memory_order_relaxed);
		mr = exact ? s->mr : make_slice(c, h, s->e, s->gen, s->mr, key);
		if (!mr) {
			/* Usable and referenced: not the last reference. */
			entry_put_fast(s->e, s->gen);
			return NULL;
		}
		count_hit(c, h);
		return mr;
	}
	return NULL;
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
	if (pthread_key_create(&c->hot_key, hot_release)) {
		free(c->by_key.buckets);
		free(c->by_mr.buckets);
		free(c->by_cookie.buckets);
		free(c);
		return NULL;
	}
	c->id = atomic_fetch_add(&next_cache_id, 1);
	region_index_init(&c->regions);
	slice_pool_init(&c->slices, ops->slice_init ? ops->slice_size : 0);
	pthread_mutex_init(&c->pool_lock, NULL);
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
		bool idle_mr = e->registered && entry_refs(e) == 0 &&
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
		entry_free(c, e);
	}
	for (struct entry *e = c->free_entries, *n; e; e = n) {
		n = e->next_victim;
		free(e);
	}
	pthread_key_delete(c->hot_key);
	for (struct hot *h = c->hots, *n; h; h = n) {
		n = h->next_hot;
		free(h);
	}
	if (tls_hot_id == c->id)
		tls_hot_id = 0;
	slice_pool_fini(&c->slices);
	region_index_fini(&c->regions);
	pthread_mutex_destroy(&c->pool_lock);
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

/*
 * Drop one reference on @e (generation @gen, 0: the caller found @e under
 * c->lock, any) with c->lock held: the slow half of every dereg.  An idle
 * cached entry stays registered (lazy deregistration); the last
 * reference to one that is no longer cached releases it.  @mr is what
 * the application passed (for the log).  Unlocks c->lock.
 */
static int dereg_entry_locked(struct cache *c, struct entry *e, uint64_t gen,
			      void *mr)
{
	struct entry *victims = NULL;
	struct elock l;
	uint64_t s = atomic_load(&e->state);
	int rc;

	if (gen && ST_GEN(s) != gen) {
		/* Retired meanwhile: its device was closed under it. */
		unlock_cache(c);
		return 0;
	}
	l = entry_lock(c, e);
	if (atomic_load(&c->child)) {
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
	/* Stale, detached or superseded by a merged region: it goes now. */
	entry_clear_registered(c, e);
	entry_unlock(c, l);
	list_del(&e->all);
	unlock_cache(c);
	log_debug("dereg (released) mr=%p", mr);
	if (in_child(c)) {
		entry_free(c, e);	/* the parent's MR: never deregistered here */
		return 0;
	}
	rc = real_dereg(c, e);
	monitor_unwatch(c, e);
	entry_free(c, e);
	return rc;
}

/* Drop a reference taken by a hit that could not be served after all. */
static void drop_ref(struct cache *c, struct entry *e, uint64_t gen)
{
	int old;

	if (entry_put_fast(e, gen))
		return;
	old = nocancel_begin();
	lock_cache(c);
	dereg_entry_locked(c, e, gen, e->mr);
	nocancel_end(old);
}

/*
 * What a hit on @e (reference of generation @gen held) returns for @key:
 * the real MR when @key is @e's own, else a slice object.  NULL (the
 * reference dropped) when no slice object can be had.
 */
static void *serve(struct cache *c, struct hot *h, struct entry *e,
		   uint64_t gen, void *mr, const struct cache_key *key)
{
	void *ret;

	if (key_equal(&e->key, key))
		return mr;
	ret = make_slice(c, h, e, gen, mr, key);
	if (!ret)
		drop_ref(c, e, gen);
	return ret;
}

/* Containment and widening apply to @key (see enum cache_subrange). */
static bool widen_ok(const struct cache *c, const struct cache_key *key)
{
	if (!c->ops.slice_init)
		return false;
	switch (c->limits.subrange) {
	case CACHE_SUBRANGE_ALL:
		return true;
	case CACHE_SUBRANGE_LOCAL:
		return !(key->access & c->limits.remote_access);
	default:
		return false;
	}
}

struct span {
	uintptr_t start, end;
};

static void span_extend(void *owner, void *arg)
{
	struct entry *e = owner;
	struct span *sp = arg;

	if (e->key.addr < sp->start)
		sp->start = e->key.addr;
	if (e->key.addr + e->key.length > sp->end)
		sp->end = e->key.addr + e->key.length;
}

/*
 * The region a miss of @key registers (under c->lock): its pages, merged
 * with the cached regions of its group that overlap or touch them, as
 * long as the merged region stays within half of the byte limit.
 */
static struct cache_key widened_key(struct cache *c,
				    const struct cache_key *key)
{
	struct cache_key rk = *key;
	struct span page = {
		key->addr & ~c->page_mask,
		(key->addr + key->length + c->page_mask) & ~c->page_mask,
	};
	struct span merged = page;
	struct region_group g = { key->pd, key->access, key->iova - key->addr };

	if (page.end <= page.start)	/* wraps: leave it alone */
		return rk;
	region_index_neighbours(&c->regions, &g, page.start, page.end,
				span_extend, &merged);
	if (merged.end - merged.start > c->limits.max_bytes / 2)
		merged = page;
	rk.addr = merged.start;
	rk.length = merged.end - merged.start;
	rk.iova = key->iova - (key->addr - merged.start);
	return rk;
}

/*
 * A containment hit under c->lock: a ready region containing @key.
 * *@found: there was one (NULL return then means no slice object).
 */
static void *region_hit_locked(struct cache *c, struct hot *h,
			       const struct cache_key *key, bool *found)
{
	struct region_group g = { key->pd, key->access, key->iova - key->addr };
	struct entry *e;
	uint64_t gen;

	*found = false;
	if (key->addr + key->length < key->addr)
		return NULL;
	e = region_index_find(&c->regions, &g, key->addr,
			      key->addr + key->length);
	if (!e || !(gen = entry_get(e, 0)))
		return NULL;
	*found = true;
	atomic_store_explicit(&e->referenced, true, memory_order_relaxed);
	hot_remember(h, e, gen);
	count_hit(c, h);
	/* c->lock is held: a failed slice drops the reference by hand. */
	if (key_equal(&e->key, key))
		return e->mr;
	{
		void *mr = make_slice(c, h, e, gen, e->mr, key);

		if (!mr)
			atomic_fetch_sub(&e->state, 1);	/* usable: not the last */
		return mr;
	}
}

static void supersede(void *owner, void *arg)
{
	struct entry **list = arg;
	struct entry *e = owner;

	e->next_victim = *list;
	*list = e;
}

/*
 * Under c->lock: make the new region @e findable by containment lookups.
 * The cached regions it contains (merged into it) are dropped: idle ones
 * released, busy ones released at their last dereg.  A region that
 * overlaps @e without being inside it (another thread's registration
 * raced with this one) keeps its place and @e serves exact hits only.
 */
static void region_publish(struct cache *c, struct entry *e,
			   struct entry **victims, void **garbage)
{
	struct region_group g = entry_group(e);
	uintptr_t start = e->key.addr, end = e->key.addr + e->key.length;
	struct entry *inside = NULL, *n;

	region_index_neighbours(&c->regions, &g, start, end, supersede,
				&inside);
	for (struct entry *o = inside; o; o = n) {
		n = o->next_victim;
		o->next_victim = NULL;
		if (o->key.addr >= start && o->key.addr + o->key.length <= end &&
		    o->key.addr + o->key.length > start && o->key.addr < end) {
			struct elock l = entry_lock(c, o);

			if (entry_try_evict(o))
				entry_evict(c, o, victims);
			else
				entry_uncache(c, o);
			entry_unlock(c, l);
		}
	}
	if (region_index_add(&c->regions, &g, start, end, e, garbage) == 0)
		e->indexed = true;
	else
		e->region = false;
}

/*
 * Register for the pending entry @e created by cache_reg() on behalf of
 * the request @req (@e's key, or the region around it).  The region's MR
 * with one reference of generation *@gen, or, when @e cannot be
 * watched or registered, @req's own registration passed through.
 */
static void *miss_register(struct cache *c, struct entry *e,
			   const struct cache_key *req, int how,
			   uint64_t *gen)
{
	struct entry *victims = NULL;
	struct cache_key key;
	void *garbage = NULL, *igarbage = NULL;
	bool widened = !key_equal(&e->key, req);
	struct elock l;
	bool uncached;
	void *mr;
	int rc, err;

	*gen = 0;
	/* Watch first, so that an invalidation racing with the pinning is seen. */
	rc = monitor_watch(c, e);
	if (rc < 0) {
		log_debug("cannot watch [%#" PRIxPTR ", +%zu): %s; not cached",
			  e->key.addr, e->key.length, strerror(-rc));
		abandon_pending(c, e);
		entry_free(c, e);
		return passthrough_reg(c, req, how);
	}
	e->watched = true;
	stats_inc(&c->stats->misses);

	mr = reg_with_retry(c, &e->key, how);
	if (!mr) {
		err = errno;
		abandon_pending(c, e);
		monitor_unwatch(c, e);
		entry_free(c, e);
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
	grow_striped(c, &c->by_mr, &garbage);
	e->mstripe = (unsigned int)(mr_hash(mr) & STRIPE_MASK);
	l = stripes_lock2(c, e->kstripe, e->mstripe);
	entry_set_registered(c, e, mr);
	e->pending = false;
	uncached = e->inval_pending;
	*gen = ST_GEN(atomic_load(&e->state));
	if (uncached) {
		atomic_store(&e->state, *gen + 1);
		entry_uncache(c, e);
	} else {
		atomic_store(&e->state, *gen | ST_USABLE | 1);
		list_add_head(&c->lru, &e->lru);	/* the clock list */
		e->in_lru = true;
		c->n_clock++;
	}
	entry_unlock(c, l);
	if (!uncached && e->region)
		region_publish(c, e, &victims, &igarbage);
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
	uint64_t gen = 0;
	void *mr = NULL;

	stripe_lock(c, st);
	e = find_by_key_h(c, key, h);
	if (e && (gen = entry_get(e, 0)) != 0) {
		if (!atomic_load_explicit(&e->referenced, memory_order_relaxed))
			atomic_store_explicit(&e->referenced, true,
					      memory_order_relaxed);
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

static void *reg_slow(struct cache *c, const struct cache_key *key,
		      void *dev_ctx, int how)
{
	void *garbage[2] = { NULL, NULL };
	struct entry *e, *fresh = NULL;
	bool widen = widen_ok(c, key);
	struct cache_key rk = *key;
	struct hot *h;
	uint64_t gen;
	void *mr;

	cache_sync(c);
	h = hot_get(c);
	mr = try_hit(c, h, key);
	if (mr)
		return mr;

	lock_cache(c);
	for (;;) {
		bool found = false;

		if (atomic_load(&c->broken))
			goto unlock_passthrough;
		if (widen) {
			mr = region_hit_locked(c, h, key, &found);
			if (mr) {
				unlock_cache(c);
				if (fresh)
					entry_free(c, fresh);
				return mr;
			}
			if (found)	/* no slice object: an exact miss */
				widen = false;
			rk = widen ? widened_key(c, key) : *key;
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
			return serve(c, h, e, gen, mr, key);
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
	if (htab_crowded(&c->by_cookie))	/* c->lock alone guards it */
		htab_maybe_grow(&c->by_cookie, &garbage[1]);
	stripe_lock(c, e->kstripe);
	entry_cache(c, e);
	stripe_unlock(c, e->kstripe);
	unlock_cache(c);
	free_garbage(garbage, 2);
	mr = miss_register(c, e, key, how, &gen);
	if (!gen)	/* passed through (or failed) */
		return mr;
	hot_remember(h, e, gen);
	return serve(c, h, e, gen, mr, key);

unlock_passthrough:
	unlock_cache(c);
	if (fresh)
		entry_free(c, fresh);
	return passthrough_reg(c, key, how);
}

void *cache_reg(struct cache *c, const struct cache_key *key, void *dev_ctx,
		int how)
{
	void *mr;
	int old;

	if (atomic_load(&c->child) || atomic_load(&c->broken))
		return passthrough_reg(c, key, how);
	/* The fast paths: nothing to drain, a remembered or plain hit. */
	if (!c->mon->ops->changed(c->mon)) {
		struct hot *h = hot_peek(c);

		if (h) {
			mr = hot_hit(c, h, key);
			if (mr)
				return mr;
		}
		mr = try_hit(c, h, key);
		if (mr)
			return mr;
	}
	old = nocancel_begin();
	mr = reg_slow(c, key, dev_ctx, how);
	nocancel_end(old);
	return mr;
}

/*
 * The dereg fast path by MR hash: drop a reference under the MR's stripe
 * alone.  0: the slow path must decide (not a cached MR, the last
 * reference to an entry that is no longer cached, a double dereg); 1:
 * done; 2: done and the entry is idle.
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

/* After a fast dereg left an entry idle: the limits may want it gone. */
static void after_idle(struct cache *c, void *mr)
{
	struct entry *victims = NULL;
	int old;

	if (!log_enabled(LOG_LEVEL_DEBUG) && !over_limits(c))
		return;
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

/* ibv_dereg_mr of a slice object: drop its region's reference. */
static int slice_dereg(struct cache *c, struct slice_hdr *sh, void *mr)
{
	struct entry *e = sh->owner;
	uint64_t gen = sh->gen;
	struct slice_cache spare = { NULL, 0 };
	struct hot *h;
	int done, rc = 0, old;

	if (atomic_load(&c->child))
		return 0;	/* the parent's: never touched from here */
	if (!e) {
		log_warn("ibv_dereg_mr(%p): MR already deregistered by the application; ignored",
			 mr);
		return EINVAL;
	}
	done = entry_put_fast(e, gen);
	h = hot_peek(c);
	old = nocancel_begin();
	if (!h)
		h = hot_get(c);
	slice_put(&c->slices, h ? &h->slices : &spare, sh);
	if (!h)
		slice_cache_flush(&c->slices, &spare);
	if (!done) {
		lock_cache(c);
		rc = dereg_entry_locked(c, e, gen, mr);
	}
	nocancel_end(old);
	if (done == 2)
		after_idle(c, mr);
	return rc;
}

int cache_dereg(struct cache *c, void *mr)
{
	struct slice_hdr *sh;
	struct hot *h;
	int old, rc, done = 0;

	if (!atomic_load(&c->child)) {
		h = hot_peek(c);
		for (unsigned int i = 0; h && i < HOT_SLOTS && !done; i++) {
			struct hot_slot *s = &h->slot[i];

			if (s->e && s->mr == mr)
				done = entry_put_fast(s->e, s->gen);
		}
		if (!done) {
			sh = slice_of(&c->slices, mr);
			if (sh)
				return slice_dereg(c, sh, mr);
			done = try_fast_dereg(c, mr);
		}
		if (done == 2)
			after_idle(c, mr);
		if (done)
			return 0;
	} else if (slice_of(&c->slices, mr)) {
		return 0;	/* the parent's: never touched from here */
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
	/* A slice is the region's keys, shared with its other users. */
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
