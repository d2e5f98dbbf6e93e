/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Deregistrations that could not be done when they were called: an
 * ibv_dereg_mr that arrives while its thread is already inside the shim
 * (a signal handler interrupted it, or libibverbs called itself) must not
 * free a cached MR behind the cache and cannot take the cache's locks
 * (the interrupted code may hold them).  Such calls are queued here and
 * done at the next return of any thread to the application: the
 * interrupted thread's own, or, should that thread never return to the
 * application (it exits from the handler), the next call of any other
 * thread.  So a queued deregistration is never lost with its thread, and
 * it is done exactly once: each queued pointer is taken by one
 * exchange.
 *
 * Process-wide, not per thread, for that hand-over.  Async-signal-safe:
 * lock-free atomics only, no allocation.
 */
#ifndef UMMUSHIM_DEREG_DEFER_H
#define UMMUSHIM_DEREG_DEFER_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

/*
 * Process-wide capacity (static: no allocation in a signal handler); a
 * queue this full means handlers deregister faster than threads return.
 */
#define DEREG_DEFER_SLOTS 1024

/*
 * Global (hidden): how many slots are claimed (queued, being queued, or
 * taken and not done yet).  Read on every return to the application, hence here.
 */
extern atomic_uint dereg_defer_claimed __attribute__((visibility("hidden")));

/*
 * Thread-local (hidden, initial-exec: read and written in signal
 * handlers): set by dereg_defer() on this thread after its entry is
 * stored; dereg_defer_drain() clears it and goes round again when set.
 */
extern __thread volatile sig_atomic_t dereg_defer_queued_here
	__attribute__((tls_model("initial-exec"), visibility("hidden")));

/*
 * Queue @mr (not NULL): 0, or EAGAIN when DEREG_DEFER_SLOTS are queued.
 * Sets dereg_defer_queued_here on success.  Empties a queue inherited
 * from another process first (dereg_defer_adopt()).
 */
int dereg_defer(void *mr);

/* Anything queued?  (One relaxed load: the return path's check.) */
static inline bool dereg_defer_pending(void)
{
	return atomic_load_explicit(&dereg_defer_claimed,
				    memory_order_relaxed) != 0;
}

/*
 * Take one queued pointer (each is taken once), or NULL if none is.  The
 * queue stays pending until the taker has done the deregistration and
 * said so with dereg_defer_done(the pointer).
 */
void *dereg_defer_take(void);
void dereg_defer_done(void *mr);

/*
 * Empty the queue without doing anything queued: in a child process,
 * whose copy of the queue holds the parent's MRs (the child has one
 * thread; nothing else may use the queue meanwhile).
 */
void dereg_defer_reset(void);

/*
 * In a child made without the fork handlers (raw clone: one thread), the
 * parent's queue: empty it.  A system call; dereg_defer() and
 * dereg_defer_drain() do it first.
 */
void dereg_defer_adopt(void);

/*
 * Record the calling process as the queue's owner and reset the queue in
 * the child of every fork() (proc.c's hooks); idempotent.  Call before
 * anything is queued.
 */
void dereg_defer_install_fork_hook(void);

/*
 * Do every queued deregistration with @dereg, with *@depth (the calling
 * thread's depth inside the shim, read by its signal handlers) raised by
 * one meanwhile, until none is left that this thread must do: also those
 * its own signal handlers queue before *@depth is back (dereg_defer_drain.c).
 */
void dereg_defer_drain(volatile unsigned int *depth, void (*dereg)(void *mr));

#endif /* UMMUSHIM_DEREG_DEFER_H */
