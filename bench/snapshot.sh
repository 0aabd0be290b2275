#!/usr/bin/env bash
# bench/snapshot.sh [BUILD_DIR] [ROUNDS]
# Snapshot save and restore of a 1 GiB self-checking guest (the dirty guest,
# memory.size=1G), tern against QEMU in the same run (bench/snapshot.py does
# the work and documents each measurement): save time of a stopped guest and
# file size; restore to running, lazy and eager (QEMU: -incoming + cont); and
# launch to the restored guest's "dirty: OK". Medians over ROUNDS (default
# 3), VMMs alternating first. Needs python3 and qemu-system-x86_64.
set -euo pipefail
build=${1:-build}
rounds=${2:-3}
tern=$build/src/cmd/tern
guest=$build/tests/guests/dirty.elf
for f in "$tern" "$guest"; do
	[ -e "$f" ] || { echo "snapshot bench: $f missing (build first: scripts/build.sh)" >&2; exit 1; }
done
command -v qemu-system-x86_64 >/dev/null || { echo "snapshot bench: qemu-system-x86_64 missing" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/var/tmp}/tern-snapshot-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 "$(dirname "$0")/snapshot.py" --tern "$tern" --guest "$guest" --rounds "$rounds" \
	--work "$work" --show-commands ${SNAPSHOT_BENCH_ARGS:-}
