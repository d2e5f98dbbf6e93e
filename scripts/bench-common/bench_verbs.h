/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Verbs helpers of the registration benchmarks (regbench, perop): opening
 * a device by name, and a loopback RC queue-pair pair on one port (both
 * ends in this process, connected over the port's own GID; Soft-RoCE loops
 * the traffic back internally).  Messages go to stderr prefixed with the
 * caller's program name @prog.
 */
#ifndef UMMUNOT_BENCH_VERBS_H
#define UMMUNOT_BENCH_VERBS_H

#include <stdbool.h>
#include <infiniband/verbs.h>

/* Open device @name, or the first device when @name is NULL. */
struct ibv_context *bench_open_device(const char *prog, const char *name);

/* A connected pair: writes posted on qp[0] land at qp[1]'s side. */
struct bench_loop {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct ibv_qp *qp[2];
	union ibv_gid gid;
	enum ibv_mtu mtu;
	unsigned port;
	unsigned gid_index;
};

/*
 * Open @device, allocate a PD, a CQ and two RC QPs, and bring both to RTS
 * connected to each other through GID @gid_index of @port.  On failure the
 * caller still calls bench_loop_teardown() for what was set up.
 */
bool bench_loop_setup(const char *prog, struct bench_loop *l, const char *device,
		      unsigned port, unsigned gid_index);
void bench_loop_teardown(struct bench_loop *l);

#endif
