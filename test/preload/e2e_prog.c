// SPDX-License-Identifier: BSD-2-Clause
/*
 * An unmodified verbs program, linked against the libibverbs test double
 * and run by e2e.sh with and without the shim preloaded.  It registers
 * through every route verbs.h offers (ibv_reg_mr with a constant access,
 * which calls ibv_reg_mr@IBVERBS_1.1; with a variable one, which calls
 * ibv_reg_mr_iova2@IBVERBS_1.8; ibv_reg_mr_iova) and checks that the
 * libibverbs entry points ran exactly once per call and that errors come
 * back unchanged.  Prints "e2e: ok app_regs=N app_deregs=M" on success.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_ibverbs.h"

#define CYCLES 10

static int failures;

#define CHECK(cond)                                                       \
	do {                                                              \
		if (!(cond)) {                                            \
			fprintf(stderr, "e2e: %s:%d: check failed: %s\n", \
				__FILE__, __LINE__, #cond);               \
			failures++;                                       \
		}                                                         \
	} while (0)

/* Not a compile-time constant: forces the ibv_reg_mr_iova2 route. */
static volatile int variable_access = IBV_ACCESS_LOCAL_WRITE;

int main(void)
{
	static char buf[8192] __attribute__((aligned(4096)));
	struct ibv_context *ctx = fake_ibv_open();
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	struct fake_ibv_counts *c = &fake_ibv_counts;
	int app_regs = 0, app_deregs = 0;
	struct ibv_mr *mr;

	CHECK(ctx && pd);
	for (int i = 0; i < CYCLES; i++) {
		mr = ibv_reg_mr(pd, buf, 4096, IBV_ACCESS_LOCAL_WRITE);
		CHECK(mr && mr->addr == buf && mr->pd == pd);
		app_regs++;
		CHECK(ibv_dereg_mr(mr) == 0);
		app_deregs++;
	}
	CHECK(c->reg_mr == CYCLES && c->reg_mr_iova2 == CYCLES);

	for (int i = 0; i < CYCLES; i++) {
		mr = ibv_reg_mr(pd, buf, 4096, variable_access);
		CHECK(mr != NULL);
		app_regs++;
		CHECK(ibv_dereg_mr(mr) == 0);
		app_deregs++;
	}
	/* The variable-access route skips ibv_reg_mr altogether. */
	CHECK(c->reg_mr == CYCLES && c->reg_mr_iova2 == 2 * CYCLES);

	for (int i = 0; i < CYCLES; i++) {
		mr = ibv_reg_mr_iova(pd, buf, 4096, 0x1000,
				     IBV_ACCESS_LOCAL_WRITE);
		CHECK(mr != NULL);
		app_regs++;
		CHECK(ibv_dereg_mr(mr) == 0);
		app_deregs++;
	}
	CHECK(c->reg_mr_iova == CYCLES && c->reg_mr_iova2 == 3 * CYCLES);

	/* Errors come back unchanged. */
	errno = 0;
	mr = ibv_reg_mr(pd, NULL, 4096, IBV_ACCESS_LOCAL_WRITE);
	app_regs++;
	CHECK(mr == NULL && errno == EFAULT);
	errno = 0;
	mr = ibv_reg_mr(pd, NULL, 4096, variable_access);
	app_regs++;
	CHECK(mr == NULL && errno == EFAULT);
	CHECK(c->reg_mr_iova2 == 3 * CYCLES + 2);

	/* dmabuf is not interposed: it goes straight to the library. */
	errno = 0;
	CHECK(ibv_reg_dmabuf_mr(pd, 0, 4096, 0, -1, 0) == NULL &&
	      errno == EOPNOTSUPP);
	CHECK(c->reg_dmabuf_mr == 1);

	/* rereg, and a busy PD, are the library's business. */
	mr = ibv_reg_mr(pd, buf, 8192, IBV_ACCESS_LOCAL_WRITE);
	app_regs++;
	CHECK(mr != NULL);
	CHECK(ibv_rereg_mr(mr, IBV_REREG_MR_CHANGE_TRANSLATION, pd, buf, 4096,
			   IBV_ACCESS_LOCAL_WRITE) == 0);
	CHECK(c->rereg_mr == 1);
	CHECK(ibv_dealloc_pd(pd) == EBUSY);
	CHECK(ibv_dereg_mr(mr) == 0);
	app_deregs++;
	CHECK(ibv_dealloc_pd(pd) == 0);
	CHECK(ibv_close_device(ctx) == 0);
	CHECK(c->dealloc_pd == 2 && c->close_device == 1);
	CHECK(c->dereg_mr == app_deregs && c->live_mrs == 0);

	if (failures) {
		fprintf(stderr, "e2e: %d checks failed\n", failures);
		return 1;
	}
	printf("e2e: ok app_regs=%d app_deregs=%d\n", app_regs, app_deregs);
	return 0;
}
