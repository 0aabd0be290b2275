#!/bin/bash
# VDI and VHD (vpc) interop with qemu-img in both directions, every subformat:
#  1. images qemu-img makes (convert from raw data with holes, then qemu-io
#     writes) read back byte-identical through tern-img, with the same
#     virtual size and allocation map;
#  2. images tern-img creates, writes (vdisk_io) or converts pass
#     `qemu-img check` (vdi; qemu-img cannot check vpc) and `qemu-img compare`
#     against a raw reference;
#  3. a differencing VHD chain in sub folders (relative locators), moved
#     elsewhere, read against a reference built alongside.
# usage: vdisk_vdi_vhd_interop.sh TERN_IMG VDISK_IO
set -u
TI=$(realpath "$1") VIO=$(realpath "$2")
command -v qemu-img >/dev/null || { echo "qemu-img missing"; exit 77; }
# tmpfs when there is one: the many fsyncs cost nothing there
base=/tmp; [ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
W=$(mktemp -d $base/vdisk-vdi-vhd.XXXXXX)
trap 'rm -rf "$W"' EXIT
cd "$W"
fails=0 n=0
ok()  { n=$((n+1)); }
bad() { n=$((n+1)); fails=$((fails+1)); echo "FAIL: $*"; }
run() { "$@" >out.log 2>&1 || { cat out.log; return 1; }; }
vsize() { "$@" --output=json | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }
# allocation map as runs of data / no data (qemu does not look for holes in
# the data of every format, tern does; present differs between formats too)
norm() { python3 -c 'import json,sys
out=[]
for e in json.load(open(sys.argv[1])):
  k=e["data"]
  if out and out[-1][2]==k and out[-1][0]+out[-1][1]==e["start"]: out[-1][1]+=e["length"]
  else: out.append([e["start"],e["length"],k])
print(out)' "$1"; }

# 24 MiB of random data with holes, unaligned runs and an odd tail
head -c 3M /dev/urandom > mix.raw
truncate -s 5M mix.raw
head -c 777777 /dev/urandom >> mix.raw
truncate -s 9M mix.raw
head -c 2M /dev/urandom >> mix.raw
truncate -s 20M mix.raw
head -c 12345 /dev/urandom >> mix.raw
truncate -s 24M mix.raw

# fmt|create options|qemu-io writes allowed
cases="vdi| vdi|static=on vpc|subformat=dynamic vpc|subformat=fixed vpc|force_size=on vpc|subformat=fixed,force_size=on"

echo "== 1. qemu-img images read by tern"
for c in $cases; do
	f=${c%%|*} o=${c#*|} label="$f ${o:-default}"
	rm -f q.img q.raw t.raw
	qemu-img convert -f raw -O $f ${o:+-o $o} mix.raw q.img
	qemu-io -f $f -c 'write -P 0x11 100k 70k' -c 'write -P 0x22 6M 3M' -c 'write -P 0x33 7777 1234' \
		-c 'write -z 1M 1M' -c 'write -P 0x44 23M 4k' q.img >/dev/null
	qemu-img convert -f $f -O raw q.img q.raw
	if run "$TI" convert -f $f -O raw q.img t.raw && cmp -s t.raw q.raw; then ok; else bad "$label: tern read differs from qemu"; fi
	if run "$TI" compare -f $f -F raw q.img q.raw; then ok; else bad "$label: tern-img compare"; fi
	[ "$(vsize "$TI" info -f $f q.img)" = "$(vsize qemu-img info -f $f q.img)" ] && ok || bad "$label: virtual size differs"
	if [ $f = vdi ]; then run "$TI" check -f vdi q.img && ok || bad "$label: tern-img check"; fi
	{
		"$TI" map -f $f --output=json q.img > tmap.json && qemu-img map -f $f --output=json q.img > qmap.json
		[ "$(norm tmap.json)" = "$(norm qmap.json)" ] && ok || bad "$label: map differs from qemu-img map"
	}
done
# the size rules of other creators: same size as qemu computes
for app in 'vpc ' 'win ' 'd2v ' 'tap\x00' 'CTXS' 'qem2' 'xyz '; do
	qemu-img create -q -f vpc -o subformat=fixed q.img 100M
	sz=$(stat -c %s q.img)
	printf "$app" | dd of=q.img bs=1 seek=$((sz - 512 + 28)) conv=notrunc 2>/dev/null
	printf '\x00\x00\x00\x00\x06\x30\x00\x00' | dd of=q.img bs=1 seek=$((sz - 512 + 48)) conv=notrunc 2>/dev/null
	python3 - q.img <<'EOF'
import sys
f = open(sys.argv[1], 'r+b'); f.seek(-512, 2); b = bytearray(f.read(512))
b[64:68] = b'\0\0\0\0'; s = (~sum(b)) & 0xffffffff; b[64:68] = s.to_bytes(4, 'big')
f.seek(-512, 2); f.write(b)
EOF
	[ "$(vsize "$TI" info -f vpc q.img)" = "$(vsize qemu-img info -f vpc q.img)" ] && ok || bad "creator '$app': size differs from qemu's"
done

echo "== 2. images written by tern, judged by qemu-img"
accepts() {   # fmt img ref label
	if [ $1 = vdi ]; then run qemu-img check -f vdi "$2" && ok || bad "$4: qemu-img check"; fi
	run qemu-img compare -f $1 -F raw "$2" "$3" && ok || bad "$4: qemu-img compare"
}
for c in $cases; do
	f=${c%%|*} o=${c#*|} label="tern $f ${o:-default}"
	rm -f t.img t.img.ref t2.img t.raw
	run "$TI" create -f $f ${o:+-o $o} t.img 24M || { bad "$label: create"; continue; }
	[ "$(vsize "$TI" info -f $f t.img)" = "$(vsize qemu-img info -f $f t.img)" ] && ok || bad "$label: size differs"
	truncate -s "$(vsize "$TI" info -f $f t.img)" t.img.ref
	if run "$VIO" $f t.img R:120:3 w:0:1:1 w:2097151:2:2 z:8M:3M f R:40:9 d:4M:2M w:23M:1M:4; then ok; else bad "$label: vdisk_io"; continue; fi
	accepts $f t.img t.img.ref "$label"
	"$TI" convert -f $f -O raw t.img t.raw && cmp -s t.raw t.img.ref && ok || bad "$label: tern readback"
	# qemu writes into the tern image, tern reads it back
	qemu-io -f $f -c 'write -P 0x66 300k 1M' -c 'write -P 0x77 15M 64k' t.img >/dev/null
	qemu-img convert -f $f -O raw t.img q.raw
	"$TI" convert -f $f -O raw t.img t.raw && cmp -s t.raw q.raw && ok || bad "$label: read after qemu wrote"
	# convert from raw (4 threads) and to qcow2
	run "$TI" convert -f raw -O $f ${o:+-o $o} mix.raw t2.img || bad "$label: convert from raw"
	accepts $f t2.img mix.raw "$label convert"
	rm -f t.qcow2
	run "$TI" convert -f $f -O qcow2 t2.img t.qcow2 && run qemu-img compare -f qcow2 -F raw t.qcow2 mix.raw \
		&& ok || bad "$label: convert to qcow2"
done
# VDI discard: whole blocks unmapped, the data kept dense for qemu
rm -f t.img t.img.ref
run "$TI" create -f vdi t.img 16M; truncate -s 16M t.img.ref
if run "$VIO" vdi t.img w:0:16M:1 d:1M:3M z:9M:2M:0 f w:2M:4k:2 d:12M:4M w:15M:8k:3; then ok; else bad "vdi discard: vdisk_io"; fi
accepts vdi t.img t.img.ref "vdi discard"
[ "$(stat -c %s t.img)" -lt $((16 << 20)) ] && ok || bad "vdi discard: file did not shrink"

echo "== 3. differencing VHD chain"
rm -rf chain moved
mkdir -p chain/sub
qemu-img convert -f raw -O vpc mix.raw chain/base.vhd
qemu-img convert -f vpc -O raw chain/base.vhd chain/sub/mid.vhd.ref
run "$TI" create -f vpc -b ../base.vhd chain/sub/mid.vhd || bad "create differencing mid"
if run "$VIO" vpc chain/sub/mid.vhd w:100:1000:1 w:3M:5000:2 w:2097000:3000:3 z:5M:1M R:60:5 f; then ok; else bad "vdisk_io mid"; fi
run "$TI" create -f vpc -b mid.vhd chain/sub/top.vhd || bad "create differencing top"
cp chain/sub/mid.vhd.ref chain/sub/top.vhd.ref
if run "$VIO" vpc chain/sub/top.vhd w:7M:1M:4 w:511:2:5 R:40:9; then ok; else bad "vdisk_io top"; fi
for img in mid top; do
	"$TI" convert -f vpc -O raw chain/sub/$img.vhd t.raw && cmp -s t.raw chain/sub/$img.vhd.ref && ok || bad "chain $img reads wrong"
done
"$TI" info -f vpc chain/sub/top.vhd | grep -q '^backing file: mid.vhd' && ok || bad "info shows no parent"
mv chain moved
"$TI" convert -f vpc -O raw moved/sub/top.vhd t.raw && cmp -s t.raw moved/sub/top.vhd.ref && ok || bad "moved chain reads wrong"
run "$TI" compare -f vpc -F raw moved/sub/top.vhd moved/sub/top.vhd.ref && ok || bad "moved chain: compare"
# a changed parent is refused (its unique id no longer matches)
qemu-img convert -q -f raw -O vpc mix.raw moved/base.vhd
"$TI" info moved/sub/mid.vhd >out.log 2>&1 && bad "replaced parent accepted" || { grep -q 'unique id' out.log && ok || bad "replaced parent: unclear error: $(cat out.log)"; }

echo "$n checks, $fails failed"
[ $fails = 0 ]
