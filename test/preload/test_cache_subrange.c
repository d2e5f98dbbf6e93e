// SPDX-License-Identifier: BSD-2-Clause
/*
 * Unit tests of containment hits (cache_region.c, cache_hot.c): regions,
 * merging, slice objects, UMMUSHIM_SUBRANGE's policies, invalidation of
 * a region through one slice's page, and the lock-free remembered hits,
 * against the test doubles of the monitor and of the real functions.
 */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "cache_fixture.h"
#include "cache_internal.h"	/* LEARNT_PDS */
#include "fakes.h"
#include "stats.h"

#define BASE 0x100000UL		/* page-aligned */
#define P(n) (BASE + (n) * PAGE)
#define LOCAL 0x1u		/* access bits of the tests: local ... */
#define REMOTE 0x6u		/* ... and remote (limits.remote_access) */
/* The rights limits.rights lets "all" widen (libibverbs' values). */
#define LOCAL_WRITE 0x1u
#define REMOTE_WRITE 0x2u
#define REMOTE_READ 0x4u
#define REMOTE_ATOMIC 0x8u
#define RIGHTS 0x1fu		/* ... and REMOTE_ATOMIC, MW_BIND */
#define ROW (64 * PAGE)		/* a halo row of 256 KiB */

static struct cache_limits limits_of(enum cache_subrange mode,
				     uint64_t max_bytes)
{
	struct cache_limits lim = {
		.max_entries = 1000,
		.max_bytes = max_bytes,
		.subrange = mode,
		.remote_access = REMOTE,
		.rights = RIGHTS,
		.local_write = LOCAL_WRITE,
		.need_local_write = REMOTE_WRITE | REMOTE_ATOMIC,
	};

	return lim;
}

static void make_cache(enum cache_subrange mode, uint64_t max_bytes)
{
	struct cache_limits lim = limits_of(mode, max_bytes);

	fixture_make_cache(&lim);
}

static void setup(void)
{
	struct cache_limits lim = limits_of(CACHE_SUBRANGE_LOCAL, 1ULL << 40);

	fixture_setup(&lim);
}

static struct fake_mr *reg_a(uintptr_t addr, size_t len, unsigned int access)
{
	struct cache_key k = { PD1, addr, len, addr, access };

	return cache_reg(cache, &k, CTX1, 0);
}

static struct fake_mr *reg_pd(void *pd, uintptr_t addr, size_t len,
			      unsigned int access)
{
	struct cache_key k = { pd, addr, len, addr, access };

	return cache_reg(cache, &k, pd == PD1 ? CTX1 : CTX2, 0);
}

static struct fake_mr *reg(uintptr_t addr, size_t len)
{
	return reg_a(addr, len, LOCAL);
}

static struct cache_key last_key(void)
{
	struct cache_key k;

	pthread_mutex_lock(&fv->lock);
	k = fv->last_key;
	pthread_mutex_unlock(&fv->lock);
	return k;
}

/* The access the live real registration with @serial was made with. */
static unsigned int access_of(int serial)
{
	unsigned int access = ~0u;

	pthread_mutex_lock(&fv->lock);
	for (struct fake_mr *m = fv->live_list.next; m != &fv->live_list;
	     m = m->next)
		if (m->serial == serial)
			access = m->key.access;
	pthread_mutex_unlock(&fv->lock);
	return access;
}

/* @m is a slice object for exactly [addr, addr + len) of region @r. */
static void assert_slice(const struct fake_mr *m, uintptr_t addr, size_t len,
			 const struct fake_mr *r)
{
	ck_assert_ptr_nonnull(m);
	ck_assert_ptr_ne(m, r);
	ck_assert_uint_eq(m->magic, FAKE_SLICE_MAGIC);
	ck_assert_uint_eq(m->key.addr, addr);
	ck_assert_uint_eq(m->key.length, len);
	ck_assert_int_eq(m->serial, r->serial);	/* the region's keys */
}

/* ---- containment hits ----------------------------------------------------- */

START_TEST(miss_registers_the_page_aligned_region)
{
	struct fake_mr *a = reg(P(1) + 100, 200);
	struct cache_key k = last_key();

	ck_assert_int_eq(n_reg(), 1);
	ck_assert_uint_eq(k.addr, P(1));
	ck_assert_uint_eq(k.length, PAGE);
	ck_assert_uint_eq(k.iova, P(1));
	/* The application sees what it asked for. */
	ck_assert_uint_eq(a->magic, FAKE_SLICE_MAGIC);
	ck_assert_uint_eq(a->key.addr, P(1) + 100);
	ck_assert_uint_eq(a->key.length, 200);
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	ck_assert_int_eq(n_dereg(), 0);
}
END_TEST

START_TEST(containment_hit_returns_a_slice_with_the_regions_keys)
{
	struct fake_mr *r = reg(P(0), 8 * PAGE);
	struct fake_mr *s1 = reg(P(2) + 8, 100);
	struct fake_mr *s2 = reg(P(0), 8 * PAGE - 1);

	ck_assert_uint_eq(r->magic, FAKE_MR_MAGIC);	/* its own: the real MR */
	assert_slice(s1, P(2) + 8, 100, r);
	assert_slice(s2, P(0), 8 * PAGE - 1, r);
	ck_assert_ptr_ne(s1, s2);
	ck_assert_int_eq(n_reg(), 1);
	ck_assert_uint_eq(stats_hits(st), 2);
	ck_assert_uint_eq(stats_get(&st->misses), 1);
	/* Not inside: a miss. */
	reg(P(7), 2 * PAGE);
	ck_assert_int_eq(n_reg(), 2);
}
END_TEST

START_TEST(slice_dereg_drops_the_regions_reference)
{
	struct fake_mr *r = reg(P(0), 4 * PAGE);
	struct fake_mr *s = reg(P(1), PAGE);

	ck_assert_int_eq(cache_dereg(cache, r), 0);
	ck_assert_uint_eq(cache_idle_count(cache), 0);	/* s holds it */
	ck_assert_int_eq(cache_dereg(cache, s), 0);
	ck_assert_uint_eq(cache_idle_count(cache), 1);	/* lazy: kept */
	ck_assert_int_eq(n_dereg(), 0);
	/* Twice: refused, nothing released. */
	ck_assert_int_eq(cache_dereg(cache, s), EINVAL);
	ck_assert_int_eq(n_dereg(), 0);
	/* And it is hit again. */
	s = reg(P(2), 10);
	assert_slice(s, P(2), 10, r);
	ck_assert_int_eq(n_reg(), 1);
}
END_TEST

START_TEST(slice_rereg_is_refused)
{
	reg(P(0), 4 * PAGE);
	ck_assert_int_eq(cache_detach(cache, reg(P(1), 16)), -EBUSY);
}
END_TEST

START_TEST(iova_offset_must_match)
{
	struct cache_key whole = { PD1, P(0), 4 * PAGE, 0, LOCAL };
	struct cache_key inside = { PD1, P(1), PAGE, PAGE, LOCAL };
	struct cache_key shifted = { PD1, P(1), PAGE, P(1), LOCAL };
	struct fake_mr *r = cache_reg(cache, &whole, CTX1, 0);
	struct fake_mr *s = cache_reg(cache, &inside, CTX1, 0);

	assert_slice(s, P(1), PAGE, r);
	ck_assert_int_eq(n_reg(), 1);
	cache_reg(cache, &shifted, CTX1, 0);
	ck_assert_int_eq(n_reg(), 2);
}
END_TEST

/* ---- merging --------------------------------------------------------------- */

/*
 * Regions that only touch stay apart, as in UCX's rcache: merging them
 * would register the cached neighbours' pages again on every miss next
 * to them (a halo exchange's adjacent rows: O(n^2) bytes pinned for n
 * rows), to serve only requests that straddle the boundary.
 */
START_TEST(touching_regions_stay_apart)
{
	struct fake_mr *a = reg(P(0), 2 * PAGE), *b, *s;
	struct cache_key k;

	ck_assert_int_eq(cache_dereg(cache, a), 0);
	b = reg(P(2), 2 * PAGE);
	k = last_key();
	ck_assert_uint_eq(k.addr, P(2));
	ck_assert_uint_eq(k.length, 2 * PAGE);
	ck_assert_int_eq(n_dereg(), 0);		/* a stays cached */
	ck_assert_uint_eq(b->magic, FAKE_MR_MAGIC);	/* its own region */
	/* Each serves its own slices. */
	s = reg(P(0) + 8, PAGE);
	assert_slice(s, P(0) + 8, PAGE, a);
	s = reg(P(3), 8);
	assert_slice(s, P(3), 8, b);
	ck_assert_int_eq(n_reg(), 2);
	/* Across the boundary: overlaps both, merged into one. */
	s = reg(P(1), 2 * PAGE);
	k = last_key();
	ck_assert_uint_eq(k.addr, P(0));
	ck_assert_uint_eq(k.length, 4 * PAGE);
	ck_assert_uint_eq(s->magic, FAKE_SLICE_MAGIC);
	ck_assert_int_eq(n_reg(), 3);
}
END_TEST

/* The halo's pattern: each adjacent row registers its own pages once. */
START_TEST(adjacent_rows_pin_only_their_own_pages)
{
	struct fake_mr *row[6];
	uint64_t pinned = 0;

	for (int i = 0; i < 6; i++) {
		row[i] = reg(P(4 * i), 4 * PAGE);	/* in use, like an Isend's */
		ck_assert_ptr_nonnull(row[i]);
		pinned += last_key().length;
	}
	ck_assert_int_eq(n_reg(), 6);
	ck_assert_uint_eq(pinned, 6 * 4 * PAGE);
	for (int i = 0; i < 6; i++)
		ck_assert_int_eq(cache_dereg(cache, row[i]), 0);
	ck_assert_int_eq(n_dereg(), 0);
	/* And every row hits again. */
	for (int i = 0; i < 6; i++)
		ck_assert_ptr_eq(reg(P(4 * i), 4 * PAGE), row[i]);
	ck_assert_int_eq(n_reg(), 6);
}
END_TEST

START_TEST(merged_away_region_in_use_is_released_at_its_last_dereg)
{
	struct fake_mr *a = reg(P(0), 2 * PAGE);	/* kept busy */
	struct fake_mr *b = reg(P(1), 2 * PAGE);	/* overlaps: merged */

	ck_assert_int_eq(n_reg(), 2);
	ck_assert_uint_eq(last_key().length, 3 * PAGE);
	ck_assert_int_eq(n_dereg(), 0);
	ck_assert_uint_eq(stats_get(&st->stale), 0);	/* not an invalidation */
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	ck_assert_int_eq(n_dereg(), 1);
	ck_assert_int_eq(cache_dereg(cache, b), 0);
	ck_assert_int_eq(n_dereg(), 1);
	reg(P(0), 10);				/* the merged region */
	ck_assert_int_eq(n_reg(), 2);
}
END_TEST

START_TEST(merging_is_bounded_by_the_byte_limit)
{
	struct fake_mr *a;

	make_cache(CACHE_SUBRANGE_LOCAL, 6 * PAGE);	/* merged: <= 3 pages */
	a = reg(P(0), 2 * PAGE);
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	reg(P(1), 3 * PAGE);		/* overlaps a: 4 pages merged, too big */
	ck_assert_uint_eq(last_key().addr, P(1));
	ck_assert_uint_eq(last_key().length, 3 * PAGE);
	ck_assert_int_eq(n_dereg(), 0);
	/* a still serves its own slices. */
	assert_slice(reg(P(0) + 5, 5), P(0) + 5, 5, a);
	ck_assert_int_eq(n_reg(), 2);
}
END_TEST

/* ---- invalidation --------------------------------------------------------- */

START_TEST(invalidating_one_slices_page_drops_the_region_for_every_slice)
{
	struct fake_mr *r = reg(P(0), 8 * PAGE);
	struct fake_mr *s1 = reg(P(1), 100), *s6 = reg(P(6), 100), *again;

	ck_assert_int_eq(cache_dereg(cache, r), 0);
	fake_invalidate(fmon, P(6), P(6) + PAGE);	/* s6's page only */
	again = reg(P(1), 100);				/* s1's range */
	ck_assert_int_eq(n_reg(), 2);			/* a miss */
	ck_assert_int_ne(again->serial, r->serial);
	ck_assert_uint_eq(stats_get(&st->stale), 1);	/* in use: stale */
	ck_assert_int_eq(n_dereg(), 0);			/* held by slices */
	ck_assert_int_eq(cache_dereg(cache, s1), 0);
	ck_assert_int_eq(n_dereg(), 0);
	ck_assert_int_eq(cache_dereg(cache, s6), 0);
	ck_assert_int_eq(n_dereg(), 1);			/* at the last one */
}
END_TEST

START_TEST(invalidated_idle_region_is_never_hit_again)
{
	struct fake_mr *r = reg(P(0), 8 * PAGE), *s;
	int serial = r->serial;		/* r is freed when released */

	s = reg(P(3), 100);		/* remembered by this thread */
	ck_assert_int_eq(cache_dereg(cache, s), 0);
	ck_assert_int_eq(cache_dereg(cache, r), 0);
	fake_invalidate(fmon, P(7), P(8));
	s = reg(P(3), 100);
	ck_assert_int_eq(n_reg(), 2);
	ck_assert_int_eq(n_dereg(), 1);
	ck_assert_int_ne(s->serial, serial);
}
END_TEST

START_TEST(remembered_exact_hit_is_dropped_with_its_entry)
{
	struct fake_mr *a, *b;

	make_cache(CACHE_SUBRANGE_OFF, 1ULL << 40);
	a = reg(P(0), PAGE);
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	a = reg(P(0), PAGE);		/* a remembered hit */
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	fake_invalidate(fmon, P(0), P(1));
	b = reg(P(0), PAGE);
	ck_assert_int_eq(n_reg(), 2);
	ck_assert_int_eq(b->serial, 1);	/* the second real registration */
	/* The entry was reused for the new registration: still exact. */
	ck_assert_int_eq(cache_dereg(cache, b), 0);
	ck_assert_int_eq(cache_dereg(cache, b), EINVAL);
}
END_TEST

/* ---- UMMUSHIM_SUBRANGE ---------------------------------------------------- */

START_TEST(off_matches_exactly)
{
	struct fake_mr *r, *s;

	make_cache(CACHE_SUBRANGE_OFF, 1ULL << 40);
	r = reg(P(0), 8 * PAGE);
	s = reg(P(1) + 3, 100);
	ck_assert_int_eq(n_reg(), 2);
	ck_assert_uint_eq(s->magic, FAKE_MR_MAGIC);
	ck_assert_uint_eq(last_key().addr, P(1) + 3);	/* not widened */
	ck_assert_uint_eq(last_key().length, 100);
	ck_assert_ptr_ne(r, s);
}
END_TEST

START_TEST(local_keeps_remote_access_exact)
{
	struct fake_mr *r = reg_a(P(0), 8 * PAGE, LOCAL | 0x2), *s;

	s = reg_a(P(1) + 3, 100, LOCAL | 0x2);
	ck_assert_int_eq(n_reg(), 2);
	ck_assert_uint_eq(s->magic, FAKE_MR_MAGIC);
	ck_assert_uint_eq(last_key().addr, P(1) + 3);
	ck_assert_uint_eq(last_key().length, 100);
	ck_assert_ptr_ne(r, s);
	/* Local-only access in the same range is served as slices. */
	r = reg(P(0), 8 * PAGE);
	assert_slice(reg(P(2), 8), P(2), 8, r);
	ck_assert_int_eq(n_reg(), 3);
}
END_TEST

START_TEST(all_serves_remote_access_too)
{
	struct fake_mr *r, *s;

	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	r = reg_a(P(0), 8 * PAGE, LOCAL | 0x4);
	s = reg_a(P(1) + 3, 100, LOCAL | 0x4);
	assert_slice(s, P(1) + 3, 100, r);
	ck_assert_int_eq(n_reg(), 1);
	/* A right the region lacks: a miss, registering both regions' rights. */
	reg_a(P(1), 100, LOCAL | 0x2);
	ck_assert_int_eq(n_reg(), 2);
	ck_assert_uint_eq(last_key().access, LOCAL | 0x6);
	ck_assert_uint_eq(last_key().addr, P(0));
	ck_assert_uint_eq(last_key().length, 8 * PAGE);
}
END_TEST

/* ---- rights (access-flag widening, "all" only) ------------------------------ */

/*
 * Open MPI's ofi_rxm (libfabric's cache off) registers a row with
 * LOCAL_WRITE to receive into it and later with REMOTE_READ for a peer's
 * rendezvous read.  Under "all" the second is registered once with both
 * rights, replacing the first, and from then on every use of either kind
 * is a hit on that one registration.
 */
START_TEST(all_registers_both_rights_once_then_hits)
{
	struct fake_mr *w, *r, *w2, *r2;
	int serial;

	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	w = reg_a(P(0), ROW, LOCAL_WRITE);
	ck_assert_int_eq(cache_dereg(cache, w), 0);
	r = reg_a(P(0), ROW, REMOTE_READ);
	ck_assert_int_eq(n_reg(), 2);
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE | REMOTE_READ);
	ck_assert_uint_eq(last_key().addr, P(0));
	ck_assert_uint_eq(last_key().length, ROW);
	/* The LOCAL_WRITE-only one, idle, went; one registration is left. */
	ck_assert_int_eq(n_dereg(), 1);
	ck_assert_uint_eq(cache_registered_count(cache), 1);
	/* What the application asked for, with the region's keys. */
	ck_assert_uint_eq(r->magic, FAKE_SLICE_MAGIC);
	ck_assert_uint_eq(r->key.addr, P(0));
	ck_assert_uint_eq(r->key.length, ROW);
	serial = r->serial;
	ck_assert_uint_eq(access_of(serial), LOCAL_WRITE | REMOTE_READ);
	ck_assert_int_eq(cache_dereg(cache, r), 0);
	/* The next uses of either kind hit it. */
	w2 = reg_a(P(0), ROW, LOCAL_WRITE);
	r2 = reg_a(P(0) + 8, ROW - 8, REMOTE_READ);
	ck_assert_uint_eq(w2->magic, FAKE_SLICE_MAGIC);
	ck_assert_uint_eq(w2->key.addr, P(0));
	ck_assert_uint_eq(w2->key.length, ROW);
	ck_assert_int_eq(w2->serial, serial);
	ck_assert_ptr_ne(w2, r2);
	ck_assert_int_eq(r2->serial, serial);
	ck_assert_int_eq(n_reg(), 2);
	ck_assert_uint_eq(stats_hits(st), 2);
	ck_assert_int_eq(cache_dereg(cache, w2), 0);
	ck_assert_int_eq(cache_dereg(cache, r2), 0);
	ck_assert_int_eq(n_dereg(), 1);
	ck_assert_uint_eq(cache_idle_count(cache), 1);
}
END_TEST

/* The same while the LOCAL_WRITE registration is still in use. */
START_TEST(all_releases_the_narrower_region_at_its_last_dereg)
{
	struct fake_mr *w, *r;
	int serial;

	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	w = reg_a(P(0), ROW, LOCAL_WRITE);
	r = reg_a(P(0), ROW, REMOTE_READ);
	serial = r->serial;
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE | REMOTE_READ);
	ck_assert_int_eq(n_dereg(), 0);			/* w is busy */
	ck_assert_uint_eq(stats_get(&st->stale), 0);	/* not an invalidation */
	ck_assert_int_eq(cache_dereg(cache, w), 0);
	ck_assert_int_eq(n_dereg(), 1);			/* released now */
	ck_assert_int_eq(cache_dereg(cache, r), 0);
	ck_assert_int_eq(n_dereg(), 1);			/* kept: cached */
	ck_assert_int_eq(reg_a(P(0), ROW, LOCAL_WRITE)->serial, serial);
	ck_assert_int_eq(n_reg(), 2);
}
END_TEST

/* A request overlapping a region with other rights: pages and rights merge. */
START_TEST(all_merges_rights_with_an_overlapping_region)
{
	struct fake_mr *w, *r;

	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	w = reg_a(P(0), 4 * PAGE, LOCAL_WRITE);
	ck_assert_int_eq(cache_dereg(cache, w), 0);
	r = reg_a(P(2), 4 * PAGE, REMOTE_READ);
	ck_assert_uint_eq(last_key().addr, P(0));
	ck_assert_uint_eq(last_key().length, 6 * PAGE);
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE | REMOTE_READ);
	ck_assert_int_eq(reg_a(P(1), PAGE, LOCAL_WRITE)->serial, r->serial);
	ck_assert_int_eq(n_reg(), 2);
	/* Rights beyond both: a miss again, with all three. */
	reg_a(P(1), PAGE, LOCAL_WRITE | REMOTE_WRITE);
	ck_assert_int_eq(n_reg(), 3);
	ck_assert_uint_eq(last_key().access,
			  LOCAL_WRITE | REMOTE_WRITE | REMOTE_READ);
	ck_assert_uint_eq(last_key().length, 6 * PAGE);
}
END_TEST

/*
 * A merge too large for the byte limit is not made: the request's pages are
 * registered alone (with the PD's learnt rights, not the region's as such),
 * and the region keeps serving its own.
 */
START_TEST(all_rights_are_not_merged_when_the_pages_are_not)
{
	struct fake_mr *w;

	make_cache(CACHE_SUBRANGE_ALL, 6 * PAGE);	/* merged: <= 3 pages */
	w = reg_a(P(0), 2 * PAGE, LOCAL_WRITE);
	ck_assert_int_eq(cache_dereg(cache, w), 0);
	reg_a(P(1), 3 * PAGE, REMOTE_READ);	/* 4 pages merged: too big */
	ck_assert_uint_eq(last_key().addr, P(1));
	ck_assert_uint_eq(last_key().length, 3 * PAGE);
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE | REMOTE_READ);
	ck_assert_int_eq(n_dereg(), 0);
	ck_assert_int_eq(reg_a(P(0) + 5, 5, LOCAL_WRITE)->serial, w->serial);
	ck_assert_int_eq(n_reg(), 2);
}
END_TEST

/*
 * The thread's remembered region must not serve a request for a right it
 * lacks (the lock-free hit path checks the rights as the index does).
 */
START_TEST(all_remembered_region_never_serves_rights_it_lacks)
{
	struct fake_mr *w;

	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	w = reg_a(P(0), 8 * PAGE, LOCAL_WRITE);		/* remembered */
	ck_assert_int_eq(cache_dereg(cache, reg_a(P(1), 8, LOCAL_WRITE)), 0);
	ck_assert_int_eq(n_reg(), 1);
	reg_a(P(1), 8, LOCAL_WRITE | REMOTE_READ);
	ck_assert_int_eq(n_reg(), 2);
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE | REMOTE_READ);
	ck_assert_int_eq(cache_dereg(cache, w), 0);
	ck_assert_int_eq(n_dereg(), 1);		/* merged away at its dereg */
}
END_TEST

/*
 * Bits that change how memory is registered, and bits this build does not
 * know, are never widened: zero-based, on-demand, huge pages, relaxed
 * ordering, 0x100 (unknown to rdma-core 44, IBV_ACCESS_FLUSH_GLOBAL in
 * later ones), an unknown bit.
 */
START_TEST(all_never_widens_must_match_bits)
{
	static const unsigned int must[] = { 0x20, 0x40, 0x80, 1u << 20,
					     0x100, 1u << 30 };
	struct fake_mr *r;
	int n = 1;

	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	r = reg_a(P(0), 8 * PAGE, LOCAL_WRITE | REMOTE_READ);
	for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++) {
		struct fake_mr *m = reg_a(P(1), 8, LOCAL_WRITE | must[i]);

		ck_assert_int_eq(n_reg(), ++n);
		/* The PD's learnt rights, never its must-match bits. */
		ck_assert_uint_eq(last_key().access,
				  LOCAL_WRITE | REMOTE_READ | must[i]);
		ck_assert_int_ne(m->serial, r->serial);
		/* ... and a region with the bit serves no request without it. */
		reg_a(P(16 + 2 * i), PAGE, REMOTE_READ | must[i]);
		ck_assert_int_eq(n_reg(), ++n);
		reg_a(P(16 + 2 * i), 8, REMOTE_READ);
		ck_assert_int_eq(n_reg(), ++n);
		ck_assert_uint_eq(last_key().access, LOCAL_WRITE | REMOTE_READ);
	}
	ck_assert_int_eq(n_dereg(), 0);		/* nothing merged away */
	/* The region itself still serves fewer rights. */
	ck_assert_int_eq(reg_a(P(2), 8, REMOTE_READ)->serial, r->serial);
	ck_assert_int_eq(n_reg(), n);
}
END_TEST

/* A region registered with more rights is invalidated like any other. */
START_TEST(all_widened_region_is_invalidated_like_any_other)
{
	struct fake_mr *w, *r, *again;
	int serial;

	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	w = reg_a(P(0), ROW, LOCAL_WRITE);
	ck_assert_int_eq(cache_dereg(cache, w), 0);
	r = reg_a(P(0), ROW, REMOTE_READ);		/* the merged one */
	w = reg_a(P(0), ROW, LOCAL_WRITE);		/* a hit on it */
	serial = r->serial;
	ck_assert_int_eq(w->serial, serial);
	ck_assert_int_eq(n_reg(), 2);
	ck_assert_int_eq(n_dereg(), 1);
	fake_invalidate(fmon, P(5), P(6));		/* one page of it */
	again = reg_a(P(0), ROW, LOCAL_WRITE);
	ck_assert_int_eq(n_reg(), 3);			/* a miss */
	ck_assert_int_ne(again->serial, serial);
	ck_assert_uint_eq(stats_get(&st->stale), 1);	/* in use: stale */
	ck_assert_int_eq(cache_dereg(cache, r), 0);
	ck_assert_int_eq(n_dereg(), 1);			/* w still holds it */
	ck_assert_int_eq(cache_dereg(cache, w), 0);
	ck_assert_int_eq(n_dereg(), 2);			/* at the last one */
	ck_assert_int_eq(cache_dereg(cache, again), 0);
}
END_TEST

/* "local" (the default) and "off" never widen rights: today's behaviour. */
static void assert_rights_stay_exact(void)
{
	struct fake_mr *w, *r;

	w = reg_a(P(0), ROW, LOCAL_WRITE);
	ck_assert_int_eq(cache_dereg(cache, w), 0);
	r = reg_a(P(0), ROW, REMOTE_READ);
	ck_assert_int_eq(n_reg(), 2);
	ck_assert_uint_eq(last_key().access, REMOTE_READ);
	ck_assert_int_eq(n_dereg(), 0);
	ck_assert_uint_eq(r->magic, FAKE_MR_MAGIC);	/* its own */
	ck_assert_int_ne(r->serial, w->serial);
	ck_assert_int_eq(cache_dereg(cache, r), 0);
	/* Each use hits its own registration. */
	ck_assert_ptr_eq(reg_a(P(0), ROW, LOCAL_WRITE), w);
	ck_assert_ptr_eq(reg_a(P(0), ROW, REMOTE_READ), r);
	ck_assert_int_eq(n_reg(), 2);
	/* Fewer rights than a cached region's: a miss too. */
	reg_a(P(0), 8, 0);
	ck_assert_int_eq(n_reg(), 3);
	ck_assert_uint_eq(last_key().access, 0);
	/* Nothing learnt: a new row's miss has the request's rights. */
	reg_a(P(100), ROW, LOCAL_WRITE);
	ck_assert_int_eq(n_reg(), 4);
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE);
	ck_assert_uint_eq(reg_a(P(100), ROW, REMOTE_READ)->magic,
			  FAKE_MR_MAGIC);
	ck_assert_int_eq(n_reg(), 5);
	ck_assert_uint_eq(last_key().access, REMOTE_READ);
}

START_TEST(local_never_widens_rights)
{
	assert_rights_stay_exact();
}
END_TEST

START_TEST(off_never_widens_rights)
{
	make_cache(CACHE_SUBRANGE_OFF, 1ULL << 40);
	assert_rights_stay_exact();
}
END_TEST

/* ---- learnt rights (per PD, "all" only) ------------------------------------ */

#define ROW_A P(0)
#define ROW_B P(100)
#define ROW_C P(200)

/* PD1 sees a LOCAL_WRITE request (row A) and a REMOTE_READ one (row B). */
static void learn_both(void)
{
	ck_assert_int_eq(cache_dereg(cache, reg_a(ROW_A, ROW, LOCAL_WRITE)), 0);
	ck_assert_int_eq(cache_dereg(cache, reg_a(ROW_B, ROW, REMOTE_READ)), 0);
	ck_assert_int_eq(n_reg(), 2);
	/* Row B, a miss after LOCAL_WRITE was learnt, has both already. */
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE | REMOTE_READ);
}

/*
 * Once a PD has seen both rights, a new row's LOCAL_WRITE miss registers
 * both, and its first REMOTE_READ use is a hit (ofi_rxm's halo rows).
 */
START_TEST(all_miss_registers_the_pds_learnt_rights)
{
	struct fake_mr *w, *r;

	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	learn_both();
	w = reg_a(ROW_C, ROW, LOCAL_WRITE);
	ck_assert_int_eq(n_reg(), 3);
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE | REMOTE_READ);
	ck_assert_uint_eq(last_key().addr, ROW_C);
	ck_assert_uint_eq(last_key().length, ROW);
	ck_assert_uint_eq(w->magic, FAKE_SLICE_MAGIC);	/* asked: LOCAL_WRITE */
	ck_assert_int_eq(cache_dereg(cache, w), 0);
	r = reg_a(ROW_C, ROW, REMOTE_READ);
	ck_assert_int_eq(n_reg(), 3);			/* a hit */
	ck_assert_int_eq(r->serial, w->serial);
	ck_assert_uint_eq(stats_get(&st->misses), 3);
	ck_assert_int_eq(cache_dereg(cache, r), 0);
	ck_assert_int_eq(n_dereg(), 0);
}
END_TEST

/* Fails LOCAL_WRITE registrations of pages from ROW_C on (read-only). */
static void fail_writable_from_row_c(struct fake_verbs *v,
				     const struct cache_key *key)
{
	v->reg_errno = key->addr + key->length > ROW_C &&
		       (key->access & LOCAL_WRITE) ? EACCES : 0;
}

/*
 * Memory that cannot take a learnt right (LOCAL_WRITE on read-only pages):
 * the miss is registered again with the request's own rights, and cached.
 */
START_TEST(all_failed_learnt_rights_fall_back_to_the_requests)
{
	struct fake_mr *r, *again;

	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	learn_both();
	fv->on_reg = fail_writable_from_row_c;
	r = reg_a(ROW_C, ROW, REMOTE_READ);
	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(n_reg(), 4);		/* with both, then alone */
	ck_assert_uint_eq(last_key().access, REMOTE_READ);
	ck_assert_uint_eq(access_of(r->serial), REMOTE_READ);
	ck_assert_uint_eq(cache_registered_count(cache), 3);	/* cached */
	ck_assert_uint_eq(stats_get(&st->passthrough), 0);
	ck_assert_uint_eq(stats_get(&st->misses), 3);	/* counted once */
	ck_assert_int_eq(cache_dereg(cache, r), 0);
	again = reg_a(ROW_C + 8, 100, REMOTE_READ);
	ck_assert_int_eq(n_reg(), 4);		/* a hit */
	ck_assert_int_eq(again->serial, r->serial);
	ck_assert_int_eq(cache_dereg(cache, again), 0);
	/* A request whose own rights fail still fails, with its error. */
	errno = 0;
	ck_assert_ptr_null(reg_a(ROW_C + ROW, PAGE, LOCAL_WRITE));
	ck_assert_int_eq(errno, EACCES);
	ck_assert_int_eq(n_reg(), 6);
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE);
	ck_assert_int_eq(n_dereg(), 0);
}
END_TEST

/* Fails every registration asking for REMOTE_WRITE (a device without it). */
static void fail_remote_write(struct fake_verbs *v, const struct cache_key *key)
{
	v->reg_errno = key->access & REMOTE_WRITE ? EINVAL : 0;
}

/*
 * Only rights the device granted are learnt: a refused request leaves the
 * PD's later misses alone (one registration each, not a failure first).
 */
START_TEST(all_refused_rights_are_not_learnt)
{
	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	fv->on_reg = fail_remote_write;
	errno = 0;
	ck_assert_ptr_null(reg_a(ROW_A, ROW, LOCAL_WRITE | REMOTE_WRITE));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(n_reg(), 1);
	ck_assert_int_eq(cache_dereg(cache, reg_a(ROW_B, ROW, REMOTE_READ)), 0);
	ck_assert_int_eq(n_reg(), 2);
	ck_assert_uint_eq(last_key().access, REMOTE_READ);
	ck_assert_int_eq(cache_dereg(cache, reg_a(ROW_C, ROW, LOCAL_WRITE)), 0);
	ck_assert_int_eq(n_reg(), 3);
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE | REMOTE_READ);
	ck_assert_uint_eq(stats_get(&st->misses), 2);
	ck_assert_uint_eq(stats_get(&st->passthrough), 0);
}
END_TEST

/*
 * Out of memory or resources, fewer rights would not help: no retry of the
 * miss without the learnt rights, the request's own registration passed
 * through (ENOMEM: each after releasing the idle MRs, once).
 */
START_TEST(all_learnt_rights_are_not_retried_without_memory)
{
	static const int errs[] = { ENOMEM, EAGAIN };
	/* learnt, (ENOMEM: evict + again), own */
	static const int n_calls[] = { 3, 2 };
	int err = errs[_i], calls = n_calls[_i];

	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	learn_both();
	fv->reg_errno = err;
	errno = 0;
	ck_assert_ptr_null(reg_a(ROW_C + 8, 100, LOCAL_WRITE));
	ck_assert_int_eq(errno, err);
	ck_assert_int_eq(n_reg(), 2 + calls);
	/* The last one: the request's own, not its page with fewer rights. */
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE);
	ck_assert_uint_eq(last_key().length, 100);
}
END_TEST

/* As the kernel: remote write or atomics without local write: EINVAL. */
static void refuse_invalid_rights(struct fake_verbs *v,
				  const struct cache_key *key)
{
	v->reg_errno = (key->access & (REMOTE_WRITE | REMOTE_ATOMIC)) &&
		       !(key->access & LOCAL_WRITE) ? EINVAL : 0;
}

/*
 * A request with rights the device refuses is never served by a region
 * holding more (the thread's remembered region, in use and idle), nor
 * widened (so it never reaches the index, nor a union that would make it
 * valid): it gets EINVAL.
 */
START_TEST(all_never_serves_refused_rights)
{
	const unsigned int all = LOCAL_WRITE | REMOTE_WRITE | REMOTE_ATOMIC;
	struct fake_mr *r;

	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	fv->on_reg = refuse_invalid_rights;
	r = reg_a(ROW_A, ROW, all);
	ck_assert_ptr_nonnull(r);
	for (int round = 0; round < 2; round++) {
		errno = 0;
		ck_assert_ptr_null(reg_a(ROW_A, ROW, REMOTE_WRITE));
		ck_assert_int_eq(errno, EINVAL);
		errno = 0;
		ck_assert_ptr_null(reg_a(ROW_A + 8, 64, REMOTE_ATOMIC));
		ck_assert_int_eq(errno, EINVAL);
		ck_assert_int_eq(n_reg(), 3 + 2 * round);  /* each asked */
		ck_assert_uint_eq(last_key().length, 64);  /* not widened */
		if (round == 0)
			ck_assert_int_eq(cache_dereg(cache, r), 0);
	}
	/* A valid request with fewer rights is served by the region. */
	r = reg_a(ROW_A + 8, 64, LOCAL_WRITE | REMOTE_WRITE);
	ck_assert_int_eq(n_reg(), 5);
	ck_assert_int_eq(cache_dereg(cache, r), 0);
}
END_TEST

/* While row A is registered, registers (and releases) a slice of page 1. */
static void publish_remote_read_during_reg(struct fake_verbs *v,
					   const struct cache_key *key)
{
	(void)key;
	v->on_reg = NULL;
	ck_assert_int_eq(cache_dereg(cache, reg_a(P(1) + 8, 64, REMOTE_READ)),
			 0);
}

/*
 * A region another registration published meanwhile inside the new one,
 * with rights the new one lacks, keeps its place (merging it away would
 * lose them): its next request is still a hit.
 */
START_TEST(all_new_region_keeps_a_raced_region_with_other_rights)
{
	struct fake_mr *w, *r;

	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	fv->on_reg = publish_remote_read_during_reg;
	w = reg_a(P(0), 4 * PAGE, LOCAL_WRITE);
	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(n_reg(), 2);
	r = reg_a(P(1) + 16, 64, REMOTE_READ);
	ck_assert_int_eq(n_reg(), 2);
	ck_assert_uint_eq(access_of(r->serial), REMOTE_READ);
	ck_assert_int_eq(cache_dereg(cache, r), 0);
	ck_assert_int_eq(cache_dereg(cache, w), 0);
	ck_assert_int_eq(n_dereg(), 0);
}
END_TEST

/* What one PD learnt never reaches another PD. */
START_TEST(all_learnt_rights_stay_with_their_pd)
{
	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	learn_both();
	reg_pd(PD2, ROW_C, ROW, LOCAL_WRITE);
	ck_assert_int_eq(n_reg(), 3);
	ck_assert_ptr_eq(last_key().pd, PD2);
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE);
	/* ... and PD1 still has its own. */
	reg_a(P(300), ROW, REMOTE_READ);
	ck_assert_int_eq(n_reg(), 4);
	ck_assert_ptr_eq(last_key().pd, PD1);
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE | REMOTE_READ);
}
END_TEST

/* A released PD (or device, or a closed one) starts again with nothing. */
START_TEST(all_released_pd_forgets_its_learnt_rights)
{
	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	learn_both();
	cache_release_pd(cache, PD1);
	reg_a(ROW_C, ROW, LOCAL_WRITE);
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE);
	reg_a(P(300), ROW, REMOTE_READ);
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE | REMOTE_READ);
	cache_release_ctx(cache, CTX1);
	reg_a(P(400), ROW, REMOTE_READ);
	ck_assert_uint_eq(last_key().access, REMOTE_READ);
	reg_a(P(500), ROW, LOCAL_WRITE);
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE | REMOTE_READ);
	cache_forget_ctx(cache, CTX1);
	reg_a(P(600), ROW, REMOTE_READ);
	ck_assert_uint_eq(last_key().access, REMOTE_READ);
}
END_TEST

/*
 * A record of the same PD address on another device is stale (a PD freed
 * by a call the shim never saw, allocated again): it is not used, and the
 * new device's PD starts with what it learns itself.
 */
START_TEST(all_learnt_rights_belong_to_the_pd_and_its_device)
{
	struct cache_key k = { PD1, ROW_C, ROW, ROW_C, REMOTE_READ };

	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	learn_both();
	cache_reg(cache, &k, CTX2, 0);
	ck_assert_uint_eq(last_key().access, REMOTE_READ);
	k.addr = k.iova = P(300);
	k.access = LOCAL_WRITE;
	cache_reg(cache, &k, CTX2, 0);
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE | REMOTE_READ);
}
END_TEST

/*
 * The table is bounded (no allocation): a PD beyond LEARNT_PDS learns
 * nothing and registers with its requests' own rights; a slot that a
 * released PD frees is used by the next PD.
 */
START_TEST(all_pds_beyond_the_table_learn_nothing)
{
	static char pds[LEARNT_PDS + 1];
	uintptr_t row = ROW_A;

	make_cache(CACHE_SUBRANGE_ALL, 1ULL << 40);
	for (unsigned int i = 0; i <= LEARNT_PDS; i++) {
		ck_assert_int_eq(cache_dereg(cache, reg_pd(&pds[i], row, ROW,
							   LOCAL_WRITE)), 0);
		row += ROW;
		ck_assert_int_eq(cache_dereg(cache, reg_pd(&pds[i], row, ROW,
							   REMOTE_READ)), 0);
		row += ROW;
		/* Each PD in the table learnt LOCAL_WRITE; the last one could not. */
		ck_assert_uint_eq(last_key().access,
				  i < LEARNT_PDS ? LOCAL_WRITE | REMOTE_READ
						 : REMOTE_READ);
	}
	cache_release_pd(cache, &pds[0]);
	ck_assert_int_eq(cache_dereg(cache, reg_pd(&pds[LEARNT_PDS], row, ROW,
						   LOCAL_WRITE)), 0);
	row += ROW;
	reg_pd(&pds[LEARNT_PDS], row, ROW, REMOTE_READ);
	ck_assert_uint_eq(last_key().access, LOCAL_WRITE | REMOTE_READ);
}
END_TEST

/* ---- releases and fork ---------------------------------------------------- */

START_TEST(release_pd_waits_for_slices)
{
	struct fake_mr *r = reg(P(0), 4 * PAGE), *s = reg(P(1), 8);

	ck_assert_int_eq(cache_dereg(cache, r), 0);
	cache_release_pd(cache, PD1);
	ck_assert_int_eq(n_dereg(), 0);			/* s holds it */
	ck_assert_int_eq(cache_dereg(cache, s), 0);
	cache_release_pd(cache, PD1);
	ck_assert_int_eq(n_dereg(), 1);
}
END_TEST

START_TEST(fork_child_never_touches_slices)
{
	struct fake_mr *s;

	reg(P(0), 4 * PAGE);
	s = reg(P(1), 8);
	cache_fork_prepare(cache);
	cache_fork_child(cache);
	ck_assert_int_eq(cache_dereg(cache, s), 0);
	ck_assert_int_eq(n_dereg(), 0);
	/* A child's registration of the same range passes through. */
	reg(P(1), 8);
	ck_assert_int_eq(n_reg(), 2);
	ck_assert_uint_eq(stats_get(&st->passthrough), 1);
}
END_TEST

/* ---- threads ---------------------------------------------------------------- */

#define ROUNDS 20000

static void *slice_loop(void *arg)
{
	uintptr_t base = (uintptr_t)arg;
	struct fake_mr *whole = reg(base, 16 * PAGE);
	long bad = !whole;

	for (long i = 0; i < ROUNDS && !bad; i++) {
		uintptr_t a = base + (uintptr_t)(i % 15) * PAGE + 8;
		struct fake_mr *m = (i & 1) ? reg(a, 64) : reg(base, 16 * PAGE);

		bad = !m || (i & 1 ? m->key.addr != a : m != whole) ||
		      cache_dereg(cache, m) != 0;
	}
	if (whole && cache_dereg(cache, whole) != 0)
		bad = 1;
	return (void *)bad;
}

START_TEST(counters_are_exact_under_two_threads)
{
	pthread_t t[2];
	void *bad;
	uint64_t calls = 2 * (ROUNDS + 1);

	/* Far apart: never merged, one registration each. */
	ck_assert_int_eq(pthread_create(&t[0], NULL, slice_loop,
					(void *)P(0)), 0);
	ck_assert_int_eq(pthread_create(&t[1], NULL, slice_loop,
					(void *)P(64)), 0);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(pthread_join(t[i], &bad), 0);
		ck_assert_ptr_null(bad);
	}
	ck_assert_int_eq(n_reg(), 2);
	ck_assert_uint_eq(stats_get(&st->misses), 2);
	ck_assert_uint_eq(stats_hits(st), calls - 2);
	ck_assert_uint_eq(cache_idle_count(cache), 2);
	ck_assert_int_eq(n_dereg(), 0);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("cache_subrange");
	TCase *tc = tcase_create("subrange");

	tcase_add_checked_fixture(tc, setup, fixture_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, miss_registers_the_page_aligned_region);
	tcase_add_test(tc, containment_hit_returns_a_slice_with_the_regions_keys);
	tcase_add_test(tc, slice_dereg_drops_the_regions_reference);
	tcase_add_test(tc, slice_rereg_is_refused);
	tcase_add_test(tc, iova_offset_must_match);
	tcase_add_test(tc, touching_regions_stay_apart);
	tcase_add_test(tc, adjacent_rows_pin_only_their_own_pages);
	tcase_add_test(tc, merged_away_region_in_use_is_released_at_its_last_dereg);
	tcase_add_test(tc, merging_is_bounded_by_the_byte_limit);
	tcase_add_test(tc, invalidating_one_slices_page_drops_the_region_for_every_slice);
	tcase_add_test(tc, invalidated_idle_region_is_never_hit_again);
	tcase_add_test(tc, remembered_exact_hit_is_dropped_with_its_entry);
	tcase_add_test(tc, off_matches_exactly);
	tcase_add_test(tc, local_keeps_remote_access_exact);
	tcase_add_test(tc, all_serves_remote_access_too);
	tcase_add_test(tc, all_registers_both_rights_once_then_hits);
	tcase_add_test(tc, all_releases_the_narrower_region_at_its_last_dereg);
	tcase_add_test(tc, all_merges_rights_with_an_overlapping_region);
	tcase_add_test(tc, all_rights_are_not_merged_when_the_pages_are_not);
	tcase_add_test(tc, all_remembered_region_never_serves_rights_it_lacks);
	tcase_add_test(tc, all_never_widens_must_match_bits);
	tcase_add_test(tc, all_widened_region_is_invalidated_like_any_other);
	tcase_add_test(tc, local_never_widens_rights);
	tcase_add_test(tc, off_never_widens_rights);
	tcase_add_test(tc, all_miss_registers_the_pds_learnt_rights);
	tcase_add_test(tc, all_failed_learnt_rights_fall_back_to_the_requests);
	tcase_add_test(tc, all_refused_rights_are_not_learnt);
	tcase_add_loop_test(tc, all_learnt_rights_are_not_retried_without_memory,
			    0, 2);
	tcase_add_test(tc, all_never_serves_refused_rights);
	tcase_add_test(tc, all_new_region_keeps_a_raced_region_with_other_rights);
	tcase_add_test(tc, all_learnt_rights_stay_with_their_pd);
	tcase_add_test(tc, all_released_pd_forgets_its_learnt_rights);
	tcase_add_test(tc, all_learnt_rights_belong_to_the_pd_and_its_device);
	tcase_add_test(tc, all_pds_beyond_the_table_learn_nothing);
	tcase_add_test(tc, release_pd_waits_for_slices);
	tcase_add_test(tc, fork_child_never_touches_slices);
	tcase_add_test(tc, counters_are_exact_under_two_threads);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run_suite(suite());
}
