// SPDX-License-Identifier: BSD-2-Clause
/*
 * Hit-path scaling of the shim: N threads, each with its own buffer and
 * only local state, time ITERS ibv_reg_mr + ibv_dereg_mr pairs against the
 * libibverbs test double (after the first miss every pair is a hit, so
 * the double is never called).  Run with the shim preloaded (meson
 * benchmark 'hitpath-threads': 1 and 2 threads, userfaultfd monitor).
 * Prints "threads=N total=X M pairs/s (Y ns/pair/thread)".
 * usage: bench_hitpath_mt THREADS [ITERS]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include "fake_ibverbs.h"

#define MAX_THREADS 16
#define LEN 65536

struct worker {
	struct ibv_pd *pd;
	long iters;
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
	struct ibv_mr *mr;
	int ok = buf != MAP_FAILED;
	double t0;

	if (ok) {
		buf[0] = 1;
		mr = ibv_reg_mr(w->pd, buf, LEN, IBV_ACCESS_LOCAL_WRITE);
		ok = mr && ibv_dereg_mr(mr) == 0;
	}
	pthread_barrier_wait(w->start);
	t0 = now_s();
	for (long i = 0; ok && i < w->iters; i++) {
		mr = ibv_reg_mr(w->pd, buf, LEN, IBV_ACCESS_LOCAL_WRITE);
		ok = mr && ibv_dereg_mr(mr) == 0;
	}
	w->elapsed = now_s() - t0;
	w->ok = ok;
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1;
	long iters = argc > 2 ? atol(argv[2]) : 2000000;
	struct worker w[MAX_THREADS];
	pthread_t t[MAX_THREADS];
	pthread_barrier_t start;
	struct ibv_pd *pd = ibv_alloc_pd(fake_ibv_open());
	double longest = 0;

	if (n < 1 || n > MAX_THREADS || iters < 1 || !pd)
		return 2;
	pthread_barrier_init(&start, NULL, (unsigned)n);
	for (int i = 0; i < n; i++) {
		w[i] = (struct worker){ .pd = pd, .iters = iters, .start = &start };
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
	printf("threads=%d total=%.1f M pairs/s (%.1f ns/pair/thread)\n", n,
	       (double)n * (double)iters / longest / 1e6,
	       longest * 1e9 / (double)iters);
	return 0;
}
