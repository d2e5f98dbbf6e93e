#!/bin/bash
# The main job: one command on a fresh Debian 12 machine (as root) that
# installs what it needs, builds the module, the shim and the benchmarks,
# boots the test VM with ummunot.ko loaded and Soft-RoCE up, and runs an
# unmodified 2-rank MPI benchmark with Open MPI + UCX over RDMA:
#   (a) UCX's registration cache off (UCX_IB_REG_METHODS=direct), no shim
#   (b) the same under LD_PRELOAD=libummushim.so
#   (c) UCX's own registration cache on
# plus a verbs program that registers around every RDMA write, with and
# without the shim.  Prints the tables and writes JSON + a PNG plot.
#
# Usage: scripts/main-job.sh [--build-dir DIR] [--results DIR] [--no-install]
#                            [--ucx-env "K=V ..."] [--mpibench-args "..."]
#   --build-dir DIR   meson build directory (default: build)
#   --results DIR     where tables, JSON and PNG go (default: BUILD/results)
#   --no-install      do not apt-get install missing packages
#   --ucx-env         UCX settings applied alike to (a), (b) and (c)
#                     (default "UCX_RNDV_THRESH=8K UCX_IB_FORK_INIT=n", see
#                     below; "" for UCX's defaults)
#   --mpibench-args   extra mpibench options (e.g. "--max 4M")
#   --rounds N        run a b c N times in turn, best round per size (default 2)
#
# Why UCX_RNDV_THRESH=8K: UCX sizes its eager/rendezvous switch from the
# link's modelled speed; on Soft-RoCE that puts it at 256 KiB, so smaller
# messages are copied through pre-registered buffers and never register.
# On real hardware the modelled link is ~100 times faster and the switch to
# rendezvous (zero copy: one registration per message and side) comes much
# earlier; 8K puts the 16 KiB..16 MiB messages on that path here too.
#
# Why UCX_IB_FORK_INIT=n: by default UCX calls ibv_fork_init(), and then
# libibverbs wraps every registration in madvise(MADV_DONTFORK) and every
# deregistration in madvise(MADV_DOFORK).  Each such madvise on part of a
# mapping splits it, and Linux 6.1 announces every split at an address that
# is not 2 MiB aligned as an invalidation (MMU_NOTIFY_CLEAR) of the whole
# 2 MiB around it (split_huge_pmd_address() calls __split_huge_pmd() even
# when no huge page is mapped there).  A neighbouring cached buffer is then
# dropped for nothing: measured, (b) fell back to one registration per
# message at 4 and 16 MiB.  Kernels since 5.9 copy pinned pages eagerly at
# fork, so the parent's registrations stay intact without MADV_DONTFORK.
#
# Exit status: 0 when every run completed and every data check passed.
set -eu -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=bench-common/jobs.sh
. "$ROOT/scripts/bench-common/jobs.sh"
INSTALL=1
MPIBENCH_ARGS=

# The project's package list lives in .ci/run; these are the ones this job
# needs should that list be missing.
FALLBACK_PACKAGES=(build-essential meson ninja-build pkg-config python3
	linux-image-amd64 linux-headers-amd64 qemu-system-x86 busybox-static
	kmod iproute2 cpio xz-utils rdma-core ibverbs-providers libibverbs-dev
	ibverbs-utils openmpi-bin libopenmpi-dev ucx-utils gnuplot-nox)

parse_args() {
	while [ $# -gt 0 ]; do
		case $1 in
		--no-install) INSTALL=0; shift ;;
		--mpibench-args) MPIBENCH_ARGS=$2; shift 2 ;;
		*) common_option "$@" || die "unknown argument: $1 (see --help)"; shift 2 ;;
		esac
	done
	common_options_done results
}

# The PACKAGES=( ... ) block of .ci/run, without comments.
project_packages() {
	local ci=$ROOT/.ci/run
	[ -f "$ci" ] || return 1
	sed -n '/^PACKAGES=(/,/^)/p' "$ci" | sed '1d; $d; s/#.*//' | tr -s ' \t' '\n' | grep .
}

is_installed() {
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

install_packages() {
	local pkgs=() missing=() p
	mapfile -t pkgs < <(project_packages || printf '%s\n' "${FALLBACK_PACKAGES[@]}")
	for p in "${pkgs[@]}"; do
		is_installed "$p" || missing+=("$p")
	done
	[ ${#missing[@]} -gt 0 ] || { say "all ${#pkgs[@]} packages present"; return; }
	[ "$INSTALL" = 1 ] || die "missing packages (and --no-install): ${missing[*]}"
	[ "$(id -u)" = 0 ] || die "missing packages, run as root to install: ${missing[*]}"
	say "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
}

summarize() {
	python3 "$ROOT/scripts/bench-mpi/summarize.py" main "$RESULTS/raw" "$RESULTS" |
		tee "$RESULTS/main.txt"
	plot_mpi
	say "results: $RESULTS/main.txt, main.json, mpi-bandwidth.png (raw outputs in $RESULTS/raw)"
}

main() {
	local rc=0
	parse_args "$@"
	install_packages
	build kernel/ummunot.ko preload/libummushim.so \
		scripts/bench-mpi/mpibench scripts/bench-mpi/libregcount-real.so \
		scripts/bench-mpi/libregcount-app.so scripts/bench-reg/perop
	say "booting the VM (module + Soft-RoCE); MPI runs take a few minutes under emulation"
	run_guest_main "$RESULTS/raw" 1200 info,mpi,perop \
		--env "MPIBENCH_ARGS=$MPIBENCH_ARGS" || rc=$?
	compgen -G "$RESULTS/raw/mpi-*-r1.json" >/dev/null ||
		die "the VM run produced no MPI results (status $rc)"
	summarize
	[ "$rc" -eq 0 ] || say "FAILED: the VM job exited with status $rc (see above)"
	exit "$rc"
}

main "$@"
