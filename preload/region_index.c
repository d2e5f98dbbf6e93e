// SPDX-License-Identifier: BSD-2-Clause
/*
 * Region index: a sorted array.  Lookups are binary searches; insertions
 * and removals move the tail, which is cheap next to the real
 * registration (tens of microseconds) that every insertion follows.
 */
#include "region_index.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void region_index_init(struct region_index *ix)
{
	ix->items = NULL;
	ix->n = 0;
	ix->cap = 0;
}

void region_index_fini(struct region_index *ix)
{
	free(ix->items);
	region_index_init(ix);
}

static int group_cmp(const struct region_group *a, const struct region_group *b)
{
	if (a->pd != b->pd)
		return (uintptr_t)a->pd < (uintptr_t)b->pd ? -1 : 1;
	if (a->access != b->access)
		return a->access < b->access ? -1 : 1;
	if (a->iova_delta != b->iova_delta)
		return a->iova_delta < b->iova_delta ? -1 : 1;
	return 0;
}

static int item_cmp(const struct region_item *it, const struct region_group *g,
		    uintptr_t start)
{
	int c = group_cmp(&it->g, g);

	if (c)
		return c;
	return it->start < start ? -1 : it->start > start;
}

/* Index of the first item not below (g, start). */
static size_t lower_bound(const struct region_index *ix,
			  const struct region_group *g, uintptr_t start)
{
	size_t lo = 0, hi = ix->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (item_cmp(&ix->items[mid], g, start) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Index of the item of @g with the highest start <= @addr, or ix->n. */
static size_t last_at_or_below(const struct region_index *ix,
			       const struct region_group *g, uintptr_t addr)
{
	size_t i = lower_bound(ix, g, addr);

	if (i < ix->n && item_cmp(&ix->items[i], g, addr) == 0)
		return i;
	if (i == 0 || group_cmp(&ix->items[i - 1].g, g) != 0)
		return ix->n;
	return i - 1;
}

void *region_index_find(const struct region_index *ix,
			const struct region_group *g, uintptr_t start,
			uintptr_t end)
{
	size_t i = last_at_or_below(ix, g, start);

	if (i < ix->n && ix->items[i].end >= end)
		return ix->items[i].owner;
	return NULL;
}

size_t region_index_neighbours(const struct region_index *ix,
			       const struct region_group *g, uintptr_t start,
			       uintptr_t end,
			       void (*fn)(void *owner, void *arg), void *arg)
{
	size_t i = last_at_or_below(ix, g, start), n = 0;

	/* Non-overlapping: only the one below @start can reach into it. */
	if (i == ix->n || ix->items[i].end < start)
		i = lower_bound(ix, g, start);
	for (; i < ix->n && group_cmp(&ix->items[i].g, g) == 0 &&
	       ix->items[i].start <= end; i++) {
		fn(ix->items[i].owner, arg);
		n++;
	}
	return n;
}

int region_index_add(struct region_index *ix, const struct region_group *g,
		     uintptr_t start, uintptr_t end, void *owner,
		     void **garbage)
{
	size_t i = lower_bound(ix, g, start);

	if (i < ix->n && group_cmp(&ix->items[i].g, g) == 0 &&
	    ix->items[i].start < end)
		return -EEXIST;
	if (i > 0 && group_cmp(&ix->items[i - 1].g, g) == 0 &&
	    ix->items[i - 1].end > start)
		return -EEXIST;
	if (ix->n == ix->cap) {
		size_t cap = ix->cap ? ix->cap * 2 : 64;
		struct region_item *p = malloc(cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		if (ix->n)
			memcpy(p, ix->items, ix->n * sizeof(*p));
		*garbage = ix->items;
		ix->items = p;
		ix->cap = cap;
	}
	memmove(&ix->items[i + 1], &ix->items[i],
		(ix->n - i) * sizeof(ix->items[0]));
	ix->items[i] = (struct region_item){ *g, start, end, owner };
	ix->n++;
	return 0;
}

void region_index_remove(struct region_index *ix, const struct region_group *g,
			 uintptr_t start, void *owner)
{
	size_t i = lower_bound(ix, g, start);

	if (i >= ix->n || ix->items[i].owner != owner)
		return;
	memmove(&ix->items[i], &ix->items[i + 1],
		(ix->n - i - 1) * sizeof(ix->items[0]));
	ix->n--;
}
