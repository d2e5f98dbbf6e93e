// SPDX-License-Identifier: BSD-2-Clause
/* Verbs helpers of the registration benchmarks; see bench_verbs.h. */
#define _GNU_SOURCE
#include "bench_verbs.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* "PROG: WHAT: strerror(errno)", like perror() with the program's name. */
static void say_errno(const char *prog, const char *what)
{
	int err = errno;

	fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(err));
}

struct ibv_context *bench_open_device(const char *prog, const char *name)
{
	int n = 0;
	struct ibv_device **list = ibv_get_device_list(&n);
	struct ibv_device *dev = NULL;
	struct ibv_context *ctx;

	if (!list) {
		say_errno(prog, "ibv_get_device_list");
		return NULL;
	}
	for (int i = 0; i < n && !dev; i++)
		if (!name || !strcmp(ibv_get_device_name(list[i]), name))
			dev = list[i];
	if (!dev) {
		fprintf(stderr, "%s: no RDMA device %s\n", prog, name ? name : "at all");
		ibv_free_device_list(list);
		return NULL;
	}
	ctx = ibv_open_device(dev);
	ibv_free_device_list(list);
	if (!ctx) {
		say_errno(prog, "ibv_open_device");
	}
	return ctx;
}

static struct ibv_qp *create_qp(struct bench_loop *l)
{
	struct ibv_qp_init_attr attr = {
		.send_cq = l->cq, .recv_cq = l->cq, .qp_type = IBV_QPT_RC,
		.cap = { .max_send_wr = 4, .max_recv_wr = 1,
			 .max_send_sge = 1, .max_recv_sge = 1 },
		.sq_sig_all = 1,
	};

	return ibv_create_qp(l->pd, &attr);
}

/* RESET -> INIT -> RTR -> RTS, with @qp's peer being @dest_qpn at our own GID. */
static bool connect_qp(struct bench_loop *l, struct ibv_qp *qp, uint32_t dest_qpn)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_INIT, .port_num = (uint8_t)l->port,
		.pkey_index = 0, .qp_access_flags = IBV_ACCESS_REMOTE_WRITE,
	};

	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
			  IBV_QP_PORT | IBV_QP_ACCESS_FLAGS))
		return false;
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = l->mtu;
	a.dest_qp_num = dest_qpn;
	a.rq_psn = 0;
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = 12;
	a.ah_attr.is_global = 1;
	a.ah_attr.grh.dgid = l->gid;
	a.ah_attr.grh.sgid_index = (uint8_t)l->gid_index;
	a.ah_attr.grh.hop_limit = 1;
	a.ah_attr.port_num = (uint8_t)l->port;
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

bool bench_loop_setup(const char *prog, struct bench_loop *l, const char *device,
		      unsigned port, unsigned gid_index)
{
	struct ibv_port_attr attr;

	*l = (struct bench_loop){ .port = port, .gid_index = gid_index };
	l->ctx = bench_open_device(prog, device);
	if (!l->ctx)
		return false;
	if (ibv_query_port(l->ctx, (uint8_t)port, &attr) ||
	    ibv_query_gid(l->ctx, (uint8_t)port, (int)gid_index, &l->gid)) {
		fprintf(stderr, "%s: cannot query port %u / GID %u\n", prog, port,
			gid_index);
		return false;
	}
	l->mtu = attr.active_mtu;
	l->pd = ibv_alloc_pd(l->ctx);
	l->cq = l->pd ? ibv_create_cq(l->ctx, 8, NULL, NULL, 0) : NULL;
	l->qp[0] = l->cq ? create_qp(l) : NULL;
	l->qp[1] = l->qp[0] ? create_qp(l) : NULL;
	if (!l->qp[1]) {
		say_errno(prog, "PD/CQ/QP creation");
		return false;
	}
	if (!connect_qp(l, l->qp[0], l->qp[1]->qp_num) ||
	    !connect_qp(l, l->qp[1], l->qp[0]->qp_num)) {
		say_errno(prog, "connecting the loopback QPs");
		return false;
	}
	return true;
}

void bench_loop_teardown(struct bench_loop *l)
{
	for (int i = 1; i >= 0; i--)
		if (l->qp[i])
			ibv_destroy_qp(l->qp[i]);
	if (l->cq)
		ibv_destroy_cq(l->cq);
	if (l->pd)
		ibv_dealloc_pd(l->pd);
	if (l->ctx)
		ibv_close_device(l->ctx);
}
