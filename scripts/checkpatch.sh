#!/bin/bash
# Run the kernel's checkpatch.pl --strict on whole files.
# Usage: scripts/checkpatch.sh FILE...
# checkpatch.pl (with spelling.txt and const_structs.checkpatch, which it
# reads from its own directory) comes from Debian's linux-source tarball,
# extracted once into a cache (UMMUNOT_CHECKPATCH_CACHE, default
# /var/tmp/ummunot-checkpatch-cache).  Fails on any ERROR, WARNING or CHECK.
set -eu -o pipefail

WANTED=(scripts/checkpatch.pl scripts/spelling.txt scripts/const_structs.checkpatch)

die() {
	echo "checkpatch.sh: $*" >&2
	exit 1
}

find_tarball() {
	local newest
	newest=$(printf '%s\n' /usr/src/linux-source-*.tar.xz | sort -V | tail -n 1)
	[ -f "$newest" ] || die "no /usr/src/linux-source-*.tar.xz (install linux-source-6.1)"
	printf '%s\n' "$newest"
}

# Prints the directory holding checkpatch.pl, extracting it when needed.
# Extraction goes to a temporary directory renamed into place, so
# concurrent runs never see a half-extracted tree.
checkpatch_dir() {
	local tarball=$1 cache key dir stage top
	cache=${UMMUNOT_CHECKPATCH_CACHE:-/var/tmp/ummunot-checkpatch-cache}
	key=$(stat -c '%n %s %Y' "$tarball" | sha256sum | cut -c1-16)
	dir=$cache/$key
	if [ ! -f "$dir/checkpatch.pl" ]; then
		mkdir -p "$cache"
		stage=$(mktemp -d "$cache/stage.XXXXXX")
		top=$(tar -tJf "$tarball" | head -n 1 | cut -d/ -f1)
		tar -xJf "$tarball" -C "$stage" "${WANTED[@]/#/$top/}"
		mv "$stage/$top/scripts" "$stage/scripts"
		mv -T "$stage/scripts" "$dir" 2>/dev/null || [ -f "$dir/checkpatch.pl" ]
		rm -rf "$stage"
	fi
	printf '%s\n' "$dir"
}

check_file() { # CHECKPATCH_DIR FILE
	local out
	out=$(perl "$1/checkpatch.pl" --strict --no-tree --show-types --color=never -f "$2") || true
	printf '%s\n' "$out"
	# checkpatch's exit status ignores CHECKs: judge by its own totals.
	printf '%s\n' "$out" | grep -q '^total: 0 errors, 0 warnings, \(0 checks, \)\?[0-9]* lines checked$'
}

main() {
	local dir file bad=0
	[ $# -gt 0 ] || die "usage: checkpatch.sh FILE..."
	for file in "$@"; do
		[ -f "$file" ] || die "no such file: $file"
	done
	dir=$(checkpatch_dir "$(find_tarball)")
	for file in "$@"; do
		check_file "$dir" "$file" || { echo "checkpatch.sh: FAILED: $file" >&2; bad=1; }
	done
	return "$bad"
}

main "$@"
