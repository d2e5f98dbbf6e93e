// SPDX-License-Identifier: BSD-2-Clause
/*
 * Hit-path cost of the shim: N threads, each with its own buffer and
 * only local state, time ITERS ibv_reg_mr + ibv_dereg_mr pairs against the
 * libibverbs test double.  Run with the shim preloaded (meson benchmarks
 * 'hitpath-exact-N' and 'hitpath-slice-N', userfaultfd monitor).
 *  - exact: the same (address, length) every time: after the first miss
 *    every pair is an exact hit.
 *  - slice: the buffer is registered whole once (and kept registered, as
 *    an application holding a big MR would), then every pair registers a
 *    slice of just under a page at an offset that moves by 8 bytes each
 *    time (7,680 different slices, more than the cache's default 4,096
 *    entries, as a halo exchange over a big array would): with containment
 *    hits each is served by the whole buffer's registration; an exact
 *    cache registers them one by one.
 * Prints "mode=M threads=N total=X M pairs/s (Y ns/pair/thread)".
 * usage: bench_hitpath_mt THREADS [ITERS [exact|slice]]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "fake_ibverbs.h"

#define MAX_THREADS 16
#define LEN 65536
#define SLICE_LEN 4096
#define N_SLICES ((LEN - SLICE_LEN) / 8)

struct worker {
	struct ibv_pd *pd;
	long iters;
	bool slices;
	pthread_barrier_t *start;
	double elapsed;
	int ok;
	char pad[64];	/* each thread writes only its own cache lines */
};

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	char *buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct ibv_mr *whole = NULL, *mr;
	int ok = buf != MAP_FAILED;
	double t0;

	if (ok) {
		memset(buf, 1, LEN);
		whole = ibv_reg_mr(w->pd, buf, LEN, IBV_ACCESS_LOCAL_WRITE);
		ok = whole && (w->slices || ibv_dereg_mr(whole) == 0);
	}
	pthread_barrier_wait(w->start);
	t0 = now_s();
	for (long i = 0; ok && i < w->iters; i++) {
		size_t off = w->slices ? (size_t)(i % N_SLICES) * 8 : 0;
		size_t len = w->slices ? SLICE_LEN - 64 : LEN;

		mr = ibv_reg_mr(w->pd, buf + off, len, IBV_ACCESS_LOCAL_WRITE);
		ok = mr && mr->addr == buf + off && mr->length == len &&
		     ibv_dereg_mr(mr) == 0;
	}
	w->elapsed = now_s() - t0;
	if (w->slices && whole && ibv_dereg_mr(whole) != 0)
		ok = 0;
	w->ok = ok;
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1;
	long iters = argc > 2 ? atol(argv[2]) : 2000000;
	const char *mode = argc > 3 ? argv[3] : "exact";
	bool slices = strcmp(mode, "slice") == 0;
	struct worker w[MAX_THREADS];
	pthread_t t[MAX_THREADS];
	pthread_barrier_t start;
	struct ibv_pd *pd = ibv_alloc_pd(fake_ibv_open());
	double longest = 0;

	if (n < 1 || n > MAX_THREADS || iters < 1 || !pd ||
	    (!slices && strcmp(mode, "exact") != 0))
		return 2;
	pthread_barrier_init(&start, NULL, (unsigned)n);
	for (int i = 0; i < n; i++) {
		w[i] = (struct worker){ .pd = pd, .iters = iters,
				     .slices = slices, .start = &start };
		if (pthread_create(&t[i], NULL, run, &w[i]))
			return 1;
	}
	for (int i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		if (!w[i].ok)
			return 1;
		if (w[i].elapsed > longest)
			longest = w[i].elapsed;
	}
	printf("mode=%s threads=%d total=%.1f M pairs/s (%.1f ns/pair/thread)\n",
	       mode, n, (double)n * (double)iters / longest / 1e6,
	       longest * 1e9 / (double)iters);
	return 0;
}
