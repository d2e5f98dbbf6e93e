#!/bin/bash
# Sourced by the hit-path comparisons (hitpath-vs-baseline.sh,
# hitpath-vm.sh): build the shim of an older commit once.
#
# baseline_shim SRC COMMIT DIR: prints DIR/build/preload/libummushim.so,
# building it first (git archive of COMMIT from the repository SRC into
# DIR/src, meson without tests) unless it is there already.

baseline_shim() {
	local src=$1 commit=$2 dir=$3
	local shim=$dir/build/preload/libummushim.so

	if [ ! -e "$shim" ]; then
		echo "building the shim of $commit in $dir" >&2
		mkdir -p "$dir/src"
		git -C "$src" archive "$commit" | tar -x -C "$dir/src" || return 1
		meson setup "$dir/build" "$dir/src" -Dtests=false >"$dir/setup.log" 2>&1 ||
			{ cat "$dir/setup.log" >&2; return 1; }
		ninja -C "$dir/build" preload/libummushim.so >"$dir/build.log" 2>&1 ||
			{ cat "$dir/build.log" >&2; return 1; }
	fi
	echo "$shim"
}
