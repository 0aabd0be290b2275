#!/bin/bash
# Interop with qemu-img in both directions.
#  1. images made by qemu-img/qemu-io (cluster sizes, refcount widths, v2/v3,
#     extended L2, zlib/zstd compression, zero clusters, backing chains) read
#     back byte-identical through vdisk, and `tern-img check` finds them clean;
#  2. every image tern writes passes `qemu-img check` (exit 0) and
#     `qemu-img compare` against a raw reference.
# usage: vdisk_qemu_interop.sh TERN_IMG VDISK_IO
set -u
TI=$(realpath "$1") VIO=$(realpath "$2")   # the script cds to a scratch dir
command -v qemu-img >/dev/null || { echo "qemu-img missing"; exit 77; }
W=$(mktemp -d /tmp/vdisk-interop.XXXXXX)
trap 'rm -rf "$W"' EXIT
cd "$W"
fails=0 n=0
ok()   { n=$((n+1)); }
bad()  { n=$((n+1)); fails=$((fails+1)); echo "FAIL: $*"; }
run()  { "$@" >out.log 2>&1 || { cat out.log; return 1; }; }

# a qemu-io script that leaves data, zero clusters and holes
qio_fill() {   # img
	qemu-io -f qcow2 -c 'write -P 0x11 0 70k' -c 'write -P 0x22 1M 3M' \
		-c 'write -P 0x33 7777 1234' -c 'write -z 2M 512k' -c 'write -P 0x44 9M 64k' \
		-c 'discard 9M 32k' -c 'write -P 0x55 15M 1M' "$1" >/dev/null
}

# tern reads img (fmt qcow2) exactly as qemu does
same_as_qemu() {   # img label
	rm -f t.raw q.raw
	if ! run "$TI" convert -f qcow2 -O raw "$1" t.raw; then bad "$2: tern-img convert"; return; fi
	qemu-img convert -f qcow2 -O raw "$1" q.raw
	if cmp -s t.raw q.raw; then ok; else bad "$2: tern read differs from qemu"; fi
	if run "$TI" compare -f qcow2 -F raw "$1" q.raw; then ok; else bad "$2: tern-img compare"; fi
	if run "$TI" check -f qcow2 "$1"; then ok; else bad "$2: tern-img check on a qemu image"; fi
}

# qemu accepts an image tern wrote and it equals ref
qemu_accepts() {   # img ref label
	if run qemu-img check -f qcow2 "$1"; then ok; else bad "$3: qemu-img check"; fi
	if run qemu-img compare -f qcow2 -F raw "$1" "$2"; then ok; else bad "$3: qemu-img compare"; fi
}

echo "== 1. qemu-img images read by vdisk"
for cs in 512 4096 65536 2097152; do
	for rb in 1 2 4 8 16 32 64; do
		case $cs:$rb in 512:1|512:64|4096:*|65536:*|2097152:16|2097152:1) ;; *) continue;; esac
		qemu-img create -q -f qcow2 -o cluster_size=$cs,refcount_bits=$rb q.qcow2 16M
		qio_fill q.qcow2
		same_as_qemu q.qcow2 "qemu cs=$cs rb=$rb"
	done
done
qemu-img create -q -f qcow2 -o compat=0.10 q.qcow2 16M; qio_fill q.qcow2; same_as_qemu q.qcow2 "qemu v2"
for cs in 16k 64k 2M; do
	qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=$cs q.qcow2 16M; qio_fill q.qcow2
	same_as_qemu q.qcow2 "qemu extended_l2 cs=$cs"
done
head -c 6M /dev/urandom > rnd.raw; base64 rnd.raw | head -c 5M > txt.raw
cat rnd.raw txt.raw > mix.raw; truncate -s 16M mix.raw
for ct in zlib zstd; do
	for cs in 4k 64k 1M; do
		qemu-img convert -q -c -f raw -O qcow2 -o compression_type=$ct,cluster_size=$cs mix.raw q.qcow2
		same_as_qemu q.qcow2 "qemu compressed $ct cs=$cs"
	done
done
# backing chain: raw <- qcow2 (4k) <- qcow2 (64k), relative names, in a sub folder
mkdir -p chain
cp mix.raw chain/base.raw
qemu-img create -q -f qcow2 -b base.raw -F raw -o cluster_size=4k chain/mid.qcow2
qemu-io -c 'write -P 0x66 100k 300k' -c 'write -z 5M 1M' chain/mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 chain/top.qcow2
qemu-io -c 'write -P 0x77 1M 8k' -c 'write -z 12M 64k' chain/top.qcow2 >/dev/null
same_as_qemu chain/top.qcow2 "qemu backing chain"
if "$TI" map --output=json chain/top.qcow2 > tmap.json && qemu-img map --output=json chain/top.qcow2 > qmap.json; then
	# compare the guest-visible classification (present/zero/data per byte range)
	norm() { python3 -c 'import json,sys
m=json.load(open(sys.argv[1])); out=[]
for e in m:
  k=(e["zero"],e["data"],e["present"])
  if out and out[-1][2]==k and out[-1][0]+out[-1][1]==e["start"]: out[-1][1]+=e["length"]
  else: out.append([e["start"],e["length"],k])
print(out)' "$1"; }
	if [ "$(norm tmap.json)" = "$(norm qmap.json)" ]; then ok; else bad "map differs from qemu-img map"; fi
fi
# internal snapshots made by qemu: the active layer still reads right
qemu-img create -q -f qcow2 q.qcow2 16M; qio_fill q.qcow2
qemu-img snapshot -c s1 q.qcow2; qemu-io -c 'write -P 0x99 0 128k' q.qcow2 >/dev/null
same_as_qemu q.qcow2 "qemu image with a snapshot"
if "$TI" snapshot -l q.qcow2 | grep -q s1; then ok; else bad "snapshot -l"; fi
# writing through vdisk into a qemu image that has a snapshot (copy-on-write of shared clusters)
NOREF=1 "$VIO" qcow2 q.qcow2 w:0:100000:5 w:3000000:70000:6 z:1048576:65536 f || bad "vdisk_io on snapshot image"
qemu_cmp_rw() { qemu-img convert -f qcow2 -O raw q.qcow2 q.raw; "$TI" convert -f qcow2 -O raw q.qcow2 t.raw; cmp -s q.raw t.raw; }
if qemu_cmp_rw; then ok; else bad "read after COW of snapshot-shared clusters"; fi
if run qemu-img check q.qcow2; then ok; else bad "qemu-img check after COW writes"; fi

echo "== 2. images written by tern, judged by qemu-img"
for opts in "cluster_size=512,refcount_bits=1" "cluster_size=4k,refcount_bits=64" "cluster_size=64k" \
            "cluster_size=2M,refcount_bits=8" "compat=0.10" "lazy_refcounts=on" \
            "extended_l2=on,cluster_size=32k" "refcount_bits=4,cluster_size=1k"; do
	rm -f t.qcow2 t.qcow2.ref
	run "$TI" create -f qcow2 -o "$opts" t.qcow2 24M || { bad "create $opts"; continue; }
	truncate -s 24M t.qcow2.ref
	if run "$VIO" qcow2 t.qcow2 R:150:3 w:0:1:1 z:8M:3M f R:50:9 d:20M:2M; then ok; else bad "vdisk_io $opts"; continue; fi
	qemu_accepts t.qcow2 t.qcow2.ref "tern $opts"
	"$TI" convert -f qcow2 -O raw t.qcow2 t.raw && cmp -s t.raw t.qcow2.ref && ok || bad "tern readback $opts"
done
for ct in zlib zstd; do
	rm -f t.qcow2
	if run "$TI" convert -c -O qcow2 -o compression_type=$ct mix.raw t.qcow2; then ok; else bad "convert -c $ct"; fi
	qemu_accepts t.qcow2 mix.raw "tern convert -c $ct"
	"$TI" info --output=json t.qcow2 | grep -q "\"compression-type\": \"$ct\"" && ok || bad "info compression $ct"
done
for opts in "cluster_size=4k" "cluster_size=64k,refcount_bits=2" "compat=0.10"; do
	rm -f t.qcow2
	run "$TI" convert -p -O qcow2 -o $opts mix.raw t.qcow2 || bad "convert $opts"
	qemu_accepts t.qcow2 mix.raw "tern convert $opts"
	# zero skipping: a 16 MiB source with 5 MiB of zeroes must stay sparse
	alloc=$(qemu-img map --output=json t.qcow2 | grep -c '"data": true')
	[ "$alloc" -ge 1 ] && ok || bad "convert $opts allocated nothing"
done
for p in metadata falloc full; do
	rm -f t.qcow2
	run "$TI" create -f qcow2 -o preallocation=$p t.qcow2 8M || bad "prealloc $p"
	truncate -s 8M z.raw
	qemu_accepts t.qcow2 z.raw "tern preallocation=$p"
done
# overlay written by tern over a qemu-made base
rm -f chain/ttop.qcow2
run "$TI" create -f qcow2 -b mid.qcow2 -F qcow2 chain/ttop.qcow2 || bad "create overlay"
qemu-img convert -f qcow2 -O raw chain/ttop.qcow2 chain/ttop.qcow2.ref
if run "$VIO" qcow2 chain/ttop.qcow2 w:5000:70000:8 z:1M:1M R:40:4 f; then ok; else bad "vdisk_io overlay"; fi
qemu_accepts chain/ttop.qcow2 chain/ttop.qcow2.ref "tern overlay"
# check exit codes: leaks → 3, repaired → 0; corruption → 2
run "$TI" create -f qcow2 t.qcow2 8M; NOREF=1 "$VIO" qcow2 t.qcow2 w:0:4096:1
truncate -s 1M t.qcow2
printf '\x00\x01' | dd of=t.qcow2 bs=1 seek=$((0x20000 + 2*10)) conv=notrunc 2>/dev/null
"$TI" check t.qcow2 >/dev/null 2>&1; rc=$?; [ $rc = 3 ] && ok || bad "check exit for leaks: $rc"
qemu-img check t.qcow2 >/dev/null 2>&1; rc=$?; [ $rc = 3 ] && ok || bad "qemu agrees on leaks: $rc"
"$TI" check -r leaks t.qcow2 >/dev/null 2>&1; rc=$?; [ $rc = 0 ] && ok || bad "check -r leaks exit: $rc"
run qemu-img check t.qcow2 && ok || bad "qemu-img check after tern repair"
printf '\x00\x00' | dd of=t.qcow2 bs=1 seek=$((0x20000 + 2*4)) conv=notrunc 2>/dev/null
"$TI" check t.qcow2 >/dev/null 2>&1; rc=$?; [ $rc = 2 ] && ok || bad "check exit for corruption: $rc"
"$TI" check -r all t.qcow2 >/dev/null 2>&1; rc=$?; [ $rc = 0 ] && ok || bad "check -r all exit: $rc"
run qemu-img check t.qcow2 && ok || bad "qemu-img check after -r all"
"$TI" check -f raw mix.raw >/dev/null 2>&1; rc=$?; [ $rc = 63 ] && ok || bad "raw check exit: $rc"

echo "== 3. internal snapshots, both ways"
# hex dump of `qemu-io read -b -v` back to bytes
qvm() {   # img len out   (qemu-io wants whole sectors)
	qemu-io -c "read -b -v 0 $(( ($2 + 511) / 512 * 512 ))" "$1" | python3 -c 'import sys
out=bytearray()
for l in sys.stdin:
  if len(l) > 10 and l[8:10] == ": ":
    out += bytes.fromhex(l[10:58].replace(" ", ""))
sys.stdout.buffer.write(out[:int(sys.argv[1])])' "$2" > "$3"; }
for opts in "cluster_size=64k" "cluster_size=4k,refcount_bits=4" "compat=0.10" "extended_l2=on,cluster_size=32k" "cluster_size=512,refcount_bits=64"; do
	rm -f s.qcow2 s.qcow2.ref
	qemu-img create -q -f qcow2 -o "$opts" s.qcow2 8M; truncate -s 8M s.qcow2.ref
	head -c 300000 /dev/urandom > vm1.bin
	# tern: data, snapshot (with VM state), more data, snapshot, more data
	run "$VIO" qcow2 s.qcow2 R:40:1 V:one:vm1.bin R:40:2 S:two R:30:3 f || { bad "tern snapshots $opts"; continue; }
	cp s.qcow2.ref cur.raw
	run qemu-img check s.qcow2 && ok || bad "$opts: qemu-img check with tern snapshots"
	qemu-img snapshot -l s.qcow2 | grep -q ' one ' && qemu-img snapshot -l s.qcow2 | grep -q ' two ' && ok || bad "$opts: qemu lists tern snapshots"
	# tern and qemu apply each snapshot identically
	for sn in one two 1 2; do
		cp s.qcow2 a.qcow2; cp s.qcow2 b.qcow2
		run "$TI" snapshot -a $sn a.qcow2 || bad "$opts: tern-img snapshot -a $sn"
		run qemu-img snapshot -a $sn b.qcow2 || bad "$opts: qemu-img snapshot -a $sn"
		run qemu-img compare a.qcow2 b.qcow2 && ok || bad "$opts: tern vs qemu apply $sn"
		run qemu-img check a.qcow2 && ok || bad "$opts: qemu-img check after tern apply $sn"
		run "$TI" check b.qcow2 && ok || bad "$opts: tern-img check after qemu apply $sn"
	done
	# the VM state tern wrote is where qemu looks for it
	cp s.qcow2 b.qcow2; qemu-img snapshot -a one b.qcow2
	qvm b.qcow2 300000 q.vm; cmp -s q.vm vm1.bin && ok || bad "$opts: qemu reads tern's VM state"
	NOREF=1 run "$VIO" qcow2 s.qcow2 X:one:t.vm && cmp -s t.vm vm1.bin && ok || bad "$opts: tern reads its VM state"
	# delete: by tern, then by qemu; the active disk is untouched
	cp s.qcow2 a.qcow2
	run "$TI" snapshot -d one a.qcow2 && run qemu-img check a.qcow2 && ok || bad "$opts: tern delete"
	run qemu-img snapshot -d two a.qcow2 && run "$TI" check a.qcow2 && ok || bad "$opts: qemu delete of a tern snapshot"
	run qemu-img compare -F raw a.qcow2 cur.raw && ok || bad "$opts: active disk after deletes"
	[ -z "$("$TI" snapshot -l a.qcow2)" ] && ok || bad "$opts: no snapshots left"
	# qemu's snapshots, applied and deleted by tern
	cp s.qcow2 a.qcow2
	qemu-img snapshot -c three a.qcow2; qemu-io -c 'write -P 0x42 100k 1M' a.qcow2 >/dev/null
	cp a.qcow2 b.qcow2
	run "$TI" snapshot -a three a.qcow2 && run qemu-img snapshot -a three b.qcow2 &&
		run qemu-img compare a.qcow2 b.qcow2 && ok || bad "$opts: tern applies a qemu snapshot"
	run "$TI" snapshot -d three a.qcow2 && run "$TI" snapshot -d one a.qcow2 && run qemu-img check a.qcow2 && ok || bad "$opts: tern deletes qemu snapshots"
	run qemu-img compare a.qcow2 b.qcow2 && ok || bad "$opts: active disk after tern deletes"
done
# 1-bit refcounts cannot count a second reference: refused up front, image intact
rm -f one.qcow2; "$TI" create -f qcow2 -o refcount_bits=1 one.qcow2 1M
NOREF=1 "$VIO" qcow2 one.qcow2 w:0:5000:1 >/dev/null 2>&1
if "$TI" snapshot -c x one.qcow2 2>err.log; then bad "snapshot with refcount_bits=1 accepted"; else
	grep -q refcount err.log && ok || bad "snapshot refusal message: $(cat err.log)"; fi
run qemu-img check one.qcow2 && ok || bad "refcount_bits=1 image after the refused snapshot"
# 2-bit refcounts: two snapshots fit, applying one needs a fourth reference
rm -f one.qcow2; "$TI" create -f qcow2 -o refcount_bits=2 one.qcow2 1M
NOREF=1 "$VIO" qcow2 one.qcow2 w:0:5000:1 S:a S:b >/dev/null 2>&1 || bad "2-bit refcounts, two snapshots"
if "$TI" snapshot -a a one.qcow2 2>err.log; then bad "apply beyond 2-bit refcounts accepted"; else
	grep -q refcount err.log && ok || bad "refusal message: $(cat err.log)"; fi
run qemu-img check one.qcow2 && ok || bad "2-bit refcount image after the refused apply"
# a snapshot taken by QEMU itself (savevm, with its VM state): tern reads the
# state, works around it, and QEMU can still load it
if command -v qemu-system-x86_64 >/dev/null; then
	rm -f vm.qcow2; qemu-img create -q -f qcow2 vm.qcow2 16M
	qsys() { timeout 60 qemu-system-x86_64 -machine pc,accel=tcg -nodefaults -display none -m 32 \
		-drive if=none,file=vm.qcow2,id=d0,format=qcow2 -device virtio-blk-pci,drive=d0 -monitor stdio "$@"; }
	(echo "savevm qsnap"; sleep 2; echo quit) | qsys >/dev/null 2>&1
	len=$(qemu-img info --output=json vm.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshots"][0]["vm-state-size"])')
	cp vm.qcow2 b.qcow2; qemu-img snapshot -a qsnap b.qcow2; qvm b.qcow2 "$len" q.vm
	NOREF=1 run "$VIO" qcow2 vm.qcow2 X:qsnap:t.vm && cmp -s t.vm q.vm && ok || bad "tern reads QEMU's savevm state"
	NOREF=1 run "$VIO" qcow2 vm.qcow2 R:20:5 S:mine R:20:6 D:mine A:qsnap && ok || bad "tern snapshots next to QEMU's"
	(echo "info status"; sleep 1; echo quit) | qsys -loadvm qsnap > lv.log 2>&1
	grep -q "VM status" lv.log && ! grep -qi "error" lv.log && ok || { cat lv.log; bad "QEMU loadvm after tern's changes"; }
fi

echo "$n checks, $fails failed"
[ $fails = 0 ]
