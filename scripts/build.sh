#!/usr/bin/env bash
# Configures and builds tern in build/ (warnings are errors), and with
# ASAN=1 also build-asan/ (AddressSanitizer + UndefinedBehaviorSanitizer).
set -euo pipefail
cd "$(dirname "$0")/.."

configure() {
	local dir=$1; shift
	if [ -f "$dir/build.ninja" ]; then
		meson configure "$dir" "$@" >/dev/null
	else
		meson setup "$dir" "$@" >/dev/null
	fi
	ninja -C "$dir"
}

configure build -Dwerror=true
if [ "${ASAN:-0}" = 1 ]; then
	configure build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false
fi
if [ "${FUZZ:-0}" = 1 ]; then
	CC=clang configure build-fuzz -Dfuzzing=true -Db_lundef=false
fi
