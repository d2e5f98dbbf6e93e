#!/bin/bash
# VM tests of libummushim.so over Soft-RoCE, one scenario for both monitors:
#   ummunot: the module loaded (scripts/vm/run-vm.sh --module ummunot.ko --rdma),
#   uffd:    the module NOT loaded (run-vm.sh --rdma); userfaultfd, also
#            picked by UMMUSHIM_MONITOR=auto.
# Usage: run-in-guest.sh MONITOR SHIM.so CONTROL_SHIM.so INTEGRITY REG_CYCLES \
#                        LIFECYCLE BYPASS UNMAP_RACE SLICE_KEYS
#
# Every program run here is an ordinary verbs program (not linked against
# the shim); the shim is preloaded with UMMUSHIM_MONITOR=MONITOR and its
# exit statistics (UMMUSHIM_STATS=1, one log file per process) are what the
# checks read.
set -u

MONITOR=$1
SHIM=$2
CONTROL=$3
INTEGRITY=$4
REG_CYCLES=$5
LIFECYCLE=$6
BYPASS=$7
UNMAP_RACE=$8
SLICE_KEYS=$9

DEV=rxe0
SERVER_IP=192.0.2.1
CYCLES=50
TMP=$(mktemp -d /tmp/shim-vm.XXXXXX)
# shellcheck source=SCRIPTDIR/../lib/shim-tap.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/shim-tap.sh"

# Run CMD with LIB preloaded on MONITOR, statistics on, one log per process.
# Usage: run_with LIB NAME [VAR=VALUE...] -- CMD...; log in $TMP/NAME.<pid>.log
run_with() {
	local lib=$1 name=$2 vars=()
	shift 2
	while [ "$1" != -- ]; do vars+=("$1"); shift; done
	shift
	env UMMUSHIM_STATS=1 UMMUSHIM_MONITOR="$MONITOR" \
		UMMUSHIM_LOG_FILE="$TMP/$name.%p.log" \
		"${vars[@]}" LD_PRELOAD="$lib" "$@"
}

shim_run() { # NAME [VAR=VALUE...] -- CMD...
	run_with "$SHIM" "$@"
}

echo "# kernel $(uname -r); monitor $MONITOR; $(ls -l /dev/ummunot 2>&1)"
case $MONITOR in
ummunot) check "/dev/ummunot exists" test -c /dev/ummunot ;;
uffd) check "/dev/ummunot is absent (module not loaded)" test ! -e /dev/ummunot ;;
*) not_ok "unknown monitor '$MONITOR'" ;;
esac
check "$DEV is present" sh -c "ibv_devices | grep -qw $DEV"

# slice_keys_modes CASE ALL_MODE NEVER ALL: rdma-slice-keys CASE must see
# "exact" without the shim and under local and off (NEVER says what), and
# ALL_MODE under UMMUSHIM_SUBRANGE=all (ALL says what).  Logs: CASE-MODE.
slice_keys_modes() {
	local mode

	check "slice-keys $1: exact without the shim" "$SLICE_KEYS" "$1" exact
	for mode in local off; do
		check "slice-keys $1 ($mode): $3" \
			shim_run "$1-$mode" UMMUSHIM_SUBRANGE=$mode -- "$SLICE_KEYS" "$1" exact
	done
	check "slice-keys $1 (all): $4" \
		shim_run "$1-all" UMMUSHIM_SUBRANGE=all -- "$SLICE_KEYS" "$1" "$2"
}

# ---- one real registration for N reg/dereg cycles -------------------------
section_cycles() {
	# The three routes verbs.h can compile ibv_reg_mr* into.
	syms=$(nm -D --undefined-only "$REG_CYCLES")
	for s in ibv_reg_mr@IBVERBS_1.1 ibv_reg_mr_iova2@IBVERBS_1.8 ibv_reg_mr_iova@IBVERBS_1.7; do
		check "reg-cycles references $s" grep -q " $s\$" <<<"$syms"
	done

	check "reg-cycles works without the shim" "$REG_CYCLES" const 5
	for how in const var iova; do
		if shim_run "cycles-$how" -- "$REG_CYCLES" "$how" "$CYCLES"; then
			ok "reg-cycles $how under the shim"
		else
			not_ok "reg-cycles $how under the shim"
		fi
		log=$(log_of "cycles-$how")
		echo "# $(stats_line "$log")"
		expect_stat "$log" monitor "$MONITOR" "$how: $MONITOR monitor in use"
		# Two buffers: the one cycled and the peer buffer.
		expect_stat "$log" real_regs 2 "$how: $CYCLES cycles, one real registration of the buffer"
		expect_stat "$log" hits $((CYCLES - 1)) "$how: every later cycle is a hit"
		expect_stat "$log" misses 2 "$how: misses"
		expect_stat "$log" real_deregs 2 "$how: idle MRs released at ibv_dealloc_pd"
	done

	# UMMUSHIM_MONITOR=auto picks the module where it is loaded, else userfaultfd.
	shim_run cycles-auto UMMUSHIM_MONITOR=auto UMMUSHIM_LOG_LEVEL=info -- \
		"$REG_CYCLES" var "$CYCLES" >/dev/null ||
		not_ok "reg-cycles under UMMUSHIM_MONITOR=auto: program failed"
	expect_stat "$(log_of cycles-auto)" monitor "$MONITOR" "auto: the $MONITOR monitor in use"
	expect_stat "$(log_of cycles-auto)" real_regs 2 "auto: one real registration of the cycled buffer"
	expect_stat "$(log_of cycles-auto)" hits $((CYCLES - 1)) "auto: every later cycle is a hit"
	check "auto: the info line names the $MONITOR monitor" \
		grep -q "caching registrations: monitor=$MONITOR" "$(log_of cycles-auto)"

	# Pass-through switches: each run registers CYCLES + 1 times for real.
	for v in UMMUSHIM_ENABLE=0 UMMUSHIM_MONITOR=none; do
		name=pass-${v%%=*}
		shim_run "$name" "$v" -- "$REG_CYCLES" var 10 >/dev/null ||
			not_ok "$v: program failed"
		expect_stat "$(log_of "$name")" real_regs 11 "$v passes through"
	done
	shim_run limit UMMUSHIM_MAX_ENTRIES=1 UMMUSHIM_LOG_LEVEL=debug -- \
		"$REG_CYCLES" var 10 >/dev/null || not_ok "UMMUSHIM_MAX_ENTRIES=1: program failed"
	expect_stat "$(log_of limit)" evictions 10 "UMMUSHIM_MAX_ENTRIES=1 evicts every idle MR"
	# Debug logging names every registration event.
	shim_run debug UMMUSHIM_LOG_LEVEL=debug -- "$REG_CYCLES" var 3 >/dev/null ||
		not_ok "UMMUSHIM_LOG_LEVEL=debug: program failed"
	for w in "miss mr=" "hit mr=" "dereg (kept) mr="; do
		check "debug log: '$w'" grep -q "debug: $w" "$(log_of debug)"
	done
	check "debug log: 'evict mr='" grep -q "debug: evict mr=" "$(log_of limit)"
}

# ---- data integrity ----------------------------------------------------------
section_integrity() {
	check "integrity without any shim" "$INTEGRITY" --expect fresh --iterations 3
	echo "# integrity under libummushim.so (must always see the new data):"
	if shim_run integrity -- "$INTEGRITY" --expect fresh --iterations 20; then
		ok "integrity under the shim: new data every time"
	else
		not_ok "integrity under the shim: new data every time"
	fi
	log=$(log_of integrity)
	echo "# $(stats_line "$log")"
	inv=$(stat_of "$log" invalidations)
	check "integrity: the shim saw invalidations ($inv)" test "${inv:-0}" -gt 0
	hits=$(stat_of "$log" hits)
	check "integrity: the shim served hits ($hits)" test "${hits:-0}" -gt 0

	echo "# control run: a cache that ignores invalidations must deliver stale data:"
	if run_with "$CONTROL" control -- "$INTEGRITY" --expect stale --iterations 5; then
		ok "control run sees stale data with every method (the test can fail)"
	else
		not_ok "control run sees stale data with every method (the test can fail)"
	fi
	echo "# $(stats_line "$(log_of control)")"
}

# ---- containment hits (slices of a cached region) -----------------------------
section_containment() {
	# Every method with the transfers on a slice of the buffer registered just
	# before: with UMMUSHIM_SUBRANGE=all (the MRs allow remote writes) each
	# slice before the replacement is a containment hit, the one after must
	# not be; with the default (local) they are exact registrations.
	for mode in all local; do
		name=integrity-slices-$mode
		if shim_run "$name" UMMUSHIM_SUBRANGE=$mode -- "$INTEGRITY" --slices --expect fresh --iterations 10; then
			ok "integrity --slices (UMMUSHIM_SUBRANGE=$mode): new data every time"
		else
			not_ok "integrity --slices (UMMUSHIM_SUBRANGE=$mode): new data every time"
		fi
		echo "# $(stats_line "$(log_of "$name")")"
	done
	hits=$(stat_of "$(log_of integrity-slices-all)" hits)
	check "integrity --slices, all: containment hits served ($hits)" test "${hits:-0}" -ge 140
	if env UMMUSHIM_STATS=1 UMMUSHIM_SUBRANGE=all UMMUSHIM_LOG_FILE="$TMP/control-slices.%p.log" \
		LD_PRELOAD="$CONTROL" "$INTEGRITY" --slices --expect stale --iterations 5; then
		ok "control run with slices sees stale data with every method (the test can fail)"
	else
		not_ok "control run with slices sees stale data with every method (the test can fail)"
	fi

	# A slice's rkey reaches its region (UMMUSHIM_SUBRANGE=all), never past it.
	slice_keys_modes reach region "a remote-access slice reaches only itself" \
		"the region, never the page past it"
	expect_stat "$(log_of reach-all)" hits 1 "slice-keys reach (all): the slice was a containment hit"
	# Rights: under all a REMOTE_READ registration of a page cached with
	# REMOTE_WRITE gets an rkey a peer may write through; local/off never.
	slice_keys_modes rights widened "a REMOTE_READ rkey never writes" \
		"one registration with both flag sets' rights"
	expect_stat "$(log_of rights-all)" real_regs 3 "slice-keys rights (all): 3 real registrations (source, LOCAL_WRITE|REMOTE_WRITE, the union)"
	# Learnt rights: under all a PD that was asked for REMOTE_WRITE on one
	# page registers another page's REMOTE_READ miss with it too.
	slice_keys_modes learnt widened "another page's REMOTE_READ rkey never writes" \
		"a right learnt on one page reaches another page of the PD"
	expect_stat "$(log_of learnt-all)" real_regs 3 "slice-keys learnt (all): 3 real registrations (source, the REMOTE_WRITE page, the other page once, with the learnt right)"
	# One page of one slice replaced: the region is gone for every slice.
	if shim_run keys-regions -- "$SLICE_KEYS" regions; then
		ok "slice-keys regions: the replaced page's slice sends the new data"
	else
		not_ok "slice-keys regions: the replaced page's slice sends the new data"
	fi
	log=$(log_of keys-regions)
	echo "# $(stats_line "$log")"
	expect_stat "$log" hits 2 "regions: both slices hit before the replacement"
	expect_stat "$log" misses 4 "regions: after it, the untouched page's slice misses too"
}

# ---- lifecycle -------------------------------------------------------------------
section_lifecycle() {
	for c in pd-close fork busy-stale; do
		if shim_run "life-$c" UMMUSHIM_LOG_LEVEL=debug -- "$LIFECYCLE" "$c"; then
			ok "lifecycle $c"
		else
			not_ok "lifecycle $c"
		fi
		echo "# $(stats_line "$(log_of "life-$c")")"
	done
	check "debug log: 'invalidate idle mr='" grep -q "debug: invalidate idle mr=" "$(log_of life-pd-close)"
	stale_warning='MR .*: (the application unmapped memory it still had registered|the kernel reported an invalidation over an in-use MR)'
	w=$(grep -cE "$stale_warning" "$(log_of life-busy-stale)")
	check "busy-stale: one warning naming the MR ($w)" test "$w" = 1
	grep -E "$stale_warning" "$(log_of life-busy-stale)" | sed 's/^/# /'
	expect_stat "$(log_of life-busy-stale)" stale 1 "busy-stale: counted"
	# The fork child passes through and prints no statistics of its own (it
	# would write them to the parent's log file, inherited).
	check "fork: only the parent reports" \
		test "$(logs_of life-fork):$(grep -c ' stats: ' "$(log_of life-fork)")" = 1:1

	if shim_run life-threads -- timeout 600 "$LIFECYCLE" threads 150; then
		ok "lifecycle threads (reg/dereg while another thread replaces memory)"
	else
		not_ok "lifecycle threads (reg/dereg while another thread replaces memory)"
	fi
	log=$(log_of life-threads)
	echo "# $(stats_line "$log")"
	inv=$(stat_of "$log" invalidations)
	check "threads: invalidations seen ($inv)" test "${inv:-0}" -gt 0
}

# ---- handle-based registration (NCCL-style dlopen + dlvsym) --------------------
section_bypass() {
	# libibverbs' own ibv_reg_mr calls ibv_reg_mr_iova2 through its GOT; the
	# shim rebinds that slot, so registrations through the application's own
	# handle never enter the cache (a cached one would be freed behind the
	# cache by the handle-based ibv_dereg_mr and handed out again).
	check "rdma-bypass works without the shim" "$BYPASS" 4
	if shim_run bypass -- "$BYPASS" 30; then
		ok "rdma-bypass under the shim: 30 handle-based cycles with RDMA writes"
	else
		not_ok "rdma-bypass under the shim: 30 handle-based cycles with RDMA writes"
	fi
	log=$(log_of bypass)
	echo "# $(stats_line "$log")"
	expect_stat "$log" hits 0 "bypass: handle-based registrations never come from the cache"
	expect_stat "$log" misses 1 "bypass: only the linked registration (peer buffer) is cached"
}

# ---- unmap in one thread, remap + register in another -------------------------
section_unmap_race() {
	# /dev/ummunot moves its counter under mmap_lock, before the old pages are
	# freed; userfaultfd queues its UNMAP event only after munmap() released
	# the range, and the probe before each hit must catch that (see
	# preload/monitor_uffd.c).  Either way: no stale MR, with every CPU busy too.
	# 1,000 rounds with every CPU busy (--hog), 200 on an idle guest.
	for hog in "" --hog; do
		name=unmap-race$hog
		iters=1000
		[ -n "$hog" ] || iters=200
		if shim_run "$name" -- "$UNMAP_RACE" "$iters" --expect-zero $hog >"$TMP/$name.out"; then
			ok "unmap-race ($MONITOR$hog): no stale MR in $iters iterations"
		else
			not_ok "unmap-race ($MONITOR$hog): stale MRs or failure"
		fi
		echo "# $MONITOR $(cat "$TMP/$name.out")"
		echo "# $(stats_line "$(log_of "$name")")"
	done
	if [ "$MONITOR" = uffd ]; then
		check "uffd: no warning that the hit-path probe is missing" \
			sh -c "! grep -q 'cannot probe' '$(log_of unmap-race)'"
	fi
}

# ---- unmodified tools ---------------------------------------------------------
section_tools() {
	run_pair() { # NAME SERVER_CMD... -- CLIENT_ARGS...
		local name=$1 server=() client_extra=() spid rc_s rc_c
		shift
		while [ "$1" != -- ]; do server+=("$1"); shift; done
		shift
		client_extra=("$@")
		shim_run "$name-server" -- timeout 120 "${server[@]}" >"$TMP/$name-server.out" 2>&1 &
		spid=$!
		sleep 3
		shim_run "$name-client" -- timeout 120 "${server[@]}" "${client_extra[@]}" \
			>"$TMP/$name-client.out" 2>&1
		rc_c=$?
		wait "$spid"
		rc_s=$?
		tail -n 3 "$TMP/$name-client.out" | sed 's/^/# /'
		if [ "$rc_s" = 0 ] && [ "$rc_c" = 0 ]; then
			ok "$name runs unchanged under the shim"
		else
			cat "$TMP/$name-server.out" "$TMP/$name-client.out"
			not_ok "$name runs unchanged under the shim (server $rc_s, client $rc_c)"
		fi
		for side in server client; do
			local l m
			l=$(log_of "$name-$side")
			echo "# $name $side: $(stats_line "$l")"
			m=$(stat_of "$l" misses)
			check "$name $side registered through the cache (misses=$m)" test "${m:-0}" -ge 1
		done
	}

	run_pair rc_pingpong ibv_rc_pingpong -d "$DEV" -g 1 -n 200 -- "$SERVER_IP"
	run_pair ib_write_bw ib_write_bw -d "$DEV" -x 1 -s 65536 -n 200 -F -- "$SERVER_IP"
}

# ---- bad environment values -------------------------------------------------------
section_bad_env() {
	for bad in UMMUSHIM_MAX_BYTES=12Q UMMUSHIM_LOG_LEVEL=loud UMMUSHIM_MONITOR=magic \
		UMMUSHIM_ENABLE=2 UMMUSHIM_MAX_ENTRIES=0 UMMUSHIM_STATS=yes; do
		err=$TMP/bad.err
		if env "$bad" LD_PRELOAD="$SHIM" "$REG_CYCLES" var 3 >/dev/null 2>"$err"; then
			lines=$(wc -l <"$err")
			if [ "$lines" = 1 ] && grep -q "${bad%%=*}='${bad#*=}' is invalid (accepted: " "$err"; then
				ok "$bad: app works, one clear line"
			else
				cat "$err"
				not_ok "$bad: expected one clear line, got $lines"
			fi
		else
			not_ok "$bad: the application failed"
		fi
	done
	echo "# example: $(cat "$TMP/bad.err")"
}

# SHIM_VM_SECTIONS (space-separated names from ALL_SECTIONS) runs only
# those, in that order: the debug kernel's row runs the integrity part.
ALL_SECTIONS="cycles integrity containment lifecycle bypass unmap_race tools bad_env"
for s in ${SHIM_VM_SECTIONS:-$ALL_SECTIONS}; do
	case " $ALL_SECTIONS " in
	*" $s "*) echo "# ---- section $s"; "section_$s" ;;
	*) not_ok "SHIM_VM_SECTIONS: no section '$s' (sections: $ALL_SECTIONS)" ;;
	esac
done

echo "# shim-vm ($MONITOR): $((n - failed)) passed, $failed failed"
tap_done
