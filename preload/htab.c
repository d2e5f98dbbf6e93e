// SPDX-License-Identifier: BSD-2-Clause
#include "htab.h"

#include <stdlib.h>

int htab_init(struct htab *t)
{
	t->buckets = calloc(HTAB_MIN_BUCKETS, sizeof(*t->buckets));
	t->nbuckets = HTAB_MIN_BUCKETS;
	t->count = 0;
	return t->buckets ? 0 : -1;
}

void htab_free(struct htab *t)
{
	free(t->buckets);
	t->buckets = NULL;
	t->count = 0;
}

void htab_insert(struct htab *t, struct hlink *l, uint64_t hash)
{
	struct hlink **b = htab_bucket(t, hash);

	l->hash = hash;
	l->next = *b;
	*b = l;
	t->count++;
}

void htab_remove(struct htab *t, struct hlink *l)
{
	for (struct hlink **p = htab_bucket(t, l->hash); *p; p = &(*p)->next) {
		if (*p == l) {
			*p = l->next;
			l->next = NULL;
			t->count--;
			return;
		}
	}
}

void htab_grow(struct htab *t, void **garbage)
{
	size_t nb = t->nbuckets * 2;
	struct hlink **nbk;

	if (!htab_crowded(t) || *garbage)
		return;
	nbk = calloc(nb, sizeof(*nbk));
	if (!nbk)
		return;
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct hlink *l = t->buckets[i], *next;

		for (; l; l = next) {
			next = l->next;
			l->next = nbk[l->hash & (nb - 1)];
			nbk[l->hash & (nb - 1)] = l;
		}
	}
	*garbage = t->buckets;
	t->buckets = nbk;
	t->nbuckets = nb;
}
