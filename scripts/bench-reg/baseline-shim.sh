#!/bin/bash
# Sourced by the hit-path comparisons (hitpath-vs-baseline.sh,
# hitpath-vm.sh): build the shim of an older commit once.
#
# baseline_shim SRC COMMIT DIR: prints DIR/HASH/build/preload/libummushim.so
# (HASH: the commit COMMIT names now), building it first (git archive of
# COMMIT from the repository SRC into DIR/HASH/src, meson without tests)
# unless it is there already.  Keyed by hash, so that a branch name that
# has moved on is not served an old build.

baseline_shim() {
	local src=$1 commit=$2 hash dir shim

	hash=$(git -C "$src" rev-parse --verify --quiet "$commit^{commit}") ||
		{ echo "baseline_shim: $commit is not a commit in $src" >&2; return 1; }
	dir=$3/$hash
	shim=$dir/build/preload/libummushim.so

	if [ ! -e "$shim" ]; then
		echo "building the shim of $commit ($hash) in $dir" >&2
		mkdir -p "$dir/src"
		git -C "$src" archive "$hash" | tar -x -C "$dir/src" || return 1
		meson setup "$dir/build" "$dir/src" -Dtests=false >"$dir/setup.log" 2>&1 ||
			{ cat "$dir/setup.log" >&2; return 1; }
		ninja -C "$dir/build" preload/libummushim.so >"$dir/build.log" 2>&1 ||
			{ cat "$dir/build.log" >&2; return 1; }
	fi
	echo "$shim"
}
