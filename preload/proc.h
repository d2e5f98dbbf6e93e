/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Process state: the shim's only pthread_atfork() handler, and the
 * question "is this still the process that created X?".
 *
 * Modules that must act around fork() (take their locks in the parent
 * before it, let go of them on both sides, mark themselves as the child's
 * copy) register a struct proc_fork_hooks.  As with pthread_atfork(),
 * prepare hooks run in reverse order of registration, parent and child
 * hooks in order of registration, so a module registered later (the
 * cache, after its monitor) takes its locks first and releases them last.
 *
 * A child made without the fork handlers (syscall(SYS_fork), clone())
 * runs no hook; proc_is_other() catches it, by pid, where a caller can
 * afford a system call.
 */
#ifndef UMMUSHIM_PROC_H
#define UMMUSHIM_PROC_H

#include <stdbool.h>
#include <sys/types.h>

struct proc_fork_hooks {
	void (*prepare)(void *arg);	/* each may be NULL */
	void (*parent)(void *arg);
	void (*child)(void *arg);
	void *arg;
	struct proc_fork_hooks *next;	/* private to proc.c */
};

/*
 * Add @h (caller-owned, must stay valid until removed) to the hooks run
 * around fork(); installs the process's atfork handler on first use.
 * Adding @h twice is a no-op.
 */
void proc_fork_hooks_add(struct proc_fork_hooks *h);
void proc_fork_hooks_remove(struct proc_fork_hooks *h);

/* The calling process's pid (a system call). */
pid_t proc_pid(void);

/* Whether the calling process is not @owner (a system call). */
bool proc_is_other(pid_t owner);

#endif /* UMMUSHIM_PROC_H */
