# shellcheck shell=sh
# The shim's test scripts' one helper for results (TAP) and for reading the
# shim's exit statistics line ("ummushim[host:pid] stats: monitor=... hits=N
# ..."), sourced by the VM scenario (test/rdma/run-in-guest.sh), the host
# end-to-end test (test/preload/e2e.sh) and the other VM scripts.
# POSIX sh.  The sourcing script sets TMP (where each run's logs go:
# $TMP/NAME.<pid>.log) and ends with tap_done.
n=0
failed=0

ok() {
	n=$((n + 1))
	echo "ok $n - $*"
}

not_ok() {
	n=$((n + 1))
	failed=$((failed + 1))
	echo "not ok $n - $*"
}

check() { # DESCRIPTION COMMAND...
	_what=$1
	shift
	if "$@"; then ok "$_what"; else not_ok "$_what"; fi
}

# The plan line, and the script's status: 0 when nothing failed.
tap_done() {
	echo "1..$n"
	[ "$failed" -eq 0 ]
}

# stats_line FILE: the shim's first statistics line in FILE.
stats_line() {
	grep -m 1 ' stats: ' "$1"
}

# stat_of FILE KEY: KEY's value on the first statistics line of FILE.
stat_of() {
	stats_line "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# stat_sum KEY FILE...: KEY summed over the statistics lines of the FILEs
# (every process of a run, e.g. all MPI ranks); 0 when there is none.
stat_sum() {
	_key=$1
	shift
	cat "$@" 2>/dev/null | grep ' stats: ' | tr ' ' '\n' |
		sed -n "s/^$_key=//p" | awk '{ s += $1 } END { print s + 0 }'
}

expect_stat() { # LOG KEY VALUE WHAT
	_v=$(stat_of "$1" "$2")
	if [ "$_v" = "$3" ]; then
		ok "$4 ($2=$_v)"
	else
		not_ok "$4 ($2=$_v, expected $3)"
	fi
}

# Scripts written before stat_of: the same reader under its old name.
stat() {
	stat_of "$@"
}

# The one log file of the single process run under NAME.
log_of() {
	for _f in "$TMP/$1".*.log; do
		[ -e "$_f" ] && printf '%s\n' "$_f"
		return
	done
}

# How many processes run under NAME wrote a log.
logs_of() {
	_count=0
	for _f in "$TMP/$1".*.log; do
		[ -e "$_f" ] && _count=$((_count + 1))
	done
	echo "$_count"
}
