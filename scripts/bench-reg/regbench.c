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
#include <errno.h>
#include <infiniband/verbs.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

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

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool parse_size(const char *s, size_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return false;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end || v == 0 || v > SIZE_MAX / 4)
		return false;
	*out = (size_t)v;
	return true;
}

static bool parse_uint(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v == 0 || v > UINT_MAX)
		return false;
	*out = (unsigned)v;
	return true;
}

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
	*o = (struct options){
		.device = NULL, .min_size = 4096, .max_size = 64u << 20,
		.size = 65536, .factor = 4, .time_ms = 200, .min_pairs = 5,
		.threads = 1, .iters = 200000, .runs = 5, .json_path = NULL,
		.label = "",
	};
	if (argc < 2 || (strcmp(argv[1], "sweep") && strcmp(argv[1], "threads")))
		return false;
	o->mode = argv[1];
	for (int i = 2; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool ok;

		if (!v)
			ok = false;
		else if (!strcmp(a, "--device"))
			ok = (o->device = v) != NULL;
		else if (!strcmp(a, "--min"))
			ok = parse_size(v, &o->min_size);
		else if (!strcmp(a, "--max"))
			ok = parse_size(v, &o->max_size);
		else if (!strcmp(a, "--size"))
			ok = parse_size(v, &o->size);
		else if (!strcmp(a, "--factor"))
			ok = parse_uint(v, &o->factor) && o->factor >= 2;
		else if (!strcmp(a, "--time-ms"))
			ok = parse_uint(v, &o->time_ms);
		else if (!strcmp(a, "--min-pairs"))
			ok = parse_uint(v, &o->min_pairs);
		else if (!strcmp(a, "--threads"))
			ok = parse_uint(v, &o->threads) && o->threads <= MAX_THREADS;
		else if (!strcmp(a, "--iters"))
			ok = parse_uint(v, &o->iters);
		else if (!strcmp(a, "--runs"))
			ok = parse_uint(v, &o->runs) && o->runs <= MAX_RUNS;
		else if (!strcmp(a, "--json"))
			ok = (o->json_path = v) != NULL;
		else if (!strcmp(a, "--label"))
			ok = (o->label = v) != NULL;
		else
			ok = false;
		if (!ok) {
			fprintf(stderr, "regbench: bad option or value: %s %s\n", a,
				v ? v : "");
			return false;
		}
	}
	return o->min_size <= o->max_size;
}

static bool verbs_open(const char *name, struct verbs *v)
{
	int n = 0;
	struct ibv_device **list = ibv_get_device_list(&n);
	struct ibv_device *dev = NULL;

	if (!list) {
		perror("regbench: ibv_get_device_list");
		return false;
	}
	for (int i = 0; i < n && !dev; i++)
		if (!name || !strcmp(ibv_get_device_name(list[i]), name))
			dev = list[i];
	if (!dev) {
		fprintf(stderr, "regbench: no RDMA device %s\n", name ? name : "at all");
		ibv_free_device_list(list);
		return false;
	}
	v->ctx = ibv_open_device(dev);
	ibv_free_device_list(list);
	if (!v->ctx) {
		perror("regbench: ibv_open_device");
		return false;
	}
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
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
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

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static bool sweep_one(const struct options *o, struct ibv_pd *pd, size_t size,
		      struct sweep_row *row)
{
	void *buf = buffer_new(size);
	uint64_t budget = (uint64_t)o->time_ms * 1000000u, t0, t1, start;
	uint64_t *times = calloc(MAX_SWEEP_PAIRS, sizeof(*times)), sum = 0;
	unsigned long pairs = 0;
	bool ok;

	if (!buf || !times) {
		free(times);
		return false;
	}
	ok = reg_dereg_pair(pd, buf, size);
	start = now_ns();
	do {
		t0 = now_ns();
		ok = ok && reg_dereg_pair(pd, buf, size);
		t1 = now_ns();
		times[pairs++] = t1 - t0;
		sum += t1 - t0;
	} while (ok && pairs < MAX_SWEEP_PAIRS &&
		 (t1 - start < budget || pairs < o->min_pairs));
	munmap(buf, size);
	qsort(times, pairs, sizeof(*times), cmp_u64);
	row->size = size;
	row->pairs = pairs;
	row->us_per_pair = (double)times[pairs / 2] / 1e3;
	row->mean_us_per_pair = (double)sum / 1e3 / (double)pairs;
	row->pairs_per_s = 1e9 / (double)times[pairs / 2];
	free(times);
	return ok;
}

static FILE *json_open(const struct options *o)
{
	FILE *f;

	if (!o->json_path)
		return NULL;
	f = fopen(o->json_path, "w");
	if (!f)
		perror(o->json_path);
	return f;
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
	f = json_open(o);
	if (o->json_path && !f)
		return 1;
	if (f) {
		fprintf(f, "{\"benchmark\": \"regbench-sweep\", \"label\": \"%s\", "
			   "\"method\": \"CLOCK_MONOTONIC around each pair, >= %u ms and >= %u pairs per size, "
			   "one untimed pair first, rate = 1/median\", \"results\": [\n",
			o->label, o->time_ms, o->min_pairs);
		for (size_t i = 0; i < n; i++)
			fprintf(f, "  {\"size\": %zu, \"pairs\": %lu, \"us_per_pair\": %.3f, "
				   "\"mean_us_per_pair\": %.3f, \"pairs_per_s\": %.1f}%s\n",
				rows[i].size, rows[i].pairs, rows[i].us_per_pair,
				rows[i].mean_us_per_pair, rows[i].pairs_per_s,
				i + 1 < n ? "," : "");
		fprintf(f, "]}\n");
		if (fclose(f))
			return 1;
	}
	return 0;
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
	uint64_t t0;

	a->ok = buf && reg_dereg_pair(a->pd, buf, a->size);
	pthread_barrier_wait(a->start);
	t0 = now_ns();
	for (unsigned i = 0; i < a->iters && a->ok; i++)
		a->ok = reg_dereg_pair(a->pd, buf, a->size);
	a->elapsed_ns = now_ns() - t0;
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
	f = json_open(o);
	if (o->json_path && !f)
		return 1;
	if (f) {
		fprintf(f, "{\"benchmark\": \"regbench-threads\", \"label\": \"%s\", "
			   "\"method\": \"CLOCK_MONOTONIC around %u pairs per thread, mean over threads, median of %u runs\", "
			   "\"threads\": %u, \"size\": %zu, \"ns_per_pair_median\": %.2f, "
			   "\"ns_per_pair_min\": %.2f, \"ns_per_pair_max\": %.2f, "
			   "\"pairs_per_s_total\": %.1f}\n",
			o->label, o->iters, o->runs, o->threads, o->size,
			med.ns_per_pair, runs[0].ns_per_pair,
			runs[o->runs - 1].ns_per_pair, med.pairs_per_s);
		if (fclose(f))
			return 1;
	}
	return 0;
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
