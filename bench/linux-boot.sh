#!/usr/bin/env bash
# bench/linux-boot.sh [--tern PATH] [--runs N] [--mem MIB] [--cpus N]
# Linux boot time: from the VMM's start to the inner guest's init marker
# (TERN-INNER-INIT), tern against `qemu-system-x86_64 -enable-kvm -nodefaults`
# (-M pc, -cpu host, direct -kernel/-initrd boot) with the same Debian cloud
# kernel, busybox initramfs, command line, memory and vCPUs.
#
# On this project's hosts /dev/kvm cannot run a Linux kernel, so both run one
# level down, in the same boot of the nested harness's outer machine
# (tests/nested): N boots each, alternating tern and QEMU, medians and the
# ratio tern/QEMU (target <= 0.5), and the ratio tern would reach if its own
# start-up took no time (the guest kernel's run alone against QEMU's whole
# boot).  The inner half is bench/linux-boot-inner.sh.  Prints the per-boot
# lines and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
tern=build/src/cmd/tern
runs=5
mem=256
cpus=1
while [ $# -gt 0 ]; do
	case $1 in
	--tern) tern=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--cpus) cpus=$2; shift 2 ;;
	-h|--help) sed -n '2,14p' "$0"; exit 0 ;;
	*) echo "linux-boot: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
done
[ -x "$tern" ] || { echo "linux-boot: $tern missing (build first: scripts/build.sh)" >&2; exit 1; }

out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "linux-boot: $runs boots each of tern and QEMU/KVM (${mem} MiB, $cpus vCPU) inside the nested harness's outer machine" >&2
# one outer boot; about 20 s per inner boot pair, plus the outer machine's own
timeout $((120 + runs * 90)) tests/nested/run.sh --tern "$tern" --run-dir tests/nested/work/bench \
	--bin bench/linux-boot-inner.sh --exec "linux-boot-inner.sh $runs $mem $cpus" </dev/null >"$out" 2>&1 || true
tr -d '\r' <"$out" | grep -a '@@BENCH' | sed 's/^.*@@BENCH /  /'
grep -aq '@@BENCH ratio' "$out" || {
	echo "linux-boot: no result; the outer console's tail:" >&2
	tr -d '\r' <"$out" | tail -n 30 >&2
	exit 1
}
tm=$(tr -d '\r' <"$out" | sed -n 's/.*@@BENCH median tern marker=\([0-9.]*\).*/\1/p')
qm=$(tr -d '\r' <"$out" | sed -n 's/.*@@BENCH median qemu marker=\([0-9.]*\).*/\1/p')
ratio=$(tr -d '\r' <"$out" | sed -n 's/.*@@BENCH ratio tern\/qemu marker=\([0-9.]*\).*/\1/p')
gonly=$(tr -d '\r' <"$out" | sed -n 's/.*@@BENCH ratio tern\/qemu .*guest_only=\([0-9.]*\).*/\1/p')
echo "linux boot to init marker (median of $runs, ${mem} MiB, $cpus vCPU, nested): tern ${tm} s, qemu -enable-kvm -nodefaults ${qm} s, tern/qemu = ${ratio} (target <= 0.5)"
echo "  the guest kernel's own run under tern (marker less tern's start-up) against QEMU's marker: ${gonly} (the ratio if tern took no time to start)"
grep -aq '@@BENCH done bad=0' "$out" || { echo "linux-boot: some boots failed (see the lines above)" >&2; exit 1; }
