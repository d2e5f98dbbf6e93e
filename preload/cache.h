/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The registration cache, independent of libibverbs: it sees protection
 * domains, device contexts and memory regions as opaque pointers, calls
 * the real registration functions through struct cache_ops and learns
 * about invalidations from a struct monitor.  Unit tests drive it with
 * test doubles of both.
 *
 * Semantics:
 *  - Key (pd, addr, length, iova, access).  A hit returns the same MR
 *    pointer the real library returned and takes a reference.
 *  - Containment (limits.subrange): a miss registers the page-aligned
 *    region around the request, merged with the cached regions of the
 *    same group (pd, access, iova - addr) it overlaps (up to half of
 *    max_bytes); a later request inside a cached region takes a reference
 *    on it and gets a pooled per-request object (ops.slice_init) with its
 *    own address and length and the region's keys.  Dereg of that object
 *    drops the region's reference.  An invalidation of any page of a
 *    region drops the whole region, for every slice.
 *  - Rights (CACHE_SUBRANGE_ALL only): groups leave limits.rights out of
 *    the access; a region whose access holds more of limits.rights than a
 *    request asks for, and the same other bits, serves it too; a miss
 *    registers the union of the request's rights, those of the cached
 *    regions it overlaps and those learnt from every region registered on
 *    its PD; if the device refuses, tried once more without the learnt
 *    ones, then the request's own registration is passed through.
 *  - cache_dereg() drops a reference; an unreferenced (idle) MR stays
 *    registered until it is evicted (clock, an approximation of LRU,
 *    bounded by count and pinned bytes) or invalidated.
 *  - Before each lookup the monitor is asked whether anything changed (no
 *    system call) and drained if so: an idle invalidated MR is
 *    deregistered; a busy one becomes stale: never returned again,
 *    deregistered at its last cache_dereg(), reported as a warning.
 *  - In a forked child (cache_fork_child(), or a pid that differs from the
 *    creator's, noticed on the slow paths: miss, drain, release) new
 *    registrations pass through and the parent's MRs are never
 *    deregistered, unwatched or drained.
 *  - A failing monitor turns caching off for good.
 *
 * Thread-safe: every function may be called from any thread at any time
 * (hits on different entries do not contend).  The structures and the
 * locking rules are private: cache_internal.h.
 */
#ifndef UMMUSHIM_CACHE_H
#define UMMUSHIM_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "monitor.h"
#include "stats.h"

struct cache_key {
	void *pd;
	uintptr_t addr;
	size_t length;
	uint64_t iova;
	unsigned int access;
};

struct cache_ops {
	/*
	 * Real registration: the MR, or NULL with errno set.  @how is
	 * cache_reg()'s argument, passed through untouched (the interposer
	 * uses it to call the same entry point the application called).
	 */
	void *(*reg)(void *arg, const struct cache_key *key, int how);
	/* Real deregistration: 0 or a positive errno value. */
	int (*dereg)(void *arg, void *mr);
	void *arg;
	/*
	 * Containment hits: the object handed out for a request served by a
	 * larger cached region is @slice_size bytes, filled by slice_init()
	 * from the region's real MR for the request @key (the request's
	 * address and length, the region's keys).  0 / NULL: no containment.
	 */
	size_t slice_size;
	void (*slice_init)(void *slice, const void *region_mr,
			   const struct cache_key *key);
};

/*
 * Which registrations may be served by, or widened into, a larger region
 * (page-aligned, merged with the cached regions it overlaps):
 * none, those without any of the @remote_access bits (a region's rkey
 * lets a peer reach all of it, not only the slice asked for), or all.
 */
enum cache_subrange {
	CACHE_SUBRANGE_OFF,
	CACHE_SUBRANGE_LOCAL,
	CACHE_SUBRANGE_ALL,
};

struct cache_limits {
	uint64_t max_entries;	/* registered MRs held by the cache */
	uint64_t max_bytes;	/* bytes of those MRs */
	enum cache_subrange subrange;	/* zero: off */
	unsigned int remote_access;	/* access bits of remote access */
	/*
	 * Access bits that only grant rights (write locally, let a peer
	 * read, write, use atomics, bind windows): under CACHE_SUBRANGE_ALL
	 * a request may be served by a region registered with more of them,
	 * and a miss merges an overlapping region's, and those learnt from
	 * its PD, into its own.  Every other bit (on-demand paging,
	 * zero-based, huge pages, relaxed ordering, flush, any unknown bit)
	 * must match exactly.  Ignored otherwise.
	 */
	unsigned int rights;
	/*
	 * Invalid access: bits of limits.rights that the device refuses
	 * without @local_write (verbs: remote write and atomics need local
	 * write).  Such a request is never served by a region with more
	 * rights, nor widened: it gets the device's own answer.
	 */
	unsigned int need_local_write, local_write;
};

struct cache;

/* NULL on allocation failure.  The cache does not own @mon. */
struct cache *cache_create(const struct cache_ops *ops, struct monitor *mon,
			   const struct cache_limits *limits,
			   struct shim_stats *stats);

/* Deregister idle MRs, forget the rest, free everything (tests, exit). */
void cache_destroy(struct cache *c);

/* ibv_reg_mr: the MR or NULL with errno set (the real library's). */
void *cache_reg(struct cache *c, const struct cache_key *key, void *dev_ctx,
		int how);
/* What the inline hit path learnt from the monitor about the range. */
enum cache_check {
	CACHE_CHECK_NOT_DONE,	/* not asked */
	CACHE_CHECK_PASSED,	/* nothing changed: a plain hit may serve */
	CACHE_CHECK_FAILED,	/* something may have: drain first */
};

/*
 * cache_reg() after its inline first half, cache_reg_hit() (cache_fast.h),
 * found no hit; @check is what that half's monitor check said.
 */
void *cache_reg_miss(struct cache *c, const struct cache_key *key,
		     void *dev_ctx, int how, enum cache_check check);

/*
 * A registration the caller decided not to cache (on-demand paging, not
 * from the application, ...): the real one, retried once after releasing
 * idle cached MRs if it fails with ENOMEM.
 */
void *cache_reg_uncached(struct cache *c, const struct cache_key *key,
			 int how);

/*
 * Apply the invalidations reported so far (idle invalidated MRs are
 * deregistered now).  For a thread that waits on the monitor's
 * wait_fd(), so they are released without the application's next call.
 * That thread must place no new mapping (see releaser.h): nothing this
 * reaches may allocate 128 KiB or more, or grow an array with realloc().
 */
void cache_release_invalidated(struct cache *c);

/* At exit: say how many stale-MR warnings the rate limit suppressed. */
void cache_report_suppressed(struct cache *c);

/* ibv_dereg_mr: 0 or a positive errno value. MRs not ours pass through. */
int cache_dereg(struct cache *c, void *mr);
/* cache_dereg() after cache_dereg_hit() (cache_fast.h) did not do it. */
int cache_dereg_miss(struct cache *c, void *mr);

/* Before ibv_dealloc_pd / ibv_close_device: deregister idle MRs of it. */
void cache_release_pd(struct cache *c, void *pd);
void cache_release_ctx(struct cache *c, void *dev_ctx);
/* After a successful ibv_close_device: drop what is left of @dev_ctx. */
void cache_forget_ctx(struct cache *c, void *dev_ctx);

/*
 * Before ibv_rereg_mr: take @mr out of the cache (it stays registered).
 * -EBUSY (and nothing changes) when several registrations share @mr
 * (refs > 1): rereg would move it under the other holders.  0 otherwise.
 */
int cache_detach(struct cache *c, void *mr);

/* pthread_atfork handlers for this cache. */
void cache_fork_prepare(struct cache *c);
void cache_fork_parent(struct cache *c);
void cache_fork_child(struct cache *c);

/* Introspection, for tests and diagnostics. */
bool cache_is_broken(struct cache *c);
size_t cache_registered_count(struct cache *c);	/* MRs held, busy or idle */
size_t cache_idle_count(struct cache *c);

#endif /* UMMUSHIM_CACHE_H */
