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

/* The protection domains, device contexts and page size the tests use. */
#define PD1 ((void *)0x1000)
#define PD2 ((void *)0x2000)
#define CTX1 ((void *)0xc1)
#define CTX2 ((void *)0xc2)
#define PAGE 4096UL

extern struct fake_monitor *fmon;
extern struct fake_verbs *fv;
extern struct shim_stats *st;
extern struct cache *cache;

/* The doubles and counters, and a cache with @lim (fixture_make_cache). */
void fixture_setup(const struct cache_limits *lim);
/* fixture_setup() with room for 1000 entries and 1 TiB. */
void fixture_setup_default(void);
void fixture_teardown(void);
/* Replace the cache (if any) by a new one with @lim, same doubles. */
void fixture_make_cache(const struct cache_limits *lim);

/* Calls of the fake real registration / deregistration so far. */
int n_reg(void);
int n_dereg(void);

#endif /* UMMUSHIM_TEST_CACHE_FIXTURE_H */
