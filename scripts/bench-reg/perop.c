// SPDX-License-Identifier: BSD-2-Clause
/*
 * perop: an ordinary verbs program that registers per operation: for every
 * RDMA write it registers the source buffer, posts the write, waits for the
 * completion and deregisters the buffer again.  It knows nothing about
 * caches; run it plain and under LD_PRELOAD=libummushim.so to compare.
 *
 * Two RC queue pairs in this process are connected to each other over the
 * device's own GID (loopback; on Soft-RoCE rxe loops it back internally).
 * The target buffer is registered once.  For each source size the program
 * reuses one source buffer; before each operation it fills the buffer with
 * a pattern unique to that operation, and after it checks every 64-bit word
 * that arrived in the target, so a stale registration would be caught.
 * With --churn N the source buffer's pages are replaced (mmap MAP_FIXED at
 * the same address) every N operations.
 *
 * Timing (CLOCK_MONOTONIC) covers reg + post + poll + dereg of each
 * operation; filling and checking are outside it.  The rate reported is
 * 1 / median operation time (robust against the scheduling hiccups of a
 * shared, emulated machine); the mean is reported too.
 *
 *   perop [--device rxe0] [--port 1] [--gid-index 1] [--sizes 4K,64K,1M]
 *         [--time-ms 1000] [--max-ops 5000] [--churn N] [--json FILE]
 *         [--label L]
 *
 * Exit status: 0 when every operation completed and every word matched,
 * 2 on a data mismatch, 1 on any other failure.
 */
#define _GNU_SOURCE
#include <infiniband/verbs.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "../bench-common/bench_common.h"
#include "../bench-common/bench_verbs.h"

#define PROG "perop"
#define MAX_SIZES 16

struct options {
	const char *device;
	unsigned port;
	unsigned gid_index;
	size_t sizes[MAX_SIZES];
	size_t nsizes;
	unsigned time_ms;
	unsigned max_ops;
	unsigned churn;
	const char *json_path;
	const char *label;
};

struct rdma {
	struct bench_loop loop;
	void *target;
	size_t target_len;
	struct ibv_mr *target_mr;
};

struct row {
	size_t size;
	unsigned ops;
	double us_per_op;	/* median */
	double mean_us_per_op;
	double ops_per_s;	/* 1 / median */
	uint64_t errors;
};

/* "4K,64K,1M": up to MAX_SIZES multiples of 8, each at most 1 GiB. */
static bool parse_sizes(const char *s, void *opts)
{
	struct options *o = opts;
	char *end;

	o->nsizes = 0;
	for (;;) {
		size_t *v = &o->sizes[o->nsizes];

		if (o->nsizes == MAX_SIZES || !bench_parse_size_prefix(s, &end, v) ||
		    *v % 8 || *v > (1u << 30))
			return false;
		o->nsizes++;
		if (*end == '\0')
			return true;
		if (*end != ',')
			return false;
		s = end + 1;
	}
}

static bool parse_options(int argc, char **argv, struct options *o)
{
	const struct bench_opt opts[] = {
		BENCH_STR("--device", &o->device),
		BENCH_UINT("--port", &o->port, 1, UINT_MAX),
		BENCH_UINT("--gid-index", &o->gid_index, 0, UINT_MAX),
		BENCH_FN("--sizes", parse_sizes, o),
		BENCH_UINT("--time-ms", &o->time_ms, 0, UINT_MAX),
		BENCH_UINT("--max-ops", &o->max_ops, 1, UINT_MAX),
		BENCH_UINT("--churn", &o->churn, 0, UINT_MAX),
		BENCH_STR("--json", &o->json_path),
		BENCH_STR("--label", &o->label),
	};

	*o = (struct options){
		.device = "rxe0", .port = 1, .gid_index = 1,
		.sizes = { 4096, 65536, 1u << 20 }, .nsizes = 3,
		.time_ms = 1000, .max_ops = 5000, .churn = 0,
		.json_path = NULL, .label = "",
	};
	if (bench_parse_opts(PROG, argc, argv, 1, opts, sizeof(opts) / sizeof(opts[0])))
		return true;
	fprintf(stderr,
		"usage: perop [--device D] [--port P] [--gid-index G] [--sizes 4K,64K,1M]\n"
		"             [--time-ms MS] [--max-ops N] [--churn N] [--json F] [--label L]\n");
	return false;
}

static bool rdma_setup(const struct options *o, struct rdma *r, size_t max_size)
{
	if (!bench_loop_setup(PROG, &r->loop, o->device, o->port, o->gid_index))
		return false;
	r->target_len = max_size;
	r->target = bench_map_anon(NULL, max_size);
	if (!r->target) {
		perror("perop: mmap");
		return false;
	}
	/* The receiving side registers once, as usual; only the source churns. */
	r->target_mr = ibv_reg_mr(r->loop.pd, r->target, max_size,
				  IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
	if (!r->target_mr) {
		perror("perop: ibv_reg_mr (target)");
		return false;
	}
	return true;
}

static void rdma_teardown(struct rdma *r)
{
	if (r->target_mr)
		ibv_dereg_mr(r->target_mr);
	if (r->target)
		munmap(r->target, r->target_len);
	bench_loop_teardown(&r->loop);
}

static bool wait_completion(struct ibv_cq *cq)
{
	struct ibv_wc wc;
	int n;

	do {
		n = ibv_poll_cq(cq, 1, &wc);
	} while (n == 0);
	if (n < 0 || wc.status != IBV_WC_SUCCESS) {
		fprintf(stderr, "perop: RDMA write failed: %s\n",
			n < 0 ? "poll error" : ibv_wc_status_str(wc.status));
		return false;
	}
	return true;
}

/*
 * What the application does for one operation: register, write, wait,
 * deregister.  The access flags are a compile-time constant (verbs.h then
 * calls ibv_reg_mr@IBVERBS_1.1).
 */
static bool one_write(struct rdma *r, void *src, size_t size)
{
	struct ibv_mr *mr = ibv_reg_mr(r->loop.pd, src, size, IBV_ACCESS_LOCAL_WRITE);
	struct ibv_sge sge;
	struct ibv_send_wr wr, *bad;
	bool ok;

	if (!mr) {
		perror("perop: ibv_reg_mr");
		return false;
	}
	sge = (struct ibv_sge){ .addr = (uintptr_t)src, .length = (uint32_t)size,
				.lkey = mr->lkey };
	wr = (struct ibv_send_wr){
		.sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_RDMA_WRITE,
		.send_flags = IBV_SEND_SIGNALED,
		.wr.rdma = { .remote_addr = (uintptr_t)r->target,
			     .rkey = r->target_mr->rkey },
	};
	ok = ibv_post_send(r->loop.qp[0], &wr, &bad) == 0;
	if (!ok)
		perror("perop: ibv_post_send");
	ok = ok && wait_completion(r->loop.cq);
	if (ibv_dereg_mr(mr)) {
		perror("perop: ibv_dereg_mr");
		ok = false;
	}
	return ok;
}

static bool run_size(const struct options *o, struct rdma *r, size_t size,
		     struct row *row)
{
	void *src = bench_map_anon(NULL, size);
	uint64_t budget = (uint64_t)o->time_ms * 1000000u, t0;
	uint64_t t_start = bench_now_ns();
	double *times = calloc(o->max_ops, sizeof(*times));
	unsigned ops = 0;
	bool ok = src && times;

	row->errors = 0;
	while (ok && ops < o->max_ops && (bench_now_ns() - t_start < budget || ops < 3)) {
		uint64_t seed = ((uint64_t)size << 32) ^ ops;

		if (o->churn && ops > 0 && ops % o->churn == 0 &&
		    !bench_map_anon(src, size))
			ok = false;
		bench_pattern_fill(src, size, seed);
		t0 = bench_now_ns();
		ok = ok && one_write(r, src, size);
		times[ops] = (double)(bench_now_ns() - t0);
		row->errors += ok ? bench_pattern_bad_words(r->target, size, seed) : 0;
		ops++;
	}
	if (src)
		munmap(src, size);
	row->size = size;
	row->ops = ops;
	if (ok) {
		struct bench_stats st = bench_stats(times, ops);

		row->us_per_op = st.median / 1e3;
		row->mean_us_per_op = st.mean / 1e3;
		row->ops_per_s = 1e9 / st.median;
	}
	free(times);
	return ok;
}

static bool write_json(const struct options *o, const struct row *rows, size_t n)
{
	FILE *f = bench_json_begin(o->json_path, "perop", o->label);

	if (!f)
		return false;
	fprintf(f, ", \"device\": ");
	bench_json_string(f, o->device);
	fprintf(f, ", \"method\": \"reg + RDMA write + poll + dereg per op, CLOCK_MONOTONIC, "
		   "fill/check untimed, rate = 1/median op time\", \"churn\": %u, \"results\": [\n",
		o->churn);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "  {\"size\": %zu, \"ops\": %u, \"us_per_op\": %.3f, "
			   "\"mean_us_per_op\": %.3f, "
			   "\"ops_per_s\": %.1f, \"errors\": %" PRIu64 "}%s\n",
			rows[i].size, rows[i].ops, rows[i].us_per_op,
			rows[i].mean_us_per_op, rows[i].ops_per_s, rows[i].errors,
			i + 1 < n ? "," : "");
	fprintf(f, "]}\n");
	return fclose(f) == 0;
}

int main(int argc, char **argv)
{
	struct options o;
	struct rdma r = { 0 };
	struct row rows[MAX_SIZES];
	size_t max_size = 0, n = 0;
	uint64_t errors = 0;
	int status = 0;

	if (!parse_options(argc, argv, &o))
		return 1;
	for (size_t i = 0; i < o.nsizes; i++)
		if (o.sizes[i] > max_size)
			max_size = o.sizes[i];
	if (!rdma_setup(&o, &r, max_size)) {
		rdma_teardown(&r);
		return 1;
	}
	printf("# perop%s%s: reg + RDMA write + wait + dereg per operation on %s port %u (loopback RC)\n",
	       *o.label ? " " : "", o.label, o.device, o.port);
	printf("%10s %7s %10s %10s %10s %8s\n", "size_B", "ops", "med_us", "mean_us",
	       "ops_per_s", "errors");
	for (size_t i = 0; i < o.nsizes; i++, n++) {
		if (!run_size(&o, &r, o.sizes[i], &rows[n])) {
			status = 1;
			break;
		}
		printf("%10zu %7u %10.1f %10.1f %10.0f %8" PRIu64 "\n", rows[n].size,
		       rows[n].ops, rows[n].us_per_op, rows[n].mean_us_per_op,
		       rows[n].ops_per_s, rows[n].errors);
		fflush(stdout);
		errors += rows[n].errors;
	}
	if (o.json_path && !write_json(&o, rows, n))
		status = 1;
	rdma_teardown(&r);
	if (errors) {
		fprintf(stderr, "perop: %" PRIu64 " words arrived wrong\n", errors);
		return 2;
	}
	if (status == 0)
		printf("# data check: every written word arrived\n");
	return status;
}
