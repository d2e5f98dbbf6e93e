// SPDX-License-Identifier: BSD-2-Clause
/*
 * A test double of libibverbs.so.1: the registration entry points with
 * rdma-core's symbol versions, counting their calls.  Like rdma-core 44,
 * ibv_reg_mr and ibv_reg_mr_iova call ibv_reg_mr_iova2 through the PLT
 * (it is an exported, interposable symbol), so a preloaded shim sees that
 * inner call; like Debian's build it is linked with -z now -z relro, so
 * that GOT slot is read-only after relocation.
 *
 * Deregistered MRs are not freed but poisoned and kept on a list, so that
 * fake_ibv_mr_is_live() can tell a live MR from one handed out after its
 * deregistration (and deregistering one again is counted).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "fake_ibverbs.h"

#undef ibv_reg_mr
#undef ibv_reg_mr_iova

/* Global: the counters are the whole point of this library. */
struct fake_ibv_counts fake_ibv_counts;
/* Global: when >= 0, ibv_reg_mr_iova2 reads one byte from it first. */
int fake_ibv_reg_block_fd = -1;
/* Global: a test's hook, called at the start of ibv_reg_mr_iova2. */
void (*fake_ibv_reg_hook)(void);

#define MR_LIVE 0x4c495645u	/* in mr->handle while registered */
#define MR_DEAD 0xdeadbeefu	/* after ibv_dereg_mr */

/* An MR and the link that keeps it reachable once poisoned (no leak report). */
struct fake_mr_box {
	struct ibv_mr mr;
	struct fake_mr_box *next_dead;
};

/* Global: the deregistered MRs, kept so that late uses are detectable. */
static struct fake_mr_box *dead_mrs;

int fake_ibv_mr_is_live(const struct ibv_mr *mr)
{
	return mr && mr->handle == MR_LIVE;
}

/* Wait for a byte on the block fd (read() is a cancellation point). */
static void maybe_block(void)
{
	char b;

	if (fake_ibv_reg_block_fd < 0)
		return;
	while (read(fake_ibv_reg_block_fd, &b, 1) < 0 && errno == EINTR)
		;
}

struct ibv_context *fake_ibv_open(void)
{
	return calloc(1, sizeof(struct ibv_context));
}

struct ibv_pd *ibv_alloc_pd(struct ibv_context *ctx)
{
	struct ibv_pd *pd = calloc(1, sizeof(*pd));

	if (pd)
		pd->context = ctx;
	return pd;
}

struct ibv_mr *ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t length,
				uint64_t iova, unsigned int access)
{
	static uint32_t next_key = 100;
	struct fake_mr_box *box;
	struct ibv_mr *mr;

	(void)iova;
	__atomic_fetch_add(&fake_ibv_counts.reg_mr_iova2, 1, __ATOMIC_SEQ_CST);
	__atomic_store_n(&fake_ibv_counts.last_access, access, __ATOMIC_SEQ_CST);
	if (fake_ibv_reg_hook)
		fake_ibv_reg_hook();
	maybe_block();
	if (!addr) {
		errno = EFAULT;
		return NULL;
	}
	/* As the kernel's ib_check_mr_access(): remote write needs local. */
	if ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) &&
	    !(access & IBV_ACCESS_LOCAL_WRITE)) {
		errno = EINVAL;
		return NULL;
	}
	box = calloc(1, sizeof(*box));
	if (!box)
		return NULL;
	mr = &box->mr;
	mr->context = pd->context;
	mr->pd = pd;
	mr->addr = addr;
	mr->length = length;
	mr->lkey = mr->rkey = next_key++;
	mr->handle = MR_LIVE;
	fake_ibv_counts.live_mrs++;
	return mr;
}

struct ibv_mr *ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length,
			  int access)
{
	fake_ibv_counts.reg_mr++;
	return ibv_reg_mr_iova2(pd, addr, length, (uintptr_t)addr,
				(unsigned int)access);
}

struct ibv_mr *ibv_reg_mr_iova(struct ibv_pd *pd, void *addr, size_t length,
			       uint64_t iova, int access)
{
	fake_ibv_counts.reg_mr_iova++;
	return ibv_reg_mr_iova2(pd, addr, length, iova, (unsigned int)access);
}

struct ibv_mr *ibv_reg_dmabuf_mr(struct ibv_pd *pd, uint64_t offset,
				 size_t length, uint64_t iova, int fd,
				 int access)
{
	(void)pd;
	(void)offset;
	(void)length;
	(void)iova;
	(void)fd;
	(void)access;
	fake_ibv_counts.reg_dmabuf_mr++;
	errno = EOPNOTSUPP;
	return NULL;
}

int ibv_dereg_mr(struct ibv_mr *mr)
{
	fake_ibv_counts.dereg_mr++;
	if (!mr)
		return EINVAL;
	if (mr->handle != MR_LIVE) {
		fake_ibv_counts.dead_mr_calls++;
		return EINVAL;
	}
	fake_ibv_counts.live_mrs--;
	mr->handle = MR_DEAD;	/* poisoned, never freed (see above) */
	((struct fake_mr_box *)(void *)mr)->next_dead = dead_mrs;
	dead_mrs = (struct fake_mr_box *)(void *)mr;
	return 0;
}

int ibv_rereg_mr(struct ibv_mr *mr, int flags, struct ibv_pd *pd, void *addr,
		 size_t length, int access)
{
	(void)flags;
	(void)access;
	fake_ibv_counts.rereg_mr++;
	if (mr->handle != MR_LIVE)
		fake_ibv_counts.dead_mr_calls++;
	if (flags & IBV_REREG_MR_CHANGE_PD)
		mr->pd = pd;
	if (flags & IBV_REREG_MR_CHANGE_TRANSLATION) {
		mr->addr = addr;
		mr->length = length;
	}
	return 0;
}

int ibv_dealloc_pd(struct ibv_pd *pd)
{
	fake_ibv_counts.dealloc_pd++;
	/* Like the kernel: a PD with registered memory is busy. */
	if (fake_ibv_counts.live_mrs > 0)
		return EBUSY;
	free(pd);
	return 0;
}

int ibv_close_device(struct ibv_context *ctx)
{
	fake_ibv_counts.close_device++;
	free(ctx);
	return 0;
}
