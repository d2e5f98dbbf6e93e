// SPDX-License-Identifier: BSD-2-Clause
/*
 * Invalidations: draining the monitor and applying what it reports to the
 * cache's entries (an idle one is released, a busy one becomes stale, a
 * pending one is not cached), and turning caching off when the monitor
 * fails.  The rules are in cache_internal.h.
 */
#define _GNU_SOURCE
#include "cache_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* ---- stale reports ------------------------------------------------------ */

/*
 * Stale MRs are reported after the drain, outside every lock: a drain
 * records the first few in its context (no allocation, no log buffer) and
 * counts the rest; report_stale() then writes at most STALE_DETAILS lines
 * for them plus one line with the count of the others, and no more than
 * STALE_LINES_PER_WINDOW lines per STALE_WINDOW_NS across drains: lines
 * over that are counted and the count is said by the next line written
 * (and at exit, cache_report_suppressed()).  Nothing is dropped silently.
 */
#define STALE_DETAILS 4
#define STALE_LINES_PER_WINDOW 20
#define STALE_WINDOW_NS 10000000000ULL	/* 10 s */

struct stale_record {
	void *mr;
	uintptr_t start, end;
	uintptr_t hit_start, hit_end;	/* the invalidated part, if known */
	bool unmapped;
};

struct drain_ctx {
	struct cache *c;
	struct entry *victims;
	struct stale_record stale[STALE_DETAILS];
	unsigned int n_stale, n_unmapped;
};

/* Whether one more stale line may be written now (rate limit). */
static bool stale_line_allowed(struct cache *c)
{
	uint64_t now = stats_now_ns();
	uint64_t start = atomic_load(&c->stale_window_start);

	if (now - start > STALE_WINDOW_NS &&
	    atomic_compare_exchange_strong(&c->stale_window_start, &start, now))
		atomic_store(&c->stale_window_lines, 0);
	if (atomic_fetch_add(&c->stale_window_lines, 1) < STALE_LINES_PER_WINDOW)
		return true;
	atomic_fetch_add(&c->stale_suppressed, 1);
	return false;
}

/* " (N earlier stale warnings suppressed)" when there are such. */
static void suppressed_note(struct cache *c, char *buf, size_t size)
{
	uint64_t n = atomic_exchange(&c->stale_suppressed, 0);

	buf[0] = '\0';
	if (n)
		snprintf(buf, size, " (%" PRIu64 " earlier stale-MR warnings suppressed by the rate limit)", n);
}

static void report_one(struct cache *c, const struct stale_record *r)
{
	char note[96], part[64] = "";

	suppressed_note(c, note, sizeof(note));
	/* Which pages changed tells a split, an unmap and a widened range apart. */
	if (r->hit_start < r->hit_end)
		snprintf(part, sizeof(part), " (invalidated: [%#" PRIxPTR ", %#" PRIxPTR "))",
			 r->hit_start, r->hit_end);
	if (r->unmapped)
		log_warn("MR %p [%#" PRIxPTR ", %#" PRIxPTR "): the application unmapped memory it still had registered; the MR is no longer cached and is deregistered at its last ibv_dereg_mr%s%s",
			 r->mr, r->start, r->end, part, note);
	else
		log_warn("MR %p [%#" PRIxPTR ", %#" PRIxPTR "): the kernel reported an invalidation over an in-use MR (the application may have changed the memory, or the kernel moved or split its pages, e.g. a huge-page split next to it); the MR is no longer cached and is deregistered at its last ibv_dereg_mr%s%s",
			 r->mr, r->start, r->end, part, note);
}

/* No lock held. */
static void report_stale(struct cache *c, const struct drain_ctx *d)
{
	unsigned int shown = d->n_stale < STALE_DETAILS ? d->n_stale : STALE_DETAILS;
	unsigned int unmapped_shown = 0;
	char note[96];

	for (unsigned int i = 0; i < shown; i++) {
		unmapped_shown += d->stale[i].unmapped;
		if (stale_line_allowed(c))
			report_one(c, &d->stale[i]);
	}
	if (d->n_stale <= shown)
		return;
	if (!stale_line_allowed(c)) {
		atomic_fetch_add(&c->stale_suppressed, d->n_stale - shown - 1);
		return;
	}
	suppressed_note(c, note, sizeof(note));
	log_warn("%u more MRs in use were invalidated at the same time (%u where the application unmapped the memory, %u other invalidations); none is cached any more%s",
		 d->n_stale - shown, d->n_unmapped - unmapped_shown,
		 (d->n_stale - shown) - (d->n_unmapped - unmapped_shown), note);
}

void cache_report_suppressed(struct cache *c)
{
	uint64_t n = atomic_exchange(&c->stale_suppressed, 0);

	if (n)
		log_warn("%" PRIu64 " stale-MR warnings were suppressed by the rate limit (see the stale counters of UMMUSHIM_STATS=1)", n);
}

/* ---- invalidation ------------------------------------------------------ */

/* [@start, @end): the reported range (0, 0: unknown), clipped to @e. */
static void record_stale(struct drain_ctx *d, const struct entry *e,
			 bool unmapped, uintptr_t start, uintptr_t end)
{
	struct cache *c = d->c;

	stats_inc(&c->stats->stale);
	stats_inc(unmapped ? &c->stats->stale_unmapped :
			     &c->stats->stale_invalidated);
	if (d->n_stale < STALE_DETAILS)
		d->stale[d->n_stale] = (struct stale_record){
			.mr = e->mr,
			.start = e->key.addr,
			.end = e->key.addr + e->key.length,
			.hit_start = start > e->key.addr ? start : e->key.addr,
			.hit_end = end < e->key.addr + e->key.length ?
				   end : e->key.addr + e->key.length,
			.unmapped = unmapped,
		};
	d->n_stale++;
	d->n_unmapped += unmapped;
}

static void invalidate_entry(struct drain_ctx *d, struct entry *e,
			     unsigned int flags, uintptr_t start, uintptr_t end)
{
	struct cache *c = d->c;
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
		entry_evict(c, e, &d->victims);
	} else {
		entry_uncache(c, e);
		record_stale(d, e, flags & MONITOR_INVAL_UNMAPPED, start, end);
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
			  uintptr_t end, unsigned int flags)
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
				invalidate_entry(d, e, flags, start, end);
		}
	} else {
		struct entry *e = find_by_cookie(c, cookie);

		if (e)
			invalidate_entry(d, e, flags, start, end);
	}
	unlock_cache(c);
}

/* The monitor failed: stop caching and let go of everything idle. */
static void cache_break(struct cache *c, int err, struct entry **victims)
{
	uint64_t busy = 0;

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
		if (e->pending) {
			e->inval_pending = true;
		} else if (entry_drop_if_idle(e)) {
			entry_evict(c, e, victims);
		} else {
			entry_uncache(c, e);
			busy++;
		}
		entry_unlock(c, el);
	}
	unlock_cache(c);
	/* In use, and from now on nobody can tell whether they changed. */
	stats_add(&c->stats->stale, busy);
	if (busy)
		log_warn("%" PRIu64 " MRs in use stay registered but are no longer cached; each is deregistered at its last ibv_dereg_mr",
			 busy);
}

/*
 * Apply every invalidation reported so far.  The common case costs one
 * load of the monitor's counter.  A thread that sees a change waits for
 * mon_lock even if another thread is already draining: it must not look
 * up entries before the invalidations it could observe are applied.
 */
void cache_sync(struct cache *c)
{
	struct drain_ctx d = { .c = c, .victims = NULL };
	bool drained = false;

	if (!c->mon->ops->changed(c->mon) || cache_in_child(c))
		return;
	lock_mon(c);
	if (!atomic_load(&c->broken) && c->mon->ops->changed(c->mon)) {
		int rc = c->mon->ops->drain(c->mon, on_invalidate, &d);

		/*
		 * A monitor used from a forked child fails (ECHILD from the
		 * uffd monitor, EIO from /dev/ummunot, whose events belong
		 * to the parent's mm): that is a fork, not a broken monitor.
		 * Nothing is recorded in the cache for it: a child sharing
		 * the parent's memory (clone(CLONE_VM)) would record it for
		 * the parent too; cache_in_child() tells each by its pid.
		 */
		if (rc < 0 && rc != -ECHILD && !cache_in_child(c))
			cache_break(c, rc, &d.victims);
		drained = true;
	}
	unlock_mon(c);
	if (drained)
		report_stale(c, &d);
	release_victims(c, d.victims);
}
