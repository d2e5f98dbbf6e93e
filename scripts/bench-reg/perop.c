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
#include <errno.h>
#include <infiniband/verbs.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

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
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct ibv_qp *qp[2];
	union ibv_gid gid;
	enum ibv_mtu mtu;
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

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool parse_size(const char *s, char **end, size_t *out)
{
	unsigned long long v;

	errno = 0;
	v = strtoull(s, end, 10);
	if (errno || *end == s)
		return false;
	switch (**end) {
	case 'k': case 'K': v <<= 10; (*end)++; break;
	case 'm': case 'M': v <<= 20; (*end)++; break;
	default: break;
	}
	if (v == 0 || v % 8 || v > (1ull << 30))
		return false;
	*out = (size_t)v;
	return true;
}

static bool parse_sizes(const char *s, struct options *o)
{
	char *end;

	o->nsizes = 0;
	for (;;) {
		if (o->nsizes == MAX_SIZES || !parse_size(s, &end, &o->sizes[o->nsizes]))
			return false;
		o->nsizes++;
		if (*end == '\0')
			return true;
		if (*end != ',')
			return false;
		s = end + 1;
	}
}

static bool parse_uint(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > UINT_MAX)
		return false;
	*out = (unsigned)v;
	return true;
}

static bool parse_options(int argc, char **argv, struct options *o)
{
	*o = (struct options){
		.device = "rxe0", .port = 1, .gid_index = 1,
		.sizes = { 4096, 65536, 1u << 20 }, .nsizes = 3,
		.time_ms = 1000, .max_ops = 5000, .churn = 0,
		.json_path = NULL, .label = "",
	};
	for (int i = 1; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool ok;

		if (!v)
			ok = false;
		else if (!strcmp(a, "--device"))
			ok = (o->device = v) != NULL;
		else if (!strcmp(a, "--port"))
			ok = parse_uint(v, &o->port) && o->port >= 1;
		else if (!strcmp(a, "--gid-index"))
			ok = parse_uint(v, &o->gid_index);
		else if (!strcmp(a, "--sizes"))
			ok = parse_sizes(v, o);
		else if (!strcmp(a, "--time-ms"))
			ok = parse_uint(v, &o->time_ms);
		else if (!strcmp(a, "--max-ops"))
			ok = parse_uint(v, &o->max_ops) && o->max_ops >= 1;
		else if (!strcmp(a, "--churn"))
			ok = parse_uint(v, &o->churn);
		else if (!strcmp(a, "--json"))
			ok = (o->json_path = v) != NULL;
		else if (!strcmp(a, "--label"))
			ok = (o->label = v) != NULL;
		else
			ok = false;
		if (!ok) {
			fprintf(stderr, "perop: bad option or value: %s %s\n"
				"usage: perop [--device D] [--port P] [--gid-index G] [--sizes 4K,64K,1M]\n"
				"             [--time-ms MS] [--max-ops N] [--churn N] [--json F] [--label L]\n",
				a, v ? v : "");
			return false;
		}
	}
	return true;
}

static struct ibv_context *open_device(const char *name)
{
	int n = 0;
	struct ibv_device **list = ibv_get_device_list(&n);
	struct ibv_context *ctx = NULL;

	if (!list) {
		perror("perop: ibv_get_device_list");
		return NULL;
	}
	for (int i = 0; i < n && !ctx; i++)
		if (!strcmp(ibv_get_device_name(list[i]), name))
			ctx = ibv_open_device(list[i]);
	ibv_free_device_list(list);
	if (!ctx)
		fprintf(stderr, "perop: cannot open RDMA device %s\n", name);
	return ctx;
}

static struct ibv_qp *create_qp(struct rdma *r)
{
	struct ibv_qp_init_attr attr = {
		.send_cq = r->cq, .recv_cq = r->cq, .qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = 4, .max_recv_wr = 1,
			 .max_send_sge = 1, .max_recv_sge = 1 },
		.sq_sig_all = 1,
	};

	return ibv_create_qp(r->pd, &attr);
}

/* RESET -> INIT -> RTR -> RTS, with @qp's peer being @dest_qpn at our own GID. */
static bool connect_qp(const struct options *o, struct rdma *r,
		       struct ibv_qp *qp, uint32_t dest_qpn)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_INIT, .port_num = (uint8_t)o->port,
		.pkey_index = 0, .qp_access_flags = IBV_ACCESS_REMOTE_WRITE,
	};

	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
			  IBV_QP_PORT | IBV_QP_ACCESS_FLAGS))
		return false;
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = r->mtu;
	a.dest_qp_num = dest_qpn;
	a.rq_psn = 0;
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = 12;
	a.ah_attr.is_global = 1;
	a.ah_attr.grh.dgid = r->gid;
	a.ah_attr.grh.sgid_index = (uint8_t)o->gid_index;
	a.ah_attr.grh.hop_limit = 1;
	a.ah_attr.port_num = (uint8_t)o->port;
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
			  IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
			  IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER))
		return false;
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.timeout = 14;
	a.retry_cnt = 7;
	a.rnr_retry = 7;
	a.sq_psn = 0;
	a.max_rd_atomic = 1;
	return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT |
			     IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
			     IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC) == 0;
}

static bool rdma_setup(const struct options *o, struct rdma *r, size_t max_size)
{
	struct ibv_port_attr port;

	r->ctx = open_device(o->device);
	if (!r->ctx)
		return false;
	if (ibv_query_port(r->ctx, (uint8_t)o->port, &port) ||
	    ibv_query_gid(r->ctx, (uint8_t)o->port, (int)o->gid_index, &r->gid)) {
		fprintf(stderr, "perop: cannot query port %u / GID %u\n", o->port,
			o->gid_index);
		return false;
	}
	r->mtu = port.active_mtu;
	r->pd = ibv_alloc_pd(r->ctx);
	r->cq = r->pd ? ibv_create_cq(r->ctx, 8, NULL, NULL, 0) : NULL;
	r->qp[0] = r->cq ? create_qp(r) : NULL;
	r->qp[1] = r->qp[0] ? create_qp(r) : NULL;
	if (!r->qp[1]) {
		perror("perop: PD/CQ/QP creation");
		return false;
	}
	if (!connect_qp(o, r, r->qp[0], r->qp[1]->qp_num) ||
	    !connect_qp(o, r, r->qp[1], r->qp[0]->qp_num)) {
		perror("perop: connecting the loopback QPs");
		return false;
	}
	r->target_len = max_size;
	r->target = mmap(NULL, max_size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r->target == MAP_FAILED) {
		perror("perop: mmap");
		return false;
	}
	/* The receiving side registers once, as usual; only the source churns. */
	r->target_mr = ibv_reg_mr(r->pd, r->target, max_size,
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
	if (r->target && r->target != MAP_FAILED)
		munmap(r->target, r->target_len);
	for (int i = 1; i >= 0; i--)
		if (r->qp[i])
			ibv_destroy_qp(r->qp[i]);
	if (r->cq)
		ibv_destroy_cq(r->cq);
	if (r->pd)
		ibv_dealloc_pd(r->pd);
	if (r->ctx)
		ibv_close_device(r->ctx);
}

static inline uint64_t pattern_word(uint64_t seed, size_t i)
{
	uint64_t x = seed ^ ((uint64_t)i * 0x9E3779B97F4A7C15ull);

	return x ^ (x >> 31);
}

static void fill(void *buf, size_t size, uint64_t seed)
{
	uint64_t *w = buf;

	for (size_t i = 0; i < size / 8; i++)
		w[i] = pattern_word(seed, i);
}

static uint64_t verify(const void *buf, size_t size, uint64_t seed)
{
	const uint64_t *w = buf;
	uint64_t bad = 0;

	for (size_t i = 0; i < size / 8; i++)
		bad += w[i] != pattern_word(seed, i);
	return bad;
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
	struct ibv_mr *mr = ibv_reg_mr(r->pd, src, size, IBV_ACCESS_LOCAL_WRITE);
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
	ok = ibv_post_send(r->qp[0], &wr, &bad) == 0;
	if (!ok)
		perror("perop: ibv_post_send");
	ok = ok && wait_completion(r->cq);
	if (ibv_dereg_mr(mr)) {
		perror("perop: ibv_dereg_mr");
		ok = false;
	}
	return ok;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static bool run_size(const struct options *o, struct rdma *r, size_t size,
		     struct row *row)
{
	void *src = mmap(NULL, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t budget = (uint64_t)o->time_ms * 1000000u, timed = 0, t0;
	uint64_t t_start = now_ns();
	uint64_t *times = calloc(o->max_ops, sizeof(*times));
	unsigned ops = 0;
	bool ok = src != MAP_FAILED && times;

	row->errors = 0;
	while (ok && ops < o->max_ops && (now_ns() - t_start < budget || ops < 3)) {
		uint64_t seed = ((uint64_t)size << 32) ^ ops;

		if (o->churn && ops > 0 && ops % o->churn == 0 &&
		    mmap(src, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
			ok = false;
		fill(src, size, seed);
		t0 = now_ns();
		ok = ok && one_write(r, src, size);
		times[ops] = now_ns() - t0;
		timed += times[ops];
		row->errors += ok ? verify(r->target, size, seed) : 0;
		ops++;
	}
	if (src != MAP_FAILED)
		munmap(src, size);
	row->size = size;
	row->ops = ops;
	if (ok) {
		qsort(times, ops, sizeof(*times), cmp_u64);
		row->us_per_op = (double)times[ops / 2] / 1e3;
		row->mean_us_per_op = (double)timed / 1e3 / ops;
		row->ops_per_s = 1e9 / (double)times[ops / 2];
	}
	free(times);
	return ok;
}

static bool write_json(const struct options *o, const struct row *rows, size_t n)
{
	FILE *f = fopen(o->json_path, "w");

	if (!f) {
		perror(o->json_path);
		return false;
	}
	fprintf(f, "{\"benchmark\": \"perop\", \"label\": \"%s\", \"device\": \"%s\", "
		   "\"method\": \"reg + RDMA write + poll + dereg per op, CLOCK_MONOTONIC, "
		   "fill/check untimed, rate = 1/median op time\", \"churn\": %u, \"results\": [\n",
		o->label, o->device, o->churn);
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
