// SPDX-License-Identifier: BSD-2-Clause
/*
 * Unit tests of the registration cache against test doubles of the
 * monitor and of the real registration functions.
 */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "cache_fixture.h"
#include "fakes.h"
#include "log.h"
#include "stats.h"

static void make_cache(uint64_t max_entries, uint64_t max_bytes)
{
	struct cache_limits lim = { .max_entries = max_entries,
				    .max_bytes = max_bytes };

	fixture_make_cache(&lim);
}

static struct cache_key key_of(void *pd, uintptr_t addr, size_t len,
			       unsigned access)
{
	struct cache_key k = { pd, addr, len, addr, access };

	return k;
}

static void *reg(void *pd, uintptr_t addr, size_t len)
{
	struct cache_key k = key_of(pd, addr, len, 7);

	return cache_reg(cache, &k, pd == PD2 ? CTX2 : CTX1, 0);
}

/* ---- hits, misses, references ------------------------------------------- */

START_TEST(miss_then_hit_returns_same_mr)
{
	void *a = reg(PD1, 0x10000, PAGE);
	void *b = reg(PD1, 0x10000, PAGE);

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_eq(a, b);
	ck_assert_int_eq(n_reg(), 1);
	ck_assert_uint_eq(stats_get(&st->misses), 1);
	ck_assert_uint_eq(stats_hits(st), 1);
	ck_assert_int_eq(atomic_load(&fmon->n_watch), 1);
}
END_TEST

/*
 * A probing backend (userfaultfd: one system call per check) is asked
 * once per registration, whichever path serves it: a miss, a hit on the
 * thread's last entry, a hit on an entry it no longer remembers.
 */
START_TEST(one_monitor_check_per_registration)
{
	fake_monitor_use_check(fmon);
	reg(PD1, 0x10000, PAGE);
	ck_assert_int_eq(atomic_load(&fmon->n_check), 1);
	reg(PD1, 0x10000, PAGE);
	ck_assert_int_eq(atomic_load(&fmon->n_check), 2);
	/* More buffers than the thread remembers: the first is a plain hit. */
	for (uintptr_t i = 1; i <= 16; i++)
		reg(PD1, 0x10000 + i * 0x10000, PAGE);
	ck_assert_int_eq(atomic_load(&fmon->n_check), 18);
	reg(PD1, 0x10000, PAGE);
	ck_assert_int_eq(atomic_load(&fmon->n_check), 19);
	ck_assert_uint_eq(stats_hits(st), 2);
}
END_TEST

START_TEST(every_key_field_matters)
{
	struct cache_key base = key_of(PD1, 0x10000, PAGE, 7), k;
	void *m0 = cache_reg(cache, &base, CTX1, 0);

	k = base; k.pd = PD2;
	ck_assert_ptr_ne(cache_reg(cache, &k, CTX2, 0), m0);
	k = base; k.addr += 64;
	ck_assert_ptr_ne(cache_reg(cache, &k, CTX1, 0), m0);
	k = base; k.length += 1;
	ck_assert_ptr_ne(cache_reg(cache, &k, CTX1, 0), m0);
	k = base; k.iova = 0;
	ck_assert_ptr_ne(cache_reg(cache, &k, CTX1, 0), m0);
	k = base; k.access = 1;
	ck_assert_ptr_ne(cache_reg(cache, &k, CTX1, 0), m0);
	ck_assert_int_eq(n_reg(), 6);
	ck_assert_ptr_eq(cache_reg(cache, &base, CTX1, 0), m0);
	ck_assert_int_eq(n_reg(), 6);
}
END_TEST

START_TEST(how_is_passed_to_real_reg)
{
	struct cache_key k = key_of(PD1, 0x10000, PAGE, 7);

	cache_reg(cache, &k, CTX1, 42);
	ck_assert_int_eq(fv->last_how, 42);
}
END_TEST

START_TEST(lazy_dereg_keeps_registration)
{
	void *a = reg(PD1, 0x10000, PAGE);

	ck_assert_ptr_eq(reg(PD1, 0x10000, PAGE), a);	/* refs 2 */
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	ck_assert_int_eq(n_dereg(), 0);
	ck_assert_uint_eq(cache_idle_count(cache), 1);
	ck_assert_uint_eq(cache_registered_count(cache), 1);
	/* N cycles: one real registration. */
	for (int i = 0; i < 100; i++) {
		ck_assert_ptr_eq(reg(PD1, 0x10000, PAGE), a);
		ck_assert_int_eq(cache_dereg(cache, a), 0);
	}
	ck_assert_int_eq(n_reg(), 1);
	ck_assert_int_eq(n_dereg(), 0);
	ck_assert_uint_eq(stats_hits(st), 101);
}
END_TEST

START_TEST(double_dereg_of_idle_mr_is_refused)
{
	void *a = reg(PD1, 0x10000, PAGE);

	ck_assert_int_eq(cache_dereg(cache, a), 0);
	ck_assert_int_eq(cache_dereg(cache, a), EINVAL);
	ck_assert_int_eq(n_dereg(), 0);
	ck_assert_ptr_eq(reg(PD1, 0x10000, PAGE), a);
}
END_TEST

START_TEST(foreign_mr_dereg_passes_through)
{
	struct cache_ops ops;
	struct cache_key k = key_of(PD1, 0x10000, PAGE, 7);
	void *foreign;

	/* Registered behind the cache's back, as a pass-through MR is. */
	fake_verbs_ops(fv, &ops);
	foreign = ops.reg(ops.arg, &k, 0);
	ck_assert_int_eq(cache_dereg(cache, foreign), 0);
	ck_assert_int_eq(n_dereg(), 1);
	ck_assert_int_eq(atomic_load(&fv->live), 0);
}
END_TEST

START_TEST(real_reg_error_is_returned_unchanged)
{
	fv->reg_errno = EFAULT;
	errno = 0;
	ck_assert_ptr_null(reg(PD1, 0x10000, PAGE));
	ck_assert_int_eq(errno, EFAULT);
	ck_assert_uint_eq(cache_registered_count(cache), 0);
	/* Nothing cached and nothing left watched. */
	ck_assert_int_eq(atomic_load(&fmon->n_active), 0);
	fv->reg_errno = 0;
	ck_assert_ptr_nonnull(reg(PD1, 0x10000, PAGE));
	ck_assert_int_eq(n_reg(), 2);
}
END_TEST

START_TEST(enomem_retries_after_releasing_idle)
{
	void *a = reg(PD1, 0x10000, PAGE), *b;

	cache_dereg(cache, a);
	fv->max_live = 1;
	b = reg(PD1, 0x20000, PAGE);
	ck_assert_ptr_nonnull(b);
	ck_assert_int_eq(n_dereg(), 1);		/* a was released */
	ck_assert_int_eq(n_reg(), 3);		/* a, failed b, retried b */
	/* Without idle MRs, ENOMEM comes back unchanged. */
	errno = 0;
	ck_assert_ptr_null(reg(PD1, 0x30000, PAGE));
	ck_assert_int_eq(errno, ENOMEM);
}
END_TEST

/* ---- limits and LRU -------------------------------------------------------- */

START_TEST(lru_evicts_least_recently_used)
{
	void *a, *b, *c;

	make_cache(2, 1ULL << 40);
	a = reg(PD1, 0x10000, PAGE);
	b = reg(PD1, 0x20000, PAGE);
	cache_dereg(cache, a);
	cache_dereg(cache, b);
	/* Use a again: b becomes the least recently used. */
	ck_assert_ptr_eq(reg(PD1, 0x10000, PAGE), a);
	cache_dereg(cache, a);
	c = reg(PD1, 0x30000, PAGE);
	cache_dereg(cache, c);
	ck_assert_int_eq(n_dereg(), 1);
	ck_assert_uint_eq(stats_get(&st->evictions), 1);
	ck_assert_ptr_eq(reg(PD1, 0x10000, PAGE), a);
	ck_assert_int_eq(n_reg(), 3);
	reg(PD1, 0x20000, PAGE);		/* b was the victim */
	ck_assert_int_eq(n_reg(), 4);
	/* Evicted watches are gone too. */
	ck_assert_int_eq(atomic_load(&fmon->n_unwatch), n_dereg());
}
END_TEST

START_TEST(byte_limit_evicts)
{
	void *a, *b;

	make_cache(1000, 3 * PAGE);
	a = reg(PD1, 0x10000, 2 * PAGE);
	cache_dereg(cache, a);
	b = reg(PD1, 0x40000, 2 * PAGE);	/* 4 pages > 3: a goes */
	ck_assert_int_eq(n_dereg(), 1);
	ck_assert_uint_eq(cache_registered_count(cache), 1);
	ck_assert_uint_eq(stats_get(&st->pinned_bytes), 2 * PAGE);
	ck_assert_uint_eq(stats_get(&st->peak_pinned_bytes), 4 * PAGE);
	cache_dereg(cache, b);
	ck_assert_uint_eq(cache_idle_count(cache), 1);
}
END_TEST

START_TEST(busy_entries_are_never_evicted)
{
	void *a, *b;

	make_cache(1, 1ULL << 40);
	a = reg(PD1, 0x10000, PAGE);
	b = reg(PD1, 0x20000, PAGE);
	ck_assert_ptr_nonnull(b);
	ck_assert_int_eq(n_dereg(), 0);
	ck_assert_uint_eq(cache_registered_count(cache), 2);
	/* Over the limit: the first one to go idle is released at once. */
	cache_dereg(cache, a);
	ck_assert_int_eq(n_dereg(), 1);
	cache_dereg(cache, b);
	ck_assert_int_eq(n_dereg(), 1);
	ck_assert_uint_eq(cache_idle_count(cache), 1);
}
END_TEST

START_TEST(oversized_registration_is_not_kept)
{
	void *a;

	make_cache(1000, PAGE);
	a = reg(PD1, 0x10000, 4 * PAGE);
	ck_assert_ptr_nonnull(a);
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	ck_assert_int_eq(n_dereg(), 1);
	ck_assert_uint_eq(stats_get(&st->pinned_bytes), 0);
}
END_TEST

/* ---- invalidation ---------------------------------------------------------- */

START_TEST(no_drain_when_nothing_changed)
{
	void *a = reg(PD1, 0x10000, PAGE);

	for (int i = 0; i < 10; i++) {
		cache_dereg(cache, a);
		reg(PD1, 0x10000, PAGE);
	}
	ck_assert_int_eq(atomic_load(&fmon->n_drain), 0);
	ck_assert_int_ge(atomic_load(&fmon->n_changed), 11);
}
END_TEST

START_TEST(idle_invalidated_entry_is_deregistered)
{
	void *a = reg(PD1, 0x10000, 2 * PAGE), *b;

	cache_dereg(cache, a);
	fake_invalidate(fmon, 0x11000, 0x12000);
	b = reg(PD1, 0x10000, 2 * PAGE);
	ck_assert_int_eq(atomic_load(&fmon->n_drain), 1);
	ck_assert_int_eq(n_dereg(), 1);		/* the old one */
	ck_assert_int_eq(n_reg(), 2);		/* a fresh one */
	ck_assert_int_eq(((struct fake_mr *)b)->serial, 1);
	ck_assert_uint_eq(stats_get(&st->invalidations), 1);
	ck_assert_uint_eq(stats_get(&st->stale), 0);
	ck_assert_uint_eq(cache_registered_count(cache), 1);
	ck_assert_int_eq(atomic_load(&fmon->n_active), 1);
}
END_TEST

START_TEST(unrelated_invalidation_keeps_entry)
{
	void *a = reg(PD1, 0x10000, PAGE);

	cache_dereg(cache, a);
	fake_invalidate(fmon, 0x20000, 0x30000);
	ck_assert_ptr_eq(reg(PD1, 0x10000, PAGE), a);
	ck_assert_int_eq(n_reg(), 1);
	ck_assert_int_eq(n_dereg(), 0);
}
END_TEST

START_TEST(busy_invalidated_entry_becomes_stale)
{
	void *a = reg(PD1, 0x10000, PAGE), *b;

	ck_assert_ptr_eq(reg(PD1, 0x10000, PAGE), a);	/* two users */
	fake_invalidate(fmon, 0x10000, 0x11000);
	b = reg(PD1, 0x10000, PAGE);
	ck_assert_ptr_ne(b, a);			/* never returned again */
	ck_assert_uint_eq(stats_get(&st->stale), 1);
	ck_assert_int_eq(n_dereg(), 0);		/* still in use */
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	ck_assert_int_eq(n_dereg(), 0);
	ck_assert_int_eq(cache_dereg(cache, a), 0);	/* last user */
	ck_assert_int_eq(n_dereg(), 1);
	/* The new one is cached normally. */
	cache_dereg(cache, b);
	ck_assert_ptr_eq(reg(PD1, 0x10000, PAGE), b);
	ck_assert_int_eq(n_dereg(), 1);
}
END_TEST

START_TEST(stale_dereg_error_is_returned)
{
	void *a = reg(PD1, 0x10000, PAGE);

	fake_invalidate(fmon, 0x10000, 0x11000);
	reg(PD1, 0x50000, PAGE);		/* a lookup drains */
	fv->dereg_rc = EBUSY;
	ck_assert_int_eq(cache_dereg(cache, a), EBUSY);
	fv->dereg_rc = 0;
}
END_TEST

static void invalidate_during_reg(struct fake_verbs *v,
				  const struct cache_key *k)
{
	(void)v;
	fake_invalidate(fmon, k->addr, k->addr + k->length);
}

START_TEST(invalidation_during_registration_is_not_cached)
{
	void *a, *b;

	fv->on_reg = invalidate_during_reg;
	a = reg(PD1, 0x10000, PAGE);
	ck_assert_ptr_nonnull(a);
	fv->on_reg = NULL;
	ck_assert_uint_eq(stats_get(&st->stale), 0);	/* no warning case */
	b = reg(PD1, 0x10000, PAGE);
	ck_assert_ptr_ne(a, b);
	ck_assert_int_eq(n_reg(), 2);
	/* The uncached one goes at its dereg, the other stays. */
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	ck_assert_int_eq(n_dereg(), 1);
	ck_assert_int_eq(cache_dereg(cache, b), 0);
	ck_assert_int_eq(n_dereg(), 1);
}
END_TEST

static void invalidate_on_watch(struct fake_monitor *m, uintptr_t start,
				uintptr_t end)
{
	m->on_watch = NULL;
	fake_invalidate(m, start, end);
}

START_TEST(invalidation_between_watch_and_reg_is_seen)
{
	void *a, *b;

	fmon->on_watch = invalidate_on_watch;
	a = reg(PD1, 0x10000, PAGE);
	b = reg(PD1, 0x10000, PAGE);
	ck_assert_ptr_ne(a, b);
	ck_assert_int_eq(n_reg(), 2);
}
END_TEST

START_TEST(range_events_invalidate_overlapping_entries)
{
	void *a, *b, *c;

	fmon->range_mode = true;
	a = reg(PD1, 0x10000, PAGE);
	b = reg(PD1, 0x11000, PAGE);
	c = reg(PD1, 0x20000, PAGE);
	cache_dereg(cache, a);
	cache_dereg(cache, b);
	cache_dereg(cache, c);
	fake_invalidate(fmon, 0x10800, 0x11800);	/* a and b */
	ck_assert_ptr_eq(reg(PD1, 0x20000, PAGE), c);
	ck_assert_int_eq(n_dereg(), 2);
	ck_assert_uint_eq(stats_get(&st->invalidations), 2);
}
END_TEST

START_TEST(unaligned_entry_is_watched_by_pages)
{
	void *a = reg(PD1, 0x10010, 0x20);

	cache_dereg(cache, a);
	ck_assert_uint_eq(fmon->watches[0].start, 0x10000);
	ck_assert_uint_eq(fmon->watches[0].end, 0x11000);
	fake_invalidate(fmon, 0x10800, 0x10900);	/* same page, other bytes */
	reg(PD1, 0x10010, 0x20);
	ck_assert_int_eq(n_dereg(), 1);
	ck_assert_int_eq(n_reg(), 2);
}
END_TEST

START_TEST(watch_failure_passes_through)
{
	void *a;

	fmon->watch_errno = ENOSPC;
	a = reg(PD1, 0x10000, PAGE);
	ck_assert_ptr_nonnull(a);
	ck_assert_uint_eq(stats_get(&st->passthrough), 1);
	ck_assert_uint_eq(cache_registered_count(cache), 0);
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	ck_assert_int_eq(n_dereg(), 1);
	fmon->watch_errno = 0;
	a = reg(PD1, 0x10000, PAGE);
	ck_assert_uint_eq(cache_registered_count(cache), 1);
}
END_TEST

START_TEST(drain_failure_stops_caching)
{
	void *idle = reg(PD1, 0x10000, PAGE);
	void *busy = reg(PD1, 0x20000, PAGE);
	void *p1, *p2;

	cache_dereg(cache, idle);
	fmon->drain_errno = EIO;
	fake_invalidate(fmon, 0x90000, 0x91000);
	p1 = reg(PD1, 0x10000, PAGE);
	ck_assert(cache_is_broken(cache));
	ck_assert_int_eq(n_dereg(), 1);		/* idle released */
	ck_assert_int_eq(n_reg(), 3);		/* p1 is a new registration */
	p2 = reg(PD1, 0x10000, PAGE);
	ck_assert_ptr_ne(p1, p2);		/* pass-through now */
	ck_assert_uint_eq(stats_get(&st->passthrough), 2);
	ck_assert_int_eq(cache_dereg(cache, p1), 0);
	ck_assert_int_eq(cache_dereg(cache, p2), 0);
	ck_assert_int_eq(cache_dereg(cache, busy), 0);	/* really goes */
	ck_assert_int_eq(n_dereg(), 4);
	ck_assert_int_eq(atomic_load(&fv->live), 0);
}
END_TEST

/* ---- pd, context, rereg ---------------------------------------------------- */

START_TEST(release_pd_deregisters_its_idle_mrs)
{
	void *a = reg(PD1, 0x10000, PAGE);
	void *b = reg(PD2, 0x10000, PAGE);
	void *busy = reg(PD1, 0x20000, PAGE);

	cache_dereg(cache, a);
	cache_dereg(cache, b);
	cache_release_pd(cache, PD1);
	ck_assert_int_eq(n_dereg(), 1);
	/* Released for the application, not evicted for the limits. */
	ck_assert_uint_eq(stats_get(&st->evictions), 0);
	ck_assert_uint_eq(cache_registered_count(cache), 2);
	ck_assert_ptr_eq(reg(PD2, 0x10000, PAGE), b);
	ck_assert_ptr_eq(reg(PD1, 0x20000, PAGE), busy);
	ck_assert_int_eq(n_reg(), 3);
	reg(PD1, 0x10000, PAGE);		/* a was released: a miss */
	ck_assert_int_eq(n_reg(), 4);
	(void)a;
}
END_TEST

START_TEST(close_device_releases_and_forgets_its_mrs)
{
	void *idle = reg(PD1, 0x10000, PAGE);
	void *busy = reg(PD1, 0x20000, PAGE);
	void *other = reg(PD2, 0x10000, PAGE);

	(void)busy;
	cache_dereg(cache, idle);
	cache_dereg(cache, other);
	cache_release_ctx(cache, CTX1);
	ck_assert_int_eq(n_dereg(), 1);
	cache_forget_ctx(cache, CTX1);
	ck_assert_int_eq(n_dereg(), 1);		/* closed device: no dereg */
	ck_assert_uint_eq(cache_registered_count(cache), 1);
	ck_assert_int_eq(atomic_load(&fmon->n_active), 1);
	ck_assert_ptr_eq(reg(PD2, 0x10000, PAGE), other);
}
END_TEST

START_TEST(rereg_takes_mr_out_of_cache)
{
	void *a = reg(PD1, 0x10000, PAGE), *b;

	cache_detach(cache, a);
	b = reg(PD1, 0x10000, PAGE);
	ck_assert_ptr_ne(a, b);
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	ck_assert_int_eq(n_dereg(), 1);
	/* Detaching an MR that is not cached is harmless. */
	cache_detach(cache, (void *)0x1234);
}
END_TEST

START_TEST(rereg_of_idle_mr_hands_it_back)
{
	void *a = reg(PD1, 0x10000, PAGE);

	cache_dereg(cache, a);
	cache_detach(cache, a);			/* the app uses it again */
	ck_assert_uint_eq(cache_idle_count(cache), 0);
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	ck_assert_int_eq(n_dereg(), 1);
}
END_TEST

START_TEST(rereg_of_shared_mr_is_refused)
{
	void *a = reg(PD1, 0x10000, PAGE);

	ck_assert_ptr_eq(reg(PD1, 0x10000, PAGE), a);	/* refs 2 */
	ck_assert_int_eq(cache_detach(cache, a), -EBUSY);
	/* Nothing changed: still cached, both references still count. */
	ck_assert_ptr_eq(reg(PD1, 0x10000, PAGE), a);
	ck_assert_int_eq(n_reg(), 1);
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	ck_assert_int_eq(cache_detach(cache, a), 0);	/* refs 1: allowed */
	ck_assert_int_eq(cache_dereg(cache, a), 0);	/* detached: goes */
	ck_assert_int_eq(n_dereg(), 1);
}
END_TEST

/* ---- fork ------------------------------------------------------------------ */

/* Register and release at once: cached and idle. */
static void *reg_idle(void *pd, uintptr_t addr, size_t len)
{
	void *mr = reg(pd, addr, len);

	ck_assert_int_eq(cache_dereg(cache, mr), 0);
	return mr;
}

/* The child ran its checks and exited with 0: all of them held. */
static void expect_child_ok(pid_t pid)
{
	int status;

	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
}

/*
 * Fork with the raw system call, so that no fork handler runs, and let
 * the child exit with what @checks returns.
 */
static void run_raw_child(int (*checks)(void *), void *arg)
{
	pid_t pid = (pid_t)syscall(SYS_fork);

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(checks(arg));
	expect_child_ok(pid);
}

static int child_checks(void *parent_mr)
{
	int regs = n_reg(), deregs = n_dereg();
	void *m;

	/* A cached key: not a hit in the child, a pass-through registration. */
	m = reg(PD1, 0x10000, PAGE);
	if (!m || m == parent_mr || n_reg() != regs + 1)
		return 1;
	if (cache_dereg(cache, m) != 0 || n_dereg() != deregs + 1)
		return 2;
	/* The parent's MR is never deregistered from the child. */
	if (cache_dereg(cache, parent_mr) != 0 || n_dereg() != deregs + 1)
		return 3;
	cache_release_pd(cache, PD1);
	cache_release_ctx(cache, CTX1);
	if (n_dereg() != deregs + 1)
		return 4;
	return 0;
}

START_TEST(fork_child_passes_through)
{
	void *a = reg(PD1, 0x10000, PAGE);
	void *idle = reg_idle(PD1, 0x20000, PAGE);
	pid_t pid;

	cache_fork_prepare(cache);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		cache_fork_child(cache);
		_exit(child_checks(a));
	}
	cache_fork_parent(cache);
	expect_child_ok(pid);
	/* The parent is unaffected. */
	ck_assert_ptr_eq(reg(PD1, 0x10000, PAGE), a);
	ck_assert_ptr_eq(reg(PD1, 0x20000, PAGE), idle);
	ck_assert_int_eq(n_reg(), 2);
	ck_assert_int_eq(n_dereg(), 0);
}
END_TEST

/*
 * A child made without the fork handlers (raw fork system call): every
 * slow path notices the new pid, and the parent's MRs are never
 * deregistered, unwatched or drained from the child.
 */
static int raw_child_checks(void *parent_busy)
{
	int deregs = n_dereg(), regs = n_reg();
	int watches = atomic_load(&fmon->n_watch);
	int unwatches = atomic_load(&fmon->n_unwatch);
	int drains = atomic_load(&fmon->n_drain);
	void *m;

	/* An invalidation pending from the parent's point of view. */
	fake_invalidate(fmon, 0x10000, 0x11000);
	/* A new key: passes through, no watch of the parent's monitor. */
	m = reg(PD1, 0x50000, PAGE);
	if (!m || n_reg() != regs + 1)
		return 1;
	if (atomic_load(&fmon->n_watch) != watches ||
	    atomic_load(&fmon->n_drain) != drains)
		return 2;
	if (cache_is_broken(cache))
		return 3;
	if (cache_dereg(cache, m) != 0 || n_dereg() != deregs + 1)
		return 4;
	/* The parent's busy MR: its last reference here deregisters nothing. */
	if (cache_dereg(cache, parent_busy) != 0 || n_dereg() != deregs + 1)
		return 5;
	cache_release_pd(cache, PD1);
	cache_release_ctx(cache, CTX1);
	cache_forget_ctx(cache, CTX1);
	if (n_dereg() != deregs + 1 ||
	    atomic_load(&fmon->n_unwatch) != unwatches)
		return 6;
	cache_destroy(cache);
	cache = NULL;
	if (n_dereg() != deregs + 1 ||
	    atomic_load(&fmon->n_unwatch) != unwatches)
		return 7;
	return 0;
}

START_TEST(fork_without_handlers_never_touches_parent_mrs)
{
	void *busy = reg(PD1, 0x10000, PAGE);
	void *idle = reg_idle(PD1, 0x20000, PAGE);

	run_raw_child(raw_child_checks, busy);
	ck_assert_ptr_eq(reg(PD1, 0x20000, PAGE), idle);
	ck_assert_int_eq(n_dereg(), 0);
}
END_TEST

/* A monitor failing with EIO in a child is a fork, not a broken monitor. */
static int eio_child_checks(void *unused)
{
	int deregs = n_dereg();

	(void)unused;
	fmon->drain_errno = EIO;
	fake_invalidate(fmon, 0x90000, 0x91000);
	reg(PD1, 0x30000, PAGE);
	cache_release_pd(cache, PD1);
	return n_dereg() != deregs ? 1 : 0;
}

START_TEST(monitor_error_in_child_is_not_a_break)
{
	void *idle = reg_idle(PD1, 0x20000, PAGE);

	run_raw_child(eio_child_checks, NULL);
	ck_assert(!cache_is_broken(cache));
	ck_assert_ptr_eq(reg(PD1, 0x20000, PAGE), idle);
}
END_TEST

/* ---- threads ---------------------------------------------------------------- */

struct racer {
	void *mr;
};

static void *reg_same_key(void *arg)
{
	struct racer *r = arg;

	r->mr = reg(PD1, 0x10000, PAGE);
	return NULL;
}

START_TEST(concurrent_miss_registers_once)
{
	struct racer r[4];
	pthread_t t[4];

	fv->reg_delay_us = 100000;
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, reg_same_key, &r[i]);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	ck_assert_int_eq(n_reg(), 1);
	for (int i = 1; i < 4; i++)
		ck_assert_ptr_eq(r[i].mr, r[0].mr);
	ck_assert_uint_eq(stats_hits(st), 3);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(cache_dereg(cache, r[i].mr), 0);
	ck_assert_uint_eq(cache_idle_count(cache), 1);
}
END_TEST

START_TEST(concurrent_failed_miss_lets_waiters_retry)
{
	struct racer r[3];
	pthread_t t[3];

	fv->reg_delay_us = 50000;
	fv->reg_errno = EFAULT;
	for (int i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, reg_same_key, &r[i]);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	/* Every caller got the real library's own answer. */
	for (int i = 0; i < 3; i++)
		ck_assert_ptr_null(r[i].mr);
	ck_assert_int_eq(n_reg(), 3);
	ck_assert_uint_eq(cache_registered_count(cache), 0);
}
END_TEST

/* A slow miss must not block hits on other keys. */
static atomic_int hits_during_slow_miss;
static atomic_bool slow_miss_running;

static void slow_reg_hook(struct fake_verbs *v, const struct cache_key *k)
{
	(void)v;
	if (k->addr != 0x90000)
		return;
	atomic_store(&slow_miss_running, true);
	for (int i = 0; i < 2000 && atomic_load(&hits_during_slow_miss) < 1000; i++)
		usleep(5000);
	atomic_store(&slow_miss_running, false);
}

static void *slow_miss(void *arg)
{
	(void)arg;
	reg(PD1, 0x90000, PAGE);
	return NULL;
}

START_TEST(hits_proceed_during_slow_miss)
{
	void *a = reg(PD1, 0x10000, PAGE);
	pthread_t t;

	cache_dereg(cache, a);
	fv->on_reg = slow_reg_hook;
	pthread_create(&t, NULL, slow_miss, NULL);
	while (!atomic_load(&slow_miss_running))
		usleep(1000);
	while (atomic_load(&hits_during_slow_miss) < 1000) {
		ck_assert_ptr_eq(reg(PD1, 0x10000, PAGE), a);
		cache_dereg(cache, a);
		atomic_fetch_add(&hits_during_slow_miss, 1);
	}
	/* All those hits completed while the miss was still in the driver. */
	ck_assert(atomic_load(&slow_miss_running));
	pthread_join(t, NULL);
}
END_TEST

#define STRESS_THREADS 4
#define STRESS_ITERS 20000
#define STRESS_KEYS 16

static atomic_bool stress_stop;

static void *stress_worker(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;

	for (int i = 0; i < STRESS_ITERS; i++) {
		uintptr_t addr = 0x100000 + (rand_r(&seed) % STRESS_KEYS) * PAGE;
		struct fake_mr *m = reg(PD1, addr, PAGE);

		if (!m || m->magic != FAKE_MR_MAGIC || m->key.addr != addr)
			return (void *)1;
		if (cache_dereg(cache, m) != 0)
			return (void *)2;
	}
	return NULL;
}

static void *stress_invalidator(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;

	while (!atomic_load(&stress_stop)) {
		uintptr_t addr = 0x100000 + (rand_r(&seed) % STRESS_KEYS) * PAGE;

		fake_invalidate(fmon, addr, addr + PAGE);
		usleep(50);
	}
	return NULL;
}

START_TEST(threads_reg_dereg_while_invalidating)
{
	pthread_t w[STRESS_THREADS], inv;
	void *ret;

	make_cache(8, 1ULL << 40);	/* also exercise eviction */
	atomic_store(&stress_stop, false);
	pthread_create(&inv, NULL, stress_invalidator, (void *)99);
	for (uintptr_t i = 0; i < STRESS_THREADS; i++)
		pthread_create(&w[i], NULL, stress_worker, (void *)(i + 1));
	for (int i = 0; i < STRESS_THREADS; i++) {
		pthread_join(w[i], &ret);
		ck_assert_ptr_null(ret);
	}
	atomic_store(&stress_stop, true);
	pthread_join(inv, NULL);
	ck_assert_uint_eq(stats_hits(st) + stats_get(&st->misses) +
			  stats_get(&st->passthrough),
			  STRESS_THREADS * STRESS_ITERS);
	ck_assert_int_eq(n_reg(), (int)(stats_get(&st->misses) +
					 stats_get(&st->passthrough)));
	ck_assert_uint_le(cache_registered_count(cache), 8);
	ck_assert_uint_eq(cache_idle_count(cache), cache_registered_count(cache));
	/* Everything the cache holds is released by destroy. */
	cache_destroy(cache);
	cache = NULL;
	ck_assert_int_eq(atomic_load(&fv->live), 0);
	ck_assert_int_eq(atomic_load(&fmon->n_active), 0);
}
END_TEST

/* ---- logging never blocks under a lock ------------------------------------ */

struct logger {
	void *busy;
	atomic_bool done;
};

/* Drains an invalidation of a busy MR: warns (under the cache locks). */
static void *warn_stale(void *arg)
{
	struct logger *l = arg;

	fake_invalidate(fmon, 0x10000, 0x11000);
	reg(PD1, 0x70000, PAGE);
	atomic_store(&l->done, true);
	return NULL;
}

START_TEST(stalled_log_never_stalls_other_threads)
{
	struct logger l = { .busy = NULL };
	void *hit = reg(PD1, 0x40000, PAGE);
	struct timespec deadline;
	int p[2], saved, n_hits = 0;
	pthread_t t;
	char junk[4096] = { 0 };

	l.busy = reg(PD1, 0x10000, PAGE);
	cache_dereg(cache, hit);
	/* stderr becomes a full pipe nobody reads: every write blocks. */
	ck_assert_int_eq(pipe(p), 0);
	ck_assert_int_eq(fcntl(p[1], F_SETFL, O_NONBLOCK), 0);
	while (write(p[1], junk, sizeof(junk)) > 0)
		;
	ck_assert_int_eq(fcntl(p[1], F_SETFL, 0), 0);
	saved = dup(STDERR_FILENO);
	ck_assert_int_eq(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
	log_init(LOG_LEVEL_WARN, NULL);

	pthread_create(&t, NULL, warn_stale, &l);
	/* Wait until that thread has drained (and is stuck logging). */
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += 20;
	while (stats_get(&st->stale) == 0) {
		struct timespec now;

		clock_gettime(CLOCK_MONOTONIC, &now);
		ck_assert_msg(now.tv_sec < deadline.tv_sec, "no drain");
		sched_yield();
	}
	/* Hits on another key go on while that thread is stuck logging. */
	for (n_hits = 0; n_hits < 1000; n_hits++) {
		void *m = reg(PD1, 0x40000, PAGE);

		ck_assert_ptr_eq(m, hit);
		cache_dereg(cache, m);
	}
	ck_assert(!atomic_load(&l.done));	/* it really was stuck */
	/* Unblock the logger, then restore stderr. */
	while (read(p[0], junk, sizeof(junk)) == (ssize_t)sizeof(junk) &&
	       !atomic_load(&l.done))
		;
	pthread_join(t, NULL);
	dup2(saved, STDERR_FILENO);
	close(saved);
	log_init(LOG_LEVEL_ERROR, NULL);
	ck_assert_int_eq(cache_dereg(cache, l.busy), 0);
}
END_TEST

/* ---- accounting, unwatchable memory, stale reports ------------------------- */

START_TEST(misses_counted_only_after_success)
{
	fv->reg_errno = EFAULT;
	ck_assert_ptr_null(reg(PD1, 0x10000, PAGE));
	ck_assert_uint_eq(stats_get(&st->misses), 0);
	fv->reg_errno = 0;
	ck_assert_ptr_nonnull(reg(PD1, 0x10000, PAGE));
	ck_assert_uint_eq(stats_get(&st->misses), 1);
}
END_TEST

START_TEST(monitor_failure_counts_in_use_as_stale)
{
	void *busy = reg(PD1, 0x10000, PAGE);

	fmon->drain_errno = EIO;
	fake_invalidate(fmon, 0x90000, 0x91000);
	reg(PD1, 0x30000, PAGE);
	ck_assert(cache_is_broken(cache));
	ck_assert_uint_eq(stats_get(&st->stale), 1);
	ck_assert_int_eq(cache_dereg(cache, busy), 0);
}
END_TEST

START_TEST(pinned_bytes_count_whole_pages)
{
	void *a = reg(PD1, 0x10000 + 100, 64);		/* one page */
	void *b = reg(PD1, 0x20000 + PAGE - 8, 16);	/* straddles two */

	ck_assert_uint_eq(stats_get(&st->pinned_bytes), 3 * PAGE);
	cache_dereg(cache, a);
	cache_dereg(cache, b);
	ck_assert_uint_eq(stats_get(&st->pinned_bytes), 3 * PAGE);
	fake_invalidate(fmon, 0x10000, 0x11000);
	reg(PD1, 0x50000, PAGE);	/* drains */
	ck_assert_uint_eq(stats_get(&st->pinned_bytes), 3 * PAGE);
}
END_TEST

START_TEST(byte_limit_counts_pinned_pages)
{
	make_cache(1000, 4 * PAGE);
	/* 64-byte MRs: four fit the limit only by their pages. */
	for (uintptr_t i = 0; i < 8; i++)
		cache_dereg(cache, reg(PD1, 0x100000 + i * PAGE, 64));
	ck_assert_uint_le(cache_registered_count(cache), 4);
	ck_assert_uint_le(stats_get(&st->pinned_bytes), 4 * PAGE);
}
END_TEST

START_TEST(uncached_registration_retries_after_enomem)
{
	struct cache_key k = key_of(PD1, 0x20000, PAGE, 7);
	void *idle = reg(PD1, 0x10000, PAGE), *mr;

	cache_dereg(cache, idle);
	fv->max_live = 1;	/* the idle MR fills the limit */
	mr = cache_reg_uncached(cache, &k, 0);
	ck_assert_ptr_nonnull(mr);
	ck_assert_int_eq(n_dereg(), 1);		/* the idle one made way */
	ck_assert_uint_eq(stats_get(&st->passthrough), 1);
	ck_assert_int_eq(cache_dereg(cache, mr), 0);
}
END_TEST

START_TEST(unwatchable_range_passes_through)
{
	void *a, *b;

	fmon->watch_errno = ENXIO;	/* device memory */
	a = reg(PD1, 0x10000, PAGE);
	b = reg(PD1, 0x10000, PAGE);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_ne(a, b);			/* never cached */
	ck_assert_uint_eq(stats_get(&st->unwatchable), 2);
	ck_assert_uint_eq(stats_get(&st->passthrough), 2);
	ck_assert_int_eq(cache_dereg(cache, a), 0);
	ck_assert_int_eq(cache_dereg(cache, b), 0);
	ck_assert_int_eq(n_dereg(), 2);		/* really deregistered */
}
END_TEST

/* The log file's contents (the test's log goes there). */
static char *log_to_file(char *path)
{
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	close(fd);
	log_init(LOG_LEVEL_WARN, path);
	return path;
}

static char *read_log(const char *path)
{
	static char buf[1 << 16];
	FILE *f = fopen(path, "r");
	size_t n;

	ck_assert_ptr_nonnull(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	log_reset();
	unlink(path);
	return buf;
}

static int count_of(const char *text, const char *what)
{
	int n = 0;

	for (const char *p = text; (p = strstr(p, what)); p++)
		n++;
	return n;
}

/* Every stale MR of a burst is accounted for in the log (none dropped). */
START_TEST(stale_burst_reports_every_mr)
{
	char path[] = "/tmp/ummushim-test-log-XXXXXX";
	void *mr[50];
	unsigned long more = 0;
	char *text, *p;

	for (int i = 0; i < 50; i++)
		mr[i] = reg(PD1, 0x100000 + (uintptr_t)i * PAGE, PAGE);
	log_to_file(path);
	fake_invalidate(fmon, 0x100000, 0x100000 + 50 * PAGE);
	reg(PD1, 0x900000, PAGE);	/* drains */
	text = read_log(path);
	ck_assert_uint_eq(stats_get(&st->stale), 50);
	p = strstr(text, " more MRs in use were invalidated");
	ck_assert_msg(p, "no summary line; %d stale MRs named, %d 'dropped' notes",
		      count_of(text, "in-use MR") + count_of(text, "still uses"),
		      count_of(text, "dropped"));
	while (p > text && p[-1] >= '0' && p[-1] <= '9')
		p--;
	more = strtoul(p, NULL, 10);
	ck_assert_uint_eq(count_of(text, "invalidation over an in-use MR") +
			  more, 50);
	ck_assert_int_eq(count_of(text, "dropped"), 0);
	for (int i = 0; i < 50; i++)
		ck_assert_int_eq(cache_dereg(cache, mr[i]), 0);
}
END_TEST

START_TEST(stale_warning_says_what_is_known)
{
	char path[] = "/tmp/ummushim-test-log-XXXXXX";
	void *a = reg(PD1, 0x10000, PAGE), *b = reg(PD1, 0x20000, PAGE);
	void *c = reg(PD1, 0x30000, PAGE);
	char *text;

	log_to_file(path);
	fake_invalidate_flags(fmon, 0x10000, 0x11000, MONITOR_INVAL_UNMAPPED);
	fake_invalidate(fmon, 0x1f000, 0x20800);	/* half of b's page */
	fake_invalidate(fmon, 0x30800, 0x40000);	/* past c's end */
	reg(PD1, 0x90000, PAGE);
	text = read_log(path);
	ck_assert_int_eq(count_of(text, "the application unmapped memory it still had registered"), 1);
	ck_assert_int_eq(count_of(text, "the kernel reported an invalidation over an in-use MR"), 2);
	/* Which part changed, clipped to the MR at either end. */
	ck_assert_msg(strstr(text, "(invalidated: [0x10000, 0x11000))"), "%s", text);
	ck_assert_msg(strstr(text, "(invalidated: [0x20000, 0x20800))"), "%s", text);
	ck_assert_msg(strstr(text, "(invalidated: [0x30800, 0x31000))"), "%s", text);
	ck_assert_int_eq(count_of(text, "changed while the application still uses"), 0);
	ck_assert_uint_eq(stats_get(&st->stale_unmapped), 1);
	ck_assert_uint_eq(stats_get(&st->stale_invalidated), 2);
	ck_assert_uint_eq(stats_get(&st->stale), 3);
	cache_dereg(cache, a);
	cache_dereg(cache, b);
	cache_dereg(cache, c);
}
END_TEST

/* Rate limit: lines over it are counted and said, never dropped silently. */
START_TEST(stale_rate_limit_says_what_it_suppressed)
{
	char path[] = "/tmp/ummushim-test-log-XXXXXX";
	char *text;

	log_to_file(path);
	for (int i = 0; i < 40; i++) {
		uintptr_t at = 0x100000 + (uintptr_t)i * PAGE;
		void *m = reg(PD1, at, PAGE);

		fake_invalidate(fmon, at, at + PAGE);
		reg(PD1, 0x900000, PAGE);
		cache_dereg(cache, m);
	}
	cache_report_suppressed(cache);
	text = read_log(path);
	ck_assert_uint_eq(stats_get(&st->stale), 40);
	ck_assert_int_eq(count_of(text, "over an in-use MR"), 20);
	ck_assert_msg(strstr(text, "20 stale-MR warnings were suppressed"),
		      "%s", text);
}
END_TEST

/* ---- clone(CLONE_VM) ------------------------------------------------------- */

static int clone_vm_child(void *arg)
{
	(void)arg;
	reg(PD1, 0x70000, PAGE);	/* a miss: the slow path looks at the pid */
	return 0;
}

/*
 * A child sharing the parent's memory (clone(CLONE_VM) without
 * CLONE_THREAD, e.g. posix_spawn's vfork) must not turn the parent's
 * cache off.
 */
START_TEST(clone_vm_child_does_not_stop_parent_caching)
{
	size_t stack_size = 1 << 20;
	char *stack = malloc(stack_size);
	int status;
	pid_t pid;
	void *a;

	ck_assert_ptr_nonnull(stack);
	pid = clone(clone_vm_child, stack + stack_size, CLONE_VM | SIGCHLD,
		    NULL);
	ck_assert_int_gt(pid, 0);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	free(stack);
	a = reg(PD1, 0x10000, PAGE);
	cache_dereg(cache, a);
	ck_assert_ptr_eq(reg(PD1, 0x10000, PAGE), a);	/* still caching */
	ck_assert_uint_ge(stats_hits(st), 1);
}
END_TEST

static Suite *cache_suite(void)
{
	Suite *s = suite_create("cache");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, fixture_setup_default, fixture_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, miss_then_hit_returns_same_mr);
	tcase_add_test(tc, one_monitor_check_per_registration);
	tcase_add_test(tc, every_key_field_matters);
	tcase_add_test(tc, how_is_passed_to_real_reg);
	tcase_add_test(tc, lazy_dereg_keeps_registration);
	tcase_add_test(tc, double_dereg_of_idle_mr_is_refused);
	tcase_add_test(tc, foreign_mr_dereg_passes_through);
	tcase_add_test(tc, real_reg_error_is_returned_unchanged);
	tcase_add_test(tc, enomem_retries_after_releasing_idle);
	tcase_add_test(tc, lru_evicts_least_recently_used);
	tcase_add_test(tc, byte_limit_evicts);
	tcase_add_test(tc, busy_entries_are_never_evicted);
	tcase_add_test(tc, oversized_registration_is_not_kept);
	tcase_add_test(tc, no_drain_when_nothing_changed);
	tcase_add_test(tc, idle_invalidated_entry_is_deregistered);
	tcase_add_test(tc, unrelated_invalidation_keeps_entry);
	tcase_add_test(tc, busy_invalidated_entry_becomes_stale);
	tcase_add_test(tc, stale_dereg_error_is_returned);
	tcase_add_test(tc, invalidation_during_registration_is_not_cached);
	tcase_add_test(tc, invalidation_between_watch_and_reg_is_seen);
	tcase_add_test(tc, range_events_invalidate_overlapping_entries);
	tcase_add_test(tc, unaligned_entry_is_watched_by_pages);
	tcase_add_test(tc, watch_failure_passes_through);
	tcase_add_test(tc, drain_failure_stops_caching);
	tcase_add_test(tc, release_pd_deregisters_its_idle_mrs);
	tcase_add_test(tc, close_device_releases_and_forgets_its_mrs);
	tcase_add_test(tc, rereg_takes_mr_out_of_cache);
	tcase_add_test(tc, rereg_of_idle_mr_hands_it_back);
	tcase_add_test(tc, rereg_of_shared_mr_is_refused);
	tcase_add_test(tc, fork_child_passes_through);
	tcase_add_test(tc, fork_without_handlers_never_touches_parent_mrs);
	tcase_add_test(tc, monitor_error_in_child_is_not_a_break);
	tcase_add_test(tc, stalled_log_never_stalls_other_threads);
	tcase_add_test(tc, concurrent_miss_registers_once);
	tcase_add_test(tc, concurrent_failed_miss_lets_waiters_retry);
	tcase_add_test(tc, hits_proceed_during_slow_miss);
	tcase_add_test(tc, threads_reg_dereg_while_invalidating);
	tcase_add_test(tc, misses_counted_only_after_success);
	tcase_add_test(tc, monitor_failure_counts_in_use_as_stale);
	tcase_add_test(tc, pinned_bytes_count_whole_pages);
	tcase_add_test(tc, byte_limit_counts_pinned_pages);
	tcase_add_test(tc, uncached_registration_retries_after_enomem);
	tcase_add_test(tc, unwatchable_range_passes_through);
	tcase_add_test(tc, stale_burst_reports_every_mr);
	tcase_add_test(tc, stale_warning_says_what_is_known);
	tcase_add_test(tc, stale_rate_limit_says_what_it_suppressed);
	tcase_add_test(tc, clone_vm_child_does_not_stop_parent_caching);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	/* Warnings (stale MRs) are expected in some tests; keep output short. */
	log_init(LOG_LEVEL_ERROR, NULL);
	return check_run_suite(cache_suite());
}
