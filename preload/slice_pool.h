/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Pooled per-request objects for containment hits: the struct ibv_mr the
 * application gets for a slice of a cached region (its own addr/length,
 * the region's keys), behind a header that maps it back to the region.
 * Objects come from chunks that are never freed before the pool, so that
 * "is this pointer one of ours?" is a range check that never touches
 * foreign memory; each thread keeps a short free list of its own, so the
 * hit path allocates and frees without a lock.
 */
#ifndef UMMUSHIM_SLICE_POOL_H
#define UMMUSHIM_SLICE_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define SLICE_MAX_CHUNKS 2048	/* 2048 chunks ... */
#define SLICE_CHUNK_OBJS 512	/* ... of 512: 1 Mi live slices */

struct slice_hdr {
	void *owner;		/* the cache's region entry */
	uint64_t gen;		/* the entry's generation when taken */
	struct slice_hdr *next_free;
};

struct slice_pool {
	size_t obj_size;	/* what the caller stores after the header */
	size_t stride;		/* header + object, cache-line multiple */
	pthread_mutex_t lock;	/* guards free and chunk growth */
	struct slice_hdr *free;
	_Atomic(char *) chunks[SLICE_MAX_CHUNKS];
	atomic_size_t n_chunks;
};

/* A thread's own free list (only that thread touches it). */
struct slice_cache {
	struct slice_hdr *free;
	unsigned int n;
};

int slice_pool_init(struct slice_pool *p, size_t obj_size);
void slice_pool_fini(struct slice_pool *p);

/* A free object's header, or NULL when the pool is exhausted. */
struct slice_hdr *slice_get(struct slice_pool *p, struct slice_cache *tc);
void slice_put(struct slice_pool *p, struct slice_cache *tc,
	       struct slice_hdr *h);
/* Hand a thread's free list back (the thread is going away). */
void slice_cache_flush(struct slice_pool *p, struct slice_cache *tc);

static inline void *slice_obj(struct slice_hdr *h)
{
	return (char *)h + sizeof(struct slice_hdr);
}

/* The header of @obj if it is an object of @p, else NULL. */
static inline struct slice_hdr *slice_of(struct slice_pool *p, const void *obj)
{
	size_t n = atomic_load_explicit(&p->n_chunks, memory_order_acquire);

	for (size_t i = 0; i < n; i++) {
		uintptr_t base = (uintptr_t)atomic_load_explicit(
			&p->chunks[i], memory_order_relaxed);
		uintptr_t off = (uintptr_t)obj - base - sizeof(struct slice_hdr);

		if ((uintptr_t)obj >= base + sizeof(struct slice_hdr) &&
		    off < SLICE_CHUNK_OBJS * p->stride && off % p->stride == 0)
			return (struct slice_hdr *)(base + off);
	}
	return NULL;
}

#endif /* UMMUSHIM_SLICE_POOL_H */
