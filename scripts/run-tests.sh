#!/bin/bash
# The project's test command.
# Usage: scripts/run-tests.sh [BUILD_DIR]     (default: $BUILD_DIR or "build")
#
# 1. configures BUILD_DIR against the installed Debian kernel's headers and
#    builds everything, the kernel module included (missing headers or
#    module = failure: nothing is skipped silently);
# 2. runs the VM harness self-test (it must be able to fail);
# 3. runs every meson test (suites unit, lint, vm) one at a time;
# 4. builds BUILD_DIR-san with ASan+UBSan and runs the unit suite again.
# Any failed, skipped or missing test counts as a failure.  The last line is
# "tests: N passed, N failed"; the exit status is nonzero if N failed > 0.
set -eu -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REQUIRED_SUITES=(unit lint vm)
passed=0
failed=0
problems=()

say() {
	printf '\n=== run-tests: %s\n' "$*"
}

# Records a failure that is not a test result (a build error, a missing
# suite); it counts as one failed test so the summary cannot look green.
problem() {
	problems+=("$*")
	failed=$((failed + 1))
	echo "run-tests: FAILED: $*" >&2
}

summary_and_exit() {
	local p
	say "summary"
	for p in "${problems[@]}"; do
		echo "  FAILED: $p"
	done
	echo "tests: $passed passed, $failed failed"
	if [ "$failed" -ne 0 ]; then
		exit 1
	fi
	exit 0
}

kernel_headers() {
	local kver dir
	kver=$("$REPO/scripts/vm/kernel-version.sh") || return 1
	dir=/usr/src/linux-headers-$kver
	if [ ! -f "$dir/Makefile" ]; then
		echo "run-tests: no kernel headers in $dir (install linux-headers-amd64)" >&2
		return 1
	fi
	printf '%s\n' "$dir"
}

configure() { # BUILD_DIR MESON_OPTIONS...
	local dir=$1
	shift
	if [ -f "$dir/meson-private/coredata.dat" ]; then
		meson setup --reconfigure "$dir" "$@"
	else
		meson setup "$dir" "$@"
	fi
}

configure_and_build() { # BUILD_DIR MESON_OPTIONS...
	local dir=$1
	say "configuring and building $dir"
	configure "$@" || { problem "meson setup of $dir"; return 1; }
	ninja -C "$dir" || { problem "build in $dir"; return 1; }
}

run_selftest() {
	local log=$1 counts
	say "VM harness self-test"
	"$REPO/scripts/vm/run-vm.sh" --selftest 2>&1 | tee "$log" || true
	counts=$(sed -n 's/^selftest: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$log")
	if [ -z "$counts" ]; then
		problem "VM harness self-test did not finish"
		return
	fi
	passed=$((passed + ${counts% *}))
	failed=$((failed + ${counts#* }))
	[ "${counts#* }" -eq 0 ] || problems+=("VM harness self-test (see 'not ok' lines above)")
}

# Reads meson's testlog.json (absent when nothing ran) and the test list
# from `meson introspect --tests` (this meson's testlog names no suites).
# Prints "PASSED FAILED", then one line per test that did not pass, then
# "suite NAME COUNT" per defined suite.  OK and EXPECTEDFAIL pass; SKIP,
# FAIL, TIMEOUT, ERROR, ... do not.
parse_results() { # TESTLOG INTROSPECT_JSON
	python3 - "$1" "$2" <<'EOF'
import collections, json, os, sys
passed, failed, bad = 0, 0, []
if os.path.exists(sys.argv[1]):
    with open(sys.argv[1]) as log:
        for line in log:
            if not line.strip():
                continue
            test = json.loads(line)
            if test["result"] in ("OK", "EXPECTEDFAIL"):
                passed += 1
            else:
                failed += 1
                bad.append(f'{test["result"]}: {test["name"]}')
suites = collections.Counter()
with open(sys.argv[2]) as defined:
    for test in json.load(defined):
        for suite in test["suite"]:
            suites[suite.split(":")[-1]] += 1
print(passed, failed)
for line in bad:
    print(line)
for name, count in suites.items():
    print("suite", name, count)
EOF
}

# Runs meson test in BUILD_DIR and adds its results to the totals.
run_meson_tests() { # BUILD_DIR REQUIRED_SUITE... -- MESON_TEST_ARGS...
	local dir=$1 required=() log defined parsed counts line suite
	shift
	while [ "$1" != -- ]; do required+=("$1"); shift; done
	shift
	log=$dir/meson-logs/testlog.json
	defined=$dir/meson-logs/tests-defined.json
	rm -f "$log"
	say "meson test -C $dir $*"
	meson test -C "$dir" --print-errorlogs "$@" || true
	meson introspect --tests "$dir" >"$defined" || { problem "meson introspect in $dir"; return; }
	parsed=$(parse_results "$log" "$defined") || { problem "cannot read the results in $dir"; return; }
	counts=$(head -n 1 <<<"$parsed")
	passed=$((passed + ${counts% *}))
	failed=$((failed + ${counts#* }))
	while IFS= read -r line; do
		case $line in
		"suite "*) ;;
		*) problems+=("$dir: $line") ;;
		esac
	done < <(tail -n +2 <<<"$parsed")
	local missing=no
	for suite in "${required[@]}"; do
		grep -q "^suite $suite " <<<"$parsed" && continue
		problem "$dir: no tests in suite '$suite'"
		missing=yes
	done
	[ -f "$log" ] || [ "$missing" = yes ] ||
		problem "meson test in $dir ran nothing (no testlog.json)"
}

main() {
	local build=${1:-${BUILD_DIR:-build}} headers
	local san_build=$build-san
	cd "$REPO"
	headers=$(kernel_headers) || { problem "kernel headers"; summary_and_exit; }
	local options=("-Dkernel_dir=$headers" -Dtests=true)

	if configure_and_build "$build" "${options[@]}"; then
		if [ -f "$build/kernel/ummunot.ko" ]; then
			run_selftest "$build/vm-selftest.log"
			run_meson_tests "$build" "${REQUIRED_SUITES[@]}" -- --num-processes 1
		else
			problem "$build/kernel/ummunot.ko was not built"
		fi
	fi

	if configure_and_build "$san_build" "${options[@]}" \
		-Db_sanitize=address,undefined -Db_lundef=false; then
		run_meson_tests "$san_build" unit -- --suite unit
	fi
	summary_and_exit
}

main "$@"
