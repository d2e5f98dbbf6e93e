# shellcheck shell=bash
# TAP helpers shared by the shim's VM test scripts (test/rdma, test/uffd).
# The sourcing script sets TMP (where each run's logs go: $TMP/NAME.<pid>.log)
# and ends with: echo "1..$n"; [ "$failed" -eq 0 ]
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
	local what=$1
	shift
	if "$@"; then ok "$what"; else not_ok "$what"; fi
}

# stat FILE KEY: KEY's value on the shim's stats line of FILE.
stat() {
	grep ' stats: ' "$1" | head -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# The one log file of the single process run under NAME.
log_of() {
	local f
	for f in "$TMP/$1".*.log; do
		[ -e "$f" ] && printf '%s\n' "$f"
		return
	done
}

# How many processes run under NAME wrote a log.
logs_of() {
	local f count=0
	for f in "$TMP/$1".*.log; do
		[ -e "$f" ] && count=$((count + 1))
	done
	echo "$count"
}

expect_stat() { # LOG KEY VALUE WHAT
	local v
	v=$(stat "$1" "$2")
	if [ "$v" = "$3" ]; then
		ok "$4 ($2=$v)"
	else
		not_ok "$4 ($2=$v, expected $3)"
	fi
}
