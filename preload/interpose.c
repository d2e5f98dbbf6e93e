// SPDX-License-Identifier: BSD-2-Clause
/*
 * The exported, versioned ibverbs interposers of libummushim.so.
 *
 * Applications linked against libibverbs reference versioned symbols
 * (ibv_reg_mr@IBVERBS_1.1, ...).  This library defines the same names
 * with the same versions (SHIM_INTERPOSER, reals.h), so a preloaded copy
 * is found first.  The real functions are found by reals.c; the state
 * behind the interposers (configuration, monitor, cache, fork, exit
 * statistics) is in shim_state.c.
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
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

#include <infiniband/verbs.h>

#include "cache.h"
#include "cache_fast.h"
#include "dereg_defer.h"
#include "log.h"
#include "reals.h"
#include "shim_state.h"
#include "stats.h"

/* Depth of shim calls on this thread: >0 means "inside the real library". */
static __thread unsigned int shim_depth
	__attribute__((tls_model("initial-exec")));

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
	/* A handler on this thread sees the depth before the shim's work. */
	atomic_signal_fence(memory_order_seq_cst);
}

/* One deregistration taken from the queue (dereg_defer_drain()). */
static void dereg_deferred(void *p)
{
	struct ibv_mr *mr = p;
	struct cache *c = shim_cache_if_ready();
	int rc = c ? cache_dereg(c, mr) : shim_timed_dereg(mr);

	if (rc)
		log_warn("ibv_dereg_mr(%p), called from a signal handler or from inside libibverbs and done on return to the shim, failed: %s",
			 (void *)mr, strerror(rc));
}

/*
 * Once, outside the handler that met it: a full queue made ibv_dereg_mr
 * fail with EAGAIN (counted in deferred_full).
 */
static void report_full_queue(void)
{
	static atomic_bool reported;

	if (stats_get(&shim_stats.deferred_full) &&
	    !atomic_exchange(&reported, true))
		log_warn("ibv_dereg_mr called from signal handlers failed with EAGAIN: more than %d such calls were waiting for their threads to return from the shim (counted in deferred_full)",
			 DEREG_DEFER_SLOTS);
}

/*
 * Do the deregistrations queued by dereg_defer() (this thread's, or those
 * of a thread that never came back to the application), at a raised
 * depth so that a handler's deregs meanwhile are queued again (and done
 * before the return: dereg_defer_drain()).  Out of line: shim_leave() is
 * on the hit path.
 */
__attribute__((noinline, cold)) static void run_deferred_deregs(void)
{
	int saved = errno;

	/* In a child, only the child's own (dereg_defer_adopt()). */
	dereg_defer_drain(&shim_depth, dereg_deferred);
	report_full_queue();
	errno = saved;
}

/*
 * Before a PD or a device is freed: every queued deregistration done,
 * also those another thread has taken and is still doing (its MR would
 * keep the PD busy: the real call would fail with EBUSY).  Waits for
 * those threads (at most one deregistration each), but never forever:
 * a claim that is never finished (a handler that longjmp'ed out between
 * its claim and its store) must not hang the application.  After
 * FINISH_WAIT_NS the free goes ahead and may fail with EBUSY, as the
 * real call does for any PD with a live MR.
 */
#define FINISH_WAIT_NS (10ULL * 1000 * 1000 * 1000)

static void finish_deferred_deregs(void)
{
	uint64_t deadline = 0;

	while (dereg_defer_pending()) {
		run_deferred_deregs();
		if (!dereg_defer_pending())
			break;
		if (!deadline) {
			deadline = stats_now_ns() + FINISH_WAIT_NS;
		} else if (stats_now_ns() > deadline) {
			log_warn("a deferred ibv_dereg_mr was still unfinished after %llu s: freeing the PD or device without waiting for it",
				 FINISH_WAIT_NS / 1000000000ULL);
			break;
		}
		sched_yield();
	}
}

/*
 * Back to the application (inlined: it is on the hit path).  The depth falls to 0 before the queue is
 * looked at, so a handler's dereg queued at any moment before (depth 1)
 * is seen here, and one arriving after (depth 0) is done in the handler.
 * The signal fence keeps the compiler from moving the check above the
 * store (a handler on this thread reads shim_depth).
 */
static inline __attribute__((always_inline)) void
shim_leave(struct shim_entry *s)
{
	/* The inlined hit path's counter stores stay before the decrement. */
	atomic_signal_fence(memory_order_seq_cst);
	shim_depth--;
	atomic_signal_fence(memory_order_seq_cst);
	if (__builtin_expect(dereg_defer_pending(), 0))
		run_deferred_deregs();
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
		stats_inc(&shim_stats.passthrough);
		mr = shim_timed_reg(how, &key);
		log_debug("reg (pass-through) mr=%p addr=%p len=%zu access=%#x",
			  (void *)mr, addr, length, access);
	} else if (!pd || length == 0 || (access & IBV_ACCESS_ON_DEMAND) ||
		   !from_app) {
		/* Not cached, but idle cached MRs still make way on ENOMEM. */
		mr = cache_reg_uncached(c, &key, how);
	} else {
		enum cache_check check;

		/*
		 * cache_reg() open-coded: its two halves here, so that
		 * pd->context is loaded only on a miss (2 instructions on
		 * every hit otherwise, measured).
		 */
		mr = cache_reg_hit(c, &key, &check);	/* inline: the hit path */
		if (__builtin_expect(mr == NULL, 0))
			mr = cache_reg_miss(c, &key, pd->context, how, check);
	}
	if (!atomic_load(&reals_patched) && reals_internal_unpatched())
		shim_report_patch_note();
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

	if (mr && c) {	/* a signal handler, or libibverbs itself */
		int rc = dereg_defer(mr);

		if (rc == EAGAIN)	/* a relaxed atomic add: handler-safe */
			stats_inc(&shim_stats.deferred_full);
		return rc;
	}
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
		rc = cache_dereg_inline(c, mr);
	} else {
		rc = shim_timed_dereg(mr);
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
	finish_deferred_deregs();	/* MRs of @pd may be queued */
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
	finish_deferred_deregs();	/* MRs of @ctx may be queued */
	cache_release_ctx(c, ctx);
	rc = f(ctx);
	if (rc == 0)
		cache_forget_ctx(c, ctx);
	shim_leave(&se);
	return rc;
}
