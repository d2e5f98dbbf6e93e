/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Leveled logging for the shim.  Every line is prefixed with
 * "ummushim[host:pid]" so that interleaved output of many MPI ranks stays
 * readable, and is written with a single write(2) so that lines from
 * different threads or processes do not mix.
 */
#ifndef UMMUSHIM_LOG_H
#define UMMUSHIM_LOG_H

#include <stdatomic.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN = 1,
	LOG_LEVEL_INFO = 2,
	LOG_LEVEL_DEBUG = 3,
};

/*
 * Set the level and destination.  @file_template may contain %p (pid),
 * %h (host name) and %% ; NULL or "" means stderr.  If the file cannot be
 * opened, logging goes to stderr and an error line says why.  Returns 0,
 * or -1 when the file could not be opened.
 */
int log_init(enum log_level level, const char *file_template);

/* Expand %p, %h and %% of @tmpl into @out (size @size).  -1 if too long. */
int log_expand_path(const char *tmpl, char *out, unsigned long size,
		    long pid, const char *host);

/* Parse "error", "warn", "info" or "debug"; -1 if none of those. */
int log_level_parse(const char *s);

enum log_level log_get_level(void);

/*
 * Global (log.c): the process-wide level, read inline because every hit
 * asks whether it logs.
 */
extern atomic_int log_current_level;

static inline int log_enabled(enum log_level level)
{
	return (int)level <= atomic_load_explicit(&log_current_level,
						  memory_order_relaxed);
}

void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Write "<tag>: <text>" whatever the level (exit statistics). */
void log_always(const char *tag, const char *text);

/*
 * While a thread holds a lock other threads may need (the cache's locks),
 * it brackets that with log_hold()/log_release(): lines it logs meanwhile
 * are kept in a per-thread buffer and written by the outermost
 * log_release(), so a blocking write never happens under the lock.  Lines
 * that do not fit are counted and reported as dropped.  Nests.
 */
void log_hold(void);
void log_release(void);

/* Direct the log back to stderr and close a log file (for tests). */
void log_reset(void);

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)                                      \
	do {                                                \
		if (log_enabled(LOG_LEVEL_DEBUG))           \
			log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__); \
	} while (0)

#endif /* UMMUSHIM_LOG_H */
