/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The cache's index of regions that can serve containment hits: for each
 * group (protection domain, access flags (under UMMUSHIM_SUBRANGE=all
 * without the widenable rights), IOVA offset), the cached
 * regions' [start, end) ranges, kept sorted and non-overlapping, so that
 * "which region contains [addr, addr + len)?" is a binary search.  Not
 * thread-safe: the cache calls it under its structure lock.
 */
#ifndef UMMUSHIM_REGION_INDEX_H
#define UMMUSHIM_REGION_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Regions of one group may serve each other's requests. */
struct region_group {
	void *pd;
	unsigned int access;
	uint64_t iova_delta;	/* iova - addr, the same for the whole region */
};

struct region_item {
	struct region_group g;
	uintptr_t start, end;
	void *owner;		/* the cache's entry */
};

struct region_index {
	struct region_item *items;	/* sorted by (group, start) */
	size_t n, cap;
};

void region_index_init(struct region_index *ix);
void region_index_fini(struct region_index *ix);

/* The region of @g containing [start, end), or NULL. */
void *region_index_find(const struct region_index *ix,
			const struct region_group *g, uintptr_t start,
			uintptr_t end);

/*
 * The regions of @g that overlap or touch [start, end): calls @fn for
 * each, lowest first, and returns how many there were.
 */
size_t region_index_neighbours(const struct region_index *ix,
			       const struct region_group *g, uintptr_t start,
			       uintptr_t end,
			       void (*fn)(void *owner, void *arg), void *arg);

/*
 * Add a region.  -EEXIST (nothing added) when it overlaps one already
 * there, -ENOMEM when the index cannot grow; 0 otherwise.  When the
 * array grows, the old one is handed back through @garbage (the cache
 * frees nothing under its locks); *@garbage must be NULL on entry.
 */
int region_index_add(struct region_index *ix, const struct region_group *g,
		     uintptr_t start, uintptr_t end, void *owner,
		     void **garbage);

/* Remove the region of @g starting at @start owned by @owner (if there). */
void region_index_remove(struct region_index *ix, const struct region_group *g,
			 uintptr_t start, void *owner);

#endif /* UMMUSHIM_REGION_INDEX_H */
