// SPDX-License-Identifier: BSD-2-Clause
#define _GNU_SOURCE
#include "proc.h"

#include <pthread.h>
#include <unistd.h>

/*
 * Global: fork handlers are process-wide and cannot be unregistered, so
 * the one handler walks this list.  hooks_lock is held from the prepare
 * handler until the parent/child handler, so a list change never races
 * with a fork and the child sees a consistent list.
 */
static pthread_mutex_t hooks_lock = PTHREAD_MUTEX_INITIALIZER;
static struct proc_fork_hooks *hooks;	/* most recently added first */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* Prepare: most recently added first (the list order). */
static void run_prepare(void)
{
	pthread_mutex_lock(&hooks_lock);
	for (struct proc_fork_hooks *h = hooks; h; h = h->next)
		if (h->prepare)
			h->prepare(h->arg);
}

/* Parent and child: in order of registration (the list reversed). */
static void run_after(struct proc_fork_hooks *h, bool child)
{
	if (!h)
		return;
	run_after(h->next, child);
	if (child && h->child)
		h->child(h->arg);
	else if (!child && h->parent)
		h->parent(h->arg);
}

static void run_parent(void)
{
	run_after(hooks, false);
	pthread_mutex_unlock(&hooks_lock);
}

static void run_child(void)
{
	run_after(hooks, true);
	pthread_mutex_unlock(&hooks_lock);
}

static void install_atfork(void)
{
	pthread_atfork(run_prepare, run_parent, run_child);
}

void proc_fork_hooks_add(struct proc_fork_hooks *h)
{
	pthread_once(&atfork_once, install_atfork);
	pthread_mutex_lock(&hooks_lock);
	for (struct proc_fork_hooks *p = hooks; p; p = p->next)
		if (p == h)
			goto out;
	h->next = hooks;
	hooks = h;
out:
	pthread_mutex_unlock(&hooks_lock);
}

void proc_fork_hooks_remove(struct proc_fork_hooks *h)
{
	pthread_mutex_lock(&hooks_lock);
	for (struct proc_fork_hooks **p = &hooks; *p; p = &(*p)->next) {
		if (*p == h) {
			*p = h->next;
			break;
		}
	}
	pthread_mutex_unlock(&hooks_lock);
}

pid_t proc_pid(void)
{
	return getpid();
}

bool proc_is_other(pid_t owner)
{
	return getpid() != owner;
}
