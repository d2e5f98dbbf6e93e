// SPDX-License-Identifier: GPL-2.0-only
/* Shared helpers for the ummunot kernel-module tests (see ktest.h). */
#include "ktest.h"
#include "slab_count.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PARAM_DIR "/sys/module/ummunot/parameters/"

unsigned int kt_time_factor(void)
{
	const char *s = getenv("CK_TIMEOUT_MULTIPLIER");
	unsigned long f = s ? strtoul(s, NULL, 10) : 1;

	return f >= 1 && f <= 100 ? (unsigned int)f : 1;
}

size_t kt_page(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

uintptr_t kt_pg(const void *base, size_t n)
{
	return (uintptr_t)base + n * kt_page();
}

int kt_open(int extra_flags)
{
	int fd = open(UMMUNOT_DEVICE_PATH, O_RDONLY | O_CLOEXEC | extra_flags);

	ck_assert_msg(fd >= 0, "open(%s): %s", UMMUNOT_DEVICE_PATH,
		      strerror(errno));
	return fd;
}

int kt_open_nb(void)
{
	return kt_open(O_NONBLOCK);
}

static int ioctl_errno(int fd, unsigned long cmd, const void *arg)
{
	return ioctl(fd, cmd, arg) == 0 ? 0 : errno;
}

int kt_register(int fd, uint64_t start, uint64_t end, uint64_t cookie)
{
	struct ummunot_register_ioctl r = {
		.start = start, .end = end, .user_cookie = cookie,
	};

	return ioctl_errno(fd, UMMUNOT_REGISTER_REGION, &r);
}

int kt_register_raw(int fd, const void *arg)
{
	return ioctl_errno(fd, UMMUNOT_REGISTER_REGION, arg);
}

int kt_unregister(int fd, uint64_t cookie)
{
	return ioctl_errno(fd, UMMUNOT_UNREGISTER_REGION, &cookie);
}

int kt_features(int fd, uint32_t *inout)
{
	return ioctl_errno(fd, UMMUNOT_EXCHANGE_FEATURES, inout);
}

void kt_register_ok(int fd, uint64_t start, uint64_t end, uint64_t cookie)
{
	int e = kt_register(fd, start, end, cookie);

	ck_assert_msg(e == 0, "REGISTER [%#llx,%#llx) cookie %llu: %s",
		      (unsigned long long)start, (unsigned long long)end,
		      (unsigned long long)cookie, strerror(e));
}

void kt_unregister_ok(int fd, uint64_t cookie)
{
	int e = kt_unregister(fd, cookie);

	ck_assert_msg(e == 0, "UNREGISTER cookie %llu: %s",
		      (unsigned long long)cookie, strerror(e));
}

const volatile uint64_t *kt_map_counter(int fd)
{
	void *p = mmap(NULL, kt_page(), PROT_READ, MAP_SHARED, fd, 0);

	ck_assert_msg(p != MAP_FAILED, "mmap counter: %s", strerror(errno));
	return p;
}

void kt_touch(void *p, size_t npages)
{
	volatile char *c = p;

	for (size_t i = 0; i < npages; i++)
		c[i * kt_page()] = (char)(i + 1);
}

char *kt_map_anon(size_t npages)
{
	size_t len = npages * kt_page();
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_msg(p != MAP_FAILED, "mmap %zu pages: %s", npages,
		      strerror(errno));
	/*
	 * A THP collapse or split would be an invalidation of its own.  A
	 * kernel without THP (Debian's PREEMPT_RT flavours) has neither and
	 * refuses the advice with EINVAL.
	 */
	if (madvise(p, len, MADV_NOHUGEPAGE) != 0)
		ck_assert_msg(errno == EINVAL &&
			      access("/sys/kernel/mm/transparent_hugepage", F_OK) != 0,
			      "MADV_NOHUGEPAGE: %s", strerror(errno));
	kt_touch(p, npages);
	return p;
}

char *kt_reserve(size_t npages)
{
	char *p = mmap(NULL, npages * kt_page(), PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	ck_assert_msg(p != MAP_FAILED, "reserve %zu pages: %s", npages,
		      strerror(errno));
	return p;
}

ssize_t kt_read(int fd, void *buf, size_t len)
{
	ssize_t n = read(fd, buf, len);

	return n < 0 ? -errno : n;
}

size_t kt_drain(int fd, struct ummunot_event *ev, size_t max)
{
	size_t count = 0;

	for (;;) {
		ck_assert_msg(count < max, "more than %zu events pending", max);
		ssize_t n = kt_read(fd, ev + count,
				    (max - count) * KT_EVENT_SIZE);
		if (n == -EAGAIN)
			return count;
		ck_assert_msg(n > 0, "read: %s",
			      n < 0 ? strerror((int)-n) : "returned 0");
		ck_assert_msg(n % KT_EVENT_SIZE == 0,
			      "read returned %zd bytes, not whole events", n);
		count += (size_t)n / KT_EVENT_SIZE;
	}
}

static void assert_inval(const struct ummunot_event *e,
			 const struct kt_expect *x)
{
	ck_assert_msg(e->type == UMMUNOT_EVENT_TYPE_INVAL,
		      "cookie %llu: type %u", (unsigned long long)x->cookie,
		      e->type);
	ck_assert_msg(e->flags == UMMUNOT_EVENT_FLAG_HINT,
		      "cookie %llu: flags %#x", (unsigned long long)x->cookie,
		      e->flags);
	ck_assert_msg(e->hint_start == x->hint_start &&
		      e->hint_end == x->hint_end,
		      "cookie %llu: hint [%#llx,%#llx), expected [%#llx,%#llx)",
		      (unsigned long long)x->cookie,
		      (unsigned long long)e->hint_start,
		      (unsigned long long)e->hint_end,
		      (unsigned long long)x->hint_start,
		      (unsigned long long)x->hint_end);
}

void kt_expect_events(int fd, const volatile uint64_t *counter,
		      size_t n, const struct kt_expect *exp)
{
	struct ummunot_event ev[64];
	int seen[64] = { 0 };

	ck_assert(n < 64);
	size_t got = kt_drain(fd, ev, 64);

	ck_assert_msg(got == n + 1, "%zu events read, expected %zu INVAL + LAST",
		      got, n);
	for (size_t i = 0; i < n; i++) {
		size_t j;

		for (j = 0; j < n; j++)
			if (ev[j].type == UMMUNOT_EVENT_TYPE_INVAL &&
			    ev[j].user_cookie_counter == exp[i].cookie)
				break;
		ck_assert_msg(j < n, "no INVAL event for cookie %llu",
			      (unsigned long long)exp[i].cookie);
		ck_assert_msg(!seen[j], "cookie %llu reported twice",
			      (unsigned long long)exp[i].cookie);
		seen[j] = 1;
		assert_inval(&ev[j], &exp[i]);
	}
	ck_assert_msg(ev[n].type == UMMUNOT_EVENT_TYPE_LAST,
		      "last record has type %u, expected LAST", ev[n].type);
	ck_assert_uint_eq(ev[n].flags, 0);
	if (counter)
		ck_assert_msg(ev[n].user_cookie_counter == *counter,
			      "LAST carries %llu, counter page says %llu",
			      (unsigned long long)ev[n].user_cookie_counter,
			      (unsigned long long)*counter);
}

void kt_expect_one(int fd, const volatile uint64_t *counter, uint64_t cookie,
		   uint64_t hint_start, uint64_t hint_end)
{
	struct kt_expect x = { cookie, hint_start, hint_end };

	kt_expect_events(fd, counter, 1, &x);
}

void kt_expect_nothing(int fd)
{
	struct ummunot_event ev[4];
	ssize_t n = kt_read(fd, ev, sizeof(ev));

	ck_assert_msg(n == -EAGAIN,
		      "expected no event (EAGAIN), read returned %zd (first: type %u cookie %llu hint [%#llx,%#llx))",
		      n, n > 0 ? ev[0].type : 0,
		      n > 0 ? (unsigned long long)ev[0].user_cookie_counter : 0ULL,
		      n > 0 ? (unsigned long long)ev[0].hint_start : 0ULL,
		      n > 0 ? (unsigned long long)ev[0].hint_end : 0ULL);
}

struct kt_watch kt_watch_anon(size_t npages, uint64_t cookie)
{
	struct kt_watch w;

	w.fd = kt_open_nb();
	w.cnt = kt_map_counter(w.fd);
	w.p = kt_map_anon(npages);
	kt_register_ok(w.fd, kt_pg(w.p, 0), kt_pg(w.p, npages), cookie);
	return w;
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	int e = 0;

	if (fd < 0)
		return errno;
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		e = errno ? errno : EIO;
	close(fd);
	return e;
}

long kt_slab_objects(void)
{
	return slab_count_active();
}

long kt_slab_settle(long expected)
{
	const struct timespec nap = { 0, 20 * 1000 * 1000 };
	long now = kt_slab_objects();

	/* Up to ~10 s: RCU-deferred frees complete within a few grace periods. */
	for (int i = 0; i < 500 && now != expected; i++) {
		nanosleep(&nap, NULL);
		now = kt_slab_objects();
	}
	return now;
}

long kt_param(const char *name)
{
	char path[128];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), PARAM_DIR "%s", name);
	f = fopen(path, "re");
	ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
	ck_assert(fscanf(f, "%ld", &v) == 1);
	fclose(f);
	return v;
}

int kt_set_param(const char *name, long value)
{
	char path[128], text[32];

	snprintf(path, sizeof(path), PARAM_DIR "%s", name);
	snprintf(text, sizeof(text), "%ld\n", value);
	return write_file(path, text);
}

long kt_max_regions(void)
{
	return kt_param("max_regions");
}

int kt_set_max_regions(long value)
{
	return kt_set_param("max_regions", value);
}

void kt_run_child(const char *what, kt_child_fn fn, void *arg)
{
	/* Shared with the child so it can explain a failure. */
	char *err = mmap(NULL, kt_page(), PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int status = 0;
	pid_t pid;

	ck_assert(err != MAP_FAILED);
	strcpy(err, "child died without a report");
	pid = fork();
	ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		int rc = fn(arg, err, kt_page());

		if (rc == 0)
			err[0] = '\0';
		_exit(rc == 0 ? 0 : 1);
	}
	ck_assert(waitpid(pid, &status, 0) == pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "%s: %s (status %#x)", what, err, status);
	munmap(err, kt_page());
}

/* One data byte with room for one SCM_RIGHTS fd: what both sides exchange. */
struct fd_msg {
	char byte;
	struct iovec iov;
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr msg;
};

/* Zeroes m and points its msghdr at its own byte and control buffer. */
static void fd_msg_init(struct fd_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->byte = 'F';
	m->iov.iov_base = &m->byte;
	m->iov.iov_len = 1;
	m->msg.msg_iov = &m->iov;
	m->msg.msg_iovlen = 1;
	m->msg.msg_control = m->u.buf;
	m->msg.msg_controllen = sizeof(m->u.buf);
}

int kt_send_fd(int sock, int fd)
{
	struct fd_msg m;
	struct cmsghdr *c;

	fd_msg_init(&m);
	c = CMSG_FIRSTHDR(&m.msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &m.msg, 0) == 1 ? 0 : -1;
}

int kt_recv_fd(int sock)
{
	struct fd_msg m;
	struct cmsghdr *c;
	int fd;

	fd_msg_init(&m);
	if (recvmsg(sock, &m.msg, MSG_CMSG_CLOEXEC) != 1)
		return -1;
	c = CMSG_FIRSTHDR(&m.msg);
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return -1;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

int kt_numa_nodes(void)
{
	char text[128] = "";
	FILE *f = fopen("/sys/devices/system/node/online", "re");
	int nodes = 0;
	char *tok, *save = NULL;

	if (!f)
		return 1;
	if (!fgets(text, sizeof(text), f))
		text[0] = '\0';
	fclose(f);
	/* Format: "0", "0-1", "0,2-3". */
	for (tok = strtok_r(text, ",\n", &save); tok;
	     tok = strtok_r(NULL, ",\n", &save)) {
		int a, b;

		if (sscanf(tok, "%d-%d", &a, &b) == 2)
			nodes += b - a + 1;
		else if (sscanf(tok, "%d", &a) == 1)
			nodes++;
	}
	return nodes;
}

TCase *kt_tcase(Suite *s, const char *name)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, KT_TIMEOUT);
	suite_add_tcase(s, tc);
	return tc;
}

void kt_add_tests(Suite *s, const char *tcase, const TTest *const *tests)
{
	TCase *tc = kt_tcase(s, tcase);

	for (; *tests; tests++)
		tcase_add_test(tc, *tests);
}

Suite *kt_suite_of(const char *name, const TTest *const *tests)
{
	Suite *s = suite_create(name);

	kt_add_tests(s, name, tests);
	return s;
}
