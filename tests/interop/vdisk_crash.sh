#!/bin/bash
# Crash consistency: RUNS times, write and flush at random and SIGKILL the
# writer at a random instant. Every image must check clean or leaks-only
# with qemu-img, and every write acknowledged by a flush must read back.
# usage: vdisk_crash.sh VDISK_IO [RUNS]
set -u
VIO=$(realpath "$1") RUNS=${2:-50}
command -v qemu-img >/dev/null || { echo "qemu-img missing"; exit 77; }
W=$(mktemp -d /tmp/vdisk-crash.XXXXXX)
trap 'rm -rf "$W"' EXIT
fails=0
for i in $(seq 1 "$RUNS"); do
	case $((i % 4)) in
		0) o="cluster_size=4k";; 1) o="cluster_size=64k,refcount_bits=8";;
		2) o="cluster_size=512,refcount_bits=64";; 3) o="lazy_refcounts=on,cluster_size=16k";;
	esac
	rm -f "$W/c.qcow2" "$W/log"
	qemu-img create -q -f qcow2 -o "$o" "$W/c.qcow2" 64M
	"$VIO" crash qcow2 "$W/c.qcow2" "$W/log" 12288 &
	pid=$!
	sleep "0.$((RANDOM % 60 + 5))"
	kill -9 $pid 2>/dev/null
	wait $pid 2>/dev/null
	qemu-img check "$W/c.qcow2" > "$W/check" 2>&1
	rc=$?
	if [ $rc != 0 ] && [ $rc != 3 ]; then
		echo "run $i ($o): qemu-img check exit $rc"; cat "$W/check"; fails=$((fails+1)); continue
	fi
	# lazy refcounts leave the dirty bit: a read-write open repairs it first
	if ! "$VIO" verify qcow2 "$W/c.qcow2" "$W/log" 12288 > "$W/v" 2>&1; then
		echo "run $i ($o): flushed data lost"; cat "$W/v"; fails=$((fails+1))
	fi
done
echo "$RUNS runs, $fails failed"
[ $fails = 0 ]
