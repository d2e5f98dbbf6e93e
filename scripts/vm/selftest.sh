#!/bin/bash
# Self-test of the VM harness: proves that run-vm.sh passes the command's
# exit status through, and that it FAILS on a bad guest kernel log, a
# refused module, and a timeout.  A harness that cannot fail would make
# every VM test meaningless, so run-tests.sh runs this first.
# Prints "ok N - ..." / "not ok N - ..." lines, then
# "selftest: P passed, F failed"; exits nonzero if anything failed.
set -eu

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUN_VM=$SCRIPT_DIR/run-vm.sh
HARNESS_FAILURE=99
passed=0
failed=0
count=0
WORK=$(mktemp -d /var/tmp/ummunot-vm-selftest.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

report() { # STATUS(0=ok) DESCRIPTION
	count=$((count + 1))
	if [ "$1" -eq 0 ]; then
		passed=$((passed + 1))
		echo "ok $count - $2"
	else
		failed=$((failed + 1))
		echo "not ok $count - $2"
	fi
}

# Runs the harness with its output indented; prints its exit status.
vm_status() {
	echo "# run-vm.sh $*" >&2
	"$RUN_VM" --out "$WORK/run$((count + 1))" "$@" 2>&1 | sed 's/^/#   /' >&2
	echo "${PIPESTATUS[0]}"
}

expect_status() { # WANT DESCRIPTION RUN-VM-ARGS...
	local want=$1 what=$2 got
	shift 2
	got=$(vm_status "$@")
	report "$([ "$got" -eq "$want" ]; echo $?)" "$what (exit status $got, want $want)"
}

# ---- host-only checks of the log patterns -----------------------------------

log_check_fails_on() { # LINE
	printf '[    1.000000] %s\n' "$1" >"$WORK/log"
	! report_bad_log "$WORK/log" 2>/dev/null
}

check_log_patterns() (
	# shellcheck source=/dev/null
	. "$RUN_VM"
	local line bad=0
	while IFS= read -r line; do
		log_check_fails_on "$line" || { echo "# not caught: $line"; bad=1; }
	done <<'EOF'
BUG: kernel NULL pointer dereference, address: 0000000000000000
BUG ummunot (Tainted: G OE): Objects remaining in ummunot on __kmem_cache_shutdown()
WARNING: CPU: 0 PID: 1 at mm/mmu_notifier.c:1 foo+0x1/0x2
Oops: 0000 [#1] PREEMPT SMP NOPTI
general protection fault, probably for non-canonical address 0xdead: 0000 [#1]
Call Trace:
kernel BUG at mm/slub.c:123!
UBSAN: shift-out-of-bounds in foo.c:1:2
BUG: KASAN: use-after-free in foo+0x1/0x2
WARNING: possible circular locking dependency detected
INFO: task foo:123 blocked for more than 120 seconds.
rcu: INFO: rcu_sched self-detected stall on CPU
rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
list_add corruption. prev->next should be next
list_del corruption, ffff8880 ->next is LIST_POISON1
refcount_t: underflow; use-after-free.
Kernel panic - not syncing: Fatal exception
EOF
	printf '%s\n' '[ 1.0] ummunot: loading out-of-tree module taints kernel.' \
		'[ 1.0] ummunot: module verification failed: signature and/or required key missing - tainting kernel' \
		'[ 1.0] d0 speed is unknown, defaulting to 1000' \
		'[ 1.0] traps: prog[12] general protection fault ip:401000 sp:7ffc error:0 in prog[401000+1000]' \
		>"$WORK/log"
	report_bad_log "$WORK/log" || { echo "# expected lines were flagged"; bad=1; }
	return "$bad"
)

# A crashed user program is shown with its code line; a clean log shows none.
check_user_faults() (
	# shellcheck source=/dev/null
	. "$RUN_VM"
	local out
	printf '%s\n' '[   64.370884] rdma-integrity[400]: segfault at 7f87cefb0008 ip 00005643348bd00e sp 00007ffdb42ea570 error 4 in rdma-integrity[300e,5643348bc000+2000] likely on CPU 1 (core 0, socket 1)' \
		'[   64.376479] Code: 84 bf 00 00 00 41 57 31 c0 <0f> b6 54 1d 00' \
		'[   65.881726] d0 speed is unknown, defaulting to 1000' \
		'[   66.000000] traps: prog[12] general protection fault ip:401000 sp:7ffc error:0 in prog[401000+1000]' >"$WORK/faults"
	out=$(report_user_faults "$WORK/faults" 2>&1)
	if ! grep -q 'segfault at 7f87cefb0008 .* in rdma-integrity\[300e,' <<<"$out" ||
		! grep -q 'Code: 84 bf' <<<"$out" || ! grep -q 'traps: prog\[12\]' <<<"$out" ||
		grep -q 'd0 speed' <<<"$out" || grep -qx '  | --' <<<"$out"; then
		echo "# report_user_faults printed: $out"
		return 1
	fi
	printf '%s\n' '[ 1.0] d0 speed is unknown, defaulting to 1000' >"$WORK/faults"
	out=$(report_user_faults "$WORK/faults" 2>&1)
	[ -z "$out" ] || { echo "# report_user_faults printed for a clean log: $out"; return 1; }
)

# ---- checks that boot the VM --------------------------------------------------

# One boot checks what every job relies on; the guest names the check
# that failed.  The job directory lies under /root and the command's
# arguments under /tmp and /run: the guest covers those with tmpfs of its
# own, and a clone or a build directory there must still be seen.
check_clean_run() {
	local out=$WORK/out cmd top dirs=() status=0
	for top in /root /tmp /run; do
		dirs+=("$(mktemp -d "$top/ummunot-selftest-job.XXXXXX")")
		echo here >"${dirs[-1]}/marker"
	done
	# shellcheck disable=SC2016 # expanded by the guest's sh
	cmd='must() { what=$1; shift; "$@" || { echo "selftest: guest check failed: $what"; exit 1; }; }
		must "--env" test "$SELFTEST_VAR" = "a b'\''c"
		must "cwd" test "$PWD" = "$1"
		must "job directory under /root" grep -qx here marker
		must "argument under /tmp" grep -qx here "$2"
		must "argument under /run" grep -qx here "$3"
		must "root" test "$(id -u)" = 0
		must "hostname" test "$(hostname)" = ummunot-vm
		must "writable /tmp" test -w /tmp
		must "node 1 has memory" grep -q "Node 1 MemTotal" /sys/devices/system/node/node1/meminfo
		must "node 0 has CPU 0" test "$(cat /sys/devices/system/node/node0/cpulist)" = 0
		must "node 1 has CPU 1" test "$(cat /sys/devices/system/node/node1/cpulist)" = 1
		echo written >"$UMMUNOT_VM_OUT/from-guest"'
	cd "${dirs[0]}"
	expect_status 0 "clean run passes; --env, cwd (a job directory under /root), arguments under /tmp and /run, root, hostname, two NUMA nodes with one CPU each work" \
		--out "$out" --env "SELFTEST_VAR=a b'c" -- sh -c "$cmd" sh "$PWD" "${dirs[1]}/marker" "${dirs[2]}/marker"
	cd - >/dev/null
	rm -rf "${dirs[@]}"
	grep -qx written "$out/from-guest" && grep -q 'Linux version' "$out/dmesg.txt" || status=1
	report "$status" "result file and dmesg.txt come back to the host"
}

main() {
	cd "$SCRIPT_DIR/../.."
	local status=0
	check_log_patterns || status=1
	report "$status" "log check catches every listed pattern and ignores the taint lines"
	status=0
	check_user_faults || status=1
	report "$status" "crashed user programs in the guest kernel log are shown with their code line"
	check_clean_run
	expect_status 3 "command's exit status comes back" -- sh -c 'exit 3'
	expect_status "$HARNESS_FAILURE" "a WARNING in the guest kernel log fails the run" \
		-- sh -c 'echo "WARNING: fake warning from the harness self-test" >/dev/kmsg'
	expect_status 0 "the expected taint lines do not fail the run" \
		-- sh -c 'echo "selftest: loading out-of-tree module taints kernel." >/dev/kmsg'
	printf 'not an ELF module\n' >"$WORK/broken.ko"
	expect_status "$HARNESS_FAILURE" "a module insmod refuses fails the run" \
		--module "$WORK/broken.ko" -- true
	expect_status "$HARNESS_FAILURE" "a guest that runs too long fails the run" \
		--timeout 20 -- sleep 600
	echo "selftest: $passed passed, $failed failed"
	[ "$failed" -eq 0 ]
}

main "$@"
