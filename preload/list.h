/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Intrusive circular doubly linked list (the node is embedded in the
 * element; container_of() gets back to it).  No allocation, no locking:
 * the owner of the list guards it.
 */
#ifndef UMMUSHIM_LIST_H
#define UMMUSHIM_LIST_H

#include <stdbool.h>
#include <stddef.h>

#define container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

struct list {
	struct list *prev, *next;
};

static inline void list_init(struct list *l)
{
	l->prev = l->next = l;
}

static inline bool list_empty(const struct list *l)
{
	return l->next == l;
}

static inline void list_add_head(struct list *head, struct list *n)
{
	n->next = head->next;
	n->prev = head;
	head->next->prev = n;
	head->next = n;
}

/* Unlink @n; it is left as an empty list of its own. */
static inline void list_del(struct list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

#endif /* UMMUSHIM_LIST_H */
