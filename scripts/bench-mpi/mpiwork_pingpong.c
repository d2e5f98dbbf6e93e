// SPDX-License-Identifier: BSD-2-Clause
/*
 * pingpong: rank 0 and rank N/2 (the first rank of the second node when
 * mpirun places ranks by slot, e.g. -H node1:2,node2:2) bounce a --size
 * message, the same two buffers every iteration, as scripts/bench-mpi's
 * mpibench does for a range of sizes.  Each message carries the pattern of
 * (iteration, sender) and is checked.  The other ranks wait.
 */
#define _GNU_SOURCE
#include <mpi.h>
#include <stdint.h>
#include <sys/mman.h>

#include "mpiwork.h"

static void bounce(const struct mpiwork_opts *o, uint64_t it, int me, int peer,
		   unsigned char *send, unsigned char *recv, struct mpiwork_totals *t)
{
	double t0;

	mpiwork_fill(send, o->size, mpiwork_seed(o, it, me, peer, 2));
	t0 = mpiwork_now();
	if (me == 0) {
		MPI_Send(send, (int)o->size, MPI_BYTE, peer, 1, MPI_COMM_WORLD);
		MPI_Recv(recv, (int)o->size, MPI_BYTE, peer, 2, MPI_COMM_WORLD,
			 MPI_STATUS_IGNORE);
	} else {
		MPI_Recv(recv, (int)o->size, MPI_BYTE, peer, 1, MPI_COMM_WORLD,
			 MPI_STATUS_IGNORE);
		MPI_Send(send, (int)o->size, MPI_BYTE, peer, 2, MPI_COMM_WORLD);
	}
	mpiwork_add_time(t, t0);
	mpiwork_check(t, recv, o->size, mpiwork_seed(o, it, peer, me, 2));
}

int mpiwork_pingpong(const struct mpiwork_opts *o)
{
	struct mpiwork_totals t;
	int n = mpiwork_nranks(), me = mpiwork_rank(), other = n / 2;
	bool active = n > 1 && (me == 0 || me == other);
	unsigned char *send = mpiwork_map(o->size), *recv = mpiwork_map(o->size);
	bool ok = send && recv;
	uint64_t it = 0;

	mpiwork_begin(&t);
	for (; mpiwork_continue(o, it); it++)
		if (ok && active)
			bounce(o, it, me, me == 0 ? other : 0, send, recv, &t);
	if (send)
		munmap(send, o->size);
	if (recv)
		munmap(recv, o->size);
	return mpiwork_report(o, "pingpong", it, &t, ok && n > 1);
}
