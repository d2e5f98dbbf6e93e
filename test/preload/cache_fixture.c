// SPDX-License-Identifier: BSD-2-Clause
#include "cache_fixture.h"

#include <check.h>
#include <stdlib.h>

/* Global: the fixture of the running test (one test per process). */
struct fake_monitor *fmon;
struct fake_verbs *fv;
struct shim_stats *st;
struct cache *cache;

void fixture_make_cache(const struct cache_limits *lim)
{
	struct cache_ops ops;

	if (cache)
		cache_destroy(cache);
	fake_verbs_ops(fv, &ops);
	cache = cache_create(&ops, &fmon->base, lim, st);
	ck_assert_ptr_nonnull(cache);
}

void fixture_setup(const struct cache_limits *lim)
{
	fmon = malloc(sizeof(*fmon));
	fv = malloc(sizeof(*fv));
	st = calloc(1, sizeof(*st));
	ck_assert(fmon && fv && st);
	fake_monitor_init(fmon);
	fake_verbs_init(fv);
	cache = NULL;
	fixture_make_cache(lim);
}

void fixture_setup_default(void)
{
	struct cache_limits lim = { .max_entries = 1000,
				    .max_bytes = 1ULL << 40 };

	fixture_setup(&lim);
}

void fixture_teardown(void)
{
	if (cache)
		cache_destroy(cache);
	cache = NULL;
	fake_verbs_free_all(fv);
	free(st);
	free(fv);
	free(fmon);
}

int n_reg(void)
{
	return atomic_load(&fv->n_reg);
}

int n_dereg(void)
{
	return atomic_load(&fv->n_dereg);
}
