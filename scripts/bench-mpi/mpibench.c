// SPDX-License-Identifier: BSD-2-Clause
/*
 * mpibench: 2-rank MPI ping-pong latency and bandwidth over message sizes,
 * written to show what a registration cache does for an unmodified MPI
 * program.
 *
 * Method: for each size, both ranks map one send and one receive buffer and
 * reuse them for every iteration (as real applications do, so a cache keyed
 * on the buffer can hit).  Each iteration: both ranks fill their send buffer
 * with a pattern unique to (iteration, rank), meet at a barrier, then rank 0
 * times MPI_Send + MPI_Recv of the ping-pong with MPI_Wtime; both ranks then
 * compare every 64-bit word they received with the expected pattern, so a
 * stale registration (old pages sent or written) is caught as a data error.
 * Filling, checking and the barrier are outside the timed region.
 * One-way time = round trip / 2; bandwidth = size / median one-way time
 * (the median resists the hiccups of an emulated machine; mean and minimum
 * are reported too).
 * With --churn N both ranks replace their buffers' pages (mmap MAP_FIXED
 * over the same addresses) every N iterations, so a cache that missed an
 * invalidation would deliver old data.
 *
 * Registration counts: when the process runs with scripts/bench-mpi's
 * counting preloads (libregcount-real.so: calls that reach libibverbs;
 * libregcount-app.so: calls the MPI library makes, stacked above a cache
 * shim), mpibench reads their counters before and after each size and
 * reports the difference per rank; without them those columns are -1.
 *
 * Output: a table on stdout (rank 0) and, with --json FILE, the same as JSON.
 * Exit status: 0 when every word checked out, 2 on any data error, 1 on
 * bad usage or setup failure.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../bench-common/bench_common.h"

#define TAG_PING 1
#define TAG_PONG 2

struct options {
	size_t min_size;
	size_t max_size;
	unsigned factor;
	size_t budget;		/* bytes per size and direction, bounds iterations */
	unsigned min_iters;
	unsigned max_iters;
	unsigned warmup;
	unsigned churn;		/* remap buffers every N iterations; 0 = never */
	const char *json_path;
	const char *label;
};

/* Per-rank registration counts during one size (see regcount.c). */
struct reg_counts {
	int64_t real_regs;	/* reached libibverbs; -1 = not measured */
	int64_t app_regs;	/* asked for by the MPI library; -1 = not measured */
	int64_t real_reg_us;	/* time spent in the real ibv_reg_mr calls */
	int64_t real_dereg_us;
};

struct size_result {
	size_t size;
	unsigned iters;
	unsigned messages;	/* sent per rank, warm-up included */
	struct reg_counts rank[2];
	double one_way_med_us;
	double one_way_avg_us;
	double one_way_min_us;
	double bw_mbps;		/* 10^6 bytes per second */
	uint64_t errors;	/* bad words, summed over both ranks */
};

struct buffers {
	unsigned char *send;
	unsigned char *recv;
	size_t len;		/* mapped length, page multiple */
};

static void usage(void)
{
	fprintf(stderr,
		"usage: mpibench [--min SIZE] [--max SIZE] [--factor N] [--budget SIZE]\n"
		"                [--min-iters N] [--max-iters N] [--warmup N] [--churn N]\n"
		"                [--json FILE] [--label TEXT]\n"
		"SIZE accepts K/M/G suffixes; sizes must be multiples of 8.\n");
}

static bool parse_options(int argc, char **argv, struct options *o)
{
	const struct bench_opt opts[] = {
		BENCH_SIZE("--min", &o->min_size),
		BENCH_SIZE("--max", &o->max_size),
		BENCH_SIZE("--budget", &o->budget),
		BENCH_UINT("--factor", &o->factor, 2, UINT_MAX),
		BENCH_UINT("--min-iters", &o->min_iters, 1, UINT_MAX),
		BENCH_UINT("--max-iters", &o->max_iters, 1, UINT_MAX),
		BENCH_UINT("--warmup", &o->warmup, 0, UINT_MAX),
		BENCH_UINT("--churn", &o->churn, 0, UINT_MAX),
		BENCH_STR("--json", &o->json_path),
		BENCH_STR("--label", &o->label),
	};

	*o = (struct options){
		.min_size = 4096, .max_size = 16u << 20, .factor = 4,
		.budget = 32u << 20, .min_iters = 4, .max_iters = 200,
		.warmup = 2, .churn = 0, .json_path = NULL, .label = "",
	};
	if (!bench_parse_opts("mpibench", argc, argv, 1, opts, sizeof(opts) / sizeof(opts[0])))
		return false;
	if (o->min_size % 8 || o->max_size < o->min_size ||
	    o->min_iters > o->max_iters) {
		fprintf(stderr, "mpibench: inconsistent sizes or iteration bounds\n");
		return false;
	}
	return true;
}

static uint64_t pattern_seed(size_t size, unsigned iter, int rank)
{
	return ((uint64_t)size << 24) ^ ((uint64_t)iter << 2) ^ (uint64_t)rank ^
	       0x5bd1e9955bd1e995ull;
}

typedef void (*regcount_fn)(uint64_t out[4]);

/*
 * The counting preloads' read-out functions, looked up once in main():
 * they are process-wide by nature, and NULL when not preloaded.
 */
static regcount_fn real_counter, app_counter;

static void find_counters(void)
{
	real_counter = (regcount_fn)dlsym(RTLD_DEFAULT, "regcount_real_stats");
	app_counter = (regcount_fn)dlsym(RTLD_DEFAULT, "regcount_app_stats");
}

/* {real regs, app regs, real reg ns, real dereg ns}; -1 when not counted. */
static void read_counters(int64_t out[4])
{
	uint64_t v[4];

	out[0] = out[1] = out[2] = out[3] = -1;
	if (real_counter) {
		real_counter(v);
		out[0] = (int64_t)v[0];
		out[2] = (int64_t)v[2];
		out[3] = (int64_t)v[3];
	}
	if (app_counter) {
		app_counter(v);
		out[1] = (int64_t)v[0];
	}
}

static int64_t delta(int64_t after, int64_t before)
{
	return after < 0 || before < 0 ? -1 : after - before;
}

/* Gathers this rank's counts during the size into r->rank[] on rank 0. */
static void gather_counts(const int64_t before[4], struct size_result *r)
{
	int64_t after[4], mine[4], all[8];

	read_counters(after);
	for (int i = 0; i < 4; i++)
		mine[i] = delta(after[i], before[i]);
	mine[2] = mine[2] < 0 ? -1 : mine[2] / 1000;
	mine[3] = mine[3] < 0 ? -1 : mine[3] / 1000;
	MPI_Gather(mine, 4, MPI_INT64_T, all, 4, MPI_INT64_T, 0, MPI_COMM_WORLD);
	for (int k = 0; k < 2; k++)
		r->rank[k] = (struct reg_counts){ .real_regs = all[4 * k],
			.app_regs = all[4 * k + 1], .real_reg_us = all[4 * k + 2],
			.real_dereg_us = all[4 * k + 3] };
}

static size_t page_round(size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (n + page - 1) / page * page;
}

static bool buffers_map(struct buffers *b, size_t size)
{
	b->len = page_round(size);
	b->send = bench_map_anon(NULL, b->len);
	b->recv = bench_map_anon(NULL, b->len);
	return b->send && b->recv;
}

/*
 * New anonymous pages at the same addresses: any registration of the old
 * pages is now stale, which is exactly what a cache must notice.
 */
static bool buffers_remap(struct buffers *b)
{
	return bench_map_anon(b->send, b->len) && bench_map_anon(b->recv, b->len);
}

static void buffers_unmap(struct buffers *b)
{
	if (b->send)
		munmap(b->send, b->len);
	if (b->recv)
		munmap(b->recv, b->len);
}

static unsigned iterations_for(const struct options *o, size_t size)
{
	size_t n = o->budget / size;

	if (n < o->min_iters)
		n = o->min_iters;
	if (n > o->max_iters)
		n = o->max_iters;
	return (unsigned)n;
}

/* One ping-pong; rank 0 returns the round-trip time in seconds. */
static double ping_pong(int rank, struct buffers *b, size_t size)
{
	double t0, t1;
	int n = (int)size;

	MPI_Barrier(MPI_COMM_WORLD);
	if (rank == 0) {
		t0 = MPI_Wtime();
		MPI_Send(b->send, n, MPI_BYTE, 1, TAG_PING, MPI_COMM_WORLD);
		MPI_Recv(b->recv, n, MPI_BYTE, 1, TAG_PONG, MPI_COMM_WORLD,
			 MPI_STATUS_IGNORE);
		t1 = MPI_Wtime();
		return t1 - t0;
	}
	MPI_Recv(b->recv, n, MPI_BYTE, 0, TAG_PING, MPI_COMM_WORLD,
		 MPI_STATUS_IGNORE);
	MPI_Send(b->send, n, MPI_BYTE, 0, TAG_PONG, MPI_COMM_WORLD);
	return 0.0;
}

static bool run_size(const struct options *o, int rank, size_t size,
		     struct size_result *r)
{
	struct buffers b = { 0 };
	unsigned iters = iterations_for(o, size);
	unsigned total = o->warmup + iters;
	double *rtts = calloc(iters, sizeof(double));
	struct bench_stats st;
	uint64_t bad = 0, bad_all = 0;
	int peer = 1 - rank;
	int64_t before[4];
	int ok, all_ok;

	MPI_Barrier(MPI_COMM_WORLD);
	read_counters(before);
	ok = buffers_map(&b, size);

	ok = ok && rtts;
	MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
	if (!all_ok) {
		buffers_unmap(&b);
		free(rtts);
		return false;
	}
	for (unsigned it = 0; it < total; it++) {
		if (o->churn && it > 0 && it % o->churn == 0 && !buffers_remap(&b)) {
			perror("mpibench: mmap MAP_FIXED");
			MPI_Abort(MPI_COMM_WORLD, 1);
		}
		bench_pattern_fill(b.send, size, pattern_seed(size, it, rank));
		double rtt = ping_pong(rank, &b, size);

		bad += bench_pattern_bad_words(b.recv, size, pattern_seed(size, it, peer));
		if (it >= o->warmup && rank == 0)
			rtts[it - o->warmup] = rtt;
	}
	MPI_Reduce(&bad, &bad_all, 1, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
	buffers_unmap(&b);
	gather_counts(before, r);

	r->size = size;
	r->iters = iters;
	r->messages = total;
	st = bench_stats(rtts, iters);
	r->one_way_med_us = st.median / 2 * 1e6;
	r->one_way_avg_us = st.mean / 2 * 1e6;
	r->one_way_min_us = st.min / 2 * 1e6;
	r->bw_mbps = (double)size / (st.median / 2) / 1e6;
	free(rtts);
	r->errors = bad_all;
	return true;
}

static void print_header(const struct options *o)
{
	printf("# mpibench: ping-pong, 2 ranks, same buffers every iteration%s%s\n",
	       *o->label ? ", label=" : "", o->label);
	printf("# one-way = round trip / 2 (median, mean, min); bandwidth = size / median one-way (MB = 10^6 B)\n");
	printf("# msgs = messages sent per rank (warm-up included); regs = real ibv_reg_mr per rank\n"
	       "# (rank0/rank1), app = registrations requested by MPI per rank; -1 = not counted\n");
	printf("%10s %6s %6s %11s %11s %11s %9s %6s %11s %11s\n", "size_B", "iters",
	       "msgs", "med_us", "mean_us", "min_us", "bw_MBps", "errors", "regs", "app");
	fflush(stdout);
}

static void print_row(const struct size_result *r)
{
	char regs[32], app[32];

	snprintf(regs, sizeof(regs), "%" PRId64 "/%" PRId64,
		 r->rank[0].real_regs, r->rank[1].real_regs);
	snprintf(app, sizeof(app), "%" PRId64 "/%" PRId64,
		 r->rank[0].app_regs, r->rank[1].app_regs);
	printf("%10zu %6u %6u %11.1f %11.1f %11.1f %9.2f %6" PRIu64 " %11s %11s\n",
	       r->size, r->iters, r->messages, r->one_way_med_us,
	       r->one_way_avg_us, r->one_way_min_us, r->bw_mbps, r->errors,
	       regs, app);
	fflush(stdout);
}

static bool write_json(const struct options *o, const struct size_result *r,
		       size_t n)
{
	FILE *f = bench_json_create(o->json_path);

	if (!f)
		return false;
	fprintf(f, "{\n  \"benchmark\": \"mpibench\",\n  \"label\": ");
	bench_json_string(f, o->label);
	fprintf(f, ",\n  \"method\": \"ping-pong, same buffers reused, "
		   "one-way = rtt/2, bw = size / median one-way, MB = 1e6 B\",\n  \"churn\": %u,\n"
		   "  \"results\": [\n", o->churn);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "    {\"size\": %zu, \"iters\": %u, \"messages_per_rank\": %u, "
			   "\"one_way_med_us\": %.3f, "
			   "\"one_way_avg_us\": %.3f, \"one_way_min_us\": %.3f, "
			   "\"bw_MBps\": %.3f, \"errors\": %" PRIu64 ", "
			   "\"real_regs\": [%" PRId64 ", %" PRId64 "], "
			   "\"app_regs\": [%" PRId64 ", %" PRId64 "], "
			   "\"real_reg_us\": [%" PRId64 ", %" PRId64 "], "
			   "\"real_dereg_us\": [%" PRId64 ", %" PRId64 "]}%s\n",
			r[i].size, r[i].iters, r[i].messages, r[i].one_way_med_us,
			r[i].one_way_avg_us,
			r[i].one_way_min_us, r[i].bw_mbps, r[i].errors,
			r[i].rank[0].real_regs, r[i].rank[1].real_regs,
			r[i].rank[0].app_regs, r[i].rank[1].app_regs,
			r[i].rank[0].real_reg_us, r[i].rank[1].real_reg_us,
			r[i].rank[0].real_dereg_us, r[i].rank[1].real_dereg_us,
			i + 1 < n ? "," : "");
	fprintf(f, "  ]\n}\n");
	return fclose(f) == 0;
}

int main(int argc, char **argv)
{
	struct options o;
	struct size_result results[64];
	size_t n = 0;
	uint64_t errors = 0;
	int rank, nranks, status = 0;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &nranks);
	find_counters();
	if (!parse_options(argc, argv, &o) || nranks != 2) {
		if (rank == 0) {
			usage();
			if (nranks != 2)
				fprintf(stderr, "mpibench: needs exactly 2 ranks, got %d\n",
					nranks);
		}
		MPI_Finalize();
		return 1;
	}
	if (rank == 0)
		print_header(&o);
	for (size_t size = o.min_size; size <= o.max_size && n < 64;
	     size *= o.factor) {
		if (!run_size(&o, rank, size, &results[n])) {
			if (rank == 0)
				fprintf(stderr, "mpibench: cannot map %zu-byte buffers\n",
					size);
			status = 1;
			break;
		}
		if (rank == 0)
			print_row(&results[n]);
		errors += results[n].errors;
		n++;
	}
	if (rank == 0) {
		if (o.json_path && !write_json(&o, results, n))
			status = 1;
		if (errors) {
			fprintf(stderr, "mpibench: %" PRIu64 " words of received data were wrong\n",
				errors);
			status = 2;
		} else if (status == 0) {
			printf("# data check: all received words matched\n");
		}
	}
	MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
	MPI_Finalize();
	return status;
}
