#!/usr/bin/env bash
# Installs every Debian package tern needs to build, test and benchmark.
# Idempotent: packages already installed are left alone, and apt-get runs
# only when something is missing. Debian packages only; nothing else is
# downloaded.
set -euo pipefail

packages=(
	# build
	build-essential meson ninja-build pkg-config clang
	# libraries (design.md: each chosen for its field)
	liburing-dev zlib1g-dev libzstd-dev libxxhash-dev libjansson-dev
	liblz4-dev liblzma-dev
	libslirp-dev libseccomp-dev libcmocka-dev
	# oracles, anchors and the nested harness
	qemu-system-x86 qemu-utils busybox-static cpio acpica-tools
	xz-utils zstd kmod file
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "setup: all ${#packages[@]} packages present"
	exit 0
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then
	SUDO=sudo
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
