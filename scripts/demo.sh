#!/usr/bin/env bash
# tern's main job, from a fresh machine: install what is needed, build, and
# boot Debian's kernel (linux-image-cloud-amd64) with a small busybox
# initramfs under tern, showing its console; then the snapshot step.
# Non-interactive (DEMO_SHELL=1: an interactive shell in the Linux guest).
#
# Where Linux runs: a host whose KVM runs guest kernel code at full speed
# boots it directly; this project's development hosts cannot (their /dev/kvm
# emulates guest kernel code slowly: shared/design.md), so there the Linux
# step runs one level down, in the nested harness (tests/nested: QEMU TCG
# with nested SVM, one outer boot). The cheap probe: a host that is itself a
# VM (the "hypervisor" CPU flag) is taken to have such a KVM.
# TERN_DEMO_DIRECT=1 or 0 overrides it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh

# --- step 1: Linux under tern (tests/nested/demo-linux.sh) ---
direct=${TERN_DEMO_DIRECT:-}
if [ -z "$direct" ]; then
	direct=1
	grep -qw hypervisor /proc/cpuinfo && direct=0
fi
if [ "$direct" = 1 ]; then
	echo "demo: booting Debian's cloud kernel under tern on this host's /dev/kvm"
	tests/nested/fetch.sh >/dev/null
	tests/nested/build.sh --out tests/nested/work/run/outer.cpio --no-qemu >/dev/null
	. tests/nested/work/kernel.env
	TERN=build/src/cmd/tern INNER_KERNEL=$KERNEL INNER_INITRD=tests/nested/work/inner.cpio.gz \
		tests/nested/demo-linux.sh
else
	echo "demo: this host's KVM cannot run a Linux kernel directly; running tern one level down inside QEMU (tests/nested)"
	if [ "${DEMO_SHELL:-0}" = 1 ]; then
		exec tests/nested/run.sh --tern build/src/cmd/tern --no-qemu \
			--bin tests/nested/demo-linux.sh --exec "DEMO_SHELL=1 demo-linux.sh"
	fi
	# The outer machine's console, without its firmware's and harness's chatter.
	timeout 900 tests/nested/run.sh --tern build/src/cmd/tern --no-qemu \
		--bin tests/nested/demo-linux.sh --exec "DEMO_SHELL=${DEMO_SHELL:-0} demo-linux.sh" </dev/null 2>&1 |
		tr -d '\r' | sed -u 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' |
		grep -av --line-buffered '^@@TERN-NESTED\|SeaBIOS\|^Booting from ROM\|^run.sh:\|^fetch.sh:\|^build.sh:\|reboot: Power down$' || true
fi

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
