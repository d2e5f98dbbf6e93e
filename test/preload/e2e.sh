#!/bin/sh
# End-to-end interposition test on the host: run e2e_prog (linked against
# the libibverbs test double) with the shim preloaded and check, from the
# shim's own exit statistics, that every registration was seen exactly
# once and passed through.  The test double's own checks assume nothing is
# cached, so the runs pin UMMUSHIM_MONITOR=none (whatever invalidation
# source this machine may have); caching itself is tested in test_cache
# and, with the real module, in the VM tests.
# Sections 9 and 10 need caching on and use the userfaultfd monitor (the
# host has no /dev/ummunot).
# Usage: e2e.sh SHIM.so E2E_PROG E2E_DLOPEN_PROG E2E_PLUGIN.so E2E_NOVERBS \
#               E2E_BYPASS_PROG E2E_CACHE_PROG FAKE_LIBIBVERBS.so.1
set -eu

shim=$1
prog=$2
dlopen_prog=$3
plugin=$4
noverbs=$5
bypass=$6
cacheprog=$7
fakelib=$8
tmp=$(mktemp -d /tmp/ummushim-e2e.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# The sanitizer runtime cannot come first when something is preloaded.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
unset UMMUSHIM_ENABLE UMMUSHIM_MAX_ENTRIES UMMUSHIM_MAX_BYTES UMMUSHIM_LOG_LEVEL \
	UMMUSHIM_LOG_FILE UMMUSHIM_STATS
export UMMUSHIM_MONITOR=none
TMP=$tmp
# shellcheck source=SCRIPTDIR/../lib/shim-tap.sh
. "$(dirname "$0")/../lib/shim-tap.sh"

fail() {
	not_ok "$*"
}

# 1. Without the shim: the program itself passes.
out=$("$prog") || fail "program fails without the shim"
echo "$out"
app_regs=$(echo "$out" | sed -n 's/.*app_regs=\([0-9]*\).*/\1/p')
app_deregs=$(echo "$out" | sed -n 's/.*app_deregs=\([0-9]*\).*/\1/p')
[ -n "$app_regs" ] || fail "no app_regs line"

# 2. With the shim: same results, each call counted once, pass-through.
log=$tmp/stats.log
UMMUSHIM_STATS=1 UMMUSHIM_LOG_FILE="$tmp/stats.%p.log" LD_PRELOAD="$shim" \
	"$prog" || fail "program fails under the shim"
cat "$tmp"/stats.*.log > "$log"
cat "$log"
[ "$(grep -c ' stats: ' "$log")" = 1 ] || fail "expected one stats line"
expect_stat "$log" monitor none "UMMUSHIM_MONITOR=none"
expect_stat "$log" real_regs "$app_regs" "one real registration per call"
expect_stat "$log" passthrough "$app_regs" "everything passes through"
expect_stat "$log" real_deregs "$app_deregs" "one real deregistration per call"
expect_stat "$log" hits 0 "nothing cached"
expect_stat "$log" misses 0 "nothing cached"

# 3. The reason for passing through is given once, at info level.
err=$tmp/info.err
UMMUSHIM_LOG_LEVEL=info LD_PRELOAD="$shim" "$prog" >/dev/null 2>"$err" ||
	fail "program fails at log level info"
cat "$err"
[ "$(grep -c 'no working invalidation source (UMMUSHIM_MONITOR=none)' "$err")" = 1 ] ||
	fail "expected one 'no working invalidation source' line"
grep -q '^ummushim\[[^:]*:[0-9]*\] info: ' "$err" || fail "log prefix"

if [ ! -e /dev/ummunot ]; then
	UMMUSHIM_MONITOR=ummunot UMMUSHIM_LOG_LEVEL=info LD_PRELOAD="$shim" \
		"$prog" >/dev/null 2>"$err" ||
		fail "program fails with UMMUSHIM_MONITOR=ummunot and no module"
	cat "$err"
	grep -q 'no working invalidation source (ummunot: No such file or directory)' \
		"$err" || fail "no line explaining the missing /dev/ummunot"
fi

# 4. Bad values: the program still works; one clear line per bad variable.
for bad in UMMUSHIM_ENABLE=maybe UMMUSHIM_MAX_ENTRIES=-3 UMMUSHIM_MAX_BYTES=12Q \
	UMMUSHIM_LOG_LEVEL=loud UMMUSHIM_STATS=yes UMMUSHIM_MONITOR=magic; do
	var=${bad%%=*}
	val=${bad#*=}
	env "$bad" LD_PRELOAD="$shim" "$prog" >/dev/null \
		2>"$err" || fail "program fails with $bad"
	n=$(grep -c "error: $var='$val' is invalid (accepted: " "$err" || true)
	[ "$n" = 1 ] || { cat "$err"; fail "$bad: expected one clear line, got $n"; }
	[ "$(wc -l < "$err")" = 1 ] || { cat "$err"; fail "$bad: extra output"; }
done
echo "bad-value line example: $(cat "$err")"

# 5. UMMUSHIM_ENABLE=0 is pure pass-through too.
UMMUSHIM_ENABLE=0 UMMUSHIM_STATS=1 LD_PRELOAD="$shim" "$prog" >/dev/null \
	2>"$err" || fail "program fails with UMMUSHIM_ENABLE=0"
expect_stat "$err" real_regs "$app_regs" "ENABLE=0 passes through"

# 6. libibverbs loaded only by a plugin in a local scope (as under MPI):
# the interposers are still reached and find the real functions.
rm -f "$tmp"/dl.*.log
out=$(UMMUSHIM_STATS=1 UMMUSHIM_LOG_FILE="$tmp/dl.%p.log" LD_PRELOAD="$shim" \
	"$dlopen_prog" "$plugin") || fail "dlopen'ed plugin fails under the shim"
echo "$out"
cat "$tmp"/dl.*.log
n=$(echo "$out" | sed -n 's/.*app_regs=\([0-9]*\).*/\1/p')
expect_stat "$(ls "$tmp"/dl.*.log)" real_regs "$n" "plugin registrations seen once"
grep -q 'cannot find the real' "$tmp"/dl.*.log && fail "real functions not found"

# 7. No libibverbs in the process: calls fail with ENOSYS, one error line.
LD_PRELOAD="$shim" "$noverbs" 2>"$err" || { cat "$err"; fail "no-libibverbs case"; }
cat "$err"
[ "$(grep -c 'cannot find the real ibv_reg_mr@IBVERBS_1.1' "$err")" = 1 ] ||
	fail "expected one line about the missing ibv_reg_mr"

# 8. The preloaded shim exports the versioned interposers.
if command -v nm >/dev/null 2>&1; then
	for s in ibv_reg_mr@@IBVERBS_1.1 ibv_reg_mr_iova@@IBVERBS_1.7 \
		ibv_reg_mr_iova2@@IBVERBS_1.8 ibv_dereg_mr@@IBVERBS_1.1 \
		ibv_rereg_mr@@IBVERBS_1.1 ibv_dealloc_pd@@IBVERBS_1.1 \
		ibv_close_device@@IBVERBS_1.1; do
		nm -D --defined-only "$shim" | grep -q " T $s\$" ||
			fail "shim does not export $s"
	done
	if nm -D --defined-only "$shim" | grep -v ' A ' | grep -vq ' T ibv_'; then
		nm -D --defined-only "$shim" | grep -v ' A '
		fail "shim exports more than the interposers"
	fi
	if nm -D --defined-only "$shim" | grep -q dmabuf; then
		fail "ibv_reg_dmabuf_mr must not be interposed"
	fi
fi

# first_of FILE...: the first of the (globbed) files.
first_of() {
	echo "$1"
}

# 9. An application that bypasses the shim through its own dlopen handle
# (NCCL-style dlvsym of ibv_reg_mr/ibv_dereg_mr): libibverbs' internal call
# of ibv_reg_mr_iova2 must never be cached, so no freed MR is ever handed
# out; the same program's calls through the default (interposed) symbols
# are still cached.
# The double keeps deregistered MRs on purpose; once the program unloads it
# (its last check), a leak checker would count them as leaks.
bypass_asan="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
out=$(ASAN_OPTIONS=$bypass_asan "$bypass" "$fakelib") ||
	fail "bypass program fails without the shim"
echo "$out"
echo "$out" | grep -q 'pinned=no$' || fail "without the shim, dlclose unloads libibverbs"
rm -f "$tmp"/by.*.log
out=$(UMMUSHIM_MONITOR=uffd UMMUSHIM_STATS=1 UMMUSHIM_LOG_LEVEL=info \
	UMMUSHIM_LOG_FILE="$tmp/by.%p.log" LD_PRELOAD="$shim" \
	ASAN_OPTIONS=$bypass_asan "$bypass" "$fakelib") || fail "handle-based reg/dereg gets a freed MR under the shim"
echo "$out"
cat "$tmp"/by.*.log
bylog=$(first_of "$tmp"/by.*.log)
expect_stat "$bylog" monitor uffd "bypass: caching on (uffd)"
if [ "${E2E_GOT_READONLY:-0}" = 1 ]; then
	# Test build whose GOT patching always fails: what libibverbs can
	# reach (ibv_reg_mr_iova2) passes through, uncached, said once; the
	# other entry points (every 3rd cycle is ibv_reg_mr_iova2) still cache.
	echo "$out" | grep -q 'phase2=yes phase2_real_regs=7 pinned=yes$' ||
		fail "unpatched: ibv_reg_mr_iova2 must pass through, the rest cache"
	expect_stat "$bylog" hits 13 "unpatched: ibv_reg_mr/ibv_reg_mr_iova hit"
	[ "$(grep -c "info: cannot rebind libibverbs' internal calls (a GOT slot cannot be written); registrations through ibv_reg_mr_iova2 pass through uncached" "$bylog")" = 1 ] ||
		fail "unpatched: expected one info line"
else
	echo "$out" | grep -q 'phase2=yes phase2_real_regs=1 ' ||
		fail "interposed calls of the bypass program are not cached once"
	echo "$out" | grep -q 'pinned=yes$' ||
		fail "the shim does not pin libibverbs (RTLD_NODELETE)"
	expect_stat "$bylog" hits 19 "bypass: interposed calls hit"
	expect_stat "$bylog" misses 1 "bypass: one miss"
	grep -q 'cannot rebind' "$bylog" && fail "libibverbs' internal calls were not rebound"
fi

# 10. Cancellation, a fork without fork handlers, rereg of a shared MR,
# a fork before the first registration, a dereg from a signal handler (and
# from a handler that ends its thread: sigexit).
# One statistics line: the raw-fork child (case fork) exits with exit() and
# must not print the parent's (forkfirst's child uses _exit()).
for c in cancel fork rereg forkfirst sigdereg sigexit; do
	rm -f "$tmp"/c.*.log
	UMMUSHIM_MONITOR=uffd UMMUSHIM_STATS=1 UMMUSHIM_LOG_FILE="$tmp/c.%p.log" \
		LD_PRELOAD="$shim" "$cacheprog" "$c" || fail "case $c under the shim"
	cat "$tmp"/c.*.log
	expect_stat "$(first_of "$tmp"/c.*.log)" monitor uffd "$c: caching on (uffd)"
	[ "$(cat "$tmp"/c.*.log | grep -c ' stats: ')" = 1 ] ||
		fail "case $c: expected one statistics line"
done

# 11. Rights: a buffer registered with LOCAL_WRITE, then REMOTE_READ, is held
# once with both under UMMUSHIM_SUBRANGE=all; local and off keep them apart.
# Invalid rights fail as without the shim, whatever is cached.
for c in all:rights-all local:rights-exact off:rights-exact \
	all:rights-invalid local:rights-invalid off:rights-invalid; do
	check "UMMUSHIM_SUBRANGE=${c%%:*}: case ${c#*:}" \
		env UMMUSHIM_MONITOR=uffd UMMUSHIM_SUBRANGE="${c%%:*}" \
		LD_PRELOAD="$shim" "$cacheprog" "${c#*:}"
done

echo "# e2e: $((n - failed)) passed, $failed failed"
tap_done
