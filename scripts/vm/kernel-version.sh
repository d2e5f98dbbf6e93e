#!/bin/sh
# Print the version of the Debian kernel the VM tests boot: the newest
# /boot/vmlinuz-<ver> whose modules are installed in /lib/modules/<ver>/kernel.
# The version moves with Debian's kernel updates, so it is never hard-coded.
# UMMUNOT_KVER overrides the discovery (it must still be installed).
set -eu

die() {
	echo "kernel-version.sh: $*" >&2
	exit 1
}

is_installed() {
	[ -f "/boot/vmlinuz-$1" ] && [ -d "/lib/modules/$1/kernel" ]
}

newest_installed() {
	for image in /boot/vmlinuz-*; do
		[ -e "$image" ] || continue
		ver=${image#/boot/vmlinuz-}
		is_installed "$ver" && printf '%s\n' "$ver"
	done | sort -V | tail -n 1
}

if [ -n "${UMMUNOT_KVER:-}" ]; then
	is_installed "$UMMUNOT_KVER" ||
		die "UMMUNOT_KVER=$UMMUNOT_KVER: no /boot/vmlinuz-$UMMUNOT_KVER with /lib/modules/$UMMUNOT_KVER/kernel"
	printf '%s\n' "$UMMUNOT_KVER"
	exit 0
fi

ver=$(newest_installed)
[ -n "$ver" ] || die "no kernel image in /boot with modules in /lib/modules (install linux-image-amd64)"
printf '%s\n' "$ver"
