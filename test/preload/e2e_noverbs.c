// SPDX-License-Identifier: BSD-2-Clause
/*
 * A program without libibverbs that reaches the shim's ibv_reg_mr and
 * ibv_dereg_mr through dlsym: the shim cannot find the real functions and
 * must fail the calls cleanly (NULL/ENOSYS), never crash.  Prints
 * "e2e-noverbs: ok".
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <infiniband/verbs.h>

typedef struct ibv_mr *(*reg_fn)(struct ibv_pd *, void *, size_t, int);
typedef int (*dereg_fn)(struct ibv_mr *);

int main(void)
{
	static char buf[4096];
	struct ibv_context ctx;
	struct ibv_pd pd = { .context = &ctx };
	struct ibv_mr mr;
	reg_fn reg;
	dereg_fn dereg;

	*(void **)&reg = dlsym(RTLD_DEFAULT, "ibv_reg_mr");
	*(void **)&dereg = dlsym(RTLD_DEFAULT, "ibv_dereg_mr");
	if (!reg || !dereg) {
		fprintf(stderr, "e2e-noverbs: the shim is not preloaded\n");
		return 1;
	}
	memset(&ctx, 0, sizeof(ctx));
	memset(&mr, 0, sizeof(mr));
	for (int i = 0; i < 2; i++) {
		errno = 0;
		if (reg(&pd, buf, sizeof(buf), IBV_ACCESS_LOCAL_WRITE) ||
		    errno != ENOSYS) {
			fprintf(stderr, "e2e-noverbs: reg: errno %d\n", errno);
			return 1;
		}
	}
	if (dereg(&mr) != ENOSYS) {
		fprintf(stderr, "e2e-noverbs: dereg\n");
		return 1;
	}
	printf("e2e-noverbs: ok\n");
	return 0;
}
