#!/bin/bash
# VMDK interop with qemu-img, for every subformat (monolithicSparse,
# monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized):
#  1. images qemu-img makes (convert from a raw file of random data with
#     holes; qemu-io writes into created images) read back byte-identical
#     through tern-img convert to raw;
#  2. images tern-img writes (convert, create + random writes through vdisk,
#     zeroed grains, children of a parent image, vmdk to vmdk) pass
#     `qemu-img check` and `qemu-img compare` against a raw reference; qemu's
#     children of a parent read back identical too.
# The raw reference is 2.2 GiB (sparse) so the twoGb kinds get 2 extents.
# usage: vdisk_vmdk_interop.sh TERN_IMG VDISK_IO
set -u
TI=$(realpath "$1") VIO=$(realpath "$2")
command -v qemu-img >/dev/null || { echo "qemu-img missing"; exit 77; }
W=$(mktemp -d /tmp/vdisk-vmdk.XXXXXX)
trap 'rm -rf "$W"' EXIT
cd "$W"
fails=0 n=0
ok()   { n=$((n+1)); }
bad()  { n=$((n+1)); fails=$((fails+1)); echo "FAIL: $*"; }
run()  { "$@" >out.log 2>&1 || { cat out.log; return 1; }; }
SUBS="monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat streamOptimized"

# random data with holes, unaligned pieces, data across the 2 GiB extent
# boundary, and a size that is not a whole number of grains
rnd() { head -c "$1" /dev/urandom; }
mkref() {   # file size
	truncate -s "$2" "$1"
	rnd 3M | dd of="$1" bs=64k oflag=seek_bytes iflag=fullblock seek=0 conv=notrunc status=none
	rnd 70000 | dd of="$1" bs=64k oflag=seek_bytes iflag=fullblock seek=$((5*1048576+777)) conv=notrunc status=none
	rnd 1234 | dd of="$1" bs=64k oflag=seek_bytes iflag=fullblock seek=$((9*1048576+4096)) conv=notrunc status=none
	base64 -w0 /dev/urandom 2>/dev/null | head -c 2M | dd of="$1" bs=64k oflag=seek_bytes iflag=fullblock seek=$((12*1048576)) conv=notrunc status=none
	local sz=$(stat -c %s "$1")
	if [ "$sz" -gt $((2049*1048576)) ]; then
		rnd 2M | dd of="$1" bs=64k oflag=seek_bytes iflag=fullblock seek=$((2047*1048576+512)) conv=notrunc status=none
	fi
	rnd 1000 | dd of="$1" bs=64k oflag=seek_bytes iflag=fullblock seek=$((sz-1000)) conv=notrunc status=none
}
mkref small.raw $((24*1048576+1536))
mkref big.raw $((2200*1048576+1536))

same_raw() {   # a b label: qemu compares two raw files (holes against data too)
	if run qemu-img compare -q -f raw -F raw "$1" "$2"; then ok; else bad "$3: contents differ"; fi
}

echo "== 1. qemu-img images read by tern"
for s in $SUBS; do
	for ref in small.raw big.raw; do
		case $s:$ref in streamOptimized:big.raw|monolithicFlat:big.raw) continue;; esac
		rm -f q*.vmdk t.raw
		qemu-img convert -f raw -O vmdk -o subformat=$s $ref q.vmdk
		if ! run "$TI" convert -f vmdk -O raw q.vmdk t.raw; then bad "qemu $s $ref: tern-img convert"; continue; fi
		if [ $ref = small.raw ]; then
			if cmp -s t.raw $ref; then ok; else bad "qemu $s $ref: tern read differs"; fi
		else
			same_raw t.raw $ref "qemu $s $ref"
		fi
		# probing recognises the image; tern's compare agrees
		if "$TI" info q.vmdk 2>&1 | grep -q 'file format: vmdk'; then ok; else bad "qemu $s: not probed as vmdk"; fi
		if run "$TI" compare -f vmdk -F raw q.vmdk $ref; then ok; else bad "qemu $s $ref: tern-img compare"; fi
		case $s in *Sparse|streamOptimized)
			if run "$TI" check -f vmdk q.vmdk; then ok; else bad "qemu $s: tern-img check"; fi;;
		esac
	done
done
# qemu-io writes into images qemu-img created (zeroed grains too)
for s in monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat; do
	for zg in off on; do
		case $s:$zg in *Flat:on) continue;; esac
		rm -f q*.vmdk
		qemu-img create -q -f vmdk -o subformat=$s,zeroed_grain=$zg q.vmdk 3G
		qemu-io -f vmdk -c 'write -P 0x11 0 70k' -c 'write -P 0x22 1M 3M' -c 'write -P 0x33 7777 1234' \
			-c 'write -z 1M 128k' -c 'write -P 0x44 2047M 2M' -c 'write -P 0x55 3071M 1M' q.vmdk >/dev/null
		rm -f t.raw qr.raw
		qemu-img convert -f vmdk -O raw q.vmdk qr.raw
		if ! run "$TI" convert -f vmdk -O raw q.vmdk t.raw; then bad "qemu-io $s zg=$zg: tern-img convert"; continue; fi
		same_raw t.raw qr.raw "qemu-io $s zg=$zg"
	done
done

echo "== 2. tern-img images accepted by qemu-img"
qemu_accepts() {   # img ref label
	if run qemu-img check -f vmdk "$1"; then ok; else bad "$3: qemu-img check"; fi
	if run qemu-img compare -f vmdk -F raw "$1" "$2"; then ok; else bad "$3: qemu-img compare"; fi
}
for s in $SUBS; do
	for ref in small.raw big.raw; do
		case $s:$ref in monolithicFlat:big.raw) continue;; esac
		rm -f t*.vmdk
		if ! run "$TI" convert -O vmdk -o subformat=$s $ref t.vmdk; then bad "tern convert $s $ref"; continue; fi
		qemu_accepts t.vmdk $ref "tern convert $s $ref"
		case $s in *Sparse|streamOptimized)
			if run "$TI" check -f vmdk t.vmdk; then ok; else bad "tern $s: tern-img check"; fi;;
		esac
	done
	# create, then random writes and zero writes through vdisk
	[ $s = streamOptimized ] && continue
	for zg in off on; do
		case $s:$zg in *Flat:on) continue;; esac
		rm -f t*.vmdk t.vmdk.ref
		if ! run "$TI" create -f vmdk -o subformat=$s,zeroed_grain=$zg,adapter_type=lsilogic,hwversion=6 t.vmdk 2300M; then
			bad "tern create $s zg=$zg"; continue
		fi
		truncate -s 2300M t.vmdk.ref
		if ! run "$VIO" vmdk t.vmdk R:150:7 w:2147418112:200000:3 z:0:1048576 w:65536:4096:5 f R:50:9; then
			bad "vdisk_io $s zg=$zg"; continue
		fi
		qemu_accepts t.vmdk t.vmdk.ref "tern writes $s zg=$zg"
		grep -aq 'ddb.adapterType = "lsilogic"' t.vmdk && grep -aq 'ddb.virtualHWVersion = "6"' t.vmdk && ok \
			|| bad "tern create $s: descriptor options"
	done
done
# a stream written by parts through the API: partial grains, unaligned
rm -f t*.vmdk t.vmdk.ref
run "$TI" create -f vmdk -o subformat=streamOptimized t.vmdk 20M && truncate -s 20M t.vmdk.ref
if run "$VIO" vmdk t.vmdk w:0:100000:1 w:200000:5000:2 w:1048576:65536:3 w:19922944:1048576:4 z:1200000:1000; then
	qemu_accepts t.vmdk t.vmdk.ref "tern stream by parts"
else
	bad "vdisk_io stream by parts"
fi
# a stream cannot be rewritten: a clear error, not a crash
if "$VIO" vmdk t.vmdk w:0:65536:1 >out.log 2>&1; then bad "rewriting a finished stream was accepted"
elif grep -q 'written once' out.log; then ok; else cat out.log; bad "stream rewrite: unclear error"; fi
# parents (VMware delta links, qemu's -b): both ways
rm -f base.vmdk child.vmdk tc*.vmdk
qemu-img create -q -f vmdk base.vmdk 64M
qemu-io -f vmdk -c 'write -P 0x11 0 1M' -c 'write -P 0x22 10M 200k' -c 'write -P 0x33 40M 64k' base.vmdk >/dev/null
qemu-img create -q -f vmdk -b base.vmdk -F vmdk child.vmdk
qemu-io -f vmdk -c 'write -P 0x44 4k 8k' -c 'write -P 0x55 10M 4k' -c 'write -z 40M 64k' \
	-c 'write -P 0x66 50M 1k' child.vmdk >/dev/null
rm -f t.raw qr.raw
qemu-img convert -f vmdk -O raw child.vmdk qr.raw
if run "$TI" convert -f vmdk -O raw child.vmdk t.raw; then same_raw t.raw qr.raw "qemu child of a parent"
else bad "tern-img convert of a qemu child"; fi
for s in monolithicSparse twoGbMaxExtentSparse; do
	for zg in off on; do
		rm -f tc*.vmdk tc.vmdk.ref
		if ! run "$TI" create -f vmdk -o subformat=$s,zeroed_grain=$zg -b base.vmdk tc.vmdk; then
			bad "tern create child $s zg=$zg"; continue
		fi
		qemu-img convert -f vmdk -O raw base.vmdk tc.vmdk.ref
		if run "$VIO" vmdk tc.vmdk w:4096:8192:1 w:10485760:4096:2 z:41943040:65536 z:0:65536 R:100:5; then
			qemu_accepts tc.vmdk tc.vmdk.ref "tern child $s zg=$zg"
		else
			bad "vdisk_io child $s zg=$zg"
		fi
	done
done
# vmdk to vmdk
rm -f q*.vmdk t*.vmdk
qemu-img convert -O vmdk -o subformat=twoGbMaxExtentSparse big.raw q.vmdk
for s in streamOptimized monolithicSparse; do
	rm -f t*.vmdk
	if run "$TI" convert -f vmdk -O vmdk -o subformat=$s q.vmdk t.vmdk; then
		qemu_accepts t.vmdk big.raw "tern vmdk->$s"
	else
		bad "tern convert vmdk->$s"
	fi
done
# map and bench run on vmdk
if run "$TI" map -f vmdk t.vmdk && run "$TI" bench -f vmdk -c 2000 -s 4k -r t.vmdk; then ok; else bad "map/bench on vmdk"; fi

echo "vmdk interop: $((n-fails))/$n passed"
[ $fails -eq 0 ]
