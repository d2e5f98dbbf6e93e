// SPDX-License-Identifier: BSD-2-Clause
#define _GNU_SOURCE
#include "rdma_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int rdma_fail(const char *what)
{
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	return -1;
}

int rdma_dev_open(struct rdma_dev *d, const char *name)
{
	struct ibv_device **list;
	struct ibv_port_attr port;
	int n;

	memset(d, 0, sizeof(*d));
	if (!name)
		name = getenv("RDMA_DEV") ? getenv("RDMA_DEV") : RDMA_DEV_DEFAULT;
	list = ibv_get_device_list(&n);
	if (!list)
		return rdma_fail("ibv_get_device_list");
	for (int i = 0; i < n && !d->ctx; i++)
		if (strcmp(ibv_get_device_name(list[i]), name) == 0)
			d->ctx = ibv_open_device(list[i]);
	ibv_free_device_list(list);
	if (!d->ctx) {
		fprintf(stderr, "cannot open RDMA device %s\n", name);
		return -1;
	}
	if (ibv_query_port(d->ctx, 1, &port))
		return rdma_fail("ibv_query_port");
	d->mtu = port.active_mtu;
	if (ibv_query_gid(d->ctx, 1, RDMA_GID_INDEX, &d->gid))
		return rdma_fail("ibv_query_gid");
	d->pd = ibv_alloc_pd(d->ctx);
	if (!d->pd)
		return rdma_fail("ibv_alloc_pd");
	return 0;
}

void rdma_dev_close(struct rdma_dev *d)
{
	if (d->pd && ibv_dealloc_pd(d->pd))
		fprintf(stderr, "ibv_dealloc_pd failed\n");
	if (d->ctx && ibv_close_device(d->ctx))
		fprintf(stderr, "ibv_close_device failed\n");
	memset(d, 0, sizeof(*d));
}

static int qp_to_init(struct ibv_qp *qp)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_INIT,
		.pkey_index = 0,
		.port_num = 1,
		.qp_access_flags = IBV_ACCESS_REMOTE_WRITE |
				   IBV_ACCESS_REMOTE_READ,
	};

	return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
			     IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
}

static int qp_to_rtr(struct ibv_qp *qp, struct rdma_dev *d, uint32_t dest)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_RTR,
		.path_mtu = d->mtu,
		.dest_qp_num = dest,
		.rq_psn = 0,
		.max_dest_rd_atomic = 1,
		.min_rnr_timer = 12,
		.ah_attr = {
			.is_global = 1,
			.grh = {
				.dgid = d->gid,
				.sgid_index = RDMA_GID_INDEX,
				.hop_limit = 64,
			},
			.port_num = 1,
		},
	};

	return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV |
			     IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
			     IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
			     IBV_QP_MIN_RNR_TIMER);
}

static int qp_to_rts(struct ibv_qp *qp)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_RTS,
		.timeout = 14,
		.retry_cnt = 7,
		.rnr_retry = 7,
		.sq_psn = 0,
		.max_rd_atomic = 1,
	};

	return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT |
			     IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
			     IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
}

int rdma_loop_create(struct rdma_loop *l, struct rdma_dev *d)
{
	struct ibv_qp_init_attr init = {
		.qp_type = IBV_QPT_RC,
		.cap = {
			.max_send_wr = 16,
			.max_recv_wr = 16,
			.max_send_sge = 1,
			.max_recv_sge = 1,
		},
	};

	memset(l, 0, sizeof(*l));
	l->dev = d;
	l->cq = ibv_create_cq(d->ctx, 32, NULL, NULL, 0);
	if (!l->cq)
		return rdma_fail("ibv_create_cq");
	init.send_cq = init.recv_cq = l->cq;
	for (int i = 0; i < 2; i++) {
		l->qp[i] = ibv_create_qp(d->pd, &init);
		if (!l->qp[i])
			return rdma_fail("ibv_create_qp");
	}
	for (int i = 0; i < 2; i++) {
		errno = qp_to_init(l->qp[i]);
		if (errno)
			return rdma_fail("modify QP to INIT");
		errno = qp_to_rtr(l->qp[i], d, l->qp[1 - i]->qp_num);
		if (errno)
			return rdma_fail("modify QP to RTR");
		errno = qp_to_rts(l->qp[i]);
		if (errno)
			return rdma_fail("modify QP to RTS");
	}
	return 0;
}

void rdma_loop_destroy(struct rdma_loop *l)
{
	for (int i = 0; i < 2; i++)
		if (l->qp[i] && ibv_destroy_qp(l->qp[i]))
			fprintf(stderr, "ibv_destroy_qp failed\n");
	if (l->cq && ibv_destroy_cq(l->cq))
		fprintf(stderr, "ibv_destroy_cq failed\n");
	memset(l, 0, sizeof(*l));
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int rdma_write(struct rdma_loop *l, struct ibv_mr *src_mr, const void *src,
	       struct ibv_mr *dst_mr, void *dst, size_t len)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)src,
		.length = (uint32_t)len,
		.lkey = src_mr->lkey,
	};
	struct ibv_send_wr wr = {
		.wr_id = 1,
		.sg_list = &sge,
		.num_sge = 1,
		.opcode = IBV_WR_RDMA_WRITE,
		.send_flags = IBV_SEND_SIGNALED,
		.wr.rdma = {
			.remote_addr = (uintptr_t)dst,
			.rkey = dst_mr->rkey,
		},
	}, *bad;
	struct ibv_wc wc;
	double deadline = now_s() + 30;
	int n;

	errno = ibv_post_send(l->qp[0], &wr, &bad);
	if (errno)
		return rdma_fail("ibv_post_send");
	do {
		n = ibv_poll_cq(l->cq, 1, &wc);
		if (n < 0)
			return rdma_fail("ibv_poll_cq");
		if (n == 0 && now_s() > deadline) {
			fprintf(stderr, "RDMA write: no completion in 30 s\n");
			return -1;
		}
	} while (n == 0);
	if (wc.status != IBV_WC_SUCCESS) {
		fprintf(stderr, "RDMA write completed with %s\n",
			ibv_wc_status_str(wc.status));
		return -1;
	}
	return 0;
}
