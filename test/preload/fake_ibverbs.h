/* SPDX-License-Identifier: BSD-2-Clause */
/* Counters of the libibverbs test double (libibverbs.so.1 in this dir). */
#ifndef UMMUSHIM_FAKE_IBVERBS_H
#define UMMUSHIM_FAKE_IBVERBS_H

#include <infiniband/verbs.h>

struct fake_ibv_counts {
	int reg_mr, reg_mr_iova, reg_mr_iova2, reg_dmabuf_mr;
	int dereg_mr, rereg_mr, dealloc_pd, close_device;
	int live_mrs;
	int dead_mr_calls;	/* dereg/rereg of an already deregistered MR */
	unsigned int last_access;	/* of the last ibv_reg_mr_iova2 */
};

extern struct fake_ibv_counts fake_ibv_counts;
/* >= 0: ibv_reg_mr_iova2 first reads a byte from it (a cancellation point). */
extern int fake_ibv_reg_block_fd;
/* Non-NULL: ibv_reg_mr_iova2 calls it first (e.g. to raise a signal). */
extern void (*fake_ibv_reg_hook)(void);
struct ibv_context *fake_ibv_open(void);
/* 1 if @mr is registered, 0 if it was deregistered (or is not an MR). */
int fake_ibv_mr_is_live(const struct ibv_mr *mr);

#endif
