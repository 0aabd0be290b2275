#!/usr/bin/env bash
# tern's main job, from a fresh machine: install what is needed, build, and
# boot Debian's kernel (linux-image-cloud-amd64) with a small busybox
# initramfs under tern, showing its console; boot it again counting on its
# console, snapshot it, kill tern, restore it and watch it carry on
# (tests/nested/demo-linux.sh); then the same with the self-checking dirty
# guest, directly on this host. Exit status 0 when both restored guests
# carried on.
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

# --- step 1: Linux under tern, then its snapshot and restore (tests/nested/demo-linux.sh) ---
linux_log=$(mktemp /tmp/tern-demo-linux.XXXXXX.log)
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
		tests/nested/demo-linux.sh | tee "$linux_log" || true
else
	echo "demo: this host's KVM cannot run a Linux kernel directly; running tern one level down inside QEMU (tests/nested)"
	if [ "${DEMO_SHELL:-0}" = 1 ]; then
		exec tests/nested/run.sh --tern build/src/cmd/tern --no-qemu \
			--bin tests/nested/demo-linux.sh --exec "DEMO_SHELL=1 demo-linux.sh"
	fi
	# The outer machine's console, without its firmware's, its kernel's
	# (KVM's unhandled-MSR notes) and the harness's chatter.
	timeout 900 tests/nested/run.sh --tern build/src/cmd/tern --no-qemu \
		--bin tests/nested/demo-linux.sh --exec "DEMO_SHELL=${DEMO_SHELL:-0} demo-linux.sh" </dev/null 2>&1 |
		tr -d '\r' | sed -u 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' |
		grep -av --line-buffered '^@@TERN-NESTED\|SeaBIOS\|^Booting from ROM\|^run.sh:\|^fetch.sh:\|^build.sh:\|^\[ *[0-9.]*\] reboot: Power down$\|^\[ *[0-9.]*\] kvm \[[0-9]*\]: vcpu[0-9]*, guest rIP' |
		tee "$linux_log" || true
fi

# Snapshot and restore (docs/snapshot-format.md): the self-checking dirty
# guest runs, is saved mid-run with ternctl, killed with SIGKILL, and
# restored from the file; it carries on from where it was and checks all of
# its RAM at the end ("dirty: OK").
T=$(mktemp -d /tmp/tern-demo.XXXXXX)
vm=
trap '[ -z "$vm" ] || kill -9 $vm 2>/dev/null || true; rm -rf "$T" "$linux_log"' EXIT
echo "demo: snapshot of the self-checking dirty guest on this host: 256 MiB, 30000 passes over a 32 MiB window, control socket $T/vm.sock"
build/src/cmd/tern -o kernel=build/tests/guests/dirty.elf -o memory.size=256M -o test_exit.enable=on \
	-o "cmdline=passes=30000 window=32M progress=2000" -o console.path="$T/console" \
	-o control.path="$T/vm.sock" </dev/null &
vm=$!
until grep -q '^dirty: pass 4000$' "$T/console" 2>/dev/null; do sleep 0.05; done
echo "demo: the guest has done 4000 passes: ternctl -s $T/vm.sock pause, then snapshot save $T/vm.snap"
build/src/cmd/ternctl -s "$T/vm.sock" pause
save=$(build/src/cmd/ternctl -s "$T/vm.sock" --json snapshot save "$T/vm.snap" 2>/dev/null)
echo "demo: saved in $(echo "$save" | sed -n 's/.*"total_ms": *\([0-9]*\).*/\1/p') ms at \"$(grep -a 'pass' "$T/console" | tail -1)\"; killing tern (kill -9)"
kill -9 $vm
wait $vm 2>/dev/null || true
build/src/cmd/ternctl snapshot inspect "$T/vm.snap" | sed -n '1,3p;/^ram:/p;/^sections/,/^$/p'
echo "demo: build/src/cmd/tern restore $T/vm.snap -o console.path=stdio -o console.input=off"
rc=0
build/src/cmd/tern restore "$T/vm.snap" -o console.path=stdio -o console.input=off -o control.path="$T/vm2.sock" |
	tee "$T/console2" || rc=$?
echo "demo: the restored guest exited with status $rc"

# --- the verdict ---
linux=$(grep -a '^demo: \(OK\|FAIL\)' "$linux_log" | tail -n 1 || true)
[ -n "$linux" ] || linux="demo: FAIL: the Linux step ended without a verdict"
echo "demo: Linux: ${linux#demo: }"
if [ "$rc" = 0 ] && grep -q '^dirty: OK' "$T/console2"; then
	echo "demo: dirty guest: OK: restored from the snapshot, it carried on and its RAM checked out (dirty: OK)"
else
	echo "demo: dirty guest: FAIL: the restored guest did not print dirty: OK (status $rc)"
	exit 1
fi
case $linux in "demo: OK"*) ;; *) exit 1 ;; esac
