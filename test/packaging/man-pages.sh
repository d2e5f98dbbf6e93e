#!/bin/bash
# Packaging test (host): the generated man pages render without a single
# groff warning (groff -ww, and man --warnings as man -l renders them), and
# they document what the code defines, each in a table row: every UMMUSHIM_* variable the shim
# reads (preload/config.c) and every statistics field it prints
# (preload/stats.c) in libummushim(7), every ioctl of include/ummunot.h in
# ummunot(4), every option of `ummushim run` in ummushim(1).
# Usage: man-pages.sh SRC_ROOT UMMUSHIM ummunot.4 libummushim.7 ummushim.1
set -eu -o pipefail

src=$1
ummushim=$2
shift 2
fails=0
fail() {
	echo "FAIL: $*" >&2
	fails=$((fails + 1))
}

for page in "$@"; do
	[ -s "$page" ] || { fail "$page is missing or empty"; continue; }
	warnings=$(groff -man -t -ww -z "$page" 2>&1) || fail "groff failed on $page"
	[ -z "$warnings" ] || fail "groff -ww warns on $(basename "$page"): $warnings"
	warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) || fail "man -l failed on $page"
	[ -z "$warnings" ] || fail "man --warnings -l warns on $(basename "$page"): $warnings"
	lines=$(MANWIDTH=80 man -l "$page" 2>/dev/null | wc -l)
	echo "$(basename "$page"): $lines lines at 80 columns, no warnings"
done

# The text of a page as a reader sees it (no font escapes, no break points).
rendered() {
	LC_ALL=C.UTF-8 MANWIDTH=200 man -l "$1" 2>/dev/null | col -bx
}

# documents PAGE WHAT NAME...: each NAME starts a row of a table in PAGE
# (alone or in a list "a, b"), as the README's tables have them.
documents() {
	local page=$1 what=$2 text name
	shift 2
	text=$(rendered "$page")
	[ $# -gt 0 ] || fail "found no $what to look for"
	for name in "$@"; do
		grep -Eq -- "│ ?([A-Za-z_-]+, )*$name( |,|│)" <<<"$text" ||
			fail "$(basename "$page") has no table row for $what $name"
	done
	echo "$(basename "$page"): a table row for each of the $# $what"
}

# shellcheck disable=SC2046 # word lists extracted from the sources
documents "$2" "shim variables" $(grep -o '"UMMUSHIM_[A-Z_]*"' "$src/preload/config.c" | tr -d '"' | sort -u)
# shellcheck disable=SC2046
documents "$2" "statistics fields" $(grep -o '[ "][a-z_]*=' "$src/preload/stats.c" | tr -d ' "=' | sort -u)
# shellcheck disable=SC2046
documents "$1" "ioctls" $(sed -n 's/^#define \(UMMUNOT_[A-Z_]*\)[[:space:]]*_IO.*/\1/p' "$src/include/ummunot.h")
# shellcheck disable=SC2046
documents "$3" "run options" $("$ummushim" run --help | grep -o -- '--[a-z][a-z-]*' | grep -vx -- '--help' | sort -u)

[ "$fails" -eq 0 ] || exit 1
echo "PASS: man pages render cleanly and document every variable, field, ioctl and option"
