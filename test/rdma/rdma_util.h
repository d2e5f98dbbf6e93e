/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Helpers for the VM tests over Soft-RoCE: a loopback RC queue-pair pair
 * on one device (both ends in this process, RoCE v2 GID index 1) and a
 * blocking RDMA write.  The programs using them are ordinary verbs
 * programs: they are never linked against the shim.
 */
#ifndef UMMUSHIM_RDMA_UTIL_H
#define UMMUSHIM_RDMA_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <infiniband/verbs.h>

#define RDMA_DEV_DEFAULT "rxe0"
#define RDMA_GID_INDEX 1

struct rdma_dev {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	union ibv_gid gid;
	enum ibv_mtu mtu;
};

/* A connected pair: writes posted on qp[0] land at qp[1]'s side. */
struct rdma_loop {
	struct rdma_dev *dev;
	struct ibv_cq *cq;
	struct ibv_qp *qp[2];
};

/* Open @name (NULL: $RDMA_DEV or rxe0) and allocate a PD. 0 or -1. */
int rdma_dev_open(struct rdma_dev *d, const char *name);
void rdma_dev_close(struct rdma_dev *d);

int rdma_loop_create(struct rdma_loop *l, struct rdma_dev *d);
void rdma_loop_destroy(struct rdma_loop *l);

/*
 * RDMA-write @len bytes from @src (in @src_mr) to @dst (in @dst_mr) and
 * wait for the completion.  0, or -1 with a message on stderr.
 */
int rdma_write(struct rdma_loop *l, struct ibv_mr *src_mr, const void *src,
	       struct ibv_mr *dst_mr, void *dst, size_t len);

/* Print "what: strerror(errno)" and return -1. */
int rdma_fail(const char *what);

#endif
