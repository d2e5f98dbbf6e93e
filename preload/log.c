// SPDX-License-Identifier: BSD-2-Clause
#define _GNU_SOURCE
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Global state: the log is process-wide by nature (one destination, one
 * level, set once from the environment).  The level is atomic because
 * every thread reads it on every debug call.
 */
atomic_int log_current_level = LOG_LEVEL_WARN;
static atomic_int log_fd = STDERR_FILENO;
static char log_host[64];

static const char *const level_names[] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
};

int log_level_parse(const char *s)
{
	for (int i = 0; i <= LOG_LEVEL_DEBUG; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	return -1;
}

enum log_level log_get_level(void)
{
	return (enum log_level)atomic_load_explicit(&log_current_level,
						    memory_order_relaxed);
}

static void host_name_init(void)
{
	if (gethostname(log_host, sizeof(log_host) - 1) != 0)
		strcpy(log_host, "unknown");
	log_host[sizeof(log_host) - 1] = '\0';
}

static const char *host_name(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, host_name_init);
	return log_host;
}

int log_expand_path(const char *tmpl, char *out, unsigned long size,
		    long pid, const char *host)
{
	unsigned long n = 0;

	for (const char *p = tmpl; *p; p++) {
		char piece[80];
		const char *add = piece;

		if (*p == '%' && p[1] == 'p') {
			snprintf(piece, sizeof(piece), "%ld", pid);
			p++;
		} else if (*p == '%' && p[1] == 'h') {
			add = host;
			p++;
		} else if (*p == '%' && p[1] == '%') {
			strcpy(piece, "%");
			p++;
		} else {
			piece[0] = *p;
			piece[1] = '\0';
		}
		size_t len = strlen(add);

		if (n + len + 1 > size)
			return -1;
		memcpy(out + n, add, len);
		n += len;
	}
	if (size == 0)
		return -1;
	out[n] = '\0';
	return 0;
}

void log_reset(void)
{
	int old = atomic_exchange(&log_fd, STDERR_FILENO);

	if (old != STDERR_FILENO)
		close(old);
	atomic_store(&log_current_level, LOG_LEVEL_WARN);
}

int log_init(enum log_level level, const char *file_template)
{
	char path[4096];
	int fd;

	atomic_store(&log_current_level, level);
	if (!file_template || !*file_template)
		return 0;
	if (log_expand_path(file_template, path, sizeof(path), (long)getpid(),
			    host_name()) != 0) {
		log_error("UMMUSHIM_LOG_FILE='%s' is too long; logging to stderr",
			  file_template);
		return -1;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0) {
		log_error("cannot open UMMUSHIM_LOG_FILE '%s': %s; logging to stderr",
			  path, strerror(errno));
		return -1;
	}
	int old = atomic_exchange(&log_fd, fd);

	if (old != STDERR_FILENO)
		close(old);
	return 0;
}

/*
 * Thread-local: lines held back while this thread holds a cache lock (see
 * log_hold()).  The depth is read on every lock, hence initial-exec; the
 * buffer is only touched when something is logged.
 */
static __thread unsigned int log_held_depth
	__attribute__((tls_model("initial-exec")));
static __thread struct {
	size_t len;
	unsigned int dropped;
	char buf[4096];
} *log_held;

void log_hold(void)
{
	log_held_depth++;
}

static void write_line(const char *line, size_t n)
{
	/* One write per line; a short write only loses the log line. */
	if (write(atomic_load(&log_fd), line, n) < 0)
		(void)0;
}

void log_release(void)
{
	int saved_errno = errno;
	__typeof__(log_held) held;

	if (--log_held_depth > 0 || !log_held ||
	    (log_held->len == 0 && log_held->dropped == 0))
		return;
	held = log_held;
	log_held = NULL;	/* freed, not kept: no per-thread leak */
	write_line(held->buf, held->len);
	if (held->dropped) {
		char line[160];
		int n = snprintf(line, sizeof(line),
				 "ummushim[%s:%ld] warn: %u log lines dropped (too many while holding a lock)\n",
				 host_name(), (long)getpid(), held->dropped);

		if (n > 0)
			write_line(line, (size_t)n < sizeof(line) ? (size_t)n :
				   sizeof(line) - 1);
	}
	free(held);
	errno = saved_errno;
}

/* Keep @line for log_release(); false if it must be written now. */
static bool hold_line(const char *line, size_t n)
{
	if (log_held_depth == 0)
		return false;
	if (!log_held) {
		log_held = calloc(1, sizeof(*log_held));
		if (!log_held)
			return true;	/* lost: never block under the lock */
	}
	if (n > sizeof(log_held->buf) - log_held->len) {
		log_held->dropped++;
		return true;
	}
	memcpy(log_held->buf + log_held->len, line, n);
	log_held->len += n;
	return true;
}

static void log_vwrite(const char *tag, const char *fmt, va_list ap)
{
	char line[1024];
	int saved_errno = errno;	/* callers log between a failure and its return */
	int n, m;

	n = snprintf(line, sizeof(line), "ummushim[%s:%ld] %s: ", host_name(),
		     (long)getpid(), tag);
	if (n < 0 || n >= (int)sizeof(line) - 2)
		n = 0;
	m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	if (m > 0)
		n += m;
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (!hold_line(line, (size_t)n))
		write_line(line, (size_t)n);
	errno = saved_errno;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	if (!log_enabled(level))
		return;
	va_start(ap, fmt);
	log_vwrite(level_names[level], fmt, ap);
	va_end(ap);
}

static void log_always_fmt(const char *tag, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void log_always_fmt(const char *tag, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(tag, fmt, ap);
	va_end(ap);
}

void log_always(const char *tag, const char *text)
{
	log_always_fmt(tag, "%s", text);
}
