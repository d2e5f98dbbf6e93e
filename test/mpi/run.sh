#!/bin/bash
# Host side of the MPI correctness test: boots the VM with the module and
# Soft-RoCE and runs guest.sh there.
# Usage: run.sh SRC_ROOT MODULE MPIBENCH SHIM CONTROL_SHIM
set -eu -o pipefail

src=$(cd "$1" && pwd)
# meson passes build outputs relative to the build directory (our cwd).
module=$(realpath "$2") mpibench=$(realpath "$3") shim=$(realpath "$4") control=$(realpath "$5")
work=$(mktemp -d /var/tmp/ummunot-mpi-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$src"
scripts/vm/run-vm.sh --module "$module" --rdma --timeout 300 --out "$work" \
	-- "$src/test/mpi/guest.sh" "$mpibench" "$shim" "$control" "$work/mpi"
