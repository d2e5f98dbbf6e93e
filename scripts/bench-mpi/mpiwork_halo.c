// SPDX-License-Identifier: BSD-2-Clause
/*
 * halo: the halo exchange of a 2-D stencil code over one large array.
 * Each rank holds --rows rows of --size bytes (one mapping) and works on a
 * window of half of them whose position moves every iteration, as in a
 * moving-window or load-balanced code.  The ranks form a periodic chain;
 * each iteration every rank sends its --depth boundary rows at either edge
 * of the window to its neighbours, one row per message, straight from the
 * array, and receives theirs into the window's ghost rows, then runs a
 * 5-point integer stencil over the window.  So every message is a slice of
 * one big region at an address that changes: a cache that registers the
 * whole region (UCX's) reuses it, a cache keyed on exact (address, length)
 * registers most slices anew.  Every received row carries the pattern of
 * (iteration, sender, receiver, row) and is checked.
 */
#define _GNU_SOURCE
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "mpiwork.h"

struct grid {
	unsigned char *base;
	size_t row;		/* bytes per row */
	unsigned rows;
	unsigned window;	/* rows in the moving window */
};

static unsigned char *row_at(const struct grid *g, unsigned r)
{
	return g->base + (size_t)r * g->row;
}

/* Direction 0 sends up (to rank - 1), direction 1 down (to rank + 1). */
static void exchange(const struct mpiwork_opts *o, uint64_t it,
		     const struct grid *g, unsigned off, struct mpiwork_totals *t,
		     MPI_Request *req, MPI_Status *st)
{
	int n = mpiwork_nranks(), me = mpiwork_rank();
	int peer[2] = { (me + n - 1) % n, (me + 1) % n };
	unsigned d = o->depth, nreq = 0;
	/* Ghost rows received from each side and the boundary rows sent there. */
	unsigned ghost[2] = { off, off + g->window - d };
	unsigned edge[2] = { off + d, off + g->window - 2 * d };
	double t0;

	for (unsigned dir = 0; dir < 2; dir++)
		for (unsigned k = 0; k < d; k++)
			mpiwork_fill(row_at(g, edge[dir] + k), g->row,
				     mpiwork_seed(o, it, me, peer[dir], dir * d + k));
	t0 = mpiwork_now();
	/* What comes from the upper neighbour was sent downwards (dir 1). */
	for (unsigned dir = 0; dir < 2; dir++)
		for (unsigned k = 0; k < d; k++)
			MPI_Irecv(row_at(g, ghost[dir] + k), (int)g->row, MPI_BYTE,
				  peer[dir], (int)((1 - dir) * d + k), MPI_COMM_WORLD,
				  &req[nreq++]);
	for (unsigned dir = 0; dir < 2; dir++)
		for (unsigned k = 0; k < d; k++)
			MPI_Isend(row_at(g, edge[dir] + k), (int)g->row, MPI_BYTE,
				  peer[dir], (int)(dir * d + k), MPI_COMM_WORLD,
				  &req[nreq++]);
	MPI_Waitall((int)nreq, req, st);
	mpiwork_add_time(t, t0);
	for (unsigned dir = 0; dir < 2; dir++)
		for (unsigned k = 0; k < d; k++)
			mpiwork_check(t, row_at(g, ghost[dir] + k), g->row,
				      mpiwork_seed(o, it, peer[dir], me, (1 - dir) * d + k));
}

/* The computation between exchanges: a 5-point integer stencil over the window. */
static void stencil(const struct grid *g, unsigned off)
{
	size_t words = g->row / 8;

	for (unsigned r = off + 1; r + 1 < off + g->window; r++) {
		uint64_t *up = (uint64_t *)row_at(g, r - 1), *mid = (uint64_t *)row_at(g, r);
		const uint64_t *down = (const uint64_t *)row_at(g, r + 1);

		for (size_t i = 1; i + 1 < words; i++)
			mid[i] = (up[i] + down[i] + mid[i - 1] + mid[i + 1]) >> 2;
	}
}

int mpiwork_halo(const struct mpiwork_opts *o)
{
	struct mpiwork_totals t;
	struct grid g = { .row = o->size, .rows = o->rows, .window = o->rows / 2 };
	MPI_Request *req = calloc(4 * o->depth, sizeof(*req));
	/* Not MPI_STATUSES_IGNORE: MPICH's (MPI_Status *)1 upsets GCC's bounds checks. */
	MPI_Status *st = calloc(4 * o->depth, sizeof(*st));
	uint64_t it = 0;
	bool ok;
	int status;

	if (g.window < 4 * o->depth)
		g.window = 4 * o->depth;
	g.base = mpiwork_map((size_t)g.rows * g.row);
	ok = g.base && req && st && g.window <= g.rows;
	mpiwork_begin(&t);
	for (; ok && mpiwork_continue(o, it); it++) {
		unsigned off = (unsigned)mpiwork_random(o, it, 7, g.rows - g.window + 1);

		exchange(o, it, &g, off, &t, req, st);
		stencil(&g, off);
	}
	status = mpiwork_report(o, "halo", it, &t, ok);
	if (g.base)
		munmap(g.base, (size_t)g.rows * g.row);
	free(req);
	free(st);
	return status;
}
