// SPDX-License-Identifier: BSD-2-Clause
#define _GNU_SOURCE
#include "fakes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct fake_monitor *to_fake(struct monitor *m)
{
	return (struct fake_monitor *)m;
}

static int fm_watch(struct monitor *mon, uint64_t cookie, uintptr_t start,
		    uintptr_t end)
{
	struct fake_monitor *m = to_fake(mon);
	int rc = -ENOSPC;

	atomic_fetch_add(&m->n_watch, 1);
	if (m->watch_errno)
		return -m->watch_errno;
	pthread_mutex_lock(&m->lock);
	for (int i = 0; i < FAKE_MAX_WATCHES; i++) {
		if (!m->watches[i].active) {
			m->watches[i].cookie = cookie;
			m->watches[i].start = start;
			m->watches[i].end = end;
			m->watches[i].active = true;
			atomic_fetch_add(&m->n_active, 1);
			rc = 0;
			break;
		}
	}
	pthread_mutex_unlock(&m->lock);
	if (rc == 0 && m->on_watch)
		m->on_watch(m, start, end);
	return rc;
}

static void fm_unwatch(struct monitor *mon, uint64_t cookie)
{
	struct fake_monitor *m = to_fake(mon);

	atomic_fetch_add(&m->n_unwatch, 1);
	pthread_mutex_lock(&m->lock);
	for (int i = 0; i < FAKE_MAX_WATCHES; i++) {
		if (m->watches[i].active && m->watches[i].cookie == cookie) {
			m->watches[i].active = false;
			atomic_fetch_sub(&m->n_active, 1);
			break;
		}
	}
	/* Like the module: unwatching drops the pending event. */
	for (int i = 0; i < m->n_events; i++) {
		if (m->events[i].cookie == cookie) {
			m->events[i] = m->events[--m->n_events];
			i--;
		}
	}
	pthread_mutex_unlock(&m->lock);
}

static bool fm_changed(struct monitor *mon)
{
	struct fake_monitor *m = to_fake(mon);

	atomic_fetch_add(&m->n_changed, 1);
	return atomic_load(&m->dirty);
}

static int fm_drain(struct monitor *mon, monitor_inval_fn fn, void *ctx)
{
	struct fake_monitor *m = to_fake(mon);
	struct fake_event *ev;
	int n;

	atomic_fetch_add(&m->n_drain, 1);
	if (m->drain_errno)
		return -m->drain_errno;
	pthread_mutex_lock(&m->lock);
	if (m->wake_rfd >= 0) {
		char b[64];

		while (read(m->wake_rfd, b, sizeof(b)) > 0)
			;
	}
	n = m->n_events;
	ev = malloc(sizeof(*ev) * (size_t)(n ? n : 1));
	memcpy(ev, m->events, sizeof(*ev) * (size_t)n);
	m->n_events = 0;
	atomic_store(&m->dirty, false);
	pthread_mutex_unlock(&m->lock);
	for (int i = 0; i < n; i++)
		fn(ctx, ev[i].cookie, ev[i].start, ev[i].end, ev[i].flags);
	free(ev);
	return 0;
}

static int fm_wait_fd(struct monitor *mon)
{
	return to_fake(mon)->wake_rfd;
}

static void fm_close(struct monitor *mon)
{
	(void)mon;
}

static const struct monitor_ops fake_monitor_ops = {
	.name = "fake",
	.watch = fm_watch,
	.unwatch = fm_unwatch,
	.changed = fm_changed,
	.drain = fm_drain,
	.wait_fd = fm_wait_fd,
	.close = fm_close,
};

static bool fm_check(struct monitor *mon, uintptr_t start, uintptr_t end)
{
	struct fake_monitor *m = to_fake(mon);

	(void)start;
	(void)end;
	atomic_fetch_add(&m->n_check, 1);
	return !atomic_load(&m->dirty);
}

static const struct monitor_ops fake_monitor_check_ops = {
	.name = "fake-check",
	.watch = fm_watch,
	.unwatch = fm_unwatch,
	.changed = fm_changed,
	.check = fm_check,
	.drain = fm_drain,
	.wait_fd = fm_wait_fd,
	.close = fm_close,
};

void fake_monitor_use_check(struct fake_monitor *m)
{
	m->base.ops = &fake_monitor_check_ops;
}

void fake_monitor_init(struct fake_monitor *m)
{
	memset(m, 0, sizeof(*m));
	m->base.ops = &fake_monitor_ops;
	m->wake_wfd = m->wake_rfd = -1;
	pthread_mutex_init(&m->lock, NULL);
}

static void queue_event(struct fake_monitor *m, uint64_t cookie,
			uintptr_t start, uintptr_t end, unsigned int flags)
{
	/* One pending event per watch, like the module (coalesced). */
	for (int i = 0; i < m->n_events; i++)
		if (cookie != MONITOR_COOKIE_ANY && m->events[i].cookie == cookie)
			return;
	if (m->n_events < FAKE_MAX_EVENTS)
		m->events[m->n_events++] =
			(struct fake_event){ cookie, start, end, flags };
}

void fake_invalidate(struct fake_monitor *m, uintptr_t start, uintptr_t end)
{
	fake_invalidate_flags(m, start, end, 0);
}

void fake_invalidate_flags(struct fake_monitor *m, uintptr_t start,
			   uintptr_t end, unsigned int flags)
{
	pthread_mutex_lock(&m->lock);
	if (m->range_mode) {
		queue_event(m, MONITOR_COOKIE_ANY, start, end, flags);
	} else {
		for (int i = 0; i < FAKE_MAX_WATCHES; i++)
			if (m->watches[i].active && m->watches[i].start < end &&
			    start < m->watches[i].end)
				queue_event(m, m->watches[i].cookie, start, end,
					    flags);
	}
	atomic_store(&m->dirty, true);
	if (m->wake_wfd >= 0 && write(m->wake_wfd, "", 1) < 0)
		abort();	/* a non-blocking pipe with room: cannot fail */
	pthread_mutex_unlock(&m->lock);
}

/* ---- fake registration functions ---------------------------------------- */

static void *fv_reg(void *arg, const struct cache_key *key, int how)
{
	struct fake_verbs *v = arg;
	struct fake_mr *mr;

	atomic_fetch_add(&v->n_reg, 1);
	atomic_store(&v->last_how, how);
	pthread_mutex_lock(&v->lock);
	v->last_key = *key;
	pthread_mutex_unlock(&v->lock);
	if (v->reg_delay_us)
		usleep(v->reg_delay_us);
	if (v->on_reg)
		v->on_reg(v, key);
	if (v->reg_errno) {
		errno = v->reg_errno;
		return NULL;
	}
	if (v->max_live > 0 && atomic_load(&v->live) >= v->max_live) {
		errno = ENOMEM;
		return NULL;
	}
	mr = calloc(1, sizeof(*mr));
	if (!mr)
		return NULL;
	mr->magic = FAKE_MR_MAGIC;
	mr->key = *key;
	mr->serial = atomic_fetch_add(&v->next_serial, 1);
	atomic_fetch_add(&v->live, 1);
	pthread_mutex_lock(&v->lock);
	mr->next = v->live_list.next;
	mr->prev = &v->live_list;
	v->live_list.next->prev = mr;
	v->live_list.next = mr;
	pthread_mutex_unlock(&v->lock);
	return mr;
}

static int fv_dereg(void *arg, void *p)
{
	struct fake_verbs *v = arg;
	struct fake_mr *mr = p;

	atomic_fetch_add(&v->n_dereg, 1);
	if (v->on_dereg)
		v->on_dereg(v);
	if (v->dereg_rc)
		return v->dereg_rc;
	if (!mr || mr->magic != FAKE_MR_MAGIC)
		return EINVAL;
	mr->magic = 0;
	atomic_fetch_sub(&v->live, 1);
	pthread_mutex_lock(&v->lock);
	mr->prev->next = mr->next;
	mr->next->prev = mr->prev;
	pthread_mutex_unlock(&v->lock);
	free(mr);
	return 0;
}

void fake_verbs_init(struct fake_verbs *v)
{
	memset(v, 0, sizeof(*v));
	pthread_mutex_init(&v->lock, NULL);
	v->live_list.next = v->live_list.prev = &v->live_list;
}

void fake_verbs_free_all(struct fake_verbs *v)
{
	pthread_mutex_lock(&v->lock);
	while (v->live_list.next != &v->live_list) {
		struct fake_mr *mr = v->live_list.next;

		v->live_list.next = mr->next;
		mr->next->prev = &v->live_list;
		free(mr);
	}
	pthread_mutex_unlock(&v->lock);
}

/* A slice: the region's serial (its "keys"), the request's range. */
static void fv_slice_init(void *slice, const void *region_mr,
			  const struct cache_key *key)
{
	struct fake_mr *s = slice;
	const struct fake_mr *r = region_mr;

	memset(s, 0, sizeof(*s));
	s->magic = FAKE_SLICE_MAGIC;
	s->key = *key;
	s->serial = r->serial;
}

void fake_verbs_ops(struct fake_verbs *v, struct cache_ops *ops)
{
	ops->reg = fv_reg;
	ops->dereg = fv_dereg;
	ops->slice_size = sizeof(struct fake_mr);
	ops->slice_init = fv_slice_init;
	ops->arg = v;
}
