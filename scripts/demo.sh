#!/usr/bin/env bash
# tern's main job, from a fresh machine: install what is needed, build, and
# boot a guest under tern on this host's /dev/kvm.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
echo "demo: booting the hello test guest: build/src/cmd/tern -k examples/hello.conf"
build/src/cmd/tern -k examples/hello.conf
echo "demo: tern exited with status $?"
