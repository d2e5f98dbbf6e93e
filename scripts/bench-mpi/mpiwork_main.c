// SPDX-License-Identifier: BSD-2-Clause
/* mpiwork's entry point: runs the listed workloads in turn (see mpiwork.h). */
#define _GNU_SOURCE
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "mpiwork.h"

static const struct {
	const char *name;
	int (*run)(const struct mpiwork_opts *o);
} workloads[] = {
	{ "pingpong", mpiwork_pingpong },
	{ "collectives", mpiwork_collectives },
	{ "halo", mpiwork_halo },
	{ "recycle", mpiwork_recycle },
};

#define NWORKLOADS (sizeof(workloads) / sizeof(workloads[0]))

/* The index of workload @name (length @len), or -1. */
static int find(const char *name, size_t len)
{
	for (size_t i = 0; i < NWORKLOADS; i++)
		if (strlen(workloads[i].name) == len && !strncmp(workloads[i].name, name, len))
			return (int)i;
	return -1;
}

/* Fills @order with the listed workloads; false on an unknown name. */
static bool parse_list(const char *list, int *order, size_t *n)
{
	*n = 0;
	while (*list && *n < 16) {
		size_t len = strcspn(list, ",");
		int w = find(list, len);

		if (w < 0)
			return false;
		order[(*n)++] = w;
		list += len + (list[len] == ',');
	}
	return *n > 0;
}

int main(int argc, char **argv)
{
	struct mpiwork_opts o;
	int order[16], status = 0;
	size_t n = 0;

	MPI_Init(&argc, &argv);
	if (argc < 2 || !parse_list(argv[1], order, &n)) {
		if (mpiwork_rank() == 0)
			fprintf(stderr, "mpiwork: first argument: a comma list of pingpong, collectives, halo, recycle\n");
		MPI_Finalize();
		return 1;
	}
	if (!mpiwork_parse(argc, argv, &o)) {
		MPI_Finalize();
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		int s = workloads[order[i]].run(&o);

		status = s > status ? s : status;
	}
	MPI_Finalize();
	return status;
}
