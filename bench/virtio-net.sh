#!/usr/bin/env bash
# bench/virtio-net.sh [--tern PATH] [--size MIB] [--rounds N] [--boots N] [--backends "user tap"]
# TCP throughput between a Linux guest and its host over virtio-net, tern
# against `qemu-system-x86_64 -enable-kvm -nodefaults -device virtio-net-pci`
# with the same kind of back end: user-mode networking (tern's libslirp back
# end vs QEMU's -netdev user) and tap (tern's tap back end vs QEMU's -netdev
# tap, vhost off).  Both directions: host -> guest (the guest's busybox wget
# from the host's httpd) and guest -> host (the host's wget from the guest's
# httpd; through a host forward with user networking).  Each VMM boots N
# times per back end (alternating); medians over every round of every boot.
#
# On this project's hosts /dev/kvm cannot run a Linux kernel, so everything
# runs one level down, in one boot of the nested harness's outer machine
# (tests/nested), whose own CPU is emulated: absolute rates are small, the
# ratios tern/QEMU are what to compare.  The inner half is
# bench/virtio-net-inner.sh.  Prints the per-round lines and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
tern=build/src/cmd/tern
size=16
rounds=3
boots=2
backends="user tap"
while [ $# -gt 0 ]; do
	case $1 in
	--tern) tern=$2; shift 2 ;;
	--size) size=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--boots) boots=$2; shift 2 ;;
	--backends) backends=$2; shift 2 ;;
	-h|--help) sed -n '2,16p' "$0"; exit 0 ;;
	*) echo "virtio-net: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
done
[ -x "$tern" ] || { echo "virtio-net: $tern missing (build first: scripts/build.sh)" >&2; exit 1; }

out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "virtio-net: ${size} MiB x $rounds each way, $boots boots each, back ends: $backends; tern and QEMU/KVM inside the nested harness's outer machine" >&2
timeout 6000 tests/nested/run.sh --tern "$tern" --run-dir tests/nested/work/bench-net --timeout 5900 \
	--bin bench/virtio-net-inner.sh --exec "virtio-net-inner.sh $size $rounds '$backends' $boots" \
	</dev/null >"$out" 2>&1 || true
tr -d '\r' <"$out" | grep -a '@@BENCH' | sed 's/^.*@@BENCH /  /'
grep -aq '@@BENCH done' "$out" || {
	echo "virtio-net: no result; the outer console's tail:" >&2
	tr -d '\r' <"$out" | tail -n 30 >&2
	exit 1
}
for be in $backends; do
	t=$(tr -d '\r' <"$out" | sed -n "s/.*@@BENCH median $be tern down=\([^ ]*\) up=\([^ ]*\).*/down \1 MB\/s, up \2 MB\/s/p")
	q=$(tr -d '\r' <"$out" | sed -n "s/.*@@BENCH median $be qemu down=\([^ ]*\) up=\([^ ]*\).*/down \1 MB\/s, up \2 MB\/s/p")
	r=$(tr -d '\r' <"$out" | sed -n "s/.*@@BENCH ratio $be tern\/qemu \(.*\)/\1/p")
	echo "$be: tern $t; qemu $q; tern/qemu $r (target >= 1)"
done
grep -aq '@@BENCH done bad=0' "$out" || { echo "virtio-net: some runs failed (see the lines above)" >&2; exit 1; }
