#!/bin/bash
# VM test of libummushim.so with the userfaultfd backend: the module is NOT
# loaded, Soft-RoCE is (scripts/vm/run-vm.sh --rdma).  Runs the programs of
# test/rdma with the shim preloaded and UMMUSHIM_MONITOR=uffd (and auto,
# which must pick uffd when /dev/ummunot is absent).
# Usage: vm-shim-uffd.sh SHIM.so CONTROL_SHIM.so INTEGRITY REG_CYCLES LIFECYCLE \
#                        BYPASS UNMAP_RACE
set -u

SHIM=$1
CONTROL=$2
INTEGRITY=$3
REG_CYCLES=$4
LIFECYCLE=$5
BYPASS=$6
UNMAP_RACE=$7

CYCLES=50
TMP=$(mktemp -d /tmp/shim-uffd.XXXXXX)
# shellcheck source=SCRIPTDIR/../lib/shim-tap.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/shim-tap.sh"

# shim_run NAME LIB MONITOR CMD...: one log file per process, $TMP/NAME.<pid>.log
shim_run() {
	local name=$1 lib=$2 mon=$3
	shift 3
	env UMMUSHIM_STATS=1 UMMUSHIM_LOG_LEVEL=info UMMUSHIM_MONITOR="$mon" \
		UMMUSHIM_LOG_FILE="$TMP/$name.%p.log" LD_PRELOAD="$lib" "$@"
}

echo "# kernel $(uname -r)"
check "/dev/ummunot is absent (module not loaded)" test ! -e /dev/ummunot
check "rxe0 is present" sh -c "ibv_devices | grep -qw rxe0"

# ---- caching with uffd ----------------------------------------------------------
for mon in uffd auto; do
	name=cycles-$mon
	check "reg-cycles under the shim, UMMUSHIM_MONITOR=$mon" \
		shim_run "$name" "$SHIM" "$mon" "$REG_CYCLES" var "$CYCLES"
	log=$(log_of "$name")
	echo "# $(grep ' stats: ' "$log")"
	expect_stat "$log" monitor uffd "$mon: uffd monitor in use"
	expect_stat "$log" real_regs 2 "$mon: one real registration of the cycled buffer"
	expect_stat "$log" hits $((CYCLES - 1)) "$mon: every later cycle is a hit"
done
check "auto: the info line names the uffd monitor" \
	grep -q 'caching registrations: monitor=uffd' "$(log_of cycles-auto)"

# ---- data integrity ----------------------------------------------------------------
echo "# integrity under libummushim.so with uffd (must always see the new data):"
check "integrity under the shim (uffd): new data every time" \
	shim_run integrity "$SHIM" uffd "$INTEGRITY" --expect fresh --iterations 20
log=$(log_of integrity)
echo "# $(grep ' stats: ' "$log")"
inv=$(stat "$log" invalidations)
check "integrity: invalidations seen ($inv)" test "${inv:-0}" -gt 0
hits=$(stat "$log" hits)
check "integrity: hits served ($hits)" test "${hits:-0}" -gt 0

echo "# control run: a cache that ignores invalidations must deliver stale data:"
check "control run (uffd) sees stale data with every method (the test can fail)" \
	shim_run control "$CONTROL" uffd "$INTEGRITY" --expect stale --iterations 5

# ---- lifecycle ------------------------------------------------------------------------
for c in pd-close fork busy-stale; do
	check "lifecycle $c (uffd)" shim_run "life-$c" "$SHIM" uffd "$LIFECYCLE" "$c"
	echo "# $(grep ' stats: ' "$(log_of "life-$c")")"
done
expect_stat "$(log_of life-busy-stale)" stale 1 "busy-stale: counted"
check "lifecycle threads (uffd): reg/dereg while another thread replaces memory" \
	shim_run life-threads "$SHIM" uffd timeout 600 "$LIFECYCLE" threads 150
log=$(log_of life-threads)
echo "# $(grep ' stats: ' "$log")"
inv=$(stat "$log" invalidations)
check "threads: invalidations seen ($inv)" test "${inv:-0}" -gt 0

# ---- handle-based registration (NCCL-style) ------------------------------------
check "rdma-bypass under the shim (uffd): handle-based cycles with RDMA writes" \
	shim_run bypass "$SHIM" uffd "$BYPASS" 30
expect_stat "$(log_of bypass)" hits 0 "bypass: handle-based registrations never come from the cache"

# ---- unmap racing remap + register --------------------------------------------
# userfaultfd queues the UNMAP event only after munmap() has released the
# range; the probe before each hit must catch it (see preload/monitor_uffd.c).
UNMAP_ITERS=1000
for hog in "" --hog; do
	name=unmap-race$hog
	if shim_run "$name" "$SHIM" uffd "$UNMAP_RACE" "$UNMAP_ITERS" --expect-zero $hog >"$TMP/$name.out"; then
		ok "unmap-race (uffd$hog): no stale MR in $UNMAP_ITERS iterations"
	else
		not_ok "unmap-race (uffd$hog): stale MRs or failure"
	fi
	echo "# uffd $(cat "$TMP/$name.out")"
	echo "# $(grep ' stats: ' "$(log_of "$name")")"
done
check "uffd: no warning that the probe is missing" \
	sh -c "! grep -q 'cannot probe' '$(log_of unmap-race)'"

echo "1..$n"
[ "$failed" -eq 0 ]
