// SPDX-License-Identifier: BSD-2-Clause
/*
 * Loads e2e_plugin with dlopen(RTLD_LOCAL) and runs it; not linked against
 * libibverbs itself.  Prints "e2e-dlopen: ok app_regs=N".
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv)
{
	int (*run)(void);
	void *h;
	int n;

	if (argc != 2) {
		fprintf(stderr, "usage: e2e_dlopen_prog PLUGIN.so\n");
		return 2;
	}
	h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	*(void **)&run = dlsym(h, "plugin_run");
	if (!run) {
		fprintf(stderr, "dlsym: %s\n", dlerror());
		return 1;
	}
	n = run();
	if (n <= 0)
		return 1;
	printf("e2e-dlopen: ok app_regs=%d\n", n);
	return 0;
}
