// SPDX-License-Identifier: BSD-2-Clause
/*
 * An application that registers memory through its own dlopen handle of
 * libibverbs (as NCCL does: dlopen("libibverbs.so.1") + dlvsym of
 * ibv_reg_mr / ibv_dereg_mr), bypassing a preloaded shim, N times around
 * an RDMA write with new data each cycle.  The QPs are set up with the
 * ordinary (linked) calls.  Inside libibverbs, ibv_reg_mr still calls
 * ibv_reg_mr_iova2 through its GOT; if the shim cached that inner call,
 * the handle-based ibv_dereg_mr would free the MR behind the cache and
 * the next cycle would get the freed MR back (a failed or wrong write).
 *
 * usage: rdma-bypass N
 * Prints "bypass: cycles=N distinct_lkeys=K"; exits non-zero on a failure.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rdma_util.h"

typedef struct ibv_mr *(*reg_fn)(struct ibv_pd *, void *, size_t, int);
typedef struct ibv_mr *(*reg_iova2_fn)(struct ibv_pd *, void *, size_t,
				       uint64_t, unsigned int);
typedef int (*dereg_fn)(struct ibv_mr *);

#define LEN 65536

int main(int argc, char **argv)
{
	struct rdma_dev dev;
	struct rdma_loop loop;
	struct ibv_mr *peer_mr;
	reg_fn h_reg;
	reg_iova2_fn h_reg_iova2;
	dereg_fn h_dereg;
	int n = argc > 1 ? atoi(argv[1]) : 20;
	char *buf, *peer;
	void *h;

	h = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	*(void **)&h_reg = dlvsym(h, "ibv_reg_mr", "IBVERBS_1.1");
	*(void **)&h_reg_iova2 = dlvsym(h, "ibv_reg_mr_iova2", "IBVERBS_1.8");
	*(void **)&h_dereg = dlvsym(h, "ibv_dereg_mr", "IBVERBS_1.1");
	if (!h_reg || !h_reg_iova2 || !h_dereg) {
		fprintf(stderr, "dlvsym failed\n");
		return 1;
	}
	if (rdma_dev_open(&dev, NULL) || rdma_loop_create(&loop, &dev))
		return 1;
	buf = aligned_alloc(4096, LEN);
	peer = aligned_alloc(4096, LEN);
	peer_mr = ibv_reg_mr(dev.pd, peer, LEN,
			     IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
	if (!buf || !peer || !peer_mr)
		return rdma_fail("setup");
	for (int i = 0; i < n; i++) {
		struct ibv_mr *mr;

		memset(buf, 'A' + i % 26, LEN);
		memset(peer, 0, LEN);
		mr = i % 2 ? h_reg_iova2(dev.pd, buf, LEN, (uintptr_t)buf,
					 IBV_ACCESS_LOCAL_WRITE) :
			     h_reg(dev.pd, buf, LEN, IBV_ACCESS_LOCAL_WRITE);
		if (!mr)
			return rdma_fail("ibv_reg_mr (handle)");
		if (rdma_write(&loop, mr, buf, peer_mr, peer, LEN))
			return 1;
		if (memcmp(buf, peer, LEN)) {
			fprintf(stderr, "cycle %d: wrong data\n", i);
			return 1;
		}
		if (h_dereg(mr))
			return rdma_fail("ibv_dereg_mr (handle)");
	}
	if (ibv_dereg_mr(peer_mr))
		return rdma_fail("ibv_dereg_mr");
	rdma_loop_destroy(&loop);
	rdma_dev_close(&dev);
	printf("bypass: cycles=%d ok\n", n);
	return 0;
}
