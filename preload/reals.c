// SPDX-License-Identifier: BSD-2-Clause
/*
 * The real libibverbs functions behind the interposers: finding and
 * pinning libibverbs, looking its functions up with their exact versions,
 * rebinding its own internal calls of interposed symbols (gotpatch.c), and
 * calling them.  See reals.h.
 */
#define _GNU_SOURCE
#include "reals.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "gotpatch.h"
#include "log.h"

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
	if (!unsafe)
		atomic_store(&reals_patched, true);
}

/*
 * Find libibverbs (without dlopen'ing anything that is not loaded yet,
 * and without a failing dl call when it is not there, so the
 * application's dlerror() state is left alone), pin it, look up the real
 * functions and patch its internal calls.  Once done, never again.
 */
void resolve_reals(void)
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
atomic_bool reals_patched;

bool call_is_from_application_slow(enum real_id id)
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
void *real_fn(enum real_id id)
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

/* Call the real entry point @how (enum real_id) the application called. */
struct ibv_mr *call_real_reg(int how, const struct cache_key *k)
{
	void *f = real_fn((enum real_id)how);

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

int call_real_dereg(struct ibv_mr *mr)
{
	dereg_mr_fn f = (dereg_mr_fn)real_fn(REAL_DEREG_MR);

	return f ? f(mr) : ENOSYS;
}


bool reals_internal_unpatched(void)
{
	return atomic_load(&g_internal) == INTERNAL_UNPATCHED;
}

const char *reals_patch_note(void)
{
	if (!atomic_load(&g_patch_note_ready) || !g_patch_note[0])
		return NULL;
	return g_patch_note;
}
