# shellcheck shell=bash
# What scripts/main-job.sh and scripts/bench-all.sh share: their common
# options, the build, the VM run of scripts/bench-mpi/guest-main.sh and the
# MPI bandwidth plot.  Sourced by them after they set ROOT (the source root)
# and `set -eu -o pipefail`.

# Settings of the common options; the caller reads them.
# shellcheck disable=SC2034
{
	BUILD=$ROOT/build
	RESULTS=
	ROUNDS=2
	# scripts/main-job.sh's header says why these two.
	UCX_ENV="UCX_RNDV_THRESH=8K UCX_IB_FORK_INIT=n"
}

say() {
	echo "$(basename "$0" .sh): $*" >&2
}

die() {
	say "$*"
	exit 1
}

# One of the common options at "$@" (each takes one value, so the caller
# shifts 2); returns 1 for any other argument.  --help prints the caller's
# header comment (its lines up to `set -eu`).
common_option() {
	case $1 in
	--build-dir) BUILD=$(realpath -m "$2") ;;
	--results) RESULTS=$(realpath -m "$2") ;;
	--rounds) ROUNDS=$2 ;;
	--ucx-env) UCX_ENV=$2 ;;
	-h | --help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) return 1 ;;
	esac
}

# After the options: RESULTS defaults to BUILD/$1; ROUNDS must be a count.
common_options_done() {
	RESULTS=${RESULTS:-$BUILD/$1}
	[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds wants a positive number"
}

# Configure BUILD for the VM's kernel (or update its kernel_dir) and build
# it; then every PRODUCT (a path in BUILD) must exist.
build() { # [PRODUCT...]
	local kver kdir f
	kver=$("$ROOT/scripts/vm/kernel-version.sh")
	kdir=/usr/src/linux-headers-$kver
	[ -f "$kdir/Makefile" ] || die "no kernel headers at $kdir (install linux-headers-amd64)"
	if [ -f "$BUILD/build.ninja" ]; then
		meson configure "$BUILD" -Dkernel_dir="$kdir" >/dev/null
	else
		meson setup "$BUILD" "$ROOT" -Dkernel_dir="$kdir"
	fi
	ninja -C "$BUILD" -j2
	for f in "$@"; do
		[ -e "$BUILD/$f" ] || die "the build did not produce $BUILD/$f"
	done
}

# Boot the VM (ummunot.ko loaded, Soft-RoCE up) and run guest-main.sh's
# PARTS in it with ROUNDS and UCX_ENV; its raw outputs land in RAW, which
# starts empty.  Extra arguments are run-vm.sh options (--env K=V).
run_guest_main() { # RAW TIMEOUT_S PARTS [run-vm.sh option...]
	local raw=$1 timeout=$2 parts=$3 rc=0
	shift 3
	rm -rf "$raw"
	mkdir -p "$raw"
	# The VM is emulated: a busy host slows it; say how busy it was.
	cut -d' ' -f1-3 /proc/loadavg >"$raw/host-load.txt"
	# The VM's cwd must be visible in the guest: the source root is.
	(cd "$ROOT" && scripts/vm/run-vm.sh --module "$BUILD/kernel/ummunot.ko" --rdma \
		--timeout "$timeout" --out "$raw" --env "ROUNDS=$ROUNDS" \
		--env "MPI_EXTRA_ENV=$UCX_ENV" "$@" \
		-- scripts/bench-mpi/guest-main.sh "$BUILD" "$raw" "$parts") || rc=$?
	cut -d' ' -f1-3 /proc/loadavg >>"$raw/host-load.txt"
	return "$rc"
}

# RESULTS/mpi-bandwidth.dat (from summarize.py) as RESULTS/mpi-bandwidth.png.
plot_mpi() {
	gnuplot -e "datafile='$RESULTS/mpi-bandwidth.dat'; outfile='$RESULTS/mpi-bandwidth.png'" \
		"$ROOT/scripts/plot-mpi.gp"
}
