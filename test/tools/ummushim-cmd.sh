#!/bin/bash
# Host tests of the `ummushim` command (the build tree's copy): usage errors,
# `run` (environment, exit status, Open MPI forwarding in both directions
# with the real mpirun), `stats` (per host and total, unknown fields summed,
# --json) and `check` on this host, which never has the module loaded.
# Usage: ummushim-cmd.sh UMMUSHIM SHIM.so E2E_PROG
set -u

UMMUSHIM=$1
SHIM=$(realpath "$2")
E2E_PROG=$(realpath "$3")
TMP=$(mktemp -d /tmp/ummushim-cmd.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
# shellcheck source=SCRIPTDIR/../lib/shim-tap.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/shim-tap.sh"
# meson points LD_LIBRARY_PATH at the libibverbs test double; the probe
# needs the real one (the test programs find the double through their rpath).
unset LD_LIBRARY_PATH UMMUSHIM_ENABLE UMMUSHIM_MAX_ENTRIES UMMUSHIM_MAX_BYTES UMMUSHIM_LOG_LEVEL \
	UMMUSHIM_LOG_FILE UMMUSHIM_STATS UMMUSHIM_MONITOR LD_PRELOAD
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(mpirun --oversubscribe --mca btl 'self,vader' -np 2)

# expect_usage DESCRIPTION ARGS...: exit 2, a usage line on stderr, nothing on stdout.
expect_usage() {
	local what=$1 rc=0
	shift
	"$UMMUSHIM" "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
	if [ "$rc" = 2 ] && grep -q '^usage: ' "$TMP/err" && [ ! -s "$TMP/out" ]; then
		ok "usage error: $what"
	else
		not_ok "usage error: $what (exit $rc, stderr: $(head -c 300 "$TMP/err"))"
	fi
}

# ---- usage errors -------------------------------------------------------------
expect_usage "no command"
expect_usage "unknown command" frobnicate
expect_usage "unknown option" check --bogus
expect_usage "run without a command" run --stats --
expect_usage "run with an invalid size" run --max-bytes 12Q -- true
expect_usage "run with an unknown monitor" run --monitor magic -- true
expect_usage "run with --log and --log-file" run --log "$TMP/l" --log-file x -- true
expect_usage "stats without files" stats
check "--version names the version" sh -c "'$UMMUSHIM' --version | grep -Eq '^ummushim [0-9]'"

# ---- run ----------------------------------------------------------------------
"$UMMUSHIM" run --stats --log "$TMP/logs" --max-entries 7 --max-bytes 64M \
	--monitor ummunot --log-level info -- env >"$TMP/env"
check "run preloads the shim" grep -qx "LD_PRELOAD=$SHIM" "$TMP/env"
check "run --stats sets UMMUSHIM_STATS=1" grep -qx "UMMUSHIM_STATS=1" "$TMP/env"
check "run --log DIR sets one file per process" \
	grep -qx "UMMUSHIM_LOG_FILE=$TMP/logs/ummushim.%h.%p.log" "$TMP/env"
check "run --log creates DIR" test -d "$TMP/logs"
for kv in UMMUSHIM_MAX_ENTRIES=7 UMMUSHIM_MAX_BYTES=64M UMMUSHIM_MONITOR=ummunot \
	UMMUSHIM_LOG_LEVEL=info; do
	check "run sets $kv" grep -qx "$kv" "$TMP/env"
done
LD_PRELOAD="/x/libother.so $SHIM" "$UMMUSHIM" run -- env >"$TMP/env2"
check "run puts the shim first, once, and keeps other preloads" \
	grep -qx "LD_PRELOAD=$SHIM /x/libother.so" "$TMP/env2"
rc=0
"$UMMUSHIM" run -- sh -c 'exit 7' || rc=$?
check "run passes the command's exit status through (7, got $rc)" test "$rc" = 7
rc=0
"$UMMUSHIM" run -- /nonexistent/program 2>"$TMP/err" || rc=$?
check "run of a missing program exits 127 with a message" \
	sh -c "[ $rc = 127 ] && grep -q 'cannot run' '$TMP/err'"
# A copy of the command whose shim path names nothing.
sed 's|^SHIM = .*|SHIM = "/nonexistent/libummushim.so"|' "$UMMUSHIM" >"$TMP/ummushim-noshim"
rc=0
python3 "$TMP/ummushim-noshim" run -- true 2>"$TMP/err" || rc=$?
check "run without the shim installed exits 1 naming the missing file (got $rc)" \
	sh -c "[ $rc = 1 ] && grep -q '/nonexistent/libummushim.so is missing' '$TMP/err'"

# shellcheck disable=SC2016 # the ranks expand these
RANK_ENV='echo "rank LD_PRELOAD=$LD_PRELOAD UMMUSHIM_STATS=$UMMUSHIM_STATS"'
# Open MPI, launcher outside: the ranks get the settings through -x, the
# launcher itself runs without the shim.
"$UMMUSHIM" run --stats -- "${MPIRUN[@]}" sh -c "$RANK_ENV" >"$TMP/mpi1" 2>&1
check "ummushim run -- mpirun: both ranks preload the shim with the settings" \
	test "$(grep -cx "rank LD_PRELOAD=$SHIM UMMUSHIM_STATS=1" "$TMP/mpi1")" = 2
# Launcher inside: every rank runs `ummushim run`.
"${MPIRUN[@]}" "$UMMUSHIM" run --stats -- sh -c "$RANK_ENV" >"$TMP/mpi2" 2>&1
check "mpirun ummushim run --: both ranks preload the shim with the settings" \
	test "$(grep -cx "rank LD_PRELOAD=$SHIM UMMUSHIM_STATS=1" "$TMP/mpi2")" = 2

# A real run: two ranks of a verbs program (against the libibverbs test
# double) write their statistics to one directory; `stats` sums them.
"$UMMUSHIM" run --stats --log "$TMP/mpilogs" --monitor none -- "${MPIRUN[@]}" \
	"$E2E_PROG" >"$TMP/mpi3" 2>&1
check "two ranks under ummushim run -- mpirun wrote two logs" \
	test "$(find "$TMP/mpilogs" -name 'ummushim.*.log' | wc -l)" = 2
regs=$(sed -n 's/.*app_regs=\([0-9]*\).*/\1/p' "$TMP/mpi3" | head -n 1)
"$UMMUSHIM" stats --json "$TMP/mpilogs" >"$TMP/mpi.json"
check "stats of the two ranks: 2 processes, 2 x $regs passed-through registrations" \
	python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['total']; \
assert t['processes'] == 2 and t['fields']['passthrough'] == 2 * int(sys.argv[2]) > 0, t" \
	"$TMP/mpi.json" "${regs:-0}"

# ---- stats --------------------------------------------------------------------
cat >"$TMP/a.log" <<'EOF'
ummushim[n1:100] stats: monitor=ummunot hits=90 misses=10 passthrough=0 real_regs=10 real_deregs=10 evictions=0 invalidations=3 stale=0 pinned_bytes=0 peak_pinned_bytes=4096 reg_ns=2000000 dereg_ns=1000000
some application output
[1,1]<stderr>:ummushim[n1:101] stats: monitor=ummunot hits=40 misses=10 passthrough=0 real_regs=10 real_deregs=10 evictions=1 invalidations=1 stale=2 pinned_bytes=0 peak_pinned_bytes=8192 reg_ns=3000000 dereg_ns=1000000
EOF
# A newer shim's line: stale split in two, a counter this tool never heard of.
cat >"$TMP/b.log" <<'EOF'
ummushim[n2:7] stats: monitor=uffd hits=20 misses=30 passthrough=50 real_regs=80 real_deregs=80 evictions=0 invalidations=5 stale_unmapped=1 stale_invalidated=2 containment_hits=6 pinned_bytes=0 peak_pinned_bytes=65536 reg_ns=5000000 dereg_ns=0
EOF
cp "$TMP/a.log" "$TMP/a-again.log"	# the same lines twice count once
"$UMMUSHIM" stats "$TMP/a.log" "$TMP/b.log" "$TMP/a-again.log" >"$TMP/table"
sed 's/^/# /' "$TMP/table"
# host procs hits misses hit% real_regs reg_ms dereg_ms stale invals peak
check "stats table: host n1" grep -Eq '^n1 +2 +130 +20 +86\.7 +20 +5\.0 +2\.0 +2 +4 +8\.0 KiB$' "$TMP/table"
check "stats table: host n2 (stale = stale_unmapped + stale_invalidated)" \
	grep -Eq '^n2 +1 +20 +30 +20\.0 +80 +5\.0 +0\.0 +3 +5 +64\.0 KiB$' "$TMP/table"
check "stats table: total" grep -Eq '^total +3 +150 +50 +60\.0 +100 +10\.0 +2\.0 +5 +9 +64\.0 KiB$' "$TMP/table"
check "stats lists the counters not in the table, unknown ones summed" \
	grep -q 'containment_hits=6 .*passthrough=50' "$TMP/table"
check "stats counts the monitors" grep -qx 'monitor: ummunot (2) uffd (1)' "$TMP/table"
"$UMMUSHIM" stats --json - <"$TMP/b.log" >"$TMP/b.json"
check "stats --json from stdin" python3 -c "import json,sys; d=json.load(open(sys.argv[1])); \
t=d['total']; assert t['fields']['stale']==3 and t['fields']['containment_hits']==6 \
and abs(t['hit_rate']-0.2)<1e-9 and d['hosts']['n2']['processes']==1, d" "$TMP/b.json"
rc=0
echo "no statistics here" >"$TMP/none.log"
"$UMMUSHIM" stats "$TMP/none.log" >/dev/null 2>"$TMP/err" || rc=$?
check "stats without any stats line: exit 1 and says so" \
	sh -c "[ $rc = 1 ] && grep -q 'no .* stats:. line' '$TMP/err'"
rc=0
"$UMMUSHIM" stats "$TMP/a.log" "$TMP/missing.log" >"$TMP/out" 2>"$TMP/err" || rc=$?
check "stats with an unreadable file: exit 1, names it, still prints the rest" \
	sh -c "[ $rc = 1 ] && grep -q 'missing.log' '$TMP/err' && grep -q '^total ' '$TMP/out'"

# A reader that leaves early (| head) ends the command quietly: no traceback.
for host in $(seq 1 4000); do
	echo "ummushim[host$host:1] stats: monitor=ummunot hits=1 misses=1 real_regs=1 stale=0"
done >"$TMP/many"
"$UMMUSHIM" stats "$TMP/many" 2>"$TMP/err" | head -n 1 >/dev/null
check "stats into a closed pipe prints no traceback" test ! -s "$TMP/err"

# ---- check, on a host without the module ----------------------------------------
check "this host has no ummunot module loaded (precondition)" test ! -e /sys/module/ummunot
rc=0
"$UMMUSHIM" check >"$TMP/check" 2>&1 || rc=$?
sed 's/^/# /' "$TMP/check"
check "check without the module exits 1 (got $rc)" test "$rc" = 1
check "check names the missing module and the fix" \
	grep -q '^problem: module: ummunot is not loaded; fix: sudo modprobe ummunot' "$TMP/check"
check "check reports what auto would pick" grep -Eq '^(ok|info|FAIL) +monitor: ' "$TMP/check"
check "check reports userfaultfd, memlock, THP, libibverbs, interposition" \
	sh -c "for w in userfaultfd memlock THP libibverbs interposition; do \
grep -Eq \"^[a-zA-Z]+ +\$w: \" '$TMP/check' || exit 1; done"
check "check: the shim binds ibv_reg_mr under the probe" \
	grep -Eq "^ok +interposition: .*$SHIM" "$TMP/check"
UMMUSHIM_MAX_BYTES=12Q "$UMMUSHIM" check --quiet >"$TMP/checkq" 2>&1
check "check --quiet prints only problem lines" sh -c "! grep -qv '^problem: ' '$TMP/checkq'"
check "check flags an invalid setting in the environment" \
	grep -q "^problem: settings: UMMUSHIM_MAX_BYTES='12Q' is invalid" "$TMP/checkq"

echo "1..$n"
[ "$failed" -eq 0 ]
