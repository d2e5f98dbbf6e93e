/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * libibverbs' symbols as the shim sees them: which it interposes, with
 * which versions (written once, here), and the real functions behind
 * them (reals.c).
 */
#ifndef UMMUSHIM_REALS_H
#define UMMUSHIM_REALS_H

#include <stdatomic.h>
#include <stdbool.h>

#include <infiniband/verbs.h>

#include "cache.h"

#define SHIM_EXPORT __attribute__((visibility("default")))

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
 * real-function table (reals.c) looks the real one up with it (dlvsym),
 * and SHIM_INTERPOSER() gives the shim's definition (interpose.c) the
 * same version (.symver).  ummushim.map declares the version nodes and
 * exports ibv_*.
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

/*
 * Find libibverbs (only if already loaded), pin it, look the real
 * functions up and rebind its internal calls; once.  Never waits for
 * another thread doing it (see reals.c).
 */
void resolve_reals(void);

/*
 * Global (hidden): libibverbs' internal calls of every interposed symbol
 * were rebound, so no call can reach the shim from inside it.  Set once;
 * read on every registration, hence inline.
 */
extern atomic_bool reals_patched;

bool call_is_from_application_slow(enum real_id id);

/*
 * Whether a depth-0 call of entry point @id can only have come from the
 * application (so it may be cached), not from libibverbs calling itself.
 */
static inline bool call_is_from_application(enum real_id id)
{
	return atomic_load(&reals_patched) ||
	       call_is_from_application_slow(id);
}

/* The real function, or NULL with errno = ENOSYS (logged once per name). */
void *real_fn(enum real_id id);

/* Call the real entry point @how (enum real_id) the application called. */
struct ibv_mr *call_real_reg(int how, const struct cache_key *k);
int call_real_dereg(struct ibv_mr *mr);

/* Some of libibverbs' internal calls could not be rebound. */
bool reals_internal_unpatched(void);
/* What resolving found worth saying (info level), or NULL. */
const char *reals_patch_note(void);

#endif /* UMMUSHIM_REALS_H */
