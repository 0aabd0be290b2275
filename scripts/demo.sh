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

# Snapshot and restore (docs/snapshot-format.md): the self-checking dirty
# guest runs, is saved mid-run with ternctl, killed with SIGKILL, and
# restored from the file; it carries on from where it was and checks all of
# its RAM at the end ("dirty: OK").
T=$(mktemp -d /tmp/tern-demo.XXXXXX)
trap 'kill -9 $vm 2>/dev/null; rm -rf "$T"' EXIT
echo "demo: snapshot: running the dirty guest (256 MiB, 300 passes), control socket $T/vm.sock"
build/src/cmd/tern -o kernel=build/tests/guests/dirty.elf -o memory.size=256M -o test_exit.enable=on \
	-o "cmdline=passes=300 window=32M progress=10" -o console.path="$T/console" \
	-o control.path="$T/vm.sock" </dev/null &
vm=$!
until grep -q '^dirty: pass 50$' "$T/console" 2>/dev/null; do sleep 0.05; done
build/src/cmd/ternctl -s "$T/vm.sock" snapshot save "$T/vm.snap"
echo "demo: saved at \"$(grep -a 'pass' "$T/console" | tail -1)\"; killing tern (kill -9)"
kill -9 $vm
wait $vm 2>/dev/null || true
build/src/cmd/ternctl snapshot inspect "$T/vm.snap" | sed -n '1,3p;/^ram:/p;/^sections/,/^$/p'
echo "demo: build/src/cmd/tern restore $T/vm.snap -o console.path=stdio -o console.input=off"
build/src/cmd/tern restore "$T/vm.snap" -o console.path=stdio -o console.input=off -o control.path="$T/vm2.sock"
echo "demo: the restored guest exited with status $?"
