#!/bin/bash
# In the VM (module loaded, Soft-RoCE up): an unmodified MPI program stays
# correct under the shim while its buffers' pages are replaced behind the
# same addresses, and the check is shown able to fail.
#   1. mpibench under libummushim.so, UCX's own cache off, rendezvous from
#      8 KiB, buffers remapped (mmap MAP_FIXED) every 4 iterations: every
#      received word must match, and the shim must report cache hits and
#      invalidations (it cached, and it noticed the remaps).
#   2. Control: the same under libummushim_control.so, a build of the shim
#      that ignores invalidations: the data check must catch stale data.
# Usage: guest.sh MPIBENCH SHIM CONTROL_SHIM OUT_DIR
set -eu -o pipefail

mpibench=$1 shim=$2 control=$3 out=$4
mkdir -p "$out"
ulimit -l unlimited

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# shellcheck disable=SC2054 # "rc,self" is one value
MPIRUN=(mpirun --allow-run-as-root --oversubscribe -np 2
	--mca pml ucx --mca pml_ucx_tls any --mca pml_ucx_devices any
	--mca btl self --mca osc ^ucx
	-x UCX_NET_DEVICES=rxe0:1 -x UCX_TLS=rc,self -x UCX_UD_ETH_DGID_CHECK=n
	-x UCX_IB_REG_METHODS=direct -x UCX_RNDV_THRESH=8K -x UMMUSHIM_STATS=1)
BENCH=("$mpibench" --min 16K --max 256K --factor 4 --min-iters 12
	--max-iters 12 --warmup 1 --churn 4)

run() { # NAME PRELOAD -> mpirun's exit status
	local rc=0
	"${MPIRUN[@]}" -x "LD_PRELOAD=$2" -x "UMMUSHIM_LOG_FILE=$out/$1.%p.log" \
		"${BENCH[@]}" --label "$1" >"$out/$1.txt" 2>&1 || rc=$?
	grep -v ' UCX  INFO ' "$out/$1.txt" | sed "s/^/[$1] /"
	cat "$out/$1".*.log 2>/dev/null | sed "s/^/[$1] /"
	return "$rc"
}

# Sum of one numeric field of the shim's stats lines over all ranks.
stat_sum() { # NAME FIELD
	cat "$out/$1".*.log 2>/dev/null | grep -o " $2=[0-9]*" | cut -d= -f2 |
		awk '{s += $1} END {print s + 0}'
}

rc=0
run shim "$shim" || rc=$?
[ "$rc" -eq 0 ] || fail "mpibench under the shim exited with $rc (2 = data errors)"
grep -q 'monitor=ummunot' "$out"/shim.*.log || fail "the shim did not use /dev/ummunot"
hits=$(stat_sum shim hits)
inval=$(stat_sum shim invalidations)
[ "$hits" -gt 0 ] || fail "the shim reported no cache hits"
[ "$inval" -gt 0 ] || fail "the shim reported no invalidations although buffers were remapped"
echo "shim: data correct, hits=$hits invalidations=$inval"

rc=0
run control "$control" || rc=$?
[ "$rc" -eq 2 ] ||
	fail "the control run (invalidations ignored) exited with $rc, not 2: the data check did not catch stale registrations"
echo "control: stale data caught as expected"
echo "PASS: MPI data intact under the shim with remapped buffers; control run caught stale data"
