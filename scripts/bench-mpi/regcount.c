// SPDX-License-Identifier: BSD-2-Clause
/*
 * libregcount-{real,app}.so: an LD_PRELOAD library that counts the memory
 * registrations a process really makes, independently of the ummunot shim,
 * so the MPI benchmark can report ibv_reg_mr calls for runs without the
 * shim.  It forwards every call unchanged.
 *
 * libibverbs 44's exported ibv_reg_mr and ibv_reg_mr_iova jump to
 * ibv_reg_mr_iova2 through the PLT, so a preloaded ibv_reg_mr_iova2 is
 * entered again from inside the real ibv_reg_mr: a thread-local nesting
 * depth makes sure one application call is counted once, whichever entry
 * point it used.
 *
 * It is built twice, with REGCOUNT_TAG "real" and "app", so that it can be
 * stacked around the shim:
 *   LD_PRELOAD=libregcount-app.so:libummushim.so:libregcount-real.so
 * The outer copy counts the registrations the application asks for, the
 * inner one those that reach libibverbs.  Each exports
 * regcount_<tag>_stats(), which mpibench looks up to report counts per
 * message size.
 *
 * At exit it writes one line
 *   regcount-<tag>: pid=P regs=N reg_fail=F deregs=D reg_ns=T dereg_ns=U
 *                   reg_bytes=B
 * (B: the bytes of the registrations made, so a cost per registration can
 * be told apart from a difference in their sizes).  With REGCOUNT_TRACE=1
 * it also writes "regcount-<tag>-trace: pid=P calls=N kept=K" and one line
 * per call (the first TRACE_MAX = K of N): "regcount-<tag>-trace: pid=P
 * op=reg|reg_failed|dereg start_ns=S ns=T bytes=B tid=I" -- where a slow
 * average comes from (a few long calls, or every call, which thread).
 * Without REGCOUNT_FILE the lines go to stderr, where an MPI launcher
 * interleaves the ranks' lines (each carries its pid).
 * to $REGCOUNT_FILE ("%p" is replaced by the pid) or to stderr.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <infiniband/verbs.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../bench-common/bench_common.h"

/* verbs.h turns these names into inline wrappers: we define the real ones. */
#undef ibv_reg_mr
#undef ibv_reg_mr_iova

#ifndef REGCOUNT_TAG
#define REGCOUNT_TAG real
#endif
#define STR_(x) #x
#define STR(x) STR_(x)
#define PASTE_(a, b, c) a##b##c
#define PASTE(a, b, c) PASTE_(a, b, c)
#define REGCOUNT_STATS PASTE(regcount_, REGCOUNT_TAG, _stats)

/* For mpibench: {regs, deregs, reg_ns, dereg_ns} so far in this process. */
void REGCOUNT_STATS(uint64_t out[4]);

typedef struct ibv_mr *(*reg_mr_fn)(struct ibv_pd *, void *, size_t, int);
typedef struct ibv_mr *(*reg_mr_iova_fn)(struct ibv_pd *, void *, size_t,
					 uint64_t, int);
typedef struct ibv_mr *(*reg_mr_iova2_fn)(struct ibv_pd *, void *, size_t,
					  uint64_t, unsigned int);
typedef int (*dereg_mr_fn)(struct ibv_mr *);

/*
 * Process-wide counters: this library exists to count for the whole
 * process, and atomics keep them exact under threads.
 */
static atomic_ulong n_regs, n_reg_fail, n_deregs, reg_bytes;
static atomic_ullong reg_ns, dereg_ns;

/*
 * REGCOUNT_TRACE: the first TRACE_MAX calls, filled without allocating.
 * A slot is claimed with trace_used and published with its ready flag,
 * so the exit report skips a slot another thread is still writing.
 */
#define TRACE_MAX 8192
enum trace_op { TRACE_REG, TRACE_REG_FAILED, TRACE_DEREG };

struct trace_entry {
	uint64_t start_ns, ns, bytes;
	int tid;
	enum trace_op op;
	atomic_bool ready;
};

static struct trace_entry trace[TRACE_MAX];
static atomic_uint trace_used;
static bool trace_on;	/* REGCOUNT_TRACE=1, read once at load */
static _Thread_local int trace_tid;

__attribute__((constructor)) static void read_trace_setting(void)
{
	const char *v = getenv("REGCOUNT_TRACE");

	trace_on = v && strcmp(v, "1") == 0;
}

static void trace_call(enum trace_op op, uint64_t t0, uint64_t ns,
		       uint64_t bytes)
{
	struct trace_entry *e;
	unsigned int i;

	if (!trace_on)
		return;
	i = atomic_fetch_add(&trace_used, 1);
	if (i >= TRACE_MAX)
		return;
	if (!trace_tid)
		trace_tid = (int)syscall(SYS_gettid);
	e = &trace[i];
	e->start_ns = t0;
	e->ns = ns;
	e->bytes = bytes;
	e->tid = trace_tid;
	e->op = op;
	atomic_store_explicit(&e->ready, true, memory_order_release);
}

/* Nesting depth of this thread inside our registration wrappers. */
static _Thread_local unsigned reg_depth;

/*
 * The next definition of NAME@VERSION.  MPI transports load libibverbs
 * from plugins opened with RTLD_LOCAL, where RTLD_NEXT may not see it:
 * then ask the already loaded library directly.
 */
static void *real_symbol(const char *name, const char *version)
{
	void *sym = dlvsym(RTLD_NEXT, name, version);
	void *lib;

	if (sym)
		return sym;
	lib = dlopen("libibverbs.so.1", RTLD_NOLOAD | RTLD_LAZY);
	if (lib) {
		sym = dlvsym(lib, name, version);
		dlclose(lib);
	}
	if (!sym) {
		fprintf(stderr, "regcount-" STR(REGCOUNT_TAG) ": cannot find %s@%s\n", name, version);
		abort();
	}
	return sym;
}

/* Resolved on first use; a racing second lookup stores the same pointer. */
static void *resolve(_Atomic(void *) *slot, const char *name,
		     const char *version)
{
	void *p = atomic_load_explicit(slot, memory_order_acquire);

	if (!p) {
		p = real_symbol(name, version);
		atomic_store_explicit(slot, p, memory_order_release);
	}
	return p;
}

#define REAL(var, name, version) resolve(&var, name, version)

static _Atomic(void *) real_reg_mr, real_reg_mr_iova, real_reg_mr_iova2,
	real_dereg;

/* Every registration wrapper: reg_enter(), the real call, reg_leave(). */
static uint64_t reg_enter(void)
{
	reg_depth++;
	return bench_now_ns();
}

/* Counts @mr (a result, or NULL for a failure) unless we are nested. */
static struct ibv_mr *reg_leave(struct ibv_mr *mr, uint64_t t0)
{
	if (--reg_depth == 0) {
		uint64_t ns = bench_now_ns() - t0;

		atomic_fetch_add(&reg_ns, ns);
		atomic_fetch_add(mr ? &n_regs : &n_reg_fail, 1);
		if (mr)
			atomic_fetch_add(&reg_bytes, mr->length);
		trace_call(mr ? TRACE_REG : TRACE_REG_FAILED, t0, ns,
			   mr ? mr->length : 0);
	}
	return mr;
}

struct ibv_mr *ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t length,
				uint64_t iova, unsigned int access)
{
	reg_mr_iova2_fn fn = (reg_mr_iova2_fn)REAL(real_reg_mr_iova2,
						   "ibv_reg_mr_iova2", "IBVERBS_1.8");
	uint64_t t0 = reg_enter();

	return reg_leave(fn(pd, addr, length, iova, access), t0);
}

struct ibv_mr *ibv_reg_mr_iova(struct ibv_pd *pd, void *addr, size_t length,
			       uint64_t iova, int access)
{
	reg_mr_iova_fn fn = (reg_mr_iova_fn)REAL(real_reg_mr_iova,
						 "ibv_reg_mr_iova", "IBVERBS_1.7");
	uint64_t t0 = reg_enter();

	return reg_leave(fn(pd, addr, length, iova, access), t0);
}

struct ibv_mr *ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length,
			  int access)
{
	reg_mr_fn fn = (reg_mr_fn)REAL(real_reg_mr, "ibv_reg_mr", "IBVERBS_1.1");
	uint64_t t0 = reg_enter();

	return reg_leave(fn(pd, addr, length, access), t0);
}

int ibv_dereg_mr(struct ibv_mr *mr)
{
	dereg_mr_fn fn = (dereg_mr_fn)REAL(real_dereg, "ibv_dereg_mr", "IBVERBS_1.1");
	uint64_t t0 = bench_now_ns(), ns;
	size_t bytes = mr ? mr->length : 0;
	int ret = fn(mr);

	ns = bench_now_ns() - t0;
	atomic_fetch_add(&dereg_ns, ns);
	trace_call(TRACE_DEREG, t0, ns, bytes);
	if (ret == 0)
		atomic_fetch_add(&n_deregs, 1);
	return ret;
}

/* REGCOUNT_FILE with every "%p" replaced by the pid. */
static FILE *open_report(void)
{
	const char *tmpl = getenv("REGCOUNT_FILE");
	char path[4096];
	size_t o = 0;

	if (!tmpl || !*tmpl)
		return NULL;
	for (const char *s = tmpl; *s && o < sizeof(path) - 24; s++) {
		if (s[0] == '%' && s[1] == 'p') {
			o += (size_t)snprintf(path + o, sizeof(path) - o, "%ld",
					      (long)getpid());
			s++;
		} else {
			path[o++] = *s;
		}
	}
	path[o] = '\0';
	return fopen(path, "a");
}

void REGCOUNT_STATS(uint64_t out[4])
{
	out[0] = atomic_load(&n_regs);
	out[1] = atomic_load(&n_deregs);
	out[2] = atomic_load(&reg_ns);
	out[3] = atomic_load(&dereg_ns);
}

static void write_trace(FILE *f)
{
	static const char *const op_name[] = { "reg", "reg_failed", "dereg" };
	unsigned int used = atomic_load(&trace_used);

	fprintf(f, "regcount-" STR(REGCOUNT_TAG) "-trace: pid=%ld calls=%u kept=%u\n",
		(long)getpid(), used, used < TRACE_MAX ? used : TRACE_MAX);
	for (unsigned int i = 0; i < used && i < TRACE_MAX; i++) {
		const struct trace_entry *e = &trace[i];

		if (!atomic_load_explicit(&e->ready, memory_order_acquire))
			continue;
		fprintf(f, "regcount-" STR(REGCOUNT_TAG) "-trace: pid=%ld op=%s start_ns=%llu ns=%llu bytes=%llu tid=%d\n",
			(long)getpid(), op_name[e->op],
			(unsigned long long)e->start_ns,
			(unsigned long long)e->ns,
			(unsigned long long)e->bytes, e->tid);
	}
}

__attribute__((destructor)) static void report(void)
{
	FILE *f = open_report();

	fprintf(f ? f : stderr,
		"regcount-" STR(REGCOUNT_TAG) ": pid=%ld regs=%lu reg_fail=%lu deregs=%lu reg_ns=%llu dereg_ns=%llu reg_bytes=%lu\n",
		(long)getpid(), atomic_load(&n_regs), atomic_load(&n_reg_fail),
		atomic_load(&n_deregs), atomic_load(&reg_ns),
		atomic_load(&dereg_ns), atomic_load(&reg_bytes));
	if (trace_on)
		write_trace(f ? f : stderr);
	if (f)
		fclose(f);
}
