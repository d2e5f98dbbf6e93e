// SPDX-License-Identifier: BSD-2-Clause
/*
 * The exported, versioned ibverbs interposers of libummushim.so.
 *
 * Applications linked against libibverbs reference versioned symbols
 * (ibv_reg_mr@IBVERBS_1.1, ...).  This library defines the same names
 * with the same versions (SHIM_INTERPOSER, reals.h), so a preloaded copy
 * is found first.  The real functions are found by reals.c.
 *
 * Re-entrance: libibverbs' own ibv_reg_mr and ibv_reg_mr_iova jump to
 * ibv_reg_mr_iova2 through its PLT, which lands in our ibv_reg_mr_iova2.
 * A thread-local depth counter makes such inner calls go straight to the
 * real function, so that every application call is counted and cached
 * exactly once.
 *
 * Safety: without a working invalidation source, with UMMUSHIM_ENABLE=0,
 * with an invalid setting, or in a forked child, every call passes
 * straight through.  The real library's results (NULL + errno, error
 * codes) are always returned unchanged.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <infiniband/verbs.h>

#include "cache.h"
#include "config.h"
#include "log.h"
#include "monitor.h"
#include "proc.h"
#include "reals.h"
#include "releaser.h"
#include "stats.h"

/* ---- process-wide shim state -------------------------------------------- */

/*
 * Global: one configuration, one cache and one set of counters per
 * process, because the interposed functions are process-wide.
 */
static struct shim_stats g_stats;
static struct shim_config g_cfg;
static pthread_once_t g_init_once = PTHREAD_ONCE_INIT;
static atomic_bool g_initialized;
static _Atomic(struct cache *) g_cache;	/* NULL: pass-through */
static struct monitor *g_monitor;
static const char *g_monitor_name = "none";
static atomic_bool g_forked;		/* a child forked with a cache */
static pid_t g_init_pid;		/* the process that initialised */
static struct cache *g_fork_cache;	/* cache locked across fork() */
/*
 * Orders publishing g_cache against fork(): a cache is either published
 * before the fork (and then locked across it by atfork_prepare) or never
 * seen by the child.
 */
static pthread_mutex_t g_publish_lock = PTHREAD_MUTEX_INITIALIZER;

/* Depth of shim calls on this thread: >0 means "inside the real library". */
static __thread unsigned int shim_depth
	__attribute__((tls_model("initial-exec")));

/*
 * ibv_dereg_mr calls that arrived while this thread was already inside the
 * shim or the real library: from a signal handler that interrupted it, or
 * from libibverbs calling itself (if its GOT could not be patched).  Such
 * a call must not go to the real ibv_dereg_mr when the MR is a cached one
 * (the next hit would return a freed MR), and it cannot take the cache's
 * locks (the interrupted code may hold them), so it is queued here and
 * done by this thread's outermost shim_leave().  Async-signal-safe: the
 * count is only changed by compare-and-swap, and a handler runs to
 * completion before the code it interrupted goes on.
 */
#define DEFERRED_DEREGS 16
static __thread struct ibv_mr *deferred_mr[DEFERRED_DEREGS]
	__attribute__((tls_model("initial-exec")));
static __thread atomic_uint deferred_n
	__attribute__((tls_model("initial-exec")));

static struct ibv_mr *timed_real_reg(int how, const struct cache_key *k)
{
	uint64_t t0 = stats_now_ns();
	struct ibv_mr *mr = call_real_reg(how, k);
	int err = errno;

	stats_add(&g_stats.reg_ns, stats_now_ns() - t0);
	stats_inc(&g_stats.real_regs);
	errno = err;
	return mr;
}

static int timed_real_dereg(struct ibv_mr *mr)
{
	uint64_t t0 = stats_now_ns();
	int rc = call_real_dereg(mr);

	stats_add(&g_stats.dereg_ns, stats_now_ns() - t0);
	stats_inc(&g_stats.real_deregs);
	return rc;
}

static void *ops_reg(void *arg, const struct cache_key *k, int how)
{
	(void)arg;
	return timed_real_reg(how, k);
}

static int ops_dereg(void *arg, void *mr)
{
	(void)arg;
	return timed_real_dereg(mr);
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
static void report_patch_note(void)
{
	static atomic_bool reported;
	const char *note = reals_patch_note();

	if (!atomic_load(&g_initialized) || !note ||
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
	atomic_store(&g_initialized, true);
	resolve_reals();
	report_patch_note();
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
	limits.max_bytes = g_cfg.max_bytes_set ?
			   g_cfg.max_bytes : default_max_bytes(g_cfg.max_bytes);
	c = cache_create(&ops, g_monitor, &limits, &g_stats);
	if (!c) {
		g_monitor->ops->close(g_monitor);
		g_monitor = NULL;
		g_monitor_name = "none";
		log_info("out of memory: caching disabled, all calls pass through");
		return;
	}
	install_atfork();	/* before the cache can be seen */
	pthread_mutex_lock(&g_publish_lock);
	atomic_store(&g_cache, c);
	pthread_mutex_unlock(&g_publish_lock);
	log_info("caching registrations: monitor=%s max_entries=%" PRIu64
		 " max_bytes=%" PRIu64 " subrange=%s", g_monitor_name,
		 limits.max_entries, limits.max_bytes,
		 limits.subrange == CACHE_SUBRANGE_ALL ? "all" :
		 limits.subrange == CACHE_SUBRANGE_LOCAL ? "local" : "off");
	if (g_monitor->ops->wait_fd) {
		int rc = releaser_start(c, g_monitor->ops->wait_fd(g_monitor));

		if (rc < 0)
			log_info("cannot start the releaser thread (%s): invalidated idle MRs are released at the next verbs call",
				 strerror(-rc));
	}
}

/* The cache, initialising on first use; NULL means pass through. */
static struct cache *shim_cache(void)
{
	int old;

	if (atomic_load(&g_forked))
		return NULL;
	if (!atomic_load(&g_initialized)) {
		/* Opens files and devices: not to be cancelled half-way. */
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
		pthread_once(&g_init_once, shim_init);
		pthread_setcancelstate(old, NULL);
	}
	return atomic_load(&g_cache);
}

/* The cache if it already exists (no initialisation). */
static struct cache *shim_cache_if_ready(void)
{
	return atomic_load(&g_cache);
}

/* ---- fork and exit -------------------------------------------------------- */

static void atfork_prepare(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&g_publish_lock);
	g_fork_cache = atomic_load(&g_cache);
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
		atomic_store(&g_forked, true);
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
	if (!atomic_load(&g_initialized) || atomic_load(&g_forked) ||
	    proc_is_other(g_init_pid))
		return;
	if (c)
		cache_report_suppressed(c);
	stats_format(&g_stats, g_monitor_name, line, sizeof(line));
	if (g_cfg.stats)
		log_always("stats", line);
	else
		log_debug("stats: %s", line);
}

/* ---- the interposers ------------------------------------------------------ */

/*
 * Entering the shim from the application (depth 0).  Thread cancellation:
 * the registration and deregistration paths of the cache disable it
 * themselves wherever a lock, a pending entry or queued victims could be
 * left behind (see cache.c; the lock-free-of-cancellation-points hit path
 * does not pay for it).  The other interposers (rereg, dealloc_pd,
 * close_device: @nocancel) disable it from entry to return.  A pending
 * cancel acts at the application's next cancellation point.
 */
struct shim_entry {
	int cancel_state;
	bool nocancel;
};

static void shim_enter(struct shim_entry *s, bool nocancel)
{
	s->nocancel = nocancel;
	if (nocancel)
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &s->cancel_state);
	shim_depth++;
}

/* Queue @mr (see deferred_mr); EAGAIN when the queue is full. */
__attribute__((noinline, cold)) static int defer_dereg(struct ibv_mr *mr)
{
	unsigned int n = atomic_load(&deferred_n);

	do {
		if (n == DEFERRED_DEREGS)
			return EAGAIN;
		deferred_mr[n] = mr;
	} while (!atomic_compare_exchange_weak(&deferred_n, &n, n + 1));
	return 0;
}

/*
 * At depth 1, so that a handler's deregs meanwhile are queued again.  Out
 * of line: shim_leave() is on the hit path.
 */
__attribute__((noinline, cold)) static void run_deferred_deregs(void)
{
	int saved = errno;

	for (;;) {
		unsigned int n = atomic_load(&deferred_n);
		struct ibv_mr *mr;
		struct cache *c;
		int rc;

		if (n == 0)
			break;
		mr = deferred_mr[n - 1];
		if (!atomic_compare_exchange_strong(&deferred_n, &n, n - 1))
			continue;
		c = shim_cache_if_ready();
		rc = c ? cache_dereg(c, mr) : timed_real_dereg(mr);
		if (rc)
			log_warn("ibv_dereg_mr(%p), called from a signal handler or from inside libibverbs and done on return to the shim, failed: %s",
				 (void *)mr, strerror(rc));
	}
	errno = saved;
}

/* Inlined: it is on the hit path. */
static inline __attribute__((always_inline)) void
shim_leave(struct shim_entry *s)
{
	if (__builtin_expect(atomic_load_explicit(&deferred_n,
						  memory_order_relaxed) != 0, 0) &&
	    shim_depth == 1)
		run_deferred_deregs();
	shim_depth--;
	if (s->nocancel)	/* keeps errno */
		pthread_setcancelstate(s->cancel_state, NULL);
}

static struct ibv_mr *shim_register(struct ibv_pd *pd, void *addr,
				    size_t length, uint64_t iova,
				    unsigned int access, int how)
{
	struct cache_key key = {
		.pd = pd,
		.addr = (uintptr_t)addr,
		.length = length,
		.iova = iova,
		.access = access,
	};
	struct shim_entry se;
	struct ibv_mr *mr;
	struct cache *c;
	bool from_app;

	if (shim_depth > 0)	/* called from inside the real library */
		return call_real_reg(how, &key);
	shim_enter(&se, false);
	/* Before shim_cache(): its first run resolves (and patches) too. */
	from_app = call_is_from_application((enum real_id)how);
	c = shim_cache();
	/*
	 * Not cached: on-demand-paging MRs follow the address space by
	 * themselves (and may span it all), degenerate arguments get the
	 * real library's own answer, and a call that may be libibverbs
	 * calling itself (see call_is_from_application()) belongs to an
	 * outer call the shim never saw.
	 */
	if (!c) {
		stats_inc(&g_stats.passthrough);
		mr = timed_real_reg(how, &key);
		log_debug("reg (pass-through) mr=%p addr=%p len=%zu access=%#x",
			  (void *)mr, addr, length, access);
	} else if (!pd || length == 0 || (access & IBV_ACCESS_ON_DEMAND) ||
		   !from_app) {
		/* Not cached, but idle cached MRs still make way on ENOMEM. */
		mr = cache_reg_uncached(c, &key, how);
	} else {
		mr = cache_reg(c, &key, pd->context, how);
	}
	if (!atomic_load(&reals_patched) && reals_internal_unpatched())
		report_patch_note();
	shim_leave(&se);
	return mr;
}

SHIM_INTERPOSER(ibv_reg_mr, struct ibv_mr *, struct ibv_pd *pd, void *addr,
		size_t length, int access)
{
	return shim_register(pd, addr, length, (uintptr_t)addr,
			     (unsigned int)access, REAL_REG_MR);
}

SHIM_INTERPOSER(ibv_reg_mr_iova, struct ibv_mr *, struct ibv_pd *pd,
		void *addr, size_t length, uint64_t iova, int access)
{
	return shim_register(pd, addr, length, iova, (unsigned int)access,
			     REAL_REG_MR_IOVA);
}

SHIM_INTERPOSER(ibv_reg_mr_iova2, struct ibv_mr *, struct ibv_pd *pd,
		void *addr, size_t length, uint64_t iova, unsigned int access)
{
	return shim_register(pd, addr, length, iova, access,
			     REAL_REG_MR_IOVA2);
}

/* NULL, or called while this thread is already inside the shim. */
__attribute__((noinline, cold)) static int dereg_nested(struct ibv_mr *mr)
{
	struct cache *c = shim_cache_if_ready();

	if (mr && c)	/* a signal handler, or libibverbs itself */
		return defer_dereg(mr);
	return call_real_dereg(mr);
}

SHIM_INTERPOSER(ibv_dereg_mr, int, struct ibv_mr *mr)
{
	struct cache *c;
	struct shim_entry se;
	int rc;

	if (!mr || shim_depth > 0)
		return dereg_nested(mr);
	c = shim_cache_if_ready();
	shim_enter(&se, false);
	if (c) {
		rc = cache_dereg(c, mr);
	} else {
		rc = timed_real_dereg(mr);
		log_debug("dereg (pass-through) mr=%p rc=%d", (void *)mr, rc);
	}
	shim_leave(&se);
	return rc;
}

/*
 * A cached MR that several registrations share (refs > 1) is refused with
 * EBUSY: changing its translation, PD or access would change it under the
 * other holders, which asked for the old ones.
 */
SHIM_INTERPOSER(ibv_rereg_mr, int, struct ibv_mr *mr, int flags,
		struct ibv_pd *pd, void *addr, size_t length, int access)
{
	struct cache *c = shim_cache_if_ready();
	rereg_mr_fn f = (rereg_mr_fn)real_fn(REAL_REREG_MR);
	struct shim_entry se;
	int rc;

	if (!f)
		return IBV_REREG_MR_ERR_INPUT;
	if (!c || !mr || shim_depth > 0)
		return f(mr, flags, pd, addr, length, access);
	shim_enter(&se, true);
	if (cache_detach(c, mr) == -EBUSY) {
		log_warn("ibv_rereg_mr(%p): refused (EBUSY), the cached MR is shared by several registrations of the same memory or is a slice of a larger cached region",
			 (void *)mr);
		shim_leave(&se);
		errno = EBUSY;
		return IBV_REREG_MR_ERR_INPUT;
	}
	rc = f(mr, flags, pd, addr, length, access);
	shim_leave(&se);
	return rc;
}

SHIM_INTERPOSER(ibv_dealloc_pd, int, struct ibv_pd *pd)
{
	struct cache *c = shim_cache_if_ready();
	dealloc_pd_fn f = (dealloc_pd_fn)real_fn(REAL_DEALLOC_PD);
	struct shim_entry se;
	int rc;

	if (!f)
		return ENOSYS;
	if (!c || !pd || shim_depth > 0)
		return f(pd);
	shim_enter(&se, true);
	cache_release_pd(c, pd);
	rc = f(pd);
	shim_leave(&se);
	return rc;
}

SHIM_INTERPOSER(ibv_close_device, int, struct ibv_context *ctx)
{
	struct cache *c = shim_cache_if_ready();
	close_device_fn f = (close_device_fn)real_fn(REAL_CLOSE_DEVICE);
	struct shim_entry se;
	int rc;

	if (!f)
		return -1;
	if (!c || !ctx || shim_depth > 0)
		return f(ctx);
	shim_enter(&se, true);
	cache_release_ctx(c, ctx);
	rc = f(ctx);
	if (rc == 0)
		cache_forget_ctx(c, ctx);
	shim_leave(&se);
	return rc;
}
