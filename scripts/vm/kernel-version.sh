#!/bin/sh
# Print the release (`uname -r`) of the kernel the VM tests boot.
# Usage: kernel-version.sh [FLAVOUR]
#        kernel-version.sh --flavours      (list: FLAVOUR IMAGE_PACKAGE HEADERS_PACKAGE)
#
# Kernels are chosen by flavour, never by sorting versions: each flavour is
# a Debian 12 metapackage whose dependency names the current image, so the
# release moves with Debian's updates but the choice is explicit:
#   6.1      linux-image-amd64          (Debian 12's default kernel)
#   6.12     linux-image-6.12-amd64
#   6.1-rt   linux-image-rt-amd64       (PREEMPT_RT)
#   6.12-rt  linux-image-6.12-rt-amd64  (PREEMPT_RT)
# Without FLAVOUR: $UMMUNOT_KVER if set (an exact release, which must be
# installed), else the release in $UMMUNOT_KERNEL_DIR/release if set (a
# kernel built by scripts/debug-kernel/build.sh), else flavour 6.1.
# A flavour whose packages are not installed is an error, never a fallback.
set -eu

DEFAULT_FLAVOUR=6.1

die() {
	echo "kernel-version.sh: $*" >&2
	exit 1
}

flavours() {
	cat <<'LIST'
6.1 linux-image-amd64 linux-headers-amd64
6.12 linux-image-6.12-amd64 linux-headers-6.12-amd64
6.1-rt linux-image-rt-amd64 linux-headers-rt-amd64
6.12-rt linux-image-6.12-rt-amd64 linux-headers-6.12-rt-amd64
LIST
}

is_installed() {
	[ -f "/boot/vmlinuz-$1" ] && [ -d "/lib/modules/$1/kernel" ]
}

# The release a metapackage points at: its linux-image-RELEASE dependency.
flavour_release() { # FLAVOUR
	# shellcheck disable=SC2034 # headers: read for the field order only
	flavours | while read -r name image headers; do
		[ "$name" = "$1" ] || continue
		status=$(dpkg-query -W -f '${db:Status-Abbrev}' "$image" 2>/dev/null) || status=
		case $status in
		ii*) ;;
		*) echo "kernel-version.sh: kernel flavour $1 is not installed (apt-get install $image $headers)" >&2
			exit 1 ;;
		esac
		dpkg-query -W -f '${Depends}\n' "$image" | tr ',' '\n' |
			sed -n 's/^ *linux-image-\([^ ]*\).*/\1/p' | head -n 1
		exit 0
	done
}

release_of_flavour() { # FLAVOUR
	flavours | grep -q "^$1 " || die "unknown kernel flavour '$1' (known: $(flavours | cut -d' ' -f1 | tr '\n' ' '))"
	release=$(flavour_release "$1") || exit 1
	[ -n "$release" ] || die "cannot tell which kernel the metapackage of flavour $1 installs"
	is_installed "$release" ||
		die "flavour $1 names kernel $release, but there is no /boot/vmlinuz-$release with /lib/modules/$release/kernel"
	printf '%s\n' "$release"
}

case ${1:-} in
--flavours) flavours; exit 0 ;;
-*) die "unknown option $1" ;;
?*) release_of_flavour "$1"; exit 0 ;;
esac

if [ -n "${UMMUNOT_KVER:-}" ]; then
	if [ -n "${UMMUNOT_KERNEL_DIR:-}" ]; then
		[ "$(cat "$UMMUNOT_KERNEL_DIR/release")" = "$UMMUNOT_KVER" ] ||
			die "UMMUNOT_KVER=$UMMUNOT_KVER and UMMUNOT_KERNEL_DIR=$UMMUNOT_KERNEL_DIR name different kernels"
		printf '%s\n' "$UMMUNOT_KVER"
		exit 0
	fi
	is_installed "$UMMUNOT_KVER" ||
		die "UMMUNOT_KVER=$UMMUNOT_KVER: no /boot/vmlinuz-$UMMUNOT_KVER with /lib/modules/$UMMUNOT_KVER/kernel"
	printf '%s\n' "$UMMUNOT_KVER"
	exit 0
fi

if [ -n "${UMMUNOT_KERNEL_DIR:-}" ]; then
	if [ ! -f "$UMMUNOT_KERNEL_DIR/release" ] || [ ! -f "$UMMUNOT_KERNEL_DIR/bzImage" ]; then
		die "UMMUNOT_KERNEL_DIR=$UMMUNOT_KERNEL_DIR: no release and bzImage there (see scripts/debug-kernel/build.sh)"
	fi
	cat "$UMMUNOT_KERNEL_DIR/release"
	exit 0
fi

release_of_flavour "$DEFAULT_FLAVOUR"
