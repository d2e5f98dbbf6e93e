#!/bin/bash
# Builds, once, the debug kernel the VM tests boot: Debian's linux-source-6.1
# with KASAN, lockdep, atomic-sleep checks, KFENCE, ... (debug.config).
# Usage: scripts/debug-kernel/build.sh
# Prints the kernel's directory on stdout when it is ready:
#   DIR/bzImage            the kernel image
#   DIR/release            its `uname -r`
#   DIR/build/             the configured, built tree (out-of-tree modules
#                          build against it: make -C DIR/build M=...)
#   DIR/root/lib/modules/RELEASE/   modules.builtin & co (modprobe knows
#                          what is built in)
# DIR is $UMMUNOT_DEBUG_KERNEL_CACHE (default /var/tmp/ummunot-debug-kernel)
# /KEY, KEY a hash of the config fragment, the source package's version, the
# compiler and RECIPE below: a change to any of them builds a new kernel (and
# removes the old ones); an unchanged one reuses the finished build.
# Concurrent callers wait for one build (flock).  The build runs under
# nice -n 10 with $UMMUNOT_DEBUG_KERNEL_JOBS jobs (default: one per CPU);
# its log is DIR.log.
set -eu -o pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FRAGMENT=$SCRIPT_DIR/debug.config
SOURCE_PACKAGE=linux-source-6.1
SOURCE_TARBALL=/usr/src/linux-source-6.1.tar.xz
CACHE=${UMMUNOT_DEBUG_KERNEL_CACHE:-/var/tmp/ummunot-debug-kernel}
# Bump when a change to this script changes the kernel or the layout of DIR.
RECIPE=1

die() {
	echo "debug-kernel/build.sh: $*" >&2
	exit 1
}

say() {
	echo "debug-kernel/build.sh: $*" >&2
}

cache_key() {
	local version
	version=$(dpkg-query -W -f '${Version}' "$SOURCE_PACKAGE" 2>/dev/null) ||
		die "$SOURCE_PACKAGE is not installed (apt-get install $SOURCE_PACKAGE)"
	[ -f "$SOURCE_TARBALL" ] || die "no $SOURCE_TARBALL (reinstall $SOURCE_PACKAGE)"
	{
		printf 'source %s %s\n' "$SOURCE_PACKAGE" "$version"
		gcc --version | head -n 1
		sha256sum <"$FRAGMENT"
		printf 'recipe %s\n' "$RECIPE"
	} | sha256sum | cut -c1-16
}

# Every line of the fragment must hold in the final .config: Kconfig drops
# options whose dependencies are missing without an error.
check_config() { # TREE
	local tree=$1 line name missing=0
	while IFS= read -r line; do
		case $line in
		CONFIG_*=*) grep -qxF "$line" "$tree/.config" || {
			say "wanted '$line', got '$(grep -E "^(# )?${line%%=*}[= ]" "$tree/.config" || echo unset)'"
			missing=1
		} ;;
		"# CONFIG_"*" is not set")
			name=${line#\# }
			name=${name%% *}
			if grep -q "^$name=" "$tree/.config"; then
				say "wanted '$line', got '$(grep "^$name=" "$tree/.config")'"
				missing=1
			fi ;;
		esac
	done <"$FRAGMENT"
	[ "$missing" -eq 0 ] || die "the config fragment did not survive olddefconfig (see above)"
}

configure() { # TREE
	local tree=$1
	make -C "$tree" -s tinyconfig
	(cd "$tree" && KCONFIG_CONFIG=.config scripts/kconfig/merge_config.sh -m .config "$FRAGMENT")
	make -C "$tree" -s olddefconfig
	check_config "$tree"
}

build() { # DIR
	local dir=$1 stage jobs release start
	start=$(date +%s)
	jobs=${UMMUNOT_DEBUG_KERNEL_JOBS:-$(nproc)}
	[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "UMMUNOT_DEBUG_KERNEL_JOBS must be a positive number"
	stage=$(mktemp -d "$dir.stage.XXXXXX")
	say "unpacking $SOURCE_TARBALL"
	tar -xJf "$SOURCE_TARBALL" -C "$stage"
	mv "$stage/linux-source-6.1" "$stage/build"
	configure "$stage/build"
	say "building (make -j$jobs under nice -n 10; log: $dir.log)"
	nice -n 10 make -C "$stage/build" -j"$jobs" bzImage modules
	nice -n 10 make -C "$stage/build" -s INSTALL_MOD_PATH="$stage/root" modules_install
	release=$(make -C "$stage/build" -s kernelrelease)
	[ -f "$stage/root/lib/modules/$release/modules.builtin" ] ||
		die "modules_install left no modules.builtin for $release"
	cp "$stage/build/arch/x86/boot/bzImage" "$stage/bzImage"
	printf '%s\n' "$release" >"$stage/release"
	mv "$stage" "$dir"
	say "built $release in $(($(date +%s) - start)) s"
}

# A kernel tree is a few GiB: keep only the current one.
remove_other_builds() { # KEY
	local old
	for old in "$CACHE"/*; do
		[ -e "$old" ] || continue
		case ${old##*/} in
		"$1" | "$1".log) ;;
		*) rm -rf "$old" ;;
		esac
	done
}

main() {
	local key dir
	command -v flock >/dev/null || die "flock not found (util-linux)"
	key=$(cache_key)
	dir=$CACHE/$key
	mkdir -p "$CACHE"
	exec 9>"$CACHE/.lock"
	flock 9
	if [ ! -f "$dir/release" ]; then
		rm -rf "$dir" "$dir".stage.*
		say "no kernel for key $key in $CACHE: building it (tens of minutes)"
		build "$dir" >"$dir.log" 2>&1 || {
			tail -n 40 "$dir.log" >&2
			die "the debug kernel build failed (log: $dir.log)"
		}
		remove_other_builds "$key"
	fi
	printf '%s\n' "$dir"
}

main "$@"
