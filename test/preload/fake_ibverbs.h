/* SPDX-License-Identifier: BSD-2-Clause */
/* Counters of the libibverbs test double (libibverbs.so.1 in this dir). */
#ifndef UMMUSHIM_FAKE_IBVERBS_H
#define UMMUSHIM_FAKE_IBVERBS_H

#include <infiniband/verbs.h>

struct fake_ibv_counts {
	int reg_mr, reg_mr_iova, reg_mr_iova2, reg_dmabuf_mr;
	int dereg_mr, rereg_mr, dealloc_pd, close_device;
	int live_mrs;
};

extern struct fake_ibv_counts fake_ibv_counts;
struct ibv_context *fake_ibv_open(void);

#endif
