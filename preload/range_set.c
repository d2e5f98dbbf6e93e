// SPDX-License-Identifier: BSD-2-Clause
/* A counted set of address ranges (range_set.h). */
#include "range_set.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Index of the first segment ending after @x. */
static size_t segs_find(const struct range_set *s, uintptr_t x)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->v[mid].end <= x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int segs_reserve(struct range_set *s, size_t want)
{
	struct range_seg *v;
	size_t cap = s->cap ? s->cap : 16;

	if (want <= s->cap)
		return 0;
	while (cap < want)
		cap *= 2;
	v = realloc(s->v, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	s->v = v;
	s->cap = cap;
	return 0;
}

static void segs_insert(struct range_set *s, size_t i, struct range_seg g)
{
	memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof(*s->v));
	s->v[i] = g;
	s->n++;
}

static void segs_erase(struct range_set *s, size_t i)
{
	memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof(*s->v));
	s->n--;
}

/* Make @x a segment boundary (capacity must allow one more segment). */
static void segs_split(struct range_set *s, uintptr_t x)
{
	size_t i = segs_find(s, x);
	struct range_seg g;

	if (i >= s->n || s->v[i].start >= x)
		return;
	g = s->v[i];
	s->v[i].end = x;
	g.start = x;
	segs_insert(s, i + 1, g);
}

/* Merge neighbours that touch and have the same count. */
static void segs_compact(struct range_set *s)
{
	size_t out = 0;

	for (size_t i = 0; i < s->n; i++) {
		if (out > 0 && s->v[out - 1].end == s->v[i].start &&
		    s->v[out - 1].count == s->v[i].count)
			s->v[out - 1].end = s->v[i].end;
		else
			s->v[out++] = s->v[i];
	}
	s->n = out;
}

/*
 * Segment boundaries are always boundaries of watches, so @watches
 * watches never need more than this many segments, even transiently
 * while one is added or removed: reserving it in watch() lets unwatch()
 * work without allocating (it cannot fail).
 */
static size_t segs_bound(size_t watches)
{
	return 2 * watches + 2;
}

int range_set_reserve(struct range_set *s, size_t watches)
{
	return segs_reserve(s, segs_bound(watches));
}

void range_set_free(struct range_set *s)
{
	free(s->v);
	s->v = NULL;
	s->n = s->cap = 0;
}

void range_set_add(struct range_set *s, uintptr_t start, uintptr_t end)
{
	uintptr_t cur = start;
	size_t i;

	segs_split(s, start);
	segs_split(s, end);
	i = segs_find(s, start);
	while (cur < end) {
		if (i < s->n && s->v[i].start == cur) {
			s->v[i].count++;
			cur = s->v[i++].end;
		} else {
			uintptr_t gap_end = end;

			if (i < s->n && s->v[i].start < end)
				gap_end = s->v[i].start;
			segs_insert(s, i++, (struct range_seg){ cur, gap_end, 1 });
			cur = gap_end;
		}
	}
	segs_compact(s);
}

void range_set_sub(struct range_set *s, uintptr_t start, uintptr_t end,
		   range_fn released, void *arg)
{
	uintptr_t run_start = 0, run_end = 0;
	size_t i;

	segs_split(s, start);
	segs_split(s, end);
	i = segs_find(s, start);
	while (i < s->n && s->v[i].start < end) {
		if (--s->v[i].count > 0) {
			i++;
			continue;
		}
		if (run_end != s->v[i].start) {
			if (run_end > run_start)
				released(arg, run_start, run_end);
			run_start = s->v[i].start;
		}
		run_end = s->v[i].end;
		segs_erase(s, i);
	}
	if (run_end > run_start)
		released(arg, run_start, run_end);
	segs_compact(s);
}

void range_set_gaps(const struct range_set *s, uintptr_t start, uintptr_t end,
		    range_fn fn, void *arg)
{
	uintptr_t cur = start;

	for (size_t i = segs_find(s, start); i < s->n && cur < end; i++) {
		if (s->v[i].start >= end)
			break;
		if (s->v[i].start > cur)
			fn(arg, cur, s->v[i].start);
		cur = s->v[i].end;
	}
	if (cur < end)
		fn(arg, cur, end);
}
