// SPDX-License-Identifier: BSD-2-Clause
/* Pool of per-request slice objects: see slice_pool.h. */
#include "slice_pool.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK_OBJS SLICE_CHUNK_OBJS
#define THREAD_MAX_FREE 64	/* beyond this a thread gives half back */

int slice_pool_init(struct slice_pool *p, size_t obj_size)
{
	memset(p, 0, sizeof(*p));
	p->obj_size = obj_size;
	p->stride = (sizeof(struct slice_hdr) + obj_size + 63) & ~(size_t)63;
	return pthread_mutex_init(&p->lock, NULL) ? -1 : 0;
}

void slice_pool_fini(struct slice_pool *p)
{
	size_t n = atomic_load(&p->n_chunks);

	for (size_t i = 0; i < n; i++)
		free(atomic_load(&p->chunks[i]));
	pthread_mutex_destroy(&p->lock);
}

/* Under p->lock: one more chunk on the free list. */
static void grow(struct slice_pool *p)
{
	size_t n = atomic_load_explicit(&p->n_chunks, memory_order_relaxed);
	char *chunk;

	if (n == SLICE_MAX_CHUNKS)
		return;
	chunk = aligned_alloc(64, CHUNK_OBJS * p->stride);
	if (!chunk)
		return;
	memset(chunk, 0, CHUNK_OBJS * p->stride);
	for (size_t i = CHUNK_OBJS; i-- > 0;) {
		struct slice_hdr *h = (struct slice_hdr *)(chunk + i * p->stride);

		h->next_free = p->free;
		p->free = h;
	}
	atomic_store_explicit(&p->chunks[n], chunk, memory_order_relaxed);
	atomic_store_explicit(&p->n_chunks, n + 1, memory_order_release);
}

struct slice_hdr *slice_get(struct slice_pool *p, struct slice_cache *tc)
{
	struct slice_hdr *h = tc->free;

	if (!h) {
		/* Refill: up to half a thread's worth at once. */
		pthread_mutex_lock(&p->lock);
		if (!p->free)
			grow(p);
		while (p->free && tc->n < THREAD_MAX_FREE / 2) {
			h = p->free;
			p->free = h->next_free;
			h->next_free = tc->free;
			tc->free = h;
			tc->n++;
		}
		pthread_mutex_unlock(&p->lock);
		h = tc->free;
		if (!h)
			return NULL;
	}
	tc->free = h->next_free;
	tc->n--;
	h->next_free = NULL;
	return h;
}

void slice_put(struct slice_pool *p, struct slice_cache *tc,
	       struct slice_hdr *h)
{
	h->owner = NULL;
	h->next_free = tc->free;
	tc->free = h;
	if (++tc->n <= THREAD_MAX_FREE)
		return;
	pthread_mutex_lock(&p->lock);
	while (tc->n > THREAD_MAX_FREE / 2) {
		h = tc->free;
		tc->free = h->next_free;
		tc->n--;
		h->next_free = p->free;
		p->free = h;
	}
	pthread_mutex_unlock(&p->lock);
}

void slice_cache_flush(struct slice_pool *p, struct slice_cache *tc)
{
	pthread_mutex_lock(&p->lock);
	while (tc->free) {
		struct slice_hdr *h = tc->free;

		tc->free = h->next_free;
		h->next_free = p->free;
		p->free = h;
	}
	tc->n = 0;
	pthread_mutex_unlock(&p->lock);
}
