#!/bin/bash
# The project's test command.
# Usage: scripts/run-tests.sh [BUILD_DIR]     (default: $BUILD_DIR or "build")
#
# 1. configures BUILD_DIR against the headers of Debian 12's default kernel
#    (6.1) and builds everything, the kernel module included (missing
#    headers or module = failure: nothing is skipped silently);
# 2. runs the VM harness self-test (it must be able to fail);
# 3. runs every meson test (suites unit, lint, vm) one at a time, the VM
#    booting that 6.1 kernel;
# 4. builds BUILD_DIR-san with ASan+UBSan (what the unit suite uses) and
#    runs the unit suite again;
# 5. the kernel matrix: for each other kernel (KERNEL_MATRIX below) a build
#    directory BUILD_DIR-KERNEL against its headers, holding only what the
#    listed VM tests use (test_outputs()), and those tests
#    booting it -- Debian's 6.12, the PREEMPT_RT flavours of 6.1 and 6.12,
#    and a 6.1 debug kernel (KASAN, lockdep, ...) built once by
#    scripts/debug-kernel/build.sh and cached, with a fuzz run on it
#    (10^5 operations; 10^6 with UMMUNOT_MATRIX=full);
# 6. compiles the module against every other kernel flavour whose headers
#    Debian 12 ships (COMPILE_ONLY below).
# Any failed, skipped or missing test counts as a failure, and so does a
# kernel that is not installed.  Before the summary comes a table kernel x
# test -> result.  The last line is "tests: N passed, N failed"; the exit
# status is nonzero if N failed > 0.
#
# UMMUNOT_KERNELS="6.1 6.12 ..." limits the matrix for a quick local run;
# each kernel left out is reported and counted as a failure (CI runs all).
set -eu -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REQUIRED_SUITES=(unit lint vm)
DEFAULT_KERNEL=6.1

# The kernel matrix beyond the default build: KERNEL TEST...
# KERNEL is a flavour of scripts/vm/kernel-version.sh, or "debug" (the
# kernel of scripts/debug-kernel/build.sh).  TESTs are meson test names;
# "fuzz" is the fuzz/stress run (FUZZ_OPS operations), not a meson test.
# The kernel suite runs everywhere; the shim VM suite on the newest generic
# and RT kernels.
KERNEL_MATRIX=(
	"6.12 vm-kernel vm-shim"
	"6.1-rt vm-kernel"
	"6.12-rt vm-kernel vm-shim"
	"debug vm-kernel fuzz"
)
# FUZZ_OPS operations of the fuzz run on the debug kernel: 10^5 (2-10
# minutes, with the host's load) keeps a cold CI run inside its time limit
# (README, "CI time"); UMMUNOT_MATRIX=full runs the 10^6 the module is held
# to (18 minutes on a lightly loaded machine).
FUZZ_OPS=100000
# UMMUNOT_MATRIX=full: the complete matrix, for a machine with the time for
# it (README, "CI time"): every VM suite on the newest generic and RT
# kernels; on the debug kernel all of vm-shim (the shim's integrity
# sections included) and 10^6 fuzz operations (README, "CI time", says
# what the default row costs).
FULL_EXTRA_TESTS="vm-shim-uffd mpi-integrity-vm dkms-module-udev-vm"
add_to_matrix_row() { # KERNEL TESTS
	local i
	for i in "${!KERNEL_MATRIX[@]}"; do
		[ "${KERNEL_MATRIX[i]%% *}" != "$1" ] || KERNEL_MATRIX[i]+=" $2"
	done
}
case ${UMMUNOT_MATRIX:-ci} in
ci) ;;
full)
	add_to_matrix_row 6.12 "$FULL_EXTRA_TESTS"
	add_to_matrix_row 6.12-rt "$FULL_EXTRA_TESTS"
	add_to_matrix_row debug vm-shim	# its integrity sections included
	FUZZ_OPS=1000000
	;;
*)
	echo "run-tests: UMMUNOT_MATRIX must be 'ci' (default) or 'full'" >&2
	exit 2
	;;
esac
# The tests of the default build shown in the matrix table.
DEFAULT_KERNEL_TESTS=(vm-kernel vm-shim vm-shim-uffd mpi-integrity-vm dkms-module-udev-vm vm-deb-install)
# KASAN + lockdep under TCG: timeouts (meson's and the harness's, and Check's
# in the guest) stretch by this factor on the debug kernel.
DEBUG_TIMEOUT_FACTOR=4
# The fuzz run's limit before that factor: boot plus FUZZ_OPS at 400 per
# second (the debug kernel did 170-1,300 per second, with the host's load),
# so that a deadlock, which the hung-task detector only logs, fails the run
# within CI's time (10^5 operations: 400 s, 27 min stretched).
fuzz_timeout() {
	echo $((150 + FUZZ_OPS / 400))
}
# Headers metapackages the module must (only) compile against.
COMPILE_ONLY=(linux-headers-cloud-amd64 linux-headers-6.12-cloud-amd64)

passed=0
failed=0
problems=()
# "KERNEL TEST" -> ok / FAIL / ... for the table.
declare -A matrix_result=()
matrix_kernels=()
# Variables naming the kernel the VM boots, for the tests being run.
KERNEL_ENV=()
# The main build directory (command line); the others are named after it.
BUILD=build

# A phase's header, with the seconds since the start: the log shows what
# each phase costs (README, "CI time").
say() {
	printf '\n=== run-tests: [%d s] %s\n' "$SECONDS" "$*"
}

# Records a failure that is not a test result (a build error, a missing
# suite); it counts as one failed test so the summary cannot look green.
problem() {
	problems+=("$*")
	failed=$((failed + 1))
	echo "run-tests: FAILED: $*" >&2
}

print_matrix() {
	local tests=(compile "${DEFAULT_KERNEL_TESTS[@]}") kernel test row
	# Then every other test a matrix row names, once, in order.
	for row in "${KERNEL_MATRIX[@]}"; do
		for test in ${row#* }; do
			[[ " ${tests[*]} " == *" $test "* ]] || tests+=("$test")
		done
	done
	[ ${#matrix_kernels[@]} -gt 0 ] || return 0
	say "kernel matrix (ok = passed, - = not part of the matrix)"
	printf '%-34s' kernel
	for test in "${tests[@]}"; do
		printf ' %s' "$test"
	done
	printf '\n'
	for kernel in "${matrix_kernels[@]}"; do
		printf '%-34s' "$kernel"
		for test in "${tests[@]}"; do
			printf " %-${#test}s" "${matrix_result["$kernel $test"]:--}"
		done
		printf '\n'
	done
}

summary_and_exit() {
	local p
	print_matrix
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

# ---- kernels ----------------------------------------------------------------

headers_of_release() { # RELEASE
	local dir=/usr/src/linux-headers-$1
	if [ ! -f "$dir/Makefile" ]; then
		echo "run-tests: no kernel headers in $dir" >&2
		return 1
	fi
	printf '%s\n' "$dir"
}

# The release a headers metapackage currently points at.
headers_package_release() { # METAPACKAGE
	local status
	status=$(dpkg-query -W -f '${db:Status-Abbrev}' "$1" 2>/dev/null) || status=
	case $status in
	ii*) ;;
	*) echo "run-tests: $1 is not installed" >&2; return 1 ;;
	esac
	dpkg-query -W -f '${Depends}\n' "$1" | tr ',' '\n' |
		sed -n 's/^ *linux-headers-\([^ ]*\).*/\1/p' | head -n 1
}

# Is KERNEL part of this run?  All are, unless UMMUNOT_KERNELS says otherwise.
kernel_selected() { # KERNEL
	[ -z "${UMMUNOT_KERNELS:-}" ] && return 0
	[[ " $UMMUNOT_KERNELS " == *" $1 "* ]]
}

# ---- building and running ---------------------------------------------------

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

# The build outputs (paths relative to DIR) that the meson tests named
# TEST (or, "suite:NAME", every test of suite NAME) depend on, and the
# targets named TARGET: a matrix row builds only what its tests run, not
# the whole project again (most of a build's time).  The tests then run
# with --no-rebuild; in a fresh build directory (CI's) a test whose
# dependency meson does not know fails visibly (its program is missing),
# never passes by accident -- so every test of a matrix row declares what
# it runs (args:, depends:).
test_outputs() { # DIR [TEST | suite:NAME | target:TARGET]...
	local dir=$1
	shift
	meson introspect --tests --targets "$dir" | python3 -c '
import json, os, sys
d = json.load(sys.stdin)
dir, wanted = sys.argv[1], sys.argv[2:]
tests = {w for w in wanted if ":" not in w}
suites = {w[6:] for w in wanted if w.startswith("suite:")}
targets = {w[7:] for w in wanted if w.startswith("target:")}
ids = set()
for t in d["tests"]:
    if t["name"] in tests or any(s.split(":")[-1] in suites for s in t["suite"]):
        ids.update(t["depends"])
        tests.discard(t["name"])
if tests:	# run_meson_tests reports them as MISSING
    print("run-tests: no meson test " + " ".join(sorted(tests)) + " in " + dir,
          file=sys.stderr)
for g in d["targets"]:
    if g["id"] in ids or g["name"] in targets:
        targets.discard(g["name"])
        for f in g["filename"]:
            print(os.path.relpath(f, os.path.realpath(dir)))
if targets:
    sys.exit("no build target " + " ".join(sorted(targets)) + " in " + dir)
' "$dir" "$@"
}

configure_and_build_for() { # BUILD_DIR [MESON_OPTIONS...] -- WHAT...
	local dir=$1 options=() outputs=()
	shift
	while [ "$1" != -- ]; do options+=("$1"); shift; done
	shift
	say "configuring $dir and building what its tests use"
	configure "$dir" "${options[@]}" || { problem "meson setup of $dir"; return 1; }
	mapfile -t outputs < <(test_outputs "$dir" "$@")
	if ! wait $!; then
		problem "finding the build outputs of $* in $dir"
		return 1
	fi
	ninja -C "$dir" "${outputs[@]}" || { problem "build in $dir"; return 1; }
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
# "suite NAME COUNT" per defined suite, then "result NAME RESULT" per test
# that ran.  OK and EXPECTEDFAIL pass; SKIP, FAIL, TIMEOUT, ERROR, ... do not.
parse_results() { # TESTLOG INTROSPECT_JSON
	python3 - "$1" "$2" <<'PYTHON'
import collections, json, os, sys
passed, failed, bad, results = 0, 0, [], []
if os.path.exists(sys.argv[1]):
    with open(sys.argv[1]) as log:
        for line in log:
            if not line.strip():
                continue
            test = json.loads(line)
            results.append((test["name"], test["result"]))
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
for name, result in results:
    print("result", name.split(" / ")[-1].split(":")[-1].strip(), result)
PYTHON
}

# Runs meson test in BUILD_DIR and adds its results to the totals; records
# the result of each test named in the matrix under KERNEL.  Every name in
# EXPECTED must have run.
# run_meson_tests BUILD_DIR KERNEL REQUIRED_SUITE... -- EXPECTED... -- MESON_TEST_ARGS...
run_meson_tests() {
	local dir=$1 kernel=$2 required=() expected=() log defined parsed counts line suite name
	shift 2
	while [ "$1" != -- ]; do required+=("$1"); shift; done
	shift
	while [ "$1" != -- ]; do expected+=("$1"); shift; done
	shift
	log=$dir/meson-logs/testlog.json
	defined=$dir/meson-logs/tests-defined.json
	rm -f "$log"
	say "meson test -C $dir $* (kernel $kernel)"
	env "${KERNEL_ENV[@]}" meson test -C "$dir" --print-errorlogs "$@" || true
	meson introspect --tests "$dir" >"$defined" || { problem "meson introspect in $dir"; return; }
	parsed=$(parse_results "$log" "$defined") || { problem "cannot read the results in $dir"; return; }
	counts=$(head -n 1 <<<"$parsed")
	passed=$((passed + ${counts% *}))
	failed=$((failed + ${counts#* }))
	while IFS= read -r line; do
		case $line in
		"suite "*) ;;
		"result "*)
			line=${line#result }
			name=${line% *}
			case ${line##* } in
			OK | EXPECTEDFAIL) matrix_result["$kernel $name"]=ok ;;
			*) matrix_result["$kernel $name"]=${line##* } ;;
			esac ;;
		*) problems+=("$dir: $line") ;;
		esac
	done < <(tail -n +2 <<<"$parsed")
	local missing=no
	for suite in "${required[@]}"; do
		grep -q "^suite $suite " <<<"$parsed" && continue
		problem "$dir: no tests in suite '$suite'"
		missing=yes
	done
	for name in "${expected[@]}"; do
		grep -q "^result $name " <<<"$parsed" && continue
		problem "$dir: test '$name' did not run (kernel $kernel)"
		matrix_result["$kernel $name"]=MISSING
		missing=yes
	done
	[ -f "$log" ] || [ "$missing" = yes ] ||
		problem "meson test in $dir ran nothing (no testlog.json)"
}

# The fuzz/stress run: test/kernel/stress.c (random register, unregister,
# read, poll, mmap, munmap, mremap, madvise, fork and close from 4 threads
# against a model) for FUZZ_OPS operations.  It passes only if the program
# says, at its end, that it ran that many.
run_fuzz() { # BUILD_DIR KERNEL TIMEOUT_FACTOR
	local dir=$1 kernel=$2 factor=$3 status=0 log limit
	log=$dir/fuzz-$FUZZ_OPS.log
	limit=$(fuzz_timeout)
	say "fuzz: $FUZZ_OPS operations (kernel $kernel)"
	# A run too slow for its limit stops at 90 % of it, with every check
	# still made, and fails (exit 3) instead of being killed.
	env "${KERNEL_ENV[@]}" "$REPO/scripts/vm/run-vm.sh" --module "$dir/kernel/ummunot.ko" \
		--timeout "$limit" -- \
		"$REPO/test/kernel/run-in-guest.sh" "$dir/test/kernel/kernel-stress" \
		--ops "$FUZZ_OPS" --threads 4 --seconds $((limit * factor * 9 / 10)) 2>&1 |
		tee "$log" || status=$?
	if [ "$status" -eq 0 ] &&
		! grep -q "^kernel-stress: $FUZZ_OPS of $FUZZ_OPS operations done" "$log"; then
		echo "run-tests: the fuzz run did not report $FUZZ_OPS operations" >&2
		status=1
	fi
	if [ "$status" -eq 0 ]; then
		passed=$((passed + 1))
		matrix_result["$kernel fuzz"]=ok
	else
		problem "fuzz run of $FUZZ_OPS operations on kernel $kernel (see $log)"
		matrix_result["$kernel fuzz"]=FAIL
	fi
}

# One row of the matrix: build against KERNEL's tree, run TESTs booting it.
run_kernel() { # KERNEL TEST...
	local kernel=$1 build=$BUILD-$1 release tree env=() meson_tests=() test
	local fuzz=no factor=1
	shift
	for test in "$@"; do
		case $test in
		fuzz) fuzz=yes ;;
		*) meson_tests+=("$test") ;;
		esac
	done
	if [ "$kernel" = debug ]; then
		say "debug kernel (scripts/debug-kernel/build.sh; cached)"
		local dk_dir
		dk_dir=$("$REPO/scripts/debug-kernel/build.sh") || {
			problem "building the debug kernel"
			matrix_kernels+=("debug (not built)")
			return
		}
		release=$(cat "$dk_dir/release")
		tree=$dk_dir/build
		factor=$DEBUG_TIMEOUT_FACTOR
		env=(UMMUNOT_KERNEL_DIR="$dk_dir" UMMUNOT_VM_TIMEOUT_FACTOR="$factor")
	else
		release=$("$REPO/scripts/vm/kernel-version.sh" "$kernel") || {
			problem "kernel $kernel is not installed"
			matrix_kernels+=("$kernel (not installed)")
			return
		}
		tree=$(headers_of_release "$release") || {
			problem "kernel $kernel ($release): headers missing"
			matrix_kernels+=("$kernel ($release)")
			return
		}
		env=(UMMUNOT_KVER="$release")
	fi
	local row="$kernel ($release)"
	matrix_kernels+=("$row")
	local outputs=(target:ummunot.ko "${meson_tests[@]}")
	[ "$fuzz" = no ] || outputs+=(target:kernel-stress)
	configure_and_build_for "$build" "-Dkernel_dir=$tree" -Dtests=true -- "${outputs[@]}" || return
	[ -f "$build/kernel/ummunot.ko" ] || { problem "$build/kernel/ummunot.ko was not built"; return; }
	matrix_result["$row compile"]=ok
	KERNEL_ENV=("${env[@]}")
	if [ ${#meson_tests[@]} -gt 0 ]; then
		run_meson_tests "$build" "$row" -- "${meson_tests[@]}" -- \
			--num-processes 1 --no-rebuild --timeout-multiplier "$factor" "${meson_tests[@]}"
	fi
	[ "$fuzz" = no ] || run_fuzz "$build" "$row" "$factor"
	KERNEL_ENV=()
}

# Compile-only: the module against a kernel tree nothing here boots.
compile_only() { # HEADERS_METAPACKAGE
	local release tree out
	release=$(headers_package_release "$1") || release=
	[ -n "$release" ] || { problem "compile-only: $1 is not installed"; return; }
	tree=$(headers_of_release "$release") ||
		{ problem "compile-only: no headers tree for $release ($1)"; return; }
	out=$BUILD/compile-only/$release
	say "compile-only: the module against $release"
	rm -rf "$out"
	if "$REPO/kernel/build-module.sh" "$tree" "$REPO/kernel" "$REPO/include" "$out" &&
		[ "$(modinfo -F vermagic "$out/ummunot.ko" | cut -d' ' -f1)" = "$release" ]; then
		passed=$((passed + 1))
		matrix_kernels+=("$release")
		matrix_result["$release compile"]=ok
	else
		problem "compile-only: the module does not build against $release"
		matrix_kernels+=("$release")
		matrix_result["$release compile"]=FAIL
	fi
}

run_default_kernel() { # BUILD_DIR
	local build=$1 release headers row
	local san_build=$build-san
	release=$("$REPO/scripts/vm/kernel-version.sh" "$DEFAULT_KERNEL") ||
		{ problem "the default kernel $DEFAULT_KERNEL is not installed"; return; }
	headers=$(headers_of_release "$release") ||
		{ problem "kernel $DEFAULT_KERNEL ($release): headers missing (install linux-headers-amd64)"; return; }
	row="$DEFAULT_KERNEL ($release)"
	matrix_kernels+=("$row")
	local options=("-Dkernel_dir=$headers" -Dtests=true)
	KERNEL_ENV=(UMMUNOT_KVER="$release")
	if configure_and_build "$build" "${options[@]}"; then
		if [ -f "$build/kernel/ummunot.ko" ]; then
			matrix_result["$row compile"]=ok
			run_selftest "$build/vm-selftest.log"
			run_meson_tests "$build" "$row" "${REQUIRED_SUITES[@]}" -- \
				"${DEFAULT_KERNEL_TESTS[@]}" -- --num-processes 1 --no-suite extended --no-suite matrix
		else
			problem "$build/kernel/ummunot.ko was not built"
		fi
	fi
	KERNEL_ENV=()

	if configure_and_build_for "$san_build" "${options[@]}" \
		-Db_sanitize=address,undefined -Db_lundef=false -- suite:unit; then
		run_meson_tests "$san_build" "$row (ASan)" unit -- -- --suite unit --no-rebuild
	fi
}

main() {
	local row kernel pkg
	BUILD=${1:-${BUILD_DIR:-build}}
	cd "$REPO"
	if kernel_selected "$DEFAULT_KERNEL"; then
		run_default_kernel "$BUILD"
	else
		problem "kernel $DEFAULT_KERNEL not run (UMMUNOT_KERNELS=$UMMUNOT_KERNELS)"
	fi
	for row in "${KERNEL_MATRIX[@]}"; do
		read -r -a row <<<"$row"
		kernel=${row[0]}
		if kernel_selected "$kernel"; then
			run_kernel "${row[@]}"
		else
			problem "kernel $kernel not run (UMMUNOT_KERNELS=$UMMUNOT_KERNELS)"
		fi
	done
	for pkg in "${COMPILE_ONLY[@]}"; do
		compile_only "$pkg"
	done
	summary_and_exit
}

main "$@"
