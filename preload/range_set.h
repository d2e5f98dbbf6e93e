/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * A counted set of address ranges: how many watches cover each piece of
 * the address space, as sorted disjoint segments (neighbours with the
 * same count merged).  The userfaultfd monitor keeps one: a registration
 * is per address range, not counted, so a piece is unregistered only when
 * its last watch goes.  No locking: the owner serialises all calls.
 */
#ifndef UMMUSHIM_RANGE_SET_H
#define UMMUSHIM_RANGE_SET_H

#include <stddef.h>
#include <stdint.h>

struct range_seg {
	uintptr_t start, end;
	unsigned long count;	/* watches covering [start, end) */
};

struct range_set {
	struct range_seg *v;	/* sorted, disjoint */
	size_t n, cap;
};

typedef void (*range_fn)(void *arg, uintptr_t start, uintptr_t end);

/*
 * Room for @watches watches (0 or -ENOMEM): add and sub of up to that
 * many watches then never allocate, so they cannot fail half-way.
 */
int range_set_reserve(struct range_set *s, size_t watches);
void range_set_free(struct range_set *s);

/* One more watch of [start, end). */
void range_set_add(struct range_set *s, uintptr_t start, uintptr_t end);

/* One watch of [start, end) less: @released gets each piece now uncovered. */
void range_set_sub(struct range_set *s, uintptr_t start, uintptr_t end,
		   range_fn released, void *arg);

/* Call @fn for each piece of [start, end) that no watch covers. */
void range_set_gaps(const struct range_set *s, uintptr_t start, uintptr_t end,
		    range_fn fn, void *arg);

#endif /* UMMUSHIM_RANGE_SET_H */
