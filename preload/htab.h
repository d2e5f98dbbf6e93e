/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The shim's hash table: intrusive (a struct hlink embedded in the
 * element, container_of() gets back to it), chained, power-of-two bucket
 * count, keyed by a 64-bit hash the caller computes (hash_mix64() spreads
 * pointer and counter bits well).  The table stores the hash in the link;
 * key comparison is the caller's, in the lookup loop:
 *
 *	for (struct hlink *l = *htab_bucket(t, h); l; l = l->next)
 *		if (l->hash == h && my_equal(container_of(l, ...), key))
 *			return ...;
 *
 * No locking: the owner guards the table.  Growing allocates, and the old
 * bucket array is handed back to be freed by the caller, so a caller that
 * must not free memory under its locks (the cache: see cache_internal.h)
 * frees it after dropping them.
 */
#ifndef UMMUSHIM_HTAB_H
#define UMMUSHIM_HTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "list.h"

struct hlink {
	struct hlink *next;
	uint64_t hash;
};

struct htab {
	struct hlink **buckets;
	size_t nbuckets;	/* power of two, at least HTAB_MIN_BUCKETS */
	size_t count;
};

#define HTAB_MIN_BUCKETS 64

/* splitmix64's finaliser: cheap, and spreads pointer bits well. */
static inline uint64_t hash_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* The chain of @hash (a lookup walks it). */
static inline struct hlink **htab_bucket(const struct htab *t, uint64_t hash)
{
	return &t->buckets[hash & (t->nbuckets - 1)];
}

/* 0, or -1 when out of memory (then nothing is allocated). */
int htab_init(struct htab *t);
void htab_free(struct htab *t);

void htab_insert(struct htab *t, struct hlink *l, uint64_t hash);
/* @l must be in @t. */
void htab_remove(struct htab *t, struct hlink *l);

/* More than two links per bucket on average: time to grow. */
static inline bool htab_crowded(const struct htab *t)
{
	return t->count >= t->nbuckets * 2;
}

/*
 * Double a crowded table.  The old bucket array goes to *@garbage for the
 * caller to free(); nothing happens when *@garbage is already taken, the
 * table is not crowded or the allocation fails (chains just get longer).
 */
void htab_grow(struct htab *t, void **garbage);

#endif /* UMMUSHIM_HTAB_H */
