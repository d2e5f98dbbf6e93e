// SPDX-License-Identifier: BSD-2-Clause
/*
 * Unit tests of each thread's remembered hits (cache_hot.c) against the
 * test doubles: the hit counters stay exact with more threads than
 * counter shards, and a remembered entry is never taken for a later
 * incarnation of itself, however often the entry is reused.  White-box:
 * the second looks at the thread's hot (cache_internal.h).
 */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdlib.h>

#include "cache.h"
#include "cache_fixture.h"
#include "cache_internal.h"
#include "fakes.h"
#include "stats.h"

static struct cache_key key_at(uintptr_t addr)
{
	struct cache_key k = { PD1, addr, PAGE, addr, 7 };

	return k;
}

static void *reg_at(uintptr_t addr)
{
	struct cache_key k = key_at(addr);

	return cache_reg(cache, &k, CTX1, 0);
}

/* ---- exact hit counters ---------------------------------------------------- */

/*
 * One more thread than STATS_HIT_SHARDS, each with a hot (a counter shard
 * of its own while there are enough), made one after the other; then the
 * first and the last hit their buffers at once, while all are alive.
 * Before the counters were fixed, the last one's hits went to the first
 * one's shard, which the first updates without a read-modify-write.
 */
#define N_THREADS (STATS_HIT_SHARDS + 1)
#define HITS_PER_THREAD 4000000

static pthread_barrier_t all_have_hots;
static sem_t made_its_hot;
static atomic_int failures;

static bool hits_now(uintptr_t i)
{
	return i == 0 || i == N_THREADS - 1;
}

static void *hitter(void *arg)
{
	uintptr_t i = (uintptr_t)arg;
	uintptr_t addr = 0x1000000 + i * 2 * PAGE;
	void *mr = reg_at(addr);	/* the miss: takes a hot */

	if (!mr || cache_dereg(cache, mr) != 0)
		atomic_fetch_add(&failures, 1);
	sem_post(&made_its_hot);
	pthread_barrier_wait(&all_have_hots);
	for (int n = 0; hits_now(i) && n < HITS_PER_THREAD; n++) {
		void *m = reg_at(addr);

		if (m != mr || cache_dereg(cache, m) != 0)
			atomic_fetch_add(&failures, 1);
	}
	pthread_barrier_wait(&all_have_hots);	/* nobody's hot reused */
	return NULL;
}

START_TEST(hit_count_exact_past_the_shards)
{
	pthread_t t[N_THREADS];

	pthread_barrier_init(&all_have_hots, NULL, N_THREADS);
	sem_init(&made_its_hot, 0, 0);
	for (uintptr_t i = 0; i < N_THREADS; i++) {
		ck_assert_int_eq(pthread_create(&t[i], NULL, hitter, (void *)i), 0);
		sem_wait(&made_its_hot);	/* hots in thread order */
	}
	for (int i = 0; i < N_THREADS; i++)
		pthread_join(t[i], NULL);
	ck_assert_int_eq(atomic_load(&failures), 0);
	ck_assert_int_eq(n_reg(), N_THREADS);
	ck_assert_uint_eq(stats_get(&st->misses), N_THREADS);
	ck_assert_uint_eq(stats_hits(st), 2ULL * HITS_PER_THREAD);
}
END_TEST

/*
 * The same, deterministically (white-box): with every thread's hot alive
 * at once, no two share a nonzero shard (a shard's owner writes it
 * without a read-modify-write), and those beyond STATS_HIT_SHARDS - 1
 * get shard 0.
 */
static unsigned int shard_of[N_THREADS];
static atomic_uint_fast64_t *hot_of[N_THREADS];	/* each one's own_hits */
static pthread_barrier_t hots_alive;

static void *take_hot(void *arg)
{
	uintptr_t i = (uintptr_t)arg;
	struct hot *h = hot_get(cache);

	if (h)
		hot_of[i] = h->own_hits;
	if (!h)
		atomic_fetch_add(&failures, 1);
	else if (h->own_hits)
		shard_of[i] = (unsigned int)(((char *)h->own_hits -
					      (char *)&st->hits[0].v) /
					     sizeof(st->hits[0]));
	else
		shard_of[i] = 0;
	pthread_barrier_wait(&hots_alive);	/* none handed on yet */
	return NULL;
}

START_TEST(live_hots_never_share_a_shard)
{
	pthread_t t[N_THREADS];
	bool owned[STATS_HIT_SHARDS] = { false };
	unsigned int n_shared = 0;

	pthread_barrier_init(&hots_alive, NULL, N_THREADS);
	for (uintptr_t i = 0; i < N_THREADS; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, take_hot, (void *)i), 0);
	for (int i = 0; i < N_THREADS; i++)
		pthread_join(t[i], NULL);
	ck_assert_int_eq(atomic_load(&failures), 0);
	for (int i = 0; i < N_THREADS; i++) {
		unsigned int sh = shard_of[i];

		ck_assert_uint_lt(sh, STATS_HIT_SHARDS);
		if (sh)
			ck_assert_ptr_eq(hot_of[i], &st->hits[sh].v);
		if (sh == 0) {
			n_shared++;
			continue;
		}
		ck_assert_msg(!owned[sh], "shard %u given to two live hots", sh);
		owned[sh] = true;
	}
	ck_assert_uint_eq(n_shared, N_THREADS - (STATS_HIT_SHARDS - 1));
}
END_TEST

/* ---- generations ------------------------------------------------------------ */

/* The entry of this thread's latest remembered hit or registration. */
static struct entry *last_remembered(void)
{
	struct hot *h = hot_peek(cache);

	ck_assert_ptr_nonnull(h);
	return h->slot[(h->next - 1) % HOT_SLOTS].e;
}

/* Invalidate the idle MR at @addr: its entry goes back to the pool. */
static void drop(uintptr_t addr)
{
	fake_invalidate(fmon, addr, addr + PAGE);
	cache_release_invalidated(cache);
}

/*
 * A thread remembers (entry, generation 1) of A.  The entry is reused
 * until its generation would wrap (2^32 reuses, simulated by setting the
 * pooled entry's generation to the last one): the incarnation after the
 * wrap must not be the same entry with generation 1 again, or the
 * remembered hit on A would take it and return A's freed MR.
 */
START_TEST(remembered_hit_survives_generation_wrap)
{
	void *a, *b, *a2;
	struct entry *e;

	a = reg_at(0x100000);
	ck_assert_ptr_nonnull(a);
	e = last_remembered();
	ck_assert_uint_eq(ST_GEN(atomic_load(&e->state)), ST_GEN_ONE);
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	drop(0x100000);
	ck_assert_int_eq(n_dereg(), 1);	/* A's MR is gone */

	/* 2^32 - 2 reuses later: the pooled entry has the last generation. */
	atomic_store(&e->state, ~(ST_USABLE | ST_REFS));
	b = reg_at(0x200000);
	ck_assert_ptr_eq(last_remembered(), e);	/* B reused it */
	ck_assert_int_eq(cache_dereg(cache, b), 0);
	drop(0x200000);
	ck_assert_int_eq(n_dereg(), 2);

	/* The next incarnation (C), then A again: a miss, a live MR. */
	ck_assert_ptr_nonnull(reg_at(0x300000));
	a2 = reg_at(0x100000);
	ck_assert_int_eq(n_reg(), 4);
	ck_assert_ptr_nonnull(a2);
	ck_assert_ptr_ne(a2, a);
	ck_assert_uint_eq(((struct fake_mr *)a2)->magic, FAKE_MR_MAGIC);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cache_hot");
	TCase *tc = tcase_create("hot");

	tcase_add_checked_fixture(tc, fixture_setup_default, fixture_teardown);
	tcase_add_test(tc, hit_count_exact_past_the_shards);
	tcase_add_test(tc, live_hots_never_share_a_shard);
	tcase_add_test(tc, remembered_hit_survives_generation_wrap);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return check_run_suite(s);
}
