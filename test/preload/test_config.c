// SPDX-License-Identifier: BSD-2-Clause
/* Unit tests of the environment parsing and of the log helpers. */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

/* A fake environment: NULL-terminated name/value pairs. */
static const char *const *fake_env;

static const char *fake_getenv(const char *name)
{
	for (const char *const *p = fake_env; p && *p; p += 2)
		if (strcmp(p[0], name) == 0)
			return p[1];
	return NULL;
}

static void parse(struct shim_config *cfg, const char *const *env)
{
	fake_env = env;
	config_parse(cfg, fake_getenv);
}

/* Parse one variable=value; return the config. */
static struct shim_config parse1(const char *name, const char *value)
{
	const char *env[] = { name, value, NULL };
	struct shim_config cfg;

	parse(&cfg, env);
	return cfg;
}

static void assert_invalid(const char *name, const char *value,
			   const char *accepted_word)
{
	struct shim_config cfg = parse1(name, value);
	char quoted[128];

	ck_assert_msg(!cfg.valid, "%s=%s accepted", name, value);
	ck_assert_int_eq(cfg.n_errors, 1);
	/* One line naming the variable, the value and what is accepted. */
	snprintf(quoted, sizeof(quoted), "%s='%s'", name, value);
	ck_assert_msg(strstr(cfg.errors[0], quoted), "%s", cfg.errors[0]);
	ck_assert_msg(strstr(cfg.errors[0], "accepted:"), "%s", cfg.errors[0]);
	ck_assert_msg(strstr(cfg.errors[0], accepted_word), "%s",
		      cfg.errors[0]);
	ck_assert_msg(strstr(cfg.errors[0], "pass through"), "%s",
		      cfg.errors[0]);
	ck_assert_ptr_null(strchr(cfg.errors[0], '\n'));
}

/* Each of the NULL-terminated @values of @name must be refused alone. */
static void assert_all_invalid(const char *name, const char *accepted_word,
			       const char *const *values)
{
	for (; *values; values++)
		assert_invalid(name, *values, accepted_word);
}

START_TEST(defaults)
{
	struct shim_config cfg;
	const char *env[] = { NULL };

	parse(&cfg, env);
	ck_assert(cfg.valid);
	ck_assert_int_eq(cfg.n_errors, 0);
	ck_assert(cfg.enable);
	ck_assert_uint_eq(cfg.max_entries, CONFIG_DEFAULT_MAX_ENTRIES);
	ck_assert_uint_eq(cfg.max_bytes, CONFIG_DEFAULT_MAX_BYTES);
	ck_assert(!cfg.max_bytes_set);
	ck_assert_int_eq(cfg.log_level, LOG_LEVEL_WARN);
	ck_assert_str_eq(cfg.log_file, "");
	ck_assert(!cfg.stats);
	ck_assert_str_eq(cfg.monitor, "auto");
	ck_assert_int_eq(cfg.subrange, CONFIG_SUBRANGE_LOCAL);
}
END_TEST

START_TEST(empty_values_count_as_unset)
{
	const char *env[] = {
		"UMMUSHIM_ENABLE", "", "UMMUSHIM_MAX_ENTRIES", "",
		"UMMUSHIM_MAX_BYTES", "", "UMMUSHIM_LOG_LEVEL", "",
		"UMMUSHIM_LOG_FILE", "", "UMMUSHIM_STATS", "",
		"UMMUSHIM_MONITOR", "", "UMMUSHIM_SUBRANGE", "", NULL
	};
	struct shim_config cfg;

	parse(&cfg, env);
	ck_assert(cfg.valid);
	ck_assert(cfg.enable);
	ck_assert_str_eq(cfg.monitor, "auto");
	ck_assert_int_eq(cfg.subrange, CONFIG_SUBRANGE_LOCAL);
}
END_TEST

START_TEST(enable_values)
{
	static const char *const bad[] = { "2", "yes", " 1", "01", NULL };

	ck_assert(!parse1("UMMUSHIM_ENABLE", "0").enable);
	ck_assert(parse1("UMMUSHIM_ENABLE", "1").enable);
	ck_assert(parse1("UMMUSHIM_ENABLE", "0").valid);
	assert_all_invalid("UMMUSHIM_ENABLE", "0 or 1", bad);
}
END_TEST

START_TEST(stats_values)
{
	static const char *const bad[] = { "true", "-1", NULL };

	ck_assert(parse1("UMMUSHIM_STATS", "1").stats);
	ck_assert(!parse1("UMMUSHIM_STATS", "0").stats);
	assert_all_invalid("UMMUSHIM_STATS", "0 or 1", bad);
}
END_TEST

START_TEST(max_entries_values)
{
	static const char *const bad[] = {
		"0", "-1", "abc", "12x", "4K", "1048577", "100000000",
		"99999999999999999999999", NULL
	};

	ck_assert_uint_eq(parse1("UMMUSHIM_MAX_ENTRIES", "1").max_entries, 1);
	ck_assert_uint_eq(parse1("UMMUSHIM_MAX_ENTRIES", "4096").max_entries,
			  4096);
	ck_assert_uint_eq(parse1("UMMUSHIM_MAX_ENTRIES",
				 "1048576").max_entries, 1048576);
	assert_all_invalid("UMMUSHIM_MAX_ENTRIES", "whole number", bad);
}
END_TEST

START_TEST(max_bytes_values)
{
	static const struct {
		const char *value;
		uint64_t bytes;
	} good[] = {
		{ "4k", 4096 }, { "4K", 4096 },
		{ "16M", 16ULL << 20 }, { "16m", 16ULL << 20 },
		{ "2G", 2ULL << 30 }, { "3g", 3ULL << 30 },
	};
	static const char *const bad[] = {
		"0", "0M", "12Q", "1T", "-5", "M", "1.5G", "1GB", "8 M",
		"18446744073709551615G", "18446744073709551616", NULL
	};
	struct shim_config cfg = parse1("UMMUSHIM_MAX_BYTES", "4096");

	ck_assert_uint_eq(cfg.max_bytes, 4096);
	ck_assert(cfg.max_bytes_set);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		uint64_t got = parse1("UMMUSHIM_MAX_BYTES",
				      good[i].value).max_bytes;

		ck_assert_msg(got == good[i].bytes, "%s: %llu, not %llu",
			      good[i].value, (unsigned long long)got,
			      (unsigned long long)good[i].bytes);
	}
	assert_all_invalid("UMMUSHIM_MAX_BYTES", "K, M or G", bad);
}
END_TEST

START_TEST(log_level_values)
{
	static const struct {
		const char *value;
		enum log_level level;
	} good[] = {
		{ "error", LOG_LEVEL_ERROR }, { "warn", LOG_LEVEL_WARN },
		{ "info", LOG_LEVEL_INFO }, { "debug", LOG_LEVEL_DEBUG },
	};
	static const char *const bad[] = {
		"verbose", "DEBUG", "3", "warning", NULL
	};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		enum log_level got =
			parse1("UMMUSHIM_LOG_LEVEL", good[i].value).log_level;

		ck_assert_msg(got == good[i].level, "%s: level %d, not %d",
			      good[i].value, (int)got, (int)good[i].level);
	}
	assert_all_invalid("UMMUSHIM_LOG_LEVEL", "error, warn, info or debug",
			   bad);
}
END_TEST

START_TEST(log_file_values)
{
	char longpath[5000];

	ck_assert_str_eq(parse1("UMMUSHIM_LOG_FILE", "/tmp/x.%p.log").log_file,
			 "/tmp/x.%p.log");
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	{
		struct shim_config cfg = parse1("UMMUSHIM_LOG_FILE", longpath);

		ck_assert(!cfg.valid);
		ck_assert_int_eq(cfg.n_errors, 1);
		ck_assert_ptr_nonnull(strstr(cfg.errors[0], "UMMUSHIM_LOG_FILE='/aaa"));
		ck_assert_ptr_nonnull(strstr(cfg.errors[0], "shorter than"));
	}
}
END_TEST

START_TEST(monitor_values)
{
	/* Each accepted value is kept as it was written. */
	static const char *const good[] = { "auto", "ummunot", "uffd", "none" };
	static const char *const bad[] = { "ummunotify", "UFFD", NULL };

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_str_eq(parse1("UMMUSHIM_MONITOR", good[i]).monitor,
				 good[i]);
	assert_all_invalid("UMMUSHIM_MONITOR", "auto, ummunot, uffd or none",
			   bad);
}
END_TEST

START_TEST(subrange_values)
{
	static const char *const bad[] = { "LOCAL", "remote", "1", NULL };

	ck_assert_int_eq(parse1("UMMUSHIM_SUBRANGE", "off").subrange,
			 CONFIG_SUBRANGE_OFF);
	ck_assert_int_eq(parse1("UMMUSHIM_SUBRANGE", "local").subrange,
			 CONFIG_SUBRANGE_LOCAL);
	ck_assert_int_eq(parse1("UMMUSHIM_SUBRANGE", "all").subrange,
			 CONFIG_SUBRANGE_ALL);
	assert_all_invalid("UMMUSHIM_SUBRANGE", "local, all or off", bad);
}
END_TEST

START_TEST(every_bad_value_is_reported)
{
	const char *env[] = {
		"UMMUSHIM_ENABLE", "x", "UMMUSHIM_MAX_ENTRIES", "x",
		"UMMUSHIM_MAX_BYTES", "x", "UMMUSHIM_LOG_LEVEL", "x",
		"UMMUSHIM_STATS", "x", "UMMUSHIM_MONITOR", "x",
		"UMMUSHIM_SUBRANGE", "x", NULL
	};
	struct shim_config cfg;

	parse(&cfg, env);
	ck_assert(!cfg.valid);
	ck_assert_int_eq(cfg.n_errors, 7);
	/* Valid neighbours are still taken (e.g. the log destination). */
	{
		const char *env2[] = { "UMMUSHIM_STATS", "bad",
				       "UMMUSHIM_LOG_LEVEL", "debug", NULL };

		parse(&cfg, env2);
		ck_assert(!cfg.valid);
		ck_assert_int_eq(cfg.log_level, LOG_LEVEL_DEBUG);
	}
}
END_TEST

START_TEST(long_values_are_truncated_in_the_message)
{
	char v[300];

	memset(v, '9', sizeof(v) - 1);
	v[sizeof(v) - 1] = '\0';
	{
		struct shim_config cfg = parse1("UMMUSHIM_MAX_ENTRIES", v);

		ck_assert(!cfg.valid);
		ck_assert_uint_lt(strlen(cfg.errors[0]), CONFIG_ERROR_LEN);
		ck_assert_ptr_nonnull(strstr(cfg.errors[0], "accepted:"));
	}
}
END_TEST

START_TEST(parse_bytes_helper)
{
	uint64_t v;

	ck_assert_int_eq(config_parse_bytes("1", &v), 0);
	ck_assert_uint_eq(v, 1);
	ck_assert_int_eq(config_parse_bytes("17179869183G", &v), 0);
	ck_assert_uint_eq(v, 17179869183ULL << 30);
	ck_assert_int_eq(config_parse_bytes("17179869184G", &v), -1);
	ck_assert_int_eq(config_parse_bytes("", &v), -1);
}
END_TEST

/* ---- log -------------------------------------------------------------------- */

START_TEST(log_path_expansion)
{
	char out[64];

	ck_assert_int_eq(log_expand_path("/tmp/s.%h.%p.log", out, sizeof(out),
					 42, "node1"), 0);
	ck_assert_str_eq(out, "/tmp/s.node1.42.log");
	ck_assert_int_eq(log_expand_path("a%%p%x", out, sizeof(out), 1, "h"), 0);
	ck_assert_str_eq(out, "a%p%x");
	ck_assert_int_eq(log_expand_path("%p", out, 3, 12345, "h"), -1);
	ck_assert_int_eq(log_expand_path("", out, sizeof(out), 1, "h"), 0);
	ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(log_level_names)
{
	ck_assert_int_eq(log_level_parse("error"), LOG_LEVEL_ERROR);
	ck_assert_int_eq(log_level_parse("debug"), LOG_LEVEL_DEBUG);
	ck_assert_int_eq(log_level_parse("nope"), -1);
}
END_TEST

static char *read_file(const char *path)
{
	static char buf[8192];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	ck_assert_int_ge(fd, 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	ck_assert_int_ge(n, 0);
	buf[n] = '\0';
	return buf;
}

START_TEST(log_file_lines_carry_host_and_pid)
{
	char dir[] = "/tmp/ummushim-log-XXXXXX", tmpl[128], path[128];
	char host[64], prefix[128];
	char *text;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(tmpl, sizeof(tmpl), "%s/log.%%h.%%p", dir);
	ck_assert_int_eq(log_init(LOG_LEVEL_INFO, tmpl), 0);
	log_debug("not shown %d", 1);
	log_info("shown %d", 2);
	log_warn("also shown");
	log_always("stats", "hits=3");
	log_reset();
	gethostname(host, sizeof(host));
	host[sizeof(host) - 1] = '\0';
	snprintf(path, sizeof(path), "%s/log.%s.%ld", dir, host,
		 (long)getpid());
	text = read_file(path);
	snprintf(prefix, sizeof(prefix), "ummushim[%s:%ld] ", host,
		 (long)getpid());
	ck_assert_ptr_null(strstr(text, "not shown"));
	ck_assert_ptr_nonnull(strstr(text, "info: shown 2\n"));
	ck_assert_ptr_nonnull(strstr(text, "warn: also shown\n"));
	ck_assert_ptr_nonnull(strstr(text, "stats: hits=3\n"));
	ck_assert_msg(strncmp(text, prefix, strlen(prefix)) == 0, "%s", text);
	unlink(path);
	rmdir(dir);
}
END_TEST

START_TEST(log_file_that_cannot_be_opened_falls_back)
{
	ck_assert_int_eq(log_init(LOG_LEVEL_WARN, "/nonexistent-dir/x.log"), -1);
	ck_assert_int_eq(log_get_level(), LOG_LEVEL_WARN);
	log_reset();
}
END_TEST

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("env");

	tcase_add_test(tc, defaults);
	tcase_add_test(tc, empty_values_count_as_unset);
	tcase_add_test(tc, enable_values);
	tcase_add_test(tc, stats_values);
	tcase_add_test(tc, max_entries_values);
	tcase_add_test(tc, max_bytes_values);
	tcase_add_test(tc, log_level_values);
	tcase_add_test(tc, log_file_values);
	tcase_add_test(tc, monitor_values);
	tcase_add_test(tc, subrange_values);
	tcase_add_test(tc, every_bad_value_is_reported);
	tcase_add_test(tc, long_values_are_truncated_in_the_message);
	tcase_add_test(tc, parse_bytes_helper);
	suite_add_tcase(s, tc);
	tc = tcase_create("log");
	tcase_add_test(tc, log_path_expansion);
	tcase_add_test(tc, log_level_names);
	tcase_add_test(tc, log_file_lines_carry_host_and_pid);
	tcase_add_test(tc, log_file_that_cannot_be_opened_falls_back);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run_suite(config_suite());
}
