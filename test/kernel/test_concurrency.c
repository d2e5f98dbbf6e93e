// SPDX-License-Identifier: GPL-2.0-only
/*
 * Concurrency with an exact oracle.
 *
 * Mutator threads each own a private stretch of address space and never
 * reuse an address, so every registration they make is invalidated only by
 * their own known operations.  Registrar threads register and unregister
 * ranges that nothing ever invalidates.  A reader thread consumes events
 * all along.  Afterwards every mutator registration must have received
 * events whose hints are exactly the hulls of a split of its invalidations
 * (read in between or coalesced), registrars none, and the counter must
 * have moved by exactly the number of (invalidation, registration) hits.
 *
 * A second test checks that REGISTER racing with an invalidation of its
 * range returns only after the invalidation finished.
 */
#include "ktest.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MUTATORS 2
#define REGISTRARS 2
#define RUN_SECONDS 3
/*
 * Keep going past RUN_SECONDS (up to MAX_SECONDS, times kt_time_factor())
 * until this much was done.
 */
#define MIN_ITERS 200
#define MAX_SECONDS 60
#define SLOT_PAGES 4                     /* pages mapped per iteration */
#define STRIDE_PAGES (2 * SLOT_PAGES + 2) /* slot, guard, mremap target, guard */
/*
 * Each iteration adds a few VMAs (vm.max_map_count is 65530) and leaves a
 * few pages mapped, so bound the iterations per mutator.
 */
#define MAX_ITERS 6000UL
#define AREA_PAGES (MAX_ITERS * STRIDE_PAGES)
#define MAX_EVENTS_PER_REG 4
#define REGISTRAR_PAGES 1024
#define REGISTRAR_LIVE 64

/* Cookie layout: thread kind and index in the top bits, iteration below. */
#define MUTATOR_COOKIE(m, i) (((uint64_t)(m) << 32) | (i))
#define REGISTRAR_COOKIE(r, j) ((1ULL << 63) | ((uint64_t)(r) << 32) | (j))

struct range {
	uint64_t start, end;
};

/* What one mutator registration saw and what was read for it. */
struct mreg {
	struct range range;
	int ninv;                 /* invalidations, in order */
	struct range inv[2];
	int nev;
	struct range ev[MAX_EVENTS_PER_REG];
};

struct mutator {
	int id;
	char *area;
	uint64_t iters;
	struct mreg *regs;       /* MAX_ITERS entries */
	uint64_t hits;           /* counter increments caused */
	char failure[160];
};

struct registrar {
	int id;
	char *area;
	_Atomic uint64_t registered;	/* read while running: when to stop */
	char failure[160];
};

struct shared {
	int fd;
	const volatile uint64_t *counter;
	atomic_int stop_writers;
	atomic_int stop_reader;
	struct ummunot_event *events; /* owned by the reader thread */
	size_t nevents, cap;
	char failure[160];
};

/* Shared by the worker threads of the one test that runs in this process. */
static struct shared sh;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Beware of VMA splits: splitting a VMA that spans a whole 2 MiB-aligned
 * range makes the kernel invalidate that range (__split_huge_pmd, even
 * without huge pages).  So a VMA that overlaps a registration is never
 * split after the registration was made: each area is fenced by PROT_READ
 * pages, mutators only carve new slots from the front of their untouched
 * reservation (above every registration of theirs), and holes are refilled
 * with PROT_READ, which never merges with the PROT_NONE reservation or the
 * read/write slots around it.
 */
static void refill(uint64_t start, uint64_t end)
{
	mmap((void *)start, end - start, PROT_READ,
	     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_NORESERVE,
	     -1, 0);
}

/* A PROT_NONE reservation of npages with a PROT_READ fence page each side. */
static char *fenced_area(size_t npages)
{
	char *p = kt_reserve(npages + 2);

	ck_assert_int_eq(mprotect(p, kt_page(), PROT_READ), 0);
	ck_assert_int_eq(mprotect((void *)kt_pg(p, npages + 1), kt_page(),
				  PROT_READ), 0);
	return (char *)kt_pg(p, 1);
}

static void note_inv(struct mreg *r, uint64_t start, uint64_t end)
{
	r->inv[r->ninv++] = (struct range){ start, end };
}

/* One iteration: map a fresh slot, register it, maybe invalidate it. */
static int mutate_once(struct mutator *m, uint64_t i)
{
	const uint64_t pg = kt_page();
	uint64_t b = kt_pg(m->area, i * STRIDE_PAGES);
	uint64_t dst = b + (SLOT_PAGES + 1) * pg;
	struct mreg *r = &m->regs[i];
	void *p;
	int e;

	p = mmap((void *)b, SLOT_PAGES * pg, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (p != (void *)b) {
		snprintf(m->failure, sizeof(m->failure), "mmap: %s",
			 strerror(errno));
		return -1;
	}
	kt_touch(p, SLOT_PAGES);
	r->range = (struct range){ b, b + SLOT_PAGES * pg };
	e = kt_register(sh.fd, b, b + SLOT_PAGES * pg, MUTATOR_COOKIE(m->id, i));
	if (e != 0) {
		snprintf(m->failure, sizeof(m->failure), "REGISTER: %s",
			 strerror(e));
		return -1;
	}
	switch (i % 6) {
	case 0: /* munmap all */
		munmap((void *)b, SLOT_PAGES * pg);
		note_inv(r, b, b + SLOT_PAGES * pg);
		refill(b, b + SLOT_PAGES * pg);
		break;
	case 1: /* munmap the middle */
		munmap((void *)(b + pg), 2 * pg);
		note_inv(r, b + pg, b + 3 * pg);
		refill(b + pg, b + 3 * pg);
		break;
	case 2: /* two invalidations: may be read apart or coalesced */
		madvise((void *)b, pg, MADV_DONTNEED);
		note_inv(r, b, b + pg);
		munmap((void *)(b + 3 * pg), pg);
		note_inv(r, b + 3 * pg, b + 4 * pg);
		refill(b + 3 * pg, b + 4 * pg);
		break;
	case 3: /* mremap shrink: the tail goes */
		mremap((void *)b, SLOT_PAGES * pg, pg, 0);
		note_inv(r, b + pg, b + SLOT_PAGES * pg);
		refill(b + pg, b + SLOT_PAGES * pg);
		break;
	case 4: /* mremap move: page tables moved, then the old range unmapped */
		if (mremap((void *)b, SLOT_PAGES * pg, SLOT_PAGES * pg,
			   MREMAP_MAYMOVE | MREMAP_FIXED, (void *)dst) !=
		    (void *)dst) {
			snprintf(m->failure, sizeof(m->failure), "mremap: %s",
				 strerror(errno));
			return -1;
		}
		note_inv(r, b, b + SLOT_PAGES * pg);
		note_inv(r, b, b + SLOT_PAGES * pg);
		refill(b, b + SLOT_PAGES * pg);
		break;
	default:
		/*
		 * Permission change and writes only: no event.  Then give the
		 * memory back; a spurious event dropped by this UNREGISTER
		 * would still show in the counter.
		 */
		mprotect((void *)b, SLOT_PAGES * pg, PROT_READ);
		mprotect((void *)b, SLOT_PAGES * pg, PROT_READ | PROT_WRITE);
		kt_touch(p, SLOT_PAGES);
		e = kt_unregister(sh.fd, MUTATOR_COOKIE(m->id, i));
		if (e != 0) {
			snprintf(m->failure, sizeof(m->failure),
				 "UNREGISTER: %s", strerror(e));
			return -1;
		}
		munmap((void *)b, SLOT_PAGES * pg);
		refill(b, b + SLOT_PAGES * pg);
		break;
	}
	m->hits += (uint64_t)r->ninv;
	return 0;
}

static void *mutator_main(void *arg)
{
	struct mutator *m = arg;

	while (!atomic_load(&sh.stop_writers) && m->iters < MAX_ITERS) {
		if (mutate_once(m, m->iters) != 0)
			break;
		m->iters++;
	}
	return NULL;
}

static void *registrar_main(void *arg)
{
	struct registrar *r = arg;
	uint64_t live[REGISTRAR_LIVE];
	unsigned int seed = 1234u + (unsigned int)r->id;
	uint64_t j = 0;
	int e;

	while (!atomic_load(&sh.stop_writers)) {
		uint64_t slot = j % REGISTRAR_LIVE;
		uint64_t first = (uint64_t)rand_r(&seed) % (REGISTRAR_PAGES - 8);
		uint64_t len = 1 + (uint64_t)rand_r(&seed) % 8;

		if (j >= REGISTRAR_LIVE) {
			e = kt_unregister(sh.fd, live[slot]);
			if (e) {
				snprintf(r->failure, sizeof(r->failure),
					 "UNREGISTER: %s", strerror(e));
				return NULL;
			}
		}
		live[slot] = REGISTRAR_COOKIE(r->id, j);
		e = kt_register(sh.fd, kt_pg(r->area, first),
				kt_pg(r->area, first + len), live[slot]);
		if (e) {
			snprintf(r->failure, sizeof(r->failure),
				 "REGISTER: %s", strerror(e));
			return NULL;
		}
		j++;
		atomic_store_explicit(&r->registered, j, memory_order_relaxed);
	}
	for (uint64_t k = 0; k < j && k < REGISTRAR_LIVE; k++)
		kt_unregister(sh.fd, live[k]);
	return NULL;
}

static int append_events(const struct ummunot_event *ev, size_t n)
{
	if (sh.nevents + n > sh.cap) {
		size_t cap = 2 * (sh.cap + n);
		struct ummunot_event *bigger =
			realloc(sh.events, cap * sizeof(*bigger));

		if (!bigger)
			return -1;
		sh.events = bigger;
		sh.cap = cap;
	}
	memcpy(sh.events + sh.nevents, ev, n * sizeof(*ev));
	sh.nevents += n;
	return 0;
}

static void *reader_main(void *arg)
{
	struct ummunot_event buf[256];
	struct pollfd pfd = { .fd = sh.fd, .events = POLLIN };

	(void)arg;
	for (;;) {
		int stopping = atomic_load(&sh.stop_reader);
		ssize_t n = kt_read(sh.fd, buf, sizeof(buf));

		if (n == -EAGAIN) {
			if (stopping)
				return NULL;
			poll(&pfd, 1, 20);
			continue;
		}
		if (n <= 0 || n % KT_EVENT_SIZE) {
			snprintf(sh.failure, sizeof(sh.failure),
				 "read returned %zd", n);
			return NULL;
		}
		if (append_events(buf, (size_t)n / KT_EVENT_SIZE) != 0) {
			snprintf(sh.failure, sizeof(sh.failure), "out of memory");
			return NULL;
		}
	}
}

static struct range hull(const struct range *v, int n)
{
	struct range h = v[0];

	for (int k = 1; k < n; k++) {
		if (v[k].start < h.start)
			h.start = v[k].start;
		if (v[k].end > h.end)
			h.end = v[k].end;
	}
	return h;
}

/*
 * True when the events split the invalidations into consecutive groups,
 * each reported with the hull of its group as hint -- or with the hull of
 * its group and of groups reported just before it: an invalidation that
 * lands while read() copies the event out keeps the event queued, widened,
 * so its bytes come again in the next event.  (Over-reporting is safe;
 * losing or inventing bytes is not.)  inv[-back..-1] are those earlier
 * invalidations.
 */
static int events_match(const struct range *inv, int ninv, int back,
			const struct range *ev, int nev)
{
	if (nev == 0)
		return ninv == 0;
	for (int take = 1; take <= ninv; take++) {
		for (int with = 0; with <= back; with++) {
			struct range h = hull(inv - with, take + with);

			if (h.start == ev[0].start && h.end == ev[0].end &&
			    events_match(inv + take, ninv - take, back + take,
					 ev + 1, nev - 1))
				return 1;
		}
	}
	return 0;
}

/* Files every event under its registration; asserts nothing is unknown. */
static void sort_events(struct mutator *mut)
{
	uint64_t last_counter = 0;

	for (size_t k = 0; k < sh.nevents; k++) {
		const struct ummunot_event *e = &sh.events[k];
		uint64_t c = e->user_cookie_counter;
		uint64_t m = c >> 32, i = c & 0xffffffffu;
		struct mreg *r;

		if (e->type == UMMUNOT_EVENT_TYPE_LAST) {
			ck_assert_msg(c >= last_counter,
				      "LAST counters went back: %llu after %llu",
				      (unsigned long long)c,
				      (unsigned long long)last_counter);
			last_counter = c;
			continue;
		}
		ck_assert_uint_eq(e->type, UMMUNOT_EVENT_TYPE_INVAL);
		ck_assert_uint_eq(e->flags, UMMUNOT_EVENT_FLAG_HINT);
		ck_assert_msg(!(c >> 63), "spurious event for registrar cookie %#llx",
			      (unsigned long long)c);
		ck_assert_msg(m < MUTATORS && i < mut[m].iters,
			      "event for unknown cookie %#llx",
			      (unsigned long long)c);
		r = &mut[m].regs[i];
		ck_assert_msg(r->nev < MAX_EVENTS_PER_REG,
			      "too many events for cookie %#llx",
			      (unsigned long long)c);
		r->ev[r->nev++] = (struct range){ e->hint_start, e->hint_end };
	}
	ck_assert_msg(sh.nevents > 0 &&
		      sh.events[sh.nevents - 1].type == UMMUNOT_EVENT_TYPE_LAST,
		      "the last record read is not LAST");
	ck_assert_uint_eq(last_counter, *sh.counter);
}

static void check_registration(const struct mutator *m, uint64_t i)
{
	const struct mreg *r = &m->regs[i];

	if (events_match(r->inv, r->ninv, 0, r->ev, r->nev))
		return;
	char evs[256] = "";
	size_t len = 0;

	for (int k = 0; k < r->nev && len < sizeof(evs) - 48; k++)
		len += (size_t)snprintf(evs + len, sizeof(evs) - len,
					" [%#llx,%#llx)",
					(unsigned long long)r->ev[k].start,
					(unsigned long long)r->ev[k].end);
	ck_abort_msg("cookie %#llx (op %llu, range [%#llx,%#llx)): %d invalidations, %d events:%s",
		     (unsigned long long)MUTATOR_COOKIE(m->id, i),
		     (unsigned long long)(i % 6),
		     (unsigned long long)r->range.start,
		     (unsigned long long)r->range.end, r->ninv, r->nev, evs);
}

/*
 * Racy read of the mutators' counters is fine: only used to decide when to
 * stop.  Under load (CI runs VMs side by side) one kind of thread can
 * starve the other, so both must have done MIN_ITERS.
 */
static int enough_work(const struct mutator *mut, struct registrar *reg)
{
	uint64_t registered = 0;

	for (int m = 0; m < MUTATORS; m++)
		if (*(const volatile uint64_t *)&mut[m].iters < MIN_ITERS)
			return 0;
	for (int r = 0; r < REGISTRARS; r++)
		registered += atomic_load_explicit(&reg[r].registered,
						   memory_order_relaxed);
	return registered >= MIN_ITERS;
}

/* Racy peek as above: a thread that failed has stopped, so stop waiting. */
static int any_failed(const struct mutator *mut, const struct registrar *reg)
{
	for (int m = 0; m < MUTATORS; m++)
		if (*(const volatile char *)mut[m].failure)
			return 1;
	for (int r = 0; r < REGISTRARS; r++)
		if (*(const volatile char *)reg[r].failure)
			return 1;
	return 0;
}

START_TEST(concurrent_exact_oracle)
{
	struct mutator mut[MUTATORS];
	struct registrar reg[REGISTRARS];
	pthread_t mt[MUTATORS], rt[REGISTRARS], reader;
	const struct timespec tick = { 0, 50 * 1000 * 1000 };
	uint64_t c0, hits = 0, registered = 0;
	double start, max_seconds = MAX_SECONDS * kt_time_factor();

	memset(&sh, 0, sizeof(sh));
	sh.fd = kt_open_nb();
	sh.counter = kt_map_counter(sh.fd);
	c0 = *sh.counter;
	for (int m = 0; m < MUTATORS; m++) {
		mut[m] = (struct mutator){ .id = m };
		mut[m].area = fenced_area(AREA_PAGES);
		mut[m].regs = calloc(MAX_ITERS, sizeof(struct mreg));
		ck_assert(mut[m].regs != NULL);
	}
	for (int r = 0; r < REGISTRARS; r++) {
		reg[r] = (struct registrar){ .id = r };
		reg[r].area = fenced_area(REGISTRAR_PAGES);
	}
	ck_assert_int_eq(pthread_create(&reader, NULL, reader_main, NULL), 0);
	for (int m = 0; m < MUTATORS; m++)
		ck_assert_int_eq(pthread_create(&mt[m], NULL, mutator_main,
						&mut[m]), 0);
	for (int r = 0; r < REGISTRARS; r++)
		ck_assert_int_eq(pthread_create(&rt[r], NULL, registrar_main,
						&reg[r]), 0);
	start = now_s();
	while (now_s() < start + RUN_SECONDS ||
	       (!enough_work(mut, reg) && !any_failed(mut, reg) &&
		now_s() < start + max_seconds))
		nanosleep(&tick, NULL);
	atomic_store(&sh.stop_writers, 1);
	for (int m = 0; m < MUTATORS; m++)
		pthread_join(mt[m], NULL);
	for (int r = 0; r < REGISTRARS; r++)
		pthread_join(rt[r], NULL);
	/* Every invalidation has completed: the reader drains and stops. */
	atomic_store(&sh.stop_reader, 1);
	pthread_join(reader, NULL);

	ck_assert_msg(sh.failure[0] == '\0', "reader: %s", sh.failure);
	for (int m = 0; m < MUTATORS; m++) {
		ck_assert_msg(mut[m].failure[0] == '\0', "mutator %d: %s", m,
			      mut[m].failure);
		hits += mut[m].hits;
	}
	for (int r = 0; r < REGISTRARS; r++) {
		ck_assert_msg(reg[r].failure[0] == '\0', "registrar %d: %s", r,
			      reg[r].failure);
		registered += atomic_load(&reg[r].registered);
	}
	printf("concurrency: %.1f s, mutator iterations %llu + %llu, %llu registrar registrations, %zu records read, %llu hits\n",
	       now_s() - start, (unsigned long long)mut[0].iters,
	       (unsigned long long)mut[1].iters, (unsigned long long)registered,
	       sh.nevents, (unsigned long long)hits);
	ck_assert_msg(enough_work(mut, reg),
		      "too little work done in %.0f s to mean anything",
		      max_seconds);
	sort_events(mut);
	for (int m = 0; m < MUTATORS; m++)
		for (uint64_t i = 0; i < mut[m].iters; i++)
			check_registration(&mut[m], i);
	ck_assert_msg(*sh.counter - c0 == hits,
		      "counter moved by %llu, expected %llu hits",
		      (unsigned long long)(*sh.counter - c0),
		      (unsigned long long)hits);
	kt_expect_nothing(sh.fd);
}
END_TEST

/* ---- REGISTER racing with an invalidation of its range ---- */

#define RACE_PAGES 16384
#define RACE_MAX 100000

struct racer {
	int fd;
	uint64_t page;          /* the last page of the region */
	atomic_int done;
	atomic_int failed;
	atomic_uint count;
	unsigned char resident[RACE_MAX];
};

static void *race_register(void *arg)
{
	struct racer *r = arg;

	while (!atomic_load(&r->done)) {
		unsigned int k = atomic_load(&r->count);
		unsigned char vec = 0;

		if (k >= RACE_MAX)
			break;
		if (kt_register(r->fd, r->page, r->page + kt_page(), k) != 0 ||
		    mincore((void *)r->page, kt_page(), &vec) != 0) {
			atomic_store(&r->failed, 1);
			break;
		}
		r->resident[k] = vec & 1;
		atomic_store(&r->count, k + 1);
	}
	return NULL;
}

/*
 * The zap runs from low to high addresses, so the last page stays resident
 * for most of the invalidation.  A registration whose REGISTER returned
 * while that page was still resident either predates the invalidation (it
 * gets an event) or was made during it -- and then REGISTER must have waited
 * for the end, when the page was already gone.  So: resident => event.
 */
static void race_round(int round)
{
	/* static: megabytes, too big for the stack; one round at a time. */
	static struct racer r;
	static struct ummunot_event ev[RACE_MAX + 1];
	const struct timespec nap = { 0, 1000 * 1000 };
	char *region = kt_map_anon(RACE_PAGES);
	unsigned int resident = 0, events = 0;
	pthread_t t;
	size_t n;

	memset(&r, 0, sizeof(r));
	r.fd = kt_open_nb();
	r.page = kt_pg(region, RACE_PAGES - 1);
	ck_assert_int_eq(pthread_create(&t, NULL, race_register, &r), 0);
	while (atomic_load(&r.count) < 20 && !atomic_load(&r.failed))
		nanosleep(&nap, NULL);
	ck_assert_int_eq(madvise(region, RACE_PAGES * kt_page(),
				 MADV_DONTNEED), 0);
	/* A few more registrations after the end. */
	unsigned int end_count = atomic_load(&r.count);

	while (atomic_load(&r.count) < end_count + 20 &&
	       atomic_load(&r.count) < RACE_MAX && !atomic_load(&r.failed))
		nanosleep(&nap, NULL);
	atomic_store(&r.done, 1);
	pthread_join(t, NULL);
	ck_assert_msg(!atomic_load(&r.failed), "REGISTER or mincore failed");

	n = kt_drain(r.fd, ev, RACE_MAX + 1);
	unsigned char *got = calloc(RACE_MAX, 1);

	ck_assert(got != NULL);
	for (size_t k = 0; k < n; k++) {
		if (ev[k].type != UMMUNOT_EVENT_TYPE_INVAL)
			continue;
		ck_assert_uint_lt(ev[k].user_cookie_counter, r.count);
		ck_assert_uint_eq(ev[k].hint_start, r.page);
		ck_assert_uint_eq(ev[k].hint_end, r.page + kt_page());
		got[ev[k].user_cookie_counter] = 1;
		events++;
	}
	for (unsigned int k = 0; k < r.count; k++) {
		resident += r.resident[k];
		ck_assert_msg(!r.resident[k] || got[k],
			      "round %d: REGISTER %u returned while its page was still resident, yet no event came",
			      round, k);
	}
	printf("register race round %d: %u registrations, %u saw the page resident, %u events\n",
	       round, r.count, resident, events);
	/* One invalidation: the counter moved iff it hit anything. */
	ck_assert_uint_eq(*kt_map_counter(r.fd), events ? 1 : 0);
	free(got);
	close(r.fd);
}

START_TEST(register_during_invalidation)
{
	for (int round = 0; round < 5; round++)
		race_round(round);
}
END_TEST

Suite *kt_concurrency_suite(void)
{
	return KT_SUITE("concurrency",
			concurrent_exact_oracle, register_during_invalidation);
}
