// SPDX-License-Identifier: BSD-2-Clause
/*
 * The counted range set (preload/range_set.c): counts per piece, what an
 * unwatch releases, the gaps, merging, and the reserve bound (add and sub
 * never allocate within it).  Checked against a page-by-page model.
 */
#include <check.h>

#include "check_run.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "range_set.h"

#define PAGES 64	/* the model's address space: pages 0..63, of 1 byte */

static unsigned long model[PAGES];
static unsigned char released[PAGES];

static void on_release(void *arg, uintptr_t start, uintptr_t end)
{
	(void)arg;
	ck_assert_uint_lt(start, end);
	for (uintptr_t i = start; i < end; i++) {
		ck_assert_msg(model[i] == 0, "page %lu released while watched",
			      (unsigned long)i);
		released[i]++;
	}
}

/* The set holds exactly the model: sorted, disjoint, merged, counted. */
static void expect_model(const struct range_set *s)
{
	uintptr_t prev_end = 0;
	unsigned long prev_count = 0;

	ck_assert_uint_le(s->n, s->cap);

	for (size_t i = 0; i < s->n; i++) {
		const struct range_seg *g = &s->v[i];

		ck_assert_uint_lt(g->start, g->end);
		ck_assert_uint_ge(g->start, prev_end);
		ck_assert_uint_gt(g->count, 0);
		ck_assert_msg(!(g->start == prev_end && g->count == prev_count),
			      "unmerged neighbours at %lu",
			      (unsigned long)g->start);
		for (uintptr_t p = prev_end; p < g->start; p++)
			ck_assert_uint_eq(model[p], 0);
		for (uintptr_t p = g->start; p < g->end; p++)
			ck_assert_uint_eq(model[p], g->count);
		prev_end = g->end;
		prev_count = g->count;
	}
	for (uintptr_t p = prev_end; p < PAGES; p++)
		ck_assert_uint_eq(model[p], 0);
}

static void add(struct range_set *s, uintptr_t a, uintptr_t b)
{
	range_set_add(s, a, b);
	for (uintptr_t i = a; i < b; i++)
		model[i]++;
	expect_model(s);
}

/* Drop a watch: exactly the pages that became uncovered are released. */
static void sub(struct range_set *s, uintptr_t a, uintptr_t b)
{
	unsigned char want[PAGES] = { 0 };

	for (uintptr_t i = a; i < b; i++)
		want[i] = --model[i] == 0;
	memset(released, 0, sizeof(released));
	range_set_sub(s, a, b, on_release, NULL);
	ck_assert(memcmp(released, want, sizeof(want)) == 0);
	expect_model(s);
}

static void setup(void)
{
	memset(model, 0, sizeof(model));
}

START_TEST(overlapping_and_adjacent)
{
	struct range_set s = { 0 };

	ck_assert_int_eq(range_set_reserve(&s, 4), 0);
	add(&s, 10, 20);
	add(&s, 15, 30);	/* overlaps: 10-15:1 15-20:2 20-30:1 */
	ck_assert_uint_eq(s.n, 3);
	add(&s, 30, 40);	/* adjacent, same count: merges with 20-30 */
	ck_assert_uint_eq(s.n, 3);
	sub(&s, 10, 20);	/* releases 10-15 only */
	sub(&s, 30, 40);
	sub(&s, 15, 30);
	ck_assert_uint_eq(s.n, 0);
	range_set_free(&s);
}
END_TEST

START_TEST(nested_same_range_twice)
{
	struct range_set s = { 0 };

	ck_assert_int_eq(range_set_reserve(&s, 3), 0);
	add(&s, 0, 64);
	add(&s, 8, 16);
	add(&s, 8, 16);
	sub(&s, 0, 64);		/* releases all but 8-16 */
	sub(&s, 8, 16);		/* nothing */
	sub(&s, 8, 16);		/* 8-16 */
	range_set_free(&s);
}
END_TEST

static uintptr_t gaps_seen[2 * PAGES];
static int n_gaps;

static void on_gap(void *arg, uintptr_t start, uintptr_t end)
{
	(void)arg;
	gaps_seen[n_gaps++] = start;
	gaps_seen[n_gaps++] = end;
}

START_TEST(gaps_are_the_uncovered_pieces)
{
	struct range_set s = { 0 };
	static const uintptr_t want[] = { 5, 10, 20, 30, 40, 50 };

	ck_assert_int_eq(range_set_reserve(&s, 2), 0);
	add(&s, 10, 20);
	add(&s, 30, 40);
	n_gaps = 0;
	range_set_gaps(&s, 5, 50, on_gap, NULL);
	ck_assert_int_eq(n_gaps, 6);
	for (int i = 0; i < 6; i++)
		ck_assert_uint_eq(gaps_seen[i], want[i]);
	n_gaps = 0;
	range_set_gaps(&s, 12, 18, on_gap, NULL);
	ck_assert_int_eq(n_gaps, 0);
	range_set_free(&s);
}
END_TEST

/* Random watches within the reserve: they fit, and nothing reallocates. */
START_TEST(random_within_reserve_fits)
{
	enum { W = 40 };
	struct range_set s = { 0 };
	uintptr_t a[W], b[W];
	struct range_seg *v;

	srand(7);
	ck_assert_int_eq(range_set_reserve(&s, W), 0);
	v = s.v;
	for (int i = 0; i < W; i++) {
		a[i] = (uintptr_t)(rand() % (PAGES - 1));
		b[i] = a[i] + 1 + (uintptr_t)(rand() % (int)(PAGES - a[i] - 1));
		add(&s, a[i], b[i]);
	}
	for (int i = W - 1; i >= 0; i -= 2)
		sub(&s, a[i], b[i]);
	for (int i = W - 2; i >= 0; i -= 2)
		sub(&s, a[i], b[i]);
	ck_assert_ptr_eq(s.v, v);
	ck_assert_uint_eq(s.n, 0);
	range_set_free(&s);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("range_set");
	TCase *tc = tcase_create("range_set");

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, overlapping_and_adjacent);
	tcase_add_test(tc, nested_same_range_twice);
	tcase_add_test(tc, gaps_are_the_uncovered_pieces);
	tcase_add_test(tc, random_within_reserve_fits);
	suite_add_tcase(s, tc);
	return check_run_suite(s);
}
