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
cd "$src"
scripts/vm/run-vm.sh --module "$work/ko/ummunot.ko" --timeout 300 --out "$work/vm" \
	-- "$here/guest-udev.sh" "$src/kernel/60-ummunot.rules"
