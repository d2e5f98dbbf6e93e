/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The registration cache's private structures and the rules that keep
 * them consistent; shared by cache.c (lookups, registration and
 * deregistration), cache_entry.c (entry state, watches, releasing),
 * cache_evict.c (limits and releases by PD/device) and cache_inval.c
 * (invalidations), and cache_fast.h (the hit paths, inline, which the
 * interposers include).  Nothing else includes it.
 *
 * Locks, in the order they are taken:
 *  1. c->mon_lock serialises monitor calls (watch, unwatch, drain).
 *  2. c->lock guards the structure: the lists, by_cookie, the counters and
 *     every change of an entry's state.  Never held across a real
 *     registration or deregistration or a monitor call.
 *  3. c->stripes[i], i = a hash's low bits: the hit path (a lookup by key)
 *     and the dereg fast path (a lookup by MR) take only the stripe of
 *     the hash they look up, and no global lock and no shared counter, so
 *     threads using different entries do not contend.  (Before that, a
 *     thread tries the hits it remembers, with no lock at all: see
 *     "References" below.)  Every change of a
 *     by_key or by_mr bucket, and of an entry's cached/registered/pending
 *     state, holds c->lock and the stripes of that entry (entry_lock(): its
 *     key's and, once registered, its MR's), taken in index order; a
 *     thread holding two stripes is therefore the one c->lock holder, and
 *     the fast paths hold one: no deadlock.  Growing by_key or by_mr takes
 *     every stripe.
 * Rules that keep a blocking invalidation source (userfaultfd blocks
 * munmap/free until its event is read) and a stalled log destination from
 * deadlocking or stalling the cache: no memory is freed and no log line is
 * written while any of these locks is held (old bucket arrays and retired
 * entries are freed after unlocking; lines logged under c->lock or
 * c->mon_lock are held back by log_hold() and written by the outermost
 * release).  Every slow path disables thread cancellation (nocancel_begin)
 * before it can take a lock, own a pending entry or queue victims, until
 * it has let go of all of them; the fast paths reach no cancellation point
 * while holding their stripe.
 *
 * References (struct entry's state word): an entry's application
 * references, whether a lookup may take one (USABLE: cached, registered,
 * not pending) and its generation, bumped whenever the entry goes back to
 * the entry pool, are one atomic word.  Taking or dropping a reference is
 * a compare-and-swap that also checks USABLE and the generation, so a
 * thread that remembered (entry, generation) from an earlier hit (struct
 * hot) takes it with no lock, and an entry that was dropped or reused
 * meanwhile fails the check.  Entries (and slice objects) are pooled and
 * freed only with the cache, so a remembered pointer always points at an
 * entry.  Whoever makes an entry unusable does it with a compare-and-swap
 * too (entry_try_evict(), entry_drop_if_idle(), entry_unpublish()), so an
 * idle entry is either evicted or hit, never both; references of an
 * unusable entry are only dropped under c->lock (dereg_entry_locked()).
 *
 * Each field below says what guards it: "const" (set before the object is
 * shared, never changed), a lock, "atomic" (with who writes it), or
 * "owner" (only the thread that owns the entry touches it: the registering
 * thread while it is pending, the thread that retired it afterwards).
 */
#ifndef UMMUSHIM_CACHE_INTERNAL_H
#define UMMUSHIM_CACHE_INTERNAL_H

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cache.h"
#include "htab.h"
#include "list.h"
#include "log.h"
#include "region_index.h"
#include "slice_pool.h"
#include "stats.h"

/* The state word: see "References" above. */
#define ST_REFS 0x7fffffffULL
#define ST_USABLE (1ULL << 31)
#define ST_GEN_ONE (1ULL << 32)
#define ST_GEN(s) ((s) & ~(ST_USABLE | ST_REFS))
/*
 * An entry retired with this generation is never reused (entry_free()):
 * its next generation would wrap to one it already had, and a thread
 * that remembered it then (struct hot_slot) could take the new one for
 * the old.  So each (entry, generation) pair names one incarnation for
 * the cache's life, at the cost of one entry's memory per 2^32 reuses.
 */
#define ST_GEN_LAST ST_GEN(~0ULL)

/*
 * A cached registration.  It lives in up to three hash indexes and two
 * lists:
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
struct entry {
	/*
	 * References, USABLE and generation (see above).  Atomic; first, so
	 * that entry_alloc() can clear the rest while lock-free readers of
	 * a remembered entry load it.
	 */
	_Atomic uint64_t state;
	struct cache_key key;	/* const (per generation) */
	void *ctx;		/* const: device context of key.pd */
	/*
	 * The real MR, NULL while pending.  Written once, under c->lock and
	 * the stripes of key and MR, before pending is cleared; read by the
	 * hit path under the key's stripe after it saw !pending.
	 */
	void *mr;
	uint64_t cookie;	/* const: monitor watch id, unique per cache */
	/* Hit since the clock hand last passed.  Atomic: set by hits,
	 * cleared by the clock hand under c->lock and the entry's stripes. */
	atomic_bool referenced;
	unsigned int kstripe;	/* const: lock stripe of key (by_key) */
	/* Lock stripe of mr (by_mr): set under c->lock before registered. */
	unsigned int mstripe;

	/* c->lock + the entry's stripes (read under any one of them): */
	bool pending;		/* real registration in progress */
	bool cached;		/* in by_key/by_cookie: lookups may return it */
	bool registered;	/* in by_mr: holds a real registration */
	bool inval_pending;	/* invalidated while being registered */
	/* c->lock: */
	bool in_lru;		/* in the clock list (cached and registered) */
	bool region;		/* may serve containment hits once ready */
	bool indexed;		/* in c->regions */
	/* owner: */
	bool watched;		/* the monitor watches it */
	/*
	 * Counted in cache.releasing: evicted, its real deregistration not
	 * done yet.  Set under lock by entry_evict(); read and cleared by the
	 * thread that owns the victim list (the entry is on no list then).
	 */
	bool releasing;

	struct hlink by_key;	/* c->lock + key's stripe */
	struct hlink by_mr;	/* c->lock + MR's stripe */
	struct hlink by_cookie;	/* c->lock */
	struct list all, lru;	/* c->lock */
	/* Victim queue: c->lock while queued, then owner; pool: pool_lock. */
	struct entry *next_victim;
};

/*
 * What a thread remembers of its last hits: the entry, its generation at
 * the time and copies of its key and MR (the entry's own fields change
 * once it is retired; the copies and the generation check make that
 * harmless).
 */
#define HOT_SLOTS 4

struct hot_slot {
	struct entry *e;	/* NULL: empty */
	uint64_t gen;
	void *mr;		/* the entry's real MR */
	struct cache_key key;	/* the entry's key */
	bool region;		/* may serve requests inside the key's range */
};

/*
 * One per thread and cache ("owner": only the thread that has it in use
 * touches it; handed to another thread through in_use).
 */
struct hot {
	struct hot_slot slot[HOT_SLOTS];	/* owner */
	unsigned int next;			/* owner: slot to replace */
	/*
	 * const: its own hit counter shard (1.., only its thread writes it),
	 * NULL for the hots beyond STATS_HIT_SHARDS - 1 (they share shard 0).
	 */
	atomic_uint_fast64_t *own_hits;
	struct slice_cache slices;		/* owner: free slice objects */
	/*
	 * owner: the slice object make_slice() handed out last (NULL:
	 * none), so that its dereg needs no slice_of(); the pool keeps it
	 * memory of the pool whoever holds it now.
	 */
	struct slice_hdr *last_slice;
	struct hot *next_hot;			/* c->lock (c->hots) */
	atomic_bool in_use;			/* atomic: a live thread has it */
};

#define N_STRIPES 64
#define STRIPE_MASK (N_STRIPES - 1)

/* Padded so that two stripes never share a cache line. */
struct stripe {
	pthread_mutex_t lock;
	char pad[64];
};

/* How many PDs' learnt rights a cache keeps (a process has few PDs). */
#define LEARNT_PDS 16

/* A PD's learnt rights (empty: pd NULL); ctx its device's context. */
struct pd_rights {
	void *pd, *ctx;
	unsigned int rights;
};

struct cache {
	pthread_mutex_t lock;		/* the structure: see above */
	pthread_mutex_t mon_lock;	/* serialises monitor calls */
	pthread_cond_t pending_done;	/* with lock: a pending entry resolved */
	/*
	 * Evicted MRs whose real deregistration is still running in some
	 * thread (the releaser, a drain, an eviction).  ibv_dealloc_pd and
	 * ibv_close_device wait for it to reach 0, so the PD or device is
	 * never freed under a deregistration in flight.  Atomic; `released'
	 * (with lock) is broadcast when it falls to 0.
	 */
	atomic_ulong releasing;
	pthread_cond_t released;
	struct stripe stripes[N_STRIPES];

	struct cache_ops ops;		/* const */
	struct monitor *mon;		/* const; calls under mon_lock */
	struct cache_limits limits;	/* const */
	struct shim_stats *stats;	/* const pointer; counters atomic */
	uintptr_t page_mask;		/* const */
	pid_t owner;			/* const: the process that created it */

	/* Buckets: lock + the bucket's stripe; growth: lock + every stripe. */
	struct htab by_key, by_mr;
	struct htab by_cookie;		/* lock */
	struct list all, lru;		/* lock; lru is the clock list */
	size_t n_clock;			/* lock: entries in lru */
	uint64_t next_cookie;		/* lock */
	/*
	 * Registrations held and the bytes of the pages they pin.  Written
	 * under lock; read without it by the dereg fast path.
	 */
	atomic_size_t n_registered;
	_Atomic uint64_t bytes_registered;
	/*
	 * Atomic: over_limits(), kept with the two above (under lock), so
	 * that the dereg fast path asks with one load.
	 */
	atomic_bool over;

	/* Atomic: the monitor failed, caching is off for good (set under lock). */
	atomic_bool broken;
	/*
	 * Atomic: this is a forked child's copy, pass through.  Set only by
	 * the fork handler, in the child's own memory; a child made without
	 * it is told by its pid (cache_in_child()), never by a flag that a
	 * child sharing the parent's memory (clone(CLONE_VM)) would set for
	 * the parent too.
	 */
	atomic_bool child;

	uint64_t id;			/* const: unique, for the thread's hot */
	/*
	 * const: the access bits a region may hold more of than a request
	 * it serves (limits.rights under CACHE_SUBRANGE_ALL with
	 * containment; 0 otherwise: access matches exactly).
	 */
	unsigned int wide_rights;
	/*
	 * lock: under CACHE_SUBRANGE_ALL, each (PD, device)'s learnt
	 * rights: the widenable rights of every region registered on it,
	 * which every miss of that PD registers too (cache_region.c);
	 * forgotten by cache_release_pd/_ctx and cache_forget_ctx.  Fixed
	 * size, so that learning never allocates; a PD finding no free slot
	 * learns nothing.
	 */
	struct pd_rights learnt[LEARNT_PDS];
	struct region_index regions;	/* lock: ready regions */
	struct slice_pool slices;	/* its own locks: per-request objects */
	pthread_mutex_t pool_lock;	/* guards free_entries */
	struct entry *free_entries;	/* pool_lock: retired, for reuse */
	struct entry *spent_entries;	/* pool_lock: at ST_GEN_LAST, kept */
	struct hot *hots;		/* lock: every thread's hot */
	unsigned int n_hots;		/* lock */
	pthread_key_t hot_key;		/* const: releases a hot at thread exit */

	/* Atomic: the stale-warning rate limit (cache_inval.c). */
	_Atomic uint64_t stale_window_start;
	atomic_uint stale_window_lines;
	_Atomic uint64_t stale_suppressed;
};

/* ---- locks ----------------------------------------------------------- */

/*
 * While a thread holds c->lock or c->mon_lock its log lines are held back
 * (log_hold()) and written when it lets go of the last one.
 */
static inline void lock_cache(struct cache *c)
{
	log_hold();
	pthread_mutex_lock(&c->lock);
}

static inline void unlock_cache(struct cache *c)
{
	pthread_mutex_unlock(&c->lock);
	log_release();
}

static inline void lock_mon(struct cache *c)
{
	log_hold();
	pthread_mutex_lock(&c->mon_lock);
}

static inline void unlock_mon(struct cache *c)
{
	pthread_mutex_unlock(&c->mon_lock);
	log_release();
}

static inline void stripe_lock(struct cache *c, unsigned int i)
{
	pthread_mutex_lock(&c->stripes[i].lock);
}

static inline void stripe_unlock(struct cache *c, unsigned int i)
{
	pthread_mutex_unlock(&c->stripes[i].lock);
}

/* The stripes held for one entry (entry_lock()). */
struct elock {
	int a, b;	/* stripe indexes, a < b; -1: none */
};

struct elock stripes_lock2(struct cache *c, unsigned int x, unsigned int y);
/* The stripes of @e's key and, while registered, of its MR (under c->lock). */
struct elock entry_lock(struct cache *c, const struct entry *e);
void entry_unlock(struct cache *c, struct elock l);

/*
 * Slow paths disable thread cancellation, so that a pthread_cancel()
 * acting at a cancellation point inside (a log write, the real
 * registration's system calls, a monitor read, pthread_cond_wait) can
 * never leave a lock held, a pending entry behind (every later lookup of
 * that key would wait forever) or registrations unreleased.  A pending
 * cancel acts at the caller's next cancellation point.
 */
static inline int nocancel_begin(void)
{
	int old = PTHREAD_CANCEL_ENABLE;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	return old;
}

static inline void nocancel_end(int old)
{
	pthread_setcancelstate(old, NULL);	/* keeps errno */
}

/* ---- lookups ------------------------------------------------------------ */

static inline uint64_t key_hash(const struct cache_key *k)
{
	uint64_t h = hash_mix64((uintptr_t)k->pd);

	h = hash_mix64(h ^ k->addr);
	h = hash_mix64(h ^ k->length);
	h = hash_mix64(h ^ k->iova);
	return hash_mix64(h ^ k->access);
}

static inline uint64_t mr_hash(const void *mr)
{
	return hash_mix64((uintptr_t)mr);
}

static inline uint64_t cookie_hash(uint64_t cookie)
{
	return hash_mix64(cookie);
}

static inline bool key_equal(const struct cache_key *a,
			     const struct cache_key *b)
{
	return a->pd == b->pd && a->addr == b->addr &&
	       a->length == b->length && a->iova == b->iova &&
	       a->access == b->access;
}

/* @access is one the device accepts (see cache_limits.need_local_write). */
static inline bool rights_valid(const struct cache *c, unsigned int access)
{
	return (access & c->limits.local_write) ||
	       !(access & c->limits.need_local_write);
}

/*
 * A region registered with access @have may serve a request asking for
 * @want: at least the rights asked for, and every bit but the widenable
 * rights @wide the same.  With @wide 0, @have == @want.
 */
static inline bool access_covers(unsigned int have, unsigned int want,
				 unsigned int wide)
{
	return !(want & ~have) && !((have ^ want) & ~wide);
}

/*
 * Lookups by key and by MR: under c->lock, or under the stripe of @h
 * alone (every change of a bucket holds that bucket's stripe: the stripe
 * is the hash's low bits, and a table has at least N_STRIPES buckets).
 */
static inline struct entry *find_by_key_h(struct cache *c,
					  const struct cache_key *k,
					  uint64_t h)
{
	for (struct hlink *l = *htab_bucket(&c->by_key, h); l; l = l->next) {
		struct entry *e = container_of(l, struct entry, by_key);

		if (l->hash == h && key_equal(&e->key, k))
			return e;
	}
	return NULL;
}

static inline struct entry *find_by_mr_h(struct cache *c, void *mr,
					 uint64_t h)
{
	for (struct hlink *l = *htab_bucket(&c->by_mr, h); l; l = l->next) {
		struct entry *e = container_of(l, struct entry, by_mr);

		if (e->mr == mr)
			return e;
	}
	return NULL;
}

static inline struct entry *find_by_key(struct cache *c,
					const struct cache_key *k)
{
	return find_by_key_h(c, k, key_hash(k));
}

static inline struct entry *find_by_mr(struct cache *c, void *mr)
{
	return find_by_mr_h(c, mr, mr_hash(mr));
}

/* Under c->lock. */
struct entry *find_by_cookie(struct cache *c, uint64_t cookie);

/*
 * Bytes of the pages @e's registration pins: whole pages, whatever the
 * requested length (a 64-byte MR pins a page).
 */
static inline uint64_t entry_pinned_bytes(const struct cache *c,
					  const struct entry *e)
{
	uintptr_t start = e->key.addr & ~c->page_mask;
	uintptr_t end = (e->key.addr + e->key.length + c->page_mask) &
			~c->page_mask;

	return end > start ? (uint64_t)(end - start) : (uint64_t)e->key.length;
}

static inline bool over_limits(const struct cache *c)
{
	return c->n_registered > c->limits.max_entries ||
	       c->bytes_registered > c->limits.max_bytes;
}

/* ---- references (the state word) ---------------------------------------- */

static inline unsigned long entry_refs(struct entry *e)
{
	return (unsigned long)(atomic_load(&e->state) & ST_REFS);
}

/*
 * Take a reference on @e if a lookup may use it and, unless @gen is 0
 * (any: the caller holds a lock that keeps @e), it is still incarnation
 * @gen.  Returns the generation taken, or 0 (never a valid generation).
 */
static inline uint64_t entry_get(struct entry *e, uint64_t gen)
{
	/*
	 * Relaxed: only a guess for the compare-and-swap, which checks it
	 * (USABLE, generation) and, on success, acquires: what the entry's
	 * publisher wrote before setting USABLE with release (key, MR,
	 * region) is visible after.  The caller's monitor check before
	 * (acquire, see monitor.h) orders it after the invalidations that
	 * check accounted for.
	 */
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
 * entry_get() of a remembered (@e, @gen), @gen never 0: one comparison
 * checks both USABLE and the generation (the hit path).
 */
static inline bool entry_get_remembered(struct entry *e, uint64_t gen)
{
	uint64_t s = atomic_load_explicit(&e->state, memory_order_relaxed);

	do {
		if ((s & ~ST_REFS) != (gen | ST_USABLE) ||
		    (s & ST_REFS) == ST_REFS)
			return false;
	} while (!atomic_compare_exchange_weak_explicit(&e->state, &s, s + 1,
							memory_order_acquire,
							memory_order_relaxed));
	return true;
}

/*
 * Drop a reference on a usable @e of generation @gen without a lock.
 * 0: not done (take the slow path: not usable any more, another
 * generation, no reference to drop); 1: done; 2: done, @e is idle now.
 */
static inline int entry_put_fast(struct entry *e, uint64_t gen)
{
	uint64_t s = atomic_load_explicit(&e->state, memory_order_relaxed);

	do {
		if ((s & ~ST_REFS) != (gen | ST_USABLE) || !(s & ST_REFS))
			return 0;	/* unusable, another generation, no ref */
	} while (!atomic_compare_exchange_weak_explicit(&e->state, &s, s - 1,
							memory_order_release,
							memory_order_relaxed));
	return ((s - 1) & ST_REFS) ? 1 : 2;
}

/* Idle and usable: make it unusable, so that no hit can take it. */
static inline bool entry_try_evict(struct entry *e)
{
	uint64_t s = atomic_load(&e->state);

	do {
		if (!(s & ST_USABLE) || (s & ST_REFS))
			return false;
	} while (!atomic_compare_exchange_weak(&e->state, &s, ST_GEN(s)));
	return true;
}

/* No lookup may take @e any more; the references it has stay. */
static inline void entry_unpublish(struct entry *e)
{
	atomic_fetch_and(&e->state, ~ST_USABLE);
}

/*
 * An invalidation or a failed monitor: an idle @e is made unusable
 * (true: evict it), a busy one only unusable (false: it is released at
 * its last dereg), atomically against lock-free hits and derefs.
 */
static inline bool entry_drop_if_idle(struct entry *e)
{
	uint64_t s = atomic_load(&e->state);

	for (;;) {
		uint64_t n = (s & ST_REFS) ? (s & ~ST_USABLE) : ST_GEN(s);

		if (atomic_compare_exchange_weak(&e->state, &s, n))
			return !(s & ST_REFS);
	}
}

/* ---- process ------------------------------------------------------------ */

/*
 * Whether this process is a child of the cache's creator (a system call
 * unless already known): see cache_entry.c.  Slow paths only.
 */
bool cache_in_child(struct cache *c);

/* ---- entry state (cache_entry.c; under c->lock and entry_lock()) --------- */

void grow_striped(struct cache *c, struct htab *t, void **garbage);
void entry_cache(struct cache *c, struct entry *e);
void entry_uncache(struct cache *c, struct entry *e);
void entry_set_registered(struct cache *c, struct entry *e, void *mr);
void entry_clear_registered(struct cache *c, struct entry *e);
void entry_retire(struct cache *c, struct entry *e, struct entry **victims);
void entry_evict(struct cache *c, struct entry *e, struct entry **victims);

/* The entry pool (no lock held): see "References". */
struct entry *entry_alloc(struct cache *c);
void entry_free(struct cache *c, struct entry *e);
void entry_pool_free(struct cache *c);	/* cache_destroy() */

/*
 * Drop one reference on @e (generation @gen; 0: found under c->lock,
 * any) with c->lock held, the slow half of every dereg; unlocks c->lock.
 * @mr is what the application passed (for the log).  cache_dereg.c.
 */
int dereg_entry_locked(struct cache *c, struct entry *e, uint64_t gen,
		       void *mr);

/* Monitor calls for @e (take mon_lock; no other lock held). */
int monitor_watch(struct cache *c, struct entry *e);
void monitor_unwatch(struct cache *c, struct entry *e);

/* No lock held: deregister, unwatch and free retired entries. */
int real_dereg(struct cache *c, struct entry *e);
void release_victims(struct cache *c, struct entry *victims);
void release_done(struct cache *c);
void cache_wait_releases(struct cache *c);

/* ---- limits (cache_evict.c; under c->lock) -------------------------------- */

void enforce_limits(struct cache *c, struct entry **victims);
void evict_all_idle(struct cache *c, struct entry **victims);

/* ---- each thread's hot and slices (cache_hot.c) --------------------------- */

int hot_init(struct cache *c);		/* cache_create() */
void hot_fini(struct cache *c);		/* cache_destroy() */
/*
 * Per thread: its hot for the cache whose id is tls_hot.id (cache_hot.c;
 * global so that the hit path reads it inline; one object, so that both
 * are found through one TLS offset).
 */
struct tls_hot {
	struct hot *hot;
	uint64_t id;
};
extern __thread struct tls_hot tls_hot __attribute__((tls_model("initial-exec")));

/* This thread's hot for @c if it has one (no allocation). */
static inline struct hot *hot_peek(struct cache *c)
{
	return tls_hot.id == c->id ? tls_hot.hot : NULL;
}

/* ... or a new one (slow paths; NULL when out of memory). */
struct hot *hot_get(struct cache *c);
/* Remember a hit on (or a registration of) @e, generation @gen. */
void hot_remember(struct hot *h, struct entry *e, uint64_t gen);
/* The lock-free hit on a remembered entry; NULL: take the next path. */
void *hot_hit(struct cache *c, struct hot *h, const struct cache_key *key);

/* Count a hit (@h: the thread's hot, NULL if it has none). */
static inline void count_hit(struct cache *c, struct hot *h)
{
	if (__builtin_expect(h && h->own_hits, 1))
		stats_inc_owned(h->own_hits);	/* one writer: its thread */
	else
		stats_hit(c->stats, 0);
}

/* @e was hit: the clock hand gives it a second chance. */
static inline void mark_referenced(struct entry *e)
{
	if (!atomic_load_explicit(&e->referenced, memory_order_relaxed))
		atomic_store_explicit(&e->referenced, true,
				      memory_order_relaxed);
}

/*
 * The hit path's first try: an exact hit on the entry this thread
 * remembered last (the same buffer again), with no lock and no loop; NULL:
 * try hot_hit() and the rest.  A remembered entry dropped or reused
 * meanwhile fails entry_get() here and is forgotten by hot_hit().
 */
static inline void *hot_hit_last(struct cache *c, struct hot *h,
				 const struct cache_key *key)
{
	struct hot_slot *s = &h->slot[(h->next - 1) % HOT_SLOTS];

	if (!s->e || !key_equal(&s->key, key) ||
	    !entry_get_remembered(s->e, s->gen))
		return NULL;
	mark_referenced(s->e);
	count_hit(c, h);
	log_debug("hit mr=%p addr=%#" PRIxPTR " len=%zu", s->mr, key->addr,
		  key->length);
	return s->mr;
}
/*
 * What a hit on @e (a reference of generation @gen held, no lock) returns
 * for @key: @mr when @key is @e's own key, else a slice object; NULL, the
 * reference dropped, when there is no slice object to be had.
 */
void *hot_serve(struct cache *c, struct hot *h, struct entry *e,
		uint64_t gen, void *mr, const struct cache_key *key);
/* A slice object for @key (reference held), NULL if none. */
void *make_slice(struct cache *c, struct hot *h, struct entry *e,
		 uint64_t gen, void *region_mr, const struct cache_key *key);
/* ibv_dereg_mr of a slice object (no lock held). */
int slice_dereg(struct cache *c, struct slice_hdr *sh, void *mr);
/* After a lock-free dereg left an entry idle: the limits may want it. */
void after_idle_slow(struct cache *c, void *mr);

/*
 * c->over is read relaxed after the releasing CAS: a miss that sets it
 * concurrently may miss this entry as idle (store buffering), so the
 * limits are soft by at most that entry until the next miss or release.
 */
static inline void after_idle(struct cache *c, void *mr)
{
	if (log_enabled(LOG_LEVEL_DEBUG) ||
	    atomic_load_explicit(&c->over, memory_order_relaxed))
		after_idle_slow(c, mr);
}

/* ---- regions (cache_region.c; under c->lock) ------------------------------ */

/*
 * Containment and widening apply to @key (see enum cache_subrange); under
 * CACHE_SUBRANGE_ALL so does widening of the rights (c->wide_rights).
 */
bool widen_ok(const struct cache *c, const struct cache_key *key);
/*
 * The region a miss of @key registers: its pages, merged with neighbours;
 * with @learn_ctx (the device of @key's PD; CACHE_SUBRANGE_ALL) also with
 * the PD's learnt rights, and *@extra the rights these alone added.
 */
struct cache_key widened_key(struct cache *c, const struct cache_key *key,
			     const void *learn_ctx, unsigned int *extra);
/* Add the widenable rights of @key, just registered, to its PD's (@ctx). */
void rights_learn(struct cache *c, const struct cache_key *key, void *ctx);
/* The PD @pd (or, @pd NULL, every PD of @ctx) starts again with none. */
void rights_forget(struct cache *c, void *pd, void *ctx);
/* A containment hit; *@found: a region contains @key (NULL: no slice). */
void *region_hit_locked(struct cache *c, struct hot *h,
			const struct cache_key *key, bool *found);
/* New region @e becomes findable; those inside it whose rights it has drop. */
void region_publish(struct cache *c, struct entry *e, struct entry **victims,
		    void **garbage);
/* @e leaves the index (entry_uncache()). */
void region_unindex(struct cache *c, struct entry *e);

/* ---- invalidation (cache_inval.c) ---------------------------------------- */

/* Apply every invalidation reported so far (no lock held). */
void cache_sync(struct cache *c);

#endif /* UMMUSHIM_CACHE_INTERNAL_H */
