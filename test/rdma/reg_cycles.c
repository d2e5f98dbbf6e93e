// SPDX-License-Identifier: BSD-2-Clause
/*
 * An unmodified verbs program that registers and deregisters one buffer N
 * times around an RDMA write, the pattern the shim exists for.  The runner
 * checks the shim's exit statistics: one real registration for N cycles.
 *
 * usage: rdma-reg-cycles const|var|iova N [SIZE]
 *   const: ibv_reg_mr with a constant access (calls ibv_reg_mr@IBVERBS_1.1)
 *   var:   ibv_reg_mr with a variable access (calls ibv_reg_mr_iova2)
 *   iova:  ibv_reg_mr_iova with a constant access (ibv_reg_mr_iova@1.7)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rdma_util.h"

static volatile int access_var = IBV_ACCESS_LOCAL_WRITE;

static struct ibv_mr *reg(const char *how, struct ibv_pd *pd, void *buf,
			  size_t len)
{
	if (strcmp(how, "const") == 0)
		return ibv_reg_mr(pd, buf, len, IBV_ACCESS_LOCAL_WRITE);
	if (strcmp(how, "var") == 0)
		return ibv_reg_mr(pd, buf, len, access_var);
	return ibv_reg_mr_iova(pd, buf, len, (uintptr_t)buf,
			       IBV_ACCESS_LOCAL_WRITE);
}

int main(int argc, char **argv)
{
	struct rdma_dev dev;
	struct rdma_loop loop;
	struct ibv_mr *peer_mr, *mr, *first = NULL;
	size_t len = argc > 3 ? strtoul(argv[3], NULL, 0) : 65536;
	int n, same = 0;
	char *buf, *peer;

	if (argc < 3 || (strcmp(argv[1], "const") && strcmp(argv[1], "var") &&
			 strcmp(argv[1], "iova"))) {
		fprintf(stderr, "usage: rdma-reg-cycles const|var|iova N [SIZE]\n");
		return 2;
	}
	n = atoi(argv[2]);
	if (rdma_dev_open(&dev, NULL) || rdma_loop_create(&loop, &dev))
		return 1;
	buf = aligned_alloc(4096, len);
	peer = aligned_alloc(4096, len);
	peer_mr = ibv_reg_mr(dev.pd, peer, len,
			     IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
	if (!buf || !peer || !peer_mr)
		return rdma_fail("setup");
	for (int i = 0; i < n; i++) {
		memset(buf, 'a' + i % 26, len);
		mr = reg(argv[1], dev.pd, buf, len);
		if (!mr)
			return rdma_fail("ibv_reg_mr");
		if (!first)
			first = mr;
		same += mr == first;
		if (rdma_write(&loop, mr, buf, peer_mr, peer, len))
			return 1;
		if (memcmp(buf, peer, len)) {
			fprintf(stderr, "cycle %d: wrong data\n", i);
			return 1;
		}
		if (ibv_dereg_mr(mr))
			return rdma_fail("ibv_dereg_mr");
	}
	if (ibv_dereg_mr(peer_mr))
		return rdma_fail("ibv_dereg_mr");
	rdma_loop_destroy(&loop);
	rdma_dev_close(&dev);
	printf("reg-cycles: how=%s cycles=%d same_mr=%d\n", argv[1], n, same);
	return 0;
}
