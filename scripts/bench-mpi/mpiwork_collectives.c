// SPDX-License-Identifier: BSD-2-Clause
/*
 * collectives: MPI_Alltoall and MPI_Allreduce over all ranks, the same
 * buffers every iteration (as solvers do).  Alltoall: every block of every
 * rank carries the pattern of (iteration, sender, receiver) and is checked
 * on arrival.  Allreduce (64-bit sums): every rank contributes the pattern
 * of (iteration, rank) and checks the result against the sum of all ranks'
 * patterns, which it computes itself.  One RESULT line per collective
 * (see mpiwork.h); --size is the Alltoall block and the Allreduce vector.
 */
#define _GNU_SOURCE
#include <mpi.h>
#include <stdint.h>
#include <sys/mman.h>

#include "mpiwork.h"

#include "../bench-common/bench_common.h"

static void alltoall_iter(const struct mpiwork_opts *o, uint64_t it,
			  unsigned char *send, unsigned char *recv,
			  struct mpiwork_totals *t)
{
	int n = mpiwork_nranks(), me = mpiwork_rank();
	double t0;

	for (int to = 0; to < n; to++)
		mpiwork_fill(send + (size_t)to * o->size, o->size,
			     mpiwork_seed(o, it, me, to, 0));
	t0 = mpiwork_now();
	MPI_Alltoall(send, (int)o->size, MPI_BYTE, recv, (int)o->size, MPI_BYTE,
		     MPI_COMM_WORLD);
	mpiwork_add_time(t, t0);
	for (int from = 0; from < n; from++)
		mpiwork_check(t, recv + (size_t)from * o->size, o->size,
			      mpiwork_seed(o, it, from, me, 0));
}

static void allreduce_iter(const struct mpiwork_opts *o, uint64_t it,
			   uint64_t *send, uint64_t *recv, uint64_t *expect,
			   struct mpiwork_totals *t)
{
	int n = mpiwork_nranks(), me = mpiwork_rank();
	size_t words = o->size / 8;
	double t0;

	for (size_t i = 0; i < words; i++)
		expect[i] = 0;
	for (int r = 0; r < n; r++) {
		uint64_t seed = mpiwork_seed(o, it, r, -1, 1);

		for (size_t i = 0; i < words; i++)
			expect[i] += bench_pattern_word(seed, i);
	}
	mpiwork_fill(send, o->size, mpiwork_seed(o, it, me, -1, 1));
	t0 = mpiwork_now();
	MPI_Allreduce(send, recv, (int)words, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
	mpiwork_add_time(t, t0);
	for (size_t i = 0; i < words; i++)
		t->errors += recv[i] != expect[i];
	t->bytes += o->size;
	t->messages++;
}

int mpiwork_collectives(const struct mpiwork_opts *o)
{
	struct mpiwork_totals a2a, red;
	uint64_t it_a2a = 0, it_red = 0;
	size_t span = o->size * (size_t)mpiwork_nranks();
	unsigned char *send = mpiwork_map(span), *recv = mpiwork_map(span);
	unsigned char *expect = mpiwork_map(o->size);
	bool ok = send && recv && expect;
	int status, s2;

	mpiwork_begin(&a2a);
	for (; ok && mpiwork_continue(o, it_a2a); it_a2a++)
		alltoall_iter(o, it_a2a, send, recv, &a2a);
	status = mpiwork_report(o, "alltoall", it_a2a, &a2a, ok);
	mpiwork_begin(&red);
	for (; ok && mpiwork_continue(o, it_red); it_red++)
		allreduce_iter(o, it_red, (uint64_t *)send, (uint64_t *)recv,
			       (uint64_t *)expect, &red);
	s2 = mpiwork_report(o, "allreduce", it_red, &red, ok);
	if (send)
		munmap(send, span);
	if (recv)
		munmap(recv, span);
	if (expect)
		munmap(expect, o->size);
	return status > s2 ? status : s2;
}
