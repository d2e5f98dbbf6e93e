// SPDX-License-Identifier: BSD-2-Clause
/*
 * A minimal stand-in for libibverbs.so.1, for measuring the shim's hit path
 * on a machine without RDMA: one device "fake0", PDs and MRs that are plain
 * heap objects.  Registration does no pinning and no system call, so what a
 * benchmark measures under the shim is the shim's own cost.
 *
 * Like libibverbs 44, the exported ibv_reg_mr and ibv_reg_mr_iova call
 * ibv_reg_mr_iova2 through the PLT, so an interposer sees the same re-entry
 * it sees with the real library.  The version script gives every symbol the
 * version the real library gives it.
 *
 * With FAKEVERBS_STATS=1 it prints its reg/dereg call counts at exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <infiniband/verbs.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#undef ibv_reg_mr
#undef ibv_reg_mr_iova

/* Process-wide call counts (FAKEVERBS_STATS); atomics: callers may thread. */
static atomic_ulong n_reg, n_dereg;
static atomic_uint next_key = 1;

/* The one fake device; a library-wide singleton like the real device list. */
static struct ibv_device fake_device = {
	.node_type = IBV_NODE_CA,
	.transport_type = IBV_TRANSPORT_IB,
	.name = "fake0",
	.dev_name = "uverbs99",
	.dev_path = "/nonexistent/uverbs99",
	.ibdev_path = "/nonexistent/fake0",
};

struct ibv_device **ibv_get_device_list(int *num_devices)
{
	struct ibv_device **list = calloc(2, sizeof(*list));

	if (!list) {
		errno = ENOMEM;
		return NULL;
	}
	list[0] = &fake_device;
	if (num_devices)
		*num_devices = 1;
	return list;
}

void ibv_free_device_list(struct ibv_device **list)
{
	free(list);
}

const char *ibv_get_device_name(struct ibv_device *device)
{
	return device->name;
}

__be64 ibv_get_device_guid(struct ibv_device *device)
{
	(void)device;
	return 0;
}

struct ibv_context *ibv_open_device(struct ibv_device *device)
{
	struct ibv_context *ctx = calloc(1, sizeof(*ctx));

	if (!ctx) {
		errno = ENOMEM;
		return NULL;
	}
	ctx->device = device;
	ctx->cmd_fd = -1;
	ctx->async_fd = -1;
	return ctx;
}

int ibv_close_device(struct ibv_context *context)
{
	free(context);
	return 0;
}

struct ibv_pd *ibv_alloc_pd(struct ibv_context *context)
{
	struct ibv_pd *pd = calloc(1, sizeof(*pd));

	if (!pd) {
		errno = ENOMEM;
		return NULL;
	}
	pd->context = context;
	pd->handle = atomic_fetch_add(&next_key, 1);
	return pd;
}

int ibv_dealloc_pd(struct ibv_pd *pd)
{
	free(pd);
	return 0;
}

struct ibv_mr *ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t length,
				uint64_t iova, unsigned int access)
{
	struct ibv_mr *mr;

	(void)iova;
	(void)access;
	if (!pd || (!addr && length)) {
		errno = EINVAL;
		return NULL;
	}
	mr = calloc(1, sizeof(*mr));
	if (!mr) {
		errno = ENOMEM;
		return NULL;
	}
	mr->context = pd->context;
	mr->pd = pd;
	mr->addr = addr;
	mr->length = length;
	mr->handle = atomic_fetch_add(&next_key, 1);
	mr->lkey = mr->handle;
	mr->rkey = mr->handle;
	atomic_fetch_add(&n_reg, 1);
	return mr;
}

struct ibv_mr *ibv_reg_mr_iova(struct ibv_pd *pd, void *addr, size_t length,
			       uint64_t iova, int access)
{
	return ibv_reg_mr_iova2(pd, addr, length, iova, (unsigned int)access);
}

struct ibv_mr *ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length,
			  int access)
{
	return ibv_reg_mr_iova2(pd, addr, length, (uintptr_t)addr,
				(unsigned int)access);
}

struct ibv_mr *ibv_reg_dmabuf_mr(struct ibv_pd *pd, uint64_t offset,
				 size_t length, uint64_t iova, int fd, int access)
{
	(void)pd; (void)offset; (void)length; (void)iova; (void)fd; (void)access;
	errno = EOPNOTSUPP;
	return NULL;
}

int ibv_rereg_mr(struct ibv_mr *mr, int flags, struct ibv_pd *pd, void *addr,
		 size_t length, int access)
{
	(void)access;
	if (flags & IBV_REREG_MR_CHANGE_TRANSLATION) {
		mr->addr = addr;
		mr->length = length;
	}
	if (flags & IBV_REREG_MR_CHANGE_PD)
		mr->pd = pd;
	return 0;
}

int ibv_dereg_mr(struct ibv_mr *mr)
{
	free(mr);
	atomic_fetch_add(&n_dereg, 1);
	return 0;
}

__attribute__((destructor)) static void fakeverbs_stats(void)
{
	const char *s = getenv("FAKEVERBS_STATS");

	if (s && !strcmp(s, "1"))
		fprintf(stderr, "fakeverbs: reg=%lu dereg=%lu\n",
			atomic_load(&n_reg), atomic_load(&n_dereg));
}
