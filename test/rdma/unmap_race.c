// SPDX-License-Identifier: BSD-2-Clause
/*
 * Two threads race an unmap against a remap + registration of the same
 * addresses, the case where a userfaultfd monitor's UNMAP event is queued
 * only after munmap() has let go of the range (its hit-path probe must
 * catch it; see preload/monitor_uffd.c).  Each iteration:
 *   main:     maps X, fills it with an "old" byte, registers it, RDMA-writes
 *             it to a peer buffer, deregisters (the shim keeps it idle);
 *   unmapper: munmap(X);
 *   main:     maps X again as soon as the address is free
 *             (MAP_FIXED_NOREPLACE until it succeeds), fills it with a
 *             "new" byte, registers, RDMA-writes and checks the peer: the
 *             old byte there means the registration was a stale cached MR.
 *
 * usage: rdma-unmap-race ITERATIONS [--expect-zero] [--hog]
 * Prints "unmap-race: iterations=N stale=S"; with --expect-zero exits 1
 * when S > 0.  --hog adds one thread per online CPU that keeps it busy, so
 * that the shim's userfaultfd reader waits longer for a CPU (as on a
 * loaded node) and the window shows more often.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rdma_util.h"

#define LEN (4 * 4096)
#define MAX_HOGS 64

/* Shared with the unmapper thread. */
static char *_Atomic target;
static atomic_int phase;	/* 0 idle, 1 unmap now, 2 unmapped, 3 exit */

static void *unmapper(void *arg)
{
	(void)arg;
	for (;;) {
		int p;

		while ((p = atomic_load(&phase)) == 0 || p == 2)
			;
		if (p == 3)
			return NULL;
		munmap(atomic_load(&target), LEN);
		atomic_store(&phase, 2);
	}
}

static atomic_bool hog_stop;

static void *hog(void *arg)
{
	volatile unsigned long n = 0;

	(void)arg;
	while (!atomic_load_explicit(&hog_stop, memory_order_relaxed))
		n++;
	return NULL;
}

static char *map_at(char *where)
{
	int flags = MAP_PRIVATE | MAP_ANONYMOUS;

	if (where)
		flags |= MAP_FIXED_NOREPLACE;
	return mmap(where, LEN, PROT_READ | PROT_WRITE, flags, -1, 0);
}

/* Register @buf, write it to the peer, check the peer holds @byte. */
static int write_and_check(struct rdma_loop *l, struct ibv_pd *pd, char *buf,
			   struct ibv_mr *peer_mr, char *peer, char byte,
			   bool *stale)
{
	struct ibv_mr *mr = ibv_reg_mr(pd, buf, LEN, IBV_ACCESS_LOCAL_WRITE);

	if (!mr)
		return rdma_fail("ibv_reg_mr");
	memset(peer, 0, LEN);
	if (rdma_write(l, mr, buf, peer_mr, peer, LEN))
		return -1;
	*stale = peer[0] != byte || peer[LEN - 1] != byte;
	return ibv_dereg_mr(mr) ? rdma_fail("ibv_dereg_mr") : 0;
}

int main(int argc, char **argv)
{
	int iters = argc > 1 ? atoi(argv[1]) : 100;
	bool expect_zero = false, with_hog = false;
	struct rdma_dev dev;
	struct rdma_loop loop;
	struct ibv_mr *peer_mr;
	int stale = 0, n_hogs = 0;
	pthread_t t, h[MAX_HOGS];
	char *peer;

	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--expect-zero") == 0)
			expect_zero = true;
		else if (strcmp(argv[i], "--hog") == 0)
			with_hog = true;
	}
	if (with_hog) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);

		n_hogs = cpus < 1 ? 1 : cpus > MAX_HOGS ? MAX_HOGS : (int)cpus;
	}

	if (rdma_dev_open(&dev, NULL) || rdma_loop_create(&loop, &dev))
		return 1;
	peer = aligned_alloc(4096, LEN);
	peer_mr = peer ? ibv_reg_mr(dev.pd, peer, LEN,
				    IBV_ACCESS_LOCAL_WRITE |
				    IBV_ACCESS_REMOTE_WRITE) : NULL;
	if (!peer_mr || pthread_create(&t, NULL, unmapper, NULL))
		return rdma_fail("setup");
	for (int i = 0; i < n_hogs; i++)
		if (pthread_create(&h[i], NULL, hog, NULL))
			return rdma_fail("pthread_create");
	for (int i = 0; i < iters; i++) {
		char old_byte = (char)('a' + i % 26), new_byte = (char)('A' + i % 26);
		char *x = map_at(NULL), *y;
		bool was_stale;

		if (x == MAP_FAILED)
			return rdma_fail("mmap");
		memset(x, old_byte, LEN);
		if (write_and_check(&loop, dev.pd, x, peer_mr, peer, old_byte,
				    &was_stale))
			return 1;
		if (was_stale) {
			fprintf(stderr, "iteration %d: first write wrong\n", i);
			return 1;
		}
		atomic_store(&target, x);
		atomic_store(&phase, 1);
		while ((y = map_at(x)) == MAP_FAILED)
			;	/* until the unmapper's munmap has freed X */
		memset(y, new_byte, LEN);
		if (write_and_check(&loop, dev.pd, y, peer_mr, peer, new_byte,
				    &was_stale))
			return 1;
		stale += was_stale;
		while (atomic_load(&phase) != 2)
			;
		atomic_store(&phase, 0);
		munmap(y, LEN);
	}
	atomic_store(&phase, 3);
	pthread_join(t, NULL);
	atomic_store(&hog_stop, true);
	for (int i = 0; i < n_hogs; i++)
		pthread_join(h[i], NULL);
	if (ibv_dereg_mr(peer_mr))
		return rdma_fail("ibv_dereg_mr");
	rdma_loop_destroy(&loop);
	rdma_dev_close(&dev);
	printf("unmap-race: iterations=%d stale=%d (CPU hogs: %d)\n", iters,
	       stale, n_hogs);
	return expect_zero && stale ? 1 : 0;
}
