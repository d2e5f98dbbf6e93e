// SPDX-License-Identifier: BSD-2-Clause
/*
 * recycle: message buffers that come and go.  The ranks form a ring;
 * every iteration each rank mallocs three send and three receive buffers of
 * pseudo-random sizes between --min-size and --size (the sender's sizes
 * follow from (iteration, sender), so the receiver knows them), fills,
 * exchanges, checks and frees them.  glibc serves large ones with fresh
 * mmaps that often land at an address just unmapped, with new pages behind
 * it: a registration cache that missed the unmap would send the old pages.
 * With --remap N every N-th iteration uses explicit mmap/munmap instead.
 * Every received word carries the pattern of (iteration, sender, buffer).
 */
#define _GNU_SOURCE
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "mpiwork.h"

#define BUFFERS 3

struct buf {
	unsigned char *p;
	size_t len;
	bool mapped;		/* mmap'd (munmap), else malloc'd (free) */
};

static size_t size_of(const struct mpiwork_opts *o, uint64_t it, int sender,
		      unsigned k)
{
	size_t span = (o->size - o->min_size) / 8 + 1;

	return o->min_size + 8 * mpiwork_random(o, it, (uint64_t)sender << 8 | k, span);
}

static bool get(struct buf *b, size_t len, bool mapped)
{
	b->len = len;
	b->mapped = mapped;
	b->p = mapped ? mpiwork_map(len) : malloc(len);
	return b->p != NULL;
}

static void put(struct buf *b)
{
	if (b->mapped && b->p)
		munmap(b->p, b->len);
	else
		free(b->p);
	b->p = NULL;
}

static bool iteration(const struct mpiwork_opts *o, uint64_t it, struct mpiwork_totals *t)
{
	int n = mpiwork_nranks(), me = mpiwork_rank();
	int to = (me + 1) % n, from = (me + n - 1) % n;
	bool mapped = o->remap && it % o->remap == 0, ok = true;
	struct buf send[BUFFERS] = { 0 }, recv[BUFFERS] = { 0 };
	MPI_Request req[2 * BUFFERS];
	/* Not MPI_STATUSES_IGNORE: MPICH's (MPI_Status *)1 upsets GCC's bounds checks. */
	MPI_Status st[2 * BUFFERS];
	double t0;

	for (unsigned k = 0; k < BUFFERS; k++) {
		ok &= get(&send[k], size_of(o, it, me, k), mapped);
		ok &= get(&recv[k], size_of(o, it, from, k), mapped);
	}
	if (!ok) {
		/* The peers wait for this rank's messages: stop them all. */
		fprintf(stderr, "mpiwork recycle: out of memory in iteration %llu\n",
			(unsigned long long)it);
		MPI_Abort(MPI_COMM_WORLD, 1);
	} else {
		for (unsigned k = 0; k < BUFFERS; k++)
			mpiwork_fill(send[k].p, send[k].len, mpiwork_seed(o, it, me, to, k));
		t0 = mpiwork_now();
		for (unsigned k = 0; k < BUFFERS; k++) {
			MPI_Irecv(recv[k].p, (int)recv[k].len, MPI_BYTE, from, (int)k,
				  MPI_COMM_WORLD, &req[k]);
			MPI_Isend(send[k].p, (int)send[k].len, MPI_BYTE, to, (int)k,
				  MPI_COMM_WORLD, &req[BUFFERS + k]);
		}
		MPI_Waitall(2 * BUFFERS, req, st);
		mpiwork_add_time(t, t0);
		for (unsigned k = 0; k < BUFFERS; k++)
			mpiwork_check(t, recv[k].p, recv[k].len, mpiwork_seed(o, it, from, me, k));
	}
	for (unsigned k = 0; k < BUFFERS; k++) {
		put(&send[k]);
		put(&recv[k]);
	}
	return ok;
}

int mpiwork_recycle(const struct mpiwork_opts *o)
{
	struct mpiwork_totals t;
	uint64_t it = 0;
	bool ok = true;

	mpiwork_begin(&t);
	for (; mpiwork_continue(o, it); it++)
		ok &= iteration(o, it, &t);
	return mpiwork_report(o, "recycle", it, &t, ok);
}
