// SPDX-License-Identifier: BSD-2-Clause
/*
 * The exported, versioned ibverbs interposers of libummushim.so.
 *
 * Applications linked against libibverbs reference versioned symbols
 * (ibv_reg_mr@IBVERBS_1.1, ...).  This library defines the same names
 * with the same versions (SHIM_INTERPOSER below + ummushim.map), so a preloaded
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
#include "gotpatch.h"
#include "log.h"
#include "monitor.h"
#include "proc.h"
#include "releaser.h"
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

/*
 * Each interposed symbol's libibverbs version, written only here: the
 * real-function table below looks the real one up with it (dlvsym), and
 * SHIM_INTERPOSER() gives the shim's definition the same version
 * (.symver).  ummushim.map declares the version nodes and exports ibv_*.
 */
#define SHIM_VERSION_ibv_reg_mr		"IBVERBS_1.1"
#define SHIM_VERSION_ibv_reg_mr_iova	"IBVERBS_1.7"
#define SHIM_VERSION_ibv_reg_mr_iova2	"IBVERBS_1.8"
#define SHIM_VERSION_ibv_dereg_mr	"IBVERBS_1.1"
#define SHIM_VERSION_ibv_rereg_mr	"IBVERBS_1.1"
#define SHIM_VERSION_ibv_dealloc_pd	"IBVERBS_1.1"
#define SHIM_VERSION_ibv_close_device	"IBVERBS_1.1"

/*
 * Define the interposer of @name (returning @ret, taking the rest) as
 * shim_<name>, exported as <name>@@<its version>: the default version, so
 * the application's references (versioned or not) bind to it.
 */
#define SHIM_INTERPOSER(name, ret, ...)					\
	__asm__(".symver shim_" #name ", " #name "@@" SHIM_VERSION_##name); \
	SHIM_EXPORT ret shim_##name(__VA_ARGS__)

struct real_fn {
	const char *name;
	const char *version;
	_Atomic(void *) addr;
};

#define REAL_FN(name) { #name, SHIM_VERSION_##name, NULL }

/*
 * Global: the real libibverbs entry points are process-wide facts, looked
 * up once (idempotently, so concurrent first calls are harmless).
 */
static struct real_fn real_fns[REAL_COUNT] = {
	[REAL_REG_MR] = REAL_FN(ibv_reg_mr),
	[REAL_REG_MR_IOVA] = REAL_FN(ibv_reg_mr_iova),
	[REAL_REG_MR_IOVA2] = REAL_FN(ibv_reg_mr_iova2),
	[REAL_DEREG_MR] = REAL_FN(ibv_dereg_mr),
	[REAL_REREG_MR] = REAL_FN(ibv_rereg_mr),
	[REAL_DEALLOC_PD] = REAL_FN(ibv_dealloc_pd),
	[REAL_CLOSE_DEVICE] = REAL_FN(ibv_close_device),
};

#define IBVERBS_SONAME "libibverbs.so.1"
#define REG_IDS ((1u << REAL_REG_MR) | (1u << REAL_REG_MR_IOVA) | \
		 (1u << REAL_REG_MR_IOVA2))

/*
 * Global, like real_fns: libibverbs itself, pinned (RTLD_NODELETE) so that
 * the cached real-function pointers and the patched GOT slots can never
 * dangle, and what is known about its internal calls of interposed
 * symbols (see resolve_reals()).  Written only by the thread that set
 * g_resolving; the state is read lock-free.
 *
 * g_resolving is a flag, not a lock: resolving calls dlopen/dlvsym and
 * dl_iterate_phdr, which take the dynamic loader's lock, and the first
 * verbs call may come from a library constructor that runs under that
 * lock; a thread that found another one resolving must not wait for it
 * (lock-order inversion), so it goes on without: real() falls back to
 * dlvsym(RTLD_NEXT), and registrations pass through until the state is
 * known.
 */
static atomic_bool g_resolving;
static void *g_ibverbs;
enum internal_state {
	INTERNAL_UNKNOWN,	/* libibverbs not seen yet */
	INTERNAL_PATCHED,	/* its internal calls never reach the shim */
	INTERNAL_UNPATCHED,	/* some may: see g_internal_unsafe */
};
static atomic_int g_internal = INTERNAL_UNKNOWN;
/* real_id bits: libibverbs calls these through its GOT (patched or not). */
static atomic_uint g_internal_relocs = REG_IDS;
/* real_id bits: ... and the slot could not be patched. */
static atomic_uint g_internal_unsafe;
static char g_patch_note[256];	/* reported once logging is set up */
static atomic_bool g_patch_note_ready;

/* dlvsym through RTLD_NEXT (respects other preloaded wrappers), else
 * through libibverbs itself (loaded in a local scope by a plugin). */
static void *lookup_real(const struct real_fn *r)
{
	void *p = dlvsym(RTLD_NEXT, r->name, r->version);

	if (!p && g_ibverbs)
		p = dlvsym(g_ibverbs, r->name, r->version);
	return p;
}

/*
 * Make libibverbs' own calls of interposed functions (its ibv_reg_mr and
 * ibv_reg_mr_iova call ibv_reg_mr_iova2 through its GOT; it also calls
 * ibv_dereg_mr, ibv_dealloc_pd and ibv_close_device that way) go straight
 * to its own definitions.  Without this, an application that bypasses the
 * shim through its own dlopen handle (NCCL does) would see its
 * ibv_reg_mr cached by the shim's ibv_reg_mr_iova2 at depth 0 and its
 * ibv_dereg_mr free that MR behind the cache's back.
 */
static void patch_internal_calls(void)
{
	struct got_patch_req reqs[REAL_COUNT];
	unsigned int relocs = 0, unsafe = 0;
	size_t used = 0;
	int rc;

	for (int i = 0; i < REAL_COUNT; i++) {
		reqs[i].name = real_fns[i].name;
		reqs[i].target = dlvsym(g_ibverbs, real_fns[i].name,
					real_fns[i].version);
	}
	rc = got_patch(IBVERBS_SONAME, reqs, REAL_COUNT);
	if (rc < 0) {
		relocs = unsafe = REG_IDS;	/* unknown: assume the worst */
	} else {
		for (int i = 0; i < REAL_COUNT; i++) {
			if (reqs[i].result != GOT_PATCH_ABSENT)
				relocs |= 1u << i;
			if (reqs[i].result == GOT_PATCH_FAILED)
				unsafe |= 1u << i;
		}
		unsafe &= REG_IDS;
	}
	atomic_store(&g_internal_relocs, relocs);
	atomic_store(&g_internal_unsafe, unsafe);
	if (unsafe) {
		used = (size_t)snprintf(g_patch_note, sizeof(g_patch_note),
					"cannot rebind libibverbs' internal calls (%s); registrations through",
					rc < 0 ? "its dynamic section is not understood" :
						 "a GOT slot cannot be written");
		for (int i = 0; i < REAL_COUNT && used < sizeof(g_patch_note); i++)
			if (unsafe & (1u << i))
				used += (size_t)snprintf(g_patch_note + used,
							 sizeof(g_patch_note) - used,
							 " %s", real_fns[i].name);
		if (used < sizeof(g_patch_note))
			snprintf(g_patch_note + used, sizeof(g_patch_note) - used,
				 " pass through uncached");
	}
	atomic_store(&g_internal, unsafe ? INTERNAL_UNPATCHED : INTERNAL_PATCHED);
}

/*
 * Find libibverbs (without dlopen'ing anything that is not loaded yet,
 * and without a failing dl call when it is not there, so the
 * application's dlerror() state is left alone), pin it, look up the real
 * functions and patch its internal calls.  Once done, never again.
 */
static void resolve_reals(void)
{
	char path[4096];
	bool found = false;
	int old;

	if (atomic_load(&g_internal) != INTERNAL_UNKNOWN ||
	    atomic_exchange(&g_resolving, true))
		return;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	if (atomic_load(&g_internal) == INTERNAL_UNKNOWN &&
	    got_object_path(IBVERBS_SONAME, path, sizeof(path))) {
		found = true;
		g_ibverbs = dlopen(path, RTLD_NOLOAD | RTLD_NODELETE | RTLD_LAZY);
		for (int i = 0; i < REAL_COUNT; i++) {
			void *p = lookup_real(&real_fns[i]);

			if (p)
				atomic_store(&real_fns[i].addr, p);
		}
		if (g_ibverbs) {
			patch_internal_calls();
		} else {
			snprintf(g_patch_note, sizeof(g_patch_note),
				 "cannot pin %.160s; registrations through ibv_reg_mr_iova2 pass through uncached",
				 path);
			atomic_store(&g_internal_unsafe, REG_IDS);
			atomic_store(&g_internal, INTERNAL_UNPATCHED);
		}
		atomic_store(&g_patch_note_ready, true);
	}
	if (!found)	/* not loaded yet: a later call tries again */
		atomic_store(&g_resolving, false);
	pthread_setcancelstate(old, NULL);
}

/*
 * Whether a depth-0 call of entry point @id can only have come from the
 * application (so it may be cached), not from libibverbs calling itself.
 * A call arriving before the patch was applied may be such an internal
 * call (the slot was read before the patch): it passes through.
 */
static bool call_is_from_application(enum real_id id)
{
	int st = atomic_load(&g_internal);

	if (st == INTERNAL_PATCHED)
		return true;
	if (st == INTERNAL_UNPATCHED)
		return !(atomic_load(&g_internal_unsafe) & (1u << id));
	resolve_reals();
	return !(atomic_load(&g_internal_relocs) & (1u << id));
}

/* The real function, or NULL with errno = ENOSYS (logged once per name). */
static void *real(enum real_id id)
{
	static atomic_bool reported[REAL_COUNT];
	struct real_fn *r = &real_fns[id];
	void *p = atomic_load_explicit(&r->addr, memory_order_acquire);

	if (p)
		return p;
	resolve_reals();
	p = atomic_load_explicit(&r->addr, memory_order_acquire);
	if (p)
		return p;
	/* Not named libibverbs.so.1: whatever provides the symbol. */
	p = dlvsym(RTLD_NEXT, r->name, r->version);
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

	if (!atomic_load(&g_initialized) || !atomic_load(&g_patch_note_ready) ||
	    !g_patch_note[0] || atomic_exchange(&reported, true))
		return;
	log_info("%s", g_patch_note);
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
	if (strcmp(g_monitor_name, "uffd") == 0)
		log_info("monitor=uffd is the fallback for kernels without /dev/ummunot: userfaultfd reports an unmap only after the kernel has let go of the address range, so a thread that maps and registers the same addresses in that window can get a stale cached MR (see Limits in the README)");
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
static int defer_dereg(struct ibv_mr *mr)
{
	unsigned int n = atomic_load(&deferred_n);

	do {
		if (n == DEFERRED_DEREGS)
			return EAGAIN;
		deferred_mr[n] = mr;
	} while (!atomic_compare_exchange_weak(&deferred_n, &n, n + 1));
	return 0;
}

/* At depth 1, so that a handler's deregs meanwhile are queued again. */
static void run_deferred_deregs(void)
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

static void shim_leave(struct shim_entry *s)
{
	if (shim_depth == 1 &&
	    atomic_load_explicit(&deferred_n, memory_order_relaxed))
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
	if (atomic_load(&g_internal) == INTERNAL_UNPATCHED)
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

SHIM_INTERPOSER(ibv_dereg_mr, int, struct ibv_mr *mr)
{
	struct cache *c = shim_cache_if_ready();
	struct shim_entry se;
	int rc;

	if (!mr)
		return call_real_dereg(mr);
	if (shim_depth > 0)	/* a signal handler, or libibverbs itself */
		return c ? defer_dereg(mr) : call_real_dereg(mr);
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
	rereg_mr_fn f = (rereg_mr_fn)real(REAL_REREG_MR);
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
	dealloc_pd_fn f = (dealloc_pd_fn)real(REAL_DEALLOC_PD);
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
	close_device_fn f = (close_device_fn)real(REAL_CLOSE_DEVICE);
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
