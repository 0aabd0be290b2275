#!/bin/bash
# tern-img rebase and commit against qemu-img as the oracle: each case runs
# on two identical copies of a backing chain, one changed by tern-img, one
# by qemu-img; afterwards every image of the chain must show the same
# guest-visible content in both (qemu-img compare), tern's must pass
# qemu-img check, and the reference recorded in the header must be the one
# asked for. Error cases must fail with a message naming the problem.
# usage: vdisk_rebase_commit.sh TERN_IMG
set -u
TI=$(realpath "$1")
command -v qemu-img >/dev/null || { echo "qemu-img missing"; exit 77; }
command -v qemu-io >/dev/null || { echo "qemu-io missing"; exit 77; }
W=$(mktemp -d /tmp/vdisk-rebase.XXXXXX)
trap 'rm -rf "$W"' EXIT
cd "$W" || exit 1
fails=0 n=0
ok()  { n=$((n+1)); }
bad() { n=$((n+1)); fails=$((fails+1)); echo "FAIL: $*"; }

# A chain base <- mid <- top in folder $1 (relative names), with data only in
# the base, data over it in mid, zero clusters hiding base data, data in
# the top, partial clusters, and a mid larger than the base.
make_chain() {   # dir base_fmt cluster_size top_compat
	local d=$1 bf=$2 cs=$3 compat=$4
	mkdir -p "$d"
	qemu-img create -q -f "$bf" "$d/base.$bf" 32M
	qemu-io -f "$bf" -c 'write -P 0x11 0 6M' -c 'write -P 0x12 20M 5M' \
		-c 'write -P 0x13 30M 2M' "$d/base.$bf" >/dev/null
	qemu-img create -q -f qcow2 -b "base.$bf" -F "$bf" -o cluster_size=$cs,compat=$compat \
		"$d/mid.qcow2" 40M
	qemu-io -c 'write -P 0x21 4M 4M' -c 'write -z 21M 1M' -c 'write -P 0x22 33M 1M' \
		-c 'write -P 0x23 12345 777' "$d/mid.qcow2" >/dev/null
	qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 -o cluster_size=$cs,compat=$compat \
		"$d/top.qcow2" 40M
	qemu-io -c 'write -P 0x31 5M 100k' -c 'write -P 0x32 30M 1M' -c 'write -z 31M 64k' \
		-c 'write -P 0x33 38M 3000' "$d/top.qcow2" >/dev/null
}

# guest-visible content of every image in dirs t and q identical; tern's checks clean
same_chains() {   # label files...
	local label=$1 f
	shift
	for f in "$@"; do
		if qemu-img compare -U "t/$f" "q/$f" >cmp.log 2>&1; then ok
		else bad "$label: t/$f differs from qemu-img's result: $(cat cmp.log)"; fi
		case $f in *.qcow2)
			if qemu-img check -q "t/$f" >chk.log 2>&1; then ok
			else bad "$label: qemu-img check t/$f: $(cat chk.log)"; fi ;;
		esac
	done
}

backing_of() { qemu-img info -U --output=json "$1" | python3 -c 'import json,sys
i=json.load(sys.stdin); print(i.get("backing-filename",""), i.get("backing-filename-format",""))'; }

expect_backing() {   # label img "name fmt"
	local got
	got=$(backing_of "$2")
	if [ "$got" = "$3" ]; then ok; else bad "$1: backing of $2 is '$got', want '$3'"; fi
}

# the command fails (exit != 0) and its message contains a pattern
expect_fail() {   # label pattern cmd...
	local label=$1 pat=$2
	shift 2
	if "$@" >err.log 2>&1; then bad "$label: succeeded"; return; fi
	if grep -qi -- "$pat" err.log; then ok
	else bad "$label: message lacks '$pat': $(cat err.log)"; fi
}

fresh() {   # base_fmt cs compat
	rm -rf t q proto
	make_chain proto "$@"
	cp -r proto t
	cp -r proto q
}

for variant in "raw 65536 1.1" "qcow2 65536 1.1" "qcow2 4096 1.1" "qcow2 65536 0.10"; do
	# shellcheck disable=SC2086
	set -- $variant
	bf=$1 V="base=$1 cs=$2 compat=$3"
	echo "== $V"

	fresh "$@"
	"$TI" rebase -b "base.$bf" -F "$bf" t/top.qcow2 || bad "$V: tern-img rebase to base"
	qemu-img rebase -b "base.$bf" -F "$bf" q/top.qcow2
	same_chains "$V rebase top onto base" top.qcow2 mid.qcow2 "base.$bf"
	expect_backing "$V rebase" t/top.qcow2 "base.$bf $bf"
	# the top must now read as it did through mid
	if qemu-img compare -U t/top.qcow2 proto/top.qcow2 >/dev/null; then ok
	else bad "$V: rebased top no longer shows the original content"; fi

	fresh "$@"
	"$TI" rebase -p -b "" t/top.qcow2 >/dev/null || bad "$V: tern-img rebase -b ''"
	qemu-img rebase -b "" q/top.qcow2
	same_chains "$V rebase -b ''" top.qcow2
	expect_backing "$V rebase -b ''" t/top.qcow2 " "

	fresh "$@"
	"$TI" rebase -u -b "base.$bf" -F "$bf" t/top.qcow2 || bad "$V: tern-img rebase -u"
	qemu-img rebase -u -b "base.$bf" -F "$bf" q/top.qcow2
	same_chains "$V rebase -u" top.qcow2
	expect_backing "$V rebase -u" t/top.qcow2 "base.$bf $bf"

	# rebase onto a new file that shares nothing with the old chain
	fresh "$@"
	for x in t q; do
		qemu-img create -q -f qcow2 $x/other.qcow2 40M
		qemu-io -c 'write -P 0x41 0 10M' -c 'write -P 0x13 30M 2M' $x/other.qcow2 >/dev/null
	done
	"$TI" rebase -b other.qcow2 t/mid.qcow2 || bad "$V: tern-img rebase mid onto other (probed)"
	qemu-img rebase -b other.qcow2 -F qcow2 q/mid.qcow2
	same_chains "$V rebase mid onto other" top.qcow2 mid.qcow2
	expect_backing "$V rebase probed format" t/mid.qcow2 "other.qcow2 qcow2"

	fresh "$@"
	out=$("$TI" commit t/top.qcow2) || bad "$V: tern-img commit"
	[ "$out" = "Image committed." ] && ok || bad "$V: commit printed '$out'"
	qemu-img commit -q q/top.qcow2
	same_chains "$V commit" top.qcow2 mid.qcow2 "base.$bf"
	# emptied: the top allocates nothing any more
	if [ "$(qemu-img map -U --output=json t/top.qcow2 | python3 -c 'import json,sys
print(sum(1 for e in json.load(sys.stdin) if e["depth"]==0 and e["data"]))')" = 0 ]; then ok
	else bad "$V: commit left data in the top"; fi

	fresh "$@"
	"$TI" commit -d t/top.qcow2 >/dev/null || bad "$V: tern-img commit -d"
	qemu-img commit -q -d q/top.qcow2
	same_chains "$V commit -d" top.qcow2 mid.qcow2

	fresh "$@"
	"$TI" commit -p -b "t/base.$bf" t/top.qcow2 >/dev/null || bad "$V: tern-img commit -b base"
	(cd q && qemu-img commit -q -b "base.$bf" top.qcow2)
	same_chains "$V commit -b base" top.qcow2 "base.$bf"
	if qemu-img compare -U -f "$bf" -F qcow2 "t/base.$bf" proto/top.qcow2 >/dev/null; then ok
	else bad "$V: the base does not hold the top's content after commit -b"; fi
done

echo "== errors"
fresh qcow2 65536 1.1
qemu-img create -q -f raw t/r.raw 40M
expect_fail "rebase onto a missing file" "nothere.qcow2" "$TI" rebase -b nothere.qcow2 t/top.qcow2
expect_fail "rebase -F qcow2 onto a raw file" "not a qcow2 image" \
	"$TI" rebase -F qcow2 -b r.raw t/top.qcow2
expect_fail "rebase of a raw image" "raw" "$TI" rebase -b base.qcow2 t/r.raw
expect_fail "rebase without -b" "-b" "$TI" rebase t/top.qcow2
expect_fail "rebase to a json: name" "json" "$TI" rebase -u -b 'json:{}' t/top.qcow2
expect_fail "commit without a backing file" "does not have a backing file" \
	"$TI" commit t/base.qcow2
expect_fail "commit -b outside the chain" "not in the backing chain" \
	"$TI" commit -b t/r.raw t/top.qcow2
# nothing above may have changed the chain
for f in top.qcow2 mid.qcow2 base.qcow2; do
	if cmp -s "t/$f" "proto/$f"; then ok; else bad "a failed command changed t/$f"; fi
done
mv t/mid.qcow2 t/mid.gone
expect_fail "safe rebase with the old backing file gone" "mid.qcow2" \
	"$TI" rebase -b base.qcow2 t/top.qcow2
expect_fail "commit with the backing file gone" "mid.qcow2" "$TI" commit t/top.qcow2
"$TI" rebase -u -b base.qcow2 -F qcow2 t/top.qcow2 || bad "rebase -u with the old backing gone"
expect_backing "rebase -u, old backing gone" t/top.qcow2 "base.qcow2 qcow2"
mv t/mid.gone t/mid.qcow2
# in use: another process holds the image (top's backing is base.qcow2 now)
hold() { exec 9<"$1"; flock -s 9; exec sleep 20; }   # the holder is the pid itself
hold t/base.qcow2 &
h1=$!
hold t/mid.qcow2 &
h2=$!
for f in base mid; do
	for _ in $(seq 50); do flock -n t/$f.qcow2 true || break; sleep 0.1; done
done
expect_fail "commit into a base in use" "in use" "$TI" commit t/top.qcow2
expect_fail "rebase of an image in use" "in use" "$TI" rebase -b base.qcow2 t/mid.qcow2
kill $h1 $h2 2>/dev/null
wait $h1 $h2 2>/dev/null
# read-only files (as root, permissions do not stop writes: run as nobody)
chmod 755 "$W" t; chmod 444 t/*.qcow2
if [ "$(id -u)" != 0 ]; then
	expect_fail "rebase of a read-only image" "permission denied" "$TI" rebase -u -b x t/top.qcow2
	expect_fail "commit into a read-only base" "permission denied" "$TI" commit -d t/top.qcow2
elif command -v setpriv >/dev/null; then
	NB="setpriv --reuid=65534 --regid=65534 --clear-groups"
	expect_fail "rebase of a read-only image" "permission denied" $NB "$TI" rebase -u -b x t/top.qcow2
	expect_fail "commit into a read-only base" "permission denied" $NB "$TI" commit -d t/top.qcow2
fi
chmod 644 t/*.qcow2

echo "$((n - fails))/$n checks passed"
[ $fails = 0 ]
