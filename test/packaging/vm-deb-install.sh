#!/bin/bash
# Packaging test (VM): builds the Debian packages (deb-build.sh, lintian
# included), boots the test VM with Soft-RoCE and without the module, and
# installs, uses and purges them there on a fresh root (guest-deb-install.sh).
# Usage: vm-deb-install.sh SRC_ROOT VERBS_PROGRAM
set -eu -o pipefail

src=$(cd "$1" && pwd)
verbs_prog=$(realpath "$2")
here=$src/test/packaging
# The VM's result directory must not be under /tmp (a tmpfs in the guest).
work=$(mktemp -d /var/tmp/ummunot-debvm.XXXXXX)
trap 'rm -rf "$work"' EXIT

"$here/deb-build.sh" "$src" "$work/debs"
cp "$verbs_prog" "$work/"
cd "$src"
scripts/vm/run-vm.sh --rdma --timeout 3300 --out "$work/vm" \
	-- "$here/guest-deb-install.sh" "$work/debs" "$work/$(basename "$verbs_prog")" "$src"
