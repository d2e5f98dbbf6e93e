// SPDX-License-Identifier: BSD-2-Clause
/*
 * The exported, versioned ibverbs interposers of libummushim.so.
 *
 * Applications linked against libibverbs reference versioned symbols
 * (ibv_reg_mr@IBVERBS_1.1, ...).  This library defines the same names
 * with the same versions (.symver below + ummushim.map), so a preloaded
 * copy is found first.  The real functions are looked up with their exact
 * versions at the first call: with dlvsym(RTLD_NEXT, ...), or, when
 * libibverbs was dlopen'ed in a local scope (MPI transport plugins),
 * through dlopen("libibverbs.so.1", RTLD_NOLOAD).
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
#include <dlfcn.h>
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
#include "stats.h"

#define SHIM_EXPORT __attribute__((visibility("default")))

/* ---- the real functions -------------------------------------------------- */

enum real_id {
	REAL_REG_MR,
	REAL_REG_MR_IOVA,
	REAL_REG_MR_IOVA2,
	REAL_DEREG_MR,
	REAL_REREG_MR,
	REAL_DEALLOC_PD,
	REAL_CLOSE_DEVICE,
	REAL_COUNT
};

struct real_fn {
	const char *name;
	const char *version;
	_Atomic(void *) addr;
};

/*
 * Global: the real libibverbs entry points are process-wide facts, looked
 * up once (idempotently, so concurrent first calls are harmless).
 */
static struct real_fn real_fns[REAL_COUNT] = {
	[REAL_REG_MR] = { "ibv_reg_mr", "IBVERBS_1.1", NULL },
	[REAL_REG_MR_IOVA] = { "ibv_reg_mr_iova", "IBVERBS_1.7", NULL },
	[REAL_REG_MR_IOVA2] = { "ibv_reg_mr_iova2", "IBVERBS_1.8", NULL },
	[REAL_DEREG_MR] = { "ibv_dereg_mr", "IBVERBS_1.1", NULL },
	[REAL_REREG_MR] = { "ibv_rereg_mr", "IBVERBS_1.1", NULL },
	[REAL_DEALLOC_PD] = { "ibv_dealloc_pd", "IBVERBS_1.1", NULL },
	[REAL_CLOSE_DEVICE] = { "ibv_close_device", "IBVERBS_1.1", NULL },
};

static void *lookup_real(const struct real_fn *r)
{
	void *p = dlvsym(RTLD_NEXT, r->name, r->version);

	if (!p) {
		(void)dlerror();	/* leave no error behind for the app */
		/* libibverbs may live in a local scope (dlopen'ed plugin). */
		void *h = dlopen("libibverbs.so.1", RTLD_NOLOAD | RTLD_LAZY);

		if (h) {
			p = dlvsym(h, r->name, r->version);
			dlclose(h);
		}
		(void)dlerror();
	}
	return p;
}

/* The real function, or NULL with errno = ENOSYS (logged once per name). */
static void *real(enum real_id id)
{
	static atomic_bool reported[REAL_COUNT];
	struct real_fn *r = &real_fns[id];
	void *p = atomic_load_explicit(&r->addr, memory_order_acquire);

	if (p)
		return p;
	p = lookup_real(r);
	if (p) {
		atomic_store_explicit(&r->addr, p, memory_order_release);
		return p;
	}
	if (!atomic_exchange(&reported[id], true))
		log_error("cannot find the real %s@%s in libibverbs", r->name,
			  r->version);
	errno = ENOSYS;
	return NULL;
}

typedef struct ibv_mr *(*reg_mr_fn)(struct ibv_pd *, void *, size_t, int);
typedef struct ibv_mr *(*reg_mr_iova_fn)(struct ibv_pd *, void *, size_t,
					 uint64_t, int);
typedef struct ibv_mr *(*reg_mr_iova2_fn)(struct ibv_pd *, void *, size_t,
					  uint64_t, unsigned int);
typedef int (*dereg_mr_fn)(struct ibv_mr *);
typedef int (*rereg_mr_fn)(struct ibv_mr *, int, struct ibv_pd *, void *,
			   size_t, int);
typedef int (*dealloc_pd_fn)(struct ibv_pd *);
typedef int (*close_device_fn)(struct ibv_context *);

/* Call the real entry point @how (enum real_id) the application called. */
static struct ibv_mr *call_real_reg(int how, const struct cache_key *k)
{
	void *f = real((enum real_id)how);

	if (!f)
		return NULL;
	switch (how) {
	case REAL_REG_MR:
		return ((reg_mr_fn)f)(k->pd, (void *)k->addr, k->length,
				      (int)k->access);
	case REAL_REG_MR_IOVA:
		return ((reg_mr_iova_fn)f)(k->pd, (void *)k->addr, k->length,
					   k->iova, (int)k->access);
	default:
		return ((reg_mr_iova2_fn)f)(k->pd, (void *)k->addr, k->length,
					    k->iova, k->access);
	}
}

static int call_real_dereg(struct ibv_mr *mr)
{
	dereg_mr_fn f = (dereg_mr_fn)real(REAL_DEREG_MR);

	return f ? f(mr) : ENOSYS;
}

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
static atomic_bool g_forked;		/* we are a forked child */
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

static void shim_init(void)
{
	static const struct cache_ops ops = {
		.reg = ops_reg,
		.dereg = ops_dereg,
	};
	struct cache_limits limits;
	struct cache *c;
	char why[256];

	config_parse(&g_cfg, env_get);
	log_init(g_cfg.log_level, g_cfg.log_file);
	for (int i = 0; i < g_cfg.n_errors; i++)
		log_error("%s", g_cfg.errors[i]);
	atomic_store(&g_initialized, true);
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
	pthread_mutex_lock(&g_publish_lock);
	atomic_store(&g_cache, c);
	pthread_mutex_unlock(&g_publish_lock);
	log_info("caching registrations: monitor=%s max_entries=%" PRIu64
		 " max_bytes=%" PRIu64, g_monitor_name, limits.max_entries,
		 limits.max_bytes);
}

/* The cache, initialising on first use; NULL means pass through. */
static struct cache *shim_cache(void)
{
	if (atomic_load(&g_forked))
		return NULL;
	pthread_once(&g_init_once, shim_init);
	return atomic_load(&g_cache);
}

/* The cache if it already exists (no initialisation). */
static struct cache *shim_cache_if_ready(void)
{
	return atomic_load(&g_cache);
}

/* ---- fork and exit -------------------------------------------------------- */

static void atfork_prepare(void)
{
	pthread_mutex_lock(&g_publish_lock);
	g_fork_cache = atomic_load(&g_cache);
	if (g_fork_cache)
		cache_fork_prepare(g_fork_cache);
}

static void atfork_parent(void)
{
	if (g_fork_cache)
		cache_fork_parent(g_fork_cache);
	pthread_mutex_unlock(&g_publish_lock);
}

static void atfork_child(void)
{
	atomic_store(&g_forked, true);
	if (g_fork_cache)
		cache_fork_child(g_fork_cache);
	pthread_mutex_unlock(&g_publish_lock);
}

__attribute__((constructor)) static void shim_load(void)
{
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* Only reads atomics and writes one line: safe while other threads run. */
__attribute__((destructor)) static void shim_unload(void)
{
	char line[512];

	if (!atomic_load(&g_initialized) || atomic_load(&g_forked))
		return;
	stats_format(&g_stats, g_monitor_name, line, sizeof(line));
	if (g_cfg.stats)
		log_always("stats", line);
	else
		log_debug("stats: %s", line);
}

/* ---- the interposers ------------------------------------------------------ */

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
	struct ibv_mr *mr;
	struct cache *c;

	if (shim_depth > 0)	/* called from inside the real library */
		return call_real_reg(how, &key);
	shim_depth++;
	c = shim_cache();
	/*
	 * Not cached: on-demand-paging MRs follow the address space by
	 * themselves (and may span it all), and degenerate arguments get
	 * the real library's own answer.
	 */
	if (!c || !pd || length == 0 || (access & IBV_ACCESS_ON_DEMAND)) {
		stats_inc(&g_stats.passthrough);
		mr = timed_real_reg(how, &key);
		log_debug("reg (pass-through) mr=%p addr=%p len=%zu access=%#x",
			  (void *)mr, addr, length, access);
	} else {
		mr = cache_reg(c, &key, pd->context, how);
	}
	shim_depth--;
	return mr;
}

SHIM_EXPORT struct ibv_mr *shim_ibv_reg_mr(struct ibv_pd *pd, void *addr,
					   size_t length, int access)
{
	return shim_register(pd, addr, length, (uintptr_t)addr,
			     (unsigned int)access, REAL_REG_MR);
}
__asm__(".symver shim_ibv_reg_mr, ibv_reg_mr@@IBVERBS_1.1");

SHIM_EXPORT struct ibv_mr *shim_ibv_reg_mr_iova(struct ibv_pd *pd, void *addr,
						size_t length, uint64_t iova,
						int access)
{
	return shim_register(pd, addr, length, iova, (unsigned int)access,
			     REAL_REG_MR_IOVA);
}
__asm__(".symver shim_ibv_reg_mr_iova, ibv_reg_mr_iova@@IBVERBS_1.7");

SHIM_EXPORT struct ibv_mr *shim_ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr,
						 size_t length, uint64_t iova,
						 unsigned int access)
{
	return shim_register(pd, addr, length, iova, access,
			     REAL_REG_MR_IOVA2);
}
__asm__(".symver shim_ibv_reg_mr_iova2, ibv_reg_mr_iova2@@IBVERBS_1.8");

SHIM_EXPORT int shim_ibv_dereg_mr(struct ibv_mr *mr)
{
	struct cache *c = shim_cache_if_ready();
	int rc;

	if (shim_depth > 0 || !mr)
		return call_real_dereg(mr);
	shim_depth++;
	if (c) {
		rc = cache_dereg(c, mr);
	} else {
		rc = timed_real_dereg(mr);
		log_debug("dereg (pass-through) mr=%p rc=%d", (void *)mr, rc);
	}
	shim_depth--;
	return rc;
}
__asm__(".symver shim_ibv_dereg_mr, ibv_dereg_mr@@IBVERBS_1.1");

SHIM_EXPORT int shim_ibv_rereg_mr(struct ibv_mr *mr, int flags,
				  struct ibv_pd *pd, void *addr, size_t length,
				  int access)
{
	struct cache *c = shim_cache_if_ready();
	rereg_mr_fn f = (rereg_mr_fn)real(REAL_REREG_MR);

	if (!f)
		return IBV_REREG_MR_ERR_INPUT;
	if (c && mr && shim_depth == 0)
		cache_detach(c, mr);
	return f(mr, flags, pd, addr, length, access);
}
__asm__(".symver shim_ibv_rereg_mr, ibv_rereg_mr@@IBVERBS_1.1");

SHIM_EXPORT int shim_ibv_dealloc_pd(struct ibv_pd *pd)
{
	struct cache *c = shim_cache_if_ready();
	dealloc_pd_fn f = (dealloc_pd_fn)real(REAL_DEALLOC_PD);

	if (!f)
		return ENOSYS;
	if (c && pd && shim_depth == 0) {
		shim_depth++;
		cache_release_pd(c, pd);
		shim_depth--;
	}
	return f(pd);
}
__asm__(".symver shim_ibv_dealloc_pd, ibv_dealloc_pd@@IBVERBS_1.1");

SHIM_EXPORT int shim_ibv_close_device(struct ibv_context *ctx)
{
	struct cache *c = shim_cache_if_ready();
	close_device_fn f = (close_device_fn)real(REAL_CLOSE_DEVICE);
	int rc;

	if (!f)
		return -1;
	if (!c || !ctx || shim_depth > 0)
		return f(ctx);
	shim_depth++;
	cache_release_ctx(c, ctx);
	rc = f(ctx);
	if (rc == 0)
		cache_forget_ctx(c, ctx);
	shim_depth--;
	return rc;
}
__asm__(".symver shim_ibv_close_device, ibv_close_device@@IBVERBS_1.1");
