#!/bin/bash
# Runs in the VM with the DKMS-built module loaded (vm-dkms-udev.sh): checks
# the device node, shows that an unprivileged user cannot open it before the
# udev rule applies and can after udevadm applied the project's rule.
# Usage: guest-udev.sh RULES_FILE
set -eu

rules=$1
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# An unprivileged open of the device, read-only as the ABI requires.
nobody_can_open() {
	setpriv --reuid=65534 --regid=65534 --clear-groups \
		dd if=/dev/ummunot of=/dev/null count=0 status=none 2>/dev/null
}

grep -q '^ummunot ' /proc/modules || fail "ummunot is not loaded"
[ -c /dev/ummunot ] || fail "/dev/ummunot is not a character device"
! nobody_can_open || fail "nobody could open /dev/ummunot before the rule applied (mode $(stat -c %a /dev/ummunot))"

# The guest's root is read-only: put the rule on a private tmpfs.
mount -t tmpfs tmpfs /etc/udev/rules.d
cp "$rules" /etc/udev/rules.d/
udevadm test --action=add /sys/class/misc/ummunot >/tmp/udev.log 2>&1 ||
	{ cat /tmp/udev.log; fail "udevadm test failed"; }
grep -E "$(basename "$rules"):[0-9]+ MODE 0666" /tmp/udev.log ||
	{ cat /tmp/udev.log; fail "udev did not apply MODE 0666 from $(basename "$rules")"; }
! grep -Ei 'invalid|error' /tmp/udev.log | grep -F "$(basename "$rules")" ||
	fail "udev reported problems with the rule file"
mode=$(stat -c %a /dev/ummunot)
[ "$mode" = 666 ] || fail "/dev/ummunot has mode $mode after the rule, want 666"
nobody_can_open || fail "nobody cannot open /dev/ummunot after the rule"
echo "PASS: DKMS-built module loads; the udev rule gives /dev/ummunot mode 0666; an unprivileged user opens it"
