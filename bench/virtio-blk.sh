#!/usr/bin/env bash
# bench/virtio-blk.sh [--tern PATH] [--rounds N] [--formats "raw qcow2"]
# Disk throughput through virtio-blk: the same Debian guest (cloud kernel,
# busybox initramfs, 256 MiB, 1 vCPU) under tern and under
# `qemu-system-x86_64 -enable-kvm` with virtio-blk-pci (QEMU's defaults:
# cache=writeback, aio=threads), on a fresh 1 GiB image in the outer
# machine's tmpfs, running busybox dd with O_DIRECT in the guest: sequential
# 1 MiB writes and reads, 4 KiB writes and reads one request at a time, and
# random 4 KiB reads and writes (one dd process per request).
#
# On this project's hosts /dev/kvm cannot run a Linux kernel, so both run one
# level down, in one boot of the nested harness's outer machine
# (tests/nested), alternating tern and QEMU each round; medians and the
# ratio tern/QEMU per test (target: >= 1).  The inner half is
# bench/virtio-blk-inner.sh.  Prints the per-run lines, then a Markdown table
# for bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
tern=build/src/cmd/tern
rounds=3
formats="raw qcow2"
while [ $# -gt 0 ]; do
	case $1 in
	--tern) tern=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--formats) formats=$2; shift 2 ;;
	-h|--help) sed -n '2,17p' "$0"; exit 0 ;;
	*) echo "virtio-blk: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
done
[ -x "$tern" ] || { echo "virtio-blk: $tern missing (build first: scripts/build.sh)" >&2; exit 1; }
img=$(dirname "$tern")/img/tern-img
[ -x "$img" ] || img=$(dirname "$tern")/tern-img
bins=(--bin bench/virtio-blk-inner.sh)
[ -x "$img" ] && bins+=(--bin "$img")
command -v qemu-img >/dev/null && bins+=(--bin "$(command -v qemu-img)")

out=$(mktemp)
trap 'rm -f "$out"' EXIT
nformats=$(wc -w <<<"$formats")
echo "virtio-blk: $rounds rounds of tern and QEMU/KVM on $formats inside the nested harness's outer machine" >&2
timeout $((300 + rounds * nformats * 2 * 400)) tests/nested/run.sh --tern "$tern" \
	--run-dir tests/nested/work/bench-blk --timeout $((240 + rounds * nformats * 2 * 400)) \
	"${bins[@]}" --exec "virtio-blk-inner.sh $rounds '$formats'" </dev/null >"$out" 2>&1 || true
tr -d '\r' <"$out" | grep -a '@@BENCH' | sed 's/^.*@@BENCH /  /'
grep -aq '@@BENCH done' "$out" || {
	echo "virtio-blk: no result; the outer console's tail:" >&2
	tr -d '\r' <"$out" | tail -n 40 >&2
	exit 1
}
echo
echo "| format | test | tern | QEMU | unit | tern / QEMU |"
echo "|---|---|---|---|---|---|"
tr -d '\r' <"$out" | sed -n 's/.*@@BENCH median \([a-z0-9]*\) \([a-z0-9]*\) tern=\([0-9.]*\) qemu=\([0-9.]*\) unit=\([^ ]*\) ratio=\([0-9.]*\).*/| \1 | \2 | \3 | \4 | \5 | \6 |/p'
grep -aq '@@BENCH done bad=0' "$out" || { echo "virtio-blk: some runs failed (see the lines above)" >&2; exit 1; }
