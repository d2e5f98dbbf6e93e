// SPDX-License-Identifier: BSD-2-Clause
/*
 * regbench: cost of ibv_reg_mr + ibv_dereg_mr pairs on one buffer, as an
 * unmodified verbs program sees it.  Run it plain to measure real
 * (uncached) registrations, and under LD_PRELOAD=libummushim.so to measure
 * cache hits: the program is the same, only the preload differs.
 *
 *   regbench sweep   [--device NAME] [--min SIZE] [--max SIZE] [--factor N]
 *                    [--time-ms MS] [--min-pairs N] [--json FILE] [--label L]
 *     For each buffer size: map and touch the buffer (page faults are not
 *     what we measure), do one untimed pair (which fills the cache under the
 *     shim), then time each pair on the same buffer with CLOCK_MONOTONIC
 *     until MS milliseconds and N pairs have passed.  Reports the median
 *     time per pair (robust against scheduling hiccups) and pairs/s =
 *     1 / median, plus the mean.
 *
 *   regbench threads [--device NAME] [--threads N] [--size SIZE]
 *                    [--iters N] [--runs R] [--json FILE] [--label L]
 *     N threads, each with its own buffer on one shared PD, each times
 *     ITERS pairs (after one untimed pair) between two barriers; a run's
 *     figure is the mean over threads of elapsed/ITERS.  Reports the median
 *     over R runs (and min/max), plus the aggregate pairs/s of the median run.
 *
 * Exit status 0, or 1 on any failure (a failed registration is a failure).
 */
#define _GNU_SOURCE
#include <infiniband/verbs.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../bench-common/bench_common.h"
#include "../bench-common/bench_verbs.h"

#define PROG "regbench"
#define MAX_THREADS 64
#define MAX_RUNS 101

struct options {
	const char *mode;
	const char *device;
	size_t min_size, max_size, size;
	unsigned factor, time_ms, min_pairs, threads, iters, runs;
	const char *json_path;
	const char *label;
};

struct verbs {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
};

static void usage(void)
{
	fprintf(stderr,
		"usage: regbench sweep [--device NAME] [--min SIZE] [--max SIZE] [--factor N]\n"
		"                      [--time-ms MS] [--min-pairs N] [--json FILE] [--label L]\n"
		"       regbench threads [--device NAME] [--threads N] [--size SIZE] [--iters N]\n"
		"                      [--runs R] [--json FILE] [--label L]\n");
}

static bool parse_options(int argc, char **argv, struct options *o)
{
	/* Every count here must be positive. */
	const struct bench_opt opts[] = {
		BENCH_STR("--device", &o->device),
		BENCH_SIZE("--min", &o->min_size),
		BENCH_SIZE("--max", &o->max_size),
		BENCH_SIZE("--size", &o->size),
		BENCH_UINT("--factor", &o->factor, 2, UINT_MAX),
		BENCH_UINT("--time-ms", &o->time_ms, 1, UINT_MAX),
		BENCH_UINT("--min-pairs", &o->min_pairs, 1, UINT_MAX),
		BENCH_UINT("--threads", &o->threads, 1, MAX_THREADS),
		BENCH_UINT("--iters", &o->iters, 1, UINT_MAX),
		BENCH_UINT("--runs", &o->runs, 1, MAX_RUNS),
		BENCH_STR("--json", &o->json_path),
		BENCH_STR("--label", &o->label),
	};

	*o = (struct options){
		.device = NULL, .min_size = 4096, .max_size = 64u << 20,
		.size = 65536, .factor = 4, .time_ms = 200, .min_pairs = 5,
		.threads = 1, .iters = 200000, .runs = 5, .json_path = NULL,
		.label = "",
	};
	if (argc < 2 || (strcmp(argv[1], "sweep") && strcmp(argv[1], "threads")))
		return false;
	o->mode = argv[1];
	return bench_parse_opts(PROG, argc, argv, 2, opts, sizeof(opts) / sizeof(opts[0])) &&
	       o->min_size <= o->max_size;
}

static bool verbs_open(const char *name, struct verbs *v)
{
	v->ctx = bench_open_device(PROG, name);
	if (!v->ctx)
		return false;
	v->pd = ibv_alloc_pd(v->ctx);
	if (!v->pd) {
		perror("regbench: ibv_alloc_pd");
		ibv_close_device(v->ctx);
		return false;
	}
	return true;
}

static void verbs_close(struct verbs *v)
{
	if (ibv_dealloc_pd(v->pd))
		perror("regbench: ibv_dealloc_pd");
	if (ibv_close_device(v->ctx))
		perror("regbench: ibv_close_device");
}

/* A mapped, touched buffer: the benchmark is about registration, not faults. */
static void *buffer_new(size_t size)
{
	void *p = bench_map_anon(NULL, size);

	if (!p) {
		perror("regbench: mmap");
		return NULL;
	}
	memset(p, 0x5a, size);
	return p;
}

/*
 * One registration and deregistration, as a program that registers per
 * operation does it.  The access flags are a compile-time constant, so
 * verbs.h routes this through ibv_reg_mr@IBVERBS_1.1.
 */
static bool reg_dereg_pair(struct ibv_pd *pd, void *buf, size_t size)
{
	struct ibv_mr *mr = ibv_reg_mr(pd, buf, size, IBV_ACCESS_LOCAL_WRITE |
				       IBV_ACCESS_REMOTE_WRITE);

	if (!mr) {
		perror("regbench: ibv_reg_mr");
		return false;
	}
	if (ibv_dereg_mr(mr)) {
		perror("regbench: ibv_dereg_mr");
		return false;
	}
	return true;
}

struct sweep_row {
	size_t size;
	unsigned long pairs;
	double us_per_pair;	/* median */
	double mean_us_per_pair;
	double pairs_per_s;	/* 1 / median */
};

#define MAX_SWEEP_PAIRS (1ul << 22)

static bool sweep_one(const struct options *o, struct ibv_pd *pd, size_t size,
		      struct sweep_row *row)
{
	void *buf = buffer_new(size);
	uint64_t budget = (uint64_t)o->time_ms * 1000000u, t0, t1, start;
	double *times = calloc(MAX_SWEEP_PAIRS, sizeof(*times));
	struct bench_stats st;
	unsigned long pairs = 0;
	bool ok;

	if (!buf || !times) {
		free(times);
		return false;
	}
	ok = reg_dereg_pair(pd, buf, size);
	start = bench_now_ns();
	do {
		t0 = bench_now_ns();
		ok = ok && reg_dereg_pair(pd, buf, size);
		t1 = bench_now_ns();
		times[pairs++] = (double)(t1 - t0);
	} while (ok && pairs < MAX_SWEEP_PAIRS &&
		 (t1 - start < budget || pairs < o->min_pairs));
	munmap(buf, size);
	st = bench_stats(times, pairs);
	row->size = size;
	row->pairs = pairs;
	row->us_per_pair = st.median / 1e3;
	row->mean_us_per_pair = st.mean / 1e3;
	row->pairs_per_s = 1e9 / st.median;
	free(times);
	return ok;
}

static int run_sweep(const struct options *o, struct verbs *v)
{
	struct sweep_row rows[32];
	size_t n = 0;
	FILE *f;

	printf("# regbench sweep%s%s: reg+dereg pairs on one reused buffer, CLOCK_MONOTONIC, >= %u ms and >= %u pairs per size\n",
	       *o->label ? " " : "", o->label, o->time_ms, o->min_pairs);
	printf("%10s %9s %12s %12s %12s\n", "size_B", "pairs", "med_us", "mean_us",
	       "pairs_per_s");
	for (size_t s = o->min_size; s <= o->max_size && n < 32; s *= o->factor) {
		if (!sweep_one(o, v->pd, s, &rows[n]))
			return 1;
		printf("%10zu %9lu %12.3f %12.3f %12.0f\n", rows[n].size, rows[n].pairs,
		       rows[n].us_per_pair, rows[n].mean_us_per_pair,
		       rows[n].pairs_per_s);
		fflush(stdout);
		n++;
	}
	if (!o->json_path)
		return 0;
	f = bench_json_begin(o->json_path, "regbench-sweep", o->label);
	if (!f)
		return 1;
	fprintf(f, ", \"method\": \"CLOCK_MONOTONIC around each pair, >= %u ms and >= %u pairs per size, "
		   "one untimed pair first, rate = 1/median\", \"results\": [\n",
		o->time_ms, o->min_pairs);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "  {\"size\": %zu, \"pairs\": %lu, \"us_per_pair\": %.3f, "
			   "\"mean_us_per_pair\": %.3f, \"pairs_per_s\": %.1f}%s\n",
			rows[i].size, rows[i].pairs, rows[i].us_per_pair,
			rows[i].mean_us_per_pair, rows[i].pairs_per_s,
			i + 1 < n ? "," : "");
	fprintf(f, "]}\n");
	return fclose(f) ? 1 : 0;
}

struct thread_arg {
	struct ibv_pd *pd;
	size_t size;
	unsigned iters;
	pthread_barrier_t *start, *stop;
	uint64_t elapsed_ns;
	bool ok;
};

static void *thread_main(void *p)
{
	struct thread_arg *a = p;
	void *buf = buffer_new(a->size);
	/* Kept local: threads' entries of args[] share cache lines. */
	bool ok = buf && reg_dereg_pair(a->pd, buf, a->size);
	uint64_t t0;

	pthread_barrier_wait(a->start);
	t0 = bench_now_ns();
	for (unsigned i = 0; i < a->iters && ok; i++)
		ok = reg_dereg_pair(a->pd, buf, a->size);
	a->elapsed_ns = bench_now_ns() - t0;
	a->ok = ok;
	pthread_barrier_wait(a->stop);
	if (buf)
		munmap(buf, a->size);
	return NULL;
}

struct thread_run {
	double ns_per_pair;	/* mean over threads */
	double pairs_per_s;	/* all threads together */
};

static bool threads_once(const struct options *o, struct ibv_pd *pd,
			 struct thread_run *run)
{
	pthread_t tid[MAX_THREADS];
	struct thread_arg args[MAX_THREADS];
	pthread_barrier_t start, stop;
	uint64_t max_elapsed = 0;
	double sum = 0;
	bool ok = true;

	pthread_barrier_init(&start, NULL, o->threads);
	pthread_barrier_init(&stop, NULL, o->threads);
	for (unsigned t = 0; t < o->threads; t++) {
		args[t] = (struct thread_arg){ .pd = pd, .size = o->size,
			.iters = o->iters, .start = &start, .stop = &stop };
		if (pthread_create(&tid[t], NULL, thread_main, &args[t])) {
			fprintf(stderr, "regbench: pthread_create failed\n");
			exit(1);
		}
	}
	for (unsigned t = 0; t < o->threads; t++) {
		pthread_join(tid[t], NULL);
		ok = ok && args[t].ok;
		sum += (double)args[t].elapsed_ns / o->iters;
		if (args[t].elapsed_ns > max_elapsed)
			max_elapsed = args[t].elapsed_ns;
	}
	pthread_barrier_destroy(&start);
	pthread_barrier_destroy(&stop);
	run->ns_per_pair = sum / o->threads;
	run->pairs_per_s = (double)o->threads * o->iters / ((double)max_elapsed / 1e9);
	return ok;
}

static int cmp_run(const void *a, const void *b)
{
	double x = ((const struct thread_run *)a)->ns_per_pair;
	double y = ((const struct thread_run *)b)->ns_per_pair;

	return (x > y) - (x < y);
}

static int run_threads(const struct options *o, struct verbs *v)
{
	struct thread_run runs[MAX_RUNS], med;
	FILE *f;

	for (unsigned r = 0; r < o->runs; r++)
		if (!threads_once(o, v->pd, &runs[r]))
			return 1;
	qsort(runs, o->runs, sizeof(runs[0]), cmp_run);
	med = runs[o->runs / 2];
	printf("# regbench threads%s%s: %u thread(s), %zu-byte buffer each, %u timed pairs per thread per run, median of %u runs (CLOCK_MONOTONIC)\n",
	       *o->label ? " " : "", o->label, o->threads, o->size, o->iters, o->runs);
	printf("threads=%u ns_per_pair_median=%.1f min=%.1f max=%.1f pairs_per_s_total=%.0f\n",
	       o->threads, med.ns_per_pair, runs[0].ns_per_pair,
	       runs[o->runs - 1].ns_per_pair, med.pairs_per_s);
	if (!o->json_path)
		return 0;
	f = bench_json_begin(o->json_path, "regbench-threads", o->label);
	if (!f)
		return 1;
	fprintf(f, ", \"method\": \"CLOCK_MONOTONIC around %u pairs per thread, mean over threads, median of %u runs\", "
		   "\"threads\": %u, \"size\": %zu, \"ns_per_pair_median\": %.2f, "
		   "\"ns_per_pair_min\": %.2f, \"ns_per_pair_max\": %.2f, "
		   "\"pairs_per_s_total\": %.1f}\n",
		o->iters, o->runs, o->threads, o->size,
		med.ns_per_pair, runs[0].ns_per_pair,
		runs[o->runs - 1].ns_per_pair, med.pairs_per_s);
	return fclose(f) ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct options o;
	struct verbs v;
	int rc;

	if (!parse_options(argc, argv, &o)) {
		usage();
		return 1;
	}
	if (!verbs_open(o.device, &v))
		return 1;
	rc = strcmp(o.mode, "sweep") ? run_threads(&o, &v) : run_sweep(&o, &v);
	verbs_close(&v);
	return rc;
}
