// SPDX-License-Identifier: BSD-2-Clause
/*
 * Two guest programs for vm-shim-release.sh, run with the shim preloaded
 * over Soft-RoCE (an ordinary verbs program, not linked against the shim):
 *
 *   device FILE...  maps the first of FILE (PCI BAR resource files) that
 *                   mmap()s (a VM_IO|VM_PFNMAP mapping) and registers one
 *                   page of it twice; the shim must not cache it (the real
 *                   registration's result, whatever it is, is returned).
 *                   Prints "device FILE reg=<errno or 0>".
 *   unpin MIB       registers a MIB MiB buffer, deregisters it (the shim
 *                   keeps it registered, idle), frees it and, making no
 *                   further verbs call, waits until the kernel's pinned
 *                   page count (VmPin) drops.  Prints
 *                   "unpinned_after_ms=<ms>" or "unpinned_after_ms=never",
 *                   then deallocates the PD, which waits for the shim's
 *                   release still under way (VmPin drops during the real
 *                   ibv_dereg_mr, before the shim counts it), and prints
 *                   "dealloc_pd=<errno>".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <infiniband/verbs.h>

#define WAIT_MS 10000

static struct ibv_pd *open_pd(void)
{
	struct ibv_device **list = ibv_get_device_list(NULL);
	struct ibv_context *ctx;

	if (!list || !list[0]) {
		fprintf(stderr, "no RDMA device\n");
		return NULL;
	}
	ctx = ibv_open_device(list[0]);
	ibv_free_device_list(list);
	return ctx ? ibv_alloc_pd(ctx) : NULL;
}

static int case_device(struct ibv_pd *pd, int n, char **files)
{
	long page = sysconf(_SC_PAGESIZE);

	for (int i = 0; i < n; i++) {
		struct ibv_mr *a, *b;
		int fd = open(files[i], O_RDWR | O_SYNC);
		void *p;
		int err;

		if (fd < 0)
			continue;
		p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
		close(fd);
		if (p == MAP_FAILED)
			continue;
		a = ibv_reg_mr(pd, p, (size_t)page, IBV_ACCESS_LOCAL_WRITE);
		err = a ? 0 : errno;
		b = ibv_reg_mr(pd, p, (size_t)page, IBV_ACCESS_LOCAL_WRITE);
		printf("device %s reg=%d\n", files[i], err);
		if (a && b && a == b)
			printf("device: the same MR twice: cached\n");
		if (a)
			ibv_dereg_mr(a);
		if (b)
			ibv_dereg_mr(b);
		munmap(p, (size_t)page);
		return 0;
	}
	fprintf(stderr, "device: no resource file could be mapped\n");
	return 1;
}

/* VmPin of this process, in kB; -1 if unknown. */
static long vm_pin_kb(void)
{
	char line[256];
	FILE *f = fopen("/proc/self/status", "r");
	long kb = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmPin: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static double now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int case_unpin(struct ibv_pd *pd, long mib)
{
	size_t len = (size_t)mib << 20;
	char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct ibv_mr *mr;
	long pinned, half;
	double t0;

	if (buf == MAP_FAILED)
		return 1;
	memset(buf, 1, len);
	mr = ibv_reg_mr(pd, buf, len, IBV_ACCESS_LOCAL_WRITE);
	if (!mr) {
		perror("ibv_reg_mr");
		return 1;
	}
	if (ibv_dereg_mr(mr))
		return 1;
	pinned = vm_pin_kb();
	printf("pinned_kb_after_dereg=%ld\n", pinned);
	half = (long)(len >> 11);	/* half of the buffer, in kB */
	t0 = now_ms();
	munmap(buf, len);
	/* No verbs call from here on: only the shim's own thread may help. */
	while (vm_pin_kb() >= half && now_ms() - t0 <= WAIT_MS)
		usleep(200);
	if (vm_pin_kb() >= half)
		printf("unpinned_after_ms=never\n");
	else
		printf("unpinned_after_ms=%.1f\n", now_ms() - t0);
	/* Verbs calls allowed again: the shim's exit report counts it. */
	printf("dealloc_pd=%d\n", ibv_dealloc_pd(pd));
	return 0;
}

int main(int argc, char **argv)
{
	struct ibv_pd *pd;

	if (argc < 3) {
		fprintf(stderr, "usage: vm-release device FILE... | unpin MIB\n");
		return 2;
	}
	pd = open_pd();
	if (!pd)
		return 1;
	if (strcmp(argv[1], "device") == 0)
		return case_device(pd, argc - 2, argv + 2);
	if (strcmp(argv[1], "unpin") == 0)
		return case_unpin(pd, atol(argv[2]));
	return 2;
}
