#!/bin/bash
# Run the kernel's checkpatch.pl --strict (from Debian's linux-source
# tarball) on FILE...; fails on any ERROR, WARNING or CHECK.
set -euo pipefail

tarball=$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -n 1)
[ -n "$tarball" ] || { echo "checkpatch: no /usr/src/linux-source-*.tar.xz (apt-get install linux-source-6.1)" >&2; exit 1; }
cache=${UMMUNOT_CHECKPATCH_CACHE:-/var/tmp/ummunot-checkpatch}/$(basename "$tarball" .tar.xz)
if [ ! -f "$cache/scripts/checkpatch.pl" ]; then
	mkdir -p "$cache"
	tar -xJf "$tarball" -C "$cache" --strip-components=1 --wildcards \
		'*/scripts/checkpatch.pl' '*/scripts/spelling.txt' \
		'*/scripts/const_structs.checkpatch'
fi
exec perl "$cache/scripts/checkpatch.pl" --strict --no-tree --no-summary \
	--terse --show-types -f "$@"
