// SPDX-License-Identifier: BSD-2-Clause
#define _GNU_SOURCE
#include "releaser.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "cache.h"

/* Drains at most this often, so a descriptor that stays readable cannot spin. */
#define MIN_INTERVAL_NS 1000000L	/* 1 ms */

/*
 * Global: one releaser per process (the shim has one cache), reached from
 * the atexit handler, which takes no argument.
 */
static struct cache *g_cache;
static int g_fd = -1;
static atomic_bool g_stop;	/* exit() has begun: start no release */

static void sleep_ns(long ns)
{
	struct timespec t = { 0, ns };

	while (nanosleep(&t, &t) != 0 && errno == EINTR)
		;
}

static void *run(void *arg)
{
	(void)arg;
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
	return 0;
}
