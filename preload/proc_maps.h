/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * This process's memory map, as the userfaultfd monitor needs it: which
 * mappings overlap a range (/proc/self/maps, parsed without allocating),
 * whether a range is all private anonymous memory (PROCMAP_QUERY where
 * the kernel has it, 6.11, else the text), and how many mappings exist.
 */
#ifndef UMMUSHIM_PROC_MAPS_H
#define UMMUSHIM_PROC_MAPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct proc_vma {
	uintptr_t start, end;
	char perms[4];
	unsigned long dev_major, dev_minor, inode;
};

/* Called for each mapping overlapping the walk; nonzero return stops. */
typedef int (*proc_vma_fn)(void *arg, const struct proc_vma *v);

/* An incremental parser of the text: feed it the file in any chunks. */
struct maps_parser {
	int field;	/* 0 start 1 end 2 perms 3 offset 4 major 5 minor 6 inode 7 rest */
	size_t nperm;
	struct proc_vma cur;
	uintptr_t start, end;	/* the walk's range */
	proc_vma_fn fn;
	void *arg;
};

void maps_parser_init(struct maps_parser *p, uintptr_t start, uintptr_t end,
		      proc_vma_fn fn, void *arg);
/*
 * 0: feed more; 1: done (a mapping at or past the range's end, or @fn
 * stopped); -EIO: a line not in the format of /proc/PID/maps.
 */
int maps_parser_feed(struct maps_parser *p, const char *buf, size_t n);

/*
 * Call @fn for every mapping of this process overlapping [start, end), in
 * address order; reads only as much of /proc/self/maps as needed.
 */
int proc_maps_walk(uintptr_t start, uintptr_t end, proc_vma_fn fn, void *arg);

/*
 * 0 when [start, end) is covered by private anonymous mappings; -EFAULT
 * (a hole), -EINVAL (shared or file-backed) or another negative errno.
 * *@use_query: try PROCMAP_QUERY first; cleared where the kernel lacks it.
 */
int proc_maps_check_private_anon(bool *use_query, uintptr_t start,
				 uintptr_t end);

/* The number of mappings of this process, or a negative errno. */
long proc_maps_count(void);

/* How many more mappings vm.max_map_count lets this process make (or <0). */
long proc_maps_room(void);

#endif /* UMMUSHIM_PROC_MAPS_H */
