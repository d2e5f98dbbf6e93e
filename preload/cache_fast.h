/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The registration cache's hit paths, inline, so that the interposers
 * (interpose.c) run them without a call: a registration that is an exact
 * hit on, or lies inside, an entry this thread remembers, and the
 * deregistration of the MR of this thread's last hit.  Anything else
 * returns "not done" and the caller goes on with cache_reg_miss() or
 * cache_dereg_miss(); cache_reg() and cache_dereg() (and
 * cache_dereg_inline(), the interposer's) are the two halves together.  The rules are those of cache_internal.h ("References").
 */
#ifndef UMMUSHIM_CACHE_FAST_H
#define UMMUSHIM_CACHE_FAST_H

#include "cache_internal.h"
#include "monitor.h"

/*
 * A hit on an entry this thread remembers (no lock, no cancellation
 * point; a system call only for a backend that probes), or NULL: call
 * cache_reg_miss() with *@check, the monitor check's result, so that it
 * does not probe a second time (a probe costs a system call under uffd).
 */
static inline void *cache_reg_hit(struct cache *c, const struct cache_key *key,
				  enum cache_check *check)
{
	struct hot *h;
	void *mr;

	*check = CACHE_CHECK_NOT_DONE;
	if (__builtin_expect(atomic_load(&c->child) || atomic_load(&c->broken),
			     0))
		return NULL;
	if (!monitor_check(c->mon, key->addr, key->addr + key->length)) {
		*check = CACHE_CHECK_FAILED;
		return NULL;
	}
	*check = CACHE_CHECK_PASSED;
	h = hot_peek(c);
	if (__builtin_expect(h == NULL, 0))
		return NULL;
	mr = hot_hit_last(c, h, key);
	return __builtin_expect(mr != NULL, 1) ? mr : hot_hit(c, h, key);
}

/*
 * The deregistration of the MR this thread's last exact hit returned, or
 * of the slice object it handed out last (both known to be the cache's
 * without a lookup; a real MR is never a slice object): the call's result
 * (0 or a positive errno value), or -1: call cache_dereg_miss().
 */
static inline int cache_dereg_hit(struct cache *c, void *mr)
{
	struct hot *h = hot_peek(c);
	struct hot_slot *s;
	int done;

	if (__builtin_expect(h == NULL || atomic_load(&c->child), 0))
		return -1;
	s = &h->slot[(h->next - 1) % HOT_SLOTS];
	if (__builtin_expect(s->e != NULL && s->mr == mr, 1)) {
		done = entry_put_fast(s->e, s->gen);
		if (done == 2)
			after_idle(c, mr);
		return done ? 0 : -1;
	}
	if (h->last_slice && mr == slice_obj(h->last_slice))
		return slice_dereg(c, h->last_slice, mr);
	return -1;
}

/* cache_dereg(): its hit half inline, then the rest. */
static inline int cache_dereg_inline(struct cache *c, void *mr)
{
	int rc = cache_dereg_hit(c, mr);

	if (__builtin_expect(rc < 0, 0))
		rc = cache_dereg_miss(c, mr);
	return rc;
}

#endif /* UMMUSHIM_CACHE_FAST_H */
