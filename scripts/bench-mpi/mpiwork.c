// SPDX-License-Identifier: BSD-2-Clause
/* The MPI workloads' shared code; see mpiwork.h. */
#define _GNU_SOURCE
#include "mpiwork.h"

#include <dlfcn.h>
#include <inttypes.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../bench-common/bench_common.h"

typedef void (*regcount_fn)(uint64_t out[4]);

static bool parse(int argc, char **argv, struct mpiwork_opts *o)
{
	const struct bench_opt opts[] = {
		BENCH_STR("--label", &o->label),
		BENCH_SIZE("--size", &o->size),
		BENCH_SIZE("--min-size", &o->min_size),
		BENCH_UINT("--iters", &o->iters, 1, UINT_MAX),
		BENCH_UINT("--seconds", &o->seconds, 0, 7 * 24 * 3600),
		BENCH_UINT("--seed", &o->seed, 0, UINT_MAX),
		BENCH_UINT("--rows", &o->rows, 4, 1u << 20),
		BENCH_UINT("--depth", &o->depth, 1, 1024),
		BENCH_UINT("--remap", &o->remap, 0, UINT_MAX),
	};

	*o = (struct mpiwork_opts){
		.label = "", .size = 64 << 10, .min_size = 8, .iters = 20,
		.seconds = 0, .seed = 1, .rows = 512, .depth = 2, .remap = 0,
	};
	if (!bench_parse_opts("mpiwork", argc, argv, 2, opts, sizeof(opts) / sizeof(opts[0])))
		return false;
	if (o->size % 8 || o->min_size % 8 || o->min_size == 0 || o->min_size > o->size) {
		fprintf(stderr, "mpiwork: sizes must be multiples of 8 with 0 < --min-size <= --size\n");
		return false;
	}
	if (o->depth * 2 >= o->rows) {
		fprintf(stderr, "mpiwork: --depth must be less than half of --rows\n");
		return false;
	}
	return true;
}

bool mpiwork_parse(int argc, char **argv, struct mpiwork_opts *o)
{
	if (parse(argc, argv, o))
		return true;
	if (mpiwork_rank() == 0)
		fprintf(stderr,
			"usage: mpiwork pingpong|collectives|halo|recycle[,...] [--label TEXT]\n"
			"       [--size SIZE] [--min-size SIZE] [--iters N] [--seconds S] [--seed N]\n"
			"       [--rows N] [--depth N] [--remap N]\n"
			"SIZE accepts K/M/G suffixes and must be a multiple of 8.\n");
	return false;
}

int mpiwork_rank(void)
{
	int r;

	MPI_Comm_rank(MPI_COMM_WORLD, &r);
	return r;
}

int mpiwork_nranks(void)
{
	int n;

	MPI_Comm_size(MPI_COMM_WORLD, &n);
	return n;
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

uint64_t mpiwork_seed(const struct mpiwork_opts *o, uint64_t iter, int from,
		      int to, uint64_t part)
{
	return mix(mix(mix(((uint64_t)o->seed << 32) ^ iter) ^
		       ((uint64_t)(unsigned)from << 32 | (unsigned)to)) ^ part);
}

uint64_t mpiwork_random(const struct mpiwork_opts *o, uint64_t iter,
			uint64_t salt, uint64_t n)
{
	return n ? mix(mpiwork_seed(o, iter, -1, -1, salt)) % n : 0;
}

void mpiwork_fill(void *buf, size_t len, uint64_t seed)
{
	bench_pattern_fill(buf, len, seed);
}

void mpiwork_check(struct mpiwork_totals *t, const void *buf, size_t len,
		   uint64_t seed)
{
	t->errors += bench_pattern_bad_words(buf, len, seed);
	t->bytes += len;
	t->messages++;
}

double mpiwork_now(void)
{
	return MPI_Wtime();
}

void mpiwork_add_time(struct mpiwork_totals *t, double start)
{
	double d = MPI_Wtime() - start;

	t->comm_s += d;
	if (t->sections < MPIWORK_SECTIONS)
		t->section_s[t->sections] = d;
	t->sections++;
}

/*
 * With --seconds: the start of the current loop, taken at its iteration 0.
 * One loop runs at a time in a process, so a static.
 */
static double soak_start;

bool mpiwork_continue(const struct mpiwork_opts *o, uint64_t iter)
{
	int go;

	if (!o->seconds)
		return iter < o->iters;
	if (iter == 0)
		soak_start = MPI_Wtime();
	go = MPI_Wtime() - soak_start < o->seconds;
	MPI_Bcast(&go, 1, MPI_INT, 0, MPI_COMM_WORLD);
	return go;
}

void *mpiwork_map(size_t len)
{
	return bench_map_anon(NULL, len);
}

/* {real regs, app regs}, -1 where the counting preload is absent. */
static void read_regcounts(int64_t out[2])
{
	const char *names[2] = { "regcount_real_stats", "regcount_app_stats" };

	for (int i = 0; i < 2; i++) {
		regcount_fn fn = (regcount_fn)dlsym(RTLD_DEFAULT, names[i]);
		uint64_t v[4];

		out[i] = -1;
		if (fn) {
			fn(v);
			out[i] = (int64_t)v[0];
		}
	}
}

void mpiwork_begin(struct mpiwork_totals *t)
{
	*t = (struct mpiwork_totals){ 0 };
	read_regcounts(t->regs0);
	MPI_Barrier(MPI_COMM_WORLD);
}

static void print_i64_array(const char *name, const int64_t *v, int n, int stride)
{
	printf(", \"%s\": [", name);
	for (int i = 0; i < n; i++)
		printf("%s%" PRId64, i ? ", " : "", v[i * stride]);
	printf("]");
}

/* The slowest rank's time of each timed section, gathered on rank 0. */
struct sections {
	unsigned n;
	double max_s[MPIWORK_SECTIONS];
};

static void print_result(const struct mpiwork_opts *o, const char *workload,
			 uint64_t iters, const double *secs, const uint64_t *sums,
			 const int64_t *regs, const char *hosts, int n,
			 const struct sections *sec)
{
	double worst = 0;

	for (int i = 0; i < n; i++)
		worst = secs[i] > worst ? secs[i] : worst;
	printf("RESULT {\"workload\": \"%s\", \"label\": ", workload);
	bench_json_string(stdout, o->label);
	printf(", \"ranks\": %d, \"hosts\": [", n);
	for (int i = 0; i < n; i++) {
		printf("%s", i ? ", " : "");
		bench_json_string(stdout, hosts + (size_t)i * MPI_MAX_PROCESSOR_NAME);
	}
	printf("], \"iters\": %" PRIu64 ", \"seconds\": %.6f, \"messages\": %" PRIu64
	       ", \"bytes\": %" PRIu64 ", \"MBps\": %.3f, \"errors\": %" PRIu64,
	       iters, worst, sums[0], sums[1],
	       worst > 0 ? (double)sums[1] / worst / 1e6 : 0.0, sums[2]);
	print_i64_array("real_regs", regs, n, 2);
	print_i64_array("app_regs", regs + 1, n, 2);
	printf(", \"sections_s\": [");
	for (unsigned i = 0; i < sec->n && i < MPIWORK_SECTIONS; i++)
		printf("%s%.4f", i ? ", " : "", sec->max_s[i]);
	printf("]}\n");
	fflush(stdout);
}

int mpiwork_report(const struct mpiwork_opts *o, const char *workload,
		   uint64_t iters, const struct mpiwork_totals *t, bool setup_ok)
{
	int n = mpiwork_nranks(), rank = mpiwork_rank(), ok = setup_ok, all_ok;
	uint64_t mine[3] = { t->messages, t->bytes, t->errors }, sums[3];
	int64_t regs[2], *all_regs = NULL;
	double *secs = NULL;
	char host[MPI_MAX_PROCESSOR_NAME] = "", *hosts = NULL;
	struct sections sec = { 0 };
	int len, status;

	read_regcounts(regs);
	for (int i = 0; i < 2; i++)
		if (regs[i] >= 0)
			regs[i] -= t->regs0[i];
	MPI_Get_processor_name(host, &len);
	if (rank == 0) {
		all_regs = calloc((size_t)n * 2, sizeof(*all_regs));
		secs = calloc((size_t)n, sizeof(*secs));
		hosts = calloc((size_t)n, MPI_MAX_PROCESSOR_NAME);
	}
	MPI_Reduce(mine, sums, 3, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
	MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
	MPI_Gather(regs, 2, MPI_INT64_T, all_regs, 2, MPI_INT64_T, 0, MPI_COMM_WORLD);
	MPI_Gather(&t->comm_s, 1, MPI_DOUBLE, secs, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
	MPI_Gather(host, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, hosts,
		   MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0, MPI_COMM_WORLD);
	MPI_Reduce(&t->sections, &sec.n, 1, MPI_UNSIGNED, MPI_MAX, 0, MPI_COMM_WORLD);
	MPI_Reduce(t->section_s, sec.max_s, MPIWORK_SECTIONS, MPI_DOUBLE, MPI_MAX,
		   0, MPI_COMM_WORLD);
	status = all_ok ? 0 : 1;
	if (rank == 0) {
		if (!all_regs || !secs || !hosts) {
			fprintf(stderr, "mpi-%s: out of memory\n", workload);
			status = 1;
		} else {
			print_result(o, workload, iters, secs, sums, all_regs, hosts, n, &sec);
		}
		if (sums[2]) {
			fprintf(stderr, "mpi-%s: %" PRIu64 " received words were wrong\n",
				workload, sums[2]);
			status = 2;
		} else if (!all_ok) {
			fprintf(stderr, "mpi-%s: setup failed on some rank\n", workload);
		}
	}
	free(all_regs);
	free(secs);
	free(hosts);
	MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
	return status;
}
