#!/bin/bash
# Hit-path cost of the shim: ns per ibv_reg_mr + ibv_dereg_mr pair on one
# buffer per thread, 1 and 2 threads, against the libibverbs test double
# (build/scripts/bench-reg/fakeverbs/libibverbs.so.1: no driver, no pinning),
# plain (the double's own cost) and under LD_PRELOAD=libummushim.so (after
# the first miss every pair is a cache hit).  Runs on the host, or in the VM
# where /dev/ummunot exists.
#
# Method: regbench threads — CLOCK_MONOTONIC around ITERS pairs per thread
# between two barriers, mean over threads of elapsed/ITERS, median of RUNS
# runs.
#
# Usage: hitpath.sh BUILD_DIR OUT_DIR LABEL
# Environment: HIT_ITERS (default 200000), HIT_RUNS (default 5),
#   HIT_MONITOR (UMMUSHIM_MONITOR for the shim runs, default auto).
# Writes OUT_DIR/hitpath-LABEL-{plain,shim}-{1,2}t.json and the shim's logs;
# exit status 0 when every run worked (whether the shim cached is recorded
# in its log: monitor=... hits=...).
set -eu -o pipefail

build=$(cd "$1" && pwd)
out=$2
label=$3
iters=${HIT_ITERS:-200000}
runs=${HIT_RUNS:-5}
fake=$build/scripts/bench-reg/fakeverbs
regbench=$build/scripts/bench-reg/regbench
shim=$build/preload/libummushim.so
mkdir -p "$out"
for f in "$fake/libibverbs.so.1" "$regbench" "$shim"; do
	[ -e "$f" ] || { echo "hitpath.sh: missing $f (build first)" >&2; exit 1; }
done

status=0
for threads in 1 2; do
	for mode in plain shim; do
		tag=hitpath-$label-$mode-${threads}t
		preload=
		[ "$mode" = plain ] || preload=$shim
		rm -f "$out/shim-$tag".*.log
		env LD_LIBRARY_PATH="$fake" LD_PRELOAD="$preload" FAKEVERBS_STATS=1 \
			UMMUSHIM_STATS=1 UMMUSHIM_MONITOR="${HIT_MONITOR:-auto}" \
			UMMUSHIM_LOG_FILE="$out/shim-$tag.%p.log" \
			"$regbench" threads --device fake0 --threads "$threads" \
			--iters "$iters" --runs "$runs" --size 65536 \
			--label "$label-$mode" --json "$out/$tag.json" ||
			{ echo "hitpath.sh: $tag failed" >&2; status=1; }
		if [ "$mode" = shim ]; then
			cat "$out/shim-$tag".*.log 2>/dev/null | grep -o 'monitor=.*real_regs=[0-9]*' || true
		fi
	done
done
exit "$status"
