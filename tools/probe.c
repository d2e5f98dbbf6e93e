// SPDX-License-Identifier: BSD-2-Clause
/*
 * ummushim-probe: the measurements `ummushim check` cannot make from a
 * script.  Prints one "key value..." line per finding on stdout, exit 0
 * unless it is used wrongly (exit 2).
 *
 *   ummushim-probe monitors   opens each invalidation source with the shim's
 *                             own code, in the order UMMUSHIM_MONITOR=auto
 *                             tries them: "monitor NAME ok" or
 *                             "monitor NAME error TEXT"
 *   ummushim-probe verbs [DEV]
 *                             run under LD_PRELOAD=libummushim.so: which
 *                             library ibv_reg_mr binds to, libibverbs' file
 *                             and symbol versions, the RDMA devices, and on
 *                             DEV (default: the first device) two
 *                             registrations of one buffer with a
 *                             deregistration between them -- the second is
 *                             a cache hit when caching works
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <infiniband/verbs.h>

#include "monitor.h"

#define PROBE_BUF_LEN (64 * 1024)

/* The entry points the shim interposes, with libibverbs' symbol versions. */
static const char *const interposed[][2] = {
	{ "ibv_reg_mr", "IBVERBS_1.1" },
	{ "ibv_reg_mr_iova", "IBVERBS_1.7" },
	{ "ibv_reg_mr_iova2", "IBVERBS_1.8" },
	{ "ibv_dereg_mr", "IBVERBS_1.1" },
	{ "ibv_rereg_mr", "IBVERBS_1.1" },
	{ "ibv_dealloc_pd", "IBVERBS_1.1" },
	{ "ibv_close_device", "IBVERBS_1.1" },
};

static int probe_monitors(void)
{
	static const struct {
		const char *name;
		struct monitor *(*open)(void);
	} sources[] = {
		{ "ummunot", monitor_ummunot_open },
		{ "uffd", monitor_uffd_open },
	};

	for (size_t i = 0; i < sizeof(sources) / sizeof(sources[0]); i++) {
		struct monitor *m;

		errno = 0;
		m = sources[i].open();
		if (m) {
			printf("monitor %s ok\n", sources[i].name);
			m->ops->close(m);
		} else {
			printf("monitor %s error %s\n", sources[i].name,
			       strerror(errno));
		}
	}
	return 0;
}

/* "bind SYMBOL FILE": the object the dynamic linker resolves SYMBOL to. */
static void report_binding(const char *symbol)
{
	void *addr = dlsym(RTLD_DEFAULT, symbol);
	Dl_info info;

	if (addr && dladdr(addr, &info) && info.dli_fname)
		printf("bind %s %s\n", symbol, info.dli_fname);
	else
		printf("bind %s none\n", symbol);
}

static void report_libibverbs(void)
{
	void *h = dlopen("libibverbs.so.1", RTLD_LAZY | RTLD_NOLOAD);
	struct link_map *map = NULL;
	char real[PATH_MAX];

	if (!h) {
		printf("libibverbs none\n");
		return;
	}
	if (dlinfo(h, RTLD_DI_LINKMAP, &map) == 0 && map && map->l_name &&
	    realpath(map->l_name, real))
		printf("libibverbs %s\n", real);
	else
		printf("libibverbs unknown\n");
	for (size_t i = 0; i < sizeof(interposed) / sizeof(interposed[0]); i++)
		printf("symbol %s@%s %s\n", interposed[i][0], interposed[i][1],
		       dlvsym(h, interposed[i][0], interposed[i][1]) ?
		       "yes" : "no");
	dlclose(h);
}

/* Register, deregister, register again: the second one hits the cache. */
static void probe_registration(struct ibv_device *dev)
{
	const char *name = ibv_get_device_name(dev);
	struct ibv_context *ctx = ibv_open_device(dev);
	struct ibv_pd *pd = ctx ? ibv_alloc_pd(ctx) : NULL;
	struct ibv_mr *first = NULL, *second = NULL;
	void *buf;

	if (!pd) {
		printf("register %s error %s (%s)\n", name, strerror(errno),
		       ctx ? "ibv_alloc_pd" : "ibv_open_device");
		goto out;
	}
	buf = mmap(NULL, PROBE_BUF_LEN, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		printf("register %s error %s (mmap)\n", name, strerror(errno));
		goto out;
	}
	memset(buf, 0, PROBE_BUF_LEN);
	/* The parentheses call the exported symbol, not verbs.h's macro. */
	first = (ibv_reg_mr)(pd, buf, PROBE_BUF_LEN, IBV_ACCESS_LOCAL_WRITE);
	if (first) {
		ibv_dereg_mr(first);
		second = (ibv_reg_mr)(pd, buf, PROBE_BUF_LEN,
				      IBV_ACCESS_LOCAL_WRITE);
	}
	if (second) {
		printf("register %s ok same_mr=%d\n", name, first == second);
		ibv_dereg_mr(second);
	} else {
		printf("register %s error %s (ibv_reg_mr)\n", name,
		       strerror(errno));
	}
	munmap(buf, PROBE_BUF_LEN);
out:
	if (pd)
		ibv_dealloc_pd(pd);
	if (ctx)
		ibv_close_device(ctx);
}

static int probe_verbs(const char *want)
{
	struct ibv_device **list;
	struct ibv_device *pick = NULL;
	int n = 0;

	report_binding("ibv_reg_mr");
	report_binding("ibv_dereg_mr");
	report_libibverbs();
	list = ibv_get_device_list(&n);
	if (!list) {
		printf("devices error %s\n", strerror(errno));
		return 0;
	}
	for (int i = 0; i < n; i++) {
		const char *name = ibv_get_device_name(list[i]);

		printf("device %s\n", name);
		if (!pick && (!want || strcmp(want, name) == 0))
			pick = list[i];
	}
	if (pick)
		probe_registration(pick);
	else if (want)
		printf("register %s error no such device\n", want);
	ibv_free_device_list(list);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "monitors") == 0)
		return probe_monitors();
	if ((argc == 2 || argc == 3) && strcmp(argv[1], "verbs") == 0)
		return probe_verbs(argc == 3 ? argv[2] : NULL);
	fprintf(stderr, "usage: ummushim-probe monitors | verbs [DEVICE]\n");
	return 2;
}
