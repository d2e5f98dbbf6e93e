// SPDX-License-Identifier: BSD-2-Clause
/*
 * Regions: which registrations may be served by a larger cached region,
 * what a miss registers (the request's pages, merged with the cached
 * regions it overlaps, and under CACHE_SUBRANGE_ALL with their rights and
 * those learnt from every region registered on its PD and device),
 * containment lookups, and keeping the index of ready regions.  All
 * under c->lock; the rules are in cache_internal.h.
 */
#define _GNU_SOURCE
#include "cache_internal.h"

bool widen_ok(const struct cache *c, const struct cache_key *key)
{
	if (!c->ops.slice_init)
		return false;
	switch (c->limits.subrange) {
	case CACHE_SUBRANGE_ALL:	/* a union would make invalid rights work */
		return rights_valid(c, key->access);
	case CACHE_SUBRANGE_LOCAL:
		return !(key->access & c->limits.remote_access);
	default:
		return false;
	}
}

/*
 * A region's group: its PD, IOVA offset and the access bits that must
 * match exactly.  The widenable rights are left out, so that regions of
 * one group never overlap whatever rights each holds, and a request finds
 * the one region around it, then checks its rights (access_covers()).
 */
static struct region_group group_of(const struct cache *c,
				    const struct cache_key *k)
{
	return (struct region_group){ k->pd, k->access & ~c->wide_rights,
				      k->iova - k->addr };
}

struct span {
	uintptr_t start, end;
};

/*
 * What widened_key() grows: the merged span, the request's pages, and the
 * access: the request's, with the rights of the regions merged into it
 * (one group: they differ only in widenable rights), so that the merged
 * region still serves every request the regions it replaces served.
 */
struct merge {
	struct span merged, page;
	unsigned int access;
};

/*
 * Only regions that overlap the request's pages are merged, as in UCX's
 * rcache.  Merging a region that merely touches them would register its
 * pages again to serve only requests that straddle the boundary: adjacent
 * slices requested one after the other (a halo exchange's rows) would pin
 * 1 + 2 + ... + n slices' pages for n slices, each miss re-registering
 * the whole run of its cached neighbours.
 */
static void merge_overlapping(void *owner, void *arg)
{
	struct entry *e = owner;
	struct merge *m = arg;
	uintptr_t start = e->key.addr, end = e->key.addr + e->key.length;

	if (end <= m->page.start || start >= m->page.end)
		return;
	m->access |= e->key.access;
	if (start < m->merged.start)
		m->merged.start = start;
	if (end > m->merged.end)
		m->merged.end = end;
}

/*
 * @pd's learnt rights (under c->lock; 0 for a PD without a record).
 * Matched by PD and device: a PD freed unseen and reallocated at that
 * address by another device starts empty.
 */
static unsigned int rights_learnt(const struct cache *c, const void *pd,
				  const void *ctx)
{
	for (unsigned int i = 0; i < LEARNT_PDS; i++)
		if (c->learnt[i].pd == pd && c->learnt[i].ctx == ctx)
			return c->learnt[i].rights;
	return 0;
}

/*
 * Under c->lock, with the key of a region just registered: only rights
 * the device granted are learnt (a union of valid sets is valid; the
 * memory may still refuse one: see reg_slow()), so that a refused request
 * cannot make every later miss of the PD fail once before its retry.
 * Hits need not be learnt: a hit's rights are those of a region some miss
 * registered, all learnt then.  A record of the same PD address on
 * another device is stale: replaced.
 */
void rights_learn(struct cache *c, const struct cache_key *key, void *ctx)
{
	struct pd_rights *slot = NULL;
	unsigned int rights = key->access & c->wide_rights;

	if (!rights)
		return;
	for (unsigned int i = 0; i < LEARNT_PDS; i++) {
		struct pd_rights *r = &c->learnt[i];

		if (r->pd == key->pd) {
			if (r->ctx == ctx) {
				r->rights |= rights;
				return;
			}
			slot = r;
			break;
		}
		if (!r->pd && !slot)
			slot = r;
	}
	if (slot)
		*slot = (struct pd_rights){ key->pd, ctx, rights };
}

/*
 * Before the PD (or the device) goes: a new PD that gets the same address
 * must start with no learnt rights.
 */
void rights_forget(struct cache *c, void *pd, void *ctx)
{
	/* Nothing learnt; or a child, which never registers with them. */
	if (!c->wide_rights || cache_in_child(c))
		return;
	lock_cache(c);
	for (unsigned int i = 0; i < LEARNT_PDS; i++) {
		struct pd_rights *r = &c->learnt[i];

		if (r->pd && (pd ? r->pd == pd : r->ctx == ctx))
			*r = (struct pd_rights){ NULL, NULL, 0 };
	}
	unlock_cache(c);
}

/*
 * The merged region stays within half of the byte limit, so that one
 * region can never crowd everything else out of the cache.
 */
struct cache_key widened_key(struct cache *c, const struct cache_key *key,
			     const void *learn_ctx, unsigned int *extra)
{
	struct cache_key rk = *key;
	struct span page = {
		key->addr & ~c->page_mask,
		(key->addr + key->length + c->page_mask) & ~c->page_mask,
	};
	struct merge m = { page, page, key->access };
	struct region_group g = group_of(c, key);

	*extra = 0;
	if (page.end <= page.start)	/* wraps: leave it alone */
		return rk;
	region_index_neighbours(&c->regions, &g, page.start, page.end,
				merge_overlapping, &m);
	if (m.merged.end - m.merged.start > c->limits.max_bytes / 2) {
		m.merged = page;
		m.access = key->access;
	}
	/* An IOVA below the widening would wrap: keep the exact request. */
	if (key->iova < key->addr - m.merged.start)
		return rk;
	rk.addr = m.merged.start;
	rk.length = m.merged.end - m.merged.start;
	rk.iova = key->iova - (key->addr - m.merged.start);
	rk.access = m.access;
	if (learn_ctx) {
		*extra = rights_learnt(c, key->pd, learn_ctx) & ~m.access;
		rk.access |= *extra;
	}
	return rk;
}

void *region_hit_locked(struct cache *c, struct hot *h,
			const struct cache_key *key, bool *found)
{
	struct region_group g = group_of(c, key);
	struct entry *e;
	uint64_t gen;
	void *mr;

	*found = false;
	if (key->addr + key->length < key->addr)
		return NULL;
	e = region_index_find(&c->regions, &g, key->addr,
			      key->addr + key->length);
	/* Without the rights asked for: a miss, which merges them in. */
	if (!e || !access_covers(e->key.access, key->access, c->wide_rights) ||
	    !(gen = entry_get(e, 0)))
		return NULL;
	*found = true;
	atomic_store_explicit(&e->referenced, true, memory_order_relaxed);
	if (key_equal(&e->key, key)) {
		mr = e->mr;
	} else {
		mr = make_slice(c, h, e, gen, e->mr, key);
		if (!mr) {
			/* Usable, and ours: not the last reference. */
			atomic_fetch_sub(&e->state, 1);
			return NULL;
		}
	}
	hot_remember(h, e, gen);
	count_hit(c, h);
	return mr;
}

static void collect(void *owner, void *arg)
{
	struct entry **list = arg;
	struct entry *e = owner;

	e->next_victim = *list;
	*list = e;
}

/*
 * The cached regions @e contains (merged into it) are dropped: idle ones
 * released, busy ones released at their last dereg.  A region that
 * overlaps @e without being inside it, or with rights @e lacks (another
 * thread's registration raced with this one), keeps its place, and @e
 * serves exact hits only.
 */
void region_publish(struct cache *c, struct entry *e, struct entry **victims,
		    void **garbage)
{
	struct region_group g = group_of(c, &e->key);
	uintptr_t start = e->key.addr, end = e->key.addr + e->key.length;
	struct entry *near = NULL, *n;

	region_index_neighbours(&c->regions, &g, start, end, collect, &near);
	for (struct entry *o = near; o; o = n) {
		n = o->next_victim;
		o->next_victim = NULL;
		if (o->key.addr >= start &&
		    o->key.addr + o->key.length <= end &&
		    access_covers(e->key.access, o->key.access,
				  c->wide_rights)) {
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

void region_unindex(struct cache *c, struct entry *e)
{
	struct region_group g;

	if (!e->indexed)
		return;
	g = group_of(c, &e->key);
	region_index_remove(&c->regions, &g, e->key.addr, e);
	e->indexed = false;
}
