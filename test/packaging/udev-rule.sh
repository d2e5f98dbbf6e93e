#!/bin/bash
# Packaging test (host): the udev rule file is well formed and gives
# /dev/ummunot mode 0666.  Every rule line must be a comma-separated list of
# KEY[{attr}] OP "value" items, with known operators.  (The VM test
# vm-dkms-udev.sh has udevadm itself apply the rule.)
#
# Usage: udev-rule.sh RULES_FILE
set -eu

rules=$1
item='[A-Z_]+(\{[^}]*\})?[[:space:]]*(==|!=|=|\+=|-=|:=)[[:space:]]*"[^"]*"'
bad=0 rules_seen=0 n=0
while IFS= read -r line || [ -n "$line" ]; do
	n=$((n + 1))
	case $line in '' | '#'*) continue ;; esac
	rules_seen=$((rules_seen + 1))
	if ! printf '%s\n' "$line" |
		grep -Eq "^[[:space:]]*$item([[:space:]]*,[[:space:]]*$item)*[[:space:]]*$"; then
		echo "FAIL: $rules:$n is not a valid rule: $line" >&2
		bad=1
	fi
done <"$rules"
[ "$rules_seen" -gt 0 ] || { echo "FAIL: no rule in $rules" >&2; exit 1; }
grep -Eq '^[^#]*KERNEL=="ummunot".*MODE="0666"' "$rules" ||
	{ echo "FAIL: no rule giving KERNEL==\"ummunot\" MODE=\"0666\"" >&2; exit 1; }
[ "$bad" = 0 ] || exit 1
echo "PASS: $rules_seen rule(s) well formed, /dev/ummunot gets mode 0666"
