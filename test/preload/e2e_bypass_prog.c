// SPDX-License-Identifier: BSD-2-Clause
/*
 * An application that reaches libibverbs through its own dlopen handle
 * (as NCCL does): dlopen("…/libibverbs.so.1") + dlvsym of ibv_reg_mr,
 * ibv_reg_mr_iova, ibv_reg_mr_iova2 and ibv_dereg_mr, bypassing any
 * preloaded interposer.  Under the shim, libibverbs' own ibv_reg_mr still
 * calls ibv_reg_mr_iova2 through its GOT; that inner call must never be
 * cached, or the application's handle-based ibv_dereg_mr frees the MR
 * behind the cache and the next registration gets a freed MR.
 *
 * Phase 1 (always): N handle-based reg/dereg cycles of one buffer; every
 * MR must be live when returned and every registration must reach the
 * library.  Phase 2 (only when an interposer is preloaded): the same
 * cycles through the default symbols (what a linked application calls),
 * which the shim caches.  Finally it dlcloses its handle and reports
 * whether libibverbs stays loaded (the shim pins it with RTLD_NODELETE so
 * that its cached function pointers cannot dangle).  Prints
 *   "e2e-bypass: ok cycles=N phase2=yes|no phase2_real_regs=M pinned=yes|no".
 * usage: e2e_bypass_prog PATH/libibverbs.so.1
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "fake_ibverbs.h"

#define CYCLES 20
#define LEN (1 << 16)

typedef struct ibv_mr *(*reg_fn)(struct ibv_pd *, void *, size_t, int);
typedef struct ibv_mr *(*reg_iova_fn)(struct ibv_pd *, void *, size_t,
				      uint64_t, int);
typedef struct ibv_mr *(*reg_iova2_fn)(struct ibv_pd *, void *, size_t,
				       uint64_t, unsigned int);
typedef int (*dereg_fn)(struct ibv_mr *);

struct verbs {
	reg_fn reg;
	reg_iova_fn reg_iova;
	reg_iova2_fn reg_iova2;
	dereg_fn dereg;
};

static int lookup(void *h, struct verbs *v)
{
	*(void **)&v->reg = dlvsym(h, "ibv_reg_mr", "IBVERBS_1.1");
	*(void **)&v->reg_iova = dlvsym(h, "ibv_reg_mr_iova", "IBVERBS_1.7");
	*(void **)&v->reg_iova2 = dlvsym(h, "ibv_reg_mr_iova2", "IBVERBS_1.8");
	*(void **)&v->dereg = dlvsym(h, "ibv_dereg_mr", "IBVERBS_1.1");
	return v->reg && v->reg_iova && v->reg_iova2 && v->dereg ? 0 : -1;
}

static struct ibv_mr *reg_by(const struct verbs *v, int how, struct ibv_pd *pd,
			     char *buf)
{
	switch (how % 3) {
	case 0:
		return v->reg(pd, buf, LEN, IBV_ACCESS_LOCAL_WRITE);
	case 1:
		return v->reg_iova(pd, buf, LEN, (uintptr_t)buf,
				   IBV_ACCESS_LOCAL_WRITE);
	default:
		return v->reg_iova2(pd, buf, LEN, (uintptr_t)buf,
				    IBV_ACCESS_LOCAL_WRITE);
	}
}

/* @n cycles; -1 on the first failure.  *@real_regs: library calls seen. */
static int cycles(const struct verbs *v, struct ibv_pd *pd, char *buf, int n,
		  const struct fake_ibv_counts *counts, int *real_regs,
		  int (*is_live)(const struct ibv_mr *))
{
	int before = counts->reg_mr_iova2;

	for (int i = 0; i < n; i++) {
		struct ibv_mr *mr = reg_by(v, i, pd, buf);

		if (!mr || !is_live(mr)) {
			fprintf(stderr, "cycle %d: %s MR %p\n", i,
				mr ? "deregistered" : "no", (void *)mr);
			return -1;
		}
		if (v->dereg(mr)) {
			fprintf(stderr, "cycle %d: ibv_dereg_mr failed\n", i);
			return -1;
		}
	}
	*real_regs = counts->reg_mr_iova2 - before;
	return 0;
}

int main(int argc, char **argv)
{
	struct ibv_context *(*open_dev)(void);
	struct ibv_pd *(*alloc_pd)(struct ibv_context *);
	int (*is_live)(const struct ibv_mr *);
	const struct fake_ibv_counts *counts;
	struct verbs own, dflt;
	int regs1 = 0, regs2 = 0;
	bool phase2;
	struct ibv_pd *pd;
	char *buf;
	void *h;

	if (argc != 2) {
		fprintf(stderr, "usage: e2e_bypass_prog PATH/libibverbs.so.1\n");
		return 2;
	}
	h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!h || lookup(h, &own)) {
		fprintf(stderr, "dlopen/dlvsym: %s\n", dlerror());
		return 1;
	}
	*(void **)&open_dev = dlsym(h, "fake_ibv_open");
	*(void **)&alloc_pd = dlsym(h, "ibv_alloc_pd");
	*(void **)&is_live = dlsym(h, "fake_ibv_mr_is_live");
	counts = dlsym(h, "fake_ibv_counts");
	if (!open_dev || !alloc_pd || !is_live || !counts)
		return 1;
	pd = alloc_pd(open_dev());
	buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!pd || buf == MAP_FAILED)
		return 1;
	buf[0] = 1;

	if (cycles(&own, pd, buf, CYCLES, counts, &regs1, is_live))
		return 1;
	if (regs1 != CYCLES || counts->dead_mr_calls != 0) {
		fprintf(stderr, "phase 1: %d real registrations for %d calls, %d calls on dead MRs\n",
			regs1, CYCLES, counts->dead_mr_calls);
		return 1;
	}
	/* A preloaded interposer makes the default symbols visible. */
	phase2 = lookup(RTLD_DEFAULT, &dflt) == 0;
	if (phase2 && cycles(&dflt, pd, buf, CYCLES, counts, &regs2, is_live))
		return 1;
	if (counts->dead_mr_calls != 0)
		return 1;
	dlclose(h);
	h = dlopen(argv[1], RTLD_NOW | RTLD_NOLOAD);
	printf("e2e-bypass: ok cycles=%d phase2=%s phase2_real_regs=%d pinned=%s\n",
	       CYCLES, phase2 ? "yes" : "no", regs2, h ? "yes" : "no");
	return 0;
}
