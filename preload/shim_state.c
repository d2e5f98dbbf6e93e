// SPDX-License-Identifier: BSD-2-Clause
/*
 * The shim's process-wide state (shim_state.h): initialisation at the
 * first verbs call (configuration, the monitor chosen by
 * UMMUSHIM_MONITOR, the cache, the releaser thread), the fork hooks, the
 * timed real calls and the statistics line at exit.
 */
#define _GNU_SOURCE
#include "shim_state.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "config.h"
#include "dereg_defer.h"
#include "log.h"
#include "monitor.h"
#include "proc.h"
#include "reals.h"
#include "releaser.h"

/*
 * Global: one configuration, one cache and one set of counters per
 * process, because the interposed functions are process-wide.
 */
struct shim_stats shim_stats;
static struct shim_config g_cfg;
static pthread_once_t g_init_once = PTHREAD_ONCE_INIT;
atomic_bool shim_initialized;
_Atomic(struct cache *) shim_the_cache;	/* NULL: pass-through */
static struct monitor *g_monitor;
static const char *g_monitor_name = "none";
atomic_bool shim_forked;		/* a child forked with a cache */
static pid_t g_init_pid;		/* the process that initialised */
static struct cache *g_fork_cache;	/* cache locked across fork() */
/*
 * Orders publishing the cache against fork(): a cache is either published
 * before the fork (and then locked across it by atfork_prepare) or never
 * seen by the child.
 */
static pthread_mutex_t g_publish_lock = PTHREAD_MUTEX_INITIALIZER;

struct ibv_mr *shim_timed_reg(int how, const struct cache_key *k)
{
	uint64_t t0 = stats_now_ns();
	struct ibv_mr *mr = call_real_reg(how, k);
	int err = errno;

	stats_add(&shim_stats.reg_ns, stats_now_ns() - t0);
	stats_inc(&shim_stats.real_regs);
	errno = err;
	return mr;
}

int shim_timed_dereg(struct ibv_mr *mr)
{
	uint64_t t0 = stats_now_ns();
	int rc = call_real_dereg(mr);

	stats_add(&shim_stats.dereg_ns, stats_now_ns() - t0);
	stats_inc(&shim_stats.real_deregs);
	return rc;
}

static void *ops_reg(void *arg, const struct cache_key *k, int how)
{
	(void)arg;
	return shim_timed_reg(how, k);
}

static int ops_dereg(void *arg, void *mr)
{
	(void)arg;
	return shim_timed_dereg(mr);
}

/*
 * A containment hit's MR: the region's (context, pd, handle, lkey, rkey)
 * with the address and length the application asked for.
 */
static void ops_slice_init(void *slice, const void *region_mr,
			   const struct cache_key *k)
{
	struct ibv_mr *mr = slice;

	*mr = *(const struct ibv_mr *)region_mr;
	mr->addr = (void *)k->addr;
	mr->length = k->length;
}

/* Access that lets a peer in (a memory window bound to the MR, too). */
#define REMOTE_ACCESS (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | \
		       IBV_ACCESS_REMOTE_ATOMIC | IBV_ACCESS_MW_BIND)

/*
 * Access bits that only grant rights, which UMMUSHIM_SUBRANGE=all may
 * widen (a request served by a region registered with more of them, as
 * UCX's and libfabric's caches register every MR with all of them).  The
 * others change how the memory is registered (on-demand paging,
 * zero-based addresses, huge pages, relaxed ordering) or are unknown to
 * this build: never widened.
 */
#define WIDENABLE_RIGHTS (IBV_ACCESS_LOCAL_WRITE | REMOTE_ACCESS)

static enum cache_subrange cache_subrange_of(enum config_subrange s)
{
	switch (s) {
	case CONFIG_SUBRANGE_ALL:
		return CACHE_SUBRANGE_ALL;
	case CONFIG_SUBRANGE_LOCAL:
		return CACHE_SUBRANGE_LOCAL;
	default:
		return CACHE_SUBRANGE_OFF;
	}
}

/*
 * Invalidation sources, tried in this order by UMMUSHIM_MONITOR=auto.
 * A new backend is one more line here.
 */
static const struct backend {
	const char *name;
	struct monitor *(*open)(void);
} backends[] = {
	{ "ummunot", monitor_ummunot_open },
	{ "uffd", monitor_uffd_open },
};

#define N_BACKENDS (sizeof(backends) / sizeof(backends[0]))

/* Open the monitor named @choice; on failure explain why in @why. */
static struct monitor *open_monitor(const char *choice, char *why,
				    size_t size)
{
	size_t used = 0;
	bool known = false;

	why[0] = '\0';
	if (strcmp(choice, "none") == 0) {
		snprintf(why, size, "UMMUSHIM_MONITOR=none");
		return NULL;
	}
	for (size_t i = 0; i < N_BACKENDS; i++) {
		struct monitor *m;

		if (strcmp(choice, "auto") != 0 &&
		    strcmp(choice, backends[i].name) != 0)
			continue;
		known = true;
		m = backends[i].open();
		if (m) {
			g_monitor_name = backends[i].name;
			return m;
		}
		used += (size_t)snprintf(why + used, size - used, "%s%s: %s",
					 used ? "; " : "", backends[i].name,
					 strerror(errno));
		if (used >= size)
			used = size - 1;
	}
	if (!known)
		snprintf(why, size, "monitor '%s' is not available in this build",
			 choice);
	return NULL;
}

/* Cap the default pinned-bytes limit by half of RLIMIT_MEMLOCK. */
static uint64_t default_max_bytes(uint64_t configured)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    (uint64_t)rl.rlim_cur / 2 < configured && rl.rlim_cur / 2 > 0)
		return (uint64_t)rl.rlim_cur / 2;
	return configured;
}

static const char *env_get(const char *name)
{
	return getenv(name);
}

/* The outcome of resolve_reals(), once, at info level (after log_init). */
void shim_report_patch_note(void)
{
	static atomic_bool reported;
	const char *note = reals_patch_note();

	if (!atomic_load(&shim_initialized) || !note ||
	    atomic_exchange(&reported, true))
		return;
	log_info("%s", note);
}

static void install_atfork(void);

static void shim_init(void)
{
	static const struct cache_ops ops = {
		.reg = ops_reg,
		.dereg = ops_dereg,
		.slice_size = sizeof(struct ibv_mr),
		.slice_init = ops_slice_init,
	};
	struct cache_limits limits;
	struct cache *c;
	char why[256];

	g_init_pid = proc_pid();
	config_parse(&g_cfg, env_get);
	log_init(g_cfg.log_level, g_cfg.log_file);
	for (int i = 0; i < g_cfg.n_errors; i++)
		log_error("%s", g_cfg.errors[i]);
	atomic_store(&shim_initialized, true);
	resolve_reals();
	shim_report_patch_note();
	if (!g_cfg.valid)
		return;
	if (!g_cfg.enable) {
		log_info("UMMUSHIM_ENABLE=0: caching disabled, all calls pass through");
		return;
	}
	g_monitor = open_monitor(g_cfg.monitor, why, sizeof(why));
	if (!g_monitor) {
		log_info("no working invalidation source (%s): caching disabled, all calls pass through",
			 why);
		return;
	}
	limits.max_entries = g_cfg.max_entries;
	limits.subrange = cache_subrange_of(g_cfg.subrange);
	limits.remote_access = REMOTE_ACCESS;
	limits.rights = WIDENABLE_RIGHTS;
	limits.local_write = IBV_ACCESS_LOCAL_WRITE;
	limits.need_local_write = IBV_ACCESS_REMOTE_WRITE |
				  IBV_ACCESS_REMOTE_ATOMIC;
	limits.max_bytes = g_cfg.max_bytes_set ?
			   g_cfg.max_bytes : default_max_bytes(g_cfg.max_bytes);
	c = cache_create(&ops, g_monitor, &limits, &shim_stats);
	if (!c) {
		int err = errno;

		g_monitor->ops->close(g_monitor);
		g_monitor = NULL;
		g_monitor_name = "none";
		log_info("cannot create the cache (%s): caching disabled, all calls pass through",
			 strerror(err));
		return;
	}
	install_atfork();	/* before the cache can be seen */
	pthread_mutex_lock(&g_publish_lock);
	atomic_store(&shim_the_cache, c);
	pthread_mutex_unlock(&g_publish_lock);
	log_info("caching registrations: monitor=%s max_entries=%" PRIu64
		 " max_bytes=%" PRIu64 " subrange=%s", g_monitor_name,
		 limits.max_entries, limits.max_bytes,
		 limits.subrange == CACHE_SUBRANGE_ALL ? "all" :
		 limits.subrange == CACHE_SUBRANGE_LOCAL ? "local" : "off");
	if (g_monitor->ops->wait_fd) {
		int rc = releaser_start(c, g_monitor->ops->wait_fd(g_monitor));

		if (rc == -ETIMEDOUT)
			log_warn("the releaser thread's malloc() blocked for 5 s (an allocator lock held across ibv_reg_mr?): invalidated idle MRs are released at the next verbs call, and the thread may still map memory when its malloc() returns");
		else if (rc < 0)
			log_info("cannot start the releaser thread (%s): invalidated idle MRs are released at the next verbs call",
				 strerror(-rc));
	}
}

void shim_init_once(void)
{
	int old;

	/* Opens files and devices: not to be cancelled half-way. */
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	pthread_once(&g_init_once, shim_init);
	pthread_setcancelstate(old, NULL);
}

/* ---- fork and exit -------------------------------------------------------- */

static void atfork_prepare(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&g_publish_lock);
	g_fork_cache = atomic_load(&shim_the_cache);
	if (g_fork_cache)
		cache_fork_prepare(g_fork_cache);
}

static void atfork_parent(void *arg)
{
	(void)arg;
	if (g_fork_cache)
		cache_fork_parent(g_fork_cache);
	pthread_mutex_unlock(&g_publish_lock);
}

/*
 * A child of a process that had a cache passes through (the MRs and the
 * monitor are the parent's); a child forked before the parent made one
 * (pre-fork servers, Python multiprocessing) initialises its own at its
 * first verbs call.
 */
static void atfork_child(void *arg)
{
	(void)arg;
	if (g_fork_cache) {
		atomic_store(&shim_forked, true);
		cache_fork_child(g_fork_cache);
	}
	pthread_mutex_unlock(&g_publish_lock);
}

/* Global: the process's fork hooks, registered once, never removed. */
static struct proc_fork_hooks g_fork_hooks = {
	.prepare = atfork_prepare,
	.parent = atfork_parent,
	.child = atfork_child,
};

/* Idempotent; shim_init() calls it before publishing the cache. */
static void install_atfork(void)
{
	dereg_defer_install_fork_hook();	/* the parent's queued MRs */
	proc_fork_hooks_add(&g_fork_hooks);
}

/*
 * At load: the fork handlers, and, when libibverbs is already loaded
 * (linked by the application), its internal calls are rebound now,
 * before any application thread can be inside it.
 */
__attribute__((constructor)) static void shim_load(void)
{
	install_atfork();
	resolve_reals();
}

/* Only reads atomics and writes one line: safe while other threads run. */
__attribute__((destructor)) static void shim_unload(void)
{
	struct cache *c = shim_cache_if_ready();
	char line[768];

	/* A child (also one made without fork handlers) prints nothing. */
	if (!atomic_load(&shim_initialized) || atomic_load(&shim_forked) ||
	    proc_is_other(g_init_pid))
		return;
	if (c)
		cache_report_suppressed(c);
	stats_format(&shim_stats, g_monitor_name, line, sizeof(line));
	if (g_cfg.stats)
		log_always("stats", line);
	else
		log_debug("stats: %s", line);
}
