// SPDX-License-Identifier: BSD-2-Clause
/*
 * Each thread's hot: the hits it remembers (taken again with one
 * compare-and-swap and no lock) and its free slice objects (the
 * per-request MRs of containment hits).  The rules are in
 * cache_internal.h ("References").
 */
#define _GNU_SOURCE
#include "cache_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

/*
 * Process-wide: makes each cache's id unique, so that a thread's hot
 * (tls_hot.hot) is never used with another cache that happens to live at a
 * destroyed one's address (the unit tests make many).
 */
static atomic_uint_fast64_t next_cache_id = 1;

__thread struct tls_hot tls_hot __attribute__((tls_model("initial-exec")));

/* pthread key destructor: the thread is gone, another may take its hot. */
static void hot_release(void *arg)
{
	struct hot *h = arg;

	for (unsigned int i = 0; i < HOT_SLOTS; i++)
		h->slot[i].e = NULL;
	h->last_slice = NULL;
	/*
	 * Destructors of other libraries may still call verbs in this thread:
	 * forget the hot first, so such a call takes a fresh one through
	 * hot_get() instead of sharing this one with its next owner.
	 */
	if (tls_hot.hot == h) {
		tls_hot.hot = NULL;
		tls_hot.id = 0;
	}
	atomic_store_explicit(&h->in_use, false, memory_order_release);
}

int hot_init(struct cache *c)
{
	c->id = atomic_fetch_add(&next_cache_id, 1);
	return pthread_key_create(&c->hot_key, hot_release) ? -1 : 0;
}

void hot_fini(struct cache *c)
{
	pthread_key_delete(c->hot_key);
	for (struct hot *h = c->hots, *n; h; h = n) {
		n = h->next_hot;
		free(h);
	}
	c->hots = NULL;
	if (tls_hot.id == c->id)
		tls_hot.id = 0;
}

struct hot *hot_get(struct cache *c)
{
	struct hot *h = hot_peek(c);

	if (h)
		return h;
	lock_cache(c);
	for (h = c->hots; h; h = h->next_hot) {
		bool taken = false;

		if (atomic_compare_exchange_strong(&h->in_use, &taken, true))
			break;
	}
	if (!h) {
		h = calloc(1, sizeof(*h));
		if (h) {
			/*
			 * A counter shard of its own (one writer: no
			 * read-modify-write) while there are enough; the
			 * others share shard 0 (atomic increments).
			 */
			if (++c->n_hots < STATS_HIT_SHARDS)
				h->own_hits = &c->stats->hits[c->n_hots].v;
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
		tls_hot.hot = h;
		tls_hot.id = c->id;
	}
	return h;
}

void hot_remember(struct hot *h, struct entry *e, uint64_t gen)
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

/*
 * @k lies inside @region, with the same PD and IOVA offset, and access
 * that @region covers (the same, or fewer of c->wide_rights, and then
 * valid: see widen_ok()).
 */
static bool range_contains(const struct cache *c,
			   const struct cache_key *region,
			   const struct cache_key *k)
{
	return k->pd == region->pd &&
	       access_covers(region->access, k->access, c->wide_rights) &&
	       (k->access == region->access || rights_valid(c, k->access)) &&
	       k->iova - k->addr == region->iova - region->addr &&
	       k->addr >= region->addr &&
	       k->addr + k->length >= k->addr &&
	       k->addr + k->length <= region->addr + region->length;
}

void *make_slice(struct cache *c, struct hot *h, struct entry *e,
		 uint64_t gen, void *region_mr, const struct cache_key *key)
{
	struct slice_hdr *sh;

	if (!h)
		return NULL;
	sh = slice_get(&c->slices, &h->slices);
	if (!sh)
		return NULL;
	sh->owner = e;
	sh->gen = gen;
	h->last_slice = sh;
	c->ops.slice_init(slice_obj(sh), region_mr, key);
	return slice_obj(sh);
}

/* Drop a reference taken by a hit that could not be served after all. */
static void drop_ref(struct cache *c, struct entry *e, uint64_t gen)
{
	int old;

	if (entry_put_fast(e, gen))
		return;
	old = nocancel_begin();
	lock_cache(c);
	dereg_entry_locked(c, e, gen, NULL);
	nocancel_end(old);
}

void *hot_serve(struct cache *c, struct hot *h, struct entry *e,
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

void *hot_hit(struct cache *c, struct hot *h, const struct cache_key *key)
{
	/* The most recent first: a thread tends to reuse its last buffer. */
	for (unsigned int i = 1; i <= HOT_SLOTS; i++) {
		struct hot_slot *s = &h->slot[(h->next - i) % HOT_SLOTS];
		bool exact;
		void *mr;

		if (!s->e)
			continue;
		exact = key_equal(&s->key, key);
		if (!exact && !(s->region &&
				range_contains(c, &s->key, key)))
			continue;
		if (!entry_get_remembered(s->e, s->gen)) {
			s->e = NULL;	/* dropped or reused: forget it */
			continue;
		}
		mark_referenced(s->e);
		if (exact) {
			mr = s->mr;
		} else {
			mr = make_slice(c, h, s->e, s->gen, s->mr, key);
			if (!mr) {
				drop_ref(c, s->e, s->gen);
				return NULL;
			}
		}
		count_hit(c, h);
		log_debug("hit mr=%p addr=%#" PRIxPTR " len=%zu", mr,
			  key->addr, key->length);
		return mr;
	}
	return NULL;
}

void after_idle_slow(struct cache *c, void *mr)
{
	struct entry *victims = NULL;
	int old;

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

int slice_dereg(struct cache *c, struct slice_hdr *sh, void *mr)
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
	if (done && h) {	/* the fast path: no lock, no cancellation point */
		slice_put(&c->slices, &h->slices, sh);
		if (done == 2)
			after_idle(c, mr);
		return 0;
	}
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
