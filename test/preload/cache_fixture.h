/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The per-test fixture of the cache's unit tests (test_cache*.c): a cache
 * over the fake monitor and fake verbs (fakes.h) with its own counters.
 * Each test runs in its own process (Check's fork mode), so the fixture
 * lives in globals.
 */
#ifndef UMMUSHIM_TEST_CACHE_FIXTURE_H
#define UMMUSHIM_TEST_CACHE_FIXTURE_H

#include "cache.h"
#include "fakes.h"
#include "stats.h"

extern struct fake_monitor *fmon;
extern struct fake_verbs *fv;
extern struct shim_stats *st;
extern struct cache *cache;

/* The doubles and counters, and a cache with @lim (fixture_make_cache). */
void fixture_setup(const struct cache_limits *lim);
void fixture_teardown(void);
/* Replace the cache (if any) by a new one with @lim, same doubles. */
void fixture_make_cache(const struct cache_limits *lim);

/* Calls of the fake real registration / deregistration so far. */
int n_reg(void);
int n_dereg(void);

#endif /* UMMUSHIM_TEST_CACHE_FIXTURE_H */
