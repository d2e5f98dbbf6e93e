// SPDX-License-Identifier: BSD-2-Clause
#define _GNU_SOURCE
#include "releaser.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "cache.h"

/* Drains at most this often, so a descriptor that stays readable cannot spin. */
#define MIN_INTERVAL_NS 1000000L	/* 1 ms */
/*
 * How long releaser_start() waits for the thread's allocator set-up.  It
 * only blocks if malloc() waits for a lock the caller holds (an allocator
 * that registers its own memory, say): then the caller must not hang.
 */
#define READY_TIMEOUT_S 5

/*
 * Global: one releaser per process (the shim has one cache), reached from
 * the atexit handler, which takes no argument.
 */
static struct cache *g_cache;
static int g_fd = -1;
static atomic_bool g_stop;	/* exit() has begun: start no release */
/* Posted by the thread once its allocator is set up (see warm_up()). */
static sem_t g_ready;

static void sleep_ns(long ns)
{
	struct timespec t = { 0, ns };

	while (nanosleep(&t, &t) != 0 && errno == EINTR)
		;
}

/*
 * A thread's first allocation makes the allocator map memory for it:
 * glibc reserves a new 128 MiB arena wherever the kernel finds room, then
 * unmaps the parts that are not 64 MiB-aligned.  Done at an arbitrary
 * moment -- the first release frees the MR object inside the real
 * ibv_dereg_mr -- the reservation can land in a hole the application has
 * just unmapped and is about to map again with MAP_FIXED (safe in a
 * single-threaded program, which this thread makes two-threaded); the
 * application's mapping then replaces part of the reservation and the
 * trimming munmap removes it: the application's next access faults
 * (SIGSEGV) or its ibv_reg_mr fails (EFAULT).  So the thread allocates
 * once before releaser_start() returns, inside the application's verbs
 * call and never between its munmap and its mmap; its later (small,
 * short-lived) allocations come from that arena: growing, trimming or
 * freeing it works inside the arena's own reservation and places no new
 * mapping.  Limits: with MALLOC_ARENA_MAX reached the thread shares an
 * arena whose next heap is a new reservation; another allocator (jemalloc,
 * tcmalloc) warms up only what one 64-byte allocation sets up.
 */
static void warm_up(void)
{
	void *volatile p = malloc(64);	/* volatile: not optimised away */

	free(p);
}

static int wait_until_ready(void)
{
	struct timespec deadline;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += READY_TIMEOUT_S;
	while (sem_clockwait(&g_ready, CLOCK_MONOTONIC, &deadline) != 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

static void *run(void *arg)
{
	(void)arg;
	warm_up();
	sem_post(&g_ready);
	while (!atomic_load(&g_stop)) {
		struct pollfd p = { .fd = g_fd, .events = POLLIN };
		int n = poll(&p, 1, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || (p.revents & (POLLERR | POLLNVAL)))
			break;
		if (!(p.revents & POLLIN))
			continue;
		if (!atomic_load(&g_stop))
			cache_release_invalidated(g_cache);
		if (cache_is_broken(g_cache))
			break;
		sleep_ns(MIN_INTERVAL_NS);
	}
	return NULL;
}

/*
 * At exit(), before the libraries' destructors: no release starts from
 * now on.  One in progress is not waited for: exit() never waits for
 * threads, and an application thread may just as well be inside
 * ibv_dereg_mr now; libibverbs stays mapped (the shim pins it,
 * RTLD_NODELETE), and the process's end unpins whatever is left.  A
 * release of a big MR can take seconds (rxe: 2.9 s for 1 GiB), which
 * exit() must not add to every run.  Nothing here is inherited as "in
 * progress" by a forked child either (it has no releaser thread).
 */
static void stop_at_exit(void)
{
	atomic_store(&g_stop, true);
}

int releaser_start(struct cache *c, int wait_fd)
{
	sigset_t all, old;
	pthread_attr_t attr;
	pthread_t t;
	int rc;

	if (g_cache || wait_fd < 0)
		return -EINVAL;
	g_cache = c;
	g_fd = wait_fd;
	if (atexit(stop_at_exit) != 0)
		return -ENOMEM;
	if (sem_init(&g_ready, 0, 0) != 0)
		return -errno;
	sigfillset(&all);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	/* The thread inherits a mask of every signal: none is handled there. */
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&t, &attr, run, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (rc) {
		atomic_store(&g_stop, true);
		return -rc;
	}
	/* The thread places no new mapping from now on (see warm_up()). */
	rc = wait_until_ready();
	if (rc < 0)
		/* It releases nothing once its malloc() returns, but that may map. */
		atomic_store(&g_stop, true);
	return rc;
}
