#!/bin/bash
# Packaging test (VM): builds the module with DKMS (dkms-build.sh), boots the
# test VM with that module and checks /dev/ummunot and the udev rule there
# (guest-udev.sh).
# Usage: vm-dkms-udev.sh SRC_ROOT
set -eu -o pipefail

src=$(cd "$1" && pwd)
here=$src/test/packaging
# The VM's result directory must not be under /tmp (a tmpfs in the guest).
work=$(mktemp -d /var/tmp/ummunot-pkg.XXXXXX)
trap 'rm -rf "$work"' EXIT

"$here/dkms-build.sh" "$src" "$work/ko"
# ummunot.ko, or compressed (ummunot.ko.xz on Debian's 6.12): the harness
# loads either.
mapfile -t kos < <(find "$work/ko" -name 'ummunot.ko*' -type f)
[ ${#kos[@]} -eq 1 ] || { echo "FAIL: want one module from dkms-build.sh, got: ${kos[*]}" >&2; exit 1; }
cd "$src"
scripts/vm/run-vm.sh --module "${kos[0]}" --timeout 300 --out "$work/vm" \
	-- "$here/guest-udev.sh" "$src/kernel/60-ummunot.rules"
