// SPDX-License-Identifier: BSD-2-Clause
#include "config.h"

#include <stdio.h>
#include <string.h>

/*
 * Largest accepted UMMUSHIM_MAX_ENTRIES.  Each entry is a real MR (NIC
 * memory-translation resources, at least one pinned page) and a watch
 * (with userfaultfd possibly a split VMA, counted against
 * vm.max_map_count, 65530 by default); 2^20 is far above any useful
 * cache and keeps a typo from exhausting them.
 */
#define MAX_ENTRIES_LIMIT 1048576ULL
#define MAX_ENTRIES_ACCEPTED "a whole number from 1 to 1048576, e.g. 4096"

static void config_error(struct shim_config *cfg, const char *name,
			 const char *value, const char *accepted)
{
	cfg->valid = false;
	if (cfg->n_errors >= CONFIG_MAX_ERRORS)
		return;
	snprintf(cfg->errors[cfg->n_errors++], CONFIG_ERROR_LEN,
		 "%s='%.64s' is invalid (accepted: %s); caching disabled, all calls pass through",
		 name, value, accepted);
}

/* Decimal digits only, no sign, no blanks; false on overflow. */
static bool parse_u64(const char *s, const char **end, uint64_t *out)
{
	uint64_t v = 0;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*end = p;
	*out = v;
	return true;
}

int config_parse_bytes(const char *s, uint64_t *out)
{
	const char *end;
	uint64_t v, mult = 1;

	if (!parse_u64(s, &end, &v))
		return -1;
	switch (*end) {
	case '\0':
		break;
	case 'k': case 'K':
		mult = 1ULL << 10;
		end++;
		break;
	case 'm': case 'M':
		mult = 1ULL << 20;
		end++;
		break;
	case 'g': case 'G':
		mult = 1ULL << 30;
		end++;
		break;
	default:
		return -1;
	}
	if (*end != '\0' || v == 0 || v > UINT64_MAX / mult)
		return -1;
	*out = v * mult;
	return 0;
}

static const char *value_of(config_getenv_fn get, const char *name)
{
	const char *v = get(name);

	return (v && *v) ? v : NULL;	/* empty means unset */
}

static void parse_bool(struct shim_config *cfg, config_getenv_fn get,
		       const char *name, bool *out)
{
	const char *v = value_of(get, name);

	if (!v)
		return;
	if (strcmp(v, "0") == 0)
		*out = false;
	else if (strcmp(v, "1") == 0)
		*out = true;
	else
		config_error(cfg, name, v, "0 or 1");
}

static void parse_max_entries(struct shim_config *cfg, config_getenv_fn get)
{
	const char *name = "UMMUSHIM_MAX_ENTRIES";
	const char *v = value_of(get, name), *end;
	uint64_t n;

	if (!v)
		return;
	if (!parse_u64(v, &end, &n) || *end != '\0' || n == 0 ||
	    n > MAX_ENTRIES_LIMIT)
		config_error(cfg, name, v,
			     MAX_ENTRIES_ACCEPTED);
	else
		cfg->max_entries = n;
}

static void parse_max_bytes(struct shim_config *cfg, config_getenv_fn get)
{
	const char *name = "UMMUSHIM_MAX_BYTES";
	const char *v = value_of(get, name);
	uint64_t n;

	if (!v)
		return;
	if (config_parse_bytes(v, &n) != 0) {
		config_error(cfg, name, v,
			     "a positive byte count with an optional K, M or G suffix, e.g. 512M");
		return;
	}
	cfg->max_bytes = n;
	cfg->max_bytes_set = true;
}

static void parse_log_level(struct shim_config *cfg, config_getenv_fn get)
{
	const char *name = "UMMUSHIM_LOG_LEVEL";
	const char *v = value_of(get, name);
	int level;

	if (!v)
		return;
	level = log_level_parse(v);
	if (level < 0)
		config_error(cfg, name, v, "error, warn, info or debug");
	else
		cfg->log_level = (enum log_level)level;
}

static void parse_log_file(struct shim_config *cfg, config_getenv_fn get)
{
	const char *name = "UMMUSHIM_LOG_FILE";
	const char *v = value_of(get, name);

	if (!v)
		return;
	/* Leave room for %p and %h to expand. */
	if (strlen(v) >= CONFIG_PATH_LEN - 256)
		config_error(cfg, name, v,
			     "a file path shorter than 3840 bytes; %p = pid, %h = host");
	else
		strcpy(cfg->log_file, v);
}

static void parse_monitor(struct shim_config *cfg, config_getenv_fn get)
{
	static const char *const names[] = { "auto", "ummunot", "uffd", "none" };
	const char *name = "UMMUSHIM_MONITOR";
	const char *v = value_of(get, name);

	if (!v)
		return;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(v, names[i]) == 0) {
			strcpy(cfg->monitor, names[i]);
			return;
		}
	}
	config_error(cfg, name, v, "auto, ummunot, uffd or none");
}

static void parse_subrange(struct shim_config *cfg, config_getenv_fn get)
{
	static const char *const names[] = {
		[CONFIG_SUBRANGE_OFF] = "off",
		[CONFIG_SUBRANGE_LOCAL] = "local",
		[CONFIG_SUBRANGE_ALL] = "all",
	};
	const char *name = "UMMUSHIM_SUBRANGE";
	const char *v = value_of(get, name);

	if (!v)
		return;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(v, names[i]) == 0) {
			cfg->subrange = (enum config_subrange)i;
			return;
		}
	}
	config_error(cfg, name, v, "local, all or off");
}

void config_parse(struct shim_config *cfg, config_getenv_fn get)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->enable = true;
	cfg->max_entries = CONFIG_DEFAULT_MAX_ENTRIES;
	cfg->max_bytes = CONFIG_DEFAULT_MAX_BYTES;
	cfg->log_level = LOG_LEVEL_WARN;
	strcpy(cfg->monitor, "auto");
	cfg->subrange = CONFIG_SUBRANGE_LOCAL;
	cfg->valid = true;

	parse_bool(cfg, get, "UMMUSHIM_ENABLE", &cfg->enable);
	parse_max_entries(cfg, get);
	parse_max_bytes(cfg, get);
	parse_log_level(cfg, get);
	parse_log_file(cfg, get);
	parse_bool(cfg, get, "UMMUSHIM_STATS", &cfg->stats);
	parse_monitor(cfg, get);
	parse_subrange(cfg, get);
}
