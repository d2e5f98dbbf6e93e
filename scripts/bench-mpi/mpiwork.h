/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * mpiwork: the MPI workloads of the main job in one program, so one mpirun
 * runs them all (launching is slow under emulation):
 *   mpiwork WORKLOAD[,WORKLOAD...] [options]
 * with WORKLOAD pingpong, collectives (Alltoall and Allreduce), halo or
 * recycle (mpiwork_pingpong.c ... mpiwork_recycle.c).  What they share is
 * here and in mpiwork.c: options, deterministic data patterns and their checks, the loop
 * that runs for a number of iterations or seconds, the registration
 * counters of scripts/bench-mpi's counting preloads, and the one result
 * line rank 0 prints:
 *
 *   RESULT {"workload": ..., "label": ..., "ranks": N, "hosts": [...],
 *           "iters": N, "seconds": S, "messages": M, "bytes": B,
 *           "MBps": X, "errors": E, "real_regs": [per rank],
 *           "app_regs": [per rank], "sections_s": [per timed section]}
 *
 * bytes = bytes received and checked by all ranks, seconds = the slowest
 * rank's time inside communication calls (filling and checking excluded),
 * MBps = bytes / seconds / 10^6, errors = received 64-bit words that did not
 * match; real_regs/app_regs are the ibv_reg_mr calls during this workload
 * that reached libibverbs / that the MPI library asked for (with the
 * counting preloads of regcount.c, else -1), so app - real = cache hits;
 * sections_s = the slowest rank's time of each of the first
 * MPIWORK_SECTIONS timed sections (mpiwork_add_time calls: one per
 * iteration in pingpong, halo and recycle), which tells one stalled
 * iteration (a retransmission timeout) from a uniformly slower run.
 * mpiwork exits 0 when all data matched, 2 on a data error, 1 on bad usage
 * or setup failure.
 */
#ifndef UMMUNOT_MPIWORK_H
#define UMMUNOT_MPIWORK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mpiwork_opts {
	const char *label;
	size_t size;		/* message or block size, multiple of 8 */
	size_t min_size;	/* random sizes (recycle): lower bound */
	unsigned iters;
	unsigned seconds;	/* > 0: run this long instead of iters */
	unsigned seed;
	unsigned rows;		/* halo: rows of the array */
	unsigned depth;		/* halo: boundary rows sent per side */
	unsigned remap;		/* recycle: mmap/munmap every N iterations; 0 = never */
};

/* Timed sections whose times the RESULT line lists. */
#define MPIWORK_SECTIONS 64

/* One rank's running totals. */
struct mpiwork_totals {
	double comm_s;		/* time inside MPI calls */
	uint64_t messages;	/* received */
	uint64_t bytes;		/* received and checked */
	uint64_t errors;	/* bad words */
	int64_t regs0[2];	/* registration counters at the start */
	unsigned sections;	/* mpiwork_add_time() calls */
	double section_s[MPIWORK_SECTIONS];	/* the first ones' times */
};

/* Starts a workload's totals (and its registration counts). */
void mpiwork_begin(struct mpiwork_totals *t);

/* The workloads; each prints its RESULT line(s) and returns 0, 1 or 2. */
int mpiwork_pingpong(const struct mpiwork_opts *o);
int mpiwork_collectives(const struct mpiwork_opts *o);
int mpiwork_halo(const struct mpiwork_opts *o);
int mpiwork_recycle(const struct mpiwork_opts *o);

/* Parses argv[2..]; false (after a message on rank 0) on bad usage. */
bool mpiwork_parse(int argc, char **argv, struct mpiwork_opts *o);

int mpiwork_rank(void);
int mpiwork_nranks(void);

/* The pattern seed of one message: distinct per (iteration, sender, receiver, part). */
uint64_t mpiwork_seed(const struct mpiwork_opts *o, uint64_t iter, int from,
		      int to, uint64_t part);
/* A deterministic pseudo-random number in [0, n) for (iteration, salt). */
uint64_t mpiwork_random(const struct mpiwork_opts *o, uint64_t iter,
			uint64_t salt, uint64_t n);

void mpiwork_fill(void *buf, size_t len, uint64_t seed);
/* Counts bad words of a received buffer into @t (and the bytes checked). */
void mpiwork_check(struct mpiwork_totals *t, const void *buf, size_t len,
		   uint64_t seed);

/*
 * Whether iteration @iter should run: below o->iters, or, with --seconds,
 * while rank 0's clock says time is left (rank 0 decides for everyone).
 */
bool mpiwork_continue(const struct mpiwork_opts *o, uint64_t iter);

/* Time MPI calls: t->comm_s += now - @start, one timed section. */
double mpiwork_now(void);
void mpiwork_add_time(struct mpiwork_totals *t, double start);

/*
 * Gathers everyone's totals, prints the RESULT line on rank 0 and returns
 * the status (0, 1 or 2) on every rank.  The caller ends with MPI_Finalize.
 */
int mpiwork_report(const struct mpiwork_opts *o, const char *workload,
		   uint64_t iters, const struct mpiwork_totals *t, bool setup_ok);

/* A private anonymous mapping of @len bytes (page multiple), or NULL. */
void *mpiwork_map(size_t len);

#endif
