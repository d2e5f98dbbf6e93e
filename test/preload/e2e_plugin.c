// SPDX-License-Identifier: BSD-2-Clause
/*
 * A plugin linked against the libibverbs test double and dlopen'ed with
 * RTLD_LOCAL by e2e_dlopen_prog, the way MPI transports (UCX, libfabric)
 * load libibverbs: then libibverbs is not in the global scope, and the
 * shim must still find the real functions.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>

#include "fake_ibverbs.h"

static volatile int access_var = IBV_ACCESS_LOCAL_WRITE;

__attribute__((visibility("default"))) int plugin_run(void)
{
	static char buf[4096] __attribute__((aligned(4096)));
	struct ibv_context *ctx = fake_ibv_open();
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	int regs = 0;

	for (int i = 0; i < 5; i++) {
		/* UCX and libfabric take this route (non-constant access). */
		struct ibv_mr *mr = ibv_reg_mr(pd, buf, sizeof(buf), access_var);

		if (!mr) {
			fprintf(stderr, "plugin: ibv_reg_mr: %d\n", errno);
			return -1;
		}
		regs++;
		if (ibv_dereg_mr(mr))
			return -1;
	}
	if (fake_ibv_counts.reg_mr_iova2 != regs ||
	    fake_ibv_counts.dereg_mr != regs) {
		fprintf(stderr, "plugin: the library saw %d regs, %d deregs\n",
			fake_ibv_counts.reg_mr_iova2, fake_ibv_counts.dereg_mr);
		return -1;
	}
	if (ibv_dealloc_pd(pd) || ibv_close_device(ctx))
		return -1;
	return regs;
}
