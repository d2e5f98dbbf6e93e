/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The shim's settings, read from UMMUSHIM_* environment variables.
 *
 * An invalid value never aborts the application: it produces one line
 * naming the variable, the value and what is accepted, and makes the shim
 * run in pass-through mode (config.valid == false).  An empty value counts
 * as unset.
 */
#ifndef UMMUSHIM_CONFIG_H
#define UMMUSHIM_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "log.h"

#define CONFIG_MAX_ERRORS 8
#define CONFIG_ERROR_LEN 320
#define CONFIG_PATH_LEN 4096

#define CONFIG_DEFAULT_MAX_ENTRIES 4096
#define CONFIG_DEFAULT_MAX_BYTES (1ULL << 30)

/* UMMUSHIM_SUBRANGE: which registrations containment hits may serve. */
enum config_subrange {
	CONFIG_SUBRANGE_OFF,	/* none: exact matches only */
	CONFIG_SUBRANGE_LOCAL,	/* local-only access (the default) */
	CONFIG_SUBRANGE_ALL,	/* also remote access: whole regions, more rights */
};

struct shim_config {
	bool enable;			/* UMMUSHIM_ENABLE */
	uint64_t max_entries;		/* UMMUSHIM_MAX_ENTRIES */
	uint64_t max_bytes;		/* UMMUSHIM_MAX_BYTES */
	bool max_bytes_set;		/* given explicitly (not the default) */
	enum log_level log_level;	/* UMMUSHIM_LOG_LEVEL */
	char log_file[CONFIG_PATH_LEN];	/* UMMUSHIM_LOG_FILE, "" = stderr */
	bool stats;			/* UMMUSHIM_STATS */
	char monitor[16];		/* UMMUSHIM_MONITOR: auto|ummunot|uffd|none */
	enum config_subrange subrange;	/* UMMUSHIM_SUBRANGE */

	bool valid;			/* false: some value was invalid */
	int n_errors;
	char errors[CONFIG_MAX_ERRORS][CONFIG_ERROR_LEN];
};

typedef const char *(*config_getenv_fn)(const char *name);

/* Fill @cfg from the environment read through @get (getenv in the shim). */
void config_parse(struct shim_config *cfg, config_getenv_fn get);

/* Parse a byte count with an optional K, M or G suffix (powers of 1024). */
int config_parse_bytes(const char *s, uint64_t *out);

#endif /* UMMUSHIM_CONFIG_H */
